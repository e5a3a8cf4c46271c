//! `Event` with real threads: set/clear semantics, wake-all, timeouts and
//! interruption. Every wait has an upper bound; nothing asserts timings.
#![cfg(not(loom))]

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use plait_core::park::{Outcome, WaitCtx};
use plait_core::sync::Event;





#[test]
fn set_and_clear() {
    let e = Event::new();
    assert!(!e.is_set());
    e.set();
    assert!(e.is_set());
    e.set();
    assert!(e.is_set());
    assert_eq!(e.wait(&WaitCtx::timeout(Some(Duration::ZERO))), Outcome::Notified);
    e.clear();
    assert!(!e.is_set());
    e.clear();
    assert!(!e.is_set());
}

#[test]
fn wait_times_out_while_clear() {
    let e = Event::new();
    assert_eq!(e.wait(&WaitCtx::timeout(Some(Duration::from_millis(20)))), Outcome::TimedOut);
    assert_eq!(e.wait(&WaitCtx::timeout(Some(Duration::ZERO))), Outcome::TimedOut);
    assert!(e.waiters().is_empty());
    // A set after a timed-out wait still works.
    e.set();
    assert_eq!(e.wait(&bounded()), Outcome::Notified);
}

#[test]
fn set_wakes_every_waiter() {
    let e = Arc::new(Event::new());
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let e = Arc::clone(&e);
            thread::spawn(move || e.wait(&bounded()))
        })
        .collect();
    wait_until(|| e.waiters().len() == 5);
    e.set();
    for h in handles {
        assert_eq!(h.join().unwrap(), Outcome::Notified);
    }
    assert!(e.waiters().is_empty());
}

#[test]
fn woken_waiter_succeeds_even_if_cleared_again() {
    // gh-57711: set() then an immediate clear() still releases the waiters.
    let e = Arc::new(Event::new());
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let e = Arc::clone(&e);
            thread::spawn(move || e.wait(&bounded()))
        })
        .collect();
    wait_until(|| e.waiters().len() == 3);
    e.set();
    e.clear();
    for h in handles {
        assert_eq!(h.join().unwrap(), Outcome::Notified);
    }
    assert!(!e.is_set());
}

#[test]
fn wait_after_clear_blocks_again() {
    let e = Arc::new(Event::new());
    e.set();
    e.clear();
    let e2 = Arc::clone(&e);
    let out = thread::spawn(move || e2.wait(&WaitCtx::timeout(Some(Duration::from_millis(20)))))
        .join()
        .unwrap();
    assert_eq!(out, Outcome::TimedOut);
}

#[test]
fn interrupt_ends_the_wait() {
    let e = Arc::new(Event::new());
    let stop = Arc::new(AtomicBool::new(false));
    let (e2, s2) = (Arc::clone(&e), Arc::clone(&stop));
    let t = thread::spawn(move || {
        let check = move || s2.load(Ordering::SeqCst);
        e2.wait(&bounded().with_interrupt(&check, Duration::from_millis(1)))
    });
    wait_until(|| e.waiters().len() == 1);
    stop.store(true, Ordering::SeqCst);
    assert_eq!(t.join().unwrap(), Outcome::Interrupted);
    assert!(e.waiters().is_empty());
    assert!(!e.is_set());
}

#[test]
fn ping_pong_has_no_lost_wakeups() {
    // Two events handed back and forth; each side clears before waking the
    // other, so a lost wakeup leaves a side waiting until the bound.
    let rounds = scaled(2_000);
    let a = Arc::new(Event::new());
    let b = Arc::new(Event::new());
    let (a2, b2) = (Arc::clone(&a), Arc::clone(&b));
    let t = thread::spawn(move || {
        for i in 0..rounds {
            assert_eq!(a2.wait(&bounded()), Outcome::Notified, "round {i}");
            a2.clear();
            b2.set();
        }
    });
    for i in 0..rounds {
        a.set();
        assert_eq!(b.wait(&bounded()), Outcome::Notified, "round {i}");
        b.clear();
    }
    t.join().unwrap();
}
