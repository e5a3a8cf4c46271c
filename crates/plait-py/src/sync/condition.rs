//! `plait.Condition`: `threading.Condition` over any lock.
//!
//! With a plait Lock or RLock (the default) every step stays in Rust. Any
//! other lock object works too, through its Python methods, using the same
//! protocol as CPython: `_release_save` / `_acquire_restore` / `_is_owned`
//! when the lock has them, plain `release` / `acquire` otherwise.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use plait_core::fork::{register_arc, Registration};
use plait_core::park::Outcome;
use plait_core::sync::CondVar;
use pyo3::exceptions::{PyAttributeError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyInt, PyTuple};

use crate::sync::lock::{new_like, Lock, RLock};
use crate::debug::site::{creation_site, name_arg};
use crate::wait::{check_addable, cond_timeout, detached, interrupted_error, Arg, CondTimeout};

enum Kind {
    Lock(Py<Lock>),
    RLock(Py<RLock>),
    Other,
}

/// What `wait` must give back to the lock after waiting.
enum Saved {
    Lock,
    RLock(u64),
    Other(Option<Py<PyAny>>),
}

/// A condition variable, like `threading.Condition`.
///
/// As CPython's (a Python class there), it takes attributes, weak
/// references and subclasses; `copy.copy` gives a Condition sharing the
/// lock and the waiters, as CPython's copy does, with a copy of the
/// attributes.
///
/// Difference from CPython: calling `__init__` again on a Condition
/// already made raises RuntimeError (CPython starts it over).
///
/// Addition: a keyword-only `name=` (a str) names it in `plait.debug`;
/// without it, it is known by its creation site `file:line`.
#[pyclass(module = "plait", frozen, weakref, dict, subclass)]
pub struct Condition {
    /// Set by `__init__` (CPython's `object.__new__` leaves the arguments
    /// to `__init__`, so a subclass's own `__init__` may take others).
    init: OnceLock<Init>,
}

/// The waiters: shared by a Condition and its copies.
struct Waiters {
    cv: Arc<CondVar>,
    _fork: Registration,
}

/// What `__init__` sets.
struct Init {
    lock: Py<PyAny>,
    kind: Kind,
    waiters: Arc<Waiters>,
}

impl Condition {
    #[inline]
    fn st(&self) -> PyResult<&Init> {
        self.init.get().ok_or_else(|| PyAttributeError::new_err("Condition.__init__() was not called"))
    }
}

impl Init {
    fn cv(&self) -> &Arc<CondVar> {
        &self.waiters.cv
    }

    fn is_owned_impl(&self, py: Python<'_>) -> PyResult<bool> {
        match &self.kind {
            // CPython's fallback for a plain Lock: "owned" means locked.
            Kind::Lock(l) => Ok(l.get().core.is_locked()),
            Kind::RLock(r) => Ok(r.get().core.is_owned()),
            Kind::Other => {
                let lock = self.lock.bind(py);
                if lock.hasattr("_is_owned")? {
                    return lock.call_method0("_is_owned")?.is_truthy();
                }
                if lock.call_method1("acquire", (false,))?.is_truthy()? {
                    lock.call_method0("release")?;
                    Ok(false)
                } else {
                    Ok(true)
                }
            }
        }
    }

    fn release_save(&self, py: Python<'_>) -> PyResult<Saved> {
        match &self.kind {
            Kind::Lock(l) => l.get().release_impl().map(|_| Saved::Lock),
            Kind::RLock(r) => r.get().release_save_impl().map(|(count, _)| Saved::RLock(count)),
            Kind::Other => {
                let lock = self.lock.bind(py);
                if lock.hasattr("_release_save")? {
                    Ok(Saved::Other(Some(lock.call_method0("_release_save")?.unbind())))
                } else {
                    lock.call_method0("release")?;
                    Ok(Saved::Other(None))
                }
            }
        }
    }

    fn acquire_restore(&self, py: Python<'_>, saved: Saved) -> PyResult<()> {
        match (&self.kind, saved) {
            (Kind::Lock(l), _) => {
                l.get().acquire_uninterruptible(py);
                Ok(())
            }
            (Kind::RLock(r), Saved::RLock(count)) => {
                r.get().acquire_restore_impl(py, count);
                Ok(())
            }
            (_, Saved::Other(Some(state))) => {
                self.lock.bind(py).call_method1("_acquire_restore", (state,))?;
                Ok(())
            }
            _ => {
                self.lock.bind(py).call_method0("acquire")?;
                Ok(())
            }
        }
    }

