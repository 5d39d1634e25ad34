//! One simulated cluster's control loop: node faults, workload controllers, kubelets.
//!
//! ```text
//!  run(ctx):  loop ─┬─ an API write happened (SimCluster::written)  ─┐
//!                   ├─ the next due time passed (polled on the clock) ├─▶ step(now)
//!                   └─ cancelled → return                            ─┘
//!
//!  step(now), under the cluster's lock, published as one batch:
//!    1. adopt:     raw nodes/pods written by clients become compact records again
//!    2. nodes:     fault model → Ready / NotReady (NodeRecord)
//!    3. workloads: DaemonSets, Advanced DaemonSets, … → plan → create/delete pods, status
//!    4. gc:        pods whose controller is gone are deleted
//!    5. kubelet:   every bound pod advanced to `now` (kubelet::step), faults applied
//!    6. ledger:    if anything changed, the workloads' pods recorded (crate::ledger)
//!  → the earliest time anything is due next
//! ```
//!
//! The key decision: the driver keeps no state that matters. Everything it decides from is
//! in the cluster's objects (pod records carry their lifecycle, workloads their spec and
//! status), so a step is a pure function of the objects, the clock and the fault model;
//! the caches here only save re-parsing. The ledger it writes is history, not input: no
//! decision reads it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use serde_json::Value as Json;
use shoal_store::Precondition;
use tokio_util::sync::CancellationToken;

use crate::backend::SimCluster;
use crate::event::{ObjectRef, Recorder, Source};
use crate::faults::{ClusterRef, FaultModel, NodeRef, PodFault};
use crate::kubelet::{self, Conditions, PodState, RestartPolicy, Timing};
use crate::ledger::{Ledger, PodFact, Target};
use crate::runtime::SimConfig;
use crate::state::{ClusterState, Entry, NodeProfile, NodeRecord, PodRecord, PodTemplate, Value};
use crate::template::{self, controller_of};
use crate::workload;

/// The longest a driver sleeps without looking at the clock (real time). A driver sleeps
/// exactly until its next due time when the clock can say when that is (a running clock);
/// this bounds the wait under a stepped or paused clock and after a speed change.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What a cluster's driver needs.
#[derive(Clone, Debug)]
pub struct Context {
    pub cluster: SimCluster,
    pub labels: Arc<BTreeMap<String, String>>,
    pub faults: crate::backend::FaultSlot,
    pub config: SimConfig,
}

/// Drives one cluster until `cancel`.
///
/// # Cancel safety
/// Returns at the next await point after `cancel`; a step is never interrupted midway
/// (it holds no await).
pub async fn run(ctx: Context, cancel: CancellationToken) {
    let mut driver = Driver::new(ctx);
    let mut due: Option<Timestamp> = Some(Timestamp::MIN);
    let mut written = true;
    loop {
        let now = driver.ctx.cluster.clock().now();
        if written || due.is_some_and(|d| d <= now) {
            due = driver.step(now);
        }
        let sleep = due
            .and_then(|d| driver.ctx.cluster.clock().real_until(d))
            .map_or(POLL_INTERVAL, |d| d.min(POLL_INTERVAL));
        written = tokio::select! {
            () = driver.ctx.cluster.written() => true,
            () = tokio::time::sleep(sleep) => false,
            () = cancel.cancelled() => return,
        };
    }
}

/// A cluster's driver: the step function and its caches.
#[derive(Debug)]
pub struct Driver {
    pub ctx: Context,
    /// Counter for generated pod names.
    names: u64,
    /// Pod templates per workload revision, shared by their pods.
    templates: workload::TemplateCache,
    /// When the cluster's oldest event expires (a cache: `MIN` scans on the first step).
    events_due: Option<Timestamp>,
}

/// A node as the step sees it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: Arc<str>,
    pub labels: Arc<BTreeMap<String, String>>,
    pub ready: bool,
    /// NotReady by the fault model (not booting).
    pub faulted: bool,
    pub stalled: bool,
    pub unschedulable: bool,
    pub taints: Arc<Vec<k8s_openapi::api::core::v1::Taint>>,
}

