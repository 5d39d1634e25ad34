//! `shoal rollout` through the real binary, against a server with no controllers (so
//! only the test changes a Release): pause / resume / abort / rollback patch the spec,
//! approve creates the Approval for the wave the release waits for, and status follows
//! a status the test writes through the status subresource until it ends.

use crate::common;

use std::process::Stdio;

use common::{COMMAND_DEADLINE, ShoalServer, TEST_DEADLINE, apply_flags, within};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use shoal_core::kinds::Release;
use shoal_core::taskflow::{Approval, ApprovalDecision};
use tokio::io::{AsyncBufReadExt, BufReader};

const NAME: &str = "agent-1.5.0";

fn example() -> String {
    format!(
        "{}/../../examples/release/release-good.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

async fn start_with_release() -> ShoalServer {
    let server = ShoalServer::start(&["--store", "memory", "--no-controllers"]).await;
    let path = example();
    let mut args = vec!["apply", "-f", path.as_str()];
    args.extend_from_slice(apply_flags());
    server.kubectl_ok(&args).await;
    server
}

async fn set_status(server: &ShoalServer, name: &str, status: Value) {
    let releases: Api<Release> = Api::all(server.client());
    releases
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap_or_else(|e| panic!("write the status of {name}: {e}"));
}

/// Creates a copy of the example release named `name`, with no status.
async fn create_copy(server: &ShoalServer, name: &str) {
    let releases: Api<Release> = Api::all(server.client());
    let mut other = releases.get(NAME).await.unwrap();
    other.metadata = kube::api::ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    };
    other.spec.paused = false;
    other.spec.abort = false;
    other.spec.rollback = false;
    other.status = None;
    releases
        .create(&Default::default(), &other)
        .await
        .unwrap_or_else(|e| panic!("create release {name}: {e}"));
}

/// A `shoal rollout status` running in the background, read line by line.
struct Follower {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
}

impl Follower {
    fn start(server: &ShoalServer, args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["rollout", "status"])
            .args(args)
            .env("SHOAL_SERVER", server.url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn shoal rollout status");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Follower {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `text`.
    async fn wait_for(&mut self, text: &str) {
        within(
            COMMAND_DEADLINE,
            &format!("rollout status to print {text:?}"),
            async {
                while let Some(line) = self.lines.next_line().await.unwrap() {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return;
                    }
                }
                panic!(
                    "rollout status ended without printing {text:?}: {:?}",
                    self.seen
                );
            },
        )
        .await
    }

    /// Waits for the exit; returns its code and every line printed.
    async fn finish(mut self) -> (Option<i32>, Vec<String>, String) {
        while let Some(line) = self.lines.next_line().await.unwrap() {
            self.seen.push(line);
        }
        let out = within(
            COMMAND_DEADLINE,
            "rollout status to exit",
            self.child.wait_with_output(),
        )
        .await
        .unwrap();
        (
            out.status.code(),
            self.seen,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[tokio::test]
async fn pause_resume_abort_and_rollback_patch_the_release_spec() {
    within(
        TEST_DEADLINE,
        "rollout pause/resume/abort/rollback",
        async {
            let server = start_with_release().await;
            let releases: Api<Release> = Api::all(server.client());
            let out = server.shoal_ok(&["rollout", "pause", NAME]).await;
            assert_eq!(out.trim(), "release.shoal.io/agent-1.5.0 paused");
            assert!(releases.get(NAME).await.unwrap().spec.paused);

            let out = server
                .shoal_ok(&["rollout", "resume", &format!("release/{NAME}")])
                .await;
            assert_eq!(out.trim(), "release.shoal.io/agent-1.5.0 resumed");
            assert!(!releases.get(NAME).await.unwrap().spec.paused);

            let out = server.shoal_ok(&["rollout", "abort", NAME]).await;
            assert_eq!(out.trim(), "release.shoal.io/agent-1.5.0 aborted");
            let spec = releases.get(NAME).await.unwrap().spec;
            assert!(spec.abort && !spec.paused, "{spec:?}");

            // Admission keeps abort and rollback apart; the server's reason is shown.
            let r = server.shoal(&["rollout", "rollback", NAME]).await;
            assert!(!r.status.success(), "{r:?}");
            assert!(
                r.stderr
                    .contains("spec.rollback: abort and rollback are exclusive"),
                "{}",
                r.stderr
            );
            create_copy(&server, "agent-v3").await;
            let out = server.shoal_ok(&["rollout", "rollback", "agent-v3"]).await;
            assert_eq!(out.trim(), "release.shoal.io/agent-v3 rolling back");
            assert!(releases.get("agent-v3").await.unwrap().spec.rollback);

            // An unknown release is named in a clear error, for every verb.
            for verb in ["pause", "status", "approve"] {
                let r = server.shoal(&["rollout", verb, "nope"]).await;
                assert!(!r.status.success(), "{verb}: {r:?}");
                assert!(
                    r.stderr.contains("release \"nope\" not found"),
                    "{verb}: {}",
                    r.stderr
                );
            }
            let r = server.shoal(&["rollout", "pause", "deployment/x"]).await;
            assert!(!r.status.success());
            assert!(r.stderr.contains("works on releases"), "{}", r.stderr);
        },
    )
    .await;
}

#[tokio::test]
async fn approve_opens_the_wave_the_release_waits_for() {
    within(TEST_DEADLINE, "rollout approve", async {
        let server = start_with_release().await;

        // Not waiting: a clear refusal, nothing created.
        set_status(&server, NAME, json!({"phase": "Progressing", "currentWave": "2/4"})).await;
        let r = server.shoal(&["rollout", "approve", NAME]).await;
        assert!(!r.status.success(), "{r:?}");
        assert!(
            r.stderr
                .contains("release \"agent-1.5.0\" is not waiting for an approval (phase: Progressing)"),
            "{}",
            r.stderr
        );

        set_status(
            &server,
            NAME,
            json!({"phase": "WaitingForApproval", "currentWave": "3/4"}),
        )
        .await;
        let out = server
            .shoal_ok(&["rollout", "approve", NAME, "--by", "alice", "--reason", "canary clean"])
            .await;
        assert_eq!(
            out.trim(),
            "approval.shoal.io/agent-1.5.0-wave-3 created: wave 3 of release agent-1.5.0 approved by alice"
        );
        let approvals: Api<Approval> = Api::namespaced(server.client(), "default");
        let a = approvals.get("agent-1.5.0-wave-3").await.unwrap().spec;
        assert_eq!(a.release.as_deref(), Some(NAME));
        assert_eq!(a.wave, Some(3));
        assert_eq!(a.approved_by, "alice");
        assert_eq!(a.decision, ApprovalDecision::Approve);
        assert_eq!(a.reason.as_deref(), Some("canary clean"));

        // A wave named ahead of time, approved by whoever runs the command.
        let r = server.shoal(&["rollout", "approve", NAME, "--wave", "4"]).await;
        assert!(r.status.success(), "{r:?}");
        let a = approvals.get("agent-1.5.0-wave-4").await.unwrap().spec;
        assert_eq!(a.wave, Some(4));
        assert!(!a.approved_by.is_empty());
    })
    .await;
}

#[tokio::test]
async fn status_prints_once_or_follows_the_release_to_its_end() {
    within(TEST_DEADLINE, "rollout status", async {
        let server = start_with_release().await;
        set_status(
            &server,
            NAME,
            json!({"phase": "WaitingForApproval", "currentWave": "3/4", "progress": "5/20",
                   "message": "wave 3 waits for an approval"}),
        )
        .await;
        let out = server
            .shoal_ok(&["rollout", "status", NAME, "--watch=false"])
            .await;
        assert_eq!(
            out,
            "WaitingForApproval wave 3/4    [#####---------------] 5/20  \
             wave 3 waits for an approval\n"
        );

        // Followed to success: one line per change, exit 0.
        let mut follow = Follower::start(&server, &[NAME, "--timeout", "30s"]);
        follow.wait_for("WaitingForApproval").await;
        set_status(
            &server,
            NAME,
            json!({"phase": "Progressing", "currentWave": "4/4",
            "progress": "10/20", "message": "wave 4: 10 clusters running"}),
        )
        .await;
        follow.wait_for("Progressing").await;
        set_status(
            &server,
            NAME,
            json!({"phase": "Succeeded", "progress": "20/20",
            "message": "all 20 clusters on v2"}),
        )
        .await;
        let (code, lines, stderr) = follow.finish().await;
        assert_eq!(code, Some(0), "{lines:?} {stderr}");
        assert!(
            lines.contains(
                &"Progressing        wave 4/4    [##########----------] 10/20  \
                             wave 4: 10 clusters running"
                    .to_string()
            ),
            "{lines:?}"
        );
        assert_eq!(
            lines.last().map(String::as_str),
            Some("release \"agent-1.5.0\" successfully rolled out"),
            "{lines:?}"
        );

        // A second release, followed to failure: the failures and why, exit 1.
        create_copy(&server, "agent-v3").await;
        let mut follow = Follower::start(&server, &["release/agent-v3"]);
        follow.wait_for("Pending").await;
        set_status(
            &server,
            "agent-v3",
            json!({"phase": "Failed", "progress": "3/20",
            "message": "error budget spent: 2 clusters failed",
            "failures": [{"cluster": "c-7", "step": "postcheck",
                          "message": "2 pods crash-looping"}]}),
        )
        .await;
        let (code, lines, stderr) = follow.finish().await;
        assert_eq!(code, Some(1), "{lines:?} {stderr}");
        assert!(
            lines.contains(&"  failed: c-7 at postcheck: 2 pods crash-looping".to_string()),
            "{lines:?}"
        );
        assert_eq!(
            lines.last().map(String::as_str),
            Some("release \"agent-v3\" failed: error budget spent: 2 clusters failed"),
            "{lines:?}"
        );

        // A release that has ended is reported at once, whatever --timeout says.
        let r = server
            .shoal(&["rollout", "status", "agent-v3", "--timeout", "1s"])
            .await;
        assert_eq!(r.status.code(), Some(1), "{r:?}");
        assert!(
            r.stdout.contains("failed: c-7 at postcheck"),
            "{}",
            r.stdout
        );

        // One that does not end within --timeout: a clear error, exit non-zero.
        set_status(
            &server,
            NAME,
            json!({"phase": "Paused", "message": "paused by hand"}),
        )
        .await;
        let r = server
            .shoal(&["rollout", "status", NAME, "--timeout", "1s"])
            .await;
        assert!(!r.status.success(), "{r:?}");
        assert!(
            r.stderr
                .contains("timed out after 1s waiting for release \"agent-1.5.0\""),
            "{}",
            r.stderr
        );
    })
    .await;
}
