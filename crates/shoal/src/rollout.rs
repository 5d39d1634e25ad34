//! `shoal rollout`: follow and steer a Release, the way `kubectl rollout` does for a
//! Deployment.
//!
//! ```text
//!  status NAME     watch the Release ──▶ one line per change:
//!                  Progressing  wave 2/4  [#####---------------]  12/200  message
//!                  until Succeeded (exit 0) │ Failed, RolledBack (exit 1, with why)
//!  pause NAME      merge patch {spec: {paused: true}}      resume: paused false
//!  abort NAME      merge patch {spec: {abort: true}}       rollback: {rollback: true}
//!  approve NAME    create Approval NAME-wave-K {release, wave K, approvedBy, Approve}
//!                  K = --wave, or the wave the release waits for (WaitingForApproval, "K/N")
//! ```
//!
//! The key decision: every verb only writes what the Release API already offers — its
//! `spec` switches and an `Approval` object — and `status` only reads. What happens next
//! is the release controller's call, so the verbs work the same against any replica,
//! from kubectl (`kubectl patch release … --type merge`) or from a script.
//!
//! Output is plain lines, one per change, with no terminal control: a log or a pipe
//! reads the same as a terminal.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::watch_object;
use serde_json::json;
use shoal_core::kinds::{Release, ReleasePhase, ReleaseStatus};
use shoal_core::taskflow::{Approval, ApprovalDecision, ApprovalSpec};

use crate::cli::{Conn, api_error};

/// The width of the progress bar, in characters.
const BAR_WIDTH: usize = 20;

/// How long to wait before watching again after the watch failed.
const REWATCH_AFTER: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug)]
pub struct RolloutArgs {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(clap::Subcommand, Debug)]
enum Verb {
    /// Follow a release until it succeeds (exit 0) or fails or rolls back (exit 1).
    Status(StatusArgs),
    /// Pause a release: no cluster starts, those in progress stop after their step.
    Pause(NameArgs),
    /// Resume a paused release.
    Resume(NameArgs),
    /// Stop a release for good; what was changed stays changed.
    Abort(NameArgs),
    /// Put every cluster the release changed back on its previous version.
    Rollback(NameArgs),
    /// Approve a wave of a release (by default the wave it waits for).
    Approve(ApproveArgs),
}

#[derive(clap::Args, Debug)]
struct NameArgs {
    /// The Release (`NAME` or `release/NAME`).
    name: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args, Debug)]
struct StatusArgs {
    /// The Release (`NAME` or `release/NAME`).
    name: String,
    /// Follow the release until it ends; `--watch=false` prints its state once.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    watch: bool,
    /// Give up after this long (`90s`, `10m`, `1h30m`); no limit by default.
    #[arg(long, value_parser = parse_timeout)]
    timeout: Option<Duration>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args, Debug)]
struct ApproveArgs {
    /// The Release (`NAME` or `release/NAME`).
    name: String,
    /// The wave to approve (1-based); by default the wave the release waits for.
    #[arg(long)]
    wave: Option<u32>,
    /// Who approves; by default `$USER`.
    #[arg(long)]
    by: Option<String>,
    /// Why, for the record.
    #[arg(long)]
    reason: Option<String>,
    /// The namespace the Approval is created in.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    conn: Conn,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = shoal_core::taskflow::duration::parse(s).map_err(|e| e.to_string())?;
    Duration::try_from(d).map_err(|_| format!("invalid duration {s:?}: must not be negative"))
}

/// `NAME`, `release/NAME`, `releases/NAME`, `rel/NAME` or `release.shoal.io/NAME` → NAME.
fn release_name(arg: &str) -> Result<&str> {
    let name = match arg.split_once('/') {
        None => arg,
        Some((kind, name)) => {
            let kind = kind.to_lowercase();
            let kind = kind.strip_suffix(".shoal.io").unwrap_or(&kind);
            if !matches!(kind, "release" | "releases" | "rel") {
                bail!("{arg:?}: shoal rollout works on releases, not {kind:?}");
            }
            name
        }
    };
    if name.is_empty() {
        bail!("{arg:?}: name the release");
    }
    Ok(name)
}

