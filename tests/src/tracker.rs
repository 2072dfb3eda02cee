//! The tracker scenario (README "Tracker"), shared by `tests/tracker.rs` and
//! the `tracker-demo` binary: two ISPs, each a real origin ([`TestOrigin`])
//! with its own root and maps serving the RFC 7285 IRD over HTTP, a real DNS
//! server ([`TestDns`]) with an RFC 8686 U-NAPTR record for each ISP's /16
//! pointing at its IRD, and a swarm of 10,000 peers across both.
//!
//! ISP `west` is 10.1.0.0/16, ISP `east` 10.2.0.0/16; each network map has
//! [`PIDS`] PIDs, one /24 each (`west-007` = 10.1.7.0/24). The swarm has
//! [`PEERS_PER_PID`] peers in each of the first [`SWARM_PIDS`] PIDs of both:
//! 10,000 peers. A requester joins at host .200 of one of those PIDs, so 100
//! swarm peers are *favourable* (its PID) — the classic tracker figure: a
//! random 100-peer reply has none of them ~36 % of the time.
//!
//! Also: [`grpc_rank`] (the tracker's gRPC `Rank`, compared with `POST /rank`
//! through [`peer_tuple`]), and [`TestIrd`], an IRD whose content a test
//! changes while a tracker follows it (a domain moving its servers).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use altocast_client::domains::{DomainsConfig, TrustScope};
use altocast_proto::{
    CostMapBuilder, CostType, NetworkMap, Pid, PidPrefixes, PublicKey, ResourceId, VersionTag, model::json, pb,
};
use altocast_server::workload::SplitMix64;

use crate::{
    NM, OriginOptions, TestOrigin,
    dns::{Naptr, TestDns, alto},
};

/// PIDs in each ISP's network map.
pub const PIDS: usize = 100;
/// PIDs of each ISP that hold swarm peers.
pub const SWARM_PIDS: usize = 50;
/// Swarm peers per PID.
pub const PEERS_PER_PID: usize = 100;
/// Peers per tracker reply.
pub const REPLY: usize = 100;
/// The cost map every ISP publishes.
pub const CM: &str = "default-cost-map";

/// One ISP: its origin, IRD and trust root.
pub struct Isp {
    /// Its name and PID prefix (`west`, `east`).
    pub name: &'static str,
    /// The second octet of its 10.X.0.0/16.
    pub octet: u8,
    /// The origin (gRPC), advertising its URL in the IRD.
    pub origin: TestOrigin,
    /// Where its RFC 7285 HTTP interface listens.
    pub http: SocketAddr,
    /// Its IRD URI (what DNS points at).
    pub ird: String,
}

impl Isp {
    /// Starts the ISP's origin with its maps and its IRD.
    pub async fn start(name: &'static str, octet: u8) -> Isp {
        let http = std::net::TcpListener::bind("127.0.0.1:0").expect("bind HTTP");
        let addr = http.local_addr().expect("HTTP address");
        let opts = Self::options(http);
        let origin = TestOrigin::start_with(opts, None).await;
        let isp = Isp { name, octet, origin, http: addr, ird: format!("http://{addr}/directory") };
        isp.publish().await;
        isp
    }

    fn options(http: std::net::TcpListener) -> OriginOptions {
        OriginOptions { alto_http: Some(Arc::new(Mutex::new(Some(http)))), advertise_grpc: true, ..Default::default() }
    }

    async fn publish(&self) {
        let (nm, cm) = maps(self.name, self.octet);
        self.origin.publish(NM, &nm).await.expect("network map published");
        self.origin.publish(CM, &cm).await.expect("cost map published");
    }

    /// Stops the origin (gRPC and IRD); returns what [`Isp::restart`] needs.
    pub async fn stop(self) -> StoppedIsp {
        let port = self.origin.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("gRPC port");
        let data = self.origin.stop().await;
        StoppedIsp { name: self.name, octet: self.octet, http: self.http, grpc_port: port, data }
    }

    /// The origin id (its first root's key id).
    pub fn origin_id(&self) -> String {
        self.root().id().to_string()
    }

    /// Its root key.
    pub fn root(&self) -> PublicKey {
        self.origin.root_trusted().trusted_root().expect("root").clone()
    }

    /// Its root key file (SPKI PEM).
    pub fn root_path(&self) -> PathBuf {
        self.origin.root_pub_path()
    }

    /// The RFC 8686 record for its /16 (`X.10.in-addr.arpa.`) pointing at its IRD.
    pub fn record(&self) -> Naptr {
        alto(&format!("{}.10.in-addr.arpa.", self.octet), &self.ird)
    }

