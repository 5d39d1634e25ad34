//! The taskflow controller: drives every PipelineRun from its stored status, with the
//! pure scheduler of [`shoal_core::taskflow`] deciding and executors doing the work.
//!
//! ```text
//!  watch PipelineRuns ─┐        ┌──────────── executor finished (in memory) ◄─┐
//!                      ▼        ▼                                               │
//!  reconcile(run):  GET run ─► fold finishes (record_finish) ─► retry/skip ops  │
//!                   ─► recover() the Running attempts no executor here owns     │
//!                   ─► schedule() ─► apply ─► PUT status (resourceVersion CAS)  │
//!                   ─► stop cancelled attempts ─► create TaskRuns ─► spawn ─────┘
//!                   ─► requeue at wake_at
//! ```
//!
//! # The key decision: the status write comes first
//!
//! An attempt is launched only after the status saying it is `Running` is stored, and
//! an executor's outcome is kept in memory only until the next status write records it
//! (in the same write as the decisions that depend on it). So after a crash the stored
//! status never claims less than happened, and the only ambiguity is an attempt that is
//! `Running` with no executor in this process: [`recover`] re-runs it if its executor
//! is idempotent, else marks it `Interrupted` and the run waits for a human.
//!
//! A conflict on the status write (someone else wrote the run) is not an error: the
//! reconcile is requeued and decides again from the fresh object. Outcomes not yet
//! recorded stay in memory for that next attempt.
//!
//! # Operations
//!
//! Pause/resume and cancel are spec fields (`spec.paused`, `spec.status`) the scheduler
//! reads. Retrying a failed task and skipping one are one-shot requests, made by setting
//! the annotations [`ANNOTATION_RETRY`] or [`ANNOTATION_SKIP`] (+ [`ANNOTATION_SKIP_REASON`])
//! to a task name; the controller applies them to the status and then removes them.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use shoal_core::taskflow::{
    Finish, Input, InstanceId, Pipeline, PipelineRun, PipelineRunStatus, PipelineSpec, Start, Task,
    TaskCatalog, TaskReason, TaskRun, TaskRunStatus, TaskState, record_finish, recover, retry_task,
    run::set_succeeded, run::task_run_name, schedule, skip_task,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clock::Clock;
use crate::executor::{ExecContext, ExecError, Registry};

/// Set to a task name to retry its failed or interrupted instances.
pub const ANNOTATION_RETRY: &str = "taskflow.shoal.io/retry";
/// Set to a task name to skip it (with [`ANNOTATION_SKIP_REASON`]).
pub const ANNOTATION_SKIP: &str = "taskflow.shoal.io/skip";
/// Why a task is skipped by hand.
pub const ANNOTATION_SKIP_REASON: &str = "taskflow.shoal.io/skip-reason";

/// The reason of the `Succeeded` condition when the pipeline a run refers to does not
/// exist (Tekton's word for it).
pub const REASON_COULDNT_GET_PIPELINE: &str = "CouldntGetPipeline";

/// Finished executors waiting for their run to be reconciled. Each entry is one
/// attempt's end, so the queue is bounded by the attempts running at once; 1,024 lets a
/// 1,000-task fan-out finish without executors waiting on each other to report.
const TRIGGER_QUEUE: usize = 1024;

/// How soon to decide again after a conflicting status write: the watch has the newer
/// object by then in the common case, and a hot run is not hammered.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(50);

/// How soon to try again after an error talking to the API.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// How soon to look again at a run whose pipeline does not exist yet.
const MISSING_PIPELINE_RECHECK: Duration = Duration::from_secs(10);

