//! `shoal plan`: the waves a release would run, in order, and why each cluster is where
//! it is — before anything changes.
//!
//! ```text
//!  Release (from the API, or -f FILE) ─┐
//!  Clusters matching its selector ─────┼─▶ shoal_core::plan::plan ─▶ waves + reasons
//!  (nodes: status.nodeCount; past failures: annotation shoal.io/failed-releases)
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kube::api::{Api, ListParams};
use shoal_core::kinds::{Cluster, Release, Validate};
use shoal_core::plan::{Plan, candidates, plan};

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The release's name, or use -f.
    pub name: Option<String>,
    /// A release manifest to plan without creating it.
    #[arg(short, long, conflicts_with = "name")]
    pub filename: Option<PathBuf>,
    /// Output: text (default) or json.
    #[arg(short, long, default_value = "text")]
    pub output: String,
    #[command(flatten)]
    pub conn: crate::cli::Conn,
}

/// The release's `spec.clusterSelector` as a label selector string (empty: every cluster).
pub(crate) fn label_selector(r: &Release) -> Result<String> {
    let Some(sel) = &r.spec.cluster_selector else {
        return Ok(String::new());
    };
    let parsed = shoal_core::selector::LabelSelector::from_k8s(sel)
        .map_err(|e| anyhow::anyhow!("spec.clusterSelector: {}", e.0))?;
    Ok(parsed.to_string())
}

/// Prints a plan for people (a closed pipe, as with `| head`, just ends the output).
pub fn print(name: &str, r: &Release, p: &Plan) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let order: Vec<String> = r
        .spec
        .strategy
        .order
        .iter()
        .map(|o| {
            if o.values.is_empty() {
                o.label.clone()
            } else {
                format!("{} {}", o.label, o.values.join(" → "))
            }
        })
        .collect();
    writeln!(
        out,
        "Release {name}: {} clusters in {} waves (order: {}; wave boundary: {})",
        p.cluster_count(),
        p.waves.len(),
        if order.is_empty() {
            "risk only".into()
        } else {
            order.join(", then ")
        },
        r.spec.strategy.wave_boundary.as_deref().unwrap_or("none"),
    )?;
    let width = p
        .waves
        .iter()
        .flat_map(|w| w.clusters.iter().map(|c| c.name.len()))
        .max()
        .unwrap_or(0);
    let keys = r.spec.strategy.order_labels();
    for (i, w) in p.waves.iter().enumerate() {
        writeln!(
            out,
            "\nWAVE {} ({}{})",
            i + 1,
            w.summary(&keys),
            if w.approval {
                ", waits for an Approval"
            } else {
                ""
            }
        )?;
        for c in &w.clusters {
            writeln!(out, "  {:width$}  {}", c.name, c.why)?;
        }
    }
    Ok(())
}

/// `shoal plan`.
pub async fn run(args: PlanArgs) -> Result<()> {
    let client = crate::cli::kube_client(&args.conn)?;
    let release: Release = match (&args.filename, &args.name) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            serde_saphyr::from_str(&text)
                .with_context(|| format!("{} is not a Release", path.display()))?
        }
        (None, Some(name)) => Api::<Release>::all(client.clone())
            .get(name)
            .await
            .with_context(|| format!("failed to read release {name}"))?,
        (None, None) => bail!("name a release, or give -f RELEASE.yaml"),
    };
    let problems = release.validate();
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        bail!("the release is invalid: {}", list.join("; "));
    }
    let strategy = release
        .spec
        .strategy
        .plan_strategy()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let selector = label_selector(&release)?;
    let clusters = Api::<Cluster>::all(client)
        .list(&ListParams::default().labels(&selector))
        .await
        .context("failed to list clusters")?
        .items;
    let p = plan(&candidates(&clusters), &strategy)?;
    let name = release.metadata.name.clone().unwrap_or_default();
    if args.output == "json" {
        let waves: Vec<serde_json::Value> = p
            .waves
            .iter()
            .map(|w| {
                serde_json::json!({
                    "approval": w.approval,
                    "clusters": w.clusters.iter().map(|c| serde_json::json!({
                        "name": c.name, "score": c.score, "why": c.why})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"release": name, "waves": waves}))?
        );
    } else if let Err(e) = print(&name, &release, &p)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e.into());
    }
    Ok(())
}
