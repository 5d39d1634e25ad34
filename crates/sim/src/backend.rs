//! A simulated cluster as a store backend: what the API server reads and writes.
//!
//! ```text
//!  API server (per-cluster requests) ──Backend──▶ SimCluster ◀── driver (controllers, kubelet)
//!                                                  │  Mutex<ClusterState>  (compact objects)
//!                                                  │  WatchHub             (store's watch fan-out)
//!                                                  │  Mutex<Ledger>        (the driver's record of what happened)
//!                                                  └─ wake: Notify         (an API write happened)
//! ```
//!
//! Every change, whether an API write or a driver step, goes through the one mutex and is
//! published to the hub while the lock is held, so watchers see revisions in order. Events
//! are rendered only when someone watches (`WatchHub::watchers`): a watcher that subscribes
//! later reads the gap from the cluster's bounded history, rendered then.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use shoal_core::clock::SharedClock;
use shoal_store::history::{self, HistoryPage, HistorySource, Retention, WatchHub};
use shoal_store::{
    Backend, DeleteResponse, Error, Guard, KeyValue, LeaseId, Precondition, PutResponse,
    RangeRequest, RangeResponse, Result, Revision, Store, WatchProgress, WatchStream,
};
use tokio::sync::Notify;

use crate::faults::{ClusterRef, FaultModel};
use crate::ledger::{ClusterLedger, Ledger};
use crate::state::{ClusterState, RenderContext, Value, render};

/// Where a simulation keeps its fault model; swapped whole when the profile changes.
pub type FaultSlot = Arc<std::sync::RwLock<Arc<FaultModel>>>;

/// One simulated cluster's objects, shared by its API surface and its driver.
#[derive(Clone)]
pub struct SimCluster {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    /// The cluster's attribute labels (what fault selectors match).
    labels: Arc<BTreeMap<String, String>>,
    /// The simulation's fault model (slow or erroring API), and a request counter that
    /// makes its decisions deterministic.
    faults: FaultSlot,
    requests: AtomicU64,
    state: Mutex<ClusterState>,
    hub: WatchHub,
    clock: SharedClock,
    /// Signalled after every API write, so the driver reacts without polling.
    wake: Notify,
    /// What happened to the cluster's workloads (written by its driver). Its own lock, so
    /// reading it never waits for a step; a step takes it after the state's lock.
    ledger: Mutex<Ledger>,
}

