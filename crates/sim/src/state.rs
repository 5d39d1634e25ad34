//! One simulated cluster's objects: etcd's data model with compact values.
//!
//! ```text
//!  ClusterState
//!  ├─ objects:  BTreeMap<key, Entry>     current state, key order (ranges are BTreeMap ranges)
//!  │             Entry = Value + create/mod revision + version
//!  │             Value = Raw(JSON bytes)          what clients wrote (Deployments, ConfigMaps…)
//!  │                   | Node(Arc<NodeRecord>)    a simulated node: ~100 bytes, rendered on read
//!  │                   | Pod(Arc<PodRecord>)      a controller-made pod: ~100 bytes, rendered on read
//!  ├─ history:  RetainedLog<Change>      the last 75 s of revisions (real time), memory-capped
//!  └─ revision, compacted
//! ```
//!
//! The key design decision: **what the simulator makes is kept compact and rendered on
//! read.** A pod of a DaemonSet is its template (shared by every pod of that revision) plus
//! a handful of fields (uid, node, lifecycle); a node is its profile (shared by every node of
//! that shape) plus its name and condition. The Kubernetes object is built when someone
//! reads or watches it, so 100,000 nodes and pods cost megabytes, not gigabytes, and a
//! cluster nobody watches never renders anything. What clients write through the API is
//! kept as they wrote it (`Raw`): a client can overwrite a simulated object (label a node),
//! after which it is raw JSON like any other, and the simulator edits it as JSON.
//!
//! History is bounded per cluster by time, as kube-apiserver's watch cache is: a watcher
//! that is a few seconds behind resumes however many revisions a burst wrote meanwhile;
//! one that fell further behind than the window (or than the memory cap, in an extreme
//! burst) gets "compacted" (410) and relists, which every Kubernetes client does. The
//! API server's bookmarks keep an idle watcher's resourceVersion recent.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use jiff::Timestamp;
use serde_json::{Value as Json, json};
use shoal_store::history::{DEFAULT_HISTORY_WINDOW, RetainedLog, Retention};
use shoal_store::{Error, Event, Guard, KeyValue, Precondition, Result, Revision};

use crate::kubelet::PodState;

/// The most memory one cluster's history may hold by default. Live watchers get every
/// event from the watch hub as it happens; history only serves a watcher that starts from
/// an older resourceVersion or falls behind, and within the 75 s window it is bounded by
/// the cluster's write rate. A change costs about 200 bytes (more for raw objects, and
/// it pins the records it replaced), so 1 MiB holds ~5,000 changes: ten DaemonSet
/// rollouts over 100 nodes inside one window. An idle cluster holds none after the window.
pub const DEFAULT_HISTORY_BYTES: usize = 1 << 20;

/// A cluster's default history: [`DEFAULT_HISTORY_WINDOW`] of real time, capped at
/// [`DEFAULT_HISTORY_BYTES`].
pub const DEFAULT_RETENTION: Retention = Retention {
    window: DEFAULT_HISTORY_WINDOW,
    max_bytes: DEFAULT_HISTORY_BYTES,
};

/// How a stored object is kept.
#[derive(Clone, Debug)]
pub enum Value {
    /// JSON as written through the API (without `resourceVersion`).
    Raw(Bytes),
    /// A node the simulator made.
    Node(Arc<NodeRecord>),
    /// A pod a simulated controller made.
    Pod(Arc<PodRecord>),
    /// An event the simulator emitted.
    Event(Arc<crate::event::EventRecord>),
}

impl Value {
    /// The object stored at `key` as JSON (`Null` for raw bytes that are not JSON).
    pub fn to_json(&self, key: &str, ctx: RenderContext) -> Json {
        match self {
            Value::Raw(b) => serde_json::from_slice(b).unwrap_or(Json::Null),
            Value::Node(n) => n.to_json(key, ctx),
            Value::Pod(p) => p.to_json(key),
            Value::Event(e) => e.to_json(key),
        }
    }
}

/// One key's current state.
#[derive(Clone, Debug)]
pub struct Entry {
    pub value: Value,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
}

/// One revision's change: `next` is `None` for a delete.
#[derive(Clone, Debug)]
struct Change {
    revision: Revision,
    key: Arc<str>,
    prev: Option<Entry>,
    next: Option<Entry>,
}

