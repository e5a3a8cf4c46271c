//! Native hot paths for `plait.loop`'s socket transport.
//!
//! `plait.loop._SocketTransport` is asyncio's own `_SelectorSocketTransport`
//! (flow control, close, abort, write_eof, sendfile, TLS wrapping: all
//! asyncio's code) with two methods replaced by C-ABI method descriptors
//! installed on that class:
//!
//! * `_read_ready`, what the loop calls when the socket is readable: one
//!   `recv` into a reused buffer (asyncio's `sock.recv(256 KiB)` maps and
//!   unmaps a fresh 256 KiB block for every message), or, while reads are
//!   large, straight into a bytes object of the size waiting; then
//!   `protocol.data_received(data)`, with asyncio's error handling. When
//!   the protocol is asyncio's own StreamReaderProtocol over its own
//!   StreamReader (what `asyncio.start_server`/`open_connection` make), the
//!   read lands directly in the reader's buffer and the rest of
//!   `StreamReader.feed_data` (wake the reader, pause past the limit) is
//!   done here: one copy and no bytes object per message fewer. A patched
//!   `feed_data` or `data_received` (class or instance) is called instead;
//! * `write(data)`, when nothing is buffered: one `send`, and done if it
//!   took everything. A failed `send` is reported as asyncio's write
//!   reports it (`_fatal_error`), not handed over: the failure consumed
//!   the socket's pending error, and asyncio's second `send` would see
//!   another one (`EPIPE` where the peer's reset was `ECONNRESET`).
//!
//! Both go by the file descriptor, so they serve only a plain
//! `socket.socket`; a subclass's own `recv`/`send` are asyncio's to call.
//!
//! Anything else — a buffered protocol, a partial send, data
//! already buffered, a closing transport, wrong arguments — goes to
//! asyncio's own method, unchanged, so behaviour is asyncio's.
//!
//! The state both paths read (`_conn_lost`, `_sock_fd`, `_protocol`, …) is
//! declared in `_SocketTransport.__slots__`, so asyncio's Python code keeps
//! reading and writing it as attributes while these paths read each one
//! with a single load at the slot's offset, found once at install time.

use std::cell::RefCell;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyType};
use pyo3::Borrowed;

use crate::errors::os_error;
use crate::capi::{fastcall_args, forward, install_method, PyMethod_Function, PyMethod_Type};

static SLOW_WRITE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SLOW_READ_READY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SLOTS: PyOnceLock<Slots> = PyOnceLock::new();

/// Where in a `_SocketTransport` instance each of its `__slots__` lives.
struct Slots {
    plain: isize,
    native: isize,
    conn_lost: isize,
    sock_fd: isize,
    protocol: isize,
    eof: isize,
    empty_waiter: isize,
    buffer: isize,
}

impl Slots {
    /// Find each slot's offset from its member descriptor in `cls.__dict__`.
    fn of(cls: &Bound<'_, PyType>) -> PyResult<Slots> {
        let offset = |name: &str| -> PyResult<isize> {
            let d = cls.getattr("__dict__")?.get_item(name)?;
            // SAFETY: type checks on a live object; a member descriptor's
            // `d_member` points at its (static, or type-owned) PyMemberDef.
            // The struct field is typed PyGetSetDef before 3.11 in pyo3-ffi,
            // but CPython stores a PyMemberDef there on every version.
            unsafe {
                if ffi::Py_TYPE(d.as_ptr()) != &raw mut ffi::PyMemberDescr_Type {
                    return Err(pyo3::exceptions::PyTypeError::new_err(format!("{name} is not a slot")));
                }
                let m = (*d.as_ptr().cast::<ffi::PyMemberDescrObject>()).d_member.cast::<ffi::PyMemberDef>();
                if (*m).type_code != ffi::Py_T_OBJECT_EX || (*m).flags & ffi::Py_READONLY != 0 {
                    return Err(pyo3::exceptions::PyTypeError::new_err(format!("{name} is not a writable object slot")));
                }
                Ok((*m).offset)
            }
        };
        Ok(Slots {
            plain: offset("_plait_plain")?,
            native: offset("_plait_native")?,
            conn_lost: offset("_conn_lost")?,
            sock_fd: offset("_sock_fd")?,
            protocol: offset("_protocol")?,
            eof: offset("_eof")?,
            empty_waiter: offset("_empty_waiter")?,
            buffer: offset("_buffer")?,
        })
    }
}

