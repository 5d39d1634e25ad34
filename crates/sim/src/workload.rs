//! The simulated workload controllers, driver side: read the workload objects clients
//! wrote, ask the pure decisions ([`crate::daemonset`], [`crate::deployment`], …) what to
//! do, apply their plans to the cluster's objects and write the workloads' status.
//!
//! ```text
//!  read(state):  DaemonSets (apps/v1, apps.kruise.io) ─┐
//!                Deployments, StatefulSets,            ├─▶ Workloads { uids, objects }
//!                BroadcastJobs, ReplicaSets            ┘
//!  reconcile, in dependency order, one pass each:
//!    DaemonSets    ─▶ daemonset::plan     ─▶ create / delete pods on nodes
//!    Deployments   ─▶ deployment::plan    ─▶ create / scale ReplicaSets (raw JSON)
//!    ReplicaSets   ─▶ replicaset_plan     ─▶ create (scheduled) / delete pods
//!       (read again when a Deployment wrote one, so a new ReplicaSet gets pods at once;
//!        ReplicaSets whose Deployment is gone are deleted here: background cascade)
//!    StatefulSets  ─▶ statefulset::plan   ─▶ create `<name>-<ordinal>` / delete pods
//!    BroadcastJobs ─▶ broadcastjob::plan  ─▶ one run-to-completion pod per node
//!  every workload: status (written only if changed), events (on change only)
//! ```
//!
//! One submodule per kind (`workload/…`), all built from the same pieces: the object's
//! identity and status write ([`Object`], here) and what a controller does to pods —
//! find its own, schedule, create, bind, delete, with their events (`workload/pods.rs`).
//!
//! A workload whose spec does not parse into a policy is left alone and says so in a
//! status condition (`Invalid`); the API server's validation normally refuses such
//! objects first. Its uid still counts as alive, so its pods are not collected.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value as Json, json};
use shoal_core::FieldError;
use shoal_store::Precondition;

use crate::driver::{Next, NodeInfo, raw};
use crate::event::{ObjectRef, Recorder};
use crate::kubelet::PodState;
use crate::ledger::Target;
use crate::pod::{NodeView, PodPhase, PodView};
use crate::state::{ClusterState, PodRecord, PodTemplate, Value};
use crate::template::{self, Owner};

mod broadcastjob;
mod daemon;
mod deployment;
mod pods;
mod replicaset;
mod statefulset;

pub use pods::killing;
#[cfg(test)]
mod tests;

/// The label carrying a pod's template revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// Kinds whose pods (and, for Deployments, ReplicaSets) the simulator's garbage collector
/// deletes when the owner is gone.
const CONTROLLER_KINDS: &[&str] = &[
    "DaemonSet",
    "ReplicaSet",
    "StatefulSet",
    "BroadcastJob",
    "Deployment",
];

/// Shared pod templates, per (owner uid, revision hash); kept across steps.
pub type TemplateCache = HashMap<(String, String), Arc<PodTemplate>>;

/// The identity of one workload object, as read at the start of a step.
#[derive(Debug)]
pub(crate) struct Object {
    key: Arc<str>,
    /// The object as stored.
    obj: Json,
    /// Its `mod_revision` when read: status writes are compare-and-swap on it.
    revision: shoal_store::Revision,
    /// The object as its pods' owner reference names it.
    owner: Owner,
    generation: i64,
}

impl Object {
    fn parse(
        key: &Arc<str>,
        entry: &crate::state::Entry,
        api_version: &str,
        kind: &str,
    ) -> Option<Self> {
        let Value::Raw(bytes) = &entry.value else {
            return None;
        };
        let obj: Json = serde_json::from_slice(bytes).ok()?;
        let meta = obj.get("metadata")?;
        let s = |f: &str| meta.get(f).and_then(Json::as_str).unwrap_or("").to_string();
        let owner = Owner {
            api_version: api_version.into(),
            kind: kind.into(),
            name: s("name"),
            uid: s("uid"),
            namespace: s("namespace"),
        };
        let generation = meta.get("generation").and_then(Json::as_i64).unwrap_or(1);
        Some(Object {
            key: key.clone(),
            obj,
            revision: entry.mod_revision,
            owner,
            generation,
        })
    }

