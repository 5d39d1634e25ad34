//! The release state machine: given the plan and where every cluster is, what happens next.
//!
//! ```text
//!  decide(plan, progress, rules, now) ─▶ Decision { start, roll_back, cancel, phase, wave, wake_at, message }
//!
//!  abort                          → Failed: the clusters in progress are cancelled
//!  rollback (by hand)             → as RollbackAll: cancel the running, roll back the changed
//!  paused                         → Paused, nothing starts
//!  failed > errorBudget           → Pause: Paused            (a human looks)
//!                                   Rollback: roll the failed clusters back, then RolledBack
//!                                   RollbackAll: roll every changed cluster back, then RolledBack
//!  current wave = first wave with a cluster neither Succeeded nor Failed (a failure
//!                 within the budget does not hold a wave back; none left → Succeeded)
//!    needs approval, none given   → WaitingForApproval
//!    previous wave baking         → wait until its bake ends
//!    change window closed         → wait until it opens (running clusters finish)
//!    else start Waiting clusters of this wave, in plan order, up to clusterConcurrency running
//! ```
//!
//! The key decision: the release controller keeps no memory of its own. Each cluster's state
//! comes from its per-cluster pipeline run (which survives restarts exactly where it was),
//! and `decide` recomputes everything from that, so a restarted or newly elected controller
//! continues the release where it stopped, never starting a cluster twice nor skipping one.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use crate::kinds::{ReleaseFailurePolicy, ReleasePhase};
use crate::plan::Plan;
use crate::window::{Calendar, Decision as Window, decide as window};

/// Where one cluster is in the release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Not started.
    Waiting,
    /// Its pipeline run is going (batches, checks, bake).
    Running,
    Succeeded,
    /// A check failed or the change did not converge.
    Failed,
    /// Being put back on the previous version.
    RollingBack,
    RolledBack,
}

/// The rules a release follows (from its strategy).
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub cluster_concurrency: u32,
    pub error_budget: u32,
    pub failure_policy: Option<ReleaseFailurePolicy>,
    pub bake: SignedDuration,
    pub calendar: Calendar,
    pub paused: bool,
    /// `spec.abort`: stop for good where it is.
    pub abort: bool,
    /// `spec.rollback`: put every changed cluster back.
    pub rollback: bool,
    /// Waves (0-based) whose `Approval` was given.
    pub approved: BTreeSet<usize>,
}

/// What the controller does now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Clusters to start, in plan order.
    pub start: Vec<String>,
    /// Clusters to roll back to the previous version.
    pub roll_back: Vec<String>,
    /// Clusters in progress to stop where they are (abort, or before rolling back).
    pub cancel: Vec<String>,
    pub phase: ReleasePhase,
    /// The wave in progress (0-based), if any.
    pub wave: Option<usize>,
    /// When to decide again even if nothing changes (bake end, window opening).
    pub wake_at: Option<Timestamp>,
    /// One line for people: why the release is where it is.
    pub message: String,
}

fn decision(phase: ReleasePhase, wave: Option<usize>, message: impl Into<String>) -> Decision {
    Decision {
        start: Vec::new(),
        roll_back: Vec::new(),
        cancel: Vec::new(),
        phase,
        wave,
        wake_at: None,
        message: message.into(),
    }
}

/// Whether a cluster no longer holds its wave back: it went through, or it failed within
/// the error budget (a failure over the budget stops the release before this matters).
fn settled(s: ClusterState) -> bool {
    matches!(s, ClusterState::Succeeded | ClusterState::Failed)
}

/// Decides the next step of a release. `states` has every planned cluster (missing ones
/// `1 cluster`, `3 clusters`.
fn clusters(n: usize) -> String {
    format!("{n} cluster{}", if n == 1 { "" } else { "s" })
}

