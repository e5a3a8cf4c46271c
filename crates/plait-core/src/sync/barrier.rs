//! `Barrier`: `parties` threads wait until all have arrived.
//!
//! The same state machine as CPython's `threading.Barrier`, so every edge
//! (reset while threads wait, abort, a failing action, a timeout that breaks
//! the barrier) behaves identically:
//!
//! | phase       | meaning                                              |
//! |-------------|------------------------------------------------------|
//! | `Filling`   | threads are arriving                                 |
//! | `Draining`  | all arrived; they are leaving; new arrivals wait     |
//! | `Resetting` | `reset()` while threads waited; they leave broken    |
//! | `Broken`    | `abort()`, a timeout or a failed action              |
//!
//! The last thread to arrive runs the action *without* the state mutex
//! (it is user code, and runs attached to the interpreter); an
//! `action_running` flag keeps every other thread waiting meanwhile, as
//! CPython's held condition lock does.

use crate::debug::{begin_wait, Inspect, Kind, Probe, Waiter};
use std::time::{Duration, Instant};

use crate::spin::{SpinGuard as MutexGuard, SpinMutex as Mutex};

use crate::detach::Detach;
use crate::park::{deadline_after, remove_node, Node, Outcome, WaitCtx, WaitList};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Filling,
    Draining,
    Resetting,
    Broken,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    count: usize,
    action_running: bool,
}

#[derive(Debug)]
pub struct Barrier {
    parties: usize,
    state: Mutex<State>,
    waiters: WaitList,
    pub probe: Probe,
}

/// Why `wait` did not return an index.
#[derive(Debug)]
pub enum BarrierError<E> {
    /// The barrier is, or became, broken (BrokenBarrierError).
    Broken,
    /// The action failed; the barrier is now broken.
    Action(E),
    /// The interrupt check fired (e.g. Ctrl-C).
    Interrupted,
}

impl Barrier {
    /// `parties` must be at least 1 (the binding checks).
    pub fn new(parties: usize) -> Self {
        Barrier {
            parties,
            state: Mutex::new(State { phase: Phase::Filling, count: 0, action_running: false }),
            waiters: WaitList::new(),
            probe: Probe::new(),
        }
    }

    pub fn parties(&self) -> usize {
        self.parties
    }

    /// Threads currently waiting for the barrier to fill.
    pub fn n_waiting(&self) -> usize {
        let s = self.state.lock();
        if s.phase == Phase::Filling {
            s.count
        } else {
            0
        }
    }

    pub fn broken(&self) -> bool {
        self.state.lock().phase == Phase::Broken
    }

    pub fn phase(&self) -> Phase {
        self.state.lock().phase
    }

    /// Wait for the barrier. `action` runs in the last arriving thread.
    /// `ctx` supplies the interrupt check; its deadline is ignored in favour
    /// of `timeout`, which breaks the barrier when it expires.
    pub fn wait<D: Detach, E>(
        &self,
        d: &D,
        ctx: &WaitCtx<'_>,
        timeout: Option<Duration>,
        action: impl FnOnce() -> Result<(), E>,
    ) -> Result<usize, BarrierError<E>> {
        let deadline = timeout.map(deadline_after);
        let mut st = self.lock(d);
        // Wait while the previous cycle drains or a reset completes.
        while matches!(st.phase, Phase::Draining | Phase::Resetting) || st.action_running {
            let (g, out) = self.cond_wait(d, st, ctx, None);
            st = g;
            if out == Outcome::Interrupted {
                return Err(BarrierError::Interrupted);
            }
        }
        if st.phase == Phase::Broken {
            return Err(BarrierError::Broken);
        }
        let index = st.count;
        st.count += 1;
        let result = if index + 1 == self.parties {
            st.action_running = true;
            drop(st);
            let r = action();
            st = self.lock(d);
            st.action_running = false;
            match r {
                Ok(()) if st.phase == Phase::Filling => {
                    st.phase = Phase::Draining;
                    self.waiters.notify_all();
                    Ok(index)
                }
                Ok(()) => {
                    self.waiters.notify_all();
                    Err(BarrierError::Broken)
                }
                Err(e) => {
                    self.break_locked(&mut st);
                    Err(BarrierError::Action(e))
                }
            }
        } else {
            let mut res = Ok(index);
            while st.phase == Phase::Filling {
                // While the last thread runs the action, a waiter cannot time
                // out: in CPython it would be blocked on the condition's lock,
                // and would then find the barrier draining.
                let expired = matches!(deadline, Some(t) if Instant::now() >= t);
                if expired && !st.action_running {
                    self.break_locked(&mut st);
                    break;
                }
                let limit = if st.action_running { None } else { deadline };
                let (g, out) = self.cond_wait(d, st, ctx, limit);
                st = g;
                if out == Outcome::Interrupted {
                    res = Err(BarrierError::Interrupted);
                    break;
                }
            }
            match res {
                Ok(i) if matches!(st.phase, Phase::Broken | Phase::Resetting) => {
                    let _ = i;
                    Err(BarrierError::Broken)
                }
                other => other,
            }
        };
        // Leave: the last one out ends a drain or a reset.
        st.count -= 1;
        if st.count == 0 && matches!(st.phase, Phase::Resetting | Phase::Draining) {
            st.phase = Phase::Filling;
            self.waiters.notify_all();
        }
        result
    }

