//! Shared mappings of memfds, and process-shared futexes on their words.
//!
//! The ring, the shared counter and the shared-memory segments all live in
//! a memfd mapped `MAP_SHARED`: unlike an anonymous shared mapping, a memfd
//! reaches a spawned child the way a socket does, by descriptor. This file
//! is the one place that maps, unmaps and sleeps on such memory.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use super::fd::errno;

/// A read/write `MAP_SHARED` mapping, unmapped on drop.
#[derive(Debug)]
pub struct SharedMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by the value; what is
// stored in it, and how it is synchronised, is up to its user (atomics or
// a protocol of its own, see ring.rs and shm.rs).
unsafe impl Send for SharedMap {}
// SAFETY: as for Send: `SharedMap` itself hands out only raw pointers.
unsafe impl Sync for SharedMap {}

impl SharedMap {
    /// Map `len` bytes of `fd` from offset 0, shared, read/write;
    /// `populate`: fault every page in now (one pass) rather than on first
    /// touch.
    pub fn new(fd: RawFd, len: usize, populate: bool) -> io::Result<SharedMap> {
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a fresh shared mapping of `len` bytes of `fd`; the result
        // is checked, and the kernel picks the address.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(errno());
        }
        Ok(SharedMap { ptr: ptr.cast(), len })
    }

    /// Map the whole of `fd` (its size from `fstat`), populated.
    pub fn whole(fd: &OwnedFd) -> io::Result<SharedMap> {
        // SAFETY: stat is plain data; zeroed is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open; `st` is a valid out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(errno());
        }
        SharedMap::new(fd.as_raw_fd(), st.st_size as usize, true)
    }

    /// The first byte (page-aligned).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The mapped length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, for a successful map).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region `new` mapped, once; users
        // keep no reference into it beyond the value's life.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Sleep while `word` (in shared memory) equals `seen`, for at most
/// `timeout` (`None`: until woken). Returns on wake, timeout, signal, or
/// when the word no longer equals `seen`; the caller re-checks.
#[inline]
pub fn futex_wait(word: &AtomicU32, seen: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec { tv_sec: t.as_secs() as libc::time_t, tv_nsec: t.subsec_nanos() as libc::c_long });
    let tp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: a shared (not private: other processes map the word too)
    // FUTEX_WAIT on a live, aligned word, with a valid (or null) relative
    // timeout.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, seen, tp) };
}

/// Wake up to `n` sleepers in [`futex_wait`] on `word`, in any process.
#[inline]
pub fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: a shared FUTEX_WAKE on a live, aligned word.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
}
