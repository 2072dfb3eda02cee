//! The RProxy's upstream side: a verified client subscription (see
//! `altocast_client::Subscription`) whose every verified update is published,
//! as the exact signed bytes received, into the local hub. Also refreshes the
//! hub's cached snapshots from upstream and pulls through unknown resources.

use std::{sync::Arc, time::Duration};

use altocast_client::{
    Config as ClientConfig, Event, Subscription,
    connect::{self, DistributionClient},
};
use altocast_proto::{Limits, ResourceId, TrustedKeys, Verifier, pb};
use arc_swap::ArcSwapOption;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::Status;
use tracing::{debug, info, warn};

use crate::{
    hub::{Entry, Hub},
    metrics as m,
    service::PullThrough,
};

/// Feeds `hub` from `cfg.endpoints` until `shutdown`, with `refresher`
/// keeping its snapshots fresh. Returns the verified view of the maps (what
/// the RFC 7285 HTTP interface serves).
pub fn spawn(
    cfg: ClientConfig,
    hub: Arc<Hub>,
    refresher: Refresher,
    directory: Arc<ArcSwapOption<pb::SignedDirectory>>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Result<altocast_client::View, altocast_client::state::StateError> {
    let (tx, mut rx) = mpsc::channel(256);
    let sub = Subscription::start(cfg.clone(), shutdown.clone(), Some(tx))?;
    let view = sub.view().clone();
    let feed_hub = hub;
    let feed_refresher = refresher.clone();
    tasks.spawn(async move {
        while let Some(event) = rx.recv().await {
            if let Event::Directory { directory: d, .. } = &event {
                // A resource the upstream did not know may exist now.
                if let Event::Directory { signed, .. } = &event {
                    feed_refresher.trust_directory(signed);
                }
                feed_refresher.directory_seen(d);
            }
            handle(&feed_hub, &directory, event);
        }
        sub.stop().await;
    });
    tasks.spawn(async move { refresher.run(shutdown).await });
    Ok(view)
}

fn handle(hub: &Hub, directory: &ArcSwapOption<pb::SignedDirectory>, event: Event) {
    match event {
        Event::Directory { signed, directory: dir, .. } => {
            for r in &dir.resources {
                if let Ok(id) = ResourceId::new(&r.resource_id) {
                    hub.declare(&id);
                }
            }
            hub.publish_directory(&signed);
            directory.store(Some(Arc::new(signed)));
        }
        Event::Verified { header, signed, chunks, applied, .. } => {
            let lag = (altocast_client::now_ms() - applied.issued_at_ms).max(0) as f64 / 1e3;
            metrics::histogram!(m::UPSTREAM_LAG).record(lag);
            let Some(entry) = Entry::new(&header, signed, chunks) else { return };
            if let Err(e) = hub.publish(Arc::new(entry)) {
                // Cannot happen for a verified chain; the hub keeps serving what it has.
                warn!(error = %e, "verified update did not fit the cache");
            }
        }
        Event::Rejected { endpoint, error } => {
            metrics::counter!(m::VERIFY_FAILURES, "check" => error.check().as_str()).increment(1);
            warn!(%endpoint, %error, "upstream sent an update that failed verification");
        }
        Event::Connected { endpoint } => {
            metrics::gauge!(m::UPSTREAM_CONNECTED).set(1.0);
            info!(%endpoint, "upstream connected");
        }
        Event::Failover { endpoint, reason } => {
            metrics::gauge!(m::UPSTREAM_CONNECTED).set(0.0);
            metrics::counter!(m::UPSTREAM_FAILOVERS).increment(1);
            info!(%endpoint, %reason, "left upstream");
        }
        Event::Stale { resource_id, .. } => warn!(resource = %resource_id, "upstream data went stale"),
    }
}

/// Bounds of pull-through (`Fetch` of a resource the hub does not hold).
#[derive(Debug, Clone, Copy)]
pub struct PullLimits {
    /// Pulls in flight at once; more are refused (RESOURCE_EXHAUSTED).
    pub max_in_flight: usize,
    /// How long an upstream's "unknown resource" is remembered and answered
    /// from memory.
    pub negative_ttl: Duration,
    /// Most resources remembered as unknown.
    pub max_negative: usize,
}

impl Default for PullLimits {
    fn default() -> Self {
        PullLimits { max_in_flight: 16, negative_ttl: Duration::from_secs(10), max_negative: 10_000 }
    }
}

/// Pulls fresher snapshots when the hub's cached one falls a ring behind, and
/// unknown resources on demand: over one upstream connection, shared and kept
/// (not one per request), at most `max_in_flight` at once, and an upstream's
/// "unknown" remembered for `negative_ttl` so that a stranger asking for
/// made-up names costs the upstream nothing.
#[derive(Clone, Debug)]
pub struct Refresher {
    hub: Arc<Hub>,
    endpoints: Vec<String>,
    /// Holds no resource: the trust (root reached, key list, origin) of the
    /// directories the subscription accepted, for pulled updates.
    trust: Arc<std::sync::Mutex<Verifier>>,
    tls: Option<connect::ClientTls>,
    pull: PullLimits,
    conn: Arc<tokio::sync::Mutex<Option<(String, DistributionClient)>>>,
    in_flight: Arc<tokio::sync::Semaphore>,
    unknown: Arc<std::sync::Mutex<std::collections::HashMap<ResourceId, tokio::time::Instant>>>,
}

impl Refresher {
    /// A refresher feeding `hub` from `endpoints` (over TLS with `tls` for
    /// `https://` ones).
    pub fn new(
        hub: Arc<Hub>,
        endpoints: Vec<String>,
        keys: TrustedKeys,
        tls: Option<connect::ClientTls>,
        pull: PullLimits,
    ) -> Self {
        Refresher {
            hub,
            endpoints,
            trust: Arc::new(std::sync::Mutex::new(Verifier::accepting_all(keys, Limits::default()))),
            tls,
            pull,
            conn: Default::default(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(pull.max_in_flight)),
            unknown: Default::default(),
        }
    }

    async fn run(&self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.hub.snapshot_wanted() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
            for id in self.hub.stale_snapshots() {
                if let Err(e) = self.fetch(&id).await {
                    debug!(resource = %id, error = %e, "snapshot refresh failed");
                }
            }
        }
    }

    /// The shared upstream connection, made on first use and after a failure.
    async fn client(&self) -> Result<(String, DistributionClient), Status> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        for url in &self.endpoints {
            if let Ok(c) = connect::connect_tls(url, Duration::from_secs(3), self.tls.as_ref()).await {
                *conn = Some((url.clone(), c.clone()));
                return Ok((url.clone(), c));
            }
        }
        Err(Status::unavailable("no upstream reachable"))
    }

    /// Fetches `id` and publishes what fits into the hub. A snapshot replaces
    /// the cached one only if its content hashes to its signed tag and the hub's
    /// verified chain continues from that exact version.
    async fn fetch(&self, id: &ResourceId) -> Result<(), Status> {
        let (url, mut client) = self.client().await?;
        let resp = match client.fetch(pb::FetchRequest { resource_id: id.to_string() }).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                if status.code() != tonic::Code::NotFound {
                    // A transport failure: connect afresh next time.
                    *self.conn.lock().await = None;
                }
                return Err(status);
            }
        };
        let base = self.trust.lock().unwrap_or_else(|e| e.into_inner()).clone();
        apply_fetched(&self.hub, &base, id, resp).map_err(|e| Status::data_loss(format!("{url}: {e}")))
    }

    /// Takes the trust of a directory the subscription accepted (its keys then
    /// check pulled updates).
    pub fn trust_directory(&self, signed: &pb::SignedDirectory) {
        let mut t = self.trust.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = t.accept_directory(signed, altocast_client::now_ms()) {
            debug!(error = %e, "directory not taken for pull-through");
        }
    }

    /// Forgets every remembered "unknown" answer for a resource that `dir`
    /// lists (the origin added it since).
    pub fn directory_seen(&self, dir: &pb::Directory) {
        let mut unknown = self.unknown.lock().unwrap_or_else(|e| e.into_inner());
        if !unknown.is_empty() {
            unknown.retain(|id, _| !dir.resources.iter().any(|r| r.resource_id == id.as_str()));
        }
    }

    /// Whether the upstream recently said it does not know `id`.
    fn known_unknown(&self, id: &ResourceId) -> bool {
        let mut unknown = self.unknown.lock().unwrap_or_else(|e| e.into_inner());
        match unknown.get(id) {
            Some(at) if at.elapsed() < self.pull.negative_ttl => true,
            Some(_) => {
                unknown.remove(id);
                false
            }
            None => false,
        }
    }

    fn remember_unknown(&self, id: &ResourceId) {
        let mut unknown = self.unknown.lock().unwrap_or_else(|e| e.into_inner());
        if unknown.len() >= self.pull.max_negative {
            let ttl = self.pull.negative_ttl;
            unknown.retain(|_, at| at.elapsed() < ttl);
            if unknown.len() >= self.pull.max_negative {
                // Still full of fresh entries: forget them all rather than grow.
                unknown.clear();
            }
        }
        unknown.insert(id.clone(), tokio::time::Instant::now());
    }
}

