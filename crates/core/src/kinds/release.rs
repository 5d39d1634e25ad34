//! `Release` — a change of one or more components over a selection of clusters, with
//! its gray-scale strategy and live status.
//!
//! ```text
//!  spec.components[]      name + target version (several = an addon release, dependsOn order)
//!  spec.clusterSelector   which clusters (labels: env, region, tier, …)
//!  spec.strategy
//!    order[]              group clusters by label values in sequence (env test → prod, region…)
//!    waveBoundary         a wave never mixes two values of this label
//!    waves[]              {clusters: N | percent: P, approval}; the last one repeats
//!    clusterConcurrency   clusters changed at once inside a wave
//!    batches[]            in-cluster batches (pods per step: 1, 5, 10% …) through the
//!                         workload's own controls (partition, maxUnavailable)
//!    bake                 silence after each batch and wave (on the shared clock)
//!    windows              allowed / denied change windows, in a time zone
//!    errorBudget          max failed clusters before the failure policy acts
//!    failurePolicy        Pause | Rollback (the failed clusters) | RollbackAll
//!  spec.paused            pause / resume
//! ```
//!
//! Releases are cluster-scoped, like the `Cluster`s they change: a release is a fleet-level
//! operation, not something inside one team's namespace. Only the shape and its admission
//! rules live here; [`crate::plan`] turns a release and
//! the fleet into waves, and the release controller drives them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Validate;
use crate::plan::{self, OrderKey, WaveSize, WaveSpec, Weights};
use crate::selector;
use crate::taskflow::duration;
use crate::validation::{FieldError, dns1123_label};
use crate::window::{Calendar, Window};

/// A gray-scale release of components across the fleet.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "Release",
    plural = "releases",
    shortname = "rel",
    category = "shoal",
    status = "ReleaseStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Wave","type":"string","jsonPath":".status.currentWave"}"#,
    printcolumn = r#"{"name":"Done","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSpec {
    /// The components and the versions they go to.
    pub components: Vec<ComponentVersion>,
    /// The clusters the release covers (all clusters when empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
    #[serde(default)]
    pub strategy: ReleaseStrategy,
    /// Pause (true) or resume (false) the release: no cluster starts, and the clusters
    /// in progress stop after their current step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Stop the release for good: clusters in progress are cancelled where they are and
    /// the release ends `Failed` (reason `Aborted`). What was changed stays changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abort: bool,
    /// Put every cluster the release changed back on the version it had before, then end
    /// `RolledBack`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
}

/// One component and its target version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentVersion {
    pub name: String,
    pub version: String,
}

/// How the release moves through the fleet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStrategy {
    /// Group clusters by these labels, in this sequence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<OrderSpec>,
    /// A wave never mixes two values of this label (usually `env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_boundary: Option<String>,
    /// The waves; the last repeats until every cluster is placed. Default: one cluster,
    /// then 10%, then the rest in 50% waves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveSpecSpec>,
    /// Clusters changed at once inside a wave (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_concurrency: Option<u32>,
    /// In-cluster batches: how many pods (`5`) or what share (`"20%"`) of a workload run
    /// the new version once each step is done, through the workload's partition
    /// (OpenKruise Advanced DaemonSet, StatefulSet). The last step always takes every pod.
    /// Default: one step. Workloads without a partition take a single step, paced by
    /// their own maxUnavailable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    /// Silence after each batch and each wave (`10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<String>,
    /// When changes may happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<WindowsSpec>,
    /// Failed clusters tolerated before the failure policy acts (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_budget: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// How long one in-cluster step may take to become healthy before the cluster fails
    /// (default `30m`, on the shared clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_timeout: Option<String>,
    /// Checks of the team's own, besides the components' workload checks: run before a
    /// cluster's first step and after each step's bake. Any failure fails the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<ReleaseCheck>,
}

/// One release-wide check: exactly one of `webhook` and `metric`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseCheck {
    /// A name for messages (a DNS label).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricCheck>,
}

/// `POST url` with `{release, cluster, component, version, step, steps, phase}`
/// (`phase`: `pre` or `post`); any 2xx passes, anything else fails with the response body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCheck {
    pub url: String,
    /// The call's timeout (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A Prometheus instant query whose value must stay within bounds. The query is a
/// template: `{{ cluster }}`, `{{ release }}`, `{{ component }}` and `{{ version }}` are in
/// scope. The largest sample of the result is compared; no sample fails the check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricCheck {
    /// The Prometheus (or compatible) server, e.g. `http://prometheus:9090`.
    pub prometheus: String,
    pub query: String,
    /// The check fails above this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The check fails below this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

