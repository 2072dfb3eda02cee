//! A verified, resumable subscription over an ordered list of endpoints.
//!
//! The loop: connect to the first usable endpoint; fetch and verify its signed
//! directory; subscribe from the verifier's held positions (so a reconnect
//! resumes with diffs, not a snapshot); verify and apply every update; publish
//! it to the [`View`] and to the optional event channel. On a transport error
//! the next endpoint is tried; on a verification failure or on staleness (no
//! update or heartbeat before expiry — a withholding upstream) the endpoint is
//! put aside for [`Config::quarantine`]. After a full round without success the
//! loop sleeps with jittered exponential backoff. An endpoint that cannot
//! stream is polled with `Fetch` instead (pull fallback).
//!
//! The endpoints can be replaced while it runs ([`Subscription::set_endpoints`],
//! e.g. when a domain's IRD advertises new ones): the session in progress
//! ends and the next starts at the first new endpoint, resuming from the same
//! verifier, so trust, rollback protection and the view carry over.

use std::{sync::Arc, time::Duration};

use altocast_proto::{Applied, KeyId, Limits, ResourceId, TrustedKeys, Verifier, VerifyError, pb, verify::Opened};
use rand::Rng as _;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    connect::{self, ConnectError, DistributionClient},
    frames::{Assembled, Assembler, FrameError},
    state::StateError,
    view::{Change, View},
};

/// Pending (verified but not yet exposable) updates accepted in a row before
/// the endpoint is abandoned (a hub ring is at most 128 diffs per resource;
/// this leaves room for several resources' catch-ups).
const MAX_PENDING_RUN: usize = 1024;

/// How long each chunk of a snapshot may take to arrive.
const CHUNK_DEADLINE: Duration = Duration::from_secs(30);

/// How long a chunked update in progress may defer the staleness deadline
/// (PROTOCOL.md §8.8): long enough for a genuine snapshot of tens of MB on a
/// slow link to finish instead of being cut off and started again elsewhere,
/// short enough that a sender trickling chunks cannot hold a client on stale
/// data for long.
const CHUNKED_DEFERRAL: Duration = Duration::from_secs(120);

/// A fresh session's time to catch up before a passed deadline counts.
const GRACE: Duration = Duration::from_secs(10);

/// With nothing held, how long a session may go without a committed update:
/// frames that commit nothing (directories, pending updates) do not extend it.
const FIRST_DATA: Duration = Duration::from_secs(30);

/// A source of Unix milliseconds. The default follows tokio's clock, so tests
/// with paused time control expiry.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The default clock: wall time at creation, advanced by tokio's monotonic clock.
pub fn tokio_clock() -> Clock {
    let base_wall = crate::now_ms();
    let base = Instant::now();
    Arc::new(move || base_wall + Instant::now().duration_since(base).as_millis() as i64)
}

/// Subscription settings.
#[derive(Clone)]
pub struct Config {
    /// Endpoints in order of preference (RProxies, then the origin).
    pub endpoints: Vec<String>,
    /// What is trusted: a root (whose key lists name the update keys, from
    /// each directory) or fixed update keys.
    pub keys: TrustedKeys,
    /// Where the last accepted directory is kept across restarts (no older
    /// directory or key list is accepted after it).
    pub state_dir: Option<std::path::PathBuf>,
    /// The first-use pin file holding the trusted root: rewritten when an
    /// accepted key chain rotates the root (PROTOCOL.md §9.5).
    pub pin_file: Option<std::path::PathBuf>,
    /// Resources to follow; empty = every resource in the directory. The network
    /// maps that cost maps depend on are added automatically.
    pub resources: Vec<ResourceId>,
    /// Verifier limits.
    pub limits: Limits,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// How long an endpoint that sent a bad or stale update is put aside.
    pub quarantine: Duration,
    /// Polling interval in pull fallback.
    pub pull_interval: Duration,
    /// How often the directory is re-read (it expires like the maps, and
    /// carries key changes); with `resources` empty, a resource the origin
    /// added since is then subscribed to, resuming the others where they are.
    pub directory_refresh: Duration,
    /// TLS settings for `https://` endpoints.
    pub tls: Option<connect::ClientTls>,
    /// The clock used for expiry.
    pub clock: Clock,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config").field("endpoints", &self.endpoints).field("resources", &self.resources).finish()
    }
}

