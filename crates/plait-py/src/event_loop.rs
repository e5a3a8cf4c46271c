//! `plait.loop`'s Rust half: the asyncio event loop's hot path.
//!
//! `plait.loop.EventLoop` is a subclass of this `_LoopCore` and of
//! asyncio's own `_UnixSelectorEventLoop`: everything asyncio builds from
//! `add_reader`/`call_soon`/`call_at` (transports, servers, happy eyeballs,
//! sendfile, TLS, subprocesses, signals) is asyncio's code, running on this
//! core. The core owns what runs every iteration:
//!
//! * the ready queue and `call_soon` / `call_soon_threadsafe`, with handles
//!   ([`Handle`], [`TimerHandle`]) made and run in Rust;
//! * the timer heap and `call_later` / `call_at`;
//! * the selector ([`Selector`], epoll, with the `selectors.BaseSelector`
//!   API asyncio's code calls), polled detached from the interpreter;
//! * `run_forever`'s iterations (`_run_once`), `stop` and `time`.
//!
//! In debug mode `call_soon`/`call_at` make asyncio's own `Handle` and
//! `TimerHandle` (with their source tracebacks); the queue and the heap
//! take either kind, so debug mode behaves exactly as asyncio's.
//!
//! No Rust lock is held while Python code runs: every structure is locked
//! only to move handles in or out.

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

// The loop's structures are locked for a few instructions at a time, by the
// loop's thread almost always: the spin mutex, whose unlock is a plain
// store (parking_lot's is a second atomic read-modify-write).
use plait_core::spin::SpinMutex as Mutex;
use plait_core::reactor::{monotonic, Pace, Poller, TimerHeap, READ, WRITE};
use pyo3::exceptions::{PyKeyError, PyKeyboardInterrupt, PyRuntimeError, PySystemExit, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyTuple};

type Obj = Py<PyAny>;

extern "C" {
    fn PyContext_CopyCurrent() -> *mut ffi::PyObject;
    fn PyContext_Enter(ctx: *mut ffi::PyObject) -> std::os::raw::c_int;
    fn PyContext_Exit(ctx: *mut ffi::PyObject) -> std::os::raw::c_int;
}

/// `plait.loop`'s private helpers (repr, error reports, debug checks).
static HELPERS: PyOnceLock<Obj> = PyOnceLock::new();

fn helper<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let m = HELPERS.get_or_try_init(py, || py.import("plait._loop_helpers").map(|m| m.into_any().unbind()))?;
    m.bind(py).getattr(name)
}

/// A copy of the current context, out of the garbage collector's sight
/// while only its handle refers to it (see [`Handle`]).
fn copy_context(py: Python<'_>) -> PyResult<Obj> {
    // SAFETY: attached; PyContext_CopyCurrent returns a new reference or
    // NULL with an exception set.
    let ctx = unsafe { Bound::from_owned_ptr_or_err(py, PyContext_CopyCurrent()).map(Bound::unbind) }?;
    Ok(untracked(ctx))
}

/// Put `obj` back in the garbage collector's sight (it is being handed to
/// Python code, which may store it anywhere).
fn tracked<'py>(obj: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    retrack(obj.py(), obj.as_ptr());
    obj.clone()
}

