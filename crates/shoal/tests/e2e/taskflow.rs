//! Taskflow end to end: pipeline runs driven by the controller inside `shoal serve`,
//! operated with kubectl and the shoal CLI, surviving SIGKILL.
//!
//! ```text
//!  kubectl apply Task/Pipeline/PipelineRun ──► shoal serve ──► taskflow controller
//!                                                               ├─ noop / wait / fail / approval
//!                                                               └─ webhook ──► test HTTP server (counts calls)
//!  kill -9 mid-run ──► restart on the same data dir ──► the run completes from its stored status
//! ```

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{ShoalServer, TEST_DEADLINE, eventually, within};
use kube::{Api, ResourceExt};
use shoal_core::taskflow::{PipelineRun, PipelineTaskStatus, TaskRun, TaskState};

/// How long a run of a few short tasks may take on a loaded CI machine.
const RUN_DEADLINE: Duration = Duration::from_secs(30);

fn mk_task(name: &str, executor: &str, extra: &str) -> String {
    format!(
        "apiVersion: shoal.io/v1alpha1\nkind: Task\nmetadata: {{name: {name}}}\n\
         spec:\n  executor: {executor}\n{extra}---\n"
    )
}

/// `tasks` and `finally` are YAML flow sequences of pipeline tasks.
fn mk_pipeline(name: &str, tasks: &str, finally: &str) -> String {
    format!(
        "apiVersion: shoal.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\n\
         spec:\n  tasks: {tasks}\n  finally: {finally}\n---\n"
    )
}

fn mk_run(name: &str, pipeline: &str, extra: &str) -> String {
    format!(
        "apiVersion: shoal.io/v1alpha1\nkind: PipelineRun\nmetadata: {{name: {name}}}\n\
         spec:\n  pipelineRef: {{name: {pipeline}}}\n{extra}---\n"
    )
}

async fn apply(s: &ShoalServer, name: &str, yaml: &str) {
    let path = s.write_file(name, yaml);
    s.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]).await;
}

async fn get_run(s: &ShoalServer, name: &str) -> PipelineRun {
    let api: Api<PipelineRun> = Api::namespaced(s.client(), "default");
    api.get(name).await.expect("read the run")
}

fn task<'a>(run: &'a PipelineRun, name: &str) -> &'a PipelineTaskStatus {
    let status = run.status.as_ref().expect("the run has a status");
    status
        .tasks
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no task {name} in {:#?}", status.tasks))
}

