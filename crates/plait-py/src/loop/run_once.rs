//! One iteration of the loop (`_run_once`): poll for I/O (paced, see
//! below), move due timers to the ready queue, run the batch that was
//! ready at the start of the iteration. Also the timer heap's upkeep
//! (dropping cancelled timers, asyncio's rule) and the timeout of the poll.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;

use plait_core::reactor::ready::Batch;
use plait_core::reactor::{monotonic, Pace, TimerHeap, READ, WRITE};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

use super::core::{LoopCore, Ready};
use super::handle::{handle_for, Handle};
use super::{helper, Obj};

static HANDLE_TYPE: PyOnceLock<Obj> = PyOnceLock::new();

/// What `run_forever`'s iterations reuse, so that an iteration allocates
/// nothing: the previous (empty) batch and event list.
pub(super) struct Scratch {
    spare: Batch<Ready>,
    events: Vec<(RawFd, u32, Obj)>,
    /// When I/O was last polled, and whether that poll found any.
    last_poll: u64,
    pace: Pace,
    busy_io: bool,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch { spare: Batch::new(), events: Vec::new(), last_poll: Pace::now(), pace: Pace::new(POLL_EVERY), busy_io: true }
    }
}

/// With callbacks ready, I/O is polled at most this often (see `run_once`).
const POLL_EVERY: std::time::Duration = std::time::Duration::from_micros(100);

/// Fewer cancelled timers than this are left in the heap until they come due.
const MIN_SCHEDULED_TIMER_HANDLES: usize = 100;

impl LoopCore {
    /// Drop cancelled timers if they are many (asyncio's rule), and the
    /// cancelled ones at the head of the heap in any case.
    fn prune_timers(&self, py: Python<'_>) -> PyResult<()> {
        let mut dropped: Vec<Obj> = Vec::new();
        {
            let mut st = self.st.lock();
            let n = st.timers.len();
            let cancelled = self.timer_cancelled.load(Ordering::Relaxed);
            if n > MIN_SCHEDULED_TIMER_HANDLES && cancelled * 2 > n {
                let all = st.timers.drain();
                let mut keep = TimerHeap::new();
                for h in all {
                    let b = h.bind(py);
                    let when = timer_when(b)?;
                    if Self::is_cancelled(b)? {
                        Self::set_scheduled(b, false)?;
                        dropped.push(h);
                    } else {
                        keep.push(when, h);
                    }
                }
                st.timers = keep;
                self.timer_cancelled.store(0, Ordering::Relaxed);
            } else {
                while let Some(h) = st.timers.peek() {
                    let b = h.bind(py);
                    if !Self::is_cancelled(b)? {
                        break;
                    }
                    let (_, h) = st.timers.pop().expect("peeked");
                    Self::set_scheduled(h.bind(py), false)?;
                    let _ = self.timer_cancelled.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
                    dropped.push(h);
                }
            }
        }
        drop(dropped);
        Ok(())
    }

    /// 3.13's asyncio fails (ValueError, from `run_forever`) when it would
    /// wait with a timer whose `when` is NaN at the head of its heap: its
    /// poll timeout is NaN. So does this loop, at the same point: nothing
    /// ready, not stopping, such a timer at the head (the heap is heapq's,
    /// see `TimerHeap`). Up to 3.12 asyncio polls without waiting and then
    /// runs it, and so does this loop.
    fn check_nan_head(&self, py: Python<'_>) -> PyResult<()> {
        static FROM_313: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if !*FROM_313.get_or_init(|| py.version_info() >= (3, 13)) || self.stopping.load(Ordering::Acquire) {
            return Ok(());
        }
        let head = {
            let st = self.st.lock();
            if !st.timers.next_when().is_some_and(f64::is_nan) || !st.ready.is_empty() {
                return Ok(());
            }
            st.timers.peek().map(|h| h.clone_ref(py))
        };
        let Some(head) = head else { return Ok(()) };
        let b = head.bind(py);
        if timer_when(b)?.is_nan() && !Self::is_cancelled(b)? {
            return Err(pyo3::exceptions::PyValueError::new_err("cannot convert float NaN to integer"));
        }
        Ok(())
    }

    fn timeout_ms(&self, now: f64) -> i32 {
        let st = self.st.lock();
        if !st.ready.is_empty() || self.stopping.load(Ordering::Acquire) {
            return 0;
        }
        match st.timers.next_when() {
            None => -1,
            // A NaN deadline at the head: poll without waiting, as asyncio
            // (up to 3.12) does; it is due (see `check_nan_head` for 3.13).
            Some(when) if when.is_nan() => 0,
            Some(when) => {
                let t = (when - now).clamp(0.0, 24.0 * 3600.0);
                (t * 1e3).ceil() as i32
            }
        }
    }

