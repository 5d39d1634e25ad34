//! The executors of a release's in-cluster procedure: what one cluster goes through when
//! its turn in a [`Release`] comes. The release controller runs them as a pipeline run
//! per cluster, so each step's outcome is stored and a restart resumes after the last
//! finished step.
//!
//! ```text
//!  release-precheck   render every component at its target version (dependsOn order),
//!                     refuse dangerous-field changes (dry run), require the workloads
//!                     that exist to be healthy; result `previous` = {component: version}
//!  release-step ×N    per component, per step k of the strategy's batches:
//!                     set the workload's partition so step_target(k) pods take the new
//!                     version → three-way apply → wait until healthy → bake, watching
//!                     for crash-looping pods the whole time
//!  release-rollback   render each component at its `previous` version (reverse order),
//!                     partition 0, apply and wait healthy; delete what was not there
//! ```
//!
//! The key decision: a step sets an absolute partition computed from the live workload
//! and the step's index, never "one more batch", so running a step again (after a
//! restart, or a retry) changes nothing that the first run did not. Every executor here
//! is idempotent for that reason.
//!
//! Workloads with a partition (OpenKruise Advanced DaemonSet, StatefulSet) go in the
//! strategy's batches; others (apps/v1 DaemonSet, Deployment) change in the first step,
//! paced by their own maxUnavailable, and later steps only check them.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kube::api::DeleteParams;
use serde_json::{Value, json};
use shoal_core::kinds::component::CHECKABLE_KINDS;
use shoal_core::kinds::{
    ClusterConfig, ClusterGroup, Component, IntOrPercent, KRUISE_GROUP, Release,
};
use shoal_core::release::step_target;
use shoal_core::render::{self, ClusterFacts};
use shoal_core::taskflow::{ParamValue, RunResult, duration};
use shoal_fleet::{Applied, Fleet, Follow, Member, Reading, WorkloadHealth};

use super::scope::Scopes;
use super::{ExecContext, ExecError, Executor, Outcome};

/// How long shoal waits, in real time, for one request to a member (or a short exchange:
/// discovery and a read) before calling it a transient failure: long enough for a busy
/// apiserver, short enough that a hung connection does not hold a step.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A member whose watches have failed this long, in real time, is a transient failure
/// of the step (run again by the taskflow controller within its retry budget), never a
/// verdict about the workload.
const MEMBER_SILENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a waiting step looks at the watches' health in real time when nothing
/// else wakes it.
const SILENCE_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// The least real time a workload must go without progress before a step timeout is a
/// verdict, whatever the virtual clock says: at 60× a 30-minute `stepTimeout` is 30 real
/// seconds, which a simulator starved of CPU can lose without the rollout being stuck.
const MIN_REAL_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// A step's limit when its pipeline passes none (the strategy's default `stepTimeout`).
const DEFAULT_TIMEOUT: &str = "30m";

/// Registers the release executors on the shared fleet driver.
pub fn register(r: &mut super::Registry, fleet: Arc<Fleet>) {
    let shared = Arc::new(Shared {
        fleet,
        scopes: Scopes::default(),
    });
    r.register(Precheck(shared.clone()));
    r.register(Step(shared.clone()));
    r.register(Rollback(shared));
}

/// One HTTP client for the release checks (webhooks, metric queries).
fn http() -> &'static reqwest::Client {
    static HTTP: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    HTTP.get_or_init(reqwest::Client::new)
}

/// Where in a cluster's procedure the release's own checks run.
struct CheckPoint<'a> {
    component: &'a str,
    version: &'a str,
    /// 0 before the first step; k after step k.
    step: usize,
    steps: usize,
}

/// Runs the release's `strategy.checks` (webhooks, metric thresholds) for `scope`'s
/// cluster; the first failure fails the step, naming the check. Returns what each check
/// saw, as results `check-NAME` (`HTTP 200`, `0.01 ≤ max 0.05`), for people to read.
async fn release_checks(
    ctx: &ExecContext,
    scope: &Scope,
    at: &CheckPoint<'_>,
) -> Result<Vec<RunResult>, ExecError> {
    let release = scope.release.metadata.name.as_deref().unwrap_or("");
    let cluster = &scope.member.name;
    let phase = if at.step == 0 { "pre" } else { "post" };
    let checks = &scope.release.spec.strategy.checks;
    let mut readings = Vec::with_capacity(checks.len());
    if !checks.is_empty() {
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        let when = if at.step == 0 {
            "before the change".to_string()
        } else {
            format!("after step {}/{} of {}", at.step, at.steps, at.component)
        };
        ctx.progress("checking", &format!("{} {when}", names.join(", ")), None)
            .await;
    }
    for c in checks {
        let fail = |why: String| {
            failed(format!(
                "check {} failed on {cluster} {}: {why}",
                c.name,
                if at.step == 0 {
                    "before the change".to_string()
                } else {
                    format!("after step {}/{} of {}", at.step, at.steps, at.component)
                }
            ))
        };
        if let Some(w) = &c.webhook {
            let timeout = w
                .timeout
                .as_deref()
                .and_then(|t| duration::parse(t).ok())
                .and_then(|d| d.try_into().ok())
                .unwrap_or(std::time::Duration::from_secs(10));
            let body = json!({"release": release, "cluster": cluster, "component": at.component,
                "version": at.version, "step": at.step, "steps": at.steps, "phase": phase});
            let resp = http()
                .post(&w.url)
                .json(&body)
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| fail(format!("{} did not answer: {e}", w.url)))?;
            let code = resp.status();
            if !code.is_success() {
                let text = error_text(resp).await;
                return Err(fail(format!("{} answered {code}: {text}", w.url)));
            }
            readings.push(result(
                &format!("check-{}", c.name),
                format!("HTTP {}", code.as_u16()),
            ));
        }
        if let Some(m) = &c.metric {
            let scope_vars = json!({"cluster": cluster, "release": release,
                "component": at.component, "version": at.version});
            let query = minijinja::Environment::new()
                .render_str(&m.query, &scope_vars)
                .map_err(|e| fail(format!("the query does not render: {e}")))?;
            let value = query_prometheus(&m.prometheus, &query)
                .await
                .map_err(|why| fail(format!("{query:?} {why}")))?;
            if let Some(max) = m.max
                && value > max
            {
                return Err(fail(format!("{query} = {value}, above the maximum {max}")));
            }
            if let Some(min) = m.min
                && value < min
            {
                return Err(fail(format!("{query} = {value}, below the minimum {min}")));
            }
            let bounds: Vec<String> = [("max", m.max, "≤"), ("min", m.min, "≥")]
                .into_iter()
                .filter_map(|(n, b, op)| b.map(|b| format!("{op} {n} {b}")))
                .collect();
            readings.push(result(
                &format!("check-{}", c.name),
                format!("{value} {}", bounds.join(", "))
                    .trim_end()
                    .to_string(),
            ));
        }
    }
    Ok(readings)
}

