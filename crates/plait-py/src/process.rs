//! `plait.process` transport bindings: `_Channel` (one end of a `Pipe`) and
//! `_ProcessQueueCore` (the socket pair, counter and feeder behind a `Queue`).
//!
//! Python pickles (the C pickler is fast) and these classes move bytes.
//! Every socket is non-blocking: a call first tries its I/O while attached
//! and only when it would block detaches to `poll(2)` (sliced in the main
//! thread so Ctrl-C answers, see `wait.rs`). Framing, packets, the feeder
//! and the shared counter live in `plait_core::ipc`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use plait_core::ipc::{self, Feeder, RingSink, SharedCounter};
use plait_core::ipc_ring::{Ring, KIND_MARKER};
use parking_lot::{Mutex, MutexGuard};
use plait_core::park::Outcome;
use pyo3::exceptions::{PyEOFError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors;
use crate::wait::{deadline_in, detached};

fn os_err(e: io::Error) -> PyErr {
    PyErr::from(e)
}

/// Wait detached for `events` on `fd`; `Ok(false)` on timeout.
fn wait_ready(py: Python<'_>, fd: RawFd, events: i16, deadline: Option<Instant>) -> PyResult<bool> {
    let (out, err) = detached(py, deadline, |ctx| ipc::wait_fd(fd, events, ctx));
    if let Some(e) = err {
        return Err(e);
    }
    Ok(out != Outcome::TimedOut)
}

fn take_fd(fd: RawFd) -> PyResult<OwnedFd> {
    if fd < 0 {
        return Err(PyValueError::new_err("invalid file descriptor"));
    }
    ipc::set_nonblocking(fd).map_err(os_err)?;
    // SAFETY: the caller hands over ownership of `fd` (a detached DupFd).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Bytes read from the socket ahead of the message being returned, so a
/// burst of small messages costs one `recv` rather than two each.
#[derive(Default)]
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// How much a channel reads at once.
const READ_CHUNK: usize = 64 * 1024;

/// One end of a byte-stream connection carrying length-framed messages.
#[pyclass(module = "plait._plait", frozen)]
pub struct _Channel {
    fd: AtomicI32,
    rbuf: Mutex<ReadBuf>,
}

impl _Channel {
    fn fd(&self) -> PyResult<RawFd> {
        match self.fd.load(Ordering::Acquire) {
            -1 => Err(PyOSError::new_err("handle is closed")),
            fd => Ok(fd),
        }
    }

    /// The read buffer, taken detached if another thread holds it (it may
    /// hold it while detached in a wait, and needs the interpreter back).
    fn rbuf(&self, py: Python<'_>) -> MutexGuard<'_, ReadBuf> {
        match self.rbuf.try_lock() {
            Some(g) => g,
            None => py.detach(|| self.rbuf.lock()),
        }
    }

    fn write_all(&self, py: Python<'_>, fd: RawFd, mut buf: &[u8]) -> PyResult<()> {
        while !buf.is_empty() {
            match ipc::send_some(fd, buf) {
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_ready(py, fd, libc::POLLOUT, None)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(os_err(e)),
            }
        }
        Ok(())
    }

    /// Read once more into `rb` (waiting if nothing is there); `Ok(false)`
    /// at end of file.
    fn fill(&self, py: Python<'_>, fd: RawFd, rb: &mut ReadBuf) -> PyResult<bool> {
        if rb.start > 0 {
            rb.buf.copy_within(rb.start..rb.end, 0);
            rb.end -= rb.start;
            rb.start = 0;
        }
        if rb.buf.len() < rb.end + READ_CHUNK {
            rb.buf.resize(rb.end + READ_CHUNK, 0);
        }
        loop {
            let end = rb.end;
            match ipc::recv_some(fd, &mut rb.buf[end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    rb.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_ready(py, fd, libc::POLLIN, None)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(os_err(e)),
            }
        }
    }

    /// Fill `buf` straight from the socket.
    fn read_exact(&self, py: Python<'_>, fd: RawFd, buf: &mut [u8]) -> PyResult<()> {
        let mut off = 0;
        while off < buf.len() {
            match ipc::recv_some(fd, &mut buf[off..]) {
                Ok(0) => return Err(PyOSError::new_err("got end of file during message")),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_ready(py, fd, libc::POLLIN, None)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(os_err(e)),
            }
        }
        Ok(())
    }
}

#[pymethods]
impl _Channel {
    /// A new connected pair of channels (a `SOCK_STREAM` socket pair).
    #[staticmethod]
    fn pair() -> PyResult<(_Channel, _Channel)> {
        let (a, b) = ipc::socketpair(libc::SOCK_STREAM).map_err(os_err)?;
        Ok((_Channel::from_owned(a), _Channel::from_owned(b)))
    }

    /// Adopt descriptor `fd` (ownership passes to the channel).
    #[new]
    fn new(fd: RawFd) -> PyResult<Self> {
        Ok(_Channel::from_owned(take_fd(fd)?))
    }

    fn fileno(&self) -> PyResult<RawFd> {
        self.fd()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.fd.load(Ordering::Acquire) == -1
    }

    fn close(&self) {
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: we owned `fd` and the swap made this the only close.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }

    /// Send one framed message.
    fn send_bytes(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let fd = self.fd()?;
        let header = ipc::encode_header(data.len()).ok_or_else(|| PyValueError::new_err("message too long"))?;
        if data.len() <= READ_CHUNK {
            // One syscall for header and body.
            let mut buf = Vec::with_capacity(4 + data.len());
            buf.extend_from_slice(&header);
            buf.extend_from_slice(data);
            return self.write_all(py, fd, &buf);
        }
        self.write_all(py, fd, &header)?;
        self.write_all(py, fd, data)
    }

    /// Receive one framed message; EOFError when the peer closed first.
    #[pyo3(signature = (maxlength=None))]
    fn recv_bytes<'py>(&self, py: Python<'py>, maxlength: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let fd = self.fd()?;
        if matches!(maxlength, Some(m) if m < 0) {
            return Err(PyValueError::new_err("negative maxlength"));
        }
        let mut rb = self.rbuf(py);
        while rb.end - rb.start < 4 {
            if !self.fill(py, fd, &mut rb)? {
                if rb.end == rb.start {
                    return Err(PyEOFError::new_err(()));
                }
                return Err(PyOSError::new_err("got end of file during message"));
            }
        }
        let h: [u8; 4] = rb.buf[rb.start..rb.start + 4].try_into().unwrap();
        let len = ipc::decode_header(h);
        if let Some(m) = maxlength {
            if len > m as usize {
                drop(rb);
                self.close();
                return Err(PyOSError::new_err("bad message length"));
            }
        }
        rb.start += 4;
        if len <= READ_CHUNK {
            while rb.end - rb.start < len {
                if !self.fill(py, fd, &mut rb)? {
                    return Err(PyOSError::new_err("got end of file during message"));
                }
            }
            let b = PyBytes::new(py, &rb.buf[rb.start..rb.start + len]);
            rb.start += len;
            return Ok(b);
        }
        // A large message: what is buffered, then the rest straight in.
        let have = rb.end - rb.start;
        let r = PyBytes::new_with(py, len, |out| {
            out[..have].copy_from_slice(&rb.buf[rb.start..rb.end]);
            self.read_exact(py, fd, &mut out[have..])
        });
        rb.start = 0;
        rb.end = 0;
        r
    }

    /// Whether a message (or end of file) is waiting, waiting up to
    /// `timeout` seconds (`None`: forever).
    #[pyo3(signature = (timeout=0.0))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let fd = self.fd()?;
        {
            let rb = self.rbuf(py);
            if rb.end > rb.start {
                return Ok(true);
            }
        }
        if ipc::ready_now(fd, libc::POLLIN) {
            return Ok(true);
        }
        match timeout {
            Some(t) if t <= 0.0 => Ok(false),
            Some(t) => wait_ready(py, fd, libc::POLLIN, Some(deadline_in(t))),
            None => wait_ready(py, fd, libc::POLLIN, None),
        }
    }
}

impl _Channel {
    fn from_owned(fd: OwnedFd) -> Self {
        use std::os::fd::IntoRawFd;
        _Channel { fd: AtomicI32::new(fd.into_raw_fd()), rbuf: Mutex::new(ReadBuf::default()) }
    }
}

impl Drop for _Channel {
    fn drop(&mut self) {
        self.close();
    }
}

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
                let (tx, rx) = ipc::socketpair(libc::SOCK_SEQPACKET).map_err(os_err)?;
                (tx, rx, SharedCounter::new().map_err(os_err)?, Ring::new().map_err(os_err)?)
            }
            Some((t, r, c, g)) => {
                let (t, r) = (take_fd(t)?, take_fd(r)?);
                // SAFETY: ownership of `c` and `g` is handed over like `t`, `r`.
                let (c, g) = unsafe { (OwnedFd::from_raw_fd(c), OwnedFd::from_raw_fd(g)) };
                (t, r, SharedCounter::from_fd(c).map_err(os_err)?, Ring::from_fd(g).map_err(os_err)?)
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
    /// socket was full) rather than straight out.
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
            os_err(e)
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

    /// Items this process has put that still wait for room in the socket.
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
                Err(e) => return Err(os_err(e)),
            }
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<_Channel>()?;
    m.add_class::<_ProcessQueueCore>()?;
    Ok(())
}
