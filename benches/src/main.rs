//! `altocast-bench`: measures the real libraries and binaries on loopback and
//! prints figures (never asserts timings). Subcommands:
//!
//! - `origin`: publish → durable → hub latency for link failures on a backbone
//!   cost map, and the RSS of a real `altocast-server` holding it with 64
//!   retained diffs;
//! - `fanout`: one RProxy-side hub + gRPC service delivering to K subscribers in
//!   another process: propagation p50/p99/max, delivered messages/s with 1 KiB
//!   updates, RSS per idle subscriber;
//! - `client`: `rank` of 1,000 candidates and the RSS of a client holding the maps.
//!
//! `clients`, `redis-clients` and `hold` are helper modes the benchmark runs in
//! a child process. `ALTOCAST_BENCH_PIDS=N` sizes the fan-out cost map (default
//! 40 PIDs; 300 makes the catch-up snapshot ~0.9 MB, which is how per-stream
//! buffer retention was measured).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use altocast_proto::{
    CostMapBuilder, CostType, MapState, OriginKey, Pid, ResourceId, TrustedKeys, Verifier, pb,
    update::{Signer, Version},
    workload::{SplitMix64, Topology, Workload},
};
use altocast_rproxy::{
    hub::{Entry, Hub, HubConfig},
    service,
};
use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "altocast-bench", about = "altocast benchmarks on loopback")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Also write the figures as JSON to this file.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
}

/// Figures recorded for `--json`, in the order measured.
static REPORT: std::sync::Mutex<Vec<(String, serde_json::Value)>> = std::sync::Mutex::new(Vec::new());

fn record(key: &str, value: serde_json::Value) {
    REPORT.lock().unwrap_or_else(|e| e.into_inner()).push((key.to_owned(), value));
}

#[derive(Subcommand)]
enum Cmd {
    /// The whole suite: fan-out (with Redis when `redis-server` is installed),
    /// origin, client and bytes per topology.
    All {
        /// Topology for the origin and client runs (default: kdl from ../shared if
        /// present, else a synthetic 754-PoP backbone).
        #[arg(long)]
        topology: Option<String>,
    },
    /// Origin publish latency and memory.
    Origin {
        /// Topology JSON (default: synthetic backbone of 754 PoPs).
        #[arg(long)]
        topology: Option<String>,
        /// Link failures (each followed by its recovery) to publish.
        #[arg(long, default_value_t = 32)]
        samples: usize,
    },
    /// RProxy fan-out: propagation, throughput, memory.
    Fanout {
        /// Subscriber counts for the propagation runs.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
        subscribers: Vec<usize>,
        /// Updates per propagation run.
        #[arg(long, default_value_t = 20)]
        updates: usize,
        /// Subscribers in the throughput run.
        #[arg(long, default_value_t = 1000)]
        throughput_subscribers: usize,
        /// 1 KiB updates in the throughput run.
        #[arg(long, default_value_t = 500)]
        throughput_updates: usize,
        /// Subscribers verify every update (signature, chain, tag) as a client would.
        #[arg(long)]
        verify: bool,
        /// Also run the same workload through Redis pub/sub (`redis-server` on a
        /// private loopback port, started and stopped by the benchmark).
        #[arg(long)]
        redis: bool,
    },
    /// Bytes on the wire per link failure, for every topology in a directory.
    Bytes {
        /// Directory of topology JSON files.
        #[arg(long, default_value = "../shared/data/topologies")]
        dir: String,
        /// Link failures sampled per topology.
        #[arg(long, default_value_t = 20)]
        samples: usize,
    },
    /// Client ranking and memory.
    Client {
        /// Topology JSON (default: synthetic backbone of 754 PoPs).
        #[arg(long)]
        topology: Option<String>,
    },
    /// (helper) K subscribers reporting arrivals.
    Clients {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        subscribers: usize,
        #[arg(long)]
        max_seq: u64,
        #[arg(long)]
        key: Option<String>,
    },
    /// (helper) K Redis subscribers reporting arrivals.
    RedisClients {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        subscribers: usize,
        #[arg(long)]
        max_seq: u64,
    },
    /// (helper) a client holding all resources; prints its RSS.
    Hold {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        key: String,
    },
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Resident set size of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * q).round() as usize] }
}

fn load_topology(t: Option<&str>) -> anyhow::Result<Topology> {
    Ok(match t {
        Some(p) => {
            let alt = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p);
            let body = std::fs::read(p).or_else(|_| std::fs::read(&alt)).with_context(|| format!("reading {p}"))?;
            Topology::from_json(&body)?
        }
        None => Topology::synthetic(754, 1),
    })
}

