//! `plait.Lock` and `plait.RLock`: `_thread.lock` and `_thread.RLock`.

use std::sync::Arc;

use plait_core::fork::{register_arc, Registration};
use plait_core::park::Outcome;
use plait_core::sync::{Lock as CoreLock, RLock as CoreRLock, RLockError};
use pyo3::exceptions::{PyOverflowError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use plait_core::debug::order;

use crate::debug::order as lock_order;
use crate::debug::site::{label, name_arg};
use crate::wait::{detached, detached_uninterruptible, interrupted_error, lock_acquire_args, version, Arg};

/// `"<module>.<qualname>"` of an object's class, for reprs.
pub fn class_path(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let t = obj.get_type();
    Ok(format!("{}.{}", t.module()?, t.qualname()?))
}

/// The repr of an Event, Semaphore or Barrier as the running `threading`
/// writes it: `<threading.Event at 0x..: unset>` from 3.11, the plain
/// `<threading.Event object at 0x..>` before.
pub fn state_repr(obj: &Bound<'_, PyAny>, state: impl FnOnce() -> PyResult<String>) -> PyResult<String> {
    let (path, addr) = (class_path(obj)?, obj.as_ptr() as usize);
    if crate::wait::version(obj.py()) < (3, 11) {
        return Ok(format!("<{path} object at {addr:#x}>"));
    }
    Ok(format!("<{path} at {addr:#x}: {}>", state()?))
}

/// A new object of `obj`'s class made by its `__new__` alone (no
/// `__init__`, as `copy.copy` makes one), with a shallow copy of `obj`'s
/// instance attributes: the start of the primitives' `__copy__`.
pub fn new_like<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let cls = obj.get_type();
    let new = cls.call_method1("__new__", (&cls,))?;
    if let Ok(d) = obj.getattr("__dict__") {
        new.getattr("__dict__")?.call_method1("update", (d,))?;
    }
    Ok(new)
}

/// Outcome of a blocking acquire, as Python sees it: `Interrupted` is a
/// signal handler's exception, or a wait refused because it would close a
/// deadlock (`deadlock="raise"`), which has none.
pub(crate) fn finish(py: Python<'_>, outcome: Outcome, err: Option<PyErr>) -> PyResult<bool> {
    match outcome {
        Outcome::Notified => Ok(true),
        Outcome::TimedOut => Ok(false),
        Outcome::Interrupted => Err(interrupted_error(py, err)),
    }
}

/// `acquire` in lock_order mode, for Lock and RLock: a blocking acquire
/// checks the order first (and may warn, or raise without acquiring); a
/// non-blocking one cannot deadlock and only joins the held stack (the
/// caller records it when this returns `true`). `wait` is the blocking
/// acquire until the deadline.
fn acquire_ordered(
    py: Python<'_>,
    probe: &plait_core::debug::Probe,
    deadline: Option<Option<std::time::Instant>>,
    try_take: impl Fn() -> PyResult<bool>,
    wait: impl FnOnce(Option<std::time::Instant>) -> PyResult<bool>,
) -> PyResult<bool> {
    match deadline {
        Some(deadline) => {
            lock_order::before(py, probe)?;
            Ok(try_take()? || wait(deadline)?)
        }
        None => try_take(),
    }
}

/// A primitive lock, like `threading.Lock`.
///
/// Differences from CPython: after `os.fork()`, a lock that a thread other
/// than the forking one held is released in the child (that thread does not
/// exist there, so nothing could ever release it).
///
/// Addition: a keyword-only `name=` (a str) names it in `plait.debug`;
/// without it, it is known by its creation site `file:line`.
#[pyclass(module = "plait", frozen, weakref, subclass)]
pub struct Lock {
    pub(crate) core: Arc<CoreLock>,
    _fork: Registration,
}

impl Lock {
    pub fn create() -> Self {
        let core = Arc::new(CoreLock::new());
        let reg = register_arc(&core);
        Lock { core, _fork: reg }
    }

    /// Blocking acquire shared by `acquire` and `Condition`.
    #[inline]
    pub fn acquire_impl(
        &self,
        py: Python<'_>,
        blocking: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if order::enabled() {
            return self.acquire_ordered(py, blocking, timeout);
        }
        if blocking.is_none() && timeout.is_none() && self.core.try_acquire() {
            return Ok(true);
        }
        let deadline = match lock_acquire_args(blocking, timeout)? {
            None => return Ok(self.core.try_acquire()),
            Some(d) => d,
        };
        if self.core.try_acquire() {
            return Ok(true);
        }
        self.acquire_blocking(py, deadline)
    }

