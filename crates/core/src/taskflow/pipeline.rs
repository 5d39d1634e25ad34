//! `Pipeline`: a DAG of task references with parameters, `when` guards, matrix fan-out,
//! `finally` tasks and pipeline results — Tekton's `Pipeline.spec`, with its field names.
//!
//! Admission ([`Validate`]) rejects what can never run, each problem as a [`FieldError`]
//! naming its field (`spec.tasks[2].runAfter[0]`, `spec.tasks[1].params[0].value`):
//!
//! - task names: DNS labels, unique across `tasks` and `finally`;
//! - `runAfter` names an existing task of `tasks`, not itself, not a finally task;
//!   finally tasks have no `runAfter`;
//! - `$(tasks.X.results.Y)` names an existing task other than itself (tasks may only use
//!   results of tasks, finally tasks those of tasks); `$(tasks.X.status)` and
//!   `$(tasks.status)` only in finally tasks;
//! - `$(params.p)` names a declared parameter, with a selector fitting its type;
//! - no dependency cycle (the message shows its path, the field is `spec.tasks`);
//! - `when` has an input and values; matrix parameters are non-empty lists (or a whole
//!   array reference) not also passed as plain parameters;
//! - durations parse.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dag::Dag;
use super::params::{self, Param, ParamSpec, ParamType, ParamValue, is_param_name};
use super::substitution::{self, ContextVar, Found, Selector, Target};
use super::task::validate_duration;
use crate::kinds::Validate;
use crate::validation::{self, FieldError, FieldErrorKind};

/// The most instances one matrix may fan out to. Tekton's default is 256; a fan-out
/// wider than that is better expressed as several pipeline runs (or a release's waves)
/// than as one run whose status lists thousands of entries.
pub const MAX_MATRIX_COMBINATIONS: usize = 256;

/// A graph of tasks.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "Pipeline",
    plural = "pipelines",
    namespaced,
    category = "shoal",
    printcolumn = r#"{"name":"Description","type":"string","priority":1,"jsonPath":".spec.description"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Parameters a run passes in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamSpec>,
    /// The tasks, ordered by `runAfter` and by the results they use.
    #[serde(default)]
    pub tasks: Vec<PipelineTask>,
    /// Tasks that run once every task is done (succeeded, failed or skipped), or when the
    /// run is cancelled with `CancelledRunFinally`/`StoppedRunFinally`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<PipelineTask>,
    /// Values the run reports when it completes, usually from task results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<PipelineResult>,
    /// At most this many runs of this pipeline run at once; later ones wait, oldest
    /// first, as `Succeeded=Unknown` with reason `Queued` (see [`super::queue`]). At
    /// least 1; unset for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_runs: Option<u32>,
}

/// One task of a pipeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineTask {
    /// Unique within the pipeline (a DNS label).
    pub name: String,
    /// The `Task` to run.
    pub task_ref: TaskRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tasks that must have finished (succeeded, or been skipped by their own `when`)
    /// first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_after: Vec<String>,
    /// Guards: the task runs only when all are true; otherwise it is skipped and the
    /// tasks after it still run (unless they use its results).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<WhenExpression>,
    /// Values for the Task's parameters; may use `$(params.…)`, `$(tasks.….results.…)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    /// Fan-out: one instance per combination of these parameters' values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<Matrix>,
    /// Overrides the Task's timeout per attempt (a Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Overrides the Task's number of retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// A reference to a `Task` in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct TaskRef {
    pub name: String,
}

/// A guard: `input` (usually a reference) `in` / `notin` `values`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct WhenExpression {
    pub input: String,
    pub operator: WhenOperator,
    pub values: Vec<String>,
}

/// The operator of a `when` expression.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WhenOperator {
    #[serde(rename = "in")]
    In,
    #[serde(rename = "notin")]
    NotIn,
}

/// Matrix fan-out: each parameter's list of values; one task instance per combination.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Matrix {
    /// Each value is a list, or a whole-array reference (`$(params.clusters[*])`).
    pub params: Vec<Param>,
}

