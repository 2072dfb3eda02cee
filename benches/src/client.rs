//! Client: `rank` of 1,000 candidates, and the RSS of a client process holding
//! the maps.

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use altocast_proto::{MapState, ResourceId, TrustedKeys};
use altocast_server::workload::{SplitMix64, Workload};
use anyhow::{Context as _, bail};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::{
    child::sibling,
    load_topology,
    report::{field, pct, record, rss_kib},
};

/// CPU of one subscriber verifying one update: signature, chain, apply, tag,
/// for link failures and recoveries of the 60-PoP backbone the `tree` run
/// publishes — the per-subscriber cost behind its verifying figures.
fn verify_cost() -> anyhow::Result<()> {
    use altocast_proto::{
        MapDiff, OriginKey, Verifier,
        wire::update::{Signer, Version},
    };
    let mut w = Workload::new(altocast_server::workload::Topology::synthetic(60, 1), 1);
    let nm = w.network_map();
    let signer = Signer::new(OriginKey::from_seed([5; 32]), 600_000);
    let id = ResourceId::new("default-cost-map")?;
    let now = altocast_client::now_ms();
    let nm_version = Version { seq: 1, state: MapState::Network(nm.clone()), dependencies: vec![] };
    let nm_snapshot = signer.snapshot(&w.network_map_id, &nm_version, now);
    let deps =
        vec![altocast_proto::wire::update::Dependency { resource_id: w.network_map_id.clone(), seq: 1, tag: nm.tag() }];
    let mut cur = Version { seq: 1, state: MapState::Cost(w.cost_map(&nm)), dependencies: deps.clone() };
    let mut updates = vec![signer.snapshot(&id, &cur, now)];
    let mut rng = SplitMix64::new(21);
    while updates.len() < 201 {
        let li = rng.below(w.link_count());
        for up in [false, true] {
            w.set_link_up(li, up);
            let next = Version { seq: cur.seq + 1, state: MapState::Cost(w.cost_map(&nm)), dependencies: deps.clone() };
            let Some(d) = cur.state.diff(&next.state) else { continue };
            if d.entries_changed() == 0 {
                continue;
            }
            let d: MapDiff = d;
            updates.push(signer.diff(&id, &cur, &next, &d, now));
            cur = next;
        }
    }
    let keys = TrustedKeys::new([signer.key().public()]);
    let mut v = Verifier::accepting_all(keys, Default::default());
    v.verify(&nm_snapshot.update, &nm_snapshot.chunks, now)?;
    v.verify(&updates[0].update, &updates[0].chunks, now)?;
    let (mut times, mut bytes) = (Vec::new(), 0usize);
    for u in &updates[1..] {
        let t = Instant::now();
        v.verify(&u.update, &u.chunks, now)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        bytes += u.update.body.len();
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "verify + apply one update (60-PoP backbone, {} link-failure diffs of mean {} B): mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms",
        times.len(),
        bytes / times.len(),
        mean,
        pct(&mut times.clone(), 0.5),
        pct(&mut times, 0.99)
    );
    record("verify_small_diff_ms", serde_json::json!({"mean": mean, "diff_bytes": bytes / times.len()}));
    Ok(())
}

