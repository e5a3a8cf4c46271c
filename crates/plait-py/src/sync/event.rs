//! `plait.Event`: `threading.Event`.

use std::sync::Arc;

use plait_core::fork::{register_arc, Registration};
use plait_core::park::Outcome;
use plait_core::sync::Event as CoreEvent;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::sync::lock::{new_like, state_repr};
use crate::debug::site::label_arg;
use crate::wait::{cond_timeout, detached, interrupted_error};

/// A flag threads can wait for, like `threading.Event`.
///
/// As CPython's (a Python class there), it takes attributes
/// (`ev.result = x`), weak references and subclasses (an `__init__` that
/// calls `super().__init__()`); `_flag` reads the flag, and assigning it
/// sets or clears it (a true value wakes the threads waiting, where
/// CPython's would wait for the next `set()`).
///
/// Differences from CPython: there is no internal `_cond` Condition (the
/// waiting is done in Rust). `copy.copy` gives a
/// new, independent Event in the same state with the same attributes
/// (CPython's copy shares the original's internal Condition, so setting
/// the copy wakes the original's waiters without setting it).
///
/// Addition: a keyword-only `name=` (a str) names it in `plait.debug`;
/// without it, it is known by its creation site `file:line`.
#[pyclass(module = "plait", frozen, weakref, dict, subclass)]
pub struct Event {
    core: Arc<CoreEvent>,
    _fork: Registration,
}

impl Event {
    /// A new, unset event (for Rust callers, e.g. `Timer.finished`).
    pub(crate) fn create() -> Self {
        let core = Arc::new(CoreEvent::new());
        let reg = register_arc(&core);
        Event { core, _fork: reg }
    }
}

#[pymethods]
impl Event {
    /// An unset event; `__init__` checks the arguments (as CPython's
    /// `object.__new__` leaves them to `__init__`, so a subclass's own
    /// `__init__` may take others).
    #[new]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(*, name=None)")]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Event::create()
    }

    /// Reset to unset, as CPython's `__init__` does.
    #[pyo3(signature = (*, name = None))]
    fn __init__(&self, py: Python<'_>, name: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.core.clear();
        label_arg(py, &self.core.probe, name)
    }

    /// A new Event in the same state, of the same class, with a copy of
    /// the attributes (see the class doc).
    fn __copy__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let new = new_like(slf)?;
        if slf.get().core.is_set() {
            new.cast::<Event>()?.get().core.set();
        }
        Ok(new.unbind())
    }

    /// The flag, as CPython's `_flag` attribute.
    #[getter]
    fn _flag(&self) -> bool {
        self.core.is_set()
    }

    /// Assigning `_flag` sets or clears the flag (a true value wakes the
    /// threads waiting, where CPython's would wait for the next `set()`).
    #[setter(_flag)]
    fn set_flag(&self, value: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        match value {
            Some(v) if v.is_truthy()? => self.core.set(),
            Some(_) => self.core.clear(),
            None => return Err(pyo3::exceptions::PyAttributeError::new_err("cannot delete _flag")),
        }
        Ok(())
    }

    pub(crate) fn is_set(&self) -> bool {
        self.core.is_set()
    }

    /// Deprecated alias of is_set (CPython warns too).
    #[pyo3(name = "isSet")]
    fn is_set_alias(&self, py: Python<'_>) -> PyResult<bool> {
        PyErr::warn(
            py,
            &py.get_type::<pyo3::exceptions::PyDeprecationWarning>(),
            c"isSet() is deprecated, use is_set() instead",
            1,
        )?;
        Ok(self.core.is_set())
    }

    pub(crate) fn set(&self) {
        self.core.set();
    }

    fn clear(&self) {
        self.core.clear();
    }

    /// Block until the flag is set or `timeout` seconds pass; returns the
    /// flag (True if a set() woke us even if it was cleared since).
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        if self.core.is_set() {
            return Ok(true);
        }
        let deadline = cond_timeout(timeout)?.deadline();
        let core = &self.core;
        let (out, err) = detached(py, deadline, |ctx| core.wait_slow(ctx));
        match out {
            Outcome::Notified => Ok(true),
            Outcome::TimedOut => Ok(false),
            Outcome::Interrupted => Err(interrupted_error(py, err)),
        }
    }

    /// CPython calls this in a forked child; plait repairs its internal
    /// state in its own fork handler, and the flag is kept, as in CPython.
    fn _at_fork_reinit(&self) {}

    #[getter]
    fn _waiters(&self) -> Vec<u64> {
        self.core.waiters()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        state_repr(slf.as_any(), || Ok((if slf.get().core.is_set() { "set" } else { "unset" }).to_string()))
    }
}
