//! The ProcessPoolExecutor's supervisor: one Rust thread per pool.
//!
//! Workers are fresh interpreters (`python -m plait._worker FD`) started
//! with `posix_spawn`-style process creation, never by forking the parent,
//! each connected by a socketpair. The supervisor owns every worker socket
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

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use plait_core::future::Resolution;
use plait_core::sync::Event as CoreEvent;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::futures::{cf_error, FutureCore};
use crate::wait::{deadline_in, detached};

type Obj = Py<PyAny>;

const HEADER: usize = 5; // u32 length (kind + payload) | u8 kind

fn frame(kind: u8, payload: &[&[u8]]) -> Vec<u8> {
    let len: usize = 1 + payload.iter().map(|p| p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(kind);
    for p in payload {
        out.extend_from_slice(p);
    }
    out
}

/// One submitted call.
struct Task {
    id: u64,
    payload: Vec<u8>,
    future: Py<FutureCore>,
    timeout: Option<Duration>,
}

enum Cmd {
    Submit(Task),
    Cancel(u64),
    Shutdown { cancel_futures: bool, kill: bool },
}

/// What the Python object and the supervisor thread share.
struct Shared {
    cmds: Mutex<VecDeque<Cmd>>,
    wake: OwnedFd,
    done: CoreEvent,
    broken: Mutex<Option<String>>,
    shut: AtomicBool,
}

impl Shared {
    fn send(&self, cmd: Cmd) {
        self.cmds.lock().push_back(cmd);
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
    setup: Vec<u8>,
}

enum WorkerState {
    Starting,
    Idle,
    Busy { task: u64, deadline: Option<Instant> },
}

struct Worker {
    child: Child,
    sock: UnixStream,
    state: WorkerState,
    tasks_done: usize,
    rbuf: Vec<u8>,
    crash_log: std::path::PathBuf,
}

/// Messages the supervisor turns into future completions while attached.
enum Done {
    Value(Py<FutureCore>, Vec<u8>),
    Raised(Py<FutureCore>, Vec<u8>),
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

fn spawn_worker(cfg: &Config, id: usize) -> std::io::Result<Worker> {
    let (parent, child_end) = UnixStream::pair()?;
    let child_fd = child_end.as_raw_fd();
    let crash_log = std::env::temp_dir().join(format!("plait-worker-{}-{}-{}.log", std::process::id(), id, child_fd));
    let mut cmd = Command::new(&cfg.python);
    cmd.args(["-m", "plait._worker", &child_fd.to_string()]);
    cmd.env("PLAIT_WORKER_CRASH_LOG", &crash_log);
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls async-signal-safe functions (fcntl, prctl, signal).
    unsafe {
        cmd.pre_exec(move || {
            // Keep our end across exec; everything else stays CLOEXEC.
            libc::fcntl(child_fd, libc::F_SETFD, 0);
            // Die with the parent; ignore Ctrl-C aimed at the terminal's
            // process group (the parent handles it).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(child_end);
    let mut sock = parent;
    sock.write_all(&frame(b'I', &[&cfg.setup]))?;
    sock.set_nonblocking(true)?;
    Ok(Worker { child, sock, state: WorkerState::Starting, tasks_done: 0, rbuf: Vec::new(), crash_log })
}

/// The supervisor loop. Runs without the GIL except to complete futures.
fn supervise(shared: Arc<Shared>, cfg: Config) {
    let mut workers: Vec<Worker> = Vec::new();
    let mut queue: VecDeque<Task> = VecDeque::new();
    let mut running: HashMap<u64, Py<FutureCore>> = HashMap::new();
    let mut shutting = false;
    let mut next_worker_id = 0usize;
    loop {
        let mut done: Vec<Done> = Vec::new();
        // 1. Commands.
        let cmds: Vec<Cmd> = shared.cmds.lock().drain(..).collect();
        for cmd in cmds {
            match cmd {
                Cmd::Submit(t) => queue.push_back(t),
                Cmd::Cancel(id) => {
                    if let Some(pos) = workers.iter().position(|w| matches!(w.state, WorkerState::Busy { task, .. } if task == id)) {
                        let w = workers.remove(pos);
                        kill_and_reap(w);
                        running.remove(&id);
                    }
                }
                Cmd::Shutdown { cancel_futures, kill } => {
                    shutting = true;
                    if cancel_futures {
                        for t in queue.drain(..) {
                            done.push(Done::Cancelled(t.future));
                        }
                    }
                    if kill {
                        for w in workers.drain(..) {
                            if let WorkerState::Busy { task, .. } = w.state {
                                if let Some(f) = running.remove(&task) {
                                    done.push(Done::Failed(f, FailKind::WorkerDied, "the worker was killed by shutdown(kill_workers=True)".into()));
                                }
                            }
                            kill_and_reap(w);
                        }
                        for t in queue.drain(..) {
                            done.push(Done::Cancelled(t.future));
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
            let mut dead = false;
            let mut chunk = [0u8; 65536];
            loop {
                match workers[i].sock.read(&mut chunk) {
                    Ok(0) => {
                        dead = true;
                        break;
                    }
                    Ok(n) => workers[i].rbuf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        dead = true;
                        break;
                    }
                }
            }
            parse_frames(&mut workers[i], &mut running, &mut done, &shared);
            if dead {
                let mut w = workers.remove(i);
                let status = w.child.wait().ok();
                if let WorkerState::Busy { task, .. } = w.state {
                    if let Some(f) = running.remove(&task) {
                        let how = match status {
                            Some(s) if s.signal().is_some() => format!("died with {}", signal_name(s.signal().unwrap_or(0))),
                            Some(s) => format!("exited with code {}", s.code().unwrap_or(-1)),
                            None => "died".to_string(),
                        };
                        let log = std::fs::read_to_string(&w.crash_log).unwrap_or_default();
                        let mut msg = format!("worker process {} {} while running this task", w.child.id(), how);
                        if !log.trim().is_empty() {
                            msg.push_str("; its last traceback:\n");
                            msg.push_str(log.trim_end());
                        }
                        done.push(Done::Failed(f, FailKind::WorkerDied, msg));
                    }
                }
                let _ = std::fs::remove_file(&w.crash_log);
                continue;
            }
            i += 1;
        }
        // 3. Time limits.
        let now = Instant::now();
        let mut i = 0;
        while i < workers.len() {
            if let WorkerState::Busy { task, deadline: Some(d) } = workers[i].state {
                if now >= d {
                    let w = workers.remove(i);
                    kill_and_reap(w);
                    if let Some(f) = running.remove(&task) {
                        done.push(Done::Failed(f, FailKind::Timeout, "the task exceeded its time limit; its worker was killed".into()));
                    }
                    continue;
                }
            }
            i += 1;
        }
        // 4. Retire workers that reached max_tasks_per_child.
        if let Some(max) = cfg.max_tasks_per_child {
            workers.retain_mut(|w| {
                if matches!(w.state, WorkerState::Idle) && w.tasks_done >= max {
                    let _ = w.sock.shutdown(std::net::Shutdown::Both);
                    let _ = w.child.wait();
                    false
                } else {
                    true
                }
            });
        }
        // 5. Start workers on demand.
        let mut idle = workers.iter().filter(|w| matches!(w.state, WorkerState::Idle | WorkerState::Starting)).count();
        let broken = shared.broken.lock().is_some();
        while !broken && queue.len() > idle && workers.len() < cfg.max_workers {
            match spawn_worker(&cfg, next_worker_id) {
                Ok(w) => workers.push(w),
                Err(e) => {
                    *shared.broken.lock() = Some(format!("cannot start a worker process: {e}"));
                    break;
                }
            }
            next_worker_id += 1;
            idle += 1;
        }
        // 6. Dispatch to idle workers (marking futures running needs the GIL).
        let mut dispatch: Vec<(usize, Task)> = Vec::new();
        for (wi, w) in workers.iter().enumerate() {
            if matches!(w.state, WorkerState::Idle) {
                match queue.pop_front() {
                    Some(t) => dispatch.push((wi, t)),
                    None => break,
                }
            }
        }
        if !dispatch.is_empty() || !done.is_empty() {
            let (started, leftovers) = Python::attach(|py| {
                complete(py, std::mem::take(&mut done));
                let mut started = Vec::new();
                let mut leftovers = Vec::new();
                for (wi, t) in dispatch {
                    match FutureCore::set_running_or_notify_cancel(t.future.bind(py)) {
                        Ok(true) => started.push((wi, t)),
                        Ok(false) => {}
                        Err(_) => leftovers.push(t),
                    }
                }
                (started, leftovers)
            });
            drop(leftovers);
            for (wi, t) in started {
                let w = &mut workers[wi];
                let f = frame(b'T', &[&t.id.to_le_bytes(), &t.payload]);
                // The socket is non-blocking; tasks are small next to the
                // socket buffer, so write in a blocking loop over EAGAIN.
                if write_all_nb(&mut w.sock, &f).is_err() {
                    // Its death is noticed on the next read.
                }
                w.state = WorkerState::Busy { task: t.id, deadline: t.timeout.map(|d| Instant::now() + d) };
                running.insert(t.id, t.future);
            }
        }
        // 7. Finished shutting down?
        if shutting && queue.is_empty() && running.is_empty() {
            for mut w in workers.drain(..) {
                let _ = w.sock.shutdown(std::net::Shutdown::Both);
                let _ = w.child.wait();
                let _ = std::fs::remove_file(&w.crash_log);
            }
            shared.shut.store(true, Ordering::Release);
            shared.done.set();
            return;
        }
        // 8. Wait for input, a command or the next deadline.
        let next_deadline = workers
            .iter()
            .filter_map(|w| match w.state {
                WorkerState::Busy { deadline, .. } => deadline,
                _ => None,
            })
            .min();
        let timeout_ms = match next_deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).as_millis().min(1000) as i32 + 1,
            None => 1000,
        };
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(workers.len() + 1);
        fds.push(libc::pollfd { fd: shared.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        for w in &workers {
            fds.push(libc::pollfd { fd: w.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if fds[0].revents & libc::POLLIN != 0 {
            let mut buf = 0u64;
            // SAFETY: reading 8 bytes into a valid u64 from our eventfd.
            unsafe { libc::read(shared.wake.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
        }
    }
}

fn write_all_nb(sock: &mut UnixStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match sock.write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut p = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 100) };
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn kill_and_reap(mut w: Worker) {
    let _ = w.child.kill();
    let _ = w.child.wait();
    let _ = std::fs::remove_file(&w.crash_log);
}

fn parse_frames(w: &mut Worker, running: &mut HashMap<u64, Py<FutureCore>>, done: &mut Vec<Done>, shared: &Shared) {
    loop {
        if w.rbuf.len() < HEADER {
            return;
        }
        let len = u32::from_le_bytes([w.rbuf[0], w.rbuf[1], w.rbuf[2], w.rbuf[3]]) as usize;
        if w.rbuf.len() < 4 + len {
            return;
        }
        let kind = w.rbuf[4];
        let body: Vec<u8> = w.rbuf[5..4 + len].to_vec();
        w.rbuf.drain(..4 + len);
        match kind {
            b'S' => w.state = WorkerState::Idle,
            b'F' => {
                *shared.broken.lock() = Some(format!(
                    "A process in the process pool was terminated abruptly while the future was running or pending: its initializer failed\n{}",
                    String::from_utf8_lossy(&body)
                ));
            }
            b'R' | b'E' if body.len() >= 8 => {
                let id = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
                w.state = WorkerState::Idle;
                w.tasks_done += 1;
                if let Some(f) = running.remove(&id) {
                    let payload = body[8..].to_vec();
                    done.push(if kind == b'R' { Done::Value(f, payload) } else { Done::Raised(f, payload) });
                }
            }
            _ => {}
        }
    }
}

/// Turn completions into finished futures (attached).
fn complete(py: Python<'_>, done: Vec<Done>) {
    for d in done {
        let r = (|| -> PyResult<()> {
            match d {
                Done::Value(f, bytes) => {
                    let res = match py.import("pickle")?.call_method1("loads", (PyBytes::new(py, &bytes),)) {
                        Ok(v) => Resolution::Value(v.unbind()),
                        Err(e) => Resolution::Error(e.into_value(py).into_any()),
                    };
                    if !f.get().is_done() {
                        FutureCore::finish(f.bind(py), res)?;
                    }
                }
                Done::Raised(f, bytes) => {
                    let exc = remote_exception(py, &bytes)?;
                    if !f.get().is_done() {
                        FutureCore::finish(f.bind(py), Resolution::Error(exc))?;
                    }
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

/// Rebuild a worker's exception, with the remote traceback as its cause
/// (as CPython's process pool does).
fn remote_exception(py: Python<'_>, bytes: &[u8]) -> PyResult<Obj> {
    let tup = py.import("pickle")?.call_method1("loads", (PyBytes::new(py, bytes),))?;
    let tup = tup.cast::<PyTuple>()?;
    let (exc, name, message, tb): (Bound<'_, PyAny>, String, String, String) = tup.extract()?;
    let exc = if exc.is_none() {
        PyRuntimeError::new_err(format!("{name}: {message} (the exception could not be pickled)"))
            .into_value(py)
            .into_any()
            .into_bound(py)
    } else {
        exc
    };
    let remote = py.import("concurrent.futures.process")?.getattr("_RemoteTraceback")?;
    let cause = remote.call1((format!("\n\"\"\"\n{}\"\"\"", tb),))?;
    exc.setattr("__cause__", cause)?;
    Ok(exc.unbind())
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
                done: CoreEvent::new(),
                broken: Mutex::new(None),
                shut: AtomicBool::new(false),
            }),
            next_id: std::sync::atomic::AtomicU64::new(1),
            thread: Mutex::new(None),
            default_timeout: Mutex::new(None),
        })
    }

    /// Start the supervisor (called once from `__init__`).
    #[pyo3(signature = (python, max_workers, max_tasks_per_child, setup, default_timeout))]
    fn _plait_start(
        &self,
        python: String,
        max_workers: usize,
        max_tasks_per_child: Option<usize>,
        setup: Vec<u8>,
        default_timeout: Option<f64>,
    ) -> PyResult<()> {
        *self.default_timeout.lock() = default_timeout;
        let cfg = Config { python, max_workers, max_tasks_per_child, setup };
        let shared = Arc::clone(&self.shared);
        let handle = std::thread::Builder::new()
            .name("plait-process-pool".into())
            .spawn(move || supervise(shared, cfg))
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the pool supervisor: {e}")))?;
        *self.thread.lock() = Some(handle);
        Ok(())
    }

    /// Queue a pickled call for `future`; returns its task id.
    #[pyo3(signature = (future, payload, timeout))]
    fn _plait_submit(&self, future: Py<FutureCore>, payload: Vec<u8>, timeout: Option<f64>) -> PyResult<u64> {
        if let Some(msg) = self.shared.broken.lock().clone() {
            return Err(PyRuntimeError::new_err(msg));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let timeout = timeout.or(*self.default_timeout.lock()).map(|t| Duration::from_secs_f64(t.max(0.0)));
        self.shared.send(Cmd::Submit(Task { id, payload, future, timeout }));
        Ok(id)
    }

    /// Kill the worker running task `id` (its future was cancelled).
    fn _plait_kill_task(&self, id: u64) {
        self.shared.send(Cmd::Cancel(id));
    }

    #[pyo3(signature = (cancel_futures, kill))]
    fn _plait_shutdown(&self, cancel_futures: bool, kill: bool) {
        self.shared.send(Cmd::Shutdown { cancel_futures, kill });
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

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ProcessPoolCore>()?;
    Ok(())
}
