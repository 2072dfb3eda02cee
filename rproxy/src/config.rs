//! RProxy configuration: flags, environment and an optional TOML file, with
//! precedence flags > file > environment > defaults. Validated before binding.

use std::{ffi::OsString, net::SocketAddr, path::PathBuf, time::Duration};

use altocast_proto::{PublicKey, TrustedKeys};
use anyhow::{Context as _, bail};
use clap::Parser;

use crate::{alto::HttpLimits, hub::HubConfig};

/// An altocast redistribution proxy: verifies what its upstreams send and fans
/// it out to many subscribers.
#[derive(Debug, Clone, Parser)]
#[command(name = "altocast-rproxy", version, about, args_override_self = true)]
pub struct Config {
    /// TOML file with any of these options (keys as the long flag names).
    #[arg(long, env = "ALTOCAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Upstream gRPC URL (origin or another RProxy); repeat for fallbacks, tried in order.
    #[arg(long = "upstream", env = "ALTOCAST_UPSTREAM", required = true, value_delimiter = ',')]
    pub upstreams: Vec<String>,
    /// Address to serve gRPC on.
    #[arg(long, env = "ALTOCAST_LISTEN", default_value = "127.0.0.1:7200")]
    pub listen: SocketAddr,
    /// The origin's root key (SPKI PEM, `altocast-server pubkey --root`): its key lists name the update keys,
    /// so rotations and revocations reach this RProxy with the directory.
    #[arg(long, env = "ALTOCAST_TRUST_ROOT", required_unless_present = "trust_key")]
    pub trust_root: Option<PathBuf>,
    /// A fixed update key (SPKI PEM, `altocast-server pubkey`) instead of the root.
    #[arg(long, env = "ALTOCAST_TRUST_KEY", conflicts_with = "trust_root")]
    pub trust_key: Option<PathBuf>,
    /// Directory for the last accepted directory, so no older directory or key list is accepted after a
    /// restart.
    #[arg(long, env = "ALTOCAST_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this address.
    #[arg(long, env = "ALTOCAST_METRICS")]
    pub metrics: Option<SocketAddr>,
    /// Also serve the RFC 7285 HTTP/JSON interface (IRD at /directory, network
    /// and cost maps, filtered cost map, endpoint cost) on this address.
    #[arg(long, env = "ALTOCAST_ALTO_HTTP")]
    pub alto_http: Option<SocketAddr>,
    /// Bounds and public URL of the --alto-http interface.
    #[command(flatten)]
    pub alto: AltoArgs,
    /// Connection bounds of the gRPC port.
    #[command(flatten)]
    pub grpc: GrpcArgs,
    /// Diffs kept per resource for resuming subscribers.
    #[arg(long, env = "ALTOCAST_RING_SIZE", default_value_t = 64)]
    pub ring_size: usize,
    /// Frames queued per subscriber.
    #[arg(long, env = "ALTOCAST_SUBSCRIBER_QUEUE", default_value_t = 16)]
    pub subscriber_queue: usize,
    /// Seconds a subscriber may stay stuck with a full queue before it is disconnected.
    #[arg(long, env = "ALTOCAST_STUCK_DEADLINE", default_value_t = 30)]
    pub stuck_deadline_secs: u64,
    /// Most concurrent subscriptions.
    #[arg(long, env = "ALTOCAST_MAX_SUBSCRIBERS", default_value_t = 100_000)]
    pub max_subscribers: usize,
    /// Most resources one Subscribe stream may follow (more: INVALID_ARGUMENT); at least 256, which clients
    /// following more resources split their subscription into (PROTOCOL.md §10.4).
    #[arg(long, env = "ALTOCAST_MAX_SUBSCRIPTION_RESOURCES", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(altocast_proto::SUBSCRIBE_RESOURCES as u64..=65_536))]
    pub max_subscription_resources: u64,
    /// Most `Fetch` pull-throughs of resources this RProxy does not hold in flight at once (more: RESOURCE_EXHAUSTED).
    #[arg(long, env = "ALTOCAST_MAX_PULLS", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_pulls: u64,
    /// Seconds an upstream's "unknown resource" answer is remembered (or until a directory lists the resource) and
    /// repeated without asking it again.
    #[arg(long, env = "ALTOCAST_PULL_NEGATIVE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub pull_negative_secs: u64,
    /// Seconds an upstream that sent a bad or stale update is put aside.
    #[arg(long, env = "ALTOCAST_QUARANTINE", default_value_t = 30)]
    pub quarantine_secs: u64,
    /// Seconds to let open streams finish after a shutdown signal.
    #[arg(long, env = "ALTOCAST_GRACE", default_value_t = 5)]
    pub grace_secs: u64,
    /// TLS for the gRPC server.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// CA (PEM) that `https://` upstreams' certificates must chain to.
    #[arg(long, env = "ALTOCAST_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to upstreams that require one (mTLS); needs --upstream-key.
    #[arg(long, env = "ALTOCAST_UPSTREAM_CERT")]
    pub upstream_cert: Option<PathBuf>,
    /// The private key (PEM) of --upstream-cert.
    #[arg(long, env = "ALTOCAST_UPSTREAM_KEY")]
    pub upstream_key: Option<PathBuf>,
}

