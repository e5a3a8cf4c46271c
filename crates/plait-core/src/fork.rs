//! Fork safety: a registry of live primitives, reset in the child.
//!
//! After `fork()` only the forking thread exists in the child. Any internal
//! mutex another thread held at that moment would stay locked forever, and
//! wait lists would name threads that are gone. Like CPython's
//! `_at_fork_reinit`, every plait primitive registers here; a
//! `pthread_atfork` child handler walks the registry and resets each one,
//! telling it which thread survived so it can keep what that thread owns
//! and release what vanished threads owned.
//!
//! The prepare handler takes the registry mutex so the child never sees it
//! mid-update; registration never blocks on anything else while holding it.
//!
//! A few long-lived services (the timer thread) keep state that must survive
//! the fork intact, not merely be reset: they register a [`ForkPrepare`],
//! whose `prepare` takes their own mutex before the fork and whose
//! `parent`/`child` release it after. Those run after the registry's own
//! repairs in the child, so the primitives they touch are already usable.

use std::sync::{Arc, Once, Weak};

// The spin mutex, not parking_lot's: contenders never enter parking_lot's global
// table, which a forked child would inherit with vanished threads in it.
use crate::spin::SpinMutex as Mutex;

use crate::thread::ident;

/// Something with internal state to repair in a forked child.
pub trait AfterFork: Send + Sync {
    /// Repair internal state in the child. `survivor` is the ident of the
    /// one thread that exists in the child (the one that forked).
    ///
    /// # Safety
    /// Called only from the `pthread_atfork` child handler, while the child
    /// is single-threaded.
    unsafe fn after_fork_child(&self, survivor: u64);

    /// The primitive as `plait.debug` sees it (`None`: not a primitive).
    fn inspect(&self) -> Option<&dyn crate::debug::Inspect> {
        None
    }
}

/// A process-lifetime object that holds its own lock across `fork()`.
pub trait ForkPrepare: Sync {
    /// Take the object's lock and keep it (leak the guard). Called in the
    /// forking thread just before `fork()`.
    fn prepare(&self);

    /// Release the lock `prepare` took, in the parent.
    ///
    /// # Safety
    /// Only from the atfork parent handler, after `prepare` in this thread.
    unsafe fn parent(&self);

    /// Release the lock `prepare` took and repair what the vanished
    /// threads left, in the child.
    ///
    /// # Safety
    /// Only from the atfork child handler, after `prepare` in the forking
    /// thread, while the child is single-threaded.
    unsafe fn child(&self);
}

static PREPARED: Mutex<Vec<&'static dyn ForkPrepare>> = Mutex::new(Vec::new());

/// Register `obj` for the life of the process (see [`ForkPrepare`]).
pub fn register_prepared(obj: &'static dyn ForkPrepare) {
    install();
    PREPARED.lock().push(obj);
}

struct Registry {
    slots: Vec<Option<Weak<dyn AfterFork>>>,
    free: Vec<usize>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { slots: Vec::new(), free: Vec::new() });
static INSTALL: Once = Once::new();
static FORK_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A registration; dropping it removes the entry.
#[derive(Debug)]
pub struct Registration(usize);

impl Drop for Registration {
    fn drop(&mut self) {
        let mut r = REGISTRY.lock();
        if let Some(slot) = r.slots.get_mut(self.0) {
            *slot = None;
            r.free.push(self.0);
        }
    }
}

/// Register `obj` to be repaired in forked children for as long as the
/// returned [`Registration`] lives.
pub fn register(obj: Weak<dyn AfterFork>) -> Registration {
    install();
    let mut r = REGISTRY.lock();
    let idx = match r.free.pop() {
        Some(i) => {
            r.slots[i] = Some(obj);
            i
        }
        None => {
            r.slots.push(Some(obj));
            r.slots.len() - 1
        }
    };
    Registration(idx)
}

/// Register an `Arc` (convenience).
pub fn register_arc<T: AfterFork + 'static>(obj: &Arc<T>) -> Registration {
    let weak: Weak<T> = Arc::downgrade(obj);
    register(weak)
}

