//! Watch fan-out shared by the in-process backends (memory, SQLite, and the simulator's
//! compact per-cluster stores, which is why it is public).
//!
//! ```text
//!  writer ──commit──▶ WatchHub::publish(batch) ──broadcast ring (WATCH_RING_CAPACITY)──┐
//!                                                                                       │
//!  watcher:  CatchingUp ──(history caught up with current)──▶ Following ◀───────────────┘
//!               ▲   │ pages of HISTORY_PAGE_REVISIONS                  │
//!               │   ▼ from HistorySource (the backend's event log)     │ ring overran us
//!               └──────────────────────────────────────────────────────┘ (Lagged)
//! ```
//!
//! A backend publishes every committed batch of events, in revision order, to its
//! [`WatchHub`]. A watcher subscribes to the hub *before* it looks at history, then reads
//! the backend's history from its start revision up to the revision current at that read,
//! then follows the hub, skipping what history already gave it. Because the subscription
//! came first, every event committed after the history read reaches it through the hub:
//! no gap; because it remembers the last revision it processed (`seen`), nothing is
//! delivered twice.
//!
//! The key design decision: **a slow watcher is never waited for.** The hub is a
//! `tokio::sync::broadcast` ring of `Arc<[Event]>` batches; publishing never blocks, and a
//! watcher that falls more than [`WATCH_RING_CAPACITY`] batches behind is told so
//! (`Lagged`) and goes back to reading the gap from the backend's history, page by page.
//! If that history was compacted in the meantime, the stream yields
//! [`Error::Compacted`] and ends. Every revision of the store is exactly one event, so
//! history is addressable by revision.
//!
//! A watch stream holds only a `Weak` reference to its backend: dropping the store ends
//! every watch with [`Error::Closed`], and dropping a stream frees its ring position.
//!
//! A watcher also reports how far it has read the store ([`WatchProgress`]): every
//! revision it has passed, its own prefix's events or others', so the API server's
//! bookmarks carry a recent resourceVersion even to a watcher of a quiet prefix.
//!
//! Backends that keep history in memory (the simulator's clusters) size it with a
//! [`RetainedLog`]: by time first, as kube-apiserver's watch cache does (a client that is
//! a few seconds behind resumes, however many revisions a burst wrote meanwhile), and by
//! memory as a cap.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::{
    Error, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision, WatchProgress,
    WatchStream,
};

/// Capacity of the broadcast ring, in committed batches (one memory write, or one SQLite
/// group commit of up to `sqlite::WRITE_BATCH_MAX` writes). The ring is what a stalled
/// watcher can pin in memory, so it is kept small; a watcher that falls further behind
/// re-reads the gap from history, which every backend keeps anyway. 256 batches absorbs
/// ordinary scheduling jitter of a busy watcher without sending it back to history.
pub const WATCH_RING_CAPACITY: usize = 256;

/// How many revisions a catching-up watcher reads from history in one step: bounds the
/// memory a replay holds at once and how long it holds a backend lock or read connection.
pub const HISTORY_PAGE_REVISIONS: i64 = 1024;

/// How long in-process history keeps an event for watchers by default: kube-apiserver's
/// watch cache keeps about this much (`eventFreshDuration`). It is real time, not the
/// simulation's: it is about shoal's own clients keeping up, and they live in real time.
pub const DEFAULT_HISTORY_WINDOW: Duration = Duration::from_secs(75);

/// How much history an in-process event log keeps for watchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Events younger than this are kept (within `max_bytes`); older ones are forgotten,
    /// and a watch from before them is answered "compacted" (410 Expired).
    pub window: Duration,
    /// The most memory the log may hold. Past it, the oldest events go, even inside the
    /// window: a burst costs watchers that fell far behind a relist, never unbounded
    /// memory.
    pub max_bytes: usize,
}

/// An event log sized by [`Retention`]: entries in the order they were pushed (for a
/// store, one per revision), each with the real time it was recorded and what it costs
/// in memory. Entries leave from the front only: first every entry older than the
/// window, then, while the log is over its memory cap, the oldest.
///
/// Time is a parameter (`now`), so the sizing is tested without waiting.
#[derive(Debug)]
pub struct RetainedLog<T> {
    entries: VecDeque<Retained<T>>,
    /// The sum of the entries' `bytes`.
    bytes: usize,
    retention: Retention,
}

#[derive(Debug)]
struct Retained<T> {
    at: Instant,
    bytes: usize,
    entry: T,
}

