//! The taskflow controller: drives every PipelineRun from its stored status, with the
//! pure scheduler of [`shoal_core::taskflow`] deciding and executors doing the work.
//!
//! ```text
//!  watch PipelineRuns ─┐        ┌──────────── executor finished (in memory) ◄─┐
//!  (reflector caches:  ▼        ▼                                               │
//!   runs, Pipelines, reconcile(run): freshest of cache / own last write         │
//!   Tasks)           ─► queue: may it start? (concurrency limits) ─ no ─► Queued │
//!                    ─► fold finishes (record_finish) ─► retry/skip ops         │
//!                    ─► recover() the Running attempts no executor here owns    │
//!                    ─► schedule() ─► apply ─► PUT status (resourceVersion CAS) │
//!                    ─► stop cancelled attempts ─► create TaskRuns ─► spawn ────┘
//!                    ─► requeue at wake_at            └─► recorder: TaskRun outcomes
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
//! # Cost per task
//!
//! Reads come from reflector caches (runs, Pipelines, Tasks), never a GET per step: a
//! run is read from the cache or, when the cache still lags this process's own last
//! status write, from that write's answer (shoal's resourceVersions are store
//! revisions, so "newer" is a comparison; the write is a CAS either way, so a wrong
//! guess costs a conflict, never a lost update). A cache miss on a Pipeline or Task
//! falls back to a GET, so a run applied together with its pipeline does not wait.
//!
//! Writes: one status write per decision round, however many tasks it starts or
//! finishes; per attempt a TaskRun create (before its executor starts) and one status
//! write with its outcome, made in the background by the recorder. A TaskRun's
//! `Running` status is written only for an attempt still running after
//! [`RUNNING_MARK_AFTER`], so a quick task costs two writes to its TaskRun, not three;
//! it carries what the attempt is doing then (`status.progress`), and a later change
//! of that is one more write, however many reports were made while a write was in
//! flight (an executor's quick stages cost nothing).
//!
//! # Concurrency limits
//!
//! `Pipeline.spec.maxConcurrentRuns` and [`Config::max_running_runs`] cap running
//! PipelineRuns; [`shoal_core::taskflow::queue::admit`] decides which waiting run may
//! start, from the cached runs plus the runs this process admitted and the cache does
//! not show started yet (one lock around decide-and-record, so two reconciles cannot
//! take the same slot). A run that must wait is written `Succeeded=Unknown`, reason
//! `Queued`; when a run completes, the runs that may start now are woken.
//!
//! # Leadership
//!
//! The controller does not elect itself: `shoal serve` runs it for exactly one leader
//! term of role `taskflow` and gives it a client whose every request carries the term's
//! fence, so the API refuses its writes once the term is over (412 `Fenced`). On such
//! a refusal the controller steps down at once ([`Exit::Fenced`]); whenever it stops,
//! its executors are cancelled before anything else and nothing new is launched. What
//! an executor did outside shoal before that is settled by the next leader like a
//! restart: [`recover`].
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
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use shoal_core::taskflow::queue::{self, Limits, RunKey, Verdict};
use shoal_core::taskflow::{
    Finish, Input, InstanceId, Pipeline, PipelineRun, PipelineRunStatus, PipelineSpec, Progress,
    RunReason, Start, Task, TaskCatalog, TaskReason, TaskRun, TaskRunStatus, TaskState,
    record_finish, recover, retry_task, run::set_succeeded, run::task_run_name, schedule,
    skip_task,
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

/// On a TaskRun: the identity of the replica whose controller created it and started
/// its executor.
pub const ANNOTATION_LAUNCHED_BY: &str = "taskflow.shoal.io/launched-by";

/// The reason of the `Succeeded` condition when the pipeline a run refers to does not
/// exist (Tekton's word for it).
pub const REASON_COULDNT_GET_PIPELINE: &str = "CouldntGetPipeline";

/// Finished executors waiting for their run to be reconciled. Each entry is one
/// attempt's end, so the queue is bounded by the attempts running at once; 1,024 lets a
/// 1,000-task fan-out finish without executors waiting on each other to report.
const TRIGGER_QUEUE: usize = 1024;

/// TaskRun outcomes waiting for the recorder. A full queue makes the reconcile that
/// recorded them wait, which is the back-pressure wanted: 4,096 is a few decision
/// rounds of a 1,000-task fan-out.
const RECORD_QUEUE: usize = 4096;

/// TaskRun writes in flight at once (creates in a reconcile, outcomes in the recorder):
/// enough for SQLite's group commit to batch them, few enough that the client keeps a
/// small connection pool.
const WRITE_CONCURRENCY: usize = 32;

/// An attempt still running after this long gets its TaskRun's `Running` status
/// written, with what it is doing by then; quicker ones go straight from created to
/// their outcome. (The PipelineRun's status says the task runs from the start.) A
/// release's precheck and first step take a few seconds on a busy control plane: at
/// 2 s most of them paid for a mark nobody had time to read.
pub const RUNNING_MARK_AFTER: Duration = Duration::from_secs(5);

/// The least real time between two writes of an attempt's progress to its TaskRun: a
/// person watching sees each stage that lasts, and a fleet of attempts going through
/// quick stages at once (500 clusters applying, on a loaded control plane) does not
/// cost a write per stage each. (kubelet, for comparison, writes a node's status every
/// 10 s.)
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// When [`report_while`] writes: the `Running` mark after `mark_after`, then progress
/// no more often than `every`.
#[derive(Clone, Copy, Debug)]
struct Cadence {
    mark_after: Duration,
    every: Duration,
}

const CADENCE: Cadence = Cadence {
    mark_after: RUNNING_MARK_AFTER,
    every: PROGRESS_EVERY,
};

/// How soon to decide again after a conflicting status write: the watch has the newer
/// object by then in the common case, and a hot run is not hammered.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(50);

/// How soon to try again after an error talking to the API.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// How long, in real time, an idempotent attempt is run again after transient failures
/// ([`ExecError::is_transient`]: a timeout of shoal's own request, a member's 429 or
/// 5xx, a connection reset) before the task fails: five minutes rides out a member's
/// apiserver restart or a control plane busy on two cores, and is short enough that a
/// member that stays unreachable fails its cluster the same hour.
pub const TRANSIENT_RETRY_BUDGET: Duration = Duration::from_secs(300);

/// The first wait before running an attempt again after a transient failure; it
/// doubles up to [`TRANSIENT_BACKOFF_MAX`].
const TRANSIENT_BACKOFF_MIN: Duration = Duration::from_millis(500);
const TRANSIENT_BACKOFF_MAX: Duration = Duration::from_secs(15);

/// The condition type a TaskRun carries once an attempt of it retried transient
/// failures (status `True`, reason [`REASON_TRANSIENT_ERROR`]); it stays after the
/// outcome so the retries remain visible.
pub const CONDITION_TRANSIENT_ERRORS: &str = "TransientErrors";

/// The reason of a TaskRun's `Succeeded=Unknown` condition while its attempt waits to
/// run again after a transient failure, and of its [`CONDITION_TRANSIENT_ERRORS`].
pub const REASON_TRANSIENT_ERROR: &str = "TransientError";

/// How soon to look again at a run whose pipeline does not exist yet.
const MISSING_PIPELINE_RECHECK: Duration = Duration::from_secs(10);

/// How often a queued run looks at the queue again on its own. Completions wake the
/// runs that may start at once; this covers a limit raised by editing a Pipeline.
const QUEUED_RECHECK: Duration = Duration::from_secs(30);

/// Errors of one reconcile; all of them are retried after [`ERROR_BACKOFF`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to talk to the API server")]
    Kube(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the controller runs.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// At most this many PipelineRuns running at once over all namespaces (later ones
    /// are `Queued`); `None` for no cap.
    pub max_running_runs: Option<usize>,
    /// This replica's name, recorded on the TaskRuns it launches
    /// ([`ANNOTATION_LAUNCHED_BY`]), so that history shows which replica acted.
    pub identity: Option<String>,
    /// How long an idempotent attempt is run again after transient failures, in real
    /// time; `None` for [`TRANSIENT_RETRY_BUDGET`].
    pub transient_retry_budget: Option<Duration>,
    /// Where transient retries are counted (`/metrics`).
    pub metrics: Option<Metrics>,
}

/// The controller's series in the server's `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// `shoal_taskflow_transient_retries_total{executor}`: attempts run again after a
    /// transient failure.
    pub transient_retries: prometheus_client::metrics::family::Family<
        Vec<(String, String)>,
        prometheus_client::metrics::counter::Counter,
    >,
    /// `shoal_taskflow_transient_give_ups_total{executor}`: attempts that failed because
    /// their transient failures outlasted the retry budget.
    pub transient_give_ups: prometheus_client::metrics::family::Family<
        Vec<(String, String)>,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl Metrics {
    /// Registers the series in `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "shoal_taskflow_transient_retries",
            "Task attempts run again after a transient failure (a timeout, 429, 5xx or reset)",
            self.transient_retries.clone(),
        );
        registry.register(
            "shoal_taskflow_transient_give_ups",
            "Task attempts failed because transient failures outlasted the retry budget",
            self.transient_give_ups.clone(),
        );
    }
}

