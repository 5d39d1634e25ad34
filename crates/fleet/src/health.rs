//! Is a workload healthy on a member cluster? The reading a release's checks and a
//! `wait-workload-ready` task make.
//!
//! ```text
//!  workload status ──▶ desired / updated / available / observedGeneration
//!  its pods        ──▶ crash-looping pods (CrashLoopBackOff, or restarts) per version
//!  ready = observed the latest generation ∧ updated = desired ∧ available = desired
//! ```
//!
//! The rules follow `kubectl rollout status` for DaemonSets (both APIs), Deployments and
//! StatefulSets; an OpenKruise Advanced DaemonSet with a partition is ready when every pod
//! it is *meant* to update is updated and available.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::{Error, Fleet, Member, Result};

/// The health of one workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadHealth {
    /// The workload controller has seen the latest spec.
    pub observed: bool,
    /// Pods the workload is meant to have now on the new template (a partition keeps
    /// some back on purpose).
    pub desired: i64,
    /// Pods the workload has in all, on any template.
    pub total: i64,
    pub updated: i64,
    pub available: i64,
    /// Pods whose containers keep crashing (CrashLoopBackOff, or waiting after restarts).
    pub crash_looping: i64,
    /// Names of a few crash-looping pods, for messages.
    pub crash_looping_pods: Vec<String>,
    pub ready: bool,
    /// One line a human reads: why it is not ready, or "ready".
    pub message: String,
}

fn int(v: &Value, path: &str) -> i64 {
    at(v, path).and_then(Value::as_i64).unwrap_or(0)
}

