//! The tracker problem from the ALTO third-party-query discussion: a swarm of
//! 10,000 peers, 100 of which share the requester's PID. A tracker that replies
//! with 100 random peers gives the requester none of its network neighbours
//! with probability ≈36%, and at most four with probability ≈99%; an
//! ALTO-ranked reply (`altocast_client::rank`) contains all 100.
//!
//! ```sh
//! cargo run --release -p altocast-client --example tracker
//! ```
//!
//! This is the arithmetic, in one process. The same figures measured from a
//! real multi-domain tracker's replies (two origins, a DNS server, discovery,
//! verified subscriptions, `POST /rank`): `cargo run -p altocast-tests --bin
//! tracker-demo` (README "Tracker").

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use altocast_client::{CostMapVersion, NetworkMapVersion, rank};
use altocast_proto::{CostMapBuilder, CostType, NetworkMap, Pid, PidPrefixes, ResourceId, workload::SplitMix64};

const PEERS: usize = 10_000;
const PIDS: usize = 100;
const REPLY: usize = 100;
const TRIALS: usize = 20_000;

/// 100 PIDs, each a /24 with 100 peers; cost between PIDs = ring distance.
fn maps() -> CostMapVersion {
    let pid = |i: usize| Pid::new(&format!("pid{i:03}")).expect("pid");
    let mut prefixes = BTreeMap::new();
    for i in 0..PIDS {
        prefixes
            .insert(pid(i), PidPrefixes::parse("pid", &[format!("10.0.{i}.0/24")], &[] as &[String]).expect("prefix"));
    }
    let nm = NetworkMap::new(prefixes).expect("network map");
    let nm_id = ResourceId::new("default-network-map").expect("id");
    let mut b = CostMapBuilder::new(CostType::routingcost(), None);
    for s in 0..PIDS {
        let row = (0..PIDS).map(|d| (pid(d), s.abs_diff(d).min(PIDS - s.abs_diff(d)) as f64)).collect();
        b.row(pid(s), row);
    }
    let cm = b
        .build()
        .expect("cost map")
        .with_dependency(Some(altocast_proto::VersionTag { resource_id: nm_id.clone(), tag: nm.tag() }));
    CostMapVersion {
        resource_id: ResourceId::new("default-cost-map").expect("id"),
        seq: 1,
        tag: cm.tag(),
        map: cm,
        network_map: Arc::new(NetworkMapVersion {
            resource_id: nm_id,
            seq: 1,
            tag: nm.tag(),
            map: nm,
            expires_at_ms: 0,
        }),
        expires_at_ms: 0,
    }
}

fn ln_choose(n: usize, k: usize) -> f64 {
    (1..=k).map(|i| ((n - k + i) as f64).ln() - (i as f64).ln()).sum()
}

/// P(exactly j of the `REPLY` random peers are among the `good` ones).
fn hypergeometric(j: usize, good: usize) -> f64 {
    (ln_choose(good, j) + ln_choose(PEERS - good, REPLY - j) - ln_choose(PEERS, REPLY)).exp()
}

/// For `trials` random tracker replies, how many contained j local peers.
fn simulate(peers: &[IpAddr], trials: usize, seed: u64) -> Vec<usize> {
    let local = |ip: &IpAddr| matches!(ip, IpAddr::V4(a) if a.octets()[2] == 0);
    let mut rng = SplitMix64::new(seed);
    let mut hist = vec![0usize; REPLY + 1];
    let mut idx: Vec<usize> = (0..PEERS).collect();
    for _ in 0..trials {
        // A random 100-peer reply without replacement (partial Fisher–Yates).
        for k in 0..REPLY {
            let j = k + rng.below(PEERS - k);
            idx.swap(k, j);
        }
        hist[idx[..REPLY].iter().filter(|&&i| local(&peers[i])).count()] += 1;
    }
    hist
}

fn swarm() -> Vec<IpAddr> {
    (0..PEERS).map(|i| IpAddr::V4(std::net::Ipv4Addr::new(10, 0, (i / 100) as u8, (i % 100 + 1) as u8))).collect()
}

fn main() {
    let cm = maps();
    // Peer i lives in PID i / 100; the requester is in PID 0, like peers 0..100.
    let peers = swarm();
    let requester = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 200));
    let local = |ip: &IpAddr| matches!(ip, IpAddr::V4(a) if a.octets()[2] == 0);
    let good = peers.iter().filter(|p| local(p)).count();

    let hist = simulate(&peers, TRIALS, 1);
    let sim = |pred: &dyn Fn(usize) -> bool| {
        (0..=REPLY).filter(|&j| pred(j)).map(|j| hist[j]).sum::<usize>() as f64 / TRIALS as f64
    };
    let ana =
        |pred: &dyn Fn(usize) -> bool| (0..=REPLY).filter(|&j| pred(j)).map(|j| hypergeometric(j, good)).sum::<f64>();

    let ranked = rank(&cm, requester, &peers);
    let alto = ranked.iter().take(REPLY).filter(|r| local(&r.peer)).count();

    println!(
        "swarm {PEERS} peers, {good} in the requester's PID, tracker reply {REPLY} peers, {TRIALS} random replies simulated"
    );
    println!("{:<40} {:>10} {:>10}", "", "simulated", "analytic");
    println!("{:<40} {:>10.4} {:>10.4}", "P(no peer from the requester's PID)", sim(&|j| j == 0), ana(&|j| j == 0));
    println!("{:<40} {:>10.4} {:>10.4}", "P(at most 4 from the requester's PID)", sim(&|j| j <= 4), ana(&|j| j <= 4));
    println!(
        "{:<40} {:>10.2} {:>10.2}",
        "mean peers from the requester's PID",
        (0..=REPLY).map(|j| j * hist[j]).sum::<usize>() as f64 / TRIALS as f64,
        (REPLY * good) as f64 / PEERS as f64
    );
    println!("ALTO-ranked reply (altocast_client::rank): {alto} of {REPLY} from the requester's PID");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_figures_match_the_analytic_ones_and_alto_finds_all_neighbours() {
        let peers = swarm();
        let trials = 4000;
        let hist = simulate(&peers, trials, 7);
        for (name, pred) in
            [("none", &(|j: usize| j == 0) as &dyn Fn(usize) -> bool), ("at most 4", &|j: usize| j <= 4)]
        {
            let sim = (0..=REPLY).filter(|&j| pred(j)).map(|j| hist[j]).sum::<usize>() as f64 / trials as f64;
            let p = (0..=REPLY).filter(|&j| pred(j)).map(|j| hypergeometric(j, 100)).sum::<f64>();
            let sigma = (p * (1.0 - p) / trials as f64).sqrt().max(1e-3);
            assert!((sim - p).abs() < 4.0 * sigma, "{name}: simulated {sim:.4}, analytic {p:.4}");
        }
        assert!((hypergeometric(0, 100) - 0.364).abs() < 0.005, "≈36% get no neighbour");
        let cm = maps();
        let ranked = rank(&cm, IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 200)), &peers);
        let local = ranked.iter().take(REPLY).filter(|r| matches!(r.peer, IpAddr::V4(a) if a.octets()[2] == 0)).count();
        assert_eq!(local, 100);
    }
}
