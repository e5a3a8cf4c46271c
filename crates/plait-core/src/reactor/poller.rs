//! Readiness polling: the workspace's one epoll wrapper.
//!
//! Two layers, so that each user pays only for what it needs:
//!
//! * [`Epoll`] is the bare epoll descriptor: register a file descriptor with
//!   raw epoll bits and a 64-bit token, wait into an [`Events`] buffer that
//!   the caller reuses from one wait to the next (no allocation in the
//!   steady state). The native echo tools use it directly, with their
//!   connection slots as tokens.
//! * [`Poller`] is asyncio's view on top: level-triggered, the token is the
//!   descriptor itself, and the interest of each registered descriptor
//!   (READ | WRITE, `selectors.EVENT_READ`/`EVENT_WRITE`) is remembered, so
//!   that `modify` and `unregister` are one `epoll_ctl` each, a descriptor
//!   closed behind the poller's back (which epoll forgets by itself) is not
//!   an error, and readiness is reported as asyncio's masks ([`readiness`]).
//!
//! The loop's `Selector` keeps its `Poller` under a lock and waits
//! detached from the interpreter without holding that lock, so it calls
//! [`Events::wait`] on the poller's descriptor ([`Poller::fd`]) directly,
//! with a per-thread buffer, and maps the reports with [`Poller::interest`]
//! and [`readiness`] afterwards.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// epoll's event bits, typed as [`Epoll`] takes and [`Event`] reports them.
pub const EPOLLIN: u32 = libc::EPOLLIN as u32;
/// See [`EPOLLIN`].
pub const EPOLLOUT: u32 = libc::EPOLLOUT as u32;
/// See [`EPOLLIN`].
pub const EPOLLERR: u32 = libc::EPOLLERR as u32;
/// See [`EPOLLIN`].
pub const EPOLLHUP: u32 = libc::EPOLLHUP as u32;
/// See [`EPOLLIN`].
pub const EPOLLRDHUP: u32 = libc::EPOLLRDHUP as u32;

/// Readable interest/readiness (asyncio's `selectors.EVENT_READ`).
pub const READ: u32 = 1;
/// Writable interest/readiness (asyncio's `selectors.EVENT_WRITE`).
pub const WRITE: u32 = 2;

/// asyncio's readiness mask for epoll's `events` bits, limited to `want`
/// (READ | WRITE): an error or hang-up counts as both readable and
/// writable, as in Python's `EpollSelector`.
#[inline]
pub fn readiness(events: u32, want: u32) -> u32 {
    let mut mask = 0;
    if events & !(libc::EPOLLIN as u32) != 0 {
        mask |= WRITE;
    }
    if events & !(libc::EPOLLOUT as u32) != 0 {
        mask |= READ;
    }
    mask & want
}

/// One readiness report: the token given at registration and epoll's
/// event bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub token: u64,
    pub events: u32,
}

impl Event {
    /// Data to read, or the peer closed, or an error to collect.
    #[inline]
    pub fn readable(&self) -> bool {
        self.events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP) != 0
    }

    /// Room to write, or an error or hang-up a write would report.
    #[inline]
    pub fn writable(&self) -> bool {
        self.events & (EPOLLOUT | EPOLLERR | EPOLLHUP) != 0
    }
}

/// `epoll_wait`'s output buffer, reused from one wait to the next.
#[derive(Debug, Default)]
pub struct Events {
    buf: Vec<libc::epoll_event>,
}

impl Events {
    /// An empty buffer (it grows on the first wait).
    pub const fn new() -> Self {
        Events { buf: Vec::new() }
    }

    /// A buffer with room for `n` reports.
    pub fn with_capacity(n: usize) -> Self {
        Events { buf: Vec::with_capacity(n) }
    }

    /// Wait on the epoll descriptor `epfd` up to `timeout_ms` (-1: forever,
    /// 0: poll) for at most `max` (at least 1) reports, replacing what the
    /// buffer held. A signal interrupting the wait is an error of kind
    /// `Interrupted`, for the caller to decide about.
    ///
    /// Takes the descriptor rather than an [`Epoll`] so that a caller that
    /// keeps its poller under a lock can wait without holding it; waiting
    /// on a descriptor that is not an epoll instance is an error
    /// (`EBADF`/`EINVAL`), never undefined behaviour.
    #[inline]
    pub fn wait(&mut self, epfd: RawFd, max: usize, timeout_ms: i32) -> io::Result<usize> {
        let max = max.clamp(1, i32::MAX as usize);
        self.buf.clear();
        self.buf.reserve(max);
        // SAFETY: the buffer has room for `max` events and is not otherwise
        // borrowed during the call; the kernel writes at most that many.
        let n = unsafe { libc::epoll_wait(epfd, self.buf.as_mut_ptr(), max as libc::c_int, timeout_ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: epoll_wait initialised the first `n` (<= max) entries.
        unsafe { self.buf.set_len(n as usize) };
        Ok(n as usize)
    }

    /// The reports of the last wait.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        // Copied out field by field: the struct is packed on x86-64.
        self.buf.iter().map(|e| {
            let (token, events) = (e.u64, e.events);
            Event { token, events }
        })
    }

    /// How many reports the last wait gave.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the last wait reported nothing.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Forget the reports (keeping the room).
    #[inline]
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// An epoll instance: registration by token, and waits.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// `Some(timeout)` in epoll's milliseconds, rounded up (a 0.3 ms remainder
/// waits 1 ms instead of spinning); None is -1 (forever).
#[inline]
pub fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
    }
}

