//! Origin load: CPU of a real `altocast-server` per update with K subscribers
//! behind RProxies, against the polling baseline (K clients fetching the full
//! cost map once per ALTO epoch), at the same K and the same update rate.
//!
//! The usual 30 s epoch is compressed to `epoch_ms`: once per epoch the
//! benchmark publishes one link failure (or recovery) as an RFC 7396 merge
//! patch; in the push run every subscriber receives it through the RProxies,
//! in the polling run every client fetches the whole map once during the
//! epoch, spread evenly across it. Polling uses altocast's own `Fetch` (the
//! cached signed protobuf snapshot plus the diffs since), which is cheaper for
//! the origin than RFC 7285 JSON, so the baseline is a conservative one.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use altocast_proto::{ResourceId, pb};
use altocast_server::workload::{SplitMix64, Workload};
use anyhow::{Context as _, bail};

use crate::{
    child::{Children, ClientsProc, free_port, sibling, wait_serving},
    load_topology,
    report::{CpuMeter, field, now_us, record},
    tree::start_tree,
};

const TOKEN: &str = "bench-token-not-secret-0123456789";

/// Link failures and recoveries of the topology, as merge patches against
/// what was last published.
struct Changes {
    w: Workload,
    nm: altocast_proto::NetworkMap,
    prev: altocast_proto::CostMap,
    rng: SplitMix64,
    down: Option<usize>,
}

impl Changes {
    fn next_patch(&mut self) -> String {
        match self.down.take() {
            Some(li) => self.w.set_link_up(li, true),
            None => {
                let li = self.rng.below(self.w.link_count());
                self.w.set_link_up(li, false);
                self.down = Some(li);
            }
        }
        let next = self.w.cost_map(&self.nm);
        let patch = altocast_proto::model::json::cost_map_merge_patch(&self.prev, &next);
        self.prev = next;
        patch
    }
}

/// Publishes the next change; returns its seq (0 when it changed nothing).
async fn publish(url: &str, id: &ResourceId, changes: &mut Changes) -> anyhow::Result<u64> {
    let req = pb::PublishRequest {
        resource_id: id.to_string(),
        json: changes.next_patch().into_bytes().into(),
        media_type: altocast_proto::model::json::MERGE_PATCH_MEDIA_TYPE.into(),
        more: vec![],
    };
    let r = altocast_client::connect::publish(url, Some(TOKEN), req, Duration::from_secs(60), None).await?;
    Ok(if r.changed { r.seq } else { 0 })
}

/// Sleeps until the wall clock reaches `at_us`.
async fn sleep_until_us(at_us: u64) {
    let now = now_us();
    if at_us > now {
        tokio::time::sleep(Duration::from_micros(at_us - now)).await;
    }
}

