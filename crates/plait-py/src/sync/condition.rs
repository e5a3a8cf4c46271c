//! `plait.Condition`: `threading.Condition` over any lock.
//!
//! With a plait Lock or RLock (the default) every step stays in Rust. Any
//! other lock object works too, through its Python methods, using the same
//! protocol as CPython: `_release_save` / `_acquire_restore` / `_is_owned`
//! when the lock has them, plain `release` / `acquire` otherwise.

use std::sync::Arc;

use plait_core::fork::{register_arc, Registration};
use plait_core::park::Outcome;
use plait_core::sync::CondVar;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::sync::lock::{Lock, RLock};
use crate::debug::site::{creation_site, name_arg};
use crate::wait::{deadline_in, detached, interrupted_error, seconds};

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
/// Addition: a keyword-only `name=` (a str) names it in `plait.debug`;
/// without it, it is known by its creation site `file:line`.
#[pyclass(module = "plait", frozen, weakref, subclass)]
pub struct Condition {
    lock: Py<PyAny>,
    kind: Kind,
    cv: Arc<CondVar>,
    _fork: Registration,
}

impl Condition {
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

    /// One `wait`; `Ok(true)` when notified.
    fn wait_impl(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        if !self.is_owned_impl(py)? {
            return Err(PyRuntimeError::new_err("cannot wait on un-acquired lock"));
        }
        let node = self.cv.enqueue();
        let saved = match self.release_save(py) {
            Ok(s) => s,
            Err(e) => {
                self.cv.cancel(&node);
                return Err(e);
            }
        };
        let deadline = timeout.map(deadline_in);
        let cv = &self.cv;
        let (out, err) = detached(py, deadline, |ctx| cv.wait(&node, ctx));
        self.acquire_restore(py, saved)?;
        match out {
            Outcome::Notified => Ok(true),
            Outcome::TimedOut => Ok(false),
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
        Condition::new(py, None, None)
    }
}

fn timeout_arg(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
    match timeout {
        Some(t) if !t.is_none() => Ok(Some(seconds(t)?)),
        _ => Ok(None),
    }
}

#[pymethods]
impl Condition {
    #[new]
    #[pyo3(signature = (lock = None, *, name = None))]
    fn new(py: Python<'_>, lock: Option<Bound<'_, PyAny>>, name: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let name = name_arg(name)?;
        let site = creation_site(py);
        let lock = match lock {
            Some(l) if !l.is_none() => l,
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
            Kind::Other
        };
        let cv = Arc::new(CondVar::new());
        cv.probe.label(name, site);
        let reg = register_arc(&cv);
        Ok(Condition { lock: lock.unbind(), kind, cv, _fork: reg })
    }

    /// Acquire the underlying lock (same arguments as its acquire).
    #[pyo3(signature = (*args, **kwargs))]
    fn acquire(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let simple = args.is_empty() && kwargs.is_none();
        match &self.kind {
            Kind::Lock(l) if simple => l.get().acquire_impl(py, None, None).map(|b| b.into_pyobject(py).unwrap().to_owned().into_any().unbind()),
            Kind::RLock(r) if simple => r.get().acquire_impl(py, None, None).map(|b| b.into_pyobject(py).unwrap().to_owned().into_any().unbind()),
            _ => Ok(self.lock.bind(py).call_method("acquire", args, kwargs)?.unbind()),
        }
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.kind {
            Kind::Lock(l) => l.get().acquire_impl(py, None, None).map(|b| b.into_pyobject(py).unwrap().to_owned().into_any().unbind()),
            Kind::RLock(r) => r.get().acquire_impl(py, None, None).map(|b| b.into_pyobject(py).unwrap().to_owned().into_any().unbind()),
            Kind::Other => Ok(self.lock.bind(py).call_method0("__enter__")?.unbind()),
        }
    }

    fn release(&self, py: Python<'_>) -> PyResult<()> {
        match &self.kind {
            Kind::Lock(l) => l.get().release_impl(),
            Kind::RLock(r) => r.get().release_impl(),
            Kind::Other => self.lock.bind(py).call_method0("release").map(|_| ()),
        }
    }

    #[pyo3(signature = (*args))]
    fn __exit__(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        match &self.kind {
            Kind::Lock(l) => l.get().release_impl().map(|_| py.None()),
            Kind::RLock(r) => r.get().release_impl().map(|_| py.None()),
            Kind::Other => Ok(self.lock.bind(py).call_method1("__exit__", args)?.unbind()),
        }
    }

    /// Release the lock, wait for a notify or the timeout, re-take the lock.
    /// Returns False if the timeout expired.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let t = timeout_arg(timeout)?;
        self.wait_impl(py, t)
    }

    /// Wait until `predicate()` is true; returns its last value.
    #[pyo3(signature = (predicate, timeout = None))]
    fn wait_for(
        &self,
        py: Python<'_>,
        predicate: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let mut waittime = timeout_arg(timeout)?;
        let mut endtime: Option<std::time::Instant> = None;
        let mut result = predicate.call0()?;
        while !result.is_truthy()? {
            if let Some(w) = waittime {
                match endtime {
                    None => endtime = Some(deadline_in(w.max(0.0))),
                    Some(e) => {
                        let left = e.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        waittime = Some(left.as_secs_f64());
                    }
                }
            }
            self.wait_impl(py, waittime)?;
            result = predicate.call0()?;
        }
        Ok(result.unbind())
    }

    /// Wake up to `n` waiting threads.
    #[pyo3(signature = (n = 1))]
    fn notify(&self, py: Python<'_>, n: i64) -> PyResult<()> {
        self.check_owned(py, "notify")?;
        if n < 0 {
            return Err(PyValueError::new_err("n must be a non-negative integer"));
        }
        self.cv.notify(n as usize);
        Ok(())
    }

    fn notify_all(&self, py: Python<'_>) -> PyResult<()> {
        self.check_owned(py, "notify")?;
        self.cv.notify_all();
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
        self.is_owned_impl(py)
    }

    /// Release the lock fully; returns what `_acquire_restore` needs.
    fn _release_save(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self.release_save(py)? {
            Saved::Lock => py.None(),
            Saved::RLock(count) => (count, plait_core::thread::ident()).into_pyobject(py)?.into_any().unbind(),
            Saved::Other(state) => state.unwrap_or_else(|| py.None()),
        })
    }

    fn _acquire_restore(&self, py: Python<'_>, state: &Bound<'_, PyAny>) -> PyResult<()> {
        let saved = match &self.kind {
            Kind::Lock(_) => Saved::Lock,
            Kind::RLock(_) => Saved::RLock(state.extract::<(u64, u64)>()?.0),
            Kind::Other if state.is_none() => Saved::Other(None),
            Kind::Other => Saved::Other(Some(state.clone().unbind())),
        };
        self.acquire_restore(py, saved)
    }

    fn _at_fork_reinit(&self, py: Python<'_>) -> PyResult<()> {
        self.lock.bind(py).call_method0("_at_fork_reinit")?;
        Ok(())
    }

    /// The lock this condition uses.
    #[getter]
    fn _lock(&self, py: Python<'_>) -> Py<PyAny> {
        self.lock.clone_ref(py)
    }

    /// Idents of the threads waiting on this condition (for plait.debug).
    #[getter]
    fn _waiter_idents(&self) -> Vec<u64> {
        self.cv.waiters()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("<Condition({}, {})>", self.lock.bind(py).repr()?, self.cv.len()))
    }
}