/// What the reconciler shares: the API client, the clock, the executors, the caches,
/// and which attempts run in this process.
pub struct Ctx {
    client: Client,
    clock: Clock,
    executors: Registry,
    config: Config,
    runs: Mutex<HashMap<String, Slot>>,
    trigger: mpsc::Sender<ObjectRef<PipelineRun>>,
    record: mpsc::Sender<Record>,
    cache: Caches,
    /// The answer to this process's last status write of each run (by uid), for as long
    /// as the cache has not caught up with it.
    written: Mutex<HashMap<String, Arc<PipelineRun>>>,
    /// Runs this process let out of the queue; they count as running even while the
    /// cache still shows them waiting. Serialises admission decisions.
    admitted: Mutex<HashMap<RunKey, String>>,
    /// Cancelled when the controller stops (shutdown, or a fenced write): nothing is
    /// launched after that.
    stop: CancellationToken,
    /// Set when the API refused a write because this replica's leader term is over.
    fenced: std::sync::atomic::AtomicBool,
}

/// Why [`run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `shutdown` was cancelled.
    Shutdown,
    /// The API refused a write as made under a leader term that is over (412
    /// `Fenced`): another replica leads. The controller stopped at once.
    Fenced,
}

/// Whether `err` is the API's answer to a write made under a leader term that is over.
fn is_fenced(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 412)
}

