//! # altocast-rproxy
//!
//! The redistribution proxy. Its core is the [`hub`]: the fan-out engine that
//! caches signed updates per resource and streams them to many bounded
//! subscribers; the origin (`altocast-server`) serves through the same hub.
//! [`service`] exposes the hub as the gRPC `Distribution` service, and
//! [`upstream`] feeds it from verified upstream subscriptions (the origin or
//! another RProxy) with failover. Nothing here is trusted: every update is
//! verified before it is cached or forwarded. [`alto`] serves the verified
//! maps over the classic RFC 7285 HTTP/JSON interface.

pub mod alto;
pub mod config;
pub mod conn;
pub mod hub;
pub mod metrics;
pub mod service;
pub mod tls;
pub mod upstream;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::info;

pub use config::Config;

/// Runs an RProxy on `listener` until `shutdown` is cancelled: upstream
/// subscription → verified hub → gRPC `Distribution`.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let keys = config.validate()?;
    let hub = hub::Hub::new(config.hub(), shutdown.clone());
    let directory = Arc::new(ArcSwapOption::empty());
    let tasks = TaskTracker::new();
    let mut client = altocast_client::Config::new(config.upstreams.clone(), keys.clone());
    client.quarantine = Duration::from_secs(config.quarantine_secs);
    client.tls = config.upstream_tls()?;
    // Resources the origin adds later reach this RProxy's subscribers within this.
    client.directory_refresh = Duration::from_secs(5);
    client.state_dir = config.state_dir.clone();
    let pull = upstream::PullLimits {
        max_in_flight: config.max_pulls as usize,
        negative_ttl: Duration::from_secs(config.pull_negative_secs),
        ..Default::default()
    };
    let refresher = upstream::Refresher::new(hub.clone(), config.upstreams.clone(), keys, client.tls.clone(), pull);
    let view = upstream::spawn(client, hub.clone(), refresher.clone(), directory.clone(), shutdown.clone(), &tasks)
        .context("--state-dir")?;
    if let Some(addr) = config.alto_http {
        let http = TcpListener::bind(addr).await.with_context(|| format!("binding --alto-http {addr}"))?;
        info!(%addr, "serving the RFC 7285 HTTP/JSON interface");
        tasks.spawn(alto::serve(view, http, config.alto.limits()?, shutdown.clone()));
    }
    let svc = service::DistributionService::new(hub.clone(), directory, Some(Arc::new(refresher)));
    let conns = config.grpc.limits();
    let limits = service::ServerLimits {
        tls: config.tls.server_config()?,
        ..service::ServerLimits::for_idle_timeout(conns.idle_timeout)
    };
    let router = service::router(svc, &limits).await?;
    info!(addr = %listener.local_addr().context("listener address")?, upstreams = ?config.upstreams, "rproxy serving");
    service::serve(router, listener, conns, shutdown.clone()).await?;
    let grace = Duration::from_secs(config.grace_secs);
    let _ = tokio::time::timeout(grace, async {
        hub.closed().await;
        tasks.close();
        tasks.wait().await;
    })
    .await;
    Ok(())
}

/// Installs the Prometheus exporter on `addr`.
pub fn install_metrics(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("metrics listener on {addr}"))
}

/// Cancels `token` on SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        info!("shutdown signal; ending streams");
        token.cancel();
    });
}

/// Logging for the binaries: `tracing` filtered by `RUST_LOG`, else `default`.
pub fn init_tracing(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into()))
        .with_writer(std::io::stderr)
        .try_init();
}
