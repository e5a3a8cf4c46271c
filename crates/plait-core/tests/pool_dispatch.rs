//! The dispatch policy driven by simulated workers: no processes, no
//! sockets, no clock (time is a value the test moves), so every scheduling
//! rule is checked in microseconds and without timing assumptions.
#![cfg(not(loom))]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plait_core::pool::dispatch::{BASE_DEPTH, FAST_TASK, IDLE_RESET, MAX_DEPTH, TAKE_BACK_AFTER};
use plait_core::pool::{CancelOutcome, Ending, Executing, Failure, Policy, Task, Ticket};

/// A pool whose workers are plain labels, driven the way the supervisor
/// drives the policy.
struct Sim {
    policy: Policy<u64, u32>,
    executing: Arc<Executing>,
    now: Instant,
    next_id: u64,
    next_worker: u32,
    /// Futures cancelled while queued (the host says so at dispatch).
    cancelled: HashSet<u64>,
    /// Each task's ticket, for `cancel()`.
    tickets: HashMap<u64, Arc<Ticket>>,
    /// Futures that `cancel()` cancelled (through the claims).
    user_cancelled: HashSet<u64>,
    /// Tasks whose future was marked running, in order.
    running: Vec<u64>,
    /// How each task ended: its result, or an ending, or dropped because
    /// it was cancelled before it started.
    outcome: HashMap<u64, Vec<String>>,
}

impl Sim {
    fn new(max_workers: usize, max_tasks_per_child: Option<usize>) -> Sim {
        let executing = Arc::new(Executing::new());
        Sim {
            policy: Policy::new(max_workers, max_tasks_per_child, Arc::clone(&executing)),
            executing,
            now: Instant::now(),
            next_id: 1,
            next_worker: 0,
            cancelled: HashSet::new(),
            tickets: HashMap::new(),
            user_cancelled: HashSet::new(),
            running: Vec::new(),
            outcome: HashMap::new(),
        }
    }

    fn submit_with(&mut self, timeout: Option<Duration>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let t = Task::new(id, Vec::new(), timeout, id);
        self.tickets.insert(id, Arc::clone(&t.ticket));
        self.policy.submit(t);
        id
    }

    fn submit(&mut self) -> u64 {
        self.submit_with(None)
    }

