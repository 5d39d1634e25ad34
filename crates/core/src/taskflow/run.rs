//! `PipelineRun` — one execution of a pipeline, with the state of every task in its
//! status — and `TaskRun` — the record of one attempt of one task.
//!
//! The run's status is the single source of truth the scheduler reads and writes: the
//! state of each task instance, its attempts, times, results and messages, and the
//! run's `Succeeded` condition. Because one object holds all of it, each scheduling step
//! is one compare-and-swap write, and a restarted controller resumes from it alone.
//! TaskRuns are the history (one per attempt) and what executors are handed.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::params::{self, Param, ParamValue};
use super::pipeline::{PipelineSpec, TaskRef};
use super::task::validate_duration;
use crate::kinds::Validate;
use crate::validation::{self, FieldError};

/// The condition type every run reports, as in Tekton (`kubectl wait
/// --for=condition=Succeeded pipelinerun/NAME`).
pub const CONDITION_SUCCEEDED: &str = "Succeeded";
/// Label on a TaskRun naming the PipelineRun it belongs to.
pub const LABEL_PIPELINE_RUN: &str = "shoal.io/pipelineRun";
/// Label on a TaskRun naming its pipeline task.
pub const LABEL_PIPELINE_TASK: &str = "shoal.io/pipelineTask";

/// One execution of a pipeline.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "PipelineRun",
    plural = "pipelineruns",
    shortname = "pr",
    namespaced,
    category = "shoal",
    status = "PipelineRunStatus",
    printcolumn = r#"{"name":"Succeeded","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].reason"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"StartTime","type":"date","jsonPath":".status.startTime"}"#,
    printcolumn = r#"{"name":"CompletionTime","type":"date","jsonPath":".status.completionTime"}"#,
    printcolumn = r#"{"name":"Pipeline","type":"string","priority":1,"jsonPath":".spec.pipelineRef.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunSpec {
    /// The pipeline to run.
    pub pipeline_ref: PipelineRef,
    /// Values for the pipeline's parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    /// Time limits for the whole run, its tasks and its finally tasks. None by default:
    /// operations (a release waiting for approvals) can legitimately take days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutFields>,
    /// An operation on the run, as in Tekton: hold it before it starts, or cancel it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PipelineRunSpecStatus>,
    /// Paused: running tasks finish and are recorded, but nothing new starts, nothing is
    /// skipped and the run does not complete until it is resumed (set back to false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// A reference to a `Pipeline` in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct PipelineRef {
    pub name: String,
}

/// The time limits of a run (Go durations; `0s` means none).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct TimeoutFields {
    /// The whole run: when it elapses everything still running is cancelled, nothing
    /// else starts (not even finally tasks) and the run fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The `tasks` section, from the run's start: when it elapses running tasks are
    /// cancelled, the rest skipped, and finally tasks run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<String>,
    /// The `finally` section, from its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finally: Option<String>,
}

/// Operations requested through `spec.status` (Tekton's values).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PipelineRunSpecStatus {
    /// Do not start yet; clearing it starts the run.
    PipelineRunPending,
    /// Cancel running tasks, start nothing else, skip finally.
    Cancelled,
    /// Cancel running tasks, start no other task, then run finally tasks.
    CancelledRunFinally,
    /// Let running tasks finish, start no other task, then run finally tasks.
    StoppedRunFinally,
}

/// What the scheduler has done with a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunStatus {
    /// `Succeeded`: `Unknown` while running (reason `Running`, `Paused`, …), then `True`
    /// (`Succeeded`, `Completed`) or `False` (`Failed`, `Cancelled`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// When the finally tasks became eligible to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finally_start_time: Option<Time>,
    /// Finished task instances over all of them, e.g. `3/7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// One entry per task instance, tasks then finally tasks in declaration order; a
    /// matrixed task has one entry until it fans out, then one per combination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<PipelineTaskStatus>,
    /// The pipeline's results, once the run has completed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<RunResult>,
    /// The pipeline spec the run uses, pinned when it starts so that editing the
    /// Pipeline does not change runs in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_spec: Option<PipelineSpec>,
}

