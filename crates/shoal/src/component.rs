//! `shoal render` and `shoal diff`: a Component as one member cluster would get it.
//!
//! ```text
//!  control plane (kube-rs)                         member cluster (fleet driver)
//!   Component, Cluster, ClusterGroups,  ──render──▶ objects ──apply(dry run)──▶ create │
//!   ClusterConfigs                     (pure, core)            per object         patch │
//!                                                                                unchanged
//! ```
//!
//! Both verbs read what a release will read and call the same pure rendering
//! (`shoal_core::render`) and the same fleet driver (`shoal_fleet::Fleet::apply`, in dry-run
//! mode), so what `shoal diff` prints is what an apply would send. The key decision: `diff`
//! exits like `kubectl diff` — 0 when the cluster already holds the rendered objects, 1 when
//! they differ (something would be created or patched, or a dangerous-field difference
//! would be refused), 2 on errors — so scripts and CI can gate on it.

use std::io::Write;

use anyhow::{Context, Result, anyhow};
use kube::api::{Api, ListParams};
use serde_json::Value;
use shoal_core::diff::{Change, changes};
use shoal_core::kinds::{Cluster, ClusterConfig, ClusterGroup, Component, ComponentStatus};
use shoal_core::render::{ClusterFacts, Rendered, render, unrendered_checks};
use shoal_fleet::{Action, Fleet, LAST_APPLIED};

use crate::cli::Conn;

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// The Component.
    pub component: String,
    /// The Cluster to render it for.
    #[arg(long)]
    pub cluster: String,
    /// Render this version instead of the Component's `spec.version`.
    #[arg(long)]
    pub version: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
    #[command(flatten)]
    pub member_kubeconfigs: crate::cli::MemberKubeconfigs,
}

/// What `shoal diff` concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The cluster holds the rendered objects.
    InSync,
    /// An apply would change something (or a dangerous-field difference would be refused).
    Differs,
}

async fn get<K>(api: &Api<K>, what: &str, name: &str) -> Result<K>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(crate::cli::api_error)
        .with_context(|| format!("failed to read {what} {name:?}"))?
        .ok_or_else(|| anyhow!("{what} {name:?} not found"))
}

async fn list<K>(api: &Api<K>, what: &str) -> Result<Vec<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(crate::cli::api_error)
        .with_context(|| format!("failed to list {what}"))?
        .items)
}

/// Reads everything rendering needs from the control plane and renders.
async fn load(a: &RenderArgs) -> Result<(Component, Cluster, Rendered, kube::Client)> {
    let client = crate::cli::kube_client(&a.conn)?;
    let component = get(
        &Api::<Component>::all(client.clone()),
        "Component",
        &a.component,
    )
    .await?;
    let cluster = get(&Api::<Cluster>::all(client.clone()), "Cluster", &a.cluster).await?;
    let groups = list(&Api::<ClusterGroup>::all(client.clone()), "ClusterGroups").await?;
    let configs = list(&Api::<ClusterConfig>::all(client.clone()), "ClusterConfigs").await?;
    let rendered = render(
        &component,
        &ClusterFacts::of(&cluster),
        &groups,
        &configs,
        a.version.as_deref(),
    )
    .with_context(|| {
        format!(
            "failed to render Component {:?} for Cluster {:?}",
            a.component, a.cluster
        )
    })?;
    Ok((component, cluster, rendered, client))
}

/// `shoal render`: prints the objects as YAML documents.
///
/// # Errors
/// Reading the control plane, or rendering.
pub async fn render_cmd(a: RenderArgs) -> Result<()> {
    let (_, _, rendered, _) = load(&a).await?;
    let mut out = String::new();
    for (i, o) in rendered.objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(o)?);
    }
    print!("{out}");
    Ok(())
}

