//! Visibility: what every primitive knows about itself, and what every
//! thread waits on (`plait.debug`).
//!
//! Three pieces, all always on:
//!
//! * [`Probe`]: carried by every primitive. Its name and creation site (set
//!   by the binding), since when its current holder holds it, and its
//!   contention statistics. The fast paths touch at most one field of it
//!   (`since`, written with the coarse clock on a lock's acquire).
//! * [`Inspect`]: the trait a primitive implements so a snapshot or the
//!   deadlock walk can ask who holds it and who waits for it.
//! * [`waits`]: the table of parked threads (what each waits on, since
//!   when, until when), the cycle walk run before a thread parks, and the
//!   settings (`deadlock=report|raise`, stall).
//!
//! [`order`] records lock order (lockdep-style) when it is switched on.
//!
//! Times are nanoseconds of `CLOCK_MONOTONIC`, the clock of Python's
//! `time.monotonic()`, so the binding can hand them over unconverted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

pub mod order;
pub mod waits;

pub use waits::{begin_wait, Cycle, Link, Mode, WaitGuard};

/// What kind of primitive a [`Probe`] belongs to (the node kinds of the
/// snapshot graph).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Lock,
    RLock,
    Condition,
    Semaphore,
    Event,
    Barrier,
    Queue,
    Future,
}

impl Kind {
    /// The name used in the snapshot's JSON (`"lock"`, `"rlock"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::RLock => "rlock",
            Kind::Condition => "condition",
            Kind::Semaphore => "semaphore",
            Kind::Event => "event",
            Kind::Barrier => "barrier",
            Kind::Queue => "queue",
            Kind::Future => "future",
        }
    }
}

static TRACKING: AtomicBool = AtomicBool::new(true);

/// Whether primitives record holders' times and waits (default on;
/// `plait.debug.enable(tracking=False)` turns it off for the last few
/// percent of speed, and with it every report).
#[inline]
pub fn tracking() -> bool {
    TRACKING.load(Ordering::Relaxed)
}

pub fn set_tracking(on: bool) {
    TRACKING.store(on, Ordering::Relaxed);
}

