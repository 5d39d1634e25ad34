//! `Approval`: a human's decision on an approval gate. The `approval` executor of a
//! pipeline task waits until an Approval in the run's namespace names its run and task;
//! the Approval is the audit record of who decided, what, and why.
//!
//! ```text
//!  PipelineRun r1 ── task "gate" (executor: approval) ── waits ──┐
//!  kubectl apply Approval {pipelineRun: r1, task: gate, approvedBy: alice, decision: Approve}
//!                                                                 └─► gate Succeeded
//! ```

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::kinds::Validate;
use crate::validation::FieldError;

/// A decision on the approval gate `task` of the run `pipelineRun`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "Approval",
    plural = "approvals",
    namespaced,
    category = "shoal",
    printcolumn = r#"{"name":"Run","type":"string","jsonPath":".spec.pipelineRun"}"#,
    printcolumn = r#"{"name":"Task","type":"string","jsonPath":".spec.task"}"#,
    printcolumn = r#"{"name":"Decision","type":"string","jsonPath":".spec.decision"}"#,
    printcolumn = r#"{"name":"By","type":"string","jsonPath":".spec.approvedBy"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// The PipelineRun (in the same namespace).
    pub pipeline_run: String,
    /// The pipeline task whose gate this decides.
    pub task: String,
    /// Who decided.
    pub approved_by: String,
    pub decision: ApprovalDecision,
    /// Why, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Let the run go on, or fail the gate.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ApprovalDecision {
    Approve,
    Reject,
}

impl Validate for Approval {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        for (field, value) in [
            ("spec.pipelineRun", &self.spec.pipeline_run),
            ("spec.task", &self.spec.task),
            ("spec.approvedBy", &self.spec.approved_by),
        ] {
            if value.trim().is_empty() {
                errs.push(FieldError::required(field));
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_approval(run: &str, by: &str) -> Approval {
        Approval::new(
            "a1",
            ApprovalSpec {
                pipeline_run: run.into(),
                task: "gate".into(),
                approved_by: by.into(),
                decision: ApprovalDecision::Approve,
                reason: None,
            },
        )
    }

    #[test]
    fn an_approval_must_name_its_run_and_approver() {
        assert!(mk_approval("r1", "alice").validate().is_empty());
        let errs = mk_approval("", " ").validate();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.pipelineRun", "spec.approvedBy"]);
    }
}