fn retrack(_py: Python<'_>, obj: *mut ffi::PyObject) {
    // SAFETY: attached (the token); `obj` is a live object of a GC type;
    // tracking is done only if it is not tracked already, as the API
    // requires.
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj) == 0 {
            ffi::PyObject_GC_Track(obj.cast());
        }
    }
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

    fn to_tuple(&self, py: Python<'_>) -> PyResult<Py<PyTuple>> {
        Ok(match self {
            Args::Zero => PyTuple::empty(py).unbind(),
            Args::One(a) => PyTuple::new(py, [a.bind(py)])?.unbind(),
            Args::Many(t) => t.clone_ref(py),
        })
    }

    fn clone_ref(&self, py: Python<'_>) -> Args {
        match self {
            Args::Zero => Args::Zero,
            Args::One(a) => Args::One(a.clone_ref(py)),
            Args::Many(t) => Args::Many(t.clone_ref(py)),
        }
    }

    fn visit(&self, visit: &pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        match self {
            Args::Zero => Ok(()),
            Args::One(a) => visit.call(a),
            Args::Many(t) => visit.call(t),
        }
    }

    /// `cb(*args)`.
    fn call(&self, py: Python<'_>, cb: &Bound<'_, PyAny>) -> PyResult<()> {
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
fn run_in_context<'py>(py: Python<'py>, ctx: &Bound<'py, PyAny>, cb: &Bound<'py, PyAny>, args: &Args) -> PyResult<()> {
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

fn check_context(py: Python<'_>, context: Option<Obj>) -> PyResult<Obj> {
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

// ---- handles -----------------------------------------------------------------

/// What a handle calls, and in which context; taken away once it ran, was
/// cancelled, or its loop closed.
struct Call {
    callback: Obj,
    args: Args,
    context: Obj,
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
    fn wrap(e: Arc<Entry>) -> Self {
        Handle { e: std::cell::UnsafeCell::new(e) }
    }

    fn entry(&self) -> &Arc<Entry> {
        // SAFETY: as in `deref`.
        unsafe { &*self.e.get() }
    }

    /// Point the handle at `e`, returning the entry it stood for.
    ///
    /// # Safety
    /// Only while nothing but the caller refers to the handle object
    /// (refcount 1, no weak reference), attached.
    unsafe fn rebind(&self, e: Arc<Entry>) -> Arc<Entry> {
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
    call: Mutex<Option<Call>>,
    loop_: Obj,
    cancelled: AtomicBool,
    /// Set on a `TimerHandle` while it is in the loop's heap.
    scheduled: AtomicBool,
    /// A reader's or writer's handle: it runs each time its file is ready
    /// (until cancelled), so it keeps what it calls, and is tracked by the
    /// garbage collector like any object.
    persistent: bool,
    /// Only a `TimerHandle`'s.
    when: f64,
    /// The `Handle` that stands for this entry, if one does (its error
    /// report names it); set and cleared attached. Keyed by the address
    /// of the Rust `Handle` value (cleared by its drop).
    owner: std::sync::atomic::AtomicPtr<ffi::PyObject>,
    /// The Python object of `owner` (valid while `owner` is set).
    owner_obj: std::sync::atomic::AtomicPtr<ffi::PyObject>,
}

impl Entry {
    fn new(call: Call, loop_: Obj, when: f64, persistent: bool) -> Self {
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

    fn do_cancel(&self) -> bool {
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
    fn run<'py>(&self, py: Python<'py>, report_as: impl FnOnce() -> PyResult<Bound<'py, PyAny>>) -> PyResult<()> {
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
    fn run(slf: &Bound<'_, Self>) -> PyResult<()> {
        let e: &Entry = slf.get();
        e.run(slf.py(), || Ok(slf.clone().into_any()))
    }

    /// Record `obj` (this handle's Python object) as the one that stands
    /// for its entry.
    fn own(&self, obj: *mut ffi::PyObject) {
        self.owner_obj.store(obj, Ordering::Release);
        self.owner.store((self as *const Handle).cast_mut().cast(), Ordering::Release);
    }
}

impl Entry {
    /// Forget `h` as the handle that stands for this entry, if it is.
    fn disown(&self, h: &Handle) {
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
    /// The int `call_at` was given, which `when()` returns as given, as
    /// asyncio's does (aiohttp schedules at whole seconds); None for a float.
    when_int: Option<Obj>,
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

// ---- the selector ------------------------------------------------------------

struct Registration {
    key: Obj,
    data: Obj,
}

struct SelState {
    poller: Option<Poller>,
    keys: HashMap<RawFd, Registration>,
}

/// An epoll selector with `selectors.BaseSelector`'s API, which the loop
/// polls natively.
#[pyclass(module = "plait.loop", name = "Selector", frozen, subclass)]
pub struct Selector {
    st: Mutex<SelState>,
    epfd: RawFd,
    /// How many file objects are registered (read without the lock).
    count: AtomicUsize,
}

static SELECTOR_KEY: PyOnceLock<Obj> = PyOnceLock::new();

fn selector_key<'py>(py: Python<'py>) -> PyResult<&'py Bound<'py, PyAny>> {
    SELECTOR_KEY
        .get_or_try_init(py, || py.import("selectors")?.getattr("SelectorKey").map(Bound::unbind))
        .map(|k| k.bind(py))
}

/// `selectors._fileobj_to_fd`.
fn fileobj_to_fd(fileobj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd: i64 = if fileobj.is_instance_of::<PyInt>() {
        fileobj.extract()?
    } else {
        match fileobj.call_method0("fileno").and_then(|f| f.extract::<i64>()) {
            Ok(fd) => fd,
            Err(_) => return Err(PyValueError::new_err(format!("Invalid file object: {}", fileobj.repr()?))),
        }
    };
    if fd < 0 || fd > i32::MAX as i64 {
        return Err(PyValueError::new_err(format!("Invalid file descriptor: {fd}")));
    }
    Ok(fd as RawFd)
}

impl Selector {
    /// The fd of `fileobj`, or of the registered key whose file object it
    /// is (a closed file no longer has a fileno).
    fn lookup(&self, fileobj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
        match fileobj_to_fd(fileobj) {
            Ok(fd) => Ok(fd),
            Err(e) => {
                let py = fileobj.py();
                let st = self.st.lock();
                for (fd, reg) in st.keys.iter() {
                    if reg.key.bind(py).get_item(0)?.is(fileobj) {
                        return Ok(*fd);
                    }
                }
                Err(e)
            }
        }
    }

    /// The interest and (reader, writer) handles registered for `fileobj`,
    /// if it is registered (what `get_map().get(fileobj)` finds).
    fn entry<'py>(&self, fileobj: &Bound<'py, PyAny>) -> Option<(u32, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let py = fileobj.py();
        let fd = self.lookup(fileobj).ok()?;
        let (events, data) = {
            let st = self.st.lock();
            let reg = st.keys.get(&fd)?;
            (st.poller.as_ref()?.interest(fd)?, reg.data.clone_ref(py).into_bound(py))
        };
        Some((events, data.get_item(0).ok()?, data.get_item(1).ok()?))
    }

    fn check_events(events: u32) -> PyResult<()> {
        if events == 0 || events & !(READ | WRITE) != 0 {
            return Err(PyValueError::new_err(format!("Invalid events: {events}")));
        }
        Ok(())
    }
}

#[pymethods]
impl Selector {
    #[new]
    fn new() -> PyResult<Self> {
        let poller = Poller::new()?;
        let epfd = poller.fd();
        Ok(Selector { st: Mutex::new(SelState { poller: Some(poller), keys: HashMap::new() }), epfd, count: AtomicUsize::new(0) })
    }

    #[pyo3(signature = (fileobj, events, data = None))]
    fn register(&self, fileobj: &Bound<'_, PyAny>, events: u32, data: Option<Obj>) -> PyResult<Obj> {
        let py = fileobj.py();
        Self::check_events(events)?;
        let fd = fileobj_to_fd(fileobj)?;
        let data = data.unwrap_or_else(|| py.None());
        let key = selector_key(py)?.call1((fileobj, fd, events, data.clone_ref(py)))?.unbind();
        let mut st = self.st.lock();
        if st.keys.contains_key(&fd) {
            drop(st);
            return Err(PyKeyError::new_err(format!("{} (FD {fd}) is already registered", fileobj.repr()?)));
        }
        let Some(poller) = st.poller.as_mut() else {
            return Err(PyRuntimeError::new_err("the selector is closed"));
        };
        poller.register(fd, events)?;
        st.keys.insert(fd, Registration { key: key.clone_ref(py), data });
        self.count.store(st.keys.len(), Ordering::Relaxed);
        Ok(key)
    }

    fn unregister(&self, fileobj: &Bound<'_, PyAny>) -> PyResult<Obj> {
        let fd = self.lookup(fileobj)?;
        let mut st = self.st.lock();
        let Some(reg) = st.keys.remove(&fd) else {
            drop(st);
            return Err(PyKeyError::new_err(format!("{} is not registered", fileobj.repr()?)));
        };
        if let Some(p) = st.poller.as_mut() {
            p.unregister(fd);
        }
        self.count.store(st.keys.len(), Ordering::Relaxed);
        drop(st);
        let Registration { key, data } = reg;
        drop(data);
        Ok(key)
    }

    #[pyo3(signature = (fileobj, events, data = None))]
    fn modify(&self, fileobj: &Bound<'_, PyAny>, events: u32, data: Option<Obj>) -> PyResult<Obj> {
        let py = fileobj.py();
        Self::check_events(events)?;
        let fd = self.lookup(fileobj)?;
        let data = data.unwrap_or_else(|| py.None());
        let old_obj = {
            let st = self.st.lock();
            match st.keys.get(&fd) {
                Some(r) => r.key.clone_ref(py),
                None => {
                    drop(st);
                    return Err(PyKeyError::new_err(format!("{} is not registered", fileobj.repr()?)));
                }
            }
        };
        let old_file = old_obj.bind(py).get_item(0)?;
        let key = selector_key(py)?.call1((old_file, fd, events, data.clone_ref(py)))?.unbind();
        let mut st = self.st.lock();
        let changed = st.poller.as_ref().and_then(|p| p.interest(fd)) != Some(events);
        if changed {
            if let Some(p) = st.poller.as_mut() {
                p.modify(fd, events)?;
            }
        }
        let old = st.keys.insert(fd, Registration { key: key.clone_ref(py), data });
        drop(st);
        drop(old);
        Ok(key)
    }

    fn get_key(&self, fileobj: &Bound<'_, PyAny>) -> PyResult<Obj> {
        let py = fileobj.py();
        let fd = self.lookup(fileobj)?;
        match self.st.lock().keys.get(&fd) {
            Some(r) => Ok(r.key.clone_ref(py)),
            None => Err(PyKeyError::new_err(format!("{} is not registered", fileobj.repr()?))),
        }
    }

    fn get_map<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, SelectorMapping>> {
        Bound::new(slf.py(), SelectorMapping { selector: slf.clone().unbind() })
    }

    /// Wait (detached) and return `[(key, events), ...]`, as
    /// `selectors.BaseSelector.select` does.
    #[pyo3(signature = (timeout = None))]
    fn select(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Vec<(Obj, u32)>> {
        let ms = match timeout {
            None => -1,
            Some(t) if t <= 0.0 => 0,
            Some(t) => (t * 1e3).ceil().min(i32::MAX as f64) as i32,
        };
        let ready = self.poll(py, ms)?;
        let st = self.st.lock();
        Ok(ready.into_iter().filter_map(|(fd, m)| st.keys.get(&fd).map(|r| (r.key.clone_ref(py), m))).collect())
    }

    fn close(&self) {
        let mut st = self.st.lock();
        let keys = std::mem::take(&mut st.keys);
        st.poller = None;
        self.count.store(0, Ordering::Relaxed);
        drop(st);
        drop(keys);
    }

    fn fileno(&self) -> RawFd {
        self.epfd
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, _a: Obj, _b: Obj, _c: Obj) {
        self.close();
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        // The keys' data are the loop's reader and writer handles, which
        // refer back to the loop: the collector must see them.
        if let Some(st) = self.st.try_lock() {
            for r in st.keys.values() {
                visit.call(&r.key)?;
                visit.call(&r.data)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let keys = std::mem::take(&mut self.st.lock().keys);
        drop(keys);
    }
}

impl Selector {
    /// Wait up to `ms` for readiness; detached unless `ms == 0`. EINTR is
    /// returned as no events (the caller runs signal handlers).
    fn poll(&self, py: Python<'_>, ms: i32) -> PyResult<Vec<(RawFd, u32)>> {
        let mut out = Vec::new();
        self.poll_into(py, ms, &mut out)?;
        Ok(out.into_iter().map(|(fd, m, _)| (fd, m)).collect())
    }

    /// Wait up to `ms` for readiness (detached unless `ms == 0`) and append
    /// each ready descriptor with its mask and registered data to `out`,
    /// without allocating in the steady state. EINTR is no events (the
    /// caller runs signal handlers).
    fn poll_into(&self, py: Python<'_>, ms: i32, out: &mut Vec<(RawFd, u32, Obj)>) -> PyResult<()> {
        let cap = {
            let st = self.st.lock();
            if st.poller.is_none() {
                return Err(PyRuntimeError::new_err("the selector is closed"));
            }
            st.keys.len().clamp(1, 1024)
        };
        let epfd = self.epfd;
        EPOLL_BUF.with(|cell| -> PyResult<()> {
            let mut raw = cell.borrow_mut();
            raw.clear();
            raw.reserve(cap);
            let ptr = raw.as_mut_ptr() as usize;
            let wait = move || {
                // SAFETY: `ptr` points at this thread's buffer with room for
                // `cap` events, alive and not otherwise used during the call
                // (the closure runs on this thread); the epoll fd stays open
                // while the selector is (closing it during a wait is the
                // caller's bug, and then epoll_wait fails with EBADF).
                unsafe { libc::epoll_wait(epfd, ptr as *mut libc::epoll_event, cap as libc::c_int, ms) }
            };
            let n = if ms == 0 { wait() } else { py.detach(wait) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    return Ok(());
                }
                return Err(e.into());
            }
            // SAFETY: epoll_wait initialised the first `n` (<= cap) entries.
            unsafe { raw.set_len(n as usize) };
            let st = self.st.lock();
            let Some(p) = st.poller.as_ref() else { return Ok(()) };
            for ev in raw.iter() {
                let fd = ev.u64 as RawFd;
                let Some(want) = p.interest(fd) else { continue };
                let mask = plait_core::reactor::readiness(ev.events, want);
                if mask != 0 {
                    if let Some(reg) = st.keys.get(&fd) {
                        out.push((fd, mask, reg.data.clone_ref(py)));
                    }
                }
            }
            Ok(())
        })
    }
}

thread_local! {
    /// epoll_wait's output buffer, one per thread (a loop runs on one).
    static EPOLL_BUF: std::cell::RefCell<Vec<libc::epoll_event>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `selector.get_map()`: a live read-only mapping of fd (or file object)
/// to key.
#[pyclass(module = "plait.loop", name = "_SelectorMapping", frozen)]
pub struct SelectorMapping {
    selector: Py<Selector>,
}

#[pymethods]
impl SelectorMapping {
    fn __len__(&self) -> usize {
        self.selector.get().st.lock().keys.len()
    }

    fn __getitem__(&self, fileobj: &Bound<'_, PyAny>) -> PyResult<Obj> {
        let py = fileobj.py();
        let sel = self.selector.get();
        let fd = sel.lookup(fileobj).map_err(|_| PyKeyError::new_err(format!("{} is not registered", fileobj.repr().map(|r| r.to_string()).unwrap_or_default())))?;
        match sel.st.lock().keys.get(&fd) {
            Some(r) => Ok(r.key.clone_ref(py)),
            None => Err(PyKeyError::new_err(format!("{} is not registered", fileobj.repr()?))),
        }
    }

    #[pyo3(signature = (fileobj, default = None))]
    fn get(&self, fileobj: &Bound<'_, PyAny>, default: Option<Obj>) -> PyResult<Obj> {
        let py = fileobj.py();
        match self.__getitem__(fileobj) {
            Ok(k) => Ok(k),
            Err(e) if e.is_instance_of::<PyKeyError>(py) => Ok(default.unwrap_or_else(|| py.None())),
            Err(e) => Err(e),
        }
    }

    fn __contains__(&self, fileobj: &Bound<'_, PyAny>) -> bool {
        self.__getitem__(fileobj).is_ok()
    }

    fn keys(&self) -> Vec<RawFd> {
        self.selector.get().st.lock().keys.keys().copied().collect()
    }

    fn values(&self, py: Python<'_>) -> Vec<Obj> {
        self.selector.get().st.lock().keys.values().map(|r| r.key.clone_ref(py)).collect()
    }

    fn items(&self, py: Python<'_>) -> Vec<(RawFd, Obj)> {
        self.selector.get().st.lock().keys.iter().map(|(fd, r)| (*fd, r.key.clone_ref(py))).collect()
    }

    fn __iter__(&self, py: Python<'_>) -> PyResult<Obj> {
        let keys = self.keys();
        Ok(pyo3::types::PyList::new(py, keys)?.try_iter()?.into_any().unbind())
    }
}

// ---- the loop ----------------------------------------------------------------

/// What the ready queue holds: a `call_soon` entry (its handle may be gone
/// already, or reused), or a handle object (a due timer, a reader or
/// writer, asyncio's own handles in debug mode).
enum Ready {
    Soon(Arc<Entry>),
    Obj(Obj),
}

struct LoopState {
    ready: VecDeque<Ready>,
    timers: TimerHeap<Obj>,
    /// `call_soon`'s handles, reused once nothing else refers to them.
    /// Most callers drop the handle at once (asyncio's C tasks and futures
    /// always do), so one handle object serves call after call, pending or
    /// not: a steady loop allocates none, and a burst (create_task of many
    /// coroutines) allocates none either, which keeps CPython's garbage
    /// collector, which counts allocations, from being set off by them.
    pool: Vec<Obj>,
}

/// How many handles the pool keeps.
const POOL_HANDLES: usize = 64;
/// How many pooled handles `call_soon` looks at for a free one.
const POOL_SCAN: usize = 4;

/// The Rust base of `plait.loop.EventLoop`.
#[pyclass(module = "plait.loop", name = "_LoopCore", subclass, frozen)]
pub struct LoopCore {
    st: Mutex<LoopState>,
    selector: std::sync::OnceLock<Py<Selector>>,
    stopping: AtomicBool,
    closed: AtomicBool,
    debug: AtomicBool,
    clock_resolution: AtomicU64,
    timer_cancelled: AtomicUsize,
    /// A subclass defines its own `time()`.
    time_overridden: AtomicBool,
    /// How many file objects the loop registers for itself (its self-pipe):
    /// more than this means someone watches I/O (see `run_once`).
    own_fds: AtomicUsize,
    /// `time` is set on the instance (mock.patch.object, a virtual clock);
    /// kept by `__setattr__`/`__delattr__`.
    time_patched: AtomicBool,
}

static HANDLE_TYPE: PyOnceLock<Obj> = PyOnceLock::new();

/// What `run_forever`'s iterations reuse, so that an iteration allocates
/// nothing: the previous (empty) batch and event list.
struct Scratch {
    spare: VecDeque<Ready>,
    events: Vec<(RawFd, u32, Obj)>,
    /// When I/O was last polled, and whether that poll found any.
    last_poll: u64,
    pace: Pace,
    busy_io: bool,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch { spare: VecDeque::new(), events: Vec::new(), last_poll: Pace::now(), pace: Pace::new(POLL_EVERY), busy_io: true }
    }
}

/// With callbacks ready, I/O is polled at most this often (see `run_once`).
const POLL_EVERY: std::time::Duration = std::time::Duration::from_micros(100);

/// Fewer cancelled timers than this are left in the heap until they come due.
const MIN_SCHEDULED_TIMER_HANDLES: usize = 100;

impl LoopCore {
    /// Make a handle for `callback(*args)` in `context` and queue it.
    pub(crate) fn soon(slf: &Bound<'_, Self>, callback: Obj, args: Args, context: Option<Obj>) -> PyResult<Obj> {
        let py = slf.py();
        let ctx = check_context(py, context)?;
        let core = slf.get();
        let call = Call { callback, args, context: ctx };
        // A pooled handle that nothing else refers to any more.
        let reuse = {
            let st = core.st.lock();
            let n = st.pool.len();
            st.pool[n.saturating_sub(POOL_SCAN)..].iter().rev().find(|h| exclusive(h)).map(|h| h.clone_ref(py))
        };
        if let Some(obj) = reuse {
            let h = obj.bind(py).cast::<Handle>().expect("only Handles are pooled").get();
            if Arc::strong_count(h.entry()) == 1 {
                // Its call ran (or was dropped): the entry is set up again.
                let e = Arc::clone(h.entry());
                e.cancelled.store(false, Ordering::Relaxed);
                let old = e.call.lock().replace(call);
                core.st.lock().ready.push_back(Ready::Soon(e));
                drop(old); // outside the lock: a decref may run __del__
                return Ok(obj);
            }
            // Its call is still pending: the handle stands for a new entry.
            let e = Arc::new(Entry::new(call, slf.clone().into_any().unbind(), 0.0, false));
            // SAFETY: attached, and nothing refers to the handle but the
            // pool and `obj`, both ours (`exclusive` checked it, and no
            // Python code ran since).
            let old = unsafe { h.rebind(Arc::clone(&e)) };
            old.disown(h);
            h.own(obj.as_ptr());
            core.st.lock().ready.push_back(Ready::Soon(e));
            drop(old);
            return Ok(obj);
        }
        let e = Arc::new(Entry::new(call, slf.clone().into_any().unbind(), 0.0, false));
        let h = Py::new(py, Handle::wrap(Arc::clone(&e)))?;
        h.get().own(h.as_ptr());
        let obj = h.into_any();
        let pooled = {
            let mut st = core.st.lock();
            st.ready.push_back(Ready::Soon(e));
            let room = st.pool.len() < POOL_HANDLES;
            if room {
                st.pool.push(obj.clone_ref(py));
            }
            room
        };
        // A pooled handle stays in the collector's sight (the loop visits
        // it); any other is left out of it, as the loop's pending work is.
        Ok(if pooled { obj } else { untracked(obj) })
    }

    /// `call_soon` may take the fast path: open, not in debug mode.
    pub(crate) fn fast_path_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && !self.debug.load(Ordering::Relaxed)
    }

    fn push_ready(&self, h: Obj) {
        self.st.lock().ready.push_back(Ready::Obj(h));
    }

    fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PyRuntimeError::new_err("Event loop is closed"));
        }
        Ok(())
    }

    fn is_cancelled(h: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Ok(n) = h.cast::<Handle>() {
            return Ok(n.get().cancelled.load(Ordering::Acquire));
        }
        h.getattr(pyo3::intern!(h.py(), "_cancelled"))?.is_truthy()
    }

    fn set_scheduled(h: &Bound<'_, PyAny>, on: bool) -> PyResult<()> {
        if let Ok(n) = h.cast::<Handle>() {
            n.get().scheduled.store(on, Ordering::Release);
            return Ok(());
        }
        h.setattr("_scheduled", on)
    }

    /// Drop cancelled timers if they are many (asyncio's rule), and the
    /// cancelled ones at the head of the heap in any case.
    fn prune_timers(&self, py: Python<'_>) -> PyResult<()> {
        let mut dropped: Vec<Obj> = Vec::new();
        {
            let mut st = self.st.lock();
            let n = st.timers.len();
            let cancelled = self.timer_cancelled.load(Ordering::Relaxed);
            if n > MIN_SCHEDULED_TIMER_HANDLES && cancelled * 2 > n {
                let all = st.timers.drain();
                let mut keep = TimerHeap::new();
                for h in all {
                    let b = h.bind(py);
                    let when = timer_when(b)?;
                    if Self::is_cancelled(b)? {
                        Self::set_scheduled(b, false)?;
                        dropped.push(h);
                    } else {
                        keep.push(when, h);
                    }
                }
                st.timers = keep;
                self.timer_cancelled.store(0, Ordering::Relaxed);
            } else {
                while let Some(h) = st.timers.peek() {
                    let b = h.bind(py);
                    if !Self::is_cancelled(b)? {
                        break;
                    }
                    let (_, h) = st.timers.pop().expect("peeked");
                    Self::set_scheduled(h.bind(py), false)?;
                    let _ = self.timer_cancelled.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
                    dropped.push(h);
                }
            }
        }
        drop(dropped);
        Ok(())
    }

    /// The loop's time: the monotonic clock, unless `time()` is overridden
    /// by a subclass or replaced on the instance, in which case that is
    /// called, as asyncio's loop calls `self.time()` for timers.
    fn now(slf: &Bound<'_, Self>) -> PyResult<f64> {
        let py = slf.py();
        let core = slf.get();
        if !core.time_overridden.load(Ordering::Relaxed) && !core.time_patched.load(Ordering::Relaxed) {
            return Ok(monotonic());
        }
        slf.call_method0(pyo3::intern!(py, "time"))?.extract()
    }

    /// `object.__setattr__` (`value` NULL: `__delattr__`), noting whether
    /// `time` is now set on the instance.
    fn set_attr(slf: &Bound<'_, Self>, name: &Bound<'_, pyo3::types::PyString>, value: *mut ffi::PyObject) -> PyResult<()> {
        let py = slf.py();
        // SAFETY: attached; `slf` and `name` are live, `value` is a live
        // object or NULL (delete), as PyObject_GenericSetAttr takes them.
        if unsafe { ffi::PyObject_GenericSetAttr(slf.as_ptr(), name.as_ptr(), value) } < 0 {
            return Err(PyErr::fetch(py));
        }
        if name.to_str().is_ok_and(|n| n == "time") {
            slf.get().time_patched.store(!value.is_null(), Ordering::Relaxed);
        }
        Ok(())
    }

    fn timeout_ms(&self, now: f64) -> i32 {
        let st = self.st.lock();
        if !st.ready.is_empty() || self.stopping.load(Ordering::Acquire) {
            return 0;
        }
        match st.timers.next_when() {
            None => -1,
            Some(when) => {
                let t = (when - now).clamp(0.0, 24.0 * 3600.0);
                (t * 1e3).ceil() as i32
            }
        }
    }

    /// One iteration: poll for I/O, move due timers to the ready queue,
    /// run what was ready at the start of the iteration.
    fn run_once(slf: &Bound<'_, Self>, scratch: &mut Scratch) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        let (has_timers, ms) = {
            let st = core.st.lock();
            (!st.timers.is_empty(), if st.ready.is_empty() { None } else { Some(0) })
        };
        if has_timers && core.timer_cancelled.load(Ordering::Relaxed) > 0 {
            core.prune_timers(py)?;
        }
        let mut ms = match ms {
            Some(z) => z,
            None if !has_timers && !core.stopping.load(Ordering::Acquire) => -1,
            None => core.timeout_ms(Self::now(slf)?),
        };
        let sel = core.selector.get().ok_or_else(|| PyRuntimeError::new_err("the loop has no selector"))?;
        if ms != 0 && crate::wait::is_main_thread() {
            // Ctrl-C reaches a main thread blocked here within this bound,
            // even if the kernel delivered SIGINT to another thread.
            ms = if ms < 0 { 50 } else { ms.min(50) };
        }
        // Like asyncio's, every iteration polls I/O while anything besides
        // the loop's self-pipe is registered: programs (and their tests)
        // count on data from a socket being seen within an iteration or
        // two. With only the self-pipe (signals, wake-ups) and callbacks
        // ready, the loop polls at most every POLL_EVERY: each poll is a
        // system call, which a loop running back-to-back callbacks would
        // otherwise pay per iteration. It always polls before it would
        // block, and right after a poll that found something.
        let mut events = std::mem::take(&mut scratch.events);
        let now = Pace::now();
        let watched = sel.get().count.load(Ordering::Relaxed) > core.own_fds.load(Ordering::Relaxed);
        let skip = ms == 0 && !watched && !scratch.busy_io && !scratch.pace.passed(scratch.last_poll, now);
        if !skip {
            sel.get().poll_into(py, ms, &mut events)?;
            scratch.last_poll = if ms == 0 { now } else { Pace::now() };
            scratch.busy_io = !events.is_empty();
            if events.is_empty() {
                py.check_signals()?;
            }
        }
        for (fd, mask, data) in events.drain(..) {
            let data = data.bind(py);
            let Ok(pair) = data.cast::<PyTuple>() else { continue };
            if pair.len() != 2 {
                continue;
            }
            for (bit, idx, remove) in [(READ, 0usize, "_remove_reader"), (WRITE, 1usize, "_remove_writer")] {
                if mask & bit == 0 {
                    continue;
                }
                let h = pair.get_item(idx)?;
                if h.is_none() {
                    continue;
                }
                if Self::is_cancelled(&h)? {
                    slf.call_method1(remove, (fd,))?;
                } else {
                    core.push_ready(h.unbind());
                }
            }
        }
        // Timers due now (within the clock's resolution).
        let end = if has_timers { Self::now(slf)? + f64::from_bits(core.clock_resolution.load(Ordering::Relaxed)) } else { f64::NEG_INFINITY };
        loop {
            let due = core.st.lock().timers.pop_due(end);
            let Some((_, h)) = due else { break };
            let b = h.bind(py);
            Self::set_scheduled(b, false)?;
            if Self::is_cancelled(b)? {
                let _ = core.timer_cancelled.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
                continue;
            }
            core.push_ready(h);
        }
        // Run what is ready now; what these callbacks schedule waits for
        // the next iteration.
        scratch.events = events;
        let mut batch = std::mem::replace(&mut core.st.lock().ready, std::mem::take(&mut scratch.spare));
        let debug = core.debug.load(Ordering::Relaxed);
        let handle_type = HANDLE_TYPE.get_or_init(py, || py.get_type::<Handle>().into_any().unbind());
        while let Some(item) = batch.pop_front() {
            let t0 = if debug { monotonic() } else { 0.0 };
            let r = match &item {
                Ready::Soon(e) => e.run(py, || handle_for(py, e)),
                Ready::Obj(h) => {
                    let b = h.bind(py);
                    if b.get_type().is(handle_type.bind(py)) || b.is_instance_of::<Handle>() {
                        Handle::run(b.cast::<Handle>().expect("checked"))
                    } else if b.getattr(pyo3::intern!(py, "_cancelled"))?.is_truthy()? {
                        Ok(())
                    } else {
                        b.call_method0(pyo3::intern!(py, "_run")).map(drop)
                    }
                }
            };
            if let Err(e) = r {
                // Not run yet: back to the front, in order.
                let mut st = core.st.lock();
                while let Some(x) = batch.pop_back() {
                    st.ready.push_front(x);
                }
                return Err(e);
            }
            if debug {
                let dt = monotonic() - t0;
                let h = match &item {
                    Ready::Soon(e) => handle_for(py, e)?,
                    Ready::Obj(h) => h.bind(py).clone(),
                };
                helper(py, "check_slow_callback")?.call1((slf, h, dt))?;
            }
        }
        scratch.spare = batch;
        Ok(())
    }
}

/// The handle that stands for a `call_soon` entry (to name it in a report):
/// the one made for it if it still does, or a new one.
fn handle_for<'py>(py: Python<'py>, e: &Arc<Entry>) -> PyResult<Bound<'py, PyAny>> {
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

static ASYNCIO_MODULES: PyOnceLock<(Obj, Obj, Obj)> = PyOnceLock::new();

/// `asyncio.<module>.<name>`, looked up at each call (as asyncio's own
/// code does), from the modules imported once.
fn asyncio_attr<'py>(py: Python<'py>, module: &str, name: &Bound<'py, pyo3::types::PyString>) -> PyResult<Bound<'py, PyAny>> {
    let (futures, tasks, base) = ASYNCIO_MODULES.get_or_try_init(py, || -> PyResult<(Obj, Obj, Obj)> {
        Ok((
            py.import("asyncio.futures")?.into_any().unbind(),
            py.import("asyncio.tasks")?.into_any().unbind(),
            py.import("asyncio.base_events")?.into_any().unbind(),
        ))
    })?;
    let m = match module {
        "futures" => futures,
        "tasks" => tasks,
        _ => base,
    };
    m.bind(py).getattr(name)
}

/// A selector key's data, `(reader, writer)`, with `bit`'s side set to
/// `mine` and the other side to `other`.
fn io_pair<'py>(py: Python<'py>, bit: u32, mine: Bound<'py, PyAny>, other: Bound<'py, PyAny>) -> PyResult<Obj> {
    let pair = if bit == READ { [mine, other] } else { [other, mine] };
    Ok(PyTuple::new(py, pair)?.into_any().unbind())
}

