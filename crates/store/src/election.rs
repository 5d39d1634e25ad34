//! Leader election over store leases, with fencing: at most one replica acts for a role,
//! and a replica that lost the role cannot write as if it still had it.
//!
//! ```text
//!  /registry/coordination.k8s.io/leases/shoal-system/<role>   (one key per role)
//!    value: a coordination.k8s.io/v1 Lease as JSON (holderIdentity, renewTime, …)
//!    lease: the holder's store lease (TTL); expiry or revoke deletes the key
//!
//!            ┌──────────── key deleted (watch) ─────────────┐
//!            ▼                                               │
//!  Follower ──▶ Candidate ──put(Absent, lease)──▶ Leader { fence } ──▶ Lost ──┐
//!     ▲            │ key exists                    │ keep-alive failed,      │
//!     └────────────┘                               │ key changed, or         │
//!     ▲                                            │ renewal + TTL − margin  │
//!     └────────────────────────────────────────────┼─────────────────────────┘
//!                                  cancel (resign) ▼
//!                                               Stopped
//! ```
//!
//! A candidate grants itself a store lease and creates the role's key with
//! [`Precondition::Absent`] attached to it: the store lets exactly one create win. The
//! winner leads; the others watch the key and campaign again when it is deleted, which
//! happens when the leader's lease expires (it died or was partitioned away) or is
//! revoked (it resigned). The leader renews every `ttl / 3`: a keep-alive, then a rewrite
//! of the Lease object's `renewTime` conditional on the key still being its incarnation.
//!
//! # Fencing
//!
//! The leader's [`Fence`] is the election key's `create_revision`. Every write the leader
//! makes *as leader* carries it as a [`Guard`] ([`Fence::guard`], [`Fence::put`],
//! [`Fence::delete`]), so the store checks "the election key is still the incarnation I
//! created" in the same atomic step as the write. A new leader can only exist after the
//! old key was deleted (the create requires it absent), and the re-created key has a
//! larger `create_revision`; from that revision on, every fenced write of the old leader
//! fails, whatever the old leader believes, however long it was paused, whatever its
//! clock says. Safety rests on the store alone.
//!
//! Liveness and politeness rest on the clock: the leader considers itself [`Lost`] at
//! `start of its last successful keep-alive + TTL − margin` on the monotonic clock
//! (tokio's, so paused-time tests run it instantly). The store's lease cannot expire
//! before `start + TTL` (the store starts counting when it receives the keep-alive, which
//! is later), so the leader stops acting before anyone else can start. The wall clock is
//! used only for the times shown in the Lease object.
//!
//! [`Lost`]: Leadership::Lost

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    DeleteResponse, Error, Event, Guard, KeyValue, LeaseId, Precondition, PutResponse,
    RangeRequest, Result, Revision, Store, WatchStream,
};

/// Where roles' keys live: the path at which the API server keeps
/// `coordination.k8s.io/v1` Leases, so a later increment can serve them read-only.
pub const LEASES_PREFIX: &str = "/registry/coordination.k8s.io/leases/";

/// The namespace of shoal's own Leases.
pub const NAMESPACE: &str = "shoal-system";

/// The store key of `role`'s Lease.
pub fn role_key(role: &str) -> String {
    format!("{LEASES_PREFIX}{NAMESPACE}/{role}")
}

/// Proof of leadership for one term: the election key's incarnation. Carry it in every
/// write made as leader; the store refuses it once the term is over.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The role's election key.
    pub key: String,
    /// The `create_revision` of the key this term created: unique to the term.
    pub create_revision: Revision,
}

impl Fence {
    /// The guard that makes a write conditional on this term still being current.
    pub fn guard(&self) -> Guard {
        Guard::new(
            self.key.clone(),
            Precondition::CreateRevision(self.create_revision),
        )
    }

    /// A put that happens only while this term is current.
    ///
    /// # Errors
    ///
    /// [`Error::PreconditionFailed`] naming the election key when the term is over;
    /// otherwise as [`crate::Backend::put`].
    pub async fn put(
        &self,
        store: &Store,
        key: &str,
        value: Bytes,
        cond: Precondition,
        lease: Option<LeaseId>,
    ) -> Result<PutResponse> {
        store
            .put_guarded(&[self.guard()], key, value, cond, lease)
            .await
    }

    /// A delete that happens only while this term is current.
    ///
    /// # Errors
    ///
    /// As [`Fence::put`] and [`crate::Backend::delete`].
    pub async fn delete(
        &self,
        store: &Store,
        key: &str,
        cond: Precondition,
    ) -> Result<DeleteResponse> {
        store.delete_guarded(&[self.guard()], key, cond).await
    }