impl Change {
    /// What keeping this change in history costs, roughly: the change itself, its key,
    /// and the bytes or records its values hold (a record it replaced stays alive for
    /// history's sake).
    fn footprint(&self) -> usize {
        let value = |entry: &Option<Entry>| match entry.as_ref().map(|e| &e.value) {
            None => 0,
            Some(Value::Raw(bytes)) => bytes.len(),
            Some(Value::Node(_)) => std::mem::size_of::<NodeRecord>(),
            Some(Value::Pod(_)) => std::mem::size_of::<PodRecord>(),
            Some(Value::Event(e)) => {
                std::mem::size_of::<crate::event::EventRecord>() + e.message.len()
            }
        };
        std::mem::size_of::<Change>() + self.key.len() + value(&self.prev) + value(&self.next)
    }
}

/// What rendering needs besides the record: the cluster's `now` (node heartbeats).
#[derive(Clone, Copy, Debug)]
pub struct RenderContext {
    pub now: Timestamp,
}

/// The objects of one simulated cluster.
#[derive(Debug)]
pub struct ClusterState {
    objects: BTreeMap<Arc<str>, Entry>,
    revision: Revision,
    compacted: Revision,
    /// One change per revision in `(compacted, revision]`, oldest first.
    history: RetainedLog<Change>,
}

impl Default for ClusterState {
    fn default() -> Self {
        Self::new(DEFAULT_RETENTION)
    }
}

impl ClusterState {
    /// An empty cluster at revision 0 keeping history for watchers as `retention` says.
    pub fn new(retention: Retention) -> Self {
        ClusterState {
            objects: BTreeMap::new(),
            revision: 0,
            compacted: 0,
            history: RetainedLog::new(retention),
        }
    }

    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn compacted(&self) -> Revision {
        self.compacted
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.objects.get(key)
    }

