//! The fleet view of a component: which version runs in how many clusters and on how
//! many nodes, and which clusters drifted from what shoal last applied — computed from
//! what was read in each cluster, without IO.
//!
//! ```text
//!  per cluster (read by the component controller through the fleet driver)
//!    workload object ──template_version──▶ the cluster's version   (pod template image tag)
//!    its pods        ──pod_version───────▶ nodes per version       (each pod's image tag)
//!    live vs the shoal.io/last-applied copy ──drift──▶ fields shoal owns that differ
//!    no workload ──▶ NotInstalled        could not read ──▶ Unreachable
//!                │
//!                ▼  tally (all clusters of the fleet)
//!  ComponentStatus { versions [{version, clusters, nodes}], summary "v2=180 1.4.0=20",
//!                    drifted, drift [{cluster, fields}], notInstalled, unreachable }
//! ```
//!
//! The key decision: drift is judged against the last-applied copy only, with the same
//! three-way diff an apply uses ([`crate::diff::three_way`] of live → last applied). A
//! field is drift when shoal applied it and the live object now says otherwise; fields
//! shoal never set (defaults, status, other controllers' annotations) are never drift,
//! so the view does not cry wolf on every server-side default. A workload shoal never
//! applied (no last-applied copy) counts for its version but cannot drift.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::Value;

use crate::diff::{changes, three_way};
use crate::kinds::{ClusterDrift, ComponentStatus, VersionCount};

/// How many drifted clusters the status lists (the count covers them all): enough to act
/// on, small enough that a fleet-wide drift does not make the object huge.
pub const DRIFT_LISTED: usize = 50;

/// The condition type the component controller sets.
pub const CONDITION_OBSERVED: &str = "Observed";

/// The version of a workload whose pods run no image of the component.
pub const UNKNOWN_VERSION: &str = "unknown";

/// What was found in one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterReading {
    /// The workload exists.
    Installed {
        /// The tag in its pod template ([`UNKNOWN_VERSION`] if no container runs the
        /// component's image).
        version: String,
        /// Its pods per image tag.
        pods: BTreeMap<String, i64>,
        /// Dotted paths that differ from the last-applied copy (empty: in sync, or shoal
        /// never applied it).
        drift: Vec<String>,
    },
    /// The cluster has no such workload.
    NotInstalled,
    /// The cluster could not be read; the message says why.
    Unreachable(String),
}

/// The tag of `image` if it is an image of `base` (`registry/repo`): `base:TAG` → `TAG`,
/// `base@sha256:…` → the digest, a bare `base` → `latest`; `None` for another image
/// (`base-other:1` is not `base`).
pub fn image_tag<'a>(image: &'a str, base: &str) -> Option<&'a str> {
    let rest = image.strip_prefix(base)?;
    if rest.is_empty() {
        return Some("latest");
    }
    rest.strip_prefix(':')
        .or_else(|| rest.strip_prefix('@'))
        .filter(|t| !t.is_empty())
}

/// The tag of the first container in `pod_spec` (a PodSpec as JSON) running `base`.
fn containers_tag(pod_spec: Option<&Value>, base: &str) -> Option<String> {
    pod_spec?
        .get("containers")?
        .as_array()?
        .iter()
        .filter_map(|c| c.get("image")?.as_str())
        .find_map(|i| image_tag(i, base))
        .map(String::from)
}

/// The version a workload (DaemonSet, Deployment, StatefulSet, as JSON) is meant to run:
/// the tag of its pod template's container running `base`.
pub fn template_version(workload: &Value, base: &str) -> Option<String> {
    containers_tag(workload.pointer("/spec/template/spec"), base)
}

/// The version one pod (as JSON) runs: the tag of its container running `base`.
pub fn pod_version(pod: &Value, base: &str) -> Option<String> {
    containers_tag(pod.get("spec"), base)
}

/// Pods per version; pods running no image of `base` are not counted.
pub fn pods_per_version<'a>(
    pods: impl IntoIterator<Item = &'a Value>,
    base: &str,
) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for p in pods {
        if let Some(v) = pod_version(p, base) {
            *out.entry(v).or_insert(0) += 1;
        }
    }
    out
}

/// The fields where `live` differs from `last_applied` (what shoal sent last), as dotted
/// paths: the changes an apply of the last-applied copy would make, so only fields shoal
/// owns count. `None` (shoal never applied the object) is never drift.
pub fn drift(live: &Value, last_applied: Option<&Value>) -> Vec<String> {
    let Some(last) = last_applied else {
        return Vec::new();
    };
    let back = three_way(live, last, Some(last), &[]);
    if back.is_empty() {
        return Vec::new();
    }
    let mut fields: Vec<String> = changes(live, &back.patch, Some(last))
        .into_iter()
        .map(|c| c.path)
        .collect();
    fields.dedup();
    fields
}