pub(crate) async fn load(
    topology: Option<&str>,
    ks: &[usize],
    epochs: usize,
    epoch_ms: u64,
    rproxies: usize,
) -> anyhow::Result<()> {
    // Push costs a few ms per update, plus an occasional background snapshot
    // checkpoint of tens of ms: twice the epochs average that in.
    let push_epochs = epochs * 2;
    let w = Workload::new(load_topology(topology)?, 1);
    let dir = tempfile::tempdir()?;
    let maps = dir.path().join("maps");
    std::fs::create_dir_all(&maps)?;
    let nm_id = w.network_map_id.clone();
    let cm_id = ResourceId::new("default-cost-map")?;
    let nm = w.network_map();
    let cm = w.cost_map(&nm);
    std::fs::write(maps.join(format!("{nm_id}.json")), altocast_proto::model::json::network_map_json(&nm_id, &nm))?;
    std::fs::write(maps.join(format!("{cm_id}.json")), altocast_proto::model::json::cost_map_json(&cm))?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("data");
    let origin = start_origin(&data, Some(&maps), port, None)?;
    let meter = CpuMeter::start(origin.0[0].id());
    wait_serving(&url, &cm_id).await?;
    let key = data.join("origin-pub.pem");
    let snapshot_len = {
        let mut c = altocast_client::connect::connect(&url, Duration::from_secs(5)).await?;
        let r = c.fetch(pb::FetchRequest { resource_id: cm_id.to_string() }).await?.into_inner();
        r.updates.iter().map(|u| u.body.len()).sum::<usize>() + r.chunks.iter().map(|c| c.data.len()).sum::<usize>()
    };
    let mut changes = Changes { w, nm, prev: cm, rng: SplitMix64::new(13), down: None };
    println!(
        "origin load: altocast-server with {} ({} PIDs, cost map {} B as a signed snapshot); one change per epoch, \
         the 30 s ALTO epoch compressed to {epoch_ms} ms; {push_epochs} epochs per push run, {epochs} per polling run",
        changes.w.topology().name,
        changes.w.pid_count(),
        snapshot_len
    );
    let epoch_us = epoch_ms * 1000;
    let mut rows = Vec::new();

    // Push: K subscribers behind `rproxies` RProxies.
    let (tree, levels) = start_tree(&[rproxies], &url, &key, &cm_id).await?;
    let leaves = levels.last().cloned().unwrap_or_default();
    let mut push = Vec::new();
    // The maps-dir files were published as seq 1.
    let mut seq_now = 1;
    for &k in ks {
        let seq_cap = seq_now + push_epochs as u64 + 1;
        let subs = ClientsProc::start(&leaves, k, seq_cap, None, Some(cm_id.as_str()))?;
        subs.wait_for("ready", Duration::from_secs(180))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (cpu0, t0) = (meter.secs(), now_us());
        let mut worst = 0.0f64;
        for e in 0..push_epochs {
            sleep_until_us(t0 + e as u64 * epoch_us).await;
            let sent = now_us();
            let seq = publish(&url, &cm_id, &mut changes).await?;
            if seq > 0 {
                seq_now = seq;
                let line = subs.wait_for(&format!("seq {seq} "), Duration::from_secs(120))?;
                worst = worst.max(field(&line, "last_us").unwrap_or(sent).saturating_sub(sent) as f64 / 1e3);
            }
        }
        sleep_until_us(t0 + push_epochs as u64 * epoch_us).await;
        let cpu = (meter.secs() - cpu0) / push_epochs as f64 * 1e3;
        println!(
            "  push, K={k:>6} behind {rproxies} RProxies: origin CPU {cpu:.1} ms per epoch (one update each); \
             slowest publish → last subscriber {worst:.0} ms"
        );
        push.push((k, cpu));
        drop(subs);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(tree);

    // Polling: K clients fetch the full map once per epoch, straight from the
    // origin — first with altocast's gRPC Fetch, then as RFC 7285 clients do,
    // `GET /costmap/ID` over HTTP (an origin restarted with --alto-http on the
    // same data, so that the push runs above paid nothing for it).
    let run = PollRun { cm_id: &cm_id, epochs, epoch_ms };
    let mut grpc = Vec::new();
    for &k in ks {
        grpc.push((k, run.poll(&url, None, k, &meter, &mut changes).await?));
    }
    drop(meter);
    drop(origin);
    let http_port = free_port()?;
    let origin = start_origin(&data, None, port, Some(http_port))?;
    let meter = CpuMeter::start(origin.0[0].id());
    wait_serving(&url, &cm_id).await?;
    let mut http = Vec::new();
    for &k in ks {
        http.push((k, run.poll(&url, Some(http_port), k, &meter, &mut changes).await?));
    }
    drop(origin);

    println!("origin CPU per epoch, push vs polling, same run:");
    let base = push.first().map_or(1.0, |p| p.1.max(1e-9));
    for (((k, p), (_, q)), (_, h)) in push.iter().zip(&grpc).zip(&http) {
        println!(
            "  K={k:>6}: push {p:.1} ms ({:.2}× the K={} push figure); polling gRPC Fetch {q:.1} ms ({:.0}×), \
             RFC 7285 HTTP GET {h:.1} ms ({:.0}×)",
            p / base,
            push[0].0,
            q / p.max(1e-9),
            h / p.max(1e-9)
        );
        rows.push(serde_json::json!({"k": k, "push_cpu_ms_per_update": p, "poll_grpc_cpu_ms_per_epoch": q,
            "poll_http_cpu_ms_per_epoch": h}));
    }
    record("origin_load", serde_json::json!({"epoch_ms": epoch_ms, "rproxies": rproxies, "runs": rows}));
    Ok(())
}

/// Starts `altocast-server` on `data` (publishing `maps` first, when given:
/// a restart resumes from the store instead).
fn start_origin(
    data: &std::path::Path,
    maps: Option<&std::path::Path>,
    port: u16,
    http: Option<u16>,
) -> anyhow::Result<Children> {
    let mut cmd = Command::new(sibling("altocast-server")?);
    cmd.arg("--data-dir").arg(data);
    if let Some(m) = maps {
        cmd.arg("--maps-dir").arg(m);
    }
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--publish-token", TOKEN, "--no-example"]);
    if let Some(h) = http {
        cmd.args(["--alto-http", &format!("127.0.0.1:{h}")]);
    }
    let child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting altocast-server")?;
    Ok(Children(vec![child]))
}

/// One polling run's settings.
struct PollRun<'a> {
    cm_id: &'a ResourceId,
    epochs: usize,
    epoch_ms: u64,
}

