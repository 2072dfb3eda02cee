//! Attacks on a real `altocast-rproxy` process, with what they cost it. The
//! first scenario is the gRPC port's connections: silent TCP connections,
//! slowloris tricklers of the HTTP/2 preface, and connections beyond
//! `--grpc-max-connections`. Printed: the RProxy's open sockets and RSS while
//! the attack is on and after the handshake timeout, and how many attack
//! connections it closed. (The RFC 7285 HTTP attacks come next.)

use std::{process::Stdio, time::Duration};

use altocast_proto::{ResourceId, workload::Topology, workload::Workload};
use altocast_server::origin::OriginConfig;
use anyhow::Context as _;
use std::process::{Child, Command};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::{
    child::{LoopbackOrigin, free_port, sibling, wait_serving},
    report::rss_kib,
};

/// Kills the RProxy on every way out.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Whether the server closed `s` within `within` (reading past what it sent
/// first, such as its HTTP/2 SETTINGS).
async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

pub(crate) async fn abuse(silent: usize, slowloris: usize, surplus: usize) -> anyhow::Result<()> {
    let lo = LoopbackOrigin::start(OriginConfig::default()).await?;
    let (origin, origin_url, key_path) = (lo.origin.clone(), lo.url.clone(), lo.key_path.clone());
    let w = Workload::new(Topology::synthetic(20, 1), 1);
    let nm_id = w.network_map_id.clone();
    let nm = w.network_map();
    origin.ingest(&nm_id, altocast_proto::json::network_map_json(&nm_id, &nm).as_bytes())?;
    let cm_id = ResourceId::new("default-cost-map")?;
    origin.ingest(&cm_id, altocast_proto::json::cost_map_json(&w.cost_map(&nm)).as_bytes())?;

    let limit = silent + slowloris;
    let handshake_secs = 5;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let rproxy = Command::new(sibling("altocast-rproxy")?)
        .args(["--upstream", &origin_url, "--listen", &addr, "--grace-secs", "1"])
        .args(["--grpc-max-connections", &limit.to_string()])
        .args(["--grpc-handshake-timeout-secs", &handshake_secs.to_string()])
        .arg("--trust-key")
        .arg(&key_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting altocast-rproxy")?;
    let rproxy = Killed(rproxy);
    let pid = rproxy.0.id();
    wait_serving(&format!("http://{addr}"), &cm_id).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds0, rss0) = (open_fds(pid), rss_kib(pid));

    // The attack: silent connections, tricklers, then connections over the limit.
    let attack_started = std::time::Instant::now();
    let opening: Vec<_> = (0..silent).map(|_| tokio::spawn(TcpStream::connect(addr.clone()))).collect();
    let mut conns = Vec::with_capacity(silent);
    for c in opening {
        conns.push(c.await??);
    }
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut tricklers = Vec::new();
    for _ in 0..slowloris {
        let addr = addr.clone();
        tricklers.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(&addr).await else { return true };
            for b in preface {
                if s.write_all(&[*b]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            closed(&mut s, Duration::from_secs(5)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds1, rss1) = (open_fds(pid), rss_kib(pid));
    let t_attack = attack_started.elapsed();
    let probes: Vec<_> = (0..surplus)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let Ok(mut s) = TcpStream::connect(&addr).await else { return true };
                closed(&mut s, Duration::from_millis(500)).await
            })
        })
        .collect();
    let mut refused_at_once = 0;
    for p in probes {
        refused_at_once += usize::from(p.await.unwrap_or(false));
    }

    // After the handshake timeout.
    tokio::time::sleep(Duration::from_secs(handshake_secs + 1)).await;
    let mut silent_closed = 0;
    for s in &mut conns {
        silent_closed += usize::from(closed(s, Duration::from_millis(50)).await);
    }
    let mut tricklers_closed = 0;
    for t in tricklers {
        tricklers_closed += usize::from(t.await.unwrap_or(false));
    }
    let (fds2, rss2) = (open_fds(pid), rss_kib(pid));

    println!(
        "abuse: gRPC connections against a real altocast-rproxy (--grpc-max-connections {limit}, --grpc-handshake-timeout-secs {handshake_secs})"
    );
    println!("  {:<44} {:>10} {:>10}", "moment", "open fds", "RSS MiB");
    println!("  {:<44} {:>10} {:>10.1}", "before", fds0, rss0 as f64 / 1024.0);
    println!(
        "  {:<44} {:>10} {:>10.1}",
        format!("{silent} silent + {slowloris} slowloris + {surplus} surplus"),
        fds1,
        rss1 as f64 / 1024.0
    );
    println!("  {:<44} {:>10} {:>10.1}", format!("{} s later", handshake_secs + 1), fds2, rss2 as f64 / 1024.0);
    println!("  (attack connections opened in {t_attack:?})");
    println!(
        "  surplus connections closed within 0.5 s: {refused_at_once} of {surplus} ({} slots were still free)",
        limit.saturating_sub(fds1.saturating_sub(fds0))
    );
    println!("  silent connections closed by the handshake deadline: {silent_closed} of {silent}");
    println!("  slowloris connections closed: {tricklers_closed} of {slowloris}");
    drop(rproxy);
    lo.stop().await;
    Ok(())
}
