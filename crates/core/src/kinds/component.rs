//! `Component` — a piece of software shoal installs in member clusters (a CNI, a CSI
//! driver, an operator, a node agent) — and `ClusterConfig` — the values one cluster or
//! one group of clusters gives it (the "meta-configuration").
//!
//! ```text
//!  Component (fleet-wide)                 ClusterConfig (per target)
//!   spec.template   minijinja → YAML docs   spec.component     which Component
//!   spec.image      registry/repo           spec.cluster       ┐ exactly one:
//!   spec.version    the tag                 spec.clusterGroup  │ a Cluster, a ClusterGroup,
//!   spec.values     defaults                spec.clusterSelector┘ or a label selector
//!   spec.dependsOn  other Components        spec.priority      order within a level
//!   spec.dangerousFields  never patched     spec.values        deep-merged over defaults
//!   spec.checks     what proves it healthy
//!
//!  values = Component.values < group-level configs < cluster-level configs
//!           (see [`crate::render`] for the exact order and the merge rule)
//! ```
//!
//! The key decision: both kinds are **cluster-scoped**, like `Cluster` and
//! `ClusterGroup`. A component is a fleet-wide thing with one name ("cni" is the same
//! component in every member cluster), `dependsOn` and `ClusterConfig.spec.component` refer
//! to it by bare name with no namespace to get wrong, and the targets a ClusterConfig
//! names (Clusters, ClusterGroups) are cluster-scoped themselves. Namespaces in the
//! control plane would only add a second, meaningless dimension to "which config applies
//! to cluster X"; who may change which component is a question for authorization rules,
//! not for scoping.
//!
//! `ClusterGroup.spec.values` is not read when rendering: it is not per component, and
//! one group's values for two components would collide. Per-component group values are a
//! `ClusterConfig` with `clusterGroup: NAME`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Validate;
use crate::selector;
use crate::validation::{FieldError, dns1123_label, dns1123_subdomain};

/// The longest image tag a registry accepts (the OCI distribution spec's rule).
const TAG_MAX: usize = 128;

/// A component shoal installs and releases across the fleet.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "Component",
    plural = "components",
    shortname = "comp",
    category = "shoal",
    status = "ComponentStatus",
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Versions","type":"string","jsonPath":".status.summary"}"#,
    printcolumn = r#"{"name":"Drifted","type":"integer","jsonPath":".status.drifted"}"#,
    printcolumn = r#"{"name":"Depends-On","type":"string","priority":1,"jsonPath":".spec.dependsOn"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// A minijinja template rendering one or more Kubernetes objects as YAML documents
    /// (separated by `---`). In scope: `image`, `version`, `values`, `cluster.name`,
    /// `cluster.labels` and `component.name`. Printing an undefined variable is an error;
    /// testing one (`{% if values.x %}`) is not.
    pub template: String,
    /// The image without its tag, e.g. `registry.example.com/net/agent`.
    pub image: String,
    /// The version (image tag) a release rolls out, e.g. `1.4.2`.
    pub version: String,
    /// Default values; ClusterConfigs override them per group and per cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::free_form_object")]
    pub values: Option<serde_json::Value>,
    /// Components that must be installed (and healthy) before this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Dotted paths (`spec.template.spec.hostNetwork`) a release must never change on an
    /// existing object, in addition to each kind's own (`spec.selector` of DaemonSets,
    /// Deployments and StatefulSets: see [`builtin_dangerous_fields`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dangerous_fields: Vec<String>,
    /// What proves the component healthy in a cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

/// One health check of a component. Exactly one kind of check is set (today only
/// `workload`), as with a Kubernetes probe's `exec` / `httpGet` / `tcpSocket`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// A name for messages; defaults to the workload's kind and name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The component is healthy when this workload's rollout is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadCheck>,
}

/// A workload whose rollout status proves the component healthy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadCheck {
    /// Default `apps/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `DaemonSet`, `Deployment` or `StatefulSet`.
    pub kind: String,
    /// Default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The workload's name.
    pub name: String,
    /// The share of desired pods that must be updated and available (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_percent: Option<i32>,
}

/// The workload kinds a [`WorkloadCheck`] can read a rollout status from.
pub const CHECKABLE_KINDS: [&str; 3] = ["DaemonSet", "Deployment", "StatefulSet"];

