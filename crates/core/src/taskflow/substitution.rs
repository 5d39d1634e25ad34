//! Variable references — `$(params.p)`, `$(tasks.t.results.r)`, `$(context.pipelineRun.name)`
//! — found in parameter values and `when` guards, and their substitution.
//!
//! ```text
//! $(params.NAME)                    a run parameter (string, or the whole value when alone)
//! $(params.NAME[*])                 a whole array/object parameter (only alone in a value)
//! $(params.NAME[2])  $(params.NAME.KEY)   one element of an array / object
//! $(tasks.TASK.results.NAME…)       a result of another task, same selectors as params
//! $(tasks.TASK.status)              Succeeded | Failed | None       (finally tasks only)
//! $(tasks.status)                   Succeeded | Failed | Completed | None (finally only)
//! $(context.pipelineRun.name|namespace|uid)  $(context.pipeline.name)  $(context.taskRun.name)
//! ```
//!
//! A string that is exactly one reference takes the referenced value as it is, so
//! `value: $(params.clusters[*])` passes an array on. Inside a longer string every
//! reference must resolve to a string. As in Tekton, `$(…)` that does not start with
//! `params.`, `tasks.` or `context.` is not a reference and is left alone (shell snippets
//! such as `$(date)` survive); a malformed reference with one of those roots is an error.

use std::fmt;
use std::ops::Range;

use super::params::{ParamValue, is_param_name};

/// What a reference points at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `params.NAME`
    Param(String),
    /// `tasks.TASK.results.NAME`
    Result { task: String, name: String },
    /// `tasks.TASK.status`
    TaskStatus(String),
    /// `tasks.status`
    TasksStatus,
    /// `context.…`
    Context(ContextVar),
}

/// The `context.*` variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContextVar {
    PipelineRunName,
    PipelineRunNamespace,
    PipelineRunUid,
    PipelineName,
    TaskRunName,
}

impl ContextVar {
    const ALL: [(ContextVar, &'static str); 5] = [
        (ContextVar::PipelineRunName, "pipelineRun.name"),
        (ContextVar::PipelineRunNamespace, "pipelineRun.namespace"),
        (ContextVar::PipelineRunUid, "pipelineRun.uid"),
        (ContextVar::PipelineName, "pipeline.name"),
        (ContextVar::TaskRunName, "taskRun.name"),
    ];

    fn path(self) -> &'static str {
        ContextVar::ALL
            .iter()
            .find(|(v, _)| *v == self)
            .map_or("", |(_, p)| p)
    }
}

/// Which part of the referenced value is meant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    /// The value itself (`$(params.p)`).
    Whole,
    /// The whole array or object, explicitly (`$(params.p[*])`).
    All,
    /// One array element (`$(params.p[2])`).
    Index(usize),
    /// One object field (`$(params.p.key)`).
    Key(String),
}

/// One parsed `$(…)` reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    pub target: Target,
    pub selector: Selector,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$(")?;
        match &self.target {
            Target::Param(p) => write!(f, "params.{p}")?,
            Target::Result { task, name } => write!(f, "tasks.{task}.results.{name}")?,
            Target::TaskStatus(t) => write!(f, "tasks.{t}.status")?,
            Target::TasksStatus => f.write_str("tasks.status")?,
            Target::Context(c) => write!(f, "context.{}", c.path())?,
        }
        match &self.selector {
            Selector::Whole => {}
            Selector::All => f.write_str("[*]")?,
            Selector::Index(i) => write!(f, "[{i}]")?,
            Selector::Key(k) => write!(f, ".{k}")?,
        }
        f.write_str(")")
    }
}

/// A reference found in a string: where it is and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Byte range of the whole `$(…)` in the string.
    pub span: Range<usize>,
    /// The reference, or why it is malformed.
    pub reference: Result<Reference, String>,
    /// Whether the reference is the whole string (and so may stand for any type).
    pub alone: bool,
}

