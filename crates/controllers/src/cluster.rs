//! The cluster prober: keeps every `Cluster.status` saying whether the member cluster's
//! API answers (the `Ready` condition), its Kubernetes version and its node counts, and
//! records an Event each time a cluster becomes Ready or stops being Ready.
//!
//! ```text
//!  every Config::interval (real time): LIST Clusters; and soon after a Cluster is added
//!  or its spec changed: that Cluster, as the watch saw it (crate::passes).
//!    per Cluster (at most Config::concurrency at once, each within Config::timeout):
//!       [GET /version: first, after a failure, then every VERSION_EVERY], LIST nodes
//!                     ──▶ Probe::Answered{version (None: not read this time), nodes, ready}
//!                     error/timeout ──▶ Probe::Failed(why)
//!       failed, but fewer than Config::failure_threshold in a row, on a Ready cluster? ── no change
//!       observe(status, probe) ──▶ the prober's fields ── changed? ── PATCH status
//!                                └─ Ready flipped? ── POST Event (default namespace)
//! ```
//!
//! The key decision: the prober owns only its fields of the status (conditions, version,
//! counts, observedGeneration) and writes them with a JSON merge patch, so it never
//! undoes what the component controller writes into the same status
//! (`status.components`), and neither needs the other's resourceVersion. A cluster whose
//! reading did not change costs no write at all.
//!
//! Like the component view, the probe paces itself on *real* time: a simulated clock
//! that runs 60× does not make real API servers answer faster.
//!
//! The node LIST is the reachability check; `/version` changes only when the cluster
//! is upgraded, so it is read on the first probe, on the first answer after a failed
//! probe (an outage is when upgrades happen), and then every [`VERSION_EVERY`], as
//! kubelet reports an unchanged node status only every five minutes: at 1,000 clusters
//! that is one member request in two fewer per round.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::ClusterResourceScope;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use shoal_core::condition;
use shoal_core::kinds::{Cluster, ClusterStatus};
use shoal_fleet::Fleet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::passes::{self, Pace, Scope};
use crate::{events, report};

/// The condition the prober sets.
pub const CONDITION_READY: &str = "Ready";

/// The component name Events from the prober carry.
pub const REPORTER: &str = "shoal-cluster-prober";

/// How long the prober goes on trusting a cluster's last `/version` answer while the
/// cluster keeps answering (real time).
pub const VERSION_EVERY: Duration = Duration::from_secs(300);

/// How the prober paces itself.
#[derive(Clone, Debug)]
pub struct Config {
    /// Between two probes of the same cluster (real time).
    pub interval: Duration,
    /// Clusters probed at once.
    pub concurrency: usize,
    /// How long one probe may take before it counts as failed.
    pub timeout: Duration,
    /// Probes in a row that must fail before a Ready cluster is marked not Ready, as
    /// kubelet's `failureThreshold`: one slow or dropped answer (a loaded control plane,
    /// a keep-alive connection the member closed as it was reused) is not an outage.
    pub failure_threshold: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_secs(30),
            concurrency: 32,
            timeout: Duration::from_secs(5),
            failure_threshold: 3,
        }
    }
}

/// What one probe of a member cluster found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The API answered.
    Answered {
        /// `gitVersion` of `/version`; `None` when it was not read this time (the last
        /// one read stands).
        version: Option<String>,
        nodes: i64,
        /// Nodes whose `Ready` condition is `True`.
        ready: i64,
    },
    /// It did not; why.
    Failed(String),
    /// Its kubeconfig was refused before anything was sent (an exec plugin, a file of
    /// shoal's host: see [`KubeconfigPolicy`](shoal_fleet::KubeconfigPolicy)); why, naming the field.
    Refused(String),
}

/// A change of the `Ready` condition worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// `Ready` or `NotReady`.
    pub reason: &'static str,
    pub message: String,
}

