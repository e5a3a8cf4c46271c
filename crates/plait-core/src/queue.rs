//! A bounded multi-producer multi-consumer queue: FIFO, LIFO or priority.
//!
//! The contract is CPython's `queue.Queue` (including `task_done`/`join` and
//! 3.13's `shutdown`), generic over the item so it can be tested in Rust.
//!
//! One mutex guards the items, the counters and the three lists of parked
//! threads (getters, putters, joiners). Non-blocking operations
//! (`try_put`, `try_get`) take it briefly; a blocking caller parks with
//! `wait_not_full` / `wait_not_empty`, which re-check the condition under
//! the mutex before enqueueing, then retries. A parked thread is woken when
//! its condition may have changed; if another thread got there first, it
//! simply parks again.
//!
//! Priority order is a binary heap laid out exactly like Python's `heapq`
//! (same sift algorithm, so items that compare equal come out in the same
//! order as with the standard library). Comparisons are user code and may
//! fail: every comparison is made *before* anything moves, so a failing
//! comparison leaves the heap untouched. Since comparisons run user code
//! while the mutex is held, callers must never block on this mutex while
//! attached to the interpreter: every lock goes through a [`Detach`].

use std::collections::VecDeque;
use std::sync::Arc;

use crate::spin::{SpinGuard as MutexGuard, SpinMutex as Mutex};

use crate::detach::Detach;
use crate::park::{notify_locked, remove_node, Node, Outcome, WaitCtx};

/// The order items leave in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Fifo,
    Lifo,
    Priority,
}

/// Why `try_put` did not store the item; the item comes back.
#[derive(Debug)]
pub enum PutError<T, E> {
    Full(T),
    ShutDown(T),
    Compare(T, E),
}

/// Why `try_get` returned no item.
#[derive(Debug)]
pub enum GetError<E> {
    Empty,
    ShutDown,
    Compare(E),
}

/// Why `task_done` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyTaskDone;

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    maxsize: usize,
    /// Signed as in CPython, where code may assign `unfinished_tasks`
    /// any int (`task_done` refuses to go below zero, `join` waits for 0).
    unfinished: i64,
    shutdown: bool,
    getters: VecDeque<Arc<Node>>,
    putters: VecDeque<Arc<Node>>,
    joiners: VecDeque<Arc<Node>>,
}

impl<T> Inner<T> {
    fn is_full(&self) -> bool {
        self.maxsize > 0 && self.items.len() >= self.maxsize
    }
}

#[derive(Debug)]
pub struct Queue<T> {
    order: Order,
    inner: Mutex<Inner<T>>,
    pub probe: crate::debug::Probe,
}

/// A strict "less than" that may fail (a Python comparison).
pub type Less<'a, T, E> = &'a mut dyn FnMut(&T, &T) -> Result<bool, E>;

