//! A one-shot future: the state machine of `concurrent.futures.Future`.
//!
//! ```text
//! PENDING ──set_running_or_notify_cancel──▶ RUNNING ──set_result/exception──▶ FINISHED
//!    │                                                                          ▲
//!    ├──────────────────────────── set_result/exception (never ran) ────────────┘
//!    └─cancel─▶ CANCELLED ──set_running_or_notify_cancel──▶ CANCELLED_AND_NOTIFIED
//! ```
//!
//! Generic over the outcome payload `R` and the done-callback `C`; the
//! binding stores Python objects. Transitions happen under a short mutex
//! that never runs user code: each transition hands back the callbacks to
//! run, and the caller runs them after the mutex is released. Threads
//! waiting for completion park on an owned [`WaitList`].

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::spin::SpinMutex as Mutex;

use crate::park::{remove_node, Node, Outcome, WaitCtx, WaitList};

/// The five states of `concurrent.futures`, in its spelling order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Pending = 0,
    Running = 1,
    Cancelled = 2,
    CancelledAndNotified = 3,
    Finished = 4,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Pending,
            1 => State::Running,
            2 => State::Cancelled,
            3 => State::CancelledAndNotified,
            _ => State::Finished,
        }
    }

    /// Cancelled, notified or not.
    pub fn is_cancelled(self) -> bool {
        matches!(self, State::Cancelled | State::CancelledAndNotified)
    }

    /// Finished or cancelled: nothing will change any more.
    pub fn is_done(self) -> bool {
        matches!(self, State::Cancelled | State::CancelledAndNotified | State::Finished)
    }

    /// The name `concurrent.futures` uses for this state.
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Running => "RUNNING",
            State::Cancelled => "CANCELLED",
            State::CancelledAndNotified => "CANCELLED_AND_NOTIFIED",
            State::Finished => "FINISHED",
        }
    }
}

/// How a future finished.
#[derive(Debug)]
pub enum Resolution<R> {
    Value(R),
    Error(R),
}

#[derive(Debug)]
struct Inner<R, C> {
    resolution: Option<Resolution<R>>,
    callbacks: Vec<C>,
}

/// A transition that is not allowed in the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidState(pub State);

/// A one-shot future: its state, outcome, done-callbacks and the threads
/// waiting for it (see the module doc).
#[derive(Debug)]
pub struct Future<R, C> {
    state: AtomicU8,
    inner: Mutex<Inner<R, C>>,
    waiters: WaitList,
    /// For `plait.debug`: the thread that runs it (set when it starts
    /// running), or the pid of the worker process that does.
    runner: AtomicU64,
    worker: AtomicU32,
    running_since: AtomicU64,
    pub probe: crate::debug::Probe,
}

impl<R: Send + 'static, C: Send + 'static> Default for Future<R, C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Send + 'static, C: Send + 'static> Future<R, C> {
    /// A PENDING future.
    pub fn new() -> Self {
        Future {
            state: AtomicU8::new(State::Pending as u8),
            inner: Mutex::new(Inner { resolution: None, callbacks: Vec::new() }),
            waiters: WaitList::new(),
            runner: AtomicU64::new(0),
            worker: AtomicU32::new(0),
            running_since: AtomicU64::new(0),
            probe: crate::debug::Probe::new(),
        }
    }

    /// The calling thread starts running it (for `plait.debug`).
    fn runs_here(&self) {
        self.runner.store(crate::thread::ident(), Ordering::Relaxed);
        self.running_since.store(crate::debug::coarse_ns(), Ordering::Relaxed);
    }

    /// A worker process `pid` runs it (for `plait.debug`); 0 forgets it.
    pub fn set_worker(&self, pid: u32) {
        self.runner.store(0, Ordering::Relaxed);
        self.worker.store(pid, Ordering::Relaxed);
        if self.running_since.load(Ordering::Relaxed) == 0 {
            self.running_since.store(crate::debug::coarse_ns(), Ordering::Relaxed);
        }
    }

