//! Kubernetes' validation rules for object names and labels, and the field-level error
//! type every validator in shoal reports.
//!
//! A [`FieldError`] names the field by its JSON path (`metadata.labels`,
//! `spec.endpoint.server`) and carries one of Kubernetes' cause types, so the API edge can
//! turn a list of them into an `Invalid` `Status` whose `details.causes` kubectl prints.

use std::collections::BTreeMap;
use std::fmt;

/// The Kubernetes cause type of a field error (`metav1.CauseType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    TypeInvalid,
    TooLong,
    Forbidden,
    Unknown,
}

impl FieldErrorKind {
    /// The reason string Kubernetes uses in `Status.details.causes[].reason`.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::TypeInvalid => "FieldValueTypeInvalid",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Unknown => "FieldValueUnknown",
        }
    }
}

/// One problem with one field of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.endpoint.server`.
    pub field: String,
    pub kind: FieldErrorKind,
    /// Human-readable detail, e.g. `must be a URL with scheme http or https`.
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, kind: FieldErrorKind, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind,
            detail: detail.into(),
        }
    }

    pub fn required(field: impl Into<String>) -> Self {
        FieldError::new(field, FieldErrorKind::Required, "Required value")
    }

    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError::new(field, FieldErrorKind::Invalid, detail)
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const LABEL_VALUE_MAX: usize = 63;

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= DNS1123_LABEL_MAX
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Problems with `name` as a DNS-1123 subdomain (most object names); empty when valid.
pub fn dns1123_subdomain(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if name.is_empty() || !name.split('.').all(is_dns1123_label) {
        errs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
             characters, '-' or '.', and must start and end with an alphanumeric character \
             (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    errs
}

/// Problems with `name` as a DNS-1123 label (namespace names); empty when valid.
pub fn dns1123_label(name: &str) -> Vec<String> {
    if is_dns1123_label(name) {
        Vec::new()
    } else {
        vec![format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \
             '-', must start and end with an alphanumeric character and be at most \
             {DNS1123_LABEL_MAX} characters (e.g. 'my-name', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )]
    }
}

/// A label name or value character run: `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Problems with `key` as a label or annotation key (`[prefix/]name`); empty when valid.
pub fn qualified_name(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let mut errs = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(
                dns1123_subdomain(p)
                    .into_iter()
                    .map(|e| format!("prefix part {e}")),
            );
        }
    }
    if name.len() > DNS1123_LABEL_MAX {
        errs.push(format!(
            "name part must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_qualified_part(name) || name.contains('/') {
        errs.push(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must \
             start and end with an alphanumeric character"
                .to_string(),
        );
    }
    errs
}

/// Problems with `value` as a label value; empty when valid.
pub fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX {
        errs.push(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !value.is_empty() && !is_qualified_part(value) {
        errs.push(
            "a valid label must be an empty string or consist of alphanumeric characters, \
             '-', '_' or '.', and must start and end with an alphanumeric character"
                .to_string(),
        );
    }
    errs
}

/// Validates a label map at `path` (e.g. `metadata.labels`).
pub fn labels(path: &str, labels: &BTreeMap<String, String>) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (k, v) in labels {
        for e in qualified_name(k) {
            out.push(FieldError::invalid(path, format!("{k:?}: {e}")));
        }
        for e in label_value(v) {
            out.push(FieldError::invalid(
                format!("{path}.{k}"),
                format!("{v:?}: {e}"),
            ));
        }
    }
    out
}

/// Total size limit of all annotations of one object, as in Kubernetes.
pub const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Validates an annotation map at `path`.
pub fn annotations(path: &str, annotations: &BTreeMap<String, String>) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut total = 0;
    for (k, v) in annotations {
        total += k.len() + v.len();
        for e in qualified_name(k) {
            out.push(FieldError::invalid(path, format!("{k:?}: {e}")));
        }
    }
    if total > ANNOTATIONS_MAX_BYTES {
        out.push(FieldError::new(
            path,
            FieldErrorKind::TooLong,
            format!("may not be more than {ANNOTATIONS_MAX_BYTES} bytes"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subdomain_names_follow_rfc1123() {
        assert!(dns1123_subdomain("c-0042.prod").is_empty());
        assert!(!dns1123_subdomain("").is_empty());
        assert!(!dns1123_subdomain("Upper").is_empty());
        assert!(!dns1123_subdomain("-lead").is_empty());
        assert!(!dns1123_subdomain("trail-").is_empty());
        assert!(!dns1123_subdomain("a..b").is_empty());
        assert!(!dns1123_subdomain(&"a".repeat(254)).is_empty());
    }

    #[test]
    fn label_keys_may_have_a_dns_prefix() {
        assert!(qualified_name("shoal.io/env").is_empty());
        assert!(qualified_name("networkDomain").is_empty());
        assert!(!qualified_name("/env").is_empty());
        assert!(!qualified_name("a/b/c").is_empty());
        assert!(!qualified_name("-x").is_empty());
        assert!(!qualified_name(&"k".repeat(64)).is_empty());
    }

    #[test]
    fn label_values_may_be_empty_but_not_malformed() {
        assert!(label_value("").is_empty());
        assert!(label_value("prod_1.a-b").is_empty());
        assert!(!label_value("has space").is_empty());
        assert!(!label_value(&"v".repeat(64)).is_empty());
    }

    #[test]
    fn label_errors_name_the_offending_key() {
        let m = BTreeMap::from([("env".to_string(), "bad value".to_string())]);
        let errs = labels("metadata.labels", &m);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.labels.env");
    }

    proptest! {
        #[test]
        fn generated_dns_labels_are_valid(s in "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?") {
            prop_assert!(dns1123_label(&s).is_empty());
            prop_assert!(dns1123_subdomain(&s).is_empty());
        }

        #[test]
        fn names_with_forbidden_characters_are_rejected(
            pre in "[a-z]{1,5}", bad in "[A-Z_ /:]", post in "[a-z]{1,5}"
        ) {
            let name = format!("{pre}{bad}{post}");
            prop_assert!(!dns1123_subdomain(&name).is_empty());
        }
    }
}
