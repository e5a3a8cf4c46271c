//! `plait.Timer`: `threading.Timer` on one shared Rust timer thread.
//!
//! Every started Timer is an entry in `plait_core::timer`'s deadline map;
//! one `std::thread` (not a Python thread) sleeps until the earliest
//! deadline, attaches to the interpreter and calls the due Timer's function,
//! one at a time. Pending timers cost a map entry, not a thread; `cancel()`
//! takes the entry (and its reference to the Timer) out at once.
//!
//! GIL discipline: the service's mutex is never held while Python runs or
//! while a Python object is dropped. Payloads (`Py<Timer>`) leave the
//! service by value and are dropped by the caller, attached.
//!
//! Interpreter exit: an `atexit` hook (registered at import, so it runs after
//! `threading` has joined every non-daemon Python thread) waits until no
//! non-daemon Timer is pending or running, then closes the service: the
//! daemon Timers still queued are dropped, as CPython abandons daemon
//! threads. A callback still running at that point (a daemon one) gets a
//! bounded grace period so the timer thread does not attach to a finalizing
//! interpreter.
//!
//! A subclass that overrides `run()` gets a real `threading.Thread` running
//! its `run`, as CPython would: such a `run` usually blocks (a repeating
//! timer), which would stall every other Timer on the shared thread.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use plait_core::fork::{register_arc, Registration};
use plait_core::park::{deadline_after, Outcome, WaitCtx};
use plait_core::timer::{ScheduleError, TimerCell, TimerState, TimerThread};
use pyo3::exceptions::{PyDeprecationWarning, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::{PyTraverseError, PyVisit};
use pyo3::types::{PyDict, PyList, PyTuple};
use pyo3::PyTypeInfo;

use crate::sync::event::Event;
use crate::wait::{
    cond_timeout, deadline_in, detached, is_main_thread, lock_timeout_ns, version, CondTimeout, TIMEOUT_MAX,
};

/// How long interpreter exit waits for a daemon Timer's running callback.
const EXIT_GRACE: Duration = Duration::from_secs(1);

static SERVICE: OnceLock<&'static TimerThread<Py<Timer>>> = OnceLock::new();

fn service() -> &'static TimerThread<Py<Timer>> {
    SERVICE.get_or_init(|| TimerThread::new_static("plait-timer", fire))
}

thread_local! {
    /// On the timer thread, while a callback runs: that Timer's `daemon`.
    /// A Timer created by a callback inherits it, as a Timer created in a
    /// CPython Timer thread inherits that thread's.
    static CALLBACK_DAEMON: Cell<Option<bool>> = const { Cell::new(None) };
}

/// What `Timer.__init__` sets; replaced wholesale, dropped outside the lock.
struct Call {
    interval: Py<PyAny>,
    function: Py<PyAny>,
    args: Py<PyAny>,
    kwargs: Py<PyAny>,
}

struct Meta {
    name: String,
    daemon: bool,
    /// A `threading.Thread` running an overridden `run()`.
    thread: Option<Py<PyAny>>,
}

/// Call a function after a number of seconds, like `threading.Timer`.
///
/// Differences from CPython, all from sharing one thread:
///
/// * Every Timer's function runs on one Rust-started timer thread, one at a
///   time: a long-running function delays every later Timer. Inside it,
///   `threading.current_thread()` is a dummy thread, not the Timer.
/// * `ident` and `native_id` are None (there is no thread of its own), and
///   Timers are not listed by `threading.enumerate()` or counted by
///   `threading.active_count()`.
/// * A bad `interval` (not an int or float) raises from `start()` instead of
///   inside the timer's thread.
/// * `join()` from inside a Timer's function on a Timer that has not run
///   yet raises RuntimeError: both need the one timer thread.
/// * `t.finished.set()` stops the function from running, but (unlike
///   `cancel()`) the Timer stays alive until its deadline.
/// * Subclasses that override `run()` get a thread of their own, and the
///   Timer's `ident` is that thread's.
#[pyclass(module = "plait", frozen, weakref, dict, subclass)]
pub struct Timer {
    call: Mutex<Option<Call>>,
    meta: Mutex<Meta>,
    finished: Py<Event>,
    cell: Arc<TimerCell>,
    _fork: Registration,
}

