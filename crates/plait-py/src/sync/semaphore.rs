//! `plait.Semaphore` and `plait.BoundedSemaphore`.
//!
//! The count lives in the core's atomic word as a number of permits. CPython's
//! count is any Python number, though: `Semaphore(1.5)`, `Semaphore(2**70)`
//! and (from 3.12) `release(1.5)` are accepted, and its `acquire` waits only
//! while the count is exactly 0. A count that is not a whole number never
//! reaches 0, so such a semaphore never blocks again. plait keeps that
//! contract without slowing the common case: when the count is not a plain
//! permit count it becomes *exotic* — the core holds about [`BASE`] permits
//! (so it never blocks in practice) and an [`Offset`] `(value, base)` says
//! that CPython's count was `value` when the core held `base` permits, so
//! `_value` is `value + (permits - base)`, what CPython's would read. Whole
//! floats and huge ints keep their type and value the same way.
//!
//! The offset is a Python number updated with Python arithmetic, which may
//! run Python code: it is computed outside the mutex and stored only if no
//! other update came in between (else computed again).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use plait_core::fork::{register_arc, Registration};
use plait_core::park::Outcome;
use plait_core::sync::semaphore::MAX_VALUE;
use plait_core::sync::{ReleaseError, Semaphore as CoreSemaphore};
use pyo3::exceptions::{PyAttributeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyInt, PyTuple};

use crate::debug::site::{label, name_arg};
use crate::sync::lock::{new_like, state_repr};
use crate::wait::{check_addable, cond_timeout, detached, interrupted_error, version, Arg, CondTimeout};

/// The permits an exotic semaphore's core holds: enough never to run out
/// (a million years of acquires at a million a second would not), small
/// enough that a float offset `value - BASE` stays exact to 1/2**12.
const BASE: usize = 1 << 40;

/// The largest count kept as plain permits (leaves room to release).
const PLAIN_MAX: usize = MAX_VALUE >> 1;

/// A counting semaphore, like `threading.Semaphore`.
///
/// The count may be any number CPython accepts (`Semaphore(1.5)`,
/// `Semaphore(2**70)`) and behaves as there; `_value` reads it, as code
/// written against CPython's pure-Python class sometimes does. As
/// CPython's, it takes attributes, weak references and subclasses.
///
/// `_value` may be assigned, as some code resizes a CPython semaphore that
/// way; threads waiting are then woken for the permits there are (CPython's
/// would wait for the next release).
///
/// Differences from CPython: there is no internal `_cond`. `copy.copy`
/// gives a new, independent semaphore with the same count and attributes
/// (CPython's copy is one too, except that it shares the original's
/// internal Condition).
///
/// Addition: a keyword-only `name=` (a str) names it in `plait.debug`;
/// without it, it is known by its creation site `file:line`.
#[pyclass(module = "plait", frozen, weakref, dict, subclass)]
pub struct Semaphore {
    core: Arc<CoreSemaphore>,
    exotic: Mutex<Exotic>,
    /// `exotic.initial` is set: releases check the bound in Python.
    py_bound: AtomicBool,
    _fork: Registration,
}

/// CPython's count was `value` when the core held `base` permits.
struct Offset {
    value: Py<PyAny>,
    base: usize,
}

#[derive(Default)]
struct Exotic {
    /// None: the permits are the count.
    offset: Option<Arc<Offset>>,
    /// A bounded semaphore's initial value, when it is not a plain count
    /// (the core is then unbounded and the bound is checked here).
    initial: Option<Py<PyAny>>,
}

/// How an initial count or a release amount maps onto permits.
enum Count {
    /// A whole number of permits, and whether CPython's count would be a
    /// float (a whole float keeps its type in `_value`).
    Plain(usize, bool),
    /// Not a whole number, or too large.
    Exotic,
}

/// Classify a count already checked to be >= 0 (or >= 1).
fn too_many() -> PyErr {
    PyValueError::new_err("Semaphore released too many times")
}

/// The permits for CPython's count `value`, and the offset when the
/// permits alone are not the count.
fn permits_of(value: &Bound<'_, PyAny>) -> PyResult<(usize, Option<Offset>)> {
    Ok(match count_of(value)? {
        Count::Plain(n, false) => (n, None),
        Count::Plain(n, true) => (n, Some(Offset { value: value.clone().unbind(), base: n })),
        Count::Exotic => (BASE, Some(Offset { value: value.clone().unbind(), base: BASE })),
    })
}

