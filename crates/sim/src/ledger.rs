//! The ledger: what happened to each workload of a simulated cluster, recorded by its
//! driver as it steps — the simulator's own history, for tests and rehearsals that must
//! assert what a release *did* (never more unavailable than its budget, how far a bad
//! version spread) rather than sample it through the API.
//!
//! ```text
//!  driver step ──▶ reconcile: one Target per workload (desired, allowed, template version)
//!              └─▶ end of step, if the cluster's revision moved:
//!                  observe(now, targets, every pod's PodFact) ──▶ Ledger (per cluster)
//!
//!  Ledger
//!  ├─ nodes:     node names interned once (Arc<str> shared with the pod records) → u32
//!  └─ workloads: (apiVersion, kind, namespace, name) → Record
//!        settled?        fully available once (creation and scale-up are not disruptions)
//!        peak            most pods unavailable at once against the budget, when, allowed then
//!        fault peak      most pods unavailable because their node is NotReady by a fault
//!        violations      observed steps with unavailable > allowed, and the first one's time
//!        versions[]      per image tag: templateSince, firstSeen, nodes ever (a bit set),
//!                        pods now, crash-looping now, crash-looping nodes ever (a bit set)
//!
//!  read: Ledger::snapshot(cluster) ──▶ ClusterLedger (JSON, camelCase) ── GET /sim/history
//! ```
//!
//! What counts:
//!
//! - **version**: the tag of the first container's image (`agent:v2` → `v2`,
//!   `reg:5000/agent:v2@sha256:…` → `v2`), or the whole image when it has no tag — the
//!   same notion of version the fault model's `podCrashLoop.version` matches.
//! - **unavailable**: `desired − available`, where desired is what the controller wants
//!   (a DaemonSet's eligible nodes, `spec.replicas` otherwise) and available is a pod
//!   ready for `minReadySeconds` (for a DaemonSet: a node with such a pod, so a surge pod
//!   does not hide an empty node). Counted only once the workload has been fully available
//!   (creating a workload is not a disruption); when desired grows (scale-up, a new node)
//!   the workload is unsettled again until the new pods are available.
//! - **node faults**: a pod not available because its node is NotReady by the fault model
//!   is counted in `unavailableFromNodeFaults`, and not against the budget: no controller
//!   could have prevented it, and a release must not be blamed for an outage.
//! - **allowed**: maxUnavailable resolved to a count as the controller resolves it at that
//!   moment (a DaemonSet rounds percentages up, a Deployment down, a StatefulSet up and at
//!   least 1); strategies without a budget (`OnDelete`, `Recreate`) allow every pod.
//! - **crash-looping**: a pod in back-off, or running not ready after a restart; "ever"
//!   also counts any restart, so a crash between two steps is not missed.
//!
//! The key decision: **the ledger samples, at every driver step that changed the cluster**
//! (the cluster's revision moved), not on a timer. Every pod transition is a write and the
//! driver steps at each one's due time, so nothing is skipped unless the driver falls
//! behind a fast clock (then the kubelet catches up several transitions in one step and
//! the ledger sees the last; restarts still show). A quiet cluster costs nothing; a busy
//! one costs one walk over its pods per step, O(pods of the workloads). Memory is bounded:
//! nodes are bits, at most [`MAX_VERSIONS`] versions per workload are kept, and a workload's
//! record goes when the workload does (a recreated workload starts afresh).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use shoal_store::Revision;

use crate::faults::image_tag;
use crate::kubelet::PodState;

/// Versions kept per workload: a release a day for a month. When a new one arrives, the
/// oldest version no pod runs and the template no longer names is forgotten.
pub const MAX_VERSIONS: usize = 32;

/// Records of deleted workloads kept per cluster.
pub const MAX_RETIRED: usize = 16;

/// What a controller wants of one workload in this step (pushed by its reconcile).
#[derive(Clone, Debug)]
pub struct Target {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The uids whose pods are this workload's: itself, or a Deployment's ReplicaSets.
    pub owners: Vec<String>,
    /// The first container's image of the pod template.
    pub image: String,
    pub desired: u32,
    /// maxUnavailable resolved against `desired`.
    pub allowed: u32,
    pub min_ready: SignedDuration,
    /// Availability counts nodes, not pods (DaemonSets).
    pub per_node: bool,
}

/// One pod, as the ledger needs it.
#[derive(Clone, Copy, Debug)]
pub struct PodFact<'a> {
    /// Its controller's uid.
    pub owner: &'a str,
    /// Its first container's image.
    pub image: &'a str,
    pub node: Option<&'a Arc<str>>,
    pub state: PodState,
    /// Its node is NotReady by a node fault.
    pub node_faulted: bool,
}

