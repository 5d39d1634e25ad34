//! `Cluster` — a member Kubernetes cluster — and `ClusterGroup` — a labelled set of
//! clusters that share configuration values.
//!
//! A cluster's attributes (environment, region, zone, network domain, business unit,
//! importance tier) are *labels*, not spec fields: selection, grouping and release
//! ordering all work on labels, with the same selectors kubectl users already write
//! (`kubectl get clusters -l env=prod,tier in (1,2)`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Validate;
use crate::selector;
use crate::validation::FieldError;

/// The label keys that carry a cluster's attributes.
pub const ATTRIBUTE_LABELS: [&str; 6] =
    ["env", "region", "zone", "networkDomain", "business", "tier"];

/// A member cluster that shoal operates.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "Cluster",
    plural = "clusters",
    shortname = "cl",
    category = "shoal",
    status = "ClusterStatus",
    printcolumn = r#"{"name":"Env","type":"string","jsonPath":".metadata.labels.env"}"#,
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".metadata.labels.region"}"#,
    printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".metadata.labels.tier"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Version","type":"string","priority":1,"jsonPath":".status.kubernetesVersion"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","priority":1,"jsonPath":".status.nodeCount"}"#,
    printcolumn = r#"{"name":"Server","type":"string","priority":1,"jsonPath":".spec.endpoint.server"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// How a Kubernetes client reaches the member cluster's API server.
    pub endpoint: Endpoint,
    /// The Secret holding the credentials (a kubeconfig or a bearer token) for the
    /// endpoint. Simulated and unauthenticated clusters have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<CredentialsRef>,
}

/// The address of a member cluster's API server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The URL a Kubernetes client uses to reach the cluster, e.g.
    /// `https://10.0.0.1:6443` or `http://127.0.0.1:7420/clusters/c-0042`.
    pub server: String,
    /// PEM-encoded CA bundle (base64) that signs the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    /// Skip TLS verification (test clusters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
    /// The name the server's certificate is checked against (and asked for by SNI) when
    /// it is not the host of `server`, as a kubeconfig's `tls-server-name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

/// A reference to the Secret with a cluster's credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRef {
    /// Name of the Secret.
    pub name: String,
    /// Namespace of the Secret (default `shoal-system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key in the Secret's data (default `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What shoal last observed about a member cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Standard conditions; `Ready` says whether the cluster's API answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The member cluster's Kubernetes version, as its `/version` reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// Number of nodes last counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_count: Option<i64>,
    /// How many of them were Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<i64>,
    /// The version of each component found installed, by component name (`unknown`
    /// when the workload runs no image of the component); kept by the component
    /// controller. A component missing here is not installed, or was not read yet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, String>,
}

impl Validate for Cluster {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let server = self.spec.endpoint.server.as_str();
        let rest = server
            .strip_prefix("https://")
            .or_else(|| server.strip_prefix("http://"));
        match rest {
            None => errs.push(FieldError::invalid(
                "spec.endpoint.server",
                format!("{server:?}: must be an absolute URL with scheme http or https"),
            )),
            Some(rest) => {
                let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                if host.is_empty() || host.contains(char::is_whitespace) {
                    errs.push(FieldError::invalid(
                        "spec.endpoint.server",
                        format!("{server:?}: must name a host"),
                    ));
                }
            }
        }
        if let Some(c) = &self.spec.credentials_ref {
            for e in crate::validation::dns1123_subdomain(&c.name) {
                errs.push(FieldError::invalid("spec.credentialsRef.name", e));
            }
        }
        errs
    }
}

/// A labelled set of clusters sharing configuration values.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "ClusterGroup",
    plural = "clustergroups",
    shortname = "cg",
    category = "shoal",
    status = "ClusterGroupStatus",
    printcolumn = r#"{"name":"Clusters","type":"integer","jsonPath":".status.matchedClusters"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterGroupSpec {
    /// Which clusters belong to the group, by their labels.
    pub selector: LabelSelector,
    /// Values shared by every cluster of the group (component configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::free_form_object")]
    pub values: Option<serde_json::Value>,
}

/// What shoal last observed about a cluster group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterGroupStatus {
    /// How many clusters the selector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_clusters: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl Validate for ClusterGroup {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Err(e) = selector::LabelSelector::from_k8s(&self.spec.selector) {
            errs.push(FieldError::invalid("spec.selector", e.0));
        }
        if let Some(v) = &self.spec.values
            && !v.is_object()
        {
            errs.push(FieldError::invalid("spec.values", "must be an object"));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn mk_cluster(server: &str) -> Cluster {
        Cluster::new(
            "c-1",
            ClusterSpec {
                endpoint: Endpoint {
                    server: server.into(),
                    certificate_authority_data: None,
                    insecure_skip_tls_verify: None,
                    tls_server_name: None,
                },
                credentials_ref: None,
            },
        )
    }

    #[test]
    fn cluster_endpoint_must_be_an_http_url_with_a_host() {
        assert!(mk_cluster("https://10.0.0.1:6443").validate().is_empty());
        assert!(
            mk_cluster("http://127.0.0.1:7420/clusters/c-1")
                .validate()
                .is_empty()
        );
        for bad in ["10.0.0.1:6443", "ftp://x", "https://", "http:// x"] {
            let errs = mk_cluster(bad).validate();
            assert_eq!(errs.len(), 1, "{bad}");
            assert_eq!(errs[0].field, "spec.endpoint.server");
        }
    }

    #[test]
    fn cluster_crd_is_cluster_scoped_with_attribute_columns() {
        let crd = Cluster::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        let cols: Vec<String> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(
            cols,
            [
                "Env", "Region", "Tier", "Ready", "Version", "Nodes", "Server", "Age"
            ]
        );
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref();
        let spec = &schema.unwrap().properties.as_ref().unwrap()["spec"];
        assert_eq!(
            spec.required.as_deref(),
            Some(&["endpoint".to_string()][..])
        );
    }

    #[test]
    fn cluster_group_rejects_unknown_selector_operators() {
        let mut g = ClusterGroup::new(
            "g",
            ClusterGroupSpec {
                selector: LabelSelector::default(),
                values: None,
            },
        );
        assert!(g.validate().is_empty());
        g.spec.selector.match_expressions = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: "env".into(),
                operator: "Like".into(),
                values: None,
            },
        ]);
        assert_eq!(g.validate()[0].field, "spec.selector");
    }
}