/// One order key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderSpec {
    pub label: String,
    /// The values in sequence; others come after, alphabetically.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// One wave: `clusters` or `percent`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveSpecSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Wait for an `Approval` before the wave starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
}

/// Allowed and denied change windows.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowsSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<WindowSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<WindowSpec>,
}

/// A recurring window: `days: Mon-Fri`, `hours: "09:00-17:00"`, `timeZone: Asia/Shanghai`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowSpec {
    #[serde(default)]
    pub days: String,
    pub hours: String,
    #[serde(default = "utc")]
    pub time_zone: String,
}

fn utc() -> String {
    "UTC".into()
}

/// What happens when more clusters fail than the error budget allows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailurePolicy {
    /// Stop and wait for a human.
    Pause,
    /// Roll the failed clusters back to the previous version, then stop.
    Rollback,
    /// Roll every changed cluster back.
    RollbackAll,
}

/// Where a release is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReleasePhase {
    Pending,
    Planned,
    Progressing,
    Paused,
    WaitingForApproval,
    Succeeded,
    Failed,
    RolledBack,
}

/// The live state of a release.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ReleasePhase>,
    /// `wave/waves` (1-based) of the wave in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_wave: Option<String>,
    /// `clusters done/total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// One line: why the release is where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The plan, fixed when the release starts: the waves in order, each with its
    /// clusters in the order they go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveStatus>,
    /// How many clusters are in each state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<ClusterCounts>,
    /// The clusters that failed, with the check or step that failed and why (the first
    /// 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<ClusterFailure>,
    /// The clusters whose change the release stopped part-way (a rollback or an abort
    /// while they ran), with the step they were in or had last finished (the first 20).
    /// With `failures`, every cluster the change reached and did not finish: the blast
    /// radius an operator reads after an incident.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interrupted: Vec<ClusterFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One planned wave.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveStatus {
    /// The clusters, in the order they go.
    pub clusters: Vec<String>,
    /// The wave waits for an `Approval` (`spec.release`, `spec.wave`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
    /// Why these clusters are here (the order keys and the wave's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Clusters per state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCounts {
    pub total: i64,
    pub waiting: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub rolling_back: i64,
    pub rolled_back: i64,
}

/// A cluster that failed, and where.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterFailure {
    pub cluster: String,
    /// The step that failed (`precheck`, `node-agent-batch-2`, `rollback`).
    pub step: String,
    /// What the check saw.
    pub message: String,
}

impl ReleaseStrategy {
    /// The labels of `order`, in sequence: the keys a wave's clusters are grouped by
    /// (what [`crate::plan::Wave::summary`] names).
    pub fn order_labels(&self) -> Vec<&str> {
        self.order.iter().map(|o| o.label.as_str()).collect()
    }

    /// In-cluster steps per component: one per entry of `batches`, at least one.
    pub fn steps(&self) -> usize {
        self.batches.len().max(1)
    }

    /// The bake after each step and wave (zero when unset).
    ///
    /// # Errors
    /// `bake` is not a duration (admission refuses that; an object stored before the
    /// rule may still have one).
    pub fn bake_duration(&self) -> Result<jiff::SignedDuration, duration::DurationError> {
        self.bake
            .as_deref()
            .map_or(Ok(jiff::SignedDuration::ZERO), duration::parse)
    }