impl PollRun<'_> {
    /// K pollers for `epochs` epochs (gRPC `Fetch`, or HTTP GET on `http`),
    /// one change published per epoch; returns origin CPU ms per epoch.
    async fn poll(
        &self,
        url: &str,
        http: Option<u16>,
        k: usize,
        meter: &CpuMeter,
        changes: &mut Changes,
    ) -> anyhow::Result<f64> {
        let (epochs, epoch_ms) = (self.epochs, self.epoch_ms);
        let start = now_us() + 1_000_000;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["pollers", "--endpoint", url, "--resource", self.cm_id.as_str()])
            .args(["--clients", &k.to_string(), "--epochs", &epochs.to_string()])
            .args(["--epoch-ms", &epoch_ms.to_string(), "--start-us", &start.to_string()]);
        if let Some(h) = http {
            cmd.args(["--http", &format!("127.0.0.1:{h}")]);
        }
        let pollers = ClientsProc::spawn(cmd)?;
        let cpu0 = meter.secs();
        for e in 0..epochs {
            sleep_until_us(start + e as u64 * epoch_ms * 1000).await;
            publish(url, self.cm_id, changes).await?;
        }
        let line = pollers.wait_for("done", Duration::from_secs(epochs as u64 * epoch_ms / 1000 + 600))?;
        let cpu = (meter.secs() - cpu0) / epochs as f64 * 1e3;
        let secs = field(&line, "wall_ms").unwrap_or(0) as f64 / 1e3;
        let fetched = field(&line, "fetches").unwrap_or(0);
        let failed = field(&line, "errors").unwrap_or(0);
        let mib = field(&line, "bytes").unwrap_or(0) as f64 / 1048576.0;
        println!(
            "  poll ({}), K={k:>6}: origin CPU {cpu:.1} ms per epoch; {fetched} fetches ({failed} failed, {mib:.0} MiB) \
             took {secs:.1} s for {epochs} epochs of {:.1} s",
            if http.is_some() { "RFC 7285 HTTP GET" } else { "gRPC Fetch" },
            epoch_ms as f64 / 1e3
        );
        Ok(cpu)
    }
}

/// One RFC 7285 poll: `GET /costmap/ID` on a new connection; returns the bytes read.
async fn http_get(addr: &str, resource: &str) -> anyhow::Result<usize> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET /costmap/{resource} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 256 << 10];
    let (mut n, mut head) = (0, Vec::new());
    loop {
        let r = s.read(&mut buf).await?;
        if r == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..r.min(16 - head.len())]);
        }
        n += r;
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!("GET /costmap/{resource}: {}", String::from_utf8_lossy(&head));
    }
    Ok(n)
}

/// One polling client: altocast's gRPC `Fetch`, or RFC 7285 HTTP GET.
enum Poller {
    Grpc(pb::distribution_client::DistributionClient<tonic::transport::Channel>),
    Http(String),
}

impl Poller {
    /// Fetches the full map once; returns the bytes received.
    async fn fetch(&mut self, resource: &str) -> anyhow::Result<usize> {
        match self {
            Poller::Http(addr) => http_get(addr, resource).await,
            Poller::Grpc(c) => {
                let r = c.fetch(pb::FetchRequest { resource_id: resource.to_owned() }).await?.into_inner();
                Ok(r.updates.iter().map(|u| u.body.len()).sum::<usize>()
                    + r.chunks.iter().map(|c| c.data.len()).sum::<usize>())
            }
        }
    }
}

/// Helper: `k` clients on `k / 100` connections, each fetching `resource` once
/// per epoch at its own offset (with `http`, `GET /costmap/ID` on a new HTTP
/// connection each time); prints `done fetches N errors E bytes B wall_ms T`.
pub(crate) async fn pollers(
    endpoint: &str,
    resource: &str,
    k: usize,
    epochs: usize,
    epoch_ms: u64,
    start_us: u64,
    http: Option<String>,
) -> anyhow::Result<()> {
    // gRPC pollers share a connection per 100 (HTTP pollers open their own
    // per request, as simple RFC 7285 clients do).
    let mut chans = Vec::new();
    if http.is_none() {
        for _ in 0..k.div_ceil(100) {
            chans
                .push(tonic::transport::Endpoint::from_shared(endpoint.to_owned())?.tcp_nodelay(true).connect().await?);
        }
    }
    let (fetches, errors, bytes) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let epoch_us = epoch_ms * 1000;
    let mut tasks = Vec::with_capacity(k);
    for i in 0..k {
        let mut poller = match &http {
            Some(addr) => Poller::Http(addr.clone()),
            None => Poller::Grpc(
                pb::distribution_client::DistributionClient::new(chans[i / 100].clone())
                    .max_decoding_message_size(altocast_client::connect::MAX_MESSAGE),
            ),
        };
        let (fetches, errors, bytes) = (fetches.clone(), errors.clone(), bytes.clone());
        let resource = resource.to_owned();
        let offset = epoch_us * i as u64 / k as u64;
        tasks.push(tokio::spawn(async move {
            for e in 0..epochs as u64 {
                sleep_until_us(start_us + e * epoch_us + offset).await;
                match poller.fetch(&resource).await {
                    Ok(n) => {
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                        fetches.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall_ms = now_us().saturating_sub(start_us) / 1000;
    if fetches.load(Ordering::Relaxed) == 0 {
        bail!("no fetch succeeded");
    }
    let mut out = std::io::stdout();
    writeln!(
        out,
        "done fetches {} errors {} bytes {} wall_ms {wall_ms}",
        fetches.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed)
    )?;
    out.flush()?;
    Ok(())
}
