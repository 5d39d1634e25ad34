//! `shoal release rehearse`: run a release on a simulated copy of the fleet, on a fast
//! clock, and say whether it would complete, how long it would take, what stops it and how
//! far the new version got before it stopped — without changing anything real.
//!
//! ```text
//!  real control plane (--server), only read
//!    Clusters the release selects ──┐   Nodes of each member (spec.endpoint.server,
//!    Components (+ dependsOn),      │   32 at a time; unreachable: status.nodeCount
//!    ClusterConfigs, ClusterGroups  │   nodes of the default profile), and the live
//!                                   │   workloads its components are checked by
//!                                   ▼
//!  fleet_copy() ──▶ TMP/fleet.yaml (explicit clusters: same names, labels, node profiles)
//!                                   ▼
//!  child: shoal serve --store memory --fleet TMP/fleet.yaml [--faults F] --time-scale X
//!    ◀── copies of the Components, ClusterConfigs, ClusterGroups; the live workloads
//!        (so the release starts from the versions the fleet runs now); the Release;
//!        an Approval per gated wave (--approve-all)
//!    ──▶ Release.status (phase, waves, failures) + GET /sim/history (the ledger)
//!                                   ▼
//!  Report: outcome, virtual and real duration, waves, clusters, failures, blast radius
//! ```
//!
//! The key decision: the rehearsal runs in a **private `shoal serve` child process**
//! (the current executable, an in-memory store, its own port and clock), not inside this
//! process and never against the real control plane. It is the same control-plane code
//! that would run the release for real — planner, release controller, taskflow, checks —
//! on its own clock, and the real control plane is only ever read. Killing the child
//! (at the end, on an error, on Ctrl-C: `kill_on_drop`) is the whole cleanup.
//!
//! The ledger is sampled while the release runs and folded together ([`merge_ledgers`]):
//! the blast radius counts everything that ever ran the version. (The simulator keeps
//! the records of deleted workloads too — a rollback of a first install deletes it — but
//! only its newest few per cluster.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use serde::Serialize;
use shoal_core::kinds::{
    Approval, Cluster, ClusterConfig, ClusterFailure, ClusterGroup, Component, Release,
    ReleasePhase, Validate,
};
use shoal_core::taskflow::approval::{ApprovalDecision, ApprovalSpec};
use shoal_core::taskflow::duration;
use shoal_sim::fleet::{
    ExplicitCluster, FleetSpec, INSTANCE_TYPE_LABEL, KERNEL_LABEL, NodeProfile, NodeRun,
    REGION_LABEL,
};
use shoal_sim::ledger::ClusterLedger;
use tokio::io::AsyncBufReadExt;

/// Members whose nodes are read at once: enough to read a thousand clusters in seconds,
/// few enough not to look like a storm to any one network path.
const NODE_READ_CONCURRENCY: usize = 32;

/// How long reading one member's nodes may take before it counts as unreachable.
const NODE_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Nodes per list page when reading a member.
const NODE_PAGE: u32 = 500;

/// How long the private control plane may take to start and register the copy.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Between two looks at the rehearsed release.
const POLL: Duration = Duration::from_millis(250);

/// Between two samples of the simulator's ledger.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Between two progress lines on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The step the release controller reports for a run that failed with no failed task:
/// one cancelled when the release stopped, not a check that failed.
const CANCELLED_STEP: &str = "run";

/// The zone label of nodes.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// `shoal release …`.
#[derive(clap::Subcommand, Debug)]
pub enum ReleaseCommand {
    /// Rehearse a release on a simulated copy of the fleet, on a fast clock, and report
    /// whether it would complete. Exits 0 when it would, 1 when it would not, 2 on errors
    /// (and when the rehearsal did not end within --timeout).
    Rehearse(RehearseArgs),
}

#[derive(clap::Args, Debug)]
pub struct RehearseArgs {
    /// The release manifest to rehearse.
    #[arg(short, long)]
    pub filename: PathBuf,
    /// A fault profile for the simulated copy (see examples/release/faults.yaml).
    #[arg(long, value_name = "FAULTS.yaml")]
    pub faults: Option<PathBuf>,
    /// Virtual time runs this many times faster than real time in the rehearsal.
    #[arg(long, default_value_t = 600.0)]
    pub time_scale: f64,
    /// Approve every gated wave so the rehearsal runs through (`--approve-all false`:
    /// stop at the first gate and report it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub approve_all: bool,
    /// Give up after this much real time (`90s`, `10m`).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Output: text or json.
    #[arg(short, long, default_value = "text")]
    pub output: String,
    #[command(flatten)]
    pub conn: crate::cli::Conn,
    #[command(flatten)]
    pub member_kubeconfigs: crate::cli::MemberKubeconfigs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = duration::parse(s).map_err(|e| e.to_string())?;
    Duration::try_from(d).map_err(|_| format!("{s:?}: must not be negative"))
}

/// What the rehearsal says about the release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It ran to `Succeeded`.
    Completes,
    /// It ended another way (failed, rolled back, paused, stopped at a gate).
    DoesNotComplete,
    /// It had not ended within `--timeout`.
    Undecided,
}

// ---------------------------------------------------------------------------------------
// The copy of the fleet.

/// One selected Cluster and what reading its nodes gave.
#[derive(Debug)]
pub struct MemberNodes {
    pub cluster: Cluster,
    /// The nodes, or why they could not be read.
    pub nodes: Result<Vec<Node>, String>,
    /// The live workloads of the release's components (as JSON), to start the copy from
    /// the versions the cluster runs now.
    pub workloads: Result<Vec<serde_json::Value>, String>,
}

/// A cluster simulated without its real nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    pub cluster: String,
    /// Nodes of the default profile simulated instead (`status.nodeCount`).
    pub nodes: u32,
    pub reason: String,
}

/// The fleet definition of the copy, and the clusters copied without their nodes.
#[derive(Debug)]
pub struct FleetCopy {
    pub spec: FleetSpec,
    pub fallbacks: Vec<Fallback>,
    pub nodes: u64,
    /// The live workloads each cluster starts with, by cluster.
    pub seeds: BTreeMap<String, Vec<serde_json::Value>>,
    /// What else the copy lacks (workloads that could not be read).
    pub notes: Vec<String>,
}

/// The part of a node a profile is made of (what fault profiles and checks can see).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct NodeShape {
    instance_type: String,
    kernel: String,
    kernel_label: Option<String>,
    os_image: String,
    kubelet_version: String,
    container_runtime_version: String,
}

