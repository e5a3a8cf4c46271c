//! `TimerThread`: one thread fires every timer in deadline order; cancel
//! takes an entry out at once; `keep_alive` entries can be waited for;
//! `close` drains; after `fork()` the child restarts the thread lazily and
//! keeps its pending timers. Every wait is bounded; no timing is asserted
//! except as an upper bound against hangs.
#![cfg(all(not(loom), not(miri)))]

mod common;
use common::*;

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use plait_core::park::{Outcome, WaitCtx};
use plait_core::timer::{ScheduleError, TimerCell, TimerState, TimerThread};



/// A service whose payloads are sent down a channel when they fire.
fn service<T: Send + 'static>() -> (&'static TimerThread<T>, mpsc::Receiver<T>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let svc = TimerThread::new_static("plait-timer-test", move |p| {
        let _ = tx.lock().unwrap().send(p);
    });
    (svc, rx)
}

fn after(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

#[test]
fn fires_in_deadline_order_on_one_thread() {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let svc = TimerThread::new_static("plait-timer-test", move |p: u32| {
        let _ = tx.lock().unwrap().send((p, thread::current().id()));
    });
    let cells: Vec<_> = (0..4).map(|_| Arc::new(TimerCell::new())).collect();
    for (i, ms) in [(3u32, 40u64), (1, 10), (2, 20), (0, 0)] {
        svc.schedule(&cells[i as usize], after(ms), false, i).unwrap();
    }
    let got: Vec<_> = (0..4).map(|_| rx.recv_timeout(BOUND).expect("fired")).collect();
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert!(got.iter().all(|g| g.1 == got[0].1), "one thread fires them all");
    assert_ne!(got[0].1, thread::current().id());
    for c in &cells {
        assert_eq!(c.wait_done(&bounded()), Outcome::Notified);
        assert_eq!(c.state(), TimerState::Done);
    }
    assert_eq!(svc.pending(), 0);
}

#[test]
fn a_second_start_is_refused() {
    let (svc, rx) = service::<u8>();
    let cell = Arc::new(TimerCell::new());
    svc.schedule(&cell, after(0), false, 1).unwrap();
    assert!(matches!(svc.schedule(&cell, after(0), false, 2), Err(ScheduleError::AlreadyStarted(2))));
    assert_eq!(rx.recv_timeout(BOUND), Ok(1));
}

#[test]
fn cancel_takes_the_entry_out_and_returns_its_payload() {
    let (svc, rx) = service::<Arc<()>>();
    let payload = Arc::new(());
    let cell = Arc::new(TimerCell::new());
    svc.schedule(&cell, after(3_600_000), true, Arc::clone(&payload)).unwrap();
    assert_eq!(svc.pending(), 1);
    assert_eq!(svc.keep_alive_pending(), 1);
    assert_eq!(cell.state(), TimerState::Scheduled);
    let back = svc.cancel(&cell).expect("it was queued");
    assert_eq!(svc.pending(), 0);
    assert_eq!(svc.keep_alive_pending(), 0);
    assert!(cell.is_done());
    drop(back);
    assert_eq!(Arc::strong_count(&payload), 1, "the service keeps nothing of a cancelled timer");
    assert!(svc.cancel(&cell).is_none(), "cancelling twice finds nothing");
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "a cancelled timer never fires");
}

#[test]
fn cancel_of_an_unstarted_or_fired_timer_is_none() {
    let (svc, rx) = service::<u8>();
    let cell = Arc::new(TimerCell::new());
    assert!(svc.cancel(&cell).is_none());
    svc.schedule(&cell, after(0), false, 7).unwrap();
    assert_eq!(rx.recv_timeout(BOUND), Ok(7));
    assert_eq!(cell.wait_done(&bounded()), Outcome::Notified);
    assert!(svc.cancel(&cell).is_none());
}

#[test]
fn an_earlier_timer_wakes_the_sleeping_thread() {
    let (svc, rx) = service::<&'static str>();
    let late = Arc::new(TimerCell::new());
    let soon = Arc::new(TimerCell::new());
    svc.schedule(&late, after(3_600_000), false, "late").unwrap();
    thread::sleep(Duration::from_millis(20)); // the thread now sleeps for an hour
    svc.schedule(&soon, after(0), false, "soon").unwrap();
    assert_eq!(rx.recv_timeout(BOUND), Ok("soon"));
    assert!(svc.cancel(&late).is_some());
}

