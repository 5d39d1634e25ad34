//! Objects as the API server handles them: JSON values with Kubernetes metadata rules.
//!
//! The server stores every object as JSON *without* `metadata.resourceVersion`: the
//! resourceVersion of an object is the store's `mod_revision` of its key, injected on
//! every read. Everything else the server owns in `metadata` (`uid`,
//! `creationTimestamp`, `generation`, `deletionTimestamp`) is set here, and user input
//! for those fields is ignored, as in Kubernetes. `managedFields` is kept by
//! [`crate::apply`]; client input for it is ignored too (Kubernetes would accept it).

use std::collections::BTreeMap;

use bytes::Bytes;
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use shoal_core::{FieldError, FieldErrorKind, schema, validation};
use shoal_store::KeyValue;

use crate::error::{ApiError, ApiResult, Target};
use crate::registry::ResourceDef;

/// Metadata fields an object may carry; anything else is an unknown field.
const METADATA_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
];

/// How unknown fields are treated (`?fieldValidation=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in a `Warning` header (the server default).
    Warn,
    /// Reject the request.
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter.
    ///
    /// # Errors
    /// `BadRequest` for values other than Ignore, Warn and Strict.
    pub fn parse(v: Option<&str>) -> ApiResult<Self> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::BadRequest(format!(
                "fieldValidation parameter unsupported: {other:?}, valid values are Ignore, Warn and Strict"
            ))),
        }
    }
}

/// Formats a timestamp the way Kubernetes does (RFC 3339, whole seconds, UTC).
pub fn rfc3339(t: Timestamp) -> String {
    t.round(jiff::Unit::Second)
        .unwrap_or(t)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Parses a request body as JSON or YAML, by content type.
///
/// # Errors
/// `UnsupportedMediaType` for other types, `BadRequest` for malformed documents.
pub fn decode(content_type: &str, body: &Bytes) -> ApiResult<Value> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let value: Value = match mime {
        "application/json" | "" => serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("the body of the request is not valid JSON: {e}"))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(body).map_err(|_| {
                ApiError::BadRequest("the body of the request is not valid UTF-8".into())
            })?;
            serde_saphyr::from_str(text).map_err(|e| {
                ApiError::BadRequest(format!("the body of the request is not valid YAML: {e}"))
            })?
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: application/json, application/yaml"
            )));
        }
    };
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the body of the request must be a JSON object".into(),
        ));
    }
    Ok(value)
}

/// Turns a stored key-value into the object clients see (resourceVersion injected).
///
/// # Errors
/// `Internal` if the stored bytes are not a JSON object (corruption).
pub fn from_kv(kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::Internal(format!("stored object {:?} is corrupt: {e}", kv.key)))?;
    set_resource_version(&mut v, kv.mod_revision);
    Ok(v)
}

pub fn set_resource_version(v: &mut Value, rev: i64) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rev.to_string()));
    }
}

/// Serializes an object for storage (without resourceVersion).
pub fn to_bytes(v: &Value) -> Bytes {
    Encoded::new(v).bytes
}

/// An object serialized once, for the store and for the response alike.
///
/// ```text
///  stored:   {"apiVersion":…,"kind":…,"metadata":{"creationTimestamp":…,"name":…},"spec":…}
///                                                 ▲ meta_at
///  response: {"apiVersion":…,"kind":…,"metadata":{"resourceVersion":"42","creationTimestamp":…
/// ```
///
/// The store keeps an object without `metadata.resourceVersion`: it is the key's
/// mod_revision, known only once the write is done. Rather than serializing the object a
/// second time for the response, the response is the stored bytes with the
/// resourceVersion spliced in where metadata's members start (one copy, no encoding).
#[derive(Clone, Debug)]
pub struct Encoded {
    /// What the store keeps: the same bytes `serde_json::to_vec` gives for the object
    /// without resourceVersion.
    pub bytes: Bytes,
    /// Where metadata's members start, and whether there is any.
    meta_at: Option<(usize, bool)>,
}

