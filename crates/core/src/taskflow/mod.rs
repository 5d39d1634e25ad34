//! taskflow: shoal's task/pipeline engine — the kinds, their admission rules and the
//! scheduler, all pure. The controller that drives runs, the executors and the CLI live
//! in higher layers and call into this module.
//!
//! The vocabulary is Tekton's, so SREs recognise it; the steps are executors inside
//! shoal (wait, approval, webhook, apply-manifests…), not containers.
//!
//! ```text
//!  Task ◄──taskRef── Pipeline ◄──pipelineRef── PipelineRun ──owns──► TaskRun (one per attempt)
//!  executor,          tasks[] (DAG: runAfter,   params, timeouts,
//!  params, results,   when, params, matrix)     status/paused ─► status.tasks[] (per instance)
//!  timeout, retries   finally[], results[]                     status.conditions[Succeeded]
//! ```
//!
//! # The life of a task instance
//!
//! Each pipeline task (each matrix combination of it) has one entry in the run's status,
//! whose [`TaskState`] moves like this:
//!
//! ```text
//!   Pending ──► Running ──► Succeeded
//!      │         │ │ └────► Interrupted ──(by hand)──┐
//!      │         │ └──────► Cancelled                 │
//!      │         ▼                                    ▼
//!      ├──────► Failed ──(attempts left)──────────► Retrying ──(backoff)──► Running
//!      │
//!      └──────► Skipped
//!
//!   from         when                                                   to
//!   ───────────  ─────────────────────────────────────────────────────  ───────────
//!   Pending      dependencies done, guards hold, a slot is free         Running
//!   Pending      guard false; a parent failed or was skipped; the run   Skipped
//!                stops, is cancelled or times out; by hand
//!   Pending      parameters do not resolve; the Task does not exist     Failed
//!   Running      the executor reports success                           Succeeded
//!   Running      the executor reports failure; the attempt times out    Failed
//!   Running      the run is cancelled or a run-level timeout elapses    Cancelled
//!   Running      a restart finds it and the executor is not idempotent  Interrupted
//!   Failed       attempts left (automatically), or by hand              Retrying
//!   Failed       by hand                                                Skipped
//!   Retrying     the backoff elapsed and a slot is free                 Running
//!   Retrying     the run is cancelled/stopped · by hand                 Cancelled · Skipped
//!   Interrupted  by hand                                                Retrying · Skipped
//!   Interrupted  the run is cancelled                                   Cancelled
//! ```
//!
//! Terminal: `Succeeded`, `Skipped`, `Cancelled`, and `Failed` once no attempt is left.
//!
//! # The life of a run
//!
//! ```text
//!  Queued (a concurrency limit is full: see queue) ─┐
//!                                                   ▼
//!  PipelineRunPending ─────────────────────────► Running ⇄ Paused / Interrupted
//!                          │  (tasks in dependency order; a failure stops new starts)
//!                          ▼
//!                 every task done ─► finally tasks ─► Succeeded | Completed | Failed
//!  Cancelled ─────────────────────────────────────────► Cancelled (no finally)
//!  CancelledRunFinally / StoppedRunFinally ─► finally ─► Cancelled
//!  timeouts.pipeline ─────────────────────────────────► PipelineRunTimeout
//! ```
//!
//! # The key decision
//!
//! The whole state of a run is its status, and [`scheduler::schedule`] is a pure
//! function of (pipeline, Tasks, run, now). A controller applies the decisions, writes
//! the status with one compare-and-swap, and only then launches executors; after a crash
//! or a leader change the next controller reads the same status and decides the same
//! thing. An attempt that was started but never recorded as finished is the one
//! ambiguity, and [`scheduler::recover`] settles it by the Task's `idempotent` flag.

pub mod approval;
pub mod dag;
pub mod duration;
pub mod params;
pub mod pipeline;
pub mod queue;
pub mod run;
pub mod scheduler;
pub mod substitution;
pub mod task;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod properties;

