//! The reactor's ready queue: FIFO, taken a whole batch at a time, an unrun
//! rest going back to the front in order.
#![cfg(not(loom))]

use plait_core::reactor::ReadyQueue;

#[test]
fn a_batch_is_what_was_queued_before_it_was_taken() {
    let mut q = ReadyQueue::new();
    q.push(1);
    q.push(2);
    let mut batch = q.take_batch(Default::default());
    assert!(q.is_empty());
    // What runs now schedules more: that waits for the next batch.
    q.push(3);
    let mut ran = Vec::new();
    while let Some(x) = batch.pop_front() {
        ran.push(x);
    }
    assert_eq!(ran, vec![1, 2]);
    let next = q.take_batch(batch);
    assert_eq!(next.into_iter().collect::<Vec<_>>(), vec![3]);
}

#[test]
fn the_spare_batch_storage_is_reused() {
    let mut q = ReadyQueue::new();
    for i in 0..1000 {
        q.push(i);
    }
    let mut batch = q.take_batch(Default::default());
    let cap = batch.capacity();
    batch.clear();
    let _second = q.take_batch(batch);
    // The queue now grows in the first batch's storage.
    for i in 0..1000 {
        q.push(i);
    }
    let third = q.take_batch(Default::default());
    assert!(third.capacity() >= cap);
    assert_eq!(third.len(), 1000);
}

#[test]
fn an_unrun_rest_goes_back_to_the_front_in_order() {
    let mut q = ReadyQueue::new();
    for i in 0..5 {
        q.push(i);
    }
    let mut batch = q.take_batch(Default::default());
    assert_eq!(batch.pop_front(), Some(0));
    assert_eq!(batch.pop_front(), Some(1)); // this one failed
    q.push(10); // scheduled by what ran
    q.requeue_front(&mut batch);
    assert!(batch.is_empty());
    assert_eq!(q.iter().copied().collect::<Vec<_>>(), vec![2, 3, 4, 10]);
    assert_eq!(q.len(), 4);
    assert_eq!(q.take_all().into_iter().collect::<Vec<_>>(), vec![2, 3, 4, 10]);
    assert!(q.is_empty());
}
