//! Hand-written `METH_FASTCALL` entry points for the queue's hottest calls.
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
//! * the operation succeeds at once (room to put, an item to get).
//!
//! Anything else — keywords, `block`/`timeout` arguments, a full or empty
//! queue, contention, shutdown, a subclass overriding the storage hooks — is
//! forwarded unchanged to the PyO3 method this replaced, which implements
//! the whole contract. So the fast path adds no semantics of its own: it is
//! the first step of the slow path, taken without the call overhead.
//!
//! Nothing here can panic on a valid call, so no unwinding crosses the C ABI.

use std::ffi::CStr;

use plait_core::queue::{GetError, Order, PutError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use pyo3::Borrowed;

use crate::event_loop::{Args, LoopCore};
use crate::queue::{less, no_compare, Queue, SimpleQueue};

static QUEUE_PUT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static QUEUE_GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SIMPLE_PUT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SIMPLE_GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static CALL_SOON: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

type Fast = ffi::PyCFunctionFastWithKeywords;

/// Replace `ty.<name>` by `f`, keeping the original method as the slow path.
fn install(
    ty: &Bound<'_, PyType>,
    name: &'static CStr,
    doc: &'static CStr,
    f: Fast,
    slow: &PyOnceLock<Py<PyAny>>,
) -> PyResult<()> {
    let py = ty.py();
    let attr = name.to_str().expect("method names are ASCII");
    let original = ty.getattr(attr)?;
    if slow.set(py, original.unbind()).is_err() {
        // Already installed (the module was initialised before): keep it.
        return Ok(());
    }
    // The descriptor keeps a pointer to its PyMethodDef for as long as the
    // class lives; the class lives as long as the process, so leak it.
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: f },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr(),
    }));
    // SAFETY: `ty` is a live type object and `def` a valid, 'static
    // PyMethodDef; PyDescr_NewMethod returns a new reference or NULL with an
    // exception set, which from_owned_ptr_or_err turns into a PyErr.
    let descr = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(ty.as_type_ptr(), def))?
    };
    ty.setattr(attr, descr)
}

/// Install the fast entry points (called once at module init).
pub fn install_all(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let q = py.get_type::<Queue>();
    install(&q, c"put", QUEUE_PUT_DOC, queue_put, &QUEUE_PUT)?;
    install(&q, c"get", QUEUE_GET_DOC, queue_get, &QUEUE_GET)?;
    let s = py.get_type::<SimpleQueue>();
    install(&s, c"put", SIMPLE_PUT_DOC, simple_put, &SIMPLE_PUT)?;
    install(&s, c"get", SIMPLE_GET_DOC, simple_get, &SIMPLE_GET)?;
    let l = py.get_type::<LoopCore>();
    install(&l, c"call_soon", CALL_SOON_DOC, call_soon, &CALL_SOON)?;
    Ok(())
}

const CALL_SOON_DOC: &CStr = c"call_soon($self, callback, /, *args, context=None)\n--\n\nArrange for callback(*args) to be called soon, in context (a copy of the current context by default); returns a Handle.";

const QUEUE_PUT_DOC: &CStr = c"put($self, /, item, block=True, timeout=None)\n--\n\nPut an item into the queue, waiting for a free slot if it is bounded and full (unless block is false, or timeout seconds pass: then queue.Full).";
const QUEUE_GET_DOC: &CStr = c"get($self, /, block=True, timeout=None)\n--\n\nRemove and return an item, waiting for one if needed (unless block is false, or timeout seconds pass: then queue.Empty).";
const SIMPLE_PUT_DOC: &CStr = c"put($self, /, item, block=True, timeout=None)\n--\n\nPut an item into the queue; never blocks (block and timeout exist for compatibility with Queue.put).";
const SIMPLE_GET_DOC: &CStr = c"get($self, /, block=True, timeout=None)\n--\n\nRemove and return an item, waiting for one if needed (unless block is false, or timeout seconds pass: then queue.Empty).";

/// Call the original (PyO3) method with exactly the arguments we received.
///
/// # Safety
/// The arguments must be those CPython passed to a fastcall method: `slf`
/// a live object, `args` valid for `nargs` positional entries plus one per
/// name in `kwnames` (a tuple or NULL); the caller is attached.
unsafe fn forward(
    slow: &PyOnceLock<Py<PyAny>>,
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let nkw = if kwnames.is_null() {
        0
    } else {
        // SAFETY: kwnames is a tuple when not NULL (fastcall convention).
        unsafe { ffi::PyTuple_GET_SIZE(kwnames) }
    };
    let total = (nargs + nkw) as usize;
    let mut buf: Vec<*mut ffi::PyObject> = Vec::with_capacity(total + 1);
    buf.push(slf);
    for i in 0..total {
        // SAFETY: args holds `nargs + nkw` valid pointers (see above).
        buf.push(unsafe { *args.add(i) });
    }
    let Some(method) = slow.get(py) else {
        // Unreachable: the fast path is installed only after `slow` is set.
        return std::ptr::null_mut();
    };
    // SAFETY: `method` is a live method descriptor; `buf` holds self plus
    // the original arguments, borrowed for the duration of the call.
    unsafe { ffi::PyObject_Vectorcall(method.as_ptr(), buf.as_ptr(), (nargs + 1) as usize, kwnames) }
}

/// Drop an owned reference we hold without going through PyO3's deferred
/// reference pool (this code runs outside PyO3's attach bookkeeping).
fn release(py: Python<'_>, obj: Py<PyAny>) {
    drop(obj.into_bound(py));
}

