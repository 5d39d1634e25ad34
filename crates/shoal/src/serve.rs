//! `shoal serve`: a store, the API server and a listener, with graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use shoal_apiserver::metrics::SHOAL_USER;
use shoal_apiserver::private_files;
use shoal_apiserver::{ApiServer, Registry, ServerConfig};
use shoal_store::election::{Elector, ElectorConfig, Fence, Leadership};
use shoal_store::{Store, StoreMetrics};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Where the embedded store keeps its data.
    #[arg(long, default_value = "./shoal-data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7420")]
    pub listen: SocketAddr,
    /// Store backend: `sqlite` (durable, in --data-dir), `memory` (lost on exit), or
    /// `etcd://HOST:PORT[,HOST:PORT…][/NAMESPACE]` (several replicas share one etcd).
    #[arg(long, default_value = "sqlite")]
    pub store: String,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Require `Authorization: Bearer <token>` with a token from this file: one token
    /// (user `admin`), or kube-apiserver's --token-auth-file CSV, a line per user:
    /// `token,user,uid,"group1,group2"` (uid and groups optional). The audit trail names
    /// the user; the kubeconfig shoal writes carries the first token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS, with a CA and serving certificate shoal makes and keeps in
    /// DATA_DIR/pki (the kubeconfig it writes trusts that CA). kubectl sends a bearer
    /// token only over HTTPS. Needs --token-file: kubectl facing an HTTPS server with no
    /// credentials in its kubeconfig stops to ask for a username and password.
    #[arg(long, requires = "token_file")]
    pub tls: bool,
    /// With --tls: another name or IP address the serving certificate is for (besides
    /// localhost, 127.0.0.1, ::1 and the --listen address). Repeatable.
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_san: Vec<String>,
    /// Serve HTTPS with this certificate (PEM: the leaf, then any intermediates) rather
    /// than one shoal makes, as kube-apiserver's --tls-cert-file. The kubeconfig shoal
    /// writes trusts the last certificate of the file's chain, or the system's roots when
    /// the file holds the leaf alone. Needs --tls-private-key-file and --token-file.
    #[arg(long, value_name = "FILE", requires_all = ["tls_private_key_file", "token_file"], conflicts_with = "tls_san")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// With --token-file: leave the simulated member clusters under /clusters/ open to
    /// anonymous reads and writes. Without it they ask for a token of --token-file too
    /// (or the one of --member-token-file alone).
    #[arg(long, requires = "token_file", conflicts_with = "member_token_file")]
    pub anonymous_members: bool,
    /// Seconds a client has from connecting to having sent its first request's headers,
    /// the TLS handshake included (kube-apiserver's server allows 32). A client that
    /// sends nothing, or sends slowly, is disconnected.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub read_header_timeout_seconds: u64,
    /// Seconds a connection with no request in progress stays open for the next one
    /// (kube-apiserver's server: 90, Go clients' keep-alive). A watch is a request in
    /// progress for as long as it lasts: these limits never cut one.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_seconds: u64,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text")]
    pub log_format: String,
    /// Seconds between BOOKMARK events on idle watches.
    #[arg(long, default_value_t = 10)]
    pub bookmark_interval_seconds: u64,
    /// Seconds between history compactions (0 keeps all history). Watches can resume
    /// from any revision newer than one interval ago.
    #[arg(long, default_value_t = 300)]
    pub compaction_interval_seconds: u64,
    /// Run no controllers (the taskflow engine among them): serve the API only.
    #[arg(long)]
    pub no_controllers: bool,
    /// Taskflow: at most this many PipelineRuns run at once, over all namespaces; later
    /// ones wait, oldest first, as `Succeeded=Unknown` with reason `Queued`. Unset: no
    /// limit. (Per pipeline: `Pipeline.spec.maxConcurrentRuns`.)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_running_pipelineruns: Option<u64>,
    /// Taskflow: how long, in real seconds, an idempotent task attempt is run again after
    /// transient failures (a timeout of shoal's own request, a member's 429 or 5xx, a
    /// reset connection) before the task fails. Default 300. Real time, not the
    /// simulated clock: it is about shoal and the member answering.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub transient_retry_budget_seconds: Option<u64>,
    /// Leader election for the controllers: `auto` elects with `--store etcd://…`
    /// (which several replicas share) and not with sqlite or memory (which one process
    /// owns); `on` and `off` force it. Every replica serves the API either way.
    #[arg(long, value_enum, default_value_t = LeaderElect::Auto)]
    pub leader_elect: LeaderElect,
    /// This replica's name in leader elections (the Lease's holderIdentity).
    /// Default: HOSTNAME-PID.
    #[arg(long)]
    pub identity: Option<String>,
    /// Leader election: seconds a leader's lease lasts without renewal (renewed every
    /// third of it). A dead leader's controllers are taken over within about this long.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub leader_ttl_seconds: u64,
    /// Also simulate this many clusters in-process, served at /clusters/NAME and
    /// registered as Cluster objects (quick form; --fleet gives the full form).
    #[arg(long, value_name = "N")]
    pub sim_clusters: Option<u32>,
    /// Nodes per simulated cluster (with --sim-clusters).
    #[arg(long, value_name = "M", default_value_t = 10)]
    pub sim_nodes: u32,
    #[command(flatten)]
    pub sim: crate::sim::FleetFiles,
    /// Seconds between two probes of each member cluster (its Ready condition, version
    /// and node counts in `Cluster.status`).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub probe_interval_seconds: u64,
    /// Probes in a row that must fail before a Ready member cluster is marked not Ready
    /// (as kubelet's failureThreshold): one slow answer is not an outage.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub probe_failure_threshold: u32,
    #[command(flatten)]
    pub member_kubeconfigs: crate::cli::MemberKubeconfigs,
    /// Apply these manifests (like `shoal apply -f`) once the server is up and the
    /// simulated fleet is registered: components, releases… Repeatable.
    #[arg(long, value_name = "FILE")]
    pub apply: Vec<PathBuf>,
}

