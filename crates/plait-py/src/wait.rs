//! Waiting from Python: detach from the interpreter, honour Ctrl-C.
//!
//! CPython's C signal handler only sets a flag; Python-level handlers (the
//! one that raises KeyboardInterrupt included) run when the main thread is
//! attached and calls `PyErr_CheckSignals`. A detached Rust wait would never
//! see them. So in the main thread every wait is sliced: the core parks for
//! at most [`SLICE`], then runs [`Interrupt::check`], which attaches briefly
//! and runs pending handlers. A handler that raises ends the wait and its
//! exception is what the blocking call raises. Other threads never receive
//! Python signals and wait unsliced.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use plait_core::detach::Detach;
use plait_core::park::{deadline_after, WaitCtx};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::debug::Watch;
use pyo3::types::{PyFloat, PyInt};

/// How often a blocked main thread looks for signals.
pub const SLICE: Duration = Duration::from_millis(5);

/// Largest accepted timeout, `_thread.TIMEOUT_MAX` (set at module init).
pub static TIMEOUT_MAX: Mutex<f64> = Mutex::new(f64::MAX);

/// The binding's [`Detach`]: leave the interpreter around `f`.
#[derive(Clone, Copy)]
pub struct Gil<'py>(pub Python<'py>);

impl Detach for Gil<'_> {
    #[inline]
    fn detach<R: Send, F: FnOnce() -> R + Send>(&self, f: F) -> R {
        self.0.detach(f)
    }
}

/// Collects the exception raised by a signal handler during a wait.
#[derive(Default)]
pub struct Interrupt {
    err: Mutex<Option<PyErr>>,
}

impl Interrupt {
    /// Run pending signal handlers; `true` if one raised.
    pub fn check(&self) -> bool {
        Python::attach(|py| match py.check_signals() {
            Ok(()) => false,
            Err(e) => {
                *self.err.lock() = Some(e);
                true
            }
        })
    }

    /// The exception a handler raised, if any.
    pub fn take(&self) -> Option<PyErr> {
        self.err.lock().take()
    }
}

/// Whether the calling thread is the one that receives Python signals.
#[inline]
pub fn is_main_thread() -> bool {
    plait_core::thread::ident() == plait_core::fork::main_thread()
}

/// Run `f` detached with a [`WaitCtx`] for `deadline`, interruptible by
/// signal handlers when called from the main thread. Returns `f`'s result
/// and the exception a signal handler raised, if one did.
///
/// Every such wait also carries a `plait.debug` [`Watch`]: it wakes now
/// and then to look for a deadlock or stall it is part of, and may be
/// refused when it would close a deadlock (`deadlock="raise"`): `f` then
/// returns `Interrupted` with no exception, which
/// [`interrupted_error`] turns into `DeadlockError`.
pub fn detached<R: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    f: impl FnOnce(&WaitCtx<'_>) -> R + Send,
) -> (R, Option<PyErr>) {
    let intr = Interrupt::default();
    let main = is_main_thread();
    let slice = if main { Some(SLICE) } else { Watch::slice() };
    let watch = Watch::new(slice.unwrap_or(SLICE));
    let check = || (main && intr.check()) || watch.tick();
    let mut ctx = WaitCtx::until(deadline).refusable();
    if let Some(slice) = slice {
        ctx = ctx.with_interrupt(&check, slice);
    }
    let r = py.detach(|| f(&ctx));
    (r, intr.take())
}

/// Run `f` detached and uninterruptible (re-taking a lock we must hold):
/// never refused, and signals wait; the `plait.debug` watch still looks.
pub fn detached_uninterruptible<R: Send>(py: Python<'_>, f: impl FnOnce(&WaitCtx<'_>) -> R + Send) -> R {
    let slice = Watch::slice();
    let watch = Watch::new(slice.unwrap_or(SLICE));
    let check = || watch.tick();
    let mut ctx = WaitCtx::forever();
    if let Some(slice) = slice {
        ctx = ctx.with_interrupt(&check, slice);
    }
    py.detach(|| f(&ctx))
}

/// A timeout in seconds, converted the way `_PyTime_FromSecondsObject`
/// does: ints and floats only; NaN is a ValueError.
pub fn seconds(obj: &Bound<'_, PyAny>) -> PyResult<f64> {
    let t = if let Ok(f) = obj.cast::<PyFloat>() {
        f.value()
    } else if obj.is_instance_of::<PyInt>() {
        match obj.extract::<i64>() {
            Ok(i) => i as f64,
            Err(_) => return Err(PyOverflowError::new_err("timestamp too large to convert to C _PyTime_t")),
        }
    } else {
        return Err(PyTypeError::new_err(format!(
            "'{}' object cannot be interpreted as an integer or float",
            obj.get_type().name()?
        )));
    };
    if t.is_nan() {
        return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
    }
    Ok(t)
}

