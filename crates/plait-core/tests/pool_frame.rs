//! The pool's wire format: building and parsing frames, partial reads,
//! several frames in one read, descriptors riding along, EOF, and writes
//! that the socket only partly takes.
#![cfg(not(loom))]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use plait_core::pool::frame::{self, Frame, HEADER};

fn parse_all(buf: &[u8]) -> (Vec<(u8, Vec<u8>)>, usize) {
    let mut pos = 0;
    let mut out = Vec::new();
    while let Some(f) = frame::next(buf, &mut pos) {
        out.push((f.kind, f.body.to_vec()));
    }
    (out, pos)
}

#[test]
fn a_frame_round_trips() {
    let buf = frame::build(frame::SETUP, &[b"setup bytes"]);
    assert_eq!(buf.len(), HEADER + 11);
    assert_eq!(&buf[..4], &12u32.to_le_bytes());
    let (frames, pos) = parse_all(&buf);
    assert_eq!(frames, vec![(frame::SETUP, b"setup bytes".to_vec())]);
    assert_eq!(pos, buf.len());
}

#[test]
fn a_task_frame_carries_its_id_then_the_payload() {
    let mut buf = Vec::new();
    frame::push(&mut buf, frame::TASK, &[&42u64.to_le_bytes(), b"pickled call"]);
    let mut pos = 0;
    let f = frame::next(&buf, &mut pos).unwrap();
    assert_eq!(f.kind, frame::TASK);
    assert_eq!(f.task(), Some((42, &b"pickled call"[..])));
    // Too short to hold an id.
    assert_eq!(Frame { kind: frame::RESULT, body: b"1234567" }.task(), None);
    assert_eq!(Frame { kind: frame::RESULT, body: &7u64.to_le_bytes() }.task(), Some((7, &b""[..])));
}

#[test]
fn an_empty_payload_is_a_whole_frame() {
    let buf = frame::build(frame::STARTED, &[]);
    assert_eq!(buf, vec![1, 0, 0, 0, frame::STARTED]);
    assert_eq!(parse_all(&buf).0, vec![(frame::STARTED, Vec::new())]);
}

#[test]
fn several_frames_in_one_buffer_parse_in_order() {
    let mut buf = Vec::new();
    frame::push(&mut buf, frame::STARTED, &[]);
    for id in 1..=5u64 {
        frame::push(&mut buf, frame::RESULT, &[&id.to_le_bytes(), &vec![id as u8; id as usize * 100]]);
    }
    frame::push(&mut buf, frame::ERROR, &[&6u64.to_le_bytes(), b"boom"]);
    let (frames, pos) = parse_all(&buf);
    assert_eq!(pos, buf.len());
    assert_eq!(frames.len(), 7);
    assert_eq!(frames[0].0, frame::STARTED);
    for (i, (kind, body)) in frames[1..6].iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(*kind, frame::RESULT);
        assert_eq!(&body[..8], &id.to_le_bytes());
        assert_eq!(body.len(), 8 + id as usize * 100);
    }
    assert_eq!(frames[6], (frame::ERROR, [&6u64.to_le_bytes()[..], b"boom"].concat()));
}

#[test]
fn a_partial_frame_waits_for_the_rest() {
    let mut whole = Vec::new();
    frame::push(&mut whole, frame::RESULT, &[&1u64.to_le_bytes(), b"first"]);
    frame::push(&mut whole, frame::RESULT, &[&2u64.to_le_bytes(), b"second"]);
    // Feed it a byte at a time, as the supervisor's buffer fills: a frame
    // appears exactly when its last byte arrives, and consumed bytes go.
    let first_end = HEADER + 8 + 5;
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for (n, b) in whole.iter().enumerate() {
        buf.push(*b);
        let mut pos = 0;
        while let Some(f) = frame::next(&buf, &mut pos) {
            got.push((n + 1, f.task().unwrap().0));
        }
        buf.drain(..pos);
    }
    assert_eq!(got, vec![(first_end, 1), (whole.len(), 2)]);
    assert!(buf.is_empty());
}

#[test]
fn a_zero_length_frame_is_skipped() {
    let mut buf = vec![0, 0, 0, 0];
    frame::push(&mut buf, frame::STARTED, &[]);
    let (frames, pos) = parse_all(&buf);
    assert_eq!(frames, vec![(frame::STARTED, Vec::new())]);
    assert_eq!(pos, buf.len());
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    (a, b)
}

