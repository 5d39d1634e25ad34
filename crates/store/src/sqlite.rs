//! The SQLite backend: a durable single-node store in one file.
//!
//! ```text
//!  put/delete/compact/lease_*                 get/range          watch replay
//!        │ (async, bounded by WRITE_QUEUE_CAPACITY)  │                  │ spawn_blocking
//!        ▼                                           ▼                  ▼
//!  ┌──────────── writer thread ─────────────┐  Mirror (RwLock:    read connections
//!  │ recv 1, drain up to WRITE_BATCH_MAX    │  current keys +     (idle pool of
//!  │ BEGIN IMMEDIATE                        │  their revision)    READ_POOL_IDLE,
//!  │   expire due leases                    │        ▲            WAL snapshots)
//!  │   apply each request in order          │        │
//!  │ COMMIT  (one fsync, synchronous=FULL)  │        │
//!  │ apply events to the Mirror ────────────┼────────┘
//!  │ publish events → WatchHub, answer each │
//!  └────────────────────────────────────────┘
//!
//!  tables: meta(name → value)   schema_version, revision, compacted, last_lease
//!          kv(key PK, value, create_revision, mod_revision, version, lease)
//!          events(revision PK, key, new state or NULL for a delete, prev state)
//!          leases(id PK, ttl_ms, deadline_ms: unix epoch milliseconds)
//! ```
//!
//! The key design decision is **group commit**: one thread owns the only write
//! connection. It takes every request waiting at that moment, applies them in one
//! transaction (each write still gets its own revision, and each precondition is checked
//! against the state left by the writes before it in the batch) and commits once, so a
//! thousand concurrent writers cost one fsync rather than a thousand. A request whose
//! precondition fails is answered with its error and changes nothing; the others in the
//! batch are unaffected. Nobody is answered before the commit is durable.
//!
//! Reads of the current state (`get`, `range`) are served from the [`Mirror`], an
//! in-memory copy of the `kv` table that the writer updates after each commit and before
//! answering, so a reader never waits for a thread hand-off and always sees its own
//! acknowledged writes (etcd keeps its key index in memory, and the Kubernetes API
//! server serves reads from its watch cache, for the same reason). The price is the
//! current data set in memory once; history stays on disk. Watch replays read the event
//! log on separate connections: in WAL mode a reader sees the last committed snapshot and
//! neither waits for nor blocks the writer. SQL ranges use the key's primary-key index
//! (`key >= prefix AND key < successor(prefix)`), never `LIKE`.
//!
//! Events store their previous value inline, so replaying a watch never needs a second
//! lookup and survives compaction of the revision that wrote the previous value; the
//! price is storing each value again in the event log until compaction.
//!
//! Leases are persisted with a wall-clock deadline, so they survive a restart; a lease
//! whose deadline passed while the process was down expires at the writer's first sweep.
//! The writer sleeps until the next lease deadline when it has no requests.
//!
//! The file format is versioned ([`SCHEMA_VERSION`], in `meta`): a new file gets the
//! current version, and a file with a newer version is refused rather than misread.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::history::{self, HistoryPage, HistorySource, WatchHub};
use crate::{
    Backend, DeleteResponse, Error, Event, Guard, KeyValue, LeaseId, Precondition, PutResponse,
    RangeRequest, RangeResponse, Result, Revision, WatchProgress, WatchStream,
};

/// The version of the file format this build writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// Most requests committed in one transaction. Bounds the latency a request can add to
/// the others in its batch and the size of one batch's event publication; at 1024 the
/// fsync is already amortised to nothing.
pub const WRITE_BATCH_MAX: usize = 1024;

/// Requests queued for the writer before new writers wait (asynchronously) for room:
/// a few batches' worth, so a burst keeps the writer busy without letting a flood of
/// requests grow memory without limit.
const WRITE_QUEUE_CAPACITY: usize = 4 * WRITE_BATCH_MAX;

/// Read connections kept open between reads. More concurrent reads open more
/// connections (cheap in WAL mode) and close the extras afterwards; four covers the
/// blocking pool's typical concurrency on a small machine.
const READ_POOL_IDLE: usize = 4;

/// How long a connection waits on a lock before failing. Readers only ever wait during
/// WAL recovery; the writer only if someone else opened the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema of [`SCHEMA_VERSION`] 1.
const SCHEMA_V1: &str = "
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (name, value) VALUES
    ('schema_version', 1), ('revision', 0), ('compacted', 0), ('last_lease', 0);

CREATE TABLE kv (
    key             TEXT PRIMARY KEY,
    value           BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision    INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    lease           INTEGER
);
CREATE INDEX kv_by_lease ON kv (lease) WHERE lease IS NOT NULL;

-- One row per revision. A put has the new state in value..lease; a delete has NULLs
-- there. prev_* is the key's state before the change (NULL after a create).
CREATE TABLE events (
    revision             INTEGER PRIMARY KEY,
    key                  TEXT NOT NULL,
    value                BLOB,
    create_revision      INTEGER,
    version              INTEGER,
    lease                INTEGER,
    prev_value           BLOB,
    prev_create_revision INTEGER,
    prev_mod_revision    INTEGER,
    prev_version         INTEGER,
    prev_lease           INTEGER
);

CREATE TABLE leases (
    id          INTEGER PRIMARY KEY,
    ttl_ms      INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL
);
";

/// Receives the number of requests committed together, once per group commit.
pub type BatchObserver = Arc<dyn Fn(usize) + Send + Sync>;

