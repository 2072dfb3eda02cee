//! `tags.json`: network-map and cost-map tags with their exact canonical
//! preimages (§3), for maps as they may be received on the wire.

use serde_json::{Value, json};

use super::{Error, Group, Preimage, disagrees, file, state_json};
use crate::{CostMap, CostMode, CostType, MapState, NetworkMap, Tag, cost_map_from_pb, pb};

/// The §3.4 preimages of a network map: each row's, then the map's.
fn network_map_preimages(m: &NetworkMap) -> (Vec<(String, Preimage)>, Preimage) {
    let mut top = Preimage::new("altocast/v1/network-map");
    top.u64(m.len() as u64);
    let mut rows = Vec::new();
    for (pid, p) in m.iter() {
        let mut r = Preimage::new("altocast/v1/network-map/row");
        r.str(pid.as_str()).u64(p.ipv4.len() as u64);
        for n in &p.ipv4 {
            r.raw(&n.network().octets()).raw(&[n.prefix_len()]);
        }
        r.u64(p.ipv6.len() as u64);
        for n in &p.ipv6 {
            r.raw(&n.network().octets()).raw(&[n.prefix_len()]);
        }
        top.str(pid.as_str()).raw(&r.hash().0);
        rows.push((pid.to_string(), r));
    }
    (rows, top)
}

/// The §3.5 preimages of a cost map: names, each row, the map.
fn cost_map_preimages(m: &CostMap) -> (Preimage, Vec<(String, Preimage)>, Preimage) {
    let mut names = Preimage::new("altocast/v1/cost-map/pids");
    names.u64(m.pids().len() as u64);
    for p in m.pids() {
        names.str(p.as_str());
    }
    let mut rows = Vec::new();
    for (i, p) in m.pids().iter().enumerate() {
        let mut r = Preimage::new("altocast/v1/cost-map/row");
        for v in m.row(i as u32).unwrap_or_default() {
            r.raw(&v.to_le_bytes());
        }
        rows.push((p.to_string(), r));
    }
    let mut top = Preimage::new("altocast/v1/cost-map");
    top.str(&m.cost_type().metric).str(m.cost_type().mode.as_str());
    match m.depends_on() {
        Some(d) => top.u64(1).str(d.resource_id.as_str()).raw(&d.tag.0),
        None => top.u64(0),
    };
    top.raw(&names.hash().0).u64(m.pids().len() as u64);
    for (_, r) in &rows {
        top.raw(&r.hash().0);
    }
    (names, rows, top)
}

fn pid_prefixes(pid: &str, ipv4: &[&str], ipv6: &[&str]) -> pb::PidPrefixes {
    pb::PidPrefixes {
        pid: pid.into(),
        ipv4: ipv4.iter().map(|s| s.to_string()).collect(),
        ipv6: ipv6.iter().map(|s| s.to_string()).collect(),
    }
}

fn network_map_vector(name: &str, description: &str, input: Vec<pb::PidPrefixes>) -> Result<Value, Error> {
    let state = pb::NetworkMapState { pids: input };
    let m = NetworkMap::try_from(&state)?;
    let (rows, top) = network_map_preimages(&m);
    if top.hash() != m.tag() {
        return Err(disagrees(name, format!("preimage hashes to {}, library tag {}", top.hash(), m.tag())));
    }
    let canonical = state_json(&MapState::Network(m.clone()));
    Ok(json!({
        "name": name,
        "description": description,
        "input": {"pids": state.pids.iter().map(|p| json!({"pid": p.pid, "ipv4": p.ipv4, "ipv6": p.ipv6})).collect::<Vec<_>>()},
        "canonical": {"pids": canonical["pids"]},
        "rows": rows.iter().map(|(p, r)| json!({"pid": p, "preimage": hex::encode(&r.0), "hash": r.hash().to_hex()})).collect::<Vec<_>>(),
        "preimage": hex::encode(&top.0),
        "tag": m.tag().to_hex(),
    }))
}

struct CostInput<'a> {
    metric: &'a str,
    mode: CostMode,
    pids: &'a [&'a str],
    dependency: Option<(&'a str, Tag)>,
    rows: Vec<(u32, Vec<u32>, Vec<f64>)>,
}

