//! The dispatch policy: which worker gets which task, and what happens to
//! tasks when workers die, overrun their time limit, are cancelled or shut
//! down. A plain state machine with no I/O and no clock of its own (every
//! method that needs the time is given `now`), generic over the task's
//! handle `T` and over the worker's I/O side `W` (processes and sockets in
//! the supervisor, nothing at all in the tests).
//!
//! **Queue.** Tasks wait in one FIFO. A task handed back by a dead worker
//! before it started goes back to the *front*, in its original order.
//!
//! **Prefetch depth.** A worker may hold `depth` tasks: the first one it
//! executes, the others wait in its socket, so the next task is already
//! there when the current one ends. `depth` starts at [`BASE_DEPTH`].
//! While the results of a read took less than [`FAST_TASK`] each (counted
//! from when the first of them was sent, or from the previous read if
//! later), it doubles, up to [`MAX_DEPTH`]; one slow batch drops it back to
//! `BASE_DEPTH` (slow start, as TCP's window): a stream of tiny tasks
//! travels in large writes and the worker never waits for us. A worker idle
//! longer than [`IDLE_RESET`] starts again from `BASE_DEPTH` when tasks
//! arrive: the next burst may be of slow tasks, which a deep worker would
//! take all of.
//!
//! **Assignment.** Level by level: every ready worker holding no task gets
//! one, then every worker holding one gets a second, and so on up to each
//! worker's depth, so the queue spreads evenly. A worker never holds more
//! than `max_tasks_per_child` minus what it has done. Beyond the first
//! level, the last tasks are left for the workers still starting.
//!
//! **Claims** (`claim.rs`). Each task sent takes a slot of the claim page.
//! A task sent to an idle worker is claimed at once and is *direct* (the
//! caller marks its future running); a prefetched one stays pending until
//! it becomes executing ([`Policy::result`] claims it then, or finds it
//! cancelled and passes over it). [`Policy::take_back`] withdraws tasks
//! prefetched behind one that has run [`TAKE_BACK_AFTER`] when a worker is
//! idle; [`Policy::skipped`] frees the slot of a task a worker skipped.
//!
//! **Executing.** Only the first task a worker holds is executing; its
//! time limit runs from when it became first. [`Executing`] is the set of
//! those ids, shared with the binding: `cancel(kill=True)` on a running
//! future can stop only an executing task (by killing its worker).
//!
//! **Endings.** A worker that dies, or is killed for a time limit or a
//! cancel, fails only its executing task; what was prefetched to it goes
//! back to the queue front, still pending. Shutdown with `cancel_futures`
//! cancels the queued tasks and the prefetched ones that have not started;
//! with `kill` it also fails every executing task of the killed workers.
//! Every task ends exactly once.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::claim::{CancelOutcome, Claims, Ticket};

/// A worker's starting prefetch depth.
pub const BASE_DEPTH: usize = 2;
/// The deepest prefetch.
pub const MAX_DEPTH: usize = 64;
/// Results faster than this per task deepen the prefetch.
pub const FAST_TASK: Duration = Duration::from_micros(500);
/// A worker whose depth grew runs tiny tasks back to back: the supervisor
/// looks at its results at most this often instead of waking for each one
/// (results then wait at most this long; the worker holds enough work).
pub const COALESCE: Duration = Duration::from_micros(100);
/// A worker idle this long starts again from [`BASE_DEPTH`].
pub const IDLE_RESET: Duration = Duration::from_millis(5);
/// A task prefetched behind one that has run this long is taken back for
/// a worker that is idle (tiny tasks finish sooner: prefetch still pays).
pub const TAKE_BACK_AFTER: Duration = Duration::from_millis(3);
/// No slot: the task is in the parent.
const NO_SLOT: usize = usize::MAX;