fn count_of(v: &Bound<'_, PyAny>) -> PyResult<Count> {
    if let Ok(i) = v.cast::<PyInt>() {
        return Ok(match i.extract::<usize>() {
            Ok(n) if n <= PLAIN_MAX => Count::Plain(n, false),
            _ => Count::Exotic,
        });
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        let x = f.value();
        return Ok(if x.fract() == 0.0 && x <= PLAIN_MAX as f64 { Count::Plain(x as usize, true) } else { Count::Exotic });
    }
    // Another number type (Fraction, Decimal): whole when it equals its int().
    let whole = v.py().get_type::<PyInt>().call1((v,)).ok().filter(|n| v.eq(n).unwrap_or(false));
    Ok(match whole.and_then(|n| n.extract::<usize>().ok()) {
        Some(n) if n <= PLAIN_MAX => Count::Plain(n, true),
        _ => Count::Exotic,
    })
}

impl Semaphore {
    /// Unlabelled: `__init__` names it (a probe's label is set once).
    fn with_core(core: CoreSemaphore) -> Self {
        let core = Arc::new(core);
        let reg = register_arc(&core);
        Semaphore { core, exotic: Mutex::new(Exotic::default()), py_bound: AtomicBool::new(false), _fork: reg }
    }

    /// `__init__`: CPython's checks on `value`, then the count.
    fn init_impl(&self, value: &Bound<'_, PyAny>, bounded: bool) -> PyResult<()> {
        if value.lt(0)? {
            return Err(PyValueError::new_err("semaphore initial value must be >= 0"));
        }
        let (permits, offset) = permits_of(value)?;
        let initial = (bounded && offset.is_some()).then(|| value.clone().unbind());
        let bound = (bounded && initial.is_none()).then_some(permits);
        self.set_exotic(Exotic { offset: offset.map(Arc::new), initial });
        self.core.reinit(permits, bound);
        Ok(())
    }

    /// `sem._value = value`: the count becomes `value`, the bound stays
    /// (CPython's plain attribute assignment; threads waiting are woken
    /// for the permits there now are, where CPython's would wait for the
    /// next release).
    fn set_count(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = value.py();
        let (permits, offset) = permits_of(value)?;
        let mut initial = self.exotic.lock().initial.as_ref().map(|i| i.clone_ref(py));
        let mut bound = self.core.bound();
        if let (Some(b), Some(_)) = (bound, &offset) {
            // A bound the permits cannot express any more: checked in Python.
            initial = Some(b.into_pyobject(py)?.into_any().unbind());
            bound = None;
        }
        self.set_exotic(Exotic { offset: offset.map(Arc::new), initial });
        self.core.reinit(permits, bound);
        Ok(())
    }

    /// Replace the exotic state (the old one is dropped unlocked).
    fn set_exotic(&self, new: Exotic) {
        self.py_bound.store(new.initial.is_some(), Ordering::Relaxed);
        let old = std::mem::replace(&mut *self.exotic.lock(), new);
        drop(old);
    }

    /// The offset now (a new reference), for an update or a read.
    fn offset(&self) -> Option<Arc<Offset>> {
        self.exotic.lock().offset.clone()
    }

