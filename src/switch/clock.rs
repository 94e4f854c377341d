//! Where the data plane reads the time: the host's monotonic clock, or a
//! [`FakeClock`] that a test moves by hand, so tests of delays and
//! impairments assert exact times instead of wall-clock windows.
//!
//! Owns: the data plane's "now" (time since the clock's origin). Must not
//! touch: fds, timers, frames. The data plane arms its own timerfd for a
//! clock that moves by itself; the owner of a fake clock wakes it with
//! [`Switch::release_due`](super::Switch::release_due) instead.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The data plane's time source. It is read once per poll wake-up and
/// once per impaired frame, so `now` must be cheap and must not block.
pub trait Clock: Send + 'static {
    /// Time since the clock's origin; never goes back.
    fn now(&self) -> Duration;

    /// Whether time passes without anyone's help. If it does, the data
    /// plane sets a timer (on `CLOCK_MONOTONIC`) for the next held frame;
    /// if not, held frames leave only when the clock's owner has moved it
    /// and called `Switch::release_due`.
    fn moves_by_itself(&self) -> bool {
        true
    }
}

/// The host's monotonic clock, counted from when the switch started.
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> MonotonicClock {
        MonotonicClock { origin: Instant::now() }
    }
}

impl Default for MonotonicClock {
    fn default() -> MonotonicClock {
        MonotonicClock::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that stands still until advanced. Clones share one time: the
/// switch reads one clone, the test holds another and moves it.
#[derive(Clone, Debug, Default)]
pub struct FakeClock {
    nanos: Arc<AtomicU64>,
}

impl FakeClock {
    /// A clock at zero.
    pub fn new() -> FakeClock {
        FakeClock::default()
    }

    /// Moves time forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed is enough: the data plane learns of an advance through
        // a control message sent afterwards, and the channel orders the two.
        let _ = self.nanos.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add(by)));
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    fn moves_by_itself(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_clock_stands_still_until_advanced_and_its_clones_share_the_time() {
        let clock = FakeClock::new();
        let seen_by_switch = clock.clone();
        assert_eq!(seen_by_switch.now(), Duration::ZERO);
        clock.advance(Duration::from_millis(30));
        clock.advance(Duration::from_nanos(1));
        assert_eq!(seen_by_switch.now(), Duration::from_nanos(30_000_001));
        assert!(!seen_by_switch.moves_by_itself());
    }

    #[test]
    fn the_monotonic_clock_moves_by_itself_and_never_goes_back() {
        let clock = MonotonicClock::new();
        let (first, second) = (clock.now(), clock.now());
        assert!(second >= first);
        assert!(clock.moves_by_itself());
    }
}