/// Errors of one reconcile; all of them are retried after [`ERROR_BACKOFF`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to talk to the API server")]
    Kube(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the reconciler shares: the API client, the clock, the executors, and which
/// attempts run in this process.
pub struct Ctx {
    client: Client,
    clock: Clock,
    executors: Registry,
    runs: Mutex<HashMap<String, Slot>>,
    trigger: mpsc::Sender<ObjectRef<PipelineRun>>,
}

/// This process's view of one run (by uid): the attempts it runs, and the outcomes
/// not yet recorded in the run's status.
#[derive(Debug, Default)]
struct Slot {
    attached: HashMap<InstanceId, Attached>,
    finished: Vec<Finished>,
}

#[derive(Debug)]
struct Attached {
    attempt: u32,
    cancel: CancellationToken,
}

#[derive(Clone, Debug)]
struct Finished {
    instance: InstanceId,
    attempt: u32,
    finish: Finish,
    message: Option<String>,
    at: Timestamp,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("clock", &self.clock)
            .field("executors", &self.executors)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending_finishes(&self, uid: &str) -> Vec<Finished> {
        self.slots()
            .get(uid)
            .map(|s| s.finished.clone())
            .unwrap_or_default()
    }

    /// Drops the outcomes that a status write has just recorded.
    fn recorded(&self, uid: &str, done: &[Finished]) {
        if let Some(s) = self.slots().get_mut(uid) {
            s.finished.retain(|f| {
                !done
                    .iter()
                    .any(|d| d.instance == f.instance && d.attempt == f.attempt)
            });
        }
    }

    fn is_attached(&self, uid: &str, id: &InstanceId, attempt: u32) -> bool {
        self.slots()
            .get(uid)
            .and_then(|s| s.attached.get(id))
            .is_some_and(|a| a.attempt == attempt)
    }

    /// Stops every attempt this process runs for `uid` that the status no longer says
    /// is running (cancelled, timed out, or a newer attempt).
    fn detach_stale(&self, uid: &str, status: &PipelineRunStatus) {
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(uid) else {
            return;
        };
        slot.attached.retain(|id, a| {
            let current = status.tasks.iter().any(|e| {
                e.name == id.task
                    && e.matrix_index == id.matrix_index
                    && e.state == TaskState::Running
                    && e.attempts == a.attempt
            });
            if !current {
                a.cancel.cancel();
            }
            current
        });
    }

    /// Forgets a run that completed or was deleted, stopping whatever still runs.
    fn forget(&self, uid: &str) {
        if let Some(slot) = self.slots().remove(uid) {
            for a in slot.attached.values() {
                a.cancel.cancel();
            }
        }
    }
}

/// Runs the taskflow controller until `shutdown` is cancelled, then lets in-flight
/// reconciles finish. Executors still running at shutdown are dropped with the process;
/// the next start recovers their attempts from the stored status.
pub async fn run(client: Client, clock: Clock, executors: Registry, shutdown: CancellationToken) {
    let (trigger, triggered) = mpsc::channel(TRIGGER_QUEUE);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        clock,
        executors,
        runs: Mutex::new(HashMap::new()),
        trigger,
    });
    let runs: Api<PipelineRun> = Api::all(client);
    let stop = shutdown.clone();
    Controller::new(runs, watcher::Config::default())
        .reconcile_on(ReceiverStream::new(triggered))
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::trace!(run = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
        })
        .await;
    tracing::info!("taskflow controller stopped");
}

fn error_policy(run: Arc<PipelineRun>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(run = %run.name_any(), error = %err, source = ?std::error::Error::source(err), "taskflow reconcile failed; retrying");
    Action::requeue(ERROR_BACKOFF)
}