/// Whether `shoal serve` runs its controllers under leader election.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderElect {
    Auto,
    On,
    Off,
}

/// The role the taskflow controller is elected for: its Lease is
/// `shoal-system/taskflow`.
pub const TASKFLOW_ROLE: &str = "taskflow";

/// How long shutdown waits for the controllers to finish their in-flight reconciles.
const CONTROLLERS_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// TLS and authentication towards etcd, for `--store etcd://…`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EtcdArgs {
    /// etcd: CA certificate (PEM) that signed the etcd servers' certificates; turns TLS on.
    #[arg(long, value_name = "FILE")]
    pub etcd_cacert: Option<PathBuf>,
    /// etcd: client certificate (PEM) for etcd's --client-cert-auth; needs --etcd-key.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// etcd: the client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd: user for etcd's authentication; the password is read from
    /// --etcd-password-file.
    #[arg(long, requires = "etcd_password_file")]
    pub etcd_user: Option<String>,
    /// etcd: file holding the --etcd-user's password (a flag would show it in `ps`).
    #[arg(long, value_name = "FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
}

impl EtcdArgs {
    fn any(&self) -> bool {
        self.etcd_cacert.is_some() || self.etcd_cert.is_some() || self.etcd_user.is_some()
    }
}

/// The user a `--token-file` holding a single token stands for.
pub const SINGLE_TOKEN_USER: &str = "admin";

/// The (token, user) pairs of a `--token-file`: a single token, or kube-apiserver's
/// static token CSV (`token,user,uid,"groups"`), in the file's order.
pub fn read_token_users(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read token file {}", path.display()))?;
    token_users(&text).with_context(|| format!("token file {}", path.display()))
}

fn token_users(text: &str) -> Result<Vec<(String, String)>> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    if lines.is_empty() {
        bail!("it is empty");
    }
    if lines.len() == 1 && !lines[0].1.contains(',') {
        return Ok(vec![(lines[0].1.to_string(), SINGLE_TOKEN_USER.into())]);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut users = Vec::new();
    for (n, line) in lines {
        let mut fields = line.splitn(3, ',').map(str::trim);
        let token = fields.next().unwrap_or_default();
        let user = fields.next().unwrap_or_default().trim_matches('"');
        if token.is_empty() || user.is_empty() {
            bail!("line {n}: want token,user[,uid[,\"groups\"]]");
        }
        if user == SHOAL_USER {
            bail!("line {n}: the user {SHOAL_USER} is shoal's own");
        }
        if !seen.insert(token) {
            bail!("line {n}: the token is on an earlier line too");
        }
        users.push((token.to_string(), user.to_string()));
    }
    Ok(users)
}

pub fn read_token(path: &Path) -> Result<String> {
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read token file {}", path.display()))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    Ok(t)
}

/// The user the fleet driver is on the simulated members when they ask for the control
/// plane's tokens (it presents a token made at each start, which the members alone accept).
pub const FLEET_USER: &str = "system:shoal-fleet";