/// How to open a [`SqliteBackend`].
#[derive(Clone, Default)]
pub struct SqliteOptions {
    /// Called by the writer thread after each commit with its batch size (e.g.
    /// [`StoreMetrics::batch_observer`](crate::StoreMetrics::batch_observer)). Runs on
    /// the writer thread before the batch is answered: keep it cheap.
    pub batch_observer: Option<BatchObserver>,
}

impl fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteOptions")
            .field("batch_observer", &self.batch_observer.is_some())
            .finish()
    }
}

/// A store in a SQLite file.
///
/// Dropping it lets the writer finish the requests already queued, then waits for the
/// writer thread to exit, so the file is closed for writing when `drop` returns. Watch
/// streams end with [`Error::Closed`].
///
/// # Cancel safety
///
/// Reads are cancel safe. A write (put, delete, compact, lease operation) whose future
/// is dropped before its request was queued does nothing; dropped after, it still
/// commits and only its answer is lost, as with a network store.
pub struct SqliteBackend {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    queue: Option<mpsc::SyncSender<Queued>>,
    /// One permit per free slot in `queue`: writers wait here, asynchronously, when the
    /// writer is behind.
    room: Arc<Semaphore>,
    writer: Option<JoinHandle<()>>,
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.shared.path)
            .field("revision", &self.shared.revision.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// Opens (or creates) the store in the file at `path`.
    ///
    /// # Errors
    ///
    /// Fails if the file cannot be opened or put in WAL mode, if it is a SQLite file
    /// that is not a shoal store, or if its schema version is newer than
    /// [`SCHEMA_VERSION`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// [`SqliteBackend::open`] with options.
    ///
    /// # Errors
    ///
    /// As [`SqliteBackend::open`].
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut conn = open_connection(&path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Backend(format!(
                "failed to put {} in WAL mode (journal mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.set_prepared_statement_cache_capacity(32);
        init_schema(&mut conn, &path)?;
        let state = WriterState::load(&conn)?;
        tracing::info!(
            path = %path.display(),
            revision = state.revision,
            compacted = state.compacted,
            leases = state.leases.len(),
            "opened sqlite store"
        );

        let mirror = Mirror::load(&conn, state.revision)?;
        let shared = Arc::new(Shared {
            path: path.clone(),
            idle_readers: Mutex::new(Vec::new()),
            mirror: RwLock::new(mirror),
            hub: WatchHub::new(),
            revision: AtomicI64::new(state.revision),
            compacted: AtomicI64::new(state.compacted),
        });
        let (queue, requests) = mpsc::sync_channel(WRITE_QUEUE_CAPACITY);
        let writer = Writer {
            conn,
            state,
            shared: shared.clone(),
            requests,
            observer: options.batch_observer,
        };
        let handle = std::thread::Builder::new()
            .name("shoal-sqlite-writer".into())
            .spawn(move || {
                let span = tracing::info_span!("sqlite_writer", path = %path.display());
                let _entered = span.enter();
                writer.run();
            })?;
        Ok(SqliteBackend {
            shared,
            queue: Some(queue),
            room: Arc::new(Semaphore::new(WRITE_QUEUE_CAPACITY)),
            writer: Some(handle),
        })
    }

    /// Queues a request for the writer and waits for its answer.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before the request is queued does nothing. Dropping it after
    /// does not cancel the write: it still commits, and only its answer is lost.
    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let permit = self
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed)?;
        let queue = self.queue.as_ref().ok_or(Error::Closed)?;
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            command: make(reply),
            _room: permit,
        };
        queue.try_send(queued).map_err(|err| match err {
            TrySendError::Disconnected(_) => Error::Closed,
            // The permit reserved a slot; this means the permits and the channel disagree.
            TrySendError::Full(_) => Error::Backend("sqlite write queue is over capacity".into()),
        })?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        // Closing the queue is the writer's signal to finish what is queued and exit.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("sqlite writer thread panicked");
        }
    }
}

/// Opens a connection with the settings every connection shares.
fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Creates the schema in an empty file, or checks the version of an existing one.
fn init_schema(conn: &mut Connection, path: &Path) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_meta: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta')",
        [],
        |row| row.get(0),
    )?;
    if has_meta {
        let version: Option<i64> = tx
            .query_row(
                "SELECT value FROM meta WHERE name = 'schema_version'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(version) if version > SCHEMA_VERSION => {
                return Err(Error::Backend(format!(
                    "refusing to open {}: its schema version {version} is newer than the \
                     version {SCHEMA_VERSION} this build understands (upgrade shoal)",
                    path.display()
                )));
            }
            other => {
                return Err(Error::Backend(format!(
                    "refusing to open {}: unknown schema version {other:?}",
                    path.display()
                )));
            }
        }
    } else {
        let tables: i64 = tx.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |row| row.get(0),
        )?;
        if tables > 0 {
            return Err(Error::Backend(format!(
                "refusing to open {}: it is a SQLite database but not a shoal store",
                path.display()
            )));
        }
        tx.execute_batch(SCHEMA_V1)?;
    }
    tx.commit()?;
    Ok(())
}

fn meta(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row([name], |row| row.get(0))
}

/// Milliseconds since the Unix epoch: lease deadlines must survive a restart, so they
/// are wall-clock. The only place this module reads the clock.
fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// The smallest string greater than every string starting with `prefix`, or `None` if
/// there is none (empty prefix, or only `char::MAX`s). SQLite compares TEXT bytewise,
/// and UTF-8 byte order is code point order, so this is the prefix's exclusive upper
/// bound for an index range scan.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            char::MAX => None,
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn kv_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: row.get(0)?,
        value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
        create_revision: row.get(2)?,
        mod_revision: row.get(3)?,
        version: row.get(4)?,
        lease: row.get(5)?,
    })
}

