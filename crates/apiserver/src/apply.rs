//! Server-side apply: who owns which field (`metadata.managedFields`), the merge of an
//! applied configuration into the live object, the removal of fields an applier
//! dropped, and conflicts between managers. Pure functions on JSON values.
//!
//! ```text
//!  applied config ──field_set──▶ FieldSet, a trie in fieldsV1's own words:
//!        │                         f:spec ─ f:replicas            (a leaf: owned)
//!        │                         f:containers ─ k:{"name":"app"} ─ .        (the element)
//!        │                                                       └ f:image
//!        ▼
//!  live ──merge──▶ merged ──drop what this manager applied before, no longer applies
//!                                and nobody else owns──▶ new object
//!
//!  managedFields: [{manager, operation: Apply|Update, apiVersion, time,
//!                   fieldsType: FieldsV1, fieldsV1: <trie>, subresource?}, …]
//!  conflict: a field of the applied config that another manager owns and whose value
//!            the apply would change (same value: shared ownership, no conflict)
//! ```
//!
//! Ordinary writes (create, update, patches) are recorded too, as `Update` entries: a
//! create owns every field it set, an update the fields whose values it changed (taking
//! them from whoever owned them), and a field that disappeared belongs to no one.
//!
//! The key decision: which lists are associative comes from the strategic-merge table
//! ([`PatchMeta`]) rather than from schemas. A list with a merge key is a map of
//! elements by that key (`k:{"name":"app"}`), a merged list without one is a set of
//! primitives (`v:"a"`), and every other list is atomic — owned and replaced whole —
//! which is what structured-merge-diff does for a schema without
//! `x-kubernetes-list-type`. Field sets are kept in their wire form (fieldsV1's path
//! element strings as trie keys), so parsing and serializing them is a plain walk.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::strategic::PatchMeta;

/// A set of field paths, as a trie keyed by fieldsV1 path elements (`f:name`,
/// `k:{"name":"app"}`, `v:"value"`, `i:0`). A node is a *member* when the field at its
/// path is itself in the set (a leaf, an atomic list, a list element).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

/// A path of fieldsV1 path elements from the object's root.
pub type FieldPath = Vec<String>;

impl FieldSet {
    fn leaf() -> Self {
        FieldSet {
            member: true,
            children: BTreeMap::new(),
        }
    }

    /// Whether the set has no member at all.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        path.iter().try_fold(self, |n, pe| n.children.get(pe))
    }

    /// Whether the field at `path` is a member.
    pub fn contains(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// Whether the field at `path` or any field below it is a member.
    pub fn touches(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    /// Whether the field at `path` is a member, or one of its ancestors is a leaf
    /// member (an atomic list or a scalar, which owns whatever is in it). A list
    /// element owned along with fields below it does not cover its other fields.
    pub fn covers(&self, path: &[String]) -> bool {
        let mut n = self;
        for pe in path {
            if n.member && n.children.is_empty() {
                return true;
            }
            match n.children.get(pe) {
                Some(c) => n = c,
                None => return false,
            }
        }
        n.member
    }

    /// Adds the field at `path`.
    pub fn insert(&mut self, path: &[String]) {
        let mut n = self;
        for pe in path {
            n = n.children.entry(pe.clone()).or_default();
        }
        n.member = true;
    }

    /// Removes the field at `path` (not the fields below it).
    pub fn remove(&mut self, path: &[String]) {
        fn go(n: &mut FieldSet, path: &[String]) {
            match path.split_first() {
                None => n.member = false,
                Some((pe, rest)) => {
                    if let Some(c) = n.children.get_mut(pe) {
                        go(c, rest);
                        if c.is_empty() {
                            n.children.remove(pe);
                        }
                    }
                }
            }
        }
        go(self, path);
    }

    /// Adds every member of `other`.
    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, c) in &other.children {
            self.children.entry(pe.clone()).or_default().union(c);
        }
    }

    /// The members of `self` that are not members of `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            let d = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    /// The members of both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    /// Every member's path, parents before children.
    pub fn paths(&self) -> Vec<FieldPath> {
        fn go(n: &FieldSet, prefix: &mut FieldPath, out: &mut Vec<FieldPath>) {
            if n.member {
                out.push(prefix.clone());
            }
            for (pe, c) in &n.children {
                prefix.push(pe.clone());
                go(c, prefix, out);
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        go(self, &mut Vec::new(), &mut out);
        out
    }

    /// The set in Kubernetes' `FieldsV1` form: `{"f:spec": {"f:replicas": {}}}`, with
    /// `".": {}` marking a member that also has members below it.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (pe, c) in &self.children {
            m.insert(pe.clone(), c.to_fields_v1());
        }
        Value::Object(m)
    }

    /// Parses a `FieldsV1` trie.
    ///
    /// # Errors
    /// A message naming what is malformed: a non-object node or an unknown path
    /// element prefix.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        fn go(v: &Value, is_root: bool) -> Result<FieldSet, String> {
            let m = v
                .as_object()
                .ok_or_else(|| format!("a fieldsV1 node must be an object, not {v}"))?;
            let mut n = FieldSet {
                member: m.is_empty() && !is_root,
                children: BTreeMap::new(),
            };
            for (pe, c) in m {
                if pe == "." {
                    n.member = true;
                    continue;
                }
                if !["f:", "k:", "v:", "i:"].iter().any(|p| pe.starts_with(p)) {
                    return Err(format!("unknown fieldsV1 path element {pe:?}"));
                }
                n.children.insert(pe.clone(), go(c, false)?);
            }
            Ok(n)
        }
        go(v, true)
    }
}

/// Formats a path as Kubernetes prints it in conflicts: `.spec.containers[name="app"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for pe in path {
        if let Some(f) = pe.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = pe.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_else(|_| vec![k.to_string()]);
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = pe.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = pe.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        } else {
            s.push_str(pe);
        }
    }
    s
}

fn field_pe(name: &str) -> String {
    format!("f:{name}")
}

/// How a list is owned and merged.
#[derive(Clone, Copy)]
enum ListKind<'a> {
    /// Replaced and owned whole.
    Atomic,
    /// A map of elements by this key.
    Keyed(&'a str),
    /// A set of primitives.
    Set,
}

