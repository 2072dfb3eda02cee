//! A multi-domain view for trackers (DESIGN §6b): verified subscriptions to
//! the ALTO servers of several network domains, found through DNS one peer
//! address at a time, and peer ranking on behalf of a requester (third-party
//! queries) against the requester's own domain's maps.
//!
//! How an address is mapped, lazily, the first time it is seen:
//!
//! 1. **Discovery** (RFC 8686): its reverse-tree names are asked longest
//!    prefix first (from the /32 or /128, or from a shorter prefix the
//!    operator chose, [`DomainsConfig::prefix_v4`]), each name's answer cached — a record, "no record", a
//!    refusal or a failure — for its DNS TTL clamped to
//!    [`DomainsConfig::cache_min`]..[`DomainsConfig::cache_max`] (answers
//!    without a TTL for the minimum; "no record" for the zone's negative TTL,
//!    RFC 2308). So the swarm's shared /24 and /16 names are asked once, not
//!    once per peer, and each address's walk is remembered as long as all its
//!    names' answers hold. At most
//!    [`DomainsConfig::max_lookups`] lookups are in flight; concurrent
//!    requests for one name share one lookup; at most
//!    [`DomainsConfig::max_names`] names (and as many addresses) are cached.
//!    A name that failed temporarily in this walk is asked once more after
//!    the walk's other names (RFC 8686 §3.5); a failure cached by an earlier
//!    walk is not. Special-purpose addresses (private, loopback, …) are not
//!    walked unless [`DomainsConfig::discover_private`]: they have no server
//!    and are counted ([`Stats::addresses_skipped`]).
//! 2. **The domain** behind the IRD URIs found (those of the answering
//!    name's lowest usable NAPTR order, RFC 3403 §4.1), tried by preference,
//!    going on to the next one when an IRD cannot be fetched or
//!    none of its gRPC endpoints answers: the IRD is fetched (bounded
//!    size and time; `https://` checked against the platform's roots or
//!    [`DomainsConfig::ird_ca`]) and its `meta.altocast.grpc` says where to
//!    subscribe.
//!    The gRPC endpoint's signed directory names the origin; the root trusted
//!    for it is the one the operator configured for that origin id or for the
//!    IRD host's DNS domain, else a first-use pin in the pin directory
//!    (`<origin id>.pem`). **DNS and the IRD are never a trust root**: a key
//!    only they name is never trusted; with no configured root and no pin
//!    directory the domain is refused, and a directory that does not verify
//!    under the chosen root is refused naming both roots. Refusals are
//!    remembered for [`DomainsConfig::retry_after`]. At most
//!    [`DomainsConfig::max_domains`] domains are followed.
//!
//!    A followed domain's IRD is read again every
//!    [`DomainsConfig::ird_refresh`], and sooner when its subscription has
//!    failed [`FAILURES_BEFORE_IRD`] times in a row (at most once per
//!    [`DomainsConfig::retry_after`]). When it advertises other gRPC
//!    endpoints, the subscription moves to them and keeps its verifier (its
//!    positions, its trust, its rollback protection) and its view — once the
//!    first of them that answers serves this origin's directory, verified
//!    under the domain's root. The IRD never changes trust: a re-read IRD
//!    whose `origin-id` is not the domain's, or whose `root-key-id` is not the
//!    root the domain's verified key list names now, is refused and counted,
//!    and the domain stays where it is.
//! 3. **The PID**: longest-prefix match in that domain's verified network
//!    map (the one its cost map was computed against).
//!
//! Ranking ([`Domains::rank`]), stable within each group (the caller's order
//! is kept on ties):
//! candidates in the requester's domain by the cost from the requester's PID
//! in that domain's cost map (unpriced ones after the priced); then
//! candidates of other domains — unless the operator set an inter-domain cost
//! ([`DomainsConfig::inter_domain_cost`]), which prices them at that cost
//! among the requester's domain's priced candidates; then addresses with no
//! ALTO server; last, peers of a domain that is down
//! (its subscription disconnected for [`DomainsConfig::down_after`]) or whose
//! maps are stale or not there yet. A domain coming back is used again as
//! soon as its subscription has fresh maps; other domains are never affected.
//!
//! Counters (metrics crate, see [`describe_metrics`]): DNS lookups, name cache
//! hits, subscriptions, domains followed, and refusals by reason; the same
//! figures are in [`Domains::stats`].
//!
//! Key types: [`Domains`], [`DomainsConfig`], [`Ranked`], [`DomainError`].

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use altocast_proto::{Limits, PublicKey, ResourceId, TrustedKeys, Verifier, pb};
use bytes::Bytes;
use futures::StreamExt as _;
use prost::Message as _;
use serde::Serialize;
use tokio::{
    sync::{OnceCell, Semaphore, mpsc},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{
    Config, Event, Subscription,
    connect::{self, ClientTls},
    discover::{DiscoverError, Discoverer, DiscoveryConfig, Outcome, reverse_names_within},
    now_ms,
    view::{CostMapVersion, View},
};

/// DNS lookups sent, by outcome (`found`, `none`, `refused`, `failed`).
pub const METRIC_LOOKUPS: &str = "altocast_tracker_dns_lookups_total";
/// Reverse-tree names answered from the cache.
pub const METRIC_CACHE_HITS: &str = "altocast_tracker_name_cache_hits_total";
/// Verified subscriptions started, one per domain followed.
pub const METRIC_SUBSCRIPTIONS: &str = "altocast_tracker_subscriptions_total";
/// Domains followed now.
pub const METRIC_DOMAINS: &str = "altocast_tracker_domains";
/// Refusals by reason: `untrusted`, `root_mismatch`, `ird`, `unreachable`,
/// `inconsistent`, `pin`, `domains` (the cap), `names` (the name cache is
/// full), `special_address` (a private, loopback, … address not looked up),
/// `uris` (an answer with more IRD URIs than are tried),
/// `ird_origin` and `ird_root` (a re-read IRD naming another origin or root),
/// and the service's `connections`, `header_timeout`, `body_timeout`,
/// `body_too_large`, `syntax`, `candidates`, `count`, `busy`.
pub const METRIC_REFUSED: &str = "altocast_tracker_refused_total";
/// Re-reads of followed domains' IRDs, by outcome: `unchanged`, `moved`
/// (the subscription moved to new gRPC endpoints), `failed` (not read, or
/// none of its new endpoints answered), `refused` (it named another origin
/// or root, or its endpoints serve another origin or do not verify).
pub const METRIC_IRD_REFRESHES: &str = "altocast_tracker_ird_refreshes_total";

/// Describes every tracker metric (call once when a recorder is installed).
pub fn describe_metrics() {
    metrics::describe_counter!(METRIC_LOOKUPS, "DNS lookups sent for RFC 8686 discovery, by outcome");
    metrics::describe_counter!(METRIC_CACHE_HITS, "Reverse-tree names answered from the tracker's cache");
    metrics::describe_counter!(METRIC_SUBSCRIPTIONS, "Verified subscriptions started, one per domain");
    metrics::describe_gauge!(METRIC_DOMAINS, "Domains the tracker follows");
    metrics::describe_counter!(METRIC_REFUSED, "Domains, names and requests refused, by reason");
    metrics::describe_counter!(METRIC_IRD_REFRESHES, "Re-reads of followed domains' IRDs, by outcome");
    metrics::describe_counter!(
        crate::discover::METRIC_REFUSED,
        "Discovery refusals (unusable records, NAPTR chains, special addresses, unvalidated answers), by reason"
    );
}

pub(crate) fn refused(reason: &'static str) {
    metrics::counter!(METRIC_REFUSED, "reason" => reason).increment(1);
}

/// Largest signed directory decoded before verification (the verifier's own
/// limit, PROTOCOL.md §11).
const MAX_DIRECTORY_BYTES: usize = 1 << 20;
/// Most gRPC URLs taken from one IRD.
const MAX_GRPC_URLS: usize = 16;
/// Addresses resolved at once within one ranking request: enough to keep
/// [`DomainsConfig::max_lookups`] busy, while cached names cost nothing.
const RESOLVE_PARALLEL: usize = 64;
/// Subscription failures in a row (no stream opened in between) after which
/// a domain's IRD is read again: its servers may have moved.
pub const FAILURES_BEFORE_IRD: u32 = 3;

/// IRD URIs of one discovery answer tried in turn (the rest are not tried,
/// counted as refused `uris`): bounds the fetches and connects to hosts a
/// reverse zone names.
pub const MAX_URIS_TRIED: usize = 4;
/// Events buffered from one domain's subscription; the consumer only flips
/// a flag per event, so a small queue never holds the subscription back.
const EVENT_QUEUE: usize = 64;

/// A root the operator trusts for some domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustScope {
    /// The origin with this id (16 hex characters: its first root's key id).
    Origin(String),
    /// IRDs whose host is this DNS domain or below it.
    Domain(String),
}

