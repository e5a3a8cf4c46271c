//! The raw C-API helpers, in one place.
//!
//! A few hot calls skip PyO3's call machinery (the panic trampoline, its
//! thread-local bookkeeping, generic argument extraction): a plain C-ABI
//! function is installed on the class as a method descriptor and handles
//! the common case itself, forwarding everything else, unchanged, to the
//! method it replaced (see `queue/fastcall.rs`, `loop/fastcall.rs`,
//! `loop/transport.rs`). This module holds what they share:
//!
//! * [`install_method`]: put a C-ABI method descriptor on a type;
//! * [`replace_method`]: the same, keeping the method it replaces as the
//!   slow path;
//! * [`fastcall_args`] and [`forward`]: read a `METH_FASTCALL` call's
//!   arguments, and pass them on to the slow path as they came;
//! * the declarations pyo3-ffi lacks: the `PyContext_*` calls (the loop's
//!   handles copy, enter and exit contexts without a Python call) and
//!   `PyMethod_Type` / `PyMethod_Function` (is a bound method still the
//!   function we know?).
//!
//! Every function here runs attached to the interpreter.

use std::ffi::CStr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

extern "C" {
    /// A new reference to a copy of the current context, or NULL with an
    /// exception set.
    pub fn PyContext_CopyCurrent() -> *mut ffi::PyObject;
    /// Make `ctx` the current context; -1 with an exception set if it is
    /// entered already.
    pub fn PyContext_Enter(ctx: *mut ffi::PyObject) -> std::os::raw::c_int;
    /// Leave `ctx`, entered by this thread with `PyContext_Enter`.
    pub fn PyContext_Exit(ctx: *mut ffi::PyObject) -> std::os::raw::c_int;
    /// The type of bound methods (`types.MethodType`).
    pub static mut PyMethod_Type: ffi::PyTypeObject;
    /// A bound method's function (borrowed).
    pub fn PyMethod_Function(method: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// Put `meth` on `ty` as the method `name`: a method descriptor over a
/// `PyMethodDef` that lives as long as the process.
pub fn install_method(
    ty: &Bound<'_, PyType>,
    name: &'static CStr,
    meth: ffi::PyMethodDefPointer,
    flags: std::os::raw::c_int,
    doc: Option<&'static CStr>,
) -> PyResult<()> {
    let py = ty.py();
    // The descriptor keeps a pointer to its PyMethodDef for as long as the
    // class lives; the classes we patch live as long as the process, so
    // leak it.
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: meth,
        ml_flags: flags,
        ml_doc: doc.map_or(std::ptr::null(), CStr::as_ptr),
    }));
    // SAFETY: `ty` is a live type object and `def` a valid, 'static
    // PyMethodDef; PyDescr_NewMethod returns a new reference or NULL with an
    // exception set, which from_owned_ptr_or_err turns into a PyErr.
    let descr = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(ty.as_type_ptr(), def))? };
    ty.setattr(name.to_str().expect("method names are ASCII"), descr)
}

/// Replace `ty.<name>` by the fastcall function `f`, keeping the original
/// method in `slow` for [`forward`]. Done once: if `slow` is set already
/// (the module was initialised before), nothing changes.
pub fn replace_method(
    ty: &Bound<'_, PyType>,
    name: &'static CStr,
    doc: &'static CStr,
    f: ffi::PyCFunctionFastWithKeywords,
    slow: &PyOnceLock<Py<PyAny>>,
) -> PyResult<()> {
    let py = ty.py();
    let original = ty.getattr(name.to_str().expect("method names are ASCII"))?;
    if slow.set(py, original.unbind()).is_err() {
        return Ok(());
    }
    install_method(
        ty,
        name,
        ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: f },
        ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        Some(doc),
    )
}

/// How many keyword arguments a fastcall call has.
///
/// # Safety
/// `kwnames` is what CPython passed a `METH_FASTCALL | METH_KEYWORDS`
/// method: NULL or a tuple. The caller is attached.
#[inline]
pub unsafe fn fastcall_nkw(kwnames: *mut ffi::PyObject) -> usize {
    if kwnames.is_null() {
        0
    } else {
        // SAFETY: a tuple when not NULL (the caller's contract).
        unsafe { ffi::PyTuple_GET_SIZE(kwnames) as usize }
    }
}

/// A fastcall call's arguments: the `nargs` positional ones, then one value
/// per name in `kwnames`.
///
/// # Safety
/// `args`, `nargs` and `kwnames` are what CPython passed a
/// `METH_FASTCALL | METH_KEYWORDS` method (`args` valid for `nargs` plus
/// one entry per keyword name; it may be NULL when there are none), and the
/// slice is used only during that call. The caller is attached.
#[inline]
pub unsafe fn fastcall_args<'a>(args: *const *mut ffi::PyObject, nargs: usize, kwnames: *mut ffi::PyObject) -> &'a [*mut ffi::PyObject] {
    // SAFETY: forwarded contract.
    let total = nargs + unsafe { fastcall_nkw(kwnames) };
    if total == 0 || args.is_null() {
        return &[];
    }
    // SAFETY: `args` holds `total` valid pointers for the duration of the
    // call (the caller's contract).
    unsafe { std::slice::from_raw_parts(args, total) }
}

/// Call the slow path kept in `slow` with `slf` and the given arguments
/// (`nargs` positional, then the values of `kwnames`), returning what it
/// returns: a new reference, or NULL with an exception set. NULL (with no
/// exception) if `slow` was never set, which cannot happen for a method
/// installed by [`replace_method`].
///
/// # Safety
/// `slf` is a live object; `args` are live objects borrowed for the call,
/// `args.len()` being `nargs` plus the length of `kwnames` (NULL or a tuple
/// of str); the caller is attached.
pub unsafe fn forward(
    slow: &PyOnceLock<Py<PyAny>>,
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: &[*mut ffi::PyObject],
    nargs: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let mut buf: Vec<*mut ffi::PyObject> = Vec::with_capacity(args.len() + 1);
    buf.push(slf);
    buf.extend_from_slice(args);
    let Some(method) = slow.get(py) else {
        return std::ptr::null_mut();
    };
    // SAFETY: `method` is a live callable; `buf` holds self plus the
    // borrowed arguments for the duration of the call, `nargs + 1` of them
    // positional, the rest named by `kwnames`.
    unsafe { ffi::PyObject_Vectorcall(method.as_ptr(), buf.as_ptr(), nargs + 1, kwnames) }
}

/// A new reference to None, as a C function returns it.
#[inline]
pub fn none() -> *mut ffi::PyObject {
    // SAFETY: Py_None is a live object (immortal on 3.12+); returning it
    // needs a new reference, which Py_IncRef provides.
    unsafe {
        let none = ffi::Py_None();
        ffi::Py_IncRef(none);
        none
    }
}