impl Config {
    /// Defaults for `endpoints` trusting `keys`.
    pub fn new(endpoints: Vec<String>, keys: TrustedKeys) -> Self {
        Config {
            endpoints,
            keys,
            resources: Vec::new(),
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            quarantine: Duration::from_secs(30),
            pull_interval: Duration::from_secs(5),
            directory_refresh: Duration::from_secs(30),
            state_dir: None,
            pin_file: None,
            tls: None,
            clock: tokio_clock(),
        }
    }
}

/// What the subscription reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// A stream to `endpoint` is open.
    Connected {
        /// The endpoint.
        endpoint: String,
    },
    /// The endpoint's verified directory.
    Directory {
        /// The endpoint.
        endpoint: String,
        /// The signed bytes (to relay).
        signed: pb::SignedDirectory,
        /// Decoded.
        directory: pb::Directory,
    },
    /// A verified, applied update, with its exact signed bytes.
    Verified {
        /// The endpoint it came from.
        endpoint: String,
        /// What it did.
        applied: Applied,
        /// The decoded header (payload reduced to its kind).
        header: Box<pb::Update>,
        /// The signed envelope.
        signed: pb::SignedUpdate,
        /// Snapshot chunks.
        chunks: Vec<pb::SnapshotChunk>,
    },
    /// An update failed verification; the endpoint is put aside.
    Rejected {
        /// The endpoint.
        endpoint: String,
        /// The failed check.
        error: VerifyError,
    },
    /// The subscription left `endpoint`.
    Failover {
        /// The endpoint left.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A resource passed its expiry without a fresh update.
    Stale {
        /// The resource.
        resource_id: ResourceId,
        /// Expired at (Unix ms).
        since_ms: i64,
    },
}

/// A running subscription.
#[derive(Debug)]
pub struct Subscription {
    view: View,
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    endpoints: watch::Sender<Vec<String>>,
}

impl Subscription {
    /// Starts following `cfg.endpoints`. Events go to `events` if given (the
    /// loop waits for the receiver: an RProxy must not lose updates).
    ///
    /// Refuses to start when the state directory holds a directory that does
    /// not restore under `cfg.keys` (PROTOCOL.md §9.6): running without it
    /// would give up the rollback protection it was kept for.
    pub fn start(
        cfg: Config,
        shutdown: CancellationToken,
        events: Option<mpsc::Sender<Event>>,
    ) -> Result<Subscription, StateError> {
        let view = View::default();
        let stop = shutdown.child_token();
        let mut verifier = Verifier::new(cfg.keys.clone(), cfg.limits, cfg.resources.iter().cloned());
        if let Some(dir) = &cfg.state_dir {
            crate::state::restore(dir, &mut verifier)?;
        }
        let pinned = verifier.keys().trusted_root().map(|r| r.id().clone());
        let (endpoints, moved) = watch::channel(cfg.endpoints.clone());
        let mut run = Runner {
            cfg,
            view: view.clone(),
            events,
            verifier,
            stop: stop.clone(),
            quarantined: Vec::new(),
            pinned,
            moved,
        };
        let task = tokio::spawn(async move { run.run().await });
        Ok(Subscription { view, task, stop, endpoints })
    }

    /// Moves the subscription to `endpoints` (in order of preference; ignored
    /// if empty or the same as now): the session in progress ends, and the
    /// next starts at the first of them, resuming from the verified positions
    /// under the same trust.
    pub fn set_endpoints(&self, endpoints: Vec<String>) {
        if endpoints.is_empty() {
            return;
        }
        self.endpoints.send_if_modified(|now| {
            let changed = *now != endpoints;
            if changed {
                *now = endpoints;
            }
            changed
        });
    }

    /// The endpoints it follows now.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.borrow().clone()
    }

    /// The verified view.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// Stops the subscription and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// How one session with an endpoint ended.
enum End {
    Shutdown,
    /// The server ended the stream (e.g. it shut down): try elsewhere, no blame.
    Closed {
        delivered: bool,
    },
    /// Transport or protocol error.
    Failed {
        reason: String,
        delivered: bool,
    },
    /// Sent something that failed verification, or withheld updates.
    Bad {
        reason: String,
    },
    /// The directory lists resources this session does not follow: subscribe
    /// again to the same endpoint at once.
    Resubscribe,
    /// The endpoints were replaced ([`Subscription::set_endpoints`]).
    Moved,
}

