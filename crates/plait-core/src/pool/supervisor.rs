//! The supervisor thread: one per pool. It owns every worker's socket and
//! process, and waits in `poll(2)` on the sockets plus an eventfd that
//! [`Shared::submit`], [`Shared::cancel`] and [`Shared::shutdown`] use to
//! wake it. Each turn of its loop:
//!
//! 1. takes the queued commands (submit, kill a running task, shutdown);
//! 2. reads what workers sent and notices deaths (EOF);
//! 3. kills workers whose executing task overran its time limit;
//! 4. retires idle workers that reached `max_tasks_per_child`;
//! 5. starts workers on demand;
//! 6. takes back tasks prefetched behind long ones for idle workers
//!    ([`Policy::take_back`]), assigns tasks ([`Policy::assign`]), marks
//!    the direct ones running (detached when
//!    the host can, otherwise in the one attach of this turn, which also
//!    delivers the turn's completions) and writes each worker's new task
//!    frames in one write;
//! 7. once shut down with nothing left, closes every socket, reaps every
//!    child and says it stopped;
//! 8. publishes which worker executes what (for `plait.debug`:
//!    [`Shared::workers`]) and waits for input, a command or the next time
//!    limit.
//!
//! It needs no interpreter to move bytes: tasks arrive pickled, and results
//! are handed to the host as bytes.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::claim::Claims;
use super::dispatch::{Ending, Executing, Failure, Policy, Task, COALESCE};
use super::frame;
use super::worker::{self, Conn, Launch};
use super::{Host, Reply, Start};
use crate::sync::Event;

enum Cmd<T> {
    Submit(Task<T>),
    Cancel(u64),
    Shutdown { cancel_futures: bool, kill: bool },
}

#[inline]
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One live worker as `plait.debug` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerInfo {
    pub pid: u32,
    /// The [`Host::debug_id`] of the task it executes, if any.
    pub task: Option<usize>,
    /// Monotonic ns (`CLOCK_MONOTONIC`) since it executes that task.
    pub since_ns: Option<u64>,
}

/// What the pool's owner (the binding's object) and its supervisor share.
pub struct Shared<T> {
    cmds: Mutex<VecDeque<Cmd<T>>>,
    wake: OwnedFd,
    /// The supervisor is (about to be) blocked in poll() and could hand out
    /// a new task at once: submitters must write the eventfd. Otherwise it
    /// will see the command anyway, and a burst of submits costs no
    /// syscall each.
    sleeping: AtomicBool,
    done: Event,
    broken: Mutex<Option<String>>,
    closed: AtomicBool,
    shut: AtomicBool,
    executing: Arc<Executing>,
    /// The live workers as of the supervisor's last turn (`plait.debug`).
    workers: Mutex<Vec<WorkerInfo>>,
}

impl<T> Shared<T> {
    pub fn new() -> io::Result<Shared<T>> {
        // SAFETY: eventfd has no preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Shared {
            cmds: Mutex::new(VecDeque::new()),
            wake,
            sleeping: AtomicBool::new(false),
            done: Event::new(),
            broken: Mutex::new(None),
            closed: AtomicBool::new(false),
            shut: AtomicBool::new(false),
            executing: Arc::new(Executing::new()),
            workers: Mutex::new(Vec::new()),
        })
    }

    #[inline]
    fn send(&self, cmd: Cmd<T>) {
        // A submit only needs to wake a supervisor that has somewhere to
        // put it (it said so by setting `sleeping`); otherwise the next
        // result wakes it anyway. Cancels and shutdowns always wake it.
        let urgent = !matches!(cmd, Cmd::Submit(_));
        lock(&self.cmds).push_back(cmd);
        if urgent || self.sleeping.load(Ordering::SeqCst) {
            self.poke();
        }
    }

    /// Queue a task.
    #[inline]
    pub fn submit(&self, task: Task<T>) {
        self.send(Cmd::Submit(task));
    }

    /// Kill the worker executing task `id`, if one still is (its future
    /// was cancelled); it fails and is replaced.
    pub fn cancel(&self, id: u64) {
        self.send(Cmd::Cancel(id));
    }

    /// Ask the supervisor to shut down (see [`Policy::shutdown`]).
    pub fn shutdown(&self, cancel_futures: bool, kill: bool) {
        self.send(Cmd::Shutdown { cancel_futures, kill });
    }

    /// Wake the supervisor.
    pub fn poke(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a valid u64 to our own eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Whether task `id` is executing in a worker (only those can be
    /// cancelled while running).
    pub fn is_executing(&self, id: u64) -> bool {
        self.executing.contains(id)
    }

    /// Why the pool is broken, if it is.
    pub fn broken(&self) -> Option<String> {
        lock(&self.broken).clone()
    }

    fn set_broken(&self, why: String) {
        *lock(&self.broken) = Some(why);
    }

    /// No more submits are accepted.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Every worker has stopped (or none was ever started).
    pub fn set_stopped(&self) {
        self.shut.store(true, Ordering::Release);
        self.done.set();
    }

    pub fn is_stopped(&self) -> bool {
        self.shut.load(Ordering::Acquire)
    }

    /// The live workers and what each executes, as of the supervisor's
    /// last turn; `None` if the supervisor is publishing right now (never
    /// waits: snapshots are taken from anywhere, even attached).
    pub fn workers(&self) -> Option<Vec<WorkerInfo>> {
        for _ in 0..64 {
            match self.workers.try_lock() {
                Ok(w) => return Some(w.clone()),
                Err(std::sync::TryLockError::Poisoned(e)) => return Some(e.into_inner().clone()),
                Err(std::sync::TryLockError::WouldBlock) => std::hint::spin_loop(),
            }
        }
        None
    }

    fn publish(&self, workers: &[WorkerInfo]) {
        let mut w = lock(&self.workers);
        w.clear();
        w.extend_from_slice(workers);
    }

    /// Set once every worker has stopped: wait on it.
    pub fn stopped(&self) -> &Event {
        &self.done
    }
}

/// Pool configuration, fixed when the supervisor starts.
pub struct Config {
    pub max_workers: usize,
    pub max_tasks_per_child: Option<usize>,
    pub launch: Launch,
    /// The claim page the workers map (see `claim.rs`); `None`: one that
    /// only this process sees (every worker's claim then succeeds).
    pub claims: Option<Arc<Claims>>,
}

/// Start the supervisor thread of the pool `shared`.
pub fn start<H: Host>(shared: Arc<Shared<H::Task>>, host: H, cfg: Config) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("plait-process-pool".into()).spawn(move || supervise(shared, host, cfg))
}