    fn submit_n(&mut self, n: usize) -> Vec<u64> {
        (0..n).map(|_| self.submit()).collect()
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Start the workers the policy asks for, ready at once.
    fn start_workers(&mut self) -> usize {
        let mut n = 0;
        while self.policy.needs_worker(false) {
            let wi = self.policy.add_worker(self.next_worker, self.now);
            self.next_worker += 1;
            self.policy.ready(wi);
            n += 1;
        }
        n
    }

    /// One dispatch step: assign, drop what was cancelled while queued,
    /// send the rest. Returns `(worker, id)` for what was sent.
    fn dispatch(&mut self) -> Vec<(usize, u64)> {
        let mut sent = Vec::new();
        for (wi, t) in self.policy.assign(self.now) {
            if t.direct() && !t.marked_running() && self.cancelled.contains(&t.id) {
                self.record(t.id, "dropped: cancelled while queued");
                self.policy.unsent(t);
                continue;
            }
            if t.direct() && !t.marked_running() {
                self.running.push(t.id);
            }
            sent.push((wi, t.id));
            self.policy.sent(wi, t, self.now);
            self.promoted(wi);
        }
        self.forget_dropped();
        sent
    }

    fn promoted(&mut self, wi: usize) {
        if let Some(&id) = self.policy.take_promoted(wi) {
            assert!(!self.user_cancelled.contains(&id), "task {id}: cancelled, yet promoted");
            self.running.push(id);
        }
    }

    /// Tasks the policy dropped must be ones `cancel()` cancelled.
    fn forget_dropped(&mut self) {
        for id in self.policy.take_dropped() {
            assert!(self.user_cancelled.contains(&id), "task {id} dropped but not cancelled");
        }
    }

    /// `cancel()` on a pending future (as the binding does: through its
    /// ticket and the claims).
    fn cancel(&mut self, id: u64) -> CancelOutcome {
        let ticket = Arc::clone(&self.tickets[&id]);
        let out = ticket.cancel(self.policy.claims(), id, || true);
        if out == CancelOutcome::Cancelled && self.user_cancelled.insert(id) {
            self.record(id, "cancel()");
        }
        out
    }

    /// Worker `wi` claims the second task it holds (it finished the first
    /// and reads the next before sending the result).
    fn claim_next(&mut self, wi: usize) -> Option<bool> {
        let (id, slot) = self.policy.held_slots(wi).nth(1)?;
        Some(self.policy.claims().start(slot, id))
    }

    /// Worker `wi` reads the tasks it holds: it skips (`X`) those whose
    /// claim was cancelled or withdrawn.
    fn skips(&mut self, wi: usize) {
        let ghosts: Vec<u64> = self.policy.ghosts(wi).collect();
        for id in ghosts {
            self.policy.skipped(wi, id);
        }
        let held: Vec<(u64, usize)> = self.policy.held_slots(wi).skip(1).collect();
        for (id, slot) in held {
            if !self.policy.claims().start(slot, id) {
                self.policy.skipped(wi, id);
            } else {
                // Claimed early; fine (it runs next), but put it back for
                // the test's bookkeeping: a claim cannot be undone, so only
                // look, do not claim, for the rest.
                break;
            }
        }
        self.forget_dropped();
    }

    /// Worker `wi` reports results for the first `n` tasks it holds, all in
    /// one read, `each` apart.
    fn results(&mut self, wi: usize, n: usize, each: Duration) -> Vec<u64> {
        let mut out = Vec::new();
        for _ in 0..n {
            self.now += each;
            let id = self.policy.executing(wi).expect("the worker holds a task");
            assert!(self.running.contains(&id), "task {id}: a result, never marked running");
            let t = self.policy.result(wi, id, self.now).expect("its executing task");
            assert_eq!(t.handle, id);
            self.record(id, "result");
            self.promoted(wi);
            out.push(id);
            if self.policy.executing(wi).is_none() {
                break;
            }
        }
        self.policy.end_read(wi, self.now);
        out
    }

    fn record(&mut self, id: u64, how: impl Into<String>) {
        self.outcome.entry(id).or_default().push(how.into());
    }

    fn record_ended(&mut self, ended: Vec<(u64, Ending)>) -> Vec<(u64, Ending)> {
        for (id, how) in &ended {
            if self.user_cancelled.contains(id) {
                // Ending a cancelled future again is a no-op; it must not
                // be anything but a cancel.
                assert_eq!(*how, Ending::Cancelled, "task {id}: cancelled, then {how:?}");
                continue;
            }
            self.record(*id, format!("{how:?}"));
        }
        ended
    }

    fn kill(&mut self, wi: usize, why: Failure, msg: &str) -> Vec<(u64, Ending)> {
        let mut ended = Vec::new();
        self.policy.remove(wi, Some((why, msg.to_string())), &mut ended);
        self.forget_dropped();
        self.record_ended(ended)
    }

    fn held(&self, wi: usize) -> Vec<u64> {
        self.policy.held(wi).collect()
    }

    fn queued(&self) -> Vec<u64> {
        self.policy.queued_ids().collect()
    }
}

const FAST: Duration = Duration::from_micros(10);
const SLOW: Duration = Duration::from_millis(50);

#[test]
fn one_worker_runs_tasks_in_submission_order() {
    let mut sim = Sim::new(1, None);
    let ids = sim.submit_n(7);
    assert_eq!(sim.start_workers(), 1);
    let mut done = Vec::new();
    while done.len() < ids.len() {
        sim.dispatch();
        let n = sim.held(0).len();
        done.extend(sim.results(0, n, SLOW));
    }
    assert_eq!(done, ids);
}

#[test]
fn tasks_spread_level_by_level_over_workers() {
    let mut sim = Sim::new(3, None);
    sim.submit_n(7);
    assert_eq!(sim.start_workers(), 3);
    let sent = sim.dispatch();
    // Every worker gets one before any gets a second; depth caps at BASE.
    assert_eq!(sent, vec![(0, 1), (1, 2), (2, 3), (0, 4), (1, 5), (2, 6)]);
    assert_eq!(BASE_DEPTH, 2);
    assert_eq!(sim.queued(), vec![7]);
    // Only the first task a worker holds is executing.
    for (wi, id) in [(0, 1), (1, 2), (2, 3)] {
        assert_eq!(sim.policy.executing(wi), Some(id));
        assert!(sim.executing.contains(id));
        assert_eq!(sim.policy.executor_of(id), Some(wi));
    }
    for id in [4, 5, 6, 7] {
        assert!(!sim.executing.contains(id));
        assert_eq!(sim.policy.executor_of(id), None);
    }
}

#[test]
fn workers_start_one_per_uncovered_task_up_to_the_maximum() {
    let mut sim = Sim::new(4, None);
    assert!(!sim.policy.needs_worker(false));
    sim.submit_n(2);
    assert!(!sim.policy.needs_worker(true), "a broken pool starts none");
    assert_eq!(sim.start_workers(), 2);
    sim.dispatch();
    sim.submit_n(10);
    assert_eq!(sim.start_workers(), 2, "capped by max_workers");
    assert_eq!(sim.policy.workers(), 4);
}

#[test]
fn a_worker_still_starting_gets_no_task() {
    let mut sim = Sim::new(1, None);
    sim.submit();
    let wi = sim.policy.add_worker(0, sim.now);
    assert!(sim.dispatch().is_empty());
    assert!(!sim.policy.needs_worker(false), "a starting worker covers the task");
    sim.policy.ready(wi);
    assert_eq!(sim.dispatch(), vec![(0, 1)]);
}

#[test]
fn prefetch_depth_doubles_for_fast_tasks_up_to_the_maximum() {
    let mut sim = Sim::new(1, None);
    sim.submit_n(1000);
    sim.start_workers();
    let mut depths = vec![sim.policy.depth(0)];
    for _ in 0..8 {
        let sent = sim.dispatch();
        assert_eq!(sent.len(), sim.policy.depth(0), "the worker is filled to its depth");
        let n = sim.held(0).len();
        sim.results(0, n, FAST);
        depths.push(sim.policy.depth(0));
    }
    assert_eq!(depths, vec![2, 4, 8, 16, 32, 64, 64, 64, 64]);
    assert_eq!(MAX_DEPTH, 64);
    assert!(sim.policy.coalescing() || sim.held(0).is_empty());
}

#[test]
fn one_slow_batch_resets_the_depth() {
    let mut sim = Sim::new(1, None);
    sim.submit_n(100);
    sim.start_workers();
    for _ in 0..3 {
        sim.dispatch();
        let n = sim.held(0).len();
        sim.results(0, n, FAST);
    }
    assert_eq!(sim.policy.depth(0), 16);
    sim.dispatch();
    // Half the batch is fast, but the batch as a whole is slower than
    // FAST_TASK per task.
    sim.results(0, 8, FAST);
    sim.advance(FAST_TASK * 16);
    sim.results(0, 8, FAST);
    assert_eq!(sim.policy.depth(0), BASE_DEPTH);
}

#[test]
fn the_depth_resets_after_an_idle_spell() {
    let mut sim = Sim::new(1, None);
    sim.submit_n(14);
    sim.start_workers();
    for _ in 0..3 {
        sim.dispatch();
        let n = sim.held(0).len();
        sim.results(0, n, FAST);
    }
    assert_eq!(sim.policy.depth(0), 16);
    assert_eq!(sim.policy.queued(), 0);
    // Idle, but not for long: the next burst goes in deep.
    sim.advance(IDLE_RESET / 2);
    sim.submit_n(20);
    assert_eq!(sim.dispatch().len(), 16);
    let n = sim.held(0).len();
    sim.results(0, n, FAST);
    let depth = sim.policy.depth(0);
    assert_eq!(depth, 32);
    // Drain, then idle past IDLE_RESET: back to BASE_DEPTH.
    sim.dispatch();
    let n = sim.held(0).len();
    sim.results(0, n, FAST);
    assert_eq!(sim.policy.queued(), 0);
    sim.advance(IDLE_RESET + Duration::from_millis(1));
    sim.submit_n(20);
    assert_eq!(sim.dispatch().len(), BASE_DEPTH);
    assert_eq!(sim.policy.depth(0), BASE_DEPTH);
}

#[test]
fn a_task_cancelled_while_queued_never_dispatches() {
    let mut sim = Sim::new(1, None);
    let ids = sim.submit_n(4);
    assert_eq!(sim.cancel(ids[1]), CancelOutcome::Cancelled);
    sim.start_workers();
    let mut sent = Vec::new();
    while sim.policy.queued() > 0 || !sim.held(0).is_empty() {
        sent.extend(sim.dispatch().into_iter().map(|(_, id)| id));
        let n = sim.held(0).len();
        sim.results(0, n, SLOW);
    }
    assert_eq!(sent, vec![ids[0], ids[2], ids[3]]);
    assert_eq!(sim.outcome[&ids[1]], vec!["cancel()"]);
}

#[test]
fn a_run_of_cancelled_tasks_is_dropped_in_one_dispatch() {
    // One worker busy with a long task; everything queued behind it is
    // cancelled. The next dispatch (after the long task's result) drops
    // them all at once, so their waiters are told then, not one per turn.
    let mut sim = Sim::new(1, None);
    let long = sim.submit();
    sim.start_workers();
    assert_eq!(sim.dispatch(), vec![(0, long)]);
    let rest = sim.submit_n(10);
    for &id in &rest {
        assert_eq!(sim.cancel(id), CancelOutcome::Cancelled);
    }
    sim.results(0, 1, SLOW);
    let sent: Vec<u64> = sim.policy.assign(sim.now).into_iter().map(|(_, t)| t.id).collect();
    assert!(sent.is_empty(), "cancelled tasks were sent: {sent:?}");
    let mut dropped = sim.policy.take_dropped();
    dropped.sort_unstable();
    assert_eq!(dropped, rest);
    assert_eq!(sim.policy.queued(), 0);
}

#[test]
fn a_death_fails_only_the_executing_task_and_requeues_the_prefetched() {
    let mut sim = Sim::new(2, None);
    sim.submit_n(6);
    sim.start_workers();
    sim.dispatch();
    assert_eq!(sim.held(0), vec![1, 3]);
    assert_eq!(sim.held(1), vec![2, 4]);
    assert_eq!(sim.queued(), vec![5, 6]);
    let ended = sim.kill(0, Failure::WorkerDied, "worker process 1 died with signal 9");
    assert_eq!(ended, vec![(1, Ending::Failed(Failure::WorkerDied, "worker process 1 died with signal 9".into()))]);
    assert!(!sim.executing.contains(1));
    // Prefetched task 3 goes back to the queue front, before 5 and 6.
    assert_eq!(sim.queued(), vec![3, 5, 6]);
    assert_eq!(sim.policy.workers(), 1);
    // The survivor keeps what it held; a replacement starts on demand.
    assert_eq!(sim.held(0), vec![2, 4]);
    assert_eq!(sim.start_workers(), 1);
    let sent = sim.dispatch();
    assert_eq!(sent, vec![(1, 3), (1, 5)]);
}

#[test]
fn a_requeued_prefetched_task_is_still_pending_and_starts_once() {
    let mut sim = Sim::new(1, None);
    sim.submit_n(2);
    sim.start_workers();
    sim.dispatch();
    assert_eq!(sim.running, vec![1], "prefetched task 2 is not running");
    sim.kill(0, Failure::WorkerDied, "died");
    sim.start_workers();
    let assigned = sim.policy.assign(sim.now);
    assert_eq!(assigned.len(), 1);
    assert_eq!(assigned[0].1.id, 2);
    assert!(!assigned[0].1.marked_running(), "it never started");
    assert!(assigned[0].1.direct(), "it starts at once on the idle worker");
}

#[test]
fn a_time_limit_runs_from_when_the_task_starts_executing() {
    let mut sim = Sim::new(2, None);
    let a = sim.submit_with(Some(Duration::from_secs(10)));
    let other = sim.submit();
    let b = sim.submit_with(Some(Duration::from_secs(1)));
    sim.start_workers();
    sim.dispatch();
    assert_eq!(sim.held(0), vec![a, b]);
    assert_eq!(sim.held(1), vec![other]);
    assert_eq!(sim.policy.next_deadline(), Some(sim.now + Duration::from_secs(10)));
    // b waits in the socket: its limit has not started.
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.policy.expired(sim.now), None);
    sim.results(0, 1, Duration::ZERO);
    assert_eq!(sim.policy.executing(0), Some(b));
    sim.advance(Duration::from_millis(999));
    assert_eq!(sim.policy.expired(sim.now), None);
    sim.advance(Duration::from_millis(1));
    // Exactly the worker executing b is to be killed.
    assert_eq!(sim.policy.expired(sim.now), Some(0));
    let ended = sim.kill(0, Failure::Timeout, "the task exceeded its time limit");
    assert_eq!(ended, vec![(b, Ending::Failed(Failure::Timeout, "the task exceeded its time limit".into()))]);
    assert_eq!(sim.policy.expired(sim.now), None);
    assert_eq!(sim.held(0), vec![other], "the other worker is untouched");
}