fn list_kind(meta: &PatchMeta) -> ListKind<'_> {
    match (meta.merge, meta.merge_key.as_deref()) {
        (true, Some(k)) => ListKind::Keyed(k),
        (true, None) => ListKind::Set,
        _ => ListKind::Atomic,
    }
}

/// The path element of a list element, if the list is associative and the element
/// has an identity.
fn element_pe(kind: ListKind, item: &Value) -> Option<String> {
    match kind {
        ListKind::Atomic => None,
        ListKind::Keyed(k) => {
            let id = item.as_object()?.get(k)?;
            if id.is_null() || id.is_object() || id.is_array() {
                return None;
            }
            let mut key = Map::new();
            key.insert(k.to_string(), id.clone());
            Some(format!("k:{}", Value::Object(key)))
        }
        ListKind::Set => {
            (!item.is_object() && !item.is_array() && !item.is_null()).then(|| format!("v:{item}"))
        }
    }
}

/// The elements of an associative list with their path elements; `None` when the list
/// is atomic, or an element has no identity or a duplicate one (then the list is
/// treated as atomic).
fn elements<'v>(kind: ListKind, list: &'v [Value]) -> Option<Vec<(String, &'v Value)>> {
    if matches!(kind, ListKind::Atomic) {
        return None;
    }
    let mut out: Vec<(String, &Value)> = Vec::with_capacity(list.len());
    for item in list {
        let pe = element_pe(kind, item)?;
        if out.iter().any(|(p, _)| *p == pe) {
            return None;
        }
        out.push((pe, item));
    }
    Some(out)
}

/// The fields of a value (below the path it sits at).
fn collect(v: &Value, meta: &PatchMeta) -> FieldSet {
    match v {
        Value::Object(m) => collect_map(m, meta, |_| true),
        Value::Array(a) => {
            let kind = list_kind(meta);
            match elements(kind, a) {
                Some(els) => FieldSet {
                    member: false,
                    children: els
                        .into_iter()
                        .map(|(pe, item)| {
                            let mut n = match kind {
                                ListKind::Keyed(_) => collect(item, meta),
                                _ => FieldSet::default(),
                            };
                            n.member = true;
                            (pe, n)
                        })
                        .collect(),
                },
                None => FieldSet::leaf(),
            }
        }
        _ => FieldSet::leaf(),
    }
}

fn collect_map(m: &Map<String, Value>, meta: &PatchMeta, keep: impl Fn(&str) -> bool) -> FieldSet {
    let mut n = FieldSet::default();
    for (k, c) in m {
        if c.is_null() || !keep(k) {
            continue;
        }
        let cs = collect(c, meta.field(k));
        if !cs.is_empty() {
            n.children.insert(field_pe(k), cs);
        }
    }
    n
}

/// Which part of an object a write manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A kind without a status subresource: everything.
    Whole,
    /// The main resource of a kind with a status subresource: everything but status.
    Main,
    /// The status subresource: status only.
    Status,
}

/// Metadata the server sets, which an applied configuration does not: dropped from it,
/// and never in a field set.
pub(crate) const SERVER_OWNED_META: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

fn tracked_top(key: &str, scope: Scope) -> bool {
    match key {
        "apiVersion" | "kind" => false,
        "status" => scope != Scope::Main,
        _ => scope != Scope::Status,
    }
}

fn tracked_meta(key: &str) -> bool {
    // The object's identity is not a field anyone owns either.
    !(SERVER_OWNED_META.contains(&key) || key == "name" || key == "namespace")
}

/// The fields an object (or an applied configuration) sets, within `scope`.
pub fn field_set(obj: &Value, meta: &PatchMeta, scope: Scope) -> FieldSet {
    let Some(m) = obj.as_object() else {
        return FieldSet::default();
    };
    let mut n = FieldSet::default();
    for (k, c) in m {
        if c.is_null() || !tracked_top(k, scope) {
            continue;
        }
        let cs = match (k.as_str(), c) {
            ("metadata", Value::Object(mm)) => collect_map(mm, meta.field(k), tracked_meta),
            _ => collect(c, meta.field(k)),
        };
        if !cs.is_empty() {
            n.children.insert(field_pe(k), cs);
        }
    }
    n
}

/// Checks that every associative list of an applied configuration can be merged:
/// keyed elements carry their key, and no identity repeats.
///
/// # Errors
/// A message naming the list element at fault (`spec.containers[1]`).
pub fn check_config(v: &Value, meta: &PatchMeta) -> Result<(), String> {
    fn go(v: &Value, meta: &PatchMeta, path: &str) -> Result<(), String> {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    go(c, meta.field(k), &p)?;
                }
                Ok(())
            }
            Value::Array(a) => {
                let kind = list_kind(meta);
                if matches!(kind, ListKind::Atomic) {
                    return Ok(());
                }
                let mut seen = Vec::new();
                for (i, item) in a.iter().enumerate() {
                    let Some(pe) = element_pe(kind, item) else {
                        return Err(match kind {
                            ListKind::Keyed(k) => format!(
                                "{path}[{i}]: an element of this list must be an object with a non-empty {k:?}, its key"
                            ),
                            _ => format!(
                                "{path}[{i}]: an element of this list must be a string or number"
                            ),
                        });
                    };
                    if seen.contains(&pe) {
                        return Err(format!(
                            "{path}[{i}]: duplicate entry {} in an associative list",
                            display_path(&[pe])
                        ));
                    }
                    seen.push(pe);
                    if matches!(kind, ListKind::Keyed(_)) {
                        go(item, meta, &format!("{path}[{i}]"))?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    go(v, meta, "")
}

/// The value at `path` in `v`, if there is one (`null` counts as none).
pub fn value_at<'v>(v: &'v Value, path: &[String], meta: &PatchMeta) -> Option<&'v Value> {
    let Some((pe, rest)) = path.split_first() else {
        return (!v.is_null()).then_some(v);
    };
    if let Some(name) = pe.strip_prefix("f:") {
        let c = v.as_object()?.get(name)?;
        return value_at(c, rest, meta.field(name));
    }
    let kind = list_kind(meta);
    let item = v
        .as_array()?
        .iter()
        .find(|item| element_pe(kind, item).as_deref() == Some(pe.as_str()))?;
    value_at(item, rest, meta)
}

