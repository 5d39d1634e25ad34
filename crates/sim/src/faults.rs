//! Fault profiles: what goes wrong in the simulated fleet, where, when and how often.
//!
//! ```yaml
//! seed: 7
//! faults:
//!   - podCrashLoop:   {name: bad-on-5.10, version: bad, nodeSelector: "shoal.io/kernel=5.10", probability: 0.3}
//!   - podNotReady:    {name: never-ready, image: "agent:v2", probability: 1}
//!   - nodeNotReady:   {name: zone-b-down, zone: cn-hangzhou-b, after: 10m, duration: 30m}
//!   - nodeNotReady:   {name: flaky, rate: 0.01, outage: 10m}          # per node-hour
//!   - apiServer:      {name: slow-bj, clusterSelector: "region=cn-beijing", latency: 200ms, errorRate: 0.05, errorCode: 503}
//!   - kubeletStall:   {name: stalls, probability: 0.02, after: 1h, duration: 5m}
//! ```
//!
//! A [`FaultProfile`] is the YAML; [`FaultModel`] is the profile compiled against the
//! simulation's start (selectors parsed, durations resolved) and answers questions:
//! [`FaultModel::pod_fault`], [`FaultModel::node_faults`], [`FaultModel::api_fault`].
//!
//! The key decision: **no random state**. Every decision hashes (seed, fault name,
//! cluster, node, image or time slot) into a number in `[0, 1)` and compares it with the
//! fault's probability. The same seed therefore gives the same fleet no matter in which
//! order, how often or on how many threads the questions are asked, and a profile can be
//! swapped at run time without replaying anything. Rate-based node failures use the same
//! trick over time slots (one outage-length slot per node, phase-shifted per node).

use std::collections::BTreeMap;
use std::hash::Hasher;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use shoal_core::selector::LabelSelector;
use shoal_core::taskflow::duration;

/// The node label holding a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Why a fault profile was rejected.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("failed to parse fault profile: {0}")]
    Yaml(#[from] serde_saphyr::Error),
    #[error("invalid fault profile: {field}: {detail}")]
    Invalid { field: String, detail: String },
}

pub type Result<T, E = FaultError> = std::result::Result<T, E>;

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> FaultError {
    FaultError::Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

/// A fault profile as written in YAML.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultProfile {
    /// Seed of every decision; the same seed gives the same faults.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// One fault, keyed by its kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Fault {
    /// Containers of a matching image crash shortly after starting (CrashLoopBackOff).
    PodCrashLoop(PodFaultSpec),
    /// Containers of a matching image run but never pass readiness.
    PodNotReady(PodFaultSpec),
    /// Matching nodes go NotReady: all at once for a window, or each at a rate.
    NodeNotReady(NodeNotReadySpec),
    /// A matching cluster's API server is slow and/or answers errors.
    ApiServer(ApiServerSpec),
    /// Kubelets of matching nodes stop making progress for a window.
    KubeletStall(KubeletStallSpec),
}

/// Which pods a pod fault hits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodFaultSpec {
    pub name: String,
    /// Full image reference that is faulty (`registry/agent:bad`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image tag that is faulty (`bad` matches `any/repo:bad`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Label selector over node labels (empty: every node).
    #[serde(default)]
    pub node_selector: String,
    /// Label selector over cluster attribute labels (empty: every cluster).
    #[serde(default)]
    pub cluster_selector: String,
    /// Fraction of matching (cluster, node, image) combinations hit (default 1).
    #[serde(default = "one")]
    pub probability: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// Which nodes go NotReady, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeNotReadySpec {
    pub name: String,
    /// Only nodes of this zone (`topology.kubernetes.io/zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default)]
    pub node_selector: String,
    #[serde(default)]
    pub cluster_selector: String,
    /// Failures per node per hour; unset means every matching node is down for the
    /// whole window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// How long one rate-based failure lasts (required with `rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// How a cluster's API server misbehaves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServerSpec {
    pub name: String,
    #[serde(default)]
    pub cluster_selector: String,
    /// Added to every request (`200ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// Fraction of requests answered with `errorCode`.
    #[serde(default)]
    pub error_rate: f64,
    /// HTTP status of the injected errors (default 500).
    #[serde(default = "default_error_code")]
    pub error_code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// Which kubelets stall.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeletStallSpec {
    pub name: String,
    #[serde(default)]
    pub node_selector: String,
    #[serde(default)]
    pub cluster_selector: String,
    /// Fraction of matching nodes whose kubelet stalls (default 1).
    #[serde(default = "one")]
    pub probability: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

