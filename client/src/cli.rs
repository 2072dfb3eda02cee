//! The `altocast` command-line tool (DESIGN §8): `watch`, `get`, `rank`,
//! `lookup`, `directory`, `discover`, `tracker`. Everything it prints as ALTO data has
//! been verified against the trusted origin key (`discover` prints only where
//! DNS says the ALTO server is); errors are one line on stderr with a non-zero
//! exit.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use altocast_proto::{Freshness, Limits, MapState, PublicKey, ResourceId, TrustedKeys, Verifier, model::json, pb};
use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::{
    Config, Subscription,
    connect::{self, DistributionClient},
    discover::Discoverer,
    now_ms, rank,
    view::{CostMapVersion, NetworkMapVersion},
};

/// Verified ALTO network information from an altocast origin or RProxy.
#[derive(Debug, Parser)]
#[command(name = "altocast", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Common {
    /// Endpoint URL; repeat to give fallbacks, tried in order.
    #[arg(long = "endpoint", env = "ALTOCAST_ENDPOINT", default_value = "http://127.0.0.1:7100")]
    endpoints: Vec<String>,
    /// The origin's root key (SPKI PEM, from `altocast-server pubkey --root`): its key lists say which keys
    /// sign, so update-key rotations and revocations need nothing from you.
    #[arg(long, env = "ALTOCAST_TRUST_ROOT")]
    trust_root: Option<PathBuf>,
    /// A fixed update key (SPKI PEM, from `altocast-server pubkey`) instead of the root: stops working when the
    /// operator rotates that key.
    #[arg(long, env = "ALTOCAST_TRUST_KEY")]
    trust_key: Option<PathBuf>,
    /// Pin file: on first use, record the root the endpoint's directory names (its directory must verify under
    /// it); afterwards trust only that root (and the roots it rotates to), refusing any other.
    #[arg(long, env = "ALTOCAST_TRUST_ON_FIRST_USE")]
    trust_on_first_use: Option<PathBuf>,
    /// Directory for the last accepted directory, so no older directory or key list is accepted after a
    /// restart.
    #[arg(long, env = "ALTOCAST_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// CA (PEM) that `https://` endpoints' certificates must chain to.
    #[arg(long, env = "ALTOCAST_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for endpoints that require one (mTLS); needs --key.
    #[arg(long, env = "ALTOCAST_CERT")]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, env = "ALTOCAST_KEY")]
    key: Option<PathBuf>,
}

impl Common {
    fn tls(&self) -> anyhow::Result<Option<connect::ClientTls>> {
        connect::ClientTls::from_files(self.ca.as_deref(), self.cert.as_deref(), self.key.as_deref())
            .map_err(|e| anyhow!("TLS: {e}"))
    }

