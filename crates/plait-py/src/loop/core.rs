//! `_LoopCore`: the Rust base of `plait.loop.EventLoop`, its state and its
//! Python methods.
//!
//! `plait.loop.EventLoop` is a subclass of this class and of asyncio's
//! `_UnixSelectorEventLoop`. The core owns the ready queue and
//! `call_soon` (with a pool of reusable handles, see [`LoopCore::soon`]),
//! the timer heap and `call_later`/`call_at`, `create_task`, `stop`,
//! `time`, and the debug flag every Future and Task asks for. One
//! iteration is `run_once.rs`'s; readers and writers are `io.rs`'s.
//!
//! No Rust lock is held while Python code runs: every structure is locked
//! only to move handles in or out.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use plait_core::reactor::{monotonic, ReadyQueue, TimerHeap, READ, WRITE};
// The loop's structures are locked for a few instructions at a time, by the
// loop's thread almost always: the spin mutex, whose unlock is a plain
// store (parking_lot's is a second atomic read-modify-write).
use plait_core::spin::SpinMutex as Mutex;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyTuple};

use super::call::{check_context, is_context, untracked, Args, Call};
use super::handle::{Entry, Handle, TimerHandle};
use super::run_once::Scratch;
use super::selector::Selector;
use super::{helper, Obj};

/// What the ready queue holds: a `call_soon` entry (its handle may be gone
/// already, or reused), or a handle object (a due timer, a reader or
/// writer, asyncio's own handles in debug mode).
pub(super) enum Ready {
    Soon(Arc<Entry>),
    Obj(Obj),
}

pub(super) struct LoopState {
    pub(super) ready: ReadyQueue<Ready>,
    pub(super) timers: TimerHeap<Obj>,
    /// `call_soon`'s handles, reused once nothing else refers to them.
    /// Most callers drop the handle at once (asyncio's C tasks and futures
    /// always do), so one handle object serves call after call, pending or
    /// not: a steady loop allocates none, and a burst (create_task of many
    /// coroutines) allocates none either, which keeps CPython's garbage
    /// collector, which counts allocations, from being set off by them.
    pub(super) pool: Vec<Obj>,
}

/// How many handles the pool keeps.
const POOL_HANDLES: usize = 64;
/// How many pooled handles `call_soon` looks at for a free one.
const POOL_SCAN: usize = 4;

/// The Rust base of `plait.loop.EventLoop`.
#[pyclass(module = "plait.loop", name = "_LoopCore", subclass, frozen)]
pub struct LoopCore {
    pub(super) st: Mutex<LoopState>,
    pub(super) selector: std::sync::OnceLock<Py<Selector>>,
    pub(super) stopping: AtomicBool,
    pub(super) closed: AtomicBool,
    pub(super) debug: AtomicBool,
    pub(super) clock_resolution: AtomicU64,
    pub(super) timer_cancelled: AtomicUsize,
    /// A subclass defines its own `time()`.
    pub(super) time_overridden: AtomicBool,
    /// How many file objects the loop registers for itself (its self-pipe):
    /// more than this means someone watches I/O (see `run_once`).
    pub(super) own_fds: AtomicUsize,
    /// `time` is set on the instance (mock.patch.object, a virtual clock);
    /// kept by `__setattr__`/`__delattr__`.
    pub(super) time_patched: AtomicBool,
}