fn one() -> f64 {
    1.0
}

fn default_error_code() -> u16 {
    500
}

impl FaultProfile {
    /// Parses a profile from YAML.
    ///
    /// # Errors
    /// [`FaultError::Yaml`] for syntax errors, unknown fields or wrong types (the message
    /// names the field and its line).
    pub fn from_yaml(text: &str) -> Result<Self> {
        Ok(serde_saphyr::from_str(text)?)
    }
}

/// What happens to a pod's containers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PodFault {
    #[default]
    None,
    /// The container exits shortly after every start.
    CrashLoop,
    /// The container runs but readiness never passes.
    NeverReady,
}

/// The fault state of a node at an instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeFaults {
    pub not_ready: bool,
    pub kubelet_stalled: bool,
    /// When this answer may change next (a window opens or closes); `None`: never.
    pub next_change: Option<Timestamp>,
}

/// What happens to one API request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApiFault {
    pub latency: SignedDuration,
    /// An HTTP status to answer instead of serving the request.
    pub error: Option<u16>,
}

/// A cluster, as faults see it.
#[derive(Clone, Copy, Debug)]
pub struct ClusterRef<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// A node, as faults see it.
#[derive(Clone, Copy, Debug)]
pub struct NodeRef<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// A time window `[start, end)`; `end` `None` is open-ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    start: Timestamp,
    end: Option<Timestamp>,
}

impl Window {
    fn contains(&self, t: Timestamp) -> bool {
        t >= self.start && self.end.is_none_or(|e| t < e)
    }

    /// The next boundary strictly after `t`.
    fn next_edge(&self, t: Timestamp) -> Option<Timestamp> {
        if t < self.start {
            Some(self.start)
        } else {
            self.end.filter(|e| *e > t)
        }
    }
}

#[derive(Clone, Debug)]
struct Scope {
    name: String,
    clusters: LabelSelector,
    nodes: LabelSelector,
    window: Window,
}

impl Scope {
    fn matches(&self, c: ClusterRef<'_>, n: NodeRef<'_>) -> bool {
        self.clusters.matches(c.labels) && self.nodes.matches(n.labels)
    }
}

#[derive(Clone, Debug)]
enum Compiled {
    Pod {
        scope: Scope,
        effect: PodFault,
        image: Option<String>,
        version: Option<String>,
        probability: f64,
    },
    NodeDown {
        scope: Scope,
        zone: Option<String>,
        /// (probability of an outage per slot, slot length).
        rate: Option<(f64, SignedDuration)>,
    },
    Api {
        scope: Scope,
        latency: SignedDuration,
        error_rate: f64,
        error_code: u16,
    },
    Stall {
        scope: Scope,
        probability: f64,
    },
}

/// A profile compiled for a simulation that started at `epoch`.
#[derive(Clone, Debug)]
pub struct FaultModel {
    seed: u64,
    faults: Vec<Compiled>,
}

/// Parses an optional Go-style duration field.
fn parse_duration(field: &str, v: Option<&str>) -> Result<Option<SignedDuration>> {
    let Some(v) = v else { return Ok(None) };
    let d = duration::parse(v).map_err(|e| invalid(field, e.to_string()))?;
    if d.is_negative() {
        return Err(invalid(field, format!("{v:?}: must not be negative")));
    }
    Ok(Some(d))
}

fn parse_selector(field: &str, s: &str) -> Result<LabelSelector> {
    LabelSelector::parse(s).map_err(|e| invalid(field, e.to_string()))
}

fn check_fraction(field: &str, v: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(field, format!("{v}: must be between 0 and 1")))
    }
}

struct ScopeFields<'a> {
    name: &'a str,
    clusters: &'a str,
    nodes: &'a str,
    after: Option<&'a str>,
    duration: Option<&'a str>,
}