fn reason(run: &PipelineRun) -> String {
    run.status
        .as_ref()
        .and_then(|s| s.succeeded())
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// Polls the run until `pred` holds, failing with `what` after [`RUN_DEADLINE`].
async fn run_until(
    s: &ShoalServer,
    name: &str,
    what: &str,
    pred: impl Fn(&PipelineRun) -> bool,
) -> PipelineRun {
    eventually(RUN_DEADLINE, what, async || {
        let r = get_run(s, name).await;
        pred(&r).then_some(r)
    })
    .await
}

/// A tiny HTTP server for webhooks: counts POST /hook; POST /slow counts and never
/// answers within the test.
struct Hooks {
    url: String,
    calls: Arc<AtomicUsize>,
    slow_calls: Arc<AtomicUsize>,
}

async fn mk_hooks() -> Hooks {
    use axum::routing::post;
    let calls = Arc::new(AtomicUsize::new(0));
    let slow_calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/hook",
            post({
                let calls = calls.clone();
                move |body: String| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    format!("{{\"ok\": true, \"got\": {body:?}}}")
                }
            }),
        )
        .route(
            "/slow",
            post({
                let slow = slow_calls.clone();
                move || async move {
                    slow.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Hooks {
        url,
        calls,
        slow_calls,
    }
}

#[tokio::test]
async fn a_three_task_pipeline_runs_to_succeeded_with_its_history() {
    within(TEST_DEADLINE, "three-task pipeline", async {
        let s = ShoalServer::start(&[]).await;
        let yaml = [
            mk_task("noop", "noop", ""),
            mk_task("wait", "wait", "  params: [{name: duration, default: 200ms}]\n"),
            mk_pipeline(
                "three",
                "[{name: a, taskRef: {name: noop}}, {name: b, taskRef: {name: wait}, runAfter: [a]}, \
                 {name: c, taskRef: {name: noop}, runAfter: [b]}]",
                "[]",
            ),
            mk_run("r1", "three", ""),
        ]
        .concat();
        apply(&s, "three.yaml", &yaml).await;
        s.kubectl_ok(&["wait", "--for=condition=Succeeded", "pipelinerun/r1", "--timeout=30s"])
            .await;
        let run = get_run(&s, "r1").await;
        assert_eq!(reason(&run), "Succeeded");
        let status = run.status.as_ref().unwrap();
        assert_eq!(status.progress.as_deref(), Some("3/3"));
        assert!(status.pipeline_spec.is_some(), "the pipeline is pinned");
        let names: Vec<&str> = status.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        for t in &status.tasks {
            assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
            assert_eq!(t.attempts, 1, "{t:?}");
            assert!(t.start_time.is_some() && t.completion_time.is_some(), "{t:?}");
        }
        // In order: each starts no earlier than its predecessor completed.
        for w in status.tasks.windows(2) {
            assert!(w[1].start_time.as_ref().unwrap().0 >= w[0].completion_time.as_ref().unwrap().0);
        }
        let trs: Api<TaskRun> = Api::namespaced(s.client(), "default");
        for n in ["r1-a-1", "r1-b-1", "r1-c-1"] {
            let tr = trs.get(n).await.expect("one TaskRun per attempt");
            let st = tr.status.expect("the TaskRun records the outcome");
            assert_eq!(st.state, Some(TaskState::Succeeded), "{n}");
        }
        let out = s.shoal_ok(&["describe", "pipelinerun", "r1"]).await;
        assert!(out.contains("True (Succeeded)"), "{out}");
        assert!(out.contains("← b"), "the DAG shows c after b:\n{out}");
        let table = s.kubectl_ok(&["get", "pipelineruns"]).await;
        assert!(table.contains("3/3"), "{table}");
    })
    .await;
}

/// The acceptance test of issue 5: SIGKILL mid-run, restart, the run completes, and the
/// non-idempotent webhook ran exactly once.
#[tokio::test]
async fn a_run_killed_mid_flight_completes_after_restart_and_its_webhook_ran_once() {
    within(TEST_DEADLINE, "sigkill mid-run", async {
        let hooks = mk_hooks().await;
        let mut s = ShoalServer::start(&[]).await;
        let yaml = [
            mk_task("wait", "wait", "  params: [{name: duration}]\n"),
            mk_task("noop", "noop", ""),
            mk_task(
                "notify",
                "webhook",
                &format!(
                    "  params:\n  - {{name: url, default: \"{}/hook\"}}\n  \
                     - {{name: body, default: '{{\"run\": \"{{{{ run }}}}\"}}'}}\n  \
                     - {{name: successField, default: ok}}\n",
                    hooks.url
                ),
            ),
            mk_pipeline(
                "deploy",
                "[{name: settle, taskRef: {name: wait}, params: [{name: duration, value: 200ms}]}, \
                 {name: notify, taskRef: {name: notify}, runAfter: [settle]}, \
                 {name: bake, taskRef: {name: wait}, runAfter: [notify], params: [{name: duration, value: 3s}]}, \
                 {name: done, taskRef: {name: noop}, runAfter: [bake]}]",
                "[]",
            ),
            mk_run("r1", "deploy", ""),
        ]
        .concat();
        apply(&s, "deploy.yaml", &yaml).await;
        // Kill during `bake`: the webhook's outcome is recorded, `bake` is running.
        let before = run_until(&s, "r1", "bake is running after the webhook", |r| {
            r.status.as_ref().is_some_and(|st| {
                st.tasks.iter().any(|t| t.name == "bake" && t.state == TaskState::Running)
            })
        })
        .await;
        assert_eq!(hooks.calls.load(Ordering::SeqCst), 1);
        s.kill9();
        s.restart().await;
        let after = run_until(&s, "r1", "the run completes after the restart", |r| {
            r.status.as_ref().is_some_and(|st| st.is_done())
        })
        .await;
        assert_eq!(reason(&after), "Succeeded", "{:#?}", after.status);
        assert_eq!(hooks.calls.load(Ordering::SeqCst), 1, "the webhook ran exactly once");
        // History intact: what was recorded before the kill is unchanged.
        for name in ["settle", "notify"] {
            assert_eq!(task(&after, name), task(&before, name), "{name} changed");
        }
        let notify = task(&after, "notify");
        assert_eq!(notify.attempts, 1);
        assert!(notify.results.iter().any(|r| r.name == "statusCode"));
        // `bake` was idempotent: the same attempt re-ran, from its recorded start.
        let bake = task(&after, "bake");
        assert_eq!((bake.state, bake.attempts), (TaskState::Succeeded, 1));
        assert_eq!(bake.start_time, task(&before, "bake").start_time);
        assert_eq!(task(&after, "done").state, TaskState::Succeeded);
    })
    .await;
}

/// A non-idempotent attempt cut by a restart is not re-run on its own: the run waits
/// (`Interrupted`) until a human retries or skips it.
#[tokio::test]
async fn a_webhook_cut_by_a_restart_waits_for_a_human_then_retries_by_cli() {
    within(TEST_DEADLINE, "interrupted webhook", async {
        let hooks = mk_hooks().await;
        let mut s = ShoalServer::start(&[]).await;
        let yaml = [
            mk_task(
                "slow",
                "webhook",
                &format!("  params: [{{name: url, default: \"{}/slow\"}}, {{name: timeout, default: 1h}}]\n", hooks.url),
            ),
            mk_pipeline("p", "[{name: call, taskRef: {name: slow}}]", "[]"),
            mk_run("r1", "p", ""),
        ]
        .concat();
        apply(&s, "p.yaml", &yaml).await;
        eventually(RUN_DEADLINE, "the webhook is called", async || {
            (hooks.slow_calls.load(Ordering::SeqCst) == 1).then_some(())
        })
        .await;
        s.restart().await;
        let run = run_until(&s, "r1", "the run is held as Interrupted", |r| reason(r) == "Interrupted")
            .await;
        assert_eq!(task(&run, "call").state, TaskState::Interrupted);
        // Nothing re-sends it on its own, not even when the run is looked at again: a
        // change of the run's spec (a time limit of none) is seen — its generation
        // observed — and the webhook still was called once.
        let generation = run.metadata.generation.expect("a generation");
        s.kubectl_ok(&[
            "patch", "pipelinerun", "r1", "--type=merge", "-p",
            r#"{"spec":{"timeouts":{"pipeline":"0s"}}}"#,
        ])
        .await;
        let run = run_until(&s, "r1", "the change is observed", |r| {
            r.status.as_ref().and_then(|st| st.observed_generation) > Some(generation)
        })
        .await;
        assert_eq!(task(&run, "call").state, TaskState::Interrupted);
        assert_eq!(hooks.slow_calls.load(Ordering::SeqCst), 1);

        // Point the Task at the counting hook (the pinned pipeline refers to the Task by
        // name; Tasks are read on each step) and retry by hand.
        apply(
            &s,
            "fixed.yaml",
            &mk_task("slow", "webhook", &format!("  params: [{{name: url, default: \"{}/hook\"}}]\n", hooks.url)),
        )
        .await;
        let out = s.shoal_ok(&["pipelinerun", "retry", "r1", "--task", "call"]).await;
        assert!(out.contains("retried"), "{out}");
        let run = run_until(&s, "r1", "the retried run completes", |r| {
            r.status.as_ref().is_some_and(|st| st.is_done())
        })
        .await;
        assert_eq!(reason(&run), "Succeeded", "{:#?}", run.status);
        assert_eq!(task(&run, "call").attempts, 2);
        assert_eq!(hooks.calls.load(Ordering::SeqCst), 1);
        assert!(run.annotations().is_empty() || !run.annotations().contains_key("taskflow.shoal.io/retry"));
        // A refused operation says why, without touching the run.
        let r = s.shoal(&["pipelinerun", "skip", "r1", "--task", "call", "--reason", "x"]).await;
        assert!(!r.status.success());
        assert!(r.stderr.contains("completed"), "{}", r.stderr);
    })
    .await;
}

#[tokio::test]
async fn a_failing_task_is_retried_then_finally_runs() {
    within(TEST_DEADLINE, "retries and finally", async {
        let s = ShoalServer::start(&[]).await;
        let yaml = [
            mk_task("flaky", "fail", "  retries: 2\n  params: [{name: message, default: boom}]\n"),
            mk_task("noop", "noop", ""),
            mk_pipeline(
                "p",
                "[{name: t, taskRef: {name: flaky}}, {name: after, taskRef: {name: noop}, runAfter: [t]}]",
                "[{name: report, taskRef: {name: noop}}]",
            ),
            mk_run("r1", "p", ""),
        ]
        .concat();
        apply(&s, "p.yaml", &yaml).await;
        let r = s
            .kubectl(&["wait", "--for=condition=Succeeded=False", "pipelinerun/r1", "--timeout=30s"])
            .await;
        assert!(r.status.success(), "{} {}\n{}", r.stdout, r.stderr, s.log());
        let run = get_run(&s, "r1").await;
        assert_eq!(reason(&run), "Failed");
        let t = task(&run, "t");
        assert_eq!((t.state, t.attempts), (TaskState::Failed, 3), "{t:?}");
        assert_eq!(t.message.as_deref(), Some("boom"));
        assert_eq!(task(&run, "after").state, TaskState::Skipped);
        assert_eq!(task(&run, "report").state, TaskState::Succeeded);
        let trs: Api<TaskRun> = Api::namespaced(s.client(), "default");
        for attempt in 1..=3 {
            let tr = trs.get(&format!("r1-t-{attempt}")).await.expect("a TaskRun per attempt");
            assert_eq!(tr.status.and_then(|s| s.state), Some(TaskState::Failed));
        }
    })
    .await;
}

#[tokio::test]
async fn pause_resume_and_cancel_through_kubectl() {
    within(TEST_DEADLINE, "pause, resume, cancel", async {
        let s = ShoalServer::start(&[]).await;
        let yaml = [
            mk_task("wait", "wait", "  params: [{name: duration}]\n"),
            mk_task("noop", "noop", ""),
            mk_pipeline(
                "p",
                "[{name: a, taskRef: {name: noop}}, \
                 {name: long, taskRef: {name: wait}, runAfter: [a], params: [{name: duration, value: 1h}]}]",
                "[{name: cleanup, taskRef: {name: noop}}]",
            ),
            mk_run("held", "p", "  paused: true\n"),
        ]
        .concat();
        apply(&s, "p.yaml", &yaml).await;
        let run = run_until(&s, "held", "the run reports Paused", |r| reason(r) == "Paused").await;
        assert!(
            run.status.unwrap().tasks.iter().all(|t| t.state == TaskState::Pending),
            "a paused run starts nothing"
        );
        s.kubectl_ok(&["patch", "pipelinerun", "held", "--type=merge", "-p", r#"{"spec":{"paused":false}}"#])
            .await;
        run_until(&s, "held", "the resumed run starts `long`", |r| {
            r.status.as_ref().is_some_and(|st| {
                st.tasks.iter().any(|t| t.name == "long" && t.state == TaskState::Running)
            })
        })
        .await;
        s.kubectl_ok(&[
            "patch", "pipelinerun", "held", "--type=merge", "-p",
            r#"{"spec":{"status":"CancelledRunFinally"}}"#,
        ])
        .await;
        s.kubectl_ok(&["wait", "--for=condition=Succeeded=False", "pipelinerun/held", "--timeout=30s"])
            .await;
        let run = get_run(&s, "held").await;
        assert_eq!(reason(&run), "Cancelled");
        assert_eq!(task(&run, "a").state, TaskState::Succeeded);
        assert_eq!(task(&run, "long").state, TaskState::Cancelled);
        assert_eq!(task(&run, "cleanup").state, TaskState::Succeeded, "finally ran");
    })
    .await;
}

#[tokio::test]
async fn an_approval_gate_waits_for_an_approval_object() {
    within(TEST_DEADLINE, "approval gate", async {
        let s = ShoalServer::start(&[]).await;
        let yaml = [
            mk_task("gate", "approval", ""),
            mk_task("noop", "noop", ""),
            mk_pipeline(
                "p",
                "[{name: approve, taskRef: {name: gate}}, {name: ship, taskRef: {name: noop}, runAfter: [approve]}]",
                "[]",
            ),
            mk_run("r1", "p", ""),
            mk_run("r2", "p", ""),
        ]
        .concat();
        apply(&s, "p.yaml", &yaml).await;
        for r in ["r1", "r2"] {
            run_until(&s, r, "the gate is open", |r| {
                r.status.as_ref().is_some_and(|st| {
                    st.tasks.iter().any(|t| t.name == "approve" && t.state == TaskState::Running)
                })
            })
            .await;
        }
        // An Approval for another run (r2) does not count. Evidence first that the
        // controller has seen it — r2 passes its gate and completes — and only then that
        // r1 has not: nothing passes its gate without an Approval of its own.
        let approval = |name: &str, run: &str| {
            format!(
                "apiVersion: shoal.io/v1alpha1\nkind: Approval\nmetadata: {{name: {name}}}\n\
                 spec: {{pipelineRun: {run}, task: approve, approvedBy: alice, decision: Approve, reason: looks good}}\n"
            )
        };
        apply(&s, "other.yaml", &approval("other", "r2")).await;
        s.kubectl_ok(&["wait", "--for=condition=Succeeded", "pipelinerun/r2", "--timeout=30s"])
            .await;
        let run = get_run(&s, "r1").await;
        assert_eq!(task(&run, "approve").state, TaskState::Running);
        assert_eq!(task(&run, "ship").state, TaskState::Pending);
        apply(&s, "ok.yaml", &approval("ok", "r1")).await;
        s.kubectl_ok(&["wait", "--for=condition=Succeeded", "pipelinerun/r1", "--timeout=30s"])
            .await;
        let run = get_run(&s, "r1").await;
        let gate = task(&run, "approve");
        assert!(
            gate.results.iter().any(|r| r.name == "approvedBy" && r.value.as_str() == Some("alice")),
            "{gate:?}"
        );
        let table = s.kubectl_ok(&["get", "approvals"]).await;
        assert!(table.contains("alice"), "{table}");
    })
    .await;
}

/// Running PipelineRuns in `runs`, by pipeline: started and not completed.
fn running_by_pipeline(runs: &[PipelineRun]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for r in runs {
        if r.status
            .as_ref()
            .is_some_and(|s| s.start_time.is_some() && !s.is_done())
        {
            *out.entry(r.spec.pipeline_ref.name.clone()).or_default() += 1;
        }
    }
    out
}

/// Concurrency limits: `Pipeline.spec.maxConcurrentRuns` and `serve
/// --max-running-pipelineruns` hold back runs as `Queued`, never exceeded while sampled,
/// and every queued run runs in the end.
#[tokio::test]
async fn concurrency_limits_queue_runs_and_never_exceed_the_caps() {
    within(TEST_DEADLINE, "concurrency limits", async {
        let s = ShoalServer::start(&["--max-running-pipelineruns", "2"]).await;
        // Admission: a cap of zero is refused, naming the field.
        let bad = s.write_file(
            "bad.yaml",
            "apiVersion: shoal.io/v1alpha1\nkind: Pipeline\nmetadata: {name: bad}\n\
             spec: {maxConcurrentRuns: 0, tasks: [{name: a, taskRef: {name: wait}}]}\n",
        );
        let refused = s.kubectl_fails(&["apply", "-f", bad.to_str().unwrap()]).await;
        assert!(refused.contains("spec.maxConcurrentRuns"), "{refused}");

        let wait = |p: &str| {
            format!(
                "apiVersion: shoal.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: {p}}}\n\
                 spec:\n  {}tasks: [{{name: a, taskRef: {{name: wait}}, params: [{{name: duration, value: 700ms}}]}}]\n---\n",
                if p == "solo" { "maxConcurrentRuns: 1\n  " } else { "" }
            )
        };
        let mut yaml = mk_task("wait", "wait", "  params: [{name: duration}]\n");
        yaml.push_str(&wait("solo"));
        yaml.push_str(&wait("free"));
        apply(&s, "pipelines.yaml", &yaml).await;
        let runs: String = (1..=3)
            .flat_map(|i| [mk_run(&format!("solo-{i}"), "solo", ""), mk_run(&format!("free-{i}"), "free", "")])
            .collect();
        apply(&s, "runs.yaml", &runs).await;

        let api: Api<PipelineRun> = Api::namespaced(s.client(), "default");
        let mut queued_seen = std::collections::BTreeSet::new();
        let mut max_total = 0;
        let done = eventually(RUN_DEADLINE, "every run completes", async || {
            let list = api.list(&Default::default()).await.expect("list runs").items;
            let running = running_by_pipeline(&list);
            let total: usize = running.values().sum();
            assert!(total <= 2, "the global cap of 2 was exceeded: {running:?}");
            assert!(running.get("solo").copied().unwrap_or(0) <= 1, "solo ran twice at once: {running:?}");
            max_total = max_total.max(total);
            for r in &list {
                if reason(r) == "Queued" {
                    let message = r.status.as_ref().and_then(|s| s.succeeded()).map(|c| c.message.clone());
                    queued_seen.insert((r.name_any(), message.unwrap_or_default()));
                }
            }
            (list.len() == 6 && list.iter().all(|r| r.status.as_ref().is_some_and(|s| s.is_done())))
                .then_some(list)
        })
        .await;
        for r in &done {
            assert_eq!(reason(r), "Succeeded", "{}: {:#?}", r.name_any(), r.status);
        }
        assert_eq!(max_total, 2, "the cap was used, not just respected");
        assert!(
            queued_seen.iter().any(|(n, m)| n.starts_with("solo") && m.contains("maxConcurrentRuns")),
            "a solo run waited for its pipeline's cap: {queued_seen:?}"
        );
        assert!(
            queued_seen.iter().any(|(_, m)| m.contains("at most 2 pipeline runs")),
            "a run waited for the global cap: {queued_seen:?}"
        );
        // Within a pipeline, first come first served: solo-1 started before solo-2, …
        let start = |n: &str| {
            done.iter().find(|r| r.name_any() == n).and_then(|r| r.status.as_ref()?.start_time.clone()).unwrap().0
        };
        assert!(start("solo-1") <= start("solo-2") && start("solo-2") <= start("solo-3"));
    })
    .await;
}