impl Timer {
    fn finished_event(&self) -> &Event {
        self.finished.get()
    }

    /// A copy of the call (new references), taken under the lock.
    fn call_parts(&self, py: Python<'_>) -> PyResult<Call> {
        let g = self.call.lock();
        match g.as_ref() {
            Some(c) => Ok(Call {
                interval: c.interval.clone_ref(py),
                function: c.function.clone_ref(py),
                args: c.args.clone_ref(py),
                kwargs: c.kwargs.clone_ref(py),
            }),
            None => Err(PyRuntimeError::new_err("Timer.__init__() not called")),
        }
    }

    /// Replace one part of the call; the old object is dropped unlocked.
    fn set_part(&self, value: Py<PyAny>, pick: fn(&mut Call) -> &mut Py<PyAny>) -> PyResult<()> {
        let old = {
            let mut g = self.call.lock();
            let call = g.as_mut().ok_or_else(|| PyRuntimeError::new_err("Timer.__init__() not called"))?;
            std::mem::replace(pick(call), value)
        };
        drop(old);
        Ok(())
    }

    fn thread(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.meta.lock().thread.as_ref().map(|t| t.clone_ref(py))
    }

    /// `function(*args, **kwargs)`, as `Timer.run` calls it.
    fn call_function(&self, py: Python<'_>) -> PyResult<()> {
        let Call { function, args, kwargs, .. } = self.call_parts(py)?;
        let args = PyTuple::type_object(py).call1((args,))?;
        let kwargs = kwargs.into_bound(py);
        let kwargs = match kwargs.cast::<PyDict>() {
            Ok(d) => d.clone(),
            Err(_) => PyDict::type_object(py).call1((kwargs,))?.cast_into::<PyDict>()?,
        };
        function.bind(py).call(args.cast::<PyTuple>()?, Some(&kwargs))?;
        Ok(())
    }
}

/// The timer thread's work for one due Timer (runs detached, attaches).
fn fire(timer: Py<Timer>) {
    let mut slot = Some(timer);
    Python::try_attach(|py| {
        if let Some(timer) = slot.take() {
            let bound = timer.into_bound(py);
            run_due(py, &bound);
            drop(bound);
        }
    });
    // Could not attach (interpreter gone): leak rather than decref detached.
    if let Some(timer) = slot {
        std::mem::forget(timer);
    }
}

/// `Timer.run` after its wait: call unless cancelled, report an exception
/// through `threading.excepthook` as a Timer thread would.
fn run_due(py: Python<'_>, timer: &Bound<'_, Timer>) {
    let this = timer.get();
    if this.finished_event().is_set() {
        return;
    }
    let daemon = this.meta.lock().daemon;
    CALLBACK_DAEMON.with(|d| d.set(Some(daemon)));
    let result = this.call_function(py);
    CALLBACK_DAEMON.with(|d| d.set(None));
    match result {
        // As in CPython's Timer.run, `finished` is set only after a call
        // that returned.
        Ok(()) => this.finished_event().set(),
        Err(err) => invoke_excepthook(py, err, timer.as_any()),
    }
}

/// CPython's `threading._make_invoke_excepthook()`: `threading.excepthook`
/// with an `ExceptHookArgs`; if the hook itself fails, say so on stderr and
/// hand its exception to `sys.excepthook`.
fn invoke_excepthook(py: Python<'_>, err: PyErr, thread: &Bound<'_, PyAny>) {
    let hooked = (|| -> PyResult<()> {
        let threading = py.import("threading")?;
        let mut hook = threading.getattr("excepthook")?;
        if hook.is_none() {
            hook = threading.getattr("__excepthook__")?;
        }
        let exc_args = (err.get_type(py), err.value(py), err.traceback(py), thread);
        let args = threading.getattr("ExceptHookArgs")?.call1((exc_args,))?;
        hook.call1((args,))?;
        Ok(())
    })();
    if let Err(hook_err) = hooked {
        let fallback = (|| -> PyResult<()> {
            let sys = py.import("sys")?;
            let stderr = sys.getattr("stderr")?;
            if !stderr.is_none() {
                stderr.call_method1("write", ("Exception in threading.excepthook:\n",))?;
                stderr.call_method0("flush")?;
            }
            sys.getattr("excepthook")?.call1((
                hook_err.get_type(py),
                hook_err.value(py),
                hook_err.traceback(py),
            ))?;
            Ok(())
        })();
        if let Err(last) = fallback {
            last.write_unraisable(py, Some(thread));
        }
    }
}