/// Reflector stores of what reconciles read.
#[derive(Clone)]
struct Caches {
    runs: Store<PipelineRun>,
    pipelines: Store<Pipeline>,
    tasks: Store<Task>,
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
    started_at: Timestamp,
    at: Timestamp,
    /// Transient failures the attempt rode out, if any.
    retried: Option<Retried>,
}

/// Transient failures one attempt was run again after.
#[derive(Clone, Debug)]
struct Retried {
    count: u32,
    last: String,
    over: Duration,
}

impl Retried {
    fn message(&self) -> String {
        format!(
            "{} transient failure{} retried over {:.0?}; the last: {}",
            self.count,
            if self.count == 1 { "" } else { "s" },
            self.over,
            self.last
        )
    }
}

/// A TaskRun status write for the recorder.
#[derive(Debug)]
struct Record {
    namespace: String,
    task_run: String,
    status: TaskRunStatus,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("clock", &self.clock)
            .field("executors", &self.executors)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The numeric value of a resourceVersion (a store revision in shoal).
/// Whether this process's own last write of a run is newer than the cached copy. A
/// resourceVersion that is not a number (not shoal's) is never taken as newer.
fn ours_is_newer(ours: &PipelineRun, cached: &PipelineRun) -> bool {
    crate::is_newer(ours, cached)
}

impl Ctx {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PipelineRun>>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest of the cached `run` and this process's own last write of it.
    fn freshest(&self, cached: Arc<PipelineRun>) -> Arc<PipelineRun> {
        let Some(uid) = cached.uid() else {
            return cached;
        };
        let mut written = self.written();
        match written.get(&uid) {
            Some(ours) if ours_is_newer(ours, &cached) => ours.clone(),
            Some(_) => {
                written.remove(&uid);
                cached
            }
            None => cached,
        }
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

    /// The API said this replica no longer leads: stop acting now.
    fn step_down(&self, what: &str) {
        if !self.fenced.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tracing::warn!(
                refused = what,
                "a write was refused because this replica's leader term is over; stepping down"
            );
        }
        self.stop.cancel();
    }

    /// Notes a failed write; a fenced one makes the controller step down.
    fn check_write(&self, what: &str, err: &kube::Error) {
        if is_fenced(err) {
            self.step_down(what);
        }
    }

    /// Stops every attempt of every run (the controller is stopping).
    fn stop_all(&self) {
        for (_, slot) in self.slots().drain() {
            for a in slot.attached.values() {
                a.cancel.cancel();
            }
        }
    }

    /// The caps in force, from the controller's config and the cached Pipelines.
    fn limits(&self) -> Limits {
        Limits {
            global: self.config.max_running_runs,
            per_pipeline: self
                .cache
                .pipelines
                .state()
                .iter()
                .filter_map(|p| {
                    let limit = p.spec.max_concurrent_runs?;
                    Some((
                        (p.namespace().unwrap_or_default(), p.name_any()),
                        limit as usize,
                    ))
                })
                .collect(),
        }
    }

    /// The queue's verdict on every waiting run, from the cache overlaid with this
    /// process's writes and admissions. Call with `admitted` locked.
    fn verdicts(
        &self,
        admitted: &HashMap<RunKey, String>,
        limits: &Limits,
    ) -> BTreeMap<RunKey, Verdict> {
        let entries: Vec<queue::Entry> = self
            .cache
            .runs
            .state()
            .into_iter()
            .map(|r| self.freshest(r))
            .filter_map(|r| {
                let mut e = queue::Entry::of(&r)?;
                e.started |= admitted
                    .get(&e.key)
                    .is_some_and(|uid| r.uid().as_ref() == Some(uid));
                Some(e)
            })
            .collect();
        queue::admit(&entries, limits)
    }

    /// Whether `run` (not started yet) may start now; if so it is counted as running
    /// from this moment on.
    fn admit(&self, run: &PipelineRun, key: &RunKey) -> Verdict {
        let limits = self.limits();
        let uid = run.uid().unwrap_or_default();
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        if admitted.get(key) == Some(&uid) {
            return Verdict::Start;
        }
        let applies = limits.global.is_some()
            || limits
                .per_pipeline
                .contains_key(&(key.namespace.clone(), run.spec.pipeline_ref.name.clone()));
        let verdict = if applies {
            self.verdicts(&admitted, &limits)
                .remove(key)
                .unwrap_or(Verdict::Start)
        } else {
            Verdict::Start
        };
        if verdict == Verdict::Start && applies {
            admitted.insert(key.clone(), uid);
        }
        verdict
    }

