//! The etcd backend: shoal's store on a real etcd cluster, for high availability.
//!
//! ```text
//!  Store ──▶ EtcdBackend ──gRPC (one HTTP/2 connection per endpoint)──▶ etcd cluster
//!             │ namespace "/shoal/": shoal key "k" is etcd key "/shoal/k"
//!             ├─ get/range/range_at ── Range (linearizable; at a revision for range_at)
//!             ├─ put/delete ────────── Txn: If(compare) Then(put|delete, prev_kv) Else(get)
//!             ├─ compact ───────────── Compact
//!             ├─ lease_* ───────────── LeaseGrant / LeaseKeepAlive / LeaseRevoke
//!             └─ watch ── one etcd watch per stream, fed to the caller by a pump task:
//!
//!  etcd watch ──▶ pump ──mpsc (WATCH_BUFFER_EVENTS)──▶ WatchStream
//!                  │ Following ─(buffer full)─▶ Lagging: drop the etcd watch, hand over
//!                  │    ▲                       what was read, reopen after `seen`
//!                  │    └─(reopened)────────────┘
//!                  └ Reconnecting (stream broke) ─▶ reopen after `seen`, bounded backoff
//! ```
//!
//! The key design decision: **shoal's revisions are etcd's revisions**, unchanged. Nothing
//! is renumbered or offset, so a `resourceVersion` handed out by one shoal replica means
//! the same to every other replica and to etcd itself, watches resume across replicas,
//! and a later fencing scheme can compare revisions and lease ids with etcd's own
//! transactions. The consequences, each pinned by the conformance suite:
//!
//! - An etcd cluster starts at revision 1, not 0, and is shared: a fresh *namespace*
//!   starts at whatever the cluster's revision is. The suite counts from the revision it
//!   finds (see `conformance`). Revision 1 holds no events in any etcd (the first write
//!   is revision 2), so reads and watches "from 0" are served from revision 1.
//! - A compare-and-swap is one etcd transaction: `If(compare) Then(write with prev_kv)
//!   Else(get)`, so a failed precondition returns the key as it is, in the same round trip.
//!   [`Precondition::Absent`] compares `create_revision = 0`, [`Precondition::Present`]
//!   `version > 0`, [`Precondition::ModRevision`] `mod_revision = r` (and `version > 0`, so
//!   `ModRevision(0)` never matches a missing key). The new key's revisions follow from the
//!   transaction's revision and the previous value, exactly as etcd computes them.
//! - etcd revokes a lease (or expires it) in one transaction: all its keys are deleted at
//!   one revision, where the in-process backends use one revision per key.
//! - etcd keeps its compaction point to itself. Reads and watches below it are refused,
//!   and that is how this backend learns it: [`Backend::compacted_revision`] bisects for
//!   the oldest readable revision, starting from the last point it knows of (one read when
//!   nobody else compacted since).
//!
//! Watches: etcd pushes events as fast as it can; a caller that does not read would pin
//! them in memory and, past the HTTP/2 flow-control windows, stall every other request on
//! the connection. So each watch has a pump task that reads the etcd stream into a
//! bounded buffer. When the buffer is full the pump *lets go of the etcd watch* and,
//! once the caller made room, opens a new one after the last revision it delivered —
//! etcd replays the gap from its history, or answers that it was compacted, which ends
//! the stream with [`Error::Compacted`]. A slow watcher costs a re-read, never memory
//! without bound, and never another watcher's progress: the same contract as the
//! in-process backends' ring (`history`). A broken stream (an etcd member restarting) is
//! reopened the same way, with backoff, for up to [`WATCH_RECONNECT_BUDGET`].
//!
//! Reads are linearizable (etcd's default), and every request carries gRPC metadata
//! requiring a leader, so a member cut off from its cluster answers "no leader" rather
//! than stale data.
//!
//! Fencing (see `election`): leases are etcd's leases (an expired holder's keys vanish at
//! one revision, server-side, whatever the holder believes), and every conditional write
//! is one transaction built from a list of compares (`compares`). A guarded write
//! ([`Backend::put_guarded`]) puts its guards' compares first in the same transaction, and
//! its else-branch reads every guard's key and the written key, so a failure names the
//! guard that failed with that key's state at the transaction's revision.
//!
//! [`ThrowawayEtcd`] starts a single-node etcd on loopback for tests and benchmarks.

use std::fmt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::Instrument;

mod client;

pub use client::Client;
use client::pb::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest as EtcdRangeRequest, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, WatchCreateRequest, WatchResponse, compare, request_op, response_op,
};
use client::pb::mvccpb;

use crate::{
    Backend, DeleteResponse, Error, Event, Guard, KeyValue, LeaseId, Precondition, PutResponse,
    RangeRequest, RangeResponse, Result, Revision, WatchStream,
};

/// Events a watch stream buffers for a caller that is not reading, before its pump lets
/// go of the etcd watch and replays from etcd's history later. It bounds the memory an
/// idle watcher pins (like the in-process ring's 256 batches); a caller that reads keeps
/// up without ever reaching it, and one that falls this far behind pays one re-read.
pub const WATCH_BUFFER_EVENTS: usize = 256;

/// How long a pump keeps reopening a broken etcd watch (a member restarting, a leader
/// election) before it ends the stream with the error. A few etcd election timeouts.
pub const WATCH_RECONNECT_BUDGET: Duration = Duration::from_secs(10);

/// First and longest wait between two attempts to reopen a watch.
const RECONNECT_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

/// How long one request may take. etcd answers in milliseconds or fails fast ("no
/// leader"); this catches a member that stopped answering. A write that times out may
/// still have been applied, as with any network store.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How long [`EtcdBackend::connect`] waits for a first answer from the cluster.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach an etcd cluster.
#[derive(Clone, Default)]
pub struct EtcdOptions {
    /// `host:port` of each member (no scheme: TLS decides between http and https).
    pub endpoints: Vec<String>,
    /// Prefixed to every key, e.g. `/shoal` (keys are `/registry/…`, so etcd sees
    /// `/shoal/registry/…`). Empty: keys are used as they are.
    pub namespace: String,
    /// Talk TLS, verifying the servers with this CA (and presenting a client identity).
    pub tls: Option<EtcdTls>,
    /// etcd's own authentication (user + password, exchanged for a token).
    pub auth: Option<EtcdAuth>,
}

impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("namespace", &self.namespace)
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth)
            .finish()
    }
}

/// TLS towards etcd: PEM-encoded CA certificate(s), and optionally a client identity.
#[derive(Clone)]
pub struct EtcdTls {
    pub ca_pem: Vec<u8>,
    /// Client certificate and key, for etcd's `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_pem_len", &self.ca_pem.len())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// An etcd user and its password.
#[derive(Clone)]
pub struct EtcdAuth {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl EtcdOptions {
    /// Parses `etcd://HOST:PORT[,HOST:PORT…][/NAMESPACE]`, as `shoal serve --store` takes
    /// it. TLS and authentication come from elsewhere (flags, files).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming what is wrong with `url`.
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::InvalidArgument(format!(
                "invalid etcd url {url:?}: {why} (expected etcd://HOST:PORT[,HOST:PORT…][/NAMESPACE])"
            ))
        };
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| invalid("it must start with etcd://"))?;
        let (hosts, namespace) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let namespace = if namespace == "/" { "" } else { namespace };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let Some((name, port)) = host.rsplit_once(':') else {
                return Err(invalid(&format!("{host:?} has no port")));
            };
            if name.is_empty() || port.parse::<u16>().is_err() {
                return Err(invalid(&format!("{host:?} is not HOST:PORT")));
            }
            endpoints.push(host.to_owned());
        }
        Ok(EtcdOptions {
            endpoints,
            namespace: namespace.to_owned(),
            tls: None,
            auth: None,
        })
    }
}

/// A store on an etcd cluster. Cheap to share through [`crate::Store`].
///
/// Dropping it ends every watch stream with [`Error::Closed`].
///
/// # Cancel safety
///
/// Reads are cancel safe. A write whose future is dropped may or may not have been
/// applied, as with any network store; so may one that failed with a timeout.
pub struct EtcdBackend {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// Prefixed to every key; stripped from every key read back.
    namespace: Vec<u8>,
    /// A revision the compaction point is known to be at or above (etcd's compaction
    /// only moves forward): where the search for the compaction point starts.
    compacted_floor: AtomicI64,
    /// Cancelled when the backend is dropped: the watch pumps end.
    shutdown: CancellationToken,
}

impl fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("namespace", &String::from_utf8_lossy(&self.inner.namespace))
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdBackend {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
    }
}

impl EtcdBackend {
    /// Connects to the cluster and checks that it answers a read.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for options the client refuses (no endpoint, a bad
    /// certificate); [`Error::Backend`] when etcd does not answer within a few seconds or
    /// refuses the credentials.
    pub async fn connect(options: EtcdOptions) -> Result<Self> {
        if options.endpoints.is_empty() {
            return Err(Error::InvalidArgument("no etcd endpoint given".into()));
        }
        let urls: Vec<String> = options
            .endpoints
            .iter()
            .map(|e| format!("etcd://{e}"))
            .collect();
        let connect = Client::connect(&options);
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(Error::Backend(why))) => {
                return Err(Error::Backend(format!(
                    "failed to connect to etcd at {}: {why}",
                    urls.join(",")
                )));
            }
            Ok(Err(err)) => return Err(err),
            Err(_) => {
                return Err(Error::Backend(format!(
                    "etcd at {} did not answer within {CONNECT_TIMEOUT:?}",
                    urls.join(",")
                )));
            }
        };
        let backend = EtcdBackend::from_client(&client, &options.namespace);
        match tokio::time::timeout(CONNECT_TIMEOUT, backend.current_revision()).await {
            Ok(Ok(_)) => Ok(backend),
            Ok(Err(Error::Backend(why))) => Err(Error::Backend(format!(
                "could not read from etcd at {}: {why}",
                urls.join(",")
            ))),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Error::Backend(format!(
                "etcd at {} did not answer within {CONNECT_TIMEOUT:?}",
                urls.join(",")
            ))),
        }
    }

    /// A backend on an existing client, under `namespace` (prefixed to every key). Does
    /// no IO: several backends (say, one per test) can share one client and its
    /// connections.
    pub fn from_client(client: &Client, namespace: &str) -> Self {
        EtcdBackend {
            inner: Arc::new(Inner {
                client: client.clone(),
                namespace: namespace.as_bytes().to_vec(),
                compacted_floor: AtomicI64::new(0),
                shutdown: CancellationToken::new(),
            }),
        }
    }
}

/// Why an etcd request failed, as far as the store's contract cares.
#[derive(Debug)]
enum Failure {
    /// The revision asked for is below etcd's compaction point.
    Compacted,
    /// The revision asked for is ahead of etcd's.
    FutureRevision,
    LeaseNotFound,
    Other(Error),
}

impl Failure {
    fn of(op: &str, status: &Status) -> Self {
        // etcd's errors reach us as gRPC statuses whose messages are its stable error
        // strings (rpctypes in etcd's source).
        let text = status.message();
        if text.contains("required revision has been compacted") {
            Failure::Compacted
        } else if text.contains("required revision is a future revision") {
            Failure::FutureRevision
        } else if text.contains("requested lease not found") {
            Failure::LeaseNotFound
        } else {
            Failure::Other(Error::Backend(format!(
                "etcd {op} failed: {}",
                client::describe(status)
            )))
        }
    }

    /// The error for a request where none of the specific failures is expected.
    fn into_error(self, op: &str) -> Error {
        match self {
            Failure::Other(err) => err,
            other => Error::Backend(format!("etcd {op} failed unexpectedly: {other:?}")),
        }
    }
}

/// The answers of one etcd watch (the stream carries exactly one).
type EtcdWatch = tonic::Streaming<WatchResponse>;

/// Runs one etcd request under [`REQUEST_TIMEOUT`].
async fn request<T>(op: &str, fut: impl Future<Output = Result<T, Status>>) -> Result<T, Failure> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(status)) => Err(Failure::of(op, &status)),
        Err(_) => Err(Failure::Other(Error::Backend(format!(
            "etcd {op} timed out after {REQUEST_TIMEOUT:?} (a write may still have been applied)"
        )))),
    }
}