    /// CPython's count.
    fn value_obj<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let off = self.offset();
        let permits = self.core.value();
        match off {
            None => Ok(permits.into_pyobject(py)?.into_any()),
            Some(off) => off.value.bind(py).add(permits as i128 - off.base as i128),
        }
    }

    /// Record a release of `n` (CPython's count += n) that added `k`
    /// permits to a core that held `prev` (Python arithmetic, outside the
    /// mutex).
    fn add_offset(&self, n: &Bound<'_, PyAny>, k: usize, prev: usize) -> PyResult<()> {
        let py = n.py();
        loop {
            let seen = self.offset();
            let new = match &seen {
                Some(o) => Offset { value: o.value.bind(py).add(n)?.unbind(), base: o.base + k },
                None => Offset { value: n.add(prev)?.unbind(), base: prev + k },
            };
            let new = Arc::new(new);
            let mut g = self.exotic.lock();
            let same = match (&g.offset, &seen) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            if same {
                let old = g.offset.replace(new);
                drop(g);
                drop(old);
                return Ok(());
            }
        }
    }

    #[inline]
    fn acquire_impl(&self, py: Python<'_>, blocking: &Arg<'_>, timeout: &Arg<'_>) -> PyResult<bool> {
        if blocking.0.is_none() && timeout.0.is_none() && self.core.try_acquire() {
            return Ok(true);
        }
        // As CPython: `not blocking` (None is false), `timeout is not None`.
        let blocking = match blocking.get() {
            None => true,
            Some(b) => b.is_truthy()?,
        };
        let timeout = timeout.get().filter(|t| !t.is_none());
        if !blocking && timeout.is_some() {
            return Err(PyValueError::new_err("can't specify timeout for non-blocking acquire"));
        }
        if self.core.try_acquire() {
            return Ok(true);
        }
        if !blocking {
            return Ok(false);
        }
        // The count is 0: CPython now computes `endtime = _time() + timeout`
        // and waits on its Condition (see `cond_timeout`).
        let deadline = match timeout {
            None => None,
            Some(t) => {
                check_addable(t)?;
                match cond_timeout(Some(t))? {
                    CondTimeout::Now => return Ok(self.core.try_acquire()),
                    c => c.deadline(),
                }
            }
        };
        let core = &self.core;
        let (out, err) = detached(py, deadline, |ctx| core.acquire_slow(ctx));
        match out {
            Outcome::Notified => Ok(true),
            Outcome::TimedOut => Ok(false),
            Outcome::Interrupted => Err(interrupted_error(py, err)),
        }
    }

    /// `release(n)` for a plain whole `n` (and no bound to check in
    /// Python): one atomic add; anything else goes to [`Self::release_slow`].
    #[inline]
    fn release_impl(&self, py: Python<'_>, n: &Arg<'_>) -> PyResult<()> {
        let k = match n.get() {
            None => 1,
            Some(n) => match n.cast_exact::<PyInt>().ok().and_then(|i| i.extract::<usize>().ok()) {
                Some(k) if (1..=PLAIN_MAX).contains(&k) => k,
                _ => return self.release_slow(py, Some(n)),
            },
        };
        if self.py_bound.load(Ordering::Relaxed) {
            return self.release_slow(py, n.get());
        }
        match self.core.release(k) {
            Ok(()) => Ok(()),
            Err(ReleaseError::TooMany) => Err(too_many()),
            Err(ReleaseError::Overflow) => self.release_slow(py, n.get()),
        }
    }

    #[cold]
    fn release_slow(&self, py: Python<'_>, n: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let one;
        let n = match n {
            Some(n) => n,
            None => {
                one = 1i64.into_pyobject(py)?.into_any();
                &one
            }
        };
        if n.lt(1)? {
            return Err(PyValueError::new_err("n must be one or more"));
        }
        let initial = match (&self.exotic.lock().initial, self.core.bound()) {
            (Some(i), _) => Some(i.clone_ref(py)),
            (None, Some(b)) => Some(b.into_pyobject(py)?.into_any().unbind()),
            _ => None,
        };
        if let Some(initial) = initial {
            if self.value_obj(py)?.add(n)?.gt(initial)? {
                return Err(too_many());
            }
        }
        if version(py) < (3, 12) && !n.is_instance_of::<PyInt>() {
            // CPython 3.11 notifies with `range(n)` (after adding n).
            return Err(PyTypeError::new_err(format!(
                "'{}' object cannot be interpreted as an integer",
                n.get_type().name()?
            )));
        }
        let plain = match count_of(n)? {
            Count::Plain(k, float) => match self.core.release_from(k) {
                Ok(prev) => Some((float, k, prev)),
                Err(ReleaseError::TooMany) => return Err(too_many()),
                Err(ReleaseError::Overflow) => None,
            },
            Count::Exotic => None,
        };
        match plain {
            None => {
                // Not whole, or past what the word holds: the permits the
                // word has room for, the rest in the offset (a count that is
                // not whole never reaches 0 again). A bound the permits then
                // cannot express is checked in Python from now on.
                if let Some(b) = self.core.bound() {
                    let mut g = self.exotic.lock();
                    if g.initial.is_none() {
                        g.initial = Some(b.into_pyobject(py)?.into_any().unbind());
                        self.py_bound.store(true, Ordering::Relaxed);
                    }
                    drop(g);
                    self.core.set_bound(None);
                }
                let k = BASE.min(MAX_VALUE - self.core.value());
                match self.core.release_from(k) {
                    Ok(prev) => self.add_offset(n, k, prev),
                    Err(ReleaseError::TooMany) => Err(too_many()),
                    Err(ReleaseError::Overflow) => self.add_offset(n, 0, self.core.value()),
                }
            }
            // A whole float: the count becomes a float, as in CPython.
            Some((true, k, prev)) => self.add_offset(n, k, prev),
            // An int of another type (bool, a subclass): the count stays.
            Some((false, _, _)) => Ok(()),
        }
    }
}

