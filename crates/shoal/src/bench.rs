//! `shoal bench …`: benchmarks that print figures (never timed tests).
//!
//! `shoal bench api` measures, in one run:
//! 1. acknowledged creates/s and latency through HTTP with N concurrent clients, and the
//!    server's own CPU time per create;
//! 2. the same workload straight on a fresh store of the same kind (the baseline), on the
//!    server's core;
//! 3. their ratio;
//! 4. watch delivery latency with many watchers, and whether any event was lost.
//!
//! ```text
//!  core 0: shoal bench api (this process) ── HTTP/1.1, N keep-alive connections ──┐
//!  core 1: taskset -c 1 shoal serve --no-controllers --store S   ◄────────────────┘
//!          server CPU per create = Δ(utime+stime of that process) / creates
//!  core 1: raw phase: this process moves there and puts the same bodies on a fresh store
//! ```
//!
//! The server is a child process on a core of its own so that its figure is its own
//! cost, not shared with the load generator's (which, on two cores, it used to be).
//!
//! `shoal bench taskflow` measures task runs/s through the taskflow engine (see
//! [`taskflow`]); `shoal bench release` a release across a simulated fleet (see
//! [`release`]).

mod release;
mod taskflow;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use shoal_store::{Precondition, Store, StoreMetrics};

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// API write throughput vs the raw store, and watch latency.
    Api(ApiBench),
    /// Cost of a simulated fleet: start-up, memory per node, rollout convergence.
    Sim(crate::sim::SimBench),
    /// Task runs/s through the taskflow controller: many one-task runs, and one fan-out.
    Taskflow(taskflow::TaskflowBench),
    /// A release across a simulated fleet (wall time, control-plane CPU and memory, API
    /// calls per cluster) and the planning time for a very big fleet.
    Release(release::ReleaseBench),
}

#[derive(clap::Args, Debug)]
pub struct ApiBench {
    /// Concurrent writing clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Total creates per phase.
    #[arg(long, default_value_t = 40_000)]
    pub writes: usize,
    /// Concurrent watchers in the watch phase.
    #[arg(long, default_value_t = 1_000)]
    pub watchers: usize,
    /// Writes observed by every watcher.
    #[arg(long, default_value_t = 200)]
    pub watch_events: usize,
    /// Store backend: sqlite, memory or etcd://HOST:PORT.
    #[arg(long, default_value = "sqlite")]
    pub store: String,
    /// The shoal binary that serves (default: this one), to compare two builds in one
    /// sitting with the same load generator.
    #[arg(long, value_name = "PATH")]
    pub server_exe: Option<std::path::PathBuf>,
    /// A command the server runs under, split at spaces (after `taskset`), e.g.
    /// `valgrind --tool=callgrind --callgrind-out-file=serve.out` to count instructions.
    #[arg(long, value_name = "COMMAND")]
    pub server_wrapper: Option<String>,
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Api(a) => api(a).await,
        BenchCommand::Sim(a) => crate::sim::bench(a).await,
        BenchCommand::Taskflow(a) => taskflow::run(a).await,
        BenchCommand::Release(a) => release::run(a).await,
    }
}

fn cluster(name: &str, seq: usize) -> Value {
    json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "labels": {"env": "bench", "region": "r1", "tier": "2"},
                     "annotations": {"bench.shoal.io/seq": seq.to_string()}},
        "spec": {"endpoint": {"server": format!("https://10.0.{}.{}:6443", seq / 250 % 250, seq % 250)}}
    })
}

/// Latency percentiles of a sample, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e3
}

struct Phase {
    rate: f64,
    /// Cores busy on average (the measured process's CPU time / wall time) and CPU time
    /// per operation, in µs: whether the phase was bound by CPU or by waiting.
    cores: f64,
    cpu_per_op_us: f64,
    /// The same for this process (the load generator) when another one was measured.
    own_cpu_per_op_us: f64,
    p50: f64,
    p99: f64,
}