    /// The first-use pin file, when it is what is trusted: with a configured
    /// root or key it is neither read nor written (PROTOCOL.md §9.5).
    fn pin_file(&self) -> Option<&std::path::Path> {
        (self.trust_root.is_none() && self.trust_key.is_none()).then_some(self.trust_on_first_use.as_deref())?
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print one line per verified update until interrupted.
    Watch {
        #[command(flatten)]
        common: Common,
        /// Resource to follow; repeat for several. Default: all.
        #[arg(long)]
        resource: Vec<String>,
        /// Exit after this many updates.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Print a verified resource as RFC 7285 JSON.
    Get {
        #[command(flatten)]
        common: Common,
        /// The resource id.
        #[arg(long)]
        resource: String,
    },
    /// Rank peers by network cost from a source address.
    Rank {
        #[command(flatten)]
        common: Common,
        /// Cost map to use. Default: the first in the directory.
        #[arg(long)]
        resource: Option<String>,
        /// The requesting peer's address.
        #[arg(long)]
        src: IpAddr,
        /// Candidate peer addresses.
        #[arg(required = true)]
        peers: Vec<IpAddr>,
    },
    /// Print the PID an address belongs to.
    Lookup {
        #[command(flatten)]
        common: Common,
        /// Network map to use. Default: the first in the directory.
        #[arg(long)]
        resource: Option<String>,
        /// The address.
        ip: IpAddr,
    },
    /// Print the verified directory: resources, keys, RProxies.
    Directory {
        #[command(flatten)]
        common: Common,
    },
    /// Find through DNS the ALTO server (its IRD URI) responsible for an
    /// address (RFC 8686) or a domain (RFC 7286).
    ///
    /// Both are U-NAPTR lookups for --service (default "ALTO:https"): only NAPTR
    /// records of that application service listing that protocol count (case
    /// does not matter; other services are ignored), in order then preference;
    /// once a usable record is found, records of a higher order are not
    /// considered (RFC 3403 §4.1). Terminal records (flags "U") give a URI
    /// through a regexp of the form !^.*$!https://…! (for ALTO:https and
    /// ALTO:http its scheme must be the protocol asked; for another service
    /// it must be an absolute URI); non-terminal ones (empty flags, a replacement, no
    /// regexp) name the next name to ask, followed up to --max-naptr-chain
    /// times. For --ip, the reverse-tree names are asked
    /// longest prefix first: IPv4 /32, /24, /16, /8 (in-addr.arpa.), IPv6 /128,
    /// /64, /56, /48, /40, /32 (ip6.arpa.); the first name with a usable record
    /// answers, with every URI of its lowest usable order. With both --ip and --domain, the
    /// domain is asked only when no reverse name answered: the address's own
    /// record is the more specific answer. A name whose ALTO records are all
    /// unusable (bad regexp, wrong scheme, more than 32 NAPTR records) is noted
    /// and the next name asked; a lookup that times out or fails with SERVFAIL
    /// is asked once more after every other name was asked (RFC 8686 §3.5).
    /// Private, loopback, link-local and other special-purpose addresses are
    /// not looked up by default (altocast's choice: RFC 8686 §5.1.3 warns that
    /// it "may be problematic" and suggests RFC 7286 instead, so --domain is
    /// still asked) unless --discover-private is given.
    ///
    /// Prints one line per name asked ("tried NAME: …"), then one line per URI
    /// found, in the order to try them ("found URI at NAME ttl=…s order=…
    /// preference=…"), or "skipped ADDR: …"; names that failed temporarily
    /// are named on stderr ("note: …", RFC 8686 §3.5: discovering again later
    /// might give a more accurate answer). DNS is not a trust root: the URIs
    /// only say where to look; trust what is served there only through
    /// --trust-root, --trust-key or a first-use pin.
    Discover {
        /// The address whose ALTO server to find (RFC 8686 reverse-tree lookups).
        #[arg(long, required_unless_present = "domain")]
        ip: Option<IpAddr>,
        /// A domain whose ALTO server to find (RFC 7286); asked after the
        /// address's names when --ip is given too.
        #[arg(long)]
        domain: Option<String>,
        /// Ask only this nameserver (IP address, port 53 unless given), over UDP
        /// and TCP. Default: the system resolver configuration.
        #[arg(long, env = "ALTOCAST_DNS", value_name = "ADDR[:PORT]", value_parser = parse_dns)]
        dns: Option<SocketAddr>,
        /// Seconds each DNS exchange may take.
        #[arg(long, value_name = "SECS", default_value_t = crate::discover::LOOKUP_TIMEOUT.as_secs())]
        timeout: u64,
        #[command(flatten)]
        discovery: DiscoveryArgs,
    },
    /// Serve a multi-domain tracker: POST /rank and the gRPC
    /// altocast.v1.Tracker/Rank rank candidate peers for a requesting peer,
    /// each against its own domain's verified maps.
    ///
    /// Request: {"requester": IP, "candidates": [IP, …], "count": N}; reply:
    /// {"peers": [{"ip", "domain", "pid", "cost", "standing"}, …]}, the best
    /// N. GET /stats shows the counters. The gRPC service (h2c on the same
    /// port, with grpc.health.v1 and reflection) answers the same ranking
    /// under the same limits. For each address not seen before, the ALTO server
    /// responsible for it is found through DNS (RFC 8686 reverse-tree U-NAPTR
    /// lookups for ALTO:https, each name's answer cached for its TTL within
    /// --cache-min-secs..--cache-max-secs); its IRD's meta.altocast.grpc says
    /// where to subscribe, and the origin's signed directory must verify under
    /// the root trusted for it: a --trust-root for its origin id or for the
    /// IRD host's DNS domain, else a first-use pin in --pin-dir. DNS and the
    /// IRD are never a trust root: with neither, the domain is refused. A
    /// followed domain's IRD is read again every --ird-refresh-secs (and
    /// after repeated subscription failures); new gRPC endpoints there are
    /// followed, keeping the verified state; an IRD naming another origin or
    /// root is refused.
    ///
    /// Ranking: candidates in the requester's domain by cost from the
    /// requester's PID (other domains' among them at --inter-domain-cost, if
    /// set; else after them);
    /// then addresses with no ALTO server; last, peers of domains that are
    /// down (disconnected for --down-after-secs) or stale. Prints "altocast
    /// tracker listening on ADDR" when ready; runs until SIGINT/SIGTERM.
    Tracker(TrackerArgs),
}

/// Discovery options of `altocast discover` and `altocast tracker`.
#[derive(Debug, Args)]
pub struct DiscoveryArgs {
    /// The U-NAPTR service parameter asked for: ALTO:https, or ALTO:http (http:// IRDs, no TLS). `altocast
    /// discover` takes any SERVICE:PROTOCOL (RFC 8686 §3.1: the procedure serves any U-NAPTR service); the
    /// tracker follows RFC 7285 IRDs, so only the two ALTO ones.
    #[arg(long, env = "ALTOCAST_DISCOVERY_SERVICE", default_value = crate::discover::SERVICE,
          value_parser = clap::builder::ValueParser::new(str::parse::<crate::discover::Service>))]
    service: crate::discover::Service,
    /// Also walk the reverse tree of private (RFC 1918, RFC 4193), shared, loopback, link-local and other
    /// special-purpose addresses; by default they are not looked up (altocast's choice, not an RFC rule: RFC 8686
    /// §5.1.3 says such a walk "may be problematic", working only with a DNS split horizon and DNSSEC trust
    /// anchors set up for it, and suggests RFC 7286 discovery instead). For labs and tests whose peers live in
    /// such blocks.
    #[arg(long)]
    discover_private: bool,
    /// Also accept http:// IRD URIs whose host is a loopback IP literal (127.0.0.0/8, [::1]) under the https
    /// service: for tests and single-machine demos only. Off by default: IRD URIs must be https://.
    #[arg(long)]
    allow_loopback_http: bool,
    /// Most non-terminal NAPTR records (empty flags) followed from one name asked; more are refused.
    #[arg(long, value_name = "N", default_value_t = crate::discover::MAX_NAPTR_CHAIN)]
    max_naptr_chain: usize,
    /// Validate DNSSEC (RFC 8686 §6.1): answers whose signatures do not verify are refused. Unsigned zones still
    /// answer; see --require-dnssec.
    #[arg(long)]
    validate_dnssec: bool,
    /// Use only NAPTR records DNSSEC validated as secure; unsigned or unvalidated ones are refused (implies
    /// --validate-dnssec). DNS stays a locator: what the URI serves is still verified against the trusted roots.
    #[arg(long, env = "ALTOCAST_REQUIRE_DNSSEC")]
    require_dnssec: bool,
    /// DNSSEC trust anchors: a file of DNSKEY records in zone-file syntax (as unbound's root.key) used instead of
    /// the IANA root keys built in (implies --validate-dnssec).
    #[arg(long, env = "ALTOCAST_DNSSEC_TRUST_ANCHOR", value_name = "FILE")]
    dnssec_trust_anchor: Option<PathBuf>,
}

