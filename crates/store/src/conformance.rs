//! The conformance suite every backend must pass: written once, run against each.
//!
//! ```text
//!  memory.rs tests ─┐
//!  sqlite.rs tests ─┼─▶ test_suite(make)    scenario tests, one fresh store each
//!  metered.rs tests ┤   model_check(make)   proptest: random put/delete/CAS sequences
//!  etcd.rs tests ───┘                        against a BTreeMap + revision counter model
//! ```
//!
//! `make` returns a fresh, empty store on every call; each scenario gets its own, so
//! scenarios never see each other's keys. Scenarios carry timeouts that say what hung,
//! and lease scenarios use TTLs of about a second, so the suite takes a few seconds per
//! backend.
//!
//! **Revisions are counted from where the store starts.** A fresh in-process store is at
//! revision 0, but an etcd namespace is part of a cluster whose revision is its own (1
//! when the cluster is new, anything after). So every scenario reads the store's
//! revision first (`base`) and asserts `base + n`: the contract is that each successful
//! write advances the revision by exactly one and nothing else does, not where counting
//! starts. This needs the store to have no other writer while a scenario runs, which
//! `make` guarantees (a test's etcd serves only that test).
//!
//! The model check is the suite's oracle for the data model: a backend must give the same
//! answer as a few dozen lines of obviously-correct code, for the same revisions, and its
//! watches (one started before the writes, one replaying after) must yield exactly the
//! model's event log.
//!
//! Behaviour pinned here that a reader of [`crate::Backend`] might wonder about:
//! - `Compacted { requested }` and `FutureRevision { requested }` of a watch carry the
//!   `after` revision the caller passed.
//! - Compacting at or below the compaction point is a no-op; above the current revision
//!   it fails with `FutureRevision`.
//! - A put without a lease detaches the key from the lease it had.
//! - Lease ids are never 0 and never reused by one store.
//! - Revoking a lease deletes its keys at one revision each (memory, SQLite) or all at
//!   one revision (etcd deletes them in one transaction); either way at revisions after
//!   the revoke began, each key exactly once.
//! - A watcher that does not read holds a bounded buffer; past it, it replays from
//!   history, so if that history was compacted meanwhile it ends with `Compacted`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::{
    DeleteResponse, Error, Event, Guard, KeyValue, Precondition, PutResponse, RangeRequest,
    RangeResponse, Result, Revision, Store, WatchStream,
};

/// Runs every scenario, each against a fresh store from `make`: empty under the keys the
/// scenarios use, with no other writer, at any starting revision.
///
/// # Panics
///
/// On the first scenario that fails, naming it.
pub async fn test_suite(make: impl Fn() -> Store) {
    macro_rules! scenarios {
        ($($scenario:ident),* $(,)?) => {$(
            eprintln!("conformance: {}", stringify!($scenario));
            $scenario(make()).await;
        )*};
    }
    scenarios!(
        revisions_count_successful_writes_from_the_starting_revision,
        failed_preconditions_do_not_bump_the_revision,
        versions_and_revisions_track_a_key_through_its_life,
        compare_and_swap_honours_every_precondition,
        delete_requires_the_key_and_returns_its_last_value,
        concurrent_creates_of_one_key_let_exactly_one_win,
        range_by_prefix_paginates_in_key_order,
        range_at_a_past_revision_reads_the_snapshot,
        watch_from_the_start_replays_everything_with_prev_values,
        watch_from_a_middle_revision_sees_only_later_events,
        watch_sees_only_keys_under_its_prefix,
        watch_follows_live_writes_after_its_replay,
        watch_below_the_compaction_point_fails,
        watch_from_a_future_revision_fails,
        stalled_watcher_blocks_neither_writes_nor_other_watchers,
        lagging_watcher_whose_history_was_compacted_gets_compacted_error,
        put_with_an_unknown_lease_fails,
        revoking_a_lease_deletes_exactly_its_keys,
        put_without_lease_detaches_the_key_from_its_lease,
        lease_expiry_deletes_its_keys,
        keep_alive_prevents_expiry,
        create_revision_precondition_holds_across_updates_but_not_recreation,
        guarded_writes_happen_only_while_every_guard_holds,
        a_failed_guard_is_named_with_its_current_state,
        a_fence_on_a_leased_key_stops_writes_once_the_lease_is_revoked,
    );
}

/// How long a scenario step may take before the suite calls it hung. Generous: the
/// machine may be busy with other builds.
const STEP: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("hung: {what}"))
}

fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn put(store: &Store, key: &str, value: &str) -> PutResponse {
    store
        .put(key, val(value), Precondition::None, None)
        .await
        .unwrap_or_else(|err| panic!("put {key}: {err}"))
}

/// The next `n` events of `watch`, which must all be `Ok`.
async fn next_events(watch: &mut WatchStream, n: usize, what: &str) -> Vec<Event> {
    within(what, async {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            match watch.next().await {
                Some(Ok(event)) => events.push(event),
                Some(Err(err)) => panic!("{what}: watch failed: {err}"),
                None => panic!("{what}: watch ended after {} events", events.len()),
            }
        }
        events
    })
    .await
}

/// Asserts nothing more arrives on `watch` for a short while.
async fn assert_quiet(watch: &mut WatchStream, what: &str) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(50), watch.next()).await {
        panic!("{what}: unexpected {item:?}");
    }
}

fn failed_with_current(result: Result<impl std::fmt::Debug>) -> Option<KeyValue> {
    match result {
        Err(Error::PreconditionFailed { current, .. }) => current.map(|kv| *kv),
        other => panic!("expected PreconditionFailed, got {other:?}"),
    }
}

/// The store's revision before a scenario writes anything: what its revisions count from.
async fn starting_revision(store: &Store) -> Revision {
    let base = store.current_revision().await.unwrap();
    assert!(base >= 0, "negative starting revision {base}");
    base
}

