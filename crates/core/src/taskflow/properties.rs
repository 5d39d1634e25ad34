//! Property tests: random acyclic pipelines (edges only to earlier tasks), executed step
//! by step with a fake executor whose attempts succeed, fail or hang per a generated
//! plan, sometimes under a concurrency limit, a pause or a cancellation. Every step is
//! checked against the scheduler's contract, and runs without permanent failures are
//! compared with a small model of Tekton's skipping rules.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::fixtures::{Driver, mk_catalog, mk_param_spec, mk_pipeline, mk_task, mk_task_spec};
use super::params::Param;
use super::pipeline::{Pipeline, PipelineSpec, PipelineTask, WhenExpression, WhenOperator};
use super::run::{PipelineRunSpecStatus, PipelineRunStatus, RunResult, SkipReason, TaskState};
use super::scheduler::{Decision, Finish, InstanceId, RunReason, record_finish, schedule};
use crate::kinds::Validate;

/// Upper bound on steps of one simulated run; generated runs need far fewer.
const MAX_STEPS: usize = 2_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    Succeed,
    Fail,
    /// Never reports back: only its timeout ends it.
    Hang,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edge {
    None,
    RunAfter,
    Results,
}

#[derive(Clone, Debug)]
struct TaskPlan {
    /// Relation to each earlier task.
    edges: Vec<Edge>,
    /// A `when` guard and whether it holds.
    when: Option<(bool, WhenOperator, bool)>,
    /// Matrix width (0 for no matrix).
    matrix: usize,
    /// Behaviour of attempt n (the last one repeats).
    attempts: Vec<Attempt>,
    retries: u32,
}

impl TaskPlan {
    fn attempt(&self, n: u32) -> Attempt {
        self.attempts[(n as usize - 1).min(self.attempts.len() - 1)]
    }

    /// Whether an instance of this task fails for good when it runs.
    fn fails_for_good(&self) -> bool {
        (1..=self.retries + 1).all(|n| self.attempt(n) != Attempt::Succeed)
    }

    fn deps(&self) -> impl Iterator<Item = (usize, Edge)> + '_ {
        self.edges
            .iter()
            .enumerate()
            .filter(|(_, e)| **e != Edge::None)
            .map(|(j, e)| (j, *e))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Pause { resume_after: usize },
    Cancel,
    CancelRunFinally,
    StopRunFinally,
}

#[derive(Clone, Debug)]
struct Scenario {
    tasks: Vec<TaskPlan>,
    finally: Vec<TaskPlan>,
    max_running: Option<usize>,
    backoff_secs: u8,
    picks: Vec<u8>,
    op: Option<(usize, Op)>,
}

fn attempts() -> impl Strategy<Value = Vec<Attempt>> {
    prop::collection::vec(
        prop_oneof![
            8 => Just(Attempt::Succeed),
            2 => Just(Attempt::Fail),
            1 => Just(Attempt::Hang),
        ],
        1..=3,
    )
}

fn when() -> impl Strategy<Value = Option<(bool, WhenOperator, bool)>> {
    prop::option::weighted(
        0.3,
        (
            any::<bool>(),
            prop_oneof![Just(WhenOperator::In), Just(WhenOperator::NotIn)],
            any::<bool>(),
        ),
    )
}