/// A value the pipeline reports when its run completes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct PipelineResult {
    pub name: String,
    pub value: ParamValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl PipelineTask {
    /// Every `$(…)` reference in the task, each with its field path relative to the task
    /// (`params[0].value`, `when[1].values[0]`, `matrix.params[0].value[2]`).
    pub fn references(&self) -> Vec<(String, Found)> {
        let mut out = Vec::new();
        for (j, p) in self.params.iter().enumerate() {
            for (suffix, f) in substitution::scan_value(&p.value) {
                out.push((format!("params[{j}].value{suffix}"), f));
            }
        }
        for (j, w) in self.when.iter().enumerate() {
            for f in substitution::scan(&w.input) {
                out.push((format!("when[{j}].input"), f));
            }
            for (k, v) in w.values.iter().enumerate() {
                for f in substitution::scan(v) {
                    out.push((format!("when[{j}].values[{k}]"), f));
                }
            }
        }
        for (j, p) in self.matrix.iter().flat_map(|m| m.params.iter()).enumerate() {
            for (suffix, f) in substitution::scan_value(&p.value) {
                out.push((format!("matrix.params[{j}].value{suffix}"), f));
            }
        }
        out
    }

    /// The targets of every well-formed reference in the task.
    pub fn targets(&self) -> impl Iterator<Item = Target> + '_ {
        self.references()
            .into_iter()
            .filter_map(|(_, f)| f.reference.ok().map(|r| r.target))
    }

    /// The tasks whose results this task uses.
    pub fn result_sources(&self) -> std::collections::BTreeSet<String> {
        self.targets()
            .filter_map(|t| match t {
                Target::Result { task, .. } => Some(task),
                _ => None,
            })
            .collect()
    }
}

impl PipelineSpec {
    /// The pipeline task named `name`, and whether it is a finally task.
    pub fn task(&self, name: &str) -> Option<(&PipelineTask, bool)> {
        self.tasks
            .iter()
            .find(|t| t.name == name)
            .map(|t| (t, false))
            .or_else(|| {
                self.finally
                    .iter()
                    .find(|t| t.name == name)
                    .map(|t| (t, true))
            })
    }

