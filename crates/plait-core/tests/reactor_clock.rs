//! The reactor's clocks: the monotonic clock (`loop.time()`) and the cheap
//! pacing counter.
#![cfg(all(not(loom), not(miri)))]

use plait_core::reactor::monotonic;

#[test]
fn monotonic_moves_forward() {
    let a = monotonic();
    let b = monotonic();
    assert!(b >= a && a > 0.0);
}

#[test]
fn pace_tells_when_an_interval_has_passed() {
    use plait_core::reactor::Pace;
    use std::time::{Duration, Instant};
    let pace = Pace::new(Duration::from_millis(2));
    let start = Pace::now();
    assert!(!pace.passed(start, start), "no time has passed at the start");
    // Not yet after well under the interval...
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_micros(200) {}
    let early = Pace::now();
    if t0.elapsed() < Duration::from_millis(1) {
        assert!(!pace.passed(start, early), "0.2 ms read as 2 ms passed");
    }
    // ...and passed once the monotonic clock says so (bounded wait).
    while t0.elapsed() < Duration::from_millis(3) {}
    assert!(pace.passed(start, Pace::now()), "3 ms did not read as 2 ms passed");
    // A reading that went backwards counts as passed.
    assert!(pace.passed(start.wrapping_add(1000), start));
}
