//! Checking an object against a structural OpenAPI v3 schema, as the Kubernetes API
//! server does for custom resources.
//!
//! The schema is the `openAPIV3Schema` that `#[derive(CustomResource)]` generates from the
//! Rust type, so the Rust type, the published OpenAPI document and this check can never
//! disagree. [`check`] walks value and schema together and
//!
//! - reports type mismatches, missing required fields, values outside an `enum`, and
//!   length/range/size violations as [`FieldError`]s with the field's JSON path;
//! - *prunes* fields the schema does not know (Kubernetes' pruning) and `null`s of fields
//!   that are not `nullable`, returning the unknown paths so the caller can reject them
//!   instead (`fieldValidation=Strict`) or warn.
//!
//! `apiVersion`, `kind` and `metadata` at the root are the API server's business and are
//! skipped here.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

use crate::validation::{FieldError, FieldErrorKind};

/// What [`check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub errors: Vec<FieldError>,
    /// Paths of fields the schema does not declare; they were removed from the value.
    pub unknown_fields: Vec<String>,
}

/// Checks and prunes `value` (a whole object) against `schema` (its root schema).
pub fn check(value: &mut Value, schema: &JSONSchemaProps) -> Outcome {
    let mut out = Outcome::default();
    walk(value, schema, "", true, &mut out);
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 64 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(61).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

fn walk(value: &mut Value, schema: &JSONSchemaProps, path: &str, root: bool, out: &mut Outcome) {
    let int_or_string = schema.x_kubernetes_int_or_string == Some(true);
    let preserve = schema.x_kubernetes_preserve_unknown_fields == Some(true);
    let field = if path.is_empty() { "<root>" } else { path };

    if int_or_string {
        if !matches!(type_name(value), "integer" | "string") {
            out.errors.push(FieldError::new(
                field,
                FieldErrorKind::TypeInvalid,
                format!("must be an integer or a string, got {}", type_name(value)),
            ));
        }
        return;
    }

    if let Some(ty) = schema.type_.as_deref() {
        let actual = type_name(value);
        let ok = actual == ty || (ty == "number" && actual == "integer");
        if !ok {
            out.errors.push(FieldError::new(
                field,
                FieldErrorKind::TypeInvalid,
                format!("must be of type {ty}, got {actual}: {}", short(value)),
            ));
            return;
        }
    }

    if let Some(allowed) = &schema.enum_
        && !allowed.iter().any(|a| a.0 == *value)
    {
        let list: Vec<String> = allowed.iter().map(|a| a.0.to_string()).collect();
        out.errors.push(FieldError::new(
            field,
            FieldErrorKind::NotSupported,
            format!(
                "Unsupported value: {}: supported values: {}",
                short(value),
                list.join(", ")
            ),
        ));
    }

    match value {
        Value::String(s) => {
            let n = s.chars().count() as i64;
            if let Some(max) = schema.max_length.filter(|m| n > *m) {
                out.errors.push(FieldError::new(
                    field,
                    FieldErrorKind::TooLong,
                    format!("may not be longer than {max}"),
                ));
            }
            if let Some(min) = schema.min_length.filter(|m| n < *m) {
                out.errors.push(FieldError::invalid(
                    field,
                    format!("must be at least {min} characters"),
                ));
            }
        }
        Value::Number(num) => {
            let x = num.as_f64().unwrap_or(0.0);
            if let Some(max) = schema.maximum.filter(|m| x > *m) {
                out.errors.push(FieldError::invalid(
                    field,
                    format!("must be less than or equal to {max}"),
                ));
            }
            if let Some(min) = schema.minimum.filter(|m| x < *m) {
                out.errors.push(FieldError::invalid(
                    field,
                    format!("must be greater than or equal to {min}"),
                ));
            }
        }
        Value::Array(items) => {
            let n = items.len() as i64;
            if let Some(max) = schema.max_items.filter(|m| n > *m) {
                out.errors.push(FieldError::new(
                    field,
                    FieldErrorKind::TooLong,
                    format!("must have at most {max} items"),
                ));
            }
            if let Some(min) = schema.min_items.filter(|m| n < *m) {
                out.errors.push(FieldError::invalid(
                    field,
                    format!("must have at least {min} items"),
                ));
            }
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                for (i, v) in items.iter_mut().enumerate() {
                    walk(v, item, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        Value::Object(map) => {
            for req in schema.required.iter().flatten() {
                if map.get(req).is_none_or(Value::is_null) {
                    out.errors.push(FieldError::required(join(path, req)));
                }
            }
            let props = schema.properties.as_ref();
            let additional = match &schema.additional_properties {
                Some(JSONSchemaPropsOrBool::Schema(s)) => Some(&**s),
                _ => None,
            };
            let allow_any = preserve
                || matches!(
                    schema.additional_properties,
                    Some(JSONSchemaPropsOrBool::Bool(true))
                )
                || schema.x_kubernetes_embedded_resource == Some(true) && props.is_none();
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let child_path = join(path, &key);
                let child_schema = props.and_then(|p| p.get(&key)).or(additional);
                let Some(child_schema) = child_schema else {
                    if !allow_any {
                        map.remove(&key);
                        out.unknown_fields.push(child_path);
                    }
                    continue;
                };
                let child = map.get_mut(&key).expect("key taken from this map");
                if child.is_null() && child_schema.nullable != Some(true) {
                    map.remove(&key);
                    continue;
                }
                if !child.is_null() {
                    walk(child, child_schema, &child_path, false, out);
                }
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mk_schema(v: Value) -> JSONSchemaProps {
        serde_json::from_value(v).unwrap()
    }

    fn mk_cluster_like() -> JSONSchemaProps {
        mk_schema(json!({
            "type": "object",
            "properties": {
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["endpoint"],
                    "properties": {
                        "endpoint": {"type": "object", "properties": {"server": {"type": "string", "maxLength": 20}}},
                        "size": {"type": "integer", "minimum": 0},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "values": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "env": {"type": "object", "additionalProperties": {"type": "string"}},
                        "port": {"x-kubernetes-int-or-string": true}
                    }
                }
            }
        }))
    }

    #[test]
    fn valid_objects_pass_untouched() {
        let mut v = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"endpoint": {"server": "http://a"}, "size": 3, "mode": "a", "tags": ["t"],
                     "values": {"any": {"thing": 1}}, "env": {"k": "v"}, "port": "http"}});
        let before = v.clone();
        let out = check(&mut v, &mk_cluster_like());
        assert_eq!(out, Outcome::default());
        assert_eq!(v, before);
    }

    #[test]
    fn type_errors_name_the_field_path() {
        let mut v =
            json!({"spec": {"endpoint": {"server": 5}, "size": "three", "tags": ["ok", 1]}});
        let out = check(&mut v, &mk_cluster_like());
        let fields: Vec<&str> = out.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["spec.endpoint.server", "spec.size", "spec.tags[1]"]
        );
        assert!(
            out.errors
                .iter()
                .all(|e| e.kind == FieldErrorKind::TypeInvalid)
        );
    }

    #[test]
    fn missing_required_fields_and_bad_enums_are_reported() {
        let mut v = json!({"spec": {"mode": "c", "size": -1}});
        let out = check(&mut v, &mk_cluster_like());
        let kinds: Vec<(&str, FieldErrorKind)> = out
            .errors
            .iter()
            .map(|e| (e.field.as_str(), e.kind))
            .collect();
        assert!(kinds.contains(&("spec.endpoint", FieldErrorKind::Required)));
        assert!(kinds.contains(&("spec.mode", FieldErrorKind::NotSupported)));
        assert!(kinds.contains(&("spec.size", FieldErrorKind::Invalid)));
    }

    #[test]
    fn unknown_fields_are_pruned_and_reported_but_preserved_where_declared() {
        let mut v = json!({"spec": {"endpoint": {"server": "s", "extra": 1}, "bogus": true,
                                    "values": {"free": 1}}, "topLevel": 1});
        let out = check(&mut v, &mk_cluster_like());
        assert_eq!(
            out.unknown_fields,
            vec!["spec.bogus", "spec.endpoint.extra", "topLevel"]
        );
        assert_eq!(
            v,
            json!({"spec": {"endpoint": {"server": "s"}, "values": {"free": 1}}})
        );
    }

    #[test]
    fn nulls_of_non_nullable_fields_are_dropped() {
        let mut v = json!({"spec": {"endpoint": {"server": "s"}, "size": null}});
        let out = check(&mut v, &mk_cluster_like());
        assert!(out.errors.is_empty(), "{out:?}");
        assert_eq!(v, json!({"spec": {"endpoint": {"server": "s"}}}));
    }

    #[test]
    fn over_long_strings_are_too_long() {
        let mut v = json!({"spec": {"endpoint": {"server": "x".repeat(21)}}});
        let out = check(&mut v, &mk_cluster_like());
        assert_eq!(out.errors[0].kind, FieldErrorKind::TooLong);
    }
}
