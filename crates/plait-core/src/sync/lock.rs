//! `Lock`: a non-recursive lock that any thread may release, like
//! `_thread.lock`.
//!
//! State word bits:
//!
//! | bit      | meaning                                   |
//! |----------|-------------------------------------------|
//! | `LOCKED` | held                                      |
//! | `PARKED` | the wait list may be non-empty            |
//!
//! Uncontended acquire and release are one compare-and-swap each. The owner
//! (the ident of the thread that acquired it) and since when it holds the
//! lock (coarse clock) are kept for `plait.debug` only: a Lock may legally
//! be released by another thread, and when that happens the lock's probe
//! remembers it, so deadlock reports through it are worded as probable.

use crate::debug::{begin_wait, Holder, Inspect, Kind, Probe, Waiter};
use crate::loom::atomic::{AtomicU64, AtomicU8, Ordering};
use crate::park::{Outcome, WaitCtx, WaitList};
use crate::sync::acquire::{acquire_slow, Gate};
use crate::thread::ident;

const LOCKED: u8 = 1;
const PARKED: u8 = 2;

#[derive(Debug, Default)]
pub struct Lock {
    state: AtomicU8,
    owner: AtomicU64,
    waiters: WaitList,
    pub probe: Probe,
}

impl Lock {
    loom_const_fn! {
        pub fn new() -> Self {
            Lock { state: AtomicU8::new(0), owner: AtomicU64::new(0), waiters: WaitList::new(), probe: Probe::new() }
        }
    }

    /// Try to take the lock without waiting.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let ok = self.try_lock_state();
        if ok {
            self.took();
        }
        ok
    }

    #[inline]
    fn took(&self) {
        self.owner.store(ident(), Ordering::Relaxed);
        self.probe.held_now();
    }

    #[inline]
    fn try_lock_state(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & LOCKED != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(s, s | LOCKED, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Take the lock, waiting within `ctx`. `true` when acquired.
    pub fn acquire(&self, ctx: &WaitCtx<'_>) -> Outcome {
        if self.try_acquire() {
            return Outcome::Notified;
        }
        self.acquire_slow(ctx)
    }

    /// The blocking part of acquire: registered in the wait table (so a
    /// deadlock through it can be found), with its wait counted in the
    /// statistics. `Interrupted` without an interrupt means the wait was
    /// refused because it would close a deadlock (`debug::waits`).
    #[cold]
    pub fn acquire_slow(&self, ctx: &WaitCtx<'_>) -> Outcome {
        let Ok(guard) = begin_wait(self, ctx) else { return Outcome::Interrupted };
        let out = self.park_slow(ctx);
        self.probe.stats.record_wait(guard.elapsed_ns());
        out
    }

    /// The blocking part of acquire without the wait table (for RLock,
    /// which registers itself).
    pub(crate) fn park_slow(&self, ctx: &WaitCtx<'_>) -> Outcome {
        let out = acquire_slow(self, ctx);
        if out == Outcome::Notified {
            self.took();
        }
        out
    }

    /// Release; `false` if the lock was not held.
    #[inline]
    pub fn release(&self) -> bool {
        if self.owner.load(Ordering::Relaxed) != ident() && self.is_locked() {
            self.probe.released_by_other();
        }
        self.owner.store(0, Ordering::Relaxed);
        match self.state.compare_exchange(LOCKED, 0, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => true,
            Err(s) if s & LOCKED == 0 => false,
            Err(_) => {
                self.release_slow();
                true
            }
        }
    }

    #[cold]
    fn release_slow(&self) {
        self.probe.hold_ended_contended();
        let mut q = self.waiters.lock();
        let next = q.pop_front();
        if q.is_empty() {
            self.state.fetch_and(!PARKED, Ordering::Relaxed);
        }
        self.state.fetch_and(!LOCKED, Ordering::Release);
        drop(q);
        if let Some(node) = next {
            node.notify();
        }
    }

    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & LOCKED != 0
    }

    /// Ident of the thread that last acquired the lock, 0 when unlocked.
    pub fn owner(&self) -> u64 {
        if self.is_locked() {
            self.owner.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// The threads parked on this lock, for `plait.debug`.
    pub(crate) fn inspect_waiters(&self, out: &mut Vec<Waiter>) {
        self.waiters.waiters_into(out);
    }

    /// Idents of the threads parked on this lock.
    pub fn waiters(&self) -> Vec<u64> {
        self.waiters.idents()
    }

    /// Make the lock unlocked whoever holds it, waking every waiter to
    /// retry (`_at_fork_reinit` called from Python: safe at any time).
    pub fn reset(&self) {
        let mut q = self.waiters.lock();
        crate::park::notify_locked(&mut q, usize::MAX);
        self.owner.store(0, Ordering::Relaxed);
        self.state.store(0, Ordering::Release);
        self.probe.reset();
    }

    /// Force the lock to a fresh, unlocked state.
    ///
    /// # Safety
    /// No other thread may be using the lock (true in a forked child).
    pub unsafe fn reinit(&self) {
        // SAFETY: forwarded from the caller's guarantee.
        unsafe { self.waiters.reset_after_fork() };
        self.state.store(0, Ordering::Relaxed);
        self.owner.store(0, Ordering::Relaxed);
        self.probe.reset();
    }

    /// Repair after fork: keep the lock if the surviving thread holds it,
    /// release it if a vanished thread did (nothing could ever release it).
    ///
    /// # Safety
    /// Only from the atfork child handler.
    pub unsafe fn after_fork(&self, survivor: u64) {
        let held_by_survivor = self.is_locked() && self.owner.load(Ordering::Relaxed) == survivor;
        // SAFETY: forwarded from the caller's guarantee.
        unsafe { self.reinit() };
        if held_by_survivor {
            self.state.store(LOCKED, Ordering::Relaxed);
            self.owner.store(survivor, Ordering::Relaxed);
            self.probe.held_now();
        }
    }

    /// The holder as `plait.debug` shows it.
    pub(crate) fn holder(&self) -> Option<Holder> {
        let owner = self.owner();
        (owner != 0).then(|| Holder { ident: owner, since_ns: self.probe.since(), count: 1 })
    }
}

impl Inspect for Lock {
    fn kind(&self) -> Kind {
        Kind::Lock
    }
    fn probe(&self) -> &Probe {
        &self.probe
    }
    fn holders(&self, out: &mut Vec<Holder>) {
        out.extend(self.holder());
    }
    fn waiters(&self, out: &mut Vec<Waiter>) {
        self.waiters.waiters_into(out);
    }
    fn loose(&self) -> bool {
        self.probe.foreign_release()
    }
}

impl Gate for Lock {
    fn try_pass(&self) -> bool {
        self.try_lock_state()
    }
    fn set_parked(&self) {
        self.state.fetch_or(PARKED, Ordering::SeqCst);
    }
    fn clear_parked(&self) {
        self.state.fetch_and(!PARKED, Ordering::Relaxed);
    }
    fn waiters(&self) -> &WaitList {
        &self.waiters
    }
}