    /// A run completed or went away: it no longer holds a slot, and the runs that may
    /// start now are woken.
    fn release(&self, key: &RunKey) {
        let limits = self.limits();
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        admitted.remove(key);
        if limits.is_unlimited() {
            return;
        }
        for (k, v) in self.verdicts(&admitted, &limits) {
            if v == Verdict::Start {
                let target = ObjectRef::<PipelineRun>::new(&k.name).within(&k.namespace);
                if self.trigger.try_send(target).is_err() {
                    tracing::debug!(run = %k, "trigger queue full; the run looks again later");
                }
            }
        }
    }
}

fn key_of(run: &PipelineRun) -> RunKey {
    RunKey {
        namespace: run.namespace().unwrap_or_default(),
        name: run.name_any(),
    }
}

/// Runs the taskflow controller until `shutdown` is cancelled or a write of it is
/// refused as fenced, then stops every executor it started at once (their attempts stay
/// `Running` in the stored status: the next controller, here after a restart or on
/// another replica, recovers them) and lets in-flight reconciles finish (whatever they
/// still write is fenced too when the term is over).
///
/// With leader election, give `client` the leader's fence header (see
/// `shoal_apiserver::fence`), so that every write it makes is refused once the term is
/// over.
pub async fn run(
    client: Client,
    clock: Clock,
    executors: Registry,
    config: Config,
    shutdown: CancellationToken,
) -> Exit {
    let shutdown = shutdown.child_token();
    let (trigger, triggered) = mpsc::channel(TRIGGER_QUEUE);
    let (record, records) = mpsc::channel(RECORD_QUEUE);
    let pipelines = crate::cache::spawn(
        Api::<Pipeline>::all(client.clone()),
        watcher::Config::default(),
        tracing::info_span!("taskflow_cache", kind = "pipelines"),
        shutdown.clone(),
        |_| {},
    );
    let tasks = crate::cache::spawn(
        Api::<Task>::all(client.clone()),
        watcher::Config::default(),
        tracing::info_span!("taskflow_cache", kind = "tasks"),
        shutdown.clone(),
        |_| {},
    );
    let controller = Controller::new(
        Api::<PipelineRun>::all(client.clone()),
        watcher::Config::default(),
    );
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        clock,
        executors,
        config,
        runs: Mutex::new(HashMap::new()),
        trigger,
        record,
        cache: Caches {
            runs: controller.store(),
            pipelines: pipelines.clone(),
            tasks: tasks.clone(),
        },
        written: Mutex::new(HashMap::new()),
        admitted: Mutex::new(HashMap::new()),
        stop: shutdown.clone(),
        fenced: std::sync::atomic::AtomicBool::new(false),
    });
    // Executors stop the moment the controller does, not after the reconciles drain.
    tokio::spawn({
        let ctx = ctx.clone();
        async move {
            ctx.stop.cancelled().await;
            ctx.stop_all();
        }
        .instrument(tracing::info_span!("taskflow_stopper"))
    });
    let recorder = tokio::spawn(
        recorder(ctx.clone(), records, shutdown.clone())
            .instrument(tracing::info_span!("taskflow_recorder")),
    );
    // Decisions read Pipelines and Tasks from the caches: wait for their first list (a
    // miss would still fall back to a GET, but a full cache avoids a GET per run).
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = async { let _ = futures::join!(pipelines.wait_until_ready(), tasks.wait_until_ready()); } => {}
    }
    let stop = shutdown.clone();
    let on_result = ctx.clone();
    controller
        .reconcile_on(ReceiverStream::new(triggered))
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| {
            let ctx = on_result.clone();
            async move {
                match res {
                    Ok((obj, _)) => tracing::trace!(run = %obj, "reconciled"),
                    Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                        // A trigger for a run that was deleted: stop what it still runs.
                        let key = RunKey {
                            namespace: obj.namespace.clone().unwrap_or_default(),
                            name: obj.name.clone(),
                        };
                        if let Some(uid) = obj.extra.uid.as_deref() {
                            ctx.forget(uid);
                        }
                        ctx.release(&key);
                    }
                    Err(e) => tracing::debug!(error = %e, "reconcile failed"),
                }
            }
        })
        .await;
    ctx.stop.cancel();
    ctx.stop_all();
    let _ = recorder.await;
    tracing::info!("taskflow controller stopped");
    if ctx.fenced.load(std::sync::atomic::Ordering::SeqCst) {
        Exit::Fenced
    } else {
        Exit::Shutdown
    }
}