/// The prober's part of a cluster's status after `probe`, and the Event to record if
/// the cluster's readiness changed. Fields the prober does not own are left as they were.
/// A cluster that cannot be read keeps its last known version and node counts: they
/// are what it was, and the condition says it is not answering now.
pub fn observe(
    old: Option<&ClusterStatus>,
    probe: &Probe,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> (ClusterStatus, Option<Transition>) {
    let mut status = old.cloned().unwrap_or_default();
    let was = condition::get(&status.conditions, CONDITION_READY).map(|c| c.status.clone());
    let (ready, reason, message) = match probe {
        Probe::Answered {
            version,
            nodes,
            ready,
        } => {
            if let Some(version) = version {
                status.kubernetes_version = Some(version.clone());
            }
            status.node_count = Some(*nodes);
            status.ready_nodes = Some(*ready);
            if *nodes > 0 && *ready == 0 {
                (
                    false,
                    "NoReadyNodes",
                    format!("the API answers, but none of its {nodes} nodes is Ready"),
                )
            } else {
                (
                    true,
                    "Reachable",
                    format!("the API answers; {ready}/{nodes} nodes Ready"),
                )
            }
        }
        Probe::Failed(why) => (false, "Unreachable", why.clone()),
        Probe::Refused(why) => (false, "KubeconfigRefused", why.clone()),
    };
    condition::set(
        &mut status.conditions,
        CONDITION_READY,
        condition::status(ready),
        reason,
        &message,
        generation,
        now,
    );
    status.observed_generation = generation;
    let now_status = condition::status(ready);
    // The first reading of a Ready cluster is not news; a first reading of a cluster
    // that does not answer is.
    let transition = match was.as_deref() {
        Some(s) if s == now_status => None,
        None if ready => None,
        _ => Some(Transition {
            type_: if ready { "Normal" } else { "Warning" },
            reason: if ready { "Ready" } else { "NotReady" },
            message: if ready {
                format!("cluster is Ready: {message}")
            } else {
                format!("cluster is not Ready ({reason}): {message}")
            },
        }),
    };
    (status, transition)
}

/// The status fields [`observe`] sets, as a merge patch: only those, so that other
/// writers' fields of the status stay.
fn patch_of(status: &ClusterStatus) -> serde_json::Value {
    json!({"status": {
        "conditions": status.conditions,
        "kubernetesVersion": status.kubernetes_version,
        "nodeCount": status.node_count,
        "readyNodes": status.ready_nodes,
        "observedGeneration": status.observed_generation,
    }})
}

/// Whether two statuses differ in what the prober owns (the condition's transition
/// time follows its status, so comparing conditions whole is right).
fn differs(a: Option<&ClusterStatus>, b: &ClusterStatus) -> bool {
    let Some(a) = a else { return true };
    a.conditions != b.conditions
        || a.kubernetes_version != b.kubernetes_version
        || a.node_count != b.node_count
        || a.ready_nodes != b.ready_nodes
        || a.observed_generation != b.observed_generation
}

/// What the prober reads of a Node: its `Ready` condition. Everything else in the list
/// (labels, capacity, images, addresses: several KiB a node) is skipped by the parser
/// rather than built into a full `Node` each round, a million of them at 10,000 clusters
/// of 100 nodes.
#[derive(Clone, Debug, Deserialize)]
struct NodeReadiness {
    #[serde(skip)]
    metadata: ObjectMeta,
    #[serde(default)]
    status: Option<NodeReadinessStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct NodeReadinessStatus {
    #[serde(default)]
    conditions: Vec<NodeCondition>,
}

#[derive(Clone, Debug, Deserialize)]
struct NodeCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

impl NodeReadiness {
    fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    }
}

impl Resource for NodeReadiness {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Node::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        Node::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        Node::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Node::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Whether this probe of a cluster reads `/version`: when none is known, the last
/// probe failed, or the last read is [`VERSION_EVERY`] old (`read`: when it was).
pub fn reads_version(known: bool, last_failed: bool, read: Option<std::time::Instant>) -> bool {
    !known || last_failed || read.is_none_or(|at| at.elapsed() >= VERSION_EVERY)
}

/// Probes `cluster` once, reading its `/version` too when `version` says so.
async fn probe(fleet: &Fleet, cluster: &Cluster, limit: Duration, version: bool) -> Probe {
    let member = match fleet.member(cluster).await {
        Ok(m) => m,
        Err(e @ shoal_fleet::Error::KubeconfigRefused { .. }) => {
            return Probe::Refused(report(&e));
        }
        Err(e) => return Probe::Failed(report(&e)),
    };
    let read = async {
        let version = if version {
            Some(member.client.apiserver_version().await?.git_version)
        } else {
            None
        };
        // Any resourceVersion: a count does not need a quorum read, and a real API
        // server answers it from its watch cache instead of etcd.
        let nodes = Api::<NodeReadiness>::all(member.client.clone())
            .list(&ListParams::default().match_any())
            .await?;
        let ready = nodes.items.iter().filter(|n| n.is_ready()).count();
        Ok::<_, kube::Error>(Probe::Answered {
            version,
            nodes: nodes.items.len() as i64,
            ready: ready as i64,
        })
    };
    match tokio::time::timeout(limit, read).await {
        Err(_) => Probe::Failed(format!("no answer within {limit:?}")),
        Ok(Err(e)) => Probe::Failed(brief(&e)),
        Ok(Ok(p)) => p,
    }
}

/// One short line for a failed read: the status code and message the cluster answered
/// (a `kube::Error`'s own text repeats the whole Status object), or the error chain.
fn brief(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let message = s.message.trim();
            if message.is_empty() || message == s.reason {
                format!("the API answered {} {}", s.code, s.reason)
            } else {
                format!("the API answered {} {}: {message}", s.code, s.reason)
            }
        }
        other => report(other),
    }
}