/// Runs `total` operations over `clients` concurrent clients, timing each: `connect()`
/// makes a client (a connection, a store handle) once, `op(client, i)` does the i-th
/// operation and hands the client back. The CPU time measured is process `pid`'s.
async fn drive<C, Conn, Op, ConnFut, OpFut>(
    pid: u32,
    clients: usize,
    total: usize,
    connect: Conn,
    op: Op,
) -> Result<Phase>
where
    C: Send + 'static,
    Conn: Fn() -> ConnFut + Send + Sync + 'static,
    ConnFut: std::future::Future<Output = Result<C>> + Send,
    Op: Fn(C, usize) -> OpFut + Send + Sync + 'static,
    OpFut: std::future::Future<Output = Result<C>> + Send,
{
    let (connect, op) = (Arc::new(connect), Arc::new(op));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let (cpu0, _) = release::usage(pid);
    let (own0, _) = release::usage(std::process::id());
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (connect, op, next) = (connect.clone(), op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = connect().await?;
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= total {
                    break;
                }
                let t = Instant::now();
                client = op(client, i).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed();
    let cpu = release::usage(pid).0 - cpu0;
    let own = release::usage(std::process::id()).0 - own0;
    all.sort();
    Ok(Phase {
        rate: total as f64 / elapsed.as_secs_f64(),
        cores: cpu / elapsed.as_secs_f64(),
        cpu_per_op_us: cpu / total as f64 * 1e6,
        own_cpu_per_op_us: own / total as f64 * 1e6,
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
    })
}

async fn api(a: ApiBench) -> Result<()> {
    if a.clients == 0 || a.writes == 0 {
        bail!("--clients and --writes must be positive");
    }
    let dir = tempfile::tempdir()?;
    let no_etcd = crate::serve::EtcdArgs::default();
    let cores = Cores::pick();

    // The server: `shoal serve` as a child process, on a core of its own when there are two.
    let exe = match &a.server_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let mut argv: Vec<String> = Vec::new();
    if let Some(core) = cores.server {
        argv.extend(["taskset".into(), "-c".into(), core.to_string()]);
    }
    if let Some(w) = &a.server_wrapper {
        argv.extend(w.split_whitespace().map(String::from));
    }
    argv.push(exe.display().to_string());
    argv.extend(
        [
            "serve",
            "--no-controllers",
            "--listen",
            "127.0.0.1:0",
            "--bookmark-interval-seconds",
            "5",
            "--store",
            &phase_store(&a.store, "api"),
            "--data-dir",
        ]
        .map(String::from),
    );
    argv.push(dir.path().join("api").display().to_string());
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let (server, base) = release::spawn_command(
        cmd,
        "serve",
        "shoal is serving at ",
        &dir.path().join("serve.log"),
    )
    .await?;
    let server_pid = server.0.id().context("the server's pid")?;
    if let Some(core) = cores.client {
        pin(std::process::id(), core)?;
    }

    println!(
        "shoal bench api: store={} clients={} writes={} watchers={}",
        a.store, a.clients, a.writes, a.watchers
    );
    println!(
        "  server           pid {server_pid}: {}",
        cores.describe(cores.server, &argv.join(" "))
    );
    println!(
        "  load generator   pid {}: {}",
        std::process::id(),
        cores.describe(cores.client, "this process")
    );

    // Request bodies are built before the clock starts, for both phases alike, so the
    // figures compare the server with the store rather than the bench's JSON encoding.
    let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..a.writes)
            .map(|i| {
                bytes::Bytes::from(
                    serde_json::to_vec(&cluster(&format!("c-{i:07}"), i)).expect("serializes"),
                )
            })
            .collect(),
    );

    // 1. Through HTTP/1.1, one keep-alive connection per client (as kubectl and
    // controllers hold one each), with a lean client so the figure is the server's.
    let url = format!("{base}/apis/shoal.io/v1alpha1/clusters");
    let addr = base.trim_start_matches("http://").to_string();
    let h = {
        let (addr, bodies) = (addr.clone(), bodies.clone());
        drive(
            server_pid,
            a.clients,
            a.writes,
            move || connect_http1(addr.clone()),
            move |(mut sender, addr), i| {
                let body = bodies[i].clone();
                async move {
                    use http_body_util::BodyExt;
                    sender.ready().await?;
                    let req = http::Request::post("/apis/shoal.io/v1alpha1/clusters")
                        .header(http::header::HOST, &addr)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(http_body_util::Full::new(body))?;
                    let resp = sender.send_request(req).await?;
                    let status = resp.status();
                    let bytes = resp.into_body().collect().await?.to_bytes();
                    if status != http::StatusCode::CREATED {
                        bail!(
                            "create answered {status}: {}",
                            String::from_utf8_lossy(&bytes)
                        );
                    }
                    Ok((sender, addr))
                }
            },
        )
        .await?
    };

    // 2. The same creates straight on a fresh store of the same kind, on the server's
    // core: this process moves there for the phase (and the server idles).
    if let Some(core) = cores.server {
        pin(std::process::id(), core)?;
    }
    let raw_metrics = StoreMetrics::new();
    let raw_store: Store = crate::serve::open_store(
        &phase_store(&a.store, "raw"),
        &dir.path().join("raw"),
        &no_etcd,
        &raw_metrics,
    )
    .await?;
    let r = {
        let (raw_store, bodies) = (raw_store.clone(), bodies.clone());
        drive(
            std::process::id(),
            a.clients,
            a.writes,
            move || {
                let s = raw_store.clone();
                async move { Ok(s) }
            },
            move |s, i| {
                let body = bodies[i].clone();
                async move {
                    s.put(
                        &format!("/registry/shoal.io/clusters/c-{i:07}"),
                        body,
                        Precondition::Absent,
                        None,
                    )
                    .await?;
                    Ok(s)
                }
            },
        )
        .await?
    };
    drop(raw_store);
    if let Some(core) = cores.client {
        pin(std::process::id(), core)?;
    }

    println!(
        "  HTTP creates     {:>9.0} writes/s   p50 {:>6.2} ms   p99 {:>6.2} ms   server: {:.2} cores, {:.1} µs CPU/create   (load generator {:.1} µs/create)",
        h.rate, h.p50, h.p99, h.cores, h.cpu_per_op_us, h.own_cpu_per_op_us
    );
    println!(
        "  raw store puts   {:>9.0} writes/s   p50 {:>6.2} ms   p99 {:>6.2} ms   {:.2} cores, {:.1} µs CPU/put{}",
        r.rate,
        r.p50,
        r.p99,
        r.cores,
        r.cpu_per_op_us,
        if cores.server.is_some() {
            " (on the server's core)"
        } else {
            ""
        }
    );
    println!("  ratio HTTP/raw   {:>9.2}", h.rate / r.rate);

    // 4. Watch latency: watchers subscribe, then writes are paced and timed.
    let sent: Arc<Vec<AtomicU64>> =
        Arc::new((0..a.watch_events).map(|_| AtomicU64::new(0)).collect());
    let epoch = Instant::now();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.watchers + 8)
        .build()?;
    let rv = http
        .get(format!("{url}?limit=1"))
        .send()
        .await?
        .json::<Value>()
        .await?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let watch_url = format!(
        "{url}?watch=true&resourceVersion={rv}&labelSelector=env%3Dwatch&timeoutSeconds=300"
    );
    let mut watchers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(a.watchers.max(1));
    for _ in 0..a.watchers {
        let (http, watch_url, sent, ready_tx) = (
            http.clone(),
            watch_url.clone(),
            sent.clone(),
            ready_tx.clone(),
        );
        let expected = a.watch_events;
        watchers.push(tokio::spawn(async move {
            let resp = http.get(&watch_url).send().await?;
            ready_tx.send(()).await.ok();
            let mut stream = resp.bytes_stream();
            let mut buf = Vec::new();
            let mut lat = Vec::with_capacity(expected);
            let mut seen = 0usize;
            while seen < expected {
                let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), stream.next())
                    .await
                    .ok()
                    .flatten()
                else {
                    break;
                };
                buf.extend_from_slice(&chunk?);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let now = epoch.elapsed();
                    let ev: Value = serde_json::from_slice(&line)?;
                    if ev["type"] != "ADDED" {
                        continue;
                    }
                    let seq: usize = ev["object"]["metadata"]["annotations"]["bench.shoal.io/seq"]
                        .as_str()
                        .unwrap_or("0")
                        .parse()?;
                    let at = Duration::from_nanos(sent[seq].load(Ordering::Acquire));
                    lat.push(now.saturating_sub(at));
                    seen += 1;
                }
            }
            anyhow::Ok(lat)
        }));
    }
    drop(ready_tx);
    for _ in 0..a.watchers {
        ready_rx.recv().await.context("a watcher failed to start")?;
    }
    for i in 0..a.watch_events {
        let mut obj = cluster(&format!("w-{i:05}"), i);
        obj["metadata"]["labels"]["env"] = json!("watch");
        sent[i].store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
        let resp = http.post(&url).json(&obj).send().await?;
        if resp.status() != reqwest::StatusCode::CREATED {
            bail!("watch-phase create answered {}", resp.status());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut lat = Vec::new();
    for w in watchers {
        lat.extend(w.await??);
    }
    lat.sort();
    let expected = a.watchers * a.watch_events;
    println!(
        "  watch delivery   {} watchers × {} events: received {}/{} (lost {})   p50 {:>6.2} ms   p99 {:>6.2} ms",
        a.watchers,
        a.watch_events,
        lat.len(),
        expected,
        expected - lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    if let Some((count, sum)) =
        histogram_totals(&text, "group_commit_batch").filter(|(count, _)| *count > 0.0)
    {
        println!(
            "  group commit     mean batch {:.1} writes over {count:.0} commits",
            sum / count.max(1.0)
        );
    }
    // SIGTERM, so that a wrapper such as valgrind writes its output on the way out.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server_pid.to_string()])
        .status();
    let mut server = server;
    let _ = tokio::time::timeout(Duration::from_secs(60), server.0.wait()).await;
    Ok(())
}

/// Which core the server and the load generator each get: the first two this process may
/// run on, when there are two and `taskset` is installed; `None`s otherwise (both run
/// wherever the kernel puts them, and the figures say so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cores {
    client: Option<usize>,
    server: Option<usize>,
    /// Why there is no pinning, if there is none.
    unpinned: Option<&'static str>,
}

impl Cores {
    fn pick() -> Self {
        let allowed = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                    .map(|l| cpu_list(l.trim()))
            })
            .unwrap_or_default();
        let has_taskset = std::process::Command::new("taskset")
            .arg("-V")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Cores::from(&allowed, has_taskset)
    }

    fn from(allowed: &[usize], has_taskset: bool) -> Self {
        let none = |why| Cores {
            client: None,
            server: None,
            unpinned: Some(why),
        };
        match allowed {
            _ if !has_taskset => none("not pinned: taskset (util-linux) is not installed"),
            [client, server, ..] => Cores {
                client: Some(*client),
                server: Some(*server),
                unpinned: None,
            },
            _ => none("not pinned: only one core is available, shared by server and load"),
        }
    }

    fn describe(&self, core: Option<usize>, what: &str) -> String {
        match (core, self.unpinned) {
            (Some(c), _) => format!("core {c}: {what}"),
            (None, why) => format!("{}: {what}", why.unwrap_or("not pinned")),
        }
    }
}

