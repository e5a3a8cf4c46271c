//! Inter-process transport: the parts of `plait.process` that need no Python.
//!
//! * **Framing** for byte streams (`Pipe`'s connections): a message is a
//!   little-endian `u32` length followed by that many bytes.
//! * **Waiting on a descriptor** ([`wait_fd`]): `poll(2)` in slices so a
//!   [`WaitCtx`]'s interrupt check (Ctrl-C in the main thread) and deadline
//!   are honoured.
//! * **Packets** for `Queue`'s large items: a `SOCK_SEQPACKET` socket pair,
//!   so every message is delivered whole to exactly one reader. A message
//!   larger than [`INLINE_MAX`] travels as a memfd whose descriptor rides in
//!   the packet (`SCM_RIGHTS`), which keeps the packet small. Small items go
//!   through the shared-memory ring (`ipc_ring.rs`), and [`RingSink`] puts a
//!   marker there for each packet so every item keeps its place in line.
//! * **A shared counter** ([`SharedCounter`]) in a one-page memfd mapping:
//!   the queue's item count, and the bound a `maxsize` queue waits on with a
//!   process-shared futex. A memfd (unlike an anonymous shared mapping)
//!   reaches spawned children: its descriptor is passed like the sockets'.
//! * **A feeder** ([`Feeder`]): `multiprocessing.Queue.put` never blocks on a
//!   full pipe, so when the [`Sink`] (ring or socket) is full the message is kept in a
//!   per-process FIFO and a Rust thread (no Python, no GIL) sends it; once
//!   anything is pending, later puts queue behind it so this process's
//!   messages keep their order.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::fork;
use crate::ipc_ring::{Ring, RingGuard, KIND_DATA, KIND_MARKER};
use crate::park::{Outcome, WaitCtx, SPIN};

/// Largest message sent inside a packet; larger ones go through a memfd.
pub const INLINE_MAX: usize = 64 * 1024;

/// Packet kind: the payload follows the kind byte.
const KIND_INLINE: u8 = 0;
/// Packet kind: a `u64` length follows and a memfd holds the payload.
const KIND_MEMFD: u8 = 1;

/// The 4-byte header of a stream message of `len` bytes, or `None` if the
/// message is too large to frame.
pub fn encode_header(len: usize) -> Option<[u8; 4]> {
    u32::try_from(len).ok().map(u32::to_le_bytes)
}

/// The length a stream header announces.
pub fn decode_header(h: [u8; 4]) -> usize {
    u32::from_le_bytes(h) as usize
}

fn errno() -> io::Error {
    io::Error::last_os_error()
}

/// Wait until `fd` is ready for `events` (`POLLIN`/`POLLOUT`), the deadline
/// passes, or the interrupt check fires. Hang-up and error count as ready:
/// the next read or write reports them.
pub fn wait_fd(fd: RawFd, events: i16, ctx: &WaitCtx<'_>) -> Outcome {
    if ctx.spin {
        // A peer process on the other CPU usually answers within
        // microseconds; sleeping in poll costs a wake-up from halt, which
        // on these VMs is far dearer (see DESIGN.md, handoffs).
        let end = Instant::now() + SPIN;
        while Instant::now() < end {
            if ready_now(fd, events) {
                return Outcome::Notified;
            }
            std::hint::spin_loop();
        }
    }
    loop {
        let now = Instant::now();
        let mut left = match ctx.deadline {
            Some(d) if d <= now => Duration::ZERO,
            Some(d) => d - now,
            None => Duration::from_secs(3600),
        };
        if ctx.interrupt.is_some() {
            left = left.min(ctx.slice);
        }
        // Round up so a 0.3 ms remainder does not spin on a 0 ms poll.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut p = libc::pollfd { fd, events, revents: 0 };
        // SAFETY: one valid pollfd, and poll does not retain the pointer.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n > 0 {
            return Outcome::Notified;
        }
        if n < 0 && errno().kind() != io::ErrorKind::Interrupted {
            return Outcome::Notified; // a bad descriptor: let the I/O call say so
        }
        if ctx.interrupted() {
            return Outcome::Interrupted;
        }
        if ctx.expired() {
            return Outcome::TimedOut;
        }
    }
}

