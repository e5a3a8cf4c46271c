//! The queues' `timeout` (and `maxsize`) arguments, read the way CPython
//! reads them. The two kinds of queue differ:
//!
//! * `queue.Queue` is Python code. A blocking `get`/`put` with a timeout
//!   evaluates `timeout < 0` (ValueError) and `time() + timeout` (TypeError
//!   for a str, OverflowError for an int beyond a float) *before* it looks
//!   at the queue, but only hands the remaining seconds to a lock wait when
//!   it must wait: so `inf`, `1e300` or NaN are accepted on a queue that
//!   has an item (or room), and fail (OverflowError; NaN: see below) only
//!   when the call would wait. [`QueueTimeout`] keeps that split:
//!   [`QueueTimeout::parse`] up front, [`QueueTimeout::deadline`] at the
//!   first wait.
//! * `queue.SimpleQueue` is C: `get` converts the timeout first, as
//!   `_PyTime_FromSecondsObject` does (floats, ints and `__index__` objects;
//!   NaN is a ValueError; out of range, `±inf` included, an OverflowError;
//!   rounded up to the nanosecond, so `-1e-10` is 0), then rejects a
//!   negative one and one above `threading.TIMEOUT_MAX`: [`c_deadline`].
//!
//! NaN in a `Queue` wait: CPython's `Condition.wait(nan)` does not wait, so
//! the queue's loop spins until an item (or room) appears, forever if none
//! does. plait raises ValueError instead, at the point where it would wait
//! (a deliberate difference, documented in docs/differences.md).
//!
//! The sync primitives read their timeouts in `wait.rs`; this file is the
//! queue's own reading (the two may be merged once both match CPython).

use std::time::Instant;

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt};

use crate::wait::{cond_seconds, deadline_in, timeout_ns, Round, TIMEOUT_MAX};

fn negative() -> PyErr {
    PyValueError::new_err("'timeout' must be a non-negative number")
}

fn too_large() -> PyErr {
    PyOverflowError::new_err("timeout value is too large")
}

/// A `Queue.get/put` timeout after CPython's up-front checks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum QueueTimeout {
    /// `timeout=None`: wait as long as it takes.
    Forever,
    /// Seconds, non-negative or NaN (`inf` included).
    Seconds(f64),
}

impl QueueTimeout {
    /// The up-front part of `queue.Queue.get/put(block=True, timeout=t)`:
    /// `t < 0` and `time() + t`, with the exceptions those raise.
    pub(crate) fn parse(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let t = match timeout {
            Some(t) if !t.is_none() => t,
            _ => return Ok(QueueTimeout::Forever),
        };
        // Exact floats and ints (bool included) are read here; anything
        // else gets Python's own operators, as the standard library's code.
        if let Ok(f) = t.cast_exact::<PyFloat>() {
            let v = f.value();
            if v < 0.0 {
                return Err(negative());
            }
            return Ok(QueueTimeout::Seconds(v));
        }
        if t.is_exact_instance_of::<PyInt>() || t.is_exact_instance_of::<pyo3::types::PyBool>() {
            if t.lt(0)? {
                return Err(negative());
            }
            // PyLong_AsDouble: OverflowError beyond a float, as `time() + t`.
            return Ok(QueueTimeout::Seconds(t.extract::<f64>()?));
        }
        if t.lt(0)? {
            return Err(negative());
        }
        let py = t.py();
        let now = py.import("time")?.getattr("time")?.call0()?;
        let remaining = now.add(t)?.sub(&now)?;
        // What Condition.wait hands to the lock: a float, an int or an
        // `__index__` object, as `_PyTime_FromSecondsObject` reads them.
        Ok(QueueTimeout::Seconds(seconds_of(&remaining)?))
    }

    /// The deadline of the wait the call is about to start (CPython's
    /// `Condition.wait(remaining)`): `None` to wait forever, `Ok(Some(now))`
    /// when no time is left; OverflowError beyond `threading.TIMEOUT_MAX`.
    pub(crate) fn deadline(self) -> PyResult<Option<Instant>> {
        match self {
            QueueTimeout::Forever => Ok(None),
            QueueTimeout::Seconds(s) => Ok(cond_seconds(s)?.deadline()),
        }
    }
}

