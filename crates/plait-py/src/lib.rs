//! `plait._plait`: the PyO3 extension module.
//!
//! Thin bindings over `plait-core`, one file per Python-facing area. The
//! GIL and signal handling live in `wait.rs`, exception mapping in
//! `errors.rs`; the Python package (`python/plait`) re-exports these classes
//! under their public names.
#![deny(unsafe_op_in_unsafe_fn)]

use pyo3::prelude::*;

mod capi;
mod debug;
mod errors;
// The folder is `loop/` (the Python area); `loop` is a Rust keyword.
#[path = "loop/mod.rs"]
mod event_loop;
mod futures;
mod process;
mod queue;
mod release;
mod sync {
    pub mod barrier;
    pub mod condition;
    pub mod event;
    pub mod lock;
    pub mod semaphore;
    pub mod timer;
}
mod wait;

#[pymodule(gil_used = false)]
fn _plait(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    plait_core::fork::install();
    let main_ident: u64 = py.import("threading")?.call_method0("main_thread")?.getattr("ident")?.extract()?;
    plait_core::fork::set_main_thread(main_ident);
    *wait::TIMEOUT_MAX.lock() = py.import("_thread")?.getattr("TIMEOUT_MAX")?.extract()?;

    m.add_class::<sync::lock::Lock>()?;
    m.add_class::<sync::lock::RLock>()?;
    m.add_class::<sync::condition::Condition>()?;
    m.add_class::<sync::semaphore::Semaphore>()?;
    m.add_class::<sync::semaphore::BoundedSemaphore>()?;
    m.add_class::<sync::event::Event>()?;
    m.add_class::<sync::barrier::Barrier>()?;
    m.add_class::<sync::timer::Timer>()?;
    sync::lock::install_fast(m)?;
    m.add_function(wrap_pyfunction!(sync::timer::_timer_atexit, m)?)?;
    m.add_function(wrap_pyfunction!(sync::timer::_timer_after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(sync::timer::_timer_pending, m)?)?;
    sync::timer::install_hooks(m)?;
    queue::register(m)?;
    futures::register(m)?;
    process::register(m)?;
    event_loop::register(m)?;
    debug::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