/// Takes shoal's own bookkeeping (the last-applied annotation) out of what is shown,
/// dropping the maps it leaves empty. Returns whether it was there.
fn strip_bookkeeping(v: &mut Value) -> bool {
    let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) else {
        return false;
    };
    let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) else {
        return false;
    };
    let had = ann.remove(LAST_APPLIED).is_some();
    if ann.is_empty() {
        meta.remove("annotations");
    }
    if meta.is_empty() {
        v.as_object_mut().map(|m| m.remove("metadata"));
    }
    had
}

fn short(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

fn change_line(c: &Change) -> String {
    format!("{}: {} → {}", c.path, short(&c.before), short(&c.after))
}

/// `shoal diff`: what applying the rendered component to the cluster would do.
///
/// # Errors
/// Reading the control plane, rendering, or reaching the member cluster.
pub async fn diff(a: RenderArgs) -> Result<Outcome> {
    let (component, cluster, rendered, client) = load(&a).await?;
    // The member's credentials (credentialsRef) are read from the control plane.
    let fleet = Fleet::with_credentials(client).with_policy(a.member_kubeconfigs.policy());
    let member = fleet
        .member(&cluster)
        .await
        .context("failed to reach the member cluster")?;
    let configs = if rendered.configs.is_empty() {
        "component defaults only".to_string()
    } else {
        format!("values from ClusterConfig {}", rendered.configs.join(", "))
    };
    let mut out = String::new();
    out.push_str(&format!(
        "Component {} {} on Cluster {} ({configs})\n",
        a.component, rendered.version, a.cluster
    ));
    for c in unrendered_checks(&component, &rendered.objects) {
        eprintln!("warning: {c} names a workload the template does not render");
    }
    let mut outcome = Outcome::InSync;
    for object in &rendered.objects {
        let dangerous = component.dangerous_fields_for(object);
        let applied = fleet
            .apply(&member, object, &dangerous, true)
            .await
            .with_context(|| format!("failed to diff against Cluster {:?}", a.cluster))?;
        let target = &applied.target;
        let mut patch = applied.patch.clone();
        let bookkeeping = strip_bookkeeping(&mut patch);
        let empty = patch.as_object().is_none_or(|m| m.is_empty());
        match applied.action {
            Action::Created => {
                outcome = Outcome::Differs;
                out.push_str(&format!("{target}: create\n"));
                out.push_str(&indent(&serde_saphyr::to_string(&patch)?, 4));
            }
            Action::Patched if !empty => {
                outcome = Outcome::Differs;
                let (api, _) = fleet.api_for(&member, object).await?;
                let live = api
                    .get_opt(&target.name)
                    .await
                    .map_err(crate::cli::api_error)?
                    .map(|o| serde_json::to_value(o).unwrap_or_default())
                    .unwrap_or_default();
                out.push_str(&format!("{target}: patch\n  changes:\n"));
                let last = shoal_fleet::last_applied(&live);
                for c in changes(&live, &patch, last.as_ref()) {
                    out.push_str(&format!("    {}\n", change_line(&c)));
                }
                out.push_str("  merge patch:\n");
                out.push_str(&indent(&serde_saphyr::to_string(&patch)?, 4));
            }
            Action::Patched | Action::Unchanged => {
                let note = if !applied.dropped.is_empty() {
                    " (but for the refused fields below)"
                } else if bookkeeping && applied.action == Action::Patched {
                    " (an apply would only record shoal's last-applied annotation)"
                } else {
                    ""
                };
                out.push_str(&format!("{target}: unchanged{note}\n"));
            }
        }
        for d in &applied.dropped {
            outcome = Outcome::Differs;
            out.push_str(&format!(
                "  refused: dangerous field {} would change: {} → {} (not sent; recreate the \
                 object to change it)\n",
                d.path,
                short(&d.live),
                short(&d.target)
            ));
        }
    }
    print!("{out}");
    std::io::stdout().flush()?;
    Ok(outcome)
}

/// The fleet view of a component for `shoal describe component`: the version
/// distribution (clusters, nodes, share of the clusters that run it) and the drifted
/// clusters with their fields.
pub fn render_fleet_view(status: Option<&ComponentStatus>) -> String {
    let Some(st) = status.filter(|s| s.observed_generation.is_some()) else {
        return "Fleet:        not observed yet (the component controller fills it in)\n".into();
    };
    let mut out = String::from("Fleet:\n");
    if let Some(c) = st.conditions.iter().find(|c| c.status == "False") {
        out.push_str(&format!("  {} ({})\n", c.message, c.reason));
        return out;
    }
    let installed: i64 = st.versions.iter().map(|v| v.clusters).sum();
    let mut rows = vec![["VERSION", "CLUSTERS", "NODES", "SHARE"].map(String::from)];
    for v in &st.versions {
        let share = if installed > 0 {
            format!("{:.1}%", 100.0 * v.clusters as f64 / installed as f64)
        } else {
            "-".into()
        };
        rows.push([
            v.version.clone(),
            v.clusters.to_string(),
            v.nodes.to_string(),
            share,
        ]);
    }
    if st.versions.is_empty() {
        out.push_str("  no cluster runs it\n");
    } else {
        let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
        let widths = [width(0), width(1), width(2)];
        for r in &rows {
            out.push_str(&format!(
                "  {:<w0$}   {:>w1$}   {:>w2$}   {}\n",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = widths[0],
                w1 = widths[1].max(8),
                w2 = widths[2].max(5)
            ));
        }
    }
    out.push_str(&format!(
        "  Not installed: {}\n",
        st.not_installed.unwrap_or(0)
    ));
    if let Some(n) = st.unreachable.filter(|n| *n > 0) {
        out.push_str(&format!("  Unreachable:   {n}\n"));
    }
    let drifted = st.drifted.unwrap_or(0);
    out.push_str(&format!(
        "Drift:        {drifted} cluster{} differ from what shoal applied\n",
        if drifted == 1 { "" } else { "s" }
    ));
    for d in &st.drift {
        out.push_str(&format!("  {}: {}\n", d.cluster, d.fields.join(", ")));
    }
    let unlisted = drifted - st.drift.len() as i64;
    if unlisted > 0 {
        out.push_str(&format!("  … and {unlisted} more\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_fleet_view_shows_versions_with_their_share_and_the_drift() {
        let st: ComponentStatus = serde_json::from_value(json!({
            "versions": [{"version": "v2", "clusters": 3, "nodes": 12},
                         {"version": "1.4.0", "clusters": 1, "nodes": 4}],
            "summary": "v2=3 1.4.0=1", "drifted": 1, "notInstalled": 2,
            "drift": [{"cluster": "c-2", "fields": ["spec.x", "spec.y"]}],
            "observedGeneration": 1}))
        .unwrap();
        let text = render_fleet_view(Some(&st));
        assert_eq!(
            text,
            "Fleet:\n  VERSION   CLUSTERS   NODES   SHARE\n  v2               3      12   75.0%\n\
             \x20 1.4.0            1       4   25.0%\n  Not installed: 2\n\
             Drift:        1 cluster differ from what shoal applied\n  c-2: spec.x, spec.y\n"
        );
        assert!(render_fleet_view(None).contains("not observed yet"));
    }

    #[test]
    fn bookkeeping_is_not_shown_and_leaves_no_empty_maps() {
        let mut p = json!({"metadata": {"annotations": {LAST_APPLIED: "{}"}}, "spec": {"x": 1}});
        assert!(strip_bookkeeping(&mut p));
        assert_eq!(p, json!({"spec": {"x": 1}}));
        let mut p =
            json!({"metadata": {"name": "a", "annotations": {"keep": "1", LAST_APPLIED: "{}"}}});
        assert!(strip_bookkeeping(&mut p));
        assert_eq!(
            p,
            json!({"metadata": {"name": "a", "annotations": {"keep": "1"}}})
        );
        let mut p = json!({"spec": {}});
        assert!(!strip_bookkeeping(&mut p));
    }
}
