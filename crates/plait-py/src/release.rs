//! Dropping Python references from threads that are not attached.
//!
//! A `Py<T>` dropped while detached is not released at once: PyO3 queues
//! the decref until some thread next enters Python *through PyO3*. For a
//! reference the process pool's supervisor drops (the future of a task that
//! finished detached), that can be a long time: a program that deleted a
//! task's result and does nothing with plait meanwhile keeps the future,
//! and so the result, alive (CPython's test_free_reference, issue #14406).
//!
//! [`drop_soon`] drops at once when this thread holds the GIL; otherwise
//! it parks the value in one list and asks the interpreter, through
//! `Py_AddPendingCall`, to run [`release`] in the main thread at its next
//! bytecode boundary, which drops the list attached. One pending call at a
//! time; any attached caller of [`release`] also empties the list.

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;
use pyo3::ffi;
use pyo3::prelude::*;

type Parked = Box<dyn Send>;

static PARKED: Mutex<Vec<Parked>> = Mutex::new(Vec::new());
/// The pid of the process whose interpreter has a pending call scheduled
/// that has not run yet (0: none). A pid, not a flag: a forked child
/// inherits the value but not the parent's pending call.
static SCHEDULED: AtomicU32 = AtomicU32::new(0);

/// Drop `value` (which holds Python references) with the GIL: now if this
/// thread holds it, else soon, in the main thread.
pub fn drop_soon<T: Send + 'static>(value: T) {
    // SAFETY: PyGILState_Check may be called by any thread, attached or not.
    if unsafe { ffi::PyGILState_Check() } == 1 {
        Python::attach(|_| drop(value));
        return;
    }
    PARKED.lock().push(Box::new(value));
    let me = std::process::id();
    if SCHEDULED.swap(me, Ordering::AcqRel) != me {
        // SAFETY: Py_AddPendingCall may be called from any thread without
        // the GIL; `run_release` is a plain function taking no argument.
        let rc = unsafe { ffi::Py_AddPendingCall(Some(run_release), std::ptr::null_mut()) };
        if rc != 0 {
            // The interpreter's queue is full: the next call tries again.
            SCHEDULED.store(0, Ordering::Release);
        }
    }
}

/// Drop what [`drop_soon`] parked (attached). The parked values are taken
/// under the list's mutex and dropped after it is released: a decref may
/// run Python code (a `__del__`, a weakref callback) that parks more.
pub fn release(_py: Python<'_>) {
    let parked = std::mem::take(&mut *PARKED.lock());
    drop(parked);
}

extern "C" fn run_release(_arg: *mut c_void) -> c_int {
    // Cleared before the list is taken: a value parked after this schedules
    // a new call.
    SCHEDULED.store(0, Ordering::Release);
    // A pending call runs in the main thread with the GIL held.
    Python::attach(release);
    0
}
