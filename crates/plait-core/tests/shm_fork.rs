//! A forked child never writes into its parent's segments: the process's
//! pool discards what it inherited on first use. One test in this binary,
//! so the fork happens with no other test thread running.
#![cfg(not(loom))]

use plait_core::ipc::shm;

#[test]
fn shm_forked_child_discards_inherited_segments() {
    shm::install();
    let pool = shm::pool();
    let lease = pool.lease(64).unwrap().unwrap();
    let seg = lease.segment().clone();
    // SAFETY: eight bytes inside the lease's data, which it holds BUSY.
    unsafe { std::ptr::copy_nonoverlapping(b"parent!!".as_ptr(), seg.map().data(), 8) };
    let parent_serial = seg.map().serial();
    assert!(seg.release(lease.generation()));
    assert_eq!(pool.segments(), 1);

    // SAFETY: the child only runs this crate's code and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // The child: the free segment of the same size is the parent's,
        // so it must get a fresh one and leave the parent's data alone.
        let status = (|| {
            let l = pool.lease(64).ok()??;
            if l.segment().map().serial() == parent_serial {
                return Some(2);
            }
            if pool.segments() != 1 {
                return Some(3);
            }
            // SAFETY: eight bytes inside the child's own lease.
            unsafe { std::ptr::copy_nonoverlapping(b"child!!!".as_ptr(), l.segment().map().data(), 8) };
            Some(0)
        })()
        .unwrap_or(1);
        // SAFETY: leave without running the test harness's exit path.
        unsafe { libc::_exit(status) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child did not exit normally: {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child status (2: reused the parent's segment)");

    // The parent's pool is intact: its segment comes back, unwritten.
    let again = pool.lease(64).unwrap().unwrap();
    assert!(std::sync::Arc::ptr_eq(again.segment(), &seg));
    // SAFETY: eight bytes inside our own lease.
    assert_eq!(unsafe { std::slice::from_raw_parts(again.segment().map().data(), 8) }, b"parent!!");
}
