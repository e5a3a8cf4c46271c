//! The reactor's poller: epoll readiness with asyncio's masks (`Poller`),
//! and the bare token-based `Epoll` the echo tools use.
#![cfg(all(not(loom), not(miri)))]

use std::os::fd::RawFd;
use std::time::Duration;

use plait_core::reactor::{Epoll, Events, Poller, READ, WRITE};

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

fn write_byte(fd: RawFd) {
    // SAFETY: writing one byte from a live buffer to our socket.
    assert_eq!(unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) }, 1);
}

#[test]
fn epoll_reports_tokens_and_bits() {
    let (a, b) = socketpair();
    let ep = Epoll::new().unwrap();
    let mut events = Events::new();
    ep.add(&a, libc::EPOLLIN as u32, 7).unwrap();
    ep.wait(&mut events, 8, Some(Duration::ZERO)).unwrap();
    assert!(events.is_empty(), "nothing to read yet");
    write_byte(b);
    ep.wait(&mut events, 8, Some(Duration::from_secs(10))).unwrap();
    let got: Vec<_> = events.iter().collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].token, 7);
    assert!(got[0].readable() && !got[0].writable());
    ep.modify(&a, (libc::EPOLLIN | libc::EPOLLOUT) as u32, 9).unwrap();
    ep.wait(&mut events, 8, Some(Duration::ZERO)).unwrap();
    let got: Vec<_> = events.iter().collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].token, 9);
    assert!(got[0].readable() && got[0].writable());
    ep.delete(&a).unwrap();
    ep.wait(&mut events, 8, Some(Duration::ZERO)).unwrap();
    assert!(events.is_empty());
    close(a);
    close(b);
}

#[test]
fn epoll_wait_reports_at_most_max() {
    let pairs: Vec<_> = (0..3).map(|_| socketpair()).collect();
    let ep = Epoll::new().unwrap();
    let mut events = Events::with_capacity(1);
    for (i, &(a, b)) in pairs.iter().enumerate() {
        ep.add(&a, libc::EPOLLIN as u32, i as u64).unwrap();
        write_byte(b);
    }
    ep.wait(&mut events, 2, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(events.len(), 2);
    ep.wait(&mut events, 8, Some(Duration::from_secs(10))).unwrap();
    let mut tokens: Vec<u64> = events.iter().map(|e| e.token).collect();
    tokens.sort();
    assert_eq!(tokens, vec![0, 1, 2], "level-triggered: all still ready");
    for (a, b) in pairs {
        close(a);
        close(b);
    }
}

#[test]
fn events_wait_on_the_pollers_descriptor() {
    // What the loop's Selector does: wait on the fd, map with the poller.
    let (a, b) = socketpair();
    let mut p = Poller::new().unwrap();
    p.register(a, READ | WRITE).unwrap();
    let mut events = Events::new();
    events.wait(p.fd(), Poller::batch(p.len()), 10_000).unwrap();
    let got: Vec<_> = events.iter().filter_map(|ev| p.ready(ev)).collect();
    assert_eq!(got, vec![(a, WRITE)]);
    p.modify(a, READ).unwrap();
    events.wait(p.fd(), Poller::batch(p.len()), 0).unwrap();
    assert!(events.iter().filter_map(|ev| p.ready(ev)).next().is_none(), "writable is not asked for");
    write_byte(b);
    events.wait(p.fd(), Poller::batch(p.len()), 10_000).unwrap();
    let got: Vec<_> = events.iter().filter_map(|ev| p.ready(ev)).collect();
    assert_eq!(got, vec![(a, READ)]);
    close(a);
    close(b);
}

#[test]
fn readiness_masks_are_epoll_selectors() {
    use plait_core::reactor::readiness;
    let (inn, out, err, hup) = (libc::EPOLLIN as u32, libc::EPOLLOUT as u32, libc::EPOLLERR as u32, libc::EPOLLHUP as u32);
    assert_eq!(readiness(inn, READ | WRITE), READ);
    assert_eq!(readiness(out, READ | WRITE), WRITE);
    assert_eq!(readiness(err, READ | WRITE), READ | WRITE);
    assert_eq!(readiness(hup, READ), READ);
    assert_eq!(readiness(out, READ), 0);
}
