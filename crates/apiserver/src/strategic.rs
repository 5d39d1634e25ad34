//! Strategic merge patch (`application/strategic-merge-patch+json`), what kubectl sends
//! for `apply`, `label`, `annotate`, `scale`, `set env`, `rollout restart` and `cordon`
//! on built-in kinds.
//!
//! ```text
//! PatchMeta (per kind, from Kubernetes' `patchStrategy`/`patchMergeKey` struct tags)
//!   metadata.finalizers            merge (a set of strings)
//!   spec.template.spec.containers  merge by "name"
//!     └ env                        merge by "name"      ports: by "containerPort" …
//!   spec.strategy                  retainKeys
//!   status.conditions              merge by "type"
//! ```
//!
//! Like a JSON merge patch, maps merge and `null` deletes; unlike it, a list with a merge
//! key is merged element by element (a patch naming container `app` changes only that
//! container), a list of primitives with the merge strategy is a set union, and every
//! other list is replaced whole. The directives refine this, exactly as Kubernetes'
//! `apimachinery/pkg/util/strategicpatch` applies them:
//!
//! - `$patch: replace` (in a map: replace the map; as a list element: replace the list),
//!   `$patch: delete` (in a map: delete it; as a list element: delete the element with
//!   that merge key), `$patch: merge` (the default, in maps);
//! - `$setElementOrder/<list>`: the order of the merged list; elements only the server
//!   has keep their relative place;
//! - `$deleteFromPrimitiveList/<list>`: values to remove from a merged primitive list;
//! - `$retainKeys`: keys of the map to keep; the others are cleared (union fields such
//!   as a Deployment's `strategy`).
//!
//! The key decision: patch metadata is a table ([`builtin_meta`]) rather than read from
//! the schemas, because k8s-openapi's schemars output does not carry Kubernetes'
//! `x-kubernetes-patch-*` extensions. The same table annotates the published OpenAPI
//! documents ([`annotate_schema`]), so kubectl computes its apply patches with the very
//! strategies this module applies them with. Everything here is a pure function.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Why a strategic merge patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmpError {
    #[error("unknown patch directive {0}: expected replace, delete or merge")]
    BadDirective(String),
    #[error("{field}: list element {element} does not contain the merge key {key:?}")]
    MissingMergeKey {
        field: String,
        key: String,
        element: String,
    },
    #[error("{field}: $patch: {directive} is not allowed in a list")]
    BadListDirective { field: String, directive: String },
    #[error("{0}: $retainKeys must be a list of strings")]
    BadRetainKeys(String),
    #[error("{directive} must be a list (in {field})")]
    NotAList { directive: String, field: String },
    #[error("unknown strategic merge patch directive {0:?}")]
    UnknownDirective(String),
}

pub type Result<T, E = SmpError> = std::result::Result<T, E>;

/// How a field is patched, and the metadata of its fields (for a map) or of its
/// elements' fields (for a list of maps).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatchMeta {
    /// Lists: merge rather than replace. With `merge_key`, element by element;
    /// without, as a set of primitives.
    pub merge: bool,
    /// Lists of maps: the field identifying an element (`name`, `containerPort`).
    pub merge_key: Option<String>,
    /// Maps: the client may send `$retainKeys` (union types). Informational: the
    /// directive is honoured wherever it appears, as in Kubernetes.
    pub retain_keys: bool,
    pub fields: BTreeMap<String, PatchMeta>,
}

static EMPTY: PatchMeta = PatchMeta {
    merge: false,
    merge_key: None,
    retain_keys: false,
    fields: BTreeMap::new(),
};

