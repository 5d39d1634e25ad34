//! `shoal bench release`: what a release across a big simulated fleet costs the control
//! plane, and how long planning takes for a very big one.
//!
//! ```text
//!  bench ─spawn─► shoal serve (SQLite, controllers, --time-scale X)   ◄── measured: CPU s,
//!    │                 ▲ Clusters, Release, PipelineRuns …                peak RSS, requests
//!    └─spawn─► shoal sim --clusters N --nodes M --control-plane URL   ◄── member API requests
//!  1. install release (1.0 everywhere), not measured
//!  2. upgrade release (2.0: waves 1 → 10% → rest, in-cluster steps 10% / 100%, no bake)
//!     measured from create to Succeeded
//!  3. planning: core::plan over 10,000 synthetic clusters, best of 5
//! ```
//!
//! The key decision: the control plane and the fleet run in two processes, so the CPU
//! seconds and peak RSS are the control plane's alone (API server, store, release and
//! taskflow controllers, executors), read from `/proc/PID` — the simulator's cost is
//! `shoal bench sim`'s business.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::api::{Api, ListParams, PostParams};
use shoal_core::kinds::ReleaseStrategy;
use shoal_core::kinds::{Cluster, Component, Release, ReleasePhase};
use shoal_core::plan::Candidate;
use tokio::io::AsyncBufReadExt;

#[derive(clap::Args, Debug)]
pub struct ReleaseBench {
    /// Simulated clusters the release covers.
    #[arg(long, default_value_t = 1_000)]
    pub clusters: u32,
    /// Nodes per cluster (one agent pod each).
    #[arg(long, default_value_t = 100)]
    pub nodes: u32,
    /// Virtual seconds per real second, for the fleet and the control plane.
    #[arg(long, default_value_t = 60.0)]
    pub time_scale: f64,
    /// Clusters changed at once.
    #[arg(long, default_value_t = 500)]
    pub cluster_concurrency: u32,
    /// Clusters in the planning measurement.
    #[arg(long, default_value_t = 10_000)]
    pub plan_clusters: usize,
    /// Give up on a release after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_seconds: u64,
    /// A fault profile for the simulated fleet (see examples/faults.yaml), e.g. members
    /// whose API is slow or answers 503 for a while: the release must still complete,
    /// riding out the transient failures.
    #[arg(long, value_name = "FAULTS.yaml")]
    pub faults: Option<std::path::PathBuf>,
}

const COMPONENT: &str = r#"{"apiVersion": "shoal.io/v1alpha1", "kind": "Component",
 "metadata": {"name": "bench-agent"},
 "spec": {"image": "registry.example.com/bench/agent", "version": "1.0",
  "checks": [{"workload": {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "DaemonSet",
     "namespace": "kube-system", "name": "bench-agent"}}],
  "template": "apiVersion: apps.kruise.io/v1alpha1\nkind: DaemonSet\nmetadata: {name: bench-agent, namespace: kube-system}\nspec:\n  selector: {matchLabels: {app: bench-agent}}\n  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 10%}}\n  template:\n    metadata: {labels: {app: bench-agent}}\n    spec:\n      tolerations: [{operator: Exists}]\n      containers: [{name: agent, image: \"{{ image }}:{{ version }}\"}]\n"}}"#;

fn release(name: &str, version: &str, concurrency: u32, steps: &str) -> Result<Release> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Release", "metadata": {"name": name},
        "spec": {"components": [{"name": "bench-agent", "version": version}],
                 "strategy": serde_json::from_str::<serde_json::Value>(&format!(
                     r#"{{"waves": [{{"clusters": 1}}, {{"percent": 10}}, {{"percent": 100}}],
                         "clusterConcurrency": {concurrency}, "batches": {steps}}}"#))?}
    }))?)
}

/// A child process killed when dropped.
pub(super) struct Child(pub(super) tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// Starts the current executable with `args` and returns it with the first stdout line
/// that starts with `prefix` (minus the prefix).
async fn spawn(args: &[&str], prefix: &str, log: &Path) -> Result<(Child, String)> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.args(args);
    spawn_command(cmd, args[0], prefix, log).await
}

