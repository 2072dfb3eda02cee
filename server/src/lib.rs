//! # altocast-server
//!
//! The origin: where ALTO information enters the system and the only holder of
//! the signing key. It ingests RFC 7285 JSON maps from a watched directory
//! ([`maps_dir`]) and from the authenticated `Publisher` RPC ([`publisher`]),
//! validates, versions, diffs, signs and persists them ([`origin`], [`store`]),
//! and serves subscribers through the same hub the RProxies use — it is the
//! root of the fan-out tree. Key types: [`origin::Origin`], [`store::Store`],
//! [`config::ServeConfig`].

pub mod config;
pub mod demo;
pub mod example;
pub mod generate;
pub mod keyring;
pub mod keys;
pub mod maps_dir;
pub mod origin;
pub mod publisher;
pub mod store;
pub mod workload;

use std::{sync::Arc, time::Duration};

use altocast_proto::{ResourceId, wire::update::Signer};
use altocast_rproxy::{hub, service};
use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::info;

pub use config::ServeConfig;

/// Runs the origin on `listener` until `shutdown` is cancelled (and the RFC
/// 7285 HTTP/JSON interface on `--alto-http`, when set).
pub async fn run(cfg: ServeConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    // `run_with_http` validates the configuration (the binary already did,
    // before binding anything).
    let http = match cfg.alto_http {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("binding --alto-http {addr}"))?),
        None => None,
    };
    run_with_http(cfg, listener, http, shutdown).await
}

/// [`run`] with the HTTP interface's listener already bound (tests bind
/// `127.0.0.1:0` first); `cfg.alto_http` is not used.
pub async fn run_with_http(
    cfg: ServeConfig,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    cfg.validate()?;
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let ring = keyring::Keyring::load_or_init(&cfg.data_dir)?;
    let root = ring.list.root.clone();
    let token = match &cfg.publish_token {
        Some(t) => t.clone(),
        None => keys::publish_token(&cfg.data_dir)?,
    };
    let store = store::Store::open(&cfg.data_dir.join("altocast.redb"))?;
    let hub = hub::Hub::new(
        hub::HubConfig {
            ring_size: cfg.history as usize,
            max_subscribers: cfg.max_subscribers,
            max_resources_per_subscription: cfg.max_subscription_resources as usize,
            ..Default::default()
        },
        shutdown.clone(),
    );
    let directory = Arc::new(ArcSwapOption::empty());
    let signer = Signer::with_keys(ring.list.origin_id.clone(), ring.signing.clone(), cfg.ttl_secs as i64 * 1000)
        .context("no signing key")?;
    let mut ocfg = cfg.origin();
    ocfg.key_chain = Some(ring.chain.clone());
    ocfg.history_keys = keyring::own_public_keys(&cfg.data_dir);
    ocfg.directory_seq_file = Some(cfg.data_dir.join("directory-seq"));
    let origin = origin::Origin::open(ocfg, signer, store, hub.clone(), directory.clone())?;
    let tasks = TaskTracker::new();

    if let Some(dir) = &cfg.maps_dir {
        let o = origin.clone();
        let (d, max) = (dir.clone(), cfg.max_map_bytes);
        let failed = tokio::task::spawn_blocking(move || maps_dir::ingest_all(&o, &d, max)).await?;
        if failed > 0 {
            tracing::warn!(failed, dir = %dir.display(), "some map files were rejected; serving the rest");
        }
        let wcfg = maps_dir::WatchConfig {
            dir: dir.clone(),
            poll: Duration::from_millis(cfg.poll_ms),
            quiet: Duration::from_millis(cfg.quiet_ms),
            max_delay: Duration::from_millis(cfg.max_delay_ms),
        };
        tasks.spawn(maps_dir::watch(origin.clone(), wcfg, cfg.max_map_bytes, shutdown.clone()));
    } else if origin.resources().is_empty() && !cfg.no_example {
        let o = origin.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            o.ingest(&ResourceId::new(example::NETWORK_MAP_ID)?, example::NETWORK_MAP.as_bytes())?;
            o.ingest(&ResourceId::new(example::COST_MAP_ID)?, example::COST_MAP.as_bytes())?;
            Ok(())
        })
        .await??;
        info!("no maps yet: published the built-in RFC 7285 example maps");
    }

    tasks.spawn(origin::heartbeats(origin.clone(), Duration::from_secs(cfg.heartbeat_secs), shutdown.clone()));
    tasks.spawn(keyring::watch(origin.clone(), cfg.data_dir.clone(), ring.modified, shutdown.clone()));

    let svc = service::DistributionService::new(hub.clone(), directory, None);
    let conns = cfg.grpc.limits();
    let limits = service::ServerLimits {
        tls: cfg.tls.server_config()?,
        ..service::ServerLimits::for_idle_timeout(conns.idle_timeout)
    };
    let (router, health) = service::router_with_health(svc, &limits).await?;
    tasks.spawn(publisher::health(origin.clone(), health, shutdown.clone()));
    let router =
        router.add_service(publisher::PublisherService::new(origin.clone(), &token).into_server(cfg.max_map_bytes));
    if let Some(http) = http {
        let addr = http.local_addr()?;
        // Served from what a verifying subscription to this very origin holds,
        // exactly as an RProxy serves it: the HTTP answers pass the same checks.
        let mut own = listener.local_addr()?;
        if own.ip().is_unspecified() {
            own.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let keys = altocast_proto::TrustedKeys::root(root.clone());
        let mut follow = altocast_client::Config::new(vec![format!("http://{own}")], keys);
        // Loopback and a small signed message: pick up new resources within a second.
        follow.directory_refresh = Duration::from_secs(1);
        let sub = altocast_client::Subscription::start(follow, shutdown.clone(), None)?;
        info!(%addr, "serving the RFC 7285 HTTP/JSON interface");
        let stop = shutdown.clone();
        let limits = cfg.alto.limits()?;
        tasks.spawn(async move {
            let served = altocast_rproxy::alto::serve(sub.view().clone(), http, limits, stop).await;
            sub.stop().await;
            served
        });
    }
    info!(
        addr = %listener.local_addr()?,
        key = %origin.public_key().id(),
        data_dir = %cfg.data_dir.display(),
        "origin serving"
    );
    service::serve(router, listener, conns, shutdown.clone()).await?;
    let _ = tokio::time::timeout(Duration::from_secs(cfg.grace_secs), async {
        hub.closed().await;
        tasks.close();
        tasks.wait().await;
    })
    .await;
    // Finish queued checkpoints; the store closes when the origin drops here.
    let o = origin.clone();
    tokio::task::spawn_blocking(move || o.close()).await?;
    drop(origin);
    Ok(())
}
