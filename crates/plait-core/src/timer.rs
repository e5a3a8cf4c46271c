//! Timers: one thread serves every pending timer.
//!
//! `threading.Timer` spends a whole thread on each timer, and the thread
//! sleeps for almost all of its life. Here every timer is an entry in one
//! deadline-ordered map, served by one lazily started thread:
//!
//! * [`TimerQueue`] is the map: a `BTreeMap` keyed by `(deadline, seq)`.
//!   An ordered map rather than a binary heap because a cancelled timer
//!   must leave at once: `remove(key)` is O(log n) and drops the entry and
//!   its payload there and then, where a heap would keep a tombstone until
//!   the deadline (100,000 cancelled one-hour timers would stay allocated
//!   for an hour). `seq` keeps timers with equal deadlines in start order.
//! * [`TimerCell`] is one timer's state (new → scheduled → running → done)
//!   plus a `done` [`Event`] that `join` waits on. It knows its key while
//!   scheduled, so cancelling finds the entry without searching.
//! * [`TimerThread`] owns the queue under a mutex and the thread. The thread
//!   parks until the earliest deadline (or until a timer with an earlier
//!   deadline is scheduled and unparks it), pops the due entry and
//!   runs the `fire` function on it **with the mutex released**, one entry
//!   at a time: a slow callback delays every later timer. That is the price
//!   of not having a thread per timer.
//!
//! The payload `T` is opaque (the Python binding stores the `Timer` object).
//! The service never drops a payload while holding its mutex: payloads leave
//! through `fire`, or are returned by [`TimerThread::cancel`] and
//! [`TimerThread::close`] for the caller to drop (the binding must be
//! attached to the interpreter to drop a Python object, and must never run
//! Python code under a lock another thread could be waiting on).
//!
//! Entries carry a `keep_alive` flag (a non-daemon timer):
//! [`TimerThread::wait_keep_alive`] waits until no such entry is queued or
//! running, which the binding does at interpreter exit.
//!
//! **Fork.** The service registers a prepare handler that holds its mutex
//! across `fork()`, so the child's queue is never torn. In the child the
//! thread does not exist: a callback that was running is abandoned (its
//! timer is marked done, as CPython marks a vanished thread stopped), and
//! the pending entries are kept. The thread is started again lazily by the
//! next [`schedule`](TimerThread::schedule) or by [`resume`](TimerThread::resume).

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use std::thread::Thread;

use lock_api::MutexGuard;

use crate::fork::{self, ForkPrepare};
use crate::park::{Outcome, WaitCtx};
use crate::spin::{RawSpin, SpinMutex};
use crate::sync::{CondVar, Event};
use crate::thread::ident;

/// Where an entry sits in a [`TimerQueue`]: its deadline, then its start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub deadline: Instant,
    seq: u64,
}

/// Pending entries in deadline order (ties in insertion order).
#[derive(Debug)]
pub struct TimerQueue<T> {
    map: BTreeMap<Key, T>,
    next_seq: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerQueue<T> {
    pub const fn new() -> Self {
        TimerQueue { map: BTreeMap::new(), next_seq: 0 }
    }

    /// Add `value` due at `deadline`; the key removes it again.
    pub fn insert(&mut self, deadline: Instant, value: T) -> Key {
        let key = Key { deadline, seq: self.next_seq };
        self.next_seq += 1;
        self.map.insert(key, value);
        key
    }

    /// Remove the entry under `key`, returning its value (`None` if it
    /// already left). Its memory is released here, not at its deadline.
    pub fn remove(&mut self, key: &Key) -> Option<T> {
        self.map.remove(key)
    }

    /// The earliest deadline, if any entry is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.map.first_key_value().map(|(k, _)| k.deadline)
    }

    /// Remove and return the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Key, T)> {
        match self.map.first_key_value() {
            Some((k, _)) if k.deadline <= now => self.map.pop_first(),
            _ => None,
        }
    }

    /// Remove every entry, earliest first.
    pub fn drain(&mut self) -> Vec<(Key, T)> {
        std::mem::take(&mut self.map).into_iter().collect()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

// ---- one timer's state ------------------------------------------------------

const NEW: u8 = 0;
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;

/// Where a timer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerState {
    /// Not started.
    New,
    /// Started, waiting in the queue for its deadline.
    Scheduled,
    /// Its callback is running on the timer thread.
    Running,
    /// Fired, cancelled while queued, or abandoned by a fork.
    Done,
}

/// One timer: its state, its key while queued, and the event `join` waits on.
#[derive(Debug)]
pub struct TimerCell {
    state: AtomicU8,
    /// The queue key while `Scheduled`; read and written only under the
    /// owning [`TimerThread`]'s mutex.
    key: SpinMutex<Option<Key>>,
    done: Event,
}