    /// The PID name of `ip` in this ISP's map.
    pub fn pid_of(&self, ip: IpAddr) -> Option<String> {
        match ip {
            IpAddr::V4(a) if a.octets()[..2] == [10, self.octet] && usize::from(a.octets()[2]) < PIDS => {
                Some(format!("{}-{:03}", self.name, a.octets()[2]))
            }
            _ => None,
        }
    }
}

/// A stopped ISP, to restart on the same ports with the same data.
pub struct StoppedIsp {
    name: &'static str,
    octet: u8,
    http: SocketAddr,
    grpc_port: u16,
    data: Arc<tempfile::TempDir>,
}

impl StoppedIsp {
    /// Starts it again where it was (same IRD, same gRPC URL, same keys).
    pub async fn restart(self) -> Isp {
        let http = std::net::TcpListener::bind(self.http).expect("rebind HTTP");
        let origin = TestOrigin::start_on_port(Isp::options(http), self.data, self.grpc_port).await;
        Isp {
            name: self.name,
            octet: self.octet,
            origin,
            http: self.http,
            ird: format!("http://{}/directory", self.http),
        }
    }
}

/// ISP `name`'s network map and cost map bodies (RFC 7285 JSON). West's
/// costs are ring distances between PIDs, east's twice the linear distance:
/// two different maps, each with the cheapest path inside a PID.
pub fn maps(name: &str, octet: u8) -> (String, String) {
    let pid = |i: usize| Pid::new(&format!("{name}-{i:03}")).expect("pid");
    let mut prefixes = std::collections::BTreeMap::new();
    for i in 0..PIDS {
        let p = PidPrefixes::parse("pid", &[format!("10.{octet}.{i}.0/24")], &[] as &[String]).expect("prefix");
        prefixes.insert(pid(i), p);
    }
    let nm = NetworkMap::new(prefixes).expect("network map");
    let nm_id = ResourceId::new(NM).expect("id");
    let mut b = CostMapBuilder::new(CostType::routingcost(), None);
    for s in 0..PIDS {
        let row = (0..PIDS)
            .map(|d| {
                let ring = s.abs_diff(d).min(PIDS - s.abs_diff(d));
                let cost = if name == "west" { 1 + ring } else { 1 + 2 * s.abs_diff(d) };
                (pid(d), cost as f64)
            })
            .collect();
        b.row(pid(s), row);
    }
    let cm =
        b.build().expect("cost map").with_dependency(Some(VersionTag { resource_id: nm_id.clone(), tag: nm.tag() }));
    (json::network_map_json(&nm_id, &nm), json::cost_map_json(&cm))
}

/// The swarm: [`PEERS_PER_PID`] peers (hosts .1–.100) in each of the first
/// [`SWARM_PIDS`] PIDs of each ISP (10,000 peers).
pub fn swarm(octets: &[u8]) -> Vec<IpAddr> {
    let mut v = Vec::new();
    for &o in octets {
        for pid in 0..SWARM_PIDS {
            for h in 1..=PEERS_PER_PID {
                v.push(IpAddr::V4(Ipv4Addr::new(10, o, pid as u8, h as u8)));
            }
        }
    }
    v
}

/// Whether `peer` is in `requester`'s PID (same /24 of the same ISP).
pub fn favourable(requester: IpAddr, peer: IpAddr) -> bool {
    match (requester, peer) {
        (IpAddr::V4(r), IpAddr::V4(p)) => r.octets()[..3] == p.octets()[..3],
        _ => false,
    }
}

/// A joining requester: host .200 of a random swarm PID of ISP `octet`.
pub fn requester(rng: &mut SplitMix64, octet: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, octet, rng.below(SWARM_PIDS) as u8, 200))
}

