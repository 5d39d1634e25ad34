//! Kubernetes Events (`core/v1`) that the simulated scheduler, kubelets and controllers
//! emit, so `kubectl describe` and `kubectl get events` read like a real cluster's.
//!
//! ```text
//!  step(now):  workloads / gc / kubelets ──emit──▶ Recorder (pending, merged by name)
//!              end of step ──flush──▶ /registry/core/events/{ns}/{object}.{hash}
//!                                       new name:      create (count 1)
//!                                       existing name: count += n, lastTimestamp = now
//!                                     prune: keep the MAX_EVENTS most recently touched,
//!                                            drop those untouched for EVENT_TTL
//!              → when the oldest event expires (the driver steps then)
//! ```
//!
//! An event is emitted on a transition only (a pod created, started, crashed, deleted; a
//! ReplicaSet scaled), never for an unchanged step, so a quiet cluster writes nothing.
//!
//! The key decision: an event's name is a hash of (object uid, field path, reason,
//! message), not of the time. A repeated occurrence — the tenth `BackOff` of a crash
//! loop — finds its earlier event and bumps `count` and `lastTimestamp`, as the client-go
//! event correlator does, instead of adding an object per occurrence. Events are raw JSON
//! compact records rendered on read (clients may also create and delete events, which
//! are kept as the JSON they wrote).

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value as Json, json};
use shoal_store::Precondition;

use crate::driver::raw;
use crate::state::{ClusterState, Value};
use crate::template::{self, fnv1a};

/// Events a cluster keeps. kube-apiserver drops events after an hour (`--event-ttl`);
/// the simulator bounds them by count instead, so memory and watch history stay
/// proportional to the cluster, not to how long it ran: 500 covers the full story of a
/// rollout over ~70 pods (about seven events per replaced pod) and every recent warning.
pub const MAX_EVENTS: usize = 500;

/// How long an event nobody repeats is kept: kube-apiserver's default `--event-ttl`.
/// After a fleet-wide rollout every cluster holds a burst of events (~700 bytes each);
/// expiring them returns a quiet fleet to the memory it had before.
pub const EVENT_TTL: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// `type` of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// What an event is about (`involvedObject`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.containers{name}` for container events.
    pub field_path: Option<String>,
}

impl ObjectRef {
    /// A pod, or one of its containers.
    pub fn pod(namespace: &str, name: &str, uid: uuid::Uuid, container: Option<&str>) -> Self {
        ObjectRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.to_string(),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
        }
    }

    /// A workload, by the owner reference its pods carry.
    pub fn owner(owner: &template::Owner) -> Self {
        ObjectRef {
            api_version: owner.api_version.clone(),
            kind: owner.kind.clone(),
            namespace: owner.namespace.clone(),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
            field_path: None,
        }
    }
}

/// Who reports an event (`source`): a component, and the node for kubelets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub component: &'static str,
    pub host: Option<Arc<str>>,
}

impl Source {
    pub const SCHEDULER: Source = Source {
        component: "default-scheduler",
        host: None,
    };

    pub fn controller(component: &'static str) -> Self {
        Source {
            component,
            host: None,
        }
    }

    pub fn kubelet(node: &Arc<str>) -> Self {
        Source {
            component: "kubelet",
            host: Some(node.clone()),
        }
    }
}

/// A stored event, kept compact and rendered on read (~200 bytes instead of ~700 of JSON,
/// which matters at 500 events × thousands of clusters).
#[derive(Clone, Debug)]
pub struct EventRecord {
    pub uid: uuid::Uuid,
    pub object: ObjectRef,
    pub source: Source,
    pub severity: Severity,
    pub reason: &'static str,
    pub message: String,
    pub count: u32,
    pub first: Timestamp,
    pub last: Timestamp,
}

impl EventRecord {
    /// The Event object stored at `key`.
    pub fn to_json(&self, key: &str) -> Json {
        let name = key.rsplit('/').next().unwrap_or(key);
        let mut involved = json!({
            "apiVersion": self.object.api_version,
            "kind": self.object.kind,
            "namespace": self.object.namespace,
            "name": self.object.name,
            "uid": self.object.uid,
        });
        if let Some(f) = &self.object.field_path {
            involved["fieldPath"] = json!(f);
        }
        let mut source = json!({"component": self.source.component});
        if let Some(h) = &self.source.host {
            source["host"] = json!(h.as_ref());
        }
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": name,
                "namespace": self.object.namespace,
                "uid": self.uid.to_string(),
                "creationTimestamp": time(self.first),
            },
            "involvedObject": involved,
            "reason": self.reason,
            "message": self.message,
            "type": match self.severity { Severity::Normal => "Normal", Severity::Warning => "Warning" },
            "source": source,
            "firstTimestamp": time(self.first),
            "lastTimestamp": time(self.last),
            "count": self.count,
            "reportingComponent": self.source.component,
            "reportingInstance": self.source.host.as_deref().unwrap_or(""),
        })
    }
}

