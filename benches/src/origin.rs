//! Origin: publish → validated, diffed, signed, durable, in the hub, for link
//! failures on a backbone cost map; RSS of the real `altocast-server`.

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use altocast_proto::{ResourceId, pb, wire::update::Signer};
use altocast_rproxy::hub::{Hub, HubConfig};
use altocast_server::workload::{SplitMix64, Workload};
use anyhow::bail;
use tokio_util::sync::CancellationToken;

use crate::{
    child::sibling,
    load_topology,
    report::{pct, record, rss_kib},
};

pub(crate) async fn origin(topology: Option<&str>, samples: usize) -> anyhow::Result<()> {
    use altocast_server::{origin::Origin, store::Store};
    let mut w = Workload::new(load_topology(topology)?, 1);
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let hub = Hub::new(HubConfig::default(), shutdown.clone());
    let key = altocast_server::keys::load_or_generate(dir.path())?;
    let signer = Signer::new(key, 60_000);
    let store = Store::open(&dir.path().join("altocast.redb"))?;
    let cfg = altocast_server::origin::OriginConfig { history_depth: 64, ..Default::default() };
    let o = Origin::open(cfg, signer, store, hub.clone(), Arc::new(arc_swap::ArcSwapOption::empty()))?;
    let (nm_id, cm_id) = (ResourceId::new("default-network-map")?, ResourceId::new("default-cost-map")?);
    let nm = w.network_map();
    let nm_json = altocast_proto::model::json::network_map_json(&nm_id, &nm);
    o.ingest(&nm_id, nm_json.as_bytes())?;
    let cm_json = altocast_proto::model::json::cost_map_json(&w.cost_map(&nm));
    let t = Instant::now();
    o.ingest(&cm_id, cm_json.as_bytes())?;
    println!(
        "origin: {} PIDs, cost map {} bytes JSON; first publish (snapshot) {:.1} ms",
        w.pid_count(),
        cm_json.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut rng = SplitMix64::new(9);
    let (mut total, mut parse, mut entries, mut patched, mut patch_bytes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut published = 0;
    let mut prev = w.cost_map(&nm);
    while published < samples * 2 {
        let li = rng.below(w.link_count());
        // The failure as an RFC 7396 merge patch (RFC 8895's update form) ...
        w.set_link_up(li, false);
        let next = w.cost_map(&nm);
        let patch = altocast_proto::model::json::cost_map_merge_patch(&prev, &next);
        let t = Instant::now();
        if let altocast_server::origin::Outcome::Published { entries_changed, .. } =
            o.ingest_patch(&cm_id, patch.as_bytes())?
        {
            patched.push(t.elapsed().as_secs_f64() * 1e3);
            entries.push(entries_changed as f64);
            patch_bytes.push(patch.len() as f64);
            published += 1;
        }
        // ... and the recovery as the full RFC 7285 body.
        w.set_link_up(li, true);
        prev = w.cost_map(&nm);
        let body = altocast_proto::model::json::cost_map_json(&prev);
        let t = Instant::now();
        let doc = altocast_proto::model::json::parse_cost_map(body.as_bytes())?;
        let p = t.elapsed().as_secs_f64() * 1e3;
        drop(doc);
        let t = Instant::now();
        if let altocast_server::origin::Outcome::Published { entries_changed, .. } =
            o.ingest(&cm_id, body.as_bytes())?
        {
            total.push(t.elapsed().as_secs_f64() * 1e3);
            parse.push(p);
            entries.push(entries_changed as f64);
            published += 1;
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut post: Vec<f64> = total.iter().zip(&parse).map(|(t, p)| (t - p).max(0.0)).collect();
    println!(
        "publish → validated, diffed, signed, fsynced, handed to the hub; {} link failures and their recoveries, mean {:.0} entries changed:",
        published / 2,
        mean(&entries)
    );
    record(
        "origin_publish_ms",
        serde_json::json!({
            "merge_patch": {"p50": pct(&mut patched.clone(), 0.5), "p90": pct(&mut patched.clone(), 0.9)},
            "full_body": {"p50": pct(&mut total.clone(), 0.5), "p90": pct(&mut total.clone(), 0.9), "json_parse_p50": pct(&mut parse.clone(), 0.5)},
        }),
    );
    println!(
        "  as an RFC 7396 merge patch (mean {:.0} bytes): p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        mean(&patch_bytes),
        pct(&mut patched.clone(), 0.5),
        pct(&mut patched.clone(), 0.9),
        pct(&mut patched, 1.0)
    );
    println!(
        "  as the full RFC 7285 body ({} bytes): p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms; of which JSON parse p50 {:.1} ms, the rest p50 {:.1} ms",
        cm_json.len(),
        pct(&mut total.clone(), 0.5),
        pct(&mut total.clone(), 0.9),
        pct(&mut total, 1.0),
        pct(&mut parse, 0.5),
        pct(&mut post, 0.5)
    );
    o.close();
    drop(o);
    shutdown.cancel();
    // RSS of the real binary restoring these maps and 64 retained diffs.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = Command::new(sibling("altocast-server")?)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    loop {
        if let Ok(mut c) = altocast_client::connect::connect(&url, Duration::from_secs(1)).await
            && c.get_directory(pb::GetDirectoryRequest {}).await.is_ok()
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("altocast-server did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_kib(child.id()) as f64 / 1024.0;
    println!(
        "origin RSS (altocast-server restored with these maps and {} retained diffs): {rss:.1} MiB",
        published.min(64)
    );
    record("origin_rss_mib", serde_json::json!(rss));
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
