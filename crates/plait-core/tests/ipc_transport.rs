//! The IPC transport without Python: framing, packets (inline and memfd),
//! descriptor passing, the feeder's overflow FIFO, the shared counter, the
//! shared-memory ring.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use plait_core::ipc::counter::SharedCounter;
use plait_core::ipc::feeder::Feeder;
use plait_core::ipc::packet::{self, Packet, INLINE_MAX};
use plait_core::ipc::ring::{Ring, KIND_DATA, MAX_RECORD, RING_BYTES};
use plait_core::ipc::{fd, frame};
use plait_core::park::{Outcome, WaitCtx};

#[test]
fn ipc_header_round_trip() {
    for len in [0usize, 1, 255, 65536, u32::MAX as usize] {
        assert_eq!(frame::decode_header(frame::encode_header(len).unwrap()), len);
    }
    assert!(frame::encode_header(u32::MAX as usize + 1).is_none());
}

#[test]
fn ipc_packets_inline_and_memfd() {
    let (a, b) = fd::socketpair(libc::SOCK_SEQPACKET).unwrap();
    let small = b"hello".to_vec();
    let big: Vec<u8> = (0..INLINE_MAX * 5 + 3).map(|i| (i % 251) as u8).collect();
    Packet::new(&small).unwrap().try_send(a.as_raw_fd()).unwrap();
    Packet::new(&big).unwrap().try_send(a.as_raw_fd()).unwrap();
    assert_eq!(packet::recv_packet(b.as_raw_fd(), |p| p.to_vec()).unwrap(), small);
    assert_eq!(packet::recv_packet(b.as_raw_fd(), |p| p.to_vec()).unwrap(), big);
    let e = packet::recv_packet(b.as_raw_fd(), |p| p.len()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
}

#[test]
fn ipc_feeder_keeps_order_past_a_full_socket() {
    let (a, b) = fd::socketpair(libc::SOCK_SEQPACKET).unwrap();
    let feeder = Feeder::new(Arc::new(a));
    let n = 20_000u32;
    let mut queued = false;
    for i in 0..n {
        queued |= feeder.send(Packet::new(&i.to_le_bytes()).unwrap()).unwrap();
    }
    assert!(queued, "the socket should have filled up");
    let mut next = 0u32;
    while next < n {
        match packet::recv_packet(b.as_raw_fd(), |p| u32::from_le_bytes(p.try_into().unwrap())) {
            Ok(v) => {
                assert_eq!(v, next);
                next += 1;
            }
            Err(_) => {
                fd::wait_fd(b.as_raw_fd(), libc::POLLIN, &WaitCtx::timeout(Some(Duration::from_secs(5))));
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
    let (_a, b) = fd::socketpair(libc::SOCK_STREAM).unwrap();
    let ctx = WaitCtx::timeout(Some(Duration::from_millis(10)));
    assert_eq!(fd::wait_fd(b.as_raw_fd(), libc::POLLIN, &ctx), Outcome::TimedOut);
}

#[test]
fn ipc_types_are_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<SharedCounter>();
    check::<Feeder>();
    check::<Packet>();
    check::<Ring>();
}

#[test]
fn ipc_ring_fifo_with_wraparound_and_full() {
    let ring = Ring::new().unwrap();
    let mut next_in = 0u32;
    let mut next_out = 0u32;
    // Sizes that do not divide the ring, so records wrap with SKIPs.
    let item = |i: u32| vec![(i % 251) as u8; (i as usize * 977) % MAX_RECORD + 1];
    for _round in 0..5 {
        loop {
            let mut g = ring.lock();
            if !g.push(KIND_DATA, &item(next_in)) {
                break;
            }
            next_in += 1;
        }
        assert!(next_in as usize * 8 >= RING_BYTES / MAX_RECORD);
        for _ in 0..(next_in - next_out) / 2 {
            let mut g = ring.try_lock().unwrap();
            let got = g.pop(|k, p| (k, p.to_vec())).unwrap();
            assert_eq!(got, (KIND_DATA, item(next_out)));
            next_out += 1;
        }
    }
    while let Some(p) = ring.lock().pop(|_, p| p.to_vec()) {
        assert_eq!(p, item(next_out));
        next_out += 1;
    }
    assert_eq!(next_in, next_out);
    assert!(ring.is_empty());
}

#[test]
fn ipc_ring_wakes_a_waiting_reader() {
    let ring = Arc::new(Ring::new().unwrap());
    let r2 = Arc::clone(&ring);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        r2.lock().push(KIND_DATA, b"x");
    });
    assert_eq!(ring.wait_data(&WaitCtx::timeout(Some(Duration::from_secs(5)))), Outcome::Notified);
    assert!(!ring.is_empty());
    t.join().unwrap();
    let empty = Ring::new().unwrap();
    assert_eq!(empty.wait_data(&WaitCtx::timeout(Some(Duration::from_millis(10)))), Outcome::TimedOut);
}

#[test]
fn ipc_descriptors_ride_along_in_order() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let (a, b) = fd::socketpair(libc::SOCK_STREAM).unwrap();
    let mut files = Vec::new();
    for i in 0..3u8 {
        let f = std::fs::File::from(fd::memfd(c"plait-test", 0).unwrap());
        f.write_all_at(&[i; 4], 0).unwrap();
        fd::send_with_fd(a.as_raw_fd(), &[i], f.as_raw_fd(), libc::MSG_NOSIGNAL).unwrap();
        files.push(f);
    }
    drop(files); // the receiver's copies keep the files alive
    let mut got = Vec::new();
    let mut data = Vec::new();
    while data.len() < 3 {
        let mut buf = [0u8; 16];
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { fd::recv_with_fds(b.as_raw_fd(), buf.as_mut_ptr(), buf.len(), 0, |f| got.push(f)) }.unwrap();
        assert!(n > 0);
        data.extend_from_slice(&buf[..n]);
    }
    assert_eq!(data, [0, 1, 2]);
    assert_eq!(got.len(), 3);
    for (i, f) in got.into_iter().enumerate() {
        let mut four = [9u8; 4];
        std::fs::File::from(f).read_exact_at(&mut four, 0).unwrap();
        assert_eq!(four, [i as u8; 4]);
    }
    // Nothing more waiting: a would-block error, not end of file.
    let mut buf = [0u8; 4];
    // SAFETY: as above.
    let e = unsafe { fd::recv_with_fds(b.as_raw_fd(), buf.as_mut_ptr(), 4, libc::MSG_DONTWAIT, |_| {}) }.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
}