/// CPython's `threading._newname()`: "Thread-N" from threading's counter.
fn new_name(py: Python<'_>) -> PyResult<String> {
    py.import("threading")?.call_method1("_newname", ("Thread-%d",))?.extract()
}

/// The daemon flag a new Timer inherits from the creating thread.
fn inherited_daemon(py: Python<'_>) -> PyResult<bool> {
    if let Some(d) = CALLBACK_DAEMON.with(Cell::get) {
        return Ok(d);
    }
    if is_main_thread() {
        return Ok(false);
    }
    py.import("threading")?.call_method0("current_thread")?.getattr("daemon")?.is_truthy()
}

static TIMER_RUN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether `slf`'s class overrides `run`.
fn overrides_run(slf: &Bound<'_, Timer>) -> PyResult<bool> {
    let py = slf.py();
    let base = TIMER_RUN.get_or_try_init(py, || py.get_type::<Timer>().getattr("run").map(Bound::unbind))?;
    Ok(!slf.get_type().getattr("run")?.is(base.bind(py)))
}

#[pymethods]
impl Timer {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(interval, function, args=None, kwargs=None)")]
    fn new(py: Python<'_>, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let cell = Arc::new(TimerCell::new());
        let reg = register_arc(&cell);
        Ok(Timer {
            call: Mutex::new(None),
            meta: Mutex::new(Meta { name: String::new(), daemon: false, thread: None }),
            finished: Py::new(py, Event::create())?,
            cell,
            _fork: reg,
        })
    }

    #[pyo3(signature = (interval, function, args = None, kwargs = None))]
    fn __init__(
        &self,
        py: Python<'_>,
        interval: Py<PyAny>,
        function: Py<PyAny>,
        args: Option<Py<PyAny>>,
        kwargs: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let args = match args {
            Some(a) if !a.is_none(py) => a,
            _ => PyList::empty(py).into_any().unbind(),
        };
        let kwargs = match kwargs {
            Some(k) if !k.is_none(py) => k,
            _ => PyDict::new(py).into_any().unbind(),
        };
        let name = new_name(py)?;
        let daemon = inherited_daemon(py)?;
        let old = self.call.lock().replace(Call { interval, function, args, kwargs });
        drop(old);
        let mut meta = self.meta.lock();
        meta.name = name;
        meta.daemon = daemon;
        Ok(())
    }

