//! `_ProcessPoolCore`, the Rust part of `plait.futures.ProcessPoolExecutor`,
//! and the [`Host`] that lets `plait_core::pool`'s supervisor reach Python.
//!
//! A call is pickled in the submitting thread (`plait.futures._dumps_call`)
//! and queued as a [`Task`] whose handle is its future. The supervisor
//! (see `plait_core::pool` and its README) runs detached: it marks futures
//! running and finishes them with the result's bytes without the
//! interpreter when nothing in Python watches them (the bytes are unpickled
//! by whoever reads the result), and attaches once per batch, in
//! [`Host::deliver`], for the rest: unpickling, exceptions
//! (`WorkerDied`, `BrokenProcessPool`, `TimeoutError`), done-callbacks.

use std::mem::ManuallyDrop;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use plait_core::future::{InvalidState, Resolution, State};
use plait_core::pool::{self, CancelOutcome, Claims, Ending, Failure, Host, Policy, Reply, Shared, Start, Task, Ticket, Zygote};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::errors;
use crate::futures::{decode_pickled, run_callbacks_of, FutureCore, Pickled, PoolTask};
use crate::process::shm::ShmGuard;
use crate::wait::{deadline_in, detached, interrupted_error};

type Obj = Py<PyAny>;

/// What a task carries besides its bytes.
struct Job {
    /// Dropped through [`crate::release::drop_soon`]: the supervisor drops
    /// jobs detached.
    future: ManuallyDrop<Py<FutureCore>>,
    /// The call's shared-memory segment, unlinked if no worker took it.
    _shm: Option<Arc<ShmGuard>>,
}

impl Job {
    /// The future, for a completion delivered attached (see `Done`).
    fn into_future(self) -> Py<FutureCore> {
        let mut me = ManuallyDrop::new(self);
        drop(me._shm.take());
        // SAFETY: `me` is never dropped, so `future` is taken exactly once.
        unsafe { ManuallyDrop::take(&mut me.future) }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // SAFETY: `future` is not used again: this is the Job's drop.
        let future = unsafe { ManuallyDrop::take(&mut self.future) };
        crate::release::drop_soon(future);
    }
}

/// Completions made attached, in [`Host::deliver`].
enum Done {
    /// Finish attached (something in Python watches the future).
    Attached(Py<FutureCore>, Pickled),
    /// Finished detached; its done-callbacks still have to run.
    Callbacks(Py<FutureCore>, Vec<Obj>),
    Failed(Py<FutureCore>, Failure, String),
    Cancelled(Py<FutureCore>),
}

/// The binding's side of the supervisor.
struct PyHost;

impl Host for PyHost {
    type Task = Job;
    type Pending = Done;

    #[inline]
    fn try_start(&self, job: &Job) -> Start {
        match job.future.get().try_set_running_detached() {
            // Running already: a cancel() found its claim started.
            Some(Ok(true)) | Some(Err(InvalidState(State::Running))) => Start::Running,
            Some(Ok(false)) | Some(Err(_)) => Start::Cancelled,
            None => Start::Attach,
        }
    }

    #[inline]
    fn promoted(&self, job: &Job) {
        job.future.get().mark_started();
    }

    #[inline]
    fn runs_in(&self, job: &Job, pid: u32) {
        job.future.get().core.set_worker(pid);
    }

    #[inline]
    fn debug_id(&self, job: &Job) -> usize {
        plait_core::debug::id_of(&*job.future.get().core)
    }

    #[inline]
    fn result(&self, job: Job, reply: Reply<'_>, pending: &mut Vec<Done>) -> Option<PathBuf> {
        let bytes = reply.body.to_vec();
        let shm = ShmGuard::received(&bytes, reply.fds);
        let segment = shm.as_ref().and_then(|g| g.path()).map(|p| p.to_path_buf());
        let p = Pickled { is_error: reply.is_error, _shm: shm, bytes: Arc::new(bytes) };
        // Usually no interpreter is needed: the bytes are kept and decoded
        // by whoever reads the result.
        match job.future.get().finish_pickled_detached(p) {
            Ok(cbs) if cbs.is_empty() => {}
            Ok(cbs) => pending.push(Done::Callbacks(job.into_future(), cbs)),
            Err(p) => pending.push(Done::Attached(job.into_future(), p)),
        }
        segment
    }

    fn ended(&self, job: Job, how: Ending, pending: &mut Vec<Done>) {
        pending.push(match how {
            Ending::Failed(kind, msg) => Done::Failed(job.into_future(), kind, msg),
            Ending::Cancelled => Done::Cancelled(job.into_future()),
        });
    }

