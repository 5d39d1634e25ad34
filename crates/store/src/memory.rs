//! The in-memory backend: tests, the simulator, and the reference the others are held to.
//!
//! ```text
//!  Mutex<State>
//!  ├─ kvs:    BTreeMap<key, KeyValue>      current state, in key order (range = BTreeMap::range)
//!  ├─ log:    VecDeque<Event>              one event per revision, (compacted, revision]
//!  ├─ leases: HashMap<LeaseId, Lease>      deadline (tokio Instant) + attached keys
//!  └─ revision, compacted, next_lease
//! ```
//!
//! Every operation takes the one mutex, applies itself and, for writes, publishes its
//! event to the [`WatchHub`] *while still holding the lock*, which is what keeps
//! publication in revision order. Nothing awaits under the lock.
//!
//! Leases expire on tokio's clock (so `start_paused` tests run them instantly). A sweeper
//! task, started by the first `lease_grant`, sleeps until the earliest deadline and holds
//! only a `Weak` reference: dropping the backend wakes it and it exits.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use crate::history::{self, HistoryPage, HistorySource, WatchHub};
use crate::{
    Backend, DeleteResponse, Error, Event, Guard, KeyValue, LeaseId, Precondition, PutResponse,
    RangeRequest, RangeResponse, Result, Revision, WatchProgress, WatchStream,
};

/// A store that lives in the process's memory.
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // try_lock: formatting must not deadlock when the lock is held (e.g. by a caller
        // logging while it holds it).
        let mut f = f.debug_struct("MemoryBackend");
        if let Ok(state) = self.inner.state.try_lock() {
            f.field("revision", &state.revision)
                .field("compacted", &state.compacted)
                .field("keys", &state.kvs.len())
                .field("leases", &state.leases.len());
        }
        f.finish_non_exhaustive()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// An empty store at revision 0. Needs no runtime; the lease sweeper starts with the
    /// first lease.
    pub fn new() -> Self {
        MemoryBackend {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                hub: WatchHub::new(),
                sweeper_wake: Arc::new(Notify::new()),
                sweeper_started: AtomicBool::new(false),
            }),
        }
    }

    fn start_sweeper(&self) {
        if self.inner.sweeper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        let wake = self.inner.sweeper_wake.clone();
        tokio::spawn(
            sweep_leases(inner, wake).instrument(tracing::info_span!("memory_lease_sweeper")),
        );
    }
}

struct Inner {
    state: Mutex<State>,
    hub: WatchHub,
    /// Wakes the sweeper: a new lease may expire sooner, or the backend is gone.
    sweeper_wake: Arc<Notify>,
    sweeper_started: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The sweeper holds a Weak: wake it so it notices and exits now, not at the next
        // deadline.
        self.sweeper_wake.notify_one();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves State consistent: every mutation below
        // completes or does nothing before anything can panic. So poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Revokes every lease whose deadline passed; returns the next deadline, if any.
    fn expire_due(&self, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        let due: Vec<LeaseId> = state
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut events = Vec::new();
        for id in due {
            tracing::debug!(lease = id, "lease expired");
            events.extend(state.revoke(id));
        }
        self.hub.publish(events);
        state.leases.values().map(|lease| lease.deadline).min()
    }
}

