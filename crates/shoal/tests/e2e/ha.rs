//! High availability: two `shoal serve` replicas on one (throwaway) etcd. Both serve the
//! API; the taskflow controller runs only on the leader of role `taskflow`, and every
//! write it makes carries its fence.
//!
//! ```text
//!  test ──► etcd ◄── shoal serve a (--identity a, leads: controller + executors)
//!            ▲   ◄── shoal serve b (--identity b, serves the API, campaigns)
//!            │
//!            └── the test reads the Lease key and the objects' store revisions directly
//!  webhook tasks ──► a counting HTTP server in the test
//!  kill -9 a / SIGSTOP a ──► b takes over within the TTL; a never writes as leader again
//! ```

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ShoalServer, eventually, within};
use kube::{Api, ResourceExt};
use serde_json::Value;
use shoal_core::taskflow::{PipelineRun, TaskRun, TaskState};
use shoal_store::election::role_key;
use shoal_store::etcd::{EtcdOptions, ThrowawayEtcd};
use shoal_store::{RangeRequest, Store};

/// The leader lease's TTL in these tests: short, so takeovers are quick.
const TTL: Duration = Duration::from_secs(3);

/// A takeover may take the TTL, plus etcd's lease expiry check (twice a second), plus
/// a campaign and the controller's start on a loaded CI machine.
const TAKEOVER_DEADLINE: Duration = Duration::from_secs(8);

/// Whole-test limit: two servers, a takeover, and runs of a few seconds each.
const HA_TEST_DEADLINE: Duration = Duration::from_secs(120);

/// How long the runs may take to complete after a takeover.
const RUNS_DEADLINE: Duration = Duration::from_secs(60);

async fn start_etcd() -> ThrowawayEtcd {
    ThrowawayEtcd::start()
        .await
        .unwrap_or_else(|err| panic!("these tests need a real etcd: {err}"))
}

async fn replica(etcd: &ThrowawayEtcd, identity: &str) -> ShoalServer {
    let ttl = TTL.as_secs().to_string();
    ShoalServer::start(&[
        "--store",
        &etcd.url(),
        "--identity",
        identity,
        "--leader-ttl-seconds",
        &ttl,
    ])
    .await
}

async fn open_store(etcd: &ThrowawayEtcd) -> Store {
    Store::etcd(EtcdOptions::from_url(&etcd.url()).expect("the etcd URL parses"))
        .await
        .expect("open the etcd store")
}

/// The holder of role `taskflow` and its term (the key's create_revision), if any.
async fn holder(store: &Store) -> Option<(String, i64)> {
    let kv = store
        .get(&role_key("taskflow"))
        .await
        .expect("read the Lease")?;
    let lease: Value = serde_json::from_slice(&kv.value).expect("the Lease is JSON");
    let who = lease["spec"]["holderIdentity"].as_str()?.to_string();
    Some((who, kv.create_revision))
}

async fn wait_for_holder(store: &Store, who: &str, limit: Duration) -> i64 {
    eventually(limit, &format!("{who} leads taskflow"), async || {
        holder(store)
            .await
            .filter(|(h, _)| h == who)
            .map(|(_, term)| term)
    })
    .await
}