/// Parses a kernel CPU list (`0-3,6`).
fn cpu_list(text: &str) -> Vec<usize> {
    text.split(',')
        .filter_map(|part| match part.split_once('-') {
            Some((a, b)) => Some((a.trim().parse().ok()?..=b.trim().parse().ok()?).collect()),
            None => part.trim().parse().ok().map(|c| vec![c]),
        })
        .flatten()
        .collect()
}

/// Pins every thread of process `pid` to `core`.
fn pin(pid: u32, core: usize) -> Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &core.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("run taskset")?;
    if !status.success() {
        bail!("taskset -a -p -c {core} {pid} failed ({status})");
    }
    Ok(())
}

/// A keep-alive HTTP/1.1 connection to `addr`.
async fn connect_http1(
    addr: String,
) -> Result<(
    hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    String,
)> {
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok((sender, addr))
}

/// The store each phase writes to. SQLite and memory phases get their own fresh store
/// (a directory each); an etcd cluster is shared, so each phase of each run writes under
/// its own key namespace and neither sees the other's keys.
fn phase_store(store: &str, phase: &str) -> String {
    if !store.starts_with("etcd://") {
        return store.to_string();
    }
    let run = std::process::id();
    format!("{}/shoal-bench-{run}-{phase}", store.trim_end_matches('/'))
}

