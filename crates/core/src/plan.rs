//! Release planning: which clusters go in which wave, in what order, and why.
//!
//! ```text
//!  selected clusters ──▶ group by the order keys, in their given sequence
//!                         (env: test → staging → canary → prod, then region: …)
//!                    ──▶ within a group: by risk score, least risky first
//!                         score = size·w + importance·w + past failures·w  (+ name, for ties)
//!                    ──▶ cut into waves: counts or percentages of the selection, never
//!                         mixing values of the boundary key in one wave (optional); the last
//!                         wave spec repeats until every cluster is placed
//!                    ──▶ Plan { waves[ { clusters + why, approval, bake } ] }
//! ```
//!
//! The key decision: planning is a pure function of the clusters' labels and sizes and the
//! strategy, so the same release always gets the same plan (a restart re-plans identically),
//! `shoal plan` can show it before anything runs, and its guarantees — every selected
//! cluster in exactly one wave, order keys respected, no wave larger than its budget — are
//! property-tested.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A cluster as planning sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Nodes in the cluster (bigger is riskier).
    pub nodes: u32,
    /// Past failed releases on this cluster (more is riskier).
    pub failures: u32,
}

/// The annotation counting a cluster's past failed releases (raises its risk score).
pub const FAILED_RELEASES: &str = "shoal.io/failed-releases";

/// The clusters a release covers, as planning sees them (nodes from
/// `status.nodeCount`, past failures from the [`FAILED_RELEASES`] annotation).
pub fn candidates(clusters: &[crate::kinds::Cluster]) -> Vec<Candidate> {
    clusters
        .iter()
        .map(|c| Candidate {
            name: c.metadata.name.clone().unwrap_or_default(),
            labels: c.metadata.labels.clone().unwrap_or_default(),
            nodes: c
                .status
                .as_ref()
                .and_then(|s| s.node_count)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            failures: c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(FAILED_RELEASES))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
        .collect()
}

/// One order key: clusters are grouped by this label's value, in `values` order; values
/// not listed come after, alphabetically; clusters without the label come last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderKey {
    pub label: String,
    pub values: Vec<String>,
}

/// How big a wave is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaveSize {
    Count(u32),
    /// Percent (1–100) of all selected clusters, rounded up.
    Percent(u32),
}

/// One wave of the strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaveSpec {
    pub size: WaveSize,
    /// A human approves before the wave starts.
    pub approval: bool,
}

/// How the risk score weighs a cluster's attributes; all scores are lower-is-safer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    /// Per 100 nodes.
    pub size: f64,
    /// Per step of importance: the `tier` label, 1 = most important (tiers 1..=5 score
    /// 5..=1; no tier scores 0).
    pub importance: f64,
    /// Per past failure.
    pub failures: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            size: 1.0,
            importance: 2.0,
            failures: 3.0,
        }
    }
}

/// The planning part of a release strategy.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Strategy {
    pub order: Vec<OrderKey>,
    pub waves: Vec<WaveSpec>,
    /// Never put two values of this label in one wave (usually the first order key, `env`):
    /// a wave ends early where the value changes.
    pub wave_boundary: Option<String>,
    pub weights: Weights,
}

/// A cluster's place in the plan, and why it is there.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    pub name: String,
    /// The cluster's value of each order key (`""` when it has none).
    pub group: Vec<String>,
    pub score: f64,
    pub why: String,
}

/// One wave of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Wave {
    pub clusters: Vec<Placed>,
    pub approval: bool,
}

