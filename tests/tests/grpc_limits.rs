//! The gRPC port's connection bounds, as an attacker meets them: connections
//! over `--grpc-max-connections` are closed at once, and connections that do
//! not send their first 24 bytes (the HTTP/2 preface) within
//! `--grpc-handshake-timeout-secs` — silent ones and slowloris tricklers —
//! are closed, while a real subscriber on the same port is unaffected.

use std::time::Duration;

use altocast_tests::{Maps, TestClient, TestOrigin, TestRproxy, join::join};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Waits until the server closes `s` (EOF or an error), up to `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_trickling_and_surplus_grpc_connections_are_closed_and_subscribers_are_not() {
    let o = TestOrigin::start().await;
    let m = Maps::synthetic(6);
    o.publish(altocast_tests::NM, &m.network_map_json()).await.expect("nm");
    o.publish(altocast_tests::CM, &m.cost_map_json()).await.expect("cm");
    let flags: Vec<String> =
        ["--grpc-max-connections", "4", "--grpc-handshake-timeout-secs", "1"].map(String::from).to_vec();
    let r = TestRproxy::start_with_args(&[&o.url], &o.pub_key_path, None, &flags).await;
    // A real subscriber holds one of the four slots throughout.
    let client = TestClient::start(&[&r.url], o.trusted());
    client.wait_seq(altocast_tests::CM, 1, Duration::from_secs(10)).await;
    // (A failover while the RProxy had no directory yet, at start, is not ours to count.)
    let before = client.incidents_at(&r.url).len();

    // Three silent connections fill the rest; a fourth is closed at once.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(r.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut surplus = TcpStream::connect(r.addr).await.expect("connect");
    assert!(closed_within(&mut surplus, Duration::from_millis(500)).await, "a connection over the limit stays open");

    // The silent ones are closed after the handshake timeout.
    for s in &mut silent {
        assert!(closed_within(s, Duration::from_secs(3)).await, "a silent connection outlived the handshake timeout");
    }
    // A slowloris trickling its preface a byte at a time is closed too.
    let mut trickle = TcpStream::connect(r.addr).await.expect("connect");
    let dripping = async {
        for b in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
            if trickle.write_all(&[*b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        false
    };
    let cut = tokio::time::timeout(Duration::from_secs(5), dripping).await.unwrap_or(false);
    assert!(cut || closed_within(&mut trickle, Duration::from_secs(2)).await, "a trickling connection was kept");

    // The slots are free again, and the subscriber never noticed.
    join(&r.url, &o.trusted(), Duration::from_secs(5), Duration::from_millis(100)).await.expect("a newcomer joins");
    let incidents = client.incidents_at(&r.url);
    assert_eq!(incidents.len(), before, "the subscriber was disturbed: {incidents:?}");
    client.stop().await;
    r.stop().await;
    o.stop().await;
}

/// A connection that completes the HTTP/2 handshake and then answers nothing
/// (not even the server's PINGs) is closed at `--grpc-idle-timeout-secs`,
/// while a subscriber that receives nothing for twice as long stays connected:
/// its HTTP/2 stack answers the PING sent at half the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_http2_peer_is_closed_at_the_idle_timeout_and_a_quiet_subscriber_is_not() {
    let o = TestOrigin::start().await;
    let mut m = Maps::synthetic(6);
    o.publish(altocast_tests::NM, &m.network_map_json()).await.expect("nm");
    o.publish(altocast_tests::CM, &m.cost_map_json()).await.expect("cm");
    let idle = 10;
    let flags: Vec<String> = ["--grpc-idle-timeout-secs", &idle.to_string()].map(String::from).to_vec();
    let r = TestRproxy::start_with_args(&[&o.url], &o.pub_key_path, None, &flags).await;
    let client = TestClient::start(&[&r.url], o.trusted());
    client.wait_seq(altocast_tests::CM, 1, Duration::from_secs(10)).await;
    let before = client.incidents_at(&r.url).len();

    let mut mute = TcpStream::connect(r.addr).await.expect("connect");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // an empty SETTINGS frame
    mute.write_all(&hello).await.expect("preface");
    let t = tokio::time::Instant::now();
    assert!(!closed_within(&mut mute, Duration::from_secs(idle / 2)).await, "closed before half the idle timeout");
    assert!(closed_within(&mut mute, Duration::from_secs(idle + 5)).await, "a mute peer outlived the idle timeout");
    let closed_after = t.elapsed();

    // Twice the idle timeout in all with nothing published: the subscriber
    // is still on its first connection, and then gets the next change.
    tokio::time::sleep(Duration::from_secs(2 * idle).saturating_sub(closed_after)).await;
    // (A change event need not change any cost: publish until one does.)
    for _ in 0..100 {
        m.step();
        o.publish(altocast_tests::NM, &m.network_map_json()).await.expect("nm 2");
        if o.publish(altocast_tests::CM, &m.cost_map_json()).await.expect("cm 2").changed {
            break;
        }
    }
    client.wait_seq(altocast_tests::CM, 2, Duration::from_secs(10)).await;
    let incidents = client.incidents_at(&r.url);
    assert_eq!(incidents.len(), before, "the quiet subscriber was disconnected: {incidents:?}");
    client.stop().await;
    r.stop().await;
    o.stop().await;
}
