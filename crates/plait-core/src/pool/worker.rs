//! Worker processes: starting one (forked by the pool's zygote, or spawned
//! as a fresh interpreter), killing and reaping it, and saying why it died.
//!
//! Either way a worker is our child (the zygote forks with `CLONE_PARENT`),
//! so we reap it; it gets `PR_SET_PDEATHSIG`, so none outlives a parent
//! that is killed; and it ignores SIGINT (Ctrl-C is the parent's business).
//! Its faulthandler writes to a crash log we create: a memfd (no name in
//! any directory, so nothing another local user could plant or read) that
//! the worker inherits (spawned) or receives with the fork request
//! (zygote). After a death we read our copy of it for the death message.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use super::frame;

/// A worker process: spawned by us, or forked by the zygote.
pub enum Proc {
    Spawned(Child),
    Forked { pid: libc::pid_t, status: Option<ExitStatus> },
}

impl Proc {
    pub fn id(&self) -> u32 {
        match self {
            Proc::Spawned(c) => c.id(),
            Proc::Forked { pid, .. } => *pid as u32,
        }
    }

    /// SIGKILL it (nothing if it was reaped already).
    pub fn kill(&mut self) -> io::Result<()> {
        match self {
            Proc::Spawned(c) => c.kill(),
            Proc::Forked { pid, status: None } => {
                // SAFETY: signalling our own unreaped child (the pid cannot
                // have been reused before we reap it).
                unsafe { libc::kill(*pid, libc::SIGKILL) };
                Ok(())
            }
            Proc::Forked { .. } => Ok(()),
        }
    }

    /// Reap it (blocking), once; later calls return the same status.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Proc::Spawned(c) => c.wait(),
            Proc::Forked { status: Some(s), .. } => Ok(*s),
            Proc::Forked { pid, status } => {
                let s = waitpid_blocking(*pid)?;
                *status = Some(s);
                Ok(s)
            }
        }
    }
}

