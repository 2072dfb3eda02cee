//! Attacks on the RFC 7285 HTTP interface (`--alto-http`) of a real RProxy:
//! update streams that never read, maximal endpoint-cost requests whose
//! answers are not read, and connections that idle or trickle.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::{
    AbuseArgs, Target, Verdict, closed, connect_many, metric, open_fds, peak_mib, reset_peak, rss_mib, trickle,
};
use crate::report::pct;

/// `POST path` with `body`, as one write.
fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: alto\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads a whole `connection: close` response; returns its status and length.
async fn response(s: &mut TcpStream) -> (u16, usize) {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut all)).await;
    (status(&all), all.len())
}

/// The status code of a response that starts with `head`, or 0.
fn status(head: &[u8]) -> u16 {
    std::str::from_utf8(head.get(9..12).unwrap_or_default()).ok().and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Reads an update stream, counting its events, until `stop`.
async fn read_events(mut s: TcpStream, stop: tokio_util::sync::CancellationToken) -> usize {
    let (mut buf, mut events, mut tail) = (vec![0u8; 1 << 16], 0, [0u8; 2]);
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return events,
            r = s.read(&mut buf) => match r { Ok(0) | Err(_) => return events, Ok(n) => n },
        };
        // Events end with a blank line ("\n\n"), possibly split across reads.
        let mut prev = tail;
        for &b in &buf[..n] {
            if b == b'\n' && prev[1] == b'\n' {
                events += 1;
            }
            prev = [prev[1], b];
        }
        tail = prev;
    }
}

