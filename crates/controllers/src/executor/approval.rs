//! `approval`: a human gate. The attempt waits until an
//! [`Approval`](shoal_core::taskflow::Approval) in the run's namespace names this run and
//! task; `Approve` succeeds (results `approvedBy`, `reason`), `Reject` fails the task.
//!
//! Idempotent: waiting again after a restart finds the same Approval object.

use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use shoal_core::taskflow::{self, ApprovalDecision, RunResult};

use super::{ExecContext, ExecError, Executor, Outcome};

/// The approval gate executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Approval;

#[async_trait::async_trait]
impl Executor for Approval {
    fn name(&self) -> &str {
        "approval"
    }

    fn idempotent(&self) -> bool {
        true
    }

    async fn run(&self, ctx: ExecContext) -> Result<Outcome, ExecError> {
        let api: Api<taskflow::Approval> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        // The watch lists first, so an Approval made before the gate opened counts.
        let mut approvals = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(item) = approvals.next().await {
            let a = match item {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "approval watch hiccup; retrying");
                    continue;
                }
            };
            if a.spec.pipeline_run != ctx.run || a.spec.task != ctx.instance.task {
                continue;
            }
            let by = a.spec.approved_by.clone();
            let reason = a.spec.reason.clone().unwrap_or_default();
            return match a.spec.decision {
                ApprovalDecision::Approve => Ok(Outcome {
                    results: vec![
                        RunResult::new("approvedBy", by.clone()),
                        RunResult::new("reason", reason),
                    ],
                    message: Some(format!("approved by {by}")),
                }),
                ApprovalDecision::Reject => Err(ExecError::Failed(format!(
                    "rejected by {by}{}",
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    }
                ))),
            };
        }
        Err(ExecError::Failed("the approval watch ended".into()))
    }
}
