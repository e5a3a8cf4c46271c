//! The system facility neither std nor plait-core wraps: CPU affinity.
//!
//! Sockets themselves are std's (`TcpStream` in non-blocking mode, read and
//! write returning `WouldBlock`); readiness comes from plait-core's one
//! epoll wrapper (`plait_core::reactor::Epoll`), level-triggered
//! throughout: a ready socket is reported again until it has been drained,
//! so a handler may do one `read` per event, as asyncio does.

use std::io;

/// Pin the calling process (its calling thread, and threads it starts
/// later) to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no CPU {cpu}"),
        ));
    }
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so CPU_SET writes
    // inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid, initialised cpu_set_t of the size we pass;
    // pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