/// Writes TaskRun outcomes, [`WRITE_CONCURRENCY`] at a time, until `shutdown`. Best
/// effort: the run's status is the record the scheduler reads; TaskRuns are for people
/// and tools.
async fn recorder(ctx: Arc<Ctx>, records: mpsc::Receiver<Record>, shutdown: CancellationToken) {
    let writes = ReceiverStream::new(records)
        .map(|r| {
            let api: Api<TaskRun> = Api::namespaced(ctx.client.clone(), &r.namespace);
            let ctx = ctx.clone();
            async move {
                let mut patch = json!({ "status": r.status });
                // The attempt is over: what it was doing is no longer news.
                patch["status"]["progress"] = serde_json::Value::Null;
                if let Err(err) = api
                    .patch_status(&r.task_run, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    ctx.check_write("a TaskRun's outcome", &err);
                    tracing::debug!(task_run = %r.task_run, error = %err, "failed to record the TaskRun's outcome");
                }
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .for_each(|()| std::future::ready(()));
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = writes => {}
    }
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
    let run = ctx.freshest(obj);
    let uid = run.uid().unwrap_or_default();
    let key = key_of(&run);
    let stored = run.status.clone().unwrap_or_default();
    if stored.is_done() {
        ctx.forget(&uid);
        ctx.release(&key);
        return Ok(Action::await_change());
    }
    let now = ctx.clock.now();

    // 0. A run that has not started waits for a slot under the concurrency limits.
    if stored.start_time.is_none()
        && queue::Entry::of(&run).is_some()
        && let Some((reason, message)) =
            ctx.admit(&run, &key).condition(&run.spec.pipeline_ref.name)
    {
        let mut status = stored.clone();
        set_succeeded(
            &mut status.conditions,
            "Unknown",
            reason.as_str(),
            &message,
            run.metadata.generation,
            now,
        );
        return write_status(&ctx, &runs, &run, status)
            .await
            .map(|written| match written {
                Write::Conflict => Action::requeue(CONFLICT_BACKOFF),
                _ => Action::requeue(QUEUED_RECHECK),
            });
    }

    // The pipeline is pinned into the status at the first step.
    let pipeline = match &stored.pipeline_spec {
        Some(p) => p.clone(),
        None => match load_pipeline(&ctx, &ns, &run.spec.pipeline_ref.name).await? {
            Some(p) => p,
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
                return write_status(&ctx, &runs, &run, status).await.map(
                    |written| match written {
                        Write::Conflict => Action::requeue(CONFLICT_BACKOFF),
                        _ => Action::requeue(MISSING_PIPELINE_RECHECK),
                    },
                );
            }
        },
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
    let mut view = (*run).clone();
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
    match write_status(&ctx, &runs, &run, status.clone()).await? {
        Write::Conflict => return Ok(Action::requeue(CONFLICT_BACKOFF)),
        Write::Unchanged | Write::Stored => {}
    }
    ctx.recorded(&uid, &finished);
    if !ops.is_empty() {
        clear_operations(&ctx, &runs, &name).await?;
    }
    for f in &finished {
        // By name, not from the status: the same step may already have started the
        // next attempt of this instance.
        let record = Record {
            namespace: ns.clone(),
            task_run: task_run_name(&name, &f.instance.task, f.instance.matrix_index, f.attempt),
            status: outcome_status(f),
        };
        if ctx.record.send(record).await.is_err() {
            break; // the controller is stopping
        }
    }

    // 6. Act: stop what no longer runs, start what now does.
    ctx.detach_stale(&uid, &status);
    let mut launched = (*run).clone();
    launched.status = Some(status.clone());
    let starts: Vec<Start> = decisions.starts().cloned().chain(reruns).collect();
    launch_all(&ctx, &launched, starts, now).await;
    if status.is_done() {
        ctx.forget(&uid);
        ctx.release(&key);
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
/// resourceVersion; remembers the answer (see [`Ctx::freshest`]).
async fn write_status(
    ctx: &Ctx,
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
        Ok(stored) => {
            if let Some(uid) = stored.uid() {
                ctx.written().insert(uid, Arc::new(stored));
            }
            Ok(Write::Stored)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Write::Conflict),
        Err(e) => {
            ctx.check_write("a PipelineRun's status", &e);
            Err(e.into())
        }
    }
}

/// The pipeline `name`, from the cache or, on a miss, from the API.
async fn load_pipeline(ctx: &Ctx, ns: &str, name: &str) -> Result<Option<PipelineSpec>> {
    if let Some(p) = ctx.cache.pipelines.get(&ObjectRef::new(name).within(ns)) {
        return Ok(Some(p.spec.clone()));
    }
    let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api.get_opt(name).await?.map(|p| p.spec))
}

/// The Tasks the pipeline refers to, from the cache or, on a miss, from the API; a
/// missing one is left out, and the scheduler fails the run with `CouldntGetTask`. A
/// Task runs as idempotent if it says so or if its executor is.
async fn load_tasks(ctx: &Ctx, ns: &str, pipeline: &PipelineSpec) -> Result<TaskCatalog> {
    let api: Api<Task> = Api::namespaced(ctx.client.clone(), ns);
    let mut catalog = BTreeMap::new();
    for pt in pipeline.tasks.iter().chain(&pipeline.finally) {
        let name = &pt.task_ref.name;
        if catalog.contains_key(name) {
            continue;
        }
        let spec = match ctx.cache.tasks.get(&ObjectRef::new(name).within(ns)) {
            Some(t) => Some(t.spec.clone()),
            None => api.get_opt(name).await?.map(|t| t.spec),
        };
        if let Some(mut spec) = spec {
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

async fn clear_operations(ctx: &Ctx, runs: &Api<PipelineRun>, name: &str) -> Result<()> {
    let patch = json!({"metadata": {"annotations": {
        ANNOTATION_RETRY: null, ANNOTATION_SKIP: null, ANNOTATION_SKIP_REASON: null}}});
    if let Err(e) = runs
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        ctx.check_write("clearing a run's operations", &e);
        return Err(e.into());
    }
    Ok(())
}

/// The TaskRun status that records an attempt's outcome.
fn outcome_status(f: &Finished) -> TaskRunStatus {
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
        start_time: Some(Time(f.started_at)),
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
    if let Some(r) = &f.retried {
        shoal_core::condition::set(
            &mut tr.conditions,
            CONDITION_TRANSIENT_ERRORS,
            "True",
            REASON_TRANSIENT_ERROR,
            &r.message(),
            None,
            f.at,
        );
    }
    tr
}

/// Creates the attempts' TaskRuns ([`WRITE_CONCURRENCY`] at a time) and spawns each
/// executor once its TaskRun exists.
async fn launch_all(ctx: &Arc<Ctx>, run: &PipelineRun, starts: Vec<Start>, now: Timestamp) {
    if starts.is_empty() {
        return;
    }
    let ns = run.namespace().unwrap_or_else(|| "default".into());
    let task_runs: Api<TaskRun> = Api::namespaced(ctx.client.clone(), &ns);
    futures::stream::iter(starts)
        .map(|start| {
            let task_runs = task_runs.clone();
            async move {
                let mut task_run = TaskRun::for_start(run, &start);
                if let Some(id) = &ctx.config.identity {
                    task_run
                        .annotations_mut()
                        .insert(ANNOTATION_LAUNCHED_BY.into(), id.clone());
                }
                match task_runs
                    .create(&PostParams::default(), &task_run)
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {} // a re-run after a restart
                    Err(e) => {
                        ctx.check_write("a TaskRun", &e);
                        tracing::warn!(task_run = %start.task_run, error = %e, "failed to create the TaskRun")
                    }
                }
                launch(ctx, run, start, now);
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .for_each(|()| std::future::ready(()))
        .await;
}

/// Spawns the executor of one attempt whose TaskRun exists.
fn launch(ctx: &Arc<Ctx>, run: &PipelineRun, start: Start, now: Timestamp) {
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

    let cancel = CancellationToken::new();
    {
        let mut slots = ctx.slots();
        // Checked under the lock `stop_all` drains: nothing starts after the stop.
        if ctx.stop.is_cancelled() {
            tracing::info!(task = %start.instance, "not started: the controller is stopping");
            return;
        }
        slots.entry(uid.clone()).or_default().attached.insert(
            start.instance.clone(),
            Attached {
                attempt: start.attempt,
                cancel: cancel.clone(),
            },
        );
    }
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
        task_run: start.task_run.clone(),
        reports: Arc::new(tokio::sync::watch::Sender::new(None)),
    };
    let reports = exec_ctx.reports.subscribe();
    let executor = ctx.executors.get(&start.executor).cloned();
    let ctx = ctx.clone();
    let span = tracing::info_span!("executor", run = %run_name, task = %start.instance,
        attempt = start.attempt, executor = %start.executor);
    let retried = Arc::new(Mutex::new(None::<Retried>));
    tokio::spawn(
        async move {
            let work = async {
                match &executor {
                    Some(e) => {
                        let idempotent = e.idempotent() || start.idempotent;
                        run_retrying(&ctx, e.as_ref(), exec_ctx, idempotent, &retried).await
                    }
                    None => Err(ExecError::Unknown(start.executor.clone())),
                }
            };
            let result = tokio::select! {
                _ = cancel.cancelled() => {
                    tracing::info!("stopped");
                    return;
                }
                r = with_status_reports(&ctx, &ns, &start.task_run, started_at, reports, work) => r,
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
                    started_at,
                    at: ctx.clock.now(),
                    retried: retried.lock().unwrap_or_else(|p| p.into_inner()).take(),
                });
            }
            let target = ObjectRef::<PipelineRun>::new(&run_name).within(&ns);
            let _ = ctx.trigger.send(target).await;
        }
        .instrument(span),
    );
}

/// Runs one attempt of `executor`; while it fails transiently and is `idempotent`, runs
/// it again with backoff for up to the retry budget, in real time, noting each retry in
/// `retried`, on the TaskRun (condition `Succeeded=Unknown`, reason
/// [`REASON_TRANSIENT_ERROR`]; an Event at the first) and in the metrics. A panic fails
/// the attempt instead of leaving it running forever.
///
/// Real time, not the shared clock: the budget is about shoal and the member answering,
/// which a faster virtual clock does not speed up.
async fn run_retrying(
    ctx: &Ctx,
    executor: &dyn crate::executor::Executor,
    exec: ExecContext,
    idempotent: bool,
    retried: &Mutex<Option<Retried>>,
) -> std::result::Result<crate::executor::Outcome, ExecError> {
    let began = std::time::Instant::now();
    let budget = ctx
        .config
        .transient_retry_budget
        .unwrap_or(TRANSIENT_RETRY_BUDGET);
    let mut backoff = TRANSIENT_BACKOFF_MIN;
    let mut count = 0u32;
    let labels = vec![("executor".to_string(), executor.name().to_string())];
    loop {
        let result = AssertUnwindSafe(executor.run(exec.clone()))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(ExecError::Failed(format!(
                    "executor {} panicked",
                    executor.name()
                )))
            });
        let err = match result {
            Ok(out) => return Ok(out),
            Err(e) if !idempotent || !e.is_transient() => return Err(e),
            Err(e) => e,
        };
        let last = err.report();
        if began.elapsed() >= budget {
            if let Some(m) = &ctx.config.metrics {
                m.transient_give_ups.get_or_create(&labels).inc();
            }
            return Err(ExecError::Failed(format!(
                "gave up after {count} retr{} over {:.0?} of transient failures (the retry \
                 budget is {budget:?}); the last: {last}",
                if count == 1 { "y" } else { "ies" },
                began.elapsed(),
            )));
        }
        count += 1;
        *retried.lock().unwrap_or_else(|p| p.into_inner()) = Some(Retried {
            count,
            last: last.clone(),
            over: began.elapsed(),
        });
        if let Some(m) = &ctx.config.metrics {
            m.transient_retries.get_or_create(&labels).inc();
        }
        tracing::info!(retry = count, error = %last, "transient failure; running the attempt again");
        note_transient(
            ctx,
            &exec,
            count,
            &last,
            budget.saturating_sub(began.elapsed()),
        )
        .await;
        // Jitter (up to a quarter) so that many clusters hit by one outage do not all
        // come back in the same instant.
        let jitter = backoff.mul_f64(f64::from(count.wrapping_mul(2_654_435_761) % 256) / 1024.0);
        tokio::select! {
            () = tokio::time::sleep(backoff + jitter) => {}
            () = exec.cancel.cancelled() => return Err(ExecError::Failed("cancelled".into())),
        }
        backoff = (backoff * 2).min(TRANSIENT_BACKOFF_MAX);
    }
}

/// Tells people an attempt is waiting to run again after a transient failure: the
/// TaskRun's `Succeeded=Unknown` condition (reason [`REASON_TRANSIENT_ERROR`]) and, at
/// the first retry, a Warning Event on the TaskRun. Best effort.
async fn note_transient(ctx: &Ctx, exec: &ExecContext, count: u32, last: &str, left: Duration) {
    let mut status = TaskRunStatus::default();
    let message = format!(
        "transient failure {count}, running the attempt again (for up to {:.0?} more): {last}",
        left
    );
    set_succeeded(
        &mut status.conditions,
        "Unknown",
        REASON_TRANSIENT_ERROR,
        &message,
        None,
        ctx.clock.now(),
    );
    let api: Api<TaskRun> = Api::namespaced(ctx.client.clone(), &exec.namespace);
    let body = json!({"status": {"conditions": status.conditions}});
    if let Err(e) = api
        .patch_status(
            &exec.task_run,
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await
    {
        ctx.check_write("a TaskRun's transient-failure note", &e);
    }
    if count == 1 {
        let event = transient_event(exec, &message, ctx.clock.now());
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(ctx.client.clone(), &exec.namespace);
        if let Err(e) = events.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, "failed to record the transient-failure Event");
        }
    }
}

