//! Where a primitive was made, and what it is called.
//!
//! Every primitive's constructor takes a keyword-only `name=`; without it
//! the primitive is known by its creation site, `"file:line"` of the first
//! Python frame that is not plait's own code, the standard library's
//! `threading.py` / `queue.py`, nor asyncio (so a Condition or Queue whose
//! inner locks plait makes, a patched `threading` module, or a future made
//! by `loop.run_in_executor`, report the user's line) — unless that frame is
//! a module body: what a module makes at import is known by its own line.
//!
//! Cost: this runs on every construction, so it reads the frame stack
//! through the C API (`PyEval_GetFrame`, `PyFrame_GetCode`, `co_filename`,
//! `PyFrame_GetLineNumber`) rather than `sys._getframe`, and compares file
//! names against directories computed once; a small cache keyed by code
//! object and instruction skips the line-table walk for a line seen before.

use std::ffi::{c_int, c_void};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use plait_core::debug::Probe;
use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

/// The files whose frames are not creation sites.
struct Skip {
    /// plait's package directory, with a trailing `/`.
    plait_dir: String,
    /// The standard library's `threading.py` and `queue.py`.
    files: Vec<String>,
    /// asyncio's package directory, with a trailing `/`.
    asyncio_dir: String,
}

impl Skip {
    fn compute(py: Python<'_>) -> Skip {
        let file_of = |module: &str| -> Option<String> {
            py.import(module).ok()?.getattr("__file__").ok()?.extract::<String>().ok()
        };
        // The extension lives in the package's directory (installed or
        // editable), so its own file names the package.
        let plait_dir = file_of("plait._plait")
            .and_then(|f| f.rfind('/').map(|i| f[..=i].to_owned()))
            .unwrap_or_else(|| "\0".to_owned());
        let files: Vec<String> = ["threading", "queue"].iter().filter_map(|m| file_of(m)).collect();
        // Beside threading.py (not imported for this: asyncio is heavy).
        let asyncio_dir = files
            .first()
            .and_then(|f| f.rfind('/').map(|i| format!("{}asyncio/", &f[..=i])))
            .unwrap_or_else(|| "\0".to_owned());
        Skip { plait_dir, files, asyncio_dir }
    }

    fn skips(&self, file: &str) -> bool {
        file.starts_with(&self.plait_dir) || file.starts_with(&self.asyncio_dir) || self.files.iter().any(|f| f == file)
    }
}

static SKIP: PyOnceLock<Skip> = PyOnceLock::new();

/// What a site is when no Python frame made the primitive (a call from C
/// or a thread's bootstrap).
const UNKNOWN: &str = "<unknown>";

/// `PyFrame_GetLasti` (Python 3.11+), looked up once: the cache below is
/// keyed by it, and without it (3.10) every lookup computes its line.
type GetLasti = unsafe extern "C" fn(*mut ffi::PyFrameObject) -> c_int;

fn get_lasti() -> Option<GetLasti> {
    static F: OnceLock<Option<GetLasti>> = OnceLock::new();
    *F.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only
        // looks a symbol up.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"PyFrame_GetLasti".as_ptr()) };
        // SAFETY: when present, the symbol is the C API function of that
        // name, whose signature is `int (PyFrameObject *)`.
        (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, GetLasti>(p) })
    })
}

/// One remembered frame position: the code object (kept alive, so its
/// address names it), the instruction, and what it means: `None` for a
/// frame to skip, else the site.
struct Slot {
    code: Py<PyAny>,
    lasti: c_int,
    site: Option<Arc<str>>,
}

/// Computing a line number walks the code's line table, the largest cost of
/// a site (most of a Lock's construction): positions already seen are
/// remembered, direct-mapped.
const SLOTS: usize = 256;
static CACHE: Mutex<Vec<Option<Slot>>> = Mutex::new(Vec::new());

fn slot_of(code: *mut ffi::PyObject, lasti: c_int) -> usize {
    let h = (code as usize >> 4) ^ (lasti as usize).wrapping_mul(0x9E37_79B9);
    h % SLOTS
}

/// What the frame at (`code`, `lasti`) says: skip it, or its site.
fn frame_site(py: Python<'_>, skip: &Skip, frame: *mut ffi::PyFrameObject, code: &Bound<'_, PyAny>) -> Option<Arc<str>> {
    let file = code.getattr(intern!(py, "co_filename")).ok()?;
    let file = file.cast::<PyString>().ok()?.to_str().ok()?;
    // A skipped file's module body is a site all the same: a lock made at
    // import time (plait's, asyncio's, threading's own) is known by its own
    // line, not by importlib's frames or whichever module imported it.
    if skip.skips(file) {
        let name = code.getattr(intern!(py, "co_name")).ok()?;
        if name.cast::<PyString>().ok()?.to_str().ok()? != "<module>" {
            return None;
        }
    }
    // SAFETY: `frame` is a live frame.
    let line = unsafe { ffi::PyFrame_GetLineNumber(frame) };
    Some(format!("{file}:{line}").into())
}

