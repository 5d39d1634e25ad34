//! Go-style duration strings (`30s`, `10m`, `1h30m`, `1.5h`, `250ms`), as Tekton and every
//! Kubernetes user write them in `timeout` fields.
//!
//! [`parse`] accepts exactly what Go's `time.ParseDuration` accepts: an optional sign,
//! then one or more decimal numbers each followed by a unit (`ns`, `us`/`µs`, `ms`, `s`,
//! `m`, `h`), or the bare `0`. [`format()`] prints what Go's `Duration.String` prints
//! (`1h30m0s`, `1.5s`, `250ms`), so the two round-trip. Like Go, durations are whole
//! nanoseconds that fit an `i64` (about 292 years).

use std::fmt;

use jiff::SignedDuration;

const NANOS_PER_MICRO: u128 = 1_000;
const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SECOND: u128 = 1_000_000_000;
const NANOS_PER_MINUTE: u128 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: u128 = 60 * NANOS_PER_MINUTE;

/// Why a duration string did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "invalid duration {0:?}: expected a number followed by a unit, e.g. \"30s\", \"10m\", \"1h30m\""
    )]
    Invalid(String),
    #[error(
        "invalid duration {input:?}: missing unit after {number:?} (one of ns, us, ms, s, m, h)"
    )]
    MissingUnit { input: String, number: String },
    #[error("invalid duration {input:?}: unknown unit {unit:?} (one of ns, us, ms, s, m, h)")]
    UnknownUnit { input: String, unit: String },
    #[error("invalid duration {0:?}: out of range")]
    Overflow(String),
}

/// Parses a Go-style duration string.
///
/// # Errors
/// [`DurationError`] when `s` is not a duration Go would accept, or when it does not fit
/// in an `i64` number of nanoseconds.
pub fn parse(s: &str) -> Result<SignedDuration, DurationError> {
    let invalid = || DurationError::Invalid(s.to_string());
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(SignedDuration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // The number: digits, optionally a dot and more digits; at least one digit.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "" => {
                return Err(DurationError::MissingUnit {
                    input: s.to_string(),
                    number: rest[..rest.len() - after.len()].to_string(),
                });
            }
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO,
            "ms" => NANOS_PER_MILLI,
            "s" => NANOS_PER_SECOND,
            "m" => NANOS_PER_MINUTE,
            "h" => NANOS_PER_HOUR,
            other => {
                return Err(DurationError::UnknownUnit {
                    input: s.to_string(),
                    unit: other.to_string(),
                });
            }
        };
        let overflow = || DurationError::Overflow(s.to_string());
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut nanos = whole.checked_mul(scale).ok_or_else(overflow)?;
        // Digits past the 20th cannot change a nanosecond count of a unit ≤ 1h.
        let frac_digits = &frac_part[..frac_part.len().min(20)];
        if !frac_digits.is_empty() {
            let frac: u128 = frac_digits.parse().map_err(|_| overflow())?;
            let denominator = 10u128.pow(frac_digits.len() as u32);
            nanos = nanos
                .checked_add(frac * scale / denominator)
                .ok_or_else(overflow)?;
        }
        total = total.checked_add(nanos).ok_or_else(overflow)?;
        if total > i64::MAX as u128 + u128::from(negative) {
            return Err(overflow());
        }
        rest = after;
    }
    let signed = if negative {
        -(total as i128)
    } else {
        total as i128
    };
    Ok(SignedDuration::from_nanos(signed as i64))
}

/// Formats a duration the way Go's `Duration.String` does: `0s`, `1h30m0s`, `1.5s`,
/// `250ms`, `3µs`, `-2m0s`.
pub fn format(d: SignedDuration) -> String {
    Go(d).to_string()
}

/// Displays a duration in Go's notation (see [`format()`]).
#[derive(Clone, Copy, Debug)]
struct Go(SignedDuration);