fn compile_scope(path: &str, f: ScopeFields<'_>, epoch: Timestamp) -> Result<Scope> {
    if f.name.trim().is_empty() {
        return Err(invalid(format!("{path}.name"), "must not be empty"));
    }
    let after = parse_duration(&format!("{path}.after"), f.after)?.unwrap_or_default();
    let length = parse_duration(&format!("{path}.duration"), f.duration)?;
    let start = epoch.saturating_add(after).unwrap_or(epoch);
    Ok(Scope {
        name: f.name.to_string(),
        clusters: parse_selector(&format!("{path}.clusterSelector"), f.clusters)?,
        nodes: parse_selector(&format!("{path}.nodeSelector"), f.nodes)?,
        window: Window {
            start,
            end: length.map(|l| start.saturating_add(l).unwrap_or(start)),
        },
    })
}

impl FaultModel {
    /// A model with no faults.
    pub fn none() -> Self {
        FaultModel {
            seed: 0,
            faults: Vec::new(),
        }
    }

    /// Compiles `profile`; `after` offsets count from `epoch` (the simulation's start).
    ///
    /// # Errors
    /// [`FaultError::Invalid`] naming the field (`faults[2].podCrashLoop.probability`)
    /// for bad selectors, durations, probabilities or missing fields.
    pub fn compile(profile: &FaultProfile, epoch: Timestamp) -> Result<Self> {
        let mut faults = Vec::with_capacity(profile.faults.len());
        let mut names = std::collections::BTreeSet::new();
        for (i, fault) in profile.faults.iter().enumerate() {
            let compiled = match fault {
                Fault::PodCrashLoop(s) | Fault::PodNotReady(s) => {
                    let (kind, effect) = match fault {
                        Fault::PodCrashLoop(_) => ("podCrashLoop", PodFault::CrashLoop),
                        _ => ("podNotReady", PodFault::NeverReady),
                    };
                    let path = format!("faults[{i}].{kind}");
                    if s.image.is_none() && s.version.is_none() {
                        return Err(invalid(
                            format!("{path}.version"),
                            "one of image or version is required",
                        ));
                    }
                    Compiled::Pod {
                        scope: compile_scope(
                            &path,
                            ScopeFields {
                                name: &s.name,
                                clusters: &s.cluster_selector,
                                nodes: &s.node_selector,
                                after: s.after.as_deref(),
                                duration: s.duration.as_deref(),
                            },
                            epoch,
                        )?,
                        effect,
                        image: s.image.clone(),
                        version: s.version.clone(),
                        probability: check_fraction(&format!("{path}.probability"), s.probability)?,
                    }
                }
                Fault::NodeNotReady(s) => {
                    let path = format!("faults[{i}].nodeNotReady");
                    let scope = compile_scope(
                        &path,
                        ScopeFields {
                            name: &s.name,
                            clusters: &s.cluster_selector,
                            nodes: &s.node_selector,
                            after: s.after.as_deref(),
                            duration: s.duration.as_deref(),
                        },
                        epoch,
                    )?;
                    let outage = parse_duration(&format!("{path}.outage"), s.outage.as_deref())?;
                    let rate = match (s.rate, outage) {
                        (None, None) => None,
                        (None, Some(_)) => {
                            return Err(invalid(
                                format!("{path}.rate"),
                                "required when outage is set",
                            ));
                        }
                        (Some(_), None) => {
                            return Err(invalid(
                                format!("{path}.outage"),
                                "required when rate is set",
                            ));
                        }
                        (Some(r), Some(o)) => {
                            if !(r.is_finite() && r >= 0.0) {
                                return Err(invalid(
                                    format!("{path}.rate"),
                                    format!("{r}: must be a number of failures per node-hour >= 0"),
                                ));
                            }
                            if o.is_zero() {
                                return Err(invalid(
                                    format!("{path}.outage"),
                                    "must be longer than 0s",
                                ));
                            }
                            // Poisson arrivals at `r` per hour: the chance of at least one
                            // failure in a slot as long as one outage.
                            let hours = o.as_secs_f64() / 3600.0;
                            Some((1.0 - (-r * hours).exp(), o))
                        }
                    };
                    Compiled::NodeDown {
                        scope,
                        zone: s.zone.clone(),
                        rate,
                    }
                }
                Fault::ApiServer(s) => {
                    let path = format!("faults[{i}].apiServer");
                    if !(100..=599).contains(&s.error_code) {
                        return Err(invalid(
                            format!("{path}.errorCode"),
                            format!("{}: must be an HTTP status code", s.error_code),
                        ));
                    }
                    Compiled::Api {
                        scope: compile_scope(
                            &path,
                            ScopeFields {
                                name: &s.name,
                                clusters: &s.cluster_selector,
                                nodes: "",
                                after: s.after.as_deref(),
                                duration: s.duration.as_deref(),
                            },
                            epoch,
                        )?,
                        latency: parse_duration(&format!("{path}.latency"), s.latency.as_deref())?
                            .unwrap_or_default(),
                        error_rate: check_fraction(&format!("{path}.errorRate"), s.error_rate)?,
                        error_code: s.error_code,
                    }
                }
                Fault::KubeletStall(s) => {
                    let path = format!("faults[{i}].kubeletStall");
                    Compiled::Stall {
                        scope: compile_scope(
                            &path,
                            ScopeFields {
                                name: &s.name,
                                clusters: &s.cluster_selector,
                                nodes: &s.node_selector,
                                after: s.after.as_deref(),
                                duration: s.duration.as_deref(),
                            },
                            epoch,
                        )?,
                        probability: check_fraction(&format!("{path}.probability"), s.probability)?,
                    }
                }
            };
            let name = compiled.scope().name.clone();
            if !names.insert(name.clone()) {
                return Err(invalid(
                    format!("faults[{i}].name"),
                    format!("{name:?}: duplicate fault name (names seed the decisions)"),
                ));
            }
            faults.push(compiled);
        }
        Ok(FaultModel {
            seed: profile.seed,
            faults,
        })
    }

