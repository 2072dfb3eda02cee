//! `altocast-bench`: measures the real libraries and binaries on loopback and
//! prints figures (never asserts timings). Subcommands:
//!
//! - `all`: the whole suite below in one run, `--json FILE` for the figures;
//! - `fanout`: one RProxy-side hub + gRPC service delivering to K subscribers in
//!   another process: propagation p50/p99/max, delivered messages/s with 1 KiB
//!   updates, RSS per subscriber; `--redis` runs the same through Redis pub/sub;
//! - `tree`: origin → real `altocast-rproxy` processes (one, or a tree) → K
//!   subscribers verifying every update; RProxy RSS per subscriber;
//! - `load`: CPU of a real `altocast-server` per update with K subscribers
//!   behind RProxies vs K clients polling the full map every epoch;
//! - `origin`: publish → durable → hub latency for link failures on a backbone
//!   cost map, and the RSS of a real `altocast-server` holding it;
//! - `client`: `rank` of 1,000 candidates and the RSS of a client holding the maps;
//! - `bytes`: diff vs snapshot vs RFC 8895 merge patch for every topology;
//! - `abuse`: attacks on real `altocast-rproxy` and `altocast` processes
//!   (gRPC and HTTP connections, update streams, endpoint-cost requests, a
//!   chunk bomb) and what each costs them.
//!
//! `clients`, `redis-clients`, `pollers` and `hold` are helper modes the
//! benchmark runs in a child process. `ALTOCAST_BENCH_PIDS=N` sizes the fan-out
//! cost map (default 40 PIDs; 300 makes the catch-up snapshot ~0.9 MB, which is
//! how per-stream buffer retention was measured).

mod abuse;
mod bytes;
mod child;
mod client;
mod fanout;
mod load;
mod origin;
mod redis;
mod report;
mod tree;

use std::process::Command;

use altocast_server::workload::Topology;
use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::{
    bytes::bytes_per_topology,
    client::{client, hold},
    fanout::{clients, compare, fanout},
    origin::origin,
    redis::{redis_clients, redis_fanout},
    report::REPORT,
};

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

#[derive(Subcommand)]
enum Cmd {
    /// The whole suite: fan-out (with Redis when `redis-server` is installed),
    /// tree, load, origin, client and bytes per topology.
    All {
        /// Topology for the origin and client runs (default: kdl from ../shared if
        /// present, else a synthetic 754-PoP backbone).
        #[arg(long)]
        topology: Option<String>,
    },
    /// Attacks on real `altocast-rproxy` and `altocast` processes and what they
    /// cost them: gRPC and HTTP connections, update streams, endpoint-cost
    /// requests, a chunk bomb; a summary line per bound.
    Abuse(abuse::AbuseArgs),
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
    /// Propagation through real `altocast-rproxy` processes: one RProxy and a
    /// two-level tree, K verifying subscribers, RProxy RSS per subscriber.
    Tree {
        /// Subscriber counts.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
        subscribers: Vec<usize>,
        /// Updates published per run.
        #[arg(long, default_value_t = 20)]
        updates: usize,
        /// RProxies per level, from the origin down; repeat for several trees.
        #[arg(long = "shape", value_parser = tree::parse_shape, default_values = ["1", "2,4"])]
        shapes: Vec<tree::Shape>,
        /// Subscribers only decode the update header instead of verifying.
        #[arg(long)]
        no_verify: bool,
    },
    /// Origin CPU per update with K subscribers behind RProxies, against K
    /// clients polling the full map once per (compressed) ALTO epoch, over
    /// gRPC `Fetch` and RFC 7285 HTTP `GET`.
    Load {
        /// Topology JSON (default: cogentco from ../shared if present, else a
        /// synthetic 186-PoP backbone).
        #[arg(long)]
        topology: Option<String>,
        /// Subscriber (and polling client) counts.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
        subscribers: Vec<usize>,
        /// Epochs (one published change each) per polling run; push runs use twice as many.
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        /// The 30 s ALTO epoch compressed to this many milliseconds.
        #[arg(long, default_value_t = 2000)]
        epoch_ms: u64,
        /// RProxies between the origin and the subscribers.
        #[arg(long, default_value_t = 2)]
        rproxies: usize,
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
        /// Repeat to spread the subscribers' connections over several servers.
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
        #[arg(long)]
        subscribers: usize,
        #[arg(long)]
        max_seq: u64,
        /// Verify every update with this origin public key (SPKI PEM).
        #[arg(long)]
        key: Option<String>,
        /// Report only this resource's updates.
        #[arg(long)]
        resource: Option<String>,
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
    /// (helper) K clients fetching a resource once per epoch.
    Pollers {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        resource: String,
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        epochs: usize,
        #[arg(long)]
        epoch_ms: u64,
        /// Wall-clock start of the first epoch, Unix microseconds.
        #[arg(long)]
        start_us: u64,
        /// Poll with RFC 7285 `GET /costmap/ID` on this HTTP address instead of gRPC.
        #[arg(long)]
        http: Option<String>,
    },
    /// (helper) a client holding all resources; prints its RSS.
    Hold {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        key: String,
    },
}

pub(crate) fn load_topology(t: Option<&str>) -> anyhow::Result<Topology> {
    Ok(match t {
        Some(p) => {
            let alt = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p);
            let body = std::fs::read(p).or_else(|_| std::fs::read(&alt)).with_context(|| format!("reading {p}"))?;
            Topology::from_json(&body)?
        }
        None => Topology::synthetic(754, 1),
    })
}

