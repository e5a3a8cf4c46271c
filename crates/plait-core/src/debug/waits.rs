//! The wait table: which primitive each parked thread waits on, and the
//! deadlock walk over it.
//!
//! A thread about to park calls [`begin_wait`], which records
//! `ident -> (primitive, since, deadline)` in one process-wide table and,
//! when deadlock detection is on (`Mode::Report` / `Mode::Raise`), walks
//! owner and waits-for edges from there: the primitive's holders, what each
//! holder waits on, their holders, and so on. Coming back to the caller
//! closes a cycle. The entry is set *before* the walk, under the table's
//! mutex, so of two threads closing a cycle together the second to take
//! the mutex sees the first's entry: a cycle is never missed.
//!
//! The table stores raw pointers to the primitives. They stay valid while
//! read: a thread's entry is removed (under the mutex) before the thread
//! returns from the wait, and the thread borrows the primitive for the
//! whole wait, so under the mutex every entry's primitive is alive.
//!
//! Certainty: an RLock, a future being run by a thread, or a Lock that has
//! never been released by a thread other than its acquirer, is released by
//! its holder; a cycle of two or more threads through only those is a
//! deadlock. A cycle through a Semaphore, or a plain Lock that someone else
//! released before, or one thread waiting on a plain Lock it took itself
//! (a Lock used as a signal, which CPython's own tests do), may still be
//! broken by a thread outside it: such a cycle is *probable*, reported once
//! it has lasted [`PATIENCE`], never raised.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use super::{instant_to_ns, now_ns, Holder, Inspect, Kind};
use crate::park::WaitCtx;
use crate::spin::SpinMutex;
use crate::thread::ident;

/// How long a cycle must last before it is reported without any setting
/// (and before a probable cycle is reported in `Report` mode).
pub const PATIENCE: Duration = Duration::from_secs(2);

/// Deadlock detection setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Mode {
    /// No detection at all (not even the 2-second report).
    Off = 0,
    /// Default: a cycle that has lasted [`PATIENCE`] is reported once.
    Patient = 1,
    /// Walk before parking; report a certain cycle at once.
    Report = 2,
    /// Walk before parking; raise in the thread that would close a certain
    /// cycle.
    Raise = 3,
}

static MODE: AtomicU8 = AtomicU8::new(Mode::Patient as u8);
/// Stall threshold in ns; 0 = off.
static STALL_NS: AtomicU64 = AtomicU64::new(0);

/// The current detection mode.
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        0 => Mode::Off,
        2 => Mode::Report,
        3 => Mode::Raise,
        _ => Mode::Patient,
    }
}

pub fn set_mode(m: Mode) {
    MODE.store(m as u8, Ordering::Relaxed);
}

/// The stall threshold, if stall reporting is on.
pub fn stall() -> Option<Duration> {
    match STALL_NS.load(Ordering::Relaxed) {
        0 => None,
        ns => Some(Duration::from_nanos(ns)),
    }
}

pub fn set_stall(d: Option<Duration>) {
    let ns = d.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
    STALL_NS.store(ns, Ordering::Relaxed);
}

/// A `*const dyn Inspect` that may cross threads (see the module doc for
/// why it stays valid while read under the table's mutex).
#[derive(Clone, Copy)]
struct Target(*const dyn Inspect);

// SAFETY: the pointee is `Sync` (Inspect: Sync) and is only dereferenced
// under the table's mutex while its waiter's entry exists, which keeps it
// alive (module doc).
unsafe impl Send for Target {}

#[derive(Clone, Copy)]
struct Entry {
    target: Target,
    since_ns: u64,
    deadline_ns: Option<u64>,
}

struct Table {
    threads: Option<HashMap<u64, Entry>>,
    /// Cycles already reported (by their sorted links), so each is
    /// reported once.
    reported: Option<HashSet<Vec<(u64, usize)>>>,
}

// The spin mutex: it is reset in a forked child (see `after_fork`).
static TABLE: SpinMutex<Table> = SpinMutex::new(Table { threads: None, reported: None });

/// One edge of a cycle: `thread` waits on the primitive `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub thread: u64,
    pub id: usize,
    pub kind: Kind,
}

