//! OpenKruise's `apps.kruise.io/v1alpha1` workload kinds that shoal's simulated member
//! clusters serve: the Advanced `DaemonSet` and `BroadcastJob`.
//!
//! ```text
//!  AdvancedDaemonSet (kind DaemonSet)          BroadcastJob
//!   spec.selector, template                     spec.template (restartPolicy Never|OnFailure)
//!   spec.updateStrategy                         spec.parallelism        (int or %)
//!     type: RollingUpdate | OnDelete            spec.completionPolicy   {type Always|Never,
//!     rollingUpdate:                                activeDeadlineSeconds, ttlSecondsAfterFinished}
//!       rollingUpdateType: Standard|Surging|…   spec.failurePolicy      {type Continue|FailFast|Pause,
//!       partition   (pods kept at old rev)          restartLimit}
//!       paused, maxUnavailable, maxSurge        spec.paused
//!       selector    (nodes allowed to update)   status: active/succeeded/failed/desired/phase
//!   status: desired/current/updated/ready/…     (templates are schemaless, as in Kruise)
//! ```
//!
//! Field names and JSON shapes follow Kruise's Go types (`apis/apps/v1alpha1`), so
//! manifests written for a real Kruise install apply unchanged; the printer columns are
//! Kruise's. The key decision: these are member-cluster kinds, not shoal's own, so they are
//! *not* part of [`super::crds`] (which lists `shoal.io` kinds); the simulator registers
//! them in each simulated cluster's registry. [`IntOrPercent`] is the one parser of
//! Kubernetes' int-or-percent fields (maxUnavailable, maxSurge, parallelism), shared with
//! the simulator's rollout logic so validation and behaviour cannot disagree.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Validate;
use crate::selector;
use crate::validation::{FieldError, FieldErrorKind};

/// The API group of the OpenKruise kinds.
pub const KRUISE_GROUP: &str = "apps.kruise.io";

/// A Kubernetes int-or-percent value (`3`, `"25%"`), parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntOrPercent {
    Int(u32),
    Percent(u32),
}

impl IntOrPercent {
    /// Parses a non-negative integer or a `"N%"` string.
    ///
    /// # Errors
    /// A message (without the field name) saying what is wrong with the value.
    pub fn from_k8s(v: &IntOrString) -> Result<Self, String> {
        match v {
            IntOrString::Int(n) => u32::try_from(*n)
                .map(IntOrPercent::Int)
                .map_err(|_| format!("{n}: must be greater than or equal to 0")),
            IntOrString::String(s) => s
                .strip_suffix('%')
                .and_then(|p| p.parse::<u32>().ok())
                .map(IntOrPercent::Percent)
                .ok_or_else(|| {
                    format!("{s:?}: must be an integer or a percentage (e.g. '5' or '10%')")
                }),
        }
    }

    /// The absolute value against `total`, rounding a percentage up or down as
    /// Kubernetes' `GetScaledValueFromIntOrPercent` does.
    pub fn scaled(self, total: u32, round_up: bool) -> u32 {
        match self {
            IntOrPercent::Int(n) => n,
            IntOrPercent::Percent(p) => {
                let prod = u64::from(p) * u64::from(total);
                let v = if round_up {
                    prod.div_ceil(100)
                } else {
                    prod / 100
                };
                u32::try_from(v).unwrap_or(u32::MAX)
            }
        }
    }

    pub fn is_zero(self) -> bool {
        matches!(self, IntOrPercent::Int(0) | IntOrPercent::Percent(0))
    }
}

/// Checks an optional int-or-percent field; `at_most_100` bounds percentages.
fn check_int_or_percent(
    field: &str,
    v: Option<&IntOrString>,
    at_most_100: bool,
    errs: &mut Vec<FieldError>,
) -> Option<IntOrPercent> {
    let parsed = match IntOrPercent::from_k8s(v?) {
        Ok(p) => p,
        Err(e) => {
            errs.push(FieldError::invalid(field, e));
            return None;
        }
    };
    if let (true, IntOrPercent::Percent(p)) = (at_most_100, parsed)
        && p > 100
    {
        errs.push(FieldError::invalid(
            field,
            format!("{p}%: must not be greater than 100%"),
        ));
    }
    Some(parsed)
}

