//! Table output (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), which is what
//! `kubectl get` prints.
//!
//! Columns come from the kind's printer columns (the CRD's `additionalPrinterColumns`):
//! `Name` first, then each column's JSONPath evaluated against the object — or, for the
//! built-in kinds' derived columns (a pod's STATUS), its computed cell
//! ([`crate::printers`]). `date` columns
//! are rendered as an age (`5m`, `3d4h`) from the server's clock, as Kubernetes does.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::registry::ResourceDef;

/// What each row carries besides its cells (`?includeObject=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// The column definitions of `def`'s table.
pub fn column_definitions(def: &ResourceDef) -> Value {
    let mut cols = Vec::new();
    if def.name_column {
        cols.push(json!({
            "name": "Name", "type": "string", "format": "name", "priority": 0,
            "description": "Name must be unique within a namespace."
        }));
    }
    for c in &def.columns {
        cols.push(json!({
            "name": c.name,
            "type": if c.type_ == "date" { "date" } else { c.type_.as_str() },
            "format": c.format.clone().unwrap_or_default(),
            "description": c.description.clone().unwrap_or_default(),
            "priority": c.priority.unwrap_or(0),
        }));
    }
    Value::Array(cols)
}

/// One table row for `obj`.
pub fn row(def: &ResourceDef, obj: &Value, now: Timestamp, include: IncludeObject) -> Value {
    let mut cells = Vec::with_capacity(def.columns.len() + 1);
    if def.name_column {
        cells.push(obj["metadata"]["name"].clone());
    }
    for c in &def.columns {
        if let Some(cell) = def.cell(&c.name) {
            cells.push(cell(obj, now));
            continue;
        }
        let v = eval(&c.json_path, obj);
        cells.push(match (c.type_.as_str(), v) {
            (_, None) => Value::Null,
            ("date", Some(Value::String(s))) => match s.parse::<Timestamp>() {
                Ok(t) => Value::String(human_duration(now.as_second() - t.as_second())),
                Err(_) => Value::String(s),
            },
            (_, Some(v)) => v,
        });
    }
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => row["object"] = obj.clone(),
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"].clone(),
            })
        }
    }
    row
}

/// A Table of `objs`.
pub fn table(
    def: &ResourceDef,
    objs: &[Value],
    list_meta: Value,
    now: Timestamp,
    include: IncludeObject,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": column_definitions(def),
        "rows": objs.iter().map(|o| row(def, o, now, include)).collect::<Vec<_>>(),
    })
}

/// Kubernetes' `HumanDuration`: `45s`, `5m30s`, `95m`, `5h10m`, `30h`, `3d5h`, `40d`, `2y3d`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    let minutes = secs / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    if secs < 120 {
        format!("{secs}s")
    } else if minutes < 10 {
        match secs % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        }
    } else {
        format!("{}y", days / 365)
    }
}

/// Evaluates the subset of JSONPath that printer columns use: `.a.b`, `['a']`, `[0]`,
/// `[*]` and filters `[?(@.type=="Ready")]`. Returns the first match.
pub fn eval(path: &str, root: &Value) -> Option<Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut current: Vec<&Value> = vec![root];
    let mut rest = path.trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            rest = &r[end..];
            if key.is_empty() {
                continue;
            }
            current = current.into_iter().filter_map(|v| v.get(key)).collect();
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = find_close(r)?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            current = step_bracket(inner, current)?;
        } else {
            return None;
        }
    }
    current.into_iter().next().cloned()
}

fn find_close(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ']') if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

fn step_bracket<'a>(inner: &str, current: Vec<&'a Value>) -> Option<Vec<&'a Value>> {
    let inner = inner.trim();
    if inner == "*" {
        return Some(
            current
                .into_iter()
                .flat_map(|v| match v {
                    Value::Array(a) => a.iter().collect::<Vec<_>>(),
                    Value::Object(m) => m.values().collect(),
                    _ => vec![],
                })
                .collect(),
        );
    }
    if let Some(q) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return Some(current.into_iter().filter_map(|v| v.get(q)).collect());
    }
    if let Ok(i) = inner.parse::<usize>() {
        return Some(current.into_iter().filter_map(|v| v.get(i)).collect());
    }
    let filter = inner.strip_prefix("?(")?.strip_suffix(')')?;
    let (lhs, rhs) = filter.split_once("==")?;
    let field = lhs.trim().strip_prefix("@.")?;
    let want = rhs.trim().trim_matches(|c| c == '"' || c == '\'');
    Some(
        current
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
            .filter(|item| match item.get(field) {
                Some(Value::String(s)) => s == want,
                Some(other) => *other == want,
                None => false,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn jsonpath_follows_fields_indexes_and_filters() {
        let obj = json!({"metadata": {"labels": {"env": "prod"}},
            "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(eval(".metadata.labels.env", &obj), Some(json!("prod")));
        assert_eq!(eval(".metadata.labels['env']", &obj), Some(json!("prod")));
        assert_eq!(
            eval(".status.conditions[1].type", &obj),
            Some(json!("Ready"))
        );
        assert_eq!(
            eval(".status.conditions[?(@.type==\"Ready\")].status", &obj),
            Some(json!("True"))
        );
        assert_eq!(
            eval(".status.conditions[*].type", &obj),
            Some(json!("Synced"))
        );
        assert_eq!(eval(".metadata.labels.tier", &obj), None);
    }

    #[test]
    fn human_durations_match_kubernetes() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (330, "5m30s"),
            (600, "10m"),
            (5700, "95m"),
            (3 * 3600 + 600, "3h10m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 5 * 3600, "3d5h"),
            (40 * 86400, "40d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (-5, "<invalid>"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn cluster_rows_show_name_attributes_ready_and_age() {
        let r = Registry::shoal();
        let def = r.find("shoal.io", "v1alpha1", "clusters").unwrap();
        let now: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let obj = json!({"metadata": {"name": "c1", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"env": "prod", "region": "eu-1", "tier": "1"}},
            "spec": {"endpoint": {"server": "https://x"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "kubernetesVersion": "v1.32.2", "nodeCount": 4}});
        let row = row(def, &obj, now, IncludeObject::Metadata);
        assert_eq!(
            row["cells"],
            json!([
                "c1",
                "prod",
                "eu-1",
                "1",
                "True",
                "v1.32.2",
                4,
                "https://x",
                "60m"
            ])
        );
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    }
}
