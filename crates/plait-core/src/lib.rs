//! plait-core: the pure-Rust heart of plait.
//!
//! Python's concurrency primitives, implemented without any knowledge of
//! Python: locks, semaphores, events, condition queues, barriers and
//! bounded queues, each with a lock-free fast path and an owned FIFO of
//! parked threads for the slow path. The PyO3 binding (`plait-py`) wraps
//! them; everything that does not touch the interpreter lives here so it
//! can be tested with `cargo test` (and loom, under `--cfg loom`).
//!
//! Timers (`timer.rs`) share one lazily started thread and a
//! deadline-ordered map, so a hundred thousand pending timers cost a map
//! entry each rather than a thread each.
//!
//! Waiting is described by [`park::WaitCtx`]: a deadline plus an optional
//! interrupt check polled in slices, which the binding uses to run Python
//! signal handlers while the main thread is blocked.
#![deny(unsafe_op_in_unsafe_fn)]

#[macro_use]
mod loom;

pub mod detach;
pub mod fork;
pub mod future;
#[cfg(not(loom))]
pub mod ipc;
#[cfg(not(loom))]
pub mod park;
#[cfg(not(loom))]
pub mod pool;
pub mod queue;
#[cfg(not(loom))]
pub mod reactor;
pub mod spin;
pub mod thread;
#[cfg(not(loom))]
pub mod timer;

pub mod sync {
    //! Threading primitives.
    pub(crate) mod acquire;
    pub mod barrier;
    pub mod condvar;
    pub mod event;
    pub mod lock;
    pub mod rlock;
    pub mod semaphore;

    pub use barrier::{Barrier, BarrierError, Phase};
    pub use condvar::CondVar;
    pub use event::Event;
    pub use lock::Lock;
    pub use rlock::{RLock, RLockError};
    pub use semaphore::{ReleaseError, Semaphore};
}
