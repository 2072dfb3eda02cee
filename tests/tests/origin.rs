//! The origin as a publisher sees it: Publish and maps-dir ingest, validation
//! errors that name the field, authentication, restart, graceful shutdown.

use std::time::Duration;

use altocast_tests::{CM, Maps, NM, OriginOptions, TOKEN, TestClient, TestOrigin};
use tonic::Code;

const T: Duration = Duration::from_secs(20);

async fn seq_of(o: &TestOrigin, id: &str) -> Option<u64> {
    let mut c = altocast_client::connect::connect(&o.url, T).await.expect("connect");
    let r = c.fetch(altocast_proto::pb::FetchRequest { resource_id: id.into() }).await.ok()?.into_inner();
    use prost::Message as _;
    r.updates.last().map(|u| altocast_proto::pb::Update::decode(u.body.clone()).expect("decode").seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_versions_and_identical_content_makes_no_new_version() {
    let o = TestOrigin::start().await;
    let maps = Maps::synthetic(10);
    let r = o.publish(NM, &maps.network_map_json()).await.expect("nm");
    assert_eq!((r.seq, r.changed), (1, true));
    let r = o.publish(CM, &maps.cost_map_json()).await.expect("cm");
    assert_eq!((r.seq, r.changed), (1, true));
    let again = o.publish(CM, &maps.cost_map_json()).await.expect("same");
    assert_eq!((again.seq, again.changed, again.tag), (1, false, r.tag));
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_publish_is_rejected_and_changes_nothing() {
    let o = TestOrigin::start().await;
    let maps = Maps::synthetic(10);
    for token in [None, Some("wrong-token-wrong-token")] {
        let err = o.publish_with_token(NM, maps.network_map_json().into_bytes(), token).await.expect_err("must fail");
        assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    }
    assert_eq!(seq_of(&o, NM).await, None, "nothing was published");
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_naming_the_field_and_state_is_unchanged() {
    let o = TestOrigin::start().await;
    let maps = Maps::synthetic(10);
    let good = o.publish(NM, &maps.network_map_json()).await.expect("nm");
    o.publish(CM, &maps.cost_map_json()).await.expect("cm");
    let cases: Vec<(&str, Vec<u8>, Code, &str)> = vec![
        (NM, b"{\"network-map\": {".to_vec(), Code::InvalidArgument, "malformed JSON"),
        (NM, br#"{"network-map":{"bad pid":{"ipv4":["10.0.0.0/8"]}}}"#.to_vec(), Code::InvalidArgument, "bad pid"),
        (NM, br#"{"network-map":{"A":{"ipv4":["10.0.0.0/8"]},"B":{"ipv4":["10.0.0.0/8"]}}}"#.to_vec(), Code::InvalidArgument, "10.0.0.0/8"),
        (NM, br#"{"network-map":{"A":{"ipv4":["10.0.0.300/8"]}}}"#.to_vec(), Code::InvalidArgument, "10.0.0.300/8"),
        (CM, br#"{"meta":{"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"}},"cost-map":{"A":{"B":NaN}}}"#.to_vec(), Code::InvalidArgument, "malformed JSON"),
        (CM, br#"{"meta":{"dependent-vtags":[{"resource-id":"default-network-map","tag":"x"}],"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"}},"cost-map":{"nosuchpid":{"nosuchpid":1}}}"#.to_vec(), Code::InvalidArgument, "dependent-vtags"),
        (CM, br#"{"meta":{"cost-type":{"cost-mode":"ordinal","cost-metric":"routingcost"}},"cost-map":{"nosuchpid":{"nosuchpid":1}}}"#.to_vec(), Code::InvalidArgument, "nosuchpid"),
        (NM, br#"{"meta":{"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"}},"cost-map":{}}"#.to_vec(), Code::InvalidArgument, "network-map"),
        // Refused by the gRPC layer before decoding, naming the limit.
        (NM, vec![b' '; 65 << 20], Code::OutOfRange, "too large"),
    ];
    for (id, body, code, needle) in cases {
        let err = o.publish_with_token(id, body, Some(TOKEN)).await.expect_err("must be rejected");
        assert_eq!(err.code(), code, "{id}: {err}");
        assert!(err.message().contains(needle), "{id}: error {:?} does not name {needle:?}", err.message());
    }
    assert_eq!(seq_of(&o, NM).await, Some(good.seq), "network map unchanged");
    assert_eq!(seq_of(&o, CM).await, Some(1), "cost map unchanged");
    // And the origin still serves: a valid publish works.
    let mut maps = maps;
    maps.step();
    o.publish(NM, &maps.network_map_json()).await.expect("still serving");
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_dir_files_are_published_and_bad_files_ignored() {
    let maps_dir = tempfile::tempdir().expect("dir");
    let mut maps = Maps::synthetic(10);
    std::fs::write(maps_dir.path().join(format!("{NM}.json")), maps.network_map_json()).expect("write");
    std::fs::write(maps_dir.path().join(format!("{CM}.json")), maps.cost_map_json()).expect("write");
    let o =
        TestOrigin::start_with(OriginOptions { maps_dir: Some(maps_dir.path().into()), ..Default::default() }, None)
            .await;
    let client = TestClient::start(&[&o.url], o.trusted());
    client.wait_seq(CM, 1, T).await;
    // A broken file is rejected and changes nothing; the fixed file is published.
    std::fs::write(maps_dir.path().join(format!("{NM}.json")), "{ half-written").expect("write");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(seq_of(&o, NM).await, Some(1));
    loop {
        maps.step();
        let nm = maps.network_map_json();
        let cm = maps.cost_map_json();
        // Write to a temporary name and rename, as operators should.
        for (id, body) in [(NM, nm), (CM, cm)] {
            let tmp = maps_dir.path().join(format!(".{id}.tmp"));
            std::fs::write(&tmp, body).expect("write");
            std::fs::rename(&tmp, maps_dir.path().join(format!("{id}.json"))).expect("rename");
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        if seq_of(&o, CM).await > Some(1) {
            break;
        }
    }
    client.wait_seq(CM, 2, T).await;
    client.stop().await;
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_open_streams_within_the_grace_period() {
    let o = TestOrigin::start().await;
    let maps = Maps::synthetic(10);
    o.publish(NM, &maps.network_map_json()).await.expect("nm");
    let mut c = altocast_client::connect::connect(&o.url, T).await.expect("connect");
    let mut stream =
        c.subscribe(altocast_proto::pb::SubscribeRequest { resources: vec![] }).await.expect("subscribe").into_inner();
    assert!(stream.message().await.expect("frame").is_some());
    let t = std::time::Instant::now();
    o.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "stream still open after shutdown");
    assert!(t.elapsed() < Duration::from_secs(3), "shutdown took {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_grpc_port_and_bogus_resume_positions_do_no_harm() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let o = TestOrigin::start().await;
    let maps = Maps::synthetic(10);
    o.publish(NM, &maps.network_map_json()).await.expect("nm");
    let addr = o.url.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    s.write_all(&[0xde; 4096]).await.expect("write");
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
    // Bogus resume positions: a tag of the wrong length is refused, a seq from
    // the future gets nothing until it is real, an unknown resource is NOT_FOUND.
    let mut c = altocast_client::connect::connect(&o.url, T).await.expect("connect");
    use altocast_proto::pb::{ResumePosition, SubscribeRequest};
    let bad_tag = ResumePosition { resource_id: NM.into(), have_seq: 1, have_tag: vec![1, 2, 3].into() };
    let err = c.subscribe(SubscribeRequest { resources: vec![bad_tag] }).await.expect_err("bad tag");
    assert_eq!(err.code(), Code::InvalidArgument);
    let unknown = ResumePosition { resource_id: "nope".into(), have_seq: 0, have_tag: Default::default() };
    let err = c.subscribe(SubscribeRequest { resources: vec![unknown] }).await.expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    // The origin is unharmed.
    let client = TestClient::start(&[&o.url], o.trusted());
    client.wait_seq(NM, 1, T).await;
    client.stop().await;
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_patch_publishes_the_same_version_as_the_full_map() {
    let o = TestOrigin::start().await;
    let mut maps = Maps::synthetic(30);
    o.publish(NM, &maps.network_map_json()).await.expect("nm");
    o.publish(CM, &maps.cost_map_json()).await.expect("cm");
    let client = TestClient::start(&[&o.url], o.trusted());
    client.wait_seq(CM, 1, T).await;
    let mut seq = 1;
    for _ in 0..10 {
        let before = maps.workload.cost_map(&maps.workload.network_map());
        maps.step();
        let nm = maps.workload.network_map();
        o.publish(NM, &altocast_proto::model::json::network_map_json(&maps.workload.network_map_id, &nm))
            .await
            .expect("nm");
        let after = maps.workload.cost_map(&nm);
        let patch = altocast_proto::model::json::cost_map_merge_patch(&before, &after);
        let req = altocast_proto::pb::PublishRequest {
            resource_id: CM.into(),
            json: patch.into_bytes().into(),
            media_type: altocast_proto::model::json::MERGE_PATCH_MEDIA_TYPE.into(),
            more: vec![],
        };
        let r = o.publish_request(req, Some(TOKEN)).await.expect("patch");
        // Publishing the full new body afterwards is a no-op: same content, same tag.
        let full = o.publish(CM, &maps.cost_map_json()).await.expect("full");
        assert!(!full.changed, "the patch did not produce the full map's content");
        assert_eq!((full.seq, full.tag), (r.seq, r.tag));
        seq = r.seq;
    }
    client.wait_seq(CM, seq, T).await;
    // A patch for a resource that is not a published cost map, and a malformed one, change nothing.
    for (id, body) in [(NM, "{}"), (CM, "{\"cost-map\": 3}"), (CM, "{\"cost-map\":{\"p1\":{\"bad pid\":1}}}")] {
        let req = altocast_proto::pb::PublishRequest {
            resource_id: id.into(),
            json: body.as_bytes().to_vec().into(),
            media_type: altocast_proto::model::json::MERGE_PATCH_MEDIA_TYPE.into(),
            more: vec![],
        };
        let err = o.publish_request(req, Some(TOKEN)).await.expect_err("rejected");
        assert_eq!(err.code(), Code::InvalidArgument, "{body}: {err}");
    }
    assert_eq!(seq_of(&o, CM).await, Some(seq));
    client.stop().await;
    o.stop().await;
}

/// An error quoting a huge input still reaches the caller: the gRPC message is
/// bounded (clients refuse oversized metadata), and it still says what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_quoting_huge_input_are_bounded_and_still_say_what_is_wrong() {
    let o = TestOrigin::start().await;
    let long = "p".repeat(200_000);
    let bad_char = format!("{}!", "q".repeat(200_000));
    let huge_string = "x".repeat(200_000);
    let cases = [
        (NM, format!(r#"{{"network-map":{{"{long}":{{"ipv4":["10.0.0.0/8"]}}}}}}"#), "longer than 64"),
        (NM, format!(r#"{{"network-map":{{"{bad_char}":{{"ipv4":["10.0.0.0/8"]}}}}}}"#), "contains '!'"),
        (
            CM,
            format!(
                r#"{{"meta":{{"cost-type":{{"cost-mode":"numerical","cost-metric":"routingcost"}}}},"cost-map":{{"a":{{"b":"{huge_string}"}}}}}}"#
            ),
            "invalid type: string",
        ),
    ];
    for (id, body, says) in cases {
        let status = o.publish(id, &body).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().len() <= 1200, "message of {} bytes", status.message().len());
        assert!(status.message().contains(says), "{says}: {}", status.message());
    }
    o.stop().await;
}