/// Every reference in `s`, in order.
pub fn scan(s: &str) -> Vec<Found> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = s[from..].find("$(").map(|i| i + from) {
        let Some(close) = s[open..].find(')').map(|i| i + open) else {
            break;
        };
        let inner = &s[open + 2..close];
        if let Some(reference) = parse(inner) {
            out.push(Found {
                span: open..close + 1,
                reference,
                alone: open == 0 && close + 1 == s.len(),
            });
        }
        from = close + 1;
    }
    out
}

/// Every reference in a value, each with the path suffix of the string it is in
/// (`""` for a string, `"[2]"` for an array element, `".key"` for an object value).
pub fn scan_value(v: &ParamValue) -> Vec<(String, Found)> {
    match v {
        ParamValue::String(s) => scan(s).into_iter().map(|f| (String::new(), f)).collect(),
        ParamValue::Array(items) => items
            .iter()
            .enumerate()
            .flat_map(|(i, s)| scan(s).into_iter().map(move |f| (format!("[{i}]"), f)))
            .collect(),
        ParamValue::Object(map) => map
            .iter()
            .flat_map(|(k, s)| scan(s).into_iter().map(move |f| (format!(".{k}"), f)))
            .collect(),
    }
}

/// Parses the inside of `$(…)`; `None` when it is not a reference at all.
fn parse(inner: &str) -> Option<Result<Reference, String>> {
    let malformed = |why: &str| Some(Err(format!("malformed reference \"$({inner})\": {why}")));
    if let Some(rest) = inner.strip_prefix("params.") {
        return Some(
            name_and_selector(rest)
                .map(|(name, selector)| Reference {
                    target: Target::Param(name.to_string()),
                    selector,
                })
                .map_err(|why| format!("malformed reference \"$({inner})\": {why}")),
        );
    }
    if let Some(rest) = inner.strip_prefix("tasks.") {
        if rest == "status" {
            return Some(Ok(Reference {
                target: Target::TasksStatus,
                selector: Selector::Whole,
            }));
        }
        let Some((task, rest)) = rest.split_once('.') else {
            return malformed("expected tasks.TASK.results.NAME or tasks.TASK.status");
        };
        if task.is_empty() {
            return malformed("empty task name");
        }
        if rest == "status" {
            return Some(Ok(Reference {
                target: Target::TaskStatus(task.to_string()),
                selector: Selector::Whole,
            }));
        }
        let Some(rest) = rest.strip_prefix("results.") else {
            return malformed("expected tasks.TASK.results.NAME or tasks.TASK.status");
        };
        return Some(
            name_and_selector(rest)
                .map(|(name, selector)| Reference {
                    target: Target::Result {
                        task: task.to_string(),
                        name: name.to_string(),
                    },
                    selector,
                })
                .map_err(|why| format!("malformed reference \"$({inner})\": {why}")),
        );
    }
    if let Some(rest) = inner.strip_prefix("context.") {
        return Some(
            ContextVar::ALL
                .iter()
                .find(|(_, p)| *p == rest)
                .map(|(v, _)| Reference {
                    target: Target::Context(*v),
                    selector: Selector::Whole,
                })
                .ok_or_else(|| {
                    let known: Vec<String> = ContextVar::ALL
                        .iter()
                        .map(|(_, p)| format!("context.{p}"))
                        .collect();
                    format!(
                        "unknown context variable \"$({inner})\" (known: {})",
                        known.join(", ")
                    )
                }),
        );
    }
    None
}

/// `NAME`, `NAME[*]`, `NAME[3]` or `NAME.KEY`.
fn name_and_selector(s: &str) -> Result<(&str, Selector), String> {
    let end = s.find(['[', '.']).unwrap_or(s.len());
    let (name, sel) = s.split_at(end);
    if !is_param_name(name) {
        return Err(format!("{name:?} is not a valid name"));
    }
    let selector = if sel.is_empty() {
        Selector::Whole
    } else if sel == "[*]" {
        Selector::All
    } else if let Some(idx) = sel.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Selector::Index(
            idx.parse()
                .map_err(|_| format!("{idx:?} is not an array index"))?,
        )
    } else if let Some(key) = sel.strip_prefix('.')
        && !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Selector::Key(key.to_string())
    } else {
        return Err(format!("{sel:?} is not [*], [INDEX] or .KEY"));
    };
    Ok((name, selector))
}

