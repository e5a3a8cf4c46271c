//! `CondVar` (the waiting half of `Condition`): FIFO `notify(n)`, timeouts,
//! cancel, interruption, and the Condition protocol under contention.
#![cfg(not(loom))]

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use plait_core::park::{Outcome, WaitCtx};
use plait_core::sync::CondVar;





#[test]
fn notify_n_wakes_in_fifo_order() {
    let cv = Arc::new(CondVar::new());
    let woken = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    // Enqueue five waiters one after another so their order is known.
    for i in 0..5 {
        let (cv2, woken2) = (Arc::clone(&cv), Arc::clone(&woken));
        handles.push(thread::spawn(move || {
            let node = cv2.enqueue();
            let out = cv2.wait(&node, &bounded());
            woken2.lock().unwrap().push(i);
            out
        }));
        wait_until(|| cv.len() == i + 1);
    }
    assert_eq!(cv.notify(1), 1);
    wait_until(|| woken.lock().unwrap().len() == 1);
    assert_eq!(*woken.lock().unwrap(), vec![0]);
    assert_eq!(cv.notify(2), 2);
    wait_until(|| woken.lock().unwrap().len() == 3);
    let mut got = woken.lock().unwrap()[1..].to_vec();
    got.sort();
    assert_eq!(got, vec![1, 2]);
    assert_eq!(cv.len(), 2);
    assert_eq!(cv.notify_all(), 2);
    for h in handles {
        assert_eq!(h.join().unwrap(), Outcome::Notified);
    }
    assert!(cv.is_empty());
    assert_eq!(cv.notify(1), 0, "notify with no waiters wakes nobody");
}

#[test]
fn waiters_reported_in_queue_order() {
    let cv = CondVar::new();
    let a = cv.enqueue();
    let b = cv.enqueue();
    assert_eq!(cv.waiters(), vec![a.ident(), b.ident()]);
    cv.cancel(&a);
    assert_eq!(cv.len(), 1);
    cv.cancel(&b);
    assert!(cv.is_empty());
}

#[test]
fn timeout_leaves_the_queue() {
    let cv = CondVar::new();
    let node = cv.enqueue();
    assert_eq!(
        cv.wait(&node, &WaitCtx::timeout(Some(Duration::from_millis(20)))),
        Outcome::TimedOut
    );
    assert!(cv.is_empty());
    assert!(!node.is_notified());
}

#[test]
fn notified_before_parking_returns_at_once() {
    let cv = CondVar::new();
    let node = cv.enqueue();
    assert_eq!(cv.notify(1), 1);
    assert!(node.is_notified());
    assert_eq!(cv.wait(&node, &WaitCtx::timeout(Some(Duration::ZERO))), Outcome::Notified);
}

#[test]
fn interrupt_ends_the_wait() {
    let cv = Arc::new(CondVar::new());
    let stop = Arc::new(AtomicBool::new(false));
    let (cv2, s2) = (Arc::clone(&cv), Arc::clone(&stop));
    let t = thread::spawn(move || {
        let node = cv2.enqueue();
        let check = move || s2.load(Ordering::SeqCst);
        cv2.wait(&node, &bounded().with_interrupt(&check, Duration::from_millis(1)))
    });
    wait_until(|| cv.len() == 1);
    stop.store(true, Ordering::SeqCst);
    assert_eq!(t.join().unwrap(), Outcome::Interrupted);
    assert!(cv.is_empty());
}

#[test]
fn cancel_after_a_notification_hands_it_on() {
    // A waiter chosen by notify(1) that then cancels must pass the
    // notification to the next waiter, or it is lost.
    let cv = CondVar::new();
    let first = cv.enqueue();
    let second = cv.enqueue();
    assert_eq!(cv.notify(1), 1);
    assert!(first.is_notified());
    cv.cancel(&first);
    assert!(second.is_notified());
    assert!(cv.is_empty());
}

#[test]
fn condition_protocol_producer_consumer() {
    // A bounded counter protected by a mutex, consumers wait on the
    // CondVar exactly as threading.Condition does: enqueue under the lock,
    // release, park, re-take.
    struct Shared {
        items: Mutex<usize>,
        cv: CondVar,
    }
    let total = scaled(5_000);
    let consumers = 3;
    let s = Arc::new(Shared { items: Mutex::new(0), cv: CondVar::new() });
    let taken: Vec<_> = (0..consumers)
        .map(|c| {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                let share = total / consumers + usize::from(c < total % consumers);
                for _ in 0..share {
                    let mut g = s.items.lock().unwrap();
                    while *g == 0 {
                        let node = s.cv.enqueue();
                        drop(g);
                        let out = s.cv.wait(&node, &bounded());
                        assert_ne!(out, Outcome::TimedOut, "lost notification");
                        g = s.items.lock().unwrap();
                    }
                    *g -= 1;
                }
                share
            })
        })
        .collect();
    for i in 0..total {
        *s.items.lock().unwrap() += 1;
        s.cv.notify(1);
        if i % 256 == 0 {
            thread::yield_now();
        }
    }
    let got: usize = taken.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(got, total);
    assert_eq!(*s.items.lock().unwrap(), 0);
}
