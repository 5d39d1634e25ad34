//! The registry of kinds the API server serves.
//!
//! ```text
//! Registry
//!  └─ ResourceDef  (group, version, kind, plural, scope, schema, columns, validator)
//!       built from a CRD (shoal's kinds, derived from Rust types) or by hand (Namespace)
//! ```
//!
//! The server is generic: handlers never name a kind. Everything kind-specific — the
//! structural schema objects are checked against, the printer columns of the Table view,
//! semantic validation — hangs off a [`ResourceDef`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, JSONSchemaProps,
};
use serde_json::Value;
use shoal_core::FieldError;
use shoal_core::kinds::Validate;

/// Semantic validation of a whole object (already schema-checked).
pub type Validator = Arc<dyn Fn(&Value) -> Vec<FieldError> + Send + Sync>;

/// Everything the server knows about one resource.
#[derive(Clone)]
pub struct ResourceDef {
    /// API group; empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    /// Has a `status` subresource: the main endpoint ignores status changes.
    pub has_status: bool,
    /// The structural schema of the whole object.
    pub schema: JSONSchemaProps,
    pub columns: Vec<CustomResourceColumnDefinition>,
    pub validator: Option<Validator>,
    /// Strategic merge patch is accepted (treated as a JSON merge patch); only for
    /// built-in kinds, as in Kubernetes.
    pub strategic_merge: bool,
}

impl fmt::Debug for ResourceDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceDef")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("plural", &self.plural)
            .field("namespaced", &self.namespaced)
            .finish_non_exhaustive()
    }
}

impl ResourceDef {
    /// `shoal.io/v1alpha1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage prefix of all objects of this resource.
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The storage prefix of the objects in one namespace (or all of them).
    pub fn collection_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.collection_prefix(namespace))
    }

    /// The URL path of the collection.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{base}/namespaces/{ns}/{}", self.plural),
            _ => format!("{base}/{}", self.plural),
        }
    }

    /// A definition from a CRD (its first served version) and a typed validator.
    ///
    /// # Panics
    /// If the CRD has no version or no schema: CRDs come from `#[derive(CustomResource)]`,
    /// so this is a programming error.
    pub fn from_crd<K>(crd: CustomResourceDefinition) -> Self
    where
        K: for<'de> serde::Deserialize<'de> + Validate + 'static,
    {
        let v = crd
            .spec
            .versions
            .first()
            .expect("CRD has a version")
            .clone();
        let mut schema = *v
            .schema
            .and_then(|s| s.open_api_v3_schema)
            .map(Box::new)
            .expect("CRD has a schema");
        let props = schema.properties.get_or_insert_with(BTreeMap::new);
        for field in ["apiVersion", "kind"] {
            props
                .entry(field.to_string())
                .or_insert_with(|| JSONSchemaProps {
                    type_: Some("string".into()),
                    ..Default::default()
                });
        }
        props
            .entry("metadata".to_string())
            .or_insert_with(|| JSONSchemaProps {
                type_: Some("object".into()),
                ..Default::default()
            });
        let names = crd.spec.names;
        let validator: Validator =
            Arc::new(|v: &Value| match serde_json::from_value::<K>(v.clone()) {
                Ok(obj) => obj.validate(),
                Err(e) => vec![FieldError::invalid("<object>", e.to_string())],
            });
        ResourceDef {
            group: crd.spec.group,
            version: v.name,
            list_kind: names
                .list_kind
                .unwrap_or_else(|| format!("{}List", names.kind)),
            kind: names.kind,
            plural: names.plural,
            singular: names.singular.unwrap_or_default(),
            short_names: names.short_names.unwrap_or_default(),
            categories: names.categories.unwrap_or_default(),
            namespaced: crd.spec.scope == "Namespaced",
            has_status: v.subresources.as_ref().is_some_and(|s| s.status.is_some()),
            schema,
            columns: v.additional_printer_columns.unwrap_or_default(),
            validator: Some(validator),
            strategic_merge: false,
        }
    }

    /// The core/v1 `Namespace` kind.
    pub fn namespace() -> Self {
        let schema: JSONSchemaProps = serde_json::from_value(serde_json::json!({
            "type": "object",
            "description": "Namespace provides a scope for Names.",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "description": "Spec defines the behavior of the Namespace.",
                    "properties": {
                        "finalizers": {
                            "type": "array",
                            "description": "Finalizers is an opaque list of values that must be empty to permanently remove object from storage.",
                            "items": {"type": "string"}
                        }
                    }
                },
                "status": {
                    "type": "object",
                    "description": "Status describes the current status of a Namespace.",
                    "properties": {
                        "phase": {"type": "string", "description": "Phase is the current lifecycle phase of the namespace: Active or Terminating."},
                        "conditions": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
                    }
                }
            }
        }))
        .expect("namespace schema is valid");
        let columns: Vec<CustomResourceColumnDefinition> =
            serde_json::from_value(serde_json::json!([
                {"name": "Status", "type": "string", "jsonPath": ".status.phase"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
            ]))
            .expect("namespace columns are valid");
        ResourceDef {
            group: String::new(),
            version: "v1".into(),
            kind: "Namespace".into(),
            list_kind: "NamespaceList".into(),
            plural: "namespaces".into(),
            singular: "namespace".into(),
            short_names: vec!["ns".into()],
            categories: vec![],
            namespaced: false,
            has_status: true,
            schema,
            columns,
            validator: None,
            strategic_merge: true,
        }
    }
}

