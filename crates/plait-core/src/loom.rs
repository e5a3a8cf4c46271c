//! The concurrency primitives the lock-free parts are built on, routed
//! through loom under `--cfg loom` (tokio's `src/loom` shim, in one file).
//!
//! In normal builds every name here is a plain re-export of `std` or of
//! plait's spin mutex, so the code compiles exactly as if it named them directly.
//! Under `cfg(loom)` they are loom's checked versions, and the model tests in
//! `tests/loom_*.rs` explore every interleaving of the state-word protocols
//! (`sync/acquire.rs`, `lock.rs`, `semaphore.rs`, `event.rs`) and of
//! `WaitList`/`Node` wakeups. loom has no timed park, so only untimed waits
//! are modelled; a timed park under loom panics rather than pretend.
//!
//! Only the parts worth modelling go through here. Barrier and Queue keep
//! their own mutexes (their logic is ordinary code under one lock), and the
//! fork registry keeps `std`: neither is run under loom.

#[cfg(not(loom))]
pub(crate) mod atomic {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
}

#[cfg(loom)]
pub(crate) mod atomic {
    pub(crate) use ::loom::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
}

#[cfg(not(loom))]
pub(crate) mod thread {
    pub(crate) use std::thread::{current, park, park_timeout, Thread};
}

#[cfg(loom)]
pub(crate) mod thread {
    pub(crate) use ::loom::thread::{current, park, Thread};

    /// loom has no notion of time: a timed wait cannot be modelled.
    pub(crate) fn park_timeout(_: std::time::Duration) {
        panic!("timed waits are not modelled under loom; use WaitCtx::forever()")
    }
}

/// Whether `Node::park` may spin before sleeping. Under loom a spin is an
/// unbounded number of atomic loads, which the model cannot explore.
pub(crate) const SPIN_BEFORE_PARK: bool = cfg!(not(loom));

/// Wait lists use the spin mutex, which never parks: a `parking_lot` mutex
/// parks contenders in parking_lot's global table, and a forked child
/// inherits that table with entries (and bucket locks) of vanished threads.
#[cfg(not(loom))]
pub(crate) use crate::spin::{SpinGuard as MutexGuard, SpinMutex as Mutex};

#[cfg(loom)]
pub(crate) use self::mutex::{Mutex, MutexGuard};

#[cfg(loom)]
mod mutex {
    /// loom's mutex with `parking_lot`'s signatures.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(::loom::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = ::loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(::loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().expect("loom mutex poisoned")
        }

        pub(crate) fn is_locked(&self) -> bool {
            unreachable!("fork recovery is not modelled under loom")
        }

        /// # Safety
        /// As the normal build's `force_unlock`; never called under loom.
        pub(crate) unsafe fn force_unlock(&self) {
            unreachable!("fork recovery is not modelled under loom")
        }
    }
}

/// A constructor that is `const fn` in normal builds and a plain `fn` under
/// loom, whose atomics and mutex cannot be built in a const context.
macro_rules! loom_const_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident() -> $ret:ty $body:block) => {
        #[cfg(not(loom))]
        $(#[$meta])*
        $vis const fn $name() -> $ret $body

        #[cfg(loom)]
        $(#[$meta])*
        $vis fn $name() -> $ret $body
    };
}