/// Checks that `selector` is valid, non-empty and selects the template's labels.
fn check_selector_matches_template(
    sel: &LabelSelector,
    template_labels: Option<&BTreeMap<String, String>>,
    errs: &mut Vec<FieldError>,
) {
    match selector::LabelSelector::from_k8s(sel) {
        Err(e) => errs.push(FieldError::invalid("spec.selector", e.0)),
        Ok(s) if s.is_empty() => errs.push(FieldError::invalid(
            "spec.selector",
            "empty selector is invalid for daemonset",
        )),
        Ok(s) => {
            let empty = BTreeMap::new();
            if !s.matches(template_labels.unwrap_or(&empty)) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    format!("`selector` ({s}) does not match template `labels`"),
                ));
            }
        }
    }
}

fn non_negative(field: &str, v: Option<i64>, errs: &mut Vec<FieldError>) {
    if let Some(v) = v
        && v < 0
    {
        errs.push(FieldError::invalid(
            field,
            format!("{v}: must be greater than or equal to 0"),
        ));
    }
}

// ---------------------------------------------------------------------------------------
// Advanced DaemonSet

/// OpenKruise's Advanced DaemonSet: a DaemonSet whose rolling update can keep a
/// `partition` of nodes at the old revision, update only nodes matching a `selector`,
/// surge, and pause.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "DaemonSet",
    root = "AdvancedDaemonSet",
    plural = "daemonsets",
    shortname = "daemon",
    shortname = "ads",
    namespaced,
    status = "AdvancedDaemonSetStatus",
    printcolumn = r#"{"name":"DESIRED","type":"integer","description":"The desired number of pods.","jsonPath":".status.desiredNumberScheduled"}"#,
    printcolumn = r#"{"name":"CURRENT","type":"integer","description":"The current number of pods.","jsonPath":".status.currentNumberScheduled"}"#,
    printcolumn = r#"{"name":"READY","type":"integer","description":"The ready number of pods.","jsonPath":".status.numberReady"}"#,
    printcolumn = r#"{"name":"UP-TO-DATE","type":"integer","description":"The updated number of pods.","jsonPath":".status.updatedNumberScheduled"}"#,
    printcolumn = r#"{"name":"AVAILABLE","type":"integer","description":"The available number of pods.","jsonPath":".status.numberAvailable"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"CONTAINERS","type":"string","priority":1,"jsonPath":".spec.template.spec.containers[*].name"}"#,
    printcolumn = r#"{"name":"IMAGES","type":"string","priority":1,"jsonPath":".spec.template.spec.containers[*].image"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedDaemonSetSpec {
    /// Which pods the daemon set manages; must match the template's labels.
    pub selector: LabelSelector,
    /// The pod created on every eligible node. Schemaless in the CRD, as in Kruise's
    /// (`x-kubernetes-preserve-unknown-fields`): the typed field still rejects bad shapes.
    #[schemars(schema_with = "super::free_form_object")]
    pub template: PodTemplateSpec,
    /// How existing pods are replaced when the template changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<DaemonSetUpdateStrategy>,
    /// Seconds a new pod must be ready to count as available (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Rate limit for creating pods on many nodes at once (Kruise default 250).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_replicas: Option<IntOrString>,
    /// How many old revisions to keep for rollback (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
}

/// `spec.updateStrategy` of an Advanced DaemonSet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetUpdateStrategy {
    /// `RollingUpdate` (default) or `OnDelete`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<DaemonSetUpdateStrategyType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateDaemonSet>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DaemonSetUpdateStrategyType {
    RollingUpdate,
    OnDelete,
}