    /// The planning part, with defaults filled in.
    ///
    /// # Errors
    /// Field errors for waves that are neither or both a count and a percentage.
    pub fn plan_strategy(&self) -> Result<plan::Strategy, Vec<FieldError>> {
        let mut errors = Vec::new();
        let waves: Vec<WaveSpec> = if self.waves.is_empty() {
            vec![
                WaveSpec {
                    size: WaveSize::Count(1),
                    approval: false,
                },
                WaveSpec {
                    size: WaveSize::Percent(10),
                    approval: false,
                },
                WaveSpec {
                    size: WaveSize::Percent(50),
                    approval: false,
                },
            ]
        } else {
            self.waves
                .iter()
                .enumerate()
                .filter_map(|(i, w)| {
                    let field = format!("spec.strategy.waves[{i}]");
                    let size = match (w.clusters, w.percent) {
                        (Some(0), None) => {
                            errors.push(FieldError::invalid(
                                format!("{field}.clusters"),
                                "0: must be at least 1",
                            ));
                            return None;
                        }
                        (Some(n), None) => WaveSize::Count(n),
                        (None, Some(p)) if (1..=100).contains(&p) => WaveSize::Percent(p),
                        (None, Some(p)) => {
                            errors.push(FieldError::invalid(
                                format!("{field}.percent"),
                                format!("{p}: must be 1–100"),
                            ));
                            return None;
                        }
                        _ => {
                            errors.push(FieldError::invalid(
                                field,
                                "set exactly one of clusters and percent",
                            ));
                            return None;
                        }
                    };
                    Some(WaveSpec {
                        size,
                        approval: w.approval,
                    })
                })
                .collect()
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(plan::Strategy {
            order: self
                .order
                .iter()
                .map(|o| OrderKey {
                    label: o.label.clone(),
                    values: o.values.clone(),
                })
                .collect(),
            waves,
            wave_boundary: self.wave_boundary.clone(),
            weights: Weights::default(),
        })
    }

    /// The change windows as a calendar.
    ///
    /// # Errors
    /// Field errors naming the window part that does not parse.
    pub fn calendar(&self) -> Result<Calendar, Vec<FieldError>> {
        let mut cal = Calendar::default();
        let mut errors = Vec::new();
        if let Some(w) = &self.windows {
            for (kind, list, out) in [
                ("allow", &w.allow, &mut cal.allow),
                ("deny", &w.deny, &mut cal.deny),
            ] {
                for (i, spec) in list.iter().enumerate() {
                    let field = format!("spec.strategy.windows.{kind}[{i}]");
                    match Window::parse(&field, &spec.days, &spec.hours, &spec.time_zone) {
                        Ok(win) => out.push(win),
                        Err(e) => errors.push(FieldError::invalid(e.field, e.problem)),
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(cal)
        } else {
            Err(errors)
        }
    }
}

impl Validate for Release {
    fn validate(&self) -> Vec<FieldError> {
        let spec = &self.spec;
        let mut errors = Vec::new();
        if spec.components.is_empty() {
            errors.push(FieldError::required("spec.components"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, c) in spec.components.iter().enumerate() {
            for e in dns1123_label(&c.name) {
                errors.push(FieldError::invalid(
                    format!("spec.components[{i}].name"),
                    format!("{:?}: {e}", c.name),
                ));
            }
            if c.version.is_empty() {
                errors.push(FieldError::required(format!(
                    "spec.components[{i}].version"
                )));
            }
            if !seen.insert(&c.name) {
                errors.push(FieldError::invalid(
                    format!("spec.components[{i}].name"),
                    format!("{:?} appears twice", c.name),
                ));
            }
        }
        if let Some(sel) = &spec.cluster_selector
            && let Err(e) = selector::LabelSelector::from_k8s(sel)
        {
            errors.push(FieldError::invalid("spec.clusterSelector", e.0));
        }
        let s = &spec.strategy;
        if let Err(e) = s.plan_strategy() {
            errors.extend(e);
        }
        if let Err(e) = s.calendar() {
            errors.extend(e);
        }
        if s.cluster_concurrency == Some(0) {
            errors.push(FieldError::invalid(
                "spec.strategy.clusterConcurrency",
                "0: must be at least 1",
            ));
        }
        if let Some(b) = &s.bake
            && let Err(e) = duration::parse(b)
        {
            errors.push(FieldError::invalid(
                "spec.strategy.bake",
                format!("{b:?}: {e}"),
            ));
        }
        if let Some(t) = &s.step_timeout
            && let Err(e) = duration::parse(t)
        {
            errors.push(FieldError::invalid(
                "spec.strategy.stepTimeout",
                format!("{t:?}: {e}"),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in s.checks.iter().enumerate() {
            let field = format!("spec.strategy.checks[{i}]");
            for e in dns1123_label(&c.name) {
                errors.push(FieldError::invalid(
                    format!("{field}.name"),
                    format!("{:?}: {e}", c.name),
                ));
            }
            if !names.insert(&c.name) {
                errors.push(FieldError::invalid(
                    format!("{field}.name"),
                    format!("{:?} appears twice", c.name),
                ));
            }
            let url_ok = |u: &str| u.starts_with("http://") || u.starts_with("https://");
            match (&c.webhook, &c.metric) {
                (Some(w), None) => {
                    if !url_ok(&w.url) {
                        errors.push(FieldError::invalid(
                            format!("{field}.webhook.url"),
                            format!("{:?}: must be an http(s) URL", w.url),
                        ));
                    }
                    if let Some(t) = &w.timeout
                        && let Err(e) = duration::parse(t)
                    {
                        errors.push(FieldError::invalid(
                            format!("{field}.webhook.timeout"),
                            format!("{t:?}: {e}"),
                        ));
                    }
                }
                (None, Some(m)) => {
                    if !url_ok(&m.prometheus) {
                        errors.push(FieldError::invalid(
                            format!("{field}.metric.prometheus"),
                            format!("{:?}: must be an http(s) URL", m.prometheus),
                        ));
                    }
                    if m.query.trim().is_empty() {
                        errors.push(FieldError::required(format!("{field}.metric.query")));
                    }
                    if m.max.is_none() && m.min.is_none() {
                        errors.push(FieldError::invalid(
                            format!("{field}.metric"),
                            "set max, min or both",
                        ));
                    }
                }
                _ => errors.push(FieldError::invalid(
                    field,
                    "set exactly one of webhook and metric",
                )),
            }
        }
        if spec.abort && spec.rollback {
            errors.push(FieldError::invalid(
                "spec.rollback",
                "abort and rollback are exclusive: set one",
            ));
        }
        for (i, b) in s.batches.iter().enumerate() {
            if let Err(e) = super::IntOrPercent::from_k8s(b) {
                errors.push(FieldError::invalid(
                    format!("spec.strategy.batches[{i}]"),
                    e,
                ));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(yaml_spec: serde_json::Value) -> Release {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Release",
            "metadata": {"name": "agent-v2"}, "spec": yaml_spec
        }))
        .unwrap()
    }

    #[test]
    fn a_release_with_a_full_strategy_is_valid_and_plans_its_waves() {
        let r = release(serde_json::json!({
            "components": [{"name": "node-agent", "version": "v2"}],
            "clusterSelector": {"matchLabels": {"business": "payments"}},
            "strategy": {
                "order": [{"label": "env", "values": ["test", "staging", "prod"]}],
                "waveBoundary": "env",
                "waves": [{"clusters": 1}, {"percent": 20, "approval": true}],
                "batches": [1, "10%", "100%"],
                "bake": "10m",
                "windows": {"allow": [{"days": "Mon-Fri", "hours": "09:00-17:00", "timeZone": "Asia/Shanghai"}]},
                "errorBudget": 1,
                "failurePolicy": "Rollback"
            }
        }));
        assert!(r.validate().is_empty(), "{:?}", r.validate());
        let s = r.spec.strategy.plan_strategy().unwrap();
        assert_eq!(
            s.waves[1],
            WaveSpec {
                size: WaveSize::Percent(20),
                approval: true
            }
        );
        assert_eq!(r.spec.strategy.calendar().unwrap().allow.len(), 1);
    }

    #[test]
    fn release_checks_are_one_kind_each_with_urls_and_bounds() {
        let r = release(serde_json::json!({
            "components": [{"name": "a", "version": "1"}],
            "strategy": {"checks": [
                {"name": "ok-hook", "webhook": {"url": "http://hooks/x"}},
                {"name": "ok-metric", "metric": {"prometheus": "http://p:9090", "query": "up", "max": 1.0}},
                {"name": "both", "webhook": {"url": "http://h"}, "metric": {"prometheus": "http://p", "query": "up", "max": 1.0}},
                {"name": "ftp", "webhook": {"url": "ftp://h", "timeout": "soon"}},
                {"name": "unbounded", "metric": {"prometheus": "http://p", "query": " "}}
            ]}
        }));
        let fields: Vec<String> = r.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.strategy.checks[2]",
                "spec.strategy.checks[3].webhook.url",
                "spec.strategy.checks[3].webhook.timeout",
                "spec.strategy.checks[4].metric.query",
                "spec.strategy.checks[4].metric",
            ]
        );
    }

    #[test]
    fn bad_strategies_are_refused_field_by_field() {
        let r = release(serde_json::json!({
            "components": [],
            "strategy": {
                "waves": [{"clusters": 1, "percent": 5}, {"percent": 0}],
                "bake": "soon",
                "batches": ["x%"],
                "clusterConcurrency": 0,
                "windows": {"deny": [{"days": "Caturday", "hours": "09:00-10:00"}]}
            }
        }));
        let fields: Vec<String> = r.validate().into_iter().map(|e| e.field).collect();
        for want in [
            "spec.components",
            "spec.strategy.waves[0]",
            "spec.strategy.waves[1].percent",
            "spec.strategy.bake",
            "spec.strategy.batches[0]",
            "spec.strategy.clusterConcurrency",
            "spec.strategy.windows.deny[0].days",
        ] {
            assert!(
                fields.iter().any(|f| f == want),
                "{want} missing from {fields:?}"
            );
        }
    }
}
