//! `shoal`: the control plane binary.
//!
//! The binary is thin: `serve` wires a store, the API server and a listener together;
//! the kubectl-like verbs are a small client over kube-rs; `bench` measures. Everything
//! with logic lives in the library crates.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// The API server allocates a few short-lived JSON trees per request; mimalloc serves
/// those markedly faster than glibc's allocator under concurrency (see `shoal bench api`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod cli;
mod component;
mod pipelinerun;
mod plan;
mod rehearse;
mod rollout;
mod serve;
mod sim;
mod ui;

#[derive(Parser, Debug)]
#[command(
    name = "shoal",
    version,
    about = "A control plane for fleets of Kubernetes clusters"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the API server (embedded SQLite by default).
    Serve(Box<serve::ServeArgs>),
    /// Simulate a fleet of Kubernetes clusters (served at /clusters/NAME).
    Sim(sim::SimArgs),
    /// Show, pause, speed up or step a simulation's virtual clock.
    Clock(sim::ClockArgs),
    /// Show the waves a release would run and why each cluster is where it is.
    Plan(plan::PlanArgs),
    /// Write a kubeconfig that points kubectl at a shoal server.
    Kubeconfig {
        /// The server URL.
        #[arg(long, default_value = "http://127.0.0.1:7420")]
        server: String,
        /// A file holding the bearer token, if the server requires one.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The CA (PEM) of an `https://` server (`shoal serve --tls` keeps it in
        /// DATA_DIR/pki/ca.crt); embedded as certificate-authority-data.
        #[arg(long, value_name = "FILE")]
        certificate_authority: Option<PathBuf>,
        /// Where to write it ("-" for stdout).
        #[arg(short, long, default_value = "-")]
        output: String,
    },
    /// List objects, or show one (`shoal get clusters`, `shoal get cl c-1 -o yaml`).
    Get(cli::GetArgs),
    /// Show one object in a readable form.
    Describe(cli::DescribeArgs),
    /// Create or update the objects in a YAML/JSON file.
    Apply(cli::ApplyArgs),
    /// Delete objects by kind and name, or those in a file.
    Delete(cli::DeleteArgs),
    /// Render a Component for a Cluster and print the objects (YAML).
    Render(component::RenderArgs),
    /// Show what applying a Component to a Cluster would change. Exits 0 when nothing
    /// would, 1 when something would, 2 on errors (like `kubectl diff`).
    Diff(component::RenderArgs),
    /// Operate a pipeline run: pause, resume, cancel, retry or skip a task.
    #[command(alias = "pr")]
    Pipelinerun(pipelinerun::PipelineRunArgs),
    /// Follow or steer a Release: status, pause, resume, abort, rollback, approve.
    Rollout(rollout::RolloutArgs),
    /// Releases: `shoal release rehearse -f RELEASE.yaml` on a simulated copy of the fleet.
    Release {
        #[command(subcommand)]
        what: rehearse::ReleaseCommand,
    },
    /// Benchmarks (`shoal bench api`).
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

/// Exit status of a process killed by SIGPIPE (128 + 13), as `cat` or `grep` report it.
const EXIT_BROKEN_PIPE: i32 = 141;

/// `shoal get … | head` closes the pipe early. Rust ignores SIGPIPE and `println!` panics
/// on the write error instead, so end quietly the way Unix tools do.
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        default(info);
    }));
}

fn main() -> Result<()> {
    exit_quietly_on_broken_pipe();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match args.command {
            Command::Serve(a) => serve::run(*a).await,
            Command::Sim(a) => sim::run(a).await,
            Command::Clock(a) => sim::clock_command(a).await,
            Command::Plan(a) => plan::run(a).await,
            Command::Kubeconfig {
                server,
                token_file,
                certificate_authority,
                output,
            } => {
                // A --token-file of several users: the first one's token.
                let token = token_file
                    .map(|f| serve::read_token_users(&f))
                    .transpose()?
                    .map(|users| users[0].0.clone());
                let ca = cli::read_ca(certificate_authority.as_deref())?;
                let text = serve::kubeconfig(&server, token.as_deref(), ca.as_deref());
                if output == "-" {
                    print!("{text}");
                } else {
                    std::fs::write(&output, text)?;
                    eprintln!("wrote {output}");
                }
                Ok(())
            }
            Command::Get(a) => cli::get(a).await,
            Command::Describe(a) => cli::describe(a).await,
            Command::Apply(a) => cli::apply(a).await,
            Command::Delete(a) => cli::delete(a).await,
            Command::Render(a) => component::render_cmd(a).await,
            Command::Diff(a) => match component::diff(a).await {
                Ok(component::Outcome::InSync) => Ok(()),
                Ok(component::Outcome::Differs) => std::process::exit(1),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::exit(2)
                }
            },
            Command::Pipelinerun(a) => pipelinerun::run(a).await,
            Command::Rollout(a) => match rollout::run(a).await? {
                rollout::Outcome::Ok => Ok(()),
                rollout::Outcome::Failed => std::process::exit(1),
            },
            Command::Release { what } => match rehearse::run(what).await {
                Ok(rehearse::Verdict::Completes) => Ok(()),
                Ok(rehearse::Verdict::DoesNotComplete) => std::process::exit(1),
                Ok(rehearse::Verdict::Undecided) => std::process::exit(2),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::exit(2)
                }
            },
            Command::Bench { what } => bench::run(what).await,
        }
    })
}
