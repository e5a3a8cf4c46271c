//! `Handle` and `TimerHandle`: asyncio's handle contract, made and run in
//! Rust, and the [`Entry`] a handle stands for.
//!
//! Lifetime: an entry holds the call until it runs, is cancelled, or its
//! loop closes, then lets go of it (so a handle that ran refers to nothing
//! that could make a cycle). The ready queue holds `call_soon` entries, not
//! handle objects, so a handle its caller dropped can stand for the next
//! call at once (`LoopCore::soon` rebinds pooled handles); the entry knows
//! which handle object, if any, currently stands for it, to name it in an
//! error report ([`handle_for`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use plait_core::spin::SpinMutex as Mutex;
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::call::{run_in_context, tracked, Call};
use super::core::LoopCore;
use super::{helper, Obj};

/// `asyncio.Handle`'s contract, made and run in Rust (`call_soon`).
///
/// The call itself lives in an [`Entry`]; the loop's ready queue holds
/// `call_soon` entries, not handle objects, so a handle its caller drops
/// (asyncio's C tasks and futures always do) is free to stand for the next
/// call at once (see `LoopCore::soon`).
///
/// Pending work is kept out of the garbage collector's sight: the ready
/// queue's entries are not Python objects, and timers and handles made
/// outside the pool are untracked, as is the context copy a handle makes.
/// A loop holding a million pending callbacks would otherwise make every
/// collection walk them all (that once cost `call_soon` three quarters of
/// its time). That is safe because an entry lets go of its callback,
/// arguments and context once it ran or was cancelled (or its loop
/// closed): a cycle through it can only exist while the loop still holds
/// it. `get_context()` hands the context to Python code, so it puts the
/// handle and its context back in the collector's sight first. (So
/// `get_context()` on a handle that ran returns None.)
#[pyclass(module = "plait.loop", name = "Handle", frozen, subclass, weakref)]
pub struct Handle {
    /// What this handle stands for. `call_soon`'s handles are rebound to a
    /// new entry when they are reused (see `LoopCore::soon`); that happens
    /// only while nothing but the loop's pool refers to the handle.
    e: std::cell::UnsafeCell<Arc<Entry>>,
}

// SAFETY: the entry is only replaced (`Handle::rebind`) while the loop's
// pool holds the sole reference to the handle (no other reference, no weak
// reference) and the thread is attached: no other thread, and no other
// code in this one, can be reading it then. Everything else reads it.
unsafe impl Sync for Handle {}

impl std::ops::Deref for Handle {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        // SAFETY: see `unsafe impl Sync for Handle`: no replacement can
        // happen while a reference to the handle (ours) exists.
        unsafe { &*self.e.get() }
    }
}

impl Handle {
    pub(super) fn wrap(e: Arc<Entry>) -> Self {
        Handle { e: std::cell::UnsafeCell::new(e) }
    }

    pub(super) fn entry(&self) -> &Arc<Entry> {
        // SAFETY: as in `deref`.
        unsafe { &*self.e.get() }
    }

    /// Point the handle at `e`, returning the entry it stood for.
    ///
    /// # Safety
    /// Only while nothing but the caller refers to the handle object
    /// (refcount 1, no weak reference), attached.
    pub(super) unsafe fn rebind(&self, e: Arc<Entry>) -> Arc<Entry> {
        // SAFETY: exclusive, by the caller's contract.
        unsafe { std::mem::replace(&mut *self.e.get(), e) }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The entry may outlive its handle (pending in the ready queue):
        // it must not point at a freed object.
        self.disown(self);
    }
}

/// What a handle stands for: the call, its state, and (for a pending
/// `call_soon`) the loop's ready queue's own reference.
pub struct Entry {
    pub(super) call: Mutex<Option<Call>>,
    pub(super) loop_: Obj,
    pub(super) cancelled: AtomicBool,
    /// Set on a `TimerHandle` while it is in the loop's heap.
    pub(super) scheduled: AtomicBool,
    /// A reader's or writer's handle: it runs each time its file is ready
    /// (until cancelled), so it keeps what it calls, and is tracked by the
    /// garbage collector like any object.
    pub(super) persistent: bool,
    /// Only a `TimerHandle`'s.
    pub(super) when: f64,
    /// The `Handle` that stands for this entry, if one does (its error
    /// report names it); set and cleared attached. Keyed by the address
    /// of the Rust `Handle` value (cleared by its drop).
    pub(super) owner: std::sync::atomic::AtomicPtr<ffi::PyObject>,
    /// The Python object of `owner` (valid while `owner` is set).
    pub(super) owner_obj: std::sync::atomic::AtomicPtr<ffi::PyObject>,
}