#[test]
fn cancelling_a_running_task_targets_its_worker_only() {
    let mut sim = Sim::new(2, None);
    sim.submit_n(4);
    sim.start_workers();
    sim.dispatch();
    // Task 3 is prefetched, not executing: it cannot be stopped.
    assert!(!sim.executing.contains(3));
    assert_eq!(sim.policy.executor_of(3), None);
    // Task 2 is executing on worker 1.
    let wi = sim.policy.executor_of(2).unwrap();
    assert_eq!(wi, 1);
    let ended = sim.kill(wi, Failure::WorkerDied, "cancelled");
    assert_eq!(ended.len(), 1);
    assert_eq!(sim.queued(), vec![4]);
    assert_eq!(sim.held(0), vec![1, 3]);
}

#[test]
fn max_tasks_per_child_caps_what_a_worker_holds_and_retires_it() {
    let mut sim = Sim::new(1, Some(3));
    sim.submit_n(5);
    sim.start_workers();
    for _ in 0..4 {
        sim.dispatch();
        let n = sim.held(0).len();
        sim.results(0, n, FAST);
    }
    // 3 done; it got no fourth.
    assert_eq!(sim.policy.queued(), 2);
    assert!(sim.policy.retire_spent() == vec![0]);
    assert_eq!(sim.policy.workers(), 0);
    assert_eq!(sim.start_workers(), 1);
    assert_eq!(sim.dispatch().len(), 2);
}