fn pull_refused(reason: &'static str) {
    metrics::counter!("altocast_rproxy_pull_refused_total", "reason" => reason).increment(1);
}

/// Puts what an upstream's `Fetch` answered for `id` into `hub`: every update
/// must be signed by a trusted key and be for `id`; a snapshot's content must
/// hash to its signed tag. For a resource the hub follows, only a fresher
/// snapshot of a version its verified chain holds is taken (new versions come
/// through the verifying subscription, which checks their dependencies); a
/// resource it does not have yet (pull-through) is taken whole.
pub fn apply_fetched(
    hub: &Hub,
    base: &Verifier,
    id: &ResourceId,
    resp: pb::FetchResponse,
) -> Result<(), altocast_proto::VerifyError> {
    let verifier = base;
    let followed = hub.status().iter().any(|s| s.resource_id == *id && s.seq > 0);
    let mut chunks = resp.chunks;
    for (i, signed) in resp.updates.into_iter().enumerate() {
        let opened = verifier.open(&signed)?;
        if opened.resource_id != *id {
            return Err(altocast_proto::VerifyError::UnexpectedResource(opened.resource_id.to_string()));
        }
        let chunks = if i == 0 { std::mem::take(&mut chunks) } else { Vec::new() };
        if opened.chunks_expected().is_some() || matches!(opened.update.payload, Some(pb::update::Payload::Snapshot(_)))
        {
            Verifier::check_snapshot_content(&opened, &chunks)?;
        }
        if let Some(entry) = Entry::new(&opened.update, signed, chunks) {
            // Entries the hub cannot take are refused by it; that is fine here.
            let _ = if followed { hub.refresh_snapshot(Arc::new(entry)) } else { hub.publish(Arc::new(entry)) };
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl PullThrough for Refresher {
    async fn pull(&self, resource: &ResourceId) -> Result<(), Status> {
        if self.known_unknown(resource) {
            pull_refused("unknown");
            return Err(Status::not_found(format!("unknown resource {resource:?} (upstream, recently)")));
        }
        let Ok(_slot) = self.in_flight.try_acquire() else {
            pull_refused("in_flight");
            return Err(Status::resource_exhausted(format!(
                "{} pull-throughs in flight; retry later",
                self.pull.max_in_flight
            )));
        };
        let r = self.fetch(resource).await;
        if r.as_ref().is_err_and(|s| s.code() == tonic::Code::NotFound) {
            self.remember_unknown(resource);
        }
        r
    }
}
