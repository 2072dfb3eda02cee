//! Pull-through at an RProxy as a stranger meets it: `Fetch` of a resource
//! the RProxy does not hold asks its upstream once over a shared connection;
//! the upstream's "unknown" is remembered for `--pull-negative-secs` and
//! answered from memory, so made-up names cost the upstream nothing; once it
//! expires, a resource that exists by then is pulled through.

use std::time::Duration;

use altocast_proto::pb;
use altocast_tests::{Maps, TestOrigin, TestRproxy};
use tonic::Code;

async fn fetch(url: &str, id: &str) -> Result<pb::FetchResponse, tonic::Status> {
    let mut c = altocast_client::connect::connect(url, Duration::from_secs(2)).await.expect("connect");
    c.fetch(pb::FetchRequest { resource_id: id.into() }).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_resources_are_remembered_and_pulled_once_they_exist() {
    let o = TestOrigin::start().await;
    let m = Maps::synthetic(5);
    o.publish(altocast_tests::NM, &m.network_map_json()).await.expect("nm");
    let flags = ["--pull-negative-secs", "2"].map(String::from);
    let r = TestRproxy::start_with_args(&[&o.url], &o.pub_key_path, None, &flags).await;
    let _ = fetch(&r.url, altocast_tests::NM).await;

    // First ask goes upstream; the next ones are answered from memory.
    let first = fetch(&r.url, "later-map").await.expect_err("unknown");
    assert_eq!(first.code(), Code::NotFound, "{first:?}");
    assert!(!first.message().contains("recently"), "{}", first.message());
    for _ in 0..50 {
        let again = fetch(&r.url, "later-map").await.expect_err("still unknown");
        assert_eq!(again.code(), Code::NotFound);
        assert!(again.message().contains("recently"), "not answered from memory: {}", again.message());
    }

    // The origin now publishes it; once the memory expires, it is pulled through.
    let nm_json = m.network_map_json();
    o.publish("later-map", &nm_json).await.expect("publish the new map");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let got = fetch(&r.url, "later-map").await.expect("pulled through after the negative TTL");
    assert!(!got.updates.is_empty());
    r.stop().await;
    o.stop().await;
}

/// A remembered "unknown" is forgotten as soon as a directory lists the
/// resource, well before the negative TTL (here an hour) runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_listing_the_resource_clears_its_unknown_at_once() {
    let o = TestOrigin::start().await;
    let m = Maps::synthetic(5);
    o.publish(altocast_tests::NM, &m.network_map_json()).await.expect("nm");
    let flags = ["--pull-negative-secs", "3600"].map(String::from);
    let r = TestRproxy::start_with_args(&[&o.url], &o.pub_key_path, None, &flags).await;
    let _ = fetch(&r.url, altocast_tests::NM).await;
    let first = fetch(&r.url, "later-map").await.expect_err("unknown");
    assert_eq!(first.code(), Code::NotFound, "{first:?}");
    assert!(fetch(&r.url, "later-map").await.expect_err("remembered").message().contains("recently"));

    o.publish("later-map", &m.network_map_json()).await.expect("publish the new map");
    // The RProxy re-reads the directory every 5 s; then the name is known.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match fetch(&r.url, "later-map").await {
            Ok(got) => {
                assert!(!got.updates.is_empty());
                break;
            }
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "still unknown after the directory listed it: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    r.stop().await;
    o.stop().await;
}
