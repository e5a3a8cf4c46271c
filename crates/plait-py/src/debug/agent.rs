//! The inspection agent: `python -m plait inspect PID` talks to this.
//!
//! # Why a thread and a socket
//!
//! The process to inspect may be deadlocked: every Python thread parked in a
//! plait wait, nobody running Python code. A signal handler would need the
//! main thread to run Python; `py-spy`-style memory reading sees no plait
//! state. So at import plait starts one Rust thread (never attached to the
//! interpreter) that waits in `poll()` on a listening Unix stream socket and
//! an eventfd (its stop button). Each request is one line naming a format
//! (`text`, `json`, `dot`, `mermaid`, or `ping`); the reply is the report,
//! then EOF.
//!
//! # Building a reply
//!
//! `ping` is answered here, without the interpreter. A report needs Python
//! (`plait.debug._agent.reply(fmt)`), and attaching can block for ever if
//! some thread never releases the GIL (a C extension spinning, `ctypes.PyDLL`
//! calls). So a short-lived helper thread attaches and the agent waits at
//! most [`ATTACH_WAIT`] for it to get in, then [`REPORT_WAIT`] for the text;
//! past either it answers with a plain "interpreter busy" message. At most
//! one helper exists: while one is still stuck, later requests are answered
//! "busy" at once instead of piling up threads.
//!
//! # Who may connect
//!
//! No network socket. The socket is `<dir>/<pid>.sock`, `dir` being
//! `$XDG_RUNTIME_DIR/plait` when that works, else `/tmp/plait-<uid>`; the
//! directory is created 0700 and refused (no agent) unless it is a real
//! directory owned by our effective uid with no group or other permission
//! bits. The socket is chmod 0600 before `listen()`. Every accepted
//! connection's peer uid (`SO_PEERCRED`) must equal our effective uid, else
//! it is closed unanswered. The client checks the listener's pid the same
//! way, which catches a stale socket whose pid was reused.
//!
//! # Fork
//!
//! CPython 3.12+ warns on `os.fork()` in a process with more than one OS
//! thread, and a listening socket must not be shared with a child. An
//! `os.register_at_fork` `before` hook stops and joins the thread (detached
//! from the interpreter, so a helper that needs the GIL can finish) and
//! waits until the kernel has dropped it from `/proc/self/task`; the parent
//! restarts it after the fork (on 3.13+, which counts threads after the
//! after-fork hooks, from a pending call that runs as `os.fork()` returns)
//! and the child starts its own (new pid, new socket). A child made by a raw `fork()` (not `os.fork`) has no agent;
//! any state it inherited is recognised by its pid and discarded without
//! touching the parent's socket.
//!
//! # Exit
//!
//! An `atexit` hook stops the thread and removes the socket; a process
//! killed outright (or ended by `os._exit`) leaves a stale socket, which the
//! next agent to start, or `python -m plait inspect`, removes once it sees
//! the pid is gone.
//!
//! Nothing here panics across the FFI boundary: the agent and helper bodies
//! run under `catch_unwind`, and Python errors become reply text.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// How long a request waits for the helper thread to attach.
const ATTACH_WAIT: Duration = Duration::from_secs(3);
/// How long a request waits, once attached, for the report text.
const REPORT_WAIT: Duration = Duration::from_secs(6);
/// How long a client may take to send its one-line request.
const REQUEST_WAIT: Duration = Duration::from_secs(2);
/// How long writing a reply may stall on a client that does not read.
const SEND_WAIT: Duration = Duration::from_secs(10);
/// Longest request line accepted.
const MAX_REQUEST: usize = 64;
/// How long a stop waits for the kernel to forget an exited thread.
const GONE_WAIT: Duration = Duration::from_secs(2);
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Formats answered by `plait.debug._agent.reply`.
const FORMATS: [&str; 4] = ["text", "json", "dot", "mermaid"];

/// A running agent thread and what stopping it needs.
struct Running {
    /// The process that started it: in a raw-`fork()` child this differs
    /// from `getpid()`, and the thread does not exist there.
    pid: u32,
    path: PathBuf,
    stop: Arc<OwnedFd>,
    thread: JoinHandle<()>,
    tid: Arc<AtomicI32>,
}