/// Whether nothing but the caller's `h` refers to the object: no other
/// reference and no weak reference (a pooled handle that can be reused).
fn exclusive(h: &Obj) -> bool {
    let p = h.as_ptr();
    // SAFETY: attached; `p` is a live object of exact type Handle (only
    // those are pooled), whose type keeps a weak-reference list at
    // tp_weaklistoffset (`#[pyclass(weakref)]`); reading the refcount and
    // that slot are plain reads of the object's memory.
    unsafe {
        let off = (*ffi::Py_TYPE(p)).tp_weaklistoffset;
        let weak = if off > 0 { *(p.cast::<u8>().offset(off) as *const *mut ffi::PyObject) } else { std::ptr::null_mut() };
        ffi::Py_REFCNT(p) == 1 && weak.is_null()
    }
}

/// Take a new handle out of the garbage collector's sight (see [`Handle`]).
fn untracked(h: Obj) -> Obj {
    // SAFETY: `h` is a live object of a GC type that we just created;
    // untracking it only stops the collector from visiting it (PyO3's
    // dealloc untracks again, which is a no-op).
    unsafe { ffi::PyObject_GC_UnTrack(h.as_ptr().cast()) };
    h
}

fn timer_when(h: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(n) = h.cast::<Handle>() {
        return Ok(n.get().when);
    }
    h.getattr(pyo3::intern!(h.py(), "_when"))?.extract()
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        LoopCore {
            st: Mutex::new(LoopState { ready: VecDeque::new(), timers: TimerHeap::new(), pool: Vec::new() }),
            selector: std::sync::OnceLock::new(),
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            clock_resolution: AtomicU64::new(1e-9f64.to_bits()),
            timer_cancelled: AtomicUsize::new(0),
            time_overridden: AtomicBool::new(false),
            own_fds: AtomicUsize::new(usize::MAX),
            time_patched: AtomicBool::new(false),
        }
    }

    /// Attributes are set as on any object; setting `time` on the instance
    /// makes the core call it for timers (see `now`).
    fn __setattr__(slf: &Bound<'_, Self>, name: &Bound<'_, pyo3::types::PyString>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::set_attr(slf, name, value.as_ptr())
    }

    fn __delattr__(slf: &Bound<'_, Self>, name: &Bound<'_, pyo3::types::PyString>) -> PyResult<()> {
        Self::set_attr(slf, name, std::ptr::null_mut())
    }

    /// Called from `EventLoop.__init__`, before and after asyncio's: what
    /// is registered by the last call (asyncio's self-pipe) is the loop's own.
    fn _plait_bind(&self, selector: Py<Selector>, clock_resolution: f64, debug: bool, time_overridden: bool) {
        let _ = self.selector.set(selector);
        if let Some(sel) = self.selector.get() {
            self.own_fds.store(sel.get().count.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.time_overridden.store(time_overridden, Ordering::Relaxed);
        self.clock_resolution.store(clock_resolution.to_bits(), Ordering::Relaxed);
        self.debug.store(debug, Ordering::Relaxed);
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        if let Some(s) = self.selector.get() {
            visit.call(s)?;
        }
        if let Some(st) = self.st.try_lock() {
            for item in st.ready.iter() {
                if let Ready::Obj(h) = item {
                    visit.call(h)?;
                }
            }
            for h in st.timers.iter() {
                visit.call(h)?;
            }
            // Pooled handles are tracked (see `soon`), so the collector
            // sees their reference to this loop.
            for h in st.pool.iter() {
                visit.call(h)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let (ready, timers, pool) = {
            let mut st = self.st.lock();
            (std::mem::take(&mut st.ready), st.timers.drain(), std::mem::take(&mut st.pool))
        };
        drop(ready);
        drop(timers);
        drop(pool);
    }

    fn _plait_set_debug(&self, debug: bool) {
        self.debug.store(debug, Ordering::Relaxed);
    }

    /// asyncio's `self._debug`, kept here: the core reads it on every
    /// `call_soon`, and every Future and Task asks `get_debug()`.
    #[getter(_debug)]
    fn get_debug_attr(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    #[setter(_debug)]
    fn set_debug_attr(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.debug.store(value.is_truthy()?, Ordering::Relaxed);
        Ok(())
    }

    fn get_debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    fn _plait_close(&self, py: Python<'_>) {
        self.closed.store(true, Ordering::Release);
        let (ready, timers, pool) = {
            let mut st = self.st.lock();
            (std::mem::take(&mut st.ready), st.timers.drain(), std::mem::take(&mut st.pool))
        };
        // Pooled handles refer to this loop: a closed loop needs none.
        drop(pool);
        for t in &timers {
            let _ = Self::set_scheduled(t.bind(py), false);
        }
        // They will never run: let go of what they hold (see [`Handle`]).
        let release = |e: &Entry| drop(e.call.lock().take());
        let release_obj = |h: &Obj| {
            if let Ok(n) = h.bind(py).cast::<Handle>() {
                release(n.get());
            }
        };
        for item in &ready {
            match item {
                Ready::Soon(e) => release(e),
                Ready::Obj(h) => release_obj(h),
            }
        }
        timers.iter().for_each(release_obj);
        drop(ready);
        drop(timers);
    }

    fn time(&self) -> f64 {
        monotonic()
    }

    #[pyo3(signature = (callback, *args, context = None))]
    fn call_soon(slf: &Bound<'_, Self>, callback: Obj, args: Py<PyTuple>, context: Option<Obj>) -> PyResult<Obj> {
        let core = slf.get();
        core.check_closed()?;
        if core.debug.load(Ordering::Relaxed) {
            return helper(slf.py(), "debug_call_soon")?.call1((slf, callback, args, context)).map(Bound::unbind);
        }
        Self::_call_soon(slf, callback, args, context)
    }

    /// asyncio's internal `_call_soon(callback, args, context)`, also what
    /// `call_soon_threadsafe` uses (thread-safe here: a locked queue).
    #[pyo3(signature = (callback, args, context = None))]
    fn _call_soon(slf: &Bound<'_, Self>, callback: Obj, args: Py<PyTuple>, context: Option<Obj>) -> PyResult<Obj> {
        let py = slf.py();
        let core = slf.get();
        if core.debug.load(Ordering::Relaxed) {
            return helper(py, "debug_call_soon_internal")?.call1((slf, callback, args, context)).map(Bound::unbind);
        }
        Self::soon(slf, callback, Args::from_tuple(slf.py(), args), context)
    }

    #[pyo3(signature = (delay, callback, *args, context = None))]
    fn call_later(slf: &Bound<'_, Self>, delay: &Bound<'_, PyAny>, callback: Obj, args: Py<PyTuple>, context: Option<Obj>) -> PyResult<Obj> {
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let delay: f64 = delay.extract()?;
        Self::call_at_f(slf, Self::now(slf)? + delay, None, callback, args, context)
    }

    #[pyo3(signature = (when, callback, *args, context = None))]
    fn call_at(slf: &Bound<'_, Self>, when: &Bound<'_, PyAny>, callback: Obj, args: Py<PyTuple>, context: Option<Obj>) -> PyResult<Obj> {
        if when.is_none() {
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        let when_int = when.is_exact_instance_of::<PyInt>().then(|| when.clone().unbind());
        let when: f64 = when.extract()?;
        Self::call_at_f(slf, when, when_int, callback, args, context)
    }

    /// asyncio's `_add_reader(fd, callback, *args)`, with a native handle.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>, callback: Obj, args: Py<PyTuple>) -> PyResult<Obj> {
        Self::add_io(slf, fd, callback, args, READ)
    }

    /// asyncio's `_add_writer(fd, callback, *args)`, with a native handle.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>, callback: Obj, args: Py<PyTuple>) -> PyResult<Obj> {
        Self::add_io(slf, fd, callback, args, WRITE)
    }

    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_io(slf, fd, READ)
    }

    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_io(slf, fd, WRITE)
    }

    /// asyncio's `create_task`: `asyncio.Task(coro, loop=self, name=name,
    /// context=context)` without a Python frame; with a task factory, in
    /// debug mode or before Python 3.11, asyncio's own method.
    #[pyo3(signature = (coro, *, name = None, context = None))]
    fn create_task<'py>(slf: &Bound<'py, Self>, coro: &Bound<'py, PyAny>, name: Option<Obj>, context: Option<Obj>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let core = slf.get();
        core.check_closed()?;
        static BEFORE_311: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let before_311 = *BEFORE_311.get_or_init(|| py.version_info() < (3, 11));
        if core.debug.load(Ordering::Relaxed) || before_311 || !slf.getattr(pyo3::intern!(py, "_task_factory"))?.is_none() {
            let kwargs = PyDict::new(py);
            kwargs.set_item("name", name)?;
            if context.is_some() {
                kwargs.set_item("context", context)?;
            }
            let base = asyncio_attr(py, "base_events", pyo3::intern!(py, "BaseEventLoop"))?.getattr(pyo3::intern!(py, "create_task"))?;
            return base.call((slf, coro), Some(&kwargs));
        }
        // Task(coro, loop=self, name=name, context=context), called with
        // keyword names rather than a dict (no dict to build and collect).
        static KWNAMES: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
        let kwnames = KWNAMES.get_or_try_init(py, || PyTuple::new(py, ["loop", "name", "context"]).map(Bound::unbind))?;
        let task_type = asyncio_attr(py, "tasks", pyo3::intern!(py, "Task"))?;
        let none = py.None();
        let name = name.unwrap_or_else(|| none.clone_ref(py));
        let context = context.unwrap_or_else(|| none.clone_ref(py));
        let argv = [coro.as_ptr(), slf.as_ptr(), name.as_ptr(), context.as_ptr()];
        // SAFETY: attached; `argv` holds one positional argument and the
        // three keyword values `kwnames` names, all live for the call.
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyObject_Vectorcall(task_type.as_ptr(), argv.as_ptr(), 1, kwnames.as_ptr())) }
    }

    fn _add_callback(&self, handle: Obj) {
        self.push_ready(handle);
    }

    fn _timer_handle_cancelled(&self, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        let scheduled = match handle.cast::<Handle>() {
            Ok(h) => h.get().scheduled.load(Ordering::Acquire),
            Err(_) => handle.getattr("_scheduled")?.is_truthy()?,
        };
        if scheduled {
            self.timer_cancelled.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::run_once(slf, &mut Scratch::default())
    }

    /// `run_forever`'s loop (the Python method does asyncio's setup and
    /// cleanup around it).
    fn _plait_run_forever(slf: &Bound<'_, Self>) -> PyResult<()> {
        let core = slf.get();
        let mut scratch = Scratch::default();
        let r = (|| loop {
            Self::run_once(slf, &mut scratch)?;
            if core.stopping.load(Ordering::Acquire) {
                return Ok(());
            }
        })();
        core.stopping.store(false, Ordering::Release);
        r
    }

    /// Ready callbacks and pending timers (for tests and introspection).
    #[getter]
    fn _plait_pending(&self) -> (usize, usize) {
        let st = self.st.lock();
        (st.ready.len(), st.timers.len())
    }
}