/// Every live registered primitive (for `plait.debug`). The registry's
/// lock is released before returning, so the caller may drop the `Arc`s.
pub fn live() -> Vec<Arc<dyn AfterFork>> {
    let r = REGISTRY.lock();
    r.slots.iter().flatten().filter_map(Weak::upgrade).collect()
}

/// How many times this process has been forked into a child (0 in the
/// original process). Lets lazily-checked state notice a fork.
pub fn generation() -> u64 {
    FORK_GENERATION.load(std::sync::atomic::Ordering::Acquire)
}

/// Install the `pthread_atfork` handlers (idempotent).
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: the three handlers are `extern "C"` functions with the
        // signature pthread_atfork expects, valid for the process lifetime.
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        assert_eq!(rc, 0, "pthread_atfork failed");
    });
}

extern "C" fn prepare() {
    // Hold the registry across fork() so the child's copy is consistent.
    std::mem::forget(REGISTRY.lock());
    let prepared = PREPARED.lock();
    for obj in prepared.iter() {
        obj.prepare();
    }
    std::mem::forget(prepared);
}

extern "C" fn parent() {
    // SAFETY: `prepare` locked PREPARED in this same thread and leaked the
    // guard; the objects' own locks likewise.
    unsafe {
        for obj in (*PREPARED.data_ptr()).iter() {
            obj.parent();
        }
        PREPARED.force_unlock();
    }
    // SAFETY: `prepare` locked the registry in this same thread and leaked
    // the guard; this releases exactly that lock.
    unsafe { REGISTRY.force_unlock() };
}

extern "C" fn child() {
    // SAFETY: as in `parent`: the forking thread (now the child's only
    // thread) locked the registry in `prepare`.
    unsafe { REGISTRY.force_unlock() };
    FORK_GENERATION.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let survivor = ident();
    set_main_thread(survivor);
    // SAFETY: we are in the atfork child handler; the child has one thread.
    unsafe { crate::debug::waits::after_fork(survivor) };
    // SAFETY: as above.
    unsafe { crate::debug::order::after_fork() };
    let live: Vec<Arc<dyn AfterFork>> = {
        let r = REGISTRY.lock();
        r.slots.iter().flatten().filter_map(Weak::upgrade).collect()
    };
    for obj in &live {
        // SAFETY: we are in the atfork child handler; the child has one thread.
        unsafe { obj.after_fork_child(survivor) };
    }
    // SAFETY: the forking thread locked PREPARED (and each object's lock)
    // in `prepare`; the child has one thread, which runs this.
    unsafe {
        for obj in (*PREPARED.data_ptr()).iter() {
            obj.child();
        }
        PREPARED.force_unlock();
    }
    // Dropping `live` may drop the last strong reference of an object
    // whose owner vanished; its Registration then takes the registry lock,
    // which is free again here.
    drop(live);
}

static MAIN_THREAD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Record which thread receives signals (the binding sets it at import).
pub fn set_main_thread(id: u64) {
    MAIN_THREAD.store(id, std::sync::atomic::Ordering::Relaxed);
}

/// The thread that receives signals; after a fork, the forking thread.
pub fn main_thread() -> u64 {
    MAIN_THREAD.load(std::sync::atomic::Ordering::Relaxed)
}

// ---- what each core type repairs in a forked child -----------------------

impl AfterFork for crate::sync::Lock {
    /// # Safety
    /// As [`AfterFork::after_fork_child`]: from the child handler only.
    unsafe fn after_fork_child(&self, survivor: u64) {
        // SAFETY: forwarded: called from the child handler only.
        unsafe { self.after_fork(survivor) }
    }
    fn inspect(&self) -> Option<&dyn crate::debug::Inspect> {
        Some(self)
    }
}

impl AfterFork for crate::sync::RLock {
    /// # Safety
    /// As [`AfterFork::after_fork_child`]: from the child handler only.
    unsafe fn after_fork_child(&self, survivor: u64) {
        // SAFETY: forwarded: called from the child handler only.
        unsafe { self.after_fork(survivor) }
    }
    fn inspect(&self) -> Option<&dyn crate::debug::Inspect> {
        Some(self)
    }
}

