//! Fan-out: one hub + the gRPC `Distribution` service (an RProxy's serving
//! side) delivering to K subscribers in a helper process: propagation,
//! throughput, memory.

use std::{sync::Arc, time::Duration};

use altocast_proto::{
    CostMapBuilder, CostType, MapState, OriginKey, Pid, ResourceId, TrustedKeys, Verifier, pb,
    wire::update::{Signer, Version},
};
use altocast_rproxy::{
    hub::{Entry, Hub, HubConfig},
    service,
};
use altocast_server::workload::SplitMix64;
use tokio_util::sync::CancellationToken;

use crate::{
    child::{Arrivals, ClientsProc},
    report::{cpu_secs, field, now_us, pct, record, rss_kib},
};

/// A 40-PID cost map with every cost 10, as version `seq`.
pub(crate) fn base_version(seq: u64) -> Version {
    let n: usize = std::env::var("ALTOCAST_BENCH_PIDS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let pids: Vec<Pid> = (0..n).map(|i| Pid::new(&format!("p{i:02}")).expect("pid")).collect();
    let mut b = CostMapBuilder::new(CostType::routingcost(), None);
    for s in &pids {
        b.row(s.clone(), pids.iter().map(|d| (d.clone(), 10.0)).collect());
    }
    Version { seq, state: MapState::Cost(b.build().expect("cm")), dependencies: vec![] }
}

/// `n` signed diffs following `first`; each changes `per_update` random entries.
pub(crate) fn chain(
    signer: &Signer,
    id: &ResourceId,
    first: &Version,
    n: usize,
    per_update: usize,
    seed: u64,
) -> Vec<Arc<Entry>> {
    let mut rng = SplitMix64::new(seed);
    let mut cur = first.clone();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let MapState::Cost(cm) = &cur.state else { unreachable!() };
        let mut rows = std::collections::BTreeMap::<u32, Vec<(u32, f64)>>::new();
        for _ in 0..per_update {
            rows.entry(rng.below(40) as u32).or_default().push((rng.below(40) as u32, (rng.below(1000) + 1) as f64));
        }
        let diff = altocast_proto::CostMapDiff {
            rows: rows
                .into_iter()
                .map(|(src, mut e)| {
                    e.sort_by_key(|x| x.0);
                    e.dedup_by_key(|x| x.0);
                    altocast_proto::CostRowDiff {
                        src,
                        set_dst: e.iter().map(|x| x.0).collect(),
                        set_cost: e.iter().map(|x| x.1).collect(),
                        removed_dst: vec![],
                    }
                })
                .collect(),
            ..Default::default()
        };
        let next_state = MapState::Cost(cm.apply(&diff).expect("apply"));
        let next = Version { seq: cur.seq + 1, state: next_state, dependencies: vec![] };
        let d = altocast_proto::MapDiff::Cost(diff);
        out.push(Arc::new(Entry::from_signed(signer.diff(id, &cur, &next, &d, altocast_client::now_ms()))));
        cur = next;
    }
    out
}

/// Figures of one fan-out run: p99 per K, and delivered messages/s.
pub(crate) struct FanoutResult {
    pub(crate) p99: Vec<(usize, f64)>,
    pub(crate) throughput: f64,
}