impl DiscoveryArgs {
    fn apply(&self, cfg: &mut crate::discover::DiscoveryConfig) {
        cfg.service = self.service.clone();
        cfg.discover_private = self.discover_private;
        cfg.allow_loopback_http = self.allow_loopback_http;
        cfg.max_naptr_chain = self.max_naptr_chain;
        cfg.validate_dnssec = self.validate_dnssec;
        cfg.require_dnssec = self.require_dnssec;
        cfg.dnssec_trust_anchor = self.dnssec_trust_anchor.clone();
    }
}

/// `altocast tracker` options.
#[derive(Debug, Args)]
pub struct TrackerArgs {
    /// Address to serve POST /rank, GET /stats and the gRPC Tracker service on (port 0: a free port, printed when
    /// ready).
    #[arg(long, env = "ALTOCAST_TRACKER_LISTEN")]
    listen: SocketAddr,
    /// Ask only this nameserver (IP address, port 53 unless given). Default: the system resolver configuration.
    #[arg(long, env = "ALTOCAST_DNS", value_name = "ADDR[:PORT]", value_parser = parse_dns)]
    dns: Option<SocketAddr>,
    /// A root key (SPKI PEM) trusted for one origin id (16 hex characters) or for IRDs whose host is in one DNS
    /// domain; repeat for several.
    #[arg(long = "trust-root", value_name = "DOMAIN_OR_ORIGIN=FILE")]
    trust_root: Vec<String>,
    /// Directory of first-use pins: a domain with no --trust-root has the root its directory names recorded in
    /// DIR/<origin id>.pem on first contact, and any other root refused afterwards. Without it, such domains are
    /// refused.
    #[arg(long, env = "ALTOCAST_PIN_DIR", value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// Discover each IPv4 peer's prefix of this length instead of its address (RFC 8686 takes a prefix): 24
    /// asks one name per /24 instead of one per peer, and misses per-host (/32) records.
    #[arg(long, default_value_t = D.prefix_v4, value_parser = clap::value_parser!(u8).range(8..=32))]
    discover_prefix_v4: u8,
    /// Likewise for IPv6 peers (32 to 128).
    #[arg(long, default_value_t = D.prefix_v6, value_parser = clap::value_parser!(u8).range(32..=128))]
    discover_prefix_v6: u8,
    /// Most domains followed (one verified subscription each); more are refused.
    #[arg(long, default_value_t = D.max_domains)]
    max_domains: usize,
    /// Most DNS lookups in flight at once.
    #[arg(long, default_value_t = D.max_lookups)]
    max_lookups: usize,
    /// Most reverse-tree names cached; beyond it lookups are not cached.
    #[arg(long, default_value_t = D.max_names)]
    max_names: usize,
    /// Shortest time (seconds) a name's answer is cached; also for answers without a TTL (a failure, or "no
    /// record" without the zone's negative TTL).
    #[arg(long, default_value_t = D.cache_min.as_secs())]
    cache_min_secs: u64,
    /// Longest time (seconds) a name's answer is cached, whatever its TTL.
    #[arg(long, default_value_t = D.cache_max.as_secs())]
    cache_max_secs: u64,
    /// Seconds a refused or unreachable domain is remembered before it is tried again.
    #[arg(long, default_value_t = D.retry_after.as_secs())]
    retry_secs: u64,
    /// Seconds each DNS exchange may take (a name that times out is asked once more after the walk's others).
    #[arg(long, default_value_t = D.discovery.timeout.as_secs())]
    lookup_timeout_secs: u64,
    #[command(flatten)]
    discovery: DiscoveryArgs,
    /// Seconds one request may spend finding the domains of its addresses; the rest rank as having no server.
    #[arg(long, default_value_t = D.resolve_deadline.as_secs())]
    resolve_deadline_secs: u64,
    /// A domain whose subscription has been disconnected this many seconds is down: its peers rank last.
    #[arg(long, default_value_t = D.down_after.as_secs())]
    down_after_secs: u64,
    /// Cost given to candidates in another domain than the requester's, in the units of the requester's cost
    /// map: they rank among its candidates by that cost. Default: none, ranked after all of its own.
    #[arg(long)]
    inter_domain_cost: Option<f64>,
    /// Cost map to rank by in every domain (default: the first by id).
    #[arg(long)]
    cost_map: Option<String>,
    /// Most candidates in one request (400 / INVALID_ARGUMENT beyond).
    #[arg(long, default_value_t = D.max_candidates)]
    max_candidates: usize,
    /// Largest count (peers per reply) a request may ask for (400 / INVALID_ARGUMENT beyond).
    #[arg(long, default_value_t = T.max_count)]
    max_count: usize,
    /// Largest request body, bytes (413 / RESOURCE_EXHAUSTED beyond).
    #[arg(long, default_value_t = T.max_request_bytes)]
    max_request_bytes: usize,
    /// Requests ranked at once (503 / UNAVAILABLE beyond); also the HTTP/2 streams per connection.
    #[arg(long, default_value_t = T.max_in_flight)]
    max_in_flight: usize,
    /// Most open connections to --listen; more are accepted and closed at once.
    #[arg(long, default_value_t = T.max_connections)]
    max_connections: usize,
    /// Seconds a connection's first bytes and each HTTP/1 request head may take to arrive, and an HTTP/1
    /// connection may idle between requests, before it is closed; an HTTP/2 connection silent this long is pinged
    /// and closed if it does not answer within as long, and one with no stream open this long is closed.
    #[arg(long, default_value_t = T.header_timeout.as_secs())]
    header_timeout_secs: u64,
    /// Seconds a request body may take to arrive (408 / DEADLINE_EXCEEDED beyond).
    #[arg(long, default_value_t = T.body_timeout.as_secs())]
    body_timeout_secs: u64,
    /// Seconds to read a domain's IRD, and to reach its gRPC endpoint for the first directory.
    #[arg(long, default_value_t = D.ird_timeout.as_secs())]
    ird_timeout_secs: u64,
    /// Largest IRD body read, bytes.
    #[arg(long, default_value_t = D.max_ird_bytes)]
    max_ird_bytes: usize,
    /// Seconds between re-reads of each followed domain's IRD (its gRPC endpoints may move); it is also re-read
    /// after repeated subscription failures, at most once per --retry-secs.
    #[arg(long, default_value_t = D.ird_refresh.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    ird_refresh_secs: u64,
    /// Serve Prometheus metrics (altocast_tracker_*) on this address.
    #[arg(long, env = "ALTOCAST_METRICS")]
    metrics: Option<SocketAddr>,
    /// CA (PEM) that https:// IRDs' and gRPC endpoints' certificates must chain to. Default for IRDs: the
    /// system's root store.
    #[arg(long, env = "ALTOCAST_CA")]
    ca: Option<PathBuf>,
}