impl Entry {
    pub(super) fn new(call: Call, loop_: Obj, when: f64, persistent: bool) -> Self {
        Entry {
            call: Mutex::new(Some(call)),
            loop_,
            cancelled: AtomicBool::new(false),
            scheduled: AtomicBool::new(false),
            persistent,
            when,
            owner: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            owner_obj: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    pub(super) fn do_cancel(&self) -> bool {
        if self.cancelled.swap(true, Ordering::AcqRel) {
            return false;
        }
        // Dropped after the lock is released: a decref may run __del__.
        let gone = self.call.lock().take();
        drop(gone);
        true
    }

    /// Run the callback. An exception other than SystemExit and
    /// KeyboardInterrupt goes to the loop's exception handler, naming the
    /// handle `report_as` gives.
    pub(super) fn run<'py>(&self, py: Python<'py>, report_as: impl FnOnce() -> PyResult<Bound<'py, PyAny>>) -> PyResult<()> {
        if self.cancelled.load(Ordering::Acquire) {
            return Ok(());
        }
        // A handle runs once: what it calls is taken out now. (So a handle
        // that ran or was cancelled refers to nothing that could make a
        // cycle, and one that is pending is the loop's until it runs.)
        let (r, cb, args) = if self.persistent {
            let Some((cb, args, ctx)) = self.call.lock().as_ref().map(|c| (c.callback.clone_ref(py), c.args.clone_ref(py), c.context.clone_ref(py))) else {
                return Ok(());
            };
            (run_in_context(py, ctx.bind(py), cb.bind(py), &args), cb, args)
        } else {
            let Some(call) = self.call.lock().take() else {
                return Ok(());
            };
            let r = run_in_context(py, call.context.bind(py), call.callback.bind(py), &call.args);
            if r.is_ok() {
                drop(call);
                return Ok(());
            }
            let (cb, args) = (call.callback.clone_ref(py), call.args.clone_ref(py));
            drop(call);
            (r, cb, args)
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.is_instance_of::<PySystemExit>(py) || e.is_instance_of::<PyKeyboardInterrupt>(py) => Err(e),
            Err(e) => {
                helper(py, "report_callback_error")?.call1((report_as()?, e.into_value(py), cb, args.to_tuple(py)?))?;
                Ok(())
            }
        }
    }
}

impl Handle {
    pub(super) fn run(slf: &Bound<'_, Self>) -> PyResult<()> {
        let e: &Entry = slf.get();
        e.run(slf.py(), || Ok(slf.clone().into_any()))
    }