/// Removes the field at `path` from `v`, if it is there.
pub fn remove_at(v: &mut Value, path: &[String], meta: &PatchMeta) {
    let Some((pe, rest)) = path.split_first() else {
        return;
    };
    if let Some(name) = pe.strip_prefix("f:") {
        let Some(m) = v.as_object_mut() else { return };
        if rest.is_empty() {
            m.remove(name);
        } else if let Some(c) = m.get_mut(name) {
            remove_at(c, rest, meta.field(name));
        }
        return;
    }
    let kind = list_kind(meta);
    let Some(a) = v.as_array_mut() else { return };
    let Some(i) = a
        .iter()
        .position(|item| element_pe(kind, item).as_deref() == Some(pe.as_str()))
    else {
        return;
    };
    if rest.is_empty() {
        a.remove(i);
    } else {
        remove_at(&mut a[i], rest, meta);
    }
}

/// Merges an applied configuration into the live object: maps merge, associative
/// lists merge element by element (live order, new elements appended), everything
/// else (scalars, atomic lists) is replaced by the configuration's value.
pub fn merge_into(live: &mut Value, cfg: &Value, meta: &PatchMeta) {
    match (live, cfg) {
        (Value::Object(l), Value::Object(c)) => {
            for (k, cv) in c {
                match l.get_mut(k) {
                    Some(lv) if !lv.is_null() => merge_into(lv, cv, meta.field(k)),
                    _ => {
                        l.insert(k.clone(), cv.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(c)) => {
            let kind = list_kind(meta);
            let positions: Option<Vec<String>> =
                elements(kind, l).map(|els| els.into_iter().map(|(pe, _)| pe).collect());
            match (positions, elements(kind, c)) {
                (Some(live_pes), Some(cfg_els)) => {
                    for (pe, cv) in cfg_els {
                        match live_pes.iter().position(|p| *p == pe) {
                            Some(i) if matches!(kind, ListKind::Keyed(_)) => {
                                merge_into(&mut l[i], cv, meta)
                            }
                            Some(_) => {}
                            None => l.push(cv.clone()),
                        }
                    }
                }
                _ => *l = c.clone(),
            }
        }
        (live, cfg) => *live = cfg.clone(),
    }
}

/// Removes `null`s from maps of an applied configuration: a field set to null is a
/// field not applied.
pub fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !c.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// The fields an update added or changed, and the fields it removed.
fn diff(old: &Value, new: &Value, meta: &PatchMeta, scope: Scope) -> (FieldSet, FieldSet) {
    let (mut changed, mut removed) = (FieldSet::default(), FieldSet::default());
    if let (Some(o), Some(n)) = (old.as_object(), new.as_object()) {
        diff_maps(o, n, meta, Level::Top(scope), &mut changed, &mut removed);
    }
    (changed, removed)
}

/// Where a map sits: which of its keys are tracked depends on it.
#[derive(Clone, Copy)]
enum Level {
    /// The object itself: apiVersion and kind are not, status depends on the scope.
    Top(Scope),
    /// `metadata`: the server's own fields are not.
    Meta,
    /// Anywhere else: every key is.
    Nested,
}

impl Level {
    fn keeps(self, k: &str) -> bool {
        match self {
            Level::Top(scope) => tracked_top(k, scope),
            Level::Meta => tracked_meta(k),
            Level::Nested => true,
        }
    }

    fn child(self, k: &str) -> Level {
        match self {
            Level::Top(_) if k == "metadata" => Level::Meta,
            _ => Level::Nested,
        }
    }
}

/// [`collect`], minding the level's untracked keys.
fn collect_at(v: &Value, meta: &PatchMeta, level: Level) -> FieldSet {
    match (v, level) {
        (Value::Object(m), Level::Meta) => collect_map(m, meta, tracked_meta),
        _ => collect(v, meta),
    }
}

fn diff_maps(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    meta: &PatchMeta,
    level: Level,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    for (k, nv) in n {
        if nv.is_null() || !level.keeps(k) {
            continue;
        }
        let (fm, cl) = (meta.field(k), level.child(k));
        let (mut c, mut r) = (FieldSet::default(), FieldSet::default());
        match o.get(k).filter(|v| !v.is_null()) {
            Some(ov) if ov == nv => continue,
            Some(ov) => diff_values(ov, nv, fm, cl, &mut c, &mut r),
            None => c = collect_at(nv, fm, cl),
        }
        if !c.is_empty() {
            changed.children.insert(field_pe(k), c);
        }
        if !r.is_empty() {
            removed.children.insert(field_pe(k), r);
        }
    }
    for (k, ov) in o {
        if ov.is_null() || !level.keeps(k) || n.get(k).is_some_and(|v| !v.is_null()) {
            continue;
        }
        let r = collect_at(ov, meta.field(k), level.child(k));
        if !r.is_empty() {
            removed.children.insert(field_pe(k), r);
        }
    }
}

fn diff_values(
    ov: &Value,
    nv: &Value,
    meta: &PatchMeta,
    level: Level,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    if ov == nv {
        return;
    }
    match (ov, nv) {
        (Value::Object(o), Value::Object(n)) => {
            diff_maps(o, n, meta, level, changed, removed);
        }
        (Value::Array(o), Value::Array(n)) => {
            let kind = list_kind(meta);
            match (elements(kind, o), elements(kind, n)) {
                (Some(oe), Some(ne)) => {
                    let keyed = matches!(kind, ListKind::Keyed(_));
                    for (pe, item) in &ne {
                        let (mut c, mut r) = (FieldSet::default(), FieldSet::default());
                        match oe.iter().find(|(p, _)| p == pe) {
                            Some((_, old)) if keyed => {
                                diff_values(old, item, meta, Level::Nested, &mut c, &mut r)
                            }
                            Some(_) => {}
                            None => {
                                if keyed {
                                    c = collect(item, meta);
                                }
                                c.member = true;
                            }
                        }
                        if !c.is_empty() {
                            changed.children.insert(pe.clone(), c);
                        }
                        if !r.is_empty() {
                            removed.children.insert(pe.clone(), r);
                        }
                    }
                    for (pe, item) in &oe {
                        if ne.iter().any(|(p, _)| p == pe) {
                            continue;
                        }
                        let mut r = if keyed {
                            collect(item, meta)
                        } else {
                            FieldSet::default()
                        };
                        r.member = true;
                        removed.children.insert(pe.clone(), r);
                    }
                }
                _ => {
                    // Atomic, or no longer associative: the list as a whole changed.
                    let mut r = collect(ov, meta);
                    r.member = false;
                    removed.union(&r);
                    changed.member = true;
                }
            }
        }
        _ => {
            // A scalar changed, or the field changed type: whatever was below is gone.
            let mut r = collect_at(ov, meta, level);
            r.member = false;
            removed.union(&r);
            if nv.is_object() {
                changed.union(&collect_at(nv, meta, level));
                // The old scalar (or list) itself is gone.
                removed.member = !ov.is_object();
            } else {
                changed.member = true;
            }
        }
    }
}

/// `Apply` or `Update`, as in a managedFields entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One entry of `metadata.managedFields`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl ManagedEntry {
    fn same_owner(&self, manager: &str, op: Operation, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == op
            && self.subresource.as_deref() == subresource
    }

    /// How Kubernetes names this manager in a conflict: `"x"` for an applier,
    /// `"x" using v1` for an updater.
    fn describe(&self) -> String {
        match self.operation {
            Operation::Apply => format!("{:?}", self.manager),
            Operation::Update => format!("{:?} using {}", self.manager, self.api_version),
        }
    }

    fn to_value(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation.as_str(),
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_fields_v1(),
        });
        if let Some(s) = &self.subresource {
            v["subresource"] = json!(s);
        }
        v
    }

    fn from_value(v: &Value) -> Option<ManagedEntry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        Some(ManagedEntry {
            manager: s("manager")?,
            operation: match v.get("operation")?.as_str()? {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                _ => return None,
            },
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time").unwrap_or_default(),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            fields: FieldSet::from_fields_v1(v.get("fieldsV1").unwrap_or(&json!({}))).ok()?,
        })
    }
}