    /// Whether `err` says this fence's term is over (its guard failed).
    pub fn rejected(&self, err: &Error) -> bool {
        matches!(err, Error::PreconditionFailed { key, .. } if *key == self.key)
    }
}

/// Why a leader stopped leading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// A keep-alive of its store lease failed (the lease expired, or the store refused).
    KeepAliveFailed,
    /// The election key was deleted or is no longer the term's incarnation.
    KeyChanged,
    /// No keep-alive succeeded for `TTL − margin`: another replica may soon lead.
    DeadlineReached,
}

/// One replica's standing in one role's election. Consumers act only in `Leader`, and a
/// new `fence` is a new term (the receiver may skip states in between, so compare
/// fences rather than count transitions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Not leading. `holder` is the identity shown in the current Lease, if one exists.
    /// → `Candidate` when the key is (or becomes) absent; → `Stopped` on cancel.
    Follower { holder: Option<String> },
    /// Trying to create the election key. → `Leader` when the create wins; → `Follower`
    /// when someone else's key is there; → `Stopped` on cancel.
    Candidate,
    /// Leading: write only with `fence`. → `Lost` on a failed keep-alive, a changed key
    /// or the deadline; → `Stopped` on cancel (resigning: the lease is revoked).
    Leader { fence: Fence },
    /// Was leading and must stop acting now. → `Follower` or `Candidate` after a pause.
    Lost { fence: Fence, reason: LostReason },
    /// The elector ended (cancelled). Terminal.
    Stopped,
}

impl Leadership {
    /// The fence, when leading.
    pub fn fence(&self) -> Option<&Fence> {
        match self {
            Leadership::Leader { fence } => Some(fence),
            _ => None,
        }
    }
}

/// How an [`Elector`] campaigns and renews.
#[derive(Clone, Debug)]
pub struct ElectorConfig {
    /// The role elected for (the Lease's name).
    pub role: String,
    /// This replica's identity (the Lease's `holderIdentity`).
    pub identity: String,
    /// The store lease's TTL: how long a dead leader blocks the role.
    pub ttl: Duration,
    /// How often the leader renews; `ttl / 3` by default.
    pub renew_every: Duration,
    /// Subtracted from the TTL to get the leader's own deadline: covers the clocks of
    /// this process and the store running at slightly different rates.
    pub margin: Duration,
    /// The pause after a failed store call or a lost term before campaigning again.
    pub retry_after: Duration,
    /// Wall-clock time for the Lease's `acquireTime` / `renewTime` (display only).
    pub wall_clock: fn() -> jiff::Timestamp,
}

impl ElectorConfig {
    /// Defaults for `role` held by `identity` with `ttl`: renew every `ttl / 3`, margin
    /// `ttl / 10`, retry after `ttl / 10`.
    pub fn new(role: impl Into<String>, identity: impl Into<String>, ttl: Duration) -> Self {
        ElectorConfig {
            role: role.into(),
            identity: identity.into(),
            ttl,
            renew_every: ttl / 3,
            margin: ttl / 10,
            retry_after: ttl / 10,
            wall_clock: jiff::Timestamp::now,
        }
    }
}

/// A running election for one role; see the [module docs](self).
#[derive(Debug)]
pub struct Elector {
    leadership: watch::Receiver<Leadership>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Elector {
    /// Starts campaigning for `config.role` on `store` in a task of its own, until
    /// `cancel` (or [`Elector::resign`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the TTL does not exceed the margin or the renewal
    /// interval is not shorter than `ttl − margin`.
    pub fn spawn(store: Store, config: ElectorConfig, cancel: CancellationToken) -> Result<Self> {
        if config.ttl <= config.margin
            || config.renew_every.is_zero()
            || config.renew_every >= config.ttl - config.margin
        {
            return Err(Error::InvalidArgument(format!(
                "election of {:?}: need 0 < renew_every ({:?}) < ttl ({:?}) - margin ({:?})",
                config.role, config.renew_every, config.ttl, config.margin
            )));
        }
        let (tx, leadership) = watch::channel(Leadership::Follower { holder: None });
        let span = tracing::info_span!("elector", role = %config.role, identity = %config.identity);
        let campaign = Campaign {
            key: role_key(&config.role),
            store,
            config,
            tx,
            cancel: cancel.clone(),
            last_seen: None,
        };
        let task = tokio::spawn(campaign.run().instrument(span));
        Ok(Elector {
            leadership,
            cancel,
            task,
        })
    }

    /// The replica's standing, as it changes.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// Stops campaigning and, if leading, resigns: revokes the lease so the role's key is
    /// deleted now and another replica takes over without waiting for the TTL. Returns
    /// once done.
    pub async fn resign(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "elector task failed");
        }
    }

    /// Test hook: the process freezes (SIGSTOP, a long GC pause): it neither renews nor
    /// resigns, and its last view of its leadership stays what it was.
    #[cfg(test)]
    fn freeze(&self) {
        self.task.abort();
    }
}

