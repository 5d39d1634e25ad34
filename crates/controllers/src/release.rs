//! The release controller: drives every [`Release`] through its waves, one pipeline run
//! per cluster.
//!
//! ```text
//!  watch Releases ───────────┐
//!  watch PipelineRuns ───────┤ (labelled shoal.io/release, in shoal-system)
//!  watch Approvals ──────────┤ (spec.release)
//!                            ▼
//!  reconcile(release): plan once (core::plan over the selected Clusters) → status.waves
//!                      per-cluster state ◄── its runs: none → Waiting, going → Running,
//!                                            Succeeded / Failed, rollback run → RollingBack
//!                                            / RolledBack
//!                      core::release::decide(plan, states, rules, now)
//!                      → create runs (change: precheck → step 1…n per component;
//!                        rollback), cancel runs, pause/resume runs
//!                      → status (phase, wave, progress, counts, failures) if it changed
//!                      → requeue at wake_at (bake end, window opening) on the shared clock
//! ```
//!
//! # The key decision: the runs are the release's memory
//!
//! The controller keeps nothing of its own between reconciles. The plan is written to
//! the release's status once, before the first cluster starts, and every cluster's
//! progress is its pipeline run, stored (with each finished step) by the taskflow
//! engine. After a restart or a leader change the next reconcile reads the same runs and
//! decides the same thing: a cluster whose run exists is never started again, a step
//! recorded as done is never applied again, and one not recorded runs again (the steps
//! are idempotent: see [`crate::executor::release`]).
//!
//! Run names are `RELEASE.CLUSTER` (the change) and `RELEASE.CLUSTER.rollback`; creating
//! one that exists answers 409, which is how a second reconcile racing the first finds
//! out it has nothing to do.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use shoal_core::condition;
use shoal_core::kinds::{
    Cluster, ClusterCounts, ClusterFailure, Component, Release, ReleasePhase, ReleaseStatus,
    WaveStatus,
};
use shoal_core::plan::{self, Placed, Plan, Wave};
use shoal_core::release::{ClusterState, Decision, Rules, decide};
use shoal_core::selector::LabelSelector;
use shoal_core::taskflow::{
    Approval, ApprovalDecision, Pipeline, PipelineRun, PipelineRunSpecStatus, Task, TaskState,
    duration,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::report;
use crate::{cache, events};

/// Where the release's pipelines and runs live.
pub const NAMESPACE: &str = "shoal-system";
/// On a run: the release it belongs to.
pub const LABEL_RELEASE: &str = "shoal.io/release";
/// On a run: the cluster it changes.
pub const LABEL_CLUSTER: &str = "shoal.io/cluster";
/// On a run: `change` or `rollback`.
pub const LABEL_ACTION: &str = "shoal.io/release-action";

/// The Tasks every release pipeline refers to.
const TASK_PRECHECK: &str = "shoal-release-precheck";
const TASK_STEP: &str = "shoal-release-step";
const TASK_ROLLBACK: &str = "shoal-release-rollback";

/// The first pipeline task of every change run.
const PRECHECK: &str = "precheck";

/// A step that is not healthy after this long fails its cluster (`stepTimeout`).
const DEFAULT_STEP_TIMEOUT: &str = "30m";

/// How many failures the status lists.
const FAILURES_SHOWN: usize = 20;

/// Runs created or changed at once.
const WRITE_CONCURRENCY: usize = 32;

/// Look again this often while a release is active, whatever the watches say.
const RESYNC: Duration = Duration::from_secs(30);

struct Ctx {
    client: Client,
    clock: Clock,
    runs: Store<PipelineRun>,
    approvals: Store<Approval>,
    /// Where the Events about a cluster find its uid without a GET each.
    clusters: Store<Cluster>,
    /// The Events recorded, per release uid: (cluster, reason), for the newest
    /// [`NOTED_RELEASES`] releases. A restart (or an old release coming back) forgets
    /// them; the Events' fixed names then make a second record a harmless 409.
    noted: Mutex<Noted>,
    /// The runs this controller created that its cache may not show yet, by name, with
    /// when: a reconcile that runs before the watch brings them does not create them
    /// again (a wasted write answered 409), as a ReplicaSet controller's expectations.
    created: Mutex<HashMap<String, std::time::Instant>>,
}

/// How long a created run is expected to appear in the cache; after that, a create is
/// tried again (and answered 409 if it exists).
const EXPECT_CREATED: Duration = Duration::from_secs(60);

/// How many releases' recorded Events the controller remembers.
const NOTED_RELEASES: usize = 64;

/// Which Events were recorded, per release uid, oldest release first.
#[derive(Default)]
struct Noted {
    order: std::collections::VecDeque<String>,
    by_release: HashMap<String, HashSet<(String, &'static str)>>,
}

impl Noted {
    fn of(&mut self, uid: &str) -> &mut HashSet<(String, &'static str)> {
        if !self.by_release.contains_key(uid) {
            if self.order.len() >= NOTED_RELEASES
                && let Some(old) = self.order.pop_front()
            {
                self.by_release.remove(&old);
            }
            self.order.push_back(uid.to_string());
        }
        self.by_release.entry(uid.to_string()).or_default()
    }
}

/// The component name the release's Events carry.
pub const REPORTER: &str = "shoal-release-controller";

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("failed to {what}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// Runs the release controller until `stop`.
pub async fn run(client: Client, clock: Clock, stop: CancellationToken) {
    if let Err(e) = ensure_setup(&client).await {
        tracing::error!(error = %report(&e), "release controller: setup failed; retrying on the first reconcile");
    }
    let (trigger, triggered) = mpsc::channel::<ObjectRef<Release>>(4096);
    let runs = cache::spawn(
        Api::<PipelineRun>::namespaced(client.clone(), NAMESPACE),
        watcher::Config::default().labels(LABEL_RELEASE),
        tracing::info_span!("release_cache", kind = "pipelineruns"),
        stop.clone(),
        wake(trigger.clone(), |r: &PipelineRun| {
            r.labels().get(LABEL_RELEASE).cloned()
        }),
    );
    let approvals = cache::spawn(
        Api::<Approval>::all(client.clone()),
        watcher::Config::default(),
        tracing::info_span!("release_cache", kind = "approvals"),
        stop.clone(),
        wake(trigger, |a: &Approval| a.spec.release.clone()),
    );
    let clusters = cache::spawn(
        Api::<Cluster>::all(client.clone()),
        watcher::Config::default(),
        tracing::info_span!("release_cache", kind = "clusters"),
        stop.clone(),
        |_: &Cluster| {},
    );
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = async {
            let _ = futures::join!(
                runs.wait_until_ready(),
                approvals.wait_until_ready(),
                clusters.wait_until_ready()
            );
        } => {}
    }
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        clock,
        runs,
        approvals,
        clusters,
        noted: Mutex::default(),
        created: Mutex::default(),
    });
    let shutdown = stop.clone();
    Controller::new(Api::<Release>::all(client), watcher::Config::default())
        .reconcile_on(ReceiverStream::new(triggered))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "release reconcile failed");
            }
        })
        .await;
    tracing::info!("release controller stopped");
}