/// Hand the tasks that ended without a result to the host, in order.
fn end_all<H: Host>(host: &H, ended: &mut Vec<(H::Task, Ending)>, done: &mut Vec<H::Pending>) {
    for (t, how) in ended.drain(..) {
        host.ended(t, how, done);
    }
}

/// The supervisor loop. Runs detached except in [`Host::deliver`].
fn supervise<H: Host>(shared: Arc<Shared<H::Task>>, host: H, cfg: Config) {
    let Config { max_workers, max_tasks_per_child, mut launch, claims } = cfg;
    let executing = Arc::clone(&shared.executing);
    let mut policy: Policy<H::Task, Conn> = match claims {
        Some(c) => Policy::with_claims(max_workers, max_tasks_per_child, executing, c),
        None => Policy::new(max_workers, max_tasks_per_child, executing),
    };
    let mut next_worker_id = 0usize;
    let mut last_wake = Instant::now();
    let mut cmds: VecDeque<Cmd<H::Task>> = VecDeque::new();
    let mut ended: Vec<(H::Task, Ending)> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut published: Vec<WorkerInfo> = Vec::new();
    let mut seen: Vec<WorkerInfo> = Vec::new();
    loop {
        let mut done: Vec<H::Pending> = Vec::new();
        // 1. Commands.
        std::mem::swap(&mut *lock(&shared.cmds), &mut cmds);
        for cmd in cmds.drain(..) {
            match cmd {
                Cmd::Submit(t) => policy.submit(t),
                Cmd::Cancel(id) => {
                    // The future is already cancelled; stop its worker if it
                    // is still executing that task. Read what the worker
                    // sent first: if it finished the task and moved on to
                    // the next, killing it would kill that one instead.
                    for wi in 0..policy.workers() {
                        if policy.executing(wi) == Some(id) {
                            read_worker(&mut policy, wi, &host, &mut done, &shared);
                        }
                    }
                    if let Some(wi) = policy.executor_of(id) {
                        let mut c = policy.remove(wi, Some((Failure::WorkerDied, "cancelled".into())), &mut ended);
                        c.kill();
                        c.sweep_segments();
                        end_all(&host, &mut ended, &mut done);
                    }
                }
                Cmd::Shutdown { cancel_futures, kill } => {
                    let stopped = policy.shutdown(cancel_futures, kill);
                    for mut c in stopped.killed {
                        c.kill();
                    }
                    ended.extend(stopped.ended);
                    end_all(&host, &mut ended, &mut done);
                }
            }
        }
        if let Some(msg) = shared.broken() {
            policy.fail_queued(&msg, &mut ended);
            end_all(&host, &mut ended, &mut done);
        }
        // 2. Read what workers sent; notice deaths.
        let mut i = 0;
        while i < policy.workers() {
            if read_worker(&mut policy, i, &host, &mut done, &shared) {
                let msg = policy.io_mut(i).death_message();
                let c = policy.remove(i, Some((Failure::WorkerDied, msg)), &mut ended);
                c.sweep_segments();
                end_all(&host, &mut ended, &mut done);
                continue;
            }
            i += 1;
        }
        // 3. Time limits (of the task each worker executes).
        let now = Instant::now();
        while let Some(i) = policy.expired(now) {
            let msg = "the task exceeded its time limit; its worker was killed".to_string();
            let mut c = policy.remove(i, Some((Failure::Timeout, msg)), &mut ended);
            c.kill();
            c.sweep_segments();
            end_all(&host, &mut ended, &mut done);
        }
        // 4. Retire workers that reached max_tasks_per_child.
        for mut c in policy.retire_spent() {
            c.close();
        }
        // 5. Start workers on demand.
        let broken = lock(&shared.broken).is_some();
        while policy.needs_worker(broken) {
            match worker::start(&mut launch, next_worker_id) {
                Ok(c) => {
                    policy.add_worker(c, Instant::now());
                }
                Err(e) => {
                    shared.set_broken(format!("cannot start a worker process: {e}"));
                    break;
                }
            }
            next_worker_id += 1;
        }
        // 6. Hand out tasks. Most futures can be marked running without
        // the interpreter (nothing in Python watches them); the rest wait
        // for the attach below.
        // A task prefetched behind one that runs long goes to a worker
        // that is idle instead (see `Policy::take_back`).
        policy.take_back(Instant::now());
        let assigned = if policy.queued() > 0 { policy.assign(Instant::now()) } else { Vec::new() };
        let mut started: Vec<(usize, Task<H::Task>)> = Vec::new();
        let mut attach_start: Vec<(usize, Task<H::Task>)> = Vec::new();
        let mut refused: Vec<Task<H::Task>> = Vec::new();
        // Frames go out in assignment order (tasks marked running attached
        // come back after the others).
        let order: Vec<u64> = assigned.iter().map(|(_, t)| t.id).collect();
        for (wi, t) in assigned {
            // Prefetched tasks stay pending until they become executing.
            if t.marked_running() || !t.direct() {
                started.push((wi, t));
                continue;
            }
            // Its future shows its worker from the moment it runs.
            host.runs_in(&t.handle, policy.io(wi).child.id());
            match host.try_start(&t.handle) {
                Start::Running => started.push((wi, t)),
                Start::Cancelled => refused.push(t),
                Start::Attach => attach_start.push((wi, t)),
            }
        }
        // Futures cancelled before their task started: tell their waiters
        // (CANCELLED_AND_NOTIFIED), as an executor does when it reaches one.
        for h in policy.take_dropped() {
            host.ended(h, Ending::Cancelled, &mut done);
        }
        let attached = !attach_start.is_empty();
        if attached || !done.is_empty() {
            host.deliver(std::mem::take(&mut done), attach_start, &mut started, &mut refused);
        }
        for t in refused {
            drop(policy.unsent(t));
        }
        // A task refused above leaves the next one first: `sent` promotes it.
        if attached {
            // By a map from id to place, not a search per task: a turn can
            // hand out max_workers × MAX_DEPTH tasks.
            let place: std::collections::HashMap<u64, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
            started.sort_by_key(|(_, t)| place.get(&t.id).copied());
        }
        let now = Instant::now();
        for (wi, t) in started {
            let slot = t.slot() as u32;
            frame::push(&mut policy.io_mut(wi).wbuf, frame::TASK, &[&t.id.to_le_bytes(), &slot.to_le_bytes(), &t.payload]);
            policy.sent(wi, t, now);
            let pid = policy.io(wi).child.id();
            if let Some(h) = policy.take_promoted(wi) {
                host.runs_in(h, pid);
                host.promoted(h);
            }
        }
        for h in policy.take_dropped() {
            host.ended(h, Ending::Cancelled, &mut done);
        }
        if !done.is_empty() {
            host.deliver(std::mem::take(&mut done), Vec::new(), &mut Vec::new(), &mut Vec::new());
        }
        // One write per worker for everything it was handed; what the
        // socket does not take now goes when poll() says it can. Its
        // death, if the write fails, is noticed on the next read.
        for c in policy.ios_mut().filter(|c| !c.wbuf.is_empty()) {
            frame::flush(&c.sock, &mut c.wbuf);
        }
        // 7. Finished shutting down?
        if policy.finished() {
            for mut c in policy.take_workers() {
                c.close();
            }
            if !done.is_empty() {
                host.deliver(std::mem::take(&mut done), Vec::new(), &mut Vec::new(), &mut Vec::new());
            }
            shared.publish(&[]);
            shared.set_stopped();
            return;
        }
        // 8. Say which worker executes what.
        publish_workers(&policy, &host, &shared, &mut seen, &mut published);
        // Wait for input, a command or the next deadline.
        let next_deadline = match (policy.next_deadline(), policy.next_take_back()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout_ms = match next_deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).as_millis().min(1000) as i32 + 1,
            None => 1000,
        };
        // Workers busy with streams of tiny tasks hold enough work for a
        // while: let their results pile up a little rather than wake for
        // each one (see `COALESCE`).
        if policy.coalescing() {
            let since = last_wake.elapsed();
            if since < COALESCE && next_deadline.is_none_or(|d| d > Instant::now() + COALESCE) {
                std::thread::sleep(COALESCE - since);
            }
        }
        fds.clear();
        fds.push(libc::pollfd { fd: shared.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        for c in policy.ios() {
            let events = if c.wbuf.is_empty() { libc::POLLIN } else { libc::POLLIN | libc::POLLOUT };
            fds.push(libc::pollfd { fd: c.sock.as_raw_fd(), events, revents: 0 });
        }
        // Submits need to wake us only if a task could go somewhere now.
        shared.sleeping.store(policy.can_take(), Ordering::SeqCst);
        if lock(&shared.cmds).is_empty() {
            // SAFETY: `fds` is a valid array of pollfd of the given length.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        }
        shared.sleeping.store(false, Ordering::SeqCst);
        last_wake = Instant::now();
        if fds[0].revents & libc::POLLIN != 0 {
            let mut buf = 0u64;
            // SAFETY: reading 8 bytes into a valid u64 from our eventfd.
            unsafe { libc::read(shared.wake.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
        }
    }
}

/// Tell each executing task's future its worker (a task handed back by a
/// dead worker and sent again becomes executing without a promotion) and
/// publish the workers for [`Shared::workers`] if anything changed.
fn publish_workers<H: Host>(
    policy: &Policy<H::Task, Conn>,
    host: &H,
    shared: &Shared<H::Task>,
    seen: &mut Vec<WorkerInfo>,
    published: &mut Vec<WorkerInfo>,
) {
    seen.clear();
    for wi in 0..policy.workers() {
        let pid = policy.io(wi).child.id();
        let (task, since_ns) = match policy.executing_task(wi) {
            Some((t, since)) => {
                let id = host.debug_id(&t.handle);
                match published.iter().find(|w| w.pid == pid && w.task == Some(id)) {
                    Some(w) => (w.task, w.since_ns),
                    None => {
                        host.runs_in(&t.handle, pid);
                        (Some(id), Some(crate::debug::instant_to_ns(since)))
                    }
                }
            }
            None => (None, None),
        };
        seen.push(WorkerInfo { pid, task, since_ns });
    }
    if seen != published {
        shared.publish(seen);
        std::mem::swap(seen, published);
    }
}

/// Read everything worker `wi` sent so far and act on its frames; `true`
/// if its socket closed.
fn read_worker<H: Host>(
    policy: &mut Policy<H::Task, Conn>,
    wi: usize,
    host: &H,
    done: &mut Vec<H::Pending>,
    shared: &Shared<H::Task>,
) -> bool {
    let c = policy.io_mut(wi);
    let dead = frame::read_available(&c.sock, &mut c.rbuf, &mut c.fds);
    if c.rbuf.len() < frame::HEADER {
        return dead;
    }
    // Parsed in place; the buffers are taken out (no copy) so the policy
    // can be told about each result meanwhile.
    let rbuf = std::mem::take(&mut c.rbuf);
    let mut fds = std::mem::take(&mut c.fds);
    let now = Instant::now();
    let mut results = false;
    let mut pos = 0;
    while let Some(f) = frame::next(&rbuf, &mut pos) {
        match f.kind {
            frame::STARTED => policy.ready(wi),
            frame::INIT_FAILED => shared.set_broken(format!(
                "A process in the process pool was terminated abruptly while the future was running or pending: its initializer failed\n{}",
                String::from_utf8_lossy(f.body)
            )),
            frame::RESULT | frame::ERROR => {
                let Some((id, body)) = f.task() else { continue };
                let Some(task) = policy.result(wi, id, now) else { continue };
                let pid = policy.io(wi).child.id();
                if let Some(h) = policy.take_promoted(wi) {
                    host.runs_in(h, pid);
                    host.promoted(h);
                }
                results = true;
                let reply = Reply { is_error: f.kind == frame::ERROR, body, fds: &mut fds };
                if let Some(segment) = host.result(task.handle, reply, done) {
                    policy.io_mut(wi).reported.insert(segment);
                }
            }
            frame::SKIPPED => {
                if let Some((id, _)) = f.task() {
                    policy.skipped(wi, id);
                }
            }
            _ => {}
        }
    }
    if results {
        // The time these results took, from when the first of them could
        // start (sent, or the previous results read) until now.
        policy.end_read(wi, Instant::now());
    }
    let c = policy.io_mut(wi);
    c.rbuf = rbuf;
    c.rbuf.drain(..pos);
    c.fds = fds;
    dead
}
