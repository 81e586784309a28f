//! Pieces of the gateway benchmark: the server child process (`child`), CPU and memory
//! accounting (`mem`), latency statistics (`stats`), the unary comparison (`unary`),
//! connections and bare tonic streams (`fanout`), the gateway's watchers (`watch`), and
//! the printing of watch runs (`report`), and large creates' memory (`create_memory`).

pub mod child;
pub mod create_memory;
pub mod fanout;
pub mod mem;
pub mod report;
pub mod stats;
pub mod unary;
pub mod watch;