impl AfterFork for crate::sync::Semaphore {
    /// # Safety
    /// As [`AfterFork::after_fork_child`]: from the child handler only.
    unsafe fn after_fork_child(&self, _survivor: u64) {
        // SAFETY: forwarded: called from the child handler only.
        unsafe { self.after_fork() }
    }
    fn inspect(&self) -> Option<&dyn crate::debug::Inspect> {
        Some(self)
    }
}

impl AfterFork for crate::sync::Event {
    /// # Safety
    /// As [`AfterFork::after_fork_child`]: from the child handler only.
    unsafe fn after_fork_child(&self, _survivor: u64) {
        // SAFETY: forwarded: called from the child handler only.
        unsafe { self.after_fork() }
    }
    fn inspect(&self) -> Option<&dyn crate::debug::Inspect> {
        Some(self)
    }
}

impl AfterFork for crate::sync::CondVar {
    /// # Safety
    /// As [`AfterFork::after_fork_child`]: from the child handler only.
    unsafe fn after_fork_child(&self, _survivor: u64) {
        // SAFETY: forwarded: called from the child handler only.
        unsafe { self.after_fork() }
    }
    fn inspect(&self) -> Option<&dyn crate::debug::Inspect> {
        Some(self)
    }
}

impl AfterFork for crate::sync::Barrier {
    /// # Safety
    /// As [`AfterFork::after_fork_child`]: from the child handler only.
    unsafe fn after_fork_child(&self, _survivor: u64) {
        // SAFETY: forwarded: called from the child handler only.
        unsafe { self.after_fork() }
    }
    fn inspect(&self) -> Option<&dyn crate::debug::Inspect> {
        Some(self)
    }
}

#[cfg(not(loom))]
impl AfterFork for crate::timer::TimerCell {
    /// # Safety
    /// As [`AfterFork::after_fork_child`]: from the child handler only.
    unsafe fn after_fork_child(&self, _survivor: u64) {
        // SAFETY: forwarded: called from the child handler only.
        unsafe { self.after_fork() }
    }
}

impl<T: Send + Sync + 'static> AfterFork for crate::queue::Queue<T> {
    /// # Safety
    /// As [`AfterFork::after_fork_child`]: from the child handler only.
    unsafe fn after_fork_child(&self, _survivor: u64) {
        // SAFETY: forwarded: called from the child handler only.
        unsafe { self.after_fork() }
    }
    fn inspect(&self) -> Option<&dyn crate::debug::Inspect> {
        Some(self)
    }
}

// ---- forking a sibling -----------------------------------------------------

/// Fork, as `fork(2)` does, but make the new process a child of this
/// process's parent (`CLONE_PARENT`), not of this process. Returns the new
/// pid in the caller and 0 in the new process.
///
/// A process pool's zygote uses it: the zygote is a forked, single-threaded
/// copy of the pool's owner, and the workers it forks must be the owner's
/// children, so the owner can `waitpid` them for their exit status and kill
/// them, as it does the workers it starts itself.
///
/// This process's own `pthread_atfork` handlers (the registry's repair)
/// run around it as around `fork()`. glibc's fork bookkeeping does not:
/// in the new process, glibc's cached thread id of the calling thread is
/// still the caller's. glibc itself asks the kernel wherever that matters
/// for a thread signalling itself (`raise`, `pthread_kill` of self since
/// 2.34), and CPython's native thread ids come from `gettid`.
///
/// # Safety
/// The caller must be the only thread of its process, and must not hold
/// any lock (malloc's, stdio's) that the child would need: glibc's fork
/// handlers, which would reset those, are not run.
pub unsafe fn fork_sibling() -> std::io::Result<libc::pid_t> {
    install();
    prepare();
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a raw clone with no new stack (the child continues on a
    // copy of this stack, as after fork) and no tid pointers; the caller
    // guarantees no other thread exists whose state the child could
    // inherit half-updated.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid == 0 {
        child();
        return Ok(0);
    }
    let err = std::io::Error::last_os_error();
    parent();
    if pid < 0 {
        Err(err)
    } else {
        Ok(pid as libc::pid_t)
    }
}

/// How many threads this process has (from `/proc/self/task`); `None` if
/// it cannot tell.
pub fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}
