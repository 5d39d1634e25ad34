//! The one clock of a process.
//!
//! Decision logic never calls the system clock: it receives a [`Clock`], which is the
//! real time in production ([`SystemClock`]), a hand-stepped time in tests
//! ([`ManualClock`]), or a virtual time that runs faster (or slower, or not at all) than
//! real time for the simulator and rehearsals ([`ScaledClock`]).
//!
//! ```text
//!  ScaledClock:   virtual now = anchor.virtual + factor × (real.now() − anchor.real) + steps
//!                 set_factor re-anchors, so virtual time never jumps when the speed changes
//! ```
//!
//! The scaled clock reads real time through another [`Clock`] (the system clock in
//! production, a [`ManualClock`] in its tests), so it is tested without sleeping.

use std::fmt;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

/// A source of "now".
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;

    /// How long, in real time, until this clock shows `at` if left to run; `Some(ZERO)`
    /// when it already does, `None` when the clock only moves when stepped (a paused or
    /// manual clock). Lets a loop sleep exactly until its next deadline.
    fn real_until(&self, at: Timestamp) -> Option<std::time::Duration> {
        let _ = at;
        None
    }
}

/// The real time until `at` given `now`, at `factor` virtual seconds per real second.
fn real_wait(now: Timestamp, at: Timestamp, factor: f64) -> std::time::Duration {
    let ahead = at
        .as_nanosecond()
        .saturating_sub(now.as_nanosecond())
        .max(0) as f64;
    std::time::Duration::from_nanos((ahead / factor).min(u64::MAX as f64) as u64)
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// Wall-clock time.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn real_until(&self, at: Timestamp) -> Option<std::time::Duration> {
        Some(real_wait(self.now(), at, 1.0))
    }
}

