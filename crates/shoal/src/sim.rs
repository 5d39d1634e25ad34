//! The simulated fleet in the binary: `shoal sim` (standalone) and `shoal serve --sim-…`
//! (in-process), loading fleet and fault files, the virtual clock, registering every
//! simulated cluster as a `Cluster` object.
//!
//! ```text
//!  --clusters/--nodes | --fleet FLEET.yaml ──▶ fleet::Fleet ──▶ Simulation (drivers spawned)
//!  --faults FAULTS.yaml ──(re-read when the file changes)──▶ FaultModel
//!  ApiServer.with_member_clusters(simulation) ──▶ /clusters/{name}/…
//!  register(): Cluster {name, attribute labels, spec.endpoint.server = URL/clusters/{name}}
//!  /sim/clock (the virtual clock), /sim/history (every cluster's ledger: what happened)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use shoal_core::clock::{ScaledClock, SharedClock, SystemClock};
use shoal_core::kinds::{Cluster, ClusterSpec, CredentialsRef, Endpoint};
use shoal_sim::Simulation;
use shoal_sim::faults::{FaultModel, FaultProfile};
use shoal_sim::fleet::{self, Fleet, FleetSpec};
use shoal_sim::runtime::SimConfig;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How often the fault file is checked for changes.
const FAULTS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// How many Cluster objects are registered at once: enough to fill the store's group
/// commits, few enough not to queue thousands of requests.
const REGISTER_CONCURRENCY: usize = 64;

/// The label marking a Cluster object as simulated.
pub const SIMULATED_LABEL: &str = "shoal.io/simulated";

/// The fleet and faults of a simulation (shared by `shoal sim` and `shoal serve`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FleetFiles {
    /// Fleet definition (YAML): cluster groups, regions, node profiles. See
    /// examples/fleet.yaml.
    #[arg(long, value_name = "FLEET.yaml")]
    pub fleet: Option<PathBuf>,
    /// Fault profile (YAML), re-read when the file changes. See examples/faults.yaml.
    #[arg(long, value_name = "FAULTS.yaml")]
    pub faults: Option<PathBuf>,
    /// Virtual time runs this many times faster than real time (60: a minute per
    /// second). Everything in the process uses this clock.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// The simulated member clusters ask for this bearer token (a file holding it), as
    /// real members ask for credentials. Their Clusters are registered with a
    /// `credentialsRef` to the Secret `shoal-system/simulated-members`, which holds a
    /// kubeconfig with the token.
    #[arg(long, value_name = "FILE")]
    pub member_token_file: Option<PathBuf>,
}

/// The Secret (in `shoal-system`) with the kubeconfig of simulated members that ask for a
/// token (`--member-token-file`).
pub const MEMBER_CREDENTIALS: &str = "simulated-members";

/// `shoal sim`: a standalone simulated fleet.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Number of simulated clusters (quick form; --fleet gives the full form).
    #[arg(long, default_value_t = 3)]
    pub clusters: u32,
    /// Nodes per cluster (quick form).
    #[arg(long, default_value_t = 10)]
    pub nodes: u32,
    /// Address to listen on; clusters are served at http://ADDR/clusters/NAME.
    #[arg(long, default_value = "127.0.0.1:7421")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub files: FleetFiles,
    /// Register the clusters as `Cluster` objects in this shoal control plane (its URL);
    /// without it they are registered in the simulator's own top-level API.
    #[arg(long, value_name = "URL")]
    pub control_plane: Option<String>,
    /// Bearer token file for --control-plane.
    #[arg(long)]
    pub control_plane_token_file: Option<PathBuf>,
    /// The CA (PEM) of an `https://` control plane (`shoal serve --tls` keeps it in
    /// DATA_DIR/pki/ca.crt).
    #[arg(long, value_name = "FILE", requires = "control_plane")]
    pub control_plane_ca: Option<PathBuf>,
}

/// The process clock, and its controls when it is virtual.
#[derive(Clone, Debug)]
pub struct ProcessClock {
    pub shared: SharedClock,
    /// Present when time is virtual (a simulation runs, or `--time-scale` is not 1):
    /// `/sim/clock` and `shoal clock` change its speed, pause it or step it.
    pub control: Option<ScaledClock>,
}