struct State {
    /// What the user asked for (environment at import, `_debug_configure(inspect=)`).
    enabled: bool,
    /// Set by the exit hook: nothing starts afterwards.
    closed: bool,
    /// Stopped for an `os.fork()` in progress: the after-fork hooks restart.
    paused: bool,
    running: Option<Running>,
    /// Why the last start failed, for `_agent_status()`.
    error: Option<String>,
}

static STATE: Mutex<State> =
    Mutex::new(State { enabled: false, closed: false, paused: false, running: None, error: None });

/// A helper thread exists (attaching, or building a report).
static HELPER_BUSY: AtomicBool = AtomicBool::new(false);
/// The helper's kernel thread id while it runs (0: none).
static HELPER_TID: AtomicI32 = AtomicI32::new(0);
/// The exit hook has run: helpers must not attach any more.
static CLOSING: AtomicBool = AtomicBool::new(false);

fn getpid() -> u32 {
    std::process::id()
}

fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

// ---------------------------------------------------------------------------
// The environment switch

/// `PLAIT_INSPECT=0|off|false|no`, or `inspect=off|0` in `PLAIT_DEBUG`'s
/// comma list, turn the agent off at import.
fn enabled_by_environment() -> bool {
    let off = |v: &str| matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "off" | "false" | "no");
    if let Ok(v) = std::env::var("PLAIT_INSPECT") {
        if off(&v) {
            return false;
        }
    }
    if let Ok(v) = std::env::var("PLAIT_DEBUG") {
        for item in v.split(',') {
            if let Some((key, value)) = item.split_once('=') {
                if key.trim() == "inspect" && off(value) {
                    return false;
                }
            }
        }
    }
    true
}

// ---------------------------------------------------------------------------
// The socket directory

/// Create `dir` 0700 if missing, then accept it only if it is a real
/// directory (not a symlink) owned by `uid` with no group/other bits.
fn secure_dir(dir: &Path, uid: u32) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot stat {}: {e}", dir.display()))?;
    if !meta.file_type().is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != uid {
        return Err(format!("{} is owned by uid {}, not by us (uid {uid})", dir.display(), meta.uid()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} has mode {mode:o}: group or others may enter it (must be 700)",
            dir.display()
        ));
    }
    Ok(())
}

/// The directory for our socket: `$XDG_RUNTIME_DIR/plait` if that is set and
/// usable, else `/tmp/plait-<uid>`. Errors name every candidate refused.
fn socket_dir(pid: u32) -> Result<PathBuf, String> {
    let uid = geteuid();
    let fits = |d: &Path| d.join(format!("{pid}.sock")).as_os_str().len() <= MAX_SOCKET_PATH;
    let mut refused = Vec::new();
    if let Some(base) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        let base = PathBuf::from(base);
        let dir = base.join("plait");
        let base_ok = base.is_absolute()
            && std::fs::symlink_metadata(&base).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if base_ok && fits(&dir) {
            match secure_dir(&dir, uid) {
                Ok(()) => return Ok(dir),
                Err(e) => refused.push(e),
            }
        }
    }
    let dir = PathBuf::from(format!("/tmp/plait-{uid}"));
    match secure_dir(&dir, uid) {
        Ok(()) => Ok(dir),
        Err(e) => {
            refused.push(e);
            Err(refused.join("; "))
        }
    }
}

// ---------------------------------------------------------------------------
// Start and stop

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new
    // descriptor that nothing else owns.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Remove the sockets in `dir` of processes that are gone (killed outright,
