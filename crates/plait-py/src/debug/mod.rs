//! The binding of `plait.debug`: the raw state handed to the Python layer
//! (`python/plait/debug/`), the settings, and the calls back into Python
//! when a deadlock is found.

pub mod order;
pub mod site;

use plait_core::debug::Cycle;
use pyo3::prelude::*;
use pyo3::types::PyList;

/// The cycle as Python sees it: `[(thread ident, primitive id), ...]`.
pub fn cycle_to_py<'py>(py: Python<'py>, cycle: &Cycle) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, cycle.links.iter().map(|l| (l.thread, l.id)))
}

/// `plait.debug.DeadlockError` carrying the report of `cycle`.
pub fn deadlock_error(py: Python<'_>, cycle: &Cycle) -> PyErr {
    let make = || -> PyResult<PyErr> {
        let debug = py.import("plait.debug")?;
        let text = debug.call_method1("_on_deadlock", (cycle_to_py(py, cycle)?, cycle.certain))?;
        let cls = debug.getattr("DeadlockError")?;
        Ok(PyErr::from_value(cls.call1((text,))?))
    };
    make().unwrap_or_else(|e| e)
}