/// The tokens the simulated members accept (token → user; none: they are open) and the
/// one shoal's fleet driver presents to them:
///
/// - `--member-token-file`: its token alone, for both;
/// - `--token-file` (`users`): every user's token, and one made now for the fleet driver
///   — kept in a Secret any user may read, so it opens the members and nothing else;
/// - no `--token-file`, or `anonymous`: none.
fn member_tokens(
    member_file_token: Option<String>,
    users: Option<&[(String, String)]>,
    anonymous: bool,
) -> (std::collections::BTreeMap<String, String>, Option<String>) {
    if let Some(t) = member_file_token {
        return ([(t.clone(), SINGLE_TOKEN_USER.to_string())].into(), Some(t));
    }
    let Some(users) = users.filter(|_| !anonymous) else {
        return (Default::default(), None);
    };
    let fleet = uuid::Uuid::new_v4().simple().to_string();
    let mut members: std::collections::BTreeMap<String, String> = users.iter().cloned().collect();
    members.insert(fleet.clone(), FLEET_USER.into());
    (members, Some(fleet))
}

/// The address a client on this machine uses for a listener bound to `addr`: the
/// loopback address of the same family when bound to "any" (`0.0.0.0`, `[::]`).
pub(crate) fn client_address(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Base64 of `text`, as a kubeconfig's `certificate-authority-data` holds a PEM bundle.
pub(crate) fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A kubeconfig for `server`, with a bearer token and the CA of an `https://` server
/// (PEM) if given.
pub fn kubeconfig(server: &str, token: Option<&str>, ca_pem: Option<&str>) -> String {
    let user = match token {
        Some(t) => format!("\n    token: {t}"),
        None => " {}".to_string(),
    };
    let ca = ca_pem.map_or(String::new(), |pem| {
        format!("    certificate-authority-data: {}\n", base64_of(pem))
    });
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: shoal\n  cluster:\n{ca}    server: {server}\n\
         contexts:\n- name: shoal\n  context:\n    cluster: shoal\n    user: shoal\n\
         current-context: shoal\nusers:\n- name: shoal\n  user:{user}\n"
    )
}

pub(crate) fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours for a person at a terminal; plain text for files and log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Creates the data directory readable by shoal's user alone (0700), and warns when one
/// that exists lets others in: it holds the store (every Secret), the admin kubeconfig
/// and TLS keys.
///
/// # Errors
/// The directory cannot be created.
pub fn create_data_dir(data_dir: &Path) -> Result<()> {
    private_files::create_dir(data_dir)
        .with_context(|| format!("failed to create data dir {}", data_dir.display()))?;
    if let Some(mode) = private_files::too_open(data_dir) {
        tracing::warn!(
            data_dir = %data_dir.display(),
            mode = %format!("{mode:04o}"),
            "the data directory is open to other users (it holds every Secret, the admin \
             kubeconfig and TLS keys): chmod 700 it"
        );
    }
    Ok(())
}

/// Opens the store named by `kind` (in `data_dir` for SQLite; with `etcd`'s TLS and
/// credentials for `etcd://…`), metered into `metrics`.
pub async fn open_store(
    kind: &str,
    data_dir: &Path,
    etcd: &EtcdArgs,
    metrics: &StoreMetrics,
) -> Result<Store> {
    if etcd.any() && !kind.starts_with("etcd://") {
        bail!("--etcd-* flags are for --store etcd://…, not --store {kind}");
    }
    match kind {
        "sqlite" => {
            create_data_dir(data_dir)?;
            let path = data_dir.join("shoal.db");
            // The database holds every Secret. SQLite would create it 0644 (less the
            // umask), and its -wal and -shm files take the database file's mode: made
            // 0600 here first (or closed, when an older shoal made them), they all are.
            private_files::restrict(&path)
                .and_then(|()| {
                    ["shoal.db-wal", "shoal.db-shm"]
                        .iter()
                        .try_for_each(|f| private_files::restrict_existing(&data_dir.join(f)))
                })
                .with_context(|| format!("failed to make {} private", path.display()))?;
            Store::sqlite_with_metrics(&path, metrics)
                .with_context(|| format!("failed to open the store at {}", path.display()))
        }
        "memory" => Ok(Store::memory().metered(metrics.clone())),
        url if url.starts_with("etcd://") => open_etcd(url, etcd, metrics).await,
        other => bail!("unknown --store {other:?}: expected sqlite, memory or etcd://HOST:PORT"),
    }
}

