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
//!   releases. The parent's [`ShmGuard::Own`] in the task releases it too
//!   when the task ends unread (cancelled, worker died).
//! - A result (worker → parent): the worker sends a descriptor with the
//!   frame (SCM_RIGHTS, so it survives the worker's death in flight). The
//!   supervisor maps it on receipt and keeps only the mapping
//!   ([`ShmGuard::Peer`]), not a descriptor, so unread results do not use
//!   up file descriptors. Decoding copies out, releases and unmaps; dropping
//!   an unread result does the release and unmap.
//!
//! **Bounds.** A pool keeps at most [`POOL_SEGMENTS`] segments and
//! [`POOL_BYTES`] bytes; when they are all busy, a worker sends a one-off
//! segment (its descriptor travels with the frame and is closed after), and
//! the parent falls back to a named `/dev/shm` file (`S` envelope, see
//! `plait._wire`), which costs no descriptor while the call waits in the
//! queue.
//!
//! **Fork.** A forked child must not write into its parent's segments: the
//! pool remembers its pid and a child discards what it inherited on first
//! use; the pool's lock is held across `fork()` so the child never sees it
//! mid-update.

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use plait_core::fork::ForkPrepare;
use plait_core::spin::SpinMutex;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

const MAGIC: u64 = u64::from_le_bytes(*b"plaitSHM");
/// Header size: data starts page-aligned.
const HEADER: usize = 4096;
const BUSY: u64 = 1;
/// Segments a process keeps for reuse (each holds one descriptor).
pub const POOL_SEGMENTS: usize = 8;
/// Bytes of data a process keeps for reuse; larger transfers are one-off.
pub const POOL_BYTES: usize = 64 << 20;
/// Segment sizes are rounded up to this, so similar sizes share segments.
const GRAIN: usize = 1 << 20;

/// `M` envelope head after the kind byte: pid u32, fd i32, serial u64,
/// generation u64, buffer count u32, then one u64 size per buffer.
const HEAD_FIXED: usize = 4 + 4 + 8 + 8 + 4;

