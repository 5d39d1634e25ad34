//! The simulated workload controllers, driver side: read the workload objects clients
//! wrote, ask the pure decisions ([`crate::daemonset`], …) what to do, apply their plans to
//! the cluster's objects and write the workloads' status.
//!
//! ```text
//!  read(state):  DaemonSets (apps/v1, apps.kruise.io/v1alpha1) … → Workload { uid, policy, template }
//!  reconcile:    per workload:  pods it owns → PodView[] ─┐
//!                               nodes        → NodeView[] ┼─▶ plan ─▶ create / delete pods
//!                                                         └─────────▶ status (if changed)
//! ```
//!
//! A workload whose spec does not parse into a policy is left alone and says so in a
//! status condition; the API server's validation normally refuses such objects first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value as Json, json};
use shoal_store::Precondition;

use crate::daemonset::{self, DaemonSetPolicy};
use crate::driver::{Next, NodeInfo, raw};
use crate::kubelet::PodState;
use crate::pod::{NodeView, PodPhase, PodView};
use crate::state::{ClusterState, PodRecord, PodTemplate, Value};
use crate::template::{self, Owner, controller_of, pod_template, revision_hash};

/// The label carrying a pod's template revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// Kinds whose pods the simulator's garbage collector deletes when the owner is gone.
const CONTROLLER_KINDS: &[&str] = &["DaemonSet", "ReplicaSet", "StatefulSet", "BroadcastJob"];

/// Which API a DaemonSet comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DaemonApi {
    AppsV1,
    Kruise,
}

/// One DaemonSet (either API), as read at the start of a step.
#[derive(Debug)]
struct Daemon {
    key: Arc<str>,
    api: DaemonApi,
    obj: Json,
    owner: Owner,
    generation: i64,
    template: PodTemplateSpec,
    policy: Result<DaemonSetPolicy, shoal_core::FieldError>,
}

/// The workloads of one cluster, as read at the start of a step.
#[derive(Debug, Default)]
pub struct Workloads {
    uids: HashSet<String>,
    daemons: Vec<Daemon>,
}

/// Shared pod templates, per (owner uid, revision hash); kept across steps.
pub type TemplateCache = HashMap<(String, String), Arc<PodTemplate>>;

fn parse_daemon(key: &Arc<str>, bytes: &[u8], api: DaemonApi) -> Option<Daemon> {
    let obj: Json = serde_json::from_slice(bytes).ok()?;
    let meta = obj.get("metadata")?;
    let s = |f: &str| meta.get(f).and_then(Json::as_str).unwrap_or("").to_string();
    let owner = Owner {
        api_version: match api {
            DaemonApi::AppsV1 => "apps/v1".into(),
            DaemonApi::Kruise => "apps.kruise.io/v1alpha1".into(),
        },
        kind: "DaemonSet".into(),
        name: s("name"),
        uid: s("uid"),
        namespace: s("namespace"),
    };
    let generation = meta.get("generation").and_then(Json::as_i64).unwrap_or(1);
    let (template, policy) = match api {
        DaemonApi::AppsV1 => {
            let spec: k8s_openapi::api::apps::v1::DaemonSetSpec =
                serde_json::from_value(obj.get("spec")?.clone()).ok()?;
            (spec.template.clone(), DaemonSetPolicy::from_apps_v1(&spec))
        }
        DaemonApi::Kruise => {
            let spec: shoal_core::kinds::AdvancedDaemonSetSpec =
                serde_json::from_value(obj.get("spec")?.clone()).ok()?;
            (spec.template.clone(), DaemonSetPolicy::from_kruise(&spec))
        }
    };
    Some(Daemon {
        key: key.clone(),
        api,
        obj,
        owner,
        generation,
        template,
        policy,
    })
}

impl Workloads {
    /// Reads every workload of the cluster.
    pub fn read(state: &ClusterState) -> Self {
        let mut out = Workloads::default();
        for (group, api) in [
            ("apps", DaemonApi::AppsV1),
            ("apps.kruise.io", DaemonApi::Kruise),
        ] {
            let prefix = template::prefix(group, "daemonsets");
            for (key, entry) in state.range(&prefix, None) {
                if let Value::Raw(bytes) = &entry.value
                    && let Some(d) = parse_daemon(key, bytes, api)
                {
                    out.uids.insert(d.owner.uid.clone());
                    out.daemons.push(d);
                }
            }
        }
        out
    }

    /// Whether a pod owned by `kind`/`uid` still has its controller (pods of kinds the
    /// simulator does not run are never collected).
    pub fn owns(&self, kind: &str, uid: &str) -> bool {
        !CONTROLLER_KINDS.contains(&kind) || self.uids.contains(uid)
    }

    /// Runs every workload's controller once.
    pub fn reconcile(
        &mut self,
        state: &mut ClusterState,
        nodes: &[NodeInfo],
        templates: &mut TemplateCache,
        now: Timestamp,
        names: &mut u64,
        next: &mut Next,
    ) {
        let views: Vec<NodeView<'_>> = nodes
            .iter()
            .map(|n| NodeView {
                name: &n.name,
                labels: &n.labels,
                taints: &n.taints,
                unschedulable: n.unschedulable,
                ready: n.ready,
            })
            .collect();
        let node_index: HashMap<&str, u32> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_ref(), i as u32))
            .collect();
        for d in &self.daemons {
            reconcile_daemon(
                state,
                d,
                nodes,
                &views,
                &node_index,
                templates,
                now,
                names,
                next,
            );
        }
        templates.retain(|(uid, _), _| self.uids.contains(uid));
    }
}

