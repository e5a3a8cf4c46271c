//! `Selector`: an epoll selector with `selectors.BaseSelector`'s API, over
//! the core's poller (`plait_core::reactor`), which the loop polls
//! natively (`poll_into`, detached from the interpreter).
//!
//! Each registered file descriptor keeps asyncio's `SelectorKey` and its
//! data (the loop's `(reader, writer)` handle pair). The keys live under a
//! lock that is never held while Python code runs or while waiting: the
//! wait itself runs on the poller's descriptor with a per-thread buffer.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use plait_core::reactor::{Events, Poller, READ, WRITE};
use plait_core::spin::SpinMutex as Mutex;
use pyo3::exceptions::{PyKeyError, PyOverflowError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyInt;

use super::mapping::SelectorMapping;
use crate::errors::os_error;
use super::Obj;

pub(super) struct Registration {
    pub(super) key: Obj,
    pub(super) data: Obj,
}

pub(super) struct SelState {
    pub(super) poller: Option<Poller>,
    pub(super) keys: HashMap<RawFd, Registration>,
}

/// An epoll selector with `selectors.BaseSelector`'s API, which the loop
/// polls natively.
#[pyclass(module = "plait.loop", name = "Selector", frozen, subclass)]
pub struct Selector {
    pub(super) st: Mutex<SelState>,
    pub(super) epfd: RawFd,
    /// How many file objects are registered (read without the lock).
    pub(super) count: AtomicUsize,
}

static SELECTOR_KEY: PyOnceLock<Obj> = PyOnceLock::new();

fn selector_key<'py>(py: Python<'py>) -> PyResult<&'py Bound<'py, PyAny>> {
    SELECTOR_KEY
        .get_or_try_init(py, || py.import("selectors")?.getattr("SelectorKey").map(Bound::unbind))
        .map(|k| k.bind(py))
}

/// `selectors._fileobj_to_fd` (any fd >= 0; what does not fit a C int is
/// refused by `register`, and is not registered for the lookups).
fn fileobj_to_fd(fileobj: &Bound<'_, PyAny>) -> PyResult<i64> {
    let fd: i64 = if fileobj.is_instance_of::<PyInt>() {
        fileobj.extract()?
    } else {
        match fileobj.call_method0("fileno").and_then(|f| f.extract::<i64>()) {
            Ok(fd) => fd,
            Err(_) => return Err(PyValueError::new_err(format!("Invalid file object: {}", fileobj.repr()?))),
        }
    };
    if fd < 0 {
        return Err(PyValueError::new_err(format!("Invalid file descriptor: {fd}")));
    }
    Ok(fd)
}

/// An fd that epoll takes: what `select.epoll.register` says of one that
/// does not fit a C int.
fn c_fd(fd: i64) -> PyResult<RawFd> {
    RawFd::try_from(fd).map_err(|_| PyOverflowError::new_err("Python int too large to convert to C int"))
}

/// The epoll interest of `events` as `selectors` reads it: `events &
/// EVENT_READ`, `events & EVENT_WRITE` (a TypeError for what has no `&`).
/// With `check`, `register`'s test first: `not events or events & ~3` is
/// a ValueError.
fn events_mask(events: &Bound<'_, PyAny>, check: bool) -> PyResult<u32> {
    if check && (!events.is_truthy()? || events.bitand(!((READ | WRITE) as i64))?.is_truthy()?) {
        return Err(PyValueError::new_err(format!("Invalid events: {}", events.repr()?)));
    }
    events.bitand((READ | WRITE) as i64)?.extract()
}