/// The value at JSON pointer `path` of `v`, for paths with no escaped `~` or `/` (field
/// names of Kubernetes objects): [`Value::pointer`] without its two strings per step,
/// which a followed workload's health, judged on every watch event, paid a dozen times.
pub fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let rest = path.strip_prefix('/')?;
    rest.split('/').try_fold(v, |v, key| match v {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// The largest count a member can truthfully report: every replica count, scheduled
/// count and partition of DaemonSets (both APIs), Deployments and StatefulSets is an
/// `int32` in the Kubernetes API.
pub const MAX_COUNT: i64 = i32::MAX as i64;

/// The count at JSON pointer `path` of `object` (`absent` when it is not there), for
/// `target` (named in errors).
///
/// A count is *impossible* when it is not an integer in `0..=`[`MAX_COUNT`]: negative,
/// beyond the API's int32, or not a whole number. Such a reading is a broken or hostile
/// member, or a garbled answer; it is reported as [`Error::Impossible`] (a transient read
/// error: the next read may be sane) and never enters arithmetic, where it would panic in
/// a debug build and wrap in a release build. Counts that merely disagree with each
/// other are *not* impossible: `updated` above `desired` is what a Deployment surging
/// past `spec.replicas` reports, and any count can lag a scale-down until the controller
/// observes it.
///
/// # Errors
/// [`Error::Impossible`] naming the field (`path` in dotted form) and the value.
pub fn count(object: &Value, path: &str, absent: i64, target: &str) -> Result<i64> {
    let Some(v) = at(object, path) else {
        return Ok(absent);
    };
    match v.as_i64() {
        Some(n) if (0..=MAX_COUNT).contains(&n) => Ok(n),
        _ => Err(Error::Impossible {
            target: target.to_string(),
            field: path.trim_start_matches('/').replace('/', "."),
            value: v.to_string(),
        }),
    }
}

/// The counts of a workload (as JSON) that its health is judged on.
///
/// # Errors
/// [`Error::Object`] for a kind that has no rollout status; [`Error::Impossible`] for
/// a count no Kubernetes object can hold (see [`count`]).
fn counts(v: &Value, kind: &str, target: &str) -> Result<WorkloadHealth> {
    let n = |path: &str| count(v, path, 0, target);
    let (desired, partition, updated, available) = match kind {
        "DaemonSet" => (
            n("/status/desiredNumberScheduled")?,
            // An Advanced DaemonSet's partition keeps that many pods back on purpose.
            n("/spec/updateStrategy/rollingUpdate/partition")?,
            n("/status/updatedNumberScheduled")?,
            n("/status/numberAvailable")?,
        ),
        "Deployment" | "StatefulSet" => (
            count(v, "/spec/replicas", 1, target)?,
            // A StatefulSet's partition keeps the pods below its ordinal back.
            if kind == "StatefulSet" {
                n("/spec/updateStrategy/rollingUpdate/partition")?
            } else {
                0
            },
            n("/status/updatedReplicas")?,
            if kind == "Deployment" {
                n("/status/availableReplicas")?
            } else {
                n("/status/readyReplicas")?
            },
        ),
        other => {
            return Err(Error::Object(format!(
                "kind {other} has no rollout status (DaemonSet, Deployment, StatefulSet)"
            )));
        }
    };
    Ok(WorkloadHealth {
        // Both are in 0..=MAX_COUNT: the difference cannot overflow; a partition above
        // the count holds every pod back.
        desired: desired.saturating_sub(partition).max(0),
        total: desired,
        updated,
        available,
        ..WorkloadHealth::default()
    })
}

/// Reads the health of `kind` `namespace`/`name` (`apiVersion` given) on `member`.
///
/// # Errors
/// Discovery or API errors; [`Error::Object`] for a kind that has no rollout status;
/// [`Error::Impossible`] when the member reports a count no object can hold.
pub async fn health(
    fleet: &Fleet,
    member: &Member,
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<WorkloadHealth> {
    let probe = serde_json::json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": namespace}});
    let (api, target) = fleet.api_for(member, &probe).await?;
    let obj = api.get(name).await.map_err(|source| Error::Kube {
        verb: "read",
        target: target.to_string(),
        source,
    })?;
    let v = serde_json::to_value(&obj).map_err(|e| Error::Object(e.to_string()))?;
    health_of(member, kind, namespace, &v).await
}

/// The health of workload `object` (JSON, of `kind`, in `namespace`), as already read
/// (by [`Fleet::prepare`](crate::Fleet::prepare), say): only its pods are listed.
///
/// # Errors
/// API errors; [`Error::Object`] for a kind that has no rollout status.
pub async fn health_of(
    member: &Member,
    kind: &str,
    namespace: &str,
    object: &Value,
) -> Result<WorkloadHealth> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let target = format!("{kind} {namespace}/{name}");
    let pods = crate::workload::pods_of::<Pod>(member, namespace, object, &target).await?;
    let crashing: Vec<String> = pods
        .iter()
        .filter(|p| crash_looping(p))
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    assess(kind, object, &crashing)
}

/// Whether a pod has a container waiting in `CrashLoopBackOff`.
pub fn crash_looping(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
            })
        })
}