impl TrustScope {
    /// `ORIGIN_ID` (16 hex characters) or a DNS domain.
    pub fn parse(s: &str) -> Result<TrustScope, String> {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(TrustScope::Origin(s));
        }
        let label_ok = |l: &str| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if s.is_empty() || s.len() > 253 || !s.split('.').all(label_ok) {
            return Err(format!("{s:?} is neither an origin id (16 hex characters) nor a DNS domain"));
        }
        Ok(TrustScope::Domain(s))
    }
}

/// Settings of [`Domains`]. Every bound has a default in [`DomainsConfig::new`].
#[derive(Clone)]
pub struct DomainsConfig {
    /// How names are asked (nameserver, timeout, service, special-purpose
    /// addresses, NAPTR chains, DNSSEC): the discovery of `altocast discover`.
    /// A special-purpose address (private, loopback, …) not walked ranks as
    /// having no server, without a lookup.
    pub discovery: DiscoveryConfig,
    /// Discover each IPv4 address's prefix of this length rather than the
    /// address (RFC 8686 takes a prefix as input): names longer than it are
    /// not asked. 32 asks every peer's own /32 name; 24 asks one name per
    /// /24, at the price of not seeing per-host records.
    pub prefix_v4: u8,
    /// Likewise for IPv6 (128: every address's own name).
    pub prefix_v6: u8,
    /// Roots the operator trusts, by origin id or DNS domain.
    pub roots: Vec<(TrustScope, PublicKey)>,
    /// Directory of first-use pins (`<origin id>.pem`); `None`: no pinning,
    /// only configured roots are trusted.
    pub pin_dir: Option<PathBuf>,
    /// Most domains followed; more are refused.
    pub max_domains: usize,
    /// Most DNS lookups in flight.
    pub max_lookups: usize,
    /// Most reverse-tree names cached (and most addresses' walks).
    pub max_names: usize,
    /// Shortest time a name's answer is cached (and the time for answers
    /// without a TTL: failures, "no record" without the zone's SOA).
    pub cache_min: Duration,
    /// Longest time a name's answer is cached.
    pub cache_max: Duration,
    /// How long a refused or unreachable domain is remembered before it is
    /// tried again.
    pub retry_after: Duration,
    /// Bound of fetching an IRD, and of reaching a domain's gRPC endpoint.
    pub ird_timeout: Duration,
    /// Largest IRD body read.
    pub max_ird_bytes: usize,
    /// How long the first request that needs a new domain waits for its maps.
    pub ready_timeout: Duration,
    /// A domain whose subscription has been disconnected this long is down.
    pub down_after: Duration,
    /// How long one ranking request may spend resolving addresses; those not
    /// resolved by then rank as having no server (their lookups are cached
    /// for the next request as far as they got).
    pub resolve_deadline: Duration,
    /// Most candidates in one ranking request.
    pub max_candidates: usize,
    /// Cost given to candidates of other domains, in the units of the
    /// requester's domain's cost map, so they rank among its candidates by
    /// cost (`None`: unpriced, ranked after the requester's domain).
    pub inter_domain_cost: Option<f64>,
    /// Cost map to rank by in every domain (default: the first by id).
    pub cost_map: Option<ResourceId>,
    /// TLS for `https://` gRPC endpoints.
    pub tls: Option<ClientTls>,
    /// CA certificates (PEM) that `https://` IRDs' certificates must chain
    /// to; `None`: the platform's root store.
    pub ird_ca: Option<Vec<u8>>,
    /// Longest reconnect delay of a domain's subscription (how soon a domain
    /// that comes back is used again).
    pub backoff_max: Duration,
    /// How often each domain's directory is re-read (key changes, root
    /// rotations, which a pin then follows).
    pub directory_refresh: Duration,
    /// How often each followed domain's IRD is read again (its gRPC
    /// endpoints may move).
    pub ird_refresh: Duration,
}

impl std::fmt::Debug for DomainsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainsConfig")
            .field("discovery", &self.discovery)
            .field("roots", &self.roots)
            .field("pin_dir", &self.pin_dir)
            .field("max_domains", &self.max_domains)
            .finish_non_exhaustive()
    }
}

impl DomainsConfig {
    /// The defaults (also the `altocast tracker` flags' defaults).
    pub fn new() -> DomainsConfig {
        Self::DEFAULT
    }

    /// The defaults, as a constant.
    pub const DEFAULT: DomainsConfig = DomainsConfig {
        discovery: DiscoveryConfig::DEFAULT,
        prefix_v4: 32,
        prefix_v6: 128,
        roots: Vec::new(),
        pin_dir: None,
        max_domains: 64,
        max_lookups: 16,
        max_names: 100_000,
        cache_min: Duration::from_secs(30),
        cache_max: Duration::from_secs(3600),
        retry_after: Duration::from_secs(60),
        ird_timeout: Duration::from_secs(5),
        max_ird_bytes: 1 << 20,
        ready_timeout: Duration::from_secs(10),
        down_after: Duration::from_secs(5),
        resolve_deadline: Duration::from_secs(10),
        max_candidates: 10_000,
        inter_domain_cost: None,
        cost_map: None,
        tls: None,
        ird_ca: None,
        backoff_max: Duration::from_secs(5),
        directory_refresh: Duration::from_secs(30),
        ird_refresh: Duration::from_secs(300),
    };
}

