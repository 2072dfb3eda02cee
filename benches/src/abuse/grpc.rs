//! The gRPC port's connections: silent TCP connections, slowloris tricklers of
//! the HTTP/2 preface, and connections beyond `--grpc-max-connections`.

use std::time::{Duration, Instant};

use altocast_server::workload::Topology;

use super::{Target, Verdict, closed, connect_many, open_fds, peak_mib, reset_peak, rss_mib, trickle};

pub(crate) async fn run(silent: usize, slowloris: usize, surplus: usize) -> anyhow::Result<Vec<Verdict>> {
    let limit = silent + slowloris;
    let handshake_secs = 5;
    let extra = [
        "--grpc-max-connections".to_owned(),
        limit.to_string(),
        "--grpc-handshake-timeout-secs".to_owned(),
        handshake_secs.to_string(),
    ];
    let t = Target::start(Topology::synthetic(20, 1), false, &extra).await?;
    let (pid, addr) = (t.pid, t.grpc.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds0, rss0) = (open_fds(pid), rss_mib(pid));
    reset_peak(pid);

    // The attack: silent connections, tricklers, then connections over the limit.
    let started = Instant::now();
    let mut conns = connect_many(&addr, silent, None).await?;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut tricklers = Vec::new();
    for s in connect_many(&addr, slowloris, None).await? {
        tricklers.push(tokio::spawn(async move {
            // A write that fails (the server closed) reads as closed too.
            let mut s = trickle(s, preface).await;
            closed(&mut s, Duration::from_secs(5)).await
        }));
    }
    let t_attack = started.elapsed();
    // Every attack connection accepted (the RProxy holds a socket for each)
    // before the surplus ones arrive, or the limit is not what is measured.
    let wait = Instant::now();
    while open_fds(pid) < fds0 + limit && wait.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (fds1, rss1) = (open_fds(pid), rss_mib(pid));
    let probes: Vec<_> = connect_many(&addr, surplus, None)
        .await?
        .into_iter()
        .map(|mut s| tokio::spawn(async move { closed(&mut s, Duration::from_millis(500)).await }))
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
    let (fds2, rss2, peak) = (open_fds(pid), rss_mib(pid), peak_mib(pid));

    println!(
        "abuse grpc: connections against a real altocast-rproxy (--grpc-max-connections {limit}, --grpc-handshake-timeout-secs {handshake_secs})"
    );
    println!("  {:<44} {:>10} {:>10}", "moment", "open fds", "RSS MiB");
    println!("  {:<44} {:>10} {:>10.1}", "before", fds0, rss0);
    println!("  {:<44} {:>10} {:>10.1}", format!("{silent} silent + {slowloris} slowloris open"), fds1, rss1);
    println!("  {:<44} {:>10} {:>10.1}", format!("{} s later", handshake_secs + 1), fds2, rss2);
    println!("  peak RSS during the attack: {peak:.1} MiB; attack connections opened in {t_attack:?}");
    println!(
        "  surplus connections closed within 0.5 s: {refused_at_once} of {surplus} ({} slots were still free)",
        limit.saturating_sub(fds1.saturating_sub(fds0))
    );
    println!("  silent connections closed by the handshake deadline: {silent_closed} of {silent}");
    println!("  slowloris connections closed: {tricklers_closed} of {slowloris}");
    t.stop().await;
    Ok(vec![
        Verdict {
            bound: format!("gRPC: connections over --grpc-max-connections {limit} closed"),
            measured: format!("{refused_at_once} of {surplus} within 0.5 s"),
            held: refused_at_once == surplus,
        },
        Verdict {
            bound: format!("gRPC: no preface within {handshake_secs} s → closed"),
            measured: format!("{} of {}; fds {fds1} → {fds2}", silent_closed + tricklers_closed, silent + slowloris),
            held: silent_closed + tricklers_closed == silent + slowloris,
        },
    ])
}
