//! A fan-out tree as a user runs it: origin → RProxy → RProxy → clients.

use std::time::Duration;

use altocast_proto::{UpdateKind, pb};
use altocast_tests::{CM, Maps, NM, TestClient, TestOrigin, TestRproxy};
use prost::Message as _;

const T: Duration = Duration::from_secs(20);

async fn publish_both(o: &TestOrigin, m: &Maps) -> u64 {
    o.publish(NM, &m.network_map_json()).await.expect("network map");
    o.publish(CM, &m.cost_map_json()).await.expect("cost map").seq
}

/// Applies events until one changes the published cost map; returns its seq.
async fn publish_next_change(o: &TestOrigin, m: &mut Maps, current: u64) -> u64 {
    for _ in 0..50 {
        m.step();
        let seq = publish_both(o, m).await;
        if seq > current {
            return seq;
        }
    }
    panic!("50 events changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_level_tree_converges_and_relays_identical_bytes() {
    let origin = TestOrigin::start().await;
    let mut maps = Maps::synthetic(30);
    publish_both(&origin, &maps).await;
    let rp1 = TestRproxy::start(&[&origin.url], &origin.pub_key_path).await;
    let rp2 = TestRproxy::start(&[&rp1.url], &origin.pub_key_path).await;
    let leaf = TestClient::start(&[&rp2.url], origin.trusted());
    let direct = TestClient::start(&[&origin.url], origin.trusted());
    leaf.wait_seq(CM, 1, T).await;
    let mut seq = 1;
    for _ in 0..6 {
        seq = publish_next_change(&origin, &mut maps, seq).await;
    }
    let a = leaf.wait_seq(CM, seq, T).await;
    let b = direct.wait_seq(CM, seq, T).await;
    assert_eq!(a, b, "leaf and direct client disagree on the tag");
    // The cost map in the leaf's view comes with the network map version it was built on.
    let st = leaf.view().load();
    let cm = st.cost_maps.get(CM).expect("cost map");
    assert_eq!(cm.map.depends_on().map(|d| d.tag), Some(cm.network_map.tag));

    // Every diff the leaf's RProxy relays is byte-identical to what the origin
    // sends a subscriber resuming from the same version.
    let mut c = altocast_client::connect::connect(&rp2.url, T).await.expect("connect");
    let leaf_updates = c.fetch(pb::FetchRequest { resource_id: CM.into() }).await.expect("fetch").into_inner().updates;
    let leaf_diffs: Vec<(pb::Update, pb::SignedUpdate)> = leaf_updates
        .into_iter()
        .filter_map(|s| {
            let u = pb::Update::decode(s.body.clone()).ok()?;
            matches!(u.payload, Some(pb::update::Payload::Diff(_))).then_some((u, s))
        })
        .collect();
    assert!(leaf_diffs.len() >= 6, "the leaf proxy relays the diffs ({} found)", leaf_diffs.len());
    let first = &leaf_diffs[0].0;
    let mut c = altocast_client::connect::connect(&origin.url, T).await.expect("connect");
    let resume =
        pb::ResumePosition { resource_id: CM.into(), have_seq: first.base_seq, have_tag: first.base_tag.clone() };
    let mut stream =
        c.subscribe(pb::SubscribeRequest { resources: vec![resume] }).await.expect("subscribe").into_inner();
    let mut origin_diffs = Vec::new();
    while origin_diffs.len() < leaf_diffs.len() {
        let f = tokio::time::timeout(T, stream.message()).await.expect("in time").expect("frame").expect("open");
        if let Some(pb::subscribe_response::Item::Update(s)) = f.item
            && matches!(pb::Update::decode(s.body.clone()).expect("decode").payload, Some(pb::update::Payload::Diff(_)))
        {
            origin_diffs.push(s);
        }
    }
    for ((u, relayed), from_origin) in leaf_diffs.iter().zip(&origin_diffs) {
        assert_eq!(relayed, from_origin, "diff into seq {} differs between origin and leaf proxy", u.seq);
    }
    leaf.stop().await;
    direct.stop().await;
    rp2.stop().await;
    rp1.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fails_over_from_a_dead_first_endpoint() {
    let origin = TestOrigin::start().await;
    let maps = Maps::synthetic(12);
    publish_both(&origin, &maps).await;
    // A port that was bound and released: nothing listens there.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let client = TestClient::start(&[&dead, &origin.url], origin.trusted());
    client.wait_seq(CM, 1, T).await;
    client.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_restart_continues_seq_and_subscribers_resume_with_diffs() {
    let origin = TestOrigin::start().await;
    let mut maps = Maps::synthetic(20);
    publish_both(&origin, &maps).await;
    let rp = TestRproxy::start(&[&origin.url], &origin.pub_key_path).await;
    let client = TestClient::start(&[&rp.url], origin.trusted());
    let seq = publish_next_change(&origin, &mut maps, 1).await;
    client.wait_seq(CM, seq, T).await;
    let mut changes = client.view().changes();

    // Restart the origin on the same data dir (and the same port, so the proxy resumes).
    let url = origin.url.clone();
    let dir = origin.stop().await;
    let port: u16 = url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let origin = restart_on(dir, port).await;
    let next = publish_next_change(&origin, &mut maps, seq).await;
    assert!(next > seq, "seq continues after restart: {next} > {seq}");
    client.wait_seq(CM, next, T).await;
    // Everything the client applied after the restart was a diff or heartbeat: no snapshot.
    while let Ok(c) = changes.try_recv() {
        assert_ne!(
            c.update.kind,
            UpdateKind::Snapshot,
            "resumed with a snapshot: {c:?} (restart at {seq}, next {next})"
        );
    }
    client.stop().await;
    rp.stop().await;
    origin.stop().await;
}

async fn restart_on(dir: std::sync::Arc<tempfile::TempDir>, port: u16) -> TestOrigin {
    // Rebinding a just-closed port can race with its release; retry briefly.
    for _ in 0..50 {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    TestOrigin::start_on_port(Default::default(), dir, port).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_rproxy_clients_fail_over_and_skip_no_version() {
    let origin = TestOrigin::start().await;
    let mut maps = Maps::synthetic(20);
    let mut seq = publish_both(&origin, &maps).await;
    let rp1 = TestRproxy::start(&[&origin.url], &origin.pub_key_path).await;
    let rp2 = TestRproxy::start(&[&origin.url], &origin.pub_key_path).await;
    let clients: Vec<TestClient> = (0..5).map(|_| TestClient::start(&[&rp1.url, &rp2.url], origin.trusted())).collect();
    let mut changes: Vec<_> = clients.iter().map(|c| c.view().changes()).collect();
    for c in &clients {
        c.wait_seq(CM, seq, T).await;
    }
    seq = publish_next_change(&origin, &mut maps, seq).await;
    let killed = rp1.url.clone();
    rp1.stop().await;
    for _ in 0..3 {
        seq = publish_next_change(&origin, &mut maps, seq).await;
    }
    let mut tags = std::collections::HashSet::new();
    for c in &clients {
        tags.insert(c.wait_seq(CM, seq, T).await);
    }
    assert_eq!(tags.len(), 1, "clients disagree after failover");
    for c in &clients {
        assert!(
            c.incidents_at(&killed).iter().any(|i| i.starts_with("failover")),
            "a client never left the killed RProxy"
        );
    }
    // Every cost-map version a client moved to follows the previous one, or is
    // a snapshot that covers the gap.
    for rx in &mut changes {
        let mut last = 0;
        while let Ok(c) = rx.try_recv() {
            if c.update.resource_id.as_str() != CM || c.update.kind == UpdateKind::Heartbeat {
                continue;
            }
            assert!(
                c.update.kind == UpdateKind::Snapshot || c.update.seq == last + 1,
                "skipped from seq {last} to {} by {:?}",
                c.update.seq,
                c.update.kind
            );
            last = c.update.seq;
        }
        assert_eq!(last, seq);
    }
    for c in clients {
        c.stop().await;
    }
    rp2.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_falls_back_to_pull_when_no_push_stream_is_available() {
    let origin = TestOrigin::start().await;
    let mut maps = Maps::synthetic(12);
    let mut seq = publish_both(&origin, &maps).await;
    let pull_only = altocast_tests::EvilProxy::start(&origin.url, altocast_tests::EvilMode::NoPush).await;
    let mut cfg = altocast_client::Config::new(vec![pull_only.url.clone()], origin.trusted());
    cfg.pull_interval = Duration::from_millis(100);
    let client = TestClient::start_cfg(cfg);
    client.wait_seq(CM, seq, T).await;
    for _ in 0..2 {
        seq = publish_next_change(&origin, &mut maps, seq).await;
        client.wait_seq(CM, seq, T).await;
    }
    client.stop().await;
    pull_only.stop().await;
    origin.stop().await;
}

/// Polling is held to the directory's expiry as a stream is (PROTOCOL.md
/// §10.6): an endpoint that refuses `Subscribe` and serves a frozen directory
/// is left once that directory expires, although every map it answers is fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulling_client_leaves_an_endpoint_whose_directory_expired() {
    let opts = altocast_tests::OriginOptions { ttl_secs: 2, heartbeat_secs: 1, ..Default::default() };
    let origin = TestOrigin::start_with(opts, None).await;
    let maps = Maps::synthetic(8);
    publish_both(&origin, &maps).await;
    let frozen = altocast_tests::EvilProxy::start(&origin.url, altocast_tests::EvilMode::NoPushFrozen).await;
    let mut cfg = altocast_client::Config::new(vec![frozen.url.clone()], origin.root_trusted());
    cfg.pull_interval = Duration::from_millis(100);
    let client = TestClient::start_cfg(cfg);
    client.wait_seq(CM, 1, T).await;
    // TTL 2 s + 5 s skew allowance after the directory froze.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let incidents = client.incidents_at(&frozen.url);
        if incidents.iter().any(|i| i.starts_with("rejected") && i.contains("directory") && i.contains("expired")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the expired directory went unnoticed: {incidents:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.stop().await;
    frozen.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_added_at_the_origin_reaches_clients_through_a_running_rproxy() {
    let origin = TestOrigin::start().await;
    let maps = Maps::synthetic(12);
    publish_both(&origin, &maps).await;
    let rp = TestRproxy::start(&[&origin.url], &origin.pub_key_path).await;
    let mut cfg = altocast_client::Config::new(vec![rp.url.clone()], origin.trusted());
    cfg.directory_refresh = Duration::from_millis(300);
    let client = TestClient::start_cfg(cfg);
    client.wait_seq(CM, 1, T).await;
    let before = client.incidents_at(&rp.url).len();
    // A second cost map appears at the origin after everyone is connected:
    // the RProxy re-reads the directory (every 5 s) and subscribes to it, and
    // so does the client through the RProxy.
    origin.publish("second-cost-map", &maps.cost_map_json()).await.expect("second cost map");
    let tag = client.wait_seq("second-cost-map", 1, T).await;
    let st = client.view().load();
    assert_eq!(st.cost_maps["second-cost-map"].tag, tag);
    assert_eq!(st.cost_maps["second-cost-map"].network_map.resource_id.as_str(), NM);
    // Picking it up is not a failure: no failover, no rejection.
    assert_eq!(client.incidents_at(&rp.url).len(), before, "{:?}", client.incidents_at(&rp.url));
    client.stop().await;
    rp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_of_a_quiet_resource_older_than_its_ttl_is_fresh_through_the_heartbeat() {
    let opts = altocast_tests::OriginOptions { ttl_secs: 2, heartbeat_secs: 1, ..Default::default() };
    let origin = TestOrigin::start_with(opts, None).await;
    let maps = Maps::synthetic(8);
    publish_both(&origin, &maps).await;
    // The snapshot expires; only heartbeats keep the resource fresh now.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let mut client = altocast_client::connect::connect(&origin.url, Duration::from_secs(3)).await.expect("connect");
    let limits = altocast_proto::Limits { max_skew_ms: 0, ..Default::default() };
    let mut v = altocast_proto::Verifier::new(origin.trusted(), limits, [altocast_tests::rid(NM)]);
    let now = altocast_client::now_ms();
    let fetched = altocast_client::connect::fetch_into(&mut client, &origin.url, &altocast_tests::rid(NM), &mut v, now)
        .await
        .expect("an expired snapshot followed by a fresh heartbeat is a fresh answer");
    assert_eq!(fetched.last().map(|f| f.applied.kind), Some(UpdateKind::Heartbeat));
    assert!(matches!(v.freshness(NM, now), altocast_proto::Freshness::Fresh { .. }), "{:?}", v.freshness(NM, now));
    origin.stop().await;
}
