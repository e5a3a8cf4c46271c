//! The binding of `plait.debug`: the raw state handed to the Python layer
//! (`python/plait/debug/`), the settings, and the calls back into Python
//! when a deadlock or a stall is found.
//!
//! The Python layer builds the graph and every text; this side only copies
//! out what the core knows (`_debug_state`) and decides *when* to report:
//! a deadlock found before parking (`deadlock="report"`), a cycle or a
//! stall noticed by a parked thread's periodic check ([`Watch`]), or a
//! refused wait (`deadlock="raise"`, see `wait::interrupted_error`).

pub mod agent;
pub mod order;
pub mod site;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use plait_core::debug::waits::{self, Mode, PATIENCE};
use plait_core::debug::{Cycle, Holder, RunsOn, View, Waiter};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// Nanoseconds of CLOCK_MONOTONIC as `time.monotonic()` seconds.
fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn opt_secs(ns: u64) -> Option<f64> {
    (ns != 0).then(|| secs(ns))
}

/// The cycle as Python sees it: `[(thread ident, primitive id), ...]`.
pub fn cycle_to_py<'py>(py: Python<'py>, cycle: &Cycle) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, cycle.links.iter().map(|l| (l.thread, l.id)))
}

/// The report text of `cycle`, written by the Python layer.
fn cycle_report(py: Python<'_>, cycle: &Cycle) -> PyResult<String> {
    let debug = py.import("plait.debug")?;
    debug.call_method1("_on_deadlock", (cycle_to_py(py, cycle)?, cycle.certain))?.extract()
}

/// `plait.debug.DeadlockError` carrying the report of `cycle`.
pub fn deadlock_error(py: Python<'_>, cycle: &Cycle) -> PyErr {
    let make = || -> PyResult<PyErr> {
        let text = cycle_report(py, cycle)?;
        let cls = py.import("plait.debug")?.getattr("DeadlockError")?;
        Ok(PyErr::from_value(cls.call1((text,))?))
    };
    make().unwrap_or_else(|e| e)
}

/// Write a report to stderr and to the `plait.debug` logger (when the
/// program configured a handler for it).
fn emit(py: Python<'_>, text: &str) -> PyResult<()> {
    let stderr = py.import("sys")?.getattr("stderr")?;
    if !stderr.is_none() {
        stderr.call_method1("write", (text,))?;
        if !text.ends_with('\n') {
            stderr.call_method1("write", ("\n",))?;
        }
        stderr.call_method0("flush")?;
    }
    let logger = py.import("logging")?.call_method1("getLogger", ("plait.debug",))?;
    if logger.call_method0("hasHandlers")?.is_truthy()? {
        logger.call_method1("warning", ("%s", text))?;
    }
    Ok(())
}

/// Report `cycle` (once it is known to be new). Errors of the reporting
/// code itself go to `sys.unraisablehook`: a report must never break the
/// wait it describes.
fn report_cycle(py: Python<'_>, cycle: &Cycle) {
    if let Err(e) = cycle_report(py, cycle).and_then(|t| emit(py, &t)) {
        e.write_unraisable(py, None);
    }
}

/// The core's report hook (`deadlock="report"`, before parking). Called
/// detached, with no Rust lock held.
fn report_hook(cycle: &Cycle) {
    Python::attach(|py| report_cycle(py, cycle));
}

/// Install the hooks (at module import).
pub fn install() {
    waits::set_report_hook(report_hook);
}

// ---- the periodic check of a parked thread --------------------------------

/// A set of (thread, primitive) waits: one stall.
type StallKey = Vec<(u64, usize)>;

/// Stalls already reported.
static STALLS: Mutex<Option<HashSet<StallKey>>> = Mutex::new(None);

/// How often a parked thread checks for a cycle it is part of: first when
/// the cycle could have lasted [`PATIENCE`], then less and less often
/// (a cycle is closed by the last thread to park, whose first check finds
/// it, so the later checks only cost wakeups).
const LONGEST_GAP: Duration = Duration::from_secs(32);

