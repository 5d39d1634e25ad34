//! `Task`: one named executor with typed parameters, results, a timeout and a retry
//! policy. A Task is a definition; a [`TaskRun`](super::TaskRun) records one execution.

use jiff::SignedDuration;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration;
use super::params::{self, ParamSpec, ParamType, is_param_name};
use crate::kinds::Validate;
use crate::validation::{self, FieldError};

/// The longest wait between two attempts, however many attempts failed: the backoff
/// doubles per failed attempt, and an hour is as long as an operator would wait for an
/// automatic retry before looking at the task themselves.
pub const MAX_RETRY_BACKOFF: SignedDuration = SignedDuration::from_hours(1);

/// A unit of work: an executor inside shoal (not a container), with its parameters.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "Task",
    plural = "tasks",
    namespaced,
    category = "shoal",
    printcolumn = r#"{"name":"Executor","type":"string","jsonPath":".spec.executor"}"#,
    printcolumn = r#"{"name":"Timeout","type":"string","jsonPath":".spec.timeout"}"#,
    printcolumn = r#"{"name":"Retries","type":"integer","jsonPath":".spec.retries"}"#,
    printcolumn = r#"{"name":"Idempotent","type":"boolean","jsonPath":".spec.idempotent"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    /// The executor that performs the task, e.g. `wait`, `approval`, `webhook`.
    pub executor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The parameters the executor takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamSpec>,
    /// The results the executor produces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<TaskResult>,
    /// How long one attempt may run (a Go duration such as `30s`, `10m`, `1h30m`);
    /// `0s` or none means no limit. A pipeline task may override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// How many times a failed or timed-out attempt is retried (default 0). A pipeline
    /// task may override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The wait before the first retry (a Go duration); it doubles for each further
    /// failed attempt, up to one hour. None means retry at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<String>,
    /// Whether the executor may safely run again when a restart finds an attempt started
    /// but not recorded as finished. When false such an attempt is `Interrupted` and the
    /// run waits for a human to retry or skip it.
    #[serde(default)]
    pub idempotent: bool,
}

/// A result declaration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    pub name: String,
    /// `string` (the default), `array` or `object`.
    #[serde(default, rename = "type", skip_serializing_if = "is_string")]
    pub type_: ParamType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn is_string(t: &ParamType) -> bool {
    *t == ParamType::String
}

impl TaskSpec {
    /// The attempt timeout; `None` for no limit (absent, `0s`, or unparsable — admission
    /// rejects the latter).
    pub fn timeout(&self) -> Option<SignedDuration> {
        parse_timeout(self.timeout.as_deref())
    }

    /// The wait before attempt `failed_attempts + 1`, after `failed_attempts` (≥ 1)
    /// attempts failed: `retryBackoff × 2^(failed_attempts − 1)`, at most
    /// [`MAX_RETRY_BACKOFF`].
    pub fn retry_delay(&self, failed_attempts: u32) -> SignedDuration {
        let base = self
            .retry_backoff
            .as_deref()
            .and_then(|s| duration::parse(s).ok())
            .filter(|d| d.is_positive())
            .unwrap_or(SignedDuration::ZERO);
        let doublings = failed_attempts.saturating_sub(1).min(32);
        let nanos = base.as_nanos().saturating_mul(1i128 << doublings);
        if nanos >= MAX_RETRY_BACKOFF.as_nanos() {
            MAX_RETRY_BACKOFF
        } else {
            SignedDuration::from_nanos(nanos as i64)
        }
    }
}

/// A timeout field's value: `None` for no limit.
pub(crate) fn parse_timeout(s: Option<&str>) -> Option<SignedDuration> {
    s.and_then(|s| duration::parse(s).ok())
        .filter(|d| d.is_positive())
}

