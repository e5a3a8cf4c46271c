//! [`SharedCounter`]: a `u32` in a one-page memfd mapping, shared by every
//! process that holds the descriptor: a `Queue`'s item count, and the
//! bound a `maxsize` queue waits on with a process-shared futex. A memfd
//! (unlike an anonymous shared mapping) reaches spawned children: its
//! descriptor is passed like the sockets'.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::fd::memfd;
use super::mapping::{futex_wait, futex_wake, SharedMap};
use crate::park::{Outcome, WaitCtx};

const PAGE: usize = 4096;

/// A `u32` counter in a shared one-page memfd mapping, usable from every
/// process that holds the descriptor, with a futex to wait for room.
pub struct SharedCounter {
    fd: OwnedFd,
    map: SharedMap,
}

impl SharedCounter {
    /// A fresh counter at zero.
    pub fn new() -> io::Result<SharedCounter> {
        Self::from_fd(memfd(c"plait-queue-count", PAGE)?)
    }

    /// Map an existing counter's descriptor (received from another process).
    pub fn from_fd(fd: OwnedFd) -> io::Result<SharedCounter> {
        let map = SharedMap::new(fd.as_raw_fd(), PAGE, false)?;
        Ok(SharedCounter { fd, map })
    }

    /// The backing descriptor, to pass to another process.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    #[inline]
    fn atom(&self) -> &AtomicU32 {
        // SAFETY: the mapping is a live, page-aligned page that lives as
        // long as `self`, and the word is only accessed atomically (here
        // and in every other process that maps it).
        unsafe { &*(self.map.as_ptr() as *const AtomicU32) }
    }

    /// The current count.
    #[inline]
    pub fn get(&self) -> u32 {
        self.atom().load(Ordering::Acquire)
    }

    /// Add one unconditionally.
    #[inline]
    pub fn incr(&self) {
        self.atom().fetch_add(1, Ordering::AcqRel);
    }

    /// Add one if the count is below `max`.
    #[inline]
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
            futex_wait(self.atom(), seen, Some(left));
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
    #[inline]
    pub fn decr(&self, wake: bool) {
        let _ = self.atom().fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| Some(c.saturating_sub(1)));
        if wake {
            futex_wake(self.atom(), 1);
        }
    }
}