/// The Warning Event about an attempt's first transient failure, on its TaskRun.
fn transient_event(
    exec: &ExecContext,
    message: &str,
    now: Timestamp,
) -> k8s_openapi::api::core::v1::Event {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.transient", exec.task_run)),
            namespace: Some(exec.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("shoal.io/v1alpha1".into()),
            kind: Some("TaskRun".into()),
            name: Some(exec.task_run.clone()),
            namespace: Some(exec.namespace.clone()),
            ..ObjectReference::default()
        },
        type_: Some("Warning".into()),
        reason: Some(REASON_TRANSIENT_ERROR.into()),
        message: Some(message.into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(EventSource {
            component: Some("shoal-taskflow".into()),
            host: None,
        }),
        reporting_component: Some("shoal-taskflow".into()),
        ..Event::default()
    }
}

/// Runs `work`; if it is still running after [`RUNNING_MARK_AFTER`], writes the
/// TaskRun's `Running` status with the latest of `reports` (what the attempt is doing),
/// then the latest report after each change while it runs, no sooner than
/// [`PROGRESS_EVERY`] after the write before (best effort). Reports made in between are
/// folded into the next write: one write per stage a person could see, not one per
/// call.
async fn with_status_reports<T>(
    ctx: &Ctx,
    ns: &str,
    task_run: &str,
    started_at: Timestamp,
    reports: tokio::sync::watch::Receiver<Option<Progress>>,
    work: impl std::future::Future<Output = T>,
) -> T {
    let running = || {
        let mut running = TaskRunStatus {
            state: Some(TaskState::Running),
            start_time: Some(Time(started_at)),
            ..TaskRunStatus::default()
        };
        set_succeeded(
            &mut running.conditions,
            "Unknown",
            RunReason::Running.as_str(),
            "",
            None,
            ctx.clock.now(),
        );
        running
    };
    let api: Api<TaskRun> = Api::namespaced(ctx.client.clone(), ns);
    report_while(
        &api,
        task_run,
        CADENCE,
        running,
        reports,
        work,
        |what, e| {
            ctx.check_write(what, e);
        },
    )
    .await
}