fn io_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// A shared mapping of a whole segment (header and data).
pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; the header is only accessed
// through atomics and the data only under the BUSY protocol above.
unsafe impl Send for Mapping {}
// SAFETY: as for Send.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(fd: RawFd, len: usize, populate: bool) -> std::io::Result<Mapping> {
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a fresh shared mapping of `len` bytes of `fd`; the result
        // is checked, and the kernel picks the address.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io_err());
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        // SAFETY: the mapping is at least one header page long and
        // page-aligned, so words 0..3 are in bounds and 8-byte aligned;
        // AtomicU64 has the layout of u64.
        unsafe { &*(self.ptr.add(index * 8) as *const AtomicU64) }
    }

    fn magic(&self) -> u64 {
        self.word(0).load(Ordering::Acquire)
    }
    fn serial(&self) -> u64 {
        self.word(1).load(Ordering::Acquire)
    }
    fn state(&self) -> &AtomicU64 {
        self.word(2)
    }
    fn capacity(&self) -> usize {
        self.len - HEADER
    }
    fn data(&self) -> *mut u8 {
        // SAFETY: HEADER < len for every segment we map (checked on open).
        unsafe { self.ptr.add(HEADER) }
    }

    /// Release generation `gen` (see the module docs): `true` if this call
    /// did it.
    fn release(&self, gen: u64) -> bool {
        self.state().compare_exchange(gen << 1 | BUSY, gen << 1, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region `new` mapped, once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A segment this process owns.
pub(crate) struct Segment {
    fd: OwnedFd,
    map: Mapping,
}

impl Segment {
    fn create(capacity: usize, serial: u64) -> std::io::Result<Segment> {
        // SAFETY: a NUL-terminated name; the result is checked.
        let raw = unsafe { libc::memfd_create(c"plait".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io_err());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = HEADER + capacity;
        // SAFETY: resizing our own fresh memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io_err());
        }
        // Populated now, in one pass, rather than page by page on first copy.
        let map = Mapping::new(fd.as_raw_fd(), len, true)?;
        map.word(1).store(serial, Ordering::Relaxed);
        map.state().store(0, Ordering::Relaxed);
        map.word(0).store(MAGIC, Ordering::Release);
        Ok(Segment { fd, map })
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

struct Pool {
    pid: u32,
    segs: Vec<Arc<Segment>>,
    next_serial: u64,
}

static POOL: SpinMutex<Pool> = SpinMutex::new(Pool { pid: 0, segs: Vec::new(), next_serial: 1 });

struct PoolFork;
static POOL_FORK: PoolFork = PoolFork;

impl ForkPrepare for PoolFork {
    fn prepare(&self) {
        // Held across fork(): nobody holds it while blocking or copying.
        std::mem::forget(POOL.lock());
    }
    unsafe fn parent(&self) {
        // SAFETY: `prepare` locked it in this thread and leaked the guard.
        unsafe { POOL.force_unlock() };
    }
    unsafe fn child(&self) {
        // SAFETY: as in `parent`; the pid check discards the inherited
        // segments on first use.
        unsafe { POOL.force_unlock() };
    }
}

pub(crate) fn install() {
    plait_core::fork::register_prepared(&POOL_FORK);
}

fn round_up(n: usize) -> usize {
    n.max(1).div_ceil(GRAIN) * GRAIN
}

/// A segment with room for `total` bytes, marked BUSY with generation
/// `gen`, from the pool; `None` if the pool is full or `total` too large.
fn acquire(total: usize) -> std::io::Result<Option<(Arc<Segment>, u64, bool)>> {
    let mut pool = POOL.lock();
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
            return Ok(Some((Arc::clone(&pool.segs[i]), gen, true)));
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
    Ok(Some((seg, gen, true)))
}

/// A one-off segment, not kept in the pool.
fn one_off(total: usize) -> std::io::Result<(Arc<Segment>, u64, bool)> {
    let serial = {
        let mut pool = POOL.lock();
        pool.next_serial += 1;
        pool.next_serial
    };
    let seg = Arc::new(Segment::create(round_up(total), serial)?);
    let gen = seg.take().expect("a fresh segment is free");
    Ok((seg, gen, false))
}

/// Copy `len` bytes from `src` to `dst` without the interpreter.
///
/// # Safety
/// `src..src+len` must be readable and `dst..dst+len` writable for the
/// whole call, and not overlap.
unsafe fn copy_detached(py: Python<'_>, src: usize, dst: usize, len: usize) {
    py.detach(|| {
        // SAFETY: the caller's guarantee.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len) }
    });
}

/// `_shm_put(buffers, send_fd)`: copy the buffers (contiguous byte
/// buffers, e.g. `PickleBuffer.raw()`) into a segment of this process and
/// return `(head, fd)`: the `M` envelope's head, and, if `send_fd`, a
/// descriptor of the segment that the caller sends along and then closes
/// (else -1). `None` when the pool is exhausted and `send_fd` is false
/// (the caller then uses a named file).
#[pyfunction]
fn _shm_put(py: Python<'_>, buffers: &Bound<'_, PyList>, send_fd: bool) -> PyResult<Option<(Py<PyBytes>, i32)>> {
    let mut views: Vec<PyBuffer<u8>> = Vec::with_capacity(buffers.len());
    for b in buffers.iter() {
        let v = PyBuffer::<u8>::get(&b)?;
        if !v.is_c_contiguous() {
            return Err(PyValueError::new_err("shared-memory buffers must be contiguous"));
        }
        views.push(v);
    }
    let total: usize = views.iter().map(|v| v.len_bytes()).sum();
    let (seg, gen, pooled) = match acquire(total)? {
        Some(s) => s,
        None if send_fd => one_off(total)?,
        None => return Ok(None),
    };
    let mut offset = 0;
    for v in &views {
        let n = v.len_bytes();
        // SAFETY: the buffer stays exported (and so valid) while `v`
        // lives; the segment has `capacity >= total` bytes past `data()`,
        // and we hold it BUSY, so nobody else touches them.
        unsafe { copy_detached(py, v.buf_ptr() as usize, seg.map.data().add(offset) as usize, n) };
        offset += n;
    }
    // The head: the peer opens `/proc/<pid>/fd/<fd>` (a pooled segment of
    // the parent), or fd is -1 when the descriptor travels with the frame.
    let mut head = Vec::with_capacity(HEAD_FIXED + 8 * views.len());
    head.extend_from_slice(&std::process::id().to_le_bytes());
    head.extend_from_slice(&(if send_fd { -1 } else { seg.fd.as_raw_fd() }).to_le_bytes());
    head.extend_from_slice(&seg.map.serial().to_le_bytes());
    head.extend_from_slice(&gen.to_le_bytes());
    head.extend_from_slice(&(views.len() as u32).to_le_bytes());
    for v in &views {
        head.extend_from_slice(&(v.len_bytes() as u64).to_le_bytes());
    }
    let fd = if !send_fd {
        -1
    } else if pooled {
        // SAFETY: duplicating our own open descriptor; checked.
        let d = unsafe { libc::fcntl(seg.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if d < 0 {
            seg.map.release(gen);
            return Err(io_err().into());
        }
        d
    } else {
        // One-off: the caller's descriptor is the only one left once the
        // mapping goes with `seg`.
        match Arc::try_unwrap(seg) {
            Ok(s) => s.fd.into_raw_fd(),
            Err(_) => unreachable!("a one-off segment has one owner"),
        }
    };
    Ok(Some((PyBytes::new(py, &head).unbind(), fd)))
}

/// A parsed `M` head.
pub(crate) struct Head {
    pid: u32,
    fd: i32,
    serial: u64,
    gen: u64,
    sizes: Vec<usize>,
    /// Where the pickle stream starts in the envelope.
    stream_at: usize,
}

fn parse_head(env: &[u8]) -> Option<Head> {
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

fn lost(why: &str) -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err(format!("the shared-memory segment of this value is gone: {why}"))
}

/// Copy the buffers out of `map` into new bytes objects, then release the
/// segment (also when copying fails: nobody else will read it).
fn copy_out(py: Python<'_>, map: &Mapping, head: &Head) -> PyResult<Vec<Py<PyBytes>>> {
    let total = head.sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s));
    if map.magic() != MAGIC
        || map.serial() != head.serial
        || map.state().load(Ordering::Acquire) != head.gen << 1 | BUSY
        || total.is_none_or(|t| t > map.capacity())
    {
        return Err(lost("it was reused or is not a plait segment"));
    }
    let mut out = Vec::with_capacity(head.sizes.len());
    let mut offset = 0;
    let result = (|| -> PyResult<()> {
        for &size in &head.sizes {
            let b = PyBytes::new_with(py, size, |dst| {
                // SAFETY: `offset + size <= capacity` (checked above), the
                // segment stays BUSY (nobody rewrites it) until we release
                // it below, and `dst` is the new object's own storage,
                // which nobody else can see yet.
                unsafe { copy_detached(py, map.data().add(offset) as usize, dst.as_mut_ptr() as usize, size) };
                Ok(())
            })?;
            out.push(b.unbind());
            offset += size;
        }
        Ok(())
    })();
    map.release(head.gen);
    result.map(|()| out)
}

fn map_whole(fd: &OwnedFd) -> std::io::Result<Mapping> {
    // SAFETY: fstat into a zeroed stat buffer; checked.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open; `st` is a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io_err());
    }
    let len = st.st_size as usize;
    if len <= HEADER {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    Mapping::new(fd.as_raw_fd(), len, true)
}

/// `_shm_take(envelope)`: the buffers of an `M` envelope whose segment the
/// receiver opens through `/proc/<pid>/fd/<fd>` (a call, in a worker), as
/// `(list of bytes, offset of the pickle stream)`. Releases the segment.
#[pyfunction]
fn _shm_take(py: Python<'_>, envelope: &[u8]) -> PyResult<(Vec<Py<PyBytes>>, usize)> {
    let head = parse_head(envelope).ok_or_else(|| PyValueError::new_err("not a shared-memory envelope"))?;
    if head.fd < 0 {
        return Err(lost("its descriptor was not received"));
    }
    let path = format!("/proc/{}/fd/{}\0", head.pid, head.fd);
    let map = py
        .detach(|| {
            // SAFETY: a NUL-terminated path; the result is checked.
            let raw = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) };
            if raw < 0 {
                return Err(io_err());
            }
            // SAFETY: a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            map_whole(&fd)
        })
        .map_err(|e| lost(&format!("cannot open {}: {e}", path.trim_end_matches('\0'))))?;
    let bufs = copy_out(py, &map, &head)?;
    Ok((bufs, head.stream_at))
}

/// What keeps a message's segment from leaking, and gives it back when
/// the message is consumed or dropped unread.
pub(crate) enum ShmGuard {
    /// A named `/dev/shm` file (`S` envelope): unlinked on drop (a no-op
    /// once the receiver unlinked it).
    Named(PathBuf),
    /// Our own pooled segment lent to a worker (a call): released on drop
    /// if the worker has not already done so.
    Own(Arc<Segment>, u64),
    /// A worker's segment, mapped on receipt (a result); `None` once
    /// consumed, or if its descriptor never arrived.
    Peer(Mutex<Option<(Mapping, Head)>>),
}

impl ShmGuard {
    /// The guard for an envelope this process made (a call), if it names a
    /// segment.
    pub(crate) fn of(envelope: &[u8]) -> Option<Arc<ShmGuard>> {
        if let Some(head) = parse_head(envelope) {
            if head.pid != std::process::id() {
                return None;
            }
            let pool = POOL.lock();
            let seg = pool.segs.iter().find(|s| s.map.serial() == head.serial)?;
            return Some(Arc::new(ShmGuard::Own(Arc::clone(seg), head.gen)));
        }
        named(envelope).map(|p| Arc::new(ShmGuard::Named(p)))
    }

    /// The guard for an envelope a worker sent, taking the descriptor that
    /// came with it from `fds` (in arrival order). A descriptor that is not
    /// this envelope's belongs to a later frame (this one's was lost, e.g.
    /// to a full descriptor table) and stays queued.
    pub(crate) fn received(envelope: &[u8], fds: &mut std::collections::VecDeque<OwnedFd>) -> Option<Arc<ShmGuard>> {
        let Some(head) = parse_head(envelope) else {
            return named(envelope).map(|p| Arc::new(ShmGuard::Named(p)));
        };
        let mut mapped = None;
        if let Some(fd) = fds.front() {
            let mut hdr = [0u8; 24];
            // SAFETY: reading 24 bytes into a local buffer from an open fd.
            let n = unsafe { libc::pread(fd.as_raw_fd(), hdr.as_mut_ptr().cast(), 24, 0) };
            let serial = u64::from_le_bytes(hdr[8..16].try_into().expect("8 bytes"));
            let state = u64::from_le_bytes(hdr[16..24].try_into().expect("8 bytes"));
            if n == 24 && serial == head.serial && state == head.gen << 1 | BUSY {
                let fd = fds.pop_front().expect("front exists");
                mapped = map_whole(&fd).ok().map(|m| (m, head));
            }
        }
        Some(Arc::new(ShmGuard::Peer(Mutex::new(mapped))))
    }

    /// The file name, for a named segment.
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        match self {
            ShmGuard::Named(p) => Some(p),
            _ => None,
        }
    }

    /// The buffers of a received value, as `_shm_take` returns them; the
    /// segment is released and unmapped.
    pub(crate) fn take(&self, py: Python<'_>) -> PyResult<Option<(Vec<Py<PyBytes>>, usize)>> {
        let ShmGuard::Peer(slot) = self else {
            return Ok(None);
        };
        let Some((map, head)) = slot.lock().take() else {
            return Err(lost("its descriptor never arrived from the worker"));
        };
        let bufs = copy_out(py, &map, &head)?;
        Ok(Some((bufs, head.stream_at)))
    }
}

/// The path an `S` envelope names, if it is one of ours.
fn named(envelope: &[u8]) -> Option<PathBuf> {
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

impl Drop for ShmGuard {
    fn drop(&mut self) {
        match self {
            ShmGuard::Named(p) => {
                let _ = std::fs::remove_file(p);
            }
            ShmGuard::Own(seg, gen) => {
                seg.map.release(*gen);
            }
            ShmGuard::Peer(slot) => {
                if let Some((map, head)) = slot.get_mut().take() {
                    map.release(head.gen);
                }
            }
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    install();
    m.add_function(wrap_pyfunction!(_shm_put, m)?)?;
    m.add_function(wrap_pyfunction!(_shm_take, m)?)?;
    Ok(())
}
