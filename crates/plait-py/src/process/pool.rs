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

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use plait_core::future::Resolution;
use plait_core::pool::{self, Ending, Failure, Host, Reply, Shared, Start, Task, Zygote};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::errors;
use crate::futures::{decode_pickled, run_callbacks_of, FutureCore, Pickled};
use crate::process::shm::ShmGuard;
use crate::wait::{deadline_in, detached};

type Obj = Py<PyAny>;

/// What a task carries besides its bytes.
struct Job {
    future: Py<FutureCore>,
    /// The call's shared-memory segment, unlinked if no worker took it.
    _shm: Option<Arc<ShmGuard>>,
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
            Some(Ok(true)) => Start::Running,
            Some(Ok(false)) | Some(Err(_)) => Start::Cancelled,
            None => Start::Attach,
        }
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
            Ok(cbs) => pending.push(Done::Callbacks(job.future, cbs)),
            Err(p) => pending.push(Done::Attached(job.future, p)),
        }
        segment
    }

    fn ended(&self, job: Job, how: Ending, pending: &mut Vec<Done>) {
        pending.push(match how {
            Ending::Failed(kind, msg) => Done::Failed(job.future, kind, msg),
            Ending::Cancelled => Done::Cancelled(job.future),
        });
    }

    fn deliver(&self, done: Vec<Done>, starting: Vec<(usize, Task<Job>)>, started: &mut Vec<(usize, Task<Job>)>) {
        Python::attach(|py| {
            complete(py, done);
            for (wi, t) in starting {
                if let Ok(true) = FutureCore::set_running_or_notify_cancel(t.handle.future.bind(py)) {
                    started.push((wi, t));
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
    shared: Arc<Shared<Job>>,
    next_id: AtomicU64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    default_timeout: Mutex<Option<f64>>,
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
        // SAFETY: the caller hands over this socket (it detached it from
        // its Python object), and the zygote is its child.
        let zygote = zygote.map(|(pid, fd)| unsafe { Zygote::adopt(pid, fd) });
        let mut thread = self.thread.lock();
        if thread.is_some() || self.shared.is_closed() {
            return Ok(()); // dropping `zygote` stops and reaps it
        }
        *self.default_timeout.lock() = default_timeout;
        let launch = pool::worker::Launch { python, setup, inherit_fds, zygote };
        let cfg = pool::Config { max_workers, max_tasks_per_child, launch };
        let handle = pool::supervisor::start(Arc::clone(&self.shared), PyHost, cfg)
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the pool supervisor: {e}")))?;
        *thread = Some(handle);
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
        if self.shared.is_closed() {
            return Err(PyRuntimeError::new_err("cannot schedule new futures after shutdown"));
        }
        let dumps = crate::futures::dumps_call(py)?;
        let fut_obj = crate::futures::future_type(py)?.call0()?;
        let fut = fut_obj.cast::<FutureCore>()?;
        let payload: Vec<u8> = match dumps.call1((func, args, kwargs)) {
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
            Some(shared) if shared.is_executing(id) => {
                shared.cancel(id);
                true
            }
            _ => false,
        }));
        let timeout = timeout.or(*self.default_timeout.lock()).map(|t| Duration::from_secs_f64(t.max(0.0)));
        let shm = ShmGuard::of(&payload);
        self.shared.submit(Task::new(id, payload, timeout, Job { future: fut.clone().unbind(), _shm: shm }));
        Ok(fut_obj.unbind())
    }

    /// Kill the worker running task `id` (its future was cancelled).
    fn _plait_kill_task(&self, id: u64) {
        self.shared.cancel(id);
    }

    #[pyo3(signature = (cancel_futures, kill))]
    fn _plait_shutdown(&self, cancel_futures: bool, kill: bool) {
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
        let deadline = timeout.map(deadline_in);
        let done = self.shared.stopped();
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
        match self.shared.broken() {
            Some(m) => pyo3::types::PyString::new(py, &m).into_any().unbind(),
            None => false.into_pyobject(py).unwrap().to_owned().into_any().unbind(),
        }
    }
}

impl Drop for ProcessPoolCore {
    fn drop(&mut self) {
        // Collected without shutdown: stop the workers once the queue drains.
        if !self.shared.is_stopped() {
            self.shared.shutdown(false, false);
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ProcessPoolCore>()?;
    Ok(())
}