impl Wave {
    /// What the wave's clusters have in common under the order keys `keys` (the labels
    /// `Placed::group` holds values of, in that order), in words: `"30 clusters of
    /// env=staging, 3 regions"`. A key every cluster has the same value of is named with
    /// it; a key they differ on is counted (`3 regions`, and `+2 without region` for
    /// clusters that lack it); a key none of them has is left out. Never the first
    /// cluster's values standing in for the rest.
    pub fn summary(&self, keys: &[&str]) -> String {
        let n = self.clusters.len();
        let clusters = format!("{n} cluster{}", if n == 1 { "" } else { "s" });
        let mut parts = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let values: Vec<&str> = self
                .clusters
                .iter()
                .map(|c| c.group.get(i).map_or("", String::as_str))
                .collect();
            let without = values.iter().filter(|v| v.is_empty()).count();
            let distinct: std::collections::BTreeSet<&str> =
                values.iter().copied().filter(|v| !v.is_empty()).collect();
            let part = match (distinct.len(), without) {
                (0, _) => continue,
                (1, 0) => format!("{key}={}", distinct.first().copied().unwrap_or_default()),
                (d, _) => {
                    let mut p = count_of(d, key);
                    if without > 0 {
                        let _ = write!(p, " (+{without} without {key})");
                    }
                    p
                }
            };
            parts.push(part);
        }
        if parts.is_empty() {
            format!("{clusters}, least risky first")
        } else {
            format!("{clusters} of {}", parts.join(", "))
        }
    }
}

/// `3 regions`, `1 env`; a label that does not pluralise as a word (`team.io/owner`,
/// `business`) is counted as `2 values of business`.
fn count_of(n: usize, label: &str) -> String {
    let word = !label.is_empty()
        && label.chars().all(|c| c.is_ascii_alphabetic())
        && !label.ends_with('s');
    match (word, n) {
        (true, 1) => format!("1 {label}"),
        (true, _) => format!("{n} {label}s"),
        (false, 1) => format!("1 value of {label}"),
        (false, _) => format!("{n} values of {label}"),
    }
}

/// The computed plan.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Plan {
    pub waves: Vec<Wave>,
}

impl Plan {
    pub fn cluster_count(&self) -> usize {
        self.waves.iter().map(|w| w.clusters.len()).sum()
    }
}

/// Why a strategy cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("strategy.waves[{index}]: {problem}")]
    Wave { index: usize, problem: String },
    #[error("strategy.waves: at least one wave is required")]
    NoWaves,
}

/// Checks the strategy's waves.
///
/// # Errors
/// [`PlanError`] naming the wave: a zero count, a percentage outside 1–100.
pub fn check(strategy: &Strategy) -> Result<(), PlanError> {
    if strategy.waves.is_empty() {
        return Err(PlanError::NoWaves);
    }
    for (index, w) in strategy.waves.iter().enumerate() {
        let problem = match w.size {
            WaveSize::Count(0) => Some("count must be at least 1".to_string()),
            WaveSize::Percent(p) if p == 0 || p > 100 => {
                Some(format!("{p}%: a percentage must be 1–100"))
            }
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(PlanError::Wave { index, problem });
        }
    }
    Ok(())
}

/// A cluster's rank under each order key (position, then the unlisted value itself).
type GroupRanks = Vec<(usize, String)>;

/// The rank of `value` for an order key: its position in `values`, else after them.
fn rank(key: &OrderKey, value: Option<&String>) -> (usize, String) {
    match value {
        Some(v) => match key.values.iter().position(|x| x == v) {
            Some(i) => (i, String::new()),
            None => (key.values.len(), v.clone()),
        },
        None => (key.values.len() + 1, String::new()),
    }
}

/// Lower is safer.
fn score(c: &Candidate, w: &Weights) -> f64 {
    let importance = c
        .labels
        .get("tier")
        .and_then(|t| t.parse::<u32>().ok())
        .map_or(0.0, |t| f64::from(6u32.saturating_sub(t.clamp(1, 5))));
    f64::from(c.nodes) / 100.0 * w.size
        + importance * w.importance
        + f64::from(c.failures) * w.failures
}