impl PatchMeta {
    /// No strategies: maps merge, lists are replaced.
    pub fn empty() -> &'static PatchMeta {
        &EMPTY
    }

    /// The metadata of field `name` (the default — replace lists — if none is declared).
    pub fn field(&self, name: &str) -> &PatchMeta {
        self.fields.get(name).unwrap_or(&EMPTY)
    }

    /// Adds field `name` with `meta`.
    pub fn with(mut self, name: &str, meta: PatchMeta) -> Self {
        self.fields.insert(name.to_string(), meta);
        self
    }

    /// A list merged element by element on `key`, its elements described by `items`.
    pub fn keyed(key: &str, items: PatchMeta) -> Self {
        PatchMeta {
            merge: true,
            merge_key: Some(key.to_string()),
            ..items
        }
    }

    /// A list of primitives merged as a set.
    pub fn set() -> Self {
        PatchMeta {
            merge: true,
            ..PatchMeta::default()
        }
    }

    /// A map whose keys a `$retainKeys` directive may clear.
    pub fn retain_keys(mut self) -> Self {
        self.retain_keys = true;
        self
    }

    /// The `x-kubernetes-patch-strategy` value Kubernetes publishes for this field.
    pub fn strategy(&self) -> Option<String> {
        match (self.merge, self.retain_keys) {
            (true, true) => Some("merge,retainKeys".into()),
            (true, false) => Some("merge".into()),
            (false, true) => Some("retainKeys".into()),
            (false, false) => None,
        }
    }
}

/// `ObjectMeta`'s strategies.
pub fn object_meta() -> PatchMeta {
    PatchMeta::default()
        .with("finalizers", PatchMeta::set())
        .with(
            "ownerReferences",
            PatchMeta::keyed("uid", PatchMeta::default()),
        )
}

/// `Container`'s (and `EphemeralContainer`'s) strategies.
fn container() -> PatchMeta {
    PatchMeta::default()
        .with(
            "ports",
            PatchMeta::keyed("containerPort", PatchMeta::default()),
        )
        .with("env", PatchMeta::keyed("name", PatchMeta::default()))
        .with(
            "volumeMounts",
            PatchMeta::keyed("mountPath", PatchMeta::default()),
        )
        .with(
            "volumeDevices",
            PatchMeta::keyed("devicePath", PatchMeta::default()),
        )
}

fn pod_spec() -> PatchMeta {
    PatchMeta::default()
        .with("containers", PatchMeta::keyed("name", container()))
        .with("initContainers", PatchMeta::keyed("name", container()))
        .with("ephemeralContainers", PatchMeta::keyed("name", container()))
        .with(
            "volumes",
            PatchMeta::keyed("name", PatchMeta::default()).retain_keys(),
        )
        .with(
            "imagePullSecrets",
            PatchMeta::keyed("name", PatchMeta::default()),
        )
        .with("hostAliases", PatchMeta::keyed("ip", PatchMeta::default()))
        .with(
            "topologySpreadConstraints",
            PatchMeta::keyed("topologyKey", PatchMeta::default()),
        )
        .with(
            "schedulingGates",
            PatchMeta::keyed("name", PatchMeta::default()),
        )
        .with(
            "resourceClaims",
            PatchMeta::keyed("name", PatchMeta::default()).retain_keys(),
        )
}

fn pod_template() -> PatchMeta {
    PatchMeta::default()
        .with("metadata", object_meta())
        .with("spec", pod_spec())
}

/// A status whose `conditions` merge by `type`.
fn conditions() -> PatchMeta {
    PatchMeta::default().with("conditions", PatchMeta::keyed("type", PatchMeta::default()))
}

/// The patch strategies of a built-in kind, transcribed from the `patchStrategy` and
/// `patchMergeKey` tags of Kubernetes' `types.go` (k8s.io/api v0.33). Kinds without
/// any (ConfigMap, Secret, Event, Lease, CRDs) get metadata's only: maps merge, lists
/// are replaced.
pub fn builtin_meta(group: &str, kind: &str) -> PatchMeta {
    let root = PatchMeta::default().with("metadata", object_meta());
    match (group, kind) {
        ("", "Pod") => root.with("spec", pod_spec()).with(
            "status",
            conditions()
                .with("podIPs", PatchMeta::keyed("ip", PatchMeta::default()))
                .with("hostIPs", PatchMeta::keyed("ip", PatchMeta::default()))
                .with(
                    "resourceClaimStatuses",
                    PatchMeta::keyed("name", PatchMeta::default()).retain_keys(),
                ),
        ),
        ("", "Node") => root
            .with(
                "spec",
                PatchMeta::default().with("podCIDRs", PatchMeta::set()),
            )
            .with(
                "status",
                conditions().with("addresses", PatchMeta::keyed("type", PatchMeta::default())),
            ),
        ("", "Service") => root
            .with(
                "spec",
                PatchMeta::default().with("ports", PatchMeta::keyed("port", PatchMeta::default())),
            )
            .with("status", conditions()),
        ("", "Namespace") => root.with("status", conditions()),
        ("apps", "Deployment") => root
            .with(
                "spec",
                PatchMeta::default()
                    .with("template", pod_template())
                    .with("strategy", PatchMeta::default().retain_keys()),
            )
            .with("status", conditions()),
        ("apps", "ReplicaSet" | "DaemonSet" | "StatefulSet") => root
            .with(
                "spec",
                PatchMeta::default().with("template", pod_template()),
            )
            .with("status", conditions()),
        _ => root,
    }
}