fn shape_of(node: &Node) -> (NodeShape, Option<String>, Option<String>) {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
    let defaults = NodeProfile::default();
    let pick = |v: Option<&String>, d: &str| {
        v.filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| d.to_string())
    };
    let kernel_label = labels.get(KERNEL_LABEL).cloned();
    let shape = NodeShape {
        instance_type: pick(
            labels
                .get(INSTANCE_TYPE_LABEL)
                .or(labels.get("beta.kubernetes.io/instance-type")),
            &defaults.instance_type,
        ),
        kernel: pick(
            info.map(|i| &i.kernel_version).or(kernel_label.as_ref()),
            &defaults.kernel,
        ),
        kernel_label,
        os_image: pick(info.map(|i| &i.os_image), &defaults.os_image),
        kubelet_version: pick(info.map(|i| &i.kubelet_version), &defaults.kubelet_version),
        container_runtime_version: pick(
            info.map(|i| &i.container_runtime_version),
            &defaults.container_runtime_version,
        ),
    };
    let zone = labels
        .get(ZONE_LABEL)
        .or(labels.get("failure-domain.beta.kubernetes.io/zone"))
        .cloned();
    let region = labels
        .get(REGION_LABEL)
        .or(labels.get("failure-domain.beta.kubernetes.io/region"))
        .cloned();
    (shape, zone, region)
}

/// The explicit fleet definition of a copy of `members`: every cluster under its own
/// name with its labels, its nodes in name order as runs of (profile, zone, region), one
/// node profile per distinct node shape (`p1`, `p2`, … in order of first sight). A member
/// whose nodes could not be read gets `status.nodeCount` nodes of the default profile and
/// a [`Fallback`] saying so.
pub fn fleet_copy(members: &[MemberNodes]) -> FleetCopy {
    let mut profiles: BTreeMap<NodeShape, String> = BTreeMap::new();
    let mut spec = FleetSpec::default();
    let mut fallbacks = Vec::new();
    let mut total = 0u64;
    let mut seeds = BTreeMap::new();
    let mut notes = Vec::new();
    for m in members {
        let name = m.cluster.metadata.name.clone().unwrap_or_default();
        match &m.workloads {
            Ok(w) if w.is_empty() => {}
            Ok(w) => {
                seeds.insert(name.clone(), w.iter().map(seed_object).collect());
            }
            Err(e) => notes.push(format!(
                "cluster {name}: {e}; its copy starts without the release's workloads"
            )),
        }
        let labels: BTreeMap<String, String> =
            m.cluster.metadata.labels.clone().unwrap_or_default();
        let mut runs: Vec<NodeRun> = Vec::new();
        match &m.nodes {
            Ok(nodes) => {
                let mut sorted: Vec<&Node> = nodes.iter().collect();
                sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                for node in sorted {
                    let (shape, zone, region) = shape_of(node);
                    let next = format!("p{}", profiles.len() + 1);
                    let profile = profiles.entry(shape.clone()).or_insert(next).clone();
                    spec.node_profiles
                        .entry(profile.clone())
                        .or_insert_with(|| {
                            let mut p = NodeProfile {
                                instance_type: shape.instance_type.clone(),
                                kernel: shape.kernel.clone(),
                                os_image: shape.os_image.clone(),
                                kubelet_version: shape.kubelet_version.clone(),
                                container_runtime_version: shape.container_runtime_version.clone(),
                                ..NodeProfile::default()
                            };
                            if let Some(k) = &shape.kernel_label {
                                p.labels.insert(KERNEL_LABEL.into(), k.clone());
                            }
                            p
                        });
                    total += 1;
                    match runs.last_mut() {
                        Some(r)
                            if r.profile.as_deref() == Some(profile.as_str())
                                && r.zone == zone
                                && r.region == region =>
                        {
                            r.count += 1;
                        }
                        _ => runs.push(NodeRun {
                            profile: Some(profile),
                            count: 1,
                            zone,
                            region,
                        }),
                    }
                }
            }
            Err(reason) => {
                let count = m
                    .cluster
                    .status
                    .as_ref()
                    .and_then(|s| s.node_count)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0);
                if count > 0 {
                    runs.push(NodeRun {
                        profile: None,
                        count,
                        zone: None,
                        region: None,
                    });
                }
                total += u64::from(count);
                fallbacks.push(Fallback {
                    cluster: name.clone(),
                    nodes: count,
                    reason: reason.clone(),
                });
            }
        }
        spec.clusters.push(ExplicitCluster {
            name,
            labels,
            nodes: runs,
        });
    }
    FleetCopy {
        spec,
        fallbacks,
        nodes: total,
        seeds,
        notes,
    }
}

/// A live object as it can be created elsewhere: its kind, its identity, labels and
/// annotations (shoal's last-applied copy among them) and its spec; nothing the server
/// assigned, no status.
fn seed_object(live: &serde_json::Value) -> serde_json::Value {
    let meta = &live["metadata"];
    let mut m = serde_json::Map::new();
    for k in ["name", "namespace", "labels", "annotations"] {
        if let Some(v) = meta.get(k).filter(|v| !v.is_null()) {
            m.insert(k.into(), v.clone());
        }
    }
    serde_json::json!({
        "apiVersion": live["apiVersion"],
        "kind": live["kind"],
        "metadata": m,
        "spec": live["spec"],
    })
}

/// Every node of the member `cluster`, through its own API server.
async fn read_nodes(fleet: &shoal_fleet::Fleet, cluster: &Cluster) -> Result<Vec<Node>, String> {
    let member = fleet.member(cluster).await.map_err(|e| e.to_string())?;
    let api: Api<Node> = Api::all(member.client);
    let read = async {
        let mut out = Vec::new();
        let mut params = ListParams::default().limit(NODE_PAGE);
        loop {
            let page = api.list(&params).await.map_err(|e| {
                format!(
                    "failed to list nodes at {}: {}",
                    member.server,
                    crate::cli::api_error(e)
                )
            })?;
            out.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => params = params.continue_token(&c),
                None => return Ok(out),
            }
        }
    };
    tokio::time::timeout(NODE_READ_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from {} within {NODE_READ_TIMEOUT:?}",
                member.server
            ))
        })
}

