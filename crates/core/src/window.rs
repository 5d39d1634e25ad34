//! Change windows and freezes: may a release act now, and if not, when next?
//!
//! ```text
//!  Calendar { allow: [windows] (empty: any time), deny: [windows], freezes: [from, until) }
//!  window  = days (Mon-Fri, …) × [start, end) local time in a time zone (an end at or before
//!            the start wraps past midnight: 22:00-06:00)
//!  decide(calendar, at) → Open | Closed { why, opens_at }
//! ```
//!
//! The key decision: time zones are real (jiff's tz database, DST included), because "no
//! changes on weekends, Beijing time" is what an SRE writes, and the next opening is
//! computed by visiting only the instants where the answer can change (window edges and
//! freeze ends) rather than by stepping minute by minute.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// One recurring window.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Days it applies to (empty: every day), by the day the window *starts* on.
    pub days: Vec<Weekday>,
    pub start: Time,
    pub end: Time,
    pub time_zone: TimeZone,
}

/// A fleet-wide freeze.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freeze {
    pub from: Timestamp,
    pub until: Timestamp,
    pub reason: String,
}

/// When changes may happen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calendar {
    /// Changes happen only inside one of these (empty: at any time).
    pub allow: Vec<Window>,
    /// Never inside one of these.
    pub deny: Vec<Window>,
    pub freezes: Vec<Freeze>,
}

/// The answer of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Open,
    Closed {
        why: String,
        /// The next instant changes are allowed (`None`: not within the search horizon).
        opens_at: Option<Timestamp>,
    },
}

/// Why a window does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct WindowError {
    pub field: String,
    pub problem: String,
}

fn err(field: &str, problem: impl Into<String>) -> WindowError {
    WindowError {
        field: field.into(),
        problem: problem.into(),
    }
}

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().get(..3)? {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

impl Window {
    /// Parses `days` (`Mon-Fri`, `Sat,Sun`, empty for every day), `hours` (`09:00-17:00`)
    /// and a time zone name (`Asia/Shanghai`, `UTC`). Errors name `field` + the part.
    ///
    /// # Errors
    /// [`WindowError`] naming the part that does not parse.
    pub fn parse(
        field: &str,
        days: &str,
        hours: &str,
        time_zone: &str,
    ) -> Result<Self, WindowError> {
        let mut out_days = Vec::new();
        for part in days.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || {
                err(
                    &format!("{field}.days"),
                    format!("{part:?}: expected days like Mon-Fri or Sat,Sun"),
                )
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (weekday(a).ok_or_else(bad)?, weekday(b).ok_or_else(bad)?);
                    let mut d = a;
                    loop {
                        out_days.push(d);
                        if d == b {
                            break;
                        }
                        d = d.next();
                    }
                }
                None => out_days.push(weekday(part).ok_or_else(bad)?),
            }
        }
        let bad_hours = || {
            err(
                &format!("{field}.hours"),
                format!("{hours:?}: expected HH:MM-HH:MM"),
            )
        };
        let (s, e) = hours.split_once('-').ok_or_else(bad_hours)?;
        let start: Time = s.trim().parse().map_err(|_| bad_hours())?;
        let end: Time = e.trim().parse().map_err(|_| bad_hours())?;
        let time_zone = TimeZone::get(time_zone).map_err(|_| {
            err(
                &format!("{field}.timeZone"),
                format!("{time_zone:?}: unknown time zone"),
            )
        })?;
        Ok(Window {
            days: out_days,
            start,
            end,
            time_zone,
        })
    }

    /// Whether `at` falls inside the window.
    pub fn contains(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.time_zone.clone());
        let t = local.time();
        let day_ok = |d: Weekday| self.days.is_empty() || self.days.contains(&d);
        if self.start < self.end {
            day_ok(local.weekday()) && self.start <= t && t < self.end
        } else {
            // Wraps midnight: the part before midnight belongs to today's window, the part
            // after to yesterday's.
            (t >= self.start && day_ok(local.weekday()))
                || (t < self.end && day_ok(local.weekday().previous()))
        }
    }

    /// The instants in `(after, until]` where `contains` may change: the window's starts
    /// and ends on each local day.
    fn edges(&self, after: Timestamp, until: Timestamp, out: &mut Vec<Timestamp>) {
        let local: Zoned = after.to_zoned(self.time_zone.clone());
        let mut day = local.date().yesterday().unwrap_or(local.date());
        loop {
            for t in [self.start, self.end] {
                if let Ok(z) = day.to_datetime(t).to_zoned(self.time_zone.clone()) {
                    let ts = z.timestamp();
                    if ts > after && ts <= until {
                        out.push(ts);
                    }
                }
            }
            let Ok(next) = day.checked_add(1.day()) else {
                break;
            };
            day = next;
            if day
                .to_datetime(Time::midnight())
                .to_zoned(self.time_zone.clone())
                .is_ok_and(|z| z.timestamp() > until)
            {
                break;
            }
        }
    }
}

/// How far ahead [`decide`] looks for the next opening.
const HORIZON_DAYS: i64 = 60;