    fn acquire_blocking(&self, py: Python<'_>, deadline: Option<std::time::Instant>) -> PyResult<bool> {
        let core = &self.core;
        let (out, err) = detached(py, deadline, |ctx| core.acquire_slow(ctx));
        finish(py, out, err)
    }

    /// `acquire` in lock_order mode (see [`acquire_ordered`]).
    #[inline(never)]
    fn acquire_ordered(
        &self,
        py: Python<'_>,
        blocking: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let got = acquire_ordered(
            py,
            &self.core.probe,
            lock_acquire_args(blocking, timeout)?,
            || Ok(self.core.try_acquire()),
            |deadline| self.acquire_blocking(py, deadline),
        )?;
        if got {
            lock_order::acquired(self.core.clone());
        }
        Ok(got)
    }

    /// Take the lock, waiting as long as it takes, ignoring signals.
    pub fn acquire_uninterruptible(&self, py: Python<'_>) {
        if !self.core.try_acquire() {
            let core = &self.core;
            detached_uninterruptible(py, |ctx| core.acquire_slow(ctx));
        }
        if order::enabled() {
            lock_order::acquired(self.core.clone());
        }
    }

    #[inline]
    pub fn release_impl(&self) -> PyResult<()> {
        if self.core.release() {
            if order::enabled() {
                lock_order::released(&*self.core);
            }
            Ok(())
        } else {
            Err(PyRuntimeError::new_err("release unlocked lock"))
        }
    }
}

#[pymethods]
impl Lock {
    /// `threading.Lock()` takes no arguments (only plait's `name=`).
    #[new]
    #[pyo3(signature = (*, name = None))]
    fn new(py: Python<'_>, name: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let name = name_arg(name)?;
        let lock = Lock::create();
        label(py, &lock.core.probe, name);
        Ok(lock)
    }

    /// Acquire the lock; `blocking` and `timeout` as `threading.Lock`.
    #[pyo3(signature = (blocking = Arg::ABSENT, timeout = Arg::ABSENT))]
    fn acquire(&self, py: Python<'_>, blocking: Arg<'_>, timeout: Arg<'_>) -> PyResult<bool> {
        self.acquire_impl(py, blocking.get(), timeout.get())
    }

    /// Deprecated alias of acquire, kept as CPython keeps it.
    #[pyo3(signature = (blocking = Arg::ABSENT, timeout = Arg::ABSENT))]
    fn acquire_lock(&self, py: Python<'_>, blocking: Arg<'_>, timeout: Arg<'_>) -> PyResult<bool> {
        self.acquire_impl(py, blocking.get(), timeout.get())
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire_impl(py, None, None)
    }

    fn release(&self) -> PyResult<()> {
        self.release_impl()
    }

    fn release_lock(&self) -> PyResult<()> {
        self.release_impl()
    }

    #[pyo3(signature = (_t = None, _v = None, _tb = None))]
    fn __exit__(
        &self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.release_impl()
    }

    fn locked(&self) -> bool {
        self.core.is_locked()
    }

    fn locked_lock(&self) -> bool {
        self.core.is_locked()
    }

    /// Reset to unlocked (CPython calls this in a forked child).
    fn _at_fork_reinit(&self) {
        self.core.reset();
    }

    /// `threading.get_ident()` of the thread that acquired the lock, or
    /// None when unlocked (for plait.debug).
    #[getter]
    fn _owner(&self) -> Option<u64> {
        Some(self.core.owner()).filter(|o| *o != 0)
    }

    /// Idents of the threads waiting for the lock (for plait.debug).
    #[getter]
    fn _waiters(&self) -> Vec<u64> {
        self.core.waiters()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let state = if slf.get().core.is_locked() { "locked" } else { "unlocked" };
        Ok(format!("<{} {} object at {:#x}>", state, class_path(slf.as_any())?, slf.as_ptr() as usize))
    }
}

/// A reentrant lock, like `threading.RLock`.
///
/// Differences from CPython: after `os.fork()`, an RLock owned by a thread
/// other than the forking one is released in the child.
///
/// Addition: a keyword-only `name=` (a str) names it in `plait.debug`;
/// without it, it is known by its creation site `file:line`.
#[pyclass(module = "plait", frozen, weakref, subclass)]
pub struct RLock {
    pub(crate) core: Arc<CoreRLock>,
    _fork: Registration,
}