/// How a `shoal rollout` ended, for the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done, or not a failure (exit 0).
    Ok,
    /// The release failed or was rolled back (exit 1).
    Failed,
}

/// Runs a `shoal rollout` verb.
///
/// # Errors
/// An unknown release, an unreachable server, a refused write, or a timeout.
pub async fn run(a: RolloutArgs) -> Result<Outcome> {
    match a.verb {
        Verb::Status(s) => status(s).await,
        Verb::Pause(n) => switch(n, json!({"paused": true}), "paused").await,
        Verb::Resume(n) => switch(n, json!({"paused": false}), "resumed").await,
        Verb::Abort(n) => switch(n, json!({"abort": true}), "aborted").await,
        Verb::Rollback(n) => switch(n, json!({"rollback": true}), "rolling back").await,
        Verb::Approve(a) => approve(a).await,
    }
}

/// Reads a release, with "not found" said plainly.
async fn get(api: &Api<Release>, name: &str) -> Result<Release> {
    api.get_opt(name)
        .await
        .map_err(api_error)
        .with_context(|| format!("failed to read release {name:?}"))?
        .ok_or_else(|| anyhow!("release {name:?} not found"))
}

/// pause | resume | abort | rollback: a merge patch of `spec`.
async fn switch(a: NameArgs, spec: serde_json::Value, done: &str) -> Result<Outcome> {
    let name = release_name(&a.name)?;
    let api: Api<Release> = Api::all(crate::cli::kube_client(&a.conn)?);
    get(&api, name).await?;
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await
    .map_err(api_error)
    .with_context(|| format!("failed to update release {name:?}"))?;
    println!("release.shoal.io/{name} {done}");
    Ok(Outcome::Ok)
}

/// The wave a release waits for an approval of: `currentWave` "K/N" → K, when its phase
/// is `WaitingForApproval`.
fn waiting_wave(name: &str, status: Option<&ReleaseStatus>) -> Result<u32> {
    let phase = status.and_then(|s| s.phase);
    if phase != Some(ReleasePhase::WaitingForApproval) {
        let phase = phase.map_or("no phase yet".to_string(), |p| format!("{p:?}"));
        bail!(
            "release {name:?} is not waiting for an approval (phase: {phase}); \
             name the wave with --wave N to approve one ahead"
        );
    }
    let wave = status.and_then(|s| s.current_wave.as_deref()).unwrap_or("");
    wave.split('/')
        .next()
        .and_then(|k| k.trim().parse::<u32>().ok())
        .filter(|k| *k > 0)
        .ok_or_else(|| {
            anyhow!(
                "release {name:?} waits for an approval but its status.currentWave {wave:?} \
                 does not say which wave (expected \"K/N\"); name it with --wave N"
            )
        })
}

async fn approve(a: ApproveArgs) -> Result<Outcome> {
    let name = release_name(&a.name)?;
    let client = crate::cli::kube_client(&a.conn)?;
    let release = get(&Api::all(client.clone()), name).await?;
    let wave = match a.wave {
        Some(0) => bail!("--wave 0: waves count from 1"),
        Some(w) => w,
        None => waiting_wave(name, release.status.as_ref())?,
    };
    let planned = release.status.as_ref().map_or(0, |s| s.waves.len());
    if planned > 0 && wave as usize > planned {
        bail!("--wave {wave}: release {name:?} has {planned} waves");
    }
    let by =
        a.by.or_else(|| std::env::var("USER").ok())
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "unknown".into());
    let approval_name = format!("{name}-wave-{wave}");
    let approval = Approval::new(
        &approval_name,
        ApprovalSpec {
            pipeline_run: String::new(),
            task: String::new(),
            release: Some(name.to_string()),
            wave: Some(wave),
            approved_by: by.clone(),
            decision: ApprovalDecision::Approve,
            reason: a.reason,
        },
    );
    let approvals: Api<Approval> = Api::namespaced(client, &a.namespace);
    approvals
        .create(&PostParams::default(), &approval)
        .await
        .map_err(api_error)
        .with_context(|| format!("failed to approve wave {wave} of release {name:?}"))?;
    println!(
        "approval.shoal.io/{approval_name} created: wave {wave} of release {name} approved by {by}"
    );
    Ok(Outcome::Ok)
}

