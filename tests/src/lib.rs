//! Harnesses for end-to-end tests: [`TestOrigin`], [`TestRproxy`],
//! [`TestClient`] and [`EvilProxy`]. Each binds `127.0.0.1:0` before spawning,
//! so tests never sleep waiting for readiness, and everything stops by itself.

#![allow(missing_debug_implementations)]

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use altocast_client::{Config, Subscription, View};
use altocast_proto::{PublicKey, ResourceId, TrustedKeys, model::json, pb};
use altocast_server::workload::{Topology, Workload};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub mod dns;
pub mod evil;
pub mod http;
pub mod join;
pub mod model;
pub mod process;
pub mod tracker;
pub use evil::{EvilMode, EvilProxy};

/// The publish token every test origin uses.
pub const TOKEN: &str = "test-token-0123456789abcdef";

async fn bind() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    (l, url)
}

/// A real origin on loopback with its own data directory.
pub struct TestOrigin {
    /// gRPC URL.
    pub url: String,
    /// Data directory (kept across restarts).
    pub data_dir: Arc<tempfile::TempDir>,
    /// Path of the origin's public key.
    pub pub_key_path: PathBuf,
    /// How the harness reaches an `https://` origin.
    pub client_tls: Option<altocast_client::connect::ClientTls>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Settings for [`TestOrigin::start_with`].
#[derive(Clone, Debug)]
pub struct OriginOptions {
    /// Maps directory to watch.
    pub maps_dir: Option<PathBuf>,
    /// TTL seconds.
    pub ttl_secs: u64,
    /// Heartbeat seconds.
    pub heartbeat_secs: u64,
    /// Retained diffs.
    pub history: u64,
    /// Serve the RFC 7285 HTTP/JSON interface on this (already bound) listener.
    pub alto_http: Option<Arc<std::sync::Mutex<Option<std::net::TcpListener>>>>,
    /// Serve gRPC over TLS with these settings (the URL becomes `https://`),
    /// reached by the harness with `client_tls`.
    pub tls: Option<(altocast_rproxy::tls::TlsArgs, altocast_client::connect::ClientTls)>,
    /// `--max-subscription-resources`.
    pub max_subscription_resources: u64,
    /// Advertise the origin's own gRPC URL in its IRD (`--grpc-public-url`).
    pub advertise_grpc: bool,
}

impl Default for OriginOptions {
    fn default() -> Self {
        OriginOptions {
            maps_dir: None,
            ttl_secs: 60,
            heartbeat_secs: 20,
            history: 64,
            alto_http: None,
            tls: None,
            max_subscription_resources: 1024,
            advertise_grpc: false,
        }
    }
}

impl TestOrigin {
    /// An origin with no maps.
    pub async fn start() -> TestOrigin {
        Self::start_with(OriginOptions::default(), None).await
    }

    /// An origin with options, reusing `data_dir` if given (a restart).
    pub async fn start_with(opts: OriginOptions, data_dir: Option<Arc<tempfile::TempDir>>) -> TestOrigin {
        let (listener, url) = bind().await;
        Self::start_listener(opts, data_dir, listener, url).await
    }

    /// Restarts on a given port with an existing data dir.
    pub async fn start_on_port(opts: OriginOptions, data_dir: Arc<tempfile::TempDir>, port: u16) -> TestOrigin {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("rebind");
        Self::start_listener(opts, Some(data_dir), listener, format!("http://127.0.0.1:{port}")).await
    }

    async fn start_listener(
        opts: OriginOptions,
        data_dir: Option<Arc<tempfile::TempDir>>,
        listener: TcpListener,
        url: String,
    ) -> TestOrigin {
        let data_dir = data_dir.unwrap_or_else(|| Arc::new(tempfile::tempdir().expect("tempdir")));
        let (url, client_tls) = match &opts.tls {
            Some((_, client)) => (url.replacen("http://", "https://", 1), Some(client.clone())),
            None => (url, None),
        };
        let mut cfg = altocast_server::ServeConfig::defaults();
        cfg.data_dir = data_dir.path().to_path_buf();
        cfg.publish_token = Some(TOKEN.into());
        cfg.no_example = true;
        cfg.maps_dir = opts.maps_dir;
        cfg.ttl_secs = opts.ttl_secs;
        cfg.heartbeat_secs = opts.heartbeat_secs;
        cfg.history = opts.history;
        cfg.max_subscription_resources = opts.max_subscription_resources;
        cfg.poll_ms = 50;
        cfg.quiet_ms = 100;
        cfg.grace_secs = 2;
        if opts.advertise_grpc {
            cfg.alto.grpc_public_url = vec![url.clone()];
        }
        if let Some((server, _)) = opts.tls.clone() {
            cfg.tls = server;
        }
        let shutdown = CancellationToken::new();
        let http = opts.alto_http.and_then(|l| l.lock().expect("listener").take()).map(|l| {
            l.set_nonblocking(true).expect("nonblocking");
            TcpListener::from_std(l).expect("tokio listener")
        });
        let task = tokio::spawn(altocast_server::run_with_http(cfg, listener, http, shutdown.clone()));
        let pub_key_path = altocast_server::keys::pubkey_path(data_dir.path());
        // The key file appears during start-up; wait for the server to answer.
        let mut origin = TestOrigin { url, data_dir, pub_key_path, client_tls, shutdown, task };
        origin.wait_ready().await;
        origin
    }