/// A waits-for cycle: each link's primitive is held by the next link's
/// thread, and the last one's by the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub links: Vec<Link>,
    /// No thread outside the cycle can break it (module doc).
    pub certain: bool,
}

impl Cycle {
    /// The cycle's identity regardless of where the walk entered it.
    pub fn key(&self) -> Vec<(u64, usize)> {
        let mut k: Vec<(u64, usize)> = self.links.iter().map(|l| (l.thread, l.id)).collect();
        k.sort_unstable();
        k
    }
}

/// What the binding does with a cycle found while a thread is about to
/// park in `Report` mode (write the report; runs detached, no Rust lock
/// held).
pub type ReportHook = fn(&Cycle);

static REPORT_HOOK: std::sync::OnceLock<ReportHook> = std::sync::OnceLock::new();

/// Install the report hook (once).
pub fn set_report_hook(hook: ReportHook) {
    let _ = REPORT_HOOK.set(hook);
}

thread_local! {
    static REFUSED: RefCell<Option<Cycle>> = const { RefCell::new(None) };
}

/// The cycle that made this thread's last wait refuse to park
/// (`Mode::Raise`); the caller turns it into `DeadlockError`.
pub fn take_refused() -> Option<Cycle> {
    REFUSED.with(|r| r.borrow_mut().take())
}

/// A wait that was not allowed to park: it would have closed a certain
/// cycle in `Mode::Raise` (the cycle is kept for [`take_refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

/// A thread's registration in the wait table; removes it when dropped.
pub struct WaitGuard {
    me: u64,
    /// Monotonic ns when the wait started (also the table entry's `since`).
    start_ns: u64,
    /// The wait this one interrupted (a report written from inside a wait
    /// may itself wait), put back when this one ends.
    outer: Option<Entry>,
}

impl WaitGuard {
    /// Nanoseconds since the wait started (0 when tracking is off).
    pub fn elapsed_ns(&self) -> u64 {
        if self.start_ns == 0 {
            return 0;
        }
        now_ns().saturating_sub(self.start_ns)
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.me == 0 {
            return;
        }
        let mut t = TABLE.lock();
        if let Some(m) = t.threads.as_mut() {
            match self.outer.take() {
                Some(e) => m.insert(self.me, e),
                None => m.remove(&self.me),
            };
        }
    }
}

