//! The simulated kubelet: a pod's lifecycle on its node as a state machine over time.
//!
//! ```text
//!            startup                 readyAfter
//!  Creating ─────────▶ Running{not ready} ─────────▶ Running{ready since t}
//!                        │   ▲                          │
//!       crash fault:     │   │ backoff over             │ job done (restartPolicy ≠ Always)
//!       exits after      ▼   │ (10s, 20s, … 5m)         ▼
//!       crashAfter   CrashLoopBackOff{until}          Succeeded
//!                        │ restartPolicy Never
//!                        ▼
//!                      Failed
//!
//!  NeverReady fault: Running{not ready} forever.   Node NotReady: Running{ready} → not ready.
//!  Node NotReady or kubelet stalled: no progress at all.
//! ```
//!
//! [`step`] is the whole kubelet: given the pod's [`PodState`], `now`, the pod's
//! [`PodFault`] and the node's condition, it returns the new state and when it next needs
//! attention (`None`: only when something outside changes). The driver keeps the state
//! (a couple of words per pod) and calls `step` when that time comes. The key decision:
//! `step` catches up — if the driver is late (a fast clock, a busy process), every
//! transition that was due is applied with its own timestamp, so a pod's history does not
//! depend on how often it is looked at.

use jiff::{SignedDuration, Timestamp};

use crate::faults::PodFault;

/// Kubernetes' crash-loop back-off: 10 s, doubling, capped at 5 minutes.
pub const BACKOFF_INITIAL: SignedDuration = SignedDuration::from_secs(10);
pub const BACKOFF_MAX: SignedDuration = SignedDuration::from_secs(300);

/// Bound on transitions applied by one [`step`], so a pathological input cannot spin.
/// A crash loop at the 5-minute cap makes ~290 transitions a day.
const MAX_TRANSITIONS: usize = 4096;

/// A pod's lifecycle state on its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Bound to the node; pulling the image, creating the container (`ContainerCreating`).
    Creating { since: Timestamp },
    /// The container runs since `started`; `ready_since` is set once readiness passes.
    Running {
        started: Timestamp,
        ready_since: Option<Timestamp>,
        restarts: u32,
    },
    /// The container exited and waits `until` before restarting (`CrashLoopBackOff`).
    BackOff { until: Timestamp, restarts: u32 },
    /// The container exited 0 and will not restart (job pods).
    Succeeded { at: Timestamp, restarts: u32 },
    /// The container exited non-zero and will not restart.
    Failed { at: Timestamp, restarts: u32 },
}

/// `spec.restartPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// How long things take for a pod (from the simulation's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// From creation to the container running (image pull, sandbox).
    pub startup: SignedDuration,
    /// From running to passing readiness.
    pub ready_after: SignedDuration,
    /// From running to exiting, for a crash-looping container.
    pub crash_after: SignedDuration,
    /// From running to exiting 0, for run-to-completion pods; `None` for services.
    pub completes_after: Option<SignedDuration>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            startup: SignedDuration::from_secs(5),
            ready_after: SignedDuration::from_secs(5),
            crash_after: SignedDuration::from_secs(3),
            completes_after: None,
        }
    }
}

/// What the kubelet sees besides the pod itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    pub fault: PodFault,
    pub node_ready: bool,
    pub kubelet_stalled: bool,
}

/// The result of [`step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub state: PodState,
    /// When `step` should be called again; `None` when nothing happens until the
    /// conditions change.
    pub next: Option<Timestamp>,
}

/// The back-off before restart number `restarts` (1-based): 10 s × 2^(n−1), at most 5 m.
pub fn backoff(restarts: u32) -> SignedDuration {
    let exp = restarts.saturating_sub(1).min(16);
    let secs = BACKOFF_INITIAL.as_secs().saturating_mul(1 << exp);
    SignedDuration::from_secs(secs).min(BACKOFF_MAX)
}

impl PodState {
    /// A new pod bound to its node at `now`.
    pub fn created(now: Timestamp) -> Self {
        PodState::Creating { since: now }
    }

    pub fn is_ready(&self) -> bool {
        matches!(
            self,
            PodState::Running {
                ready_since: Some(_),
                ..
            }
        )
    }

    pub fn ready_since(&self) -> Option<Timestamp> {
        match self {
            PodState::Running { ready_since, .. } => *ready_since,
            _ => None,
        }
    }

    pub fn restarts(&self) -> u32 {
        match self {
            PodState::Creating { .. } => 0,
            PodState::Running { restarts, .. }
            | PodState::BackOff { restarts, .. }
            | PodState::Succeeded { restarts, .. }
            | PodState::Failed { restarts, .. } => *restarts,
        }
    }