async fn open_etcd(url: &str, args: &EtcdArgs, metrics: &StoreMetrics) -> Result<Store> {
    use shoal_store::etcd::{EtcdAuth, EtcdOptions, EtcdTls};
    let read = |path: &Path| {
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))
    };
    let mut options = EtcdOptions::from_url(url)?;
    options.tls = match (&args.etcd_cacert, &args.etcd_cert, &args.etcd_key) {
        (None, None, _) => None,
        (None, Some(_), _) => bail!("--etcd-cert needs --etcd-cacert (TLS verifies etcd too)"),
        (Some(ca), cert, key) => Some(EtcdTls {
            ca_pem: read(ca)?,
            identity: match (cert, key) {
                (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                _ => None,
            },
        }),
    };
    options.auth = match (&args.etcd_user, &args.etcd_password_file) {
        (Some(user), Some(file)) => Some(EtcdAuth {
            user: user.clone(),
            password: String::from_utf8(read(file)?)
                .with_context(|| format!("{} is not UTF-8", file.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        }),
        _ => None,
    };
    let store = Store::etcd(options)
        .await
        .with_context(|| format!("failed to open the etcd store at {url}"))?;
    Ok(store.metered(metrics.clone()))
}

pub async fn run(args: ServeArgs) -> Result<()> {
    init_logs(&args.log_format);
    let users = args
        .token_file
        .as_deref()
        .map(read_token_users)
        .transpose()?;
    // The kubeconfig shoal writes carries the file's first token; shoal's own clients
    // use one made now, so the audit trail tells them from people — on a server without
    // --token-file too, where it identifies them without being required of anyone.
    let token = users.as_ref().map(|u| u[0].0.clone());
    let own_token = Some(uuid::Uuid::new_v4().simple().to_string());
    let mut tokens: std::collections::BTreeMap<String, String> =
        users.iter().flatten().cloned().collect();
    if let Some(t) = &own_token {
        tokens.insert(t.clone(), SHOAL_USER.into());
    }
    let store_metrics = StoreMetrics::new();
    let store = open_store(&args.store, &args.data_dir, &args.etcd, &store_metrics).await?;
    let mut registry = prometheus_client::registry::Registry::default();
    store_metrics.register(&mut registry);
    let taskflow_metrics = shoal_controllers::taskflow::Metrics::default();
    taskflow_metrics.register(&mut registry);
    let shutdown = CancellationToken::new();
    let member_file_token = args
        .sim
        .member_token_file
        .as_deref()
        .map(read_token)
        .transpose()?;
    let (member_tokens, member_token) =
        member_tokens(member_file_token, users.as_deref(), args.anonymous_members);
    let config = ServerConfig {
        tokens,
        optional_tokens: users.is_none(),
        member_tokens,
        bookmark_interval: std::time::Duration::from_secs(args.bookmark_interval_seconds.max(1)),
        compaction_interval: (args.compaction_interval_seconds > 0)
            .then(|| std::time::Duration::from_secs(args.compaction_interval_seconds)),
        ..ServerConfig::default()
    };
    let simulated = args.sim_clusters.is_some() || args.sim.fleet.is_some();
    // Virtual time persists with the data it stamped (SQLite in --data-dir).
    let persistent = args.store == "sqlite";
    let resume = persistent
        .then(|| crate::sim::saved_clock(&args.data_dir))
        .flatten();
    let process_clock = crate::sim::clock_from(args.sim.time_scale, simulated, resume)?;
    let clock = process_clock.shared.clone();
    if persistent && process_clock.control.is_some() {
        private_files::create_dir(&args.data_dir)?;
        crate::sim::spawn_clock_saver(clock.clone(), args.data_dir.clone(), shutdown.clone());
    }
    let mut server = ApiServer::new(
        store.clone(),
        Registry::shoal(),
        clock.clone(),
        config,
        registry,
        shutdown.clone(),
    );
    let simulation = if simulated {
        let fleet = crate::sim::load_fleet(
            args.sim.fleet.as_deref(),
            args.sim_clusters.unwrap_or(0),
            args.sim_nodes,
        )?;
        let sim = crate::sim::start(&fleet, &args.sim, clock.clone(), &shutdown)?;
        server = server.with_member_clusters(sim.clone(), shoal_sim::runtime::registry());
        Some(sim)
    } else {
        None
    };
    server
        .ensure_default_namespaces()
        .await
        .context("failed to create the default namespaces")?;
    server.spawn_compactor();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let addr = client_address(listener.local_addr()?);
    if args.store != "sqlite" {
        create_data_dir(&args.data_dir)?;
    }
    let pki = if args.tls || args.tls_cert_file.is_some() {
        let mut hosts = args.tls_san.clone();
        if !args.listen.ip().is_unspecified() {
            hosts.push(args.listen.ip().to_string());
        }
        let dir = args.data_dir.join("pki");
        let mut pki = shoal_apiserver::tls::Pki::self_signed(&dir, &hosts)
            .with_context(|| format!("failed to set up TLS in {}", dir.display()))?;
        if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_private_key_file) {
            pki = pki
                .with_serving_cert(cert, key)
                .context("failed to load --tls-cert-file and --tls-private-key-file")?;
        }
        Some(pki)
    } else {
        None
    };
    // shoal's own clients (controllers, the fleet's registration, --apply, and the fleet
    // driver for simulated members) verify the self-made certificate by the loopback
    // name; users' kubeconfig trusts what users are served.
    let ca_pem = pki.as_ref().map(|p| p.ca_pem.clone());
    let loopback_name = pki
        .as_ref()
        .map(|_| shoal_apiserver::tls::LOOPBACK_SERVER_NAME.to_string());
    let user_ca_pem = pki
        .as_ref()
        .and_then(|p| p.client_ca_pem().map(String::from));
    let url = format!("{}://{addr}", if pki.is_some() { "https" } else { "http" });
    let kubeconfig_path = args.data_dir.join("kubeconfig");
    // The admin's credential: readable by shoal's user alone from its creation.
    private_files::write(
        &kubeconfig_path,
        kubeconfig(&url, token.as_deref(), user_ca_pem.as_deref()).as_bytes(),
    )
    .with_context(|| format!("failed to write {}", kubeconfig_path.display()))?;
    let kubeconfig_path = std::fs::canonicalize(&kubeconfig_path).unwrap_or(kubeconfig_path);
    println!("shoal is serving at {url}");
    println!("kubeconfig: {}", kubeconfig_path.display());
    println!(
        "try: kubectl --kubeconfig {} get clusters",
        kubeconfig_path.display()
    );
    tracing::info!(%url, store = %args.store, data_dir = %args.data_dir.display(), "serving");

    on_signal(shutdown.clone());
    let registration = simulation.clone().map(|sim| {
        let client = loopback_config(&url, own_token.as_deref(), ca_pem.as_deref())
            .and_then(|c| kube::Client::try_from(c).context("failed to build a client"));
        let base = url.clone();
        let access = crate::sim::MemberAccess {
            ca_pem: ca_pem.clone(),
            server_name: loopback_name.clone(),
            token: member_token,
        };
        tokio::spawn(async move {
            match crate::sim::register(&sim, client?, &base, &access).await {
                Ok(n) => {
                    tracing::info!(clusters = n, "simulated clusters registered");
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "failed to register the simulated clusters");
                    Err(e)
                }
            }
        })
    });
    if !args.apply.is_empty() {
        let files = args.apply.clone();
        let ca_file = pki.as_ref().map(|p| p.ca_file.clone());
        let conn = crate::cli::Conn {
            server: url.clone(),
            token: own_token.clone(),
            certificate_authority: ca_file,
            tls_server_name: loopback_name.clone(),
        };
        tokio::spawn(async move {
            // A release planned before the fleet is registered would cover part of it.
            if let Some(r) = registration
                && !matches!(r.await, Ok(Ok(())))
            {
                tracing::error!("not applying --apply files: the fleet is not registered");
                return;
            }
            for f in files {
                let a = crate::cli::ApplyArgs {
                    filename: f.clone(),
                    namespace: "default".into(),
                    conn: conn.clone(),
                };
                if let Err(e) = crate::cli::apply(a).await {
                    tracing::error!(file = %f.display(), error = %format!("{e:#}"), "--apply failed");
                }
            }
        });
    }
    let elect = match args.leader_elect {
        LeaderElect::Auto => args.store.starts_with("etcd://"),
        LeaderElect::On => true,
        LeaderElect::Off => false,
    };
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let kubeconfigs = args.member_kubeconfigs.policy();
    if kubeconfigs == shoal_fleet::KubeconfigPolicy::AllowExecAndFiles {
        tracing::warn!(
            "members' kubeconfigs may run programs and read files on this host ({})",
            shoal_fleet::ALLOW_EXEC_AND_FILES_FLAG
        );
    }
    let settings = Settings {
        taskflow: shoal_controllers::taskflow::Config {
            max_running_runs: args.max_running_pipelineruns.map(|n| n as usize),
            identity: Some(identity.clone()),
            transient_retry_budget: args
                .transient_retry_budget_seconds
                .map(std::time::Duration::from_secs),
            metrics: Some(taskflow_metrics),
        },
        probe: shoal_controllers::cluster::Config {
            interval: std::time::Duration::from_secs(args.probe_interval_seconds),
            failure_threshold: args.probe_failure_threshold,
            ..Default::default()
        },
        kubeconfigs,
    };
    let controllers = if args.no_controllers {
        None
    } else if elect {
        let controllers = Controllers {
            url: url.clone(),
            token: own_token.clone(),
            ca_pem: ca_pem.clone(),
            clock: clock.clone(),
            settings,
        };
        let election = ElectorConfig::new(
            TASKFLOW_ROLE,
            identity,
            std::time::Duration::from_secs(args.leader_ttl_seconds),
        );
        let stop = shutdown.child_token();
        Some(tokio::spawn(
            lead(store, election, controllers, stop)
                .instrument(tracing::info_span!("leader", role = TASKFLOW_ROLE)),
        ))
    } else {
        let c = spawn_controllers(
            &url,
            own_token.as_deref(),
            ca_pem.as_deref(),
            None,
            clock.clone(),
            settings,
            shutdown.child_token(),
        )?;
        Some(tokio::spawn(async move {
            let _ = c.await;
        }))
    };
    // The dashboard's assets are public (they hold no data), outside the token check,
    // so that a browser can load the page that then asks for the token.
    let router = server
        .router_with(crate::sim::routes(&process_clock, simulation))
        .merge(crate::ui::routes());
    let tls = pki
        .as_ref()
        .map(|pki| pki.server_config().context("the TLS configuration"))
        .transpose()?;
    let limits = shoal_apiserver::connection::Limits {
        read_header_timeout: std::time::Duration::from_secs(args.read_header_timeout_seconds),
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout_seconds),
    };
    shoal_apiserver::connection::serve(listener, router, tls, limits, shutdown).await?;
    // Twice the drain: with election, the controllers drain and then the elector resigns.
    if let Some(c) = controllers
        && tokio::time::timeout(2 * CONTROLLERS_DRAIN, c)
            .await
            .is_err()
    {
        tracing::warn!("controllers did not stop within {CONTROLLERS_DRAIN:?}");
    }
    Ok(())
}