/// Adds Kubernetes' `x-kubernetes-patch-strategy` and `x-kubernetes-patch-merge-key`
/// extensions to a published schema (a JSON value) wherever `meta` declares them.
pub fn annotate_schema(schema: &mut Value, meta: &PatchMeta) {
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, fm) in &meta.fields {
        let Some(prop) = props.get_mut(name) else {
            continue;
        };
        if let Some(s) = fm.strategy() {
            prop["x-kubernetes-patch-strategy"] = Value::String(s);
        }
        if let Some(k) = &fm.merge_key {
            prop["x-kubernetes-patch-merge-key"] = Value::String(k.clone());
        }
        match prop.get_mut("items") {
            Some(items) => annotate_schema(items, fm),
            None => annotate_schema(prop, fm),
        }
    }
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Applies strategic merge patch `patch` to `original` (both JSON objects in practice;
/// anything else is replaced by the patch, as in a merge patch).
///
/// # Errors
/// A malformed directive or a list element without its merge key.
pub fn apply(original: &Value, patch: &Value, meta: &PatchMeta) -> Result<Value> {
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => {
            merge_map(o.clone(), p.clone(), meta, "").map(Value::Object)
        }
        (_, p) => fresh(p.clone(), meta, ""),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A patch value applied where the original has nothing: directives are resolved
/// (`$patch: delete` elements dropped) and `null`s discarded.
fn fresh(v: Value, meta: &PatchMeta, path: &str) -> Result<Value> {
    match v {
        Value::Object(p) => merge_map(Map::new(), p, meta, path).map(Value::Object),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if let Value::Object(m) = &item
                    && let Some(d) = m.get(DIRECTIVE)
                {
                    check_list_directive(d, path)?;
                    continue;
                }
                out.push(fresh(item, meta, path)?);
            }
            Ok(Value::Array(out))
        }
        other => Ok(other),
    }
}

fn check_list_directive(d: &Value, path: &str) -> Result<()> {
    match d.as_str() {
        Some("delete" | "replace") => Ok(()),
        Some("merge") => Err(SmpError::BadListDirective {
            field: path.to_string(),
            directive: "merge".into(),
        }),
        _ => Err(SmpError::BadDirective(d.to_string())),
    }
}

