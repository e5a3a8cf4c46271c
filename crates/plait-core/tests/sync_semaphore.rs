//! `Semaphore` / bounded semaphore with real threads. Every wait has an
//! upper bound; nothing asserts timings.
#![cfg(not(loom))]

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use plait_core::park::{Outcome, WaitCtx};
use plait_core::sync::semaphore::MAX_VALUE;
use plait_core::sync::{ReleaseError, Semaphore};





#[test]
fn counts_permits() {
    let s = Semaphore::new(2);
    assert_eq!(s.value(), 2);
    assert_eq!(s.bound(), None);
    assert!(s.try_acquire());
    assert!(s.try_acquire());
    assert!(!s.try_acquire());
    assert_eq!(s.value(), 0);
    s.release(3).unwrap();
    assert_eq!(s.value(), 3);
    s.release(0).unwrap();
    assert_eq!(s.value(), 3);
}

#[test]
fn bounded_release_past_initial_value_is_refused() {
    let s = Semaphore::bounded(2);
    assert_eq!(s.bound(), Some(2));
    assert_eq!(s.release(1), Err(ReleaseError::TooMany));
    assert_eq!(s.value(), 2);
    assert!(s.try_acquire());
    assert_eq!(s.release(2), Err(ReleaseError::TooMany), "all-or-nothing");
    assert_eq!(s.value(), 1);
    s.release(1).unwrap();
    assert_eq!(s.value(), 2);
    assert!(s.try_acquire() && s.try_acquire());
    s.release(2).unwrap();
    assert_eq!(s.value(), 2);
}

#[test]
fn release_overflow_is_refused() {
    let s = Semaphore::new(MAX_VALUE);
    assert_eq!(s.value(), MAX_VALUE);
    assert_eq!(s.release(1), Err(ReleaseError::Overflow));
    let s = Semaphore::new(0);
    assert_eq!(s.release(usize::MAX), Err(ReleaseError::Overflow));
    assert_eq!(s.release(MAX_VALUE + 1), Err(ReleaseError::Overflow));
    assert_eq!(s.value(), 0);
    s.release(MAX_VALUE).unwrap();
    assert_eq!(s.value(), MAX_VALUE);
}

#[test]
fn acquire_times_out_without_permits() {
    let s = Semaphore::new(0);
    assert_eq!(s.acquire(&WaitCtx::timeout(Some(Duration::from_millis(20)))), Outcome::TimedOut);
    assert_eq!(s.acquire(&WaitCtx::timeout(Some(Duration::ZERO))), Outcome::TimedOut);
    assert!(s.waiters().is_empty());
    assert_eq!(s.value(), 0);
}

#[test]
fn release_n_wakes_n_waiters() {
    let s = Arc::new(Semaphore::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (s, done) = (Arc::clone(&s), Arc::clone(&done));
            thread::spawn(move || {
                assert_eq!(s.acquire(&bounded()), Outcome::Notified);
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    wait_until(|| s.waiters().len() == 4);
    s.release(3).unwrap();
    wait_until(|| done.load(Ordering::SeqCst) == 3);
    assert_eq!(s.value(), 0);
    s.release(1).unwrap();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 4);
    assert_eq!(s.value(), 0);
}

#[test]
fn interrupt_ends_the_wait_without_taking_a_permit() {
    let s = Arc::new(Semaphore::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, stop2) = (Arc::clone(&s), Arc::clone(&stop));
    let t = thread::spawn(move || {
        let check = move || stop2.load(Ordering::SeqCst);
        s2.acquire(&bounded().with_interrupt(&check, Duration::from_millis(1)))
    });
    wait_until(|| s.waiters().len() == 1);
    stop.store(true, Ordering::SeqCst);
    assert_eq!(t.join().unwrap(), Outcome::Interrupted);
    assert_eq!(s.value(), 0);
    assert!(s.waiters().is_empty());
}

#[test]
fn permits_are_conserved_under_contention() {
    // Producers release one permit at a time, consumers acquire (bounded):
    // every acquire succeeds and no permit is created or lost.
    let per_thread = scaled(5_000);
    let s = Arc::new(Semaphore::new(0));
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                for i in 0..per_thread {
                    assert_eq!(s.acquire(&bounded()), Outcome::Notified, "acquire {i}");
                }
            })
        })
        .collect();
    let producers: Vec<_> = (0..3)
        .map(|_| {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                for i in 0..per_thread {
                    s.release(1).unwrap();
                    if i % 128 == 0 {
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for h in producers.into_iter().chain(consumers) {
        h.join().unwrap();
    }
    assert_eq!(s.value(), 0);
    assert!(s.waiters().is_empty());
}

#[test]
fn bounded_semaphore_as_a_pool_limits_concurrency() {
    let limit = 2;
    let s = Arc::new(Semaphore::bounded(limit));
    let inside = Arc::new(AtomicUsize::new(0));
    let max_inside = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let (s, inside, max_inside) =
                (Arc::clone(&s), Arc::clone(&inside), Arc::clone(&max_inside));
            thread::spawn(move || {
                for _ in 0..scaled(2_000) {
                    assert_eq!(s.acquire(&bounded()), Outcome::Notified);
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max_inside.fetch_max(now, Ordering::SeqCst);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    s.release(1).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(max_inside.load(Ordering::SeqCst) <= limit);
    assert_eq!(s.value(), limit);
    assert_eq!(s.release(1), Err(ReleaseError::TooMany));
}
