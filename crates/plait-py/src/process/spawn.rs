//! The process functions a pool's zygote and workers call on themselves:
//! forking a sibling (the zygote makes workers that are the parent's
//! children), dying with the parent, the worker's allocator tuning, and
//! the thread count that decides whether forking the parent is safe.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// `os.fork()` for the zygote: the new process is a child of the zygote's
/// parent, not of the zygote (see `plait_core::fork::fork_sibling`), with
/// CPython's fork hooks run around it as `os.fork` runs them. With
/// `die_with_parent`, the child gets SIGKILL when that parent dies.
#[pyfunction]
fn _fork_sibling(die_with_parent: bool) -> PyResult<i32> {
    if crate::debug::agent::threads_besides_agent() != Some(1) {
        return Err(PyRuntimeError::new_err("_fork_sibling needs a single-threaded process"));
    }
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    // SAFETY: called attached to the interpreter, as CPython requires of
    // PyOS_BeforeFork and of the matching AfterFork call below.
    unsafe { pyo3::ffi::PyOS_BeforeFork() };
    // SAFETY: this process has one thread (checked above), and here, in a
    // Rust function called from Python, it holds no libc-internal lock.
    let r = unsafe { plait_core::fork::fork_sibling() };
    match r {
        Ok(0) => {
            if die_with_parent {
                // SAFETY: prctl and getppid have no memory-safety
                // preconditions; _exit never returns.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if libc::getppid() != parent {
                        libc::_exit(1); // the parent died already
                    }
                }
            }
            // SAFETY: in the new process, still attached, after BeforeFork.
            unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
            Ok(0)
        }
        Ok(pid) => {
            // SAFETY: in the calling process, attached, after BeforeFork.
            unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
            Ok(pid)
        }
        Err(e) => {
            // SAFETY: as above: the fork failed, this is the caller.
            unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
            Err(e.into())
        }
    }
}

/// Get SIGKILL when the parent dies (`PR_SET_PDEATHSIG`); `parent` is the
/// pid the parent had: if it is gone already, exit now. 0: do nothing.
#[pyfunction]
fn _die_with_parent(parent: i32) {
    if parent == 0 {
        return;
    }
    // SAFETY: prctl and getppid have no memory-safety preconditions;
    // _exit never returns.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
}

/// In a worker: keep large freed blocks for reuse. glibc serves a 10 MiB
/// `bytes` from a fresh mapping every time (its adaptive threshold lands
/// exactly at the block's size), which the kernel must fault in and zero
/// again: about 2 ms of a 10 MiB argument's trip. Workers are plait's own
/// processes, so their allocator is tuned; the parent's is left alone.
#[pyfunction]
fn _worker_malloc_tuning() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before the
    // worker allocates large blocks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// Whether this process dies with its parent (`PR_GET_PDEATHSIG`).
#[pyfunction]
fn _dies_with_parent() -> bool {
    let mut sig: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int through the pointer.
    unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int) };
    sig != 0
}

/// This process's thread count (all threads, not only Python's).
#[pyfunction]
fn _thread_count() -> Option<usize> {
    crate::debug::agent::threads_besides_agent()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_fork_sibling, m)?)?;
    m.add_function(wrap_pyfunction!(_thread_count, m)?)?;
    m.add_function(wrap_pyfunction!(_die_with_parent, m)?)?;
    m.add_function(wrap_pyfunction!(_dies_with_parent, m)?)?;
    m.add_function(wrap_pyfunction!(_worker_malloc_tuning, m)?)?;
    Ok(())
}