fn waitpid_blocking(pid: libc::pid_t) -> io::Result<ExitStatus> {
    loop {
        let mut raw = 0;
        // SAFETY: waitpid on our own child, into a valid int.
        let r = unsafe { libc::waitpid(pid, &mut raw, 0) };
        if r == pid {
            return Ok(ExitStatus::from_raw(raw));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The pool's zygote: a single-threaded fork of the parent, made when the
/// pool started (see `plait._worker.zygote`). Asked over its socket, it
/// forks a worker that inherits the parent's modules, `__main__` and
/// initializer as they were, which makes starting one a matter of a
/// millisecond instead of a fresh interpreter's tens. Dropping it stops
/// and reaps it.
pub struct Zygote {
    pid: libc::pid_t,
    sock: UnixStream,
}

impl Zygote {
    /// Take over the zygote `pid`, connected by socket `fd`.
    ///
    /// # Safety
    /// `fd` must be an open socket that nothing else owns or closes, and
    /// `pid` a child of this process.
    pub unsafe fn adopt(pid: libc::pid_t, fd: RawFd) -> Zygote {
        // SAFETY: the caller hands over the descriptor.
        let sock = unsafe { UnixStream::from_raw_fd(fd) };
        // The zygote answers at once; never let a wedged one stall the
        // supervisor for good.
        let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
        Zygote { pid, sock }
    }

    /// Have the zygote fork a worker on `child_end` whose faulthandler
    /// writes to `crash_log`; its pid. The request is one byte with both
    /// descriptors attached.
    fn fork_worker(&mut self, child_end: &UnixStream, crash_log: &OwnedFd) -> io::Result<libc::pid_t> {
        crate::ipc::fd::send_with_fds(
            self.sock.as_raw_fd(),
            b"W",
            &[child_end.as_raw_fd(), crash_log.as_raw_fd()],
            libc::MSG_NOSIGNAL,
        )?;
        let mut reply = [0u8; 4];
        self.sock.read_exact(&mut reply)?;
        let pid = i32::from_le_bytes(reply);
        if pid <= 0 {
            return Err(io::Error::from_raw_os_error(-pid));
        }
        Ok(pid)
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // EOF on its socket makes it exit; give it a moment, then insist.
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let end = Instant::now() + Duration::from_secs(2);
        loop {
            let mut raw = 0;
            // SAFETY: waitpid on our own child, into a valid int.
            let r = unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) };
            if r != 0 {
                return; // reaped, or not ours to reap
            }
            if Instant::now() >= end {
                // SAFETY: our own unreaped child.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                let _ = waitpid_blocking(self.pid);
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// How workers start; fixed when the pool starts.
pub struct Launch {
    /// The interpreter a spawned worker runs.
    pub python: String,
    /// The pickled setup a spawned worker needs (None: it could not be
    /// pickled, and only forked workers, which inherit it, can start).
    pub setup: Option<Vec<u8>>,
    /// Descriptors a spawned worker inherits at the same numbers: those the
    /// pickled setup refers to.
    pub inherit_fds: Vec<RawFd>,
    /// Forks workers from a copy of the parent, when the pool has one.
    pub zygote: Option<Zygote>,
}

/// A worker's process and socket, with its buffers.
pub struct Conn {
    pub child: Proc,
    pub sock: UnixStream,
    /// What it sent and we have not parsed yet.
    pub rbuf: Vec<u8>,
    /// Descriptors of shared-memory segments that came with its frames
    /// (`SCM_RIGHTS`), in arrival order, until their frame is parsed.
    pub fds: VecDeque<OwnedFd>,
    /// Task frames not yet accepted by the socket (never block on a worker
    /// that is busy with a long task).
    pub wbuf: Vec<u8>,
    /// Shared-memory segments it reported (in result frames).
    pub reported: HashSet<PathBuf>,
    /// Our copy of the memfd its faulthandler writes to.
    pub crash_log: OwnedFd,
}

impl Conn {
    /// Kill it and reap it (its crash log is of no interest).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Close its socket (it exits on EOF) and reap it.
    pub fn close(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let _ = self.child.wait();
    }

    /// Why a worker that closed its socket is gone, with its last
    /// traceback (reaps it).
    pub fn death_message(&mut self) -> String {
        let status = self.child.wait().ok();
        let how = match status {
            Some(s) if s.signal().is_some() => format!("died with {}", signal_name(s.signal().unwrap_or(0))),
            Some(s) => format!("exited with code {}", s.code().unwrap_or(-1)),
            None => "died".to_string(),
        };
        let log = read_crash_log(&self.crash_log);
        let mut msg = format!("worker process {} {} while running this task", self.child.id(), how);
        if !log.trim().is_empty() {
            msg.push_str("; its last traceback:\n");
            msg.push_str(log.trim_end());
        }
        msg
    }

    /// Remove the shared-memory segments this (dead) worker created and
    /// nobody will ever learn the name of (it died between writing one and
    /// reporting it). Segments it did report belong to results that may not
    /// have been read yet; their guards unlink them.
    pub fn sweep_segments(&self) {
        let prefix = format!("plait-{}-", self.child.id());
        if let Ok(dir) = std::fs::read_dir("/dev/shm") {
            for e in dir.flatten() {
                let path = e.path();
                if e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) && !self.reported.contains(&path) {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

/// At most this much of a crash log is read (the end of it).
const CRASH_LOG_MAX: usize = 64 * 1024;

/// What a worker's faulthandler wrote to its crash log (`pread` from the
/// start: the file offset is shared with the worker's copy), at most the
/// last `CRASH_LOG_MAX` bytes.
fn read_crash_log(fd: &OwnedFd) -> String {
    // SAFETY: stat is plain data; fstat fills it for our open descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return String::new();
    }
    let size = st.st_size.max(0) as usize;
    let start = size.saturating_sub(CRASH_LOG_MAX);
    let mut buf = vec![0u8; size - start];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled tail of `buf`, which is valid
        // for `buf.len() - got` bytes.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
                (start + got) as libc::off_t,
            )
        };
        if n > 0 {
            got += n as usize;
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    buf.truncate(got);
    String::from_utf8_lossy(&buf).into_owned()
}

/// `"signal 9 (SIGKILL: Killed)"`.
pub fn signal_name(sig: i32) -> String {
    // SAFETY: strsignal returns a pointer to a static or thread-local
    // string (or NULL), valid until the next call on this thread, and we
    // copy it out at once.
    let desc = unsafe {
        let p = libc::strsignal(sig);
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    let abbrev = match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        _ => "",
    };
    if abbrev.is_empty() {
        format!("signal {sig} ({desc})")
    } else {
        format!("signal {sig} ({abbrev}: {desc})")
    }
}

/// Start worker number `id`: forked by the zygote if there is one (a
/// zygote that fails is dropped, and workers are spawned from then on),
/// otherwise spawned as `python -m plait._worker FD`. It is sent its setup
/// frame; it is ready once it answers `S`.
pub fn start(launch: &mut Launch, _id: usize) -> io::Result<Conn> {
    let (parent, child_end) = UnixStream::pair()?;
    let child_fd = child_end.as_raw_fd();
    // The crash log has no name anywhere: a memfd (close-on-exec here).
    let crash_log = crate::ipc::fd::memfd(c"plait-worker-crash", 0)?;
    let crash_fd = crash_log.as_raw_fd();
    if let Some(z) = launch.zygote.as_mut() {
        match z.fork_worker(&child_end, &crash_log) {
            Ok(pid) => {
                drop(child_end);
                // The worker inherited its setup: an empty one says so.
                return connect(Proc::Forked { pid, status: None }, parent, &[], crash_log);
            }
            Err(_) => launch.zygote = None,
        }
    }
    let Some(setup) = launch.setup.as_ref() else {
        return Err(io::Error::other(
            "the pool's zygote is gone, and the initializer's arguments cannot be pickled for a spawned worker",
        ));
    };
    let mut cmd = Command::new(&launch.python);
    cmd.args(["-m", "plait._worker", &child_fd.to_string()]);
    cmd.env("PLAIT_WORKER_CRASH_FD", crash_fd.to_string());
    let inherit = launch.inherit_fds.clone();
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls async-signal-safe functions (fcntl, prctl, signal); it reads
    // `inherit`, allocated before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Keep our end and the crash log across exec, and the descriptors the pickled
            // setup names (multiprocessing queues in initargs); everything
            // else stays CLOEXEC.
            libc::fcntl(child_fd, libc::F_SETFD, 0);
            libc::fcntl(crash_fd, libc::F_SETFD, 0);
            for &fd in &inherit {
                libc::fcntl(fd, libc::F_SETFD, 0);
            }
            // Die with the parent; ignore Ctrl-C aimed at the terminal's
            // process group (the parent handles it).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(child_end);
    connect(Proc::Spawned(child), parent, setup, crash_log)
}

fn connect(child: Proc, mut sock: UnixStream, setup: &[u8], crash_log: OwnedFd) -> io::Result<Conn> {
    sock.write_all(&frame::build(frame::SETUP, &[setup]))?;
    sock.set_nonblocking(true)?;
    Ok(Conn {
        child,
        sock,
        rbuf: Vec::new(),
        fds: VecDeque::new(),
        wbuf: Vec::new(),
        reported: HashSet::new(),
        crash_log,
    })
}
