//! Claims: who decides, without a round trip, whether a task that waits in
//! a worker's socket (prefetched) runs, is cancelled, or is taken back.
//!
//! **Why.** Prefetching sends a worker its next task before it asks, so the
//! task is in the worker's hands while the parent still has to answer
//! `cancel()` (CPython: succeeds for every task that has not started) and
//! may want to give the task to a worker that went idle. A message to the
//! worker would arrive too late; a word in shared memory does not.
//!
//! **Layout.** A [`Claims`] page is an array of `u64` slots in a memfd
//! mapped by the parent and every worker (inherited by a forked worker,
//! its descriptor passed to a spawned one). A task sent to a worker takes
//! a free slot (the parent's free list); the slot's number travels in the
//! `T` frame. A slot holds `id << 2 | state`, `0` when free:
//!
//! | state       | set by                                   | means                     |
//! |-------------|------------------------------------------|---------------------------|
//! | `QUEUED`    | the supervisor, when it sends the task   | decided by nobody yet     |
//! | `STARTED`   | the worker (before running it) or the supervisor (when it becomes the worker's executing task) | it runs |
//! | `CANCELLED` | `cancel()`, in the caller's thread       | the worker skips it       |
//! | `WITHDRAWN` | the supervisor, to give it to an idle worker | the worker skips it   |
//!
//! Every change out of `QUEUED` is a compare-and-swap, so exactly one of
//! "it runs" and "it does not" wins. A worker that finds its task not
//! `QUEUED`/`STARTED` skips it and says so (`X` frame): only then is the
//! slot free again (the worker may still look at it before).
//!
//! **Tickets.** A future must find its task's slot to cancel it: the
//! task's [`Ticket`] holds `slot + 1` while the task sits in a worker,
//! `0` while it is in the parent, and [`Ticket::CANCELLED`] once a cancel
//! came first (the supervisor then drops the task instead of sending it).
//! The supervisor resets a ticket to `0` before a withdrawn or handed-back
//! task's slot is reused; a cancel that meanwhile sees a slot that no
//! longer holds its task retries.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ipc::fd::memfd;
use crate::ipc::mapping::SharedMap;

pub const QUEUED: u64 = 0;
pub const STARTED: u64 = 1;
pub const CANCELLED: u64 = 2;
pub const WITHDRAWN: u64 = 3;

#[inline]
fn word(id: u64, state: u64) -> u64 {
    id << 2 | state
}

enum Backing {
    Shared { fd: OwnedFd, map: SharedMap },
    Heap(Box<[AtomicU64]>),
}

/// A page of claim slots (see the module doc).
pub struct Claims {
    backing: Backing,
    slots: usize,
}

/// What a cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It will never run.
    Cancelled,
    /// It started (or is about to, committed): too late.
    Started,
}

impl Claims {
    /// A page of `slots` slots in a fresh memfd (mode 0600, close-on-exec).
    pub fn shared(slots: usize) -> io::Result<Claims> {
        let len = (slots.max(1) * 8).next_multiple_of(4096);
        let fd = memfd(c"plait-pool-claims", len)?;
        let map = SharedMap::new(fd.as_raw_fd(), len, false)?;
        Ok(Claims { backing: Backing::Shared { fd, map }, slots: len / 8 })
    }

    /// Map the page of descriptor `fd` (a spawned worker).
    pub fn from_fd(fd: OwnedFd) -> io::Result<Claims> {
        let map = SharedMap::whole(&fd)?;
        let slots = map.len() / 8;
        Ok(Claims { backing: Backing::Shared { fd, map }, slots })
    }

    /// A page in this process only (tests, and pools whose workers cannot
    /// see one: every claim then succeeds in the worker).
    pub fn local(slots: usize) -> Claims {
        Claims { backing: Backing::Heap((0..slots.max(1)).map(|_| AtomicU64::new(0)).collect()), slots: slots.max(1) }
    }

    /// The backing descriptor, if the page is shared.
    pub fn fd(&self) -> Option<RawFd> {
        match &self.backing {
            Backing::Shared { fd, .. } => Some(fd.as_raw_fd()),
            Backing::Heap(_) => None,
        }
    }

    pub fn len(&self) -> usize {
        self.slots
    }

    pub fn is_empty(&self) -> bool {
        self.slots == 0
    }