/// Whether `fd` is ready for `events` right now.
pub fn ready_now(fd: RawFd, events: i16) -> bool {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// A connected pair of non-blocking, close-on-exec Unix sockets of `ty`
/// (`SOCK_STREAM` or `SOCK_SEQPACKET`).
pub fn socketpair(ty: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let r = unsafe {
        libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    };
    if r != 0 {
        return Err(errno());
    }
    for fd in fds {
        // Room for many small messages before a sender has to wait (the
        // kernel caps this at net.core.wmem_max; failure is harmless).
        let size: libc::c_int = 4 << 20;
        // SAFETY: setsockopt reads one c_int from a live local.
        unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, (&size as *const libc::c_int).cast(), 4)
        };
    }
    // SAFETY: socketpair succeeded, so both descriptors are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Make `fd` non-blocking (descriptors received from other processes may
/// have lost the flag's intent; it is per open file, shared, so set it).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number; an invalid one yields EBADF.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(errno());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(errno());
    }
    Ok(())
}

/// One non-blocking `send` (no SIGPIPE). `Ok(n)` bytes went out.
pub fn send_some(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for its length during the call.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// One non-blocking `recv`. `Ok(0)` is end of file.
pub fn recv_some(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid and writable for its length during the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

fn memfd(name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; memfd_create returns a fresh fd.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: fd is fresh and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

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
        let file = std::fs::File::from(memfd(c"plait-queue-msg")?);
        file.write_all_at(payload, 0)?;
        let fd = OwnedFd::from(file);
        let mut bytes = vec![KIND_MEMFD];
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        Ok(Packet { bytes, fd: Some(fd) })
    }

    /// The payload, when it travels inline.
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

/// One `sendmsg` of `data` with descriptor `fd` attached (`SCM_RIGHTS`),
/// with `flags`; `EINTR` is retried. The descriptor stays the caller's.
pub fn send_with_fd(sock: RawFd, data: &[u8], fd: RawFd, flags: libc::c_int) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let mut cbuf = [0u64; 4]; // room for one cmsg with one fd, aligned
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg_control points at `space` (<= 32) bytes of aligned
    // storage, enough for the one header CMSG_FIRSTHDR returns and its data.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
    }
    loop {
        // SAFETY: `msg` and everything it points to outlive the call; the
        // kernel only reads them.
        let n = unsafe { libc::sendmsg(sock, &msg, flags) };
        if n >= 0 {
            return Ok(());
        }
        let e = errno();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Send `payload` (at most [`INLINE_MAX`] bytes) as an inline packet
/// without building a [`Packet`]: one non-blocking `sendmsg`, no copy.
pub fn try_send_inline(sock: RawFd, payload: &[u8]) -> io::Result<()> {
    let kind = [KIND_INLINE];
    let mut iov = [
        libc::iovec { iov_base: kind.as_ptr() as *mut _, iov_len: 1 },
        libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: payload.len() },
    ];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 2;
    // SAFETY: `msg` and the two buffers it points to outlive the call; the
    // kernel only reads them.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

thread_local! {
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; INLINE_MAX + 16]);
}

/// One non-blocking receive of a whole packet; `f` sees the payload.
/// `Err(WouldBlock)` when nothing is waiting.
pub fn recv_packet<R>(sock: RawFd, f: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
    RECV_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let mut cbuf = [0u64; 8];
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        // SAFETY: `msg` points at live buffers of the stated sizes.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(errno());
        }
        let n = n as usize;
        let mut got: Option<OwnedFd> = None;
        // SAFETY: walking the control buffer the kernel just filled, with
        // the CMSG_* accessors that bound every header by msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
                    got = Some(OwnedFd::from_raw_fd(fd));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
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

/// Where a [`Feeder`] delivers messages.
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

