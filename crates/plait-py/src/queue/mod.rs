//! `plait.queue`'s Rust half: Queue / LifoQueue / PriorityQueue (one Rust
//! class, `_QueueCore`, the order chosen by the Python subclass) and
//! SimpleQueue.
//!
//! The Python classes in `python/plait/queue.py` derive from these and from
//! the standard library's classes, so `isinstance(q, queue.Queue)` holds. A
//! user subclass that overrides the storage hooks (`_init`, `_qsize`,
//! `_put`, `_get`) is honoured by running the standard library's own
//! algorithm for that instance ("hooks mode"); everything else runs here.
//!
//! GIL rule: PriorityQueue compares items (user code) while holding the
//! queue's mutex, so no thread may wait for that mutex while attached; the
//! core takes it through `Gil`, which detaches on contention. Items are
//! never dropped (decref'd) while the mutex is held.
//!
//! * `queue_core.rs`: `_QueueCore` (bounded, FIFO/LIFO/priority, `join`,
//!   `shutdown`, hooks mode);
//! * `simple.rs`: `SimpleQueue`;
//! * `fastcall.rs`: the hand-written fast entries for `put(item)`/`get()`;
//! * `timeout.rs`: `timeout` and `maxsize` read as CPython's queues read them;
//! * here: what both classes share (the comparisons, the blocking `get`).

use std::time::Instant;

use plait_core::park::Outcome;
use plait_core::queue::Queue as CoreQueue;
use pyo3::prelude::*;

use crate::errors;
use crate::wait::detached;

mod fastcall;
mod queue_core;
mod simple;
mod timeout;

pub use queue_core::Queue;
pub use simple::SimpleQueue;

/// What the queues hold.
pub(crate) type Item = Py<PyAny>;

/// The comparison PriorityQueue uses: the items' own `<`.
pub(crate) fn less<'py>(py: Python<'py>) -> impl FnMut(&Item, &Item) -> PyResult<bool> + 'py {
    move |a, b| a.bind(py).lt(b.bind(py))
}

/// The exception an interrupted wait carries (Ctrl-C's, usually; a wait
/// refused by `deadlock="raise"` carries none).
pub(crate) fn interrupted(py: Python<'_>, err: Option<PyErr>) -> PyErr {
    crate::wait::interrupted_error(py, err)
}

/// `get` for both queue classes: try, then (if `block`) wait for an item
/// until the deadline `start` gives when the first wait begins (its
/// exception, if it has one, is raised then), retrying after each wakeup;
/// `queue.Empty` at the end.
pub(crate) fn blocking_get(
    py: Python<'_>,
    core: &CoreQueue<Item>,
    block: bool,
    start: impl FnOnce() -> PyResult<Option<Instant>>,
    mut try_get: impl FnMut() -> PyResult<Option<Item>>,
) -> PyResult<Item> {
    if let Some(item) = try_get()? {
        return Ok(item);
    }
    if !block {
        return Err(errors::empty(py));
    }
    let deadline = start()?;
    loop {
        let (out, err) = detached(py, deadline, |ctx| core.wait_not_empty(ctx));
        if out == Outcome::Interrupted {
            return Err(interrupted(py, err));
        }
        if let Some(item) = try_get()? {
            return Ok(item);
        }
        if out == Outcome::TimedOut || deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(errors::empty(py));
        }
    }
}

/// The comparison of queues that never compare (FIFO, LIFO): its error
/// type is uninhabited, so results carry no `PyErr`.
pub(crate) fn no_compare(_: &Item, _: &Item) -> Result<bool, std::convert::Infallible> {
    Ok(false)
}

/// Add the queue classes to the module, with their fast entries.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Queue>()?;
    m.add_class::<SimpleQueue>()?;
    fastcall::install(m)
}
