//! The registry of kinds the API server serves.
//!
//! ```text
//! Registry
//!  └─ ResourceDef  (group, version, kind, plural, scope, schema, columns, validator)
//!       built from a CRD (shoal's kinds, derived from Rust types), from a k8s-openapi
//!       type (the built-in kinds of member clusters), or by hand (shoal's Namespace)
//! ```
//!
//! The server is generic: handlers never name a kind. Everything kind-specific — the
//! structural schema objects are checked against, the printer columns of the Table view
//! (a JSONPath, or a computed [`CellFn`] for built-in kinds), semantic validation — hangs
//! off a [`ResourceDef`].
//!
//! Two registries exist: [`Registry::shoal`] (shoal's own API) and
//! [`Registry::member_cluster`] (what every simulated member cluster serves: core/v1 and
//! apps/v1). Built-in schemas come from k8s-openapi's `schemars` output, made structural
//! by the very transforms `#[derive(CustomResource)]` applies, so `kubectl explain` and
//! strict field validation work for them as for CRDs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, JSONSchemaProps,
};
use serde_json::Value;
use shoal_core::FieldError;
use shoal_core::kinds::Validate;

use crate::printers;
pub use crate::printers::CellFn;

/// Semantic validation of a whole object (already schema-checked).
pub type Validator = Arc<dyn Fn(&Value) -> Vec<FieldError> + Send + Sync>;

/// Fills in the defaults of an object before it is checked and stored.
pub type Defaulter = Arc<dyn Fn(&mut Value) + Send + Sync>;