fn rlock_error(e: RLockError) -> PyErr {
    match e {
        RLockError::NotOwned => PyRuntimeError::new_err("cannot release un-acquired lock"),
        RLockError::Overflow => PyOverflowError::new_err("Internal lock count overflowed"),
    }
}

impl RLock {
    pub fn create() -> Self {
        let core = Arc::new(CoreRLock::new());
        let reg = register_arc(&core);
        RLock { core, _fork: reg }
    }

    #[inline]
    pub fn acquire_impl(
        &self,
        py: Python<'_>,
        blocking: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if order::enabled() && !self.core.is_owned() {
            return self.acquire_ordered(py, blocking, timeout);
        }
        if blocking.is_none() && timeout.is_none() && self.core.try_acquire().map_err(rlock_error)? {
            return Ok(true);
        }
        let deadline = match lock_acquire_args(blocking, timeout)? {
            None => return self.core.try_acquire().map_err(rlock_error),
            Some(d) => d,
        };
        if self.core.try_acquire().map_err(rlock_error)? {
            return Ok(true);
        }
        self.acquire_blocking(py, deadline)
    }

    fn acquire_blocking(&self, py: Python<'_>, deadline: Option<std::time::Instant>) -> PyResult<bool> {
        let core = &self.core;
        let (out, err) = detached(py, deadline, |ctx| core.acquire_slow(ctx, 1));
        finish(py, out, err)
    }

    /// The first level of `acquire` in lock_order mode (see
    /// [`acquire_ordered`]).
    #[inline(never)]
    fn acquire_ordered(
        &self,
        py: Python<'_>,
        blocking: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let got = acquire_ordered(
            py,
            self.core.probe(),
            lock_acquire_args(blocking, timeout)?,
            || self.core.try_acquire().map_err(rlock_error),
            |deadline| self.acquire_blocking(py, deadline),
        )?;
        if got {
            lock_order::acquired(self.core.clone());
        }
        Ok(got)
    }

    #[inline]
    pub fn release_impl(&self) -> PyResult<()> {
        self.core.release().map_err(rlock_error)?;
        if order::enabled() && !self.core.is_owned() {
            lock_order::released(&*self.core);
        }
        Ok(())
    }

    /// Release all levels; returns the saved `(count, owner)`.
    pub fn release_save_impl(&self) -> PyResult<(u64, u64)> {
        let saved = self.core.release_save().map_err(rlock_error)?;
        if order::enabled() {
            lock_order::released(&*self.core);
        }
        Ok(saved)
    }

    /// Re-take with a saved count, ignoring signals.
    pub fn acquire_restore_impl(&self, py: Python<'_>, count: u64) {
        if !self.core.try_acquire_restore(count) {
            let core = &self.core;
            detached_uninterruptible(py, |ctx| core.acquire_slow(ctx, count));
        }
        if order::enabled() {
            lock_order::acquired(self.core.clone());
        }
    }
}

#[pymethods]
impl RLock {
    #[new]
    #[pyo3(signature = (*args, name = None, **kwargs))]
    fn new(
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        name: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        // CPython's RLock ignores arguments; 3.13 warns about them.
        if (!args.is_empty() || kwargs.is_some_and(|k| !k.is_empty())) && version(py) >= (3, 13) {
            PyErr::warn(
                py,
                &py.get_type::<pyo3::exceptions::PyDeprecationWarning>(),
                c"Passing arguments to RLock is deprecated and will be removed in 3.15",
                1,
            )?;
        }
        let name = name_arg(name)?;
        let lock = RLock::create();
        label(py, lock.core.probe(), name);
        Ok(lock)
    }

    #[pyo3(signature = (blocking = Arg::ABSENT, timeout = Arg::ABSENT))]
    fn acquire(&self, py: Python<'_>, blocking: Arg<'_>, timeout: Arg<'_>) -> PyResult<bool> {
        self.acquire_impl(py, blocking.get(), timeout.get())
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire_impl(py, None, None)
    }

    fn release(&self) -> PyResult<()> {
        self.release_impl()
    }

    #[pyo3(signature = (_t = None, _v = None, _tb = None))]
    fn __exit__(
        &self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.release_impl()
    }

    /// Whether any thread holds the lock (Python 3.14's RLock.locked).
    fn locked(&self) -> bool {
        self.core.is_locked()
    }

    fn _is_owned(&self) -> bool {
        self.core.is_owned()
    }

    fn _recursion_count(&self) -> u64 {
        self.core.recursion_count()
    }