impl Encoded {
    /// Serializes `v`, leaving out `metadata.resourceVersion`.
    pub fn new(v: &Value) -> Self {
        fn write<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
            serde_json::to_writer(&mut *out, v).expect("a JSON value serializes");
        }
        let Some(obj) = v.as_object() else {
            let mut out = Vec::new();
            write(&mut out, v);
            return Encoded {
                bytes: out.into(),
                meta_at: None,
            };
        };
        let mut out = Vec::with_capacity(1024);
        let mut meta_at = None;
        out.push(b'{');
        for (i, (k, val)) in obj.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write(&mut out, k);
            out.push(b':');
            match (k.as_str(), val) {
                ("metadata", Value::Object(m)) => {
                    out.push(b'{');
                    let at = out.len();
                    let mut members = 0;
                    for (mk, mv) in m.iter().filter(|(mk, _)| *mk != "resourceVersion") {
                        if members > 0 {
                            out.push(b',');
                        }
                        write(&mut out, mk);
                        out.push(b':');
                        write(&mut out, mv);
                        members += 1;
                    }
                    out.push(b'}');
                    meta_at = Some((at, members > 0));
                }
                _ => write(&mut out, val),
            }
        }
        out.push(b'}');
        Encoded {
            bytes: out.into(),
            meta_at,
        }
    }

    /// The object as clients see it at revision `rev`: the stored bytes with
    /// `metadata.resourceVersion` set (the stored bytes alone for an object without
    /// metadata).
    pub fn with_resource_version(&self, rev: i64) -> Bytes {
        let Some((at, more)) = self.meta_at else {
            return self.bytes.clone();
        };
        let field = format!(
            "\"resourceVersion\":\"{rev}\"{}",
            if more { "," } else { "" }
        );
        let mut out = Vec::with_capacity(self.bytes.len() + field.len());
        out.extend_from_slice(&self.bytes[..at]);
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(&self.bytes[at..]);
        out.into()
    }
}

pub fn meta(v: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    v.get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

pub fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

pub fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    meta(v).get(field).and_then(Value::as_str)
}

pub fn name(v: &Value) -> &str {
    meta_str(v, "name").unwrap_or("")
}

pub fn labels(v: &Value) -> BTreeMap<String, String> {
    string_map(meta(v).get("labels"))
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn finalizers(v: &Value) -> Vec<String> {
    meta(v)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The parts of an object that `generation` tracks: everything but metadata and status.
pub fn spec_part(v: &Value) -> Map<String, Value> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// What a request body is, for the rules on its `apiVersion` and `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// The object of a create (POST) or an update (PUT). kube-apiserver decodes it with
    /// the request path's group, version and kind as defaults: a built-in kind may leave
    /// `apiVersion` and `kind` out (both are filled in); a custom resource is decoded as
    /// unstructured JSON, which must name its `kind` and whose `apiVersion` must then
    /// match the path.
    Object,
    /// A server-side apply configuration: it must name both, for every kind
    /// (kube-apiserver's field manager answers "invalid object type" otherwise).
    ApplyConfiguration,
}

/// Checks `apiVersion` and `kind` of a request body against the resource, filling them
/// in from the path where kube-apiserver does (see [`Body`]).
///
/// # Errors
/// `BadRequest` naming what is missing or mismatched.
pub fn check_type_meta(def: &ResourceDef, v: &mut Value, body: Body) -> ApiResult<()> {
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "the body of the request must be a JSON object".into(),
        ));
    }
    let want_av = def.api_version();
    let fill = body == Body::Object && def.builtin;
    let kind = match v.get("kind").and_then(Value::as_str).unwrap_or("") {
        "" if fill => def.kind.as_str(),
        "" => {
            return Err(ApiError::BadRequest(format!(
                "Object 'Kind' is missing in the request body: kind is required (expected {:?})",
                def.kind
            )));
        }
        kind => kind,
    };
    if kind != def.kind {
        return Err(ApiError::BadRequest(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            def.kind
        )));
    }
    match v.get("apiVersion").and_then(Value::as_str).unwrap_or("") {
        "" if fill => {}
        "" => {
            return Err(ApiError::BadRequest(format!(
                "Object 'apiVersion' is missing in the request body (kind {kind:?}): the API version in the data () does not match the expected API version ({want_av})"
            )));
        }
        av if av != want_av => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
        _ => {}
    }
    if fill && let Some(obj) = v.as_object_mut() {
        obj.insert("apiVersion".into(), Value::String(want_av));
        obj.insert("kind".into(), Value::String(def.kind.clone()));
    }
    if v.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ApiError::BadRequest("metadata must be an object".into()));
    }
    Ok(())
}