/// A parked thread's periodic look at the wait table (the interrupt check
/// of every binding wait, see `wait::detached`). Free to make: the clock is
/// first read on the first wakeup, one slice into the wait.
pub struct Watch {
    slice: Duration,
    next: Mutex<Option<(Instant, Duration)>>,
}

impl Watch {
    /// A watch for a wait that wakes every `slice` to run [`Watch::tick`].
    pub fn new(slice: Duration) -> Self {
        Watch { slice, next: Mutex::new(None) }
    }

    /// How often a non-main thread's wait must wake to run
    /// [`Watch::tick`], if at all.
    pub fn slice() -> Option<Duration> {
        if !plait_core::debug::tracking() || waits::mode() == Mode::Off {
            return waits::stall();
        }
        Some(waits::stall().map_or(PATIENCE, |s| s.min(PATIENCE)))
    }

    /// Called on every wakeup of the wait; does its work when due.
    /// Never interrupts the wait (returns `false`).
    pub fn tick(&self) -> bool {
        let now = Instant::now();
        {
            let mut next = self.next.lock();
            let (due, gap) = *next.get_or_insert_with(|| {
                // The first wakeup, one slice into the wait: the first look
                // is due PATIENCE (or the stall time, if shorter) after
                // the wait began.
                let first = waits::stall().map_or(PATIENCE, |s| s.min(PATIENCE));
                (now + first.saturating_sub(self.slice), first)
            });
            if now < due {
                return false;
            }
            let gap = (gap * 2).min(LONGEST_GAP);
            let gap = waits::stall().map_or(gap, |s| gap.min(s));
            *next = Some((now + gap, gap));
        }
        // Without a setting only a certain cycle is reported: a probable one
        // (a Semaphore used as a counter, a Lock used as a signal) is what
        // correct programs do every day, and a report nobody asked for must
        // not be a false alarm. `deadlock="report"` reports those too.
        let mode = waits::mode();
        if mode != Mode::Off {
            if let Some(cycle) = waits::current_cycle().filter(|c| c.certain || mode != Mode::Patient) {
                if waits::first_report(&cycle) {
                    Python::attach(|py| report_cycle(py, &cycle));
                }
            }
        }
        if let Some(stall) = waits::stall() {
            self.check_stall(stall);
        }
        false
    }

    fn check_stall(&self, stall: Duration) {
        let now_ns = plait_core::debug::now_ns();
        let stall_ns = u64::try_from(stall.as_nanos()).unwrap_or(u64::MAX);
        Python::attach(|py| {
            let idents: Vec<u64> = match python_threads(py) {
                Ok(v) => v,
                Err(e) => return e.write_unraisable(py, None),
            };
            if crate::sync::timer::_timer_pending().0 > 0 {
                return;
            }
            let waits = waits::thread_waits();
            let all_long = idents.iter().all(|i| {
                waits.iter().any(|w| w.ident == *i && now_ns.saturating_sub(w.since_ns) >= stall_ns)
            });
            if !all_long || !waits::all_stuck(&idents) {
                return;
            }
            let mut key: Vec<(u64, usize)> =
                waits.iter().filter(|w| idents.contains(&w.ident)).map(|w| (w.ident, w.id)).collect();
            key.sort_unstable();
            if !STALLS.lock().get_or_insert_with(HashSet::new).insert(key) {
                return;
            }
            let r = py
                .import("plait.debug")
                .and_then(|d| d.call_method1("_on_stall", (stall.as_secs_f64(),)))
                .and_then(|text| emit(py, &text.extract::<String>()?));
            if let Err(e) = r {
                e.write_unraisable(py, None);
            }
        });
    }
}

/// The idents of every Python thread of this interpreter.
fn python_threads(py: Python<'_>) -> PyResult<Vec<u64>> {
    let frames = py.import("sys")?.call_method0("_current_frames")?;
    frames.call_method0("keys")?.try_iter()?.map(|k| k?.extract()).collect()
}

// ---- the raw state -----------------------------------------------------------

fn holder_dict<'py>(py: Python<'py>, h: &Holder) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ident", h.ident)?;
    d.set_item("since", opt_secs(h.since_ns))?;
    d.set_item("count", h.count)?;
    Ok(d)
}