    fn _release_save(&self) -> PyResult<(u64, u64)> {
        self.release_save_impl()
    }

    fn _acquire_restore(&self, py: Python<'_>, state: (u64, u64)) {
        self.acquire_restore_impl(py, state.0);
    }

    fn _at_fork_reinit(&self) {
        self.core.reset();
    }

    #[getter]
    fn _owner(&self) -> Option<u64> {
        Some(self.core.owner()).filter(|o| *o != 0)
    }

    #[getter]
    fn _waiters(&self) -> Vec<u64> {
        self.core.waiters()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let core = &slf.get().core;
        let state = if core.is_locked() { "locked" } else { "unlocked" };
        Ok(format!(
            "<{} {} object owner={} count={} at {:#x}>",
            state,
            class_path(slf.as_any())?,
            core.owner(),
            core.count(),
            slf.as_ptr() as usize
        ))
    }
}

// --- C-ABI fast entries ---------------------------------------------------
//
// An uncontended `acquire()` + `release()` is two calls that do one atomic
// each; PyO3's call machinery (the panic trampoline, its thread-local
// bookkeeping, argument extraction) would be most of their cost. As for the
// queues (`queue/fastcall.rs`), plain C functions are installed in the
// classes for `acquire`, `release`, `__enter__` and `__exit__`; each handles
// only the common case (no keywords; `acquire()` or `acquire(True)` /
// `acquire(False)` that succeeds without waiting; a release by the
// holder; an RLock's re-entry) and forwards anything else, unchanged, to the PyO3 method it
// replaced, which implements the whole contract. In lock_order mode the
// order check runs first (it may warn, or raise: then nothing is
// acquired). Nothing here can panic on a valid call.

mod fast {
    //! The C-ABI entries of `Lock` and `RLock` (see `capi.rs`): one generic
    //! body per method, for any lock type that says how to take and give
    //! without waiting ([`FastLock`]); everything else goes, unchanged, to
    //! the PyO3 method each replaced.

    use std::ffi::CStr;

    use plait_core::debug::order;
    use pyo3::ffi;
    use pyo3::pyclass::boolean_struct::True;
    use pyo3::prelude::*;
    use pyo3::sync::PyOnceLock;
    use pyo3::{Borrowed, PyClass};

    use super::{Lock, RLock};
    use crate::capi::{fastcall_args, forward, none, replace_method};
    use crate::debug::order as lock_order;

    /// The replaced PyO3 methods, by [`ACQUIRE`], [`ENTER`], [`RELEASE`],
    /// [`EXIT`].
    type Slow = [PyOnceLock<Py<PyAny>>; 4];
    const ACQUIRE: usize = 0;
    const ENTER: usize = 1;
    const RELEASE: usize = 2;
    const EXIT: usize = 3;

    static LOCK_SLOW: Slow = [const { PyOnceLock::new() }; 4];
    static RLOCK_SLOW: Slow = [const { PyOnceLock::new() }; 4];

    const ACQUIRE_DOC: &CStr = c"acquire($self, blocking=None, timeout=None)\n--\n\nAcquire the lock, waiting if blocking is true (at most timeout seconds when given); returns whether it was acquired.";
    const ENTER_DOC: &CStr = c"__enter__($self)\n--\n\nAcquire the lock (waiting as long as it takes).";
    const RELEASE_DOC: &CStr = c"release($self)\n--\n\nRelease the lock.";
    const EXIT_DOC: &CStr = c"__exit__($self, _t=None, _v=None, _tb=None)\n--\n\nRelease the lock.";

    /// What the fast entries need from a lock type.
    trait FastLock: PyClass<Frozen = True> + Sync {
        /// The PyO3 methods the entries replaced.
        fn slow() -> &'static Slow;
        /// Acquire when it need not wait: `Ok(Some(got))`; `Ok(None)`:
        /// take the slow path; `Err(())`: an exception is set.
        fn take(py: Python<'_>, this: &Self, blocking: bool) -> Result<Option<bool>, ()>;
        /// Release by the common path; `false`: the slow path raises.
        fn give(this: &Self) -> bool;
    }

    impl FastLock for Lock {
        fn slow() -> &'static Slow {
            &LOCK_SLOW
        }
        fn take(py: Python<'_>, this: &Self, blocking: bool) -> Result<Option<bool>, ()> {
            lock_try(py, this, blocking)
        }
        fn give(this: &Self) -> bool {
            lock_give(this)
        }
    }