/// The writes of [`with_status_reports`] to `task_run` through `api`: `running()` with
/// the latest report after `cadence.mark_after`, then each change of `reports`, at most
/// one per `cadence.every`; `failed` hears of a write that failed.
async fn report_while<T>(
    api: &Api<TaskRun>,
    task_run: &str,
    cadence: Cadence,
    running: impl FnOnce() -> TaskRunStatus,
    mut reports: tokio::sync::watch::Receiver<Option<Progress>>,
    work: impl std::future::Future<Output = T>,
    failed: impl Fn(&str, &kube::Error),
) -> T {
    futures::pin_mut!(work);
    tokio::select! {
        r = &mut work => return r,
        _ = tokio::time::sleep(cadence.mark_after) => {}
    }
    let mut mark = running();
    mark.progress = reports.borrow_and_update().clone();
    let params = PatchParams::default();
    let (mut body, mut what) = (json!({ "status": mark }), "a TaskRun's Running mark");
    loop {
        // The attempt goes on while the write is made; its outcome waits for the write,
        // so that the TaskRun never goes back from its outcome to `Running` or to a
        // stage it is over with.
        let written = {
            let patch = Patch::Merge(&body);
            let write = api.patch_status(task_run, &params, &patch);
            futures::pin_mut!(write);
            tokio::select! {
                r = &mut work => {
                    if let Err(e) = write.await {
                        failed(what, &e);
                    }
                    return r;
                }
                w = &mut write => w,
            }
        };
        if let Err(e) = written {
            failed(what, &e);
        }
        let next = tokio::time::Instant::now() + cadence.every;
        let news = async {
            let changed = reports.changed().await;
            tokio::time::sleep_until(next).await;
            changed
        };
        tokio::select! {
            r = &mut work => return r,
            changed = news => {
                if changed.is_err() {
                    // Nobody reports any more: only the outcome is left.
                    return work.await;
                }
            }
        }
        body = json!({"status": {"progress": reports.borrow_and_update().clone()}});
        what = "a TaskRun's progress";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_run(uid: &str, rv: &str) -> PipelineRun {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "PipelineRun",
            "metadata": {"name": "r", "namespace": "default", "uid": uid, "resourceVersion": rv},
            "spec": {"pipelineRef": {"name": "p"}}}))
        .expect("a valid run")
    }

    #[test]
    fn our_own_write_is_used_only_while_the_cache_lags_behind_it() {
        let ours = mk_run("u", "12");
        assert!(ours_is_newer(&ours, &mk_run("u", "10")), "the cache lags");
        assert!(
            !ours_is_newer(&ours, &mk_run("u", "12")),
            "the cache caught up"
        );
        assert!(
            !ours_is_newer(&ours, &mk_run("u", "15")),
            "someone wrote since"
        );
        assert!(
            !ours_is_newer(&mk_run("u", "x"), &mk_run("u", "10")),
            "not a revision"
        );
    }

    #[test]
    fn only_a_412_is_a_fenced_write() {
        let api = |code| {
            kube::Error::Api(
                kube::core::Status::failure("x", "Fenced")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert!(is_fenced(&api(412)));
        assert!(!is_fenced(&api(409)));
        assert!(!is_fenced(&api(403)));
    }

    /// A stand-in API server that answers every PATCH with a TaskRun and hands the
    /// patches it got to the test, in order.
    async fn recording_server() -> (
        Api<TaskRun>,
        mpsc::UnboundedReceiver<(std::time::Instant, serde_json::Value)>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let got = serde_json::from_slice(&body).unwrap_or_default();
                let _ = tx.send((std::time::Instant::now(), got));
                axum::Json(json!({"apiVersion": "shoal.io/v1alpha1", "kind": "TaskRun",
                    "metadata": {"name": "tr", "namespace": "ns"},
                    "spec": {"attempt": 1, "taskRef": {"name": "t"}, "executor": "noop"}}))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        (Api::namespaced(client, "ns"), rx)
    }

    /// The production cadence, shortened so the tests take a second, not ten.
    const QUICK: Cadence = Cadence {
        mark_after: Duration::from_millis(300),
        every: Duration::from_millis(500),
    };

    fn stage(stage: &str) -> Option<Progress> {
        Some(Progress {
            stage: stage.into(),
            message: String::new(),
            until: None,
        })
    }

    #[tokio::test]
    async fn reports_before_the_running_mark_ride_with_it_and_each_later_change_is_one_write() {
        let (api, mut patches) = recording_server().await;
        let reports = tokio::sync::watch::Sender::new(None);
        let (go_on, carry_on) = tokio::sync::oneshot::channel::<()>();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let work = {
            let reports = reports.clone();
            async move {
                reports.send_replace(stage("applying"));
                reports.send_replace(stage("settling"));
                carry_on.await.unwrap();
                reports.send_replace(stage("baking"));
                finished.await.unwrap();
                "done"
            }
        };
        let running = || TaskRunStatus {
            state: Some(TaskState::Running),
            ..TaskRunStatus::default()
        };
        let failures = std::sync::atomic::AtomicU32::new(0);
        let reporter = report_while(
            &api,
            "tr",
            QUICK,
            running,
            reports.subscribe(),
            work,
            |_, _| {
                failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            },
        );
        let test = async {
            let (marked, mark) = patches.recv().await.unwrap();
            assert_eq!(mark["status"]["state"], "Running", "{mark}");
            assert_eq!(
                mark["status"]["progress"]["stage"], "settling",
                "the latest report: {mark}"
            );
            go_on.send(()).unwrap();
            let (at, next) = patches.recv().await.unwrap();
            assert!(at - marked >= QUICK.every, "{:?} apart", at - marked);
            assert_eq!(next, json!({"status": {"progress": {"stage": "baking"}}}));
            finish.send(()).unwrap();
        };
        let (out, ()) = tokio::join!(reporter, test);
        assert_eq!(out, "done");
        assert_eq!(failures.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(patches.try_recv().is_err(), "no write after the work ended");
    }

    #[tokio::test]
    async fn a_quick_attempt_writes_no_mark_and_no_progress() {
        let (api, mut patches) = recording_server().await;
        let reports = tokio::sync::watch::Sender::new(None);
        let work = {
            let reports = reports.clone();
            async move {
                reports.send_replace(stage("applying"));
                reports.send_replace(stage("settling"));
                7
            }
        };
        let out = report_while(
            &api,
            "tr",
            CADENCE,
            TaskRunStatus::default,
            reports.subscribe(),
            work,
            |w, e| panic!("{w}: {e}"),
        )
        .await;
        assert_eq!(out, 7);
        assert!(
            patches.try_recv().is_err(),
            "a quick attempt costs no status write"
        );
    }
}