/// One submitted call.
pub struct Task<T> {
    pub id: u64,
    /// The pickled call, sent as is.
    pub payload: Vec<u8>,
    pub timeout: Option<Duration>,
    /// The binding's part (its future).
    pub handle: T,
    /// Where the task is, for `cancel()` (see `claim.rs`).
    pub ticket: Arc<Ticket>,
    /// Already marked running: it started (in a worker whose death handed
    /// it back, see [`Policy::remove`] with no failure).
    marked_running: bool,
    /// Its claim slot while a worker holds it.
    slot: usize,
    /// Sent to a worker that holds nothing else: it starts at once, and the
    /// caller marks it running before sending it.
    direct: bool,
}

impl<T> Task<T> {
    pub fn new(id: u64, payload: Vec<u8>, timeout: Option<Duration>, handle: T) -> Task<T> {
        Task { id, payload, timeout, handle, ticket: Arc::new(Ticket::new()), marked_running: false, slot: NO_SLOT, direct: false }
    }

    /// Whether it was marked running already (handed out before).
    #[inline]
    pub fn marked_running(&self) -> bool {
        self.marked_running
    }

    /// Whether it starts as soon as it is sent (the caller marks it
    /// running first); otherwise it is prefetched and its future stays
    /// pending until it becomes its worker's executing task.
    #[inline]
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// Its claim slot (sent in the `T` frame).
    #[inline]
    pub fn slot(&self) -> usize {
        self.slot
    }
}

/// Why a task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Its worker died or was killed (also: cancelled while running).
    WorkerDied,
    /// It overran its time limit.
    Timeout,
    /// The pool is broken (a worker could not start or initialize).
    Broken,
}

/// How a task ended without a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Failed(Failure, String),
    Cancelled,
}

/// The ids of the tasks workers are executing right now.
#[derive(Debug, Default)]
pub struct Executing(Mutex<HashSet<u64>>);

impl Executing {
    pub fn new() -> Executing {
        Executing::default()
    }

    #[inline]
    fn ids(&self) -> MutexGuard<'_, HashSet<u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether task `id` is executing (not queued, not prefetched, not done).
    pub fn contains(&self, id: u64) -> bool {
        self.ids().contains(&id)
    }
}

/// A task handed to a worker.
struct InFlight<T> {
    task: Task<T>,
    deadline: Option<Instant>,
    sent_at: Instant,
    /// When it became the worker's executing task.
    since: Instant,
}

/// One worker as the policy sees it, with its I/O side.
struct Slot<T, W> {
    io: W,
    ready: bool,
    /// The first executes; the others wait in its socket.
    inflight: VecDeque<InFlight<T>>,
    /// Tasks it holds that were cancelled or withdrawn: `(id, slot)` until
    /// it says it skipped them (`X`), which frees the slot.
    ghosts: Vec<(u64, usize)>,
    tasks_done: usize,
    depth: usize,
    /// When its results were last read.
    last_read: Instant,
    /// Results of the read in progress, and when the first was sent.
    batch: u32,
    batch_sent: Option<Instant>,
}

/// The dispatch policy of one pool.
pub struct Policy<T, W> {
    queue: VecDeque<Task<T>>,
    workers: Vec<Slot<T, W>>,
    max_workers: usize,
    max_tasks_per_child: Option<usize>,
    shutting: bool,
    executing: Arc<Executing>,
    claims: Arc<Claims>,
    free_slots: Vec<usize>,
    /// Tasks dropped because a cancel came before they started (their
    /// futures are cancelled already), for the caller to drop.
    dropped: Vec<T>,
}

/// What a shutdown left for the caller.
pub struct Stopped<T, W> {
    /// Tasks that ended, in order.
    pub ended: Vec<(T, Ending)>,
    /// Workers to kill and reap (with `kill`).
    pub killed: Vec<W>,
}

impl<T, W> Policy<T, W> {
    /// A policy whose claim page lives in this process only (tests).
    pub fn new(max_workers: usize, max_tasks_per_child: Option<usize>, executing: Arc<Executing>) -> Policy<T, W> {
        let claims = Arc::new(Claims::local(Self::slots_for(max_workers)));
        Policy::with_claims(max_workers, max_tasks_per_child, executing, claims)
    }

    /// The claim slots a pool of `max_workers` needs.
    pub fn slots_for(max_workers: usize) -> usize {
        max_workers.max(1) * MAX_DEPTH * 2
    }