/// `CLOCK_MONOTONIC` in nanoseconds (what `time.monotonic()` reads).
pub fn now_ns() -> u64 {
    read_clock(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_MONOTONIC_COARSE`: the same clock at tick resolution (a few
/// milliseconds), about four times cheaper to read; used on fast paths
/// (a Lock's acquire), where it calls the kernel's vDSO directly: glibc's
/// `clock_gettime` wrapper costs a third of the read.
#[inline]
pub fn coarse_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    match vdso_clock_gettime() {
        // SAFETY: the vDSO's clock_gettime has clock_gettime's signature
        // and contract; `ts` is a valid, writable timespec.
        Some(f) => unsafe { f(libc::CLOCK_MONOTONIC_COARSE, &mut ts) },
        // SAFETY: as in `read_clock`.
        None => unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) },
    };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

/// `__vdso_clock_gettime`, looked up once (`None` without a vDSO, or with
/// a libc that does not expose it by name). The vDSO is mapped for the
/// life of the process and at the same address in a forked child.
#[inline]
fn vdso_clock_gettime() -> Option<ClockGettime> {
    static F: OnceLock<Option<ClockGettime>> = OnceLock::new();
    *F.get_or_init(|| {
        // SAFETY: dlopen with RTLD_NOLOAD only looks up an object already
        // mapped (glibc registers the vDSO under this name); NUL-terminated
        // names.
        let h = unsafe { libc::dlopen(c"linux-vdso.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if h.is_null() {
            return None;
        }
        // SAFETY: dlsym on a live handle with a NUL-terminated name.
        let p = unsafe { libc::dlsym(h, c"__vdso_clock_gettime".as_ptr()) };
        // SAFETY: when present, the symbol is the vDSO's clock_gettime,
        // whose signature is ClockGettime's.
        (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut libc::c_void, ClockGettime>(p) })
    })
}

#[inline]
fn read_clock(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// An `Instant` deadline on the monotonic nanosecond clock.
pub fn instant_to_ns(at: Instant) -> u64 {
    let now = Instant::now();
    let base = now_ns();
    if at >= now {
        base.saturating_add(u64::try_from((at - now).as_nanos()).unwrap_or(u64::MAX))
    } else {
        base.saturating_sub(u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Contention statistics of one primitive. Updated only on slow paths.
#[derive(Debug, Default)]
pub struct Stats {
    contended: AtomicU64,
    wait_total_ns: AtomicU64,
    wait_max_ns: AtomicU64,
    hold_max_ns: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsView {
    /// Acquisitions (or waits) that could not proceed at once.
    pub contended: u64,
    pub wait_total_ns: u64,
    pub wait_max_ns: u64,
    /// The longest a holder kept it while others waited.
    pub hold_max_ns: u64,
}

impl Stats {
    pub const fn new() -> Self {
        Stats {
            contended: AtomicU64::new(0),
            wait_total_ns: AtomicU64::new(0),
            wait_max_ns: AtomicU64::new(0),
            hold_max_ns: AtomicU64::new(0),
        }
    }

    /// One wait that took `ns`.
    pub fn record_wait(&self, ns: u64) {
        self.contended.fetch_add(1, Ordering::Relaxed);
        self.wait_total_ns.fetch_add(ns, Ordering::Relaxed);
        self.wait_max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// A hold that lasted `ns` (measured when it ended with waiters).
    pub fn record_hold(&self, ns: u64) {
        self.hold_max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub fn view(&self) -> StatsView {
        StatsView {
            contended: self.contended.load(Ordering::Relaxed),
            wait_total_ns: self.wait_total_ns.load(Ordering::Relaxed),
            wait_max_ns: self.wait_max_ns.load(Ordering::Relaxed),
            hold_max_ns: self.hold_max_ns.load(Ordering::Relaxed),
        }
    }

    fn reset(&self) {
        for a in [&self.contended, &self.wait_total_ns, &self.wait_max_ns, &self.hold_max_ns] {
            a.store(0, Ordering::Relaxed);
        }
    }
}

/// A primitive's name and creation site. Sites are shared: every object
/// made at one line holds the same `Arc`.
#[derive(Debug)]
struct Label {
    name: Option<Box<str>>,
    site: Arc<str>,
}

/// What a primitive knows about itself for `plait.debug`.
#[derive(Debug, Default)]
pub struct Probe {
    label: OnceLock<Label>,
    /// Coarse-clock time the current holder took it (0: not held).
    since: AtomicU64,
    /// Seen released by a thread other than the one that acquired it: its
    /// ownership is no evidence of who will release it.
    foreign_release: AtomicBool,
    /// Lock-order class (see [`order`]), interned on first use.
    class: OnceLock<u32>,
    pub stats: Stats,
}

impl Probe {
    pub const fn new() -> Self {
        Probe {
            label: OnceLock::new(),
            since: AtomicU64::new(0),
            foreign_release: AtomicBool::new(false),
            class: OnceLock::new(),
            stats: Stats::new(),
        }
    }

    /// Set the name (`None`: known by its site) and creation site, once;
    /// later calls are ignored.
    pub fn label(&self, name: Option<String>, site: impl Into<Arc<str>>) {
        let _ = self.label.set(Label { name: name.map(String::into_boxed_str), site: site.into() });
    }

    /// The name given at construction, else the creation site.
    pub fn name(&self) -> &str {
        self.label.get().map_or("", |l| l.name.as_deref().unwrap_or(&l.site))
    }

    pub fn site(&self) -> &str {
        self.label.get().map_or("", |l| &l.site)
    }

    /// The holder took it now (coarse clock; fast paths).
    #[inline]
    pub fn held_now(&self) {
        if tracking() {
            self.since.store(coarse_ns(), Ordering::Relaxed);
        }
    }

    /// Since when the current holder holds it (0 when unknown).
    pub fn since(&self) -> u64 {
        self.since.load(Ordering::Relaxed)
    }

    /// Record a hold that ends now, if anyone waited during it (the caller
    /// is a contended release).
    pub fn hold_ended_contended(&self) {
        let since = self.since();
        if since != 0 {
            self.stats.record_hold(coarse_ns().saturating_sub(since));
        }
    }

    /// A thread that did not acquire it released it.
    #[cold]
    pub fn released_by_other(&self) {
        self.foreign_release.store(true, Ordering::Relaxed);
    }

    pub fn foreign_release(&self) -> bool {
        self.foreign_release.load(Ordering::Relaxed)
    }

    /// The lock-order class, interning `key` on first use.
    pub fn class(&self) -> u32 {
        *self.class.get_or_init(|| order::intern(self.name()))
    }

    /// Forget statistics and holder times (a forked child starts afresh).
    pub fn reset(&self) {
        self.since.store(0, Ordering::Relaxed);
        self.stats.reset();
    }
}

/// One holder of a primitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub ident: u64,
    /// Monotonic ns since it holds it; 0 when unknown.
    pub since_ns: u64,
    pub count: u64,
}

/// One thread parked on a primitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    pub ident: u64,
    pub since_ns: u64,
    /// Monotonic ns deadline; `None` waits forever.
    pub deadline_ns: Option<u64>,
}

/// What runs a future.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsOn {
    Nothing,
    Thread(u64),
    Worker(u32),
}

/// What a primitive tells `plait.debug` about itself. Implementations
/// read atomics and short internal mutexes only: they are called under the
/// wait table's lock and must never block or run user code.
pub trait Inspect: Sync {
    fn kind(&self) -> Kind;
    fn probe(&self) -> &Probe;

    /// The threads that hold it now.
    fn holders(&self, _out: &mut Vec<Holder>) {}

    /// The threads parked on it, in queue order.
    fn waiters(&self, _out: &mut Vec<Waiter>) {}

    /// Whether its holders are only a guess at who will release it (any
    /// thread may release a plain Lock or a Semaphore).
    fn loose(&self) -> bool {
        false
    }

    /// For futures: the state's name and what runs it.
    fn future(&self) -> Option<(&'static str, RunsOn)> {
        None
    }
}

/// Everything about one primitive, copied out for a snapshot.
#[derive(Debug, Clone)]
pub struct View {
    pub id: usize,
    pub kind: Kind,
    pub name: String,
    pub site: String,
    pub holders: Vec<Holder>,
    pub waiters: Vec<Waiter>,
    pub stats: StatsView,
    pub loose: bool,
    pub future: Option<(&'static str, RunsOn)>,
}

impl View {
    /// Copy out what `obj` knows.
    pub fn of(obj: &dyn Inspect) -> View {
        let mut holders = Vec::new();
        let mut waiters = Vec::new();
        obj.holders(&mut holders);
        obj.waiters(&mut waiters);
        let p = obj.probe();
        View {
            id: id_of(obj),
            kind: obj.kind(),
            name: p.name().to_owned(),
            site: p.site().to_owned(),
            holders,
            waiters,
            stats: p.stats.view(),
            loose: obj.loose(),
            future: obj.future(),
        }
    }

    /// Held, waited on, or (a future) running or being waited for.
    pub fn is_active(&self) -> bool {
        !self.holders.is_empty()
            || !self.waiters.is_empty()
            || matches!(self.future, Some((_, RunsOn::Thread(_) | RunsOn::Worker(_))))
    }
}

/// Views of every live primitive `keep` accepts (from the fork registry,
/// which every primitive joins). The registry's lock is not held while the
/// views are made, nor when the last reference to a primitive is dropped.
pub fn views(keep: impl Fn(&View) -> bool) -> Vec<View> {
    let live = crate::fork::live();
    let out = live.iter().filter_map(|o| o.inspect()).map(View::of).filter(|v| keep(v)).collect();
    drop(live);
    out
}

/// The identity of a primitive in snapshots: the address of its core.
pub fn id_of(obj: &dyn Inspect) -> usize {
    obj as *const dyn Inspect as *const () as usize
}