impl Driver {
    pub fn new(ctx: Context) -> Self {
        Driver {
            ctx,
            names: 0,
            templates: workload::TemplateCache::new(),
            events_due: Some(Timestamp::MIN),
        }
    }

    /// Advances the cluster to `now`; returns when it next needs a step.
    pub fn step(&mut self, now: Timestamp) -> Option<Timestamp> {
        let faults = self
            .ctx
            .faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let cluster = self.ctx.cluster.clone();
        cluster.apply(|state| self.step_locked(state, &faults, now))
    }

    fn step_locked(
        &mut self,
        state: &mut ClusterState,
        faults: &FaultModel,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let mut next = Next::default();
        let mut events = Recorder::default();
        adopt(state, now, self.ctx.config.node_boot);
        let nodes = self.nodes(state, faults, now, &mut next);
        let mut ws = workload::Workloads::read(state);
        let node_index: HashMap<&str, &NodeInfo> =
            nodes.iter().map(|n| (n.name.as_ref(), n)).collect();
        let targets = ws.reconcile(
            state,
            workload::Env {
                nodes: &nodes,
                templates: &mut self.templates,
                names: &mut self.names,
                next: &mut next,
                events: &mut events,
                job_duration: self.ctx.config.job_duration,
                now,
            },
        );
        gc(state, &ws, &mut events);
        self.kubelets(state, faults, &node_index, now, &mut next, &mut events);
        self.events_due = events.flush(state, now, self.events_due);
        next.at(self.events_due);
        self.ctx.cluster.ledger_mut(|ledger| {
            if ledger.stale(state.revision()) {
                record(ledger, state, &targets, &node_index, &ws, now);
            }
        });
        next.0
    }

    /// Applies node faults; returns every node as the workloads and kubelets see it.
    fn nodes(
        &self,
        state: &mut ClusterState,
        faults: &FaultModel,
        now: Timestamp,
        next: &mut Next,
    ) -> Vec<NodeInfo> {
        let cluster = ClusterRef {
            name: self.ctx.cluster.name(),
            labels: &self.ctx.labels,
        };
        let prefix = template::prefix("", "nodes");
        let mut out = Vec::new();
        let mut updates = Vec::new();
        for (key, entry) in state.range(&prefix, None) {
            let Value::Node(rec) = &entry.value else {
                continue;
            };
            let name: Arc<str> = Arc::from(&key[prefix.len()..]);
            let f = faults.node_faults(
                cluster,
                NodeRef {
                    name: &name,
                    labels: &rec.profile.labels,
                },
                now,
            );
            next.at(f.next_change);
            let booting = rec.boot_until.filter(|t| *t > now);
            next.at(booting);
            let ready = !f.not_ready && booting.is_none();
            if ready != rec.ready {
                let mut r = NodeRecord::clone(rec);
                r.ready = ready;
                r.ready_since = now;
                r.not_ready_reason = (!ready).then(|| {
                    Arc::from(if booting.is_some() {
                        "booting"
                    } else {
                        "fault profile"
                    })
                });
                updates.push((key.clone(), r));
            }
            out.push(NodeInfo {
                name,
                labels: rec.profile.labels.clone(),
                ready,
                faulted: f.not_ready,
                stalled: f.kubelet_stalled,
                unschedulable: rec.unschedulable,
                taints: rec.profile.taints.clone(),
            });
        }
        for (key, r) in updates {
            let _ = state.put(&key, Value::Node(Arc::new(r)), Precondition::None);
        }
        out
    }