/// A cache callback: every change of a release's run or Approval wakes the release
/// `owner` names. A full queue only delays; the resync looks again.
fn wake<K: 'static>(
    trigger: mpsc::Sender<ObjectRef<Release>>,
    owner: fn(&K) -> Option<String>,
) -> impl FnMut(&K) + Send + 'static {
    move |o| {
        if let Some(name) = owner(o) {
            let _ = trigger.try_send(ObjectRef::new(&name));
        }
    }
}

fn error_policy(_: Arc<Release>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(error = %report(e), "release reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// The namespace and the Tasks every release pipeline uses.
async fn ensure_setup(client: &Client) -> Result<(), Error> {
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    )
    .expect("a valid Namespace");
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(kube_err("create the namespace shoal-system")(e)),
    }
    let params = |names: &[&str]| -> Value { names.iter().map(|n| json!({"name": n})).collect() };
    // How long the step may take on the world's clock, judged by the executor; the
    // default keeps pipelines written before the parameter existed working.
    let with_timeout = |mut p: Value| -> Value {
        if let Some(list) = p.as_array_mut() {
            list.push(json!({"name": "timeout", "default": DEFAULT_STEP_TIMEOUT}));
        }
        p
    };
    let tasks = [
        (
            TASK_PRECHECK,
            "release-precheck",
            params(&["release", "cluster"]),
            json!([{"name": "previous"}]),
            "Renders a release's components for one cluster, refuses dangerous-field changes and unhealthy workloads, and records the versions it finds.",
        ),
        (
            TASK_STEP,
            "release-step",
            with_timeout(params(&[
                "release",
                "cluster",
                "component",
                "step",
                "steps",
            ])),
            json!([{"name": "updated"}, {"name": "total"}]),
            "Moves one component of a release one in-cluster step forward (partition), waits until healthy and bakes.",
        ),
        (
            TASK_ROLLBACK,
            "release-rollback",
            with_timeout(params(&["release", "cluster", "previous"])),
            json!([]),
            "Puts a cluster's components back on the versions recorded before the release changed them.",
        ),
    ];
    let api = Api::<Task>::namespaced(client.clone(), NAMESPACE);
    for (name, executor, params, results, description) in tasks {
        let task: Task = serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Task",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"executor": executor, "description": description, "params": params,
                     "results": results, "idempotent": true}
        }))
        .expect("a valid Task");
        create_or_replace(&api, task).await?;
    }
    Ok(())
}

/// Creates `object`, or replaces the one there (its spec is ours).
async fn create_or_replace<K>(api: &Api<K>, mut object: K) -> Result<(), Error>
where
    K: Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let name = object.name_any();
    match api
        .get_opt(&name)
        .await
        .map_err(kube_err(format!("read {name}")))?
    {
        None => match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(kube_err(format!("create {name}"))(e)),
        },
        Some(live) => {
            object.meta_mut().resource_version = live.meta().resource_version.clone();
            match api.replace(&name, &PostParams::default(), &object).await {
                Ok(_) => Ok(()),
                // Someone else wrote it meanwhile: theirs is as good as ours.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(kube_err(format!("replace {name}"))(e)),
            }
        }
    }
}

/// The name of a release's change pipeline, and of its rollback pipeline.
fn pipeline_names(release: &str) -> (String, String) {
    (
        format!("release-{release}"),
        format!("release-{release}-rollback"),
    )
}

/// The task name of step `k` (0-based) of `component`.
fn step_task(component: &str, k: usize) -> String {
    format!("{component}-step-{}", k + 1)
}