/// `HOSTNAME-PID`: unique among replicas on one machine and across machines.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "shoal".into());
    format!("{host}-{}", std::process::id())
}

/// What it takes to start the controllers (no `Debug`: it holds the token).
#[derive(Clone)]
struct Controllers {
    url: String,
    token: Option<String>,
    /// The CA of an `https://` url (PEM).
    ca_pem: Option<String>,
    clock: shoal_core::clock::SharedClock,
    settings: Settings,
}

/// How the controllers pace themselves.
#[derive(Clone, Debug, Default)]
pub(crate) struct Settings {
    pub taskflow: shoal_controllers::taskflow::Config,
    pub probe: shoal_controllers::cluster::Config,
    /// What members' kubeconfigs may make shoal do on its host (every controller and
    /// executor that reaches members).
    pub kubeconfigs: shoal_fleet::KubeconfigPolicy,
}

/// Campaigns for the controllers' role and runs them for exactly as long as this replica
/// leads, until `stop`; then resigns, so another replica takes over at once.
///
/// ```text
///  Follower/Candidate ──Leader{fence}──► start controllers (writes carry the fence)
///        ▲                                   │ term ends: Lost, Follower, new fence,
///        └──── stop controllers, executors ◄─┘ or a write refused as fenced (412)
/// ```
///
/// A term whose write was refused is not resumed, even if the elector has not noticed
/// yet: the controllers start again only in a new term.
async fn lead(
    store: Store,
    election: ElectorConfig,
    controllers: Controllers,
    stop: CancellationToken,
) {
    let identity = election.identity.clone();
    let ttl = election.ttl;
    // Not a child of `stop`: on shutdown the elector resigns only after the controllers
    // have stopped, so that no one else leads while they drain.
    let elector = match Elector::spawn(store, election, CancellationToken::new()) {
        Ok(e) => e,
        Err(err) => {
            tracing::error!(error = %err, "leader election did not start; the controllers will not run");
            return;
        }
    };
    tracing::info!(%identity, ttl_ms = ttl.as_millis() as u64, "campaigning");
    let mut leadership = elector.leadership();
    let mut refused: Option<Fence> = None;
    'terms: loop {
        let fence = loop {
            let now = leadership.borrow_and_update().clone();
            match now {
                Leadership::Leader { fence } if refused.as_ref() != Some(&fence) => break fence,
                Leadership::Stopped => break 'terms,
                _ => {}
            }
            tokio::select! {
                changed = leadership.changed() => if changed.is_err() { break 'terms },
                _ = stop.cancelled() => break 'terms,
            }
        };
        tracing::info!(%identity, term = fence.create_revision, "leading: starting the controllers");
        let term = stop.child_token();
        let mut running = match spawn_controllers(
            &controllers.url,
            controllers.token.as_deref(),
            controllers.ca_pem.as_deref(),
            Some((TASKFLOW_ROLE, &fence)),
            controllers.clock.clone(),
            controllers.settings.clone(),
            term.clone(),
        ) {
            Ok(h) => h,
            Err(err) => {
                tracing::error!(error = %err, "failed to start the controllers");
                break 'terms;
            }
        };
        let (why, exit) = loop {
            tokio::select! {
                changed = leadership.changed() => {
                    if changed.is_err() {
                        break ("the elector stopped".to_string(), None);
                    }
                    let now = leadership.borrow().clone();
                    if now.fence() != Some(&fence) {
                        break (format!("{now:?}"), None);
                    }
                }
                exit = &mut running => break ("the controllers stopped".to_string(), exit.ok()),
                _ = stop.cancelled() => break ("shutting down".to_string(), None),
            }
        };
        term.cancel();
        let exit = match exit {
            Some(e) => Some(e),
            None => tokio::time::timeout(CONTROLLERS_DRAIN, running)
                .await
                .ok()
                .and_then(Result::ok),
        };
        if exit == Some(shoal_controllers::taskflow::Exit::Fenced) {
            refused = Some(fence.clone());
        }
        tracing::warn!(%identity, term = fence.create_revision, reason = %why, ?exit,
            "stopped leading: the controllers stopped");
        if stop.is_cancelled() {
            break;
        }
    }
    elector.resign().await;
    tracing::info!(%identity, "resigned");
}

