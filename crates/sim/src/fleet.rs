//! The fleet definition: which simulated clusters exist, with which attributes and nodes.
//!
//! ```yaml
//! nodeProfiles:
//!   standard: {instanceType: ecs.g7.2xlarge, kernel: 5.10.134-16.al8.x86_64, osImage: "Alibaba Cloud Linux 3", kubeletVersion: v1.30.1}
//!   modern:   {instanceType: ecs.g8i.4xlarge, kernel: 6.6.71-3.al8.x86_64, …}
//! groups:
//!   - name: prod                      # cluster names: prod-<region>-<business>-<n>
//!     env: prod
//!     regions: [cn-hangzhou, cn-beijing]
//!     zones: [a, b, c]                # zone names: <region>-<suffix>
//!     businesses: [payments, search]
//!     tier: "1"
//!     clustersPer: 2                  # clusters per (region, business)
//!     nodesPerCluster: 100
//!     nodes: [{profile: standard, weight: 3}, {profile: modern, weight: 1}]
//! clusters:                           # explicit clusters, as `shoal release rehearse` copies them
//!   - name: prod-eu-1
//!     labels: {env: prod, region: eu-west-1, tier: "1"}
//!     nodes:                          # runs of nodes, in node order
//!       - {profile: standard, count: 2, zone: eu-west-1a}
//!       - {profile: modern, count: 1, zone: eu-west-1b, region: eu-west-1}
//! ```
//!
//! `groups` multiply out; `clusters` are taken as written (labels verbatim, nodes in the
//! order of their runs). Both go through the same node-class interning below, and a
//! cluster name may appear once across the two.
//!
//! [`expand`] turns a [`FleetSpec`] into a deterministic [`Fleet`]: clusters in a fixed
//! order, each with its attribute labels (the keys of
//! [`shoal_core::kinds::ATTRIBUTE_LABELS`]) and its nodes. [`uniform`] is the quick form
//! behind `shoal sim --clusters N --nodes M`.
//!
//! The key decision, for memory: a node is two integers. Everything nodes share — labels,
//! node info, capacity, taints — lives in a [`NodeClass`] per (region, zone, profile),
//! built once for the whole fleet and shared by `Arc`; node names are computed, not
//! stored. Expanding 10,000 clusters × 100 nodes allocates a few hundred label maps, not a
//! million. Nodes get their profile by smooth weighted round-robin, so a cluster of 100
//! nodes with weights 3:1 has exactly 75 and 25, spread evenly, and zones rotate.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Taint;
use serde::{Deserialize, Serialize};

use crate::faults::ZONE_LABEL;

/// The node label carrying a node's kernel as `major.minor` (`5.10`), which fault
/// profiles select on.
pub const KERNEL_LABEL: &str = "shoal.io/kernel";
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";

/// Why a fleet definition was rejected.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("failed to parse fleet definition: {0}")]
    Yaml(#[from] serde_saphyr::Error),
    #[error("invalid fleet definition: {field}: {detail}")]
    Invalid { field: String, detail: String },
}

pub type Result<T, E = FleetError> = std::result::Result<T, E>;

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> FleetError {
    FleetError::Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

/// A fleet definition file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetSpec {
    /// Named node profiles the groups refer to.
    #[serde(default)]
    pub node_profiles: BTreeMap<String, NodeProfile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<ClusterGroupSpec>,
    /// Explicit clusters, each with its own labels and nodes (expanded after `groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ExplicitCluster>,
}

/// What a kind of node looks like.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeProfile {
    pub instance_type: String,
    /// `nodeInfo.kernelVersion`, e.g. `5.10.134-16.al8.x86_64`.
    pub kernel: String,
    /// `nodeInfo.osImage`.
    #[serde(default = "default_os_image")]
    pub os_image: String,
    /// `nodeInfo.kubeletVersion`.
    #[serde(default = "default_kubelet_version")]
    pub kubelet_version: String,
    #[serde(default = "default_runtime")]
    pub container_runtime_version: String,
    /// `status.capacity` (and allocatable).
    #[serde(default = "default_capacity")]
    pub capacity: BTreeMap<String, String>,
    /// Extra node labels (a `shoal.io/kernel` here wins over the one derived from
    /// `kernel`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
}

