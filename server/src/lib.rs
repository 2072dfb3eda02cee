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
pub mod keys;
pub mod maps_dir;
pub mod origin;
pub mod publisher;
pub mod store;

use std::{sync::Arc, time::Duration};

use altocast_proto::{ResourceId, update::Signer};
use altocast_rproxy::{hub, service};
use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::info;

pub use config::ServeConfig;

/// Runs the origin on `listener` until `shutdown` is cancelled.
pub async fn run(cfg: ServeConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    cfg.validate()?;
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let key = keys::load_or_generate(&cfg.data_dir)?;
    let token = match &cfg.publish_token {
        Some(t) => t.clone(),
        None => keys::publish_token(&cfg.data_dir)?,
    };
    let store = store::Store::open(&cfg.data_dir.join("altocast.redb"))?;
    let hub = hub::Hub::new(
        hub::HubConfig { ring_size: cfg.history as usize, max_subscribers: cfg.max_subscribers, ..Default::default() },
        shutdown.clone(),
    );
    let directory = Arc::new(ArcSwapOption::empty());
    let signer = Signer::new(key, cfg.ttl_secs as i64 * 1000);
    let origin = origin::Origin::open(cfg.origin(), signer, store, hub.clone(), directory.clone())?;
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

    let svc = service::DistributionService::new(hub.clone(), directory, None);
    let router = service::router(svc, &service::ServerLimits::default())
        .await?
        .add_service(publisher::PublisherService::new(origin.clone(), &token).into_server(cfg.max_map_bytes));
    info!(
        addr = %listener.local_addr()?,
        key = %origin.public_key().id(),
        data_dir = %cfg.data_dir.display(),
        "origin serving"
    );
    service::serve(router, listener, shutdown.clone()).await?;
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