async fn revisions_count_successful_writes_from_the_starting_revision(store: Store) {
    let base = starting_revision(&store).await;
    let compacted = store.compacted_revision().await.unwrap();
    assert!(
        (0..=base).contains(&compacted),
        "compacted {compacted} beyond the head {base}"
    );
    assert_eq!(store.get("k").await.unwrap(), None);
    assert!(
        store
            .range(RangeRequest::default())
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    for n in 1..=5 {
        let resp = put(&store, "k", "v").await;
        assert_eq!(resp.kv.mod_revision, base + n);
        assert_eq!(store.current_revision().await.unwrap(), base + n);
    }
    let deleted = store.delete("k", Precondition::None).await.unwrap();
    assert_eq!(deleted.revision, base + 6);
    assert_eq!(store.current_revision().await.unwrap(), base + 6);
    let range = store.range(RangeRequest::default()).await.unwrap();
    assert_eq!(range.revision, base + 6);
}

async fn failed_preconditions_do_not_bump_the_revision(store: Store) {
    let base = starting_revision(&store).await;
    put(&store, "k", "v").await;
    let _ = store.put("k", val("x"), Precondition::Absent, None).await;
    let _ = store
        .put("k", val("x"), Precondition::ModRevision(base + 7), None)
        .await;
    let _ = store.put("j", val("x"), Precondition::Present, None).await;
    let _ = store.delete("missing", Precondition::None).await;
    let _ = store.delete("k", Precondition::ModRevision(base + 9)).await;
    let _ = store.delete("k", Precondition::Absent).await;
    assert_eq!(store.current_revision().await.unwrap(), base + 1);
    assert_eq!(put(&store, "k", "v2").await.kv.mod_revision, base + 2);
}

async fn versions_and_revisions_track_a_key_through_its_life(store: Store) {
    let base = starting_revision(&store).await;
    put(&store, "other", "x").await; // base + 1
    let created = put(&store, "k", "1").await; // base + 2
    assert_eq!(created.prev, None);
    assert_eq!(
        created.kv,
        KeyValue {
            key: "k".into(),
            value: val("1"),
            create_revision: base + 2,
            mod_revision: base + 2,
            version: 1,
            lease: None,
        }
    );
    let updated = put(&store, "k", "2").await; // base + 3
    assert_eq!(updated.prev.as_ref(), Some(&created.kv));
    assert_eq!(
        (
            updated.kv.create_revision,
            updated.kv.mod_revision,
            updated.kv.version
        ),
        (base + 2, base + 3, 2)
    );
    assert_eq!(store.get("k").await.unwrap(), Some(updated.kv.clone()));
    let deleted = store.delete("k", Precondition::None).await.unwrap(); // base + 4
    assert_eq!(deleted.prev, updated.kv);
    assert_eq!(deleted.revision, base + 4);
    let recreated = put(&store, "k", "3").await; // base + 5
    assert_eq!(recreated.prev, None);
    assert_eq!(
        (
            recreated.kv.create_revision,
            recreated.kv.mod_revision,
            recreated.kv.version
        ),
        (base + 5, base + 5, 1),
        "a recreated key starts over"
    );
}

async fn compare_and_swap_honours_every_precondition(store: Store) {
    let base = starting_revision(&store).await;
    // Absent: creates, then refuses with the current value.
    let created = store
        .put("k", val("1"), Precondition::Absent, None)
        .await
        .unwrap();
    let current = failed_with_current(store.put("k", val("x"), Precondition::Absent, None).await);
    assert_eq!(current.as_ref(), Some(&created.kv));

    // ModRevision: succeeds only at the exact revision.
    let swapped = store
        .put(
            "k",
            val("2"),
            Precondition::ModRevision(created.kv.mod_revision),
            None,
        )
        .await
        .unwrap();
    assert_eq!(swapped.prev.as_ref(), Some(&created.kv));
    let current = failed_with_current(
        store
            .put(
                "k",
                val("x"),
                Precondition::ModRevision(created.kv.mod_revision),
                None,
            )
            .await,
    );
    assert_eq!(current.as_ref(), Some(&swapped.kv));
    let current = failed_with_current(
        store
            .put(
                "missing",
                val("x"),
                Precondition::ModRevision(base + 1),
                None,
            )
            .await,
    );
    assert_eq!(current, None);

    // Present: requires the key, whatever its revision.
    let present = store
        .put("k", val("3"), Precondition::Present, None)
        .await
        .unwrap();
    assert_eq!(present.kv.version, 3);
    let current = failed_with_current(
        store
            .put("missing", val("x"), Precondition::Present, None)
            .await,
    );
    assert_eq!(current, None);

    // None: always.
    let overwritten = store
        .put("k", val("4"), Precondition::None, None)
        .await
        .unwrap();
    assert_eq!(overwritten.kv.version, 4);
    assert_eq!(store.get("k").await.unwrap().unwrap().value, val("4"));
    assert_eq!(store.get("missing").await.unwrap(), None);
    assert_eq!(store.current_revision().await.unwrap(), base + 4);
}

async fn delete_requires_the_key_and_returns_its_last_value(store: Store) {
    let base = starting_revision(&store).await;
    assert_eq!(
        failed_with_current(store.delete("k", Precondition::None).await),
        None
    );
    assert_eq!(
        failed_with_current(store.delete("k", Precondition::Present).await),
        None
    );
    let kv = put(&store, "k", "1").await.kv;
    assert!(matches!(
        store.delete("k", Precondition::Absent).await,
        Err(Error::InvalidArgument(_))
    ));
    let stale = Precondition::ModRevision(kv.mod_revision + 99);
    let current = failed_with_current(store.delete("k", stale).await);
    assert_eq!(current.as_ref(), Some(&kv));
    let deleted = store
        .delete("k", Precondition::ModRevision(kv.mod_revision))
        .await
        .unwrap();
    assert_eq!(
        deleted,
        DeleteResponse {
            prev: kv,
            revision: base + 2
        }
    );
    assert_eq!(store.get("k").await.unwrap(), None);
    assert!(
        store
            .range(RangeRequest::default())
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
}

async fn concurrent_creates_of_one_key_let_exactly_one_win(store: Store) {
    let base = starting_revision(&store).await;
    let attempts = (0..50).map(|i| {
        let store = store.clone();
        async move {
            store
                .put("k", val(&i.to_string()), Precondition::Absent, None)
                .await
        }
    });
    let results = within("50 concurrent creates", futures::future::join_all(attempts)).await;
    let winners: Vec<&PutResponse> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = &winners[0].kv;
    for result in &results {
        if let Err(Error::PreconditionFailed { current, .. }) = result {
            assert_eq!(current.as_deref(), Some(winner));
        } else {
            assert!(result.is_ok(), "{result:?}");
        }
    }
    assert_eq!(store.current_revision().await.unwrap(), base + 1);
}

async fn range_by_prefix_paginates_in_key_order(store: Store) {
    let base = starting_revision(&store).await;
    for key in ["a/3", "b/1", "a0", "a/1", "a/5", "a", "a/2", "a/4"] {
        put(&store, key, key).await;
    }
    let keys = |kvs: &[KeyValue]| kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();
    let page = |prefix: &str, start_after: Option<&str>, limit: usize| RangeRequest {
        prefix: prefix.into(),
        start_after: start_after.map(Into::into),
        limit,
    };

    let all = store.range(page("", None, 0)).await.unwrap();
    assert_eq!(
        keys(&all.kvs),
        ["a", "a/1", "a/2", "a/3", "a/4", "a/5", "a0", "b/1"]
    );
    assert!(!all.more);
    assert_eq!(all.revision, base + 8);
    assert_eq!(all.kvs[0].value, val("a"));

    let dir = store.range(page("a/", None, 0)).await.unwrap();
    assert_eq!(keys(&dir.kvs), ["a/1", "a/2", "a/3", "a/4", "a/5"]);
    assert!(!dir.more, "\"a/\" must not match \"a0\"");

    let first = store.range(page("a/", None, 2)).await.unwrap();
    assert_eq!(
        (keys(&first.kvs), first.more),
        (vec!["a/1".into(), "a/2".into()], true)
    );
    let second = store.range(page("a/", Some("a/2"), 2)).await.unwrap();
    assert_eq!(
        (keys(&second.kvs), second.more),
        (vec!["a/3".into(), "a/4".into()], true)
    );
    let last = store.range(page("a/", Some("a/4"), 2)).await.unwrap();
    assert_eq!((keys(&last.kvs), last.more), (vec!["a/5".into()], false));
    let exact = store.range(page("a/", None, 5)).await.unwrap();
    assert_eq!(
        (exact.kvs.len(), exact.more),
        (5, false),
        "a full last page has no more"
    );
    let past = store.range(page("a/", Some("a/5"), 2)).await.unwrap();
    assert_eq!((past.kvs.len(), past.more), (0, false));
    let before = store.range(page("a/", Some("0"), 1)).await.unwrap();
    assert_eq!(
        keys(&before.kvs),
        ["a/1"],
        "start_after before the prefix starts at the prefix"
    );
    let between = store.range(page("a/", Some("a/2x"), 0)).await.unwrap();
    assert_eq!(keys(&between.kvs), ["a/3", "a/4", "a/5"]);
    let none = store.range(page("c", None, 0)).await.unwrap();
    assert_eq!(
        (none.kvs.len(), none.more, none.revision),
        (0, false, base + 8)
    );
}

async fn range_at_a_past_revision_reads_the_snapshot(store: Store) {
    let base = starting_revision(&store).await;
    put(&store, "k/a", "a1").await; // base + 1
    put(&store, "k/b", "b1").await; // 2
    put(&store, "k/c", "c1").await; // 3
    let at = store.current_revision().await.unwrap();
    assert_eq!(at, base + 3);
    put(&store, "k/a", "a2").await; // 4: changed
    store.delete("k/b", Precondition::None).await.unwrap(); // 5: deleted
    put(&store, "k/d", "d1").await; // 6: created after
    put(&store, "other", "x").await; // 7: outside the prefix
    let req = |start_after: Option<&str>, limit| RangeRequest {
        prefix: "k/".into(),
        start_after: start_after.map(Into::into),
        limit,
    };
    let values = |r: &RangeResponse| {
        r.kvs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect::<Vec<_>>()
    };
    let snap = store.range_at(req(None, 0), at).await.unwrap();
    assert_eq!(snap.revision, at);
    assert_eq!(
        values(&snap),
        [
            ("k/a".into(), val("a1")),
            ("k/b".into(), val("b1")),
            ("k/c".into(), val("c1"))
        ]
    );
    assert_eq!(
        snap.kvs[0].mod_revision,
        base + 1,
        "the key as it was, with its old revision"
    );
    let first = store.range_at(req(None, 2), at).await.unwrap();
    assert_eq!((first.kvs.len(), first.more), (2, true));
    let second = store.range_at(req(Some("k/b"), 2), at).await.unwrap();
    assert_eq!(
        (values(&second), second.more),
        (vec![("k/c".into(), val("c1"))], false)
    );
    let now = store.current_revision().await.unwrap();
    let current = store.range_at(req(None, 0), now).await.unwrap();
    assert_eq!(current.kvs, store.range(req(None, 0)).await.unwrap().kvs);
    assert!(matches!(
        store.range_at(req(None, 0), now + 5).await,
        Err(Error::FutureRevision { .. })
    ));
    store.compact(base + 5).await.unwrap();
    assert!(matches!(
        store.range_at(req(None, 0), at).await,
        Err(Error::Compacted { .. })
    ));
    assert_eq!(
        store
            .range_at(req(None, 0), base + 5)
            .await
            .unwrap()
            .kvs
            .len(),
        2,
        "k/a and k/c at base + 5"
    );
}

/// Writes revisions `base + 1..=base + 4`: put a=1, put a=2, delete a, put b=1.
async fn mk_history(store: &Store) -> Vec<Event> {
    let a1 = put(store, "a", "1").await;
    let a2 = put(store, "a", "2").await;
    let deleted = store.delete("a", Precondition::None).await.unwrap();
    let b1 = put(store, "b", "1").await;
    vec![
        Event::Put {
            kv: a1.kv,
            prev: None,
        },
        Event::Put {
            kv: a2.kv,
            prev: a2.prev,
        },
        Event::Delete {
            prev: deleted.prev,
            revision: deleted.revision,
        },
        Event::Put {
            kv: b1.kv,
            prev: None,
        },
    ]
}

async fn watch_from_the_start_replays_everything_with_prev_values(store: Store) {
    let base = starting_revision(&store).await;
    let expected = mk_history(&store).await;
    assert!(matches!(&expected[1], Event::Put { prev: Some(prev), .. } if prev.value == val("1")));
    let mut watch = store.watch("", base).await.unwrap();
    let events = next_events(&mut watch, 4, "replay from the starting revision").await;
    assert_eq!(events, expected);
    assert_quiet(&mut watch, "replay from the starting revision").await;
}

async fn watch_from_a_middle_revision_sees_only_later_events(store: Store) {
    let base = starting_revision(&store).await;
    let expected = mk_history(&store).await;
    let mut watch = store.watch("", base + 2).await.unwrap();
    let events = next_events(&mut watch, 2, "replay from base + 2").await;
    assert_eq!(events, expected[2..]);
    assert_quiet(&mut watch, "replay from base + 2").await;
    let mut at_head = store.watch("", base + 4).await.unwrap();
    assert_quiet(&mut at_head, "watch from the current revision").await;
}

async fn watch_sees_only_keys_under_its_prefix(store: Store) {
    let base = starting_revision(&store).await;
    let mut live = store.watch("a/", base).await.unwrap();
    for key in ["a/1", "a0", "b/1", "a", "a/2"] {
        put(&store, key, "v").await;
    }
    let mut replay = store.watch("a/", base).await.unwrap();
    for watch in [&mut live, &mut replay] {
        let events = next_events(watch, 2, "prefix watch").await;
        let seen: Vec<(&str, Revision)> = events.iter().map(|e| (e.key(), e.revision())).collect();
        assert_eq!(seen, [("a/1", base + 1), ("a/2", base + 5)]);
        assert_quiet(watch, "prefix watch").await;
    }
}

async fn watch_follows_live_writes_after_its_replay(store: Store) {
    let base = starting_revision(&store).await;
    put(&store, "k", "1").await;
    put(&store, "k", "2").await;
    let mut watch = store.watch("", base + 1).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 3..=20 {
                put(&store, "k", &i.to_string()).await;
            }
        })
    };
    let events = next_events(&mut watch, 19, "replay then live writes").await;
    let revisions: Vec<Revision> = events.iter().map(Event::revision).collect();
    assert_eq!(revisions, (base + 2..=base + 20).collect::<Vec<_>>());
    within("the writer task", writer).await.unwrap();
    assert_quiet(&mut watch, "replay then live writes").await;
}

