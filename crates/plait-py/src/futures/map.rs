//! `Executor.map`, written once for both executors: `_MapIterator`.
//!
//! The calls are submitted when `map` is called — all of them, or, with
//! `buffersize`, that many ahead of the results consumed (each `__next__`
//! submits one more before it waits). Results come back in input order;
//! each future is cancelled once its result is taken or given up on (as
//! CPython's `_result_or_cancel`), and when iteration fails or the iterator
//! is closed or dropped after it has started, the calls not yet started are
//! cancelled, as CPython's generator does in its `finally`.
//!
//! How a call is submitted is the one thing the executors differ in
//! ([`Submit`]): the thread pool queues it directly in Rust (no Python call
//! per item: this is its hot path), any other executor — the process pool —
//! through its `submit` method. Futures that are plait's are waited for in
//! Rust; any other future through its `result` / `cancel` methods.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyIterator, PyTuple};

use super::future::FutureCore;
use crate::wait::cond_seconds;
use super::label::{self, Label};
use super::thread_pool::ThreadPoolCore;
use super::Obj;

/// How `map` submits one call.
#[derive(Clone, Copy)]
pub(crate) enum Submit {
    /// The executor is a `_ThreadPoolCore`: queue the call in Rust.
    ThreadPool,
    /// Call `executor.submit(func, *args)`.
    Method,
}

impl Submit {
    /// Submit one call; its future gets `label` (that of the `map` call).
    #[inline]
    fn call(
        self,
        executor: &Bound<'_, PyAny>,
        func: &Obj,
        args: Bound<'_, PyTuple>,
        label: Option<&Arc<Label>>,
    ) -> PyResult<Obj> {
        let py = executor.py();
        match self {
            Submit::ThreadPool => {
                let pool = executor.cast::<ThreadPoolCore>()?;
                let f = ThreadPoolCore::submit_impl(pool, func.clone_ref(py), args.unbind(), None, label)?;
                Ok(f.into_any().unbind())
            }
            Submit::Method => {
                let mut call = Vec::with_capacity(args.len() + 1);
                call.push(func.bind(py).clone());
                call.extend(args.iter());
                let submit = || executor.call_method1("submit", PyTuple::new(py, call)?);
                let f = match label {
                    Some(l) => label::submitting_as(l, submit)?,
                    None => submit()?,
                };
                Ok(f.unbind())
            }
        }
    }
}

struct MapState {
    func: Obj,
    how: Submit,
    /// The remaining input when buffered (None: everything was submitted).
    args: Option<Obj>,
    executor_ref: Obj,
    pending: VecDeque<Obj>,
    /// When the map started and its timeout (CPython's `end_time`, kept as
    /// seconds: it may be infinite).
    end: Option<(Instant, f64)>,
    /// Like a generator's `finally`, cancelling on drop happens only once
    /// iteration has begun (an unstarted map still runs every call).
    started: bool,
    /// What `plait.debug` shows of each call's future: the mapped
    /// function and the `map` call site (also for calls submitted later,
    /// from `__next__`). None when tracking is off.
    label: Option<Arc<Label>>,
}

/// The iterator `map` returns: results in input order.
#[pyclass(module = "plait.futures", name = "_MapIterator", frozen)]
pub struct MapIterator {
    state: Mutex<MapState>,
}

/// `future.cancel()`, in Rust for plait's futures.
fn cancel(f: &Bound<'_, PyAny>) -> PyResult<()> {
    match f.cast::<FutureCore>() {
        Ok(fc) => FutureCore::cancel(fc).map(drop),
        Err(_) => f.call_method0("cancel").map(drop),
    }
}

/// `future.result(until end)`, then cancel it (CPython's `_result_or_cancel`):
/// the remaining time is read as `result(timeout)` reads it (a done future
/// never looks at it; infinity raises OverflowError once it must wait).
#[inline]
fn result_or_cancel(py: Python<'_>, f: &Bound<'_, PyAny>, end: Option<(Instant, f64)>) -> PyResult<Obj> {
    let remaining = end.map(|(start, secs)| secs - start.elapsed().as_secs_f64());
    if let Ok(fc) = f.cast::<FutureCore>() {
        let r = match remaining {
            Some(left) if !fc.get().core.state().is_done() => match cond_seconds(left) {
                Ok(t) => fc.get().result_until(py, Some(t.deadline())),
                Err(e) => Err(e),
            },
            _ => fc.get().result_until(py, Some(None)),
        };
        FutureCore::cancel(fc)?;
        return r;
    }
    let r = f.call_method1("result", (remaining,)).map(Bound::unbind);
    f.call_method0("cancel")?;
    r
}

