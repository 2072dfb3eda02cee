//! Model benchmark (issue 2): diff, apply + verify, snapshot encode/decode and
//! bytes for single link failures on a backbone cost map.
//!
//! ```sh
//! cargo bench -p altocast-bench --bench model -- --topology ../shared/data/topologies/kdl.json
//! cargo bench -p altocast-bench --bench model              # synthetic 726-PID backbone
//! ```
//! Each sample fails one link from the base state (like the data set's
//! "single link failure" figure), computes the new cost map, and times the
//! origin's diff + sign and a client's verify (signature, decode, apply,
//! incremental tag, expiry, dependencies) of that update.

use std::time::{Duration, Instant};

use altocast_proto::{
    Limits, MapState, OriginKey, ResourceId, TrustedKeys, Verifier,
    wire::update::{Dependency, Signer, Version},
};
use altocast_server::workload::{SplitMix64, Topology, Workload};
use prost::Message as _;

const NOW: i64 = 1_700_000_000_000;

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(reps);
    let mut out = None;
    for _ in 0..reps {
        let t = Instant::now();
        out = Some(f());
        times.push(t.elapsed());
    }
    (median(&mut times), out.unwrap_or_else(|| unreachable!()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut topology, mut samples, mut synthetic) = (None, 40usize, 754usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--topology" => topology = args.next(),
            "--samples" => samples = args.next().and_then(|s| s.parse().ok()).unwrap_or(samples),
            "--synthetic" => synthetic = args.next().and_then(|s| s.parse().ok()).unwrap_or(synthetic),
            "--bench" => {}
            other => {
                return Err(
                    format!("unknown argument {other}; use --topology FILE, --samples N, --synthetic NODES").into()
                );
            }
        }
    }
    let topo = match &topology {
        Some(path) => {
            // `cargo bench` runs in the package directory; accept paths given
            // relative to the workspace root too.
            let p = std::path::Path::new(path);
            let alt = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p);
            let body = std::fs::read(p).or_else(|_| std::fs::read(&alt)).map_err(|e| format!("reading {path}: {e}"))?;
            Topology::from_json(&body)?
        }
        None => Topology::synthetic(synthetic, 1),
    };
    let mut w = Workload::new(topo, 1);
    let nm_id = w.network_map_id.clone();
    let cm_id = ResourceId::new("default-cost-map")?;
    let nm = w.network_map();
    let t = Instant::now();
    let cm = w.cost_map(&nm);
    let t_paths = t.elapsed();
    println!(
        "topology {}: {} nodes, {} links, {} PIDs, {} cost entries (all-pairs shortest paths {:.0} ms)",
        w.topology().name,
        w.topology().labels.len(),
        w.link_count(),
        cm.pids().len(),
        cm.entry_count(),
        ms(t_paths)
    );

    let signer = Signer::new(OriginKey::from_seed([5; 32]), 60_000);
    let dep = vec![Dependency { resource_id: nm_id.clone(), seq: 1, tag: nm.tag() }];
    let nm_v = Version { seq: 1, state: MapState::Network(nm.clone()), dependencies: vec![] };
    let base = Version { seq: 1, state: MapState::Cost(cm.clone()), dependencies: dep.clone() };

    // Snapshot figures.
    let snap_pb = base.state.to_pb();
    let (t_enc, snap_bytes) = time(5, || snap_pb.encode_to_vec());
    let (t_dec, _) = time(5, || {
        let s = altocast_proto::pb::Snapshot::decode(snap_bytes.as_slice()).expect("decode");
        MapState::from_pb(s, Some(cm.cost_type().clone())).expect("valid")
    });
    let (t_full_tag, _) = time(5, || cm.full_rehash_tag());
    let json_body = altocast_proto::model::json::cost_map_json(&cm);
    let json_len = json_body.len();
    let (t_json_out, _) = time(3, || altocast_proto::model::json::cost_map_json(&cm));
    let (t_json_in, _) = time(3, || altocast_proto::model::json::parse_cost_map(json_body.as_bytes()).expect("parse"));
    println!("RFC 7285 JSON: write {:.1} ms, parse+validate {:.1} ms", ms(t_json_out), ms(t_json_in));
    println!(
        "snapshot: {} bytes protobuf ({} bytes RFC 7285 JSON); encode {:.1} ms, decode+validate+tag {:.1} ms; full rehash {:.2} ms",
        snap_bytes.len(),
        json_len,
        ms(t_enc),
        ms(t_dec),
        ms(t_full_tag)
    );

    // A verifier primed with the base state.
    let keys = TrustedKeys::new([signer.key().public()]);
    let mut primed = Verifier::new(keys, Limits::default(), [nm_id.clone(), cm_id.clone()]);
    for (id, v) in [(&nm_id, &nm_v), (&cm_id, &base)] {
        let s = signer.snapshot(id, v, NOW);
        primed.verify(&s.update, &s.chunks, NOW)?;
    }

    // Sign + verify overhead on a heartbeat (no payload work).
    let (t_sign_hb, hb) = time(51, || signer.heartbeat(&cm_id, &base, NOW + 1));
    let (t_open_hb, _) = time(51, || primed.open(&hb.update).expect("opens"));
    println!(
        "sign + verify overhead (heartbeat): sign {:.3} ms + verify signature {:.3} ms",
        ms(t_sign_hb),
        ms(t_open_hb)
    );

    // Link failures.
    let mut rng = SplitMix64::new(42);
    let mut links: Vec<usize> = (0..w.link_count()).collect();
    for k in (1..links.len()).rev() {
        links.swap(k, rng.below(k + 1));
    }
    links.truncate(samples.min(links.len()));
    struct Row {
        entries: usize,
        diff_bytes: usize,
        t_diff: Duration,
        t_sign: Duration,
        t_verify: Duration,
    }
    let mut rows = Vec::new();
    for &li in &links {
        w.set_link_up(li, false);
        let cm2 = w.cost_map(&nm);
        w.set_link_up(li, true);
        let next = Version { seq: 2, state: MapState::Cost(cm2), dependencies: dep.clone() };
        let (t_diff, d) = time(3, || base.state.diff(&next.state).expect("diffable"));
        let (t_sign, signed) = time(3, || signer.diff(&cm_id, &base, &next, &d, NOW + 1));
        let mut times = Vec::new();
        for _ in 0..5 {
            let mut v = primed.clone();
            let t = Instant::now();
            let a = v.verify(&signed.update, &signed.chunks, NOW + 2)?;
            times.push(t.elapsed());
            assert_eq!(a.tag, next.state.tag());
        }
        rows.push(Row {
            entries: d.entries_changed(),
            diff_bytes: signed.wire_len(),
            t_diff,
            t_sign,
            t_verify: median(&mut times),
        });
    }
    rows.retain(|r| r.entries > 0);
    let n = rows.len().max(1) as f64;
    let mean = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).sum::<f64>() / n;
    let mean_entries = mean(&|r| r.entries as f64);
    let mean_bytes = mean(&|r| r.diff_bytes as f64);
    let mut verify: Vec<Duration> = rows.iter().map(|r| r.t_verify).collect();
    verify.sort();
    let pct = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let avg = rows.iter().min_by_key(|r| (r.entries as f64 - mean_entries).abs() as u64);
    println!("link failures: {} sampled (of {} links), {} change the map", links.len(), w.link_count(), rows.len());
    println!("  entries changed: mean {:.0}, max {}", mean_entries, rows.iter().map(|r| r.entries).max().unwrap_or(0));
    println!("  diff (origin): mean {:.2} ms; sign: mean {:.2} ms", mean(&|r| ms(r.t_diff)), mean(&|r| ms(r.t_sign)));
    println!(
        "  apply + verify (client): mean {:.2} ms, p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        mean(&|r| ms(r.t_verify)),
        ms(pct(&verify, 0.5)),
        ms(pct(&verify, 0.9)),
        ms(pct(&verify, 1.0))
    );
    println!(
        "  diff bytes: mean {:.0} = 1/{:.1} of the snapshot ({} bytes); largest diff 1/{:.1}",
        mean_bytes,
        snap_bytes.len() as f64 / mean_bytes,
        snap_bytes.len(),
        snap_bytes.len() as f64 / rows.iter().map(|r| r.diff_bytes).max().unwrap_or(1) as f64
    );
    if let Some(r) = avg {
        println!(
            "  average-sized failure ({} entries): apply + verify {:.2} ms, diff {} bytes (1/{:.1} of snapshot)",
            r.entries,
            ms(r.t_verify),
            r.diff_bytes,
            snap_bytes.len() as f64 / r.diff_bytes as f64
        );
    }
    Ok(())
}
