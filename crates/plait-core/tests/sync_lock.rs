//! `Lock` and `RLock` with real threads: exclusion, handoff, timeouts,
//! interruption, ownership errors. Every wait has an upper bound so a lost
//! wakeup fails the test instead of hanging it; nothing asserts timings.
#![cfg(not(loom))]

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use plait_core::park::{Outcome, WaitCtx};
use plait_core::sync::{Lock, RLock, RLockError};
use plait_core::thread::ident;




fn wait_until(cond: impl Fn() -> bool) {
    let end = std::time::Instant::now() + BOUND;
    while !cond() {
        assert!(std::time::Instant::now() < end, "condition not reached within the bound");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn lock_try_acquire_and_release() {
    let l = Lock::new();
    assert!(!l.is_locked());
    assert_eq!(l.owner(), 0);
    assert!(l.try_acquire());
    assert!(l.is_locked());
    assert_eq!(l.owner(), ident());
    assert!(!l.try_acquire());
    assert!(l.release());
    assert!(!l.is_locked());
    assert_eq!(l.owner(), 0);
    // Releasing an unlocked lock is refused (RuntimeError in Python).
    assert!(!l.release());
}

#[test]
fn lock_mutual_exclusion_counter() {
    let threads = 4;
    let iters = scaled(20_000);
    let lock = Arc::new(Lock::new());
    // A read-modify-write that is not atomic: only exclusion keeps it exact.
    let counter = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (lock, counter) = (Arc::clone(&lock), Arc::clone(&counter));
            thread::spawn(move || {
                for _ in 0..iters {
                    assert_eq!(lock.acquire(&bounded()), Outcome::Notified);
                    let v = counter.load(Ordering::Relaxed);
                    counter.store(v + 1, Ordering::Relaxed);
                    assert!(lock.release());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(counter.load(Ordering::Relaxed), threads * iters);
    assert!(!lock.is_locked());
    assert!(lock.waiters().is_empty());
}

#[test]
fn lock_release_from_another_thread_hands_off() {
    // A Lock may be released by a thread that did not acquire it: ping-pong
    // two locks between two threads, each wait bounded.
    let rounds = scaled(2_000);
    let ping = Arc::new(Lock::new());
    let pong = Arc::new(Lock::new());
    assert!(ping.try_acquire());
    assert!(pong.try_acquire());
    let (p2, q2) = (Arc::clone(&ping), Arc::clone(&pong));
    let t = thread::spawn(move || {
        for _ in 0..rounds {
            assert_eq!(p2.acquire(&bounded()), Outcome::Notified);
            assert!(q2.release());
        }
    });
    for _ in 0..rounds {
        assert!(ping.release());
        assert_eq!(pong.acquire(&bounded()), Outcome::Notified);
    }
    t.join().unwrap();
    assert!(ping.is_locked() && pong.is_locked());
}

#[test]
fn lock_acquire_times_out_while_held() {
    let lock = Arc::new(Lock::new());
    assert!(lock.try_acquire());
    let l2 = Arc::clone(&lock);
    let out = thread::spawn(move || l2.acquire(&WaitCtx::timeout(Some(Duration::from_millis(30)))))
        .join()
        .unwrap();
    assert_eq!(out, Outcome::TimedOut);
    assert!(lock.is_locked());
    assert!(lock.waiters().is_empty());
    // The timed-out waiter left no trace: release takes the fast path
    // and the lock is reusable.
    assert!(lock.release());
    assert!(lock.try_acquire());
}

#[test]
fn lock_zero_timeout_is_a_try() {
    let lock = Lock::new();
    assert!(lock.try_acquire());
    assert_eq!(lock.acquire(&WaitCtx::timeout(Some(Duration::ZERO))), Outcome::TimedOut);
}

#[test]
fn lock_interrupt_ends_the_wait() {
    let lock = Arc::new(Lock::new());
    assert!(lock.try_acquire());
    let stop = Arc::new(AtomicBool::new(false));
    let (l2, s2) = (Arc::clone(&lock), Arc::clone(&stop));
    let t = thread::spawn(move || {
        let check = move || s2.load(Ordering::SeqCst);
        let ctx = bounded().with_interrupt(&check, Duration::from_millis(1));
        l2.acquire(&ctx)
    });
    wait_until(|| lock.waiters().len() == 1);
    stop.store(true, Ordering::SeqCst);
    assert_eq!(t.join().unwrap(), Outcome::Interrupted);
    assert!(lock.is_locked(), "an interrupted waiter must not take the lock");
    assert!(lock.waiters().is_empty());
    assert!(lock.release());
}

#[test]
fn lock_interrupted_waiter_does_not_swallow_a_wakeup() {
    // Two waiters; one is interrupted while the holder releases. The other
    // must still get the lock within the bound.
    for _ in 0..scaled(200) {
        let lock = Arc::new(Lock::new());
        assert!(lock.try_acquire());
        let stop = Arc::new(AtomicBool::new(false));
        let (l1, s1) = (Arc::clone(&lock), Arc::clone(&stop));
        let interrupted = thread::spawn(move || {
            let check = move || s1.load(Ordering::SeqCst);
            let out = l1.acquire(&bounded().with_interrupt(&check, Duration::from_micros(200)));
            if out == Outcome::Notified {
                assert!(l1.release());
            }
            out
        });
        let l2 = Arc::clone(&lock);
        let patient = thread::spawn(move || {
            let out = l2.acquire(&bounded());
            if out == Outcome::Notified {
                assert!(l2.release());
            }
            out
        });
        wait_until(|| lock.waiters().len() == 2);
        stop.store(true, Ordering::SeqCst);
        assert!(lock.release());
        let a = interrupted.join().unwrap();
        assert!(matches!(a, Outcome::Interrupted | Outcome::Notified));
        assert_eq!(patient.join().unwrap(), Outcome::Notified);
        assert!(!lock.is_locked());
    }
}

#[test]
fn lock_no_lost_wakeup_under_contention() {
    // Many short critical sections with many parked waiters: with every
    // wait bounded, a lost wakeup shows up as a TimedOut.
    let threads = 6;
    let iters = scaled(5_000);
    let lock = Arc::new(Lock::new());
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                for i in 0..iters {
                    assert_eq!(lock.acquire(&bounded()), Outcome::Notified, "iteration {i}");
                    if i % 64 == 0 {
                        thread::yield_now();
                    }
                    assert!(lock.release());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(!lock.is_locked());
}

#[test]
fn lock_reset_frees_it_and_wakes_waiters() {
    let lock = Arc::new(Lock::new());
    assert!(lock.try_acquire());
    let l2 = Arc::clone(&lock);
    let t = thread::spawn(move || {
        let out = l2.acquire(&bounded());
        if out == Outcome::Notified {
            assert!(l2.release());
        }
        out
    });
    wait_until(|| lock.waiters().len() == 1);
    lock.reset();
    assert_eq!(t.join().unwrap(), Outcome::Notified);
    assert!(!lock.is_locked());
}

#[test]
fn lock_reports_waiters() {
    let lock = Arc::new(Lock::new());
    assert!(lock.try_acquire());
    let l2 = Arc::clone(&lock);
    let (tx, rx) = std::sync::mpsc::channel();
    let t = thread::spawn(move || {
        tx.send(ident()).unwrap();
        assert_eq!(l2.acquire(&bounded()), Outcome::Notified);
        assert!(l2.release());
    });
    let waiter = rx.recv().unwrap();
    wait_until(|| lock.waiters() == vec![waiter]);
    assert!(lock.release());
    t.join().unwrap();
}

#[test]
fn rlock_reentrancy_and_counts() {
    let r = RLock::new();
    assert_eq!(r.try_acquire(), Ok(true));
    assert_eq!(r.acquire(&bounded()), Ok(Outcome::Notified));
    assert_eq!(r.try_acquire(), Ok(true));
    assert!(r.is_owned());
    assert_eq!(r.recursion_count(), 3);
    assert_eq!(r.owner(), ident());
    assert_eq!(r.release(), Ok(()));
    assert_eq!(r.release(), Ok(()));
    assert!(r.is_locked());
    assert_eq!(r.release(), Ok(()));
    assert!(!r.is_locked());
    assert_eq!(r.owner(), 0);
    assert_eq!(r.release(), Err(RLockError::NotOwned));
}

#[test]
fn rlock_release_by_non_owner_is_refused() {
    let r = Arc::new(RLock::new());
    assert_eq!(r.try_acquire(), Ok(true));
    let r2 = Arc::clone(&r);
    thread::spawn(move || {
        assert_eq!(r2.release(), Err(RLockError::NotOwned));
        assert_eq!(r2.release_save(), Err(RLockError::NotOwned));
        assert!(!r2.is_owned());
        assert_eq!(r2.recursion_count(), 0);
        assert_eq!(r2.try_acquire(), Ok(false));
        assert_eq!(
            r2.acquire(&WaitCtx::timeout(Some(Duration::from_millis(20)))),
            Ok(Outcome::TimedOut)
        );
    })
    .join()
    .unwrap();
    assert!(r.is_owned());
    assert_eq!(r.release(), Ok(()));
}

#[test]
fn rlock_release_save_and_restore() {
    let r = Arc::new(RLock::new());
    for _ in 0..3 {
        assert_eq!(r.try_acquire(), Ok(true));
    }
    let (count, owner) = r.release_save().unwrap();
    assert_eq!((count, owner), (3, ident()));
    assert!(!r.is_locked());
    // Another thread can take it meanwhile.
    let r2 = Arc::clone(&r);
    thread::spawn(move || {
        assert_eq!(r2.acquire(&bounded()), Ok(Outcome::Notified));
        assert_eq!(r2.release(), Ok(()));
    })
    .join()
    .unwrap();
    assert!(r.try_acquire_restore(count));
    assert_eq!(r.recursion_count(), 3);
    for _ in 0..3 {
        assert_eq!(r.release(), Ok(()));
    }
    assert!(!r.is_locked());
    // release_save when not owned.
    assert_eq!(r.release_save(), Err(RLockError::NotOwned));
}

#[test]
fn rlock_mutual_exclusion_with_nesting() {
    let threads = 4;
    let iters = scaled(5_000);
    let r = Arc::new(RLock::new());
    let counter = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (r, counter) = (Arc::clone(&r), Arc::clone(&counter));
            thread::spawn(move || {
                for _ in 0..iters {
                    assert_eq!(r.acquire(&bounded()), Ok(Outcome::Notified));
                    assert_eq!(r.acquire(&bounded()), Ok(Outcome::Notified));
                    let v = counter.load(Ordering::Relaxed);
                    counter.store(v + 1, Ordering::Relaxed);
                    assert_eq!(r.release(), Ok(()));
                    assert_eq!(r.release(), Ok(()));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(counter.load(Ordering::Relaxed), threads * iters);
    assert!(!r.is_locked());
}

#[test]
fn rlock_interrupt_ends_the_wait() {
    let r = Arc::new(RLock::new());
    assert_eq!(r.try_acquire(), Ok(true));
    let stop = Arc::new(AtomicBool::new(false));
    let (r2, s2) = (Arc::clone(&r), Arc::clone(&stop));
    let t = thread::spawn(move || {
        let check = move || s2.load(Ordering::SeqCst);
        r2.acquire(&bounded().with_interrupt(&check, Duration::from_millis(1)))
    });
    wait_until(|| r.waiters().len() == 1);
    stop.store(true, Ordering::SeqCst);
    assert_eq!(t.join().unwrap(), Ok(Outcome::Interrupted));
    assert!(r.is_owned());
    assert_eq!(r.release(), Ok(()));
}