impl<T: Send + 'static> Queue<T> {
    /// `maxsize == 0` means unbounded, as in `queue.Queue`.
    pub fn new(order: Order, maxsize: usize) -> Self {
        Queue {
            order,
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                maxsize,
                unfinished: 0,
                shutdown: false,
                getters: VecDeque::new(),
                putters: VecDeque::new(),
                joiners: VecDeque::new(),
            }),
            probe: crate::debug::Probe::new(),
        }
    }

    pub fn order(&self) -> Order {
        self.order
    }

    #[inline]
    fn lock<D: Detach>(&self, d: &D) -> MutexGuard<'_, Inner<T>> {
        match self.inner.try_lock() {
            Some(g) => g,
            None => self.lock_slow(d),
        }
    }

    #[cold]
    fn lock_slow<D: Detach>(&self, d: &D) -> MutexGuard<'_, Inner<T>> {
        d.detach(|| self.inner.lock())
    }

    /// Store `item` if there is room.
    #[inline]
    pub fn try_put<D: Detach, E>(
        &self,
        d: &D,
        item: T,
        less: Less<'_, T, E>,
    ) -> Result<(), PutError<T, E>> {
        let g = self.lock(d);
        self.put_locked(g, item, less)
    }

    /// As [`try_put`](Self::try_put), but gives the item back as
    /// `Err(Ok(item))` instead of waiting when the mutex is busy. For callers
    /// that must not wait at all (the binding's hand-written fast path).
    #[inline]
    pub fn try_put_now<E>(&self, item: T, less: Less<'_, T, E>) -> Result<(), Result<T, PutError<T, E>>> {
        match self.inner.try_lock() {
            Some(g) => self.put_locked(g, item, less).map_err(Err),
            None => Err(Ok(item)),
        }
    }

    #[inline]
    fn put_locked<E>(
        &self,
        mut g: MutexGuard<'_, Inner<T>>,
        item: T,
        less: Less<'_, T, E>,
    ) -> Result<(), PutError<T, E>> {
        if g.shutdown {
            return Err(PutError::ShutDown(item));
        }
        if g.is_full() {
            return Err(PutError::Full(item));
        }
        match self.order {
            Order::Fifo | Order::Lifo => g.items.push_back(item),
            Order::Priority => match heap_push(&g.items, &item, less) {
                Ok(path) => fill_hole(&mut g.items, item, path),
                Err(e) => return Err(PutError::Compare(item, e)),
            },
        }
        g.unfinished = g.unfinished.saturating_add(1);
        let wake = g.getters.pop_front();
        drop(g);
        if let Some(n) = wake {
            n.notify();
        }
        Ok(())
    }

    /// Take an item if there is one.
    #[inline]
    pub fn try_get<D: Detach, E>(&self, d: &D, less: Less<'_, T, E>) -> Result<T, GetError<E>> {
        let g = self.lock(d);
        self.get_locked(g, less)
    }

    /// As [`try_get`](Self::try_get), but `Err(None)` instead of waiting
    /// when the mutex is busy.
    #[inline]
    pub fn try_get_now<E>(&self, less: Less<'_, T, E>) -> Result<T, Option<GetError<E>>> {
        match self.inner.try_lock() {
            Some(g) => self.get_locked(g, less).map_err(Some),
            None => Err(None),
        }
    }

    #[inline]
    fn get_locked<E>(&self, mut g: MutexGuard<'_, Inner<T>>, less: Less<'_, T, E>) -> Result<T, GetError<E>> {
        let item = match self.order {
            Order::Fifo => g.items.pop_front(),
            Order::Lifo => g.items.pop_back(),
            Order::Priority => heap_pop(&mut g.items, less).map_err(GetError::Compare)?,
        };
        match item {
            Some(item) => {
                let wake = if g.maxsize > 0 { g.putters.pop_front() } else { None };
                drop(g);
                if let Some(n) = wake {
                    n.notify();
                }
                Ok(item)
            }
            None if g.shutdown => Err(GetError::ShutDown),
            None => Err(GetError::Empty),
        }
    }

    /// Park until the queue may have room (or is shut down). Call detached.
    pub fn wait_not_full(&self, ctx: &WaitCtx<'_>) -> Outcome {
        self.wait_for(ctx, |g| !g.is_full() || g.shutdown, |g| &mut g.putters)
    }

    /// Park until the queue may have an item (or is shut down). Call
    /// detached.
    pub fn wait_not_empty(&self, ctx: &WaitCtx<'_>) -> Outcome {
        self.wait_for(ctx, |g| !g.items.is_empty() || g.shutdown, |g| &mut g.getters)
    }

    fn wait_for(
        &self,
        ctx: &WaitCtx<'_>,
        ready: impl Fn(&Inner<T>) -> bool,
        list: impl Fn(&mut Inner<T>) -> &mut VecDeque<Arc<Node>>,
    ) -> Outcome {
        let node = Node::new();
        {
            let mut g = self.inner.lock();
            if ready(&g) {
                return Outcome::Notified;
            }
            list(&mut g).push_back(Arc::clone(&node));
        }
        // A queue has no holder: registering never refuses.
        let _guard = crate::debug::begin_wait(self, ctx).ok();
        match node.park(ctx) {
            Outcome::Notified => Outcome::Notified,
            give_up => {
                let mut g = self.inner.lock();
                if remove_node(list(&mut g), &node) {
                    return give_up;
                }
                // Chosen by a waker as we gave up. On timeout, report the
                // wakeup so the caller retries once; when interrupted, hand
                // it to the next waiter so it is not lost.
                if give_up == Outcome::TimedOut {
                    return Outcome::Notified;
                }
                if ready(&g) {
                    if let Some(n) = list(&mut g).pop_front() {
                        n.notify();
                    }
                }
                give_up
            }
        }
    }

    /// Mark one task done; wakes `join` when none remain.
    pub fn task_done<D: Detach>(&self, d: &D) -> Result<(), TooManyTaskDone> {
        let mut g = self.lock(d);
        if g.unfinished <= 0 {
            return Err(TooManyTaskDone);
        }
        g.unfinished -= 1;
        if g.unfinished == 0 {
            notify_locked(&mut g.joiners, usize::MAX);
        }
        Ok(())
    }

    /// Whether every put item has been marked done.
    pub fn all_done<D: Detach>(&self, d: &D) -> bool {
        self.lock(d).unfinished == 0
    }

    /// Park until `unfinished` reaches 0. Call detached; loop on
    /// `Notified` until [`all_done`](Self::all_done).
    pub fn wait_all_done(&self, ctx: &WaitCtx<'_>) -> Outcome {
        self.wait_for(ctx, |g| g.unfinished == 0, |g| &mut g.joiners)
    }

    /// Shut down (3.13 `Queue.shutdown`). Puts fail from now on; gets fail
    /// once the queue is empty. With `immediate`, the queue is emptied and
    /// joiners are released; the removed items are returned so the caller
    /// can drop them outside the mutex.
    pub fn shutdown<D: Detach>(&self, d: &D, immediate: bool) -> Vec<T> {
        let mut g = self.lock(d);
        g.shutdown = true;
        let mut drained = Vec::new();
        if immediate {
            drained.extend(g.items.drain(..));
            // CPython takes one task per drained item while any remain.
            if g.unfinished > 0 {
                let n = i64::try_from(drained.len()).unwrap_or(i64::MAX);
                g.unfinished = g.unfinished.saturating_sub(n).max(0);
            }
            notify_locked(&mut g.joiners, usize::MAX);
        }
        notify_locked(&mut g.getters, usize::MAX);
        notify_locked(&mut g.putters, usize::MAX);
        drained
    }

    /// Remove every item (CPython code clears `q.queue`); they are returned
    /// so the caller drops them outside the mutex. The counters are kept,
    /// as clearing CPython's deque keeps them. Putters are woken: they may
    /// fit now (CPython's would find the room at their next wakeup).
    pub fn clear<D: Detach>(&self, d: &D) -> Vec<T> {
        let mut g = self.lock(d);
        let drained: Vec<T> = g.items.drain(..).collect();
        notify_locked(&mut g.putters, usize::MAX);
        drained
    }

    pub fn is_shutdown<D: Detach>(&self, d: &D) -> bool {
        self.lock(d).shutdown
    }

    pub fn len<D: Detach>(&self, d: &D) -> usize {
        self.lock(d).items.len()
    }

    pub fn is_full<D: Detach>(&self, d: &D) -> bool {
        self.lock(d).is_full()
    }

    pub fn maxsize<D: Detach>(&self, d: &D) -> usize {
        self.lock(d).maxsize
    }

    /// Change the bound (CPython lets code assign `q.maxsize`). Growing it
    /// wakes putters that may now fit.
    pub fn set_maxsize<D: Detach>(&self, d: &D, maxsize: usize) {
        let mut g = self.lock(d);
        g.maxsize = maxsize;
        notify_locked(&mut g.putters, usize::MAX);
    }

    pub fn unfinished<D: Detach>(&self, d: &D) -> i64 {
        self.lock(d).unfinished
    }

    /// Assign the count of unfinished tasks (CPython code resets
    /// `q.unfinished_tasks`). Reaching 0 releases `join` callers, as the
    /// idiom's `all_tasks_done.notify_all()` does in CPython.
    pub fn set_unfinished<D: Detach>(&self, d: &D, n: i64) {
        let mut g = self.lock(d);
        g.unfinished = n;
        if n == 0 {
            notify_locked(&mut g.joiners, usize::MAX);
        }
    }

    /// `(getters, putters, joiners)` parked now, for debugging.
    pub fn waiting<D: Detach>(&self, d: &D) -> (usize, usize, usize) {
        let g = self.lock(d);
        (g.getters.len(), g.putters.len(), g.joiners.len())
    }

    /// Look at the items in storage order (for inspection). `f` runs
    /// under the queue's mutex: it must not block or run user code.
    pub fn map_items<D: Detach, R>(&self, d: &D, f: impl FnOnce(&VecDeque<T>) -> R) -> R {
        f(&self.lock(d).items)
    }

    /// In a forked child: unlock the mutex if a vanished thread held it
    /// and forget the parked threads (none of them exist any more). Items
    /// and counters are kept.
    ///
    /// # Safety
    /// Only from the atfork child handler.
    pub unsafe fn after_fork(&self) {
        if self.inner.is_locked() {
            // SAFETY: the child has one thread; the holder vanished.
            unsafe { self.inner.force_unlock() };
        }
        let g = &mut *self.inner.lock();
        for list in [&mut g.getters, &mut g.putters, &mut g.joiners] {
            std::mem::forget(std::mem::take(list));
        }
    }
}