/// Every TaskRun in the store: (name, create_revision, launched-by).
async fn task_runs_in_store(store: &Store) -> Vec<(String, i64, String)> {
    let prefix = "/registry/shoal.io/taskruns/";
    let resp = store
        .range(RangeRequest {
            prefix: prefix.into(),
            ..RangeRequest::default()
        })
        .await
        .expect("range TaskRuns");
    resp.kvs
        .iter()
        .map(|kv| {
            let obj: Value = serde_json::from_slice(&kv.value).expect("TaskRuns are JSON");
            (
                obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                kv.create_revision,
                obj["metadata"]["annotations"]["taskflow.shoal.io/launched-by"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// A webhook receiver that remembers the body of every call.
struct Hooks {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Hooks {
    fn calls_for(&self, run: &str) -> usize {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b["run"] == run)
            .count()
    }

    fn total(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }
}

async fn mk_hooks() -> Hooks {
    use axum::routing::post;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new().route(
        "/hook",
        post({
            let bodies = bodies.clone();
            move |body: String| async move {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
                bodies.lock().unwrap().push(v);
                "{\"ok\": true}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Hooks { url, bodies }
}

/// Tasks and a pipeline: settle (wait) → notify (webhook, not idempotent) → bake (wait)
/// → done (noop).
fn mk_deploy(hooks: &Hooks, settle: &str, bake: &str) -> String {
    format!(
        "apiVersion: shoal.io/v1alpha1\nkind: Task\nmetadata: {{name: wait}}\n\
         spec: {{executor: wait, params: [{{name: duration}}]}}\n---\n\
         apiVersion: shoal.io/v1alpha1\nkind: Task\nmetadata: {{name: noop}}\nspec: {{executor: noop}}\n---\n\
         apiVersion: shoal.io/v1alpha1\nkind: Task\nmetadata: {{name: notify}}\n\
         spec:\n  executor: webhook\n  params:\n  - {{name: url, default: \"{}/hook\"}}\n  \
         - {{name: body, default: '{{\"run\": \"{{{{ run }}}}\", \"attempt\": \"{{{{ attempt }}}}\"}}'}}\n  \
         - {{name: successField, default: ok}}\n---\n\
         apiVersion: shoal.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: deploy}}\n\
         spec:\n  tasks:\n  - {{name: settle, taskRef: {{name: wait}}, params: [{{name: duration, value: {settle}}}]}}\n  \
         - {{name: notify, taskRef: {{name: notify}}, runAfter: [settle]}}\n  \
         - {{name: bake, taskRef: {{name: wait}}, runAfter: [notify], params: [{{name: duration, value: {bake}}}]}}\n  \
         - {{name: done, taskRef: {{name: noop}}, runAfter: [bake]}}\n---\n",
        hooks.url
    )
}

fn mk_runs(names: &[String]) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "apiVersion: shoal.io/v1alpha1\nkind: PipelineRun\nmetadata: {{name: {n}}}\n\
                 spec: {{pipelineRef: {{name: deploy}}}}\n---\n"
            )
        })
        .collect()
}

async fn apply(s: &ShoalServer, file: &str, yaml: &str) {
    let path = s.write_file(file, yaml);
    s.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]).await;
}

fn reason(run: &PipelineRun) -> String {
    run.status
        .as_ref()
        .and_then(|s| s.succeeded())
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

fn notify(run: &PipelineRun) -> (TaskState, u32) {
    let t = run
        .status
        .as_ref()
        .and_then(|s| s.tasks.iter().find(|t| t.name == "notify"))
        .expect("the run lists notify");
    (t.state, t.attempts)
}

/// The acceptance test of issue "High availability" (a): the leader is SIGKILLed while
/// runs are mid-flight; the survivor takes over within the TTL, and every run completes
/// with its non-idempotent webhook delivered exactly once.
#[tokio::test]
async fn the_survivor_takes_over_a_killed_leaders_runs_and_each_webhook_is_delivered_once() {
    within(HA_TEST_DEADLINE, "takeover after SIGKILL", async {
        let etcd = start_etcd().await;
        let store = open_store(&etcd).await;
        let hooks = mk_hooks().await;
        let mut a = replica(&etcd, "a").await;
        let term_a = wait_for_holder(&store, "a", TAKEOVER_DEADLINE).await;
        let b = replica(&etcd, "b").await;

        apply(&a, "deploy.yaml", &mk_deploy(&hooks, "100ms", "1500ms")).await;
        let names: Vec<String> = (1..=12).map(|i| format!("r{i:02}")).collect();
        apply(&a, "runs.yaml", &mk_runs(&names)).await;
        // Mid-flight: some webhooks delivered, the runs far from done.
        eventually(
            RUNS_DEADLINE,
            "the first webhook is delivered",
            async || (hooks.total() > 0).then_some(()),
        )
        .await;
        let delivered_before = hooks.total();
        a.kill9();
        let killed = Instant::now();
        let term_b = wait_for_holder(&store, "b", TAKEOVER_DEADLINE).await;
        let takeover = killed.elapsed();
        println!(
            "takeover after SIGKILL of the leader: {takeover:?} (TTL {TTL:?}); \
             {delivered_before} webhooks delivered before the kill"
        );
        assert!(term_b > term_a, "a new term has a newer fence");

        // The survivor finishes the work. An attempt the dead leader had started and not
        // recorded is `Interrupted` (a webhook may or may not have gone out): a human
        // checks the receiver and skips it (delivered) or retries it (not delivered).
        let api: Api<PipelineRun> = Api::namespaced(b.client(), "default");
        let mut by_hand = BTreeMap::new();
        let done = eventually(RUNS_DEADLINE, "every run completes on b", async || {
            let runs = api
                .list(&Default::default())
                .await
                .expect("list runs on b")
                .items;
            for r in &runs {
                let name = r.name_any();
                if reason(r) == "Interrupted" && !by_hand.contains_key(&name) {
                    let (verb, why): (&str, &str) = if hooks.calls_for(&name) > 0 {
                        ("skip", "delivered before the leader died")
                    } else {
                        ("retry", "")
                    };
                    let mut args = vec!["pipelinerun", verb, name.as_str(), "--task", "notify"];
                    if verb == "skip" {
                        args.extend(["--reason", why]);
                    }
                    b.shoal_ok(&args).await;
                    by_hand.insert(name.clone(), verb);
                }
            }
            (runs.len() == names.len()
                && runs
                    .iter()
                    .all(|r| r.status.as_ref().is_some_and(|s| s.is_done())))
            .then_some(runs)
        })
        .await;
        println!("after the takeover, decided by hand (interrupted webhooks): {by_hand:?}");

        for r in &done {
            let name = r.name_any();
            assert!(
                matches!(reason(r).as_str(), "Succeeded" | "Completed"),
                "{name} did not complete: {:#?}",
                r.status
            );
            assert_eq!(
                hooks.calls_for(&name),
                1,
                "{name}'s webhook was delivered exactly once"
            );
            let (state, attempts) = notify(r);
            match by_hand.get(&name) {
                None => assert_eq!((state, attempts), (TaskState::Succeeded, 1), "{name}"),
                Some(&"skip") => assert_eq!(state, TaskState::Skipped, "{name}"),
                Some(_) => assert_eq!((state, attempts), (TaskState::Succeeded, 2), "{name}"),
            }
            let tasks = &r.status.as_ref().unwrap().tasks;
            assert!(
                tasks
                    .iter()
                    .filter(|t| t.name != "notify")
                    .all(|t| t.state == TaskState::Succeeded),
                "{name}: {tasks:#?}"
            );
        }

        // The store's history: every TaskRun b launched was created in b's term, every
        // one a launched before it; a webhook TaskRun exists once per attempt.
        let trs = task_runs_in_store(&store).await;
        for (name, created, by) in &trs {
            match by.as_str() {
                "a" => assert!(
                    *created < term_b,
                    "{name} created by a at {created} in b's term {term_b}"
                ),
                "b" => assert!(
                    *created > term_b,
                    "{name} created by b at {created} before its term {term_b}"
                ),
                other => panic!("{name} launched by {other:?}"),
            }
        }
        let launched_by_b = trs.iter().filter(|t| t.2 == "b").count();
        println!(
            "TaskRuns: {} by a (before the kill), {launched_by_b} by b (after term {term_b})",
            trs.len() - launched_by_b
        );
        assert!(launched_by_b > 0, "b did part of the work");
        let trs_api: Api<TaskRun> = Api::namespaced(b.client(), "default");
        for n in &names {
            let list = trs_api
                .list(
                    &kube::api::ListParams::default().labels(&format!("shoal.io/pipelineRun={n}")),
                )
                .await
                .expect("list TaskRuns");
            let notify_attempts = list
                .items
                .iter()
                .filter(|t| t.spec.pipeline_task.as_deref() == Some("notify"))
                .count();
            assert!(
                (1..=2).contains(&notify_attempts),
                "{n}: {notify_attempts} notify TaskRuns"
            );
        }
    })
    .await;
}

/// The acceptance test of issue "High availability" (b): a leader frozen (SIGSTOP) past
/// its lease is replaced; when it wakes (SIGCONT) it steps down without writing, and a
/// write made under its old term is refused by the store.
#[tokio::test]
async fn a_leader_frozen_past_its_lease_steps_down_without_writing_when_it_wakes() {
    within(HA_TEST_DEADLINE, "SIGSTOP / SIGCONT of the leader", async {
        let etcd = start_etcd().await;
        let store = open_store(&etcd).await;
        let hooks = mk_hooks().await;
        let a = replica(&etcd, "a").await;
        let term_a = wait_for_holder(&store, "a", TAKEOVER_DEADLINE).await;
        let b = replica(&etcd, "b").await;

        // One run whose `settle` waits long enough to be running across the freeze.
        apply(&a, "deploy.yaml", &mk_deploy(&hooks, "2s", "100ms")).await;
        apply(&a, "runs.yaml", &mk_runs(&["frozen".to_string()])).await;
        let api: Api<PipelineRun> = Api::namespaced(b.client(), "default");
        eventually(RUNS_DEADLINE, "settle runs on a", async || {
            let r = api.get("frozen").await.ok()?;
            let settle = r
                .status
                .as_ref()?
                .tasks
                .iter()
                .find(|t| t.name == "settle")?
                .clone();
            (settle.state == TaskState::Running).then_some(())
        })
        .await;

        signal(&a, "STOP");
        let frozen = Instant::now();
        let term_b = wait_for_holder(&store, "b", TAKEOVER_DEADLINE).await;
        println!(
            "takeover from a frozen leader: {:?} (TTL {TTL:?})",
            frozen.elapsed()
        );
        // b resumes the run: `settle` is idempotent, so b re-runs it from its recorded
        // start; the run completes without a.
        let done = eventually(RUNS_DEADLINE, "b completes the run", async || {
            let r = api.get("frozen").await.ok()?;
            r.status.as_ref().is_some_and(|s| s.is_done()).then_some(r)
        })
        .await;
        assert_eq!(reason(&done), "Succeeded", "{:#?}", done.status);
        assert_eq!(hooks.calls_for("frozen"), 1, "the webhook ran once, on b");

        // Wake a. Its executors' timers and its elector's deadline have all passed; it
        // must step down, not write.
        let before_wake = store.current_revision().await.expect("current revision");
        signal(&a, "CONT");
        let log = eventually(
            Duration::from_secs(15),
            "a logs that it stopped leading",
            async || {
                let log = a.log();
                log.contains("stopped leading").then_some(log)
            },
        )
        .await;
        tokio::time::sleep(TTL).await; // let anything a would still do happen
        assert_eq!(
            holder(&store).await.map(|h| h.0).as_deref(),
            Some("b"),
            "b still leads"
        );
        let run_key = "/registry/shoal.io/pipelineruns/default/frozen";
        let kv = store
            .get(run_key)
            .await
            .unwrap()
            .expect("the run is stored");
        assert!(
            kv.mod_revision <= before_wake,
            "the run was written after a woke (revision {} > {before_wake})\n{log}",
            kv.mod_revision
        );
        for (name, created, by) in task_runs_in_store(&store).await {
            assert!(
                !(by == "a" && created > term_b),
                "{name} created by a in b's term"
            );
        }
        assert_eq!(hooks.calls_for("frozen"), 1, "nothing was re-sent by a");

        // A write under a's old term, made now, is refused by the store: 412 Fenced.
        let http = reqwest::Client::new();
        let resp = http
            .patch(b.at("/apis/shoal.io/v1alpha1/namespaces/default/pipelineruns/frozen"))
            .header("content-type", "application/merge-patch+json")
            .header("x-shoal-fence", format!("taskflow={term_a}"))
            .body(r#"{"metadata":{"labels":{"written-by":"a"}}}"#)
            .send()
            .await
            .expect("send the fenced patch");
        assert_eq!(resp.status().as_u16(), 412);
        let status: Value = resp.json().await.expect("a Status");
        assert_eq!(status["reason"], "Fenced", "{status}");
        assert_eq!(status["details"]["name"], "taskflow", "{status}");
        let after = store
            .get(run_key)
            .await
            .unwrap()
            .expect("the run is stored");
        assert_eq!(
            after.mod_revision, kv.mod_revision,
            "the refused write did not land"
        );
        // The same write under b's current term lands.
        let ok = http
            .patch(b.at("/apis/shoal.io/v1alpha1/namespaces/default/pipelineruns/frozen"))
            .header("content-type", "application/merge-patch+json")
            .header("x-shoal-fence", format!("taskflow={term_b}"))
            .body(r#"{"metadata":{"labels":{"written-by":"b"}}}"#)
            .send()
            .await
            .expect("send the current-term patch");
        assert_eq!(ok.status().as_u16(), 200);
        println!(
            "a woke and stepped down; a write under its old term {term_a} answered 412 Fenced"
        );
    })
    .await;
}

/// Sends `SIGsig` to the server (kill(1): the tests have no libc).
fn signal(s: &ShoalServer, sig: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &s.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{sig} failed");
}