impl Default for DomainsConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a domain is not followed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DomainError {
    /// The IRD could not be fetched or does not say how to subscribe.
    #[error("IRD {uri}: {reason}")]
    Ird {
        /// The IRD URI.
        uri: String,
        /// What is wrong.
        reason: String,
    },
    /// None of the IRD's gRPC endpoints answered with a directory.
    #[error("IRD {uri}: no gRPC endpoint reachable: {reason}")]
    Unreachable {
        /// The IRD URI.
        uri: String,
        /// Each endpoint's error.
        reason: String,
    },
    /// The IRD and the directory behind it name different origins.
    #[error("IRD {uri} names origin {claimed}, but its gRPC endpoint serves origin {served}")]
    Inconsistent {
        /// The IRD URI.
        uri: String,
        /// The origin id in the IRD.
        claimed: String,
        /// The origin id in the directory.
        served: String,
    },
    /// No root is configured or pinned for this origin, and pinning is off.
    #[error(
        "origin {origin} (IRD {uri}) is not trusted: no --trust-root for it or its domain, and no --pin-dir \
         (a key named by DNS or the IRD is never trusted)"
    )]
    Untrusted {
        /// The origin id.
        origin: String,
        /// The IRD URI.
        uri: String,
    },
    /// The directory does not verify under the root trusted for the origin.
    #[error("origin {origin} (IRD {uri}) refused: trusted root {trusted}, presented root {presented}: {reason}")]
    RootMismatch {
        /// The origin id.
        origin: String,
        /// The IRD URI.
        uri: String,
        /// Key id of the root trusted (configured or pinned).
        trusted: String,
        /// Key id of the root its directory's key chain names.
        presented: String,
        /// The verifier's reason.
        reason: String,
    },
    /// The pin file could not be read or written.
    #[error("pin file {path}: {reason}")]
    Pin {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A followed domain's re-read IRD names another origin id.
    #[error("IRD {uri} of origin {origin} now names origin {claimed}: refused (an IRD never changes trust)")]
    IrdOrigin {
        /// The IRD URI.
        uri: String,
        /// The domain's origin id.
        origin: String,
        /// The origin id the IRD names now.
        claimed: String,
    },
    /// A followed domain's re-read IRD names a root key id that is not the
    /// one the domain's verified key list names.
    #[error(
        "IRD {uri} of origin {origin} now names root {claimed}, but its verified key list names root {current}: \
         refused (an IRD never changes trust)"
    )]
    IrdRoot {
        /// The IRD URI.
        uri: String,
        /// The domain's origin id.
        origin: String,
        /// The root key id the IRD names.
        claimed: String,
        /// The root key id the domain's verified key list names.
        current: String,
    },
    /// [`DomainsConfig::max_domains`] domains are followed already.
    #[error("origin {origin} (IRD {uri}) refused: already following the maximum of {max} domains")]
    TooMany {
        /// The origin id.
        origin: String,
        /// The IRD URI.
        uri: String,
        /// The cap.
        max: usize,
    },
}

impl DomainError {
    fn reason(&self) -> &'static str {
        match self {
            DomainError::Ird { .. } => "ird",
            DomainError::Unreachable { .. } => "unreachable",
            DomainError::Inconsistent { .. } => "inconsistent",
            DomainError::Untrusted { .. } => "untrusted",
            DomainError::RootMismatch { .. } => "root_mismatch",
            DomainError::Pin { .. } => "pin",
            DomainError::TooMany { .. } => "domains",
            DomainError::IrdOrigin { .. } => "ird_origin",
            DomainError::IrdRoot { .. } => "ird_root",
        }
    }
}

/// Why a ranking request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RankError {
    /// More candidates than [`DomainsConfig::max_candidates`].
    #[error("{given} candidates, more than the {max} allowed")]
    TooManyCandidates {
        /// How many were given.
        given: usize,
        /// The cap.
        max: usize,
    },
}

/// Where a ranked candidate stands (the groups of the module doc, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// Priced: in the requester's domain by its cost map, or in another
    /// domain at the inter-domain cost.
    Priced,
    /// In the requester's domain, without a cost (no PID, or no entry).
    Unpriced,
    /// In another domain that is up, unpriced (no inter-domain cost set).
    OtherDomain,
    /// No ALTO server found for it (or its domain was refused).
    NoServer,
    /// In a domain that is down or stale.
    Down,
}

/// One ranked candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// The candidate.
    pub ip: IpAddr,
    /// The origin id of its domain, when one is followed.
    pub domain: Option<String>,
    /// Its PID in its domain's network map.
    pub pid: Option<String>,
    /// The cost from the requester (its domain's cost map, or the
    /// inter-domain cost).
    pub cost: Option<f64>,
    /// Its group (`"priced"`, `"unpriced"`, `"other-domain"`, `"no-server"`,
    /// `"down"` in the tracker's JSON).
    pub standing: Standing,
}

/// What the tracker did so far (the counters, readable without a metrics
/// recorder).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// DNS lookups sent.
    pub dns_lookups: u64,
    /// Names answered from the cache.
    pub name_cache_hits: u64,
    /// Subscriptions started (domains followed since start).
    pub subscriptions: u64,
    /// Domains followed now.
    pub domains: u64,
    /// Domains refused (each attempt).
    pub domains_refused: u64,
    /// Names not cached because the cache was full.
    pub names_refused: u64,
    /// IRDs fetched (first reads and re-reads).
    pub ird_fetches: u64,
    /// Re-reads of followed domains' IRDs.
    pub ird_refreshes: u64,
    /// Domains moved to new gRPC endpoints by a re-read IRD.
    pub ird_moves: u64,
    /// Re-read IRDs refused (another origin or root named or served).
    pub ird_refused: u64,
    /// Addresses not looked up because they are special-purpose (private,
    /// loopback, …), each time one was to be located.
    pub addresses_skipped: u64,
}

#[derive(Default)]
struct Counters {
    dns_lookups: AtomicU64,
    name_cache_hits: AtomicU64,
    subscriptions: AtomicU64,
    domains_refused: AtomicU64,
    names_refused: AtomicU64,
    ird_fetches: AtomicU64,
    ird_refreshes: AtomicU64,
    ird_moves: AtomicU64,
    ird_refused: AtomicU64,
    addresses_skipped: AtomicU64,
}

/// What a name answered, when it was asked, until when it is believed.
#[derive(Debug, Clone)]
struct Answer {
    outcome: Outcome,
    asked: Instant,
    until: Instant,
}

/// An address's IRD URIs, in the order to try them.
type Uris = Arc<[String]>;

/// One IRD URI's domain (or its refusal), shared by concurrent requests.
struct Slot {
    cell: OnceCell<Result<Arc<Domain>, DomainError>>,
    created: Instant,
}

/// One followed domain.
struct Domain {
    origin_id: String,
    /// The IRD it was found through, read again to follow its endpoints.
    ird: String,
    /// The root trusted for it (configured or pinned when it was first
    /// followed): new endpoints' directories must verify under it.
    root: PublicKey,
    /// Key id of the root its verified key list names now.
    current_root: Mutex<String>,
    /// Subscription failures in a row; at [`FAILURES_BEFORE_IRD`] the IRD is
    /// read again (`reread`).
    failures: std::sync::atomic::AtomicU32,
    reread: tokio::sync::Notify,
    /// The first-use pin file, moved forward when the root rotates, and the
    /// key id of the root it holds.
    pin: Option<(PathBuf, Mutex<String>)>,
    sub: Mutex<Option<Subscription>>,
    view: View,
    connected: AtomicBool,
    /// When `connected` last changed.
    changed_at: Mutex<Instant>,
}

/// Why a domain's maps are not used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Up,
    Down,
}

impl Domain {
    fn set_connected(&self, up: bool) {
        if self.connected.swap(up, Ordering::AcqRel) != up {
            *self.changed_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }

    /// The cost map to rank by, and whether the domain is up.
    fn state(&self, cost_map: Option<&ResourceId>, down_after: Duration) -> (Option<Arc<CostMapVersion>>, Health) {
        let st = self.view.load();
        let cm = st.cost_map(cost_map.map(ResourceId::as_str)).cloned();
        let fresh = cm.as_ref().is_some_and(|c| c.expires_at_ms >= now_ms() && c.network_map.expires_at_ms >= now_ms());
        let gone = !self.connected.load(Ordering::Acquire)
            && self.changed_at.lock().unwrap_or_else(|e| e.into_inner()).elapsed() >= down_after;
        (cm, if fresh && !gone { Health::Up } else { Health::Down })
    }
}

/// Where an address belongs.
#[derive(Clone)]
enum Location {
    Domain(Arc<Domain>),
    NoServer,
}

/// Verified views of several domains, found through DNS (see the module
/// doc). Cheap to clone; [`Domains::stop`] ends every subscription.
#[derive(Clone)]
pub struct Domains {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Domains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domains").field("config", &self.inner.cfg).field("stats", &self.stats()).finish()
    }
}

