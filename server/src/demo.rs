//! `altocast-server demo`: a whole deployment on loopback — an origin, a
//! two-level RProxy tree and verifying subscribers — replaying a change
//! sequence with a live progress line per update and a summary at the end.
//! It uses only 127.0.0.1, stops by itself and removes its data directory.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use altocast_client::{Config as ClientConfig, Subscription};
use altocast_proto::{TrustedKeys, pb};
use anyhow::{Context as _, bail};
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::generate::{bodies, workload};

/// `demo` options.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Topology JSON file (e.g. ../shared/data/topologies/kdl.json). Default: a synthetic backbone.
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// PoPs of the synthetic backbone (without --topology).
    #[arg(long, default_value_t = 60)]
    pub nodes: usize,
    /// Verifying subscribers at the leaves.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// RProxies per level (two levels).
    #[arg(long, default_value_t = 2)]
    pub fanout: usize,
    /// Change events to replay.
    #[arg(long, default_value_t = 20)]
    pub events: usize,
    /// Pause between events, milliseconds.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// Seed of the change sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

const TOKEN: &str = "demo-token-not-secret-0123456789";
const NM: &str = "default-network-map";
const CM: &str = "default-cost-map";

async fn listener() -> anyhow::Result<(TcpListener, String)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    Ok((l, url))
}

async fn publish(url: &str, id: &str, body: String) -> anyhow::Result<pb::PublishResponse> {
    publish_as(url, id, body, "").await
}

