//! The loop's clock: `CLOCK_MONOTONIC` in seconds, what `time.monotonic()`
//! and asyncio's `loop.time()` return, so deadlines computed in Python and
//! in Rust compare.

/// The monotonic clock in seconds (`time.monotonic()`, `loop.time()`).
#[inline]
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