impl fmt::Display for Go {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < 0 {
            f.write_str("-")?;
        }
        let u = nanos.unsigned_abs();
        if u < NANOS_PER_MICRO {
            return write!(f, "{u}ns");
        }
        if u < NANOS_PER_MILLI {
            return write!(f, "{}µs", Fraction(u, 3));
        }
        if u < NANOS_PER_SECOND {
            return write!(f, "{}ms", Fraction(u, 6));
        }
        let hours = u / NANOS_PER_HOUR;
        let minutes = u / NANOS_PER_MINUTE % 60;
        let seconds = Fraction(u % NANOS_PER_MINUTE, 9);
        if hours > 0 {
            write!(f, "{hours}h{minutes}m{seconds}s")
        } else if minutes > 0 {
            write!(f, "{minutes}m{seconds}s")
        } else {
            write!(f, "{seconds}s")
        }
    }
}

/// `value / 10^digits` in decimal, without trailing zeros.
struct Fraction(u128, u32);

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Fraction(value, digits) = *self;
        let scale = 10u128.pow(digits);
        write!(f, "{}", value / scale)?;
        let frac = value % scale;
        if frac != 0 {
            let s = format!("{frac:0width$}", width = digits as usize);
            write!(f, ".{}", s.trim_end_matches('0'))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: i64) -> SignedDuration {
        SignedDuration::from_secs(s)
    }

    #[test]
    fn common_timeouts_parse_to_their_obvious_values() {
        assert_eq!(parse("30s"), Ok(secs(30)));
        assert_eq!(parse("10m"), Ok(secs(600)));
        assert_eq!(parse("1h30m"), Ok(secs(5400)));
        assert_eq!(parse("1.5h"), Ok(secs(5400)));
        assert_eq!(parse("250ms"), Ok(SignedDuration::from_millis(250)));
        assert_eq!(parse("0"), Ok(SignedDuration::ZERO));
        assert_eq!(parse("-1m"), Ok(secs(-60)));
        assert_eq!(parse("+2s"), Ok(secs(2)));
        assert_eq!(parse(".5s"), Ok(SignedDuration::from_millis(500)));
        assert_eq!(parse("1.s"), Ok(secs(1)));
        assert_eq!(parse("1µs2us3μs4ns"), Ok(SignedDuration::from_nanos(6004)));
        assert_eq!(
            parse("2h45m30.5s"),
            Ok(SignedDuration::from_millis(9_930_500))
        );
    }

    #[test]
    fn malformed_durations_are_rejected_with_a_reason() {
        for bad in [
            "", "-", "s", "10", "1.5", ".s", "1x", "1 h", "h1", "1h-5m", "0.0",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(matches!(
            parse("10"),
            Err(DurationError::MissingUnit { .. })
        ));
        assert!(matches!(parse("3d"), Err(DurationError::UnknownUnit { unit, .. }) if unit == "d"));
        assert!(
            parse("1h1")
                .unwrap_err()
                .to_string()
                .contains("missing unit")
        );
    }

    #[test]
    fn durations_beyond_go_range_overflow() {
        assert!(matches!(parse("3000000h"), Err(DurationError::Overflow(_))));
        assert!(matches!(
            parse("99999999999999999999999999999999999999999s"),
            Err(DurationError::Overflow(_))
        ));
        assert_eq!(
            parse("-9223372036854775808ns"),
            Ok(SignedDuration::from_nanos(i64::MIN))
        );
        assert!(parse("9223372036854775808ns").is_err());
    }

    #[test]
    fn formatting_matches_go() {
        assert_eq!(format(SignedDuration::ZERO), "0s");
        assert_eq!(format(secs(5400)), "1h30m0s");
        assert_eq!(format(secs(90)), "1m30s");
        assert_eq!(format(SignedDuration::from_millis(1500)), "1.5s");
        assert_eq!(format(SignedDuration::from_millis(250)), "250ms");
        assert_eq!(format(SignedDuration::from_nanos(1500)), "1.5µs");
        assert_eq!(format(SignedDuration::from_nanos(7)), "7ns");
        assert_eq!(format(secs(-120)), "-2m0s");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn formatted_durations_parse_back_to_themselves(nanos in any::<i64>()) {
            let d = SignedDuration::from_nanos(nanos);
            prop_assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