/// The release's two pipelines: precheck → every component's steps in dependsOn order;
/// and the rollback.
fn pipelines(release: &Release, order: &[String]) -> Result<(Pipeline, Pipeline), String> {
    let name = release.name_any();
    let s = &release.spec.strategy;
    let step_timeout = s.step_timeout.as_deref().unwrap_or(DEFAULT_STEP_TIMEOUT);
    let bake = s
        .bake_duration()
        .map_err(|e| format!("spec.strategy.bake: {e}"))?;
    let timeout =
        duration::parse(step_timeout).map_err(|e| format!("spec.strategy.stepTimeout: {e}"))?;
    let step_limit = duration::format(timeout + bake);
    let steps = s.steps();
    let p = |n: &str| json!({"name": n, "value": format!("$(params.{n})")});
    // The step limits are the executors' to enforce, not the scheduler's: they are
    // verdicts about the simulated or real world (the workload did not become healthy in
    // that much of its time), which only an observation of the member made after the
    // deadline may give. A timeout the scheduler enforced on the shared clock would also
    // fire when shoal itself was slow (at 60× virtual time, 30 minutes is 30 real
    // seconds of a busy control plane). shoal's own I/O is bounded in real time instead.
    let mut tasks = vec![json!({
        "name": PRECHECK, "taskRef": {"name": TASK_PRECHECK},
        "params": [p("release"), p("cluster")],
    })];
    let mut previous = PRECHECK.to_string();
    for component in order {
        for k in 0..steps {
            let task = step_task(component, k);
            tasks.push(json!({
                "name": task, "taskRef": {"name": TASK_STEP}, "runAfter": [previous],
                "params": [p("release"), p("cluster"),
                    {"name": "component", "value": component},
                    {"name": "step", "value": k.to_string()},
                    {"name": "steps", "value": steps.to_string()},
                    {"name": "timeout", "value": step_limit}],
            }));
            previous = task;
        }
    }
    let owner = owner_ref(release);
    let (change, rollback) = pipeline_names(&name);
    let mk = |pipeline: &str, params: Value, tasks: Value| -> Pipeline {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Pipeline",
            "metadata": {"name": pipeline, "namespace": NAMESPACE,
                         "labels": {LABEL_RELEASE: name}, "ownerReferences": [owner]},
            "spec": {"description": format!("Release {name}, one cluster"), "params": params, "tasks": tasks}
        }))
        .expect("a valid Pipeline")
    };
    Ok((
        mk(
            &change,
            json!([{"name": "release"}, {"name": "cluster"}]),
            Value::Array(tasks),
        ),
        mk(
            &rollback,
            json!([{"name": "release"}, {"name": "cluster"}, {"name": "previous"}]),
            json!([{"name": "rollback", "taskRef": {"name": TASK_ROLLBACK},
                    "params": [p("release"), p("cluster"), p("previous"),
                               {"name": "timeout", "value": step_timeout}]}]),
        ),
    ))
}

fn owner_ref(release: &Release) -> Value {
    json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Release", "name": release.name_any(),
           "uid": release.uid().unwrap_or_default()})
}

/// What planning concluded.
enum Planned {
    Waves(Vec<WaveStatus>),
    /// Not yet: say why and look again.
    Wait(String),
    /// Never: the release cannot run as written.
    Invalid(String),
}

/// The waves of `release` over the Clusters it selects now, once its components exist
/// and their dependencies have no cycle; creates its pipelines.
async fn plan_release(ctx: &Ctx, release: &Release) -> Result<Planned, Error> {
    ensure_setup(&ctx.client).await?;
    let comps = Api::<Component>::all(ctx.client.clone());
    let mut components = Vec::new();
    for c in &release.spec.components {
        match comps
            .get_opt(&c.name)
            .await
            .map_err(kube_err(format!("read Component {}", c.name)))?
        {
            Some(comp) => components.push(comp),
            None => {
                return Ok(Planned::Wait(format!(
                    "waiting for Component {:?}, which does not exist",
                    c.name
                )));
            }
        }
    }
    let order = match shoal_core::render::order(&components) {
        Ok(o) => o,
        Err(e) => return Ok(Planned::Invalid(format!("spec.components: {e}"))),
    };
    let strategy = match release.spec.strategy.plan_strategy() {
        Ok(s) => s,
        Err(e) => {
            let problems: Vec<String> = e.iter().map(ToString::to_string).collect();
            return Ok(Planned::Invalid(problems.join("; ")));
        }
    };
    let selector = match &release.spec.cluster_selector {
        None => String::new(),
        Some(s) => match LabelSelector::from_k8s(s) {
            Ok(s) => s.to_string(),
            Err(e) => return Ok(Planned::Invalid(format!("spec.clusterSelector: {}", e.0))),
        },
    };
    let clusters = Api::<Cluster>::all(ctx.client.clone())
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(kube_err("list Clusters"))?
        .items;
    if clusters.is_empty() {
        return Ok(Planned::Wait(
            "spec.clusterSelector selects no Cluster yet".into(),
        ));
    }
    let planned = match plan::plan(&plan::candidates(&clusters), &strategy) {
        Ok(p) => p,
        Err(e) => return Ok(Planned::Invalid(format!("spec.strategy: {e}"))),
    };
    let (change, rollback) = match pipelines(release, &order) {
        Ok(p) => p,
        Err(e) => return Ok(Planned::Invalid(e)),
    };
    let api = Api::<Pipeline>::namespaced(ctx.client.clone(), NAMESPACE);
    create_or_replace(&api, change).await?;
    create_or_replace(&api, rollback).await?;
    let keys = release.spec.strategy.order_labels();
    Ok(Planned::Waves(
        planned
            .waves
            .iter()
            .map(|w| WaveStatus {
                clusters: w.clusters.iter().map(|c| c.name.clone()).collect(),
                approval: w.approval,
                reason: (!w.clusters.is_empty()).then(|| w.summary(&keys)),
            })
            .collect(),
    ))
}