impl Config {
    /// The hub settings.
    pub fn hub(&self) -> HubConfig {
        HubConfig {
            ring_size: self.ring_size,
            queue: self.subscriber_queue,
            stuck_deadline: Duration::from_secs(self.stuck_deadline_secs),
            max_subscribers: self.max_subscribers,
            max_resources_per_subscription: self.max_subscription_resources as usize,
            ..HubConfig::default()
        }
    }

    /// Loads and checks everything that can be checked before binding.
    pub fn validate(&self) -> anyhow::Result<TrustedKeys> {
        if self.ring_size == 0 || self.subscriber_queue == 0 || self.max_subscribers == 0 {
            bail!("--ring-size, --subscriber-queue and --max-subscribers must be at least 1");
        }
        for u in &self.upstreams {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                bail!("--upstream {u:?} must be an http:// or https:// URL");
            }
        }
        self.alto.limits()?;
        self.tls.server_config()?;
        self.upstream_tls()?;
        match (&self.trust_root, &self.trust_key) {
            (Some(root), _) => trust_root(root),
            (None, Some(key)) => trust_key(key),
            (None, None) => bail!("pass --trust-root FILE or --trust-key FILE"),
        }
    }

    /// TLS settings for `https://` upstreams.
    pub fn upstream_tls(&self) -> anyhow::Result<Option<altocast_client::connect::ClientTls>> {
        altocast_client::connect::ClientTls::from_files(
            self.upstream_ca.as_deref(),
            self.upstream_cert.as_deref(),
            self.upstream_key.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!("upstream TLS: {e}"))
    }
}

const D: HttpLimits = HttpLimits::DEFAULT;
/// Most --grpc-public-url values (an IRD lists a handful of entry points).
const MAX_GRPC_PUBLIC_URLS: usize = 16;
/// Longest any --alto-*-timeout-secs may be.
const MAX_ALTO_TIMEOUT_SECS: u64 = 86_400;

const G: crate::conn::ConnLimits = crate::conn::ConnLimits {
    max_connections: 10_000,
    handshake_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(120),
};

/// Connection bounds of the gRPC port; shared by `altocast-rproxy` and
/// `altocast-server`.
#[derive(Debug, Clone, clap::Args)]
pub struct GrpcArgs {
    /// Most open gRPC connections; more are accepted and closed at once.
    #[arg(long, env = "ALTOCAST_GRPC_MAX_CONNECTIONS", default_value_t = G.max_connections as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub grpc_max_connections: u64,
    /// Seconds a new gRPC connection has to send its first 24 bytes (the HTTP/2 preface, or TLS) before it is closed.
    #[arg(long, env = "ALTOCAST_GRPC_HANDSHAKE_TIMEOUT", default_value_t = G.handshake_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub grpc_handshake_timeout_secs: u64,
    /// Seconds a gRPC connection may stay silent before it is closed; the server sends an HTTP/2 PING after half
    /// of this, which live clients answer in time. At least 10.
    #[arg(long, env = "ALTOCAST_GRPC_IDLE_TIMEOUT", default_value_t = G.idle_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(10..=MAX_ALTO_TIMEOUT_SECS))]
    pub grpc_idle_timeout_secs: u64,
}

