//! A deployment with more resources than one Subscribe stream carries
//! (`SUBSCRIBE_RESOURCES`, 256): follow-all subscribers — an RProxy's upstream
//! side and an application behind it — split their subscription into several
//! streams, each network map with its cost maps, and still get every update
//! pushed, not polled.

use std::time::Duration;

use altocast_proto::SUBSCRIBE_RESOURCES;
use altocast_tests::{Maps, OriginOptions, TestClient, TestOrigin, TestRproxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_all_subscriptions_over_several_streams_are_pushed() {
    // Origin and RProxy take no more per stream than every server must.
    let limit = SUBSCRIBE_RESOURCES as u64;
    let o =
        TestOrigin::start_with(OriginOptions { max_subscription_resources: limit, ..Default::default() }, None).await;
    let m = Maps::synthetic(4);
    let nm = m.network_map_json();
    let cm = m.cost_map_json();
    // Three network maps with 100 cost maps each: 303 resources, more than one
    // stream carries; no group of a network map and its cost maps does.
    let (maps, per_map) = (3, 100);
    for k in 0..maps {
        let nm_id = format!("nm-{k}");
        o.publish(&nm_id, &nm.replace(altocast_tests::NM, &nm_id)).await.expect("network map");
        let body = cm.replace(altocast_tests::NM, &nm_id);
        assert_ne!(body, cm, "the cost map must name its network map");
        for i in 0..per_map {
            o.publish(&format!("cm-{k}-{i}"), &body).await.expect("cost map");
        }
    }
    assert!(maps * (per_map + 1) > SUBSCRIBE_RESOURCES);
    let flags = ["--max-subscription-resources".to_owned(), limit.to_string()];
    let r = TestRproxy::start_with_args(&[&o.url], &o.pub_key_path, None, &flags).await;
    // Polling would take two minutes: only a push arrives in time.
    let mut cfg = altocast_client::Config::new(vec![r.url.clone()], o.trusted());
    cfg.pull_interval = Duration::from_secs(120);
    let client = TestClient::start_cfg(cfg);
    for k in 0..maps {
        client.wait_seq(&format!("cm-{k}-{}", per_map - 1), 1, Duration::from_secs(30)).await;
    }
    // A change of a network map and one of the first and the last stream's
    // cost maps reach the application through the RProxy.
    let changed = cm.replacen("\"pid1-node1\":2011", "\"pid1-node1\":2012", 1);
    assert_ne!(changed, cm, "the fixture must change");
    for id in ["cm-0-0", &format!("cm-{}-{}", maps - 1, per_map - 1)] {
        let nm_id = &id[..4].replace("cm", "nm");
        o.publish(id, &changed.replace(altocast_tests::NM, nm_id)).await.expect("change");
        client.wait_seq(id, 2, Duration::from_secs(20)).await;
    }
    let incidents = client.incidents_at(&r.url);
    assert!(
        !incidents.iter().any(|i| i.contains("refused") || i.contains("too many")),
        "a subscription was refused: {incidents:?}"
    );
    client.stop().await;
    r.stop().await;
    o.stop().await;
}