/// Starts `cmd` (shoal's `what` verb, possibly under a wrapper such as `taskset`) and
/// returns it with the first stdout line that starts with `prefix` (minus the prefix).
pub(super) async fn spawn_command(
    mut cmd: tokio::process::Command,
    what: &str,
    prefix: &str,
    log: &Path,
) -> Result<(Child, String)> {
    let args = [what];
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("failed to start shoal {}", args[0]))?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let found = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok::<_, anyhow::Error>(Some(rest.trim().to_string()));
            }
        }
        Ok(None)
    })
    .await
    .with_context(|| format!("shoal {} printed no {prefix:?} in 120 s", args[0]))??;
    let Some(found) = found else {
        bail!(
            "shoal {} exited early: {}",
            args[0],
            std::fs::read_to_string(log).unwrap_or_default()
        );
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((Child(child), found))
}

/// (CPU seconds, peak RSS bytes) of a process.
pub(super) fn usage(pid: u32) -> (f64, u64) {
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command (which may hold spaces) start after the last ')'.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(f64::NAN);
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    (cpu, hwm)
}

/// API requests a server has answered, by `verb resource` (from its `/metrics`).
async fn requests(url: &str) -> Result<BTreeMap<String, f64>> {
    let text = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        *out.entry(format!("{} {}", label("verb"), label("resource")))
            .or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(out)
}

/// The sum of a counter's series in a server's `/metrics`.
async fn counter(url: &str, name: &str) -> Result<f64> {
    let text = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>()
        // An empty sum is -0.0, which prints as "-0"; adding +0.0 makes it 0.
        + 0.0)
}

fn total(m: &BTreeMap<String, f64>) -> f64 {
    m.values().sum()
}

/// Waits for release `name` to succeed, following it with one watch (polling it would
/// add a GET every few hundred milliseconds to the control-plane calls the bench
/// counts), printing its progress every 10 s; errors name the first failed cluster.
async fn wait_succeeded(api: &Api<Release>, name: &str, limit: Duration) -> Result<Duration> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let t = Instant::now();
    let mut last = Instant::now();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut seen = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut status = None;
    loop {
        let left = limit.saturating_sub(t.elapsed());
        let next = tokio::time::timeout(left.min(Duration::from_secs(10)), seen.next()).await;
        match next {
            Ok(Some(Ok(r))) => status = r.status,
            // Retried by the watcher's backoff; the limit still holds.
            Ok(Some(Err(_))) | Err(_) => {}
            Ok(None) => bail!("the watch of release {name} ended"),
        }
        let s = status.clone().unwrap_or_default();
        match s.phase {
            Some(ReleasePhase::Succeeded) => return Ok(t.elapsed()),
            Some(p @ (ReleasePhase::Failed | ReleasePhase::RolledBack | ReleasePhase::Paused)) => {
                // One line: what the release says, and the first cluster that failed,
                // in which step, and what it saw.
                let first = s.failures.first().map_or(String::new(), |f| {
                    format!(
                        "; first failure: cluster {} in step {}: {}",
                        f.cluster,
                        f.step,
                        f.message.replace('\n', " ")
                    )
                });
                bail!(
                    "release {name} ended {p:?}: {}{first}",
                    s.message.unwrap_or_default()
                )
            }
            _ => {}
        }
        if t.elapsed() > limit {
            bail!(
                "release {name} did not finish in {limit:?}: {:?}",
                s.message
            );
        }
        if last.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {name}: {} clusters done, {}",
                s.progress.unwrap_or_default(),
                s.message.unwrap_or_default()
            );
            last = Instant::now();
        }
    }
}