struct Inner {
    cfg: DomainsConfig,
    discoverer: Discoverer,
    names: Mutex<HashMap<String, Arc<OnceCell<Answer>>>>,
    /// Each address's walk, until its first name's answer expires: a tracker
    /// sees the same swarm in every request.
    addresses: Mutex<HashMap<IpAddr, (Option<Uris>, Instant)>>,
    /// When a full cache was last swept.
    swept: Mutex<Option<Instant>>,
    lookups: Semaphore,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// When a full `slots` was last swept.
    slots_swept: Mutex<Option<Instant>>,
    by_origin: Mutex<HashMap<String, Arc<Domain>>>,
    counters: Counters,
    /// TLS for `https://` IRDs, built on first use.
    ird_tls: std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Domains {
    /// A tracker view with `cfg`; subscriptions end on `shutdown`.
    pub fn new(cfg: DomainsConfig, shutdown: CancellationToken) -> Result<Domains, DiscoverError> {
        let discoverer = Discoverer::from_config(cfg.discovery.clone())?;
        let lookups = Semaphore::new(cfg.max_lookups.max(1));
        Ok(Domains {
            inner: Arc::new(Inner {
                cfg,
                discoverer,
                names: Mutex::default(),
                addresses: Mutex::default(),
                swept: Mutex::default(),
                lookups,
                slots: Mutex::default(),
                slots_swept: Mutex::default(),
                by_origin: Mutex::default(),
                counters: Counters::default(),
                ird_tls: std::sync::OnceLock::new(),
                // Its own token: stopping these domains ends nothing else.
                shutdown: shutdown.child_token(),
                tasks: TaskTracker::new(),
            }),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            dns_lookups: get(&c.dns_lookups),
            name_cache_hits: get(&c.name_cache_hits),
            subscriptions: get(&c.subscriptions),
            domains: lock(&self.inner.by_origin).len() as u64,
            domains_refused: get(&c.domains_refused),
            names_refused: get(&c.names_refused),
            ird_fetches: get(&c.ird_fetches),
            ird_refreshes: get(&c.ird_refreshes),
            ird_moves: get(&c.ird_moves),
            ird_refused: get(&c.ird_refused),
            addresses_skipped: get(&c.addresses_skipped),
        }
    }

    /// The origin ids of the domains followed now.
    pub fn origins(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.inner.by_origin).keys().cloned().collect();
        v.sort();
        v
    }

    /// The gRPC endpoints the domain of `origin` is followed through now.
    pub fn endpoints_of(&self, origin: &str) -> Option<Vec<String>> {
        let d = lock(&self.inner.by_origin).get(origin).cloned()?;
        let sub = lock(&d.sub);
        sub.as_ref().map(Subscription::endpoints)
    }

    /// The domain responsible for `ip`: its origin id, or why there is none
    /// (`Ok(None)`: DNS names no ALTO server for it).
    pub async fn domain_of(&self, ip: IpAddr) -> Result<Option<String>, DomainError> {
        match self.inner.discover(ip).await {
            None => Ok(None),
            Some(uris) => self.inner.first_domain(&uris).await.map(|d| Some(d.origin_id.clone())),
        }
    }

    /// Ranks `candidates` for `requester` (see the module doc) and returns the
    /// best `n`.
    pub async fn rank(&self, requester: IpAddr, candidates: &[IpAddr], n: usize) -> Result<Vec<Ranked>, RankError> {
        let cfg = &self.inner.cfg;
        if candidates.len() > cfg.max_candidates {
            return Err(RankError::TooManyCandidates { given: candidates.len(), max: cfg.max_candidates });
        }
        let mut unique: Vec<IpAddr> = Vec::with_capacity(candidates.len() + 1);
        let mut seen = std::collections::HashSet::with_capacity(candidates.len() + 1);
        for ip in std::iter::once(&requester).chain(candidates) {
            if seen.insert(*ip) {
                unique.push(*ip);
            }
        }
        let located = self.inner.locate_all(unique).await;
        let where_is = |ip: &IpAddr| located.get(ip).cloned().unwrap_or(Location::NoServer);
        let (home, home_cm) = match where_is(&requester) {
            Location::Domain(d) => {
                let (cm, health) = d.state(cfg.cost_map.as_ref(), cfg.down_after);
                (Some(d), cm.filter(|_| health == Health::Up))
            }
            Location::NoServer => (None, None),
        };
        let src = home_cm.as_ref().and_then(|cm| {
            let pid = cm.network_map.map.lookup(requester)?;
            cm.map.index_of(pid.as_str())
        });
        // Each domain's state once per request, not once per candidate.
        let mut states: HashMap<*const Domain, (Option<Arc<CostMapVersion>>, Health)> = HashMap::new();
        let mut out: Vec<Ranked> = candidates
            .iter()
            .map(|&ip| match where_is(&ip) {
                Location::NoServer => Ranked { ip, domain: None, pid: None, cost: None, standing: Standing::NoServer },
                Location::Domain(d) => {
                    let (cm, health) = states
                        .entry(Arc::as_ptr(&d))
                        .or_insert_with(|| d.state(cfg.cost_map.as_ref(), cfg.down_after))
                        .clone();
                    let pid = cm.as_ref().and_then(|c| c.network_map.map.lookup(ip).cloned());
                    let domain = Some(d.origin_id.clone());
                    let pid_s = pid.as_ref().map(ToString::to_string);
                    if health == Health::Down {
                        return Ranked { ip, domain, pid: pid_s, cost: None, standing: Standing::Down };
                    }
                    let same = home.as_ref().is_some_and(|h| Arc::ptr_eq(h, &d));
                    if !same {
                        let cost = cfg.inter_domain_cost;
                        let standing = if cost.is_some() { Standing::Priced } else { Standing::OtherDomain };
                        return Ranked { ip, domain, pid: pid_s, cost, standing };
                    }
                    let cost = match (&home_cm, src, pid.as_ref()) {
                        (Some(cm), Some(s), Some(p)) => cm.map.index_of(p.as_str()).and_then(|t| cm.map.cost_at(s, t)),
                        _ => None,
                    };
                    let standing = if cost.is_some() { Standing::Priced } else { Standing::Unpriced };
                    Ranked { ip, domain, pid: pid_s, cost, standing }
                }
            })
            .collect();
        // Stable: ties keep the caller's order.
        out.sort_by(|a, b| {
            a.standing.cmp(&b.standing).then_with(|| match (a.cost, b.cost) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
        });
        out.truncate(n);
        Ok(out)
    }

    /// Ends every subscription and waits for them.
    pub async fn stop(&self) {
        self.inner.shutdown.cancel();
        let subs: Vec<Subscription> =
            lock(&self.inner.by_origin).values().filter_map(|d| lock(&d.sub).take()).collect();
        for s in subs {
            s.stop().await;
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a full cache whose last sweep `swept` records may be swept now:
/// at most once a second, so a flood of new entries costs no full scan each.
fn sweep_due(swept: &Mutex<Option<Instant>>, now: Instant) -> bool {
    let mut last = lock(swept);
    if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
        return false;
    }
    *last = Some(now);
    true
}

impl Inner {
    /// Every address's location, resolved with bounded parallelism until the
    /// request's deadline.
    async fn locate_all(self: &Arc<Self>, addrs: Vec<IpAddr>) -> HashMap<IpAddr, Location> {
        let mut out = HashMap::with_capacity(addrs.len());
        let mut pending = futures::stream::iter(addrs)
            .map(|ip| {
                let me = self.clone();
                async move { (ip, me.locate(ip).await) }
            })
            .buffer_unordered(RESOLVE_PARALLEL);
        let deadline = tokio::time::sleep(self.cfg.resolve_deadline);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = pending.next() => match next {
                    Some((ip, loc)) => { out.insert(ip, loc); }
                    None => break,
                },
                _ = &mut deadline => {
                    warn!(resolved = out.len(), "ranking request hit its resolve deadline; the rest rank as unknown");
                    break;
                }
            }
        }
        out
    }

    async fn locate(self: &Arc<Self>, ip: IpAddr) -> Location {
        let Some(uris) = self.discover(ip).await else { return Location::NoServer };
        match self.first_domain(&uris).await {
            Ok(d) => Location::Domain(d),
            Err(_) => Location::NoServer,
        }
    }

    /// The domain behind the first of `uris` whose IRD can be fetched and
    /// whose gRPC endpoint answers, in order (RFC 8686 §3.1: the URIs are
    /// tried in NAPTR order and preference). A domain refused for trust stops
    /// there: the next URI is only for a server that cannot be reached.
    async fn first_domain(self: &Arc<Self>, uris: &[String]) -> Result<Arc<Domain>, DomainError> {
        let mut last = None;
        // A name may yield many URIs, each an IRD fetch and gRPC connects to
        // hosts its zone picks: only the first few are tried.
        if uris.len() > MAX_URIS_TRIED {
            refused("uris");
        }
        for uri in uris.iter().take(MAX_URIS_TRIED) {
            match self.domain(uri).await {
                Ok(d) => return Ok(d),
                Err(e @ (DomainError::Ird { .. } | DomainError::Unreachable { .. })) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| DomainError::Ird { uri: String::new(), reason: "no URI".into() }))
    }

    /// Whether a full cache may be swept for expired entries now: at most
    /// once a second, so a flood of new names costs no full scan each.
    fn may_sweep(&self, now: Instant) -> bool {
        sweep_due(&self.swept, now)
    }

    /// RFC 8686 for `ip` through the name cache: the IRD URIs, if any.
    /// Names that failed temporarily in this walk are asked once more after
    /// all were asked once (RFC 8686 §3.5).
    async fn discover(&self, ip: IpAddr) -> Option<Uris> {
        if self.discoverer.walks(ip).is_err() {
            self.counters.addresses_skipped.fetch_add(1, Ordering::Relaxed);
            refused("special_address");
            return None;
        }
        let now = Instant::now();
        if let Some((uris, until)) = lock(&self.addresses).get(&ip)
            && *until > now
        {
            return uris.clone();
        }
        // The walk holds as long as every name it asked holds.
        let mut until = now + self.cfg.cache_max;
        let mut found = None;
        let mut again = Vec::new();
        let len = if ip.to_canonical().is_ipv4() { self.cfg.prefix_v4 } else { self.cfg.prefix_v6 };
        for name in reverse_names_within(ip, len) {
            let answer = self.name(&name).await;
            until = until.min(answer.until);
            // RFC 8686 §3.5: any other answer, unusable records included,
            // means "ask the next name".
            if let Some(uris) = answer.outcome.uris() {
                found = Some(uris.iter().map(|c| c.uri.clone()).collect::<Uris>());
                break;
            }
            // A failure cached from an earlier walk is not asked again before it expires.
            if matches!(answer.outcome, Outcome::Failed { temporary: true, .. }) && answer.asked >= now {
                again.push((name, answer.asked));
            }
        }
        if found.is_none() {
            for (name, asked) in again {
                let answer = self.name_again(&name, asked).await;
                until = until.min(answer.until);
                if let Some(uris) = answer.outcome.uris() {
                    found = Some(uris.iter().map(|c| c.uri.clone()).collect::<Uris>());
                    break;
                }
            }
        }
        let mut addresses = lock(&self.addresses);
        if addresses.len() >= self.cfg.max_names && self.may_sweep(now) {
            addresses.retain(|_, (_, t)| *t > now);
        }
        if addresses.len() < self.cfg.max_names {
            addresses.insert(ip, (found.clone(), until));
        }
        found
    }

    /// `name` asked again after its answer asked at `failed` failed: a new
    /// lookup, unless another walk has asked again since (then shared).
    async fn name_again(&self, name: &str, failed: Instant) -> Answer {
        let cell = {
            let mut names = lock(&self.names);
            match names.get(name) {
                Some(c) if c.get().is_none_or(|a| a.asked > failed) => Some(c.clone()),
                _ if names.len() >= self.cfg.max_names && !names.contains_key(name) => None,
                _ => {
                    let c = Arc::new(OnceCell::new());
                    names.insert(name.to_owned(), c.clone());
                    Some(c)
                }
            }
        };
        match cell {
            Some(c) => c.get_or_init(|| self.ask(name)).await.clone(),
            None => self.ask(name).await,
        }
    }

    /// One name's answer: cached, or asked once however many want it.
    async fn name(&self, name: &str) -> Answer {
        let now = Instant::now();
        let cell = {
            let mut names = lock(&self.names);
            match names.get(name) {
                Some(c) if c.get().is_none_or(|a| a.until > now) => {
                    if c.initialized() {
                        self.counters.name_cache_hits.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(METRIC_CACHE_HITS).increment(1);
                    }
                    Some(c.clone())
                }
                _ => {
                    if names.len() >= self.cfg.max_names && self.may_sweep(now) {
                        names.retain(|_, c| c.get().is_none_or(|a| a.until > now));
                    }
                    if names.len() >= self.cfg.max_names {
                        None
                    } else {
                        let c = Arc::new(OnceCell::new());
                        names.insert(name.to_owned(), c.clone());
                        Some(c)
                    }
                }
            }
        };
        match cell {
            Some(c) => c.get_or_init(|| self.ask(name)).await.clone(),
            None => {
                self.counters.names_refused.fetch_add(1, Ordering::Relaxed);
                refused("names");
                self.ask(name).await
            }
        }
    }

    async fn ask(&self, name: &str) -> Answer {
        let _permit = self.lookups.acquire().await;
        let asked = Instant::now();
        let crate::discover::NameAnswer { outcome, ttl, queries } = self.discoverer.lookup_name(name).await;
        self.counters.dns_lookups.fetch_add(u64::from(queries), Ordering::Relaxed);
        let label = match &outcome {
            Outcome::Found { .. } => "found",
            Outcome::NoRecord | Outcome::NoAltoRecord { .. } => "none",
            Outcome::Refused { .. } => "refused",
            Outcome::Failed { .. } => "failed",
        };
        metrics::counter!(METRIC_LOOKUPS, "outcome" => label).increment(u64::from(queries));
        let keep = ttl.clamp(self.cfg.cache_min, self.cfg.cache_max.max(self.cfg.cache_min));
        Answer { outcome, asked, until: Instant::now() + keep }
    }

    /// The domain behind IRD `uri`: followed already, being set up by
    /// another request (shared), refused recently (remembered), or set up now.
    async fn domain(self: &Arc<Self>, uri: &str) -> Result<Arc<Domain>, DomainError> {
        let slot = {
            let mut slots = lock(&self.slots);
            let fresh = |s: &Slot| match s.cell.get() {
                None | Some(Ok(_)) => true,
                Some(Err(_)) => s.created.elapsed() < self.cfg.retry_after,
            };
            match slots.get(uri) {
                Some(s) if fresh(s) => s.clone(),
                _ => {
                    // Each name may point at many URIs, and names change:
                    // when there are as many as names cached, those not in
                    // use and older than the retry interval go (at most once a
                    // second); they are set up again when asked for.
                    if slots.len() >= self.cfg.max_names.max(1) && sweep_due(&self.slots_swept, Instant::now()) {
                        let keep = self.cfg.retry_after;
                        slots.retain(|_, s| {
                            Arc::strong_count(s) > 1 || (s.cell.initialized() && s.created.elapsed() < keep)
                        });
                    }
                    let s = Arc::new(Slot { cell: OnceCell::new(), created: Instant::now() });
                    slots.insert(uri.to_owned(), s.clone());
                    s
                }
            }
        };
        slot.cell
            .get_or_init(|| async {
                let r = self.connect(uri).await;
                if let Err(e) = &r {
                    self.counters.domains_refused.fetch_add(1, Ordering::Relaxed);
                    refused(e.reason());
                    warn!(ird = %uri, error = %e, "domain refused");
                }
                r
            })
            .await
            .clone()
    }

    /// Sets up the domain of IRD `uri` (the steps of the module doc).
    async fn connect(self: &Arc<Self>, uri: &str) -> Result<Arc<Domain>, DomainError> {
        let ird = self.fetch_ird(uri).await?;
        let (signed, dir) = self.first_directory(uri, &ird.grpc).await?;
        if let Some(claimed) = &ird.origin_id
            && *claimed != dir.origin_id
        {
            return Err(DomainError::Inconsistent {
                uri: uri.into(),
                claimed: claimed.clone(),
                served: dir.origin_id.clone(),
            });
        }
        let origin = dir.origin_id.clone();
        let presented = dir
            .key_chain
            .as_ref()
            .and_then(|c| c.current.as_ref())
            .and_then(|c| altocast_proto::verify::trust::KeyList::decode(c).ok())
            .map(|l| l.root);
        let (root, pin) = self.root_for(uri, &origin, presented.as_ref())?;
        let mut v = Verifier::new(TrustedKeys::root(root.clone()), Limits::default(), []);
        if let Err(e) = v.accept_directory(&signed, now_ms()) {
            return Err(DomainError::RootMismatch {
                origin,
                uri: uri.into(),
                trusted: root.id().to_string(),
                presented: presented.map_or_else(|| "(none)".to_owned(), |p| p.id().to_string()),
                reason: e.to_string(),
            });
        }
        let first_use = pin.is_some();
        let pin = match pin {
            Some(path) => Some(path),
            None => self.pin_path(&origin).filter(|p| p.exists() && !self.configured(uri, &origin)),
        };
        if first_use && let Some(path) = &pin {
            write_pin(path, &root)?;
            info!(origin = %origin, root = %root.id(), pin = %path.display(), "pinned the root on first use");
        }
        let domain = {
            let mut by_origin = lock(&self.by_origin);
            if let Some(d) = by_origin.get(&origin) {
                return Ok(d.clone());
            }
            if by_origin.len() >= self.cfg.max_domains {
                return Err(DomainError::TooMany { origin, uri: uri.into(), max: self.cfg.max_domains });
            }
            let mut cfg = Config::new(ird.grpc.clone(), TrustedKeys::root(root.clone()));
            cfg.tls = self.cfg.tls.clone();
            cfg.connect_timeout = self.cfg.ird_timeout;
            cfg.backoff_max = self.cfg.backoff_max;
            cfg.quarantine = self.cfg.backoff_max.max(Duration::from_secs(1));
            cfg.directory_refresh = self.cfg.directory_refresh;
            if let Some(cm) = &self.cfg.cost_map {
                cfg.resources = vec![cm.clone()];
            }
            let (tx, rx) = mpsc::channel(EVENT_QUEUE);
            // No state directory: nothing to restore, so nothing to refuse.
            let sub = Subscription::start(cfg, self.shutdown.clone(), Some(tx)).expect("no state directory");
            let d = Arc::new(Domain {
                origin_id: origin.clone(),
                ird: uri.to_owned(),
                root: root.clone(),
                current_root: Mutex::new(presented.as_ref().unwrap_or(&root).id().to_string()),
                failures: Default::default(),
                reread: tokio::sync::Notify::new(),
                pin: pin.map(|p| (p, Mutex::new(root.id().to_string()))),
                view: sub.view().clone(),
                sub: Mutex::new(Some(sub)),
                connected: AtomicBool::new(false),
                changed_at: Mutex::new(Instant::now()),
            });
            self.tasks.spawn(follow_link(Arc::downgrade(&d), rx));
            self.tasks.spawn(follow_ird(Arc::downgrade(self), Arc::downgrade(&d), self.shutdown.clone()));
            by_origin.insert(origin.clone(), d.clone());
            metrics::gauge!(METRIC_DOMAINS).set(by_origin.len() as f64);
            d
        };
        self.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(METRIC_SUBSCRIPTIONS).increment(1);
        info!(origin = %origin, ird = %uri, grpc = ?ird.grpc, root = %root.id(), "following domain");
        self.wait_ready(&domain).await;
        Ok(domain)
    }

    /// Waits (bounded) until the domain's view has the cost map to rank by.
    async fn wait_ready(&self, d: &Domain) {
        let mut changes = d.view.changes();
        let deadline = Instant::now() + self.cfg.ready_timeout;
        while d.view.load().cost_map(self.cfg.cost_map.as_ref().map(ResourceId::as_str)).is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(origin = %d.origin_id, "no cost map yet; its peers rank last until it arrives");
                return;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), changes.recv()).await;
        }
    }

    /// The root the operator configured for `origin` or the IRD host's domain.
    fn configured_root(&self, uri: &str, origin: &str) -> Option<&PublicKey> {
        let by_origin =
            self.cfg.roots.iter().find(|(s, _)| matches!(s, TrustScope::Origin(o) if o.eq_ignore_ascii_case(origin)));
        if let Some((_, k)) = by_origin {
            return Some(k);
        }
        let host = uri.parse::<http::Uri>().ok().and_then(|u| u.host().map(|h| h.to_ascii_lowercase()));
        let in_domain = |d: &str| host.as_deref().is_some_and(|h| h == d || h.ends_with(&format!(".{d}")));
        self.cfg.roots.iter().find(|(s, _)| matches!(s, TrustScope::Domain(d) if in_domain(d))).map(|(_, k)| k)
    }

    fn configured(&self, uri: &str, origin: &str) -> bool {
        self.configured_root(uri, origin).is_some()
    }

    /// `<pin dir>/<origin>.pem`, for an origin id that is a safe file name.
    fn pin_path(&self, origin: &str) -> Option<PathBuf> {
        let dir = self.cfg.pin_dir.as_ref()?;
        let safe = !origin.is_empty() && origin.len() <= 64 && origin.bytes().all(|b| b.is_ascii_alphanumeric());
        safe.then(|| dir.join(format!("{origin}.pem")))
    }

    /// The root to verify `origin` with: configured for the origin id, for
    /// the IRD host's domain, pinned, or (with a pin directory) the presented
    /// one, to be pinned once its directory verifies. Never anything else.
    fn root_for(
        &self,
        uri: &str,
        origin: &str,
        presented: Option<&PublicKey>,
    ) -> Result<(PublicKey, Option<PathBuf>), DomainError> {
        if let Some(k) = self.configured_root(uri, origin) {
            return Ok((k.clone(), None));
        }
        let untrusted = || DomainError::Untrusted { origin: origin.into(), uri: uri.into() };
        let Some(path) = self.pin_path(origin) else { return Err(untrusted()) };
        match std::fs::read_to_string(&path) {
            Ok(pem) => {
                let k = PublicKey::from_spki_pem(&pem)
                    .map_err(|e| DomainError::Pin { path: path.display().to_string(), reason: e.to_string() })?;
                Ok((k, None))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match presented {
                Some(k) => Ok((k.clone(), Some(path))),
                None => Err(untrusted()),
            },
            Err(e) => Err(DomainError::Pin { path: path.display().to_string(), reason: e.to_string() }),
        }
    }

    /// The first gRPC endpoint's signed directory (not verified yet), decoded.
    async fn first_directory(
        &self,
        uri: &str,
        grpc: &[String],
    ) -> Result<(pb::SignedDirectory, pb::Directory), DomainError> {
        let mut errors = Vec::new();
        for url in grpc {
            let got = async {
                let mut c = connect::connect_tls(url, self.cfg.ird_timeout, self.cfg.tls.as_ref())
                    .await
                    .map_err(|e| e.to_string())?;
                let signed =
                    connect::get_directory(&mut c, url, self.cfg.ird_timeout).await.map_err(|e| e.to_string())?;
                if signed.body.len() > MAX_DIRECTORY_BYTES {
                    return Err(format!("{url}: directory of {} bytes", signed.body.len()));
                }
                let dir = pb::Directory::decode(signed.body.clone())
                    .map_err(|e| format!("{url}: directory is malformed: {e}"))?;
                Ok::<_, String>((signed, dir))
            }
            .await;
            match got {
                Ok(d) => return Ok(d),
                Err(e) => errors.push(e),
            }
        }
        Err(DomainError::Unreachable { uri: uri.into(), reason: errors.join("; ") })
    }

    /// Reads domain `d`'s IRD again and, if it advertises other gRPC
    /// endpoints serving this origin under the domain's root, moves the
    /// subscription there (see the module doc). Counted and logged here.
    async fn refresh_ird(&self, d: &Domain) -> Refreshed {
        self.counters.ird_refreshes.fetch_add(1, Ordering::Relaxed);
        let outcome = match self.reread_ird(d).await {
            Ok(None) => Refreshed::Unchanged,
            Ok(Some(grpc)) => {
                let sub = lock(&d.sub);
                let Some(sub) = sub.as_ref() else { return Refreshed::Unchanged };
                info!(origin = %d.origin_id, ird = %d.ird, from = ?sub.endpoints(), to = ?grpc, "domain moved; following it");
                sub.set_endpoints(grpc);
                self.counters.ird_moves.fetch_add(1, Ordering::Relaxed);
                Refreshed::Moved
            }
            Err(e @ (DomainError::Ird { .. } | DomainError::Unreachable { .. })) => {
                warn!(origin = %d.origin_id, error = %e, "IRD re-read failed; the domain stays where it is");
                Refreshed::Failed
            }
            Err(e) => {
                self.counters.ird_refused.fetch_add(1, Ordering::Relaxed);
                refused(e.reason());
                warn!(origin = %d.origin_id, error = %e, "IRD re-read refused; the domain stays where it is");
                Refreshed::Refused
            }
        };
        let label = match outcome {
            Refreshed::Unchanged => "unchanged",
            Refreshed::Moved => "moved",
            Refreshed::Failed => "failed",
            Refreshed::Refused => "refused",
        };
        metrics::counter!(METRIC_IRD_REFRESHES, "outcome" => label).increment(1);
        outcome
    }

    /// Domain `d`'s IRD, read again: `Ok(None)` if it advertises the
    /// endpoints followed now, `Ok(Some(new))` if others that serve this
    /// origin's directory, verified under the domain's root.
    async fn reread_ird(&self, d: &Domain) -> Result<Option<Vec<String>>, DomainError> {
        let uri = d.ird.as_str();
        let ird = self.fetch_ird(uri).await?;
        if let Some(claimed) = ird.origin_id.as_ref().filter(|c| !c.eq_ignore_ascii_case(&d.origin_id)) {
            return Err(DomainError::IrdOrigin {
                uri: uri.into(),
                origin: d.origin_id.clone(),
                claimed: claimed.clone(),
            });
        }
        let current = lock(&d.current_root).clone();
        if let Some(claimed) = ird.root_key_id.as_ref().filter(|c| !c.eq_ignore_ascii_case(&current)) {
            return Err(DomainError::IrdRoot {
                uri: uri.into(),
                origin: d.origin_id.clone(),
                claimed: claimed.clone(),
                current,
            });
        }
        let now = lock(&d.sub).as_ref().map(Subscription::endpoints).unwrap_or_default();
        if ird.grpc == now {
            return Ok(None);
        }
        let (signed, dir) = self.first_directory(uri, &ird.grpc).await?;
        if dir.origin_id != d.origin_id {
            return Err(DomainError::Inconsistent {
                uri: uri.into(),
                claimed: d.origin_id.clone(),
                served: dir.origin_id,
            });
        }
        let mut v = Verifier::new(TrustedKeys::root(d.root.clone()), Limits::default(), []);
        if let Err(e) = v.accept_directory(&signed, now_ms()) {
            let presented = dir.key_chain.as_ref().and_then(|c| c.current.as_ref());
            let presented =
                presented.and_then(|c| altocast_proto::verify::trust::KeyList::decode(c).ok()).map(|l| l.root);
            return Err(DomainError::RootMismatch {
                origin: d.origin_id.clone(),
                uri: uri.into(),
                trusted: d.root.id().to_string(),
                presented: presented.map_or_else(|| "(none)".to_owned(), |p| p.id().to_string()),
                reason: e.to_string(),
            });
        }
        Ok(Some(ird.grpc))
    }

    /// Fetches and reads the IRD at `uri` (bounded in size and time).
    async fn fetch_ird(&self, uri: &str) -> Result<IrdAltocast, DomainError> {
        self.counters.ird_fetches.fetch_add(1, Ordering::Relaxed);
        let err = |reason: String| DomainError::Ird { uri: uri.into(), reason };
        let https = uri.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        let tls = match https {
            true => Some(
                self.ird_tls.get_or_init(|| ird_tls(self.cfg.ird_ca.as_deref())).clone().map_err(|e| err(e.clone()))?,
            ),
            false => None,
        };
        let body = tokio::time::timeout(self.cfg.ird_timeout, http_get(uri, tls, self.cfg.max_ird_bytes))
            .await
            .map_err(|_| err(format!("no answer within {:?}", self.cfg.ird_timeout)))?
            .map_err(err)?;
        parse_ird(&body).map_err(err)
    }
}