/// The state of one task instance of a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineTaskStatus {
    /// The pipeline task's name.
    pub name: String,
    /// Which matrix combination this instance runs (absent when not matrixed, and for
    /// a matrixed task that has not fanned out yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix_index: Option<u32>,
    pub state: TaskState,
    /// Attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// Start of the current (last) attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// End of the last attempt, or when the instance was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// For `Retrying`: the next attempt starts no earlier than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,
    /// Why the last attempt did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<TaskReason>,
    /// Why the instance was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Results of the successful attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<RunResult>,
    /// The TaskRun recording the current (last) attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_run: Option<String>,
}

/// A named result value (of a task instance or of a run).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct RunResult {
    pub name: String,
    pub value: ParamValue,
}

impl RunResult {
    pub fn new(name: impl Into<String>, value: impl Into<ParamValue>) -> Self {
        RunResult {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// The life of one task instance (the taskflow module documentation draws the whole
/// state machine). Each variant says where it can go next.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum TaskState {
    /// Not started. → `Running` when its dependencies are done, its guards hold and a
    /// slot is free; → `Skipped`; → `Failed` when its parameters do not resolve.
    #[default]
    Pending,
    /// An attempt is executing. → `Succeeded` / `Failed` when the executor reports
    /// back; → `Failed` (`TaskRunTimeout`) when it outlives its timeout; → `Cancelled`;
    /// → `Interrupted` when a restart finds it and the executor is not idempotent.
    Running,
    /// The last attempt failed and another will start at `retryAfter`. → `Running`;
    /// → `Cancelled` when the run is cancelled or stopped first; → `Skipped` by hand.
    Retrying,
    /// Terminal: the last attempt succeeded; its results are recorded.
    Succeeded,
    /// The last attempt failed (`reason` says how). → `Retrying` while attempts remain
    /// (automatically) or by a manual retry; → `Skipped` by hand; terminal otherwise.
    Failed,
    /// Terminal: never ran (`skipReason` says why).
    Skipped,
    /// Terminal: stopped by a cancellation or a run-level timeout.
    Cancelled,
    /// Started before a control-plane restart and not recorded as finished, with an
    /// executor that is not idempotent: the run holds until a human retries (→
    /// `Retrying`) or skips (→ `Skipped`) it, or the run is cancelled (→ `Cancelled`).
    Interrupted,
}

impl TaskState {
    /// Succeeded, Failed, Skipped or Cancelled. (A `Failed` instance with attempts left
    /// is moved on to `Retrying` in the same scheduling step.)
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Skipped | TaskState::Cancelled
        )
    }
}

/// Why an attempt did not succeed (`reason` of a task instance).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum TaskReason {
    /// The executor reported a failure. Retried while attempts remain.
    Failed,
    /// The attempt outlived its timeout. Retried while attempts remain.
    TaskRunTimeout,
    /// Parameters, `when` inputs or matrix values could not be resolved or do not fit
    /// the Task. Not retried: the same inputs would fail the same way.
    InvalidParamValue,
    /// The referenced Task does not exist.
    CouldntGetTask,
    /// The run was cancelled (or stopped before a retry).
    Cancelled,
    /// `timeouts.pipeline` elapsed.
    PipelineRunTimeout,
    /// `timeouts.tasks` elapsed.
    TasksTimeout,
    /// `timeouts.finally` elapsed.
    FinallyTimeout,
}

impl TaskReason {
    /// Whether another attempt might succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, TaskReason::Failed | TaskReason::TaskRunTimeout)
    }
}

/// Why a task instance was skipped (Tekton's names where Tekton has one).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SkipReason {
    /// Its own `when` expressions are false. Tasks after it still run, unless they use
    /// its results.
    WhenExpressionsSkip,
    /// A task it depends on failed, was cancelled, or was skipped for a reason that
    /// carries over to the tasks after it.
    ParentTasksSkip,
    /// It uses results of a task that did not produce them (skipped by its own `when`,
    /// or — for finally tasks — failed or skipped).
    MissingResultsSkip,
    /// Another task failed: the run stops starting tasks, as in Tekton.
    StoppingSkip,
    /// The run was cancelled (`Cancelled`).
    CancelledSkip,
    /// The run was cancelled with `CancelledRunFinally`.
    GracefullyCancelledSkip,
    /// The run was stopped with `StoppedRunFinally`.
    GracefullyStoppedSkip,
    /// `timeouts.pipeline` elapsed before it started.
    PipelineTimedOutSkip,
    /// `timeouts.tasks` elapsed before it started.
    TasksTimedOutSkip,
    /// `timeouts.finally` elapsed before it started.
    FinallyTimedOutSkip,
    /// Its matrix resolved to no combination at all. Like a false `when`, this does not
    /// carry over to the tasks after it.
    EmptyArrayInMatrixParams,
    /// An operator skipped it (the message gives their reason). Like a false `when`, this
    /// does not carry over to the tasks after it.
    ManualSkip,
}