/// A deadline `secs` from now; non-positive means "now".
pub fn deadline_in(secs: f64) -> Instant {
    if secs <= 0.0 {
        Instant::now()
    } else {
        deadline_after(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
    }
}

/// Truthiness of an optional `blocking` argument (default true), accepting
/// any object as CPython's `p` format does.
#[inline]
pub fn truthy(obj: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    match obj {
        None => Ok(true),
        Some(o) => o.is_truthy(),
    }
}

/// An argument as passed, Python `None` included: `Arg(None)` only when
/// it was not passed (PyO3 turns an explicit `None` into a missing
/// `Option`, which `threading`'s contract tells apart: `acquire(timeout=None)`
/// is a TypeError, `Semaphore.acquire(None)` is non-blocking).
pub struct Arg<'py>(pub Option<Bound<'py, PyAny>>);

impl<'a, 'py> FromPyObject<'a, 'py> for Arg<'py> {
    type Error = PyErr;

    #[inline]
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(Arg(Some(obj.to_owned())))
    }
}

impl<'py> Arg<'py> {
    /// The default: not passed.
    pub const ABSENT: Arg<'static> = Arg(None);

    #[inline]
    pub fn get(&self) -> Option<&Bound<'py, PyAny>> {
        self.0.as_ref()
    }
}

/// The running interpreter's `(major, minor)`.
pub fn version(py: Python<'_>) -> (u8, u8) {
    let v = py.version_info();
    (v.major, v.minor)
}

/// How `_PyTime_FromSecondsObject` rounds a float to nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Round {
    /// Away from zero (`_PyTime_ROUND_TIMEOUT`): `lock.acquire`.
    Timeout,
    /// Up (`_PyTime_ROUND_CEILING`): `SimpleQueue.get`, so `-1e-10` is 0.
    Ceiling,
}

/// A timeout in nanoseconds, converted exactly as `_thread.lock.acquire`
/// converts it (`_PyTime_FromSecondsObject`, rounding away from zero): a
/// float (NaN: ValueError), or an integer by `__index__`; anything else is a
/// TypeError, and a value that does not fit in 64-bit nanoseconds (±inf
/// included) an OverflowError.
pub fn lock_timeout_ns(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    timeout_ns(obj, Round::Timeout)
}

/// [`lock_timeout_ns`] with the given rounding of floats (C code other
/// than the lock, such as `SimpleQueue.get`, rounds up).
pub fn timeout_ns(obj: &Bound<'_, PyAny>, round: Round) -> PyResult<i64> {
    const NS: f64 = 1e9;
    if let Ok(f) = obj.cast::<PyFloat>() {
        let t = f.value();
        if t.is_nan() {
            return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
        }
        let ns = t * NS;
        let ns = if ns >= 0.0 || round == Round::Ceiling { ns.ceil() } else { ns.floor() };
        // i64::MAX as f64 rounds up to 2**63, itself out of range.
        if !(ns >= i64::MIN as f64 && ns < i64::MAX as f64) {
            return Err(PyOverflowError::new_err("timestamp out of range for platform time_t"));
        }
        return Ok(ns as i64);
    }
    let int = if obj.is_instance_of::<PyInt>() {
        obj.clone()
    } else {
        // SAFETY: attached; `obj` is a live object. PyNumber_Index returns a
        // new reference or NULL with an exception set.
        let r = unsafe { pyo3::ffi::PyNumber_Index(obj.as_ptr()) };
        if r.is_null() {
            // Its TypeError: "'X' object cannot be interpreted as an integer".
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: `r` is the new reference just returned.
        unsafe { Bound::from_owned_ptr(obj.py(), r) }
    };
    int.extract::<i64>()
        .ok()
        .and_then(|s| s.checked_mul(NS as i64))
        .ok_or_else(|| PyOverflowError::new_err("timestamp too large to convert to C _PyTime_t"))
}

/// What `threading.Condition.wait(timeout)` does with its timeout, the step
/// every pure-Python primitive of CPython (Event, Semaphore, Barrier, the
/// queues) waits through.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CondTimeout {
    /// `None`: wait until notified.
    Forever,
    /// `timeout > 0` is false (0, negative, -inf): one non-blocking look.
    Now,
    /// Wait at most this many seconds.
    For(f64),
}

impl CondTimeout {
    /// The deadline of the wait (`Now` is now).
    pub fn deadline(self) -> Option<Instant> {
        match self {
            CondTimeout::Forever => None,
            CondTimeout::Now => Some(Instant::now()),
            CondTimeout::For(s) => Some(deadline_in(s)),
        }
    }
}