/// count as Waiting); `wave_done_at[w]` is when wave `w` finished, if it has.
pub fn decide(
    plan: &Plan,
    states: &BTreeMap<String, ClusterState>,
    wave_done_at: &BTreeMap<usize, Timestamp>,
    rules: &Rules,
    now: Timestamp,
) -> Decision {
    let state = |name: &str| states.get(name).copied().unwrap_or(ClusterState::Waiting);
    let all = || plan.waves.iter().flat_map(|w| &w.clusters);
    let named = |s: ClusterState| -> Vec<String> {
        all()
            .filter(|c| state(&c.name) == s)
            .map(|c| c.name.clone())
            .collect()
    };
    let count = |s: ClusterState| all().filter(|c| state(&c.name) == s).count();
    let failed = count(ClusterState::Failed);
    let rolling_back = count(ClusterState::RollingBack);
    let rolled_back = count(ClusterState::RolledBack);
    let running = count(ClusterState::Running);

    if rules.abort {
        return Decision {
            cancel: named(ClusterState::Running),
            ..decision(
                ReleasePhase::Failed,
                None,
                format!("aborted: {running} clusters in progress stopped where they were"),
            )
        };
    }
    // Failure handling comes first: it also applies to a paused release.
    if rules.rollback || failed > rules.error_budget as usize || rolling_back > 0 || rolled_back > 0
    {
        let policy = if rules.rollback {
            Some(ReleaseFailurePolicy::RollbackAll)
        } else {
            rules.failure_policy
        };
        let why = if rules.rollback {
            "rollback requested".to_string()
        } else if failed > rules.error_budget as usize {
            format!(
                "{} failed, over the error budget of {}",
                clusters(failed),
                rules.error_budget
            )
        } else {
            format!(
                "the failure policy acted when more than {} failed",
                clusters(rules.error_budget as usize)
            )
        };
        let changed = |s: ClusterState| match policy {
            Some(ReleaseFailurePolicy::RollbackAll) => settled(s),
            Some(ReleaseFailurePolicy::Rollback) => s == ClusterState::Failed,
            _ => false,
        };
        let roll_back: Vec<String> = all()
            .filter(|c| changed(state(&c.name)))
            .map(|c| c.name.clone())
            .collect();
        let cancel = if policy == Some(ReleaseFailurePolicy::RollbackAll) {
            named(ClusterState::Running)
        } else {
            Vec::new()
        };
        return match policy {
            None | Some(ReleaseFailurePolicy::Pause) => decision(
                ReleasePhase::Paused,
                None,
                format!("{why}: paused for a human"),
            ),
            Some(_) if roll_back.is_empty() && rolling_back == 0 && running == 0 => decision(
                ReleasePhase::RolledBack,
                None,
                format!("{} rolled back ({why})", clusters(rolled_back)),
            ),
            Some(_) => Decision {
                roll_back,
                cancel,
                ..decision(
                    ReleasePhase::Progressing,
                    None,
                    format!("rolling back: {why}"),
                )
            },
        };
    }
    let Some(wave) = plan
        .waves
        .iter()
        .position(|w| w.clusters.iter().any(|c| !settled(state(&c.name))))
    else {
        let message = if failed == 0 {
            "every cluster runs the new version".to_string()
        } else {
            format!(
                "done: {} failed, within the error budget of {}",
                clusters(failed),
                rules.error_budget
            )
        };
        return decision(ReleasePhase::Succeeded, None, message);
    };
    if rules.paused {
        return decision(ReleasePhase::Paused, Some(wave), "paused");
    }
    let w = &plan.waves[wave];
    let started = w
        .clusters
        .iter()
        .any(|c| state(&c.name) != ClusterState::Waiting);
    if !started && w.approval && !rules.approved.contains(&wave) {
        return decision(
            ReleasePhase::WaitingForApproval,
            Some(wave),
            format!("wave {} waits for an Approval", wave + 1),
        );
    }
    if !started
        && wave > 0
        && let Some(done) = wave_done_at.get(&(wave - 1))
        && let Ok(until) = done.checked_add(rules.bake)
        && until > now
    {
        return Decision {
            wake_at: Some(until),
            ..decision(
                ReleasePhase::Progressing,
                Some(wave),
                format!("wave {} bakes until {until}", wave),
            )
        };
    }
    let running_here = w
        .clusters
        .iter()
        .filter(|c| state(&c.name) == ClusterState::Running)
        .count();
    let room = (rules.cluster_concurrency.max(1) as usize).saturating_sub(running_here);
    let waiting: Vec<String> = w
        .clusters
        .iter()
        .filter(|c| state(&c.name) == ClusterState::Waiting)
        .take(room)
        .map(|c| c.name.clone())
        .collect();
    if !waiting.is_empty()
        && let Window::Closed { why, opens_at } = window(&rules.calendar, now)
    {
        return Decision {
            wake_at: opens_at,
            ..decision(
                ReleasePhase::Progressing,
                Some(wave),
                match opens_at {
                    Some(at) => format!("waiting: {why}; the window opens at {at}"),
                    None => format!("waiting: {why}"),
                },
            )
        };
    }
    let done = w
        .clusters
        .iter()
        .filter(|c| state(&c.name) == ClusterState::Succeeded)
        .count();
    Decision {
        message: format!(
            "wave {} of {}: {done}/{} clusters done, {} running",
            wave + 1,
            plan.waves.len(),
            w.clusters.len(),
            running_here + waiting.len()
        ),
        start: waiting,
        ..decision(ReleasePhase::Progressing, Some(wave), "")
    }
}