    /// Return to the initial state; threads waiting now get `Broken`.
    pub fn reset<D: Detach>(&self, d: &D) {
        let mut st = self.lock(d);
        if st.count > 0 {
            if matches!(st.phase, Phase::Filling | Phase::Broken) {
                st.phase = Phase::Resetting;
            }
        } else {
            st.phase = Phase::Filling;
        }
        self.waiters.notify_all();
    }

    /// Break the barrier: current and future waiters get `Broken`.
    pub fn abort<D: Detach>(&self, d: &D) {
        let mut st = self.lock(d);
        self.break_locked(&mut st);
    }

    fn break_locked(&self, st: &mut State) {
        st.phase = Phase::Broken;
        self.waiters.notify_all();
    }

    /// The state mutex is only held briefly and never across user code, so
    /// waiting for it attached would be safe; detaching on contention keeps
    /// the rule simple: no thread ever blocks on a Rust lock while attached.
    fn lock<D: Detach>(&self, d: &D) -> MutexGuard<'_, State> {
        match self.state.try_lock() {
            Some(g) => g,
            None => d.detach(|| self.state.lock()),
        }
    }

    fn cond_wait<'a, D: Detach>(
        &'a self,
        d: &D,
        st: MutexGuard<'a, State>,
        ctx: &WaitCtx<'_>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, State>, Outcome) {
        let node = Node::new();
        self.waiters.lock().push_back(node.clone());
        drop(st);
        let wctx = WaitCtx { deadline, ..*ctx };
        let out = d.detach(|| {
            // A barrier has no holder: registering never refuses.
            let _guard = begin_wait(self, &wctx).ok();
            node.park(&wctx)
        });
        let st = self.lock(d);
        if out != Outcome::Notified {
            let mut q = self.waiters.lock();
            remove_node(&mut q, &node);
        }
        (st, out)
    }

    pub fn waiters(&self) -> Vec<u64> {
        self.waiters.idents()
    }

    /// In a forked child no thread waits any more: reset to `Filling`
    /// unless broken.
    ///
    /// # Safety
    /// Only from the atfork child handler.
    pub unsafe fn after_fork(&self) {
        // SAFETY: forwarded from the caller's guarantee.
        unsafe { self.waiters.reset_after_fork() };
        if self.state.is_locked() {
            // SAFETY: single-threaded child; the holder vanished.
            unsafe { self.state.force_unlock() };
        }
        let mut st = self.state.lock();
        st.count = 0;
        st.action_running = false;
        if st.phase != Phase::Broken {
            st.phase = Phase::Filling;
        }
        self.probe.reset();
    }
}

impl Inspect for Barrier {
    fn kind(&self) -> Kind {
        Kind::Barrier
    }
    fn probe(&self) -> &Probe {
        &self.probe
    }
    fn waiters(&self, out: &mut Vec<Waiter>) {
        self.waiters.waiters_into(out);
    }
}