/// The managedFields entries of a stored object (malformed entries are skipped: only
/// the server writes them).
pub fn managed_fields(obj: &Value) -> Vec<ManagedEntry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(ManagedEntry::from_value).collect())
        .unwrap_or_default()
}

/// The `metadata.managedFields` value of `entries` (entries owning nothing dropped).
pub fn managed_fields_value(entries: &[ManagedEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .map(ManagedEntry::to_value)
            .collect(),
    )
}

/// Sets `metadata.managedFields` of `obj`; an empty list removes it.
pub fn set_managed_fields(obj: &mut Value, managed: Value) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if managed.as_array().is_some_and(Vec::is_empty) {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), managed);
    }
}

/// Who writes, and how: the context of a recorded write.
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a> {
    pub manager: &'a str,
    /// The API version the request used (`shoal.io/v1alpha1`).
    pub api_version: &'a str,
    /// `Some("status")` for writes through a subresource.
    pub subresource: Option<&'a str>,
    pub scope: Scope,
    /// The write's time, RFC 3339.
    pub now: &'a str,
    pub meta: &'a PatchMeta,
}

impl Writer<'_> {
    fn entry(&self, op: Operation, fields: FieldSet) -> ManagedEntry {
        ManagedEntry {
            manager: self.manager.to_string(),
            operation: op,
            api_version: self.api_version.to_string(),
            time: self.now.to_string(),
            subresource: self.subresource.map(String::from),
            fields,
        }
    }
}

/// The managedFields of a newly created object: its creator owns every field it set.
///
/// On every create, so built straight from the object in fieldsV1's form, without the
/// [`FieldSet`] trie that [`field_set`] builds and [`FieldSet::to_fields_v1`] turns back
/// into JSON (the same value: a test holds the two together).
pub fn record_create(obj: &Value, w: &Writer) -> Value {
    let fields = fields_v1(obj, w.meta, w.scope);
    if fields.as_object().is_none_or(Map::is_empty) {
        return Value::Array(Vec::new());
    }
    let mut e = Map::new();
    e.insert("manager".into(), Value::String(w.manager.to_string()));
    e.insert("operation".into(), Value::String("Update".into()));
    e.insert(
        "apiVersion".into(),
        Value::String(w.api_version.to_string()),
    );
    e.insert("time".into(), Value::String(w.now.to_string()));
    e.insert("fieldsType".into(), Value::String("FieldsV1".into()));
    e.insert("fieldsV1".into(), fields);
    if let Some(s) = w.subresource {
        e.insert("subresource".into(), Value::String(s.to_string()));
    }
    Value::Array(vec![Value::Object(e)])
}

/// `field_set(obj, meta, scope).to_fields_v1()`, built without the trie.
fn fields_v1(obj: &Value, meta: &PatchMeta, scope: Scope) -> Value {
    let mut out = Map::new();
    for (k, c) in obj.as_object().into_iter().flatten() {
        if c.is_null() || !tracked_top(k, scope) {
            continue;
        }
        let node = match (k.as_str(), c) {
            ("metadata", Value::Object(mm)) => fields_v1_map(mm, meta.field(k), tracked_meta),
            _ => fields_v1_node(c, meta.field(k)),
        };
        if let Some(node) = node {
            out.insert(field_pe(k), node);
        }
    }
    Value::Object(out)
}