/// Cancels `stop` on Ctrl-C or SIGTERM.
pub(crate) fn on_signal(stop: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        #[cfg(unix)]
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        stop.cancel();
    });
}

/// The kube-rs config of shoal's own clients of its server at `url`: with TLS (`ca_pem`
/// is the self-made CA) they verify it by [`LOOPBACK_SERVER_NAME`], which the self-made
/// certificate names whatever certificate other clients are served.
///
/// [`LOOPBACK_SERVER_NAME`]: shoal_apiserver::tls::LOOPBACK_SERVER_NAME
fn loopback_config(url: &str, token: Option<&str>, ca_pem: Option<&str>) -> Result<kube::Config> {
    let mut config = crate::cli::kube_config(url, token, ca_pem)?;
    if ca_pem.is_some() {
        config.tls_server_name = Some(shoal_apiserver::tls::LOOPBACK_SERVER_NAME.into());
    }
    Ok(config)
}

/// Starts the in-process controllers against the server's own URL, as any client would
/// reach it (DESIGN.md: controllers talk to shoal's API through kube-rs). With `fence`
/// (a role and its leader term), every request carries it and the API refuses the
/// controllers' writes once the term is over.
pub(crate) fn spawn_controllers(
    url: &str,
    token: Option<&str>,
    ca_pem: Option<&str>,
    fence: Option<(&str, &Fence)>,
    clock: shoal_core::clock::SharedClock,
    settings: Settings,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<shoal_controllers::taskflow::Exit>> {
    let mut config = loopback_config(url, token, ca_pem)?;
    config.headers.push((
        http::HeaderName::from_static("x-shoal-client"),
        http::HeaderValue::from_static(shoal_apiserver::metrics::CONTROLLERS_CLIENT),
    ));
    if let Some((role, fence)) = fence {
        config.headers.push((
            http::HeaderName::from_static(shoal_apiserver::fence::HEADER),
            http::HeaderValue::from_str(&shoal_apiserver::fence::header_value(role, fence))
                .context("the fence is not a header value")?,
        ));
    }
    let client =
        kube::Client::try_from(config).context("failed to build the controllers' client")?;
    let clock = shoal_controllers::Clock::new(clock);
    // One driver for every controller that reaches members: a member has one client,
    // one connection pool and one discovery cache in the process.
    let fleet = std::sync::Arc::new(
        shoal_fleet::Fleet::with_credentials(client.clone()).with_policy(settings.kubeconfigs),
    );
    let executors = shoal_controllers::Registry::builtin_on(fleet.clone());
    tokio::spawn(
        shoal_controllers::release::run(client.clone(), clock.clone(), stop.clone())
            .instrument(tracing::info_span!("controller", name = "release")),
    );
    tokio::spawn(
        shoal_controllers::component::run(
            client.clone(),
            fleet.clone(),
            clock.clone(),
            shoal_controllers::component::Config::default(),
            stop.clone(),
        )
        .instrument(tracing::info_span!("controller", name = "component")),
    );
    tokio::spawn(
        shoal_controllers::cluster::run(
            client.clone(),
            fleet,
            clock.clone(),
            settings.probe,
            stop.clone(),
        )
        .instrument(tracing::info_span!("controller", name = "cluster")),
    );
    Ok(tokio::spawn(
        shoal_controllers::taskflow::run(client, clock, executors, settings.taskflow, stop)
            .instrument(tracing::info_span!("controller", name = "taskflow")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opt_in_to_member_exec_and_files_is_the_flag_refusals_name() {
        use clap::Args;
        let cmd = crate::cli::MemberKubeconfigs::augment_args(clap::Command::new("serve"));
        let flag = shoal_fleet::ALLOW_EXEC_AND_FILES_FLAG;
        let m = cmd.try_get_matches_from(["serve", flag]).unwrap();
        let kc = crate::cli::MemberKubeconfigs {
            allow_member_kubeconfig_exec_and_files: m
                .get_flag("allow_member_kubeconfig_exec_and_files"),
        };
        assert_eq!(
            kc.policy(),
            shoal_fleet::KubeconfigPolicy::AllowExecAndFiles
        );
        assert_eq!(
            crate::cli::MemberKubeconfigs::default().policy(),
            shoal_fleet::KubeconfigPolicy::InlineOnly
        );
    }

    #[test]
    fn a_token_file_is_one_token_or_kube_apiservers_csv_of_users() {
        assert_eq!(
            token_users("  s3cret \n").unwrap(),
            [("s3cret".to_string(), "admin".to_string())]
        );
        let csv = "t-alice,alice,1001,\"sre,oncall\"\n\nt-bob,\"bob\"\n";
        assert_eq!(
            token_users(csv).unwrap(),
            [
                ("t-alice".to_string(), "alice".to_string()),
                ("t-bob".to_string(), "bob".to_string())
            ]
        );
        for (bad, why) in [
            ("", "empty"),
            ("t-1,alice\nt-2\n", "line 2"),
            ("t-1,alice\nt-1,bob\n", "earlier line"),
            ("t-1,system:shoal\n", "shoal's own"),
        ] {
            let e = format!("{:#}", token_users(bad).unwrap_err());
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn members_ask_for_the_control_planes_tokens_unless_opened_or_given_their_own() {
        let users = [("t-alice".to_string(), "alice".to_string())];
        let (members, fleet) = member_tokens(None, Some(&users), false);
        let fleet = fleet.expect("the fleet driver has a token");
        assert_eq!(members.get("t-alice").map(String::as_str), Some("alice"));
        assert_eq!(members.get(&fleet).map(String::as_str), Some(FLEET_USER));
        assert_eq!(members.len(), 2);

        let (members, fleet) = member_tokens(None, Some(&users), true);
        assert!(
            members.is_empty() && fleet.is_none(),
            "opened by --anonymous-members"
        );
        let (members, fleet) = member_tokens(None, None, false);
        assert!(
            members.is_empty() && fleet.is_none(),
            "a server without tokens"
        );

        let (members, fleet) = member_tokens(Some("m".into()), Some(&users), false);
        assert_eq!(fleet.as_deref(), Some("m"));
        assert_eq!(
            members.keys().collect::<Vec<_>>(),
            ["m"],
            "their own token alone"
        );
    }

    #[test]
    fn clients_reach_a_wildcard_listener_on_loopback() {
        let any: std::net::SocketAddr = "0.0.0.0:7420".parse().unwrap();
        assert_eq!(client_address(any).to_string(), "127.0.0.1:7420");
        let any6: std::net::SocketAddr = "[::]:7420".parse().unwrap();
        assert_eq!(client_address(any6).to_string(), "[::1]:7420");
        let one: std::net::SocketAddr = "10.1.2.3:7420".parse().unwrap();
        assert_eq!(client_address(one), one);
    }

    #[test]
    fn kubeconfig_without_token_has_an_empty_user() {
        let k = kubeconfig("http://127.0.0.1:1", None, None);
        assert!(k.contains("server: http://127.0.0.1:1"));
        assert!(k.contains("user: {}"), "{k}");
        let k = kubeconfig("http://x", Some("s3cret"), None);
        assert!(k.contains("token: s3cret"), "{k}");
        let k = kubeconfig("https://x", None, Some("PEM"));
        assert!(
            k.contains("    certificate-authority-data: UEVN\n    server: https://x"),
            "{k}"
        );
    }
}