impl SkipReason {
    /// Whether tasks that run after this one are skipped too. A task skipped by its own
    /// guard (or by hand, or by an empty matrix) is "done, with nothing to do"; any other
    /// skip means the work before it did not happen.
    pub fn propagates(self) -> bool {
        !matches!(
            self,
            SkipReason::WhenExpressionsSkip
                | SkipReason::EmptyArrayInMatrixParams
                | SkipReason::ManualSkip
        )
    }
}

/// The record of one attempt of one task.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "TaskRun",
    plural = "taskruns",
    shortname = "tr",
    namespaced,
    category = "shoal",
    status = "TaskRunStatus",
    printcolumn = r#"{"name":"Run","type":"string","jsonPath":".spec.pipelineRunRef.name"}"#,
    printcolumn = r#"{"name":"Task","type":"string","jsonPath":".spec.pipelineTask"}"#,
    printcolumn = r#"{"name":"Attempt","type":"integer","jsonPath":".spec.attempt"}"#,
    printcolumn = r#"{"name":"Succeeded","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].reason"}"#,
    printcolumn = r#"{"name":"StartTime","type":"date","jsonPath":".status.startTime"}"#,
    printcolumn = r#"{"name":"Executor","type":"string","priority":1,"jsonPath":".spec.executor"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TaskRunSpec {
    /// The run this attempt belongs to (absent for a stand-alone TaskRun).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_run_ref: Option<PipelineRunRef>,
    /// The pipeline task this attempt executes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix_index: Option<u32>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub task_ref: TaskRef,
    /// The executor, copied from the Task when the attempt started.
    pub executor: String,
    /// Fully resolved parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A reference to a `PipelineRun` in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct PipelineRunRef {
    pub name: String,
}

/// What happened to one attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRunStatus {
    /// `Succeeded`, as on runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<TaskReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<RunResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What a running attempt is doing now, as its executor reports it (cleared when
    /// the attempt ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// What a running attempt is doing now: a stage of its work, a line for people, and
/// when the stage ends if that is known (a bake), on the fleet's clock.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// One word: `applying`, `settling`, `baking`, `checking`, …
    pub stage: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Time>,
}

impl PipelineRunStatus {
    /// The `Succeeded` condition, if set.
    pub fn succeeded(&self) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| c.type_ == CONDITION_SUCCEEDED)
    }

    /// Whether the run has completed (its `Succeeded` condition is `True` or `False`).
    pub fn is_done(&self) -> bool {
        self.succeeded().is_some_and(|c| c.status != "Unknown")
    }
}

/// Sets the `Succeeded` condition in `conditions`; `lastTransitionTime` moves only when
/// the status changes, as Kubernetes conventions ask.
pub fn set_succeeded(
    conditions: &mut Vec<Condition>,
    status: &str,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    crate::condition::set(
        conditions,
        CONDITION_SUCCEEDED,
        status,
        reason,
        message,
        observed_generation,
        now,
    );
}

