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
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pipeline_run: String,
    /// The pipeline task whose gate this decides.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task: String,
    /// Or: the Release whose wave this opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The wave (1-based, as `kubectl get release` shows it) it opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<u32>,
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
        let s = &self.spec;
        let run = !s.pipeline_run.is_empty() || !s.task.is_empty();
        let release = s.release.is_some() || s.wave.is_some();
        let mut required = Vec::new();
        match (run, release) {
            (true, true) => errs.push(FieldError::invalid(
                "spec.release",
                "an Approval is for a pipeline run's task or for a release's wave, not both",
            )),
            (false, true) => {
                required.push(("spec.release", s.release.as_deref().unwrap_or("")));
                if s.wave.is_none() {
                    errs.push(FieldError::required("spec.wave"));
                }
                if s.wave == Some(0) {
                    errs.push(FieldError::invalid("spec.wave", "0: waves count from 1"));
                }
            }
            _ => {
                required.push(("spec.pipelineRun", &s.pipeline_run));
                required.push(("spec.task", &s.task));
            }
        }
        required.push(("spec.approvedBy", s.approved_by.as_str()));
        for (field, value) in required {
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
                release: None,
                wave: None,
            },
        )
    }

    #[test]
    fn an_approval_opens_a_run_task_or_a_release_wave_never_both() {
        let mut a = mk_approval("", "alice");
        a.spec.task = String::new();
        a.spec.release = Some("agent-v2".into());
        a.spec.wave = Some(3);
        assert!(a.validate().is_empty(), "{:?}", a.validate());
        a.spec.wave = None;
        let fields: Vec<String> = a.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.wave"]);
        a.spec.wave = Some(0);
        let fields: Vec<String> = a.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.wave"]);
        let mut both = mk_approval("r1", "alice");
        both.spec.release = Some("agent-v2".into());
        both.spec.wave = Some(1);
        let fields: Vec<String> = both.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.release"]);
    }

    #[test]
    fn an_approval_must_name_its_run_and_approver() {
        assert!(mk_approval("r1", "alice").validate().is_empty());
        let errs = mk_approval("", " ").validate();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.pipelineRun", "spec.approvedBy"]);
    }
}
