//! Rendering a [`Component`] for one member cluster, and the order components install in.
//!
//! ```text
//!  Component.values ─┐
//!  ClusterConfigs    ├─ values_for ─▶ merged values ─┐
//!   (those applying) ┘                               │
//!  Component.template, image, version (or --version) ├─ render ─▶ YAML docs ─▶ objects,
//!  Cluster name + labels ───────────────────────────┘            each checked (apiVersion,
//!                                                                 kind, metadata.name)
//!  Component.dependsOn of a set of components ─ order ─▶ install order, or the cycle
//! ```
//!
//! **Which values win.** Layers are merged in this order, each over the previous:
//!
//! 1. the Component's `spec.values` (defaults);
//! 2. group-level ClusterConfigs — `clusterGroup: G` where the ClusterGroup `G`'s selector
//!    matches the cluster, and `clusterSelector` matching the cluster;
//! 3. cluster-level ClusterConfigs — `cluster: NAME`.
//!
//! Within a level, configs go by ascending `priority` (default 0), then by name, so the
//! outcome never depends on the order the API lists them in. A cluster-level value always
//! beats a group-level one, whatever their priorities: priority only orders peers.
//!
//! **How values merge** is a JSON merge patch (RFC 7386, [`crate::diff::merge_patch`]):
//! objects merge key by key, recursively; lists and scalars are replaced whole; a `null`
//! removes the key, so a cluster can unset what its group set.
//!
//! The key decision: everything here is a function of the objects read, with no IO, so
//! what `shoal diff` shows, what a release will apply and what a test asserts are the same
//! computation. Rendering is strict — printing an undefined variable, a document
//! that is not an object or lacks `apiVersion`, `kind` or `metadata.name`, or two
//! documents naming the same object are errors, found before anything is sent.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::diff::merge_patch;
use crate::kinds::component::template_error;
use crate::kinds::{Cluster, ClusterConfig, ClusterGroup, Component};
use crate::selector::LabelSelector;

/// Why a component could not be rendered for a cluster.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A values layer is not an object.
    #[error("{source_name}: spec.values must be an object")]
    Values { source_name: String },
    /// A ClusterGroup or ClusterConfig selector does not parse.
    #[error("{source_name}: invalid selector: {detail}")]
    Selector { source_name: String, detail: String },
    /// The template failed to render (syntax, undefined variable, filter error).
    #[error("failed to render the template: {0}")]
    Template(String),
    /// The rendered text is not YAML.
    #[error("the rendered template is not YAML: {0}")]
    Yaml(String),
    /// A rendered document is not a valid Kubernetes object.
    #[error("rendered document {document}: {field}: {detail}")]
    Object {
        /// 1-based position in the rendered stream (empty documents count).
        document: usize,
        /// The field at fault (`kind`, `metadata.name`, or `` for the document itself).
        field: String,
        detail: String,
    },
    /// The version to render is not an image tag.
    #[error("version {0}")]
    Version(String),
    /// The template rendered no object at all.
    #[error("the template rendered no object")]
    Empty,
}

/// A member cluster as a template sees it (`cluster.name`, `cluster.labels`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl ClusterFacts {
    pub fn new(name: &str, labels: &[(&str, &str)]) -> Self {
        ClusterFacts {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn of(cluster: &Cluster) -> Self {
        ClusterFacts {
            name: cluster.metadata.name.clone().unwrap_or_default(),
            labels: cluster.metadata.labels.clone().unwrap_or_default(),
        }
    }
}

/// The level of a ClusterConfig in the precedence order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `clusterGroup` or `clusterSelector`.
    Group,
    /// `cluster`.
    Cluster,
}

fn config_name(c: &ClusterConfig) -> &str {
    c.metadata.name.as_deref().unwrap_or("")
}

