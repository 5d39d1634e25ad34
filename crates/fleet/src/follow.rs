//! Following one workload's rollout with watches instead of a GET loop: what a release
//! step reads while it waits for a batch to become healthy and while it bakes.
//!
//! ```text
//!  Follow::start(workload) ──LIST+WATCH──▶ the workload, by metadata.name  ─┐
//!                          ──LIST+WATCH──▶ its pods, by its selector        ├─▶ State ─▶ reading()
//!                             (each pod kept as name → crash-looping?)      │     └─▶ changed() wakes
//!                          errors: retried with backoff, the first failure ─┘         the waiter
//!                                  time kept so the caller can give up
//! ```
//!
//! The key decision: a wait costs two watches per step whatever its length (the polling
//! it replaces read the workload and listed its pods every two virtual seconds), and a
//! pod is kept as its name and one bit, so following hundreds of clusters at once holds
//! no full Pod objects. What a watch delivers is a real observation of the member, so a
//! reading from it may fail a check; whether the member was merely slow to answer is a
//! separate signal ([`Reading::Failing`]), never a verdict.
//!
//! The watches are shared, as an informer is: a release's precheck and its steps on one
//! cluster follow the same workload one after the other, seconds apart, and each would
//! otherwise list it and its hundred pods again. A [`Follow`] started while another of
//! the same workload, on the same member client, is alive or was dropped less than the
//! fleet's linger ago ([`LINGER`]) joins its watches; the watches stop once the last
//! follow has been gone that long, or at once if they are failing then (nobody waits
//! on them, and a member that answers 503 should not be listed again and again for
//! nobody). A share is joined even while its watches fail: a second set would fail the
//! same way and double the member's load; what fails is told apart by client (new
//! credentials, new watches), so a share never outlives the client it was made with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::Api;
use kube::core::NamespaceResourceScope;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Deserialize;
use serde_json::Value;

use crate::health::{WorkloadHealth, assess};
use crate::{Fleet, Member, Result};

/// Server-side timeout of each watch request: a watch is re-opened (from its last
/// resourceVersion) after this, well inside the client's own read timeout.
const WATCH_TIMEOUT_SECS: u32 = 240;

/// How long a workload's watches outlive the last [`Follow`] of it: long enough for the
/// next step of a release on the same cluster to join them, short enough that a fleet
/// whose release moved on holds no watches for long.
pub const LINGER: Duration = Duration::from_secs(30);

/// The watches being shared, by what they follow.
#[derive(Clone, Debug)]
pub(crate) struct Shares {
    map: Arc<Mutex<HashMap<ShareKey, Arc<Shared>>>>,
    linger: Duration,
}

impl Default for Shares {
    fn default() -> Self {
        Shares::lingering(LINGER)
    }
}

impl Shares {
    pub(crate) fn lingering(linger: Duration) -> Self {
        Shares {
            map: Arc::default(),
            linger,
        }
    }

    /// Workloads whose watches are open now, followed or lingering.
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// What a share follows: on which member client, which object, which pods.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ShareKey {
    member: String,
    epoch: u64,
    /// `apiVersion KIND namespace/name`.
    object: String,
    selector: Option<String>,
}

/// The watches of one workload and what they delivered, shared by its follows.
#[derive(Debug)]
struct Shared {
    kind: String,
    target: String,
    state: Arc<Mutex<State>>,
    changes: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
    /// Follows using it now; changed under the shares' lock.
    users: std::sync::atomic::AtomicUsize,
    /// How many times its last user left: a sweep scheduled at one leaving does nothing
    /// if another user came and left since (that one's sweep decides).
    leavings: std::sync::atomic::AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A workload being followed; its watches stop [`LINGER`] after the last follow of it
/// is dropped.
#[derive(Debug)]
pub struct Follow {
    shared: Arc<Shared>,
    changes: tokio::sync::watch::Receiver<u64>,
    key: ShareKey,
    shares: Shares,
}

impl Drop for Follow {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        let map = self.shares.map.lock().unwrap_or_else(|p| p.into_inner());
        if self.shared.users.fetch_sub(1, SeqCst) != 1 {
            return;
        }
        let leaving = self.shared.leavings.fetch_add(1, SeqCst) + 1;
        let failing = self
            .shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failing
            .is_some();
        drop(map);
        let (map, key, shared) = (
            self.shares.map.clone(),
            self.key.clone(),
            Arc::downgrade(&self.shared),
        );
        let sweep = move || {
            let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
            let idle = shared
                .upgrade()
                .is_some_and(|s| s.users.load(SeqCst) == 0 && s.leavings.load(SeqCst) == leaving);
            let same = map
                .get(&key)
                .is_some_and(|s| shared.ptr_eq(&Arc::downgrade(s)));
            if idle && same {
                map.remove(&key);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if !failing => {
                let linger = self.shares.linger;
                rt.spawn(async move {
                    tokio::time::sleep(linger).await;
                    sweep();
                });
            }
            // Failing, or no runtime to wait on: the watches stop now.
            _ => sweep(),
        }
    }
}

/// What the watches have delivered so far.
#[derive(Debug, Default)]
struct State {
    /// The workload once listed (`None` inside: it does not exist).
    object: Option<Option<Value>>,
    /// Pods once listed: name → crash-looping.
    pods: Option<HashMap<String, bool>>,
    /// Pods listed so far by a (re)list in progress.
    pods_relisting: Option<HashMap<String, bool>>,
    /// When the watches started failing, and the latest error; cleared by any event.
    failing: Option<(Instant, String)>,
}

/// One look at a followed workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// The first list of the workload or of its pods has not arrived yet.
    Syncing,
    /// The workload does not exist.
    Absent,
    /// The workload as last observed, with the generation its status was computed for.
    Observed {
        health: WorkloadHealth,
        /// `metadata.generation` of the object observed.
        generation: i64,
    },
    /// The member has not answered the watches for `for_` (its latest error): a
    /// transient condition of the member or of shoal, not a reading of the workload.
    Failing { for_: Duration, error: String },
}