/// The object in `obj`'s slot at `off`, or None while the slot is unset.
///
/// # Safety
/// `obj` is a live instance of the class `SLOTS` was read from (or of a
/// subclass, which keeps the offsets), and the caller is attached. The
/// result is borrowed from the slot: the caller must not run Python code,
/// which could reassign the slot, while it still uses it.
unsafe fn slot<'a, 'py>(py: Python<'py>, obj: *mut ffi::PyObject, off: isize) -> Option<Borrowed<'a, 'py, PyAny>> {
    // SAFETY: per the contract, `off` is a slot of `obj`'s layout holding a
    // PyObject pointer or NULL.
    let p = unsafe { *obj.cast::<u8>().offset(off).cast::<*mut ffi::PyObject>() };
    // SAFETY: non-NULL slot contents are a live object the instance owns.
    (!p.is_null()).then(|| unsafe { Borrowed::from_ptr(py, p) })
}

/// Whether the slot holds a true value; an unset slot reads as None.
///
/// # Safety
/// As for `slot`, except that the value is held by a new reference while
/// its truth is asked (an odd value's `__bool__` is Python code).
unsafe fn slot_true(py: Python<'_>, obj: *mut ffi::PyObject, off: isize) -> PyResult<Option<bool>> {
    // SAFETY: forwarded contract.
    match unsafe { slot(py, obj, off) } {
        None => Ok(None),
        Some(v) => v.to_owned().is_truthy().map(Some),
    }
}

/// asyncio's `_SelectorSocketTransport.max_size`.
const MAX_SIZE: usize = 256 * 1024;

/// Reads at least this large switch the thread to reading straight into
/// the bytes object (see `recv_bytes`).
const BIG_READ: usize = 32 * 1024;

thread_local! {
    static RECV_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; MAX_SIZE]);
    /// Whether this thread's last read was large.
    static BIG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// After a large read, how much is waiting on `fd` (FIONREAD, at most
/// MAX_SIZE), to receive straight into an object of that size; None to go
/// through this thread's reused buffer.
fn big_read_size(fd: i32) -> Option<usize> {
    if !BIG.get() {
        return None;
    }
    let mut avail: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a valid pointer.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut avail) };
    (r == 0 && avail > 0).then(|| (avail as usize).min(MAX_SIZE))
}

/// One `recv` of up to MAX_SIZE bytes into this thread's reused buffer;
/// `then` gets what arrived (empty at EOF).
fn recv_reused<T>(fd: i32, then: impl FnOnce(&[u8]) -> T) -> std::io::Result<T> {
    RECV_BUF.with(|b| {
        let mut buf = b.borrow_mut();
        // SAFETY: `buf` is a live buffer of MAX_SIZE bytes.
        let got = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), MAX_SIZE, libc::MSG_DONTWAIT) };
        if got < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = got as usize;
        BIG.set(n >= BIG_READ);
        Ok(then(&buf[..n]))
    })
}

/// One `recv` of up to MAX_SIZE bytes from `fd`, as a bytes object.
///
/// Small reads land in a reused buffer and are copied into a bytes object
/// of their size. After a large read, the next read first asks how much is
/// waiting (FIONREAD) and receives straight into a bytes object of that
/// size, which saves copying a large message once more.
fn recv_bytes<'py>(py: Python<'py>, fd: i32) -> std::io::Result<Bound<'py, PyBytes>> {
    let Some(want) = big_read_size(fd) else {
        return recv_reused(fd, |b| PyBytes::new(py, b));
    };
    // SAFETY: attached; a NULL source makes a bytes object of `want`
    // bytes whose contents are not set yet (not zeroed either: recv
    // fills them before anything can see the object).
    let raw = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), want as ffi::Py_ssize_t) };
    if raw.is_null() {
        drop(PyErr::take(py)); // MemoryError: reported as the read's error
        return Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory));
    }
    // SAFETY: `raw` is the new reference just made.
    let data = unsafe { Bound::from_owned_ptr(py, raw).cast_into_unchecked::<PyBytes>() };
    // SAFETY: the bytes object's storage is `want` bytes long and
    // nothing else refers to the object yet.
    let got = unsafe { libc::recv(fd, ffi::PyBytes_AsString(raw).cast(), want, libc::MSG_DONTWAIT) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = got as usize;
    BIG.set(n >= BIG_READ);
    Ok(if n == want { data } else { PyBytes::new(py, &data.as_bytes()[..n]) })
}