/// A release's plan as `decide` takes it.
fn plan_of(waves: &[WaveStatus]) -> Plan {
    Plan {
        waves: waves
            .iter()
            .map(|w| Wave {
                clusters: w
                    .clusters
                    .iter()
                    .map(|c| Placed {
                        name: c.clone(),
                        group: Vec::new(),
                        score: 0.0,
                        why: String::new(),
                    })
                    .collect(),
                approval: w.approval,
            })
            .collect(),
    }
}

/// `Some(true)` succeeded, `Some(false)` failed (or was cancelled), `None` still going.
fn outcome(run: &PipelineRun) -> Option<bool> {
    let c = run.status.as_ref()?.succeeded()?;
    match c.status.as_str() {
        "True" => Some(true),
        "False" => Some(false),
        _ => None,
    }
}

/// Where a cluster is, from its change run and its rollback run.
fn cluster_state(change: Option<&PipelineRun>, rollback: Option<&PipelineRun>) -> ClusterState {
    if let Some(r) = rollback {
        return match outcome(r) {
            Some(true) => ClusterState::RolledBack,
            // A failed rollback stays visible as one in progress: a human looks.
            _ => ClusterState::RollingBack,
        };
    }
    match change.map(outcome) {
        None => ClusterState::Waiting,
        Some(None) => ClusterState::Running,
        Some(Some(true)) => ClusterState::Succeeded,
        Some(Some(false)) => ClusterState::Failed,
    }
}

/// The first failed task of a run, and its message. A run the release cancelled (abort,
/// or before a rollback) failed no check and is not a failure.
fn failure(run: &PipelineRun) -> Option<(String, String)> {
    let status = run.status.as_ref()?;
    if let Some(t) = status.tasks.iter().find(|t| t.state == TaskState::Failed) {
        return Some((
            t.name.clone(),
            t.message.clone().unwrap_or_else(|| "failed".into()),
        ));
    }
    if run.spec.status == Some(PipelineRunSpecStatus::Cancelled) {
        return None;
    }
    let c = status.succeeded()?;
    (c.status == "False").then(|| ("run".to_string(), c.message.clone()))
}

/// Where a change run the release stopped (cancelled, for a rollback or an abort) had
/// got to: the last task that started — the step it was in when stopped, or the last it
/// finished — and what that task said. `None` for a run that was not stopped, or was
/// stopped before any task started.
fn interruption(run: &PipelineRun) -> Option<(String, String)> {
    if run.spec.status != Some(PipelineRunSpecStatus::Cancelled) {
        return None;
    }
    let status = run.status.as_ref()?;
    let task = status
        .tasks
        .iter()
        .filter(|t| t.start_time.is_some())
        .max_by_key(|t| t.start_time.as_ref().map(|s| s.0))?;
    let said = task.message.as_deref().unwrap_or("").trim();
    let message = if task.state == TaskState::Succeeded {
        format!(
            "stopped by the release after {} finished: {said}",
            task.name
        )
    } else {
        format!("stopped by the release during {}: {said}", task.name)
    };
    Some((
        task.name.clone(),
        message.trim_end_matches([':', ' ']).to_string(),
    ))
}

/// The Event worth recording about a cluster in `state` of `release` (`None` for a
/// cluster waiting or rolling back: nothing happened yet).
fn cluster_note(
    release: &Release,
    cluster: &str,
    state: ClusterState,
    change: Option<&PipelineRun>,
) -> Option<events::Note> {
    let name = release.name_any();
    let what = release
        .spec
        .components
        .iter()
        .map(|c| format!("{} {}", c.name, c.version))
        .collect::<Vec<_>>()
        .join(", ");
    let (type_, reason, message) = match state {
        ClusterState::Waiting | ClusterState::RollingBack => return None,
        ClusterState::Running => (
            "Normal",
            "ReleaseStarted",
            format!("release {name} started changing the cluster to {what}"),
        ),
        ClusterState::Succeeded => (
            "Normal",
            "ReleaseSucceeded",
            format!("release {name}: the cluster runs {what}"),
        ),
        ClusterState::Failed => {
            let (step, why) = change
                .and_then(failure)
                .unwrap_or_else(|| ("run".into(), "cancelled".into()));
            (
                "Warning",
                "ReleaseFailed",
                format!("release {name} failed at {step}: {why}"),
            )
        }
        ClusterState::RolledBack => (
            "Normal",
            "RolledBack",
            format!("release {name} put back what it changed in the cluster"),
        ),
    };
    let uid = release.uid().unwrap_or_default();
    let short: String = uid.chars().take(8).collect();
    Some(events::Note {
        name: Some(format!(
            "{cluster}.{name}.{short}.{}",
            reason.to_lowercase()
        )),
        type_,
        reason,
        message,
    })
}

/// Records, in the background, the Events about clusters whose state in `release`
/// changed since they were last recorded.
fn note_clusters(
    ctx: &Arc<Ctx>,
    release: &Release,
    states: &BTreeMap<String, ClusterState>,
    changes: &HashMap<String, Arc<PipelineRun>>,
) {
    let uid = release.uid().unwrap_or_default();
    let notes: Vec<(String, Option<String>, events::Note)> = {
        let mut noted = ctx.noted.lock().expect("not poisoned");
        let seen = noted.of(&uid);
        states
            .iter()
            .filter_map(|(cluster, state)| {
                let note = cluster_note(
                    release,
                    cluster,
                    *state,
                    changes.get(cluster).map(AsRef::as_ref),
                )?;
                seen.insert((cluster.clone(), note.reason)).then(|| {
                    // A cluster the cache has not seen yet is looked up by `record`.
                    let uid = ctx
                        .clusters
                        .get(&ObjectRef::new(cluster))
                        .and_then(|c| c.uid());
                    (cluster.clone(), uid, note)
                })
            })
            .collect()
    };
    if notes.is_empty() {
        return;
    }
    let (client, now) = (ctx.client.clone(), ctx.clock.now());
    tokio::spawn(futures::stream::iter(notes).for_each_concurrent(
        WRITE_CONCURRENCY,
        move |(cluster, uid, note)| {
            let client = client.clone();
            async move {
                if let Err(e) = events::record(&client, &cluster, uid, &note, REPORTER, now).await {
                    tracing::debug!(%cluster, error = %report(&e), "failed to record an Event");
                }
            }
        },
    ));
}

