//! The waiting half of `Condition`: a FIFO of parked threads that
//! `notify(n)` wakes in order.
//!
//! The lock half lives in the binding (a `Condition` accepts any Python
//! lock). The protocol, as in CPython's `threading.Condition`: the waiter
//! enqueues *before* releasing the lock, so a `notify` issued after the
//! release always finds it; then it parks; then it re-takes the lock.

use std::sync::Arc;

use crate::debug::{begin_wait, Inspect, Kind, Probe, Waiter};
use crate::park::{Node, Outcome, WaitCtx, WaitList};

#[derive(Debug, Default)]
pub struct CondVar {
    waiters: WaitList,
    pub probe: Probe,
}

impl CondVar {
    loom_const_fn! {
        pub fn new() -> Self {
            CondVar { waiters: WaitList::new(), probe: Probe::new() }
        }
    }

    /// Join the queue; call while holding the associated lock.
    pub fn enqueue(&self) -> Arc<Node> {
        let node = Node::new();
        self.waiters.lock().push_back(Arc::clone(&node));
        node
    }

    /// Park on a node from [`enqueue`](Self::enqueue). If the wait ends
    /// without a notification the node leaves the queue; a notification
    /// that raced with the give-up counts as a notification on timeout,
    /// and is handed on to the next waiter when interrupted.
    pub fn wait(&self, node: &Arc<Node>, ctx: &WaitCtx<'_>) -> Outcome {
        // A condition has no holder, so no wait on it closes a cycle:
        // registering never refuses.
        let _guard = begin_wait(self, ctx).ok();
        match node.park(ctx) {
            Outcome::Notified => Outcome::Notified,
            give_up => self.give_up(node, give_up),
        }
    }

    /// Leave the queue without waiting further (e.g. releasing the lock
    /// failed after enqueueing).
    pub fn cancel(&self, node: &Arc<Node>) {
        self.give_up(node, Outcome::Interrupted);
    }

    fn give_up(&self, node: &Arc<Node>, why: Outcome) -> Outcome {
        if self.waiters.remove(node) {
            return why;
        }
        if why == Outcome::TimedOut {
            return Outcome::Notified;
        }
        self.waiters.notify(1);
        why
    }

    pub fn notify(&self, n: usize) -> usize {
        self.waiters.notify(n)
    }

    pub fn notify_all(&self) -> usize {
        self.waiters.notify_all()
    }

    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    pub fn waiters(&self) -> Vec<u64> {
        self.waiters.idents()
    }

    /// # Safety
    /// Only when no other thread uses it (a forked child).
    pub unsafe fn after_fork(&self) {
        // SAFETY: forwarded from the caller's guarantee.
        unsafe { self.waiters.reset_after_fork() };
        self.probe.reset();
    }
}

impl Inspect for CondVar {
    fn kind(&self) -> Kind {
        Kind::Condition
    }
    fn probe(&self) -> &Probe {
        &self.probe
    }
    fn waiters(&self, out: &mut Vec<Waiter>) {
        self.waiters.waiters_into(out);
    }
}