// ---- heapq, made failure-safe -------------------------------------------
//
// Python's heapq moves items while it compares; if a comparison raises, the
// heap is left half-sifted. Here the final position is found with
// comparisons only, then items move. The sift order is heapq's, so equal
// items leave in the same order as with the standard library.

/// The positions an item pushed onto a heap passes through (a heap is at
/// most 64 levels deep).
struct SiftPath {
    slots: [usize; 64],
    len: usize,
}

/// Plan a push: heapq._siftdown(heap, 0, len) walks up while item < parent.
/// Only compares; nothing moves.
fn heap_push<T, E>(heap: &VecDeque<T>, item: &T, less: Less<'_, T, E>) -> Result<SiftPath, E> {
    let mut path = SiftPath { slots: [0; 64], len: 0 };
    let mut pos = heap.len();
    while pos > 0 {
        let parent = (pos - 1) >> 1;
        if !less(item, &heap[parent])? {
            break;
        }
        path.slots[path.len] = parent;
        path.len += 1;
        pos = parent;
    }
    Ok(path)
}

/// Complete a push planned by [`heap_push`].
fn fill_hole<T>(heap: &mut VecDeque<T>, item: T, path: SiftPath) {
    heap.push_back(item);
    let mut pos = heap.len() - 1;
    for &parent in &path.slots[..path.len] {
        heap.swap(pos, parent);
        pos = parent;
    }
}