    #[inline]
    fn slot(&self, i: usize) -> &AtomicU64 {
        match &self.backing {
            Backing::Heap(v) => &v[i],
            Backing::Shared { map, .. } => {
                assert!(i < self.slots, "claim slot out of range");
                // SAFETY: the mapping is page-aligned, at least
                // `slots * 8` bytes long and lives as long as `self`; its
                // words are only ever accessed atomically, here and in the
                // other processes that map it.
                unsafe { &*(map.as_ptr() as *const AtomicU64).add(i) }
            }
        }
    }

    /// The raw word of slot `i` (tests).
    pub fn peek(&self, i: usize) -> u64 {
        self.slot(i).load(Ordering::Acquire)
    }

    /// The supervisor sends task `id` in slot `i`.
    #[inline]
    pub fn queue(&self, i: usize, id: u64) {
        self.slot(i).store(word(id, QUEUED), Ordering::Release);
    }

    /// The slot is free again.
    #[inline]
    pub fn free(&self, i: usize) {
        self.slot(i).store(0, Ordering::Release);
    }

    /// Start task `id` (worker, or supervisor when it becomes executing):
    /// `true` if it runs (it was queued, or already started).
    #[inline]
    pub fn start(&self, i: usize, id: u64) -> bool {
        let s = self.slot(i);
        match s.compare_exchange(word(id, QUEUED), word(id, STARTED), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(cur) => cur == word(id, STARTED),
        }
    }

    /// Withdraw queued task `id` (the supervisor): `true` if it will not run.
    #[inline]
    pub fn withdraw(&self, i: usize, id: u64) -> bool {
        self.slot(i)
            .compare_exchange(word(id, QUEUED), word(id, WITHDRAWN), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Cancel queued task `id`: `None` if the slot no longer holds it
    /// (withdrawn or handed back: look at the ticket again).
    #[inline]
    pub fn cancel(&self, i: usize, id: u64) -> Option<CancelOutcome> {
        let s = self.slot(i);
        match s.compare_exchange(word(id, QUEUED), word(id, CANCELLED), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Some(CancelOutcome::Cancelled),
            Err(cur) if cur == word(id, STARTED) => Some(CancelOutcome::Started),
            Err(cur) if cur == word(id, CANCELLED) => Some(CancelOutcome::Cancelled),
            Err(_) => None,
        }
    }
}

/// Where a task is, for `cancel()` (see the module doc).
#[derive(Debug, Default)]
pub struct Ticket(AtomicU64);

impl Ticket {
    /// A cancel came before the task was sent.
    pub const CANCELLED: u64 = u64::MAX;

    pub fn new() -> Ticket {
        Ticket(AtomicU64::new(0))
    }

    /// The supervisor put the task in slot `i`: `false` if it was
    /// cancelled first (drop it).
    #[inline]
    pub fn bind(&self, i: usize) -> bool {
        self.0.compare_exchange(0, i as u64 + 1, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// The task is back in the parent (withdrawn, or its worker died).
    #[inline]
    pub fn unbind(&self) {
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| (v != Ticket::CANCELLED).then_some(0));
    }

    /// Whether a cancel came before the task was sent.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire) == Ticket::CANCELLED
    }

    /// `cancel()` of task `id` that has not been seen running: decide,
    /// against the supervisor and the worker, whether it will never run.
    /// `pending`: whether its future is still pending (a task that ran
    /// and finished frees its slot; its future is no longer pending then).
    pub fn cancel(&self, claims: &Claims, id: u64, pending: impl Fn() -> bool) -> CancelOutcome {
        loop {
            let v = self.0.load(Ordering::Acquire);
            if v == Ticket::CANCELLED {
                return CancelOutcome::Cancelled;
            }
            if v == 0 {
                if self.0.compare_exchange(0, Ticket::CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    return CancelOutcome::Cancelled;
                }
                continue;
            }
            let slot = (v - 1) as usize;
            if slot < claims.len() {
                if let Some(out) = claims.cancel(slot, id) {
                    return out;
                }
            }
            if !pending() {
                return CancelOutcome::Started;
            }
            // Withdrawn or handed back: the supervisor resets the ticket
            // right after; look again.
            std::thread::yield_now();
        }
    }
}