#[test]
fn shutdown_without_cancel_runs_the_queue_to_the_end() {
    let mut sim = Sim::new(1, None);
    let ids = sim.submit_n(5);
    sim.start_workers();
    sim.dispatch();
    let stopped = sim.policy.shutdown(false, false);
    assert!(stopped.ended.is_empty() && stopped.killed.is_empty());
    assert!(!sim.policy.can_take());
    let mut done = Vec::new();
    while !sim.policy.finished() {
        assert!(!sim.policy.needs_worker(false));
        sim.dispatch();
        let n = sim.held(0).len();
        done.extend(sim.results(0, n, SLOW));
    }
    assert_eq!(done, ids);
    assert_eq!(sim.policy.take_workers(), vec![0]);
}

#[test]
fn shutdown_with_cancel_futures_cancels_the_queue_and_finishes_the_held() {
    let mut sim = Sim::new(2, None);
    sim.submit_n(8);
    sim.start_workers();
    sim.dispatch();
    // Worker 0 dies: its prefetched task 3 goes back, still pending.
    sim.kill(0, Failure::WorkerDied, "died");
    assert_eq!(sim.queued(), vec![3, 5, 6, 7, 8]);
    let stopped = sim.policy.shutdown(true, false);
    let ended = sim.record_ended(stopped.ended);
    let c = Ending::Cancelled;
    assert_eq!(ended, vec![(3, c.clone()), (5, c.clone()), (6, c.clone()), (7, c.clone()), (8, c.clone()), (4, c)]);
    assert!(stopped.killed.is_empty());
    assert!(!sim.policy.finished(), "worker 1 still runs 2");
    assert_eq!(sim.held(0), vec![2], "its prefetched 4 was cancelled too");
    sim.results(0, 1, SLOW);
    assert!(sim.policy.finished());
    sim.skips(0);
    assert_eq!(sim.policy.ghosts(0).count(), 0);
}

