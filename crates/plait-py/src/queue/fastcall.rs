//! Hand-written `METH_FASTCALL` entry points for the queues' hottest calls.
//!
//! A put+get pair on an uncontended queue costs about 900 instructions, and
//! a third of them were PyO3's call machinery (the panic trampoline, its
//! thread-local bookkeeping, generic argument extraction) rather than the
//! queue. For the four calls that dominate real producer/consumer code —
//! `Queue.put(item)`, `Queue.get()`, `SimpleQueue.put(item)`,
//! `SimpleQueue.get()` — this module installs a plain C-ABI method in the
//! class that handles only the common case:
//!
//! * positional arguments only, in the default form (`put(item)`, `get()`);
//! * the queue's mutex is free (`try_put_now` / `try_get_now`: no waiting);
//! * the operation succeeds at once (room to put, an item to get);
//! * for `put`: the queue's `maxsize` is a number (one CPython's
//!   `maxsize > 0` would not raise for).
//!
//! Anything else — keywords, `block`/`timeout` arguments, a full or empty
//! queue, contention, shutdown, a subclass overriding the storage hooks — is
//! forwarded unchanged to the PyO3 method this replaced, which implements
//! the whole contract. So the fast path adds no semantics of its own: it is
//! the first step of the slow path, taken without the call overhead.
//!
//! Nothing here can panic on a valid call, so no unwinding crosses the C ABI.
//! How a method is installed and forwarded is `capi.rs`'s.

use std::ffi::CStr;

use plait_core::queue::{GetError, Order, PutError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::Borrowed;

use crate::capi::{fastcall_args, forward, none, replace_method};

use super::{less, no_compare, Queue, SimpleQueue};

static QUEUE_PUT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static QUEUE_GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SIMPLE_PUT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SIMPLE_GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Install the fast entry points (called once at module init).
pub fn install(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let q = py.get_type::<Queue>();
    replace_method(&q, c"put", QUEUE_PUT_DOC, queue_put, &QUEUE_PUT)?;
    replace_method(&q, c"get", QUEUE_GET_DOC, queue_get, &QUEUE_GET)?;
    let s = py.get_type::<SimpleQueue>();
    replace_method(&s, c"put", SIMPLE_PUT_DOC, simple_put, &SIMPLE_PUT)?;
    replace_method(&s, c"get", SIMPLE_GET_DOC, simple_get, &SIMPLE_GET)?;
    Ok(())
}

const QUEUE_PUT_DOC: &CStr = c"put($self, /, item, block=True, timeout=None)\n--\n\nPut an item into the queue, waiting for a free slot if it is bounded and full (unless block is false, or timeout seconds pass: then queue.Full).";
const QUEUE_GET_DOC: &CStr = c"get($self, /, block=True, timeout=None)\n--\n\nRemove and return an item, waiting for one if needed (unless block is false, or timeout seconds pass: then queue.Empty).";
const SIMPLE_PUT_DOC: &CStr = c"put($self, /, item, block=True, timeout=None)\n--\n\nPut an item into the queue; never blocks (block and timeout exist for compatibility with Queue.put).";
const SIMPLE_GET_DOC: &CStr = c"get($self, /, block=True, timeout=None)\n--\n\nRemove and return an item, waiting for one if needed (unless block is false, or timeout seconds pass: then queue.Empty).";

/// Drop an owned reference we hold without going through PyO3's deferred
/// reference pool (this code runs outside PyO3's attach bookkeeping).
fn release(py: Python<'_>, obj: Py<PyAny>) {
    drop(obj.into_bound(py));
}

/// `Queue.put(item)` fast path.
///
/// # Safety
/// Called by CPython only, as a `METH_FASTCALL | METH_KEYWORDS` method of
/// `Queue`: attached, `slf` an instance of that class (its method
/// descriptor checks), `args`, `nargsf` and `kwnames` as the fastcall
/// convention passes them.
unsafe extern "C" fn queue_put(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method attached to the interpreter, with
    // `slf` an instance of the descriptor's class (the descriptor checks)
    // and `args` valid for the advertised count.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `nargsf` is the count CPython passed, flags included.
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) };
    if kwnames.is_null() && nargs == 1 {
        // SAFETY: as above; `slf` is a Queue (or subclass) instance.
        let this = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<Queue>() };
        let this = this.get();
        if !this.hooks && !this.invalid_maxsize.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: args[0] is valid (nargs == 1).
            let item = unsafe { Borrowed::from_ptr(py, *args) }.to_owned().unbind();
            let r = if this.core.order() == Order::Priority {
                this.core.try_put_now(item, &mut less(py))
            } else {
                this.core.try_put_now(item, &mut no_compare).map_err(|e| {
                    e.map_err(|pe| match pe {
                        PutError::Full(i) => PutError::Full(i),
                        PutError::ShutDown(i) => PutError::ShutDown(i),
                        PutError::Compare(_, never) => match never {},
                    })
                })
            };
            match r {
                Ok(()) => return none(),
                Err(Err(PutError::Compare(item, e))) => {
                    release(py, item);
                    e.restore(py);
                    return std::ptr::null_mut();
                }
                Err(Ok(item) | Err(PutError::Full(item) | PutError::ShutDown(item))) => release(py, item),
            }
        }
    }
    // SAFETY: forwarding exactly what CPython passed us.
    unsafe { forward(&QUEUE_PUT, py, slf, fastcall_args(args, nargs as usize, kwnames), nargs as usize, kwnames) }
}