    /// One `wait`, with CPython's order of checks (the lock is owned, then
    /// the timeout as `cond_timeout` reads it); `Ok(true)` when notified,
    /// and how the timeout was read.
    fn wait_impl(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<(bool, CondTimeout)> {
        if !self.is_owned_impl(py)? {
            return Err(PyRuntimeError::new_err("cannot wait on un-acquired lock"));
        }
        let t = cond_timeout(timeout)?;
        if t == CondTimeout::Now {
            // CPython's non-blocking attempt on a fresh waiter lock.
            return Ok((false, t));
        }
        let node = self.cv().enqueue();
        let saved = match self.release_save(py) {
            Ok(s) => s,
            Err(e) => {
                self.cv().cancel(&node);
                return Err(e);
            }
        };
        let deadline = t.deadline();
        let cv = self.cv();
        let (out, err) = detached(py, deadline, |ctx| cv.wait(&node, ctx));
        self.acquire_restore(py, saved)?;
        match out {
            Outcome::Notified => Ok((true, t)),
            Outcome::TimedOut => Ok((false, t)),
            Outcome::Interrupted => Err(interrupted_error(py, err)),
        }
    }

    fn check_owned(&self, py: Python<'_>, what: &str) -> PyResult<()> {
        if self.is_owned_impl(py)? {
            Ok(())
        } else {
            Err(PyRuntimeError::new_err(format!("cannot {what} on un-acquired lock")))
        }
    }
}

impl Condition {
    /// A Condition over a new plait RLock (what `Condition()` makes).
    pub fn create(py: Python<'_>) -> PyResult<Self> {
        let c = Condition { init: OnceLock::new() };
        c.init_impl(py, None, None)?;
        Ok(c)
    }

    fn init_impl(&self, py: Python<'_>, lock: Option<&Bound<'_, PyAny>>, name: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let name = name_arg(name)?;
        let site = creation_site(py);
        let lock = match lock {
            Some(l) if !l.is_none() => l.clone(),
            _ => {
                // The lock it makes is known by the condition's name.
                let rlock = RLock::create();
                rlock.core.probe().label(name.clone(), site.clone());
                Bound::new(py, rlock)?.into_any()
            }
        };
        let kind = if let Ok(l) = lock.cast::<Lock>() {
            Kind::Lock(l.clone().unbind())
        } else if let Ok(r) = lock.cast::<RLock>() {
            Kind::RLock(r.clone().unbind())
        } else {
            // CPython takes `lock.acquire` and `lock.release` here.
            lock.getattr("acquire")?;
            lock.getattr("release")?;
            Kind::Other
        };
        let cv = Arc::new(CondVar::new());
        cv.probe.label(name, site);
        let reg = register_arc(&cv);
        let init = Init { lock: lock.unbind(), kind, waiters: Arc::new(Waiters { cv, _fork: reg }) };
        self.init.set(init).map_err(|_| PyRuntimeError::new_err("Condition.__init__() called twice"))
    }
}

#[pymethods]
impl Condition {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(lock=None, *, name=None)")]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Condition { init: OnceLock::new() }
    }

    #[pyo3(signature = (lock = None, *, name = None))]
    fn __init__(&self, py: Python<'_>, lock: Option<&Bound<'_, PyAny>>, name: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.init_impl(py, lock, name)
    }