#[test]
fn shutdown_with_kill_fails_everything_held() {
    let mut sim = Sim::new(2, None);
    sim.submit_n(6);
    sim.start_workers();
    sim.dispatch();
    let stopped = sim.policy.shutdown(false, true);
    assert_eq!(stopped.killed, vec![0, 1]);
    let ended = sim.record_ended(stopped.ended);
    let ids: Vec<u64> = ended.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![5, 6, 1, 3, 2, 4]);
    let killed = Ending::Failed(Failure::WorkerDied, "the worker was killed by shutdown(kill_workers=True)".into());
    // The executing ones fail; the prefetched ones never started.
    assert_eq!(ended[2].1, killed);
    assert_eq!(ended[3].1, Ending::Cancelled);
    assert_eq!(ended[4].1, killed);
    assert_eq!(ended[5].1, Ending::Cancelled);
    assert!((1..=4).all(|id| !sim.executing.contains(id)));
    assert!(sim.policy.finished());
}

#[test]
fn a_broken_pool_fails_the_queue() {
    let mut sim = Sim::new(1, None);
    sim.submit_n(3);
    let mut ended = Vec::new();
    sim.policy.fail_queued("no workers", &mut ended);
    assert_eq!(ended.len(), 3);
    assert!(ended.iter().all(|(_, how)| *how == Ending::Failed(Failure::Broken, "no workers".into())));
    assert_eq!(sim.policy.queued(), 0);
}