/// or ended by `os._exit`, as forked workers do), so the directory does not
/// grow for ever; `python -m plait inspect` does the same when it lists.
fn sweep_stale(dir: &Path, own: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_suffix(".sock")).and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let is_socket = entry.file_type().is_ok_and(|t| t.is_socket());
        if pid != own && is_socket && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Bind `<dir>/<pid>.sock` (replacing a stale file of that name: only this
/// process can be `pid` now), chmod 0600, listen, and start the thread.
fn start_locked(st: &mut State) -> Result<(), String> {
    let pid = getpid();
    let dir = socket_dir(pid)?;
    sweep_stale(&dir, pid);
    let path = dir.join(format!("{pid}.sock"));
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove the stale {}: {e}", path.display())),
    }
    // std binds and listens in one call; the directory is 0700 and ours, so
    // nobody else can reach the socket before the chmod below.
    let listener = UnixListener::bind(&path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    let cleanup = |e: String| {
        let _ = std::fs::remove_file(&path);
        e
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| cleanup(format!("cannot chmod {}: {e}", path.display())))?;
    listener.set_nonblocking(true).map_err(|e| cleanup(format!("{}: {e}", path.display())))?;
    let stop = Arc::new(eventfd().map_err(|e| cleanup(format!("eventfd: {e}")))?);
    let tid = Arc::new(AtomicI32::new(0));
    let (thread_stop, thread_tid) = (stop.clone(), tid.clone());
    let uid = geteuid();
    let thread = std::thread::Builder::new()
        .name("plait-inspect".into())
        .spawn(move || {
            thread_tid.store(gettid(), Ordering::Release);
            block_signals();
            // A panic ends the agent, never the process.
            let _ = catch_unwind(AssertUnwindSafe(|| serve(&listener, thread_stop.as_raw_fd(), uid, pid)));
        })
        .map_err(|e| cleanup(format!("cannot start the agent thread: {e}")))?;
    st.running = Some(Running { pid, path, stop, thread, tid });
    st.error = None;
    Ok(())
}

/// Start if enabled, not closed, not paused and not running; failures are
/// recorded in `st.error`.
fn ensure_started(st: &mut State) {
    forget_inherited(st);
    if st.enabled && !st.closed && !st.paused && st.running.is_none() {
        if let Err(e) = start_locked(st) {
            st.error = Some(e);
        }
    }
}

/// In a child made by a raw `fork()` the thread recorded here does not
/// exist: forget it, and leave the parent's socket file alone. Its two
/// descriptors are leaked, not closed: the child may have closed them and
/// reused the numbers since (daemons close every descriptor), and a leaked
/// listening socket is harmless (the parent removes its name at exit).
fn forget_inherited(st: &mut State) {
    if st.running.as_ref().is_some_and(|r| r.pid != getpid()) {
        let r = st.running.take().expect("checked above");
        // A JoinHandle of a thread that does not exist must not be joined or
        // detached.
        std::mem::forget(r.thread);
        std::mem::forget(r.stop);
        HELPER_BUSY.store(false, Ordering::Release);
        HELPER_TID.store(0, Ordering::Release);
    }
}

/// Stop the thread (if any) and remove its socket. `wait` runs the blocking
/// part (detached from the interpreter when the caller is attached).
fn stop(wait: impl FnOnce(Box<dyn FnOnce() + Send>)) {
    let running = {
        let mut st = STATE.lock();
        forget_inherited(&mut st);
        st.running.take()
    };
    let Some(r) = running else { return };
    let _ = std::fs::remove_file(&r.path);
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
    unsafe { libc::write(r.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
    wait(Box::new(move || {
        let tid = r.tid.load(Ordering::Acquire);
        let _ = r.thread.join();
        wait_thread_gone(tid, Instant::now() + GONE_WAIT);
    }));
}

/// `pthread_join` returns when the thread's tid word is cleared, slightly
/// before the kernel drops it from the thread count CPython's fork warning
/// reads; wait (bounded) until `/proc/self/task/<tid>` is gone.
fn wait_thread_gone(tid: i32, deadline: Instant) {
    if tid <= 0 {
        return;
    }
    let task = format!("/proc/self/task/{tid}");
    while Path::new(&task).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn block_signals() {
    // SAFETY: `set` is a local sigset_t filled by sigfillset before use;
    // pthread_sigmask only changes this thread's mask, so process-directed
    // signals go to the Python threads, as CPython expects.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

// ---------------------------------------------------------------------------
// The agent thread

fn serve(listener: &UnixListener, stop: RawFd, uid: u32, pid: u32) {
    loop {
        let mut fds = [
            libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stop, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `fds` is a live array of two pollfd for the whole call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => answer(stream, uid, pid),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            // Out of descriptors and the like: do not spin.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The peer's (pid, uid) from `SO_PEERCRED`.
fn peer_cred(stream: &UnixStream) -> Option<(i32, u32)> {
    // SAFETY: `cred` is a live ucred and `len` its size, as getsockopt
    // requires for SO_PEERCRED; the fd is the stream's own.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let rc = libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        );
        (rc == 0).then_some((cred.pid, cred.uid))
    }
}

/// Serve one connection: check the peer, read the request line, reply.
fn answer(mut stream: UnixStream, uid: u32, pid: u32) {
    match peer_cred(&stream) {
        Some((_, peer_uid)) if peer_uid == uid => {}
        _ => return,
    }
    if stream.set_read_timeout(Some(REQUEST_WAIT)).is_err() || stream.set_write_timeout(Some(SEND_WAIT)).is_err() {
        return;
    }
    let mut request = Vec::with_capacity(MAX_REQUEST);
    let mut buf = [0u8; MAX_REQUEST];
    while request.len() < MAX_REQUEST && !request.contains(&b'\n') {
        match stream.read(&mut buf[..MAX_REQUEST - request.len()]) {
            Ok(0) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let fmt = String::from_utf8_lossy(line).trim().to_owned();
    if fmt.is_empty() {
        return;
    }
    let reply = if fmt == "ping" {
        format!("plait {} pid {pid}\n", env!("CARGO_PKG_VERSION"))
    } else if let Some(&known) = FORMATS.iter().find(|&&f| f == fmt) {
        python_reply(known, pid)
    } else {
        format!("plait inspect: unknown request {fmt:?} (expected one of text, json, dot, mermaid, ping)\n")
    };
    let _ = send_all(&stream, reply.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// `write_all` with `MSG_NOSIGNAL`: a client that hangs up early must not
/// raise SIGPIPE in a program that restored its default action (it would
/// kill the process). The socket's send timeout bounds each call.
fn send_all(stream: &UnixStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a live byte slice of the given length; the fd is
        // the stream's own, open for the whole call.
        let n = unsafe { libc::send(stream.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

enum Progress {
    Attached,
    Done(String),
}

/// The report from `plait.debug._agent.reply(fmt)`, built in a helper
/// thread; a "busy" message if it cannot get into the interpreter in time.
fn python_reply(fmt: &'static str, pid: u32) -> String {
    if CLOSING.load(Ordering::Acquire) {
        return format!("plait inspect: process {pid} is exiting\n");
    }
    if HELPER_BUSY.swap(true, Ordering::AcqRel) {
        return busy(pid, "an earlier request is still waiting for the interpreter");
    }
    let (tx, rx) = sync_channel::<Progress>(2);
    let spawned = std::thread::Builder::new().name("plait-inspect-py".into()).spawn(move || {
        HELPER_TID.store(gettid(), Ordering::Release);
        let done = catch_unwind(AssertUnwindSafe(|| run_reply(fmt, pid, &tx)))
            .unwrap_or_else(|_| format!("plait inspect: building the report panicked in process {pid}\n"));
        let _ = tx.send(Progress::Done(done));
        HELPER_TID.store(0, Ordering::Release);
        HELPER_BUSY.store(false, Ordering::Release);
    });
    if let Err(e) = spawned {
        HELPER_BUSY.store(false, Ordering::Release);
        return format!("plait inspect: process {pid} could not start a thread to build the report: {e}\n");
    }
    match rx.recv_timeout(ATTACH_WAIT) {
        Ok(Progress::Done(text)) => return text,
        Ok(Progress::Attached) => {}
        Err(RecvTimeoutError::Timeout) => {
            return busy(pid, &format!("no thread released the GIL within {} s", ATTACH_WAIT.as_secs()))
        }
        Err(RecvTimeoutError::Disconnected) => {
            return format!("plait inspect: the report thread of process {pid} ended without a reply\n")
        }
    }
    match rx.recv_timeout(REPORT_WAIT) {
        Ok(Progress::Done(text)) => text,
        Ok(Progress::Attached) => format!("plait inspect: internal error in process {pid}: attached twice\n"),
        Err(RecvTimeoutError::Timeout) => format!(
            "plait inspect: process {pid} is building the report but did not finish within {} s \
             (the interpreter is very busy, or the report is huge); try again\n",
            REPORT_WAIT.as_secs()
        ),
        Err(RecvTimeoutError::Disconnected) => {
            format!("plait inspect: the report thread of process {pid} ended without a reply\n")
        }
    }
}

/// In the helper thread: attach, call `plait.debug._agent.reply(fmt)`.
fn run_reply(fmt: &str, pid: u32, tx: &std::sync::mpsc::SyncSender<Progress>) -> String {
    if CLOSING.load(Ordering::Acquire) {
        return format!("plait inspect: process {pid} is exiting\n");
    }
    let attached = Python::try_attach(|py| {
        let _ = tx.send(Progress::Attached);
        let text = py
            .import("plait.debug._agent")
            .and_then(|m| m.call_method1("reply", (fmt,)))
            .and_then(|v| v.extract::<String>());
        match text {
            Ok(t) => t,
            Err(e) => format!("plait inspect: building the report failed in process {pid}: {e}\n"),
        }
    });
    attached.unwrap_or_else(|| format!("plait inspect: process {pid} is shutting down its interpreter\n"))
}

fn busy(pid: u32, why: &str) -> String {
    format!(
        "plait inspect: process {pid} runs plait, but its interpreter is busy ({why}): some thread \
         holds the GIL and does not let go (a C extension or a ctypes call that keeps it, a long \
         computation in C). plait's own waits release the GIL, so a deadlock on plait primitives \
         alone does not cause this. The full report needs the interpreter; try again, or use a \
         stack dumper such as py-spy.\n\n{}",
        super::core_summary()
    )
}

/// This process's OS thread count without the agent's own threads (its
/// thread, and a helper building a reply). The fork hooks stop those, so a
/// "may this process fork, is it single-threaded?" check (the process
/// pool's) must leave them out.
// For `process/spawn.rs` (`_thread_count`, `_fork_sibling`), wired in when
// this module is merged.
#[allow(dead_code)]
pub fn threads_besides_agent() -> Option<usize> {
    let all = plait_core::fork::thread_count()?;
    let mut ours = 0;
    {
        let st = STATE.lock();
        if st.running.as_ref().is_some_and(|r| r.pid == getpid()) {
            ours += 1;
        }
    }
    if HELPER_BUSY.load(Ordering::Acquire) {
        ours += 1;
    }
    Some(all.saturating_sub(ours).max(1))
}

// ---------------------------------------------------------------------------
// The Python-facing switch and hooks

/// Turn the agent on or off at run time (`_debug_configure(inspect=)`,
/// `plait.debug.enable(inspect=)`). Turning it on fails with `OSError` when
/// no safe socket directory can be made; off stops the thread and removes
/// the socket.
pub fn set_enabled(py: Python<'_>, enabled: bool) -> PyResult<()> {
    if enabled {
        let mut st = STATE.lock();
        st.enabled = true;
        if st.closed {
            return Ok(());
        }
        ensure_started(&mut st);
        if st.running.is_none() && !st.paused {
            let why = st.error.clone().unwrap_or_default();
            return Err(PyOSError::new_err(format!("plait: cannot start the inspection agent: {why}")));
        }
        Ok(())
    } else {
        STATE.lock().enabled = false;
        stop(|join| py.detach(join));
        Ok(())
    }
}

/// Whether inspection is on (asked for, and the process not exiting);
/// whether the agent actually runs is in `_agent_status()`.
pub fn is_enabled() -> bool {
    let st = STATE.lock();
    st.enabled && !st.closed
}

/// `_plait._agent_status() -> dict`: enabled, running, path (str or None),
/// error (why the last start failed, or None).
#[pyfunction]
fn _agent_status(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let (path, error) = {
        let mut st = STATE.lock();
        forget_inherited(&mut st);
        let path = st.running.as_ref().map(|r| r.path.to_string_lossy().into_owned());
        (path, st.error.clone())
    };
    let enabled = is_enabled();
    let d = PyDict::new(py);
    d.set_item("enabled", enabled)?;
    d.set_item("running", path.is_some())?;
    d.set_item("path", path)?;
    d.set_item("error", error)?;
    Ok(d)
}

/// `os.register_at_fork(before=...)`: stop and join the thread and any
/// helper so the fork sees one thread fewer (none of ours).
#[pyfunction]
fn _agent_before_fork(py: Python<'_>) {
    let was_running = {
        let mut st = STATE.lock();
        forget_inherited(&mut st);
        let running = st.running.is_some();
        st.paused = running || st.paused;
        running
    };
    if was_running {
        stop(|join| py.detach(join));
    }
    // A helper still attaching gets the GIL while we are detached here, or
    // it is stuck behind a thread that never lets go: then the fork would
    // wait for ever anyway, so the wait is bounded.
    py.detach(|| {
        let deadline = Instant::now() + ATTACH_WAIT + REPORT_WAIT;
        let mut tid = HELPER_TID.load(Ordering::Acquire);
        while HELPER_BUSY.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(500));
            tid = HELPER_TID.load(Ordering::Acquire).max(tid);
        }
        wait_thread_gone(tid, Instant::now() + GONE_WAIT);
    });
}

/// `os.register_at_fork(after_in_parent=...)`: restart what `before` stopped.
///
/// CPython 3.13+ counts threads for its fork warning *after* these hooks
/// (3.12 before them), so a thread started here would trigger it. When we
/// are the only thread, the forking thread is the main thread and a pending
/// call runs right after `os.fork()` returns (the eval breaker is checked
/// after every C call): restart there. With other threads about, the warning
/// is due anyway; restart now.
#[pyfunction]
fn _agent_after_fork_parent(py: Python<'_>) {
    if py.version_info() >= (3, 13) && threads_in_process() == Some(1) {
        // SAFETY: `restart_pending` is an `extern "C"` fn with the signature
        // Py_AddPendingCall expects, valid for the life of the process; its
        // argument is unused. We are attached, as the call requires.
        if unsafe { pyo3::ffi::Py_AddPendingCall(Some(restart_pending), std::ptr::null_mut()) } == 0 {
            return;
        }
    }
    resume();
}

/// Start again after a fork, if enabled.
fn resume() {
    let mut st = STATE.lock();
    st.paused = false;
    ensure_started(&mut st);
}

extern "C" fn restart_pending(_: *mut std::ffi::c_void) -> std::ffi::c_int {
    let _ = catch_unwind(resume);
    0
}

/// How many OS threads this process has (`/proc/self/stat` field 20, what
/// CPython's fork warning reads).
fn threads_in_process() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split_whitespace().nth(17)?.parse().ok()
}

/// `os.register_at_fork(after_in_child=...)`: a fresh agent for the child's
/// own pid.
#[pyfunction]
fn _agent_after_fork_child() {
    HELPER_BUSY.store(false, Ordering::Release);
    HELPER_TID.store(0, Ordering::Release);
    let mut st = STATE.lock();
    st.paused = false;
    ensure_started(&mut st);
}

/// `atexit`: stop for good and remove the socket.
#[pyfunction]
fn _agent_atexit(py: Python<'_>) {
    CLOSING.store(true, Ordering::Release);
    STATE.lock().closed = true;
    stop(|join| py.detach(join));
}

/// Add the agent's functions to `_plait`, install the fork and exit hooks,
/// and start the agent unless the environment turns it off.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(_agent_status, m)?)?;
    m.add_function(wrap_pyfunction!(_agent_before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(_agent_after_fork_parent, m)?)?;
    m.add_function(wrap_pyfunction!(_agent_after_fork_child, m)?)?;
    m.add_function(wrap_pyfunction!(_agent_atexit, m)?)?;
    py.import("atexit")?.call_method1("register", (m.getattr("_agent_atexit")?,))?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("before", m.getattr("_agent_before_fork")?)?;
    kwargs.set_item("after_in_parent", m.getattr("_agent_after_fork_parent")?)?;
    kwargs.set_item("after_in_child", m.getattr("_agent_after_fork_child")?)?;
    py.import("os")?.call_method("register_at_fork", (), Some(&kwargs))?;
    let mut st = STATE.lock();
    st.enabled = enabled_by_environment();
    ensure_started(&mut st);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_dir_refuses_open_modes() {
        let base = std::env::temp_dir().join(format!("plait-agent-test-{}", getpid()));
        let _ = std::fs::remove_dir_all(&base);
        assert!(secure_dir(&base, geteuid()).is_ok());
        assert_eq!(std::fs::metadata(&base).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(secure_dir(&base, geteuid()).unwrap_err().contains("mode 755"));
        assert!(secure_dir(&base, geteuid().wrapping_add(1)).unwrap_err().contains("owned by"));
        std::fs::remove_dir_all(&base).unwrap();
        let link = base.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/tmp", &link).unwrap();
        assert!(secure_dir(&link, geteuid()).unwrap_err().contains("not a directory"));
        std::fs::remove_file(&link).unwrap();
    }

    #[test]
    fn thread_gone_returns_for_an_exited_thread() {
        let t = std::thread::spawn(gettid);
        let tid = t.join().unwrap();
        wait_thread_gone(tid, Instant::now() + GONE_WAIT);
        assert!(!Path::new(&format!("/proc/self/task/{tid}")).exists());
    }
}