/// What a rollback of a cluster puts back: the versions its precheck found, or
/// `untouched` when no step of the change began (nothing was changed).
fn previous_of(change: Option<&PipelineRun>) -> String {
    let Some(status) = change.and_then(|r| r.status.as_ref()) else {
        return "untouched".into();
    };
    let touched = status
        .tasks
        .iter()
        .any(|t| t.name != PRECHECK && !matches!(t.state, TaskState::Pending | TaskState::Skipped));
    if !touched {
        return "untouched".into();
    }
    status
        .tasks
        .iter()
        .find(|t| t.name == PRECHECK)
        .and_then(|t| t.results.iter().find(|r| r.name == "previous"))
        .and_then(|r| r.value.as_str().map(String::from))
        .unwrap_or_else(|| "untouched".into())
}

fn run_object(release: &Release, cluster: &str, rollback: Option<String>) -> PipelineRun {
    let name = release.name_any();
    let (change, rollback_pipeline) = pipeline_names(&name);
    let (run, pipeline, action) = match &rollback {
        None => (format!("{name}.{cluster}"), change, "change"),
        Some(_) => (
            format!("{name}.{cluster}.rollback"),
            rollback_pipeline,
            "rollback",
        ),
    };
    let mut params = vec![
        json!({"name": "release", "value": name}),
        json!({"name": "cluster", "value": cluster}),
    ];
    if let Some(previous) = rollback {
        params.push(json!({"name": "previous", "value": previous}));
    }
    serde_json::from_value(json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "PipelineRun",
        "metadata": {"name": run, "namespace": NAMESPACE,
            "labels": {LABEL_RELEASE: name, LABEL_CLUSTER: cluster, LABEL_ACTION: action},
            "ownerReferences": [owner_ref(release)]},
        "spec": {"pipelineRef": {"name": pipeline}, "params": params}
    }))
    .expect("a valid PipelineRun")
}

fn terminal(phase: Option<ReleasePhase>) -> bool {
    matches!(
        phase,
        Some(ReleasePhase::Succeeded | ReleasePhase::Failed | ReleasePhase::RolledBack)
    )
}

/// One pass over a release, then a pause before the next pass over the same release
/// may start, so that the changes of its runs that come in meanwhile (four status
/// writes per cluster, 500 clusters at once) are looked at together, once, not one
/// pass over every cluster each. Other releases are not held up.
async fn reconcile(release: Arc<Release>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let began = tokio::time::Instant::now();
    let out = reconcile_once(release, ctx).await;
    tokio::time::sleep_until(began + MIN_PASS_GAP).await;
    out
}

/// The least real time from the start of one pass over a release to the start of the
/// next (see [`reconcile`]): at 60× virtual time, 15 s of the fleet's.
const MIN_PASS_GAP: Duration = Duration::from_millis(250);