#[inline]
fn none() -> *mut ffi::PyObject {
    // SAFETY: Py_None is immortal or ref-counted; returning it requires a
    // new reference, which Py_IncRef provides.
    unsafe {
        let none = ffi::Py_None();
        ffi::Py_IncRef(none);
        none
    }
}

/// `Queue.put(item)` fast path.
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
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) };
    if kwnames.is_null() && nargs == 1 {
        // SAFETY: as above; `slf` is a Queue (or subclass) instance.
        let this = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<Queue>() };
        let this = this.get();
        if !this.hooks {
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
    unsafe { forward(&QUEUE_PUT, py, slf, args, nargs, kwnames) }
}

/// `Queue.get()` fast path.
unsafe extern "C" fn queue_get(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: see queue_put.
    let py = unsafe { Python::assume_attached() };
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
    unsafe { forward(&QUEUE_GET, py, slf, args, nargs, kwnames) }
}

/// `SimpleQueue.put(item[, block[, timeout]])` fast path (`block` and
/// `timeout` are ignored by SimpleQueue.put, as in CPython).
unsafe extern "C" fn simple_put(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: see queue_put.
    let py = unsafe { Python::assume_attached() };
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) };
    if kwnames.is_null() && (1..=3).contains(&nargs) {
        // SAFETY: `slf` is a SimpleQueue (or subclass) instance; args[0] valid.
        let this = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<SimpleQueue>() };
        let item = unsafe { Borrowed::from_ptr(py, *args) }.to_owned().unbind();
        match this.get().core.try_put_now(item, &mut no_compare) {
            Ok(()) => return none(),
            Err(Ok(item) | Err(PutError::Full(item) | PutError::ShutDown(item))) => release(py, item),
            Err(Err(PutError::Compare(_, never))) => match never {},
        }
    }
    // SAFETY: forwarding exactly what CPython passed us.
    unsafe { forward(&SIMPLE_PUT, py, slf, args, nargs, kwnames) }
}

/// `SimpleQueue.get()` fast path.
unsafe extern "C" fn simple_get(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: see queue_put.
    let py = unsafe { Python::assume_attached() };
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) };
    if kwnames.is_null() && nargs == 0 {
        // SAFETY: `slf` is a SimpleQueue (or subclass) instance.
        let this = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<SimpleQueue>() };
        if let Ok(item) = this.get().core.try_get_now(&mut no_compare) {
            return item.into_ptr();
        }
    }
    // SAFETY: forwarding exactly what CPython passed us.
    unsafe { forward(&SIMPLE_GET, py, slf, args, nargs, kwnames) }
}

/// `loop.call_soon(callback, *args[, context=ctx])` on an open loop not in
/// debug mode: make the handle and queue it. Anything else (debug mode, a
/// closed loop, other keywords) goes to the PyO3 method.
unsafe extern "C" fn call_soon(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method attached to the interpreter, with
    // `slf` an instance of the descriptor's class (the descriptor checks)
    // and `args` valid for the advertised count.
    let py = unsafe { Python::assume_attached() };
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) };
    // SAFETY: kwnames is NULL or a tuple of str (fastcall convention).
    let nkw = if kwnames.is_null() { 0 } else { unsafe { ffi::PyTuple_GET_SIZE(kwnames) } };
    let context_kw = nkw == 1 && {
        // SAFETY: kwnames holds one str. Keyword names are usually the
        // interned string itself (one pointer comparison); otherwise the
        // text is compared.
        let k = unsafe { ffi::PyTuple_GET_ITEM(kwnames, 0) };
        std::ptr::eq(k, pyo3::intern!(py, "context").as_ptr())
            || unsafe { ffi::PyUnicode_CompareWithASCIIString(k, c"context".as_ptr()) } == 0
    };
    if nargs >= 1 && (nkw == 0 || context_kw) {
        // SAFETY: `slf` is a _LoopCore (or subclass) instance.
        let this = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<LoopCore>() };
        if this.get().fast_path_open() {
            // SAFETY: args holds nargs positional pointers, then the keyword
            // value when there is one.
            let all = unsafe { std::slice::from_raw_parts(args, (nargs + nkw) as usize) };
            // SAFETY: every entry is a live object borrowed for the call.
            let callback = unsafe { Borrowed::from_ptr(py, all[0]) }.to_owned().unbind();
            let rest = &all[1..nargs as usize];
            let context = if context_kw {
                // SAFETY: as above.
                let c = unsafe { Borrowed::from_ptr(py, all[nargs as usize]) };
                if c.is_none() {
                    None
                } else {
                    Some(c.to_owned().unbind())
                }
            } else {
                None
            };
            let args = match rest {
                [] => Ok(Args::Zero),
                // SAFETY: a live object borrowed for the call.
                [one] => Ok(Args::One(unsafe { Borrowed::from_ptr(py, *one) }.to_owned().unbind())),
                many => pyo3::types::PyTuple::new(
                    py,
                    many.iter().map(|&p| {
                        // SAFETY: as above.
                        unsafe { Borrowed::from_ptr(py, p) }
                    }),
                )
                .map(|t| Args::Many(t.unbind())),
            };
            let r = args.and_then(|a| LoopCore::soon(&this.to_owned(), callback, a, context));
            return match r {
                Ok(h) => h.into_ptr(),
                Err(e) => {
                    e.restore(py);
                    std::ptr::null_mut()
                }
            };
        }
    }
    // SAFETY: forwarding exactly what CPython passed us.
    unsafe { forward(&CALL_SOON, py, slf, args, nargs, kwnames) }
}