/// What one read produced.
enum Read<'py> {
    /// The peer closed its side.
    Eof,
    /// Bytes, for the protocol's `data_received`.
    Data(Bound<'py, PyBytes>),
    /// Bytes were appended to a StreamReader's buffer (see `recv_append`).
    Appended,
}

impl<'py> Read<'py> {
    fn of(data: Bound<'py, PyBytes>) -> Self {
        if data.as_bytes().is_empty() {
            Read::Eof
        } else {
            Read::Data(data)
        }
    }
}

/// One `recv` from `fd` onto the end of a StreamReader's buffer.
///
/// The same sizing as `recv_bytes`: a large read goes straight into the
/// grown buffer, so a message is copied once (by `StreamReader.read`)
/// instead of twice; a small one goes through the reused buffer. When the
/// buffer cannot grow (a memoryview of it is alive, or memory ran out),
/// what was read comes back as `Data`, for `data_received` to deliver as
/// asyncio would (its `extend` then raises the same error).
fn recv_append<'py>(py: Python<'py>, fd: i32, buf: &Bound<'py, PyByteArray>) -> std::io::Result<Read<'py>> {
    let old = buf.len();
    let Some(want) = big_read_size(fd) else {
        return recv_reused(fd, |got| {
            if got.is_empty() {
                return Read::Eof;
            }
            if buf.resize(old + got.len()).is_err() {
                drop(PyErr::take(py));
                return Read::Data(PyBytes::new(py, got));
            }
            // SAFETY: the bytearray now has room for `got.len()` more bytes
            // after `old`; `got` is this thread's buffer, not the bytearray.
            unsafe { std::ptr::copy_nonoverlapping(got.as_ptr(), buf.data().add(old), got.len()) };
            Read::Appended
        });
    };
    if buf.resize(old + want).is_err() {
        drop(PyErr::take(py));
        return recv_bytes(py, fd).map(Read::of);
    }
    // SAFETY: the bytearray's storage is now `old + want` bytes long, and
    // no Python code runs until it is resized again.
    let got = unsafe { libc::recv(fd, buf.data().add(old).cast(), want, libc::MSG_DONTWAIT) };
    let n = got.max(0) as usize;
    let err = (got < 0).then(std::io::Error::last_os_error);
    if n < want {
        // Shrinking a bytearray nothing else has seen since it grew cannot
        // fail; were it to, the error is left for the caller.
        buf.resize(old + n).map_err(|_| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
    }
    if let Some(e) = err {
        return Err(e);
    }
    BIG.set(n >= BIG_READ);
    // FIONREAD said bytes were waiting, so none arriving is not EOF.
    Ok(if n == 0 { Read::Eof } else { Read::Appended })
}

/// asyncio's StreamReaderProtocol and StreamReader, their own
/// `data_received` and `feed_data` functions, and `loop.py`'s helper that
/// pauses a reader's transport (the end of `feed_data`).
struct Streams {
    protocol: Py<PyType>,
    reader: Py<PyType>,
    data_received: Py<PyAny>,
    feed_data: Py<PyAny>,
    pause: Py<PyAny>,
}

/// Whether `obj.name` is still `func` bound to `obj`: neither the class
/// attribute nor the instance (`mock.patch.object`) has been replaced.
fn still_calls(obj: &Bound<'_, PyAny>, name: &Bound<'_, pyo3::types::PyString>, func: &Py<PyAny>) -> PyResult<bool> {
    let m = obj.getattr(name)?;
    // SAFETY: attached; `m` is a live object, and PyMethod_Function is
    // given only a bound method (checked exactly) and returns a borrowed
    // reference that is only compared.
    Ok(unsafe { ffi::Py_TYPE(m.as_ptr()) == &raw mut PyMethod_Type && PyMethod_Function(m.as_ptr()) == func.as_ptr() })
}

static STREAMS: PyOnceLock<Streams> = PyOnceLock::new();

/// The StreamReader behind `protocol` and its buffer, when the transport
/// may feed it itself: the protocol is exactly asyncio's
/// StreamReaderProtocol (so its `data_received` is asyncio's), its reader
/// exactly asyncio's StreamReader, not at EOF (`feed_data` would fail its
/// assertion: asyncio's path reports that), with a bytearray buffer.
fn stream_target<'py>(py: Python<'py>, protocol: &Bound<'py, PyAny>) -> Option<(Bound<'py, PyAny>, Bound<'py, PyByteArray>)> {
    let st = STREAMS.get(py)?;
    if !protocol.get_type().is(st.protocol.bind(py)) {
        return None;
    }
    let found = (|| -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyByteArray>)>> {
        if !still_calls(protocol, intern!(py, "data_received"), &st.data_received)? {
            return Ok(None);
        }
        let wr = protocol.getattr(intern!(py, "_stream_reader_wr"))?;
        if wr.is_none() {
            return Ok(None);
        }
        let reader = wr.call0()?;
        if !reader.get_type().is(st.reader.bind(py))
            || !reader.getattr(intern!(py, "_eof"))?.is(&*PyBool::new(py, false))
            || !still_calls(&reader, intern!(py, "feed_data"), &st.feed_data)?
        {
            return Ok(None);
        }
        Ok(reader.getattr(intern!(py, "_buffer"))?.cast_into_exact::<PyByteArray>().ok().map(|b| (reader, b)))
    })();
    // Anything unexpected is asyncio's path to meet and report.
    found.ok().flatten()
}

