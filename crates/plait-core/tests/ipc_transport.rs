//! The IPC transport without Python: framing, packets (inline and memfd),
//! the feeder's overflow FIFO, the shared counter.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use plait_core::ipc::{self, Feeder, Packet, SharedCounter, INLINE_MAX};
use plait_core::park::{Outcome, WaitCtx};

#[test]
fn ipc_header_round_trip() {
    for len in [0usize, 1, 255, 65536, u32::MAX as usize] {
        assert_eq!(ipc::decode_header(ipc::encode_header(len).unwrap()), len);
    }
    assert!(ipc::encode_header(u32::MAX as usize + 1).is_none());
}

#[test]
fn ipc_packets_inline_and_memfd() {
    let (a, b) = ipc::socketpair(libc::SOCK_SEQPACKET).unwrap();
    let small = b"hello".to_vec();
    let big: Vec<u8> = (0..INLINE_MAX * 5 + 3).map(|i| (i % 251) as u8).collect();
    Packet::new(&small).unwrap().try_send(a.as_raw_fd()).unwrap();
    Packet::new(&big).unwrap().try_send(a.as_raw_fd()).unwrap();
    assert_eq!(ipc::recv_packet(b.as_raw_fd(), |p| p.to_vec()).unwrap(), small);
    assert_eq!(ipc::recv_packet(b.as_raw_fd(), |p| p.to_vec()).unwrap(), big);
    let e = ipc::recv_packet(b.as_raw_fd(), |p| p.len()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
}

#[test]
fn ipc_feeder_keeps_order_past_a_full_socket() {
    let (a, b) = ipc::socketpair(libc::SOCK_SEQPACKET).unwrap();
    let feeder = Feeder::new(Arc::new(a));
    let n = 20_000u32;
    let mut queued = false;
    for i in 0..n {
        queued |= feeder.send(Packet::new(&i.to_le_bytes()).unwrap()).unwrap();
    }
    assert!(queued, "the socket should have filled up");
    let mut next = 0u32;
    while next < n {
        match ipc::recv_packet(b.as_raw_fd(), |p| u32::from_le_bytes(p.try_into().unwrap())) {
            Ok(v) => {
                assert_eq!(v, next);
                next += 1;
            }
            Err(_) => {
                ipc::wait_fd(b.as_raw_fd(), libc::POLLIN, &WaitCtx::timeout(Some(Duration::from_secs(5))));
            }
        }
    }
    feeder.close();
    assert_eq!(feeder.flush(&WaitCtx::timeout(Some(Duration::from_secs(5)))), Outcome::Notified);
}

#[test]
fn ipc_shared_counter_bounds_and_wakes() {
    let c = Arc::new(SharedCounter::new().unwrap());
    assert!(c.try_reserve(2));
    assert!(c.try_reserve(2));
    assert!(!c.try_reserve(2));
    let ctx = WaitCtx::timeout(Some(Duration::from_millis(20)));
    assert_eq!(c.reserve(2, &ctx), Outcome::TimedOut);
    let c2 = Arc::clone(&c);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        c2.decr(true);
    });
    assert_eq!(c.reserve(2, &WaitCtx::timeout(Some(Duration::from_secs(5)))), Outcome::Notified);
    t.join().unwrap();
    assert_eq!(c.get(), 2);
}

#[test]
fn ipc_wait_fd_times_out() {
    let (_a, b) = ipc::socketpair(libc::SOCK_STREAM).unwrap();
    let ctx = WaitCtx::timeout(Some(Duration::from_millis(10)));
    assert_eq!(ipc::wait_fd(b.as_raw_fd(), libc::POLLIN, &ctx), Outcome::TimedOut);
}

#[test]
fn ipc_types_are_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<SharedCounter>();
    check::<Feeder>();
    check::<Packet>();
}