fn waiter_dict<'py>(py: Python<'py>, w: &Waiter) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ident", w.ident)?;
    d.set_item("since", secs(w.since_ns))?;
    d.set_item("deadline", w.deadline_ns.map(secs))?;
    Ok(d)
}

fn view_dict<'py>(py: Python<'py>, v: &View) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", v.id)?;
    d.set_item("kind", v.kind.name())?;
    d.set_item("name", &v.name)?;
    d.set_item("site", &v.site)?;
    d.set_item("holders", v.holders.iter().map(|h| holder_dict(py, h)).collect::<PyResult<Vec<_>>>()?)?;
    d.set_item("waiters", v.waiters.iter().map(|w| waiter_dict(py, w)).collect::<PyResult<Vec<_>>>()?)?;
    let s = PyDict::new(py);
    s.set_item("contended", v.stats.contended)?;
    s.set_item("wait_total", secs(v.stats.wait_total_ns))?;
    s.set_item("wait_max", secs(v.stats.wait_max_ns))?;
    s.set_item("hold_max", secs(v.stats.hold_max_ns))?;
    d.set_item("stats", s)?;
    d.set_item("loose", v.loose)?;
    if let Some((state, runs_on)) = v.future {
        d.set_item("state", state)?;
        let r = match runs_on {
            RunsOn::Nothing => None,
            RunsOn::Thread(t) => Some(("thread", t)),
            RunsOn::Worker(p) => Some(("worker", u64::from(p))),
        };
        match r {
            None => d.set_item("runs_on", py.None())?,
            Some((k, v)) => {
                let r = PyDict::new(py);
                r.set_item(k, v)?;
                d.set_item("runs_on", r)?;
            }
        }
    }
    Ok(d)
}

/// Views of every live primitive, copied out detached (the primitives'
/// internal mutexes are short, but never waited for while attached).
fn views(py: Python<'_>, keep: impl Fn(&View) -> bool + Send + Sync) -> Vec<View> {
    py.detach(|| plait_core::debug::views(keep))
}

/// `_debug_state(all=False)`: the raw state `plait.debug` builds its graph
/// from (layout in `python/plait/debug/_graph.py`).
#[pyfunction]
#[pyo3(signature = (all = false))]
pub fn _debug_state(py: Python<'_>, all: bool) -> PyResult<Bound<'_, PyDict>> {
    let waits = py.detach(waits::thread_waits);
    let waited: HashSet<usize> = waits.iter().map(|w| w.id).collect();
    let views = views(py, |v| all || v.is_active() || waited.contains(&v.id));
    let d = PyDict::new(py);
    d.set_item("version", 1)?;
    d.set_item("pid", std::process::id())?;
    d.set_item("now", secs(plait_core::debug::now_ns()))?;
    d.set_item("primitives", views.iter().map(|v| view_dict(py, v)).collect::<PyResult<Vec<_>>>()?)?;
    let w = PyDict::new(py);
    for t in &waits {
        let e = PyDict::new(py);
        e.set_item("id", t.id)?;
        e.set_item("since", secs(t.since_ns))?;
        e.set_item("deadline", t.deadline_ns.map(secs))?;
        w.set_item(t.ident, e)?;
    }
    d.set_item("waits", w)?;
    d.set_item("workers", workers(py)?)?;
    Ok(d)
}

/// The process pools' workers (from the pools' own registry).
fn workers(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    crate::process::debug::workers_list(py)
}

/// What the core knows without the interpreter (no Python names or stacks):
/// each parked thread's wait and each held primitive's holders. The inspect
/// agent sends it when the interpreter is busy. Call detached.
pub fn core_summary() -> String {
    use std::fmt::Write;
    let now = plait_core::debug::now_ns();
    let ago = |ns: u64| if ns == 0 { "an unknown time".to_owned() } else { format!("{:.3} s", secs(now.saturating_sub(ns))) };
    let views = plait_core::debug::views(View::is_active);
    let label = |v: &View| {
        if v.name == v.site || v.name.is_empty() {
            format!("{} created at {}", v.kind.name(), v.site)
        } else {
            format!("{} \"{}\" (created at {})", v.kind.name(), v.name, v.site)
        }
    };
    let mut out = String::from("What plait's Rust core knows (thread idents; no Python names or stacks):\n");
    let waits = waits::thread_waits();
    for w in &waits {
        let target = views.iter().find(|v| v.id == w.id);
        let what = target.map_or_else(|| format!("primitive {:#x}", w.id), label);
        let _ = writeln!(out, "  thread {} waits for {what} for {}", w.ident, ago(w.since_ns));
        for h in target.map(|v| v.holders.as_slice()).unwrap_or_default() {
            let _ = writeln!(out, "    which is held by thread {} for {}", h.ident, ago(h.since_ns));
        }
    }
    for v in views.iter().filter(|v| !v.holders.is_empty() && !waits.iter().any(|w| w.id == v.id)) {
        for h in &v.holders {
            let _ = writeln!(out, "  {} is held by thread {} for {}", label(v), h.ident, ago(h.since_ns));
        }
    }
    if waits.is_empty() && views.iter().all(|v| v.holders.is_empty()) {
        out.push_str("  no thread waits on or holds a plait primitive\n");
    }
    out
}

/// `_debug_stats()`: every live primitive that was ever contended.
#[pyfunction]
pub fn _debug_stats(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    views(py, |v| v.stats.contended > 0).iter().map(|v| view_dict(py, v)).collect()
}

// ---- settings ------------------------------------------------------------------

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Off => "off",
        Mode::Patient => "default",
        Mode::Report => "report",
        Mode::Raise => "raise",
    }
}