    /// What happens to containers running `image` on `node` of `cluster` at `now`.
    /// A crash loop wins over a readiness failure when both apply.
    pub fn pod_fault(
        &self,
        cluster: ClusterRef<'_>,
        node: NodeRef<'_>,
        image: &str,
        now: Timestamp,
    ) -> PodFault {
        let mut out = PodFault::None;
        for f in &self.faults {
            let Compiled::Pod {
                scope,
                effect,
                image: want_image,
                version,
                probability,
            } = f
            else {
                continue;
            };
            if out == PodFault::CrashLoop || (out == *effect) {
                continue;
            }
            let image_ok = want_image.as_deref().is_none_or(|w| w == image);
            let version_ok = version
                .as_deref()
                .is_none_or(|v| image_tag(image) == Some(v));
            if image_ok
                && version_ok
                && scope.window.contains(now)
                && scope.matches(cluster, node)
                && self.draw(&scope.name, &[cluster.name, node.name, image]) < *probability
            {
                out = *effect;
            }
        }
        out
    }

    /// Whether `node` is NotReady and/or its kubelet stalled at `now`.
    pub fn node_faults(
        &self,
        cluster: ClusterRef<'_>,
        node: NodeRef<'_>,
        now: Timestamp,
    ) -> NodeFaults {
        let mut out = NodeFaults::default();
        let mut edge = |t: Option<Timestamp>| {
            if let Some(t) = t {
                out.next_change = Some(out.next_change.map_or(t, |n: Timestamp| n.min(t)));
            }
        };
        for f in &self.faults {
            let scope = f.scope();
            if matches!(f, Compiled::Pod { .. } | Compiled::Api { .. })
                || !scope.matches(cluster, node)
            {
                continue;
            }
            edge(scope.window.next_edge(now));
            if !scope.window.contains(now) {
                continue;
            }
            match f {
                Compiled::NodeDown { zone, rate, .. } => {
                    if zone
                        .as_deref()
                        .is_some_and(|z| node.labels.get(ZONE_LABEL).map(String::as_str) != Some(z))
                    {
                        continue;
                    }
                    match rate {
                        None => out.not_ready = true,
                        Some((p, slot)) => {
                            let (down, slot_end) =
                                self.slot_outage(&scope.name, cluster, node, *p, *slot, now);
                            out.not_ready |= down;
                            edge(Some(slot_end));
                        }
                    }
                }
                Compiled::Stall { probability, .. } => {
                    if self.draw(&scope.name, &[cluster.name, node.name]) < *probability {
                        out.kubelet_stalled = true;
                    }
                }
                Compiled::Pod { .. } | Compiled::Api { .. } => {}
            }
        }
        out
    }