impl LoopCore {
    /// Make a handle for `callback(*args)` in `context` and queue it.
    pub(crate) fn soon(slf: &Bound<'_, Self>, callback: Obj, args: Args, context: Option<Obj>) -> PyResult<Obj> {
        let py = slf.py();
        if let Some(c) = context.as_ref().filter(|c| !is_context(c)) {
            // Not a Context: asyncio's own Handle, which takes any object
            // and fails when run, as asyncio's loop does.
            return helper(py, "plain_call_soon")?.call1((slf, callback, args.to_tuple(py)?, c)).map(Bound::unbind);
        }
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
                core.st.lock().ready.push(Ready::Soon(e));
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
            core.st.lock().ready.push(Ready::Soon(e));
            drop(old);
            return Ok(obj);
        }
        let e = Arc::new(Entry::new(call, slf.clone().into_any().unbind(), 0.0, false));
        let h = Py::new(py, Handle::wrap(Arc::clone(&e)))?;
        h.get().own(h.as_ptr());
        let obj = h.into_any();
        let pooled = {
            let mut st = core.st.lock();
            st.ready.push(Ready::Soon(e));
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

    pub(super) fn push_ready(&self, h: Obj) {
        self.st.lock().ready.push(Ready::Obj(h));
    }

    pub(super) fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PyRuntimeError::new_err("Event loop is closed"));
        }
        Ok(())
    }

    pub(super) fn is_cancelled(h: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Ok(n) = h.cast::<Handle>() {
            return Ok(n.get().cancelled.load(Ordering::Acquire));
        }
        h.getattr(pyo3::intern!(h.py(), "_cancelled"))?.is_truthy()
    }

    pub(super) fn set_scheduled(h: &Bound<'_, PyAny>, on: bool) -> PyResult<()> {
        if let Ok(n) = h.cast::<Handle>() {
            n.get().scheduled.store(on, Ordering::Release);
            return Ok(());
        }
        h.setattr("_scheduled", on)
    }
    /// The loop's time: the monotonic clock, unless `time()` is overridden
    /// by a subclass or replaced on the instance, in which case that is
    /// called, as asyncio's loop calls `self.time()` for timers.
    pub(super) fn now(slf: &Bound<'_, Self>) -> PyResult<f64> {
        let py = slf.py();
        let core = slf.get();
        if !core.time_overridden.load(Ordering::Relaxed) && !core.time_patched.load(Ordering::Relaxed) {
            return Ok(monotonic());
        }
        slf.call_method0(pyo3::intern!(py, "time"))?.extract()
    }

    /// `object.__setattr__` (`value` NULL: `__delattr__`), noting whether
    /// `time` is now set on the instance.
    pub(super) fn set_attr(slf: &Bound<'_, Self>, name: &Bound<'_, pyo3::types::PyString>, value: *mut ffi::PyObject) -> PyResult<()> {
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

fn before_311(py: Python<'_>) -> bool {
    static BEFORE_311: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BEFORE_311.get_or_init(|| py.version_info() < (3, 11))
}

/// An int or a float (bool and subclasses too): a timer's time as asyncio
/// does arithmetic with it.
fn is_real(v: &Bound<'_, PyAny>) -> bool {
    v.is_instance_of::<PyInt>() || v.is_instance_of::<pyo3::types::PyFloat>()
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

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        LoopCore {
            st: Mutex::new(LoopState { ready: ReadyQueue::new(), timers: TimerHeap::new(), pool: Vec::new() }),
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
            (st.ready.take_all(), st.timers.drain(), std::mem::take(&mut st.pool))
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
            (st.ready.take_all(), st.timers.drain(), std::mem::take(&mut st.pool))
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
        let py = slf.py();
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let now = Self::now(slf)?;
        // asyncio computes `self.time() + delay`: a number, or anything a
        // float adds to (a Fraction, numpy's scalars); not a str, nor an
        // object that only has __float__ or __index__.
        let when = if is_real(delay) {
            now + delay.extract::<f64>()?
        } else {
            let sum = pyo3::types::PyFloat::new(py, now).add(delay)?;
            slf.get().check_closed()?;
            sum.extract::<f64>()?
        };
        slf.get().check_closed()?;
        Self::call_at_f(slf, when, None, callback, args, context)
    }

    #[pyo3(signature = (when, callback, *args, context = None))]
    fn call_at(slf: &Bound<'_, Self>, when: &Bound<'_, PyAny>, callback: Obj, args: Py<PyTuple>, context: Option<Obj>) -> PyResult<Obj> {
        let py = slf.py();
        if when.is_none() {
            // 3.10's TimerHandle asserts it (after the closed check);
            // 3.11 checks it first.
            if before_311(py) {
                slf.get().check_closed()?;
                return Err(pyo3::exceptions::PyAssertionError::new_err(()));
            }
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        // As asyncio's call_at: None, then a closed loop, then the value.
        slf.get().check_closed()?;
        let when_int = (!when.is_exact_instance_of::<pyo3::types::PyFloat>()).then(|| when.clone().unbind());
        let at = if is_real(when) {
            when.extract::<f64>()?
        } else {
            // asyncio's loop computes `when - self.time()`: what cannot
            // be subtracted from fails there (here, at once).
            when.sub(pyo3::types::PyFloat::new(py, Self::now(slf)?))?;
            when.extract::<f64>()?
        };
        Self::call_at_f(slf, at, when_int, callback, args, context)
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
        if core.debug.load(Ordering::Relaxed) || before_311(py) || !slf.getattr(pyo3::intern!(py, "_task_factory"))?.is_none() {
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
    fn call_at_f(slf: &Bound<'_, Self>, when: f64, when_int: Option<Obj>, callback: Obj, args: Py<PyTuple>, context: Option<Obj>) -> PyResult<Obj> {
        let py = slf.py();
        let core = slf.get();
        core.check_closed()?;
        let debug = core.debug.load(Ordering::Relaxed);
        if debug || context.as_ref().is_some_and(|c| !is_context(c)) {
            // Debug mode, or a context that is not a Context: asyncio's
            // own TimerHandle (see `soon`).
            let w = when_int.unwrap_or_else(|| pyo3::types::PyFloat::new(py, when).into_any().unbind());
            let make = if debug { "debug_call_at" } else { "plain_call_at" };
            let h = helper(py, make)?.call1((slf, w, callback, args, context))?;
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
