//! `Semaphore` and `BoundedSemaphore`: a counter of permits.
//!
//! State word: `permits << 1 | PARKED`. Acquire is a compare-and-swap that
//! takes one permit; release adds `n` permits in one atomic add (a CAS loop
//! for the bounded flavour, which must refuse to pass its bound) and, if
//! `PARKED` was set, wakes `n` waiters. See `acquire.rs` for why no wakeup
//! is lost.
//!
//! For `plait.debug`, a semaphore remembers which threads took its permits
//! (up to [`TRACKED`] of them) and since when; a release forgets the
//! releasing thread's oldest permit, or the oldest of all when the
//! releaser took none (any thread may release a semaphore).

use crate::debug::{begin_wait, coarse_ns, Holder, Inspect, Kind, Probe, Waiter};
use crate::loom::atomic::{AtomicUsize, Ordering};
use crate::park::{Outcome, WaitCtx, WaitList};
use crate::spin::SpinMutex;
use crate::thread::ident;

/// How many permit holders a semaphore remembers.
pub const TRACKED: usize = 64;
use crate::sync::acquire::{acquire_slow, Gate};

const PARKED: usize = 1;
const ONE: usize = 2;

/// The largest value a semaphore can hold.
pub const MAX_VALUE: usize = usize::MAX >> 1;

/// `bound` of an unbounded semaphore.
const NO_BOUND: usize = usize::MAX;

#[derive(Debug)]
pub struct Semaphore {
    state: AtomicUsize,
    /// The bound of a bounded semaphore, [`NO_BOUND`] otherwise (an atomic
    /// so that [`Semaphore::reinit`] can change it).
    bound: AtomicUsize,
    waiters: WaitList,
    /// `(ident, coarse ns)` of permit holders, oldest first.
    holders: SpinMutex<Vec<(u64, u64)>>,
    pub probe: Probe,
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
            bound: AtomicUsize::new(NO_BOUND),
            waiters: WaitList::new(),
            holders: SpinMutex::new(Vec::new()),
            probe: Probe::new(),
        }
    }

    /// A bounded semaphore: releases may never raise it above `value`.
    pub fn bounded(value: usize) -> Self {
        Semaphore { bound: AtomicUsize::new(value.min(MAX_VALUE)), ..Semaphore::new(value) }
    }

    /// Start over with `value` permits and `bound` (a bounded semaphore's
    /// initial value), as a second `__init__` does; threads waiting now
    /// are woken for the permits there are.
    pub fn reinit(&self, value: usize, bound: Option<usize>) {
        let value = value.min(MAX_VALUE);
        self.bound.store(bound.map_or(NO_BOUND, |b| b.min(MAX_VALUE)), Ordering::Relaxed);
        self.holders.lock().clear();
        let prev = self.state.swap(value * ONE, Ordering::AcqRel);
        if prev & PARKED != 0 {
            self.state.fetch_or(PARKED, Ordering::SeqCst);
            if value > 0 {
                self.wake(value);
            }
        }
    }

    pub fn value(&self) -> usize {
        self.state.load(Ordering::Relaxed) / ONE
    }

    /// Make a bounded semaphore unbounded or the reverse (the binding
    /// then checks a bound the permits cannot express).
    pub fn set_bound(&self, bound: Option<usize>) {
        self.bound.store(bound.map_or(NO_BOUND, |b| b.min(MAX_VALUE)), Ordering::Relaxed);
    }

    pub fn bound(&self) -> Option<usize> {
        Some(self.bound.load(Ordering::Relaxed)).filter(|b| *b != NO_BOUND)
    }

    /// Take a permit without waiting.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let ok = self.take_permit();
        if ok {
            self.note_holder();
        }
        ok
    }

    fn note_holder(&self) {
        let mut h = self.holders.lock();
        if h.len() < TRACKED {
            h.push((ident(), coarse_ns()));
        }
    }

    fn forget_holders(&self, n: usize) {
        let me = ident();
        let mut h = self.holders.lock();
        for _ in 0..n.min(h.len()) {
            let at = h.iter().position(|(t, _)| *t == me).unwrap_or(0);
            h.remove(at);
        }
    }

    #[inline]
    fn take_permit(&self) -> bool {
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

    /// The blocking part of acquire (see `Lock::acquire_slow`).
    #[cold]
    pub fn acquire_slow(&self, ctx: &WaitCtx<'_>) -> Outcome {
        let Ok(guard) = begin_wait(self, ctx) else { return Outcome::Interrupted };
        let out = acquire_slow(self, ctx);
        self.probe.stats.record_wait(guard.elapsed_ns());
        if out == Outcome::Notified {
            self.note_holder();
        }
        out
    }

    /// Add `n` permits and wake up to `n` waiters.
    #[inline]
    pub fn release(&self, n: usize) -> Result<(), ReleaseError> {
        self.release_from(n).map(drop)
    }

    /// [`Semaphore::release`], returning the count it added to.
    #[inline]
    pub fn release_from(&self, n: usize) -> Result<usize, ReleaseError> {
        let add = n.checked_mul(ONE).ok_or(ReleaseError::Overflow)?;
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let value = s / ONE;
            let new_value = value.checked_add(n).filter(|v| *v <= MAX_VALUE);
            match (new_value, self.bound()) {
                (None, _) => return Err(ReleaseError::Overflow),
                (Some(v), Some(b)) if v > b => return Err(ReleaseError::TooMany),
                _ => {}
            }
            match self.state.compare_exchange_weak(s, s + add, Ordering::Release, Ordering::Relaxed) {
                Ok(prev) => {
                    self.forget_holders(n);
                    if prev & PARKED != 0 {
                        self.wake(n);
                    }
                    return Ok(prev / ONE);
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
        if self.holders.is_locked() {
            // SAFETY: the child has one thread; whoever held this mutex at
            // the fork does not exist here and never unlocks it.
            unsafe { self.holders.force_unlock() };
        }
        self.probe.reset();
    }
}

impl Inspect for Semaphore {
    fn kind(&self) -> Kind {
        Kind::Semaphore
    }
    fn probe(&self) -> &Probe {
        &self.probe
    }
    fn holders(&self, out: &mut Vec<Holder>) {
        let h = self.holders.lock();
        for (ident, since) in h.iter() {
            match out.iter_mut().find(|x| x.ident == *ident) {
                Some(x) => x.count += 1,
                None => out.push(Holder { ident: *ident, since_ns: *since, count: 1 }),
            }
        }
    }
    fn waiters(&self, out: &mut Vec<Waiter>) {
        self.waiters.waiters_into(out);
    }
    fn loose(&self) -> bool {
        true
    }
}

impl Gate for Semaphore {
    fn try_pass(&self) -> bool {
        self.take_permit()
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn reinit_sets_count_and_bound() {
        let s = Semaphore::bounded(1);
        assert!(s.try_acquire());
        s.reinit(3, None);
        assert_eq!((s.value(), s.bound()), (3, None));
        assert_eq!(s.release_from(2), Ok(3));
        s.reinit(1, Some(1));
        assert_eq!(s.release(1), Err(ReleaseError::TooMany));
    }

    #[test]
    fn set_bound_lifts_and_restores_the_bound() {
        let s = Semaphore::bounded(1);
        s.set_bound(None);
        assert_eq!(s.release_from(1), Ok(1));
        s.set_bound(Some(2));
        assert_eq!(s.release(1), Err(ReleaseError::TooMany));
        assert_eq!(s.value(), 2);
    }
}
