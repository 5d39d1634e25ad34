//! The three-way diff of `kubectl apply`: what to send so a live object matches what we
//! want, without undoing what others changed.
//!
//! ```text
//!  last applied (what shoal sent last time) ─┐
//!  target       (rendered now)              ─┼─▶ three_way ─▶ JSON merge patch (RFC 7386)
//!  live         (read from the cluster)     ─┘                + dangerous changes dropped
//!
//!  per field:  in target, live differs          → set to target's value
//!              in last applied, not in target   → delete (null)   — we owned it, we drop it
//!              only in live                     → untouched       — someone else's (status,
//!                                                                    defaults, other controllers)
//!  lists:      replaced whole when they differ (merge-patch semantics)
//! ```
//!
//! The key decision: ownership comes from the last-applied copy, exactly as kubectl's
//! client-side apply decides it, so a field a controller or an operator set on the live
//! object survives every release, and a field a release stops rendering is removed.
//! Dangerous fields (a DaemonSet's `spec.selector`, …) are never changed on an existing
//! object: the change is taken out of the patch and reported, so a release cannot orphan
//! pods by accident.

use serde_json::{Map, Value};

/// A dotted path into an object (`spec.selector`, `spec.template.spec.hostNetwork`).
pub type FieldPath = String;

/// A change to a dangerous field that was not sent.
#[derive(Clone, Debug, PartialEq)]
pub struct DroppedChange {
    pub path: FieldPath,
    /// The live value (`None`: absent).
    pub live: Option<Value>,
    /// The value the target wanted (`None`: the target removes it).
    pub target: Option<Value>,
}

/// The outcome of [`three_way`].
#[derive(Clone, Debug, PartialEq)]
pub struct ThreeWay {
    /// The JSON merge patch to send; an empty object when nothing changes.
    pub patch: Value,
    /// Changes to dangerous fields that were taken out of the patch.
    pub dropped: Vec<DroppedChange>,
}

impl ThreeWay {
    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.patch.as_object().is_none_or(Map::is_empty)
    }
}

/// Computes the merge patch taking `live` to `target`, deleting what `last` had and
/// `target` no longer has, and leaving everything else in `live` alone. Changes at or
/// under a `dangerous` path are dropped and reported.
pub fn three_way(
    live: &Value,
    target: &Value,
    last: Option<&Value>,
    dangerous: &[FieldPath],
) -> ThreeWay {
    let empty = Value::Object(Map::new());
    let mut patch = diff_object(live, target, last.unwrap_or(&empty));
    let mut dropped = Vec::new();
    for path in dangerous {
        let segments: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            continue;
        }
        if take(&mut patch, &segments).is_some() {
            prune_parents(&mut patch, &segments);
            dropped.push(DroppedChange {
                path: path.clone(),
                live: get(live, &segments).cloned(),
                target: get(target, &segments).cloned(),
            });
        }
    }
    ThreeWay { patch, dropped }
}

/// The merge patch for one object level.
fn diff_object(live: &Value, target: &Value, last: &Value) -> Value {
    let (Some(live_m), Some(target_m)) = (live.as_object(), target.as_object()) else {
        return target.clone();
    };
    let last_m = last.as_object();
    let mut out = Map::new();
    for (k, t) in target_m {
        match live_m.get(k) {
            None => {
                out.insert(k.clone(), t.clone());
            }
            Some(l) if l == t => {}
            Some(l) if l.is_object() && t.is_object() => {
                let sub_last = last_m.and_then(|m| m.get(k)).unwrap_or(&Value::Null);
                let sub = diff_object(l, t, sub_last);
                if sub.as_object().is_some_and(|m| !m.is_empty()) {
                    out.insert(k.clone(), sub);
                }
            }
            Some(l) if l.is_array() && t.is_array() => {
                let sub_last = last_m.and_then(|m| m.get(k)).unwrap_or(&Value::Null);
                if list_changed(l, t, sub_last) {
                    out.insert(k.clone(), t.clone());
                }
            }
            Some(_) => {
                out.insert(k.clone(), t.clone());
            }
        }
    }
    if let Some(last_m) = last_m {
        for k in last_m.keys() {
            if !target_m.contains_key(k) && live_m.contains_key(k) {
                out.insert(k.clone(), Value::Null);
            }
        }
    }
    Value::Object(out)
}

