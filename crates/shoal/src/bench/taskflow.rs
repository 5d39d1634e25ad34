//! `shoal bench taskflow`: task runs per second through the whole engine.
//!
//! ```text
//!  bench ──create PipelineRuns──► API server (in process, real HTTP) ──► store (SQLite fsyncs | etcd)
//!                                     ▲  ▲
//!                                     │  └── watch: the bench counts completed runs
//!                  taskflow controller (kube-rs client, in process) ── noop executors
//! ```
//!
//! Two shapes, each on the same server and store:
//! - *independent*: `--runs` PipelineRuns of a one-task pipeline, all submitted at once
//!   (by `--submitters` concurrent clients);
//! - *fan-out*: one PipelineRun of `start → --fanout parallel tasks → end`.
//!
//! The figure is task runs completed per second of wall time, from the first create to
//! the last run's `Succeeded` and the last TaskRun's recorded outcome, whichever is
//! later. Every state change goes through the API to the store, as
//! in `shoal serve`: the bench runs the same controller over the same HTTP API. The API
//! requests each phase made are printed per verb and resource, so a change in the
//! controller's write pattern shows up as a change in requests per task.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use shoal_apiserver::{ApiServer, Registry, ServerConfig};
use shoal_core::clock::SystemClock;
use shoal_core::taskflow::run::LABEL_PIPELINE_RUN;
use shoal_core::taskflow::{Pipeline, PipelineRun, Task, TaskRun};
use shoal_store::StoreMetrics;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct TaskflowBench {
    /// Independent one-task runs in the first phase (0 skips it).
    #[arg(long, default_value_t = 1_000)]
    pub runs: usize,
    /// Parallel tasks between `start` and `end` in the fan-out phase (0 skips it).
    #[arg(long, default_value_t = 1_000)]
    pub fanout: usize,
    /// Concurrent clients submitting the independent runs (as `bench api`'s clients).
    #[arg(long, default_value_t = 64)]
    pub submitters: usize,
    /// Store backend: sqlite, memory or etcd://HOST:PORT (a build with `etcd`).
    #[arg(long, default_value = "sqlite")]
    pub store: String,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_seconds: u64,
}

const NAMESPACE: &str = "default";

pub async fn run(a: TaskflowBench) -> Result<()> {
    if a.submitters == 0 {
        bail!("--submitters must be positive");
    }
    let dir = tempfile::tempdir()?;
    let metrics = StoreMetrics::new();
    let store = crate::serve::open_store(
        &super::phase_store(&a.store, "taskflow"),
        &dir.path().join("taskflow"),
        &crate::serve::EtcdArgs::default(),
        &metrics,
    )
    .await?;
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let shutdown = CancellationToken::new();
    let server = ApiServer::new(
        store,
        Registry::shoal(),
        Arc::new(SystemClock),
        ServerConfig::default(),
        registry,
        shutdown.clone(),
    );
    server.ensure_default_namespaces().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let serving = tokio::spawn(shoal_apiserver::serve(
        listener,
        server.router(),
        shutdown.clone(),
    ));
    let controller = crate::serve::spawn_controllers(
        &url,
        None,
        None,
        std::sync::Arc::new(shoal_core::clock::SystemClock),
        crate::serve::Settings::default(),
        shutdown.child_token(),
    )?;
    let client = Client::try_from(kube::Config::new(url.parse()?))?;

    println!(
        "shoal bench taskflow: store={} runs={} fanout={} (noop tasks; every state change \
         through the API to the store)",
        a.store, a.runs, a.fanout
    );
    setup(&client, a.fanout).await?;
    let deadline = Duration::from_secs(a.timeout_seconds);
    let requests = || request_counts(&server);

    if a.runs > 0 {
        let before = requests()?;
        let names: Vec<String> = (0..a.runs).map(|i| format!("one-{i:05}")).collect();
        let timing = run_phase(&client, "one", &names, a.runs, a.submitters, deadline).await?;
        report(
            "independent one-task runs",
            a.runs,
            &timing,
            &before,
            &requests()?,
        );
    }
    if a.fanout > 0 {
        let before = requests()?;
        let names = vec!["fan-1".to_string()];
        let timing = run_phase(&client, "fan", &names, a.fanout + 2, 1, deadline).await?;
        report(
            &format!("one run, fan-out of {}", a.fanout),
            a.fanout + 2,
            &timing,
            &before,
            &requests()?,
        );
    }
    shutdown.cancel();
    let _ = controller.await;
    let _ = serving.await;
    Ok(())
}

/// The Task and the two Pipelines.
async fn setup(client: &Client, fanout: usize) -> Result<()> {
    let pp = PostParams::default();
    let tasks: Api<Task> = Api::namespaced(client.clone(), NAMESPACE);
    tasks
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "shoal.io/v1alpha1", "kind": "Task",
                "metadata": {"name": "noop"}, "spec": {"executor": "noop"}}))?,
        )
        .await?;
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), NAMESPACE);
    let noop = |name: String, after: Vec<String>| json!({"name": name, "taskRef": {"name": "noop"}, "runAfter": after});
    pipelines
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "shoal.io/v1alpha1", "kind": "Pipeline",
                "metadata": {"name": "one"},
                "spec": {"tasks": [noop("only".into(), vec![])]}}))?,
        )
        .await?;
    let middle: Vec<String> = (0..fanout).map(|i| format!("t{i:04}")).collect();
    let mut fan = vec![noop("start".into(), vec![])];
    fan.extend(middle.iter().map(|n| noop(n.clone(), vec!["start".into()])));
    fan.push(noop("end".into(), middle));
    pipelines
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "shoal.io/v1alpha1", "kind": "Pipeline",
                "metadata": {"name": "fan"}, "spec": {"tasks": fan}}))?,
        )
        .await?;
    Ok(())
}