/// Whether a failed probe leaves the cluster as it was: one last seen Ready stays Ready
/// until `threshold` probes in a row have failed (`failures`, this one included). A
/// cluster not Ready, or never probed, is not held: its failure is news at once.
pub fn holds_ready(old: Option<&ClusterStatus>, failures: u32, threshold: u32) -> bool {
    failures < threshold
        && old
            .and_then(|s| condition::get(&s.conditions, CONDITION_READY))
            .is_some_and(|c| c.status == "True")
}

/// `copy`, or this prober's own last write of the cluster (`ours`) when that is newer.
fn newest(ours: Option<&Cluster>, copy: Cluster) -> Cluster {
    match ours {
        Some(ours) if crate::is_newer(ours, &copy) => ours.clone(),
        _ => copy,
    }
}

/// Probes `cluster` and writes what changed; best effort (logged). The copy given (a
/// list's, or the watch's, which may have waited in its stream while a pass ran) is
/// judged against this prober's own last write of the cluster when that is newer: a
/// transition is news once, not again on a copy from before it.
async fn probe_one(ctx: &Ctx, cluster: Cluster) {
    let name = cluster.name_any();
    let (cluster, read_version) = {
        let known = ctx.known();
        let seen = known.get(&name);
        let cluster = newest(seen.and_then(|k| k.written.as_ref()), cluster);
        let has_version = cluster
            .status
            .as_ref()
            .is_some_and(|s| s.kubernetes_version.is_some());
        let read = reads_version(
            has_version,
            seen.is_some_and(|k| k.failures > 0),
            seen.and_then(|k| k.version_read),
        );
        (cluster, read)
    };
    let probe = probe(&ctx.fleet, &cluster, ctx.config.timeout, read_version).await;
    let failures = {
        let mut known = ctx.known();
        let k = known.entry(name.clone()).or_default();
        if let Probe::Answered {
            version: Some(_), ..
        } = probe
        {
            k.version_read = Some(std::time::Instant::now());
        }
        if let Probe::Failed(_) = probe {
            k.failures = k.failures.saturating_add(1);
        } else {
            k.failures = 0;
        }
        k.failures
    };
    if let Probe::Failed(why) = &probe
        && holds_ready(
            cluster.status.as_ref(),
            failures,
            ctx.config.failure_threshold,
        )
    {
        tracing::debug!(cluster = %name, failures, threshold = ctx.config.failure_threshold,
            %why, "probe failed; the cluster stays Ready until enough fail in a row");
        return;
    }
    let now = ctx.clock.now();
    let (status, transition) = observe(
        cluster.status.as_ref(),
        &probe,
        cluster.metadata.generation,
        now,
    );
    if differs(cluster.status.as_ref(), &status) {
        let patched = ctx
            .clusters
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(patch_of(&status)),
            )
            .await;
        match patched {
            Ok(written) => {
                ctx.known().entry(name.clone()).or_default().written = Some(written);
            }
            // Deleted since it was listed.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                ctx.known().remove(&name);
                return;
            }
            Err(e) => {
                tracing::warn!(cluster = %name, error = %report(&e), "failed to write the cluster's status");
                return;
            }
        }
    }
    if let Some(t) = transition {
        tracing::info!(cluster = %name, reason = t.reason, message = %t.message, "cluster readiness changed");
        let note = events::Note {
            name: None,
            type_: t.type_,
            reason: t.reason,
            message: t.message,
        };
        if let Err(e) =
            events::record(&ctx.client, &name, cluster.uid(), &note, REPORTER, now).await
        {
            tracing::debug!(cluster = %name, error = %report(&e), "failed to record an Event");
        }
    }
}