/// `Condition.wait`'s reading of `timeout` (None: forever): `timeout > 0`
/// (a TypeError when it cannot be compared), then, when true,
/// `lock.acquire(True, timeout)`'s conversion and checks (OverflowError for
/// +inf and what exceeds `TIMEOUT_MAX`). A NaN timeout is a ValueError
/// (CPython takes it for 0 in this step and may then spin forever).
pub fn cond_timeout(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<CondTimeout> {
    let Some(t) = timeout.filter(|t| !t.is_none()) else { return Ok(CondTimeout::Forever) };
    if let Ok(f) = t.cast_exact::<PyFloat>() {
        return cond_seconds(f.value());
    }
    let positive = if let Ok(f) = t.cast::<PyFloat>() {
        if f.value().is_nan() {
            return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
        }
        t.gt(0)?
    } else {
        t.gt(0)?
    };
    if !positive {
        return Ok(CondTimeout::Now);
    }
    let ns = lock_timeout_ns(t)?;
    let secs = ns as f64 / 1e9;
    if secs > *TIMEOUT_MAX.lock() {
        return Err(PyOverflowError::new_err("timeout value is too large"));
    }
    Ok(CondTimeout::For(secs))
}

/// `Condition.wait(secs)` for a float already read (the queues' and
/// `Executor.map`'s remaining time): NaN is a ValueError, not positive is
/// one look, beyond `threading.TIMEOUT_MAX` (inf included) OverflowError.
pub fn cond_seconds(secs: f64) -> PyResult<CondTimeout> {
    if secs.is_nan() {
        return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
    }
    if secs <= 0.0 {
        return Ok(CondTimeout::Now);
    }
    if secs > *TIMEOUT_MAX.lock() {
        return Err(PyOverflowError::new_err("timeout value is too large"));
    }
    Ok(CondTimeout::For(secs))
}

/// The step before `Condition.wait` in CPython's timed loops (Semaphore,
/// `wait_for`, the queues): `endtime = _time() + timeout`, which refuses
/// what a float cannot be added to.
pub fn check_addable(timeout: &Bound<'_, PyAny>) -> PyResult<()> {
    if timeout.is_exact_instance_of::<PyFloat>() || timeout.is_exact_instance_of::<PyInt>() {
        if let Ok(i) = timeout.cast::<PyInt>() {
            // float + int: an int too large for a float overflows.
            if i.extract::<i64>().is_err() {
                i.extract::<f64>()?;
            }
        }
        return Ok(());
    }
    PyFloat::new(timeout.py(), 0.0).add(timeout).map(drop)
}

/// Parse `_thread.lock.acquire(blocking=True, timeout=-1)` arguments, with
/// the running CPython's checks: `blocking` is an `int` before 3.12 and any
/// object (its truth) from 3.12; the timeout converts as
/// [`lock_timeout_ns`] (None is a TypeError), -1 means "unset". The
/// arguments are as passed (`None` = not passed; a Python None is passed).
/// Returns `None` for a non-blocking attempt, `Some(None)` to wait forever,
/// `Some(Some(deadline))` otherwise.
#[inline]
pub fn lock_acquire_args(
    blocking: Option<&Bound<'_, PyAny>>,
    timeout: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Option<Instant>>> {
    let blocking = match blocking {
        None => true,
        Some(b) if version(b.py()) < (3, 12) => {
            if let Ok(f) = b.cast::<PyFloat>() {
                return Err(PyTypeError::new_err(format!(
                    "'{}' object cannot be interpreted as an integer",
                    f.get_type().name()?
                )));
            }
            b.extract::<i32>()? != 0
        }
        Some(b) => b.is_truthy()?,
    };
    let ns = match timeout {
        None => -1_000_000_000,
        Some(t) => lock_timeout_ns(t)?,
    };
    let unset = ns == -1_000_000_000;
    if !blocking {
        if !unset {
            return Err(PyValueError::new_err("can't specify a timeout for a non-blocking call"));
        }
        return Ok(None);
    }
    if unset {
        return Ok(Some(None));
    }
    if ns < 0 {
        return Err(PyValueError::new_err("timeout value must be a non-negative number"));
    }
    let secs = ns as f64 / 1e9;
    if secs > *TIMEOUT_MAX.lock() {
        return Err(PyOverflowError::new_err("timeout value is too large"));
    }
    Ok(Some(Some(deadline_in(secs))))
}

/// The exception for a wait that ended `Interrupted`: the one a signal
/// handler raised, else (a refused wait: parking would have closed a
/// deadlock in `deadlock="raise"` mode) `plait.debug.DeadlockError` with
/// the report.
pub fn interrupted_error(py: Python<'_>, err: Option<PyErr>) -> PyErr {
    if let Some(e) = err {
        return e;
    }
    match plait_core::debug::waits::take_refused() {
        Some(cycle) => crate::debug::deadlock_error(py, &cycle),
        None => pyo3::exceptions::PyRuntimeError::new_err("wait interrupted"),
    }
}
