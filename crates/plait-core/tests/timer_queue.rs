//! `TimerQueue`: deadline order, ties in insertion order, removal that
//! frees the entry at once, and many entries.
#![cfg(not(loom))]

mod common;
use common::*;

use std::sync::Arc;
use std::time::{Duration, Instant};

use plait_core::timer::TimerQueue;


#[test]
fn pops_in_deadline_order_ties_in_insertion_order() {
    let t0 = Instant::now();
    let mut q = TimerQueue::new();
    q.insert(t0 + Duration::from_millis(30), "c");
    q.insert(t0 + Duration::from_millis(10), "a1");
    q.insert(t0 + Duration::from_millis(20), "b");
    q.insert(t0 + Duration::from_millis(10), "a2");
    assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(10)));
    // Nothing is due before its deadline.
    assert!(q.pop_due(t0).is_none());
    let far = t0 + Duration::from_secs(1);
    let order: Vec<_> = std::iter::from_fn(|| q.pop_due(far).map(|(_, v)| v)).collect();
    assert_eq!(order, ["a1", "a2", "b", "c"]);
    assert!(q.is_empty());
    assert_eq!(q.next_deadline(), None);
}

#[test]
fn pop_due_takes_only_what_is_due() {
    let t0 = Instant::now();
    let mut q = TimerQueue::new();
    q.insert(t0 + Duration::from_millis(5), 1);
    q.insert(t0 + Duration::from_millis(50), 2);
    assert_eq!(q.pop_due(t0 + Duration::from_millis(10)).map(|(_, v)| v), Some(1));
    assert!(q.pop_due(t0 + Duration::from_millis(10)).is_none());
    assert_eq!(q.len(), 1);
}

#[test]
fn remove_frees_the_entry_at_once() {
    let payload = Arc::new(());
    let mut q = TimerQueue::new();
    let far = Instant::now() + Duration::from_secs(3600);
    let k1 = q.insert(far, Arc::clone(&payload));
    let k2 = q.insert(far, Arc::clone(&payload));
    assert_eq!(Arc::strong_count(&payload), 3);
    drop(q.remove(&k1).expect("queued"));
    assert_eq!(Arc::strong_count(&payload), 2, "the cancelled payload is dropped now, not at its deadline");
    assert!(q.remove(&k1).is_none(), "a second removal finds nothing");
    assert_eq!(q.len(), 1);
    drop(q.remove(&k2));
    assert_eq!(Arc::strong_count(&payload), 1);
    assert!(q.is_empty());
}

#[test]
fn many_entries_keep_order_and_all_leave() {
    let n = scaled(100_000);
    let t0 = Instant::now();
    let mut q = TimerQueue::new();
    // Deadlines inserted in a scrambled order.
    let keys: Vec<_> = (0..n)
        .map(|i| {
            let ms = (i * 7919) % n;
            q.insert(t0 + Duration::from_micros(ms as u64), ms)
        })
        .collect();
    assert_eq!(q.len(), n);
    // Remove every other one, then the rest come out sorted.
    for k in keys.iter().step_by(2) {
        assert!(q.remove(k).is_some());
    }
    let far = t0 + Duration::from_secs(3600);
    let mut last = None;
    let mut count = 0;
    while let Some((_, v)) = q.pop_due(far) {
        assert!(last.is_none_or(|l| l <= v));
        last = Some(v);
        count += 1;
    }
    assert_eq!(count, n / 2);
    assert!(q.is_empty());
}

#[test]
fn drain_empties_in_order() {
    let t0 = Instant::now();
    let mut q = TimerQueue::new();
    q.insert(t0 + Duration::from_millis(2), 'b');
    q.insert(t0 + Duration::from_millis(1), 'a');
    let drained: Vec<_> = q.drain().into_iter().map(|(_, v)| v).collect();
    assert_eq!(drained, ['a', 'b']);
    assert!(q.is_empty());
}