fn default_os_image() -> String {
    "Ubuntu 24.04 LTS".into()
}
fn default_kubelet_version() -> String {
    "v1.33.0".into()
}
fn default_runtime() -> String {
    "containerd://1.7.27".into()
}
fn default_capacity() -> BTreeMap<String, String> {
    [("cpu", "8"), ("memory", "32Gi"), ("pods", "110")]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

impl Default for NodeProfile {
    fn default() -> Self {
        NodeProfile {
            instance_type: "sim.standard".into(),
            kernel: "6.8.0-sim".into(),
            os_image: default_os_image(),
            kubelet_version: default_kubelet_version(),
            container_runtime_version: default_runtime(),
            capacity: default_capacity(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
        }
    }
}

/// A set of clusters sharing attributes, multiplied out over regions and businesses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterGroupSpec {
    /// Prefix of the cluster names.
    pub name: String,
    pub env: String,
    pub regions: Vec<String>,
    /// Zone suffixes; each region has zones `<region>-<suffix>` (default `[a]`).
    #[serde(default)]
    pub zones: Vec<String>,
    /// Business units (default: none, and no `business` label).
    #[serde(default)]
    pub businesses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_domain: Option<String>,
    /// Clusters per (region, business) combination.
    #[serde(default = "one")]
    pub clusters_per: u32,
    pub nodes_per_cluster: u32,
    /// Node profiles with weights (default: one built-in profile).
    #[serde(default)]
    pub nodes: Vec<WeightedProfile>,
}

fn one() -> u32 {
    1
}

/// One cluster written out: its name, its labels verbatim, its nodes as runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExplicitCluster {
    pub name: String,
    /// The Cluster's labels (attribute labels and any others), taken as they are.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Runs of nodes, in node order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeRun>,
}

/// `count` consecutive nodes of one profile in one zone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRun {
    /// An entry of `nodeProfiles` (default: the built-in profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub count: u32,
    /// The full zone name (default: the cluster's `zone` label, else `<region>-a`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Default: the cluster's `region` label, else `sim-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedProfile {
    pub profile: String,
    #[serde(default = "one")]
    pub weight: u32,
}

impl FleetSpec {
    /// Parses a fleet definition from YAML.
    ///
    /// # Errors
    /// [`FleetError::Yaml`] for syntax errors, unknown fields and wrong types.
    pub fn from_yaml(text: &str) -> Result<Self> {
        Ok(serde_saphyr::from_str(text)?)
    }
}

/// What every node of one (region, zone, profile) shares.
#[derive(Debug)]
pub struct NodeClass {
    pub region: String,
    pub zone: String,
    pub profile_name: String,
    pub profile: Arc<NodeProfile>,
    /// The node's labels (zone, region, instance type, os, arch, kernel, profile labels);
    /// `kubernetes.io/hostname` is per node and added when rendering.
    pub labels: BTreeMap<String, String>,
}

/// One simulated node: its index in the cluster and its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FleetNode {
    pub index: u32,
    /// Index into [`FleetCluster::classes`].
    pub class: u16,
}

/// One simulated cluster.
#[derive(Debug)]
pub struct FleetCluster {
    pub name: String,
    /// Attribute labels (`env`, `region`, `zone`, `business`, `tier`, `networkDomain`).
    pub labels: BTreeMap<String, String>,
    /// The node classes this cluster uses (shared with other clusters).
    pub classes: Vec<Arc<NodeClass>>,
    pub nodes: Vec<FleetNode>,
}

impl FleetCluster {
    /// The name of node `index` (`<cluster>-n00042`).
    pub fn node_name(&self, index: u32) -> String {
        format!("{}-n{index:05}", self.name)
    }

    pub fn class_of(&self, node: FleetNode) -> &Arc<NodeClass> {
        &self.classes[usize::from(node.class)]
    }
}

/// An expanded fleet.
#[derive(Debug, Default)]
pub struct Fleet {
    pub clusters: Vec<FleetCluster>,
}

impl Fleet {
    pub fn node_count(&self) -> usize {
        self.clusters.iter().map(|c| c.nodes.len()).sum()
    }
}

/// The quick form: `clusters` clusters named `sim-00000…`, `nodes` nodes each, one
/// default profile, env `sim`, region `sim-1`, three zones.
pub fn uniform(clusters: u32, nodes: u32) -> Fleet {
    let spec = FleetSpec {
        node_profiles: BTreeMap::new(),
        groups: vec![ClusterGroupSpec {
            name: "sim".into(),
            env: "sim".into(),
            regions: vec!["sim-1".into()],
            zones: vec!["a".into(), "b".into(), "c".into()],
            businesses: Vec::new(),
            tier: None,
            network_domain: None,
            clusters_per: clusters,
            nodes_per_cluster: nodes,
            nodes: Vec::new(),
        }],
        clusters: Vec::new(),
    };
    // The spec above is valid by construction.
    expand(&spec).unwrap_or_default()
}