/// Asserts that a watch after `requested` was refused because history was compacted up
/// to `compacted`, and for no other reason: a backend that refuses it with some other
/// error (say, a failed read) is wrong, however plausible the refusal looks (issue 22).
fn assert_refused_as_compacted(
    watch: Result<WatchStream>,
    requested: Revision,
    compacted: Revision,
) {
    match watch {
        Err(Error::Compacted {
            requested: r,
            compacted: c,
        }) => assert_eq!(
            (r, c),
            (requested, compacted),
            "watch after {requested}: (requested, compacted)"
        ),
        Err(err) => panic!("watch after {requested}: expected Compacted, got another error: {err}"),
        Ok(_) => panic!("watch after {requested}: expected Compacted, the watch was accepted"),
    }
}

async fn watch_below_the_compaction_point_fails(store: Store) {
    let base = starting_revision(&store).await;
    mk_history(&store).await;
    store.compact(base + 2).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), base + 2);
    for after in [base, base + 1] {
        assert_refused_as_compacted(store.watch("", after).await, after, base + 2);
    }
    let mut watch = store.watch("", base + 2).await.unwrap();
    let events = next_events(&mut watch, 2, "watch from the compaction point").await;
    assert_eq!(
        events.iter().map(Event::revision).collect::<Vec<_>>(),
        [base + 3, base + 4]
    );

    // Compaction forgets history, not current state.
    assert_eq!(store.get("b").await.unwrap().unwrap().value, val("1"));
    store.compact(base + 1).await.unwrap();
    assert_eq!(
        store.compacted_revision().await.unwrap(),
        base + 2,
        "compacting below the point is a no-op"
    );
    match store.compact(base + 5).await {
        Err(Error::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (base + 5, base + 4));
        }
        other => panic!("compacting ahead of the head: {other:?}"),
    }
    store.compact(base + 4).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), base + 4);
    assert_refused_as_compacted(store.watch("", base + 3).await, base + 3, base + 4);
    let mut head = store.watch("", base + 4).await.unwrap();
    put(&store, "c", "1").await;
    let events = next_events(&mut head, 1, "watch from a fully compacted head").await;
    assert_eq!(events[0].revision(), base + 5);
}

