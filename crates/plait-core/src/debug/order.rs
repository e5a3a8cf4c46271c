//! Lock order (lockdep-style): which lock classes are taken while others
//! are held, and the first time an order inverts.
//!
//! A lock's class is its name (the creation site unless named): every lock
//! made at one line of code is one class, as in Linux's lockdep.
//!
//! # The algorithm
//!
//! When it is switched on ([`set_enabled`], off by default), each thread
//! keeps a [`HeldStack`]: the locks it holds, in the order it took them
//! (a Lock on acquire, an RLock on its first level, a Condition's lock
//! through that lock). Taking class `C` while holding class `H` is the
//! edge `H -> C`, recorded once in a process-wide [`Graph`] together with
//! the stack of the thread that first took that order (the payload `T`,
//! opaque here: the binding stores Python stacks as text). If the edge
//! `C -> H` is in the graph already, the two orders have both happened:
//! two threads taking them at the same time would deadlock. That is an
//! [`Inversion`], reported once per pair, with both stacks — on a run where
//! timing avoided the deadlock as much as on one where it did not.
//!
//! Taking a lock of a class already held (two locks made at one line,
//! nested) records nothing: lockdep's "same class" case, not an inversion.
//!
//! # Costs and the two phases
//!
//! The thread-local part is cheap: with nothing held, acquiring is a push.
//! Each thread also remembers the edges it has seen in the graph, so a
//! thread repeating an order it took before does not touch the graph's
//! mutex. Only a new edge costs a stack: the caller asks [`Graph::missing`]
//! (under the mutex: which edges are new?), releases the mutex, captures
//! its stack (Python code: never under a Rust lock), then hands it to
//! [`Graph::record`], which re-takes the mutex, inserts the edges still
//! missing and checks the reverse ones. Insertion and check are one
//! critical section, so of two threads recording opposite orders at the
//! same time the second sees the first's edge: an inversion is never
//! missed.
//!
//! # Stale entries
//!
//! A plain Lock may be released by a thread that did not take it; the
//! taker's stack then names a lock it no longer holds. Entries are checked
//! lazily ([`Held::held_by_me`]) whenever the stack is consulted, and
//! dropped when they are stale. Each entry keeps its lock alive (an `Arc`),
//! so the check never reads freed memory; an entry that holds the last
//! reference (the lock was dropped while held) is stale too.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::Probe;
use crate::spin::SpinMutex;
use crate::thread::ident;

struct Classes {
    ids: Option<HashMap<Box<str>, u32>>,
    names: Vec<Box<str>>,
}

static CLASSES: SpinMutex<Classes> = SpinMutex::new(Classes { ids: None, names: Vec::new() });

/// The class id of `name`, allocated on first use.
pub fn intern(name: &str) -> u32 {
    let mut c = CLASSES.lock();
    if let Some(id) = c.ids.as_ref().and_then(|m| m.get(name)) {
        return *id;
    }
    let id = u32::try_from(c.names.len()).unwrap_or(u32::MAX);
    c.names.push(name.into());
    c.ids.get_or_insert_with(HashMap::new).insert(name.into(), id);
    id
}

/// The name of class `id`.
pub fn class_name(id: u32) -> String {
    CLASSES.lock().names.get(id as usize).map_or_else(String::new, |s| s.to_string())
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether lock order is being recorded (`plait.debug.enable(lock_order=True)`).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Switch lock-order recording on or off. Switching it off leaves each
/// thread's held stack as it is (entries go stale and are dropped when it
/// is next used).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// A lock as the held stack sees it.
pub trait Held: Send + Sync {
    /// Whether the calling thread holds it now.
    fn held_by_me(&self) -> bool;
    /// Its name and site, for reports.
    fn probe(&self) -> &Probe;
}

impl Held for crate::sync::Lock {
    fn held_by_me(&self) -> bool {
        self.owner() == ident()
    }
    fn probe(&self) -> &Probe {
        &self.probe
    }
}

impl Held for crate::sync::RLock {
    fn held_by_me(&self) -> bool {
        self.is_owned()
    }
    fn probe(&self) -> &Probe {
        crate::sync::RLock::probe(self)
    }
}

/// An edge `from -> to` as one integer (a cheap hash key).
#[inline]
fn edge(from: u32, to: u32) -> u64 {
    (u64::from(from) << 32) | u64::from(to)
}

/// A hasher for the `u64` edge keys: one multiply (Fibonacci hashing),
/// instead of SipHash on the per-acquire path.
#[derive(Default, Clone, Copy)]
pub struct EdgeHasher(u64);

impl Hasher for EdgeHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type EdgeSet = HashSet<u64, BuildHasherDefault<EdgeHasher>>;
type EdgeMap<T> = HashMap<u64, T, BuildHasherDefault<EdgeHasher>>;

struct Entry {
    class: u32,
    lock: Arc<dyn Held>,
}

impl Entry {
    /// Still held by this thread, by a lock someone can still reach: an
    /// entry holding the last reference names a lock that was dropped
    /// while held (`lock.acquire(); del lock`), which can never be released
    /// nor waited for again.
    fn live(&self) -> bool {
        Arc::strong_count(&self.lock) > 1 && self.lock.held_by_me()
    }

    fn is(&self, lock: &dyn Held) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.lock), lock as *const dyn Held)
    }
}