    /// Advances every bound pod to `now`.
    fn kubelets(
        &self,
        state: &mut ClusterState,
        faults: &FaultModel,
        nodes: &HashMap<&str, &NodeInfo>,
        now: Timestamp,
        next: &mut Next,
        events: &mut Recorder,
    ) {
        let cluster = ClusterRef {
            name: self.ctx.cluster.name(),
            labels: &self.ctx.labels,
        };
        let prefix = template::prefix("", "pods");
        let mut updates = Vec::new();
        for (key, entry) in state.range(&prefix, None) {
            let Value::Pod(rec) = &entry.value else {
                continue;
            };
            let Some(node) = rec.node.as_deref().and_then(|n| nodes.get(n)) else {
                continue;
            };
            let fault = rec
                .template
                .containers
                .iter()
                .map(|(_, image)| {
                    faults.pod_fault(
                        cluster,
                        NodeRef {
                            name: &node.name,
                            labels: &node.labels,
                        },
                        image,
                        now,
                    )
                })
                .max_by_key(|f| match f {
                    PodFault::CrashLoop => 2,
                    PodFault::NeverReady => 1,
                    PodFault::None => 0,
                })
                .unwrap_or_default();
            let timing = Timing {
                startup: self.ctx.config.startup_latency,
                ready_after: self.ctx.config.ready_after,
                completes_after: rec.template.completes_after,
                ..Timing::default()
            };
            let step = kubelet::step(
                rec.state,
                now,
                &timing,
                rec.template.restart_policy,
                Conditions {
                    fault,
                    node_ready: node.ready,
                    kubelet_stalled: node.stalled,
                },
            );
            next.at(step.next);
            if step.state != rec.state {
                pod_events(events, key, rec, &node.name, step.state);
                let mut r = PodRecord::clone(rec);
                r.state = step.state;
                updates.push((key.clone(), r));
            }
        }
        if !updates.is_empty() {
            // Workload status counts pods: let the next step see the new states.
            next.at(Some(now));
        }
        for (key, r) in updates {
            let _ = state.put(&key, Value::Pod(Arc::new(r)), Precondition::None);
        }
    }
}

/// Records the cluster's pods in its ledger at `now`.
fn record(
    ledger: &mut Ledger,
    state: &ClusterState,
    targets: &[Target],
    nodes: &HashMap<&str, &NodeInfo>,
    ws: &workload::Workloads,
    now: Timestamp,
) {
    let prefix = template::prefix("", "pods");
    let pods = state.range(&prefix, None).filter_map(|(_, entry)| {
        let Value::Pod(rec) = &entry.value else {
            return None;
        };
        let (_, _, owner) = controller_of(&rec.template.base)?;
        Some(PodFact {
            owner,
            image: rec.template.containers.first().map_or("", |(_, i)| i),
            node: rec.node.as_ref(),
            state: rec.state,
            node_faulted: rec
                .node
                .as_deref()
                .and_then(|n| nodes.get(n))
                .is_some_and(|n| n.faulted),
        })
    });
    ledger.observe(state.revision(), now, targets, pods, |kind, uid| {
        ws.owns(kind, uid)
    });
}

/// The earliest of several due times.
#[derive(Debug, Default)]
pub struct Next(Option<Timestamp>);

impl Next {
    pub fn at(&mut self, t: Option<Timestamp>) {
        if let Some(t) = t {
            self.0 = Some(self.0.map_or(t, |n| n.min(t)));
        }
    }
}

/// Turns raw nodes and pods (written by clients) back into records the simulator drives.
/// The client's object becomes the record's own template, so nothing it wrote is lost.
fn adopt(state: &mut ClusterState, now: Timestamp, node_boot: jiff::SignedDuration) {
    let mut nodes = Vec::new();
    let node_prefix = template::prefix("", "nodes");
    for (key, entry) in state.range(&node_prefix, None) {
        if let Value::Raw(bytes) = &entry.value
            && let Ok(obj) = serde_json::from_slice::<Json>(bytes)
        {
            nodes.push((
                key.clone(),
                adopt_node(obj, now, node_boot),
                entry.mod_revision,
            ));
        }
    }
    for (key, rec, rev) in nodes {
        let _ = state.put(
            &key,
            Value::Node(Arc::new(rec)),
            Precondition::ModRevision(rev),
        );
    }
    let mut pods_out = Vec::new();
    let pod_prefix = template::prefix("", "pods");
    for (key, entry) in state.range(&pod_prefix, None) {
        if let Value::Raw(bytes) = &entry.value
            && let Ok(obj) = serde_json::from_slice::<Json>(bytes)
        {
            pods_out.push((key.clone(), adopt_pod(obj, now), entry.mod_revision));
        }
    }
    for (key, rec, rev) in pods_out {
        let _ = state.put(
            &key,
            Value::Pod(Arc::new(rec)),
            Precondition::ModRevision(rev),
        );
    }
}

