//! loom models of the lock-free parts: the state-word protocols with the
//! `PARKED` bit (`sync/acquire.rs`, `lock.rs`, `semaphore.rs`, `event.rs`)
//! and `WaitList`/`Node` wakeups. The real code runs here: under
//! `--cfg loom`, `src/loom.rs` routes its atomics, wait-list mutex and
//! park/unpark through loom, which explores every interleaving. A lost
//! wakeup shows up as a loom deadlock (every thread parked), a broken
//! exclusion as a concurrent access to a `loom::cell::UnsafeCell`.
//!
//! Only untimed waits (`WaitCtx::forever()`) are modelled: loom has no time.
//!
//! Run (a separate target dir keeps the normal build intact):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p plait-core --release --test loom_sync
//! ```
//!
//! Models with three threads are bounded to three preemptions to stay
//! well under a minute; `LOOM_MAX_PREEMPTIONS=N` overrides.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use plait_core::park::{Outcome, WaitCtx};
use plait_core::sync::{CondVar, Event, Lock, Semaphore};

/// Run a model with three threads, bounded to three preemptions unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise.
fn model3(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// Take the lock, bump a counter that only the holder may touch, release.
fn locked_increment(lock: &Lock, counter: &UnsafeCell<usize>) {
    assert_eq!(lock.acquire(&WaitCtx::forever()), Outcome::Notified);
    // loom fails the model if two threads are ever in here at once.
    counter.with_mut(|c| unsafe { *c += 1 });
    assert!(lock.release());
}

struct Shared {
    lock: Lock,
    counter: UnsafeCell<usize>,
}

// SAFETY: `counter` is only touched while `lock` is held; loom checks it.
unsafe impl Sync for Shared {}

#[test]
fn lock_two_threads_exclusion_and_no_lost_wakeup() {
    loom::model(|| {
        let s = Arc::new(Shared { lock: Lock::new(), counter: UnsafeCell::new(0) });
        let s2 = Arc::clone(&s);
        let t = thread::spawn(move || locked_increment(&s2.lock, &s2.counter));
        locked_increment(&s.lock, &s.counter);
        t.join().unwrap();
        assert!(!s.lock.is_locked());
        assert_eq!(s.counter.with(|c| unsafe { *c }), 2);
    });
}

#[test]
fn lock_three_threads_exclusion_and_no_lost_wakeup() {
    // Two parked waiters: a release hands off to one while PARKED must
    // stay set for the other.
    model3(|| {
        let s = Arc::new(Shared { lock: Lock::new(), counter: UnsafeCell::new(0) });
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let s = Arc::clone(&s);
                thread::spawn(move || locked_increment(&s.lock, &s.counter))
            })
            .collect();
        locked_increment(&s.lock, &s.counter);
        for t in threads {
            t.join().unwrap();
        }
        assert!(!s.lock.is_locked());
        assert_eq!(s.counter.with(|c| unsafe { *c }), 3);
    });
}

#[test]
fn lock_released_by_another_thread_wakes_the_waiter() {
    // `_thread.lock` may be released by any thread: the main thread holds
    // it, a second thread waits, the main thread releases.
    loom::model(|| {
        let lock = Arc::new(Lock::new());
        assert!(lock.try_acquire());
        let l2 = Arc::clone(&lock);
        let t = thread::spawn(move || {
            assert_eq!(l2.acquire(&WaitCtx::forever()), Outcome::Notified);
            assert!(l2.release());
        });
        assert!(lock.release());
        t.join().unwrap();
        assert!(!lock.is_locked());
    });
}

#[test]
fn semaphore_two_waiters_two_single_releases() {
    model3(|| {
        let sem = Arc::new(Semaphore::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let sem = Arc::clone(&sem);
                thread::spawn(move || {
                    assert_eq!(sem.acquire(&WaitCtx::forever()), Outcome::Notified)
                })
            })
            .collect();
        sem.release(1).unwrap();
        sem.release(1).unwrap();
        for t in waiters {
            t.join().unwrap();
        }
        assert_eq!(sem.value(), 0);
    });
}