fn read_kv(conn: &Connection, key: &str) -> rusqlite::Result<Option<KeyValue>> {
    conn.prepare_cached(
        "SELECT key, value, create_revision, mod_revision, version, lease FROM kv WHERE key = ?1",
    )?
    .query_row([key], kv_from_row)
    .optional()
}

fn read_history(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
    max_revisions: i64,
) -> Result<HistoryPage> {
    let tx = conn.transaction()?;
    let current = meta(&tx, "revision")?;
    let compacted = meta(&tx, "compacted")?;
    history::check_start(after, current, compacted)?;
    let through = current.min(after.saturating_add(max_revisions));
    let upper = prefix_end(prefix);
    let sql = format!(
        "SELECT revision, key, value, create_revision, version, lease, prev_value, \
         prev_create_revision, prev_mod_revision, prev_version, prev_lease FROM events \
         WHERE revision > ?1 AND revision <= ?2 AND key >= ?3 {} ORDER BY revision",
        if upper.is_some() { "AND key < ?4" } else { "" }
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let mut rows = match &upper {
        Some(upper) => stmt.query(params![after, through, prefix, upper])?,
        None => stmt.query(params![after, through, prefix])?,
    };
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        events.push(event_from_row(row)?);
    }
    drop(rows);
    drop(stmt);
    tx.finish()?;
    Ok(HistoryPage {
        events,
        through,
        current,
    })
}

fn event_from_row(row: &rusqlite::Row<'_>) -> Result<Event> {
    let revision: Revision = row.get(0)?;
    let key: String = row.get(1)?;
    let value: Option<Vec<u8>> = row.get(2)?;
    let prev = match row.get::<_, Option<Revision>>(8)? {
        Some(prev_mod_revision) => Some(KeyValue {
            key: key.clone(),
            value: Bytes::from(row.get::<_, Vec<u8>>(6)?),
            create_revision: row.get(7)?,
            mod_revision: prev_mod_revision,
            version: row.get(9)?,
            lease: row.get(10)?,
        }),
        None => None,
    };
    match value {
        Some(value) => Ok(Event::Put {
            kv: KeyValue {
                key,
                value: Bytes::from(value),
                create_revision: row.get(3)?,
                mod_revision: revision,
                version: row.get(4)?,
                lease: row.get(5)?,
            },
            prev,
        }),
        None => {
            let prev = prev.ok_or_else(|| {
                Error::Backend(format!(
                    "corrupt event log: delete at revision {revision} has no previous value"
                ))
            })?;
            Ok(Event::Delete { prev, revision })
        }
    }
}

/// What the writer thread and the readers share.
struct Shared {
    path: PathBuf,
    idle_readers: Mutex<Vec<Connection>>,
    mirror: RwLock<Mirror>,
    hub: WatchHub,
    /// The revision of the last commit, published before its requests are answered.
    revision: AtomicI64,
    compacted: AtomicI64,
}

/// The current key space and the revision it is at, kept in memory for reads.
struct Mirror {
    kvs: BTreeMap<String, KeyValue>,
    revision: Revision,
}

impl Mirror {
    fn load(conn: &Connection, revision: Revision) -> rusqlite::Result<Self> {
        let mut stmt = conn
            .prepare("SELECT key, value, create_revision, mod_revision, version, lease FROM kv")?;
        let kvs = stmt
            .query_map([], kv_from_row)?
            .map(|kv| kv.map(|kv| (kv.key.clone(), kv)))
            .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
        Ok(Mirror { kvs, revision })
    }

    /// Applies committed events, in revision order.
    fn apply(&mut self, events: &[Event], revision: Revision) {
        for event in events {
            match event {
                Event::Put { kv, .. } => {
                    self.kvs.insert(kv.key.clone(), kv.clone());
                }
                Event::Delete { prev, .. } => {
                    self.kvs.remove(&prev.key);
                }
            }
        }
        self.revision = revision;
    }

    fn range(&self, req: &RangeRequest) -> RangeResponse {
        use std::ops::Bound;
        let lower = match &req.start_after {
            Some(after) if after.as_str() >= req.prefix.as_str() => Bound::Excluded(after.clone()),
            _ => Bound::Included(req.prefix.clone()),
        };
        let mut kvs = Vec::new();
        let mut more = false;
        for (key, kv) in self.kvs.range((lower, Bound::Unbounded)) {
            if !key.starts_with(&req.prefix) {
                break;
            }
            if req.limit != 0 && kvs.len() == req.limit {
                more = true;
                break;
            }
            kvs.push(kv.clone());
        }
        RangeResponse {
            kvs,
            more,
            revision: self.revision,
        }
    }
}

impl Shared {
    fn mirror(&self) -> std::sync::RwLockReadGuard<'_, Mirror> {
        // The writer applies whole batches under the lock; a panic there would be a bug
        // in plain map operations, and the map stays usable.
        self.mirror
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Runs `read` on an idle read connection, or a new one.
    fn with_reader<T>(&self, read: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let idle = self.lock_idle().pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = open_connection(&self.path)?;
                conn.pragma_update(None, "query_only", true)?;
                conn
            }
        };
        let out = read(&mut conn);
        let mut idle = self.lock_idle();
        if idle.len() < READ_POOL_IDLE {
            idle.push(conn);
        }
        out
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The pool is a plain Vec: a panic cannot leave it inconsistent.
        self.idle_readers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[async_trait]
