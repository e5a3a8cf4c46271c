//! Shared-memory segments for the large buffers of process-pool calls and
//! results (`plait._wire`'s `M` envelope), recycled by the process that
//! owns them.
//!
//! **Why.** A fresh tmpfs file per transfer costs page allocation, zeroing
//! and freeing on every call, on top of the copies: for 10 MiB that was most
//! of a round trip. Here each process keeps a small pool of `memfd`
//! segments, each mapped once; a sender copies into an already-faulted
//! mapping, the receiver copies out, and the pages are reused by the next
//! transfer. No segment ever has a name, so nothing can be left behind in
//! `/dev/shm` by anyone, even a SIGKILLed parent: the kernel frees a memfd
//! with its last descriptor or mapping.
//!
//! **Layout.** One page of header (`magic`, `serial`, `state`), then the
//! data. `state` is `generation << 1 | BUSY`. Only the owner sets BUSY
//! (taking a free segment, with the next generation); anyone who is done
//! with the data — the receiver after copying out, or a guard whose message
//! nobody will read — releases it with a compare-and-swap from exactly
//! `(generation << 1) | BUSY` to `generation << 1`. A release for an older
//! generation therefore fails harmlessly, and a segment is never rewritten
//! while a reader of the current generation may still need it.
//!
//! **How the receiver finds it.**
//! - A call (parent → worker): the segment is the parent's; the worker opens
//!   `/proc/<parent>/fd/<fd>` (the parent is alive while its worker runs:
//!   workers die with it), checks magic, serial and generation, copies out,
//!   releases. The parent's guard in the task (`ShmGuard::Own` in the
//!   binding, from [`SegmentPool::find`]) releases it too when the task
//!   ends unread (cancelled, worker died).
//! - A result (worker → parent): the worker sends a descriptor with the
//!   frame (SCM_RIGHTS, so it survives the worker's death in flight). The
//!   supervisor maps it on receipt ([`Mapping::received`]) and keeps only
//!   the mapping (the binding's `ShmGuard::Peer`), not a descriptor, so
//!   unread results do not use up file descriptors. Decoding copies out,
//!   releases and unmaps; dropping an unread result does the release and
//!   unmap.
//!
//! **Bounds.** A pool keeps at most [`POOL_SEGMENTS`] segments and
//! [`POOL_BYTES`] bytes; when they are all busy, a worker sends a one-off
//! segment ([`SegmentPool::one_off`]: its descriptor travels with the
//! frame and is closed after), and the parent falls back to a named
//! `/dev/shm` file (`S` envelope, see `plait._wire` and [`named_path`]),
//! which costs no descriptor while the call waits in the queue.
//!
//! **Fork.** A forked child must not write into its parent's segments: the
//! pool remembers its pid and a child discards what it inherited on first
//! use; the process's pool ([`pool`]) has its lock held across `fork()`
//! (after [`install`]) so the child never sees it mid-update.
//!
//! This is the pure-Rust half; copying into and out of Python objects, off
//! the interpreter, is the binding's (`plait-py/src/process/shm.rs`).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::fd::{errno, memfd};
use super::mapping::SharedMap;
use crate::fork::ForkPrepare;
use crate::spin::SpinMutex;

const MAGIC: u64 = u64::from_le_bytes(*b"plaitSHM");
/// Header size: data starts page-aligned.
pub const HEADER: usize = 4096;
const BUSY: u64 = 1;
/// Segments a process keeps for reuse (each holds one descriptor).
pub const POOL_SEGMENTS: usize = 8;
/// Bytes of data a process keeps for reuse; larger transfers are one-off.
pub const POOL_BYTES: usize = 64 << 20;
/// Segment sizes are rounded up to this, so similar sizes share segments.
pub const GRAIN: usize = 1 << 20;

/// `M` envelope head after the kind byte: pid u32, fd i32, serial u64,
/// generation u64, buffer count u32, then one u64 size per buffer.
const HEAD_FIXED: usize = 4 + 4 + 8 + 8 + 4;

