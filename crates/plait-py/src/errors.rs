//! The exceptions plait raises are the standard library's own classes, so
//! existing `except queue.Empty:` / `except threading.BrokenBarrierError:` /
//! `except concurrent.futures.CancelledError:` clauses keep working.
//!
//! Each class is looked up here, once, and cached in a `PyOnceLock`; no other
//! module imports an exception class. A function returns the `PyErr` to
//! raise (its instance is made lazily, when Python needs it); callers that
//! store the exception as a future's outcome take `into_value`.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

static EMPTY: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static FULL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static SHUTDOWN: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static BROKEN_BARRIER: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CANCELLED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TIMEOUT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INVALID_STATE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static BROKEN_THREAD_POOL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static BROKEN_PROCESS_POOL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static REMOTE_TRACEBACK: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static WORKER_DIED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CF_BASE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static CF_LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `module.name`, a class, looked up on first use.
fn class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    module: &str,
    name: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.import(py, module, name)
}

fn raise(py: Python<'_>, cell: &'static PyOnceLock<Py<PyType>>, module: &str, name: &str) -> PyErr {
    match class(py, cell, module, name) {
        Ok(t) => PyErr::from_type(t.clone(), ()),
        Err(e) => e,
    }
}

fn raise_msg(
    py: Python<'_>,
    cell: &'static PyOnceLock<Py<PyType>>,
    module: &str,
    name: &str,
    message: &str,
) -> PyErr {
    match class(py, cell, module, name) {
        Ok(t) => PyErr::from_type(t.clone(), (message.to_owned(),)),
        Err(e) => e,
    }
}

// ---- queue, threading -------------------------------------------------------

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

// ---- concurrent.futures -----------------------------------------------------

/// `concurrent.futures._base`, where the futures exceptions and `LOGGER`
/// live.
pub(crate) fn cf_base(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    CF_BASE
        .get_or_try_init(py, || Ok::<_, PyErr>(py.import("concurrent.futures._base")?.unbind()))
        .map(|m| m.bind(py))
}

/// `concurrent.futures`' logger (`_base.LOGGER`): failed done-callbacks,
/// initializers and workers are reported through it, as CPython does.
pub(crate) fn cf_logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    CF_LOGGER.get_or_try_init(py, || cf_base(py)?.getattr("LOGGER").map(Bound::unbind)).map(|l| l.bind(py))
}

/// `concurrent.futures.CancelledError()`
pub(crate) fn cancelled(py: Python<'_>) -> PyErr {
    raise(py, &CANCELLED, "concurrent.futures._base", "CancelledError")
}

/// `concurrent.futures.TimeoutError()`, with a message if there is one.
pub(crate) fn timeout(py: Python<'_>, message: Option<&str>) -> PyErr {
    let (cell, module, name) = (&TIMEOUT, "concurrent.futures._base", "TimeoutError");
    match message {
        Some(m) => raise_msg(py, cell, module, name, m),
        None => raise(py, cell, module, name),
    }
}

/// `concurrent.futures.InvalidStateError(message)`
pub(crate) fn invalid_state(py: Python<'_>, message: &str) -> PyErr {
    raise_msg(py, &INVALID_STATE, "concurrent.futures._base", "InvalidStateError", message)
}

/// `concurrent.futures.thread.BrokenThreadPool(message)`
pub(crate) fn broken_thread_pool(py: Python<'_>, message: &str) -> PyErr {
    raise_msg(py, &BROKEN_THREAD_POOL, "concurrent.futures.thread", "BrokenThreadPool", message)
}

/// `concurrent.futures.process.BrokenProcessPool(message)`
pub(crate) fn broken_process_pool(py: Python<'_>, message: &str) -> PyErr {
    raise_msg(py, &BROKEN_PROCESS_POOL, "concurrent.futures.process", "BrokenProcessPool", message)
}

/// `plait.futures.WorkerDied(message)`: the worker process running the task
/// died (a subclass of `BrokenProcessPool`).
pub(crate) fn worker_died(py: Python<'_>, message: &str) -> PyErr {
    raise_msg(py, &WORKER_DIED, "plait.futures", "WorkerDied", message)
}

/// `concurrent.futures.process._RemoteTraceback(text)`: the `__cause__` a
/// worker's exception gets, showing its traceback in the worker.
pub(crate) fn remote_traceback<'py>(py: Python<'py>, text: String) -> PyResult<Bound<'py, PyAny>> {
    class(py, &REMOTE_TRACEBACK, "concurrent.futures.process", "_RemoteTraceback")?.call1((text,))
}

/// An I/O error as the exception Python raises for it: for an OS error,
/// `OSError(errno, strerror)`, whose constructor picks the subclass by
/// errno (`ConnectionResetError`, `BrokenPipeError`, ...) as CPython's
/// `PyErr_SetFromErrno` does, so `e.errno` and `e.strerror` are set as
/// asyncio's own socket calls set them. PyO3's `From<io::Error>` gives the
/// subclass but only a message (`errno` None). Every native path (the loop's,
/// the process queues' and connections') raises its I/O errors through this.
pub(crate) fn os_error(e: std::io::Error) -> PyErr {
    let Some(errno) = e.raw_os_error() else {
        if e.kind() == std::io::ErrorKind::OutOfMemory {
            return pyo3::exceptions::PyMemoryError::new_err(());
        }
        return PyErr::from(e);
    };
    // Made lazily: raising calls `OSError(errno, strerror)`, whose
    // constructor picks the subclass.
    pyo3::exceptions::PyOSError::new_err((errno, strerror(errno)))
}

/// The C library's text for `errno` (what `os.strerror` returns).
fn strerror(errno: i32) -> String {
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: `buf` is writable for its length; the XSI strerror_r (what
    // the libc crate binds) writes a NUL-terminated string into it.
    let r = unsafe { libc::strerror_r(errno, buf.as_mut_ptr(), buf.len()) };
    if r != 0 {
        return format!("Unknown error {errno}");
    }
    // SAFETY: strerror_r succeeded, so `buf` holds a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}