/// The rest of `StreamReader.feed_data` once the data is in the buffer:
/// wake the reader's waiter, and pause the transport past twice the limit.
fn stream_fed(py: Python<'_>, reader: &Bound<'_, PyAny>, buf: &Bound<'_, PyByteArray>) -> PyResult<()> {
    let waiter = reader.getattr(intern!(py, "_waiter"))?;
    if !waiter.is_none() {
        reader.setattr(intern!(py, "_waiter"), py.None())?;
        if !waiter.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
    }
    if reader.getattr(intern!(py, "_transport"))?.is_none() || reader.getattr(intern!(py, "_paused"))?.is_truthy()? {
        return Ok(());
    }
    let limit = reader.getattr(intern!(py, "_limit"))?;
    let over = match limit.extract::<i64>() {
        Ok(l) => (buf.len() as i128) > 2 * l as i128,
        Err(_) => buf.len().into_pyobject(py)?.gt(limit.mul(2)?)?,
    };
    if over {
        let Some(st) = STREAMS.get(py) else { return Ok(()) };
        st.pause.bind(py).call1((reader,))?;
    }
    Ok(())
}

/// Install the native `write` and `_read_ready` on `cls`, keeping asyncio's
/// `slow_write` and `slow_read_ready` for everything else.
#[pyfunction]
pub fn _plait_install_transport(
    cls: &Bound<'_, PyType>,
    slow_write: Py<PyAny>,
    slow_read_ready: Py<PyAny>,
    stream_protocol: Py<PyType>,
    stream_reader: Py<PyType>,
    pause_stream: Py<PyAny>,
) -> PyResult<()> {
    let py = cls.py();
    let slots = Slots::of(cls)?;
    let streams = Streams {
        data_received: stream_protocol.bind(py).getattr("data_received")?.unbind(),
        feed_data: stream_reader.bind(py).getattr("feed_data")?.unbind(),
        protocol: stream_protocol,
        reader: stream_reader,
        pause: pause_stream,
    };
    if SLOW_WRITE.set(py, slow_write).is_err()
        || SLOW_READ_READY.set(py, slow_read_ready).is_err()
        || SLOTS.set(py, slots).is_err()
        || STREAMS.set(py, streams).is_err()
    {
        return Ok(()); // installed already
    }
    install_method(cls, c"write", ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: write }, ffi::METH_FASTCALL | ffi::METH_KEYWORDS, None)?;
    install_method(cls, c"_read_ready", ffi::PyMethodDefPointer { PyCFunction: read_ready }, ffi::METH_NOARGS, None)?;
    Ok(())
}

fn into_ptr(py: Python<'_>, r: PyResult<Option<Py<PyAny>>>) -> *mut ffi::PyObject {
    match r {
        Ok(Some(v)) => v.into_ptr(),
        Ok(None) => py.None().into_ptr(),
        Err(e) => {
            e.restore(py);
            std::ptr::null_mut()
        }
    }
}