    /// The entries under `prefix` after `start_after`, in key order.
    pub fn range<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Arc<str>, &'a Entry)> + 'a {
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.objects
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// The key's state as the store reports it, for precondition checks (no rendering).
    fn meta(&self, key: &str) -> Option<KeyValue> {
        self.objects.get(key).map(|e| KeyValue {
            key: key.to_owned(),
            value: Bytes::new(),
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
            version: e.version,
            lease: None,
        })
    }

    /// Fills a failed precondition's `current` with the key's rendered value, as a client
    /// reading the key would see it.
    pub fn explain(&self, err: Error, ctx: RenderContext) -> Error {
        match err {
            Error::PreconditionFailed {
                key,
                current: Some(_),
            } => {
                let current = self
                    .objects
                    .get(key.as_str())
                    .map(|e| Box::new(render(&key, e, ctx)));
                Error::PreconditionFailed { key, current }
            }
            other => other,
        }
    }

    /// Checks `guards` and the key's own precondition without writing.
    ///
    /// # Errors
    /// [`Error::PreconditionFailed`] naming the key whose condition does not hold.
    pub fn check(&self, guards: &[Guard], key: &str, cond: Precondition) -> Result<()> {
        for guard in guards {
            guard
                .cond
                .check(&guard.key, self.meta(&guard.key).as_ref())?;
        }
        cond.check(key, self.meta(key).as_ref())
    }

    /// Writes `value` at `key` at the next revision; returns the new and the previous entry.
    ///
    /// # Errors
    /// [`Error::PreconditionFailed`] when `cond` does not hold.
    pub fn put(
        &mut self,
        key: &str,
        value: Value,
        cond: Precondition,
    ) -> Result<(Entry, Option<Entry>)> {
        cond.check(key, self.meta(key).as_ref())?;
        let revision = self.revision + 1;
        let (key, prev) = match self.objects.get_key_value(key) {
            Some((k, e)) => (k.clone(), Some(e.clone())),
            None => (Arc::<str>::from(key), None),
        };
        let entry = Entry {
            value,
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
        };
        self.objects.insert(key.clone(), entry.clone());
        self.record(Change {
            revision,
            key,
            prev: prev.clone(),
            next: Some(entry.clone()),
        });
        Ok((entry, prev))
    }

    /// Deletes `key` at the next revision; returns the entry it had and the revision.
    ///
    /// # Errors
    /// [`Error::PreconditionFailed`] when the key is missing or `cond` does not hold;
    /// [`Error::InvalidArgument`] for `Precondition::Absent`.
    pub fn delete(&mut self, key: &str, cond: Precondition) -> Result<(Entry, Revision)> {
        if cond == Precondition::Absent {
            return Err(Error::InvalidArgument(
                "a delete cannot require the key to be absent".into(),
            ));
        }
        let meta = self.meta(key);
        Precondition::Present.check(key, meta.as_ref())?;
        cond.check(key, meta.as_ref())?;
        let (key, prev) = self
            .objects
            .remove_entry(key)
            .expect("checked present above");
        let revision = self.revision + 1;
        self.record(Change {
            revision,
            key,
            prev: Some(prev.clone()),
            next: None,
        });
        Ok((prev, revision))
    }

    fn record(&mut self, change: Change) {
        self.record_at(change, Instant::now());
    }

    fn record_at(&mut self, change: Change, now: Instant) {
        self.revision = change.revision;
        let bytes = change.footprint();
        if let Some(old) = self.history.push(change, bytes, now) {
            self.compacted = old.revision;
        }
    }

    /// Forgets history older than the window even when nothing is written (a write does
    /// it too): a watch from before it is then answered "compacted".
    pub fn expire_history(&mut self) {
        self.expire_history_at(Instant::now());
    }

    fn expire_history_at(&mut self, now: Instant) {
        if let Some(old) = self.history.expire(now) {
            self.compacted = old.revision;
        }
    }

    /// Forgets history up to `revision`.
    ///
    /// # Errors
    /// [`Error::FutureRevision`] beyond the current revision.
    pub fn compact(&mut self, revision: Revision) -> Result<()> {
        if revision > self.revision {
            return Err(Error::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        while self.history.front().is_some_and(|c| c.revision <= revision) {
            self.history.pop_front();
        }
        self.compacted = self.compacted.max(revision);
        Ok(())
    }

    /// The events under `prefix` with revision in `(after, through]`, rendered.
    ///
    /// # Errors
    /// [`Error::Compacted`] when `after` is below the retained history.
    pub fn events(
        &self,
        prefix: &str,
        after: Revision,
        through: Revision,
        ctx: RenderContext,
    ) -> Result<Vec<Event>> {
        if after < self.compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted: self.compacted,
            });
        }
        // history[i] holds revision compacted + 1 + i.
        let start = usize::try_from(after - self.compacted).unwrap_or(0);
        let end = usize::try_from(through - self.compacted)
            .unwrap_or(0)
            .min(self.history.len());
        Ok(self
            .history
            .range(start.min(end)..end)
            .filter(|c| c.key.starts_with(prefix))
            .map(|c| change_event(c, ctx))
            .collect())
    }
}

fn change_event(c: &Change, ctx: RenderContext) -> Event {
    let prev = c.prev.as_ref().map(|e| render(&c.key, e, ctx));
    match &c.next {
        Some(e) => Event::Put {
            kv: render(&c.key, e, ctx),
            prev,
        },
        None => Event::Delete {
            prev: prev.expect("a delete has a previous value"),
            revision: c.revision,
        },
    }
}

/// The stored form of `entry` at `key`: the bytes a client reads (without resourceVersion).
pub fn render(key: &str, entry: &Entry, ctx: RenderContext) -> KeyValue {
    let value = match &entry.value {
        // Raw JSON is served as written, without a parse.
        Value::Raw(b) => b.clone(),
        compact => Bytes::from(serde_json::to_vec(&compact.to_json(key, ctx)).unwrap_or_default()),
    };
    KeyValue {
        key: key.to_owned(),
        value,
        create_revision: entry.create_revision,
        mod_revision: entry.mod_revision,
        version: entry.version,
        lease: None,
    }
}

/// The last path segment of a key: the object's name.
fn name_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The namespace segment of a namespaced key (`…/{namespace}/{name}`).
pub(crate) fn namespace_of(key: &str) -> &str {
    let mut it = key.rsplit('/');
    it.next();
    it.next().unwrap_or("default")
}

