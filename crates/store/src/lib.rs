//! shoal's storage layer: etcd's data model behind one seam.
//!
//! ```text
//!            Store (cheap clone: Arc<dyn Backend>)
//!              │  get / range / put / delete / watch / compact / leases
//!     ┌────────┼───────────────┬──────────────────┬──────────────────────┐
//!  Metered   memory          sqlite             etcd (feature `etcd`)
//!  (wraps)   BTreeMap +      one writer thread, etcd's revisions, Txn CAS,
//!            history         group commit, WAL  watches, leases; for HA
//! ```
//!
//! The model is etcd's: every successful write gets the next value of a single global
//! *revision*. A key remembers the revision that created it (`create_revision`), the
//! revision of its last change (`mod_revision`) and how many times it changed since
//! creation (`version`). Writes can be made conditional on the key's `mod_revision`
//! (compare-and-swap), which is how the API server implements `resourceVersion`
//! conflicts. A watch replays history from a revision and then follows live writes;
//! history older than the compaction point is gone and a watch asking for it gets
//! [`Error::Compacted`]. Leases carry a TTL; keys attached to a lease are deleted when it
//! expires or is revoked.
//!
//! The key design decision: the store is the only place revisions are assigned, and a
//! write is acknowledged only once it is durable (for SQLite: its transaction committed
//! with `synchronous=FULL`). Concurrent SQLite writers are *group committed*: one
//! transaction and one fsync for all writes waiting at that moment, each write still
//! getting its own revision.
//!
//! Writes can also be *guarded* by other keys' state ([`Guard`],
//! [`Backend::put_guarded`]), atomically: that is how [`election`] fences a leader's
//! writes with its term, so a deposed leader's writes fail in the store itself.
//!
//! Every backend passes the same conformance suite (`conformance`, compiled for this
//! crate's tests and, for other crates, behind the `conformance` feature).
//!
//! # Choosing a backend
//!
//! ```no_run
//! # fn main() -> shoal_store::Result<()> {
//! use shoal_store::{Store, StoreMetrics};
//!
//! // Tests and the simulator: everything in memory, nothing survives the process.
//! let store = Store::memory();
//!
//! // A durable single-node store, every operation timed, and the SQLite writer's
//! // group-commit batch sizes recorded into the same metrics.
//! let metrics = StoreMetrics::new();
//! let store = Store::sqlite_with_metrics("/var/lib/shoal/store.db", &metrics)?;
//! let mut registry = prometheus_client::registry::Registry::default();
//! metrics.register(&mut registry);
//! # Ok(()) }
//! ```
//!
//! [`Store::sqlite`] opens without metrics; [`sqlite::SqliteBackend::open_with`] takes a
//! [`sqlite::SqliteOptions`] whose `batch_observer` hook receives each batch size, and
//! [`StoreMetrics::batch_observer`] makes such a hook.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod election;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod history;
pub mod leases;
pub mod memory;
pub mod metered;
pub mod sqlite;

pub use metered::StoreMetrics;

/// A revision of the whole store; 0 means "nothing written yet".
pub type Revision = i64;

/// A lease identifier (never 0).
pub type LeaseId = i64;

/// One key and its value at some revision.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// Number of changes since creation: 1 after create.
    pub version: i64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("lease", &self.lease)
            .finish()
    }
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The key was created or updated; `prev` is the value before, if it existed.
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// The key was deleted at `revision`; `prev` is the last value it had.
    Delete { prev: KeyValue, revision: Revision },
}

impl Event {
    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    /// The key this change is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// What a conditional write requires of the key's current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Write unconditionally.
    None,
    /// The key must not exist (create).
    Absent,
    /// The key must exist with exactly this `mod_revision` (compare-and-swap).
    ModRevision(Revision),
    /// The key must exist, whatever its revision.
    Present,
    /// The key must exist with exactly this `create_revision`: the same incarnation of
    /// the key, however often it was updated since (a deleted and re-created key has a
    /// new `create_revision`). Leader election fences on this.
    CreateRevision(Revision),
}

impl Precondition {
    /// Whether a write under this precondition may go ahead, given the key's current
    /// state (`None`: the key does not exist).
    ///
    /// # Errors
    ///
    /// [`Error::PreconditionFailed`] carrying `current` when the precondition does not hold.
    pub fn check(self, key: &str, current: Option<&KeyValue>) -> Result<()> {
        let holds = match self {
            Precondition::None => true,
            Precondition::Absent => current.is_none(),
            Precondition::Present => current.is_some(),
            Precondition::ModRevision(rev) => current.is_some_and(|kv| kv.mod_revision == rev),
            Precondition::CreateRevision(rev) => {
                current.is_some_and(|kv| kv.create_revision == rev)
            }
        };
        if holds {
            Ok(())
        } else {
            Err(Error::PreconditionFailed {
                key: key.to_owned(),
                current: current.cloned().map(Box::new),
            })
        }
    }
}

