//! The process-pool supervisor, without Python: one Rust thread per pool
//! that starts worker processes, hands them tasks as bytes, reads their
//! results, and deals with death, time limits, cancellation and shutdown.
//!
//! The binding (`plait-py`'s `process/pool.rs`) pickles a call in the
//! submitting thread and gives the supervisor a [`Task`]: an id, the
//! pickled bytes, an optional time limit, and a handle of its own (the
//! future). Everything the supervisor needs the interpreter for goes
//! through the [`Host`] trait, in batches: marking futures running,
//! turning result frames into finished futures, failing and cancelling
//! them. The supervisor attaches (through the host) at most once per turn
//! of its loop.
//!
//! One idea per file:
//! * [`frame`]: the wire format, building and parsing frames, reading a
//!   worker's socket with the descriptors that travel along.
//! * [`dispatch`]: the dispatch policy as a state machine with no I/O: the
//!   queue, which worker gets which task, the adaptive prefetch depth, and
//!   what death, time limits, cancellation and shutdown do to tasks. Its
//!   tests drive simulated workers.
//! * [`worker`]: processes: spawning, the zygote, killing, reaping, and the
//!   message that says why one died.
//! * [`supervisor`]: the thread, its command queue and eventfd, and the
//!   `poll(2)` loop that ties the others together.
//!
//! `README.md` beside these files describes the protocol as a whole.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

pub mod claim;
pub mod dispatch;
pub mod frame;
pub mod supervisor;
pub mod worker;

pub use claim::{CancelOutcome, Claims, Ticket};
pub use dispatch::{Ending, Executing, Failure, Policy, Task};
pub use supervisor::{Config, Shared, WorkerInfo};
pub use worker::Zygote;

/// Whether a task could be marked running without the interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Marked running: send it.
    Running,
    /// Its future was cancelled before it started: drop it.
    Cancelled,
    /// Only the interpreter can tell: ask [`Host::deliver`].
    Attach,
}

/// A result frame from a worker, as the host receives it.
pub struct Reply<'a> {
    /// `E` (the call raised) rather than `R`.
    pub is_error: bool,
    /// The frame's body after the task id: the pickled outcome.
    pub body: &'a [u8],
    /// Descriptors that arrived with this worker's frames, oldest first;
    /// the host takes those that belong to this result.
    pub fds: &'a mut VecDeque<OwnedFd>,
}

/// What the binding provides: whatever needs the interpreter.
///
/// Methods other than [`Host::deliver`] are called detached; they may
/// finish a future without the interpreter when nothing in Python watches
/// it, and otherwise push a `Pending` completion for `deliver`.
pub trait Host: Send + 'static {
    /// What a task carries besides its bytes (the binding: its future).
    type Task: Send + 'static;
    /// A completion that must be made attached.
    type Pending;

    /// Mark the task running, if that can be done detached.
    fn try_start(&self, task: &Self::Task) -> Start;

    /// A prefetched task became its worker's executing task (its claim is
    /// taken: it runs): mark it running, detached, if it is still pending.
    fn promoted(&self, task: &Self::Task);

    /// A worker's outcome for `task`. Returns the path of the shared-memory
    /// segment the result refers to, if any (the worker reported it, so it
    /// is not swept if that worker dies).
    fn result(&self, task: Self::Task, reply: Reply<'_>, pending: &mut Vec<Self::Pending>) -> Option<PathBuf>;

    /// The task ended without a result: failed, or cancelled before it ran.
    fn ended(&self, task: Self::Task, how: Ending, pending: &mut Vec<Self::Pending>);

    /// Worker process `pid` executes `task` from now on (for
    /// `plait.debug`: its future shows what runs it). Called detached when a
    /// task becomes a worker's executing one, before it is marked running,
    /// and again on later turns while it is (cheap and idempotent).
    fn runs_in(&self, _task: &Self::Task, _pid: u32) {}

    /// The id `plait.debug` knows `task` by (its future's), for
    /// [`Shared::workers`]; 0 for none.
    fn debug_id(&self, _task: &Self::Task) -> usize {
        0
    }

    /// Attached, once per batch: make the `pending` completions in order,
    /// then mark the tasks of `starting` running, pushing those that are
    /// onto `started` and the rest (cancelled) onto `refused`.
    fn deliver(
        &self,
        pending: Vec<Self::Pending>,
        starting: Vec<(usize, Task<Self::Task>)>,
        started: &mut Vec<(usize, Task<Self::Task>)>,
        refused: &mut Vec<Task<Self::Task>>,
    );
}