impl LoopCore {
    fn add_io(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>, callback: Obj, args: Py<PyTuple>, bit: u32) -> PyResult<Obj> {
        let py = slf.py();
        let core = slf.get();
        core.check_closed()?;
        let sel = core.selector.get().ok_or_else(|| PyRuntimeError::new_err("the loop has no selector"))?.bind(py);
        let ctx = copy_context(py)?;
        let call = Call { callback, args: Args::from_tuple(py, args), context: ctx };
        let h = Handle::wrap(Arc::new(Entry::new(call, slf.clone().into_any().unbind(), 0.0, true)));
        let handle = Py::new(py, h)?.into_any();
        // Tracked like any object (see `persistent`), its context too.
        if let Some(c) = handle.bind(py).cast::<Handle>()?.get().call.lock().as_ref() {
            retrack(py, c.context.as_ptr());
        }
        let none = py.None().into_bound(py);
        let old = match sel.get().entry(fd) {
            None => {
                sel.get().register(fd, bit, Some(io_pair(py, bit, handle.bind(py).clone(), none)?))?;
                None
            }
            Some((mask, reader, writer)) => {
                let (old, other) = if bit == READ { (reader, writer) } else { (writer, reader) };
                sel.get().modify(fd, mask | bit, Some(io_pair(py, bit, handle.bind(py).clone(), other)?))?;
                Some(old)
            }
        };
        if let Some(old) = old.filter(|o| !o.is_none()) {
            old.call_method0("cancel")?;
        }
        Ok(handle)
    }

