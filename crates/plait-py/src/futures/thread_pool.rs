//! `_ThreadPoolCore` and `_Worker`: the Rust part of
//! `plait.futures.ThreadPoolExecutor`.
//!
//! Work items go through a `plait_core::queue::Queue`. Workers are real
//! Python threads (so `threading.enumerate()` lists them and
//! `threading.local` works) running a Rust loop that takes items while
//! attached as long as there are any, and waits detached otherwise.
//! Shutting the pool down shuts the queue: puts fail from then on, workers
//! drain what was queued and exit, so no submitted item is ever lost.
//!
//! Idle workers are reused before a new thread starts (CPython's policy).
//! A failing initializer breaks the pool: queued items fail with
//! `BrokenThreadPool`. In a forked child the queue is repaired, the items
//! the parent had queued are dropped (the parent runs them; running them in
//! the child too would run them twice) and the worker counts reset (the
//! threads do not exist there): the next submit starts fresh workers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use plait_core::fork::{register_arc, Registration};
use plait_core::future::Resolution;
use plait_core::queue::{GetError, Order, PutError, Queue as CoreQueue};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use super::future::{log_error, FutureCore};
use super::label::{Label, Pending};
use super::map::{MapIterator, Submit};
use super::Obj;
use crate::errors;
use crate::wait::{detached, Gil};

struct WorkItem {
    future: Py<FutureCore>,
    func: Obj,
    args: Py<PyTuple>,
    kwargs: Option<Py<PyDict>>,
}

/// What the pool's workers share; owned by the executor and by each
/// worker, so workers never keep the executor object alive.
struct PoolShared {
    jobs: CoreQueue<WorkItem>,
    idle: AtomicUsize,
    threads: AtomicUsize,
    max_workers: AtomicUsize,
    broken: Mutex<Option<String>>,
    future_type: OnceLock<Py<PyType>>,
    initializer: OnceLock<(Obj, Py<PyTuple>)>,
}

fn no_compare(_: &WorkItem, _: &WorkItem) -> Result<bool, std::convert::Infallible> {
    Ok(false)
}

/// Set once the interpreter starts exiting (`threading._register_atexit`).
static INTERPRETER_EXITING: AtomicBool = AtomicBool::new(false);

/// The Rust part of `plait.futures.ThreadPoolExecutor`.
#[pyclass(module = "plait.futures", name = "_ThreadPoolCore", subclass, frozen)]
pub struct ThreadPoolCore {
    shared: Arc<PoolShared>,
    _fork: Registration,
}

impl Drop for ThreadPoolCore {
    fn drop(&mut self) {
        // The executor was collected without shutdown(): let the workers
        // finish what is queued and exit (CPython's weakref callback).
        let drained = self.shared.jobs.shutdown(&plait_core::detach::Inline, false);
        debug_assert!(drained.is_empty());
    }
}

impl PoolShared {
    /// Fail every queued item with BrokenThreadPool (initializer failure).
    fn fail_queued(&self, py: Python<'_>, message: &str) -> PyResult<()> {
        loop {
            match self.jobs.try_get(&Gil(py), &mut no_compare) {
                Ok(item) => {
                    let exc = broken(py, message);
                    let fut = item.future.bind(py);
                    if !fut.get().core.state().is_done() {
                        FutureCore::finish(fut, Resolution::Error(exc))?;
                    }
                }
                Err(_) => return Ok(()),
            }
        }
    }
}

/// `BrokenThreadPool(message)`, as a future's outcome.
fn broken(py: Python<'_>, message: &str) -> Obj {
    errors::broken_thread_pool(py, message).into_value(py).into_any()
}