    pub fn with_claims(
        max_workers: usize,
        max_tasks_per_child: Option<usize>,
        executing: Arc<Executing>,
        claims: Arc<Claims>,
    ) -> Policy<T, W> {
        let free_slots = (0..claims.len()).rev().collect();
        Policy {
            queue: VecDeque::new(),
            workers: Vec::new(),
            max_workers,
            max_tasks_per_child,
            shutting: false,
            executing,
            claims,
            free_slots,
            dropped: Vec::new(),
        }
    }

    /// The claim page.
    pub fn claims(&self) -> &Arc<Claims> {
        &self.claims
    }

    /// Tasks dropped since the last call (cancelled before they started).
    pub fn take_dropped(&mut self) -> Vec<T> {
        std::mem::take(&mut self.dropped)
    }

    /// Queue a task at the back.
    #[inline]
    pub fn submit(&mut self, task: Task<T>) {
        self.queue.push_back(task);
    }

    /// Tasks waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Ids of the queued tasks, front first.
    pub fn queued_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.queue.iter().map(|t| t.id)
    }

    /// Whether shutdown was asked for.
    pub fn shutting(&self) -> bool {
        self.shutting
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    pub fn io(&self, wi: usize) -> &W {
        &self.workers[wi].io
    }

    pub fn io_mut(&mut self, wi: usize) -> &mut W {
        &mut self.workers[wi].io
    }

    /// Every worker's I/O side, in order.
    pub fn ios(&self) -> impl Iterator<Item = &W> + '_ {
        self.workers.iter().map(|s| &s.io)
    }

    pub fn ios_mut(&mut self) -> impl Iterator<Item = &mut W> + '_ {
        self.workers.iter_mut().map(|s| &mut s.io)
    }

    /// The ids a worker holds: the executing one first.
    pub fn held(&self, wi: usize) -> impl Iterator<Item = u64> + '_ {
        self.workers[wi].inflight.iter().map(|f| f.task.id)
    }

    /// The ids and claim slots of the tasks a worker holds, in order.
    pub fn held_slots(&self, wi: usize) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.workers[wi].inflight.iter().map(|f| (f.task.id, f.task.slot))
    }

    /// The tasks a worker holds that were cancelled or withdrawn, until it
    /// says it skipped them.
    pub fn ghosts(&self, wi: usize) -> impl Iterator<Item = u64> + '_ {
        self.workers[wi].ghosts.iter().map(|g| g.0)
    }

    /// The id of the task worker `wi` executes.
    pub fn executing(&self, wi: usize) -> Option<u64> {
        self.workers[wi].inflight.front().map(|f| f.task.id)
    }

    /// The task worker `wi` executes and since when.
    pub fn executing_task(&self, wi: usize) -> Option<(&Task<T>, Instant)> {
        self.workers[wi].inflight.front().map(|f| (&f.task, f.since))
    }

    /// The worker executing task `id`.
    pub fn executor_of(&self, id: u64) -> Option<usize> {
        self.workers.iter().position(|s| s.inflight.front().is_some_and(|f| f.task.id == id))
    }

    pub fn depth(&self, wi: usize) -> usize {
        self.workers[wi].depth
    }

    /// A new worker (not ready until it says so).
    pub fn add_worker(&mut self, io: W, now: Instant) -> usize {
        self.workers.push(Slot {
            io,
            ready: false,
            inflight: VecDeque::new(),
            ghosts: Vec::new(),
            tasks_done: 0,
            depth: BASE_DEPTH,
            last_read: now,
            batch: 0,
            batch_sent: None,
        });
        self.workers.len() - 1
    }

    /// Worker `wi` finished its setup and takes tasks.
    pub fn ready(&mut self, wi: usize) {
        self.workers[wi].ready = true;
    }

    /// Whether another worker should start: one per queued task not
    /// covered by a worker that is starting or has nothing to do. `broken`:
    /// the pool is broken, so none should.
    pub fn needs_worker(&self, broken: bool) -> bool {
        let free = self.workers.iter().filter(|s| !s.ready || s.inflight.is_empty()).count();
        let drained = self.shutting && self.queue.is_empty();
        !broken
            && !drained
            && self.queue.len() > free
            && self.workers.len() < self.max_workers
    }

    /// Take tasks off the queue for the ready workers (see the module doc).
    /// The caller marks them running and then calls [`Policy::sent`] for
    /// each one it sends.
    pub fn assign(&mut self, now: Instant) -> Vec<(usize, Task<T>)> {
        let mut out = Vec::new();
        if self.queue.is_empty() {
            return out;
        }
        for s in self.workers.iter_mut() {
            if s.inflight.is_empty() && now.saturating_duration_since(s.last_read) > IDLE_RESET {
                s.depth = BASE_DEPTH;
            }
        }
        let mut load: Vec<usize> = self.workers.iter().map(|s| s.inflight.len()).collect();
        let deepest = self.workers.iter().map(|s| s.depth).max().unwrap_or(0);
        // Workers still starting will take one task each: never prefetch
        // those to a busy worker (two long tasks, one worker up: the second
        // waits for the second worker, not behind the first task).
        let starting = self.workers.iter().filter(|s| !s.ready).count();
        for round in 0..deepest {
            // By index: the body takes from the queue and the slot list.
            #[allow(clippy::needless_range_loop)]
            for wi in 0..self.workers.len() {
                let s = &self.workers[wi];
                if self.queue.is_empty() || self.free_slots.is_empty() {
                    break;
                }
                if round > 0 && self.queue.len() <= starting {
                    break;
                }
                let room = match self.max_tasks_per_child {
                    Some(max) => max.saturating_sub(s.tasks_done + load[wi]),
                    None => usize::MAX,
                };
                if !(s.ready && load[wi] == round && round < s.depth && room > 0) {
                    continue;
                }
                // A cancelled task is dropped (its waiters are told) without
                // using up the worker's turn, so a run of them at the front
                // of the queue is cleared in one go, as an executor clears
                // cancelled work items it reaches.
                while let Some(mut t) = self.queue.pop_front() {
                    let slot = self.free_slots.pop().expect("a free slot");
                    self.claims.queue(slot, t.id);
                    // A cancel that came first wins: drop the task.
                    if !t.marked_running && !t.ticket.bind(slot) {
                        self.claims.free(slot);
                        self.free_slots.push(slot);
                        self.dropped.push(t.handle);
                        continue;
                    }
                    t.slot = slot;
                    t.direct = load[wi] == 0;
                    if t.direct && !self.claims.start(slot, t.id) {
                        // Cancelled between the bind and now.
                        t.ticket.unbind();
                        self.claims.free(slot);
                        self.free_slots.push(slot);
                        self.dropped.push(t.handle);
                        continue;
                    }
                    out.push((wi, t));
                    load[wi] += 1;
                    break;
                }
            }
        }
        out
    }

    /// The caller did not send task `task` (its future was cancelled after
    /// all): free its slot.
    pub fn unsent(&mut self, task: Task<T>) -> T {
        if task.slot != NO_SLOT {
            task.ticket.unbind();
            self.claims.free(task.slot);
            self.free_slots.push(task.slot);
        }
        task.handle
    }

    /// Task `task`, assigned to `wi` and marked running, was sent to it.
    #[inline]
    pub fn sent(&mut self, wi: usize, mut task: Task<T>, now: Instant) {
        let s = &mut self.workers[wi];
        let first = s.inflight.is_empty();
        if task.direct {
            task.marked_running = true;
        }
        s.inflight.push_back(InFlight { task, deadline: None, sent_at: now, since: now });
        if first {
            // A task meant to be prefetched that ends up first (the one
            // before it was not sent) is promoted: see `take_promoted`.
            self.promote(wi, now);
        }
    }

    /// Make worker `wi`'s first held task its executing one: claim it
    /// (it is committed: the worker runs it as soon as it reads it), or,
    /// if a cancel came first, drop it (the worker skips it) and try the
    /// next. Returns whether a task became executing that the caller must
    /// mark running.
    fn promote(&mut self, wi: usize, now: Instant) {
        let s = &mut self.workers[wi];
        while let Some(f) = s.inflight.front_mut() {
            if f.task.marked_running || self.claims.start(f.task.slot, f.task.id) {
                self.executing.ids().insert(f.task.id);
                f.deadline = f.task.timeout.map(|d| now + d);
                f.since = now;
                return;
            }
            let f = s.inflight.pop_front().expect("front exists");
            s.ghosts.push((f.task.id, f.task.slot));
            self.dropped.push(f.task.handle);
        }
    }

    /// The handle of worker `wi`'s executing task if it was just promoted
    /// and not yet marked running; it is marked now (the caller tells the
    /// future).
    pub fn take_promoted(&mut self, wi: usize) -> Option<&T> {
        let f = self.workers[wi].inflight.front_mut()?;
        if f.task.marked_running {
            return None;
        }
        f.task.marked_running = true;
        Some(&f.task.handle)
    }

    /// Worker `wi` skipped task `id` (`X`): it was cancelled or withdrawn.
    pub fn skipped(&mut self, wi: usize, id: u64) {
        let s = &mut self.workers[wi];
        if let Some(k) = s.ghosts.iter().position(|g| g.0 == id) {
            let (_, slot) = s.ghosts.swap_remove(k);
            self.claims.free(slot);
            self.free_slots.push(slot);
            return;
        }
        // Cancelled while prefetched, and not yet noticed.
        if let Some(k) = s.inflight.iter().position(|f| f.task.id == id && !f.task.marked_running) {
            let f = s.inflight.remove(k).expect("position exists");
            // A ticket never points at a free slot (a cancel would wait).
            f.task.ticket.unbind();
            self.claims.free(f.task.slot);
            self.free_slots.push(f.task.slot);
            self.dropped.push(f.task.handle);
        }
    }

    /// Take back tasks prefetched behind executing tasks that have run at
    /// least [`TAKE_BACK_AFTER`], one per worker that is idle (ready,
    /// holding nothing) while the queue is empty; they go to the queue
    /// front, for those workers. A task whose worker already claimed it
    /// stays. Returns how many were taken.
    pub fn take_back(&mut self, now: Instant) -> usize {
        if !self.queue.is_empty() {
            return 0;
        }
        let mut idle = self.workers.iter().filter(|s| s.ready && s.inflight.is_empty()).count();
        let mut taken = 0;
        while idle > 0 {
            let busiest = (0..self.workers.len())
                .filter(|&wi| {
                    let s = &self.workers[wi];
                    s.inflight.len() >= 2
                        && s.inflight.front().is_some_and(|f| now.saturating_duration_since(f.since) >= TAKE_BACK_AFTER)
                        && s.inflight.back().is_some_and(|f| !f.task.marked_running)
                })
                .max_by_key(|&wi| self.workers[wi].inflight.len());
            let Some(wi) = busiest else { break };
            let s = &mut self.workers[wi];
            let f = s.inflight.back_mut().expect("holds two");
            if !self.claims.withdraw(f.task.slot, f.task.id) {
                // Its worker claimed it (it finished the first and is on
                // this one; the result is on its way), or it was cancelled.
                match self.claims.cancel(f.task.slot, f.task.id) {
                    Some(CancelOutcome::Cancelled) => {
                        let f = s.inflight.pop_back().expect("holds two");
                        s.ghosts.push((f.task.id, f.task.slot));
                        self.dropped.push(f.task.handle);
                        continue;
                    }
                    _ => break,
                }
            }
            let f = s.inflight.pop_back().expect("holds two");
            s.ghosts.push((f.task.id, f.task.slot));
            let mut t = f.task;
            t.ticket.unbind();
            t.slot = NO_SLOT;
            t.direct = false;
            self.queue.push_front(t);
            idle -= 1;
            taken += 1;
        }
        taken
    }

    /// When [`Policy::take_back`] could next take a task (a worker is idle
    /// and another holds a prefetched task), for the caller's wake-up.
    pub fn next_take_back(&self) -> Option<Instant> {
        if !self.queue.is_empty() || !self.workers.iter().any(|s| s.ready && s.inflight.is_empty()) {
            return None;
        }
        self.workers
            .iter()
            .filter(|s| s.inflight.len() >= 2)
            .filter_map(|s| s.inflight.front().map(|f| f.since + TAKE_BACK_AFTER))
            .min()
    }

    /// Worker `wi` sent the result of task `id`: the task, if it is the one
    /// the worker executes (workers run their tasks in order). The next one
    /// it holds starts executing, its time limit counted from `now`.
    #[inline]
    pub fn result(&mut self, wi: usize, id: u64, now: Instant) -> Option<Task<T>> {
        let s = &mut self.workers[wi];
        if s.inflight.front().map(|f| f.task.id) != Some(id) {
            return None;
        }
        let f = s.inflight.pop_front().expect("front exists");
        s.batch += 1;
        s.batch_sent.get_or_insert(f.sent_at);
        s.tasks_done += 1;
        self.executing.ids().remove(&id);
        self.claims.free(f.task.slot);
        self.free_slots.push(f.task.slot);
        self.promote(wi, now);
        Some(f.task)
    }

    /// A read of worker `wi`'s results ended at `now`: adapt its depth to
    /// how long they took (see the module doc).
    #[inline]
    pub fn end_read(&mut self, wi: usize, now: Instant) {
        let s = &mut self.workers[wi];
        if let Some(sent) = s.batch_sent.take() {
            let per_task = now.saturating_duration_since(s.last_read.max(sent)) / s.batch;
            s.depth = if per_task < FAST_TASK { (s.depth * 2).min(MAX_DEPTH) } else { BASE_DEPTH };
            s.last_read = now;
            s.batch = 0;
        }
    }

    /// Remove worker `wi` (dead, or being killed): its executing task
    /// ends as `why` says (with `None`, it goes back to the queue); the
    /// tasks it held but had not started go back to the queue front.
    /// Returns its I/O side.
    pub fn remove(&mut self, wi: usize, why: Option<(Failure, String)>, ended: &mut Vec<(T, Ending)>) -> W {
        let s = self.workers.remove(wi);
        for (_, slot) in s.ghosts {
            self.claims.free(slot);
            self.free_slots.push(slot);
        }
        let mut inflight = s.inflight;
        let mut back = Vec::new();
        if let Some(first) = inflight.pop_front() {
            self.executing.ids().remove(&first.task.id);
            match why {
                Some((kind, msg)) => {
                    self.claims.free(first.task.slot);
                    self.free_slots.push(first.task.slot);
                    ended.push((first.task.handle, Ending::Failed(kind, msg)));
                }
                None => back.push(first.task),
            }
        }
        // The others never started: back to the parent, still pending
        // (unless the dead worker had claimed one, or a cancel came first).
        for f in inflight {
            let t = f.task;
            // Not withdrawn and not cancelled: the worker claimed it as it
            // died, so it never ran the call (its predecessor's result was
            // not read): it goes back too.
            if !self.claims.withdraw(t.slot, t.id) && self.claims.cancel(t.slot, t.id) == Some(CancelOutcome::Cancelled) {
                t.ticket.unbind();
                self.claims.free(t.slot);
                self.free_slots.push(t.slot);
                self.dropped.push(t.handle);
                continue;
            }
            back.push(t);
        }
        for mut t in back.into_iter().rev() {
            if t.slot != NO_SLOT {
                if !t.marked_running {
                    t.ticket.unbind();
                }
                self.claims.free(t.slot);
                self.free_slots.push(t.slot);
            }
            t.slot = NO_SLOT;
            t.direct = false;
            self.queue.push_front(t);
        }
        s.io
    }

    /// The first worker whose executing task's time limit has passed.
    pub fn expired(&self, now: Instant) -> Option<usize> {
        self.workers
            .iter()
            .position(|s| matches!(s.inflight.front(), Some(InFlight { deadline: Some(d), .. }) if now >= *d))
    }

    /// The earliest time limit of an executing task.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.workers.iter().filter_map(|s| s.inflight.front().and_then(|f| f.deadline)).min()
    }

    /// Remove the idle workers that reached `max_tasks_per_child`; their
    /// I/O sides, to close.
    pub fn retire_spent(&mut self) -> Vec<W> {
        let mut out = Vec::new();
        let Some(max) = self.max_tasks_per_child else { return out };
        let mut i = 0;
        while i < self.workers.len() {
            let s = &self.workers[i];
            if s.ready && s.inflight.is_empty() && s.tasks_done >= max {
                out.push(self.workers.remove(i).io);
            } else {
                i += 1;
            }
        }
        out
    }

    /// Fail every queued task: the pool is broken.
    pub fn fail_queued(&mut self, msg: &str, ended: &mut Vec<(T, Ending)>) {
        for t in self.queue.drain(..) {
            ended.push((t.handle, Ending::Failed(Failure::Broken, msg.to_string())));
        }
    }

    /// Shutdown: no more workers start once the queue is empty. With
    /// `cancel_futures` (or `kill`), queued tasks end now: cancelled, or
    /// failed if a dead worker handed them back. With `kill`, every worker
    /// is removed and every task it held fails.
    pub fn shutdown(&mut self, cancel_futures: bool, kill: bool) -> Stopped<T, W> {
        self.shutting = true;
        let mut ended = Vec::new();
        if cancel_futures || kill {
            for t in self.queue.drain(..) {
                let how = if t.marked_running {
                    Ending::Failed(Failure::WorkerDied, "the pool was shut down before this task could run again".into())
                } else {
                    Ending::Cancelled
                };
                ended.push((t.handle, how));
            }
        }
        let mut killed = Vec::new();
        if kill {
            for s in self.workers.drain(..) {
                for (_, slot) in s.ghosts {
                    self.claims.free(slot);
                    self.free_slots.push(slot);
                }
                for f in s.inflight {
                    self.executing.ids().remove(&f.task.id);
                    let never_ran = !f.task.marked_running
                        && self.claims.cancel(f.task.slot, f.task.id) == Some(CancelOutcome::Cancelled);
                    if never_ran {
                        f.task.ticket.unbind();
                    }
                    self.claims.free(f.task.slot);
                    self.free_slots.push(f.task.slot);
                    if never_ran {
                        ended.push((f.task.handle, Ending::Cancelled));
                        continue;
                    }
                    let msg = "the worker was killed by shutdown(kill_workers=True)".to_string();
                    ended.push((f.task.handle, Ending::Failed(Failure::WorkerDied, msg)));
                }
                killed.push(s.io);
            }
        } else if cancel_futures {
            // Prefetched tasks that have not started are cancelled too.
            for s in self.workers.iter_mut() {
                let mut k = 1;
                while k < s.inflight.len() {
                    let f = &mut s.inflight[k];
                    if !f.task.marked_running && self.claims.cancel(f.task.slot, f.task.id) == Some(CancelOutcome::Cancelled) {
                        let f = s.inflight.remove(k).expect("index exists");
                        s.ghosts.push((f.task.id, f.task.slot));
                        ended.push((f.task.handle, Ending::Cancelled));
                    } else {
                        k += 1;
                    }
                }
            }
        }
        Stopped { ended, killed }
    }

    /// Shut down, nothing queued, nothing held: the workers can go.
    pub fn finished(&self) -> bool {
        self.shutting && self.queue.is_empty() && self.workers.iter().all(|s| s.inflight.is_empty())
    }

    /// Remove every worker; their I/O sides.
    pub fn take_workers(&mut self) -> Vec<W> {
        self.workers.drain(..).map(|s| s.io).collect()
    }

    /// Whether some worker runs a stream of tiny tasks (its depth grew and
    /// it holds tasks): its results may be left to pile up for [`COALESCE`].
    pub fn coalescing(&self) -> bool {
        self.workers.iter().any(|s| s.depth > BASE_DEPTH && !s.inflight.is_empty())
    }

    /// Whether a task submitted now could go somewhere at once (a worker
    /// could start, or a ready one has room): then submitters must wake the
    /// supervisor.
    pub fn can_take(&self) -> bool {
        !self.shutting
            && (self.workers.len() < self.max_workers
                || self.workers.iter().any(|s| s.ready && s.inflight.len() < s.depth))
    }
}
