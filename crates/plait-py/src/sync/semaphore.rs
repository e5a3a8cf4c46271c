//! `plait.Semaphore` and `plait.BoundedSemaphore`.

use std::sync::Arc;

use plait_core::fork::{register_arc, Registration};
use plait_core::park::Outcome;
use plait_core::sync::semaphore::MAX_VALUE;
use plait_core::sync::{ReleaseError, Semaphore as CoreSemaphore};
use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;

use crate::sync::lock::class_path;
use crate::debug::site::{label, name_arg};
use crate::wait::{detached, interrupted_error, optional_deadline, truthy};

/// A counting semaphore, like `threading.Semaphore`.
///
/// `_value` reads the current count, as code written against CPython's
/// pure-Python class sometimes does.
///
/// Addition: a keyword-only `name=` (a str) names it in `plait.debug`;
/// without it, it is known by its creation site `file:line`.
#[pyclass(module = "plait", frozen, weakref, subclass)]
pub struct Semaphore {
    core: Arc<CoreSemaphore>,
    _fork: Registration,
}

fn initial_value(value: i64) -> PyResult<usize> {
    if value < 0 {
        return Err(PyValueError::new_err("semaphore initial value must be >= 0"));
    }
    usize::try_from(value)
        .ok()
        .filter(|v| *v <= MAX_VALUE)
        .ok_or_else(|| PyOverflowError::new_err("semaphore initial value is too large"))
}

impl Semaphore {
    fn with_core(py: Python<'_>, core: CoreSemaphore, name: Option<String>) -> Self {
        let core = Arc::new(core);
        label(py, &core.probe, name);
        let reg = register_arc(&core);
        Semaphore { core, _fork: reg }
    }

    #[inline]
    fn acquire_impl(
        &self,
        py: Python<'_>,
        blocking: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if blocking.is_none() && timeout.is_none() && self.core.try_acquire() {
            return Ok(true);
        }
        let blocking = truthy(blocking)?;
        let has_timeout = timeout.is_some_and(|t| !t.is_none());
        if !blocking && has_timeout {
            return Err(PyValueError::new_err("can't specify timeout for non-blocking acquire"));
        }
        if self.core.try_acquire() {
            return Ok(true);
        }
        if !blocking {
            return Ok(false);
        }
        let deadline = optional_deadline(timeout)?;
        let core = &self.core;
        let (out, err) = detached(py, deadline, |ctx| core.acquire_slow(ctx));
        match out {
            Outcome::Notified => Ok(true),
            Outcome::TimedOut => Ok(false),
            Outcome::Interrupted => Err(interrupted_error(py, err)),
        }
    }

    #[inline]
    fn release_impl(&self, n: i64) -> PyResult<()> {
        if n < 1 {
            return Err(PyValueError::new_err("n must be one or more"));
        }
        match self.core.release(n as usize) {
            Ok(()) => Ok(()),
            Err(ReleaseError::TooMany) => Err(PyValueError::new_err("Semaphore released too many times")),
            Err(ReleaseError::Overflow) => Err(PyOverflowError::new_err("semaphore value is too large")),
        }
    }
}

#[pymethods]
impl Semaphore {
    #[new]
    #[pyo3(signature = (value = 1, *, name = None))]
    fn new(py: Python<'_>, value: i64, name: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let name = name_arg(name)?;
        Ok(Semaphore::with_core(py, CoreSemaphore::new(initial_value(value)?), name))
    }

    /// Take one permit; `blocking` and `timeout` as `threading.Semaphore`.
    #[pyo3(signature = (blocking = None, timeout = None))]
    fn acquire(
        &self,
        py: Python<'_>,
        blocking: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.acquire_impl(py, blocking, timeout)
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire_impl(py, None, None)
    }

    /// Return `n` permits, waking up to `n` waiters.
    #[pyo3(signature = (n = 1))]
    fn release(&self, n: i64) -> PyResult<()> {
        self.release_impl(n)
    }

    #[pyo3(signature = (_t = None, _v = None, _tb = None))]
    fn __exit__(
        &self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.release_impl(1)
    }

    #[getter]
    fn _value(&self) -> usize {
        self.core.value()
    }

    #[getter]
    fn _initial_value(&self) -> Option<usize> {
        self.core.bound()
    }

    #[getter]
    fn _waiters(&self) -> Vec<u64> {
        self.core.waiters()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let core = &slf.get().core;
        let value = match core.bound() {
            Some(b) => format!("{}/{}", core.value(), b),
            None => core.value().to_string(),
        };
        Ok(format!("<{} at {:#x}: value={}>", class_path(slf.as_any())?, slf.as_ptr() as usize, value))
    }
}

/// A semaphore that refuses to be released above its initial value, like
/// `threading.BoundedSemaphore` (a subclass of Semaphore, as there).
///
/// Addition: a keyword-only `name=` (a str) names it in `plait.debug`;
/// without it, it is known by its creation site `file:line`.
#[pyclass(module = "plait", frozen, extends = Semaphore, subclass)]
pub struct BoundedSemaphore;

#[pymethods]
impl BoundedSemaphore {
    #[new]
    #[pyo3(signature = (value = 1, *, name = None))]
    fn new(py: Python<'_>, value: i64, name: Option<&Bound<'_, PyAny>>) -> PyResult<PyClassInitializer<Self>> {
        let name = name_arg(name)?;
        let base = Semaphore::with_core(py, CoreSemaphore::bounded(initial_value(value)?), name);
        Ok(PyClassInitializer::from(base).add_subclass(BoundedSemaphore))
    }
}