/// `select.epoll.poll`'s timeout in milliseconds, as `EpollSelector.select`
/// computes it: None waits, `<= 0` polls, else rounded up to the
/// millisecond; NaN, infinity and what does not fit epoll's int fail as
/// there (ValueError, OverflowError), a non-number is a TypeError.
fn timeout_ms(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<i32> {
    let Some(t) = timeout.filter(|t| !t.is_none()) else { return Ok(-1) };
    let t: f64 = if t.is_instance_of::<PyInt>() || t.is_instance_of::<pyo3::types::PyFloat>() {
        t.extract()?
    } else {
        // Another number (a Fraction): `timeout <= 0`, then `timeout * 1e3`,
        // as Python's code computes them (a TypeError for what has neither).
        if t.le(0)? {
            return Ok(0);
        }
        t.mul(1e3)?.extract::<f64>()? / 1e3
    };
    if t.is_nan() {
        return Err(PyValueError::new_err("cannot convert float NaN to integer"));
    }
    if t <= 0.0 {
        return Ok(0);
    }
    if t.is_infinite() {
        return Err(PyOverflowError::new_err("cannot convert float infinity to integer"));
    }
    let ms = (t * 1e3).ceil();
    if ms > i32::MAX as f64 {
        return Err(PyOverflowError::new_err("timeout is too large"));
    }
    Ok(ms as i32)
}

impl Selector {
    /// The fd of `fileobj`, or of the registered key whose file object it
    /// is (a closed file no longer has a fileno).
    pub(super) fn lookup(&self, fileobj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
        match fileobj_to_fd(fileobj) {
            Ok(fd) => c_fd(fd).map_err(|_| PyKeyError::new_err(format!("{} is not registered", fileobj.repr().map(|r| r.to_string()).unwrap_or_default()))),
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

    /// `register` with the interest already checked (`events` is what the
    /// key shows).
    pub(super) fn add(&self, fileobj: &Bound<'_, PyAny>, mask: u32, events: &Bound<'_, PyAny>, data: Option<Obj>) -> PyResult<Obj> {
        let py = fileobj.py();
        let fd = fileobj_to_fd(fileobj)?;
        let data = data.unwrap_or_else(|| py.None());
        let key = selector_key(py)?.call1((fileobj, fd, events, data.clone_ref(py)))?.unbind();
        let fd = c_fd(fd)?;
        let mut st = self.st.lock();
        if st.keys.contains_key(&fd) {
            drop(st);
            return Err(PyKeyError::new_err(format!("{} (FD {fd}) is already registered", fileobj.repr()?)));
        }
        let Some(poller) = st.poller.as_mut() else {
            return Err(PyRuntimeError::new_err("the selector is closed"));
        };
        poller.register(fd, mask).map_err(os_error)?;
        st.keys.insert(fd, Registration { key: key.clone_ref(py), data });
        self.count.store(st.keys.len(), Ordering::Relaxed);
        Ok(key)
    }

    /// `modify` with the interest given (`events` is what the key shows).
    pub(super) fn change(&self, fileobj: &Bound<'_, PyAny>, mask: u32, events: &Bound<'_, PyAny>, data: Option<Obj>) -> PyResult<Obj> {
        let py = fileobj.py();
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
        let changed = st.poller.as_ref().and_then(|p| p.interest(fd)) != Some(mask);
        if changed {
            if let Some(p) = st.poller.as_mut() {
                p.modify(fd, mask).map_err(os_error)?;
            }
        }
        let old = st.keys.insert(fd, Registration { key: key.clone_ref(py), data });
        drop(st);
        drop(old);
        Ok(key)
    }

    /// The interest and (reader, writer) handles registered for `fileobj`,
    /// if it is registered (what `get_map().get(fileobj)` finds).
    pub(super) fn entry<'py>(&self, fileobj: &Bound<'py, PyAny>) -> Option<(u32, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let py = fileobj.py();
        let fd = self.lookup(fileobj).ok()?;
        let (events, data) = {
            let st = self.st.lock();
            let reg = st.keys.get(&fd)?;
            (st.poller.as_ref()?.interest(fd)?, reg.data.clone_ref(py).into_bound(py))
        };
        Some((events, data.get_item(0).ok()?, data.get_item(1).ok()?))
    }


}

#[pymethods]
impl Selector {
    #[new]
    fn new() -> PyResult<Self> {
        let poller = Poller::new().map_err(os_error)?;
        let epfd = poller.fd();
        Ok(Selector { st: Mutex::new(SelState { poller: Some(poller), keys: HashMap::new() }), epfd, count: AtomicUsize::new(0) })
    }

    #[pyo3(signature = (fileobj, events, data = None))]
    fn register(&self, fileobj: &Bound<'_, PyAny>, events: &Bound<'_, PyAny>, data: Option<Obj>) -> PyResult<Obj> {
        let mask = events_mask(events, true)?;
        self.add(fileobj, mask, events, data)
    }

    pub(super) fn unregister(&self, fileobj: &Bound<'_, PyAny>) -> PyResult<Obj> {
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

    /// `modify`: as `selectors`' epoll selector, the file object must be
    /// registered (KeyError), and the events are not checked, only read as
    /// an interest (`events & EVENT_READ`...).
    #[pyo3(signature = (fileobj, events, data = None))]
    fn modify(&self, fileobj: &Bound<'_, PyAny>, events: &Bound<'_, PyAny>, data: Option<Obj>) -> PyResult<Obj> {
        let fd = self.lookup(fileobj)?;
        if !self.st.lock().keys.contains_key(&fd) {
            return Err(PyKeyError::new_err(format!("{} is not registered", fileobj.repr()?)));
        }
        let mask = events_mask(events, false)?;
        self.change(fileobj, mask, events, data)
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
    fn select(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(Obj, u32)>> {
        let ms = timeout_ms(timeout)?;
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
    pub(super) fn poll_into(&self, py: Python<'_>, ms: i32, out: &mut Vec<(RawFd, u32, Obj)>) -> PyResult<()> {
        let max = {
            let st = self.st.lock();
            if st.poller.is_none() {
                return Err(PyRuntimeError::new_err("the selector is closed"));
            }
            Poller::batch(st.keys.len())
        };
        let epfd = self.epfd;
        EPOLL_BUF.with(|cell| -> PyResult<()> {
            let mut guard = cell.borrow_mut();
            let events: &mut Events = &mut guard;
            // The epoll fd stays open while the selector is (closing it
            // during a wait is the caller's bug, and then the wait fails
            // with EBADF); the buffer is this thread's, not otherwise used
            // during the wait.
            let r = if ms == 0 { events.wait(epfd, max, ms) } else { py.detach(|| events.wait(epfd, max, ms)) };
            if let Err(e) = r {
                if e.raw_os_error() == Some(libc::EINTR) {
                    return Ok(());
                }
                return Err(os_error(e));
            }
            let st = self.st.lock();
            let Some(p) = st.poller.as_ref() else { return Ok(()) };
            for ev in events.iter() {
                let Some((fd, mask)) = p.ready(ev) else { continue };
                if let Some(reg) = st.keys.get(&fd) {
                    out.push((fd, mask, reg.data.clone_ref(py)));
                }
            }
            Ok(())
        })
    }
}

thread_local! {
    /// epoll_wait's output buffer, one per thread (a loop runs on one).
    static EPOLL_BUF: std::cell::RefCell<Events> = const { std::cell::RefCell::new(Events::new()) };
}
