//! The RFC 7285 HTTP/JSON interface an existing ALTO client uses: IRD, maps,
//! filtered cost map and endpoint cost, answered from verified data, with
//! RFC 7285 error objects for bad requests; and the attacks on it that its
//! bounds refuse (memory amplification through update streams and endpoint
//! cost, guessable control URIs, `Host` injection, connections never reaped).

use std::time::{Duration, Instant};

use altocast_rproxy::alto::{AltoHttp, HttpLimits};

use altocast_server::example;
use altocast_tests::{TestClient, TestOrigin};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

/// One HTTP/1.1 request; returns (status, content type, cache-control, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String, String) {
    http_with(addr, method, path, "", body).await
}

/// [`http`] with extra header lines (each ending in CRLF).
async fn http_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
    body: &str,
) -> (u16, String, String, String) {
    let a = altocast_tests::http::exchange(addr, method, path, extra, body, Duration::from_secs(10)).await;
    (a.status, a.header("content-type"), a.header("cache-control"), a.body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// An origin with the RFC 7285 example maps, a verifying subscription to it,
/// and the HTTP interface over that subscription's view.
async fn setup() -> (TestOrigin, TestClient, std::net::SocketAddr, CancellationToken) {
    let (origin, client, addr, stop, _) = setup_with(HttpLimits::default()).await;
    (origin, client, addr, stop)
}

/// [`setup`] with these limits; also returns the interface, for its stats.
async fn setup_with(limits: HttpLimits) -> (TestOrigin, TestClient, std::net::SocketAddr, CancellationToken, AltoHttp) {
    let origin = TestOrigin::start().await;
    origin.publish(example::NETWORK_MAP_ID, example::NETWORK_MAP).await.expect("network map");
    origin.publish(example::COST_MAP_ID, example::COST_MAP).await.expect("cost map");
    let client = TestClient::start(&[&origin.url], origin.trusted());
    client.wait_seq(example::COST_MAP_ID, 1, Duration::from_secs(10)).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let alto = AltoHttp::new(client.view().clone(), limits, stop.clone());
    tokio::spawn(alto.clone().serve(listener));
    (origin, client, addr, stop, alto)
}

#[tokio::test]
async fn an_rfc7285_client_reads_the_verified_maps() {
    let (_origin, client, addr, stop) = setup().await;

    let (status, ctype, _, body) = http(addr, "GET", "/directory", "").await;
    assert_eq!((status, ctype.as_str()), (200, "application/alto-directory+json"), "{body}");
    let ird = json(&body);
    assert_eq!(ird["meta"]["default-alto-network-map"], "default-network-map");
    assert_eq!(ird["meta"]["cost-types"]["numerical-routingcost"]["cost-metric"], "routingcost");
    assert_eq!(ird["resources"]["default-cost-map"]["uses"][0], "default-network-map");
    assert_eq!(ird["resources"]["endpoint-cost"]["accepts"], "application/alto-endpointcostparams+json");
    // Relative URIs (resolved against the IRD's own): none is built from `Host`.
    assert_eq!(ird["resources"]["default-network-map"]["uri"], "/networkmap/default-network-map");
    let updates = &ird["resources"]["update-stream"];
    assert_eq!(updates["media-type"], "text/event-stream");
    assert_eq!(
        updates["capabilities"]["incremental-change-media-types"]["default-cost-map"],
        "application/merge-patch+json"
    );

    let (status, ctype, cache, body) = http(addr, "GET", "/networkmap/default-network-map", "").await;
    assert_eq!((status, ctype.as_str()), (200, "application/alto-networkmap+json"), "{body}");
    let nm = json(&body);
    assert_eq!(nm["network-map"]["PID2"]["ipv4"][0], "198.51.100.128/25");
    let tag = client.view().load().network_maps["default-network-map"].tag.to_string();
    assert_eq!(nm["meta"]["vtag"]["tag"], tag, "the vtag is the verified tag");
    let max_age: u64 = cache.strip_prefix("max-age=").and_then(|s| s.parse().ok()).expect("max-age");
    assert!((1..=60).contains(&max_age), "cache lifetime bounded by the signed expiry: {cache}");

    let (status, _, _, body) = http(addr, "GET", "/costmap/default-cost-map", "").await;
    assert_eq!(status, 200, "{body}");
    let cm = json(&body);
    assert_eq!(cm["cost-map"]["PID1"]["PID2"], 5);
    assert_eq!(cm["meta"]["dependent-vtags"][0]["tag"], tag);
    // Polling clients revalidate with the ETag (the content tag): 304 while unchanged.
    let cm_tag = client.view().load().cost_maps["default-cost-map"].tag.to_string();
    let (status, _, _, body) =
        http_with(addr, "GET", "/costmap/default-cost-map", &format!("if-none-match: \"{cm_tag}\"\r\n"), "").await;
    assert_eq!((status, body.as_str()), (304, ""));
    let (status, _, _, _) =
        http_with(addr, "GET", "/costmap/default-cost-map", "if-none-match: \"other\"\r\n", "").await;
    assert_eq!(status, 200);

    // Filtered cost map (§11.3.2): only the asked PIDs; unknown ones left out.
    let filter = r#"{"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"},
                    "pids":{"srcs":["PID1","PID9"],"dsts":["PID2","PID3"]}}"#;
    let (status, _, _, body) = http(addr, "POST", "/costmap/default-cost-map", filter).await;
    assert_eq!(status, 200, "{body}");
    let f = json(&body);
    assert_eq!(f["cost-map"], serde_json::json!({"PID1": {"PID2": 5, "PID3": 10}}));

    // Endpoint cost (§11.5.1): addresses mapped to PIDs by longest prefix.
    let ecs = r#"{"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"},
                 "endpoints":{"srcs":["ipv4:192.0.2.2"],"dsts":["ipv4:198.51.100.130","ipv4:203.0.113.7","ipv6:2001:db8::1"]}}"#;
    let (status, ctype, _, body) = http(addr, "POST", "/endpointcost", ecs).await;
    assert_eq!((status, ctype.as_str()), (200, "application/alto-endpointcost+json"), "{body}");
    let e = json(&body);
    assert_eq!(
        e["endpoint-cost-map"]["ipv4:192.0.2.2"],
        serde_json::json!({"ipv4:198.51.100.130": 5, "ipv4:203.0.113.7": 10, "ipv6:2001:db8::1": 10})
    );
    // Without sources, the costs are from the asking client's own address
    // (127.0.0.1 falls in PID3's 0.0.0.0/0 here).
    let own = r#"{"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"},
                 "endpoints":{"dsts":["ipv4:192.0.2.9"]}}"#;
    let (status, _, _, body) = http(addr, "POST", "/endpointcost", own).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["endpoint-cost-map"], serde_json::json!({"ipv4:127.0.0.1": {"ipv4:192.0.2.9": 20}}));
    stop.cancel();
    client.stop().await;
}

