//! `Semaphore` and `BoundedSemaphore`: a counter of permits.
//!
//! State word: `permits << 1 | PARKED`. Acquire is a compare-and-swap that
//! takes one permit; release adds `n` permits in one atomic add (a CAS loop
//! for the bounded flavour, which must refuse to pass its bound) and, if
//! `PARKED` was set, wakes `n` waiters. See `acquire.rs` for why no wakeup
//! is lost.

use crate::loom::atomic::{AtomicUsize, Ordering};
use crate::park::{Outcome, WaitCtx, WaitList};
use crate::sync::acquire::{acquire_slow, Gate};

const PARKED: usize = 1;
const ONE: usize = 2;

/// The largest value a semaphore can hold.
pub const MAX_VALUE: usize = usize::MAX >> 1;

#[derive(Debug)]
pub struct Semaphore {
    state: AtomicUsize,
    bound: Option<usize>,
    waiters: WaitList,
}

/// Why a release was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseError {
    /// A bounded semaphore would exceed its initial value.
    TooMany,
    /// The count would overflow.
    Overflow,
}

impl Semaphore {
    /// An unbounded semaphore holding `value` permits.
    pub fn new(value: usize) -> Self {
        Semaphore {
            state: AtomicUsize::new(value.min(MAX_VALUE) * ONE),
            bound: None,
            waiters: WaitList::new(),
        }
    }

    /// A bounded semaphore: releases may never raise it above `value`.
    pub fn bounded(value: usize) -> Self {
        Semaphore { bound: Some(value.min(MAX_VALUE)), ..Semaphore::new(value) }
    }

    pub fn value(&self) -> usize {
        self.state.load(Ordering::Relaxed) / ONE
    }

    pub fn bound(&self) -> Option<usize> {
        self.bound
    }

    #[inline]
    pub fn try_acquire(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s < ONE {
                return false;
            }
            match self.state.compare_exchange_weak(s, s - ONE, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    pub fn acquire(&self, ctx: &WaitCtx<'_>) -> Outcome {
        if self.try_acquire() {
            return Outcome::Notified;
        }
        self.acquire_slow(ctx)
    }

    #[cold]
    pub fn acquire_slow(&self, ctx: &WaitCtx<'_>) -> Outcome {
        acquire_slow(self, ctx)
    }

    /// Add `n` permits and wake up to `n` waiters.
    #[inline]
    pub fn release(&self, n: usize) -> Result<(), ReleaseError> {
        let add = n.checked_mul(ONE).ok_or(ReleaseError::Overflow)?;
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let value = s / ONE;
            let new_value = value.checked_add(n).filter(|v| *v <= MAX_VALUE);
            match (new_value, self.bound) {
                (None, _) => return Err(ReleaseError::Overflow),
                (Some(v), Some(b)) if v > b => return Err(ReleaseError::TooMany),
                _ => {}
            }
            match self.state.compare_exchange_weak(s, s + add, Ordering::Release, Ordering::Relaxed) {
                Ok(prev) => {
                    if prev & PARKED != 0 {
                        self.wake(n);
                    }
                    return Ok(());
                }
                Err(now) => s = now,
            }
        }
    }

    #[cold]
    fn wake(&self, n: usize) {
        let mut q = self.waiters.lock();
        crate::park::notify_locked(&mut q, n);
        if q.is_empty() {
            self.clear_parked();
        }
    }

    /// Idents of the threads parked on this semaphore.
    pub fn waiters(&self) -> Vec<u64> {
        self.waiters.idents()
    }

    /// # Safety
    /// Only from the atfork child handler.
    pub unsafe fn after_fork(&self) {
        // SAFETY: forwarded from the caller's guarantee.
        unsafe { self.waiters.reset_after_fork() };
        self.clear_parked();
    }
}

impl Gate for Semaphore {
    fn try_pass(&self) -> bool {
        self.try_acquire()
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