fn time(t: Timestamp) -> Json {
    // Kubernetes' metav1.Time has second precision.
    Json::String(t.round(jiff::Unit::Second).unwrap_or(t).to_string())
}

/// What nodes of one shape share: everything of the Node object but its identity and
/// condition (labels, nodeInfo, capacity), pre-built once.
#[derive(Debug)]
pub struct NodeProfile {
    /// A Node object without `metadata.name/uid/creationTimestamp` and without
    /// `status.conditions`.
    pub base: Json,
    /// `base`'s labels and taints, for scheduling and fault decisions (shared with every
    /// step's node views: a step clones no label map).
    pub labels: Arc<BTreeMap<String, String>>,
    pub taints: Arc<Vec<k8s_openapi::api::core::v1::Taint>>,
}

impl NodeProfile {
    /// A profile from a Node object without identity and conditions.
    pub fn from_base(base: Json) -> Self {
        let labels = base
            .pointer("/metadata/labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        let taints = base
            .pointer("/spec/taints")
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_default();
        NodeProfile {
            base,
            labels: Arc::new(labels),
            taints: Arc::new(taints),
        }
    }
}

/// A simulated node.
#[derive(Clone, Debug)]
pub struct NodeRecord {
    pub profile: Arc<NodeProfile>,
    pub uid: uuid::Uuid,
    pub created: Timestamp,
    /// The Ready condition and when it last changed.
    pub ready: bool,
    pub ready_since: Timestamp,
    /// The reason of a NotReady condition (a fault's name).
    pub not_ready_reason: Option<Arc<str>>,
    pub unschedulable: bool,
    /// A node a client just created boots until then (NotReady); `None`: booted.
    pub boot_until: Option<Timestamp>,
}

/// How often a node's heartbeat shows as renewed (the kubelet's status report period).
const HEARTBEAT_SECONDS: i64 = 40;

impl NodeRecord {
    /// The Node object.
    pub fn to_json(&self, key: &str, ctx: RenderContext) -> Json {
        let name = name_of(key);
        let mut v = self.profile.base.clone();
        let meta = ensure_object(&mut v, "metadata");
        meta.insert("name".into(), json!(name));
        meta.insert("uid".into(), json!(self.uid.to_string()));
        meta.insert("creationTimestamp".into(), time(self.created));
        ensure_object_in(meta, "labels").insert("kubernetes.io/hostname".into(), json!(name));
        if self.unschedulable {
            ensure_object(&mut v, "spec").insert("unschedulable".into(), json!(true));
        }
        // A ready node heartbeats: the last report is the latest period boundary.
        let heartbeat = if self.ready {
            let secs = ctx.now.as_second();
            let beat = secs - secs.rem_euclid(HEARTBEAT_SECONDS);
            Timestamp::from_second(beat)
                .unwrap_or(ctx.now)
                .max(self.ready_since)
        } else {
            self.ready_since
        };
        let (status, reason, message) = if self.ready {
            (
                "True",
                "KubeletReady",
                "kubelet is posting ready status".to_string(),
            )
        } else {
            let why = self
                .not_ready_reason
                .as_deref()
                .unwrap_or("NodeStatusUnknown");
            (
                "Unknown",
                "NodeStatusUnknown",
                format!("Kubelet stopped posting node status ({why})."),
            )
        };
        let pressure = |t: &str, reason: &str| {
            json!({"type": t, "status": "False", "reason": reason,
                   "lastHeartbeatTime": time(heartbeat), "lastTransitionTime": time(self.created)})
        };
        let status_obj = ensure_object(&mut v, "status");
        status_obj.insert(
            "conditions".into(),
            json!([
                pressure("MemoryPressure", "KubeletHasSufficientMemory"),
                pressure("DiskPressure", "KubeletHasNoDiskPressure"),
                pressure("PIDPressure", "KubeletHasSufficientPID"),
                {"type": "Ready", "status": status, "reason": reason, "message": message,
                 "lastHeartbeatTime": time(heartbeat), "lastTransitionTime": time(self.ready_since)}
            ]),
        );
        let ip = ip_of(self.uid);
        status_obj.insert(
            "addresses".into(),
            json!([{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]),
        );
        v
    }
}

/// A stable private address for an object, from its uid.
pub fn ip_of(uid: uuid::Uuid) -> String {
    let b = uid.as_bytes();
    format!("10.{}.{}.{}", b[0], b[1], b[2].max(1))
}

fn ensure_object<'a>(v: &'a mut Json, field: &str) -> &'a mut serde_json::Map<String, Json> {
    if !v.is_object() {
        *v = json!({});
    }
    let map = v.as_object_mut().expect("made an object above");
    ensure_object_in(map, field)
}