/// `[#####---------------]` for `done` of `total`.
fn bar(done: i64, total: i64) -> String {
    let filled = if total > 0 {
        ((done.clamp(0, total) as usize) * BAR_WIDTH) / total as usize
    } else {
        0
    };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled))
}

/// (done, total) from `status.progress` ("12/200"), else from the cluster counts.
fn progress(s: &ReleaseStatus) -> Option<(i64, i64)> {
    let parsed = s.progress.as_deref().and_then(|p| {
        let (d, t) = p.split_once('/')?;
        Some((d.trim().parse().ok()?, t.trim().parse().ok()?))
    });
    parsed.or_else(|| {
        s.clusters
            .as_ref()
            .map(|c| (c.succeeded + c.failed + c.rolled_back, c.total))
    })
}

/// The lines that show where a release is: the progress line, then its failures.
pub fn render_status(s: Option<&ReleaseStatus>) -> String {
    let Some(s) = s else {
        return "Pending            no status yet: the release controller has not picked it up\n"
            .into();
    };
    let phase = s.phase.map_or("Pending".to_string(), |p| format!("{p:?}"));
    let mut line = format!("{phase:<18}");
    if let Some(w) = &s.current_wave {
        line.push_str(&format!(" wave {w:<6}"));
    }
    if let Some((done, total)) = progress(s) {
        line.push_str(&format!(" {} {done}/{total}", bar(done, total)));
    }
    if let Some(m) = s.message.as_deref().filter(|m| !m.is_empty()) {
        line.push_str(&format!("  {m}"));
    }
    let mut out = format!("{}\n", line.trim_end());
    for f in &s.failures {
        out.push_str(&format!(
            "  failed: {} at {}: {}\n",
            f.cluster, f.step, f.message
        ));
    }
    out
}

/// What a phase means for `rollout status`: `None` while the release goes on.
fn verdict(name: &str, s: Option<&ReleaseStatus>) -> Option<(Outcome, String)> {
    let s = s?;
    let why = s
        .message
        .as_deref()
        .filter(|m| !m.is_empty())
        .map_or(String::new(), |m| format!(": {m}"));
    match s.phase? {
        ReleasePhase::Succeeded => Some((
            Outcome::Ok,
            format!("release {name:?} successfully rolled out"),
        )),
        ReleasePhase::Failed => Some((Outcome::Failed, format!("release {name:?} failed{why}"))),
        ReleasePhase::RolledBack => Some((
            Outcome::Failed,
            format!("release {name:?} was rolled back{why}"),
        )),
        _ => None,
    }
}