/// The version an image names (see the module docs).
pub fn version_of(image: &str) -> &str {
    image_tag(image).unwrap_or(image)
}

/// A set of interned node ids.
#[derive(Clone, Debug, Default)]
struct NodeSet(Vec<u64>);

impl NodeSet {
    fn insert(&mut self, id: u32) {
        let (word, bit) = (id as usize / 64, id % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(i, w)| {
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| (i * 64 + b) as u32)
        })
    }
}

#[derive(Clone, Debug)]
struct VersionRecord {
    version: Arc<str>,
    template_since: Option<Timestamp>,
    first_seen: Option<Timestamp>,
    nodes_ever: NodeSet,
    crash_looping_ever: NodeSet,
    pods: u32,
    crash_looping: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Peak {
    count: u32,
    at: Option<Timestamp>,
    allowed: u32,
}

#[derive(Clone, Debug)]
struct Record {
    uid: String,
    template: Arc<str>,
    desired: u32,
    available: u32,
    settled_at: Option<Timestamp>,
    /// Unsettled again after desired grew; settles when fully available.
    settled: bool,
    peak: Peak,
    fault_peak: Peak,
    violations: u64,
    first_violation: Option<Timestamp>,
    versions: Vec<VersionRecord>,
}

impl Record {
    fn new(uid: &str) -> Self {
        Record {
            uid: uid.to_string(),
            template: Arc::from(""),
            desired: 0,
            available: 0,
            settled_at: None,
            settled: false,
            peak: Peak::default(),
            fault_peak: Peak::default(),
            violations: 0,
            first_violation: None,
            versions: Vec::new(),
        }
    }

    fn version(&mut self, v: &str) -> &mut VersionRecord {
        let i = match self.versions.iter().position(|r| &*r.version == v) {
            Some(i) => i,
            None => {
                if self.versions.len() >= MAX_VERSIONS
                    && let Some(old) = self
                        .versions
                        .iter()
                        .position(|r| r.pods == 0 && r.version != self.template)
                {
                    self.versions.remove(old);
                }
                self.versions.push(VersionRecord {
                    version: Arc::from(v),
                    template_since: None,
                    first_seen: None,
                    nodes_ever: NodeSet::default(),
                    crash_looping_ever: NodeSet::default(),
                    pods: 0,
                    crash_looping: 0,
                });
                self.versions.len() - 1
            }
        };
        &mut self.versions[i]
    }
}

type Key = (&'static str, &'static str, String, String);

/// One cluster's ledger. See the module docs.
#[derive(Debug, Default)]
pub struct Ledger {
    node_names: Vec<Arc<str>>,
    node_ids: HashMap<Arc<str>, u32>,
    workloads: BTreeMap<Key, Record>,
    /// Records of deleted (or recreated) workloads, newest last, with when they went:
    /// a rollback that removes a first install must not erase what it ran.
    retired: std::collections::VecDeque<(Key, Record, Timestamp)>,
    /// The cluster revision last observed.
    observed: Option<Revision>,
}

/// What one step counts for one workload.
#[derive(Default)]
struct Tally {
    available: u32,
    available_nodes: NodeSet,
    faulted: u32,
    faulted_nodes: NodeSet,
}

impl Ledger {
    /// Whether the cluster changed since the last observation (at `revision`).
    pub fn stale(&self, revision: Revision) -> bool {
        self.observed != Some(revision)
    }

    /// Keeps the record of a workload that went away, the newest [`MAX_RETIRED`].
    fn retire(&mut self, key: Key, record: Record, at: Timestamp) {
        self.retired.push_back((key, record, at));
        if self.retired.len() > MAX_RETIRED {
            self.retired.pop_front();
        }
    }

    fn node_id(&mut self, name: &Arc<str>) -> u32 {
        if let Some(id) = self.node_ids.get(name) {
            return *id;
        }
        let id = self.node_names.len() as u32;
        self.node_names.push(name.clone());
        self.node_ids.insert(name.clone(), id);
        id
    }

