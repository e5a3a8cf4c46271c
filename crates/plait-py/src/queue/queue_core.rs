//! `_QueueCore`: the Rust class under `plait.queue.Queue`, `LifoQueue` and
//! `PriorityQueue` (the Python subclass picks the order). Bounded, with
//! `task_done`/`join` and (3.13+) `shutdown`; a subclass overriding the
//! storage hooks runs the standard library's algorithm instead ("hooks
//! mode", see the module doc of `queue/`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use plait_core::fork::{register_arc, Registration};
use plait_core::park::Outcome;
use plait_core::queue::{GetError, Order, PutError, Queue as CoreQueue};
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::BoundObject;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::debug::site::{label, name_arg};
use crate::errors;
use crate::wait::{detached, truthy, Gil};

use super::timeout::{MaxSize, QueueTimeout};
use crate::wait::Arg;
use super::{blocking_get, interrupted, less, no_compare, Item};

static STD_QUEUE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Call the standard library's `queue.Queue.<name>(self, *args)` (hooks mode).
fn std_call<'py>(
    slf: &Bound<'py, PyAny>,
    name: &str,
    args: impl IntoPyObject<'py, Target = PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let cls = STD_QUEUE.import(py, "queue", "Queue")?;
    let f = cls.getattr(name)?;
    let args = args.into_pyobject(py).map_err(Into::into)?.into_bound();
    let mut all = vec![slf.clone()];
    all.extend(args.iter());
    f.call1(PyTuple::new(py, all)?)
}

fn bool_arg<'py>(py: Python<'py>, b: Option<&Bound<'py, PyAny>>) -> Bound<'py, PyAny> {
    b.cloned().unwrap_or_else(|| pyo3::types::PyBool::new(py, true).to_owned().into_any())
}

fn none_arg<'py>(py: Python<'py>, t: Option<&Bound<'py, PyAny>>) -> Bound<'py, PyAny> {
    t.cloned().unwrap_or_else(|| py.None().into_bound(py))
}

/// The core of `plait.queue.Queue`, `LifoQueue` and `PriorityQueue`.
#[pyclass(module = "plait.queue", name = "_QueueCore", frozen, subclass)]
pub struct Queue {
    pub(crate) core: Arc<CoreQueue<Item>>,
    pub(crate) hooks: bool,
    /// `maxsize` as assigned (CPython returns the very object: `1.5`,
    /// `True`, `-1`); the core holds the bound it means. The mutex is only
    /// held to clone or swap the reference (no Python code runs under it).
    maxsize: Mutex<Py<PyAny>>,
    /// The assigned `maxsize` makes `maxsize > 0` raise (None, a str): every
    /// `put` and `full()` raises that, as in CPython. Read by the fast path.
    pub(crate) invalid_maxsize: AtomicBool,
    _fork: Registration,
}

impl Queue {
    /// One attempt to put: `Ok(None)` when stored, `Ok(Some(item))` when
    /// full. FIFO and LIFO queues never compare, so their results stay small
    /// (no `PyErr` in them) on the hot path.
    #[inline]
    fn try_put(&self, py: Python<'_>, item: Item) -> PyResult<Option<Item>> {
        if self.core.order() != Order::Priority {
            return match self.core.try_put(&Gil(py), item, &mut no_compare) {
                Ok(()) => Ok(None),
                Err(PutError::Full(item)) => Ok(Some(item)),
                Err(PutError::ShutDown(_)) => Err(errors::shutdown(py)),
                Err(PutError::Compare(_, never)) => match never {},
            };
        }
        match self.core.try_put(&Gil(py), item, &mut less(py)) {
            Ok(()) => Ok(None),
            Err(PutError::Full(item)) => Ok(Some(item)),
            Err(PutError::ShutDown(_)) => Err(errors::shutdown(py)),
            Err(PutError::Compare(_, e)) => Err(e),
        }
    }

