//! A deployment with more resources than one subscription used to allow (64):
//! follow-all subscribers — an RProxy's upstream side and an application
//! behind it — still get pushed updates on one stream each, not polling.

use std::time::Duration;

use altocast_tests::{Maps, TestClient, TestOrigin, TestRproxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_all_subscriptions_over_a_hundred_resources_are_pushed() {
    let o = TestOrigin::start().await;
    let m = Maps::synthetic(4);
    o.publish(altocast_tests::NM, &m.network_map_json()).await.expect("nm");
    let cm = m.cost_map_json();
    for i in 0..100 {
        o.publish(&format!("cm-{i}"), &cm).await.expect("cost map");
    }
    let r = TestRproxy::start(&[&o.url], &o.pub_key_path).await;
    // Polling would take two minutes: only a push arrives in time.
    let mut cfg = altocast_client::Config::new(vec![r.url.clone()], o.trusted());
    cfg.pull_interval = Duration::from_secs(120);
    let client = TestClient::start_cfg(cfg);
    client.wait_seq("cm-99", 1, Duration::from_secs(20)).await;
    // A change reaches the application through the RProxy; nobody fell back to polling.
    let changed = cm.replacen("\"pid1-node1\":2011", "\"pid1-node1\":2012", 1);
    assert_ne!(changed, cm, "the fixture must change");
    o.publish("cm-99", &changed).await.expect("change");
    client.wait_seq("cm-99", 2, Duration::from_secs(20)).await;
    let incidents = client.incidents_at(&r.url);
    assert!(
        !incidents.iter().any(|i| i.contains("refused") || i.contains("too many")),
        "a subscription was refused: {incidents:?}"
    );
    client.stop().await;
    r.stop().await;
    o.stop().await;
}
