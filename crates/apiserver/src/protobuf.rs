//! Request bodies in Kubernetes' protobuf encoding, for the built-in kinds whose
//! kubectl generator commands send it (`kubectl create namespace|configmap|secret`).
//!
//! ```text
//! body = "k8s\0" ++ runtime.Unknown { typeMeta {apiVersion, kind}, raw, contentEncoding, contentType }
//!                                     raw = the object's own message (e.g. core/v1 Namespace)
//! ```
//!
//! The messages below declare only the fields a create or update carries, with the field
//! numbers of the published Kubernetes `.proto` definitions; protobuf skips the others.
//! Each supported kind converts to the same JSON object a JSON client would send, so
//! everything after decoding (admission, storage, responses) is shared. Responses are
//! always JSON, which kubectl accepts alongside protobuf.

use std::collections::BTreeMap;

use prost::Message;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::registry::ResourceDef;

/// The media type of a protobuf body.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The 4-byte prefix of every Kubernetes protobuf document.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    content_encoding: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Namespace {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<NamespaceSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct NamespaceSpec {
    #[prost(string, repeated, tag = "1")]
    finalizers: Vec<String>,
}

/// core/v1 ConfigMap (`kubectl create configmap`).
#[derive(Clone, PartialEq, Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    data: BTreeMap<String, String>,
    #[prost(btree_map = "string, bytes", tag = "3")]
    binary_data: BTreeMap<String, Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    immutable: Option<bool>,
}

/// core/v1 Secret (`kubectl create secret`).
#[derive(Clone, PartialEq, Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    data: BTreeMap<String, Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    type_: Option<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

/// Bytes as JSON carries them: base64.
fn base64_map(m: BTreeMap<String, Vec<u8>>) -> Value {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    Value::Object(
        m.into_iter()
            .map(|(k, v)| (k, Value::String(engine.encode(v))))
            .collect(),
    )
}

fn metadata_json(m: ObjectMeta) -> Value {
    let mut out = Map::new();
    let strings = [
        ("name", m.name),
        ("generateName", m.generate_name),
        ("namespace", m.namespace),
        ("resourceVersion", m.resource_version),
    ];
    for (k, v) in strings {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.insert(k.into(), json!(v));
        }
    }
    if !m.labels.is_empty() {
        out.insert("labels".into(), json!(m.labels));
    }
    if !m.annotations.is_empty() {
        out.insert("annotations".into(), json!(m.annotations));
    }
    if !m.finalizers.is_empty() {
        out.insert("finalizers".into(), json!(m.finalizers));
    }
    Value::Object(out)
}