/// The ClusterConfigs of `component` that apply to `cluster`, lowest precedence first,
/// with their level. `groups` are all ClusterGroups (membership is decided here, by their
/// selectors); a config naming a group that is not among them applies to nothing.
///
/// # Errors
/// [`RenderError::Selector`] when a selector that matters does not parse.
pub fn applicable<'a>(
    component: &str,
    cluster: &ClusterFacts,
    groups: &[ClusterGroup],
    configs: &'a [ClusterConfig],
) -> Result<Vec<(Level, &'a ClusterConfig)>, RenderError> {
    let mine = || configs.iter().filter(|c| c.spec.component == component);
    // Only the groups this component's configs name: a malformed group elsewhere must not
    // stop every component from rendering.
    let named: BTreeSet<&str> = mine()
        .filter_map(|c| c.spec.cluster_group.as_deref())
        .collect();
    let mut member_of = BTreeSet::new();
    for g in groups {
        let name = g.metadata.name.clone().unwrap_or_default();
        if !named.contains(name.as_str()) {
            continue;
        }
        let sel = LabelSelector::from_k8s(&g.spec.selector).map_err(|e| RenderError::Selector {
            source_name: format!("ClusterGroup {name:?}"),
            detail: e.0,
        })?;
        if sel.matches(&cluster.labels) {
            member_of.insert(name);
        }
    }
    let mut out = Vec::new();
    for c in mine() {
        let level = if let Some(name) = &c.spec.cluster {
            (*name == cluster.name).then_some(Level::Cluster)
        } else if let Some(g) = &c.spec.cluster_group {
            member_of.contains(g).then_some(Level::Group)
        } else if let Some(s) = &c.spec.cluster_selector {
            let sel = LabelSelector::from_k8s(s).map_err(|e| RenderError::Selector {
                source_name: format!("ClusterConfig {:?}", config_name(c)),
                detail: e.0,
            })?;
            sel.matches(&cluster.labels).then_some(Level::Group)
        } else {
            None
        };
        if let Some(l) = level {
            out.push((l, c));
        }
    }
    out.sort_by(|(la, a), (lb, b)| {
        (la, a.spec.priority.unwrap_or(0), config_name(a)).cmp(&(
            lb,
            b.spec.priority.unwrap_or(0),
            config_name(b),
        ))
    });
    Ok(out)
}

/// The merged values of `component` in `cluster`, and the names of the ClusterConfigs
/// merged, in order (see the module doc for the order and the merge rule).
///
/// # Errors
/// [`RenderError::Values`] when a layer is not an object; [`RenderError::Selector`].
pub fn values_for(
    component: &Component,
    cluster: &ClusterFacts,
    groups: &[ClusterGroup],
    configs: &[ClusterConfig],
) -> Result<(Value, Vec<String>), RenderError> {
    let name = component.metadata.name.as_deref().unwrap_or("");
    let mut values = Value::Object(Map::new());
    let mut layer = |v: Option<&Value>, source_name: String| match v {
        None => Ok(()),
        Some(v) if v.is_object() => {
            merge_patch(&mut values, v);
            Ok(())
        }
        Some(_) => Err(RenderError::Values { source_name }),
    };
    layer(
        component.spec.values.as_ref(),
        format!("Component {name:?}"),
    )?;
    let mut used = Vec::new();
    for (_, c) in applicable(name, cluster, groups, configs)? {
        layer(
            c.spec.values.as_ref(),
            format!("ClusterConfig {:?}", config_name(c)),
        )?;
        used.push(config_name(c).to_string());
    }
    Ok((values, used))
}

/// One component rendered for one cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// The version rendered (the component's, or the override).
    pub version: String,
    /// The merged values the template saw.
    pub values: Value,
    /// The ClusterConfigs merged, lowest precedence first.
    pub configs: Vec<String>,
    /// The objects, in template order; each has apiVersion, kind and metadata.name.
    pub objects: Vec<Value>,
}

/// Renders `component` for `cluster`: merges the values, renders the template with
/// `image`, `version` (`version` overrides the component's), `values`, `cluster` and
/// `component` in scope, and checks every object.
///
/// # Errors
/// Any [`RenderError`]: nothing half-rendered is returned.
pub fn render(
    component: &Component,
    cluster: &ClusterFacts,
    groups: &[ClusterGroup],
    configs: &[ClusterConfig],
    version: Option<&str>,
) -> Result<Rendered, RenderError> {
    let (values, used) = values_for(component, cluster, groups, configs)?;
    let version = version.unwrap_or(&component.spec.version).to_string();
    if let Some(e) = crate::kinds::component::image_tag(&version) {
        return Err(RenderError::Version(e));
    }
    let scope = serde_json::json!({
        "image": component.spec.image,
        "version": version,
        "values": values,
        "cluster": cluster,
        "component": {"name": component.metadata.name.as_deref().unwrap_or("")},
    });
    let objects = render_objects(&component.spec.template, &scope)?;
    Ok(Rendered {
        version,
        values,
        configs: used,
        objects,
    })
}

