//! Helpers shared by the core's integration tests: every wait is bounded so
//! a lost wakeup fails a test instead of hanging it, and stress counts
//! shrink under miri (crossbeam `tests/array.rs`).
#![allow(dead_code)] // each test binary uses its own subset

use std::thread;
use std::time::{Duration, Instant};

use plait_core::park::WaitCtx;

/// Upper bound for a wait that must succeed.
pub const BOUND: Duration = Duration::from_secs(20);

/// A stress count, smaller under miri.
pub fn scaled(n: usize) -> usize {
    if cfg!(miri) {
        (n / 100).max(4)
    } else {
        n
    }
}

/// A wait that must end well within [`BOUND`].
pub fn bounded() -> WaitCtx<'static> {
    WaitCtx::timeout(Some(BOUND))
}

/// Poll `cond` until it holds; fail after [`BOUND`].
pub fn wait_until(cond: impl Fn() -> bool) {
    let end = Instant::now() + BOUND;
    while !cond() {
        assert!(Instant::now() < end, "condition not reached within the bound");
        thread::sleep(Duration::from_millis(1));
    }
}
