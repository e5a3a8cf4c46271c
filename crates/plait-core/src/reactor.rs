//! The event loop's reactor: readiness polling (epoll) and the timer heap.
//!
//! Both are plain data structures driven by the loop's own thread; the
//! binding (`plait-py`'s `event_loop.rs`) owns one of each per loop and
//! keeps the Python objects (callbacks, handles) as the payloads.
//!
//! * [`Poller`] is level-triggered epoll over file descriptors, with the
//!   interest of each registered descriptor remembered, so that `modify`
//!   and `unregister` are one `epoll_ctl` each and a descriptor closed
//!   behind the poller's back (which epoll forgets by itself) is not an
//!   error.
//! * [`TimerHeap`] orders deadlines (seconds on the monotonic clock, as
//!   `loop.time()` returns them), first by time, then by insertion, so
//!   timers due at the same moment run in the order they were scheduled,
//!   as asyncio's heap of `TimerHandle`s does.

use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::RawFd;

/// Readable interest/readiness (asyncio's `selectors.EVENT_READ`).
pub const READ: u32 = 1;
/// Writable interest/readiness (asyncio's `selectors.EVENT_WRITE`).
pub const WRITE: u32 = 2;

/// asyncio's readiness mask for epoll's `events` bits, limited to `want`
/// (READ | WRITE): an error or hang-up counts as both readable and
/// writable, as in Python's `EpollSelector`.
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

/// Level-triggered epoll with the interest of every descriptor remembered.
#[derive(Debug)]
pub struct Poller {
    epfd: RawFd,
    interest: HashMap<RawFd, u32>,
    buf: Vec<libc::epoll_event>,
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
        // SAFETY: epoll_create1 has no preconditions; the result is checked.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller { epfd, interest: HashMap::new(), buf: Vec::with_capacity(64) })
    }

    /// The epoll descriptor (`selector.fileno()`).
    pub fn fd(&self) -> RawFd {
        self.epfd
    }

    /// The interest registered for `fd`, if any.
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

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: epoll_mask(events), u64: fd as u64 };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.epfd, op, fd, &mut ev) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Register `fd` for `events` (READ | WRITE). The caller has checked
    /// it is not registered yet.
    pub fn register(&mut self, fd: RawFd, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events)?;
        self.interest.insert(fd, events);
        Ok(())
    }

    /// Change the interest of a registered `fd`.
    pub fn modify(&mut self, fd: RawFd, events: u32) -> io::Result<()> {
        match self.ctl(libc::EPOLL_CTL_MOD, fd, events) {
            Ok(()) => {}
            // Closed and reopened behind our back: epoll forgot it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.ctl(libc::EPOLL_CTL_ADD, fd, events)?,
            Err(e) => return Err(e),
        }
        self.interest.insert(fd, events);
        Ok(())
    }

    /// Forget `fd`. A descriptor already closed (which epoll dropped by
    /// itself) is not an error, as with Python's `EpollSelector`.
    pub fn unregister(&mut self, fd: RawFd) {
        if self.interest.remove(&fd).is_some() {
            let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0);
        }
    }

    /// Wait up to `timeout_ms` (-1: forever, 0: poll) and return the ready
    /// descriptors with asyncio's readiness mask: an error or hang-up
    /// counts as both readable and writable, limited to what was asked.
    /// `EINTR` is returned as an error for the caller to handle signals.
    pub fn wait(&mut self, timeout_ms: i32, out: &mut Vec<(RawFd, u32)>) -> io::Result<()> {
        out.clear();
        let cap = self.interest.len().clamp(1, 1024);
        self.buf.clear();
        self.buf.reserve(cap);
        // SAFETY: the buffer has room for `cap` events; the kernel writes
        // at most that many and we set the length to what it reports.
        let n = unsafe { libc::epoll_wait(self.epfd, self.buf.as_mut_ptr(), cap as libc::c_int, timeout_ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: epoll_wait initialised the first `n` (<= cap) entries.
        unsafe { self.buf.set_len(n as usize) };
        for ev in &self.buf {
            let fd = ev.u64 as RawFd;
            let Some(&want) = self.interest.get(&fd) else { continue };
            let mask = readiness(ev.events, want);
            if mask != 0 {
                out.push((fd, mask));
            }
        }
        Ok(())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // SAFETY: we own the epoll descriptor and close it once.
        unsafe { libc::close(self.epfd) };
    }
}

/// One deadline in a [`TimerHeap`].
#[derive(Debug)]
struct Entry<T> {
    when: f64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.when == other.when && self.seq == other.seq
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        other.when.total_cmp(&self.when).then_with(|| other.seq.cmp(&self.seq))
    }
}