    /// `spec` deserialized as `S`; a spec that does not deserialize is an invalid spec.
    fn spec<S: serde::de::DeserializeOwned>(&self) -> Result<S, FieldError> {
        serde_json::from_value(self.obj.get("spec").cloned().unwrap_or_else(|| json!({})))
            .map_err(|e| FieldError::invalid("spec", e.to_string()))
    }

    fn status(&self, pointer: &str) -> Option<&Json> {
        self.obj.pointer(&format!("/status{pointer}"))
    }

    fn created(&self) -> Option<Timestamp> {
        self.obj
            .pointer("/metadata/creationTimestamp")
            .and_then(Json::as_str)
            .and_then(|s| s.parse().ok())
    }

    fn event_ref(&self) -> ObjectRef {
        ObjectRef::owner(&self.owner)
    }

    /// Replaces the object by `f(obj)` if that changes it (a write is a revision, so an
    /// unchanged object is not written). Compare-and-swap on the revision read: a client
    /// write in between wins and the next step redoes this.
    /// Returns whether it wrote.
    fn update(&self, state: &mut ClusterState, f: impl FnOnce(&mut Json)) -> bool {
        let mut obj = self.obj.clone();
        f(&mut obj);
        obj != self.obj
            && state
                .put(
                    &self.key,
                    raw(&obj),
                    Precondition::ModRevision(self.revision),
                )
                .is_ok()
    }

    /// Replaces the status if it changed; returns whether it wrote.
    fn write_status(&self, state: &mut ClusterState, status: Json) -> bool {
        self.update(state, |obj| set(obj, &["status"], status))
    }

    /// Says in the status that the spec is invalid, and does nothing else: the counts
    /// of the last valid pass stay, as the real controllers leave them.
    fn write_invalid(&self, state: &mut ClusterState, err: &FieldError, now: Timestamp) {
        let old = self.status("/conditions");
        let invalid = condition(old, "Invalid", "True", "InvalidSpec", err.to_string(), now);
        let mut conditions: Vec<Json> = old
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c["type"] != "Invalid")
            .cloned()
            .collect();
        conditions.push(invalid);
        let mut status = match self.obj.get("status") {
            Some(s @ Json::Object(_)) => s.clone(),
            _ => json!({}),
        };
        set(&mut status, &["observedGeneration"], json!(self.generation));
        set(&mut status, &["conditions"], Json::Array(conditions));
        self.write_status(state, status);
    }
}

/// The workloads of one cluster, as read at the start of a step.
#[derive(Debug, Default)]
pub struct Workloads {
    uids: HashSet<String>,
    daemons: Vec<daemon::Daemon>,
    deployments: Vec<deployment::Deployment>,
    replica_sets: Vec<replicaset::ReplicaSet>,
    stateful_sets: Vec<statefulset::StatefulSet>,
    jobs: Vec<broadcastjob::BroadcastJob>,
}

/// What one reconcile pass works with besides the cluster's objects.
#[derive(Debug)]
pub struct Env<'a> {
    pub nodes: &'a [NodeInfo],
    pub templates: &'a mut TemplateCache,
    /// Counter for generated pod names.
    pub names: &'a mut u64,
    pub next: &'a mut Next,
    pub events: &'a mut Recorder,
    /// How long a BroadcastJob pod runs before it exits 0 (virtual time).
    pub job_duration: SignedDuration,
    pub now: Timestamp,
}

/// A pass in progress: [`Env`] plus the node views the decisions read.
struct Pass<'e, 'a> {
    env: &'e mut Env<'a>,
    views: Vec<NodeView<'a>>,
    node_index: HashMap<&'a str, u32>,
    /// Pods per node index, counted on first use (scheduling spreads by it).
    pods_on: Option<Vec<u32>>,
    /// Pods by controller uid, indexed on first use: one walk over the pods per step,
    /// not one per workload.
    by_owner: Option<PodIndex>,
    /// What each controller wanted this pass, for the ledger.
    targets: Vec<Target>,
}

