//! The wait table and the deadlock walk: which cycles are found, which are
//! certain, what a refused wait looks like, what the table says about
//! parked threads. The mode is process-wide, so the tests take turns.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{bounded, wait_until, BOUND};
use plait_core::debug::waits::{self, Mode};
use plait_core::debug::{id_of, Inspect, Kind, RunsOn};
use plait_core::future::Future;
use plait_core::park::{Outcome, WaitCtx};
use plait_core::sync::{Lock, RLock, Semaphore};
use plait_core::thread::ident;

static TURN: Mutex<()> = Mutex::new(());

fn turn(mode: Mode) -> std::sync::MutexGuard<'static, ()> {
    let g = TURN.lock().unwrap_or_else(|e| e.into_inner());
    waits::set_mode(mode);
    g
}

fn refusable() -> WaitCtx<'static> {
    bounded().refusable()
}

/// Whether thread `t` is parked (per the wait table) on `obj`.
fn parked_on(t: u64, obj: &dyn Inspect) -> bool {
    waits::thread_waits().iter().any(|w| w.ident == t && w.id == id_of(obj))
}

#[test]
fn two_threads_two_locks_raise_refuses_the_closing_wait() {
    let _t = turn(Mode::Raise);
    let a = Arc::new(Lock::new());
    let b = Arc::new(Lock::new());
    assert!(a.try_acquire());
    let (a2, b2) = (a.clone(), b.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let other = thread::spawn(move || {
        assert!(b2.try_acquire());
        tx.send(ident()).unwrap();
        // Parks on `a` (held by the test thread): no cycle yet.
        let out = a2.acquire(&refusable());
        b2.release();
        if out == Outcome::Notified {
            a2.release();
        }
        out
    });
    let other_id = rx.recv().unwrap();
    wait_until(|| parked_on(other_id, &*a));
    // Closing the cycle is refused; nothing is acquired.
    assert_eq!(b.acquire(&refusable()), Outcome::Interrupted);
    let cycle = waits::take_refused().expect("the refused wait keeps its cycle");
    assert!(cycle.certain);
    assert_eq!(cycle.links.len(), 2);
    assert_eq!(cycle.links[0].thread, ident());
    assert_eq!(cycle.links[0].id, id_of(&*b));
    assert_eq!(cycle.links[1].thread, other_id);
    assert_eq!(cycle.links[1].id, id_of(&*a));
    assert!(cycle.links.iter().all(|l| l.kind == Kind::Lock));
    assert!(!parked_on(ident(), &*b), "a refused wait leaves no entry");
    // The other thread was not disturbed: releasing `a` lets it finish.
    a.release();
    assert_eq!(other.join().unwrap(), Outcome::Notified);
    assert!(!b.is_locked());
}

#[test]
fn an_unrefusable_wait_parks_even_in_raise_mode() {
    let _t = turn(Mode::Raise);
    let a = Arc::new(Lock::new());
    assert!(a.try_acquire());
    // One thread waiting on its own plain Lock: not certain, so it parks
    // (and times out here) instead of being refused.
    let out = a.acquire(&WaitCtx::timeout(Some(Duration::from_millis(30))).refusable());
    assert_eq!(out, Outcome::TimedOut);
    assert!(waits::take_refused().is_none());
    a.release();
}

#[test]
fn report_mode_finds_the_cycle_and_parks() {
    let _t = turn(Mode::Report);
    let a = Arc::new(RLock::new());
    let b = Arc::new(RLock::new());
    assert_eq!(a.try_acquire(), Ok(true));
    let (a2, b2) = (a.clone(), b.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let other = thread::spawn(move || {
        assert_eq!(b2.try_acquire(), Ok(true));
        tx.send(ident()).unwrap();
        let out = a2.acquire(&bounded()).unwrap();
        b2.release().unwrap();
        if out == Outcome::Notified {
            a2.release().unwrap();
        }
    });
    let other_id = rx.recv().unwrap();
    wait_until(|| parked_on(other_id, &*a));
    // The closing wait parks (report mode) for a moment: the cycle is in
    // the table, found from either side.
    let ctx = WaitCtx::timeout(Some(Duration::from_millis(50)));
    let me = ident();
    let b3 = b.clone();
    let seen = thread::scope(|s| {
        let h = s.spawn(|| {
            wait_until(|| parked_on(me, &*b3));
            waits::thread_waits().len()
        });
        assert_eq!(b.acquire(&ctx).unwrap(), Outcome::TimedOut);
        h.join().unwrap()
    });
    assert!(seen >= 2);
    a.release().unwrap();
    other.join().unwrap();
}

#[test]
fn cycles_through_a_semaphore_are_probable() {
    let _t = turn(Mode::Raise);
    let s = Arc::new(Semaphore::new(1));
    let l = Arc::new(Lock::new());
    assert!(l.try_acquire());
    let (s2, l2) = (s.clone(), l.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let other = thread::spawn(move || {
        assert!(s2.try_acquire());
        tx.send(ident()).unwrap();
        let out = l2.acquire(&bounded());
        s2.release(1).unwrap();
        if out == Outcome::Notified {
            l2.release();
        }
    });
    let other_id = rx.recv().unwrap();
    wait_until(|| parked_on(other_id, &*l));
    let me = ident();
    let s3 = s.clone();
    thread::scope(|sc| {
        let h = sc.spawn(|| {
            wait_until(|| parked_on(me, &*s3));
            assert!(parked_on(other_id, &*l));
        });
        // Not refused (a semaphore may be released by anyone): it parks.
        assert_eq!(s.acquire(&WaitCtx::timeout(Some(Duration::from_millis(50))).refusable()), Outcome::TimedOut);
        h.join().unwrap();
    });
    assert!(waits::take_refused().is_none());
    l.release();
    other.join().unwrap();
}

#[test]
fn a_thread_waiting_for_a_future_its_runner_cannot_finish() {
    let _t = turn(Mode::Raise);
    let lock = Arc::new(Lock::new());
    let fut: Arc<Future<u32, ()>> = Arc::new(Future::new());
    assert!(lock.try_acquire());
    let (l2, f2) = (lock.clone(), fut.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let runner = thread::spawn(move || {
        assert_eq!(f2.set_running_or_notify_cancel(), Ok(true));
        tx.send(ident()).unwrap();
        let out = l2.acquire(&bounded());
        if out == Outcome::Notified {
            l2.release();
        }
        let _ = f2.resolve(plait_core::future::Resolution::Value(1));
    });
    let runner_id = rx.recv().unwrap();
    assert_eq!(fut.runs_on(), RunsOn::Thread(runner_id));
    wait_until(|| parked_on(runner_id, &*lock));
    // thread -> future -> runner thread -> lock -> thread: refused.
    assert_eq!(fut.wait(&refusable()), Outcome::Interrupted);
    let cycle = waits::take_refused().unwrap();
    assert!(cycle.certain);
    assert_eq!(cycle.links[0].kind, Kind::Future);
    assert_eq!(cycle.links[1].kind, Kind::Lock);
    lock.release();
    runner.join().unwrap();
    assert_eq!(fut.wait(&bounded()), Outcome::Notified);
    assert_eq!(fut.runs_on(), RunsOn::Nothing);
}

#[test]
fn the_table_names_each_parked_thread_and_its_deadline() {
    let _t = turn(Mode::Patient);
    let lock = Arc::new(Lock::new());
    assert!(lock.try_acquire());
    let l2 = lock.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = thread::spawn(move || {
        tx.send(ident()).unwrap();
        l2.acquire(&WaitCtx::timeout(Some(BOUND)))
    });
    let w = rx.recv().unwrap();
    wait_until(|| parked_on(w, &*lock));
    let entry = waits::thread_waits().into_iter().find(|e| e.ident == w).unwrap();
    assert!(entry.deadline_ns.is_some());
    let mut holders = Vec::new();
    lock.holders(&mut holders);
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].ident, ident());
    assert!(holders[0].since_ns > 0);
    let mut ws = Vec::new();
    Inspect::waiters(&*lock, &mut ws);
    assert_eq!(ws.iter().map(|x| x.ident).collect::<Vec<_>>(), vec![w]);
    lock.release();
    assert_eq!(waiter.join().unwrap(), Outcome::Notified);
    assert!(!parked_on(w, &*lock));
    assert_eq!(lock.probe.stats.view().contended, 1);
}

#[test]
fn a_lock_released_by_another_thread_becomes_loose() {
    let _t = turn(Mode::Patient);
    let lock = Arc::new(Lock::new());
    assert!(lock.try_acquire());
    assert!(!lock.loose());
    let l2 = lock.clone();
    thread::spawn(move || assert!(l2.release())).join().unwrap();
    assert!(lock.loose());
}