/// (count, sum) of the first histogram whose name contains `needle`.
fn histogram_totals(text: &str, needle: &str) -> Option<(f64, f64)> {
    let value = |suffix: &str| {
        text.lines()
            .find(|l| {
                !l.starts_with('#')
                    && l.contains(needle)
                    && l.split_whitespace()
                        .next()
                        .is_some_and(|n| n.ends_with(suffix) || n.contains(&format!("{suffix}{{")))
            })
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((value("_count")?, value("_sum")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_ranges_and_singles() {
        assert_eq!(cpu_list("0-3,6"), vec![0, 1, 2, 3, 6]);
        assert_eq!(cpu_list("1"), vec![1]);
        assert_eq!(cpu_list(""), Vec::<usize>::new());
    }

    #[test]
    fn the_server_gets_a_core_of_its_own_only_when_there_are_two_and_taskset() {
        let two = Cores::from(&[2, 5, 7], true);
        assert_eq!((two.client, two.server), (Some(2), Some(5)));
        assert_eq!(Cores::from(&[0], true).server, None);
        let no_taskset = Cores::from(&[0, 1], false);
        assert_eq!(no_taskset.server, None);
        assert!(no_taskset.describe(None, "x").contains("taskset"));
    }

    #[test]
    fn etcd_phases_write_under_their_own_namespaces() {
        let run = std::process::id();
        assert_eq!(phase_store("sqlite", "raw"), "sqlite");
        assert_eq!(
            phase_store("etcd://127.0.0.1:2379", "api"),
            format!("etcd://127.0.0.1:2379/shoal-bench-{run}-api")
        );
        assert_eq!(
            phase_store("etcd://a:1,b:2/prod/", "raw"),
            format!("etcd://a:1,b:2/prod/shoal-bench-{run}-raw")
        );
    }
}
