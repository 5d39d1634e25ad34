//! OpenAPI v3 documents, generated from the registry (and so from the Rust types).
//!
//! ```text
//! GET /openapi/v3                          {"paths": {"apis/shoal.io/v1alpha1": {"serverRelativeURL": "…?hash=…"}}}
//! GET /openapi/v3/apis/shoal.io/v1alpha1   {"openapi": "3.0.0", "paths": {…}, "components": {"schemas": {…}}}
//! ```
//!
//! kubectl reads these for three things: `kubectl explain` (the schema carrying
//! `x-kubernetes-group-version-kind`), server-side field validation (it looks for a
//! `fieldValidation` query parameter on the kind's PATCH operation before sending
//! `?fieldValidation=Strict`), and the choice of patch type for `kubectl apply` (strategic
//! merge only if the PATCH operation lists that media type). The documents are built once,
//! at start-up.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceDef};

/// All OpenAPI v3 documents, keyed by their path under `/openapi/v3/` (`api/v1`,
/// `apis/shoal.io/v1alpha1`), each with its content hash.
#[derive(Clone, Debug, Default)]
pub struct Documents {
    pub docs: BTreeMap<String, (String, Value)>,
}

impl Documents {
    pub fn build(reg: &Registry) -> Self {
        let mut gvs: Vec<(String, String)> = Vec::new();
        for d in reg.all() {
            let gv = (d.group.clone(), d.version.clone());
            if !gvs.contains(&gv) {
                gvs.push(gv);
            }
        }
        let mut docs = BTreeMap::new();
        for (g, v) in gvs {
            let path = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            let doc = group_version_doc(reg, &g, &v);
            let mut h = std::collections::hash_map::DefaultHasher::new();
            doc.to_string().hash(&mut h);
            docs.insert(path, (format!("{:016X}", h.finish()), doc));
        }
        Documents { docs }
    }

    /// The `/openapi/v3` index.
    pub fn index(&self) -> Value {
        let paths: Map<String, Value> = self
            .docs
            .iter()
            .map(|(p, (hash, _))| {
                (
                    p.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
                )
            })
            .collect();
        json!({"paths": paths})
    }
}

/// The component name of a kind's schema, as Kubernetes names CRD schemas
/// (`io.shoal.v1alpha1.Cluster`, `io.k8s.api.core.v1.Namespace`).
pub fn schema_name(d: &ResourceDef, kind: &str) -> String {
    if d.group.is_empty() {
        return format!("io.k8s.api.core.{}.{kind}", d.version);
    }
    // Kubernetes' own groups (`apps`, `coordination.k8s.io`) are named by their Go
    // package, as in Kubernetes' documents: io.k8s.api.apps.v1.DaemonSet.
    if let Some(pkg) = d
        .group
        .strip_suffix(".k8s.io")
        .or(Some(d.group.as_str()).filter(|g| !g.contains('.')))
    {
        return format!("io.k8s.api.{pkg}.{}.{kind}", d.version);
    }
    let reversed: Vec<&str> = d.group.split('.').rev().collect();
    format!("{}.{}.{kind}", reversed.join("."), d.version)
}

/// The schemas of ObjectMeta and ListMeta (and what they reference), with the
/// references to both.
fn meta_schemas() -> (Map<String, Value>, String, String) {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let object_meta = generator.subschema_for::<ObjectMeta>();
    let list_meta = generator.subschema_for::<ListMeta>();
    let refname = |s: &schemars::Schema| {
        s.get("$ref")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (object_meta, list_meta) = (refname(&object_meta), refname(&list_meta));
    (generator.take_definitions(true), object_meta, list_meta)
}

fn gvk(d: &ResourceDef, kind: &str) -> Value {
    json!({"group": d.group, "version": d.version, "kind": kind})
}

fn param(name: &str, location: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": location, "description": description, "schema": {"type": ty},
           "required": location == "path", "uniqueItems": true})
}