    /// `status.phase` as Kubernetes reports it.
    pub fn phase(&self) -> &'static str {
        match self {
            PodState::Creating { .. } => "Pending",
            PodState::Running { .. } | PodState::BackOff { .. } => "Running",
            PodState::Succeeded { .. } => "Succeeded",
            PodState::Failed { .. } => "Failed",
        }
    }

    /// The reason kubectl shows in STATUS when it is not the phase.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            PodState::Creating { .. } => Some("ContainerCreating"),
            PodState::BackOff { .. } => Some("CrashLoopBackOff"),
            PodState::Succeeded { .. } => Some("Completed"),
            PodState::Failed { .. } => Some("Error"),
            PodState::Running { .. } => None,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, PodState::Succeeded { .. } | PodState::Failed { .. })
    }
}

/// Advances a pod to `now`. See the module docs for the transitions.
pub fn step(
    state: PodState,
    now: Timestamp,
    timing: &Timing,
    restart_policy: RestartPolicy,
    cond: Conditions,
) -> Step {
    if cond.kubelet_stalled {
        return Step { state, next: None };
    }
    if !cond.node_ready {
        // The node controller marks pods of a NotReady node not ready; nothing else moves.
        let state = match state {
            PodState::Running {
                ready_since: Some(_),
                restarts,
                ..
            } => PodState::Running {
                started: now,
                ready_since: None,
                restarts,
            },
            s => s,
        };
        return Step { state, next: None };
    }
    let mut state = state;
    for _ in 0..MAX_TRANSITIONS {
        let Some((at, next)) = transition(state, timing, restart_policy, cond.fault) else {
            return Step { state, next: None };
        };
        if at > now {
            return Step {
                state,
                next: Some(at),
            };
        }
        state = next;
    }
    // Still behind after MAX_TRANSITIONS: ask to be called again at once.
    Step {
        state,
        next: Some(now),
    }
}

