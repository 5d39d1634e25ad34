//! The component controller: keeps every `Component.status` a fleet view — which
//! version runs in how many clusters and on how many nodes, and which clusters drifted
//! from what shoal last applied.
//!
//! ```text
//!  watch Components ── new, or spec changed (generation ≠ observedGeneration) ──┐
//!  every Config::interval (real time) ─────────────────────────────────────────┤
//!                                                                                ▼
//!  pass: LIST Clusters, LIST Components; per Component with a workload check:
//!     per Cluster (at most Config::concurrency at once, each within read_timeout)
//!        fleet driver: read_workload(kind, ns/name) → object + last-applied + pods
//!        shoal_core::inventory: version, pods per version, drift  → ClusterReading
//!     inventory::tally → ComponentStatus ── differs from the stored one? ── PUT status
//! ```
//!
//! A component without a `spec.checks[].workload` has nothing to look for: its status
//! says so in the `Observed` condition (reason `NoWorkloadCheck`) and nothing is read.
//!
//! # The key decision: a periodic pass, not a watch on every member cluster
//!
//! The view is a census, not a control loop: nothing waits on it, and being a few
//! seconds stale is fine. Watching one workload and its pods in every member cluster
//! would hold two streams per component per cluster open (hundreds of thousands in a big
//! fleet); a pass costs two reads per component per cluster, paced by a fixed interval
//! on *real* time — a census of real clusters does not go faster because a simulated
//! clock does — and bounded in concurrency. A Component that is created or changed is
//! looked at again within [`DEBOUNCE`], so `kubectl apply` of a component shows its
//! view at once. Each pass makes at most one status write per component, and none when
//! nothing changed (the `Observed` condition keeps its transition time while it holds).
//!
//! The status write is a PUT carrying the resourceVersion the pass read: a concurrent
//! change of the Component makes it fail with a conflict, and the watch brings the
//! Component back for a fresh pass.
//!
//! Each cluster's own view, `Cluster.status.components` (component → version, what the
//! dashboard colours the fleet map by), is written by the same pass as a JSON merge
//! patch of just the entries that changed: the cluster prober writes other fields of
//! that status, and neither needs the other's resourceVersion.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use shoal_core::inventory::{
    ClusterReading, UNKNOWN_VERSION, drift, observed_message, pods_per_version, set_observed,
    tally, template_version,
};
use shoal_core::kinds::{Cluster, Component, ComponentStatus, WorkloadCheck};
use shoal_fleet::{Fleet, read_workload};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::passes::{self, Pace, Scope};
use crate::report;

/// How long after a Component changes its pass starts: a `kubectl apply -f` of several
/// components (or a burst of edits) is looked at in one pass, not one per event.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// How the controller paces itself.
#[derive(Clone, Debug)]
pub struct Config {
    /// Between two passes over every component (real time).
    pub interval: Duration,
    /// Member clusters read at once within one component's pass: enough to cover a
    /// thousand clusters in a few seconds, few enough not to exhaust sockets or the
    /// member API servers' patience.
    pub concurrency: usize,
    /// How long one cluster may take to answer before it counts as unreachable, so a
    /// hung cluster does not hold up the view of the others.
    pub read_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_secs(10),
            concurrency: 32,
            read_timeout: Duration::from_secs(10),
        }
    }
}

/// Errors of one pass; the controller logs them and tries again on the next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to list {what}")]
    List {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("failed to write the status of Component {name:?}")]
    WriteStatus {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Runs the component controller until `stop` is cancelled. `clock` stamps the
/// conditions' transition times; the pace is [`Config::interval`] of real time.
///
/// # Cancel safety
/// Stops between two reads or writes when `stop` is cancelled; a pass cut short leaves
/// every status as it was or fully written, never half.
///
/// `fleet` reaches the members (see [`Fleet::with_credentials`]), using their
/// kubeconfigs as its policy allows.
pub async fn run(
    client: Client,
    fleet: Arc<Fleet>,
    clock: Clock,
    config: Config,
    stop: CancellationToken,
) {
    let components: Api<Component> = Api::all(client.clone());
    let clusters: Api<Cluster> = Api::all(client);
    let pace = Pace {
        interval: config.interval,
        debounce: DEBOUNCE,
    };
    let changed = |c: &Component| {
        c.status.as_ref().and_then(|s| s.observed_generation) != c.metadata.generation
    };
    let (components, clusters, fleet, clock, config) =
        (&components, &clusters, &fleet, &clock, &config);
    passes::run(
        components.clone(),
        pace,
        changed,
        &stop,
        |scope| async move {
            if let Err(e) = pass(components, clusters, fleet, clock, config, &scope).await {
                tracing::warn!(error = %report(&e), "component pass failed");
            }
        },
    )
    .await;
}

/// One pass over the components in `scope`; the periodic one also removes the versions
/// of deleted components from the clusters.
async fn pass(
    components: &Api<Component>,
    clusters: &Api<Cluster>,
    fleet: &Arc<Fleet>,
    clock: &Clock,
    config: &Config,
    scope: &Scope<Component>,
) -> Result<(), Error> {
    let fleet_clusters = clusters
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            what: "Clusters",
            source,
        })?
        .items;
    let all = components
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            what: "Components",
            source,
        })?
        .items;
    if matches!(scope, Scope::All) {
        // Versions of components that no longer exist are not shown on clusters.
        let known: BTreeSet<String> = all.iter().map(ResourceExt::name_any).collect();
        let stale = fleet_clusters.iter().filter_map(|c| {
            let gone: serde_json::Map<String, Value> = c
                .status
                .iter()
                .flat_map(|s| s.components.keys())
                .filter(|k| !known.contains(*k))
                .map(|k| (k.clone(), Value::Null))
                .collect();
            (!gone.is_empty()).then(|| (c.name_any(), Value::Object(gone)))
        });
        write_cluster_versions(clusters, stale.collect(), config.concurrency).await;
    }
    for component in all {
        let name = component.name_any();
        if !scope.covers(&name) {
            continue;
        }
        let (status, readings) = observe(&component, &fleet_clusters, fleet, clock, config).await;
        let changed = fleet_clusters
            .iter()
            .filter_map(|c| {
                let reading = readings.get(&c.name_any())?;
                let now = c.status.as_ref().and_then(|s| s.components.get(&name));
                version_change(now.map(String::as_str), reading)
                    .map(|v| (c.name_any(), serde_json::json!({ name.clone(): v })))
            })
            .collect();
        write_cluster_versions(clusters, changed, config.concurrency).await;
        if component.status.as_ref() == Some(&status) {
            continue;
        }
        let mut updated = component.clone();
        updated.status = Some(status);
        match components
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            // Someone changed the Component since it was listed: the watch brings it
            // back for a fresh look.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            // Deleted meanwhile: nothing to show.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(Error::WriteStatus { name, source }),
        }
    }
    Ok(())
}

