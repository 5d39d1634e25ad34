//! Parameters and results: declared with a type, passed as name/value pairs.
//!
//! A value is a string, an array of strings or an object of strings, as in Tekton. The
//! wire form is plain JSON (`"x"`, `["a", "b"]`, `{"k": "v"}`); numbers and booleans are
//! accepted and kept as their string form, because YAML users write `value: 3`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::validation::FieldError;

/// The type of a parameter or result.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    #[default]
    String,
    Array,
    Object,
}

impl ParamType {
    fn is_string(&self) -> bool {
        *self == ParamType::String
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::String => "string",
            ParamType::Array => "array",
            ParamType::Object => "object",
        })
    }
}

/// A parameter declaration (of a Task or a Pipeline).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParamSpec {
    pub name: String,
    /// `string` (the default), `array` or `object`.
    #[serde(default, rename = "type", skip_serializing_if = "ParamType::is_string")]
    pub type_: ParamType,
    /// The value used when none is passed; without one the parameter is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ParamValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A parameter passed by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Param {
    pub name: String,
    pub value: ParamValue,
}

impl Param {
    pub fn new(name: impl Into<String>, value: impl Into<ParamValue>) -> Self {
        Param {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// The value of a parameter or result: a string, an array of strings or an object of
/// strings.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(untagged)]
pub enum ParamValue {
    String(String),
    Array(Vec<String>),
    Object(BTreeMap<String, String>),
}

impl ParamValue {
    pub fn type_(&self) -> ParamType {
        match self {
            ParamValue::String(_) => ParamType::String,
            ParamValue::Array(_) => ParamType::Array,
            ParamValue::Object(_) => ParamType::Object,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            ParamValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// Converts plain JSON, turning numbers and booleans into their string form.
    ///
    /// # Errors
    /// A message when the value is null or nests arrays/objects deeper than one level.
    pub fn from_json(v: Value) -> Result<Self, String> {
        fn scalar(v: Value) -> Result<String, String> {
            match v {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(format!(
                    "array items and object values must be strings, got {other}"
                )),
            }
        }
        match v {
            Value::Array(items) => items
                .into_iter()
                .map(scalar)
                .collect::<Result<_, _>>()
                .map(ParamValue::Array),
            Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| scalar(v).map(|v| (k, v)))
                .collect::<Result<_, _>>()
                .map(ParamValue::Object),
            Value::Null => Err("a value must be a string, an array or an object".into()),
            scalar_value => scalar(scalar_value).map(ParamValue::String),
        }
    }
}

impl From<&str> for ParamValue {
    fn from(s: &str) -> Self {
        ParamValue::String(s.to_string())
    }
}

impl From<String> for ParamValue {
    fn from(s: String) -> Self {
        ParamValue::String(s)
    }
}

impl<S: Into<String>> From<Vec<S>> for ParamValue {
    fn from(v: Vec<S>) -> Self {
        ParamValue::Array(v.into_iter().map(Into::into).collect())
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::String(s) => f.write_str(s),
            other => write!(
                f,
                "{}",
                serde_json::to_string(other).map_err(|_| fmt::Error)?
            ),
        }
    }
}

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ParamValue::from_json(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Kubernetes structural schemas cannot say "string or array or object"; Tekton publishes
/// such values as `x-kubernetes-preserve-unknown-fields`, and so does shoal. The shape is
/// checked when the value is deserialized.
impl JsonSchema for ParamValue {
    fn schema_name() -> Cow<'static, str> {
        "ParamValue".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "a string, an array of strings or an object of strings",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

/// Whether `name` may name a parameter or a result: a letter or `_`, then letters,
/// digits, `_` or `-` (Tekton's rule without the dotted names that need bracket syntax).
pub(crate) fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) const PARAM_NAME_RULE: &str = "must start with a letter or '_' and contain only \
     letters, digits, '_' or '-'";

/// Checks a list of parameter declarations at `path` (e.g. `spec.params`): names valid
/// and unique, defaults of the declared type.
pub(crate) fn validate_specs(path: &str, specs: &[ParamSpec]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen = BTreeMap::new();
    for (i, p) in specs.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if !is_param_name(&p.name) {
            errs.push(FieldError::invalid(
                format!("{at}.name"),
                format!("{:?}: {PARAM_NAME_RULE}", p.name),
            ));
        }
        if let Some(first) = seen.insert(p.name.as_str(), i) {
            errs.push(FieldError::invalid(
                format!("{at}.name"),
                format!("{:?}: duplicate name (also {path}[{first}])", p.name),
            ));
        }
        if let Some(d) = &p.default
            && d.type_() != p.type_
        {
            errs.push(FieldError::invalid(
                format!("{at}.default"),
                format!(
                    "must be of type {} like the parameter, got {}",
                    p.type_,
                    d.type_()
                ),
            ));
        }
    }
    errs
}

/// Checks that the names of passed parameters at `path` are valid and unique.
pub(crate) fn validate_passed(path: &str, params: &[Param]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen = BTreeMap::new();
    for (i, p) in params.iter().enumerate() {
        if !is_param_name(&p.name) {
            errs.push(FieldError::invalid(
                format!("{path}[{i}].name"),
                format!("{:?}: {PARAM_NAME_RULE}", p.name),
            ));
        }
        if let Some(first) = seen.insert(p.name.as_str(), i) {
            errs.push(FieldError::invalid(
                format!("{path}[{i}].name"),
                format!("{:?}: duplicate name (also {path}[{first}])", p.name),
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_deserialize_from_strings_arrays_objects_and_scalars() {
        let v: ParamValue = serde_json::from_value(json!("x")).unwrap();
        assert_eq!(v, ParamValue::from("x"));
        let v: ParamValue = serde_json::from_value(json!(["a", 1, true])).unwrap();
        assert_eq!(v, ParamValue::from(vec!["a", "1", "true"]));
        let v: ParamValue = serde_json::from_value(json!({"k": "v"})).unwrap();
        assert_eq!(
            v,
            ParamValue::Object(BTreeMap::from([("k".into(), "v".into())]))
        );
        let v: ParamValue = serde_json::from_value(json!(3)).unwrap();
        assert_eq!(v, ParamValue::from("3"));
        assert!(serde_json::from_value::<ParamValue>(json!([["nested"]])).is_err());
        assert!(serde_json::from_value::<ParamValue>(json!(null)).is_err());
    }

    #[test]
    fn values_serialize_as_plain_json() {
        assert_eq!(
            serde_json::to_value(ParamValue::from(vec!["a"])).unwrap(),
            json!(["a"])
        );
        assert_eq!(
            serde_json::to_value(ParamValue::from("s")).unwrap(),
            json!("s")
        );
    }

    #[test]
    fn param_specs_reject_bad_names_duplicates_and_mistyped_defaults() {
        let specs = vec![
            ParamSpec {
                name: "ok".into(),
                type_: ParamType::Array,
                default: Some(ParamValue::from("not an array")),
                description: None,
            },
            ParamSpec {
                name: "ok".into(),
                type_: ParamType::String,
                default: None,
                description: None,
            },
            ParamSpec {
                name: "1bad".into(),
                type_: ParamType::String,
                default: None,
                description: None,
            },
        ];
        let fields: Vec<String> = validate_specs("spec.params", &specs)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.params[0].default",
                "spec.params[1].name",
                "spec.params[2].name"
            ]
        );
    }
}