async fn status(a: StatusArgs) -> Result<Outcome> {
    let name = release_name(&a.name)?.to_string();
    let api: Api<Release> = Api::all(crate::cli::kube_client(&a.conn)?);
    let release = get(&api, &name).await?;
    let first = render_status(release.status.as_ref());
    print!("{first}");
    if let Some((outcome, why)) = verdict(&name, release.status.as_ref()) {
        println!("{why}");
        return Ok(outcome);
    }
    if !a.watch {
        return Ok(Outcome::Ok);
    }
    let follow = async {
        let mut last = first;
        loop {
            let mut stream = watch_object(api.clone(), &name).boxed();
            while let Some(event) = stream.next().await {
                let release = match event {
                    Ok(Some(r)) => r,
                    Ok(None) => bail!("release {name:?} was deleted"),
                    Err(e) => {
                        eprintln!("warning: watching release {name:?}: {e}; watching again");
                        break;
                    }
                };
                let text = render_status(release.status.as_ref());
                if text != last {
                    print!("{text}");
                    last = text;
                }
                if let Some((outcome, why)) = verdict(&name, release.status.as_ref()) {
                    println!("{why}");
                    return Ok(outcome);
                }
            }
            tokio::time::sleep(REWATCH_AFTER).await;
        }
    };
    match a.timeout {
        None => follow.await,
        Some(limit) => match tokio::time::timeout(limit, follow).await {
            Ok(r) => r,
            Err(_) => bail!(
                "timed out after {} waiting for release {name:?} to finish",
                shoal_core::taskflow::duration::format(
                    jiff::SignedDuration::try_from(limit).unwrap_or_default()
                )
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_named_alone_or_with_its_kind() {
        for arg in [
            "agent-v2",
            "release/agent-v2",
            "releases/agent-v2",
            "rel/agent-v2",
            "release.shoal.io/agent-v2",
        ] {
            assert_eq!(release_name(arg).unwrap(), "agent-v2", "{arg}");
        }
        let err = release_name("deployment/agent").unwrap_err().to_string();
        assert!(err.contains("not \"deployment\""), "{err}");
        assert!(release_name("release/").is_err());
    }

    #[test]
    fn the_waiting_wave_is_read_from_the_status_or_refused_with_why() {
        let mut s = ReleaseStatus {
            phase: Some(ReleasePhase::WaitingForApproval),
            current_wave: Some("3/4".into()),
            ..ReleaseStatus::default()
        };
        assert_eq!(waiting_wave("r", Some(&s)).unwrap(), 3);
        s.phase = Some(ReleasePhase::Progressing);
        let err = waiting_wave("r", Some(&s)).unwrap_err().to_string();
        assert!(
            err.contains("not waiting for an approval (phase: Progressing)"),
            "{err}"
        );
        let err = waiting_wave("r", None).unwrap_err().to_string();
        assert!(err.contains("no phase yet"), "{err}");
        s.phase = Some(ReleasePhase::WaitingForApproval);
        s.current_wave = Some("soon".into());
        assert!(waiting_wave("r", Some(&s)).is_err());
    }

    #[test]
    fn the_status_line_has_the_phase_wave_bar_and_failures() {
        // Built from JSON: the nested status types are not re-exported by shoal-core.
        let s: ReleaseStatus = serde_json::from_value(json!({
            "phase": "Progressing", "currentWave": "2/4", "progress": "5/20",
            "message": "wave 2: 3 clusters running",
            "failures": [{"cluster": "c-7", "step": "postcheck",
                          "message": "2 pods crash-looping"}]}))
        .unwrap();
        assert_eq!(
            render_status(Some(&s)),
            "Progressing        wave 2/4    [#####---------------] 5/20  \
             wave 2: 3 clusters running\n  failed: c-7 at postcheck: 2 pods crash-looping\n"
        );
        let counts: ReleaseStatus = serde_json::from_value(json!({
            "phase": "Succeeded",
            "clusters": {"total": 4, "waiting": 0, "running": 0, "succeeded": 4, "failed": 0,
                         "rollingBack": 0, "rolledBack": 0}}))
        .unwrap();
        assert_eq!(
            render_status(Some(&counts)),
            "Succeeded          [####################] 4/4\n"
        );
        assert!(render_status(None).starts_with("Pending"));
    }

    #[test]
    fn only_succeeded_ends_well() {
        let mk = |p| ReleaseStatus {
            phase: Some(p),
            message: Some("error budget spent".into()),
            ..ReleaseStatus::default()
        };
        assert_eq!(
            verdict("r", Some(&mk(ReleasePhase::Succeeded))).unwrap().0,
            Outcome::Ok
        );
        let (o, why) = verdict("r", Some(&mk(ReleasePhase::Failed))).unwrap();
        assert_eq!(o, Outcome::Failed);
        assert_eq!(why, "release \"r\" failed: error budget spent");
        assert_eq!(
            verdict("r", Some(&mk(ReleasePhase::RolledBack))).unwrap().0,
            Outcome::Failed
        );
        assert!(verdict("r", Some(&mk(ReleasePhase::WaitingForApproval))).is_none());
        assert!(verdict("r", None).is_none());
    }
}