/// Seconds from a float (subclasses too), an int or an `__index__`
/// object, as `_PyTime_FromSecondsObject` accepts them.
fn seconds_of(obj: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(f.value());
    }
    if obj.is_instance_of::<PyInt>() || obj.hasattr("__index__")? {
        return match obj.extract::<i64>() {
            Ok(i) => Ok(i as f64),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                Err(PyOverflowError::new_err("timestamp too large to convert to C _PyTime_t"))
            }
            Err(e) => Err(e),
        };
    }
    Err(PyTypeError::new_err(format!(
        "'{}' object cannot be interpreted as an integer",
        obj.get_type().name()?
    )))
}

/// `SimpleQueue.get(block=True, timeout=t)`'s conversion (C's): `None`
/// waits forever; otherwise the deadline, or the exception CPython raises
/// before looking at the queue.
pub(crate) fn c_deadline(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Instant>> {
    let t = match timeout {
        Some(t) if !t.is_none() => t,
        _ => return Ok(None),
    };
    let ns = timeout_ns(t, Round::Ceiling)?;
    if ns < 0 {
        return Err(negative());
    }
    let secs = ns as f64 / 1e9;
    if secs > *TIMEOUT_MAX.lock() {
        return Err(too_large());
    }
    Ok(Some(deadline_in(secs)))
}

/// What `q.maxsize = value` means for the bound, as CPython's
/// `maxsize > 0` and `qsize() >= maxsize` read `value`.
pub(crate) enum MaxSize {
    /// At most this many items; 0 is unbounded (`maxsize > 0` is false:
    /// NaN, negatives). `usize::MAX` is bounded but never reached (`inf`,
    /// `2**64`): `block` and `timeout` are still read, as in CPython.
    Bound(usize),
    /// `maxsize > 0` raises (None, a str...): in CPython every `put` and
    /// `full()` raises that exception, which plait re-raises the same way.
    Invalid,
}

impl MaxSize {
    /// Classify `value`. Runs Python code (comparisons, `__ceil__`) for
    /// values that are neither ints nor floats: never under the queue's
    /// mutex.
    pub(crate) fn of(value: &Bound<'_, PyAny>) -> PyResult<MaxSize> {
        if value.is_exact_instance_of::<PyInt>() || value.is_exact_instance_of::<pyo3::types::PyBool>() {
            return Ok(MaxSize::Bound(match value.extract::<i64>() {
                Ok(n) => usize::try_from(n).unwrap_or(0),
                // Beyond i64: huge positive is unbounded in practice.
                Err(_) => usize::MAX * usize::from(value.gt(0)?),
            }));
        }
        if let Ok(f) = value.cast_exact::<PyFloat>() {
            return Ok(MaxSize::Bound(float_bound(f.value())));
        }
        match value.gt(0) {
            Err(_) => Ok(MaxSize::Invalid),
            Ok(false) => Ok(MaxSize::Bound(0)),
            // `qsize() >= maxsize` first holds at ceil(maxsize); one that
            // has no ceiling (Decimal('Infinity')) is never reached.
            Ok(true) => {
                let ceil = value.py().import("math")?.getattr("ceil")?.call1((value,));
                match ceil.and_then(|c| c.extract::<i64>()) {
                    Ok(n) => Ok(MaxSize::Bound(usize::try_from(n).unwrap_or(usize::MAX).max(1))),
                    Err(_) => Ok(MaxSize::Bound(usize::MAX)),
                }
            }
        }
    }

    /// Raise what CPython's `self.maxsize > 0` raises for an invalid bound.
    pub(crate) fn raise_invalid(value: &Bound<'_, PyAny>) -> PyErr {
        match value.gt(0) {
            Err(e) => e,
            Ok(_) => PyTypeError::new_err("maxsize must be a number"),
        }
    }
}

/// The bound of a float maxsize: the first size with `size >= maxsize`
/// (`inf` bounds, as `inf > 0`, but is never reached; NaN does not bound).
fn float_bound(v: f64) -> usize {
    if v > 0.0 {
        let c = v.ceil();
        if c >= usize::MAX as f64 {
            usize::MAX
        } else {
            c as usize
        }
    } else {
        0
    }
}
