//! `Event`: a flag threads can wait for.
//!
//! State word bits: `SET` (the flag) and `PARKED` (the wait list may be
//! non-empty). `set` wakes every waiter; a woken waiter returns `true` even
//! if the flag was cleared again before it ran (gh-57711), as CPython does.

use std::sync::Arc;

use crate::loom::atomic::{AtomicU8, Ordering};
use crate::debug::{begin_wait, Inspect, Kind, Probe, Waiter};
use crate::park::{remove_node, Node, Outcome, WaitCtx, WaitList};

const SET: u8 = 1;
const PARKED: u8 = 2;

#[derive(Debug, Default)]
pub struct Event {
    state: AtomicU8,
    waiters: WaitList,
    pub probe: Probe,
}

impl Event {
    loom_const_fn! {
        pub fn new() -> Self {
            Event { state: AtomicU8::new(0), waiters: WaitList::new(), probe: Probe::new() }
        }
    }

    #[inline]
    pub fn is_set(&self) -> bool {
        self.state.load(Ordering::Acquire) & SET != 0
    }

    #[inline]
    pub fn set(&self) {
        let prev = self.state.fetch_or(SET, Ordering::AcqRel);
        if prev & PARKED != 0 {
            self.wake_all();
        }
    }

    #[cold]
    fn wake_all(&self) {
        let mut q = self.waiters.lock();
        crate::park::notify_locked(&mut q, usize::MAX);
        self.state.fetch_and(!PARKED, Ordering::Relaxed);
    }

    #[inline]
    pub fn clear(&self) {
        self.state.fetch_and(!SET, Ordering::Release);
    }

    /// Wait for the flag within `ctx`. `Notified` means the flag was seen
    /// set (now or by a `set` that woke us).
    pub fn wait(&self, ctx: &WaitCtx<'_>) -> Outcome {
        if self.is_set() {
            return Outcome::Notified;
        }
        self.wait_slow(ctx)
    }

    /// The blocking part of wait, registered in the wait table.
    #[cold]
    pub fn wait_slow(&self, ctx: &WaitCtx<'_>) -> Outcome {
        let Ok(guard) = begin_wait(self, ctx) else { return Outcome::Interrupted };
        let out = self.park_slow(ctx);
        self.probe.stats.record_wait(guard.elapsed_ns());
        out
    }

    fn park_slow(&self, ctx: &WaitCtx<'_>) -> Outcome {
        let node = Node::new();
        {
            let mut q = self.waiters.lock();
            let prev = self.state.fetch_or(PARKED, Ordering::SeqCst);
            if prev & SET != 0 {
                if q.is_empty() {
                    self.state.fetch_and(!PARKED, Ordering::Relaxed);
                }
                return Outcome::Notified;
            }
            q.push_back(Arc::clone(&node));
        }
        match node.park(ctx) {
            Outcome::Notified => Outcome::Notified,
            give_up => {
                let mut q = self.waiters.lock();
                let was_queued = remove_node(&mut q, &node);
                if q.is_empty() {
                    self.state.fetch_and(!PARKED, Ordering::Relaxed);
                }
                if !was_queued && give_up == Outcome::TimedOut {
                    // `set` chose us as we timed out: the flag was set.
                    return Outcome::Notified;
                }
                give_up
            }
        }
    }

    pub fn waiters(&self) -> Vec<u64> {
        self.waiters.idents()
    }

    /// # Safety
    /// Only when no other thread uses the event (a forked child).
    pub unsafe fn after_fork(&self) {
        // SAFETY: forwarded from the caller's guarantee.
        unsafe { self.waiters.reset_after_fork() };
        self.state.fetch_and(!PARKED, Ordering::Relaxed);
        self.probe.reset();
    }
}

impl Inspect for Event {
    fn kind(&self) -> Kind {
        Kind::Event
    }
    fn probe(&self) -> &Probe {
        &self.probe
    }
    fn waiters(&self, out: &mut Vec<Waiter>) {
        self.waiters.waiters_into(out);
    }
}