/// Checks a duration field at `path`: parsable and not negative.
pub(crate) fn validate_duration(path: &str, value: Option<&str>) -> Option<FieldError> {
    let value = value?;
    match duration::parse(value) {
        Err(e) => Some(FieldError::invalid(path, e.to_string())),
        Ok(d) if d.is_negative() => Some(FieldError::invalid(
            path,
            format!("{value:?}: must not be negative"),
        )),
        Ok(_) => None,
    }
}

impl Validate for Task {
    fn validate(&self) -> Vec<FieldError> {
        let spec = &self.spec;
        let mut errs = Vec::new();
        if spec.executor.is_empty() {
            errs.push(FieldError::required("spec.executor"));
        } else {
            for e in validation::qualified_name(&spec.executor) {
                errs.push(FieldError::invalid(
                    "spec.executor",
                    format!("{:?}: {e}", spec.executor),
                ));
            }
        }
        errs.extend(params::validate_specs("spec.params", &spec.params));
        let mut seen = std::collections::BTreeMap::new();
        for (i, r) in spec.results.iter().enumerate() {
            if !is_param_name(&r.name) {
                errs.push(FieldError::invalid(
                    format!("spec.results[{i}].name"),
                    format!("{:?}: {}", r.name, params::PARAM_NAME_RULE),
                ));
            }
            if let Some(first) = seen.insert(r.name.as_str(), i) {
                errs.push(FieldError::invalid(
                    format!("spec.results[{i}].name"),
                    format!("{:?}: duplicate name (also spec.results[{first}])", r.name),
                ));
            }
        }
        errs.extend(validate_duration("spec.timeout", spec.timeout.as_deref()));
        errs.extend(validate_duration(
            "spec.retryBackoff",
            spec.retry_backoff.as_deref(),
        ));
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn mk_task_spec(executor: &str) -> TaskSpec {
        TaskSpec {
            executor: executor.into(),
            ..crate::taskflow::fixtures::mk_task_spec()
        }
    }

    #[test]
    fn a_minimal_task_is_valid() {
        assert!(Task::new("t", mk_task_spec("noop")).validate().is_empty());
    }

    #[test]
    fn task_errors_name_their_fields() {
        let mut spec = mk_task_spec("Not An Executor");
        spec.timeout = Some("10 minutes".into());
        spec.retry_backoff = Some("-5s".into());
        spec.results = vec![
            TaskResult {
                name: "out".into(),
                type_: ParamType::String,
                description: None,
            },
            TaskResult {
                name: "out".into(),
                type_: ParamType::String,
                description: None,
            },
        ];
        let fields: Vec<String> = Task::new("t", spec)
            .validate()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.executor",
                "spec.results[1].name",
                "spec.timeout",
                "spec.retryBackoff"
            ]
        );
    }

    #[test]
    fn retry_delay_doubles_per_failed_attempt_up_to_an_hour() {
        let mut spec = mk_task_spec("noop");
        assert_eq!(spec.retry_delay(3), SignedDuration::ZERO);
        spec.retry_backoff = Some("10s".into());
        assert_eq!(spec.retry_delay(1), SignedDuration::from_secs(10));
        assert_eq!(spec.retry_delay(2), SignedDuration::from_secs(20));
        assert_eq!(spec.retry_delay(4), SignedDuration::from_secs(80));
        assert_eq!(spec.retry_delay(40), MAX_RETRY_BACKOFF);
        assert_eq!(spec.retry_delay(u32::MAX), MAX_RETRY_BACKOFF);
    }

    #[test]
    fn zero_timeout_means_no_limit() {
        let mut spec = mk_task_spec("noop");
        spec.timeout = Some("0s".into());
        assert_eq!(spec.timeout(), None);
        spec.timeout = Some("1m".into());
        assert_eq!(spec.timeout(), Some(SignedDuration::from_secs(60)));
    }

    #[test]
    fn task_crd_is_namespaced_with_executor_columns() {
        let crd = Task::crd();
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "Task");
        let cols: Vec<String> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(
            cols,
            ["Executor", "Timeout", "Retries", "Idempotent", "Age"]
        );
    }
}