fn string_list(v: Value, directive: &str, field: &str) -> Result<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(SmpError::NotAList {
            directive: directive.to_string(),
            field: field.to_string(),
        }),
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    meta: &PatchMeta,
    path: &str,
) -> Result<Map<String, Value>> {
    if let Some(d) = patch.remove(DIRECTIVE) {
        match d.as_str() {
            Some("replace") => return merge_map(Map::new(), patch, meta, path),
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => return Err(SmpError::BadDirective(d.to_string())),
        }
    }
    if let Some(keys) = patch.remove(RETAIN_KEYS) {
        let keys: Vec<String> = match keys {
            Value::Array(a) => a
                .into_iter()
                .map(|k| match k {
                    Value::String(s) => Ok(s),
                    _ => Err(SmpError::BadRetainKeys(path.to_string())),
                })
                .collect::<Result<_>>()?,
            _ => return Err(SmpError::BadRetainKeys(path.to_string())),
        };
        original.retain(|k, _| keys.contains(k));
    }
    let mut orders: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut deletions: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let directive_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with('$'))
        .cloned()
        .collect();
    for k in directive_keys {
        let v = patch.remove(&k).unwrap_or(Value::Null);
        if let Some(field) = k.strip_prefix(SET_ORDER) {
            orders.insert(field.to_string(), string_list(v, &k, path)?);
        } else if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE) {
            deletions.insert(field.to_string(), string_list(v, &k, path)?);
        } else {
            return Err(SmpError::UnknownDirective(k));
        }
    }
    for (field, values) in &deletions {
        if let Some(Value::Array(list)) = original.get_mut(field) {
            list.retain(|v| !values.contains(v));
        }
    }

    for (k, pv) in patch {
        let fm = meta.field(&k);
        let fpath = join(path, &k);
        if pv.is_null() {
            original.remove(&k);
            continue;
        }
        let merged = match (original.remove(&k), pv) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                Value::Object(merge_map(o, p, fm, &fpath)?)
            }
            (Some(Value::Array(o)), Value::Array(p)) if fm.merge => {
                Value::Array(merge_list(o, p, fm, orders.remove(&k), &fpath)?)
            }
            (_, pv) => fresh(pv, fm, &fpath)?,
        };
        original.insert(k, merged);
    }
    // Orders of lists the patch did not otherwise touch (reordering, or deletions only).
    for (k, order) in orders {
        if let Some(Value::Array(list)) = original.get_mut(&k) {
            let fm = meta.field(&k);
            let server = list.clone();
            *list = normalize_order(
                std::mem::take(list),
                &order,
                &server,
                fm.merge_key.as_deref(),
            );
        }
    }
    Ok(original)
}

/// The identity of a list element: its merge key's value, or itself for primitives.
fn identity<'a>(v: &'a Value, key: Option<&str>) -> Option<&'a Value> {
    match key {
        Some(k) => v.get(k),
        None => Some(v),
    }
}

fn position(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    let id = identity(item, key)?;
    list.iter().position(|x| identity(x, key) == Some(id))
}

fn merge_list(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    meta: &PatchMeta,
    order: Option<Vec<Value>>,
    path: &str,
) -> Result<Vec<Value>> {
    let key = meta.merge_key.as_deref();
    let server_order = original.clone();
    let Some(key) = key else {
        // A set of primitives: union, first occurrence wins.
        for v in &patch {
            if !original.contains(v) {
                original.push(v.clone());
            }
        }
        let patch_order = order.unwrap_or(patch);
        return Ok(normalize_order(original, &patch_order, &server_order, None));
    };
    let mut items = Vec::with_capacity(patch.len());
    let mut replace = false;
    for p in patch {
        let directive = p.get(DIRECTIVE).cloned();
        match directive {
            None => items.push(p),
            Some(d) => {
                check_list_directive(&d, path)?;
                if d == "replace" {
                    replace = true;
                    continue;
                }
                let id = p.get(key).ok_or_else(|| SmpError::MissingMergeKey {
                    field: path.to_string(),
                    key: key.to_string(),
                    element: p.to_string(),
                })?;
                original.retain(|o| o.get(key) != Some(id));
            }
        }
    }
    if replace {
        return items
            .into_iter()
            .map(|i| fresh(i, meta, path))
            .collect::<Result<_>>();
    }
    for p in &items {
        let Value::Object(pm) = p else {
            return Err(SmpError::MissingMergeKey {
                field: path.to_string(),
                key: key.to_string(),
                element: p.to_string(),
            });
        };
        let Some(id) = pm.get(key) else {
            return Err(SmpError::MissingMergeKey {
                field: path.to_string(),
                key: key.to_string(),
                element: p.to_string(),
            });
        };
        match original.iter().position(|o| o.get(key) == Some(id)) {
            Some(i) => {
                let merged = match std::mem::take(&mut original[i]) {
                    Value::Object(o) => Value::Object(merge_map(o, pm.clone(), meta, path)?),
                    _ => fresh(p.clone(), meta, path)?,
                };
                original[i] = merged;
            }
            None => original.push(fresh(p.clone(), meta, path)?),
        }
    }
    let patch_order = order.unwrap_or(items);
    Ok(normalize_order(
        original,
        &patch_order,
        &server_order,
        Some(key),
    ))
}