async fn watch_from_a_future_revision_fails(store: Store) {
    let base = starting_revision(&store).await;
    put(&store, "k", "v").await;
    match store.watch("", base + 2).await {
        Err(Error::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (base + 2, base + 1));
        }
        Err(err) => panic!("unexpected error {err}"),
        Ok(_) => panic!("expected FutureRevision"),
    }
}

async fn stalled_watcher_blocks_neither_writes_nor_other_watchers(store: Store) {
    const WRITES: usize = 10_000;
    let base = starting_revision(&store).await;
    // Subscribed, never polled until the end.
    let mut stalled = store.watch("", base).await.unwrap();
    let mut active = store.watch("", base).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut next = base + 1;
        while next <= base + WRITES as Revision {
            match active.next().await {
                Some(Ok(event)) => {
                    assert_eq!(event.revision(), next, "active watcher skipped or repeated");
                    next += 1;
                }
                other => panic!("active watcher: {other:?}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), async {
        futures::stream::iter(0..WRITES)
            .map(|i| {
                let store = store.clone();
                async move {
                    store
                        .put(&format!("k/{i}"), val("v"), Precondition::None, None)
                        .await
                }
            })
            .buffer_unordered(64)
            .try_for_each(|_| async { Ok(()) })
            .await
            .unwrap();
    })
    .await
    .expect("hung: 10_000 writes behind a watcher that never reads");
    tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("hung: the active watcher behind a watcher that never reads")
        .unwrap();

    // The stalled watcher missed the live batches; it catches up from history.
    let events = tokio::time::timeout(Duration::from_secs(30), async {
        (&mut stalled)
            .take(WRITES)
            .map(|event| event.unwrap().revision())
            .collect::<Vec<_>>()
            .await
    })
    .await
    .expect("hung: the stalled watcher catching up from history");
    assert_eq!(
        events,
        (base + 1..=base + WRITES as Revision).collect::<Vec<_>>()
    );
}

/// Writes that a watcher which does not read must fall behind by: more than any backend
/// buffers for it (the in-process ring holds 256 batches, here of one write each; an etcd
/// watch stream buffers 256 events), so that it has to go back to history.
const LAGGING_WRITES: Revision = 300;
const _: () = assert!(LAGGING_WRITES as usize > crate::history::WATCH_RING_CAPACITY);
const _: () = assert!(LAGGING_WRITES as usize > crate::etcd::WATCH_BUFFER_EVENTS);

async fn lagging_watcher_whose_history_was_compacted_gets_compacted_error(store: Store) {
    let base = starting_revision(&store).await;
    let mut watch = store.watch("", base).await.unwrap();
    put(&store, "k", "0").await;
    let first = next_events(&mut watch, 1, "the first event").await;
    assert_eq!(first[0].revision(), base + 1);
    within("sequential writes", async {
        for i in 1..=LAGGING_WRITES {
            put(&store, "k", &i.to_string()).await;
        }
    })
    .await;
    let head = store.current_revision().await.unwrap();
    store.compact(head).await.unwrap();

    let rest: Vec<Result<Event>> = within("the lagging watcher to end", watch.collect()).await;
    let (last, delivered) = rest.split_last().expect("the watch must end with an error");
    assert!(
        matches!(last, Err(Error::Compacted { compacted, .. }) if *compacted == head),
        "{last:?}"
    );
    // Whatever came before the error was in order and complete from base + 2.
    for (i, event) in delivered.iter().enumerate() {
        let revision = event
            .as_ref()
            .expect("only the last item is an error")
            .revision();
        assert_eq!(revision, base + i as Revision + 2);
    }
}

async fn put_with_an_unknown_lease_fails(store: Store) {
    let base = starting_revision(&store).await;
    assert!(matches!(
        store
            .put("k", val("v"), Precondition::None, Some(4242))
            .await,
        Err(Error::LeaseNotFound(4242))
    ));
    assert!(matches!(
        store.lease_keep_alive(4242).await,
        Err(Error::LeaseNotFound(4242))
    ));
    assert!(matches!(
        store.lease_revoke(4242).await,
        Err(Error::LeaseNotFound(4242))
    ));
    assert_eq!(store.current_revision().await.unwrap(), base);
    assert_eq!(store.get("k").await.unwrap(), None);
}

async fn revoking_a_lease_deletes_exactly_its_keys(store: Store) {
    let base = starting_revision(&store).await;
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    let other = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    assert_ne!(lease, 0);
    assert_ne!(lease, other);
    for key in ["l/1", "l/2", "l/3"] {
        let kv = store
            .put(key, val("v"), Precondition::None, Some(lease))
            .await
            .unwrap()
            .kv;
        assert_eq!(kv.lease, Some(lease));
    }
    store
        .put("o/1", val("v"), Precondition::None, Some(other))
        .await
        .unwrap();
    put(&store, "plain", "v").await;
    let mut watch = store.watch("", base + 5).await.unwrap();

    store.lease_revoke(lease).await.unwrap();
    let events = next_events(&mut watch, 3, "deletions of the revoked lease's keys").await;
    let mut deleted: Vec<(String, Revision)> = events
        .iter()
        .map(|event| match event {
            Event::Delete { prev, revision } => {
                assert_eq!(prev.lease, Some(lease));
                (prev.key.clone(), *revision)
            }
            other => panic!("expected a delete, got {other:?}"),
        })
        .collect();
    assert!(
        deleted.windows(2).all(|w| w[0].1 <= w[1].1),
        "events out of revision order: {deleted:?}"
    );
    // One revision per key (memory, SQLite) or one for all (etcd), right after the
    // writes before the revoke; none skipped.
    let revisions: std::collections::BTreeSet<Revision> = deleted.iter().map(|(_, r)| *r).collect();
    let last = *revisions.last().expect("three deletions");
    assert_eq!(revisions.first(), Some(&(base + 6)), "{deleted:?}");
    assert_eq!(
        revisions.len() as Revision,
        last - base - 5,
        "a revision without a deletion: {deleted:?}"
    );
    assert!(revisions.len() == 1 || revisions.len() == 3, "{deleted:?}");
    deleted.sort();
    assert_eq!(
        deleted.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["l/1", "l/2", "l/3"]
    );
    assert_eq!(store.current_revision().await.unwrap(), last);
    assert!(store.get("o/1").await.unwrap().is_some());
    assert!(store.get("plain").await.unwrap().is_some());
    assert!(matches!(
        store.lease_keep_alive(lease).await,
        Err(Error::LeaseNotFound(_))
    ));
    assert!(matches!(
        store
            .put("l/4", val("v"), Precondition::None, Some(lease))
            .await,
        Err(Error::LeaseNotFound(_))
    ));
    let third = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    assert!(third != lease && third != other, "lease ids are not reused");
    // Leave nothing to expire later: on a store shared by the scenarios one after the
    // other (etcd's namespaces), a late expiry would write in another scenario's
    // revisions.
    for id in [other, third] {
        store.lease_revoke(id).await.unwrap();
    }
}

async fn put_without_lease_detaches_the_key_from_its_lease(store: Store) {
    let base = starting_revision(&store).await;
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    store
        .put("k", val("1"), Precondition::None, Some(lease))
        .await
        .unwrap();
    let detached = put(&store, "k", "2").await;
    assert_eq!(detached.kv.lease, None);
    assert_eq!(detached.prev.unwrap().lease, Some(lease));
    store.lease_revoke(lease).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().value, val("2"));
    assert_eq!(store.current_revision().await.unwrap(), base + 2);
}