/// How long an Event lives after its last write (kube-apiserver's `--event-ttl`).
pub const EVENT_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

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
    /// Kubernetes' defaults for built-in kinds ([`crate::defaults`]).
    pub defaulter: Option<Defaulter>,
    /// Strategic merge patch is accepted; only for built-in kinds, as in Kubernetes.
    pub strategic_merge: bool,
    /// How a strategic merge patch merges this kind's lists ([`crate::strategic`]).
    pub patch_meta: Arc<crate::strategic::PatchMeta>,
    /// Columns computed by code, by column name; the others are JSONPaths.
    pub cells: Vec<(String, CellFn)>,
    /// The table starts with a NAME column (all kinds but events).
    pub name_column: bool,
    /// Served get/list/watch only; writes answer 405.
    pub read_only: bool,
    /// Has a `scale` subresource reading and writing these paths.
    pub scale: Option<crate::scale::ScalePaths>,
    /// Objects expire this long after their last write (Events, as kube-apiserver's
    /// `--event-ttl`); `None` keeps them until deleted.
    pub ttl: Option<std::time::Duration>,
    /// A built-in kind, decoded by kube-apiserver into its Go type, rather than a custom
    /// resource: a create or update body may leave `apiVersion` and `kind` out and they
    /// are taken from the request path, as kube-apiserver does (the official Python
    /// client's typed API sends neither). A custom resource's body must name its kind.
    pub builtin: bool,
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
            // Deserializing from a borrowed Value: no copy of the object per request.
            Arc::new(|v: &Value| match K::deserialize(v) {
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
            defaulter: None,
            strategic_merge: false,
            patch_meta: Arc::default(),
            cells: Vec::new(),
            name_column: true,
            read_only: false,
            scale: None,
            ttl: None,
            builtin: false,
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
            defaulter: None,
            strategic_merge: true,
            patch_meta: Arc::new(crate::strategic::builtin_meta("", "Namespace")),
            cells: Vec::new(),
            name_column: true,
            read_only: false,
            scale: None,
            ttl: None,
            builtin: true,
        }
    }

    /// A built-in Kubernetes kind from its k8s-openapi type: group, version, kind,
    /// plural and scope from [`k8s_openapi::Resource`], the schema from its `schemars`
    /// implementation (see [`structural_schema`]). It has a status subresource when the
    /// type has a `status`, and accepts strategic merge patches with Kubernetes' patch
    /// strategies for the kind ([`crate::strategic::builtin_meta`]). Add columns with
    /// [`ResourceDef::column`] and [`ResourceDef::computed`].
    pub fn builtin<K>() -> Self
    where
        K: k8s_openapi::Resource + k8s_openapi::ListableResource + schemars::JsonSchema + 'static,
    {
        let schema = structural_schema::<K>();
        let has_status = schema
            .properties
            .as_ref()
            .is_some_and(|p| p.contains_key("status"));
        ResourceDef {
            group: K::GROUP.to_string(),
            version: K::VERSION.to_string(),
            kind: K::KIND.to_string(),
            list_kind: K::LIST_KIND.to_string(),
            plural: K::URL_PATH_SEGMENT.to_string(),
            singular: K::KIND.to_lowercase(),
            short_names: vec![],
            categories: vec![],
            namespaced: std::any::TypeId::of::<K::Scope>()
                == std::any::TypeId::of::<k8s_openapi::NamespaceResourceScope>(),
            has_status,
            schema,
            columns: vec![],
            validator: None,
            defaulter: Some(Arc::new(|v: &mut Value| {
                crate::defaults::apply(K::GROUP, K::KIND, v)
            })),
            strategic_merge: true,
            patch_meta: Arc::new(crate::strategic::builtin_meta(K::GROUP, K::KIND)),
            cells: Vec::new(),
            name_column: true,
            read_only: false,
            scale: None,
            ttl: None,
            builtin: true,
        }
    }

    /// core/v1 Events, with kubectl's columns, expiring [`EVENT_TTL`] after their last
    /// write as in Kubernetes.
    pub fn events() -> Self {
        let mut events = ResourceDef::builtin::<k8s_openapi::api::core::v1::Event>()
            .short_names(&["ev"])
            .computed(
                "Last Seen",
                "string",
                0,
                Arc::new(printers::event_last_seen),
            )
            .column("Type", "string", 0, ".type")
            .column("Reason", "string", 0, ".reason")
            .computed("Object", "string", 0, Arc::new(printers::event_object))
            .column("Message", "string", 0, ".message")
            .column("Name", "string", 1, ".metadata.name");
        events.name_column = false;
        events.ttl = Some(EVENT_TTL);
        events
    }

    /// Sets the short names (`po`, `deploy`).
    pub fn short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Sets the categories (`all`).
    pub fn categories(mut self, names: &[&str]) -> Self {
        self.categories = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Adds a printer column read by JSONPath. `priority` 1 shows only with `-o wide`;
    /// `ty` `date` renders as an age.
    pub fn column(mut self, name: &str, ty: &str, priority: i32, json_path: &str) -> Self {
        self.columns.push(CustomResourceColumnDefinition {
            name: name.to_string(),
            type_: ty.to_string(),
            priority: (priority != 0).then_some(priority),
            json_path: json_path.to_string(),
            description: None,
            format: None,
        });
        self
    }

    /// Adds a printer column computed by `cell`.
    pub fn computed(mut self, name: &str, ty: &str, priority: i32, cell: CellFn) -> Self {
        self = self.column(name, ty, priority, "");
        self.cells.push((name.to_string(), cell));
        self
    }

    /// Serves the kind get/list/watch only (what shoal itself writes, such as leader
    /// election's Leases); every write answers 405.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Adds a `scale` subresource over `paths`.
    pub fn scale(mut self, paths: crate::scale::ScalePaths) -> Self {
        self.scale = Some(paths);
        self
    }

    /// The AGE column every kind has.
    pub fn age(self) -> Self {
        self.column("Age", "date", 0, ".metadata.creationTimestamp")
    }

    /// The computed cell of column `name`, if it is computed.
    pub fn cell(&self, name: &str) -> Option<&CellFn> {
        self.cells.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }
}