/// The process clock: real time, or virtual time at `--time-scale` (always virtual with a
/// simulation, so it can be paused and stepped).
pub fn clock(time_scale: f64, simulated: bool) -> Result<ProcessClock> {
    clock_from(time_scale, simulated, None)
}

/// [`clock`], with virtual time resuming from `resume` if that is later than now (a
/// restarted server continues the virtual time its stored objects were written in).
pub fn clock_from(
    time_scale: f64,
    simulated: bool,
    resume: Option<Timestamp>,
) -> Result<ProcessClock> {
    if !(time_scale.is_finite() && time_scale > 0.0) {
        bail!("--time-scale {time_scale}: must be a positive number");
    }
    if !simulated && (time_scale - 1.0).abs() < f64::EPSILON {
        return Ok(ProcessClock {
            shared: Arc::new(SystemClock),
            control: None,
        });
    }
    let real: SharedClock = Arc::new(SystemClock);
    let start = resume.map_or(real.now(), |r| r.max(real.now()));
    let scaled = ScaledClock::new(real, start, time_scale)
        .map_err(|e| anyhow::anyhow!("--time-scale {time_scale}: {e}"))?;
    Ok(ProcessClock {
        shared: Arc::new(scaled.clone()),
        control: Some(scaled),
    })
}

/// The file in the data dir where virtual time is saved.
const CLOCK_FILE: &str = "virtual-clock";

/// How often virtual time is saved: a restart resumes at most this much real time back.
const CLOCK_SAVE_INTERVAL: Duration = Duration::from_secs(2);

/// The virtual time saved in `data_dir` by a previous run, if any.
pub fn saved_clock(data_dir: &Path) -> Option<Timestamp> {
    std::fs::read_to_string(data_dir.join(CLOCK_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Saves the virtual time in `data_dir` every [`CLOCK_SAVE_INTERVAL`] (and once at
/// shutdown), so that a restarted server resumes it instead of starting over from real
/// time, which would put every object it stored in the future.
pub fn spawn_clock_saver(clock: SharedClock, data_dir: PathBuf, stop: CancellationToken) {
    let save = move |clock: &SharedClock| {
        // Written whole, then renamed into place, private as the rest of the data dir.
        let res = shoal_apiserver::private_files::write(
            &data_dir.join(CLOCK_FILE),
            clock.now().to_string().as_bytes(),
        );
        if let Err(e) = res {
            tracing::warn!(error = %e, "failed to save the virtual clock");
        }
    };
    tokio::spawn(
        async move {
            loop {
                let stopping = tokio::select! {
                    () = tokio::time::sleep(CLOCK_SAVE_INTERVAL) => false,
                    () = stop.cancelled() => true,
                };
                save(&clock);
                if stopping {
                    return;
                }
            }
        }
        .instrument(tracing::info_span!("clock_saver")),
    );
}

/// What `/sim/clock` shows and accepts.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
    /// Virtual seconds per real second; 0 pauses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Step virtual time forward by this duration (`10m`), on a PUT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance: Option<String>,
}

fn clock_state(c: &ScaledClock) -> ClockState {
    use shoal_core::clock::Clock;
    ClockState {
        now: Some(c.now().to_string()),
        scale: Some(c.factor()),
        advance: None,
    }
}

/// The simulator's own routes, beside the Kubernetes API: [`clock_routes`] (when the
/// clock is controllable) and [`history_routes`] (when a fleet is simulated).
pub fn routes(clock: &ProcessClock, sim: Option<Arc<Simulation>>) -> axum::Router {
    clock_routes(clock.control.clone()).merge(history_routes(sim))
}

/// `GET /sim/clock` (now and speed) and `PUT /sim/clock` (`{"scale": 0}` pauses,
/// `{"scale": 60}` runs a minute per second, `{"advance": "10m"}` steps).
pub fn clock_routes(control: Option<ScaledClock>) -> axum::Router {
    use axum::Json;
    use axum::http::StatusCode;
    use axum::routing::get;
    let Some(control) = control else {
        return axum::Router::new();
    };
    let get_clock = control.clone();
    axum::Router::new().route(
        "/sim/clock",
        get(move || {
            let c = get_clock.clone();
            async move { Json(clock_state(&c)) }
        })
        .put(move |Json(req): Json<ClockState>| {
            let c = control.clone();
            async move {
                let bad = |msg: String| {
                    (
                        StatusCode::BAD_REQUEST,
                        Json(serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "BadRequest", "code": 400, "message": msg})),
                    )
                };
                if let Some(scale) = req.scale
                    && let Err(e) = c.set_factor(scale)
                {
                    return Err(bad(format!("scale: {e}")));
                }
                if let Some(text) = &req.advance {
                    let d = shoal_core::taskflow::duration::parse(text)
                        .map_err(|e| bad(format!("advance: {text:?} is not a duration: {e}")))?;
                    c.advance(d);
                }
                Ok(Json(clock_state(&c)))
            }
        }),
    )
}

/// `GET /sim/history`: every simulated cluster's ledger (`shoal_sim::ledger`: per workload,
/// its versions, where they ran and crash-looped, its peak unavailability against its
/// budget) as `{"now": virtual time, "clusters": [ClusterLedger…]}`;
/// `GET /sim/history?cluster=NAME`: that cluster's `ClusterLedger`, or a 404 `Status`.
pub fn history_routes(sim: Option<Arc<Simulation>>) -> axum::Router {
    use axum::Json;
    use axum::extract::Query;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;
    #[derive(serde::Deserialize)]
    struct Which {
        cluster: Option<String>,
    }
    let Some(sim) = sim else {
        return axum::Router::new();
    };
    let history = move |Query(which): Query<Which>| {
        let sim = sim.clone();
        async move {
            let Some(name) = which.cluster else {
                let now = sim.clock().now();
                return Json(serde_json::json!({"now": now, "clusters": sim.ledgers()}))
                    .into_response();
            };
            match sim.ledger(&name) {
                Some(ledger) => Json(ledger).into_response(),
                None => (
                    StatusCode::NOT_FOUND,
                    Json(serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "NotFound", "code": 404,
                        "details": {"name": name, "kind": "clusters"},
                        "message": format!("simulated cluster \"{name}\" not found")})),
                )
                    .into_response(),
            }
        }
    };
    axum::Router::new().route("/sim/history", get(history))
}

