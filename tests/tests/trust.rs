//! The trust lifecycle as operators and attackers meet it, through origin →
//! RProxy → RProxy → clients that trust only the origin's root:
//!
//! - an update-key rotation (add, then retire) and a root rotation while
//!   updates flow: no client rejects an update or goes stale;
//! - a revoked key: every node's directory makes an update signed only by it
//!   fail verification, and every running client rejects one injected by a
//!   proxy and leaves that proxy;
//! - a proxy that freezes (replays) the directory is left when it expires,
//!   and what it hid arrives; one that tampers with the key chain is refused;
//! - first-use pinning refuses another origin's root, naming both.

use std::time::Duration;

use altocast_proto::{Limits, OriginKey, Verifier, VerifyError, keys::SignatureError, pb, wire::update::Signer};
use altocast_server::keyring::{self, Change};
use altocast_tests::{CM, EvilMode, EvilProxy, Maps, NM, OriginOptions, TestClient, TestOrigin, TestRproxy};
use prost::Message as _;

const T: Duration = Duration::from_secs(30);

async fn signed_directory(url: &str) -> pb::SignedDirectory {
    let mut c = altocast_client::connect::connect(url, Duration::from_secs(2)).await.expect("connect");
    c.get_directory(pb::GetDirectoryRequest {}).await.expect("directory").into_inner()
}

async fn directory(url: &str) -> pb::Directory {
    pb::Directory::decode(signed_directory(url).await.body).expect("decode")
}