fn sibling(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let p = std::env::current_exe()?.with_file_name(name);
    if !p.exists() {
        bail!("{} not found: build it with `cargo build --release -p altocast-server -p altocast-client`", p.display());
    }
    Ok(p)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let json = cli.json.clone();
    rt.block_on(async move {
        match cli.cmd {
            Cmd::All { topology } => {
                let kdl = "../shared/data/topologies/kdl.json";
                let topo = topology.or_else(|| {
                    let alt = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(kdl);
                    (std::path::Path::new(kdl).exists() || alt.exists()).then(|| kdl.to_owned())
                });
                let ours = fanout(&[100, 1000, 10_000], 20, 1000, 500, false).await?;
                let has_redis = Command::new("redis-server").arg("--version").output().is_ok();
                if has_redis {
                    let theirs = redis_fanout(&[100, 1000, 10_000], 20, 1000, 500).await?;
                    compare(&ours, &theirs);
                } else {
                    println!("redis-server not found: skipping the Redis comparison (Debian package redis-server)");
                }
                origin(topo.as_deref(), 32).await?;
                client(topo.as_deref()).await?;
                if let Err(e) = bytes_per_topology("../shared/data/topologies", 20) {
                    println!("bytes per topology skipped: {e:#}");
                }
                Ok(())
            }
            Cmd::Origin { topology, samples } => origin(topology.as_deref(), samples).await,
            Cmd::Fanout { subscribers, updates, throughput_subscribers, throughput_updates, verify, redis } => {
                let ours = fanout(&subscribers, updates, throughput_subscribers, throughput_updates, verify).await?;
                if redis {
                    let theirs =
                        redis_fanout(&subscribers, updates, throughput_subscribers, throughput_updates).await?;
                    println!("altocast vs Redis pub/sub, same run:");
                    for ((k, a), (_, b)) in ours.p99.iter().zip(&theirs.p99) {
                        println!("  K={k:>6}: p99 altocast {a:.1} ms, Redis {b:.1} ms → altocast/Redis = {:.2}", a / b);
                    }
                    println!(
                        "  throughput: altocast {:.0} msg/s, Redis {:.0} msg/s → altocast/Redis = {:.2}",
                        ours.throughput,
                        theirs.throughput,
                        ours.throughput / theirs.throughput
                    );
                }
                Ok(())
            }
            Cmd::RedisClients { port, subscribers, max_seq } => redis_clients(port, subscribers, max_seq).await,
            Cmd::Client { topology } => client(topology.as_deref()).await,
            Cmd::Bytes { dir, samples } => bytes_per_topology(&dir, samples),
            Cmd::Clients { endpoint, subscribers, max_seq, key } => clients(&endpoint, subscribers, max_seq, key).await,
            Cmd::Hold { endpoint, key } => hold(&endpoint, &key).await,
        }
    })?;
    if let Some(path) = json {
        let report: serde_json::Map<String, serde_json::Value> =
            REPORT.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// Prints and records altocast/Redis ratios from the same run.
fn compare(ours: &FanoutResult, theirs: &FanoutResult) {
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

// ---------------------------------------------------------------- origin

async fn origin(topology: Option<&str>, samples: usize) -> anyhow::Result<()> {
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
    let nm_json = altocast_proto::json::network_map_json(&nm_id, &nm);
    o.ingest(&nm_id, nm_json.as_bytes())?;
    let cm_json = altocast_proto::json::cost_map_json(&w.cost_map(&nm));
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
        let patch = altocast_proto::json::cost_map_merge_patch(&prev, &next);
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
        let body = altocast_proto::json::cost_map_json(&prev);
        let t = Instant::now();
        let doc = altocast_proto::json::parse_cost_map(body.as_bytes())?;
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

// ---------------------------------------------------------------- fanout

/// A 40-PID cost map with every cost 10, as version `seq`.
fn base_version(seq: u64) -> Version {
    let n: usize = std::env::var("ALTOCAST_BENCH_PIDS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let pids: Vec<Pid> = (0..n).map(|i| Pid::new(&format!("p{i:02}")).expect("pid")).collect();
    let mut b = CostMapBuilder::new(CostType::routingcost(), None);
    for s in &pids {
        b.row(s.clone(), pids.iter().map(|d| (d.clone(), 10.0)).collect());
    }
    Version { seq, state: MapState::Cost(b.build().expect("cm")), dependencies: vec![] }
}

/// `n` signed diffs following `first`; each changes `per_update` random entries.
fn chain(signer: &Signer, id: &ResourceId, first: &Version, n: usize, per_update: usize, seed: u64) -> Vec<Arc<Entry>> {
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

struct ClientsProc {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ClientsProc {
    fn start(url: &str, k: usize, max_seq: u64, key: Option<&std::path::Path>) -> anyhow::Result<ClientsProc> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["clients", "--endpoint", url, "--subscribers", &k.to_string(), "--max-seq", &max_seq.to_string()]);
        if let Some(k) = key {
            cmd.arg("--key").arg(k);
        }
        Self::spawn(cmd)
    }

    /// Runs a helper whose stdout lines ("ready", "seq N last_us T") are read
    /// on a thread.
    fn spawn(mut cmd: Command) -> anyhow::Result<ClientsProc> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        let out = child.stdout.take().context("child stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Ok(ClientsProc { child, lines })
    }

    fn wait_for(&self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => continue,
                Err(_) => bail!("clients process: no {prefix:?} within {timeout:?}"),
            }
        }
    }
}

impl Drop for ClientsProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, name: &str) -> Option<u64> {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == name {
            return it.next()?.parse().ok();
        }
    }
    None
}

/// Figures of one fan-out run: p99 per K, and delivered messages/s.
struct FanoutResult {
    p99: Vec<(usize, f64)>,
    throughput: f64,
}

async fn fanout(ks: &[usize], updates: usize, tk: usize, tu: usize, verify: bool) -> anyhow::Result<FanoutResult> {
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
    let router = service::router(svc, &service::ServerLimits { max_concurrent_streams: 1024 }).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let srv = tokio::spawn(service::serve(router, listener, shutdown.clone()));
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
        let proc_ = ClientsProc::start(&url, k, max_seq + 1, verify_key)?;
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
        let per_sub = (rss1.saturating_sub(rss0)) as f64 * 1024.0 / k as f64;
        println!(
            "  K={k:>6}: publish → last subscriber p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; RSS per idle subscriber {:.1} KiB",
            pct(&mut lat.clone(), 0.5),
            pct(&mut lat.clone(), 0.99),
            pct(&mut lat, 1.0),
            per_sub / 1024.0
        );
        p99s.push((k, pct(&mut lat.clone(), 0.99)));
        results.push(serde_json::json!({"k": k, "p50_ms": pct(&mut lat.clone(), 0.5), "p99_ms": pct(&mut lat.clone(), 0.99), "rss_per_sub_kib": per_sub / 1024.0}));
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
    let proc_ = ClientsProc::start(&url, tk, last_seq + 1, verify_key)?;
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
    let msgs = (tk * entries.len()) as f64;
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

// ---------------------------------------------------------------- Redis

struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The payload: 8-byte little-endian seq, padded to `len`.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut p = seq.to_le_bytes().to_vec();
    p.resize(len.max(8), b'x');
    p
}

async fn redis_fanout(ks: &[usize], updates: usize, tk: usize, tu: usize) -> anyhow::Result<FanoutResult> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let _server = RedisServer(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--maxclients", "15000", "--client-output-buffer-limit", "pubsub 0 0 0", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (Debian package redis-server)")?,
    );
    let mut publisher = loop {
        if let Ok(c) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    publisher.set_nodelay(true)?;
    let mut reply = vec![0u8; 1 << 16];
    println!("Redis pub/sub: redis-server on 127.0.0.1:{port}; subscribers in a separate process, one connection each");
    let mut seq = 0u64;
    let mut p99s = Vec::new();
    for &k in ks {
        let max_seq = seq + updates as u64 + 2;
        let proc_ = RedisClientsProc::start(port, k, max_seq)?;
        proc_.0.wait_for("ready", Duration::from_secs(120))?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut lat = Vec::new();
        for _ in 0..updates {
            seq += 1;
            let t0 = now_us();
            publisher.write_all(&resp(&[b"PUBLISH", b"bench", &payload(seq, 203)])).await?;
            let _ = publisher.read(&mut reply).await?;
            let line = proc_.0.wait_for(&format!("seq {seq} "), Duration::from_secs(60))?;
            lat.push(field(&line, "last_us").unwrap_or(t0).saturating_sub(t0) as f64 / 1e3);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "  K={k:>6}: publish → last subscriber p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            pct(&mut lat.clone(), 0.5),
            pct(&mut lat.clone(), 0.99),
            pct(&mut lat, 1.0)
        );
        p99s.push((k, pct(&mut lat.clone(), 0.99)));
        seq = max_seq;
    }
    let first = seq + 1;
    let last = seq + tu as u64;
    let proc_ = RedisClientsProc::start(port, tk, last + 1)?;
    proc_.0.wait_for("ready", Duration::from_secs(120))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = now_us();
    // Pipelined: the publisher never waits for a reply before the next PUBLISH.
    let mut batch = Vec::new();
    for s in first..=last {
        batch.extend(resp(&[b"PUBLISH", b"bench", &payload(s, 913)]));
    }
    let (mut rd, mut wr) = publisher.into_split();
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        let mut lines = 0usize;
        while lines < tu {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => lines += buf[..n].iter().filter(|b| **b == b'\n').count(),
            }
        }
    });
    wr.write_all(&batch).await?;
    let line = proc_.0.wait_for(&format!("seq {last} "), Duration::from_secs(120))?;
    let _ = drain.await;
    let secs = field(&line, "last_us").unwrap_or(t0).saturating_sub(t0) as f64 / 1e6;
    let msgs = (tk * tu) as f64;
    println!(
        "  throughput: {tu} messages of 913 bytes to {tk} subscribers: {:.0} delivered messages/s ({secs:.2} s)",
        msgs / secs
    );
    Ok(FanoutResult { p99: p99s, throughput: msgs / secs })
}

