//! Exact de-duplication of one results stream in bounded memory: a keyed 128-bit
//! digest of every id sent, for the first million ids; a window of two pages past that.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

/// Ids remembered exactly per stream: about 32 bytes each, so at most ~32 MiB.
pub const EXACT_IDS: usize = 1_000_000;

/// The ids one stream has sent.
pub struct SentIds {
    /// Two independently keyed SipHash states: 128 bits make a false "already sent"
    /// (which would drop a result) vanishingly unlikely (~1e-27 at a million ids).
    keys: (RandomState, RandomState),
    exact: HashSet<u128>,
    cap: usize,
    /// Every id of the last two pages, consulted only for ids past the cap.
    recent: [HashSet<u128>; 2],
}

impl SentIds {
    /// Remembers up to `cap` ids exactly.
    pub fn new(cap: usize) -> Self {
        Self {
            keys: (RandomState::new(), RandomState::new()),
            exact: HashSet::new(),
            cap,
            recent: Default::default(),
        }
    }

    /// True the first time `id` is seen by this stream: send it.
    pub fn first_time(&mut self, id: &str) -> bool {
        let digest = self.digest(id);
        let in_window = self.recent.iter().any(|page| page.contains(&digest));
        self.recent[1].insert(digest);
        if self.exact.contains(&digest) {
            return false;
        }
        if self.exact.len() < self.cap {
            self.exact.insert(digest);
            return true;
        }
        !in_window
    }

    /// Closes a page: the window moves on by one page.
    pub fn end_page(&mut self) {
        self.recent.rotate_left(1);
        self.recent[1].clear();
    }

    fn digest(&self, id: &str) -> u128 {
        let high = self.keys.0.hash_one(id) as u128;
        let low = self.keys.1.hash_one(id) as u128;
        (high << 64) | low
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_any_number_of_pages_back_is_caught_within_the_cap() {
        let mut sent = SentIds::new(EXACT_IDS);
        assert!(sent.first_time("req-0"));
        for page in 1..10 {
            sent.end_page();
            assert!(sent.first_time(&format!("req-{page}")));
            assert!(!sent.first_time("req-0"), "page {page}");
        }
    }

    #[test]
    fn past_the_cap_repeats_are_caught_within_two_pages() {
        let mut sent = SentIds::new(2);
        assert!(sent.first_time("a") && sent.first_time("b"));
        assert!(sent.first_time("c"), "past the cap, new ids still go out");
        assert!(!sent.first_time("c"), "same page");
        sent.end_page();
        assert!(!sent.first_time("c"), "one page back");
        assert!(!sent.first_time("a"), "remembered exactly");
        sent.end_page();
        sent.end_page();
        sent.end_page();
        assert!(
            sent.first_time("c"),
            "three pages back, past the cap: sent again"
        );
    }
}