pub(crate) async fn fanout(
    ks: &[usize],
    updates: usize,
    tk: usize,
    tu: usize,
    verify: bool,
) -> anyhow::Result<FanoutResult> {
    let shutdown = CancellationToken::new();
    let cfg = HubConfig { ring_size: 64, live_buffer: 1024, queue: 64, ..Default::default() };
    let hub = Hub::new(cfg, shutdown.clone());
    let key = OriginKey::generate()?;
    let keydir = tempfile::tempdir()?;
    let key_path = keydir.path().join("origin.pem");
    std::fs::write(&key_path, key.public().to_spki_pem())?;
    let signer = Signer::new(key, 600_000);
    let id = ResourceId::new("bench")?;
    let small_n = ks.len() * (updates + 2);
    let first = base_version(1);
    let small = chain(&signer, &id, &first, small_n, 4, 1);
    hub.publish(Arc::new(Entry::from_signed(signer.snapshot(&id, &first, altocast_client::now_ms()))))?;
    let svc = service::DistributionService::new(hub.clone(), Arc::new(arc_swap::ArcSwapOption::empty()), None);
    let router =
        service::router(svc, &service::ServerLimits { max_concurrent_streams: 1024, ..Default::default() }).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let srv = tokio::spawn(service::serve(router, listener, Default::default(), shutdown.clone()));
    let me = std::process::id();
    let verify_key = verify.then_some(key_path.as_path());
    println!(
        "fanout: one hub + gRPC Distribution service (the RProxy serving side); subscribers in a separate process{}",
        if verify { ", each verifying every update" } else { " (receive and decode; no verification)" }
    );
    println!("small diff: {} bytes signed body", small[0].signed.body.len());
    let mut next = 0;
    let mut results = Vec::new();
    let mut p99s = Vec::new();
    for &k in ks {
        let rss0 = rss_kib(me);
        let max_seq = (next + updates + 1) as u64 + 1;
        let proc_ = ClientsProc::start(std::slice::from_ref(&url), k, max_seq + 1, verify_key, None)?;
        proc_.wait_for("ready", Duration::from_secs(120))?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss1 = rss_kib(me);
        let mut lat = Vec::new();
        for _ in 0..updates {
            let e = small[next].clone();
            next += 1;
            let t0 = now_us();
            hub.publish(e.clone())?;
            let line = proc_.wait_for(&format!("seq {} ", e.seq), Duration::from_secs(60))?;
            let last = field(&line, "last_us").unwrap_or(t0);
            lat.push((last.saturating_sub(t0)) as f64 / 1e3);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rss2 = rss_kib(me);
        let per_sub = (rss1.saturating_sub(rss0)) as f64 * 1024.0 / k as f64;
        let per_sub_flowing = (rss2.saturating_sub(rss0)) as f64 / k as f64;
        println!(
            "  K={k:>6}: publish → last subscriber p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; RSS per subscriber {:.1} KiB idle, {per_sub_flowing:.1} KiB after the updates",
            pct(&mut lat.clone(), 0.5),
            pct(&mut lat.clone(), 0.99),
            pct(&mut lat, 1.0),
            per_sub / 1024.0
        );
        p99s.push((k, pct(&mut lat.clone(), 0.99)));
        results.push(serde_json::json!({"k": k, "p50_ms": pct(&mut lat.clone(), 0.5), "p99_ms": pct(&mut lat.clone(), 0.99), "rss_per_sub_kib": per_sub / 1024.0, "rss_per_sub_kib_after_updates": per_sub_flowing}));
        drop(proc_);
        // Skip the diffs the next run's subscribers would otherwise replay as catch-up.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Throughput: 1 KiB updates to tk subscribers, published back to back,
    // starting from a fresh snapshot after the propagation runs.
    let base = base_version(hub.status().first().map_or(1, |s| s.seq) + 1);
    hub.publish(Arc::new(Entry::from_signed(signer.snapshot(&id, &base, altocast_client::now_ms()))))?;
    let entries = chain(&signer, &id, &base, tu, 60, 2);
    let last_seq = entries.last().map_or(base.seq, |e| e.seq);
    let body = entries[0].signed.body.len();
    let proc_ = ClientsProc::start(std::slice::from_ref(&url), tk, last_seq + 1, verify_key, None)?;
    proc_.wait_for("ready", Duration::from_secs(120))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (cpu_hub0, cpu_cli0) = (cpu_secs(me), cpu_secs(proc_.child.id()));
    let t0 = now_us();
    let mut peak = 0;
    for (i, e) in entries.iter().enumerate() {
        hub.publish(e.clone())?;
        if i % 50 == 0 {
            peak = peak.max(rss_kib(me));
            tokio::task::yield_now().await;
        }
    }
    let line = proc_.wait_for(&format!("seq {last_seq} "), Duration::from_secs(120))?;
    let last = field(&line, "last_us").unwrap_or(t0);
    let secs = (last.saturating_sub(t0)) as f64 / 1e6;
    // What was delivered: every subscriber got every update unless it lagged
    // and was resynced with a snapshot (counted by the helper).
    let msgs = field(&line, "received").unwrap_or(0) as f64;
    if msgs < (tk * entries.len()) as f64 {
        println!(
            "  note: {} of {} updates were delivered; lagging subscribers were resynced with a snapshot",
            msgs,
            tk * entries.len()
        );
    }
    println!(
        "  CPU during the run: hub process {:.2} s, subscriber process {:.2} s (wall {:.2} s, 2 cores)",
        cpu_secs(me) - cpu_hub0,
        cpu_secs(proc_.child.id()) - cpu_cli0,
        secs
    );
    println!(
        "  throughput: {} updates of {} bytes to {} subscribers: {:.0} delivered messages/s ({:.2} s); hub-side RSS peak {:.1} MiB",
        entries.len(),
        body,
        tk,
        msgs / secs,
        secs,
        peak as f64 / 1024.0
    );
    drop(proc_);
    record("fanout", serde_json::json!({"propagation": results, "throughput_msgs_per_s": msgs / secs}));
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), srv).await;
    Ok(FanoutResult { p99: p99s, throughput: msgs / secs })
}

