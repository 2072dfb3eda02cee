//! Deterministic ALTO workloads: a backbone topology (the JSON schema of
//! `shared/data/topologies/README.md`, or a synthetic one) turned into a network
//! map (a PID per PoP with IPv4 and IPv6 prefixes), a routing-cost cost map
//! (shortest paths) and a sequence of change events (link failure, recovery,
//! metric change, prefix moved between PIDs). Used by tests, benchmarks and
//! `altocast-server gen`; sans-IO (the caller reads the file).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;

use altocast_proto::{CostMap, CostType, ModelError, NetworkMap, Pid, PidPrefixes, ResourceId, VersionTag};

/// SplitMix64: small, fast, and reproducible across platforms.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

#[derive(Deserialize)]
struct JsonTopology {
    name: String,
    nodes: Vec<JsonNode>,
    links: Vec<JsonLink>,
}

#[derive(Deserialize)]
struct JsonNode {
    id: usize,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    transit: bool,
}

#[derive(Deserialize)]
struct JsonLink {
    a: usize,
    b: usize,
    #[serde(default)]
    length_km: Option<f64>,
    #[serde(default)]
    weight: Option<f64>,
}

/// A backbone: nodes (PoPs or transit junctions) and undirected links with an
/// integer IGP metric.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Name (used in PID names only through labels).
    pub name: String,
    /// Node labels.
    pub labels: Vec<String>,
    /// Transit nodes route traffic but get no PID.
    pub transit: Vec<bool>,
    /// Link endpoints.
    pub ends: Vec<(usize, usize)>,
    /// Link metric: `weight` if every link has one, else km rounded (≥ 1), else 1.
    pub metric: Vec<u64>,
}

fn round_half_up(x: f64) -> u64 {
    (x + 0.5).floor().max(0.0) as u64
}

impl Topology {
    /// Parses a topology JSON file's contents.
    pub fn from_json(body: &[u8]) -> Result<Self, ModelError> {
        let t: JsonTopology = serde_json::from_slice(body).map_err(|e| ModelError::Json(e.to_string()))?;
        let n = t.nodes.len();
        for (i, node) in t.nodes.iter().enumerate() {
            if node.id != i {
                return Err(ModelError::Json(format!("nodes[{i}].id is {}, expected {i}", node.id)));
            }
        }
        if let Some((i, l)) = t.links.iter().enumerate().find(|(_, l)| l.a >= n || l.b >= n) {
            return Err(ModelError::Json(format!("links[{i}] names node {} or {}, but there are {n} nodes", l.a, l.b)));
        }
        let all_weight = !t.links.is_empty() && t.links.iter().all(|l| l.weight.is_some());
        let all_km = !t.links.is_empty() && t.links.iter().all(|l| l.length_km.is_some());
        let metric = t
            .links
            .iter()
            .map(|l| match (all_weight, all_km) {
                (true, _) => round_half_up(l.weight.unwrap_or(1.0)).max(1),
                (false, true) => round_half_up(l.length_km.unwrap_or(1.0)).max(1),
                _ => 1,
            })
            .collect();
        Ok(Topology {
            name: t.name,
            labels: t.nodes.iter().map(|n| n.label.clone().unwrap_or_default()).collect(),
            transit: t.nodes.iter().map(|n| n.transit).collect(),
            ends: t.links.iter().map(|l| (l.a, l.b)).collect(),
            metric,
        })
    }