fn revision_of(header: Option<&ResponseHeader>) -> Result<Revision> {
    header
        .map(|header| header.revision)
        .ok_or_else(|| Error::Backend("etcd answered without a response header".into()))
}

/// The first key after every key that starts with `prefix` (etcd's `range_end` for a
/// prefix); `[0]`, meaning "no end", when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The comparisons that make a write conditional on `cond`.
fn compares(key: &[u8], cond: Precondition) -> Vec<Compare> {
    use compare::CompareResult::{Equal, Greater};
    use compare::TargetUnion::{CreateRevision, ModRevision, Version};
    let is = |result: compare::CompareResult, target: compare::TargetUnion| {
        let kind = match target {
            Version(_) => compare::CompareTarget::Version,
            CreateRevision(_) => compare::CompareTarget::Create,
            ModRevision(_) => compare::CompareTarget::Mod,
            compare::TargetUnion::Value(_) => compare::CompareTarget::Value,
            compare::TargetUnion::Lease(_) => compare::CompareTarget::Lease,
        };
        Compare {
            result: result.into(),
            target: kind.into(),
            key: key.to_vec(),
            range_end: Vec::new(),
            target_union: Some(target),
        }
    };
    match cond {
        Precondition::None => Vec::new(),
        Precondition::Absent => vec![is(Equal, CreateRevision(0))],
        Precondition::Present => vec![is(Greater, Version(0))],
        // A missing key compares as mod_revision 0: the version check keeps
        // `ModRevision(0)` from matching it.
        Precondition::ModRevision(revision) => {
            vec![is(Equal, ModRevision(revision)), is(Greater, Version(0))]
        }
        // Likewise: a missing key compares as create_revision 0.
        Precondition::CreateRevision(revision) => {
            vec![is(Equal, CreateRevision(revision)), is(Greater, Version(0))]
        }
    }
}

/// A transaction's read of one key.
fn get_op(key: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(EtcdRangeRequest {
            key,
            ..EtcdRangeRequest::default()
        })),
    }
}