/// One reconcile of one run. Idempotent: everything it decides comes from the stored
/// run, its Pipeline and Tasks, and the outcomes this process has not recorded yet.
///
/// # Errors
/// [`Error::Kube`] when the API cannot be read or written (other than a conflict).
pub async fn reconcile(obj: Arc<PipelineRun>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let name = obj.name_any();
    let runs: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &ns);
    // The cache may lag our own last write; a fresh read avoids a conflict per step.
    let Some(run) = runs.get_opt(&name).await? else {
        if let Some(uid) = obj.uid() {
            ctx.forget(&uid);
        }
        return Ok(Action::await_change());
    };
    let uid = run.uid().unwrap_or_default();
    let stored = run.status.clone().unwrap_or_default();
    if stored.is_done() {
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }
    let now = ctx.clock.now();

    // The pipeline is pinned into the status at the first step.
    let pipeline = match &stored.pipeline_spec {
        Some(p) => p.clone(),
        None => {
            let pipelines: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &ns);
            match pipelines.get_opt(&run.spec.pipeline_ref.name).await? {
                Some(p) => p.spec,
                None => {
                    let mut status = stored.clone();
                    set_succeeded(
                        &mut status.conditions,
                        "Unknown",
                        REASON_COULDNT_GET_PIPELINE,
                        &format!("pipeline {:?} not found", run.spec.pipeline_ref.name),
                        run.metadata.generation,
                        now,
                    );
                    return write_status(&runs, &run, status)
                        .await
                        .map(|written| match written {
                            Write::Conflict => Action::requeue(CONFLICT_BACKOFF),
                            _ => Action::requeue(MISSING_PIPELINE_RECHECK),
                        });
                }
            }
        }
    };
    let catalog = load_tasks(&ctx, &ns, &pipeline).await?;
    let mut status = stored.clone();
    status.pipeline_spec = Some(pipeline.clone());

    // 1. Outcomes this process has seen and not yet recorded.
    let finished = ctx.pending_finishes(&uid);
    for f in &finished {
        match record_finish(&mut status, &f.instance, f.attempt, f.finish.clone(), f.at) {
            Ok(()) => {
                if let (Some(m), Finish::Succeeded { .. }) = (&f.message, &f.finish)
                    && let Some(e) = entry_mut(&mut status, &f.instance)
                {
                    e.message = Some(m.clone());
                }
            }
            Err(e) => tracing::debug!(run = %name, error = %e, "dropping a stale outcome"),
        }
    }

    // 2. One-shot operations requested through annotations.
    let ops = operations(&run);
    for op in &ops {
        let res = match op {
            Operation::Retry(task) => retry_task(&mut status, task, now),
            Operation::Skip(task, reason) => skip_task(&mut status, task, reason, now),
        };
        match res {
            Ok(n) => tracing::info!(run = %name, ?op, instances = n, "operation applied"),
            Err(e) => tracing::warn!(run = %name, ?op, error = %e, "operation refused"),
        }
    }

    // 3. Attempts recorded as running that no executor here owns: a restart (or a
    //    previous leader) left them.
    let mut view = run.clone();
    view.status = Some(status.clone());
    let orphans: Vec<InstanceId> = status
        .tasks
        .iter()
        .filter(|e| e.state == TaskState::Running)
        .map(|e| (InstanceId::new(e.name.clone(), e.matrix_index), e.attempts))
        .filter(|(id, attempt)| !ctx.is_attached(&uid, id, *attempt))
        .map(|(id, _)| id)
        .collect();
    let mut reruns = Vec::new();
    if !orphans.is_empty() {
        let mut recovery = recover(Input {
            run: &view,
            pipeline: &pipeline,
            tasks: &catalog,
            now,
            max_running: None,
        });
        recovery.interrupt.retain(|id| orphans.contains(id));
        recovery.rerun.retain(|s| orphans.contains(&s.instance));
        for id in &recovery.interrupt {
            tracing::warn!(run = %name, task = %id, "interrupted by a restart; waiting for a human");
        }
        recovery.apply(&mut status, now);
        reruns = recovery.rerun;
        view.status = Some(status.clone());
    }

    // 4. Decide.
    let decisions = schedule(Input {
        run: &view,
        pipeline: &pipeline,
        tasks: &catalog,
        now,
        max_running: None,
    });
    decisions.apply(&mut status, now);

    // 5. Record, before anything acts on it.
    match write_status(&runs, &run, status.clone()).await? {
        Write::Conflict => return Ok(Action::requeue(CONFLICT_BACKOFF)),
        Write::Unchanged | Write::Stored => {}
    }
    ctx.recorded(&uid, &finished);
    if !ops.is_empty() {
        clear_operations(&runs, &name).await?;
    }
    for f in &finished {
        record_task_run(&ctx, &ns, &name, f).await;
    }

    // 6. Act: stop what no longer runs, start what now does.
    ctx.detach_stale(&uid, &status);
    let mut launched = run.clone();
    launched.status = Some(status.clone());
    for start in decisions.starts().cloned().chain(reruns) {
        launch(&ctx, &launched, start, now).await;
    }
    if status.is_done() {
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }
    Ok(match decisions.wake_at {
        // The wake-up is on the process clock, which may run faster than real time.
        Some(at) => Action::requeue(ctx.clock.real_until(at).max(Duration::from_millis(10))),
        None => Action::await_change(),
    })
}