/// Helper: K subscriber streams (100 per HTTP/2 connection, connections spread
/// over `endpoints`) reporting, for each seq of the watched resource (`resource`,
/// or any), the time the last of them received it: a line `seq N last_us T`.
/// With `key`, each stream verifies every update (signature, chain, tag) as a
/// client does; without, it only decodes the update's header.
pub(crate) async fn clients(
    endpoints: &[String],
    k: usize,
    max_seq: u64,
    key: Option<String>,
    resource: Option<String>,
) -> anyhow::Result<()> {
    let arrivals = Arrivals::new(k, max_seq);
    let keys = match key {
        Some(p) => Some(TrustedKeys::new([altocast_proto::PublicKey::from_spki_pem(&std::fs::read_to_string(p)?)?])),
        None => None,
    };
    let per_conn = 100;
    let mut chans = Vec::new();
    for i in 0..k.div_ceil(per_conn) {
        let url = &endpoints[i % endpoints.len()];
        chans.push(tonic::transport::Endpoint::from_shared(url.clone())?.tcp_nodelay(true).connect().await?);
    }
    let resource = Arc::new(resource);
    for i in 0..k {
        // Subscribe in waves of 1,000 (each wave holding the resource before
        // the next starts): 10,000 verifying subscribers starting at once on
        // two cores starve each other's streams for longer than the RProxy's
        // stuck deadline, which measures the ramp-up, not propagation.
        if i % WAVE == 0 && i > 0 {
            let t = std::time::Instant::now();
            while arrivals.ready_count() < i && t.elapsed() < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let ch = chans[i / per_conn].clone();
        let (arrivals, keys, resource) = (arrivals.clone(), keys.clone(), resource.clone());
        tokio::spawn(async move {
            let mut c = pb::distribution_client::DistributionClient::new(ch).max_decoding_message_size(64 << 20);
            let Ok(resp) = c.subscribe(pb::SubscribeRequest { resources: vec![] }).await else { return };
            let mut s = resp.into_inner();
            let mut verifier = keys.map(|k| Verifier::accepting_all(k, Default::default()));
            let mut first = true;
            while let Ok(Some(f)) = s.message().await {
                let Some(pb::subscribe_response::Item::Update(su)) = f.item else { continue };
                let t = now_us();
                let (res, seq, heartbeat) = match &mut verifier {
                    Some(v) => match v.verify(&su, &[], altocast_client::now_ms()) {
                        // A cached snapshot older than the TTL: authentic, kept
                        // pending until the heartbeat after it (as a client does).
                        Ok(a) if !a.is_committed() => continue,
                        Ok(a) => (a.resource_id.to_string(), a.seq, a.kind == altocast_proto::UpdateKind::Heartbeat),
                        Err(e) => {
                            eprintln!("verification failed: {e}");
                            return;
                        }
                    },
                    None => match Header::parse(&su.body) {
                        Some(h) => (String::from_utf8_lossy(h.resource).into_owned(), h.seq, h.seq == h.base_seq),
                        None => continue,
                    },
                };
                if resource.as_ref().as_ref().is_some_and(|r| *r != res) {
                    continue;
                }
                // Ready once it holds the resource (a pending snapshot is
                // committed by a heartbeat); after that, heartbeats are not counted.
                if first {
                    first = false;
                    arrivals.ready();
                    continue;
                }
                if !heartbeat {
                    arrivals.arrived(seq, t);
                }
            }
        });
    }
    // Exit when the parent closes our stdout pipe (or after an hour at most).
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

/// Subscribers started together by the `clients` helper.
const WAVE: usize = 1000;

/// The fields of an `Update` body a non-verifying subscriber needs, read
/// without decoding the payload.
struct Header<'a> {
    resource: &'a [u8],
    seq: u64,
    base_seq: u64,
}

impl<'a> Header<'a> {
    fn parse(mut b: &'a [u8]) -> Option<Header<'a>> {
        fn varint(b: &mut &[u8]) -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let (&byte, rest) = b.split_first()?;
                *b = rest;
                v |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        }
        let mut h = Header { resource: &[], seq: 0, base_seq: 0 };
        while !b.is_empty() {
            let key = varint(&mut b)?;
            match (key >> 3, key & 7) {
                (f, 0) => {
                    let v = varint(&mut b)?;
                    match f {
                        5 => h.seq = v,
                        6 => h.base_seq = v,
                        _ => {}
                    }
                }
                (_, 1) => b = b.get(8..)?,
                (f, 2) => {
                    let n = varint(&mut b)? as usize;
                    if f == 2 {
                        h.resource = b.get(..n)?;
                    }
                    b = b.get(n..)?;
                }
                (_, 5) => b = b.get(4..)?,
                _ => return None,
            }
        }
        Some(h)
    }
}

/// Prints and records altocast/Redis ratios from the same run.
pub(crate) fn compare(ours: &FanoutResult, theirs: &FanoutResult) {
    println!("altocast vs Redis pub/sub, same run:");
    let mut ratios = Vec::new();
    for ((k, a), (_, b)) in ours.p99.iter().zip(&theirs.p99) {
        println!("  K={k:>6}: p99 altocast {a:.1} ms, Redis {b:.1} ms → altocast/Redis = {:.2}", a / b);
        ratios.push(serde_json::json!({"k": k, "p99_altocast_ms": a, "p99_redis_ms": b, "ratio": a / b}));
    }
    let t = ours.throughput / theirs.throughput;
    println!(
        "  throughput: altocast {:.0} msg/s, Redis {:.0} msg/s → altocast/Redis = {t:.2}",
        ours.throughput, theirs.throughput
    );
    record("vs_redis", serde_json::json!({"p99": ratios, "throughput_ratio": t}));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_reads_resource_seq_and_base_of_a_signed_update() {
        let signer = Signer::new(OriginKey::from_seed([3; 32]), 60_000);
        let id = ResourceId::new("bench").expect("id");
        let first = base_version(1);
        let snap = signer.snapshot(&id, &first, 1_000);
        let h = Header::parse(&snap.update.body).expect("snapshot header");
        assert_eq!((h.resource, h.seq, h.base_seq), (&b"bench"[..], 1, 0));
        let diffs = chain(&signer, &id, &first, 2, 4, 7);
        let h = Header::parse(&diffs[1].signed.body).expect("diff header");
        assert_eq!((h.resource, h.seq, h.base_seq), (&b"bench"[..], 3, 2));
        // A heartbeat repeats the seq as its base.
        let hb = signer.heartbeat(&id, &first, 2_000);
        let h = Header::parse(&hb.update.body).expect("heartbeat header");
        assert_eq!((h.seq, h.base_seq), (1, 1));
        assert!(Header::parse(&[0xff]).is_none(), "a truncated varint is rejected");
    }
}