#[test]
fn a_result_for_a_task_the_worker_does_not_execute_is_ignored() {
    let mut sim = Sim::new(1, None);
    sim.submit_n(2);
    sim.start_workers();
    sim.dispatch();
    assert!(sim.policy.result(0, 2, sim.now).is_none(), "2 is prefetched, not first");
    assert!(sim.policy.result(0, 99, sim.now).is_none());
    assert_eq!(sim.held(0), vec![1, 2]);
}

/// A small deterministic generator (xorshift), so the soak is repeatable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn every_task_ends_exactly_once_under_random_events() {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let max_tasks = if seed % 3 == 0 { Some(1 + rng.below(4) as usize) } else { None };
        let mut sim = Sim::new(1 + rng.below(4) as usize, max_tasks);
        let mut submitted = Vec::new();
        let mut shut = false;
        for step in 0..400 {
            match rng.below(10) {
                0..=2 if !shut => {
                    let timeout = (rng.below(4) == 0).then(|| Duration::from_millis(1 + rng.below(20)));
                    let id = sim.submit_with(timeout);
                    if rng.below(6) == 0 {
                        sim.cancelled.insert(id);
                    }
                    submitted.push(id);
                }
                9 if !submitted.is_empty() => {
                    // cancel() of a task whose future is not done; claims by
                    // workers reading ahead; skips; take-backs.
                    let id = submitted[rng.below(submitted.len() as u64) as usize];
                    if !sim.outcome.contains_key(&id) && rng.below(2) == 0 {
                        sim.cancel(id);
                    }
                    if sim.policy.workers() > 0 {
                        let wi = rng.below(sim.policy.workers() as u64) as usize;
                        match rng.below(3) {
                            0 => {
                                sim.claim_next(wi);
                            }
                            1 => sim.skips(wi),
                            _ => {
                                sim.advance(TAKE_BACK_AFTER);
                                sim.policy.take_back(sim.now);
                                sim.forget_dropped();
                            }
                        }
                    }
                }
                3..=5 if sim.policy.workers() > 0 => {
                    let wi = rng.below(sim.policy.workers() as u64) as usize;
                    let n = rng.below(1 + sim.held(wi).len() as u64) as usize;
                    sim.results(wi, n, Duration::from_micros(rng.below(2000)));
                }
                6 if sim.policy.workers() > 0 => {
                    let wi = rng.below(sim.policy.workers() as u64) as usize;
                    sim.kill(wi, Failure::WorkerDied, "died");
                }
                7 => {
                    sim.advance(Duration::from_millis(rng.below(10)));
                    while let Some(wi) = sim.policy.expired(sim.now) {
                        sim.kill(wi, Failure::Timeout, "timeout");
                    }
                }
                8 if step > 300 && !shut => {
                    shut = true;
                    let stopped = sim.policy.shutdown(rng.below(2) == 0, rng.below(4) == 0);
                    sim.record_ended(stopped.ended);
                }
                _ => {}
            }
            sim.policy.retire_spent();
            sim.start_workers();
            sim.dispatch();
        }
        if !shut {
            let stopped = sim.policy.shutdown(false, false);
            sim.record_ended(stopped.ended);
        }
        let mut guard = 0;
        while !sim.policy.finished() {
            for wi in 0..sim.policy.workers() {
                sim.skips(wi);
                let n = sim.held(wi).len();
                sim.results(wi, n, Duration::from_micros(100));
            }
            sim.policy.retire_spent();
            sim.start_workers();
            sim.dispatch();
            guard += 1;
            assert!(guard < 10_000, "seed {seed}: shutdown never finishes");
        }
        for id in &submitted {
            let ends = sim.outcome.get(id).map(Vec::as_slice).unwrap_or(&[]);
            assert_eq!(ends.len(), 1, "seed {seed}: task {id} ended {ends:?}");
        }
        assert_eq!(sim.outcome.len(), submitted.len(), "seed {seed}: an unknown task ended");
        assert!(submitted.iter().all(|&id| !sim.executing.contains(id)), "seed {seed}: a task left executing");
        for how in sim.outcome.values().flatten() {
            let kind = how.split(['(', ':']).next().unwrap_or_default().to_string();
            *seen.entry(kind).or_default() += 1;
        }
    }
    // The soak met every kind of ending.
    for kind in ["result", "Failed", "Cancelled", "dropped", "cancel"] {
        assert!(seen.get(kind).is_some_and(|&n| n > 0), "no {kind} ending in {seen:?}");
    }
}