struct Runner {
    cfg: Config,
    view: View,
    events: Option<mpsc::Sender<Event>>,
    verifier: Verifier,
    stop: CancellationToken,
    /// `(endpoint index, until)`.
    quarantined: Vec<(usize, Instant)>,
    /// The root the pin file holds (with `cfg.pin_file`).
    pinned: Option<KeyId>,
    /// New endpoints from [`Subscription::set_endpoints`].
    moved: watch::Receiver<Vec<String>>,
}

/// Resolves when `rx` holds new endpoints; never once the sender is gone.
async fn moved(mut rx: watch::Receiver<Vec<String>>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Reduces a decoded payload to its kind so a header can be kept cheaply.
fn strip_payload(u: &mut pb::Update) {
    use pb::update::Payload;
    u.payload = match u.payload.take() {
        Some(Payload::Diff(_)) => Some(Payload::Diff(pb::Diff::default())),
        Some(Payload::Snapshot(_)) => Some(Payload::Snapshot(pb::Snapshot::default())),
        other => other,
    };
}

impl Runner {
    async fn emit(&self, e: Event) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e).await;
        }
    }

    fn usable(&mut self, idx: usize) -> bool {
        let now = Instant::now();
        self.quarantined.retain(|(_, until)| *until > now);
        !self.quarantined.iter().any(|(i, _)| *i == idx)
    }

    async fn run(&mut self) {
        let mut n = self.cfg.endpoints.len();
        if n == 0 {
            warn!("subscription has no endpoints");
            return;
        }
        let mut idx = 0;
        let mut backoff = self.cfg.backoff_min;
        let mut failures_in_round = 0;
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if self.moved.has_changed().unwrap_or(false) {
                let to = self.moved.borrow_and_update().clone();
                info!(from = ?self.cfg.endpoints, to = ?to, "moving to new endpoints");
                self.cfg.endpoints = to;
                n = self.cfg.endpoints.len();
                // Indices of the old list mean nothing in the new one.
                self.quarantined.clear();
                (idx, failures_in_round, backoff) = (0, 0, self.cfg.backoff_min);
            }
            if !self.usable(idx) {
                idx = (idx + 1) % n;
                failures_in_round += 1;
                if failures_in_round >= n {
                    failures_in_round = 0;
                    if self.sleep_backoff(&mut backoff).await {
                        return;
                    }
                }
                continue;
            }
            let url = self.cfg.endpoints[idx].clone();
            let end = self.session(&url).await;
            let (reason, delivered) = match end {
                End::Shutdown => return,
                End::Resubscribe => {
                    info!(endpoint = %url, "directory lists new resources; subscribing again");
                    continue;
                }
                End::Moved => {
                    self.emit(Event::Failover { endpoint: url, reason: "moved to new endpoints".into() }).await;
                    continue;
                }
                End::Closed { delivered } => ("stream closed by server".to_owned(), delivered),
                End::Failed { reason, delivered } => (reason, delivered),
                End::Bad { reason } => {
                    self.quarantined.push((idx, Instant::now() + self.cfg.quarantine));
                    (reason, false)
                }
            };
            info!(endpoint = %url, %reason, "leaving endpoint");
            self.emit(Event::Failover { endpoint: url, reason }).await;
            if delivered {
                backoff = self.cfg.backoff_min;
                failures_in_round = 0;
            } else {
                failures_in_round += 1;
            }
            idx = (idx + 1) % n;
            if failures_in_round >= n {
                failures_in_round = 0;
                if self.sleep_backoff(&mut backoff).await {
                    return;
                }
            } else if self.sleep(jitter(self.cfg.backoff_min)).await {
                return;
            }
        }
    }

    /// Sleeps a jittered `backoff` and doubles it; true if stopped meanwhile.
    async fn sleep_backoff(&self, backoff: &mut Duration) -> bool {
        let d = jitter(*backoff);
        *backoff = (*backoff * 2).min(self.cfg.backoff_max);
        self.sleep(d).await
    }

    /// Sleeps `d`, or less if the endpoints are replaced; true if stopped.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => true,
            _ = tokio::time::sleep(d) => false,
            _ = moved(self.moved.clone()) => false,
        }
    }

    async fn session(&mut self, url: &str) -> End {
        let mut client = match connect::connect_tls(url, self.cfg.connect_timeout, self.cfg.tls.as_ref()).await {
            Ok(c) => c,
            Err(e) => return End::Failed { reason: e.to_string(), delivered: false },
        };
        let now = (self.cfg.clock)();
        let (resources, dir) = match connect::directory(&mut client, url, &mut self.verifier, now).await {
            Ok((_, dir)) => {
                self.took_directory(url, &dir).await;
                (connect::resources_for(&dir, &self.cfg.resources), Some(dir))
            }
            Err(ConnectError::Verify { error, .. }) => return self.rejected(url, error).await,
            Err(e) if self.cfg.resources.is_empty() => return End::Failed { reason: e.to_string(), delivered: false },
            Err(e) => {
                debug!(endpoint = %url, error = %e, "no directory; using configured resources");
                (self.cfg.resources.clone(), None)
            }
        };
        for r in &resources {
            self.verifier.request(r.clone());
        }
        // More resources than one stream carries: several streams on the
        // same connection, one verifier behind them all.
        let mut streams = Vec::new();
        for group in connect::stream_groups(dir.as_ref(), &resources, altocast_proto::SUBSCRIBE_RESOURCES) {
            let positions = group
                .iter()
                .map(|r| {
                    let h = self.verifier.get(r.as_str());
                    pb::ResumePosition {
                        resource_id: r.to_string(),
                        have_seq: h.map_or(0, |h| h.seq),
                        have_tag: h.map(|h| bytes::Bytes::copy_from_slice(&h.tag.0)).unwrap_or_default(),
                    }
                })
                .collect();
            // Bounded: no clock runs until the streams are open, and a server
            // that accepts the call and never answers it (while answering
            // HTTP/2 PINGs) would otherwise hold the client on what it has.
            let call = client.subscribe(pb::SubscribeRequest { resources: positions });
            let Ok(answer) = tokio::time::timeout(connect::SUBSCRIBE_TIMEOUT, call).await else {
                let within = connect::SUBSCRIBE_TIMEOUT.as_secs();
                return End::Failed { reason: format!("no answer to Subscribe within {within} s"), delivered: false };
            };
            match answer {
                Ok(s) => streams.push(s.into_inner()),
                // Unavailable, or no status from the server at all (a reset or
                // GOAWAY that the gRPC library reports as a status of its
                // own): somewhere else, not a refusal to poll (PROTOCOL.md §10.2).
                Err(status) if status.code() == tonic::Code::Unavailable || from_transport(&status) => {
                    return End::Failed { reason: status.to_string(), delivered: false };
                }
                Err(status) => {
                    // Loud: polling is slower and heavier than the push it replaces.
                    warn!(endpoint = %url, %status, resources = group.len(), "subscribe refused; falling back to polling");
                    metrics::counter!("altocast_client_pull_fallbacks_total").increment(1);
                    return self.pull(&mut client, url, &resources).await;
                }
            }
        }
        self.emit(Event::Connected { endpoint: url.into() }).await;
        metrics::gauge!("altocast_client_connected").set(1.0);
        let followed = self.cfg.resources.is_empty().then(|| resources.clone());
        let end = self.read_stream(streams, url, client.clone(), followed).await;
        metrics::gauge!("altocast_client_connected").set(0.0);
        end
    }

    /// When this session's endpoint goes stale (PROTOCOL.md §8.8): the
    /// earlier of the maps clock (the earliest expiry of a held resource) and
    /// the directory clock (the held directory's expiry), each plus the skew
    /// allowance; with nothing held, [`FIRST_DATA`] after the session began
    /// instead of the maps clock. A deadline on the clock, not an idle timer:
    /// frames that extend nothing do not move it.
    fn deadline(&self, began: Instant) -> Instant {
        let now = (self.cfg.clock)();
        let skew = self.cfg.limits.max_skew_ms;
        let at = |expires_ms: i64| clock_at(Instant::now(), now, expires_ms.saturating_add(skew));
        let maps = self.verifier.resources().filter_map(|(_, h)| h.map(|h| h.expires_at_ms)).min();
        let maps = maps.map_or(began + FIRST_DATA, at);
        let directory = self.verifier.directory().filter(|p| p.expires_at_ms != 0).map(|p| at(p.expires_at_ms));
        directory.map_or(maps, |d| d.min(maps))
    }

    /// Why the endpoint is abandoned once its deadline has passed, or `None`
    /// when no clock has passed after all (it moved meanwhile).
    async fn stale(&mut self, url: &str, began: Instant, delivered: bool) -> Option<End> {
        let now = (self.cfg.clock)();
        if let Some(error) = self.verifier.directory_stale(now) {
            warn!(endpoint = %url, "no fresh directory before the held one expired; upstream withholds it");
            return Some(self.rejected(url, error).await);
        }
        let skew = self.cfg.limits.max_skew_ms;
        let expired = self
            .verifier
            .resources()
            .filter_map(|(id, h)| h.map(|h| (id.clone(), h.expires_at_ms)))
            .filter(|(_, t)| t.saturating_add(skew) < now)
            .min_by_key(|(_, t)| *t);
        if let Some((resource_id, since_ms)) = expired {
            warn!(endpoint = %url, resource = %resource_id, "no update before expiry; upstream withholds or is stuck");
            self.emit(Event::Stale { resource_id: resource_id.clone(), since_ms }).await;
            return Some(End::Bad { reason: format!("{resource_id} went stale") });
        }
        let nothing_held = self.verifier.resources().all(|(_, h)| h.is_none());
        (nothing_held && began.elapsed() >= FIRST_DATA)
            .then(|| End::Failed { reason: format!("no data within {} s", FIRST_DATA.as_secs()), delivered })
    }

    /// Reads updates until one of the session's streams ends. Re-reads the
    /// directory every `directory_refresh` (an untrusted, older or expired
    /// one abandons the endpoint); with `followed` (the resources of a
    /// subscription to the whole directory), ends with `Resubscribe` when it
    /// lists a resource not followed yet.
    async fn read_stream(
        &mut self,
        streams: Vec<tonic::Streaming<pb::SubscribeResponse>>,
        url: &str,
        mut client: DistributionClient,
        followed: Option<Vec<ResourceId>>,
    ) -> End {
        use futures::StreamExt as _;
        let mut delivered = false;
        let mut pending_run = 0;
        // Chunks follow their head on the same stream: one assembler each.
        let mut assemblers: Vec<Assembler> = streams.iter().map(|_| Assembler::new()).collect();
        // Every frame tagged with its stream; `None` when that stream ended.
        let mut merged =
            futures::stream::select_all(streams.into_iter().enumerate().map(|(i, s)| {
                s.map(move |f| (i, Some(f))).chain(futures::stream::once(async move { (i, None) })).boxed()
            }));
        let chunks_due = |a: &[Assembler]| a.iter().map(Assembler::chunks_due).sum::<usize>();
        // A fresh connection gets a grace period to catch up before staleness counts.
        let grace_until = Instant::now() + GRACE;
        let began = Instant::now();
        // The last frame of each stream: a chunk is owed by its own stream,
        // and frames of the others must not postpone its wait.
        let mut last_frame = vec![began; assemblers.len()];
        // When the chunked update in progress (if any) began.
        let mut chunked_since: Option<Instant> = None;
        let mut refresh = tokio::time::interval_at(
            tokio::time::Instant::now() + self.cfg.directory_refresh,
            self.cfg.directory_refresh,
        );
        // After a pause (a chunked update in progress) one re-read, not a burst.
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut deadline = self.deadline(began).max(grace_until);
            if let Some(since) = chunked_since {
                deadline = deadline.max(since + CHUNKED_DEFERRAL);
            }
            // Each chunk of an update in progress has a deadline of its own.
            let chunk_deadline = assemblers
                .iter()
                .zip(&last_frame)
                .filter(|(a, _)| a.chunks_due() > 0)
                .map(|(_, t)| *t + CHUNK_DEADLINE)
                .min()
                .unwrap_or(began + CHUNK_DEADLINE);
            // Biased, the deadline before the next frame: a sender that always
            // has a frame ready (a flood of no-op heartbeats) is still caught.
            let frame = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return End::Shutdown,
                _ = moved(self.moved.clone()) => return End::Moved,
                _ = tokio::time::sleep_until(deadline) => {
                    match self.stale(url, began, delivered).await {
                        Some(end) => return end,
                        None => continue,
                    }
                }
                _ = tokio::time::sleep_until(chunk_deadline), if chunked_since.is_some() => {
                    return End::Bad {
                        reason: format!(
                            "{} snapshot chunks still due after {} s",
                            chunks_due(&assemblers),
                            CHUNK_DEADLINE.as_secs()
                        ),
                    };
                }
                _ = refresh.tick(), if chunked_since.is_none() => {
                    match self.refresh_directory(&mut client, url).await {
                        Ok(Some(dir)) if lists_more(&dir, followed.as_deref()) => return End::Resubscribe,
                        Ok(Some(_)) => {}
                        Ok(None) => {}
                        Err(end) => return end,
                    }
                    continue;
                }
                f = merged.next() => f,
            };
            let (stream, frame) = match frame {
                Some((i, Some(Ok(f)))) => (i, f),
                Some((_, None)) | None => return End::Closed { delivered },
                Some((_, Some(Err(status)))) => return End::Failed { reason: status.to_string(), delivered },
            };
            last_frame[stream] = Instant::now();
            // An update signed only by keys this verifier does not know (yet)
            // may follow a key list change: the sender verified it under its
            // directory, so that directory is re-read once and the frame tried
            // again before it counts as a rejection.
            let again = frame.clone();
            let pushed = match assemblers[stream].push(&self.verifier, frame) {
                Err(FrameError::Verify(error)) if unknown_signer(&error) => {
                    match self.refresh_directory(&mut client, url).await {
                        Ok(_) => assemblers[stream].push(&self.verifier, again),
                        Err(end) => return end,
                    }
                }
                other => other,
            };
            if let Some(signed) = assemblers[stream].take_directory() {
                let now = (self.cfg.clock)();
                match self.verifier.accept_directory(&signed, now) {
                    Ok(dir) => {
                        self.took_directory(url, &dir).await;
                        if lists_more(&dir, followed.as_deref()) {
                            return End::Resubscribe;
                        }
                    }
                    Err(error) => return self.rejected(url, error).await,
                }
            }
            chunked_since = match chunks_due(&assemblers) {
                0 => None,
                _ => chunked_since.or(Some(last_frame[stream])),
            };
            let Assembled { opened, signed, chunks } = match pushed {
                Ok(Some(a)) => a,
                Ok(None) => continue,
                Err(FrameError::Verify(error)) => return self.rejected(url, error).await,
                Err(e) => return End::Bad { reason: e.to_string() },
            };
            match self.apply(url, opened, signed, chunks).await {
                Ok(true) => {
                    delivered = true;
                    pending_run = 0;
                }
                // Authentic and chained but not exposable yet (a catch-up older
                // than the TTL, or a cost map ahead of its network map): the
                // rest of the catch-up commits it. A run without end is an
                // upstream replaying history.
                Ok(false) if pending_run < MAX_PENDING_RUN => pending_run += 1,
                Ok(false) => return End::Bad { reason: format!("{MAX_PENDING_RUN} updates in a row not exposable") },
                Err(error) => return self.rejected(url, error).await,
            }
        }
    }

    /// Re-reads and accepts the endpoint's directory, saves it and reports it
    /// (an RProxy serves what it reports). `Ok(None)`: unreachable for a
    /// moment (the stream says whether it is gone); `Err`: the session ends.
    async fn refresh_directory(
        &mut self,
        client: &mut DistributionClient,
        url: &str,
    ) -> Result<Option<pb::Directory>, End> {
        let now = (self.cfg.clock)();
        match connect::directory(client, url, &mut self.verifier, now).await {
            Ok((_, dir)) => {
                self.took_directory(url, &dir).await;
                Ok(Some(dir))
            }
            Err(ConnectError::Verify { error, .. }) => Err(self.rejected(url, error).await),
            Err(e) => {
                debug!(endpoint = %url, error = %e, "directory refresh failed");
                Ok(None)
            }
        }
    }

    /// What follows every directory the verifier accepted (at a session's
    /// start, re-read, or pushed on the stream): saved to the state
    /// directory, shown in the view, reported (an RProxy serves it).
    /// What is saved and reported is the directory the verifier holds (`dir`
    /// is its content), never a received one it ignored as not newer.
    async fn took_directory(&mut self, url: &str, dir: &pb::Directory) {
        let Some(signed) = self.verifier.signed_directory().cloned() else { return };
        if let Some(state) = &self.cfg.state_dir
            && let Err(e) = crate::state::save(state, &signed)
        {
            warn!(error = %e, dir = %state.display(), "directory not saved to the state directory");
        }
        self.view.set_directory(dir, &self.verifier);
        self.follow_root();
        self.emit(Event::Directory { endpoint: url.into(), signed, directory: dir.clone() }).await;
    }

    /// Moves the pin file forward when the accepted key chain rotated the
    /// root (the old pin keeps working only while the origin keeps the
    /// rotation in its chain).
    fn follow_root(&mut self) {
        let (Some(file), Some(root)) = (&self.cfg.pin_file, self.verifier.keys().trusted_root()) else { return };
        if self.pinned.as_ref() == Some(root.id()) {
            return;
        }
        match crate::state::write_pin(file, root) {
            Ok(()) => {
                info!(pin = %file.display(), root = %root.id(), "the key chain rotated the root; pin updated");
                self.pinned = Some(root.id().clone());
            }
            Err(e) => warn!(error = %e, "the key chain rotated the root; the pin could not be updated"),
        }
    }

    async fn rejected(&self, url: &str, error: VerifyError) -> End {
        metrics::counter!("altocast_client_verification_failures_total", "check" => error.check().as_str())
            .increment(1);
        warn!(endpoint = %url, check = error.check().as_str(), %error, "update rejected; abandoning endpoint");
        let reason = error.to_string();
        self.emit(Event::Rejected { endpoint: url.into(), error }).await;
        End::Bad { reason }
    }

    /// Verifies and applies one update; true when it committed (is exposed).
    async fn apply(
        &mut self,
        url: &str,
        opened: Opened,
        signed: pb::SignedUpdate,
        chunks: Vec<pb::SnapshotChunk>,
    ) -> Result<bool, VerifyError> {
        let now = (self.cfg.clock)();
        let applied = self.verifier.apply(&opened, &chunks, now)?;
        let committed = applied.is_committed();
        self.publish(url, opened, applied, signed, chunks, now).await;
        Ok(committed)
    }

    /// Shows a committed update in the view; relays every verified update,
    /// pending ones included (an RProxy needs the whole authentic chain).
    async fn publish(
        &mut self,
        url: &str,
        opened: Opened,
        applied: Applied,
        signed: pb::SignedUpdate,
        chunks: Vec<pb::SnapshotChunk>,
        now: i64,
    ) {
        if applied.is_committed() {
            let kind = self.verifier.get(applied.resource_id.as_str()).map_or("", |h| h.state.kind().as_str());
            metrics::counter!("altocast_client_updates_total", "kind" => applied.kind.as_str()).increment(1);
            let change = Change { update: applied.clone(), applied_at_ms: now, resource_kind: kind };
            self.view.update_from(&self.verifier, change);
        } else {
            metrics::counter!("altocast_client_pending_total").increment(1);
        }
        if self.events.is_some() {
            let mut header = opened.update;
            strip_payload(&mut header);
            self.emit(Event::Verified { endpoint: url.into(), applied, header: Box::new(header), signed, chunks })
                .await;
        }
    }

    /// Pull fallback: poll `Fetch` for a few rounds, then go back to trying
    /// push. The directory is re-read every round and its clock enforced as
    /// on a stream (PROTOCOL.md §10.6): an endpoint that refuses `Subscribe`
    /// cannot keep the client on an old directory.
    async fn pull(&mut self, client: &mut DistributionClient, url: &str, resources: &[ResourceId]) -> End {
        const ROUNDS: usize = 6;
        let mut delivered = false;
        // A session of slow answers (each just under FETCH_TIMEOUT) must not
        // grow with the number of resources: one round's worth of slack.
        let began = Instant::now();
        let limit = self.cfg.pull_interval * ROUNDS as u32 + connect::FETCH_TIMEOUT + connect::DIRECTORY_TIMEOUT;
        for round in 0..ROUNDS {
            if self.moved.has_changed().unwrap_or(false) {
                return End::Moved;
            }
            // The session's start read the directory and the first round is
            // the catch-up; from then on every round must find it fresh.
            if round > 0 {
                if let Err(end) = self.refresh_directory(client, url).await {
                    return end;
                }
                if let Some(error) = self.verifier.directory_stale((self.cfg.clock)()) {
                    warn!(endpoint = %url, "polling: no fresh directory before the held one expired");
                    return self.rejected(url, error).await;
                }
            }
            for r in resources {
                if began.elapsed() > limit {
                    let reason = format!("polling took more than {} s", limit.as_secs());
                    return End::Failed { reason, delivered };
                }
                if round > 0
                    && let Some(error) = self.verifier.directory_stale((self.cfg.clock)())
                {
                    return self.rejected(url, error).await;
                }
                let now = (self.cfg.clock)();
                let fetched = match connect::fetch_into(client, url, r, &mut self.verifier, now).await {
                    // Signed by keys not known yet: the sender's directory may
                    // explain it (§9.4), re-read once and tried again.
                    Err(ConnectError::Verify { error, .. }) if unknown_signer(&error) => {
                        if let Err(end) = self.refresh_directory(client, url).await {
                            return end;
                        }
                        connect::fetch_into(client, url, r, &mut self.verifier, now).await
                    }
                    other => other,
                };
                match fetched {
                    Ok(fetched) => {
                        for f in fetched {
                            delivered = true;
                            self.publish(url, f.opened, f.applied, f.signed, f.chunks, now).await;
                        }
                    }
                    Err(ConnectError::Verify { error, .. }) => return self.rejected(url, error).await,
                    Err(e) => return End::Failed { reason: e.to_string(), delivered },
                }
            }
            if round + 1 < ROUNDS && self.sleep(self.cfg.pull_interval).await {
                return End::Shutdown;
            }
        }
        End::Closed { delivered }
    }
}

