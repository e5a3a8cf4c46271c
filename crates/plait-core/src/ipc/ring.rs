//! A multi-producer, multi-consumer byte ring in shared memory: the fast
//! path of `plait.process.Queue`.
//!
//! A socket costs a system call per item on each side (≈1 µs each here);
//! the ring costs a memcpy under a process-shared futex lock, and a system
//! call only to wake a sleeping reader or writer. The mapping is a memfd,
//! so spawned children get it the way they get a socket: by descriptor.
//!
//! Layout: a 4 KiB header page, then [`RING_BYTES`] of records. A record is
//! an 8-byte header (`u32` length, `u32` kind) and the payload padded to 8
//! bytes; records never wrap: one that does not fit before the end is
//! preceded by a `SKIP` record covering the tail. `head` and `tail` are
//! byte positions that only grow; both change only under the lock.
//!
//! Waiting: readers bump `readers_waiting`, read `data_seq`, re-check, and
//! `FUTEX_WAIT` on `data_seq`; a writer bumps `data_seq` after publishing
//! and wakes one reader if any wait (all `SeqCst`, so one of the two sides
//! sees the other). Writers waiting for room do the same on `space_seq`.
//!
//! A process killed while holding the lock (a memcpy of at most
//! [`MAX_RECORD`] bytes) leaves the queue locked, as a process killed
//! holding `multiprocessing.Queue`'s locks does.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use super::fd::memfd;
use super::mapping::{futex_wait, futex_wake, SharedMap};
use crate::park::{Outcome, WaitCtx, SPIN};

/// Bytes of record space.
pub const RING_BYTES: usize = 1 << 20;
/// Largest payload stored in the ring; larger ones go by socket and memfd.
pub const MAX_RECORD: usize = 64 * 1024;
const HEADER: usize = 4096;

/// Record kinds.
pub const KIND_DATA: u32 = 0;
/// "Take one packet from the socket": a large message's place in line.
pub const KIND_MARKER: u32 = 1;
const KIND_SKIP: u32 = 2;

#[repr(C)]
struct Shared {
    lock: AtomicU32,
    data_seq: AtomicU32,
    space_seq: AtomicU32,
    readers_waiting: AtomicU32,
    writers_waiting: AtomicU32,
    _pad: u32,
    head: AtomicU64,
    tail: AtomicU64,
}

/// The shared ring (one mapping per process).
///
/// `Send + Sync` through [`SharedMap`]: the header is reached through
/// atomics and the records only under the ring's lock.
pub struct Ring {
    fd: OwnedFd,
    map: SharedMap,
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

impl Ring {
    /// A fresh, empty ring (new memfd pages read as zero, which is the
    /// empty, unlocked state).
    pub fn new() -> io::Result<Ring> {
        Self::from_fd(memfd(c"plait-queue-ring", HEADER + RING_BYTES)?)
    }

    /// Map a ring received from another process.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Ring> {
        let map = SharedMap::new(fd.as_raw_fd(), HEADER + RING_BYTES, false)?;
        Ok(Ring { fd, map })
    }

    /// The backing descriptor, to pass to another process.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn sh(&self) -> &Shared {
        // SAFETY: the header page starts the live, page-aligned mapping and
        // is only accessed through atomics (in every process that maps it).
        unsafe { &*(self.map.as_ptr() as *const Shared) }
    }

    /// Whether no record is waiting (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.sh().head.load(Acquire) == self.sh().tail.load(Acquire)
    }

    /// Take the lock if it is free within a short spin.
    pub fn try_lock(&self) -> Option<RingGuard<'_>> {
        for _ in 0..200 {
            if self.sh().lock.compare_exchange(0, 1, Acquire, Relaxed).is_ok() {
                return Some(RingGuard { ring: self, pushed: false, popped: false });
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Take the lock, sleeping on the futex if need be (never attached).
    pub fn lock(&self) -> RingGuard<'_> {
        if let Some(g) = self.try_lock() {
            return g;
        }
        let l = &self.sh().lock;
        while l.swap(2, Acquire) != 0 {
            futex_wait(l, 2, None);
        }
        RingGuard { ring: self, pushed: false, popped: false }
    }

    fn wait_on(&self, seq: &AtomicU32, waiting: &AtomicU32, ready: impl Fn() -> bool, ctx: &WaitCtx<'_>) -> Outcome {
        if ctx.spin {
            let end = Instant::now() + SPIN;
            while Instant::now() < end {
                if ready() {
                    return Outcome::Notified;
                }
                std::hint::spin_loop();
            }
        }
        loop {
            waiting.fetch_add(1, SeqCst);
            let seen = seq.load(SeqCst);
            if ready() {
                waiting.fetch_sub(1, SeqCst);
                return Outcome::Notified;
            }
            let now = Instant::now();
            let mut left = match ctx.deadline {
                Some(d) if d <= now => {
                    waiting.fetch_sub(1, SeqCst);
                    return Outcome::TimedOut;
                }
                Some(d) => d - now,
                None => Duration::from_secs(3600),
            };
            if ctx.interrupt.is_some() {
                left = left.min(ctx.slice);
            }
            futex_wait(seq, seen, Some(left));
            waiting.fetch_sub(1, SeqCst);
            if ready() {
                return Outcome::Notified;
            }
            if ctx.interrupted() {
                return Outcome::Interrupted;
            }
            if ctx.expired() {
                return Outcome::TimedOut;
            }
        }
    }

    /// Wait until a record may be waiting.
    pub fn wait_data(&self, ctx: &WaitCtx<'_>) -> Outcome {
        let sh = self.sh();
        self.wait_on(&sh.data_seq, &sh.readers_waiting, || !self.is_empty(), ctx)
    }

    /// Wait until a record of `payload` bytes may fit.
    pub fn wait_space(&self, payload: usize, ctx: &WaitCtx<'_>) -> Outcome {
        let sh = self.sh();
        let need = 2 * (8 + align8(payload));
        let fits = || {
            let used = sh.tail.load(Acquire) - sh.head.load(Acquire);
            RING_BYTES - used as usize >= need
        };
        self.wait_on(&sh.space_seq, &sh.writers_waiting, fits, ctx)
    }
}

