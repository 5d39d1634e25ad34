//! What a release step reads from the control plane — its Release, its Cluster, the
//! components and every ClusterGroup and ClusterConfig a render may use — read from
//! reflector caches shared by all the steps of all releases, not fetched per step.
//!
//! ```text
//!  first step ──▶ Scopes::caches(client) ──spawn──▶ watch Releases, Clusters, Components,
//!                                                    ClusterGroups, ClusterConfigs
//!  every step ──▶ cache hit ─────────────────────▶ the object (no request)
//!             └─▶ miss (just created, the watch lags) ──GET──▶ the object, or "does not exist"
//! ```
//!
//! The key decision: five watches for the whole fleet instead of five requests per step
//! (a 1,000-cluster release with two steps made 15,000 of them, two of them LISTs of
//! every group and config in the fleet). A cached object can be a moment old; a step
//! reads nothing from it that a moment's lag could turn into a wrong change (the
//! versions come from the Release's spec, which a running release does not change).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use shoal_core::kinds::{Cluster, ClusterConfig, ClusterGroup, Component, Release};
use tokio_util::sync::CancellationToken;

use super::ExecError;

/// How long, in real time, a step waits for a cache's first list before it calls the
/// control plane's slowness a transient failure.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The caches, started by the first step that needs them; the watches stop when the
/// executors are dropped (the taskflow controller stops).
#[derive(Debug, Default)]
pub(crate) struct Scopes {
    caches: OnceLock<Caches>,
    stop: CancellationToken,
}

impl Drop for Scopes {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Debug)]
struct Caches {
    releases: Store<Release>,
    clusters: Store<Cluster>,
    components: Store<Component>,
    groups: Store<ClusterGroup>,
    configs: Store<ClusterConfig>,
}

impl Scopes {
    fn caches(&self, client: &Client) -> &Caches {
        self.caches.get_or_init(|| {
            let span = |kind: &str| tracing::info_span!("release-scope-cache", kind = %kind);
            let config = watcher::Config::default;
            let stop = || self.stop.child_token();
            Caches {
                releases: crate::cache::spawn(
                    Api::all(client.clone()),
                    config(),
                    span("Release"),
                    stop(),
                    |_| {},
                ),
                clusters: crate::cache::spawn(
                    Api::all(client.clone()),
                    config(),
                    span("Cluster"),
                    stop(),
                    |_| {},
                ),
                components: crate::cache::spawn(
                    Api::all(client.clone()),
                    config(),
                    span("Component"),
                    stop(),
                    |_| {},
                ),
                groups: crate::cache::spawn(
                    Api::all(client.clone()),
                    config(),
                    span("ClusterGroup"),
                    stop(),
                    |_| {},
                ),
                configs: crate::cache::spawn(
                    Api::all(client.clone()),
                    config(),
                    span("ClusterConfig"),
                    stop(),
                    |_| {},
                ),
            }
        })
    }

    /// The Release `name`.
    ///
    /// # Errors
    /// [`ExecError::Failed`] when it does not exist; the API's errors.
    pub async fn release(&self, client: &Client, name: &str) -> Result<Release, ExecError> {
        let caches = self.caches(client);
        get(&caches.releases, client, name, "Release").await
    }

    /// The Cluster `name`.
    ///
    /// # Errors
    /// [`ExecError::Failed`] when it does not exist; the API's errors.
    pub async fn cluster(&self, client: &Client, name: &str) -> Result<Cluster, ExecError> {
        let caches = self.caches(client);
        get(&caches.clusters, client, name, "Cluster").await
    }

    /// The Component `name`.
    ///
    /// # Errors
    /// [`ExecError::Failed`] when it does not exist; the API's errors.
    pub async fn component(&self, client: &Client, name: &str) -> Result<Component, ExecError> {
        let caches = self.caches(client);
        get(&caches.components, client, name, "Component").await
    }

    /// Every ClusterGroup and ClusterConfig (a render picks those that select its
    /// cluster), once the caches have listed them.
    ///
    /// # Errors
    /// [`ExecError::Transient`] when the first list has not arrived in [`READY_TIMEOUT`].
    pub async fn values(
        &self,
        client: &Client,
    ) -> Result<(Vec<ClusterGroup>, Vec<ClusterConfig>), ExecError> {
        let caches = self.caches(client);
        ready(&caches.groups, "ClusterGroups").await?;
        ready(&caches.configs, "ClusterConfigs").await?;
        let groups = caches
            .groups
            .state()
            .iter()
            .map(|g| (**g).clone())
            .collect();
        let configs = caches
            .configs
            .state()
            .iter()
            .map(|c| (**c).clone())
            .collect();
        Ok((groups, configs))
    }
}

/// Waits for `store`'s first list.
async fn ready<K>(store: &Store<K>, what: &str) -> Result<(), ExecError>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    match tokio::time::timeout(READY_TIMEOUT, store.wait_until_ready()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(ExecError::Transient(format!(
            "the cache of {what} stopped (the controller is stopping)"
        ))),
        Err(_) => Err(ExecError::Transient(format!(
            "the control plane has not listed {what} within {READY_TIMEOUT:?}"
        ))),
    }
}

/// `name` from `store`, or from the API when the cache does not have it (yet).
async fn get<K>(store: &Store<K>, client: &Client, name: &str, kind: &str) -> Result<K, ExecError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + 'static,
{
    if let Some(found) = store.get(&ObjectRef::new(name)) {
        return Ok(Arc::unwrap_or_clone(found));
    }
    Api::<K>::all(client.clone())
        .get_opt(name)
        .await
        .map_err(ExecError::Kube)?
        .ok_or_else(|| ExecError::Failed(format!("{kind} {name:?} does not exist")))
}
