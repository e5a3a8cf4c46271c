//! The slow path shared by every "try, then park until it might succeed"
//! primitive (Lock, Semaphore, Event).
//!
//! Protocol, with a `PARKED` bit in the primitive's state word:
//! 1. A waiter locks the wait list, sets `PARKED`, then re-tries. Only if
//!    that fails does it enqueue and park.
//! 2. A releaser changes the state with one atomic op that also reads
//!    `PARKED`; if it was set, it locks the list and wakes waiters.
//!
//! Either the releaser's change happened before the waiter's re-try (which
//! then succeeds), or the releaser saw `PARKED` and will lock the list after
//! the waiter enqueued: no wakeup is lost. `PARKED` is cleared only under
//! the list lock, when the list is empty.
//!
//! Woken waiters re-try and may lose to a thread that came in between
//! (barging), exactly like CPython's locks; they then queue again.

use std::sync::Arc;

use crate::park::{remove_node, Node, Outcome, WaitCtx, WaitList};

/// The state operations a primitive provides to [`acquire_slow`].
pub(crate) trait Gate {
    fn try_pass(&self) -> bool;
    fn set_parked(&self);
    fn clear_parked(&self);
    fn waiters(&self) -> &WaitList;

    /// Hand a wakeup we consumed but will not use to the next waiter.
    fn pass_on(&self) {
        self.waiters().notify(1);
    }
}

/// Park until `gate.try_pass()` succeeds. Returns `Notified` on success.
pub(crate) fn acquire_slow<G: Gate>(gate: &G, ctx: &WaitCtx<'_>) -> Outcome {
    loop {
        let node = Node::new();
        {
            let mut q = gate.waiters().lock();
            gate.set_parked();
            if gate.try_pass() {
                if q.is_empty() {
                    gate.clear_parked();
                }
                return Outcome::Notified;
            }
            q.push_back(Arc::clone(&node));
        }
        match node.park(ctx) {
            Outcome::Notified => {
                if gate.try_pass() {
                    return Outcome::Notified;
                }
                if ctx.expired() {
                    return Outcome::TimedOut;
                }
            }
            give_up => {
                let mut q = gate.waiters().lock();
                let was_queued = remove_node(&mut q, &node);
                if q.is_empty() {
                    gate.clear_parked();
                }
                drop(q);
                if !was_queued {
                    // A waker picked us as we gave up. On a timeout, take
                    // what it offered; when interrupted we must not (the
                    // caller raises), so the wakeup goes to the next waiter.
                    if give_up == Outcome::TimedOut && gate.try_pass() {
                        return Outcome::Notified;
                    }
                    gate.pass_on();
                }
                return give_up;
            }
        }
    }
}