impl Workloads {
    /// Reads every workload of the cluster. ReplicaSets whose Deployment is gone are
    /// deleted here (as the garbage collector would), so their pods go in the same step.
    pub fn read(state: &mut ClusterState) -> Self {
        let mut out = Workloads {
            daemons: daemon::read(state),
            deployments: deployment::read(state),
            stateful_sets: statefulset::read(state),
            jobs: broadcastjob::read(state),
            ..Workloads::default()
        };
        out.uids
            .extend(out.daemons.iter().map(|d| d.o.owner.uid.clone()));
        out.uids
            .extend(out.deployments.iter().map(|d| d.o.owner.uid.clone()));
        out.uids
            .extend(out.stateful_sets.iter().map(|s| s.o.owner.uid.clone()));
        out.uids
            .extend(out.jobs.iter().map(|j| j.o.owner.uid.clone()));
        out.read_replica_sets(state);
        out
    }

    fn read_replica_sets(&mut self, state: &mut ClusterState) {
        for rs in &self.replica_sets {
            self.uids.remove(&rs.o.owner.uid);
        }
        self.replica_sets = replicaset::read(state, &self.uids);
        self.uids
            .extend(self.replica_sets.iter().map(|r| r.o.owner.uid.clone()));
    }

    /// Whether an object owned by `kind`/`uid` still has its controller (objects of kinds
    /// the simulator does not run are never collected).
    pub fn owns(&self, kind: &str, uid: &str) -> bool {
        !CONTROLLER_KINDS.contains(&kind) || self.uids.contains(uid)
    }

    /// Runs every workload's controller once; returns what each DaemonSet, Deployment and
    /// StatefulSet with a valid spec wanted, for the [`crate::ledger`].
    pub fn reconcile(&mut self, state: &mut ClusterState, mut env: Env<'_>) -> Vec<Target> {
        let nodes = env.nodes;
        let mut pass = Pass {
            views: nodes
                .iter()
                .map(|n| NodeView {
                    name: &n.name,
                    labels: &n.labels,
                    taints: &n.taints,
                    unschedulable: n.unschedulable,
                    ready: n.ready,
                })
                .collect(),
            node_index: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.name.as_ref(), i as u32))
                .collect(),
            env: &mut env,
            pods_on: None,
            by_owner: None,
            targets: Vec::new(),
        };
        for d in &self.daemons {
            daemon::reconcile(state, &mut pass, d);
        }
        let mut wrote_sets = false;
        for d in &self.deployments {
            wrote_sets |= deployment::reconcile(state, &mut pass, d, &self.replica_sets);
        }
        if wrote_sets {
            self.read_replica_sets(state);
        }
        for rs in &self.replica_sets {
            replicaset::reconcile(state, &mut pass, rs);
        }
        for s in &self.stateful_sets {
            statefulset::reconcile(state, &mut pass, s);
        }
        for j in &self.jobs {
            broadcastjob::reconcile(state, &mut pass, j);
        }
        let uids = &self.uids;
        pass.env.templates.retain(|(uid, _), _| uids.contains(uid));
        // A Deployment's pods are its ReplicaSets' (as read after it wrote new ones).
        let mut targets = pass.targets;
        for t in targets.iter_mut().filter(|t| t.kind == "Deployment") {
            t.owners = self
                .replica_sets
                .iter()
                .filter(|rs| rs.deployment.as_deref() == Some(t.uid.as_str()))
                .map(|rs| rs.o.owner.uid.clone())
                .collect();
        }
        targets
    }
}

/// The objects of one kind, parsed: `(group, plural, apiVersion, kind)`.
fn read_kind(
    state: &ClusterState,
    group: &str,
    plural: &str,
    api: &str,
    kind: &str,
) -> Vec<Object> {
    let prefix = template::prefix(group, plural);
    state
        .range(&prefix, None)
        .filter_map(|(key, entry)| Object::parse(key, entry, api, kind))
        .collect()
}