/// `frame_site` through the cache.
fn cached_site(py: Python<'_>, skip: &Skip, frame: *mut ffi::PyFrameObject, code: &Bound<'_, PyAny>) -> Option<Arc<str>> {
    let Some(lasti) = get_lasti() else { return frame_site(py, skip, frame, code) };
    // SAFETY: `frame` is a live frame.
    let lasti = unsafe { lasti(frame) };
    let i = slot_of(code.as_ptr(), lasti);
    // try_lock: never wait (a forked child may find it held by a thread
    // that is gone; another thread may be filling it).
    if let Some(cache) = CACHE.try_lock() {
        if let Some(Some(s)) = cache.get(i) {
            if s.code.as_ptr() == code.as_ptr() && s.lasti == lasti {
                return s.site.clone();
            }
        }
    }
    let site = frame_site(py, skip, frame, code);
    let evicted = CACHE.try_lock().and_then(|mut cache| {
        if cache.is_empty() {
            cache.resize_with(SLOTS, || None);
        }
        cache[i].replace(Slot { code: code.clone().unbind(), lasti, site: site.clone() })
    });
    // Dropped after the cache's mutex is released: a code object's last
    // reference may run a weakref callback.
    drop(evicted);
    site
}

thread_local! {
    /// This thread is computing [`SKIP`] (it imports modules, which could
    /// make primitives: those get no site rather than re-entering).
    static COMPUTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn skip(py: Python<'_>) -> Option<&'static Skip> {
    if let Some(s) = SKIP.get(py) {
        return Some(s);
    }
    if COMPUTING.with(|c| c.replace(true)) {
        return None;
    }
    let computed = Skip::compute(py);
    COMPUTING.with(|c| c.set(false));
    let _ = SKIP.set(py, computed);
    SKIP.get(py)
}

/// The creation site `"file:line"` of the calling Python code.
pub fn creation_site(py: Python<'_>) -> Arc<str> {
    let Some(skip) = skip(py) else { return unknown() };
    // SAFETY: attached; PyEval_GetFrame returns a borrowed reference to the
    // current frame (or NULL), alive for as long as this call runs.
    let mut frame = unsafe { ffi::PyEval_GetFrame() };
    // Owns the frames got from PyFrame_GetBack (new references).
    let mut _owner: Option<Bound<'_, PyAny>> = None;
    while !frame.is_null() {
        // SAFETY: `frame` is a live frame; PyFrame_GetCode returns a new
        // (never NULL) reference to its code object.
        let code = unsafe { Bound::from_owned_ptr(py, ffi::PyFrame_GetCode(frame).cast()) };
        if let Some(site) = cached_site(py, skip, frame, &code) {
            return site;
        }
        // SAFETY: `frame` is a live frame; PyFrame_GetBack returns a new
        // reference to its caller, or NULL at the bottom.
        let back = unsafe { ffi::PyFrame_GetBack(frame) };
        if back.is_null() {
            break;
        }
        // SAFETY: `back` is a new reference, owned from here on.
        let back = unsafe { Bound::from_owned_ptr(py, back.cast()) };
        frame = back.as_ptr().cast();
        _owner = Some(back);
    }
    unknown()
}

/// The site of an object made with no Python code on the stack.
fn unknown() -> Arc<str> {
    static SITE: OnceLock<Arc<str>> = OnceLock::new();
    SITE.get_or_init(|| Arc::from(UNKNOWN)).clone()
}

/// Check a `name=` argument: None (the default: the creation site) or a
/// str; anything else is a TypeError.
pub fn name_arg(name: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    match name {
        None => Ok(None),
        Some(n) if n.is_none() => Ok(None),
        Some(n) => match n.cast::<PyString>() {
            Ok(s) => Ok(Some(s.to_str()?.to_owned())),
            Err(_) => Err(PyTypeError::new_err(format!(
                "name must be a str, not {}",
                n.get_type().name()?
            ))),
        },
    }
}

/// Give `probe` its name (`None`: the creation site) and creation site.
pub fn label(py: Python<'_>, probe: &Probe, name: Option<String>) {
    probe.label(name, creation_site(py));
}

/// Check `name` and label `probe` with it (constructors that have nothing
/// else to validate first).
pub fn label_arg(py: Python<'_>, probe: &Probe, name: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    label(py, probe, name_arg(name)?);
    Ok(())
}