/// `Queue.get()` fast path.
///
/// # Safety
/// Called by CPython only, as a `METH_FASTCALL | METH_KEYWORDS` method of
/// `Queue`: attached, `slf` an instance of that class (its method
/// descriptor checks), `args`, `nargsf` and `kwnames` as the fastcall
/// convention passes them.
unsafe extern "C" fn queue_get(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: see queue_put.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `nargsf` is the count CPython passed, flags included.
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) };
    if kwnames.is_null() && nargs == 0 {
        // SAFETY: `slf` is a Queue (or subclass) instance.
        let this = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<Queue>() };
        let this = this.get();
        if !this.hooks {
            let r = if this.core.order() == Order::Priority {
                this.core.try_get_now(&mut less(py))
            } else {
                this.core.try_get_now(&mut no_compare).map_err(|e| {
                    e.map(|ge| match ge {
                        GetError::Empty => GetError::Empty,
                        GetError::ShutDown => GetError::ShutDown,
                        GetError::Compare(never) => match never {},
                    })
                })
            };
            match r {
                Ok(item) => return item.into_ptr(),
                Err(Some(GetError::Compare(e))) => {
                    e.restore(py);
                    return std::ptr::null_mut();
                }
                Err(_) => {}
            }
        }
    }
    // SAFETY: forwarding exactly what CPython passed us.
    unsafe { forward(&QUEUE_GET, py, slf, fastcall_args(args, nargs as usize, kwnames), nargs as usize, kwnames) }
}

/// `SimpleQueue.put(item[, block[, timeout]])` fast path (`block` and
/// `timeout` are ignored by SimpleQueue.put, as in CPython).
///
/// # Safety
/// Called by CPython only, as a `METH_FASTCALL | METH_KEYWORDS` method of
/// `SimpleQueue`: attached, `slf` an instance of that class (its method
/// descriptor checks), `args`, `nargsf` and `kwnames` as the fastcall
/// convention passes them.
unsafe extern "C" fn simple_put(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: see queue_put.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `nargsf` is the count CPython passed, flags included.
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) };
    if kwnames.is_null() && (1..=3).contains(&nargs) {
        // SAFETY: `slf` is a SimpleQueue (or subclass) instance; args[0] valid.
        let this = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<SimpleQueue>() };
        // SAFETY: args[0] is valid (nargs >= 1).
        let item = unsafe { Borrowed::from_ptr(py, *args) }.to_owned().unbind();
        match this.get().core.try_put_now(item, &mut no_compare) {
            Ok(()) => return none(),
            Err(Ok(item) | Err(PutError::Full(item) | PutError::ShutDown(item))) => release(py, item),
            Err(Err(PutError::Compare(_, never))) => match never {},
        }
    }
    // SAFETY: forwarding exactly what CPython passed us.
    unsafe { forward(&SIMPLE_PUT, py, slf, fastcall_args(args, nargs as usize, kwnames), nargs as usize, kwnames) }
}

/// `SimpleQueue.get()` fast path.
///
/// # Safety
/// Called by CPython only, as a `METH_FASTCALL | METH_KEYWORDS` method of
/// `SimpleQueue`: attached, `slf` an instance of that class (its method
/// descriptor checks), `args`, `nargsf` and `kwnames` as the fastcall
/// convention passes them.
unsafe extern "C" fn simple_get(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: see queue_put.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `nargsf` is the count CPython passed, flags included.
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) };
    if kwnames.is_null() && nargs == 0 {
        // SAFETY: `slf` is a SimpleQueue (or subclass) instance.
        let this = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<SimpleQueue>() };
        if let Ok(item) = this.get().core.try_get_now(&mut no_compare) {
            return item.into_ptr();
        }
    }
    // SAFETY: forwarding exactly what CPython passed us.
    unsafe { forward(&SIMPLE_GET, py, slf, fastcall_args(args, nargs as usize, kwnames), nargs as usize, kwnames) }
}