/// The most of a webhook check's refusal that is read, for its message: the message
/// keeps 300 characters of it.
const MAX_ERROR_TEXT: usize = 4 * 1024;

/// The most of a Prometheus answer that is read: an instant query a check compares
/// against a bound is a few samples, and even a vector of thousands of series is far
/// below this. A longer answer fails the check rather than being read whole.
const MAX_PROMETHEUS_ANSWER: usize = 1024 * 1024;

/// One line of a refusing webhook's body (at most [`MAX_ERROR_TEXT`] bytes read).
async fn error_text(resp: reqwest::Response) -> String {
    match super::webhook::read_prefix(resp, MAX_ERROR_TEXT).await {
        Ok((bytes, more)) => {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            let mut line: String = text.chars().take(300).collect();
            if more || line.len() < text.len() {
                line.push('…');
            }
            line
        }
        Err(e) => format!("(its answer could not be read: {e})"),
    }
}

/// Asks the Prometheus at `prometheus` for the instant query `query`: the value the
/// check compares, or why there is none, as words that follow the query in a message
/// ("returned NaN", "returned no sample", "Prometheus answered error: …").
async fn query_prometheus(prometheus: &str, query: &str) -> Result<f64, String> {
    let url = format!("{}/api/v1/query", prometheus.trim_end_matches('/'));
    let with_query = reqwest::Url::parse_with_params(&url, [("query", query)])
        .map_err(|e| format!("cannot be asked at {url}: {e}"))?;
    let resp = http()
        .get(with_query)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("was not answered: {url}: {e}"))?;
    let code = resp.status();
    let body = super::webhook::read_body(resp, MAX_PROMETHEUS_ANSWER)
        .await
        .map_err(|e| format!("could not be read from {url}: {}", crate::report(&e)))?;
    // Prometheus answers a bad query with 400 or 422 and an error in the usual shape.
    match serde_json::from_slice::<Value>(&body) {
        Ok(answer) => prometheus_value(&answer),
        Err(_) if !code.is_success() => Err(format!("was answered {code} by {url}")),
        Err(e) => Err(format!(
            "was answered by {url} with no Prometheus answer: {e}"
        )),
    }
}

/// The largest sample of a Prometheus instant-query answer (vector or scalar), or why
/// the answer gives no number a check can compare: an error status, no sample, or a
/// sample that is not a finite number (`NaN` for 0/0, `+Inf`), which compares false
/// with every bound and so must never pass one.
fn prometheus_value(answer: &Value) -> Result<f64, String> {
    let status = answer.get("status").and_then(Value::as_str).unwrap_or("");
    if status != "success" {
        let text = |k: &str| answer.get(k).and_then(Value::as_str).unwrap_or("");
        let detail = [text("errorType"), text("error")]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        let status = if status.is_empty() {
            "no status"
        } else {
            status
        };
        return Err(format!("Prometheus answered {status}: {detail}")
            .trim_end_matches([':', ' '])
            .to_string());
    }
    let not_an_answer = || "was answered with no instant-query result".to_string();
    let data = answer.get("data").ok_or_else(not_an_answer)?;
    let num = |v: Option<&Value>| -> Result<f64, String> {
        let text = v
            .and_then(|v| v.get(1))
            .and_then(Value::as_str)
            .ok_or_else(not_an_answer)?;
        let n: f64 = text
            .parse()
            .map_err(|_| format!("returned {text:?} (not a number)"))?;
        if n.is_finite() {
            Ok(n)
        } else {
            Err(format!("returned {text}"))
        }
    };
    let kind = data.get("resultType").and_then(Value::as_str);
    match kind {
        Some("scalar") => num(data.get("result")),
        Some("vector") => {
            let samples = data
                .get("result")
                .and_then(Value::as_array)
                .ok_or_else(not_an_answer)?;
            let mut largest: Option<f64> = None;
            for s in samples {
                let n = num(s.get("value")).map_err(|why| match s.get("metric") {
                    Some(m) if m.as_object().is_some_and(|m| !m.is_empty()) => {
                        format!("{why} for {m}")
                    }
                    _ => why,
                })?;
                largest = Some(largest.map_or(n, |l| l.max(n)));
            }
            largest.ok_or_else(|| "returned no sample".to_string())
        }
        Some(other) => Err(format!("returned a {other}, not a vector or a scalar")),
        None => Err(not_an_answer()),
    }
}

/// The partition that lets `step` (0-based) of `steps` update its share of the
/// workload whose live object is `live` (`None`: not installed yet): (pods on the new
/// version, pods in all, partition). Counts come from the member and are checked
/// ([`shoal_fleet::count`]): a negative or absurd count is an error (a transient read
/// error), never a partition of 0 that would update every pod at once.
fn partition_for(
    live: Option<&Value>,
    w: &Workload,
    batches: &[IntOrPercent],
    step: usize,
    steps: usize,
) -> Result<(i64, i64, i64), shoal_fleet::Error> {
    let desired = match live {
        None => 0,
        Some(l) => {
            let at = if w.kind == "DaemonSet" {
                "/status/desiredNumberScheduled"
            } else {
                "/spec/replicas"
            };
            shoal_fleet::count(l, at, 0, &w.describe())?
        }
    };
    // A fresh install has no old pods to hold back.
    let target = if live.is_none() || steps == 1 {
        desired
    } else {
        // `desired` is in 0..=MAX_COUNT (an int32): it fits a u32.
        let d = u32::try_from(desired).unwrap_or(0);
        i64::from(step_target(d, batches, step))
    };
    let partition = if step + 1 >= steps {
        0
    } else {
        desired.saturating_sub(target).max(0)
    };
    Ok((target, desired, partition))
}