impl<T> RetainedLog<T> {
    pub fn new(retention: Retention) -> Self {
        RetainedLog {
            entries: VecDeque::new(),
            bytes: 0,
            retention,
        }
    }

    /// Appends `entry`, recorded at `now` and costing `bytes`, then evicts what the
    /// retention says must go. Returns the newest entry evicted, if any (the caller's
    /// compaction point moves to it).
    pub fn push(&mut self, entry: T, bytes: usize, now: Instant) -> Option<T> {
        self.bytes += bytes;
        self.entries.push_back(Retained {
            at: now,
            bytes,
            entry,
        });
        self.expire(now)
    }

    /// Evicts every entry older than the window as of `now`, then the oldest entries
    /// while the log is over its memory cap. Returns the newest entry evicted, if any.
    pub fn expire(&mut self, now: Instant) -> Option<T> {
        let mut evicted = None;
        while let Some(oldest) = self.entries.front() {
            let stale = now.saturating_duration_since(oldest.at) > self.retention.window;
            if !stale && self.bytes <= self.retention.max_bytes {
                break;
            }
            evicted = self.pop_front();
        }
        evicted
    }

    /// Removes the oldest entry (an explicit compaction).
    pub fn pop_front(&mut self) -> Option<T> {
        let oldest = self.entries.pop_front()?;
        self.bytes -= oldest.bytes;
        Some(oldest.entry)
    }

