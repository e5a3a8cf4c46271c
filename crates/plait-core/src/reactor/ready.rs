//! The ready queue: callbacks due to run, in the order they were queued.
//!
//! asyncio runs, in each iteration, exactly what was ready when the
//! iteration started; what those callbacks schedule waits for the next
//! iteration. So the loop does not pop the queue item by item: it swaps the
//! whole queue out as one batch ([`ReadyQueue::take_batch`]), leaving in
//! its place the previous batch's (empty) storage, so that a steady loop
//! allocates nothing. If running a callback fails with an exception that
//! stops the loop (`KeyboardInterrupt`, `SystemExit`), the batch's unrun
//! rest goes back to the front, in order ([`ReadyQueue::requeue_front`]),
//! as asyncio leaves it in its deque.
//!
//! Generic over the payload: the binding queues its handle entries and
//! handle objects; tests queue numbers.

use std::collections::VecDeque;

/// One iteration's worth of ready items (and, once run, the storage the
/// next batch reuses).
pub type Batch<T> = VecDeque<T>;

/// The FIFO of ready callbacks.
#[derive(Debug)]
pub struct ReadyQueue<T> {
    q: VecDeque<T>,
}

impl<T> Default for ReadyQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ReadyQueue<T> {
    /// An empty queue.
    pub const fn new() -> Self {
        ReadyQueue { q: VecDeque::new() }
    }

    /// Queue `item` behind everything already queued.
    #[inline]
    pub fn push(&mut self, item: T) {
        self.q.push_back(item);
    }

    /// How many items are queued.
    #[inline]
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether nothing is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// The queued items, first to run first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.q.iter()
    }

    /// Take everything queued now as the batch to run, leaving `spare` (the
    /// previous batch, empty: its storage is reused) as the queue.
    #[inline]
    pub fn take_batch(&mut self, spare: Batch<T>) -> Batch<T> {
        debug_assert!(spare.is_empty(), "a spare batch holds no items");
        std::mem::replace(&mut self.q, spare)
    }

    /// Put what is left of `batch` (not run yet) back at the front of the
    /// queue, ahead of what was queued meanwhile, in its order.
    pub fn requeue_front(&mut self, batch: &mut Batch<T>) {
        while let Some(x) = batch.pop_back() {
            self.q.push_front(x);
        }
    }

    /// Take every queued item out (closing or clearing the loop).
    pub fn take_all(&mut self) -> Batch<T> {
        std::mem::take(&mut self.q)
    }
}
