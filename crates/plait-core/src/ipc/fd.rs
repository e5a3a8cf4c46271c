//! The system calls of the transport, wrapped once: socket pairs, the
//! non-blocking flag, `send`/`recv`, `sendmsg`/`recvmsg` with descriptors
//! riding along (`SCM_RIGHTS`), memfd creation, and waiting for a
//! descriptor to become ready.
//!
//! Every socket here is non-blocking: a caller first tries its I/O and
//! only when it would block waits in [`wait_fd`], which polls in slices so
//! a [`WaitCtx`]'s interrupt check (Ctrl-C in the main thread) and
//! deadline are honoured.

use std::ffi::CStr;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::park::{Outcome, WaitCtx, SPIN};

#[inline]
pub(crate) fn errno() -> io::Error {
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
#[inline]
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
#[inline]
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
#[inline]
pub fn recv_some(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid and writable for its length during the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// One `sendmsg` gathering `parts` into a single message, with `flags`;
/// `Ok(n)` bytes went out. No retry on `EINTR`: the caller decides.
#[inline]
pub fn send_gather(sock: RawFd, parts: &[IoSlice<'_>], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix; the kernel only reads.
    msg.msg_iov = parts.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = parts.len();
    // SAFETY: `msg` and the buffers it points to outlive the call; the
    // kernel only reads them.
    let n = unsafe { libc::sendmsg(sock, &msg, flags) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// One `sendmsg` of `data` with descriptor `fd` attached (`SCM_RIGHTS`),
/// with `flags`; `EINTR` is retried. The descriptor stays the caller's.
#[inline]
pub fn send_with_fd(sock: RawFd, data: &[u8], fd: RawFd, flags: libc::c_int) -> io::Result<()> {
    send_with_fds(sock, data, &[fd], flags)
}

/// One `sendmsg` of `data` with up to four descriptors attached
/// (`SCM_RIGHTS`, in order), with `flags`; `EINTR` is retried. The
/// descriptors stay the caller's.
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd], flags: libc::c_int) -> io::Result<()> {
    assert!(!fds.is_empty() && fds.len() <= 4, "send_with_fds: 1 to 4 descriptors");
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let mut cbuf = [0u64; 6]; // room for one cmsg with four fds, aligned
    let bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg_control points at `space` (<= 48) bytes of aligned
    // storage, enough for the one header CMSG_FIRSTHDR returns and its
    // `fds.len()` descriptors.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(bytes) as usize;
        let data = libc::CMSG_DATA(c).cast::<RawFd>();
        for (i, &fd) in fds.iter().enumerate() {
            std::ptr::write_unaligned(data.add(i), fd);
        }
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

/// One `recvmsg` of at most `len` bytes into `buf`, with `flags` (plus
/// `MSG_CMSG_CLOEXEC`); every descriptor that came along (`SCM_RIGHTS`,
/// up to a dozen per call) is handed to `on_fd`, in order, now owned by
/// the caller. `Ok(n)` bytes were written; `Ok(0)` is end of file (or an
/// empty packet).
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes for the duration of the
/// call (it may be uninitialised: only the first `n` bytes are written).
#[inline]
pub unsafe fn recv_with_fds(
    sock: RawFd,
    buf: *mut u8,
    len: usize,
    flags: libc::c_int,
    mut on_fd: impl FnMut(OwnedFd),
) -> io::Result<usize> {
    let mut iov = libc::iovec { iov_base: buf.cast(), iov_len: len };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let mut cbuf = [0u64; 8]; // u64s: cmsg alignment
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: `msg` points at `iov` (into `buf`, valid for `len` bytes by
    // the caller's guarantee) and `cbuf`, all live for the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(errno());
    }
    // SAFETY: walking the control buffer the kernel just filled, with the
    // CMSG_* accessors that bound every header by msg_controllen; each
    // descriptor in an SCM_RIGHTS message was installed for us, so we own it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    on_fd(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(n as usize)
}

/// A fresh close-on-exec memfd named `name`, sized to `len` bytes (its
/// pages read as zero) unless `len` is 0.
pub fn memfd(name: &CStr, len: usize) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; memfd_create returns a fresh fd.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(errno());
    }
    // SAFETY: raw is fresh and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: resizing our own fresh memfd.
    if len > 0 && unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(errno());
    }
    Ok(fd)
}
