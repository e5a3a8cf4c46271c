//! A mutex for very short critical sections: lock is one atomic swap,
//! unlock a plain release store.
//!
//! `parking_lot::Mutex` unlocks with a compare-and-swap (it must notice
//! parked threads); on the queue's hot path that second atomic per
//! operation is a measurable share of a put or get. Here nobody ever parks
//! on the lock itself: a contender spins briefly, then yields, then sleeps in
//! short steps. That is right for the queue, whose critical sections are a
//! few pointer moves — except a PriorityQueue's, which run user comparisons;
//! contenders there are detached from the interpreter (see `queue.rs`), so
//! the backoff costs only their own CPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The raw lock behind [`SpinMutex`].
#[derive(Debug)]
pub struct RawSpin {
    locked: AtomicBool,
}

// SAFETY: `lock` returns only after it swapped `locked` from false to true
// with Acquire ordering, and `unlock` stores false with Release ordering, so
// exactly one holder exists at a time and its writes are visible to the next.
unsafe impl lock_api::RawMutex for RawSpin {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: RawSpin = RawSpin { locked: AtomicBool::new(false) };
    type GuardMarker = lock_api::GuardSend;

    #[inline]
    fn lock(&self) {
        if !self.try_lock() {
            self.lock_contended();
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        !self.locked.swap(true, Ordering::Acquire)
    }

    /// # Safety
    /// As [`lock_api::RawMutex::unlock`]: the caller holds the lock.
    #[inline]
    unsafe fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

impl RawSpin {
    #[cold]
    fn lock_contended(&self) {
        let mut round = 0u32;
        loop {
            // Wait for it to look free before trying (test-and-test-and-set).
            while self.locked.load(Ordering::Relaxed) {
                if round < 64 {
                    std::hint::spin_loop();
                } else if round < 128 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
                round = round.saturating_add(1);
            }
            if !self.locked.swap(true, Ordering::Acquire) {
                return;
            }
        }
    }
}

/// A mutex over `T` using [`RawSpin`].
pub type SpinMutex<T> = lock_api::Mutex<RawSpin, T>;
/// Its guard (Send, so it may be returned from a detached section).
pub type SpinGuard<'a, T> = lock_api::MutexGuard<'a, RawSpin, T>;