/// What the fast write did.
enum Sent {
    /// `send` took all of `data`.
    All,
    /// `send` took this many bytes, fewer than `data` holds.
    Part(usize),
    /// `send` failed: the socket's pending error, which asyncio's write
    /// would have met (it is consumed now: a second `send` would see
    /// another, `EPIPE` after a reset where this was `ECONNRESET`).
    Failed(std::io::Error),
    /// Not tried (or would block): asyncio's write handles it.
    Slow,
}

/// The fast write: one `send` of `data`, when nothing is buffered.
fn fast_write(py: Python<'_>, slf: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<Sent> {
    // SAFETY: type checks and buffer access on a live object, attached.
    let (ptr, len) = unsafe {
        let p = data.as_ptr();
        if ffi::PyBytes_CheckExact(p) != 0 {
            (ffi::PyBytes_AsString(p) as *const u8, ffi::PyBytes_Size(p) as usize)
        } else if ffi::PyByteArray_CheckExact(p) != 0 {
            (ffi::PyByteArray_AsString(p) as *const u8, ffi::PyByteArray_Size(p) as usize)
        } else {
            return Ok(Sent::Slow);
        }
    };
    if len == 0 {
        return Ok(Sent::Slow);
    }
    let Some(slots) = SLOTS.get(py) else { return Ok(Sent::Slow) };
    let obj = slf.as_ptr();
    // SAFETY: `slf` is an instance of the transport class (the method
    // descriptor checked). Each slot is read and done with before the next;
    // a value whose use could run Python code (truth, len() of a buffer
    // that is not a bytearray) is held by a new reference meanwhile.
    let fd: i32 = unsafe {
        if slot_true(py, obj, slots.plain)? != Some(true)
            || slot_true(py, obj, slots.eof)? != Some(false)
            || !slot(py, obj, slots.empty_waiter).is_some_and(|w| w.is_none())
            || slot_true(py, obj, slots.conn_lost)? != Some(false)
        {
            return Ok(Sent::Slow);
        }
        match slot(py, obj, slots.buffer) {
            Some(b) if ffi::PyByteArray_CheckExact(b.as_ptr()) != 0 => {
                if ffi::PyByteArray_Size(b.as_ptr()) != 0 {
                    return Ok(Sent::Slow);
                }
            }
            Some(b) => {
                if b.to_owned().len()? != 0 {
                    return Ok(Sent::Slow);
                }
            }
            None => return Ok(Sent::Slow),
        }
        match slot(py, obj, slots.sock_fd) {
            Some(fd) => fd.to_owned().extract()?,
            None => return Ok(Sent::Slow),
        }
    };
    // SAFETY: `ptr` is valid for `len` bytes (the bytes/bytearray we hold a
    // reference to, unchanged: no Python code runs during the call).
    let n = unsafe { libc::send(fd, ptr.cast(), len, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
            return Ok(Sent::Slow); // asyncio's write buffers it
        }
        return Ok(Sent::Failed(e));
    }
    Ok(if n as usize == len { Sent::All } else { Sent::Part(n as usize) })
}

/// `transport.write(data)`: the fast write when nothing is buffered,
/// asyncio's method for the rest.
///
/// # Safety
/// Called by CPython only, as a `METH_FASTCALL | METH_KEYWORDS` method of
/// `_SocketTransport`: attached, `slf` an instance of that class (its method
/// descriptor checks), `args`, `nargsf` and `kwnames` as the fastcall
/// convention passes them.
unsafe extern "C" fn write(slf: *mut ffi::PyObject, args: *const *mut ffi::PyObject, nargsf: ffi::Py_ssize_t, kwnames: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method attached, with `slf` an instance of the
    // class (the descriptor checks) and `args` valid for the count given.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `nargsf` is the count CPython passed, flags included.
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) } as usize;
    // SAFETY: what CPython passed this fastcall method, used during the call.
    let all = unsafe { fastcall_args(args, nargs, kwnames) };
    if nargs == 1 && all.len() == 1 {
        // SAFETY: live objects borrowed for the call.
        let this = unsafe { Borrowed::from_ptr(py, slf) };
        // SAFETY: as above (`all` holds one argument).
        let data = unsafe { Borrowed::from_ptr(py, all[0]) };
        match fast_write(py, &this, &data) {
            Ok(Sent::All) => return py.None().into_ptr(),
            Ok(Sent::Failed(e)) => {
                // What asyncio's write does when its `send` fails.
                let exc = os_error(e).into_value(py);
                let r = this.call_method1(intern!(py, "_fatal_error"), (exc, "Fatal write error on socket transport"));
                return into_ptr(py, r.map(|_| None));
            }
            Ok(Sent::Part(n)) => {
                // Part sent: asyncio's write buffers the rest.
                let rest = (|| -> PyResult<Bound<'_, PyAny>> {
                    let mv = pyo3::types::PyMemoryView::from(&data)?;
                    mv.get_item(pyo3::types::PySlice::new(py, n as isize, isize::MAX, 1))
                })();
                return match rest {
                    // SAFETY: forwarding self and one argument we own.
                    Ok(rest) => unsafe { forward(&SLOW_WRITE, py, slf, &[rest.as_ptr()], 1, std::ptr::null_mut()) },
                    Err(e) => {
                        e.restore(py);
                        std::ptr::null_mut()
                    }
                };
            }
            Ok(Sent::Slow) => {}
            Err(e) => {
                e.restore(py);
                return std::ptr::null_mut();
            }
        }
    }
    // SAFETY: forwarding exactly what CPython passed us.
    unsafe { forward(&SLOW_WRITE, py, slf, all, nargs, kwnames) }
}

