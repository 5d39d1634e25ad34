//! Concurrency limits on runs: which waiting PipelineRuns may start now.
//!
//! Two limits, both on *running PipelineRuns* (a run counts from its first step until it
//! completes, whatever its tasks are doing — paused and interrupted runs hold their
//! place, as Argo Workflows' `parallelism` counts workflows):
//!
//! - per pipeline: `Pipeline.spec.maxConcurrentRuns` caps the runs of that pipeline (in
//!   its namespace) running at once;
//! - global: the controller's own cap (`shoal serve --max-running-pipelineruns`) over
//!   all runs in all namespaces.
//!
//! A run that may not start yet stays `Succeeded=Unknown` with reason `Queued` and a
//! message saying what it waits for; nothing of it runs and its timeouts do not tick
//! (they count from `startTime`, which is set when it leaves the queue).
//!
//! ```text
//!  waiting runs, oldest first ──► for each: pipeline below its cap and global below its cap?
//!                                   ├─ yes: Start (counts are bumped for the next one)
//!                                   └─ no:  Queued { position, blocked by pipeline | global }
//! ```
//!
//! # The key decision
//!
//! Strict first-come-first-served *within* a pipeline, and no head-of-line blocking
//! *across* pipelines: a run held back by its own pipeline's cap does not take a global
//! slot, so the next run of another pipeline may start. Runs that already started are
//! never stopped or counted twice, even if a cap was lowered below them. [`admit`] is a
//! pure function of the runs and limits, so the controller decides it from its cache and
//! whatever it admitted since (see `shoal_controllers::taskflow`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use jiff::Timestamp;

use super::run::{PipelineRun, PipelineRunSpecStatus};
use super::scheduler::RunReason;

/// A run, as the queue sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One run that has not completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: RunKey,
    /// `spec.pipelineRef.name` (in the run's namespace).
    pub pipeline: String,
    /// Arrival order: `metadata.creationTimestamp` (ties broken by namespace and name).
    pub created: Option<Timestamp>,
    /// Started (it holds a slot) or waiting for one.
    pub started: bool,
}

impl Entry {
    /// The run as the queue sees it, or `None` when it is outside the queue's concern:
    /// completed, held by `spec.status: PipelineRunPending`, or cancelled before it
    /// started (the scheduler completes those without running anything).
    pub fn of(run: &PipelineRun) -> Option<Entry> {
        let status = run.status.as_ref();
        if status.is_some_and(|s| s.is_done()) {
            return None;
        }
        let started = status.is_some_and(|s| s.start_time.is_some());
        if !started
            && matches!(
                run.spec.status,
                Some(
                    PipelineRunSpecStatus::PipelineRunPending
                        | PipelineRunSpecStatus::Cancelled
                        | PipelineRunSpecStatus::CancelledRunFinally
                        | PipelineRunSpecStatus::StoppedRunFinally
                )
            )
        {
            return None;
        }
        Some(Entry {
            key: RunKey {
                namespace: run.metadata.namespace.clone().unwrap_or_default(),
                name: run.metadata.name.clone().unwrap_or_default(),
            },
            pipeline: run.spec.pipeline_ref.name.clone(),
            created: run.metadata.creation_timestamp.as_ref().map(|t| t.0),
            started,
        })
    }
}

/// The caps in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Running PipelineRuns over everything; `None` for no cap.
    pub global: Option<usize>,
    /// `maxConcurrentRuns` by (namespace, pipeline name); a pipeline not listed (or
    /// that does not exist) has no cap of its own.
    pub per_pipeline: HashMap<(String, String), usize>,
}

impl Limits {
    /// Whether no cap applies at all (the controller then skips the queue entirely).
    pub fn is_unlimited(&self) -> bool {
        self.global.is_none() && self.per_pipeline.is_empty()
    }

    fn of_pipeline(&self, namespace: &str, pipeline: &str) -> Option<usize> {
        self.per_pipeline
            .get(&(namespace.to_string(), pipeline.to_string()))
            .copied()
    }
}

/// Why a run waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// Its pipeline already runs `running` runs, its `maxConcurrentRuns` is `limit`.
    Pipeline { running: usize, limit: usize },
    /// `running` runs are running in all, the global cap is `limit`.
    Global { running: usize, limit: usize },
}

/// What [`admit`] says about one waiting run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It may start now.
    Start,
    /// It waits; `position` is 1 for the first waiting run of its pipeline.
    Queued { position: usize, blocked: Blocked },
}