/// Fisher–Yates shuffle.
pub fn shuffle<T>(v: &mut [T], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

/// The two ISPs and the DNS server pointing at them.
pub struct Scenario {
    /// `west` (10.1.0.0/16) and `east` (10.2.0.0/16).
    pub isps: Vec<Isp>,
    /// The DNS server with one record per ISP (plus `extra`).
    pub dns: TestDns,
}

impl Scenario {
    /// Starts both ISPs and a DNS server with their records and `extra` ones.
    pub async fn start(extra: Vec<Naptr>) -> Scenario {
        let (west, east) = tokio::join!(Isp::start("west", 1), Isp::start("east", 2));
        let mut records = vec![west.record(), east.record()];
        records.extend(extra);
        let dns = TestDns::start(records).await;
        Scenario { isps: vec![west, east], dns }
    }

    /// A tracker configuration trusting both ISPs' roots by origin id, asking
    /// this DNS server, with loopback http IRDs allowed, the swarm's private
    /// 10.0.0.0/8 addresses walked (`discover_private`: RFC 8686 discovery
    /// skips them by default) and test-sized timers.
    pub fn tracker_config(&self) -> DomainsConfig {
        let mut cfg = DomainsConfig::new();
        cfg.discovery.dns = Some(self.dns.addr);
        cfg.discovery.allow_loopback_http = true;
        cfg.discovery.discover_private = true;
        cfg.roots = self.isps.iter().map(|i| (TrustScope::Origin(i.origin_id()), i.root())).collect();
        cfg.down_after = Duration::from_millis(500);
        cfg.backoff_max = Duration::from_millis(300);
        cfg.retry_after = Duration::from_secs(1);
        cfg.resolve_deadline = Duration::from_secs(120);
        cfg
    }

    /// The swarm of both ISPs.
    pub fn swarm(&self) -> Vec<IpAddr> {
        swarm(&self.isps.iter().map(|i| i.octet).collect::<Vec<_>>())
    }
}

/// One HTTP/1.1 request with a JSON body to the tracker; returns (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let r = crate::http::exchange(addr, method, path, "", body, Duration::from_secs(120)).await;
    (r.status, r.body)
}

/// A `POST /rank` body.
pub fn rank_body(requester: IpAddr, candidates: &[IpAddr], count: usize) -> String {
    serde_json::json!({
        "requester": requester.to_string(),
        "candidates": candidates.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "count": count,
    })
    .to_string()
}

/// `POST /rank` on a tracker at `addr`: the reply's peers as JSON values.
pub async fn post_rank(
    addr: SocketAddr,
    requester: IpAddr,
    candidates: &[IpAddr],
    count: usize,
) -> Vec<serde_json::Value> {
    let (status, body) = http(addr, "POST", "/rank", &rank_body(requester, candidates, count)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON reply");
    v["peers"].as_array().cloned().expect("peers array")
}

/// What many tracker replies contained, counted (never computed).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Replies counted.
    pub replies: usize,
    /// Replies with no favourable peer.
    pub none: usize,
    /// Replies with at most four.
    pub at_most_4: usize,
    /// Favourable peers in all replies.
    pub favourable: usize,
}

impl Tally {
    /// Counts one reply.
    pub fn add(&mut self, requester: IpAddr, reply: &[IpAddr]) {
        let k = reply.iter().filter(|p| favourable(requester, **p)).count();
        self.replies += 1;
        self.none += usize::from(k == 0);
        self.at_most_4 += usize::from(k <= 4);
        self.favourable += k;
    }

    /// Share of replies with no favourable peer.
    pub fn share_none(&self) -> f64 {
        self.none as f64 / self.replies.max(1) as f64
    }

    /// Share of replies with at most four.
    pub fn share_at_most_4(&self) -> f64 {
        self.at_most_4 as f64 / self.replies.max(1) as f64
    }

    /// Mean favourable peers per reply.
    pub fn mean(&self) -> f64 {
        self.favourable as f64 / self.replies.max(1) as f64
    }
}

/// A tracker without ALTO: the same code (`Domains` behind `POST /rank`)
/// asking a DNS server that has no ALTO record, so every address has no
/// server and a reply is the first [`REPLY`] candidates in the order given.
/// Returns its address, the DNS server and the token that stops it.
pub async fn plain_tracker() -> (SocketAddr, TestDns, tokio_util::sync::CancellationToken) {
    let dns = TestDns::start(vec![]).await;
    let mut cfg = DomainsConfig::new();
    cfg.discovery.dns = Some(dns.addr);
    let stop = tokio_util::sync::CancellationToken::new();
    let domains = altocast_client::Domains::new(cfg, stop.clone()).expect("tracker");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(altocast_client::tracker::serve(domains, listener, Default::default(), stop.clone()));
    (addr, dns, stop)
}

