//! The ProcessPoolExecutor's supervisor: one Rust thread per pool.
//!
//! Workers come from one of two places, each connected by a socketpair:
//! the pool's zygote (a single-threaded fork of the parent, made at the
//! first submit when the parent had one thread or `mp_context` asked for
//! fork), which forks them as the parent's children (`CLONE_PARENT`); or
//! fresh interpreters (`python -m plait._worker FD`), spawned by us, never
//! by forking a parent that runs threads. The supervisor owns every worker socket
//! and waits in `poll(2)` on them plus an eventfd that `submit`, `cancel`
//! and `shutdown` use to wake it. It needs no GIL to move bytes: tasks are
//! pickled in the submitting thread, and it attaches only to turn result
//! frames into completed futures (a batch per attach).
//!
//! A worker that dies (EOF on its socket) fails only the task it was
//! running, with the exit code or signal and its faulthandler output, and
//! is replaced on demand. A task past its time limit, or cancelled while
//! running, gets its worker SIGKILLed and replaced. Shutdown closes the
//! sockets (workers exit on EOF) and reaps every child; workers also get
//! `PR_SET_PDEATHSIG`, so none outlives a parent that is killed.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use plait_core::future::Resolution;
use plait_core::sync::Event as CoreEvent;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::futures::{cf_error, decode_pickled, run_callbacks_of, FutureCore, Pickled, ShmGuard};
use crate::wait::{deadline_in, detached};

type Obj = Py<PyAny>;

const HEADER: usize = 5; // u32 length (kind + payload) | u8 kind

fn frame(kind: u8, payload: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    push_frame(&mut out, kind, payload);
    out
}