/// Pods by the uid of their controller, in key order.
type PodIndex = HashMap<String, Vec<(Arc<str>, Arc<PodRecord>)>>;

fn label<'a>(rec: &'a PodRecord, name: &str) -> &'a str {
    rec.template
        .base
        .pointer("/metadata/labels")
        .and_then(|l| l.get(name))
        .and_then(Json::as_str)
        .unwrap_or("")
}

fn pod_revision_hash(rec: &PodRecord) -> &str {
    label(rec, REVISION_LABEL)
}

fn name_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

fn view(id: u64, rec: &PodRecord, revision: u32, node_index: &HashMap<&str, u32>) -> PodView {
    let phase = match rec.state {
        _ if rec.node.is_none() => PodPhase::Pending,
        PodState::Creating { .. } => PodPhase::Pending,
        PodState::Running { .. } | PodState::BackOff { .. } => PodPhase::Running,
        PodState::Succeeded { .. } => PodPhase::Succeeded,
        PodState::Failed { .. } => PodPhase::Failed,
    };
    PodView {
        id,
        node: rec.node.as_deref().and_then(|n| node_index.get(n).copied()),
        revision,
        created: rec.created,
        ready_since: rec.state.ready_since(),
        phase,
        terminating: false,
        ordinal: 0,
        restarts: rec.state.restarts(),
    }
}

/// What the controller of `o` wants, for the ledger: `desired` pods (DaemonSet: nodes,
/// `per_node`), of which `allowed` may be unavailable.
fn target(
    o: &Object,
    template: &PodTemplateSpec,
    desired: u32,
    allowed: u32,
    min_ready: SignedDuration,
    per_node: bool,
) -> Target {
    let api_version = if o.owner.api_version == "apps/v1" {
        "apps/v1"
    } else {
        "apps.kruise.io/v1alpha1"
    };
    let kind = match o.owner.kind.as_str() {
        "Deployment" => "Deployment",
        "StatefulSet" => "StatefulSet",
        _ => "DaemonSet",
    };
    Target {
        api_version,
        kind,
        namespace: o.owner.namespace.clone(),
        name: o.owner.name.clone(),
        uid: o.owner.uid.clone(),
        owners: vec![o.owner.uid.clone()],
        image: template
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default(),
        desired,
        allowed,
        min_ready,
        per_node,
    }
}

/// The scheduling inputs of a pod template: `nodeSelector` and tolerations.
fn placement(
    template: &PodTemplateSpec,
) -> (
    std::collections::BTreeMap<String, String>,
    Vec<k8s_openapi::api::core::v1::Toleration>,
) {
    let spec = template.spec.as_ref();
    (
        spec.and_then(|s| s.node_selector.clone())
            .unwrap_or_default(),
        spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
    )
}

/// A status condition, keeping `lastTransitionTime` from `old` while the status holds.
fn condition(
    old: Option<&Json>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Json {
    let conds = old.and_then(Json::as_array);
    let prev = conds.and_then(|cs| cs.iter().find(|c| c["type"] == type_));
    let since = match prev {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => time(now),
    };
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": since})
}

fn time(t: Timestamp) -> Json {
    Json::String(t.round(jiff::Unit::Second).unwrap_or(t).to_string())
}

/// Sets `value` at `path` in `v`, making every step on the way an object (a client's
/// object may hold anything where an object is expected; nothing here may panic on it).
fn set(v: &mut Json, path: &[&str], value: Json) {
    let Some((last, parents)) = path.split_last() else {
        *v = value;
        return;
    };
    let mut cur = v;
    for p in parents {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        cur = map.entry(p.to_string()).or_insert(Json::Null);
    }
    if !cur.is_object() {
        *cur = json!({});
    }
    if let Some(map) = cur.as_object_mut() {
        map.insert(last.to_string(), value);
    }
}