impl HistorySource for Shared {
    async fn history(
        self: Arc<Self>,
        prefix: String,
        after: Revision,
        max_revisions: i64,
    ) -> Result<HistoryPage> {
        tokio::task::spawn_blocking(move || {
            self.with_reader(|conn| read_history(conn, &prefix, after, max_revisions))
        })
        .await
        .map_err(|err| Error::Backend(format!("sqlite history read failed: {err}")))?
    }
}

/// A request for the writer, holding its slot in the queue until the writer takes it.
struct Queued {
    command: Command,
    _room: OwnedSemaphorePermit,
}

/// A write, with where to send its answer.
enum Command {
    Put {
        guards: Vec<Guard>,
        key: String,
        value: Bytes,
        cond: Precondition,
        lease: Option<LeaseId>,
        reply: oneshot::Sender<Result<PutResponse>>,
    },
    Delete {
        guards: Vec<Guard>,
        key: String,
        cond: Precondition,
        reply: oneshot::Sender<Result<DeleteResponse>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<()>>,
    },
    LeaseGrant {
        ttl: Duration,
        reply: oneshot::Sender<Result<LeaseId>>,
    },
    LeaseKeepAlive {
        id: LeaseId,
        reply: oneshot::Sender<Result<()>>,
    },
    LeaseRevoke {
        id: LeaseId,
        reply: oneshot::Sender<Result<()>>,
    },
}

impl Command {
    /// Answers with `err` without applying.
    fn fail(self, err: Error) {
        // A requester that went away does not need its answer.
        match self {
            Command::Put { reply, .. } => drop(reply.send(Err(err))),
            Command::Delete { reply, .. } => drop(reply.send(Err(err))),
            Command::Compact { reply, .. }
            | Command::LeaseKeepAlive { reply, .. }
            | Command::LeaseRevoke { reply, .. } => drop(reply.send(Err(err))),
            Command::LeaseGrant { reply, .. } => drop(reply.send(Err(err))),
        }
    }
}