/// The next transition of `state` if nothing outside changes: (when, into what).
fn transition(
    state: PodState,
    timing: &Timing,
    policy: RestartPolicy,
    fault: PodFault,
) -> Option<(Timestamp, PodState)> {
    let at = |t: Timestamp, d: SignedDuration| t.saturating_add(d).unwrap_or(Timestamp::MAX);
    match state {
        PodState::Creating { since } => {
            let t = at(since, timing.startup);
            Some((
                t,
                PodState::Running {
                    started: t,
                    ready_since: None,
                    restarts: 0,
                },
            ))
        }
        PodState::Running {
            started,
            ready_since,
            restarts,
        } => match fault {
            PodFault::CrashLoop => {
                let t = at(started, timing.crash_after);
                let restarts_after = restarts.saturating_add(1);
                Some((
                    t,
                    match policy {
                        RestartPolicy::Never => PodState::Failed { at: t, restarts },
                        RestartPolicy::Always | RestartPolicy::OnFailure => PodState::BackOff {
                            until: at(t, backoff(restarts_after)),
                            restarts: restarts_after,
                        },
                    },
                ))
            }
            PodFault::NeverReady => match timing.completes_after {
                // A job pod still runs to completion; readiness does not gate it.
                Some(d) if policy != RestartPolicy::Always => {
                    let t = at(started, d);
                    Some((t, PodState::Succeeded { at: t, restarts }))
                }
                _ => None,
            },
            PodFault::None => {
                let ready_at = at(started, timing.ready_after);
                match (ready_since, timing.completes_after) {
                    (_, Some(d)) if policy != RestartPolicy::Always => {
                        let done = at(started, d);
                        if ready_since.is_none() && ready_at < done {
                            Some((
                                ready_at,
                                PodState::Running {
                                    started,
                                    ready_since: Some(ready_at),
                                    restarts,
                                },
                            ))
                        } else {
                            Some((done, PodState::Succeeded { at: done, restarts }))
                        }
                    }
                    (None, _) => Some((
                        ready_at,
                        PodState::Running {
                            started,
                            ready_since: Some(ready_at),
                            restarts,
                        },
                    )),
                    (Some(_), _) => None,
                }
            }
        },
        PodState::BackOff { until, restarts } => Some((
            until,
            PodState::Running {
                started: until,
                ready_since: None,
                restarts,
            },
        )),
        PodState::Succeeded { .. } | PodState::Failed { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn secs(s: i64) -> Timestamp {
        t0() + SignedDuration::from_secs(s)
    }

    fn healthy() -> Conditions {
        Conditions {
            fault: PodFault::None,
            node_ready: true,
            kubelet_stalled: false,
        }
    }

    fn run(fault: PodFault, until: i64) -> Step {
        step(
            PodState::created(t0()),
            secs(until),
            &Timing::default(),
            RestartPolicy::Always,
            Conditions { fault, ..healthy() },
        )
    }

    #[test]
    fn a_healthy_pod_is_created_then_running_then_ready() {
        let s = run(PodFault::None, 3);
        assert_eq!(s.state.reason(), Some("ContainerCreating"));
        assert_eq!(s.next, Some(secs(5)));
        let s = run(PodFault::None, 7);
        assert!(!s.state.is_ready());
        assert_eq!(s.state.phase(), "Running");
        assert_eq!(s.next, Some(secs(10)));
        let s = run(PodFault::None, 60);
        assert_eq!(s.state.ready_since(), Some(secs(10)));
        assert_eq!(s.next, None);
    }

    #[test]
    fn a_crash_looping_pod_backs_off_10s_doubling_to_5_minutes() {
        assert_eq!(backoff(1), SignedDuration::from_secs(10));
        assert_eq!(backoff(2), SignedDuration::from_secs(20));
        assert_eq!(backoff(5), SignedDuration::from_secs(160));
        assert_eq!(backoff(6), SignedDuration::from_secs(300));
        assert_eq!(backoff(60), SignedDuration::from_secs(300));
        // Running at 5 s, exits at 8 s (restart 1, back-off until 18 s), runs 18–21 s,
        // exits (restart 2, until 41 s)...
        let s = run(PodFault::CrashLoop, 9);
        assert_eq!(
            s.state,
            PodState::BackOff {
                until: secs(18),
                restarts: 1
            }
        );
        assert_eq!(s.state.reason(), Some("CrashLoopBackOff"));
        let s = run(PodFault::CrashLoop, 30);
        assert_eq!(
            s.state,
            PodState::BackOff {
                until: secs(41),
                restarts: 2
            }
        );
        let s = run(PodFault::CrashLoop, 3600);
        assert!(s.state.restarts() > 10 && !s.state.is_ready());
    }

    #[test]
    fn a_never_ready_pod_runs_without_ever_becoming_ready() {
        let s = run(PodFault::NeverReady, 86_400);
        assert_eq!(s.state.phase(), "Running");
        assert!(!s.state.is_ready());
        assert_eq!(s.next, None);
    }

    #[test]
    fn job_pods_succeed_or_fail_and_stop() {
        let timing = Timing {
            completes_after: Some(SignedDuration::from_secs(30)),
            ..Timing::default()
        };
        let s = step(
            PodState::created(t0()),
            secs(100),
            &timing,
            RestartPolicy::Never,
            healthy(),
        );
        assert_eq!(
            s.state,
            PodState::Succeeded {
                at: secs(35),
                restarts: 0
            }
        );
        let s = step(
            PodState::created(t0()),
            secs(100),
            &timing,
            RestartPolicy::Never,
            Conditions {
                fault: PodFault::CrashLoop,
                ..healthy()
            },
        );
        assert_eq!(
            s.state,
            PodState::Failed {
                at: secs(8),
                restarts: 0
            }
        );
        assert_eq!(s.state.reason(), Some("Error"));
    }

    #[test]
    fn a_stalled_kubelet_or_not_ready_node_makes_no_progress() {
        let stalled = Conditions {
            kubelet_stalled: true,
            ..healthy()
        };
        let start = PodState::created(t0());
        let s = step(
            start,
            secs(100),
            &Timing::default(),
            RestartPolicy::Always,
            stalled,
        );
        assert_eq!((s.state, s.next), (start, None));
        let ready = run(PodFault::None, 60).state;
        let down = Conditions {
            node_ready: false,
            ..healthy()
        };
        let s = step(
            ready,
            secs(70),
            &Timing::default(),
            RestartPolicy::Always,
            down,
        );
        assert!(!s.state.is_ready());
        // Back up: ready again `readyAfter` later.
        let s = step(
            s.state,
            secs(80),
            &Timing::default(),
            RestartPolicy::Always,
            healthy(),
        );
        assert_eq!(s.state.ready_since(), Some(secs(75)));
    }

    proptest! {
        /// Stepping at any sequence of instants ends in the same state as one late step:
        /// a pod's history does not depend on how often the driver looks at it.
        #[test]
        fn stepping_often_or_once_gives_the_same_state(
            gaps in proptest::collection::vec(0i64..120, 1..40),
            crash in any::<bool>(),
        ) {
            let cond = Conditions {
                fault: if crash { PodFault::CrashLoop } else { PodFault::None },
                ..healthy()
            };
            let timing = Timing::default();
            let mut state = PodState::created(t0());
            let mut now = t0();
            for g in &gaps {
                now += SignedDuration::from_secs(*g);
                let s = step(state, now, &timing, RestartPolicy::Always, cond);
                if let Some(n) = s.next {
                    prop_assert!(n > now);
                }
                state = s.state;
            }
            let once = step(PodState::created(t0()), now, &timing, RestartPolicy::Always, cond);
            prop_assert_eq!(state, once.state);
        }
    }
}