enum Write {
    Unchanged,
    Stored,
    Conflict,
}

/// Writes `status` if it differs from the stored one, checked against the run's
/// resourceVersion.
async fn write_status(
    runs: &Api<PipelineRun>,
    run: &PipelineRun,
    status: PipelineRunStatus,
) -> Result<Write> {
    if run.status.as_ref() == Some(&status) {
        return Ok(Write::Unchanged);
    }
    let mut next = run.clone();
    next.status = Some(status);
    match runs
        .replace_status(&run.name_any(), &PostParams::default(), &next)
        .await
    {
        Ok(_) => Ok(Write::Stored),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Write::Conflict),
        Err(e) => Err(e.into()),
    }
}

/// The Tasks the pipeline refers to; a missing one is left out, and the scheduler fails
/// the run with `CouldntGetTask`. A Task runs as idempotent if it says so or if its
/// executor is.
async fn load_tasks(ctx: &Ctx, ns: &str, pipeline: &PipelineSpec) -> Result<TaskCatalog> {
    let api: Api<Task> = Api::namespaced(ctx.client.clone(), ns);
    let mut catalog = BTreeMap::new();
    for pt in pipeline.tasks.iter().chain(&pipeline.finally) {
        let name = &pt.task_ref.name;
        if catalog.contains_key(name) {
            continue;
        }
        if let Some(t) = api.get_opt(name).await? {
            let mut spec = t.spec;
            spec.idempotent |= ctx
                .executors
                .get(&spec.executor)
                .is_some_and(|e| e.idempotent());
            catalog.insert(name.clone(), spec);
        }
    }
    Ok(catalog)
}

fn entry_mut<'a>(
    status: &'a mut PipelineRunStatus,
    id: &InstanceId,
) -> Option<&'a mut shoal_core::taskflow::PipelineTaskStatus> {
    status
        .tasks
        .iter_mut()
        .find(|e| e.name == id.task && e.matrix_index == id.matrix_index)
}

#[derive(Debug)]
enum Operation {
    Retry(String),
    Skip(String, String),
}

fn operations(run: &PipelineRun) -> Vec<Operation> {
    let a = run.annotations();
    let mut ops = Vec::new();
    if let Some(task) = a.get(ANNOTATION_RETRY).filter(|t| !t.is_empty()) {
        ops.push(Operation::Retry(task.clone()));
    }
    if let Some(task) = a.get(ANNOTATION_SKIP).filter(|t| !t.is_empty()) {
        let reason = a
            .get(ANNOTATION_SKIP_REASON)
            .cloned()
            .unwrap_or_else(|| "no reason given".into());
        ops.push(Operation::Skip(task.clone(), reason));
    }
    ops
}

async fn clear_operations(runs: &Api<PipelineRun>, name: &str) -> Result<()> {
    let patch = json!({"metadata": {"annotations": {
        ANNOTATION_RETRY: null, ANNOTATION_SKIP: null, ANNOTATION_SKIP_REASON: null}}});
    runs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Mirrors a recorded outcome into the attempt's TaskRun. Best effort: the run's status
/// is the record the scheduler reads; the TaskRun is for people and tools.
async fn record_task_run(ctx: &Ctx, ns: &str, run: &str, f: &Finished) {
    // By name, not from the status: the same step may already have started the next
    // attempt of this instance.
    let name = task_run_name(run, &f.instance.task, f.instance.matrix_index, f.attempt);
    let (state, reason, cond, results, message) = match &f.finish {
        Finish::Succeeded { results } => (
            TaskState::Succeeded,
            None,
            ("True", "Succeeded"),
            results.clone(),
            f.message.clone(),
        ),
        Finish::Failed { message } => (
            TaskState::Failed,
            Some(TaskReason::Failed),
            ("False", "Failed"),
            vec![],
            Some(message.clone()),
        ),
    };
    let mut tr = TaskRunStatus {
        state: Some(state),
        reason,
        completion_time: Some(Time(f.at)),
        results,
        message: message.clone(),
        ..TaskRunStatus::default()
    };
    set_succeeded(
        &mut tr.conditions,
        cond.0,
        cond.1,
        message.as_deref().unwrap_or(""),
        None,
        f.at,
    );
    let api: Api<TaskRun> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({ "status": tr });
    if let Err(err) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(task_run = %name, error = %err, "failed to record the TaskRun's outcome");
    }
}