    async fn wait_ready(&mut self) {
        for _ in 0..200 {
            if self.task.is_finished() {
                let r = (&mut self.task).await;
                panic!("origin at {} exited during start-up: {r:?}", self.url);
            }
            if let Ok(mut c) =
                altocast_client::connect::connect_tls(&self.url, Duration::from_secs(1), self.client_tls.as_ref()).await
                && c.get_directory(pb::GetDirectoryRequest {}).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("origin at {} did not come up", self.url);
    }

    /// The origin's public key.
    pub fn key(&self) -> PublicKey {
        PublicKey::from_spki_pem(&std::fs::read_to_string(&self.pub_key_path).expect("pub key")).expect("pem")
    }

    /// Trust set with the origin's key.
    /// The root key file clients and RProxies trust with `--trust-root`.
    pub fn root_pub_path(&self) -> PathBuf {
        altocast_server::keyring::root_pub_path(self.data_dir.path())
    }

    /// Trust in this origin's root (key rotations need nothing more).
    pub fn root_trusted(&self) -> TrustedKeys {
        let pem = std::fs::read_to_string(self.root_pub_path()).expect("root pub key");
        TrustedKeys::root(PublicKey::from_spki_pem(&pem).expect("pem"))
    }

    /// The data directory (keys, store).
    pub fn data_path(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Trust in this origin's first update key.
    pub fn trusted(&self) -> TrustedKeys {
        TrustedKeys::new([self.key()])
    }

    /// Publishes a JSON body with the right token.
    pub async fn publish(&self, id: &str, body: &str) -> Result<pb::PublishResponse, tonic::Status> {
        self.publish_with_token(id, body.as_bytes().to_vec(), Some(TOKEN)).await
    }

    /// Publishes with an arbitrary token (or none).
    pub async fn publish_with_token(
        &self,
        id: &str,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> Result<pb::PublishResponse, tonic::Status> {
        self.publish_request(
            pb::PublishRequest { resource_id: id.into(), json: body.into(), media_type: String::new(), more: vec![] },
            token,
        )
        .await
    }

    /// Sends a full `PublishRequest`.
    pub async fn publish_request(
        &self,
        req: pb::PublishRequest,
        token: Option<&str>,
    ) -> Result<pb::PublishResponse, tonic::Status> {
        match altocast_client::connect::publish(
            &self.url,
            token,
            req,
            Duration::from_secs(30),
            self.client_tls.as_ref(),
        )
        .await
        {
            Ok(r) => Ok(r),
            Err(altocast_client::connect::ConnectError::Status { status, .. }) => Err(status),
            Err(e) => panic!("publish: {e}"),
        }
    }

    /// Stops the origin (graceful) and waits for it.
    pub async fn stop(self) -> Arc<tempfile::TempDir> {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.data_dir
    }
}

/// A real RProxy on loopback.
pub struct TestRproxy {
    /// gRPC URL.
    pub url: String,
    /// Listening address.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestRproxy {
    /// An RProxy following `upstreams`, trusting the key at `key_path`.
    pub async fn start(upstreams: &[&str], key_path: &std::path::Path) -> TestRproxy {
        Self::start_on(upstreams, key_path, None).await
    }

    /// Like [`TestRproxy::start`], on a given address (to restart in place).
    pub async fn start_on(upstreams: &[&str], key_path: &std::path::Path, addr: Option<SocketAddr>) -> TestRproxy {
        Self::start_with_args(upstreams, key_path, addr, &[]).await
    }

    /// Like [`TestRproxy::start_on`], with more command-line flags.
    pub async fn start_with_args(
        upstreams: &[&str],
        key_path: &std::path::Path,
        addr: Option<SocketAddr>,
        extra: &[String],
    ) -> TestRproxy {
        Self::start_trusting(upstreams, ("--trust-key", key_path), addr, extra).await
    }

    /// An RProxy trusting the origin's root (`--trust-root root_path`).
    pub async fn start_trusting_root(upstreams: &[&str], root_path: &std::path::Path, extra: &[String]) -> TestRproxy {
        Self::start_trusting(upstreams, ("--trust-root", root_path), None, extra).await
    }

    async fn start_trusting(
        upstreams: &[&str],
        (trust_flag, trust_path): (&str, &std::path::Path),
        addr: Option<SocketAddr>,
        extra: &[String],
    ) -> TestRproxy {
        let listener = match addr {
            Some(a) => TcpListener::bind(a).await.expect("rebind"),
            None => TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        };
        let addr = listener.local_addr().expect("addr");
        let mut args = vec!["altocast-rproxy".to_owned()];
        for u in upstreams {
            args.extend(["--upstream".into(), (*u).to_owned()]);
        }
        args.extend([trust_flag.into(), trust_path.display().to_string(), "--quarantine-secs".into(), "2".into()]);
        args.extend(extra.iter().cloned());
        let cfg = <altocast_rproxy::Config as clap_parse::Parser>::parse_from(args);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(altocast_rproxy::run(cfg, listener, shutdown.clone()));
        TestRproxy { url: format!("http://{addr}"), addr, shutdown, task }
    }

    /// Stops it and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Re-export so tests can parse configs.
pub mod clap_parse {
    pub use clap::Parser;
}

/// A verifying subscriber that records what went wrong along the way.
pub struct TestClient {
    sub: Subscription,
    shutdown: CancellationToken,
    /// `(endpoint, what)` for every rejection, staleness and failover.
    pub incidents: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl TestClient {
    /// Subscribes to every resource at `endpoints` (in order).
    pub fn start(endpoints: &[&str], keys: TrustedKeys) -> TestClient {
        let mut cfg = Config::new(endpoints.iter().map(|s| (*s).to_owned()).collect(), keys);
        cfg.backoff_min = Duration::from_millis(20);
        cfg.backoff_max = Duration::from_millis(200);
        cfg.quarantine = Duration::from_secs(5);
        Self::start_cfg(cfg)
    }

    /// With a full config.
    pub fn start_cfg(cfg: Config) -> TestClient {
        let shutdown = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let sub = Subscription::start(cfg, shutdown.clone(), Some(tx)).expect("the saved directory restores");
        let incidents = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = incidents.clone();
        tokio::spawn(async move {
            let mut last_endpoint = String::new();
            while let Some(e) = rx.recv().await {
                let entry = match e {
                    altocast_client::Event::Connected { endpoint } => {
                        last_endpoint = endpoint;
                        continue;
                    }
                    altocast_client::Event::Rejected { endpoint, error } => (endpoint, format!("rejected: {error}")),
                    altocast_client::Event::Stale { resource_id, .. } => {
                        (last_endpoint.clone(), format!("stale: {resource_id}"))
                    }
                    altocast_client::Event::Failover { endpoint, reason } => (endpoint, format!("failover: {reason}")),
                    _ => continue,
                };
                log.lock().expect("lock").push(entry);
            }
        });
        TestClient { sub, shutdown, incidents }
    }

    /// Incidents recorded for `endpoint`.
    pub fn incidents_at(&self, endpoint: &str) -> Vec<String> {
        self.incidents.lock().expect("lock").iter().filter(|(e, _)| e == endpoint).map(|(_, w)| w.clone()).collect()
    }

    /// The view.
    pub fn view(&self) -> &View {
        self.sub.view()
    }

    /// Waits until `resource` is at `seq` (or later); panics after `timeout`.
    pub async fn wait_seq(&self, resource: &str, seq: u64, timeout: Duration) -> altocast_proto::Tag {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.view().changes();
        loop {
            let st = self.view().load();
            let cur = st
                .cost_maps
                .get(resource)
                .map(|c| (c.seq, c.tag))
                .or_else(|| st.network_maps.get(resource).map(|n| (n.seq, n.tag)));
            if let Some((s, t)) = cur
                && s >= seq
            {
                return t;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                let log = self.incidents.lock().map(|l| l.clone()).unwrap_or_default();
                panic!("{resource} did not reach seq {seq} in {timeout:?}; at {cur:?}; incidents {log:?}");
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), changes.recv()).await;
        }
    }

    /// Stops the client.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.sub.stop().await;
    }
}

/// A small deterministic workload and its JSON bodies.
pub struct Maps {
    /// The generator.
    pub workload: Workload,
}

impl Maps {
    /// A synthetic backbone of `nodes` PoPs.
    pub fn synthetic(nodes: usize) -> Maps {
        Maps { workload: Workload::new(Topology::synthetic(nodes, 7), 7) }
    }

    /// Current network map body.
    pub fn network_map_json(&self) -> String {
        json::network_map_json(&self.workload.network_map_id, &self.workload.network_map())
    }

    /// Current cost map body.
    pub fn cost_map_json(&self) -> String {
        let nm = self.workload.network_map();
        json::cost_map_json(&self.workload.cost_map(&nm))
    }

    /// Applies the next event.
    pub fn step(&mut self) -> altocast_server::workload::Event {
        self.workload.step()
    }
}

/// Network map resource id used by [`Maps`].
pub const NM: &str = "default-network-map";
/// Cost map resource id used by tests.
pub const CM: &str = "default-cost-map";

/// Resource id helper.
pub fn rid(s: &str) -> ResourceId {
    ResourceId::new(s).expect("resource id")
}
