//! `plait.futures`: the Rust part of `Future`, `ThreadPoolExecutor` and
//! `Executor.map`.
//!
//! `python/plait/futures/` derives the public classes from these and from
//! the standard library's (`isinstance(f, concurrent.futures.Future)` holds,
//! and asyncio accepts the executor). One idea per file:
//!
//! - `future.rs`: `_FutureCore`, the state machine of `plait_core::future`
//!   as a Python object, and the `_condition` / `_waiters` / `_state`
//!   protocol the standard library's `wait` and `as_completed` rely on;
//! - `pickled.rs`: outcomes that arrive as a worker process's bytes, decoded
//!   by the first reader, with the remote traceback as `__cause__`;
//! - `thread_pool.rs`: `_ThreadPoolCore` and its `_Worker` threads, the
//!   fork hook, the interpreter-exit flag;
//! - `map.rs`: `_MapIterator`, the one `Executor.map` both executors use;
//! - `label.rs`: what `plait.debug` shows of a submitted future: the
//!   callable's name and the call site.
//!
//! The exceptions are the standard library's, looked up in `errors.rs`. The
//! process pool (`process/pool.rs`) builds on the items re-exported here.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

mod future;
mod label;
mod map;
mod pickled;
mod thread_pool;

// What the process pool (`process/pool.rs`) builds its futures from.
pub(crate) use future::{run_callbacks_of, FutureCore, PoolTask};
pub(crate) use label::label_call;
pub(crate) use pickled::{decode_pickled, Pickled};

type Obj = Py<PyAny>;

static FUTURE_TYPE: PyOnceLock<Obj> = PyOnceLock::new();
static DUMPS_CALL: PyOnceLock<Obj> = PyOnceLock::new();

/// `plait.futures.Future`, the class executors make their futures of.
pub(crate) fn future_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    FUTURE_TYPE
        .get_or_try_init(py, || py.import("plait.futures")?.getattr("Future").map(Bound::unbind))
        .map(|t| t.bind(py))
}

/// `plait.futures._dumps_call(fn, args, kwargs)`: a call as a worker
/// process receives it.
pub(crate) fn dumps_call(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    DUMPS_CALL
        .get_or_try_init(py, || py.import("plait.futures")?.getattr("_dumps_call").map(Bound::unbind))
        .map(|t| t.bind(py))
}

/// Register everything with the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FutureCore>()?;
    m.add_class::<thread_pool::ThreadPoolCore>()?;
    m.add_class::<thread_pool::Worker>()?;
    m.add_class::<map::MapIterator>()?;
    m.add_function(wrap_pyfunction!(thread_pool::_interpreter_exiting, m)?)?;
    m.add_function(wrap_pyfunction!(map::_executor_map, m)?)?;
    Ok(())
}