#[pymethods]
impl ThreadPoolCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        let shared = Arc::new(PoolShared {
            jobs: CoreQueue::new(Order::Fifo, 0),
            idle: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
            max_workers: AtomicUsize::new(1),
            broken: Mutex::new(None),
            future_type: OnceLock::new(),
            initializer: OnceLock::new(),
        });
        // The registry holds a weak reference: registering the shared state
        // itself keeps the hook alive exactly as long as the pool's state.
        let reg = register_arc(&shared);
        ThreadPoolCore { shared, _fork: reg }
    }

    /// Configure (called once from `ThreadPoolExecutor.__init__`).
    #[pyo3(signature = (max_workers, future_type, initializer, initargs))]
    fn _plait_setup(
        &self,
        max_workers: usize,
        future_type: Py<PyType>,
        initializer: Obj,
        initargs: Py<PyTuple>,
    ) {
        self.shared.max_workers.store(max_workers, Ordering::Relaxed);
        let _ = self.shared.future_type.set(future_type);
        let _ = self.shared.initializer.set((initializer, initargs));
    }

    /// Schedule `fn(*args, **kwargs)`; returns its Future.
    #[pyo3(signature = (func, /, *args, **kwargs))]
    fn submit(
        slf: &Bound<'_, Self>,
        func: Obj,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
    ) -> PyResult<Obj> {
        Ok(ThreadPoolCore::submit_impl(slf, func, args, kwargs, None)?.into_any().unbind())
    }

    /// `Executor.map`: submit from `args_iter` (tuples, from
    /// `zip(*iterables)`) and return the iterator of results (see
    /// `map.rs`). `executor_ref` is a weakref to the executor, so a pending
    /// map does not keep the pool alive.
    #[pyo3(signature = (func, args_iter, timeout, buffersize, executor_ref))]
    fn _plait_map(
        slf: &Bound<'_, Self>,
        func: Obj,
        args_iter: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        buffersize: Option<usize>,
        executor_ref: Obj,
    ) -> PyResult<MapIterator> {
        MapIterator::start(slf.as_any(), Submit::ThreadPool, func, args_iter, timeout, buffersize, executor_ref, None)
    }

    /// Stop accepting work; with `cancel_futures`, cancel what is queued.
    /// Returns nothing; waiting for the threads is done by the caller.
    #[pyo3(signature = (cancel_futures = false))]
    fn _plait_shutdown(&self, py: Python<'_>, cancel_futures: bool) -> PyResult<()> {
        let drained = self.shared.jobs.shutdown(&Gil(py), cancel_futures);
        for item in drained {
            FutureCore::cancel(item.future.bind(py))?;
        }
        Ok(())
    }

    #[getter]
    fn _shutdown(&self, py: Python<'_>) -> bool {
        self.shared.jobs.is_shutdown(&Gil(py))
    }

    #[getter]
    fn _broken(&self, py: Python<'_>) -> Obj {
        match self.shared.broken.lock().clone() {
            Some(m) => PyString::new(py, &m).into_any().unbind(),
            None => false.into_pyobject(py).unwrap().to_owned().into_any().unbind(),
        }
    }

    /// Items queued and not yet taken by a worker.
    #[getter]
    fn _queued(&self, py: Python<'_>) -> usize {
        self.shared.jobs.len(&Gil(py))
    }
}

impl ThreadPoolCore {
    /// Queue a call; its future is labelled with `label`, or else from
    /// `func` and the calling Python code (see `label.rs`).
    pub(super) fn submit_impl<'py>(
        slf: &Bound<'py, Self>,
        func: Obj,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
        label: Option<&Arc<Label>>,
    ) -> PyResult<Bound<'py, FutureCore>> {
        let py = slf.py();
        let shared = &slf.get().shared;
        if let Some(msg) = shared.broken.lock().clone() {
            return Err(errors::broken_thread_pool(py, &msg));
        }
        if INTERPRETER_EXITING.load(Ordering::Acquire) {
            return Err(PyRuntimeError::new_err("cannot schedule new futures after interpreter shutdown"));
        }
        let ftype = shared
            .future_type
            .get()
            .ok_or_else(|| PyRuntimeError::new_err("ThreadPoolExecutor.__init__ was not called"))?;
        let future = ftype.bind(py).call0()?;
        let fut: Py<FutureCore> = future.cast::<FutureCore>()?.clone().unbind();
        // Only captured here; made when the call starts (see `label.rs`).
        fut.get().defer_label(match label {
            Some(l) => Some(Pending::Made(Arc::clone(l))),
            None => Pending::of_call(func.bind(py)),
        });
        let ret = fut.clone_ref(py);
        let kwargs = kwargs.filter(|k| !k.bind(py).is_empty());
        let item = WorkItem { future: fut, func, args, kwargs };
        let fut = ret;
        match shared.jobs.try_put(&Gil(py), item, &mut no_compare) {
            Ok(()) => {}
            Err(PutError::ShutDown(_)) => {
                return Err(PyRuntimeError::new_err("cannot schedule new futures after shutdown"));
            }
            Err(PutError::Full(_)) => unreachable!("the work queue is unbounded"),
            Err(PutError::Compare(_, never)) => match never {},
        }
        // CPython's policy: reuse an idle worker if there is one, else
        // start a thread while under max_workers.
        if shared.idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_err() {
            let max = shared.max_workers.load(Ordering::Relaxed);
            if shared
                .threads
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
                .is_ok()
            {
                let worker = Py::new(py, Worker { shared: Arc::clone(shared) })?;
                slf.call_method1("_plait_start_worker", (worker,))?;
            }
        }
        Ok(fut.into_bound(py))
    }
}