/// What shoal last observed about a component across the fleet: which version runs in
/// how many clusters and on how many nodes, and where the live objects drifted from what
/// shoal applied. Written by the component controller (`shoal-controllers::component`)
/// from [`crate::inventory`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// How many clusters and nodes run each version, most clusters first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionCount>,
    /// The distribution in one line for `kubectl get`: `v2=180 1.4.0=20`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// How many clusters hold a workload that differs from what shoal last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drifted: Option<i64>,
    /// The drifted clusters and their fields (the first [`crate::inventory::DRIFT_LISTED`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<ClusterDrift>,
    /// How many clusters do not have the component's workload at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_installed: Option<i64>,
    /// How many clusters could not be read in the last pass (see the `Observed` condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One line of a component's version distribution.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionCount {
    /// A version (image tag) of the component.
    pub version: String,
    /// How many clusters run it: their workload's pod template names this version.
    pub clusters: i64,
    /// How many of the workload's pods run it, across the fleet (for a DaemonSet, nodes).
    #[serde(default)]
    pub nodes: i64,
}

/// A cluster whose live workload differs from what shoal last applied there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDrift {
    pub cluster: String,
    /// The dotted paths that differ (`spec.template.spec.containers[0].args`).
    pub fields: Vec<String>,
}

/// The dangerous fields every object of `api_version`/`kind` has, whatever the component
/// says: the selector of the workloads whose selector Kubernetes makes immutable (a
/// changed selector would orphan every pod) — apps/v1's and OpenKruise's.
pub fn builtin_dangerous_fields(api_version: &str, kind: &str) -> &'static [&'static str] {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("apps" | "apps.kruise.io", "DaemonSet" | "Deployment" | "StatefulSet") => {
            &["spec.selector"]
        }
        _ => &[],
    }
}

