//! Store metrics, added by wrapping a backend rather than sprinkled through each one.
//!
//! ```text
//!  Store ──▶ Metered ──▶ inner Store (memory | sqlite | …)
//!              │ times every call into  store_operation_duration_seconds{op="put"}
//!              └ (sqlite) the writer reports each group commit into
//!                store_group_commit_batch_size via StoreMetrics::batch_observer()
//! ```
//!
//! [`StoreMetrics`] is a cheap-to-clone handle (prometheus-client metrics are shared
//! `Arc`s): make one, hand clones to [`Store::metered`](crate::Store::metered) and to the
//! SQLite backend's batch observer, and [`register`](StoreMetrics::register) it once.
//! A watch is timed until its stream is returned, not for its lifetime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::sqlite::BatchObserver;
use crate::{
    Backend, DeleteResponse, Guard, KeyValue, LeaseId, Precondition, PutResponse, RangeRequest,
    RangeResponse, Result, Revision, Store, WatchProgress, WatchStream,
};

/// The label of the operation histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// The [`Backend`] method, e.g. `put`, `range`, `lease_grant`.
    pub op: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50µs .. ~1.6s: a memory get at the bottom, an fsync-bound write on a slow disk
    // and a large range near the top.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Metrics of the store layer.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    operation_seconds: Family<OpLabels, Histogram, fn() -> Histogram>,
    batch_size: Histogram,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl StoreMetrics {
    pub fn new() -> Self {
        StoreMetrics {
            operation_seconds: Family::new_with_constructor(latency_histogram),
            // 1 .. 1024 writes per commit (`sqlite::WRITE_BATCH_MAX`).
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
        }
    }

    /// Registers `store_operation_duration_seconds{op}` and
    /// `store_group_commit_batch_size` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "store_operation_duration",
            "Latency of store operations",
            Unit::Seconds,
            self.operation_seconds.clone(),
        );
        registry.register(
            "store_group_commit_batch_size",
            "Writes committed together in one SQLite transaction (one fsync)",
            self.batch_size.clone(),
        );
    }

    /// A hook for [`SqliteOptions::batch_observer`](crate::sqlite::SqliteOptions) that
    /// records each group commit's size in this metrics' batch-size histogram.
    pub fn batch_observer(&self) -> BatchObserver {
        let batch_size = self.batch_size.clone();
        Arc::new(move |size| batch_size.observe(size as f64))
    }

    fn observe(&self, op: &'static str, elapsed: Duration) {
        self.operation_seconds
            .get_or_create(&OpLabels { op })
            .observe(elapsed.as_secs_f64());
    }
}

/// A backend that times every operation of the store it wraps.
#[derive(Debug)]
pub struct Metered {
    inner: Store,
    metrics: StoreMetrics,
}

impl Metered {
    pub fn new(inner: Store, metrics: StoreMetrics) -> Self {
        Metered { inner, metrics }
    }

    async fn timed<T>(&self, op: &'static str, fut: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let out = fut.await;
        self.metrics.observe(op, start.elapsed());
        out
    }
}

#[async_trait]
impl Backend for Metered {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.timed("get", self.inner.get(key)).await
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.timed("range", self.inner.range(req)).await
    }

    async fn range_at(&self, req: RangeRequest, revision: Revision) -> Result<RangeResponse> {
        self.timed("range_at", self.inner.range_at(req, revision))
            .await
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        cond: Precondition,
        lease: Option<LeaseId>,
    ) -> Result<PutResponse> {
        self.timed("put", self.inner.put(key, value, cond, lease))
            .await
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<DeleteResponse> {
        self.timed("delete", self.inner.delete(key, cond)).await
    }

    async fn put_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        value: Bytes,
        cond: Precondition,
        lease: Option<LeaseId>,
    ) -> Result<PutResponse> {
        let put = self.inner.put_guarded(guards, key, value, cond, lease);
        self.timed("put_guarded", put).await
    }

    async fn delete_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        cond: Precondition,
    ) -> Result<DeleteResponse> {
        let delete = self.inner.delete_guarded(guards, key, cond);
        self.timed("delete_guarded", delete).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.timed("watch", self.inner.watch(prefix, after)).await
    }

    async fn watch_with_progress(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(WatchStream, WatchProgress)> {
        self.timed("watch", self.inner.watch_with_progress(prefix, after))
            .await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.timed("current_revision", self.inner.current_revision())
            .await
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.timed("compacted_revision", self.inner.compacted_revision())
            .await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.timed("compact", self.inner.compact(revision)).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.timed("lease_grant", self.inner.lease_grant(ttl)).await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<()> {
        self.timed("lease_keep_alive", self.inner.lease_keep_alive(id))
            .await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.timed("lease_revoke", self.inner.lease_revoke(id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;
    use prometheus_client::encoding::text::encode;

    fn exposition(metrics: &StoreMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metered_store_passes_the_conformance_suite() {
        let metrics = StoreMetrics::new();
        conformance::test_suite(|| Store::memory().metered(metrics.clone())).await;
    }

    #[tokio::test]
    async fn every_operation_is_timed_under_its_name() {
        let metrics = StoreMetrics::new();
        let store = Store::memory().metered(metrics.clone());
        store
            .put("a", Bytes::from_static(b"1"), Precondition::None, None)
            .await
            .unwrap();
        store.get("a").await.unwrap();
        store.range(RangeRequest::default()).await.unwrap();
        let _ = store.delete("missing", Precondition::None).await;
        let text = exposition(&metrics);
        for op in ["put", "get", "range", "delete"] {
            assert!(
                text.contains(&format!(
                    "store_operation_duration_seconds_count{{op=\"{op}\"}} 1"
                )),
                "{op} missing from:\n{text}"
            );
        }
    }

    #[tokio::test]
    async fn sqlite_group_commits_land_in_the_batch_size_histogram() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = StoreMetrics::new();
        let store = Store::sqlite_with_metrics(dir.path().join("store.db"), &metrics).unwrap();
        for i in 0..3 {
            store
                .put(&format!("k{i}"), Bytes::new(), Precondition::None, None)
                .await
                .unwrap();
        }
        let text = exposition(&metrics);
        assert!(
            text.contains("store_group_commit_batch_size_sum 3.0"),
            "batch sizes missing from:\n{text}"
        );
        assert!(
            text.contains("store_operation_duration_seconds_count{op=\"put\"} 3"),
            "puts missing from:\n{text}"
        );
    }
}