const DEFAULT_PROFILE: &str = "default";

/// `major.minor` of a kernel version (`5.10.134-16.al8` → `5.10`).
fn kernel_minor(kernel: &str) -> String {
    let mut parts = kernel.split(['.', '-']);
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("{a}.{b}"),
        _ => kernel.to_string(),
    }
}

fn check_label_value(field: &str, v: &str) -> Result<()> {
    match shoal_core::validation::label_value(v).first() {
        None => Ok(()),
        Some(e) => Err(invalid(field, format!("{v:?}: {e}"))),
    }
}

/// Expands a fleet definition into clusters and nodes, deterministically.
///
/// # Errors
/// [`FleetError::Invalid`] naming the field: an unknown profile, a zero weight or count,
/// no regions, a name or attribute that is not a valid label value, a cluster name
/// produced twice, or more than 65,535 node classes in one cluster.
pub fn expand(spec: &FleetSpec) -> Result<Fleet> {
    let profiles: BTreeMap<&str, Arc<NodeProfile>> = spec
        .node_profiles
        .iter()
        .map(|(k, v)| (k.as_str(), Arc::new(v.clone())))
        .collect();
    let default_profile = Arc::new(NodeProfile::default());
    let mut classes: Classes = HashMap::new();
    let mut fleet = Fleet::default();
    let mut seen_names = std::collections::HashSet::new();

    for (gi, g) in spec.groups.iter().enumerate() {
        let path = format!("groups[{gi}]");
        for (field, v) in [("name", &g.name), ("env", &g.env)] {
            check_label_value(&format!("{path}.{field}"), v)?;
            if v.is_empty() {
                return Err(invalid(format!("{path}.{field}"), "must not be empty"));
            }
        }
        if g.regions.is_empty() {
            return Err(invalid(format!("{path}.regions"), "at least one region"));
        }
        for (i, r) in g.regions.iter().enumerate() {
            check_label_value(&format!("{path}.regions[{i}]"), r)?;
        }
        for (i, b) in g.businesses.iter().enumerate() {
            check_label_value(&format!("{path}.businesses[{i}]"), b)?;
        }
        for (f, v) in [("tier", &g.tier), ("networkDomain", &g.network_domain)] {
            if let Some(v) = v {
                check_label_value(&format!("{path}.{f}"), v)?;
            }
        }
        let zones: Vec<&str> = if g.zones.is_empty() {
            vec!["a"]
        } else {
            g.zones.iter().map(String::as_str).collect()
        };
        let mut weighted: Vec<(String, Arc<NodeProfile>, u32)> = Vec::new();
        for (i, w) in g.nodes.iter().enumerate() {
            let p = profiles.get(w.profile.as_str()).ok_or_else(|| {
                invalid(
                    format!("{path}.nodes[{i}].profile"),
                    format!("{:?}: no such entry in nodeProfiles", w.profile),
                )
            })?;
            if w.weight == 0 {
                return Err(invalid(
                    format!("{path}.nodes[{i}].weight"),
                    "must be greater than 0",
                ));
            }
            weighted.push((w.profile.clone(), p.clone(), w.weight));
        }
        if weighted.is_empty() {
            weighted.push((DEFAULT_PROFILE.into(), default_profile.clone(), 1));
        }
        let businesses: Vec<Option<&str>> = if g.businesses.is_empty() {
            vec![None]
        } else {
            g.businesses.iter().map(|b| Some(b.as_str())).collect()
        };

        for region in &g.regions {
            for business in &businesses {
                for n in 0..g.clusters_per {
                    let name = match business {
                        Some(b) => format!("{}-{region}-{b}-{n:03}", g.name),
                        None => format!("{}-{region}-{n:03}", g.name),
                    };
                    if let Some(e) = shoal_core::validation::dns1123_subdomain(&name).first() {
                        return Err(invalid(
                            format!("{path}.name"),
                            format!("cluster name {name:?}: {e}"),
                        ));
                    }
                    if !seen_names.insert(name.clone()) {
                        return Err(invalid(
                            format!("{path}.name"),
                            format!("cluster name {name:?} is produced twice"),
                        ));
                    }
                    // Clusters of a region rotate their home zone.
                    let home_zone = format!("{region}-{}", zones[n as usize % zones.len()]);
                    let mut labels = BTreeMap::new();
                    labels.insert("env".to_string(), g.env.clone());
                    labels.insert("region".to_string(), region.clone());
                    labels.insert("zone".to_string(), home_zone);
                    if let Some(b) = business {
                        labels.insert("business".to_string(), b.to_string());
                    }
                    if let Some(t) = &g.tier {
                        labels.insert("tier".to_string(), t.clone());
                    }
                    if let Some(d) = &g.network_domain {
                        labels.insert("networkDomain".to_string(), d.clone());
                    }
                    let cluster = mk_cluster(
                        &path,
                        name,
                        labels,
                        region,
                        &zones,
                        &weighted,
                        g.nodes_per_cluster,
                        &mut classes,
                    )?;
                    fleet.clusters.push(cluster);
                }
            }
        }
    }
    for (ci, c) in spec.clusters.iter().enumerate() {
        let path = format!("clusters[{ci}]");
        if let Some(e) = shoal_core::validation::dns1123_subdomain(&c.name).first() {
            return Err(invalid(
                format!("{path}.name"),
                format!("{:?}: {e}", c.name),
            ));
        }
        if !seen_names.insert(c.name.clone()) {
            return Err(invalid(
                format!("{path}.name"),
                format!("cluster name {:?} is produced twice", c.name),
            ));
        }
        let cluster = mk_explicit_cluster(&path, c, &profiles, &default_profile, &mut classes)?;
        fleet.clusters.push(cluster);
    }
    Ok(fleet)
}

