//! `_Channel`: one end of a `Pipe`, a `SOCK_STREAM` socket carrying
//! length-framed messages (`plait_core::ipc::frame`).
//!
//! Reads go through a buffer, so a burst of small messages costs one
//! `recv` rather than two each; a large message is read straight into its
//! bytes object.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use parking_lot::{Mutex, MutexGuard};
use plait_core::ipc;
use pyo3::exceptions::{PyEOFError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{take_fd, wait_ready};
use crate::errors::os_error;
use crate::wait::deadline_in;

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
                Err(e) => return Err(os_error(e)),
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
                Err(e) => return Err(os_error(e)),
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
                Err(e) => return Err(os_error(e)),
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
        let (a, b) = ipc::socketpair(libc::SOCK_STREAM).map_err(os_error)?;
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