/// Validates and prunes an object about to be written. Returns warnings (unknown fields
/// under `Warn`).
///
/// # Errors
/// `BadRequest` for unknown fields under `Strict`; `Invalid` with every field cause.
pub fn admit(def: &ResourceDef, v: &mut Value, fv: FieldValidation) -> ApiResult<Vec<String>> {
    if let Some(defaulter) = &def.defaulter {
        defaulter(v);
    }
    let mut unknown = Vec::new();
    let mut causes = Vec::new();
    let meta = meta_mut(v);
    // Unknown metadata is rare: the keys are copied only when there is some.
    if meta.keys().any(|k| !METADATA_FIELDS.contains(&k.as_str())) {
        for k in meta.keys().cloned().collect::<Vec<_>>() {
            if !METADATA_FIELDS.contains(&k.as_str()) {
                meta.remove(&k);
                unknown.push(format!("metadata.{k}"));
            }
        }
    }
    // managedFields are the server's: what a client sends is dropped here, and rest.rs
    // records the write's own after admission (see crate::apply).
    meta.remove("managedFields");
    meta.remove("selfLink");
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        causes.push(FieldError::new(
            "metadata.name",
            FieldErrorKind::Required,
            "name or generateName is required",
        ));
    } else {
        let errs = if def.kind == "Namespace" {
            validation::dns1123_label(&name)
        } else {
            validation::dns1123_subdomain(&name)
        };
        causes.extend(
            errs.into_iter()
                .map(|e| FieldError::invalid("metadata.name", format!("{name:?}: {e}"))),
        );
    }
    for (field, check) in [("labels", true), ("annotations", false)] {
        match meta.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) if m.values().all(Value::is_string) => {
                let map: BTreeMap<String, String> = m
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let path = format!("metadata.{field}");
                causes.extend(if check {
                    validation::labels(&path, &map)
                } else {
                    validation::annotations(&path, &map)
                });
            }
            Some(_) => causes.push(FieldError::new(
                format!("metadata.{field}"),
                FieldErrorKind::TypeInvalid,
                "must be a map of string keys to string values",
            )),
        }
    }
    match meta.get("finalizers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, f) in a.iter().enumerate() {
                match f.as_str() {
                    Some(s) if validation::qualified_name(s).is_empty() => {}
                    _ => causes.push(FieldError::invalid(
                        format!("metadata.finalizers[{i}]"),
                        format!("{f}: must be a qualified name like 'example.com/cleanup'"),
                    )),
                }
            }
        }
        Some(_) => causes.push(FieldError::new(
            "metadata.finalizers",
            FieldErrorKind::TypeInvalid,
            "must be a list of strings",
        )),
    }

    let outcome = schema::check(v, &def.schema);
    unknown.extend(outcome.unknown_fields);
    causes.extend(outcome.errors);
    if !unknown.is_empty() && fv == FieldValidation::Strict {
        let list: Vec<String> = unknown
            .iter()
            .map(|u| format!("unknown field {u:?}"))
            .collect();
        return Err(ApiError::BadRequest(format!(
            "strict decoding error: {}",
            list.join(", ")
        )));
    }
    if causes.is_empty()
        && let Some(validator) = &def.validator
    {
        causes.extend(validator(v));
    }
    if !causes.is_empty() {
        return Err(ApiError::Invalid {
            target: target(def, &name),
            causes,
        });
    }
    Ok(match fv {
        FieldValidation::Warn => unknown
            .iter()
            .map(|u| format!("unknown field {u:?}"))
            .collect(),
        _ => Vec::new(),
    })
}