/// heapq.heappop with comparisons done before any move.
fn heap_pop<T, E>(heap: &mut VecDeque<T>, less: Less<'_, T, E>) -> Result<Option<T>, E> {
    let n = heap.len();
    if n <= 1 {
        return Ok(heap.pop_back());
    }
    // After `lastelt = heap.pop()`, the heap has `end = n - 1` items and
    // lastelt replaces the root. heapq._siftup: follow the smaller child
    // down to a leaf...
    let end = n - 1;
    let mut path = vec![0usize];
    let mut child = 1;
    while child < end {
        let right = child + 1;
        if right < end && !less(&heap[child], &heap[right])? {
            child = right;
        }
        path.push(child);
        child = 2 * child + 1;
    }
    // ...then heapq._siftdown(heap, 0, pos): lastelt bubbles up from the
    // leaf while it is smaller than the (shifted-up) parent. After the
    // shift, the parent of path[k] holds the original value at path[k].
    let last = &heap[end];
    let mut k = path.len() - 1;
    while k > 0 {
        if less(last, &heap[path[k]])? {
            k -= 1;
        } else {
            break;
        }
    }
    // Comparisons done; apply: root out, path[1..=k] move up one level,
    // lastelt lands at path[k].
    let last = heap.pop_back().expect("n > 1");
    let top = std::mem::replace(&mut heap[0], last);
    // heap[0] now holds lastelt; rotate it down the path to path[k].
    for i in 1..=k {
        heap.swap(path[i - 1], path[i]);
    }
    Ok(Some(top))
}