/// Polls a gauge until it reaches `want` (or 60 s pass); returns its value.
async fn await_gauge(addr: &str, name: &str, want: f64) -> f64 {
    let t = Instant::now();
    loop {
        let v = metric(addr, name).await;
        if v >= want || t.elapsed() > Duration::from_secs(60) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// RFC 8895 update streams on the biggest cost map that never read a byte,
/// while the map changes. Each stream's socket gets a 4 KiB receive buffer,
/// as an attacker who wants to hold server memory would choose.
pub(crate) async fn sse(args: &AbuseArgs) -> anyhow::Result<Vec<Verdict>> {
    let n = args.streams;
    let extra =
        ["--alto-max-streams".to_owned(), n.to_string(), "--alto-max-connections".to_owned(), (n + 64).to_string()];
    let mut t = Target::start(super::topology(args)?, true, &extra).await?;
    let (pid, http) = (t.pid, t.http.clone().unwrap_or_default());
    let full = {
        let mut s = TcpStream::connect(&http).await?;
        s.write_all(format!("GET /costmap/{} HTTP/1.1\r\nhost: alto\r\nconnection: close\r\n\r\n", t.cm_id).as_bytes())
            .await?;
        response(&mut s).await.1
    };
    let (rss0, fds0) = (rss_mib(pid), open_fds(pid));
    let renderings0 = metric(&t.metrics, "altocast_http_renderings_total").await;
    reset_peak(pid);

    let body = format!(r#"{{"add":{{"c":{{"resource-id":"{}","incremental-changes":true}}}}}}"#, t.cm_id);
    let req = post("/updates", &body);
    let started = Instant::now();
    // One stream that reads everything, so new versions are rendered (a
    // rendering is made when a stream's writer first takes it), and n - 1
    // that never read.
    let stop_reading = tokio_util::sync::CancellationToken::new();
    let mut reader = TcpStream::connect(&http).await?;
    reader.write_all(req.as_bytes()).await?;
    let reader = tokio::spawn(read_events(reader, stop_reading.clone()));
    let mut streams = connect_many(&http, n - 1, Some(4096)).await?;
    for s in &mut streams {
        s.write_all(req.as_bytes()).await?;
    }
    let open = await_gauge(&t.metrics, "altocast_http_update_streams", n as f64).await;
    let t_open = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss1, peak1) = (rss_mib(pid), peak_mib(pid));
    // One more stream is refused (503), and the map changes under all of them.
    let mut over = TcpStream::connect(&http).await?;
    over.write_all(req.as_bytes()).await?;
    let (over_status, _) = response(&mut over).await;
    let changes = 3;
    for _ in 0..changes {
        t.change()?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (rss2, peak2) = (rss_mib(pid), peak_mib(pid));
    let renderings = metric(&t.metrics, "altocast_http_renderings_total").await - renderings0;
    stop_reading.cancel();
    let events = reader.await?;
    drop(streams);
    let gone = Instant::now();
    while metric(&t.metrics, "altocast_http_update_streams").await > 0.0 && gone.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss3, fds3) = (rss_mib(pid), open_fds(pid));

    println!(
        "abuse sse: {n} RFC 8895 update streams ({} never read, 1 reads), on a {:.1} MB cost map ({} PIDs), against a real altocast-rproxy",
        n - 1,
        full as f64 / 1e6,
        t.w.pid_count()
    );
    println!("  {:<48} {:>10} {:>12}", "moment", "RSS MiB", "peak MiB");
    println!("  {:<48} {:>10.1} {:>12}", format!("before (open fds {fds0})"), rss0, "");
    println!("  {:<48} {:>10.1} {:>12.1}", format!("{open} streams open (in {t_open:.1?})"), rss1, peak1);
    println!("  {:<48} {:>10.1} {:>12.1}", format!("after {changes} cost-map changes"), rss2, peak2);
    println!("  {:<48} {:>10.1} {:>12}", format!("streams closed (open fds {fds3})"), rss3, "");
    println!(
        "  renderings during the attack: {renderings} for {changes} versions (shared by every stream); the one reading stream got {events} events"
    );
    println!("  stream {} over --alto-max-streams: HTTP {over_status}", n + 1);
    let peak = peak1.max(peak2);
    t.stop().await;
    Ok(vec![
        Verdict {
            bound: format!("SSE: {n} non-reading streams on a {:.0} MB map < 256 MiB", full as f64 / 1e6),
            measured: format!("{open} open, peak {peak:.1} MiB (before {rss0:.1})"),
            held: open as usize == n && peak < 256.0,
        },
        Verdict {
            bound: "SSE: each version rendered once, not once per stream".to_owned(),
            measured: format!("{renderings} renderings for {changes} versions × {n} streams"),
            held: renderings >= 1.0 && renderings <= (2 * changes) as f64 && events > changes,
        },
        Verdict {
            bound: format!("SSE: stream {} over --alto-max-streams refused", n + 1),
            measured: format!("HTTP {over_status}"),
            held: over_status == 503,
        },
    ])
}

/// Maximal endpoint-cost requests (the most pairs the RProxy allows) sent
/// at once, their answers left unread for 5 s.
pub(crate) async fn ecs(args: &AbuseArgs) -> anyhow::Result<Vec<Verdict>> {
    let t = Target::start(super::topology(args)?, true, &[]).await?;
    let (pid, http) = (t.pid, t.http.clone().unwrap_or_default());
    // 10 sources × 10,000 destinations = 100,000 pairs (the default
    // --alto-max-pairs), addresses spread over every PID.
    let nm = t.w.network_map();
    let addrs: Vec<String> = nm
        .iter()
        .flat_map(|(_, p)| p.ipv4.iter().map(|n| n.network()).collect::<Vec<_>>())
        .flat_map(|net| {
            (1..=20u8).map(move |h| format!("\"ipv4:{}\"", std::net::Ipv4Addr::from(u32::from(net) + h as u32)))
        })
        .collect();
    anyhow::ensure!(addrs.len() >= 10_010, "{} addresses in the network map; 10,010 needed", addrs.len());
    let body = format!(
        r#"{{"cost-type":{{"cost-mode":"numerical","cost-metric":"routingcost"}},"endpoints":{{"srcs":[{}],"dsts":[{}]}}}}"#,
        addrs[..10].join(","),
        addrs[10..10_010].join(",")
    );
    let req = post("/endpointcost", &body);
    let rss0 = rss_mib(pid);
    reset_peak(pid);
    let mut conns = connect_many(&http, args.queries, Some(4096)).await?;
    for s in &mut conns {
        s.write_all(req.as_bytes()).await?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss1, peak1) = (rss_mib(pid), peak_mib(pid));
    let mut answered = Vec::new();
    for mut s in conns {
        answered.push(tokio::spawn(async move { response(&mut s).await }));
    }
    let (mut ok, mut busy, mut other, mut len) = (0, 0, 0, 0);
    for a in answered {
        match a.await? {
            (200, l) => {
                ok += 1;
                len = l;
            }
            (503, _) => busy += 1,
            _ => other += 1,
        }
    }
    let peak2 = peak_mib(pid);
    let refused = metric(&t.metrics, "altocast_http_refused_total{reason=\"queries\"}").await;
    println!(
        "abuse ecs: {} endpoint-cost requests of 10 × 10,000 pairs ({:.0} KiB each) at once, answers unread for 5 s",
        args.queries,
        req.len() as f64 / 1024.0
    );
    println!("  RSS before {rss0:.1} MiB; while held {rss1:.1} MiB (peak {peak1:.1}); peak overall {peak2:.1} MiB");
    println!(
        "  answers: {ok} × 200 ({:.1} MB each), {busy} × 503 (over --alto-max-queries; counter {refused}), {other} other",
        len as f64 / 1e6
    );
    let peak = peak1.max(peak2);
    t.stop().await;
    Ok(vec![Verdict {
        bound: format!("ECS: {} maximal requests at once < 128 MiB", args.queries),
        measured: format!("peak {peak:.1} MiB (before {rss0:.1}); {ok} answered, {busy} × 503"),
        held: peak < 128.0 && other == 0 && ok + busy == args.queries,
    }])
}

/// Connections that idle or trickle, and the time until each is closed.
pub(crate) async fn idle(args: &AbuseArgs) -> anyhow::Result<Vec<Verdict>> {
    let (header, idle, body, grpc_idle) = (2u64, 3u64, 2u64, 10u64);
    let extra: Vec<String> = [
        ("--alto-header-timeout-secs", header),
        ("--alto-idle-timeout-secs", idle),
        ("--alto-body-timeout-secs", body),
        ("--grpc-idle-timeout-secs", grpc_idle),
    ]
    .iter()
    .flat_map(|(f, v)| [f.to_string(), v.to_string()])
    .collect();
    let t = Target::start(altocast_server::workload::Topology::synthetic(20, 1), true, &extra).await?;
    let (http, grpc) = (t.http.clone().unwrap_or_default(), t.grpc.clone());
    let n = args.idle;
    let within = Duration::from_secs(grpc_idle + 15);

    // Each kind: its connections, what they do, and the limit that should close them.
    let kinds: [(&str, u64); 5] = [
        ("HTTP silent (no byte sent)", idle),
        ("HTTP keep-alive idle after one request", idle),
        ("HTTP header trickled a byte per 500 ms", header),
        ("HTTP body (POST /updates) trickled a byte per 500 ms", body),
        ("HTTP/2 (gRPC) handshake, then mute (no PING ack)", grpc_idle),
    ];
    let mut tasks = Vec::new();
    for (k, _) in kinds.iter().enumerate() {
        let addr = if k == 4 { grpc.clone() } else { http.clone() };
        let conns = connect_many(&addr, if k == 4 { n.min(50) } else { n }, None).await?;
        for mut s in conns {
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                let mut s = match k {
                    1 => {
                        let _ = s.write_all(b"GET /directory HTTP/1.1\r\nhost: alto\r\n\r\n").await;
                        let mut buf = [0u8; 8192];
                        let _ = s.read(&mut buf).await;
                        s
                    }
                    2 => {
                        trickle(s, b"GET /directory HTTP/1.1\r\nhost: alto\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
                            .await
                    }
                    3 => {
                        let head = b"POST /updates HTTP/1.1\r\nhost: alto\r\ncontent-length: 1000\r\n\r\n";
                        if s.write_all(head).await.is_ok() { trickle(s, &[b' '; 1000]).await } else { s }
                    }
                    4 => {
                        // The HTTP/2 preface and an empty SETTINGS frame, then nothing:
                        // the server's pings go unanswered.
                        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
                        hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
                        let _ = s.write_all(&hello).await;
                        s
                    }
                    _ => s,
                };
                let shut = closed(&mut s, within.saturating_sub(start.elapsed())).await;
                (k, shut, start.elapsed().as_secs_f64())
            }));
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let mut open: Vec<usize> = vec![0; kinds.len()];
    for task in tasks {
        let (k, shut, secs) = task.await?;
        if shut { times[k].push(secs) } else { open[k] += 1 }
    }
    println!("abuse idle: connections that idle or trickle, against a real altocast-rproxy; seconds until closed");
    println!(
        "  {:<44} {:>6} {:>7} {:>7} {:>7} {:>7} {:>9}",
        "connection", "limit", "closed", "min", "median", "max", "still open"
    );
    let mut verdicts = Vec::new();
    for (k, (what, limit)) in kinds.iter().enumerate() {
        let v = &mut times[k];
        let (lo, med, hi) = (pct(v, 0.0), pct(v, 0.5), pct(v, 1.0));
        println!("  {:<44} {:>6} {:>7} {:>7.1} {:>7.1} {:>7.1} {:>9}", what, limit, v.len(), lo, med, hi, open[k]);
        // Closed no earlier than the limit, and within the trickle's own pace
        // (a byte per 500 ms) and a second after it.
        let slack = 1.5;
        verdicts.push(Verdict {
            bound: format!("{what}: closed after {limit} s"),
            measured: format!("{} closed, {lo:.1}–{hi:.1} s, {} open", v.len(), open[k]),
            held: open[k] == 0 && lo >= *limit as f64 - 0.1 && hi <= *limit as f64 + slack,
        });
    }
    t.stop().await;
    Ok(verdicts)
}