pub use approval::{Approval, ApprovalDecision, ApprovalSpec};
pub use params::{Param, ParamSpec, ParamType, ParamValue};
pub use pipeline::{
    Matrix, Pipeline, PipelineResult, PipelineSpec, PipelineTask, TaskRef, WhenExpression,
    WhenOperator,
};
pub use run::{
    PipelineRef, PipelineRun, PipelineRunRef, PipelineRunSpec, PipelineRunSpecStatus,
    PipelineRunStatus, PipelineTaskStatus, Progress, RunResult, SkipReason, TaskReason, TaskRun,
    TaskRunSpec, TaskRunStatus, TaskState, TimeoutFields,
};
pub use scheduler::{
    Decision, Decisions, Finish, Input, InstanceId, Outcome, Recovery, RunReason, Start,
    TaskCatalog, record_finish, recover, retry_task, schedule, skip_task,
};
pub use task::{Task, TaskResult, TaskSpec};

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::{Value, json};

    use super::*;
    use crate::schema;

    fn check_against<K: CustomResourceExt>(mut obj: Value) -> schema::Outcome {
        let crd = K::crd();
        let root = crd.spec.versions[0]
            .schema
            .clone()
            .and_then(|s| s.open_api_v3_schema)
            .expect("derived CRDs have a schema");
        schema::check(&mut obj, &root)
    }

    #[test]
    fn every_taskflow_kind_is_served() {
        let kinds: Vec<String> = crate::kinds::crds()
            .into_iter()
            .map(|c| c.spec.names.kind)
            .collect();
        for k in ["Task", "Pipeline", "PipelineRun", "TaskRun", "Approval"] {
            assert!(kinds.iter().any(|n| n == k), "{k} missing from crds()");
        }
    }

    #[test]
    fn full_objects_pass_the_published_schemas_without_pruning() {
        let task = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Task",
            "metadata": {"name": "notify"},
            "spec": {"executor": "webhook", "timeout": "30s", "retries": 2, "retryBackoff": "5s",
                     "idempotent": true,
                     "params": [{"name": "url"}, {"name": "headers", "type": "object", "default": {"a": "b"}},
                                {"name": "targets", "type": "array", "default": ["x"]}],
                     "results": [{"name": "code", "description": "HTTP status"}]}});
        assert_eq!(check_against::<Task>(task), schema::Outcome::default());

        let pipeline = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Pipeline",
            "metadata": {"name": "expand"},
            "spec": {"params": [{"name": "clusters", "type": "array"}],
                     "tasks": [{"name": "expand", "taskRef": {"name": "expand"},
                                "matrix": {"params": [{"name": "cluster", "value": "$(params.clusters[*])"}]},
                                "when": [{"input": "$(params.clusters[0])", "operator": "notin", "values": ["none"]}],
                                "params": [{"name": "count", "value": "3"}, {"name": "labels", "value": {"pool": "a"}}],
                                "timeout": "10m", "retries": 1},
                               {"name": "import", "taskRef": {"name": "import"}, "runAfter": ["expand"]}],
                     "finally": [{"name": "report", "taskRef": {"name": "notify"},
                                  "params": [{"name": "status", "value": "$(tasks.status)"}]}],
                     "results": [{"name": "nodes", "value": ["$(tasks.expand.results.nodes[*])"]}]}});
        assert_eq!(
            check_against::<Pipeline>(pipeline),
            schema::Outcome::default()
        );

        let run = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "PipelineRun",
            "metadata": {"name": "expand-1"},
            "spec": {"pipelineRef": {"name": "expand"}, "params": [{"name": "clusters", "value": ["c1"]}],
                     "timeouts": {"pipeline": "1h", "tasks": "50m"}, "status": "StoppedRunFinally",
                     "paused": true},
            "status": {"conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running",
                                       "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                       "startTime": "2026-01-01T00:00:00Z", "finallyStartTime": "2026-01-01T00:05:00Z",
                       "progress": "1/3", "observedGeneration": 2,
                       "tasks": [{"name": "expand", "matrixIndex": 0, "state": "Succeeded", "attempts": 2,
                                  "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:01:00Z",
                                  "results": [{"name": "nodes", "value": ["n1", "n2"]}], "taskRun": "expand-1-expand-0-2"},
                                 {"name": "import", "state": "Retrying", "attempts": 1, "reason": "TaskRunTimeout",
                                  "retryAfter": "2026-01-01T00:02:00Z", "message": "timed out"},
                                 {"name": "report", "state": "Skipped", "skipReason": "WhenExpressionsSkip"}],
                       "results": [{"name": "nodes", "value": ["n1"]}]}});
        assert_eq!(
            check_against::<PipelineRun>(run),
            schema::Outcome::default()
        );

        let task_run = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "TaskRun",
            "metadata": {"name": "expand-1-expand-0-2"},
            "spec": {"pipelineRunRef": {"name": "expand-1"}, "pipelineTask": "expand", "matrixIndex": 0,
                     "attempt": 2, "taskRef": {"name": "expand"}, "executor": "expand",
                     "params": [{"name": "cluster", "value": "c1"}], "timeout": "10m0s"},
            "status": {"state": "Succeeded", "startTime": "2026-01-01T00:00:00Z",
                       "results": [{"name": "nodes", "value": ["n1", "n2"]}]}});
        assert_eq!(
            check_against::<TaskRun>(task_run),
            schema::Outcome::default()
        );
    }

    #[test]
    fn schema_rejects_unknown_states_and_operations() {
        let run = json!({"spec": {"pipelineRef": {"name": "p"}, "status": "Aborted"},
                         "status": {"tasks": [{"name": "a", "state": "Exploded"}]}});
        let out = check_against::<PipelineRun>(run);
        let fields: Vec<&str> = out.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.status", "status.tasks[0].state"]);
    }
}
