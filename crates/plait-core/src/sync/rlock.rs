//! `RLock`: a reentrant lock owned by one thread at a time.
//!
//! An inner [`Lock`] provides exclusion; `owner` and `count` are written
//! only by the owning thread while it holds the inner lock, and read by
//! anyone (for `_is_owned` and debugging), so relaxed atomics suffice: a
//! thread can only ever see its own ident in `owner` if it wrote it.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::debug::{begin_wait, Holder, Inspect, Kind, Probe, Waiter};
use crate::park::{Outcome, WaitCtx};
use crate::sync::lock::Lock;
use crate::thread::ident;

#[derive(Debug, Default)]
pub struct RLock {
    lock: Lock,
    owner: AtomicU64,
    count: AtomicU64,
}

/// Why an RLock operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RLockError {
    /// The calling thread does not own the lock.
    NotOwned,
    /// The recursion count would overflow.
    Overflow,
}

impl RLock {
    loom_const_fn! {
        pub fn new() -> Self {
            RLock { lock: Lock::new(), owner: AtomicU64::new(0), count: AtomicU64::new(0) }
        }
    }

    #[inline]
    fn reenter(&self, me: u64) -> Option<Result<(), RLockError>> {
        if self.owner.load(Ordering::Relaxed) == me {
            let c = self.count.load(Ordering::Relaxed);
            if c == u64::MAX {
                return Some(Err(RLockError::Overflow));
            }
            self.count.store(c + 1, Ordering::Relaxed);
            return Some(Ok(()));
        }
        None
    }

    #[inline]
    fn take(&self, me: u64, count: u64) {
        self.owner.store(me, Ordering::Relaxed);
        self.count.store(count, Ordering::Relaxed);
    }

    /// Acquire without waiting.
    #[inline]
    pub fn try_acquire(&self) -> Result<bool, RLockError> {
        let me = ident();
        if let Some(r) = self.reenter(me) {
            return r.map(|_| true);
        }
        if self.lock.try_acquire() {
            self.take(me, 1);
            return Ok(true);
        }
        Ok(false)
    }

    /// Acquire, waiting within `ctx` if another thread owns it.
    pub fn acquire(&self, ctx: &WaitCtx<'_>) -> Result<Outcome, RLockError> {
        match self.try_acquire()? {
            true => Ok(Outcome::Notified),
            false => Ok(self.acquire_slow(ctx, 1)),
        }
    }

    /// The blocking part of acquire for a thread that does not own the
    /// lock, taking it with recursion count `count`.
    #[cold]
    pub fn acquire_slow(&self, ctx: &WaitCtx<'_>, count: u64) -> Outcome {
        let out = if self.lock.try_acquire() {
            Outcome::Notified
        } else {
            let Ok(guard) = begin_wait(self, ctx) else { return Outcome::Interrupted };
            let out = self.lock.park_slow(ctx);
            self.lock.probe.stats.record_wait(guard.elapsed_ns());
            out
        };
        if out == Outcome::Notified {
            self.take(ident(), count);
        }
        out
    }

    /// Release one level.
    #[inline]
    pub fn release(&self) -> Result<(), RLockError> {
        if self.owner.load(Ordering::Relaxed) != ident() {
            return Err(RLockError::NotOwned);
        }
        let c = self.count.load(Ordering::Relaxed) - 1;
        self.count.store(c, Ordering::Relaxed);
        if c == 0 {
            self.owner.store(0, Ordering::Relaxed);
            self.lock.release();
        }
        Ok(())
    }

    /// Release every level (for `Condition.wait`); returns `(count, owner)`.
    pub fn release_save(&self) -> Result<(u64, u64), RLockError> {
        let me = ident();
        if self.owner.load(Ordering::Relaxed) != me || self.count.load(Ordering::Relaxed) == 0 {
            return Err(RLockError::NotOwned);
        }
        let count = self.count.swap(0, Ordering::Relaxed);
        self.owner.store(0, Ordering::Relaxed);
        self.lock.release();
        Ok((count, me))
    }

    /// Re-take after [`release_save`](Self::release_save) without waiting.
    pub fn try_acquire_restore(&self, count: u64) -> bool {
        if self.lock.try_acquire() {
            self.take(ident(), count);
            true
        } else {
            false
        }
    }

    pub fn is_owned(&self) -> bool {
        self.owner.load(Ordering::Relaxed) == ident()
    }

    /// The calling thread's recursion level (0 if it does not own it).
    pub fn recursion_count(&self) -> u64 {
        if self.is_owned() {
            self.count.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    pub fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }

    /// Owner ident, 0 when free.
    pub fn owner(&self) -> u64 {
        self.owner.load(Ordering::Relaxed)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn waiters(&self) -> Vec<u64> {
        self.lock.waiters()
    }

    /// Make the lock free whoever owns it (`_at_fork_reinit`).
    pub fn reset(&self) {
        self.owner.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        self.lock.reset();
    }

    /// Reset to unlocked.
    ///
    /// # Safety
    /// No other thread may be using the lock.
    pub unsafe fn reinit(&self) {
        // SAFETY: forwarded from the caller's guarantee.
        unsafe { self.lock.reinit() };
        self.owner.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
    }

    /// Name, site, statistics: the inner lock's probe serves the RLock.
    pub fn probe(&self) -> &Probe {
        &self.lock.probe
    }

    /// Keep the lock if the surviving thread owns it, free it otherwise.
    ///
    /// # Safety
    /// Only from the atfork child handler.
    pub unsafe fn after_fork(&self, survivor: u64) {
        let owner = self.owner.load(Ordering::Relaxed);
        let count = self.count.load(Ordering::Relaxed);
        // SAFETY: forwarded from the caller's guarantee.
        unsafe { self.reinit() };
        if owner == survivor && count > 0 {
            let taken = self.lock.try_acquire();
            debug_assert!(taken);
            self.owner.store(survivor, Ordering::Relaxed);
            self.count.store(count, Ordering::Relaxed);
        }
    }
}

impl Inspect for RLock {
    fn kind(&self) -> Kind {
        Kind::RLock
    }
    fn probe(&self) -> &Probe {
        &self.lock.probe
    }
    fn holders(&self, out: &mut Vec<Holder>) {
        let owner = self.owner();
        if owner != 0 {
            out.push(Holder { ident: owner, since_ns: self.lock.probe.since(), count: self.count() });
        }
    }
    fn waiters(&self, out: &mut Vec<Waiter>) {
        self.lock.inspect_waiters(out);
    }
}