fn task_plan(earlier: usize, finally: bool) -> impl Strategy<Value = TaskPlan> {
    let edge = if finally {
        prop_oneof![3 => Just(Edge::None), 1 => Just(Edge::Results)].boxed()
    } else {
        prop_oneof![
            3 => Just(Edge::None),
            2 => Just(Edge::RunAfter),
            1 => Just(Edge::Results),
        ]
        .boxed()
    };
    let matrix = if finally {
        Just(0).boxed()
    } else {
        prop_oneof![4 => Just(0usize), 1 => 1..=3usize].boxed()
    };
    (
        prop::collection::vec(edge, earlier),
        when(),
        matrix,
        attempts(),
        0..=2u32,
    )
        .prop_map(|(edges, when, matrix, attempts, retries)| TaskPlan {
            edges,
            when,
            matrix,
            attempts,
            retries,
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (1..=8usize, 0..=2usize)
        .prop_flat_map(|(n, f)| {
            let tasks: Vec<_> = (0..n).map(|i| task_plan(i, false)).collect();
            let finally: Vec<_> = (0..f).map(|_| task_plan(n, true)).collect();
            let op = prop::option::weighted(
                0.3,
                (
                    0..12usize,
                    prop_oneof![
                        (1..6usize).prop_map(|resume_after| Op::Pause { resume_after }),
                        Just(Op::Cancel),
                        Just(Op::CancelRunFinally),
                        Just(Op::StopRunFinally),
                    ],
                ),
            );
            (
                tasks,
                finally,
                prop::option::of(1..=3usize),
                prop_oneof![Just(0u8), Just(1), Just(5)],
                prop::collection::vec(any::<u8>(), 1..8),
                op,
            )
        })
        .prop_map(
            |(tasks, finally, max_running, backoff_secs, picks, op)| Scenario {
                tasks,
                finally,
                max_running,
                backoff_secs,
                picks,
                op,
            },
        )
}

/// An acyclic scenario and an ordered choice of 2 to 4 of its tasks to close a cycle.
fn cyclic() -> impl Strategy<Value = (Scenario, Vec<usize>)> {
    (2..=7usize)
        .prop_flat_map(|n| {
            let tasks: Vec<_> = (0..n).map(|i| task_plan(i, false)).collect();
            let chain = prop::sample::subsequence((0..n).collect::<Vec<_>>(), 2..=n.min(4));
            (tasks, chain)
        })
        .prop_map(|(tasks, chain)| {
            let sc = Scenario {
                tasks,
                finally: Vec::new(),
                max_running: None,
                backoff_secs: 0,
                picks: vec![0],
                op: None,
            };
            (sc, chain)
        })
}

fn name(i: usize) -> String {
    format!("t{i}")
}

fn finally_name(i: usize) -> String {
    format!("f{i}")
}

fn build_task(name: String, plan: &TaskPlan, finally: bool) -> PipelineTask {
    let mut t = mk_task(&name, &[]);
    for (j, e) in plan.deps() {
        match e {
            Edge::RunAfter if !finally => t.run_after.push(self::name(j)),
            Edge::RunAfter | Edge::Results => t.params.push(Param::new(
                format!("in{j}"),
                format!("$(tasks.t{j}.results.out)"),
            )),
            Edge::None => {}
        }
    }
    if let Some((via_param, operator, holds)) = plan.when {
        let input = if via_param { "$(params.flag)" } else { "on" };
        let matches = holds == (operator == WhenOperator::In);
        let value = if matches { "on" } else { "off" };
        t.when = vec![WhenExpression {
            input: input.into(),
            operator,
            values: vec![value.into()],
        }];
    }
    if plan.matrix > 0 {
        let values: Vec<String> = (0..plan.matrix).map(|k| format!("v{k}")).collect();
        t.matrix = Some(super::pipeline::Matrix {
            params: vec![Param::new("shard", values)],
        });
    }
    if finally {
        t.params.push(Param::new("overall", "$(tasks.status)"));
    }
    t.retries = Some(plan.retries);
    t.timeout = Some("10s".into());
    t
}

fn build_pipeline(sc: &Scenario) -> PipelineSpec {
    let tasks = sc
        .tasks
        .iter()
        .enumerate()
        .map(|(i, p)| build_task(name(i), p, false))
        .collect();
    let finally = sc
        .finally
        .iter()
        .enumerate()
        .map(|(i, p)| build_task(finally_name(i), p, true))
        .collect();
    let mut spec = mk_pipeline(tasks, finally);
    spec.params = vec![mk_param_spec("flag", Some("on".into()))];
    spec
}

fn plan_of<'s>(sc: &'s Scenario, task: &str) -> (&'s TaskPlan, bool) {
    let i: usize = task[1..].parse().unwrap();
    if task.starts_with('f') {
        (&sc.finally[i], true)
    } else {
        (&sc.tasks[i], false)
    }
}

fn entries<'s>(s: &'s PipelineRunStatus, task: &str) -> Vec<&'s super::run::PipelineTaskStatus> {
    s.tasks.iter().filter(|e| e.name == task).collect()
}