/// The defaults the tracker flags show.
const D: crate::domains::DomainsConfig = crate::domains::DomainsConfig::DEFAULT;
const T: crate::tracker::TrackerLimits = crate::tracker::TrackerLimits::DEFAULT;

impl TrackerArgs {
    fn config(&self) -> anyhow::Result<(crate::domains::DomainsConfig, crate::tracker::TrackerLimits)> {
        use crate::domains::TrustScope;
        let mut cfg = crate::domains::DomainsConfig::new();
        for t in &self.trust_root {
            let (scope, file) =
                t.split_once('=').ok_or_else(|| anyhow!("--trust-root {t:?}: expected DOMAIN_OR_ORIGIN=FILE"))?;
            let scope = TrustScope::parse(scope).map_err(|e| anyhow!("--trust-root {t:?}: {e}"))?;
            let key = read_public(std::path::Path::new(file), "trust root")?;
            cfg.roots.push((scope, key));
        }
        if let Some(dir) = &self.pin_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating --pin-dir {}", dir.display()))?;
        }
        let counts = [self.max_domains, self.max_lookups, self.max_names, self.max_candidates, self.max_count];
        let more = [self.max_request_bytes, self.max_in_flight, self.max_ird_bytes, self.max_connections];
        if counts.contains(&0) || more.contains(&0) {
            bail!("the --max-* limits must be at least 1");
        }
        if self.cache_min_secs > self.cache_max_secs {
            bail!("--cache-min-secs {} is above --cache-max-secs {}", self.cache_min_secs, self.cache_max_secs);
        }
        if self.inter_domain_cost.is_some_and(|c| !c.is_finite() || c < 0.0) {
            bail!("--inter-domain-cost must be a finite, non-negative number");
        }
        cfg.discovery.dns = self.dns;
        cfg.pin_dir = self.pin_dir.clone();
        cfg.prefix_v4 = self.discover_prefix_v4;
        cfg.prefix_v6 = self.discover_prefix_v6;
        cfg.max_domains = self.max_domains;
        cfg.max_lookups = self.max_lookups;
        cfg.max_names = self.max_names;
        cfg.cache_min = Duration::from_secs(self.cache_min_secs);
        cfg.cache_max = Duration::from_secs(self.cache_max_secs);
        cfg.retry_after = Duration::from_secs(self.retry_secs);
        cfg.discovery.timeout = Duration::from_secs(self.lookup_timeout_secs.max(1));
        self.discovery.apply(&mut cfg.discovery);
        if !cfg.discovery.service.is_alto() {
            bail!("--service {}: the tracker follows ALTO IRDs, so ALTO:https or ALTO:http", cfg.discovery.service);
        }
        cfg.resolve_deadline = Duration::from_secs(self.resolve_deadline_secs.max(1));
        cfg.down_after = Duration::from_secs(self.down_after_secs);
        cfg.inter_domain_cost = self.inter_domain_cost;
        cfg.cost_map = self.cost_map.as_deref().map(resource_arg).transpose()?;
        cfg.max_candidates = self.max_candidates;
        cfg.ird_timeout = Duration::from_secs(self.ird_timeout_secs.max(1));
        cfg.max_ird_bytes = self.max_ird_bytes;
        cfg.ird_refresh = Duration::from_secs(self.ird_refresh_secs);
        cfg.tls = connect::ClientTls::from_files(self.ca.as_deref(), None, None).map_err(|e| anyhow!("TLS: {e}"))?;
        cfg.ird_ca = cfg.tls.as_ref().and_then(|t| t.ca_pem.clone());
        let limits = crate::tracker::TrackerLimits {
            max_request_bytes: self.max_request_bytes,
            max_count: self.max_count,
            max_in_flight: self.max_in_flight,
            max_connections: self.max_connections,
            header_timeout: Duration::from_secs(self.header_timeout_secs.clamp(1, 86_400)),
            body_timeout: Duration::from_secs(self.body_timeout_secs.clamp(1, 86_400)),
        };
        Ok((cfg, limits))
    }
}