fn ensure_object_in<'a>(
    map: &'a mut serde_json::Map<String, Json>,
    field: &str,
) -> &'a mut serde_json::Map<String, Json> {
    let slot = map.entry(field.to_string()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("made an object above")
}

/// What pods of one revision of one workload share: the template as the pod's metadata and
/// spec, with the owner reference and revision labels already in place.
#[derive(Debug)]
pub struct PodTemplate {
    /// `{"metadata": {labels, annotations, ownerReferences, generateName}, "spec": {...}}`.
    pub base: Json,
    /// The containers' names and images, in order (for container statuses).
    pub containers: Vec<(String, String)>,
    pub restart_policy: crate::kubelet::RestartPolicy,
    /// How long the containers run before exiting 0 (job pods); `None`: until stopped.
    pub completes_after: Option<jiff::SignedDuration>,
}

impl PodTemplate {
    /// A template from a Pod object without identity, node and status.
    pub fn from_base(base: Json) -> Self {
        let containers = base
            .pointer("/spec/containers")
            .and_then(Json::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        let s = |f: &str| c.get(f).and_then(Json::as_str).unwrap_or("").to_string();
                        (s("name"), s("image"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let restart_policy = crate::driver::restart_policy(base.get("spec").unwrap_or(&Json::Null));
        PodTemplate {
            base,
            containers,
            restart_policy,
            completes_after: None,
        }
    }
}

/// A pod a simulated controller made (or a client created and the simulator adopted).
#[derive(Clone, Debug)]
pub struct PodRecord {
    pub template: Arc<PodTemplate>,
    pub uid: uuid::Uuid,
    pub created: Timestamp,
    /// The node it is bound to; `None`: Pending, unschedulable.
    pub node: Option<Arc<str>>,
    /// Its lifecycle on the node (meaningless while unbound).
    pub state: PodState,
}

impl PodRecord {
    /// The Pod object.
    pub fn to_json(&self, key: &str) -> Json {
        let mut v = self.template.base.clone();
        let meta = ensure_object(&mut v, "metadata");
        meta.insert("name".into(), json!(name_of(key)));
        meta.insert("namespace".into(), json!(namespace_of(key)));
        meta.insert("uid".into(), json!(self.uid.to_string()));
        meta.insert("creationTimestamp".into(), time(self.created));
        if let Some(node) = &self.node {
            ensure_object(&mut v, "spec").insert("nodeName".into(), json!(node.as_ref()));
        }
        if self.node.is_none() {
            let status = json!({
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/0 nodes are available: no node matches the pod's scheduling constraints.",
                    "lastTransitionTime": time(self.created)}],
                "qosClass": "BestEffort",
            });
            if let Some(obj) = v.as_object_mut() {
                obj.insert("status".into(), status);
            }
            return v;
        }
        let st = self.state;
        let ready = st.is_ready();
        let transition = match st {
            PodState::Creating { since } => since,
            PodState::Running {
                started,
                ready_since,
                ..
            } => ready_since.unwrap_or(started),
            PodState::BackOff { until, .. } => until,
            PodState::Succeeded { at, .. } | PodState::Failed { at, .. } => at,
        };
        let t = time(transition);
        let cond = |ty: &str, ok: bool| json!({"type": ty, "status": if ok {"True"} else {"False"}, "lastTransitionTime": t});
        let restarts = st.restarts();
        let containers: Vec<Json> = self
            .template
            .containers
            .iter()
            .map(|(name, image)| {
                let state = match st {
                    PodState::Creating { .. } => {
                        json!({"waiting": {"reason": "ContainerCreating"}})
                    }
                    PodState::Running { started, .. } => {
                        json!({"running": {"startedAt": time(started)}})
                    }
                    PodState::BackOff { .. } => json!({"waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": format!("back-off restarting failed container {name}")}}),
                    PodState::Succeeded { at, .. } => json!({"terminated": {"exitCode": 0,
                        "reason": "Completed", "finishedAt": time(at)}}),
                    PodState::Failed { at, .. } => json!({"terminated": {"exitCode": 1,
                        "reason": "Error", "finishedAt": time(at)}}),
                };
                let mut c = json!({
                    "name": name, "image": image, "imageID": "", "ready": ready,
                    "restartCount": restarts,
                    "started": matches!(st, PodState::Running { .. }),
                    "state": state,
                });
                if restarts > 0 {
                    c["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
                }
                c
            })
            .collect();
        let status = json!({
            "phase": st.phase(),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": time(self.created)},
                {"type": "Initialized", "status": "True", "lastTransitionTime": time(self.created)},
                cond("ContainersReady", ready),
                cond("Ready", ready),
            ],
            "qosClass": "BestEffort",
            "startTime": time(self.created),
            "podIP": ip_of(self.uid),
            "containerStatuses": containers,
        });
        if let Some(obj) = v.as_object_mut() {
            obj.insert("status".into(), status);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Value {
        Value::Raw(Bytes::from(s.to_owned()))
    }

    fn ctx() -> RenderContext {
        RenderContext {
            now: "2026-11-22T08:00:30Z".parse().unwrap(),
        }
    }

    #[test]
    fn revisions_count_every_change_and_cas_is_enforced() {
        let mut st = ClusterState::default();
        let (e, prev) = st.put("/a", raw("1"), Precondition::Absent).unwrap();
        assert_eq!((e.create_revision, e.mod_revision, e.version), (1, 1, 1));
        assert!(prev.is_none());
        assert!(st.put("/a", raw("x"), Precondition::Absent).is_err());
        assert!(
            st.put("/a", raw("x"), Precondition::ModRevision(7))
                .is_err()
        );
        let (e, prev) = st
            .put("/a", raw("2"), Precondition::ModRevision(1))
            .unwrap();
        assert_eq!((e.create_revision, e.mod_revision, e.version), (1, 2, 2));
        assert_eq!(prev.unwrap().mod_revision, 1);
        let (_, rev) = st.delete("/a", Precondition::None).unwrap();
        assert_eq!(rev, 3);
        assert!(st.delete("/a", Precondition::None).is_err());
        assert_eq!(st.revision(), 3);
    }

    #[test]
    fn a_burst_inside_the_window_keeps_a_watcher_that_is_seconds_behind() {
        // Regression (issue 23): a fixed count of 256 revisions expired a watcher that
        // was seconds behind while a fleet registered. A burst of thousands of writes
        // inside the window keeps all of it.
        let mut st = ClusterState::default();
        let behind = st.revision();
        for i in 0..5_000 {
            st.put(&format!("/k/{i}"), raw("{}"), Precondition::None)
                .unwrap();
        }
        assert_eq!(st.compacted(), 0, "nothing inside the window was forgotten");
        let events = st.events("/k/", behind, st.revision(), ctx()).unwrap();
        assert_eq!(events.len(), 5_000);
        let events = st.events("/k/4999", behind, st.revision(), ctx()).unwrap();
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn history_older_than_the_window_is_gone() {
        let mut st = ClusterState::default();
        for i in 0..10 {
            st.put(&format!("/k/{i}"), raw("{}"), Precondition::None)
                .unwrap();
        }
        let later = Instant::now() + DEFAULT_HISTORY_WINDOW + std::time::Duration::from_secs(1);
        st.expire_history_at(later);
        assert_eq!(st.compacted(), 10);
        assert!(matches!(
            st.events("/k/", 5, 10, ctx()),
            Err(Error::Compacted {
                requested: 5,
                compacted: 10
            })
        ));
        // A watcher that has seen everything resumes from the head.
        assert!(st.events("/k/", 10, 10, ctx()).unwrap().is_empty());
        // A write after the window is kept, and evicts what the window no longer holds.
        let mut st = ClusterState::default();
        st.put("/k/old", raw("{}"), Precondition::None).unwrap();
        let change = Change {
            revision: 2,
            key: Arc::from("/k/new"),
            prev: None,
            next: st.get("/k/old").cloned(),
        };
        st.record_at(change, later);
        assert_eq!((st.compacted(), st.revision()), (1, 2));
        assert_eq!(st.events("/k/", 1, 2, ctx()).unwrap().len(), 1);
    }

    #[test]
    fn over_its_memory_cap_history_forgets_the_oldest_first() {
        let retention = Retention {
            window: DEFAULT_HISTORY_WINDOW,
            max_bytes: 10 * 1024,
        };
        let mut st = ClusterState::new(retention);
        for i in 0..1_000 {
            st.put(&format!("/k/{i}"), raw("{}"), Precondition::None)
                .unwrap();
        }
        let compacted = st.compacted();
        assert!(
            compacted > 0 && compacted < 1_000,
            "a 10 KiB cap keeps some history, not all: compacted at {compacted}"
        );
        assert!(matches!(
            st.events("/k/", compacted - 1, 1_000, ctx()),
            Err(Error::Compacted { .. })
        ));
        let kept = st.events("/k/", compacted, 1_000, ctx()).unwrap();
        let revisions: Vec<_> = kept.iter().map(Event::revision).collect();
        assert_eq!(revisions, (compacted + 1..=1_000).collect::<Vec<_>>());
    }

    #[test]
    fn ranges_stay_inside_their_prefix() {
        let mut st = ClusterState::default();
        for k in ["/p/a/1", "/p/a/2", "/p/b/1", "/q/1"] {
            st.put(k, raw("{}"), Precondition::None).unwrap();
        }
        let keys: Vec<_> = st
            .range("/p/a/", None)
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(keys, vec!["/p/a/1", "/p/a/2"]);
        let keys: Vec<_> = st
            .range("/p/", Some("/p/a/2"))
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(keys, vec!["/p/b/1"]);
    }

    #[test]
    fn a_simulated_node_renders_as_a_node_with_a_ready_condition() {
        let profile = Arc::new(NodeProfile::from_base(
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"labels": {"topology.kubernetes.io/zone": "z1"}},
                   "status": {"nodeInfo": {"kernelVersion": "5.10"}}}),
        ));
        let node = NodeRecord {
            profile,
            uid: uuid::Uuid::from_u128(7),
            created: "2026-11-22T07:00:00Z".parse().unwrap(),
            ready: true,
            ready_since: "2026-11-22T07:00:00Z".parse().unwrap(),
            not_ready_reason: None,
            unschedulable: false,
            boot_until: None,
        };
        let v = node.to_json("/registry/core/nodes/n-1", ctx());
        assert_eq!(v["metadata"]["name"], "n-1");
        assert_eq!(v["metadata"]["labels"]["kubernetes.io/hostname"], "n-1");
        assert_eq!(v["metadata"]["labels"]["topology.kubernetes.io/zone"], "z1");
        let ready = &v["status"]["conditions"][3];
        assert_eq!(ready["type"], "Ready");
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["lastHeartbeatTime"], "2026-11-22T08:00:00Z");
    }

    #[test]
    fn a_crash_looping_pod_renders_the_reason_kubectl_shows() {
        let template = Arc::new(PodTemplate::from_base(
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"labels": {"app": "agent"}},
                   "spec": {"containers": [{"name": "agent", "image": "agent:bad"}]}}),
        ));
        let pod = PodRecord {
            template,
            uid: uuid::Uuid::from_u128(9),
            created: "2026-11-22T07:00:00Z".parse().unwrap(),
            node: Some("n-1".into()),
            state: PodState::BackOff {
                until: "2026-11-22T07:01:00Z".parse().unwrap(),
                restarts: 3,
            },
        };
        let v = pod.to_json("/registry/core/pods/kube-system/agent-abc");
        assert_eq!(v["metadata"]["namespace"], "kube-system");
        assert_eq!(v["spec"]["nodeName"], "n-1");
        let c = &v["status"]["containerStatuses"][0];
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c["restartCount"], 3);
        assert_eq!(v["status"]["phase"], "Running");
    }
}