/// Whether task `j` lets a task that depends on it (by `edge`) start.
fn dep_satisfied(s: &PipelineRunStatus, j: usize, edge: Edge) -> bool {
    entries(s, &name(j)).iter().all(|e| match e.state {
        TaskState::Succeeded => true,
        TaskState::Skipped => {
            edge == Edge::RunAfter && e.skip_reason.is_some_and(|r| !r.propagates())
        }
        _ => false,
    })
}

/// Whether task `j` gives a dependent a reason to be skipped with `reason`.
fn dep_explains_skip(s: &PipelineRunStatus, j: usize, edge: Edge, reason: SkipReason) -> bool {
    entries(s, &name(j))
        .iter()
        .any(|e| match (reason, e.state) {
            (SkipReason::ParentTasksSkip, TaskState::Failed | TaskState::Cancelled) => true,
            (SkipReason::ParentTasksSkip, TaskState::Skipped) => {
                e.skip_reason.is_none_or(SkipReason::propagates)
            }
            (SkipReason::MissingResultsSkip, TaskState::Skipped) => edge == Edge::Results,
            (SkipReason::MissingResultsSkip, _) => false,
            _ => false,
        })
}

/// The final state of each normal task in a run where nothing fails for good and no
/// operation interferes: Tekton's skipping rules, written as directly as possible.
fn model(sc: &Scenario) -> Vec<Result<(), SkipReason>> {
    let mut out: Vec<Result<(), SkipReason>> = Vec::new();
    for plan in &sc.tasks {
        let mut verdict = Ok(());
        for (j, edge) in plan.deps() {
            match out[j] {
                Err(r) if r.propagates() => verdict = Err(SkipReason::ParentTasksSkip),
                Err(_) if edge == Edge::Results && verdict.is_ok() => {
                    verdict = Err(SkipReason::MissingResultsSkip);
                }
                _ => {}
            }
        }
        if verdict.is_ok() && plan.when.is_some_and(|(_, _, holds)| !holds) {
            verdict = Err(SkipReason::WhenExpressionsSkip);
        }
        out.push(verdict);
    }
    out
}

/// Every transition leaves a state the documented state machine allows it to leave.
fn check_transitions(
    before: &PipelineRunStatus,
    transitions: &[Decision],
) -> Result<(), TestCaseError> {
    let mut state: BTreeMap<InstanceId, TaskState> = before
        .tasks
        .iter()
        .map(|e| (InstanceId::new(e.name.clone(), e.matrix_index), e.state))
        .collect();
    for t in transitions {
        let (id, from, to): (InstanceId, &[TaskState], TaskState) = match t {
            Decision::Register { task } => {
                let id = InstanceId::new(task.clone(), None);
                prop_assert!(!state.contains_key(&id), "{id} registered twice");
                state.insert(id, TaskState::Pending);
                continue;
            }
            Decision::FanOut { task, count } => {
                let placeholder = state.remove(&InstanceId::new(task.clone(), None));
                prop_assert_eq!(placeholder, Some(TaskState::Pending), "{} fanned out", task);
                for k in 0..*count {
                    state.insert(InstanceId::new(task.clone(), Some(k)), TaskState::Pending);
                }
                continue;
            }
            Decision::BeginFinally => continue,
            Decision::Start(s) => (
                s.instance.clone(),
                &[TaskState::Pending, TaskState::Retrying],
                TaskState::Running,
            ),
            Decision::Skip { instance, .. } => (
                instance.clone(),
                &[
                    TaskState::Pending,
                    TaskState::Retrying,
                    TaskState::Interrupted,
                ],
                TaskState::Skipped,
            ),
            Decision::Fail { instance, .. } => (
                instance.clone(),
                &[TaskState::Pending, TaskState::Running],
                TaskState::Failed,
            ),
            Decision::Retry { instance, .. } => {
                (instance.clone(), &[TaskState::Failed], TaskState::Retrying)
            }
            Decision::Cancel { instance, .. } => (
                instance.clone(),
                &[
                    TaskState::Running,
                    TaskState::Retrying,
                    TaskState::Interrupted,
                ],
                TaskState::Cancelled,
            ),
        };
        let current = state.get(&id).copied();
        prop_assert!(
            current.is_some_and(|c| from.contains(&c)),
            "{:?} of {} from {:?}",
            t,
            id,
            current
        );
        state.insert(id, to);
    }
    Ok(())
}