/// Whether a list must be sent again: a different length, or an element whose own
/// three-way diff is not empty. Elements are compared as objects, so fields the server
/// added to the live elements (defaults such as a container's `imagePullPolicy`) do not
/// count as changes, while a field we stopped rendering in an element does.
fn list_changed(live: &Value, target: &Value, last: &Value) -> bool {
    let (Some(l), Some(t)) = (live.as_array(), target.as_array()) else {
        return live != target;
    };
    if l.len() != t.len() {
        return true;
    }
    let last = last.as_array();
    l.iter().zip(t).enumerate().any(|(i, (le, te))| {
        let la = last.and_then(|a| a.get(i)).unwrap_or(&Value::Null);
        match (le, te) {
            (Value::Object(_), Value::Object(_)) => diff_object(le, te, la)
                .as_object()
                .is_some_and(|m| !m.is_empty()),
            (Value::Array(_), Value::Array(_)) => list_changed(le, te, la),
            _ => le != te,
        }
    })
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, seg| v.get(*seg))
}

/// Removes `path` from a patch; returns what was there.
fn take(patch: &mut Value, path: &[&str]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut cur = patch;
    for seg in parents {
        cur = cur.get_mut(*seg)?;
    }
    cur.as_object_mut()?.remove(*last)
}

/// Drops the parents of a taken `path` that the removal left empty (an empty object in a
/// merge patch is a no-op, but it reads as a change). Other empty objects stay: they may
/// create an empty map the target wants.
fn prune_parents(patch: &mut Value, path: &[&str]) {
    for depth in (1..path.len()).rev() {
        let (last, parents) = path[..depth].split_last().expect("depth >= 1");
        let mut cur = &mut *patch;
        for seg in parents {
            match cur.get_mut(*seg) {
                Some(next) => cur = next,
                None => return,
            }
        }
        let Some(m) = cur.as_object_mut() else { return };
        if m.get(*last)
            .is_some_and(|c| c.as_object().is_some_and(Map::is_empty))
        {
            m.remove(*last);
        } else {
            return;
        }
    }
}

