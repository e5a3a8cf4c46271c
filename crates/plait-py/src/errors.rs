//! The exceptions plait raises are the standard library's own classes, so
//! existing `except queue.Empty:` / `except threading.BrokenBarrierError:`
//! clauses keep working. They are looked up once and cached.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

static EMPTY: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static FULL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static SHUTDOWN: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static BROKEN_BARRIER: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn raise(py: Python<'_>, cell: &PyOnceLock<Py<PyType>>, module: &str, name: &str) -> PyErr {
    match cell.import(py, module, name) {
        Ok(t) => PyErr::from_type(t.clone(), ()),
        Err(e) => e,
    }
}

/// `queue.Empty`
pub fn empty(py: Python<'_>) -> PyErr {
    raise(py, &EMPTY, "queue", "Empty")
}

/// `queue.Full`
pub fn full(py: Python<'_>) -> PyErr {
    raise(py, &FULL, "queue", "Full")
}

/// `queue.ShutDown` on 3.13+, `plait.queue.ShutDown` before.
pub fn shutdown(py: Python<'_>) -> PyErr {
    let module = if py.version_info() >= (3, 13) { "queue" } else { "plait.queue" };
    raise(py, &SHUTDOWN, module, "ShutDown")
}

/// `threading.BrokenBarrierError`
pub fn broken_barrier(py: Python<'_>) -> PyErr {
    raise(py, &BROKEN_BARRIER, "threading", "BrokenBarrierError")
}