/// A condition on *another* key that a guarded write requires, checked atomically with
/// the write (see [`Backend::put_guarded`]): the write happens only if every guard holds
/// at the write's revision.
///
/// Leader election uses one guard, the leader's [`election::Fence`]: "the election key is
/// still the incarnation I created", so a deposed leader's writes fail instead of landing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    pub key: String,
    pub cond: Precondition,
}

impl Guard {
    pub fn new(key: impl Into<String>, cond: Precondition) -> Self {
        Guard {
            key: key.into(),
            cond,
        }
    }

    /// Checks every guard in order against `current` (the state of a guard's key):
    /// the first that fails is reported as [`Error::PreconditionFailed`] naming its key.
    ///
    /// # Errors
    ///
    /// [`Error::PreconditionFailed`] for the first guard that does not hold.
    pub(crate) fn check_all<'a>(
        guards: &[Guard],
        mut current: impl FnMut(&str) -> Option<&'a KeyValue>,
    ) -> Result<()> {
        guards
            .iter()
            .try_for_each(|guard| guard.cond.check(&guard.key, current(&guard.key)))
    }
}

/// Refuses `Precondition::Absent` on a delete, before anything else is checked.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for `Precondition::Absent`.
pub(crate) fn deletable(cond: Precondition) -> Result<()> {
    if cond == Precondition::Absent {
        return Err(Error::InvalidArgument(
            "a delete cannot require the key to be absent".into(),
        ));
    }
    Ok(())
}

impl KeyValue {
    /// The state of `key` after a put at `revision`, given its state before (`prev`):
    /// a (re)created key starts at version 1 with `create_revision = revision`.
    pub(crate) fn after_put(
        key: &str,
        value: Bytes,
        prev: Option<&KeyValue>,
        revision: Revision,
        lease: Option<LeaseId>,
    ) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value,
            create_revision: prev.map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.map_or(1, |p| p.version + 1),
            lease,
        }
    }
}

/// A range read: keys starting with `prefix`, in key order, strictly after `start_after`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub prefix: String,
    /// Continue after this key (exclusive); `None` starts at the prefix.
    pub start_after: Option<String>,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
}

/// The answer to a [`RangeRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More keys match after the last one returned.
    pub more: bool,
    /// The store's revision when the range was read.
    pub revision: Revision,
}

/// The outcome of a successful put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResponse {
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

/// The outcome of a successful delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteResponse {
    pub prev: KeyValue,
    pub revision: Revision,
}

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The write's [`Precondition`] did not hold; `current` is the key as it is now.
    #[error("precondition failed on key {key:?}")]
    PreconditionFailed {
        key: String,
        current: Option<Box<KeyValue>>,
    },
    /// The requested revision is older than the compaction point.
    #[error("revision {requested} has been compacted (compacted up to {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future (current {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The store was shut down.
    #[error("store is closed")]
    Closed,
    #[error("sqlite backend failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store io failed")]
    Io(#[from] std::io::Error),
    #[error("store backend failed: {0}")]
    Backend(String),
    /// The backend refused the request for now; the client may retry (a simulated
    /// cluster's API server under an "erroring" fault answers this).
    #[error("{0}")]
    Unavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stream of watch events, in revision order. Ends with `Err(Error::Compacted)` if the
/// watcher fell so far behind that history it still needed was compacted away.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// The storage seam. Backends implement it; everything else uses [`Store`].
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Reads one key at the current revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Reads a range of keys at the current revision.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;

    /// Reads a range of keys as they were at `revision` (a snapshot read, for paginated
    /// lists): the current state with every later change undone from history. The
    /// response's `revision` is `revision`.
    ///
    /// # Errors
    /// [`Error::Compacted`] when history after `revision` is gone,
    /// [`Error::FutureRevision`] when `revision` is ahead of the store.
    async fn range_at(&self, req: RangeRequest, revision: Revision) -> Result<RangeResponse>;

    /// Writes `value` at `key` if `cond` holds; the write is durable when this returns.
    /// `lease` attaches the key to a lease (which must exist).
    /// A backend implements `put_guarded`; this is that with no guards.
    async fn put(
        &self,
        key: &str,
        value: Bytes,
        cond: Precondition,
        lease: Option<LeaseId>,
    ) -> Result<PutResponse> {
        self.put_guarded(&[], key, value, cond, lease).await
    }

    /// Deletes `key` if `cond` holds (`Precondition::Absent` is invalid here). Deleting a
    /// missing key fails with `PreconditionFailed { current: None }`. A backend implements
    /// `delete_guarded`; this is that with no guards.
    async fn delete(&self, key: &str, cond: Precondition) -> Result<DeleteResponse> {
        self.delete_guarded(&[], key, cond).await
    }

    /// [`Backend::put`], made conditional also on `guards` (conditions on other keys),
    /// all checked atomically with the write: the guards in order, then `cond`. With no
    /// guards this is `put`.
    ///
    /// # Errors
    ///
    /// [`Error::PreconditionFailed`] naming the first guard's key that failed (with that
    /// key's current state), or `key` itself when only `cond` failed; otherwise as `put`.
    async fn put_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        value: Bytes,
        cond: Precondition,
        lease: Option<LeaseId>,
    ) -> Result<PutResponse>;

    /// [`Backend::delete`], made conditional also on `guards`, as [`Backend::put_guarded`].
    ///
    /// # Errors
    ///
    /// As [`Backend::put_guarded`] and [`Backend::delete`].
    async fn delete_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        cond: Precondition,
    ) -> Result<DeleteResponse>;

    /// Events for keys under `prefix` with revision strictly greater than `after`.
    /// Fails with [`Error::Compacted`] if `after` is older than the compaction point
    /// (`after + 1 <= compacted`), and [`Error::FutureRevision`] if it is ahead; in both,
    /// `requested` is `after`. A stream that falls behind history compacted meanwhile
    /// yields `Compacted` (with `requested` = the last revision it had seen) and ends.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The store's current revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// The revision up to which history was compacted (0 if never).
    async fn compacted_revision(&self) -> Result<Revision>;

    /// Forgets history at and below `revision`: watches may no longer start there.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId>;

    /// Extends a lease by its TTL; fails with [`Error::LeaseNotFound`] once it expired.
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<()>;

    /// Revokes a lease now, deleting every key attached to it (memory and SQLite give
    /// each deletion its own revision; etcd deletes them all at one revision, as it does
    /// when a lease expires).
    async fn lease_revoke(&self, id: LeaseId) -> Result<()>;
}