    /// A Condition of the same class on the same lock and waiters, with a
    /// copy of the attributes.
    fn __copy__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let st = slf.get().st()?;
        let new = new_like(slf.as_any())?;
        let kind = match &st.kind {
            Kind::Lock(l) => Kind::Lock(l.clone_ref(py)),
            Kind::RLock(r) => Kind::RLock(r.clone_ref(py)),
            Kind::Other => Kind::Other,
        };
        let init = Init { lock: st.lock.clone_ref(py), kind, waiters: st.waiters.clone() };
        let _ = new.cast::<Condition>()?.get().init.set(init);
        Ok(new.unbind())
    }

    /// Acquire the underlying lock (same arguments as its acquire).
    #[pyo3(signature = (*args, **kwargs))]
    fn acquire(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let st = self.st()?;
        let simple = args.is_empty() && kwargs.is_none();
        match &st.kind {
            Kind::Lock(l) if simple => l.get().acquire_impl(py, None, None).map(|b| b.into_pyobject(py).unwrap().to_owned().into_any().unbind()),
            Kind::RLock(r) if simple => r.get().acquire_impl(py, None, None).map(|b| b.into_pyobject(py).unwrap().to_owned().into_any().unbind()),
            _ => Ok(st.lock.bind(py).call_method("acquire", args, kwargs)?.unbind()),
        }
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let st = self.st()?;
        match &st.kind {
            Kind::Lock(l) => l.get().acquire_impl(py, None, None).map(|b| b.into_pyobject(py).unwrap().to_owned().into_any().unbind()),
            Kind::RLock(r) => r.get().acquire_impl(py, None, None).map(|b| b.into_pyobject(py).unwrap().to_owned().into_any().unbind()),
            Kind::Other => Ok(st.lock.bind(py).call_method0("__enter__")?.unbind()),
        }
    }

    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let st = self.st()?;
        match &st.kind {
            Kind::Lock(l) => l.get().release_impl(),
            Kind::RLock(r) => r.get().release_impl(),
            Kind::Other => st.lock.bind(py).call_method0("release").map(|_| ()),
        }
    }

    #[pyo3(signature = (*args))]
    fn __exit__(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        let st = self.st()?;
        match &st.kind {
            Kind::Lock(l) => l.get().release_impl().map(|_| py.None()),
            Kind::RLock(r) => r.get().release_impl().map(|_| py.None()),
            Kind::Other => Ok(st.lock.bind(py).call_method1("__exit__", args)?.unbind()),
        }
    }

    /// Release the lock, wait for a notify or the timeout, re-take the lock.
    /// Returns False if the timeout expired.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        Ok(self.st()?.wait_impl(py, timeout)?.0)
    }

    /// Wait until `predicate()` is true; returns its last value. Calls the
    /// predicate and reads the timeout as CPython's `wait_for` does.
    #[pyo3(signature = (predicate, timeout = None))]
    fn wait_for(
        &self,
        py: Python<'_>,
        predicate: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let st = self.st()?;
        let timeout = timeout.filter(|t| !t.is_none());
        let mut endtime: Option<Instant> = None;
        let mut result = predicate.call0()?;
        while !result.is_truthy()? {
            match (timeout, endtime) {
                (None, _) => {
                    st.wait_impl(py, None)?;
                }
                (Some(t), None) => {
                    // `endtime = _time() + waittime`, then `wait(waittime)`.
                    check_addable(t)?;
                    let start = Instant::now();
                    let (_, read) = st.wait_impl(py, Some(t))?;
                    endtime = Some(match read {
                        CondTimeout::For(secs) => start + Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO),
                        _ => start,
                    });
                }
                (Some(_), Some(end)) => {
                    let left = end.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    st.wait_impl(py, Some(PyFloat::new(py, left.as_secs_f64()).as_any()))?;
                }
            }
            result = predicate.call0()?;
        }
        Ok(result.unbind())
    }

    /// Wake up to `n` waiting threads: none when `n` is not positive (as
    /// CPython's loop `while waiters and n > 0`, which looks at `n` only
    /// when a thread waits).
    #[pyo3(signature = (n = Arg::ABSENT), text_signature = "($self, n=1)")]
    fn notify(&self, py: Python<'_>, n: Arg<'_>) -> PyResult<()> {
        let st = self.st()?;
        st.check_owned(py, "notify")?;
        let waiting = st.cv().len();
        if waiting == 0 {
            return Ok(());
        }
        let count = match n.get() {
            None => 1,
            Some(n) => match n.cast_exact::<PyInt>().ok().map(|i| i.extract::<i64>()) {
                Some(Ok(k)) => k.clamp(0, i64::MAX) as usize,
                // A big int, or another type: count down as CPython does.
                _ => {
                    let mut k = 0;
                    let mut left = n.clone();
                    while k < waiting && left.gt(0)? {
                        left = left.sub(1)?;
                        k += 1;
                    }
                    k
                }
            },
        };
        if count > 0 {
            st.cv().notify(count);
        }
        Ok(())
    }

    fn notify_all(&self, py: Python<'_>) -> PyResult<()> {
        let st = self.st()?;
        st.check_owned(py, "notify")?;
        st.cv().notify_all();
        Ok(())
    }

    /// Deprecated alias of notify_all (CPython warns too).
    #[pyo3(name = "notifyAll")]
    fn notify_all_alias(&self, py: Python<'_>) -> PyResult<()> {
        PyErr::warn(
            py,
            &py.get_type::<pyo3::exceptions::PyDeprecationWarning>(),
            c"notifyAll() is deprecated, use notify_all() instead",
            1,
        )?;
        self.notify_all(py)
    }

    fn _is_owned(&self, py: Python<'_>) -> PyResult<bool> {
        let st = self.st()?;
        st.is_owned_impl(py)
    }

    /// Release the lock fully; returns what `_acquire_restore` needs.
    fn _release_save(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let st = self.st()?;
        Ok(match st.release_save(py)? {
            Saved::Lock => py.None(),
            Saved::RLock(count) => (count, plait_core::thread::ident()).into_pyobject(py)?.into_any().unbind(),
            Saved::Other(state) => state.unwrap_or_else(|| py.None()),
        })
    }

    fn _acquire_restore(&self, py: Python<'_>, state: &Bound<'_, PyAny>) -> PyResult<()> {
        let st = self.st()?;
        let saved = match &st.kind {
            Kind::Lock(_) => Saved::Lock,
            Kind::RLock(_) => Saved::RLock(state.extract::<(u64, u64)>()?.0),
            Kind::Other if state.is_none() => Saved::Other(None),
            Kind::Other => Saved::Other(Some(state.clone().unbind())),
        };
        st.acquire_restore(py, saved)
    }

    fn _at_fork_reinit(&self, py: Python<'_>) -> PyResult<()> {
        let st = self.st()?;
        st.lock.bind(py).call_method0("_at_fork_reinit")?;
        Ok(())
    }

    /// The lock this condition uses.
    #[getter]
    fn _lock(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.st()?.lock.clone_ref(py))
    }

    /// Idents of the threads waiting on this condition (for plait.debug).
    #[getter]
    fn _waiter_idents(&self) -> Vec<u64> {
        self.init.get().map(|st| st.cv().waiters()).unwrap_or_default()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let st = self.st()?;
        Ok(format!("<Condition({}, {})>", st.lock.bind(py).repr()?, st.cv().len()))
    }
}