/// Everything a step reads from the control plane.
struct Scope {
    release: Release,
    member: Member,
    facts: ClusterFacts,
    /// The release's components, in dependsOn order.
    components: Vec<Component>,
    groups: Vec<ClusterGroup>,
    configs: Vec<ClusterConfig>,
}

fn failed(msg: impl Into<String>) -> ExecError {
    ExecError::Failed(msg.into())
}

/// The release executors' shared state: the fleet driver and the control plane caches.
#[derive(Debug)]
struct Shared {
    fleet: Arc<Fleet>,
    scopes: Scopes,
}

async fn load(shared: &Shared, ctx: &ExecContext) -> Result<Scope, ExecError> {
    let client = &ctx.client;
    let release = shared
        .scopes
        .release(client, ctx.string_param("release")?)
        .await?;
    let cluster = shared
        .scopes
        .cluster(client, ctx.string_param("cluster")?)
        .await?;
    shared.fleet.read_credentials_from(client);
    let member = bounded("reach the member", shared.fleet.member(&cluster)).await?;
    let mut components = Vec::new();
    for c in &release.spec.components {
        components.push(shared.scopes.component(client, &c.name).await?);
    }
    let order = render::order(&components).map_err(|e| failed(e.to_string()))?;
    components.sort_by_key(|c| {
        order
            .iter()
            .position(|n| Some(n) == c.metadata.name.as_ref())
    });
    let (groups, configs) = shared.scopes.values(client).await?;
    Ok(Scope {
        facts: ClusterFacts::of(&cluster),
        release,
        member,
        components,
        groups,
        configs,
    })
}

fn comp_name(c: &Component) -> &str {
    c.metadata.name.as_deref().unwrap_or("")
}

impl Scope {
    fn target_version<'a>(&'a self, component: &'a Component) -> &'a str {
        self.release
            .spec
            .components
            .iter()
            .find(|c| c.name == comp_name(component))
            .map_or(component.spec.version.as_str(), |c| c.version.as_str())
    }

    fn component(&self, name: &str) -> Result<&Component, ExecError> {
        self.components
            .iter()
            .find(|c| comp_name(c) == name)
            .ok_or_else(|| failed(format!("component {name:?} is not in the release")))
    }

    fn render(&self, component: &Component, version: &str) -> Result<Vec<Value>, ExecError> {
        render::render(
            component,
            &self.facts,
            &self.groups,
            &self.configs,
            Some(version),
        )
        .map(|r| r.objects)
        .map_err(|e| {
            failed(format!(
                "failed to render Component {:?} at {version} for {}: {e}",
                comp_name(component),
                self.member.name
            ))
        })
    }
}

/// The workload whose rollout a component's health is read from.
#[derive(Clone, Debug)]
struct Workload {
    api_version: String,
    kind: String,
    namespace: String,
    name: String,
    /// Share of pods that must be available (the check's `minReadyPercent`).
    min_ready_percent: i64,
}

impl Workload {
    fn of(component: &Component, objects: &[Value]) -> Option<(usize, Workload)> {
        let check = component
            .spec
            .checks
            .iter()
            .find_map(|c| c.workload.as_ref());
        let s = |o: &Value, p: &str| {
            o.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        objects.iter().enumerate().find_map(|(i, o)| {
            let kind = s(o, "/kind");
            let ns = Some(s(o, "/metadata/namespace"))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into());
            let name = s(o, "/metadata/name");
            let matches = match check {
                Some(w) => {
                    w.kind == kind
                        && w.name == name
                        && w.namespace.as_deref().unwrap_or("default") == ns
                }
                None => CHECKABLE_KINDS.contains(&kind.as_str()),
            };
            matches.then(|| {
                (
                    i,
                    Workload {
                        api_version: s(o, "/apiVersion"),
                        kind,
                        namespace: ns,
                        name,
                        min_ready_percent: check
                            .and_then(|w| w.min_ready_percent)
                            .map_or(100, i64::from),
                    },
                )
            })
        })
    }

    /// Whether the workload's own controls can hold pods back (a partition).
    fn has_partition(&self) -> bool {
        let group = self.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        self.kind == "StatefulSet" || (group == KRUISE_GROUP && self.kind == "DaemonSet")
    }

    fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The tag of the first container image of `object`'s pod template that comes from
/// `image` ("" when none does).
fn live_version(object: &Value, image: &str) -> String {
    object
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("image").and_then(Value::as_str))
        .find_map(|i| i.strip_prefix(image).and_then(|t| t.strip_prefix(':')))
        .unwrap_or("")
        .to_string()
}

/// Whether a workload passes its check: the latest spec observed, every pod meant to be
/// on the new template there, enough pods available, none crash-looping.
fn verdict(h: &WorkloadHealth, w: &Workload) -> Result<bool, String> {
    if h.crash_looping > 0 {
        return Err(format!(
            "{} pods crash-looping ({})",
            h.crash_looping,
            h.crash_looping_pods.join(", ")
        ));
    }
    Ok(h.observed && h.updated >= h.desired && h.available * 100 >= h.total * w.min_ready_percent)
}

/// The workload's health read now (not from a watch): the observation a step timeout
/// is judged on.
async fn health(fleet: &Fleet, member: &Member, w: &Workload) -> Result<WorkloadHealth, ExecError> {
    bounded(
        "read the workload's health",
        shoal_fleet::health(
            fleet,
            member,
            &w.api_version,
            &w.kind,
            &w.namespace,
            &w.name,
        ),
    )
    .await
}