    /// One attempt to get: `Ok(None)` when empty.
    #[inline]
    fn try_get(&self, py: Python<'_>) -> PyResult<Option<Item>> {
        if self.core.order() != Order::Priority {
            return match self.core.try_get(&Gil(py), &mut no_compare) {
                Ok(item) => Ok(Some(item)),
                Err(GetError::Empty) => Ok(None),
                Err(GetError::ShutDown) => Err(errors::shutdown(py)),
                Err(GetError::Compare(never)) => match never {},
            };
        }
        match self.core.try_get(&Gil(py), &mut less(py)) {
            Ok(item) => Ok(Some(item)),
            Err(GetError::Empty) => Ok(None),
            Err(GetError::ShutDown) => Err(errors::shutdown(py)),
            Err(GetError::Compare(e)) => Err(e),
        }
    }

    /// `queue.Queue.put`'s checks in its order: shut down first, then
    /// `maxsize > 0`; `block` and `timeout` only matter when bounded, and
    /// the timeout is read (and refused) before looking for room.
    fn put_args(
        &self,
        py: Python<'_>,
        block: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(bool, QueueTimeout)> {
        if self.invalid_maxsize.load(Ordering::Relaxed) {
            let err = MaxSize::raise_invalid(self.maxsize_ref(py).bind(py));
            return Err(self.shutdown_first(py, false, err));
        }
        if self.core.maxsize(&Gil(py)) == 0 {
            return Ok((true, QueueTimeout::Forever));
        }
        let block = truthy(block)?;
        if !block {
            return Ok((false, QueueTimeout::Forever));
        }
        let timeout = QueueTimeout::parse(timeout).map_err(|e| self.shutdown_first(py, false, e))?;
        Ok((true, timeout))
    }

    /// CPython checks for shutdown before anything else: `err` becomes
    /// ShutDown when the queue is shut down (for a get: and empty).
    fn shutdown_first(&self, py: Python<'_>, get: bool, err: PyErr) -> PyErr {
        let g = Gil(py);
        if self.core.is_shutdown(&g) && (!get || self.core.len(&g) == 0) {
            return errors::shutdown(py);
        }
        err
    }

    #[inline]
    fn put_impl(&self, py: Python<'_>, item: Item, block: bool, timeout: QueueTimeout) -> PyResult<()> {
        let mut item = match self.try_put(py, item)? {
            None => return Ok(()),
            Some(item) => item,
        };
        if !block {
            return Err(errors::full(py));
        }
        let deadline = timeout.deadline()?;
        loop {
            let core = &self.core;
            let (out, err) = detached(py, deadline, |ctx| core.wait_not_full(ctx));
            if out == Outcome::Interrupted {
                return Err(interrupted(py, err));
            }
            item = match self.try_put(py, item)? {
                None => return Ok(()),
                Some(item) => item,
            };
            if out == Outcome::TimedOut || deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(errors::full(py));
            }
        }
    }

    /// `queue.Queue.get`: a blocking call reads its timeout (and may
    /// refuse it) before looking for an item, but only starts the clock (or
    /// fails for `inf`, NaN) when it must wait.
    #[inline]
    fn get_impl(&self, py: Python<'_>, block: bool, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Item> {
        let timeout = if block {
            QueueTimeout::parse(timeout).map_err(|e| self.shutdown_first(py, true, e))?
        } else {
            QueueTimeout::Forever
        };
        blocking_get(py, &self.core, block, || timeout.deadline(), || self.try_get(py))
    }

    /// The assigned `maxsize`, taken out of its mutex before any Python
    /// code (a comparison) runs on it.
    fn maxsize_ref(&self, py: Python<'_>) -> Py<PyAny> {
        self.maxsize.lock().clone_ref(py)
    }

    fn set_maxsize_obj(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let bound = MaxSize::of(value)?;
        let old = std::mem::replace(&mut *self.maxsize.lock(), value.clone().unbind());
        drop(old); // outside the mutex: it may run __del__
        match bound {
            MaxSize::Bound(n) => {
                self.invalid_maxsize.store(false, Ordering::Relaxed);
                self.core.set_maxsize(&Gil(py), n);
            }
            MaxSize::Invalid => {
                self.invalid_maxsize.store(true, Ordering::Relaxed);
                self.core.set_maxsize(&Gil(py), 0);
            }
        }
        Ok(())
    }

    fn dict_get<'py>(slf: &Bound<'py, Self>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        slf.getattr("__dict__")?.get_item(name)
    }
}