    /// A new, unstarted Timer of the same class with the same interval,
    /// function, arguments, name and daemon flag, and a copy of the
    /// attributes. (CPython's copy shares the original's thread state: a
    /// copy of a started Timer cannot be started, one of an unstarted Timer
    /// starts both.)
    fn __copy__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let call = this.call_parts(py)?;
        let new = crate::sync::lock::new_like(slf.as_any())?;
        let copy = new.cast::<Timer>()?.get();
        let old = copy.call.lock().replace(call);
        drop(old);
        let (name, daemon) = {
            let m = this.meta.lock();
            (m.name.clone(), m.daemon)
        };
        let mut meta = copy.meta.lock();
        meta.name = name;
        meta.daemon = daemon;
        drop(meta);
        Ok(new.unbind())
    }

    /// Start the countdown. The function runs on the shared timer thread
    /// after `interval` seconds unless `cancel()` is called first.
    fn start(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let interval = this.call_parts(py)?.interval;
        if this.cell.state() != TimerState::New {
            return Err(PyRuntimeError::new_err("threads can only be started once"));
        }
        if overrides_run(slf)? {
            return start_thread(slf);
        }
        let interval = interval.into_bound(py);
        // CPython's Timer waits with `finished.wait(interval)`: read as
        // `Condition.wait` reads it (a NaN is 0 there: it runs at once).
        let nan = interval.cast::<pyo3::types::PyFloat>().is_ok_and(|f| f.value().is_nan());
        let deadline = match if nan { CondTimeout::Now } else { cond_timeout(Some(&interval))? } {
            CondTimeout::Forever => deadline_after(Duration::MAX),
            CondTimeout::Now => Instant::now(),
            CondTimeout::For(secs) => deadline_in(secs),
        };
        if this.finished_event().is_set() {
            // Cancelled before it started: it ends at once, uncalled.
            if !this.cell.try_start() {
                return Err(PyRuntimeError::new_err("threads can only be started once"));
            }
            this.cell.finish();
            return Ok(());
        }
        let keep_alive = !this.meta.lock().daemon;
        match service().schedule(&this.cell, deadline, keep_alive, slf.clone().unbind()) {
            Ok(()) => Ok(()),
            Err(ScheduleError::AlreadyStarted(p)) => {
                drop(p);
                Err(PyRuntimeError::new_err("threads can only be started once"))
            }
            Err(ScheduleError::Closed(p)) => {
                drop(p);
                Err(PyRuntimeError::new_err("can't create new thread at interpreter shutdown"))
            }
            Err(ScheduleError::Spawn(e, p)) => {
                drop(p);
                Err(PyRuntimeError::new_err(format!("can't start new thread: {e}")))
            }
        }
    }

    /// Stop the timer if its function has not started; frees its entry now.
    fn cancel(&self) {
        self.finished_event().set();
        let taken = service().cancel(&self.cell);
        drop(taken);
    }

    /// Wait until the function has returned, or the Timer was cancelled
    /// before it ran, or `timeout` seconds pass. Interruptible by Ctrl-C.
    #[pyo3(signature = (timeout = None))]
    fn join(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        if self.cell.state() == TimerState::New {
            return Err(PyRuntimeError::new_err("cannot join thread before it is started"));
        }
        if let Some(thread) = self.thread(py) {
            let timeout = timeout.map(|t| t.clone().unbind()).unwrap_or_else(|| py.None());
            thread.call_method1(py, "join", (timeout,))?;
            return Ok(());
        }
        let svc = service();
        if svc.is_timer_thread() && !self.cell.is_done() {
            return Err(PyRuntimeError::new_err(if self.cell.state() == TimerState::Running {
                "cannot join current thread"
            } else {
                "cannot join a pending Timer from a Timer's function: they share one thread"
            }));
        }
        // CPython: `timeout = max(timeout, 0)`, then the thread handle's
        // wait converts it as lock.acquire does; before 3.13 only when the
        // thread has not ended.
        let timeout = match timeout.filter(|t| !t.is_none()) {
            None => None,
            Some(t) => Some(py.import("builtins")?.getattr("max")?.call1((t, 0))?),
        };
        let convert = |t: &Option<Bound<'_, PyAny>>| -> PyResult<Option<Instant>> {
            let Some(t) = t else { return Ok(None) };
            let secs = lock_timeout_ns(t)? as f64 / 1e9;
            if secs > *TIMEOUT_MAX.lock() {
                return Err(pyo3::exceptions::PyOverflowError::new_err("timeout value is too large"));
            }
            Ok(Some(deadline_in(secs)))
        };
        let early = if version(py) >= (3, 13) { Some(convert(&timeout)?) } else { None };
        if self.cell.is_done() {
            return Ok(());
        }
        let deadline = match early {
            Some(d) => d,
            None => convert(&timeout)?,
        };
        // After a fork made outside os.fork(), restart the thread here.
        svc.resume().map_err(|e| PyRuntimeError::new_err(format!("can't start new thread: {e}")))?;
        let cell = &self.cell;
        let (out, err) = detached(py, deadline, |ctx| cell.wait_done(ctx));
        match out {
            Outcome::Interrupted => Err(crate::wait::interrupted_error(py, err)),
            Outcome::Notified | Outcome::TimedOut => Ok(()),
        }
    }

    /// True from `start()` until the function returned or the Timer was
    /// cancelled before it ran.
    fn is_alive(&self, py: Python<'_>) -> PyResult<bool> {
        if let Some(thread) = self.thread(py) {
            return thread.call_method0(py, "is_alive")?.extract(py);
        }
        Ok(matches!(self.cell.state(), TimerState::Scheduled | TimerState::Running))
    }

    /// What the timer thread does for this Timer, run in the caller: wait
    /// `interval` seconds unless cancelled, then call the function.
    fn run(&self, py: Python<'_>) -> PyResult<()> {
        let interval = self.call_parts(py)?.interval;
        self.finished.bind(py).call_method1("wait", (interval,))?;
        if !self.finished_event().is_set() {
            self.call_function(py)?;
        }
        self.finished_event().set();
        Ok(())
    }

    #[getter]
    fn get_interval(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.call_parts(py)?.interval)
    }

    #[setter]
    fn set_interval(&self, value: Py<PyAny>) -> PyResult<()> {
        self.set_part(value, |c| &mut c.interval)
    }

    #[getter]
    fn get_function(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.call_parts(py)?.function)
    }

    #[setter]
    fn set_function(&self, value: Py<PyAny>) -> PyResult<()> {
        self.set_part(value, |c| &mut c.function)
    }

    #[getter]
    fn get_args(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.call_parts(py)?.args)
    }

    #[setter]
    fn set_args(&self, value: Py<PyAny>) -> PyResult<()> {
        self.set_part(value, |c| &mut c.args)
    }

    #[getter]
    fn get_kwargs(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.call_parts(py)?.kwargs)
    }

    #[setter]
    fn set_kwargs(&self, value: Py<PyAny>) -> PyResult<()> {
        self.set_part(value, |c| &mut c.kwargs)
    }

    /// The plait Event that `cancel()` sets (and a completed call sets).
    #[getter(finished)]
    fn get_finished(&self, py: Python<'_>) -> Py<Event> {
        self.finished.clone_ref(py)
    }

    #[getter]
    fn get_name(&self) -> String {
        self.meta.lock().name.clone()
    }

    #[setter]
    fn set_name(&self, name: &Bound<'_, PyAny>) -> PyResult<()> {
        let name = name.str()?.to_string();
        self.meta.lock().name = name;
        Ok(())
    }

    #[getter]
    fn get_daemon(&self) -> bool {
        self.meta.lock().daemon
    }

    #[setter]
    fn set_daemon(&self, daemonic: &Bound<'_, PyAny>) -> PyResult<()> {
        let daemonic = daemonic.is_truthy()?;
        if self.cell.state() != TimerState::New {
            return Err(PyRuntimeError::new_err("cannot set daemon status of active thread"));
        }
        self.meta.lock().daemon = daemonic;
        Ok(())
    }

    /// None: Timers share one timer thread (a subclass overriding `run()`
    /// reports its own thread's).
    #[getter]
    fn ident(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.thread(py) {
            Some(t) => t.getattr(py, "ident"),
            None => Ok(py.None()),
        }
    }

    /// None, as `ident`.
    #[getter]
    fn native_id(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.thread(py) {
            Some(t) => t.getattr(py, "native_id"),
            None => Ok(py.None()),
        }
    }

    /// Deprecated alias of `name` (CPython warns too).
    #[pyo3(name = "getName")]
    fn get_name_alias(&self, py: Python<'_>) -> PyResult<String> {
        deprecated(py, c"getName() is deprecated, get the name attribute instead")?;
        Ok(self.get_name())
    }

    /// Deprecated alias of setting `name`.
    #[pyo3(name = "setName")]
    fn set_name_alias(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<()> {
        deprecated(py, c"setName() is deprecated, set the name attribute instead")?;
        self.set_name(name)
    }

    /// Deprecated alias of `daemon`.
    #[pyo3(name = "isDaemon")]
    fn is_daemon_alias(&self, py: Python<'_>) -> PyResult<bool> {
        deprecated(py, c"isDaemon() is deprecated, get the daemon attribute instead")?;
        Ok(self.get_daemon())
    }

    /// Deprecated alias of setting `daemon`.
    #[pyo3(name = "setDaemon")]
    fn set_daemon_alias(&self, py: Python<'_>, daemonic: &Bound<'_, PyAny>) -> PyResult<()> {
        deprecated(py, c"setDaemon() is deprecated, set the daemon attribute instead")?;
        self.set_daemon(daemonic)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // The locks are only ever held briefly by an attached thread, so
        // while the collector runs nobody else holds them; if one somehow
        // is, skipping it only delays collecting a cycle.
        if let Some(g) = self.call.try_lock() {
            if let Some(c) = g.as_ref() {
                visit.call(&c.interval)?;
                visit.call(&c.function)?;
                visit.call(&c.args)?;
                visit.call(&c.kwargs)?;
            }
        }
        if let Some(m) = self.meta.try_lock() {
            if let Some(t) = &m.thread {
                visit.call(t)?;
            }
        }
        // Not `finished`: an Event holds no references, so no cycle runs
        // through it. (And the collector can reach this object while its
        // instance dict is being created, before `finished` is written; the
        // fields above are `Option`s whose all-zero state is `None`.)
        Ok(())
    }

    fn __clear__(&self) {
        // Dropped after the locks are released: a decref can run Python.
        let call = self.call.lock().take();
        let thread = self.meta.lock().thread.take();
        drop((call, thread));
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let this = slf.get();
        let mut status = match this.cell.state() {
            TimerState::New => "initial",
            TimerState::Scheduled | TimerState::Running => "started",
            TimerState::Done => "stopped",
        }
        .to_owned();
        if this.thread(py).is_some() && !this.is_alive(py)? {
            status = "stopped".to_owned();
        }
        let meta = this.meta.lock();
        if meta.daemon {
            status.push_str(" daemon");
        }
        let cls = slf.get_type().name()?;
        Ok(format!("<{}({}, {})>", cls, meta.name, status))
    }
}

