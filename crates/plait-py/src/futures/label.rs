//! Where a future comes from, for `plait.debug`: the name of the callable
//! it runs and the `file:line` it was submitted from.
//!
//! Executors label each future as it is submitted (`ThreadPoolExecutor`,
//! `ProcessPoolExecutor`, `map`, `schedule`, `plait.process.Pool`). The
//! call site is the primitives' creation site (`debug/site.rs`: the first
//! frame outside plait and the standard library's wrappers, cached per
//! line, shared as an `Arc`).
//!
//! **Deferred on the thread pool.** A thread pool's submit is a few hundred
//! nanoseconds; copying the callable's `__qualname__` there (an allocation,
//! and a free when the future goes) would add to it. So its submit only
//! *captures* the label ([`Pending`]: the callable and the shared site) and
//! the name is made later, attached, off the submitting thread's path: by
//! the worker thread when it starts the call, or by a thread about to wait
//! for the future. A future still queued that nobody waits for shows no
//! name yet. The process pool's submit (pickling, microseconds) labels at
//! once ([`label_call`]).

use std::cell::RefCell;
use std::sync::Arc;

use crate::debug::site::creation_site;

use plait_core::debug::Probe;
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
    pub site: Arc<str>,
}

impl Label {
    /// The label of a call of `func` submitted from the calling Python code.
    pub(crate) fn of_call(func: &Bound<'_, PyAny>) -> Label {
        Label { name: callable_name(func), site: creation_site(func.py()) }
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

/// A label captured at submit and made later (see the module doc).
pub(crate) enum Pending {
    /// A call of `func` submitted at `site`.
    Call { func: Py<PyAny>, site: Arc<str> },
    /// Made already, shared (every future of one `map`).
    Made(Arc<Label>),
}

impl Pending {
    /// Capture a call of `func` from the calling Python code (or the label
    /// [`submitting_as`] gives); `None` when tracking is off.
    #[inline]
    pub(crate) fn of_call(func: &Bound<'_, PyAny>) -> Option<Pending> {
        if !plait_core::debug::tracking() {
            return None;
        }
        if let Some(l) = SUBMITTING_AS.with_borrow(|s| s.clone()) {
            return Some(Pending::Made(Arc::new(l)));
        }
        Some(Pending::Call { func: func.clone().unbind(), site: creation_site(func.py()) })
    }

    /// Make the label and put it on `probe`. Runs Python code (attributes
    /// of the callable): call it with no lock held.
    pub(crate) fn apply(self, py: Python<'_>, probe: &Probe) {
        match self {
            Pending::Made(l) => l.apply(probe),
            Pending::Call { func, site } => probe.label(Some(callable_name(func.bind(py))), site),
        }
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