/// Polls until `key` is gone; returns how long that took.
async fn wait_until_deleted(store: &Store, key: &str, what: &str) -> Duration {
    let start = tokio::time::Instant::now();
    within(what, async {
        while store.get(key).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    start.elapsed()
}

async fn lease_expiry_deletes_its_keys(store: Store) {
    let base = starting_revision(&store).await;
    let lease = store.lease_grant(Duration::from_secs(1)).await.unwrap();
    store
        .put("short", val("v"), Precondition::None, Some(lease))
        .await
        .unwrap();
    put(&store, "plain", "v").await;
    let mut watch = store.watch("", base + 2).await.unwrap();
    wait_until_deleted(&store, "short", "expiry of a 1s lease").await;
    let events = next_events(&mut watch, 1, "the expiry's delete event").await;
    assert!(
        matches!(&events[0], Event::Delete { prev, revision } if prev.key == "short" && *revision == base + 3),
        "{events:?}"
    );
    assert!(store.get("plain").await.unwrap().is_some());
    assert!(matches!(
        store.lease_keep_alive(lease).await,
        Err(Error::LeaseNotFound(_))
    ));
}

async fn keep_alive_prevents_expiry(store: Store) {
    let ttl = Duration::from_secs(1);
    let kept = store.lease_grant(ttl).await.unwrap();
    let dropped = store.lease_grant(ttl).await.unwrap();
    store
        .put("kept", val("v"), Precondition::None, Some(kept))
        .await
        .unwrap();
    store
        .put("dropped", val("v"), Precondition::None, Some(dropped))
        .await
        .unwrap();
    // Two and a half TTLs, renewing every fifth of one: a renewal may come 800ms late
    // on a busy machine and still be in time.
    for _ in 0..12 {
        tokio::time::sleep(ttl / 5).await;
        store.lease_keep_alive(kept).await.unwrap();
    }
    assert!(
        store.get("kept").await.unwrap().is_some(),
        "kept alive, still expired"
    );
    assert_eq!(store.get("dropped").await.unwrap(), None);
    wait_until_deleted(&store, "kept", "expiry once keep-alives stop").await;
}

// ---------------------------------------------------------------------------------------
// The model check.

/// Keys of the model check: few, so operations collide; `a0` sorts right after `a/`.
const MODEL_KEYS: [&str; 4] = ["a/x", "a/y", "a0", "b/x"];

#[derive(Clone, Copy, Debug)]
enum ModelCond {
    None,
    Absent,
    Present,
    /// The key's current `mod_revision` in the model (0 when absent): a CAS that wins.
    Current,
    /// A fixed revision after the store's starting one: a CAS that mostly loses.
    Revision(Revision),
    /// The key's current `create_revision` in the model (0 when absent): its incarnation.
    Incarnation,
    /// A fixed `create_revision` after the store's starting one: mostly a stale fence.
    CreatedAt(Revision),
}

#[derive(Clone, Debug)]
enum ModelOp {
    Put {
        key: usize,
        value: u8,
        cond: ModelCond,
        /// A guard on another (or the same) key: a fenced write.
        guard: Option<(usize, ModelCond)>,
    },
    Delete {
        key: usize,
        cond: ModelCond,
        guard: Option<(usize, ModelCond)>,
    },
}

fn model_cond() -> impl Strategy<Value = ModelCond> {
    prop_oneof![
        Just(ModelCond::None),
        Just(ModelCond::Absent),
        Just(ModelCond::Present),
        Just(ModelCond::Current),
        (0..12i64).prop_map(ModelCond::Revision),
        Just(ModelCond::Incarnation),
        (0..12i64).prop_map(ModelCond::CreatedAt),
    ]
}

fn model_guard() -> impl Strategy<Value = Option<(usize, ModelCond)>> {
    proptest::option::weighted(0.3, (0..MODEL_KEYS.len(), model_cond()))
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    let key = 0..MODEL_KEYS.len();
    prop_oneof![
        3 => (key.clone(), any::<u8>(), model_cond(), model_guard())
            .prop_map(|(key, value, cond, guard)| ModelOp::Put { key, value, cond, guard }),
        1 => (key, model_cond(), model_guard())
            .prop_map(|(key, cond, guard)| ModelOp::Delete { key, cond, guard }),
    ]
}

/// What an operation did, comparably.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Put(PutResponse),
    Delete(DeleteResponse),
    /// A precondition or guard failed: the key named, as it is.
    Failed(String, Option<KeyValue>),
    Invalid,
}

impl<T: Into<Outcome>> From<Result<T>> for Outcome {
    fn from(result: Result<T>) -> Self {
        match result {
            Ok(resp) => resp.into(),
            Err(Error::PreconditionFailed { key, current }) => {
                Outcome::Failed(key, current.map(|kv| *kv))
            }
            Err(Error::InvalidArgument(_)) => Outcome::Invalid,
            Err(err) => panic!("unexpected error: {err}"),
        }
    }
}

impl From<PutResponse> for Outcome {
    fn from(resp: PutResponse) -> Self {
        Outcome::Put(resp)
    }
}

impl From<DeleteResponse> for Outcome {
    fn from(resp: DeleteResponse) -> Self {
        Outcome::Delete(resp)
    }
}

/// The data model, as plainly as it can be written.
#[derive(Debug, Default)]
struct Model {
    /// The revision the store started at (revisions count from here).
    base: Revision,
    revision: Revision,
    kvs: BTreeMap<String, KeyValue>,
    log: Vec<Event>,
}

impl Model {
    /// An empty store at revision `base`.
    fn starting_at(base: Revision) -> Self {
        Model {
            revision: base,
            base,
            ..Model::default()
        }
    }

    fn precondition(&self, key: &str, cond: ModelCond) -> Precondition {
        match cond {
            ModelCond::None => Precondition::None,
            ModelCond::Absent => Precondition::Absent,
            ModelCond::Present => Precondition::Present,
            ModelCond::Current => {
                Precondition::ModRevision(self.kvs.get(key).map_or(0, |kv| kv.mod_revision))
            }
            ModelCond::Revision(rev) => Precondition::ModRevision(self.base + rev),
            ModelCond::Incarnation => {
                Precondition::CreateRevision(self.kvs.get(key).map_or(0, |kv| kv.create_revision))
            }
            ModelCond::CreatedAt(rev) => Precondition::CreateRevision(self.base + rev),
        }
    }

    fn guards(&self, guard: Option<(usize, ModelCond)>) -> Vec<Guard> {
        guard
            .map(|(key, cond)| {
                let key = MODEL_KEYS[key];
                Guard::new(key, self.precondition(key, cond))
            })
            .into_iter()
            .collect()
    }

    /// The failure of the first guard that does not hold, if any.
    fn guard_fails(&self, guards: &[Guard]) -> Option<Outcome> {
        guards
            .iter()
            .find(|guard| !self.holds(&guard.key, guard.cond))
            .map(|guard| Outcome::Failed(guard.key.clone(), self.kvs.get(&guard.key).cloned()))
    }

    fn holds(&self, key: &str, cond: Precondition) -> bool {
        let current = self.kvs.get(key);
        match cond {
            Precondition::None => true,
            Precondition::Absent => current.is_none(),
            Precondition::Present => current.is_some(),
            Precondition::ModRevision(rev) => current.is_some_and(|kv| kv.mod_revision == rev),
            Precondition::CreateRevision(rev) => {
                current.is_some_and(|kv| kv.create_revision == rev)
            }
        }
    }

    fn put(&mut self, guards: &[Guard], key: &str, value: Bytes, cond: Precondition) -> Outcome {
        if let Some(failed) = self.guard_fails(guards) {
            return failed;
        }
        if !self.holds(key, cond) {
            return Outcome::Failed(key.into(), self.kvs.get(key).cloned());
        }
        self.revision += 1;
        let prev = self.kvs.get(key).cloned();
        let kv = KeyValue {
            key: key.into(),
            value,
            create_revision: prev.as_ref().map_or(self.revision, |p| p.create_revision),
            mod_revision: self.revision,
            version: prev.as_ref().map_or(0, |p| p.version) + 1,
            lease: None,
        };
        self.kvs.insert(key.into(), kv.clone());
        self.log.push(Event::Put {
            kv: kv.clone(),
            prev: prev.clone(),
        });
        Outcome::Put(PutResponse { kv, prev })
    }

    fn delete(&mut self, guards: &[Guard], key: &str, cond: Precondition) -> Outcome {
        if cond == Precondition::Absent {
            return Outcome::Invalid;
        }
        if let Some(failed) = self.guard_fails(guards) {
            return failed;
        }
        if !self.kvs.contains_key(key) || !self.holds(key, cond) {
            return Outcome::Failed(key.into(), self.kvs.get(key).cloned());
        }
        self.revision += 1;
        let prev = self.kvs.remove(key).expect("checked above");
        self.log.push(Event::Delete {
            prev: prev.clone(),
            revision: self.revision,
        });
        Outcome::Delete(DeleteResponse {
            prev,
            revision: self.revision,
        })
    }
}

/// Applies one random operation sequence to a fresh store and to the model.
async fn check_against_model(store: Store, ops: Vec<ModelOp>) -> Result<(), TestCaseError> {
    let base = store.current_revision().await.unwrap();
    let mut live = store.watch("", base).await.unwrap();
    let mut model = Model::starting_at(base);
    let mut snapshots = vec![(base, model.kvs.clone())];
    for op in &ops {
        let (ours, theirs) = match *op {
            ModelOp::Put {
                key,
                value,
                cond,
                guard,
            } => {
                let guards = model.guards(guard);
                let key = MODEL_KEYS[key];
                let cond = model.precondition(key, cond);
                let value = Bytes::from(vec![value]);
                let theirs: Outcome = if guards.is_empty() {
                    store.put(key, value.clone(), cond, None).await.into()
                } else {
                    let put = store.put_guarded(&guards, key, value.clone(), cond, None);
                    put.await.into()
                };
                (model.put(&guards, key, value, cond), theirs)
            }
            ModelOp::Delete { key, cond, guard } => {
                let guards = model.guards(guard);
                let key = MODEL_KEYS[key];
                let cond = model.precondition(key, cond);
                let theirs: Outcome = if guards.is_empty() {
                    store.delete(key, cond).await.into()
                } else {
                    store.delete_guarded(&guards, key, cond).await.into()
                };
                (model.delete(&guards, key, cond), theirs)
            }
        };
        prop_assert_eq!(&theirs, &ours, "after {:?}", op);
        prop_assert_eq!(store.current_revision().await.unwrap(), model.revision);
        snapshots.push((model.revision, model.kvs.clone()));
    }

    for (revision, kvs) in &snapshots {
        let expected: Vec<KeyValue> = kvs.values().cloned().collect();
        let snap = store
            .range_at(RangeRequest::default(), *revision)
            .await
            .unwrap();
        prop_assert_eq!(&snap.kvs, &expected, "range_at {}", revision);
        let paged = store
            .range_at(
                RangeRequest {
                    limit: 2,
                    ..RangeRequest::default()
                },
                *revision,
            )
            .await
            .unwrap();
        prop_assert_eq!(
            &paged.kvs[..],
            &expected[..expected.len().min(2)],
            "paged range_at {}",
            revision
        );
        prop_assert_eq!(paged.more, expected.len() > 2);
    }

    for prefix in ["", "a/"] {
        let range = store
            .range(RangeRequest {
                prefix: prefix.into(),
                ..RangeRequest::default()
            })
            .await
            .unwrap();
        let expected: Vec<KeyValue> = model
            .kvs
            .values()
            .filter(|kv| kv.key.starts_with(prefix))
            .cloned()
            .collect();
        prop_assert_eq!(range.kvs, expected, "range {:?}", prefix);
        prop_assert_eq!(range.revision, model.revision);
    }

    let mut replay = store.watch("", base).await.unwrap();
    let sentinel = store
        .put("zz", Bytes::new(), Precondition::None, None)
        .await
        .unwrap();
    for (name, watch) in [("live", &mut live), ("replay", &mut replay)] {
        let events = next_events(watch, model.log.len() + 1, name).await;
        prop_assert_eq!(&events[..model.log.len()], &model.log[..], "{} watch", name);
        prop_assert_eq!(
            events[model.log.len()].revision(),
            sentinel.kv.mod_revision,
            "{} watch: nothing between the log and the next write",
            name
        );
    }
    Ok(())
}

/// Property test: random sequences of puts, deletes and compare-and-swaps on a few keys,
/// applied to a fresh store from `make` and to a model, agree on every result, every
/// revision, the final range, and (from the starting revision) every watch event. Runs `cases`
/// sequences on its own runtime, so call it from a plain `#[test]`.
///
/// # Panics
///
/// With the shrunk failing sequence, when the backend and the model disagree.
pub fn model_check(make: impl Fn() -> Store, cases: u32) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a runtime for the model check");
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(model_op(), 0..40), |ops| {
        runtime.block_on(check_against_model(make(), ops))
    });
    if let Err(failure) = result {
        panic!("backend disagrees with the model: {failure}");
    }
}