/// The fleet to simulate: the file's, else `clusters` × `nodes`.
pub fn load_fleet(file: Option<&Path>, clusters: u32, nodes: u32) -> Result<Fleet> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read fleet file {}", path.display()))?;
            let spec = FleetSpec::from_yaml(&text)
                .with_context(|| format!("fleet file {}", path.display()))?;
            fleet::expand(&spec).with_context(|| format!("fleet file {}", path.display()))
        }
        None => Ok(fleet::uniform(clusters, nodes)),
    }
}

fn load_faults(path: &Path, epoch: Timestamp) -> Result<FaultModel> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read fault profile {}", path.display()))?;
    let profile = FaultProfile::from_yaml(&text)
        .with_context(|| format!("fault profile {}", path.display()))?;
    FaultModel::compile(&profile, epoch)
        .with_context(|| format!("fault profile {}", path.display()))
}

/// Builds the simulation, loads its faults and starts its drivers (and the fault file
/// watcher); everything stops on `stop`.
pub fn start(
    fleet: &Fleet,
    files: &FleetFiles,
    clock: SharedClock,
    stop: &CancellationToken,
) -> Result<Arc<Simulation>> {
    let epoch = clock.now();
    let started = std::time::Instant::now();
    let sim = Arc::new(Simulation::build(fleet, clock, SimConfig::default()));
    if let Some(path) = &files.faults {
        sim.set_faults(load_faults(path, epoch)?);
        spawn_fault_reloader(sim.clone(), path.clone(), epoch, stop.child_token());
    }
    let mut drivers = sim.spawn(stop);
    tokio::spawn(async move { while drivers.join_next().await.is_some() {} });
    tracing::info!(
        clusters = fleet.clusters.len(),
        nodes = fleet.node_count(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "simulated fleet started"
    );
    Ok(sim)
}

/// Re-reads the fault profile whenever its modification time changes.
fn spawn_fault_reloader(
    sim: Arc<Simulation>,
    path: PathBuf,
    epoch: Timestamp,
    stop: CancellationToken,
) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last: Option<SystemTime> = modified(&path);
    let span = tracing::info_span!("sim_faults", path = %path.display());
    tokio::spawn(
        async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(FAULTS_RELOAD_INTERVAL) => {}
                    () = stop.cancelled() => return,
                }
                let now = modified(&path);
                if now == last {
                    continue;
                }
                last = now;
                match load_faults(&path, epoch) {
                    Ok(model) => {
                        sim.set_faults(model);
                        tracing::info!("fault profile reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "fault profile not reloaded")
                    }
                }
            }
        }
        .instrument(span),
    );
}