/// The health of workload `object` (JSON, of `kind`) whose pods named `crashing` are
/// crash-looping: the pure half of [`health`], which a watch-fed
/// [`Follow`](crate::follow::Follow) uses too.
///
/// # Errors
/// [`Error::Object`] for a kind that has no rollout status.
pub fn assess(kind: &str, v: &Value, crashing: &[String]) -> Result<WorkloadHealth> {
    let generation = int(v, "/metadata/generation");
    let observed = int(v, "/status/observedGeneration") >= generation;
    let name = at(v, "/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let namespace = at(v, "/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let mut h = counts(v, kind, &format!("{kind} {namespace}/{name}"))?;
    h.observed = observed;
    h.crash_looping = crashing.len() as i64;
    h.crash_looping_pods = crashing.iter().take(5).cloned().collect();
    h.ready =
        h.observed && h.updated >= h.desired && h.available >= h.desired && h.crash_looping == 0;
    h.message = if h.ready {
        "ready".into()
    } else if !h.observed {
        "the controller has not observed the latest generation yet".into()
    } else if h.crash_looping > 0 {
        format!(
            "{} pods crash-looping ({})",
            h.crash_looping,
            h.crash_looping_pods.join(", ")
        )
    } else {
        format!(
            "{} of {} updated, {} available",
            h.updated, h.desired, h.available
        )
    };
    Ok(h)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn at_finds_what_a_json_pointer_finds_for_plain_field_names() {
        let v = json!({"status": {"conditions": [{"type": "Ready"}, {"type": "Synced"}],
                                  "desiredNumberScheduled": 3, "": {"x": 1}},
                       "metadata": {"name": "agent"}});
        for path in [
            "/status/desiredNumberScheduled",
            "/status/conditions/1/type",
            "/status/conditions",
            "/metadata/name",
            "/metadata/missing",
            "/status/conditions/7",
            "/status/conditions/x",
            "/metadata/name/deeper",
            "/status//x",
        ] {
            assert_eq!(at(&v, path), v.pointer(path), "{path}");
        }
        assert_eq!(at(&v, "status"), None, "not a pointer");
    }

    fn mk_daemonset(desired: Value, partition: Value, updated: Value) -> Value {
        json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": partition}}},
               "status": {"desiredNumberScheduled": desired, "updatedNumberScheduled": updated,
                          "numberAvailable": 3}})
    }

    #[test]
    fn absurd_counts_from_a_member_are_an_impossible_reading_naming_the_field_not_a_panic() {
        for (ds, field) in [
            (
                mk_daemonset(json!(i64::MIN), json!(1), json!(0)),
                "status.desiredNumberScheduled",
            ),
            (
                mk_daemonset(json!(i64::MAX), json!(-1), json!(0)),
                "status.desiredNumberScheduled",
            ),
            (
                mk_daemonset(json!(5), json!(i64::MIN), json!(0)),
                "spec.updateStrategy.rollingUpdate.partition",
            ),
            (
                mk_daemonset(json!(5), json!(0), json!(-3)),
                "status.updatedNumberScheduled",
            ),
            (
                mk_daemonset(json!(u64::MAX), json!(0), json!(0)),
                "status.desiredNumberScheduled",
            ),
            (
                mk_daemonset(json!(MAX_COUNT + 1), json!(0), json!(0)),
                "status.desiredNumberScheduled",
            ),
            (
                mk_daemonset(json!(2.5), json!(0), json!(0)),
                "status.desiredNumberScheduled",
            ),
        ] {
            let e = counts(&ds, "DaemonSet", "DaemonSet kube-system/agent").unwrap_err();
            assert!(
                matches!(&e, Error::Impossible { field: f, .. } if f == field),
                "{field}: {e}"
            );
            let message = e.to_string();
            assert!(
                message.contains("DaemonSet kube-system/agent") && message.contains(field),
                "{message}"
            );
        }
        let deploy = json!({"spec": {"replicas": -1}, "status": {"updatedReplicas": 0}});
        let e = counts(&deploy, "Deployment", "Deployment a/b").unwrap_err();
        assert!(e.to_string().contains("spec.replicas = -1"), "{e}");
        let sts = json!({"spec": {"replicas": 3, "updateStrategy": {"rollingUpdate":
            {"partition": i64::MAX}}}, "status": {"readyReplicas": i64::MIN}});
        assert!(counts(&sts, "StatefulSet", "StatefulSet a/b").is_err());
    }

    #[test]
    fn counts_at_the_limits_of_the_api_are_read_and_a_partition_above_the_count_holds_all_back() {
        let ds = mk_daemonset(json!(MAX_COUNT), json!(MAX_COUNT), json!(MAX_COUNT));
        let h = counts(&ds, "DaemonSet", "ds").unwrap();
        assert_eq!((h.desired, h.total, h.updated), (0, MAX_COUNT, MAX_COUNT));
        let ds = mk_daemonset(json!(4), json!(10), json!(0));
        assert_eq!(counts(&ds, "DaemonSet", "ds").unwrap().desired, 0);
        // Absent counts: none yet (and one replica for a Deployment without spec.replicas).
        let h = counts(&json!({}), "Deployment", "d").unwrap();
        assert_eq!((h.desired, h.updated, h.available), (1, 0, 0));
        // Disagreeing counts are not impossible: a Deployment surges past its replicas.
        let surge = json!({"spec": {"replicas": 2}, "status": {"updatedReplicas": 4,
            "availableReplicas": 3}});
        assert_eq!(counts(&surge, "Deployment", "d").unwrap().updated, 4);
    }
}