/// Applies a JSON merge patch (RFC 7386) to `doc`.
pub fn merge_patch(doc: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *doc = patch.clone();
        return;
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let d = doc.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            d.remove(k);
        } else {
            merge_patch(d.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// One field a merge patch changes, for a human to read.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Dotted, with list indexes: `spec.template.spec.containers[0].image`.
    pub path: String,
    /// The live value (`None`: absent).
    pub before: Option<Value>,
    /// The value after the patch (`None`: removed).
    pub after: Option<Value>,
}

/// The fields `patch` (a merge patch from [`three_way`]) changes on `live`, leaf by leaf.
///
/// A list the patch replaces is compared element by element when it keeps its length,
/// with [`three_way`]'s rule: a field of a live element that the patch's element lacks is
/// a removal only if `last` (the last-applied copy) had it — otherwise a server defaulted
/// it, and it is not a change. A list that changes length, and a subtree that is new, is
/// reported as one change.
pub fn changes(live: &Value, patch: &Value, last: Option<&Value>) -> Vec<Change> {
    let mut out = Vec::new();
    changes_at(Some(live), patch, last, "", false, &mut out);
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// `whole`: `patch` is a whole target value (inside a replaced list), not a merge patch.
fn changes_at(
    live: Option<&Value>,
    patch: &Value,
    last: Option<&Value>,
    path: &str,
    whole: bool,
    out: &mut Vec<Change>,
) {
    match (live, patch) {
        (Some(Value::Object(l)), Value::Object(p)) => {
            for (k, pv) in p {
                let sub = join(path, k);
                let sub_last = last.and_then(|v| v.get(k));
                match (l.get(k), pv) {
                    (None, Value::Null) => {}
                    (Some(lv), Value::Null) if !whole => out.push(Change {
                        path: sub,
                        before: Some(lv.clone()),
                        after: None,
                    }),
                    (lv, pv) => changes_at(lv, pv, sub_last, &sub, whole, out),
                }
            }
            if whole {
                for (k, lv) in l {
                    if !p.contains_key(k) && last.and_then(|v| v.get(k)).is_some() {
                        out.push(Change {
                            path: join(path, k),
                            before: Some(lv.clone()),
                            after: None,
                        });
                    }
                }
            }
        }
        (Some(Value::Array(l)), Value::Array(p)) if l.len() == p.len() => {
            for (i, (le, pe)) in l.iter().zip(p).enumerate() {
                let sub = format!("{path}[{i}]");
                let sub_last = last.and_then(|v| v.get(i));
                match (le, pe) {
                    (Value::Object(_), Value::Object(_)) | (Value::Array(_), Value::Array(_)) => {
                        changes_at(Some(le), pe, sub_last, &sub, true, out)
                    }
                    _ if le != pe => out.push(Change {
                        path: sub,
                        before: Some(le.clone()),
                        after: Some(pe.clone()),
                    }),
                    _ => {}
                }
            }
        }
        (live, patch) => {
            if live != Some(patch) {
                out.push(Change {
                    path: path.to_string(),
                    before: live.cloned(),
                    after: Some(patch.clone()),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_field_another_controller_set_survives_the_apply() {
        let live = json!({"spec": {"replicas": 3, "paused": true}, "status": {"ready": 2}});
        let target = json!({"spec": {"replicas": 5}});
        let last = json!({"spec": {"replicas": 3}});
        let d = three_way(&live, &target, Some(&last), &[]);
        assert_eq!(d.patch, json!({"spec": {"replicas": 5}}));
    }

    #[test]
    fn a_field_the_release_no_longer_renders_is_removed() {
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2", "theirs": "x"}}});
        let target = json!({"metadata": {"labels": {"a": "1"}}});
        let last = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let d = three_way(&live, &target, Some(&last), &[]);
        assert_eq!(d.patch, json!({"metadata": {"labels": {"b": null}}}));
    }

    #[test]
    fn lists_are_replaced_whole() {
        let live = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}]}});
        let target = json!({"spec": {"containers": [{"name": "a", "image": "a:2"}]}});
        let d = three_way(&live, &target, Some(&live), &[]);
        assert_eq!(d.patch, target);
    }

    #[test]
    fn fields_the_server_defaulted_inside_list_elements_are_not_changes() {
        let live = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "imagePullPolicy": "IfNotPresent"}]}});
        let target = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}]}});
        assert!(three_way(&live, &target, Some(&target), &[]).is_empty());
        // But a field we rendered before and dropped now is a change.
        let live = json!({"spec": {"containers": [{"name": "a", "image": "a:1", "env": [1]}]}});
        let last = json!({"spec": {"containers": [{"name": "a", "image": "a:1", "env": [1]}]}});
        let d = three_way(&live, &target, Some(&last), &[]);
        assert_eq!(d.patch, target);
    }

    #[test]
    fn a_dangerous_field_change_is_dropped_and_reported() {
        let live = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "image": "1"}});
        let target = json!({"spec": {"selector": {"matchLabels": {"app": "b"}}, "image": "2"}});
        let d = three_way(&live, &target, Some(&live), &["spec.selector".into()]);
        assert_eq!(d.patch, json!({"spec": {"image": "2"}}));
        assert_eq!(d.dropped.len(), 1);
        assert_eq!(d.dropped[0].path, "spec.selector");
        assert_eq!(
            d.dropped[0].target,
            Some(json!({"matchLabels": {"app": "b"}}))
        );
    }

    #[test]
    fn changes_name_each_field_a_patch_touches() {
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "c", "image": "c:1", "imagePullPolicy": "Always"}],
                     "ports": [1, 2]}});
        let target = json!({"metadata": {"labels": {"a": "1", "n": "3"}},
            "spec": {"containers": [{"name": "c", "image": "c:2"}], "ports": [1, 2, 3]}});
        let last = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let d = three_way(&live, &target, Some(&last), &[]);
        let got: Vec<(String, Option<Value>, Option<Value>)> =
            changes(&live, &d.patch, Some(&last))
                .into_iter()
                .map(|c| (c.path, c.before, c.after))
                .collect();
        assert_eq!(
            got,
            vec![
                ("metadata.labels.b".into(), Some(json!("2")), None),
                ("metadata.labels.n".into(), None, Some(json!("3"))),
                (
                    "spec.containers[0].image".into(),
                    Some(json!("c:1")),
                    Some(json!("c:2"))
                ),
                (
                    "spec.ports".into(),
                    Some(json!([1, 2])),
                    Some(json!([1, 2, 3]))
                ),
            ]
        );
        assert!(changes(&live, &json!({}), None).is_empty());
    }

    #[test]
    fn a_field_dropped_from_a_list_element_is_a_change_only_if_we_owned_it() {
        let live = json!({"c": [{"image": "1", "env": "x", "pullPolicy": "Always"}]});
        let target = json!({"c": [{"image": "1"}]});
        let last = json!({"c": [{"image": "1", "env": "x"}]});
        let d = three_way(&live, &target, Some(&last), &[]);
        let got: Vec<String> = changes(&live, &d.patch, Some(&last))
            .into_iter()
            .map(|c| c.path)
            .collect();
        assert_eq!(got, ["c[0].env"]);
    }

    #[test]
    fn an_unchanged_object_needs_no_patch() {
        let live = json!({"spec": {"x": 1}, "status": {"y": 2}});
        let d = three_way(&live, &json!({"spec": {"x": 1}}), None, &[]);
        assert!(d.is_empty(), "{:?}", d.patch);
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Bool(true)),
            (0i64..4).prop_map(|n| json!(n)),
            "[ab]".prop_map(Value::String),
            proptest::collection::vec((0i64..3).prop_map(|n| json!(n)), 0..3)
                .prop_map(Value::Array),
        ]
    }

    fn json_object() -> impl Strategy<Value = Value> {
        let leaf_map = proptest::collection::btree_map("[a-d]", json_leaf(), 0..4);
        leaf_map
            .prop_map(|m| Value::Object(m.into_iter().collect()))
            .prop_recursive(3, 24, 4, |inner| {
                proptest::collection::btree_map("[a-d]", prop_oneof![json_leaf(), inner], 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect()))
            })
    }

    /// Every leaf path of an object.
    fn leaves(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, c) in m {
                    leaves(c, &format!("{prefix}/{k}"), out);
                }
            }
            _ => out.push((prefix.to_string(), v.clone())),
        }
    }

    proptest! {
        #[test]
        fn after_the_patch_live_holds_the_target_and_keeps_foreign_fields(
            live in json_object(), target in json_object(), last in json_object()
        ) {
            let d = three_way(&live, &target, Some(&last), &[]);
            let mut result = live.clone();
            merge_patch(&mut result, &d.patch);
            // Everything the target says holds.
            let mut want = Vec::new();
            leaves(&target, "", &mut want);
            for (path, v) in want {
                if path.is_empty() { continue; }
                if v.as_object().is_some_and(Map::is_empty) {
                    // An empty map in the target: the map exists (others may fill it).
                    prop_assert!(result.pointer(&path).is_some_and(Value::is_object), "target map {}", path);
                } else {
                    prop_assert_eq!(result.pointer(&path), Some(&v), "target field {}", path);
                }
            }
            // A live field neither we owned nor we want now is untouched.
            let mut had = Vec::new();
            leaves(&live, "", &mut had);
            for (path, v) in had {
                if path.is_empty() || target.pointer(&path).is_some() || last.pointer(&path).is_some() {
                    continue;
                }
                // Only if no ancestor was replaced by a non-object target value.
                let mut ancestor_replaced = false;
                let mut p = path.as_str();
                while let Some(i) = p.rfind('/') {
                    p = &p[..i];
                    if !p.is_empty() && target.pointer(p).is_some_and(|t| !t.is_object()) {
                        ancestor_replaced = true;
                    }
                    // We owned an ancestor and stopped rendering it: it goes, whole.
                    if !p.is_empty() && last.pointer(p).is_some() && target.pointer(p).is_none() {
                        ancestor_replaced = true;
                    }
                }
                if !ancestor_replaced {
                    prop_assert_eq!(result.pointer(&path), Some(&v), "foreign field {}", path);
                }
            }
            // The summary is empty exactly when there is nothing to send.
            prop_assert_eq!(changes(&live, &d.patch, Some(&last)).is_empty(), d.is_empty());
            // Applying again changes nothing.
            let again = three_way(&result, &target, Some(&target), &[]);
            prop_assert!(again.is_empty(), "second apply sends {:?}", again.patch);
        }
    }
}