fn push_frame(out: &mut Vec<u8>, kind: u8, payload: &[&[u8]]) {
    let len: usize = 1 + payload.iter().map(|p| p.len()).sum::<usize>();
    out.reserve(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(kind);
    for p in payload {
        out.extend_from_slice(p);
    }
}

/// One submitted call.
struct Task {
    id: u64,
    payload: Vec<u8>,
    future: Py<FutureCore>,
    timeout: Option<Duration>,
    /// Already marked RUNNING (it was handed to a worker that died before
    /// starting it, and is being handed out again).
    marked_running: bool,
    /// The call's shared-memory segment, unlinked if no worker took it.
    _shm: Option<Arc<ShmGuard>>,
}

/// How many tasks a worker may hold (the one it runs plus those waiting in
/// its socket) starts at `BASE_DEPTH`: the next task is already there when
/// the current one ends, and a task still waiting can be handed out again
/// or, before it is sent, cancelled. While a worker's tasks take less than
/// `FAST_TASK` each, its depth doubles per batch of results, up to
/// `MAX_DEPTH` (slow start, as TCP's window): a stream of tiny tasks then
/// travels in large writes and the worker never waits for us. One slow
/// batch drops it back to `BASE_DEPTH`.
const BASE_DEPTH: usize = 2;
const MAX_DEPTH: usize = 64;
const FAST_TASK: Duration = Duration::from_micros(500);
/// A worker whose depth grew runs tiny tasks back to back: we look at its
/// results at most this often instead of waking for each one (results
/// then wait at most this long; a worker holds enough to stay busy).
const COALESCE: Duration = Duration::from_micros(100);
/// A worker left idle this long starts again from `BASE_DEPTH`: the next
/// burst may be of slow tasks, which a deep worker would take all of
/// (and tasks it holds are RUNNING: `cancel()` and
/// `shutdown(cancel_futures=True)` can no longer stop them).
const IDLE_RESET: Duration = Duration::from_millis(5);

enum Cmd {
    Submit(Task),
    Cancel(u64),
    Shutdown { cancel_futures: bool, kill: bool },
}

/// What the Python object and the supervisor thread share.
struct Shared {
    cmds: Mutex<VecDeque<Cmd>>,
    wake: OwnedFd,
    /// The supervisor is (about to be) blocked in poll() and could hand out
    /// a new task at once: submitters must write the eventfd. Otherwise it
    /// will see the command anyway, and a burst of submits costs no
    /// syscall each.
    sleeping: AtomicBool,
    done: CoreEvent,
    broken: Mutex<Option<String>>,
    closed: AtomicBool,
    shut: AtomicBool,
    /// Ids of the tasks workers are executing right now (not prefetched):
    /// only those can be cancelled while running, by killing the worker.
    executing: Mutex<std::collections::HashSet<u64>>,
}

impl Shared {
    fn send(&self, cmd: Cmd) {
        // A submit only needs to wake a supervisor that has somewhere to
        // put it (it said so by setting `sleeping`); otherwise the next
        // result wakes it anyway. Cancels and shutdowns always wake it.
        let urgent = !matches!(cmd, Cmd::Submit(_));
        self.cmds.lock().push_back(cmd);
        if urgent || self.sleeping.load(Ordering::SeqCst) {
            self.poke();
        }
    }

    fn poke(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a valid u64 to our own eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// Pool configuration, fixed at construction.
struct Config {
    python: String,
    max_workers: usize,
    max_tasks_per_child: Option<usize>,
    /// The pickled setup a spawned worker needs (None: it could not be
    /// pickled, and only forked workers, which inherit it, can start).
    setup: Option<Vec<u8>>,
    /// Descriptors a spawned worker inherits at the same numbers: those the
    /// pickled setup refers to.
    inherit_fds: Vec<i32>,
    /// Forks workers from a copy of the parent, when the pool has one.
    zygote: Option<Zygote>,
}

/// A worker process: spawned by us, or forked by the zygote. Either way it
/// is our child (the zygote forks with `CLONE_PARENT`), so we reap it.
enum Proc {
    Spawned(Child),
    Forked { pid: libc::pid_t, status: Option<ExitStatus> },
}

impl Proc {
    fn id(&self) -> u32 {
        match self {
            Proc::Spawned(c) => c.id(),
            Proc::Forked { pid, .. } => *pid as u32,
        }
    }

    fn kill(&mut self) -> std::io::Result<()> {
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

    fn wait(&mut self) -> std::io::Result<ExitStatus> {
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

fn waitpid_blocking(pid: libc::pid_t) -> std::io::Result<ExitStatus> {
    loop {
        let mut raw = 0;
        // SAFETY: waitpid on our own child, into a valid int.
        let r = unsafe { libc::waitpid(pid, &mut raw, 0) };
        if r == pid {
            return Ok(ExitStatus::from_raw(raw));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The pool's zygote: a single-threaded fork of the parent, made when the
/// pool started (see `plait._worker.zygote`). Asked over its socket, it
/// forks a worker that inherits the parent's modules, `__main__` and
/// initializer as they were, which makes starting one a matter of a
/// millisecond instead of a fresh interpreter's tens.
struct Zygote {
    pid: libc::pid_t,
    sock: UnixStream,
}

impl Zygote {
    /// Have the zygote fork a worker on `child_end`; its pid.
    fn fork_worker(&mut self, child_end: &UnixStream, crash_log: &std::path::Path) -> std::io::Result<libc::pid_t> {
        use std::os::unix::ffi::OsStrExt;
        plait_core::ipc::send_with_fd(self.sock.as_raw_fd(), crash_log.as_os_str().as_bytes(), child_end.as_raw_fd(), libc::MSG_NOSIGNAL)?;
        let mut reply = [0u8; 4];
        self.sock.read_exact(&mut reply)?;
        let pid = i32::from_le_bytes(reply);
        if pid <= 0 {
            return Err(std::io::Error::from_raw_os_error(-pid));
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


/// A task handed to a worker: the first of a worker's `inflight` is the one
/// it executes; the others wait in its socket.
struct InFlight {
    task: Task,
    deadline: Option<Instant>,
    sent_at: Instant,
}

struct Worker {
    child: Proc,
    sock: UnixStream,
    ready: bool,
    inflight: VecDeque<InFlight>,
    /// Shared-memory segments this worker reported (in result frames).
    reported: std::collections::HashSet<std::path::PathBuf>,
    tasks_done: usize,
    rbuf: Vec<u8>,
    /// Descriptors of shared-memory segments that came with its frames
    /// (SCM_RIGHTS), in arrival order, until their frame is parsed.
    fds: VecDeque<OwnedFd>,
    /// Task frames not yet accepted by the socket (never block on a worker
    /// that is busy with a long task).
    wbuf: Vec<u8>,
    /// How many tasks it may hold (see `BASE_DEPTH`).
    depth: usize,
    /// When we last read results from it.
    last_read: Instant,
    crash_log: std::path::PathBuf,
}

impl Worker {
    fn executing(&self) -> Option<u64> {
        self.inflight.front().map(|f| f.task.id)
    }
}

/// Messages the supervisor turns into future completions while attached.
enum Done {
    /// Finish attached (something in Python watches the future).
    Attached(Py<FutureCore>, Pickled),
    /// Finished detached; its done-callbacks still have to run.
    Callbacks(Py<FutureCore>, Vec<Obj>),
    Failed(Py<FutureCore>, FailKind, String),
    Cancelled(Py<FutureCore>),
}

enum FailKind {
    WorkerDied,
    Timeout,
    Broken,
}

fn signal_name(sig: i32) -> String {
    // SAFETY: strsignal returns a pointer to a static or thread-local
    // string (or NULL), valid until the next call on this thread.
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

fn spawn_worker(cfg: &mut Config, id: usize) -> std::io::Result<Worker> {
    let (parent, child_end) = UnixStream::pair()?;
    let child_fd = child_end.as_raw_fd();
    let crash_log = std::env::temp_dir().join(format!("plait-worker-{}-{}-{}.log", std::process::id(), id, child_fd));
    if let Some(z) = cfg.zygote.as_mut() {
        match z.fork_worker(&child_end, &crash_log) {
            Ok(pid) => {
                drop(child_end);
                // The worker inherited its setup: an empty one says so.
                return start_worker(Proc::Forked { pid, status: None }, parent, &[], crash_log);
            }
            // A zygote that cannot fork (or is gone) is dropped; workers
            // are spawned from then on, if the setup allows it.
            Err(_) => cfg.zygote = None,
        }
    }
    let Some(setup) = cfg.setup.as_ref() else {
        return Err(std::io::Error::other(
            "the pool's zygote is gone, and the initializer's arguments cannot be pickled for a spawned worker",
        ));
    };
    let mut cmd = Command::new(&cfg.python);
    cmd.args(["-m", "plait._worker", &child_fd.to_string()]);
    cmd.env("PLAIT_WORKER_CRASH_LOG", &crash_log);
    let inherit = cfg.inherit_fds.clone();
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls async-signal-safe functions (fcntl, prctl, signal); it reads
    // `inherit`, allocated before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Keep our end across exec, and the descriptors the pickled
            // setup names (multiprocessing queues in initargs); everything
            // else stays CLOEXEC.
            libc::fcntl(child_fd, libc::F_SETFD, 0);
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
    start_worker(Proc::Spawned(child), parent, setup, crash_log)
}

fn start_worker(child: Proc, mut sock: UnixStream, setup: &[u8], crash_log: std::path::PathBuf) -> std::io::Result<Worker> {
    sock.write_all(&frame(b'I', &[setup]))?;
    sock.set_nonblocking(true)?;
    Ok(Worker {
        child,
        sock,
        ready: false,
        inflight: VecDeque::new(),
        reported: std::collections::HashSet::new(),
        tasks_done: 0,
        rbuf: Vec::new(),
        fds: VecDeque::new(),
        wbuf: Vec::new(),
        depth: BASE_DEPTH,
        last_read: Instant::now(),
        crash_log,
    })
}

/// Remove the shared-memory segments a dead worker created and nobody will
/// ever learn the name of (it died between writing one and reporting it).
/// Segments it did report belong to results that may not have been read
/// yet; their guards unlink them.
fn sweep_segments(pid: u32, reported: &std::collections::HashSet<std::path::PathBuf>) {
    let prefix = format!("plait-{pid}-");
    if let Ok(dir) = std::fs::read_dir("/dev/shm") {
        for e in dir.flatten() {
            let path = e.path();
            if e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) && !reported.contains(&path) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Remove a worker that is gone or being killed: its executing task fails
/// with `why`; tasks it held but had not started go back to the queue front.
fn retire(w: Worker, why: Option<(FailKind, String)>, shared: &Shared, queue: &mut VecDeque<Task>, done: &mut Vec<Done>) {
    let mut w = w;
    sweep_segments(w.child.id(), &w.reported);
    let mut inflight = std::mem::take(&mut w.inflight);
    if let Some(first) = inflight.pop_front() {
        shared.executing.lock().remove(&first.task.id);
        match why {
            Some((kind, msg)) => done.push(Done::Failed(first.task.future, kind, msg)),
            // Nothing to report (a clean retirement never holds tasks).
            None => queue.push_front(first.task),
        }
    }
    for f in inflight.into_iter().rev() {
        let mut t = f.task;
        t.marked_running = true;
        queue.push_front(t);
    }
}

/// Why a worker that closed its socket is gone, with its last traceback.
fn death_message(w: &mut Worker) -> String {
    let status = w.child.wait().ok();
    let how = match status {
        Some(s) if s.signal().is_some() => format!("died with {}", signal_name(s.signal().unwrap_or(0))),
        Some(s) => format!("exited with code {}", s.code().unwrap_or(-1)),
        None => "died".to_string(),
    };
    let log = std::fs::read_to_string(&w.crash_log).unwrap_or_default();
    let _ = std::fs::remove_file(&w.crash_log);
    let mut msg = format!("worker process {} {} while running this task", w.child.id(), how);
    if !log.trim().is_empty() {
        msg.push_str("; its last traceback:\n");
        msg.push_str(log.trim_end());
    }
    msg
}

/// The supervisor loop. Runs without the GIL except to complete futures.
fn supervise(shared: Arc<Shared>, mut cfg: Config) {
    let mut workers: Vec<Worker> = Vec::new();
    let mut queue: VecDeque<Task> = VecDeque::new();
    let mut shutting = false;
    let mut next_worker_id = 0usize;
    let mut last_wake = Instant::now();
    loop {
        let mut done: Vec<Done> = Vec::new();
        // 1. Commands.
        let cmds: Vec<Cmd> = shared.cmds.lock().drain(..).collect();
        for cmd in cmds {
            match cmd {
                Cmd::Submit(t) => queue.push_back(t),
                Cmd::Cancel(id) => {
                    // The future is already cancelled; stop its worker if it
                    // is still executing that task. Read what the worker
                    // sent first: if it finished the task and moved on to
                    // the next, killing it would kill that one instead.
                    for w in workers.iter_mut().filter(|w| w.executing() == Some(id)) {
                        drain_socket(w);
                        parse_frames(w, &mut done, &shared);
                    }
                    if let Some(pos) = workers.iter().position(|w| w.executing() == Some(id)) {
                        let mut w = workers.remove(pos);
                        let _ = w.child.kill();
                        let _ = w.child.wait();
                        let _ = std::fs::remove_file(&w.crash_log);
                        retire(w, Some((FailKind::WorkerDied, "cancelled".into())), &shared, &mut queue, &mut done);
                    }
                }
                Cmd::Shutdown { cancel_futures, kill } => {
                    shutting = true;
                    if cancel_futures || kill {
                        for t in queue.drain(..) {
                            if t.marked_running {
                                done.push(Done::Failed(t.future, FailKind::WorkerDied, "the pool was shut down before this task could run again".into()));
                            } else {
                                done.push(Done::Cancelled(t.future));
                            }
                        }
                    }
                    if kill {
                        for mut w in workers.drain(..) {
                            let _ = w.child.kill();
                            let _ = w.child.wait();
                            let _ = std::fs::remove_file(&w.crash_log);
                            let mut inflight = std::mem::take(&mut w.inflight);
                            while let Some(f) = inflight.pop_front() {
                                shared.executing.lock().remove(&f.task.id);
                                done.push(Done::Failed(f.task.future, FailKind::WorkerDied, "the worker was killed by shutdown(kill_workers=True)".into()));
                            }
                        }
                    }
                }
            }
        }
        if let Some(msg) = shared.broken.lock().clone() {
            for t in queue.drain(..) {
                done.push(Done::Failed(t.future, FailKind::Broken, msg.clone()));
            }
        }
        // 2. Read what workers sent; notice deaths.
        let mut i = 0;
        while i < workers.len() {
            let dead = drain_socket(&mut workers[i]);
            parse_frames(&mut workers[i], &mut done, &shared);
            if dead {
                let mut w = workers.remove(i);
                let msg = death_message(&mut w);
                retire(w, Some((FailKind::WorkerDied, msg)), &shared, &mut queue, &mut done);
                continue;
            }
            i += 1;
        }
        // 3. Time limits (of the task each worker executes).
        let now = Instant::now();
        let mut i = 0;
        while i < workers.len() {
            if matches!(workers[i].inflight.front(), Some(InFlight { deadline: Some(d), .. }) if now >= *d) {
                let mut w = workers.remove(i);
                let _ = w.child.kill();
                let _ = w.child.wait();
                let _ = std::fs::remove_file(&w.crash_log);
                let msg = "the task exceeded its time limit; its worker was killed".to_string();
                retire(w, Some((FailKind::Timeout, msg)), &shared, &mut queue, &mut done);
                continue;
            }
            i += 1;
        }
        // 4. Retire workers that reached max_tasks_per_child.
        if let Some(max) = cfg.max_tasks_per_child {
            workers.retain_mut(|w| {
                if w.ready && w.inflight.is_empty() && w.tasks_done >= max {
                    let _ = w.sock.shutdown(std::net::Shutdown::Both);
                    let _ = w.child.wait();
                    let _ = std::fs::remove_file(&w.crash_log);
                    false
                } else {
                    true
                }
            });
        }
        // 5. Start workers on demand: one per queued task not covered by
        // a worker that is starting or has nothing to do.
        let broken = shared.broken.lock().is_some();
        let mut free = workers.iter().filter(|w| !w.ready || w.inflight.is_empty()).count();
        while !broken && !shutting_and_empty(shutting, &queue) && queue.len() > free && workers.len() < cfg.max_workers {
            match spawn_worker(&mut cfg, next_worker_id) {
                Ok(w) => workers.push(w),
                Err(e) => {
                    *shared.broken.lock() = Some(format!("cannot start a worker process: {e}"));
                    break;
                }
            }
            next_worker_id += 1;
            free += 1;
        }
        // 6. Hand out tasks: idle workers first, then level by level up to
        // each worker's depth, so the queue spreads evenly.
        let mut dispatch: Vec<(usize, Task)> = Vec::new();
        if !queue.is_empty() {
            for w in workers.iter_mut().filter(|w| w.inflight.is_empty() && w.last_read.elapsed() > IDLE_RESET) {
                w.depth = BASE_DEPTH;
            }
        }
        let mut load: Vec<usize> = workers.iter().map(|w| w.inflight.len()).collect();
        let deepest = workers.iter().map(|w| w.depth).max().unwrap_or(0);
        for round in 0..deepest {
            for (wi, w) in workers.iter().enumerate() {
                if queue.is_empty() {
                    break;
                }
                let room = match cfg.max_tasks_per_child {
                    Some(max) => max.saturating_sub(w.tasks_done + load[wi]),
                    None => usize::MAX,
                };
                if w.ready && load[wi] == round && round < w.depth && room > 0 {
                    if let Some(t) = queue.pop_front() {
                        dispatch.push((wi, t));
                        load[wi] += 1;
                    }
                }
            }
        }
        // Most futures can be marked running without the interpreter (no
        // `_condition` was ever made); the rest wait for the attach below.
        let mut started: Vec<(usize, Task)> = Vec::new();
        let mut attached_dispatch: Vec<(usize, Task)> = Vec::new();
        for (wi, t) in dispatch {
            if t.marked_running {
                started.push((wi, t));
                continue;
            }
            match t.future.get().try_set_running_detached() {
                Some(Ok(true)) => started.push((wi, t)),
                Some(Ok(false)) | Some(Err(_)) => drop(t),
                None => attached_dispatch.push((wi, t)),
            }
        }
        if !attached_dispatch.is_empty() || !done.is_empty() {
            Python::attach(|py| {
                complete(py, std::mem::take(&mut done));
                for (wi, t) in attached_dispatch {
                    if let Ok(true) = FutureCore::set_running_or_notify_cancel(t.future.bind(py)) {
                        started.push((wi, t));
                    }
                }
            });
        }
        let now = Instant::now();
        for (wi, mut t) in started {
            t.marked_running = true;
            let w = &mut workers[wi];
            push_frame(&mut w.wbuf, b'T', &[&t.id.to_le_bytes(), &t.payload]);
            if w.inflight.is_empty() {
                shared.executing.lock().insert(t.id);
                let deadline = t.timeout.map(|d| now + d);
                w.inflight.push_back(InFlight { task: t, deadline, sent_at: now });
            } else {
                w.inflight.push_back(InFlight { task: t, deadline: None, sent_at: now });
            }
        }
        // One write per worker for everything it was handed; what the
        // socket does not take now goes when poll() says it can.
        for w in workers.iter_mut().filter(|w| !w.wbuf.is_empty()) {
            // Its death, if the write fails, is noticed on the next read.
            flush_nb(w);
        }
        // 7. Finished shutting down?
        if shutting && queue.is_empty() && workers.iter().all(|w| w.inflight.is_empty()) {
            for mut w in workers.drain(..) {
                let _ = w.sock.shutdown(std::net::Shutdown::Both);
                let _ = w.child.wait();
                let _ = std::fs::remove_file(&w.crash_log);
            }
            if !done.is_empty() {
                Python::attach(|py| complete(py, std::mem::take(&mut done)));
            }
            shared.shut.store(true, Ordering::Release);
            shared.done.set();
            return;
        }
        // 8. Wait for input, a command or the next deadline.
        let next_deadline = workers.iter().filter_map(|w| w.inflight.front().and_then(|f| f.deadline)).min();
        let timeout_ms = match next_deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).as_millis().min(1000) as i32 + 1,
            None => 1000,
        };
        // Workers busy with streams of tiny tasks hold enough work for a
        // while: let their results pile up a little rather than wake for
        // each one (see `COALESCE`).
        if workers.iter().any(|w| w.depth > BASE_DEPTH && !w.inflight.is_empty()) {
            let since = last_wake.elapsed();
            if since < COALESCE && next_deadline.is_none_or(|d| d > Instant::now() + COALESCE) {
                std::thread::sleep(COALESCE - since);
            }
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(workers.len() + 1);
        fds.push(libc::pollfd { fd: shared.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        for w in &workers {
            let events = if w.wbuf.is_empty() { libc::POLLIN } else { libc::POLLIN | libc::POLLOUT };
            fds.push(libc::pollfd { fd: w.sock.as_raw_fd(), events, revents: 0 });
        }
        // Submits need to wake us only if a task could go somewhere now.
        let can_take = !shutting
            && (workers.len() < cfg.max_workers || workers.iter().any(|w| w.ready && w.inflight.len() < w.depth));
        shared.sleeping.store(can_take, Ordering::SeqCst);
        if shared.cmds.lock().is_empty() {
            // SAFETY: `fds` is a valid array of pollfd of the given length.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        }
        shared.sleeping.store(false, Ordering::SeqCst);
        last_wake = Instant::now();
        if fds[0].revents & libc::POLLIN != 0 {
            let mut buf = 0u64;
            // SAFETY: reading 8 bytes into a valid u64 from our eventfd.
            unsafe { libc::read(shared.wake.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
        }
    }
}

fn shutting_and_empty(shutting: bool, queue: &VecDeque<Task>) -> bool {
    shutting && queue.is_empty()
}

/// Read everything a worker has sent so far; `true` if its socket closed.
fn drain_socket(w: &mut Worker) -> bool {
    const CHUNK: usize = 1 << 16;
    loop {
        let len = w.rbuf.len();
        w.rbuf.reserve(CHUNK);
        let spare = w.rbuf.capacity() - len;
        // SAFETY: the pointer and length describe the vector's spare
        // capacity, which recvmsg(2) may fill; the length is only extended
        // by the count it reports written.
        let got = unsafe { recv_with_fds(&w.sock, w.rbuf.as_mut_ptr().add(len), spare, &mut w.fds) };
        match got {
            Ok(0) => return true,
            // SAFETY: recvmsg(2) initialised these `n` bytes.
            Ok(n) => unsafe { w.rbuf.set_len(len + n) },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// `read`, except that descriptors a worker sent along (SCM_RIGHTS, with a
/// result whose buffers are in shared memory) are kept, not discarded.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes.
unsafe fn recv_with_fds(sock: &UnixStream, buf: *mut u8, len: usize, fds: &mut VecDeque<OwnedFd>) -> std::io::Result<usize> {
    const MAX_FDS: usize = 8;
    let mut cbuf = [0u64; 64]; // u64s: cmsg alignment
    let mut iov = libc::iovec { iov_base: buf.cast(), iov_len: len };
    // SAFETY: a zeroed msghdr is valid; we fill in the pointers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    debug_assert!(msg.msg_controllen <= std::mem::size_of_val(&cbuf));
    // SAFETY: `msg` points at `iov` (into `buf`) and `cbuf`, all valid for
    // the call; the socket is non-blocking.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: walking the control buffer the kernel just filled, with the
    // CMSG_* accessors, within `msg_controllen`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    // The kernel installed it for us: we own it now.
                    fds.push_back(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(n as usize)
}

/// Write what the socket takes now of a worker's pending task frames.
fn flush_nb(w: &mut Worker) {
    let mut sent = 0;
    while sent < w.wbuf.len() {
        match w.sock.write(&w.wbuf[sent..]) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // WouldBlock: poll() tells us when to go on. Anything else: the
            // worker is gone, which the next read notices.
            Err(_) => break,
        }
    }
    w.wbuf.drain(..sent);
}

fn parse_frames(w: &mut Worker, done: &mut Vec<Done>, shared: &Shared) {
    let mut pos = 0;
    let mut results = 0u32;
    let mut first_sent: Option<Instant> = None;
    loop {
        let avail = &w.rbuf[pos..];
        if avail.len() < HEADER {
            break;
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if avail.len() < 4 + len {
            break;
        }
        let kind = avail[4];
        let body: &[u8] = &w.rbuf[pos + 5..pos + 4 + len];
        pos += 4 + len;
        match kind {
            b'S' => w.ready = true,
            b'F' => {
                *shared.broken.lock() = Some(format!(
                    "A process in the process pool was terminated abruptly while the future was running or pending: its initializer failed\n{}",
                    String::from_utf8_lossy(body)
                ));
            }
            b'R' | b'E' if body.len() >= 8 => {
                let id = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
                // Workers run their tasks in order: this is the front one.
                if w.inflight.front().map(|f| f.task.id) == Some(id) {
                    let f = w.inflight.pop_front().expect("front exists");
                    results += 1;
                    first_sent.get_or_insert(f.sent_at);
                    let mut exec = shared.executing.lock();
                    exec.remove(&id);
                    w.tasks_done += 1;
                    if let Some(next) = w.inflight.front_mut() {
                        exec.insert(next.task.id);
                        next.deadline = next.task.timeout.map(|d| Instant::now() + d);
                    }
                    drop(exec);
                    let bytes = body[8..].to_vec();
                    let shm = ShmGuard::received(&bytes, &mut w.fds);
                    if let Some(p) = shm.as_ref().and_then(|g| g.path()) {
                        w.reported.insert(p.to_path_buf());
                    }
                    let p = Pickled { is_error: kind == b'E', _shm: shm, bytes: Arc::new(bytes) };
                    // Usually no interpreter is needed: the bytes are kept
                    // and decoded by whoever reads the result.
                    match f.task.future.get().finish_pickled_detached(p) {
                        Ok(cbs) if cbs.is_empty() => {}
                        Ok(cbs) => done.push(Done::Callbacks(f.task.future, cbs)),
                        Err(p) => done.push(Done::Attached(f.task.future, p)),
                    }
                }
            }
            _ => {}
        }
    }
    w.rbuf.drain(..pos);
    if let Some(sent) = first_sent {
        // The time these results took, from when the first of them could
        // start (sent, or the previous results read) until now.
        let now = Instant::now();
        let per_task = now.saturating_duration_since(w.last_read.max(sent)) / results;
        w.depth = if per_task < FAST_TASK { (w.depth * 2).min(MAX_DEPTH) } else { BASE_DEPTH };
        w.last_read = now;
    }
}

static DUMPS_CALL: pyo3::sync::PyOnceLock<Obj> = pyo3::sync::PyOnceLock::new();
static FUTURE_TYPE: pyo3::sync::PyOnceLock<Obj> = pyo3::sync::PyOnceLock::new();

/// Turn completions into finished futures (attached).
fn complete(py: Python<'_>, done: Vec<Done>) {
    for d in done {
        let r = (|| -> PyResult<()> {
            match d {
                Done::Attached(f, p) => {
                    let res = match decode_pickled(py, &p) {
                        Ok(v) => Resolution::Value(v),
                        Err(e) => Resolution::Error(e),
                    };
                    if !f.get().is_done() {
                        FutureCore::finish(f.bind(py), res)?;
                    }
                }
                Done::Callbacks(f, cbs) => {
                    run_callbacks_of(f.bind(py), cbs)?;
                }
                Done::Failed(f, kind, msg) => {
                    let exc = match kind {
                        FailKind::Timeout => cf_error(py, "TimeoutError", (msg,)).into_value(py).into_any(),
                        FailKind::WorkerDied | FailKind::Broken => {
                            let cls = py.import("plait.futures")?.getattr(match kind {
                                FailKind::WorkerDied => "WorkerDied",
                                _ => "BrokenProcessPool",
                            })?;
                            cls.call1((msg,))?.unbind()
                        }
                    };
                    if !f.get().is_done() {
                        FutureCore::finish(f.bind(py), Resolution::Error(exc))?;
                    }
                }
                Done::Cancelled(f) => {
                    FutureCore::cancel(f.bind(py))?;
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            e.write_unraisable(py, None);
        }
    }
}

/// The Rust part of `plait.futures.ProcessPoolExecutor`.
#[pyclass(module = "plait.futures", name = "_ProcessPoolCore", subclass, frozen)]
pub struct ProcessPoolCore {
    shared: Arc<Shared>,
    next_id: std::sync::atomic::AtomicU64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    default_timeout: Mutex<Option<f64>>,
}

#[pymethods]
impl ProcessPoolCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>) -> PyResult<Self> {
        // SAFETY: eventfd has no preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(ProcessPoolCore {
            shared: Arc::new(Shared {
                cmds: Mutex::new(VecDeque::new()),
                wake,
                sleeping: AtomicBool::new(false),
                done: CoreEvent::new(),
                broken: Mutex::new(None),
                closed: AtomicBool::new(false),
                shut: AtomicBool::new(false),
                executing: Mutex::new(std::collections::HashSet::new()),
            }),
            next_id: std::sync::atomic::AtomicU64::new(1),
            thread: Mutex::new(None),
            default_timeout: Mutex::new(None),
        })
    }

    /// Start the supervisor (once, at the first submit). `zygote`: the pid
    /// and socket of a zygote the caller forked, which then forks workers.
    /// Does nothing after shutdown.
    #[pyo3(signature = (python, max_workers, max_tasks_per_child, setup, inherit_fds, default_timeout, zygote))]
    #[allow(clippy::too_many_arguments)]
    fn _plait_start(
        &self,
        python: String,
        max_workers: usize,
        max_tasks_per_child: Option<usize>,
        setup: Option<Vec<u8>>,
        inherit_fds: Vec<i32>,
        default_timeout: Option<f64>,
        zygote: Option<(i32, i32)>,
    ) -> PyResult<()> {
        let zygote = zygote.map(|(pid, fd)| {
            // SAFETY: the caller hands over this socket (it detached it
            // from its Python object); nothing else owns or closes it.
            let sock = unsafe { UnixStream::from_raw_fd(fd) };
            // The zygote answers at once; never let a wedged one stall the
            // supervisor for good.
            let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
            Zygote { pid, sock }
        });
        let mut thread = self.thread.lock();
        if thread.is_some() || self.shared.closed.load(Ordering::Acquire) {
            return Ok(()); // dropping `zygote` stops and reaps it
        }
        *self.default_timeout.lock() = default_timeout;
        let cfg = Config { python, max_workers, max_tasks_per_child, setup, inherit_fds, zygote };
        let shared = Arc::clone(&self.shared);
        let handle = std::thread::Builder::new()
            .name("plait-process-pool".into())
            .spawn(move || supervise(shared, cfg))
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the pool supervisor: {e}")))?;
        *thread = Some(handle);
        Ok(())
    }

    /// Whether the supervisor was started.
    #[getter]
    fn _plait_started(&self) -> bool {
        self.thread.lock().is_some() || self.shared.shut.load(Ordering::Acquire)
    }

    /// `submit` / `schedule`: pickle the call here (the submitting thread),
    /// make the future, queue the task. `timeout` None: the pool default.
    #[pyo3(signature = (func, args, kwargs, timeout))]
    fn _plait_submit_call(
        &self,
        py: Python<'_>,
        func: Obj,
        args: Obj,
        kwargs: Obj,
        timeout: Option<f64>,
    ) -> PyResult<Obj> {
        if let Some(msg) = self.shared.broken.lock().clone() {
            let cls = py.import("concurrent.futures.process")?.getattr("BrokenProcessPool")?;
            return Err(PyErr::from_value(cls.call1((msg,))?));
        }
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(PyRuntimeError::new_err("cannot schedule new futures after shutdown"));
        }
        let dumps = DUMPS_CALL.get_or_try_init(py, || py.import("plait.futures")?.getattr("_dumps_call").map(Bound::unbind))?;
        let ftype = FUTURE_TYPE.get_or_try_init(py, || py.import("plait.futures")?.getattr("Future").map(Bound::unbind))?;
        let fut_obj = ftype.bind(py).call0()?;
        let fut = fut_obj.cast::<FutureCore>()?;
        let payload: Vec<u8> = match dumps.bind(py).call1((func, args, kwargs)) {
            Ok(p) => p.cast::<PyBytes>()?.as_bytes().to_vec(),
            Err(e) => {
                // As CPython: a call that cannot be sent fails its future.
                FutureCore::finish(fut, Resolution::Error(e.into_value(py).into_any()))?;
                return Ok(fut_obj.unbind());
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let weak = Arc::downgrade(&self.shared);
        fut.get().set_cancel_running(Box::new(move || match weak.upgrade() {
            // Only the task a worker is executing can be stopped (by killing
            // it); one still waiting in a worker's socket runs, as a RUNNING
            // future does in CPython, and cancel() says False.
            Some(shared) if shared.executing.lock().contains(&id) => {
                shared.send(Cmd::Cancel(id));
                true
            }
            _ => false,
        }));
        let timeout = timeout.or(*self.default_timeout.lock()).map(|t| Duration::from_secs_f64(t.max(0.0)));
        let shm = ShmGuard::of(&payload);
        self.shared.send(Cmd::Submit(Task { id, payload, future: fut.clone().unbind(), timeout, marked_running: false, _shm: shm }));
        Ok(fut_obj.unbind())
    }

    /// Kill the worker running task `id` (its future was cancelled).
    fn _plait_kill_task(&self, id: u64) {
        self.shared.send(Cmd::Cancel(id));
    }

    #[pyo3(signature = (cancel_futures, kill))]
    fn _plait_shutdown(&self, cancel_futures: bool, kill: bool) {
        {
            // Never started: nothing to stop (and `_plait_start` will not
            // start it now).
            let thread = self.thread.lock();
            self.shared.closed.store(true, Ordering::Release);
            if thread.is_none() {
                self.shared.shut.store(true, Ordering::Release);
                self.shared.done.set();
                return;
            }
        }
        self.shared.send(Cmd::Shutdown { cancel_futures, kill });
        self.shared.poke();
    }

    /// Wait (Ctrl-C aware) until the supervisor has stopped every worker.
    #[pyo3(signature = (timeout = None))]
    fn _plait_wait_stopped(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = timeout.map(deadline_in);
        let done = &self.shared.done;
        let (out, err) = detached(py, deadline, |ctx| done.wait(ctx));
        if let Some(e) = err {
            return Err(e);
        }
        let stopped = out == plait_core::park::Outcome::Notified;
        if stopped {
            if let Some(h) = self.thread.lock().take() {
                py.detach(|| {
                    let _ = h.join();
                });
            }
        }
        Ok(stopped)
    }

    #[getter]
    fn _broken(&self, py: Python<'_>) -> Obj {
        match self.shared.broken.lock().clone() {
            Some(m) => pyo3::types::PyString::new(py, &m).into_any().unbind(),
            None => false.into_pyobject(py).unwrap().to_owned().into_any().unbind(),
        }
    }
}

impl Drop for ProcessPoolCore {
    fn drop(&mut self) {
        // Collected without shutdown: stop the workers once the queue drains.
        if !self.shared.shut.load(Ordering::Acquire) {
            self.shared.send(Cmd::Shutdown { cancel_futures: false, kill: false });
        }
    }
}

/// `os.fork()` for the zygote: the new process is a child of the zygote's
/// parent, not of the zygote (see `plait_core::fork::fork_sibling`), with
/// CPython's fork hooks run around it as `os.fork` runs them. With
/// `die_with_parent`, the child gets SIGKILL when that parent dies.
#[pyfunction]
fn _fork_sibling(die_with_parent: bool) -> PyResult<i32> {
    if plait_core::fork::thread_count() != Some(1) {
        return Err(PyRuntimeError::new_err("_fork_sibling needs a single-threaded process"));
    }
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    // SAFETY: called attached to the interpreter, as CPython requires of
    // PyOS_BeforeFork and of the matching AfterFork call below.
    unsafe { pyo3::ffi::PyOS_BeforeFork() };
    // SAFETY: this process has one thread (checked above), and here, in a
    // Rust function called from Python, it holds no libc-internal lock.
    let r = unsafe { plait_core::fork::fork_sibling() };
    match r {
        Ok(0) => {
            if die_with_parent {
                // SAFETY: prctl and getppid have no memory-safety
                // preconditions; _exit never returns.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if libc::getppid() != parent {
                        libc::_exit(1); // the parent died already
                    }
                }
            }
            // SAFETY: in the new process, still attached, after BeforeFork.
            unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
            Ok(0)
        }
        Ok(pid) => {
            // SAFETY: in the calling process, attached, after BeforeFork.
            unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
            Ok(pid)
        }
        Err(e) => {
            // SAFETY: as above: the fork failed, this is the caller.
            unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
            Err(e.into())
        }
    }
}

/// Get SIGKILL when the parent dies (`PR_SET_PDEATHSIG`); `parent` is the
/// pid the parent had: if it is gone already, exit now. 0: do nothing.
#[pyfunction]
fn _die_with_parent(parent: i32) {
    if parent == 0 {
        return;
    }
    // SAFETY: prctl and getppid have no memory-safety preconditions;
    // _exit never returns.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
}

/// In a worker: keep large freed blocks for reuse. glibc serves a 10 MiB
/// `bytes` from a fresh mapping every time (its adaptive threshold lands
/// exactly at the block's size), which the kernel must fault in and zero
/// again: about 2 ms of a 10 MiB argument's trip. Workers are plait's own
/// processes, so their allocator is tuned; the parent's is left alone.
#[pyfunction]
fn _worker_malloc_tuning() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before the
    // worker allocates large blocks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// Whether this process dies with its parent (`PR_GET_PDEATHSIG`).
#[pyfunction]
fn _dies_with_parent() -> bool {
    let mut sig: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int through the pointer.
    unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int) };
    sig != 0
}

/// This process's thread count (all threads, not only Python's).
#[pyfunction]
fn _thread_count() -> Option<usize> {
    plait_core::fork::thread_count()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_fork_sibling, m)?)?;
    m.add_function(wrap_pyfunction!(_thread_count, m)?)?;
    m.add_function(wrap_pyfunction!(_die_with_parent, m)?)?;
    m.add_function(wrap_pyfunction!(_dies_with_parent, m)?)?;
    m.add_function(wrap_pyfunction!(_worker_malloc_tuning, m)?)?;
    m.add_class::<ProcessPoolCore>()?;
    Ok(())
}