/// Kubernetes' `normalizeElementOrder`: the elements named by the patch (or its
/// `$setElementOrder`) in the patch's order, with the elements only the server has
/// inserted among them: a server-only element goes before a patch element only when
/// both are in the original list and it came first there. (So, as in Kubernetes, an
/// element new to the list goes before the server-only ones unless an order says
/// otherwise; kubectl always sends `$setElementOrder`.)
fn normalize_order(
    merged: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let (mut from_patch, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| position(patch_order, v, key).is_some());
    from_patch.sort_by_key(|v| position(patch_order, v, key));
    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut server_only = server_only.into_iter().peekable();
    let mut from_patch = from_patch.into_iter().peekable();
    loop {
        let take_server_only = match (server_only.peek(), from_patch.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (position(server_order, l, key), position(server_order, r, key)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_server_only {
            server_only.next()
        } else {
            from_patch.next()
        };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> PatchMeta {
        builtin_meta("apps", "Deployment")
    }

    fn mk_deploy(containers: Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"template": {"spec": {"containers": containers}}}})
    }

    fn containers(v: &Value) -> &Value {
        &v["spec"]["template"]["spec"]["containers"]
    }

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let orig = mk_deploy(json!([
            {"name": "app", "image": "web:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "sidecar", "image": "envoy:1"}
        ]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "web:2", "env": [{"name": "B", "value": "3"}]}
        ]}}}});
        let out = apply(&orig, &patch, &deployment()).unwrap();
        assert_eq!(
            containers(&out),
            &json!([
                {"name": "app", "image": "web:2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]},
                {"name": "sidecar", "image": "envoy:1"}
            ])
        );
    }

    #[test]
    fn lists_without_a_strategy_are_replaced_whole() {
        let orig = json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}});
        let patch = json!({"spec": {"tolerations": [{"key": "c"}]}});
        let meta = builtin_meta("", "Pod");
        assert_eq!(
            apply(&orig, &patch, &meta).unwrap(),
            json!({"spec": {"tolerations": [{"key": "c"}]}})
        );
    }

    #[test]
    fn patch_delete_removes_an_element_by_its_merge_key() {
        let orig = mk_deploy(json!([{"name": "app"}, {"name": "sidecar"}]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}});
        let out = apply(&orig, &patch, &deployment()).unwrap();
        assert_eq!(containers(&out), &json!([{"name": "app"}]));
    }

    #[test]
    fn patch_replace_replaces_a_list_or_a_map() {
        let orig = mk_deploy(json!([{"name": "app", "image": "a"}, {"name": "sidecar"}]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "new"}, {"$patch": "replace"}]}}}});
        let out = apply(&orig, &patch, &deployment()).unwrap();
        assert_eq!(containers(&out), &json!([{"name": "new"}]));
        let orig = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let patch = json!({"metadata": {"labels": {"c": "3", "$patch": "replace"}}});
        assert_eq!(
            apply(&orig, &patch, &deployment()).unwrap(),
            json!({"metadata": {"labels": {"c": "3"}}})
        );
        let patch = json!({"metadata": {"labels": {"$patch": "delete"}}});
        assert_eq!(
            apply(&orig, &patch, &deployment()).unwrap(),
            json!({"metadata": {"labels": {}}})
        );
    }

    #[test]
    fn set_element_order_orders_the_merged_list_keeping_server_only_elements() {
        // Kubernetes' example: the server added "d"; the patch reorders and adds "c".
        let orig = mk_deploy(json!([{"name": "a"}, {"name": "b"}, {"name": "d"}]));
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "c"}, {"name": "a"}],
            "containers": [{"name": "c", "image": "c"}]
        }}}});
        let out = apply(&orig, &patch, &deployment()).unwrap();
        let names: Vec<&str> = containers(&out)
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "c", "a", "d"]);
    }

    #[test]
    fn primitive_sets_union_and_delete_from_primitive_list_removes() {
        let meta = builtin_meta("", "Node");
        let orig = json!({"metadata": {"finalizers": ["a", "b"]}});
        let patch = json!({"metadata": {"finalizers": ["c", "a"]}});
        assert_eq!(
            apply(&orig, &patch, &meta).unwrap(),
            json!({"metadata": {"finalizers": ["c", "a", "b"]}}),
            "patch items in patch order; server-only b stays after a, which preceded it"
        );
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
        assert_eq!(
            apply(&orig, &patch, &meta).unwrap(),
            json!({"metadata": {"finalizers": ["b"]}})
        );
    }

    #[test]
    fn retain_keys_clears_the_other_members_of_a_union() {
        let orig = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        assert_eq!(
            apply(&orig, &patch, &deployment()).unwrap(),
            json!({"spec": {"strategy": {"type": "Recreate"}}})
        );
    }

    #[test]
    fn nulls_delete_and_conditions_merge_by_type() {
        let meta = builtin_meta("", "Pod");
        let orig = json!({"metadata": {"labels": {"a": "1"}}, "status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]}});
        let patch = json!({"metadata": {"labels": {"a": null}}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(
            apply(&orig, &patch, &meta).unwrap(),
            json!({"metadata": {"labels": {}}, "status": {"conditions": [
                {"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]}})
        );
    }

    #[test]
    fn malformed_directives_and_missing_merge_keys_are_errors() {
        let meta = deployment();
        let orig = mk_deploy(json!([{"name": "a"}]));
        for patch in [
            json!({"$patch": "explode"}),
            json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}}}),
            json!({"spec": {"$retainKeys": "type"}}),
            json!({"spec": {"$setElementOrder/x": 3}}),
            json!({"spec": {"$bogus": 1}}),
        ] {
            assert!(apply(&orig, &patch, &meta).is_err(), "{patch}");
        }
    }

    #[test]
    fn the_published_schema_carries_the_patch_extensions() {
        let mut schema = json!({"properties": {"spec": {"properties": {"template": {"properties": {"spec": {"properties": {
            "containers": {"type": "array", "items": {"properties": {"env": {"type": "array"}}}}}}}}}}}});
        annotate_schema(&mut schema, &deployment());
        let c = &schema["properties"]["spec"]["properties"]["template"]["properties"]["spec"]["properties"]
            ["containers"];
        assert_eq!(c["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(c["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(
            c["items"]["properties"]["env"]["x-kubernetes-patch-merge-key"],
            "name"
        );
    }

    fn arb_plain() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            proptest::collection::btree_map("[a-e]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    fn arb_containers() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        proptest::collection::btree_map(
            "[a-d]",
            (
                "[a-z]{1,3}",
                proptest::collection::btree_map("[A-C]", "[0-9]", 0..3),
            ),
            0..4,
        )
        .prop_map(|m| {
            Value::Array(
                m.into_iter()
                    .map(|(name, (image, env))| {
                        let env: Vec<Value> = env
                            .into_iter()
                            .map(|(n, v)| json!({"name": n, "value": v}))
                            .collect();
                        json!({"name": name, "image": image, "env": env})
                    })
                    .collect(),
            )
        })
    }

    proptest::proptest! {
        #[test]
        fn without_lists_or_directives_it_is_a_json_merge_patch(o in arb_plain(), p in arb_plain()) {
            let mut want = json!({"x": o.clone()});
            json_patch::merge(&mut want, &json!({"x": p.clone()}));
            let got = apply(&json!({"x": o}), &json!({"x": p}), &PatchMeta::default()).unwrap();
            proptest::prop_assert_eq!(got, want);
        }

        #[test]
        fn merging_containers_is_idempotent_and_keeps_every_name_once(o in arb_containers(), p in arb_containers()) {
            let meta = deployment();
            let patch = mk_deploy(p.clone());
            let once = apply(&mk_deploy(o.clone()), &patch, &meta).unwrap();
            let twice = apply(&once, &patch, &meta).unwrap();
            proptest::prop_assert_eq!(&once, &twice);
            let mut names: Vec<&str> = containers(&once).as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
            let n = names.len();
            names.sort();
            names.dedup();
            proptest::prop_assert_eq!(names.len(), n);
            let mut want: Vec<String> = o.as_array().unwrap().iter().chain(p.as_array().unwrap()).map(|c| c["name"].as_str().unwrap().to_string()).collect();
            want.sort();
            want.dedup();
            proptest::prop_assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