    fn deliver(
        &self,
        done: Vec<Done>,
        starting: Vec<(usize, Task<Job>)>,
        started: &mut Vec<(usize, Task<Job>)>,
        refused: &mut Vec<Task<Job>>,
    ) {
        Python::attach(|py| {
            complete(py, done);
            for (wi, t) in starting {
                let f = t.handle.future.get();
                if f.mark_started() {
                    started.push((wi, t));
                    continue;
                }
                match FutureCore::set_running_or_notify_cancel(t.handle.future.bind(py)) {
                    Ok(true) => started.push((wi, t)),
                    _ => refused.push(t),
                }
            }
        });
    }
}


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
                        Failure::Timeout => errors::timeout(py, Some(&msg)),
                        Failure::WorkerDied => errors::worker_died(py, &msg),
                        Failure::Broken => errors::broken_process_pool(py, &msg),
                    }
                    .into_value(py)
                    .into_any();
                    if !f.get().is_done() {
                        FutureCore::finish(f.bind(py), Resolution::Error(exc))?;
                    }
                }
                Done::Cancelled(f) => {
                    // Cancelled (now, or by cancel() before its task
                    // started): its waiters are told, as an executor does.
                    let f = f.bind(py);
                    FutureCore::cancel_plain(f)?;
                    if f.get().core.state() == State::Cancelled {
                        FutureCore::set_running_or_notify_cancel(f)?;
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            e.write_unraisable(py, None);
        }
    }
}

/// How `cancel()` reaches a task of this pool (see `plait_core::pool::claim`).
struct TaskLink {
    id: u64,
    ticket: Arc<Ticket>,
    claims: Arc<Claims>,
    shared: std::sync::Weak<Shared<Job>>,
}

impl PoolTask for TaskLink {
    fn cancel_pending(&self, pending: &dyn Fn() -> bool) -> bool {
        self.ticket.cancel(&self.claims, self.id, pending) == CancelOutcome::Cancelled
    }

    fn kill_running(&self) -> bool {
        // Only the task a worker is executing can be stopped (by killing
        // its worker).
        match self.shared.upgrade() {
            Some(shared) if shared.is_executing(self.id) => {
                shared.cancel(self.id);
                true
            }
            _ => false,
        }
    }
}

/// The claim page of a pool, shared with its workers: a forked worker
/// inherits the mapping, a spawned one maps the descriptor (`fd`).
#[pyclass(module = "plait.futures", name = "_ClaimPage", frozen)]
pub struct ClaimPage(Arc<Claims>);

#[pymethods]
impl ClaimPage {
    /// A page for a pool of `max_workers` workers.
    #[new]
    fn new(max_workers: usize) -> PyResult<Self> {
        Ok(ClaimPage(Arc::new(Claims::shared(Policy::<(), ()>::slots_for(max_workers))?)))
    }

    /// Map the page of descriptor `fd` (inherited by a spawned worker,
    /// which hands it over).
    #[staticmethod]
    fn from_fd(fd: i32) -> PyResult<Self> {
        // SAFETY: the caller hands over an open descriptor it owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(ClaimPage(Arc::new(Claims::from_fd(fd)?)))
    }

    #[getter]
    fn fd(&self) -> i32 {
        self.0.fd().unwrap_or(-1)
    }

    /// In a worker, before running task `id` of slot `slot`: whether to
    /// run it (false: it was cancelled or taken back; skip it).
    fn start(&self, slot: usize, id: u64) -> bool {
        slot >= self.0.len() || self.0.start(slot, id)
    }
}

/// The Rust part of `plait.futures.ProcessPoolExecutor`.
#[pyclass(module = "plait.futures", name = "_ProcessPoolCore", subclass, frozen)]
pub struct ProcessPoolCore {
    shared: Arc<Shared<Job>>,
    next_id: AtomicU64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    default_timeout: Mutex<Option<f64>>,
    claims: Mutex<Option<Arc<Claims>>>,
    /// `plait_core::fork::generation()` when the supervisor started
    /// (`NOT_STARTED` before): a forked child sees another generation, and
    /// the pool's supervisor and workers are its parent's, not its own.
    started_in: AtomicU64,
}

const NOT_STARTED: u64 = u64::MAX;

impl ProcessPoolCore {
    /// Started in the process this was forked from: the supervisor thread
    /// did not survive the fork, and the workers are the parent's.
    fn foreign(&self) -> bool {
        let born = self.started_in.load(Ordering::Relaxed);
        born != NOT_STARTED && born != plait_core::fork::generation()
    }
}

