//! OpenKruise BroadcastJobs: one run-to-completion pod per eligible node, by
//! [`crate::broadcastjob::plan`], and Kruise's status (active/succeeded/failed/desired,
//! phase, conditions, startTime, completionTime).
//!
//! Job pods run for the simulation's job duration ([`super::Env::job_duration`]) and
//! exit 0 (`PodTemplate::completes_after`); a fault model can still crash them. The
//! start time and the terminal phase live in the job's status, so a pass needs nothing
//! but the objects. When the plan asks for a pause (failurePolicy `Pause`), the
//! simulator sets `spec.paused` as Kruise does; when the TTL after finishing has passed
//! it deletes the job, and its pods are collected.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value as Json, json};
use shoal_core::FieldError;
use shoal_core::kinds::{BroadcastJobPhase, BroadcastJobSpec};
use shoal_store::Precondition;

use super::{Object, Pass, read_kind, set, time, view};
use crate::broadcastjob::{BroadcastJobPolicy, JobProgress, plan};
use crate::event::Source;
use crate::pod::PodView;
use crate::state::{ClusterState, PodTemplate};
use crate::template::{pod_template, revision_hash};

#[derive(Debug)]
pub(super) struct Spec {
    policy: BroadcastJobPolicy,
    template: PodTemplateSpec,
}

/// One BroadcastJob, as read at the start of a step.
#[derive(Debug)]
pub(super) struct BroadcastJob {
    pub(super) o: Object,
    spec: Result<Spec, FieldError>,
}

pub(super) fn read(state: &ClusterState) -> Vec<BroadcastJob> {
    read_kind(
        state,
        "apps.kruise.io",
        "broadcastjobs",
        "apps.kruise.io/v1alpha1",
        "BroadcastJob",
    )
    .into_iter()
    .map(|o| {
        let spec = o.spec::<BroadcastJobSpec>().and_then(|s| {
            Ok(Spec {
                policy: BroadcastJobPolicy::from_kruise(&s)?,
                template: s.template,
            })
        });
        BroadcastJob { o, spec }
    })
    .collect()
}

fn status_time(o: &Object, field: &str) -> Option<Timestamp> {
    o.status(&format!("/{field}"))
        .and_then(Json::as_str)
        .and_then(|s| s.parse().ok())
}

fn phase_name(p: BroadcastJobPhase) -> Json {
    serde_json::to_value(p).unwrap_or(Json::Null)
}

pub(super) fn reconcile(state: &mut ClusterState, pass: &mut Pass<'_, '_>, j: &BroadcastJob) {
    let spec = match &j.spec {
        Ok(s) => s,
        Err(e) => return j.o.write_invalid(state, e, pass.now()),
    };
    let now = pass.now();
    let owner = &j.o.owner;
    let started = status_time(&j.o, "startTime").unwrap_or(now);
    let old_phase: Option<BroadcastJobPhase> =
        j.o.status("/phase")
            .and_then(|p| serde_json::from_value(p.clone()).ok());
    let finished = match (status_time(&j.o, "completionTime"), old_phase) {
        (Some(at), Some(ph @ (BroadcastJobPhase::Completed | BroadcastJobPhase::Failed))) => {
            Some((at, ph))
        }
        _ => None,
    };
    let pods = pass.owned_pods(state, &owner.uid);
    let views: Vec<PodView> = pods
        .iter()
        .enumerate()
        .map(|(i, (_, rec))| view(i as u64, rec, 0, &pass.node_index))
        .collect();
    let p = plan(
        &spec.policy,
        JobProgress { started, finished },
        &pass.views,
        &views,
        now,
    );
    pass.env.next.at(p.requeue_at);
    if p.expired {
        let _ = state.delete(&j.o.key, Precondition::ModRevision(j.o.revision));
        // Its pods are collected by the next step.
        pass.env.next.at(Some(now));
        return;
    }
    if !p.create.is_empty() || !p.delete.is_empty() || p.finished_now.is_some() {
        pass.env.next.at(Some(now));
    }
    let source = Source::controller("broadcastjob-controller");
    for id in &p.delete {
        if let Some((key, rec)) = pods.get(*id as usize) {
            pass.delete_pod(state, key, rec);
        }
    }
    if !p.create.is_empty() {
        let hash = revision_hash(&spec.template);
        let duration = pass.env.job_duration;
        let template = pass.template(owner, &hash, || {
            let base = pod_template(
                owner,
                &spec.template,
                &[
                    ("broadcastjob-name", owner.name.clone()),
                    ("broadcastjob-controller-uid", owner.uid.clone()),
                ],
            );
            let mut t = PodTemplate::from_base(base.base.clone());
            t.completes_after = Some(duration);
            Arc::new(t)
        });
        for node in &p.create {
            let node = pass.node_name(*node);
            if let Some(name) = pass.create_pod(state, owner, &template, node, None) {
                pass.env.events.normal(
                    source.clone(),
                    j.o.event_ref(),
                    "SuccessfulCreate",
                    format!("Created pod: {name}"),
                );
            }
        }
    }
    let c = p.status;
    let mut status = json!({
        "active": c.active,
        "succeeded": c.succeeded,
        "failed": c.failed,
        "desired": c.desired,
        "phase": phase_name(p.phase),
        "startTime": j.o.status("/startTime").cloned().unwrap_or_else(|| time(started)),
    });
    let kept: Vec<Json> =
        j.o.status("/conditions")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c["type"] != "Invalid")
            .cloned()
            .collect();
    if !kept.is_empty() {
        status["conditions"] = Json::Array(kept);
    }
    if let Some(t) = j.o.status("/completionTime") {
        status["completionTime"] = t.clone();
    }
    if let Some((at, reason)) = p.finished_now {
        status["completionTime"] = time(at);
        let (type_, message) = if p.phase == BroadcastJobPhase::Completed {
            (
                "Complete",
                format!(
                    "Job completed, {} pods succeeded, {} pods failed",
                    c.succeeded, c.failed
                ),
            )
        } else {
            ("Failed", format!("Job failed: {reason}"))
        };
        status["conditions"] = json!([{"type": type_, "status": "True", "reason": reason,
            "message": message, "lastProbeTime": time(at), "lastTransitionTime": time(at)}]);
        pass.env.events.emit(
            source.clone(),
            j.o.event_ref(),
            if type_ == "Complete" {
                crate::event::Severity::Normal
            } else {
                crate::event::Severity::Warning
            },
            if type_ == "Complete" {
                "JobComplete"
            } else {
                "JobFailed"
            },
            message,
        );
    }
    let pause = p.pause;
    j.o.update(state, |obj| {
        set(obj, &["status"], status);
        if pause {
            set(obj, &["spec", "paused"], json!(true));
        }
    });
}