/// Tracks whether a domain's subscription has a live stream (and asks for
/// its IRD to be read again after repeated failures), and the root its
/// verified key chain names, moving a first-use pin forward when that root
/// rotated (PROTOCOL.md §9.5).
async fn follow_link(d: std::sync::Weak<Domain>, mut rx: mpsc::Receiver<Event>) {
    while let Some(e) = rx.recv().await {
        let Some(d) = d.upgrade() else { return };
        match e {
            Event::Connected { .. } => {
                d.failures.store(0, Ordering::Relaxed);
                d.set_connected(true);
            }
            Event::Failover { .. } => {
                d.set_connected(false);
                if d.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_BEFORE_IRD {
                    d.failures.store(0, Ordering::Relaxed);
                    d.reread.notify_one();
                }
            }
            Event::Directory { directory, .. } => d.follow_root(&directory),
            _ => {}
        }
    }
}

/// Reads the domain's IRD again every [`DomainsConfig::ird_refresh`], and
/// when its subscription keeps failing (not sooner than
/// [`DomainsConfig::retry_after`] after the last read), until the domain or
/// the tracker is gone.
async fn follow_ird(inner: std::sync::Weak<Inner>, d: std::sync::Weak<Domain>, shutdown: CancellationToken) {
    let Some((every, gap)) =
        inner.upgrade().map(|i| (i.cfg.ird_refresh.max(Duration::from_millis(100)), i.cfg.retry_after))
    else {
        return;
    };
    let mut last = Instant::now();
    loop {
        let Some(reread) = d.upgrade() else { return };
        let woken = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(last + every) => false,
            _ = reread.reread.notified() => true,
        };
        drop(reread);
        if woken {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(last + gap) => {}
            }
        }
        let (Some(i), Some(d)) = (inner.upgrade(), d.upgrade()) else { return };
        i.refresh_ird(&d).await;
        last = Instant::now();
    }
}

