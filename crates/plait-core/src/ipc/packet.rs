//! Packets for `Queue`'s items, and the sinks a [`Feeder`](super::Feeder)
//! delivers them to.
//!
//! A packet travels on a `SOCK_SEQPACKET` socket pair, so every message is
//! delivered whole to exactly one reader. A message larger than
//! [`INLINE_MAX`] travels as a memfd whose descriptor rides in the packet
//! (`SCM_RIGHTS`), which keeps the packet small. Small items go through the
//! shared-memory ring (`ring.rs`), and [`RingSink`] puts a marker there for
//! each packet so every item keeps its place in line.
//!
//! Wire form: one kind byte, then either the payload (`KIND_INLINE`) or
//! the payload's `u64` length, the memfd holding it attached
//! (`KIND_MEMFD`).

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use super::fd::{memfd, recv_with_fds, send_gather, send_with_fd, wait_fd};
use super::ring::{Ring, RingGuard, KIND_DATA, KIND_MARKER};
use crate::park::WaitCtx;

/// Largest message sent inside a packet; larger ones go through a memfd.
pub const INLINE_MAX: usize = 64 * 1024;

/// Packet kind: the payload follows the kind byte.
const KIND_INLINE: u8 = 0;
/// Packet kind: a `u64` length follows and a memfd holds the payload.
const KIND_MEMFD: u8 = 1;

/// A message ready to go out as one packet (and maybe a memfd).
pub struct Packet {
    bytes: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl Packet {
    /// Wrap `payload`: inline when small, else copied into a fresh memfd.
    pub fn new(payload: &[u8]) -> io::Result<Packet> {
        if payload.len() <= INLINE_MAX {
            let mut bytes = Vec::with_capacity(payload.len() + 1);
            bytes.push(KIND_INLINE);
            bytes.extend_from_slice(payload);
            return Ok(Packet { bytes, fd: None });
        }
        let file = std::fs::File::from(memfd(c"plait-queue-msg", 0)?);
        file.write_all_at(payload, 0)?;
        let fd = OwnedFd::from(file);
        let mut bytes = vec![KIND_MEMFD];
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        Ok(Packet { bytes, fd: Some(fd) })
    }

    /// The payload, when it travels inline.
    #[inline]
    pub fn inline_payload(&self) -> Option<&[u8]> {
        if self.fd.is_none() {
            Some(&self.bytes[1..])
        } else {
            None
        }
    }

    /// One non-blocking `sendmsg` of the whole packet.
    pub fn try_send(&self, sock: RawFd) -> io::Result<()> {
        if self.fd.is_none() {
            return try_send_inline(sock, &self.bytes[1..]);
        }
        let fd = self.fd.as_ref().map(|f| f.as_raw_fd()).expect("checked above");
        send_with_fd(sock, &self.bytes, fd, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
    }
}

/// Send `payload` (at most [`INLINE_MAX`] bytes) as an inline packet
/// without building a [`Packet`]: one non-blocking `sendmsg`, no copy.
#[inline]
pub fn try_send_inline(sock: RawFd, payload: &[u8]) -> io::Result<()> {
    let kind = [KIND_INLINE];
    send_gather(sock, &[IoSlice::new(&kind), IoSlice::new(payload)], libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT).map(drop)
}

thread_local! {
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; INLINE_MAX + 16]);
}