/// The one-line summary for the printer column: `v2=180 1.4.0=20` (versions in the order
/// given, clusters per version); empty when nothing is installed.
pub fn summary(versions: &[VersionCount]) -> String {
    versions
        .iter()
        .map(|v| format!("{}={}", v.version, v.clusters))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The fleet view from every cluster's reading. Versions run by no cluster but by some
/// pods (a rollout in progress leaves old pods behind) are listed with 0 clusters.
/// Conditions and `observedGeneration` are left empty: see [`set_observed`].
pub fn tally<'a>(
    readings: impl IntoIterator<Item = (&'a str, &'a ClusterReading)>,
) -> ComponentStatus {
    let mut versions: BTreeMap<&str, VersionCount> = BTreeMap::new();
    let mut drift: Vec<ClusterDrift> = Vec::new();
    let (mut not_installed, mut unreachable) = (0, 0);
    for (cluster, r) in readings {
        match r {
            ClusterReading::Installed {
                version,
                pods,
                drift: fields,
            } => {
                let entry = |versions: &mut BTreeMap<&'a str, VersionCount>, v: &'a str| {
                    versions.entry(v).or_insert_with(|| VersionCount {
                        version: v.to_string(),
                        clusters: 0,
                        nodes: 0,
                    });
                };
                entry(&mut versions, version);
                versions.get_mut(version.as_str()).expect("added").clusters += 1;
                for (v, n) in pods {
                    entry(&mut versions, v);
                    versions.get_mut(v.as_str()).expect("added").nodes += n;
                }
                if !fields.is_empty() {
                    drift.push(ClusterDrift {
                        cluster: cluster.to_string(),
                        fields: fields.clone(),
                    });
                }
            }
            ClusterReading::NotInstalled => not_installed += 1,
            ClusterReading::Unreachable(_) => unreachable += 1,
        }
    }
    let mut versions: Vec<VersionCount> = versions.into_values().collect();
    versions.sort_by(|a, b| {
        (b.clusters, b.nodes)
            .cmp(&(a.clusters, a.nodes))
            .then_with(|| a.version.cmp(&b.version))
    });
    drift.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    let drifted = drift.len() as i64;
    drift.truncate(DRIFT_LISTED);
    ComponentStatus {
        summary: Some(summary(&versions)).filter(|s| !s.is_empty()),
        versions,
        drifted: Some(drifted),
        drift,
        not_installed: Some(not_installed),
        unreachable: Some(unreachable),
        conditions: Vec::new(),
        observed_generation: None,
    }
}

/// Sets the [`CONDITION_OBSERVED`] condition; `lastTransitionTime` moves only when the
/// status (True/False) changes, as Kubernetes conventions ask, so an unchanged fleet
/// gives an unchanged condition (and no status write).
pub fn set_observed(
    conditions: &mut Vec<Condition>,
    ok: bool,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    crate::condition::set(
        conditions,
        CONDITION_OBSERVED,
        crate::condition::status(ok),
        reason,
        message,
        observed_generation,
        now,
    );
}

