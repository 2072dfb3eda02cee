//! What an operator publishes, as a small model that random histories edit:
//! PIDs with their prefixes, and the costs of each cost map. Shared by the
//! in-process catch-up property test and the real-process crash test.

use std::collections::BTreeMap;

use altocast_proto::{CostMapBuilder, CostType, NetworkMap, Pid, PidPrefixes, ResourceId, VersionTag, model::json, pb};

/// The network map's resource id.
pub const NM: &str = "nm";

/// PIDs, prefixes and costs.
#[derive(Debug, Clone)]
pub struct Model {
    /// PID → its prefixes.
    pub pids: BTreeMap<String, Vec<String>>,
    /// Cost between two PIDs, per cost map (`cm`, then `cm2` once added).
    pub costs: BTreeMap<String, BTreeMap<(String, String), f64>>,
    next_pid: u32,
    next_prefix: u32,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    /// Four PIDs of two prefixes each, and the cost map `cm`.
    pub fn new() -> Model {
        let mut m = Model { pids: BTreeMap::new(), costs: BTreeMap::new(), next_pid: 0, next_prefix: 0 };
        for _ in 0..4 {
            m.add_pid();
        }
        m.costs.insert("cm".into(), BTreeMap::new());
        m
    }

    /// Adds a PID with two new prefixes; returns its name.
    pub fn add_pid(&mut self) -> String {
        let name = format!("p{}", self.next_pid);
        self.next_pid += 1;
        let prefixes = (0..2).map(|_| self.prefix()).collect();
        self.pids.insert(name.clone(), prefixes);
        name
    }

    fn prefix(&mut self) -> String {
        self.next_prefix += 1;
        format!("10.{}.{}.0/24", self.next_prefix / 256, self.next_prefix % 256)
    }

    /// The `i`-th PID (modulo the count).
    pub fn pick(&self, i: u8) -> String {
        self.pids.keys().nth(i as usize % self.pids.len()).expect("a PID").clone()
    }

    /// Moves the last prefix of `from` to `to`; false when it would empty `from`.
    pub fn move_prefix(&mut self, from: &str, to: &str) -> bool {
        if from == to || self.pids[from].len() < 2 {
            return false;
        }
        let p = self.pids.get_mut(from).expect("pid").pop().expect("prefix");
        self.pids.get_mut(to).expect("pid").push(p);
        true
    }

    /// The network map.
    pub fn network_map(&self) -> NetworkMap {
        let pids = self
            .pids
            .iter()
            .map(|(p, pre)| {
                (Pid::new(p).expect("pid"), PidPrefixes::parse(p, pre, &[] as &[String]).expect("prefixes"))
            })
            .collect();
        NetworkMap::new(pids).expect("network map")
    }

    /// The network map as RFC 7285 JSON.
    pub fn network_map_json(&self) -> String {
        json::network_map_json(&ResourceId::new(NM).expect("id"), &self.network_map())
    }

    fn cost(&self, cm: &str, a: &str, b: &str) -> f64 {
        let base = if a == b { 0.0 } else { 10.0 };
        self.costs[cm].get(&(a.to_owned(), b.to_owned())).copied().unwrap_or(base)
    }

    /// Cost map `cm` over every PID, bound to `nm`, as RFC 7285 JSON.
    pub fn cost_map_json(&self, cm: &str, nm: &NetworkMap) -> String {
        let dep = VersionTag { resource_id: ResourceId::new(NM).expect("id"), tag: nm.tag() };
        let mut b = CostMapBuilder::new(CostType::routingcost(), Some(dep));
        for a in self.pids.keys() {
            let row = self.pids.keys().map(|d| (Pid::new(d).expect("pid"), self.cost(cm, a, d))).collect();
            b.row(Pid::new(a).expect("pid"), row);
        }
        json::cost_map_json(&b.build().expect("cost map"))
    }

    /// One step publishing the network map alone (cost maps are re-bound by the origin).
    pub fn network_map_step(&self) -> Vec<(String, String)> {
        vec![(NM.to_owned(), self.network_map_json())]
    }

    /// One step publishing the network map and each of `cost_maps`, bound to it.
    pub fn full_step(&self, cost_maps: &[String]) -> Vec<(String, String)> {
        let nm = self.network_map();
        let mut step = self.network_map_step();
        step.extend(cost_maps.iter().map(|c| (c.clone(), self.cost_map_json(c, &nm))));
        step
    }
}

/// The `Publish` request of one step: its first resource, the rest in `more`.
pub fn step_request(step: &[(String, String)]) -> pb::PublishRequest {
    let mut items = step.iter().map(|(id, body)| pb::PublishItem {
        resource_id: id.clone(),
        json: body.clone().into_bytes().into(),
        media_type: String::new(),
    });
    let first = items.next().expect("a step has a resource");
    pb::PublishRequest {
        resource_id: first.resource_id,
        json: first.json,
        media_type: first.media_type,
        more: items.collect(),
    }
}
