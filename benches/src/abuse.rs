//! Attacks on real `altocast-rproxy` and `altocast` processes, with what they
//! cost the process attacked. Each scenario starts an origin (the server
//! library, in this process) under a real RProxy, runs one attack, and prints
//! the figures that show its bound (or its growth):
//!
//! - `grpc`: silent TCP connections, slowloris tricklers of the HTTP/2
//!   preface, and connections beyond `--grpc-max-connections`;
//! - `sse`: RFC 8895 update streams that never read, on the biggest map;
//! - `ecs`: concurrent maximal endpoint-cost requests whose answers are not read;
//! - `idle`: HTTP connections that are silent, idle after a request, trickle a
//!   header or a body, and an HTTP/2 connection that stops answering pings:
//!   the time until each is closed against its configured limit;
//! - `chunks`: a malicious upstream sending a genuine chunked-snapshot head and
//!   then junk chunks to a real `altocast watch`: the client's peak memory
//!   against the signed size.
//!
//! The summary table at the end has one line per bound. Peak figures are the
//! kernel's high-water mark (`VmHWM`, reset through `/proc/PID/clear_refs`
//! when the attack starts), so a short spike is not missed between samples.

mod chunks;
mod grpc;
mod http;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use altocast_proto::{ResourceId, model::json};
use altocast_server::origin::OriginConfig;
use altocast_server::workload::{EventKind, Topology, Workload};
use anyhow::Context as _;
use tokio::{io::AsyncReadExt as _, net::TcpStream};

use crate::child::{LoopbackOrigin, free_port, sibling, wait_serving};

/// One attack scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    Grpc,
    Sse,
    Ecs,
    Idle,
    Chunks,
}

/// Sizes of the attacks.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AbuseArgs {
    /// Scenarios to run (default: all).
    #[arg(long = "scenario", value_enum, value_delimiter = ',')]
    pub(crate) scenarios: Vec<Scenario>,
    /// Topology of the maps served (default: kdl from ../shared if present,
    /// else a synthetic 754-PoP backbone: a 12 MB cost map either way).
    #[arg(long)]
    pub(crate) topology: Option<String>,
    /// `grpc`: silent TCP connections (they never send a byte).
    #[arg(long, default_value_t = 1000)]
    pub(crate) silent: usize,
    /// `grpc`: connections trickling the HTTP/2 preface a byte every 500 ms.
    #[arg(long, default_value_t = 200)]
    pub(crate) slowloris: usize,
    /// `grpc`: connections beyond the limit (silent + slowloris).
    #[arg(long, default_value_t = 500)]
    pub(crate) surplus: usize,
    /// `sse`: update streams that never read.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) streams: usize,
    /// `ecs`: concurrent maximal endpoint-cost requests (the RProxy runs 8 at once).
    #[arg(long, default_value_t = 16)]
    pub(crate) queries: usize,
    /// `idle`: connections of each kind.
    #[arg(long, default_value_t = 200)]
    pub(crate) idle: usize,
}

/// One line of the summary: a bound, what was measured, and whether it held.
pub(crate) struct Verdict {
    pub(crate) bound: String,
    pub(crate) measured: String,
    pub(crate) held: bool,
}

pub(crate) async fn abuse(args: AbuseArgs) -> anyhow::Result<()> {
    let all = [Scenario::Grpc, Scenario::Sse, Scenario::Ecs, Scenario::Idle, Scenario::Chunks];
    let scenarios = if args.scenarios.is_empty() { all.to_vec() } else { args.scenarios.clone() };
    let mut verdicts = Vec::new();
    for s in scenarios {
        println!();
        let v = match s {
            Scenario::Grpc => grpc::run(args.silent, args.slowloris, args.surplus).await,
            Scenario::Sse => http::sse(&args).await,
            Scenario::Ecs => http::ecs(&args).await,
            Scenario::Idle => http::idle(&args).await,
            Scenario::Chunks => chunks::run(&args).await,
        }
        .with_context(|| format!("abuse scenario {s:?}"))?;
        verdicts.extend(v);
    }
    println!("\nabuse: summary");
    println!("  {:<72} {:<50} held", "bound", "measured");
    for v in &verdicts {
        println!("  {:<72} {:<50} {}", v.bound, v.measured, if v.held { "yes" } else { "NO" });
    }
    Ok(())
}

/// The topology the HTTP and chunk scenarios serve.
fn topology(args: &AbuseArgs) -> anyhow::Result<Topology> {
    crate::load_topology(args.topology.clone().or_else(|| crate::shared_topology("kdl")).as_deref())
}

/// Kills the process on every way out.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A `/proc/PID/status` figure in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory now, MiB.
pub(crate) fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:") as f64 / 1024.0
}

/// Peak resident memory since the last [`reset_peak`], MiB.
pub(crate) fn peak_mib(pid: u32) -> f64 {
    status_kib(pid, "VmHWM:") as f64 / 1024.0
}