/// Creates the attempt's TaskRun and spawns its executor.
async fn launch(ctx: &Arc<Ctx>, run: &PipelineRun, start: Start, now: Timestamp) {
    let ns = run.namespace().unwrap_or_else(|| "default".into());
    let uid = run.uid().unwrap_or_default();
    let run_name = run.name_any();
    let started_at = run
        .status
        .as_ref()
        .and_then(|s| {
            s.tasks.iter().find(|e| {
                e.name == start.instance.task && e.matrix_index == start.instance.matrix_index
            })
        })
        .and_then(|e| e.start_time.as_ref())
        .map_or(now, |t| t.0);

    let task_runs: Api<TaskRun> = Api::namespaced(ctx.client.clone(), &ns);
    match task_runs
        .create(&PostParams::default(), &TaskRun::for_start(run, &start))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {} // a re-run after a restart
        Err(e) => {
            tracing::warn!(task_run = %start.task_run, error = %e, "failed to create the TaskRun")
        }
    }
    let mut running = TaskRunStatus {
        state: Some(TaskState::Running),
        start_time: Some(Time(started_at)),
        ..TaskRunStatus::default()
    };
    set_succeeded(&mut running.conditions, "Unknown", "Running", "", None, now);
    let _ = task_runs
        .patch_status(
            &start.task_run,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": running })),
        )
        .await;

    let cancel = CancellationToken::new();
    ctx.slots().entry(uid.clone()).or_default().attached.insert(
        start.instance.clone(),
        Attached {
            attempt: start.attempt,
            cancel: cancel.clone(),
        },
    );
    let exec_ctx = ExecContext {
        namespace: ns.clone(),
        run: run_name.clone(),
        instance: start.instance.clone(),
        attempt: start.attempt,
        params: start.params.clone(),
        started_at,
        clock: ctx.clock.clone(),
        client: ctx.client.clone(),
        cancel: cancel.clone(),
    };
    let executor = ctx.executors.get(&start.executor).cloned();
    let ctx = ctx.clone();
    let span = tracing::info_span!("executor", run = %run_name, task = %start.instance,
        attempt = start.attempt, executor = %start.executor);
    tokio::spawn(
        async move {
            let result = tokio::select! {
                _ = cancel.cancelled() => {
                    tracing::info!("stopped");
                    return;
                }
                r = async {
                    match &executor {
                        // A panicking executor fails its attempt instead of leaving it
                        // running forever.
                        Some(e) => AssertUnwindSafe(e.run(exec_ctx))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| {
                                Err(ExecError::Failed(format!("executor {} panicked", e.name())))
                            }),
                        None => Err(ExecError::Unknown(start.executor.clone())),
                    }
                } => r,
            };
            let (finish, message) = match result {
                Ok(out) => (
                    Finish::Succeeded {
                        results: out.results,
                    },
                    out.message,
                ),
                Err(e) => {
                    let message = e.report();
                    tracing::info!(%message, "attempt failed");
                    (Finish::Failed { message }, None)
                }
            };
            {
                let mut slots = ctx.slots();
                let Some(slot) = slots.get_mut(&uid) else {
                    return;
                };
                if slot
                    .attached
                    .get(&start.instance)
                    .is_none_or(|a| a.attempt != start.attempt)
                {
                    return;
                }
                // The attempt stays attached until its outcome is recorded, so that a
                // reconcile running meanwhile does not take it for an orphan.
                slot.finished.push(Finished {
                    instance: start.instance.clone(),
                    attempt: start.attempt,
                    finish,
                    message,
                    at: ctx.clock.now(),
                });
            }
            let target = ObjectRef::<PipelineRun>::new(&run_name).within(&ns);
            let _ = ctx.trigger.send(target).await;
        }
        .instrument(span),
    );
}