/// `rollingUpdate.rollingUpdateType`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RollingUpdateType {
    /// Delete an old pod, then create its replacement (the default).
    Standard,
    /// Create the replacement first, delete the old pod once it is available.
    Surging,
    /// Replace images in place when only images changed (simulated as `Standard`).
    InPlaceIfPossible,
}

/// `spec.updateStrategy.rollingUpdate` of an Advanced DaemonSet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdateDaemonSet {
    #[serde(
        default,
        rename = "rollingUpdateType",
        skip_serializing_if = "Option::is_none"
    )]
    pub type_: Option<RollingUpdateType>,
    /// At most this many (or this % of desired, rounded up) pods unavailable during the
    /// update (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Only nodes matching this selector are updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The number of pods that stay at the old revision (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// When true, no pod is updated until it is false again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// At most this many (or this % of desired, rounded up) extra pods during the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
}

/// What the Advanced DaemonSet controller last observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedDaemonSetStatus {
    pub current_number_scheduled: i32,
    pub number_misscheduled: i32,
    pub desired_number_scheduled: i32,
    pub number_ready: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub updated_number_scheduled: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_available: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_unavailable: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<WorkloadCondition>,
    /// The controller-revision-hash of the latest template.
    #[serde(default)]
    pub daemon_set_hash: String,
}

/// A condition of a Kruise workload (`DaemonSetCondition`, `JobCondition`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadCondition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Validate for AdvancedDaemonSet {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &self.spec;
        check_selector_matches_template(
            &spec.selector,
            spec.template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.as_ref()),
            &mut errs,
        );
        if let Some(p) = spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            && p != "Always"
        {
            errs.push(FieldError::new(
                "spec.template.spec.restartPolicy",
                FieldErrorKind::NotSupported,
                format!("{p:?}: supported values: \"Always\""),
            ));
        }
        non_negative(
            "spec.minReadySeconds",
            spec.min_ready_seconds.map(i64::from),
            &mut errs,
        );
        non_negative(
            "spec.revisionHistoryLimit",
            spec.revision_history_limit.map(i64::from),
            &mut errs,
        );
        check_int_or_percent(
            "spec.burstReplicas",
            spec.burst_replicas.as_ref(),
            false,
            &mut errs,
        );
        let Some(ru) = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
        else {
            return errs;
        };
        const RU: &str = "spec.updateStrategy.rollingUpdate";
        non_negative(
            &format!("{RU}.partition"),
            ru.partition.map(i64::from),
            &mut errs,
        );
        let unavailable = check_int_or_percent(
            &format!("{RU}.maxUnavailable"),
            ru.max_unavailable.as_ref(),
            true,
            &mut errs,
        );
        let surge = check_int_or_percent(
            &format!("{RU}.maxSurge"),
            ru.max_surge.as_ref(),
            true,
            &mut errs,
        );
        // Defaults: maxUnavailable 1, maxSurge 0; both 0 would never make progress.
        let unavailable_zero = unavailable.is_some_and(IntOrPercent::is_zero);
        let surge_zero = surge.is_none_or(IntOrPercent::is_zero);
        if unavailable_zero && surge_zero {
            errs.push(FieldError::invalid(
                format!("{RU}.maxUnavailable"),
                "may not be 0 when maxSurge is 0",
            ));
        }
        if let Some(sel) = &ru.selector
            && let Err(e) = selector::LabelSelector::from_k8s(sel)
        {
            errs.push(FieldError::invalid(format!("{RU}.selector"), e.0));
        }
        errs
    }
}

// ---------------------------------------------------------------------------------------
// BroadcastJob