/// The pods a controller owns: (key, record), in key order.
fn owned_pods(state: &ClusterState, namespace: &str, uid: &str) -> Vec<(Arc<str>, Arc<PodRecord>)> {
    let prefix = format!("{}{namespace}/", template::prefix("", "pods"));
    state
        .range(&prefix, None)
        .filter_map(|(k, e)| match &e.value {
            Value::Pod(rec)
                if controller_of(&rec.template.base).is_some_and(|(_, _, u)| u == uid) =>
            {
                Some((k.clone(), rec.clone()))
            }
            _ => None,
        })
        .collect()
}

fn pod_revision_hash(rec: &PodRecord) -> &str {
    rec.template
        .base
        .pointer("/metadata/labels")
        .and_then(|l| l.get(REVISION_LABEL))
        .and_then(Json::as_str)
        .unwrap_or("")
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

/// Creates a pod of `template` on `node`, under a fresh generated name.
fn create_pod(
    state: &mut ClusterState,
    owner: &Owner,
    template: &Arc<PodTemplate>,
    node: Option<Arc<str>>,
    now: Timestamp,
    names: &mut u64,
) {
    let record = Arc::new(PodRecord {
        template: template.clone(),
        uid: uuid::Uuid::new_v4(),
        created: now,
        node,
        state: PodState::created(now),
    });
    // Generated names can collide; like the API server's generateName, try again.
    for _ in 0..16 {
        *names += 1;
        let name = template::pod_name(&owner.name, &owner.uid, *names);
        let key = template::key("", "pods", Some(&owner.namespace), &name);
        if state
            .put(&key, Value::Pod(record.clone()), Precondition::Absent)
            .is_ok()
        {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)] // one call site; a context struct would only rename them
fn reconcile_daemon(
    state: &mut ClusterState,
    d: &Daemon,
    nodes: &[NodeInfo],
    views: &[NodeView<'_>],
    node_index: &HashMap<&str, u32>,
    templates: &mut TemplateCache,
    now: Timestamp,
    names: &mut u64,
    next: &mut Next,
) {
    let policy = match &d.policy {
        Ok(p) => p,
        Err(e) => {
            write_status(
                state,
                d,
                json!({
                    "observedGeneration": d.generation,
                    "conditions": [{"type": "Invalid", "status": "True", "reason": "InvalidSpec",
                                    "message": e.to_string()}],
                }),
            );
            return;
        }
    };
    let update_hash = revision_hash(&d.template);
    let update_template = templates
        .entry((d.owner.uid.clone(), update_hash.clone()))
        .or_insert_with(|| {
            let mut labels = vec![(REVISION_LABEL, update_hash.clone())];
            if d.api == DaemonApi::AppsV1 {
                labels.push(("pod-template-generation", d.generation.to_string()));
            }
            pod_template(&d.owner, &d.template, &labels)
        })
        .clone();
    let pods = owned_pods(state, &d.owner.namespace, &d.owner.uid);
    // Revision 0 is the update revision; every other hash gets its own number.
    let mut revisions: BTreeMap<&str, u32> = BTreeMap::new();
    revisions.insert(update_hash.as_str(), 0);
    let pod_views: Vec<PodView> = pods
        .iter()
        .enumerate()
        .map(|(i, (_, rec))| {
            let n = revisions.len() as u32;
            let rev = *revisions.entry(pod_revision_hash(rec)).or_insert(n);
            view(i as u64, rec, rev, node_index)
        })
        .collect();
    let plan = daemonset::plan(policy, 0, views, &pod_views, now);
    next.at(plan.requeue_at);
    if !plan.is_empty() {
        // Like the real controller's expectations: look again right after this pass.
        next.at(Some(now));
    }
    for id in &plan.delete {
        if let Some((key, _)) = pods.get(*id as usize) {
            let _ = state.delete(key, Precondition::None);
        }
    }
    for c in &plan.create {
        let node = nodes.get(c.node as usize).map(|n| n.name.clone());
        create_pod(state, &d.owner, &update_template, node, now, names);
    }
    let s = plan.status;
    let mut status = json!({
        "observedGeneration": d.generation,
        "desiredNumberScheduled": s.desired_number_scheduled,
        "currentNumberScheduled": s.current_number_scheduled,
        "updatedNumberScheduled": s.updated_number_scheduled,
        "numberReady": s.number_ready,
        "numberAvailable": s.number_available,
        "numberMisscheduled": s.number_misscheduled,
    });
    if s.number_unavailable > 0 {
        status["numberUnavailable"] = json!(s.number_unavailable);
    }
    if d.api == DaemonApi::Kruise {
        status["daemonSetHash"] = json!(update_hash);
    }
    write_status(state, d, status);
}

/// Replaces the workload's status if it changed (a status write is a revision, so an
/// unchanged status is not written).
fn write_status(state: &mut ClusterState, d: &Daemon, status: Json) {
    if d.obj.get("status") == Some(&status) {
        return;
    }
    let Some(entry) = state.get(&d.key) else {
        return;
    };
    let rev = entry.mod_revision;
    let mut obj = d.obj.clone();
    obj["status"] = status;
    // CAS on the revision read: a client write in between wins, the next step redoes this.
    let _ = state.put(&d.key, raw(&obj), Precondition::ModRevision(rev));
}