/// A shared mapping of a whole segment (header and data), in the process
/// that owns it or in a peer.
///
/// `Send + Sync`: the header is only accessed through atomics and the data
/// only under the BUSY protocol above.
pub struct Mapping {
    map: SharedMap,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, populate: bool) -> io::Result<Mapping> {
        Ok(Mapping { map: SharedMap::new(fd, len, populate)? })
    }

    /// Map the whole segment behind `fd` (received from its owner).
    pub fn open(fd: &OwnedFd) -> io::Result<Mapping> {
        let map = SharedMap::whole(fd)?;
        if map.len() <= HEADER {
            return Err(io::ErrorKind::InvalidData.into());
        }
        Ok(Mapping { map })
    }

    /// Map the segment another process (`pid`, alive) holds as descriptor
    /// `fd`, through `/proc/<pid>/fd/<fd>`.
    pub fn open_proc(pid: u32, fd: i32) -> io::Result<Mapping> {
        let path = format!("/proc/{pid}/fd/{fd}\0");
        // SAFETY: a NUL-terminated path; the result is checked.
        let raw = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(errno());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Mapping::open(&fd)
    }

    /// The mapping of the descriptor a worker sent with the envelope whose
    /// head is `head`, taken from `fds` (in arrival order). A descriptor
    /// that is not this envelope's belongs to a later frame (this one's
    /// was lost, e.g. to a full descriptor table) and stays queued.
    pub fn received(head: &Head, fds: &mut VecDeque<OwnedFd>) -> Option<Mapping> {
        let fd = fds.front()?;
        let mut hdr = [0u8; 24];
        // SAFETY: reading 24 bytes into a local buffer from an open fd.
        let n = unsafe { libc::pread(fd.as_raw_fd(), hdr.as_mut_ptr().cast(), 24, 0) };
        let serial = u64::from_le_bytes(hdr[8..16].try_into().expect("8 bytes"));
        let state = u64::from_le_bytes(hdr[16..24].try_into().expect("8 bytes"));
        if n == 24 && serial == head.serial && state == head.gen << 1 | BUSY {
            let fd = fds.pop_front().expect("front exists");
            return Mapping::open(&fd).ok();
        }
        None
    }

    #[inline]
    fn word(&self, index: usize) -> &AtomicU64 {
        debug_assert!(index < 3);
        // SAFETY: the mapping is at least one header page long and
        // page-aligned, so words 0..3 are in bounds and 8-byte aligned;
        // AtomicU64 has the layout of u64, and every process accesses the
        // header words only atomically.
        unsafe { &*(self.map.as_ptr().add(index * 8) as *const AtomicU64) }
    }

    fn magic(&self) -> u64 {
        self.word(0).load(Ordering::Acquire)
    }

    /// The segment's serial (unique among its owner's segments).
    pub fn serial(&self) -> u64 {
        self.word(1).load(Ordering::Acquire)
    }

    fn state(&self) -> &AtomicU64 {
        self.word(2)
    }

    /// Bytes of data after the header.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.map.len() - HEADER
    }

    /// The first data byte: [`capacity`](Self::capacity) bytes follow. Only
    /// the holder of the BUSY generation may write them, and readers read
    /// them only while that generation stands.
    #[inline]
    pub fn data(&self) -> *mut u8 {
        // SAFETY: HEADER < len for every segment we map (checked on open
        // and at creation), so this stays inside the mapping.
        unsafe { self.map.as_ptr().add(HEADER) }
    }

    /// Release generation `gen` (see the module docs): `true` if this call
    /// did it; a stale or repeated release fails harmlessly.
    #[inline]
    pub fn release(&self, gen: u64) -> bool {
        self.state().compare_exchange(gen << 1 | BUSY, gen << 1, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Whether this mapping holds what `head` describes, still unreleased:
    /// a plait segment with its serial, BUSY in its generation, and room
    /// for all its buffers. `Err` says why not.
    pub fn check(&self, head: &Head) -> Result<(), &'static str> {
        let total = head.sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s));
        if self.magic() != MAGIC
            || self.serial() != head.serial
            || self.state().load(Ordering::Acquire) != head.gen << 1 | BUSY
            || total.is_none_or(|t| t > self.capacity())
        {
            return Err("it was reused or is not a plait segment");
        }
        Ok(())
    }
}

/// A segment this process owns.
pub struct Segment {
    fd: OwnedFd,
    map: Mapping,
}

impl Segment {
    fn create(capacity: usize, serial: u64) -> io::Result<Segment> {
        let len = HEADER + capacity;
        let fd = memfd(c"plait", len)?;
        // Populated now, in one pass, rather than page by page on first copy.
        let map = Mapping::new(fd.as_raw_fd(), len, true)?;
        map.word(1).store(serial, Ordering::Relaxed);
        map.state().store(0, Ordering::Relaxed);
        map.word(0).store(MAGIC, Ordering::Release);
        Ok(Segment { fd, map })
    }

    /// Its mapping in this process.
    #[inline]
    pub fn map(&self) -> &Mapping {
        &self.map
    }

    /// Its descriptor in this process.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Release generation `gen` (see [`Mapping::release`]).
    #[inline]
    pub fn release(&self, gen: u64) -> bool {
        self.map.release(gen)
    }

    fn is_free(&self) -> bool {
        self.map.state().load(Ordering::Acquire) & BUSY == 0
    }

    /// Take a free segment: its new generation, or None if it is busy.
    fn take(&self) -> Option<u64> {
        let s = self.map.state().load(Ordering::Acquire);
        if s & BUSY != 0 {
            return None;
        }
        let gen = (s >> 1) + 1;
        self.map.state().compare_exchange(s, gen << 1 | BUSY, Ordering::AcqRel, Ordering::Relaxed).ok().map(|_| gen)
    }
}