    /// Records the cluster at `now` (revision `revision`): `targets` are the workloads the
    /// controllers ran this step, `pods` every pod of the cluster. Records of workloads
    /// that are not `alive` (by uid) are retired (kept, the newest [`MAX_RETIRED`]); a workload alive but without a target (an
    /// invalid spec) keeps its record unchanged.
    pub fn observe<'p>(
        &mut self,
        revision: Revision,
        now: Timestamp,
        targets: &[Target],
        pods: impl IntoIterator<Item = PodFact<'p>>,
        alive: impl Fn(&str, &str) -> bool,
    ) {
        self.observed = Some(revision);
        let gone: Vec<Key> = self
            .workloads
            .iter()
            .filter(|((_, kind, _, _), r)| !alive(kind, &r.uid))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(r) = self.workloads.remove(&k) {
                self.retire(k, r, now);
            }
        }
        let owner_of: HashMap<&str, usize> = targets
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.owners.iter().map(move |o| (o.as_str(), i)))
            .collect();
        let mut tallies: Vec<Tally> = targets.iter().map(|_| Tally::default()).collect();
        let keys: Vec<Key> = targets
            .iter()
            .map(|t| (t.api_version, t.kind, t.namespace.clone(), t.name.clone()))
            .collect();
        for (t, key) in targets.iter().zip(&keys) {
            let rec = self
                .workloads
                .entry(key.clone())
                .or_insert_with(|| Record::new(&t.uid));
            if rec.uid != t.uid {
                let old = std::mem::replace(rec, Record::new(&t.uid));
                self.retired.push_back((key.clone(), old, now));
                if self.retired.len() > MAX_RETIRED {
                    self.retired.pop_front();
                }
            }
            for v in &mut rec.versions {
                v.pods = 0;
                v.crash_looping = 0;
            }
            let version = version_of(&t.image);
            if *rec.template != *version {
                rec.template = Arc::from(version);
                let v = rec.version(version);
                v.template_since.get_or_insert(now);
            }
        }
        for pod in pods {
            let Some(&i) = owner_of.get(pod.owner) else {
                continue;
            };
            let t = &targets[i];
            let node = pod.node.map(|n| self.node_id(n));
            let Some(rec) = self.workloads.get_mut(&keys[i]) else {
                continue;
            };
            let tally = &mut tallies[i];
            let (started, live, crashing, crashed) = match pod.state {
                PodState::Creating { .. } => (false, true, false, false),
                PodState::Running {
                    ready_since,
                    restarts,
                    ..
                } => (
                    true,
                    true,
                    ready_since.is_none() && restarts > 0,
                    restarts > 0,
                ),
                PodState::BackOff { .. } => (true, true, true, true),
                PodState::Succeeded { restarts, .. } | PodState::Failed { restarts, .. } => {
                    (true, false, false, restarts > 0)
                }
            };
            let Some(node) = node else { continue };
            let available = live
                && pod.state.ready_since().is_some_and(|r| {
                    t.min_ready.is_zero() || r.saturating_add(t.min_ready).is_ok_and(|a| a <= now)
                });
            if available {
                tally.available += 1;
                tally.available_nodes.insert(node);
            } else if live && pod.node_faulted {
                tally.faulted += 1;
                tally.faulted_nodes.insert(node);
            }
            if !started {
                continue;
            }
            let v = rec.version(version_of(pod.image));
            v.first_seen.get_or_insert(now);
            v.nodes_ever.insert(node);
            if live {
                v.pods += 1;
            }
            if crashing {
                v.crash_looping += 1;
            }
            if crashing || crashed {
                v.crash_looping_ever.insert(node);
            }
        }
        for ((t, key), tally) in targets.iter().zip(&keys).zip(tallies) {
            let Some(rec) = self.workloads.get_mut(key) else {
                continue;
            };
            let (available, faulted) = if t.per_node {
                (tally.available_nodes.len(), tally.faulted_nodes.len())
            } else {
                (tally.available, tally.faulted)
            };
            if t.desired > rec.desired {
                rec.settled = false;
            }
            rec.desired = t.desired;
            rec.available = available;
            let unavailable = t.desired.saturating_sub(available);
            if !rec.settled {
                if unavailable == 0 {
                    rec.settled = true;
                    rec.settled_at.get_or_insert(now);
                }
                continue;
            }
            let faulted = faulted.min(unavailable);
            let budgeted = unavailable - faulted;
            if faulted > rec.fault_peak.count {
                rec.fault_peak = Peak {
                    count: faulted,
                    at: Some(now),
                    allowed: t.allowed,
                };
            }
            if budgeted > rec.peak.count {
                rec.peak = Peak {
                    count: budgeted,
                    at: Some(now),
                    allowed: t.allowed,
                };
            }
            if budgeted > t.allowed {
                rec.violations += 1;
                rec.first_violation.get_or_insert(now);
            }
        }
    }

    /// The ledger as JSON-ready data.
    pub fn snapshot(&self, cluster: &str) -> ClusterLedger {
        let names = |set: &NodeSet| -> Vec<String> {
            let mut v: Vec<String> = set
                .ids()
                .filter_map(|i| self.node_names.get(i as usize))
                .map(|n| n.to_string())
                .collect();
            v.sort();
            v
        };
        ClusterLedger {
            cluster: cluster.to_string(),
            workloads: self
                .workloads
                .iter()
                .map(|(k, r)| (k, r, None))
                .chain(self.retired.iter().map(|(k, r, at)| (k, r, Some(*at))))
                .map(
                    |((api_version, kind, namespace, name), r, deleted_at)| WorkloadLedger {
                        deleted_at,
                        api_version: api_version.to_string(),
                        kind: kind.to_string(),
                        namespace: namespace.clone(),
                        name: name.clone(),
                        uid: r.uid.clone(),
                        template_version: r.template.to_string(),
                        desired: r.desired,
                        available: r.available,
                        fully_available_at: r.settled_at,
                        peak_unavailable: PeakUnavailable {
                            count: r.peak.count,
                            at: r.peak.at,
                            allowed_at_peak: r.peak.allowed,
                        },
                        unavailable_from_node_faults: FaultPeak {
                            count: r.fault_peak.count,
                            at: r.fault_peak.at,
                        },
                        violations: r.violations,
                        first_violation_at: r.first_violation,
                        versions: r
                            .versions
                            .iter()
                            .map(|v| VersionLedger {
                                version: v.version.to_string(),
                                template_since: v.template_since,
                                first_seen: v.first_seen,
                                nodes_ever: v.nodes_ever.len(),
                                pods: v.pods,
                                crash_looping: v.crash_looping,
                                crash_looping_nodes_ever: v.crash_looping_ever.len(),
                                crash_looping_nodes: names(&v.crash_looping_ever),
                            })
                            .collect(),
                    },
                )
                .collect(),
        }
    }
}