/// OpenKruise's BroadcastJob: one run-to-completion pod on every eligible node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "BroadcastJob",
    plural = "broadcastjobs",
    shortname = "bcj",
    namespaced,
    status = "BroadcastJobStatus",
    printcolumn = r#"{"name":"Desired","type":"integer","description":"The desired number of pods. This is typically equal to the number of nodes satisfied to run pods.","jsonPath":".status.desired"}"#,
    printcolumn = r#"{"name":"Active","type":"integer","description":"The number of actively running pods.","jsonPath":".status.active"}"#,
    printcolumn = r#"{"name":"Succeeded","type":"integer","description":"The number of pods which reached phase Succeeded.","jsonPath":".status.succeeded"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","description":"The number of pods which reached phase Failed.","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastJobSpec {
    /// At most this many (or this % of desired) pods run at once; unset means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<IntOrString>,
    /// The pod run on every node; `restartPolicy` must be `Never` or `OnFailure`.
    /// Schemaless in the CRD, as in Kruise's.
    #[schemars(schema_with = "super::free_form_object")]
    pub template: PodTemplateSpec,
    #[serde(default)]
    pub completion_policy: CompletionPolicy,
    /// Stops creating pods while true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
}

/// When a BroadcastJob is finished.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionPolicy {
    /// `Always` (default): finish when every node's pod finished, on the deadline or on
    /// the restart limit. `Never`: keep running, so new nodes get a pod too.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<CompletionPolicyType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CompletionPolicyType {
    Always,
    Never,
}

/// What a BroadcastJob does when a pod fails.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// `FailFast` (default), `Continue` or `Pause`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<FailurePolicyType>,
    /// Container restarts (summed over pods) before the job fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_limit: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailurePolicyType {
    Continue,
    FailFast,
    Pause,
}

/// The phase of a BroadcastJob, lowercase as Kruise writes it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BroadcastJobPhase {
    Running,
    Paused,
    Completed,
    Failed,
}

/// What the BroadcastJob controller last observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastJobStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<WorkloadCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    pub active: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub desired: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BroadcastJobPhase>,
}