/// A segment taken BUSY for one transfer: the sender writes the data,
/// then hands out [`head`](Self::head) (and maybe [`into_fd`](Self::into_fd)).
/// Dropping it does not release: the reader (or the guard of an unread
/// message) does.
pub struct Lease {
    seg: Arc<Segment>,
    gen: u64,
    pooled: bool,
}

impl Lease {
    /// The segment.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// The generation this lease holds BUSY.
    pub fn generation(&self) -> u64 {
        self.gen
    }

    /// Whether the segment stays in the pool (else it is one-off).
    pub fn is_pooled(&self) -> bool {
        self.pooled
    }

    /// The `M` envelope's head (without its kind byte) for buffers of
    /// `sizes` laid end to end in the data. The peer opens
    /// `/proc/<pid>/fd/<fd>`, or, with `send_fd`, fd is -1: the descriptor
    /// travels with the frame.
    pub fn head(&self, sizes: &[usize], send_fd: bool) -> Vec<u8> {
        let mut head = Vec::with_capacity(HEAD_FIXED + 8 * sizes.len());
        head.extend_from_slice(&std::process::id().to_le_bytes());
        head.extend_from_slice(&(if send_fd { -1 } else { self.seg.fd() }).to_le_bytes());
        head.extend_from_slice(&self.seg.map.serial().to_le_bytes());
        head.extend_from_slice(&self.gen.to_le_bytes());
        head.extend_from_slice(&(sizes.len() as u32).to_le_bytes());
        for &n in sizes {
            head.extend_from_slice(&(n as u64).to_le_bytes());
        }
        head
    }

    /// A descriptor of the segment to send along with the frame: a
    /// duplicate for a pooled segment (released again if that fails), the
    /// only one left for a one-off (its mapping here goes with the lease).
    pub fn into_fd(self) -> io::Result<OwnedFd> {
        if self.pooled {
            // SAFETY: duplicating our own open descriptor; checked.
            let d = unsafe { libc::fcntl(self.seg.fd(), libc::F_DUPFD_CLOEXEC, 0) };
            if d < 0 {
                let e = errno();
                self.seg.release(self.gen);
                return Err(e);
            }
            // SAFETY: a fresh duplicate that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(d) });
        }
        match Arc::try_unwrap(self.seg) {
            Ok(s) => Ok(s.fd),
            Err(_) => unreachable!("a one-off segment has one owner"),
        }
    }
}

struct PoolState {
    pid: u32,
    segs: Vec<Arc<Segment>>,
    next_serial: u64,
}

/// A process's segments kept for reuse, within [`POOL_SEGMENTS`] and
/// [`POOL_BYTES`]. The process has one ([`pool`]); tests make their own.
pub struct SegmentPool {
    state: SpinMutex<PoolState>,
}

impl Default for SegmentPool {
    fn default() -> Self {
        SegmentPool::new()
    }
}

fn round_up(n: usize) -> usize {
    n.max(1).div_ceil(GRAIN) * GRAIN
}

impl SegmentPool {
    /// An empty pool.
    pub const fn new() -> SegmentPool {
        SegmentPool { state: SpinMutex::new(PoolState { pid: 0, segs: Vec::new(), next_serial: 1 }) }
    }

    /// A segment with room for `total` bytes, taken BUSY with a new
    /// generation: the smallest free one that fits, else a new one,
    /// dropping free ones (smallest first) to stay within the bounds.
    /// `None` if the pool is full of busy segments or `total` is too large.
    pub fn lease(&self, total: usize) -> io::Result<Option<Lease>> {
        let mut pool = self.state.lock();
        let pid = std::process::id();
        if pool.pid != pid {
            // A forked child (or first use): what we inherited is the parent's.
            pool.segs.clear();
            pool.pid = pid;
        }
        // The smallest free segment that fits.
        let mut best: Option<usize> = None;
        for (i, s) in pool.segs.iter().enumerate() {
            if s.map.capacity() >= total && s.is_free() && best.is_none_or(|b| pool.segs[b].map.capacity() > s.map.capacity()) {
                best = Some(i);
            }
        }
        if let Some(i) = best {
            if let Some(gen) = pool.segs[i].take() {
                return Ok(Some(Lease { seg: Arc::clone(&pool.segs[i]), gen, pooled: true }));
            }
        }
        let serial = pool.next_serial;
        pool.next_serial += 1;
        let cap = round_up(total);
        if cap > POOL_BYTES {
            return Ok(None);
        }
        // Make room: drop free segments (smallest first) until the new one fits
        // the budget.
        loop {
            let used: usize = pool.segs.iter().map(|s| s.map.capacity()).sum();
            if pool.segs.len() < POOL_SEGMENTS && used + cap <= POOL_BYTES {
                break;
            }
            let victim = pool.segs.iter().enumerate().filter(|(_, s)| s.is_free()).min_by_key(|(_, s)| s.map.capacity()).map(|(i, _)| i);
            match victim {
                Some(i) => drop(pool.segs.swap_remove(i)),
                None => return Ok(None),
            }
        }
        let seg = Arc::new(Segment::create(cap, serial)?);
        let gen = seg.take().expect("a fresh segment is free");
        pool.segs.push(Arc::clone(&seg));
        Ok(Some(Lease { seg, gen, pooled: true }))
    }