/// All resources the server serves.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    defs: Vec<Arc<ResourceDef>>,
}

impl Registry {
    /// The registry of everything shoal serves today: Namespace and shoal's kinds.
    pub fn shoal() -> Self {
        use kube::CustomResourceExt;
        use shoal_core::kinds::{
            Approval, Cluster, ClusterGroup, Pipeline, PipelineRun, Task, TaskRun,
        };
        let mut r = Registry::default();
        r.add(ResourceDef::namespace());
        r.add(ResourceDef::from_crd::<Cluster>(Cluster::crd()));
        r.add(ResourceDef::from_crd::<ClusterGroup>(ClusterGroup::crd()));
        r.add(ResourceDef::from_crd::<Task>(Task::crd()));
        r.add(ResourceDef::from_crd::<Pipeline>(Pipeline::crd()));
        r.add(ResourceDef::from_crd::<PipelineRun>(PipelineRun::crd()));
        r.add(ResourceDef::from_crd::<TaskRun>(TaskRun::crd()));
        r.add(ResourceDef::from_crd::<Approval>(Approval::crd()));
        r
    }

    pub fn add(&mut self, def: ResourceDef) {
        self.defs.push(Arc::new(def));
    }

    pub fn all(&self) -> &[Arc<ResourceDef>] {
        &self.defs
    }

    /// The resource `plural` in `group`/`version`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ResourceDef>> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
    }

    /// The resources of one group-version.
    pub fn group_version(&self, group: &str, version: &str) -> Vec<&Arc<ResourceDef>> {
        self.defs
            .iter()
            .filter(|d| d.group == group && d.version == version)
            .collect()
    }

    /// The named groups (not core) and their versions, in registration order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for d in self.defs.iter().filter(|d| !d.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == d.group) {
                Some((_, vs)) if !vs.contains(&d.version) => vs.push(d.version.clone()),
                Some(_) => {}
                None => out.push((d.group.clone(), vec![d.version.clone()])),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shoal_registry_serves_the_taskflow_kinds_namespaced() {
        let r = Registry::shoal();
        for plural in [
            "tasks",
            "pipelines",
            "pipelineruns",
            "taskruns",
            "approvals",
        ] {
            let d = r.find("shoal.io", "v1alpha1", plural).unwrap();
            assert!(d.namespaced, "{plural}");
        }
        let pr = r.find("shoal.io", "v1alpha1", "pipelineruns").unwrap();
        assert!(pr.has_status);
        assert_eq!(
            pr.key(Some("ops"), "r1"),
            "/registry/shoal.io/pipelineruns/ops/r1"
        );
    }

    #[test]
    fn shoal_registry_serves_namespaces_and_clusters() {
        let r = Registry::shoal();
        let ns = r.find("", "v1", "namespaces").unwrap();
        assert!(!ns.namespaced);
        let cl = r.find("shoal.io", "v1alpha1", "clusters").unwrap();
        assert_eq!(cl.kind, "Cluster");
        assert!(cl.has_status);
        assert_eq!(cl.key(None, "c-1"), "/registry/shoal.io/clusters/c-1");
        assert_eq!(cl.collection_path(None), "/apis/shoal.io/v1alpha1/clusters");
        assert_eq!(
            r.groups(),
            vec![("shoal.io".to_string(), vec!["v1alpha1".to_string()])]
        );
    }
}
