//! Malicious RProxies: whatever a proxy does to the signed updates it relays,
//! clients reject it, fail over to an honest endpoint, converge, and never
//! expose state the origin did not sign.

use std::{collections::HashSet, time::Duration};

use altocast_proto::Tag;
use altocast_tests::{CM, EvilMode, EvilProxy, Maps, NM, OriginOptions, TestClient, TestOrigin, TestRproxy};

const T: Duration = Duration::from_secs(30);

/// Publishes the current maps; records every cost-map tag the origin signed.
async fn publish(o: &TestOrigin, m: &Maps, signed: &mut HashSet<Tag>) -> u64 {
    o.publish(NM, &m.network_map_json()).await.expect("nm");
    let r = o.publish(CM, &m.cost_map_json()).await.expect("cm");
    signed.insert(Tag::from_hex(&r.tag).expect("tag"));
    r.seq
}

/// Runs `mode` and returns what the client recorded about the evil endpoint.
async fn scenario(mode: EvilMode, opts: OriginOptions) -> Vec<String> {
    let origin = TestOrigin::start_with(opts, None).await;
    let mut maps = Maps::synthetic(16);
    let mut signed = HashSet::new();
    let mut seq = publish(&origin, &maps, &mut signed).await;
    let honest = TestRproxy::start(&[&origin.url], &origin.pub_key_path).await;
    let evil = EvilProxy::start(&origin.url, mode).await;
    // The evil proxy is the client's first choice.
    let client = TestClient::start(&[&evil.url, &honest.url], origin.trusted());
    let mut changes = client.view().changes();
    client.wait_seq(CM, seq, T).await;
    for _ in 0..8 {
        maps.step();
        seq = publish(&origin, &maps, &mut signed).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let tag = client.wait_seq(CM, seq, T).await;
    assert!(signed.contains(&tag), "{mode:?}: converged to a tag the origin never signed");
    // Every cost-map state the client ever exposed was one the origin signed.
    while let Ok(c) = changes.try_recv() {
        if c.update.resource_id.as_str() == CM {
            assert!(signed.contains(&c.update.tag), "{mode:?}: exposed unsigned state {}", c.update.tag);
        }
    }
    let st = client.view().load();
    let cm = st.cost_maps.get(CM).expect("cost map");
    assert_eq!(cm.map.depends_on().map(|d| d.tag), Some(cm.network_map.tag), "{mode:?}: inconsistent pair");
    let incidents = client.incidents_at(&evil.url);
    client.stop().await;
    evil.stop().await;
    honest.stop().await;
    origin.stop().await;
    incidents
}

fn assert_rejected(incidents: &[String], what: &str) {
    assert!(
        incidents.iter().any(|i| i.starts_with("rejected") && i.contains(what)),
        "expected a rejection mentioning {what:?}; got {incidents:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_cost_is_rejected() {
    let i = scenario(EvilMode::FlipCost, OriginOptions::default()).await;
    assert_rejected(&i, "signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_update_is_rejected() {
    let i = scenario(EvilMode::Replay, OriginOptions::default()).await;
    assert_rejected(&i, "rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_diff_is_detected() {
    let i = scenario(EvilMode::DropDiff, OriginOptions::default()).await;
    assert_rejected(&i, "base seq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_diffs_are_rejected() {
    let i = scenario(EvilMode::Reorder, OriginOptions::default()).await;
    assert_rejected(&i, "base seq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_heartbeats_are_detected_as_staleness() {
    // Short TTL so that withholding shows within seconds: TTL 2 s + 5 s skew allowance.
    let i = scenario(EvilMode::Withhold, OriginOptions { ttl_secs: 2, heartbeat_secs: 1, ..Default::default() }).await;
    assert!(i.iter().any(|i| i.starts_with("stale")), "expected staleness at the withholding proxy; got {i:?}");
}

/// Staleness is a deadline on the clock, not an idle timer (PROTOCOL.md §8.8):
/// a proxy that always has a frame ready (an old directory replayed, ignored
/// as not newer each time) but nothing fresh is still left at expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_ignored_frames_does_not_hide_staleness() {
    let opts = OriginOptions { ttl_secs: 2, heartbeat_secs: 1, ..Default::default() };
    let origin = TestOrigin::start_with(opts, None).await;
    let mut maps = Maps::synthetic(16);
    let mut signed = HashSet::new();
    let mut seq = publish(&origin, &maps, &mut signed).await;
    let honest = TestRproxy::start(&[&origin.url], &origin.pub_key_path).await;
    let evil = EvilProxy::start(&origin.url, EvilMode::Flood).await;
    let client = TestClient::start(&[&evil.url, &honest.url], origin.trusted());
    client.wait_seq(CM, seq, T).await;
    // The first heartbeat (within 1 s) starts the flood; changes after it
    // reach the client only once it has left the proxy.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for _ in 0..3 {
        maps.step();
        seq = publish(&origin, &maps, &mut signed).await;
    }
    let tag = client.wait_seq(CM, seq, T).await;
    assert!(signed.contains(&tag));
    // The maps and the directory expire together; whichever clock is
    // checked first names the staleness.
    let incidents = client.incidents_at(&evil.url);
    assert!(
        incidents.iter().any(|i| i.starts_with("stale") || (i.starts_with("rejected") && i.contains("expired"))),
        "expected staleness at the flooding proxy; got {incidents:?}"
    );
    client.stop().await;
    evil.stop().await;
    honest.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_map_without_its_network_map_is_rejected() {
    let origin = TestOrigin::start().await;
    let mut maps = Maps::synthetic(16);
    let mut signed = HashSet::new();
    publish(&origin, &maps, &mut signed).await;
    let honest = TestRproxy::start(&[&origin.url], &origin.pub_key_path).await;
    let evil = EvilProxy::start(&origin.url, EvilMode::DropNetworkMap).await;
    let client = TestClient::start(&[&evil.url, &honest.url], origin.trusted());
    client.wait_seq(CM, 1, T).await;
    // A prefix move changes the network map; the cost map is re-bound to it.
    loop {
        if maps.step().kind == altocast_server::workload::EventKind::PrefixMove {
            break;
        }
    }
    let seq = publish(&origin, &maps, &mut signed).await;
    client.wait_seq(CM, seq, T).await;
    let st = client.view().load();
    let cm = st.cost_maps.get(CM).expect("cost map");
    assert_eq!(cm.map.depends_on().map(|d| d.tag), Some(cm.network_map.tag));
    let incidents = client.incidents_at(&evil.url);
    assert_rejected(&incidents, "depends on");
    client.stop().await;
    evil.stop().await;
    honest.stop().await;
    origin.stop().await;
}

/// A `Fetch` answered with another resource's (authentic) updates is refused,
/// even when the verifier follows that resource too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_answered_with_another_resource_is_rejected() {
    let origin = TestOrigin::start().await;
    let maps = Maps::synthetic(8);
    publish(&origin, &maps, &mut HashSet::new()).await;
    let evil = EvilProxy::start(&origin.url, EvilMode::SwapFetch).await;
    let ids = [altocast_tests::rid(NM), altocast_tests::rid(CM)];
    let mut verifier = altocast_proto::Verifier::new(origin.trusted(), Default::default(), ids.iter().cloned());
    let mut client = altocast_client::connect::connect(&evil.url, Duration::from_secs(5)).await.expect("connect");
    let now = altocast_client::now_ms();
    let got = altocast_client::connect::fetch_into(&mut client, &evil.url, &ids[0], &mut verifier, now).await;
    match got {
        Err(altocast_client::connect::ConnectError::Verify {
            error: altocast_proto::VerifyError::UnexpectedResource(r),
            ..
        }) => assert_eq!(r, CM),
        other => panic!("a swapped Fetch answer was not refused: {other:?}"),
    }
    assert!(verifier.get(CM).is_none() && verifier.get(NM).is_none(), "state changed");
    evil.stop().await;
    origin.stop().await;
}