/// Runs one request (or a short exchange) with a member or the control plane, bounded in
/// real time: no answer within [`REQUEST_TIMEOUT`] is a transient failure, whatever the
/// shared clock says.
async fn bounded<T, E: Into<ExecError>>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ExecError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ExecError::Transient(format!(
            "failed to {what}: no answer within {REQUEST_TIMEOUT:?}"
        ))),
    }
}

/// How long a step may take to converge after its change is sent, on the shared clock:
/// the `timeout` param (the strategy's `stepTimeout`, plus the bake for a step). The
/// deadline is counted from this run's apply, so time spent riding out transient
/// failures (in real time, which a fast virtual clock turns into hours) is never taken
/// from the world's time to converge.
fn step_limit(ctx: &ExecContext) -> Result<SignedDuration, ExecError> {
    let text = ctx.optional_param("timeout").unwrap_or(DEFAULT_TIMEOUT);
    duration::parse(text).map_err(|e| ExecError::Param {
        name: "timeout".into(),
        problem: format!("{text:?} is not a duration: {e}"),
    })
}

/// A step's timeout as Kubernetes' `progressDeadlineSeconds` means it: the workload
/// made no progress (no more pods updated or available) for `limit` of the world's
/// time. A rollout that is moving is never cut off because the machine running the
/// simulated world fell behind its clock; one that is stuck fails once `limit` passes
/// without progress, and never before [`MIN_REAL_STALL`] of real time without it.
#[derive(Debug)]
struct Stall {
    limit: SignedDuration,
    deadline: Timestamp,
    real_floor: std::time::Instant,
    last: Option<(i64, i64)>,
}

impl Stall {
    fn start(ctx: &ExecContext, limit: SignedDuration) -> Self {
        Stall {
            limit,
            deadline: ctx
                .clock
                .now()
                .saturating_add(limit)
                .unwrap_or(Timestamp::MAX),
            real_floor: std::time::Instant::now() + MIN_REAL_STALL,
            last: None,
        }
    }

    /// Notes a reading; progress (more pods updated or available than before) moves
    /// the deadline.
    fn saw(&mut self, ctx: &ExecContext, h: &WorkloadHealth) {
        let now = (h.updated, h.available);
        let progressed = self.last.is_some_and(|(u, a)| now.0 > u || now.1 > a);
        if self.last.is_none() || progressed {
            if progressed {
                *self = Stall::start(ctx, self.limit);
            }
            self.last = Some(now);
        }
    }

    /// Whether the workload has made no progress for the limit, on both clocks.
    fn expired(&self, ctx: &ExecContext) -> bool {
        ctx.clock.now() >= self.deadline && std::time::Instant::now() >= self.real_floor
    }
}

/// The latest watched reading of the workload, once it reflects `generation` (the one
/// the step's apply left); `Ok(None)` while there is none yet.
///
/// # Errors
/// [`ExecError::Transient`] when the member has not answered the watches for
/// [`MEMBER_SILENCE`].
fn observed(
    follow: &Follow,
    generation: Option<i64>,
    member: &Member,
) -> Result<Option<WorkloadHealth>, ExecError> {
    match follow.reading() {
        Reading::Observed {
            health,
            generation: g,
        } if generation.is_none_or(|want| g >= want) => Ok(Some(health)),
        Reading::Failing { for_, error } if for_ >= MEMBER_SILENCE => {
            Err(ExecError::Transient(format!(
                "following {} on {}: no answer from the member for {for_:.0?}: {error}",
                follow.target(),
                member.name
            )))
        }
        _ => Ok(None),
    }
}

/// Waits for the next thing that can change a verdict: a watch event, the shared clock
/// reaching `until`, a real-time tick (to notice a member gone silent), or the end of
/// the attempt.
async fn next(ctx: &ExecContext, follow: &mut Follow, until: Timestamp) -> Result<(), ExecError> {
    tokio::select! {
        () = follow.changed() => Ok(()),
        () = ctx.clock.sleep_until(until) => Ok(()),
        () = tokio::time::sleep(SILENCE_CHECK) => Ok(()),
        () = ctx.cancel.cancelled() => Err(failed("cancelled")),
    }
}

/// Waits until `w` passes its check, then watches it for `bake`; fails as soon as a pod
/// crash-loops or, during the bake, availability drops under the threshold. Everything
/// is read from `follow`'s watches, which reflect `generation` (the applied spec) before
/// anything is judged. A workload that made no progress for `limit` ([`Stall`]) fails
/// the step only on a fresh read made after that: a control plane or member that was
/// merely slow to report is never taken for a workload that did not converge.
#[allow(clippy::too_many_arguments)]
async fn settle(
    fleet: &Fleet,
    ctx: &ExecContext,
    member: &Member,
    w: &Workload,
    follow: &mut Follow,
    generation: Option<i64>,
    bake: SignedDuration,
    limit: SignedDuration,
    what: &str,
) -> Result<WorkloadHealth, ExecError> {
    let fail = |why: String| {
        failed(format!(
            "check {} failed on {} {what}: {why}",
            w.describe(),
            member.name
        ))
    };
    ctx.progress(
        "settling",
        &format!("{what}: waiting for {} to be healthy", w.describe()),
        None,
    )
    .await;
    let mut stall = Stall::start(ctx, limit);
    let mut h = loop {
        if let Some(h) = observed(follow, generation, member)? {
            if verdict(&h, w).map_err(&fail)? {
                break h;
            }
            stall.saw(ctx, &h);
        }
        if stall.expired(ctx) {
            let h = health(fleet, member, w).await?;
            if verdict(&h, w).map_err(&fail)? {
                break h;
            }
            stall.saw(ctx, &h);
            if stall.expired(ctx) {
                return Err(fail(format!(
                    "no progress for the step's timeout ({}): {}",
                    ctx.optional_param("timeout").unwrap_or(DEFAULT_TIMEOUT),
                    h.message
                )));
            }
        }
        next(ctx, follow, stall.deadline).await?;
    };
    let until = ctx.clock.now() + bake;
    if !bake.is_zero() {
        ctx.progress(
            "baking",
            &format!(
                "{what}: healthy ({} of {} pods available); baking {}",
                h.available,
                h.total,
                duration::format(bake)
            ),
            Some(until),
        )
        .await;
    }
    while ctx.clock.now() < until {
        next(ctx, follow, until).await?;
        if let Some(now) = observed(follow, generation, member)? {
            h = now;
            if !verdict(&h, w).map_err(&fail)? {
                return Err(fail(format!(
                    "during the bake: {} of {} pods available, {} of {} updated (needs {}% available)",
                    h.available, h.total, h.updated, h.desired, w.min_ready_percent
                )));
            }
        }
    }
    Ok(h)
}