/// `--dns`: `ADDR:PORT`, `[V6]:PORT`, or an address alone (port 53).
fn parse_dns(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?} is not ADDR or ADDR:PORT (an IP address, e.g. 127.0.0.1:5353 or [::1]:53)"))
}

/// Entry point of the `altocast` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ALTOCAST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("altocast: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("altocast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn read_public(path: &std::path::Path, what: &str) -> anyhow::Result<PublicKey> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))?;
    PublicKey::from_spki_pem(&pem).with_context(|| format!("{what} {}", path.display()))
}

/// What a command trusts to begin with: a root, a fixed key, or a first-use
/// pin (recorded here on first contact). Never nothing.
async fn anchor(common: &Common) -> anyhow::Result<TrustedKeys> {
    if let Some(path) = &common.trust_root {
        return Ok(TrustedKeys::root(read_public(path, "trust root")?));
    }
    if let Some(path) = &common.trust_key {
        return Ok(TrustedKeys::new([read_public(path, "trust key")?]));
    }
    let Some(pin) = common.pin_file() else {
        bail!(
            "nothing is trusted: pass --trust-root FILE (from `altocast-server pubkey --root`), --trust-key FILE, \
             or --trust-on-first-use FILE"
        );
    };
    if let Some(root) = crate::state::read_pin(pin)? {
        return Ok(TrustedKeys::root(root));
    }
    // No pin yet, but a saved directory: the first use was the one that saved
    // it, so the root it had reached is the one to pin (PROTOCOL.md §9.5).
    if let Some(dir) = &common.state_dir
        && let Some(root) = crate::state::saved_root(dir)
    {
        let mut v = Verifier::new(TrustedKeys::root(root.clone()), Limits::default(), []);
        crate::state::restore(dir, &mut v)?;
        crate::state::write_pin(pin, &root)?;
        eprintln!(
            "altocast: pinned root {} from the saved directory in {} to {}; any other root is refused from now on",
            root.id(),
            dir.display(),
            pin.display()
        );
        return Ok(TrustedKeys::root(root));
    }
    // First contact: the root the directory's current key list names, which
    // the whole directory must then verify under.
    let (url, mut client) = first_reachable(common).await?;
    // Bounded like every other `GetDirectory` (PROTOCOL.md §8.8): an endpoint
    // that accepts the call and never answers must not hold the first use.
    let signed = connect::get_directory(&mut client, &url, connect::DIRECTORY_TIMEOUT).await?;
    let dir = pb::Directory::decode(signed.body.clone()).with_context(|| format!("{url}: directory is malformed"))?;
    let current = dir.key_chain.as_ref().and_then(|c| c.current.as_ref());
    let current = current.ok_or_else(|| anyhow!("{url}: the directory has no key chain; nothing to pin"))?;
    let root =
        altocast_proto::verify::trust::KeyList::decode(current).with_context(|| format!("{url}: key list"))?.root;
    let mut v = Verifier::accepting_all(TrustedKeys::root(root.clone()), Limits::default());
    v.accept_directory(&signed, now_ms()).with_context(|| format!("{url}: directory"))?;
    crate::state::write_pin(pin, &root)?;
    eprintln!(
        "altocast: pinned root {} of origin {} on first use ({url}) in {}; any other root is refused from now on",
        root.id(),
        dir.origin_id,
        pin.display()
    );
    Ok(TrustedKeys::root(root))
}

