//! The event loop's reactor: epoll readiness with asyncio's masks, and the
//! timer heap's order (time, then insertion).
#![cfg(all(not(loom), not(miri)))]

use plait_core::reactor::{monotonic, Poller, TimerHeap, READ, WRITE};

fn socketpair() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: a plain socketpair into a valid array of two ints.
    assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

fn close(fd: i32) {
    // SAFETY: closing a descriptor this test owns.
    unsafe { libc::close(fd) };
}

#[test]
fn readiness_follows_interest() {
    let (a, b) = socketpair();
    let mut p = Poller::new().unwrap();
    let mut out = Vec::new();
    p.register(a, READ).unwrap();
    p.wait(0, &mut out).unwrap();
    assert!(out.is_empty(), "nothing to read yet");
    // SAFETY: writing one byte from a live buffer to our socket.
    assert_eq!(unsafe { libc::write(b, b"x".as_ptr().cast(), 1) }, 1);
    p.wait(1000, &mut out).unwrap();
    assert_eq!(out, vec![(a, READ)]);
    p.modify(a, READ | WRITE).unwrap();
    p.wait(0, &mut out).unwrap();
    assert_eq!(out, vec![(a, READ | WRITE)]);
    p.modify(a, WRITE).unwrap();
    p.wait(0, &mut out).unwrap();
    assert_eq!(out, vec![(a, WRITE)]);
    assert_eq!(p.interest(a), Some(WRITE));
    p.unregister(a);
    p.wait(0, &mut out).unwrap();
    assert!(out.is_empty());
    assert!(p.is_empty());
    close(a);
    close(b);
}

#[test]
fn hang_up_is_readable_and_a_closed_fd_is_forgotten() {
    let (a, b) = socketpair();
    let mut p = Poller::new().unwrap();
    let mut out = Vec::new();
    p.register(a, READ).unwrap();
    close(b);
    p.wait(1000, &mut out).unwrap();
    assert_eq!(out, vec![(a, READ)]);
    close(a);
    // epoll dropped it by itself; unregistering is still fine.
    p.unregister(a);
    assert!(p.is_empty());
}

#[test]
fn timers_pop_by_time_then_insertion() {
    let mut h = TimerHeap::new();
    h.push(2.0, "c");
    h.push(1.0, "a");
    h.push(1.0, "b");
    h.push(3.0, "d");
    assert_eq!(h.next_when(), Some(1.0));
    assert_eq!(h.pop_due(0.5), None);
    assert_eq!(h.pop_due(1.0), Some((1.0, "a")));
    assert_eq!(h.pop_due(1.0), Some((1.0, "b")));
    assert_eq!(h.pop_due(1.5), None);
    h.retain(|s| *s != "c");
    assert_eq!(h.pop(), Some((3.0, "d")));
    assert!(h.is_empty());
}

#[test]
fn monotonic_moves_forward() {
    let a = monotonic();
    let b = monotonic();
    assert!(b >= a && a > 0.0);
}

#[test]
fn pace_tells_when_an_interval_has_passed() {
    use plait_core::reactor::Pace;
    use std::time::{Duration, Instant};
    let pace = Pace::new(Duration::from_millis(2));
    let start = Pace::now();
    assert!(!pace.passed(start, start), "no time has passed at the start");
    // Not yet after well under the interval...
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_micros(200) {}
    let early = Pace::now();
    if t0.elapsed() < Duration::from_millis(1) {
        assert!(!pace.passed(start, early), "0.2 ms read as 2 ms passed");
    }
    // ...and passed once the monotonic clock says so (bounded wait).
    while t0.elapsed() < Duration::from_millis(3) {}
    assert!(pace.passed(start, Pace::now()), "3 ms did not read as 2 ms passed");
    // A reading that went backwards counts as passed.
    assert!(pace.passed(start.wrapping_add(1000), start));
}
