//! The process pools' workers as `plait.debug` shows them: every live
//! worker of every live pool of this process, with the task it runs.
//!
//! Each pool's supervisor publishes its workers once per turn
//! (`plait_core::pool::Shared::workers`); pools register here, by a weak
//! reference, when their supervisor starts. [`workers_view`] never waits:
//! it may run attached, from a signal-triggered dump, or in a forked child
//! whose parent's threads held a lock at the fork. The registry uses the
//! fork-safe spin mutex and is emptied in a forked child (a child's pools
//! inherited from its parent are not its own: their workers are the
//! parent's).

use std::sync::{Arc, OnceLock, Weak};

use plait_core::fork::{register_arc, AfterFork, Registration};
use plait_core::pool::{Shared, WorkerInfo};
use plait_core::spin::SpinMutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// One worker process of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub pid: u32,
    /// The pool's name: "ProcessPoolExecutor-N" or "Pool-N".
    pub pool: String,
    /// `plait_core::debug::id_of` of the future whose task it runs.
    pub task: Option<usize>,
    /// `CLOCK_MONOTONIC` ns when it started that task.
    pub since_ns: Option<u64>,
}

/// A pool whose workers can be listed (its supervisor's shared state).
pub(crate) trait PoolWorkers: Send + Sync {
    fn workers(&self) -> Option<Vec<WorkerInfo>>;
}

impl<T: Send + 'static> PoolWorkers for Shared<T> {
    fn workers(&self) -> Option<Vec<WorkerInfo>> {
        if self.is_stopped() {
            return Some(Vec::new());
        }
        Shared::workers(self)
    }
}

struct Entry {
    name: String,
    pool: Weak<dyn PoolWorkers>,
}

/// The registry of pools (see the module doc).
struct Pools {
    entries: SpinMutex<Vec<Entry>>,
}

impl AfterFork for Pools {
    /// # Safety
    /// As the trait: only from the atfork child handler, while the child
    /// has a single thread.
    unsafe fn after_fork_child(&self, _survivor: u64) {
        if self.entries.is_locked() {
            // SAFETY: single-threaded child (this function's contract): the
            // holder vanished with its thread.
            unsafe { self.entries.force_unlock() };
        }
        // The weak references are dropped here without running Python
        // (the pools are Rust objects).
        self.entries.lock().clear();
    }
}

fn pools() -> &'static Pools {
    static POOLS: OnceLock<(Arc<Pools>, Registration)> = OnceLock::new();
    &POOLS
        .get_or_init(|| {
            let p = Arc::new(Pools { entries: SpinMutex::new(Vec::new()) });
            let reg = register_arc(&p);
            (p, reg)
        })
        .0
}

/// Register a pool whose supervisor just started, under `name`.
pub(crate) fn register(name: String, pool: Weak<dyn PoolWorkers>) {
    let mut entries = pools().entries.lock();
    entries.retain(|e| e.pool.strong_count() > 0);
    entries.push(Entry { name, pool });
}

/// Every live worker of every live pool of this process, and the task each
/// runs. Never blocks (a pool whose supervisor is publishing at this very
/// moment may be missing).
pub fn workers_view() -> Vec<WorkerView> {
    let live: Vec<(String, Arc<dyn PoolWorkers>)> = {
        let Some(entries) = pools().entries.try_lock() else { return Vec::new() };
        entries.iter().filter_map(|e| Some((e.name.clone(), e.pool.upgrade()?))).collect()
    };
    let mut out = Vec::new();
    for (name, pool) in live {
        for w in pool.workers().unwrap_or_default() {
            out.push(WorkerView { pid: w.pid, pool: name.clone(), task: w.task, since_ns: w.since_ns });
        }
    }
    out
}

/// [`workers_view`] as the `"workers"` entries of `plait.debug`'s raw
/// state (`_debug_state`; times in seconds of `time.monotonic()`).
pub fn workers_list(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let list = PyList::empty(py);
    for w in workers_view() {
        let d = PyDict::new(py);
        d.set_item("pid", w.pid)?;
        d.set_item("pool", w.pool)?;
        d.set_item("task", w.task)?;
        d.set_item("since", w.since_ns.map(|ns| ns as f64 / 1e9))?;
        list.append(d)?;
    }
    Ok(list)
}
