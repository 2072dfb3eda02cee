//! The alternative a user would pick: the same fan-out workload through Redis
//! pub/sub (`redis-server` on a private loopback port, started and stopped here).

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    child::{Arrivals, ClientsProc},
    fanout::FanoutResult,
    report::{field, now_us, pct},
};

pub(crate) struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The payload: 8-byte little-endian seq, padded to `len`.
pub(crate) fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut p = seq.to_le_bytes().to_vec();
    p.resize(len.max(8), b'x');
    p
}

pub(crate) async fn redis_fanout(ks: &[usize], updates: usize, tk: usize, tu: usize) -> anyhow::Result<FanoutResult> {
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
    // Counted like altocast's: what the subscribers received.
    let msgs = field(&line, "received").unwrap_or(0) as f64;
    println!(
        "  throughput: {tu} messages of 913 bytes to {tk} subscribers: {:.0} delivered messages/s ({secs:.2} s)",
        msgs / secs
    );
    Ok(FanoutResult { p99: p99s, throughput: msgs / secs })
}

pub(crate) struct RedisClientsProc(ClientsProc);

impl RedisClientsProc {
    pub(crate) fn start(port: u16, k: usize, max_seq: u64) -> anyhow::Result<RedisClientsProc> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["redis-clients", "--port", &port.to_string(), "--subscribers", &k.to_string()])
            .args(["--max-seq", &max_seq.to_string()]);
        Ok(RedisClientsProc(ClientsProc::spawn(cmd)?))
    }
}

/// Helper: K Redis subscribers, one connection each, reporting like `clients`.
pub(crate) async fn redis_clients(port: u16, k: usize, max_seq: u64) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let arrivals = Arrivals::new(k, max_seq);
    for _ in 0..k {
        let arrivals = arrivals.clone();
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
                        arrivals.ready();
                    } else if kind == b"message" && payload.len() >= 8 {
                        let t = now_us();
                        let seq = u64::from_le_bytes(payload[..8].try_into().unwrap_or([0; 8]));
                        arrivals.arrived(seq, t);
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
pub(crate) fn parse_push(b: &[u8]) -> Option<(Vec<u8>, Vec<u8>, usize)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_pushes_parse_whole_and_wait_for_the_rest() {
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$5\r\nbench\r\n:1\r\n";
        let (kind, third, used) = parse_push(sub).expect("subscribe");
        assert_eq!((kind.as_slice(), third.as_slice(), used), (&b"subscribe"[..], &b"1"[..], sub.len()));
        let mut msg = b"*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n".to_vec();
        msg.extend(resp(&[&payload(42, 16)])[4..].iter());
        let (kind, p, used) = parse_push(&msg).expect("message");
        assert_eq!((kind.as_slice(), used), (&b"message"[..], msg.len()));
        assert_eq!(u64::from_le_bytes(p[..8].try_into().expect("8 bytes")), 42);
        assert!(parse_push(&msg[..msg.len() - 3]).is_none(), "an incomplete push waits for more bytes");
    }
}