/// What a cluster's `status.components` entry for a component should become after
/// `reading`, if it changes: the version found, `null` (removed) when the workload is
/// gone; a cluster that could not be read keeps what it last showed.
fn version_change(now: Option<&str>, reading: &ClusterReading) -> Option<Value> {
    match reading {
        ClusterReading::Installed { version, .. } if now != Some(version.as_str()) => {
            Some(Value::String(version.clone()))
        }
        ClusterReading::NotInstalled if now.is_some() => Some(Value::Null),
        _ => None,
    }
}

/// Merges `patches` (cluster name → the entries of `status.components` to set, `null`
/// to remove) into the clusters' statuses, best effort: a failed write is logged and
/// made again by the next pass, which finds the entry still different.
async fn write_cluster_versions(
    clusters: &Api<Cluster>,
    patches: Vec<(String, Value)>,
    concurrency: usize,
) {
    stream::iter(patches)
        .for_each_concurrent(concurrency.max(1), |(cluster, entries)| async move {
            let patch = serde_json::json!({"status": {"components": entries}});
            match clusters
                .patch_status(&cluster, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    tracing::warn!(%cluster, error = %report(&e), "failed to write the cluster's component versions");
                }
            }
        })
        .await;
}

/// The workload a component's view is read from: its first workload check.
fn workload_of(component: &Component) -> Option<&WorkloadCheck> {
    component
        .spec
        .checks
        .iter()
        .find_map(|c| c.workload.as_ref())
}

/// The status `component` should have, from a read of every cluster.
async fn observe(
    component: &Component,
    clusters: &[Cluster],
    fleet: &Arc<Fleet>,
    clock: &Clock,
    config: &Config,
) -> (ComponentStatus, BTreeMap<String, ClusterReading>) {
    let generation = component.metadata.generation;
    let mut conditions = component
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let Some(check) = workload_of(component) else {
        set_observed(
            &mut conditions,
            false,
            "NoWorkloadCheck",
            "spec.checks names no workload: there is nothing to count versions or drift on",
            generation,
            clock.now(),
        );
        let status = ComponentStatus {
            conditions,
            observed_generation: generation,
            ..ComponentStatus::default()
        };
        return (status, BTreeMap::new());
    };
    let base = component.spec.image.as_str();
    // Each read owns what it needs: futures borrowing across `buffer_unordered` make
    // the controller's future not provably `Send` (a higher-ranked lifetime limitation).
    let mut readings: Vec<(String, ClusterReading)> = stream::iter(clusters.iter().cloned())
        .map(|cluster| {
            let (fleet, check, base) = (fleet.clone(), check.clone(), base.to_string());
            let limit = config.read_timeout;
            async move {
                let reading = read_cluster(&fleet, &cluster, &check, &base, limit).await;
                (cluster.name_any(), reading)
            }
        })
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    readings.sort_by(|a, b| a.0.cmp(&b.0));
    let view = || readings.iter().map(|(c, r)| (c.as_str(), r));
    let mut status = tally(view());
    let message = observed_message(&status, view());
    let reason = if status.unreachable.unwrap_or(0) > 0 {
        "SomeClustersUnreachable"
    } else {
        "Observed"
    };
    set_observed(
        &mut conditions,
        true,
        reason,
        &message,
        generation,
        clock.now(),
    );
    status.conditions = conditions;
    status.observed_generation = generation;
    (status, readings.into_iter().collect())
}