fn cost_map_vector(name: &str, description: &str, input: CostInput<'_>) -> Result<Value, Error> {
    let (network_map_id, network_map_tag) =
        input.dependency.map(|(id, t)| (id.to_string(), t.0.to_vec())).unwrap_or_default();
    let state = pb::CostMapState {
        pids: input.pids.iter().map(|s| s.to_string()).collect(),
        network_map_id: network_map_id.clone(),
        network_map_tag: network_map_tag.clone().into(),
        rows: input.rows.iter().map(|(s, d, c)| pb::CostRow { src: *s, dst: d.clone(), cost: c.clone() }).collect(),
    };
    let m = cost_map_from_pb(CostType::new(input.metric, input.mode)?, state.clone())?;
    let (names, rows, top) = cost_map_preimages(&m);
    if top.hash() != m.tag() {
        return Err(disagrees(name, format!("preimage hashes to {}, library tag {}", top.hash(), m.tag())));
    }
    let canonical = state_json(&MapState::Cost(m.clone()));
    Ok(json!({
        "name": name,
        "description": description,
        "input": {
            "cost_type": {"metric": input.metric, "mode": input.mode.as_str()},
            "pids": state.pids,
            "network_map_id": network_map_id,
            "network_map_tag": hex::encode(&network_map_tag),
            "rows": input.rows.iter().map(|(s, d, c)| json!({"src": s, "dst": d, "cost": c})).collect::<Vec<_>>(),
        },
        "canonical": {"pids": canonical["pids"], "dependency": canonical["dependency"], "costs": canonical["costs"]},
        "names_preimage": hex::encode(&names.0),
        "names_hash": names.hash().to_hex(),
        "rows": rows.iter().map(|(p, r)| json!({"src": p, "preimage": hex::encode(&r.0), "hash": r.hash().to_hex()})).collect::<Vec<_>>(),
        "preimage": hex::encode(&top.0),
        "tag": m.tag().to_hex(),
    }))
}

/// The network map of PROTOCOL.md Appendix A.3 as the origin sends it.
pub(super) fn a3_input() -> Vec<pb::PidPrefixes> {
    vec![
        pid_prefixes("PID1", &["192.0.2.0/24", "198.51.100.0/25"], &[]),
        pid_prefixes("PID2", &["198.51.100.128/25"], &[]),
        pid_prefixes("PID3", &["0.0.0.0/0"], &["::/0", "2001:db8::/32"]),
    ]
}