fn set_partition(object: &mut Value, partition: i64) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let strategy = spec
        .entry("updateStrategy")
        .or_insert_with(|| json!({"type": "RollingUpdate"}));
    if !strategy.is_object() {
        *strategy = json!({"type": "RollingUpdate"});
    }
    let ru = strategy
        .as_object_mut()
        .expect("made an object above")
        .entry("rollingUpdate")
        .or_insert_with(|| json!({}));
    if !ru.is_object() {
        *ru = json!({});
    }
    ru["partition"] = json!(partition);
}

fn result(name: &str, value: impl ToString) -> RunResult {
    RunResult {
        name: name.into(),
        value: ParamValue::String(value.to_string()),
    }
}

fn number_param(ctx: &ExecContext, name: &str) -> Result<usize, ExecError> {
    let text = ctx.string_param(name)?;
    text.parse().map_err(|_| ExecError::Param {
        name: name.into(),
        problem: format!("{text:?} is not a number"),
    })
}

fn bake_of(release: &Release) -> Result<SignedDuration, ExecError> {
    release
        .spec
        .strategy
        .bake_duration()
        .map_err(|e| failed(format!("spec.strategy.bake: {e}")))
}

/// Applies `objects`, refusing (before anything is sent) any that would change a
/// dangerous field: every object is read and its change computed first, then each is
/// sent (one read and at most one write per object). With `dry_run` the server checks
/// the changes and writes nothing. Returns each object's outcome, in order.
async fn apply_all(
    fleet: &Fleet,
    member: &Member,
    component: &Component,
    objects: &[Value],
    known: Option<Known>,
    dry_run: bool,
) -> Result<Vec<Applied>, ExecError> {
    let prepared = prepare_all(fleet, member, component, objects, known).await?;
    let mut applied = Vec::with_capacity(prepared.len());
    for p in prepared {
        applied.push(bounded("apply", p.send(dry_run)).await?);
    }
    Ok(applied)
}

/// One of the objects of [`prepare_all`] whose live copy the caller has already: its
/// index and the copy (`None`: it does not exist).
type Known = (usize, Option<Value>);

/// Reads every one of `objects` and computes its change (one GET each, none for the
/// `known` one), refusing the lot, before anything is sent, if any would change a
/// dangerous field.
async fn prepare_all(
    fleet: &Fleet,
    member: &Member,
    component: &Component,
    objects: &[Value],
    mut known: Option<Known>,
) -> Result<Vec<shoal_fleet::Prepared>, ExecError> {
    let mut prepared = Vec::with_capacity(objects.len());
    for (i, o) in objects.iter().enumerate() {
        let dangerous = component.dangerous_fields_for(o);
        let p = match known.take_if(|(k, _)| *k == i) {
            Some((_, live)) => {
                bounded(
                    "look up the object's kind",
                    fleet.prepare_from(member, o, &dangerous, live),
                )
                .await?
            }
            None => bounded("read the live object", fleet.prepare(member, o, &dangerous)).await?,
        };
        if let Some(d) = p.dropped().first() {
            return Err(failed(format!(
                "refused: the release would change {} of {} on {}, a dangerous field of \
                 Component {:?} (from {} to {}); change it by hand, or release a new component",
                d.path,
                p.target,
                member.name,
                comp_name(component),
                show(d.live.as_ref()),
                show(d.target.as_ref()),
            )));
        }
        prepared.push(p);
    }
    Ok(prepared)
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "nothing".into(), |v| v.to_string())
}

/// `release-precheck`.
#[derive(Debug)]
pub struct Precheck(Arc<Shared>);

#[async_trait::async_trait]
impl Executor for Precheck {
    fn name(&self) -> &str {
        "release-precheck"
    }
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, ctx: ExecContext) -> Result<Outcome, ExecError> {
        let fleet = &self.0.fleet;
        let scope = load(&self.0, &ctx).await?;
        let mut previous = BTreeMap::new();
        for c in &scope.components {
            let objects = scope.render(c, scope.target_version(c))?;
            // The workload and its pods are read by the watches its steps join a moment
            // later (see `shoal_fleet::follow`), not by a GET and a list of their own.
            let mut follow = None;
            let mut known = None;
            if let Some((i, _)) = Workload::of(c, &objects) {
                let mut f = bounded(
                    "start following the workload",
                    Follow::start(fleet, &scope.member, &objects[i]),
                )
                .await?;
                known = Some((i, listed(&ctx, &mut f, &scope.member).await?));
                follow = Some(f);
            }
            let live = prepare_all(fleet, &scope.member, c, &objects, known).await?;
            let mut was = String::new();
            if let Some((i, w)) = Workload::of(c, &objects)
                && let Some(object) = live[i].live.clone()
                && let Some(follow) = &follow
            {
                was = live_version(&object, &c.spec.image);
                let h = match follow.reading() {
                    Reading::Observed { health, .. } => health,
                    other => {
                        return Err(ExecError::Transient(format!(
                            "reading {} on {}: {other:?}",
                            follow.target(),
                            scope.member.name
                        )));
                    }
                };
                if !verdict(&h, &w).map_err(|why| {
                    failed(format!(
                        "precheck: {} on {} is unhealthy before the change: {why}",
                        w.describe(),
                        scope.member.name
                    ))
                })? {
                    return Err(failed(format!(
                        "precheck: {} on {} is not healthy before the change: {}",
                        w.describe(),
                        scope.member.name,
                        h.message
                    )));
                }
            }
            // The server checks the change (admission, validation) without writing it.
            for p in live {
                bounded("check the change (dry run)", p.send(true)).await?;
            }
            previous.insert(comp_name(c).to_string(), was);
        }
        let mut checked = Vec::new();
        if let Some(first) = scope.components.first() {
            checked = release_checks(
                &ctx,
                &scope,
                &CheckPoint {
                    component: comp_name(first),
                    version: scope.target_version(first),
                    step: 0,
                    steps: scope.release.spec.strategy.steps(),
                },
            )
            .await?;
        }
        let summary: Vec<String> = previous
            .iter()
            .map(|(c, v)| format!("{c} {}", if v.is_empty() { "not installed" } else { v }))
            .collect();
        let mut results = vec![result(
            "previous",
            serde_json::to_string(&previous).unwrap_or_default(),
        )];
        results.extend(checked);
        Ok(Outcome {
            results,
            message: Some(format!(
                "{}: ready for the change ({})",
                scope.member.name,
                summary.join(", ")
            )),
        })
    }
}

