//! Status conditions as Kubernetes API conventions define them: one entry per `type`,
//! whose `lastTransitionTime` moves only when its `status` changes.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Sets the condition `type_` in `conditions` (adding it, or replacing the one there).
/// The transition time is `now` when the status is new or changed, else the old one
/// is kept, so a condition that keeps holding does not look freshly changed.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let cond = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation,
        last_transition_time: Time(now),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let since = if c.status == status {
                c.last_transition_time.clone()
            } else {
                Time(now)
            };
            *c = Condition {
                last_transition_time: since,
                ..cond
            };
        }
        None => conditions.push(cond),
    }
}

/// The condition `type_`, if set.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// `"True"` or `"False"`.
pub fn status(on: bool) -> &'static str {
    if on { "True" } else { "False" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let t2: Timestamp = "2026-01-01T02:00:00Z".parse().unwrap();
        let mut c = Vec::new();
        set(&mut c, "Ready", "True", "Reachable", "a", Some(1), t0);
        set(&mut c, "Other", "False", "X", "", None, t0);
        set(&mut c, "Ready", "True", "Reachable", "b", Some(2), t1);
        assert_eq!(c.len(), 2);
        let ready = get(&c, "Ready").unwrap();
        assert_eq!(ready.last_transition_time, Time(t0));
        assert_eq!(
            (ready.message.as_str(), ready.observed_generation),
            ("b", Some(2))
        );
        set(&mut c, "Ready", "False", "Unreachable", "down", Some(2), t2);
        let ready = get(&c, "Ready").unwrap();
        assert_eq!(ready.last_transition_time, Time(t2));
        assert_eq!(ready.reason, "Unreachable");
        assert_eq!(c[0].type_, "Ready", "the order of conditions is kept");
    }
}
