//! Propagation through real `altocast-rproxy` processes: an origin (the
//! server library: validate, diff, sign, fsync, hub) publishes link failures
//! of a small backbone as RFC 7396 merge patches; the updates travel through
//! one RProxy, or a tree of them, to K subscribers in a helper process that
//! verify every update as a client does. Also the RSS per subscriber of the
//! last-level RProxies while the updates flow.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use altocast_proto::ResourceId;
use altocast_server::origin::{OriginConfig, Outcome};
use altocast_server::workload::{SplitMix64, Topology, Workload};
use anyhow::Context as _;

use crate::{
    child::{Children, ClientsProc, LoopbackOrigin, free_port, sibling, wait_serving},
    report::{field, now_us, pct, record, rss_kib},
};

/// A tree: RProxies per level, from the origin down. `[1]` is one RProxy;
/// `[2, 4]` is two levels, each second-level RProxy fed by one of the first.
pub(crate) type Shape = Vec<usize>;

/// Parses "2,4" into a shape.
pub(crate) fn parse_shape(s: &str) -> Result<Shape, String> {
    let shape: Shape =
        s.split(',').map(|n| n.trim().parse::<usize>().map_err(|e| format!("{n:?}: {e}"))).collect::<Result<_, _>>()?;
    if shape.is_empty() || shape.contains(&0) {
        return Err(format!("{s:?}: every level needs at least one RProxy"));
    }
    Ok(shape)
}

fn describe(shape: &[usize]) -> String {
    match shape {
        [1] => "origin → 1 RProxy".to_owned(),
        _ => format!("origin → {} RProxies", shape.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" → ")),
    }
}

/// Starts the tree under `origin_url`; returns the processes and the URLs of
/// each level.
pub(crate) async fn start_tree(
    shape: &[usize],
    origin_url: &str,
    key: &std::path::Path,
    id: &ResourceId,
) -> anyhow::Result<(Children, Vec<Vec<String>>)> {
    let bin = sibling("altocast-rproxy")?;
    let mut procs = Children(Vec::new());
    let mut levels: Vec<Vec<String>> = Vec::new();
    for &n in shape {
        let parents = levels.last().cloned().unwrap_or_else(|| vec![origin_url.to_owned()]);
        let mut urls = Vec::new();
        for i in 0..n {
            let port = free_port()?;
            let child = Command::new(&bin)
                .args(["--upstream", &parents[i % parents.len()]])
                .args(["--listen", &format!("127.0.0.1:{port}"), "--grace-secs", "1"])
                .arg("--trust-key")
                .arg(key)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting altocast-rproxy")?;
            procs.0.push(child);
            urls.push(format!("http://127.0.0.1:{port}"));
        }
        for u in &urls {
            wait_serving(u, id).await?;
        }
        levels.push(urls);
    }
    Ok((procs, levels))
}

/// The p99 of each (shape, K) run, for the summary.
pub(crate) struct TreeResult {
    pub(crate) verify: bool,
    pub(crate) p99: Vec<(String, usize, f64)>,
}