/// What re-reading a domain's IRD did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refreshed {
    Unchanged,
    Moved,
    Failed,
    Refused,
}

impl Domain {
    /// The subscription accepted `dir` under the chain from the pinned root,
    /// so the root of its current key list is the root reached.
    fn follow_root(&self, dir: &pb::Directory) {
        let current = dir.key_chain.as_ref().and_then(|c| c.current.as_ref());
        let Some(root) = current.and_then(|c| altocast_proto::verify::trust::KeyList::decode(c).ok()).map(|l| l.root)
        else {
            return;
        };
        root.id().as_str().clone_into(&mut lock(&self.current_root));
        let Some((path, pinned)) = &self.pin else { return };
        let mut pinned = lock(pinned);
        if *pinned == root.id().as_str() {
            return;
        }
        match write_pin(path, &root) {
            Ok(()) => {
                info!(origin = %self.origin_id, from = %pinned, to = %root.id(), pin = %path.display(), "root rotated; pin updated");
                *pinned = root.id().to_string();
            }
            Err(e) => warn!(origin = %self.origin_id, error = %e, "root rotated; the pin could not be updated"),
        }
    }
}

/// Pins `root` the way every client does (atomically, synced: [`crate::state::write_pin`]).
fn write_pin(path: &std::path::Path, root: &PublicKey) -> Result<(), DomainError> {
    crate::state::write_pin(path, root).map_err(|e| {
        let reason = match e {
            crate::state::StateError::Pin { reason, .. } => reason,
            other => other.to_string(),
        };
        DomainError::Pin { path: path.display().to_string(), reason }
    })
}