impl Epoll {
    /// A new epoll instance (close-on-exec).
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; it returns a new fd or -1.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(raw) } })
    }

    /// The epoll descriptor.
    #[inline]
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    #[inline]
    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call;
        // the kernel copies it. An invalid `fd` is reported as an error.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Watch `fd` for the epoll bits `events`, reported with `token`.
    #[inline]
    pub fn add(&self, fd: &impl AsRawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), events, token)
    }

    /// Change what `fd` is watched for, and its token.
    #[inline]
    pub fn modify(&self, fd: &impl AsRawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd.as_raw_fd(), events, token)
    }

    /// Stop watching `fd`.
    #[inline]
    pub fn delete(&self, fd: &impl AsRawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd.as_raw_fd(), 0, 0)
    }

    /// Wait up to `timeout` (None: forever) for at most `max` reports into
    /// `events`. A signal interrupting the wait is an empty report, not an
    /// error.
    #[inline]
    pub fn wait(&self, events: &mut Events, max: usize, timeout: Option<Duration>) -> io::Result<()> {
        match events.wait(self.fd(), max, timeout_ms(timeout)) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                events.clear();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Level-triggered epoll with the interest of every descriptor remembered.
#[derive(Debug)]
pub struct Poller {
    ep: Epoll,
    interest: HashMap<RawFd, u32>,
    events: Events,
}

fn epoll_mask(events: u32) -> u32 {
    let mut m = 0;
    if events & READ != 0 {
        m |= libc::EPOLLIN as u32;
    }
    if events & WRITE != 0 {
        m |= libc::EPOLLOUT as u32;
    }
    m
}

impl Poller {
    /// A new epoll instance (close-on-exec).
    pub fn new() -> io::Result<Self> {
        Ok(Poller { ep: Epoll::new()?, interest: HashMap::new(), events: Events::with_capacity(64) })
    }

    /// The epoll descriptor (`selector.fileno()`).
    pub fn fd(&self) -> RawFd {
        self.ep.fd()
    }

    /// The interest registered for `fd`, if any.
    #[inline]
    pub fn interest(&self, fd: RawFd) -> Option<u32> {
        self.interest.get(&fd).copied()
    }

    /// How many descriptors are registered.
    pub fn len(&self) -> usize {
        self.interest.len()
    }

    /// Whether no descriptor is registered.
    pub fn is_empty(&self) -> bool {
        self.interest.is_empty()
    }

    /// How many reports one wait asks for: one per registered descriptor,
    /// between 1 and 1024.
    #[inline]
    pub fn batch(registered: usize) -> usize {
        registered.clamp(1, 1024)
    }

    /// Register `fd` for `events` (READ | WRITE). The caller has checked
    /// it is not registered yet.
    pub fn register(&mut self, fd: RawFd, events: u32) -> io::Result<()> {
        self.ep.ctl(libc::EPOLL_CTL_ADD, fd, epoll_mask(events), fd as u64)?;
        self.interest.insert(fd, events);
        Ok(())
    }

    /// Change the interest of a registered `fd`.
    pub fn modify(&mut self, fd: RawFd, events: u32) -> io::Result<()> {
        match self.ep.ctl(libc::EPOLL_CTL_MOD, fd, epoll_mask(events), fd as u64) {
            Ok(()) => {}
            // Closed and reopened behind our back: epoll forgot it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.ep.ctl(libc::EPOLL_CTL_ADD, fd, epoll_mask(events), fd as u64)?,
            Err(e) => return Err(e),
        }
        self.interest.insert(fd, events);
        Ok(())
    }

    /// Forget `fd`. A descriptor already closed (which epoll dropped by
    /// itself) is not an error, as with Python's `EpollSelector`.
    pub fn unregister(&mut self, fd: RawFd) {
        if self.interest.remove(&fd).is_some() {
            let _ = self.ep.ctl(libc::EPOLL_CTL_DEL, fd, 0, fd as u64);
        }
    }

    /// The readiness mask of one report, if it is for a registered
    /// descriptor and for something it asked for.
    #[inline]
    pub fn ready(&self, ev: Event) -> Option<(RawFd, u32)> {
        let fd = ev.token as RawFd;
        let want = self.interest(fd)?;
        let mask = readiness(ev.events, want);
        (mask != 0).then_some((fd, mask))
    }

    /// Wait up to `timeout_ms` (-1: forever, 0: poll) and return the ready
    /// descriptors with asyncio's readiness mask: an error or hang-up
    /// counts as both readable and writable, limited to what was asked.
    /// `EINTR` is returned as an error for the caller to handle signals.
    pub fn wait(&mut self, timeout_ms: i32, out: &mut Vec<(RawFd, u32)>) -> io::Result<()> {
        out.clear();
        let max = Self::batch(self.interest.len());
        let mut events = std::mem::take(&mut self.events);
        let r = events.wait(self.ep.fd(), max, timeout_ms);
        if r.is_ok() {
            out.extend(events.iter().filter_map(|ev| self.ready(ev)));
        }
        self.events = events;
        r.map(drop)
    }
}