pub(super) fn build() -> Result<Value, Error> {
    let a3 = NetworkMap::try_from(&pb::NetworkMapState { pids: a3_input() })?;
    let network_maps = vec![
        network_map_vector(
            "network-map-rfc7285-example",
            "The network map of PROTOCOL.md Appendix A.3 (RFC 7285 §11.2.1.7), tag per §3.4.",
            a3_input(),
        )?,
        network_map_vector("network-map-empty", "The empty network map: H(domain ‖ LE64(0)) (§2.3, §3.4).", vec![])?,
        network_map_vector(
            "network-map-ipv6",
            "IPv6 prefixes of several lengths, one address at two lengths, an IPv4-mapped prefix and a PID without prefixes (§2.2, §3.4).",
            vec![
                pid_prefixes(
                    "v6",
                    &[],
                    &["fe80::/10", "2001:db8:0:1::/64", "2001:db8::/48", "2001:db8::/32", "::/0", "2001:db8::1/128"],
                ),
                pid_prefixes("mapped", &["192.0.2.0/24"], &["::ffff:192.0.2.0/120"]),
                pid_prefixes("zero-runs", &[], &["2001:db8:0:0:1::/80"]),
                pid_prefixes("no-prefixes", &[], &[]),
            ],
        )?,
        network_map_vector(
            "network-map-as-received",
            "PIDs in no order, prefixes unsorted and repeated: the tag is that of the canonical form (§2.2 canonical order, §3.4, §6.4).",
            vec![
                pid_prefixes("a", &["203.0.113.0/24"], &[]),
                pid_prefixes("PID2", &["198.51.100.128/25", "198.51.100.128/25"], &[]),
                pid_prefixes("Z", &[], &["2001:db8:2::/48", "2001:db8:1::/48", "2001:db8:2::/48"]),
                pid_prefixes("PID10", &["10.0.0.0/16", "9.0.0.0/8", "10.0.0.0/8", "10.0.0.0/16"], &[]),
                pid_prefixes("PID1", &["198.51.100.0/25", "192.0.2.0/24", "192.0.2.0/23"], &[]),
            ],
        )?,
        network_map_vector(
            "network-map-non-canonical-text",
            "Prefix text inside the §2.2 grammar but not canonical (leading zeros, also in an IPv6 address's dotted quad; upper-case hex; uncompressed zeros; a `::` that stands for no group, also before a dotted quad), which a verifier MUST accept (§2.2); the text never enters the hash (§3.4).",
            vec![
                pid_prefixes("PID1", &["010.001.0.0/16", "192.000.002.000/24", "10.0.0.0/08"], &[]),
                pid_prefixes(
                    "PID2",
                    &[],
                    &[
                        "2001:0DB8:0000::/48",
                        "0:0:0:0:0:0:0:0/0",
                        "::FFFF:c000:0200/120",
                        "::ffff:198.051.100.000/120",
                        "64:FF9B::192.000.002.033/128",
                        "1:2:3:4::5:6:7:8/128",
                        "::a:b:c:d:e:f:0:0/96",
                        "1:2:3:4:5:6::1.2.3.4/128",
                    ],
                ),
            ],
        )?,
    ];

    let cm_rows_a4 = vec![
        (0, vec![0, 1, 2], vec![1.0, 5.0, 10.0]),
        (1, vec![0, 1, 2], vec![5.0, -0.0, 15.0]),
        (2, vec![0, 1], vec![20.0, 15.5]),
    ];
    let cost_maps = vec![
        cost_map_vector(
            "cost-map-rfc7285-example",
            "The cost map of PROTOCOL.md Appendix A.4: a dependency, -0.0 hashed as +0.0, a pair without a cost hashed as NO_PATH (§2.5, §2.6, §3.5).",
            CostInput {
                metric: "routingcost",
                mode: CostMode::Numerical,
                pids: &["PID1", "PID2", "PID3"],
                dependency: Some(("my-default-network-map", a3.tag())),
                rows: cm_rows_a4.clone(),
            },
        )?,
        cost_map_vector(
            "cost-map-no-dependency",
            "The costs of Appendix A.4 without a dependency: `dep` is LE64(0) (§3.5).",
            CostInput {
                metric: "routingcost",
                mode: CostMode::Numerical,
                pids: &["PID1", "PID2", "PID3"],
                dependency: None,
                rows: cm_rows_a4,
            },
        )?,
        cost_map_vector(
            "cost-map-empty-ordinal",
            "The empty hopcount/ordinal cost map without dependency of Appendix A.4 (§3.5).",
            CostInput { metric: "hopcount", mode: CostMode::Ordinal, pids: &[], dependency: None, rows: vec![] },
        )?,
        cost_map_vector(
            "cost-map-ordinal-as-received",
            "Ordinal costs, PIDs in byte order (PID1 < PID10 < PID2 < Z < a), rows in no order, an empty row and a destination-only PID (§2.1, §6.6, §3.5).",
            CostInput {
                metric: "hopcount",
                mode: CostMode::Ordinal,
                pids: &["PID1", "PID10", "PID2", "Z", "a"],
                dependency: Some(("my-default-network-map", a3.tag())),
                rows: vec![
                    (3, vec![0, 3, 4], vec![2.0, 0.0, 1.0]),
                    (0, vec![0, 1, 2, 3], vec![0.0, 1.0, 1.0, 2.0]),
                    (2, vec![], vec![]),
                    (1, vec![0], vec![3.0]),
                ],
            },
        )?,
        cost_map_vector(
            "cost-map-numerical-edge-values",
            "Numerical costs that are negative, -0.0, subnormal and very large, written as F64 little-endian (§2.5, §3.5).",
            CostInput {
                metric: "delay-ms",
                mode: CostMode::Numerical,
                pids: &["dc-east", "dc-west"],
                dependency: None,
                rows: vec![(0, vec![0, 1], vec![-0.0, -2.5]), (1, vec![0, 1], vec![5e-324, 1e300])],
            },
        )?,
    ];
    Ok(file(
        Group::Tags,
        "Content tags of network maps and cost maps with their canonical preimages (PROTOCOL.md §3).",
        vec![("network_maps", network_maps), ("cost_maps", cost_maps)],
    ))
}