/// Publishes `body` with `media_type` (empty: a full RFC 7285 body).
async fn publish_as(url: &str, id: &str, body: String, media_type: &str) -> anyhow::Result<pb::PublishResponse> {
    let req = pb::PublishRequest {
        resource_id: id.into(),
        json: body.into_bytes().into(),
        media_type: media_type.into(),
        more: vec![],
    };
    altocast_client::connect::publish(url, Some(TOKEN), req, Duration::from_secs(60), None)
        .await
        .with_context(|| format!("publishing {id}"))
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.subscribers == 0 || args.fanout == 0 {
        bail!("--subscribers and --fanout must be at least 1");
    }
    let mut w = workload(args.topology.as_deref(), args.nodes, args.seed)?;
    let mut prev_cm = w.cost_map(&w.network_map());
    let data = std::env::temp_dir().join(format!("altocast-demo-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(data.clone());
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();

    // Origin.
    let mut cfg = crate::ServeConfig::defaults();
    cfg.data_dir = data.clone();
    cfg.publish_token = Some(TOKEN.into());
    cfg.no_example = true;
    cfg.grace_secs = 1;
    let (l, origin_url) = listener().await?;
    tasks.push(tokio::spawn(crate::run(cfg, l, shutdown.clone())));
    let pub_path = crate::keys::pubkey_path(&data);
    let started = Instant::now();
    while !pub_path.exists() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let key = altocast_proto::PublicKey::from_spki_pem(&std::fs::read_to_string(&pub_path)?)?;
    let (nm, cm) = bodies(&w);
    let snapshot_bytes = cm.len();
    let mut ready = false;
    for _ in 0..100 {
        if publish(&origin_url, NM, nm.clone()).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        bail!("origin did not start");
    }
    let first = publish(&origin_url, CM, cm).await?;
    println!(
        "origin {origin_url}: {} with {} PIDs, cost map seq {} ({} bytes of RFC 7285 JSON)",
        w.topology().name,
        w.pid_count(),
        first.seq,
        snapshot_bytes
    );

    // Two levels of RProxies; each level-2 proxy has two level-1 upstreams.
    let mut level1 = Vec::new();
    for _ in 0..args.fanout {
        let (l, url) = listener().await?;
        let rcfg = rproxy_config(std::slice::from_ref(&origin_url), &pub_path)?;
        tasks.push(tokio::spawn(altocast_rproxy::run(rcfg, l, shutdown.clone())));
        level1.push(url);
    }
    let mut level2 = Vec::new();
    for i in 0..args.fanout {
        let (l, url) = listener().await?;
        let ups = vec![level1[i % level1.len()].clone(), level1[(i + 1) % level1.len()].clone()];
        tasks.push(tokio::spawn(altocast_rproxy::run(rproxy_config(&ups, &pub_path)?, l, shutdown.clone())));
        level2.push(url);
    }
    println!(
        "tree: origin → {} RProxies → {} RProxies → {} verifying subscribers",
        level1.len(),
        level2.len(),
        args.subscribers
    );

    let subs: Vec<Subscription> = (0..args.subscribers)
        .map(|i| {
            let eps =
                vec![level2[i % level2.len()].clone(), level2[(i + 1) % level2.len()].clone(), origin_url.clone()];
            let mut c = ClientConfig::new(eps, TrustedKeys::new([key.clone()]));
            c.backoff_min = Duration::from_millis(50);
            Subscription::start(c, shutdown.clone(), None)
        })
        .collect::<Result<_, _>>()?;
    let mut probe = subs[0].view().changes();
    let wait_all = |seq: u64| {
        let subs = &subs;
        async move {
            let t = Instant::now();
            loop {
                let done =
                    subs.iter().filter(|s| s.view().load().cost_maps.get(CM).is_some_and(|c| c.seq >= seq)).count();
                if done == subs.len() || t.elapsed() > Duration::from_secs(30) {
                    return done;
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
    };
    let n = wait_all(first.seq).await;
    println!("{n}/{} subscribers hold the initial maps\n", subs.len());
    println!(
        "{:>4} {:<14} {:>8} {:>9} {:>12} {:>10}",
        "seq", "event", "entries", "diff B", "last applied", "converged"
    );

    let mut props = Vec::new();
    let mut diff_bytes = Vec::new();
    let mut published = 0;
    let mut seq = first.seq;
    for _ in 0..args.events {
        let ev = w.step();
        // Like an incremental ALTO server: the network map in full (small), the
        // cost map as an RFC 7396 merge patch of the previous one (RFC 8895).
        let nm_map = w.network_map();
        let cm_map = w.cost_map(&nm_map);
        let nm = altocast_proto::model::json::network_map_json(&w.network_map_id, &nm_map);
        let patch = altocast_proto::model::json::cost_map_merge_patch(&prev_cm, &cm_map);
        prev_cm = cm_map;
        let t0 = Instant::now();
        publish(&origin_url, NM, nm).await?;
        let r = publish_as(&origin_url, CM, patch, altocast_proto::model::json::MERGE_PATCH_MEDIA_TYPE).await?;
        if r.seq == seq {
            println!("{:>4} {:<14} {:>8} {:>9} {:>12} {:>10}", "-", ev.kind.as_str(), 0, "-", "no change", "-");
            continue;
        }
        seq = r.seq;
        let done = wait_all(seq).await;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let (mut entries, mut bytes) = (0, 0);
        while let Ok(c) = probe.try_recv() {
            if c.update.resource_id.as_str() == CM && c.update.seq == seq {
                entries = c.update.entries_changed;
                bytes = c.update.bytes;
            }
        }
        props.push(ms);
        diff_bytes.push(bytes as f64);
        published += 1;
        println!(
            "{:>4} {:<14} {:>8} {:>9} {:>9.1} ms {:>5}/{:<4}",
            seq,
            ev.kind.as_str(),
            entries,
            bytes,
            ms,
            done,
            subs.len()
        );
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }

    let tags: std::collections::HashSet<_> =
        subs.iter().filter_map(|s| s.view().load().cost_maps.get(CM).map(|c| c.tag)).collect();
    props.sort_by(f64::total_cmp);
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    println!("\nsummary");
    println!("  updates published        {published}");
    println!("  subscribers              {} (all on one tag: {})", subs.len(), tags.len() == 1);
    println!(
        "  publish → last applied   p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&props, 0.5),
        pct(&props, 0.99),
        pct(&props, 1.0)
    );
    println!(
        "  diff bytes               mean {:.0} (the full cost map is {} bytes of JSON: 1/{:.0})",
        mean(&diff_bytes),
        snapshot_bytes,
        snapshot_bytes as f64 / mean(&diff_bytes).max(1.0)
    );
    shutdown.cancel();
    for s in subs {
        s.stop().await;
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
    if tags.len() != 1 {
        bail!("subscribers did not converge");
    }
    Ok(())
}

fn rproxy_config(upstreams: &[String], key: &std::path::Path) -> anyhow::Result<altocast_rproxy::Config> {
    use clap::Parser as _;
    let mut args = vec!["altocast-rproxy".to_owned()];
    for u in upstreams {
        args.extend(["--upstream".into(), u.clone()]);
    }
    args.extend(["--trust-key".into(), key.display().to_string(), "--grace-secs".into(), "1".into()]);
    Ok(altocast_rproxy::Config::try_parse_from(args)?)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
