//! Poll pacing: a cheap clock for "has this long passed since the last
//! poll?", read on every loop iteration, so it must cost next to nothing.
//!
//! On x86-64 a reading is the CPU's time-stamp counter (one instruction, no
//! vDSO call); elsewhere the monotonic clock in nanoseconds. Readings are
//! ticks, not time: [`Pace::new`] converts an interval into ticks once,
//! calibrating the counter against the monotonic clock the first time a
//! process asks.

/// A cheap clock for pacing decisions ("has this long passed since the
/// last poll?"), not for keeping time: the CPU's time-stamp counter on
/// x86-64 (one instruction, no vDSO call), the monotonic clock elsewhere.
/// Readings are ticks; `Pace::new` converts an interval into ticks once.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    interval: u64,
}

impl Pace {
    /// A pace of `interval` (calibrated against the monotonic clock the
    /// first time a process asks, in about 200 µs).
    pub fn new(interval: std::time::Duration) -> Self {
        let per_us = ticks_per_us();
        Pace { interval: (interval.as_nanos() as f64 * per_us / 1e3).max(1.0) as u64 }
    }

    /// The current reading.
    #[inline]
    pub fn now() -> u64 {
        ticks()
    }

    /// Whether `interval` has passed from reading `since` to reading `now`.
    /// A reading that went backwards (a counter not synchronised between
    /// CPUs) counts as passed.
    #[inline]
    pub fn passed(&self, since: u64, now: u64) -> bool {
        now.wrapping_sub(since) >= self.interval
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn ticks() -> u64 {
    // SAFETY: RDTSC exists on every x86-64 CPU and only reads a counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn ticks() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}

/// Ticks per microsecond, measured once.
fn ticks_per_us() -> f64 {
    static PER_US: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PER_US.get_or_init(|| {
        if cfg!(not(target_arch = "x86_64")) {
            return 1e3; // ticks are nanoseconds
        }
        let (t0, c0) = (std::time::Instant::now(), ticks());
        let mut el = t0.elapsed();
        while el < std::time::Duration::from_micros(200) {
            std::hint::spin_loop();
            el = t0.elapsed();
        }
        let per_us = ticks().wrapping_sub(c0) as f64 / (el.as_nanos() as f64 / 1e3);
        if per_us.is_finite() && per_us > 0.0 { per_us } else { 1e3 }
    })
}