impl fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimCluster")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl SimCluster {
    pub fn new(
        name: impl Into<String>,
        labels: Arc<BTreeMap<String, String>>,
        clock: SharedClock,
        faults: FaultSlot,
        history: Retention,
    ) -> Self {
        SimCluster {
            inner: Arc::new(Inner {
                name: name.into(),
                labels,
                faults,
                requests: AtomicU64::new(0),
                state: Mutex::new(ClusterState::new(history)),
                hub: WatchHub::new(),
                clock,
                wake: Notify::new(),
                ledger: Mutex::new(Ledger::default()),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The cluster as a store, for its API surface.
    pub fn store(&self) -> Store {
        Store::new(self.clone())
    }

    pub fn labels(&self) -> &Arc<BTreeMap<String, String>> {
        &self.inner.labels
    }

    /// The fault model slot the cluster reads (shared by the whole simulation).
    pub fn faults(&self) -> &FaultSlot {
        &self.inner.faults
    }

    /// Applies the fault model's API faults to one request: waits the latency (real time:
    /// it is what the client experiences on the wire), then fails the request if its
    /// turn came. Every request's fate follows from its sequence number and the seed.
    async fn disturb(&self) -> Result<()> {
        let model = self
            .inner
            .faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !model.has_api_faults() {
            return Ok(());
        }
        let n = self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let cluster = ClusterRef {
            name: &self.inner.name,
            labels: &self.inner.labels,
        };
        let fault = model.api_fault(cluster, n, self.inner.clock.now());
        if let Ok(latency) = Duration::try_from(fault.latency)
            && !latency.is_zero()
        {
            tokio::time::sleep(latency).await;
        }
        match fault.error {
            None => Ok(()),
            Some(code) => {
                let msg = format!(
                    "the API server of simulated cluster {} is failing (fault profile, {code})",
                    self.inner.name
                );
                // 503 and 500 are what the API edge can answer from a store error.
                Err(if code == 500 {
                    Error::Backend(msg)
                } else {
                    Error::Unavailable(msg)
                })
            }
        }
    }

    /// Wakes the driver (something it depends on changed, e.g. the fault model).
    pub fn poke(&self) {
        self.inner.wake.notify_one();
    }

    /// Waits for the next API write (or returns at once if one happened since the last wait).
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped wait loses nothing, the permit stays stored.
    pub async fn written(&self) {
        self.inner.wake.notified().await;
    }

    /// The cluster's ledger as it stands (see [`crate::ledger`]).
    pub fn ledger(&self) -> ClusterLedger {
        self.ledger_mut(|l| l.snapshot(&self.inner.name))
    }

    /// Updates the ledger (the driver, at the end of a step).
    pub fn ledger_mut<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        // The ledger's updates leave it consistent at every point a panic could occur.
        f(&mut self
            .inner
            .ledger
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()))
    }

    /// Reads the state.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        f(&self.inner.lock())
    }

    /// Changes the state (a driver step) and publishes what changed to watchers.
    pub fn apply<T>(&self, f: impl FnOnce(&mut ClusterState) -> T) -> T {
        let mut state = self.inner.lock();
        let before = state.revision();
        let out = f(&mut state);
        self.inner.publish(&state, before);
        out
    }

    fn ctx(&self) -> RenderContext {
        self.inner.ctx()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, ClusterState> {
        // Every mutation of ClusterState completes or does nothing before anything can
        // panic, so a poisoned lock still guards a consistent state.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn ctx(&self) -> RenderContext {
        RenderContext {
            now: self.clock.now(),
        }
    }

    /// Publishes the revisions after `before` to watchers, if there are any. Called with
    /// the lock held, which keeps publication in revision order.
    fn publish(&self, state: &ClusterState, before: Revision) {
        if state.revision() == before || self.hub.watchers() == 0 {
            return;
        }
        if let Ok(events) = state.events("", before, state.revision(), self.ctx()) {
            self.hub.publish(events);
        }
    }
}

#[async_trait]
impl HistorySource for Inner {
    async fn history(
        self: Arc<Self>,
        prefix: String,
        after: Revision,
        max_revisions: i64,
    ) -> Result<HistoryPage> {
        let ctx = self.ctx();
        let state = self.lock();
        history::check_start(after, state.revision(), state.compacted())?;
        let through = state.revision().min(after.saturating_add(max_revisions));
        let events = state.events(&prefix, after, through, ctx)?;
        Ok(HistoryPage {
            events,
            through,
            current: state.revision(),
        })
    }
}

fn unsupported() -> Error {
    Error::InvalidArgument("simulated clusters have no store leases".into())
}

#[async_trait]
impl Backend for SimCluster {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.disturb().await?;
        let ctx = self.ctx();
        Ok(self
            .inner
            .lock()
            .get(key)
            .map(|entry| render(key, entry, ctx)))
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.disturb().await?;
        let ctx = self.ctx();
        let state = self.inner.lock();
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit
        };
        let mut matching = state.range(&req.prefix, req.start_after.as_deref());
        let kvs: Vec<KeyValue> = matching
            .by_ref()
            .take(limit)
            .map(|(k, e)| render(k, e, ctx))
            .collect();
        let more = matching.next().is_some();
        Ok(RangeResponse {
            kvs,
            more,
            revision: state.revision(),
        })
    }

    async fn range_at(&self, req: RangeRequest, revision: Revision) -> Result<RangeResponse> {
        let current = self
            .range(RangeRequest {
                limit: 0,
                ..req.clone()
            })
            .await?;
        history::range_at(self.inner.clone(), &req, current, revision).await
    }

    async fn put_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        value: Bytes,
        cond: Precondition,
        lease: Option<LeaseId>,
    ) -> Result<PutResponse> {
        if lease.is_some() {
            return Err(unsupported());
        }
        self.disturb().await?;
        let ctx = self.ctx();
        let resp = {
            let mut state = self.inner.lock();
            state
                .check(guards, key, cond)
                .map_err(|e| state.explain(e, ctx))?;
            let before = state.revision();
            let (entry, prev) = state.put(key, Value::Raw(value), cond)?;
            self.inner.publish(&state, before);
            PutResponse {
                kv: render(key, &entry, ctx),
                prev: prev.map(|p| render(key, &p, ctx)),
            }
        };
        self.inner.wake.notify_one();
        Ok(resp)
    }

    async fn delete_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        cond: Precondition,
    ) -> Result<DeleteResponse> {
        if cond == Precondition::Absent {
            return Err(Error::InvalidArgument(
                "a delete cannot require the key to be absent".into(),
            ));
        }
        self.disturb().await?;
        let ctx = self.ctx();
        let resp = {
            let mut state = self.inner.lock();
            for guard in guards {
                state
                    .check(&[], &guard.key, guard.cond)
                    .map_err(|e| state.explain(e, ctx))?;
            }
            let before = state.revision();
            let (prev, revision) = state.delete(key, cond).map_err(|e| state.explain(e, ctx))?;
            self.inner.publish(&state, before);
            DeleteResponse {
                prev: render(key, &prev, ctx),
                revision,
            }
        };
        self.inner.wake.notify_one();
        Ok(resp)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        Ok(self.watch_with_progress(prefix, after).await?.0)
    }

    async fn watch_with_progress(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(WatchStream, WatchProgress)> {
        self.disturb().await?;
        let mut state = self.inner.lock();
        let weak: Weak<dyn HistorySource> = Arc::downgrade(&self.inner) as Weak<Inner>;
        let watch = self.inner.hub.watch_with_progress(weak, prefix, after);
        // History older than the window is gone even if nothing was written since.
        state.expire_history();
        history::check_start(after, state.revision(), state.compacted())?;
        Ok(watch)
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.inner.lock().revision())
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.inner.lock().compacted())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.lock().compact(revision)
    }

    async fn lease_grant(&self, _ttl: Duration) -> Result<LeaseId> {
        Err(unsupported())
    }

    async fn lease_keep_alive(&self, _id: LeaseId) -> Result<()> {
        Err(unsupported())
    }

    async fn lease_revoke(&self, _id: LeaseId) -> Result<()> {
        Err(unsupported())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::clock::SystemClock;

    fn cluster(history: Retention) -> SimCluster {
        SimCluster::new(
            "c-1",
            Arc::new(BTreeMap::new()),
            Arc::new(SystemClock),
            Arc::new(std::sync::RwLock::new(Arc::new(FaultModel::none()))),
            history,
        )
    }

    #[test]
    fn a_simulated_cluster_behaves_like_the_reference_store() {
        // The store's model-based property test: random puts, CAS, deletes, ranges, snapshot
        // reads and watches against a model. History is kept long enough for every case.
        shoal_store::conformance::model_check(
            || {
                let forever = Retention {
                    window: Duration::from_secs(24 * 3600),
                    max_bytes: usize::MAX,
                };
                cluster(forever).store()
            },
            64,
        );
    }

    #[tokio::test]
    async fn an_erroring_api_fails_its_share_of_requests_and_recovers() {
        let c = cluster(crate::state::DEFAULT_RETENTION);
        let store = c.store();
        let profile = crate::faults::FaultProfile::from_yaml(
            "seed: 3\nfaults:\n  - apiServer: {name: flaky, errorRate: 0.3, errorCode: 503}\n",
        )
        .unwrap();
        let epoch = shoal_core::clock::Clock::now(&SystemClock);
        *c.faults().write().unwrap() = Arc::new(FaultModel::compile(&profile, epoch).unwrap());
        let mut failed = 0;
        for _ in 0..1000 {
            if let Err(e) = store.get("/k").await {
                assert!(matches!(e, Error::Unavailable(_)), "{e}");
                failed += 1;
            }
        }
        assert!((250..350).contains(&failed), "{failed} of 1000 failed");
        *c.faults().write().unwrap() = Arc::new(FaultModel::none());
        for _ in 0..100 {
            store.get("/k").await.expect("healthy again");
        }
    }
}
