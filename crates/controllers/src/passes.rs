//! The loop the periodic controllers share (the component view and the cluster prober):
//! a pass over everything every interval of real time, and, in between, a pass over
//! just the objects the watch brought in, shortly after they changed.
//!
//! ```text
//!  watch K ── wants(obj)? ── keep the newest copy, by name ──┐ Pace::debounce later
//!  every Pace::interval (real time) ──────────────────────────┼──▶ pass(Scope)
//!                                                              (one at a time)
//! ```
//!
//! The debounce makes a burst of changes (a `kubectl apply -f` of a folder) one pass,
//! not one per event. A periodic pass that falls due covers the pending objects too, so
//! they are not looked at twice.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What one pass covers.
#[derive(Clone, Debug, PartialEq)]
pub enum Scope<K> {
    /// Every object: the periodic pass (the pass lists them itself).
    All,
    /// The objects that changed since the last pass: the newest copy the watch saw of
    /// each, in name order.
    Changed(Vec<K>),
}

impl<K: Resource> Scope<K> {
    /// Whether the pass covers the object named `name`.
    pub fn covers(&self, name: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Changed(objects) => objects.iter().any(|o| o.name_any() == name),
        }
    }
}

/// How often the passes run.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Between two passes over everything (real time); the first runs at once, so a
    /// restarted server shows a fresh view.
    pub interval: Duration,
    /// How long after the first change a pass over the changed objects starts.
    pub debounce: Duration,
}

/// Runs passes until `stop` is cancelled or the watch ends: [`Scope::All`] every
/// [`Pace::interval`], and [`Scope::Changed`] [`Pace::debounce`] after an object for
/// which `wants` says yes was added or changed.
///
/// # Cancel safety
/// A pass is dropped at its next await point when `stop` is cancelled, so a pass must
/// make each of its writes whole or not at all.
pub async fn run<K, W, F, Fut>(
    api: Api<K>,
    pace: Pace,
    wants: W,
    stop: &CancellationToken,
    mut pass: F,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
    W: Fn(&K) -> bool,
    F: FnMut(Scope<K>) -> Fut,
    Fut: Future<Output = ()>,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let mut changes = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut next_full = Instant::now();
    let mut pending: BTreeMap<String, K> = BTreeMap::new();
    let mut pending_at: Option<Instant> = None;
    loop {
        let wake = pending_at.map_or(next_full, |p| p.min(next_full));
        tokio::select! {
            _ = stop.cancelled() => return,
            event = changes.next() => match event {
                Some(Ok(object)) if wants(&object) => {
                    pending.insert(object.name_any(), object);
                    pending_at.get_or_insert_with(|| Instant::now() + pace.debounce);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!(kind = %kind, error = %e, "watch failed; retrying"),
                None => return,
            },
            _ = tokio::time::sleep_until(wake) => {
                let changed = std::mem::take(&mut pending);
                pending_at = None;
                let scope = if Instant::now() >= next_full {
                    next_full = Instant::now() + pace.interval;
                    Scope::All
                } else {
                    Scope::Changed(changed.into_values().collect())
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    () = pass(scope) => {}
                }
            }
        }
    }
}