impl GrpcArgs {
    /// The bounds.
    pub fn limits(&self) -> crate::conn::ConnLimits {
        crate::conn::ConnLimits {
            max_connections: self.grpc_max_connections as usize,
            handshake_timeout: Duration::from_secs(self.grpc_handshake_timeout_secs),
            idle_timeout: Duration::from_secs(self.grpc_idle_timeout_secs),
        }
    }
}

/// The bounds of the RFC 7285 HTTP/JSON interface (`--alto-http`) and the
/// URL it is reached at; shared by `altocast-rproxy` and `altocast-server`.
#[derive(Debug, Clone, clap::Args)]
pub struct AltoArgs {
    /// Public base URL of the --alto-http interface (e.g. https://alto.example.net), for the absolute URIs in the
    /// IRD and update stream control events; without it they are relative paths. Never taken from `Host`.
    #[arg(long, env = "ALTOCAST_ALTO_PUBLIC_URL")]
    pub alto_public_url: Option<String>,
    /// Public gRPC URL of this node (e.g. https://alto.example.net:7100), advertised in the IRD's
    /// meta.altocast.grpc so trackers and clients that discovered the IRD can subscribe; repeat for several.
    /// Without it the IRD advertises no gRPC endpoint. Never taken from `Host`.
    #[arg(long = "grpc-public-url", env = "ALTOCAST_GRPC_PUBLIC_URL", value_delimiter = ',')]
    pub grpc_public_url: Vec<String>,
    /// Most open HTTP connections; more are accepted and closed at once.
    #[arg(long, env = "ALTOCAST_ALTO_MAX_CONNECTIONS", default_value_t = D.max_connections)]
    pub alto_max_connections: usize,
    /// Seconds from a request's first byte to the end of its header before the connection is closed.
    #[arg(long, env = "ALTOCAST_ALTO_HEADER_TIMEOUT", default_value_t = D.header_timeout.as_secs())]
    pub alto_header_timeout_secs: u64,
    /// Seconds a connection may wait for its next request before it is closed.
    #[arg(long, env = "ALTOCAST_ALTO_IDLE_TIMEOUT", default_value_t = D.idle_timeout.as_secs())]
    pub alto_idle_timeout_secs: u64,
    /// Seconds a request body may take to arrive (also for POST /updates) before 408.
    #[arg(long, env = "ALTOCAST_ALTO_BODY_TIMEOUT", default_value_t = D.body_timeout.as_secs())]
    pub alto_body_timeout_secs: u64,
    /// Seconds a write to a client may stay blocked (a reader that stopped) before the connection is closed.
    #[arg(long, env = "ALTOCAST_ALTO_WRITE_TIMEOUT", default_value_t = D.write_timeout.as_secs())]
    pub alto_write_timeout_secs: u64,
    /// Seconds a query (IRD, maps, filtered cost map, endpoint cost) may take, body included, before 408.
    #[arg(long, env = "ALTOCAST_ALTO_REQUEST_TIMEOUT", default_value_t = D.request_timeout.as_secs())]
    pub alto_request_timeout_secs: u64,
    /// Largest request body, bytes (413 beyond).
    #[arg(long, env = "ALTOCAST_ALTO_MAX_REQUEST_BYTES", default_value_t = D.max_request_bytes)]
    pub alto_max_request_bytes: usize,
    /// Most endpoints per side of an endpoint cost request.
    #[arg(long, env = "ALTOCAST_ALTO_MAX_ENDPOINTS", default_value_t = D.max_endpoints)]
    pub alto_max_endpoints: usize,
    /// Most source × destination pairs one endpoint cost request may ask for.
    #[arg(long, env = "ALTOCAST_ALTO_MAX_PAIRS", default_value_t = D.max_pairs)]
    pub alto_max_pairs: usize,
    /// Most filtered cost map and endpoint cost requests answered at once (503 beyond).
    #[arg(long, env = "ALTOCAST_ALTO_MAX_QUERIES", default_value_t = D.max_queries)]
    pub alto_max_queries: usize,
    /// Most RFC 8895 update streams open at once (503 beyond).
    #[arg(long, env = "ALTOCAST_ALTO_MAX_STREAMS", default_value_t = D.max_streams)]
    pub alto_max_streams: usize,
    /// Most resources one update stream may follow.
    #[arg(long, env = "ALTOCAST_ALTO_MAX_STREAM_RESOURCES", default_value_t = D.max_stream_resources)]
    pub alto_max_stream_resources: usize,
}

