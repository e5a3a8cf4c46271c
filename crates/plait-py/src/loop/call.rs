//! What a handle calls: the callback, its arguments ([`Args`]) and the
//! context it runs in ([`Call`]), and how pending work is kept out of the
//! garbage collector's sight.
//!
//! A loop holding a million pending callbacks would make every collection
//! walk them all, so a handle's context copy (and handles made outside the
//! loop's pool) are untracked while only the loop refers to them, and
//! tracked again the moment Python code can get hold of them
//! ([`tracked`]) or they are freed (`Call`'s drop). See `handle.rs`.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::Obj;
use crate::capi::{PyContext_CopyCurrent, PyContext_Enter, PyContext_Exit};

/// A copy of the current context, out of the garbage collector's sight
/// while only its handle refers to it (see `Handle` in `handle.rs`).
pub(super) fn copy_context(py: Python<'_>) -> PyResult<Obj> {
    // SAFETY: attached; PyContext_CopyCurrent returns a new reference or
    // NULL with an exception set.
    let ctx = unsafe { Bound::from_owned_ptr_or_err(py, PyContext_CopyCurrent()).map(Bound::unbind) }?;
    Ok(untracked(ctx))
}

/// Put `obj` back in the garbage collector's sight (it is being handed to
/// Python code, which may store it anywhere).
pub(super) fn tracked<'py>(obj: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    retrack(obj.py(), obj.as_ptr());
    obj.clone()
}

pub(super) fn retrack(_py: Python<'_>, obj: *mut ffi::PyObject) {
    // SAFETY: attached (the token); `obj` is a live object of a GC type;
    // tracking is done only if it is not tracked already, as the API
    // requires.
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj) == 0 {
            ffi::PyObject_GC_Track(obj.cast());
        }
    }
}

/// Take a new handle out of the garbage collector's sight (see `Handle` in `handle.rs`).
pub(super) fn untracked(h: Obj) -> Obj {
    // SAFETY: `h` is a live object of a GC type that we just created;
    // untracking it only stops the collector from visiting it (PyO3's
    // dealloc untracks again, which is a no-op).
    unsafe { ffi::PyObject_GC_UnTrack(h.as_ptr().cast()) };
    h
}

/// A handle's arguments. None or one (most callbacks: a task's step, a
/// future's done callback) are kept as they are, so neither making nor
/// running the handle builds a tuple.
pub(crate) enum Args {
    Zero,
    One(Obj),
    Many(Py<PyTuple>),
}

impl Args {
    pub(crate) fn from_tuple(py: Python<'_>, t: Py<PyTuple>) -> Args {
        let b = t.bind(py);
        match b.len() {
            0 => Args::Zero,
            1 => Args::One(b.get_item(0).expect("one item").unbind()),
            _ => Args::Many(t),
        }
    }

    pub(super) fn to_tuple(&self, py: Python<'_>) -> PyResult<Py<PyTuple>> {
        Ok(match self {
            Args::Zero => PyTuple::empty(py).unbind(),
            Args::One(a) => PyTuple::new(py, [a.bind(py)])?.unbind(),
            Args::Many(t) => t.clone_ref(py),
        })
    }

    pub(super) fn clone_ref(&self, py: Python<'_>) -> Args {
        match self {
            Args::Zero => Args::Zero,
            Args::One(a) => Args::One(a.clone_ref(py)),
            Args::Many(t) => Args::Many(t.clone_ref(py)),
        }
    }

    pub(super) fn visit(&self, visit: &pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        match self {
            Args::Zero => Ok(()),
            Args::One(a) => visit.call(a),
            Args::Many(t) => visit.call(t),
        }
    }

    /// `cb(*args)`.
    pub(super) fn call(&self, py: Python<'_>, cb: &Bound<'_, PyAny>) -> PyResult<()> {
        let r = match self {
            // SAFETY: attached; `cb` is live for the call.
            Args::Zero => unsafe { ffi::PyObject_CallNoArgs(cb.as_ptr()) },
            // SAFETY: attached; `cb` and the argument are live for the call.
            Args::One(a) => unsafe { ffi::PyObject_CallOneArg(cb.as_ptr(), a.as_ptr()) },
            Args::Many(t) => return cb.call1(t.bind(py)).map(drop),
        };
        // SAFETY: `r` is a new reference or NULL with an exception set.
        unsafe { Bound::from_owned_ptr_or_err(py, r) }.map(drop)
    }
}

/// Call `cb(*args)` inside `ctx`, as `ctx.run(cb, *args)` does.
pub(super) fn run_in_context<'py>(py: Python<'py>, ctx: &Bound<'py, PyAny>, cb: &Bound<'py, PyAny>, args: &Args) -> PyResult<()> {
    // SAFETY: attached; `ctx` is a live object (a contextvars.Context, as
    // checked when the handle was made). Enter fails (with an exception
    // set) if the context is already entered, as Context.run does.
    if unsafe { PyContext_Enter(ctx.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let r = args.call(py, cb);
    // SAFETY: exiting the context entered above, in the same thread.
    if unsafe { PyContext_Exit(ctx.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    r
}

/// Whether `context` is a `contextvars.Context` (what a native handle
/// runs in). asyncio's own handles take any object and call its `run`.
pub(super) fn is_context(context: &Obj) -> bool {
    // SAFETY: attached (the caller holds an `Obj`'s Python); a type check
    // on a live object.
    unsafe { ffi::PyContext_CheckExact(context.as_ptr()) != 0 }
}

pub(super) fn check_context(py: Python<'_>, context: Option<Obj>) -> PyResult<Obj> {
    match context {
        None => copy_context(py),
        Some(c) => {
            // SAFETY: attached; a type check on a live object.
            if unsafe { ffi::PyContext_CheckExact(c.as_ptr()) } == 0 {
                return Err(PyTypeError::new_err(format!(
                    "an instance of Context was expected, got {}",
                    c.bind(py).get_type().name()?
                )));
            }
            Ok(c)
        }
    }
}

/// What a handle calls, and in which context; taken away once it ran, was
/// cancelled, or its loop closed.
pub(super) struct Call {
    pub(super) callback: Obj,
    pub(super) args: Args,
    pub(super) context: Obj,
}

impl Drop for Call {
    fn drop(&mut self) {
        // A context copy we untracked must be tracked again before it can
        // be freed (CPython's context dealloc untracks unconditionally).
        // SAFETY: a Call lives only inside an Entry and is dropped attached:
        // by a run, cancel or tp_clear, `call_soon` setting the entry up
        // again, its loop's close or tp_clear, or the last handle's or ready
        // queue's reference to the entry going, all of which run attached.
        let py = unsafe { Python::assume_attached() };
        retrack(py, self.context.as_ptr());
    }
}