fn read_ready_impl(py: Python<'_>, this: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    let slow = || -> PyResult<Option<Py<PyAny>>> {
        let Some(f) = SLOW_READ_READY.get(py) else { return Ok(None) };
        f.bind(py).call1((this,)).map(|r| Some(r.unbind()))
    };
    let Some(slots) = SLOTS.get(py) else { return slow() };
    let obj = this.as_ptr();
    // SAFETY: `this` is an instance of the transport class (the method
    // descriptor checked); `slot_true` holds each flag while asking it.
    let (native, lost) = unsafe { (slot_true(py, obj, slots.native)?, slot_true(py, obj, slots.conn_lost)?) };
    if native != Some(true) || lost.is_none() {
        return slow();
    }
    if lost == Some(true) {
        return Ok(None);
    }
    // SAFETY: as above; the fd is extracted at once, from a new reference.
    let fd: i32 = match unsafe { slot(py, obj, slots.sock_fd) } {
        Some(fd) => fd.to_owned().extract()?,
        None => return slow(),
    };
    // SAFETY: as above; the protocol is taken as a new reference before
    // any Python code (which may replace it) runs.
    let protocol = match unsafe { slot(py, obj, slots.protocol) } {
        Some(p) => p.to_owned(),
        None => return Err(pyo3::exceptions::PyAttributeError::new_err("_protocol")),
    };
    let stream = stream_target(py, &protocol);
    let read = match &stream {
        Some((_, buf)) => recv_append(py, fd, buf),
        None => recv_bytes(py, fd).map(Read::of),
    };
    let read = match read {
        Ok(r) => r,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => return Ok(None),
        Err(e) => {
            let exc = os_error(e).into_value(py);
            this.call_method1(intern!(py, "_fatal_error"), (exc, "Fatal read error on socket transport"))?;
            return Ok(None);
        }
    };
    let outcome = match read {
        Read::Eof => {
            this.call_method0(intern!(py, "_read_ready__on_eof"))?;
            return Ok(None);
        }
        Read::Data(data) => protocol.call_method1(intern!(py, "data_received"), (data,)).map(drop),
        Read::Appended => {
            let (reader, buf) = stream.as_ref().expect("only recv_append appends, to a stream's buffer");
            stream_fed(py, reader, buf)
        }
    };
    if let Err(e) = outcome {
        if e.is_instance_of::<PySystemExit>(py) || e.is_instance_of::<PyKeyboardInterrupt>(py) {
            return Err(e);
        }
        let exc = e.into_value(py);
        this.call_method1(intern!(py, "_fatal_error"), (exc, "Fatal error: protocol.data_received() call failed."))?;
    }
    Ok(None)
}

/// `transport._read_ready()`: one read, handed to the protocol (see the
/// module doc).
///
/// # Safety
/// Called by CPython only, as a `METH_NOARGS` method of `_SocketTransport`:
/// attached, `slf` an instance of that class (its method descriptor checks).
unsafe extern "C" fn read_ready(slf: *mut ffi::PyObject, _unused: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a METH_NOARGS method attached, with `slf` an
    // instance of the class.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `slf` is live for the call.
    let this = unsafe { Borrowed::from_ptr(py, slf) };
    into_ptr(py, read_ready_impl(py, &this))
}
