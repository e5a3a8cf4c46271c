//! `plait.loop`'s Rust half: the asyncio event loop's hot path.
//!
//! `plait.loop.EventLoop` is a subclass of this `_LoopCore` and of
//! asyncio's own `_UnixSelectorEventLoop`: everything asyncio builds from
//! `add_reader`/`call_soon`/`call_at` (transports, servers, happy eyeballs,
//! sendfile, TLS, subprocesses, signals) is asyncio's code, running on this
//! core. The core owns what runs every iteration:
//!
//! * the ready queue and `call_soon` / `call_soon_threadsafe`, with handles
//!   ([`Handle`], [`TimerHandle`]) made and run in Rust;
//! * the timer heap and `call_later` / `call_at`;
//! * the selector ([`Selector`], epoll, with the `selectors.BaseSelector`
//!   API asyncio's code calls), polled detached from the interpreter;
//! * `run_forever`'s iterations (`_run_once`), `stop` and `time`.
//!
//! In debug mode `call_soon`/`call_at` make asyncio's own `Handle` and
//! `TimerHandle` (with their source tracebacks); the queue and the heap
//! take either kind, so debug mode behaves exactly as asyncio's.
//!
//! No Rust lock is held while Python code runs: every structure is locked
//! only to move handles in or out.
//!
//! Files, one idea each:
//!
//! * `call.rs`: what a handle calls (callback, arguments, context) and how
//!   it is kept out of the garbage collector's sight;
//! * `handle.rs`: `Handle` / `TimerHandle` and the entry they stand for;
//! * `selector.rs`: `Selector`, `selectors.BaseSelector`'s API over the
//!   core's epoll poller; `mapping.rs`: its `get_map()`;
//! * `core.rs`: `_LoopCore`, its state and Python methods; `run_once.rs`:
//!   one iteration (poll, due timers, the ready batch); `io.rs`: readers
//!   and writers (`_add_reader` & co.);
//! * `fastcall.rs`: `call_soon`'s hand-written fast entry;
//! * `transport.rs`: the socket transport's native `write`/`_read_ready`.
//!
//! The Python-free parts (epoll, the timer heap, the ready queue, pacing,
//! the clock) are `plait_core::reactor`'s.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

mod call;
mod core;
mod fastcall;
mod handle;
mod io;
mod mapping;
mod run_once;
mod selector;
mod transport;

use self::call::Args;
use self::core::LoopCore;
use self::handle::{Handle, TimerHandle};
use self::mapping::SelectorMapping;
use self::selector::Selector;

/// What the loop's structures hold: Python objects.
type Obj = Py<PyAny>;

/// `plait.loop`'s private helpers (repr, error reports, debug checks).
static HELPERS: PyOnceLock<Obj> = PyOnceLock::new();

fn helper<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let m = HELPERS.get_or_try_init(py, || py.import("plait._loop_helpers").map(|m| m.into_any().unbind()))?;
    m.bind(py).getattr(name)
}

/// Add the loop's classes and functions to the module, and install the
/// fast entries.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Handle>()?;
    m.add_class::<TimerHandle>()?;
    m.add_class::<Selector>()?;
    m.add_class::<SelectorMapping>()?;
    m.add_class::<LoopCore>()?;
    m.add_function(wrap_pyfunction!(transport::_plait_install_transport, m)?)?;
    fastcall::install(m)
}
