//! Lock order from Python: the binding's half of `plait_core::debug::order`.
//!
//! Before a blocking acquire of a Lock or RLock (its first level), the
//! thread's held stack says which orders are new to it; only then is the
//! graph consulted, and only for an edge the graph has never seen is the
//! Python stack captured (with no Rust lock held: the core's two phases).
//! An inversion becomes `warnings.warn(plait.debug.LockOrderWarning(msg))`
//! *before* the acquire blocks, so it is reported on a run that does not
//! deadlock too; if the warning raises (`-W error`), the acquire raises and
//! does not take the lock.
//!
//! Switched on and off by `_debug_configure(lock_order=...)` (`debug/mod.rs`).

use std::sync::Arc;

use plait_core::debug::order::{self, Held, Inversion, GRAPH};
use plait_core::debug::Probe;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// Lock-order bookkeeping before a blocking acquire of a lock whose probe
/// is `probe` (lock_order mode only; the caller checks [`order::enabled`]).
/// `Err` when the inversion warning raised: the caller must not acquire.
#[inline]
pub fn before(py: Python<'_>, probe: &Probe) -> PyResult<()> {
    let class = probe.class();
    let pending = order::with_held(|h| h.unknown_edges(class));
    if pending.is_empty() {
        return Ok(());
    }
    new_orders(py, probe, class, &pending)
}

/// The thread took `lock` (lock_order mode only).
#[inline]
pub fn acquired(lock: Arc<dyn Held>) {
    let class = lock.probe().class();
    order::push(class, lock);
}

/// The thread released `lock` (lock_order mode only).
#[inline]
pub fn released(lock: &dyn Held) {
    order::pop(lock);
}

/// Orders this thread has not taken before: record those the graph lacks,
/// with this thread's stack, and warn about the inversions they make.
#[cold]
fn new_orders(py: Python<'_>, probe: &Probe, class: u32, pending: &[u32]) -> PyResult<()> {
    let missing = GRAPH.missing(pending, class);
    let mut result = Ok(());
    if !missing.is_empty() {
        let stack = capture_stack(py);
        let found = GRAPH.record(&missing, class, &stack);
        for inv in found {
            // One warning per call: if it raises, the acquire raises.
            if result.is_ok() {
                result = warn(py, probe, &inv, &stack);
            }
        }
    }
    order::with_held(|h| {
        for f in pending {
            h.learn(*f, class);
        }
    });
    result
}

/// The calling Python thread's stack, formatted as `traceback` does.
fn capture_stack(py: Python<'_>) -> Box<str> {
    let get = || -> PyResult<String> {
        let lines = py.import("traceback")?.call_method0("format_stack")?;
        Ok(lines.extract::<Vec<String>>()?.concat())
    };
    get().unwrap_or_else(|e| format!("  <stack unavailable: {e}>\n")).into_boxed_str()
}

/// `'name' (created at site)`, or just the site when it is the name.
fn describe(name: &str, site: &str) -> String {
    if name == site || site.is_empty() {
        format!("'{name}'")
    } else {
        format!("'{name}' (created at {site})")
    }
}

/// The warning's text: both locks, both stacks.
fn message(probe: &Probe, inv: &Inversion<Box<str>>, now: &str) -> String {
    let taking = describe(probe.name(), probe.site());
    let held = order::with_held(|h| h.find(inv.held).map(|l| describe(l.probe().name(), l.probe().site())))
        .unwrap_or_else(|| format!("'{}'", order::class_name(inv.held)));
    format!(
        "lock order inversion: taking {taking} while holding {held}, but {held} was taken \
         while holding {taking} before; two threads doing both can deadlock.\n\
         Stack now (taking {taking} while holding {held}):\n{now}\
         Stack when {held} was first taken while holding {taking}:\n{then}",
        then = inv.then
    )
}

static WARNING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `plait.debug.LockOrderWarning`, imported on first use (the package is
/// Python, loaded after this module); `RuntimeWarning`, its base class, if
/// it cannot be imported.
fn category(py: Python<'_>) -> Bound<'_, PyAny> {
    let found = WARNING.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("plait.debug")?.getattr("LockOrderWarning")?.unbind())
    });
    match found {
        Ok(cls) => cls.bind(py).clone(),
        Err(_) => py.get_type::<pyo3::exceptions::PyRuntimeWarning>().into_any(),
    }
}

/// `warnings.warn(plait.debug.LockOrderWarning(msg))`, pointing at the
/// caller of acquire.
fn warn(py: Python<'_>, probe: &Probe, inv: &Inversion<Box<str>>, now: &str) -> PyResult<()> {
    let w = category(py).call1((message(probe, inv, now),))?;
    py.import("warnings")?.call_method1("warn", (w,))?;
    Ok(())
}