/// Restarts the kernel's peak-RSS count of `pid` from its current RSS.
pub(crate) fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Whether the server closed `s` within `within` (reading past anything it
/// sends first, such as HTTP/2 SETTINGS or an error response).
pub(crate) async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Writes `bytes` one every 500 ms, stopping when the server closes.
pub(crate) async fn trickle(mut s: TcpStream, bytes: &[u8]) -> TcpStream {
    use tokio::io::AsyncWriteExt as _;
    for b in bytes {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    s
}

/// Opens `n` TCP connections to `addr`, at most 64 handshakes at a time (so the
/// listen backlog never overflows and every connection is really accepted),
/// each with a receive buffer of `rcvbuf` bytes when given.
pub(crate) async fn connect_many(addr: &str, n: usize, rcvbuf: Option<u32>) -> anyhow::Result<Vec<TcpStream>> {
    use futures::StreamExt as _;
    let sa: std::net::SocketAddr = addr.parse()?;
    let conns: Vec<anyhow::Result<TcpStream>> = futures::stream::iter(0..n)
        .map(|_| async move {
            let sock = tokio::net::TcpSocket::new_v4()?;
            if let Some(b) = rcvbuf {
                sock.set_recv_buffer_size(b)?;
            }
            Ok(sock.connect(sa).await?)
        })
        .buffer_unordered(64)
        .collect()
        .await;
    conns.into_iter().collect()
}

/// The sum of a Prometheus metric's samples whose line starts with `prefix`
/// (a name, or a name and labels), scraped from `addr`.
pub(crate) async fn metric(addr: &str, prefix: &str) -> f64 {
    use tokio::io::AsyncWriteExt as _;
    let Ok(mut s) = TcpStream::connect(addr).await else { return f64::NAN };
    let req = format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return f64::NAN;
    }
    let mut body = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await;
    body.lines()
        .filter(|l| l.starts_with(prefix) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An origin serving a topology's network map and cost map, under a real
/// `altocast-rproxy` with its metrics (and the HTTP interface when asked).
pub(crate) struct Target {
    pub(crate) lo: LoopbackOrigin,
    pub(crate) w: Workload,
    pub(crate) cm_id: ResourceId,
    pub(crate) rproxy: Killed,
    pub(crate) pid: u32,
    /// gRPC address of the RProxy.
    pub(crate) grpc: String,
    /// Its `--alto-http` address, when started with one.
    pub(crate) http: Option<String>,
    /// Its `--metrics` address.
    pub(crate) metrics: String,
}

impl Target {
    /// Starts the origin with `topo`'s maps and an RProxy with `extra` flags
    /// (and `--alto-http` when `http`), and waits until the RProxy serves the
    /// cost map.
    pub(crate) async fn start(topo: Topology, http: bool, extra: &[String]) -> anyhow::Result<Target> {
        let lo = LoopbackOrigin::start(OriginConfig::default()).await?;
        let w = Workload::new(topo, 1);
        let nm_id = w.network_map_id.clone();
        let nm = w.network_map();
        lo.origin.ingest(&nm_id, json::network_map_json(&nm_id, &nm).as_bytes())?;
        let cm_id = ResourceId::new("default-cost-map")?;
        lo.origin.ingest(&cm_id, json::cost_map_json(&w.cost_map(&nm)).as_bytes())?;
        let grpc = format!("127.0.0.1:{}", free_port()?);
        let metrics = format!("127.0.0.1:{}", free_port()?);
        let http = if http { Some(format!("127.0.0.1:{}", free_port()?)) } else { None };
        let mut cmd = Command::new(sibling("altocast-rproxy")?);
        cmd.args(["--upstream", &lo.url, "--listen", &grpc, "--metrics", &metrics, "--grace-secs", "1"])
            .arg("--trust-key")
            .arg(&lo.key_path)
            .args(extra)
            .env("RUST_LOG", "warn,metrics_exporter_prometheus=error")
            .stdout(Stdio::null());
        if let Some(h) = &http {
            cmd.args(["--alto-http", h]);
        }
        let rproxy = Killed(cmd.spawn().context("starting altocast-rproxy")?);
        let pid = rproxy.0.id();
        wait_serving(&format!("http://{grpc}"), &cm_id).await?;
        Ok(Target { lo, w, cm_id, rproxy, pid, grpc, http, metrics })
    }

    /// Publishes the next change that alters the cost map (link failures,
    /// recoveries and metric changes), with the network map when it moves.
    pub(crate) fn change(&mut self) -> anyhow::Result<()> {
        while self.w.step().kind == EventKind::PrefixMove {}
        let nm = self.w.network_map();
        self.lo.origin.ingest(&self.cm_id, json::cost_map_json(&self.w.cost_map(&nm)).as_bytes())?;
        Ok(())
    }

    pub(crate) async fn stop(self) {
        drop(self.rproxy);
        self.lo.stop().await;
    }
}