impl MapIterator {
    /// Submit from `args_iter` through `executor` — everything now, or
    /// `buffersize` ahead — and return the iterator of results.
    /// `label_func`: the function named in the futures' labels, if not
    /// `func` (the process pool maps a chunking wrapper of it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        executor: &Bound<'_, PyAny>,
        how: Submit,
        func: Obj,
        args_iter: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        buffersize: Option<usize>,
        executor_ref: Obj,
        label_func: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<MapIterator> {
        let py = executor.py();
        let label =
            plait_core::debug::tracking().then(|| Arc::new(Label::of_call(label_func.unwrap_or(func.bind(py)))));
        let end = timeout.map(|t| (Instant::now(), t));
        let mut pending = VecDeque::new();
        let it = args_iter.try_iter()?;
        let limit = buffersize.unwrap_or(usize::MAX);
        let mut reader = it.clone();
        while pending.len() < limit {
            match reader.next() {
                Some(args) => {
                    pending.push_back(how.call(executor, &func, args?.cast_into::<PyTuple>()?, label.as_ref())?)
                }
                None => break,
            }
        }
        Ok(MapIterator {
            state: Mutex::new(MapState {
                func,
                how,
                args: buffersize.map(|_| it.into_any().unbind()),
                executor_ref,
                pending,
                end,
                started: false,
                label,
            }),
        })
    }

    fn cancel_rest(&self, py: Python<'_>) {
        let rest = std::mem::take(&mut self.state.lock().pending);
        for f in rest {
            let _ = cancel(f.bind(py));
        }
    }
}

impl Drop for MapIterator {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        if !st.started {
            return;
        }
        let rest = std::mem::take(&mut st.pending);
        if !rest.is_empty() {
            Python::attach(|py| {
                for f in rest {
                    let _ = cancel(f.bind(py));
                }
            });
        }
    }
}

#[pymethods]
impl MapIterator {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Stop early: calls not started yet are cancelled (generator.close()).
    fn close(&self, py: Python<'_>) {
        let started = std::mem::replace(&mut self.state.lock().started, true);
        if started {
            self.cancel_rest(py);
        } else {
            // An unstarted generator's close() runs no finally.
            self.state.lock().pending.clear();
        }
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Obj>> {
        // Keep `buffersize` calls in flight: submit the next one first (no
        // lock held while user code — the input iterator — runs).
        let (args, exec_ref, func, how, end, label) = {
            let mut st = self.state.lock();
            st.started = true;
            if st.pending.is_empty() {
                return Ok(None);
            }
            (
                st.args.as_ref().map(|a| a.clone_ref(py)),
                st.executor_ref.clone_ref(py),
                st.func.clone_ref(py),
                st.how,
                st.end,
                st.args.as_ref().and(st.label.clone()),
            )
        };
        if let Some(args) = args {
            let executor = exec_ref.bind(py).call0()?;
            if !executor.is_none() {
                if let Some(next) = args.bind(py).cast::<PyIterator>()?.clone().next() {
                    let f = how.call(&executor, &func, next?.cast_into::<PyTuple>()?, label.as_ref())?;
                    self.state.lock().pending.push_back(f);
                }
            }
        }
        let Some(fut) = self.state.lock().pending.pop_front() else {
            return Ok(None);
        };
        match result_or_cancel(py, fut.bind(py), end) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                self.cancel_rest(py);
                Err(e)
            }
        }
    }
}

/// `Executor.map` for any executor whose `submit` returns futures (the
/// process pool): the same iterator as the thread pool's `_plait_map`.
/// `label_func`: the function `plait.debug` names the calls after, when
/// `func` wraps it (chunks).
#[pyfunction]
#[pyo3(signature = (executor, func, args_iter, timeout, buffersize, executor_ref, *, label_func = None))]
pub fn _executor_map(
    executor: &Bound<'_, PyAny>,
    func: Obj,
    args_iter: &Bound<'_, PyAny>,
    timeout: Option<f64>,
    buffersize: Option<usize>,
    executor_ref: Obj,
    label_func: Option<&Bound<'_, PyAny>>,
) -> PyResult<MapIterator> {
    MapIterator::start(executor, Submit::Method, func, args_iter, timeout, buffersize, executor_ref, label_func)
}