/// Plans the waves of a release over `clusters`.
///
/// # Errors
/// [`PlanError`] when the strategy's waves are invalid.
pub fn plan(clusters: &[Candidate], strategy: &Strategy) -> Result<Plan, PlanError> {
    check(strategy)?;
    let total = clusters.len();
    // Sort by (group ranks, score, name): one pass, O(n log n).
    let mut keyed: Vec<(GroupRanks, f64, &Candidate)> = clusters
        .iter()
        .map(|c| {
            let ranks = strategy
                .order
                .iter()
                .map(|k| rank(k, c.labels.get(&k.label)))
                .collect();
            (ranks, score(c, &strategy.weights), c)
        })
        .collect();
    keyed.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.partial_cmp(&b.1).unwrap_or(Ordering::Equal))
            .then_with(|| a.2.name.cmp(&b.2.name))
    });
    let boundary_of = |c: &Candidate| {
        strategy
            .wave_boundary
            .as_ref()
            .map(|l| c.labels.get(l).cloned().unwrap_or_default())
    };
    let mut waves: Vec<Wave> = Vec::new();
    let mut i = 0;
    let mut spec_index = 0;
    while i < keyed.len() {
        let spec = &strategy.waves[spec_index.min(strategy.waves.len() - 1)];
        let budget = match spec.size {
            WaveSize::Count(n) => n as usize,
            WaveSize::Percent(p) => (total * p as usize).div_ceil(100),
        }
        .max(1);
        let first_boundary = boundary_of(keyed[i].2);
        let mut members = Vec::new();
        while i < keyed.len() && members.len() < budget {
            let (ranks, s, c) = &keyed[i];
            if !members.is_empty() && boundary_of(c) != first_boundary {
                break;
            }
            let group: Vec<String> = strategy
                .order
                .iter()
                .map(|k| c.labels.get(&k.label).cloned().unwrap_or_default())
                .collect();
            let mut why = String::new();
            for (k, (r, _)) in strategy.order.iter().zip(ranks) {
                let v = c.labels.get(&k.label).map_or("<none>", String::as_str);
                let _ = write!(why, "{}={v} (#{}), ", k.label, r + 1);
            }
            let _ = write!(
                why,
                "risk {s:.1}: {} nodes, tier {}, {} past failures",
                c.nodes,
                c.labels.get("tier").map_or("-", String::as_str),
                c.failures
            );
            members.push(Placed {
                name: c.name.clone(),
                group,
                score: *s,
                why,
            });
            i += 1;
        }
        waves.push(Wave {
            clusters: members,
            approval: spec.approval,
        });
        spec_index += 1;
    }
    Ok(Plan { waves })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{Just, any, prop_assert, prop_assert_eq, prop_oneof, proptest};
    use proptest::strategy::Strategy as Gen;

    fn mk(name: &str, env: &str, region: &str, nodes: u32, tier: u32) -> Candidate {
        Candidate {
            name: name.into(),
            labels: [("env", env), ("region", region)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(std::iter::once(("tier".to_string(), tier.to_string())))
                .collect(),
            nodes,
            failures: 0,
        }
    }

    fn env_order() -> Vec<OrderKey> {
        vec![OrderKey {
            label: "env".into(),
            values: vec!["test".into(), "staging".into(), "prod".into()],
        }]
    }

    #[test]
    fn environments_go_in_their_sequence_and_small_unimportant_clusters_first() {
        let clusters = vec![
            mk("prod-big", "prod", "a", 500, 1),
            mk("prod-small", "prod", "a", 10, 3),
            mk("test-1", "test", "a", 10, 5),
            mk("staging-1", "staging", "a", 10, 5),
        ];
        let strategy = Strategy {
            order: env_order(),
            waves: vec![WaveSpec {
                size: WaveSize::Count(1),
                approval: false,
            }],
            wave_boundary: Some("env".into()),
            ..Strategy::default()
        };
        let p = plan(&clusters, &strategy).unwrap();
        let order: Vec<&str> = p
            .waves
            .iter()
            .flat_map(|w| w.clusters.iter().map(|c| c.name.as_str()))
            .collect();
        assert_eq!(order, vec!["test-1", "staging-1", "prod-small", "prod-big"]);
        assert!(
            p.waves[3].clusters[0].why.contains("env=prod (#3)"),
            "{:?}",
            p.waves[3]
        );
    }

    fn mk_wave(groups: &[(&str, &str)]) -> Wave {
        Wave {
            clusters: groups
                .iter()
                .enumerate()
                .map(|(i, (env, region))| Placed {
                    name: format!("c{i}"),
                    group: vec![env.to_string(), region.to_string()],
                    score: 0.0,
                    why: String::new(),
                })
                .collect(),
            approval: false,
        }
    }

    #[test]
    fn a_wave_over_three_regions_is_labelled_by_what_all_its_clusters_share() {
        let w = mk_wave(&[
            ("staging", "cn-hangzhou"),
            ("staging", "cn-shanghai"),
            ("staging", "cn-beijing"),
            ("staging", "cn-hangzhou"),
        ]);
        assert_eq!(
            w.summary(&["env", "region"]),
            "4 clusters of env=staging, 3 regions"
        );
        let one = mk_wave(&[("prod", "cn-hangzhou"), ("prod", "cn-hangzhou")]);
        assert_eq!(
            one.summary(&["env", "region"]),
            "2 clusters of env=prod, region=cn-hangzhou"
        );
    }

    #[test]
    fn a_mixed_wave_counts_every_key_and_the_clusters_without_it() {
        let w = mk_wave(&[("test", "a"), ("prod", ""), ("prod", "b")]);
        assert_eq!(
            w.summary(&["env", "region"]),
            "3 clusters of 2 envs, 2 regions (+1 without region)"
        );
        let none = mk_wave(&[("", ""), ("", "")]);
        assert_eq!(
            none.summary(&["env", "region"]),
            "2 clusters, least risky first"
        );
        assert_eq!(
            mk_wave(&[("a", "x")]).summary(&[]),
            "1 cluster, least risky first"
        );
        let w = mk_wave(&[("a", "x"), ("b", "x")]);
        assert_eq!(
            w.summary(&["business", "region"]),
            "2 clusters of 2 values of business, region=x"
        );
    }

    #[test]
    fn a_wave_does_not_cross_an_environment_boundary() {
        let clusters: Vec<Candidate> = (0..3)
            .map(|i| mk(&format!("t{i}"), "test", "a", 10, 5))
            .chain((0..3).map(|i| mk(&format!("p{i}"), "prod", "a", 10, 5)))
            .collect();
        let strategy = Strategy {
            order: env_order(),
            waves: vec![WaveSpec {
                size: WaveSize::Count(4),
                approval: false,
            }],
            wave_boundary: Some("env".into()),
            ..Strategy::default()
        };
        let sizes: Vec<usize> = plan(&clusters, &strategy)
            .unwrap()
            .waves
            .iter()
            .map(|w| w.clusters.len())
            .collect();
        assert_eq!(sizes, vec![3, 3]);
    }

    #[test]
    fn bad_wave_sizes_are_refused_naming_the_wave() {
        let s = Strategy {
            waves: vec![
                WaveSpec {
                    size: WaveSize::Count(1),
                    approval: false,
                },
                WaveSpec {
                    size: WaveSize::Percent(140),
                    approval: false,
                },
            ],
            ..Strategy::default()
        };
        assert_eq!(
            plan(&[], &s).unwrap_err().to_string(),
            "strategy.waves[1]: 140%: a percentage must be 1–100"
        );
        assert_eq!(
            plan(&[], &Strategy::default()).unwrap_err(),
            PlanError::NoWaves
        );
    }

    fn candidates() -> impl Gen<Value = Vec<Candidate>> {
        let envs = prop_oneof![Just("test"), Just("staging"), Just("prod"), Just("dev")];
        let regions = prop_oneof![Just("a"), Just("b"), Just("c")];
        proptest::collection::vec((envs, regions, 1u32..1000, 1u32..6, 0u32..4), 0..80).prop_map(
            |v| {
                v.into_iter()
                    .enumerate()
                    .map(|(i, (e, r, n, t, f))| {
                        let mut c = mk(&format!("c{i:03}"), e, r, n, t);
                        c.failures = f;
                        c
                    })
                    .collect()
            },
        )
    }

    fn strategies() -> impl Gen<Value = Strategy> {
        let size = prop_oneof![
            (1u32..10).prop_map(WaveSize::Count),
            (1u32..=100).prop_map(WaveSize::Percent)
        ];
        (
            proptest::collection::vec((size, any::<bool>()), 1..5),
            any::<bool>(),
        )
            .prop_map(|(waves, boundary)| Strategy {
                order: env_order(),
                waves: waves
                    .into_iter()
                    .map(|(size, approval)| WaveSpec { size, approval })
                    .collect(),
                wave_boundary: boundary.then(|| "env".into()),
                weights: Weights::default(),
            })
    }

    proptest! {
        #[test]
        fn every_cluster_is_in_exactly_one_wave_in_order_within_budget(
            clusters in candidates(), strategy in strategies()
        ) {
            let p = plan(&clusters, &strategy).unwrap();
            // Exactly once.
            let mut seen: Vec<&str> = p.waves.iter().flat_map(|w| w.clusters.iter().map(|c| c.name.as_str())).collect();
            seen.sort_unstable();
            let mut want: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
            want.sort_unstable();
            prop_assert_eq!(seen, want);
            // Order keys hold across the whole sequence.
            let flat: Vec<&Placed> = p.waves.iter().flat_map(|w| &w.clusters).collect();
            let env_rank = |c: &Placed| rank(&strategy.order[0], Some(&c.group[0]));
            for pair in flat.windows(2) {
                prop_assert!(env_rank(pair[0]) <= env_rank(pair[1]), "{:?} before {:?}", pair[0].name, pair[1].name);
                if env_rank(pair[0]) == env_rank(pair[1]) {
                    prop_assert!(pair[0].score <= pair[1].score);
                }
            }
            // Budgets: no wave larger than its spec; with a boundary, one env per wave.
            for (i, w) in p.waves.iter().enumerate() {
                prop_assert!(!w.clusters.is_empty());
                let spec = &strategy.waves[i.min(strategy.waves.len() - 1)];
                let budget = match spec.size {
                    WaveSize::Count(n) => n as usize,
                    WaveSize::Percent(pc) => (clusters.len() * pc as usize).div_ceil(100).max(1),
                };
                prop_assert!(w.clusters.len() <= budget);
                prop_assert_eq!(w.approval, spec.approval);
                if strategy.wave_boundary.is_some() {
                    prop_assert!(w.clusters.iter().all(|c| c.group[0] == w.clusters[0].group[0]));
                }
            }
            // The same input plans the same way.
            prop_assert_eq!(plan(&clusters, &strategy).unwrap(), p);
        }

        #[test]
        fn a_wave_summary_claims_only_what_every_cluster_in_it_shares(
            clusters in candidates(), strategy in strategies()
        ) {
            let keys: Vec<&str> = strategy.order.iter().map(|k| k.label.as_str()).collect();
            for w in plan(&clusters, &strategy).unwrap().waves {
                let summary = w.summary(&keys);
                for (i, key) in keys.iter().enumerate() {
                    let prefix = format!("{key}=");
                    let claimed = summary
                        .split_once(" of ")
                        .map_or("", |(_, rest)| rest)
                        .split(", ")
                        .find_map(|p| p.strip_prefix(prefix.as_str()));
                    if let Some(v) = claimed {
                        prop_assert!(w.clusters.iter().all(|c| c.group[i] == v), "{summary}: not all {key}={v}");
                    }
                }
                let n = w.clusters.len();
                let counted = format!("{n} cluster{}", if n == 1 { "" } else { "s" });
                prop_assert!(summary.starts_with(&counted), "{}", summary);
            }
        }
    }
}