/// `../shared/data/topologies/NAME.json` when it exists (from the working
/// directory or the workspace root).
pub(crate) fn shared_topology(name: &str) -> Option<String> {
    let rel = format!("../shared/data/topologies/{name}.json");
    let alt = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&rel);
    (std::path::Path::new(&rel).exists() || alt.exists()).then_some(rel)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let json = cli.json.clone();
    rt.block_on(async move {
        match cli.cmd {
            Cmd::All { topology } => {
                let ks = [100, 1000, 10_000];
                let topo = topology.or_else(|| shared_topology("kdl"));
                let ours = fanout(&ks, 20, 1000, 500, false).await?;
                let has_redis = Command::new("redis-server").arg("--version").output().is_ok();
                let theirs = if has_redis {
                    let theirs = redis_fanout(&ks, 20, 1000, 500).await?;
                    compare(&ours, &theirs);
                    Some(theirs)
                } else {
                    println!("redis-server not found: skipping the Redis comparison (Debian package redis-server)");
                    None
                };
                let trees = tree::tree(&ks, 20, &[vec![1], vec![2, 4]], true).await?;
                // The same through one real RProxy with subscribers that only
                // decode, as Redis's do: the delivery path without the
                // subscribers' verification CPU.
                let delivery = tree::tree(&ks, 20, &[vec![1]], false).await?;
                if let Some(theirs) = &theirs {
                    tree::compare(&trees, theirs);
                    tree::compare(&delivery, theirs);
                }
                load::load(shared_topology("cogentco").as_deref(), &ks, 3, 2000, 2).await?;
                origin(topo.as_deref(), 32).await?;
                client(topo.as_deref()).await?;
                if let Err(e) = bytes_per_topology("../shared/data/topologies", 20) {
                    println!("bytes per topology skipped: {e:#}");
                }
                Ok(())
            }
            Cmd::Tree { subscribers, updates, shapes, no_verify } => {
                tree::tree(&subscribers, updates, &shapes, !no_verify).await.map(drop)
            }
            Cmd::Load { topology, subscribers, epochs, epoch_ms, rproxies } => {
                let topology = topology.or_else(|| shared_topology("cogentco"));
                load::load(topology.as_deref(), &subscribers, epochs, epoch_ms, rproxies).await
            }
            Cmd::Pollers { endpoint, resource, clients, epochs, epoch_ms, start_us, http } => {
                load::pollers(&endpoint, &resource, clients, epochs, epoch_ms, start_us, http).await
            }
            Cmd::Origin { topology, samples } => origin(topology.as_deref(), samples).await,
            Cmd::Abuse(args) => abuse::abuse(args).await,
            Cmd::Fanout { subscribers, updates, throughput_subscribers, throughput_updates, verify, redis } => {
                let ours = fanout(&subscribers, updates, throughput_subscribers, throughput_updates, verify).await?;
                if redis {
                    let theirs =
                        redis_fanout(&subscribers, updates, throughput_subscribers, throughput_updates).await?;
                    compare(&ours, &theirs);
                }
                Ok(())
            }
            Cmd::RedisClients { port, subscribers, max_seq } => redis_clients(port, subscribers, max_seq).await,
            Cmd::Client { topology } => client(topology.as_deref()).await,
            Cmd::Bytes { dir, samples } => bytes_per_topology(&dir, samples),
            Cmd::Clients { endpoints, subscribers, max_seq, key, resource } => {
                clients(&endpoints, subscribers, max_seq, key, resource).await
            }
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
