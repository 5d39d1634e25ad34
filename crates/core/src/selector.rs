//! Label and field selectors, as `kubectl get -l …` and `--field-selector …` send them.
//!
//! ```text
//! env=prod,tier in (a,b),!legacy,region!=eu-1,zone     → LabelSelector(Vec<Requirement>)
//! metadata.name=c-0042,metadata.namespace!=kube-system → FieldSelector(Vec<(field, op, value)>)
//! ```
//!
//! Parsing is strict and errors name what is wrong, so the API edge can answer a
//! `BadRequest` that tells the user which part of the selector it did not understand.
//! A selector is a conjunction: an object matches when every requirement holds.

use std::collections::BTreeMap;
use std::fmt;

use crate::validation;

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    Exists(String),
    NotExists(String),
    /// `key=value`, `key==value`, `key in (…)`.
    In(String, Vec<String>),
    /// `key!=value`, `key notin (…)`: also true when the key is absent.
    NotIn(String, Vec<String>),
    /// `key>n` / `key<n`: the label must exist and parse as an integer.
    Gt(String, i64),
    Lt(String, i64),
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Gt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Requirement::Lt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// Why a selector could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

impl LabelSelector {
    /// Parses the query-string form (`env=prod,tier in (a,b)`).
    ///
    /// # Errors
    /// A [`SelectorError`] naming the requirement that is malformed.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_top_level(s)? {
            let part = part.trim();
            if part.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(SelectorError(format!("empty requirement in {s:?}")));
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Builds a selector from a Kubernetes `LabelSelector` object (matchLabels +
    /// matchExpressions).
    ///
    /// # Errors
    /// A [`SelectorError`] for an unknown operator or a malformed key.
    pub fn from_k8s(
        sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            check_key(k)?;
            reqs.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for e in sel.match_expressions.iter().flatten() {
            check_key(&e.key)?;
            let values = e.values.clone().unwrap_or_default();
            reqs.push(match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::NotExists(e.key.clone()),
                op => {
                    return Err(SelectorError(format!(
                        "{op:?} is not a valid label selector operator"
                    )));
                }
            });
        }
        Ok(LabelSelector(reqs))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
                Requirement::In(k, v) if v.len() == 1 => format!("{k}={}", v[0]),
                Requirement::In(k, v) => format!("{k} in ({})", v.join(",")),
                Requirement::NotIn(k, v) if v.len() == 1 => format!("{k}!={}", v[0]),
                Requirement::NotIn(k, v) => format!("{k} notin ({})", v.join(",")),
                Requirement::Gt(k, n) => format!("{k}>{n}"),
                Requirement::Lt(k, n) => format!("{k}<{n}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError(format!("unbalanced ')' in {s:?}")));
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!("unbalanced '(' in {s:?}")));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn check_key(k: &str) -> Result<(), SelectorError> {
    match validation::qualified_name(k).first() {
        None => Ok(()),
        Some(e) => Err(SelectorError(format!("invalid label key {k:?}: {e}"))),
    }
}

fn check_value(v: &str) -> Result<(), SelectorError> {
    match validation::label_value(v).first() {
        None => Ok(()),
        Some(e) => Err(SelectorError(format!("invalid label value {v:?}: {e}"))),
    }
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    if let Some(k) = part.strip_prefix('!') {
        let k = k.trim();
        check_key(k)?;
        return Ok(Requirement::NotExists(k.to_string()));
    }
    // Set-based: `key in (a,b)` / `key notin (a,b)`.
    if let Some(open) = part.find('(') {
        let head = part[..open].trim();
        let close = part
            .rfind(')')
            .filter(|c| *c == part.len() - 1)
            .ok_or_else(|| SelectorError(format!("{part:?}: expected ')' at the end")))?;
        let mut words = head.split_whitespace();
        let (key, op) = match (words.next(), words.next(), words.next()) {
            (Some(k), Some(op), None) => (k, op),
            _ => return Err(SelectorError(format!("{part:?}: expected 'key in (…)'"))),
        };
        check_key(key)?;
        let values: Vec<String> = part[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        for v in &values {
            check_value(v)?;
        }
        return match op {
            "in" if !values.is_empty() => Ok(Requirement::In(key.to_string(), values)),
            "notin" if !values.is_empty() => Ok(Requirement::NotIn(key.to_string(), values)),
            "in" | "notin" => Err(SelectorError(format!("{part:?}: empty value set"))),
            other => Err(SelectorError(format!(
                "{part:?}: unknown operator {other:?}, expected 'in' or 'notin'"
            ))),
        };
    }
    for (op, mk) in [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("=", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
    ] {
        if let Some((k, v)) = part.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            check_key(k)?;
            return match mk {
                Op::Eq | Op::Ne => {
                    check_value(v)?;
                    let vs = vec![v.to_string()];
                    Ok(if mk == Op::Eq {
                        Requirement::In(k.to_string(), vs)
                    } else {
                        Requirement::NotIn(k.to_string(), vs)
                    })
                }
                Op::Gt | Op::Lt => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| SelectorError(format!("{part:?}: {v:?} is not an integer")))?;
                    Ok(if mk == Op::Gt {
                        Requirement::Gt(k.to_string(), n)
                    } else {
                        Requirement::Lt(k.to_string(), n)
                    })
                }
            };
        }
    }
    check_key(part)?;
    Ok(Requirement::Exists(part.to_string()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
}

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub equal: bool,
    pub value: String,
}

/// A parsed field selector over a fixed set of supported fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    /// Parses `a=b,c!=d`; every field must be one of `supported`.
    ///
    /// # Errors
    /// A [`SelectorError`] for syntax errors or unsupported fields.
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid field selector {part:?}: expected 'field=value' or 'field!=value'"
                )));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(SelectorError(format!(
                    "field label not supported: {field} (supported: {})",
                    supported.join(", ")
                )));
            }
            reqs.push(FieldRequirement {
                field: field.to_string(),
                equal,
                value: value.trim().to_string(),
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// True when every requirement holds; `get` returns the object's value of a field.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0
            .iter()
            .all(|r| (get(&r.field).unwrap_or("") == r.value) == r.equal)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_set_and_existence_requirements_parse() {
        let s = LabelSelector::parse("env=prod, tier in (a, b),!legacy,region!=eu,zone").unwrap();
        assert_eq!(
            s.0,
            vec![
                Requirement::In("env".into(), vec!["prod".into()]),
                Requirement::In("tier".into(), vec!["a".into(), "b".into()]),
                Requirement::NotExists("legacy".into()),
                Requirement::NotIn("region".into(), vec!["eu".into()]),
                Requirement::Exists("zone".into()),
            ]
        );
        let obj = labels(&[
            ("env", "prod"),
            ("tier", "b"),
            ("region", "us"),
            ("zone", "z1"),
        ]);
        assert!(s.matches(&obj));
        let legacy = labels(&[
            ("env", "prod"),
            ("tier", "b"),
            ("zone", "z"),
            ("legacy", "1"),
        ]);
        assert!(!s.matches(&legacy));
        assert!(!s.matches(&labels(&[("env", "dev"), ("tier", "b"), ("zone", "z")])));
    }

    #[test]
    fn not_in_matches_absent_keys_but_in_does_not() {
        let not_in = LabelSelector::parse("env notin (prod)").unwrap();
        let inn = LabelSelector::parse("env in (prod)").unwrap();
        assert!(not_in.matches(&labels(&[])));
        assert!(!inn.matches(&labels(&[])));
    }

    #[test]
    fn numeric_comparisons_need_integer_labels() {
        let s = LabelSelector::parse("size>10").unwrap();
        assert!(s.matches(&labels(&[("size", "11")])));
        assert!(!s.matches(&labels(&[("size", "x")])));
        assert!(LabelSelector::parse("size>ten").is_err());
    }

    #[test]
    fn malformed_selectors_are_rejected_with_the_offending_part() {
        for bad in [
            "env in (a",
            "env)",
            "env in ()",
            "env ~ (a)",
            "=x",
            "a b=c",
            "env=a b",
            ",",
        ] {
            let err = LabelSelector::parse(bad).expect_err(bad);
            assert!(!err.0.is_empty());
        }
        assert!(LabelSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn field_selectors_only_accept_supported_fields() {
        let sup = ["metadata.name", "metadata.namespace"];
        let s =
            FieldSelector::parse("metadata.name=c1,metadata.namespace!=kube-system", &sup).unwrap();
        assert!(s.matches(|f| if f == "metadata.name" {
            Some("c1")
        } else {
            Some("default")
        }));
        assert!(!s.matches(|f| if f == "metadata.name" {
            Some("c2")
        } else {
            Some("x")
        }));
        let err = FieldSelector::parse("spec.x=1", &sup).unwrap_err();
        assert!(err.0.contains("spec.x"), "{err}");
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(
            reqs in proptest::collection::vec(
                ("[a-z]{1,6}", proptest::collection::vec("[a-z0-9]{1,4}", 1..3), 0u8..6),
                0..5,
            )
        ) {
            let sel = LabelSelector(reqs.into_iter().map(|(k, vs, op)| match op {
                0 => Requirement::Exists(k),
                1 => Requirement::NotExists(k),
                2 => Requirement::In(k, vs),
                3 => Requirement::NotIn(k, vs),
                4 => Requirement::Gt(k, vs[0].len() as i64),
                _ => Requirement::Lt(k, vs[0].len() as i64),
            }).collect());
            prop_assert_eq!(LabelSelector::parse(&sel.to_string()).unwrap(), sel);
        }

        #[test]
        fn in_and_notin_are_complements(
            key in "[a-z]{1,3}", vals in proptest::collection::vec("[a-z]{1,2}", 1..4),
            obj in proptest::collection::btree_map("[a-z]{1,3}", "[a-z]{1,2}", 0..5),
        ) {
            let inn = Requirement::In(key.clone(), vals.clone());
            let notin = Requirement::NotIn(key, vals);
            prop_assert_ne!(inn.matches(&obj), notin.matches(&obj));
        }
    }
}