/// The fleet's node classes, one per (region, zone, profile), shared by every cluster.
type Classes = HashMap<(String, String, String), Arc<NodeClass>>;

/// The class of nodes of `profile` in `zone`, built on first use and shared after.
fn shared_class(
    classes: &mut Classes,
    region: &str,
    zone: &str,
    profile_name: &str,
    profile: &Arc<NodeProfile>,
) -> Arc<NodeClass> {
    classes
        .entry((
            region.to_string(),
            zone.to_string(),
            profile_name.to_string(),
        ))
        .or_insert_with(|| Arc::new(mk_class(region, zone, profile_name, profile.clone())))
        .clone()
}

/// One cluster's nodes as they are added: both forms (groups and explicit clusters)
/// build their clusters through this.
#[derive(Default)]
struct ClusterNodes {
    classes: Vec<Arc<NodeClass>>,
    nodes: Vec<FleetNode>,
}

impl ClusterNodes {
    /// The cluster-local id of `class`, added to the cluster's list on first use (a
    /// cluster has a handful of classes: a linear search beats hashing).
    fn class_id(&mut self, field: &str, class: &Arc<NodeClass>) -> Result<u16> {
        if let Some(i) = self.classes.iter().position(|c| Arc::ptr_eq(c, class)) {
            return Ok(i as u16);
        }
        let id = u16::try_from(self.classes.len())
            .map_err(|_| invalid(field, "too many node classes"))?;
        self.classes.push(class.clone());
        Ok(id)
    }

    fn push(&mut self, class: u16) {
        let index = self.nodes.len() as u32;
        self.nodes.push(FleetNode { index, class });
    }

    fn into_cluster(self, name: String, labels: BTreeMap<String, String>) -> FleetCluster {
        FleetCluster {
            name,
            labels,
            classes: self.classes,
            nodes: self.nodes,
        }
    }
}