/// One cluster's ledger, as `GET /sim/history` serves it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterLedger {
    pub cluster: String,
    /// In (apiVersion, kind, namespace, name) order.
    pub workloads: Vec<WorkloadLedger>,
}

impl ClusterLedger {
    /// The workload `kind` `namespace/name` (either DaemonSet API when `kind` is
    /// `DaemonSet`: the first one).
    pub fn workload(&self, kind: &str, namespace: &str, name: &str) -> Option<&WorkloadLedger> {
        self.workloads
            .iter()
            .find(|w| w.kind == kind && w.namespace == namespace && w.name == name)
    }
}

/// One workload's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadLedger {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// When the workload was deleted (or replaced by one of the same name): its record
    /// is kept, after the live ones, so that what it ran stays on the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Timestamp>,
    /// The version of the pod template now.
    pub template_version: String,
    /// Pods (DaemonSet: nodes) wanted and available at the last observation.
    pub desired: u32,
    pub available: u32,
    /// When the workload was first fully available; unavailability counts from then.
    pub fully_available_at: Option<Timestamp>,
    pub peak_unavailable: PeakUnavailable,
    pub unavailable_from_node_faults: FaultPeak,
    /// Observed steps with more unavailable than allowed.
    pub violations: u64,
    pub first_violation_at: Option<Timestamp>,
    /// In the order first seen (as template or on a pod).
    pub versions: Vec<VersionLedger>,
}

impl WorkloadLedger {
    pub fn version(&self, version: &str) -> Option<&VersionLedger> {
        self.versions.iter().find(|v| v.version == version)
    }
}

/// The most pods unavailable at once against the budget (node faults excluded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeakUnavailable {
    pub count: u32,
    /// When the peak was first reached.
    pub at: Option<Timestamp>,
    /// maxUnavailable at that moment, as a count.
    pub allowed_at_peak: u32,
}

/// The most pods unavailable at once because their node was NotReady by a fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultPeak {
    pub count: u32,
    pub at: Option<Timestamp>,
}