struct Trace {
    outcome: RunReason,
    status: PipelineRunStatus,
    /// (instance, attempt) of every start, in order.
    starts: Vec<(InstanceId, u32)>,
    /// The op and the step it was applied at, if it was applied before completion.
    applied: Option<Op>,
}

fn simulate(sc: &Scenario) -> Result<Trace, TestCaseError> {
    let pipeline = build_pipeline(sc);
    let mut spec = mk_task_spec();
    if sc.backoff_secs > 0 {
        spec.retry_backoff = Some(format!("{}s", sc.backoff_secs));
    }
    let mut d = Driver::new(pipeline, mk_catalog(spec));
    d.max_running = sc.max_running;
    let mut starts = Vec::new();
    let mut last_attempt: BTreeMap<InstanceId, u32> = BTreeMap::new();
    let mut applied = None;
    let mut resume_at = None;

    for step in 0..MAX_STEPS {
        if let Some((at, op)) = sc.op
            && at == step
        {
            applied = Some(op);
            match op {
                Op::Pause { resume_after } => {
                    d.run.spec.paused = true;
                    resume_at = Some(step + resume_after);
                }
                Op::Cancel => d.run.spec.status = Some(PipelineRunSpecStatus::Cancelled),
                Op::CancelRunFinally => {
                    d.run.spec.status = Some(PipelineRunSpecStatus::CancelledRunFinally)
                }
                Op::StopRunFinally => {
                    d.run.spec.status = Some(PipelineRunSpecStatus::StoppedRunFinally)
                }
            }
        }
        if resume_at.is_some_and(|r| step >= r) {
            d.run.spec.paused = false;
        }

        let before = d.run.status.clone().unwrap_or_default();
        let decisions = schedule(d.input());
        prop_assert_eq!(&decisions, &schedule(d.input()), "not deterministic");
        if d.run.spec.paused && d.run.spec.status.is_none() {
            prop_assert!(decisions.starts().next().is_none(), "started while paused");
        }
        check_transitions(&before, &decisions.transitions)?;
        for s in decisions.starts() {
            let previous = last_attempt
                .insert(s.instance.clone(), s.attempt)
                .unwrap_or(0);
            prop_assert_eq!(
                s.attempt,
                previous + 1,
                "{} skipped an attempt number",
                &s.instance
            );
            let (plan, _) = plan_of(sc, &s.instance.task);
            prop_assert!(
                s.attempt <= plan.retries + 1,
                "{} over its retries",
                &s.instance
            );
            starts.push((s.instance.clone(), s.attempt));
        }
        let now = d.now;
        decisions.apply(d.status_mut(), now);
        let after = d.status().clone();

        // Concurrency.
        let running = after
            .tasks
            .iter()
            .filter(|e| e.state == TaskState::Running)
            .count();
        if let Some(max) = sc.max_running {
            prop_assert!(running <= max, "{running} running, limit {max}");
        }
        // Dependencies, and finally only after every task is done.
        for s in decisions.starts() {
            let (plan, finally) = plan_of(sc, &s.instance.task);
            if finally {
                prop_assert!(
                    after
                        .tasks
                        .iter()
                        .filter(|e| e.name.starts_with('t'))
                        .all(|e| e.state.is_terminal()),
                    "finally task {} started before every task was done",
                    &s.instance
                );
                for (j, _) in plan.deps() {
                    prop_assert!(dep_satisfied(&after, j, Edge::Results));
                }
            } else {
                for (j, edge) in plan.deps() {
                    prop_assert!(
                        dep_satisfied(&after, j, edge),
                        "{} started before t{} allowed it",
                        &s.instance,
                        j
                    );
                }
            }
        }
        // One step leaves nothing for the next at the same instant.
        let again = schedule(d.input());
        prop_assert!(
            again.transitions.is_empty(),
            "not a fixpoint: {:?}",
            again.transitions
        );

        if decisions.outcome.reason.is_done() {
            return Ok(Trace {
                outcome: decisions.outcome.reason,
                status: after,
                starts,
                applied,
            });
        }

        // The fake executor: one instance that is going to report back does so.
        let finishing: Vec<(InstanceId, u32)> = d
            .running()
            .into_iter()
            .filter(|(id, attempt)| plan_of(sc, &id.task).0.attempt(*attempt) != Attempt::Hang)
            .collect();
        if !finishing.is_empty() {
            let pick = sc.picks[step % sc.picks.len()] as usize % finishing.len();
            let (id, attempt) = finishing[pick].clone();
            let finish = match plan_of(sc, &id.task).0.attempt(attempt) {
                Attempt::Succeed => Finish::Succeeded {
                    results: vec![RunResult::new("out", format!("{id}-out"))],
                },
                _ => Finish::Failed {
                    message: "boom".into(),
                },
            };
            record_finish(d.status_mut(), &id, attempt, finish, now)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        } else if let Some(at) = decisions.wake_at {
            prop_assert!(at > d.now);
            d.now = at;
        } else if d.run.spec.paused {
            d.run.spec.paused = false;
        } else {
            return Err(TestCaseError::fail(format!(
                "stuck at step {step}: {:?}",
                decisions.outcome
            )));
        }
    }
    Err(TestCaseError::fail("the run did not terminate"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn generated_acyclic_pipelines_pass_validation(sc in scenario()) {
        let errs = Pipeline::new("p", build_pipeline(&sc)).validate();
        prop_assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn runs_terminate_and_keep_the_scheduler_contract(sc in scenario()) {
        let trace = simulate(&sc)?;
        let s = &trace.status;
        prop_assert!(s.tasks.iter().all(|e| e.state.is_terminal()));

        // The outcome agrees with the task states.
        let any = |st: TaskState| s.tasks.iter().any(|e| e.state == st);
        match trace.outcome {
            RunReason::Succeeded => prop_assert!(s.tasks.iter().all(|e| e.state == TaskState::Succeeded)),
            RunReason::Completed => prop_assert!(
                !any(TaskState::Failed) && !any(TaskState::Cancelled) && any(TaskState::Skipped)
            ),
            RunReason::Failed => prop_assert!(any(TaskState::Failed) || any(TaskState::Cancelled)),
            RunReason::Cancelled => prop_assert!(matches!(
                trace.applied,
                Some(Op::Cancel | Op::CancelRunFinally | Op::StopRunFinally)
            )),
            other => prop_assert!(false, "unexpected outcome {other:?}"),
        }

        // Skip reasons are explained by the task's dependencies or guard.
        for (i, plan) in sc.tasks.iter().enumerate() {
            for e in entries(s, &name(i)) {
                let Some(reason) = e.skip_reason else { continue };
                match reason {
                    SkipReason::WhenExpressionsSkip => {
                        prop_assert!(plan.when.is_some_and(|(_, _, holds)| !holds));
                        for (j, edge) in plan.deps() {
                            prop_assert!(dep_satisfied(s, j, edge), "t{i} guarded out before t{j} allowed it");
                        }
                    }
                    SkipReason::ParentTasksSkip | SkipReason::MissingResultsSkip => {
                        prop_assert!(
                            plan.deps().any(|(j, edge)| dep_explains_skip(s, j, edge, reason)),
                            "t{i} skipped with {reason:?} but no dependency explains it"
                        );
                    }
                    SkipReason::StoppingSkip => prop_assert!(any(TaskState::Failed)),
                    SkipReason::CancelledSkip | SkipReason::GracefullyCancelledSkip
                    | SkipReason::GracefullyStoppedSkip => prop_assert!(trace.applied.is_some()),
                    other => prop_assert!(false, "unexpected skip reason {other:?}"),
                }
            }
        }

        // Finally tasks run exactly once, unless the run was hard-cancelled or they are
        // guarded out / lack results.
        let hard_cancelled = s.tasks.iter().any(|e| e.skip_reason == Some(SkipReason::CancelledSkip)
            || e.reason == Some(super::run::TaskReason::Cancelled) && e.name.starts_with('f'));
        for (i, plan) in sc.finally.iter().enumerate() {
            let n = finally_name(i);
            let first_starts = trace.starts.iter().filter(|(id, a)| id.task == n && *a == 1).count();
            let e = entries(s, &n)[0];
            let results_ok = plan.deps().all(|(j, _)| dep_satisfied(s, j, Edge::Results));
            let guard_ok = plan.when.is_none_or(|(_, _, holds)| holds);
            if hard_cancelled {
                prop_assert!(first_starts <= 1);
            } else if !results_ok {
                prop_assert_eq!(e.skip_reason, Some(SkipReason::MissingResultsSkip));
                prop_assert_eq!(first_starts, 0);
            } else if !guard_ok {
                prop_assert_eq!(e.skip_reason, Some(SkipReason::WhenExpressionsSkip));
                prop_assert_eq!(first_starts, 0);
            } else {
                prop_assert_eq!(first_starts, 1, "finally {} started {} times", n, first_starts);
            }
        }

        // No permanent failure and no interference: the model says exactly what happens.
        let clean = trace.applied.is_none_or(|op| matches!(op, Op::Pause { .. }))
            && sc.tasks.iter().all(|p| !p.fails_for_good());
        if clean {
            let expected = model(&sc);
            for (i, verdict) in expected.iter().enumerate() {
                for e in entries(s, &name(i)) {
                    match verdict {
                        Ok(()) => prop_assert_eq!(e.state, TaskState::Succeeded, "t{}", i),
                        Err(r) => prop_assert_eq!(e.skip_reason, Some(*r), "t{}", i),
                    }
                }
            }
            let finally_ok = s.tasks.iter().filter(|e| e.name.starts_with('f'))
                .all(|e| e.state != TaskState::Failed);
            if finally_ok {
                let all_ok = s.tasks.iter().all(|e| e.state == TaskState::Succeeded);
                prop_assert_eq!(
                    trace.outcome,
                    if all_ok { RunReason::Succeeded } else { RunReason::Completed }
                );
            }
        }
    }

    #[test]
    fn cycles_are_rejected_with_a_real_cycle_path((sc, chain) in cyclic()) {
        let mut spec = build_pipeline(&sc);
        // Force a cycle: each picked task runs after the previous one, the first after
        // the last.
        for w in chain.windows(2) {
            let prev = name(w[0]);
            spec.tasks[w[1]].run_after.push(prev);
        }
        let last = name(*chain.last().unwrap());
        spec.tasks[chain[0]].run_after.push(last);
        let errs = Pipeline::new("p", spec.clone()).validate();
        let cycle = errs.iter().find(|e| e.field == "spec.tasks" && e.detail.contains("cycle"));
        prop_assert!(cycle.is_some(), "{errs:?}");
        let detail = &cycle.unwrap().detail;
        let path: Vec<&str> = detail
            .split_once("cycle ")
            .and_then(|(_, rest)| rest.split_once(" ("))
            .map(|(p, _)| p.split(" -> ").collect())
            .unwrap_or_default();
        prop_assert!(path.len() >= 2 && path.first() == path.last(), "{detail}");
        let depends = |a: &str, b: &str| {
            let t = spec.tasks.iter().find(|t| t.name == a).unwrap();
            t.run_after.iter().any(|r| r == b) || t.result_sources().contains(b)
        };
        for w in path.windows(2) {
            prop_assert!(depends(w[0], w[1]), "{} does not depend on {} in {}", w[0], w[1], detail);
        }
        let distinct: BTreeSet<&str> = path[..path.len() - 1].iter().copied().collect();
        prop_assert_eq!(distinct.len(), path.len() - 1);
    }
}
