//! The multi-domain tracker (DESIGN §6b) end to end on loopback: two ISPs'
//! real origins with different maps and roots serving their RFC 7285 IRDs, a
//! real DNS server with an RFC 8686 record per ISP, and a tracker — the
//! `Domains` library behind `POST /rank`, and `altocast tracker` as a
//! process — that discovers both, subscribes, verifies and ranks for
//! requesters in both domains. Also: a record pointing at a node whose root
//! is not trusted is refused (unconfigured, mismatched, or against a pin); a
//! domain that goes down ranks last without touching the other, and is used
//! again when it comes back. The gRPC `Rank` of the tracker process answers
//! exactly what `POST /rank` answers, under the same limits; a domain whose
//! IRD moves its gRPC endpoints is followed there without a restart, and an
//! IRD that starts naming another origin or root is refused.

use std::{
    io::BufRead as _,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use altocast_client::{
    Domains,
    domains::{DomainError, DomainsConfig, Standing, TrustScope},
    tracker::TrackerLimits,
};
use altocast_tests::{
    TestRproxy,
    dns::{TestDns, alto},
    tracker::{
        Isp, REPLY, Scenario, TestIrd, grpc_rank, grpc_tuple, http, ird_body, measure, peer_tuple, post_rank, rank_body,
    },
};
use tokio_util::sync::CancellationToken;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP address")
}