impl Verdict {
    /// The `Succeeded` condition's reason and message for a run with this verdict.
    pub fn condition(&self, pipeline: &str) -> Option<(RunReason, String)> {
        match self {
            Verdict::Start => None,
            Verdict::Queued { blocked, .. } => Some((
                RunReason::Queued,
                // Stable while the run waits (no counts or positions), so that a queue
                // moving does not rewrite every waiting run.
                match blocked {
                    Blocked::Pipeline { limit, .. } => format!(
                        "waiting for a slot: pipeline {pipeline} runs at most {limit} at once \
                         (maxConcurrentRuns)"
                    ),
                    Blocked::Global { limit, .. } => format!(
                        "waiting for a slot: the controller runs at most {limit} pipeline runs \
                         at once"
                    ),
                },
            )),
        }
    }
}

/// Decides, for every waiting run in `entries`, whether it may start now under
/// `limits`, given the runs that already started. Runs are considered oldest first; the
/// answer has one verdict per waiting run and does not depend on the order of `entries`.
pub fn admit(entries: &[Entry], limits: &Limits) -> BTreeMap<RunKey, Verdict> {
    let mut per_pipeline: HashMap<(&str, &str), usize> = HashMap::new();
    let mut total = 0usize;
    for e in entries.iter().filter(|e| e.started) {
        *per_pipeline
            .entry((&e.key.namespace, &e.pipeline))
            .or_default() += 1;
        total += 1;
    }
    let mut waiting: Vec<&Entry> = entries.iter().filter(|e| !e.started).collect();
    waiting.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
    let mut positions: HashMap<(&str, &str), usize> = HashMap::new();
    let mut out = BTreeMap::new();
    for e in waiting {
        let pipeline = (e.key.namespace.as_str(), e.pipeline.as_str());
        let running = per_pipeline.get(&pipeline).copied().unwrap_or(0);
        let blocked = match (
            limits.of_pipeline(&e.key.namespace, &e.pipeline),
            limits.global,
        ) {
            (Some(limit), _) if running >= limit => Some(Blocked::Pipeline { running, limit }),
            (_, Some(limit)) if total >= limit => Some(Blocked::Global {
                running: total,
                limit,
            }),
            _ => None,
        };
        let verdict = match blocked {
            None => {
                *per_pipeline.entry(pipeline).or_default() += 1;
                total += 1;
                Verdict::Start
            }
            Some(blocked) => {
                let position = positions.entry(pipeline).or_default();
                *position += 1;
                Verdict::Queued {
                    position: *position,
                    blocked,
                }
            }
        };
        out.insert(e.key.clone(), verdict);
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn mk_entry(name: &str, pipeline: &str, created: i64, started: bool) -> Entry {
        Entry {
            key: RunKey {
                namespace: "default".into(),
                name: name.into(),
            },
            pipeline: pipeline.into(),
            created: Some(Timestamp::from_second(created).unwrap()),
            started,
        }
    }

    fn mk_limits(global: Option<usize>, per: &[(&str, usize)]) -> Limits {
        Limits {
            global,
            per_pipeline: per
                .iter()
                .map(|(p, n)| (("default".to_string(), p.to_string()), *n))
                .collect(),
        }
    }

    fn starts(v: &BTreeMap<RunKey, Verdict>) -> Vec<&str> {
        v.iter()
            .filter(|(_, v)| **v == Verdict::Start)
            .map(|(k, _)| k.name.as_str())
            .collect()
    }

    #[test]
    fn without_limits_every_waiting_run_starts() {
        let e = [mk_entry("a", "p", 1, false), mk_entry("b", "p", 2, false)];
        assert_eq!(starts(&admit(&e, &Limits::default())), ["a", "b"]);
    }

    #[test]
    fn a_pipeline_cap_starts_the_oldest_and_queues_the_rest_in_order() {
        let e = [
            mk_entry("c", "p", 3, false),
            mk_entry("a", "p", 1, true),
            mk_entry("b", "p", 2, false),
            mk_entry("d", "p", 4, false),
        ];
        let v = admit(&e, &mk_limits(None, &[("p", 2)]));
        assert_eq!(starts(&v), ["b"]);
        let key = |n: &str| RunKey {
            namespace: "default".into(),
            name: n.into(),
        };
        assert_eq!(
            v[&key("c")],
            Verdict::Queued {
                position: 1,
                blocked: Blocked::Pipeline {
                    running: 2,
                    limit: 2
                }
            }
        );
        assert!(matches!(v[&key("d")], Verdict::Queued { position: 2, .. }));
        let (reason, message) = v[&key("c")].condition("p").unwrap();
        assert_eq!(reason, RunReason::Queued);
        assert!(
            message.contains("at most 2 at once (maxConcurrentRuns)"),
            "{message}"
        );
    }

    #[test]
    fn a_run_held_by_its_pipeline_cap_does_not_block_other_pipelines() {
        let e = [
            mk_entry("p1", "p", 1, true),
            mk_entry("p2", "p", 2, false),
            mk_entry("q1", "q", 3, false),
        ];
        let v = admit(&e, &mk_limits(Some(2), &[("p", 1)]));
        assert_eq!(starts(&v), ["q1"]);
    }

    #[test]
    fn the_global_cap_counts_runs_of_every_pipeline() {
        let e = [
            mk_entry("p1", "p", 1, true),
            mk_entry("q1", "q", 2, false),
            mk_entry("r1", "r", 3, false),
        ];
        let v = admit(&e, &mk_limits(Some(2), &[]));
        assert_eq!(starts(&v), ["q1"]);
        assert!(matches!(
            v.values().last(),
            Some(Verdict::Queued {
                blocked: Blocked::Global {
                    running: 2,
                    limit: 2
                },
                ..
            })
        ));
    }

    #[test]
    fn a_lowered_cap_stops_nothing_and_starts_nothing() {
        let e = [
            mk_entry("a", "p", 1, true),
            mk_entry("b", "p", 2, true),
            mk_entry("c", "p", 3, false),
        ];
        let v = admit(&e, &mk_limits(None, &[("p", 1)]));
        assert_eq!(v.len(), 1, "started runs get no verdict");
        assert!(starts(&v).is_empty());
    }

    fn arb_entries() -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::vec((0..3u8, 0..20i64, any::<bool>()), 0..30).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (p, created, started))| {
                    mk_entry(
                        &format!("r{i:02}"),
                        ["p", "q", "r"][p as usize],
                        created,
                        started,
                    )
                })
                .collect()
        })
    }

    fn arb_limits() -> impl Strategy<Value = Limits> {
        (
            prop::option::of(0..8usize),
            prop::collection::vec((0..3u8, 0..5usize), 0..3),
        )
            .prop_map(|(global, per)| Limits {
                global,
                per_pipeline: per
                    .into_iter()
                    .map(|(p, n)| (("default".into(), ["p", "q", "r"][p as usize].into()), n))
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn admitting_never_exceeds_a_cap_that_was_not_already_exceeded(
            entries in arb_entries(), limits in arb_limits()
        ) {
            let v = admit(&entries, &limits);
            let running = |filter: &dyn Fn(&Entry) -> bool| {
                entries.iter().filter(|e| filter(e)).filter(|e| e.started || v.get(&e.key) == Some(&Verdict::Start)).count()
            };
            let before = |filter: &dyn Fn(&Entry) -> bool| entries.iter().filter(|e| filter(e) && e.started).count();
            if let Some(limit) = limits.global {
                prop_assert!(running(&|_| true) <= limit.max(before(&|_| true)));
            }
            for ((_, p), limit) in &limits.per_pipeline {
                let of = |e: &Entry| e.pipeline == *p;
                prop_assert!(running(&of) <= (*limit).max(before(&of)));
            }
        }

        #[test]
        fn a_run_waits_only_when_one_of_its_caps_is_full(
            entries in arb_entries(), limits in arb_limits()
        ) {
            let v = admit(&entries, &limits);
            let after = |f: &dyn Fn(&Entry) -> bool| entries.iter()
                .filter(|e| f(e) && (e.started || v.get(&e.key) == Some(&Verdict::Start))).count();
            for e in entries.iter().filter(|e| !e.started) {
                if let Verdict::Queued { .. } = v[&e.key] {
                    let pipeline_full = limits.of_pipeline(&e.key.namespace, &e.pipeline)
                        .is_some_and(|l| after(&|x: &Entry| x.pipeline == e.pipeline) >= l);
                    let global_full = limits.global.is_some_and(|l| after(&|_| true) >= l);
                    prop_assert!(pipeline_full || global_full, "{} waits with free slots", e.key);
                }
            }
        }

        #[test]
        fn within_a_pipeline_no_run_starts_before_an_older_waiting_one(
            entries in arb_entries(), limits in arb_limits()
        ) {
            let v = admit(&entries, &limits);
            for a in entries.iter().filter(|e| !e.started) {
                for b in entries.iter().filter(|e| !e.started && e.pipeline == a.pipeline) {
                    if (a.created, &a.key) < (b.created, &b.key) && v[&b.key] == Verdict::Start {
                        prop_assert_eq!(&v[&a.key], &Verdict::Start);
                    }
                }
            }
        }

        #[test]
        fn the_verdicts_do_not_depend_on_the_order_of_the_input(
            entries in arb_entries(), limits in arb_limits()
        ) {
            let mut reversed = entries.clone();
            reversed.reverse();
            prop_assert_eq!(admit(&entries, &limits), admit(&reversed, &limits));
        }
    }
}