/// A cheap-to-clone handle on a store backend.
#[derive(Clone, Debug)]
pub struct Store(Arc<dyn Backend>, Arc<leases::LeaseManager>);

impl Store {
    pub fn new(backend: impl Backend) -> Self {
        Store(Arc::new(backend), Arc::default())
    }

    /// A lease under which a key written now lives at least `ttl` and at most a minute
    /// more, shared with the other keys written about now ([`leases`]).
    ///
    /// # Errors
    /// The backend's, from granting a lease.
    pub async fn lease_for(&self, ttl: std::time::Duration) -> Result<LeaseId> {
        self.1.lease_for(&*self.0, ttl).await
    }

    /// Forgets a lease [`Store::lease_for`] gave that turned out gone.
    pub async fn forget_lease(&self, id: LeaseId) {
        self.1.forget(id).await;
    }

    /// An in-memory store (tests, the simulator).
    pub fn memory() -> Self {
        Store::new(memory::MemoryBackend::new())
    }

    /// A durable store in the SQLite file at `path` (created if missing). Blocks briefly
    /// while it opens the file and starts the writer thread: call it before serving.
    ///
    /// # Errors
    ///
    /// See [`sqlite::SqliteBackend::open`].
    pub fn sqlite(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Store::new(sqlite::SqliteBackend::open(path)?))
    }

    /// [`Store::sqlite`], metered: every operation is timed into `metrics` and the
    /// writer's group-commit batch sizes land in the same metrics' batch-size histogram.
    ///
    /// # Errors
    ///
    /// See [`sqlite::SqliteBackend::open`].
    pub fn sqlite_with_metrics(path: impl AsRef<Path>, metrics: &StoreMetrics) -> Result<Self> {
        let options = sqlite::SqliteOptions {
            batch_observer: Some(metrics.batch_observer()),
        };
        let backend = sqlite::SqliteBackend::open_with(path, options)?;
        Ok(Store::new(backend).metered(metrics.clone()))
    }

    /// A store on an etcd cluster (HA: several shoal replicas share it). Connects and
    /// checks that etcd answers before returning.
    ///
    /// # Errors
    ///
    /// See [`etcd::EtcdBackend::connect`].
    #[cfg(feature = "etcd")]
    pub async fn etcd(options: etcd::EtcdOptions) -> Result<Self> {
        Ok(Store::new(etcd::EtcdBackend::connect(options).await?))
    }

    /// Wraps this store so every operation is timed into `metrics`.
    pub fn metered(self, metrics: StoreMetrics) -> Self {
        Store::new(metered::Metered::new(self, metrics))
    }

    /// The backend behind this handle.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.0
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}