/// The elector's task state.
struct Campaign {
    key: String,
    store: Store,
    config: ElectorConfig,
    tx: watch::Sender<Leadership>,
    cancel: CancellationToken,
    /// The last Lease value seen, to count `leaseTransitions` across holders.
    last_seen: Option<serde_json::Value>,
}

/// A won election.
struct Term {
    fence: Fence,
    lease: LeaseId,
    /// When the lease's TTL started, at the latest (taken before the grant was sent).
    granted_at: Instant,
    /// Wall-clock time of the acquisition (display only).
    acquired: jiff::Timestamp,
}

/// How a term ended.
enum TermEnd {
    Lost(LostReason),
    Cancelled,
}

impl Campaign {
    async fn run(mut self) {
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            self.set(Leadership::Candidate);
            match self.campaign().await {
                Ok(Some(term)) => {
                    let fence = term.fence.clone();
                    tracing::info!(create_revision = fence.create_revision, "leading");
                    self.set(Leadership::Leader {
                        fence: fence.clone(),
                    });
                    match self.lead(&term).await {
                        TermEnd::Cancelled => {
                            self.revoke(term.lease).await;
                            break;
                        }
                        TermEnd::Lost(reason) => {
                            tracing::warn!(?reason, "lost leadership");
                            self.set(Leadership::Lost { fence, reason });
                            // Free the role if our lease still holds it: we stopped acting.
                            self.revoke(term.lease).await;
                            if self.pause().await {
                                break;
                            }
                        }
                    }
                }
                Ok(None) => {
                    if self.follow().await {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "campaign failed");
                    if self.pause().await {
                        break;
                    }
                }
            }
        }
        self.set(Leadership::Stopped);
    }

    fn set(&self, state: Leadership) {
        self.tx.send_replace(state);
    }

    /// Waits `retry_after`; true when cancelled meanwhile.
    async fn pause(&self) -> bool {
        tokio::select! {
            () = self.cancel.cancelled() => true,
            () = tokio::time::sleep(self.config.retry_after) => false,
        }
    }

    /// One attempt to create the key: `Some` when it won (the fence, the lease and when
    /// its TTL started at the latest), `None` when someone else holds the role.
    async fn campaign(&mut self) -> Result<Option<Term>> {
        // Before the grant is sent: the store's TTL starts later than this.
        let granted_at = Instant::now();
        let lease = self.store.lease_grant(self.config.ttl).await?;
        let now = (self.config.wall_clock)();
        let value = self.lease_object(now, now);
        match self
            .store
            .put(&self.key, value, Precondition::Absent, Some(lease))
            .await
        {
            Ok(created) => {
                let fence = Fence {
                    key: self.key.clone(),
                    create_revision: created.kv.create_revision,
                };
                Ok(Some(Term {
                    fence,
                    lease,
                    granted_at,
                    acquired: now,
                }))
            }
            Err(err) => {
                // Not ours to keep: a lease without keys would only linger until its TTL.
                let _ = self.store.lease_revoke(lease).await;
                match err {
                    Error::PreconditionFailed { .. } => Ok(None),
                    err => Err(err),
                }
            }
        }
    }

    /// Leads until the term ends.
    async fn lead(&mut self, term: &Term) -> TermEnd {
        let fence = &term.fence;
        let ttl_left = self.config.ttl - self.config.margin;
        let mut deadline = term.granted_at + ttl_left;
        let mut watch = self.watch_from(fence.create_revision).await;
        let mut renew = tokio::time::interval_at(
            Instant::now() + self.config.renew_every,
            self.config.renew_every,
        );
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return TermEnd::Cancelled,
                () = tokio::time::sleep_until(deadline) => {
                    return TermEnd::Lost(LostReason::DeadlineReached);
                }
                event = next_event(&mut watch) => match event {
                    Some(Ok(event)) if event.key() == self.key => {
                        if !still_ours(&event, fence) {
                            return TermEnd::Lost(LostReason::KeyChanged);
                        }
                    }
                    Some(Ok(_)) => {}
                    // The watch broke: reopen it from the key as it is now.
                    _ => match self.read().await {
                        Ok((Some(kv), revision)) if kv.create_revision == fence.create_revision => {
                            watch = self.watch_from(revision).await;
                        }
                        Ok(_) => return TermEnd::Lost(LostReason::KeyChanged),
                        Err(err) => {
                            tracing::warn!(error = %err, "re-reading the election key failed");
                            watch = None;
                        }
                    },
                },
                _ = renew.tick() => {
                    let started = Instant::now();
                    let renewed = tokio::time::timeout_at(
                        deadline,
                        self.renew(term),
                    );
                    match renewed.await {
                        Err(_elapsed) => return TermEnd::Lost(LostReason::DeadlineReached),
                        Ok(Err(reason)) => return TermEnd::Lost(reason),
                        Ok(Ok(())) => deadline = started + ttl_left,
                    }
                }
            }
        }
    }

    /// One renewal: extend the lease, then show it in the Lease object's `renewTime`.
    async fn renew(&self, term: &Term) -> Result<(), LostReason> {
        if let Err(err) = self.store.lease_keep_alive(term.lease).await {
            tracing::warn!(error = %err, "keep-alive failed");
            return Err(LostReason::KeepAliveFailed);
        }
        let fence = &term.fence;
        let value = self.lease_object(term.acquired, (self.config.wall_clock)());
        match fence
            .put(
                &self.store,
                &self.key,
                value,
                Precondition::None,
                Some(term.lease),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if fence.rejected(&err) => Err(LostReason::KeyChanged),
            // The keep-alive succeeded: the lease holds, only the display is stale.
            Err(err) => {
                tracing::warn!(error = %err, "updating renewTime failed");
                Ok(())
            }
        }
    }

    /// Follows another holder until the key is gone; true when cancelled.
    async fn follow(&mut self) -> bool {
        let (current, revision) = match self.read().await {
            Ok(read) => read,
            Err(err) => {
                tracing::warn!(error = %err, "reading the election key failed");
                return self.pause().await;
            }
        };
        let Some(kv) = current else {
            return false;
        };
        self.observe(&kv);
        let Some(mut watch) = self.watch_from(revision).await else {
            return self.pause().await;
        };
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return true,
                event = watch.next() => match event {
                    Some(Ok(Event::Put { kv, .. })) if kv.key == self.key => self.observe(&kv),
                    Some(Ok(Event::Delete { prev, .. })) if prev.key == self.key => {
                        tracing::info!("the role is free");
                        return false;
                    }
                    Some(Ok(_)) => {}
                    // Re-read and watch again.
                    Some(Err(_)) | None => return false,
                },
            }
        }
    }

    fn observe(&mut self, kv: &KeyValue) {
        let lease: Option<serde_json::Value> = serde_json::from_slice(&kv.value).ok();
        let holder = lease
            .as_ref()
            .and_then(|l| l["spec"]["holderIdentity"].as_str())
            .map(str::to_owned);
        self.last_seen = lease;
        self.set(Leadership::Follower { holder });
    }

    /// The key and the store's revision, read together.
    async fn read(&self) -> Result<(Option<KeyValue>, Revision)> {
        let resp = self
            .store
            .range(RangeRequest {
                prefix: self.key.clone(),
                start_after: None,
                limit: 0,
            })
            .await?;
        let kv = resp.kvs.into_iter().find(|kv| kv.key == self.key);
        Ok((kv, resp.revision))
    }

    async fn watch_from(&self, after: Revision) -> Option<WatchStream> {
        match self.store.watch(&self.key, after).await {
            Ok(watch) => Some(watch),
            Err(err) => {
                tracing::warn!(error = %err, "watching the election key failed");
                None
            }
        }
    }

    /// Revokes the term's lease (deleting the key) so the next leader need not wait
    /// for the TTL. Best effort: a lease that already expired is what we wanted anyway.
    async fn revoke(&self, lease: LeaseId) {
        match tokio::time::timeout(self.config.ttl, self.store.lease_revoke(lease)).await {
            Ok(Ok(())) => tracing::info!("released the role"),
            Ok(Err(Error::LeaseNotFound(_))) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "revoking the lease failed"),
            Err(_) => tracing::warn!("revoking the lease timed out"),
        }
    }

    /// The role's Lease object, as the API server will serve it.
    fn lease_object(&self, acquired: jiff::Timestamp, renewed: jiff::Timestamp) -> Bytes {
        let previous = self.last_seen.as_ref().map(|l| &l["spec"]);
        let transitions = previous.map_or(0, |spec| {
            let count = spec["leaseTransitions"].as_i64().unwrap_or(0);
            let same = spec["holderIdentity"].as_str() == Some(&self.config.identity);
            if same { count } else { count + 1 }
        });
        let seconds = self.config.ttl.as_secs() + u64::from(self.config.ttl.subsec_nanos() > 0);
        let lease = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.config.role,
                "namespace": NAMESPACE,
                "creationTimestamp": format!("{:.0}", acquired),
            },
            "spec": {
                "holderIdentity": self.config.identity,
                "leaseDurationSeconds": seconds,
                "acquireTime": micro_time(acquired),
                "renewTime": micro_time(renewed),
                "leaseTransitions": transitions,
            },
        });
        Bytes::from(serde_json::to_vec(&lease).expect("a JSON value serializes"))
    }
}