/// (apiVersion, kind, namespace, name) of the workloads `components` are checked by.
fn checked_workloads(components: &[&Component]) -> Vec<(String, String, String, String)> {
    components
        .iter()
        .flat_map(|c| c.spec.checks.iter().filter_map(|ch| ch.workload.as_ref()))
        .map(|w| {
            (
                w.api_version.clone().unwrap_or_else(|| "apps/v1".into()),
                w.kind.clone(),
                w.namespace.clone().unwrap_or_else(|| "default".into()),
                w.name.clone(),
            )
        })
        .collect()
}

/// The live `workloads` on the member `cluster` (those it has).
async fn read_workloads(
    fleet: &shoal_fleet::Fleet,
    cluster: &Cluster,
    workloads: &[(String, String, String, String)],
) -> Result<Vec<serde_json::Value>, String> {
    let member = fleet.member(cluster).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (av, kind, ns, name) in workloads {
        let read = shoal_fleet::read_workload(fleet, &member, av, kind, ns, name);
        match tokio::time::timeout(NODE_READ_TIMEOUT, read).await {
            Ok(Ok(Some(w))) => out.push(w.object),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(format!("failed to read {kind} {ns}/{name}: {e}")),
            Err(_) => {
                return Err(format!(
                    "no answer from {} within {NODE_READ_TIMEOUT:?}",
                    member.server
                ));
            }
        }
    }
    Ok(out)
}

/// The selected Clusters of the real control plane, their nodes and the live workloads
/// of the release's components.
async fn read_fleet(
    client: &kube::Client,
    release: &Release,
    components: &[Component],
    kubeconfigs: shoal_fleet::KubeconfigPolicy,
) -> Result<Vec<MemberNodes>> {
    let released: Vec<&Component> = components
        .iter()
        .filter(|c| {
            release
                .spec
                .components
                .iter()
                .any(|cv| c.metadata.name.as_deref() == Some(cv.name.as_str()))
        })
        .collect();
    let checked = checked_workloads(&released);
    let checked = &checked;
    let selector = crate::plan::label_selector(release)?;
    let mut clusters = Api::<Cluster>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(crate::cli::api_error)
        .context("failed to list the clusters the release selects")?
        .items;
    clusters.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let fleet = shoal_fleet::Fleet::with_credentials(client.clone()).with_policy(kubeconfigs);
    let fleet = &fleet;
    let members: Vec<MemberNodes> = futures::stream::iter(clusters)
        .map(|cluster| async move {
            let nodes = read_nodes(fleet, &cluster).await;
            let workloads = match &nodes {
                Ok(_) => read_workloads(fleet, &cluster, checked).await,
                Err(_) => Ok(Vec::new()),
            };
            MemberNodes {
                cluster,
                nodes,
                workloads,
            }
        })
        .buffered(NODE_READ_CONCURRENCY)
        .collect()
        .await;
    Ok(members)
}

// ---------------------------------------------------------------------------------------
// The configuration the release renders with.

/// Keeps what identifies an object and nothing the real server assigned.
fn fresh_meta(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone(),
        ..ObjectMeta::default()
    }
}

/// The Components the release names and, transitively, the ones they depend on, in
/// dependency order.
async fn read_components(client: &kube::Client, release: &Release) -> Result<Vec<Component>> {
    let api: Api<Component> = Api::all(client.clone());
    let mut found: BTreeMap<String, Component> = BTreeMap::new();
    let mut todo: Vec<(String, Option<String>)> = release
        .spec
        .components
        .iter()
        .map(|c| (c.name.clone(), None))
        .collect();
    while let Some((name, needed_by)) = todo.pop() {
        if found.contains_key(&name) {
            continue;
        }
        let c = api
            .get_opt(&name)
            .await
            .map_err(crate::cli::api_error)
            .with_context(|| format!("failed to read component {name}"))?
            .ok_or_else(|| match &needed_by {
                None => anyhow!(
                    "the release names component {name:?}, which the control plane does not have"
                ),
                Some(by) => anyhow!(
                    "component {by:?} depends on {name:?}, which the control plane does not have"
                ),
            })?;
        todo.extend(
            c.spec
                .depends_on
                .iter()
                .map(|d| (d.clone(), Some(name.clone()))),
        );
        found.insert(name, c);
    }
    let components: Vec<Component> = found.into_values().collect();
    let order = shoal_core::render::order(&components)
        .map_err(|e| anyhow!("the release's components: {e}"))?;
    let mut by_name: BTreeMap<String, Component> = components
        .into_iter()
        .map(|c| (c.metadata.name.clone().unwrap_or_default(), c))
        .collect();
    Ok(order.iter().filter_map(|n| by_name.remove(n)).collect())
}