/// One version of a workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionLedger {
    pub version: String,
    /// When the template first named this version (`None`: only ever seen on pods).
    pub template_since: Option<Timestamp>,
    /// When a pod of this version was first seen running.
    pub first_seen: Option<Timestamp>,
    /// Distinct nodes that ever ran a pod of this version.
    pub nodes_ever: u32,
    /// Pods running it now.
    pub pods: u32,
    /// Of those, crash-looping now.
    pub crash_looping: u32,
    /// Distinct nodes where a pod of this version ever crash-looped (the blast radius).
    pub crash_looping_nodes_ever: u32,
    /// Their names, sorted.
    pub crash_looping_nodes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn mk_target(image: &str, desired: u32, allowed: u32) -> Target {
        Target {
            api_version: "apps/v1",
            kind: "DaemonSet",
            namespace: "kube-system".into(),
            name: "agent".into(),
            uid: "u1".into(),
            owners: vec!["u1".into()],
            image: image.into(),
            desired,
            allowed,
            min_ready: SignedDuration::ZERO,
            per_node: true,
        }
    }

    fn ready(at: i64) -> PodState {
        PodState::Running {
            started: t(at),
            ready_since: Some(t(at)),
            restarts: 0,
        }
    }

    fn fact<'a>(node: &'a Arc<str>, image: &'a str, state: PodState) -> PodFact<'a> {
        PodFact {
            owner: "u1",
            image,
            node: Some(node),
            state,
            node_faulted: false,
        }
    }

    #[test]
    fn versions_are_tags_or_whole_images() {
        assert_eq!(version_of("agent:v2"), "v2");
        assert_eq!(version_of("reg:5000/agent:v2@sha256:abc"), "v2");
        assert_eq!(version_of("reg:5000/agent"), "reg:5000/agent");
    }

    #[test]
    fn creation_is_not_counted_but_a_later_outage_is_and_node_faults_are_apart() {
        let nodes: Vec<Arc<str>> = (0..3).map(|i| Arc::from(format!("n{i}"))).collect();
        let mut l = Ledger::default();
        let target = [mk_target("a:1", 3, 1)];
        // Creating: nothing available, not counted.
        let creating = PodState::created(t(0));
        l.observe(
            1,
            t(0),
            &target,
            nodes.iter().map(|n| fact(n, "a:1", creating)),
            |_, _| true,
        );
        let w = l.snapshot("c").workloads[0].clone();
        assert_eq!((w.peak_unavailable.count, w.violations), (0, 0));
        assert_eq!(w.fully_available_at, None);
        l.observe(
            2,
            t(10),
            &target,
            nodes.iter().map(|n| fact(n, "a:1", ready(10))),
            |_, _| true,
        );
        // Two pods down: one by a node fault, one not; then two not by faults.
        let mut pods: Vec<PodFact> = nodes.iter().map(|n| fact(n, "a:1", creating)).collect();
        pods[0].node_faulted = true;
        pods[2].state = ready(10);
        l.observe(3, t(20), &target, pods.clone(), |_, _| true);
        pods[0].node_faulted = false;
        l.observe(4, t(30), &target, pods, |_, _| true);
        let w = &l.snapshot("c").workloads[0];
        assert_eq!(w.fully_available_at, Some(t(10)));
        assert_eq!(w.unavailable_from_node_faults.count, 1);
        assert_eq!(w.peak_unavailable.count, 2);
        assert_eq!(w.peak_unavailable.at, Some(t(30)));
        assert_eq!(w.peak_unavailable.allowed_at_peak, 1);
        assert_eq!((w.violations, w.first_violation_at), (1, Some(t(30))));
        let v = w.version("1").unwrap();
        assert_eq!((v.nodes_ever, v.pods, v.first_seen), (3, 1, Some(t(10))));
        assert_eq!(v.template_since, Some(t(0)));
    }

    #[test]
    fn a_recreated_workload_starts_afresh_and_a_deleted_one_is_kept_as_retired() {
        let node: Arc<str> = Arc::from("n0");
        let mut l = Ledger::default();
        let target = [mk_target("a:1", 1, 1)];
        l.observe(1, t(0), &target, [fact(&node, "a:1", ready(0))], |_, _| {
            true
        });
        let mut again = mk_target("a:2", 1, 1);
        again.uid = "u2".into();
        l.observe(2, t(5), &[again], [], |_, _| true);
        let snap = l.snapshot("c");
        let w = &snap.workloads[0];
        assert_eq!(w.uid, "u2");
        assert!(w.version("1").is_none());
        let old = &snap.workloads[1];
        assert_eq!((old.uid.as_str(), old.deleted_at), ("u1", Some(t(5))));
        assert_eq!(old.version("1").unwrap().nodes_ever, 1, "what it ran stays");
        l.observe(3, t(6), &[], [], |_, _| false);
        let snap = l.snapshot("c");
        assert_eq!(snap.workloads.len(), 2);
        assert!(snap.workloads.iter().all(|w| w.deleted_at.is_some()));
        assert!(!l.stale(3) && l.stale(4));
        for i in 0..(MAX_RETIRED as i64 + 4) {
            let mut w = mk_target("a:1", 1, 1);
            w.uid = format!("r{i}");
            l.observe(10 + i, t(10), &[w], [], |_, _| true);
        }
        assert!(
            l.snapshot("c").workloads.len() <= MAX_RETIRED + 1,
            "bounded"
        );
    }
}