/// The pods of a workload of `desired` pods that run the new version once in-cluster
/// step `k` (0-based) of `steps` is done: each step is a count or a share of `desired`
/// (rounded up, so every step moves), never less than the step before, and the last step
/// takes every pod. No steps means one step of everything.
pub fn step_target(desired: u32, steps: &[crate::kinds::IntOrPercent], k: usize) -> u32 {
    if steps.is_empty() || k + 1 >= steps.len() {
        return desired;
    }
    steps[..=k]
        .iter()
        .map(|s| s.scaled(desired, true).min(desired))
        .max()
        .unwrap_or(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Placed, Wave};
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};

    fn t0() -> Timestamp {
        "2026-11-23T02:00:00Z".parse().unwrap()
    }

    fn mk_plan(sizes: &[usize], approval_at: Option<usize>) -> Plan {
        let mut n = 0;
        Plan {
            waves: sizes
                .iter()
                .enumerate()
                .map(|(i, s)| Wave {
                    clusters: (0..*s)
                        .map(|_| {
                            n += 1;
                            Placed {
                                name: format!("c{n:03}"),
                                group: vec![],
                                score: 0.0,
                                why: String::new(),
                            }
                        })
                        .collect(),
                    approval: approval_at == Some(i),
                })
                .collect(),
        }
    }

    fn rules(concurrency: u32) -> Rules {
        Rules {
            cluster_concurrency: concurrency,
            ..Rules::default()
        }
    }

    #[test]
    fn a_wave_starts_up_to_the_concurrency_and_the_next_waits_for_it() {
        let plan = mk_plan(&[3, 2], None);
        let mut states = BTreeMap::new();
        let d = decide(&plan, &states, &BTreeMap::new(), &rules(2), t0());
        assert_eq!(d.start, vec!["c001", "c002"]);
        for c in &d.start {
            states.insert(c.clone(), ClusterState::Running);
        }
        states.insert("c001".into(), ClusterState::Succeeded);
        let d = decide(&plan, &states, &BTreeMap::new(), &rules(2), t0());
        assert_eq!(d.start, vec!["c003"], "one slot freed, same wave");
        states.insert("c002".into(), ClusterState::Succeeded);
        states.insert("c003".into(), ClusterState::Running);
        let d = decide(&plan, &states, &BTreeMap::new(), &rules(2), t0());
        assert!(d.start.is_empty(), "wave 2 waits for wave 1: {d:?}");
    }

    #[test]
    fn an_approval_gate_and_a_bake_hold_the_next_wave() {
        let plan = mk_plan(&[1, 1], Some(1));
        let mut states = BTreeMap::from([("c001".to_string(), ClusterState::Succeeded)]);
        let done = BTreeMap::from([(0, t0())]);
        let mut r = rules(1);
        r.bake = SignedDuration::from_mins(10);
        let d = decide(&plan, &states, &done, &r, t0());
        assert_eq!(d.phase, ReleasePhase::WaitingForApproval);
        r.approved.insert(1);
        let d = decide(&plan, &states, &done, &r, t0());
        assert!(d.start.is_empty());
        assert_eq!(
            d.wake_at,
            Some(t0() + SignedDuration::from_mins(10)),
            "{d:?}"
        );
        let d = decide(
            &plan,
            &states,
            &done,
            &r,
            t0() + SignedDuration::from_mins(10),
        );
        assert_eq!(d.start, vec!["c002"]);
        states.insert("c002".into(), ClusterState::Succeeded);
        assert_eq!(
            decide(&plan, &states, &done, &r, t0()).phase,
            ReleasePhase::Succeeded
        );
    }

    #[test]
    fn a_closed_window_holds_new_clusters_until_it_opens() {
        let plan = mk_plan(&[2], None);
        let mut r = rules(2);
        r.calendar.allow.push(
            crate::window::Window::parse("w", "Mon-Fri", "09:00-17:00", "Asia/Shanghai").unwrap(),
        );
        // Saturday 10:00 Beijing.
        let sat: Timestamp = "2026-11-21T02:00:00Z".parse().unwrap();
        let d = decide(&plan, &BTreeMap::new(), &BTreeMap::new(), &r, sat);
        assert!(d.start.is_empty());
        assert_eq!(d.wake_at, Some("2026-11-23T01:00:00Z".parse().unwrap()));
        assert!(d.message.contains("outside"), "{}", d.message);
    }

    #[test]
    fn over_the_error_budget_the_failure_policy_acts() {
        let plan = mk_plan(&[1, 2], None);
        let states = BTreeMap::from([
            ("c001".to_string(), ClusterState::Succeeded),
            ("c002".to_string(), ClusterState::Failed),
            ("c003".to_string(), ClusterState::Waiting),
        ]);
        let mut r = rules(2);
        r.failure_policy = Some(ReleaseFailurePolicy::Pause);
        let d = decide(&plan, &states, &BTreeMap::new(), &r, t0());
        assert_eq!(d.phase, ReleasePhase::Paused);
        assert!(d.start.is_empty());
        r.failure_policy = Some(ReleaseFailurePolicy::Rollback);
        assert_eq!(
            decide(&plan, &states, &BTreeMap::new(), &r, t0()).roll_back,
            vec!["c002"]
        );
        r.failure_policy = Some(ReleaseFailurePolicy::RollbackAll);
        assert_eq!(
            decide(&plan, &states, &BTreeMap::new(), &r, t0()).roll_back,
            vec!["c001", "c002"]
        );
        r.error_budget = 1;
        let d = decide(&plan, &states, &BTreeMap::new(), &r, t0());
        assert!(d.roll_back.is_empty(), "within budget: keep going");
        assert_eq!(d.start, vec!["c003"]);
    }

    #[test]
    fn a_failure_within_the_budget_does_not_hold_the_wave_back() {
        let plan = mk_plan(&[2, 1], None);
        let mut states = BTreeMap::from([
            ("c001".to_string(), ClusterState::Succeeded),
            ("c002".to_string(), ClusterState::Failed),
        ]);
        let mut r = rules(1);
        r.error_budget = 1;
        let done = BTreeMap::from([(0, t0())]);
        let d = decide(&plan, &states, &done, &r, t0());
        assert_eq!(d.start, vec!["c003"], "{d:?}");
        states.insert("c003".into(), ClusterState::Succeeded);
        let d = decide(&plan, &states, &done, &r, t0());
        assert_eq!(d.phase, ReleasePhase::Succeeded);
        assert!(d.message.contains("1 cluster failed"), "{}", d.message);
    }

    #[test]
    fn abort_stops_the_running_clusters_and_rollback_puts_every_changed_one_back() {
        let plan = mk_plan(&[1, 2], None);
        let states = BTreeMap::from([
            ("c001".to_string(), ClusterState::Succeeded),
            ("c002".to_string(), ClusterState::Running),
        ]);
        let mut r = rules(2);
        r.abort = true;
        let d = decide(&plan, &states, &BTreeMap::new(), &r, t0());
        assert_eq!(d.phase, ReleasePhase::Failed);
        assert_eq!(d.cancel, vec!["c002"]);
        assert!(d.start.is_empty() && d.roll_back.is_empty());

        r.abort = false;
        r.rollback = true;
        let d = decide(&plan, &states, &BTreeMap::new(), &r, t0());
        assert_eq!(d.phase, ReleasePhase::Progressing);
        assert_eq!(d.cancel, vec!["c002"], "stop it before putting it back");
        assert_eq!(d.roll_back, vec!["c001"]);
        // The cancelled cluster ends Failed and is rolled back too; then the release ends.
        let states = BTreeMap::from([
            ("c001".to_string(), ClusterState::RolledBack),
            ("c002".to_string(), ClusterState::Failed),
        ]);
        assert_eq!(
            decide(&plan, &states, &BTreeMap::new(), &r, t0()).roll_back,
            vec!["c002"]
        );
        let states = BTreeMap::from([
            ("c001".to_string(), ClusterState::RolledBack),
            ("c002".to_string(), ClusterState::RolledBack),
        ]);
        let d = decide(&plan, &states, &BTreeMap::new(), &r, t0());
        assert_eq!(d.phase, ReleasePhase::RolledBack, "{d:?}");
        assert!(d.start.is_empty(), "c003 never starts");
    }

    #[test]
    fn steps_grow_to_every_pod_and_never_shrink() {
        use crate::kinds::IntOrPercent::{Int, Percent};
        let steps = [Int(1), Percent(10), Percent(5), Percent(50), Percent(100)];
        let got: Vec<u32> = (0..steps.len())
            .map(|k| step_target(100, &steps, k))
            .collect();
        assert_eq!(got, [1, 10, 10, 50, 100]);
        assert_eq!(step_target(7, &steps, 1), 1, "10% of 7 rounds up to 1");
        assert_eq!(
            step_target(3, &[Int(5), Int(9)], 0),
            3,
            "never more than desired"
        );
        assert_eq!(
            step_target(3, &[Int(1), Int(2)], 1),
            3,
            "the last step takes all"
        );
        assert_eq!(step_target(40, &[], 0), 40);
    }

    proptest! {
        #[test]
        fn a_release_never_exceeds_its_concurrency_nor_runs_ahead_of_its_waves(
            sizes in proptest::collection::vec(1usize..6, 1..5),
            concurrency in 1u32..4,
            outcomes in proptest::collection::vec(any::<bool>(), 64),
        ) {
            let plan = mk_plan(&sizes, None);
            let mut states: BTreeMap<String, ClusterState> = BTreeMap::new();
            let mut done_at = BTreeMap::new();
            let r = Rules { cluster_concurrency: concurrency, error_budget: 100, ..Rules::default() };
            let wave_of: BTreeMap<String, usize> = plan.waves.iter().enumerate()
                .flat_map(|(i, w)| w.clusters.iter().map(move |c| (c.name.clone(), i))).collect();
            let mut started = BTreeSet::new();
            for step in 0..200 {
                let d = decide(&plan, &states, &done_at, &r, t0());
                if d.phase == ReleasePhase::Succeeded { break; }
                for c in &d.start {
                    prop_assert!(started.insert(c.clone()), "{c} started twice");
                    // Every earlier wave is finished.
                    let w = wave_of[c];
                    for (name, wi) in &wave_of {
                        if *wi < w {
                            prop_assert_eq!(states.get(name).copied(), Some(ClusterState::Succeeded));
                        }
                    }
                    states.insert(c.clone(), ClusterState::Running);
                }
                let running = states.values().filter(|s| **s == ClusterState::Running).count();
                prop_assert!(running <= concurrency as usize);
                // Some running clusters finish each step; the others keep running.
                let running_now: Vec<String> = states.iter()
                    .filter(|(_, s)| **s == ClusterState::Running).map(|(n, _)| n.clone()).collect();
                for (i, c) in running_now.iter().enumerate() {
                    if outcomes[(step + i) % outcomes.len()] || step > 100 {
                        states.insert(c.clone(), ClusterState::Succeeded);
                    }
                }
                for (i, w) in plan.waves.iter().enumerate() {
                    if w.clusters.iter().all(|c| states.get(&c.name) == Some(&ClusterState::Succeeded)) {
                        done_at.entry(i).or_insert(t0());
                    }
                }
            }
            prop_assert_eq!(decide(&plan, &states, &done_at, &r, t0()).phase, ReleasePhase::Succeeded);
            prop_assert_eq!(started.len(), wave_of.len(), "every cluster started exactly once");
        }
    }
}
