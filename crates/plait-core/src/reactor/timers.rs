//! The timer heap: deadlines (seconds on the monotonic clock, as
//! `loop.time()` returns them) ordered first by time, then by insertion,
//! so timers due at the same moment run in the order they were scheduled,
//! as asyncio's heap of `TimerHandle`s does. Generic over the payload (the
//! binding keeps its handle objects in it).
//!
//! The heap is Python's `heapq` (the same sift algorithms, comparing with
//! `<` as asyncio's `TimerHandle.__lt__` compares `_when`, ties broken by
//! insertion), so that a NaN deadline, which no comparison orders, lands
//! where it lands in asyncio's heap: a NaN timer is due as soon as it is at
//! the head (`pop_due`: asyncio's `when >= end` is false for it), and it
//! reaches the head when asyncio's would. What the loop does when it would
//! wait for one (3.13 fails) is the binding's.


/// One deadline in a [`TimerHeap`].
#[derive(Debug)]
struct Entry<T> {
    when: f64,
    seq: u64,
    item: T,
}

impl<T> Entry<T> {
    /// `heapq`'s `a < b`: by time (false whenever a NaN is involved, as
    /// Python's float `<`), then by insertion.
    #[inline]
    fn lt(&self, other: &Self) -> bool {
        self.when < other.when || (self.when == other.when && self.seq < other.seq)
    }
}

/// Deadlines in order of time, then of insertion.
#[derive(Debug)]
pub struct TimerHeap<T> {
    heap: Vec<Entry<T>>,
    seq: u64,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        TimerHeap { heap: Vec::new(), seq: 0 }
    }
}

impl<T> TimerHeap<T> {
    /// An empty heap.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `item` due at `when` (`heapq.heappush`).
    pub fn push(&mut self, when: f64, item: T) {
        self.seq += 1;
        self.heap.push(Entry { when, seq: self.seq, item });
        let last = self.heap.len() - 1;
        self.sift_down(0, last);
    }

    /// The deadline at the head (the earliest, unless a NaN is about).
    pub fn next_when(&self) -> Option<f64> {
        self.heap.first().map(|e| e.when)
    }

    /// The head item, if it is due at `now`: unless its deadline is after
    /// `now` (a NaN deadline is due, as in asyncio's loop).
    pub fn pop_due(&mut self, now: f64) -> Option<(f64, T)> {
        if self.heap.first()?.when > now {
            return None;
        }
        self.pop()
    }

    /// The head item, whatever its deadline (`heapq.heappop`).
    pub fn pop(&mut self) -> Option<(f64, T)> {
        let last = self.heap.pop()?;
        if self.heap.is_empty() {
            return Some((last.when, last.item));
        }
        let head = std::mem::replace(&mut self.heap[0], last);
        self.sift_up(0);
        Some((head.when, head.item))
    }

    /// Peek at the head item.
    pub fn peek(&self) -> Option<&T> {
        self.heap.first().map(|e| &e.item)
    }

    /// Keep only the items `keep` accepts, and restore the heap
    /// (`heapq.heapify`, as asyncio's loop does after dropping cancelled
    /// timers).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.heap.retain(|e| keep(&e.item));
        for i in (0..self.heap.len() / 2).rev() {
            self.sift_up(i);
        }
    }

    /// `heapq._siftdown`: move the item at `pos` up towards `start` while
    /// it is less than its parent.
    fn sift_down(&mut self, start: usize, mut pos: usize) {
        while pos > start {
            let parent = (pos - 1) / 2;
            if !self.heap[pos].lt(&self.heap[parent]) {
                break;
            }
            self.heap.swap(pos, parent);
            pos = parent;
        }
    }

    /// `heapq._siftup`: move the item at `pos` down to a leaf along the
    /// smaller children, then up to its place.
    fn sift_up(&mut self, mut pos: usize) {
        let end = self.heap.len();
        let start = pos;
        let mut child = 2 * pos + 1;
        while child < end {
            let right = child + 1;
            if right < end && !self.heap[child].lt(&self.heap[right]) {
                child = right;
            }
            self.heap.swap(pos, child);
            pos = child;
            child = 2 * pos + 1;
        }
        self.sift_down(start, pos);
    }

    /// How many items are pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Every item, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|e| &e.item)
    }

    /// Remove every item.
    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// Take every item out, in no particular order.
    pub fn drain(&mut self) -> Vec<T> {
        self.heap.drain(..).map(|e| e.item).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::TimerHeap;

    /// The order Python's heapq pops these deadlines in (each pushed in
    /// turn), computed with CPython: `[heapq.heappop(h)[0] for ...]` over
    /// `(when, seq)` pairs whose `<` is asyncio's `_when < _when`, ties by seq.
    #[test]
    fn nan_lands_where_heapq_puts_it() {
        let nan = f64::NAN;
        let mut h = TimerHeap::new();
        for (i, w) in [nan, 1.0].into_iter().enumerate() {
            h.push(w, i);
        }
        // Alone first, the NaN stays at the head: due at once.
        assert!(h.next_when().is_some_and(f64::is_nan));
        assert_eq!(h.pop_due(0.0).map(|(_, i)| i), Some(0));
        assert_eq!(h.pop_due(0.0), None);

        let mut h = TimerHeap::new();
        for (i, w) in [1.0, nan, 2.0].into_iter().enumerate() {
            h.push(w, i);
        }
        // Behind an earlier timer it waits for that one, then is due.
        assert_eq!(h.pop_due(0.5), None);
        assert_eq!(h.pop_due(1.0).map(|(_, i)| i), Some(0));
        assert!(h.next_when().is_some_and(f64::is_nan));
        assert_eq!(h.pop_due(1.0).map(|(_, i)| i), Some(1));
        assert_eq!(h.pop_due(1.0), None);
        assert_eq!(h.pop_due(2.0).map(|(_, i)| i), Some(2));
    }

    #[test]
    fn heap_order_with_infinities_and_retain() {
        let mut h = TimerHeap::new();
        for (i, w) in [5.0, f64::INFINITY, f64::NEG_INFINITY, 1.0, 5.0, 3.0].into_iter().enumerate() {
            h.push(w, i);
        }
        h.retain(|i| *i != 3);
        let mut got = Vec::new();
        while let Some((_, i)) = h.pop() {
            got.push(i);
        }
        assert_eq!(got, vec![2, 5, 0, 4, 1]);
    }
}
