//! `plait.Barrier`: `threading.Barrier`, raising the standard library's
//! `threading.BrokenBarrierError`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use plait_core::fork::{register_arc, Registration};
use plait_core::park::WaitCtx;
use plait_core::sync::{Barrier as CoreBarrier, BarrierError, Phase};
use pyo3::exceptions::{PyAttributeError, PyRuntimeError, PyValueError};
use pyo3::types::{PyDict, PyInt, PyTuple};
use pyo3::prelude::*;

use crate::errors::broken_barrier;
use crate::sync::lock::{new_like, state_repr};
use crate::debug::site::{label, name_arg};
use crate::wait::{
    check_addable, cond_timeout, interrupted_error, is_main_thread, version, CondTimeout, Gil, Interrupt, SLICE,
};

/// A barrier for `parties` threads, like `threading.Barrier`.
///
/// As CPython's (a Python class there), it takes attributes, weak
/// references and subclasses, and `parties` may be any number CPython
/// accepts: one that is not a whole number >= 1 (accepted before 3.13, or
/// 1.5) never trips, as there. `copy.copy` gives a new barrier with the same
/// parties, action and timeout, broken if this one is, with no thread
/// waiting, and a copy of the attributes (CPython's copy shares the
/// original's internal Condition and copies its count of waiting threads,
/// which are not waiting on the copy).
///
/// Difference from CPython: calling `__init__` again on a Barrier already
/// made raises RuntimeError (CPython starts it over).
///
/// Addition: a keyword-only `name=` (a str) names it in `plait.debug`;
/// without it, it is known by its creation site `file:line`.
#[pyclass(module = "plait", frozen, weakref, dict, subclass)]
pub struct Barrier {
    /// Set by `__init__` (CPython's `object.__new__` leaves the arguments
    /// to `__init__`, so a subclass's own `__init__` may take others).
    init: OnceLock<Init>,
}

struct Init {
    core: Arc<CoreBarrier>,
    /// `parties` as given.
    parties: Py<PyAny>,
    action: Option<Py<PyAny>>,
    /// The default timeout as given (read at each wait, as CPython does).
    timeout: Option<Py<PyAny>>,
    _fork: Registration,
}

/// The arrivals that trip a barrier of `parties`: CPython trips when
/// `index + 1 == parties`, so only a whole number >= 1 ever does.
fn trip_count(parties: &Bound<'_, PyAny>) -> usize {
    const NEVER: usize = usize::MAX;
    let whole = if parties.is_instance_of::<PyInt>() {
        Some(parties.clone())
    } else {
        parties.py().get_type::<PyInt>().call1((parties,)).ok().filter(|n| parties.eq(n).unwrap_or(false))
    };
    match whole.and_then(|n| n.extract::<usize>().ok()) {
        Some(n) if n >= 1 => n,
        _ => NEVER,
    }
}

/// A barrier wait's timeout: how `Condition.wait_for` reads it (None:
/// forever; not positive: the wait breaks the barrier at once).
fn wait_timeout(t: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    let Some(t) = t.filter(|t| !t.is_none()) else { return Ok(None) };
    check_addable(t)?;
    Ok(Some(match cond_timeout(Some(t))? {
        CondTimeout::For(secs) => Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX),
        _ => Duration::ZERO,
    }))
}

impl Barrier {
    #[inline]
    fn st(&self) -> PyResult<&Init> {
        self.init.get().ok_or_else(|| PyAttributeError::new_err("Barrier.__init__() was not called"))
    }
}

#[pymethods]
impl Barrier {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(parties, action=None, timeout=None, *, name=None)")]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Barrier { init: OnceLock::new() }
    }

    #[pyo3(signature = (parties, action = None, timeout = None, *, name = None))]
    fn __init__(
        &self,
        py: Python<'_>,
        parties: &Bound<'_, PyAny>,
        action: Option<Py<PyAny>>,
        timeout: Option<Py<PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = name_arg(name)?;
        if version(py) >= (3, 13) && parties.lt(1)? {
            return Err(PyValueError::new_err("parties must be > 0"));
        }
        let core = Arc::new(CoreBarrier::new(trip_count(parties)));
        label(py, &core.probe, name);
        let reg = register_arc(&core);
        let init = Init { core, parties: parties.clone().unbind(), action, timeout, _fork: reg };
        self.init.set(init).map_err(|_| PyRuntimeError::new_err("Barrier.__init__() called twice"))
    }

    /// Wait until all parties have arrived; returns this thread's arrival
    /// index (0 .. parties-1). The last to arrive runs the action.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
        let st = self.st()?;
        let timeout = match timeout {
            Some(t) => wait_timeout(Some(t)),
            None => wait_timeout(st.timeout.as_ref().map(|t| t.bind(py))),
        };
        // CPython reads the timeout only when it has to wait: the last to
        // arrive never does.
        let timeout = match timeout {
            Ok(t) => t,
            Err(e) if st.core.n_waiting() + 1 != st.core.parties() => return Err(e),
            Err(_) => None,
        };
        let intr = Interrupt::default();
        let check = || intr.check();
        let mut ctx = WaitCtx::forever();
        if is_main_thread() {
            ctx = ctx.with_interrupt(&check, SLICE);
        }
        let action = || -> PyResult<()> {
            // CPython: `if self._action: self._action()`.
            if let Some(a) = &st.action {
                if a.bind(py).is_truthy()? {
                    a.call0(py)?;
                }
            }
            Ok(())
        };
        let r = st.core.wait(&Gil(py), &ctx, timeout, action);
        match r {
            Ok(i) => Ok(i),
            Err(BarrierError::Broken) => Err(broken_barrier(py)),
            Err(BarrierError::Action(e)) => Err(e),
            Err(BarrierError::Interrupted) => Err(interrupted_error(py, intr.take())),
        }
    }

    /// Return to the empty state; threads waiting now get BrokenBarrierError.
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        self.st()?.core.reset(&Gil(py));
        Ok(())
    }

    /// Break the barrier: current and later waits raise BrokenBarrierError.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        self.st()?.core.abort(&Gil(py));
        Ok(())
    }

    /// A new barrier of the same class with the same parties, action and
    /// timeout (see the class doc).
    fn __copy__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let st = slf.get().st()?;
        let new = new_like(slf.as_any())?;
        let core = Arc::new(CoreBarrier::new(st.core.parties()));
        if st.core.broken() {
            core.abort(&Gil(py));
        }
        let reg = register_arc(&core);
        let init = Init {
            core,
            parties: st.parties.clone_ref(py),
            action: st.action.as_ref().map(|a| a.clone_ref(py)),
            timeout: st.timeout.as_ref().map(|t| t.clone_ref(py)),
            _fork: reg,
        };
        let _ = new.cast::<Barrier>()?.get().init.set(init);
        Ok(new.unbind())
    }

    /// `parties` as given.
    #[getter]
    fn parties(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.st()?.parties.clone_ref(py))
    }

    #[getter]
    fn n_waiting(&self) -> PyResult<usize> {
        Ok(self.st()?.core.n_waiting())
    }

    #[getter]
    fn broken(&self) -> PyResult<bool> {
        Ok(self.st()?.core.broken())
    }

    #[getter]
    fn _waiters(&self) -> Vec<u64> {
        self.init.get().map(|st| st.core.waiters()).unwrap_or_default()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let st = slf.get().st()?;
        state_repr(slf.as_any(), || {
            if st.core.phase() == Phase::Broken {
                return Ok("broken".to_string());
            }
            Ok(format!("waiters={}/{}", st.core.n_waiting(), st.parties.bind(py).str()?))
        })
    }
}