/// The `Cluster` object of a simulated cluster reached at `base`/clusters/`name`.
/// How the control plane's fleet driver reaches the simulated members: for an
/// `https://` base the CA (PEM) and the name the serving certificate is checked against
/// when it is not the base's host, and the members' bearer token if they ask for one.
#[derive(Clone, Debug, Default)]
pub struct MemberAccess {
    pub ca_pem: Option<String>,
    pub server_name: Option<String>,
    pub token: Option<String>,
}

pub fn cluster_object(
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
    base: &str,
    access: &MemberAccess,
) -> Cluster {
    let mut c = Cluster::new(
        name,
        ClusterSpec {
            endpoint: Endpoint {
                server: format!("{}/clusters/{name}", base.trim_end_matches('/')),
                certificate_authority_data: access.ca_pem.as_deref().map(crate::serve::base64_of),
                insecure_skip_tls_verify: None,
                tls_server_name: access.server_name.clone(),
            },
            credentials_ref: access.token.as_ref().map(|_| CredentialsRef {
                name: MEMBER_CREDENTIALS.into(),
                namespace: None,
                key: None,
            }),
        },
    );
    let mut l = labels.clone();
    l.insert(SIMULATED_LABEL.into(), "true".into());
    c.metadata.labels = Some(l);
    c
}

/// Registers every simulated cluster as a `Cluster` in the control plane `client` talks
/// to (created, or updated in place when it exists). Returns how many were registered.
///
/// # Errors
/// The first request that failed for another reason than "already exists".
/// `access` says how the members at `base` are reached; when they ask for a token, the
/// Secret with their kubeconfig is written first.
pub async fn register(
    sim: &Simulation,
    client: kube::Client,
    base: &str,
    access: &MemberAccess,
) -> Result<usize> {
    if let Some(token) = &access.token {
        write_member_credentials(&client, base, token, access.ca_pem.as_deref()).await?;
    }
    let api: Api<Cluster> = Api::all(client);
    let objects: Vec<(Cluster, usize)> = sim
        .members()
        .iter()
        .map(|m| {
            let nodes = m
                .cluster
                .read(|s| s.range("/registry/core/nodes/", None).count());
            (
                cluster_object(m.cluster.name(), &m.labels, base, access),
                nodes,
            )
        })
        .collect();
    let results: Vec<Result<()>> = futures::stream::iter(objects)
        .map(|(obj, nodes)| {
            let api = api.clone();
            async move {
                let name = obj.metadata.name.clone().unwrap_or_default();
                let status = serde_json::json!({"status": {"nodeCount": nodes}});
                let registered = match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        let patch = serde_json::json!({
                            "metadata": {"labels": obj.metadata.labels},
                            "spec": obj.spec,
                        });
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .map(|_| ())
                            .with_context(|| format!("failed to update cluster {name}"))
                    }
                    Err(e) => Err(e).with_context(|| format!("failed to register cluster {name}")),
                };
                registered?;
                // What the fleet knows about the cluster (a probe will report it for real
                // clusters): planning weighs clusters by size.
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .map(|_| ())
                    .with_context(|| format!("failed to report the status of cluster {name}"))
            }
        })
        .buffer_unordered(REGISTER_CONCURRENCY)
        .collect()
        .await;
    let n = results.len();
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(n)
}

