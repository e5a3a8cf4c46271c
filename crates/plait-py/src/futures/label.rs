//! Where a future comes from, for `plait.debug`: the name of the callable
//! it runs and the `file:line` it was submitted from.
//!
//! Executors label each future as it is submitted (`ThreadPoolExecutor`,
//! `ProcessPoolExecutor`, `map`, `schedule`, `plait.process.Pool`), so the
//! label is on the submit path and must stay cheap: the callable's
//! `__qualname__` is read as a string (no formatting), and the call site
//! comes from the interpreter's frames through the C API, skipping frames of
//! plait's own package (its `submit` wrappers) to reach the caller's. The
//! last site computed is remembered per thread, keyed by the code object
//! and the instruction offset, so a loop that submits from one line formats
//! its `file:line` once.

use std::cell::RefCell;

use plait_core::debug::Probe;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};

/// The longest repr used as a name (a callable without `__qualname__`).
const MAX_REPR: usize = 120;

/// A future's label, computed once and given to every future of a `map`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Label {
    pub name: String,
    pub site: String,
}

impl Label {
    /// The label of a call of `func` submitted from the calling Python code.
    pub(crate) fn of_call(func: &Bound<'_, PyAny>) -> Label {
        Label { name: callable_name(func), site: call_site(func.py()) }
    }

    /// Put it on `probe` (the first label a probe gets stays).
    pub(crate) fn apply(&self, probe: &Probe) {
        probe.label(Some(self.name.clone()), self.site.clone());
    }

    /// Put it on `probe`, consuming it (no copy).
    pub(crate) fn apply_owned(self, probe: &Probe) {
        probe.label(Some(self.name), self.site);
    }
}

thread_local! {
    /// The label for the futures submitted by the call in progress in this
    /// thread (see [`submitting_as`]).
    static SUBMITTING_AS: RefCell<Option<Label>> = const { RefCell::new(None) };
}

/// Run `submit` (a call of an executor's `submit` method) with `label`
/// for the futures it makes: `map` submits through the executor's Python
/// method, whose frames would otherwise name the wrong call site.
pub(crate) fn submitting_as<T>(label: &Label, submit: impl FnOnce() -> T) -> T {
    let previous = SUBMITTING_AS.with_borrow_mut(|s| s.replace(label.clone()));
    let r = submit();
    SUBMITTING_AS.with_borrow_mut(|s| *s = previous);
    r
}

/// Label `probe` as running `func`, submitted from the calling Python code
/// (or as [`submitting_as`] says). Does nothing when tracking is off
/// (`plait.debug`'s baseline).
#[inline]
pub(crate) fn label_call(probe: &Probe, func: &Bound<'_, PyAny>) {
    if !plait_core::debug::tracking() {
        return;
    }
    match SUBMITTING_AS.with_borrow(|s| s.clone()) {
        Some(l) => l.apply_owned(probe),
        None => Label::of_call(func).apply_owned(probe),
    }
}

/// The callable's `__qualname__`; for a `functools.partial` (or anything
/// with `__wrapped__`) that of what it wraps; else its (shortened) repr.
pub(crate) fn callable_name(func: &Bound<'_, PyAny>) -> String {
    let py = func.py();
    let mut f = func.clone();
    // A partial of a partial of ...: a few levels are plenty.
    for _ in 0..4 {
        if let Ok(Some(q)) = f.getattr_opt(intern!(py, "__qualname__")) {
            if let Ok(s) = q.cast::<PyString>() {
                if let Ok(s) = s.to_str() {
                    return s.to_owned();
                }
            }
        }
        let inner = if f.is_instance(partial_type(py)).unwrap_or(false) {
            f.getattr(intern!(py, "func")).ok()
        } else {
            f.getattr_opt(intern!(py, "__wrapped__")).ok().flatten()
        };
        match inner {
            Some(inner) => f = inner,
            None => break,
        }
    }
    let mut r = func.repr().map(|r| r.to_string()).unwrap_or_else(|_| "<callable>".to_owned());
    if r.len() > MAX_REPR {
        let mut cut = MAX_REPR;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r.truncate(cut);
        r.push_str("...");
    }
    r
}

fn partial_type(py: Python<'_>) -> &Bound<'_, PyType> {
    static PARTIAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    PARTIAL
        .get_or_init(py, || {
            py.import("functools")
                .and_then(|m| m.getattr("partial"))
                .and_then(|t| t.cast_into::<PyType>().map_err(Into::into))
                .map(Bound::unbind)
                .unwrap_or_else(|_| py.get_type::<pyo3::types::PyNone>().unbind())
        })
        .bind(py)
}

/// The directory of plait's Python package, with a trailing `/`.
fn package_dir(py: Python<'_>) -> &str {
    static DIR: PyOnceLock<String> = PyOnceLock::new();
    DIR.get_or_init(py, || {
        let file: Option<String> =
            py.import("plait").and_then(|m| m.getattr("__file__")).and_then(|f| f.extract()).ok();
        match file.as_deref().and_then(|f| f.rsplit_once('/')) {
            Some((dir, _)) => format!("{dir}/"),
            None => "\0".to_owned(), // matches no file name
        }
    })
}

thread_local! {
    /// The last site computed in this thread: (code object, instruction
    /// offset) and its text. The code object is compared by address only;
    /// it was alive when the entry was made, and an entry outlived by its
    /// code object is at worst a wrong label if another code object takes
    /// the same address and offset.
    static LAST_SITE: RefCell<(usize, i32, String)> = const { RefCell::new((0, -1, String::new())) };
}

/// `file:line` of the innermost Python frame of the calling thread that is
/// not in plait's package; empty if there is none (a call from plait's own
/// threads, e.g. the timer).
// MERGE: use crate::debug::site (the lead swaps in the shared helper).
pub(crate) fn call_site(py: Python<'_>) -> String {
    let pkg = package_dir(py);
    // SAFETY: attached (we hold `py`). PyEval_GetFrame returns a borrowed
    // frame of this thread (or NULL); PyFrame_GetBack and PyFrame_GetCode
    // return new references, released below; co_filename is read as a
    // Python attribute of a live code object.
    unsafe {
        let mut frame = ffi::PyEval_GetFrame();
        if frame.is_null() {
            return String::new();
        }
        ffi::Py_INCREF(frame.cast());
        let mut out = String::new();
        while !frame.is_null() {
            let code = ffi::PyFrame_GetCode(frame);
            let lasti = ffi::PyFrame_GetLasti(frame);
            let key = code as usize;
            let hit = LAST_SITE.with_borrow(|(k, l, s)| (*k == key && *l == lasti).then(|| s.clone()));
            if let Some(s) = hit {
                ffi::Py_DECREF(code.cast());
                out = s;
                break;
            }
            let name = Bound::from_owned_ptr(py, code.cast::<ffi::PyObject>())
                .getattr(intern!(py, "co_filename"))
                .ok()
                .and_then(|f| f.cast_into::<PyString>().ok());
            let fname = name.as_ref().and_then(|n| n.to_str().ok()).unwrap_or("?");
            if !fname.starts_with(pkg) {
                let line = ffi::PyFrame_GetLineNumber(frame);
                out = format!("{fname}:{line}");
                LAST_SITE.with_borrow_mut(|e| *e = (key, lasti, out.clone()));
                break;
            }
            let back = ffi::PyFrame_GetBack(frame);
            ffi::Py_DECREF(frame.cast());
            frame = back;
        }
        if !frame.is_null() {
            ffi::Py_DECREF(frame.cast());
        }
        out
    }
}