impl<T: Send + 'static> crate::debug::Inspect for Queue<T> {
    fn kind(&self) -> crate::debug::Kind {
        crate::debug::Kind::Queue
    }
    fn probe(&self) -> &crate::debug::Probe {
        &self.probe
    }
    fn waiters(&self, out: &mut Vec<crate::debug::Waiter>) {
        let g = self.inner.lock();
        for n in g.getters.iter().chain(g.putters.iter()).chain(g.joiners.iter()) {
            out.push(n.waiter());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detach::Inline;

    fn lt(a: &i64, b: &i64) -> Result<bool, ()> {
        Ok(a < b)
    }

    #[test]
    fn heap_matches_sorted_order() {
        let q: Queue<i64> = Queue::new(Order::Priority, 0);
        let mut x: i64 = 12345;
        let mut all = Vec::new();
        for _ in 0..500 {
            x = (x * 1103515245 + 12345) % 1000;
            all.push(x);
            q.try_put(&Inline, x, &mut lt).unwrap();
        }
        all.sort();
        let out: Vec<i64> = (0..500).map(|_| q.try_get(&Inline, &mut lt).unwrap()).collect();
        assert_eq!(out, all);
    }

    #[test]
    fn assigned_unfinished_count_is_cpythons() {
        let q: Queue<i64> = Queue::new(Order::Fifo, 0);
        q.try_put(&Inline, 1, &mut lt).unwrap();
        q.set_unfinished(&Inline, 0);
        assert!(q.all_done(&Inline));
        assert_eq!(q.task_done(&Inline), Err(TooManyTaskDone));
        // A negative count: join waits (it is not 0), task_done refuses, a
        // put brings it back towards 0.
        q.set_unfinished(&Inline, -1);
        assert!(!q.all_done(&Inline));
        assert_eq!(q.task_done(&Inline), Err(TooManyTaskDone));
        q.try_put(&Inline, 2, &mut lt).unwrap();
        assert!(q.all_done(&Inline));
        // An immediate shutdown takes one task per drained item, never below 0.
        q.set_unfinished(&Inline, 1);
        q.shutdown(&Inline, true);
        assert_eq!(q.unfinished(&Inline), 0);
    }

    #[test]
    fn failing_comparison_leaves_heap_intact() {
        let q: Queue<i64> = Queue::new(Order::Priority, 0);
        for v in [5, 3, 8, 1] {
            q.try_put(&Inline, v, &mut lt).unwrap();
        }
        let mut fail = |_: &i64, _: &i64| -> Result<bool, &str> { Err("boom") };
        assert!(matches!(q.try_put(&Inline, 0, &mut fail), Err(PutError::Compare(0, "boom"))));
        assert!(matches!(q.try_get(&Inline, &mut fail), Err(GetError::Compare("boom"))));
        let out: Vec<i64> = (0..4).map(|_| q.try_get(&Inline, &mut lt).unwrap()).collect();
        assert_eq!(out, vec![1, 3, 5, 8]);
    }
}