/// Creates or replaces the Secret `shoal-system/simulated-members`: a kubeconfig with
/// the members' token (and CA), as an operator stores a real member's credentials.
async fn write_member_credentials(
    client: &kube::Client,
    base: &str,
    token: &str,
    ca_pem: Option<&str>,
) -> Result<()> {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let api: Api<Secret> = Api::namespaced(client.clone(), shoal_fleet::CREDENTIALS_NAMESPACE);
    let kubeconfig = crate::serve::kubeconfig(base, Some(token), ca_pem);
    let mut secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(MEMBER_CREDENTIALS.into()),
            ..Default::default()
        },
        data: Some(
            [(
                shoal_fleet::CREDENTIALS_KEY.to_string(),
                ByteString(kubeconfig.into_bytes()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    let what = || {
        format!(
            "failed to write Secret {}/{MEMBER_CREDENTIALS}",
            shoal_fleet::CREDENTIALS_NAMESPACE
        )
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let live = api.get(MEMBER_CREDENTIALS).await.with_context(what)?;
            secret.metadata.resource_version = live.metadata.resource_version;
            api.replace(MEMBER_CREDENTIALS, &PostParams::default(), &secret)
                .await
                .map(drop)
                .with_context(what)
        }
        Err(e) => Err(e).with_context(what),
    }
}

/// A kube client for `url` with an optional bearer token (and the CA of an `https://`
/// server, PEM).
pub fn client(url: &str, token: Option<&str>, ca_pem: Option<&str>) -> Result<kube::Client> {
    kube::Client::try_from(crate::cli::kube_config(url, token, ca_pem)?)
        .context("failed to build a client")
}

/// `shoal sim`.
pub async fn run(args: SimArgs) -> Result<()> {
    crate::serve::init_logs("text");
    let process_clock = clock(args.files.time_scale, true)?;
    let clock = process_clock.shared.clone();
    let fleet = load_fleet(args.files.fleet.as_deref(), args.clusters, args.nodes)?;
    if fleet.clusters.is_empty() {
        bail!("the fleet has no clusters");
    }
    let shutdown = CancellationToken::new();
    let sim = start(&fleet, &args.files, clock.clone(), &shutdown)?;
    // The simulator's own top level: shoal's kinds in memory, so `kubectl get clusters`
    // against it lists the fleet when no control plane is given.
    let member_token = args
        .files
        .member_token_file
        .as_deref()
        .map(crate::serve::read_token)
        .transpose()?;
    let server = shoal_apiserver::ApiServer::new(
        shoal_store::Store::memory(),
        shoal_apiserver::Registry::shoal(),
        clock.clone(),
        shoal_apiserver::ServerConfig {
            member_tokens: member_token
                .iter()
                .map(|t| (t.clone(), crate::serve::SINGLE_TOKEN_USER.to_string()))
                .collect(),
            ..shoal_apiserver::ServerConfig::default()
        },
        prometheus_client::registry::Registry::default(),
        shutdown.clone(),
    )
    .with_member_clusters(sim.clone(), shoal_sim::runtime::registry());
    server
        .ensure_default_namespaces()
        .await
        .context("failed to create the default namespaces")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let url = format!(
        "http://{}",
        crate::serve::client_address(listener.local_addr()?)
    );
    let first = fleet.clusters[0].name.clone();
    println!(
        "simulating {} clusters ({} nodes) at {url}/clusters/NAME",
        fleet.clusters.len(),
        fleet.node_count()
    );
    println!("try: kubectl --server {url}/clusters/{first} get nodes");
    let stop = shutdown.clone();
    crate::serve::on_signal(stop);
    let serving = tokio::spawn(shoal_apiserver::serve(
        listener,
        server.router_with(routes(&process_clock, Some(sim.clone()))),
        shutdown.clone(),
    ));
    let (target, token) = match &args.control_plane {
        Some(cp) => (
            cp.clone(),
            args.control_plane_token_file
                .as_deref()
                .map(crate::serve::read_token)
                .transpose()?,
        ),
        None => (url.clone(), None),
    };
    let ca = crate::cli::read_ca(args.control_plane_ca.as_deref())?;
    let n = register(
        &sim,
        client(&target, token.as_deref(), ca.as_deref())?,
        &url,
        &MemberAccess {
            token: member_token,
            ..MemberAccess::default()
        },
    )
    .await
    .with_context(|| format!("failed to register the fleet at {target}"))?;
    println!("registered {n} Cluster objects at {target}");
    serving.await??;
    Ok(())
}

/// `shoal bench sim`: what a simulated fleet costs.
#[derive(clap::Args, Debug, Clone)]
pub struct SimBench {
    /// Fleet sizes (clusters) to measure, each in a fresh child process so RSS is its own.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub clusters: Vec<u32>,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 100)]
    pub nodes: u32,
    /// Virtual time speed for the rollout.
    #[arg(long, default_value_t = 60.0)]
    pub time_scale: f64,
    /// Give up on a rollout after this many real seconds (and report how far it got).
    #[arg(long, default_value_t = 300)]
    pub rollout_timeout_seconds: u64,
    /// Measure one size in this process (what the parent runs in each child).
    #[arg(long, hide = true)]
    pub single: bool,
}

/// The resident set size of this process, from /proc (Linux).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The bench DaemonSet: a node agent on every node, 10% of nodes at a time.
fn bench_daemonset(image: &str, generation: i64) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "node-agent", "namespace": "kube-system", "generation": generation,
                     "uid": "6c1f6a52-0000-4000-8000-00000000bec4",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "selector": {"matchLabels": {"app": "node-agent"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {"metadata": {"labels": {"app": "node-agent"}},
                         "spec": {"containers": [{"name": "agent", "image": image}]}}
        }
    })
}

