//! The Python side of the shared-memory segments (`plait._wire`'s `M`
//! envelope): `_shm_put` copies a value's buffers into a segment,
//! `_shm_take` copies them out into bytes objects, and [`ShmGuard`] keeps a
//! task's or result's segment from leaking. Copies run detached from the
//! interpreter.
//!
//! The segments, their header protocol, the per-process pool, its bounds
//! and its fork handling are `plait_core::ipc::shm` (read its module docs
//! first); this file only moves bytes between them and Python objects.

use std::collections::VecDeque;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use plait_core::ipc::shm::{self, Head, Mapping, Segment};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

/// Copy `len` bytes from `src` to `dst` without the interpreter.
///
/// # Safety
/// `src..src+len` must be readable and `dst..dst+len` writable for the
/// whole call, and not overlap.
unsafe fn copy_detached(py: Python<'_>, src: usize, dst: usize, len: usize) {
    py.detach(|| {
        // SAFETY: the caller's guarantee.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len) }
    });
}

/// `_shm_put(buffers, send_fd)`: copy the buffers (contiguous byte
/// buffers, e.g. `PickleBuffer.raw()`) into a segment of this process and
/// return `(head, fd)`: the `M` envelope's head, and, if `send_fd`, a
/// descriptor of the segment that the caller sends along and then closes
/// (else -1). `None` when the pool is exhausted and `send_fd` is false
/// (the caller then uses a named file).
#[pyfunction]
fn _shm_put(py: Python<'_>, buffers: &Bound<'_, PyList>, send_fd: bool) -> PyResult<Option<(Py<PyBytes>, i32)>> {
    let mut views: Vec<PyBuffer<u8>> = Vec::with_capacity(buffers.len());
    for b in buffers.iter() {
        let v = PyBuffer::<u8>::get(&b)?;
        if !v.is_c_contiguous() {
            return Err(PyValueError::new_err("shared-memory buffers must be contiguous"));
        }
        views.push(v);
    }
    let sizes: Vec<usize> = views.iter().map(|v| v.len_bytes()).collect();
    let total: usize = sizes.iter().sum();
    let lease = match shm::pool().lease(total)? {
        Some(l) => l,
        None if send_fd => shm::pool().one_off(total)?,
        None => return Ok(None),
    };
    let data = lease.segment().map().data();
    let mut offset = 0;
    for v in &views {
        let n = v.len_bytes();
        // SAFETY: the buffer stays exported (and so valid) while `v`
        // lives; the segment has `capacity >= total` bytes past `data`,
        // and the lease holds it BUSY, so nobody else touches them.
        unsafe { copy_detached(py, v.buf_ptr() as usize, data.add(offset) as usize, n) };
        offset += n;
    }
    let head = lease.head(&sizes, send_fd);
    let fd = if send_fd { lease.into_fd()?.into_raw_fd() } else { -1 };
    Ok(Some((PyBytes::new(py, &head).unbind(), fd)))
}

fn lost(why: &str) -> PyErr {
    PyRuntimeError::new_err(format!("the shared-memory segment of this value is gone: {why}"))
}

/// Copy the buffers out of `map` into new bytes objects, then release the
/// segment (also when copying fails: nobody else will read it).
fn copy_out(py: Python<'_>, map: &Mapping, head: &Head) -> PyResult<Vec<Py<PyBytes>>> {
    map.check(head).map_err(lost)?;
    let mut out = Vec::with_capacity(head.sizes.len());
    let mut offset = 0;
    let result = (|| -> PyResult<()> {
        for &size in &head.sizes {
            let b = PyBytes::new_with(py, size, |dst| {
                // SAFETY: `offset + size <= capacity` (checked above), the
                // segment stays BUSY (nobody rewrites it) until we release
                // it below, and `dst` is the new object's own storage,
                // which nobody else can see yet.
                unsafe { copy_detached(py, map.data().add(offset) as usize, dst.as_mut_ptr() as usize, size) };
                Ok(())
            })?;
            out.push(b.unbind());
            offset += size;
        }
        Ok(())
    })();
    map.release(head.gen);
    result.map(|()| out)
}