/// The locks one thread holds, oldest first, and the edges it knows to be
/// in the graph already.
#[derive(Default)]
pub struct HeldStack {
    entries: Vec<Entry>,
    known: EdgeSet,
}

impl HeldStack {
    pub fn new() -> Self {
        HeldStack::default()
    }

    /// Before taking a lock of class `class`: the distinct classes held
    /// (other than `class`) whose edge to it this thread has not seen in
    /// the graph yet. Drops stale entries first. Empty (no allocation) in
    /// the common cases: nothing held, or an order taken before.
    pub fn unknown_edges(&mut self, class: u32) -> Vec<u32> {
        if self.entries.is_empty() {
            return Vec::new();
        }
        self.entries.retain(Entry::live);
        let mut out = Vec::new();
        for e in &self.entries {
            if e.class != class && !self.known.contains(&edge(e.class, class)) && !out.contains(&e.class) {
                out.push(e.class);
            }
        }
        out
    }

    /// Remember that the graph has the edge `from -> to`.
    pub fn learn(&mut self, from: u32, to: u32) {
        self.known.insert(edge(from, to));
    }

    /// The calling thread took `lock` (class `class`). An older entry for
    /// the same lock is stale (the lock was free, so someone released it
    /// for us) and is dropped.
    pub fn push(&mut self, class: u32, lock: Arc<dyn Held>) {
        if !self.entries.is_empty() {
            let l: &dyn Held = &*lock;
            self.entries.retain(|e| !e.is(l));
        }
        self.entries.push(Entry { class, lock });
    }

    /// The calling thread released `lock`: forget its latest entry.
    /// Returns the entry's lock so the caller can drop it when it likes.
    pub fn pop(&mut self, lock: &dyn Held) -> Option<Arc<dyn Held>> {
        let i = self.entries.iter().rposition(|e| e.is(lock))?;
        Some(self.entries.remove(i).lock)
    }

    /// The most recent held lock of class `class`.
    pub fn find(&self, class: u32) -> Option<&dyn Held> {
        self.entries.iter().rev().find(|e| e.class == class).map(|e| &*e.lock)
    }

    /// How many entries it has (stale ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

thread_local! {
    static HELD: RefCell<HeldStack> = RefCell::new(HeldStack::new());
}

/// Run `f` on the calling thread's held stack. `f` must not call back
/// into `with_held` (it runs no user code: the stack's checks read atomics).
#[inline]
pub fn with_held<R>(f: impl FnOnce(&mut HeldStack) -> R) -> R {
    HELD.with(|h| f(&mut h.borrow_mut()))
}

/// The calling thread took `lock` of class `class` (no-op when the thread
/// is exiting and its stack is gone).
#[inline]
pub fn push(class: u32, lock: Arc<dyn Held>) {
    let _ = HELD.try_with(|h| h.borrow_mut().push(class, lock));
}

/// The calling thread released `lock`. The entry's `Arc` is dropped after
/// the stack's borrow ends.
#[inline]
pub fn pop(lock: &dyn Held) {
    let taken = HELD.try_with(|h| h.borrow_mut().pop(lock)).ok().flatten();
    drop(taken);
}

/// Two orders of one pair of classes, both seen: `held -> taking` now, and
/// `taking -> held` earlier with the stack `then`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inversion<T> {
    /// The class held now.
    pub held: u32,
    /// The class being taken now.
    pub taking: u32,
    /// The stack recorded with `taking -> held`, when that order was first
    /// seen.
    pub then: T,
}

struct Edges<T> {
    /// `from -> to` with the stack of its first occurrence.
    edges: Option<EdgeMap<T>>,
    /// Pairs (as `min -> max` edges) already reported.
    reported: Option<EdgeSet>,
}

/// The process-wide graph of lock-order edges, each with the stack
/// (payload `T`) of the thread that first took that order.
pub struct Graph<T> {
    inner: SpinMutex<Edges<T>>,
}

impl<T: Clone> Graph<T> {
    pub const fn new() -> Self {
        Graph { inner: SpinMutex::new(Edges { edges: None, reported: None }) }
    }