    impl FastLock for RLock {
        fn slow() -> &'static Slow {
            &RLOCK_SLOW
        }
        fn take(py: Python<'_>, this: &Self, blocking: bool) -> Result<Option<bool>, ()> {
            rlock_try(py, this, blocking)
        }
        fn give(this: &Self) -> bool {
            rlock_give(this)
        }
    }

    /// Install the fast entries (once, at module init).
    pub fn install(m: &Bound<'_, PyModule>) -> PyResult<()> {
        install_for::<Lock>(m.py())?;
        install_for::<RLock>(m.py())
    }

    fn install_for<T: FastLock>(py: Python<'_>) -> PyResult<()> {
        let t = py.get_type::<T>();
        let slow = T::slow();
        replace_method(&t, c"acquire", ACQUIRE_DOC, acquire::<T>, &slow[ACQUIRE])?;
        replace_method(&t, c"__enter__", ENTER_DOC, enter::<T>, &slow[ENTER])?;
        replace_method(&t, c"release", RELEASE_DOC, release::<T>, &slow[RELEASE])?;
        replace_method(&t, c"__exit__", EXIT_DOC, exit::<T>, &slow[EXIT])?;
        Ok(())
    }

    /// A new reference to True or False.
    #[inline]
    fn py_bool(b: bool) -> *mut ffi::PyObject {
        // SAFETY: Py_True/Py_False are live objects; returning one needs a
        // new reference, which Py_IncRef provides.
        unsafe {
            let o = if b { ffi::Py_True() } else { ffi::Py_False() };
            ffi::Py_IncRef(o);
            o
        }
    }

    /// What a no-keyword `acquire(...)` asks for, when it is a fast case:
    /// `Some(true)` blocking without timeout, `Some(false)` non-blocking.
    ///
    /// # Safety
    /// `args` is valid for `nargs` entries (the fastcall convention).
    #[inline]
    unsafe fn simple_blocking(args: *const *mut ffi::PyObject, nargs: isize) -> Option<bool> {
        match nargs {
            0 => Some(true),
            1 => {
                // SAFETY: one argument (nargs == 1).
                let a = unsafe { *args };
                // SAFETY: Py_True/Py_False only return the singletons'
                // addresses, compared here.
                let (t, f) = unsafe { (ffi::Py_True(), ffi::Py_False()) };
                if a == t {
                    Some(true)
                } else if a == f {
                    Some(false)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Hand a call on, unchanged, to the PyO3 method kept in `slow`.
    ///
    /// # Safety
    /// As the fastcall entries: what CPython passed, attached.
    #[inline(never)]
    unsafe fn slow(
        slow: &PyOnceLock<Py<PyAny>>,
        py: Python<'_>,
        slf: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargs: isize,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject {
        let n = nargs as usize;
        // SAFETY: forwarding exactly what CPython passed us.
        unsafe { forward(slow, py, slf, fastcall_args(args, n, kwnames), n, kwnames) }
    }

    /// `Lock.acquire()` / `acquire(True)` / `acquire(False)` when it need
    /// not wait; `Err(())` when the order check raised (exception set).
    #[inline]
    fn lock_try(py: Python<'_>, this: &Lock, blocking: bool) -> Result<Option<bool>, ()> {
        if !order::enabled() {
            return Ok(if this.core.try_acquire() { Some(true) } else if blocking { None } else { Some(false) });
        }
        if blocking {
            if let Err(e) = lock_order::before(py, &this.core.probe) {
                e.restore(py);
                return Err(());
            }
        }
        if this.core.try_acquire() {
            lock_order::acquired(this.core.clone());
            return Ok(Some(true));
        }
        Ok(if blocking { None } else { Some(false) })
    }

    /// `RLock.acquire()` / `acquire(True)` / `acquire(False)` when it need
    /// not wait; `Ok(None)`: take the slow path; `Err(())` when the order
    /// check raised (exception set). Re-entering never checks the order.
    #[inline]
    fn rlock_try(py: Python<'_>, this: &RLock, blocking: bool) -> Result<Option<bool>, ()> {
        if order::enabled() && !this.core.is_owned() {
            if blocking {
                if let Err(e) = lock_order::before(py, this.core.probe()) {
                    e.restore(py);
                    return Err(());
                }
            }
            return Ok(match this.core.try_acquire() {
                Ok(true) => {
                    lock_order::acquired(this.core.clone());
                    Some(true)
                }
                Ok(false) if !blocking => Some(false),
                _ => None,
            });
        }
        Ok(match this.core.try_acquire() {
            Ok(true) => Some(true),
            Ok(false) if !blocking => Some(false),
            _ => None,
        })
    }

    /// Release by the common path; `false` when not locked (the slow path
    /// raises the error).
    #[inline]
    fn lock_give(this: &Lock) -> bool {
        if !this.core.release() {
            return false;
        }
        if order::enabled() {
            lock_order::released(&*this.core);
        }
        true
    }

    /// Release one level by the common path; `false`: not owned (the slow
    /// path raises the error).
    #[inline]
    fn rlock_give(this: &RLock) -> bool {
        if this.core.release().is_err() {
            return false;
        }
        if order::enabled() && !this.core.is_owned() {
            lock_order::released(&*this.core);
        }
        true
    }

    /// `acquire(...)`: the no-keyword, no-timeout calls are fast.
    ///
    /// # Safety
    /// Called by CPython only, as a `METH_FASTCALL | METH_KEYWORDS` method
    /// of `T`: attached, `slf` an instance of that class (its method
    /// descriptor checks), the arguments as the convention passes them.
    unsafe extern "C" fn acquire<T: FastLock>(
        slf: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject {
        // SAFETY: CPython calls a method attached to the interpreter.
        let py = unsafe { Python::assume_attached() };
        // SAFETY: `nargsf` is the count CPython passed, flags included.
        let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) };
        // SAFETY: `args` is valid for `nargs` entries.
        let blocking = if kwnames.is_null() { unsafe { simple_blocking(args, nargs) } } else { None };
        if let Some(blocking) = blocking {
            // SAFETY: `slf` is a `T` (or subclass) instance.
            let this = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<T>() };
            match T::take(py, this.get(), blocking) {
                Ok(Some(b)) => return py_bool(b),
                Ok(None) => {}
                Err(()) => return std::ptr::null_mut(),
            }
        }
        // SAFETY: forwarding what CPython passed us.
        unsafe { slow(&T::slow()[ACQUIRE], py, slf, args, nargs, kwnames) }
    }

    /// `__enter__()`.
    ///
    /// # Safety
    /// As [`acquire`].
    unsafe extern "C" fn enter<T: FastLock>(
        slf: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject {
        // SAFETY: see acquire.
        let py = unsafe { Python::assume_attached() };
        // SAFETY: `nargsf` is the count CPython passed, flags included.
        let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) };
        if kwnames.is_null() && nargs == 0 {
            // SAFETY: `slf` is a `T` (or subclass) instance.
            let this = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<T>() };
            match T::take(py, this.get(), true) {
                Ok(Some(b)) => return py_bool(b),
                Ok(None) => {}
                Err(()) => return std::ptr::null_mut(),
            }
        }
        // SAFETY: forwarding what CPython passed us.
        unsafe { slow(&T::slow()[ENTER], py, slf, args, nargs, kwnames) }
    }

    /// `release()` (`which` = [`RELEASE`], no arguments) and
    /// `__exit__(t, v, tb)` (`which` = [`EXIT`], up to three).
    ///
    /// # Safety
    /// As [`acquire`].
    #[inline(always)]
    unsafe fn give_entry<T: FastLock>(
        which: usize,
        slf: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject {
        // SAFETY: see acquire.
        let py = unsafe { Python::assume_attached() };
        // SAFETY: `nargsf` is the count CPython passed, flags included.
        let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) };
        let most = if which == EXIT { 3 } else { 0 };
        if kwnames.is_null() && nargs <= most {
            // SAFETY: `slf` is a `T` (or subclass) instance.
            let this = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<T>() };
            if T::give(this.get()) {
                return none();
            }
        }
        // SAFETY: forwarding what CPython passed us.
        unsafe { slow(&T::slow()[which], py, slf, args, nargs, kwnames) }
    }

    /// # Safety
    /// As [`acquire`].
    unsafe extern "C" fn release<T: FastLock>(
        slf: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject {
        // SAFETY: forwarded from our caller (CPython).
        unsafe { give_entry::<T>(RELEASE, slf, args, nargsf, kwnames) }
    }

    /// # Safety
    /// As [`acquire`].
    unsafe extern "C" fn exit<T: FastLock>(
        slf: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject {
        // SAFETY: forwarded from our caller (CPython).
        unsafe { give_entry::<T>(EXIT, slf, args, nargsf, kwnames) }
    }
}

pub use fast::install as install_fast;