/// What `cluster` holds of the workload `check` names.
async fn read_cluster(
    fleet: &Fleet,
    cluster: &Cluster,
    check: &WorkloadCheck,
    base: &str,
    limit: Duration,
) -> ClusterReading {
    let member = match fleet.member(cluster).await {
        Ok(m) => m,
        Err(e) => return ClusterReading::Unreachable(report(&e)),
    };
    let read = read_workload(
        fleet,
        &member,
        check.api_version.as_deref().unwrap_or("apps/v1"),
        &check.kind,
        check.namespace.as_deref().unwrap_or("default"),
        &check.name,
    );
    match tokio::time::timeout(limit, read).await {
        Err(_) => ClusterReading::Unreachable(format!("no answer within {limit:?}")),
        Ok(Err(e)) => ClusterReading::Unreachable(report(&e)),
        Ok(Ok(None)) => ClusterReading::NotInstalled,
        Ok(Ok(Some(w))) => ClusterReading::Installed {
            version: template_version(&w.object, base).unwrap_or_else(|| UNKNOWN_VERSION.into()),
            pods: pods_per_version(&w.pods, base),
            drift: drift(&w.object, w.last_applied.as_ref()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::kinds::{Check, ClusterSpec, ComponentSpec, Endpoint};

    /// A cluster at a port nothing listens on.
    fn mk_unreachable_cluster() -> Cluster {
        Cluster::new(
            "c-1",
            ClusterSpec {
                endpoint: Endpoint {
                    server: "http://127.0.0.1:1".into(),
                    certificate_authority_data: None,
                    insecure_skip_tls_verify: None,
                    tls_server_name: None,
                },
                credentials_ref: None,
            },
        )
    }

    fn mk_component(checks: Vec<Check>) -> Component {
        Component::new(
            "agent",
            ComponentSpec {
                template: "kind: X".into(),
                image: "r/agent".into(),
                version: "1".into(),
                values: None,
                depends_on: vec![],
                dangerous_fields: vec![],
                checks,
            },
        )
    }

    #[tokio::test]
    async fn a_component_without_a_workload_check_says_so_and_reads_nothing() {
        let c = mk_component(vec![Check {
            name: Some("nothing".into()),
            workload: None,
        }]);
        // A cluster nobody can reach: reading it would show as unreachable.
        let cluster = mk_unreachable_cluster();
        let (status, readings) = observe(
            &c,
            &[cluster],
            &Arc::new(Fleet::new()),
            &Clock::system(),
            &Config::default(),
        )
        .await;
        assert_eq!(status.versions, vec![]);
        assert_eq!(status.unreachable, None);
        assert!(readings.is_empty());
        let cond = &status.conditions[0];
        assert_eq!(
            (
                cond.type_.as_str(),
                cond.status.as_str(),
                cond.reason.as_str()
            ),
            (
                shoal_core::inventory::CONDITION_OBSERVED,
                "False",
                "NoWorkloadCheck"
            )
        );
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_counted_apart_from_not_installed() {
        let c = mk_component(vec![Check {
            name: None,
            workload: Some(WorkloadCheck {
                api_version: None,
                kind: "DaemonSet".into(),
                namespace: None,
                name: "agent".into(),
                min_ready_percent: None,
            }),
        }]);
        let cluster = mk_unreachable_cluster();
        let config = Config {
            read_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        let (status, readings) = tokio::time::timeout(
            Duration::from_secs(20),
            observe(
                &c,
                &[cluster],
                &Arc::new(Fleet::new()),
                &Clock::system(),
                &config,
            ),
        )
        .await
        .expect("hung: reading a closed port");
        assert_eq!(status.unreachable, Some(1));
        assert_eq!(status.not_installed, Some(0));
        let reading = &readings["c-1"];
        assert!(
            matches!(reading, ClusterReading::Unreachable(_)),
            "{reading:?}"
        );
        assert_eq!(
            version_change(Some("1.4.0"), reading),
            None,
            "an unreachable cluster keeps the version it last showed"
        );
        assert_eq!(status.conditions[0].reason, "SomeClustersUnreachable");
        assert!(
            status.conditions[0].message.contains("c-1: "),
            "{}",
            status.conditions[0].message
        );
    }

    #[test]
    fn a_clusters_version_entry_changes_only_with_what_was_read() {
        let installed = |v: &str| ClusterReading::Installed {
            version: v.into(),
            pods: Default::default(),
            drift: vec![],
        };
        assert_eq!(
            version_change(None, &installed("1.5.0")),
            Some(Value::from("1.5.0"))
        );
        assert_eq!(
            version_change(Some("1.4.0"), &installed("1.5.0")),
            Some(Value::from("1.5.0"))
        );
        assert_eq!(version_change(Some("1.5.0"), &installed("1.5.0")), None);
        assert_eq!(
            version_change(Some("1.5.0"), &ClusterReading::NotInstalled),
            Some(Value::Null)
        );
        assert_eq!(version_change(None, &ClusterReading::NotInstalled), None);
    }
}