impl fmt::Debug for Campaign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Campaign")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Kubernetes `MicroTime`: RFC 3339 with microseconds.
fn micro_time(at: jiff::Timestamp) -> String {
    format!("{at:.6}")
}

/// Whether a change to the election key leaves it the term's incarnation.
fn still_ours(event: &Event, fence: &Fence) -> bool {
    matches!(event, Event::Put { kv, .. } if kv.create_revision == fence.create_revision)
}

/// The next event of an optional watch; pending forever without one.
async fn next_event(watch: &mut Option<WatchStream>) -> Option<Result<Event>> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::{Backend, RangeResponse};

    /// How long any single wait may take before the test calls it hung.
    const HANG: Duration = Duration::from_secs(30);

    fn mk_elector(store: &Store, identity: &str, ttl: Duration) -> Elector {
        let mut config = ElectorConfig::new("taskflow", identity, ttl);
        // Frozen wall clock: the Lease's times are display only.
        config.wall_clock = || jiff::Timestamp::UNIX_EPOCH;
        Elector::spawn(store.clone(), config, CancellationToken::new()).expect("valid config")
    }

    /// Waits until `rx` shows a state for which `pred` holds; returns it.
    async fn wait_for(
        rx: &mut watch::Receiver<Leadership>,
        what: &str,
        pred: impl Fn(&Leadership) -> bool,
    ) -> Leadership {
        let seen = tokio::time::timeout(HANG, rx.wait_for(|state| pred(state)))
            .await
            .unwrap_or_else(|_| panic!("hung waiting for {what}"))
            .unwrap_or_else(|_| panic!("elector ended while waiting for {what}"));
        seen.clone()
    }

    fn is_leader(state: &Leadership) -> bool {
        matches!(state, Leadership::Leader { .. })
    }

    /// Waits until one of the two leads; returns (leader, the other), indices into `electors`.
    async fn one_leads(electors: &[Elector; 2]) -> (usize, usize) {
        let mut a = electors[0].leadership();
        let mut b = electors[1].leadership();
        tokio::time::timeout(HANG, async {
            tokio::select! {
                _ = a.wait_for(is_leader) => (0, 1),
                _ = b.wait_for(is_leader) => (1, 0),
            }
        })
        .await
        .expect("hung waiting for a first leader")
    }

    fn holder(value: &[u8]) -> String {
        let lease: serde_json::Value = serde_json::from_slice(value).expect("a Lease as JSON");
        lease["spec"]["holderIdentity"]
            .as_str()
            .expect("holderIdentity")
            .to_owned()
    }

    // -- scenarios, run on every backend: `a` and `b` are two handles on one store --

    async fn two_electors_elect_exactly_one_leader(a: Store, b: Store, ttl: Duration) {
        let electors = [mk_elector(&a, "a", ttl), mk_elector(&b, "b", ttl)];
        let (leader, other) = one_leads(&electors).await;
        let names = ["a", "b"];
        // Several renewals later, still exactly one leader, and the other knows who.
        tokio::time::sleep(ttl * 2).await;
        assert!(is_leader(&electors[leader].leadership().borrow()));
        let mut follower = electors[other].leadership();
        let seen = wait_for(&mut follower, "the follower to see the holder", |s| {
            matches!(s, Leadership::Follower { holder: Some(_) })
        })
        .await;
        assert_eq!(
            seen,
            Leadership::Follower {
                holder: Some(names[leader].into())
            }
        );
        let kv = a
            .get(&role_key("taskflow"))
            .await
            .unwrap()
            .expect("the role's key");
        assert_eq!(holder(&kv.value), names[leader]);
        assert!(kv.version > 1, "the leader renews the Lease's renewTime");
        let lease: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(lease["kind"], "Lease");
        assert_eq!(lease["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(lease["metadata"]["namespace"], NAMESPACE);
        assert_eq!(lease["metadata"]["name"], "taskflow");
        assert!(lease["spec"]["leaseDurationSeconds"].as_u64().unwrap() >= 1);
        for elector in electors {
            elector.resign().await;
        }
    }

    async fn a_frozen_leader_is_replaced_and_its_fenced_writes_fail(
        a: Store,
        b: Store,
        ttl: Duration,
    ) {
        let stores = [a, b];
        let electors = [
            mk_elector(&stores[0], "a", ttl),
            mk_elector(&stores[1], "b", ttl),
        ];
        let (old, new) = one_leads(&electors).await;
        let old_fence = electors[old]
            .leadership()
            .borrow()
            .fence()
            .cloned()
            .unwrap();
        old_fence
            .put(
                &stores[old],
                "work/1",
                Bytes::from_static(b"old"),
                Precondition::None,
                None,
            )
            .await
            .expect("the leader writes under its fence");

        // The leader freezes: no renewals, no resignation, its view stays "Leader".
        let frozen_at = Instant::now();
        electors[old].freeze();
        let mut rx = electors[new].leadership();
        let Leadership::Leader { fence: new_fence } =
            wait_for(&mut rx, "the survivor to take over", is_leader).await
        else {
            unreachable!()
        };
        let takeover = frozen_at.elapsed();
        eprintln!("takeover after a freeze: {takeover:?} (ttl {ttl:?})");
        // The ttl, plus the store noticing the expiry (etcd checks every 0.5 s).
        assert!(
            takeover <= ttl + ttl / 2 + Duration::from_secs(1),
            "takeover took {takeover:?} with a ttl of {ttl:?}"
        );
        assert!(new_fence.create_revision > old_fence.create_revision);
        assert!(
            is_leader(&electors[old].leadership().borrow()),
            "frozen: still believes"
        );

        // The old leader wakes up and writes as leader: the store refuses.
        for late in [
            old_fence
                .put(
                    &stores[old],
                    "work/1",
                    Bytes::from_static(b"old, late"),
                    Precondition::None,
                    None,
                )
                .await
                .map(|_| ()),
            old_fence
                .put(
                    &stores[old],
                    "work/2",
                    Bytes::from_static(b"old, late"),
                    Precondition::Absent,
                    None,
                )
                .await
                .map(|_| ()),
            old_fence
                .delete(&stores[old], "work/1", Precondition::None)
                .await
                .map(|_| ()),
        ] {
            let err = late.expect_err("a deposed leader's fenced write must fail");
            assert!(old_fence.rejected(&err), "{err:?}");
        }
        let head = new_fence
            .put(
                &stores[new],
                "work/1",
                Bytes::from_static(b"new"),
                Precondition::None,
                None,
            )
            .await
            .expect("the new leader writes under its fence")
            .kv
            .mod_revision;

        // The store's history of the work: nothing by the old leader after the new one
        // acquired (`head` is the last work write; renewals keep bumping the revision).
        let mut history = stores[new].watch("work/", 0).await.unwrap();
        let mut events = Vec::new();
        while events.last().is_none_or(|e: &Event| e.revision() < head) {
            let next = tokio::time::timeout(HANG, history.next())
                .await
                .expect("history");
            match next {
                Some(Ok(event)) => events.push(event),
                other => panic!("history ended: {other:?}"),
            }
        }
        let writes: Vec<(Revision, Bytes)> = events
            .iter()
            .map(|e| match e {
                Event::Put { kv, .. } => (kv.mod_revision, kv.value.clone()),
                Event::Delete { revision, .. } => (*revision, Bytes::from_static(b"delete")),
            })
            .collect();
        assert_eq!(
            writes.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            vec![Bytes::from_static(b"old"), Bytes::from_static(b"new")],
            "{writes:?}"
        );
        assert!(writes[0].0 < new_fence.create_revision);
        for elector in electors {
            elector.resign().await;
        }
    }

    async fn resigning_hands_over_immediately(a: Store, b: Store, ttl: Duration) {
        let electors = [mk_elector(&a, "a", ttl), mk_elector(&b, "b", ttl)];
        let (leader, _) = one_leads(&electors).await;
        let [first, second] = electors;
        let (resigning, staying) = if leader == 0 {
            (first, second)
        } else {
            (second, first)
        };
        let mut rx = staying.leadership();
        let mut old = resigning.leadership();
        let started = Instant::now();
        resigning.resign().await;
        assert_eq!(*old.borrow_and_update(), Leadership::Stopped);
        wait_for(&mut rx, "the other to take over", is_leader).await;
        let handover = started.elapsed();
        eprintln!("handover after resigning: {handover:?} (ttl {ttl:?})");
        assert!(
            handover < ttl / 2,
            "handover took {handover:?}: resigning must not wait for the ttl ({ttl:?})"
        );
        staying.resign().await;
    }

    async fn all_scenarios(make: impl Fn() -> (Store, Store), ttl: Duration) {
        let (a, b) = make();
        two_electors_elect_exactly_one_leader(a, b, ttl).await;
        let (a, b) = make();
        a_frozen_leader_is_replaced_and_its_fenced_writes_fail(a, b, ttl).await;
        // A longer ttl here costs nothing (the handover does not wait for it) and
        // leaves a loaded machine room under the `ttl / 2` bound.
        let (a, b) = make();
        resigning_hands_over_immediately(a, b, ttl * 2).await;
    }

    // -- memory, on paused time --

    #[tokio::test(start_paused = true)]
    async fn memory_two_electors_elect_exactly_one_leader() {
        let store = Store::memory();
        two_electors_elect_exactly_one_leader(store.clone(), store, Duration::from_secs(3)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn memory_a_frozen_leader_is_replaced_and_its_fenced_writes_fail() {
        let store = Store::memory();
        let ttl = Duration::from_secs(3);
        a_frozen_leader_is_replaced_and_its_fenced_writes_fail(store.clone(), store, ttl).await;
    }

    #[tokio::test(start_paused = true)]
    async fn memory_resigning_hands_over_immediately() {
        let store = Store::memory();
        resigning_hands_over_immediately(store.clone(), store, Duration::from_secs(3)).await;
    }

    /// A store whose keep-alives and revokes hang once `stalled` is set: a leader cut off
    /// from it, which can neither renew nor resign.
    #[derive(Debug)]
    struct Stalling {
        inner: Store,
        stalled: Arc<AtomicBool>,
    }

    #[async_trait]
    impl Backend for Stalling {
        async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
            self.inner.get(key).await
        }
        async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
            self.inner.range(req).await
        }
        async fn range_at(&self, req: RangeRequest, revision: Revision) -> Result<RangeResponse> {
            self.inner.range_at(req, revision).await
        }
        async fn put(
            &self,
            key: &str,
            value: Bytes,
            cond: Precondition,
            lease: Option<LeaseId>,
        ) -> Result<PutResponse> {
            self.inner.put(key, value, cond, lease).await
        }
        async fn delete(&self, key: &str, cond: Precondition) -> Result<DeleteResponse> {
            self.inner.delete(key, cond).await
        }
        async fn put_guarded(
            &self,
            guards: &[Guard],
            key: &str,
            value: Bytes,
            cond: Precondition,
            lease: Option<LeaseId>,
        ) -> Result<PutResponse> {
            self.inner
                .put_guarded(guards, key, value, cond, lease)
                .await
        }
        async fn delete_guarded(
            &self,
            guards: &[Guard],
            key: &str,
            cond: Precondition,
        ) -> Result<DeleteResponse> {
            self.inner.delete_guarded(guards, key, cond).await
        }
        async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
            self.inner.watch(prefix, after).await
        }
        async fn current_revision(&self) -> Result<Revision> {
            self.inner.current_revision().await
        }
        async fn compacted_revision(&self) -> Result<Revision> {
            self.inner.compacted_revision().await
        }
        async fn compact(&self, revision: Revision) -> Result<()> {
            self.inner.compact(revision).await
        }
        async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
            self.inner.lease_grant(ttl).await
        }
        async fn lease_keep_alive(&self, id: LeaseId) -> Result<()> {
            if self.stalled.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            self.inner.lease_keep_alive(id).await
        }
        async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
            if self.stalled.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            self.inner.lease_revoke(id).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_cut_off_from_the_store_steps_down_before_anyone_else_can_lead() {
        let ttl = Duration::from_secs(3);
        let store = Store::memory();
        let stalled = Arc::new(AtomicBool::new(false));
        let cut_off = Store::new(Stalling {
            inner: store.clone(),
            stalled: stalled.clone(),
        });
        let a = mk_elector(&cut_off, "a", ttl);
        let mut a_rx = a.leadership();
        wait_for(&mut a_rx, "a to lead", is_leader).await;
        let b = mk_elector(&store, "b", ttl);
        let mut b_rx = b.leadership();
        wait_for(&mut b_rx, "b to follow a", |s| {
            *s == Leadership::Follower {
                holder: Some("a".into()),
            }
        })
        .await;

        tokio::time::sleep(ttl).await;
        stalled.store(true, Ordering::SeqCst);
        let lost = wait_for(&mut a_rx, "a to step down", |s| {
            matches!(s, Leadership::Lost { .. })
        })
        .await;
        let lost_at = Instant::now();
        assert!(
            matches!(
                lost,
                Leadership::Lost {
                    reason: LostReason::DeadlineReached,
                    ..
                }
            ),
            "{lost:?}"
        );
        assert!(!is_leader(&b_rx.borrow()), "b led before a stepped down");
        wait_for(&mut b_rx, "b to take over", is_leader).await;
        let b_leads_at = Instant::now();
        // a's lease expires a whole margin after a stopped acting; only then can b lead.
        let margin = ElectorConfig::new("r", "a", ttl).margin;
        assert!(
            b_leads_at >= lost_at + margin,
            "a stepped down at {lost_at:?}, b led at {b_leads_at:?}"
        );
        assert!(b_leads_at - lost_at <= margin + ttl / 3, "b took over late");
        stalled.store(false, Ordering::SeqCst);
        a.resign().await;
        b.resign().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_key_is_deleted_loses_and_campaigns_again() {
        let ttl = Duration::from_secs(3);
        let store = Store::memory();
        let a = mk_elector(&store, "a", ttl);
        let mut rx = a.leadership();
        let Leadership::Leader { fence } = wait_for(&mut rx, "a to lead", is_leader).await else {
            unreachable!()
        };
        store.delete(&fence.key, Precondition::None).await.unwrap();
        let lost = wait_for(&mut rx, "a to notice", |s| !is_leader(s)).await;
        assert_eq!(
            lost,
            Leadership::Lost {
                fence: fence.clone(),
                reason: LostReason::KeyChanged
            }
        );
        let Leadership::Leader { fence: next } =
            wait_for(&mut rx, "a to lead again", is_leader).await
        else {
            unreachable!()
        };
        assert!(
            next.create_revision > fence.create_revision,
            "a new term, a new fence"
        );
        a.resign().await;
        assert_eq!(
            store.get(&fence.key).await.unwrap(),
            None,
            "resigning deletes the key"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lease_transitions_count_changes_of_holder() {
        let ttl = Duration::from_secs(3);
        let store = Store::memory();
        let a = mk_elector(&store, "a", ttl);
        wait_for(&mut a.leadership(), "a to lead", is_leader).await;
        let b = mk_elector(&store, "b", ttl);
        wait_for(&mut b.leadership(), "b to follow", |s| {
            matches!(s, Leadership::Follower { holder: Some(_) })
        })
        .await;
        a.resign().await;
        wait_for(&mut b.leadership(), "b to lead", is_leader).await;
        let kv = store.get(&role_key("taskflow")).await.unwrap().unwrap();
        let lease: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(lease["spec"]["holderIdentity"], "b");
        assert_eq!(lease["spec"]["leaseTransitions"], 1);
        assert_eq!(lease["spec"]["acquireTime"], "1970-01-01T00:00:00.000000Z");
        b.resign().await;
    }

    #[test]
    fn a_renewal_interval_that_leaves_no_slack_is_refused() {
        let mut config = ElectorConfig::new("r", "a", Duration::from_secs(1));
        config.renew_every = Duration::from_millis(950);
        let refused = Elector::spawn(Store::memory(), config, CancellationToken::new());
        assert!(matches!(refused, Err(Error::InvalidArgument(_))));
    }

    // -- sqlite and etcd, on real time --

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_electors_elect_fence_and_hand_over() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        let make = || {
            let path = dir
                .path()
                .join(format!("{}.db", n.fetch_add(1, Ordering::Relaxed)));
            let store = Store::sqlite(path).unwrap();
            (store.clone(), store)
        };
        all_scenarios(make, Duration::from_millis(900)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_electors_on_two_backends_elect_fence_and_hand_over() {
        use crate::etcd::{EtcdBackend, ThrowawayEtcd};

        let etcd = ThrowawayEtcd::start().await.expect("throwaway etcd");
        // Two replicas: two clients, two backends, one namespace per scenario.
        let first = etcd.client().await.unwrap();
        let second = etcd.client().await.unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        let make = || {
            let namespace = format!("/election-{}/", n.fetch_add(1, Ordering::Relaxed));
            (
                Store::new(EtcdBackend::from_client(&first, &namespace)),
                Store::new(EtcdBackend::from_client(&second, &namespace)),
            )
        };
        all_scenarios(make, Duration::from_secs(1)).await;
    }
}