/// The error target for an object of `def` named `name`.
pub fn target(def: &ResourceDef, name: &str) -> Target {
    Target {
        group: def.group.clone(),
        plural: def.plural.clone(),
        kind: def.kind.clone(),
        name: name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn mk_cluster(extra: Value) -> Value {
        let mut v = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "c-1", "labels": {"env": "prod"}},
            "spec": {"endpoint": {"server": "https://10.0.0.1:6443"}}});
        json_patch::merge(&mut v, &extra);
        v
    }

    /// Built once: generating the kinds' schemas dominates these tests otherwise.
    static REGISTRY: std::sync::LazyLock<Registry> = std::sync::LazyLock::new(Registry::shoal);

    fn def() -> ResourceDef {
        (**REGISTRY.find("shoal.io", "v1alpha1", "clusters").unwrap()).clone()
    }

    #[test]
    fn a_valid_cluster_is_admitted_without_warnings() {
        let mut v = mk_cluster(json!({}));
        assert_eq!(
            admit(&def(), &mut v, FieldValidation::Strict).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unknown_fields_are_rejected_under_strict_and_warned_otherwise() {
        let mut v = mk_cluster(json!({"spec": {"bogus": 1}, "metadata": {"colour": "red"}}));
        let err = admit(&def(), &mut v.clone(), FieldValidation::Strict).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("spec.bogus") && msg.contains("metadata.colour"),
            "{msg}"
        );
        let warnings = admit(&def(), &mut v, FieldValidation::Warn).unwrap();
        assert_eq!(warnings.len(), 2);
        assert!(v["spec"].get("bogus").is_none());
    }

    #[test]
    fn invalid_names_labels_and_specs_are_all_reported() {
        let mut v = mk_cluster(
            json!({"metadata": {"name": "Bad_Name", "labels": {"env": "no spaces"}},
                                       "spec": {"endpoint": {"server": 42}}}),
        );
        let ApiError::Invalid { causes, .. } =
            admit(&def(), &mut v, FieldValidation::Warn).unwrap_err()
        else {
            panic!("expected Invalid");
        };
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"metadata.name"), "{fields:?}");
        assert!(fields.contains(&"metadata.labels.env"), "{fields:?}");
        assert!(fields.contains(&"spec.endpoint.server"), "{fields:?}");
    }

    #[test]
    fn semantic_validation_runs_after_the_schema() {
        let mut v = mk_cluster(json!({"spec": {"endpoint": {"server": "not-a-url"}}}));
        let ApiError::Invalid { causes, .. } =
            admit(&def(), &mut v, FieldValidation::Warn).unwrap_err()
        else {
            panic!("expected Invalid");
        };
        assert_eq!(causes[0].field, "spec.endpoint.server");
    }

    #[test]
    fn mismatched_api_version_is_a_bad_request() {
        let mut v = mk_cluster(json!({"apiVersion": "shoal.io/v2"}));
        let err = check_type_meta(&def(), &mut v, Body::Object).unwrap_err();
        assert!(matches!(err, ApiError::BadRequest(_)), "{err}");
    }

    fn secret_def() -> ResourceDef {
        (**REGISTRY.find("", "v1", "secrets").unwrap()).clone()
    }

    #[test]
    fn a_builtin_body_without_api_version_and_kind_takes_both_from_the_path() {
        for mut v in [
            json!({"metadata": {"name": "s"}}),
            json!({"kind": "Secret", "metadata": {"name": "s"}}),
            json!({"apiVersion": "v1", "metadata": {"name": "s"}}),
        ] {
            check_type_meta(&secret_def(), &mut v, Body::Object).unwrap();
            assert_eq!(
                (&v["apiVersion"], &v["kind"]),
                (&json!("v1"), &json!("Secret"))
            );
        }
    }

    #[test]
    fn a_wrong_kind_or_api_version_is_a_bad_request_naming_it_even_beside_a_missing_one() {
        for (mut v, field) in [
            (json!({"kind": "ConfigMap", "metadata": {}}), "kind"),
            (
                json!({"apiVersion": "apps/v1", "metadata": {}}),
                "API version",
            ),
            (json!({"apiVersion": "v2", "kind": "Secret"}), "API version"),
        ] {
            let err = check_type_meta(&secret_def(), &mut v, Body::Object).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{err}");
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn a_custom_resource_body_must_name_its_kind_and_api_version() {
        let mut v = mk_cluster(json!({}));
        v.as_object_mut().unwrap().remove("kind");
        let err = check_type_meta(&def(), &mut v, Body::Object).unwrap_err();
        assert!(err.to_string().contains("'Kind' is missing"), "{err}");
        let mut v = mk_cluster(json!({}));
        v.as_object_mut().unwrap().remove("apiVersion");
        let err = check_type_meta(&def(), &mut v, Body::Object).unwrap_err();
        assert!(
            matches!(&err, ApiError::BadRequest(m) if m.contains("'apiVersion' is missing")),
            "{err}"
        );
        let mut v = mk_cluster(json!({}));
        check_type_meta(&def(), &mut v, Body::Object).unwrap();
    }

    #[test]
    fn an_apply_configuration_must_name_both_even_for_a_builtin_kind() {
        let mut v = json!({"metadata": {"name": "s"}});
        let err = check_type_meta(&secret_def(), &mut v, Body::ApplyConfiguration).unwrap_err();
        assert!(err.to_string().contains("'Kind' is missing"), "{err}");
        let mut v = json!({"kind": "Secret", "metadata": {"name": "s"}});
        let err = check_type_meta(&secret_def(), &mut v, Body::ApplyConfiguration).unwrap_err();
        assert!(err.to_string().contains("'apiVersion' is missing"), "{err}");
    }

    #[test]
    fn a_body_that_is_not_an_object_is_a_bad_request() {
        let err = check_type_meta(&secret_def(), &mut json!([1]), Body::Object).unwrap_err();
        assert!(matches!(err, ApiError::BadRequest(_)), "{err}");
    }

    #[test]
    fn an_encoded_object_is_stored_without_and_answered_with_its_resource_version() {
        for mut v in [
            mk_cluster(json!({"metadata": {"resourceVersion": "7", "uid": "u-1"}})),
            json!({"kind": "X", "metadata": {}}),
            json!({"kind": "X", "metadata": {"resourceVersion": "3"}}),
            json!({"kind": "X"}),
        ] {
            let e = Encoded::new(&v);
            let has_meta = v.get("metadata").is_some();
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            assert_eq!(
                e.bytes,
                serde_json::to_vec(&v).unwrap(),
                "stored bytes of {v}"
            );
            let answered: Value = serde_json::from_slice(&e.with_resource_version(42)).unwrap();
            if has_meta {
                set_resource_version(&mut v, 42);
            }
            assert_eq!(answered, v);
        }
    }

    #[test]
    fn yaml_and_json_bodies_decode_and_others_are_415() {
        let y = Bytes::from_static(b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n");
        assert_eq!(
            decode("application/yaml", &y).unwrap()["metadata"]["name"],
            "a"
        );
        assert!(matches!(
            decode("application/json", &Bytes::from_static(b"{")),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            decode("text/plain", &y),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            decode("application/json", &Bytes::from_static(b"[1]")),
            Err(ApiError::BadRequest(_))
        ));
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-zA-Z0-9_./:-]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("metadata".to_string()),
                        Just("spec".to_string()),
                        Just("name".to_string()),
                        Just("labels".to_string()),
                        Just("endpoint".to_string()),
                        Just("server".to_string()),
                        Just("selector".to_string()),
                        Just("finalizers".to_string()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..5,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256), yaml in proptest::prelude::any::<bool>()) {
            let ctype = if yaml { "application/yaml" } else { "application/json" };
            let _ = decode(ctype, &Bytes::from(body));
        }

        #[test]
        fn admitting_arbitrary_objects_never_panics_and_only_fails_with_4xx(v in arb_json()) {
            let mut v = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Cluster", "metadata": v.clone(), "spec": v});
            for def in REGISTRY.all() {
                if let Err(e) = admit(def, &mut v.clone(), FieldValidation::Strict) {
                    proptest::prop_assert!(e.code_reason().0.is_client_error(), "{e}");
                }
            }
            let _ = check_type_meta(&def(), &mut v, Body::Object);
        }
    }
}