#[allow(clippy::too_many_arguments)] // one call site; a parameter struct would only rename them
fn mk_cluster(
    path: &str,
    name: String,
    labels: BTreeMap<String, String>,
    region: &str,
    zones: &[&str],
    weighted: &[(String, Arc<NodeProfile>, u32)],
    node_count: u32,
    classes: &mut Classes,
) -> Result<FleetCluster> {
    let mut built = ClusterNodes {
        classes: Vec::new(),
        nodes: Vec::with_capacity(node_count as usize),
    };
    let mut local_index: HashMap<(usize, usize), u16> = HashMap::new();
    // Smooth weighted round-robin (as nginx balances upstreams): exact proportions,
    // evenly interleaved, no randomness.
    let total: i64 = weighted.iter().map(|w| i64::from(w.2)).sum();
    let mut current = vec![0i64; weighted.len()];
    for index in 0..node_count {
        let mut best = 0;
        for (i, w) in weighted.iter().enumerate() {
            current[i] += i64::from(w.2);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        let zone_i = index as usize % zones.len();
        let key = (best, zone_i);
        let class = match local_index.get(&key) {
            Some(c) => *c,
            None => {
                let zone = format!("{region}-{}", zones[zone_i]);
                let (pname, profile, _) = &weighted[best];
                let shared = shared_class(classes, region, &zone, pname, profile);
                let id = built.class_id(&format!("{path}.zones"), &shared)?;
                local_index.insert(key, id);
                id
            }
        };
        built.push(class);
    }
    Ok(built.into_cluster(name, labels))
}

/// An explicit cluster: labels as written, nodes run by run.
fn mk_explicit_cluster(
    path: &str,
    c: &ExplicitCluster,
    profiles: &BTreeMap<&str, Arc<NodeProfile>>,
    default_profile: &Arc<NodeProfile>,
    classes: &mut Classes,
) -> Result<FleetCluster> {
    for (k, v) in &c.labels {
        if let Some(e) = shoal_core::validation::qualified_name(k).first() {
            return Err(invalid(format!("{path}.labels"), format!("key {k:?}: {e}")));
        }
        check_label_value(&format!("{path}.labels.{k}"), v)?;
    }
    let mut built = ClusterNodes::default();
    for (i, run) in c.nodes.iter().enumerate() {
        let field = format!("{path}.nodes[{i}]");
        let (pname, profile) = match &run.profile {
            None => (DEFAULT_PROFILE, default_profile),
            Some(p) => {
                let found = profiles.get(p.as_str()).ok_or_else(|| {
                    invalid(
                        format!("{field}.profile"),
                        format!("{p:?}: no such entry in nodeProfiles"),
                    )
                })?;
                (p.as_str(), found)
            }
        };
        if run.count == 0 {
            return Err(invalid(format!("{field}.count"), "must be greater than 0"));
        }
        let region = run
            .region
            .as_deref()
            .or(c.labels.get("region").map(String::as_str))
            .unwrap_or("sim-1");
        check_label_value(&format!("{field}.region"), region)?;
        let zone = match run
            .zone
            .as_deref()
            .or(c.labels.get("zone").map(String::as_str))
        {
            Some(z) => z.to_string(),
            None => format!("{region}-a"),
        };
        check_label_value(&format!("{field}.zone"), &zone)?;
        let shared = shared_class(classes, region, &zone, pname, profile);
        let id = built.class_id(&field, &shared)?;
        for _ in 0..run.count {
            built.push(id);
        }
    }
    Ok(built.into_cluster(c.name.clone(), c.labels.clone()))
}

fn mk_class(region: &str, zone: &str, profile_name: &str, profile: Arc<NodeProfile>) -> NodeClass {
    let mut labels = profile.labels.clone();
    labels.insert(REGION_LABEL.into(), region.into());
    labels.insert(ZONE_LABEL.into(), zone.into());
    labels.insert(INSTANCE_TYPE_LABEL.into(), profile.instance_type.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), "amd64".into());
    // A profile copied from a real node keeps that node's own kernel label.
    labels
        .entry(KERNEL_LABEL.into())
        .or_insert_with(|| kernel_minor(&profile.kernel));
    NodeClass {
        region: region.into(),
        zone: zone.into(),
        profile_name: profile_name.into(),
        profile,
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
nodeProfiles:
  old: {instanceType: ecs.g6.2xlarge, kernel: 5.10.134-16.al8.x86_64}
  new: {instanceType: ecs.g8i.4xlarge, kernel: 6.6.71-3.al8.x86_64, labels: {pool: general}}
groups:
  - name: prod
    env: prod
    regions: [cn-hangzhou, cn-beijing]
    zones: [a, b, c]
    businesses: [payments, search]
    tier: "1"
    clustersPer: 2
    nodesPerCluster: 100
    nodes: [{profile: old, weight: 1}, {profile: new, weight: 3}]
  - name: dev
    env: dev
    regions: [cn-shanghai]
    nodesPerCluster: 3
"#;

    #[test]
    fn expansion_multiplies_regions_businesses_and_counts_in_a_fixed_order() {
        let fleet = expand(&FleetSpec::from_yaml(SPEC).unwrap()).unwrap();
        let names: Vec<&str> = fleet.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), 2 * 2 * 2 + 1);
        assert_eq!(names[0], "prod-cn-hangzhou-payments-000");
        assert_eq!(names[1], "prod-cn-hangzhou-payments-001");
        assert_eq!(names[8], "dev-cn-shanghai-000");
        let c = &fleet.clusters[1];
        for key in ["env", "region", "zone", "business", "tier"] {
            assert!(
                shoal_core::kinds::ATTRIBUTE_LABELS.contains(&key),
                "{key} is an attribute label"
            );
            assert!(c.labels.contains_key(key), "{key}");
        }
        assert_eq!(c.labels["zone"], "cn-hangzhou-b");
        assert_eq!(fleet.node_count(), 8 * 100 + 3);
        assert_eq!(c.node_name(7), "prod-cn-hangzhou-payments-001-n00007");
    }

    #[test]
    fn node_profiles_follow_their_weights_and_zones_rotate() {
        let fleet = expand(&FleetSpec::from_yaml(SPEC).unwrap()).unwrap();
        let c = &fleet.clusters[0];
        let old = c
            .nodes
            .iter()
            .filter(|n| c.class_of(**n).profile_name == "old")
            .count();
        assert_eq!(old, 25);
        let first = c.class_of(c.nodes[0]);
        assert_eq!(first.labels[ZONE_LABEL], "cn-hangzhou-a");
        assert_eq!(c.class_of(c.nodes[1]).labels[ZONE_LABEL], "cn-hangzhou-b");
        let old_class = c.classes.iter().find(|k| k.profile_name == "old").unwrap();
        assert_eq!(old_class.labels[KERNEL_LABEL], "5.10");
        assert_eq!(old_class.labels[INSTANCE_TYPE_LABEL], "ecs.g6.2xlarge");
        let new_class = c.classes.iter().find(|k| k.profile_name == "new").unwrap();
        assert_eq!(new_class.labels["pool"], "general");
    }

    #[test]
    fn clusters_of_a_region_share_node_classes_instead_of_copying_labels() {
        let fleet = uniform(10_000, 100);
        assert_eq!(fleet.clusters.len(), 10_000);
        assert_eq!(fleet.node_count(), 1_000_000);
        let a = fleet.clusters[0].class_of(fleet.clusters[0].nodes[0]);
        let b = fleet.clusters[9_999].class_of(fleet.clusters[9_999].nodes[0]);
        assert!(Arc::ptr_eq(a, b));
        // One profile × three zones: three label maps for a million nodes.
        let mut distinct: Vec<*const NodeClass> = fleet
            .clusters
            .iter()
            .flat_map(|c| c.classes.iter().map(Arc::as_ptr))
            .collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
        assert_eq!(std::mem::size_of::<FleetNode>(), 8);
    }

    #[test]
    fn expansion_is_deterministic() {
        let spec = FleetSpec::from_yaml(SPEC).unwrap();
        let a = expand(&spec).unwrap();
        let b = expand(&spec).unwrap();
        let shape = |f: &Fleet| -> Vec<(String, Vec<(u32, String)>)> {
            f.clusters
                .iter()
                .map(|c| {
                    let nodes = c
                        .nodes
                        .iter()
                        .map(|n| (n.index, c.class_of(*n).profile_name.clone()))
                        .collect();
                    (c.name.clone(), nodes)
                })
                .collect()
        };
        assert_eq!(shape(&a), shape(&b));
    }

    #[test]
    fn bad_fleet_definitions_are_rejected_naming_the_field() {
        let cases = [
            (
                SPEC.replace("{profile: new, weight: 3}", "{profile: newer, weight: 3}"),
                "groups[0].nodes[1].profile",
            ),
            (
                SPEC.replace("{profile: old, weight: 1}", "{profile: old, weight: 0}"),
                "groups[0].nodes[0].weight",
            ),
            (
                SPEC.replace("regions: [cn-shanghai]", "regions: []"),
                "groups[1].regions",
            ),
            (SPEC.replace("env: dev", "env: 'dev env'"), "groups[1].env"),
        ];
        for (yaml, field) in cases {
            let err = expand(&FleetSpec::from_yaml(&yaml).unwrap()).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
        let err = FleetSpec::from_yaml(&SPEC.replace("clustersPer", "clusterPer")).unwrap_err();
        assert!(err.to_string().contains("clusterPer"), "{err}");
    }

    const EXPLICIT: &str = r#"
nodeProfiles:
  old: {instanceType: ecs.g6.2xlarge, kernel: 5.10.134-16.al8.x86_64}
clusters:
  - name: prod-eu-1
    labels: {env: prod, region: eu-west-1, zone: eu-west-1a, shoal.io/simulated: "true"}
    nodes:
      - {profile: old, count: 2}
      - {count: 1, zone: eu-west-1b}
      - {profile: old, count: 1, zone: eu-west-1c}
  - name: dev-1
"#;

    #[test]
    fn explicit_clusters_keep_their_names_labels_and_node_runs() {
        let fleet = expand(&FleetSpec::from_yaml(EXPLICIT).unwrap()).unwrap();
        assert_eq!(fleet.clusters.len(), 2);
        let c = &fleet.clusters[0];
        assert_eq!(c.name, "prod-eu-1");
        assert_eq!(c.labels["shoal.io/simulated"], "true");
        assert_eq!(c.labels.len(), 4, "labels verbatim, nothing added");
        let shape: Vec<(String, String, String)> = c
            .nodes
            .iter()
            .map(|n| {
                let k = c.class_of(*n);
                (
                    k.profile_name.clone(),
                    k.zone.clone(),
                    k.labels[KERNEL_LABEL].clone(),
                )
            })
            .collect();
        let row = |p: &str, z: &str, k: &str| (p.to_string(), z.to_string(), k.to_string());
        assert_eq!(
            shape,
            [
                row("old", "eu-west-1a", "5.10"),
                row("old", "eu-west-1a", "5.10"),
                row("default", "eu-west-1b", "6.8"),
                row("old", "eu-west-1c", "5.10"),
            ]
        );
        assert_eq!(c.classes.len(), 3);
        assert_eq!(c.class_of(c.nodes[0]).region, "eu-west-1");
        assert!(fleet.clusters[1].nodes.is_empty());
    }

    #[test]
    fn explicit_clusters_survive_a_yaml_round_trip_next_to_groups() {
        let mut spec = FleetSpec::from_yaml(SPEC).unwrap();
        spec.clusters = FleetSpec::from_yaml(EXPLICIT).unwrap().clusters;
        spec.node_profiles
            .get_mut("old")
            .unwrap()
            .labels
            .insert(KERNEL_LABEL.into(), "5.9".into());
        let text = serde_saphyr::to_string(&spec).unwrap();
        let back = FleetSpec::from_yaml(&text).unwrap();
        assert_eq!(back, spec);
        let fleet = expand(&back).unwrap();
        assert_eq!(fleet.clusters.len(), 9 + 2);
        assert_eq!(
            fleet.clusters[9].name, "prod-eu-1",
            "explicit clusters after groups"
        );
        let k = fleet.clusters[9].class_of(fleet.clusters[9].nodes[0]);
        assert_eq!(
            k.labels[KERNEL_LABEL], "5.9",
            "the profile's own kernel label wins"
        );
    }

    #[test]
    fn bad_explicit_clusters_are_rejected_naming_the_field() {
        let cases = [
            (
                EXPLICIT.replace("{profile: old, count: 2}", "{profile: older, count: 2}"),
                "clusters[0].nodes[0].profile",
            ),
            (
                EXPLICIT.replace("{count: 1, zone", "{count: 0, zone"),
                "clusters[0].nodes[1].count",
            ),
            (
                EXPLICIT.replace("name: dev-1", "name: Dev_1"),
                "clusters[1].name",
            ),
            (
                EXPLICIT.replace("name: dev-1", "name: prod-eu-1"),
                "clusters[1].name",
            ),
            (
                EXPLICIT.replace("env: prod,", "env: 'prod env',"),
                "clusters[0].labels.env",
            ),
            (
                EXPLICIT.replace("zone: eu-west-1b", "zone: 'eu west'"),
                "clusters[0].nodes[1].zone",
            ),
            (
                EXPLICIT.replace("shoal.io/simulated", "a/b/c"),
                "clusters[0].labels",
            ),
        ];
        for (yaml, field) in cases {
            let err = expand(&FleetSpec::from_yaml(&yaml).unwrap()).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
        let err = FleetSpec::from_yaml(&EXPLICIT.replace("count: 2", "cnt: 2")).unwrap_err();
        assert!(err.to_string().contains("cnt"), "{err}");
    }
}