/// A tracker over `domains` on a loopback port.
async fn serve(domains: &Domains, stop: &CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(altocast_client::tracker::serve(domains.clone(), listener, TrackerLimits::default(), stop.clone()));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_ranks_each_requester_against_its_own_domain_and_beats_random_replies() {
    let sc = Scenario::start(vec![]).await;
    let (west, east) = (&sc.isps[0], &sc.isps[1]);
    let stop = CancellationToken::new();
    let domains = Domains::new(sc.tracker_config(), stop.clone()).expect("tracker");
    let addr = serve(&domains, &stop).await;
    let swarm = sc.swarm();
    assert_eq!(swarm.len(), 10_000);

    // The first request maps all 10,000 addresses: two domains, two
    // subscriptions, and each /24 and /16 name asked once.
    let peers = post_rank(addr, ip("10.1.7.200"), &swarm, REPLY).await;
    let s = domains.stats();
    assert_eq!((s.subscriptions, s.domains, s.domains_refused), (2, 2, 0), "{s:?}");
    assert_eq!(domains.origins().len(), 2);
    // /32 of each peer and the requester, /24 of each swarm PID, the two /16s.
    assert_eq!(s.dns_lookups, 10_001 + 100 + 2, "{s:?}");
    // West's requester in west-007 gets the 100 peers of west-007 first (cost 1).
    assert_eq!(peers.len(), REPLY);
    for p in &peers {
        assert_eq!(p["pid"], "west-007", "{p}");
        assert_eq!((p["domain"].as_str(), p["cost"].as_f64()), (Some(west.origin_id().as_str()), Some(1.0)), "{p}");
    }

    // The same swarm again: no DNS lookup at all, no new subscription.
    let again = post_rank(addr, ip("10.1.7.200"), &swarm, 3).await;
    assert_eq!(again.len(), 3);
    let s2 = domains.stats();
    assert_eq!((s2.dns_lookups, s2.subscriptions), (s.dns_lookups, 2), "{s2:?}");

    // The whole order for an east requester: east by east's costs (its own
    // map: 1 + 2·|i − j|), then west's peers, unpriced.
    let all = domains.rank(ip("10.2.10.200"), &swarm, swarm.len()).await.expect("ranked");
    assert_eq!(all.len(), swarm.len());
    let (own, other) = all.split_at(5000);
    assert!(own.iter().all(|r| r.standing == Standing::Priced && r.domain.as_deref() == Some(&*east.origin_id())));
    assert!(own.windows(2).all(|w| w[0].cost <= w[1].cost), "ascending cost");
    assert_eq!((own[0].cost, own[99].cost, own[100].cost), (Some(1.0), Some(1.0), Some(3.0)));
    assert_eq!(own[100].pid.as_deref().map(|p| &p[..7]), Some("east-00"), "a neighbouring PID (9 or 11) next");
    assert!(other.iter().all(|r| r.standing == Standing::OtherDomain && r.cost.is_none()), "west after east");

    // Discovering each peer's /24 (RFC 8686 takes a prefix) asks one name
    // per /24 and the /16s: 102 lookups instead of 10,103, the same ranking.
    let mut cfg = sc.tracker_config();
    cfg.prefix_v4 = 24;
    let by_24 = Domains::new(cfg, stop.clone()).expect("tracker");
    let r = by_24.rank(ip("10.1.7.200"), &swarm, REPLY).await.expect("ranked");
    assert!(r.iter().all(|x| x.pid.as_deref() == Some("west-007") && x.cost == Some(1.0)));
    assert_eq!(by_24.stats().dns_lookups, 100 + 2);
    by_24.stop().await;

    // An operator-set inter-domain cost prices other domains' peers among the
    // requester's own: here between the neighbouring PID (2) and a far one (38).
    let mut cfg = sc.tracker_config();
    cfg.inter_domain_cost = Some(2.5);
    let priced = Domains::new(cfg, stop.clone()).expect("tracker");
    let candidates = ["10.1.40.9", "10.2.3.1", "10.1.4.1", "10.1.3.1", "10.9.0.1"].map(ip);
    let r = priced.rank(ip("10.1.3.200"), &candidates, 5).await.expect("ranked");
    let got: Vec<(String, Option<f64>)> = r.iter().map(|x| (x.ip.to_string(), x.cost)).collect();
    let want = [("10.1.3.1", Some(1.0)), ("10.1.4.1", Some(2.0)), ("10.2.3.1", Some(2.5)), ("10.1.40.9", Some(38.0))];
    assert_eq!(&got[..4], want.map(|(a, c)| (a.to_owned(), c)));
    assert_eq!((r[4].ip, r[4].standing), (ip("10.9.0.1"), Standing::NoServer));
    priced.stop().await;

    // Measured over many requests, alternating the requester's domain.
    let isps: Vec<&Isp> = sc.isps.iter().collect();
    let (plain, plain_dns, plain_stop) = altocast_tests::tracker::plain_tracker().await;
    let (random, ranked) = measure(addr, plain, &isps, &swarm, 40, 7).await;
    plain_stop.cancel();
    plain_dns.stop().await;
    assert_eq!((ranked.none, ranked.at_most_4), (0, 0), "every ranked reply has its 100 neighbours");
    assert_eq!(ranked.mean(), 100.0);
    assert!(random.mean() < 3.0 && random.share_at_most_4() > 0.9, "random replies: {random:?}");
    println!(
        "random: none {:.3} ≤4 {:.3}; ranked: none {:.3} ≤4 {:.3}",
        random.share_none(),
        random.share_at_most_4(),
        ranked.share_none(),
        ranked.share_at_most_4()
    );
    // 41 new requesters (10.2.10.200 and the measured ones): one new /32 name each at most.
    assert!(domains.stats().dns_lookups <= s.dns_lookups + 41);

    domains.stop().await;
    stop.cancel();
    for isp in sc.isps {
        isp.origin.stop().await;
    }
    sc.dns.stop().await;
}

/// `altocast tracker` as users run it; stopped (killed) on drop.
struct TrackerProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl TrackerProcess {
    fn start(args: &[String]) -> TrackerProcess {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_altocast-under-test"))
            .arg("tracker")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("run altocast tracker");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).expect("first line");
        let addr = line
            .trim()
            .strip_prefix("altocast tracker listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        TrackerProcess { child, addr }
    }
}

impl Drop for TrackerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_altocast_tracker_process_serves_both_domains_with_bounded_requests() {
    let sc = Scenario::start(vec![]).await;
    let (west, east) = (&sc.isps[0], &sc.isps[1]);
    let (tracker, addr, metrics) =
        start_tracker(&sc, &["--max-connections", "3", "--header-timeout-secs", "1", "--body-timeout-secs", "1"]).await;

    // A few peers of each domain: each requester gets its own PID's first.
    let candidates: Vec<IpAddr> =
        ["10.2.3.1", "10.1.3.1", "10.1.4.1", "10.2.4.1", "10.1.40.9", "10.2.3.2", "10.9.0.1"].map(ip).to_vec();
    let west_reply = post_rank(addr, ip("10.1.3.200"), &candidates, 50).await;
    let order: Vec<&str> = west_reply.iter().map(|p| p["ip"].as_str().unwrap_or_default()).collect();
    assert_eq!(order, ["10.1.3.1", "10.1.4.1", "10.1.40.9", "10.2.3.1", "10.2.4.1", "10.2.3.2", "10.9.0.1"]);
    assert_eq!(west_reply[0]["pid"], "west-003");
    assert_eq!(west_reply[0]["domain"].as_str(), Some(west.origin_id().as_str()));
    assert_eq!((west_reply[1]["cost"].as_f64(), west_reply[2]["cost"].as_f64()), (Some(2.0), Some(38.0)));
    assert_eq!(west_reply[3]["domain"].as_str(), Some(east.origin_id().as_str()));
    assert!(west_reply[3]["cost"].is_null());
    let none = &west_reply[6];
    assert!(none["domain"].is_null() && none["pid"].is_null() && none["cost"].is_null(), "no ALTO server: {none}");
    let east_reply = post_rank(addr, ip("10.2.3.200"), &candidates, 2).await;
    let order: Vec<&str> = east_reply.iter().map(|p| p["ip"].as_str().unwrap_or_default()).collect();
    assert_eq!(order, ["10.2.3.1", "10.2.3.2"]);
    assert_eq!(east_reply[0]["pid"], "east-003");

    let (status, body) = http(addr, "GET", "/stats", "").await;
    assert_eq!(status, 200, "{body}");
    let stats: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(stats["stats"]["subscriptions"], 2, "{stats}");
    assert_eq!(stats["domains"].as_array().map(Vec::len), Some(2), "{stats}");

    // Bad requests: 4xx naming what is wrong.
    let bad = |body: String| async move { http(addr, "POST", "/rank", &body).await };
    let (status, body) = bad(r#"{"requester":"10.1.0.1","candidates":["10.1.0.2","nope"],"count":1}"#.into()).await;
    assert_eq!(status, 400);
    assert!(body.contains("candidates[1]") && body.contains("\\\"nope\\\" is not an IP address"), "{body}");
    let (status, body) = bad(rank_body(ip("10.1.0.1"), &candidates, 0)).await;
    assert!(status == 400 && body.contains("count 0 is not within 1..=50"), "{status} {body}");
    let (status, body) = bad(rank_body(ip("10.1.0.1"), &candidates, 51)).await;
    assert!(status == 400 && body.contains("count 51"), "{status} {body}");
    let many: Vec<IpAddr> = (0..3001u32).map(|i| IpAddr::V4((0x0a01_0000 + i).into())).collect();
    let (status, body) = bad(rank_body(ip("10.1.0.1"), &many, 1)).await;
    assert!(status == 400 && body.contains("3001 candidates, more than the 3000 allowed"), "{status} {body}");
    let huge = format!(r#"{{"requester":"10.1.0.1","candidates":[],"count":1,"pad":"{}"}}"#, "x".repeat(200_001));
    let (status, body) = bad(huge).await;
    assert!(status == 413 && body.contains("over 200000 bytes"), "{status} {body}");
    let (status, body) = bad(r#"{"requester":"10.1.0.1","candidates":[],"count":1,"extra":1}"#.into()).await;
    assert!(status == 400 && body.contains("unknown field `extra`"), "{status} {body}");
    let (status, _) = http(addr, "GET", "/nowhere", "").await;
    assert_eq!(status, 404);

    // Connections: a body that never comes gets 408; an idle connection is
    // closed after the header timeout; one over the cap is closed at once.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"POST /rank HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n{").await.expect("write");
    let mut answer = vec![0u8; 512];
    let n =
        tokio::time::timeout(Duration::from_secs(5), slow.read(&mut answer)).await.expect("408 in time").expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("not received within 1 s"), "{answer}");
    // The tracker closes it after the 408; only then is its slot free for
    // the three below (else the third would be the one refused).
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await.expect("closed after 408").ok();
    drop(slow);
    // The slot is released just after the socket closes (the task's last step).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let mut idle: Vec<tokio::net::TcpStream> = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let mut over = tokio::net::TcpStream::connect(addr).await.expect("the kernel accepts");
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_millis(500), over.read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a fourth connection is closed at once: {closed:?}");
    for c in &mut idle {
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut byte)).await.expect("closed in time");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(4), "idle closed after {waited:?}");

    // The counters, for Prometheus.
    assert_metrics(
        metrics,
        &[
            "altocast_tracker_subscriptions_total 2",
            "altocast_tracker_domains 2",
            "altocast_tracker_dns_lookups_total{outcome=\"found\"} 2",
            "altocast_tracker_refused_total{reason=\"count\"} 2",
            "altocast_tracker_refused_total{reason=\"body_too_large\"} 1",
            "altocast_tracker_refused_total{reason=\"body_timeout\"} 1",
            "altocast_tracker_refused_total{reason=\"connections\"} 1",
        ],
    )
    .await;

    drop(tracker);
    for isp in sc.isps {
        isp.origin.stop().await;
    }
    sc.dns.stop().await;
}

/// Starts `altocast tracker` as a process following the scenario's two
/// domains (trusting both roots), with small request limits, `extra` flags
/// and a metrics port: the process, its address and the metrics address.
async fn start_tracker(sc: &Scenario, extra: &[&str]) -> (TrackerProcess, std::net::SocketAddr, std::net::SocketAddr) {
    // The swarm lives in 10.0.0.0/8: walking it needs --discover-private.
    let mut args: Vec<String> =
        ["--listen", "127.0.0.1:0", "--dns", &sc.dns.addr.to_string(), "--allow-loopback-http", "--discover-private"]
            .map(String::from)
            .to_vec();
    for isp in &sc.isps {
        args.extend(["--trust-root".into(), format!("{}={}", isp.origin_id(), isp.root_path().display())]);
    }
    args.extend(["--max-candidates", "3000", "--max-count", "50", "--max-request-bytes", "200000"].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let metrics = free.local_addr().expect("addr");
    drop(free);
    args.extend(["--metrics".into(), metrics.to_string()]);
    let tracker = tokio::task::spawn_blocking(move || TrackerProcess::start(&args)).await.expect("started");
    let addr = tracker.addr;
    (tracker, addr, metrics)
}

/// Asserts that the Prometheus text at `metrics` (once it answers) has each of `lines`.
async fn assert_metrics(metrics: std::net::SocketAddr, lines: &[&str]) {
    let mut text = String::new();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(metrics).await.is_ok() {
            text = http(metrics, "GET", "/metrics", "").await.1;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for line in lines {
        assert!(text.lines().any(|l| l == *line), "no {line:?} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_process_answers_grpc_rank_as_post_rank_and_refuses_bad_input_naming_it() {
    let sc = Scenario::start(vec![]).await;
    let (tracker, addr, metrics) = start_tracker(&sc, &[]).await;

    // The same ranking on both interfaces, member for member: for a west and
    // an east requester, over 2,000 swarm peers of both domains in a
    // shuffled order plus one address with no ALTO server.
    let mut candidates: Vec<IpAddr> = sc.swarm().into_iter().step_by(5).collect();
    let mut rng = altocast_server::workload::SplitMix64::new(11);
    altocast_tests::tracker::shuffle(&mut candidates, &mut rng);
    candidates.push(ip("10.9.0.1"));
    let texts: Vec<String> = candidates.iter().map(ToString::to_string).collect();
    for (requester, count) in [("10.1.3.200", 50), ("10.2.7.200", 50), ("10.1.3.200", 7)] {
        let json = post_rank(addr, ip(requester), &candidates, count).await;
        let grpc = grpc_rank(addr, requester, texts.clone(), count as u32).await.expect("gRPC Rank");
        let json: Vec<_> = json.iter().map(peer_tuple).collect();
        let grpc: Vec<_> = grpc.iter().map(grpc_tuple).collect();
        assert_eq!(grpc.len(), count);
        assert_eq!(grpc, json, "gRPC and POST /rank differ for {requester}");
        assert_eq!(grpc[0].4, "priced", "{:?}", grpc[0]);
    }
    // Every standing is carried, and the whole order: own domain, other
    // domain, no server (the reply's tail for a 3-candidate request).
    let few = ["10.2.3.1", "10.9.0.1", "10.1.3.1"].map(String::from).to_vec();
    let r = grpc_rank(addr, "10.1.3.200", few, 3).await.expect("gRPC Rank");
    let got: Vec<_> = r.iter().map(grpc_tuple).map(|t| (t.0, t.4)).collect();
    let want = [("10.1.3.1", "priced"), ("10.2.3.1", "other-domain"), ("10.9.0.1", "no-server")];
    assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())));

    // Bad input: refused with the code and a message naming what is wrong.
    let refused = |requester: &'static str, candidates: Vec<String>, count: u32| async move {
        grpc_rank(addr, requester, candidates, count).await.expect_err("refused")
    };
    let e = refused("10.1.0.1", vec!["10.1.0.2".into(), "nope".into()], 1).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert_eq!(e.message(), r#"candidates[1]: "nope" is not an IP address"#);
    let e = refused("10.1.0.300", vec![], 1).await;
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::InvalidArgument, r#"requester: "10.1.0.300" is not an IP address"#)
    );
    let e = refused("10.1.0.1", vec![], 0).await;
    assert_eq!((e.code(), e.message()), (tonic::Code::InvalidArgument, "count 0 is not within 1..=50"));
    let e = refused("10.1.0.1", vec![], 51).await;
    assert_eq!((e.code(), e.message()), (tonic::Code::InvalidArgument, "count 51 is not within 1..=50"));
    let many: Vec<String> = (0..3001u32).map(|i| std::net::Ipv4Addr::from(0x0a01_0000 + i).to_string()).collect();
    let e = refused("10.1.0.1", many, 1).await;
    assert_eq!((e.code(), e.message()), (tonic::Code::InvalidArgument, "3001 candidates, more than the 3000 allowed"));
    let e = refused("10.1.0.1", vec!["x".repeat(200_001)], 1).await;
    assert_eq!((e.code(), e.message()), (tonic::Code::ResourceExhausted, "request body over 200000 bytes"));
    // The service still answers after refusals.
    assert_eq!(grpc_rank(addr, "10.1.3.200", vec!["10.1.3.1".into()], 1).await.expect("ranked").len(), 1);

    // Health, on the same port.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("uri").connect().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.expect("connect"));
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: "altocast.v1.Tracker".into() })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    // Counted like the HTTP refusals.
    assert_metrics(
        metrics,
        &[
            "altocast_tracker_refused_total{reason=\"syntax\"} 2",
            "altocast_tracker_refused_total{reason=\"count\"} 2",
            "altocast_tracker_refused_total{reason=\"candidates\"} 1",
            "altocast_tracker_refused_total{reason=\"body_too_large\"} 1",
        ],
    )
    .await;

    drop(tracker);
    for isp in sc.isps {
        isp.origin.stop().await;
    }
    sc.dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_pointing_at_a_node_whose_root_is_not_trusted_is_refused() {
    // A third node, 10.3.0.0/16 in DNS, with a root of its own.
    let stranger = Isp::start("south", 3).await;
    let sc = Scenario::start(vec![stranger.record()]).await;
    let west = &sc.isps[0];
    let stop = CancellationToken::new();

    // The cap on domains: one followed, the next refused, naming the cap.
    let mut cfg = sc.tracker_config();
    cfg.max_domains = 1;
    let capped = Domains::new(cfg, stop.clone()).expect("tracker");
    assert_eq!(capped.domain_of(ip("10.1.0.1")).await.expect("west"), Some(west.origin_id()));
    let e = capped.domain_of(ip("10.2.0.1")).await.expect_err("over the cap");
    assert!(matches!(&e, DomainError::TooMany { max: 1, .. }), "{e}");
    assert!(e.to_string().contains("already following the maximum of 1 domains"), "{e}");
    capped.stop().await;

    // The cap on cached names: beyond it lookups still answer, uncached and counted.
    let mut cfg = sc.tracker_config();
    cfg.max_names = 4;
    let small = Domains::new(cfg, stop.clone()).expect("tracker");
    let peers = ["10.1.1.1", "10.1.2.1", "10.1.3.1", "10.1.2.2"].map(ip);
    let r = small.rank(ip("10.1.2.200"), &peers, 4).await.expect("ranked");
    assert_eq!(r.iter().map(|x| x.cost).collect::<Vec<_>>(), [Some(1.0), Some(1.0), Some(2.0), Some(2.0)]);
    let s = small.stats();
    assert!(s.names_refused > 0 && s.dns_lookups > 4, "{s:?}");
    small.stop().await;

    // Not configured, no pin directory: refused, never trusted from DNS or the IRD.
    let mut cfg = sc.tracker_config();
    cfg.retry_after = Duration::from_secs(60);
    let domains = Domains::new(cfg, stop.clone()).expect("tracker");
    let e = domains.domain_of(ip("10.3.0.1")).await.expect_err("refused");
    assert!(matches!(&e, DomainError::Untrusted { origin, .. } if *origin == stranger.origin_id()), "{e}");
    assert!(e.to_string().contains("is not trusted: no --trust-root"), "{e}");
    // Its peers rank as having no server; the trusted domains are unaffected.
    let r = domains.rank(ip("10.1.0.200"), &[ip("10.3.0.1"), ip("10.1.0.1")], 10).await.expect("ranked");
    assert_eq!((r[0].ip, r[0].standing), (ip("10.1.0.1"), Standing::Priced));
    assert_eq!((r[1].ip, r[1].standing, r[1].domain.as_deref()), (ip("10.3.0.1"), Standing::NoServer, None));
    let s = domains.stats();
    assert_eq!((s.subscriptions, s.domains_refused), (1, 1), "{s:?}");
    // Remembered: asking again within the retry interval does not refetch the IRD.
    let fetches = s.ird_fetches;
    assert!(domains.domain_of(ip("10.3.9.9")).await.is_err());
    assert_eq!(domains.stats().ird_fetches, fetches);
    domains.stop().await;

    // A root configured for the IRD host's domain that the node's key chain
    // does not lead from: refused, naming both roots.
    let mut cfg = sc.tracker_config();
    cfg.roots = vec![(TrustScope::Domain("127.0.0.1".into()), west.root())];
    let domains = Domains::new(cfg, stop.clone()).expect("tracker");
    let e = domains.domain_of(ip("10.3.0.1")).await.expect_err("refused");
    let DomainError::RootMismatch { trusted, presented, .. } = &e else { panic!("{e}") };
    assert_eq!((trusted.as_str(), presented.as_str()), (west.origin_id().as_str(), stranger.origin_id().as_str()));
    assert!(e.to_string().contains("does not lead from the trusted root"), "{e}");
    // … while west, whose chain leads from that root, is followed.
    assert_eq!(domains.domain_of(ip("10.1.0.1")).await.expect("west"), Some(west.origin_id()));
    let r = domains.rank(ip("10.1.0.200"), &[ip("10.1.0.1")], 1).await.expect("ranked");
    assert_eq!((r[0].standing, r[0].cost), (Standing::Priced, Some(1.0)));
    domains.stop().await;

    // First-use pinning: the stranger's root is pinned on first contact …
    let pins = tempfile::tempdir().expect("pin dir");
    let mut cfg = sc.tracker_config();
    cfg.pin_dir = Some(pins.path().to_path_buf());
    cfg.directory_refresh = Duration::from_millis(300);
    let domains = Domains::new(cfg.clone(), stop.clone()).expect("tracker");
    assert_eq!(domains.domain_of(ip("10.3.0.1")).await.expect("pinned"), Some(stranger.origin_id()));
    let pin = pins.path().join(format!("{}.pem", stranger.origin_id()));
    assert_eq!(std::fs::read_to_string(&pin).expect("pin file"), stranger.root().to_spki_pem());
    let r = domains.rank(ip("10.3.0.200"), &[ip("10.1.0.1"), ip("10.3.0.1")], 2).await.expect("ranked");
    assert_eq!((r[0].ip, r[0].standing, r[0].pid.as_deref()), (ip("10.3.0.1"), Standing::Priced, Some("south-000")));
    // The operator rotates the stranger's root: the pin follows the verified chain.
    let data = stranger.origin.data_path().to_path_buf();
    let root_key = altocast_server::keyring::root_key_path(&data);
    altocast_server::keyring::change(&data, &root_key, &altocast_server::keyring::Change::RotateRoot, 30)
        .expect("keys rotate-root");
    let first_pin = std::fs::read_to_string(&pin).expect("pin file");
    let stranger_id = altocast_proto::PublicKey::from_spki_pem(&first_pin).expect("pem").id().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&pin).expect("pin file") == first_pin {
        assert!(tokio::time::Instant::now() < deadline, "the pin did not follow the root rotation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `keys rotate-root` rewrote the root file: the pin holds the new root.
    assert_eq!(std::fs::read_to_string(&pin).expect("pin"), stranger.root().to_spki_pem());
    assert_ne!(stranger.root().id().as_str(), stranger_id, "a new root; the origin id stays the first root's");
    domains.stop().await;
    // A tracker starting from the moved pin accepts the stranger.
    let domains = Domains::new(cfg.clone(), stop.clone()).expect("tracker");
    assert_eq!(domains.domain_of(ip("10.3.0.1")).await.expect("pinned root"), Some(stranger_id.clone()));
    domains.stop().await;
    // … and any other root for that origin is refused afterwards.
    std::fs::write(&pin, west.root().to_spki_pem()).expect("replace the pin");
    let domains = Domains::new(cfg, stop.clone()).expect("tracker");
    let e = domains.domain_of(ip("10.3.0.1")).await.expect_err("refused against the pin");
    assert!(matches!(&e, DomainError::RootMismatch { trusted, .. } if *trusted == west.origin_id()), "{e}");
    domains.stop().await;

    stop.cancel();
    stranger.origin.stop().await;
    for isp in sc.isps {
        isp.origin.stop().await;
    }
    sc.dns.stop().await;
}

/// Ranks until `done` holds for the result (at most 20 s).
async fn rank_until(
    domains: &Domains,
    requester: &str,
    candidates: &[IpAddr],
    what: &str,
    done: impl Fn(&[altocast_client::domains::Ranked]) -> bool,
) -> Vec<altocast_client::domains::Ranked> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = domains.rank(ip(requester), candidates, candidates.len()).await.expect("ranked");
        if done(&r) {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: still {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_that_goes_down_ranks_last_without_touching_the_other_and_is_used_again_when_back() {
    let mut sc = Scenario::start(vec![]).await;
    let stop = CancellationToken::new();
    let domains = Domains::new(sc.tracker_config(), stop.clone()).expect("tracker");
    // West, east, and an address with no ALTO server.
    let candidates: Vec<IpAddr> = ["10.9.0.1", "10.2.5.1", "10.1.5.1", "10.2.6.1", "10.1.6.1"].map(ip).to_vec();
    let order = |r: &[altocast_client::domains::Ranked]| r.iter().map(|x| x.ip.to_string()).collect::<Vec<_>>();

    let up = domains.rank(ip("10.1.5.200"), &candidates, 5).await.expect("ranked");
    assert_eq!(order(&up), ["10.1.5.1", "10.1.6.1", "10.2.5.1", "10.2.6.1", "10.9.0.1"]);

    let east = sc.isps.remove(1).stop().await;
    // West's requester: west unchanged, east's peers now after the serverless one.
    let down = rank_until(&domains, "10.1.5.200", &candidates, "east down", |r| {
        r.iter().any(|x| x.standing == Standing::Down)
    })
    .await;
    assert_eq!(order(&down), ["10.1.5.1", "10.1.6.1", "10.9.0.1", "10.2.5.1", "10.2.6.1"]);
    assert_eq!(&down[..2], &up[..2], "west's own ranking is unaffected");
    assert!(down[3..].iter().all(|x| x.standing == Standing::Down && x.cost.is_none()), "{down:?}");
    // East's requester: its own domain is down, so west's peers come first.
    let r = domains.rank(ip("10.2.5.200"), &candidates, 5).await.expect("ranked");
    assert_eq!(order(&r), ["10.1.5.1", "10.1.6.1", "10.9.0.1", "10.2.5.1", "10.2.6.1"]);

    // Back on the same addresses: used again, through the same subscription.
    let east = east.restart().await;
    let back =
        rank_until(&domains, "10.2.5.200", &candidates, "east back", |r| r[0].standing == Standing::Priced).await;
    assert_eq!(order(&back), ["10.2.5.1", "10.2.6.1", "10.1.5.1", "10.1.6.1", "10.9.0.1"]);
    assert_eq!((back[0].cost, back[1].cost), (Some(1.0), Some(3.0)));
    let s = domains.stats();
    assert_eq!((s.subscriptions, s.domains), (2, 2), "{s:?}");

    domains.stop().await;
    stop.cancel();
    east.origin.stop().await;
    for isp in sc.isps {
        isp.origin.stop().await;
    }
    sc.dns.stop().await;
}

/// A TLS front on loopback with a certificate for 127.0.0.1 from a test CA,
/// forwarding every connection to `backend`: an IRD served over https.
/// Returns its address and the CA (PEM).
async fn tls_front(backend: SocketAddr) -> (SocketAddr, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    use tokio_rustls::rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    };
    let ca_key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "altocast tracker test CA");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = p.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(p, ca_key);
    let key = KeyPair::generate().expect("key");
    let leaf =
        CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params").signed_by(&key, &issuer).expect("leaf");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let (Ok(mut tls), Ok(mut plain)) =
                    (acceptor.accept(tcp).await, tokio::net::TcpStream::connect(backend).await)
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_ird_is_read_with_the_configured_ca_and_needs_no_loopback_option() {
    let west = Isp::start("west", 1).await;
    let (front, ca) = tls_front(west.http).await;
    let dns = TestDns::start(vec![alto("1.10.in-addr.arpa.", &format!("https://{front}/directory"))]).await;
    let mut cfg = DomainsConfig::new();
    cfg.discovery.dns = Some(dns.addr);
    cfg.discovery.discover_private = true;
    cfg.roots = vec![(TrustScope::Origin(west.origin_id()), west.root())];
    assert!(!cfg.discovery.allow_loopback_http, "off by default");
    let stop = CancellationToken::new();

    // The platform's roots do not know the test CA: refused at the IRD.
    let domains = Domains::new(cfg.clone(), stop.clone()).expect("tracker");
    let e = domains.domain_of(ip("10.1.0.1")).await.expect_err("unknown CA");
    assert!(matches!(&e, DomainError::Ird { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("TLS: invalid peer certificate: UnknownIssuer") || msg.contains("no CA certificate"), "{e}");
    domains.stop().await;

    // With the CA: the IRD is read over TLS, the domain followed and ranked.
    cfg.ird_ca = Some(ca.into_bytes());
    let domains = Domains::new(cfg, stop.clone()).expect("tracker");
    assert_eq!(domains.domain_of(ip("10.1.0.1")).await.expect("followed"), Some(west.origin_id()));
    let r = domains.rank(ip("10.1.2.200"), &[ip("10.1.3.1"), ip("10.1.2.1")], 2).await.expect("ranked");
    assert_eq!((r[0].ip, r[0].cost, r[1].cost), (ip("10.1.2.1"), Some(1.0), Some(2.0)));
    domains.stop().await;

    west.origin.stop().await;
    dns.stop().await;
}

/// Waits (at most 20 s) until `done` holds for `domains`' stats.
async fn stats_until(domains: &Domains, what: &str, done: impl Fn(&altocast_client::domains::Stats) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = domains.stats();
        if done(&s) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: still {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// West's cost map with the cost from west-003 to west-004 set to `cost`.
fn west_cost_map(cost: f64) -> String {
    let (_, cm) = altocast_tests::tracker::maps("west", 1);
    let mut v: serde_json::Value = serde_json::from_str(&cm).expect("cost map JSON");
    v["cost-map"]["west-003"]["west-004"] = cost.into();
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_whose_servers_move_is_followed_and_an_ird_naming_another_origin_or_root_is_refused() {
    let west = Isp::start("west", 1).await;
    let east = Isp::start("east", 2).await;
    let id = west.origin_id();
    // West's IRD, served by the test, first names RProxy r1 of west's origin.
    let r1 = TestRproxy::start_trusting_root(&[&west.origin.url], &west.root_path(), &[]).await;
    let r2 = TestRproxy::start_trusting_root(&[&west.origin.url], &west.root_path(), &[]).await;
    let ird = TestIrd::start(ird_body(&[&r1.url], Some(&id), None)).await;
    let dns = TestDns::start(vec![alto("1.10.in-addr.arpa.", &ird.uri)]).await;
    let mut cfg = DomainsConfig::new();
    cfg.discovery.dns = Some(dns.addr);
    cfg.discovery.allow_loopback_http = true;
    // The peers live in 10.0.0.0/8 (RFC 1918).
    cfg.discovery.discover_private = true;
    cfg.roots = vec![(TrustScope::Origin(id.clone()), west.root())];
    cfg.down_after = Duration::from_millis(500);
    cfg.backoff_max = Duration::from_millis(300);
    cfg.retry_after = Duration::from_secs(1);
    cfg.ird_refresh = Duration::from_millis(500);
    let stop = CancellationToken::new();
    let domains = Domains::new(cfg.clone(), stop.clone()).expect("tracker");
    let candidates = ["10.1.4.1", "10.1.3.1"].map(ip);
    let cost_of_4 =
        |want: f64| move |r: &[altocast_client::domains::Ranked]| r.get(1).and_then(|x| x.cost) == Some(want);
    rank_until(&domains, "10.1.3.200", &candidates, "west through r1", cost_of_4(2.0)).await;
    assert_eq!(domains.endpoints_of(&id), Some(vec![r1.url.clone()]));

    // The IRD now names r2: the periodic re-read moves the subscription there;
    // r1 stops, and a change published at the origin reaches the tracker
    // through r2 — the same subscription, no restart.
    ird.set(ird_body(&[&r2.url], Some(&id), None));
    stats_until(&domains, "moved to r2", |s| s.ird_moves == 1).await;
    assert_eq!(domains.endpoints_of(&id), Some(vec![r2.url.clone()]));
    r1.stop().await;
    west.origin.publish(altocast_tests::tracker::CM, &west_cost_map(77.0)).await.expect("published");
    rank_until(&domains, "10.1.3.200", &candidates, "the change through r2", cost_of_4(77.0)).await;

    // A tracker that re-reads IRDs only hourly follows a move anyway once
    // its subscription keeps failing: r3 replaces r2, r2 stops.
    let mut hourly = cfg.clone();
    hourly.ird_refresh = Duration::from_secs(3600);
    let slow = Domains::new(hourly, stop.clone()).expect("tracker");
    rank_until(&slow, "10.1.3.200", &candidates, "slow through r2", cost_of_4(77.0)).await;
    let r3 = TestRproxy::start_trusting_root(&[&west.origin.url], &west.root_path(), &[]).await;
    ird.set(ird_body(&[&r3.url], Some(&id), None));
    r2.stop().await;
    stats_until(&slow, "moved to r3 after failures", |s| s.ird_moves == 1).await;
    assert_eq!(slow.endpoints_of(&id), Some(vec![r3.url.clone()]));
    west.origin.publish(altocast_tests::tracker::CM, &west_cost_map(78.0)).await.expect("published");
    rank_until(&slow, "10.1.3.200", &candidates, "the change through r3", cost_of_4(78.0)).await;
    rank_until(&domains, "10.1.3.200", &candidates, "the periodic tracker too", cost_of_4(78.0)).await;
    let s = domains.stats();
    assert_eq!((s.subscriptions, s.domains, s.ird_moves, s.ird_refused), (1, 1, 2, 0), "{s:?}");
    slow.stop().await;

    // The IRD never changes trust. It names east's origin (and endpoint):
    // refused, the domain stays on r3 with west's maps.
    let refusals = domains.stats().ird_refused;
    ird.set(ird_body(&[&east.origin.url], Some(&east.origin_id()), None));
    stats_until(&domains, "another origin id refused", |s| s.ird_refused > refusals).await;
    // East's endpoint without an origin id: its directory is another origin's.
    let refusals = domains.stats().ird_refused;
    ird.set(ird_body(&[&east.origin.url], None, None));
    stats_until(&domains, "another origin served refused", |s| s.ird_refused > refusals).await;
    // West's own endpoint, but naming east's root as west's root.
    let refusals = domains.stats().ird_refused;
    ird.set(ird_body(&[&west.origin.url], Some(&id), Some(&east.root().id().to_string())));
    stats_until(&domains, "another root refused", |s| s.ird_refused > refusals).await;
    assert_eq!(domains.endpoints_of(&id), Some(vec![r3.url.clone()]), "never moved by a refused IRD");
    let r = domains.rank(ip("10.1.3.200"), &candidates, 2).await.expect("ranked");
    assert_eq!((r[0].standing, r[1].cost, r[1].domain.as_deref()), (Standing::Priced, Some(78.0), Some(id.as_str())));
    // The same IRD naming west's own root is followed again.
    ird.set(ird_body(&[&west.origin.url], Some(&id), Some(&west.root().id().to_string())));
    stats_until(&domains, "moved to the origin", |s| s.ird_moves == 3).await;
    assert_eq!(domains.endpoints_of(&id), Some(vec![west.origin.url.clone()]));
    assert_eq!(domains.stats().subscriptions, 1);

    domains.stop().await;
    stop.cancel();
    r3.stop().await;
    ird.stop();
    west.origin.stop().await;
    east.origin.stop().await;
    dns.stop().await;
}

/// One raw gRPC call to `path` on `addr` whose request body is `body`; the
/// status it ends with (within 30 s, else the call was never bounded).
async fn raw_grpc_status(addr: SocketAddr, path: &'static str, body: tonic::body::Body) -> tonic::Status {
    use http_body_util::BodyExt as _;
    use tower_service_shim::call;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("uri").connect().await;
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("request");
    let answered = tokio::time::timeout(Duration::from_secs(30), async move {
        let resp = call(channel.expect("connect"), req).await.expect("a response");
        if let Some(s) = tonic::Status::from_header_map(resp.headers()) {
            return s;
        }
        let collected = resp.into_body().collect().await.expect("body");
        tonic::Status::from_header_map(collected.trailers().expect("trailers")).expect("a status")
    });
    answered.await.expect("the call ended within 30 s")
}

/// Calls a tower service once (tonic's `Channel` is one).
mod tower_service_shim {
    pub async fn call(
        mut channel: tonic::transport::Channel,
        req: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, tonic::transport::Error> {
        std::future::poll_fn(|cx| tonic::codegen::Service::poll_ready(&mut channel, cx)).await?;
        tonic::codegen::Service::call(&mut channel, req).await
    }
}

/// A gRPC message frame holding `msg`.
fn grpc_frame(msg: &impl prost::Message) -> bytes::Bytes {
    let body = msg.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    out.extend_from_slice(&body);
    out.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_calls_are_bounded_like_rank_in_size_and_time() {
    let stop = CancellationToken::new();
    let domains = Domains::new(DomainsConfig::default(), stop.clone()).expect("tracker");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let limits = TrackerLimits { body_timeout: Duration::from_secs(1), ..TrackerLimits::default() };
    tokio::spawn(altocast_client::tracker::serve(domains.clone(), listener, limits, stop.clone()));
    const CHECK: &str = "/grpc.health.v1.Health/Check";

    // An answer as usual for a name.
    let ok = tonic_health::pb::HealthCheckRequest { service: "altocast.v1.Tracker".into() };
    let s = raw_grpc_status(addr, CHECK, tonic::body::Body::new(http_body_util::Full::new(grpc_frame(&ok)))).await;
    assert_eq!(s.code(), tonic::Code::Ok, "{s:?}");

    // Reflection (a stream of requests) answers as usual: `list_services` (field 7).
    let list = bytes::Bytes::from_static(&[0, 0, 0, 0, 3, 0x3a, 1, b'*']);
    let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let s = raw_grpc_status(addr, reflection, tonic::body::Body::new(http_body_util::Full::new(list))).await;
    assert_eq!(s.code(), tonic::Code::Ok, "{s:?}");

    // A megabyte of "name": not decoded (it was, up to tonic's 4 MiB, on
    // every stream of every connection, with no ranking slot to bound them).
    let huge = tonic_health::pb::HealthCheckRequest { service: "x".repeat(1 << 20) };
    let s = raw_grpc_status(addr, CHECK, tonic::body::Body::new(http_body_util::Full::new(grpc_frame(&huge)))).await;
    assert_eq!(
        (s.code(), s.message()),
        (tonic::Code::ResourceExhausted, format!("request body over {} bytes", 16 << 10).as_str())
    );

    // A request that never ends: cut off after the body timeout (it held
    // its stream, and kept its connection busy, for ever).
    let frame = grpc_frame(&ok);
    let first: Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible> =
        Ok(http_body::Frame::data(frame.slice(..frame.len() - 3)));
    let never = futures::StreamExt::chain(futures::stream::iter([first]), futures::stream::pending());
    let s = raw_grpc_status(addr, CHECK, tonic::body::Body::new(http_body_util::StreamBody::new(never))).await;
    assert_eq!((s.code(), s.message()), (tonic::Code::DeadlineExceeded, "request body not received within 1 s"));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_with_no_stream_open_is_closed_though_it_answers_pings() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stop = CancellationToken::new();
    let domains = Domains::new(DomainsConfig::default(), stop.clone()).expect("tracker");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let limits = TrackerLimits { header_timeout: Duration::from_secs(1), ..TrackerLimits::default() };
    tokio::spawn(altocast_client::tracker::serve(domains.clone(), listener, limits, stop.clone()));

    // A client that speaks HTTP/2 and answers every PING and SETTINGS, but
    // opens no stream: it held one of --max-connections for ever.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("preface");
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.expect("settings");
    let (mut pings, mut goaway) = (0, false);
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut head = [0u8; 9];
            if tcp.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if tcp.read_exact(&mut payload).await.is_err() {
                return;
            }
            let ack = head[4] & 1 == 1;
            let answer = match head[3] {
                4 if !ack => vec![0, 0, 0, 4, 1, 0, 0, 0, 0],
                6 if !ack => {
                    pings += 1;
                    let mut a = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                    a.extend_from_slice(&payload);
                    a
                }
                7 => {
                    goaway = true;
                    continue;
                }
                _ => continue,
            };
            if tcp.write_all(&answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle HTTP/2 connection still open after 30 s ({pings} PINGs answered)");
    assert!(goaway, "closed with a GOAWAY");
    stop.cancel();
}