impl Component {
    /// The dangerous fields of one of this component's rendered objects: the kind's own
    /// ([`builtin_dangerous_fields`]) and then the component's, without repeats.
    pub fn dangerous_fields_for(&self, object: &serde_json::Value) -> Vec<String> {
        let s = |p: &str| object.pointer(p).and_then(|v| v.as_str()).unwrap_or("");
        let mut out: Vec<String> = builtin_dangerous_fields(s("/apiVersion"), s("/kind"))
            .iter()
            .map(|p| p.to_string())
            .collect();
        for p in &self.spec.dangerous_fields {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }
}

/// Problems with a dotted field path (`spec.selector`); empty when well-formed.
///
/// Segments are object keys: non-empty, made of letters, digits, `-`, `_` and `/` (so
/// `metadata.labels.app` and `…annotations.example.com/x` cannot be told apart, and
/// list indexes are not supported: the three-way diff replaces lists whole).
pub fn field_path(path: &str) -> Vec<String> {
    if path.is_empty() {
        return vec!["must not be empty".into()];
    }
    let mut errs = Vec::new();
    if path.split('.').any(str::is_empty) {
        errs.push(format!(
            "{path:?}: must be dot-separated field names, with no empty name \
             (no leading, trailing or doubled '.')"
        ));
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/')))
    {
        errs.push(format!(
            "{path:?}: {c:?} is not allowed: field names are letters, digits, '-', '_' or \
             '/' (list indexes are not supported)"
        ));
    }
    errs
}

/// The problem with `tag` as an image tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`), if any.
pub fn image_tag(tag: &str) -> Option<String> {
    let ok = !tag.is_empty()
        && tag.len() <= TAG_MAX
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    (!ok).then(|| {
        format!(
            "{tag:?}: must be an image tag: letters, digits, '_', '.' or '-', starting with \
             a letter, digit or '_', at most {TAG_MAX} characters"
        )
    })
}

/// Whether a minijinja template parses; the error names the line.
///
/// # Errors
/// The syntax error, as "line N: …".
pub fn check_template(template: &str) -> Result<(), String> {
    let env = minijinja::Environment::new();
    env.template_from_str(template)
        .map(|_| ())
        .map_err(|e| template_error(&e))
}

/// One line for a minijinja error: "line N: detail" when it knows the line.
pub(crate) fn template_error(e: &minijinja::Error) -> String {
    let detail = e
        .detail()
        .map_or_else(|| e.kind().to_string(), |d| format!("{}: {d}", e.kind()));
    match e.line() {
        Some(line) => format!("line {line}: {detail}"),
        None => detail,
    }
}

fn name_errors(errs: &mut Vec<FieldError>, field: &str, name: &str) {
    for e in dns1123_subdomain(name) {
        errs.push(FieldError::invalid(field, format!("{name:?}: {e}")));
    }
}

fn values_errors(errs: &mut Vec<FieldError>, values: Option<&serde_json::Value>) {
    if let Some(v) = values
        && !v.is_object()
    {
        errs.push(FieldError::invalid("spec.values", "must be an object"));
    }
}

impl Validate for Component {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &self.spec;
        if spec.template.trim().is_empty() {
            errs.push(FieldError::required("spec.template"));
        } else if let Err(e) = check_template(&spec.template) {
            errs.push(FieldError::invalid("spec.template", e));
        }
        let last = spec.image.rsplit('/').next().unwrap_or("");
        if spec.image.is_empty() {
            errs.push(FieldError::required("spec.image"));
        } else if spec.image.contains(char::is_whitespace) {
            errs.push(FieldError::invalid(
                "spec.image",
                format!("{:?}: must not contain whitespace", spec.image),
            ));
        } else if last.contains([':', '@']) || last.is_empty() {
            errs.push(FieldError::invalid(
                "spec.image",
                format!(
                    "{:?}: must be an image name without tag or digest (the tag goes in \
                     spec.version)",
                    spec.image
                ),
            ));
        }
        if let Some(e) = image_tag(&spec.version) {
            errs.push(FieldError::invalid("spec.version", e));
        }
        values_errors(&mut errs, spec.values.as_ref());
        let me = self.metadata.name.as_deref().unwrap_or("");
        for (i, dep) in spec.depends_on.iter().enumerate() {
            let field = format!("spec.dependsOn[{i}]");
            name_errors(&mut errs, &field, dep);
            if dep == me {
                errs.push(FieldError::invalid(
                    &field,
                    format!("{dep:?}: a component cannot depend on itself"),
                ));
            }
            if spec.depends_on[..i].contains(dep) {
                errs.push(FieldError::invalid(
                    &field,
                    format!("{dep:?}: listed twice"),
                ));
            }
        }
        for (i, p) in spec.dangerous_fields.iter().enumerate() {
            for e in field_path(p) {
                errs.push(FieldError::invalid(format!("spec.dangerousFields[{i}]"), e));
            }
        }
        for (i, c) in spec.checks.iter().enumerate() {
            let at = format!("spec.checks[{i}]");
            let Some(w) = &c.workload else {
                errs.push(FieldError::required(format!("{at}.workload")));
                continue;
            };
            if !CHECKABLE_KINDS.contains(&w.kind.as_str()) {
                errs.push(FieldError::new(
                    format!("{at}.workload.kind"),
                    crate::FieldErrorKind::NotSupported,
                    format!(
                        "{:?}: supported values: {}",
                        w.kind,
                        CHECKABLE_KINDS.join(", ")
                    ),
                ));
            }
            name_errors(&mut errs, &format!("{at}.workload.name"), &w.name);
            if let Some(ns) = &w.namespace {
                for e in dns1123_label(ns) {
                    errs.push(FieldError::invalid(
                        format!("{at}.workload.namespace"),
                        format!("{ns:?}: {e}"),
                    ));
                }
            }
            if let Some(p) = w.min_ready_percent
                && !(0..=100).contains(&p)
            {
                errs.push(FieldError::invalid(
                    format!("{at}.workload.minReadyPercent"),
                    format!("{p}: must be between 0 and 100"),
                ));
            }
        }
        errs
    }
}

/// Values for one component in one cluster or group of clusters.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "ClusterConfig",
    plural = "clusterconfigs",
    shortname = "ccfg",
    category = "shoal",
    printcolumn = r#"{"name":"Component","type":"string","jsonPath":".spec.component"}"#,
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Group","type":"string","jsonPath":".spec.clusterGroup"}"#,
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfigSpec {
    /// The Component these values are for.
    pub component: String,
    /// Target: one Cluster, by name (cluster level: overrides every group-level value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Target: the clusters of one ClusterGroup, by name (group level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_group: Option<String>,
    /// Target: the clusters whose labels match (group level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
    /// Orders configs of the same level that apply to one cluster: higher is merged
    /// later and wins; equal priorities go by name. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Values deep-merged over the component's defaults (a `null` removes a key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::free_form_object")]
    pub values: Option<serde_json::Value>,
}

impl Validate for ClusterConfig {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &self.spec;
        name_errors(&mut errs, "spec.component", &spec.component);
        let targets = [
            spec.cluster.is_some(),
            spec.cluster_group.is_some(),
            spec.cluster_selector.is_some(),
        ];
        match targets.iter().filter(|t| **t).count() {
            0 => errs.push(FieldError::new(
                "spec",
                crate::FieldErrorKind::Required,
                "exactly one target is required: cluster, clusterGroup or clusterSelector",
            )),
            1 => {}
            _ => errs.push(FieldError::invalid(
                "spec",
                "exactly one target may be set: cluster, clusterGroup or clusterSelector",
            )),
        }
        if let Some(c) = &spec.cluster {
            name_errors(&mut errs, "spec.cluster", c);
        }
        if let Some(g) = &spec.cluster_group {
            name_errors(&mut errs, "spec.clusterGroup", g);
        }
        if let Some(s) = &spec.cluster_selector
            && let Err(e) = selector::LabelSelector::from_k8s(s)
        {
            errs.push(FieldError::invalid("spec.clusterSelector", e.0));
        }
        values_errors(&mut errs, spec.values.as_ref());
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::json;

