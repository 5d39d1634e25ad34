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
    v.pointer(path).and_then(Value::as_i64).unwrap_or(0)
}

/// Reads the health of `kind` `namespace`/`name` (`apiVersion` given) on `member`.
///
/// # Errors
/// Discovery or API errors; [`Error::Object`] for a kind that has no rollout status.
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
    let pods = crate::workload::pods_of(member, namespace, &v, &target.to_string()).await?;
    let crashing: Vec<String> = pods
        .iter()
        .filter(|p| crash_looping(p))
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    assess(kind, &v, &crashing)
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
    let pods = crate::workload::pods_of(member, namespace, object, &target).await?;
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
    let mut h = match kind {
        "DaemonSet" => {
            let desired = int(v, "/status/desiredNumberScheduled");
            // An Advanced DaemonSet's partition keeps that many pods back on purpose.
            let partition = int(v, "/spec/updateStrategy/rollingUpdate/partition");
            WorkloadHealth {
                desired: (desired - partition).max(0),
                total: desired,
                updated: int(v, "/status/updatedNumberScheduled"),
                available: int(v, "/status/numberAvailable"),
                ..WorkloadHealth::default()
            }
        }
        "Deployment" | "StatefulSet" => {
            let desired = v
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let available = if kind == "Deployment" {
                int(v, "/status/availableReplicas")
            } else {
                int(v, "/status/readyReplicas")
            };
            // A StatefulSet's partition keeps the pods below its ordinal back.
            let partition = if kind == "StatefulSet" {
                int(v, "/spec/updateStrategy/rollingUpdate/partition")
            } else {
                0
            };
            WorkloadHealth {
                desired: (desired - partition).max(0),
                total: desired,
                updated: int(v, "/status/updatedReplicas"),
                available,
                ..WorkloadHealth::default()
            }
        }
        other => {
            return Err(Error::Object(format!(
                "kind {other} has no rollout status (DaemonSet, Deployment, StatefulSet)"
            )));
        }
    };
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