/// Where references get their values.
pub trait Scope {
    /// The whole value `target` names.
    ///
    /// # Errors
    /// A message saying why the value is not available.
    fn lookup(&self, target: &Target) -> Result<ParamValue, String>;
}

fn select(r: &Reference, v: ParamValue) -> Result<ParamValue, String> {
    match (&r.selector, v) {
        (Selector::Whole, v) => Ok(v),
        (Selector::All, v @ (ParamValue::Array(_) | ParamValue::Object(_))) => Ok(v),
        (Selector::Index(i), ParamValue::Array(items)) => items
            .get(*i)
            .cloned()
            .map(ParamValue::String)
            .ok_or_else(|| format!("{r}: index {i} is out of range ({} items)", items.len())),
        (Selector::Key(k), ParamValue::Object(map)) => map
            .get(k)
            .cloned()
            .map(ParamValue::String)
            .ok_or_else(|| format!("{r}: the object has no key {k:?}")),
        (_, v) => Err(format!(
            "{r}: the value is {}, not {}",
            v.type_(),
            match r.selector {
                Selector::Index(_) => "an array",
                Selector::Key(_) => "an object",
                _ => "an array or an object",
            }
        )),
    }
}

fn lookup(r: &Reference, scope: &dyn Scope) -> Result<ParamValue, String> {
    select(r, scope.lookup(&r.target)?)
}

/// Substitutes the references in one string.
///
/// A string that is exactly one reference becomes the referenced value, whatever its
/// type; otherwise every reference must resolve to a string and the result is a string.
///
/// # Errors
/// A message naming the reference that is malformed, unavailable or of the wrong type.
pub fn resolve_str(s: &str, scope: &dyn Scope) -> Result<ParamValue, String> {
    let found = scan(s);
    if let [only] = found.as_slice()
        && only.alone
    {
        let r = only.reference.as_ref().map_err(Clone::clone)?;
        return lookup(r, scope);
    }
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for f in found {
        let r = f.reference?;
        out.push_str(&s[last..f.span.start]);
        match lookup(&r, scope)? {
            ParamValue::String(v) => out.push_str(&v),
            other => {
                return Err(format!(
                    "{r} is an {} and can only be used alone, as the whole value",
                    other.type_()
                ));
            }
        }
        last = f.span.end;
    }
    out.push_str(&s[last..]);
    Ok(ParamValue::String(out))
}