/// One pending event.
#[derive(Clone, Debug)]
struct Pending {
    object: ObjectRef,
    source: Source,
    severity: Severity,
    reason: &'static str,
    message: String,
    count: u32,
}

/// The events of one step, written together at its end.
#[derive(Debug, Default)]
pub struct Recorder {
    pending: BTreeMap<String, Pending>,
    /// How many events the cluster holds, as of the last prune plus those created since
    /// (`None` until the first prune). Lets a step skip the prune scan, which sorts every
    /// event, while the cluster is under [`MAX_EVENTS`] and nothing has expired.
    count: Option<usize>,
}

impl Recorder {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// How many distinct events are pending.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Records an event; the same event twice in one step counts twice.
    pub fn emit(
        &mut self,
        source: Source,
        object: ObjectRef,
        severity: Severity,
        reason: &'static str,
        message: String,
    ) {
        let key = event_key(&object, reason, &message);
        self.pending
            .entry(key)
            .and_modify(|p| p.count = p.count.saturating_add(1))
            .or_insert(Pending {
                object,
                source,
                severity,
                reason,
                message,
                count: 1,
            });
    }

    pub fn normal(
        &mut self,
        source: Source,
        object: ObjectRef,
        reason: &'static str,
        message: String,
    ) {
        self.emit(source, object, Severity::Normal, reason, message);
    }

    pub fn warning(
        &mut self,
        source: Source,
        object: ObjectRef,
        reason: &'static str,
        message: String,
    ) {
        self.emit(source, object, Severity::Warning, reason, message);
    }

    /// Writes the pending events at `now`, prunes the cluster's events to [`MAX_EVENTS`]
    /// and drops those older than [`EVENT_TTL`]; returns when the oldest remaining event
    /// expires. `due` is what the previous call returned: with nothing pending and
    /// nothing expired yet, nothing is read (a step costs nothing here).
    pub fn flush(
        &mut self,
        state: &mut ClusterState,
        now: Timestamp,
        due: Option<Timestamp>,
    ) -> Option<Timestamp> {
        if self.pending.is_empty() && due.is_none_or(|d| d > now) {
            return due;
        }
        let mut created = 0;
        for (key, p) in std::mem::take(&mut self.pending) {
            let (value, cond) = match state.get(&key) {
                Some(e) => {
                    let rev = Precondition::ModRevision(e.mod_revision);
                    match &e.value {
                        Value::Event(rec) => {
                            let mut r = EventRecord::clone(rec);
                            r.count = r.count.saturating_add(p.count);
                            r.last = now;
                            (Value::Event(Arc::new(r)), rev)
                        }
                        // A client's event under the same name: bump it as JSON.
                        Value::Raw(b) => {
                            let Ok(mut v) = serde_json::from_slice::<Json>(b) else {
                                continue;
                            };
                            let count = v.get("count").and_then(Json::as_u64).unwrap_or(1);
                            v["count"] = json!(count.saturating_add(u64::from(p.count)));
                            v["lastTimestamp"] = time(now);
                            (raw(&v), rev)
                        }
                        _ => continue,
                    }
                }
                None => (
                    Value::Event(Arc::new(EventRecord {
                        uid: uuid::Uuid::new_v4(),
                        object: p.object,
                        source: p.source,
                        severity: p.severity,
                        reason: p.reason,
                        message: p.message,
                        count: p.count,
                        first: now,
                        last: now,
                    })),
                    Precondition::Absent,
                ),
            };
            if state.put(&key, value, cond).is_ok() && cond == Precondition::Absent {
                created += 1;
            }
        }
        let count = self.count.map(|c| c + created);
        if count.is_some_and(|c| c <= MAX_EVENTS) && due.is_none_or(|d| d > now) {
            self.count = count;
            // A new event expires last; an older one, if any, sets the due time already.
            return due.or_else(|| now.checked_add(EVENT_TTL).ok());
        }
        let (due, remaining) = prune(state, MAX_EVENTS, now);
        self.count = Some(remaining);
        due
    }
}

/// The storage key of an event: `{object}.{16 hex digits}`, the shape of Kubernetes'
/// event names, hashed from what makes the event the same event.
fn event_key(object: &ObjectRef, reason: &str, message: &str) -> String {
    let h = fnv1a(&[
        object.uid.as_bytes(),
        object.field_path.as_deref().unwrap_or("").as_bytes(),
        reason.as_bytes(),
        message.as_bytes(),
    ]);
    let name = format!("{}.{h:016x}", object.name);
    template::key("", "events", Some(&object.namespace), &name)
}

fn time(t: Timestamp) -> Json {
    Json::String(t.round(jiff::Unit::Second).unwrap_or(t).to_string())
}

