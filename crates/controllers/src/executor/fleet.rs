//! Executors that act on member clusters through the fleet driver (`shoal-fleet`): the
//! same calls for simulated and real clusters.
//!
//! | executor | params | does |
//! |---|---|---|
//! | `apply-manifests` | `cluster`, `manifests` (YAML/JSON documents, a [minijinja] template with `params` in scope), `dangerousFields` (comma-separated paths) | three-way apply of every document; results `applied`, `created`, `patched` |
//! | `wait-workload-ready` | `cluster`, `kind`, `name`, `namespace` (`default`), `apiVersion` (`apps/v1`), `interval` (`5s`), `failOnCrashLoop` (`true`) | waits until the rollout is complete; fails at once on crash-looping pods |
//! | `wait-nodes-ready` | `cluster`, `selector`, `count`, `interval` (`5s`) | waits until `count` nodes matching the label selector are Ready |
//! | `patch-objects` | `cluster`, `kind`, `apiVersion` (`v1`), `namespace`, `selector` or `name`, `patch` (JSON merge patch, a template) | patches every matching object; result `patched` |
//! | `delete-objects` | `cluster`, `kind`, `apiVersion` (`v1`), `namespace`, `selector` or `name` | deletes every matching object; result `deleted` |
//!
//! Every one is idempotent (applying, patching with a merge patch, deleting and waiting
//! can all be repeated), so an attempt interrupted by a restart is simply run again. The
//! cluster is a `Cluster` object in the control plane; its `spec.endpoint` says where the
//! member's API is.

use std::sync::Arc;

use jiff::SignedDuration;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::Value;
use shoal_core::kinds::Cluster;
use shoal_core::taskflow::{ParamValue, RunResult, duration};
use shoal_fleet::{Action, Fleet, Member};

use super::{ExecContext, ExecError, Executor, Outcome};

/// Registers the fleet executors, sharing one driver (its client and discovery caches).
pub fn register(r: &mut super::Registry, fleet: Arc<Fleet>) {
    r.register(ApplyManifests(fleet.clone()));
    r.register(WaitWorkloadReady(fleet.clone()));
    r.register(WaitNodesReady(fleet.clone()));
    r.register(PatchObjects(fleet.clone()));
    r.register(DeleteObjects(fleet.clone()));
    super::release::register(r, fleet);
}

/// The member cluster named by the `cluster` param.
async fn member(fleet: &Fleet, ctx: &ExecContext) -> Result<Member, ExecError> {
    let name = ctx.string_param("cluster")?;
    let clusters: Api<Cluster> = Api::all(ctx.client.clone());
    let cluster = clusters
        .get_opt(name)
        .await
        .map_err(ExecError::Kube)?
        .ok_or_else(|| ExecError::Param {
            name: "cluster".into(),
            problem: format!("names no Cluster: {name:?} does not exist"),
        })?;
    fleet.read_credentials_from(&ctx.client);
    fleet.member(&cluster).await.map_err(ExecError::from)
}

fn result(name: &str, value: impl ToString) -> RunResult {
    RunResult {
        name: name.into(),
        value: ParamValue::String(value.to_string()),
    }
}

fn interval(ctx: &ExecContext) -> Result<SignedDuration, ExecError> {
    let text = ctx.optional_param("interval").unwrap_or("5s");
    duration::parse(text).map_err(|e| ExecError::Param {
        name: "interval".into(),
        problem: format!("{text:?} is not a duration: {e}"),
    })
}

/// Sleeps one polling interval on the shared clock, or ends with the attempt.
async fn pause(ctx: &ExecContext, every: SignedDuration) -> Result<(), ExecError> {
    tokio::select! {
        () = ctx.clock.sleep(every) => Ok(()),
        () = ctx.cancel.cancelled() => Err(ExecError::Failed("cancelled".into())),
    }
}

/// `apply-manifests`.
#[derive(Debug)]
pub struct ApplyManifests(Arc<Fleet>);

#[async_trait::async_trait]
impl Executor for ApplyManifests {
    fn name(&self) -> &str {
        "apply-manifests"
    }
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, ctx: ExecContext) -> Result<Outcome, ExecError> {
        let member = member(&self.0, &ctx).await?;
        let template = ctx.string_param("manifests")?;
        let text = super::webhook::render_template(&ctx, "manifests", template)?;
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| ExecError::Param {
                name: "manifests".into(),
                problem: format!("is not YAML/JSON documents: {e}"),
            })?;
        let dangerous: Vec<String> = ctx
            .optional_param("dangerousFields")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let (mut created, mut patched, mut dropped) = (0, 0, Vec::new());
        let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
        for doc in &docs {
            let applied = self
                .0
                .apply(&member, doc, &dangerous, false)
                .await
                .map_err(ExecError::from)?;
            match applied.action {
                Action::Created => created += 1,
                Action::Patched => patched += 1,
                Action::Unchanged => {}
            }
            for d in applied.dropped {
                dropped.push(format!("{} {}", applied.target, d.path));
            }
        }
        let mut message = format!(
            "applied {} objects to {} ({created} created, {patched} patched)",
            docs.len(),
            member.name
        );
        if !dropped.is_empty() {
            message.push_str(&format!(
                "; dangerous changes not sent: {}",
                dropped.join(", ")
            ));
        }
        Ok(Outcome {
            results: vec![
                result("applied", docs.len()),
                result("created", created),
                result("patched", patched),
            ],
            message: Some(message),
        })
    }
}