async fn create_revision_precondition_holds_across_updates_but_not_recreation(store: Store) {
    let created = put(&store, "k", "1").await;
    let incarnation = Precondition::CreateRevision(created.kv.create_revision);
    let updated = within("update under CreateRevision", async {
        store.put("k", val("2"), incarnation, None).await
    })
    .await
    .expect("the key is the incarnation it names");
    assert_eq!(updated.kv.create_revision, created.kv.create_revision);
    assert_eq!(updated.kv.version, 2);

    store.delete("k", Precondition::None).await.unwrap();
    let missing = store.put("k", val("3"), incarnation, None).await;
    assert_eq!(failed_with_current(missing), None, "a missing key fails");
    let recreated = put(&store, "k", "4").await;
    let stale = store.put("k", val("5"), incarnation, None).await;
    assert_eq!(failed_with_current(stale), Some(recreated.kv.clone()));
    let stale = store.delete("k", incarnation).await;
    assert_eq!(failed_with_current(stale), Some(recreated.kv));
    assert_eq!(
        failed_with_current(
            store
                .put("absent", val("x"), Precondition::CreateRevision(0), None)
                .await
        ),
        None,
        "CreateRevision(0) never matches a missing key"
    );
}

async fn guarded_writes_happen_only_while_every_guard_holds(store: Store) {
    let fence = put(&store, "election/leader", "a").await;
    let base = store.current_revision().await.unwrap();
    let guards = [
        Guard::new(
            "election/leader",
            Precondition::CreateRevision(fence.kv.create_revision),
        ),
        Guard::new("election/other", Precondition::Absent),
    ];
    let written = within("guarded put", async {
        store
            .put_guarded(&guards, "data/x", val("1"), Precondition::Absent, None)
            .await
    })
    .await
    .expect("every guard holds");
    assert_eq!(written.kv.mod_revision, base + 1);
    assert_eq!(written.prev, None);
    let updated = store
        .put_guarded(
            &guards,
            "data/x",
            val("2"),
            Precondition::ModRevision(written.kv.mod_revision),
            None,
        )
        .await
        .expect("every guard and the key's own precondition hold");
    assert_eq!(updated.prev, Some(written.kv));
    let deleted = store
        .delete_guarded(&guards, "data/x", Precondition::None)
        .await
        .expect("guarded delete");
    assert_eq!(deleted.prev, updated.kv);
    assert_eq!(deleted.revision, base + 3);

    // The guards hold, the key's own precondition does not: the key is named.
    let failed = store
        .put_guarded(&guards, "data/y", val("1"), Precondition::Present, None)
        .await;
    assert!(
        matches!(&failed, Err(Error::PreconditionFailed { key, current: None }) if key == "data/y"),
        "{failed:?}"
    );
    // A guard's key that changed incarnation stops every guarded write.
    store
        .delete("election/leader", Precondition::None)
        .await
        .unwrap();
    put(&store, "election/leader", "b").await;
    let after = store.current_revision().await.unwrap();
    let refused = store
        .put_guarded(&guards, "data/x", val("3"), Precondition::None, None)
        .await;
    assert!(
        matches!(&refused, Err(Error::PreconditionFailed { key, .. }) if key == "election/leader"),
        "{refused:?}"
    );
    let refused = store
        .delete_guarded(&guards, "data/x", Precondition::None)
        .await;
    assert!(
        matches!(&refused, Err(Error::PreconditionFailed { key, .. }) if key == "election/leader"),
        "{refused:?}"
    );
    assert_eq!(store.get("data/x").await.unwrap(), None);
    assert_eq!(
        store.current_revision().await.unwrap(),
        after,
        "a refused guarded write does not bump the revision"
    );
    // No guards: a plain write.
    store
        .put_guarded(&[], "data/z", val("1"), Precondition::None, None)
        .await
        .expect("no guards");
}

