//! `plait.futures`: the core of `Future` and of `ThreadPoolExecutor`.
//!
//! `python/plait/futures.py` derives the public classes from these and from
//! the standard library's (`isinstance(f, concurrent.futures.Future)` holds,
//! and asyncio accepts the executor).
//!
//! **Future.** State, outcome and result-waiters live in
//! `plait_core::future`. The standard library's `wait` / `as_completed` (and
//! plait's) reach into three private attributes: `_condition` (a lock they
//! hold while they look at `_state` and register in `_waiters`), `_state`
//! and `_waiters`. Most futures never meet them, so `_condition` and
//! `_waiters` are created on first use; completing a future takes
//! `_condition` only if it exists, and the check happens under the same
//! mutex that creates it, so a waiter can never slip in between.
//!
//! **Pool.** Work items go through a `plait_core::queue::Queue`. Workers are
//! real Python threads (so `threading.enumerate()` lists them and
//! `threading.local` works) running a Rust loop that takes items while
//! attached as long as there are any, and waits detached otherwise.
//! Shutting the pool down shuts the queue: puts fail from then on, workers
//! drain what was queued and exit, so no submitted item is ever lost.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use plait_core::fork::{register_arc, Registration};
use plait_core::future::{Future as CoreFuture, InvalidState, Resolution, State};
use plait_core::park::Outcome;
use plait_core::queue::{GetError, Order, PutError, Queue as CoreQueue};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};

use crate::wait::{deadline_in, detached, seconds, Gil};

type Obj = Py<PyAny>;

static CF: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// `concurrent.futures._base` (exceptions and LOGGER live there).
pub(crate) fn cf_base(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    CF.get_or_try_init(py, || Ok::<_, PyErr>(py.import("concurrent.futures._base")?.unbind()))
        .map(|m| m.bind(py))
}

pub(crate) fn cf_error<'py>(py: Python<'py>, name: &str, args: impl pyo3::call::PyCallArgs<'py>) -> PyErr {
    match cf_base(py).and_then(|m| m.getattr(name)).and_then(|c| c.call1(args)) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

fn invalid_state(py: Python<'_>, state: State, fut: &Bound<'_, PyAny>) -> PyErr {
    let repr = fut.repr().map(|r| r.to_string()).unwrap_or_default();
    cf_error(py, "InvalidStateError", (format!("{}: {}", state.name(), repr),))
}

/// Lazily created interop attributes.
#[derive(Default)]
struct Interop {
    condition: Option<Obj>,
    waiters: Option<Py<PyList>>,
}

/// The Rust part of `plait.futures.Future`.
#[pyclass(module = "plait.futures", name = "_FutureCore", subclass, frozen)]
pub struct FutureCore {
    pub(crate) core: Arc<CoreFuture<Obj, Obj>>,
    interop: Mutex<Interop>,
    /// Set by a process pool: how to stop the work if the future is
    /// cancelled while running (kill the worker running it).
    on_cancel_running: std::sync::OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
    /// A finished outcome still in pickled form (set by a process pool
    /// without the interpreter), decoded by the first reader.
    pickled: Mutex<Option<Pickled>>,
    _fork: Registration,
}

/// An outcome as a worker process sent it.
#[derive(Clone)]
pub(crate) struct Pickled {
    pub(crate) is_error: bool,
    /// `plait._wire`'s envelope.
    pub(crate) bytes: Arc<Vec<u8>>,
    /// Unlinks the shared-memory segment if nobody decodes the outcome.
    pub(crate) _shm: Option<Arc<ShmGuard>>,
}

pub(crate) use crate::shm::ShmGuard;

impl FutureCore {
    fn create() -> Self {
        let core = Arc::new(CoreFuture::new());
        let reg = register_arc(&core);
        FutureCore {
            core,
            interop: Mutex::new(Interop::default()),
            on_cancel_running: std::sync::OnceLock::new(),
            pickled: Mutex::new(None),
            _fork: reg,
        }
    }

