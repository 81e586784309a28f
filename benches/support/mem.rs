//! Memory and CPU accounting: resident set size from `/proc/self/statm`, live heap
//! bytes from a counting global allocator over mimalloc, the gateway binary's allocator
//! (counting is switched on only in the server child, so the client side of the latency
//! runs pays nothing for it), CPU time from `/proc/self/stat`.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// mimalloc, counting live bytes once `start_counting` was called.
pub struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to mimalloc; only a counter is updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by mimalloc with `layout` (every allocation is).
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s contract.
        let new = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        new
    }
}

/// Starts counting live heap bytes (call once, first thing in the process).
pub fn start_counting() {
    COUNTING.store(true, Ordering::Relaxed);
}

/// Live heap bytes allocated since `start_counting` (only differences are meaningful).
pub fn heap_bytes() -> i64 {
    LIVE.load(Ordering::Relaxed) as i64
}

/// Resident set size: resident pages (`/proc/self/statm`, second field) × page size.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages in /proc/self/statm");
    pages * page_size()
}

/// CPU time (user + system) this process has used, in seconds.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields 14 and 15 (utime, stime), counted after the `(comm)` field, which may hold spaces.
    let after_comm = &stat[stat.rfind(')').expect("(comm) in /proc/self/stat") + 2..];
    let ticks: u64 = after_comm
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|field| {
            field
                .parse::<u64>()
                .expect("utime and stime in /proc/self/stat")
        })
        .sum();
    ticks as f64 / auxv(AT_CLKTCK) as f64
}

const AT_PAGESZ: u64 = 6;
const AT_CLKTCK: u64 = 17;

/// The page size the kernel gave this process.
fn page_size() -> u64 {
    auxv(AT_PAGESZ)
}

/// An entry of `/proc/self/auxv` (a 64-bit Linux is assumed).
fn auxv(key: u64) -> u64 {
    let auxv = std::fs::read("/proc/self/auxv").expect("read /proc/self/auxv");
    let word = |bytes: &[u8]| u64::from_ne_bytes(bytes.try_into().expect("an 8-byte auxv word"));
    auxv.chunks_exact(16)
        .find(|pair| word(&pair[..8]) == key)
        .map(|pair| word(&pair[8..]))
        .unwrap_or_else(|| panic!("entry {key} in /proc/self/auxv"))
}