/// An applied request's answer, sent once the batch commits (or fails to).
struct Pending(Box<dyn FnOnce(CommitFailure<'_>) + Send>);

/// Why the batch's transaction failed, or `None` if it committed.
type CommitFailure<'a> = Option<&'a str>;

impl Pending {
    fn new<T: Send + 'static>(reply: oneshot::Sender<Result<T>>, result: Result<T>) -> Self {
        Pending(Box::new(move |commit_failure| {
            let answer = match commit_failure {
                None => result,
                Some(why) => Err(commit_failed(why)),
            };
            // A requester that went away does not need its answer.
            let _ = reply.send(answer);
        }))
    }

    fn answer(self, commit_failure: CommitFailure<'_>) {
        (self.0)(commit_failure)
    }
}

fn commit_failed(why: &str) -> Error {
    Error::Backend(format!("sqlite group commit failed: {why}"))
}

/// A request-level outcome (`Ok(Err(..))`: a failed precondition, answered normally)
/// inside a batch-level one (`Err(..)`: SQLite failed, the whole batch rolls back).
type Applied<T> = rusqlite::Result<Result<T>>;

#[derive(Clone, Copy, Debug)]
struct LeaseRow {
    ttl_ms: i64,
    deadline_ms: i64,
}

/// The writer's copy of what it needs on every request; always equal to the committed
/// state between batches.
#[derive(Debug)]
struct WriterState {
    revision: Revision,
    compacted: Revision,
    last_lease: LeaseId,
    leases: HashMap<LeaseId, LeaseRow>,
}

impl WriterState {
    fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let mut stmt = conn.prepare("SELECT id, ttl_ms, deadline_ms FROM leases")?;
        let leases = stmt
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    LeaseRow {
                        ttl_ms: row.get(1)?,
                        deadline_ms: row.get(2)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(WriterState {
            revision: meta(conn, "revision")?,
            compacted: meta(conn, "compacted")?,
            last_lease: meta(conn, "last_lease")?,
            leases,
        })
    }

    fn lease_alive(&self, id: LeaseId, now_ms: i64) -> bool {
        self.leases.get(&id).is_some_and(|l| l.deadline_ms > now_ms)
    }

    fn next_deadline(&self) -> Option<i64> {
        self.leases.values().map(|l| l.deadline_ms).min()
    }
}

/// The writer thread: owns the write connection.
struct Writer {
    conn: Connection,
    state: WriterState,
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Queued>,
    observer: Option<BatchObserver>,
}

impl Writer {
    fn run(mut self) {
        loop {
            // Sleep until a request arrives or the next lease deadline passes.
            let first = match self.state.next_deadline() {
                None => match self.requests.recv() {
                    Ok(first) => Some(first),
                    Err(mpsc::RecvError) => break,
                },
                Some(deadline) => {
                    let wait = u64::try_from(deadline.saturating_sub(now_ms())).unwrap_or(0);
                    match self.requests.recv_timeout(Duration::from_millis(wait)) {
                        Ok(first) => Some(first),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let mut batch: Vec<Command> = first.into_iter().map(|q| q.command).collect();
            while batch.len() < WRITE_BATCH_MAX {
                match self.requests.try_recv() {
                    Ok(queued) => batch.push(queued.command),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        tracing::debug!("sqlite writer stopped");
    }

    /// Applies `batch` (and expires due leases) in one transaction, commits, publishes
    /// the events and answers every request.
    fn commit(&mut self, batch: Vec<Command>) {
        let now = now_ms();
        let size = batch.len();
        let lease_due = self.state.next_deadline().is_some_and(|d| d <= now);
        if size == 0 && !lease_due {
            return;
        }
        let mut events = Vec::new();
        let mut pending = Vec::with_capacity(size);
        let mut batch = batch.into_iter();
        let outcome = self.apply_all(&mut batch, now, &mut events, &mut pending);
        match outcome {
            Ok(()) => {
                self.shared
                    .mirror
                    .write()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .apply(&events, self.state.revision);
                self.shared
                    .revision
                    .store(self.state.revision, Ordering::Release);
                self.shared
                    .compacted
                    .store(self.state.compacted, Ordering::Release);
                tracing::trace!(
                    size,
                    events = events.len(),
                    revision = self.state.revision,
                    "committed"
                );
                self.shared.hub.publish(events);
                if size > 0
                    && let Some(observer) = &self.observer
                {
                    observer(size);
                }
                for answer in pending {
                    answer.answer(None);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, size, "sqlite group commit failed");
                let why = err.to_string();
                for answer in pending {
                    answer.answer(Some(&why));
                }
                for command in batch {
                    command.fail(commit_failed(&why));
                }
                // The transaction rolled back: forget what the batch did to our copy.
                match WriterState::load(&self.conn) {
                    Ok(state) => self.state = state,
                    Err(err) => tracing::error!(error = %err, "failed to reload writer state"),
                }
            }
        }
    }

    fn apply_all(
        &mut self,
        batch: &mut std::vec::IntoIter<Command>,
        now: i64,
        events: &mut Vec<Event>,
        pending: &mut Vec<Pending>,
    ) -> rusqlite::Result<()> {
        let before = (
            self.state.revision,
            self.state.compacted,
            self.state.last_lease,
        );
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let state = &mut self.state;
        let due: Vec<LeaseId> = state
            .leases
            .iter()
            .filter(|(_, l)| l.deadline_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            tracing::debug!(lease = id, "lease expired");
            revoke(&tx, state, id, events)?;
        }
        for command in batch.by_ref() {
            pending.push(apply(&tx, state, command, now, events)?);
        }
        for (name, old, new) in [
            ("revision", before.0, state.revision),
            ("compacted", before.1, state.compacted),
            ("last_lease", before.2, state.last_lease),
        ] {
            if old != new {
                tx.prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")?
                    .execute(params![name, new])?;
            }
        }
        tx.commit()
    }
}

/// Applies one request. On a SQLite error the request is answered with it at once and
/// the error returned, which abandons the batch: the caller rolls back and fails the
/// requests already applied (their `Pending`) and those not yet reached.
fn apply(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    command: Command,
    now: i64,
    events: &mut Vec<Event>,
) -> rusqlite::Result<Pending> {
    // Each arm keeps its reply until its result is known, so a SQLite error still
    // reaches the requester: as the batch's commit failure.
    fn settle<T: Send + 'static>(
        reply: oneshot::Sender<Result<T>>,
        applied: Applied<T>,
    ) -> rusqlite::Result<Pending> {
        match applied {
            Ok(result) => Ok(Pending::new(reply, result)),
            Err(err) => {
                let _ = reply.send(Err(commit_failed(&err.to_string())));
                Err(err)
            }
        }
    }
    match command {
        Command::Put {
            guards,
            key,
            value,
            cond,
            lease,
            reply,
        } => {
            let applied = check_guards(tx, &guards).and_then(|checked| match checked {
                Ok(()) => put(tx, state, &key, value, cond, lease, now, events),
                Err(err) => Ok(Err(err)),
            });
            settle(reply, applied)
        }
        Command::Delete {
            guards,
            key,
            cond,
            reply,
        } => {
            let applied = check_guards(tx, &guards).and_then(|checked| match checked {
                Ok(()) => delete(tx, state, &key, cond, events),
                Err(err) => Ok(Err(err)),
            });
            settle(reply, applied)
        }
        Command::Compact { revision, reply } => settle(reply, compact(tx, state, revision)),
        Command::LeaseGrant { ttl, reply } => settle(reply, lease_grant(tx, state, ttl, now)),
        Command::LeaseKeepAlive { id, reply } => {
            settle(reply, lease_keep_alive(tx, state, id, now))
        }
        Command::LeaseRevoke { id, reply } => {
            let applied = if state.lease_alive(id, now) {
                revoke(tx, state, id, events).map(Ok)
            } else {
                Ok(Err(Error::LeaseNotFound(id)))
            };
            settle(reply, applied)
        }
    }
}

/// Checks a guarded write's guards, in order, against the batch's view of the store (the
/// writes before it in the batch included).
fn check_guards(tx: &Transaction<'_>, guards: &[Guard]) -> Applied<()> {
    for guard in guards {
        let current = read_kv(tx, &guard.key)?;
        if let Err(err) = guard.cond.check(&guard.key, current.as_ref()) {
            return Ok(Err(err));
        }
    }
    Ok(Ok(()))
}

#[allow(clippy::too_many_arguments)] // one per part of a put, plus the batch context
fn put(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    key: &str,
    value: Bytes,
    cond: Precondition,
    lease: Option<LeaseId>,
    now: i64,
    events: &mut Vec<Event>,
) -> Applied<PutResponse> {
    let prev = read_kv(tx, key)?;
    if let Err(err) = cond.check(key, prev.as_ref()) {
        return Ok(Err(err));
    }
    if let Some(id) = lease
        && !state.lease_alive(id, now)
    {
        return Ok(Err(Error::LeaseNotFound(id)));
    }
    let revision = state.revision + 1;
    let kv = KeyValue::after_put(key, value, prev.as_ref(), revision, lease);
    tx.prepare_cached(
        "INSERT INTO kv (key, value, create_revision, mod_revision, version, lease) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
         create_revision = excluded.create_revision, mod_revision = excluded.mod_revision, \
         version = excluded.version, lease = excluded.lease",
    )?
    .execute(params![
        kv.key,
        &kv.value[..],
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    ])?;
    let event = Event::Put {
        kv: kv.clone(),
        prev: prev.clone(),
    };
    record(tx, state, event, events)?;
    Ok(Ok(PutResponse { kv, prev }))
}

fn delete(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    key: &str,
    cond: Precondition,
    events: &mut Vec<Event>,
) -> Applied<DeleteResponse> {
    if cond == Precondition::Absent {
        return Ok(Err(Error::InvalidArgument(
            "a delete cannot require the key to be absent".into(),
        )));
    }
    let prev = read_kv(tx, key)?;
    // Deleting a missing key fails whatever the precondition.
    let checked = Precondition::Present
        .check(key, prev.as_ref())
        .and_then(|()| cond.check(key, prev.as_ref()));
    match (checked, prev) {
        (Ok(()), Some(prev)) => remove(tx, state, prev, events).map(Ok),
        (Err(err), _) => Ok(Err(err)),
        (Ok(()), None) => unreachable!("Precondition::Present holds only for an existing key"),
    }
}

/// Deletes `prev.key` (which exists) at the next revision.
fn remove(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    prev: KeyValue,
    events: &mut Vec<Event>,
) -> rusqlite::Result<DeleteResponse> {
    tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?
        .execute([&prev.key])?;
    let revision = state.revision + 1;
    let event = Event::Delete {
        prev: prev.clone(),
        revision,
    };
    record(tx, state, event, events)?;
    Ok(DeleteResponse { prev, revision })
}

/// Appends the event of the next revision to the log.
fn record(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    event: Event,
    events: &mut Vec<Event>,
) -> rusqlite::Result<()> {
    let (kv, prev) = match &event {
        Event::Put { kv, prev } => (Some(kv), prev.as_ref()),
        Event::Delete { prev, .. } => (None, Some(prev)),
    };
    tx.prepare_cached(
        "INSERT INTO events (revision, key, value, create_revision, version, lease, \
         prev_value, prev_create_revision, prev_mod_revision, prev_version, prev_lease) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        event.revision(),
        event.key(),
        kv.map(|kv| &kv.value[..]),
        kv.map(|kv| kv.create_revision),
        kv.map(|kv| kv.version),
        kv.and_then(|kv| kv.lease),
        prev.map(|p| &p.value[..]),
        prev.map(|p| p.create_revision),
        prev.map(|p| p.mod_revision),
        prev.map(|p| p.version),
        prev.and_then(|p| p.lease),
    ])?;
    state.revision = event.revision();
    events.push(event);
    Ok(())
}

fn compact(tx: &Transaction<'_>, state: &mut WriterState, revision: Revision) -> Applied<()> {
    if revision > state.revision {
        return Ok(Err(Error::FutureRevision {
            requested: revision,
            current: state.revision,
        }));
    }
    if revision <= state.compacted {
        return Ok(Ok(()));
    }
    tx.prepare_cached("DELETE FROM events WHERE revision <= ?1")?
        .execute([revision])?;
    state.compacted = revision;
    Ok(Ok(()))
}

fn lease_grant(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    ttl: Duration,
    now: i64,
) -> Applied<LeaseId> {
    if ttl.is_zero() {
        return Ok(Err(Error::InvalidArgument(
            "a lease needs a positive ttl".into(),
        )));
    }
    // Round up: a lease never lives shorter than asked.
    let ttl_ms = i64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX);
    let id = state.last_lease + 1;
    let row = LeaseRow {
        ttl_ms,
        deadline_ms: now.saturating_add(ttl_ms),
    };
    tx.prepare_cached("INSERT INTO leases (id, ttl_ms, deadline_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![id, row.ttl_ms, row.deadline_ms])?;
    state.last_lease = id;
    state.leases.insert(id, row);
    Ok(Ok(id))
}

fn lease_keep_alive(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    id: LeaseId,
    now: i64,
) -> Applied<()> {
    if !state.lease_alive(id, now) {
        return Ok(Err(Error::LeaseNotFound(id)));
    }
    let Some(row) = state.leases.get_mut(&id) else {
        return Ok(Err(Error::LeaseNotFound(id)));
    };
    let deadline_ms = now.saturating_add(row.ttl_ms);
    tx.prepare_cached("UPDATE leases SET deadline_ms = ?2 WHERE id = ?1")?
        .execute(params![id, deadline_ms])?;
    row.deadline_ms = deadline_ms;
    Ok(Ok(()))
}

/// Removes lease `id` and deletes its keys, each at its own revision.
fn revoke(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    id: LeaseId,
    events: &mut Vec<Event>,
) -> rusqlite::Result<()> {
    let attached = tx
        .prepare_cached(
            "SELECT key, value, create_revision, mod_revision, version, lease FROM kv \
             WHERE lease = ?1 ORDER BY key",
        )?
        .query_map([id], kv_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for kv in attached {
        remove(tx, state, kv, events)?;
    }
    tx.prepare_cached("DELETE FROM leases WHERE id = ?1")?
        .execute([id])?;
    state.leases.remove(&id);
    Ok(())
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.shared.mirror().kvs.get(key).cloned())
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        Ok(self.shared.mirror().range(&req))
    }

    async fn range_at(&self, req: RangeRequest, revision: Revision) -> Result<RangeResponse> {
        let current = self.shared.mirror().range(&RangeRequest {
            limit: 0,
            ..req.clone()
        });
        history::range_at(self.shared.clone(), &req, current, revision).await
    }

    async fn put_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        value: Bytes,
        cond: Precondition,
        lease: Option<LeaseId>,
    ) -> Result<PutResponse> {
        let key = key.to_owned();
        let guards = guards.to_vec();
        self.request(|reply| Command::Put {
            guards,
            key,
            value,
            cond,
            lease,
            reply,
        })
        .await
    }

    async fn delete_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        cond: Precondition,
    ) -> Result<DeleteResponse> {
        crate::deletable(cond)?;
        let key = key.to_owned();
        let guards = guards.to_vec();
        self.request(|reply| Command::Delete {
            guards,
            key,
            cond,
            reply,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        Ok(self.watch_with_progress(prefix, after).await?.0)
    }

    async fn watch_with_progress(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(WatchStream, WatchProgress)> {
        let source: Weak<dyn HistorySource> = Arc::downgrade(&self.shared) as Weak<Shared>;
        let watch = self.shared.hub.watch_with_progress(source, prefix, after);
        history::check_start(
            after,
            self.shared.revision.load(Ordering::Acquire),
            self.shared.compacted.load(Ordering::Acquire),
        )?;
        Ok(watch)
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.request(|reply| Command::Compact { revision, reply })
            .await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.request(|reply| Command::LeaseGrant { ttl, reply })
            .await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<()> {
        self.request(|reply| Command::LeaseKeepAlive { id, reply })
            .await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.request(|reply| Command::LeaseRevoke { id, reply })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::conformance;
    use futures::StreamExt;
    use std::sync::atomic::AtomicUsize;

    /// A fresh store file per call, all in one temporary directory.
    fn mk_stores(dir: &Path) -> impl Fn() -> Store + use<> {
        let dir = dir.to_path_buf();
        let next = AtomicUsize::new(0);
        move || {
            let n = next.fetch_add(1, Ordering::Relaxed);
            Store::sqlite(dir.join(format!("store-{n}.db"))).expect("open sqlite store")
        }
    }

    fn mk_put(key: &str) -> (String, Bytes) {
        (key.to_owned(), Bytes::from(format!("value of {key}")))
    }

    async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(secs), fut)
            .await
            .unwrap_or_else(|_| panic!("timed out: {what}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_backend_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        conformance::test_suite(mk_stores(dir.path())).await;
    }

    #[test]
    fn sqlite_backend_agrees_with_the_model() {
        let dir = tempfile::tempdir().unwrap();
        conformance::model_check(mk_stores(dir.path()), 64);
    }

    #[test]
    fn prefix_end_is_the_first_string_past_the_prefix() {
        assert_eq!(prefix_end("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_end("").as_deref(), None);
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}").as_deref(), None);
        assert_eq!(prefix_end("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopening_the_file_keeps_keys_revisions_history_and_leases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let (lease, revision) = {
            let store = Store::sqlite(&path).unwrap();
            let lease = store.lease_grant(Duration::from_secs(3600)).await.unwrap();
            for key in ["a/1", "a/2", "b/1"] {
                let (key, value) = mk_put(key);
                store
                    .put(&key, value, Precondition::None, None)
                    .await
                    .unwrap();
            }
            let (key, value) = mk_put("a/leased");
            store
                .put(&key, value, Precondition::Absent, Some(lease))
                .await
                .unwrap();
            store.delete("b/1", Precondition::None).await.unwrap();
            store.compact(2).await.unwrap();
            (lease, store.current_revision().await.unwrap())
        };
        assert_eq!(revision, 5);

        let store = Store::sqlite(&path).unwrap();
        assert_eq!(store.current_revision().await.unwrap(), 5);
        assert_eq!(store.compacted_revision().await.unwrap(), 2);
        let keys: Vec<String> = store
            .range(RangeRequest::default())
            .await
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(keys, ["a/1", "a/2", "a/leased"]);
        let leased = store.get("a/leased").await.unwrap().unwrap();
        assert_eq!((leased.lease, leased.mod_revision), (Some(lease), 4));
        assert!(matches!(
            store.watch("", 1).await,
            Err(Error::Compacted { .. })
        ));
        let history: Vec<Revision> = within(5, "replaying history after reopen", async {
            store
                .watch("", 2)
                .await
                .unwrap()
                .take(3)
                .map(|event| event.unwrap().revision())
                .collect::<Vec<_>>()
                .await
        })
        .await;
        assert_eq!(history, [3, 4, 5]);

        store.lease_keep_alive(lease).await.unwrap();
        let next = store.lease_grant(Duration::from_secs(60)).await.unwrap();
        assert_ne!(next, lease, "lease ids are never reused");
        store.lease_revoke(lease).await.unwrap();
        assert_eq!(store.get("a/leased").await.unwrap(), None);
        assert_eq!(store.current_revision().await.unwrap(), 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_that_expired_while_closed_is_revoked_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let store = Store::sqlite(&path).unwrap();
            let lease = store.lease_grant(Duration::from_millis(500)).await.unwrap();
            let (key, value) = mk_put("leased");
            store
                .put(&key, value, Precondition::None, Some(lease))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        let store = Store::sqlite(&path).unwrap();
        let deleted = within(
            5,
            "the expired lease's key to be deleted after reopen",
            async {
                let mut watch = store.watch("", 1).await.unwrap();
                watch.next().await.unwrap().unwrap()
            },
        )
        .await;
        assert!(
            matches!(&deleted, Event::Delete { prev, revision: 2 } if prev.key == "leased"),
            "{deleted:?}"
        );
        assert_eq!(store.get("leased").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_newer_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(SqliteBackend::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute(
                "UPDATE meta SET value = 2 WHERE name = 'schema_version'",
                [],
            )
            .unwrap();
        let err = SqliteBackend::open(&path).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("schema version 2 is newer than the version 1"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_new_file_records_schema_version_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(SqliteBackend::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        assert_eq!(meta(&conn, "schema_version").unwrap(), 1);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn a_foreign_sqlite_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute("CREATE TABLE accounts (id INTEGER)", [])
            .unwrap();
        let message = SqliteBackend::open(&path).unwrap_err().to_string();
        assert!(message.contains("not a shoal store"), "{message}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_group_commits() {
        const WRITERS: usize = 500;
        let dir = tempfile::tempdir().unwrap();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let observer: BatchObserver = {
            let batches = batches.clone();
            Arc::new(move |size| batches.lock().unwrap().push(size))
        };
        let backend = SqliteBackend::open_with(
            dir.path().join("store.db"),
            SqliteOptions {
                batch_observer: Some(observer),
            },
        )
        .unwrap();
        let store = Store::new(backend);
        let keys: Vec<String> = (0..WRITERS).map(|i| format!("k/{i:04}")).collect();
        let results =
            within(20, "concurrent writers waiting for group commits", {
                futures::future::join_all(keys.iter().map(|key| {
                    store.put(key, Bytes::from_static(b"v"), Precondition::Absent, None)
                }))
            })
            .await;
        let mut revisions: Vec<Revision> = results
            .into_iter()
            .map(|r| r.unwrap().kv.mod_revision)
            .collect();
        revisions.sort_unstable();
        assert_eq!(revisions, (1..=WRITERS as Revision).collect::<Vec<_>>());

        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), WRITERS);
        assert!(
            batches.len() < WRITERS / 4,
            "{} commits for {WRITERS} concurrent writes: {batches:?}",
            batches.len()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_precondition_fails_only_its_own_request_in_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::sqlite(dir.path().join("store.db")).unwrap();
        // Queued together: create, create again (fails), update at the first's revision
        // (sees the first create, so succeeds), delete requiring revision 1 (now stale).
        let (create, again, update, stale_delete) = within(5, "a mixed batch", async {
            tokio::join!(
                store.put("k", Bytes::from_static(b"1"), Precondition::Absent, None),
                store.put("k", Bytes::from_static(b"2"), Precondition::Absent, None),
                store.put(
                    "k",
                    Bytes::from_static(b"3"),
                    Precondition::ModRevision(1),
                    None
                ),
                store.delete("k", Precondition::ModRevision(1)),
            )
        })
        .await;
        assert_eq!(create.unwrap().kv.mod_revision, 1);
        assert!(matches!(
            again,
            Err(Error::PreconditionFailed { current: Some(ref kv), .. }) if kv.mod_revision == 1
        ));
        let update = update.unwrap();
        assert_eq!((update.kv.mod_revision, update.kv.version), (2, 2));
        assert!(matches!(
            stale_delete,
            Err(Error::PreconditionFailed { current: Some(ref kv), .. }) if kv.mod_revision == 2
        ));
        assert_eq!(store.current_revision().await.unwrap(), 2);
    }

    /// The environment variable that turns [`child_writes_until_killed`] on.
    const KILL_TEST_DB: &str = "SHOAL_STORE_KILL_TEST_DB";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_writes_survive_kill_9() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command as Process, Stdio};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut child = Process::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sqlite::tests::child_writes_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(KILL_TEST_DB, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let acked = tokio::task::spawn_blocking(move || {
            let mut acked = Vec::new();
            for line in BufReader::new(stdout).lines() {
                if let Some(key) = line.unwrap().strip_prefix("acked ") {
                    acked.push(key.to_owned());
                    if acked.len() == 300 {
                        break;
                    }
                }
            }
            // SIGKILL on Unix: no destructor, no flush, no goodbye.
            child.kill().unwrap();
            child.wait().unwrap();
            acked
        });
        let acked = within(30, "the child to acknowledge 300 writes", acked)
            .await
            .unwrap();
        assert_eq!(acked.len(), 300, "the child exited early");

        let store = Store::sqlite(&path).unwrap();
        for key in &acked {
            assert!(
                store.get(key).await.unwrap().is_some(),
                "acknowledged write {key} was lost"
            );
        }
        assert!(store.current_revision().await.unwrap() >= 300);
    }

    /// Not a test on its own: the process [`acknowledged_writes_survive_kill_9`] kills.
    /// Writes from 8 concurrent tasks and prints each key once its write is acknowledged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "helper process of acknowledged_writes_survive_kill_9"]
    async fn child_writes_until_killed() {
        use std::io::Write;

        let Some(path) = std::env::var_os(KILL_TEST_DB) else {
            return;
        };
        let store = Store::sqlite(PathBuf::from(path)).unwrap();
        let writers = (0..8).map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("w{writer}/{i}");
                    store
                        .put(&key, Bytes::from(vec![0; 512]), Precondition::None, None)
                        .await
                        .unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "acked {key}").unwrap();
                    out.flush().unwrap();
                }
            })
        });
        // Runs until killed; bounded anyway in case the parent died first.
        let _ =
            tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(writers)).await;
    }
}
