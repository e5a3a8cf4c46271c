//! The fork registry: after `fork()` the child repairs every registered
//! primitive, keeping what the surviving thread owns and freeing what
//! vanished threads owned. The child reports through its exit status;
//! the parent waits for it with an upper bound and kills it on overrun.
#![cfg(all(not(loom), not(miri)))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use plait_core::fork::{self, AfterFork};
use plait_core::park::{Outcome, WaitCtx};
use plait_core::sync::{Event, Lock, RLock, Semaphore};
use plait_core::thread::ident;

/// Fork; run `child` in the child (its return value is the exit code) and
/// return the child's exit code in the parent.
fn in_child(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only touches plait atomics and calls _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
        // SAFETY: _exit never returns and runs no destructors or atexit hooks.
        unsafe { libc::_exit(code) };
    }
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid failed");
        if r == pid {
            assert!(libc::WIFEXITED(status), "child died abnormally: {status}");
            return libc::WEXITSTATUS(status);
        }
        if Instant::now() > end {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("forked child hung");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn child_keeps_survivor_locks_and_frees_vanished_ones() {
    let mine = Arc::new(Lock::new());
    let theirs = Arc::new(Lock::new());
    let my_rlock = Arc::new(RLock::new());
    let their_rlock = Arc::new(RLock::new());
    let _regs = [
        fork::register_arc(&mine),
        fork::register_arc(&theirs),
        fork::register_arc(&my_rlock),
        fork::register_arc(&their_rlock),
    ];
    assert!(mine.try_acquire());
    assert_eq!(my_rlock.try_acquire(), Ok(true));
    assert_eq!(my_rlock.try_acquire(), Ok(true));
    // Another thread takes `theirs` and holds it across the fork.
    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (t1, t2) = (Arc::clone(&theirs), Arc::clone(&their_rlock));
    let holder = thread::spawn(move || {
        assert!(t1.try_acquire());
        assert_eq!(t2.try_acquire(), Ok(true));
        held_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        assert!(t1.release());
        assert_eq!(t2.release(), Ok(()));
    });
    held_rx.recv().unwrap();
    let me = ident();
    let gen = fork::generation();
    let code = in_child(|| {
        let checks = [
            fork::generation() == gen + 1,
            fork::main_thread() == me,
            mine.is_locked() && mine.owner() == me,
            !theirs.is_locked() && theirs.try_acquire(),
            my_rlock.is_owned() && my_rlock.recursion_count() == 2,
            !their_rlock.is_locked() && their_rlock.try_acquire() == Ok(true),
        ];
        // Exit code: the index of the first failed check, or 0.
        checks.iter().position(|ok| !ok).map_or(0, |i| 10 + i as i32)
    });
    go_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(code, 0, "check {} failed in the child", code - 10);
    // The parent is untouched.
    assert_eq!(fork::generation(), gen);
    assert!(mine.is_locked());
    assert!(mine.release());
}

#[test]
fn child_forgets_waiters_of_vanished_threads() {
    let sem = Arc::new(Semaphore::new(0));
    let ev = Arc::new(Event::new());
    let _regs = [fork::register_arc(&sem), fork::register_arc(&ev)];
    let (s2, e2) = (Arc::clone(&sem), Arc::clone(&ev));
    let sem_waiter =
        thread::spawn(move || s2.acquire(&WaitCtx::timeout(Some(Duration::from_secs(20)))));
    let ev_waiter =
        thread::spawn(move || e2.wait(&WaitCtx::timeout(Some(Duration::from_secs(20)))));
    let end = Instant::now() + Duration::from_secs(20);
    while sem.waiters().len() != 1 || ev.waiters().len() != 1 {
        assert!(Instant::now() < end);
        thread::sleep(Duration::from_millis(1));
    }
    let code = in_child(|| {
        let checks = [
            sem.waiters().is_empty(),
            ev.waiters().is_empty(),
            sem.release(1).is_ok() && sem.try_acquire(),
            {
                ev.set();
                ev.is_set()
            },
        ];
        checks.iter().position(|ok| !ok).map_or(0, |i| 10 + i as i32)
    });
    sem.release(1).unwrap();
    ev.set();
    assert_eq!(sem_waiter.join().unwrap(), Outcome::Notified);
    assert_eq!(ev_waiter.join().unwrap(), Outcome::Notified);
    assert_eq!(code, 0, "check {} failed in the child", code - 10);
}

struct Counter(AtomicUsize);

impl AfterFork for Counter {
    unsafe fn after_fork_child(&self, _survivor: u64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn dropped_registration_is_not_called() {
    let kept = Arc::new(Counter(AtomicUsize::new(0)));
    let dropped = Arc::new(Counter(AtomicUsize::new(0)));
    let _keep = fork::register_arc(&kept);
    drop(fork::register_arc(&dropped));
    let code = in_child(|| {
        let ok = kept.0.load(Ordering::SeqCst) == 1 && dropped.0.load(Ordering::SeqCst) == 0;
        if ok {
            0
        } else {
            1
        }
    });
    assert_eq!(code, 0);
    assert_eq!(kept.0.load(Ordering::SeqCst), 0, "the parent is not repaired");
}

/// `fork_sibling` from a single-threaded child makes a process whose parent
/// is the test process: we can reap it and read its exit code, and the
/// registry was repaired in it as after a plain fork.
#[test]
fn fork_sibling_is_a_child_of_the_grandparent() {
    let me = std::process::id() as libc::pid_t;
    let mut fds = [0i32; 2];
    // SAFETY: a plain pipe into a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let code = in_child(move || {
        let lock = Lock::new();
        let generation = fork::generation();
        // SAFETY: the forked test child has only this thread and holds no lock.
        match unsafe { fork::fork_sibling() } {
            Ok(0) => {
                // The sibling: its parent is the test process, and the
                // registry ran its child handler here.
                // SAFETY: getppid has no preconditions.
                let ok = unsafe { libc::getppid() } == me && fork::generation() == generation + 1 && lock.try_acquire();
                // SAFETY: _exit never returns.
                unsafe { libc::_exit(if ok { 42 } else { 1 }) }
            }
            Ok(pid) => {
                let bytes = pid.to_le_bytes();
                // SAFETY: writing 4 bytes from a live array to our pipe.
                let n = unsafe { libc::write(wr, bytes.as_ptr().cast(), 4) };
                if n == 4 {
                    0
                } else {
                    2
                }
            }
            Err(_) => 3,
        }
    });
    assert_eq!(code, 0);
    let mut bytes = [0u8; 4];
    // SAFETY: reading 4 bytes into a live array from our pipe.
    assert_eq!(unsafe { libc::read(rd, bytes.as_mut_ptr().cast(), 4) }, 4);
    let sibling = i32::from_le_bytes(bytes);
    let mut status = 0;
    // SAFETY: the sibling is our child; waitpid blocks until it exits (it
    // exits at once).
    assert_eq!(unsafe { libc::waitpid(sibling, &mut status, 0) }, sibling);
    assert!(libc::WIFEXITED(status));
    assert_eq!(libc::WEXITSTATUS(status), 42);
    // SAFETY: closing our own pipe ends.
    unsafe {
        libc::close(rd);
        libc::close(wr);
    }
}
