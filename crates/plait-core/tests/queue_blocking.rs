//! `Queue` blocking paths with real threads: producers and consumers over a
//! small maxsize, every item delivered exactly once, shutdown waking
//! blocked callers, join (task_done / wait_all_done), timeouts and
//! interruption. Every wait has an upper bound; nothing asserts timings.
#![cfg(not(loom))]

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use plait_core::detach::Inline;
use plait_core::park::{Outcome, WaitCtx};
use plait_core::queue::{GetError, Order, PutError, Queue};



fn lt(a: &u64, b: &u64) -> Result<bool, ()> {
    Ok(a < b)
}


/// `Queue.put(item, timeout=BOUND)` as the binding builds it.
fn put(q: &Queue<u64>, mut item: u64) -> Result<(), PutError<u64, ()>> {
    let ctx = WaitCtx::timeout(Some(BOUND));
    loop {
        match q.try_put(&Inline, item, &mut lt) {
            Err(PutError::Full(back)) => {
                item = back;
                if q.wait_not_full(&ctx) == Outcome::TimedOut {
                    return Err(PutError::Full(item));
                }
            }
            other => return other,
        }
    }
}

/// `Queue.get(timeout=...)` as the binding builds it.
fn get_within(q: &Queue<u64>, ctx: &WaitCtx<'_>) -> Result<u64, (GetError<()>, Outcome)> {
    loop {
        match q.try_get(&Inline, &mut lt) {
            Err(GetError::Empty) => match q.wait_not_empty(ctx) {
                Outcome::Notified => {}
                out => {
                    // One last try after a raced wakeup, as Python's get does.
                    return q.try_get(&Inline, &mut lt).map_err(|e| (e, out));
                }
            },
            other => return other.map_err(|e| (e, Outcome::Notified)),
        }
    }
}

fn get(q: &Queue<u64>) -> Result<u64, (GetError<()>, Outcome)> {
    get_within(q, &WaitCtx::timeout(Some(BOUND)))
}

fn producer_consumer(order: Order) {
    let producers = 3u64;
    let consumers = 3u64;
    let per = scaled(5_000) as u64;
    let q = Arc::new(Queue::new(order, 4));
    let prod: Vec<_> = (0..producers)
        .map(|p| {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                for i in 0..per {
                    put(&q, p * per + i).expect("put timed out: lost wakeup?");
                }
            })
        })
        .collect();
    let total = producers * per;
    let cons: Vec<_> = (0..consumers)
        .map(|c| {
            let q = Arc::clone(&q);
            let share = total / consumers + u64::from(c < total % consumers);
            thread::spawn(move || {
                let mut got = Vec::with_capacity(share as usize);
                for _ in 0..share {
                    got.push(get(&q).expect("get timed out: lost wakeup?"));
                    q.task_done(&Inline).unwrap();
                }
                got
            })
        })
        .collect();
    for h in prod {
        h.join().unwrap();
    }
    let mut all: Vec<u64> = cons.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..total).collect::<Vec<_>>(), "every item exactly once");
    assert_eq!(q.len(&Inline), 0);
    assert!(q.all_done(&Inline));
    assert_eq!(q.waiting(&Inline), (0, 0, 0));
}

#[test]
fn fifo_producers_consumers_deliver_every_item_once() {
    producer_consumer(Order::Fifo);
}

#[test]
fn lifo_producers_consumers_deliver_every_item_once() {
    producer_consumer(Order::Lifo);
}

#[test]
fn priority_producers_consumers_deliver_every_item_once() {
    producer_consumer(Order::Priority);
}

#[test]
fn fifo_order_is_kept_through_a_bounded_queue() {
    let n = scaled(10_000) as u64;
    let q = Arc::new(Queue::new(Order::Fifo, 2));
    let q2 = Arc::clone(&q);
    let t = thread::spawn(move || {
        for i in 0..n {
            put(&q2, i).unwrap();
        }
    });
    for i in 0..n {
        assert_eq!(get(&q).unwrap(), i);
    }
    t.join().unwrap();
}

#[test]
fn get_times_out_on_an_empty_queue() {
    let q: Queue<u64> = Queue::new(Order::Fifo, 0);
    let r = get_within(&q, &WaitCtx::timeout(Some(Duration::from_millis(20))));
    assert!(matches!(r, Err((GetError::Empty, Outcome::TimedOut))));
    assert_eq!(q.waiting(&Inline), (0, 0, 0));
}