/// `_debug_configure(...)`: change the given settings, return them all.
/// `deadlock`: "report", "raise", "off" or "default" (a cycle lasting 2 s
/// is reported once); `stall`: seconds, or 0 to turn it off.
#[pyfunction]
#[pyo3(signature = (*, deadlock = None, lock_order = None, stall = None, inspect = None, tracking = None))]
pub fn _debug_configure<'py>(
    py: Python<'py>,
    deadlock: Option<&str>,
    lock_order: Option<bool>,
    stall: Option<&Bound<'py, PyAny>>,
    inspect: Option<bool>,
    tracking: Option<bool>,
) -> PyResult<Bound<'py, PyDict>> {
    if let Some(m) = deadlock {
        waits::set_mode(match m {
            "report" => Mode::Report,
            "raise" => Mode::Raise,
            "off" => Mode::Off,
            "default" => Mode::Patient,
            other => {
                return Err(PyValueError::new_err(format!(
                    "deadlock must be 'report', 'raise', 'off' or 'default', not {other:?}"
                )))
            }
        });
    }
    if let Some(s) = stall {
        let s = if s.is_none() { 0.0 } else { crate::wait::seconds(s)? };
        if s.is_nan() || s < 0.0 || !s.is_finite() {
            return Err(PyValueError::new_err("stall must be a non-negative number of seconds"));
        }
        waits::set_stall((s > 0.0).then(|| Duration::from_secs_f64(s)));
    }
    if let Some(t) = tracking {
        plait_core::debug::set_tracking(t);
    }
    if let Some(on) = inspect {
        agent::set_enabled(py, on)?;
    }
    if let Some(on) = lock_order {
        plait_core::debug::order::set_enabled(on);
    }
    let d = PyDict::new(py);
    d.set_item("deadlock", mode_name(waits::mode()))?;
    d.set_item("lock_order", plait_core::debug::order::enabled())?;
    d.set_item("stall", waits::stall().map(|s| s.as_secs_f64()))?;
    d.set_item("inspect", agent::is_enabled())?;
    d.set_item("tracking", plait_core::debug::tracking())?;
    Ok(d)
}

/// Register the functions on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    install();
    m.add_function(wrap_pyfunction!(_debug_state, m)?)?;
    m.add_function(wrap_pyfunction!(_debug_stats, m)?)?;
    m.add_function(wrap_pyfunction!(_debug_configure, m)?)?;
    agent::register(m)?;
    Ok(())
}