/// How long a phase took: until every run succeeded, and until every TaskRun also
/// records its outcome (the controller writes those in the background).
struct Timing {
    submitted: Duration,
    runs_done: Duration,
    task_runs_recorded: Duration,
}

/// Submits one run of `pipeline` per name and waits until all of them succeeded and
/// all `tasks` TaskRuns record their outcome. Times from the first create.
async fn run_phase(
    client: &Client,
    pipeline: &str,
    names: &[String],
    tasks: usize,
    submitters: usize,
    deadline: Duration,
) -> Result<Timing> {
    let runs: Api<PipelineRun> = Api::namespaced(client.clone(), NAMESPACE);
    let wanted: HashSet<String> = names.iter().cloned().collect();
    let (tr_ready_tx, tr_ready_rx) = tokio::sync::oneshot::channel();
    let recorded = {
        let task_runs: Api<TaskRun> = Api::namespaced(client.clone(), NAMESPACE);
        let wanted = wanted.clone();
        tokio::spawn(async move {
            let mut ready = Some(tr_ready_tx);
            let mut done = HashSet::new();
            let stream = watcher(task_runs, watcher::Config::default());
            futures::pin_mut!(stream);
            while let Some(ev) = stream.try_next().await? {
                let o = match ev {
                    watcher::Event::InitDone => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                        continue;
                    }
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => o,
                    _ => continue,
                };
                let ours = o
                    .labels()
                    .get(LABEL_PIPELINE_RUN)
                    .is_some_and(|r| wanted.contains(r));
                if ours
                    && o.status
                        .as_ref()
                        .is_some_and(|s| s.completion_time.is_some())
                {
                    done.insert(o.name_any());
                    if done.len() >= tasks {
                        break;
                    }
                }
            }
            anyhow::Ok(Instant::now())
        })
    };
    tr_ready_rx
        .await
        .context("the bench's TaskRun watch ended before it started")?;
    // The watch starts before the first create, so no completion is missed.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let done = {
        let runs = runs.clone();
        let wanted = wanted.clone();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut done = HashSet::new();
            let mut failed = Vec::new();
            let stream = watcher(runs, watcher::Config::default());
            futures::pin_mut!(stream);
            while let Some(ev) = stream.try_next().await? {
                let objs = match ev {
                    watcher::Event::InitDone => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                        continue;
                    }
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![o],
                    _ => continue,
                };
                for o in objs {
                    let name = o.name_any();
                    let Some(st) = o.status.as_ref().filter(|s| s.is_done()) else {
                        continue;
                    };
                    if !wanted.contains(&name) || !done.insert(name.clone()) {
                        continue;
                    }
                    let reason = st.succeeded().map(|c| c.reason.clone()).unwrap_or_default();
                    if reason != "Succeeded" {
                        failed.push(format!("{name}: {reason}"));
                    }
                }
                if done.len() == wanted.len() {
                    break;
                }
            }
            anyhow::Ok((Instant::now(), failed))
        })
    };
    ready_rx
        .await
        .context("the bench's watch ended before it started")?;
    let start = Instant::now();
    let pipeline = pipeline.to_string();
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let (runs, pipeline) = (runs.clone(), pipeline.clone());
            async move {
                let run: PipelineRun = serde_json::from_value(json!({
                    "apiVersion": "shoal.io/v1alpha1", "kind": "PipelineRun",
                    "metadata": {"name": name}, "spec": {"pipelineRef": {"name": pipeline}}}))?;
                runs.create(&PostParams::default(), &run).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(submitters)
        .try_collect::<()>()
        .await?;
    let submitted = start.elapsed();
    let (end, failed) = tokio::time::timeout(deadline, done)
        .await
        .with_context(|| format!("the runs did not complete within {deadline:?}"))???;
    if !failed.is_empty() {
        bail!(
            "{} runs did not succeed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
    }
    let recorded = tokio::time::timeout(deadline, recorded)
        .await
        .with_context(|| format!("the TaskRuns were not all recorded within {deadline:?}"))???;
    Ok(Timing {
        submitted,
        runs_done: end - start,
        task_runs_recorded: recorded.max(end) - start,
    })
}

/// Prints a phase's figure: task runs/s until the last TaskRun recorded its outcome
/// (the stricter of the two times), and when the runs themselves were done.
fn report(
    what: &str,
    tasks: usize,
    timing: &Timing,
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) {
    let secs = timing.task_runs_recorded.as_secs_f64();
    println!(
        "  {what:<34} {tasks:>6} task runs in {secs:>7.2} s   {:>8.0} task runs/s   \
         (submitted after {:.2} s, runs done after {:.2} s)",
        tasks as f64 / secs,
        timing.submitted.as_secs_f64(),
        timing.runs_done.as_secs_f64()
    );
    let per_task: Vec<String> = after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| format!("{k} {:.2}", d / tasks as f64))
        })
        .collect();
    println!("    API requests per task run: {}", per_task.join(", "));
}

/// Requests served so far, by `verb resource`, from the server's metrics.
fn request_counts(server: &ApiServer) -> Result<BTreeMap<String, f64>> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &server.state().telemetry.registry)?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(labels) = series
            .strip_prefix("apiserver_request_total{")
            .or_else(|| series.strip_prefix("apiserver_requests_total{"))
        else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches(['"', '}']).to_string())
                .unwrap_or_default()
        };
        if label("verb") == "watch" {
            continue;
        }
        // Failed requests (conflicts above all) are counted apart: each costs a retry.
        let code = label("code");
        let key = if code.starts_with('2') {
            format!("{} {}", label("verb"), label("resource"))
        } else {
            format!("{} {} {code}", label("verb"), label("resource"))
        };
        *out.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(out)
}