#[test]
fn two_long_tasks_on_two_workers_one_still_starting_go_to_different_workers() {
    let mut sim = Sim::new(2, None);
    sim.submit_n(2);
    let w0 = sim.policy.add_worker(0, sim.now);
    let w1 = sim.policy.add_worker(1, sim.now);
    sim.policy.ready(w0);
    // The second task is kept for the worker still starting.
    assert_eq!(sim.dispatch(), vec![(w0, 1)]);
    assert_eq!(sim.queued(), vec![2]);
    sim.policy.ready(w1);
    assert_eq!(sim.dispatch(), vec![(w1, 2)]);
    assert_eq!(sim.running, vec![1, 2]);
}

#[test]
fn prefetched_tasks_stay_pending_until_they_execute() {
    // Eight long tasks on two workers: two run, six are pending.
    let mut sim = Sim::new(2, None);
    sim.submit_n(8);
    sim.start_workers();
    sim.dispatch();
    assert_eq!(sim.held(0), vec![1, 3]);
    assert_eq!(sim.held(1), vec![2, 4]);
    assert_eq!(sim.running, vec![1, 2]);
    // Every one not running can be cancelled, prefetched or queued.
    for id in [3, 4, 5, 6, 7, 8] {
        assert_eq!(sim.cancel(id), CancelOutcome::Cancelled, "task {id}");
    }
    assert_eq!(sim.cancel(1), CancelOutcome::Started);
    sim.results(0, 1, SLOW);
    sim.results(1, 1, SLOW);
    assert_eq!(sim.running, vec![1, 2], "the cancelled ones never started");
    assert!(sim.policy.finished() || sim.policy.queued() > 0);
    assert_eq!(sim.dispatch(), Vec::<(usize, u64)>::new(), "the queued ones are dropped");
    for wi in 0..2 {
        sim.skips(wi);
        assert_eq!(sim.policy.ghosts(wi).count(), 0);
        assert!(sim.held(wi).is_empty());
    }
    for id in 3..=8 {
        assert_eq!(sim.outcome[&id], vec!["cancel()"]);
    }
}