#[tokio::test]
async fn bad_requests_get_rfc7285_errors_naming_the_field() {
    let (_origin, client, addr, stop) = setup().await;
    let cases = [
        ("POST", "/costmap/default-cost-map", "{not json", 400, "E_SYNTAX", None),
        ("POST", "/costmap/default-cost-map", r#"{"pids":{}}"#, 400, "E_MISSING_FIELD", Some("cost-type")),
        (
            "POST",
            "/costmap/default-cost-map",
            r#"{"cost-type":{"cost-mode":"ordinal","cost-metric":"routingcost"}}"#,
            400,
            "E_INVALID_FIELD_VALUE",
            Some("cost-type/cost-mode"),
        ),
        (
            "POST",
            "/costmap/default-cost-map",
            r#"{"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"},"pids":{"srcs":"PID1"}}"#,
            400,
            "E_INVALID_FIELD_TYPE",
            Some("pids/srcs"),
        ),
        (
            "POST",
            "/endpointcost",
            r#"{"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"},"endpoints":{"dsts":["ipv4:300.1.1.1"]}}"#,
            400,
            "E_INVALID_FIELD_VALUE",
            Some("endpoints/dsts"),
        ),
        ("GET", "/costmap/no-such-map", "", 404, "E_INVALID_FIELD_VALUE", Some("resource-id")),
    ];
    for (method, path, body, want_status, want_code, want_field) in cases {
        let (status, ctype, _, answer) = http(addr, method, path, body).await;
        assert_eq!(status, want_status, "{method} {path} {body}: {answer}");
        assert_eq!(ctype, "application/alto-error+json", "{answer}");
        let e = json(&answer);
        assert_eq!(e["meta"]["code"], want_code, "{body}: {answer}");
        if let Some(f) = want_field {
            assert_eq!(e["meta"]["field"], f, "{body}: {answer}");
        }
    }
    // Too many endpoints is refused before any lookup.
    let many: Vec<String> = (0..10_001).map(|i| format!("\"ipv4:10.0.{}.{}\"", i / 256 % 256, i % 256)).collect();
    let body = format!(
        r#"{{"cost-type":{{"cost-mode":"numerical","cost-metric":"routingcost"}},"endpoints":{{"dsts":[{}]}}}}"#,
        many.join(",")
    );
    let (status, _, _, answer) = http(addr, "POST", "/endpointcost", &body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(json(&answer)["meta"]["field"], "endpoints");
    stop.cancel();
    client.stop().await;
}

#[tokio::test]
async fn the_origin_serves_the_same_interface_from_its_own_verified_stream() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = std_listener.local_addr().expect("addr");
    let opts = altocast_tests::OriginOptions {
        alto_http: Some(std::sync::Arc::new(std::sync::Mutex::new(Some(std_listener)))),
        ..Default::default()
    };
    let origin = TestOrigin::start_with(opts, None).await;
    // Before any map is published there is nothing to serve.
    let (status, _, _, body) = http(addr, "GET", "/costmap/default-cost-map", "").await;
    assert_eq!(status, 404, "{body}");
    origin.publish(example::NETWORK_MAP_ID, example::NETWORK_MAP).await.expect("network map");
    let r = origin.publish(example::COST_MAP_ID, example::COST_MAP).await.expect("cost map");
    // The interface follows the origin's own stream, verified: poll until it
    // has the published version (bounded).
    let mut seen = None;
    for _ in 0..200 {
        let (status, _, _, body) = http(addr, "GET", "/costmap/default-cost-map", "").await;
        if status == 200 {
            seen = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let cm = json(&seen.expect("the cost map is served within 5 s"));
    assert_eq!(cm["cost-map"]["PID3"]["PID1"], 20);
    assert_eq!(r.seq, 1);
    origin.stop().await;
}

/// An HTTP/1.1 response read off a raw socket: `text` is its head and its
/// body so far with the chunked transfer coding removed (an event's prefix,
/// shared map body and blank line are separate chunks).
struct Sse {
    tcp: TcpStream,
    raw: Vec<u8>,
    in_body: bool,
    text: String,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Sse {
    fn new(tcp: TcpStream) -> Sse {
        Sse { tcp, raw: Vec::new(), in_body: false, text: String::new() }
    }

    fn decode(&mut self) {
        if !self.in_body {
            let Some(i) = find(&self.raw, b"\r\n\r\n") else { return };
            self.text.push_str(&String::from_utf8_lossy(&self.raw[..i + 4]));
            self.raw.drain(..i + 4);
            self.in_body = true;
        }
        while let Some(i) = find(&self.raw, b"\r\n") {
            let line = String::from_utf8_lossy(&self.raw[..i]).into_owned();
            let size = usize::from_str_radix(line.trim(), 16).unwrap_or_else(|_| panic!("chunk size {line:?}"));
            if self.raw.len() < i + 2 + size + 2 {
                return;
            }
            self.text.push_str(&String::from_utf8_lossy(&self.raw[i + 2..i + 2 + size]));
            self.raw.drain(..i + 2 + size + 2);
        }
    }

    /// Reads until `text` contains `needle` (bounded by 10 s).
    async fn until(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            self.decode();
            if self.text.contains(needle) {
                return;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in 10 s; got: {}", self.text))
                .expect("read");
            assert!(n > 0, "stream ended before {needle:?}: {}", self.text);
            self.raw.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The `data:` line after `event: EVENT` in an SSE text.
fn data_after(buf: &str, event: &str) -> String {
    let at = buf.find(&format!("event: {event}\n")).unwrap_or_else(|| panic!("no event {event}: {buf}"));
    let rest = &buf[at..];
    let line = rest.lines().find_map(|l| l.strip_prefix("data: ")).expect("data line");
    line.to_owned()
}

#[tokio::test]
async fn an_rfc8895_update_stream_sends_the_map_then_merge_patches_until_removed() {
    let (origin, client, addr, stop) = setup().await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let body = r#"{"add":{"my-cm":{"resource-id":"default-cost-map"},
                  "my-nm":{"resource-id":"default-network-map","incremental-changes":false}}}"#;
    let req = format!(
        "POST /updates HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/alto-updatestreamparams+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut s = Sse::new(s);
    s.until("event: application/alto-networkmap+json,my-nm\n").await;
    s.until("event: application/alto-costmap+json,my-cm\n").await;
    s.until("}}\n\n").await;
    let buf = &s.text;
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    assert!(buf.to_ascii_lowercase().contains("content-type: text/event-stream"), "{buf}");
    let control = json(&data_after(buf, "application/alto-updatestreamcontrol+json"));
    let control_uri = control["control-uri"].as_str().expect("control-uri").to_owned();
    let id = control_uri.strip_prefix("/updates/control/").expect("relative control URI");
    assert!(id.len() >= 32 && id.chars().all(|c| c.is_ascii_hexdigit()), "128 random bits: {id}");
    let full = json(&data_after(buf, "application/alto-costmap+json,my-cm"));
    assert_eq!(full["cost-map"]["PID1"]["PID2"], 5);

    // A change at the origin arrives as an RFC 7396 merge patch of the cost map.
    let changed = example::COST_MAP.replace(r#""PID1":{"PID1":1,"PID2":5"#, r#""PID1":{"PID1":1,"PID2":7"#);
    assert_ne!(changed, example::COST_MAP);
    origin.publish(example::COST_MAP_ID, &changed).await.expect("changed cost map");
    s.text.clear();
    s.until("event: application/merge-patch+json,my-cm\n").await;
    s.until("}}\n\n").await;
    let patch = json(&data_after(&s.text, "application/merge-patch+json,my-cm"));
    assert_eq!(patch["cost-map"]["PID1"]["PID2"], 7, "{patch}");
    assert!(patch["cost-map"].get("PID2").is_none(), "only the changed row: {patch}");

    // Removing every resource through the control URI ends the stream.
    let path = control_uri.clone();
    let (status, _, _, answer) = http(addr, "POST", &path, r#"{"remove":["my-cm","my-nm"]}"#).await;
    assert_eq!(status, 204, "{answer}");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.tcp.read_to_end(&mut rest))
        .await
        .expect("stream ends")
        .expect("read");
    let (status, _, _, answer) = http(addr, "POST", &path, r#"{"remove":["my-cm"]}"#).await;
    assert_eq!(status, 404, "the stream's control URI is gone: {answer}");

    // Bad stream requests are RFC 7285 errors.
    let (status, _, _, answer) = http(addr, "POST", "/updates", r#"{"add":{"x":{"resource-id":"nope"}}}"#).await;
    assert_eq!((status, json(&answer)["meta"]["field"].as_str()), (400, Some("add/x/resource-id")), "{answer}");

    // Shutting the server down ends open streams (graceful shutdown would
    // otherwise wait for them forever).
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut s = Sse::new(s);
    s.until("event: application/alto-costmap+json,my-cm\n").await;
    stop.cancel();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.tcp.read_to_end(&mut rest))
        .await
        .expect("ends on shutdown")
        .expect("read");
    client.stop().await;
}

/// `POST /updates` with `body`, as raw HTTP/1.1.
fn updates_request(body: &str) -> String {
    format!(
        "POST /updates HTTP/1.1\r\nhost: alto\r\ncontent-type: application/alto-updatestreamparams+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A new connection that has sent `raw`.
async fn send_raw(addr: std::net::SocketAddr, raw: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("write");
    s
}

/// An update stream opened with `body`.
async fn open_stream(addr: std::net::SocketAddr, body: &str) -> Sse {
    Sse::new(send_raw(addr, &updates_request(body)).await)
}

/// How long until the server closes `s` (EOF or reset), reading and
/// discarding what it sends; `None` if still open after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// The control URI path of an update stream that has sent `buf`.
fn control_path(buf: &str) -> String {
    let control = json(&data_after(buf, "application/alto-updatestreamcontrol+json"));
    control["control-uri"].as_str().expect("control-uri").to_owned()
}

#[tokio::test]
async fn uris_come_from_the_configured_public_url_never_from_the_host_header() {
    let (_origin, client, addr, stop) = setup().await;
    let (status, _, _, body) = http_with(addr, "GET", "/directory", "host: attacker.example:9\r\n", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("attacker.example"), "the Host header leaked into the IRD: {body}");
    stop.cancel();
    client.stop().await;

    let public = HttpLimits { public_url: Some("https://alto.example.net/".into()), ..HttpLimits::default() };
    let (_origin, client, addr, stop, _) = setup_with(public).await;
    let (_, _, _, body) = http_with(addr, "GET", "/directory", "host: attacker.example:9\r\n", "").await;
    let ird = json(&body);
    assert_eq!(ird["resources"]["default-cost-map"]["uri"], "https://alto.example.net/costmap/default-cost-map");
    assert_eq!(ird["resources"]["update-stream"]["uri"], "https://alto.example.net/updates");
    let mut s = Sse::new(
        send_raw(
            addr,
            &updates_request(r#"{"add":{"c":{"resource-id":"default-cost-map"}}}"#)
                .replace("host: alto", "host: attacker.example:9"),
        )
        .await,
    );
    s.until("event: application/alto-costmap+json,c\n").await;
    assert!(control_path(&s.text).starts_with("https://alto.example.net/updates/control/"), "{}", s.text);
    assert!(!s.text.contains("attacker.example"), "{}", s.text);
    stop.cancel();
    client.stop().await;
}

#[tokio::test]
async fn a_stream_naming_one_map_under_many_client_ids_is_refused() {
    let (_origin, client, addr, stop, alto) = setup_with(HttpLimits::default()).await;
    // The measured attack: one cost map under 64 client ids.
    let add: Vec<String> = (0..64).map(|i| format!(r#""c{i:02}":{{"resource-id":"default-cost-map"}}"#)).collect();
    let (status, ctype, _, answer) =
        http(addr, "POST", "/updates", &format!(r#"{{"add":{{{}}}}}"#, add.join(","))).await;
    assert_eq!((status, ctype.as_str()), (400, "application/alto-error+json"), "{answer}");
    let e = json(&answer);
    assert_eq!(e["meta"]["code"], "E_INVALID_FIELD_VALUE");
    assert_eq!(e["meta"]["field"], "add/c01/resource-id", "names the second client id: {answer}");
    // More resources than a stream may follow.
    let add: Vec<String> = (0..65).map(|i| format!(r#""c{i}":{{"resource-id":"r{i}"}}"#)).collect();
    let (status, _, _, answer) = http(addr, "POST", "/updates", &format!(r#"{{"add":{{{}}}}}"#, add.join(","))).await;
    assert_eq!((status, json(&answer)["meta"]["field"].as_str()), (400, Some("add")), "{answer}");
    assert_eq!(alto.stats().streams, 0);
    assert_eq!(alto.stats().renderings, 0, "nothing was rendered for refused streams");
    stop.cancel();
    client.stop().await;
}

#[tokio::test]
async fn update_streams_share_one_rendering_per_version_and_patch() {
    let (origin, client, addr, stop, alto) = setup_with(HttpLimits::default()).await;
    let body = r#"{"add":{"cm":{"resource-id":"default-cost-map"}}}"#;
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut s = open_stream(addr, body).await;
        s.until("event: application/alto-costmap+json,cm\n").await;
        s.until("}}\n\n").await;
        streams.push(s);
    }
    assert_eq!(alto.stats().streams, 5);
    assert_eq!(alto.stats().renderings, 1, "five streams, one rendering of the cost map");
    // A GET of the same version is served from the same rendering.
    let (status, _, _, full) = http(addr, "GET", "/costmap/default-cost-map", "").await;
    assert_eq!(status, 200);
    assert_eq!(full, data_after(&streams[0].text, "application/alto-costmap+json,cm"));
    assert_eq!(alto.stats().renderings, 1);

    let changed = example::COST_MAP.replace(r#""PID1":{"PID1":1,"PID2":5"#, r#""PID1":{"PID1":1,"PID2":7"#);
    origin.publish(example::COST_MAP_ID, &changed).await.expect("changed cost map");
    for s in &mut streams {
        s.text.clear();
        s.until("event: application/merge-patch+json,cm\n").await;
        s.until("}}\n\n").await;
        assert_eq!(json(&data_after(&s.text, "application/merge-patch+json,cm"))["cost-map"]["PID1"]["PID2"], 7);
    }
    assert_eq!(alto.stats().renderings, 2, "five streams, one rendering of the merge patch");
    stop.cancel();
    client.stop().await;
}

#[tokio::test]
async fn a_control_uri_acts_only_on_its_own_stream() {
    let (_origin, client, addr, stop, alto) = setup_with(HttpLimits::default()).await;
    let mut a = open_stream(addr, r#"{"add":{"a":{"resource-id":"default-cost-map"}}}"#).await;
    a.until("event: application/alto-costmap+json,a\n").await;
    let mut b = open_stream(addr, r#"{"add":{"b":{"resource-id":"default-network-map"}}}"#).await;
    b.until("event: application/alto-networkmap+json,b\n").await;
    let (path_a, path_b) = (control_path(&a.text), control_path(&b.text));
    assert_ne!(path_a, path_b);

    // A neighbouring id (the old attack: own id − 1) is no stream at all.
    let mut near = path_b.clone();
    let last = near.pop().expect("id");
    near.push(if last == '0' { '1' } else { '0' });
    let (status, _, _, answer) = http(addr, "POST", &near, r#"{"remove":["a"]}"#).await;
    assert_eq!(status, 404, "{answer}");
    // B's control URI cannot remove A's client id: it names the unknown id.
    let (status, _, _, answer) = http(addr, "POST", &path_b, r#"{"remove":["a"]}"#).await;
    assert_eq!(status, 400, "{answer}");
    let e = json(&answer);
    assert_eq!((e["meta"]["field"].as_str(), &e["meta"]["value"]), (Some("remove"), &serde_json::json!(["a"])));
    assert_eq!(alto.stats().streams, 2, "both streams still open");
    // A's own control URI ends A, and only A.
    let (status, _, _, answer) = http(addr, "POST", &path_a, r#"{"remove":["a"]}"#).await;
    assert_eq!(status, 204, "{answer}");
    assert!(closed_within(&mut a.tcp, Duration::from_secs(5)).await.is_some(), "stream A ends");
    assert!(closed_within(&mut b.tcp, Duration::from_millis(300)).await.is_none(), "stream B goes on");
    assert_eq!(alto.stats().streams, 1);
    stop.cancel();
    client.stop().await;
}

#[tokio::test]
async fn endpoint_cost_is_bounded_in_pairs_and_concurrency() {
    let limits = HttpLimits { max_pairs: 4, max_queries: 1, ..HttpLimits::default() };
    let (_origin, client, addr, stop, _) = setup_with(limits).await;
    let ecs = |srcs: &str, dsts: &str| {
        format!(
            r#"{{"cost-type":{{"cost-mode":"numerical","cost-metric":"routingcost"}},"endpoints":{{"srcs":[{srcs}],"dsts":[{dsts}]}}}}"#
        )
    };
    let three = r#""ipv4:192.0.2.1","ipv4:192.0.2.2","ipv4:192.0.2.3""#;
    let (status, _, _, answer) =
        http(addr, "POST", "/endpointcost", &ecs(three, r#""ipv4:10.0.0.1","ipv4:10.0.0.2""#)).await;
    assert_eq!(status, 400, "6 pairs over a limit of 4: {answer}");
    let e = json(&answer);
    assert_eq!(
        (e["meta"]["code"].as_str(), e["meta"]["field"].as_str()),
        (Some("E_INVALID_FIELD_VALUE"), Some("endpoints"))
    );

    // One query in progress (its body still arriving) holds the only slot:
    // the next is refused at once with an RFC 7285 error, not queued.
    let ok = ecs(r#""ipv4:192.0.2.2""#, r#""ipv4:198.51.100.130""#);
    let head = format!(
        "POST /endpointcost HTTP/1.1\r\nhost: alto\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        "application/alto-endpointcostparams+json",
        ok.len()
    );
    let mut slow = send_raw(addr, &format!("{head}{}", &ok[..10])).await;
    let mut refused = None;
    for _ in 0..100 {
        let (status, _, _, answer) = http(addr, "POST", "/endpointcost", &ok).await;
        if status == 503 {
            refused = Some(answer);
            break;
        }
        // The slow request has not reached the server yet.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = refused.expect("a query over the concurrency limit gets 503");
    assert_eq!(json(&answer)["meta"]["code"], "E_SERVICE_UNAVAILABLE");
    slow.write_all(&ok.as_bytes()[10..]).await.expect("rest of body");
    let mut out = String::new();
    slow.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let (status, _, _, answer) = http(addr, "POST", "/endpointcost", &ok).await;
    assert_eq!(status, 200, "the slot is free again: {answer}");
    stop.cancel();
    client.stop().await;
}

#[tokio::test]
async fn idle_and_slowloris_connections_are_closed_after_their_timeouts() {
    let limits = HttpLimits {
        idle_timeout: Duration::from_secs(1),
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    };
    let (_origin, client, addr, stop, alto) = setup_with(limits).await;
    // A connection that never sends a request.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let t = closed_within(&mut idle, Duration::from_secs(5)).await.expect("idle connection closed within 5 s");
    assert!(t >= Duration::from_millis(500), "not before the idle timeout: {t:?}");

    // A keep-alive connection after its request has been answered.
    let mut ka = Sse::new(send_raw(addr, "GET /directory HTTP/1.1\r\nhost: alto\r\n\r\n").await);
    ka.until("HTTP/1.1 200").await;
    assert!(closed_within(&mut ka.tcp, Duration::from_secs(5)).await.is_some(), "keep-alive connection closed");

    // A slowloris: a header line every 200 ms, never finishing the head.
    let mut slow = send_raw(addr, "GET /directory HTTP/1.1\r\nhost: alto\r\n").await;
    let start = Instant::now();
    let mut chunk = [0u8; 256];
    let closed = loop {
        if start.elapsed() > Duration::from_secs(5) {
            break false;
        }
        if slow.write_all(b"x-slow: 1\r\n").await.is_err() {
            break true;
        }
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            _ => {}
        }
    };
    assert!(closed, "a header sent byte by byte is cut off after the header timeout");

    // A slow request body, on the long-lived /updates route too: 408.
    let mut body = send_raw(
        addr,
        "POST /updates HTTP/1.1\r\nhost: alto\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"add\":",
    )
    .await;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), body.read_to_end(&mut out))
        .await
        .expect("answered within 5 s")
        .expect("read");
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert_eq!(alto.stats().connections, 0, "every connection reaped");
    stop.cancel();
    client.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let limits = HttpLimits { max_connections: 2, ..HttpLimits::default() };
    let (_origin, client, addr, stop, alto) = setup_with(limits).await;
    let mut held = vec![TcpStream::connect(addr).await.expect("1"), TcpStream::connect(addr).await.expect("2")];
    let mut third = TcpStream::connect(addr).await.expect("3");
    assert!(closed_within(&mut third, Duration::from_secs(2)).await.is_some(), "the third connection is closed");
    assert_eq!(alto.stats().connections, 2);
    // A freed slot is usable again.
    held.pop();
    let mut answered = false;
    for _ in 0..100 {
        if alto.stats().connections < 2 {
            let (status, _, _, _) = http(addr, "GET", "/directory", "").await;
            answered = status == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "served once a connection closed");
    stop.cancel();
    client.stop().await;
}

#[tokio::test]
async fn bodies_over_the_size_limit_and_streams_over_the_stream_limit_are_refused() {
    let limits = HttpLimits { max_request_bytes: 100, max_streams: 1, ..HttpLimits::default() };
    let (_origin, client, addr, stop, _) = setup_with(limits).await;
    let big = format!(r#"{{"add":{{"c":{{"resource-id":"default-cost-map","x":"{}"}}}}}}"#, "y".repeat(200));
    let (status, ctype, _, answer) = http(addr, "POST", "/updates", &big).await;
    assert_eq!((status, ctype.as_str()), (413, "application/alto-error+json"), "{answer}");
    let mut s = open_stream(addr, r#"{"add":{"c":{"resource-id":"default-cost-map"}}}"#).await;
    s.until("event: application/alto-costmap+json,c\n").await;
    let (status, _, _, answer) =
        http(addr, "POST", "/updates", r#"{"add":{"c":{"resource-id":"default-cost-map"}}}"#).await;
    assert_eq!((status, json(&answer)["meta"]["code"].as_str()), (503, Some("E_SERVICE_UNAVAILABLE")), "{answer}");
    stop.cancel();
    client.stop().await;
}

#[tokio::test]
async fn a_stream_reader_that_stopped_reading_is_closed_after_the_write_timeout() {
    // A map larger than the socket buffers between a non-reading client and us.
    let maps = altocast_tests::Maps::synthetic(300);
    let (nm, cm) = (maps.network_map_json(), maps.cost_map_json());
    assert!(cm.len() > 1 << 20, "{} bytes", cm.len());
    let origin = TestOrigin::start().await;
    origin.publish(altocast_tests::NM, &nm).await.expect("network map");
    origin.publish(altocast_tests::CM, &cm).await.expect("cost map");
    let client = TestClient::start(&[&origin.url], origin.trusted());
    client.wait_seq(altocast_tests::CM, 1, Duration::from_secs(30)).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let limits = HttpLimits { write_timeout: Duration::from_secs(1), ..HttpLimits::default() };
    let alto = AltoHttp::new(client.view().clone(), limits, stop.clone());
    tokio::spawn(alto.clone().serve(listener));

    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("small receive buffer");
    let mut s = sock.connect(addr).await.expect("connect");
    s.write_all(
        updates_request(r#"{"add":{"cm":{"resource-id":"default-cost-map","incremental-changes":false}}}"#).as_bytes(),
    )
    .await
    .expect("write");
    // Never read. The kernel takes the first few MB (its send buffer grows to
    // 4 MiB on loopback); a few new versions, sent whole, overflow it, the
    // server's write blocks, and the connection is reaped.
    let start = Instant::now();
    while alto.stats().streams == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the stream did not open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut maps = maps;
    for _ in 0..6 {
        maps.step();
        origin.publish(altocast_tests::NM, &maps.network_map_json()).await.expect("network map");
        origin.publish(altocast_tests::CM, &maps.cost_map_json()).await.expect("changed cost map");
        tokio::time::sleep(Duration::from_millis(300)).await;
        if alto.stats().connections == 0 {
            break;
        }
    }
    let start = Instant::now();
    while alto.stats().connections > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "a stalled reader held for 10 s: {:?}", alto.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(alto.stats().streams, 0);
    stop.cancel();
    client.stop().await;
}

/// GETs the IRD until its `meta.altocast` names the origin (the interface's
/// subscription has accepted a directory), at most 10 s; the interface may
/// still be binding its port at first.
async fn ird_with_origin(addr: std::net::SocketAddr) -> serde_json::Value {
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(25)).await;
            continue;
        }
        let (status, _, _, body) = http(addr, "GET", "/directory", "").await;
        if status == 200 {
            let ird = json(&body);
            if ird["meta"]["altocast"]["origin-id"].is_string() {
                return ird;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the IRD at {addr} never named its origin");
}

#[tokio::test]
async fn the_ird_advertises_the_grpc_urls_origin_and_root_only_from_configuration_and_the_verified_directory() {
    // The origin with --grpc-public-url (its own URL): grpc, origin id and root.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = std_listener.local_addr().expect("addr");
    let opts = altocast_tests::OriginOptions {
        alto_http: Some(std::sync::Arc::new(std::sync::Mutex::new(Some(std_listener)))),
        advertise_grpc: true,
        ..Default::default()
    };
    let origin = TestOrigin::start_with(opts, None).await;
    origin.publish(example::NETWORK_MAP_ID, example::NETWORK_MAP).await.expect("network map");
    let root = origin.root_trusted().trusted_root().expect("root").id().to_string();
    let ird = ird_with_origin(addr).await;
    let meta = &ird["meta"]["altocast"];
    assert_eq!(meta["grpc"], serde_json::json!([origin.url]), "{ird}");
    // The origin id is the first root's key id; nothing rotated, so both are the root's.
    assert_eq!(meta["origin-id"], root.as_str(), "{ird}");
    assert_eq!(meta["root-key-id"], root.as_str(), "{ird}");
    // Host never leaks into it.
    let (_, _, _, body) = http_with(addr, "GET", "/directory", "host: attacker.example:9\r\n", "").await;
    assert!(!body.contains("attacker.example"), "{body}");

    // An RProxy with two --grpc-public-url flags advertises exactly those.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let rproxy_http = free.local_addr().expect("addr");
    drop(free);
    let extra = [
        "--alto-http",
        &rproxy_http.to_string(),
        "--grpc-public-url",
        "https://rproxy.example:7200/",
        "--grpc-public-url",
        "http://[2001:db8::1]:7200",
    ]
    .map(String::from);
    let rproxy = altocast_tests::TestRproxy::start_trusting_root(&[&origin.url], &origin.root_pub_path(), &extra).await;
    let ird = ird_with_origin(rproxy_http).await;
    let meta = &ird["meta"]["altocast"];
    assert_eq!(meta["grpc"], serde_json::json!(["https://rproxy.example:7200", "http://[2001:db8::1]:7200"]), "{ird}");
    assert_eq!((meta["origin-id"].as_str(), meta["root-key-id"].as_str()), (Some(root.as_str()), Some(root.as_str())));
    rproxy.stop().await;
    origin.stop().await;

    // Without the flag: no "grpc" member; the origin is still named, from a
    // client trusting a fixed update key (the root read from the signed key chain).
    let (origin, client, addr, stop) = setup().await;
    let ird = ird_with_origin(addr).await;
    let meta = &ird["meta"]["altocast"];
    assert!(meta.get("grpc").is_none(), "a gRPC URL advertised without --grpc-public-url: {ird}");
    let root = origin.root_trusted().trusted_root().expect("root").id().to_string();
    assert_eq!((meta["origin-id"].as_str(), meta["root-key-id"].as_str()), (Some(root.as_str()), Some(root.as_str())));
    stop.cancel();
    client.stop().await;
}
