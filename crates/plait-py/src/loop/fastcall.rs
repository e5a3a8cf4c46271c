//! The hand-written `METH_FASTCALL` entry for `loop.call_soon`, the
//! loop's hottest call (every task step and future callback goes through
//! it).
//!
//! It handles `call_soon(callback, *args)` and `call_soon(callback, *args,
//! context=ctx)` on an open loop not in debug mode, making the handle and
//! queueing it (`LoopCore::soon`) without PyO3's call machinery; anything
//! else is forwarded unchanged to the PyO3 method it replaced, which
//! implements the whole contract (see `capi.rs`). Nothing here can panic on
//! a valid call, so no unwinding crosses the C ABI.

use std::ffi::CStr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::Borrowed;

use super::{Args, LoopCore};
use crate::capi::{fastcall_args, fastcall_nkw, forward, replace_method};

static CALL_SOON: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

const CALL_SOON_DOC: &CStr = c"call_soon($self, callback, /, *args, context=None)\n--\n\nArrange for callback(*args) to be called soon, in context (a copy of the current context by default); returns a Handle.";

/// Install the fast `call_soon` (called once at module init).
pub fn install(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let l = m.py().get_type::<LoopCore>();
    replace_method(&l, c"call_soon", CALL_SOON_DOC, call_soon, &CALL_SOON)
}

/// `loop.call_soon(callback, *args[, context=ctx])` on an open loop not in
/// debug mode: make the handle and queue it. Anything else (debug mode, a
/// closed loop, other keywords) goes to the PyO3 method.
///
/// # Safety
/// Called by CPython only, as a `METH_FASTCALL | METH_KEYWORDS` method of
/// `_LoopCore`: attached, `slf` an instance of that class (its method
/// descriptor checks), `args`, `nargsf` and `kwnames` as the fastcall
/// convention passes them.
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
    // SAFETY: `nargsf` is the count CPython passed, flags included.
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) };
    // SAFETY: kwnames is NULL or a tuple of str (fastcall convention).
    let nkw = unsafe { fastcall_nkw(kwnames) } as ffi::Py_ssize_t;
    let context_kw = nkw == 1 && {
        // SAFETY: kwnames holds one str. Keyword names are usually the
        // interned string itself (one pointer comparison); otherwise the
        // text is compared.
        let k = unsafe { ffi::PyTuple_GET_ITEM(kwnames, 0) };
        std::ptr::eq(k, pyo3::intern!(py, "context").as_ptr())
            // SAFETY: `k` is a live str; the other string is a C literal.
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
    unsafe { forward(&CALL_SOON, py, slf, fastcall_args(args, nargs as usize, kwnames), nargs as usize, kwnames) }
}