    /// One iteration: poll for I/O, move due timers to the ready queue,
    /// run what was ready at the start of the iteration.
    pub(super) fn run_once(slf: &Bound<'_, Self>, scratch: &mut Scratch) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        let (has_timers, ms) = {
            let st = core.st.lock();
            (!st.timers.is_empty(), if st.ready.is_empty() { None } else { Some(0) })
        };
        if has_timers && core.timer_cancelled.load(Ordering::Relaxed) > 0 {
            core.prune_timers(py)?;
        }
        let mut ms = match ms {
            Some(z) => z,
            None if !has_timers && !core.stopping.load(Ordering::Acquire) => -1,
            None => {
                core.check_nan_head(py)?;
                core.timeout_ms(Self::now(slf)?)
            }
        };
        let sel = core.selector.get().ok_or_else(|| PyRuntimeError::new_err("the loop has no selector"))?;
        if ms != 0 && crate::wait::is_main_thread() {
            // Ctrl-C reaches a main thread blocked here within this bound,
            // even if the kernel delivered SIGINT to another thread.
            ms = if ms < 0 { 50 } else { ms.min(50) };
        }
        // Like asyncio's, every iteration polls I/O while anything besides
        // the loop's self-pipe is registered: programs (and their tests)
        // count on data from a socket being seen within an iteration or
        // two. With only the self-pipe (signals, wake-ups) and callbacks
        // ready, the loop polls at most every POLL_EVERY: each poll is a
        // system call, which a loop running back-to-back callbacks would
        // otherwise pay per iteration. It always polls before it would
        // block, and right after a poll that found something.
        let mut events = std::mem::take(&mut scratch.events);
        let now = Pace::now();
        let watched = sel.get().count.load(Ordering::Relaxed) > core.own_fds.load(Ordering::Relaxed);
        let skip = ms == 0 && !watched && !scratch.busy_io && !scratch.pace.passed(scratch.last_poll, now);
        if !skip {
            sel.get().poll_into(py, ms, &mut events)?;
            scratch.last_poll = if ms == 0 { now } else { Pace::now() };
            scratch.busy_io = !events.is_empty();
            if events.is_empty() {
                py.check_signals()?;
            }
        }
        for (fd, mask, data) in events.drain(..) {
            let data = data.bind(py);
            let Ok(pair) = data.cast::<PyTuple>() else { continue };
            if pair.len() != 2 {
                continue;
            }
            for (bit, idx, remove) in [(READ, 0usize, "_remove_reader"), (WRITE, 1usize, "_remove_writer")] {
                if mask & bit == 0 {
                    continue;
                }
                let h = pair.get_item(idx)?;
                if h.is_none() {
                    continue;
                }
                if Self::is_cancelled(&h)? {
                    slf.call_method1(remove, (fd,))?;
                } else {
                    core.push_ready(h.unbind());
                }
            }
        }
        // Timers due now (within the clock's resolution).
        let end = if has_timers { Self::now(slf)? + f64::from_bits(core.clock_resolution.load(Ordering::Relaxed)) } else { f64::NEG_INFINITY };
        loop {
            let due = core.st.lock().timers.pop_due(end);
            let Some((_, h)) = due else { break };
            let b = h.bind(py);
            Self::set_scheduled(b, false)?;
            if Self::is_cancelled(b)? {
                let _ = core.timer_cancelled.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
                continue;
            }
            core.push_ready(h);
        }
        // Run what is ready now; what these callbacks schedule waits for
        // the next iteration.
        scratch.events = events;
        let mut batch = core.st.lock().ready.take_batch(std::mem::take(&mut scratch.spare));
        let debug = core.debug.load(Ordering::Relaxed);
        let handle_type = HANDLE_TYPE.get_or_init(py, || py.get_type::<Handle>().into_any().unbind());
        while let Some(item) = batch.pop_front() {
            let t0 = if debug { monotonic() } else { 0.0 };
            let r = match &item {
                Ready::Soon(e) => e.run(py, || handle_for(py, e)),
                Ready::Obj(h) => {
                    let b = h.bind(py);
                    if b.get_type().is(handle_type.bind(py)) || b.is_instance_of::<Handle>() {
                        Handle::run(b.cast::<Handle>().expect("checked"))
                    } else if b.getattr(pyo3::intern!(py, "_cancelled"))?.is_truthy()? {
                        Ok(())
                    } else {
                        b.call_method0(pyo3::intern!(py, "_run")).map(drop)
                    }
                }
            };
            if let Err(e) = r {
                // Not run yet: back to the front, in order.
                core.st.lock().ready.requeue_front(&mut batch);
                return Err(e);
            }
            if debug {
                let dt = monotonic() - t0;
                let h = match &item {
                    Ready::Soon(e) => handle_for(py, e)?,
                    Ready::Obj(h) => h.bind(py).clone(),
                };
                helper(py, "check_slow_callback")?.call1((slf, h, dt))?;
            }
        }
        scratch.spare = batch;
        Ok(())
    }
}

fn timer_when(h: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(n) = h.cast::<Handle>() {
        return Ok(n.get().when);
    }
    h.getattr(pyo3::intern!(h.py(), "_when"))?.extract()
}