    const TEMPLATE: &str = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\n\
                            spec: {image: \"{{ image }}:{{ version }}\"}\n";

    fn mk_component(name: &str) -> Component {
        Component::new(
            name,
            ComponentSpec {
                template: TEMPLATE.into(),
                image: "registry.example.com:5000/net/agent".into(),
                version: "1.4.2".into(),
                values: Some(json!({"logLevel": "info"})),
                depends_on: vec![],
                dangerous_fields: vec![],
                checks: vec![Check {
                    name: None,
                    workload: Some(WorkloadCheck {
                        api_version: None,
                        kind: "DaemonSet".into(),
                        namespace: Some("kube-system".into()),
                        name: "agent".into(),
                        min_ready_percent: Some(90),
                    }),
                }],
            },
        )
    }

    fn mk_config() -> ClusterConfig {
        ClusterConfig::new(
            "agent-prod",
            ClusterConfigSpec {
                component: "agent".into(),
                cluster: Some("c-1".into()),
                cluster_group: None,
                cluster_selector: None,
                priority: None,
                values: Some(json!({"logLevel": "debug"})),
            },
        )
    }

    fn fields(errs: &[FieldError]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_well_formed_component_is_valid() {
        assert_eq!(mk_component("agent").validate(), vec![]);
    }

    #[test]
    fn a_template_that_does_not_parse_is_refused_with_its_line() {
        let mut c = mk_component("agent");
        c.spec.template = "kind: DaemonSet\nimage: {{ image \n".into();
        let errs = c.validate();
        assert_eq!(fields(&errs), ["spec.template"]);
        assert!(errs[0].detail.contains("line"), "{}", errs[0].detail);
    }

    #[test]
    fn a_component_cannot_depend_on_itself_or_a_bad_name() {
        let mut c = mk_component("agent");
        c.spec.depends_on = vec![
            "cni".into(),
            "agent".into(),
            "Bad_Name".into(),
            "cni".into(),
        ];
        let errs = c.validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.dependsOn[1]",
                "spec.dependsOn[2]",
                "spec.dependsOn[3]"
            ]
        );
        assert!(errs[0].detail.contains("itself"));
        assert!(errs[2].detail.contains("twice"));
    }

    #[test]
    fn the_image_carries_no_tag_and_the_version_is_a_tag() {
        let mut c = mk_component("agent");
        c.spec.image = "registry.example.com:5000/agent:1.0".into();
        c.spec.version = "-bad tag".into();
        assert_eq!(fields(&c.validate()), ["spec.image", "spec.version"]);
        c.spec.image = "agent@sha256:abc".into();
        c.spec.version = "v1.2.3_rc-1".into();
        assert_eq!(fields(&c.validate()), ["spec.image"]);
    }