/// Decodes a protobuf body for `def` into the JSON object a JSON client would send.
///
/// # Errors
/// `BadRequest` for malformed documents or a type that is not `def`'s;
/// `UnsupportedMediaType` for kinds shoal does not decode from protobuf.
pub fn decode(def: &ResourceDef, body: &[u8]) -> ApiResult<Value> {
    let bad = |why: String| ApiError::BadRequest(format!("the protobuf body is malformed: {why}"));
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("it does not start with the Kubernetes protobuf prefix".into()))?;
    let unknown = Unknown::decode(envelope).map_err(|e| bad(e.to_string()))?;
    if unknown
        .content_encoding
        .as_deref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(ApiError::UnsupportedMediaType(
            "encoded (e.g. compressed) protobuf bodies are not supported".into(),
        ));
    }
    let tm = unknown.type_meta.unwrap_or_default();
    let (api_version, kind) = (
        tm.api_version.unwrap_or_default(),
        tm.kind.unwrap_or_default(),
    );
    let raw = unknown.raw.unwrap_or_default();
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace") => {
            let ns = Namespace::decode(raw.as_slice()).map_err(|e| bad(e.to_string()))?;
            let mut obj = json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": metadata_json(ns.metadata.unwrap_or_default()),
            });
            if let Some(spec) = ns.spec.filter(|s| !s.finalizers.is_empty()) {
                obj["spec"] = json!({"finalizers": spec.finalizers});
            }
            Ok(obj)
        }
        ("", "ConfigMap") => {
            let cm = ConfigMap::decode(raw.as_slice()).map_err(|e| bad(e.to_string()))?;
            let mut obj = json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": metadata_json(cm.metadata.unwrap_or_default()),
            });
            if !cm.data.is_empty() {
                obj["data"] = json!(cm.data);
            }
            if !cm.binary_data.is_empty() {
                obj["binaryData"] = base64_map(cm.binary_data);
            }
            if let Some(i) = cm.immutable {
                obj["immutable"] = json!(i);
            }
            Ok(obj)
        }
        ("", "Secret") => {
            let secret = Secret::decode(raw.as_slice()).map_err(|e| bad(e.to_string()))?;
            let mut obj = json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": metadata_json(secret.metadata.unwrap_or_default()),
            });
            if !secret.data.is_empty() {
                obj["data"] = base64_map(secret.data);
            }
            if !secret.string_data.is_empty() {
                obj["stringData"] = json!(secret.string_data);
            }
            if let Some(t) = secret.type_.filter(|t| !t.is_empty()) {
                obj["type"] = json!(t);
            }
            if let Some(i) = secret.immutable {
                obj["immutable"] = json!(i);
            }
            Ok(obj)
        }
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "protobuf bodies are accepted for built-in Namespaces, ConfigMaps and Secrets only; send {} as application/json or application/yaml (e.g. kubectl create … --dry-run=client -o yaml | kubectl apply -f -)",
            def.kind
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn mk_body(name: &str) -> Vec<u8> {
        let ns = Namespace {
            metadata: Some(ObjectMeta {
                name: Some(name.into()),
                labels: BTreeMap::from([("team".to_string(), "a".to_string())]),
                ..Default::default()
            }),
            spec: None,
        };
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("Namespace".into()),
            }),
            raw: Some(ns.encode_to_vec()),
            content_encoding: None,
        };
        [MAGIC, &unknown.encode_to_vec()].concat()
    }

    #[test]
    fn a_protobuf_namespace_decodes_to_the_json_a_client_would_send() {
        let reg = Registry::shoal();
        let def = reg.find("", "v1", "namespaces").unwrap();
        let v = decode(def, &mk_body("team-b")).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "team-b", "labels": {"team": "a"}}})
        );
    }

    #[test]
    fn protobuf_configmaps_and_secrets_decode_with_bytes_as_base64() {
        let envelope = |kind: &str, raw: Vec<u8>| {
            let unknown = Unknown {
                type_meta: Some(TypeMeta {
                    api_version: Some("v1".into()),
                    kind: Some(kind.into()),
                }),
                raw: Some(raw),
                content_encoding: None,
            };
            [MAGIC, &unknown.encode_to_vec()].concat()
        };
        let meta = Some(ObjectMeta {
            name: Some("x".into()),
            ..Default::default()
        });
        let reg = Registry::member_cluster();
        let cm = ConfigMap {
            metadata: meta.clone(),
            data: BTreeMap::from([("a".to_string(), "b".to_string())]),
            binary_data: BTreeMap::new(),
            immutable: None,
        };
        let def = reg.find("", "v1", "configmaps").unwrap();
        assert_eq!(
            decode(def, &envelope("ConfigMap", cm.encode_to_vec())).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}})
        );
        let secret = Secret {
            metadata: meta,
            data: BTreeMap::from([("k".to_string(), b"hi".to_vec())]),
            type_: Some("Opaque".into()),
            string_data: BTreeMap::new(),
            immutable: Some(true),
        };
        let def = reg.find("", "v1", "secrets").unwrap();
        assert_eq!(
            decode(def, &envelope("Secret", secret.encode_to_vec())).unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"},
                   "data": {"k": "aGk="}, "type": "Opaque", "immutable": true})
        );
    }

    #[test]
    fn garbage_and_unsupported_kinds_are_4xx() {
        let reg = Registry::shoal();
        let ns = reg.find("", "v1", "namespaces").unwrap();
        assert!(matches!(
            decode(ns, b"not protobuf"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            decode(ns, b"k8s\0\xff\xff\xff"),
            Err(ApiError::BadRequest(_))
        ));
        let cl = reg.find("shoal.io", "v1alpha1", "clusters").unwrap();
        assert!(matches!(
            decode(cl, &mk_body("x")),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }
}
