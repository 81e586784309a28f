//! The Tokio runtime the gateway runs on: multi-threaded, one worker per CPU, with the
//! LIFO slot off (when built with `tokio_unstable`, as `.cargo/config.toml` does).

/// The gateway's runtime.
///
/// Why no LIFO slot: a task woken by the running task normally runs next on the same
/// worker. In a watch fan-out each of a connection's streams queues its message and
/// wakes the connection task, which then ran at once and wrote that one message: one
/// `writev` per watcher. Without the slot the woken connection task queues behind the
/// streams already runnable and writes all their messages at once, which cut the CPU
/// of a 10 000-watcher fan-out by about a fifth and the FINAL's spread with it
/// (docs/BENCHMARKS.md, issue 8). Tokio calls the switch unstable (tokio#4941).
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build()
}

/// Whether `build` turns the LIFO slot off: false when the crate was built without
/// `--cfg tokio_unstable` (a `RUSTFLAGS` variable replaces `.cargo/config.toml`'s flags).
pub fn lifo_slot_off() -> bool {
    cfg!(tokio_unstable)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_build_can_turn_the_lifo_slot_off() {
        assert!(
            super::lifo_slot_off(),
            "built without --cfg tokio_unstable (.cargo/config.toml; a RUSTFLAGS variable \
             replaces it): the gateway would run with the LIFO slot on"
        );
        let runtime = super::build().expect("a runtime");
        assert_eq!(runtime.block_on(async { 1 + 1 }), 2);
    }
}