/// The structural OpenAPI v3 schema of `T`, generated exactly as
/// `#[derive(CustomResource)]` does (inlined subschemas, kube's structural rewriters),
/// so built-in kinds and CRDs are checked and explained alike.
///
/// # Panics
/// If schemars output does not deserialize as `JSONSchemaProps`: the types are
/// k8s-openapi's, fixed at compile time, so this is a programming error caught by tests.
pub fn structural_schema<T: schemars::JsonSchema>() -> JSONSchemaProps {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        .into_generator();
    serde_json::to_value(generator.into_root_schema_for::<T>())
        .and_then(serde_json::from_value)
        .expect("a k8s-openapi schema is a valid JSONSchemaProps")
}

/// All resources the server serves.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    defs: Vec<Arc<ResourceDef>>,
}

impl Registry {
    /// The registry of everything shoal serves today: Namespace, shoal's kinds, Events,
    /// Secrets (members' credentials) and leader election's Leases (read-only).
    pub fn shoal() -> Self {
        use kube::CustomResourceExt;
        use shoal_core::kinds::{
            Approval, Cluster, ClusterConfig, ClusterGroup, Component, Pipeline, PipelineRun, Task,
            TaskRun,
        };
        let mut r = Registry::default();
        r.add(ResourceDef::namespace());
        r.add(ResourceDef::from_crd::<Cluster>(Cluster::crd()));
        r.add(ResourceDef::from_crd::<ClusterGroup>(ClusterGroup::crd()));
        r.add(ResourceDef::from_crd::<Component>(Component::crd()));
        r.add(ResourceDef::from_crd::<ClusterConfig>(ClusterConfig::crd()));
        r.add(ResourceDef::from_crd::<Task>(Task::crd()));
        r.add(ResourceDef::from_crd::<Pipeline>(Pipeline::crd()));
        r.add(ResourceDef::from_crd::<PipelineRun>(PipelineRun::crd()));
        r.add(ResourceDef::from_crd::<TaskRun>(TaskRun::crd()));
        r.add(ResourceDef::from_crd::<Approval>(Approval::crd()));
        r.add(ResourceDef::from_crd::<shoal_core::kinds::Release>(
            shoal_core::kinds::Release::crd(),
        ));
        // What controllers record about clusters, releases and runs (`kubectl describe`).
        r.add(ResourceDef::events());
        // Member clusters' credentials: a Cluster's spec.credentialsRef names one.
        r.add(
            ResourceDef::builtin::<k8s_openapi::api::core::v1::Secret>()
                .column("Type", "string", 0, ".type")
                .computed("Data", "integer", 0, Arc::new(printers::data_count))
                .age(),
        );
        // Leader election (shoal_store::election) writes these; users only read them.
        r.add(
            ResourceDef::builtin::<k8s_openapi::api::coordination::v1::Lease>()
                .column("Holder", "string", 0, ".spec.holderIdentity")
                .age()
                .read_only(),
        );
        r
    }