/// Renders `template` with `scope` and parses and checks the YAML documents it
/// produces. Printing an undefined variable is an error (a typo
/// must not render as an empty string); testing one (`{% if values.x %}`) is allowed.
/// Empty documents are skipped.
///
/// # Errors
/// [`RenderError::Template`], [`RenderError::Yaml`], [`RenderError::Object`],
/// [`RenderError::Empty`].
pub fn render_objects(template: &str, scope: &Value) -> Result<Vec<Value>, RenderError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
    let text = env
        .template_from_str(template)
        .and_then(|t| t.render(scope))
        .map_err(|e| {
            let mut msg = template_error(&e);
            // The line itself says which variable was meant; minijinja's message does not.
            if let Some(text) = e
                .line()
                .and_then(|n| template.lines().nth(n.wrapping_sub(1)))
            {
                msg.push_str(&format!(" (in {:?})", text.trim()));
            }
            RenderError::Template(msg)
        })?;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).map_err(|e| RenderError::Yaml(e.to_string()))?;
    let mut objects = Vec::new();
    let mut seen: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let document = i + 1;
        if doc.is_null() {
            continue;
        }
        let bad = |field: &str, detail: &str| RenderError::Object {
            document,
            field: field.into(),
            detail: detail.into(),
        };
        if !doc.is_object() {
            return Err(bad("", "must be an object (a Kubernetes resource)"));
        }
        let text_field = |pointer: &str, field: &str| match doc.pointer(pointer) {
            None | Some(Value::Null) => Err(bad(field, "Required value")),
            Some(Value::String(s)) if s.is_empty() => Err(bad(field, "Required value")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(bad(field, "must be a string")),
        };
        let api_version = text_field("/apiVersion", "apiVersion")?;
        let kind = text_field("/kind", "kind")?;
        if !doc.get("metadata").is_some_and(Value::is_object) {
            return Err(bad("metadata", "Required value: must be an object"));
        }
        let name = text_field("/metadata/name", "metadata.name")?;
        let namespace = match doc.pointer("/metadata/namespace") {
            None => String::new(),
            Some(_) => text_field("/metadata/namespace", "metadata.namespace")?,
        };
        let group = api_version
            .rsplit_once('/')
            .map_or("", |(g, _)| g)
            .to_string();
        if let Some(first) = seen.insert((group, kind.clone(), namespace, name.clone()), document) {
            return Err(bad(
                "metadata.name",
                &format!("{kind} {name:?} is also rendered by document {first}"),
            ));
        }
        objects.push(doc);
    }
    if objects.is_empty() {
        return Err(RenderError::Empty);
    }
    Ok(objects)
}

/// The checks of `component` naming a workload that is not among `objects` (its rendered
/// objects), as `spec.checks[i]: Kind namespace/name`. Not an error — a component may be
/// proven healthy by a workload another component renders — but usually a typo.
pub fn unrendered_checks(component: &Component, objects: &[Value]) -> Vec<String> {
    let s = |o: &Value, p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let rendered: BTreeSet<(String, String, String, String)> = objects
        .iter()
        .map(|o| {
            let ns = o
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            (
                s(o, "/apiVersion"),
                s(o, "/kind"),
                ns.to_string(),
                s(o, "/metadata/name"),
            )
        })
        .collect();
    let mut out = Vec::new();
    for (i, c) in component.spec.checks.iter().enumerate() {
        let Some(w) = &c.workload else { continue };
        let ns = w.namespace.as_deref().unwrap_or("default");
        let av = w.api_version.as_deref().unwrap_or("apps/v1");
        let key = (
            av.to_string(),
            w.kind.clone(),
            ns.to_string(),
            w.name.clone(),
        );
        if !rendered.contains(&key) {
            out.push(format!(
                "spec.checks[{i}]: {} {ns}/{} ({av})",
                w.kind, w.name
            ));
        }
    }
    out
}

/// `dependsOn` forms a cycle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("dependsOn forms a cycle: {}", .cycle.join(" → "))]
pub struct CycleError {
    /// The components of the cycle in dependency order, the first repeated at the end
    /// (`a → b → a`: a depends on b, b on a).
    pub cycle: Vec<String>,
}