    pub fn front(&self) -> Option<&T> {
        self.entries.front().map(|r| &r.entry)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The memory the entries cost, as their pushers counted it.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The entries at positions `range` (0 is the oldest).
    pub fn range(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = &T> {
        self.entries.range(range).map(|r| &r.entry)
    }
}

/// One committed batch of events, shared by every watcher that receives it.
type Batch = Arc<[Event]>;

/// A page of history, as a backend's event log serves it to a catching-up watcher.
#[derive(Debug)]
pub struct HistoryPage {
    /// Events under the prefix with revision in `(after, through]`, in revision order.
    pub events: Vec<Event>,
    /// The page covers every revision up to here.
    pub through: Revision,
    /// The store's revision when the page was read (`through <= current`).
    pub current: Revision,
}

/// A backend's event log, as watchers read it.
#[async_trait]
pub trait HistorySource: Send + Sync + 'static {
    /// Events under `prefix` with revision in `(after, after + max_revisions]`, clamped to
    /// the current revision.
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`] if `after` is below the compaction point; backend errors.
    async fn history(
        self: Arc<Self>,
        prefix: String,
        after: Revision,
        max_revisions: i64,
    ) -> Result<HistoryPage>;
}

/// A range as it was at revision `at`, from the current state `current` (an unlimited
/// range of the same prefix from the same `start_after`) and the history after `at`.
///
/// Each key changed after `at` takes the state its first later change replaced (none, if
/// that change created it); every other key is as it is now.
pub async fn range_at<S: HistorySource>(
    source: Arc<S>,
    req: &RangeRequest,
    current: RangeResponse,
    at: Revision,
) -> Result<RangeResponse> {
    use std::collections::BTreeMap;
    if at > current.revision {
        return Err(Error::FutureRevision {
            requested: at,
            current: current.revision,
        });
    }
    let mut state: BTreeMap<String, KeyValue> = current
        .kvs
        .into_iter()
        .map(|kv| (kv.key.clone(), kv))
        .collect();
    let mut undone = std::collections::HashSet::new();
    let mut after = at;
    while after < current.revision {
        let page = source
            .clone()
            .history(
                req.prefix.clone(),
                after,
                (current.revision - after).min(HISTORY_PAGE_REVISIONS),
            )
            .await?;
        for event in page
            .events
            .into_iter()
            .filter(|e| e.revision() <= current.revision)
        {
            let key = event.key().to_string();
            if !undone.insert(key.clone()) {
                continue;
            }
            let before = match event {
                Event::Put { prev, .. } => prev,
                Event::Delete { prev, .. } => Some(prev),
            };
            match before {
                Some(kv) => state.insert(key, kv),
                None => state.remove(&key),
            };
        }
        if page.through <= after {
            break;
        }
        after = page.through;
    }
    let mut kvs = Vec::new();
    let mut more = false;
    for (key, kv) in state {
        if req.start_after.as_ref().is_some_and(|s| key <= *s) {
            continue;
        }
        if req.limit != 0 && kvs.len() == req.limit {
            more = true;
            break;
        }
        kvs.push(kv);
    }
    Ok(RangeResponse {
        kvs,
        more,
        revision: at,
    })
}

/// Where a backend publishes committed events for its watchers.
pub struct WatchHub {
    tx: broadcast::Sender<Batch>,
}

impl fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchHub")
            .field("watchers", &self.tx.receiver_count())
            .finish()
    }
}

impl Default for WatchHub {
    fn default() -> Self {
        Self::new()
    }
}

impl WatchHub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(WATCH_RING_CAPACITY);
        WatchHub { tx }
    }

    /// Hands a committed batch to every watcher. Never blocks. Callers publish batches
    /// in revision order (each backend has a single place that commits).
    pub fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        // No receiver is not an error: nobody is watching.
        let _ = self.tx.send(events.into());
    }

    /// How many watch streams are subscribed. A backend whose events are costly to build
    /// (the simulator renders objects) may skip building them when nobody listens.
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Starts a watch: subscribes now, so call it *before* reading the revision bounds
    /// that [`check_start`] validates.
    pub fn watch(
        &self,
        source: Weak<dyn HistorySource>,
        prefix: &str,
        after: Revision,
    ) -> WatchStream {
        self.watch_with_progress(source, prefix, after).0
    }

    /// [`WatchHub::watch`], with how far the stream has read the store: every revision
    /// it passed, under its prefix or not (see [`WatchProgress`]).
    pub fn watch_with_progress(
        &self,
        source: Weak<dyn HistorySource>,
        prefix: &str,
        after: Revision,
    ) -> (WatchStream, WatchProgress) {
        let progress = WatchProgress::new(after);
        let watcher = Watcher {
            source,
            rx: self.tx.subscribe(),
            prefix: prefix.to_owned(),
            seen: after,
            ready: VecDeque::new(),
            phase: Phase::CatchingUp,
            progress: progress.clone(),
        };
        let stream = futures::stream::unfold(watcher, |mut watcher| async move {
            let item = watcher.next().await?;
            Some((item, watcher))
        })
        .boxed();
        (stream, progress)
    }
}

/// Validates a watch's start revision against the store's bounds.
///
/// # Errors
///
/// [`Error::Compacted`] if events after `after` were compacted (`after < compacted`);
/// [`Error::FutureRevision`] if `after > current`.
pub fn check_start(after: Revision, current: Revision, compacted: Revision) -> Result<()> {
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    if after > current {
        return Err(Error::FutureRevision {
            requested: after,
            current,
        });
    }
    Ok(())
}

/// Where a watcher gets its next events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading history pages after `seen`. The initial phase, and where a watcher goes
    /// back to when the ring overran it. Becomes `Following` once a page reaches the
    /// revision that was current when it was read; a failed read yields the error and
    /// becomes `Finished`.
    CatchingUp,
    /// Taking batches from the ring, skipping events at or below `seen` (history
    /// delivered them). `Lagged` → `CatchingUp`; the hub gone → `Finished`.
    Following,
    /// The final error was yielded; the stream ends.
    Finished,
}

/// The state of one watch stream.
struct Watcher {
    source: Weak<dyn HistorySource>,
    rx: broadcast::Receiver<Batch>,
    prefix: String,
    /// Every event with a revision at or below this was delivered or filtered out.
    seen: Revision,
    /// Events read but not yet yielded.
    ready: VecDeque<Event>,
    phase: Phase,
    /// `seen`, published whenever `ready` is empty: then every event under the prefix up
    /// to `seen` has been yielded.
    progress: WatchProgress,
}

impl Watcher {
    /// The next item of the stream; `None` once finished.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: events are moved into `ready` before anything else is awaited, and a
    /// history read that is dropped midway is simply repeated.
    async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(Ok(event));
            }
            self.progress.advance(self.seen);
            match self.phase {
                Phase::Finished => return None,
                Phase::CatchingUp => {
                    let Some(source) = self.source.upgrade() else {
                        return self.finish(Error::Closed);
                    };
                    let page = source
                        .history(self.prefix.clone(), self.seen, HISTORY_PAGE_REVISIONS)
                        .await;
                    match page {
                        Ok(page) => {
                            self.ready.extend(page.events);
                            self.seen = self.seen.max(page.through);
                            if self.seen >= page.current {
                                self.phase = Phase::Following;
                            }
                        }
                        Err(err) => return self.finish(err),
                    }
                }
                Phase::Following => match self.rx.recv().await {
                    Ok(batch) => {
                        for event in batch.iter() {
                            let revision = event.revision();
                            if revision <= self.seen {
                                continue;
                            }
                            self.seen = revision;
                            if event.key().starts_with(&self.prefix) {
                                self.ready.push_back(event.clone());
                            }
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(
                            prefix = %self.prefix,
                            seen = self.seen,
                            missed,
                            "watcher fell behind the ring, replaying from history"
                        );
                        self.phase = Phase::CatchingUp;
                    }
                    Err(RecvError::Closed) => return self.finish(Error::Closed),
                },
            }
        }
    }

    fn finish(&mut self, err: Error) -> Option<Result<Event>> {
        self.phase = Phase::Finished;
        Some(Err(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Precondition, Store};
    use bytes::Bytes;

    const MIB: usize = 1 << 20;

    fn retention(window_secs: u64, max_bytes: usize) -> Retention {
        Retention {
            window: Duration::from_secs(window_secs),
            max_bytes,
        }
    }

    #[test]
    fn a_burst_inside_the_window_is_kept_whatever_its_length() {
        let mut log = RetainedLog::new(retention(75, 64 * MIB));
        let start = Instant::now();
        for i in 0..20_000u64 {
            let now = start + Duration::from_micros(i * 100);
            assert_eq!(log.push(i, 200, now), None, "entry {i} evicted something");
        }
        assert_eq!(log.len(), 20_000);
        assert_eq!(log.front(), Some(&0));
        // A few seconds later nothing is older than the window yet.
        assert_eq!(log.expire(start + Duration::from_secs(10)), None);
        assert_eq!(log.len(), 20_000);
    }

    #[test]
    fn entries_older_than_the_window_are_evicted_oldest_first() {
        let mut log = RetainedLog::new(retention(75, 64 * MIB));
        let start = Instant::now();
        for i in 0..10u64 {
            log.push(i, 100, start + Duration::from_secs(i));
        }
        // At 80 s, entries recorded at 0..=4 s are older than 75 s.
        assert_eq!(log.expire(start + Duration::from_secs(80)), Some(4));
        assert_eq!(log.front(), Some(&5));
        assert_eq!((log.len(), log.bytes()), (5, 500));
        // A push expires too.
        assert_eq!(log.push(10, 100, start + Duration::from_secs(83)), Some(7));
        assert_eq!(log.range(0..3).copied().collect::<Vec<_>>(), [8, 9, 10]);
    }

    #[test]
    fn over_the_memory_cap_the_oldest_go_even_inside_the_window() {
        let mut log = RetainedLog::new(retention(75, 1_000));
        let now = Instant::now();
        for i in 0..10u64 {
            log.push(i, 100, now);
        }
        assert_eq!(log.bytes(), 1_000);
        assert_eq!(
            log.push(10, 250, now),
            Some(2),
            "3 × 100 bytes make room for 250"
        );
        assert_eq!(log.front(), Some(&3));
        assert!(log.bytes() <= 1_000);
    }

    #[tokio::test]
    async fn a_watch_progresses_past_writes_under_other_prefixes() {
        let store = Store::memory();
        let (mut watch, progress) = store.watch_with_progress("quiet/", 0).await.unwrap();
        let mut last = 0;
        for i in 0..3 {
            last = store
                .put(&format!("busy/{i}"), Bytes::new(), Precondition::None, None)
                .await
                .unwrap()
                .kv
                .mod_revision;
        }
        // The stream yields nothing, but it reads the store while it is polled.
        let polled = tokio::time::timeout(Duration::from_millis(200), watch.next()).await;
        assert!(polled.is_err(), "a quiet watch yielded {polled:?}");
        assert_eq!(progress.revision(), last);
        // Its own events still come first, and progress never passes an undelivered one.
        let mine = store
            .put("quiet/k", Bytes::new(), Precondition::None, None)
            .await
            .unwrap()
            .kv
            .mod_revision;
        assert_eq!(progress.revision(), last);
        let event = watch.next().await.unwrap().unwrap();
        assert_eq!(event.revision(), mine);
    }

    #[test]
    fn watch_below_the_compaction_point_is_refused() {
        assert!(matches!(
            check_start(4, 10, 5),
            Err(Error::Compacted {
                requested: 4,
                compacted: 5
            })
        ));
        assert!(check_start(5, 10, 5).is_ok());
    }

    #[test]
    fn watch_ahead_of_the_current_revision_is_refused() {
        assert!(matches!(
            check_start(11, 10, 0),
            Err(Error::FutureRevision {
                requested: 11,
                current: 10
            })
        ));
        assert!(check_start(10, 10, 0).is_ok());
    }
}