impl Inner {
    fn key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.namespace.len() + key.len());
        full.extend_from_slice(&self.namespace);
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// `[start, end)` of the etcd keys under `prefix`.
    fn span(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let start = self.key(prefix);
        let end = prefix_end(&start);
        // An empty key is not a key to etcd; "\0" up to "no end" is every key.
        let start = if start.is_empty() { vec![0] } else { start };
        (start, end)
    }

    /// A key that only identifies the namespace, for reads that only want a revision or
    /// a refusal.
    fn probe_key(&self) -> Vec<u8> {
        if self.namespace.is_empty() {
            vec![0]
        } else {
            self.namespace.clone()
        }
    }

    fn strip<'k>(&self, key: &'k [u8]) -> Result<&'k str> {
        let Some(rest) = key.strip_prefix(self.namespace.as_slice()) else {
            return Err(Error::Backend(format!(
                "etcd returned key {:?} outside the namespace",
                String::from_utf8_lossy(key)
            )));
        };
        std::str::from_utf8(rest).map_err(|_| {
            Error::Backend(format!(
                "etcd key {:?} is not UTF-8",
                String::from_utf8_lossy(key)
            ))
        })
    }

    fn owned_kv(&self, kv: mvccpb::KeyValue) -> Result<KeyValue> {
        Ok(KeyValue {
            key: self.strip(&kv.key)?.to_owned(),
            value: Bytes::from(kv.value),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: (kv.lease != 0).then_some(kv.lease),
        })
    }

    async fn current_revision(&self) -> Result<Revision> {
        let count = EtcdRangeRequest {
            key: self.probe_key(),
            count_only: true,
            ..EtcdRangeRequest::default()
        };
        let resp = request("range", self.client.range(count))
            .await
            .map_err(|f| f.into_error("range"))?;
        revision_of(resp.header.as_ref())
    }

    /// Whether etcd still serves reads at `revision` (`Ok(false)`: compacted away).
    async fn readable(&self, revision: Revision) -> Result<bool, Failure> {
        let count = EtcdRangeRequest {
            key: self.probe_key(),
            revision: revision.max(1),
            count_only: true,
            ..EtcdRangeRequest::default()
        };
        match request("range", self.client.range(count)).await {
            Ok(_) => Ok(true),
            Err(Failure::Compacted) => Ok(false),
            Err(other) => Err(other),
        }
    }

    fn raise_compacted_floor(&self, revision: Revision) {
        self.compacted_floor.fetch_max(revision, Ordering::AcqRel);
    }

    /// etcd's compaction point, as the store reports it: the oldest revision etcd still
    /// reads at, or 0 while that is revision 1 (which holds no events in any etcd).
    async fn compacted_revision(&self) -> Result<Revision> {
        let floor = self.compacted_floor.load(Ordering::Acquire).max(1);
        let readable = |r| async move { self.readable(r).await.map_err(|f| f.into_error("range")) };
        let oldest = if readable(floor).await? {
            floor
        } else {
            // Invariant: `lo` is compacted away, `hi` is readable (the head always is).
            let (mut lo, mut hi) = (floor, self.current_revision().await?);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if readable(mid).await? {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            hi
        };
        self.raise_compacted_floor(oldest);
        Ok(if oldest <= 1 { 0 } else { oldest })
    }

    /// Reads a range at the head (`at: None`) or at a past revision.
    async fn range(&self, req: &RangeRequest, at: Option<Revision>) -> Result<RangeResponse> {
        let (mut start, end) = self.span(&req.prefix);
        if let Some(after) = &req.start_after
            && after.as_str() >= req.prefix.as_str()
        {
            start = self.key(after);
            start.push(0);
        }
        let range = EtcdRangeRequest {
            key: start,
            range_end: end,
            // 0: no limit, for both.
            limit: i64::try_from(req.limit).unwrap_or(i64::MAX),
            revision: at.map_or(0, |revision| revision.max(1)),
            ..EtcdRangeRequest::default()
        };
        let resp = match request("range", self.client.range(range)).await {
            Ok(resp) => resp,
            Err(Failure::Compacted) => {
                let requested = at.unwrap_or_default();
                return Err(Error::Compacted {
                    requested,
                    compacted: self.compacted_revision().await?,
                });
            }
            Err(Failure::FutureRevision) => {
                return Err(Error::FutureRevision {
                    requested: at.unwrap_or_default(),
                    current: self.current_revision().await?,
                });
            }
            Err(other) => return Err(other.into_error("range")),
        };
        let revision = match at {
            Some(at) => at,
            None => revision_of(resp.header.as_ref())?,
        };
        let more = resp.more;
        let kvs = resp
            .kvs
            .into_iter()
            .map(|kv| self.owned_kv(kv))
            .collect::<Result<Vec<_>>>()?;
        Ok(RangeResponse {
            kvs,
            more,
            revision,
        })
    }

    /// Runs a transaction: `If(guards' compares, then `compares`) Then(then) Else(get of
    /// every guard's key, then of `key`)`. Answers the revision and the then-branch's
    /// response when it succeeded, else `PreconditionFailed` naming the first guard that
    /// failed (judged on the else-branch's reads, which are of the same revision as the
    /// compares), or `key`, with that key as it is.
    async fn conditional(
        &self,
        op: &str,
        guards: &[Guard],
        key: &str,
        compares: Vec<Compare>,
        then: request_op::Request,
        lease: Option<LeaseId>,
    ) -> Result<(Revision, response_op::Response)> {
        let mut when = Vec::with_capacity(compares.len() + 2 * guards.len());
        let mut otherwise = Vec::with_capacity(guards.len() + 1);
        for guard in guards {
            let full = self.key(&guard.key);
            when.extend(self::compares(&full, guard.cond));
            otherwise.push(get_op(full));
        }
        when.extend(compares);
        otherwise.push(get_op(self.key(key)));
        let txn = TxnRequest {
            compare: when,
            success: vec![RequestOp {
                request: Some(then),
            }],
            failure: otherwise,
        };
        let resp = match request(op, self.client.txn(txn)).await {
            Ok(resp) => resp,
            Err(Failure::LeaseNotFound) => {
                return Err(Error::LeaseNotFound(lease.unwrap_or_default()));
            }
            Err(other) => return Err(other.into_error(op)),
        };
        let revision = revision_of(resp.header.as_ref())?;
        let mut answers = resp.responses;
        if resp.succeeded {
            return match answers.pop() {
                Some(ResponseOp {
                    response: Some(answer),
                }) if answers.is_empty() => Ok((revision, answer)),
                answer => Err(Error::Backend(format!(
                    "etcd answered a {op} transaction with {answer:?}"
                ))),
            };
        }
        let mut current = Vec::with_capacity(answers.len());
        for answer in answers {
            let Some(response_op::Response::ResponseRange(get)) = answer.response else {
                return Err(Error::Backend(format!(
                    "etcd answered a failed {op} transaction with {answer:?}"
                )));
            };
            current.push(
                get.kvs
                    .into_iter()
                    .next()
                    .map(|kv| self.owned_kv(kv))
                    .transpose()?,
            );
        }
        if current.len() != guards.len() + 1 {
            return Err(Error::Backend(format!(
                "etcd answered a failed {op} transaction with {} reads, not {}",
                current.len(),
                guards.len() + 1
            )));
        }
        for (guard, current) in guards.iter().zip(&current) {
            guard.cond.check(&guard.key, current.as_ref())?;
        }
        Err(Error::PreconditionFailed {
            key: key.to_owned(),
            current: current.pop().flatten().map(Box::new),
        })
    }

    /// Opens an etcd watch of `[key, end)` from `start` (inclusive) and waits for etcd to
    /// acknowledge it.
    async fn open_watch(&self, key: &[u8], end: &[u8], start: Revision) -> Result<EtcdWatch> {
        let create = WatchCreateRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            start_revision: start,
            prev_kv: true,
            ..WatchCreateRequest::default()
        };
        let mut stream = request("watch", self.client.watch(create))
            .await
            .map_err(|f| f.into_error("watch"))?;
        // etcd acknowledges a new watch before it sends any event for it. A start below
        // the compaction point is accepted here and cancelled afterwards, with the
        // compaction point: the pump turns that into `Compacted`.
        match request("watch", stream.message())
            .await
            .map_err(|f| f.into_error("watch"))?
        {
            Some(resp) if resp.created && !resp.canceled => Ok(stream),
            Some(resp) => Err(Error::Backend(format!(
                "etcd refused the watch: {}",
                resp.cancel_reason
            ))),
            None => Err(Error::Backend(
                "etcd closed the watch stream before acknowledging it".into(),
            )),
        }
    }

    /// A watch event as the store reports it.
    fn event(&self, event: mvccpb::Event) -> Result<Event, EventFailure> {
        let kind = event.r#type();
        let kv = event.kv.ok_or_else(|| {
            EventFailure::Malformed(Error::Backend(
                "etcd sent a watch event without a key".into(),
            ))
        })?;
        let kv = self.owned_kv(kv).map_err(EventFailure::Malformed)?;
        let prev = event
            .prev_kv
            .map(|p| self.owned_kv(p))
            .transpose()
            .map_err(EventFailure::Malformed)?;
        match (kind, prev) {
            // A create: there is no previous value (etcd attaches none either).
            (mvccpb::event::EventType::Put, _) if kv.version == 1 => {
                Ok(Event::Put { kv, prev: None })
            }
            (mvccpb::event::EventType::Put, Some(prev)) => Ok(Event::Put {
                kv,
                prev: Some(prev),
            }),
            (mvccpb::event::EventType::Delete, Some(prev)) => Ok(Event::Delete {
                prev,
                revision: kv.mod_revision,
            }),
            (_, None) => Err(EventFailure::PrevCompacted),
        }
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let inner = &self.inner;
        let get = EtcdRangeRequest {
            key: inner.key(key),
            ..EtcdRangeRequest::default()
        };
        let resp = request("get", inner.client.range(get))
            .await
            .map_err(|f| f.into_error("get"))?;
        resp.kvs
            .into_iter()
            .next()
            .map(|kv| inner.owned_kv(kv))
            .transpose()
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.inner.range(&req, None).await
    }

    async fn range_at(&self, req: RangeRequest, revision: Revision) -> Result<RangeResponse> {
        self.inner.range(&req, Some(revision)).await
    }

    async fn put_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        value: Bytes,
        cond: Precondition,
        lease: Option<LeaseId>,
    ) -> Result<PutResponse> {
        let inner = &self.inner;
        let full = inner.key(key);
        let compares = compares(&full, cond);
        let put = PutRequest {
            key: full,
            value: value.to_vec(),
            lease: lease.unwrap_or(0),
            prev_kv: true,
            ..PutRequest::default()
        };
        let (revision, prev) = if cond == Precondition::None && guards.is_empty() {
            // Unconditional: a plain put, one message smaller than a transaction.
            let resp = match request("put", inner.client.put(put)).await {
                Ok(resp) => resp,
                Err(Failure::LeaseNotFound) => {
                    return Err(Error::LeaseNotFound(lease.unwrap_or_default()));
                }
                Err(other) => return Err(other.into_error("put")),
            };
            (revision_of(resp.header.as_ref())?, resp.prev_kv)
        } else {
            let put = request_op::Request::RequestPut(put);
            match inner
                .conditional("put", guards, key, compares, put, lease)
                .await?
            {
                (revision, response_op::Response::ResponsePut(put)) => (revision, put.prev_kv),
                (_, other) => {
                    return Err(Error::Backend(format!(
                        "etcd answered a put with {other:?}"
                    )));
                }
            }
        };
        let prev = prev.map(|kv| inner.owned_kv(kv)).transpose()?;
        let kv = KeyValue::after_put(key, value, prev.as_ref(), revision, lease);
        Ok(PutResponse { kv, prev })
    }

    async fn delete_guarded(
        &self,
        guards: &[Guard],
        key: &str,
        cond: Precondition,
    ) -> Result<DeleteResponse> {
        let inner = &self.inner;
        let full = inner.key(key);
        let compares = match cond {
            Precondition::Absent => {
                return Err(Error::InvalidArgument(
                    "a delete cannot require the key to be absent".into(),
                ));
            }
            // Deleting a missing key fails whatever the precondition.
            Precondition::None => compares(&full, Precondition::Present),
            other => compares(&full, other),
        };
        let delete = request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: full,
            prev_kv: true,
            ..DeleteRangeRequest::default()
        });
        match inner
            .conditional("delete", guards, key, compares, delete, None)
            .await?
        {
            (revision, response_op::Response::ResponseDeleteRange(deleted)) => {
                let prev = deleted.prev_kvs.into_iter().next().ok_or_else(|| {
                    Error::Backend("etcd deleted a key without returning it".into())
                })?;
                Ok(DeleteResponse {
                    prev: inner.owned_kv(prev)?,
                    revision,
                })
            }
            (_, other) => Err(Error::Backend(format!(
                "etcd answered a delete with {other:?}"
            ))),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let inner = &self.inner;
        // etcd accepts a watch from any revision and reports a compacted start only
        // later, asynchronously; a read at `after` is refused exactly when the watch
        // must be (below the compaction point, or ahead of the head).
        match inner.readable(after).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Compacted {
                    requested: after,
                    compacted: inner.compacted_revision().await?,
                });
            }
            Err(Failure::FutureRevision) => {
                return Err(Error::FutureRevision {
                    requested: after,
                    current: inner.current_revision().await?,
                });
            }
            Err(other) => return Err(other.into_error("watch")),
        }
        let (key, end) = inner.span(prefix);
        let stream = inner.open_watch(&key, &end, after.max(0) + 1).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER_EVENTS);
        let pump = Pump {
            inner: inner.clone(),
            key,
            end,
            tx,
            seen: after,
        };
        let span = tracing::info_span!("etcd_watch", prefix, after);
        tokio::spawn(pump.run(stream).instrument(span));
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.inner.compacted_revision().await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let inner = &self.inner;
        if revision <= 1 {
            // Revision 1 holds no events in any etcd: there is nothing to forget.
            return Ok(());
        }
        let compact = CompactionRequest {
            revision,
            physical: false,
        };
        match request("compact", inner.client.compact(compact)).await {
            Ok(_) => {
                inner.raise_compacted_floor(revision);
                Ok(())
            }
            // Already compacted at or above `revision`: as asked, nothing to do.
            Err(Failure::Compacted) => {
                inner.raise_compacted_floor(revision);
                Ok(())
            }
            Err(Failure::FutureRevision) => Err(Error::FutureRevision {
                requested: revision,
                current: inner.current_revision().await?,
            }),
            Err(other) => Err(other.into_error("compact")),
        }
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(Error::InvalidArgument(
                "a lease needs a positive ttl".into(),
            ));
        }
        // etcd counts whole seconds (and raises a TTL below its minimum, about one and a
        // half election timeouts): round up, never grant less than asked.
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let seconds = i64::try_from(seconds)
            .map_err(|_| Error::InvalidArgument(format!("lease ttl {ttl:?} is too long")))?;
        let grant = LeaseGrantRequest {
            ttl: seconds,
            id: 0,
        };
        let resp = request("lease grant", self.inner.client.lease_grant(grant))
            .await
            .map_err(|f| f.into_error("lease grant"))?;
        if !resp.error.is_empty() {
            return Err(Error::Backend(format!(
                "etcd lease grant failed: {}",
                resp.error
            )));
        }
        Ok(resp.id)
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<()> {
        // One keep-alive on its own stream, waiting for etcd's answer, which carries a
        // TTL of 0 for a lease that is gone.
        match request("lease keep-alive", self.inner.client.lease_keep_alive(id)).await {
            Ok(Some(answer)) if answer.ttl > 0 => Ok(()),
            Ok(Some(_)) | Err(Failure::LeaseNotFound) => Err(Error::LeaseNotFound(id)),
            Ok(None) => Err(Error::Backend(
                "etcd lease keep-alive failed: etcd closed the stream without answering".into(),
            )),
            Err(other) => Err(other.into_error("lease keep-alive")),
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        match request(
            "lease revoke",
            self.inner.client.lease_revoke(LeaseRevokeRequest { id }),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(Failure::LeaseNotFound) => Err(Error::LeaseNotFound(id)),
            Err(other) => Err(other.into_error("lease revoke")),
        }
    }
}