impl Default for TimerCell {
    fn default() -> Self {
        Self::new()
    }
}

impl TimerCell {
    pub const fn new() -> Self {
        TimerCell { state: AtomicU8::new(NEW), key: SpinMutex::const_new(<RawSpin as lock_api::RawMutex>::INIT, None), done: Event::new() }
    }

    pub fn state(&self) -> TimerState {
        match self.state.load(Ordering::Acquire) {
            NEW => TimerState::New,
            SCHEDULED => TimerState::Scheduled,
            RUNNING => TimerState::Running,
            _ => TimerState::Done,
        }
    }

    /// Claim the start of this timer: `false` if it was started before.
    pub fn try_start(&self) -> bool {
        self.state.compare_exchange(NEW, SCHEDULED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Mark a timer done without ever queueing it (started after a cancel).
    pub fn finish(&self) {
        self.state.store(DONE, Ordering::Release);
        self.done.set();
    }

    pub fn is_done(&self) -> bool {
        self.done.is_set()
    }

    /// Wait until the timer is done (its callback returned, or it was
    /// cancelled while queued), within `ctx`.
    pub fn wait_done(&self, ctx: &WaitCtx<'_>) -> Outcome {
        self.done.wait(ctx)
    }

    /// Repair the `done` event's wait list in a forked child.
    ///
    /// # Safety
    /// Only from the child's fork handler, while the child is single-threaded.
    pub unsafe fn after_fork(&self) {
        if self.key.is_locked() {
            // SAFETY: only the timer service takes this mutex, under its own
            // mutex, which its prepare handler held across the fork: nobody
            // held this one at the fork. Unlocking is a no-op safeguard.
            unsafe { self.key.force_unlock() };
        }
        // SAFETY: forwarded from the caller's guarantee.
        unsafe { self.done.after_fork() };
    }
}

// ---- the service --------------------------------------------------------------

struct Entry<T> {
    cell: Arc<TimerCell>,
    keep_alive: bool,
    payload: T,
}

struct State<T> {
    queue: TimerQueue<Entry<T>>,
    /// Fork generation in which the thread was started; `None`: no thread.
    thread: Option<u64>,
    /// The timer thread, to unpark when an earlier deadline arrives.
    sleeper: Option<Thread>,
    /// The entry whose callback is running, and whether it keeps us alive.
    in_flight: Option<(Arc<TimerCell>, bool)>,
    /// Queued plus running entries with `keep_alive`.
    keep_alive: usize,
    closed: bool,
}

/// Why [`TimerThread::schedule`] refused a timer; the payload comes back.
#[derive(Debug)]
pub enum ScheduleError<T> {
    /// [`TimerThread::close`] was called (interpreter shutdown).
    Closed(T),
    /// The cell was started before.
    AlreadyStarted(T),
    /// The timer thread could not be started.
    Spawn(io::Error, T),
}

/// How long the timer thread waits with nothing scheduled before it ends.
const IDLE_EXIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs due payloads on one shared thread. See the module docs.
///
/// Nothing here parks in `parking_lot`'s global table, which a forked child
/// inherits with entries for threads that no longer exist: the state lock
/// is a [`SpinMutex`] held for a few map operations at a time, the timer
/// thread sleeps in `std::thread::park_timeout`, and waiters for idleness
/// queue on a [`CondVar`] (std park/unpark), which the child resets.
pub struct TimerThread<T: Send + 'static> {
    state: SpinMutex<State<T>>,
    /// `wait_keep_alive`/`wait_idle` callers sleep here.
    idle: CondVar,
    fire: Box<dyn Fn(T) + Send + Sync>,
    name: String,
    /// `thread::ident()` of the current timer thread (0: none yet).
    thread_ident: AtomicU64,
}

impl<T: Send + 'static> TimerThread<T> {
    /// A service for the life of the process: leaked, and registered so
    /// that `fork()` never tears its queue. `fire` runs each due payload on
    /// the timer thread; it owns the payload.
    pub fn new_static(name: &str, fire: impl Fn(T) + Send + Sync + 'static) -> &'static Self {
        let svc: &'static Self = Box::leak(Box::new(TimerThread {
            state: SpinMutex::new(State {
                queue: TimerQueue::new(),
                thread: None,
                sleeper: None,
                in_flight: None,
                keep_alive: 0,
                closed: false,
            }),
            idle: CondVar::new(),
            fire: Box::new(fire),
            name: name.to_owned(),
            thread_ident: AtomicU64::new(0),
        }));
        fork::register_prepared(svc);
        svc
    }

    /// Queue `cell`'s payload to fire at `deadline`. `keep_alive` marks a
    /// timer that [`wait_keep_alive`](Self::wait_keep_alive) waits for.
    pub fn schedule(
        &'static self,
        cell: &Arc<TimerCell>,
        deadline: Instant,
        keep_alive: bool,
        payload: T,
    ) -> Result<(), ScheduleError<T>> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(ScheduleError::Closed(payload));
        }
        if let Err(e) = self.ensure_thread(&mut st) {
            return Err(ScheduleError::Spawn(e, payload));
        }
        if !cell.try_start() {
            return Err(ScheduleError::AlreadyStarted(payload));
        }
        let earliest = match st.queue.next_deadline() {
            Some(d) => deadline < d,
            None => true,
        };
        let key = st.queue.insert(deadline, Entry { cell: Arc::clone(cell), keep_alive, payload });
        *cell.key.lock() = Some(key);
        if keep_alive {
            st.keep_alive += 1;
        }
        let sleeper = if earliest { st.sleeper.clone() } else { None };
        drop(st);
        if let Some(t) = sleeper {
            t.unpark();
        }
        Ok(())
    }

    /// Take `cell`'s entry out of the queue if it is still there: the timer
    /// is then done, and its payload is returned for the caller to drop.
    /// `None` if it is not queued (not started, running, or done).
    pub fn cancel(&self, cell: &TimerCell) -> Option<T> {
        if cell.state() != TimerState::Scheduled {
            return None;
        }
        let mut st = self.state.lock();
        let key = cell.key.lock().take()?;
        let entry = st.queue.remove(&key)?;
        let idle = entry.keep_alive && {
            st.keep_alive -= 1;
            st.keep_alive == 0
        };
        cell.finish();
        // The last pending timer went: wake the thread, which sleeps until
        // that timer's deadline, so that it can end once idle.
        let sleeper = if st.queue.is_empty() { st.sleeper.clone() } else { None };
        drop(st);
        if let Some(t) = sleeper {
            t.unpark();
        }
        if idle {
            self.idle.notify_all();
        }
        let Entry { cell: queued, payload, .. } = entry;
        drop(queued);
        Some(payload)
    }

    /// Start the thread if pending entries have none (after a fork).
    pub fn resume(&'static self) -> io::Result<()> {
        let mut st = self.state.lock();
        if st.closed || (st.queue.is_empty() && st.in_flight.is_none()) {
            return Ok(());
        }
        self.ensure_thread(&mut st)
    }

    /// Whether a timer thread is running (it ends when idle for a while).
    pub fn has_thread(&self) -> bool {
        self.state.lock().thread.is_some()
    }

    /// Whether the calling thread is the timer thread.
    pub fn is_timer_thread(&self) -> bool {
        let me = ident();
        me != 0 && self.thread_ident.load(Ordering::Acquire) == me
    }

    /// How many entries are queued.
    pub fn pending(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// How many `keep_alive` entries are queued or running.
    pub fn keep_alive_pending(&self) -> usize {
        self.state.lock().keep_alive
    }

    /// Wait until no `keep_alive` entry is queued or running.
    pub fn wait_keep_alive(&self, ctx: &WaitCtx<'_>) -> Outcome {
        self.wait_for(ctx, |st| st.keep_alive == 0)
    }

    /// Wait until no callback is running.
    pub fn wait_idle(&self, ctx: &WaitCtx<'_>) -> Outcome {
        self.wait_for(ctx, |st| st.in_flight.is_none())
    }

    /// Refuse new timers and take out every queued one (each is marked
    /// done); the thread exits once no callback runs. The payloads are
    /// returned for the caller to drop.
    pub fn close(&self) -> Vec<T> {
        let mut st = self.state.lock();
        st.closed = true;
        let drained = st.queue.drain();
        st.keep_alive = usize::from(matches!(st.in_flight, Some((_, true))));
        let mut payloads = Vec::with_capacity(drained.len());
        for (_, entry) in drained {
            *entry.cell.key.lock() = None;
            entry.cell.finish();
            payloads.push(entry.payload);
        }
        let sleeper = st.sleeper.clone();
        drop(st);
        if let Some(t) = sleeper {
            t.unpark();
        }
        self.idle.notify_all();
        payloads
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Wait until `done(state)`. Waiters enqueue under the state lock and
    /// every change that can make `done` true notifies after it, so no
    /// wakeup is lost. The interrupt check (which may run Python code, e.g.
    /// a signal handler that cancels a timer) runs with no lock held.
    fn wait_for(&self, ctx: &WaitCtx<'_>, done: impl Fn(&State<T>) -> bool) -> Outcome {
        loop {
            let node = {
                let st = self.state.lock();
                if done(&st) {
                    return Outcome::Notified;
                }
                self.idle.enqueue()
            };
            match self.idle.wait(&node, ctx) {
                Outcome::Notified => continue,
                Outcome::TimedOut => {
                    return if done(&self.state.lock()) { Outcome::Notified } else { Outcome::TimedOut };
                }
                Outcome::Interrupted => return Outcome::Interrupted,
            }
        }
    }

    fn ensure_thread(&'static self, st: &mut State<T>) -> io::Result<()> {
        // (A thread that decided to exit cleared `thread` under this lock,
        // so a schedule never relies on a thread that is leaving.)
        let generation = fork::generation();
        if st.thread == Some(generation) {
            return Ok(());
        }
        std::thread::Builder::new().name(self.name.clone()).spawn(move || self.run(generation))?;
        st.thread = Some(generation);
        Ok(())
    }

    /// The timer thread.
    fn run(&'static self, generation: u64) {
        self.thread_ident.store(ident(), Ordering::Release);
        let mut st = self.state.lock();
        st.sleeper = Some(std::thread::current());
        let mut idle_since: Option<Instant> = None;
        loop {
            if st.closed || st.thread != Some(generation) {
                return;
            }
            let now = Instant::now();
            if let Some((_, entry)) = st.queue.pop_due(now) {
                let Entry { cell, keep_alive, payload } = entry;
                *cell.key.lock() = None;
                cell.state.store(RUNNING, Ordering::Release);
                st.in_flight = Some((Arc::clone(&cell), keep_alive));
                MutexGuard::unlocked(&mut st, || {
                    // A panicking callback must not take the thread (and
                    // with it every later timer) down.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.fire)(payload)));
                });
                // A fork while the callback ran leaves this thread only in
                // the parent; the child cleared `in_flight` itself.
                st.in_flight = None;
                if keep_alive {
                    st.keep_alive = st.keep_alive.saturating_sub(1);
                }
                cell.finish();
                MutexGuard::unlocked(&mut st, || self.idle.notify_all());
                continue;
            }
            // Sleep unlocked until the earliest deadline; `schedule` unparks
            // us for an earlier one, `close` to exit. Spurious wakeups just
            // go round the loop. With nothing to do for IDLE_EXIT the thread
            // ends (the next `schedule` starts another): a process that used
            // a timer once does not keep a thread for good (a process pool
            // forks its workers only from a process with a single thread).
            let next = st.queue.next_deadline();
            if next.is_none() && st.in_flight.is_none() {
                let since = *idle_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= IDLE_EXIT {
                    st.thread = None;
                    st.sleeper = None;
                    self.thread_ident.store(0, Ordering::Release);
                    return;
                }
            } else {
                idle_since = None;
            }
            MutexGuard::unlocked(&mut st, || match next {
                Some(d) => std::thread::park_timeout(d.saturating_duration_since(Instant::now())),
                None => std::thread::park_timeout(IDLE_EXIT),
            });
        }
    }
}

impl<T: Send + 'static> ForkPrepare for TimerThread<T> {
    fn prepare(&self) {
        // Held across fork() so the child's queue is consistent. Nobody
        // holds this mutex while blocking or running Python code.
        std::mem::forget(self.state.lock());
    }

    /// # Safety
    /// As [`ForkPrepare::parent`]: the atfork parent handler, after `prepare`.
    unsafe fn parent(&self) {
        // SAFETY: `prepare` locked it in this thread and leaked the guard.
        unsafe { self.state.force_unlock() };
    }

    /// # Safety
    /// As [`ForkPrepare::child`]: the atfork child handler, single-threaded.
    unsafe fn child(&self) {
        // SAFETY: as in `parent`: the forking thread, the child's only one,
        // locked it in `prepare`.
        unsafe { self.state.force_unlock() };
        // SAFETY: the child is single-threaded (our caller's guarantee);
        // the waiters queued here belonged to threads that are gone.
        unsafe { self.idle.after_fork() };
        let mut st = self.state.lock();
        // The thread is gone; the next schedule/resume starts a new one.
        st.thread = None;
        st.sleeper = None;
        self.thread_ident.store(0, Ordering::Release);
        if let Some((cell, keep_alive)) = st.in_flight.take() {
            // Its callback ran on a thread that does not exist here.
            if keep_alive {
                st.keep_alive = st.keep_alive.saturating_sub(1);
            }
            cell.finish();
        }
    }
}