/// The ring's lock, held. Dropping it unlocks and wakes whoever waits for
/// what this holder pushed or popped.
pub struct RingGuard<'a> {
    ring: &'a Ring,
    pushed: bool,
    popped: bool,
}

impl RingGuard<'_> {
    fn data(&self, pos: usize) -> *mut u8 {
        debug_assert!(pos < RING_BYTES);
        // SAFETY: `pos` is inside the record area of the live mapping.
        unsafe { self.ring.map.as_ptr().add(HEADER + pos) }
    }

    /// Whether a record of `len` payload bytes fits now.
    pub fn fits(&self, len: usize) -> bool {
        let sh = self.ring.sh();
        let (head, tail) = (sh.head.load(Relaxed), sh.tail.load(Relaxed));
        let rec = 8 + align8(len);
        let pos = (tail as usize) % RING_BYTES;
        let to_end = RING_BYTES - pos;
        let need = if rec <= to_end { rec } else { to_end + rec };
        (tail - head) as usize + need <= RING_BYTES
    }

    /// Append a record; `false` when it does not fit.
    pub fn push(&mut self, kind: u32, payload: &[u8]) -> bool {
        assert!(payload.len() <= MAX_RECORD);
        if !self.fits(payload.len()) {
            return false;
        }
        let sh = self.ring.sh();
        let mut tail = sh.tail.load(Relaxed);
        let rec = 8 + align8(payload.len());
        let pos = (tail as usize) % RING_BYTES;
        let to_end = RING_BYTES - pos;
        let mut at = pos;
        if rec > to_end {
            self.write_header(pos, (to_end - 8) as u32, KIND_SKIP);
            tail += to_end as u64;
            at = 0;
        }
        self.write_header(at, payload.len() as u32, kind);
        // SAFETY: the record fits between `at + 8` and the end of the area
        // (checked by `fits`), and the lock gives us the bytes exclusively.
        unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), self.data(at + 8), payload.len()) };
        sh.tail.store(tail + rec as u64, Release);
        self.pushed = true;
        true
    }

    fn write_header(&self, pos: usize, len: u32, kind: u32) {
        let h = (len as u64) | ((kind as u64) << 32);
        // SAFETY: `pos` is 8-aligned with at least 8 bytes to the end.
        unsafe { std::ptr::write(self.data(pos).cast::<u64>(), h) };
    }

    fn read_header(&self, pos: usize) -> (usize, u32) {
        // SAFETY: as in write_header; a record header lives there.
        let h = unsafe { std::ptr::read(self.data(pos).cast::<u64>()) };
        ((h & 0xffff_ffff) as usize, (h >> 32) as u32)
    }

    /// Remove the oldest record, handing `f` its kind and payload.
    pub fn pop<R>(&mut self, f: impl FnOnce(u32, &[u8]) -> R) -> Option<R> {
        let sh = self.ring.sh();
        let mut head = sh.head.load(Relaxed);
        let tail = sh.tail.load(Relaxed);
        if head == tail {
            return None;
        }
        let mut pos = (head as usize) % RING_BYTES;
        let (mut len, mut kind) = self.read_header(pos);
        if kind == KIND_SKIP {
            head += (RING_BYTES - pos) as u64;
            pos = 0;
            (len, kind) = self.read_header(0);
        }
        // SAFETY: the record's payload was written by push within the area.
        let payload = unsafe { std::slice::from_raw_parts(self.data(pos + 8), len) };
        let r = f(kind, payload);
        sh.head.store(head + (8 + align8(len)) as u64, Release);
        self.popped = true;
        Some(r)
    }
}

impl Drop for RingGuard<'_> {
    fn drop(&mut self) {
        let sh = self.ring.sh();
        if sh.lock.swap(0, Release) == 2 {
            futex_wake(&sh.lock, 1);
        }
        if self.pushed {
            sh.data_seq.fetch_add(1, SeqCst);
            if sh.readers_waiting.load(SeqCst) > 0 {
                futex_wake(&sh.data_seq, 1);
            }
        }
        if self.popped {
            sh.space_seq.fetch_add(1, SeqCst);
            if sh.writers_waiting.load(SeqCst) > 0 {
                futex_wake(&sh.space_seq, i32::MAX);
            }
        }
    }
}