/// What the prober remembers of one cluster between probes.
#[derive(Default)]
struct Known {
    /// Probes failed in a row (0: the last one answered).
    failures: u32,
    /// When its `/version` was last read.
    version_read: Option<std::time::Instant>,
    /// This prober's last write of it, as the API answered it.
    written: Option<Cluster>,
}

struct Ctx {
    client: Client,
    /// By cluster name.
    known: std::sync::Mutex<std::collections::HashMap<String, Known>>,
    clusters: Api<Cluster>,
    fleet: Arc<Fleet>,
    clock: Clock,
    config: Config,
}

impl Ctx {
    fn known(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs the prober until `stop` is cancelled.
///
/// # Cancel safety
/// Stops between probes; each write is a single merge patch, whole or not at all.
///
/// `fleet` reaches the members (see [`Fleet::with_credentials`]).
pub async fn run(
    client: Client,
    fleet: Arc<Fleet>,
    clock: Clock,
    config: Config,
    stop: CancellationToken,
) {
    let ctx = Ctx {
        known: std::sync::Mutex::default(),
        clusters: Api::all(client.clone()),
        fleet,
        client,
        clock,
        config,
    };
    // New clusters are probed within a second of being added, not at the next round;
    // the watch's copy is probed as it is, without listing the fleet.
    let pace = Pace {
        interval: ctx.config.interval,
        debounce: Duration::from_millis(500),
    };
    let fresh = |c: &Cluster| {
        c.status
            .as_ref()
            .is_none_or(|s| s.observed_generation != c.metadata.generation)
    };
    let ctx = &ctx;
    passes::run(
        ctx.clusters.clone(),
        pace,
        fresh,
        &stop,
        |scope| async move {
            let clusters = match scope {
                Scope::Changed(clusters) => clusters,
                Scope::All => match ctx.clusters.list(&ListParams::default()).await {
                    Ok(l) => l.items,
                    Err(e) => {
                        tracing::warn!(error = %report(&e), "failed to list Clusters");
                        return;
                    }
                },
            };
            stream::iter(clusters)
                .for_each_concurrent(ctx.config.concurrency.max(1), |c| probe_one(ctx, c))
                .await;
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn answered(nodes: i64, ready: i64) -> Probe {
        Probe::Answered {
            version: Some("v1.30.2".into()),
            nodes,
            ready,
        }
    }

    #[test]
    fn a_copy_from_before_the_probers_own_write_is_judged_by_that_write() {
        let at = t("2026-01-01T00:00:00Z");
        let mut copy: Cluster = serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "c-1", "resourceVersion": "7"},
            "spec": {"endpoint": {"server": "http://127.0.0.1:1"}}}))
        .unwrap();
        let mut ours = copy.clone();
        ours.metadata.resource_version = Some("9".into());
        ours.status = Some(observe(None, &Probe::Failed("503".into()), Some(1), at).0);
        // The watch's copy from before the NotReady write: judged by that write, a
        // second failure is no news.
        let now = newest(Some(&ours), copy.clone());
        let (_, transition) = observe(
            now.status.as_ref(),
            &Probe::Failed("503".into()),
            Some(1),
            at,
        );
        assert_eq!(transition, None);
        let (_, stale) = observe(
            copy.status.as_ref(),
            &Probe::Failed("503".into()),
            Some(1),
            at,
        );
        assert!(
            stale.is_some(),
            "the stale copy alone would report it again"
        );
        // A copy newer than our write (someone changed the cluster since) is taken.
        copy.metadata.resource_version = Some("10".into());
        assert_eq!(
            newest(Some(&ours), copy.clone())
                .metadata
                .resource_version
                .as_deref(),
            Some("10")
        );
        assert_eq!(
            newest(None, copy).metadata.resource_version.as_deref(),
            Some("10")
        );
    }