/// Substitutes the references in a value. Array elements that are exactly one
/// array-valued reference are spliced in (`["a", "$(params.more[*])"]`).
///
/// # Errors
/// As [`resolve_str`], and when an object value would become anything but a string.
pub fn resolve(v: &ParamValue, scope: &dyn Scope) -> Result<ParamValue, String> {
    match v {
        ParamValue::String(s) => resolve_str(s, scope),
        ParamValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match resolve_str(item, scope)? {
                    ParamValue::String(s) => out.push(s),
                    ParamValue::Array(more) => out.extend(more),
                    ParamValue::Object(_) => {
                        return Err(format!(
                            "{item:?} is an object and cannot be an array element"
                        ));
                    }
                }
            }
            Ok(ParamValue::Array(out))
        }
        ParamValue::Object(map) => {
            let mut out = std::collections::BTreeMap::new();
            for (k, item) in map {
                match resolve_str(item, scope)? {
                    ParamValue::String(s) => {
                        out.insert(k.clone(), s);
                    }
                    other => {
                        return Err(format!(
                            "{item:?} is an {} and cannot be an object value",
                            other.type_()
                        ));
                    }
                }
            }
            Ok(ParamValue::Object(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Fixed(BTreeMap<Target, ParamValue>);

    impl Scope for Fixed {
        fn lookup(&self, t: &Target) -> Result<ParamValue, String> {
            self.0
                .get(t)
                .cloned()
                .ok_or_else(|| format!("{t:?} unknown"))
        }
    }

    fn mk_scope() -> Fixed {
        Fixed(BTreeMap::from([
            (Target::Param("env".into()), ParamValue::from("prod")),
            (
                Target::Param("clusters".into()),
                ParamValue::from(vec!["c1", "c2"]),
            ),
            (
                Target::Result {
                    task: "build".into(),
                    name: "image".into(),
                },
                ParamValue::from("reg/app:1"),
            ),
            (
                Target::Param("cfg".into()),
                ParamValue::Object(BTreeMap::from([("zone".into(), "z1".into())])),
            ),
        ]))
    }

    fn reference(s: &str) -> Reference {
        scan(s)[0].reference.clone().unwrap()
    }

    #[test]
    fn references_parse_into_targets_and_selectors() {
        assert_eq!(
            reference("$(params.env)"),
            Reference {
                target: Target::Param("env".into()),
                selector: Selector::Whole
            }
        );
        assert_eq!(reference("$(params.a[*])").selector, Selector::All);
        assert_eq!(reference("$(params.a[3])").selector, Selector::Index(3));
        assert_eq!(
            reference("$(params.a.zone)").selector,
            Selector::Key("zone".into())
        );
        assert_eq!(
            reference("$(tasks.build.results.image)").target,
            Target::Result {
                task: "build".into(),
                name: "image".into()
            }
        );
        assert_eq!(
            reference("$(tasks.build.status)").target,
            Target::TaskStatus("build".into())
        );
        assert_eq!(reference("$(tasks.status)").target, Target::TasksStatus);
        assert_eq!(
            reference("$(context.pipelineRun.name)").target,
            Target::Context(ContextVar::PipelineRunName)
        );
    }

    #[test]
    fn references_display_as_they_are_written() {
        for s in [
            "$(params.env)",
            "$(params.a[*])",
            "$(params.a[3])",
            "$(params.a.k)",
            "$(tasks.t.results.r[*])",
            "$(tasks.t.status)",
            "$(tasks.status)",
            "$(context.taskRun.name)",
        ] {
            assert_eq!(reference(s).to_string(), s);
        }
    }

    #[test]
    fn foreign_dollar_parens_are_not_references_but_malformed_ones_are_errors() {
        assert!(scan("echo $(date) $(PATH) $(params.env").is_empty());
        for bad in [
            "$(params.)",
            "$(params.a[x])",
            "$(params.a.)",
            "$(tasks.t)",
            "$(tasks.t.result.r)",
            "$(context.nope)",
        ] {
            let found = scan(bad);
            assert_eq!(found.len(), 1, "{bad}");
            assert!(found[0].reference.is_err(), "{bad}");
        }
    }

    #[test]
    fn a_lone_reference_keeps_the_type_of_its_value() {
        let s = mk_scope();
        assert_eq!(
            resolve_str("$(params.clusters[*])", &s),
            Ok(ParamValue::from(vec!["c1", "c2"]))
        );
        assert_eq!(resolve_str("$(params.clusters[1])", &s), Ok("c2".into()));
        assert_eq!(resolve_str("$(params.cfg.zone)", &s), Ok("z1".into()));
    }

    #[test]
    fn references_inside_longer_strings_must_be_strings() {
        let s = mk_scope();
        assert_eq!(
            resolve_str("deploy $(tasks.build.results.image) to $(params.env)", &s),
            Ok("deploy reg/app:1 to prod".into())
        );
        let err = resolve_str("to $(params.clusters[*])", &s).unwrap_err();
        assert!(err.contains("only be used alone"), "{err}");
        assert!(resolve_str("$(params.missing)", &s).is_err());
        assert!(
            resolve_str("$(params.clusters[5])", &s)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            resolve_str("$(params.env[0])", &s)
                .unwrap_err()
                .contains("not an array")
        );
    }

    #[test]
    fn array_elements_that_are_whole_arrays_are_spliced() {
        let s = mk_scope();
        let v = ParamValue::from(vec!["c0", "$(params.clusters[*])", "$(params.env)"]);
        assert_eq!(
            resolve(&v, &s),
            Ok(ParamValue::from(vec!["c0", "c1", "c2", "prod"]))
        );
    }

    #[test]
    fn scanning_a_value_reports_the_path_of_each_reference() {
        let v = ParamValue::from(vec!["x", "$(params.a) $(params.b)"]);
        let paths: Vec<String> = scan_value(&v).into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["[1]", "[1]"]);
    }
}
