//! The reactor's timer heap: deadlines pop by time, then by insertion.
#![cfg(all(not(loom), not(miri)))]

use plait_core::reactor::TimerHeap;

#[test]
fn timers_pop_by_time_then_insertion() {
    let mut h = TimerHeap::new();
    h.push(2.0, "c");
    h.push(1.0, "a");
    h.push(1.0, "b");
    h.push(3.0, "d");
    assert_eq!(h.next_when(), Some(1.0));
    assert_eq!(h.pop_due(0.5), None);
    assert_eq!(h.pop_due(1.0), Some((1.0, "a")));
    assert_eq!(h.pop_due(1.0), Some((1.0, "b")));
    assert_eq!(h.pop_due(1.5), None);
    h.retain(|s| *s != "c");
    assert_eq!(h.pop(), Some((3.0, "d")));
    assert!(h.is_empty());
}

#[test]
fn timers_clear_drain_and_iterate() {
    let mut h = TimerHeap::new();
    for (i, w) in [5.0, 1.0, 3.0].into_iter().enumerate() {
        h.push(w, i);
    }
    assert_eq!(h.len(), 3);
    assert_eq!(h.peek(), Some(&1));
    let mut all: Vec<_> = h.iter().copied().collect();
    all.sort();
    assert_eq!(all, vec![0, 1, 2]);
    let mut drained = h.drain();
    drained.sort();
    assert_eq!(drained, vec![0, 1, 2]);
    assert!(h.is_empty() && h.next_when().is_none());
    h.push(1.0, 9);
    h.clear();
    assert_eq!(h.pop(), None);
}

#[test]
fn timers_at_the_same_time_keep_insertion_order_after_retain() {
    let mut h = TimerHeap::new();
    for i in 0..100 {
        h.push(1.0, i);
    }
    h.retain(|i| i % 3 != 0);
    let mut got = Vec::new();
    while let Some((_, i)) = h.pop_due(1.0) {
        got.push(i);
    }
    let want: Vec<_> = (0..100).filter(|i| i % 3 != 0).collect();
    assert_eq!(got, want);
}