impl AltoArgs {
    /// The checked limits.
    pub fn limits(&self) -> anyhow::Result<HttpLimits> {
        let public_url = match &self.alto_public_url {
            None => None,
            Some(u) => {
                let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://"));
                if rest.is_none_or(|r| r.is_empty() || r.starts_with('/') || r.contains(['?', '#', ' '])) {
                    bail!("--alto-public-url {u:?} must be an http:// or https:// URL with a host and no query");
                }
                Some(u.trim_end_matches('/').to_owned())
            }
        };
        if self.grpc_public_url.len() > MAX_GRPC_PUBLIC_URLS {
            bail!("at most {MAX_GRPC_PUBLIC_URLS} --grpc-public-url");
        }
        let mut grpc_urls = Vec::new();
        for u in &self.grpc_public_url {
            let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://"));
            let rest = rest.map(|r| r.trim_end_matches('/'));
            if u.len() > 255 || rest.is_none_or(|r| r.is_empty() || r.contains(['/', '?', '#', ' ', '@'])) {
                bail!("--grpc-public-url {u:?} must be an http:// or https:// URL with a host (and port), no path");
            }
            grpc_urls.push(u.trim_end_matches('/').to_owned());
        }
        let counts = [
            self.alto_max_connections,
            self.alto_max_request_bytes,
            self.alto_max_endpoints,
            self.alto_max_pairs,
            self.alto_max_queries,
            self.alto_max_streams,
            self.alto_max_stream_resources,
        ];
        let secs = [
            self.alto_header_timeout_secs,
            self.alto_idle_timeout_secs,
            self.alto_body_timeout_secs,
            self.alto_write_timeout_secs,
            self.alto_request_timeout_secs,
        ];
        if counts.contains(&0) || secs.contains(&0) {
            bail!("the --alto-max-* limits and --alto-*-timeout-secs must be at least 1");
        }
        // Beyond these a limit is no limit, and the connection timers and
        // semaphores have finite ranges.
        if secs.iter().any(|&s| s > MAX_ALTO_TIMEOUT_SECS) {
            bail!("the --alto-*-timeout-secs must be at most {MAX_ALTO_TIMEOUT_SECS} (a day)");
        }
        let max_slots = tokio::sync::Semaphore::MAX_PERMITS;
        if self.alto_max_connections > max_slots || self.alto_max_queries > max_slots {
            bail!("--alto-max-connections and --alto-max-queries must be at most {max_slots}");
        }
        Ok(HttpLimits {
            public_url,
            grpc_urls,
            max_connections: self.alto_max_connections,
            header_timeout: Duration::from_secs(self.alto_header_timeout_secs),
            idle_timeout: Duration::from_secs(self.alto_idle_timeout_secs),
            body_timeout: Duration::from_secs(self.alto_body_timeout_secs),
            write_timeout: Duration::from_secs(self.alto_write_timeout_secs),
            request_timeout: Duration::from_secs(self.alto_request_timeout_secs),
            max_request_bytes: self.alto_max_request_bytes,
            max_endpoints: self.alto_max_endpoints,
            max_pairs: self.alto_max_pairs,
            max_queries: self.alto_max_queries,
            max_streams: self.alto_max_streams,
            max_stream_resources: self.alto_max_stream_resources,
        })
    }
}

