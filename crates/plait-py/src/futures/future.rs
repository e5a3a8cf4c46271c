//! `_FutureCore`: the Rust part of `plait.futures.Future`, and its interop
//! with the standard library's `concurrent.futures`.
//!
//! State, outcome and result-waiters live in `plait_core::future`; this
//! file maps them to Python (exceptions, done-callbacks, the attributes).
//!
//! **Interop.** The standard library's `wait` / `as_completed` (and
//! plait's) reach into three private attributes: `_condition` (a lock they
//! hold while they look at `_state` and register in `_waiters`), `_state`
//! and `_waiters`. Most futures never meet them, so `_condition` and
//! `_waiters` are created on first use; completing a future takes
//! `_condition` only if it exists, and the check happens under the same
//! mutex that creates it, so a waiter can never slip in between.
//!
//! **Pickled outcomes.** A process pool may finish a future with the
//! worker's bytes, without the interpreter (`finish_pickled_detached`); the
//! first reader decodes them (see `pickled.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use plait_core::fork::{register_arc, Registration};
use plait_core::future::{Future as CoreFuture, InvalidState, Resolution, State};
use plait_core::park::Outcome;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::label::Pending;
use super::pickled::{decode_pickled, Pickled};
use super::Obj;
use crate::errors;
use crate::wait::{cond_timeout, detached, interrupted_error};

fn invalid_state(py: Python<'_>, state: State, fut: &Bound<'_, PyAny>) -> PyErr {
    let repr = fut.repr().map(|r| r.to_string()).unwrap_or_default();
    errors::invalid_state(py, &format!("{}: {}", state.name(), repr))
}

/// How `cancel()` reaches the task of a process pool's future.
pub(crate) trait PoolTask: Send + Sync {
    /// The future is pending: decide, against the worker that may hold the
    /// task prefetched, whether it will never run (`true`) or started
    /// (`false`). Called detached; `pending` says whether the future still
    /// is.
    fn cancel_pending(&self, pending: &dyn Fn() -> bool) -> bool;
    /// `cancel(kill=True)` on a running task: kill its worker if it still
    /// runs this task; whether it will.
    fn kill_running(&self) -> bool;
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
    /// Set by a process pool: how `cancel()` reaches its task (see
    /// [`PoolTask`]).
    pool: std::sync::OnceLock<Box<dyn PoolTask>>,
    /// A finished outcome still in pickled form (set by a process pool
    /// without the interpreter), decoded by the first reader.
    pickled: Mutex<Option<Pickled>>,
    /// The `plait.debug` label captured at submit and not made yet (see
    /// `label.rs`); `has_label` says whether there is one, without the lock.
    label: Mutex<Option<Pending>>,
    has_label: AtomicBool,
    _fork: Registration,
}

impl FutureCore {
    /// `cancel()` as CPython's: never stops a running task.
    pub(crate) fn cancel(slf: &Bound<'_, Self>) -> PyResult<bool> {
        FutureCore::cancel_with(slf, false)
    }

    fn create() -> Self {
        let core = Arc::new(CoreFuture::new());
        let reg = register_arc(&core);
        FutureCore {
            core,
            interop: Mutex::new(Interop::default()),
            pool: std::sync::OnceLock::new(),
            pickled: Mutex::new(None),
            label: Mutex::new(None),
            has_label: AtomicBool::new(false),
            _fork: reg,
        }
    }

    /// Keep `label` to be made later (see `label.rs`).
    #[inline]
    pub(crate) fn defer_label(&self, label: Option<Pending>) {
        if let Some(l) = label {
            *self.label.lock() = Some(l);
            self.has_label.store(true, Ordering::Release);
        }
    }

    /// Make the label captured at submit, if it is not made yet (attached;
    /// runs Python code, with no lock held).
    #[inline]
    pub(crate) fn make_label(&self, py: Python<'_>) {
        if self.has_label.load(Ordering::Acquire) {
            self.make_label_slow(py);
        }
    }

