//! `SimpleQueue`: an unbounded FIFO whose `put` never blocks and may be
//! called reentrantly, as CPython's C `queue.SimpleQueue`.

use std::sync::Arc;

use plait_core::fork::{register_arc, Registration};
use plait_core::queue::{Order, Queue as CoreQueue};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::debug::site::label_arg;
use crate::errors;
use crate::wait::Gil;

use super::timeout::c_deadline;
use crate::wait::Arg;
use super::{blocking_get, no_compare, Item};

/// A simple unbounded FIFO queue, like CPython's C `queue.SimpleQueue`:
/// `put` never blocks, and it may be called reentrantly (from `__del__`
/// or a weakref callback), since nothing Python runs under its mutex.
///
/// Addition: a keyword-only `name=` (a str) names it in `plait.debug`;
/// without it, it is known by its creation site `file:line`.
#[pyclass(module = "plait.queue", frozen, weakref, subclass)]
pub struct SimpleQueue {
    pub(crate) core: Arc<CoreQueue<Item>>,
    _fork: Registration,
}

#[pymethods]
impl SimpleQueue {
    #[new]
    #[pyo3(signature = (*, name = None))]
    fn new(py: Python<'_>, name: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let core = Arc::new(CoreQueue::new(Order::Fifo, 0));
        label_arg(py, &core.probe, name)?;
        let reg = register_arc(&core);
        Ok(SimpleQueue { core, _fork: reg })
    }

    /// Put `item`; never blocks (`block` and `timeout` are ignored, as in
    /// CPython, and exist for compatibility with Queue.put).
    #[pyo3(signature = (item, block = None, timeout = None))]
    fn put(
        &self,
        py: Python<'_>,
        item: Bound<'_, PyAny>,
        block: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let _ = (block, timeout);
        self.put_nowait(py, item)
    }

    fn put_nowait(&self, py: Python<'_>, item: Bound<'_, PyAny>) -> PyResult<()> {
        // Unbounded and never shut down: a put always succeeds.
        match self.core.try_put(&Gil(py), item.unbind(), &mut no_compare) {
            Ok(()) => Ok(()),
            Err(_) => Err(errors::full(py)),
        }
    }

    #[pyo3(signature = (block = Arg(None), timeout = None))]
    fn get(&self, py: Python<'_>, block: Arg<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Item> {
        let block = match block.get() {
            None => true,
            Some(b) => b.is_truthy()?,
        };
        // C's order: the timeout is converted (and refused) before the
        // queue is looked at; a non-blocking get ignores it.
        let deadline = if block { c_deadline(timeout)? } else { None };
        blocking_get(py, &self.core, block, || Ok(deadline), || {
            Ok(self.core.try_get(&Gil(py), &mut no_compare).ok())
        })
    }

    fn get_nowait(&self, py: Python<'_>) -> PyResult<Item> {
        self.core.try_get(&Gil(py), &mut no_compare).map_err(|_| errors::empty(py))
    }

    fn empty(&self, py: Python<'_>) -> bool {
        self.core.len(&Gil(py)) == 0
    }

    fn qsize(&self, py: Python<'_>) -> usize {
        self.core.len(&Gil(py))
    }

    #[classmethod]
    fn __class_getitem__(cls: &Bound<'_, PyType>, item: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let alias = py.import("types")?.getattr("GenericAlias")?;
        Ok(alias.call1((cls, item))?.unbind())
    }
}