/// The name of the TaskRun of one attempt: `RUN-TASK[-INDEX]-ATTEMPT`, shortened with a
/// hash when it would exceed the 253 characters of an object name.
pub fn task_run_name(run: &str, task: &str, matrix_index: Option<u32>, attempt: u32) -> String {
    const MAX: usize = 253;
    let name = match matrix_index {
        Some(i) => format!("{run}-{task}-{i}-{attempt}"),
        None => format!("{run}-{task}-{attempt}"),
    };
    if name.len() <= MAX {
        return name;
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let suffix = format!("-{hash:016x}");
    let mut cut = MAX - suffix.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", name[..cut].trim_end_matches(['-', '.']))
}

/// An owner reference making `run` the controller of an object (its TaskRuns).
pub fn owned_by(run: &PipelineRun) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: format!("{}/{}", crate::kinds::GROUP, crate::kinds::VERSION),
        kind: "PipelineRun".into(),
        name: run.metadata.name.clone()?,
        uid: run.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

impl TaskRun {
    /// The TaskRun recording `start` of `run`: named by [`task_run_name`], labelled with
    /// the run and the pipeline task, owned by the run.
    pub fn for_start(run: &PipelineRun, start: &super::scheduler::Start) -> TaskRun {
        let run_name = run.metadata.name.clone().unwrap_or_default();
        // The run's own labels first, as Tekton propagates them, so that the attempts of
        // (say) one release can be selected the way its runs are.
        let mut labels = run.metadata.labels.clone().unwrap_or_default();
        labels.insert(LABEL_PIPELINE_RUN.to_string(), run_name.clone());
        labels.insert(LABEL_PIPELINE_TASK.to_string(), start.instance.task.clone());
        TaskRun {
            metadata: ObjectMeta {
                name: Some(start.task_run.clone()),
                namespace: run.metadata.namespace.clone(),
                labels: Some(labels),
                owner_references: owned_by(run).map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            spec: TaskRunSpec {
                pipeline_run_ref: Some(PipelineRunRef { name: run_name }),
                pipeline_task: Some(start.instance.task.clone()),
                matrix_index: start.instance.matrix_index,
                attempt: start.attempt,
                task_ref: TaskRef {
                    name: start.task_ref.clone(),
                },
                executor: start.executor.clone(),
                params: start.params.clone(),
                timeout: start.timeout.map(super::duration::format),
            },
            status: None,
        }
    }
}

impl Validate for PipelineRun {
    fn validate(&self) -> Vec<FieldError> {
        let spec = &self.spec;
        let mut errs = Vec::new();
        if spec.pipeline_ref.name.is_empty() {
            errs.push(FieldError::required("spec.pipelineRef.name"));
        } else {
            for e in validation::dns1123_subdomain(&spec.pipeline_ref.name) {
                errs.push(FieldError::invalid(
                    "spec.pipelineRef.name",
                    format!("{:?}: {e}", spec.pipeline_ref.name),
                ));
            }
        }
        errs.extend(params::validate_passed("spec.params", &spec.params));
        if let Some(t) = &spec.timeouts {
            let fields = [
                ("spec.timeouts.pipeline", &t.pipeline),
                ("spec.timeouts.tasks", &t.tasks),
                ("spec.timeouts.finally", &t.finally),
            ];
            let mut ok = true;
            for (path, v) in fields {
                if let Some(e) = validate_duration(path, v.as_deref()) {
                    errs.push(e);
                    ok = false;
                }
            }
            let parsed = |v: &Option<String>| super::task::parse_timeout(v.as_deref());
            if ok && let Some(pipeline) = parsed(&t.pipeline) {
                let tasks = parsed(&t.tasks).unwrap_or_default();
                let finally = parsed(&t.finally).unwrap_or_default();
                if tasks + finally > pipeline {
                    errs.push(FieldError::invalid(
                        if t.tasks.is_some() {
                            "spec.timeouts.tasks"
                        } else {
                            "spec.timeouts.finally"
                        },
                        format!(
                            "tasks ({}) + finally ({}) must not exceed pipeline ({})",
                            super::duration::format(tasks),
                            super::duration::format(finally),
                            super::duration::format(pipeline)
                        ),
                    ));
                }
            }
        }
        errs
    }
}

impl Validate for TaskRun {
    fn validate(&self) -> Vec<FieldError> {
        let spec = &self.spec;
        let mut errs = Vec::new();
        if spec.attempt == 0 {
            errs.push(FieldError::invalid(
                "spec.attempt",
                "attempts are numbered from 1",
            ));
        }
        if spec.task_ref.name.is_empty() {
            errs.push(FieldError::required("spec.taskRef.name"));
        }
        if spec.executor.is_empty() {
            errs.push(FieldError::required("spec.executor"));
        }
        if let Some(t) = &spec.pipeline_task {
            for e in validation::dns1123_label(t) {
                errs.push(FieldError::invalid(
                    "spec.pipelineTask",
                    format!("{t:?}: {e}"),
                ));
            }
        }
        errs.extend(params::validate_passed("spec.params", &spec.params));
        errs.extend(validate_duration("spec.timeout", spec.timeout.as_deref()));
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn mk_run(timeouts: Option<TimeoutFields>) -> PipelineRun {
        PipelineRun::new(
            "r",
            PipelineRunSpec {
                pipeline_ref: PipelineRef {
                    name: "deploy".into(),
                },
                params: vec![Param::new("env", "prod")],
                timeouts,
                status: None,
                paused: false,
            },
        )
    }

    fn columns(
        crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ) -> Vec<String> {
        crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect()
    }

    #[test]
    fn pipeline_run_crd_shows_progress_at_a_glance() {
        let crd = PipelineRun::crd();
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["pr".to_string()][..])
        );
        assert!(
            crd.spec.versions[0]
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        assert_eq!(
            columns(&crd),
            [
                "Succeeded",
                "Reason",
                "Progress",
                "StartTime",
                "CompletionTime",
                "Pipeline",
                "Age"
            ]
        );
    }

    #[test]
    fn task_run_crd_has_a_status_subresource() {
        let crd = TaskRun::crd();
        assert_eq!(crd.spec.scope, "Namespaced");
        assert!(crd.spec.versions[0].subresources.is_some());
        assert_eq!(columns(&crd)[..3], ["Run", "Task", "Attempt"]);
    }

    #[test]
    fn a_plain_run_is_valid() {
        assert!(mk_run(None).validate().is_empty());
    }

    #[test]
    fn run_timeouts_must_parse_and_fit_in_the_pipeline_timeout() {
        let errs = mk_run(Some(TimeoutFields {
            pipeline: Some("1h".into()),
            tasks: Some("50m".into()),
            finally: Some("20m".into()),
        }))
        .validate();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.timeouts.tasks");
        let errs = mk_run(Some(TimeoutFields {
            pipeline: Some("forever".into()),
            ..TimeoutFields::default()
        }))
        .validate();
        assert_eq!(errs[0].field, "spec.timeouts.pipeline");
    }

    #[test]
    fn spec_status_uses_tekton_values() {
        let mut run = mk_run(None);
        run.spec.status = Some(PipelineRunSpecStatus::CancelledRunFinally);
        run.spec.paused = true;
        let v = serde_json::to_value(&run.spec).unwrap();
        assert_eq!(v["status"], "CancelledRunFinally");
        assert_eq!(v["paused"], true);
        let back: PipelineRunSpec = serde_json::from_value(v).unwrap();
        assert_eq!(back, run.spec);
    }

    #[test]
    fn only_guard_manual_and_empty_matrix_skips_stay_local() {
        assert!(!SkipReason::WhenExpressionsSkip.propagates());
        assert!(!SkipReason::ManualSkip.propagates());
        assert!(!SkipReason::EmptyArrayInMatrixParams.propagates());
        assert!(SkipReason::ParentTasksSkip.propagates());
        assert!(SkipReason::StoppingSkip.propagates());
        assert!(SkipReason::MissingResultsSkip.propagates());
    }

    #[test]
    fn task_run_names_fit_object_names() {
        assert_eq!(task_run_name("r", "build", None, 1), "r-build-1");
        assert_eq!(task_run_name("r", "build", Some(3), 2), "r-build-3-2");
        let long = "x".repeat(250);
        let n = task_run_name(&long, "build", Some(3), 2);
        assert!(n.len() <= 253, "{}", n.len());
        assert_ne!(n, task_run_name(&long, "build", Some(3), 3));
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        assert!(n.chars().all(ok_char) && !n.ends_with('-'), "{n}");
    }

    #[test]
    fn succeeded_condition_keeps_its_transition_time_while_status_is_unchanged() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let mut conds = Vec::new();
        set_succeeded(&mut conds, "Unknown", "Running", "", None, t0);
        set_succeeded(&mut conds, "Unknown", "Paused", "", None, t1);
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].reason, "Paused");
        assert_eq!(conds[0].last_transition_time, Time(t0));
        set_succeeded(&mut conds, "True", "Succeeded", "", None, t1);
        assert_eq!(conds[0].last_transition_time, Time(t1));
    }

    #[test]
    fn task_runs_need_an_attempt_number() {
        let tr = TaskRun::new(
            "tr",
            TaskRunSpec {
                pipeline_run_ref: None,
                pipeline_task: Some("build".into()),
                matrix_index: None,
                attempt: 0,
                task_ref: TaskRef {
                    name: "noop".into(),
                },
                executor: "noop".into(),
                params: vec![],
                timeout: None,
            },
        );
        let errs = tr.validate();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.attempt");
    }
}