/// Record that the calling thread is about to park on `target` within
/// `ctx`, and look for a cycle when detection is on. `Err(Refused)` means the
/// wait must not happen: parking would close a certain cycle in
/// `Mode::Raise` and `ctx` is refusable (the cycle is kept for
/// [`take_refused`]).
pub fn begin_wait(target: &(dyn Inspect + 'static), ctx: &WaitCtx<'_>) -> Result<WaitGuard, Refused> {
    let deadline = ctx.deadline;
    let me = ident();
    if cfg!(loom) || !super::tracking() {
        // Tracking is off; or loom, which models the primitives' protocols:
        // the table's spin mutex would spin forever across its preemption
        // points.
        return Ok(WaitGuard { me: 0, start_ns: 0, outer: None });
    }
    let start_ns = now_ns();
    let entry = Entry {
        target: Target(target as *const dyn Inspect),
        since_ns: start_ns,
        deadline_ns: deadline.map(instant_to_ns),
    };
    let m = mode();
    let (found, outer) = {
        let mut t = TABLE.lock();
        let outer = t.threads.get_or_insert_with(HashMap::new).insert(me, entry);
        let found = if m >= Mode::Report { find_cycle(&t, me) } else { None };
        (found, outer)
    };
    let guard = WaitGuard { me, start_ns, outer };
    if let Some(cycle) = found {
        if cycle.certain {
            if m == Mode::Raise && ctx.refusable {
                drop(guard);
                REFUSED.with(|r| *r.borrow_mut() = Some(cycle));
                return Err(Refused);
            }
            if first_report(&cycle) {
                if let Some(hook) = REPORT_HOOK.get() {
                    hook(&cycle);
                }
            }
        }
    }
    Ok(guard)
}

/// `true` the first time `cycle` is offered (each cycle is reported once).
pub fn first_report(cycle: &Cycle) -> bool {
    let mut t = TABLE.lock();
    t.reported.get_or_insert_with(HashSet::new).insert(cycle.key())
}

/// The cycle the calling thread's current wait is part of, if any
/// (the periodic check of a parked thread).
pub fn current_cycle() -> Option<Cycle> {
    let t = TABLE.lock();
    find_cycle(&t, ident())
}

fn holders_of(e: &Entry, out: &mut Vec<Holder>) {
    out.clear();
    // SAFETY: called under the table's mutex with `e` in the table: the
    // primitive is alive (module doc).
    unsafe { (*e.target.0).holders(out) };
}

/// Depth-first walk of waits-for edges from `me`'s entry, back to `me`.
fn find_cycle(t: &Table, me: u64) -> Option<Cycle> {
    let threads = t.threads.as_ref()?;
    let mut path: Vec<(u64, Entry)> = Vec::new();
    let mut seen = HashSet::new();
    let mut buf = Vec::new();
    if walk(threads, me, me, &mut path, &mut seen, &mut buf) {
        Some(make_cycle(&path))
    } else {
        None
    }
}

const MAX_DEPTH: usize = 64;

fn walk(
    threads: &HashMap<u64, Entry>,
    me: u64,
    at: u64,
    path: &mut Vec<(u64, Entry)>,
    seen: &mut HashSet<u64>,
    buf: &mut Vec<Holder>,
) -> bool {
    let Some(e) = threads.get(&at) else { return false };
    if path.len() >= MAX_DEPTH {
        return false;
    }
    path.push((at, *e));
    holders_of(e, buf);
    let holders: Vec<u64> = buf.iter().map(|h| h.ident).collect();
    for h in holders {
        if h == me {
            return true;
        }
        if seen.insert(h) && walk(threads, me, h, path, seen, buf) {
            return true;
        }
    }
    path.pop();
    false
}

fn make_cycle(path: &[(u64, Entry)]) -> Cycle {
    let mut links = Vec::with_capacity(path.len());
    let mut certain = true;
    for (thread, e) in path {
        // SAFETY: as in `holders_of`: under the mutex, entry in the table.
        let obj = unsafe { &*e.target.0 };
        if obj.loose() || (path.len() == 1 && obj.kind() == Kind::Lock) {
            certain = false;
        }
        links.push(Link { thread: *thread, id: super::id_of(obj), kind: obj.kind() });
    }
    Cycle { links, certain }
}

/// What a thread is parked on now, for snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadWait {
    pub ident: u64,
    pub id: usize,
    pub since_ns: u64,
    pub deadline_ns: Option<u64>,
}

/// Every parked thread's wait.
pub fn thread_waits() -> Vec<ThreadWait> {
    let t = TABLE.lock();
    let Some(m) = t.threads.as_ref() else { return Vec::new() };
    m.iter()
        .map(|(ident, e)| ThreadWait {
            ident: *ident,
            // SAFETY: under the mutex with the entry present (module doc).
            id: super::id_of(unsafe { &*e.target.0 }),
            since_ns: e.since_ns,
            deadline_ns: e.deadline_ns,
        })
        .collect()
}

/// Whether every thread in `idents` is parked with no deadline on a
/// primitive whose holders (if any) are all parked too: nothing among
/// them can ever wake anyone. `false` for an empty list.
pub fn all_stuck(idents: &[u64]) -> bool {
    if idents.is_empty() {
        return false;
    }
    let t = TABLE.lock();
    let Some(m) = t.threads.as_ref() else { return false };
    let mut buf = Vec::new();
    for id in idents {
        let Some(e) = m.get(id) else { return false };
        if e.deadline_ns.is_some() {
            return false;
        }
        holders_of(e, &mut buf);
        if buf.iter().any(|h| !m.contains_key(&h.ident)) {
            return false;
        }
    }
    true
}

/// Forget every wait but `survivor`'s in a forked child, and make the
/// table's mutex usable.
///
/// # Safety
/// Only from the atfork child handler, while the child is single-threaded.
pub unsafe fn after_fork(survivor: u64) {
    if TABLE.is_locked() {
        // SAFETY: the child has one thread; the holder of this mutex at the
        // fork does not exist here and never unlocks it.
        unsafe { TABLE.force_unlock() };
    }
    let mut t = TABLE.lock();
    if let Some(m) = t.threads.as_mut() {
        m.retain(|k, _| *k == survivor);
    }
    t.reported = None;
}