    /// What runs it now, as `plait.debug` shows it.
    pub fn runs_on(&self) -> crate::debug::RunsOn {
        if self.state() != State::Running {
            return crate::debug::RunsOn::Nothing;
        }
        match (self.runner.load(Ordering::Relaxed), self.worker.load(Ordering::Relaxed)) {
            (_, pid) if pid != 0 => crate::debug::RunsOn::Worker(pid),
            (0, _) => crate::debug::RunsOn::Nothing,
            (t, _) => crate::debug::RunsOn::Thread(t),
        }
    }

    #[inline]
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// Force a state without notifying anyone (tests and tools that build
    /// futures in a given state, as CPython's test utilities do).
    pub fn force_state(&self, s: State) {
        let _g = self.inner.lock();
        self.set_state(s);
    }

    /// PENDING → RUNNING (`true`); CANCELLED → CANCELLED_AND_NOTIFIED
    /// (`false`); any other state is an error.
    pub fn set_running_or_notify_cancel(&self) -> Result<bool, InvalidState> {
        let _g = self.inner.lock();
        match self.state() {
            State::Pending => {
                self.runs_here();
                self.set_state(State::Running);
                Ok(true)
            }
            State::Cancelled => {
                self.set_state(State::CancelledAndNotified);
                Ok(false)
            }
            other => Err(InvalidState(other)),
        }
    }

    /// PENDING → RUNNING without a word to anyone (a process pool learns
    /// that a prefetched task started); `false` in any other state.
    pub fn start_if_pending(&self) -> bool {
        let _g = self.inner.lock();
        if self.state() == State::Pending {
            self.set_state(State::Running);
            return true;
        }
        false
    }

    /// Cancel if not yet running. Returns whether the future is cancelled
    /// and, when this call cancelled it, the callbacks to run.
    pub fn cancel(&self) -> (bool, Vec<C>) {
        let mut g = self.inner.lock();
        match self.state() {
            State::Running | State::Finished => (false, Vec::new()),
            State::Cancelled | State::CancelledAndNotified => (true, Vec::new()),
            State::Pending => {
                self.set_state(State::Cancelled);
                let cbs = std::mem::take(&mut g.callbacks);
                drop(g);
                self.waiters.notify_all();
                (true, cbs)
            }
        }
    }

    /// Cancel even a running future (its worker is being killed): the
    /// state goes straight to CANCELLED_AND_NOTIFIED. Returns whether this
    /// call did it, and the callbacks to run.
    pub fn force_cancel(&self) -> (bool, Vec<C>) {
        let mut g = self.inner.lock();
        if self.state().is_done() {
            return (false, Vec::new());
        }
        self.set_state(State::CancelledAndNotified);
        let cbs = std::mem::take(&mut g.callbacks);
        drop(g);
        self.waiters.notify_all();
        (true, cbs)
    }

    /// Finish without storing a resolution: the caller keeps the outcome
    /// elsewhere (e.g. still-pickled bytes, decoded on first use). Returns
    /// the callbacks to run.
    pub fn finish_unresolved(&self) -> Result<Vec<C>, InvalidState> {
        let mut g = self.inner.lock();
        let s = self.state();
        if s.is_done() {
            return Err(InvalidState(s));
        }
        self.set_state(State::Finished);
        let cbs = std::mem::take(&mut g.callbacks);
        drop(g);
        self.waiters.notify_all();
        Ok(cbs)
    }

    /// Finish with `r`; returns the callbacks to run, or the payload back
    /// when the future is already done.
    pub fn resolve(&self, r: Resolution<R>) -> Result<Vec<C>, (Resolution<R>, InvalidState)> {
        let mut g = self.inner.lock();
        let s = self.state();
        if s.is_done() {
            return Err((r, InvalidState(s)));
        }
        g.resolution = Some(r);
        self.set_state(State::Finished);
        let cbs = std::mem::take(&mut g.callbacks);
        drop(g);
        self.waiters.notify_all();
        Ok(cbs)
    }

    /// Add a callback; if the future is already done it is handed back for
    /// the caller to run at once.
    pub fn add_done_callback(&self, c: C) -> Option<C> {
        let mut g = self.inner.lock();
        if self.state().is_done() {
            return Some(c);
        }
        g.callbacks.push(c);
        None
    }

