//! What every controller does to pods, on a [`Pass`]: find its own, place new ones on
//! nodes, create them (with the scheduler's event), bind pending ones, delete them (with
//! the kubelet's `Killing` event).
//!
//! The key decision: indexes a pass needs (pods by owner, pods per node) are built on
//! first use from the cluster's objects and dropped with the pass, so a step walks the
//! pods a constant number of times however many workloads there are, and nothing
//! outlives the step that could go stale.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use shoal_store::Precondition;

use super::{Pass, PodIndex, name_of, placement};
use crate::event::{ObjectRef, Recorder, Source};
use crate::kubelet::PodState;
use crate::state::{ClusterState, PodRecord, PodTemplate, Value};
use crate::template::{self, Owner, controller_of};

impl<'a> Pass<'_, 'a> {
    pub(super) fn now(&self) -> Timestamp {
        self.env.now
    }

    /// The shared template of `owner`'s pods at revision `hash`, built once.
    pub(super) fn template(
        &mut self,
        owner: &Owner,
        hash: &str,
        build: impl FnOnce() -> Arc<PodTemplate>,
    ) -> Arc<PodTemplate> {
        self.env
            .templates
            .entry((owner.uid.clone(), hash.to_string()))
            .or_insert_with(build)
            .clone()
    }

    /// The pods the controller `uid` owns: (key, record), in key order. Each controller
    /// runs once per pass and only it changes its pods, so the index built at its first
    /// use is current for every controller that asks later.
    pub(super) fn owned_pods(
        &mut self,
        state: &ClusterState,
        uid: &str,
    ) -> Vec<(Arc<str>, Arc<PodRecord>)> {
        let index = self.by_owner.get_or_insert_with(|| {
            let mut index = PodIndex::new();
            for (k, e) in state.range(&template::prefix("", "pods"), None) {
                if let Value::Pod(rec) = &e.value
                    && let Some((_, _, u)) = controller_of(&rec.template.base)
                {
                    index
                        .entry(u.to_string())
                        .or_default()
                        .push((k.clone(), rec.clone()));
                }
            }
            index
        });
        index.remove(uid).unwrap_or_default()
    }

    pub(super) fn count_pods_on(&mut self, state: &ClusterState) {
        let index = &self.node_index;
        self.pods_on.get_or_insert_with(|| {
            let mut counts = vec![0; index.len()];
            for (_, e) in state.range(&template::prefix("", "pods"), None) {
                if let Value::Pod(rec) = &e.value
                    && !rec.state.is_terminal()
                    && let Some(i) = rec.node.as_deref().and_then(|n| index.get(n))
                    && let Some(c) = counts.get_mut(*i as usize)
                {
                    *c += 1;
                }
            }
            counts
        });
    }

    /// Picks a node for a new pod of `template` (see [`crate::deployment::schedule`]).
    pub(super) fn schedule(
        &mut self,
        state: &ClusterState,
        template: &PodTemplateSpec,
    ) -> Option<u32> {
        let (selector, tolerations) = placement(template);
        self.count_pods_on(state);
        let counts = self.pods_on.as_mut()?;
        let node = crate::deployment::schedule(&self.views, &selector, &tolerations, counts)?;
        if let Some(c) = counts.get_mut(node as usize) {
            *c += 1;
        }
        Some(node)
    }

    pub(super) fn node_name(&self, index: u32) -> Option<Arc<str>> {
        self.env.nodes.get(index as usize).map(|n| n.name.clone())
    }

    /// Creates a pod of `template` on `node` under a fresh generated name (`fixed`: that
    /// name, if it is free); returns its name. Emits the scheduler's event.
    pub(super) fn create_pod(
        &mut self,
        state: &mut ClusterState,
        owner: &Owner,
        template: &Arc<PodTemplate>,
        node: Option<Arc<str>>,
        fixed: Option<&str>,
    ) -> Option<String> {
        let now = self.now();
        let record = Arc::new(PodRecord {
            template: template.clone(),
            uid: uuid::Uuid::new_v4(),
            created: now,
            node: node.clone(),
            state: PodState::created(now),
        });
        let mut created = None;
        // Generated names can collide; like the API server's generateName, try again.
        for _ in 0..if fixed.is_some() { 1 } else { 16 } {
            let name = match fixed {
                Some(n) => n.to_string(),
                None => {
                    *self.env.names += 1;
                    template::pod_name(&owner.name, &owner.uid, *self.env.names)
                }
            };
            let key = template::key("", "pods", Some(&owner.namespace), &name);
            if state
                .put(&key, Value::Pod(record.clone()), Precondition::Absent)
                .is_ok()
            {
                created = Some(name);
                break;
            }
        }
        let name = created?;
        let pod = ObjectRef::pod(&owner.namespace, &name, record.uid, None);
        match node {
            Some(node) => self.env.events.normal(
                Source::SCHEDULER,
                pod,
                "Scheduled",
                format!("Successfully assigned {}/{name} to {node}", owner.namespace),
            ),
            None => self.env.events.warning(
                Source::SCHEDULER,
                pod,
                "FailedScheduling",
                format!(
                    "0/{} nodes are available: no node matches the pod's node selector, \
                     tolerations and readiness.",
                    self.env.nodes.len()
                ),
            ),
        }
        Some(name)
    }

    /// Binds the unscheduled pods among `pods` that now fit a node (a node came back,
    /// was uncordoned or relabelled). Costs nothing when every pod is bound.
    pub(super) fn bind_pending(
        &mut self,
        state: &mut ClusterState,
        template: &PodTemplateSpec,
        pods: &[(Arc<str>, Arc<PodRecord>)],
        skip: &HashSet<u64>,
    ) {
        for (i, (key, rec)) in pods.iter().enumerate() {
            if rec.node.is_some() || skip.contains(&(i as u64)) {
                continue;
            }
            let Some(node) = self
                .schedule(state, template)
                .and_then(|n| self.node_name(n))
            else {
                return;
            };
            let now = self.now();
            let mut r = PodRecord::clone(rec);
            r.node = Some(node.clone());
            r.state = PodState::created(now);
            let _ = state.put(key, Value::Pod(Arc::new(r)), Precondition::None);
            let ns = crate::state::namespace_of(key);
            self.env.events.normal(
                Source::SCHEDULER,
                ObjectRef::pod(ns, name_of(key), rec.uid, None),
                "Scheduled",
                format!("Successfully assigned {ns}/{} to {node}", name_of(key)),
            );
            self.env.next.at(Some(now));
        }
    }

    /// Deletes a pod; its kubelet stops its containers (`Killing`).
    pub(super) fn delete_pod(&mut self, state: &mut ClusterState, key: &Arc<str>, rec: &PodRecord) {
        if state.delete(key, Precondition::None).is_ok() {
            killing(self.env.events, key, rec);
        }
    }
}

/// The kubelet's `Killing` events for a deleted pod that was running on a node.
pub fn killing(events: &mut Recorder, key: &str, rec: &PodRecord) {
    let Some(node) = &rec.node else {
        return;
    };
    if rec.state.is_terminal() {
        return;
    }
    let ns = crate::state::namespace_of(key);
    for (c, _) in &rec.template.containers {
        events.normal(
            Source::kubelet(node),
            ObjectRef::pod(ns, name_of(key), rec.uid, Some(c)),
            "Killing",
            format!("Stopping container {c}"),
        );
    }
}
