//! The timer heap: deadlines (seconds on the monotonic clock, as
//! `loop.time()` returns them) ordered first by time, then by insertion,
//! so timers due at the same moment run in the order they were scheduled,
//! as asyncio's heap of `TimerHandle`s does. Generic over the payload (the
//! binding keeps its handle objects in it).
//!
//! A NaN deadline is due at once: asyncio (up to 3.12) runs a timer whose
//! `when` is NaN on the next iteration (no comparison with NaN says "not
//! yet"), so it is kept as if due at minus infinity. (On 3.13 asyncio's
//! loop fails on such a timer; the binding refuses it before it gets here.)

use std::collections::BinaryHeap;

/// One deadline in a [`TimerHeap`].
#[derive(Debug)]
struct Entry<T> {
    when: f64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.when == other.when && self.seq == other.seq
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        other.when.total_cmp(&self.when).then_with(|| other.seq.cmp(&self.seq))
    }
}

/// Deadlines in order of time, then of insertion.
#[derive(Debug)]
pub struct TimerHeap<T> {
    heap: BinaryHeap<Entry<T>>,
    seq: u64,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        TimerHeap { heap: BinaryHeap::new(), seq: 0 }
    }
}

impl<T> TimerHeap<T> {
    /// An empty heap.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `item` due at `when` (NaN: due at once, see the module doc).
    pub fn push(&mut self, when: f64, item: T) {
        let when = if when.is_nan() { f64::NEG_INFINITY } else { when };
        self.seq += 1;
        self.heap.push(Entry { when, seq: self.seq, item });
    }

    /// The earliest deadline.
    pub fn next_when(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.when)
    }

    /// The earliest item, if it is due at or before `now`.
    pub fn pop_due(&mut self, now: f64) -> Option<(f64, T)> {
        if self.heap.peek()?.when <= now {
            self.heap.pop().map(|e| (e.when, e.item))
        } else {
            None
        }
    }

    /// The earliest item, whatever its deadline.
    pub fn pop(&mut self) -> Option<(f64, T)> {
        self.heap.pop().map(|e| (e.when, e.item))
    }

    /// Peek at the earliest item.
    pub fn peek(&self) -> Option<&T> {
        self.heap.peek().map(|e| &e.item)
    }

    /// Keep only the items `keep` accepts (order is preserved).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.heap.retain(|e| keep(&e.item));
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
        self.heap.drain().map(|e| e.item).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::TimerHeap;

    #[test]
    fn nan_is_due_at_once_in_order_of_insertion() {
        let mut h = TimerHeap::new();
        h.push(5.0, "later");
        h.push(f64::NAN, "nan");
        h.push(f64::INFINITY, "never");
        h.push(f64::NEG_INFINITY, "past");
        assert_eq!(h.next_when(), Some(f64::NEG_INFINITY));
        assert_eq!(h.pop_due(0.0).map(|(_, t)| t), Some("nan"));
        assert_eq!(h.pop_due(0.0).map(|(_, t)| t), Some("past"));
        assert_eq!(h.pop_due(0.0).map(|(_, t)| t), None);
        assert_eq!(h.pop_due(5.0).map(|(_, t)| t), Some("later"));
        assert_eq!(h.pop_due(f64::MAX).map(|(_, t)| t), None);
        assert_eq!(h.pop_due(f64::INFINITY).map(|(_, t)| t), Some("never"));
    }
}
