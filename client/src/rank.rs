//! Peer ranking: the tracker / PPLive use of ALTO. Each candidate is mapped to
//! its PID by longest-prefix match in the network map the cost map was computed
//! against, and candidates are ordered by the cost from the source's PID:
//! ascending, stable on ties, unknown or unreachable peers last.

use std::net::IpAddr;

use altocast_proto::Pid;

use crate::view::CostMapVersion;

/// One ranked candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The candidate's address.
    pub peer: IpAddr,
    /// Its PID, if any prefix covers it.
    pub pid: Option<Pid>,
    /// The cost from the source's PID; `None` when unknown or unreachable.
    pub cost: Option<f64>,
}

/// Ranks `peers` by cost from `src` (see the module doc).
pub fn rank(cm: &CostMapVersion, src: IpAddr, peers: &[IpAddr]) -> Vec<Ranked> {
    let nm = &cm.network_map.map;
    let src_idx = nm.lookup(src).and_then(|p| cm.map.index_of(p.as_str()));
    let mut out: Vec<Ranked> = peers
        .iter()
        .map(|&peer| {
            let pid = nm.lookup(peer).cloned();
            let cost = match (src_idx, pid.as_ref().and_then(|p| cm.map.index_of(p.as_str()))) {
                (Some(s), Some(d)) => cm.map.cost_at(s, d),
                _ => None,
            };
            Ranked { peer, pid, cost }
        })
        .collect();
    // sort_by is stable: equal costs keep the caller's order.
    out.sort_by(|a, b| match (a.cost, b.cost) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    out
}

/// The `k` best candidates (see [`rank`]).
pub fn best(cm: &CostMapVersion, src: IpAddr, peers: &[IpAddr], k: usize) -> Vec<Ranked> {
    let mut r = rank(cm, src, peers);
    r.truncate(k);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::NetworkMapVersion;
    use altocast_proto::{ResourceId, model::json};
    use std::sync::Arc;

    /// RFC 7285 §11.2.1.7 and §11.2.3.7 example maps.
    fn rfc_maps() -> CostMapVersion {
        let nm = json::parse_network_map(
            br#"{"network-map":{"PID1":{"ipv4":["192.0.2.0/24","198.51.100.0/25"]},
                "PID2":{"ipv4":["198.51.100.128/25"]},"PID3":{"ipv4":["0.0.0.0/0"],"ipv6":["::/0"]}}}"#,
        )
        .expect("nm")
        .map;
        let id = ResourceId::new("my-default-network-map").expect("id");
        let cm = json::parse_cost_map(
            br#"{"meta":{"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"}},
                "cost-map":{"PID1":{"PID1":1,"PID2":5,"PID3":10},"PID2":{"PID1":5,"PID2":1,"PID3":15},
                "PID3":{"PID1":20,"PID2":15}}}"#,
        )
        .expect("cm")
        .bind(&id, &nm, &[])
        .expect("bind");
        let nmv = NetworkMapVersion { resource_id: id, seq: 1, tag: nm.tag(), map: nm, expires_at_ms: 0 };
        CostMapVersion {
            resource_id: ResourceId::new("cm").expect("id"),
            seq: 1,
            tag: cm.tag(),
            map: cm,
            network_map: Arc::new(nmv),
            expires_at_ms: 0,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ranks_rfc_example_peers_by_cost_with_unreachable_last() {
        let cm = rfc_maps();
        // From PID3: PID2 costs 15, PID1 costs 20, PID3→PID3 has no entry.
        let peers = [ip("203.0.113.9"), ip("192.0.2.5"), ip("198.51.100.200"), ip("198.51.100.1")];
        let r = rank(&cm, ip("203.0.113.1"), &peers);
        let got: Vec<(IpAddr, Option<f64>)> = r.iter().map(|x| (x.peer, x.cost)).collect();
        assert_eq!(
            got,
            vec![
                (ip("198.51.100.200"), Some(15.0)),
                (ip("192.0.2.5"), Some(20.0)),
                (ip("198.51.100.1"), Some(20.0)),
                (ip("203.0.113.9"), None),
            ]
        );
        // From PID1: PID1 (1) < PID2 (5) < PID3 (10); ties keep input order.
        let r =
            best(&cm, ip("192.0.2.1"), &[ip("10.0.0.1"), ip("198.51.100.129"), ip("192.0.2.9"), ip("192.0.2.8")], 3);
        let got: Vec<IpAddr> = r.iter().map(|x| x.peer).collect();
        assert_eq!(got, vec![ip("192.0.2.9"), ip("192.0.2.8"), ip("198.51.100.129")]);
    }
}