#[pymethods]
impl Queue {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*args, **kwargs))]
    fn new(
        cls: &Bound<'_, PyType>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let order = match cls.getattr("_plait_order").and_then(|o| o.extract::<u8>()).unwrap_or(0) {
            1 => Order::Lifo,
            2 => Order::Priority,
            _ => Order::Fifo,
        };
        let hooks = cls.getattr("_plait_hooks").and_then(|h| h.is_truthy()).unwrap_or(false);
        let py = cls.py();
        // `copy.copy(q)`: a second object over the same queue, as copying
        // a CPython Queue shares its deque, mutex and conditions.
        if let Some(other) = kwargs.and_then(|k| k.get_item("_plait_share").ok().flatten()) {
            let other = other.cast::<Queue>()?.get();
            let core = Arc::clone(&other.core);
            let reg = register_arc(&core);
            return Ok(Queue {
                core,
                hooks,
                maxsize: Mutex::new(other.maxsize.lock().clone_ref(py)),
                invalid_maxsize: AtomicBool::new(other.invalid_maxsize.load(Ordering::Relaxed)),
                _fork: reg,
            });
        }
        let _ = args; // maxsize is assigned by __init__, as in CPython
        let name = name_arg(kwargs.and_then(|k| k.get_item("name").ok().flatten()).as_ref())?;
        let core = Arc::new(CoreQueue::new(order, 0));
        label(py, &core.probe, name);
        let reg = register_arc(&core);
        let zero = 0i64.into_pyobject(py)?.into_any().unbind();
        Ok(Queue { core, hooks, maxsize: Mutex::new(zero), invalid_maxsize: AtomicBool::new(false), _fork: reg })
    }

    /// Put `item`, waiting for room if the queue is bounded and full.
    #[pyo3(signature = (item, block = Arg(None), timeout = None))]
    fn put(
        slf: &Bound<'_, Self>,
        item: Bound<'_, PyAny>,
        block: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let block = block.get();
        let this = slf.get();
        let py = slf.py();
        if this.hooks {
            std_call(slf.as_any(), "put", (item, bool_arg(py, block), none_arg(py, timeout)))?;
            return Ok(());
        }
        let (block, timeout) = this.put_args(py, block, timeout)?;
        this.put_impl(py, item.unbind(), block, timeout)
    }

    fn put_nowait(slf: &Bound<'_, Self>, item: Bound<'_, PyAny>) -> PyResult<()> {
        let this = slf.get();
        if this.hooks {
            std_call(slf.as_any(), "put_nowait", (item,))?;
            return Ok(());
        }
        let py = slf.py();
        let (block, timeout) = this.put_args(py, Some(pyo3::types::PyBool::new(py, false).as_any()), None)?;
        this.put_impl(py, item.unbind(), block, timeout)
    }

    /// Remove and return an item, waiting for one if needed.
    #[pyo3(signature = (block = Arg(None), timeout = None))]
    fn get(slf: &Bound<'_, Self>, block: Arg<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Item> {
        let block = block.get();
        let this = slf.get();
        let py = slf.py();
        if this.hooks {
            return Ok(std_call(slf.as_any(), "get", (bool_arg(py, block), none_arg(py, timeout)))?.unbind());
        }
        this.get_impl(py, truthy(block)?, timeout)
    }

    fn get_nowait(slf: &Bound<'_, Self>) -> PyResult<Item> {
        let this = slf.get();
        if this.hooks {
            return Ok(std_call(slf.as_any(), "get_nowait", ())?.unbind());
        }
        this.get_impl(slf.py(), false, None)
    }

    fn qsize(slf: &Bound<'_, Self>) -> PyResult<usize> {
        let this = slf.get();
        if this.hooks {
            return std_call(slf.as_any(), "qsize", ())?.extract();
        }
        Ok(this.core.len(&Gil(slf.py())))
    }

    fn empty(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let this = slf.get();
        if this.hooks {
            return std_call(slf.as_any(), "empty", ())?.extract();
        }
        Ok(this.core.len(&Gil(slf.py())) == 0)
    }

    fn full(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let this = slf.get();
        if this.hooks {
            return std_call(slf.as_any(), "full", ())?.extract();
        }
        if this.invalid_maxsize.load(Ordering::Relaxed) {
            return Err(MaxSize::raise_invalid(this.maxsize_ref(slf.py()).bind(slf.py())));
        }
        Ok(this.core.is_full(&Gil(slf.py())))
    }

    /// Mark a formerly enqueued task complete.
    fn task_done(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        if this.hooks {
            std_call(slf.as_any(), "task_done", ())?;
            return Ok(());
        }
        this.core
            .task_done(&Gil(slf.py()))
            .map_err(|_| PyValueError::new_err("task_done() called too many times"))
    }

    /// Block until every item put has been marked done.
    fn join(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        let py = slf.py();
        if this.hooks {
            std_call(slf.as_any(), "join", ())?;
            return Ok(());
        }
        while !this.core.all_done(&Gil(py)) {
            let core = &this.core;
            let (out, err) = detached(py, None, |ctx| core.wait_all_done(ctx));
            if out == Outcome::Interrupted {
                return Err(interrupted(py, err));
            }
        }
        Ok(())
    }

    /// Python 3.13's `Queue.shutdown` (exposed as `shutdown` on 3.13+).
    #[pyo3(signature = (immediate = None))]
    fn _shutdown(slf: &Bound<'_, Self>, immediate: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let this = slf.get();
        let py = slf.py();
        if this.hooks {
            let immediate = immediate.cloned().unwrap_or_else(|| pyo3::types::PyBool::new(py, false).to_owned().into_any());
            std_call(slf.as_any(), "shutdown", (immediate,))?;
            return Ok(());
        }
        // CPython's `if immediate:` takes any object's truth.
        let immediate = match immediate {
            None => false,
            Some(i) => i.is_truthy()?,
        };
        let drained = this.core.shutdown(&Gil(py), immediate);
        drop(drained); // outside the queue's mutex: __del__ may run
        Ok(())
    }

    /// The bound, as assigned: `<= 0` (or `inf`, NaN) is unbounded; a
    /// float bounds at the first size that reaches it, as CPython's
    /// `qsize() >= maxsize`.
    #[getter]
    fn maxsize(&self, py: Python<'_>) -> Py<PyAny> {
        self.maxsize_ref(py)
    }

    #[setter]
    fn set_maxsize(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_maxsize_obj(py, value)
    }

    #[getter]
    fn unfinished_tasks(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let this = slf.get();
        if this.hooks {
            return Ok(Queue::dict_get(slf, "unfinished_tasks")?.unbind());
        }
        Ok(this.core.unfinished(&Gil(slf.py())).into_pyobject(slf.py())?.into_any().unbind())
    }

    /// Assignable, as in CPython, where code resets it (`q.unfinished_tasks
    /// = 0` releases `join`). plait keeps it an int.
    #[setter]
    fn set_unfinished_tasks(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if slf.get().hooks {
            return slf.getattr("__dict__")?.set_item("unfinished_tasks", value);
        }
        let n: i64 = value.extract()?;
        slf.get().core.set_unfinished(&Gil(slf.py()), n);
        Ok(())
    }

    #[getter]
    fn is_shutdown(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let this = slf.get();
        if this.hooks {
            return Ok(Queue::dict_get(slf, "is_shutdown")?.unbind());
        }
        Ok(pyo3::types::PyBool::new(slf.py(), this.core.is_shutdown(&Gil(slf.py()))).to_owned().into_any().unbind())
    }

    #[setter]
    fn set_is_shutdown(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if slf.get().hooks {
            return slf.getattr("__dict__")?.set_item("is_shutdown", value);
        }
        Err(pyo3::exceptions::PyAttributeError::new_err("use shutdown() to shut the queue down"))
    }

    /// `(getters, putters, joiners)` waiting now (for plait.debug).
    #[getter]
    fn _waiting(&self, py: Python<'_>) -> (usize, usize, usize) {
        self.core.waiting(&Gil(py))
    }

    /// Remove every item (`q.queue.clear()`); counters are kept, as in CPython.
    fn _clear(&self, py: Python<'_>) {
        let drained = self.core.clear(&Gil(py));
        drop(drained); // outside the queue's mutex: __del__ may run
    }

    /// A snapshot of the items in storage order (for plait.debug, and the
    /// `queue` attribute's view).
    fn _snapshot(&self, py: Python<'_>) -> Vec<Item> {
        self.core.map_items(&Gil(py), |items| items.iter().map(|i| i.clone_ref(py)).collect())
    }
}