    /// Record `obj` (this handle's Python object) as the one that stands
    /// for its entry.
    pub(super) fn own(&self, obj: *mut ffi::PyObject) {
        self.owner_obj.store(obj, Ordering::Release);
        self.owner.store((self as *const Handle).cast_mut().cast(), Ordering::Release);
    }
}

impl Entry {
    /// Forget `h` as the handle that stands for this entry, if it is.
    pub(super) fn disown(&self, h: &Handle) {
        let _ = self.owner.compare_exchange((h as *const Handle).cast_mut().cast(), std::ptr::null_mut(), Ordering::AcqRel, Ordering::Acquire);
    }
}

#[pymethods]
impl Handle {
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let h = slf.get();
        if h.do_cancel() && h.scheduled.load(Ordering::Acquire) {
            if let Ok(core) = h.loop_.bind(slf.py()).cast::<LoopCore>() {
                core.get().timer_cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    fn get_context(slf: &Bound<'_, Self>) -> Option<Obj> {
        let ctx = slf.get().call.lock().as_ref().map(|c| c.context.clone_ref(slf.py()))?;
        tracked(slf.as_any());
        Some(tracked(ctx.bind(slf.py())).unbind())
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        // What the entry holds is this handle's to report only while the
        // handle is the entry's sole owner: a pending `call_soon` entry is
        // also the loop's (and stays out of the collector's sight, like the
        // loop's other pending work).
        if Arc::strong_count(self.entry()) != 1 {
            return Ok(());
        }
        visit.call(&self.loop_)?;
        if let Some(g) = self.call.try_lock() {
            if let Some(c) = &*g {
                visit.call(&c.callback)?;
                c.args.visit(&visit)?;
                visit.call(&c.context)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        if Arc::strong_count(self.entry()) != 1 {
            return;
        }
        let gone = self.call.lock().take();
        drop(gone);
    }

    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        Handle::run(slf)
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Obj> {
        self.call.lock().as_ref().map(|c| c.callback.clone_ref(py))
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> PyResult<Option<Py<PyTuple>>> {
        let args = self.call.lock().as_ref().map(|c| c.args.clone_ref(py));
        args.map(|a| a.to_tuple(py)).transpose()
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    #[getter]
    fn _context(slf: &Bound<'_, Self>) -> Option<Obj> {
        Handle::get_context(slf)
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Obj {
        self.loop_.clone_ref(py)
    }

    /// Only debug mode records where a handle was made (and then asyncio's
    /// own handles are used).
    #[getter]
    fn _source_traceback(&self) -> Option<Obj> {
        None
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        helper(slf.py(), "handle_repr")?.call1((slf,))?.extract()
    }
}

/// `asyncio.TimerHandle`'s contract (`call_later`, `call_at`).
#[pyclass(module = "plait.loop", name = "TimerHandle", frozen, extends = Handle)]
pub struct TimerHandle {
    /// What `call_at` was given when it is not a float (an int, a bool, a
    /// Fraction), which `when()` returns as given, as asyncio's does
    /// (aiohttp schedules at whole seconds); None for a float.
    pub(super) when_int: Option<Obj>,
}

#[pymethods]
impl TimerHandle {
    fn when(slf: PyRef<'_, Self>) -> PyResult<Obj> {
        Self::_when(slf)
    }

    #[getter]
    fn _when(slf: PyRef<'_, Self>) -> PyResult<Obj> {
        let py = slf.py();
        match &slf.when_int {
            Some(w) => Ok(w.clone_ref(py)),
            None => Ok(pyo3::types::PyFloat::new(py, slf.as_super().when).into_any().unbind()),
        }
    }

    #[getter]
    fn _scheduled(slf: PyRef<'_, Self>) -> bool {
        slf.as_super().scheduled.load(Ordering::Acquire)
    }

    fn __hash__(slf: PyRef<'_, Self>) -> isize {
        let h = slf.as_super().when.to_bits();
        (h ^ (h >> 32)) as isize
    }

    fn __richcmp__(slf: PyRef<'_, Self>, other: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> PyResult<Obj> {
        let py = other.py();
        let Ok(o) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let (a, b) = (slf.as_super(), o.borrow());
        let b = b.as_super();
        // What the handles call, taken out of their locks before any
        // Python comparison runs.
        let what = |h: &Handle| h.call.lock().as_ref().map(|c| (c.callback.clone_ref(py), c.args.clone_ref(py)));
        let same = || {
            a.when == b.when
                && a.cancelled.load(Ordering::Acquire) == b.cancelled.load(Ordering::Acquire)
                && match (what(a), what(b)) {
                    (Some((xc, xa)), Some((yc, ya))) => {
                        xc.bind(py).eq(yc.bind(py)).unwrap_or(false)
                            && match (xa.to_tuple(py), ya.to_tuple(py)) {
                                (Ok(x), Ok(y)) => x.bind(py).eq(y.bind(py)).unwrap_or(false),
                                _ => false,
                            }
                    }
                    (None, None) => true,
                    _ => false,
                }
        };
        use pyo3::basic::CompareOp::*;
        let r = match op {
            Lt => a.when < b.when,
            Gt => a.when > b.when,
            Le => a.when < b.when || same(),
            Ge => a.when > b.when || same(),
            Eq => same(),
            Ne => !same(),
        };
        Ok(r.into_pyobject(py)?.to_owned().into_any().unbind())
    }
}

/// The handle that stands for a `call_soon` entry (to name it in a report):
/// the one made for it if it still does, or a new one.
pub(super) fn handle_for<'py>(py: Python<'py>, e: &Arc<Entry>) -> PyResult<Bound<'py, PyAny>> {
    let obj = e.owner_obj.load(Ordering::Acquire);
    if !e.owner.load(Ordering::Acquire).is_null() && !obj.is_null() {
        // SAFETY: attached; `owner` is cleared when that handle is freed
        // or rebound (both attached), so the object is alive.
        return Ok(unsafe { Bound::from_borrowed_ptr(py, obj) });
    }
    let h = Bound::new(py, Handle::wrap(Arc::clone(e)))?;
    h.get().own(h.as_ptr());
    Ok(h.into_any())
}