async fn reconcile_once(release: Arc<Release>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if release.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = release.name_any();
    let old = release.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let now = ctx.clock.now();
    if status.waves.is_empty() {
        match plan_release(&ctx, &release).await? {
            Planned::Waves(waves) => {
                status.waves = waves;
                status.phase = Some(ReleasePhase::Planned);
                status.start_time = Some(Time(now));
            }
            Planned::Wait(why) => {
                status.phase = Some(ReleasePhase::Pending);
                status.message = Some(why);
                write_status(&ctx, &release, &old, status, now).await?;
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            Planned::Invalid(why) => {
                status.phase = Some(ReleasePhase::Failed);
                status.message = Some(why);
                write_status(&ctx, &release, &old, status, now).await?;
                return Ok(Action::await_change());
            }
        }
    }
    let uid = release.uid();
    let mine = |r: &PipelineRun| {
        r.labels().get(LABEL_RELEASE) == Some(&name)
            && r.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
    };
    let mut changes: HashMap<String, Arc<PipelineRun>> = HashMap::new();
    let mut rollbacks: HashMap<String, Arc<PipelineRun>> = HashMap::new();
    for r in ctx.runs.state() {
        if !mine(&r) {
            continue;
        }
        let Some(cluster) = r.labels().get(LABEL_CLUSTER).cloned() else {
            continue;
        };
        match r.labels().get(LABEL_ACTION).map(String::as_str) {
            Some("rollback") => rollbacks.insert(cluster, r),
            _ => changes.insert(cluster, r),
        };
    }
    {
        // What the cache shows is no longer expected.
        let mut created = ctx.created.lock().expect("not poisoned");
        if !created.is_empty() {
            let seen: HashSet<String> = changes
                .values()
                .chain(rollbacks.values())
                .map(|r| r.name_any())
                .collect();
            created.retain(|n, at| !seen.contains(n) && at.elapsed() < EXPECT_CREATED);
        }
    }
    let plan = plan_of(&status.waves);
    let mut states = BTreeMap::new();
    for c in plan.waves.iter().flat_map(|w| &w.clusters) {
        let s = cluster_state(
            changes.get(&c.name).map(AsRef::as_ref),
            rollbacks.get(&c.name).map(AsRef::as_ref),
        );
        states.insert(c.name.clone(), s);
    }
    let mut wave_done_at = BTreeMap::new();
    for (i, w) in plan.waves.iter().enumerate() {
        let settled = w.clusters.iter().all(|c| {
            matches!(
                states[&c.name],
                ClusterState::Succeeded | ClusterState::Failed
            )
        });
        if settled {
            let at = w
                .clusters
                .iter()
                .filter_map(|c| changes.get(&c.name))
                .filter_map(|r| r.status.as_ref()?.completion_time.as_ref())
                .map(|t| t.0)
                .max();
            if let Some(at) = at {
                wave_done_at.insert(i, at);
            }
        }
    }
    let (rules, rejected) = rules_of(&ctx, &release);
    let mut d = decide(&plan, &states, &wave_done_at, &rules, now);
    if let Some(why) = rejected
        && d.phase == ReleasePhase::Failed
    {
        d.message = why;
    }
    act(&ctx, &release, &d, &changes, &rollbacks).await?;
    note_clusters(&ctx, &release, &states, &changes);

    // The status: counts, failures, phase.
    let mut counts = ClusterCounts {
        total: states.len() as i64,
        ..ClusterCounts::default()
    };
    for s in states.values() {
        *match s {
            ClusterState::Waiting => &mut counts.waiting,
            ClusterState::Running => &mut counts.running,
            ClusterState::Succeeded => &mut counts.succeeded,
            ClusterState::Failed => &mut counts.failed,
            ClusterState::RollingBack => &mut counts.rolling_back,
            ClusterState::RolledBack => &mut counts.rolled_back,
        } += 1;
    }
    let mut failures = Vec::new();
    for c in plan.waves.iter().flat_map(|w| &w.clusters) {
        for run in [rollbacks.get(&c.name), changes.get(&c.name)]
            .into_iter()
            .flatten()
        {
            if outcome(run) == Some(false)
                && let Some((step, message)) = failure(run)
            {
                failures.push(ClusterFailure {
                    cluster: c.name.clone(),
                    step,
                    message,
                });
                break;
            }
        }
        if failures.len() >= FAILURES_SHOWN {
            break;
        }
    }
    let interrupted: Vec<ClusterFailure> = plan
        .waves
        .iter()
        .flat_map(|w| &w.clusters)
        .filter_map(|c| {
            let (step, message) = interruption(changes.get(&c.name)?)?;
            Some(ClusterFailure {
                cluster: c.name.clone(),
                step,
                message,
            })
        })
        .take(FAILURES_SHOWN)
        .collect();
    status.phase = Some(d.phase);
    let waves = plan.waves.len();
    status.current_wave = match d.wave {
        Some(w) => Some(format!("{}/{waves}", w + 1)),
        None if d.phase == ReleasePhase::Succeeded => Some(format!("{waves}/{waves}")),
        None => status.current_wave.take(),
    };
    status.progress = Some(format!("{}/{}", counts.succeeded, counts.total));
    status.message = Some(d.message.clone());
    status.clusters = Some(counts);
    status.failures = failures;
    status.interrupted = interrupted;
    if terminal(status.phase) {
        status.completion_time.get_or_insert(Time(now));
    } else {
        status.completion_time = None;
    }
    write_status(&ctx, &release, &old, status.clone(), now).await?;
    Ok(if let Some(at) = d.wake_at {
        Action::requeue(ctx.clock.real_until(at).min(RESYNC))
    } else if terminal(status.phase) && d.cancel.is_empty() {
        Action::await_change()
    } else {
        Action::requeue(RESYNC)
    })
}

/// The rules of the release's strategy and spec, with the approvals given; and why the
/// release was rejected, if an Approval rejected a wave.
fn rules_of(ctx: &Ctx, release: &Release) -> (Rules, Option<String>) {
    let s = &release.spec.strategy;
    let name = release.name_any();
    let mut rules = Rules {
        cluster_concurrency: s.cluster_concurrency.unwrap_or(1),
        error_budget: s.error_budget.unwrap_or(0),
        failure_policy: s.failure_policy,
        bake: s.bake_duration().unwrap_or(SignedDuration::ZERO),
        calendar: s.calendar().unwrap_or_default(),
        paused: release.spec.paused,
        abort: release.spec.abort,
        rollback: release.spec.rollback,
        approved: Default::default(),
    };
    let created = release.meta().creation_timestamp.as_ref().map(|t| t.0);
    let mut rejected = None;
    for a in ctx.approvals.state() {
        if a.spec.release.as_deref() != Some(name.as_str()) {
            continue;
        }
        // An Approval older than the release was for an earlier one of the same name.
        if let (Some(c), Some(at)) = (created, a.meta().creation_timestamp.as_ref())
            && at.0 < c
        {
            continue;
        }
        let Some(wave) = a.spec.wave.filter(|w| *w > 0) else {
            continue;
        };
        match a.spec.decision {
            ApprovalDecision::Approve => {
                rules.approved.insert(wave as usize - 1);
            }
            ApprovalDecision::Reject => {
                rules.abort = true;
                rejected = Some(format!(
                    "wave {wave} rejected by {}{}",
                    a.spec.approved_by,
                    a.spec
                        .reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    (rules, rejected)
}

/// Carries a decision out: starts, rolls back, cancels, and pauses or resumes the runs
/// in progress with the release.
async fn act(
    ctx: &Ctx,
    release: &Release,
    d: &Decision,
    changes: &HashMap<String, Arc<PipelineRun>>,
    rollbacks: &HashMap<String, Arc<PipelineRun>>,
) -> Result<(), Error> {
    let api = Api::<PipelineRun>::namespaced(ctx.client.clone(), NAMESPACE);
    let mut creates = Vec::new();
    for c in &d.start {
        if !changes.contains_key(c) {
            creates.push(run_object(release, c, None));
        }
    }
    for c in &d.roll_back {
        if !rollbacks.contains_key(c) {
            let previous = previous_of(changes.get(c).map(AsRef::as_ref));
            creates.push(run_object(release, c, Some(previous)));
        }
    }
    let mut patches = Vec::new();
    for c in &d.cancel {
        if let Some(r) = changes.get(c)
            && outcome(r).is_none()
            && r.spec.status != Some(PipelineRunSpecStatus::Cancelled)
        {
            patches.push((r.name_any(), json!({"spec": {"status": "Cancelled"}})));
        }
    }
    // Hold the clusters in progress while the release is paused (by hand or by its
    // failure policy), let them go on when it is not.
    let hold = d.phase == ReleasePhase::Paused;
    for r in changes.values() {
        if outcome(r).is_none() && r.spec.paused != hold && !d.cancel.contains(&label(r)) {
            patches.push((r.name_any(), json!({"spec": {"paused": hold}})));
        }
    }
    // Created by an earlier reconcile whose answer the cache does not show yet.
    {
        let created = ctx.created.lock().expect("not poisoned");
        creates.retain(|r| {
            created
                .get(&r.name_any())
                .is_none_or(|at| at.elapsed() >= EXPECT_CREATED)
        });
    }
    let writes: Vec<_> = creates
        .into_iter()
        .map(|r| Write::Create(Box::new(r)))
        .chain(patches.into_iter().map(|(n, p)| Write::Patch(n, p)))
        .map(|w| write(ctx, api.clone(), w))
        .collect();
    let results: Vec<Result<(), Error>> = futures::stream::iter(writes)
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// One write of [`act`].
enum Write {
    Create(Box<PipelineRun>),
    /// A merge patch of the named run.
    Patch(String, Value),
}

async fn write(ctx: &Ctx, api: Api<PipelineRun>, w: Write) -> Result<(), Error> {
    match w {
        Write::Create(run) => {
            match api.create(&PostParams::default(), &run).await {
                Ok(_) => {}
                // Created by an earlier reconcile whose answer the cache does not show yet.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    return Err(kube_err(format!("create PipelineRun {}", run.name_any()))(
                        e,
                    ));
                }
            }
            // It exists: expected in the cache from now on.
            ctx.created
                .lock()
                .expect("not poisoned")
                .insert(run.name_any(), std::time::Instant::now());
            Ok(())
        }
        Write::Patch(n, patch) => match api
            .patch(&n, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(kube_err(format!("patch PipelineRun {n}"))(e)),
        },
    }
}

fn label(r: &PipelineRun) -> String {
    r.labels().get(LABEL_CLUSTER).cloned().unwrap_or_default()
}

/// The keys of [`ReleaseStatus`] a merge patch must clear when they are absent.
const STATUS_KEYS: [&str; 11] = [
    "phase",
    "currentWave",
    "progress",
    "message",
    "waves",
    "clusters",
    "failures",
    "startTime",
    "completionTime",
    "conditions",
    "observedGeneration",
];

/// Writes `status` (with its conditions and observed generation) when it differs from
/// `old`.
async fn write_status(
    ctx: &Ctx,
    release: &Release,
    old: &ReleaseStatus,
    mut status: ReleaseStatus,
    now: Timestamp,
) -> Result<(), Error> {
    let phase = status.phase.unwrap_or(ReleasePhase::Pending);
    let message = status.message.clone().unwrap_or_default();
    let active = matches!(
        phase,
        ReleasePhase::Planned | ReleasePhase::Progressing | ReleasePhase::WaitingForApproval
    );
    let reason = format!("{phase:?}");
    status.conditions = old.conditions.clone();
    let generation = release.meta().generation;
    for (type_, on) in [("Progressing", active), ("Complete", terminal(Some(phase)))] {
        condition::set(
            &mut status.conditions,
            type_,
            condition::status(on),
            &reason,
            &message,
            generation,
            now,
        );
    }
    status.observed_generation = release.meta().generation;
    if &status == old {
        return Ok(());
    }
    let mut value = serde_json::to_value(&status).expect("a status serializes");
    if let Some(map) = value.as_object_mut() {
        for k in STATUS_KEYS {
            map.entry(k).or_insert(Value::Null);
        }
    }
    Api::<Release>::all(ctx.client.clone())
        .patch_status(
            &release.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": value})),
        )
        .await
        .map_err(kube_err(format!(
            "write the status of Release {}",
            release.name_any()
        )))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tasks: Value, succeeded: Option<&str>) -> PipelineRun {
        let mut status = json!({"tasks": tasks});
        if let Some(s) = succeeded {
            status["conditions"] = json!([{"type": "Succeeded", "status": s, "reason": "x",
                "message": "the run failed", "lastTransitionTime": "2026-11-22T00:00:00Z"}]);
        }
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "PipelineRun",
            "metadata": {"name": "r.c", "namespace": NAMESPACE},
            "spec": {"pipelineRef": {"name": "release-r"}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn events_say_what_happened_to_a_cluster_once_per_reason() {
        let release: Release = serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Release",
            "metadata": {"name": "agent-2", "uid": "0123456789abcdef"},
            "spec": {"components": [{"name": "node-agent", "version": "2.0"}]}
        }))
        .unwrap();
        assert_eq!(
            cluster_note(&release, "c1", ClusterState::Waiting, None),
            None
        );
        let started = cluster_note(&release, "c1", ClusterState::Running, None).unwrap();
        assert_eq!(
            (started.type_, started.reason),
            ("Normal", "ReleaseStarted")
        );
        assert!(
            started.message.contains("node-agent 2.0"),
            "{}",
            started.message
        );
        assert_eq!(
            started.name.as_deref(),
            Some("c1.agent-2.01234567.releasestarted")
        );
        let bad = run(
            json!([{"name": "node-agent-step-2", "state": "Failed", "message": "2 pods crash-looping"}]),
            Some("False"),
        );
        let failed = cluster_note(&release, "c1", ClusterState::Failed, Some(&bad)).unwrap();
        assert_eq!((failed.type_, failed.reason), ("Warning", "ReleaseFailed"));
        assert_eq!(
            failed.message,
            "release agent-2 failed at node-agent-step-2: 2 pods crash-looping"
        );

        let mut noted = Noted::default();
        assert!(noted.of("u1").insert(("c1".into(), "ReleaseStarted")));
        assert!(!noted.of("u1").insert(("c1".into(), "ReleaseStarted")));
        for i in 0..NOTED_RELEASES {
            noted.of(&format!("other-{i}"));
        }
        assert_eq!(noted.by_release.len(), NOTED_RELEASES);
        assert!(
            noted.of("u1").is_empty(),
            "the oldest release was forgotten"
        );
    }

    #[test]
    fn a_clusters_state_comes_from_its_runs() {
        let going = run(json!([]), Some("Unknown"));
        let ok = run(json!([]), Some("True"));
        let bad = run(json!([]), Some("False"));
        assert_eq!(cluster_state(None, None), ClusterState::Waiting);
        assert_eq!(cluster_state(Some(&going), None), ClusterState::Running);
        assert_eq!(cluster_state(Some(&ok), None), ClusterState::Succeeded);
        assert_eq!(cluster_state(Some(&bad), None), ClusterState::Failed);
        assert_eq!(
            cluster_state(Some(&bad), Some(&going)),
            ClusterState::RollingBack
        );
        assert_eq!(
            cluster_state(Some(&bad), Some(&ok)),
            ClusterState::RolledBack
        );
        assert_eq!(
            cluster_state(Some(&bad), Some(&bad)),
            ClusterState::RollingBack,
            "a failed rollback is not over"
        );
    }

    #[test]
    fn a_rollback_restores_what_the_precheck_saw_only_if_a_step_began() {
        let prev = r#"{"node-agent":"1.4.0"}"#;
        let pre = json!({"name": "precheck", "state": "Succeeded", "attempts": 1,
            "results": [{"name": "previous", "value": prev}]});
        let step =
            |state: &str| json!({"name": "node-agent-step-1", "state": state, "attempts": 1});
        assert_eq!(previous_of(None), "untouched");
        let r = run(json!([pre.clone(), step("Pending")]), Some("False"));
        assert_eq!(previous_of(Some(&r)), "untouched");
        let r = run(json!([pre, step("Failed")]), Some("False"));
        assert_eq!(previous_of(Some(&r)), prev);
        assert_eq!(
            failure(&run(
                json!([{"name": "node-agent-step-2", "state": "Failed", "attempts": 1,
                        "message": "2 pods crash-looping"}]),
                Some("False")
            )),
            Some(("node-agent-step-2".into(), "2 pods crash-looping".into()))
        );
        let mut cancelled = run(
            json!([{"name": "node-agent-step-1", "state": "Cancelled", "attempts": 1}]),
            Some("False"),
        );
        assert!(
            failure(&cancelled).is_some(),
            "a run that failed on its own"
        );
        cancelled.spec.status = Some(PipelineRunSpecStatus::Cancelled);
        assert_eq!(
            failure(&cancelled),
            None,
            "cancelled by the release: no check failed"
        );
    }

    #[test]
    fn the_pipeline_runs_every_components_steps_in_dependency_order() {
        let release: Release = serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Release",
            "metadata": {"name": "addons", "uid": "u1"},
            "spec": {"components": [{"name": "csi", "version": "2"}, {"name": "cni", "version": "3"}],
                     "strategy": {"batches": [1, "100%"], "bake": "1m", "stepTimeout": "10m"}}
        }))
        .unwrap();
        let (change, rollback) = pipelines(&release, &["cni".into(), "csi".into()]).unwrap();
        let tasks: Vec<(String, Vec<String>)> = change
            .spec
            .tasks
            .iter()
            .map(|t| (t.name.clone(), t.run_after.clone()))
            .collect();
        assert_eq!(
            tasks,
            [
                ("precheck".to_string(), vec![]),
                ("cni-step-1".into(), vec!["precheck".to_string()]),
                ("cni-step-2".into(), vec!["cni-step-1".into()]),
                ("csi-step-1".into(), vec!["cni-step-2".into()]),
                ("csi-step-2".into(), vec!["csi-step-1".into()]),
            ]
        );
        // The step's limit is the executor's to judge from what it observes, never a
        // scheduler timeout on the shared clock.
        assert_eq!(change.spec.tasks[1].timeout, None);
        let timeout = change.spec.tasks[1]
            .params
            .iter()
            .find(|p| p.name == "timeout")
            .map(|p| p.value.clone());
        assert_eq!(
            timeout,
            Some(shoal_core::taskflow::ParamValue::String("11m0s".into()))
        );
        assert_eq!(rollback.spec.tasks.len(), 1);
        assert_eq!(change.metadata.name.as_deref(), Some("release-addons"));
    }
}