/// What an IRD's `meta.altocast` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrdAltocast {
    /// The gRPC URLs to subscribe to.
    pub grpc: Vec<String>,
    /// The origin id it claims (checked against the verified directory).
    pub origin_id: Option<String>,
    /// The root key id it claims (informative: only verification decides).
    pub root_key_id: Option<String>,
}

/// Reads an RFC 7285 IRD's `meta.altocast` member (see `rproxy::alto`).
pub fn parse_ird(body: &[u8]) -> Result<IrdAltocast, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let meta = v.get("meta").ok_or("no \"meta\" member (not an RFC 7285 IRD)")?;
    let a =
        meta.get("altocast").ok_or("meta has no \"altocast\" member: the server advertises no altocast endpoint")?;
    let urls = a.get("grpc").and_then(|g| g.as_array()).ok_or("meta.altocast has no \"grpc\" array")?;
    if urls.is_empty() || urls.len() > MAX_GRPC_URLS {
        return Err(format!("meta.altocast.grpc has {} URLs (1 to {MAX_GRPC_URLS} accepted)", urls.len()));
    }
    let mut grpc = Vec::with_capacity(urls.len());
    for (i, u) in urls.iter().enumerate() {
        let s = u.as_str().ok_or_else(|| format!("meta.altocast.grpc[{i}] is not a string"))?;
        let ok = s.len() <= 255
            && (s.starts_with("http://") || s.starts_with("https://"))
            && !s.contains('@')
            && s.parse::<http::Uri>().is_ok_and(|p| p.host().is_some_and(|h| !h.is_empty()));
        if !ok {
            let shown: String = s.chars().take(80).collect();
            return Err(format!("meta.altocast.grpc[{i}] {shown:?} is not an http:// or https:// URL with a host"));
        }
        grpc.push(s.to_owned());
    }
    let id = |k: &str| -> Result<Option<String>, String> {
        match a.get(k) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) if s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(format!("meta.altocast.{k} is not a key id")),
        }
    };
    Ok(IrdAltocast { grpc, origin_id: id("origin-id")?, root_key_id: id("root-key-id")? })
}