/// The fieldsV1 node of a value (as [`collect`] finds it); `None` when it sets nothing.
fn fields_v1_node(v: &Value, meta: &PatchMeta) -> Option<Value> {
    match v {
        Value::Object(m) => fields_v1_map(m, meta, |_| true),
        Value::Array(a) => {
            let kind = list_kind(meta);
            let Some(els) = elements(kind, a) else {
                return Some(Value::Object(Map::new()));
            };
            let mut out = Map::new();
            for (pe, item) in els {
                // An element is owned itself: "." marks it when it has fields below.
                let mut node = match kind {
                    ListKind::Keyed(_) => match fields_v1_node(item, meta) {
                        Some(Value::Object(m)) => m,
                        _ => Map::new(),
                    },
                    _ => Map::new(),
                };
                if !node.is_empty() {
                    node.insert(".".into(), Value::Object(Map::new()));
                }
                out.insert(pe, Value::Object(node));
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        _ => Some(Value::Object(Map::new())),
    }
}

fn fields_v1_map(
    m: &Map<String, Value>,
    meta: &PatchMeta,
    keep: impl Fn(&str) -> bool,
) -> Option<Value> {
    let mut out = Map::new();
    for (k, c) in m {
        if c.is_null() || !keep(k) {
            continue;
        }
        if let Some(node) = fields_v1_node(c, meta.field(k)) {
            out.insert(field_pe(k), node);
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// The managedFields after a non-apply write turned `old` into `new`: the writer's
/// Update entry gains the fields it added or changed, which every other manager
/// loses; fields that disappeared belong to no one.
pub fn record_update(old: &Value, new: &Value, w: &Writer) -> Value {
    let current = old
        .pointer("/metadata/managedFields")
        .cloned()
        .unwrap_or_else(|| json!([]));
    let (changed, removed) = diff(old, new, w.meta, w.scope);
    if changed.is_empty() && removed.is_empty() {
        return current;
    }
    let mut entries = managed_fields(old);
    for e in &mut entries {
        e.fields = e.fields.difference(&changed).difference(&removed);
    }
    match entries
        .iter_mut()
        .find(|e| e.same_owner(w.manager, Operation::Update, w.subresource))
    {
        Some(e) => {
            e.fields.union(&changed);
            e.time = w.now.to_string();
            e.api_version = w.api_version.to_string();
        }
        None if !changed.is_empty() => entries.push(w.entry(Operation::Update, changed)),
        None => {}
    }
    managed_fields_value(&entries)
}

/// A field another manager owns that an apply would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The owner as Kubernetes names it: `"other"`, or `"kubectl-edit" using v1`.
    pub manager: String,
    /// `.spec.replicas`
    pub field: String,
    /// The field's path.
    pub path: FieldPath,
}

/// The annotation client-side `kubectl apply` keeps its last configuration in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Whether `conflicts` of an apply over `live` only stand between kubectl's server-side
/// apply and fields its client-side apply set, as its last-applied annotation records:
/// kube-apiserver then lets the server-side apply take them, so that moving from
/// `kubectl apply` to `kubectl apply --server-side` with a changed file works.
pub fn upgrades_client_side_apply(live: &Value, conflicts: &[Conflict], w: &Writer) -> bool {
    if w.manager != "kubectl" || conflicts.is_empty() {
        return false;
    }
    let Some(last) = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
    else {
        return false;
    };
    let allowed = field_set(&last, w.meta, w.scope);
    conflicts.iter().all(|c| allowed.contains(&c.path))
}

/// The message Kubernetes gives a failed apply.
pub fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager, c.field
        );
    }
    let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
    managers.sort_unstable();
    managers.dedup();
    let mut lines = Vec::new();
    for m in managers {
        lines.push(format!("conflicts with {m}:"));
        for c in conflicts.iter().filter(|c| c.manager == m) {
            lines.push(format!("- {}", c.field));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Applies configuration `cfg` (nulls dropped, associative lists checked with
/// [`check_config`]) over `live` as manager `w`. Returns the new object and its
/// managedFields value (to set after admission, which strips client-sent ones).
///
/// # Errors
/// The conflicts, when another manager owns a field the apply would change and
/// `force` is not set.
pub fn apply(
    live: &Value,
    cfg: &Value,
    w: &Writer,
    force: bool,
) -> Result<(Value, Value), Vec<Conflict>> {
    let applied = field_set(cfg, w.meta, w.scope);
    let mut entries = managed_fields(live);
    let own = entries
        .iter()
        .position(|e| e.same_owner(w.manager, Operation::Apply, w.subresource));
    let mut merged = live.clone();
    merge_into(&mut merged, cfg, w.meta);

    let mut conflicts: Vec<(usize, FieldPath)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) == own {
            continue;
        }
        for path in applied.intersection(&e.fields).paths() {
            let (before, after) = (
                value_at(live, &path, w.meta),
                value_at(&merged, &path, w.meta),
            );
            // A list element also owned below (a container): its presence is what
            // this manager owns; its fields are compared one by one.
            let element = applied.node(&path).is_some_and(|n| !n.children.is_empty());
            let differs = if element {
                before.is_some() != after.is_some()
            } else {
                before != after
            };
            if differs {
                conflicts.push((i, path));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts
            .into_iter()
            .map(|(i, path)| Conflict {
                manager: entries[i].describe(),
                field: display_path(&path),
                path,
            })
            .collect());
    }
    for (i, path) in &conflicts {
        entries[*i].fields.remove(path);
    }

    let previous = own.map(|i| entries[i].fields.clone()).unwrap_or_default();
    let mut others = FieldSet::default();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) != own {
            others.union(&e.fields);
        }
    }
    for path in previous.difference(&applied).paths() {
        // Kept if anyone owns it or something below it, or if this apply owns it
        // under another shape (a map that became a scalar, say).
        if !others.touches(&path) && !applied.touches(&path) && !applied.covers(&path) {
            remove_at(&mut merged, &path, w.meta);
        }
    }

    let object_changed = merged != *live;
    match own {
        Some(i) => {
            let e = &mut entries[i];
            if object_changed || e.fields != applied {
                e.time = w.now.to_string();
            }
            e.fields = applied;
            e.api_version = w.api_version.to_string();
        }
        None => entries.push(w.entry(Operation::Apply, applied)),
    }
    Ok((merged, managed_fields_value(&entries)))
}

/// The managedFields of an object created by an apply: the applier owns exactly the
/// fields of its configuration.
pub fn record_apply_create(cfg: &Value, w: &Writer) -> Value {
    managed_fields_value(&[w.entry(Operation::Apply, field_set(cfg, w.meta, w.scope))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategic::builtin_meta;

    fn deploy_meta() -> PatchMeta {
        builtin_meta("apps", "Deployment")
    }

    fn w<'a>(manager: &'a str, meta: &'a PatchMeta) -> Writer<'a> {
        Writer {
            manager,
            api_version: "apps/v1",
            subresource: None,
            scope: Scope::Main,
            now: "2026-01-01T00:00:00Z",
            meta,
        }
    }

    fn mk_deploy(replicas: i64, labels: Value, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "uid": "u-1", "labels": labels},
               "spec": {"replicas": replicas,
                        "template": {"spec": {"containers": [{"name": "app", "image": image}]}},
                        "selector": {"matchLabels": {"app": "web"}}}})
    }

    fn path(s: &[&str]) -> FieldPath {
        s.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn a_creates_managed_fields_are_its_field_set_in_fieldsv1_form() {
        let meta = deploy_meta();
        let mut obj = mk_deploy(3, json!({"app": "web"}), "nginx");
        obj["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "side", "image": "s", "ports": [{"containerPort": 80}]}));
        obj["metadata"]["finalizers"] = json!(["a.io/x", "b.io/y"]);
        obj["metadata"]["annotations"] = json!({});
        obj["spec"]["strategy"] = json!({"type": null});
        obj["status"] = json!({"replicas": 1});
        for scope in [Scope::Whole, Scope::Main, Scope::Status] {
            let mut wr = w("kubectl", &meta);
            wr.scope = scope;
            let fs = field_set(&obj, &meta, scope);
            let want = managed_fields_value(&[wr.entry(Operation::Update, fs)]);
            assert_eq!(record_create(&obj, &wr), want, "{scope:?}");
        }
        let empty = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "n"}});
        assert_eq!(record_create(&empty, &w("k", &meta)), json!([]));
    }

    #[test]
    fn a_configs_field_set_has_leaves_keyed_elements_and_atomic_lists() {
        let meta = deploy_meta();
        let mut cfg = mk_deploy(3, json!({"app": "web"}), "nginx");
        cfg["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["-v"]);
        cfg["metadata"]["finalizers"] = json!(["a.io/x"]);
        cfg["status"] = json!({"replicas": 1});
        let fs = field_set(&cfg, &meta, Scope::Main);
        assert_eq!(
            fs.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}, "f:finalizers": {"v:\"a.io/x\"": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {"f:matchLabels": {"f:app": {}}},
                    "f:template": {"f:spec": {"f:containers": {
                        "k:{\"name\":\"app\"}": {".": {}, "f:name": {}, "f:image": {}, "f:args": {}}
                    }}}
                }
            })
        );
        assert!(fs.contains(&path(&["f:spec", "f:replicas"])));
        assert!(
            !fs.contains(&path(&["f:spec"])),
            "a map is not owned itself"
        );
        assert!(
            !fs.touches(&path(&["f:status"])),
            "status is the subresource's"
        );
    }

    #[test]
    fn a_list_without_a_merge_key_is_owned_whole() {
        let cfg = json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}});
        let fs = field_set(&cfg, PatchMeta::empty(), Scope::Whole);
        assert_eq!(fs.to_fields_v1(), json!({"f:spec": {"f:tolerations": {}}}));
    }

    #[test]
    fn fields_v1_round_trips_through_parse_and_serialize() {
        let v = json!({"f:metadata": {"f:labels": {".": {}, "f:a": {}}},
                       "f:spec": {"f:c": {"k:{\"name\":\"x\"}": {".": {}, "f:image": {}}}}});
        let fs = FieldSet::from_fields_v1(&v).unwrap();
        assert!(fs.contains(&path(&["f:metadata", "f:labels"])));
        assert!(fs.contains(&path(&["f:spec", "f:c", "k:{\"name\":\"x\"}"])));
        assert_eq!(fs.to_fields_v1(), v);
        assert!(FieldSet::from_fields_v1(&json!({"x:bad": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
    }

    #[test]
    fn merge_overrides_scalars_merges_maps_and_keyed_elements_and_replaces_atomic_lists() {
        let meta = deploy_meta();
        let mut live = mk_deploy(1, json!({"app": "web", "team": "a"}), "nginx:1");
        live["spec"]["template"]["spec"]["containers"] = json!([
            {"name": "app", "image": "nginx:1", "resources": {"limits": {"cpu": "1"}}},
            {"name": "sidecar", "image": "envoy"}]);
        live["spec"]["template"]["spec"]["tolerations"] = json!([{"key": "a"}]);
        let cfg = json!({"metadata": {"labels": {"app": "web2"}},
            "spec": {"replicas": 3, "template": {"spec": {
                "containers": [{"name": "app", "image": "nginx:2"}, {"name": "new", "image": "x"}],
                "tolerations": [{"key": "b"}]}}}});
        merge_into(&mut live, &cfg, &meta);
        assert_eq!(live["spec"]["replicas"], 3);
        assert_eq!(
            live["metadata"]["labels"],
            json!({"app": "web2", "team": "a"})
        );
        let cs = &live["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            cs[0],
            json!({"name": "app", "image": "nginx:2", "resources": {"limits": {"cpu": "1"}}})
        );
        assert_eq!(cs[1]["name"], "sidecar");
        assert_eq!(cs[2]["name"], "new");
        assert_eq!(
            live["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "b"}])
        );
    }

    #[test]
    fn applying_creates_an_apply_entry_with_exactly_the_configs_fields() {
        let meta = deploy_meta();
        let live = mk_deploy(1, json!({"app": "web"}), "nginx");
        let cfg = json!({"spec": {"replicas": 2}});
        let (new, managed) = apply(&live, &cfg, &w("ctl", &meta), false).unwrap();
        assert_eq!(new["spec"]["replicas"], 2);
        assert_eq!(managed[0]["manager"], "ctl");
        assert_eq!(managed[0]["operation"], "Apply");
        assert_eq!(managed[0]["fieldsType"], "FieldsV1");
        assert_eq!(
            managed[0]["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
    }

    /// Applies `cfg` over `live` as `mgr` and returns the object with its managedFields.
    fn applied(live: &Value, cfg: &Value, mgr: &str, force: bool) -> Result<Value, Vec<Conflict>> {
        let meta = deploy_meta();
        let (mut new, managed) = apply(live, cfg, &w(mgr, &meta), force)?;
        set_managed_fields(&mut new, managed);
        Ok(new)
    }

    #[test]
    fn a_field_dropped_from_the_config_is_removed() {
        let live = mk_deploy(1, json!({}), "nginx");
        let v1 = applied(
            &live,
            &json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            "ctl",
            false,
        )
        .unwrap();
        let v2 = applied(
            &v1,
            &json!({"metadata": {"labels": {"a": "1"}}}),
            "ctl",
            false,
        )
        .unwrap();
        assert_eq!(v2["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(
            v2["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:a": {}}}})
        );
    }

    #[test]
    fn a_field_covers_what_is_in_it_unless_it_is_an_element_owned_field_by_field() {
        let mut fs = FieldSet::default();
        fs.insert(&path(&["f:spec", "f:tolerations"]));
        fs.insert(&path(&["f:spec", "f:containers", "k:{\"name\":\"app\"}"]));
        fs.insert(&path(&[
            "f:spec",
            "f:containers",
            "k:{\"name\":\"app\"}",
            "f:image",
        ]));
        assert!(fs.covers(&path(&["f:spec", "f:tolerations", "i:0"])));
        assert!(fs.covers(&path(&[
            "f:spec",
            "f:containers",
            "k:{\"name\":\"app\"}",
            "f:image"
        ])));
        assert!(!fs.covers(&path(&[
            "f:spec",
            "f:containers",
            "k:{\"name\":\"app\"}",
            "f:env"
        ])));
        assert!(!fs.covers(&path(&["f:spec", "f:replicas"])));
    }

    #[test]
    fn a_dropped_field_another_manager_also_owns_is_kept() {
        let live = mk_deploy(1, json!({}), "nginx");
        let v1 = applied(
            &live,
            &json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            "ctl",
            false,
        )
        .unwrap();
        let v2 = applied(
            &v1,
            &json!({"metadata": {"labels": {"b": "2"}}}),
            "other",
            false,
        )
        .unwrap();
        let v3 = applied(
            &v2,
            &json!({"metadata": {"labels": {"a": "1"}}}),
            "ctl",
            false,
        )
        .unwrap();
        assert_eq!(v3["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        let owners: Vec<&str> = v3["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(owners, ["ctl", "other"]);
    }

    #[test]
    fn a_dropped_container_is_removed_unless_someone_owns_a_field_of_it() {
        let live = mk_deploy(1, json!({}), "nginx");
        let two = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a"}, {"name": "side", "image": "s"}]}}}});
        let one = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a"}]}}}});
        let v1 = applied(&live, &two, "ctl", false).unwrap();
        let v2 = applied(&v1, &one, "ctl", false).unwrap();
        assert_eq!(
            v2["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let other = json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "s"}]}}}});
        let v3 = applied(&v1, &other, "other", false).unwrap();
        let v4 = applied(&v3, &one, "ctl", false).unwrap();
        assert_eq!(
            v4["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn changing_a_field_another_manager_owns_conflicts_unless_forced() {
        let live = mk_deploy(1, json!({}), "nginx");
        let v1 = applied(&live, &json!({"spec": {"replicas": 3}}), "ctl", false).unwrap();
        let err = applied(&v1, &json!({"spec": {"replicas": 5}}), "other", false).unwrap_err();
        assert_eq!(
            err,
            [Conflict {
                manager: "\"ctl\"".into(),
                field: ".spec.replicas".into(),
                path: path(&["f:spec", "f:replicas"]),
            }]
        );
        assert_eq!(
            conflicts_message(&err),
            "Apply failed with 1 conflict: conflict with \"ctl\": .spec.replicas"
        );
        let v2 = applied(&v1, &json!({"spec": {"replicas": 5}}), "other", true).unwrap();
        assert_eq!(v2["spec"]["replicas"], 5);
        let mf = v2["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 1, "ctl owned nothing else: {mf:?}");
        assert_eq!(mf[0]["manager"], "other");
    }

    #[test]
    fn kubectl_takes_over_fields_its_client_side_apply_recorded_as_last_applied() {
        let meta = deploy_meta();
        let mut live = mk_deploy(1, json!({"a": "1"}), "nginx");
        let managed = record_create(&live, &w("kubectl-client-side-apply", &meta));
        set_managed_fields(&mut live, managed);
        let cfg = json!({"metadata": {"labels": {"a": "2"}}});
        let conflicts = applied(&live, &cfg, "kubectl", false).unwrap_err();
        assert!(
            !upgrades_client_side_apply(&live, &conflicts, &w("kubectl", &meta)),
            "no annotation"
        );
        live["metadata"]["annotations"] =
            json!({LAST_APPLIED: r#"{"metadata":{"labels":{"a":"1"}}}"#});
        assert!(upgrades_client_side_apply(
            &live,
            &conflicts,
            &w("kubectl", &meta)
        ));
        assert!(
            !upgrades_client_side_apply(&live, &conflicts, &w("someone", &meta)),
            "kubectl only"
        );
        live["metadata"]["annotations"] =
            json!({LAST_APPLIED: r#"{"metadata":{"labels":{"b":"1"}}}"#});
        assert!(
            !upgrades_client_side_apply(&live, &conflicts, &w("kubectl", &meta)),
            "a not in it"
        );
    }

    #[test]
    fn applying_the_value_another_manager_set_shares_the_field() {
        let live = mk_deploy(1, json!({}), "nginx");
        let v1 = applied(&live, &json!({"spec": {"replicas": 3}}), "ctl", false).unwrap();
        let v2 = applied(&v1, &json!({"spec": {"replicas": 3}}), "other", false).unwrap();
        let mf = v2["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 2);
        assert!(
            mf.iter()
                .all(|e| e["fieldsV1"] == json!({"f:spec": {"f:replicas": {}}}))
        );
    }

    #[test]
    fn owners_of_different_fields_of_one_container_do_not_conflict() {
        let live = mk_deploy(1, json!({}), "nginx");
        let a = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a"}]}}}});
        let b = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "args": ["-v"]}]}}}});
        let v1 = applied(&live, &a, "ctl", false).unwrap();
        let v2 = applied(&v1, &b, "other", false).unwrap();
        assert_eq!(
            v2["spec"]["template"]["spec"]["containers"][0],
            json!({"name": "app", "image": "a", "args": ["-v"]})
        );
    }

    #[test]
    fn an_update_takes_the_fields_it_changed_from_their_owner() {
        let meta = deploy_meta();
        let live = mk_deploy(1, json!({"a": "1"}), "nginx");
        let v1 = applied(
            &live,
            &json!({"spec": {"replicas": 3}, "metadata": {"labels": {"a": "1"}}}),
            "ctl",
            false,
        )
        .unwrap();
        let mut edited = v1.clone();
        edited["spec"]["replicas"] = json!(4);
        let managed = record_update(&v1, &edited, &w("kubectl-edit", &meta));
        set_managed_fields(&mut edited, managed);
        let mf = managed_fields(&edited);
        assert_eq!(
            mf[0].fields.to_fields_v1(),
            json!({"f:metadata": {"f:labels": {"f:a": {}}}})
        );
        assert_eq!(mf[1].manager, "kubectl-edit");
        assert_eq!(mf[1].operation, Operation::Update);
        assert_eq!(
            mf[1].fields.to_fields_v1(),
            json!({"f:spec": {"f:replicas": {}}})
        );
        // Re-applying the old value now conflicts with the editor.
        let err = applied(&edited, &json!({"spec": {"replicas": 3}}), "ctl", false).unwrap_err();
        assert_eq!(err[0].manager, "\"kubectl-edit\" using apps/v1");
    }

    #[test]
    fn an_update_that_changes_nothing_leaves_managed_fields_alone() {
        let meta = deploy_meta();
        let v1 = applied(
            &mk_deploy(1, json!({}), "x"),
            &json!({"spec": {"replicas": 3}}),
            "ctl",
            false,
        )
        .unwrap();
        let managed = record_update(&v1, &v1, &w("other", &meta));
        assert_eq!(managed, v1["metadata"]["managedFields"]);
    }

    #[test]
    fn a_removed_field_belongs_to_no_one() {
        let meta = deploy_meta();
        let v1 = applied(
            &mk_deploy(1, json!({}), "x"),
            &json!({"metadata": {"labels": {"a": "1"}}}),
            "ctl",
            false,
        )
        .unwrap();
        let mut edited = v1.clone();
        edited["metadata"]["labels"] = json!({});
        let managed = record_update(&v1, &edited, &w("kubectl-label", &meta));
        assert_eq!(managed, json!([]));
    }

    #[test]
    fn a_create_owns_every_field_but_server_metadata() {
        let meta = deploy_meta();
        let obj = mk_deploy(1, json!({"a": "1"}), "x");
        let managed = record_create(&obj, &w("kubectl-create", &meta));
        let fs = FieldSet::from_fields_v1(&managed[0]["fieldsV1"]).unwrap();
        assert!(fs.contains(&path(&["f:metadata", "f:labels", "f:a"])));
        assert!(!fs.touches(&path(&["f:metadata", "f:name"])));
        assert!(!fs.touches(&path(&["f:metadata", "f:uid"])));
        assert!(!fs.touches(&path(&["f:apiVersion"])));
        assert!(fs.contains(&path(&[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"app\"}",
            "f:image"
        ])));
    }

    #[test]
    fn keyed_elements_without_their_key_are_named_in_the_error() {
        let meta = deploy_meta();
        let cfg = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let err = check_config(&cfg, &meta).unwrap_err();
        assert!(err.starts_with("spec.template.spec.containers[0]"), "{err}");
        let dup =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}});
        assert!(check_config(&dup, &meta).unwrap_err().contains("duplicate"));
    }

    #[test]
    fn conflict_paths_read_like_kubernetes() {
        assert_eq!(
            display_path(&path(&[
                "f:spec",
                "f:containers",
                "k:{\"name\":\"app\"}",
                "f:image"
            ])),
            ".spec.containers[name=\"app\"].image"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_set() -> impl Strategy<Value = FieldSet> {
            let pe = prop_oneof![
                "[a-z]{1,3}".prop_map(|s| format!("f:{s}")),
                "[a-z]{1,3}".prop_map(|s| format!("k:{{\"name\":\"{s}\"}}")),
            ];
            proptest::collection::vec(proptest::collection::vec(pe, 1..4), 0..8).prop_map(|paths| {
                let mut fs = FieldSet::default();
                for p in paths {
                    fs.insert(&p);
                }
                fs
            })
        }

        fn arb_obj() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<i64>().prop_map(|n| json!(n)),
                "[a-z]{0,3}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 40, 5, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::btree_map(
                        prop_oneof![
                            Just("name".to_string()),
                            Just("containers".to_string()),
                            Just("finalizers".to_string()),
                            Just("metadata".to_string()),
                            Just("spec".to_string()),
                            Just("template".to_string()),
                            "[a-z]{1,4}"
                        ],
                        inner,
                        0..5,
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn a_creates_managed_fields_match_its_field_set_for_any_object(obj in arb_obj()) {
                let meta = deploy_meta();
                for scope in [Scope::Whole, Scope::Main, Scope::Status] {
                    let mut wr = w("m", &meta);
                    wr.scope = scope;
                    let want = managed_fields_value(&[wr.entry(Operation::Update, field_set(&obj, &meta, scope))]);
                    prop_assert_eq!(record_create(&obj, &wr), want);
                }
            }

            #[test]
            fn any_field_set_round_trips_through_fields_v1(fs in arb_set()) {
                prop_assert_eq!(FieldSet::from_fields_v1(&fs.to_fields_v1()).unwrap(), fs);
            }

            #[test]
            fn difference_and_intersection_partition_a_set(a in arb_set(), b in arb_set()) {
                let mut back = a.difference(&b);
                back.union(&a.intersection(&b));
                prop_assert_eq!(back, a);
            }
        }
    }
}