#[test]
fn a_cancelled_prefetched_task_never_reaches_started() {
    let mut sim = Sim::new(1, None);
    sim.submit_n(3);
    sim.start_workers();
    sim.dispatch();
    assert_eq!(sim.held(0), vec![1, 2]);
    let slot2 = sim.policy.held_slots(0).nth(1).unwrap().1;
    assert_eq!(sim.cancel(2), CancelOutcome::Cancelled);
    // The worker's own claim fails: it skips the task.
    assert!(!sim.policy.claims().start(slot2, 2));
    sim.results(0, 1, SLOW);
    // Promotion passed over 2; the worker holds nothing to execute now.
    assert_eq!(sim.policy.executing(0), None);
    assert_eq!(sim.policy.ghosts(0).collect::<Vec<_>>(), vec![2]);
    sim.skips(0);
    assert_eq!(sim.dispatch(), vec![(0, 3)]);
    sim.results(0, 1, SLOW);
    assert_eq!(sim.running, vec![1, 3]);
}

#[test]
fn a_task_behind_a_long_one_is_taken_back_for_an_idle_worker() {
    let mut sim = Sim::new(2, None);
    sim.submit_n(4);
    sim.start_workers();
    sim.dispatch();
    assert_eq!(sim.held(0), vec![1, 3]);
    assert_eq!(sim.held(1), vec![2, 4]);
    // Worker 1's tasks are quick; worker 0's first is long.
    sim.results(1, 2, FAST);
    assert!(sim.held(1).is_empty());
    assert_eq!(sim.policy.take_back(sim.now), 0, "the long task has not run long enough yet");
    sim.advance(TAKE_BACK_AFTER);
    assert!(sim.policy.next_take_back().is_some_and(|t| t <= sim.now));
    assert_eq!(sim.policy.take_back(sim.now), 1);
    assert_eq!(sim.held(0), vec![1]);
    assert_eq!(sim.queued(), vec![3]);
    assert_eq!(sim.dispatch(), vec![(1, 3)]);
    assert_eq!(sim.running, vec![1, 2, 4, 3]);
    // Worker 0 skips its withdrawn copy; 3 runs once, on worker 1.
    sim.skips(0);
    assert_eq!(sim.policy.ghosts(0).count(), 0);
    sim.results(1, 1, SLOW);
    sim.results(0, 1, SLOW);
    for id in 1..=4 {
        assert_eq!(sim.outcome[&id], vec!["result"], "task {id}");
    }
}

#[test]
fn a_task_its_worker_already_claimed_is_not_taken_back() {
    let mut sim = Sim::new(2, None);
    sim.submit_n(4);
    sim.start_workers();
    sim.dispatch();
    sim.results(1, 2, FAST);
    sim.advance(TAKE_BACK_AFTER * 2);
    // Worker 0 finished 1 and claimed 3 before its result was read.
    assert_eq!(sim.claim_next(0), Some(true));
    assert_eq!(sim.policy.take_back(sim.now), 0);
    assert_eq!(sim.held(0), vec![1, 3]);
    assert_eq!(sim.cancel(3), CancelOutcome::Started, "too late to cancel too");
    sim.results(0, 2, SLOW);
    assert_eq!(sim.outcome[&3], vec!["result"]);
}
