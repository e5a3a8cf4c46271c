//! Readers and writers: asyncio's `_add_reader`/`_add_writer`/
//! `_remove_reader`/`_remove_writer` with native handles. A registered file
//! descriptor's selector data is the pair `(reader, writer)`; each handle
//! runs every time its side is ready, until it is cancelled or removed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use plait_core::reactor::READ;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::call::{copy_context, retrack, Args, Call};
use super::core::LoopCore;
use super::handle::{Entry, Handle};
use super::Obj;

/// A selector key's data, `(reader, writer)`, with `bit`'s side set to
/// `mine` and the other side to `other`.
fn io_pair<'py>(py: Python<'py>, bit: u32, mine: Bound<'py, PyAny>, other: Bound<'py, PyAny>) -> PyResult<Obj> {
    let pair = if bit == READ { [mine, other] } else { [other, mine] };
    Ok(PyTuple::new(py, pair)?.into_any().unbind())
}

impl LoopCore {
    pub(super) fn add_io(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>, callback: Obj, args: Py<PyTuple>, bit: u32) -> PyResult<Obj> {
        let py = slf.py();
        let core = slf.get();
        core.check_closed()?;
        let sel = core.selector.get().ok_or_else(|| PyRuntimeError::new_err("the loop has no selector"))?.bind(py);
        let ctx = copy_context(py)?;
        let call = Call { callback, args: Args::from_tuple(py, args), context: ctx };
        let h = Handle::wrap(Arc::new(Entry::new(call, slf.clone().into_any().unbind(), 0.0, true)));
        let handle = Py::new(py, h)?.into_any();
        // Tracked like any object (see `persistent`), its context too.
        if let Some(c) = handle.bind(py).cast::<Handle>()?.get().call.lock().as_ref() {
            retrack(py, c.context.as_ptr());
        }
        let none = py.None().into_bound(py);
        let old = match sel.get().entry(fd) {
            None => {
                sel.get().add(fd, bit, &bit.into_pyobject(py)?.into_any(), Some(io_pair(py, bit, handle.bind(py).clone(), none)?))?;
                None
            }
            Some((mask, reader, writer)) => {
                let (old, other) = if bit == READ { (reader, writer) } else { (writer, reader) };
                sel.get().change(fd, mask | bit, &(mask | bit).into_pyobject(py)?.into_any(), Some(io_pair(py, bit, handle.bind(py).clone(), other)?))?;
                Some(old)
            }
        };
        if let Some(old) = old.filter(|o| !o.is_none()) {
            old.call_method0("cancel")?;
        }
        Ok(handle)
    }

    pub(super) fn remove_io(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>, bit: u32) -> PyResult<bool> {
        let py = slf.py();
        let core = slf.get();
        if core.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let Some(sel) = core.selector.get() else { return Ok(false) };
        let sel = sel.get();
        // An invalid file object is selectors' ValueError (get_key's), as
        // asyncio's _remove_reader meets it.
        sel.lookup(fd)?;
        let Some((mask, reader, writer)) = sel.entry(fd) else { return Ok(false) };
        let (gone, other) = if bit == READ { (reader, writer) } else { (writer, reader) };
        let left = mask & !bit;
        if left == 0 {
            sel.unregister(fd)?;
        } else {
            sel.change(fd, left, &left.into_pyobject(py)?.into_any(), Some(io_pair(py, bit, py.None().into_bound(py), other)?))?;
        }
        if gone.is_none() {
            return Ok(false);
        }
        gone.call_method0("cancel")?;
        Ok(true)
    }
}