    /// A synthetic backbone of `nodes` PoPs: random points in a 4,000 km
    /// square, each joined to its nearest earlier point (a geometric spanning
    /// tree), plus 40% extra links between near pairs — average degree ≈ 2.8,
    /// like the real backbones, with bridges whose failure disconnects PIDs.
    pub fn synthetic(nodes: usize, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x5EED_0000_0000_0001);
        let pts: Vec<(f64, f64)> = (0..nodes)
            .map(|_| ((rng.next_u64() % 4_000_000) as f64 / 1000.0, (rng.next_u64() % 4_000_000) as f64 / 1000.0))
            .collect();
        let dist = |a: usize, b: usize| ((pts[a].0 - pts[b].0).powi(2) + (pts[a].1 - pts[b].1).powi(2)).sqrt();
        let mut ends = Vec::new();
        for i in 1..nodes {
            let j = (0..i).min_by(|&x, &y| dist(i, x).total_cmp(&dist(i, y))).unwrap_or(0);
            ends.push((j, i));
        }
        for _ in 0..(nodes * 2 / 5) {
            let a = rng.below(nodes);
            // Pick the nearest of a few random candidates: mostly short links.
            let b =
                (0..8).map(|_| rng.below(nodes)).filter(|&b| b != a).min_by(|&x, &y| dist(a, x).total_cmp(&dist(a, y)));
            if let Some(b) = b {
                ends.push((a.min(b), a.max(b)));
            }
        }
        let metric = ends.iter().map(|&(a, b)| round_half_up(dist(a, b)).max(1)).collect();
        Topology {
            name: format!("synthetic{nodes}"),
            labels: (0..nodes).map(|i| format!("node{i}")).collect(),
            transit: vec![false; nodes],
            ends,
            metric,
        }
    }
}

fn slug(label: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for ch in label.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            out.push(ch);
            dash = false;
        } else if !dash {
            out.push('-');
            dash = true;
        }
    }
    out.trim_matches('-').to_owned()
}

/// What a change event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A link went down.
    LinkFailure,
    /// A failed link came back.
    LinkRecovery,
    /// A link's metric changed.
    WeightChange,
    /// One prefix moved to a neighbouring PID (network map change).
    PrefixMove,
}

impl EventKind {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LinkFailure => "link_failure",
            EventKind::LinkRecovery => "link_recovery",
            EventKind::WeightChange => "weight_change",
            EventKind::PrefixMove => "prefix_move",
        }
    }
}

/// One change event.
#[derive(Debug, Clone)]
pub struct Event {
    /// 1-based position in the sequence.
    pub seq: u64,
    /// What changed.
    pub kind: EventKind,
    /// Human-readable detail.
    pub detail: String,
}

/// A topology with state (links up/down, metrics, prefixes) that yields maps
/// and a deterministic sequence of change events.
#[derive(Debug, Clone)]
pub struct Workload {
    topo: Topology,
    up: Vec<bool>,
    metric: Vec<u64>,
    adj: Vec<Vec<(usize, usize)>>,
    pid_of: Vec<Option<Pid>>,
    prefixes: BTreeMap<Pid, PidPrefixes>,
    rng: SplitMix64,
    failed: Vec<usize>,
    events: u64,
    /// Resource id the cost map depends on.
    pub network_map_id: ResourceId,
    /// At most this many links down at once.
    pub max_failed: usize,
}