/// The per-process FIFO of messages that found the socket full, and the
/// thread that drains it.
pub struct Feeder {
    sink: Box<dyn Sink>,
    state: Mutex<FeederState>,
    cv: Condvar,
}

#[derive(Default)]
struct FeederState {
    pending: VecDeque<Arc<Packet>>,
    generation: u64,
    running: bool,
    closed: bool,
    error: Option<String>,
}

impl Feeder {
    /// A feeder for the sending socket `sock`.
    pub fn new(sock: Arc<OwnedFd>) -> Arc<Feeder> {
        Self::with_sink(Box::new(SocketSink(sock)))
    }

    /// A feeder delivering to `sink`.
    pub fn with_sink(sink: Box<dyn Sink>) -> Arc<Feeder> {
        Arc::new(Feeder { sink, state: Mutex::new(FeederState::default()), cv: Condvar::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeederState> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let gen = fork::generation();
        if st.generation != gen {
            // A forked child: the parent's pending messages and thread are
            // the parent's business, as with multiprocessing's Queue.
            st.pending.clear();
            st.running = false;
            st.generation = gen;
        }
        st
    }

    /// Send `payload` now if nothing is queued ahead of it and the socket
    /// has room, else queue it for the feeder thread. Returns whether it
    /// was queued.
    pub fn send_payload(self: &Arc<Self>, payload: &[u8]) -> io::Result<bool> {
        if payload.len() > INLINE_MAX {
            return self.send(Packet::new(payload)?);
        }
        let st = self.lock();
        if let Some(e) = &st.error {
            return Err(io::Error::other(e.clone()));
        }
        if st.pending.is_empty() {
            match self.sink.try_send_inline(payload, false) {
                Ok(()) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        drop(st);
        self.send(Packet::new(payload)?)
    }

    /// Send `pkt` now if nothing is queued ahead of it and the socket has
    /// room, else queue it for the feeder thread. Returns whether it was
    /// queued.
    pub fn send(self: &Arc<Self>, pkt: Packet) -> io::Result<bool> {
        let mut st = self.lock();
        if let Some(e) = &st.error {
            return Err(io::Error::other(e.clone()));
        }
        if st.pending.is_empty() {
            match self.sink.try_send(&pkt, false) {
                Ok(()) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        st.pending.push_back(Arc::new(pkt));
        if !st.running {
            st.running = true;
            let me = Arc::clone(self);
            std::thread::Builder::new().name("plait-queue-feeder".into()).spawn(move || me.run())?;
        } else {
            self.cv.notify_all();
        }
        Ok(true)
    }

    fn run(&self) {
        loop {
            let front = {
                let mut st = self.lock();
                loop {
                    if let Some(p) = st.pending.front() {
                        break Arc::clone(p);
                    }
                    if st.closed {
                        st.running = false;
                        self.cv.notify_all();
                        return;
                    }
                    let (g, _) = self.cv.wait_timeout(st, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner());
                    st = g;
                    if st.pending.is_empty() && !st.closed {
                        // Idle: let the thread go; the next overflow starts one.
                        st.running = false;
                        self.cv.notify_all();
                        return;
                    }
                }
            };
            let r = loop {
                match self.sink.try_send(&front, true) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.sink.wait_room(&front),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            let mut st = self.lock();
            if let Err(e) = r {
                st.error = Some(format!("queue feeder: {e}"));
                st.pending.clear();
            } else {
                st.pending.pop_front();
            }
            self.cv.notify_all();
        }
    }

    /// No more puts: the thread exits once everything pending is sent.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Messages still waiting to be sent by this process.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Wait until nothing is pending (or the feeder failed).
    pub fn flush(&self, ctx: &WaitCtx<'_>) -> Outcome {
        let mut st = self.lock();
        loop {
            if st.pending.is_empty() || st.error.is_some() {
                return Outcome::Notified;
            }
            let step = if ctx.interrupt.is_some() { ctx.slice } else { Duration::from_millis(100) };
            st = self.cv.wait_timeout(st, step).unwrap_or_else(|e| e.into_inner()).0;
            if ctx.interrupted() {
                return Outcome::Interrupted;
            }
            if ctx.expired() {
                return Outcome::TimedOut;
            }
        }
    }
}

/// A `u32` counter in a shared one-page memfd mapping, usable from every
/// process that holds the descriptor, with a futex to wait for room.
pub struct SharedCounter {
    fd: OwnedFd,
    ptr: *const AtomicU32,
}

// SAFETY: the mapping is shared memory accessed only through an atomic and
// lives as long as the value; the descriptor is an owned fd.
unsafe impl Send for SharedCounter {}
// SAFETY: as above; all access goes through `AtomicU32`.
unsafe impl Sync for SharedCounter {}

impl SharedCounter {
    /// A fresh counter at zero.
    pub fn new() -> io::Result<SharedCounter> {
        let fd = memfd(c"plait-queue-count")?;
        // SAFETY: ftruncate on our fresh memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), 4096) } != 0 {
            return Err(errno());
        }
        Self::from_fd(fd)
    }

    /// Map an existing counter's descriptor (received from another process).
    pub fn from_fd(fd: OwnedFd) -> io::Result<SharedCounter> {
        // SAFETY: mapping one page of a descriptor we own, shared, R/W.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0)
        };
        if p == libc::MAP_FAILED {
            return Err(errno());
        }
        Ok(SharedCounter { fd, ptr: p.cast() })
    }

    /// The backing descriptor, to pass to another process.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn atom(&self) -> &AtomicU32 {
        // SAFETY: `ptr` is a live, page-aligned shared mapping (see new).
        unsafe { &*self.ptr }
    }

    /// The current count.
    pub fn get(&self) -> u32 {
        self.atom().load(Ordering::Acquire)
    }

    /// Add one unconditionally.
    pub fn incr(&self) {
        self.atom().fetch_add(1, Ordering::AcqRel);
    }

    /// Add one if the count is below `max`.
    pub fn try_reserve(&self, max: u32) -> bool {
        let a = self.atom();
        let mut c = a.load(Ordering::Acquire);
        while c < max {
            match a.compare_exchange_weak(c, c + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => c = now,
            }
        }
        false
    }

    /// Add one once the count is below `max`, waiting on the futex.
    pub fn reserve(&self, max: u32, ctx: &WaitCtx<'_>) -> Outcome {
        loop {
            if self.try_reserve(max) {
                return Outcome::Notified;
            }
            let seen = self.get();
            if seen < max {
                continue;
            }
            let now = Instant::now();
            let mut left = match ctx.deadline {
                Some(d) if d <= now => return Outcome::TimedOut,
                Some(d) => d - now,
                None => Duration::from_secs(3600),
            };
            if ctx.interrupt.is_some() {
                left = left.min(ctx.slice);
            }
            let ts = libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as libc::c_long };
            // SAFETY: a shared (not private) FUTEX_WAIT on our mapped word,
            // with a valid relative timeout; it returns on wake, timeout or
            // when the word no longer equals `seen`.
            unsafe { libc::syscall(libc::SYS_futex, self.ptr, libc::FUTEX_WAIT, seen, &ts as *const libc::timespec) };
            if ctx.interrupted() {
                return Outcome::Interrupted;
            }
            if ctx.expired() && !self.try_reserve(max) {
                return Outcome::TimedOut;
            } else if ctx.expired() {
                return Outcome::Notified;
            }
        }
    }

    /// Subtract one (saturating) and, when `wake`, wake a waiting reserver.
    pub fn decr(&self, wake: bool) {
        let _ = self.atom().fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| Some(c.saturating_sub(1)));
        if wake {
            // SAFETY: a shared FUTEX_WAKE on our mapped word.
            unsafe { libc::syscall(libc::SYS_futex, self.ptr, libc::FUTEX_WAKE, 1) };
        }
    }
}

impl Drop for SharedCounter {
    fn drop(&mut self) {
        // SAFETY: unmapping the page mapped in from_fd, no longer used.
        unsafe { libc::munmap(self.ptr as *mut _, 4096) };
    }
}