/// One non-blocking receive of a whole packet; `f` sees the payload.
/// `Err(WouldBlock)` when nothing is waiting.
pub fn recv_packet<R>(sock: RawFd, f: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
    RECV_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        let mut got: Option<OwnedFd> = None;
        // SAFETY: `buf` is an initialised buffer, writable for its length
        // during the call.
        let n = unsafe {
            recv_with_fds(sock, buf.as_mut_ptr(), buf.len(), libc::MSG_DONTWAIT, |fd| got = Some(fd))
        }?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "empty packet"));
        }
        match (buf[0], got) {
            (KIND_INLINE, _) => Ok(f(&buf[1..n])),
            (KIND_MEMFD, Some(fd)) if n == 9 => {
                let len = u64::from_le_bytes(buf[1..9].try_into().unwrap()) as usize;
                let mut data = vec![0u8; len];
                std::fs::File::from(fd).read_exact_at(&mut data, 0).map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => io::Error::new(io::ErrorKind::UnexpectedEof, "short message file"),
                    _ => e,
                })?;
                Ok(f(&data))
            }
            _ => Err(io::Error::new(io::ErrorKind::InvalidData, "malformed queue packet")),
        }
    })
}

/// Where a [`Feeder`](super::Feeder) delivers messages.
pub trait Sink: Send + Sync {
    /// One attempt to deliver `pkt`; `Err(WouldBlock)` when there is no
    /// room. `may_block`: the caller may sleep for a lock (the feeder
    /// thread) rather than only spin briefly (a Python thread, attached).
    fn try_send(&self, pkt: &Packet, may_block: bool) -> io::Result<()>;
    /// As `try_send` for a payload of at most [`INLINE_MAX`] bytes.
    fn try_send_inline(&self, payload: &[u8], may_block: bool) -> io::Result<()>;
    /// Sleep (at most ~100 ms) until `pkt` may fit.
    fn wait_room(&self, pkt: &Packet);
}

/// Deliver straight into a socket.
pub struct SocketSink(pub Arc<OwnedFd>);

impl Sink for SocketSink {
    fn try_send(&self, pkt: &Packet, _may_block: bool) -> io::Result<()> {
        pkt.try_send(self.0.as_raw_fd())
    }
    fn try_send_inline(&self, payload: &[u8], _may_block: bool) -> io::Result<()> {
        try_send_inline(self.0.as_raw_fd(), payload)
    }
    fn wait_room(&self, _pkt: &Packet) {
        wait_fd(self.0.as_raw_fd(), libc::POLLOUT, &WaitCtx::timeout(Some(Duration::from_millis(100))));
    }
}

/// Deliver into a shared [`Ring`]: small payloads as records, large ones
/// as a packet on `tx` plus a marker record holding its place in line
/// (both under the ring lock, so markers and packets stay in one order).
pub struct RingSink {
    pub ring: Arc<Ring>,
    pub tx: Arc<OwnedFd>,
}

fn would_block() -> io::Error {
    io::Error::from(io::ErrorKind::WouldBlock)
}

impl RingSink {
    fn guard(&self, may_block: bool) -> io::Result<RingGuard<'_>> {
        match self.ring.try_lock() {
            Some(g) => Ok(g),
            None if may_block => Ok(self.ring.lock()),
            None => Err(would_block()),
        }
    }
}

impl Sink for RingSink {
    fn try_send(&self, pkt: &Packet, may_block: bool) -> io::Result<()> {
        if let Some(p) = pkt.inline_payload() {
            return self.try_send_inline(p, may_block);
        }
        let mut g = self.guard(may_block)?;
        if !g.fits(0) {
            return Err(would_block());
        }
        pkt.try_send(self.tx.as_raw_fd())?;
        g.push(KIND_MARKER, &[]);
        Ok(())
    }
    fn try_send_inline(&self, payload: &[u8], may_block: bool) -> io::Result<()> {
        let mut g = self.guard(may_block)?;
        if g.push(KIND_DATA, payload) {
            Ok(())
        } else {
            Err(would_block())
        }
    }
    fn wait_room(&self, pkt: &Packet) {
        let len = pkt.inline_payload().map_or(0, <[u8]>::len);
        self.ring.wait_space(len, &WaitCtx::timeout(Some(Duration::from_millis(100))));
        if pkt.inline_payload().is_none() {
            wait_fd(self.tx.as_raw_fd(), libc::POLLOUT, &WaitCtx::timeout(Some(Duration::from_millis(100))));
        }
    }
}
