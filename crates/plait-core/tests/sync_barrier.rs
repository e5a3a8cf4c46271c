//! `Barrier` with real threads (driven through `detach::Inline`): indices,
//! phases, the action, reset, abort, a failing action and a timeout that
//! breaks it. Every wait has an upper bound; nothing asserts timings.
#![cfg(not(loom))]

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use plait_core::detach::Inline;
use plait_core::park::WaitCtx;
use plait_core::sync::{Barrier, BarrierError, Phase};


fn scaled(n: usize) -> usize {
    if cfg!(miri) {
        (n / 10).max(2)
    } else {
        n
    }
}


type R = Result<usize, BarrierError<&'static str>>;

/// `wait` with no action and the bound as its timeout.
fn wait(b: &Barrier) -> R {
    b.wait(&Inline, &WaitCtx::forever(), Some(BOUND), || Ok(()))
}

fn spawn_waiters(b: &Arc<Barrier>, n: usize) -> Vec<thread::JoinHandle<R>> {
    (0..n)
        .map(|_| {
            let b = Arc::clone(b);
            thread::spawn(move || wait(&b))
        })
        .collect()
}

#[test]
fn single_party_passes_at_once() {
    let b = Barrier::new(1);
    assert_eq!(b.parties(), 1);
    for _ in 0..3 {
        assert_eq!(wait(&b).unwrap(), 0);
    }
    assert_eq!(b.phase(), Phase::Filling);
}

#[test]
fn every_phase_hands_out_distinct_indices_and_runs_the_action_once() {
    let parties = 4;
    let phases = scaled(50);
    let b = Arc::new(Barrier::new(parties));
    let actions = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..parties)
        .map(|_| {
            let (b, actions) = (Arc::clone(&b), Arc::clone(&actions));
            thread::spawn(move || {
                let mut indices = Vec::new();
                for _ in 0..phases {
                    let r: R = b.wait(&Inline, &WaitCtx::forever(), Some(BOUND), || {
                        actions.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    });
                    indices.push(r.expect("barrier broke"));
                }
                indices
            })
        })
        .collect();
    let per_thread: Vec<Vec<usize>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for phase in 0..phases {
        let mut idx: Vec<usize> = per_thread.iter().map(|v| v[phase]).collect();
        idx.sort();
        assert_eq!(idx, (0..parties).collect::<Vec<_>>(), "phase {phase}");
    }
    // Only the last arrival (index parties-1) runs the action.
    assert_eq!(actions.load(Ordering::SeqCst), phases);
    assert!(!b.broken());
    assert_eq!(b.n_waiting(), 0);
}

#[test]
fn n_waiting_counts_arrivals() {
    let b = Arc::new(Barrier::new(3));
    let hs = spawn_waiters(&b, 2);
    wait_until(|| b.n_waiting() == 2);
    assert_eq!(wait(&b).unwrap(), 2);
    let mut idx: Vec<usize> = hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
    idx.sort();
    assert_eq!(idx, vec![0, 1]);
}

#[test]
fn abort_breaks_waiters_and_later_arrivals() {
    let b = Arc::new(Barrier::new(3));
    let hs = spawn_waiters(&b, 2);
    wait_until(|| b.n_waiting() == 2);
    b.abort(&Inline);
    for h in hs {
        assert!(matches!(h.join().unwrap(), Err(BarrierError::Broken)));
    }
    assert!(b.broken());
    assert!(matches!(wait(&b), Err(BarrierError::Broken)));
    // reset() repairs it.
    b.reset(&Inline);
    assert!(!b.broken());
    let hs = spawn_waiters(&b, 2);
    assert!(wait(&b).is_ok());
    for h in hs {
        assert!(h.join().unwrap().is_ok());
    }
}

#[test]
fn reset_while_waiting_breaks_the_waiters_then_refills() {
    let b = Arc::new(Barrier::new(3));
    let hs = spawn_waiters(&b, 2);
    wait_until(|| b.n_waiting() == 2);
    b.reset(&Inline);
    for h in hs {
        assert!(matches!(h.join().unwrap(), Err(BarrierError::Broken)));
    }
    assert_eq!(b.phase(), Phase::Filling, "the last one out ends the reset");
    assert!(!b.broken());
    let hs = spawn_waiters(&b, 2);
    assert!(wait(&b).is_ok());
    for h in hs {
        assert!(h.join().unwrap().is_ok());
    }
}

#[test]
fn failing_action_breaks_the_barrier() {
    let b = Arc::new(Barrier::new(3));
    let hs = spawn_waiters(&b, 2);
    wait_until(|| b.n_waiting() == 2);
    let r: R = b.wait(&Inline, &WaitCtx::forever(), Some(BOUND), || Err("boom"));
    assert!(matches!(r, Err(BarrierError::Action("boom"))));
    for h in hs {
        assert!(matches!(h.join().unwrap(), Err(BarrierError::Broken)));
    }
    assert!(b.broken());
    assert_eq!(b.phase(), Phase::Broken);
}

#[test]
fn timeout_breaks_the_barrier() {
    let b = Arc::new(Barrier::new(3));
    // One other party waits without a timeout of its own (bounded anyway).
    let other = spawn_waiters(&b, 1);
    wait_until(|| b.n_waiting() == 1);
    let r: R = b.wait(&Inline, &WaitCtx::forever(), Some(Duration::from_millis(20)), || Ok(()));
    assert!(matches!(r, Err(BarrierError::Broken)));
    for h in other {
        assert!(matches!(h.join().unwrap(), Err(BarrierError::Broken)));
    }
    assert!(b.broken());
    assert!(matches!(wait(&b), Err(BarrierError::Broken)));
}

#[test]
fn interrupt_ends_the_wait_without_breaking() {
    let b = Arc::new(Barrier::new(2));
    let stop = Arc::new(AtomicBool::new(false));
    let (b2, s2) = (Arc::clone(&b), Arc::clone(&stop));
    let t = thread::spawn(move || {
        let check = move || s2.load(Ordering::SeqCst);
        let ctx = WaitCtx::forever().with_interrupt(&check, Duration::from_millis(1));
        let r: R = b2.wait(&Inline, &ctx, Some(BOUND), || Ok(()));
        r
    });
    wait_until(|| b.n_waiting() == 1);
    stop.store(true, Ordering::SeqCst);
    assert!(matches!(t.join().unwrap(), Err(BarrierError::Interrupted)));
    // Like CPython (KeyboardInterrupt in wait): the party leaves, the
    // barrier is not broken.
    assert!(!b.broken());
    assert_eq!(b.n_waiting(), 0);
    assert!(b.waiters().is_empty());
}

#[test]
fn a_waiter_does_not_time_out_while_the_action_runs() {
    // CPython: the waiter is blocked on the condition's lock while the last
    // thread runs the action, and then finds the barrier draining; so it
    // returns its index and the barrier is not broken.
    let b = Arc::new(Barrier::new(2));
    let b2 = Arc::clone(&b);
    let waiter = thread::spawn(move || {
        b2.wait(&Inline, &WaitCtx::forever(), Some(Duration::from_millis(50)), || Ok::<(), ()>(()))
    });
    wait_until(|| b.n_waiting() == 1);
    let last = b.wait(&Inline, &WaitCtx::forever(), None, || {
        thread::sleep(Duration::from_millis(300));
        Ok::<(), ()>(())
    });
    assert!(matches!(last, Ok(1)));
    assert!(matches!(waiter.join().unwrap(), Ok(0)));
    assert!(!b.broken());
}