fn meta_time(obj: &Json, field: &str) -> Option<Timestamp> {
    obj.pointer(&format!("/metadata/{field}"))
        .and_then(Json::as_str)
        .and_then(|s| s.parse().ok())
}

fn uid_of(obj: &Json) -> uuid::Uuid {
    obj.pointer("/metadata/uid")
        .and_then(Json::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(uuid::Uuid::new_v4)
}

/// A node record whose profile is the client's node object itself. A node without a
/// Ready condition is new: it boots for `node_boot` before it reports Ready.
fn adopt_node(mut obj: Json, now: Timestamp, node_boot: jiff::SignedDuration) -> NodeRecord {
    let uid = uid_of(&obj);
    let created = meta_time(&obj, "creationTimestamp").unwrap_or(now);
    let ready_condition = obj
        .pointer("/status/conditions")
        .and_then(Json::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"] == "True");
    let boot_until = ready_condition
        .is_none()
        .then(|| now.saturating_add(node_boot).unwrap_or(now));
    let ready = ready_condition.unwrap_or(false);
    let unschedulable = obj
        .pointer("/spec/unschedulable")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    if let Some(meta) = obj.get_mut("metadata").and_then(Json::as_object_mut) {
        for f in ["name", "uid", "creationTimestamp", "resourceVersion"] {
            meta.remove(f);
        }
    }
    if let Some(spec) = obj.get_mut("spec").and_then(Json::as_object_mut) {
        spec.remove("unschedulable");
    }
    if let Some(status) = obj.get_mut("status").and_then(Json::as_object_mut) {
        status.remove("conditions");
        status.remove("addresses");
    }
    NodeRecord {
        profile: Arc::new(NodeProfile::from_base(obj)),
        uid,
        created,
        ready,
        ready_since: now,
        not_ready_reason: boot_until.map(|_| Arc::from("booting")),
        unschedulable,
        boot_until,
    }
}

/// A pod record whose template is the client's pod object itself; its lifecycle resumes
/// from the status it shows.
fn adopt_pod(mut obj: Json, now: Timestamp) -> PodRecord {
    let uid = uid_of(&obj);
    let created = meta_time(&obj, "creationTimestamp").unwrap_or(now);
    let node: Option<Arc<str>> = obj
        .pointer("/spec/nodeName")
        .and_then(Json::as_str)
        .map(Arc::from);
    let phase = obj.pointer("/status/phase").and_then(Json::as_str);
    let ready = obj
        .pointer("/status/conditions")
        .and_then(Json::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True");
    let restarts = obj
        .pointer("/status/containerStatuses/0/restartCount")
        .and_then(Json::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let state = match phase {
        Some("Running") => PodState::Running {
            started: now,
            ready_since: ready.then_some(now),
            restarts,
        },
        Some("Succeeded") => PodState::Succeeded { at: now, restarts },
        Some("Failed") => PodState::Failed { at: now, restarts },
        _ => PodState::created(now),
    };
    if let Some(meta) = obj.get_mut("metadata").and_then(Json::as_object_mut) {
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "resourceVersion",
        ] {
            meta.remove(f);
        }
    }
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    if let Some(spec) = obj.get_mut("spec").and_then(Json::as_object_mut) {
        spec.remove("nodeName");
    }
    PodRecord {
        template: Arc::new(PodTemplate::from_base(obj)),
        uid,
        created,
        node,
        state,
    }
}

/// Deletes pods whose controller no longer exists (Kubernetes' garbage collector).
fn gc(state: &mut ClusterState, ws: &workload::Workloads, events: &mut Recorder) {
    let prefix = template::prefix("", "pods");
    let orphans: Vec<(Arc<str>, Arc<PodRecord>)> = state
        .range(&prefix, None)
        .filter_map(|(key, entry)| {
            let Value::Pod(rec) = &entry.value else {
                return None;
            };
            let (kind, _, uid) = controller_of(&rec.template.base)?;
            (!ws.owns(kind, uid)).then(|| (key.clone(), rec.clone()))
        })
        .collect();
    for (key, rec) in orphans {
        if state.delete(&key, Precondition::None).is_ok() {
            workload::killing(events, &key, &rec);
        }
    }
}

/// The kubelet's events for a pod moving to `to`: image pulled, container created and
/// started on (re)entering Running; `BackOff` on entering a crash-loop back-off.
fn pod_events(events: &mut Recorder, key: &str, rec: &PodRecord, node: &Arc<str>, to: PodState) {
    let ns = crate::state::namespace_of(key);
    let name = key.rsplit('/').next().unwrap_or(key);
    let container = |c: &str| ObjectRef::pod(ns, name, rec.uid, Some(c));
    let source = Source::kubelet(node);
    let (was_running, was_backoff) = match rec.state {
        PodState::Running { restarts, .. } => (Some(restarts), None),
        PodState::BackOff { restarts, .. } => (None, Some(restarts)),
        _ => (None, None),
    };
    match to {
        PodState::Running { restarts, .. } if was_running != Some(restarts) => {
            for (c, image) in &rec.template.containers {
                let pulled = if restarts == 0 {
                    format!("Successfully pulled image \"{image}\"")
                } else {
                    format!("Container image \"{image}\" already present on machine")
                };
                events.normal(source.clone(), container(c), "Pulled", pulled);
                events.normal(
                    source.clone(),
                    container(c),
                    "Created",
                    format!("Created container {c}"),
                );
                events.normal(
                    source.clone(),
                    container(c),
                    "Started",
                    format!("Started container {c}"),
                );
            }
        }
        PodState::BackOff { restarts, .. } if was_backoff != Some(restarts) => {
            for (c, _) in &rec.template.containers {
                events.warning(
                    source.clone(),
                    container(c),
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {c} in pod {name}_{ns}({})",
                        rec.uid
                    ),
                );
            }
        }
        _ => {}
    }
}

/// A raw JSON value for the store.
pub fn raw(v: &Json) -> Value {
    Value::Raw(Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
}

/// The entry's JSON (rendered for compact values).
pub fn json_of(key: &str, entry: &Entry, now: Timestamp) -> Option<Json> {
    Some(
        entry
            .value
            .to_json(key, crate::state::RenderContext { now }),
    )
    .filter(|v| !v.is_null())
}

/// `spec.restartPolicy` of a pod spec.
pub fn restart_policy(spec: &Json) -> RestartPolicy {
    match spec.get("restartPolicy").and_then(Json::as_str) {
        Some("Never") => RestartPolicy::Never,
        Some("OnFailure") => RestartPolicy::OnFailure,
        _ => RestartPolicy::Always,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultProfile;
    use crate::runtime::Simulation;
    use jiff::SignedDuration;
    use shoal_core::clock::{Clock, ManualClock};

    fn t0() -> Timestamp {
        "2026-11-22T08:00:00Z".parse().unwrap()
    }

    fn sim(clusters: u32, nodes: u32) -> (Simulation, ManualClock) {
        let clock = ManualClock::new(t0());
        let sim = Simulation::build(
            &crate::fleet::uniform(clusters, nodes),
            Arc::new(clock.clone()),
            SimConfig::default(),
        );
        (sim, clock)
    }

    fn driver(sim: &Simulation, i: usize) -> Driver {
        let m = &sim.members()[i];
        Driver::new(Context {
            cluster: m.cluster.clone(),
            labels: m.labels.clone(),
            faults: sim.fault_handle(),
            config: SimConfig::default(),
        })
    }

    fn pod_json(sim: &Simulation, key: &str, now: Timestamp) -> Json {
        sim.members()[0]
            .cluster
            .read(|s| json_of(key, s.get(key).expect("pod exists"), now))
            .unwrap()
    }

    #[test]
    fn a_pod_written_by_a_client_is_started_by_the_simulated_kubelet() {
        let (sim, clock) = sim(1, 2);
        let node = crate::fleet::uniform(1, 2).clusters[0].node_name(0);
        let key = template::key("", "pods", Some("default"), "web");
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "uid": "9d3c3c1e-0000-4000-8000-000000000001",
                         "creationTimestamp": t0().to_string()},
            "spec": {"nodeName": node, "containers": [{"name": "web", "image": "nginx:1"}]}});
        sim.members()[0]
            .cluster
            .apply(|s| s.put(&key, raw(&obj), Precondition::Absent).unwrap());
        let mut d = driver(&sim, 0);
        let next = d.step(clock.now());
        assert_eq!(
            pod_json(&sim, &key, clock.now())["status"]["phase"],
            "Pending"
        );
        assert_eq!(
            next,
            Some(t0() + SignedDuration::from_secs(5)),
            "due when it starts"
        );
        clock.advance(SignedDuration::from_secs(10));
        d.step(clock.now());
        let pod = pod_json(&sim, &key, clock.now());
        assert_eq!(pod["status"]["phase"], "Running");
        assert_eq!(pod["status"]["conditions"][3]["status"], "True", "{pod}");
        assert_eq!(
            pod["metadata"]["uid"],
            "9d3c3c1e-0000-4000-8000-000000000001"
        );
        assert_eq!(pod["spec"]["nodeName"], node.as_str());
    }

    #[test]
    fn a_zone_outage_takes_its_nodes_not_ready_and_back() {
        let (sim, clock) = sim(1, 6);
        let profile = FaultProfile::from_yaml(
            "seed: 1\nfaults:\n  - nodeNotReady: {name: zone-a, zone: sim-1-a, after: 1m, duration: 10m}\n",
        )
        .unwrap();
        sim.set_faults(FaultModel::compile(&profile, t0()).unwrap());
        let mut d = driver(&sim, 0);
        let not_ready = |sim: &Simulation, now| {
            let prefix = template::prefix("", "nodes");
            sim.members()[0].cluster.read(|s| {
                s.range(&prefix, None)
                    .filter(|(k, e)| {
                        json_of(k, e, now).unwrap()["status"]["conditions"][3]["status"] != "True"
                    })
                    .count()
            })
        };
        d.step(clock.now());
        assert_eq!(not_ready(&sim, clock.now()), 0);
        clock.advance(SignedDuration::from_secs(120));
        d.step(clock.now());
        let down = not_ready(&sim, clock.now());
        assert!(down > 0 && down < 6, "{down} of 6 nodes down: only zone a");
        clock.advance(SignedDuration::from_secs(600));
        d.step(clock.now());
        assert_eq!(not_ready(&sim, clock.now()), 0, "the zone is back");
    }

    fn put_ds(sim: &Simulation, api: &str, image: &str, generation: i64, partition: Option<i64>) {
        let (group, kind_api) = match api {
            "kruise" => ("apps.kruise.io", "apps.kruise.io/v1alpha1"),
            _ => ("apps", "apps/v1"),
        };
        let mut strategy = serde_json::json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 1}});
        if let Some(p) = partition {
            strategy["rollingUpdate"]["partition"] = serde_json::json!(p);
        }
        let obj = serde_json::json!({"apiVersion": kind_api, "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "kube-system", "generation": generation,
                         "uid": "00000000-0000-4000-8000-0000000000d5",
                         "creationTimestamp": t0().to_string()},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "updateStrategy": strategy,
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"containers": [{"name": "agent", "image": image}]}}}});
        let key = template::key(group, "daemonsets", Some("kube-system"), "agent");
        sim.members()[0]
            .cluster
            .apply(|s| s.put(&key, raw(&obj), Precondition::None).unwrap());
    }

    /// (image, ready) of every pod.
    fn agent_pods(sim: &Simulation) -> Vec<(String, bool)> {
        let prefix = template::prefix("", "pods");
        sim.members()[0].cluster.read(|s| {
            s.range(&prefix, None)
                .filter_map(|(_, e)| match &e.value {
                    Value::Pod(p) => Some((p.template.containers[0].1.clone(), p.state.is_ready())),
                    _ => None,
                })
                .collect()
        })
    }

    fn run_for(d: &mut Driver, clock: &ManualClock, secs: i64, mut each: impl FnMut()) {
        for _ in 0..secs {
            d.step(clock.now());
            each();
            clock.advance(SignedDuration::from_secs(1));
        }
    }

    #[test]
    fn a_daemonset_runs_a_pod_per_node_and_rolls_one_node_at_a_time() {
        let (sim, clock) = sim(1, 5);
        put_ds(&sim, "apps", "agent:1", 1, None);
        let mut d = driver(&sim, 0);
        run_for(&mut d, &clock, 30, || {});
        let pods = agent_pods(&sim);
        assert_eq!(pods.len(), 5);
        assert!(
            pods.iter().all(|(img, ready)| img == "agent:1" && *ready),
            "{pods:?}"
        );
        put_ds(&sim, "apps", "agent:2", 2, None);
        let mut worst = 0;
        run_for(&mut d, &clock, 200, || {
            let pods = agent_pods(&sim);
            let available = pods.iter().filter(|(_, r)| *r).count();
            worst = worst.max(5 - available.min(5));
        });
        let pods = agent_pods(&sim);
        assert_eq!(pods.len(), 5);
        assert!(
            pods.iter().all(|(img, ready)| img == "agent:2" && *ready),
            "{pods:?}"
        );
        assert_eq!(
            worst, 1,
            "maxUnavailable 1: at most one node without a ready pod"
        );
        let key = template::key("apps", "daemonsets", Some("kube-system"), "agent");
        let ds = sim.members()[0]
            .cluster
            .read(|s| json_of(&key, s.get(&key).unwrap(), clock.now()))
            .unwrap();
        assert_eq!(ds["status"]["updatedNumberScheduled"], 5, "{ds}");
        assert_eq!(ds["status"]["numberAvailable"], 5);
        assert_eq!(ds["status"]["observedGeneration"], 2);
    }

    #[test]
    fn an_advanced_daemonset_partition_keeps_that_many_pods_on_the_old_version() {
        let (sim, clock) = sim(1, 5);
        put_ds(&sim, "kruise", "agent:1", 1, None);
        let mut d = driver(&sim, 0);
        run_for(&mut d, &clock, 30, || {});
        put_ds(&sim, "kruise", "agent:2", 2, Some(2));
        run_for(&mut d, &clock, 200, || {});
        let mut images: Vec<String> = agent_pods(&sim).into_iter().map(|(i, _)| i).collect();
        images.sort();
        assert_eq!(
            images,
            vec!["agent:1", "agent:1", "agent:2", "agent:2", "agent:2"]
        );
    }

    #[test]
    fn deleting_a_daemonset_collects_its_pods() {
        let (sim, clock) = sim(1, 3);
        put_ds(&sim, "apps", "agent:1", 1, None);
        let mut d = driver(&sim, 0);
        run_for(&mut d, &clock, 5, || {});
        assert_eq!(agent_pods(&sim).len(), 3);
        let key = template::key("apps", "daemonsets", Some("kube-system"), "agent");
        sim.members()[0]
            .cluster
            .apply(|s| s.delete(&key, Precondition::None).unwrap());
        run_for(&mut d, &clock, 2, || {});
        assert!(agent_pods(&sim).is_empty());
    }
}