#[test]
fn semaphore_one_release_of_two_wakes_both_waiters() {
    model3(|| {
        let sem = Arc::new(Semaphore::bounded(2));
        assert!(sem.try_acquire());
        assert!(sem.try_acquire());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let sem = Arc::clone(&sem);
                thread::spawn(move || {
                    assert_eq!(sem.acquire(&WaitCtx::forever()), Outcome::Notified)
                })
            })
            .collect();
        sem.release(2).unwrap();
        for t in waiters {
            t.join().unwrap();
        }
        assert_eq!(sem.value(), 0);
    });
}

#[test]
fn semaphore_release_vs_acquire_and_barger() {
    // One release(1) races a parked waiter and a non-blocking barger:
    // exactly one of them gets the permit, and if the barger wins, the
    // barger's own release reaches the waiter.
    model3(|| {
        let sem = Arc::new(Semaphore::new(0));
        let s1 = Arc::clone(&sem);
        let waiter = thread::spawn(move || {
            assert_eq!(s1.acquire(&WaitCtx::forever()), Outcome::Notified);
        });
        let s2 = Arc::clone(&sem);
        let barger = thread::spawn(move || {
            if s2.try_acquire() {
                s2.release(1).unwrap();
            }
        });
        sem.release(1).unwrap();
        barger.join().unwrap();
        waiter.join().unwrap();
        assert_eq!(sem.value(), 0);
    });
}

#[test]
fn event_set_wakes_waiter() {
    loom::model(|| {
        let ev = Arc::new(Event::new());
        let e2 = Arc::clone(&ev);
        let t = thread::spawn(move || e2.wait(&WaitCtx::forever()));
        ev.set();
        assert_eq!(t.join().unwrap(), Outcome::Notified);
        assert!(ev.is_set());
    });
}

#[test]
fn event_set_wakes_every_waiter() {
    model3(|| {
        let ev = Arc::new(Event::new());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let ev = Arc::clone(&ev);
                thread::spawn(move || ev.wait(&WaitCtx::forever()))
            })
            .collect();
        ev.set();
        for t in waiters {
            assert_eq!(t.join().unwrap(), Outcome::Notified);
        }
    });
}

#[test]
fn event_woken_waiter_returns_true_even_if_cleared() {
    // gh-57711: a waiter woken by set() reports success even if clear()
    // ran before it resumed. Whatever the interleaving of set, clear, set
    // with the waiter's check and park, it must return Notified.
    loom::model(|| {
        let ev = Arc::new(Event::new());
        let e2 = Arc::clone(&ev);
        let t = thread::spawn(move || e2.wait(&WaitCtx::forever()));
        ev.set();
        ev.clear();
        // A waiter that first looks after clear() needs this second set.
        ev.set();
        assert_eq!(t.join().unwrap(), Outcome::Notified);
    });
}

struct Cond {
    ready: loom::sync::Mutex<bool>,
    cv: CondVar,
}

#[test]
fn condvar_notify_one_reaches_waiter() {
    // threading.Condition's protocol on the WaitList/Node wakeup path:
    // enqueue while holding the lock, release, park, re-take.
    loom::model(|| {
        let c = Arc::new(Cond { ready: loom::sync::Mutex::new(false), cv: CondVar::new() });
        let c2 = Arc::clone(&c);
        let t = thread::spawn(move || {
            let mut g = c2.ready.lock().unwrap();
            while !*g {
                let node = c2.cv.enqueue();
                drop(g);
                assert_eq!(c2.cv.wait(&node, &WaitCtx::forever()), Outcome::Notified);
                g = c2.ready.lock().unwrap();
            }
        });
        {
            let mut g = c.ready.lock().unwrap();
            *g = true;
            c.cv.notify(1);
        }
        t.join().unwrap();
        assert!(c.cv.is_empty());
    });
}