fn operation(
    d: &ResourceDef,
    action: &str,
    verb: &str,
    sub: &str,
    body: Option<&[&str]>,
    reference: &str,
    extra: Vec<Value>,
) -> Value {
    let id = format!(
        "{verb}{}{}{sub}",
        if d.namespaced { "Namespaced" } else { "" },
        d.kind
    );
    let mut op = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(d, &d.kind),
        "parameters": extra,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": reference}}}}},
    });
    if let Some(types) = body {
        let content: Map<String, Value> = types
            .iter()
            .map(|t| (t.to_string(), json!({"schema": {"$ref": reference}})))
            .collect();
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

fn resource_paths(d: &ResourceDef, paths: &mut Map<String, Value>) {
    let obj_ref = format!("#/components/schemas/{}", schema_name(d, &d.kind));
    let list_ref = format!("#/components/schemas/{}", schema_name(d, &d.list_kind));
    let base = if d.group.is_empty() {
        format!("/api/{}", d.version)
    } else {
        format!("/apis/{}/{}", d.group, d.version)
    };
    let fv = param(
        "fieldValidation",
        "query",
        "string",
        "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn (default) or Strict.",
    );
    let dry = param(
        "dryRun",
        "query",
        "string",
        "When present, indicates that modifications should not be persisted.",
    );
    let list_params = vec![
        param(
            "labelSelector",
            "query",
            "string",
            "A selector to restrict the list of returned objects by their labels.",
        ),
        param(
            "fieldSelector",
            "query",
            "string",
            "A selector to restrict the list of returned objects by their fields (metadata.name, metadata.namespace).",
        ),
        param(
            "limit",
            "query",
            "integer",
            "The maximum number of responses to return for a list call.",
        ),
        param(
            "continue",
            "query",
            "string",
            "The continue token of the previous page.",
        ),
        param(
            "resourceVersion",
            "query",
            "string",
            "Where a list or watch starts.",
        ),
        param(
            "watch",
            "query",
            "boolean",
            "Watch for changes to the described resources.",
        ),
        param(
            "allowWatchBookmarks",
            "query",
            "boolean",
            "Request BOOKMARK events.",
        ),
        param(
            "timeoutSeconds",
            "query",
            "integer",
            "Timeout for the list/watch call.",
        ),
    ];
    let mut patch_types = vec![
        "application/json-patch+json",
        "application/merge-patch+json",
    ];
    if d.strategic_merge {
        patch_types.push("application/strategic-merge-patch+json");
    }
    let mut scopes = vec![(None, format!("{base}/{}", d.plural))];
    if d.namespaced {
        scopes = vec![(
            Some("namespace"),
            format!("{base}/namespaces/{{namespace}}/{}", d.plural),
        )];
        paths.insert(
            format!("{base}/{}", d.plural),
            json!({"get": operation(d, "list", "list", "ForAllNamespaces", None, &list_ref, list_params.clone())}),
        );
    }
    for (ns, collection) in scopes {
        let scope_params: Vec<Value> = ns
            .map(|_| {
                vec![param(
                    "namespace",
                    "path",
                    "string",
                    "object name and auth scope, such as for teams and projects",
                )]
            })
            .unwrap_or_default();
        let with = |mut extra: Vec<Value>| {
            let mut p = scope_params.clone();
            p.append(&mut extra);
            p
        };
        paths.insert(collection.clone(), json!({
            "get": operation(d, "list", "list", "", None, &list_ref, with(list_params.clone())),
            "post": operation(d, "post", "create", "", Some(&["application/json", "application/yaml"]), &obj_ref, with(vec![fv.clone(), dry.clone()])),
        }));
        let name = param("name", "path", "string", "name of the object");
        paths.insert(format!("{collection}/{{name}}"), json!({
            "get": operation(d, "get", "read", "", None, &obj_ref, with(vec![name.clone()])),
            "put": operation(d, "put", "replace", "", Some(&["application/json", "application/yaml"]), &obj_ref, with(vec![name.clone(), fv.clone(), dry.clone()])),
            "patch": operation(d, "patch", "patch", "", Some(&patch_types), &obj_ref, with(vec![name.clone(), fv.clone(), dry.clone()])),
            "delete": operation(d, "delete", "delete", "", None, &obj_ref, with(vec![name.clone(), dry.clone()])),
        }));
        if d.read_only {
            // Only reads are served; kubectl must not offer writes.
            for p in [collection.clone(), format!("{collection}/{{name}}")] {
                if let Some(ops) = paths.get_mut(&p).and_then(Value::as_object_mut) {
                    ops.retain(|verb, _| verb == "get");
                }
            }
        }
        if d.has_status && !d.read_only {
            paths.insert(format!("{collection}/{{name}}/status"), json!({
                "get": operation(d, "get", "read", "Status", None, &obj_ref, with(vec![name.clone()])),
                "put": operation(d, "put", "replace", "Status", Some(&["application/json"]), &obj_ref, with(vec![name.clone(), fv.clone()])),
                "patch": operation(d, "patch", "patch", "Status", Some(&patch_types), &obj_ref, with(vec![name, fv.clone()])),
            }));
        }
    }
}

fn group_version_doc(reg: &Registry, group: &str, version: &str) -> Value {
    let (mut schemas, object_meta_ref, list_meta_ref) = meta_schemas();
    let mut paths = Map::new();
    for d in reg.group_version(group, version) {
        let mut schema = serde_json::to_value(&d.schema).expect("schema serializes");
        schema["properties"]["metadata"] = json!({
            "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            "allOf": [{"$ref": object_meta_ref}],
        });
        schema["properties"]["apiVersion"]["description"] =
            json!("APIVersion defines the versioned schema of this representation of an object.");
        schema["properties"]["kind"]["description"] =
            json!("Kind is a string value representing the REST resource this object represents.");
        schema["x-kubernetes-group-version-kind"] = json!([gvk(d, &d.kind)]);
        if d.strategic_merge {
            // kubectl computes `apply` patches with the strategies published here.
            crate::strategic::annotate_schema(&mut schema, &d.patch_meta);
        }
        schemas.insert(schema_name(d, &d.kind), schema);
        schemas.insert(schema_name(d, &d.list_kind), json!({
            "description": format!("{} is a list of {}", d.list_kind, d.kind),
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{}", schema_name(d, &d.kind))}},
                "metadata": {"allOf": [{"$ref": list_meta_ref}]},
            },
            "x-kubernetes-group-version-kind": [gvk(d, &d.list_kind)],
        }));
        resource_paths(d, &mut paths);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "shoal", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_schema_carries_its_gvk_and_metadata_reference() {
        let docs = Documents::build(&Registry::shoal());
        let (_, doc) = &docs.docs["apis/shoal.io/v1alpha1"];
        let s = &doc["components"]["schemas"]["io.shoal.v1alpha1.Cluster"];
        assert_eq!(s["x-kubernetes-group-version-kind"][0]["kind"], "Cluster");
        let meta_ref = s["properties"]["metadata"]["allOf"][0]["$ref"]
            .as_str()
            .unwrap();
        let meta_name = meta_ref.trim_start_matches("#/components/schemas/");
        assert!(
            doc["components"]["schemas"].get(meta_name).is_some(),
            "{meta_ref} is defined"
        );
        assert!(s["properties"]["spec"]["properties"]["endpoint"].is_object());
    }

    #[test]
    fn patch_operations_advertise_field_validation_for_kubectl() {
        let docs = Documents::build(&Registry::shoal());
        let (_, doc) = &docs.docs["apis/shoal.io/v1alpha1"];
        let patch = &doc["paths"]["/apis/shoal.io/v1alpha1/clusters/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Cluster");
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"fieldValidation"));
        assert!(
            patch["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_none()
        );
        let index = docs.index();
        assert!(
            index["paths"]["apis/shoal.io/v1alpha1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .contains("hash=")
        );
    }
}