/// The order to install `components` in: every component after all it depends on;
/// components that do not depend on each other go by name. A dependency outside the set
/// is not ordered here (it is taken as already installed).
///
/// # Errors
/// [`CycleError`] naming one cycle.
pub fn order(components: &[Component]) -> Result<Vec<String>, CycleError> {
    let graph: BTreeMap<String, Vec<String>> = components
        .iter()
        .map(|c| {
            (
                c.metadata.name.clone().unwrap_or_default(),
                c.spec.depends_on.clone(),
            )
        })
        .collect();
    order_graph(&graph)
}

/// [`order`] over a plain graph: name → the names it depends on.
///
/// # Errors
/// [`CycleError`] naming one cycle.
pub fn order_graph(deps: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>, CycleError> {
    // Kahn's algorithm; the ready set is ordered, so the result is deterministic.
    let inside = |d: &&String| deps.contains_key(*d);
    let mut pending: BTreeMap<&str, usize> = deps
        .iter()
        .map(|(n, ds)| {
            let unique: BTreeSet<&String> = ds.iter().filter(inside).collect();
            (n.as_str(), unique.len())
        })
        .collect();
    let mut dependents: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (n, ds) in deps {
        for d in ds.iter().filter(inside) {
            dependents.entry(d.as_str()).or_default().insert(n.as_str());
        }
    }
    let mut ready: BTreeSet<&str> = pending
        .iter()
        .filter(|(_, p)| **p == 0)
        .map(|(n, _)| *n)
        .collect();
    let mut out = Vec::with_capacity(deps.len());
    while let Some(n) = ready.pop_first() {
        out.push(n.to_string());
        pending.remove(n);
        for d in dependents.get(n).into_iter().flatten() {
            if let Some(p) = pending.get_mut(d) {
                *p -= 1;
                if *p == 0 {
                    ready.insert(d);
                }
            }
        }
    }
    if pending.is_empty() {
        return Ok(out);
    }
    // Every component left waits on another one left: walking "first dependency still
    // left" from any of them must come back to a component already visited.
    let mut path: Vec<&str> = Vec::new();
    let mut at = *pending.keys().next().expect("not empty");
    loop {
        if let Some(i) = path.iter().position(|p| *p == at) {
            let mut cycle: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
            cycle.push(at.to_string());
            return Err(CycleError { cycle });
        }
        path.push(at);
        at = deps[at]
            .iter()
            .map(String::as_str)
            .find(|d| pending.contains_key(d))
            .expect("a component left waits on another one left");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{ClusterConfigSpec, ClusterGroupSpec, ComponentSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;
    use proptest::prelude::*;
    use serde_json::json;

    const AGENT: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  namespace: kube-system
  labels: {cluster: "{{ cluster.name }}", env: "{{ cluster.labels.env }}"}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - name: agent
        image: "{{ image }}:{{ version }}"
        args: ["--log-level={{ values.logLevel }}"]
{% if values.config %}---
apiVersion: v1
kind: ConfigMap
metadata: {name: agent-config, namespace: kube-system}
data:
  config.json: '{{ values.config | tojson }}'
{% endif %}"#;

    fn mk_component(name: &str, deps: &[&str]) -> Component {
        Component::new(
            name,
            ComponentSpec {
                template: AGENT.into(),
                image: "example.com/agent".into(),
                version: "1.0".into(),
                values: Some(json!({"logLevel": "info", "nested": {"a": 1, "b": 2}})),
                depends_on: deps.iter().map(|d| d.to_string()).collect(),
                dangerous_fields: vec![],
                checks: vec![],
            },
        )
    }

    fn mk_config(name: &str, target: (&str, &str), priority: i32, values: Value) -> ClusterConfig {
        let mut spec = ClusterConfigSpec {
            component: "agent".into(),
            cluster: None,
            cluster_group: None,
            cluster_selector: None,
            priority: (priority != 0).then_some(priority),
            values: Some(values),
        };
        match target {
            ("cluster", n) => spec.cluster = Some(n.into()),
            ("group", g) => spec.cluster_group = Some(g.into()),
            ("env", e) => {
                spec.cluster_selector = Some(K8sSelector {
                    match_labels: Some([("env".to_string(), e.to_string())].into()),
                    match_expressions: None,
                })
            }
            other => panic!("unknown target {other:?}"),
        }
        ClusterConfig::new(name, spec)
    }

    fn mk_group(name: &str, env: &str) -> ClusterGroup {
        ClusterGroup::new(
            name,
            ClusterGroupSpec {
                selector: K8sSelector {
                    match_labels: Some([("env".to_string(), env.to_string())].into()),
                    match_expressions: None,
                },
                values: None,
            },
        )
    }

    fn prod_1() -> ClusterFacts {
        ClusterFacts::new("prod-1", &[("env", "prod")])
    }

    #[test]
    fn cluster_values_beat_group_values_which_beat_defaults() {
        let configs = [
            mk_config("c", ("cluster", "prod-1"), 0, json!({"logLevel": "debug"})),
            // A higher priority does not lift a group config over a cluster one.
            mk_config(
                "g",
                ("group", "prod"),
                100,
                json!({"logLevel": "warn", "nested": {"b": 3}}),
            ),
            mk_config(
                "other",
                ("cluster", "prod-2"),
                0,
                json!({"logLevel": "error"}),
            ),
        ];
        let (values, used) = values_for(
            &mk_component("agent", &[]),
            &prod_1(),
            &[mk_group("prod", "prod")],
            &configs,
        )
        .unwrap();
        assert_eq!(
            values,
            json!({"logLevel": "debug", "nested": {"a": 1, "b": 3}})
        );
        assert_eq!(used, ["g", "c"]);
    }

    #[test]
    fn a_null_value_removes_what_a_lower_layer_set() {
        let configs = [mk_config(
            "c",
            ("cluster", "prod-1"),
            0,
            json!({"nested": {"a": null}}),
        )];
        let (values, _) =
            values_for(&mk_component("agent", &[]), &prod_1(), &[], &configs).unwrap();
        assert_eq!(values, json!({"logLevel": "info", "nested": {"b": 2}}));
    }

    #[test]
    fn selector_configs_apply_only_to_matching_clusters_and_groups_only_to_members() {
        let configs = [
            mk_config("sel", ("env", "prod"), 0, json!({"logLevel": "warn"})),
            mk_config(
                "staging",
                ("group", "staging"),
                1,
                json!({"logLevel": "trace"}),
            ),
        ];
        let groups = [mk_group("staging", "staging")];
        let c = mk_component("agent", &[]);
        let (v, used) = values_for(&c, &prod_1(), &groups, &configs).unwrap();
        assert_eq!(
            (v["logLevel"].as_str(), used),
            (Some("warn"), vec!["sel".into()])
        );
        let staging = ClusterFacts::new("s-1", &[("env", "staging")]);
        let (v, used) = values_for(&c, &staging, &groups, &configs).unwrap();
        assert_eq!(
            (v["logLevel"].as_str(), used),
            (Some("trace"), vec!["staging".into()])
        );
    }

    #[test]
    fn a_malformed_group_no_config_names_does_not_stop_rendering() {
        let mut bad = mk_group("broken", "x");
        bad.spec.selector.match_expressions = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: "env".into(),
                operator: "Like".into(),
                values: None,
            },
        ]);
        let c = mk_component("agent", &[]);
        assert!(values_for(&c, &prod_1(), std::slice::from_ref(&bad), &[]).is_ok());
        let configs = [mk_config("g", ("group", "broken"), 0, json!({}))];
        let err = values_for(&c, &prod_1(), &[bad], &configs).unwrap_err();
        assert!(matches!(err, RenderError::Selector { .. }), "{err}");
    }

    #[test]
    fn rendering_fills_in_image_version_values_and_cluster() {
        let configs = [mk_config(
            "c",
            ("cluster", "prod-1"),
            0,
            json!({"config": {"mtu": 1450}}),
        )];
        let r = render(
            &mk_component("agent", &[]),
            &prod_1(),
            &[],
            &configs,
            Some("1.1"),
        )
        .unwrap();
        assert_eq!(r.version, "1.1");
        assert_eq!(r.objects.len(), 2);
        let ds = &r.objects[0];
        assert_eq!(
            ds.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("example.com/agent:1.1"))
        );
        assert_eq!(
            ds.pointer("/spec/template/spec/containers/0/args/0"),
            Some(&json!("--log-level=info"))
        );
        assert_eq!(
            ds.pointer("/metadata/labels/cluster"),
            Some(&json!("prod-1"))
        );
        assert_eq!(ds.pointer("/metadata/labels/env"), Some(&json!("prod")));
        assert_eq!(
            r.objects[1].pointer("/data/config.json"),
            Some(&json!(r#"{"mtu":1450}"#))
        );
        let bad = render(
            &mk_component("agent", &[]),
            &prod_1(),
            &[],
            &[],
            Some("1.1 beta"),
        );
        assert!(matches!(bad, Err(RenderError::Version(_))), "{bad:?}");
        // Without the config the ConfigMap document is empty and skipped.
        let r = render(&mk_component("agent", &[]), &prod_1(), &[], &[], None).unwrap();
        assert_eq!(r.objects.len(), 1);
        assert_eq!(r.version, "1.0");
    }

    #[test]
    fn an_undefined_variable_is_an_error_not_an_empty_string() {
        let scope = json!({"values": {}});
        let err = render_objects("a: 1\nkind: {{ values.missing.deeper }}", &scope).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to render the template: line 2: undefined value \
             (in \"kind: {{ values.missing.deeper }}\")"
        );
    }

    #[test]
    fn a_document_without_a_name_is_refused_naming_the_document_and_field() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n\
                    apiVersion: v1\nkind: ConfigMap\nmetadata: {labels: {}}\n";
        let err = render_objects(text, &json!({})).unwrap_err();
        assert_eq!(
            err,
            RenderError::Object {
                document: 2,
                field: "metadata.name".into(),
                detail: "Required value".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "rendered document 2: metadata.name: Required value"
        );
        for (text, field) in [
            ("kind: ConfigMap\nmetadata: {name: a}", "apiVersion"),
            ("apiVersion: v1\nmetadata: {name: a}", "kind"),
            ("apiVersion: v1\nkind: 3\nmetadata: {name: a}", "kind"),
            ("apiVersion: v1\nkind: ConfigMap", "metadata"),
            ("- a list", ""),
        ] {
            match render_objects(text, &json!({})) {
                Err(RenderError::Object { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn two_documents_naming_one_object_are_refused() {
        let doc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: x}\n";
        let err = render_objects(&format!("{doc}---\n{doc}"), &json!({})).unwrap_err();
        assert!(
            err.to_string().contains("also rendered by document 1"),
            "{err}"
        );
        assert_eq!(
            render_objects("", &json!({})).unwrap_err(),
            RenderError::Empty
        );
        assert!(matches!(
            render_objects("a: [", &json!({})).unwrap_err(),
            RenderError::Yaml(_)
        ));
    }

    #[test]
    fn a_check_on_a_workload_the_template_does_not_render_is_reported() {
        let mut c = mk_component("agent", &[]);
        let check = |ns: &str, name: &str| crate::kinds::Check {
            name: None,
            workload: Some(crate::kinds::WorkloadCheck {
                api_version: None,
                kind: "DaemonSet".into(),
                namespace: Some(ns.into()),
                name: name.into(),
                min_ready_percent: None,
            }),
        };
        c.spec.checks = vec![check("kube-system", "agent"), check("default", "agent")];
        let r = render(&c, &prod_1(), &[], &[], None).unwrap();
        assert_eq!(
            unrendered_checks(&c, &r.objects),
            ["spec.checks[1]: DaemonSet default/agent (apps/v1)"]
        );
    }

    #[test]
    fn components_install_after_their_dependencies() {
        let cs = [
            mk_component("csi", &["cni"]),
            mk_component("agent", &["cni", "csi", "outside"]),
            mk_component("cni", &[]),
            mk_component("dns", &[]),
        ];
        assert_eq!(order(&cs).unwrap(), ["cni", "csi", "agent", "dns"]);
    }

    #[test]
    fn a_dependency_cycle_is_named() {
        let cs = [
            mk_component("a", &["b"]),
            mk_component("b", &["c"]),
            mk_component("c", &["a"]),
            mk_component("d", &[]),
        ];
        let err = order(&cs).unwrap_err();
        assert_eq!(err.cycle, ["a", "b", "c", "a"]);
        assert_eq!(err.to_string(), "dependsOn forms a cycle: a → b → c → a");
        let selfish = [mk_component("a", &["a"])];
        assert_eq!(order(&selfish).unwrap_err().cycle, ["a", "a"]);
    }

    fn graph() -> impl Strategy<Value = BTreeMap<String, Vec<String>>> {
        // Up to 8 nodes named n0…n7, each depending on any of them.
        (1usize..8).prop_flat_map(|n| {
            proptest::collection::vec(proptest::collection::vec(0..n, 0..4), n).prop_map(
                move |edges| {
                    edges
                        .into_iter()
                        .enumerate()
                        .map(|(i, ds)| {
                            (
                                format!("n{i}"),
                                ds.iter().map(|d| format!("n{d}")).collect(),
                            )
                        })
                        .collect()
                },
            )
        })
    }

    proptest! {
        #[test]
        fn order_respects_every_dependency_or_names_a_real_cycle(g in graph()) {
            match order_graph(&g) {
                Ok(order) => {
                    let mut sorted = order.clone();
                    sorted.sort();
                    prop_assert_eq!(sorted, g.keys().cloned().collect::<Vec<_>>());
                    let pos = |n: &str| order.iter().position(|o| o == n).unwrap();
                    for (n, ds) in &g {
                        for d in ds {
                            prop_assert!(pos(d) < pos(n), "{} before {} in {:?}", d, n, order);
                        }
                    }
                }
                Err(CycleError { cycle }) => {
                    prop_assert!(cycle.len() >= 2);
                    prop_assert_eq!(cycle.first(), cycle.last());
                    for w in cycle.windows(2) {
                        prop_assert!(g[&w[0]].contains(&w[1]), "{} does not depend on {}", w[0], w[1]);
                    }
                }
            }
        }

        #[test]
        fn acyclic_graphs_always_order(n in 1usize..8, edges in proptest::collection::vec((0usize..8, 0usize..8), 0..16)) {
            // Only edges from a higher to a lower index: no cycle possible.
            let mut g: BTreeMap<String, Vec<String>> = (0..n).map(|i| (format!("n{i}"), vec![])).collect();
            for (a, b) in edges {
                let (a, b) = (a % n, b % n);
                if a > b {
                    g.get_mut(&format!("n{a}")).unwrap().push(format!("n{b}"));
                }
            }
            prop_assert!(order_graph(&g).is_ok());
        }

        #[test]
        fn the_last_layer_that_mentions_a_key_decides_it(
            layers in proptest::collection::vec(
                (0u8..3, -2i32..3, proptest::collection::btree_map("[abc]", proptest::option::of(0i64..5), 0..3)),
                0..6,
            )
        ) {
            // Level 0: cluster; 1: group (by name); 2: selector. Every target matches.
            let configs: Vec<ClusterConfig> = layers.iter().enumerate().map(|(i, (kind, prio, vals))| {
                let target = match kind { 0 => ("cluster", "prod-1"), 1 => ("group", "prod"), _ => ("env", "prod") };
                let values: Map<String, Value> = vals.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                mk_config(&format!("cfg-{i}"), target, *prio, Value::Object(values))
            }).collect();
            let mut component = mk_component("agent", &[]);
            component.spec.values = Some(json!({"a": 100, "b": 100, "c": 100}));
            let (values, used) = values_for(&component, &prod_1(), &[mk_group("prod", "prod")], &configs).unwrap();
            prop_assert_eq!(used.len(), configs.len());
            // The order the API lists configs in does not matter.
            let reversed: Vec<ClusterConfig> = configs.iter().rev().cloned().collect();
            let again = values_for(&component, &prod_1(), &[mk_group("prod", "prod")], &reversed).unwrap();
            prop_assert_eq!(&again, &(values.clone(), used.clone()));
            // The winner of a key: cluster level over group level, then priority, then name.
            let rank = |i: usize| {
                let (kind, prio, _) = &layers[i];
                (*kind == 0, *prio, format!("cfg-{i}"))
            };
            for key in ["a", "b", "c"] {
                let winner = (0..layers.len())
                    .filter(|i| layers[*i].2.contains_key(key))
                    .max_by_key(|i| rank(*i));
                let want = match winner {
                    None => Some(json!(100)),
                    Some(i) => layers[i].2[key].map(|v| json!(v)),
                };
                prop_assert_eq!(values.get(key).cloned(), want, "key {}", key);
            }
        }
    }
}
