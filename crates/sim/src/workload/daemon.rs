//! DaemonSets (`apps/v1` and OpenKruise's Advanced DaemonSet): one pod per eligible node,
//! rolled by [`crate::daemonset::plan`].
//!
//! Pods are bound to their node at creation, as the DaemonSet controller's pods are
//! (node affinity the scheduler honours at once); the controller reports
//! `SuccessfulCreate` / `SuccessfulDelete` events.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::json;
use shoal_core::FieldError;

use super::{Object, Pass, REVISION_LABEL, pod_revision_hash, read_kind, view};
use crate::daemonset::{self, DaemonSetPolicy, DaemonStrategy};
use crate::event::Source;
use crate::pod::PodView;
use crate::state::ClusterState;
use crate::template::{pod_template, revision_hash};

/// Which API a DaemonSet comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DaemonApi {
    AppsV1,
    Kruise,
}

/// One DaemonSet (either API), as read at the start of a step.
#[derive(Debug)]
pub(super) struct Daemon {
    pub(super) o: Object,
    api: DaemonApi,
    spec: Result<(PodTemplateSpec, DaemonSetPolicy), FieldError>,
}

pub(super) fn read(state: &ClusterState) -> Vec<Daemon> {
    let apps = read_kind(state, "apps", "daemonsets", "apps/v1", "DaemonSet")
        .into_iter()
        .map(|o| {
            let spec = o
                .spec::<k8s_openapi::api::apps::v1::DaemonSetSpec>()
                .and_then(|s| Ok((s.template.clone(), DaemonSetPolicy::from_apps_v1(&s)?)));
            Daemon {
                o,
                api: DaemonApi::AppsV1,
                spec,
            }
        });
    let kruise = read_kind(
        state,
        "apps.kruise.io",
        "daemonsets",
        "apps.kruise.io/v1alpha1",
        "DaemonSet",
    )
    .into_iter()
    .map(|o| {
        let spec = o
            .spec::<shoal_core::kinds::AdvancedDaemonSetSpec>()
            .and_then(|s| Ok((s.template.clone(), DaemonSetPolicy::from_kruise(&s)?)));
        Daemon {
            o,
            api: DaemonApi::Kruise,
            spec,
        }
    });
    apps.chain(kruise).collect()
}

pub(super) fn reconcile(state: &mut ClusterState, pass: &mut Pass<'_, '_>, d: &Daemon) {
    let (template, policy) = match &d.spec {
        Ok(s) => s,
        Err(e) => return d.o.write_invalid(state, e, pass.now()),
    };
    let now = pass.now();
    let update_hash = revision_hash(template);
    let update_template = pass.template(&d.o.owner, &update_hash, || {
        let mut labels = vec![(REVISION_LABEL, update_hash.clone())];
        if d.api == DaemonApi::AppsV1 {
            labels.push(("pod-template-generation", d.o.generation.to_string()));
        }
        pod_template(&d.o.owner, template, &labels)
    });
    let pods = pass.owned_pods(state, &d.o.owner.uid);
    // Revision 0 is the update revision; every other hash gets its own number.
    let mut revisions: BTreeMap<&str, u32> = BTreeMap::new();
    revisions.insert(update_hash.as_str(), 0);
    let pod_views: Vec<PodView> = pods
        .iter()
        .enumerate()
        .map(|(i, (_, rec))| {
            let n = revisions.len() as u32;
            let rev = *revisions.entry(pod_revision_hash(rec)).or_insert(n);
            view(i as u64, rec, rev, &pass.node_index)
        })
        .collect();
    let plan = daemonset::plan(policy, 0, &pass.views, &pod_views, now);
    let desired = plan.status.desired_number_scheduled;
    let allowed = match &policy.strategy {
        DaemonStrategy::RollingUpdate(ru) => daemonset::effective_budget(ru, desired).0,
        DaemonStrategy::OnDelete => desired,
    };
    pass.targets.push(super::target(
        &d.o,
        template,
        desired,
        allowed,
        policy.min_ready,
        true,
    ));
    pass.env.next.at(plan.requeue_at);
    if !plan.is_empty() {
        // Like the real controller's expectations: look again right after this pass.
        pass.env.next.at(Some(now));
    }
    let source = Source::controller("daemonset-controller");
    for id in &plan.delete {
        if let Some((key, rec)) = pods.get(*id as usize) {
            pass.delete_pod(state, key, rec);
            pass.env.events.normal(
                source.clone(),
                d.o.event_ref(),
                "SuccessfulDelete",
                format!("Deleted pod: {}", super::name_of(key)),
            );
        }
    }
    for c in &plan.create {
        let node = pass.node_name(c.node);
        if let Some(name) = pass.create_pod(state, &d.o.owner, &update_template, node, None) {
            pass.env.events.normal(
                source.clone(),
                d.o.event_ref(),
                "SuccessfulCreate",
                format!("Created pod: {name}"),
            );
        }
    }
    let s = plan.status;
    let mut status = json!({
        "observedGeneration": d.o.generation,
        "desiredNumberScheduled": s.desired_number_scheduled,
        "currentNumberScheduled": s.current_number_scheduled,
        "updatedNumberScheduled": s.updated_number_scheduled,
        "numberReady": s.number_ready,
        "numberAvailable": s.number_available,
        "numberMisscheduled": s.number_misscheduled,
    });
    if s.number_unavailable > 0 {
        status["numberUnavailable"] = json!(s.number_unavailable);
    }
    if d.api == DaemonApi::Kruise {
        status["daemonSetHash"] = json!(update_hash);
    }
    d.o.write_status(state, status);
}