#[pymethods]
impl ProcessPoolCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>) -> PyResult<Self> {
        Ok(ProcessPoolCore {
            shared: Arc::new(Shared::new()?),
            next_id: AtomicU64::new(1),
            thread: Mutex::new(None),
            default_timeout: Mutex::new(None),
            claims: Mutex::new(None),
            started_in: AtomicU64::new(NOT_STARTED),
        })
    }

    /// Start the supervisor (once, at the first submit). `zygote`: the pid
    /// and socket of a zygote the caller forked, which then forks workers.
    /// Does nothing after shutdown. `claims`: the page the workers were
    /// given (without one, cancel() cannot stop a prefetched task).
    /// `name`: what `plait.debug` calls the pool ("ProcessPoolExecutor-N",
    /// "Pool-N").
    #[pyo3(signature = (python, max_workers, max_tasks_per_child, setup, inherit_fds, default_timeout, zygote, *, claims = None, name = None))]
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
        claims: Option<PyRef<'_, ClaimPage>>,
        name: Option<String>,
    ) -> PyResult<()> {
        // SAFETY: the caller hands over this socket (it detached it from
        // its Python object), and the zygote is its child.
        let zygote = zygote.map(|(pid, fd)| unsafe { Zygote::adopt(pid, fd) });
        let mut thread = self.thread.lock();
        if thread.is_some() || self.shared.is_closed() {
            return Ok(()); // dropping `zygote` stops and reaps it
        }
        *self.default_timeout.lock() = default_timeout;
        let claims = match claims {
            Some(c) => Arc::clone(&c.0),
            None => Arc::new(Claims::local(Policy::<(), ()>::slots_for(max_workers))),
        };
        *self.claims.lock() = Some(Arc::clone(&claims));
        let launch = pool::worker::Launch { python, setup, inherit_fds, zygote };
        let cfg = pool::Config { max_workers, max_tasks_per_child, launch, claims: Some(claims) };
        let handle = pool::supervisor::start(Arc::clone(&self.shared), PyHost, cfg)
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the pool supervisor: {e}")))?;
        self.started_in.store(plait_core::fork::generation(), Ordering::Relaxed);
        *thread = Some(handle);
        drop(thread);
        let name = name.unwrap_or_else(|| "ProcessPoolExecutor".to_owned());
        let shared: Arc<dyn super::debug::PoolWorkers> = Arc::clone(&self.shared) as _;
        super::debug::register(name, Arc::downgrade(&shared));
        Ok(())
    }

    /// Whether the supervisor was started.
    #[getter]
    fn _plait_started(&self) -> bool {
        self.thread.lock().is_some() || self.shared.is_stopped()
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
        if let Some(msg) = self.shared.broken() {
            return Err(errors::broken_process_pool(py, &msg));
        }
        if self.foreign() {
            let msg = "this process pool was started by the parent of this forked process; \
                       its workers are the parent's (make a new pool in the child)";
            return Err(errors::broken_process_pool(py, msg));
        }
        if self.shared.is_closed() {
            return Err(PyRuntimeError::new_err("cannot schedule new futures after shutdown"));
        }
        let dumps = crate::futures::dumps_call(py)?;
        let fut_obj = crate::futures::future_type(py)?.call0()?;
        let fut = fut_obj.cast::<FutureCore>()?;
        crate::futures::label_call(&fut.get().core.probe, func.bind(py));
        let payload: Vec<u8> = match dumps.call1((func, args, kwargs)) {
            Ok(p) => p.cast::<PyBytes>()?.as_bytes().to_vec(),
            Err(e) => {
                // As CPython: a call that cannot be sent fails its future.
                FutureCore::finish(fut, Resolution::Error(e.into_value(py).into_any()))?;
                return Ok(fut_obj.unbind());
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let timeout = timeout.or(*self.default_timeout.lock()).map(|t| Duration::from_secs_f64(t.max(0.0)));
        let shm = ShmGuard::of(&payload);
        let task = Task::new(id, payload, timeout, Job { future: ManuallyDrop::new(fut.clone().unbind()), _shm: shm });
        if let Some(claims) = self.claims.lock().as_ref() {
            let link = TaskLink {
                id,
                ticket: Arc::clone(&task.ticket),
                claims: Arc::clone(claims),
                shared: Arc::downgrade(&self.shared),
            };
            fut.get().set_pool_task(Box::new(link));
        }
        self.shared.submit(task);
        Ok(fut_obj.unbind())
    }

    /// Kill the worker running task `id` (its future was cancelled).
    fn _plait_kill_task(&self, id: u64) {
        self.shared.cancel(id);
    }

    #[pyo3(signature = (cancel_futures, kill))]
    fn _plait_shutdown(&self, cancel_futures: bool, kill: bool) {
        if self.foreign() {
            return; // the parent's pool: the parent shuts it down
        }
        {
            // Never started: nothing to stop (and `_plait_start` will not
            // start it now).
            let thread = self.thread.lock();
            self.shared.close();
            if thread.is_none() {
                self.shared.set_stopped();
                return;
            }
        }
        self.shared.shutdown(cancel_futures, kill);
        self.shared.poke();
    }

    /// Wait (Ctrl-C aware) until the supervisor has stopped every worker.
    #[pyo3(signature = (timeout = None))]
    fn _plait_wait_stopped(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        if self.foreign() {
            return Ok(true); // no supervisor of ours to wait for
        }
        let deadline = timeout.map(deadline_in);
        let done = self.shared.stopped();
        let (out, err) = detached(py, deadline, |ctx| done.wait(ctx));
        if out == plait_core::park::Outcome::Interrupted || err.is_some() {
            return Err(interrupted_error(py, err));
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
        match self.shared.broken() {
            Some(m) => pyo3::types::PyString::new(py, &m).into_any().unbind(),
            None => false.into_pyobject(py).unwrap().to_owned().into_any().unbind(),
        }
    }
}

impl Drop for ProcessPoolCore {
    fn drop(&mut self) {
        // Collected without shutdown: stop the workers once the queue drains.
        if !self.foreign() && !self.shared.is_stopped() {
            self.shared.shutdown(false, false);
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ProcessPoolCore>()?;
    m.add_class::<ClaimPage>()?;
    Ok(())
}
