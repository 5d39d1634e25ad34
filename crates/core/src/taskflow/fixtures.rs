//! Test fixtures: `mk_*` builders and a fake controller that drives a run with the
//! scheduler the way the real controller will (schedule → apply → launch → record).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use super::params::{Param, ParamSpec, ParamType, ParamValue};
use super::pipeline::{PipelineSpec, PipelineTask, TaskRef, WhenExpression, WhenOperator};
use super::run::{
    PipelineRef, PipelineRun, PipelineRunSpec, PipelineRunStatus, PipelineTaskStatus, RunResult,
    TaskState,
};
use super::scheduler::{
    Decisions, Finish, Input, InstanceId, RunReason, Start, TaskCatalog, record_finish, schedule,
};
use super::task::TaskSpec;

pub(crate) fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

pub(crate) fn mk_task(name: &str, run_after: &[&str]) -> PipelineTask {
    PipelineTask {
        name: name.into(),
        task_ref: TaskRef {
            name: "work".into(),
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

pub(crate) fn mk_when(input: &str, operator: WhenOperator, values: &[&str]) -> WhenExpression {
    WhenExpression {
        input: input.into(),
        operator,
        values: values.iter().map(|s| s.to_string()).collect(),
    }
}

pub(crate) fn mk_pipeline(tasks: Vec<PipelineTask>, finally: Vec<PipelineTask>) -> PipelineSpec {
    PipelineSpec {
        description: None,
        params: Vec::new(),
        tasks,
        finally,
        results: Vec::new(),
        max_concurrent_runs: None,
    }
}

pub(crate) fn mk_param_spec(name: &str, default: Option<ParamValue>) -> ParamSpec {
    ParamSpec {
        name: name.into(),
        type_: default
            .as_ref()
            .map_or(ParamType::String, ParamValue::type_),
        default,
        description: None,
    }
}

pub(crate) fn mk_task_spec() -> TaskSpec {
    TaskSpec {
        executor: "noop".into(),
        description: None,
        params: Vec::new(),
        results: Vec::new(),
        timeout: None,
        retries: None,
        retry_backoff: None,
        idempotent: false,
    }
}

pub(crate) fn mk_catalog(spec: TaskSpec) -> TaskCatalog {
    BTreeMap::from([("work".to_string(), spec)])
}

pub(crate) fn mk_run(params: Vec<Param>) -> PipelineRun {
    let mut run = PipelineRun::new(
        "run",
        PipelineRunSpec {
            pipeline_ref: PipelineRef { name: "p".into() },
            params,
            timeouts: None,
            status: None,
            paused: false,
        },
    );
    run.metadata.namespace = Some("ops".into());
    run.metadata.uid = Some("uid-1".into());
    run
}

/// A fake controller and executor around one run.
#[derive(Debug)]
pub(crate) struct Driver {
    pub run: PipelineRun,
    pub pipeline: PipelineSpec,
    pub tasks: TaskCatalog,
    pub now: Timestamp,
    pub max_running: Option<usize>,
    /// Every start, in order.
    pub started: Vec<Start>,
}

impl Driver {
    pub fn new(pipeline: PipelineSpec, tasks: TaskCatalog) -> Self {
        Driver {
            run: mk_run(Vec::new()),
            pipeline,
            tasks,
            now: t0(),
            max_running: None,
            started: Vec::new(),
        }
    }

    pub fn input(&self) -> Input<'_> {
        Input {
            run: &self.run,
            pipeline: &self.pipeline,
            tasks: &self.tasks,
            now: self.now,
            max_running: self.max_running,
        }
    }

    pub fn status(&self) -> &PipelineRunStatus {
        self.run
            .status
            .as_ref()
            .expect("the run has been scheduled")
    }

    pub fn status_mut(&mut self) -> &mut PipelineRunStatus {
        self.run.status.get_or_insert_default()
    }

    /// One scheduling step, applied.
    pub fn step(&mut self) -> Decisions {
        let d = schedule(self.input());
        let now = self.now;
        d.apply(self.status_mut(), now);
        self.started.extend(d.starts().cloned());
        d
    }

    pub fn entry(&self, task: &str, matrix_index: Option<u32>) -> &PipelineTaskStatus {
        self.status()
            .tasks
            .iter()
            .find(|e| e.name == task && e.matrix_index == matrix_index)
            .unwrap_or_else(|| panic!("no entry {task}[{matrix_index:?}]"))
    }

    pub fn state(&self, task: &str) -> TaskState {
        self.entry(task, None).state
    }

    /// The running instances, in status order.
    pub fn running(&self) -> Vec<(InstanceId, u32)> {
        self.status()
            .tasks
            .iter()
            .filter(|e| e.state == TaskState::Running)
            .map(|e| (InstanceId::new(e.name.clone(), e.matrix_index), e.attempts))
            .collect()
    }

    pub fn succeed(&mut self, task: &str, results: &[(&str, &str)]) {
        self.finish(
            task,
            None,
            Finish::Succeeded {
                results: results
                    .iter()
                    .map(|(n, v)| RunResult::new(*n, *v))
                    .collect(),
            },
        );
    }

    pub fn fail(&mut self, task: &str) {
        self.finish(
            task,
            None,
            Finish::Failed {
                message: "boom".into(),
            },
        );
    }

    pub fn finish(&mut self, task: &str, matrix_index: Option<u32>, finish: Finish) {
        let id = InstanceId::new(task, matrix_index);
        let attempt = self.entry(task, matrix_index).attempts;
        let now = self.now;
        record_finish(self.status_mut(), &id, attempt, finish, now).unwrap();
    }

    pub fn advance(&mut self, secs: i64) {
        self.now += SignedDuration::from_secs(secs);
    }

    /// Steps, succeeding every running instance each round, until the run completes.
    pub fn run_all_succeeding(&mut self) -> RunReason {
        for _ in 0..1000 {
            let d = self.step();
            if d.outcome.reason.is_done() {
                return d.outcome.reason;
            }
            let running = self.running();
            if running.is_empty() {
                match d.wake_at {
                    Some(at) => self.now = at,
                    None => return d.outcome.reason,
                }
            }
            for (id, attempt) in running {
                let results = vec![RunResult::new("out", format!("{id}-out"))];
                let now = self.now;
                record_finish(
                    self.status_mut(),
                    &id,
                    attempt,
                    Finish::Succeeded { results },
                    now,
                )
                .unwrap();
            }
            self.advance(1);
        }
        panic!("the run did not complete in 1000 steps");
    }

    /// The names of started instances, in start order (`task` or `task[i]`, with `#n`
    /// for attempts after the first).
    pub fn start_log(&self) -> Vec<String> {
        self.started
            .iter()
            .map(|s| {
                if s.attempt == 1 {
                    s.instance.to_string()
                } else {
                    format!("{}#{}", s.instance, s.attempt)
                }
            })
            .collect()
    }
}