    #[test]
    fn the_version_is_read_first_after_an_outage_and_every_few_minutes() {
        let now = std::time::Instant::now();
        assert!(reads_version(false, false, Some(now)), "none known yet");
        assert!(
            reads_version(true, false, None),
            "never read by this process"
        );
        assert!(!reads_version(true, false, Some(now)), "read a moment ago");
        assert!(
            reads_version(true, true, Some(now)),
            "back from a failed probe"
        );
        if let Some(long_ago) = now.checked_sub(VERSION_EVERY) {
            assert!(reads_version(true, false, Some(long_ago)));
        }
        let at = t("2026-01-01T00:00:00Z");
        let (read, _) = observe(None, &answered(4, 4), Some(1), at);
        let unread = Probe::Answered {
            version: None,
            nodes: 4,
            ready: 3,
        };
        let (kept, _) = observe(Some(&read), &unread, Some(1), at);
        assert_eq!(
            kept.kubernetes_version.as_deref(),
            Some("v1.30.2"),
            "the last read stands"
        );
        assert_eq!(kept.ready_nodes, Some(3), "the nodes are read every time");
    }

    #[test]
    fn a_ready_cluster_stays_ready_until_enough_probes_fail_in_a_row() {
        let at = t("2026-01-01T00:00:00Z");
        let (ready, _) = observe(None, &answered(4, 4), Some(1), at);
        let (down, _) = observe(Some(&ready), &Probe::Failed("503".into()), Some(1), at);
        assert!(
            holds_ready(Some(&ready), 1, 3),
            "one failed probe is not an outage"
        );
        assert!(holds_ready(Some(&ready), 2, 3));
        assert!(!holds_ready(Some(&ready), 3, 3), "the third in a row is");
        assert!(
            !holds_ready(Some(&ready), 1, 1),
            "a threshold of 1 holds nothing"
        );
        assert!(
            !holds_ready(Some(&down), 1, 3),
            "a cluster already down is not held"
        );
        assert!(
            !holds_ready(None, 1, 3),
            "a first reading that fails is news"
        );
    }

    #[test]
    fn a_cluster_that_answers_is_ready_and_its_first_reading_is_no_event() {
        let (s, ev) = observe(None, &answered(4, 3), Some(1), t("2026-01-01T00:00:00Z"));
        let ready = condition::get(&s.conditions, CONDITION_READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Reachable")
        );
        assert!(
            ready.message.contains("3/4 nodes Ready"),
            "{}",
            ready.message
        );
        assert_eq!(s.kubernetes_version.as_deref(), Some("v1.30.2"));
        assert_eq!((s.node_count, s.ready_nodes), (Some(4), Some(3)));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(ev, None);
    }