/// Waits until a newcomer trusting `keys` can join `url` (it serves verified data).
async fn until_serving(url: &str, keys: &altocast_proto::TrustedKeys) {
    let deadline = tokio::time::Instant::now() + T;
    while let Err(e) = altocast_tests::join::join(url, keys, T, Duration::from_millis(50)).await {
        assert!(tokio::time::Instant::now() < deadline, "{url} does not serve: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `url`'s directory satisfies `ok`.
async fn until(url: &str, what: &str, ok: impl Fn(&pb::Directory) -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if ok(&directory(url).await) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{url}: {what} not seen within {T:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signing_keys(d: &pb::Directory) -> Vec<String> {
    d.keys.iter().map(|k| k.key_id.clone()).collect()
}

/// Publishes `n` cost-map changes 100 ms apart; returns the last seq.
async fn changes(o: &TestOrigin, m: &mut Maps, n: usize) -> u64 {
    let mut seq = 0;
    for _ in 0..n {
        m.step();
        o.publish(NM, &m.network_map_json()).await.expect("nm");
        seq = o.publish(CM, &m.cost_map_json()).await.expect("cm").seq;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seq
}

/// A client and the endpoints it uses: an injecting proxy in front of one node, then that node.
struct Follower {
    client: TestClient,
    proxy: EvilProxy,
    node: String,
}

fn bad_incidents(followers: &[Follower]) -> Vec<String> {
    followers
        .iter()
        .flat_map(|f| [f.client.incidents_at(&f.proxy.url), f.client.incidents_at(&f.node)].concat())
        .filter(|i| i.starts_with("rejected") || i.contains("stale"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_root_rotations_reject_nothing_and_a_revoked_key_is_refused_at_every_node() {
    let o = TestOrigin::start_with(OriginOptions { ttl_secs: 6, heartbeat_secs: 1, ..Default::default() }, None).await;
    let mut m = Maps::synthetic(8);
    o.publish(NM, &m.network_map_json()).await.expect("nm");
    o.publish(CM, &m.cost_map_json()).await.expect("cm");
    let root_file = o.root_pub_path();
    // `keys rotate-root` rewrites the file: keep the first root as clients got it.
    let first_root = std::fs::read_to_string(&root_file).expect("root");
    let r1 = TestRproxy::start_trusting_root(&[&o.url], &root_file, &[]).await;
    let r2 = TestRproxy::start_trusting_root(&[&r1.url], &root_file, &[]).await;
    // Each client reaches its node through a proxy that relays honestly
    // until it is told to inject something (once the nodes serve, so the
    // clients stay on their proxies).
    for url in [&o.url, &r1.url, &r2.url] {
        until_serving(url, &o.root_trusted()).await;
    }
    let mut followers = Vec::new();
    for url in [&o.url, &r1.url, &r2.url] {
        let proxy = EvilProxy::start(url, EvilMode::Inject).await;
        let mut cfg = altocast_client::Config::new(vec![proxy.url.clone(), url.clone()], o.root_trusted());
        cfg.directory_refresh = Duration::from_millis(500);
        followers.push(Follower { client: TestClient::start_cfg(cfg), proxy, node: url.clone() });
    }
    for f in &followers {
        f.client.wait_seq(CM, 1, T).await;
    }
    let data = o.data_path().to_path_buf();
    let root_key = keyring::root_key_path(&data);
    let first = signing_keys(&directory(&o.url).await);
    assert_eq!(first.len(), 1);
    // Steps follow each other faster than the RProxies re-read the directory
    // (every 5 s): an update signed by a key a node does not know yet makes it
    // re-read the directory of the node that sent it, which verified it.
    let settle = Duration::from_secs(1);

    // 1. A second update key: the origin signs with both.
    keyring::change(&data, &root_key, &Change::Add, 30).expect("keys add");
    until(&o.url, "two signing keys", |d| d.keys.len() == 2).await;
    changes(&o, &mut m, 5).await;
    tokio::time::sleep(settle).await;
    // 2. The first key retired: the origin signs with the new one only.
    keyring::change(&data, &root_key, &Change::Retire(first[0].clone()), 30).expect("keys retire");
    until(&o.url, "the new key alone", |d| d.keys.len() == 1 && d.keys[0].key_id != first[0]).await;
    changes(&o, &mut m, 5).await;
    tokio::time::sleep(settle).await;
    // 3. A new root, signed by the old one: clients trusting the old root walk forward.
    keyring::change(&data, &root_key, &Change::RotateRoot, 30).expect("keys rotate-root");
    until(&o.url, "a root change", |d| d.key_chain.as_ref().is_some_and(|c| c.root_history.len() == 1)).await;
    let last = changes(&o, &mut m, 5).await;
    for f in &followers {
        let tag = f.client.wait_seq(CM, last, T).await;
        assert_eq!(Some(tag), f.client.view().load().cost_maps.get(CM).map(|cm| cm.map.tag()), "{}", f.node);
    }
    assert_eq!(bad_incidents(&followers), Vec::<String>::new(), "a client rejected an update or went stale");

    // 4. The retired first key revoked (as if it leaked): at every node, the
    //    directory makes an update signed only by it fail, and the same update
    //    signed by the current key pass.
    keyring::change(&data, &root_key, &Change::Revoke(first[0].clone()), 30).expect("keys revoke");
    let leaked = altocast_server::keys::load(&data).expect("the first key");
    assert_eq!(leaked.id().as_str(), first[0]);
    let current_id = signing_keys(&directory(&o.url).await)[0].clone();
    let current = OriginKey::from_pkcs8_pem(
        &std::fs::read_to_string(data.join("update-keys").join(format!("{current_id}.pem"))).expect("current key"),
    )
    .expect("pem");
    let origin_id = directory(&o.url).await.origin_id;
    let version = altocast_proto::wire::update::Version {
        seq: last,
        state: altocast_proto::MapState::Cost(followers[0].client.view().load().cost_maps[CM].map.clone()),
        dependencies: Vec::new(),
    };
    let forged = Signer::with_keys(origin_id.clone(), vec![leaked], 60_000).expect("signer");
    let honest = Signer::with_keys(origin_id, vec![current], 60_000).expect("signer");
    let cm = altocast_tests::rid(CM);
    let now = altocast_client::now_ms();
    for url in [&o.url, &r1.url, &r2.url] {
        until(url, "the revocation", |d| {
            let list = d
                .key_chain
                .as_ref()
                .and_then(|c| c.current.as_ref())
                .map(altocast_proto::verify::trust::KeyList::decode);
            matches!(list, Some(Ok(l)) if l.revoked.contains(&first[0]))
        })
        .await;
        // A fresh verifier trusting the very first root, as a long-offline client would.
        let mut v = Verifier::new(
            altocast_proto::TrustedKeys::root(altocast_proto::PublicKey::from_spki_pem(&first_root).expect("pem")),
            Limits::default(),
            [cm.clone()],
        );
        v.accept_directory(&signed_directory(url).await, now).expect("directory");
        let bad = forged.heartbeat(&cm, &version, now).update;
        let err = v.open(&bad).expect_err("an update signed by a revoked key was accepted");
        assert!(matches!(err, VerifyError::Signature(SignatureError::UnknownKey(_))), "{url}: {err}");
        v.open(&honest.heartbeat(&cm, &version, now).update).expect("the current key verifies");
    }
    // And the running clients: each proxy injects an update signed by the
    // revoked key; every client rejects it and leaves that proxy.
    let bad = forged.heartbeat(&cm, &version, altocast_client::now_ms()).update;
    for f in &followers {
        assert!(f.proxy.inject(bad.clone()) >= 1, "{}: no open subscription to inject into", f.node);
    }
    for f in &followers {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let refused = f.client.incidents_at(&f.proxy.url);
            if refused.iter().any(|i| i.starts_with("rejected") && i.contains(&first[0])) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: the revoked key's update was not rejected: {refused:?}",
                f.node
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for f in followers {
        f.client.stop().await;
        f.proxy.stop().await;
    }
    r2.stop().await;
    r1.stop().await;
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_directory_is_left_at_its_expiry_and_a_tampered_key_chain_is_refused() {
    let o = TestOrigin::start_with(OriginOptions { ttl_secs: 2, heartbeat_secs: 1, ..Default::default() }, None).await;
    let m = Maps::synthetic(8);
    o.publish(NM, &m.network_map_json()).await.expect("nm");
    o.publish(CM, &m.cost_map_json()).await.expect("cm");
    let honest = TestRproxy::start_trusting_root(&[&o.url], &o.root_pub_path(), &[]).await;
    let frozen = EvilProxy::start(&o.url, EvilMode::FreezeDirectory).await;
    let tampered = EvilProxy::start(&o.url, EvilMode::TamperDirectory).await;

    // Tampering with the key chain (or anything signed) is refused at once.
    let mut cfg = altocast_client::Config::new(vec![tampered.url.clone(), honest.url.clone()], o.root_trusted());
    cfg.directory_refresh = Duration::from_millis(500);
    let c1 = TestClient::start_cfg(cfg);
    c1.wait_seq(CM, 1, T).await;
    let refused = c1.incidents_at(&tampered.url);
    assert!(refused.iter().any(|i| i.starts_with("rejected")), "a tampered directory was accepted: {refused:?}");

    // The frozen proxy hands out its first directory for ever. A resource
    // added since is hidden until that directory expires; then the client
    // leaves the proxy, and gets the new resource from the honest RProxy.
    let _ = directory(&frozen.url).await; // freeze it now
    let mut cfg = altocast_client::Config::new(vec![frozen.url.clone(), honest.url.clone()], o.root_trusted());
    cfg.directory_refresh = Duration::from_millis(500);
    let c2 = TestClient::start_cfg(cfg);
    c2.wait_seq(CM, 1, T).await;
    o.publish("cm-new", &m.cost_map_json()).await.expect("a new resource");
    let started = tokio::time::Instant::now();
    c2.wait_seq("cm-new", 1, T).await;
    let incidents = c2.incidents_at(&frozen.url);
    assert!(
        incidents.iter().any(|i| i.contains("expired") && i.contains("directory")),
        "the frozen directory was not detected as expired: {incidents:?}"
    );
    // Within its TTL (2 s) plus the 5 s clock skew allowance and a refresh.
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());

    // A replayed older directory changes nothing for a verifier that saw a
    // newer one (it keeps the newer one), also across restarts: the CLI with
    // a state directory, first at the honest origin, then at the frozen proxy.
    let old = signed_directory(&frozen.url).await;
    let mut v = Verifier::new(o.root_trusted(), Limits::default(), []);
    let newer = v.accept_directory(&signed_directory(&o.url).await, altocast_client::now_ms()).expect("current");
    let kept = v.restore_directory(&old).expect("an older directory is ignored");
    assert_eq!((kept.seq, v.directory().map(|p| p.seq)), (newer.seq, Some(newer.seq)));
    assert!(pb::Directory::decode(old.body.clone()).expect("old").seq < newer.seq);
    assert!(v.directory_stale(altocast_client::now_ms()).is_none());
    let state = tempfile::tempdir().expect("state dir");
    let cli = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_altocast-under-test"))
            .args(["directory", "--endpoint", url, "--trust-root"])
            .arg(o.root_pub_path())
            .arg("--state-dir")
            .arg(state.path())
            .output()
            .expect("run altocast")
    };
    let fresh = cli(&o.url);
    assert!(fresh.status.success(), "{}", String::from_utf8_lossy(&fresh.stderr));
    let replayed = cli(&frozen.url);
    let out = String::from_utf8_lossy(&replayed.stdout);
    assert!(replayed.status.success(), "{}", String::from_utf8_lossy(&replayed.stderr));
    assert!(
        out.contains(&format!("directory seq {}", newer.seq)) && out.contains("cm-new"),
        "the replayed directory was used: {out}"
    );
    c1.stop().await;
    c2.stop().await;
    frozen.stop().await;
    tampered.stop().await;
    honest.stop().await;
    o.stop().await;
}

/// Two origins with their own roots, each publishing a network map.
async fn two_origins() -> (TestOrigin, TestOrigin) {
    let (a, b) = (TestOrigin::start().await, TestOrigin::start().await);
    let m = Maps::synthetic(4);
    for o in [&a, &b] {
        o.publish(NM, &m.network_map_json()).await.expect("nm");
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_use_pinning_refuses_another_origins_root_naming_both() {
    let (a, b) = two_origins().await;
    let dir = tempfile::tempdir().expect("dir");
    let pin = dir.path().join("pin.pem");
    let run = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_altocast-under-test"))
            .args(["directory", "--endpoint", url, "--trust-on-first-use"])
            .arg(&pin)
            .output()
            .expect("run altocast")
    };
    let root = |o: &TestOrigin| {
        altocast_proto::PublicKey::from_spki_pem(&std::fs::read_to_string(o.root_pub_path()).expect("root"))
            .expect("pem")
            .id()
            .to_string()
    };
    let first = run(&a.url);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stderr).contains("pinned root"));
    assert_eq!(std::fs::read_to_string(&pin).expect("pin"), std::fs::read_to_string(a.root_pub_path()).expect("a"));
    // The same origin again: fine, silently.
    let again = run(&a.url);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    // Another origin: refused, naming the pinned root and the one presented.
    let other = run(&b.url);
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success(), "another origin's root was accepted");
    assert!(err.contains(&root(&a)) && err.contains(&root(&b)), "{err}");
    a.stop().await;
    b.stop().await;
}

/// What a client keeps across restarts, as PROTOCOL.md §9.5–§9.6 say, with
/// the real binaries: a lost pin is taken back from the saved directory (not
/// from whoever answers first); a saved directory of another origin makes
/// every command, `watch` and the RProxy included, refuse to start naming the
/// file; and `watch` moves its pin forward when the root rotates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_follow_the_saved_directory_and_the_root_and_an_untrusted_state_refuses_to_start() {
    let (a, b) = two_origins().await;
    let dir = tempfile::tempdir().expect("dir");
    let (pin, state) = (dir.path().join("pin.pem"), dir.path().join("state"));
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_altocast-under-test"))
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .expect("run altocast")
    };
    let pem = |p: &std::path::Path| std::fs::read_to_string(p).expect("read key");
    let id = |p: &std::path::Path| altocast_proto::PublicKey::from_spki_pem(&pem(p)).expect("pem").id().to_string();
    let pin_s = pin.to_str().expect("utf-8 path");

    // First use: a's root pinned, a's directory saved.
    let first = cli(&["directory", "--endpoint", &a.url, "--trust-on-first-use", pin_s]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    // The pin file is lost, the state directory is not: the root comes from
    // the saved directory, so b (answering first now) is refused naming both.
    std::fs::remove_file(&pin).expect("remove pin");
    let other = cli(&["directory", "--endpoint", &b.url, "--trust-on-first-use", pin_s]);
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success(), "b was trusted after the pin was lost: {err}");
    assert!(err.contains(&id(&a.root_pub_path())) && err.contains(&id(&b.root_pub_path())), "{err}");
    assert_eq!(pem(&pin), pem(&a.root_pub_path()), "the pin was not taken from the saved directory");

    // a's saved directory under b's root: not trusted, so nothing starts.
    let b_root = b.root_pub_path();
    let b_root_s = b_root.to_str().expect("utf-8 path");
    for args in [
        &["directory", "--endpoint", &b.url, "--trust-root", b_root_s][..],
        &["watch", "--endpoint", &b.url, "--trust-root", b_root_s, "--count", "1"][..],
    ] {
        let out = cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} started on an untrusted state directory: {err}", args[0]);
        assert!(err.contains("directory.pb") && err.contains("remove the file"), "{}: {err}", args[0]);
    }
    let log = dir.path().join("rproxy.log");
    let port = altocast_tests::process::free_port();
    let mut rproxy = altocast_tests::process::Process::spawn(
        env!("CARGO_BIN_EXE_altocast-rproxy-under-test"),
        &[
            "--upstream".into(),
            b.url.clone(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--trust-root".into(),
            b_root_s.into(),
            "--state-dir".into(),
            state.to_str().expect("utf-8 path").into(),
        ],
        &log,
    );
    let deadline = tokio::time::Instant::now() + T;
    while rproxy.running() {
        assert!(tokio::time::Instant::now() < deadline, "the RProxy runs on an untrusted state directory");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rproxy.log_tail().contains("remove the file"), "{}", rproxy.log_tail());

    // `watch` with the pin follows a root rotation and rewrites the pin.
    let mut watch = altocast_tests::process::Process::spawn(
        env!("CARGO_BIN_EXE_altocast-under-test"),
        &[
            "watch".into(),
            "--endpoint".into(),
            a.url.clone(),
            "--trust-on-first-use".into(),
            pin_s.into(),
            "--state-dir".into(),
            state.to_str().expect("utf-8 path").into(),
        ],
        &dir.path().join("watch.log"),
    );
    let data = a.data_path().to_path_buf();
    keyring::change(&data, &keyring::root_key_path(&data), &Change::RotateRoot, 30).expect("keys rotate-root");
    let deadline = tokio::time::Instant::now() + T;
    while pem(&pin) != pem(&a.root_pub_path()) {
        assert!(watch.running(), "watch exited: {}", watch.log_tail());
        assert!(tokio::time::Instant::now() < deadline, "watch did not move the pin: {}", watch.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.kill9();
    a.stop().await;
    b.stop().await;
}

/// The directory is pushed: first on every Subscribe stream, then on the open
/// stream when it changes, through an RProxy faster than the RProxy re-reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_directory_is_pushed_through_the_tree_on_open_streams() {
    let o = TestOrigin::start().await;
    let m = Maps::synthetic(4);
    o.publish(NM, &m.network_map_json()).await.expect("nm");
    let r = TestRproxy::start_trusting_root(&[&o.url], &o.root_pub_path(), &[]).await;
    until_serving(&r.url, &o.root_trusted()).await;
    let mut c = altocast_client::connect::connect(&r.url, Duration::from_secs(2)).await.expect("connect");
    let req =
        pb::SubscribeRequest { resources: vec![pb::ResumePosition { resource_id: NM.into(), ..Default::default() }] };
    let mut stream = c.subscribe(req).await.expect("subscribe").into_inner();
    let first = stream.message().await.expect("frame").expect("frame");
    let Some(pb::subscribe_response::Item::Directory(d)) = first.item else { panic!("first frame: {first:?}") };
    let seq = pb::Directory::decode(d.body).expect("directory").seq;
    let data = o.data_path().to_path_buf();
    keyring::change(&data, &keyring::root_key_path(&data), &Change::Add, 30).expect("keys add");
    let pushed = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            let f = stream.message().await.expect("frame").expect("open");
            if let Some(pb::subscribe_response::Item::Directory(d)) = f.item {
                let d = pb::Directory::decode(d.body).expect("directory");
                if d.seq > seq {
                    return d;
                }
            }
        }
    })
    .await
    .expect("no newer directory pushed within 4 s (the RProxy re-reads every 5 s)");
    assert_eq!(pushed.keys.len(), 2, "the pushed directory carries the new key");
    r.stop().await;
    o.stop().await;
}

/// The pin file is written through a new temporary file, never through one
/// already there: a symbolic link planted at the temporary file's name (it
/// was `.<name>.tmp-<pid>`) does not redirect the write.
#[cfg(unix)]
#[test]
fn a_link_planted_where_the_pin_is_written_is_not_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").expect("victim");
    let pin = dir.path().join("pin.pem");
    let planted = dir.path().join(format!(".pin.pem.tmp-{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &planted).expect("symlink");
    for n in 0..4 {
        let planted = dir.path().join(format!(".pin.pem.tmp-{}-{n}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).expect("symlink");
    }
    let root = altocast_proto::OriginKey::generate().expect("key").public();
    let written = altocast_client::state::write_pin(&pin, &root);
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "precious", "the write followed the link");
    // Refused (the name is taken) or written elsewhere; either way the pin is the root or absent.
    if written.is_ok() {
        let back = altocast_client::state::read_pin(&pin).expect("readable").expect("written");
        assert_eq!(back.id(), root.id());
    }
}

/// A `Distribution` endpoint that accepts every call and never answers it
/// (while its HTTP/2 connection stays healthy).
#[derive(Clone)]
struct Hang;

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Hang {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Pending<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        std::future::pending()
    }
}

impl tonic::server::NamedService for Hang {
    const NAME: &'static str = "altocast.v1.Distribution";
}

/// The first use's `GetDirectory` is bounded like every other: an endpoint
/// that never answers it makes `altocast` fail naming it, and pins nothing
/// (it waited for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_use_at_an_endpoint_that_never_answers_ends_and_pins_nothing() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = tokio_util::sync::CancellationToken::new();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder().add_service(Hang).serve_with_incoming_shutdown(incoming, {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    });
    tokio::spawn(server);
    let dir = tempfile::tempdir().expect("tempdir");
    let pin = dir.path().join("pin.pem");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_altocast-under-test"))
        .args(["directory", "--endpoint", &url, "--trust-on-first-use"])
        .arg(&pin)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run altocast");
    let mut status = None;
    for _ in 0..600 {
        status = child.try_wait().expect("wait");
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("altocast still waiting for the directory after 60 s");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).expect("read");
    assert!(!status.success(), "{err}");
    assert!(err.contains("no answer to GetDirectory within 10 s"), "{err}");
    assert!(!pin.exists(), "nothing pinned");
    stop.cancel();
}

/// A server that accepts `Subscribe` and never answers it (nor
/// `GetDirectory`) is left: the call is bounded, as no staleness clock runs
/// before the stream is open (it held the client on what it had for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_that_is_never_answered_is_left() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = tokio_util::sync::CancellationToken::new();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let until = stop.clone();
    let server =
        tonic::transport::Server::builder().add_service(Hang).serve_with_incoming_shutdown(incoming, async move {
            until.cancelled().await;
        });
    tokio::spawn(server);
    let root = OriginKey::generate().expect("key").public();
    let mut cfg = altocast_client::Config::new(vec![url.clone()], altocast_proto::TrustedKeys::root(root));
    // Configured resources: a session goes on to Subscribe without a directory.
    cfg.resources = vec![altocast_proto::ResourceId::new(CM).expect("id")];
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let sub = altocast_client::Subscription::start(cfg, stop.clone(), Some(tx)).expect("started");
    let left = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match rx.recv().await {
                Some(altocast_client::Event::Failover { reason, .. }) => return reason,
                Some(_) => {}
                None => panic!("the subscription ended"),
            }
        }
    })
    .await;
    let reason = left.expect("left the endpoint within 60 s");
    assert_eq!(reason, "no answer to Subscribe within 10 s");
    drop(sub);
    stop.cancel();
}