/// Writes the bench DaemonSet (`image`, `generation`) into every cluster.
async fn put_daemonset(sim: &Simulation, image: &str, generation: i64) -> Result<()> {
    let key = "/registry/apps/daemonsets/kube-system/node-agent";
    for m in sim.members() {
        let store = m.cluster.store();
        let mut obj = bench_daemonset(image, generation);
        if let Some(kv) = store.get(key).await? {
            let old: serde_json::Value = serde_json::from_slice(&kv.value)?;
            obj["status"] = old["status"].clone();
        }
        store
            .put(
                key,
                bytes::Bytes::from(obj.to_string()),
                shoal_store::Precondition::None,
                None,
            )
            .await?;
    }
    Ok(())
}

/// How many clusters finished rolling out `generation`.
async fn converged(sim: &Simulation, generation: i64) -> Result<usize> {
    let key = "/registry/apps/daemonsets/kube-system/node-agent";
    let mut done = 0;
    for m in sim.members() {
        let Some(kv) = m.cluster.store().get(key).await? else {
            continue;
        };
        let ds: serde_json::Value = serde_json::from_slice(&kv.value)?;
        let s = &ds["status"];
        let desired = s["desiredNumberScheduled"].as_i64().unwrap_or(-1);
        if s["observedGeneration"].as_i64() == Some(generation)
            && desired > 0
            && s["updatedNumberScheduled"].as_i64() == Some(desired)
            && s["numberAvailable"].as_i64() == Some(desired)
        {
            done += 1;
        }
    }
    Ok(done)
}

/// One size's figures.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SimFigures {
    clusters: u32,
    nodes: u64,
    startup_s: f64,
    rss_mib: f64,
    bytes_per_node: f64,
    first_rollout_s: f64,
    update_s: f64,
    update_converged: usize,
    rss_after_mib: f64,
}