pub(crate) async fn tree(ks: &[usize], updates: usize, shapes: &[Shape], verify: bool) -> anyhow::Result<TreeResult> {
    let lo = LoopbackOrigin::start(OriginConfig { history_depth: 64, ..Default::default() }).await?;
    let (hub, origin, key_path, origin_url) = (lo.hub.clone(), lo.origin.clone(), lo.key_path.clone(), lo.url.clone());
    // A 60-PoP backbone: link failures change a few hundred entries (diffs of
    // a few KB), like a regional ISP's.
    let mut w = Workload::new(Topology::synthetic(60, 1), 1);
    let (nm_id, cm_id) = (w.network_map_id.clone(), ResourceId::new("default-cost-map")?);
    let nm = w.network_map();
    origin.ingest(&nm_id, altocast_proto::model::json::network_map_json(&nm_id, &nm).as_bytes())?;
    let mut prev = w.cost_map(&nm);
    origin.ingest(&cm_id, altocast_proto::model::json::cost_map_json(&prev).as_bytes())?;
    tokio::spawn(altocast_server::origin::heartbeats(origin.clone(), Duration::from_secs(20), lo.shutdown.clone()));
    println!(
        "tree: origin (server library, {} PoPs) → real altocast-rproxy processes → K subscribers in a helper process{}",
        w.pid_count(),
        if verify { ", each verifying every update" } else { " (decode only)" }
    );
    let mut rng = SplitMix64::new(5);
    let mut down: Option<usize> = None;
    let mut results = Vec::new();
    let mut p99s = Vec::new();
    for shape in shapes {
        let (procs, levels) = start_tree(shape, &origin_url, &key_path, &cm_id).await?;
        let leaves = levels.last().cloned().unwrap_or_default();
        let leaf_pids: Vec<u32> = procs.0[procs.0.len() - leaves.len()..].iter().map(Child::id).collect();
        for &k in ks {
            let leaf_rss0: u64 = leaf_pids.iter().map(|p| rss_kib(*p)).sum();
            let seq0 = hub.status().iter().find(|s| s.resource_id == cm_id).map_or(0, |s| s.seq);
            let proc_ = ClientsProc::start(
                &leaves,
                k,
                seq0 + updates as u64 + 2,
                verify.then_some(key_path.as_path()),
                Some(cm_id.as_str()),
            )?;
            proc_.wait_for("ready", Duration::from_secs(180))?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let leaf_rss1: u64 = leaf_pids.iter().map(|p| rss_kib(*p)).sum();
            let (mut lat, mut bytes) = (Vec::new(), Vec::new());
            while lat.len() < updates {
                // Alternate: fail a random link, then bring it back.
                match down.take() {
                    Some(li) => w.set_link_up(li, true),
                    None => {
                        let li = rng.below(w.link_count());
                        w.set_link_up(li, false);
                        down = Some(li);
                    }
                }
                let next = w.cost_map(&nm);
                let patch = altocast_proto::model::json::cost_map_merge_patch(&prev, &next);
                prev = next;
                let t0 = now_us();
                let outcome = tokio::task::block_in_place(|| origin.ingest_patch(&cm_id, patch.as_bytes()))?;
                let Outcome::Published { seq, bytes: len, .. } = outcome else { continue };
                let line = proc_.wait_for(&format!("seq {seq} "), Duration::from_secs(60))?;
                lat.push(field(&line, "last_us").unwrap_or(t0).saturating_sub(t0) as f64 / 1e3);
                bytes.push(len as f64);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let leaf_rss2: u64 = leaf_pids.iter().map(|p| rss_kib(*p)).sum();
            let idle = leaf_rss1.saturating_sub(leaf_rss0) as f64 / k as f64;
            let flowing = leaf_rss2.saturating_sub(leaf_rss0) as f64 / k as f64;
            let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
            let mean_bytes = bytes.iter().sum::<f64>() / bytes.len().max(1) as f64;
            println!(
                "  {} → K={k:>6}: publish → last subscriber {} p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms \
                 (mean diff {mean_bytes:.0} B); last-level RProxy RSS per subscriber {idle:.1} KiB idle, {flowing:.1} KiB after the updates",
                describe(shape),
                if verify { "applied" } else { "received" }
            );
            results.push(serde_json::json!({
                "shape": shape, "k": k, "verify": verify, "p50_ms": p50, "p99_ms": p99, "max_ms": max,
                "rss_per_sub_kib_idle": idle, "rss_per_sub_kib_after_updates": flowing,
            }));
            p99s.push((describe(shape), k, p99));
            drop(proc_);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        drop(procs);
    }
    record(if verify { "tree" } else { "tree_decode_only" }, serde_json::json!(results));
    lo.stop().await;
    Ok(TreeResult { verify, p99: p99s })
}

/// Prints and records the p99 through real RProxies against Redis pub/sub's
/// (whose subscribers verify nothing), same run.
pub(crate) fn compare(ours: &TreeResult, redis: &crate::fanout::FanoutResult) {
    let who = if ours.verify { "verifying subscribers" } else { "decode-only subscribers" };
    println!("{who} through real RProxies vs Redis pub/sub, same run (p99):");
    let mut out = Vec::new();
    for (shape, k, p99) in &ours.p99 {
        if let Some((_, r)) = redis.p99.iter().find(|(rk, _)| rk == k) {
            println!("  {shape}, K={k:>6}: {p99:.1} ms vs Redis {r:.1} ms → altocast/Redis = {:.2}", p99 / r);
            out.push(serde_json::json!({"tree": shape, "k": k, "p99_ms": p99, "redis_p99_ms": r, "ratio": p99 / r}));
        }
    }
    record(if ours.verify { "tree_vs_redis" } else { "tree_decode_only_vs_redis" }, serde_json::json!(out));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_reject_empty_levels() {
        assert_eq!(parse_shape("2,4"), Ok(vec![2, 4]));
        assert_eq!(parse_shape("1"), Ok(vec![1]));
        assert!(parse_shape("2,0").is_err());
        assert!(parse_shape("x").is_err());
    }
}