    /// What happens to API request number `request` (any counter the caller keeps per
    /// cluster) sent to `cluster` at `now`. Latencies of several faults add up.
    pub fn api_fault(&self, cluster: ClusterRef<'_>, request: u64, now: Timestamp) -> ApiFault {
        let mut out = ApiFault::default();
        let request = request.to_le_bytes();
        for f in &self.faults {
            let Compiled::Api {
                scope,
                latency,
                error_rate,
                error_code,
            } = f
            else {
                continue;
            };
            if !scope.window.contains(now) || !scope.clusters.matches(cluster.labels) {
                continue;
            }
            out.latency = out.latency.saturating_add(*latency);
            if out.error.is_none()
                && self.draw_bytes(&scope.name, &[cluster.name.as_bytes(), &request]) < *error_rate
            {
                out.error = Some(*error_code);
            }
        }
        out
    }

    /// Rate-based outages: time is cut into slots one outage long, shifted by a per-node
    /// phase so nodes do not fail in lockstep; a node is down for a whole slot with
    /// probability `p`. Returns (down now, end of the current slot).
    fn slot_outage(
        &self,
        name: &str,
        cluster: ClusterRef<'_>,
        node: NodeRef<'_>,
        p: f64,
        slot: SignedDuration,
        now: Timestamp,
    ) -> (bool, Timestamp) {
        let slot_ns = slot.as_nanos().max(1);
        let phase = (self.draw(name, &[cluster.name, node.name, "phase"]) * slot_ns as f64) as i128;
        let t = now.as_nanosecond() - phase;
        let k = t.div_euclid(slot_ns);
        let end_ns = (k + 1) * slot_ns + phase;
        let end = Timestamp::from_nanosecond(end_ns).unwrap_or(Timestamp::MAX);
        let k = k.to_le_bytes();
        let down = self.draw_bytes(name, &[cluster.name.as_bytes(), node.name.as_bytes(), &k]) < p;
        (down, end)
    }

    fn draw(&self, fault: &str, parts: &[&str]) -> f64 {
        let mut h = fnv::FnvHasher::with_key(0xcbf2_9ce4_8422_2325 ^ self.seed);
        write_part(&mut h, fault.as_bytes());
        for p in parts {
            write_part(&mut h, p.as_bytes());
        }
        unit_interval(h.finish())
    }

    fn draw_bytes(&self, fault: &str, parts: &[&[u8]]) -> f64 {
        let mut h = fnv::FnvHasher::with_key(0xcbf2_9ce4_8422_2325 ^ self.seed);
        write_part(&mut h, fault.as_bytes());
        for p in parts {
            write_part(&mut h, p);
        }
        unit_interval(h.finish())
    }
}

impl Compiled {
    fn scope(&self) -> &Scope {
        match self {
            Compiled::Pod { scope, .. }
            | Compiled::NodeDown { scope, .. }
            | Compiled::Api { scope, .. }
            | Compiled::Stall { scope, .. } => scope,
        }
    }
}

/// Length-prefixed, so `("ab", "c")` and `("a", "bc")` hash differently.
fn write_part(h: &mut fnv::FnvHasher, bytes: &[u8]) {
    h.write(&(bytes.len() as u64).to_le_bytes());
    h.write(bytes);
}