/// The TLS client for `https://` IRDs: rustls (ring), trusting `ca_pem` or
/// the platform's root store.
fn ird_tls(ca_pem: Option<&[u8]>) -> Result<tokio_rustls::TlsConnector, String> {
    use tokio_rustls::rustls::{
        self,
        pki_types::{CertificateDer, pem::PemObject as _},
    };
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("CA file: {e}"))?;
                roots.add(cert).map_err(|e| format!("CA file: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A certificate the store holds that rustls cannot use is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err("no CA certificate to check https IRDs with (give --ca, or install the system's roots)".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// GET `uri` over HTTP/1.1 (over TLS with `tls` for `https://`); the body
/// if 200, at most `limit` bytes.
async fn http_get(uri: &str, tls: Option<tokio_rustls::TlsConnector>, limit: usize) -> Result<Bytes, String> {
    let parsed: http::Uri = uri.parse().map_err(|_| "not a URI".to_owned())?;
    let https = parsed.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("https"));
    let authority = parsed.authority().ok_or("no host")?.clone();
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("connect: {e}"))?;
    match (https, tls) {
        (true, Some(tls)) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("TLS server name {host:?}: {e}"))?;
            let stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
            exchange(stream, &parsed, authority.as_str(), limit).await
        }
        (true, None) => Err("an https IRD needs TLS settings".into()),
        (false, _) => exchange(tcp, &parsed, authority.as_str(), limit).await,
    }
}

/// One GET over `io`.
async fn exchange<S>(io: S, parsed: &http::Uri, authority: &str, limit: usize) -> Result<Bytes, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt as _;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let path = parsed.path_and_query().map_or("/", |p| p.as_str());
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/alto-directory+json,application/alto-error+json")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let result = async {
        let resp = send.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("HTTP status {}", resp.status()));
        }
        let body = http_body_util::Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| format!("body (at most {limit} bytes): {e}"))?;
        Ok(body.to_bytes())
    }
    .await;
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refused IRD URIs are remembered for the retry interval, not for ever:
    /// names that point at new URIs every time they are asked (many per
    /// name since a NAPTR answer may carry many) do not grow the map
    /// without bound.
    #[tokio::test(start_paused = true)]
    async fn refused_ird_uris_do_not_pile_up() {
        let cfg = DomainsConfig { max_names: 8, retry_after: Duration::from_secs(60), ..DomainsConfig::default() };
        let domains = Domains::new(cfg, CancellationToken::new()).expect("domains");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        for round in 0..10 {
            for i in 0..8 {
                let uri = format!("http://127.0.0.1:{port}/ird-{round}-{i}");
                assert!(domains.inner.domain(&uri).await.is_err(), "{uri}");
            }
            tokio::time::advance(Duration::from_secs(61)).await;
        }
        let kept = lock(&domains.inner.slots).len();
        assert!(kept <= 8, "{kept} IRD URIs remembered");
    }

    #[test]
    fn trust_scopes_are_origin_ids_or_domains() {
        assert_eq!(TrustScope::parse("0123456789ABCDEF"), Ok(TrustScope::Origin("0123456789abcdef".into())));
        assert_eq!(TrustScope::parse("ISP-a.Example."), Ok(TrustScope::Domain("isp-a.example".into())));
        for bad in ["", "a..b", "a b", "é.example"] {
            assert!(TrustScope::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_ird_must_name_grpc_urls_and_key_ids() {
        let ok = br#"{"meta":{"altocast":{"grpc":["http://127.0.0.1:7100"],"origin-id":"00aa","root-key-id":"11bb"}},"resources":{}}"#;
        let a = parse_ird(ok).expect("valid");
        assert_eq!(a.grpc, ["http://127.0.0.1:7100"]);
        assert_eq!((a.origin_id.as_deref(), a.root_key_id.as_deref()), (Some("00aa"), Some("11bb")));
        for (body, why) in [
            (&br#"{"meta":{}}"#[..], "no \"altocast\""),
            (br#"{"resources":{}}"#, "no \"meta\""),
            (br#"{"meta":{"altocast":{"origin-id":"00aa"}}}"#, "no \"grpc\""),
            (br#"{"meta":{"altocast":{"grpc":[]}}}"#, "0 URLs"),
            (br#"{"meta":{"altocast":{"grpc":["ftp://x"]}}}"#, "grpc[0]"),
            (br#"{"meta":{"altocast":{"grpc":["http://u@x"]}}}"#, "grpc[0]"),
            (br#"{"meta":{"altocast":{"grpc":["http://x"],"origin-id":"../etc"}}}"#, "origin-id"),
            (b"nope", "not JSON"),
        ] {
            match parse_ird(body) {
                Err(e) => assert!(e.contains(why), "{e} (wanted {why})"),
                Ok(a) => panic!("accepted {a:?}"),
            }
        }
    }
}