/// Why an etcd watch event could not be reported.
#[derive(Debug)]
enum EventFailure {
    /// etcd could not attach the previous value: it was compacted between the event and
    /// its delivery, so history this watcher needs is gone.
    PrevCompacted,
    Malformed(Error),
}

/// Feeds one watch stream from an etcd watch: see the module docs for the phases.
struct Pump {
    inner: Arc<Inner>,
    key: Vec<u8>,
    end: Vec<u8>,
    tx: mpsc::Sender<Result<Event>>,
    /// Every event at or below this revision was delivered (or is not ours); etcd never
    /// splits a revision across responses, so this is always a whole revision.
    seen: Revision,
}

/// What became of one etcd response.
enum Forwarded {
    /// Every event is in the buffer.
    All,
    /// The buffer filled up: these events (in order) are still to be delivered.
    Lagging(Vec<Event>),
    /// The stream is over: deliver this error last.
    Failed(Error),
    /// The stream is over: history it needed was compacted (how far is still to be
    /// asked).
    Compacted,
    /// The caller dropped the stream.
    Gone,
}

impl Pump {
    async fn run(mut self, mut stream: EtcdWatch) {
        let shutdown = self.inner.shutdown.clone();
        let last = loop {
            let next = tokio::select! {
                next = stream.message() => next,
                () = self.tx.closed() => return,
                () = shutdown.cancelled() => break Error::Closed,
            };
            let resp = match next {
                Ok(Some(resp)) => resp,
                broken => {
                    let why = broken
                        .err()
                        .map_or("closed by etcd".into(), |e| e.to_string());
                    tracing::debug!(seen = self.seen, why, "etcd watch broke, reopening");
                    drop(stream);
                    match self.reopen().await {
                        Ok(Some(reopened)) => {
                            stream = reopened;
                            continue;
                        }
                        Ok(None) => return,
                        Err(err) => break err,
                    }
                }
            };
            match self.forward(resp) {
                Forwarded::All => {}
                Forwarded::Gone => return,
                Forwarded::Failed(err) => break err,
                Forwarded::Compacted => {
                    break match self.inner.compacted_revision().await {
                        Ok(compacted) => Error::Compacted {
                            requested: self.seen,
                            compacted,
                        },
                        Err(err) => err,
                    };
                }
                Forwarded::Lagging(rest) => {
                    tracing::debug!(
                        seen = self.seen,
                        "watcher fell behind its buffer, letting go of the etcd watch"
                    );
                    // Nothing more is read from etcd until the caller catches up.
                    drop(stream);
                    for event in rest {
                        let revision = event.revision();
                        tokio::select! {
                            sent = self.tx.send(Ok(event)) => if sent.is_err() { return },
                            () = shutdown.cancelled() => return,
                        }
                        self.seen = revision;
                    }
                    match self.reopen().await {
                        Ok(Some(reopened)) => stream = reopened,
                        Ok(None) => return,
                        Err(err) => break err,
                    }
                }
            }
        };
        // The final error, once the caller made room for it (it holds the stream, so
        // waiting costs no more than the stream itself); a caller that is gone does not
        // need it.
        tokio::select! {
            _ = self.tx.send(Err(last)) => {}
            () = self.tx.closed() => {}
        }
    }