impl Validate for BroadcastJob {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &self.spec;
        match spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
        {
            Some("Never" | "OnFailure") => {}
            other => errs.push(FieldError::new(
                "spec.template.spec.restartPolicy",
                FieldErrorKind::NotSupported,
                format!(
                    "{:?}: supported values: \"Never\", \"OnFailure\"",
                    other.unwrap_or("")
                ),
            )),
        }
        check_int_or_percent(
            "spec.parallelism",
            spec.parallelism.as_ref(),
            false,
            &mut errs,
        );
        if let Some(d) = spec.completion_policy.active_deadline_seconds
            && d <= 0
        {
            errs.push(FieldError::invalid(
                "spec.completionPolicy.activeDeadlineSeconds",
                format!("{d}: must be greater than 0"),
            ));
        }
        non_negative(
            "spec.completionPolicy.ttlSecondsAfterFinished",
            spec.completion_policy
                .ttl_seconds_after_finished
                .map(i64::from),
            &mut errs,
        );
        non_negative(
            "spec.failurePolicy.restartLimit",
            spec.failure_policy
                .as_ref()
                .and_then(|f| f.restart_limit)
                .map(i64::from),
            &mut errs,
        );
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn mk_template(labels: &[(&str, &str)], restart: Option<&str>) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()},
            "spec": {
                "containers": [{"name": "agent", "image": "agent:v1"}],
                "restartPolicy": restart,
            }
        }))
        .unwrap()
    }

    fn mk_ads(rolling_update: serde_json::Value) -> AdvancedDaemonSet {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "kube-system"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": mk_template(&[("app", "agent")], None),
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": rolling_update},
            }
        }))
        .unwrap()
    }

    fn fields(errs: &[FieldError]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn kruise_daemonset_manifest_round_trips_with_kruise_field_names() {
        let ds = mk_ads(serde_json::json!({
            "rollingUpdateType": "Surging", "partition": 3, "paused": true,
            "maxUnavailable": "20%", "maxSurge": 1,
            "selector": {"matchLabels": {"kernel": "5.10"}},
        }));
        assert!(ds.validate().is_empty(), "{:?}", ds.validate());
        let ru = ds
            .spec
            .update_strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref();
        assert_eq!(ru.unwrap().partition, Some(3));
        let v = serde_json::to_value(&ds).unwrap();
        assert_eq!(v["apiVersion"], "apps.kruise.io/v1alpha1");
        assert_eq!(v["kind"], "DaemonSet");
        let ru = &v["spec"]["updateStrategy"]["rollingUpdate"];
        assert_eq!(ru["rollingUpdateType"], "Surging");
        assert_eq!(ru["maxUnavailable"], "20%");
    }

    #[test]
    fn daemonset_rejects_bad_partition_percentages_and_selector_mismatch() {
        let ds = mk_ads(serde_json::json!({
            "partition": -1, "maxUnavailable": "150%", "maxSurge": "x%",
        }));
        assert_eq!(
            fields(&ds.validate()),
            [
                "spec.updateStrategy.rollingUpdate.partition",
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                "spec.updateStrategy.rollingUpdate.maxSurge",
            ]
        );
        let mut ds = mk_ads(serde_json::json!({"maxUnavailable": 0}));
        assert_eq!(
            fields(&ds.validate()),
            ["spec.updateStrategy.rollingUpdate.maxUnavailable"]
        );
        ds.spec.template = mk_template(&[("app", "other")], Some("OnFailure"));
        ds.spec.update_strategy = None;
        assert_eq!(
            fields(&ds.validate()),
            [
                "spec.template.metadata.labels",
                "spec.template.spec.restartPolicy"
            ]
        );
    }

    #[test]
    fn kruise_crds_are_namespaced_with_kruise_printer_columns() {
        let crd = AdvancedDaemonSet::crd();
        assert_eq!(crd.spec.group, KRUISE_GROUP);
        assert_eq!(crd.spec.names.kind, "DaemonSet");
        assert_eq!(crd.spec.names.plural, "daemonsets");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["daemon".to_string(), "ads".to_string()][..])
        );
        let cols = |crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| -> Vec<String> {
            crd.spec.versions[0]
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| c.name.clone())
                .collect()
        };
        assert_eq!(
            cols(&crd),
            [
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "AGE",
                "CONTAINERS",
                "IMAGES"
            ]
        );
        let bcj = BroadcastJob::crd();
        assert_eq!(
            bcj.spec.names.short_names.as_deref(),
            Some(&["bcj".to_string()][..])
        );
        assert_eq!(
            cols(&bcj),
            ["Desired", "Active", "Succeeded", "Failed", "AGE"]
        );
    }

    #[test]
    fn broadcast_job_needs_a_non_always_restart_policy_and_a_positive_deadline() {
        let mut job: BroadcastJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "BroadcastJob",
            "metadata": {"name": "upgrade", "namespace": "default"},
            "spec": {
                "template": mk_template(&[], Some("Never")),
                "parallelism": "50%",
                "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 600},
                "failurePolicy": {"type": "Pause", "restartLimit": 3},
            }
        }))
        .unwrap();
        assert!(job.validate().is_empty(), "{:?}", job.validate());
        job.spec.template = mk_template(&[], Some("Always"));
        job.spec.completion_policy.active_deadline_seconds = Some(0);
        job.spec.parallelism = Some(IntOrString::Int(-2));
        assert_eq!(
            fields(&job.validate()),
            [
                "spec.template.spec.restartPolicy",
                "spec.parallelism",
                "spec.completionPolicy.activeDeadlineSeconds"
            ]
        );
        let status = BroadcastJobStatus {
            phase: Some(BroadcastJobPhase::Completed),
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(status).unwrap()["phase"], "completed");
    }

    #[test]
    fn int_or_percent_scales_like_kubernetes() {
        let p = IntOrPercent::from_k8s(&IntOrString::String("25%".into())).unwrap();
        assert_eq!(p.scaled(10, true), 3);
        assert_eq!(p.scaled(10, false), 2);
        assert_eq!(IntOrPercent::Int(4).scaled(10, true), 4);
        assert!(IntOrPercent::from_k8s(&IntOrString::String("25".into())).is_err());
        assert!(IntOrPercent::from_k8s(&IntOrString::Int(-1)).is_err());
    }
}