    /// Phase one: of the edges `from -> to` (for each `from`), those not in
    /// the graph. The caller learns the others and captures a stack if any
    /// is missing.
    pub fn missing(&self, from: &[u32], to: u32) -> Vec<u32> {
        let g = self.inner.lock();
        match g.edges.as_ref() {
            None => from.to_vec(),
            Some(m) => from.iter().copied().filter(|f| !m.contains_key(&edge(*f, to))).collect(),
        }
    }

    /// Phase two: insert the edges `from -> to` still missing, with
    /// `stack`, and return the inversions they make: each `f` for which
    /// `to -> f` was seen before and the pair was never reported (it is
    /// marked reported now). `stack` is cloned under the mutex, once per
    /// edge inserted; the payloads are dropped only with the graph.
    pub fn record(&self, from: &[u32], to: u32, stack: &T) -> Vec<Inversion<T>> {
        let mut out = Vec::new();
        let mut g = self.inner.lock();
        let Edges { edges, reported } = &mut *g;
        let edges = edges.get_or_insert_with(EdgeMap::default);
        let reported = reported.get_or_insert_with(EdgeSet::default);
        for &f in from {
            if f == to || edges.contains_key(&edge(f, to)) {
                continue;
            }
            edges.insert(edge(f, to), stack.clone());
            if let Some(then) = edges.get(&edge(to, f)) {
                if reported.insert(edge(f.min(to), f.max(to))) {
                    out.push(Inversion { held: f, taking: to, then: then.clone() });
                }
            }
        }
        out
    }

    /// Whether the edge `from -> to` has been recorded.
    pub fn has_edge(&self, from: u32, to: u32) -> bool {
        self.inner.lock().edges.as_ref().is_some_and(|m| m.contains_key(&edge(from, to)))
    }

    /// Make the graph's mutex usable in a forked child.
    ///
    /// # Safety
    /// Only from the atfork child handler, while the child is
    /// single-threaded.
    pub unsafe fn after_fork(&self) {
        if self.inner.is_locked() {
            // SAFETY: the child has one thread; the holder of this mutex at
            // the fork does not exist here and never unlocks it.
            unsafe { self.inner.force_unlock() };
        }
    }
}

impl<T: Clone> Default for Graph<T> {
    fn default() -> Self {
        Graph::new()
    }
}

/// The process's lock-order graph; its payload is a stack as text.
pub static GRAPH: Graph<Box<str>> = Graph::new();