async fn a_failed_guard_is_named_with_its_current_state(store: Store) {
    let first = put(&store, "g/1", "1").await;
    let second = put(&store, "g/2", "2").await;
    // The first guard holds, the second does not: it is the one reported, as it is now.
    let guards = [
        Guard::new("g/1", Precondition::ModRevision(first.kv.mod_revision)),
        Guard::new("g/2", Precondition::Absent),
        Guard::new("g/3", Precondition::Present),
    ];
    let failed = store
        .put_guarded(&guards, "k", val("v"), Precondition::None, None)
        .await;
    match failed {
        Err(Error::PreconditionFailed { key, current }) => {
            assert_eq!(key, "g/2");
            assert_eq!(current.map(|kv| *kv), Some(second.kv));
        }
        other => panic!("expected g/2 to fail, got {other:?}"),
    }
    // Guards are checked in order: with two failing, the first is named.
    let guards = [
        Guard::new("g/3", Precondition::Present),
        Guard::new("g/2", Precondition::Absent),
    ];
    let failed = store
        .delete_guarded(&guards, "g/1", Precondition::None)
        .await;
    assert!(
        matches!(&failed, Err(Error::PreconditionFailed { key, current: None }) if key == "g/3"),
        "{failed:?}"
    );
    assert_eq!(store.get("g/1").await.unwrap(), Some(first.kv));
}