    /// A one-off segment for `total` bytes, not kept in the pool.
    pub fn one_off(&self, total: usize) -> io::Result<Lease> {
        let serial = {
            let mut pool = self.state.lock();
            pool.next_serial += 1;
            pool.next_serial
        };
        let seg = Arc::new(Segment::create(round_up(total), serial)?);
        let gen = seg.take().expect("a fresh segment is free");
        Ok(Lease { seg, gen, pooled: false })
    }

    /// The pooled segment an envelope this process made names, if any.
    pub fn find(&self, head: &Head) -> Option<Arc<Segment>> {
        if head.pid != std::process::id() {
            return None;
        }
        let pool = self.state.lock();
        pool.segs.iter().find(|s| s.map.serial() == head.serial).cloned()
    }

    /// How many segments the pool keeps now.
    pub fn segments(&self) -> usize {
        self.state.lock().segs.len()
    }
}

static POOL: SegmentPool = SegmentPool::new();

/// This process's segment pool.
#[inline]
pub fn pool() -> &'static SegmentPool {
    &POOL
}

struct PoolFork;
static POOL_FORK: PoolFork = PoolFork;

impl ForkPrepare for PoolFork {
    fn prepare(&self) {
        // Held across fork(): nobody holds it while blocking or copying.
        std::mem::forget(POOL.state.lock());
    }
    unsafe fn parent(&self) {
        // SAFETY: `prepare` locked it in this thread and leaked the guard.
        unsafe { POOL.state.force_unlock() };
    }
    unsafe fn child(&self) {
        // SAFETY: as in `parent`; the pid check discards the inherited
        // segments on first use.
        unsafe { POOL.state.force_unlock() };
    }
}

/// Hold [`pool`]'s lock across `fork()` (registers with `crate::fork`).
/// Call once per process, before any fork that matters.
pub fn install() {
    crate::fork::register_prepared(&POOL_FORK);
}

/// A parsed `M` envelope head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The process that owns the segment.
    pub pid: u32,
    /// Its descriptor there, or -1 when it travels with the frame.
    pub fd: i32,
    /// The segment's serial.
    pub serial: u64,
    /// The generation the sender took.
    pub gen: u64,
    /// The buffers' sizes, laid end to end in the data.
    pub sizes: Vec<usize>,
    /// Where the pickle stream starts in the envelope.
    pub stream_at: usize,
}

impl Head {
    /// The head of envelope `env` (kind byte `M` first), or `None` if it is
    /// not one or is truncated.
    pub fn parse(env: &[u8]) -> Option<Head> {
        if env.first() != Some(&b'M') || env.len() < 1 + HEAD_FIXED {
            return None;
        }
        let h = &env[1..];
        let pid = u32::from_le_bytes(h[0..4].try_into().ok()?);
        let fd = i32::from_le_bytes(h[4..8].try_into().ok()?);
        let serial = u64::from_le_bytes(h[8..16].try_into().ok()?);
        let gen = u64::from_le_bytes(h[16..24].try_into().ok()?);
        let n = u32::from_le_bytes(h[24..28].try_into().ok()?) as usize;
        let sizes_end = HEAD_FIXED.checked_add(n.checked_mul(8)?)?;
        let raw = h.get(HEAD_FIXED..sizes_end)?;
        let sizes = raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as usize).collect();
        Some(Head { pid, fd, serial, gen, sizes, stream_at: 1 + sizes_end })
    }
}

/// The path an `S` envelope names, if it is one of ours (a `plait-*` file
/// in `/dev/shm`).
pub fn named_path(envelope: &[u8]) -> Option<PathBuf> {
    if envelope.first() != Some(&b'S') || envelope.len() < 3 {
        return None;
    }
    let n = u16::from_le_bytes([envelope[1], envelope[2]]) as usize;
    let name = envelope.get(3..3 + n)?;
    let path = PathBuf::from(std::str::from_utf8(name).ok()?);
    // Only our own segments.
    if !path.starts_with("/dev/shm") || !path.file_name()?.to_str()?.starts_with("plait-") {
        return None;
    }
    Some(path)
}
