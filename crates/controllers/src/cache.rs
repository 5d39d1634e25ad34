//! Reflector caches the controllers read from instead of GETting: one watch per kind,
//! kept by its own task until a stop token, calling back on every object it changes.
//!
//! ```text
//!  watcher(api, config) ─► reflect(store) ─► touched objects ─► on_change(&obj)
//!                                │
//!                                └─► Store<K> (the reader the controller holds)
//! ```

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Starts a reflector of `api` under `span`, calling `on_change` with every object that
/// is added, changed or deleted, until `stop`. Watch errors are retried with backoff.
pub(crate) fn spawn<K>(
    api: Api<K>,
    config: watcher::Config,
    span: tracing::Span,
    stop: CancellationToken,
    mut on_change: impl FnMut(&K) + Send + 'static,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .for_each(move |o| {
            if let Ok(o) = o {
                on_change(&o);
            }
            std::future::ready(())
        });
    tokio::spawn(
        async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = stream => {}
            }
        }
        .instrument(span),
    );
    reader
}