/// Whether a subscription following the whole directory (`followed`) must
/// subscribe again: `dir` lists a resource it does not follow.
fn lists_more(dir: &pb::Directory, followed: Option<&[ResourceId]>) -> bool {
    followed.is_some_and(|f| connect::resources_for(dir, &[]).iter().any(|r| !f.contains(r)))
}

/// The instant at which a clock of value `value_ms` has passed (PROTOCOL.md
/// §8.8: one millisecond past it, as the checks are strict), when it reads
/// `now_ms` at `now`. Signed expiries are not bounded: one far in the future
/// (or at `i64::MAX`) is a year away, which no session outlives.
fn clock_at(now: Instant, now_ms: i64, value_ms: i64) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 86_400);
    let ms = value_ms.saturating_add(1).saturating_sub(now_ms).max(0);
    now + Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(FAR)
}

/// A status the gRPC library made up for a transport failure (a reset, a
/// GOAWAY, a broken connection): it carries the underlying error. A status
/// the server sent is parsed from its trailers and carries none.
fn from_transport(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// A signature failure that a newer key list may explain.
fn unknown_signer(e: &VerifyError) -> bool {
    use altocast_proto::keys::SignatureError;
    matches!(e, VerifyError::Signature(SignatureError::UnknownKey(_) | SignatureError::OutsideWindow { .. }))
}

fn jitter(d: Duration) -> Duration {
    // ±50%: reconnecting clients spread out instead of stampeding.
    let f = rand::rng().random_range(0.5..1.5);
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status the server sent (parsed from its trailers) is a refusal; one
    /// the gRPC library made of a reset or a broken connection is not.
    /// An expiry far in the future (signed, so not bounded by anything)
    /// neither overflows nor makes the deadline pass at once (which was a
    /// busy loop: the deadline fired, nothing had expired, and again).
    #[test]
    fn a_far_expiry_is_a_far_deadline() {
        let now = Instant::now();
        let year = Duration::from_secs(365 * 86_400);
        for value in [i64::MAX, i64::MAX - 1, i64::MAX / 2, 1 << 62] {
            assert_eq!(clock_at(now, 1_000, value), now + year, "{value}");
        }
        assert_eq!(clock_at(now, 1_000, 2_000), now + Duration::from_millis(1_001));
        assert_eq!(clock_at(now, 1_000, 999), now);
        assert_eq!(clock_at(now, 1_000, i64::MIN), now);
    }

    #[test]
    fn only_a_status_the_server_sent_is_a_refusal() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("2"));
        let sent = tonic::Status::from_header_map(&trailers).expect("a status");
        assert_eq!(sent.code(), tonic::Code::Unknown);
        assert!(!from_transport(&sent));
        let reset = tonic::Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        assert_eq!(reset.code(), tonic::Code::Unknown);
        assert!(from_transport(&reset));
    }
}
