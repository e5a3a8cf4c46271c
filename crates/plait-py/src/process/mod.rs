//! `plait.process` bindings: the transport behind `Pipe` and `Queue`, and
//! the shared-memory segments behind the process pool's large buffers.
//!
//! Python pickles (the C pickler is fast) and these classes move bytes.
//! Every socket is non-blocking: a call first tries its I/O while attached
//! and only when it would block detaches to `poll(2)` (sliced in the main
//! thread so Ctrl-C answers, see `wait.rs`). Everything that needs no
//! Python lives in `plait_core::ipc`.
//!
//! * `connection.rs`: `_Channel`, one end of a `Pipe`.
//! * `queue.rs`: `_ProcessQueueCore`, the ring, sockets, counter and feeder
//!   behind a `Queue`.
//! * `shm.rs`: `_shm_put`/`_shm_take` and the `ShmGuard` a task or result
//!   keeps.
//! * `pool.rs`: `_ProcessPoolCore`, the binding of `plait_core::pool`'s
//!   supervisor (the `Host` that pickles, completes futures and raises).
//! * `spawn.rs`: the functions a zygote and a worker call on themselves
//!   (fork a sibling, die with the parent, malloc tuning).
//! * `debug.rs`: every pool's live workers and the task each runs, for
//!   `plait.debug` (`workers_view`).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use plait_core::ipc;
use plait_core::park::Outcome;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::wait::detached;

pub(crate) mod connection;
pub(crate) mod debug;
pub(crate) mod pool;
pub(crate) mod queue;
pub(crate) mod shm;
pub(crate) mod spawn;

use crate::errors::os_error;

/// Wait detached for `events` on `fd`; `Ok(false)` on timeout.
fn wait_ready(py: Python<'_>, fd: RawFd, events: i16, deadline: Option<Instant>) -> PyResult<bool> {
    let (out, err) = detached(py, deadline, |ctx| ipc::wait_fd(fd, events, ctx));
    if let Some(e) = err {
        return Err(e);
    }
    Ok(out != Outcome::TimedOut)
}

/// Adopt `fd`, made non-blocking.
fn take_fd(fd: RawFd) -> PyResult<OwnedFd> {
    if fd < 0 {
        return Err(PyValueError::new_err("invalid file descriptor"));
    }
    ipc::set_nonblocking(fd).map_err(os_error)?;
    // SAFETY: the caller hands over ownership of `fd` (a detached DupFd).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<connection::_Channel>()?;
    m.add_class::<queue::_ProcessQueueCore>()?;
    pool::register(m)?;
    spawn::register(m)?;
    shm::register(m)
}
