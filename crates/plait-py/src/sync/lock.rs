//! `plait.Lock` and `plait.RLock`: `_thread.lock` and `_thread.RLock`.

use std::sync::Arc;

use plait_core::fork::{register_arc, Registration};
use plait_core::park::Outcome;
use plait_core::sync::{Lock as CoreLock, RLock as CoreRLock, RLockError};
use pyo3::exceptions::{PyOverflowError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::debug::site::{label, name_arg};
use crate::wait::{detached, detached_uninterruptible, interrupted_error, lock_acquire_args};

/// `"<module>.<qualname>"` of an object's class, for reprs.
pub fn class_path(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let t = obj.get_type();
    Ok(format!("{}.{}", t.module()?, t.qualname()?))
}

/// Outcome of a blocking acquire, as Python sees it: `Interrupted` is a
/// signal handler's exception, or a wait refused because it would close a
/// deadlock (`deadlock="raise"`), which has none.
pub(crate) fn finish(py: Python<'_>, outcome: Outcome, err: Option<PyErr>) -> PyResult<bool> {
    match outcome {
        Outcome::Notified => Ok(true),
        Outcome::TimedOut => Ok(false),
        Outcome::Interrupted => Err(interrupted_error(py, err)),
    }
}

/// A primitive lock, like `threading.Lock`.
///
/// Differences from CPython: after `os.fork()`, a lock that a thread other
/// than the forking one held is released in the child (that thread does not
/// exist there, so nothing could ever release it).
#[pyclass(module = "plait", frozen, weakref, subclass)]
pub struct Lock {
    pub(crate) core: Arc<CoreLock>,
    _fork: Registration,
}

impl Lock {
    pub fn create() -> Self {
        let core = Arc::new(CoreLock::new());
        let reg = register_arc(&core);
        Lock { core, _fork: reg }
    }

    /// Blocking acquire shared by `acquire` and `Condition`.
    #[inline]
    pub fn acquire_impl(
        &self,
        py: Python<'_>,
        blocking: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if blocking.is_none() && timeout.is_none() && self.core.try_acquire() {
            return Ok(true);
        }
        let deadline = match lock_acquire_args(blocking, timeout)? {
            None => return Ok(self.core.try_acquire()),
            Some(d) => d,
        };
        if self.core.try_acquire() {
            return Ok(true);
        }
        let core = &self.core;
        let (out, err) = detached(py, deadline, |ctx| core.acquire_slow(ctx));
        finish(py, out, err)
    }

    /// Take the lock, waiting as long as it takes, ignoring signals.
    pub fn acquire_uninterruptible(&self, py: Python<'_>) {
        if !self.core.try_acquire() {
            let core = &self.core;
            detached_uninterruptible(py, |ctx| core.acquire_slow(ctx));
        }
    }

    #[inline]
    pub fn release_impl(&self) -> PyResult<()> {
        if self.core.release() {
            Ok(())
        } else {
            Err(PyRuntimeError::new_err("release unlocked lock"))
        }
    }
}

#[pymethods]
impl Lock {
    #[new]
    #[pyo3(signature = (*_args, name = None, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        name: Option<&Bound<'_, PyAny>>,
        _kwargs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let name = name_arg(name)?;
        let lock = Lock::create();
        label(py, &lock.core.probe, name);
        Ok(lock)
    }

    /// Acquire the lock; `blocking` and `timeout` as `threading.Lock`.
    #[pyo3(signature = (blocking = None, timeout = None))]
    fn acquire(
        &self,
        py: Python<'_>,
        blocking: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.acquire_impl(py, blocking, timeout)
    }

    /// Deprecated alias of acquire, kept as CPython keeps it.
    #[pyo3(signature = (blocking = None, timeout = None))]
    fn acquire_lock(
        &self,
        py: Python<'_>,
        blocking: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.acquire_impl(py, blocking, timeout)
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        if self.core.try_acquire() {
            return Ok(true);
        }
        self.acquire_impl(py, None, None)
    }

    fn release(&self) -> PyResult<()> {
        self.release_impl()
    }

    fn release_lock(&self) -> PyResult<()> {
        self.release_impl()
    }

    #[pyo3(signature = (_t = None, _v = None, _tb = None))]
    fn __exit__(
        &self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.release_impl()
    }

    fn locked(&self) -> bool {
        self.core.is_locked()
    }

    fn locked_lock(&self) -> bool {
        self.core.is_locked()
    }

    /// Reset to unlocked (CPython calls this in a forked child).
    fn _at_fork_reinit(&self) {
        self.core.reset();
    }

    /// `threading.get_ident()` of the thread that acquired the lock, or
    /// None when unlocked (for plait.debug).
    #[getter]
    fn _owner(&self) -> Option<u64> {
        Some(self.core.owner()).filter(|o| *o != 0)
    }

    /// Idents of the threads waiting for the lock (for plait.debug).
    #[getter]
    fn _waiters(&self) -> Vec<u64> {
        self.core.waiters()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let state = if slf.get().core.is_locked() { "locked" } else { "unlocked" };
        Ok(format!("<{} {} object at {:#x}>", state, class_path(slf.as_any())?, slf.as_ptr() as usize))
    }
}