/// In a forked child the workers do not exist: repair the queue, forget the
/// parent's queued items and count no worker, so the next submit starts one.
impl plait_core::fork::AfterFork for PoolShared {
    /// # Safety
    /// As the trait: only from the atfork child handler, while the child
    /// has a single thread.
    unsafe fn after_fork_child(&self, _survivor: u64) {
        // SAFETY: we are in the atfork child handler (this function's
        // contract), which is what `Queue::after_fork` requires.
        unsafe { self.jobs.after_fork() };
        // The parent runs these; their futures stay pending in the child.
        // Leaked, not dropped: no decref may run in the atfork handler.
        while let Ok(item) = self.jobs.try_get_now(&mut no_compare) {
            std::mem::forget(item);
        }
        self.threads.store(0, Ordering::Relaxed);
        self.idle.store(0, Ordering::Relaxed);
    }
}

/// A worker thread's target: runs queued items until the pool shuts down.
#[pyclass(module = "plait.futures", name = "_Worker", frozen)]
pub struct Worker {
    shared: Arc<PoolShared>,
}

#[pymethods]
impl Worker {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let shared = &self.shared;
        if let Some((init, initargs)) = shared.initializer.get() {
            if !init.is_none(py) {
                if let Err(e) = init.bind(py).call1(initargs.bind(py)) {
                    log_error(py, "critical", &PyTuple::new(py, ["Exception in initializer:"])?, e)?;
                    let msg = "A thread initializer failed, the thread pool is not usable anymore";
                    *shared.broken.lock() = Some(msg.to_string());
                    shared.fail_queued(py, msg)?;
                    return Ok(());
                }
            }
        }
        loop {
            let item = match shared.jobs.try_get(&Gil(py), &mut no_compare) {
                Ok(item) => item,
                Err(GetError::ShutDown) => return Ok(()),
                Err(GetError::Compare(never)) => match never {},
                Err(GetError::Empty) => {
                    let jobs = &shared.jobs;
                    detached(py, None, |ctx| jobs.wait_not_empty(ctx));
                    continue;
                }
            };
            if shared.broken.lock().is_some() {
                let msg = shared.broken.lock().clone().unwrap_or_default();
                FutureCore::finish(item.future.bind(py), Resolution::Error(broken(py, &msg)))?;
                continue;
            }
            run_item(py, item)?;
            shared.idle.fetch_add(1, Ordering::AcqRel);
        }
    }
}

fn run_item(py: Python<'_>, item: WorkItem) -> PyResult<()> {
    let fut = item.future.bind(py);
    if !FutureCore::set_running_or_notify_cancel(fut)? {
        return Ok(());
    }
    fut.get().make_label(py);
    let r = item.func.bind(py).call(item.args.bind(py), item.kwargs.as_ref().map(|k| k.bind(py)));
    let res = match r {
        Ok(v) => Resolution::Value(v.unbind()),
        Err(e) => Resolution::Error(e.into_value(py).into_any()),
    };
    // The future may be finished already if user code set it; CPython
    // would raise InvalidStateError inside the worker and log it.
    if let Err(e) = FutureCore::finish(fut, res) {
        log_error(py, "critical", &PyTuple::new(py, ["Exception in worker"])?, e)?;
    }
    Ok(())
}

/// Called by `plait.futures`' atexit hook: refuse new work from now on.
#[pyfunction]
pub fn _interpreter_exiting() {
    INTERPRETER_EXITING.store(true, Ordering::Release);
}
