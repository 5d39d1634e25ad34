//! shoal's resource kinds (group `shoal.io`, version `v1alpha1`).
//!
//! Each kind is a Rust type with `#[derive(CustomResource)]`: the derive produces the
//! object type (`Cluster` from `ClusterSpec`), its OpenAPI v3 schema and its printer
//! columns, which the API server publishes and checks objects against. Semantic rules the
//! schema cannot express live in [`Validate`] implementations.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::validation::FieldError;

mod cluster;
pub mod component;
mod kruise;
mod release;

pub use crate::taskflow::{Approval, Pipeline, PipelineRun, Task, TaskRun};
pub use cluster::{
    ATTRIBUTE_LABELS, Cluster, ClusterGroup, ClusterGroupSpec, ClusterGroupStatus, ClusterSpec,
    ClusterStatus, CredentialsRef, Endpoint,
};
pub use component::{
    Check, ClusterConfig, ClusterConfigSpec, ClusterDrift, Component, ComponentSpec,
    ComponentStatus, VersionCount, WorkloadCheck,
};
pub use kruise::{
    AdvancedDaemonSet, AdvancedDaemonSetSpec, AdvancedDaemonSetStatus, BroadcastJob,
    BroadcastJobPhase, BroadcastJobSpec, BroadcastJobStatus, CompletionPolicy,
    CompletionPolicyType, DaemonSetUpdateStrategy, DaemonSetUpdateStrategyType, FailurePolicy,
    FailurePolicyType, IntOrPercent, KRUISE_GROUP, RollingUpdateDaemonSet, RollingUpdateType,
    WorkloadCondition,
};
pub use release::{
    ClusterCounts, ClusterFailure, ComponentVersion, FailurePolicy as ReleaseFailurePolicy,
    OrderSpec, Release, ReleaseCheck, ReleasePhase, ReleaseSpec, ReleaseStatus, ReleaseStrategy,
    WaveSpecSpec, WaveStatus, WindowSpec, WindowsSpec,
};

/// The API group of every shoal kind.
pub const GROUP: &str = "shoal.io";
/// The version of every shoal kind today.
pub const VERSION: &str = "v1alpha1";

/// Semantic validation beyond what the schema can say.
pub trait Validate {
    /// Every problem found, each naming its field; empty when valid.
    fn validate(&self) -> Vec<FieldError>;
}

/// The definitions of every shoal kind, as Kubernetes CRDs (schema, names, columns).
///
/// Only `shoal.io` kinds: the OpenKruise kinds ([`AdvancedDaemonSet`], [`BroadcastJob`])
/// belong to member clusters and are registered by the simulator.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Cluster::crd(),
        ClusterGroup::crd(),
        Component::crd(),
        ClusterConfig::crd(),
        Task::crd(),
        Pipeline::crd(),
        PipelineRun::crd(),
        TaskRun::crd(),
        Approval::crd(),
        Release::crd(),
    ]
}

/// A schema for free-form JSON objects (`x-kubernetes-preserve-unknown-fields`).
pub(crate) fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