async fn a_fence_on_a_leased_key_stops_writes_once_the_lease_is_revoked(store: Store) {
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    let held = store
        .put("lock", val("a"), Precondition::Absent, Some(lease))
        .await
        .unwrap();
    let fence = [Guard::new(
        "lock",
        Precondition::CreateRevision(held.kv.create_revision),
    )];
    store
        .put_guarded(&fence, "work", val("by a"), Precondition::None, None)
        .await
        .expect("the holder writes under its fence");
    within("revoke", store.lease_revoke(lease)).await.unwrap();
    let next = store
        .put("lock", val("b"), Precondition::Absent, None)
        .await
        .expect("the lock is free once its lease is revoked");
    let late = store
        .put_guarded(&fence, "work", val("late by a"), Precondition::None, None)
        .await;
    assert_eq!(failed_with_current(late), Some(next.kv));
    assert_eq!(store.get("work").await.unwrap().unwrap().value, val("by a"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compacted_watch_passes_the_compaction_check() {
        let refused = Err(Error::Compacted {
            requested: 3,
            compacted: 4,
        });
        assert_refused_as_compacted(refused, 3, 4);
    }

    #[test]
    #[should_panic(expected = "expected Compacted, got another error")]
    fn a_watch_refused_for_another_reason_fails_the_compaction_check() {
        let refused = Err(Error::Backend("failed to read history".into()));
        assert_refused_as_compacted(refused, 3, 4);
    }

    #[test]
    #[should_panic(expected = "the watch was accepted")]
    fn an_accepted_watch_fails_the_compaction_check() {
        let accepted = Ok(futures::stream::empty().boxed());
        assert_refused_as_compacted(accepted, 3, 4);
    }
}