/// Reads a trusted root key file.
pub fn trust_root(path: &std::path::Path) -> anyhow::Result<TrustedKeys> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("reading --trust-root {}", path.display()))?;
    let key = PublicKey::from_spki_pem(&pem).with_context(|| format!("--trust-root {}", path.display()))?;
    Ok(TrustedKeys::root(key))
}

/// Reads a trusted public key file.
pub fn trust_key(path: &std::path::Path) -> anyhow::Result<TrustedKeys> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("reading --trust-key {}", path.display()))?;
    let key = PublicKey::from_spki_pem(&pem).with_context(|| format!("--trust-key {}", path.display()))?;
    Ok(TrustedKeys::new([key]))
}

/// Expands `--config FILE` (or `ALTOCAST_CONFIG`): the file's keys become flags
/// placed before the command line's, so flags given on the command line win.
pub fn args_with_config_file(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let mut path = std::env::var_os("ALTOCAST_CONFIG").map(PathBuf::from);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--config" {
            path = it.next().map(PathBuf::from);
        } else if let Some(p) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            path = Some(PathBuf::from(p));
        }
    }
    let Some(path) = path else { return Ok(args) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading config file {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("config file {}", path.display()))?;
    let mut out = vec![args.first().cloned().unwrap_or_default()];
    for (k, v) in table {
        let values: Vec<String> = match v {
            toml::Value::Array(a) => a.iter().map(toml_scalar).collect::<anyhow::Result<_>>()?,
            toml::Value::Boolean(true) => {
                out.push(format!("--{k}").into());
                continue;
            }
            toml::Value::Boolean(false) => continue,
            other => vec![toml_scalar(&other)?],
        };
        for v in values {
            out.push(format!("--{k}").into());
            out.push(v.into());
        }
    }
    out.extend(args.into_iter().skip(1));
    Ok(out)
}

fn toml_scalar(v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!("config value {other} is not a string, number or boolean"),
    })
}

/// Exit status for a bad configuration (BSD `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn alto(args: &[&str]) -> anyhow::Result<HttpLimits> {
        let mut argv = vec!["altocast-rproxy", "--upstream", "http://127.0.0.1:7100", "--trust-key", "k.pem"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).expect("parses").alto.limits()
    }

    #[test]
    fn alto_limits_default_to_the_documented_values_and_refuse_nonsense() {
        let d = alto(&[]).expect("defaults");
        assert_eq!((d.max_pairs, d.max_queries, d.max_connections, d.public_url), (100_000, 8, 4096, None));
        let set =
            alto(&["--alto-idle-timeout-secs", "1", "--alto-public-url", "https://alto.example.net/"]).expect("valid");
        assert_eq!(set.idle_timeout, Duration::from_secs(1));
        assert_eq!(set.public_url.as_deref(), Some("https://alto.example.net"), "trailing slash dropped");
        assert!(d.grpc_urls.is_empty(), "no gRPC URL advertised without the flag");
        let set = alto(&["--grpc-public-url", "https://a.example:7100/", "--grpc-public-url", "http://[::1]:7100"])
            .expect("valid");
        assert_eq!(set.grpc_urls, ["https://a.example:7100", "http://[::1]:7100"]);
        for bad in [
            &["--grpc-public-url", "a.example:7100"][..],
            &["--grpc-public-url", "https://a.example:7100/x"],
            &["--grpc-public-url", "https://user@a.example"],
            &["--alto-public-url", "alto.example.net"],
            &["--alto-public-url", "https://"],
            &["--alto-public-url", "https://a.example/?x=1"],
            &["--alto-max-queries", "0"],
            &["--alto-header-timeout-secs", "0"],
            &["--alto-idle-timeout-secs", "18446744073709551615"],
        ] {
            assert!(alto(bad).is_err(), "{bad:?} accepted");
        }
    }
}
