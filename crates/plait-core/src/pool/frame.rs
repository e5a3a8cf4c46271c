//! The pool's wire format: `u32` little-endian length (of kind and
//! payload) | `u8` kind | payload, both ways on a worker's socketpair.
//!
//! | kind | direction       | payload                                        |
//! |------|-----------------|------------------------------------------------|
//! | `I`  | parent → worker | pickled setup (empty: a forked worker has it)  |
//! | `T`  | parent → worker | `u64` task id, `u32` claim slot, pickled `(fn, args, kwargs)` |
//! | `S`  | worker → parent | nothing: setup and initializer done            |
//! | `F`  | worker → parent | the initializer's failure, as text             |
//! | `R`  | worker → parent | `u64` task id, pickled result                  |
//! | `E`  | worker → parent | `u64` task id, pickled exception               |
//! | `X`  | worker → parent | `u64` task id: skipped (cancelled or withdrawn, see `claim.rs`) |
//!
//! A result whose buffers live in shared memory carries the segment's
//! descriptor (`SCM_RIGHTS`), so reads go through [`recv_with_fds`] and
//! keep the descriptors, in arrival order, for the host to match with
//! their frames. Frames are parsed in place ([`next`]) from a per-worker
//! buffer that one read fills with as many as have arrived; task frames
//! are appended to a per-worker buffer ([`push`]) and written in one go
//! ([`flush`]), as much as the socket takes without blocking.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::ipc::fd::recv_with_fds;

/// Length prefix plus kind byte.
pub const HEADER: usize = 5;

/// Parent → worker: the setup.
pub const SETUP: u8 = b'I';
/// Parent → worker: a task.
pub const TASK: u8 = b'T';
/// Worker → parent: ready.
pub const STARTED: u8 = b'S';
/// Worker → parent: its initializer failed.
pub const INIT_FAILED: u8 = b'F';
/// Worker → parent: a task's result.
pub const RESULT: u8 = b'R';
/// Worker → parent: a task's exception.
pub const ERROR: u8 = b'E';
/// Worker → parent: a task it skipped (its claim was cancelled or withdrawn).
pub const SKIPPED: u8 = b'X';

/// A whole frame, built in a new buffer.
pub fn build(kind: u8, payload: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    push(&mut out, kind, payload);
    out
}

/// Append a frame whose payload is the concatenation of `payload`.
#[inline]
pub fn push(out: &mut Vec<u8>, kind: u8, payload: &[&[u8]]) {
    let len: usize = 1 + payload.iter().map(|p| p.len()).sum::<usize>();
    out.reserve(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(kind);
    for p in payload {
        out.extend_from_slice(p);
    }
}

/// One frame, borrowed from the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// A `T`, `R`, `E` or `X` frame's task id and the bytes after it.
    #[inline]
    pub fn task(&self) -> Option<(u64, &'a [u8])> {
        let (id, rest) = self.body.split_first_chunk::<8>()?;
        Some((u64::from_le_bytes(*id), rest))
    }
}

/// The next whole frame of `buf` at `*pos`, advancing `*pos` past it;
/// `None` when what is left is not a whole frame yet. A frame whose length
/// is zero (it has no kind, which no peer sends) is skipped.
#[inline]
pub fn next<'a>(buf: &'a [u8], pos: &mut usize) -> Option<Frame<'a>> {
    loop {
        let avail = buf.get(*pos..)?;
        if avail.len() < HEADER {
            return None;
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if avail.len() < 4 + len {
            return None;
        }
        let start = *pos;
        *pos += 4 + len;
        if len == 0 {
            continue;
        }
        return Some(Frame { kind: avail[4], body: &buf[start + HEADER..start + 4 + len] });
    }
}

/// Read everything the socket holds now into `rbuf` (and the descriptors
/// that came along into `fds`); `true` if the peer is gone (EOF or an
/// error other than "would block").
pub fn read_available(sock: &UnixStream, rbuf: &mut Vec<u8>, fds: &mut VecDeque<OwnedFd>) -> bool {
    const CHUNK: usize = 1 << 16;
    loop {
        let len = rbuf.len();
        rbuf.reserve(CHUNK);
        let spare = rbuf.capacity() - len;
        // SAFETY: the pointer and length describe the vector's spare
        // capacity, which recvmsg(2) may fill; the length is only extended
        // by the count it reports written.
        let got = unsafe { recv_with_fds(sock.as_raw_fd(), rbuf.as_mut_ptr().add(len), spare, 0, |fd| fds.push_back(fd)) };
        match got {
            Ok(0) => return true,
            // SAFETY: recvmsg(2) initialised these `n` bytes.
            Ok(n) => unsafe { rbuf.set_len(len + n) },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Write what the (non-blocking) socket takes now of `wbuf`, and drop that
/// part. The rest waits for `POLLOUT`; a failed write leaves it too (the
/// peer is gone, which the next read notices).
pub fn flush(mut sock: &UnixStream, wbuf: &mut Vec<u8>) {
    let mut sent = 0;
    while sent < wbuf.len() {
        match sock.write(&wbuf[sent..]) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    wbuf.drain(..sent);
}