/// Make the class table and the graph usable in a forked child.
///
/// # Safety
/// Only from the atfork child handler, while the child is single-threaded.
pub unsafe fn after_fork() {
    if CLASSES.is_locked() {
        // SAFETY: the child has one thread; the holder of this mutex at the
        // fork does not exist here and never unlocks it.
        unsafe { CLASSES.force_unlock() };
    }
    // SAFETY: forwarded from the caller's guarantee.
    unsafe { GRAPH.after_fork() };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{Lock, RLock};

    /// What the binding does before and after taking `lock` of `class`,
    /// with `stack` as the payload; returns the inversions reported.
    fn take(
        g: &Graph<String>,
        held: &mut HeldStack,
        lock: &Arc<Lock>,
        class: u32,
        stack: &str,
    ) -> Vec<Inversion<String>> {
        let pending = held.unknown_edges(class);
        let mut found = Vec::new();
        if !pending.is_empty() {
            let missing = g.missing(&pending, class);
            if !missing.is_empty() {
                found = g.record(&missing, class, &stack.to_owned());
            }
            for f in pending {
                held.learn(f, class);
            }
        }
        assert!(lock.try_acquire());
        held.push(class, lock.clone());
        found
    }

    fn give(held: &mut HeldStack, lock: &Arc<Lock>) {
        assert!(lock.release());
        held.pop(&**lock);
    }

    #[test]
    fn order_inversion_reported_once_with_first_stack() {
        let g = Graph::new();
        let mut h = HeldStack::new();
        let (a, b) = (Arc::new(Lock::new()), Arc::new(Lock::new()));
        assert!(take(&g, &mut h, &a, 1, "s1").is_empty());
        assert!(take(&g, &mut h, &b, 2, "s2").is_empty());
        assert!(g.has_edge(1, 2));
        give(&mut h, &b);
        give(&mut h, &a);
        assert!(h.is_empty());
        assert!(take(&g, &mut h, &b, 2, "s3").is_empty());
        let inv = take(&g, &mut h, &a, 1, "s4");
        assert_eq!(inv, vec![Inversion { held: 2, taking: 1, then: "s2".to_owned() }]);
        give(&mut h, &a);
        give(&mut h, &b);
        // Once per pair, whichever order comes next.
        assert!(take(&g, &mut h, &b, 2, "s5").is_empty());
        assert!(take(&g, &mut h, &a, 1, "s6").is_empty());
        give(&mut h, &a);
        give(&mut h, &b);
        assert!(take(&g, &mut h, &a, 1, "s7").is_empty());
        assert!(take(&g, &mut h, &b, 2, "s8").is_empty());
    }

    #[test]
    fn order_consistent_and_same_class_are_silent() {
        let g = Graph::new();
        let mut h = HeldStack::new();
        let (a, b, c) = (Arc::new(Lock::new()), Arc::new(Lock::new()), Arc::new(Lock::new()));
        for _ in 0..3 {
            assert!(take(&g, &mut h, &a, 1, "x").is_empty());
            assert!(take(&g, &mut h, &b, 2, "x").is_empty());
            give(&mut h, &b);
            give(&mut h, &a);
        }
        // Two locks of one class, nested, both orders: not an inversion.
        assert!(take(&g, &mut h, &b, 3, "x").is_empty());
        assert!(take(&g, &mut h, &c, 3, "x").is_empty());
        give(&mut h, &c);
        give(&mut h, &b);
        assert!(take(&g, &mut h, &c, 3, "x").is_empty());
        assert!(take(&g, &mut h, &b, 3, "x").is_empty());
        assert!(!g.has_edge(3, 3));
    }

    #[test]
    fn order_known_edges_skip_the_graph() {
        let g = Graph::new();
        let mut h = HeldStack::new();
        let (a, b) = (Arc::new(Lock::new()), Arc::new(Lock::new()));
        take(&g, &mut h, &a, 1, "x");
        assert_eq!(h.unknown_edges(2), vec![1]);
        take(&g, &mut h, &b, 2, "x");
        give(&mut h, &b);
        assert!(h.unknown_edges(2).is_empty());
        // The edge exists but this stack has not seen it: phase one finds
        // nothing missing.
        let mut other = HeldStack::new();
        other.push(1, a.clone());
        assert_eq!(other.unknown_edges(2), vec![1]);
        assert!(g.missing(&[1], 2).is_empty());
        give(&mut h, &a);
    }

    #[test]
    fn order_stale_entry_of_foreign_release_is_dropped() {
        let g = Graph::new();
        let a = Arc::new(Lock::new());
        let b = Arc::new(Lock::new());
        let mut h = HeldStack::new();
        take(&g, &mut h, &a, 1, "x");
        // Another thread releases `a` (a Lock used as a signal).
        let a2 = a.clone();
        std::thread::spawn(move || assert!(a2.release())).join().unwrap();
        assert_eq!(h.len(), 1);
        // Taking b now records no edge from the stale a.
        assert!(take(&g, &mut h, &b, 2, "x").is_empty());
        assert!(!g.has_edge(1, 2));
        assert_eq!(h.len(), 1);
        give(&mut h, &b);
        // Re-taking a replaces any older entry for it.
        h.push(1, a.clone());
        assert!(a.try_acquire());
        h.push(1, a.clone());
        assert_eq!(h.len(), 1);
        give(&mut h, &a);
        assert!(h.is_empty());
    }

    #[test]
    fn order_lock_dropped_while_held_is_stale() {
        let mut h = HeldStack::new();
        let a = Arc::new(Lock::new());
        assert!(a.try_acquire());
        h.push(1, a.clone());
        assert_eq!(h.unknown_edges(2), vec![1]);
        drop(a);
        assert!(h.unknown_edges(2).is_empty());
        assert!(h.is_empty());
    }

    #[test]
    fn order_rlock_is_held_while_owned() {
        let r = Arc::new(RLock::new());
        let mut h = HeldStack::new();
        assert_eq!(r.try_acquire(), Ok(true));
        h.push(7, r.clone());
        assert_eq!(h.unknown_edges(8), vec![7]);
        assert!(h.find(7).is_some());
        r.release().unwrap();
        assert!(h.unknown_edges(8).is_empty());
        assert!(h.is_empty());
    }

    #[test]
    fn order_racing_opposite_orders_report_once() {
        // Both threads pass phase one before either records: the second
        // record still sees the first's edge.
        let g: Arc<Graph<String>> = Arc::new(Graph::new());
        assert_eq!(g.missing(&[1], 2), vec![1]);
        assert_eq!(g.missing(&[2], 1), vec![2]);
        let g2 = g.clone();
        let t = std::thread::spawn(move || g2.record(&[1], 2, &"t".to_owned()));
        let mine = g.record(&[2], 1, &"m".to_owned());
        let theirs = t.join().unwrap();
        assert_eq!(mine.len() + theirs.len(), 1);
    }

    #[test]
    fn order_types_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Graph<Box<str>>>();
        send_sync::<Inversion<Box<str>>>();
        send::<HeldStack>();
    }

    #[test]
    fn order_classes_intern_by_name() {
        let a = intern("order-test:1");
        assert_eq!(intern("order-test:1"), a);
        assert_ne!(intern("order-test:2"), a);
        assert_eq!(class_name(a), "order-test:1");
    }
}