async fn bench_one(args: &SimBench, clusters: u32) -> Result<SimFigures> {
    let before = rss_bytes();
    let t0 = std::time::Instant::now();
    let fleet = fleet::uniform(clusters, args.nodes);
    let clock = clock(args.time_scale, true)?.shared;
    let sim = Arc::new(Simulation::build(&fleet, clock, SimConfig::default()));
    let stop = CancellationToken::new();
    let mut drivers = sim.spawn(&stop);
    let startup = t0.elapsed();
    let rss = rss_bytes();
    let nodes = fleet.node_count() as u64;
    drop(fleet);
    let limit = Duration::from_secs(args.rollout_timeout_seconds);
    let rollout = async |image: &str, generation: i64| -> Result<(f64, usize)> {
        let t = std::time::Instant::now();
        put_daemonset(&sim, image, generation).await?;
        loop {
            let n = converged(&sim, generation).await?;
            if n == sim.members().len() || t.elapsed() > limit {
                return Ok((t.elapsed().as_secs_f64(), n));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (first, _) = rollout("registry.example.com/node-agent:v1", 1).await?;
    let (update, converged_clusters) = rollout("registry.example.com/node-agent:v2", 2).await?;
    let rss_after = rss_bytes();
    stop.cancel();
    while drivers.join_next().await.is_some() {}
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    Ok(SimFigures {
        clusters,
        nodes,
        startup_s: startup.as_secs_f64(),
        rss_mib: mib(rss),
        bytes_per_node: rss.saturating_sub(before) as f64 / nodes.max(1) as f64,
        first_rollout_s: first,
        update_s: update,
        update_converged: converged_clusters,
        rss_after_mib: mib(rss_after),
    })
}

/// `shoal bench sim`.
pub async fn bench(args: SimBench) -> Result<()> {
    if args.single {
        let clusters = *args.clusters.first().context("--clusters is empty")?;
        let figures = bench_one(&args, clusters).await?;
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    println!(
        "simulated fleet: {} nodes per cluster, one DaemonSet pod per node, rollout of a new \
         version at maxUnavailable 10% per cluster, {}× virtual time",
        args.nodes, args.time_scale
    );
    println!(
        "{:>8} {:>10} {:>10} {:>9} {:>11} {:>12} {:>14} {:>14}",
        "clusters",
        "nodes",
        "startup",
        "RSS",
        "bytes/node",
        "first ds",
        "update (real)",
        "RSS after"
    );
    let exe = std::env::current_exe()?;
    for clusters in &args.clusters {
        let out = tokio::process::Command::new(&exe)
            .args([
                "bench",
                "sim",
                "--single",
                "--clusters",
                &clusters.to_string(),
            ])
            .args(["--nodes", &args.nodes.to_string()])
            .args(["--time-scale", &args.time_scale.to_string()])
            .args([
                "--rollout-timeout-seconds",
                &args.rollout_timeout_seconds.to_string(),
            ])
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "bench sim --clusters {clusters} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let f: SimFigures = serde_json::from_slice(
            out.stdout
                .split(|b| *b == b'\n')
                .rfind(|l| !l.is_empty())
                .unwrap_or_default(),
        )?;
        let update = if f.update_converged == f.clusters as usize {
            format!("{:.1} s", f.update_s)
        } else {
            format!(
                "{}/{} in {:.0} s",
                f.update_converged, f.clusters, f.update_s
            )
        };
        println!(
            "{:>8} {:>10} {:>8.2} s {:>5.0} MiB {:>11.0} {:>10.1} s {:>14} {:>10.0} MiB",
            f.clusters,
            f.nodes,
            f.startup_s,
            f.rss_mib,
            f.bytes_per_node,
            f.first_rollout_s,
            update,
            f.rss_after_mib
        );
    }
    Ok(())
}

/// `shoal clock`: show, pause, speed up or step a simulation's virtual clock.
#[derive(clap::Args, Debug, Clone)]
pub struct ClockArgs {
    /// Virtual seconds per real second (0 pauses).
    #[arg(long)]
    pub scale: Option<f64>,
    /// Pause virtual time (same as --scale 0).
    #[arg(long, conflicts_with = "scale")]
    pub pause: bool,
    /// Step virtual time forward (`10m`, `1h30m`).
    #[arg(long)]
    pub advance: Option<String>,
    #[command(flatten)]
    pub conn: crate::cli::Conn,
}

/// `shoal clock`.
pub async fn clock_command(args: ClockArgs) -> Result<()> {
    let url = format!("{}/sim/clock", args.conn.server.trim_end_matches('/'));
    let http = reqwest::Client::new();
    let with_token = |r: reqwest::RequestBuilder| match &args.conn.token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let change = ClockState {
        now: None,
        scale: if args.pause { Some(0.0) } else { args.scale },
        advance: args.advance.clone(),
    };
    let req = if change.scale.is_some() || change.advance.is_some() {
        with_token(http.put(&url).json(&change))
    } else {
        with_token(http.get(&url))
    };
    let resp = req
        .send()
        .await
        .with_context(|| format!("failed to reach {url}"))?;
    let status = resp.status();
    let body = resp.text().await?;
    if status == reqwest::StatusCode::NOT_FOUND {
        bail!("{url}: this server runs on real time (no simulation, --time-scale 1)");
    }
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(String::from))
            .unwrap_or(body);
        bail!("{status}: {msg}");
    }
    let state: ClockState = serde_json::from_str(&body)?;
    println!(
        "now {} at {}× real time",
        state.now.unwrap_or_default(),
        state.scale.unwrap_or_default()
    );
    Ok(())
}