#[test]
fn put_times_out_on_a_full_queue() {
    let q: Queue<u64> = Queue::new(Order::Fifo, 1);
    put(&q, 1).unwrap();
    assert_eq!(
        q.wait_not_full(&WaitCtx::timeout(Some(Duration::from_millis(20)))),
        Outcome::TimedOut
    );
    assert_eq!(q.waiting(&Inline), (0, 0, 0));
}

#[test]
fn interrupt_ends_a_blocked_get() {
    let q: Arc<Queue<u64>> = Arc::new(Queue::new(Order::Fifo, 0));
    let stop = Arc::new(AtomicBool::new(false));
    let (q2, s2) = (Arc::clone(&q), Arc::clone(&stop));
    let t = thread::spawn(move || {
        let check = move || s2.load(Ordering::SeqCst);
        q2.wait_not_empty(
            &WaitCtx::timeout(Some(BOUND)).with_interrupt(&check, Duration::from_millis(1)),
        )
    });
    wait_until(|| q.waiting(&Inline).0 == 1);
    stop.store(true, Ordering::SeqCst);
    assert_eq!(t.join().unwrap(), Outcome::Interrupted);
    assert_eq!(q.waiting(&Inline), (0, 0, 0));
}

#[test]
fn shutdown_wakes_blocked_getters_and_putters() {
    let empty: Arc<Queue<u64>> = Arc::new(Queue::new(Order::Fifo, 0));
    let full: Arc<Queue<u64>> = Arc::new(Queue::new(Order::Fifo, 1));
    put(&full, 0).unwrap();
    let getters: Vec<_> = (0..2)
        .map(|_| {
            let q = Arc::clone(&empty);
            thread::spawn(move || get(&q))
        })
        .collect();
    let putter = {
        let q = Arc::clone(&full);
        thread::spawn(move || put(&q, 1))
    };
    wait_until(|| empty.waiting(&Inline).0 == 2 && full.waiting(&Inline).1 == 1);
    empty.shutdown(&Inline, false);
    full.shutdown(&Inline, false);
    for g in getters {
        assert!(matches!(g.join().unwrap(), Err((GetError::ShutDown, _))));
    }
    assert!(matches!(putter.join().unwrap(), Err(PutError::ShutDown(1))));
    // The item already in `full` can still be taken, then gets fail.
    assert_eq!(get(&full).unwrap(), 0);
    assert!(matches!(get(&full), Err((GetError::ShutDown, _))));
}

/// `Queue.join()` as the binding builds it, bounded.
fn join(q: &Queue<u64>) -> bool {
    let ctx = WaitCtx::timeout(Some(BOUND));
    while !q.all_done(&Inline) {
        if q.wait_all_done(&ctx) == Outcome::TimedOut {
            return q.all_done(&Inline);
        }
    }
    true
}

#[test]
fn join_returns_when_every_task_is_done() {
    let n = scaled(1_000) as u64;
    let q = Arc::new(Queue::new(Order::Fifo, 0));
    for i in 0..n {
        put(&q, i).unwrap();
    }
    let joiners: Vec<_> = (0..2)
        .map(|_| {
            let q = Arc::clone(&q);
            thread::spawn(move || join(&q))
        })
        .collect();
    let q2 = Arc::clone(&q);
    let worker = thread::spawn(move || {
        for _ in 0..n {
            get(&q2).unwrap();
            q2.task_done(&Inline).unwrap();
        }
    });
    worker.join().unwrap();
    for j in joiners {
        assert!(j.join().unwrap(), "join timed out");
    }
    assert!(q.all_done(&Inline));
}

#[test]
fn shutdown_immediate_releases_joiners() {
    let q = Arc::new(Queue::new(Order::Fifo, 0));
    for i in 0..3 {
        put(&q, i).unwrap();
    }
    let q2 = Arc::clone(&q);
    let joiner = thread::spawn(move || join(&q2));
    wait_until(|| q.waiting(&Inline).2 == 1);
    assert_eq!(q.shutdown(&Inline, true), vec![0, 1, 2]);
    assert!(joiner.join().unwrap());
}
