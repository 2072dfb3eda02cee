//! The tracker scenario, for real, on loopback (README "Tracker"): two ISPs'
//! origins with different maps and roots, each serving its RFC 7285 IRD; a
//! DNS server with an RFC 8686 record per ISP; a tracker (the `Domains`
//! library behind `POST /rank`, as `altocast tracker` serves it) that
//! discovers both, subscribes, verifies, and ranks 10,000-peer swarms for
//! requesters in both domains. Prints what the replies contained, measured
//! over many requests, next to the same tracker code asking a DNS server with
//! no ALTO record (a tracker without ALTO: random replies, the candidates
//! being sent in random order).
//!
//! ```sh
//! cargo run --release -p altocast-tests --bin tracker-demo [-- REQUESTS] [--hold]
//! ```
//!
//! With `--hold` the origins and the DNS server keep running after the
//! measurement, until Ctrl-C, and the demo prints the `altocast discover` and
//! `altocast tracker` commands that use them.

use std::time::Instant;

use altocast_client::{Domains, tracker::TrackerLimits};
use altocast_tests::tracker::{REPLY, Scenario, measure, plain_tracker, post_rank};
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hold = args.iter().any(|a| a == "--hold");
    let requests: usize = match args.iter().find(|a| *a != "--hold") {
        Some(n) => n.parse().context("usage: tracker-demo [REQUESTS] [--hold]")?,
        None => 1000,
    };
    let started = Instant::now();
    let sc = Scenario::start(vec![]).await;
    let swarm = sc.swarm();
    for isp in &sc.isps {
        println!(
            "ISP {:<4} 10.{}.0.0/16  origin {}  IRD {}  gRPC {}",
            isp.name,
            isp.octet,
            isp.origin_id(),
            isp.ird,
            isp.origin.url
        );
    }
    println!("DNS {} serving U-NAPTR ALTO:https records for 1.10.in-addr.arpa. and 2.10.in-addr.arpa.", sc.dns.addr);

    let shutdown = CancellationToken::new();
    let domains = Domains::new(sc.tracker_config(), shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(altocast_client::tracker::serve(
        domains.clone(),
        listener,
        TrackerLimits::default(),
        shutdown.clone(),
    ));
    println!("tracker on http://{addr} (POST /rank), set up in {:.1} s", started.elapsed().as_secs_f64());

    // The first request finds every peer's domain: discovery and subscriptions.
    let t = Instant::now();
    let first = post_rank(addr, swarm[0], &swarm, REPLY).await;
    let s = domains.stats();
    println!(
        "first request (10,000 new addresses): {:.1} s, {} DNS lookups, {} subscriptions, {} peers returned",
        t.elapsed().as_secs_f64(),
        s.dns_lookups,
        s.subscriptions,
        first.len()
    );

    let t = Instant::now();
    let isps: Vec<_> = sc.isps.iter().collect();
    let (plain, plain_dns, plain_stop) = plain_tracker().await;
    let (random, ranked) = measure(addr, plain, &isps, &swarm, requests, 1).await;
    plain_stop.cancel();
    plain_dns.stop().await;
    let per = t.elapsed().as_secs_f64() * 1e3 / requests.max(1) as f64;
    let s = domains.stats();
    println!();
    println!(
        "swarm {} peers in 2 domains, 100 per PID; {requests} requests (half per domain), each ranking the whole \
         swarm for a joining peer with 100 favourable (same-PID) peers; {REPLY} peers per reply",
        swarm.len()
    );
    println!("{:<42} {:>14} {:>14}", "", "without ALTO", "ALTO-ranked");
    println!(
        "{:<42} {:>13.1}% {:>13.1}%",
        "replies with no favourable peer",
        100.0 * random.share_none(),
        100.0 * ranked.share_none()
    );
    println!(
        "{:<42} {:>13.1}% {:>13.1}%",
        "replies with at most 4 favourable peers",
        100.0 * random.share_at_most_4(),
        100.0 * ranked.share_at_most_4()
    );
    println!("{:<42} {:>14.2} {:>14.2}", "favourable peers per reply (mean)", random.mean(), ranked.mean());
    println!();
    println!(
        "tracker: {} DNS lookups ({} names from its cache), {} IRD fetches, {} subscriptions, {} domains, \
         {} refused; {per:.1} ms per request pair (both trackers)",
        s.dns_lookups, s.name_cache_hits, s.ird_fetches, s.subscriptions, s.domains, s.domains_refused
    );
    domains.stop().await;

    // The same swarm for a tracker that discovers each peer's /24 (RFC 8686 takes a prefix).
    let mut cfg = sc.tracker_config();
    cfg.prefix_v4 = 24;
    let by_24 = Domains::new(cfg, shutdown.clone())?;
    let t = Instant::now();
    let r = by_24.rank(swarm[0], &swarm, REPLY).await?;
    let s = by_24.stats();
    println!(
        "with --discover-prefix-v4 24: the first request took {:.1} s, {} DNS lookups, {} subscriptions ({} peers)",
        t.elapsed().as_secs_f64(),
        s.dns_lookups,
        s.subscriptions,
        r.len()
    );
    by_24.stop().await;
    if hold {
        let dns = sc.dns.addr;
        println!();
        println!("holding the origins and the DNS server until Ctrl-C; try:");
        for isp in &sc.isps {
            println!(
                "  altocast discover --ip 10.{}.3.5 --dns {dns} --allow-loopback-http --discover-private",
                isp.octet
            );
        }
        let roots: Vec<String> = sc
            .isps
            .iter()
            .map(|isp| format!("--trust-root {}={}", isp.origin_id(), isp.root_path().display()))
            .collect();
        println!(
            "  altocast tracker --listen 127.0.0.1:7300 --dns {dns} --allow-loopback-http --discover-private {}",
            roots.join(" ")
        );
        tokio::signal::ctrl_c().await?;
    }
    shutdown.cancel();
    for isp in sc.isps {
        isp.origin.stop().await;
    }
    sc.dns.stop().await;
    Ok(())
}