/// A verifier for `resources` that has accepted `url`'s directory: the
/// state directory's last directory restored first and the new one saved;
/// a pinned root moved forward when the chain rotated it.
async fn accepted(
    common: &Common,
    anchor: TrustedKeys,
    client: &mut DistributionClient,
    url: &str,
) -> anyhow::Result<(Verifier, pb::Directory)> {
    let mut v = Verifier::new(anchor, Limits::default(), []);
    if let Some(dir) = &common.state_dir {
        crate::state::restore(dir, &mut v)?;
    }
    let (signed, dir) = connect::directory(client, url, &mut v, now_ms())
        .await
        .map_err(anyhow::Error::from)
        .with_context(|| match common.pin_file() {
            Some(pin) => format!("refusing {url} (root pinned in {})", pin.display()),
            None => format!("refusing {url}"),
        })?;
    // An endpoint that only has directories older than one seen before
    // (restored from the state directory) cannot serve once that one expired.
    if let Some(e) = v.directory_stale(now_ms()) {
        bail!("refusing {url}: it serves no directory newer than the last one seen, which is stale: {e}");
    }
    if let Some(dir) = &common.state_dir {
        crate::state::save(dir, &signed).with_context(|| format!("saving to {}", dir.display()))?;
    }
    if let (Some(pin), Some(root)) = (common.pin_file(), v.keys().trusted_root()) {
        let pinned = crate::state::read_pin(pin)?;
        if pinned.as_ref() != Some(root) {
            crate::state::write_pin(pin, root)?;
            let from = pinned.map_or("none".to_owned(), |p| p.id().to_string());
            eprintln!("altocast: root {from} rotated to {}; {} updated", root.id(), pin.display());
        }
    }
    Ok((v, dir))
}

