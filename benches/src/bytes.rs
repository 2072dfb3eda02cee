//! Bytes on the wire per link failure: signed diff vs snapshot vs the RFC 7396
//! merge patch RFC 8895 would send, for every topology in a directory.

use altocast_proto::{
    MapState, OriginKey, ResourceId,
    wire::update::{Signer, Version},
};
use altocast_server::workload::{SplitMix64, Topology, Workload};
use anyhow::Context as _;

use crate::report::record;

pub(crate) fn bytes_per_topology(dir: &str, samples: usize) -> anyhow::Result<()> {
    let base = std::path::Path::new(dir);
    let base = if base.exists() {
        base.to_path_buf()
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir)
    };
    let mut files: Vec<_> = std::fs::read_dir(&base)
        .with_context(|| format!("reading {}", base.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let signer = Signer::new(OriginKey::from_seed([8; 32]), 60_000);
    let id = ResourceId::new("default-cost-map")?;
    println!(
        "{:<18} {:>6} {:>10} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8}",
        "topology", "PIDs", "entries", "snapshot B", "diff B", "patch B", "JSON B", "snap/diff", "patch/diff"
    );
    for f in files {
        let topo = Topology::from_json(&std::fs::read(&f)?)?;
        let mut w = Workload::new(topo, 1);
        let nm = w.network_map();
        let cm = w.cost_map(&nm);
        let v1 = Version { seq: 1, state: MapState::Cost(cm.clone()), dependencies: vec![] };
        let snap = signer.snapshot(&id, &v1, 0).wire_len();
        let json_len = altocast_proto::model::json::cost_map_json(&cm).len();
        let mut rng = SplitMix64::new(11);
        let (mut diffs, mut patches) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            let li = rng.below(w.link_count());
            w.set_link_up(li, false);
            let cm2 = w.cost_map(&nm);
            w.set_link_up(li, true);
            let v2 = Version { seq: 2, state: MapState::Cost(cm2.clone()), dependencies: vec![] };
            let Some(d) = v1.state.diff(&v2.state) else { continue };
            if d.entries_changed() == 0 {
                continue;
            }
            diffs.push(signer.diff(&id, &v1, &v2, &d, 0).wire_len() as f64);
            patches.push(altocast_proto::model::json::cost_map_merge_patch(&cm, &cm2).len() as f64);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let (d, p) = (mean(&diffs), mean(&patches));
        record(
            &format!("bytes_{}", w.topology().name),
            serde_json::json!({"snapshot": snap, "diff": d, "merge_patch": p, "json": json_len}),
        );
        println!(
            "{:<18} {:>6} {:>10} {:>12} {:>12.0} {:>12.0} {:>12} {:>8.1} {:>8.1}",
            w.topology().name,
            cm.pids().len(),
            cm.entry_count(),
            snap,
            d,
            p,
            json_len,
            snap as f64 / d.max(1.0),
            p / d.max(1.0)
        );
    }
    Ok(())
}