#[test]
fn many_timers_then_cancel_all() {
    let (svc, rx) = service::<usize>();
    let n = 100_000;
    let cells: Vec<_> = (0..n).map(|_| Arc::new(TimerCell::new())).collect();
    for (i, c) in cells.iter().enumerate() {
        svc.schedule(c, after(3_600_000 + i as u64), i % 2 == 0, i).unwrap();
    }
    assert_eq!(svc.pending(), n);
    assert_eq!(svc.keep_alive_pending(), n / 2);
    let mut back = 0;
    for c in &cells {
        back += usize::from(svc.cancel(c).is_some());
    }
    assert_eq!(back, n);
    assert_eq!(svc.pending(), 0);
    assert_eq!(svc.keep_alive_pending(), 0);
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_panicking_callback_does_not_stop_later_timers() {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let svc = TimerThread::new_static("plait-timer-test", move |p: u8| {
        if p == 0 {
            panic!("callback failed");
        }
        let _ = tx.lock().unwrap().send(p);
    });
    let a = Arc::new(TimerCell::new());
    let b = Arc::new(TimerCell::new());
    svc.schedule(&a, after(0), false, 0).unwrap();
    svc.schedule(&b, after(5), false, 1).unwrap();
    assert_eq!(rx.recv_timeout(BOUND), Ok(1));
    assert_eq!(a.wait_done(&bounded()), Outcome::Notified);
}

#[test]
fn wait_keep_alive_waits_for_keep_alive_timers_only() {
    let (svc, rx) = service::<u8>();
    let daemon = Arc::new(TimerCell::new());
    let keep = Arc::new(TimerCell::new());
    svc.schedule(&daemon, after(3_600_000), false, 0).unwrap();
    svc.schedule(&keep, after(20), true, 1).unwrap();
    assert_eq!(svc.wait_keep_alive(&bounded()), Outcome::Notified);
    assert_eq!(rx.recv_timeout(BOUND), Ok(1));
    assert!(keep.is_done());
    assert_eq!(svc.pending(), 1, "the daemon timer is still queued");
    let short = WaitCtx::timeout(Some(Duration::from_millis(10)));
    assert_eq!(svc.wait_idle(&short), Outcome::Notified);
    let drained = svc.close();
    assert_eq!(drained, [0]);
    assert!(daemon.is_done());
    assert!(svc.is_closed());
    let late = Arc::new(TimerCell::new());
    assert!(matches!(svc.schedule(&late, after(0), true, 9), Err(ScheduleError::Closed(9))));
}

#[test]
fn wait_keep_alive_honours_its_deadline_and_interrupt() {
    let (svc, _rx) = service::<u8>();
    let keep = Arc::new(TimerCell::new());
    svc.schedule(&keep, after(3_600_000), true, 1).unwrap();
    let short = WaitCtx::timeout(Some(Duration::from_millis(20)));
    assert_eq!(svc.wait_keep_alive(&short), Outcome::TimedOut);
    let stop = || true;
    let ctx = WaitCtx::timeout(Some(BOUND)).with_interrupt(&stop, Duration::from_millis(5));
    assert_eq!(svc.wait_keep_alive(&ctx), Outcome::Interrupted);
    assert!(svc.cancel(&keep).is_some());
}

#[test]
fn is_timer_thread_only_inside_callbacks() {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let slot: &'static std::sync::OnceLock<&'static TimerThread<u8>> = Box::leak(Box::default());
    let svc = TimerThread::new_static("plait-timer-test", move |_p: u8| {
        let _ = tx.lock().unwrap().send(slot.get().unwrap().is_timer_thread());
    });
    slot.set(svc).ok();
    assert!(!svc.is_timer_thread());
    svc.schedule(&Arc::new(TimerCell::new()), after(0), false, 0).unwrap();
    assert_eq!(rx.recv_timeout(BOUND), Ok(true));
}

/// Fork; run `child` in the child (its return value is the exit code) and
/// return the child's exit code in the parent.
fn in_child(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only uses plait and std and ends with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
        // SAFETY: _exit never returns and runs no destructors or atexit hooks.
        unsafe { libc::_exit(code) };
    }
    let end = Instant::now() + BOUND;
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid failed");
        if r == pid {
            assert!(libc::WIFEXITED(status), "child died abnormally: {status}");
            return libc::WEXITSTATUS(status);
        }
        if Instant::now() > end {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("forked child hung");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn after_fork_the_child_restarts_the_thread_and_keeps_pending_timers() {
    let (svc, rx) = service::<u8>();
    // The thread is running in the parent, sleeping until a far deadline.
    let pending = Arc::new(TimerCell::new());
    svc.schedule(&pending, after(150), true, 1).unwrap();
    let fired_before = Arc::new(TimerCell::new());
    svc.schedule(&fired_before, after(0), false, 0).unwrap();
    assert_eq!(rx.recv_timeout(BOUND), Ok(0));
    // Fork only once the callback has left the channel: std's mpsc (and the
    // test's sender mutex) are not fork-safe, plait is the thing under test.
    assert_eq!(fired_before.wait_done(&bounded()), Outcome::Notified);
    let code = in_child(|| {
        if svc.pending() != 1 {
            return 2;
        }
        // Resuming restarts the (vanished) thread; the inherited timer fires.
        if svc.resume().is_err() {
            return 3;
        }
        if rx.recv_timeout(BOUND) != Ok(1) {
            return 4;
        }
        // And a new timer started in the child fires too.
        let fresh = Arc::new(TimerCell::new());
        if svc.schedule(&fresh, after(0), true, 5).is_err() || rx.recv_timeout(BOUND) != Ok(5) {
            return 5;
        }
        if svc.wait_keep_alive(&bounded()) != Outcome::Notified {
            return 6;
        }
        0
    });
    assert_eq!(code, 0);
    // The parent's own timer still fires in the parent.
    assert_eq!(rx.recv_timeout(BOUND), Ok(1));
}

#[test]
fn after_fork_a_new_schedule_restarts_the_thread_lazily() {
    let (svc, rx) = service::<u8>();
    let warm = Arc::new(TimerCell::new());
    svc.schedule(&warm, after(0), false, 0).unwrap();
    assert_eq!(rx.recv_timeout(BOUND), Ok(0));
    // As above: fork once the callback is out of the (fork-unsafe) channel.
    assert_eq!(warm.wait_done(&bounded()), Outcome::Notified);
    let code = in_child(|| {
        let cell = Arc::new(TimerCell::new());
        if svc.schedule(&cell, after(0), false, 3).is_err() {
            return 2;
        }
        if rx.recv_timeout(BOUND) != Ok(3) {
            return 3;
        }
        i32::from(cell.wait_done(&bounded()) != Outcome::Notified) * 4
    });
    assert_eq!(code, 0);
}

#[test]
fn a_callback_running_at_fork_is_abandoned_in_the_child() {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let started_tx = std::sync::Mutex::new(started_tx);
    let release_rx = std::sync::Mutex::new(release_rx);
    let svc = TimerThread::new_static("plait-timer-test", move |_p: u8| {
        let _ = started_tx.lock().unwrap().send(());
        let _ = release_rx.lock().unwrap().recv_timeout(BOUND);
    });
    let cell = Arc::new(TimerCell::new());
    svc.schedule(&cell, after(0), true, 0).unwrap();
    started_rx.recv_timeout(BOUND).unwrap();
    assert_eq!(cell.state(), TimerState::Running);
    let code = in_child(|| {
        // The running callback's thread is gone: the timer is done, and
        // nothing keeps the child alive.
        let ok = cell.wait_done(&bounded()) == Outcome::Notified
            && svc.wait_keep_alive(&bounded()) == Outcome::Notified;
        i32::from(!ok)
    });
    assert_eq!(code, 0);
    release_tx.send(()).unwrap();
    assert_eq!(cell.wait_done(&bounded()), Outcome::Notified);
}

#[test]
fn the_thread_ends_when_idle_and_comes_back_for_the_next_timer() {
    let (svc, rx) = service::<u8>();
    let cell = Arc::new(TimerCell::new());
    svc.schedule(&cell, after(0), false, 1).unwrap();
    assert_eq!(rx.recv_timeout(BOUND).expect("fired"), 1);
    assert!(svc.has_thread());
    let end = Instant::now() + BOUND;
    while svc.has_thread() && Instant::now() < end {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!svc.has_thread(), "an idle timer thread ends");
    let again = Arc::new(TimerCell::new());
    svc.schedule(&again, after(0), false, 2).unwrap();
    assert_eq!(rx.recv_timeout(BOUND).expect("fired after the restart"), 2);
}

#[test]
fn cancelling_the_last_timer_lets_the_thread_end() {
    let (svc, _rx) = service::<u8>();
    let cells: Vec<_> = (0..3).map(|_| Arc::new(TimerCell::new())).collect();
    for (i, c) in cells.iter().enumerate() {
        svc.schedule(c, Instant::now() + Duration::from_secs(3600), false, i as u8).unwrap();
    }
    for c in &cells {
        assert!(svc.cancel(c).is_some());
    }
    let end = Instant::now() + BOUND;
    while svc.has_thread() && Instant::now() < end {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!svc.has_thread(), "the thread ends though the cancelled deadlines are an hour away");
}