/// Deletes the least recently touched events beyond `keep` and those untouched for
/// [`EVENT_TTL`]; returns when the oldest remaining one expires, and how many remain. Touch order is
/// `mod_revision` order, and `lastTimestamp` grows with it, so the scan for expired
/// events stops at the first live one.
fn prune(state: &mut ClusterState, keep: usize, now: Timestamp) -> (Option<Timestamp>, usize) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Stamp {
        last_timestamp: Option<Timestamp>,
    }
    let prefix = template::prefix("", "events");
    let mut all: Vec<(shoal_store::Revision, Arc<str>)> = state
        .range(&prefix, None)
        .map(|(k, e)| (e.mod_revision, k.clone()))
        .collect();
    all.sort_unstable();
    let excess = all.len().saturating_sub(keep);
    let mut due = None;
    let mut doomed: Vec<Arc<str>> = Vec::new();
    for (i, (_, key)) in all.iter().enumerate() {
        if i < excess {
            doomed.push(key.clone());
            continue;
        }
        let stamp = state.get(key).and_then(|e| match &e.value {
            Value::Event(rec) => Some(rec.last),
            Value::Raw(b) => serde_json::from_slice::<Stamp>(b).ok()?.last_timestamp,
            _ => None,
        });
        // An event without a time (a client's) expires with the next one that has one.
        let Some(expires) = stamp.and_then(|t| t.checked_add(EVENT_TTL).ok()) else {
            continue;
        };
        if expires <= now {
            doomed.push(key.clone());
        } else {
            due = Some(expires);
            break;
        }
    }
    let remaining = all.len() - doomed.len();
    for key in doomed {
        let _ = state.delete(&key, Precondition::None);
    }
    (due, remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Timestamp {
        "2026-11-22T08:00:00Z".parse().unwrap()
    }

    fn events(state: &ClusterState) -> Vec<Json> {
        state
            .range(&template::prefix("", "events"), None)
            .filter_map(|(k, e)| match &e.value {
                Value::Raw(b) => serde_json::from_slice(b).ok(),
                Value::Event(rec) => Some(rec.to_json(k)),
                _ => None,
            })
            .collect()
    }

    fn pod(i: u128) -> ObjectRef {
        ObjectRef::pod(
            "default",
            &format!("web-{i}"),
            uuid::Uuid::from_u128(i),
            None,
        )
    }

    #[test]
    fn a_repeated_event_bumps_its_count_instead_of_adding_an_object() {
        let mut state = ClusterState::default();
        let mut rec = Recorder::default();
        for _ in 0..2 {
            rec.warning(
                Source::kubelet(&Arc::from("n-1")),
                pod(1),
                "BackOff",
                "Back-off restarting failed container".into(),
            );
        }
        rec.flush(&mut state, t0(), None);
        rec.warning(
            Source::kubelet(&Arc::from("n-1")),
            pod(1),
            "BackOff",
            "Back-off restarting failed container".into(),
        );
        rec.flush(&mut state, t0() + jiff::SignedDuration::from_secs(30), None);
        let evs = events(&state);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0]["count"], 3);
        assert_eq!(evs[0]["type"], "Warning");
        assert_eq!(evs[0]["involvedObject"]["name"], "web-1");
        assert_eq!(evs[0]["source"]["host"], "n-1");
        assert_eq!(evs[0]["lastTimestamp"], "2026-11-22T08:00:30Z");
        assert_eq!(evs[0]["firstTimestamp"], "2026-11-22T08:00:00Z");
    }

    #[test]
    fn a_cluster_keeps_only_the_most_recent_events() {
        let mut state = ClusterState::default();
        let mut rec = Recorder::default();
        for i in 0..(MAX_EVENTS as u128 + 40) {
            rec.normal(Source::SCHEDULER, pod(i), "Scheduled", format!("pod {i}"));
            if i % 100 == 0 {
                rec.flush(&mut state, t0(), None);
            }
        }
        rec.flush(&mut state, t0(), None);
        let evs = events(&state);
        assert_eq!(evs.len(), MAX_EVENTS);
        assert!(
            evs.iter().all(|e| e["involvedObject"]["name"] != "web-0"),
            "the oldest went first"
        );
        assert!(rec.is_empty());
    }

    #[test]
    fn events_expire_after_the_ttl_and_say_when() {
        let mut state = ClusterState::default();
        let mut rec = Recorder::default();
        rec.normal(Source::SCHEDULER, pod(1), "Scheduled", "first".into());
        let due = rec.flush(&mut state, t0(), None);
        assert_eq!(due, Some(t0() + EVENT_TTL));
        let later = t0() + jiff::SignedDuration::from_mins(30);
        rec.normal(Source::SCHEDULER, pod(2), "Scheduled", "second".into());
        assert_eq!(
            rec.flush(&mut state, later, due),
            due,
            "the first still expires first"
        );
        let rev = state.revision();
        assert_eq!(rec.flush(&mut state, later, due), due);
        assert_eq!(
            state.revision(),
            rev,
            "nothing pending, nothing due: no work"
        );
        let due = rec.flush(&mut state, t0() + EVENT_TTL, due);
        assert_eq!(events(&state).len(), 1);
        assert_eq!(due, Some(later + EVENT_TTL));
        assert_eq!(rec.flush(&mut state, later + EVENT_TTL, due), None);
        assert!(events(&state).is_empty());
    }
}
