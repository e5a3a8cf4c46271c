//! `Queue` orders and non-blocking contract: FIFO, LIFO, priority (heapq
//! order), maxsize/Full, shutdown, task_done accounting.
#![cfg(not(loom))]

use plait_core::detach::Inline;
use plait_core::queue::{GetError, Order, PutError, Queue, TooManyTaskDone};

fn lt(a: &i64, b: &i64) -> Result<bool, ()> {
    Ok(a < b)
}

fn put(q: &Queue<i64>, v: i64) {
    q.try_put(&Inline, v, &mut lt).unwrap();
}

fn get(q: &Queue<i64>) -> Result<i64, GetError<()>> {
    q.try_get(&Inline, &mut lt)
}

fn drain(q: &Queue<i64>) -> Vec<i64> {
    std::iter::from_fn(|| get(q).ok()).collect()
}

#[test]
fn fifo_order() {
    let q = Queue::new(Order::Fifo, 0);
    assert_eq!(q.order(), Order::Fifo);
    for v in [3, 1, 2, 5, 4] {
        put(&q, v);
    }
    assert_eq!(q.len(&Inline), 5);
    assert_eq!(drain(&q), vec![3, 1, 2, 5, 4]);
    assert!(matches!(get(&q), Err(GetError::Empty)));
}

#[test]
fn lifo_order() {
    let q = Queue::new(Order::Lifo, 0);
    for v in [3, 1, 2, 5, 4] {
        put(&q, v);
    }
    assert_eq!(drain(&q), vec![4, 5, 2, 1, 3]);
}

#[test]
fn priority_order() {
    let q = Queue::new(Order::Priority, 0);
    for v in [5, 3, 8, 1, 9, 2, 7, 3] {
        put(&q, v);
    }
    assert_eq!(drain(&q), vec![1, 2, 3, 3, 5, 7, 8, 9]);
}

#[test]
fn priority_equal_keys_leave_in_heapq_order() {
    // (key, tag) pairs compared on the key only: the tags must come out in
    // the order Python's heapq gives for the same pushes.
    let q: Queue<(i64, char)> = Queue::new(Order::Priority, 0);
    let mut by_key = |a: &(i64, char), b: &(i64, char)| Ok::<bool, ()>(a.0 < b.0);
    for item in [(1, 'a'), (1, 'b'), (0, 'c'), (1, 'd'), (1, 'e')] {
        q.try_put(&Inline, item, &mut by_key).unwrap();
    }
    let out: String =
        std::iter::from_fn(|| q.try_get(&Inline, &mut by_key).ok()).map(|p| p.1).collect();
    // import heapq; h=[]
    // for x in [(1,'a'),(1,'b'),(0,'c'),(1,'d'),(1,'e')]: heapq.heappush(h, K(x))
    // ''.join(heapq.heappop(h)[1] for _ in range(5))  (K compares x[0] only)
    assert_eq!(out, "caebd");
}

#[test]
fn maxsize_refuses_with_full_and_returns_the_item() {
    let q = Queue::new(Order::Fifo, 2);
    assert_eq!(q.maxsize(&Inline), 2);
    put(&q, 1);
    put(&q, 2);
    assert!(q.is_full(&Inline));
    match q.try_put(&Inline, 3, &mut lt) {
        Err(PutError::Full(3)) => {}
        other => panic!("expected Full(3), got {other:?}"),
    }
    assert_eq!(get(&q).unwrap(), 1);
    assert!(!q.is_full(&Inline));
    put(&q, 3);
    // Growing maxsize makes room; 0 means unbounded.
    q.set_maxsize(&Inline, 0);
    for v in 4..100 {
        put(&q, v);
    }
    assert!(!q.is_full(&Inline));
    assert_eq!(drain(&q), (2..100).collect::<Vec<_>>());
}

#[test]
fn shutdown_refuses_puts_and_drains_gets() {
    let q = Queue::new(Order::Fifo, 0);
    put(&q, 1);
    put(&q, 2);
    assert!(q.shutdown(&Inline, false).is_empty());
    assert!(q.is_shutdown(&Inline));
    assert!(matches!(q.try_put(&Inline, 3, &mut lt), Err(PutError::ShutDown(3))));
    assert_eq!(get(&q).unwrap(), 1);
    assert_eq!(get(&q).unwrap(), 2);
    assert!(matches!(get(&q), Err(GetError::ShutDown)));
    assert_eq!(q.unfinished(&Inline), 2);
}

#[test]
fn shutdown_immediate_empties_and_returns_items() {
    let q = Queue::new(Order::Fifo, 0);
    for v in 1..=3 {
        put(&q, v);
    }
    assert_eq!(get(&q).unwrap(), 1);
    let drained = q.shutdown(&Inline, true);
    assert_eq!(drained, vec![2, 3]);
    assert_eq!(q.len(&Inline), 0);
    assert!(matches!(get(&q), Err(GetError::ShutDown)));
    // The two drained items no longer count as unfinished; the one taken
    // out with get still does until task_done.
    assert_eq!(q.unfinished(&Inline), 1);
    q.task_done(&Inline).unwrap();
    assert!(q.all_done(&Inline));
}

#[test]
fn task_done_accounting() {
    let q = Queue::new(Order::Fifo, 0);
    assert!(q.all_done(&Inline));
    assert_eq!(q.task_done(&Inline), Err(TooManyTaskDone));
    put(&q, 1);
    put(&q, 2);
    assert_eq!(q.unfinished(&Inline), 2);
    assert!(!q.all_done(&Inline));
    get(&q).unwrap();
    q.task_done(&Inline).unwrap();
    assert!(!q.all_done(&Inline));
    get(&q).unwrap();
    q.task_done(&Inline).unwrap();
    assert!(q.all_done(&Inline));
    assert_eq!(q.task_done(&Inline), Err(TooManyTaskDone));
}

#[test]
fn failing_comparison_returns_the_item_and_keeps_the_queue() {
    let q: Queue<i64> = Queue::new(Order::Priority, 0);
    for v in [4, 2, 6] {
        put(&q, v);
    }
    let mut fail = |_: &i64, _: &i64| -> Result<bool, &'static str> { Err("cmp") };
    assert!(matches!(q.try_put(&Inline, 1, &mut fail), Err(PutError::Compare(1, "cmp"))));
    assert!(matches!(q.try_get(&Inline, &mut fail), Err(GetError::Compare("cmp"))));
    assert_eq!(q.unfinished(&Inline), 3);
    assert_eq!(drain(&q), vec![2, 4, 6]);
}

#[test]
fn map_items_sees_storage() {
    let q = Queue::new(Order::Fifo, 0);
    put(&q, 7);
    put(&q, 8);
    assert_eq!(q.map_items(&Inline, |items| items.iter().copied().collect::<Vec<_>>()), vec![7, 8]);
    assert_eq!(q.waiting(&Inline), (0, 0, 0));
}