/// Waits for `follow`'s first list of the workload: the live object (`None`: it does
/// not exist), read by the watch instead of a GET of its own.
async fn listed(
    ctx: &ExecContext,
    follow: &mut Follow,
    member: &Member,
) -> Result<Option<Value>, ExecError> {
    let began = std::time::Instant::now();
    loop {
        match follow.reading() {
            Reading::Observed { .. } => return Ok(follow.object()),
            Reading::Absent => return Ok(None),
            Reading::Failing { for_, error } if for_ >= MEMBER_SILENCE => {
                return Err(ExecError::Transient(format!(
                    "listing {} on {}: no answer from the member for {for_:.0?}: {error}",
                    follow.target(),
                    member.name
                )));
            }
            _ if began.elapsed() >= REQUEST_TIMEOUT => {
                return Err(ExecError::Transient(format!(
                    "listing {} on {}: no answer within {REQUEST_TIMEOUT:?}",
                    follow.target(),
                    member.name
                )));
            }
            _ => {}
        }
        next(ctx, follow, Timestamp::MAX).await?;
    }
}

/// `release-step`: params `release`, `cluster`, `component`, `step` (0-based), `steps`,
/// `timeout`.
#[derive(Debug)]
pub struct Step(Arc<Shared>);

#[async_trait::async_trait]
impl Executor for Step {
    fn name(&self) -> &str {
        "release-step"
    }
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, ctx: ExecContext) -> Result<Outcome, ExecError> {
        let fleet = &self.0.fleet;
        let scope = load(&self.0, &ctx).await?;
        let component = scope.component(ctx.string_param("component")?)?;
        let step = number_param(&ctx, "step")?;
        let steps = number_param(&ctx, "steps")?.max(1);
        let limit = step_limit(&ctx)?;
        let version = scope.target_version(component);
        let mut objects = scope.render(component, version)?;
        let what = format!("in step {}/{steps} of {}", step + 1, comp_name(component));
        let checkpoint = CheckPoint {
            component: comp_name(component),
            version,
            step: step + 1,
            steps,
        };
        let Some((i, w)) = Workload::of(component, &objects) else {
            // Nothing to pace or watch: everything goes in the first step.
            if step == 0 {
                ctx.progress("applying", &format!("{what}: {version}"), None)
                    .await;
                apply_all(fleet, &scope.member, component, &objects, None, false).await?;
            }
            let checked = release_checks(&ctx, &scope, &checkpoint).await?;
            return Ok(Outcome {
                results: checked,
                message: Some(format!("{what}: applied (no workload to check)")),
            });
        };
        let mut follow = bounded(
            "start following the workload",
            Follow::start(fleet, &scope.member, &objects[i]),
        )
        .await?;
        let batches: Vec<IntOrPercent> = scope
            .release
            .spec
            .strategy
            .batches
            .iter()
            .filter_map(|b| IntOrPercent::from_k8s(b).ok())
            .collect();
        if !w.has_partition() && step > 0 {
            // Changed in the first step already; this one only checks.
            let plan = "checked only (no partition)";
            let h = settle(
                fleet,
                &ctx,
                &scope.member,
                &w,
                &mut follow,
                None,
                SignedDuration::ZERO,
                limit,
                &what,
            )
            .await?;
            let mut results = vec![result("updated", h.updated), result("total", h.total)];
            results.extend(release_checks(&ctx, &scope, &checkpoint).await?);
            return Ok(Outcome {
                results,
                message: Some(format!("{what}: {plan}, healthy")),
            });
        }
        // The watch's first list is as fresh as a GET: the apply below diffs against it.
        let live = listed(&ctx, &mut follow, &scope.member).await?;
        let mut plan = "all pods".to_string();
        if w.has_partition() {
            let (target, desired, partition) =
                partition_for(live.as_ref(), &w, &batches, step, steps)?;
            set_partition(&mut objects[i], partition);
            plan = format!("{target}/{desired} pods");
        }
        ctx.progress("applying", &format!("{what}: {plan} on {version}"), None)
            .await;
        let applied = apply_all(
            fleet,
            &scope.member,
            component,
            &objects,
            Some((i, live)),
            false,
        )
        .await?;
        let bake = bake_of(&scope.release)?;
        let h = settle(
            fleet,
            &ctx,
            &scope.member,
            &w,
            &mut follow,
            applied[i].generation,
            bake,
            limit,
            &what,
        )
        .await?;
        let mut results = vec![result("updated", h.updated), result("total", h.total)];
        results.extend(release_checks(&ctx, &scope, &checkpoint).await?);
        Ok(Outcome {
            results,
            message: Some(format!(
                "{what}: {plan} on {version}, healthy{}",
                if bake.is_zero() {
                    String::new()
                } else {
                    format!(" through a bake of {}", duration::format(bake))
                }
            )),
        })
    }
}

/// `release-rollback`: params `release`, `cluster`, `previous` (the precheck's result,
/// or `untouched` when the release never changed the cluster), `timeout`.
#[derive(Debug)]
pub struct Rollback(Arc<Shared>);