/// A clock that only moves when told to (tests).
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now = now.saturating_add(by).unwrap_or(*now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a [`ScaledClock`] refused a speed.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum ClockError {
    #[error("invalid time scale {0}: must be a finite number >= 0 (0 pauses the clock)")]
    InvalidFactor(f64),
}

/// A virtual clock running `factor` times as fast as a real one; `factor` 0 pauses it,
/// and [`ScaledClock::advance`] steps it by hand (in any mode).
///
/// Virtual time never goes backwards, even if the real source does.
#[derive(Clone, Debug)]
pub struct ScaledClock {
    real: SharedClock,
    state: Arc<Mutex<Scaled>>,
}

#[derive(Debug)]
struct Scaled {
    /// Real time at the last re-anchoring.
    real_anchor: Timestamp,
    /// Virtual time at the last re-anchoring.
    virtual_anchor: Timestamp,
    factor: f64,
    /// The latest virtual time handed out, so time is monotonic.
    last: Timestamp,
}

impl Scaled {
    fn virtual_at(&self, real_now: Timestamp) -> Timestamp {
        let real_elapsed = real_now.as_nanosecond() - self.real_anchor.as_nanosecond();
        // f64 keeps ~15 significant digits: sub-microsecond precision for runs of days.
        let scaled = (real_elapsed.max(0) as f64 * self.factor) as i128;
        let nanos = self.virtual_anchor.as_nanosecond().saturating_add(scaled);
        let t = Timestamp::from_nanosecond(nanos).unwrap_or(Timestamp::MAX);
        t.max(self.last)
    }
}

impl ScaledClock {
    /// A clock that reads `start` now and then runs `factor` times as fast as `real`.
    ///
    /// # Errors
    /// [`ClockError::InvalidFactor`] when `factor` is negative, NaN or infinite.
    pub fn new(real: SharedClock, start: Timestamp, factor: f64) -> Result<Self, ClockError> {
        check_factor(factor)?;
        let real_anchor = real.now();
        Ok(ScaledClock {
            real,
            state: Arc::new(Mutex::new(Scaled {
                real_anchor,
                virtual_anchor: start,
                factor,
                last: start,
            })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Scaled> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current speed (virtual seconds per real second).
    pub fn factor(&self) -> f64 {
        self.lock().factor
    }

    /// Changes the speed from now on; virtual time already passed is kept.
    ///
    /// # Errors
    /// [`ClockError::InvalidFactor`] when `factor` is negative, NaN or infinite.
    pub fn set_factor(&self, factor: f64) -> Result<(), ClockError> {
        check_factor(factor)?;
        let real_now = self.real.now();
        let mut s = self.lock();
        let now = s.virtual_at(real_now);
        s.real_anchor = real_now;
        s.virtual_anchor = now;
        s.last = now;
        s.factor = factor;
        Ok(())
    }

    /// Stops virtual time (speed 0); [`ScaledClock::advance`] still steps it.
    pub fn pause(&self) {
        // 0 is a valid factor, so this cannot fail.
        let _ = self.set_factor(0.0);
    }

    /// Moves virtual time forward by `by` at once (negative steps are ignored).
    pub fn advance(&self, by: SignedDuration) {
        if by.is_negative() {
            return;
        }
        let real_now = self.real.now();
        let mut s = self.lock();
        let now = s.virtual_at(real_now);
        let next = now.saturating_add(by).unwrap_or(now);
        s.real_anchor = real_now;
        s.virtual_anchor = next;
        s.last = next;
    }
}

fn check_factor(factor: f64) -> Result<(), ClockError> {
    if factor.is_finite() && factor >= 0.0 {
        Ok(())
    } else {
        Err(ClockError::InvalidFactor(factor))
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        let real_now = self.real.now();
        let mut s = self.lock();
        let now = s.virtual_at(real_now);
        s.last = now;
        now
    }

    fn real_until(&self, at: Timestamp) -> Option<std::time::Duration> {
        let factor = self.factor();
        (factor > 0.0).then(|| real_wait(self.now(), at, factor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_scaled(factor: f64) -> (ManualClock, ScaledClock, Timestamp) {
        let real = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let start: Timestamp = "2030-06-01T12:00:00Z".parse().unwrap();
        let clock = ScaledClock::new(Arc::new(real.clone()), start, factor).unwrap();
        (real, clock, start)
    }

    fn secs_since(clock: &ScaledClock, start: Timestamp) -> i64 {
        clock.now().as_second() - start.as_second()
    }

    #[test]
    fn a_scaled_clock_says_how_long_real_time_waits_for_a_virtual_deadline() {
        let (_real, clock, start) = mk_scaled(60.0);
        let at = start + SignedDuration::from_secs(120);
        assert_eq!(
            clock.real_until(at),
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(clock.real_until(start), Some(std::time::Duration::ZERO));
        clock.pause();
        assert_eq!(
            clock.real_until(at),
            None,
            "a paused clock never gets there alone"
        );
        let manual = ManualClock::new(start);
        assert_eq!(manual.real_until(at), None);
    }

    #[test]
    fn scaled_clock_starts_at_its_start_and_runs_factor_times_faster() {
        let (real, clock, start) = mk_scaled(60.0);
        assert_eq!(clock.now(), start);
        real.advance(SignedDuration::from_secs(10));
        assert_eq!(secs_since(&clock, start), 600);
    }

    #[test]
    fn changing_the_factor_keeps_the_virtual_time_already_passed() {
        let (real, clock, start) = mk_scaled(60.0);
        real.advance(SignedDuration::from_secs(10));
        clock.set_factor(1.0).unwrap();
        assert_eq!(secs_since(&clock, start), 600);
        real.advance(SignedDuration::from_secs(5));
        assert_eq!(secs_since(&clock, start), 605);
        assert_eq!(clock.factor(), 1.0);
    }

    #[test]
    fn a_paused_clock_moves_only_when_stepped() {
        let (real, clock, start) = mk_scaled(10.0);
        clock.pause();
        real.advance(SignedDuration::from_secs(100));
        assert_eq!(clock.now(), start);
        clock.advance(SignedDuration::from_secs(30));
        assert_eq!(secs_since(&clock, start), 30);
        clock.advance(SignedDuration::from_secs(-30));
        assert_eq!(secs_since(&clock, start), 30);
    }

    #[test]
    fn stepping_a_running_clock_adds_to_its_scaled_time() {
        let (real, clock, start) = mk_scaled(2.0);
        real.advance(SignedDuration::from_secs(5));
        clock.advance(SignedDuration::from_secs(100));
        real.advance(SignedDuration::from_secs(5));
        assert_eq!(secs_since(&clock, start), 120);
    }

    #[test]
    fn scaled_clock_rejects_negative_and_non_finite_factors() {
        let real: SharedClock = Arc::new(SystemClock);
        let start = Timestamp::UNIX_EPOCH;
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(ScaledClock::new(real.clone(), start, bad).is_err());
        }
        let clock = ScaledClock::new(real, start, 1.0).unwrap();
        assert!(matches!(
            clock.set_factor(-2.0),
            Err(ClockError::InvalidFactor(_))
        ));
        assert_eq!(clock.factor(), 1.0);
    }

    #[test]
    fn scaled_clock_never_goes_backwards_when_real_time_does() {
        let real = ManualClock::new("2026-01-01T00:00:10Z".parse().unwrap());
        let start = Timestamp::UNIX_EPOCH;
        let clock = ScaledClock::new(Arc::new(real.clone()), start, 1.0).unwrap();
        real.advance(SignedDuration::from_secs(5));
        let seen = clock.now();
        real.advance(SignedDuration::from_secs(-8));
        assert_eq!(clock.now(), seen);
    }

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(SignedDuration::from_secs(90));
        assert_eq!(clock.now().as_second() - start.as_second(), 90);
    }
}