    /// Finish with a pickled outcome without the interpreter, if nothing
    /// in Python watches (no `_condition`). Returns the callbacks that must
    /// then run attached; gives the outcome back if it must be delivered
    /// attached (through `finish`) instead.
    pub(crate) fn finish_pickled_detached(&self, p: Pickled) -> Result<Vec<Obj>, Pickled> {
        let g = self.interop.lock();
        if g.condition.is_some() || self.core.state().is_done() {
            return Err(p);
        }
        *self.pickled.lock() = Some(p);
        let r = self.core.finish_unresolved();
        drop(g);
        match r {
            Ok(cbs) => Ok(cbs),
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Cancel even if running (a process pool kills the worker running
    /// it): the future becomes CANCELLED_AND_NOTIFIED. Returns whether this
    /// call cancelled it.
    pub(crate) fn force_cancel(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let (cancelled, cbs) =
            FutureCore::transition(slf, |c| c.force_cancel(), |r| r.0.then_some("add_cancelled"), true)?;
        run_callbacks(slf, cbs)?;
        Ok(cancelled)
    }

    /// Apply a state transition under the `_condition` protocol: without a
    /// condition, under the interop mutex (which also guards its creation);
    /// with one, holding it, then telling the stdlib waiters (`waiter_call`
    /// names their method, if any) and, with `notify`, its waiting threads.
    fn transition<T>(
        slf: &Bound<'_, Self>,
        op: impl FnOnce(&CoreFuture<Obj, Obj>) -> T,
        waiter_call: impl FnOnce(&T) -> Option<&'static str>,
        notify: bool,
    ) -> PyResult<T> {
        let py = slf.py();
        let this = slf.get();
        let cond = this.interop.lock().condition.as_ref().map(|c| c.clone_ref(py));
        let Some(cond) = cond else {
            let g = this.interop.lock();
            let r = op(&this.core);
            drop(g);
            return Ok(r);
        };
        let cond = cond.into_bound(py);
        cond.call_method0("acquire")?;
        let r = op(&this.core);
        let told = match waiter_call(&r) {
            Some(method) => notify_stdlib_waiters(slf, method),
            None => Ok(()),
        };
        let notified = if notify { cond.call_method0("notify_all").map(drop) } else { Ok(()) };
        cond.call_method0("release")?;
        told?;
        notified?;
        Ok(r)
    }

    /// Make `cancel()` work on a running future: `stop` tries to end the
    /// work and says whether it will; if so the future is cancelled at once.
    pub(crate) fn set_cancel_running(&self, stop: Box<dyn Fn() -> bool + Send + Sync>) {
        let _ = self.on_cancel_running.set(stop);
    }

    /// Mark running without the interpreter when nothing in Python can be
    /// watching (no `_condition` was ever made). `None` means "do it
    /// attached" (set_running_or_notify_cancel).
    pub(crate) fn try_set_running_detached(&self) -> Option<Result<bool, InvalidState>> {
        let g = self.interop.lock();
        if g.condition.is_some() {
            return None;
        }
        let r = self.core.set_running_or_notify_cancel();
        drop(g);
        Some(r)
    }

    /// Finish the future (result or exception). The `_condition` protocol
    /// and the stdlib waiters are served, then callbacks run.
    /// Whether the future is done (finished or cancelled).
    pub(crate) fn is_done(&self) -> bool {
        self.core.state().is_done()
    }

    pub(crate) fn finish(slf: &Bound<'_, Self>, r: Resolution<Obj>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let is_error = matches!(r, Resolution::Error(_));
        let interop = this.interop.lock();
        let callbacks = match interop.condition.as_ref().map(|c| c.clone_ref(py)) {
            None => {
                // Nobody can be registered in `_waiters` without holding
                // `_condition`, which does not exist: finish under our mutex.
                let r = this.core.resolve(r);
                drop(interop);
                match r {
                    Ok(cbs) => cbs,
                    Err((_, InvalidState(s))) => return Err(invalid_state(py, s, slf.as_any())),
                }
            }
            Some(cond) => {
                drop(interop);
                let cond = cond.into_bound(py);
                cond.call_method0("acquire")?;
                let res = (|| -> PyResult<Vec<Obj>> {
                    let cbs = match this.core.resolve(r) {
                        Ok(cbs) => cbs,
                        Err((_, InvalidState(s))) => return Err(invalid_state(py, s, slf.as_any())),
                    };
                    let method = if is_error { "add_exception" } else { "add_result" };
                    notify_stdlib_waiters(slf, method)?;
                    cond.call_method0("notify_all")?;
                    Ok(cbs)
                })();
                cond.call_method0("release")?;
                res?
            }
        };
        run_callbacks(slf, callbacks)
    }
}

static WIRE_DECODE: PyOnceLock<Obj> = PyOnceLock::new();

/// `plait._wire.decode(envelope)`, with the buffers a worker's segment
/// holds (mapped on receipt, see `shm.rs`) when there are some.
pub(crate) fn loads<'py>(py: Python<'py>, bytes: &[u8], shm: Option<&ShmGuard>) -> PyResult<Bound<'py, PyAny>> {
    let f = WIRE_DECODE.get_or_try_init(py, || py.import("plait._wire")?.getattr("decode").map(Bound::unbind))?;
    let data = pyo3::types::PyBytes::new(py, bytes);
    match shm.map(|g| g.take(py)).transpose()?.flatten() {
        Some(taken) => f.bind(py).call1((data, taken)),
        None => f.bind(py).call1((data,)),
    }
}

/// A worker's outcome: `Ok(value)`, or `Err(exception)` — the remote
/// exception with its traceback text as `__cause__` (as CPython's process
/// pool does), or the error that decoding raised.
pub(crate) fn decode_pickled(py: Python<'_>, p: &Pickled) -> Result<Obj, Obj> {
    if !p.is_error {
        return loads(py, &p.bytes, p._shm.as_deref()).map(Bound::unbind).map_err(|e| e.into_value(py).into_any());
    }
    remote_exception(py, &p.bytes, p._shm.as_deref()).map_err(|e| e.into_value(py).into_any()).and_then(Err)
}

fn remote_exception(py: Python<'_>, bytes: &[u8], shm: Option<&ShmGuard>) -> PyResult<Obj> {
    let tup = loads(py, bytes, shm)?;
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

/// Run callbacks collected elsewhere (e.g. by a supervisor thread).
pub(crate) fn run_callbacks_of(fut: &Bound<'_, FutureCore>, callbacks: Vec<Obj>) -> PyResult<()> {
    run_callbacks(fut, callbacks)
}

/// Call `method(future)` on every stdlib-style waiter registered in
/// `_waiters` (the caller holds `_condition`).
fn notify_stdlib_waiters(slf: &Bound<'_, FutureCore>, method: &str) -> PyResult<()> {
    let py = slf.py();
    let list = slf.get().interop.lock().waiters.as_ref().map(|l| l.clone_ref(py));
    if let Some(list) = list {
        let list = list.into_bound(py);
        for w in list.iter().collect::<Vec<_>>() {
            w.call_method1(method, (slf,))?;
        }
    }
    Ok(())
}

/// Run done-callbacks as `concurrent.futures` does: an `Exception` is
/// logged through its logger and does not stop the others; a
/// `BaseException` (e.g. KeyboardInterrupt) propagates.
fn run_callbacks(slf: &Bound<'_, FutureCore>, callbacks: Vec<Obj>) -> PyResult<()> {
    let py = slf.py();
    for cb in callbacks {
        call_callback(py, slf.as_any(), cb.bind(py))?;
    }
    Ok(())
}

fn call_callback(py: Python<'_>, fut: &Bound<'_, PyAny>, cb: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Err(e) = cb.call1((fut,)) {
        if !e.is_instance_of::<pyo3::exceptions::PyException>(py) {
            return Err(e);
        }
        let logger = cf_base(py)?.getattr("LOGGER")?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("exc_info", e.value(py))?;
        logger.call_method("exception", ("exception calling callback for %r", fut), Some(&kwargs))?;
    }
    Ok(())
}

fn timeout_deadline(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<std::time::Instant>> {
    match timeout {
        Some(t) if !t.is_none() => Ok(Some(deadline_in(seconds(t)?))),
        _ => Ok(None),
    }
}

impl FutureCore {
    /// `result()` with a deadline (`None` or `Some(None)`: wait forever).
    fn result_until(&self, py: Python<'_>, deadline: Option<Option<std::time::Instant>>) -> PyResult<Obj> {
        match self.finished_outcome(py, deadline.flatten())? {
            Ok(v) => Ok(v),
            Err(e) => Err(PyErr::from_value(e.into_bound(py))),
        }
    }

    /// Wait until done or `deadline`, then the outcome: `Ok(value)` or
    /// `Err(exception)`; CancelledError / TimeoutError as the error.
    fn finished_outcome(
        &self,
        py: Python<'_>,
        deadline: Option<std::time::Instant>,
    ) -> PyResult<Result<Obj, Obj>> {
        let mut done = self.core.state().is_done();
        if !done {
            let core = &self.core;
            let (out, err) = detached(py, deadline, |ctx| core.wait(ctx));
            match out {
                Outcome::Notified => done = true,
                Outcome::TimedOut => {}
                Outcome::Interrupted => return Err(err.expect("interrupted waits carry the exception")),
            }
        }
        let state = self.core.state();
        if state.is_cancelled() {
            return Err(cf_error(py, "CancelledError", ()));
        }
        if !done || state != State::Finished {
            return Err(cf_error(py, "TimeoutError", ()));
        }
        Ok(self.outcome(py).unwrap_or_else(|| Ok(py.None())))
    }

    fn outcome(&self, py: Python<'_>) -> Option<Result<Obj, Obj>> {
        // Decode a pickled outcome on first use, in the reader's thread,
        // with no lock held (unpickling runs Python code). Readers racing
        // here each decode; the first to finish stores the outcome.
        let pending = self.pickled.lock().clone();
        if let Some(p) = pending {
            let done = self.core.with_resolution(|r| r.is_some());
            if !done {
                let r = match decode_pickled(py, &p) {
                    Ok(v) => Resolution::Value(v),
                    Err(e) => Resolution::Error(e),
                };
                drop(self.core.set_resolution_if_absent(r));
            }
            *self.pickled.lock() = None;
        }
        self.core.with_resolution(|r| match r {
            Some(Resolution::Value(v)) => Some(Ok(v.clone_ref(py))),
            Some(Resolution::Error(e)) => Some(Err(e.clone_ref(py))),
            None => None,
        })
    }
}

#[pymethods]
impl FutureCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        FutureCore::create()
    }

    /// Cancel the future if it has not started running; returns whether it
    /// is cancelled.
    pub(crate) fn cancel(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let this = slf.get();
        if this.core.state() == State::Running {
            if let Some(stop) = this.on_cancel_running.get() {
                if !stop() {
                    return Ok(false);
                }
                return FutureCore::force_cancel(slf);
            }
        }
        let (cancelled, cbs) = FutureCore::transition(slf, |c| c.cancel(), |_| None, true)?;
        run_callbacks(slf, cbs)?;
        Ok(cancelled)
    }

    fn cancelled(&self) -> bool {
        self.core.state().is_cancelled()
    }

    fn running(&self) -> bool {
        self.core.state() == State::Running
    }

    fn done(&self) -> bool {
        self.core.state().is_done()
    }

    /// The call's result, waiting up to `timeout` seconds.
    #[pyo3(signature = (timeout = None))]
    fn result(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Obj> {
        self.result_until(py, Some(timeout_deadline(timeout)?))
    }

    /// The exception the call raised (None if it returned), waiting up to
    /// `timeout` seconds.
    #[pyo3(signature = (timeout = None))]
    fn exception(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Obj> {
        match self.finished_outcome(py, timeout_deadline(timeout)?)? {
            Err(e) => Ok(e),
            Ok(_) => Ok(py.None()),
        }
    }

    /// Call `fn(future)` when the future finishes or is cancelled (now, if
    /// it already has).
    fn add_done_callback(slf: &Bound<'_, Self>, func: Obj) -> PyResult<()> {
        if let Some(cb) = slf.get().core.add_done_callback(func) {
            call_callback(slf.py(), slf.as_any(), cb.bind(slf.py()))?;
        }
        Ok(())
    }

    fn set_result(slf: &Bound<'_, Self>, result: Obj) -> PyResult<()> {
        FutureCore::finish(slf, Resolution::Value(result))
    }

    fn set_exception(slf: &Bound<'_, Self>, exception: Obj) -> PyResult<()> {
        FutureCore::finish(slf, Resolution::Error(exception))
    }

    /// Mark running (True), or, if cancelled, tell the waiters and return
    /// False. Executors call this before running the work.
    pub(crate) fn set_running_or_notify_cancel(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let r = FutureCore::transition(
            slf,
            |c| c.set_running_or_notify_cancel(),
            |r| (*r == Ok(false)).then_some("add_cancelled"),
            false,
        )?;
        match r {
            Ok(b) => Ok(b),
            Err(InvalidState(s)) => {
                let logger = cf_base(py)?.getattr("LOGGER")?;
                logger.call_method1("critical", ("Future %s in unexpected state: %s", slf.as_ptr() as usize, s.name()))?;
                Err(PyRuntimeError::new_err("Future in unexpected state"))
            }
        }
    }

    /// The state name, as `concurrent.futures` spells it.
    #[getter]
    fn _state(&self) -> &'static str {
        self.core.state().name()
    }

    #[setter(_state)]
    fn set_state_attr(&self, value: &str) -> PyResult<()> {
        let s = match value {
            "PENDING" => State::Pending,
            "RUNNING" => State::Running,
            "CANCELLED" => State::Cancelled,
            "CANCELLED_AND_NOTIFIED" => State::CancelledAndNotified,
            "FINISHED" => State::Finished,
            other => return Err(PyTypeError::new_err(format!("unknown future state {other:?}"))),
        };
        self.core.force_state(s);
        Ok(())
    }

    #[getter]
    fn _result(&self, py: Python<'_>) -> Obj {
        match self.outcome(py) {
            Some(Ok(v)) => v,
            _ => py.None(),
        }
    }

    #[setter(_result)]
    fn set_result_attr(&self, value: Obj) {
        let old = self.core.set_resolution_raw(Some(Resolution::Value(value)));
        drop(old);
    }

    #[getter]
    fn _exception(&self, py: Python<'_>) -> Obj {
        match self.outcome(py) {
            Some(Err(e)) => e,
            _ => py.None(),
        }
    }

    #[setter(_exception)]
    fn set_exception_attr(&self, py: Python<'_>, value: Obj) {
        let old = if value.is_none(py) {
            // Keep a result assigned earlier (CPython's attributes are
            // independent; a None exception means "returned").
            match self.core.set_resolution_raw(None) {
                Some(Resolution::Value(v)) => self.core.set_resolution_raw(Some(Resolution::Value(v))),
                other => other,
            }
        } else {
            self.core.set_resolution_raw(Some(Resolution::Error(value)))
        };
        drop(old);
    }

    /// The lock `concurrent.futures.wait` / `as_completed` hold while they
    /// inspect `_state` and register in `_waiters` (created on first use).
    #[getter]
    fn _condition(&self, py: Python<'_>) -> PyResult<Obj> {
        if let Some(c) = &self.interop.lock().condition {
            return Ok(c.clone_ref(py));
        }
        // Allocate outside the mutex: allocation may run the GC, and a
        // __del__ could come back to this very future.
        let fresh = Bound::new(py, crate::sync::condition::Condition::create(py)?)?.into_any().unbind();
        let mut interop = self.interop.lock();
        let cond = interop.condition.get_or_insert(fresh).clone_ref(py);
        drop(interop);
        Ok(cond)
    }

    /// The stdlib-style waiters registered by `wait` / `as_completed`.
    #[getter]
    fn _waiters(&self, py: Python<'_>) -> Py<PyList> {
        if let Some(w) = &self.interop.lock().waiters {
            return w.clone_ref(py);
        }
        let fresh = PyList::empty(py).unbind();
        let mut interop = self.interop.lock();
        let list = interop.waiters.get_or_insert(fresh).clone_ref(py);
        drop(interop);
        list
    }

    #[getter]
    fn _done_callbacks(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let cbs: Vec<Obj> = self.core.with_callbacks(|c| c.iter().map(|o| o.clone_ref(py)).collect());
        Ok(PyList::new(py, cbs)?.unbind())
    }

    /// Idents of threads blocked in result()/exception() (for plait.debug).
    #[getter]
    fn _waiter_idents(&self) -> Vec<u64> {
        self.core.waiters()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let this = slf.get();
        let head = format!(
            "<{} at {:#x} state={}",
            slf.get_type().qualname()?,
            slf.as_ptr() as usize,
            // concurrent.futures describes both cancelled states alike.
            if this.core.state().is_cancelled() { "cancelled".to_string() } else { this.core.state().name().to_lowercase() }
        );
        if this.core.state() == State::Finished {
            return Ok(match this.outcome(py) {
                Some(Err(e)) => format!("{head} raised {}>", e.bind(py).get_type().qualname()?),
                Some(Ok(v)) => format!("{head} returned {}>", v.bind(py).get_type().qualname()?),
                None => format!("{head} returned NoneType>"),
            });
        }
        Ok(format!("{head}>"))
    }
}

// ---- ThreadPoolExecutor ---------------------------------------------------

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
                    let exc = cf_broken(py, message)?;
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

fn cf_broken(py: Python<'_>, message: &str) -> PyResult<Obj> {
    let cls = py.import("concurrent.futures.thread")?.getattr("BrokenThreadPool")?;
    Ok(cls.call1((message,))?.unbind())
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
        let reg = register_arc(&ThreadPoolForkHook::new(&shared));
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
        Ok(ThreadPoolCore::submit_impl(slf, func, args, kwargs)?.into_any().unbind())
    }

    /// `Executor.map` in Rust: submit from `args_iter` (tuples, from
    /// `zip(*iterables)`) — everything now, or `buffersize` ahead — and
    /// return the iterator of results. `executor_ref` is a weakref to the
    /// executor, so a pending map does not keep the pool alive.
    #[pyo3(signature = (func, args_iter, timeout, buffersize, executor_ref))]
    fn _plait_map(
        slf: &Bound<'_, Self>,
        func: Obj,
        args_iter: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        buffersize: Option<usize>,
        executor_ref: Obj,
    ) -> PyResult<MapIterator> {
        let end = timeout.map(deadline_in);
        let mut pending = std::collections::VecDeque::new();
        let it = args_iter.try_iter()?;
        let limit = buffersize.unwrap_or(usize::MAX);
        let mut reader = it.clone();
        while pending.len() < limit {
            match reader.next() {
                Some(args) => {
                    let args = args?.cast_into::<PyTuple>()?.unbind();
                    let f = ThreadPoolCore::submit_impl(slf, func.clone_ref(slf.py()), args, None)?;
                    pending.push_back(f.unbind());
                }
                None => break,
            }
        }
        Ok(MapIterator {
            state: Mutex::new(MapState {
                func,
                args: buffersize.map(|_| it.into_any().unbind()),
                executor_ref,
                pending,
                end,
                started: false,
            }),
        })
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
    fn submit_impl<'py>(
        slf: &Bound<'py, Self>,
        func: Obj,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
    ) -> PyResult<Bound<'py, FutureCore>> {
        let py = slf.py();
        let shared = &slf.get().shared;
        if let Some(msg) = shared.broken.lock().clone() {
            return Err(PyErr::from_value(cf_broken(py, &msg)?.into_bound(py)));
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

/// Repairs a pool's queue in a forked child (the workers do not exist
/// there; new ones start on the next submit).
struct ThreadPoolForkHook {
    shared: std::sync::Weak<PoolShared>,
}

impl ThreadPoolForkHook {
    fn new(shared: &Arc<PoolShared>) -> Arc<ThreadPoolForkHook> {
        Arc::new(ThreadPoolForkHook { shared: Arc::downgrade(shared) })
    }
}

impl plait_core::fork::AfterFork for ThreadPoolForkHook {
    unsafe fn after_fork_child(&self, _survivor: u64) {
        if let Some(s) = self.shared.upgrade() {
            // SAFETY: forwarded: called from the child handler only.
            unsafe { s.jobs.after_fork() };
            s.threads.store(0, Ordering::Relaxed);
            s.idle.store(0, Ordering::Relaxed);
        }
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
                    let logger = cf_base(py)?.getattr("LOGGER")?;
                    let kwargs = PyDict::new(py);
                    kwargs.set_item("exc_info", e.value(py))?;
                    logger.call_method("critical", ("Exception in initializer:",), Some(&kwargs))?;
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
                FutureCore::finish(item.future.bind(py), Resolution::Error(cf_broken(py, &msg)?))?;
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
    let r = item.func.bind(py).call(item.args.bind(py), item.kwargs.as_ref().map(|k| k.bind(py)));
    let res = match r {
        Ok(v) => Resolution::Value(v.unbind()),
        Err(e) => Resolution::Error(e.into_value(py).into_any()),
    };
    // The future may be finished already if user code set it; CPython
    // would raise InvalidStateError inside the worker and log it.
    if let Err(e) = FutureCore::finish(fut, res) {
        let logger = cf_base(py)?.getattr("LOGGER")?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("exc_info", e.value(py))?;
        logger.call_method("critical", ("Exception in worker",), Some(&kwargs))?;
    }
    Ok(())
}

struct MapState {
    func: Obj,
    /// The remaining input when buffered (None: everything was submitted).
    args: Option<Obj>,
    executor_ref: Obj,
    pending: std::collections::VecDeque<Py<FutureCore>>,
    end: Option<std::time::Instant>,
    /// Like a generator's `finally`, cancelling on drop happens only once
    /// iteration has begun (an unstarted map still runs every call).
    started: bool,
}

/// The iterator `ThreadPoolExecutor.map` returns: results in input order.
/// If it is dropped or fails, the calls not yet started are cancelled, as
/// CPython's generator does in its `finally`.
#[pyclass(module = "plait.futures", name = "_MapIterator", frozen)]
pub struct MapIterator {
    state: Mutex<MapState>,
}

impl MapIterator {
    fn cancel_rest(&self, py: Python<'_>) {
        let rest = std::mem::take(&mut self.state.lock().pending);
        for f in rest {
            let _ = FutureCore::cancel(f.bind(py));
        }
    }
}

impl Drop for MapIterator {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        if !st.started {
            return;
        }
        let rest = std::mem::take(&mut st.pending);
        if !rest.is_empty() {
            Python::attach(|py| {
                for f in rest {
                    let _ = FutureCore::cancel(f.bind(py));
                }
            });
        }
    }
}

#[pymethods]
impl MapIterator {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Stop early: calls not started yet are cancelled (generator.close()).
    fn close(&self, py: Python<'_>) {
        let started = std::mem::replace(&mut self.state.lock().started, true);
        if started {
            self.cancel_rest(py);
        } else {
            // An unstarted generator's close() runs no finally.
            self.state.lock().pending.clear();
        }
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Obj>> {
        // Keep `buffersize` calls in flight: submit the next one first (no
        // lock held while user code — the input iterator — runs).
        let (args, exec_ref, func, end) = {
            let mut st = self.state.lock();
            st.started = true;
            if st.pending.is_empty() {
                return Ok(None);
            }
            (
                st.args.as_ref().map(|a| a.clone_ref(py)),
                st.executor_ref.clone_ref(py),
                st.func.clone_ref(py),
                st.end,
            )
        };
        if let Some(args) = args {
            let executor = exec_ref.bind(py).call0()?;
            if !executor.is_none() {
                if let Some(next) = args.bind(py).cast::<pyo3::types::PyIterator>()?.clone().next() {
                    let next = next?.cast_into::<PyTuple>()?.unbind();
                    let pool = executor.cast::<ThreadPoolCore>()?;
                    let f = ThreadPoolCore::submit_impl(pool, func, next, None)?;
                    self.state.lock().pending.push_back(f.unbind());
                }
            }
        }
        let Some(fut) = self.state.lock().pending.pop_front() else {
            return Ok(None);
        };
        let f = fut.bind(py);
        let r = f.get().result_until(py, end.map(Some));
        // As CPython's _result_or_cancel: a future we gave up on is cancelled.
        FutureCore::cancel(f)?;
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                self.cancel_rest(py);
                Err(e)
            }
        }
    }
}

/// Called by `plait.futures`' atexit hook: refuse new work from now on.
#[pyfunction]
pub fn _interpreter_exiting() {
    INTERPRETER_EXITING.store(true, Ordering::Release);
}

/// Register everything with the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FutureCore>()?;
    m.add_class::<ThreadPoolCore>()?;
    m.add_class::<Worker>()?;
    m.add_class::<MapIterator>()?;
    m.add_function(wrap_pyfunction!(_interpreter_exiting, m)?)?;
    Ok(())
}