/// Deadlines in order of time, then of insertion.
#[derive(Debug)]
pub struct TimerHeap<T> {
    heap: BinaryHeap<Entry<T>>,
    seq: u64,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        TimerHeap { heap: BinaryHeap::new(), seq: 0 }
    }
}

impl<T> TimerHeap<T> {
    /// An empty heap.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `item` due at `when`.
    pub fn push(&mut self, when: f64, item: T) {
        self.seq += 1;
        self.heap.push(Entry { when, seq: self.seq, item });
    }

    /// The earliest deadline.
    pub fn next_when(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.when)
    }

    /// The earliest item, if it is due at or before `now`.
    pub fn pop_due(&mut self, now: f64) -> Option<(f64, T)> {
        if self.heap.peek()?.when <= now {
            self.heap.pop().map(|e| (e.when, e.item))
        } else {
            None
        }
    }

    /// The earliest item, whatever its deadline.
    pub fn pop(&mut self) -> Option<(f64, T)> {
        self.heap.pop().map(|e| (e.when, e.item))
    }

    /// Peek at the earliest item.
    pub fn peek(&self) -> Option<&T> {
        self.heap.peek().map(|e| &e.item)
    }

    /// Keep only the items `keep` accepts (order is preserved).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.heap.retain(|e| keep(&e.item));
    }

    /// How many items are pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Every item, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|e| &e.item)
    }

    /// Remove every item.
    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// Take every item out, in no particular order.
    pub fn drain(&mut self) -> Vec<T> {
        self.heap.drain().map(|e| e.item).collect()
    }
}

/// A cheap clock for pacing decisions ("has this long passed since the
/// last poll?"), not for keeping time: the CPU's time-stamp counter on
/// x86-64 (one instruction, no vDSO call), the monotonic clock elsewhere.
/// Readings are ticks; `Pace::new` converts an interval into ticks once.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    interval: u64,
}

impl Pace {
    /// A pace of `interval` (calibrated against the monotonic clock the
    /// first time a process asks, in about 200 µs).
    pub fn new(interval: std::time::Duration) -> Self {
        let per_us = ticks_per_us();
        Pace { interval: (interval.as_nanos() as f64 * per_us / 1e3).max(1.0) as u64 }
    }

    /// The current reading.
    #[inline]
    pub fn now() -> u64 {
        ticks()
    }

    /// Whether `interval` has passed from reading `since` to reading `now`.
    /// A reading that went backwards (a counter not synchronised between
    /// CPUs) counts as passed.
    #[inline]
    pub fn passed(&self, since: u64, now: u64) -> bool {
        now.wrapping_sub(since) >= self.interval
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn ticks() -> u64 {
    // SAFETY: RDTSC exists on every x86-64 CPU and only reads a counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn ticks() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}

/// Ticks per microsecond, measured once.
fn ticks_per_us() -> f64 {
    static PER_US: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PER_US.get_or_init(|| {
        if cfg!(not(target_arch = "x86_64")) {
            return 1e3; // ticks are nanoseconds
        }
        let (t0, c0) = (std::time::Instant::now(), ticks());
        let mut el = t0.elapsed();
        while el < std::time::Duration::from_micros(200) {
            std::hint::spin_loop();
            el = t0.elapsed();
        }
        let per_us = ticks().wrapping_sub(c0) as f64 / (el.as_nanos() as f64 / 1e3);
        if per_us.is_finite() && per_us > 0.0 { per_us } else { 1e3 }
    })
}

/// The monotonic clock in seconds (`time.monotonic()`, `loop.time()`).
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