/// `_shm_take(envelope)`: the buffers of an `M` envelope whose segment the
/// receiver opens through `/proc/<pid>/fd/<fd>` (a call, in a worker), as
/// `(list of bytes, offset of the pickle stream)`. Releases the segment.
#[pyfunction]
fn _shm_take(py: Python<'_>, envelope: &[u8]) -> PyResult<(Vec<Py<PyBytes>>, usize)> {
    let head = Head::parse(envelope).ok_or_else(|| PyValueError::new_err("not a shared-memory envelope"))?;
    if head.fd < 0 {
        return Err(lost("its descriptor was not received"));
    }
    let (pid, fd) = (head.pid, head.fd);
    let map = py
        .detach(|| Mapping::open_proc(pid, fd))
        .map_err(|e| lost(&format!("cannot open /proc/{pid}/fd/{fd}: {e}")))?;
    let bufs = copy_out(py, &map, &head)?;
    Ok((bufs, head.stream_at))
}

/// What keeps a message's segment from leaking, and gives it back when
/// the message is consumed or dropped unread.
pub(crate) enum ShmGuard {
    /// A named `/dev/shm` file (`S` envelope): unlinked on drop (a no-op
    /// once the receiver unlinked it).
    Named(PathBuf),
    /// Our own pooled segment lent to a worker (a call): released on drop
    /// if the worker has not already done so.
    Own(Arc<Segment>, u64),
    /// A worker's segment, mapped on receipt (a result); `None` once
    /// consumed, or if its descriptor never arrived.
    Peer(Mutex<Option<(Mapping, Head)>>),
}

impl ShmGuard {
    /// The guard for an envelope this process made (a call), if it names a
    /// segment.
    pub(crate) fn of(envelope: &[u8]) -> Option<Arc<ShmGuard>> {
        if let Some(head) = Head::parse(envelope) {
            let seg = shm::pool().find(&head)?;
            return Some(Arc::new(ShmGuard::Own(seg, head.gen)));
        }
        shm::named_path(envelope).map(|p| Arc::new(ShmGuard::Named(p)))
    }

    /// The guard for an envelope a worker sent, taking the descriptor that
    /// came with it from `fds` (in arrival order). A descriptor that is not
    /// this envelope's belongs to a later frame (this one's was lost, e.g.
    /// to a full descriptor table) and stays queued.
    pub(crate) fn received(envelope: &[u8], fds: &mut VecDeque<OwnedFd>) -> Option<Arc<ShmGuard>> {
        let Some(head) = Head::parse(envelope) else {
            return shm::named_path(envelope).map(|p| Arc::new(ShmGuard::Named(p)));
        };
        let mapped = Mapping::received(&head, fds).map(|m| (m, head));
        Some(Arc::new(ShmGuard::Peer(Mutex::new(mapped))))
    }

    /// The file name, for a named segment.
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        match self {
            ShmGuard::Named(p) => Some(p),
            _ => None,
        }
    }

    /// The buffers of a received value, as `_shm_take` returns them; the
    /// segment is released and unmapped.
    pub(crate) fn take(&self, py: Python<'_>) -> PyResult<Option<(Vec<Py<PyBytes>>, usize)>> {
        let ShmGuard::Peer(slot) = self else {
            return Ok(None);
        };
        let Some((map, head)) = slot.lock().take() else {
            return Err(lost("its descriptor never arrived from the worker"));
        };
        let bufs = copy_out(py, &map, &head)?;
        Ok(Some((bufs, head.stream_at)))
    }
}

impl Drop for ShmGuard {
    fn drop(&mut self) {
        match self {
            ShmGuard::Named(p) => {
                let _ = std::fs::remove_file(p);
            }
            ShmGuard::Own(seg, gen) => {
                seg.release(*gen);
            }
            ShmGuard::Peer(slot) => {
                if let Some((map, head)) = slot.get_mut().take() {
                    map.release(head.gen);
                }
            }
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    shm::install();
    m.add_function(wrap_pyfunction!(_shm_put, m)?)?;
    m.add_function(wrap_pyfunction!(_shm_take, m)?)?;
    Ok(())
}