fn deprecated(py: Python<'_>, msg: &std::ffi::CStr) -> PyResult<()> {
    PyErr::warn(py, &py.get_type::<PyDeprecationWarning>(), msg, 1)
}

/// Start a subclass's overridden `run()` on a `threading.Thread` of its own.
fn start_thread(slf: &Bound<'_, Timer>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    if !this.cell.try_start() {
        return Err(PyRuntimeError::new_err("threads can only be started once"));
    }
    let (name, daemon) = {
        let m = this.meta.lock();
        (m.name.clone(), m.daemon)
    };
    let kwargs = PyDict::new(py);
    kwargs.set_item("target", slf.getattr("run")?)?;
    kwargs.set_item("name", name)?;
    kwargs.set_item("daemon", daemon)?;
    let thread = py.import("threading")?.getattr("Thread")?.call((), Some(&kwargs))?;
    this.meta.lock().thread = Some(thread.clone().unbind());
    thread.call_method0("start")?;
    Ok(())
}

/// `atexit` hook: let non-daemon Timers fire, then drop the daemon ones.
#[pyfunction]
pub fn _timer_atexit(py: Python<'_>) -> PyResult<()> {
    // Created if need be, so that a Timer started by a later exit handler
    // is refused rather than left to a thread racing finalization.
    let svc = service();
    let (out, err) = detached(py, None, |ctx| svc.wait_keep_alive(ctx));
    let dropped = svc.close();
    drop(dropped);
    let grace = Instant::now() + EXIT_GRACE;
    py.detach(|| svc.wait_idle(&WaitCtx::until(Some(grace))));
    match out {
        Outcome::Interrupted => Err(crate::wait::interrupted_error(py, err)),
        _ => Ok(()),
    }
}

/// `os.register_at_fork(after_in_child=...)` hook: a forked child restarts
/// the timer thread for the Timers it inherited.
#[pyfunction]
pub fn _timer_after_fork() -> PyResult<()> {
    if let Some(svc) = SERVICE.get() {
        svc.resume().map_err(|e| PyRuntimeError::new_err(format!("can't start new thread: {e}")))?;
    }
    Ok(())
}

/// `(queued, non-daemon queued or running)`: for tests and `plait.debug`.
#[pyfunction]
pub fn _timer_pending() -> (usize, usize) {
    match SERVICE.get() {
        Some(svc) => (svc.pending(), svc.keep_alive_pending()),
        None => (0, 0),
    }
}

/// Register the exit and fork hooks (at module import).
pub fn install_hooks(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    py.import("atexit")?.call_method1("register", (m.getattr("_timer_atexit")?,))?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("after_in_child", m.getattr("_timer_after_fork")?)?;
    py.import("os")?.call_method("register_at_fork", (), Some(&kwargs))?;
    Ok(())
}