pub(crate) async fn client(topology: Option<&str>) -> anyhow::Result<()> {
    verify_cost()?;
    use altocast_client::{CostMapVersion, NetworkMapVersion};
    let w = Workload::new(load_topology(topology)?, 1);
    let nm = w.network_map();
    let cm = w.cost_map(&nm);
    let nm_id = w.network_map_id.clone();
    let v = CostMapVersion {
        resource_id: ResourceId::new("default-cost-map")?,
        seq: 1,
        tag: cm.tag(),
        map: cm.clone(),
        network_map: Arc::new(NetworkMapVersion {
            resource_id: nm_id.clone(),
            seq: 1,
            tag: nm.tag(),
            map: nm.clone(),
            expires_at_ms: 0,
        }),
        expires_at_ms: 0,
    };
    // Candidates: addresses inside random PIDs' prefixes.
    let mut rng = SplitMix64::new(3);
    let prefixes: Vec<_> = nm.iter().flat_map(|(_, p)| p.ipv4.iter().copied()).collect();
    let cands: Vec<std::net::IpAddr> = (0..1000)
        .map(|_| {
            let p = prefixes[rng.below(prefixes.len())];
            let host = u32::from(p.network()) + (rng.below(200) as u32 + 1);
            std::net::IpAddr::V4(host.into())
        })
        .collect();
    let src = cands[0];
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let r = altocast_client::rank(&v, src, &cands);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(r);
    }
    record(
        "rank_1000_ms",
        serde_json::json!({"p50": pct(&mut times.clone(), 0.5), "p99": pct(&mut times.clone(), 0.99)}),
    );
    println!(
        "rank 1,000 candidates against {} PIDs: p50 {:.3} ms, p99 {:.3} ms",
        cm.pids().len(),
        pct(&mut times.clone(), 0.5),
        pct(&mut times, 0.99)
    );
    // RSS of a separate client process holding the maps, fed by a real origin.
    let dir = tempfile::tempdir()?;
    let maps = dir.path().join("maps");
    std::fs::create_dir_all(&maps)?;
    let nm_json = altocast_proto::model::json::network_map_json(&nm_id, &nm);
    let cm_json = altocast_proto::model::json::cost_map_json(&cm);
    std::fs::write(maps.join("default-network-map.json"), &nm_json)?;
    std::fs::write(maps.join("default-cost-map.json"), &cm_json)?;
    let snapshot_len =
        MapState::Cost(cm.clone()).to_pb().encoded_len() + MapState::Network(nm.clone()).to_pb().encoded_len();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let data = dir.path().join("data");
    let mut origin = Command::new(sibling("altocast-server")?)
        .arg("--data-dir")
        .arg(&data)
        .arg("--maps-dir")
        .arg(&maps)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let key = data.join("origin-pub.pem");
    let t = Instant::now();
    while !key.exists() && t.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = Command::new(std::env::current_exe()?)
        .args(["hold", "--endpoint", &format!("http://127.0.0.1:{port}"), "--key"])
        .arg(&key)
        .output()?;
    let _ = origin.kill();
    let _ = origin.wait();
    let line = String::from_utf8_lossy(&out.stdout);
    let rss = field(&line, "rss_kib").context("hold printed no RSS")?;
    let baseline = field(&line, "baseline_kib").unwrap_or(0);
    record(
        "client_rss",
        serde_json::json!({"rss_mib": rss as f64 / 1024.0, "x_protobuf": rss as f64 * 1024.0 / snapshot_len as f64,
            "x_json": rss as f64 * 1024.0 / (nm_json.len() + cm_json.len()) as f64}),
    );
    println!(
        "client RSS holding the maps: {:.1} MiB (process before subscribing: {:.1} MiB); maps encoded: {:.1} MiB protobuf, {:.1} MiB RFC 7285 JSON → {:.2}× protobuf, {:.2}× JSON",
        rss as f64 / 1024.0,
        baseline as f64 / 1024.0,
        snapshot_len as f64 / 1048576.0,
        (nm_json.len() + cm_json.len()) as f64 / 1048576.0,
        rss as f64 * 1024.0 / snapshot_len as f64,
        rss as f64 * 1024.0 / (nm_json.len() + cm_json.len()) as f64
    );
    Ok(())
}

/// Helper: subscribes to everything, waits for the cost map, prints its RSS.
pub(crate) async fn hold(endpoint: &str, key: &str) -> anyhow::Result<()> {
    let baseline = rss_kib(std::process::id());
    let k = altocast_proto::PublicKey::from_spki_pem(&std::fs::read_to_string(key)?)?;
    let shutdown = CancellationToken::new();
    let sub = altocast_client::Subscription::start(
        altocast_client::Config::new(vec![endpoint.to_owned()], TrustedKeys::new([k])),
        shutdown.clone(),
        None,
    )?;
    let t = Instant::now();
    while sub.view().load().cost_maps.is_empty() {
        if t.elapsed() > Duration::from_secs(60) {
            bail!("no cost map within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("rss_kib {} baseline_kib {baseline}", rss_kib(std::process::id()));
    sub.stop().await;
    Ok(())
}