/// Waits until the bench component's fleet view shows `version` on all `clusters`: each
/// Cluster's `status.components` (a cluster the view could not read in its last pass
/// keeps what it showed before, so flaky members do not keep this from ending).
async fn wait_fleet_view(
    client: &kube::Client,
    version: &str,
    clusters: u32,
    limit: Duration,
) -> Result<Duration> {
    let t = Instant::now();
    let cluster_api: Api<Cluster> = Api::all(client.clone());
    loop {
        let list = cluster_api.list(&ListParams::default()).await?.items;
        let showing = list
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.components.get("bench-agent"))
                    .is_some_and(|v| v == version)
            })
            .count();
        if showing >= clusters as usize {
            return Ok(t.elapsed());
        }
        if t.elapsed() > limit {
            bail!(
                "the fleet view shows {version} on {showing} of {clusters} clusters after {limit:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Planning time for `n` synthetic clusters in four environments and three regions.
fn planning(n: usize) -> Result<(Duration, usize)> {
    let envs = ["test", "staging", "canary", "prod"];
    let regions = ["cn-hangzhou", "cn-shanghai", "cn-beijing"];
    let candidates: Vec<Candidate> = (0..n)
        .map(|i| Candidate {
            name: format!("c{i:05}"),
            labels: BTreeMap::from([
                ("env".to_string(), envs[(i * 7) % 4].to_string()),
                ("region".to_string(), regions[(i * 13) % 3].to_string()),
                ("tier".to_string(), ((i % 3) + 1).to_string()),
            ]),
            nodes: (i % 500) as u32 + 3,
            failures: (i % 11 == 0) as u32,
        })
        .collect();
    // The strategy of examples/release/release-good.yaml, through the kind's own
    // conversion, as the release controller plans it.
    let strategy: ReleaseStrategy = serde_json::from_value(serde_json::json!({
        "order": [{"label": "env", "values": envs}, {"label": "region", "values": regions}],
        "waveBoundary": "env",
        "waves": [{"clusters": 1}, {"percent": 10}, {"percent": 25, "approval": true},
                  {"percent": 50}],
    }))?;
    let strategy = strategy
        .plan_strategy()
        .map_err(|e| anyhow::anyhow!("the bench's strategy: {e:?}"))?;
    let mut best = Duration::MAX;
    let mut waves = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let p = shoal_core::plan::plan(&candidates, &strategy)?;
        best = best.min(t.elapsed());
        waves = p.waves.len();
    }
    Ok((best, waves))
}

pub async fn run(a: ReleaseBench) -> Result<()> {
    let (plan_time, waves) = planning(a.plan_clusters)?;
    println!(
        "planning {} clusters (4 environments × 3 regions, 4 waves, env boundary): {:.1} ms \
         (best of 5), {waves} waves",
        a.plan_clusters,
        plan_time.as_secs_f64() * 1e3
    );
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let scale = a.time_scale.to_string();
    let (control, url) = spawn(
        &[
            "serve",
            "--data-dir",
            data.to_str().context("temp dir")?,
            "--listen",
            "127.0.0.1:0",
            "--time-scale",
            &scale,
        ],
        "shoal is serving at ",
        &dir.path().join("serve.log"),
    )
    .await?;
    let pid = control.0.id().context("the control plane's pid")?;
    let (clusters, nodes) = (a.clusters.to_string(), a.nodes.to_string());
    let faults = a
        .faults
        .as_ref()
        .map(|p| p.to_str().context("the fault profile's path is not UTF-8"))
        .transpose()?;
    let mut sim_args = vec![
        "sim",
        "--clusters",
        &clusters,
        "--nodes",
        &nodes,
        "--listen",
        "127.0.0.1:0",
        "--time-scale",
        &scale,
        "--control-plane",
        &url,
    ];
    if let Some(f) = faults {
        sim_args.extend(["--faults", f]);
    }
    let (_fleet, fleet_line) = spawn(&sim_args, "simulating ", &dir.path().join("sim.log")).await?;
    let fleet_url = fleet_line
        .rsplit_once(" at ")
        .and_then(|(_, u)| u.strip_suffix("/clusters/NAME"))
        .context("the simulator's URL")?
        .to_string();
    let client = crate::cli::kube_client(&crate::cli::Conn {
        server: url.clone(),
        token: None,
        certificate_authority: None,
        tls_server_name: None,
    })?;
    let cluster_api: Api<Cluster> = Api::all(client.clone());
    let t = Instant::now();
    loop {
        let n = cluster_api.list(&ListParams::default()).await?.items.len();
        if n >= a.clusters as usize {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("only {n} of {} clusters registered", a.clusters);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let component: Component = serde_json::from_str(COMPONENT)?;
    Api::<Component>::all(client.clone())
        .create(&PostParams::default(), &component)
        .await?;
    let releases: Api<Release> = Api::all(client.clone());
    let limit = Duration::from_secs(a.timeout_seconds);
    println!(
        "fleet: {} clusters × {} nodes (one agent pod per node), {}× virtual time, \
         clusterConcurrency {}",
        a.clusters, a.nodes, a.time_scale, a.cluster_concurrency
    );
    releases
        .create(
            &PostParams::default(),
            &release("install", "1.0", a.cluster_concurrency, "[]")?,
        )
        .await?;
    let install = wait_succeeded(&releases, "install", limit).await?;
    println!(
        "install 1.0 (one step per cluster): {:.1} s",
        install.as_secs_f64()
    );
    // The measured upgrade starts from a fleet at rest: the component view has caught
    // up with the install (otherwise its writes of 1.0 onto each cluster's status land
    // in the upgrade's figures).
    let settled = wait_fleet_view(&client, "1.0", a.clusters, limit).await?;
    println!(
        "  the fleet view shows 1.0 on every cluster {:.1} s later",
        settled.as_secs_f64()
    );

    let (cpu0, _) = usage(pid);
    let (api0, fleet0) = (requests(&url).await?, requests(&fleet_url).await?);
    releases
        .create(
            &PostParams::default(),
            &release(
                "upgrade",
                "2.0",
                a.cluster_concurrency,
                r#"["10%", "100%"]"#,
            )?,
        )
        .await?;
    let wall = wait_succeeded(&releases, "upgrade", limit).await?;
    // Its cost includes the fleet view catching up with it.
    let viewed = wait_fleet_view(&client, "2.0", a.clusters, limit).await?;
    let (cpu1, hwm) = usage(pid);
    let (api1, fleet1) = (requests(&url).await?, requests(&fleet_url).await?);
    let n = f64::from(a.clusters);
    let delta = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        b.iter()
            .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect()
    };
    let (cp, member) = (delta(&api0, &api1), delta(&fleet0, &fleet1));
    println!(
        "upgrade 1.0 → 2.0 (waves 1 / 10% / rest, steps 10% / 100%, no bake): {:.1} s wall \
         ({:.0} virtual minutes)",
        wall.as_secs_f64(),
        wall.as_secs_f64() * a.time_scale / 60.0
    );
    println!(
        "  the fleet view shows 2.0 on every cluster {:.1} s later; the figures below run \
         until then",
        viewed.as_secs_f64()
    );
    println!(
        "  control plane: {:.1} CPU s ({:.0} ms per cluster), peak RSS {:.0} MiB",
        cpu1 - cpu0,
        (cpu1 - cpu0) / n * 1e3,
        hwm as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  API calls per cluster: {:.1} to the control plane, {:.1} to the member cluster",
        total(&cp) / n,
        total(&member) / n
    );
    let retries = counter(&url, "shoal_taskflow_transient_retries_total").await?;
    let task_runs: Api<shoal_core::taskflow::TaskRun> = Api::all(client.clone());
    let recorded = task_runs
        .list(&ListParams::default().labels("shoal.io/release=upgrade"))
        .await?
        .items
        .iter()
        .filter(|t| {
            t.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == shoal_controllers::taskflow::CONDITION_TRANSIENT_ERRORS)
            })
        })
        .count();
    println!(
        "  transient failures ridden out (task attempts run again): {retries:.0}, recorded on \
         {recorded} TaskRuns (condition TransientErrors)"
    );
    for (what, m) in [("control plane", &cp), ("member clusters", &member)] {
        let mut top: Vec<(&String, &f64)> = m.iter().collect();
        top.sort_by(|x, y| y.1.total_cmp(x.1));
        let line: Vec<String> = top
            .iter()
            .filter(|(_, v)| **v / n >= 0.05)
            .take(6)
            .map(|(k, v)| format!("{k} {:.1}", *v / n))
            .collect();
        println!("    {what}: {}", line.join(", "));
    }
    Ok(())
}