    /// Every problem with the spec, with field paths rooted at `spec`.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.tasks.is_empty() {
            errs.push(FieldError::new(
                "spec.tasks",
                FieldErrorKind::Required,
                "a pipeline needs at least one task",
            ));
        }
        if self.max_concurrent_runs == Some(0) {
            errs.push(FieldError::invalid(
                "spec.maxConcurrentRuns",
                "must be at least 1 (leave it unset for no limit)",
            ));
        }
        errs.extend(params::validate_specs("spec.params", &self.params));
        let declared: BTreeMap<&str, ParamType> = self
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.type_))
            .collect();

        // Names, unique across both sections.
        let mut first_at: BTreeMap<&str, String> = BTreeMap::new();
        for (section, list) in [("spec.tasks", &self.tasks), ("spec.finally", &self.finally)] {
            for (i, t) in list.iter().enumerate() {
                let at = format!("{section}[{i}]");
                for e in validation::dns1123_label(&t.name) {
                    errs.push(FieldError::invalid(
                        format!("{at}.name"),
                        format!("{:?}: {e}", t.name),
                    ));
                }
                if let Some(first) = first_at.get(t.name.as_str()) {
                    errs.push(FieldError::invalid(
                        format!("{at}.name"),
                        format!("{:?}: duplicate task name (also {first})", t.name),
                    ));
                } else {
                    first_at.insert(&t.name, at.clone());
                }
            }
        }
        let is_task = |n: &str| self.tasks.iter().any(|t| t.name == n);
        let is_finally = |n: &str| self.finally.iter().any(|t| t.name == n);

        for (section, list) in [("spec.tasks", &self.tasks), ("spec.finally", &self.finally)] {
            let in_finally = section == "spec.finally";
            for (i, t) in list.iter().enumerate() {
                let at = format!("{section}[{i}]");
                errs.extend(validate_task(&at, t, &declared));
                // runAfter
                if in_finally && !t.run_after.is_empty() {
                    errs.push(FieldError::new(
                        format!("{at}.runAfter"),
                        FieldErrorKind::Forbidden,
                        "finally tasks run after all tasks and may not use runAfter",
                    ));
                }
                if !in_finally {
                    for (k, name) in t.run_after.iter().enumerate() {
                        let field = format!("{at}.runAfter[{k}]");
                        if *name == t.name {
                            errs.push(FieldError::invalid(
                                field,
                                format!("{name:?}: a task cannot run after itself"),
                            ));
                        } else if is_finally(name) {
                            errs.push(FieldError::invalid(
                                field,
                                format!(
                                    "{name:?} is a finally task; tasks cannot run after \
                                     finally tasks"
                                ),
                            ));
                        } else if !is_task(name) {
                            errs.push(FieldError::invalid(
                                field,
                                format!("{name:?}: no such task in spec.tasks"),
                            ));
                        }
                    }
                }
                // References to other tasks.
                for (rel, found) in t.references() {
                    let Ok(r) = &found.reference else { continue };
                    let field = format!("{at}.{rel}");
                    match &r.target {
                        Target::Result { task, .. } | Target::TaskStatus(task) => {
                            if *task == t.name {
                                errs.push(FieldError::invalid(
                                    field,
                                    format!("{r}: a task cannot use its own results or status"),
                                ));
                            } else if is_finally(task) {
                                errs.push(FieldError::invalid(
                                    field,
                                    format!(
                                        "{r}: {task:?} is a finally task; only results of \
                                         tasks in spec.tasks can be used"
                                    ),
                                ));
                            } else if !is_task(task) {
                                errs.push(FieldError::invalid(
                                    field,
                                    format!("{r}: no such task in spec.tasks"),
                                ));
                            } else if !in_finally && matches!(r.target, Target::TaskStatus(_)) {
                                errs.push(status_outside_finally(field, r));
                            }
                        }
                        Target::TasksStatus if !in_finally => {
                            errs.push(status_outside_finally(field, r));
                        }
                        Target::Context(ContextVar::TaskRunName) if !rel.starts_with("params") => {
                            errs.push(FieldError::invalid(
                                field,
                                format!("{r}: only parameters know their TaskRun"),
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }

        if let Some(cycle) = Dag::new(&self.tasks).find_cycle() {
            errs.push(FieldError::invalid(
                "spec.tasks",
                format!(
                    "dependency cycle {cycle} (each task waits, by runAfter or by using \
                     results, for the next)"
                ),
            ));
        }

        // Pipeline results.
        let mut seen = BTreeMap::new();
        for (i, res) in self.results.iter().enumerate() {
            let at = format!("spec.results[{i}]");
            if !is_param_name(&res.name) {
                errs.push(FieldError::invalid(
                    format!("{at}.name"),
                    format!("{:?}: {}", res.name, params::PARAM_NAME_RULE),
                ));
            }
            if let Some(first) = seen.insert(res.name.as_str(), i) {
                errs.push(FieldError::invalid(
                    format!("{at}.name"),
                    format!(
                        "{:?}: duplicate name (also spec.results[{first}])",
                        res.name
                    ),
                ));
            }
            for (suffix, found) in substitution::scan_value(&res.value) {
                let field = format!("{at}.value{suffix}");
                let r = match &found.reference {
                    Err(e) => {
                        errs.push(FieldError::invalid(field, e.clone()));
                        continue;
                    }
                    Ok(r) => r,
                };
                match &r.target {
                    Target::Param(_) => {
                        errs.extend(check_param_ref(&field, &found, r, &declared));
                    }
                    Target::Result { task, .. } if !is_task(task) && !is_finally(task) => {
                        errs.push(FieldError::invalid(field, format!("{r}: no such task")));
                    }
                    Target::Context(ContextVar::TaskRunName) => {
                        errs.push(FieldError::invalid(
                            field,
                            format!("{r}: only parameters know their TaskRun"),
                        ));
                    }
                    Target::Result { .. } | Target::Context(_) => {}
                    Target::TaskStatus(_) | Target::TasksStatus => {
                        errs.push(FieldError::invalid(
                            field,
                            format!("{r}: task status cannot be a pipeline result"),
                        ));
                    }
                }
            }
        }
        errs
    }
}

/// Checks of one task that do not need the rest of the pipeline.
fn validate_task(
    at: &str,
    t: &PipelineTask,
    declared: &BTreeMap<&str, ParamType>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if t.task_ref.name.is_empty() {
        errs.push(FieldError::required(format!("{at}.taskRef.name")));
    } else {
        for e in validation::dns1123_subdomain(&t.task_ref.name) {
            errs.push(FieldError::invalid(
                format!("{at}.taskRef.name"),
                format!("{:?}: {e}", t.task_ref.name),
            ));
        }
    }
    errs.extend(params::validate_passed(&format!("{at}.params"), &t.params));
    for (j, w) in t.when.iter().enumerate() {
        if w.input.is_empty() {
            errs.push(FieldError::required(format!("{at}.when[{j}].input")));
        }
        if w.values.is_empty() {
            errs.push(FieldError::new(
                format!("{at}.when[{j}].values"),
                FieldErrorKind::Required,
                "a when expression needs at least one value",
            ));
        }
    }
    if let Some(m) = &t.matrix {
        let mpath = format!("{at}.matrix");
        if m.params.is_empty() {
            errs.push(FieldError::new(
                format!("{mpath}.params"),
                FieldErrorKind::Required,
                "a matrix needs at least one parameter",
            ));
        }
        errs.extend(params::validate_passed(
            &format!("{mpath}.params"),
            &m.params,
        ));
        let mut combinations: usize = 1;
        for (j, p) in m.params.iter().enumerate() {
            let field = format!("{mpath}.params[{j}].value");
            if t.params.iter().any(|q| q.name == p.name) {
                errs.push(FieldError::invalid(
                    format!("{mpath}.params[{j}].name"),
                    format!("{:?} is also passed in {at}.params", p.name),
                ));
            }
            match &p.value {
                ParamValue::Array(items) if items.is_empty() => {
                    errs.push(FieldError::invalid(field, "must be a non-empty list"));
                }
                ParamValue::Array(items) => {
                    combinations = combinations.saturating_mul(items.len());
                }
                ParamValue::String(s) if is_whole_array_ref(s, declared) => {}
                _ => errs.push(FieldError::invalid(
                    field,
                    "must be a non-empty list, or a whole array reference such as \
                         \"$(params.clusters[*])\"",
                )),
            }
        }
        if combinations > MAX_MATRIX_COMBINATIONS {
            errs.push(FieldError::invalid(
                mpath,
                format!(
                    "{combinations} combinations; at most {MAX_MATRIX_COMBINATIONS} are \
                         allowed"
                ),
            ));
        }
    }
    for (rel, found) in t.references() {
        let field = format!("{at}.{rel}");
        match &found.reference {
            Err(e) => errs.push(FieldError::invalid(field, e.clone())),
            Ok(r) if matches!(r.target, Target::Param(_)) => {
                errs.extend(check_param_ref(&field, &found, r, declared));
            }
            Ok(_) => {}
        }
    }
    errs.extend(validate_duration(
        &format!("{at}.timeout"),
        t.timeout.as_deref(),
    ));
    errs
}

fn status_outside_finally(field: String, r: &substitution::Reference) -> FieldError {
    FieldError::invalid(
        field,
        format!("{r}: task status can only be used by finally tasks"),
    )
}

/// Whether `s` is exactly one reference to a whole array: `$(…[*])`, or `$(params.p)`
/// of an array parameter.
fn is_whole_array_ref(s: &str, declared: &BTreeMap<&str, ParamType>) -> bool {
    match substitution::scan(s).as_slice() {
        [only] if only.alone => match &only.reference {
            Ok(r) => match (&r.target, &r.selector) {
                (Target::Param(_) | Target::Result { .. }, Selector::All) => true,
                (Target::Param(p), Selector::Whole) => {
                    declared.get(p.as_str()) == Some(&ParamType::Array)
                }
                _ => false,
            },
            Err(_) => false,
        },
        _ => false,
    }
}

/// A `$(params.…)` reference: declared, and its selector fits the declared type.
fn check_param_ref(
    field: &str,
    found: &Found,
    r: &substitution::Reference,
    declared: &BTreeMap<&str, ParamType>,
) -> Option<FieldError> {
    let Target::Param(name) = &r.target else {
        return None;
    };
    let Some(&ty) = declared.get(name.as_str()) else {
        let known: Vec<&str> = declared.keys().copied().collect();
        return Some(FieldError::invalid(
            field,
            format!(
                "{r}: no such parameter in spec.params (declared: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    let fits = matches!(
        (&r.selector, ty),
        (Selector::Whole, _)
            | (Selector::All, ParamType::Array | ParamType::Object)
            | (Selector::Index(_), ParamType::Array)
            | (Selector::Key(_), ParamType::Object)
    );
    if !fits {
        return Some(FieldError::invalid(
            field,
            format!("{r}: parameter {name:?} is of type {ty}"),
        ));
    }
    let whole = matches!(r.selector, Selector::Whole | Selector::All);
    if whole && ty != ParamType::String && !found.alone {
        return Some(FieldError::invalid(
            field,
            format!("{r} is an {ty} and can only be used alone, as the whole value"),
        ));
    }
    None
}

impl Validate for Pipeline {
    fn validate(&self) -> Vec<FieldError> {
        self.spec.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn mk_ptask(name: &str, run_after: &[&str]) -> PipelineTask {
        PipelineTask {
            name: name.into(),
            task_ref: TaskRef {
                name: "noop".into(),
            },
            description: None,
            run_after: run_after.iter().map(|s| s.to_string()).collect(),
            when: Vec::new(),
            params: Vec::new(),
            matrix: None,
            timeout: None,
            retries: None,
        }
    }

    fn mk_pipeline_spec(tasks: Vec<PipelineTask>) -> PipelineSpec {
        PipelineSpec {
            description: None,
            params: Vec::new(),
            tasks,
            finally: Vec::new(),
            results: Vec::new(),
            max_concurrent_runs: None,
        }
    }

    fn fields(spec: PipelineSpec) -> Vec<(String, String)> {
        Pipeline::new("p", spec)
            .validate()
            .into_iter()
            .map(|e| (e.field, e.detail))
            .collect()
    }

    fn only_field(spec: PipelineSpec) -> String {
        let errs = fields(spec);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        errs[0].0.clone()
    }

    #[test]
    fn a_linear_pipeline_is_valid() {
        let spec = mk_pipeline_spec(vec![
            mk_ptask("a", &[]),
            mk_ptask("b", &["a"]),
            mk_ptask("c", &["a", "b"]),
        ]);
        assert_eq!(fields(spec), []);
    }

    #[test]
    fn max_concurrent_runs_of_zero_is_refused_naming_the_field() {
        let mut spec = mk_pipeline_spec(vec![mk_ptask("a", &[])]);
        spec.max_concurrent_runs = Some(0);
        assert_eq!(only_field(spec.clone()), "spec.maxConcurrentRuns");
        spec.max_concurrent_runs = Some(1);
        assert_eq!(fields(spec), []);
    }

    #[test]
    fn a_pipeline_needs_tasks() {
        assert_eq!(only_field(mk_pipeline_spec(vec![])), "spec.tasks");
    }

    #[test]
    fn task_names_must_be_dns_labels_and_unique_across_finally() {
        let mut spec = mk_pipeline_spec(vec![mk_ptask("a", &[]), mk_ptask("Bad_Name", &[])]);
        spec.finally = vec![mk_ptask("a", &[])];
        let errs = fields(spec);
        let names: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["spec.tasks[1].name", "spec.finally[0].name"]);
        assert!(
            errs[1]
                .1
                .contains("duplicate task name (also spec.tasks[0])")
        );
    }

    #[test]
    fn run_after_must_name_an_earlier_normal_task() {
        let mut spec = mk_pipeline_spec(vec![
            mk_ptask("a", &[]),
            mk_ptask("b", &["a", "ghost", "b", "cleanup"]),
        ]);
        spec.finally = vec![mk_ptask("cleanup", &[])];
        let errs = fields(spec);
        let names: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            names,
            [
                "spec.tasks[1].runAfter[1]",
                "spec.tasks[1].runAfter[2]",
                "spec.tasks[1].runAfter[3]"
            ]
        );
        assert!(errs[2].1.contains("finally task"));
    }

    #[test]
    fn finally_tasks_may_not_run_after_anything() {
        let mut spec = mk_pipeline_spec(vec![mk_ptask("a", &[])]);
        spec.finally = vec![mk_ptask("cleanup", &["a"])];
        let errs = Pipeline::new("p", spec).validate();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.finally[0].runAfter");
        assert_eq!(errs[0].kind, FieldErrorKind::Forbidden);
    }

    #[test]
    fn cycles_are_rejected_with_their_path() {
        let spec = mk_pipeline_spec(vec![
            mk_ptask("a", &["c"]),
            mk_ptask("b", &["a"]),
            mk_ptask("c", &["b"]),
        ]);
        let errs = fields(spec);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "spec.tasks");
        assert!(errs[0].1.contains("a -> c -> b -> a"), "{}", errs[0].1);
    }

    #[test]
    fn cycles_through_result_references_are_rejected_too() {
        let mut a = mk_ptask("a", &[]);
        a.params = vec![Param::new("x", "$(tasks.b.results.out)")];
        let spec = mk_pipeline_spec(vec![a, mk_ptask("b", &["a"])]);
        assert_eq!(only_field(spec), "spec.tasks");
    }

    #[test]
    fn result_references_must_name_existing_tasks() {
        let mut b = mk_ptask("b", &[]);
        b.params = vec![
            Param::new("ok", "$(tasks.a.results.out)"),
            Param::new("ghost", vec!["x", "$(tasks.ghost.results.out)"]),
        ];
        b.when = vec![WhenExpression {
            input: "$(tasks.b.results.out)".into(),
            operator: WhenOperator::In,
            values: vec!["yes".into()],
        }];
        let spec = mk_pipeline_spec(vec![mk_ptask("a", &[]), b]);
        let errs = fields(spec);
        let names: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            names,
            [
                "spec.tasks[1].params[1].value[1]",
                "spec.tasks[1].when[0].input"
            ]
        );
    }

    #[test]
    fn tasks_cannot_use_results_of_finally_tasks_but_finally_can_use_tasks() {
        let mut a = mk_ptask("a", &[]);
        a.params = vec![Param::new("x", "$(tasks.cleanup.results.out)")];
        let mut cleanup = mk_ptask("cleanup", &[]);
        cleanup.params = vec![
            Param::new("r", "$(tasks.a.results.out)"),
            Param::new("s", "$(tasks.a.status) / $(tasks.status)"),
        ];
        let mut spec = mk_pipeline_spec(vec![a]);
        spec.finally = vec![cleanup];
        assert_eq!(only_field(spec), "spec.tasks[0].params[0].value");
    }

    #[test]
    fn task_status_is_only_for_finally_tasks() {
        let mut b = mk_ptask("b", &[]);
        b.when = vec![WhenExpression {
            input: "$(tasks.a.status)".into(),
            operator: WhenOperator::In,
            values: vec!["Succeeded".into()],
        }];
        let spec = mk_pipeline_spec(vec![mk_ptask("a", &[]), b]);
        assert_eq!(only_field(spec), "spec.tasks[1].when[0].input");
    }

    #[test]
    fn parameter_references_must_be_declared_and_fit_their_type() {
        let mut a = mk_ptask("a", &[]);
        a.params = vec![
            Param::new("x", "$(params.env)"),
            Param::new("y", "$(params.nope)"),
            Param::new("z", "$(params.env[0])"),
            Param::new("w", "$(params.oops"),
        ];
        let mut spec = mk_pipeline_spec(vec![a]);
        spec.params = vec![ParamSpec {
            name: "env".into(),
            type_: ParamType::String,
            default: None,
            description: None,
        }];
        let errs = fields(spec);
        let names: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            names,
            [
                "spec.tasks[0].params[1].value",
                "spec.tasks[0].params[2].value"
            ]
        );
        assert!(errs[0].1.contains("declared: env"));
    }

    #[test]
    fn malformed_references_are_rejected_where_they_are() {
        let mut a = mk_ptask("a", &[]);
        a.when = vec![WhenExpression {
            input: "x".into(),
            operator: WhenOperator::NotIn,
            values: vec!["$(tasks.b.resultz.c)".into()],
        }];
        assert_eq!(
            only_field(mk_pipeline_spec(vec![a])),
            "spec.tasks[0].when[0].values[0]"
        );
    }

    #[test]
    fn the_task_run_name_is_only_known_to_parameters() {
        let mut a = mk_ptask("a", &[]);
        a.params = vec![Param::new("key", "$(context.taskRun.name)")];
        a.when = vec![WhenExpression {
            input: "$(context.taskRun.name)".into(),
            operator: WhenOperator::In,
            values: vec!["x".into()],
        }];
        assert_eq!(
            only_field(mk_pipeline_spec(vec![a])),
            "spec.tasks[0].when[0].input"
        );
    }

    #[test]
    fn when_expressions_need_input_and_values() {
        let mut a = mk_ptask("a", &[]);
        a.when = vec![WhenExpression {
            input: String::new(),
            operator: WhenOperator::In,
            values: vec![],
        }];
        let errs = fields(mk_pipeline_spec(vec![a]));
        let names: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            names,
            [
                "spec.tasks[0].when[0].input",
                "spec.tasks[0].when[0].values"
            ]
        );
    }

    #[test]
    fn unknown_when_operators_are_rejected_by_the_schema_with_their_path() {
        let crd = Pipeline::crd();
        let schema = crd.spec.versions[0]
            .schema
            .clone()
            .unwrap()
            .open_api_v3_schema
            .unwrap();
        let mut obj = serde_json::json!({"spec": {"tasks": [{
            "name": "a", "taskRef": {"name": "noop"},
            "when": [{"input": "x", "operator": "exists", "values": ["y"]}]
        }]}});
        let out = crate::schema::check(&mut obj, &schema);
        assert_eq!(out.errors.len(), 1, "{out:?}");
        assert_eq!(out.errors[0].field, "spec.tasks[0].when[0].operator");
        assert_eq!(out.errors[0].kind, FieldErrorKind::NotSupported);
    }

    #[test]
    fn matrix_params_must_be_non_empty_lists_or_whole_array_references() {
        let mut a = mk_ptask("a", &[]);
        a.params = vec![Param::new("dup", "x")];
        a.matrix = Some(Matrix {
            params: vec![
                Param::new("ok", vec!["1", "2"]),
                Param::new("empty", Vec::<String>::new()),
                Param::new("scalar", "just a string"),
                Param::new("ref", "$(params.clusters[*])"),
                Param::new("dup", vec!["1"]),
            ],
        });
        let mut spec = mk_pipeline_spec(vec![a]);
        spec.params = vec![ParamSpec {
            name: "clusters".into(),
            type_: ParamType::Array,
            default: None,
            description: None,
        }];
        let errs = fields(spec);
        let names: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            names,
            [
                "spec.tasks[0].matrix.params[1].value",
                "spec.tasks[0].matrix.params[2].value",
                "spec.tasks[0].matrix.params[4].name"
            ]
        );
    }

    #[test]
    fn an_empty_matrix_is_rejected() {
        let mut a = mk_ptask("a", &[]);
        a.matrix = Some(Matrix { params: vec![] });
        assert_eq!(
            only_field(mk_pipeline_spec(vec![a])),
            "spec.tasks[0].matrix.params"
        );
    }

    #[test]
    fn oversized_matrices_are_rejected() {
        let mut a = mk_ptask("a", &[]);
        let values: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        a.matrix = Some(Matrix {
            params: vec![Param::new("x", values.clone()), Param::new("y", values)],
        });
        assert_eq!(
            only_field(mk_pipeline_spec(vec![a])),
            "spec.tasks[0].matrix"
        );
    }

    #[test]
    fn pipeline_results_may_use_task_results_but_not_status() {
        let mut spec = mk_pipeline_spec(vec![mk_ptask("a", &[])]);
        spec.results = vec![
            PipelineResult {
                name: "image".into(),
                value: "$(tasks.a.results.image)".into(),
                description: None,
            },
            PipelineResult {
                name: "bad".into(),
                value: "$(tasks.a.status)".into(),
                description: None,
            },
            PipelineResult {
                name: "gone".into(),
                value: "$(tasks.ghost.results.x)".into(),
                description: None,
            },
        ];
        let errs = fields(spec);
        let names: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["spec.results[1].value", "spec.results[2].value"]);
    }

    #[test]
    fn bad_timeouts_name_the_task() {
        let mut a = mk_ptask("a", &[]);
        a.timeout = Some("soon".into());
        assert_eq!(
            only_field(mk_pipeline_spec(vec![a])),
            "spec.tasks[0].timeout"
        );
    }

    #[test]
    fn pipeline_yaml_round_trips_with_tekton_field_names() {
        let json = serde_json::json!({
            "params": [{"name": "clusters", "type": "array"}],
            "tasks": [
                {"name": "build", "taskRef": {"name": "webhook"}},
                {"name": "deploy", "taskRef": {"name": "apply"}, "runAfter": ["build"],
                 "when": [{"input": "$(params.clusters[0])", "operator": "notin", "values": ["none"]}],
                 "params": [{"name": "image", "value": "$(tasks.build.results.image)"}],
                 "matrix": {"params": [{"name": "cluster", "value": "$(params.clusters[*])"}]},
                 "timeout": "10m", "retries": 2}
            ],
            "finally": [{"name": "notify", "taskRef": {"name": "webhook"}}]
        });
        let spec: PipelineSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(spec.tasks[1].when[0].operator, WhenOperator::NotIn);
        assert_eq!(serde_json::to_value(&spec).unwrap(), json);
        assert!(Pipeline::new("p", spec).validate().is_empty());
    }
}