impl Follow {
    /// Starts following `object` (a rendered workload: its apiVersion, kind, namespace,
    /// name and `spec.selector.matchLabels`) on `member`.
    ///
    /// # Errors
    /// An invalid object, or a kind the member does not serve (discovery).
    pub async fn start(fleet: &Fleet, member: &Member, object: &Value) -> Result<Follow> {
        let (api, target) = fleet.api_for(member, object).await?;
        let namespace = target.namespace.clone().unwrap_or_else(|| "default".into());
        let selector: Option<String> = object
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                    .collect::<Vec<_>>()
                    .join(",")
            });
        let key = ShareKey {
            member: member.name.clone(),
            epoch: member.epoch,
            object: format!("{} {target}", target.api_version),
            selector: selector.clone(),
        };
        let shares = &fleet.follows;
        let join = |shared: &Arc<Shared>| {
            shared
                .users
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Follow {
                changes: shared.changes.subscribe(),
                shared: shared.clone(),
                key: key.clone(),
                shares: shares.clone(),
            }
        };
        {
            let map = shares.map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(shared) = map.get(&key)
                && !shared.task.is_finished()
            {
                return Ok(join(shared));
            }
        }
        let state = Arc::new(Mutex::new(State {
            // A workload without a selector has no pods to follow.
            pods: selector.is_none().then(HashMap::new),
            ..State::default()
        }));
        let tx = tokio::sync::watch::Sender::new(0u64);
        let config = watcher::Config::default()
            .fields(&format!("metadata.name={}", target.name))
            .timeout(WATCH_TIMEOUT_SECS);
        let objects = watcher(api, config)
            .default_backoff()
            .map(Update::Object)
            .boxed();
        let updates = match selector {
            Some(selector) => {
                let pods: Api<PodCrash> = Api::namespaced(member.client.clone(), &namespace);
                let config = watcher::Config::default()
                    .labels(&selector)
                    .timeout(WATCH_TIMEOUT_SECS);
                let pods = watcher(pods, config).default_backoff().map(Update::Pod);
                futures::stream::select(objects, pods).boxed()
            }
            None => objects,
        };
        let task = tokio::spawn(pump(updates, state.clone(), tx.clone()));
        let shared = Arc::new(Shared {
            kind: target.kind.clone(),
            target: target.to_string(),
            state,
            changes: tx,
            task,
            users: std::sync::atomic::AtomicUsize::new(0),
            leavings: std::sync::atomic::AtomicU64::new(0),
        });
        let mut map = shares.map.lock().unwrap_or_else(|p| p.into_inner());
        // Two follows that started at once both made watches: the second is kept for
        // the next to join, the first stops with its own follow.
        map.insert(key.clone(), shared.clone());
        Ok(join(&shared))
    }

    /// The workload as the watches last saw it.
    pub fn reading(&self) -> Reading {
        let state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((since, error)) = &state.failing {
            return Reading::Failing {
                for_: since.elapsed(),
                error: error.clone(),
            };
        }
        let (Some(object), Some(pods)) = (&state.object, &state.pods) else {
            return Reading::Syncing;
        };
        let Some(object) = object else {
            return Reading::Absent;
        };
        let mut crashing: Vec<String> = pods
            .iter()
            .filter(|(_, crashing)| **crashing)
            .map(|(name, _)| name.clone())
            .collect();
        crashing.sort_unstable();
        match assess(&self.shared.kind, object, &crashing) {
            Ok(health) => Reading::Observed {
                health,
                generation: crate::health::at(object, "/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            },
            Err(e) => Reading::Failing {
                for_: Duration::ZERO,
                error: e.to_string(),
            },
        }
    }

    /// The live workload object, once listed and if it exists.
    pub fn object(&self) -> Option<Value> {
        let state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.object.clone().flatten()
    }

    /// Waits until the watches deliver something new (or their task ends).
    ///
    /// # Cancel safety
    /// Cancel safe: a change that arrives meanwhile is seen by the next call.
    pub async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            // The pump ended (it never does on its own): nothing more will come.
            std::future::pending::<()>().await;
        }
    }

    /// `KIND namespace/name` of the followed workload, for messages.
    pub fn target(&self) -> &str {
        &self.shared.target
    }
}

