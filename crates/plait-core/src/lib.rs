//! plait-core: the pure-Rust heart of plait.
//!
//! Everything of plait that does not touch the interpreter lives here, so
//! it can be tested with `cargo test` (and loom, under `--cfg loom`); the
//! PyO3 binding (`plait-py`) wraps it, one folder per Python area.
//!
//! * [`sync`]: locks, semaphores, events, condition queues, barriers, each
//!   with a lock-free fast path and an owned FIFO of parked threads for the
//!   slow path; [`queue`]: the bounded queues; [`future`]: a future's
//!   states and outcome.
//! * [`timer`]: one lazily started thread and a deadline-ordered map serve
//!   every pending timer (a map entry each rather than a thread each).
//! * [`reactor`]: the event loop's machinery: the one epoll wrapper, the
//!   timer heap, the ready queue, poll pacing.
//! * [`ipc`]: what crosses processes: descriptor passing, framing, the
//!   shared-memory ring and segments, the shared counter.
//! * [`pool`]: the process-pool supervisor (worker lifecycle, dispatch
//!   policy, death and time limits) behind a trait the binding implements.
//! * [`fork`]: the registry that resets every primitive in a forked child
//!   (and lets `plait.debug` find every live primitive).
//! * [`debug`]: probes, the wait table, deadlock and lock-order detection.
//!
//! Waiting is described by [`park::WaitCtx`]: a deadline plus an optional
//! interrupt check polled in slices, which the binding uses to run Python
//! signal handlers while the main thread is blocked.
#![deny(unsafe_op_in_unsafe_fn)]

#[macro_use]
mod loom;

pub mod debug;
pub mod detach;
pub mod fork;
pub mod future;
#[cfg(not(loom))]
pub mod ipc;
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