async fn first_reachable(common: &Common) -> anyhow::Result<(String, DistributionClient)> {
    let timeout = Duration::from_secs(common.timeout.max(1));
    let mut errors = Vec::new();
    for url in &common.endpoints {
        match connect::connect_tls(url, timeout, common.tls()?.as_ref()).await {
            Ok(c) => return Ok((url.clone(), c)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(anyhow!("no endpoint reachable: {}", errors.join("; ")))
}

/// Pulls and verifies `wanted` (and what it depends on) from the first
/// reachable endpoint.
async fn pull(common: &Common, wanted: &[ResourceId]) -> anyhow::Result<(Verifier, pb::Directory)> {
    let anchor = anchor(common).await?;
    let (url, mut client) = first_reachable(common).await?;
    let (base, dir) = accepted(common, anchor, &mut client, &url).await?;
    for w in wanted {
        if !dir.resources.iter().any(|r| r.resource_id == w.as_str()) {
            bail!("{url} has no resource {w:?} (see `altocast directory`)");
        }
    }
    let resources = connect::resources_for(&dir, wanted);
    // Each resource is a separate Fetch: a network map published between two
    // of them makes the cost map depend on a version fetched too early. That
    // is a race, not an attack: pull everything again (a few times).
    let mut attempt = 0;
    loop {
        attempt += 1;
        match pull_once(&mut client, &url, &base, &resources).await {
            Err(e)
                if attempt < 3
                    && e.downcast_ref::<altocast_proto::VerifyError>()
                        .is_some_and(|v| v.check() == altocast_proto::Check::Dependency) => {}
            r => return r.map(|v| (v, dir)),
        }
    }
}

async fn pull_once(
    client: &mut connect::DistributionClient,
    url: &str,
    base: &Verifier,
    resources: &[ResourceId],
) -> anyhow::Result<Verifier> {
    let mut verifier = base.clone();
    for r in resources {
        verifier.request(r.clone());
    }
    let now = now_ms();
    for r in resources {
        connect::fetch_into(client, url, r, &mut verifier, now).await.map_err(|e| match e {
            connect::ConnectError::Verify { error, .. } if error.check() == altocast_proto::Check::Dependency => {
                anyhow!(error)
            }
            connect::ConnectError::NotExposable {
                waiting: altocast_proto::Waiting::Expired { expires_at_ms }, ..
            } => {
                anyhow!("stale data: {r} expired {} s ago at {url}", (now - expires_at_ms) / 1000)
            }
            e => anyhow!(e),
        })?;
        if let Freshness::Stale { since_ms } = verifier.freshness(r.as_str(), now) {
            bail!("stale data: {r} expired {} s ago at {url}", (now - since_ms) / 1000);
        }
    }
    Ok(verifier)
}

fn first_of(dir: &pb::Directory, kind: pb::ResourceKind) -> anyhow::Result<ResourceId> {
    let r = dir
        .resources
        .iter()
        .find(|r| r.kind == kind as i32)
        .ok_or_else(|| anyhow!("the directory lists no {kind:?}"))?;
    Ok(ResourceId::new(&r.resource_id)?)
}

fn resource_arg(s: &str) -> anyhow::Result<ResourceId> {
    ResourceId::new(s).map_err(|e| anyhow!("--resource {s:?}: {e}"))
}

fn cost_map_version(v: &Verifier, id: &ResourceId) -> anyhow::Result<CostMapVersion> {
    let held = v.get(id.as_str()).ok_or_else(|| anyhow!("{id} not received"))?;
    let MapState::Cost(cm) = &held.state else { bail!("{id} is not a cost map") };
    let dep = cm.depends_on().ok_or_else(|| anyhow!("{id} names no network map"))?;
    let Some((seq, MapState::Network(nm))) = v.version(dep.resource_id.as_str(), dep.tag) else {
        bail!("{id} depends on {} version {}, which was not received", dep.resource_id, dep.tag.short());
    };
    Ok(CostMapVersion {
        resource_id: id.clone(),
        seq: held.seq,
        tag: held.tag,
        map: cm.clone(),
        network_map: std::sync::Arc::new(NetworkMapVersion {
            resource_id: dep.resource_id.clone(),
            seq,
            tag: dep.tag,
            map: nm.clone(),
            expires_at_ms: held.expires_at_ms,
        }),
        expires_at_ms: held.expires_at_ms,
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Tracker(args) => {
            let (cfg, limits) = args.config()?;
            if let Some(addr) = args.metrics {
                metrics_exporter_prometheus::PrometheusBuilder::new()
                    .with_http_listener(addr)
                    .install()
                    .with_context(|| format!("metrics listener on {addr}"))?;
                crate::domains::describe_metrics();
            }
            let shutdown = CancellationToken::new();
            let domains = crate::Domains::new(cfg, shutdown.clone())?;
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("binding --listen {}", args.listen))?;
            let addr = listener.local_addr().context("listener address")?;
            {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                writeln!(out, "altocast tracker listening on {addr}")?;
                out.flush()?;
            }
            let stop = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                stop.cancel();
            });
            let served = crate::tracker::serve(domains.clone(), listener, limits, shutdown.clone()).await;
            domains.stop().await;
            served.context("serving the tracker")?;
        }
        Command::Discover { ip, domain, dns, timeout, discovery } => {
            let mut cfg = crate::discover::DiscoveryConfig {
                dns,
                timeout: Duration::from_secs(timeout.max(1)),
                ..Default::default()
            };
            discovery.apply(&mut cfg);
            let discoverer = Discoverer::from_config(cfg)?;
            match discoverer.discover(ip, domain.as_deref()).await {
                Ok(found) => {
                    if let Some(s) = &found.skipped {
                        println!("skipped {s}");
                    }
                    for a in &found.tried {
                        println!("tried {a}");
                    }
                    for c in &found.uris {
                        let via = if c.via.is_empty() { String::new() } else { format!(" via {}", c.via.join(",")) };
                        println!(
                            "found {} at {} ttl={}s order={} preference={}{via}",
                            c.uri,
                            found.found_at,
                            found.ttl.as_secs(),
                            c.order,
                            c.preference
                        );
                    }
                    retry_note(&found.temporarily_failed());
                }
                Err(e) => {
                    if let crate::discover::DiscoverError::Skipped(s) = &e {
                        println!("skipped {s}");
                    }
                    for a in e.tried() {
                        println!("tried {a}");
                    }
                    retry_note(&e.temporarily_failed());
                    return Err(e.into());
                }
            }
        }
        Command::Directory { common } => {
            let anchor = anchor(&common).await?;
            let (url, mut client) = first_reachable(&common).await?;
            let (_, dir) = accepted(&common, anchor, &mut client, &url).await?;
            println!("origin {} directory seq {}", dir.origin_id, dir.seq);
            for r in &dir.resources {
                let kind = pb::ResourceKind::try_from(r.kind).map(|k| k.as_str_name()).unwrap_or("?");
                let ct = r.cost_type.as_ref().map(|c| format!(" {}", c.metric)).unwrap_or_default();
                let uses = if r.uses.is_empty() { String::new() } else { format!(" uses {}", r.uses.join(",")) };
                println!(
                    "resource {} {}{ct}{uses}",
                    r.resource_id,
                    kind.trim_start_matches("RESOURCE_KIND_").to_lowercase()
                );
            }
            for k in &dir.keys {
                println!("key {}", k.key_id);
            }
            for p in &dir.rproxies {
                println!("rproxy {p}");
            }
        }
        Command::Get { common, resource } => {
            let id = resource_arg(&resource)?;
            let (v, _) = pull(&common, std::slice::from_ref(&id)).await?;
            let held = v.get(id.as_str()).ok_or_else(|| anyhow!("{id} not received"))?;
            let body = match &held.state {
                MapState::Network(m) => json::network_map_json(&id, m),
                MapState::Cost(m) => json::cost_map_json(m),
            };
            println!("{body}");
        }
        Command::Lookup { common, resource, ip } => {
            let wanted: Vec<ResourceId> = resource.as_deref().map(resource_arg).transpose()?.into_iter().collect();
            let (v, dir) = pull(&common, &wanted).await?;
            let id = match wanted.first() {
                Some(id) => id.clone(),
                None => first_of(&dir, pb::ResourceKind::NetworkMap)?,
            };
            let Some(MapState::Network(nm)) = v.get(id.as_str()).map(|h| &h.state) else {
                bail!("{id} is not a network map")
            };
            match nm.lookup(ip) {
                Some(pid) => println!("{ip} {pid}"),
                None => bail!("{ip} is in no PID of {id}"),
            }
        }
        Command::Rank { common, resource, src, peers } => {
            let wanted: Vec<ResourceId> = resource.as_deref().map(resource_arg).transpose()?.into_iter().collect();
            let (v, dir) = pull(&common, &wanted).await?;
            let id = match wanted.first() {
                Some(id) => id.clone(),
                None => first_of(&dir, pb::ResourceKind::CostMap)?,
            };
            let cm = cost_map_version(&v, &id)?;
            for r in rank::rank(&cm, src, &peers) {
                let pid = r.pid.as_ref().map_or("-".to_owned(), |p| p.to_string());
                let cost = r.cost.map_or("unreachable".to_owned(), |c| c.to_string());
                println!("{} {pid} {cost}", r.peer);
            }
        }
        Command::Watch { common, resource, count } => {
            let keys = anchor(&common).await?;
            let resources = resource.iter().map(|r| resource_arg(r)).collect::<anyhow::Result<Vec<_>>>()?;
            let mut cfg = Config::new(common.endpoints.clone(), keys);
            cfg.state_dir = common.state_dir.clone();
            cfg.pin_file = common.pin_file().map(Into::into);
            cfg.tls = common.tls()?;
            cfg.resources = resources;
            let shutdown = CancellationToken::new();
            let (tx, mut rx) = tokio::sync::mpsc::channel(256);
            let sub = Subscription::start(cfg, shutdown.clone(), Some(tx))?;
            let mut changes = sub.view().changes();
            let mut seen = 0u64;
            let deadline = Duration::from_secs(common.timeout.max(1));
            let mut got_any = false;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    c = changes.recv() => {
                        let Ok(c) = c else { continue };
                        got_any = true;
                        let u = &c.update;
                        println!(
                            "{} seq={} tag={} kind={} {} bytes={} entries={} age={}ms",
                            u.resource_id, u.seq, u.tag.short(), u.kind.as_str(), c.resource_kind,
                            u.bytes, u.entries_changed, (c.applied_at_ms - u.issued_at_ms).max(0)
                        );
                        seen += 1;
                        if count.is_some_and(|n| seen >= n) {
                            break;
                        }
                    }
                    e = rx.recv() => match e {
                        Some(crate::Event::Rejected { endpoint, error }) => eprintln!("altocast: rejected update from {endpoint}: {error}"),
                        Some(crate::Event::Stale { resource_id, .. }) => eprintln!("altocast: {resource_id} is stale"),
                        Some(crate::Event::Failover { endpoint, reason }) if !got_any => {
                            eprintln!("altocast: {endpoint}: {reason}");
                        }
                        _ => {}
                    },
                    _ = tokio::time::sleep(deadline), if !got_any => {
                        sub.stop().await;
                        bail!("no verified update within {} s from {}", deadline.as_secs(), common.endpoints.join(", "));
                    }
                }
            }
            sub.stop().await;
        }
    }
    Ok(())
}

/// RFC 8686 §3.5: tell the caller that names failed temporarily and that
/// discovering again later might give a more accurate answer (on stderr, so
/// stdout keeps one line per name and per URI).
fn retry_note(names: &[&str]) {
    if !names.is_empty() {
        eprintln!(
            "note: {} failed temporarily; discovering again later might give a more accurate answer (RFC 8686 §3.5)",
            names.join(", ")
        );
    }
}