impl Workload {
    /// A workload on `topo` seeded with `seed`.
    pub fn new(topo: Topology, seed: u64) -> Self {
        let n = topo.labels.len();
        let mut adj = vec![Vec::new(); n];
        for (li, &(a, b)) in topo.ends.iter().enumerate() {
            adj[a].push((b, li));
            adj[b].push((a, li));
        }
        let width = n.saturating_sub(1).to_string().len();
        let pid_of: Vec<Option<Pid>> = (0..n)
            .map(|i| {
                if topo.transit[i] {
                    return None;
                }
                let mut name = format!("pid{i:0width$}");
                let s = slug(&topo.labels[i]);
                if !s.is_empty() && !s.eq_ignore_ascii_case("none") {
                    name = format!("{name}-{s}");
                }
                name.truncate(64);
                Pid::new(name.trim_end_matches('-')).ok()
            })
            .collect();
        let mut rng = SplitMix64::new(seed);
        let mut prefixes = BTreeMap::new();
        let (mut v4, mut v6) = (0u32, 0u32);
        for p in pid_of.iter().flatten() {
            let mut pp = PidPrefixes::default();
            for _ in 0..2 + rng.below(3) {
                // 10.x.y.0/24 blocks in order: never overlapping.
                let addr = u32::from_be_bytes([10, 0, 0, 0]) + (v4 << 8);
                v4 += 1;
                pp.ipv4.push(Ipv4Net::new(addr.into(), 24).unwrap_or_default());
            }
            for _ in 0..1 + rng.below(2) {
                let addr = (0x2001_0db8u128 << 96) | ((v6 as u128) << 80);
                v6 += 1;
                pp.ipv6.push(Ipv6Net::new(addr.into(), 48).unwrap_or_default());
            }
            prefixes.insert(p.clone(), pp);
        }
        let metric = topo.metric.clone();
        Workload {
            up: vec![true; topo.ends.len()],
            metric,
            adj,
            pid_of,
            prefixes,
            rng: SplitMix64::new(seed.wrapping_mul(31).wrapping_add(7)),
            failed: Vec::new(),
            events: 0,
            topo,
            network_map_id: ResourceId::new("default-network-map").unwrap_or_else(|_| unreachable!()),
            max_failed: 3,
        }
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// Number of PIDs.
    pub fn pid_count(&self) -> usize {
        self.prefixes.len()
    }

    /// The current network map.
    pub fn network_map(&self) -> NetworkMap {
        NetworkMap::new(self.prefixes.clone()).unwrap_or_else(|e| panic!("workload built an invalid network map: {e}"))
    }

    fn dijkstra(&self, s: usize) -> Vec<u64> {
        let mut dist = vec![u64::MAX; self.adj.len()];
        dist[s] = 0;
        let mut heap = BinaryHeap::from([Reverse((0u64, s))]);
        while let Some(Reverse((d, u))) = heap.pop() {
            if d > dist[u] {
                continue;
            }
            for &(v, li) in &self.adj[u] {
                if self.up[li] {
                    let nd = d + self.metric[li];
                    if nd < dist[v] {
                        dist[v] = nd;
                        heap.push(Reverse((nd, v)));
                    }
                }
            }
        }
        dist
    }

    /// The current routing-cost cost map (shortest-path sums; pairs with no path
    /// omitted), bound to network map `nm`.
    pub fn cost_map(&self, nm: &NetworkMap) -> CostMap {
        let mut order: Vec<(Pid, usize)> =
            self.pid_of.iter().enumerate().filter_map(|(i, p)| p.clone().map(|p| (p, i))).collect();
        order.sort();
        let rows = order.iter().enumerate().map(|(si, (_, node))| {
            let d = self.dijkstra(*node);
            let (dst, cost): (Vec<u32>, Vec<f64>) = order
                .iter()
                .enumerate()
                .filter(|(_, (_, t))| d[*t] != u64::MAX)
                .map(|(ti, (_, t))| (ti as u32, d[*t] as f64))
                .unzip();
            (si as u32, dst, cost)
        });
        let dep = VersionTag { resource_id: self.network_map_id.clone(), tag: nm.tag() };
        let pids = order.iter().map(|(p, _)| p.clone()).collect();
        CostMap::from_indexed(CostType::routingcost(), Some(dep), pids, rows.collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("workload built an invalid cost map: {e}"))
    }

    fn link_name(&self, li: usize) -> String {
        let (a, b) = self.topo.ends[li];
        format!("link {li} {}–{}", self.topo.labels[a], self.topo.labels[b])
    }

    /// Fails link `li` (for benchmarks that fail each link from the base state).
    pub fn set_link_up(&mut self, li: usize, up: bool) {
        self.up[li] = up;
    }

    /// Number of links.
    pub fn link_count(&self) -> usize {
        self.up.len()
    }

    /// Applies the next change event: 35% link failure, 25% recovery, 25%
    /// metric change, 15% prefix move.
    pub fn step(&mut self) -> Event {
        self.events += 1;
        let up_links: Vec<usize> = (0..self.up.len()).filter(|&l| self.up[l]).collect();
        let r = self.rng.below(100);
        let kind = match r {
            _ if up_links.is_empty() && self.failed.is_empty() => EventKind::PrefixMove,
            0..35 if self.failed.len() < self.max_failed && !up_links.is_empty() => EventKind::LinkFailure,
            0..60 if !self.failed.is_empty() => EventKind::LinkRecovery,
            0..60 => EventKind::LinkFailure,
            60..85 if !up_links.is_empty() => EventKind::WeightChange,
            _ => EventKind::PrefixMove,
        };
        let detail = match kind {
            EventKind::LinkFailure => {
                let li = up_links[self.rng.below(up_links.len())];
                self.up[li] = false;
                self.failed.push(li);
                self.link_name(li)
            }
            EventKind::LinkRecovery => {
                let li = self.failed.remove(self.rng.below(self.failed.len()));
                self.up[li] = true;
                self.link_name(li)
            }
            EventKind::WeightChange => {
                let li = up_links[self.rng.below(up_links.len())];
                const FACTORS: [f64; 6] = [0.5, 0.8, 1.25, 1.5, 2.0, 3.0];
                let old = self.metric[li];
                let mut new = round_half_up(old as f64 * FACTORS[self.rng.below(6)]).max(1);
                if new == old {
                    new = old + 1;
                }
                self.metric[li] = new;
                format!("{} metric {old} → {new}", self.link_name(li))
            }
            EventKind::PrefixMove => self.move_prefix(),
        };
        Event { seq: self.events, kind, detail }
    }

    fn move_prefix(&mut self) -> String {
        let cands: Vec<Pid> = self.prefixes.iter().filter(|(_, p)| p.ipv4.len() >= 2).map(|(k, _)| k.clone()).collect();
        if cands.is_empty() || self.prefixes.len() < 2 {
            return "no prefix to move".into();
        }
        let from = cands[self.rng.below(cands.len())].clone();
        let node = self.pid_of.iter().position(|p| p.as_ref() == Some(&from)).unwrap_or(0);
        let nbrs: Vec<Pid> =
            self.adj[node].iter().filter_map(|&(v, _)| self.pid_of[v].clone()).filter(|p| *p != from).collect();
        let to = if nbrs.is_empty() {
            self.prefixes.keys().find(|k| **k != from).cloned().unwrap_or_else(|| from.clone())
        } else {
            nbrs[self.rng.below(nbrs.len())].clone()
        };
        let src = self.prefixes.get_mut(&from).map(|p| {
            let i = self.rng.below(p.ipv4.len());
            p.ipv4.remove(i)
        });
        let Some(net) = src else { return "no prefix to move".into() };
        if let Some(p) = self.prefixes.get_mut(&to) {
            p.ipv4.push(net);
            p.ipv4.sort_by_key(|n| (n.network(), n.prefix_len()));
        }
        format!("prefix {net} {from} → {to}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_workload_is_deterministic_and_valid() {
        let mut a = Workload::new(Topology::synthetic(40, 3), 1);
        let mut b = Workload::new(Topology::synthetic(40, 3), 1);
        let nm = a.network_map();
        let cm = a.cost_map(&nm);
        assert_eq!(cm.pids().len(), 40);
        assert_eq!(cm.entry_count(), 1600, "a connected topology has every pair");
        cm.check_against(&a.network_map_id, &nm).expect("consistent");
        for _ in 0..20 {
            let (ea, eb) = (a.step(), b.step());
            assert_eq!(ea.detail, eb.detail);
        }
        let nm2 = a.network_map();
        assert_eq!(a.cost_map(&nm2).tag(), b.cost_map(&b.network_map()).tag());
    }
}
