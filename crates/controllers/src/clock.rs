//! The process clock, with sleeping: [`shoal_core::clock::Clock`] says what time it is;
//! executors and the taskflow controller also need to wait until a time on that clock.
//!
//! Sleeping is done in slices of at most [`SLEEP_SLICE`], re-reading the clock after
//! each, so a clock that is stepped by hand (tests) or scaled (the simulator) is
//! followed without a dedicated timer wheel.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use shoal_core::clock::{SharedClock, SystemClock};

/// The longest real sleep between two reads of the clock: short enough that a stepped
/// clock is noticed promptly, long enough to cost nothing on a real one.
pub const SLEEP_SLICE: Duration = Duration::from_millis(250);

/// A cheap-to-clone handle on the process clock that can also sleep.
#[derive(Clone, Debug)]
pub struct Clock(SharedClock);

impl Clock {
    pub fn new(clock: SharedClock) -> Self {
        Clock(clock)
    }

    /// The wall clock.
    pub fn system() -> Self {
        Clock(Arc::new(SystemClock))
    }

    pub fn now(&self) -> Timestamp {
        self.0.now()
    }

    /// How long to wait in real time for this clock to read `at` (a scaled clock runs
    /// faster than real time); a clock that only moves when stepped is looked at again
    /// after a short slice.
    pub fn real_until(&self, at: Timestamp) -> std::time::Duration {
        self.0.real_until(at).unwrap_or(SLEEP_SLICE)
    }

    /// Returns once the clock reads `deadline` or later.
    ///
    /// # Cancel safety
    /// Cancel safe: it holds no state but the deadline.
    pub async fn sleep_until(&self, deadline: Timestamp) {
        loop {
            let left = deadline.duration_since(self.now());
            if left <= SignedDuration::ZERO {
                return;
            }
            tokio::time::sleep(self.real_until(deadline).min(SLEEP_SLICE)).await;
        }
    }

    /// Sleeps for `d` of this clock's time.
    pub async fn sleep(&self, d: SignedDuration) {
        let deadline = self.now().saturating_add(d).unwrap_or(Timestamp::MAX);
        self.sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::clock::ManualClock;

    #[tokio::test]
    async fn sleep_follows_a_clock_stepped_by_hand() {
        let manual = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let clock = Clock::new(Arc::new(manual.clone()));
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(SignedDuration::from_hours(1)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sleeper.is_finished());
        manual.advance(SignedDuration::from_hours(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("sleep did not notice the clock moved")
            .unwrap();
    }
}