/// Copies the configuration into the private control plane: groups, then components in
/// dependency order, then per-cluster configuration.
async fn copy_config(
    real: &kube::Client,
    private: &kube::Client,
    components: Vec<Component>,
) -> Result<()> {
    let pp = PostParams::default();
    let groups = Api::<ClusterGroup>::all(real.clone())
        .list(&ListParams::default())
        .await
        .map_err(crate::cli::api_error)
        .context("failed to list cluster groups")?
        .items;
    let to: Api<ClusterGroup> = Api::all(private.clone());
    for g in groups {
        let copy = ClusterGroup {
            metadata: fresh_meta(&g.metadata),
            spec: g.spec,
            status: None,
        };
        to.create(&pp, &copy)
            .await
            .map_err(crate::cli::api_error)
            .with_context(|| format!("failed to copy cluster group {:?}", copy.metadata.name))?;
    }
    let to: Api<Component> = Api::all(private.clone());
    for c in components {
        let copy = Component {
            metadata: fresh_meta(&c.metadata),
            spec: c.spec,
            status: None,
        };
        to.create(&pp, &copy)
            .await
            .map_err(crate::cli::api_error)
            .with_context(|| format!("failed to copy component {:?}", copy.metadata.name))?;
    }
    let configs = Api::<ClusterConfig>::all(real.clone())
        .list(&ListParams::default())
        .await
        .map_err(crate::cli::api_error)
        .context("failed to list cluster configs")?
        .items;
    let to: Api<ClusterConfig> = Api::all(private.clone());
    for c in configs {
        let copy = ClusterConfig {
            metadata: fresh_meta(&c.metadata),
            spec: c.spec,
        };
        to.create(&pp, &copy)
            .await
            .map_err(crate::cli::api_error)
            .with_context(|| format!("failed to copy cluster config {:?}", copy.metadata.name))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The private control plane.

/// A `shoal serve` child process in a temp dir; killed when dropped.
struct PrivateServer {
    // Declared first: dropped (killed) before the directory it uses is removed.
    child: tokio::process::Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrivateServer {
    async fn start(dir: tempfile::TempDir, faults: Option<&Path>, time_scale: f64) -> Result<Self> {
        let exe = std::env::current_exe().context("failed to find the shoal executable")?;
        let log = dir.path().join("serve.log");
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("failed to create {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("serve")
            .args(["--store", "memory", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--fleet")
            .arg(dir.path().join("fleet.yaml"))
            .args(["--time-scale", &time_scale.to_string()]);
        if let Some(f) = faults {
            cmd.arg("--faults").arg(f);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .context("failed to start the private control plane (shoal serve)")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let banner = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(u) = line.strip_prefix("shoal is serving at ") {
                    return Some(u.trim().to_string());
                }
            }
            None
        })
        .await;
        // Keep reading: a server whose stdout is closed fails on its next line.
        let url = match banner {
            Ok(Some(url)) => url,
            _ => bail!("the private control plane did not start\n{}", tail(&log)),
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(PrivateServer {
            child,
            url,
            log,
            _dir: dir,
        })
    }

    fn client(&self) -> Result<kube::Client> {
        kube::Client::try_from(crate::cli::kube_config(&self.url, None, None)?)
            .context("failed to build a client for the private control plane")
    }

    /// The simulator's ledger and its virtual now.
    async fn history(&self) -> Result<(Timestamp, Vec<ClusterLedger>)> {
        #[derive(serde::Deserialize)]
        struct History {
            now: Timestamp,
            clusters: Vec<ClusterLedger>,
        }
        let h: History = reqwest::get(format!("{}/sim/history", self.url))
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("failed to read the simulator's history")?
            .json()
            .await
            .context("the simulator's history is malformed")?;
        Ok((h.now, h.clusters))
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Creates the live workloads of the real clusters in their copies, and waits (a while)
/// until the simulator has them fully available, so the release starts from the versions
/// the fleet runs now.
async fn seed(
    server: &PrivateServer,
    seeds: &BTreeMap<String, Vec<serde_json::Value>>,
) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::DynamicObject;
    if seeds.is_empty() {
        return Ok(());
    }
    let fleet = shoal_fleet::Fleet::new();
    let pp = PostParams::default();
    let mut wanted: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    for (cluster, objects) in seeds {
        let member =
            shoal_fleet::Member::at(cluster, &format!("{}/clusters/{cluster}", server.url))?;
        for obj in objects {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let namespaces: Api<Namespace> = Api::all(member.client.clone());
            if namespaces
                .get_opt(&ns)
                .await
                .map_err(crate::cli::api_error)?
                .is_none()
            {
                let n = Namespace {
                    metadata: ObjectMeta {
                        name: Some(ns.clone()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                };
                namespaces
                    .create(&pp, &n)
                    .await
                    .map_err(crate::cli::api_error)?;
            }
            let (api, target) = fleet.api_for(&member, obj).await?;
            let object: DynamicObject = serde_json::from_value(obj.clone())?;
            api.create(&pp, &object)
                .await
                .map_err(crate::cli::api_error)
                .with_context(|| format!("failed to copy {target} into the copy of {cluster}"))?;
            wanted.insert((cluster.clone(), target.kind, ns, target.name));
        }
    }
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let (_, ledgers) = server.history().await?;
        let ready = ledgers
            .iter()
            .flat_map(|l| {
                l.workloads
                    .iter()
                    .filter(|w| w.fully_available_at.is_some())
                    .map(|w| {
                        (
                            l.cluster.clone(),
                            w.kind.clone(),
                            w.namespace.clone(),
                            w.name.clone(),
                        )
                    })
            })
            .filter(|k| wanted.contains(k))
            .count();
        if ready == wanted.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            eprintln!(
                "rehearse: {} of {} copied workloads are not fully available; starting anyway",
                wanted.len() - ready,
                wanted.len()
            );
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Folds a sample of the simulator's ledger into `seen`: per workload (live or deleted),
/// every version ever seen with its largest counts.
pub fn merge_ledgers(seen: &mut BTreeMap<String, ClusterLedger>, sample: Vec<ClusterLedger>) {
    for l in sample {
        let Some(acc) = seen.get_mut(&l.cluster) else {
            seen.insert(l.cluster.clone(), l);
            continue;
        };
        for w in l.workloads {
            let same = |a: &shoal_sim::ledger::WorkloadLedger| {
                a.api_version == w.api_version
                    && a.kind == w.kind
                    && a.namespace == w.namespace
                    && a.name == w.name
            };
            let Some(old) = acc.workloads.iter_mut().find(|a| same(a)) else {
                acc.workloads.push(w);
                continue;
            };
            let mut merged = w.clone();
            merged.violations = merged.violations.max(old.violations);
            for v in &old.versions {
                match merged.versions.iter_mut().find(|n| n.version == v.version) {
                    Some(n) => {
                        n.nodes_ever = n.nodes_ever.max(v.nodes_ever);
                        n.crash_looping_nodes_ever =
                            n.crash_looping_nodes_ever.max(v.crash_looping_nodes_ever);
                    }
                    None => merged.versions.push(v.clone()),
                }
            }
            *old = merged;
        }
    }
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "--- {} (last 20 lines) ---\n{}",
        path.display(),
        lines[lines.len().saturating_sub(20)..].join("\n")
    )
}

/// Waits until the private control plane has registered all `n` simulated clusters with
/// their node counts.
async fn wait_registered(client: &kube::Client, n: usize) -> Result<()> {
    let api: Api<Cluster> = Api::all(client.clone());
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(list) = api.list(&ListParams::default()).await {
            let counted = list
                .items
                .iter()
                .filter(|c| c.status.as_ref().is_some_and(|s| s.node_count.is_some()))
                .count();
            if counted == n {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the simulated copy did not register its {n} clusters within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------
// The report.

/// The target version of one component: where it got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlastRadius {
    pub component: String,
    pub version: String,
    /// Clusters where a pod of the version ever ran, of all the copy's clusters.
    pub clusters: u32,
    pub clusters_total: u32,
    /// Nodes that ever ran it, of all the copy's nodes.
    pub nodes: u64,
    pub nodes_total: u64,
    /// Nodes where it ever crash-looped.
    pub crash_looping_nodes: u64,
    /// Observed steps where its workload had more pods unavailable than its
    /// maxUnavailable (any version).
    pub violations: u64,
}

/// What a rehearsal found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub release: String,
    /// The phase it ended in (`Succeeded`, `RolledBack`, …).
    pub outcome: String,
    /// Whether the release would complete.
    pub completes: bool,
    /// Why it stopped where it did, when that is not its phase alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Virtual time from the release's start to its end (or to when the rehearsal
    /// stopped), Go notation.
    pub virtual_duration: String,
    pub real_seconds: f64,
    pub time_scale: f64,
    pub waves_planned: u32,
    pub waves_reached: u32,
    pub clusters_total: i64,
    pub clusters_succeeded: i64,
    pub clusters_failed: i64,
    pub clusters_rolled_back: i64,
    /// The checks that stopped it: cluster, step, what the check saw.
    pub failures: Vec<ClusterFailure>,
    /// Clusters whose run was cancelled in progress when the release stopped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cancelled: Vec<String>,
    pub blast_radius: Vec<BlastRadius>,
    /// The copy: clusters and nodes simulated.
    pub fleet_clusters: usize,
    pub fleet_nodes: u64,
    /// Clusters copied without their real nodes.
    pub fallbacks: Vec<Fallback>,
    /// What else the copy lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The workloads that are `component` in the ledger: those its checks name, else any
/// that ever ran `version`.
fn component_workloads<'a>(
    component: Option<&Component>,
    ledger: &'a ClusterLedger,
    version: &str,
) -> Vec<&'a shoal_sim::ledger::WorkloadLedger> {
    // (apiVersion, kind, namespace, name), with the check's defaults.
    let named: Vec<(&str, &str, &str, &str)> = component
        .map(|c| {
            c.spec
                .checks
                .iter()
                .filter_map(|ch| ch.workload.as_ref())
                .map(|w| {
                    (
                        w.api_version.as_deref().unwrap_or("apps/v1"),
                        w.kind.as_str(),
                        w.namespace.as_deref().unwrap_or("default"),
                        w.name.as_str(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ledger
        .workloads
        .iter()
        .filter(|w| {
            if named.is_empty() {
                w.version(version).is_some()
            } else {
                named.iter().any(|&(av, k, ns, n)| {
                    av == w.api_version && k == w.kind && ns == w.namespace && n == w.name
                })
            }
        })
        .collect()
}

/// The blast radius of every component version the release targets.
pub fn blast_radius(
    release: &Release,
    components: &[Component],
    ledgers: &[ClusterLedger],
    clusters_total: u32,
    nodes_total: u64,
) -> Vec<BlastRadius> {
    release
        .spec
        .components
        .iter()
        .map(|cv| {
            let component = components
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(cv.name.as_str()));
            let mut b = BlastRadius {
                component: cv.name.clone(),
                version: cv.version.clone(),
                clusters_total,
                nodes_total,
                ..BlastRadius::default()
            };
            for l in ledgers {
                let mut reached = false;
                for w in component_workloads(component, l, &cv.version) {
                    b.violations += w.violations;
                    if let Some(v) = w.version(&cv.version).filter(|v| v.nodes_ever > 0) {
                        reached = true;
                        b.nodes += u64::from(v.nodes_ever);
                        b.crash_looping_nodes += u64::from(v.crash_looping_nodes_ever);
                    }
                }
                b.clusters += u32::from(reached);
            }
            b
        })
        .collect()
}

/// `3/5` → 3.
fn wave_number(current: Option<&str>) -> Option<u32> {
    current?.split('/').next()?.trim().parse().ok()
}

/// Renders a report for people.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Rehearsal of release {} on a simulated copy of {} clusters ({} nodes), time x{}",
        r.release, r.fleet_clusters, r.fleet_nodes, r.time_scale
    );
    let verdict = if r.completes {
        "it would complete"
    } else {
        "it would NOT complete"
    };
    let _ = writeln!(s, "Outcome:    {} ({verdict})", r.outcome);
    if let Some(why) = &r.stopped {
        let _ = writeln!(s, "Stopped:    {why}");
    }
    if let Some(m) = &r.message {
        let _ = writeln!(s, "Message:    {m}");
    }
    let _ = writeln!(
        s,
        "Duration:   {} virtual ({:.1}s real)",
        r.virtual_duration, r.real_seconds
    );
    let _ = writeln!(
        s,
        "Waves:      reached {} of {} planned",
        r.waves_reached, r.waves_planned
    );
    let _ = writeln!(
        s,
        "Clusters:   {}/{} succeeded, {} failed, {} rolled back",
        r.clusters_succeeded, r.clusters_total, r.clusters_failed, r.clusters_rolled_back
    );
    if r.failures.is_empty() {
        let _ = writeln!(s, "Failures:   none");
    } else {
        let _ = writeln!(s, "Failures (the checks that stopped it):");
        for f in &r.failures {
            let _ = writeln!(s, "  {}  {}: {}", f.cluster, f.step, f.message);
        }
    }
    if !r.cancelled.is_empty() {
        let _ = writeln!(
            s,
            "Cancelled:  {} in progress when it stopped ({})",
            r.cancelled.len(),
            r.cancelled.join(", ")
        );
    }
    let _ = writeln!(s, "Blast radius (ever ran the target version):");
    for b in &r.blast_radius {
        let _ = writeln!(
            s,
            "  {} {}: {}/{} clusters, {}/{} nodes, crash-looped on {} nodes, {} maxUnavailable violations",
            b.component,
            b.version,
            b.clusters,
            b.clusters_total,
            b.nodes,
            b.nodes_total,
            b.crash_looping_nodes,
            b.violations
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "Note: {n}");
    }
    for f in &r.fallbacks {
        let _ = writeln!(
            s,
            "Note: cluster {} was not reached ({}); simulated with {} nodes of the default profile",
            f.cluster, f.reason, f.nodes
        );
    }
    s
}

// ---------------------------------------------------------------------------------------
// The run.

/// `shoal release …`.
///
/// # Errors
/// Anything that keeps the rehearsal from running: an invalid release, an unreachable
/// control plane, a component it does not have, a private control plane that fails.
pub async fn run(cmd: ReleaseCommand) -> Result<Verdict> {
    let ReleaseCommand::Rehearse(args) = cmd;
    let stop = tokio_util::sync::CancellationToken::new();
    crate::serve::on_signal(stop.clone());
    tokio::select! {
        r = rehearse(args) => r,
        () = stop.cancelled() => bail!("interrupted: the rehearsal was stopped"),
    }
}

fn read_release(path: &Path) -> Result<Release> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let release: Release = serde_saphyr::from_str(&text)
        .with_context(|| format!("{} is not a Release", path.display()))?;
    let problems = release.validate();
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        bail!("the release is invalid: {}", list.join("; "));
    }
    if release.metadata.name.as_deref().is_none_or(str::is_empty) {
        bail!("the release in {} has no metadata.name", path.display());
    }
    Ok(release)
}

async fn rehearse(args: RehearseArgs) -> Result<Verdict> {
    if !matches!(args.output.as_str(), "text" | "json") {
        bail!(
            "unknown output format {:?}: expected text or json",
            args.output
        );
    }
    if !(args.time_scale.is_finite() && args.time_scale > 0.0) {
        bail!(
            "--time-scale {}: must be a positive number",
            args.time_scale
        );
    }
    let faults = args
        .faults
        .as_deref()
        .map(|f| std::path::absolute(f).with_context(|| format!("--faults {}", f.display())))
        .transpose()?;
    if let Some(f) = &faults {
        std::fs::metadata(f).with_context(|| format!("failed to read {}", f.display()))?;
    }
    let release = read_release(&args.filename)?;

    // Read the real control plane: the fleet, the components, the configuration.
    let real = crate::cli::kube_client(&args.conn)?;
    let components = read_components(&real, &release).await?;
    let members = read_fleet(
        &real,
        &release,
        &components,
        args.member_kubeconfigs.policy(),
    )
    .await
    .with_context(|| format!("failed to read the fleet from {}", args.conn.server))?;
    if members.is_empty() {
        bail!("the release selects no clusters: there is nothing to rehearse");
    }
    let copy = fleet_copy(&members);
    let fleet_clusters = copy.spec.clusters.len();
    eprintln!(
        "rehearse: copying {} clusters and {} nodes{}",
        fleet_clusters,
        copy.nodes,
        if copy.fallbacks.is_empty() {
            String::new()
        } else {
            format!(
                " ({} clusters not reached: default nodes)",
                copy.fallbacks.len()
            )
        }
    );

    // The private control plane on the copy.
    let dir = tempfile::Builder::new()
        .prefix("shoal-rehearse-")
        .tempdir()
        .context("failed to create a temp dir")?;
    let fleet_yaml =
        serde_saphyr::to_string(&copy.spec).context("failed to write the fleet copy")?;
    std::fs::write(dir.path().join("fleet.yaml"), fleet_yaml)
        .context("failed to write the fleet copy")?;
    let server = PrivateServer::start(dir, faults.as_deref(), args.time_scale).await?;
    let result = drive(&args, &server, &real, release, components, copy).await;
    let result =
        result.map_err(|e| e.context(format!("the rehearsal failed\n{}", tail(&server.log))));
    server.stop().await;
    let (report, verdict) = result?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    Ok(verdict)
}

async fn drive(
    args: &RehearseArgs,
    server: &PrivateServer,
    real: &kube::Client,
    release: Release,
    components: Vec<Component>,
    copy: FleetCopy,
) -> Result<(Report, Verdict)> {
    let private = server.client()?;
    wait_registered(&private, copy.spec.clusters.len()).await?;
    copy_config(real, &private, components.clone()).await?;
    seed(server, &copy.seeds).await?;

    let name = release.metadata.name.clone().unwrap_or_default();
    let rehearsed = Release {
        metadata: fresh_meta(&release.metadata),
        spec: release.spec.clone(),
        status: None,
    };
    let releases: Api<Release> = Api::all(private.clone());
    releases
        .create(&PostParams::default(), &rehearsed)
        .await
        .map_err(crate::cli::api_error)
        .context("failed to create the release in the rehearsal")?;
    let started = Instant::now();
    eprintln!(
        "rehearse: release {name} started (time x{})",
        args.time_scale
    );

    let approvals: Api<Approval> = Api::namespaced(private.clone(), "default");
    let mut approved: BTreeSet<u32> = BTreeSet::new();
    let mut last_line = Instant::now();
    let mut last_sample = Instant::now();
    let mut seen: BTreeMap<String, ClusterLedger> = BTreeMap::new();
    let mut stopped = None;
    let (last, verdict) = loop {
        let r = releases
            .get(&name)
            .await
            .map_err(crate::cli::api_error)
            .context("failed to read the rehearsed release")?;
        let status = r.status.clone().unwrap_or_default();
        if args.approve_all {
            for (i, w) in status.waves.iter().enumerate() {
                let wave = i as u32 + 1;
                if w.approval && approved.insert(wave) {
                    let a = Approval::new(
                        &format!("rehearse-{name}-wave-{wave}"),
                        ApprovalSpec {
                            pipeline_run: String::new(),
                            task: String::new(),
                            release: Some(name.clone()),
                            wave: Some(wave),
                            approved_by: "shoal-release-rehearse".into(),
                            decision: ApprovalDecision::Approve,
                            reason: Some("a rehearsal approves every gate (--approve-all)".into()),
                        },
                    );
                    approvals
                        .create(&PostParams::default(), &a)
                        .await
                        .map_err(crate::cli::api_error)
                        .with_context(|| format!("failed to approve wave {wave}"))?;
                }
            }
        }
        match status.phase {
            Some(ReleasePhase::Succeeded) => break (r, Verdict::Completes),
            Some(ReleasePhase::Failed | ReleasePhase::RolledBack | ReleasePhase::Paused) => {
                break (r, Verdict::DoesNotComplete);
            }
            Some(ReleasePhase::WaitingForApproval) if !args.approve_all => {
                let wave = wave_number(status.current_wave.as_deref()).unwrap_or(0);
                stopped = Some(format!(
                    "at the approval gate of wave {wave} (rehearsed with --approve-all false)"
                ));
                break (r, Verdict::DoesNotComplete);
            }
            _ => {}
        }
        if started.elapsed() > args.timeout {
            stopped = Some(format!(
                "the rehearsal did not end within {:?} (real time; --timeout)",
                args.timeout
            ));
            break (r, Verdict::Undecided);
        }
        if last_sample.elapsed() >= SAMPLE_EVERY {
            last_sample = Instant::now();
            merge_ledgers(&mut seen, server.history().await?.1);
        }
        if last_line.elapsed() >= PROGRESS_EVERY {
            last_line = Instant::now();
            let c = status.clusters.clone().unwrap_or_default();
            eprintln!(
                "rehearse: {:?}, wave {}, {}/{} clusters succeeded, {} failed",
                status.phase.unwrap_or(ReleasePhase::Pending),
                status.current_wave.as_deref().unwrap_or("-"),
                c.succeeded,
                c.total,
                c.failed
            );
        }
        tokio::time::sleep(POLL).await;
    };

    let real_seconds = started.elapsed().as_secs_f64();
    let (now, ledgers) = server.history().await?;
    merge_ledgers(&mut seen, ledgers);
    let status = last.status.unwrap_or_default();
    let start = status.start_time.as_ref().map(|t| t.0);
    let end = status.completion_time.as_ref().map_or(now, |t| t.0);
    let virtual_duration = start.map_or(SignedDuration::ZERO, |s| {
        SignedDuration::from_secs(end.duration_since(s).as_secs())
    });
    let counts = status.clusters.clone().unwrap_or_default();
    let planned = status.waves.len() as u32;
    let reached = match status.phase {
        Some(ReleasePhase::Succeeded) => planned,
        _ => wave_number(status.current_wave.as_deref()).unwrap_or(0),
    };
    let report = Report {
        release: name,
        outcome: status
            .phase
            .map_or_else(|| "Pending".into(), |p| format!("{p:?}")),
        completes: verdict == Verdict::Completes,
        stopped,
        message: status.message.clone(),
        virtual_duration: duration::format(virtual_duration),
        real_seconds: (real_seconds * 10.0).round() / 10.0,
        time_scale: args.time_scale,
        waves_planned: planned,
        waves_reached: reached,
        clusters_total: counts.total,
        clusters_succeeded: counts.succeeded,
        clusters_failed: counts.failed,
        clusters_rolled_back: counts.rolled_back,
        failures: status
            .failures
            .iter()
            .filter(|f| f.step != CANCELLED_STEP)
            .cloned()
            .collect(),
        cancelled: status
            .failures
            .iter()
            .filter(|f| f.step == CANCELLED_STEP)
            .map(|f| f.cluster.clone())
            .collect(),
        blast_radius: blast_radius(
            &release,
            &components,
            &seen.into_values().collect::<Vec<_>>(),
            copy.spec.clusters.len() as u32,
            copy.nodes,
        ),
        fleet_clusters: copy.spec.clusters.len(),
        fleet_nodes: copy.nodes,
        fallbacks: copy.fallbacks,
        notes: copy.notes,
    };
    Ok((report, verdict))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mk_cluster(name: &str, labels: &[(&str, &str)], node_count: Option<i64>) -> Cluster {
        let mut c: Cluster = serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": name, "uid": "u-1", "resourceVersion": "7"},
            "spec": {"endpoint": {"server": format!("https://{name}.example.test")}},
        }))
        .unwrap();
        c.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        c.status = node_count.map(|n| shoal_core::kinds::ClusterStatus {
            node_count: Some(n),
            ..Default::default()
        });
        c
    }

    fn mk_node(name: &str, zone: &str, kernel: &str, instance: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                ZONE_LABEL: zone, REGION_LABEL: "eu-west-1", INSTANCE_TYPE_LABEL: instance,
                KERNEL_LABEL: kernel.split('.').take(2).collect::<Vec<_>>().join("."),
                "kubernetes.io/hostname": name}},
            "status": {"nodeInfo": {
                "kernelVersion": kernel, "osImage": "Alibaba Cloud Linux 3",
                "kubeletVersion": "v1.30.8", "containerRuntimeVersion": "containerd://1.7.0",
                "architecture": "amd64", "bootID": "", "machineID": "", "systemUUID": "",
                "kubeProxyVersion": "", "operatingSystem": "linux"}},
        }))
        .unwrap()
    }

    fn mk_members() -> Vec<MemberNodes> {
        let old = "5.10.134-16.al8.x86_64";
        let new = "6.6.71-3.al8.x86_64";
        vec![
            MemberNodes {
                cluster: mk_cluster(
                    "prod-1",
                    &[("env", "prod"), ("region", "eu-west-1")],
                    Some(4),
                ),
                // Listed out of order: the copy goes by name.
                nodes: Ok(vec![
                    mk_node("n3", "eu-west-1b", new, "g8"),
                    mk_node("n1", "eu-west-1a", old, "g6"),
                    mk_node("n2", "eu-west-1a", old, "g6"),
                    mk_node("n4", "eu-west-1b", old, "g6"),
                ]),
                workloads: Ok(vec![json!({
                    "apiVersion": "apps/v1", "kind": "DaemonSet",
                    "metadata": {"name": "agent", "namespace": "kube-system", "uid": "x",
                                 "resourceVersion": "9", "annotations": {"shoal.io/last-applied": "{}"}},
                    "spec": {"selector": {}}, "status": {"numberReady": 4},
                })]),
            },
            MemberNodes {
                cluster: mk_cluster("dev-1", &[("env", "dev")], Some(3)),
                nodes: Err("failed to list nodes: connection refused".into()),
                workloads: Ok(Vec::new()),
            },
            MemberNodes {
                cluster: mk_cluster("dev-2", &[("env", "dev")], None),
                nodes: Ok(vec![mk_node("a", "eu-west-1a", new, "g8")]),
                workloads: Err("failed to read DaemonSet kube-system/agent: 500".into()),
            },
        ]
    }

    #[test]
    fn the_copy_keeps_names_labels_and_node_shapes_in_node_order() {
        let copy = fleet_copy(&mk_members());
        assert_eq!(copy.nodes, 4 + 3 + 1);
        let prod = &copy.spec.clusters[0];
        assert_eq!(prod.name, "prod-1");
        assert_eq!(prod.labels["env"], "prod");
        let runs: Vec<(Option<&str>, u32, Option<&str>)> = prod
            .nodes
            .iter()
            .map(|r| (r.profile.as_deref(), r.count, r.zone.as_deref()))
            .collect();
        assert_eq!(
            runs,
            [
                (Some("p1"), 2, Some("eu-west-1a")),
                (Some("p2"), 1, Some("eu-west-1b")),
                (Some("p1"), 1, Some("eu-west-1b")),
            ]
        );
        let p1 = &copy.spec.node_profiles["p1"];
        assert_eq!(
            (
                p1.instance_type.as_str(),
                p1.kernel.as_str(),
                p1.kubelet_version.as_str()
            ),
            ("g6", "5.10.134-16.al8.x86_64", "v1.30.8")
        );
        assert_eq!(p1.labels[KERNEL_LABEL], "5.10");
        assert_eq!(
            copy.spec.node_profiles.len(),
            2,
            "one profile per node shape"
        );

        // The copy is a fleet the simulator takes, node for node.
        let yaml = serde_saphyr::to_string(&copy.spec).unwrap();
        let fleet = shoal_sim::fleet::expand(&FleetSpec::from_yaml(&yaml).unwrap()).unwrap();
        assert_eq!(fleet.node_count(), 8);
        let c = &fleet.clusters[0];
        let kernels: Vec<&str> = c
            .nodes
            .iter()
            .map(|n| c.class_of(*n).labels[KERNEL_LABEL].as_str())
            .collect();
        assert_eq!(kernels, ["5.10", "5.10", "6.6", "5.10"]);
    }

    #[test]
    fn an_unreachable_member_is_copied_with_default_nodes_and_said_so() {
        let copy = fleet_copy(&mk_members());
        let dev = &copy.spec.clusters[1];
        assert_eq!(dev.nodes.len(), 1);
        assert_eq!(
            (dev.nodes[0].profile.clone(), dev.nodes[0].count),
            (None, 3)
        );
        assert_eq!(copy.fallbacks.len(), 1);
        assert_eq!(copy.fallbacks[0].cluster, "dev-1");
        assert!(copy.fallbacks[0].reason.contains("connection refused"));
        // Workloads it could not read are a note, and the nodes still count.
        assert_eq!(copy.spec.clusters[2].nodes[0].count, 1);
        assert_eq!(copy.notes.len(), 1);
        assert!(copy.notes[0].contains("dev-2"), "{:?}", copy.notes);
    }

    #[test]
    fn the_copy_seeds_live_workloads_without_what_the_server_assigned() {
        let copy = fleet_copy(&mk_members());
        let seeds = &copy.seeds["prod-1"];
        assert_eq!(seeds.len(), 1);
        let s = &seeds[0];
        assert_eq!(s["metadata"]["name"], "agent");
        assert_eq!(s["metadata"]["annotations"]["shoal.io/last-applied"], "{}");
        assert!(
            s["metadata"].get("uid").is_none() && s["metadata"].get("resourceVersion").is_none()
        );
        assert!(s.get("status").is_none());
        assert!(!copy.seeds.contains_key("dev-1"));
    }

    fn mk_ledger(cluster: &str, version: &str, nodes: u32, crash: u32) -> ClusterLedger {
        serde_json::from_value(json!({
            "cluster": cluster,
            "workloads": [{
                "apiVersion": "apps.kruise.io/v1alpha1", "kind": "DaemonSet",
                "namespace": "kube-system", "name": "node-agent", "uid": "u",
                "templateVersion": version, "desired": 4, "available": 4,
                "peakUnavailable": {"count": 1, "allowedAtPeak": 1},
                "unavailableFromNodeFaults": {"count": 0},
                "violations": 0,
                "versions": [{"version": version, "nodesEver": nodes, "pods": nodes,
                              "crashLooping": 0, "crashLoopingNodesEver": crash,
                              "crashLoopingNodes": []}],
            }],
        }))
        .unwrap()
    }

    fn mk_release(version: &str) -> Release {
        serde_saphyr::from_str(&format!(
            "apiVersion: shoal.io/v1alpha1\nkind: Release\nmetadata: {{name: r}}\n\
             spec: {{components: [{{name: node-agent, version: \"{version}\"}}]}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_blast_radius_counts_what_ever_ran_the_target_even_after_a_rollback_deleted_it() {
        let mut seen = BTreeMap::new();
        merge_ledgers(
            &mut seen,
            vec![mk_ledger("a", "1.6.0", 4, 0), mk_ledger("b", "1.6.0", 2, 1)],
        );
        // Later: b rolled back to 1.4.0 (its 1.6.0 line gone), a's workload deleted.
        let mut later = mk_ledger("b", "1.4.0", 4, 0);
        later.workloads[0].violations = 2;
        merge_ledgers(
            &mut seen,
            vec![
                ClusterLedger {
                    cluster: "a".into(),
                    workloads: vec![],
                },
                later,
            ],
        );
        let ledgers: Vec<ClusterLedger> = seen.into_values().collect();
        let b = blast_radius(&mk_release("1.6.0"), &[], &ledgers, 5, 20);
        assert_eq!(
            b,
            [BlastRadius {
                component: "node-agent".into(),
                version: "1.6.0".into(),
                clusters: 2,
                clusters_total: 5,
                nodes: 6,
                nodes_total: 20,
                crash_looping_nodes: 1,
                violations: 2,
            }]
        );
    }

    #[test]
    fn the_text_report_names_the_outcome_the_check_and_the_blast_radius() {
        let r = Report {
            release: "agent-1.6.0".into(),
            outcome: "RolledBack".into(),
            completes: false,
            virtual_duration: "45m24s".into(),
            real_seconds: 4.7,
            time_scale: 600.0,
            waves_planned: 4,
            waves_reached: 3,
            clusters_total: 9,
            clusters_rolled_back: 6,
            failures: vec![ClusterFailure {
                cluster: "prod-1".into(),
                step: "node-agent-step-2".into(),
                message: "1 pods crash-looping".into(),
            }],
            blast_radius: vec![BlastRadius {
                component: "node-agent".into(),
                version: "1.6.0".into(),
                clusters: 6,
                clusters_total: 9,
                nodes: 18,
                nodes_total: 36,
                crash_looping_nodes: 3,
                violations: 0,
            }],
            fleet_clusters: 9,
            fleet_nodes: 36,
            cancelled: vec!["prod-2".into()],
            fallbacks: vec![Fallback {
                cluster: "dev-1".into(),
                nodes: 3,
                reason: "connection refused".into(),
            }],
            ..Report::default()
        };
        let text = render_text(&r);
        for want in [
            "Outcome:    RolledBack (it would NOT complete)",
            "Duration:   45m24s virtual (4.7s real)",
            "Waves:      reached 3 of 4 planned",
            "prod-1  node-agent-step-2: 1 pods crash-looping",
            "node-agent 1.6.0: 6/9 clusters, 18/36 nodes, crash-looped on 3 nodes",
            "cluster dev-1 was not reached (connection refused)",
            "Cancelled:  1 in progress when it stopped (prod-2)",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["blastRadius"][0]["crashLoopingNodes"], 3);
        assert_eq!(j["completes"], false);
        assert_eq!(wave_number(Some("3/5")), Some(3));
    }
}