    #[cold]
    fn make_label_slow(&self, py: Python<'_>) {
        let pending = self.label.lock().take();
        self.has_label.store(false, Ordering::Release);
        if let Some(p) = pending {
            p.apply(py, &self.core.probe);
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

    /// Let `cancel()` reach a process pool's task (see [`PoolTask`]).
    pub(crate) fn set_pool_task(&self, task: Box<dyn PoolTask>) {
        let _ = self.pool.set(task);
    }

    /// A pool's prefetched task started: PENDING → RUNNING (nothing waits
    /// for that transition, so no interpreter is needed).
    pub(crate) fn mark_started(&self) -> bool {
        self.core.start_if_pending()
    }

    /// Cancel as `Future.cancel()` does, without asking a pool (the pool
    /// itself decided the task never runs).
    pub(crate) fn cancel_plain(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let (cancelled, cbs) = FutureCore::transition(slf, |c| c.cancel(), |_| None, true)?;
        run_callbacks(slf, cbs)?;
        Ok(cancelled)
    }

    /// `cancel()`, and `cancel(kill=True)` (see the Python method).
    pub(crate) fn cancel_with(slf: &Bound<'_, Self>, kill: bool) -> PyResult<bool> {
        let this = slf.get();
        if let Some(p) = this.pool.get() {
            if this.core.state() == State::Pending {
                let core = &this.core;
                let never_runs = slf.py().detach(|| p.cancel_pending(&|| core.state() == State::Pending));
                if !never_runs {
                    // It started in its worker (the supervisor says so too,
                    // as soon as it reads that worker).
                    this.core.start_if_pending();
                    if !kill {
                        return Ok(false);
                    }
                }
            }
            if this.core.state() == State::Running {
                if kill && p.kill_running() {
                    return FutureCore::force_cancel(slf);
                }
                return Ok(false);
            }
        }
        FutureCore::cancel_plain(slf)
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

    /// Whether the future is done (finished or cancelled).
    pub(crate) fn is_done(&self) -> bool {
        self.core.state().is_done()
    }

    /// Finish the future (result or exception). The `_condition` protocol
    /// and the stdlib waiters are served, then callbacks run.
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
        let args = PyTuple::new(py, [PyString::new(py, "exception calling callback for %r").into_any(), fut.clone()])?;
        log_error(py, "exception", &args, e)?;
    }
    Ok(())
}

/// `concurrent.futures`' `LOGGER.<level>(*args, exc_info=True)`, as CPython
/// logs a failed callback or initializer: the record's `exc_info` carries
/// the traceback. (On Python < 3.12 a `PyErr`'s value has no
/// `__traceback__` until `into_value` puts it there.)
pub(crate) fn log_error(py: Python<'_>, level: &str, args: &Bound<'_, PyTuple>, e: PyErr) -> PyResult<()> {
    let kwargs = PyDict::new(py);
    kwargs.set_item("exc_info", e.into_value(py))?;
    errors::cf_logger(py)?.call_method(level, args, Some(&kwargs))?;
    Ok(())
}

/// The deadline of a wait on a future that is not done, reading `timeout`
/// as CPython's `Condition.wait` does (a done future never looks at it;
/// see [`cond_timeout`]; NaN raises ValueError, plait's difference).
fn timeout_deadline(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<std::time::Instant>> {
    Ok(cond_timeout(timeout)?.deadline())
}

impl FutureCore {
    /// `result()` with a deadline (`None` or `Some(None)`: wait forever).
    pub(crate) fn result_until(&self, py: Python<'_>, deadline: Option<Option<std::time::Instant>>) -> PyResult<Obj> {
        match self.finished_outcome(py, deadline.flatten())? {
            Ok(v) => Ok(v),
            // CPython raises `self._exception` only if it is true: after
            // set_exception(None) (or another false value) result() is None.
            Err(e) if !e.bind(py).is_instance_of::<pyo3::exceptions::PyBaseException>() && !e.bind(py).is_truthy()? => {
                Ok(py.None())
            }
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
            // A waiter shows in plait.debug's graph with what it waits for.
            self.make_label(py);
            let core = &self.core;
            let (out, err) = detached(py, deadline, |ctx| core.wait(ctx));
            match out {
                Outcome::Notified => done = true,
                Outcome::TimedOut => {}
                Outcome::Interrupted => return Err(interrupted_error(py, err)),
            }
        }
        let state = self.core.state();
        if state.is_cancelled() {
            return Err(errors::cancelled(py));
        }
        if !done || state != State::Finished {
            return Err(errors::timeout(py, None));
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
    #[classmethod]
    #[pyo3(signature = (*args, **kwargs))]
    fn new(
        cls: &Bound<'_, pyo3::types::PyType>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        // As CPython's Future (whose __init__ takes no argument): arguments
        // are refused unless a subclass's own __init__ takes them.
        if !args.is_empty() || kwargs.is_some_and(|k| !k.is_empty()) {
            let py = cls.py();
            let object_init = py.get_type::<pyo3::types::PyAny>().getattr("__init__")?;
            if cls.getattr("__init__")?.is(&object_init) {
                return Err(PyTypeError::new_err(format!("{}() takes no arguments", cls.name()?)));
            }
        }
        Ok(FutureCore::create())
    }

    /// Cancel the future if it has not started running; returns whether it
    /// is cancelled. `kill` (keyword-only, plait's addition): a process
    /// pool's running task is stopped by killing (and replacing) its
    /// worker, and the future ends cancelled; for other futures it is a
    /// plain cancel.
    #[pyo3(name = "cancel", signature = (*, kill = false))]
    fn py_cancel(slf: &Bound<'_, Self>, kill: bool) -> PyResult<bool> {
        FutureCore::cancel_with(slf, kill)
    }

    /// Cancel even a running future, for an executor that has stopped its
    /// call itself (plait.cluster kills the process running it on a dask
    /// worker): RUNNING or PENDING -> CANCELLED_AND_NOTIFIED, waiters woken
    /// and callbacks run as by `cancel()`. Whether this call cancelled it
    /// (False once done). Private: users call `cancel(kill=True)`.
    fn _plait_force_cancel(slf: &Bound<'_, Self>) -> PyResult<bool> {
        FutureCore::force_cancel(slf)
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
        let deadline = if self.core.state().is_done() { None } else { timeout_deadline(timeout)? };
        self.result_until(py, Some(deadline))
    }

    /// The exception the call raised (None if it returned), waiting up to
    /// `timeout` seconds.
    #[pyo3(signature = (timeout = None))]
    fn exception(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Obj> {
        let deadline = if self.core.state().is_done() { None } else { timeout_deadline(timeout)? };
        match self.finished_outcome(py, deadline)? {
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
                let logger = errors::cf_logger(py)?;
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

    /// Label the future as a call of `func` submitted from the calling
    /// Python code (outside plait's package), for `plait.debug`. The first
    /// label stays; executors label their futures themselves.
    fn _plait_label(&self, func: &Bound<'_, PyAny>) {
        super::label::label_call(&self.core.probe, func);
    }

    /// `submit()`, with the futures it submits labelled as this one (a
    /// delayed call's future hands its label to the executor's future for
    /// it, submitted later from the timer thread).
    fn _plait_submit_labelled<'py>(&self, submit: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.make_label(submit.py());
        let p = &self.core.probe;
        let label = super::label::Label { name: p.name().to_owned(), site: p.site().into() };
        super::label::submitting_as(&label, || submit.call0())
    }

    /// The id of this future in `plait.debug`'s raw state (its core's
    /// address); `plait.debug` follows asyncio futures to it.
    #[getter]
    fn _debug_id(&self) -> usize {
        plait_core::debug::id_of(&*self.core)
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