#[test]
fn reading_takes_what_is_there_and_reports_eof() {
    let (ours, mut theirs) = pair();
    let mut rbuf = Vec::new();
    let mut fds = VecDeque::new();
    assert!(!frame::read_available(&ours, &mut rbuf, &mut fds), "nothing yet is not EOF");
    assert!(rbuf.is_empty());
    let mut sent = Vec::new();
    for id in 0..100u64 {
        frame::push(&mut sent, frame::RESULT, &[&id.to_le_bytes(), b"x"]);
    }
    theirs.write_all(&sent).unwrap();
    assert!(!frame::read_available(&ours, &mut rbuf, &mut fds));
    assert_eq!(rbuf, sent);
    assert_eq!(parse_all(&rbuf).0.len(), 100);
    drop(theirs);
    assert!(frame::read_available(&ours, &mut rbuf, &mut fds), "EOF");
    assert_eq!(rbuf.len(), sent.len());
    assert!(fds.is_empty());
}

fn socket_holding(text: &[u8]) -> OwnedFd {
    let (a, mut b) = UnixStream::pair().unwrap();
    // Any descriptor will do; a socket whose peer holds known bytes lets
    // the test tell it apart after it travelled.
    b.write_all(text).unwrap();
    drop(b);
    a.into()
}

#[test]
fn descriptors_sent_along_are_kept_in_order() {
    let (ours, theirs) = pair();
    let one = socket_holding(b"one");
    let two = socket_holding(b"two");
    let f1 = frame::build(frame::RESULT, &[&1u64.to_le_bytes(), b"shm 1"]);
    let f2 = frame::build(frame::RESULT, &[&2u64.to_le_bytes(), b"shm 2"]);
    plait_core::ipc::send_with_fd(theirs.as_raw_fd(), &f1, one.as_raw_fd(), 0).unwrap();
    plait_core::ipc::send_with_fd(theirs.as_raw_fd(), &f2, two.as_raw_fd(), 0).unwrap();
    drop((one, two));
    let mut rbuf = Vec::new();
    let mut fds = VecDeque::new();
    assert!(!frame::read_available(&ours, &mut rbuf, &mut fds));
    assert_eq!(parse_all(&rbuf).0.len(), 2);
    assert_eq!(fds.len(), 2);
    for want in [&b"one"[..], b"two"] {
        let fd = fds.pop_front().unwrap();
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "received descriptors are close-on-exec");
        let mut got = Vec::new();
        UnixStream::from(fd).read_to_end(&mut got).unwrap();
        assert_eq!(got, want);
    }
}

#[test]
fn a_flush_keeps_what_the_socket_did_not_take() {
    let (ours, mut theirs) = pair();
    let mut wbuf = Vec::new();
    let big = vec![7u8; 1 << 16];
    for id in 0..64u64 {
        frame::push(&mut wbuf, frame::TASK, &[&id.to_le_bytes(), &big]);
    }
    let total = wbuf.len();
    frame::flush(&ours, &mut wbuf);
    let first = total - wbuf.len();
    assert!(first > 0 && !wbuf.is_empty(), "a socket buffer is smaller than 4 MiB");
    // The peer reads everything; flushing again sends the rest, in order.
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; total];
        theirs.read_exact(&mut got).unwrap();
        got
    });
    while !wbuf.is_empty() {
        plait_core::ipc::wait_fd(
            ours.as_raw_fd(),
            libc::POLLOUT,
            &plait_core::park::WaitCtx::timeout(Some(std::time::Duration::from_secs(60))),
        );
        frame::flush(&ours, &mut wbuf);
    }
    let got = reader.join().unwrap();
    let (frames, pos) = parse_all(&got);
    assert_eq!(pos, total);
    assert_eq!(frames.len(), 64);
    for (i, (kind, body)) in frames.iter().enumerate() {
        assert_eq!(*kind, frame::TASK);
        assert_eq!(&body[..8], &(i as u64).to_le_bytes());
    }
}

#[test]
fn a_flush_to_a_closed_peer_keeps_the_frames() {
    let (ours, theirs) = pair();
    drop(theirs);
    let mut wbuf = frame::build(frame::TASK, &[&1u64.to_le_bytes()]);
    let before = wbuf.clone();
    // write(2) to a closed peer raises SIGPIPE (the Rust runtime ignores
    // it already; say so here too).
    // SAFETY: ignoring SIGPIPE has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    frame::flush(&ours, &mut wbuf);
    assert_eq!(wbuf, before);
}
