//! `plait.Barrier`: `threading.Barrier`, raising the standard library's
//! `threading.BrokenBarrierError`.

use std::sync::Arc;
use std::time::Duration;

use plait_core::fork::{register_arc, Registration};
use plait_core::park::WaitCtx;
use plait_core::sync::{Barrier as CoreBarrier, BarrierError, Phase};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::broken_barrier;
use crate::sync::lock::class_path;
use crate::debug::site::{label, name_arg};
use crate::wait::{interrupted_error, is_main_thread, seconds, Gil, Interrupt, SLICE};

/// A barrier for `parties` threads, like `threading.Barrier`.
///
/// Addition: a keyword-only `name=` (a str) names it in `plait.debug`;
/// without it, it is known by its creation site `file:line`.
#[pyclass(module = "plait", frozen, weakref, subclass)]
pub struct Barrier {
    core: Arc<CoreBarrier>,
    action: Option<Py<PyAny>>,
    timeout: Option<f64>,
    _fork: Registration,
}

fn duration(secs: Option<f64>) -> Option<Duration> {
    secs.map(|s| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX))
}

fn optional_seconds(t: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
    match t {
        Some(t) if !t.is_none() => Ok(Some(seconds(t)?)),
        _ => Ok(None),
    }
}

#[pymethods]
impl Barrier {
    #[new]
    #[pyo3(signature = (parties, action = None, timeout = None, *, name = None))]
    fn new(
        py: Python<'_>,
        parties: i64,
        action: Option<Py<PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let name = name_arg(name)?;
        if parties < 1 {
            return Err(PyValueError::new_err("parties must be > 0"));
        }
        let core = Arc::new(CoreBarrier::new(parties as usize));
        label(py, &core.probe, name);
        let reg = register_arc(&core);
        Ok(Barrier { core, action, timeout: optional_seconds(timeout)?, _fork: reg })
    }

    /// Wait until all parties have arrived; returns this thread's arrival
    /// index (0 .. parties-1). The last to arrive runs the action.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
        let timeout = optional_seconds(timeout)?.or(self.timeout);
        let intr = Interrupt::default();
        let check = || intr.check();
        let mut ctx = WaitCtx::forever();
        if is_main_thread() {
            ctx = ctx.with_interrupt(&check, SLICE);
        }
        let action = || -> PyResult<()> {
            if let Some(a) = &self.action {
                a.call0(py)?;
            }
            Ok(())
        };
        let r = self.core.wait(&Gil(py), &ctx, duration(timeout), action);
        match r {
            Ok(i) => Ok(i),
            Err(BarrierError::Broken) => Err(broken_barrier(py)),
            Err(BarrierError::Action(e)) => Err(e),
            Err(BarrierError::Interrupted) => Err(interrupted_error(py, intr.take())),
        }
    }

    /// Return to the empty state; threads waiting now get BrokenBarrierError.
    fn reset(&self, py: Python<'_>) {
        self.core.reset(&Gil(py));
    }

    /// Break the barrier: current and later waits raise BrokenBarrierError.
    fn abort(&self, py: Python<'_>) {
        self.core.abort(&Gil(py));
    }

    #[getter]
    fn parties(&self) -> usize {
        self.core.parties()
    }

    #[getter]
    fn n_waiting(&self) -> usize {
        self.core.n_waiting()
    }

    #[getter]
    fn broken(&self) -> bool {
        self.core.broken()
    }

    #[getter]
    fn _waiters(&self) -> Vec<u64> {
        self.core.waiters()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let core = &slf.get().core;
        let head = format!("<{} at {:#x}", class_path(slf.as_any())?, slf.as_ptr() as usize);
        if core.phase() == Phase::Broken {
            return Ok(format!("{head}: broken>"));
        }
        Ok(format!("{head}: waiters={}/{}>", core.n_waiting(), core.parties()))
    }
}
