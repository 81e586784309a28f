//! Progress fan-out: one upstream watcher per watched resource, any number of local
//! subscribers, latest value wins so a slow subscriber never holds anyone back.

mod memory;

pub use memory::MemoryHub;