    #[test]
    fn going_down_and_up_again_are_events_and_keep_the_last_known_counts() {
        let t0 = t("2026-01-01T00:00:00Z");
        let t1 = t("2026-01-01T00:01:00Z");
        let t2 = t("2026-01-01T00:02:00Z");
        let (up, _) = observe(None, &answered(4, 4), Some(1), t0);
        let (down, ev) = observe(
            Some(&up),
            &Probe::Failed("connection refused".into()),
            Some(1),
            t1,
        );
        let ev = ev.expect("an event when it stops answering");
        assert_eq!((ev.type_, ev.reason), ("Warning", "NotReady"));
        assert!(ev.message.contains("connection refused"), "{}", ev.message);
        let cond = condition::get(&down.conditions, CONDITION_READY).unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "Unreachable")
        );
        assert_eq!(cond.last_transition_time, Time(t1));
        assert_eq!(down.node_count, Some(4), "the last known count stays");
        let (still_down, ev) = observe(Some(&down), &Probe::Failed("timeout".into()), Some(1), t2);
        assert_eq!(ev, None, "no event while it stays down");
        assert_eq!(
            condition::get(&still_down.conditions, CONDITION_READY)
                .unwrap()
                .last_transition_time,
            Time(t1)
        );
        let (_, ev) = observe(Some(&still_down), &answered(4, 4), Some(1), t2);
        assert_eq!(ev.map(|e| e.reason), Some("Ready"));
    }

    #[test]
    fn a_refused_kubeconfig_is_not_ready_with_its_own_reason_naming_the_field() {
        let refused = Probe::Refused(
            "spec.credentialsRef: the kubeconfig's users[0].user.exec runs a program".into(),
        );
        let (s, ev) = observe(None, &refused, Some(1), t("2026-01-01T00:00:00Z"));
        let cond = condition::get(&s.conditions, CONDITION_READY).unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "KubeconfigRefused")
        );
        assert!(
            cond.message.contains("users[0].user.exec"),
            "{}",
            cond.message
        );
        assert!(ev.is_some_and(|e| e.message.contains("KubeconfigRefused")));
    }

    #[test]
    fn no_ready_node_is_not_ready_and_a_first_failure_is_news() {
        let (s, ev) = observe(None, &answered(3, 0), None, t("2026-01-01T00:00:00Z"));
        let cond = condition::get(&s.conditions, CONDITION_READY).unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "NoReadyNodes")
        );
        assert_eq!(ev.map(|e| e.reason), Some("NotReady"));
        let (s, _) = observe(None, &answered(0, 0), None, t("2026-01-01T00:00:00Z"));
        assert_eq!(
            condition::get(&s.conditions, CONDITION_READY)
                .unwrap()
                .status,
            "True"
        );
    }

    #[test]
    fn a_node_is_read_for_its_ready_condition_alone() {
        let list: kube::core::ObjectList<NodeReadiness> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "7"},
            "items": [
                {"metadata": {"name": "a", "labels": {"zone": "a"}},
                 "status": {"conditions": [
                     {"type": "MemoryPressure", "status": "False"},
                     {"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                  "images": [{"names": ["registry/agent:1.4.0"], "sizeBytes": 1}],
                  "capacity": {"cpu": "16"}}},
                {"metadata": {"name": "b"},
                 "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}},
                {"metadata": {"name": "c"}}
            ]
        }))
        .unwrap();
        let ready: Vec<bool> = list.items.iter().map(NodeReadiness::is_ready).collect();
        assert_eq!(ready, [true, false, false]);
    }

    #[test]
    fn other_writers_fields_are_kept_and_not_patched() {
        let mut old = ClusterStatus::default();
        old.components.insert("node-agent".into(), "1.5.0".into());
        let (s, _) = observe(Some(&old), &answered(1, 1), None, t("2026-01-01T00:00:00Z"));
        assert_eq!(
            s.components.get("node-agent").map(String::as_str),
            Some("1.5.0")
        );
        let patch = patch_of(&s);
        assert!(patch["status"].get("components").is_none(), "{patch}");
        assert!(differs(Some(&old), &s));
        assert!(!differs(Some(&s), &s));
    }
}