    /// Look at the resolution (under the mutex: `f` must not block or run
    /// user code).
    pub fn with_resolution<T>(&self, f: impl FnOnce(Option<&Resolution<R>>) -> T) -> T {
        f(self.inner.lock().resolution.as_ref())
    }

    /// Replace the resolution without changing the state or notifying (the
    /// `_result` / `_exception` attributes CPython's tests assign).
    pub fn set_resolution_raw(&self, r: Option<Resolution<R>>) -> Option<Resolution<R>> {
        std::mem::replace(&mut self.inner.lock().resolution, r)
    }

    /// Store `r` unless a resolution is already there; gives `r` back if so
    /// (the caller drops it outside the mutex).
    pub fn set_resolution_if_absent(&self, r: Resolution<R>) -> Option<Resolution<R>> {
        let mut g = self.inner.lock();
        if g.resolution.is_some() {
            return Some(r);
        }
        g.resolution = Some(r);
        None
    }

    /// Look at the pending callbacks (`_done_callbacks`; under the mutex:
    /// `f` must not block or run user code).
    pub fn with_callbacks<T>(&self, f: impl FnOnce(&[C]) -> T) -> T {
        f(&self.inner.lock().callbacks)
    }

    /// Park until done (call detached). `Notified` means done.
    pub fn wait(&self, ctx: &WaitCtx<'_>) -> Outcome {
        if self.state().is_done() {
            return Outcome::Notified;
        }
        let Ok(_guard) = crate::debug::begin_wait(self, ctx) else { return Outcome::Interrupted };
        let node = Node::new();
        {
            let mut q = self.waiters.lock();
            // Transitions store the state before notifying under the list
            // lock, so checking again here cannot miss one.
            if self.state().is_done() {
                return Outcome::Notified;
            }
            q.push_back(Arc::clone(&node));
        }
        match node.park(ctx) {
            Outcome::Notified => Outcome::Notified,
            give_up => {
                let mut q = self.waiters.lock();
                remove_node(&mut q, &node);
                if self.state().is_done() {
                    Outcome::Notified
                } else {
                    give_up
                }
            }
        }
    }

    /// Idents of the threads waiting for this future.
    pub fn waiters(&self) -> Vec<u64> {
        self.waiters.idents()
    }

    /// # Safety
    /// Only from the atfork child handler.
    pub unsafe fn after_fork(&self) {
        // SAFETY: forwarded from the caller's guarantee.
        unsafe { self.waiters.reset_after_fork() };
        if self.inner.is_locked() {
            // SAFETY: single-threaded child; the holder vanished.
            unsafe { self.inner.force_unlock() };
        }
    }
}

impl<R: Send + Sync + 'static, C: Send + Sync + 'static> crate::fork::AfterFork for Future<R, C> {
    unsafe fn after_fork_child(&self, _survivor: u64) {
        // SAFETY: forwarded: called from the child handler only.
        unsafe { self.after_fork() }
    }
    fn inspect(&self) -> Option<&dyn crate::debug::Inspect> {
        Some(self)
    }
}

impl<R: Send + 'static, C: Send + 'static> crate::debug::Inspect for Future<R, C> {
    fn kind(&self) -> crate::debug::Kind {
        crate::debug::Kind::Future
    }
    fn probe(&self) -> &crate::debug::Probe {
        &self.probe
    }
    /// The thread running it: it, and only it, will finish the future.
    fn holders(&self, out: &mut Vec<crate::debug::Holder>) {
        if let crate::debug::RunsOn::Thread(t) = self.runs_on() {
            let since_ns = self.running_since.load(Ordering::Relaxed);
            out.push(crate::debug::Holder { ident: t, since_ns, count: 1 });
        }
    }
    fn waiters(&self, out: &mut Vec<crate::debug::Waiter>) {
        self.waiters.waiters_into(out);
    }
    fn future(&self) -> Option<(&'static str, crate::debug::RunsOn)> {
        Some((self.state().name(), self.runs_on()))
    }
}