/// A reentrant lock, like `threading.RLock`.
///
/// Differences from CPython: after `os.fork()`, an RLock owned by a thread
/// other than the forking one is released in the child.
#[pyclass(module = "plait", frozen, weakref, subclass)]
pub struct RLock {
    pub(crate) core: Arc<CoreRLock>,
    _fork: Registration,
}

fn rlock_error(e: RLockError) -> PyErr {
    match e {
        RLockError::NotOwned => PyRuntimeError::new_err("cannot release un-acquired lock"),
        RLockError::Overflow => PyOverflowError::new_err("Internal lock count overflowed"),
    }
}

impl RLock {
    pub fn create() -> Self {
        let core = Arc::new(CoreRLock::new());
        let reg = register_arc(&core);
        RLock { core, _fork: reg }
    }

    #[inline]
    pub fn acquire_impl(
        &self,
        py: Python<'_>,
        blocking: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if blocking.is_none() && timeout.is_none() && self.core.try_acquire().map_err(rlock_error)? {
            return Ok(true);
        }
        let deadline = match lock_acquire_args(blocking, timeout)? {
            None => return self.core.try_acquire().map_err(rlock_error),
            Some(d) => d,
        };
        if self.core.try_acquire().map_err(rlock_error)? {
            return Ok(true);
        }
        let core = &self.core;
        let (out, err) = detached(py, deadline, |ctx| core.acquire_slow(ctx, 1));
        finish(py, out, err)
    }

    #[inline]
    pub fn release_impl(&self) -> PyResult<()> {
        self.core.release().map_err(rlock_error)
    }

    /// Release all levels; returns the saved `(count, owner)`.
    pub fn release_save_impl(&self) -> PyResult<(u64, u64)> {
        self.core.release_save().map_err(rlock_error)
    }

    /// Re-take with a saved count, ignoring signals.
    pub fn acquire_restore_impl(&self, py: Python<'_>, count: u64) {
        if !self.core.try_acquire_restore(count) {
            let core = &self.core;
            detached_uninterruptible(py, |ctx| core.acquire_slow(ctx, count));
        }
    }
}

#[pymethods]
impl RLock {
    #[new]
    #[pyo3(signature = (*_args, name = None, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        name: Option<&Bound<'_, PyAny>>,
        _kwargs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let name = name_arg(name)?;
        let lock = RLock::create();
        label(py, lock.core.probe(), name);
        Ok(lock)
    }

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

    fn release(&self) -> PyResult<()> {
        self.release_impl()
    }

    #[pyo3(signature = (_t = None, _v = None, _tb = None))]
    fn __exit__(
        &self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.release_impl()
    }

    /// Whether any thread holds the lock (Python 3.14's RLock.locked).
    fn locked(&self) -> bool {
        self.core.is_locked()
    }

    fn _is_owned(&self) -> bool {
        self.core.is_owned()
    }

    fn _recursion_count(&self) -> u64 {
        self.core.recursion_count()
    }

    fn _release_save(&self) -> PyResult<(u64, u64)> {
        self.release_save_impl()
    }

    fn _acquire_restore(&self, py: Python<'_>, state: (u64, u64)) {
        self.acquire_restore_impl(py, state.0);
    }

    fn _at_fork_reinit(&self) {
        self.core.reset();
    }

    #[getter]
    fn _owner(&self) -> Option<u64> {
        Some(self.core.owner()).filter(|o| *o != 0)
    }

    #[getter]
    fn _waiters(&self) -> Vec<u64> {
        self.core.waiters()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let core = &slf.get().core;
        let state = if core.is_locked() { "locked" } else { "unlocked" };
        Ok(format!(
            "<{} {} object owner={} count={} at {:#x}>",
            state,
            class_path(slf.as_any())?,
            core.owner(),
            core.count(),
            slf.as_ptr() as usize
        ))
    }
}