    /// What every member cluster serves: the built-in kinds of core/v1 and apps/v1 a
    /// fleet release touches, with kubectl's short names and table columns. More kinds
    /// (the Kruise CRDs) can be added with [`Registry::add`] and
    /// [`ResourceDef::from_crd`].
    pub fn member_cluster() -> Self {
        use k8s_openapi::api::apps::v1 as apps;
        use k8s_openapi::api::core::v1 as core;
        let tpl = "/spec/template/spec";
        let workload_wide = |d: ResourceDef| {
            d.computed("Containers", "string", 1, printers::containers(tpl))
                .computed("Images", "string", 1, printers::images(tpl))
                .computed("Selector", "string", 1, Arc::new(printers::selector))
        };
        let mut r = Registry::default();
        r.add(
            ResourceDef::builtin::<core::Namespace>()
                .short_names(&["ns"])
                .column("Status", "string", 0, ".status.phase")
                .age(),
        );
        r.add(
            ResourceDef::builtin::<core::Node>()
                .short_names(&["no"])
                .computed("Status", "string", 0, Arc::new(printers::node_status))
                .computed("Roles", "string", 0, Arc::new(printers::node_roles))
                .age()
                .column("Version", "string", 0, ".status.nodeInfo.kubeletVersion")
                .computed(
                    "Internal-IP",
                    "string",
                    1,
                    printers::node_address("InternalIP"),
                )
                .computed(
                    "External-IP",
                    "string",
                    1,
                    printers::node_address("ExternalIP"),
                )
                .column("OS-Image", "string", 1, ".status.nodeInfo.osImage")
                .column(
                    "Kernel-Version",
                    "string",
                    1,
                    ".status.nodeInfo.kernelVersion",
                )
                .column(
                    "Container-Runtime",
                    "string",
                    1,
                    ".status.nodeInfo.containerRuntimeVersion",
                ),
        );
        r.add(
            ResourceDef::builtin::<core::Pod>()
                .short_names(&["po"])
                .categories(&["all"])
                .computed("Ready", "string", 0, Arc::new(printers::pod_ready))
                .computed("Status", "string", 0, Arc::new(printers::pod_status))
                .computed("Restarts", "string", 0, Arc::new(printers::pod_restarts))
                .age()
                .computed("IP", "string", 1, printers::string_or_none("/status/podIP"))
                .computed(
                    "Node",
                    "string",
                    1,
                    printers::string_or_none("/spec/nodeName"),
                )
                .computed(
                    "Nominated Node",
                    "string",
                    1,
                    printers::string_or_none("/status/nominatedNodeName"),
                ),
        );
        r.add(
            ResourceDef::builtin::<core::Service>()
                .short_names(&["svc"])
                .categories(&["all"])
                .column("Type", "string", 0, ".spec.type")
                .computed(
                    "Cluster-IP",
                    "string",
                    0,
                    printers::string_or_none("/spec/clusterIP"),
                )
                .computed(
                    "External-IP",
                    "string",
                    0,
                    Arc::new(printers::service_external_ip),
                )
                .computed("Port(s)", "string", 0, Arc::new(printers::service_ports))
                .age()
                .computed(
                    "Selector",
                    "string",
                    1,
                    Arc::new(printers::service_selector),
                ),
        );
        r.add(
            ResourceDef::builtin::<core::ConfigMap>()
                .short_names(&["cm"])
                .computed("Data", "integer", 0, Arc::new(printers::data_count))
                .age(),
        );
        r.add(
            ResourceDef::builtin::<core::Secret>()
                .column("Type", "string", 0, ".type")
                .computed("Data", "integer", 0, Arc::new(printers::data_count))
                .age(),
        );
        r.add(ResourceDef::events());
        r.add(workload_wide(
            ResourceDef::builtin::<apps::Deployment>()
                .short_names(&["deploy"])
                .scale(crate::scale::WORKLOAD)
                .categories(&["all"])
                .computed(
                    "Ready",
                    "string",
                    0,
                    printers::ready_of("/status/readyReplicas", "/spec/replicas"),
                )
                .computed(
                    "Up-to-date",
                    "integer",
                    0,
                    printers::int("/status/updatedReplicas"),
                )
                .computed(
                    "Available",
                    "integer",
                    0,
                    printers::int("/status/availableReplicas"),
                )
                .age(),
        ));
        r.add(workload_wide(
            ResourceDef::builtin::<apps::ReplicaSet>()
                .short_names(&["rs"])
                .scale(crate::scale::WORKLOAD)
                .categories(&["all"])
                .computed("Desired", "integer", 0, printers::int("/spec/replicas"))
                .computed("Current", "integer", 0, printers::int("/status/replicas"))
                .computed(
                    "Ready",
                    "integer",
                    0,
                    printers::int("/status/readyReplicas"),
                )
                .age(),
        ));
        r.add(workload_wide(
            ResourceDef::builtin::<apps::DaemonSet>()
                .short_names(&["ds"])
                .categories(&["all"])
                .computed(
                    "Desired",
                    "integer",
                    0,
                    printers::int("/status/desiredNumberScheduled"),
                )
                .computed(
                    "Current",
                    "integer",
                    0,
                    printers::int("/status/currentNumberScheduled"),
                )
                .computed("Ready", "integer", 0, printers::int("/status/numberReady"))
                .computed(
                    "Up-to-date",
                    "integer",
                    0,
                    printers::int("/status/updatedNumberScheduled"),
                )
                .computed(
                    "Available",
                    "integer",
                    0,
                    printers::int("/status/numberAvailable"),
                )
                .computed(
                    "Node Selector",
                    "string",
                    0,
                    Arc::new(printers::daemonset_node_selector),
                )
                .age(),
        ));
        r.add(
            ResourceDef::builtin::<apps::StatefulSet>()
                .short_names(&["sts"])
                .scale(crate::scale::WORKLOAD)
                .categories(&["all"])
                .computed(
                    "Ready",
                    "string",
                    0,
                    printers::ready_of("/status/readyReplicas", "/spec/replicas"),
                )
                .age()
                .computed("Containers", "string", 1, printers::containers(tpl))
                .computed("Images", "string", 1, printers::images(tpl)),
        );
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

    /// Built once: generating the built-in kinds' schemas is slow in debug builds.
    static MEMBER: std::sync::LazyLock<Registry> =
        std::sync::LazyLock::new(Registry::member_cluster);

    /// Kubernetes' structural schema rules that matter to pruning and explain: every
    /// node has a type (or is int-or-string / preserve-unknown-fields), no `$ref`, and
    /// objects declare properties or additionalProperties.
    fn assert_structural(s: &JSONSchemaProps, path: &str) {
        assert!(
            s.type_.is_some()
                || s.x_kubernetes_int_or_string == Some(true)
                || s.x_kubernetes_preserve_unknown_fields == Some(true),
            "{path} has no type"
        );
        assert!(s.ref_path.is_none(), "{path} is a $ref");
        for (k, p) in s.properties.iter().flatten() {
            assert_structural(p, &format!("{path}.{k}"));
        }
        if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) = &s.items {
            assert_structural(items, &format!("{path}[]"));
        }
        if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(a)) = &s.additional_properties {
            assert_structural(a, &format!("{path}{{}}"));
        }
    }

    #[test]
    fn every_member_kind_has_a_structural_schema_with_spec_or_data() {
        let expected = [
            ("", "namespaces", false, "ns"),
            ("", "nodes", false, "no"),
            ("", "pods", true, "po"),
            ("", "services", true, "svc"),
            ("", "configmaps", true, "cm"),
            ("", "secrets", true, ""),
            ("", "events", true, "ev"),
            ("apps", "deployments", true, "deploy"),
            ("apps", "replicasets", true, "rs"),
            ("apps", "daemonsets", true, "ds"),
            ("apps", "statefulsets", true, "sts"),
        ];
        assert_eq!(MEMBER.all().len(), expected.len());
        for (group, plural, namespaced, short) in expected {
            let d = MEMBER
                .find(group, "v1", plural)
                .unwrap_or_else(|| panic!("{plural}"));
            assert_eq!(d.namespaced, namespaced, "{plural}");
            assert_eq!(
                d.short_names.first().map_or("", String::as_str),
                short,
                "{plural}"
            );
            assert!(d.strategic_merge, "{plural}");
            assert_structural(&d.schema, plural);
            assert!(!d.columns.is_empty(), "{plural} has printer columns");
            for c in &d.columns {
                assert!(
                    d.cell(&c.name).is_some() || !c.json_path.is_empty(),
                    "{plural}.{} has neither a cell nor a JSONPath",
                    c.name
                );
            }
        }
        let ds = MEMBER.find("apps", "v1", "daemonsets").unwrap();
        assert!(ds.has_status);
        let spec = &ds.schema.properties.as_ref().unwrap()["spec"];
        assert!(
            spec.properties
                .as_ref()
                .unwrap()
                .contains_key("updateStrategy")
        );
        assert!(!MEMBER.find("", "v1", "configmaps").unwrap().has_status);
        assert!(MEMBER.find("", "v1", "nodes").unwrap().has_status);
    }

    #[test]
    fn crd_kinds_can_join_a_member_registry_without_strategic_merge() {
        use kube::CustomResourceExt;
        use shoal_core::kinds::Cluster;
        // How the Kruise kinds get registered: ResourceDef::from_crd on the derived type.
        let mut r = MEMBER.clone();
        r.add(ResourceDef::from_crd::<Cluster>(Cluster::crd()));
        let def = r.find("shoal.io", "v1alpha1", "clusters").unwrap();
        assert!(!def.strategic_merge && def.defaulter.is_none());
        let docs = crate::openapi::Documents::build(&r);
        assert!(docs.docs.contains_key("apis/shoal.io/v1alpha1"));
        assert!(docs.docs.contains_key("apis/apps/v1"));
    }

    #[test]
    fn member_kinds_are_explainable_from_their_openapi_documents() {
        let docs = crate::openapi::Documents::build(&MEMBER);
        let (_, apps) = &docs.docs["apis/apps/v1"];
        let ds = &apps["components"]["schemas"]["io.k8s.api.apps.v1.DaemonSet"];
        assert_eq!(
            ds["x-kubernetes-group-version-kind"][0]["kind"],
            "DaemonSet"
        );
        assert!(
            ds["properties"]["spec"]["properties"]["updateStrategy"]["properties"]["rollingUpdate"]
                .is_object()
        );
        let (_, core) = &docs.docs["api/v1"];
        assert!(core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"].is_object());
        assert!(core["paths"]["/api/v1/nodes/{name}"].is_object());
    }

    #[test]
    fn a_pod_missing_its_containers_is_invalid_and_unknown_fields_are_named() {
        let pods = MEMBER.find("", "v1", "pods").unwrap();
        let mut pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": "n"}});
        let err = crate::object::admit(pods, &mut pod, crate::object::FieldValidation::Strict)
            .unwrap_err();
        assert!(err.to_string().contains("spec.containers"), "{err}");
        let mut pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "a", "image": "a", "colour": "red"}]}});
        let err = crate::object::admit(pods, &mut pod, crate::object::FieldValidation::Strict)
            .unwrap_err();
        assert!(
            err.to_string().contains("spec.containers[0].colour"),
            "{err}"
        );
    }

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
    fn components_and_cluster_configs_are_cluster_scoped_and_validated() {
        let r = Registry::shoal();
        let comp = r.find("shoal.io", "v1alpha1", "components").unwrap();
        assert!(!comp.namespaced && comp.has_status);
        assert_eq!(comp.short_names, ["comp"]);
        let cfg = r.find("shoal.io", "v1alpha1", "clusterconfigs").unwrap();
        assert!(!cfg.namespaced && !cfg.has_status);
        let validate = cfg.validator.as_ref().unwrap();
        let errs = validate(&serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "ClusterConfig",
            "metadata": {"name": "x"},
            "spec": {"component": "agent", "cluster": "c-1", "clusterGroup": "prod"}
        }));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec");
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
            vec![
                ("shoal.io".to_string(), vec!["v1alpha1".to_string()]),
                ("coordination.k8s.io".to_string(), vec!["v1".to_string()]),
            ]
        );
    }

    #[test]
    fn leases_are_read_only_at_the_key_leader_election_writes() {
        let r = Registry::shoal();
        let l = r.find("coordination.k8s.io", "v1", "leases").unwrap();
        assert!(l.read_only && l.namespaced && !l.has_status);
        assert_eq!(
            l.key(Some(shoal_store::election::NAMESPACE), "controllers"),
            shoal_store::election::role_key("controllers")
        );
        let doc = crate::discovery::resource_list(&r, "coordination.k8s.io", "v1").unwrap();
        assert_eq!(
            doc["resources"][0]["verbs"],
            serde_json::json!(["get", "list", "watch"])
        );
        let docs = crate::openapi::Documents::build(&r);
        let (_, d) = &docs.docs["apis/coordination.k8s.io/v1"];
        let item = &d["paths"]["/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"];
        assert!(
            item.get("get").is_some() && item.get("delete").is_none(),
            "{item}"
        );
    }
}
