//! `shoal pipelinerun pause|resume|cancel|retry|skip NAME` and the DAG view of
//! `shoal describe pipelinerun NAME`.
//!
//! Every operation is a patch of the run through the API, so kubectl can do the same:
//!
//! | verb | patch |
//! |---|---|
//! | pause / resume | `spec.paused: true / false` |
//! | cancel | `spec.status: Cancelled` (`--finally`: `CancelledRunFinally`) |
//! | retry --task T | annotation `taskflow.shoal.io/retry: T` |
//! | skip --task T --reason R | annotations `taskflow.shoal.io/skip: T`, `…/skip-reason: R` |
//!
//! retry and skip are checked here first against the run's current status with the same
//! pure functions the controller applies, so a refused operation says why at once.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use shoal_controllers::taskflow::{ANNOTATION_RETRY, ANNOTATION_SKIP, ANNOTATION_SKIP_REASON};
use shoal_core::taskflow::{PipelineRun, PipelineTask, retry_task, skip_task};

use crate::cli::Conn;

#[derive(clap::Args, Debug)]
pub struct PipelineRunArgs {
    #[command(subcommand)]
    pub op: Op,
    #[arg(short, long, default_value = "default", global = true)]
    pub namespace: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Subcommand, Debug)]
pub enum Op {
    /// Start no new task until resumed (running tasks finish).
    Pause { name: String },
    /// Let a paused run go on.
    Resume { name: String },
    /// Cancel the run: running tasks are stopped; with --finally, finally tasks run.
    Cancel {
        name: String,
        #[arg(long)]
        finally: bool,
    },
    /// Run a failed or interrupted task again.
    Retry {
        name: String,
        #[arg(long)]
        task: String,
    },
    /// Skip a task that has not finished (or failed), with a reason.
    Skip {
        name: String,
        #[arg(long)]
        task: String,
        #[arg(long)]
        reason: String,
    },
}

async fn api(a: &PipelineRunArgs) -> Result<Api<PipelineRun>> {
    let client = crate::cli::kube_client(&a.conn)?;
    Ok(Api::namespaced(client, &a.namespace))
}

pub async fn run(a: PipelineRunArgs) -> Result<()> {
    let runs = api(&a).await?;
    let (name, patch, done) = match &a.op {
        Op::Pause { name } => (name, json!({"spec": {"paused": true}}), "paused"),
        Op::Resume { name } => (name, json!({"spec": {"paused": false}}), "resumed"),
        Op::Cancel { name, finally } => {
            let status = if *finally {
                "CancelledRunFinally"
            } else {
                "Cancelled"
            };
            (name, json!({"spec": {"status": status}}), "cancelled")
        }
        Op::Retry { name, task } => {
            let run = runs.get(name).await?;
            let mut status = run.status.unwrap_or_default();
            retry_task(&mut status, task, jiff::Timestamp::now())
                .with_context(|| format!("cannot retry {task:?} of {name}"))?;
            let patch = json!({"metadata": {"annotations": {ANNOTATION_RETRY: task}}});
            (name, patch, "retried")
        }
        Op::Skip { name, task, reason } => {
            let run = runs.get(name).await?;
            let mut status = run.status.unwrap_or_default();
            skip_task(&mut status, task, reason, jiff::Timestamp::now())
                .with_context(|| format!("cannot skip {task:?} of {name}"))?;
            let patch = json!({"metadata": {"annotations": {
                ANNOTATION_SKIP: task, ANNOTATION_SKIP_REASON: reason}}});
            (name, patch, "skip requested")
        }
    };
    runs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("failed to update pipelinerun {name}"))?;
    println!("pipelinerun.shoal.io/{name} {done}");
    Ok(())
}

/// The DAG of a run with each task's state and timings, for `shoal describe`.
pub fn render_dag(run: &PipelineRun) -> Result<String> {
    let Some(status) = &run.status else {
        bail!("the run has not started: no status yet");
    };
    let mut s = String::new();
    if let Some(c) = status.succeeded() {
        writeln!(s, "Status:       {} ({}) {}", c.status, c.reason, c.message)?;
    }
    if let Some(p) = &status.progress {
        writeln!(s, "Progress:     {p}")?;
    }
    if let Some(t) = &status.start_time {
        writeln!(s, "Started:      {}", t.0)?;
    }
    if let Some(t) = &status.completion_time {
        writeln!(s, "Completed:    {}", t.0)?;
    }
    let after = |name: &str| -> String {
        let tasks = status
            .pipeline_spec
            .as_ref()
            .map(|p| (&p.tasks, &p.finally));
        let find = |list: &Vec<PipelineTask>| list.iter().find(|t| t.name == name).cloned();
        match tasks.and_then(|(t, f)| find(t).or_else(|| find(f))) {
            Some(t) if !t.run_after.is_empty() => format!("← {}", t.run_after.join(", ")),
            _ => String::new(),
        }
    };
    writeln!(
        s,
        "Tasks:\n  {:<24} {:<12} {:>7} {:<22} {:>9}  AFTER / MESSAGE",
        "NAME", "STATE", "ATTEMPT", "STARTED", "DURATION"
    )?;
    for e in &status.tasks {
        let name = match e.matrix_index {
            Some(i) => format!("{}[{i}]", e.name),
            None => e.name.clone(),
        };
        let started = e.start_time.as_ref().map(|t| t.0.to_string());
        let took = match (&e.start_time, &e.completion_time) {
            (Some(a), Some(b)) => format!("{}s", b.0.as_second() - a.0.as_second()),
            _ => "-".into(),
        };
        let mut tail = after(&e.name);
        if let Some(m) = &e.message {
            if !tail.is_empty() {
                tail.push_str("  ");
            }
            tail.push_str(m);
        }
        writeln!(
            s,
            "  {:<24} {:<12} {:>7} {:<22} {:>9}  {}",
            name,
            format!("{:?}", e.state),
            e.attempts,
            started.as_deref().unwrap_or("-"),
            took,
            tail
        )?;
    }
    Ok(s)
}