#[pymethods]
impl Semaphore {
    /// A semaphore with one permit; `__init__` sets the count (as CPython's
    /// `object.__new__` leaves the arguments to `__init__`, so a subclass's
    /// own `__init__` may take others).
    #[new]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(value=1, *, name=None)")]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Semaphore::with_core(CoreSemaphore::new(1))
    }

    #[pyo3(signature = (value = Arg::ABSENT, *, name = None))]
    fn __init__(slf: &Bound<'_, Self>, value: Arg<'_>, name: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let name = name_arg(name)?;
        let one;
        let value = match value.get() {
            Some(v) => v,
            None => {
                one = 1i64.into_pyobject(py)?.into_any();
                &one
            }
        };
        let this = slf.get();
        this.init_impl(value, slf.is_instance_of::<BoundedSemaphore>())?;
        label(py, &this.core.probe, name);
        Ok(())
    }

    /// Take one permit; `blocking` and `timeout` as `threading.Semaphore`.
    #[pyo3(signature = (blocking = Arg::ABSENT, timeout = Arg::ABSENT))]
    fn acquire(&self, py: Python<'_>, blocking: Arg<'_>, timeout: Arg<'_>) -> PyResult<bool> {
        self.acquire_impl(py, &blocking, &timeout)
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire_impl(py, &Arg(None), &Arg(None))
    }

    /// Return `n` permits, waking up to `n` waiters.
    #[pyo3(signature = (n = Arg::ABSENT), text_signature = "($self, n=1)")]
    fn release(&self, py: Python<'_>, n: Arg<'_>) -> PyResult<()> {
        self.release_impl(py, &n)
    }

    #[pyo3(signature = (_t = None, _v = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.release_impl(py, &Arg(None))
    }

    /// A new semaphore of the same class with the same count (and bound)
    /// and a copy of the attributes (see the class doc).
    fn __copy__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let new = new_like(slf.as_any())?;
        let copy = new.cast::<Semaphore>()?.get();
        let (offset, initial) = {
            let g = this.exotic.lock();
            (g.offset.clone(), g.initial.as_ref().map(|i| i.clone_ref(py)))
        };
        copy.set_exotic(Exotic { offset, initial });
        copy.core.reinit(this.core.value(), this.core.bound());
        Ok(new.unbind())
    }

    /// The count, as CPython's `_value` attribute.
    #[getter]
    fn _value<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.value_obj(py)
    }

    /// Set the count, as assigning CPython's `_value` does (see
    /// `set_count`).
    #[setter(_value)]
    fn set_value(&self, value: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        match value {
            Some(v) => self.set_count(v),
            None => Err(PyAttributeError::new_err("cannot delete _value")),
        }
    }

    /// A bounded semaphore's initial value (CPython's `_initial_value`).
    #[getter]
    fn _initial_value(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(i) = &self.exotic.lock().initial {
            return Ok(i.clone_ref(py));
        }
        match self.core.bound() {
            Some(b) => Ok(b.into_pyobject(py)?.into_any().unbind()),
            None => Err(PyAttributeError::new_err("'Semaphore' object has no attribute '_initial_value'")),
        }
    }

    #[getter]
    fn _waiters(&self) -> Vec<u64> {
        self.core.waiters()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let this = slf.get();
        state_repr(slf.as_any(), || {
            let mut value = this.value_obj(py)?.str()?.to_string();
            if slf.is_instance_of::<BoundedSemaphore>() {
                value = format!("{}/{}", value, this._initial_value(py)?.bind(py).str()?);
            }
            Ok(format!("value={value}"))
        })
    }
}

/// A semaphore that refuses to be released above its initial value, like
/// `threading.BoundedSemaphore` (a subclass of Semaphore, as there).
///
/// Addition: a keyword-only `name=` (a str) names it in `plait.debug`;
/// without it, it is known by its creation site `file:line`.
#[pyclass(module = "plait", frozen, extends = Semaphore, subclass)]
pub struct BoundedSemaphore;

#[pymethods]
impl BoundedSemaphore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(value=1, *, name=None)")]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyClassInitializer<Self> {
        let base = Semaphore::with_core(CoreSemaphore::bounded(1));
        PyClassInitializer::from(base).add_subclass(BoundedSemaphore)
    }
}
