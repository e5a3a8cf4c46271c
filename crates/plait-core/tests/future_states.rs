//! `plait_core::future::Future`: the state machine of
//! `concurrent.futures.Future`, its callbacks and its waiters. Every wait
//! has an upper bound; nothing asserts timings.
#![cfg(not(loom))]

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use plait_core::future::{Future, InvalidState, Resolution, State};
use plait_core::park::{Outcome, WaitCtx};

#[test]
fn lifecycle_and_callbacks() {
    let f: Future<i32, &str> = Future::new();
    assert_eq!(f.add_done_callback("a"), None);
    assert_eq!(f.set_running_or_notify_cancel(), Ok(true));
    assert!(!f.cancel().0);
    let cbs = f.resolve(Resolution::Value(7)).unwrap();
    assert_eq!(cbs, vec!["a"]);
    assert_eq!(f.add_done_callback("b"), Some("b"));
    assert!(f.resolve(Resolution::Value(8)).is_err());
    f.with_resolution(|r| assert!(matches!(r, Some(Resolution::Value(7)))));
}

#[test]
fn cancel_then_notify() {
    let f: Future<i32, ()> = Future::new();
    assert!(f.cancel().0);
    assert_eq!(f.set_running_or_notify_cancel(), Ok(false));
    assert_eq!(f.state(), State::CancelledAndNotified);
    assert_eq!(f.set_running_or_notify_cancel(), Err(InvalidState(State::CancelledAndNotified)));
}

#[test]
fn cancel_hands_back_callbacks_once() {
    let f: Future<i32, u8> = Future::new();
    assert_eq!(f.add_done_callback(1), None);
    assert_eq!(f.add_done_callback(2), None);
    assert_eq!(f.cancel(), (true, vec![1, 2]));
    // Cancelling again reports cancelled, with nothing left to run.
    assert_eq!(f.cancel(), (true, vec![]));
    assert!(f.state().is_cancelled() && f.state().is_done());
}

#[test]
fn resolve_after_cancel_gives_the_payload_back() {
    let f: Future<i32, ()> = Future::new();
    assert!(f.cancel().0);
    match f.resolve(Resolution::Error(5)) {
        Err((Resolution::Error(5), InvalidState(State::Cancelled))) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn force_cancel_stops_a_running_future() {
    let f: Future<i32, u8> = Future::new();
    assert_eq!(f.add_done_callback(9), None);
    assert_eq!(f.set_running_or_notify_cancel(), Ok(true));
    assert!(!f.cancel().0, "a plain cancel cannot stop running work");
    assert_eq!(f.force_cancel(), (true, vec![9]));
    assert_eq!(f.state(), State::CancelledAndNotified);
    assert_eq!(f.force_cancel(), (false, vec![]));
}

#[test]
fn finish_unresolved_then_store_once() {
    let f: Future<i32, u8> = Future::new();
    assert_eq!(f.add_done_callback(3), None);
    assert_eq!(f.finish_unresolved(), Ok(vec![3]));
    assert_eq!(f.state(), State::Finished);
    assert!(f.with_resolution(|r| r.is_none()));
    // The first decoded outcome is kept; a racing second one comes back.
    assert!(f.set_resolution_if_absent(Resolution::Value(1)).is_none());
    assert!(matches!(f.set_resolution_if_absent(Resolution::Value(2)), Some(Resolution::Value(2))));
    f.with_resolution(|r| assert!(matches!(r, Some(Resolution::Value(1)))));
    assert_eq!(f.finish_unresolved(), Err(InvalidState(State::Finished)));
}

#[test]
fn state_names_match_concurrent_futures() {
    let names: Vec<&str> = [State::Pending, State::Running, State::Cancelled, State::CancelledAndNotified, State::Finished]
        .iter()
        .map(|s| s.name())
        .collect();
    assert_eq!(names, ["PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED"]);
}

#[test]
fn wait_wakes_on_resolve() {
    let f: Arc<Future<i32, ()>> = Arc::new(Future::new());
    let f2 = Arc::clone(&f);
    let t = thread::spawn(move || f2.wait(&WaitCtx::timeout(Some(Duration::from_secs(20)))));
    thread::sleep(Duration::from_millis(20));
    f.resolve(Resolution::Value(1)).unwrap();
    assert_eq!(t.join().unwrap(), Outcome::Notified);
    assert_eq!(f.wait(&WaitCtx::timeout(Some(Duration::ZERO))), Outcome::Notified);
}

#[test]
fn wait_on_a_pending_future_times_out() {
    let f: Future<i32, ()> = Future::new();
    assert_eq!(f.wait(&WaitCtx::timeout(Some(Duration::ZERO))), Outcome::TimedOut);
    assert!(f.waiters().is_empty());
}
