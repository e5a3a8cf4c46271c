//! `_ProcessQueueCore`: the shared part of a `plait.process.Queue`, over
//! `plait_core::ipc`'s ring, packets, shared counter and feeder.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use plait_core::ipc::ring::{Ring, KIND_MARKER};
use plait_core::ipc::{self, Feeder, RingSink, SharedCounter};
use plait_core::park::Outcome;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{take_fd, wait_ready};
use crate::errors::os_error;
use crate::errors;
use crate::wait::{deadline_in, detached};

/// The shared part of a `plait.process.Queue`: a shared-memory ring that
/// carries small items (and the place in line of large ones), a
/// `SOCK_SEQPACKET` pair that carries large items as memfds, the item
/// counter, and this process's feeder.
#[pyclass(module = "plait._plait", frozen)]
pub struct _ProcessQueueCore {
    tx: Arc<OwnedFd>,
    rx: OwnedFd,
    count: SharedCounter,
    ring: Arc<Ring>,
    maxsize: u32,
    feeder: Arc<Feeder>,
    closed: AtomicBool,
}

#[pymethods]
impl _ProcessQueueCore {
    /// A fresh queue, or (with `fds`) one rebuilt from descriptors passed
    /// by another process: `(tx, rx, counter, ring)`, ownership passes to it.
    #[new]
    #[pyo3(signature = (maxsize, fds=None))]
    fn new(maxsize: isize, fds: Option<(RawFd, RawFd, RawFd, RawFd)>) -> PyResult<Self> {
        let maxsize = if maxsize <= 0 { 0 } else { maxsize.min(i32::MAX as isize) as u32 };
        let (tx, rx, count, ring) = match fds {
            None => {
                let (tx, rx) = ipc::socketpair(libc::SOCK_SEQPACKET).map_err(os_error)?;
                (tx, rx, SharedCounter::new().map_err(os_error)?, Ring::new().map_err(os_error)?)
            }
            Some((t, r, c, g)) => {
                let (t, r) = (take_fd(t)?, take_fd(r)?);
                // SAFETY: ownership of `c` and `g` is handed over like `t`, `r`.
                let (c, g) = unsafe { (OwnedFd::from_raw_fd(c), OwnedFd::from_raw_fd(g)) };
                (t, r, SharedCounter::from_fd(c).map_err(os_error)?, Ring::from_fd(g).map_err(os_error)?)
            }
        };
        let tx = Arc::new(tx);
        let ring = Arc::new(ring);
        Ok(_ProcessQueueCore {
            feeder: Feeder::with_sink(Box::new(RingSink { ring: Arc::clone(&ring), tx: Arc::clone(&tx) })),
            ring,
            tx,
            rx,
            count,
            maxsize,
            closed: AtomicBool::new(false),
        })
    }

    /// The descriptors to pass to another process: `(tx, rx, counter, ring)`.
    fn fds(&self) -> (RawFd, RawFd, RawFd, RawFd) {
        (self.tx.as_raw_fd(), self.rx.as_raw_fd(), self.count.fd(), self.ring.fd())
    }

    #[getter]
    fn maxsize(&self) -> u32 {
        self.maxsize
    }

    /// Put one pickled item. Returns whether it went to the feeder (the
    /// ring or socket was full) rather than straight out.
    #[pyo3(signature = (data, block=true, timeout=None))]
    fn put(&self, py: Python<'_>, data: &[u8], block: bool, timeout: Option<f64>) -> PyResult<bool> {
        if self.maxsize > 0 {
            if !self.count.try_reserve(self.maxsize) {
                if !block {
                    return Err(errors::full(py));
                }
                let deadline = timeout.map(deadline_in);
                let max = self.maxsize;
                let (out, err) = detached(py, deadline, |ctx| self.count.reserve(max, ctx));
                if let Some(e) = err {
                    if out == Outcome::Notified {
                        self.count.decr(true);
                    }
                    return Err(e);
                }
                if out != Outcome::Notified {
                    return Err(errors::full(py));
                }
            }
        } else {
            self.count.incr();
        }
        let sent = self.feeder.send_payload(data);
        sent.map_err(|e| {
            self.count.decr(self.maxsize > 0);
            os_error(e)
        })
    }

    /// Take one pickled item; `queue.Empty` when none comes in time.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get<'py>(&self, py: Python<'py>, block: bool, timeout: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
        let deadline = if block { timeout.map(deadline_in) } else { None };
        loop {
            if !self.ring.is_empty() {
                let mut g = match self.ring.try_lock() {
                    Some(g) => g,
                    None => py.detach(|| self.ring.lock()),
                };
                let got = g.pop(|kind, p| if kind == KIND_MARKER { None } else { Some(PyBytes::new(py, p)) });
                drop(g);
                match got {
                    Some(Some(b)) => {
                        self.count.decr(self.maxsize > 0);
                        return Ok(b);
                    }
                    Some(None) => {
                        let b = self.recv_large(py)?;
                        self.count.decr(self.maxsize > 0);
                        return Ok(b);
                    }
                    None => {}
                }
            }
            if !block || matches!(deadline, Some(d) if Instant::now() >= d) {
                return Err(errors::empty(py));
            }
            let (out, err) = detached(py, deadline, |ctx| self.ring.wait_data(ctx));
            if let Some(e) = err {
                return Err(e);
            }
            if out == Outcome::TimedOut && self.ring.is_empty() {
                return Err(errors::empty(py));
            }
        }
    }

    /// Approximate number of items put and not yet got, all processes.
    fn qsize(&self) -> u32 {
        self.count.get()
    }

    /// Whether no item is waiting right now.
    fn empty(&self) -> bool {
        self.ring.is_empty()
    }

    fn full(&self) -> bool {
        self.maxsize > 0 && self.count.get() >= self.maxsize
    }

    /// Items this process has put that still wait for room in the ring or
    /// socket.
    fn pending(&self) -> usize {
        self.feeder.pending()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.feeder.close();
    }

    /// Wait until this process's pending items are all sent (`timeout`
    /// seconds at most); `True` if they were.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        if self.feeder.pending() == 0 {
            return Ok(true);
        }
        let (out, err) = detached(py, timeout.map(deadline_in), |ctx| self.feeder.flush(ctx));
        if let Some(e) = err {
            return Err(e);
        }
        Ok(out == Outcome::Notified)
    }
}

impl _ProcessQueueCore {
    /// The packet a marker stood for: sent before the marker was pushed,
    /// so one is there (if another reader took "ours", "theirs" is).
    fn recv_large<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let fd = self.rx.as_raw_fd();
        loop {
            match ipc::recv_packet(fd, |p| PyBytes::new(py, p)) {
                Ok(b) => return Ok(b),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                    wait_ready(py, fd, libc::POLLIN, None)?;
                }
                Err(e) => return Err(os_error(e)),
            }
        }
    }
}