    /// Puts the events of one response in the buffer, as far as it has room.
    fn forward(&mut self, resp: WatchResponse) -> Forwarded {
        if resp.canceled {
            return Forwarded::Failed(match resp.compact_revision {
                0 => Error::Backend(format!("etcd cancelled the watch: {}", resp.cancel_reason)),
                compacted => {
                    self.inner.raise_compacted_floor(compacted);
                    Error::Compacted {
                        requested: self.seen,
                        compacted,
                    }
                }
            });
        }
        let mut rest = Vec::new();
        for event in resp.events {
            let event = match self.inner.event(event) {
                Ok(event) => event,
                Err(EventFailure::Malformed(err)) => return Forwarded::Failed(err),
                Err(EventFailure::PrevCompacted) => return Forwarded::Compacted,
            };
            if !rest.is_empty() {
                rest.push(event);
                continue;
            }
            let revision = event.revision();
            match self.tx.try_send(Ok(event)) {
                Ok(()) => self.seen = revision,
                Err(mpsc::error::TrySendError::Full(item)) => rest.extend(item.ok()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Forwarded::Gone,
            }
        }
        if rest.is_empty() {
            Forwarded::All
        } else {
            Forwarded::Lagging(rest)
        }
    }

    /// Opens a new etcd watch after `seen`, retrying with backoff for up to
    /// [`WATCH_RECONNECT_BUDGET`]. `Ok(None)`: the caller is gone or the backend closed.
    async fn reopen(&mut self) -> Result<Option<EtcdWatch>> {
        let shutdown = self.inner.shutdown.clone();
        let started = Instant::now();
        let mut backoff = RECONNECT_BACKOFF.0;
        loop {
            if self.tx.is_closed() {
                return Ok(None);
            }
            let opened = tokio::select! {
                opened = self.inner.open_watch(&self.key, &self.end, self.seen + 1) => opened,
                () = shutdown.cancelled() => return Err(Error::Closed),
            };
            match opened {
                Ok(stream) => return Ok(Some(stream)),
                Err(err) if started.elapsed() >= WATCH_RECONNECT_BUDGET => return Err(err),
                Err(err) => {
                    tracing::debug!(error = %err, seen = self.seen, "reopening the etcd watch failed");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return Err(Error::Closed),
                () = self.tx.closed() => return Ok(None),
            }
            backoff = (backoff * 2).min(RECONNECT_BACKOFF.1);
        }
    }
}

/// A single-node etcd on loopback, in a temporary directory: for tests and benchmarks,
/// never for data that matters. It is killed (SIGKILL) and its directory removed when
/// dropped.
///
/// It runs `$SHOAL_ETCD_BIN`, else `/usr/bin/etcd` (Debian's `etcd-server`), else `etcd`
/// from `PATH`, with `--heartbeat-interval=10 --election-timeout=100` so that it elects
/// itself in about 0.1 s, and on ports the kernel just handed out (tried again on other
/// ports if another process took them in between).
#[derive(Debug)]
pub struct ThrowawayEtcd {
    bin: PathBuf,
    /// `None` only between a kill and the restart that follows.
    child: Option<Child>,
    dir: PathBuf,
    /// `127.0.0.1:PORT` for clients, and for the peer listener.
    endpoint: String,
    peer: String,
}

/// How long a throwaway etcd may take to answer a first read. It takes about 0.5 s; the
/// margin is for a loaded 2-core machine building in parallel.
const THROWAWAY_START_DEADLINE: Duration = Duration::from_secs(30);

/// Attempts with fresh ports before giving up: another process may take a port between
/// the moment it is picked and the moment etcd binds it.
const THROWAWAY_START_ATTEMPTS: usize = 3;

impl ThrowawayEtcd {
    /// Starts etcd and waits until it answers.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when no etcd binary is found (the message says how to get
    /// one), or etcd exits or does not answer in time (with its log).
    pub async fn start() -> Result<Self> {
        let bin = etcd_binary()?;
        let mut last = None;
        for _ in 0..THROWAWAY_START_ATTEMPTS {
            static STARTED: AtomicU64 = AtomicU64::new(0);
            let n = STARTED.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "shoal-etcd-{}-{n}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ));
            std::fs::create_dir_all(&dir)?;
            let mut etcd = ThrowawayEtcd {
                bin: bin.clone(),
                child: None,
                dir,
                endpoint: format!("127.0.0.1:{}", free_port()?),
                peer: format!("127.0.0.1:{}", free_port()?),
            };
            match etcd.run().await {
                Ok(()) => return Ok(etcd),
                Err(err) => last = Some(err),
            }
        }
        Err(last.expect("at least one attempt was made"))
    }

    /// Kills etcd (SIGKILL) and starts it again on the same data and ports: what an etcd
    /// member's crash and restart look like to its clients.
    ///
    /// # Errors
    ///
    /// As [`ThrowawayEtcd::start`].
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.run().await
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process and waits until it answers a read.
    async fn run(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))?;
        let (client, peer) = (
            format!("http://{}", self.endpoint),
            format!("http://{}", self.peer),
        );
        let child = Command::new(&self.bin)
            .arg("--name=throwaway")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=throwaway={peer}"))
            .arg("--initial-cluster-state=new")
            .args(["--heartbeat-interval=10", "--election-timeout=100"])
            // With authentication on (one test turns it on), a token expires after a
            // second unused, so that the client's renewal is exercised.
            .arg("--auth-token-ttl=1")
            .args(["--logger=zap", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|err| {
                Error::Backend(format!("failed to start {}: {err}", self.bin.display()))
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + THROWAWAY_START_DEADLINE;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                return Err(Error::Backend(format!(
                    "etcd exited ({status}) before answering\n{}",
                    self.log()
                )));
            }
            let attempt = async {
                let client = self.client().await?;
                EtcdBackend::from_client(&client, "")
                    .current_revision()
                    .await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Backend(format!(
                    "etcd did not answer within {THROWAWAY_START_DEADLINE:?}\n{}",
                    self.log()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `127.0.0.1:PORT`, where clients reach it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `etcd://127.0.0.1:PORT`, as `shoal serve --store` takes it.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint)
    }

    /// A client connected to it.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the client cannot be built.
    pub async fn client(&self) -> Result<Client> {
        Client::connect(&EtcdOptions {
            endpoints: vec![self.endpoint.clone()],
            ..EtcdOptions::default()
        })
        .await
    }

    /// The end of what etcd logged (warnings and errors), for failure messages.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("--- etcd log (last 30 lines) ---\n{tail}")
    }
}

impl Drop for ThrowawayEtcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The etcd binary to run: `$SHOAL_ETCD_BIN`, `/usr/bin/etcd`, or `etcd` on `PATH`.
fn etcd_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SHOAL_ETCD_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let debian = PathBuf::from("/usr/bin/etcd");
    if debian.is_file() {
        return Ok(debian);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            Error::Backend(
                "no etcd binary found: install Debian's etcd-server (apt-get install \
                 etcd-server; scripts/test does) or set SHOAL_ETCD_BIN"
                    .into(),
            )
        })
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::conformance;

    /// A fresh namespace of `client` per call: each store starts empty.
    fn mk_stores(client: Client) -> impl Fn() -> Store {
        let next = AtomicU64::new(0);
        move || {
            let n = next.fetch_add(1, Ordering::Relaxed);
            Store::new(EtcdBackend::from_client(
                &client,
                &format!("/shoal-test-{n}/"),
            ))
        }
    }

    async fn start_etcd() -> (ThrowawayEtcd, Client) {
        let etcd = ThrowawayEtcd::start()
            .await
            .unwrap_or_else(|err| panic!("the etcd tests need a real etcd: {err}"));
        let client = etcd.client().await.expect("connect to the throwaway etcd");
        (etcd, client)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_backend_passes_the_conformance_suite() {
        let (_etcd, client) = start_etcd().await;
        conformance::test_suite(mk_stores(client)).await;
    }

    #[test]
    fn etcd_backend_agrees_with_the_model() {
        // The model check runs its own runtime; the client's connection lives on this
        // one, which stays up meanwhile.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (_etcd, client) = runtime.block_on(start_etcd());
        conformance::model_check(mk_stores(client), 32);
    }

    /// Fails the test with `what` if `fut` takes longer than ten seconds.
    async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .unwrap_or_else(|_| panic!("hung: {what}"))
    }

    async fn next_revisions(watch: &mut WatchStream, n: usize, what: &str) -> Vec<Revision> {
        within(what, async {
            let mut revisions = Vec::new();
            while revisions.len() < n {
                match watch.next().await {
                    Some(Ok(event)) => revisions.push(event.revision()),
                    other => panic!("{what}: {other:?}"),
                }
            }
            revisions
        })
        .await
    }

    async fn put(store: &Store, key: &str) -> PutResponse {
        store
            .put(key, Bytes::from_static(b"v"), Precondition::None, None)
            .await
            .unwrap_or_else(|err| panic!("put {key}: {err}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_resumes_across_an_etcd_restart_without_losing_or_repeating_events() {
        let (mut etcd, client) = start_etcd().await;
        let store = Store::new(EtcdBackend::from_client(&client, "/restart/"));
        let base = store.current_revision().await.unwrap();
        let mut watch = store.watch("", base).await.unwrap();
        for i in 0..5 {
            put(&store, &format!("k/{i}")).await;
        }
        let before = next_revisions(&mut watch, 5, "events before the restart").await;

        etcd.restart()
            .await
            .unwrap_or_else(|err| panic!("restart etcd: {err}"));
        // The client reconnects on its own; the first writes may still find the old
        // connection broken.
        let mut written = 0;
        within("writes after the restart", async {
            while written < 5 {
                let key = format!("k/after-{written}");
                if store
                    .put(&key, Bytes::from_static(b"v"), Precondition::None, None)
                    .await
                    .is_ok()
                {
                    written += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
        .await;
        let after = next_revisions(&mut watch, 5, "events after the restart").await;
        let all: Vec<Revision> = before.into_iter().chain(after).collect();
        assert_eq!(all, (base + 1..=base + 10).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_backends_on_one_etcd_are_two_replicas_of_one_store() {
        let (_etcd, client) = start_etcd().await;
        let other = _etcd.client().await.unwrap();
        let (a, b) = (
            Store::new(EtcdBackend::from_client(&client, "/shared/")),
            Store::new(EtcdBackend::from_client(&other, "/shared/")),
        );
        let created = put(&a, "k").await.kv;
        assert_eq!(b.get("k").await.unwrap().as_ref(), Some(&created));
        // A revision from one replica is a precondition on the other (resourceVersion).
        let swapped = b
            .put(
                "k",
                Bytes::from_static(b"w"),
                Precondition::ModRevision(created.mod_revision),
                None,
            )
            .await
            .unwrap();
        let lost = a
            .put(
                "k",
                Bytes::from_static(b"x"),
                Precondition::ModRevision(created.mod_revision),
                None,
            )
            .await;
        assert!(
            matches!(&lost, Err(Error::PreconditionFailed { current: Some(kv), .. }) if **kv == swapped.kv),
            "{lost:?}"
        );
        // A lease granted through one replica holds keys written through the other.
        let lease = a.lease_grant(Duration::from_secs(60)).await.unwrap();
        b.put("held", Bytes::new(), Precondition::None, Some(lease))
            .await
            .unwrap();
        a.lease_revoke(lease).await.unwrap();
        assert_eq!(b.get("held").await.unwrap(), None);
        assert_eq!(
            a.current_revision().await.unwrap(),
            b.current_revision().await.unwrap()
        );
    }

    #[tokio::test]
    async fn dropping_the_backend_ends_its_watches() {
        let (_etcd, client) = start_etcd().await;
        let store = Store::new(EtcdBackend::from_client(&client, "/drop/"));
        let mut watch = store.watch("", 0).await.unwrap();
        drop(store);
        let end = within("the watch to notice the store is gone", watch.next()).await;
        assert!(matches!(end, Some(Err(Error::Closed))), "{end:?}");
        assert!(watch.next().await.is_none());
    }

    #[tokio::test]
    async fn etcd_authentication_is_used_when_given() {
        let (etcd, client) = start_etcd().await;
        use client::pb::etcdserverpb::{
            AuthEnableRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
        };
        let mut root = client.auth();
        root.user_add(AuthUserAddRequest {
            name: "root".into(),
            password: "root-password".into(),
            ..AuthUserAddRequest::default()
        })
        .await
        .unwrap();
        root.user_grant_role(AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        })
        .await
        .unwrap();
        root.auth_enable(AuthEnableRequest {}).await.unwrap();
        let options = |auth: Option<EtcdAuth>| EtcdOptions {
            endpoints: vec![etcd.endpoint().to_owned()],
            namespace: "/auth/".into(),
            tls: None,
            auth,
        };

        let anonymous = EtcdBackend::connect(options(None)).await;
        assert!(
            matches!(&anonymous, Err(Error::Backend(why)) if why.contains("could not read")),
            "{anonymous:?}"
        );
        let wrong = EtcdBackend::connect(options(Some(EtcdAuth {
            user: "root".into(),
            password: "guess".into(),
        })))
        .await;
        assert!(matches!(&wrong, Err(Error::Backend(_))), "{wrong:?}");

        let store = Store::new(
            EtcdBackend::connect(options(Some(EtcdAuth {
                user: "root".into(),
                password: "root-password".into(),
            })))
            .await
            .unwrap(),
        );
        let kv = put(&store, "k").await.kv;
        assert_eq!(store.get("k").await.unwrap(), Some(kv));

        // The throwaway etcd forgets a token unused for a second (`--auth-token-ttl=1`):
        // the client logs in again instead of failing every request from then on. Only
        // time makes a token expire, so this waits for it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = within("a write with an expired token", async {
            loop {
                match store
                    .put("k", Bytes::from_static(b"w"), Precondition::None, None)
                    .await
                {
                    Ok(written) => break written.kv,
                    // The connection itself may still be re-established.
                    Err(err) if !err.to_string().contains("token") => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(err) => panic!("the token was not renewed: {err}"),
                }
            }
        })
        .await;
        assert_eq!(store.get("k").await.unwrap(), Some(after));
    }

    #[test]
    fn an_etcd_url_names_members_and_an_optional_namespace() {
        let one = EtcdOptions::from_url("etcd://127.0.0.1:2379").unwrap();
        assert_eq!(
            (one.endpoints, one.namespace),
            (vec!["127.0.0.1:2379".to_owned()], String::new())
        );
        let three = EtcdOptions::from_url("etcd://a:2379,b:2379,[::1]:2379/shoal").unwrap();
        assert_eq!(three.endpoints, ["a:2379", "b:2379", "[::1]:2379"]);
        assert_eq!(three.namespace, "/shoal");
        assert_eq!(EtcdOptions::from_url("etcd://a:1/").unwrap().namespace, "");
        for bad in [
            "http://a:2379",
            "etcd://",
            "etcd://a",
            "etcd://a:x",
            "etcd://:1",
            "etcd://a:1,",
        ] {
            assert!(
                matches!(EtcdOptions::from_url(bad), Err(Error::InvalidArgument(_))),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0", "no end: every key after");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let options = EtcdOptions {
            auth: Some(EtcdAuth {
                user: "shoal".into(),
                password: "hunter2".into(),
            }),
            ..EtcdOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(
            shown.contains("shoal") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