/// One item of either watch.
enum Update {
    Object(std::result::Result<watcher::Event<kube::api::DynamicObject>, watcher::Error>),
    Pod(std::result::Result<watcher::Event<PodCrash>, watcher::Error>),
}

/// Applies the watches' events to `state` until the follow is dropped.
async fn pump(
    mut updates: futures::stream::BoxStream<'static, Update>,
    state: Arc<Mutex<State>>,
    tx: tokio::sync::watch::Sender<u64>,
) {
    while let Some(update) = updates.next().await {
        {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            match update {
                Update::Object(Ok(event)) => {
                    s.failing = None;
                    match event {
                        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                            s.object = Some(serde_json::to_value(&o).ok());
                        }
                        watcher::Event::Delete(_) => s.object = Some(None),
                        // A (re)list that finds nothing: the object is gone.
                        watcher::Event::InitDone if s.object.is_none() => s.object = Some(None),
                        watcher::Event::Init | watcher::Event::InitDone => {}
                    }
                }
                Update::Pod(Ok(event)) => {
                    s.failing = None;
                    match event {
                        watcher::Event::Init => s.pods_relisting = Some(HashMap::new()),
                        watcher::Event::InitApply(p) => {
                            let crashing = p.crash_looping();
                            s.pods_relisting
                                .get_or_insert_with(HashMap::new)
                                .insert(p.name(), crashing);
                        }
                        watcher::Event::InitDone => {
                            s.pods = Some(s.pods_relisting.take().unwrap_or_default());
                        }
                        watcher::Event::Apply(p) => {
                            let crashing = p.crash_looping();
                            s.pods
                                .get_or_insert_with(HashMap::new)
                                .insert(p.name(), crashing);
                        }
                        watcher::Event::Delete(p) => {
                            if let Some(pods) = &mut s.pods {
                                pods.remove(&p.name());
                            }
                        }
                    }
                }
                Update::Object(Err(e)) | Update::Pod(Err(e)) => {
                    let error = chain(&e);
                    match &mut s.failing {
                        Some((_, last)) => *last = error,
                        None => s.failing = Some((Instant::now(), error)),
                    }
                }
            }
        }
        tx.send_modify(|n| *n += 1);
    }
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// What following reads of a Pod: its name and whether a container is crash-looping.
/// Everything else (spec, most of the status, managedFields) is skipped by the parser.
#[derive(Clone, Debug, Deserialize)]
struct PodCrash {
    #[serde(deserialize_with = "lean_meta")]
    metadata: ObjectMeta,
    #[serde(default)]
    status: Option<PodCrashStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodCrashStatus {
    #[serde(default)]
    container_statuses: Vec<ContainerCrash>,
}

#[derive(Clone, Debug, Deserialize)]
struct ContainerCrash {
    #[serde(default)]
    state: Option<ContainerCrashState>,
}

#[derive(Clone, Debug, Deserialize)]
struct ContainerCrashState {
    #[serde(default)]
    waiting: Option<ContainerWaiting>,
}

#[derive(Clone, Debug, Deserialize)]
struct ContainerWaiting {
    #[serde(default)]
    reason: Option<String>,
}

impl PodCrash {
    fn name(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }

    fn crash_looping(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.container_statuses.iter().any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
            })
        })
    }
}

/// The metadata a watch needs of an object (name, namespace, resourceVersion), without
/// building the rest.
fn lean_meta<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Lean {
        name: Option<String>,
        namespace: Option<String>,
        resource_version: Option<String>,
    }
    let lean = Lean::deserialize(d)?;
    Ok(ObjectMeta {
        name: lean.name,
        namespace: lean.namespace,
        resource_version: lean.resource_version,
        ..ObjectMeta::default()
    })
}

impl Resource for PodCrash {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        Pod::kind(&())
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        Pod::group(&())
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        Pod::version(&())
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        Pod::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_read_as_its_name_and_whether_it_crash_loops() {
        let pod: PodCrash = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "agent-x", "namespace": "kube-system", "resourceVersion": "7",
                         "labels": {"app": "agent"}, "managedFields": [{"manager": "sim"}]},
            "spec": {"containers": [{"name": "agent", "image": "agent:2"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "agent", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        }))
        .unwrap();
        assert_eq!(pod.name(), "agent-x");
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("7"));
        assert!(
            pod.metadata.labels.is_none(),
            "only what a watch needs is kept"
        );
        assert!(pod.crash_looping());
        let fine: PodCrash = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "agent-y"},
            "status": {"containerStatuses": [{"state": {"running": {}}}]}
        }))
        .unwrap();
        assert!(!fine.crash_looping());
        let fresh: PodCrash =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "agent-z"}})).unwrap();
        assert!(!fresh.crash_looping());
    }
}