#[async_trait::async_trait]
impl Executor for Rollback {
    fn name(&self) -> &str {
        "release-rollback"
    }
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, ctx: ExecContext) -> Result<Outcome, ExecError> {
        let fleet = &self.0.fleet;
        let raw = ctx.optional_param("previous").unwrap_or("untouched");
        if raw == "untouched" {
            return Ok(Outcome {
                results: vec![],
                message: Some("nothing to roll back: the release changed nothing here".into()),
            });
        }
        let previous: BTreeMap<String, String> =
            serde_json::from_str(raw).map_err(|e| ExecError::Param {
                name: "previous".into(),
                problem: format!("is not a map of component to version: {e}"),
            })?;
        let limit = step_limit(&ctx)?;
        let scope = load(&self.0, &ctx).await?;
        let mut done = Vec::new();
        for c in scope.components.iter().rev() {
            let Some(was) = previous.get(comp_name(c)) else {
                continue;
            };
            if was.is_empty() {
                // Not installed before: remove what the release created.
                let objects = scope.render(c, scope.target_version(c))?;
                for o in objects.iter().rev() {
                    let (api, target) =
                        bounded("find the kind", fleet.api_for(&scope.member, o)).await?;
                    match bounded("delete", async {
                        api.delete(&target.name, &DeleteParams::default())
                            .await
                            .map_err(ExecError::Kube)
                    })
                    .await
                    {
                        Ok(_) => {}
                        Err(ExecError::Kube(kube::Error::Api(e))) if e.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
                done.push(format!("{} removed", comp_name(c)));
                continue;
            }
            let mut objects = scope.render(c, was)?;
            let workload = Workload::of(c, &objects);
            if let Some((i, w)) = &workload
                && w.has_partition()
            {
                set_partition(&mut objects[*i], 0);
            }
            let mut follow = match &workload {
                Some((i, _)) => Some(
                    bounded(
                        "start following the workload",
                        Follow::start(fleet, &scope.member, &objects[*i]),
                    )
                    .await?,
                ),
                None => None,
            };
            let applied = apply_all(fleet, &scope.member, c, &objects, None, false).await?;
            if let (Some((i, w)), Some(follow)) = (&workload, &mut follow) {
                let mut stall = Stall::start(&ctx, limit);
                // Pods of the bad version may crash-loop until replaced: wait for ready,
                // not for the absence of crashes on the way.
                let back = |h: &WorkloadHealth| {
                    h.observed && h.updated >= h.desired && h.crash_looping == 0
                };
                loop {
                    if let Some(h) = observed(follow, applied[*i].generation, &scope.member)? {
                        if back(&h) {
                            break;
                        }
                        stall.saw(&ctx, &h);
                    }
                    if stall.expired(&ctx) {
                        let h = health(fleet, &scope.member, w).await?;
                        if back(&h) {
                            break;
                        }
                        stall.saw(&ctx, &h);
                        if stall.expired(&ctx) {
                            return Err(failed(format!(
                                "rollback of {} on {}: no progress for the step's timeout: {}",
                                w.describe(),
                                scope.member.name,
                                h.message
                            )));
                        }
                    }
                    next(&ctx, follow, stall.deadline).await?;
                }
            }
            done.push(format!("{} back on {was}", comp_name(c)));
        }
        Ok(Outcome {
            results: vec![],
            message: Some(format!("{}: {}", scope.member.name, done.join(", "))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_check_reads_the_largest_sample_of_a_prometheus_answer() {
        let vector = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"pod": "a"}, "value": [1.7e9, "0.02"]},
            {"metric": {"pod": "b"}, "value": [1.7e9, "0.07"]}]}});
        assert_eq!(prometheus_value(&vector), Ok(0.07));
        let scalar =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "3"]}});
        assert_eq!(prometheus_value(&scalar), Ok(3.0));
    }

    #[test]
    fn a_metric_check_fails_on_nan_infinity_no_sample_or_an_error_saying_which() {
        let vector = |samples: &[&str]| {
            let result: Vec<Value> = samples
                .iter()
                .enumerate()
                .map(|(i, v)| json!({"metric": {"pod": format!("p{i}")}, "value": [1.7e9, v]}))
                .collect();
            json!({"status": "success", "data": {"resultType": "vector", "result": result}})
        };
        let scalar = |v: &str| json!({"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, v]}});
        for (answer, why) in [
            // 0/0, an error ratio with no traffic: NaN compares false with every bound.
            (scalar("NaN"), "returned NaN"),
            (scalar("+Inf"), "returned +Inf"),
            (scalar("-Inf"), "returned -Inf"),
            // One NaN series among good ones is not skipped by the maximum.
            (
                vector(&["0.01", "NaN", "0.02"]),
                "returned NaN for {\"pod\":\"p1\"}",
            ),
            (
                vector(&["0.01", "lots"]),
                "returned \"lots\" (not a number) for {\"pod\":\"p1\"}",
            ),
            (vector(&[]), "returned no sample"),
            (
                json!({"status": "error", "errorType": "bad_data",
                       "error": "invalid parameter \"query\": 1:5: parse error"}),
                "Prometheus answered error: bad_data: invalid parameter \"query\": 1:5: parse error",
            ),
            (json!({"status": "error"}), "Prometheus answered error"),
            (json!({"data": {}}), "Prometheus answered no status"),
            (
                json!({"status": "success", "data": {"resultType": "matrix", "result": []}}),
                "returned a matrix, not a vector or a scalar",
            ),
            (
                json!({"status": "success", "data": {"resultType": "vector"}}),
                "was answered with no instant-query result",
            ),
        ] {
            assert_eq!(prometheus_value(&answer), Err(why.to_string()), "{answer}");
        }
    }

    /// A local Prometheus answering every query with `status` and `answer`.
    async fn mk_prometheus(status: u16, answer: Value) -> String {
        let app = axum::Router::new().fallback(move || async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                axum::Json(answer),
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn a_metric_check_reads_what_prometheus_answered_and_fails_on_nan_or_an_error() {
        let scalar = |v: &str| json!({"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, v]}});
        let url = mk_prometheus(200, scalar("0.5")).await;
        assert_eq!(query_prometheus(&url, "up").await, Ok(0.5));
        let url = mk_prometheus(200, scalar("NaN")).await;
        assert_eq!(
            query_prometheus(&url, "up").await,
            Err("returned NaN".into())
        );
        let bad = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
        let url = mk_prometheus(400, bad).await;
        assert_eq!(
            query_prometheus(&url, "up{").await,
            Err("Prometheus answered error: bad_data: parse error".into())
        );
    }

    #[tokio::test]
    async fn a_metric_check_does_not_read_an_endless_answer_whole() {
        use super::super::testing::{assert_hung_up_early, mk_endless_server};
        let (url, endless) = mk_endless_server(200).await;
        let why = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            query_prometheus(&url, "up"),
        )
        .await
        .expect("hung: reading the endless answer")
        .unwrap_err();
        assert!(why.contains("answer larger than 1048576 bytes"), "{why}");
        assert_hung_up_early(&endless).await;
    }

    #[tokio::test]
    async fn a_refusing_webhook_check_has_its_answer_read_only_in_part() {
        use super::super::testing::{assert_hung_up_early, mk_endless_server};
        let (url, endless) = mk_endless_server(503).await;
        let resp = http().post(&url).send().await.unwrap();
        let text = tokio::time::timeout(std::time::Duration::from_secs(30), error_text(resp))
            .await
            .expect("hung: reading the endless answer");
        assert_eq!(text, format!("{}…", "x".repeat(300)));
        assert_hung_up_early(&endless).await;
    }

    fn mk_workload(kind: &str, api_version: &str) -> Workload {
        Workload {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: "kube-system".into(),
            name: "agent".into(),
            min_ready_percent: 100,
        }
    }

    #[test]
    fn a_step_refuses_absurd_counts_from_the_member_instead_of_a_partition_that_updates_everything()
    {
        let ds = mk_workload("DaemonSet", "apps.kruise.io/v1alpha1");
        let sts = mk_workload("StatefulSet", "apps/v1");
        let half = [IntOrPercent::Percent(50), IntOrPercent::Percent(100)];
        for (w, live, field) in [
            (
                &ds,
                json!({"status": {"desiredNumberScheduled": -5}}),
                "status.desiredNumberScheduled",
            ),
            (
                &ds,
                json!({"status": {"desiredNumberScheduled": i64::MIN}}),
                "status.desiredNumberScheduled",
            ),
            (
                &ds,
                json!({"status": {"desiredNumberScheduled": i64::MAX}}),
                "status.desiredNumberScheduled",
            ),
            (&sts, json!({"spec": {"replicas": -1}}), "spec.replicas"),
            (
                &sts,
                json!({"spec": {"replicas": u64::MAX}}),
                "spec.replicas",
            ),
        ] {
            let e = partition_for(Some(&live), w, &half, 0, 2).unwrap_err();
            assert!(
                matches!(&e, shoal_fleet::Error::Impossible { field: f, .. } if f == field),
                "{live}: {e}"
            );
            assert!(e.to_string().contains(&w.describe()), "{e}");
        }
        // Sane counts: half the pods in step 1 of 2, all in the last; the largest count
        // the API allows does not overflow.
        let live = json!({"status": {"desiredNumberScheduled": 10}});
        assert_eq!(
            partition_for(Some(&live), &ds, &half, 0, 2).unwrap(),
            (5, 10, 5)
        );
        assert_eq!(
            partition_for(Some(&live), &ds, &half, 1, 2).unwrap(),
            (10, 10, 0)
        );
        let max = json!({"spec": {"replicas": shoal_fleet::MAX_COUNT}});
        let (target, desired, partition) = partition_for(Some(&max), &sts, &half, 0, 2).unwrap();
        assert_eq!(desired, shoal_fleet::MAX_COUNT);
        assert_eq!(target + partition, desired);
        assert_eq!(partition_for(None, &ds, &half, 0, 2).unwrap(), (0, 0, 0));
    }

    #[test]
    fn the_live_version_is_the_tag_of_the_components_image() {
        let o = json!({"spec": {"template": {"spec": {"containers": [
            {"image": "sidecar:1"},
            {"image": "reg.example.com:5000/infra/agent:v2"}
        ]}}}});
        assert_eq!(live_version(&o, "reg.example.com:5000/infra/agent"), "v2");
        assert_eq!(live_version(&o, "reg.example.com:5000/infra/other"), "");
    }

    #[test]
    fn a_partition_is_set_whatever_the_strategy_looked_like() {
        for spec in [
            json!({}),
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}}),
            json!({"updateStrategy": "bogus"}),
        ] {
            let mut o = json!({"spec": spec});
            set_partition(&mut o, 7);
            assert_eq!(
                o["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 7,
                "{o}"
            );
        }
        let mut o = json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}});
        set_partition(&mut o, 0);
        assert_eq!(
            o["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            2
        );
    }

    #[test]
    fn the_check_fails_on_crash_loops_and_counts_availability_against_every_pod() {
        let w = Workload {
            api_version: "apps.kruise.io/v1alpha1".into(),
            kind: "DaemonSet".into(),
            namespace: "kube-system".into(),
            name: "agent".into(),
            min_ready_percent: 95,
        };
        assert!(w.has_partition());
        let h = WorkloadHealth {
            observed: true,
            desired: 10,
            total: 100,
            updated: 10,
            available: 95,
            ..WorkloadHealth::default()
        };
        assert_eq!(verdict(&h, &w), Ok(true));
        let low = WorkloadHealth {
            available: 94,
            ..h.clone()
        };
        assert_eq!(verdict(&low, &w), Ok(false));
        let crashing = WorkloadHealth {
            crash_looping: 1,
            crash_looping_pods: vec!["agent-x".into()],
            ..h
        };
        assert!(verdict(&crashing, &w).unwrap_err().contains("agent-x"));
    }
}