    #[test]
    fn dangerous_field_paths_must_be_dotted_names() {
        for good in [
            "spec.selector",
            "spec.template.spec.hostNetwork",
            "metadata.x-y_z",
        ] {
            assert!(field_path(good).is_empty(), "{good}");
        }
        for bad in [
            "",
            ".spec",
            "spec.",
            "spec..selector",
            "spec.containers[0]",
            "a b",
        ] {
            assert!(!field_path(bad).is_empty(), "{bad:?}");
        }
        let mut c = mk_component("agent");
        c.spec.dangerous_fields = vec!["spec.selector".into(), "spec..x".into()];
        assert_eq!(fields(&c.validate()), ["spec.dangerousFields[1]"]);
    }

    #[test]
    fn checks_name_a_checkable_workload_and_a_sane_percentage() {
        let mut c = mk_component("agent");
        let w = c.spec.checks[0].workload.as_mut().unwrap();
        w.kind = "Pod".into();
        w.min_ready_percent = Some(101);
        c.spec.checks.push(Check {
            name: Some("empty".into()),
            workload: None,
        });
        assert_eq!(
            fields(&c.validate()),
            [
                "spec.checks[0].workload.kind",
                "spec.checks[0].workload.minReadyPercent",
                "spec.checks[1].workload"
            ]
        );
    }

    #[test]
    fn values_must_be_an_object() {
        let mut c = mk_component("agent");
        c.spec.values = Some(json!([1, 2]));
        assert_eq!(fields(&c.validate()), ["spec.values"]);
        let mut cc = mk_config();
        cc.spec.values = Some(json!("x"));
        assert_eq!(fields(&cc.validate()), ["spec.values"]);
    }

    #[test]
    fn daemonsets_protect_their_selector_whatever_the_component_says() {
        let mut c = mk_component("agent");
        c.spec.dangerous_fields = vec!["spec.template.spec.hostNetwork".into()];
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet"});
        assert_eq!(
            c.dangerous_fields_for(&ds),
            ["spec.selector", "spec.template.spec.hostNetwork"]
        );
        let kruise = json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "DaemonSet"});
        assert_eq!(c.dangerous_fields_for(&kruise)[0], "spec.selector");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert_eq!(
            c.dangerous_fields_for(&cm),
            ["spec.template.spec.hostNetwork"]
        );
    }

    #[test]
    fn a_cluster_config_has_exactly_one_target() {
        assert_eq!(mk_config().validate(), vec![]);
        let mut none = mk_config();
        none.spec.cluster = None;
        let errs = none.validate();
        assert_eq!(fields(&errs), ["spec"]);
        assert!(errs[0].detail.contains("exactly one"));
        let mut two = mk_config();
        two.spec.cluster_group = Some("prod".into());
        assert_eq!(fields(&two.validate()), ["spec"]);
        let mut sel = mk_config();
        sel.spec.cluster = None;
        sel.spec.cluster_selector = Some(LabelSelector {
            match_labels: Some([("env".to_string(), "prod".to_string())].into()),
            match_expressions: None,
        });
        assert_eq!(sel.validate(), vec![]);
    }

    #[test]
    fn a_cluster_config_names_are_checked() {
        let mut c = mk_config();
        c.spec.component = "Agent".into();
        c.spec.cluster = Some("c_1".into());
        assert_eq!(fields(&c.validate()), ["spec.component", "spec.cluster"]);
    }

    #[test]
    fn both_kinds_are_cluster_scoped_with_their_columns() {
        for (crd, cols) in [
            (
                Component::crd(),
                vec![
                    "Image",
                    "Version",
                    "Versions",
                    "Drifted",
                    "Depends-On",
                    "Age",
                ],
            ),
            (
                ClusterConfig::crd(),
                vec!["Component", "Cluster", "Group", "Priority", "Age"],
            ),
        ] {
            assert_eq!(crd.spec.scope, "Cluster");
            let got: Vec<String> = crd.spec.versions[0]
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| c.name.clone())
                .collect();
            assert_eq!(got, cols);
        }
    }
}