    fn remove_io(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>, bit: u32) -> PyResult<bool> {
        let py = slf.py();
        let core = slf.get();
        if core.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let Some(sel) = core.selector.get() else { return Ok(false) };
        let sel = sel.get();
        let Some((mask, reader, writer)) = sel.entry(fd) else { return Ok(false) };
        let (gone, other) = if bit == READ { (reader, writer) } else { (writer, reader) };
        let left = mask & !bit;
        if left == 0 {
            sel.unregister(fd)?;
        } else {
            sel.modify(fd, left, Some(io_pair(py, bit, py.None().into_bound(py), other)?))?;
        }
        if gone.is_none() {
            return Ok(false);
        }
        gone.call_method0("cancel")?;
        Ok(true)
    }

    fn call_at_f(slf: &Bound<'_, Self>, when: f64, when_int: Option<Obj>, callback: Obj, args: Py<PyTuple>, context: Option<Obj>) -> PyResult<Obj> {
        let py = slf.py();
        let core = slf.get();
        core.check_closed()?;
        if core.debug.load(Ordering::Relaxed) {
            let w = when_int.unwrap_or_else(|| pyo3::types::PyFloat::new(py, when).into_any().unbind());
            let h = helper(py, "debug_call_at")?.call1((slf, w, callback, args, context))?;
            h.setattr("_scheduled", true)?;
            core.st.lock().timers.push(when, h.clone().unbind());
            return Ok(h.unbind());
        }
        let ctx = check_context(py, context)?;
        let call = Call { callback, args: Args::from_tuple(py, args), context: ctx };
        let h = Handle::wrap(Arc::new(Entry::new(call, slf.clone().into_any().unbind(), when, false)));
        h.scheduled.store(true, Ordering::Release);
        let obj = untracked(Py::new(py, (TimerHandle { when_int }, h))?.into_any());
        core.st.lock().timers.push(when, obj.clone_ref(py));
        Ok(obj)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Handle>()?;
    m.add_class::<TimerHandle>()?;
    m.add_class::<Selector>()?;
    m.add_class::<SelectorMapping>()?;
    m.add_class::<LoopCore>()?;
    Ok(())
}
