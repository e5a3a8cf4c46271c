//! Outcomes that arrive as bytes: what a worker process sent back for a
//! task, in `plait._wire`'s envelope (large buffers in a shared-memory
//! segment beside it, see `shm.rs`).
//!
//! A process pool keeps the outcome as bytes until somebody reads it, so
//! its supervisor never needs the interpreter; the reader's thread decodes
//! it. A failed task's exception gets the worker's traceback text as its
//! `__cause__` (a `_RemoteTraceback`), as CPython's process pool does.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use super::Obj;
use crate::errors;
use crate::process::shm::ShmGuard;

/// An outcome as a worker process sent it.
#[derive(Clone)]
pub(crate) struct Pickled {
    pub(crate) is_error: bool,
    /// `plait._wire`'s envelope.
    pub(crate) bytes: Arc<Vec<u8>>,
    /// Unlinks the shared-memory segment if nobody decodes the outcome.
    pub(crate) _shm: Option<Arc<ShmGuard>>,
}

static WIRE_DECODE: PyOnceLock<Obj> = PyOnceLock::new();

/// `plait._wire.decode(envelope)`, with the buffers a worker's segment
/// holds (mapped on receipt, see `shm.rs`) when there are some.
pub(crate) fn loads<'py>(py: Python<'py>, bytes: &[u8], shm: Option<&ShmGuard>) -> PyResult<Bound<'py, PyAny>> {
    let f = WIRE_DECODE.get_or_try_init(py, || py.import("plait._wire")?.getattr("decode").map(Bound::unbind))?;
    let data = pyo3::types::PyBytes::new(py, bytes);
    match shm.map(|g| g.take(py)).transpose()?.flatten() {
        Some(taken) => f.bind(py).call1((data, taken)),
        None => f.bind(py).call1((data,)),
    }
}

/// A worker's outcome: `Ok(value)`, or `Err(exception)` — the remote
/// exception with its traceback text as `__cause__` (as CPython's process
/// pool does), or the error that decoding raised.
pub(crate) fn decode_pickled(py: Python<'_>, p: &Pickled) -> Result<Obj, Obj> {
    if !p.is_error {
        return loads(py, &p.bytes, p._shm.as_deref()).map(Bound::unbind).map_err(|e| e.into_value(py).into_any());
    }
    remote_exception(py, &p.bytes, p._shm.as_deref()).map_err(|e| e.into_value(py).into_any()).and_then(Err)
}

/// The worker sends `(exception or None, type name, message, traceback
/// text)`. When the task's exception (or result) cannot be pickled, the
/// exception is the pickling error, as CPython's process pool reports it.
fn remote_exception(py: Python<'_>, bytes: &[u8], shm: Option<&ShmGuard>) -> PyResult<Obj> {
    let tup = loads(py, bytes, shm)?;
    let (exc, name, message, tb): (Bound<'_, PyAny>, String, String, String) = tup.extract()?;
    let exc = if exc.is_none() {
        // The worker sends the pickling error instead (see
        // `plait._worker._unsendable_payload`); this is the last resort.
        let msg = format!("{name}: {message} (the exception could not be pickled)");
        py.import("pickle")?.getattr("PicklingError")?.call1((msg,))?
    } else {
        exc
    };
    let cause = errors::remote_traceback(py, format!("\n\"\"\"\n{}\"\"\"", tb))?;
    exc.setattr("__cause__", cause)?;
    Ok(exc.unbind())
}