/// The lease sweeper: revokes leases as their deadlines pass, until the backend is dropped.
async fn sweep_leases(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = match inner.upgrade() {
            Some(inner) => inner.expire_due(Instant::now()),
            None => return,
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

#[derive(Default)]
struct State {
    revision: Revision,
    compacted: Revision,
    kvs: BTreeMap<String, KeyValue>,
    /// The event of every revision in `(compacted, revision]`, oldest first.
    log: VecDeque<Event>,
    leases: HashMap<LeaseId, Lease>,
    /// The last lease id handed out.
    last_lease: LeaseId,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

impl State {
    fn live_lease(&mut self, id: LeaseId, now: Instant) -> Result<&mut Lease> {
        match self.leases.get_mut(&id) {
            Some(lease) if lease.deadline > now => Ok(lease),
            _ => Err(Error::LeaseNotFound(id)),
        }
    }

    /// Checks `guards` against the current state, in order.
    fn check_guards(&self, guards: &[Guard]) -> Result<()> {
        Guard::check_all(guards, |key| self.kvs.get(key))
    }

    fn put(
        &mut self,
        key: &str,
        value: Bytes,
        cond: Precondition,
        lease: Option<LeaseId>,
        now: Instant,
    ) -> Result<(PutResponse, Event)> {
        let prev = self.kvs.get(key);
        cond.check(key, prev)?;
        let prev = prev.cloned();
        if let Some(id) = lease {
            self.live_lease(id, now)?;
        }
        let revision = self.revision + 1;
        let kv = KeyValue::after_put(key, value, prev.as_ref(), revision, lease);
        self.detach(prev.as_ref());
        if let Some(lease) = lease.and_then(|id| self.leases.get_mut(&id)) {
            lease.keys.insert(key.to_owned());
        }
        self.kvs.insert(key.to_owned(), kv.clone());
        let event = Event::Put {
            kv: kv.clone(),
            prev: prev.clone(),
        };
        self.record(event.clone());
        Ok((PutResponse { kv, prev }, event))
    }

    fn delete(&mut self, key: &str, cond: Precondition) -> Result<(DeleteResponse, Event)> {
        if cond == Precondition::Absent {
            return Err(Error::InvalidArgument(
                "a delete cannot require the key to be absent".into(),
            ));
        }
        let prev = self.kvs.get(key);
        // Deleting a missing key fails whatever the precondition.
        Precondition::Present.check(key, prev)?;
        cond.check(key, prev)?;
        Ok(self.remove(key))
    }

    /// Deletes `key`, which exists, at the next revision.
    fn remove(&mut self, key: &str) -> (DeleteResponse, Event) {
        let prev = self
            .kvs
            .remove(key)
            .expect("remove is only called for a key that exists");
        self.detach(Some(&prev));
        let revision = self.revision + 1;
        let event = Event::Delete {
            prev: prev.clone(),
            revision,
        };
        self.record(event.clone());
        (DeleteResponse { prev, revision }, event)
    }

    /// Forgets that `kv`'s lease holds its key.
    fn detach(&mut self, kv: Option<&KeyValue>) {
        if let Some(kv) = kv
            && let Some(lease) = kv.lease.and_then(|id| self.leases.get_mut(&id))
        {
            lease.keys.remove(&kv.key);
        }
    }

    /// Appends the event of the next revision.
    fn record(&mut self, event: Event) {
        self.revision += 1;
        debug_assert_eq!(event.revision(), self.revision);
        self.log.push_back(event);
    }

    /// Removes lease `id` and deletes its keys; returns their events.
    fn revoke(&mut self, id: LeaseId) -> Vec<Event> {
        let Some(lease) = self.leases.remove(&id) else {
            return Vec::new();
        };
        lease
            .keys
            .iter()
            .map(|key| self.remove(key).1)
            .collect::<Vec<_>>()
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
        let state = self.lock();
        history::check_start(after, state.revision, state.compacted)?;
        let through = state.revision.min(after.saturating_add(max_revisions));
        // log[i] holds revision compacted + 1 + i.
        let start = usize::try_from(after - state.compacted).unwrap_or(0);
        let end = usize::try_from(through - state.compacted).unwrap_or(0);
        let events = state
            .log
            .range(start..end)
            .filter(|event| event.key().starts_with(&prefix))
            .cloned()
            .collect();
        Ok(HistoryPage {
            events,
            through,
            current: state.revision,
        })
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.inner.lock().kvs.get(key).cloned())
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

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let state = self.inner.lock();
        let lower = match &req.start_after {
            Some(after) if after.as_str() >= req.prefix.as_str() => {
                std::ops::Bound::Excluded(after.as_str())
            }
            _ => std::ops::Bound::Included(req.prefix.as_str()),
        };
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit
        };
        let mut matching = state
            .kvs
            .range::<str, _>((lower, std::ops::Bound::Unbounded))
            .map(|(_, kv)| kv)
            .take_while(|kv| kv.key.starts_with(&req.prefix));
        let kvs: Vec<KeyValue> = matching.by_ref().take(limit).cloned().collect();
        let more = matching.next().is_some();
        Ok(RangeResponse {
            kvs,
            more,
            revision: state.revision,
        })
    }

    async fn put_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        value: Bytes,
        cond: Precondition,
        lease: Option<LeaseId>,
    ) -> Result<PutResponse> {
        let mut state = self.inner.lock();
        state.check_guards(guards)?;
        let (resp, event) = state.put(key, value, cond, lease, Instant::now())?;
        self.inner.hub.publish(vec![event]);
        Ok(resp)
    }

    async fn delete_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        cond: Precondition,
    ) -> Result<DeleteResponse> {
        crate::deletable(cond)?;
        let mut state = self.inner.lock();
        state.check_guards(guards)?;
        let (resp, event) = state.delete(key, cond)?;
        self.inner.hub.publish(vec![event]);
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
        let state = self.inner.lock();
        // Subscribing under the lock is not needed for correctness (the watcher dedups by
        // revision) but makes the bounds check and the subscription one instant.
        let weak: Weak<dyn HistorySource> = Arc::downgrade(&self.inner) as Weak<Inner>;
        let watch = self.inner.hub.watch_with_progress(weak, prefix, after);
        history::check_start(after, state.revision, state.compacted)?;
        Ok(watch)
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.inner.lock().revision)
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.inner.lock().compacted)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut state = self.inner.lock();
        if revision > state.revision {
            return Err(Error::FutureRevision {
                requested: revision,
                current: state.revision,
            });
        }
        if revision <= state.compacted {
            return Ok(());
        }
        let forget = usize::try_from(revision - state.compacted)
            .map_err(|_| Error::InvalidArgument(format!("cannot compact to {revision}")))?;
        state.log.drain(..forget);
        state.compacted = revision;
        Ok(())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(Error::InvalidArgument(
                "a lease needs a positive ttl".into(),
            ));
        }
        self.start_sweeper();
        let id = {
            let mut state = self.inner.lock();
            state.last_lease += 1;
            let id = state.last_lease;
            state.leases.insert(
                id,
                Lease {
                    ttl,
                    deadline: Instant::now() + ttl,
                    keys: BTreeSet::new(),
                },
            );
            id
        };
        self.inner.sweeper_wake.notify_one();
        Ok(id)
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<()> {
        let now = Instant::now();
        let mut state = self.inner.lock();
        let lease = state.live_lease(id, now)?;
        lease.deadline = now + lease.ttl;
        Ok(())
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        let mut state = self.inner.lock();
        state.live_lease(id, Instant::now())?;
        let events = state.revoke(id);
        self.inner.hub.publish(events);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_backend_passes_the_conformance_suite() {
        conformance::test_suite(Store::memory).await;
    }

    #[test]
    fn memory_backend_agrees_with_the_model() {
        conformance::model_check(Store::memory, 256);
    }

    #[tokio::test(start_paused = true)]
    async fn lease_expires_on_the_paused_clock_without_real_waiting() {
        let store = Store::memory();
        let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
        store
            .put(
                "k",
                Bytes::from_static(b"v"),
                Precondition::None,
                Some(lease),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(store.get("k").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(store.get("k").await.unwrap(), None);
        assert!(matches!(
            store.lease_keep_alive(lease).await,
            Err(Error::LeaseNotFound(id)) if id == lease
        ));
    }

    #[tokio::test]
    async fn dropping_a_watch_stream_unsubscribes_it() {
        let backend = MemoryBackend::new();
        let inner = backend.inner.clone();
        let store = Store::new(backend);
        let first = store.watch("", 0).await.unwrap();
        let second = store.watch("a/", 0).await.unwrap();
        assert_eq!(inner.hub.watchers(), 2);
        drop(first);
        assert_eq!(inner.hub.watchers(), 1);
        drop(second);
        assert_eq!(inner.hub.watchers(), 0);
        assert_eq!(
            Arc::strong_count(&inner),
            2,
            "a stream kept a strong reference"
        );
    }

    #[tokio::test]
    async fn dropping_the_backend_stops_the_sweeper_and_ends_watches() {
        use futures::StreamExt;

        let backend = MemoryBackend::new();
        let inner = Arc::downgrade(&backend.inner);
        let sweeper_wake = backend.inner.sweeper_wake.clone();
        let store = Store::new(backend);
        store.lease_grant(Duration::from_secs(3600)).await.unwrap();
        let mut watch = store.watch("", 0).await.unwrap();
        // Ours, the backend's and the sweeper's.
        assert_eq!(Arc::strong_count(&sweeper_wake), 3);

        drop(store);
        assert!(
            inner.upgrade().is_none(),
            "something kept the backend alive"
        );
        tokio::time::timeout(Duration::from_secs(5), async {
            while Arc::strong_count(&sweeper_wake) > 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the lease sweeper outlived its backend");
        let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("watch did not notice the store was dropped");
        assert!(matches!(end, Some(Err(Error::Closed))), "{end:?}");
        assert!(watch.next().await.is_none());
    }
}