/// `wait-workload-ready`.
#[derive(Debug)]
pub struct WaitWorkloadReady(Arc<Fleet>);

#[async_trait::async_trait]
impl Executor for WaitWorkloadReady {
    fn name(&self) -> &str {
        "wait-workload-ready"
    }
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, ctx: ExecContext) -> Result<Outcome, ExecError> {
        let member = member(&self.0, &ctx).await?;
        let kind = ctx.string_param("kind")?;
        let name = ctx.string_param("name")?;
        let namespace = ctx.optional_param("namespace").unwrap_or("default");
        let api_version = ctx.optional_param("apiVersion").unwrap_or("apps/v1");
        let fail_on_crash = ctx.optional_param("failOnCrashLoop") != Some("false");
        let every = interval(&ctx)?;
        loop {
            let h = shoal_fleet::health(&self.0, &member, api_version, kind, namespace, name)
                .await
                .map_err(ExecError::from)?;
            if h.ready {
                return Ok(Outcome {
                    results: vec![
                        result("desired", h.desired),
                        result("available", h.available),
                    ],
                    message: Some(format!(
                        "{kind} {namespace}/{name} on {} is ready",
                        member.name
                    )),
                });
            }
            if fail_on_crash && h.crash_looping > 0 {
                return Err(ExecError::Failed(format!(
                    "{kind} {namespace}/{name} on {}: {}",
                    member.name, h.message
                )));
            }
            pause(&ctx, every).await?;
        }
    }
}

fn node_ready(n: &k8s_openapi::api::core::v1::Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `wait-nodes-ready`.
#[derive(Debug)]
pub struct WaitNodesReady(Arc<Fleet>);

#[async_trait::async_trait]
impl Executor for WaitNodesReady {
    fn name(&self) -> &str {
        "wait-nodes-ready"
    }
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, ctx: ExecContext) -> Result<Outcome, ExecError> {
        let member = member(&self.0, &ctx).await?;
        let selector = ctx.string_param("selector")?;
        let count_text = ctx.string_param("count")?;
        let count: usize = count_text.parse().map_err(|_| ExecError::Param {
            name: "count".into(),
            problem: format!("{count_text:?} is not a number"),
        })?;
        let every = interval(&ctx)?;
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(member.client.clone());
        loop {
            let list = nodes
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(ExecError::Kube)?;
            let ready = list.items.iter().filter(|n| node_ready(n)).count();
            if ready >= count {
                return Ok(Outcome {
                    results: vec![result("ready", ready)],
                    message: Some(format!(
                        "{ready} nodes matching {selector} are Ready on {}",
                        member.name
                    )),
                });
            }
            pause(&ctx, every).await?;
        }
    }
}

/// The objects a `patch-objects` / `delete-objects` task acts on.
async fn targets(
    fleet: &Fleet,
    member: &Member,
    ctx: &ExecContext,
) -> Result<(Api<kube::api::DynamicObject>, Vec<String>), ExecError> {
    let kind = ctx.string_param("kind")?;
    let api_version = ctx.optional_param("apiVersion").unwrap_or("v1");
    let mut probe = serde_json::json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"name": "probe"}});
    if let Some(ns) = ctx.optional_param("namespace") {
        probe["metadata"]["namespace"] = Value::String(ns.into());
    }
    let (api, _) = fleet
        .api_for(member, &probe)
        .await
        .map_err(ExecError::from)?;
    let names = match (ctx.optional_param("name"), ctx.optional_param("selector")) {
        (Some(name), _) => vec![name.to_string()],
        (None, Some(selector)) => api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(ExecError::Kube)?
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect(),
        (None, None) => {
            return Err(ExecError::Param {
                name: "selector".into(),
                problem: "or name is required".into(),
            });
        }
    };
    Ok((api, names))
}

/// `patch-objects`.
#[derive(Debug)]
pub struct PatchObjects(Arc<Fleet>);

#[async_trait::async_trait]
impl Executor for PatchObjects {
    fn name(&self) -> &str {
        "patch-objects"
    }
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, ctx: ExecContext) -> Result<Outcome, ExecError> {
        let member = member(&self.0, &ctx).await?;
        let text = super::webhook::render_template(&ctx, "patch", ctx.string_param("patch")?)?;
        let patch: Value = serde_json::from_str(&text).map_err(|e| ExecError::Param {
            name: "patch".into(),
            problem: format!("is not a JSON merge patch: {e}"),
        })?;
        let (api, names) = targets(&self.0, &member, &ctx).await?;
        for name in &names {
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(ExecError::Kube)?;
        }
        Ok(Outcome {
            results: vec![result("patched", names.len())],
            message: Some(format!(
                "patched {} objects on {}",
                names.len(),
                member.name
            )),
        })
    }
}

/// `delete-objects`.
#[derive(Debug)]
pub struct DeleteObjects(Arc<Fleet>);

#[async_trait::async_trait]
impl Executor for DeleteObjects {
    fn name(&self) -> &str {
        "delete-objects"
    }
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, ctx: ExecContext) -> Result<Outcome, ExecError> {
        let member = member(&self.0, &ctx).await?;
        let (api, names) = targets(&self.0, &member, &ctx).await?;
        let mut deleted = 0;
        for name in &names {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => deleted += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(ExecError::Kube(e)),
            }
        }
        Ok(Outcome {
            results: vec![result("deleted", deleted)],
            message: Some(format!("deleted {deleted} objects on {}", member.name)),
        })
    }
}