/// Sends `requests` ranking requests to the tracker at `ranked` and the same
/// to the tracker without ALTO at `plain` ([`plain_tracker`]), alternating
/// the requester's ISP, each with the whole swarm shuffled as candidates:
/// the tallies of the plain tracker's replies (random: the candidates are in
/// random order) and of the ranked ones.
pub async fn measure(
    ranked_at: SocketAddr,
    plain: SocketAddr,
    isps: &[&Isp],
    swarm: &[IpAddr],
    requests: usize,
    seed: u64,
) -> (Tally, Tally) {
    let mut rng = SplitMix64::new(seed);
    let ids: Vec<String> = isps.iter().map(|i| i.origin_id()).collect();
    let (mut random, mut ranked) = (Tally::default(), Tally::default());
    let mut candidates = swarm.to_vec();
    for i in 0..requests {
        let isp = isps[i % isps.len()];
        let req = requester(&mut rng, isp.octet);
        shuffle(&mut candidates, &mut rng);
        let plain_reply = post_rank(plain, req, &candidates, REPLY).await;
        let plain_ips: Vec<IpAddr> =
            plain_reply.iter().map(|p| p["ip"].as_str().and_then(|s| s.parse().ok()).expect("ip in reply")).collect();
        assert_eq!(plain_ips.len(), REPLY, "a full reply");
        random.add(req, &plain_ips);
        let peers = post_rank(ranked_at, req, &candidates, REPLY).await;
        let ips: Vec<IpAddr> =
            peers.iter().map(|p| p["ip"].as_str().and_then(|s| s.parse().ok()).expect("ip in reply")).collect();
        assert_eq!(ips.len(), REPLY, "a full reply");
        // The tracker's own PIDs agree with the ground truth of the maps.
        for (p, ip) in peers.iter().zip(&ips) {
            if let Some((owner, id)) = isps.iter().zip(&ids).find(|(x, _)| x.pid_of(*ip).is_some()) {
                assert_eq!(p["pid"].as_str(), owner.pid_of(*ip).as_deref(), "{p}");
                assert_eq!(p["domain"].as_str(), Some(id.as_str()), "{p}");
            }
        }
        ranked.add(req, &ips);
    }
    (random, ranked)
}

/// The tracker's gRPC `Rank` at `addr` (h2c on its `--listen` port).
pub async fn grpc_rank(
    addr: SocketAddr,
    requester: &str,
    candidates: Vec<String>,
    count: u32,
) -> Result<Vec<pb::RankedPeer>, tonic::Status> {
    let mut c = pb::tracker_client::TrackerClient::connect(format!("http://{addr}")).await.expect("gRPC connect");
    let req = pb::RankRequest { requester: requester.into(), candidates, count };
    Ok(c.rank(req).await?.into_inner().peers)
}

/// One ranked peer as `(ip, domain, pid, cost, standing)`, from a `POST /rank`
/// reply's JSON entry.
pub type PeerTuple = (String, Option<String>, Option<String>, Option<f64>, String);

/// A `POST /rank` entry as a [`PeerTuple`].
pub fn peer_tuple(p: &serde_json::Value) -> PeerTuple {
    let s = |k: &str| p[k].as_str().map(str::to_owned);
    (s("ip").expect("ip"), s("domain"), s("pid"), p["cost"].as_f64(), s("standing").expect("standing"))
}

/// A gRPC `RankedPeer` as a [`PeerTuple`] (`STANDING_OTHER_DOMAIN` →
/// `other-domain`, as the JSON spells it).
pub fn grpc_tuple(p: &pb::RankedPeer) -> PeerTuple {
    let standing = pb::Standing::try_from(p.standing).map_or("?", |s| s.as_str_name());
    let standing = standing.trim_start_matches("STANDING_").to_ascii_lowercase().replace('_', "-");
    (p.ip.clone(), p.domain.clone(), p.pid.clone(), p.cost, standing)
}

/// An IRD served on loopback whose body a test sets ([`TestIrd::set`]),
/// as `GET /directory` with any path: a domain whose IRD changes.
pub struct TestIrd {
    /// Its URI (what DNS points at).
    pub uri: String,
    body: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

/// An RFC 7285 IRD naming `grpc` in `meta.altocast`, with an origin id and
/// a root key id if given.
pub fn ird_body(grpc: &[&str], origin_id: Option<&str>, root_key_id: Option<&str>) -> String {
    let mut a = serde_json::json!({ "grpc": grpc });
    if let Some(o) = origin_id {
        a["origin-id"] = o.into();
    }
    if let Some(r) = root_key_id {
        a["root-key-id"] = r.into();
    }
    serde_json::json!({ "meta": { "altocast": a }, "resources": {} }).to_string()
}

impl TestIrd {
    /// Serves `body` on a loopback port.
    pub async fn start(body: String) -> TestIrd {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let body = Arc::new(Mutex::new(body));
        let shared = body.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    // The request head, then one answer and close.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
                        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    let body = shared.lock().map(|b| b.clone()).unwrap_or_default();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/alto-directory+json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        TestIrd { uri: format!("http://{addr}/directory"), body, task }
    }

    /// Serves `body` from now on.
    pub fn set(&self, body: String) {
        if let Ok(mut b) = self.body.lock() {
            *b = body;
        }
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}