fn closed_reason(cal: &Calendar, at: Timestamp) -> Option<String> {
    if let Some(f) = cal.freezes.iter().find(|f| f.from <= at && at < f.until) {
        return Some(format!("fleet-wide freeze until {}: {}", f.until, f.reason));
    }
    if let Some((i, _)) = cal.deny.iter().enumerate().find(|(_, w)| w.contains(at)) {
        return Some(format!("inside denied window #{}", i + 1));
    }
    if !cal.allow.is_empty() && !cal.allow.iter().any(|w| w.contains(at)) {
        return Some("outside every allowed change window".into());
    }
    None
}

/// Whether changes may happen at `at`, and if not, why and when they may next.
pub fn decide(cal: &Calendar, at: Timestamp) -> Decision {
    let Some(why) = closed_reason(cal, at) else {
        return Decision::Open;
    };
    let until = at
        .checked_add(jiff::SignedDuration::from_hours(24 * HORIZON_DAYS))
        .unwrap_or(Timestamp::MAX);
    let mut edges = Vec::new();
    for w in cal.allow.iter().chain(&cal.deny) {
        w.edges(at, until, &mut edges);
    }
    edges.extend(
        cal.freezes
            .iter()
            .map(|f| f.until)
            .filter(|t| *t > at && *t <= until),
    );
    edges.sort_unstable();
    edges.dedup();
    let opens_at = edges.into_iter().find(|t| closed_reason(cal, *t).is_none());
    Decision::Closed { why, opens_at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn weekdays_9_to_17_beijing() -> Calendar {
        Calendar {
            allow: vec![
                Window::parse("allow[0]", "Mon-Fri", "09:00-17:00", "Asia/Shanghai").unwrap(),
            ],
            ..Calendar::default()
        }
    }

    #[test]
    fn no_weekend_changes_in_beijing_and_the_next_opening_is_monday_morning() {
        let cal = weekdays_9_to_17_beijing();
        // Saturday 2026-11-21 10:00 Beijing = 02:00 UTC.
        match decide(&cal, ts("2026-11-21T02:00:00Z")) {
            Decision::Closed { why, opens_at } => {
                assert!(why.contains("outside"), "{why}");
                // Monday 2026-11-23 09:00 Beijing = 01:00 UTC.
                assert_eq!(opens_at, Some(ts("2026-11-23T01:00:00Z")));
            }
            Decision::Open => panic!("weekends are closed"),
        }
        assert_eq!(decide(&cal, ts("2026-11-23T02:00:00Z")), Decision::Open);
    }

    #[test]
    fn a_freeze_wins_over_an_allowed_window() {
        let mut cal = weekdays_9_to_17_beijing();
        cal.freezes.push(Freeze {
            from: ts("2026-11-23T00:00:00Z"),
            until: ts("2026-11-23T04:00:00Z"),
            reason: "double eleven".into(),
        });
        match decide(&cal, ts("2026-11-23T02:00:00Z")) {
            Decision::Closed { why, opens_at } => {
                assert!(why.contains("double eleven"), "{why}");
                assert_eq!(opens_at, Some(ts("2026-11-23T04:00:00Z")));
            }
            Decision::Open => panic!("frozen"),
        }
    }

    #[test]
    fn a_window_may_wrap_past_midnight() {
        let w = Window::parse("deny[0]", "Fri", "22:00-06:00", "UTC").unwrap();
        assert!(w.contains(ts("2026-11-20T23:00:00Z")), "Friday 23:00");
        assert!(
            w.contains(ts("2026-11-21T05:00:00Z")),
            "Saturday 05:00, Friday's window"
        );
        assert!(!w.contains(ts("2026-11-22T05:00:00Z")), "Sunday 05:00");
    }

    #[test]
    fn bad_windows_are_refused_naming_the_part() {
        let e =
            Window::parse("strategy.windows[0]", "Mon-Funday", "09:00-17:00", "UTC").unwrap_err();
        assert_eq!(e.field, "strategy.windows[0].days");
        let e = Window::parse("w", "", "9-17", "UTC").unwrap_err();
        assert_eq!(e.field, "w.hours");
        let e = Window::parse("w", "", "09:00-17:00", "Mars/Olympus").unwrap_err();
        assert_eq!(e.field, "w.timeZone");
    }

    proptest! {
        #[test]
        fn the_next_opening_is_open_and_nothing_before_it_is(
            minutes in 0i64..(60 * 24 * 14), freeze_h in 0i64..72, deny in proptest::bool::ANY
        ) {
            let mut cal = weekdays_9_to_17_beijing();
            if deny {
                cal.deny.push(Window::parse("deny[0]", "Wed", "12:00-14:00", "Asia/Shanghai").unwrap());
            }
            let base = ts("2026-11-16T00:00:00Z");
            cal.freezes.push(Freeze {
                from: base,
                until: base + jiff::SignedDuration::from_hours(freeze_h),
                reason: "test".into(),
            });
            let at = base + jiff::SignedDuration::from_mins(minutes);
            match decide(&cal, at) {
                Decision::Open => prop_assert!(closed_reason(&cal, at).is_none()),
                Decision::Closed { opens_at, .. } => {
                    let open = opens_at.expect("weekday windows open within the horizon");
                    prop_assert!(open > at);
                    prop_assert_eq!(decide(&cal, open), Decision::Open);
                    // Every minute before it is closed.
                    let mut t = at;
                    while t < open {
                        prop_assert!(closed_reason(&cal, t).is_some(), "open at {} before {}", t, open);
                        t += jiff::SignedDuration::from_mins(7);
                    }
                }
            }
        }
    }
}