struct RedisClientsProc(ClientsProc);

impl RedisClientsProc {
    fn start(port: u16, k: usize, max_seq: u64) -> anyhow::Result<RedisClientsProc> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["redis-clients", "--port", &port.to_string(), "--subscribers", &k.to_string()])
            .args(["--max-seq", &max_seq.to_string()]);
        Ok(RedisClientsProc(ClientsProc::spawn(cmd)?))
    }
}

/// Helper: K Redis subscribers, one connection each, reporting like `clients`.
async fn redis_clients(port: u16, k: usize, max_seq: u64) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let counts: Arc<Vec<(AtomicU32, AtomicU64)>> =
        Arc::new((0..=max_seq).map(|_| (AtomicU32::new(0), AtomicU64::new(0))).collect());
    let ready = Arc::new(AtomicU32::new(0));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    for _ in 0..k {
        let (counts, ready, out) = (counts.clone(), ready.clone(), out.clone());
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        c.set_nodelay(true)?;
        c.write_all(&resp(&[b"SUBSCRIBE", b"bench"])).await?;
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(4096);
            let mut tmp = vec![0u8; 64 * 1024];
            let mut subscribed = false;
            loop {
                let n = match c.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&tmp[..n]);
                // Parse complete RESP arrays: *3 $7 message $5 bench $N payload.
                while let Some((kind, payload, used)) = parse_push(&buf) {
                    buf.drain(..used);
                    if kind == b"subscribe" && !subscribed {
                        subscribed = true;
                        if ready.fetch_add(1, Ordering::AcqRel) + 1 == k as u32 {
                            let _ = writeln!(out.lock().expect("stdout"), "ready");
                        }
                    } else if kind == b"message" && payload.len() >= 8 {
                        let t = now_us();
                        let seq = u64::from_le_bytes(payload[..8].try_into().unwrap_or([0; 8]));
                        if let Some((n, last)) = counts.get(seq as usize) {
                            last.fetch_max(t, Ordering::AcqRel);
                            if n.fetch_add(1, Ordering::AcqRel) + 1 == k as u32 {
                                let _ = writeln!(
                                    out.lock().expect("stdout"),
                                    "seq {seq} last_us {}",
                                    last.load(Ordering::Acquire)
                                );
                            }
                        }
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

/// Parses one RESP push `*3\r\n$a\r\n<kind>\r\n$b\r\n<chan>\r\n<third>`; the
/// third element is a bulk string (message) or an integer (subscribe count).
fn parse_push(b: &[u8]) -> Option<(Vec<u8>, Vec<u8>, usize)> {
    fn line(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = b[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&b[at..end], end + 2))
    }
    fn bulk(b: &[u8], at: usize) -> Option<(Vec<u8>, usize)> {
        let (hdr, at) = line(b, at)?;
        match hdr.first()? {
            b'$' => {
                let n: usize = std::str::from_utf8(&hdr[1..]).ok()?.parse().ok()?;
                let data = b.get(at..at + n)?.to_vec();
                b.get(at + n..at + n + 2)?;
                Some((data, at + n + 2))
            }
            b':' => Some((hdr[1..].to_vec(), at)),
            _ => None,
        }
    }
    let (hdr, at) = line(b, 0)?;
    if hdr != b"*3" {
        return None;
    }
    let (kind, at) = bulk(b, at)?;
    let (_chan, at) = bulk(b, at)?;
    let (third, at) = bulk(b, at)?;
    Some((kind, third, at))
}

/// Helper: K subscriber streams (100 per connection) reporting, for each seq,
/// the time the last of them received it.
async fn clients(endpoint: &str, k: usize, max_seq: u64, key: Option<String>) -> anyhow::Result<()> {
    let counts: Arc<Vec<(AtomicU32, AtomicU64)>> =
        Arc::new((0..=max_seq).map(|_| (AtomicU32::new(0), AtomicU64::new(0))).collect());
    let ready = Arc::new(AtomicU32::new(0));
    let keys = match key {
        Some(p) => Some(TrustedKeys::new([altocast_proto::PublicKey::from_spki_pem(&std::fs::read_to_string(p)?)?])),
        None => None,
    };
    let per_conn = 100;
    let mut chans = Vec::new();
    for _ in 0..k.div_ceil(per_conn) {
        chans.push(tonic::transport::Endpoint::from_shared(endpoint.to_owned())?.tcp_nodelay(true).connect().await?);
    }
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    for i in 0..k {
        let ch = chans[i / per_conn].clone();
        let (counts, ready, out, keys) = (counts.clone(), ready.clone(), out.clone(), keys.clone());
        tokio::spawn(async move {
            let mut c = pb::distribution_client::DistributionClient::new(ch).max_decoding_message_size(64 << 20);
            let Ok(resp) = c.subscribe(pb::SubscribeRequest { resources: vec![] }).await else { return };
            let mut s = resp.into_inner();
            let mut verifier = keys.map(|k| Verifier::accepting_all(k, Default::default()));
            let mut first = true;
            while let Ok(Some(f)) = s.message().await {
                let Some(pb::subscribe_response::Item::Update(su)) = f.item else { continue };
                let t = now_us();
                let seq = match &mut verifier {
                    Some(v) => match v.verify(&su, &[], altocast_client::now_ms()) {
                        Ok(a) => a.seq,
                        Err(e) => {
                            eprintln!("verification failed: {e}");
                            return;
                        }
                    },
                    None => seq_of(&su.body).unwrap_or(0),
                };
                if first {
                    first = false;
                    if ready.fetch_add(1, Ordering::AcqRel) + 1 == k as u32 {
                        let _ = writeln!(out.lock().expect("stdout"), "ready");
                    }
                    continue;
                }
                if let Some((n, last)) = counts.get(seq as usize) {
                    last.fetch_max(t, Ordering::AcqRel);
                    if n.fetch_add(1, Ordering::AcqRel) + 1 == k as u32 {
                        let _ =
                            writeln!(out.lock().expect("stdout"), "seq {seq} last_us {}", last.load(Ordering::Acquire));
                    }
                }
            }
        });
    }
    // Exit when the parent closes our stdout pipe (or after an hour at most).
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

/// Reads `Update.seq` (field 5, varint) without decoding the rest of the body.
fn seq_of(mut b: &[u8]) -> Option<u64> {
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
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = varint(&mut b)?;
                if field == 5 {
                    return Some(v);
                }
            }
            1 => b = b.get(8..)?,
            2 => {
                let n = varint(&mut b)? as usize;
                b = b.get(n..)?;
            }
            5 => b = b.get(4..)?,
            _ => return None,
        }
    }
    None
}

// ---------------------------------------------------------------- bytes

fn bytes_per_topology(dir: &str, samples: usize) -> anyhow::Result<()> {
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
        let json_len = altocast_proto::json::cost_map_json(&cm).len();
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
            patches.push(altocast_proto::json::cost_map_merge_patch(&cm, &cm2).len() as f64);
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

// ---------------------------------------------------------------- client

async fn client(topology: Option<&str>) -> anyhow::Result<()> {
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
    let nm_json = altocast_proto::json::network_map_json(&nm_id, &nm);
    let cm_json = altocast_proto::json::cost_map_json(&cm);
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
async fn hold(endpoint: &str, key: &str) -> anyhow::Result<()> {
    let baseline = rss_kib(std::process::id());
    let k = altocast_proto::PublicKey::from_spki_pem(&std::fs::read_to_string(key)?)?;
    let shutdown = CancellationToken::new();
    let sub = altocast_client::Subscription::start(
        altocast_client::Config::new(vec![endpoint.to_owned()], TrustedKeys::new([k])),
        shutdown.clone(),
        None,
    );
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