/// Maps a hash to `[0, 1)`. FNV-1a is stable across platforms and Rust releases (std's
/// hasher is not promised to be), but its high bits mix poorly on short inputs, so the
/// result goes through SplitMix64's finalizer first.
fn unit_interval(h: u64) -> f64 {
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The tag of an image reference (`repo/name:tag@digest` → `tag`), if any.
pub fn image_tag(image: &str) -> Option<&str> {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split_once(':').map(|(_, tag)| tag)
}

impl FaultModel {
    /// Whether any fault acts on API requests (so a healthy fleet's requests skip the
    /// per-request decision entirely).
    pub fn has_api_faults(&self) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f, Compiled::Api { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn epoch() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn mk_model(yaml: &str) -> FaultModel {
        FaultModel::compile(&FaultProfile::from_yaml(yaml).unwrap(), epoch()).unwrap()
    }

    fn compile_err(yaml: &str) -> String {
        match FaultProfile::from_yaml(yaml).map(|p| FaultModel::compile(&p, epoch())) {
            Err(e) => e.to_string(),
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(_)) => panic!("{yaml} should be rejected"),
        }
    }

    const BAD_ON_5_10: &str = r#"
seed: 42
faults:
  - podCrashLoop:
      name: bad-on-5.10
      version: bad
      nodeSelector: "shoal.io/kernel=5.10"
      probability: 0.3
"#;

    #[test]
    fn bad_version_crash_loops_on_kernel_5_10_at_the_configured_rate_and_nowhere_else() {
        let model = mk_model(BAD_ON_5_10);
        let cluster_labels = mk_labels(&[("env", "prod")]);
        let old = mk_labels(&[("shoal.io/kernel", "5.10")]);
        let new = mk_labels(&[("shoal.io/kernel", "6.6")]);
        let now = epoch();
        let (mut hit, mut total) = (0, 0);
        for c in 0..100 {
            let cname = format!("c-{c}");
            let cluster = ClusterRef {
                name: &cname,
                labels: &cluster_labels,
            };
            for n in 0..200 {
                let nname = format!("{cname}-n{n}");
                let on = |labels| NodeRef {
                    name: &nname,
                    labels,
                };
                total += 1;
                match model.pod_fault(cluster, on(&old), "reg/agent:bad", now) {
                    PodFault::CrashLoop => hit += 1,
                    PodFault::None => {}
                    other => panic!("unexpected {other:?}"),
                }
                assert_eq!(
                    model.pod_fault(cluster, on(&new), "reg/agent:bad", now),
                    PodFault::None
                );
                assert_eq!(
                    model.pod_fault(cluster, on(&old), "reg/agent:good", now),
                    PodFault::None
                );
            }
        }
        let rate = f64::from(hit) / f64::from(total);
        // 20,000 trials: the standard deviation of the rate is ~0.0032.
        assert!((rate - 0.3).abs() < 0.015, "observed rate {rate}");
    }

    #[test]
    fn the_same_seed_gives_the_same_decisions_and_another_seed_others() {
        let a = mk_model(BAD_ON_5_10);
        let b = mk_model(BAD_ON_5_10);
        let c = mk_model(&BAD_ON_5_10.replace("seed: 42", "seed: 43"));
        let cl = mk_labels(&[]);
        let node = mk_labels(&[("shoal.io/kernel", "5.10")]);
        let decide = |m: &FaultModel| -> Vec<PodFault> {
            (0..500)
                .map(|n| {
                    let name = format!("n{n}");
                    m.pod_fault(
                        ClusterRef {
                            name: "c",
                            labels: &cl,
                        },
                        NodeRef {
                            name: &name,
                            labels: &node,
                        },
                        "agent:bad",
                        epoch(),
                    )
                })
                .collect()
        };
        assert_eq!(decide(&a), decide(&b));
        assert_ne!(decide(&a), decide(&c));
    }

    #[test]
    fn a_zone_outage_downs_only_that_zone_inside_its_window() {
        let model = mk_model(
            "faults:\n  - nodeNotReady: {name: zone-b, zone: z-b, after: 10m, duration: 30m}\n",
        );
        let cl = mk_labels(&[]);
        let c = ClusterRef {
            name: "c",
            labels: &cl,
        };
        let b = mk_labels(&[(ZONE_LABEL, "z-b")]);
        let a = mk_labels(&[(ZONE_LABEL, "z-a")]);
        let at = |mins: i64| epoch() + SignedDuration::from_mins(mins);
        let nb = NodeRef {
            name: "n1",
            labels: &b,
        };
        let na = NodeRef {
            name: "n2",
            labels: &a,
        };
        let before = model.node_faults(c, nb, at(5));
        assert!(!before.not_ready);
        assert_eq!(before.next_change, Some(at(10)));
        let during = model.node_faults(c, nb, at(20));
        assert!(during.not_ready);
        assert_eq!(during.next_change, Some(at(40)));
        assert!(!model.node_faults(c, na, at(20)).not_ready);
        assert!(!model.node_faults(c, nb, at(40)).not_ready);
    }

    #[test]
    fn rate_based_node_failures_match_the_rate_over_a_large_fleet() {
        // 0.5 failures per node-hour, 6-minute outages: each slot is down with
        // p = 1 - e^(-0.05) ≈ 0.0488.
        let model =
            mk_model("seed: 1\nfaults:\n  - nodeNotReady: {name: flaky, rate: 0.5, outage: 6m}\n");
        let cl = mk_labels(&[]);
        let labels = mk_labels(&[]);
        let c = ClusterRef {
            name: "c",
            labels: &cl,
        };
        let now = epoch() + SignedDuration::from_hours(3);
        let mut down = 0;
        for n in 0..20_000 {
            let name = format!("n{n}");
            let f = model.node_faults(
                c,
                NodeRef {
                    name: &name,
                    labels: &labels,
                },
                now,
            );
            down += usize::from(f.not_ready);
            let next = f.next_change.unwrap();
            assert!(next > now && next <= now + SignedDuration::from_mins(6));
        }
        let frac = down as f64 / 20_000.0;
        assert!((frac - 0.0488).abs() < 0.008, "{frac}");
    }

    #[test]
    fn api_faults_hit_selected_clusters_at_their_error_rate() {
        let model = mk_model(
            "faults:\n  - apiServer: {name: slow, clusterSelector: region=bj, latency: 200ms, errorRate: 0.1, errorCode: 503}\n",
        );
        let bj = mk_labels(&[("region", "bj")]);
        let hz = mk_labels(&[("region", "hz")]);
        let c = ClusterRef {
            name: "c1",
            labels: &bj,
        };
        let errors = (0..10_000)
            .filter(|r| model.api_fault(c, *r, epoch()).error == Some(503))
            .count();
        assert!((800..1200).contains(&errors), "{errors}");
        assert_eq!(
            model.api_fault(c, 0, epoch()).latency,
            SignedDuration::from_millis(200)
        );
        let other = ClusterRef {
            name: "c2",
            labels: &hz,
        };
        assert_eq!(model.api_fault(other, 0, epoch()), ApiFault::default());
    }

    #[test]
    fn kubelet_stalls_hit_a_fraction_of_nodes_inside_the_window() {
        let model = mk_model(
            "faults:\n  - kubeletStall: {name: st, probability: 0.5, after: 1h, duration: 5m}\n",
        );
        let l = mk_labels(&[]);
        let c = ClusterRef {
            name: "c",
            labels: &l,
        };
        let stalled = |at: Timestamp| {
            (0..1000)
                .filter(|n| {
                    let name = format!("n{n}");
                    model
                        .node_faults(
                            c,
                            NodeRef {
                                name: &name,
                                labels: &l,
                            },
                            at,
                        )
                        .kubelet_stalled
                })
                .count()
        };
        assert_eq!(stalled(epoch()), 0);
        let inside = stalled(epoch() + SignedDuration::from_mins(62));
        assert!((400..600).contains(&inside), "{inside}");
        assert_eq!(stalled(epoch() + SignedDuration::from_mins(66)), 0);
    }

    #[test]
    fn bad_profiles_are_rejected_naming_the_field() {
        for (yaml, field) in [
            (
                "faults:\n  - podCrashLoop: {name: x, version: bad, probability: 1.5}\n",
                "faults[0].podCrashLoop.probability",
            ),
            (
                "faults:\n  - podNotReady: {name: x}\n",
                "faults[0].podNotReady.version",
            ),
            (
                "faults:\n  - nodeNotReady: {name: x, rate: 0.1}\n",
                "faults[0].nodeNotReady.outage",
            ),
            (
                "faults:\n  - kubeletStall: {name: x, after: soon}\n",
                "faults[0].kubeletStall.after",
            ),
            (
                "faults:\n  - apiServer: {name: x, clusterSelector: 'env in (a'}\n",
                "faults[0].apiServer.clusterSelector",
            ),
            (
                "faults:\n  - kubeletStall: {name: x}\n  - kubeletStall: {name: x}\n",
                "faults[1].name",
            ),
            (
                "faults:\n  - podCrashLoop: {name: x, versoin: bad}\n",
                "versoin",
            ),
            ("faults:\n  - meteorStrike: {name: x}\n", "meteorStrike"),
        ] {
            let err = compile_err(yaml);
            assert!(err.contains(field), "{yaml}: {err}");
        }
    }

    #[test]
    fn image_tags_ignore_registry_ports_and_digests() {
        assert_eq!(image_tag("reg:5000/agent:bad"), Some("bad"));
        assert_eq!(image_tag("agent:v1@sha256:abc"), Some("v1"));
        assert_eq!(image_tag("reg:5000/agent"), None);
    }
}