/// One line for the condition: `3 clusters: 2 with the workload, 1 not installed, 1
/// drifted`, and the first unreachable clusters' errors.
pub fn observed_message<'a>(
    status: &ComponentStatus,
    readings: impl IntoIterator<Item = (&'a str, &'a ClusterReading)>,
) -> String {
    let installed: i64 = status.versions.iter().map(|v| v.clusters).sum();
    let not_installed = status.not_installed.unwrap_or(0);
    let unreachable = status.unreachable.unwrap_or(0);
    let mut s = format!(
        "{} clusters: {installed} with the workload, {not_installed} not installed, {} drifted",
        installed + not_installed + unreachable,
        status.drifted.unwrap_or(0)
    );
    if unreachable > 0 {
        let errs: Vec<String> = readings
            .into_iter()
            .filter_map(|(c, r)| match r {
                ClusterReading::Unreachable(e) => Some(format!("{c}: {e}")),
                _ => None,
            })
            .take(3)
            .collect();
        s.push_str(&format!(
            ", {unreachable} unreachable ({})",
            errs.join("; ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    const BASE: &str = "registry.example.com/infra/node-agent";

    fn mk_pod(image: &str) -> Value {
        json!({"spec": {"containers": [{"name": "side", "image": "busybox:1"},
                                        {"name": "agent", "image": image}]}})
    }

    fn mk_installed(version: &str, pods: &[(&str, i64)], drift: &[&str]) -> ClusterReading {
        ClusterReading::Installed {
            version: version.into(),
            pods: pods.iter().map(|(v, n)| (v.to_string(), *n)).collect(),
            drift: drift.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn image_tags_belong_to_the_component_image_only() {
        assert_eq!(image_tag(&format!("{BASE}:1.4.0"), BASE), Some("1.4.0"));
        assert_eq!(
            image_tag(&format!("{BASE}@sha256:abc"), BASE),
            Some("sha256:abc")
        );
        assert_eq!(image_tag(BASE, BASE), Some("latest"));
        assert_eq!(image_tag(&format!("{BASE}-other:1"), BASE), None);
        assert_eq!(image_tag("busybox:1", BASE), None);
        assert_eq!(image_tag(&format!("{BASE}:"), BASE), None);
    }

    #[test]
    fn the_version_comes_from_the_container_running_the_component_image() {
        let ds = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "init", "image": "busybox:1"},
            {"name": "agent", "image": format!("{BASE}:v2")}]}}}});
        assert_eq!(template_version(&ds, BASE).as_deref(), Some("v2"));
        assert_eq!(template_version(&json!({"spec": {}}), BASE), None);
        let pods = [
            mk_pod(&format!("{BASE}:v2")),
            mk_pod(&format!("{BASE}:v2")),
            mk_pod(&format!("{BASE}:1.4.0")),
            mk_pod("elsewhere/agent:9"),
        ];
        assert_eq!(
            pods_per_version(&pods, BASE),
            BTreeMap::from([("1.4.0".to_string(), 1), ("v2".to_string(), 2)])
        );
    }

    #[test]
    fn drift_is_a_field_shoal_applied_that_the_live_object_changed() {
        let last = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "agent", "image": "a:1", "args": ["--log-level=debug"]}]}}}});
        let mut live = last.clone();
        // Server defaults and other writers' fields are not drift.
        live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        live["spec"]["revisionHistoryLimit"] = json!(10);
        live["status"] = json!({"numberReady": 3});
        live["metadata"] = json!({"annotations": {"shoal.io/last-applied": "{}"}});
        assert_eq!(drift(&live, Some(&last)), Vec::<String>::new());
        // A hand edit of an applied field is.
        live["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["--log-level=trace"]);
        assert_eq!(
            drift(&live, Some(&last)),
            ["spec.template.spec.containers[0].args[0]"]
        );
        // So is a field shoal applied that someone removed.
        let last = json!({"metadata": {"labels": {"app": "a", "tier": "node"}}});
        let live = json!({"metadata": {"labels": {"app": "a"}}});
        assert_eq!(drift(&live, Some(&last)), ["metadata.labels.tier"]);
        // An object shoal never applied cannot drift.
        assert_eq!(drift(&live, None), Vec::<String>::new());
    }

    #[test]
    fn the_tally_lists_most_clusters_first_with_nodes_and_drift() {
        let readings = [
            ("c-1", mk_installed("v2", &[("v2", 4)], &[])),
            ("c-2", mk_installed("1.4.0", &[("1.4.0", 4)], &["spec.x"])),
            ("c-3", mk_installed("v2", &[("v2", 3), ("1.4.0", 1)], &[])),
            ("c-4", ClusterReading::NotInstalled),
            ("c-5", ClusterReading::Unreachable("timed out".into())),
        ];
        let status = tally(readings.iter().map(|(c, r)| (*c, r)));
        assert_eq!(
            status.versions,
            [
                VersionCount {
                    version: "v2".into(),
                    clusters: 2,
                    nodes: 7
                },
                VersionCount {
                    version: "1.4.0".into(),
                    clusters: 1,
                    nodes: 5
                },
            ]
        );
        assert_eq!(status.summary.as_deref(), Some("v2=2 1.4.0=1"));
        assert_eq!(status.drifted, Some(1));
        assert_eq!(
            status.drift,
            [ClusterDrift {
                cluster: "c-2".into(),
                fields: vec!["spec.x".into()]
            }]
        );
        assert_eq!(status.not_installed, Some(1));
        assert_eq!(status.unreachable, Some(1));
        let msg = observed_message(&status, readings.iter().map(|(c, r)| (*c, r)));
        assert_eq!(
            msg,
            "5 clusters: 3 with the workload, 1 not installed, 1 drifted, 1 unreachable \
             (c-5: timed out)"
        );
    }

    #[test]
    fn the_drift_list_is_capped_but_the_count_is_not() {
        let readings: Vec<(String, ClusterReading)> = (0..DRIFT_LISTED + 5)
            .map(|i| (format!("c-{i:03}"), mk_installed("v1", &[], &["spec.x"])))
            .collect();
        let status = tally(readings.iter().map(|(c, r)| (c.as_str(), r)));
        assert_eq!(status.drifted, Some(DRIFT_LISTED as i64 + 5));
        assert_eq!(status.drift.len(), DRIFT_LISTED);
        assert_eq!(status.drift[0].cluster, "c-000");
    }

    #[test]
    fn nothing_installed_has_no_summary() {
        let readings = [("c-1", ClusterReading::NotInstalled)];
        let status = tally(readings.iter().map(|(c, r)| (*c, r)));
        assert_eq!(status.summary, None);
        assert_eq!(status.not_installed, Some(1));
    }

    #[test]
    fn the_observed_condition_keeps_its_transition_time_while_its_status_holds() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let mut conds = Vec::new();
        set_observed(&mut conds, true, "Observed", "a", Some(1), t0);
        set_observed(&mut conds, true, "Observed", "b", Some(2), t1);
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, Time(t0));
        assert_eq!(conds[0].message, "b");
        set_observed(&mut conds, false, "NoWorkload", "c", Some(2), t1);
        assert_eq!(conds[0].last_transition_time, Time(t1));
        assert_eq!(conds[0].status, "False");
    }
}
