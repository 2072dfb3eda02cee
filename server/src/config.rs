//! Origin configuration: flags, environment and an optional TOML file
//! (precedence flags > file > environment > defaults), validated before binding.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

use crate::origin::OriginConfig;

/// The altocast origin: publishes RFC 7285 ALTO maps as signed, versioned,
/// pushed updates.
#[derive(Debug, Parser)]
#[command(name = "altocast-server", version, about, args_override_self = true, subcommand_negates_reqs = true)]
pub struct Cli {
    /// What to do; without a command, run the origin.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Origin options.
    #[command(flatten)]
    pub serve: ServeConfig,
}

/// Commands besides serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the origin's signing key (PKCS#8 PEM, mode 0600) in the data dir.
    Keygen {
        /// Data directory.
        #[arg(long, env = "ALTOCAST_DATA_DIR", default_value = "./altocast-data")]
        data_dir: PathBuf,
        /// Replace an existing key (clients trusting the old one will reject updates).
        #[arg(long)]
        force: bool,
    },
    /// Print the origin's public key (SPKI PEM) for clients' --trust-key; with --root, the root key for
    /// --trust-root.
    Pubkey {
        /// Data directory.
        #[arg(long, env = "ALTOCAST_DATA_DIR", default_value = "./altocast-data")]
        data_dir: PathBuf,
        /// Print the root key (what clients should trust: it survives update-key rotations).
        #[arg(long)]
        root: bool,
    },
    /// Manage the update keys: the root key signs the list of keys that sign updates (a running server picks
    /// a change up within a second).
    Keys(KeysArgs),
    /// Run a whole deployment on loopback (origin, RProxy tree, subscribers) replaying changes.
    Demo(crate::demo::DemoArgs),
    /// Generate RFC 7285 maps and change events from a topology.
    Gen(crate::generate::GenArgs),
}

/// `altocast-server keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
    /// Data directory.
    #[arg(long, global = true, env = "ALTOCAST_DATA_DIR", default_value = "./altocast-data")]
    pub data_dir: PathBuf,
    /// The root's private key (default: root-key.pem in the data directory; keep it offline if you can).
    #[arg(long, global = true, env = "ALTOCAST_ROOT_KEY")]
    pub root_key: Option<PathBuf>,
    /// Days the new key list stays valid (clients refuse an expired one; re-sign with `keys renew`).
    #[arg(long, global = true, default_value_t = crate::keyring::DEFAULT_VALID_DAYS,
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub valid_days: u64,
}

/// What to do to the key list.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the key list: version, root, and each update key's state.
    List,
    /// Generate a new update key (update-keys/ID.pem) and list it, valid from now: the origin signs with it
    /// and the old keys until they are retired.
    Add,
    /// Stop signing with key ID from now; what it signed before stays valid.
    Retire {
        /// The key id (16 hex characters, from `keys list`).
        id: String,
    },
    /// Never trust key ID again (a compromised key): clients reject whatever only it signed.
    Revoke {
        /// The key id.
        id: String,
    },
    /// Re-sign the same list with a new expiry.
    Renew,
    /// Replace the root key: the new list is signed by the old root and the new one, so clients trusting the
    /// old root follow. The new root is written over --root-key (the old one is kept beside it).
    RotateRoot,
}

/// How to run the origin.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// TOML file with any of these options (keys as the long flag names).
    #[arg(long, env = "ALTOCAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: store, signing key, publish token.
    #[arg(long, env = "ALTOCAST_DATA_DIR", default_value = "./altocast-data")]
    pub data_dir: PathBuf,
    /// Address to serve gRPC on.
    #[arg(long, env = "ALTOCAST_LISTEN", default_value = "127.0.0.1:7100")]
    pub listen: SocketAddr,
    /// Directory of RFC 7285 JSON maps (`NAME.json` publishes resource NAME), re-read on change.
    #[arg(long, env = "ALTOCAST_MAPS_DIR")]
    pub maps_dir: Option<PathBuf>,
    /// Bearer token required by Publish. Default: generated once into DATA_DIR/publish-token.
    #[arg(long, env = "ALTOCAST_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,
    /// Seconds each update keeps a resource fresh.
    #[arg(long, env = "ALTOCAST_TTL", default_value_t = 60)]
    pub ttl_secs: u64,
    /// Seconds between heartbeats (at most half of --ttl-secs).
    #[arg(long, env = "ALTOCAST_HEARTBEAT", default_value_t = 20)]
    pub heartbeat_secs: u64,
    /// Diffs retained per resource for resuming subscribers.
    #[arg(long, env = "ALTOCAST_HISTORY", default_value_t = 64)]
    pub history: u64,
    /// Milliseconds a maps-dir burst must be quiet before it is published.
    #[arg(long, env = "ALTOCAST_QUIET_MS", default_value_t = 300)]
    pub quiet_ms: u64,
    /// Longest delay of a maps-dir burst, in milliseconds.
    #[arg(long, env = "ALTOCAST_MAX_DELAY_MS", default_value_t = 3000)]
    pub max_delay_ms: u64,
    /// Milliseconds between maps-dir scans.
    #[arg(long, env = "ALTOCAST_POLL_MS", default_value_t = 250)]
    pub poll_ms: u64,
    /// Largest map body accepted (file or Publish), bytes.
    #[arg(long, env = "ALTOCAST_MAX_MAP_BYTES", default_value_t = 64 << 20)]
    pub max_map_bytes: usize,
    /// RProxy URL to advertise in the directory; repeat for several.
    #[arg(long = "rproxy", env = "ALTOCAST_RPROXIES", value_delimiter = ',')]
    pub rproxies: Vec<String>,
    /// Serve Prometheus metrics on this address.
    #[arg(long, env = "ALTOCAST_METRICS")]
    pub metrics: Option<SocketAddr>,
    /// Also serve the RFC 7285 HTTP/JSON interface (IRD at /directory, network
    /// and cost maps, filtered cost map, endpoint cost) on this address.
    #[arg(long, env = "ALTOCAST_ALTO_HTTP")]
    pub alto_http: Option<SocketAddr>,
    /// Bounds and public URL of the --alto-http interface.
    #[command(flatten)]
    pub alto: altocast_rproxy::config::AltoArgs,
    /// Connection bounds of the gRPC port.
    #[command(flatten)]
    pub grpc: altocast_rproxy::config::GrpcArgs,
    /// TLS for the gRPC server.
    #[command(flatten)]
    pub tls: altocast_rproxy::tls::TlsArgs,
    /// Most concurrent subscriptions.
    #[arg(long, env = "ALTOCAST_MAX_SUBSCRIBERS", default_value_t = 100_000)]
    pub max_subscribers: usize,
    /// Most resources one Subscribe stream may follow (more: INVALID_ARGUMENT); at least 256, which clients
    /// following more resources split their subscription into (PROTOCOL.md §10.4).
    #[arg(long, env = "ALTOCAST_MAX_SUBSCRIPTION_RESOURCES", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(altocast_proto::SUBSCRIBE_RESOURCES as u64..=65_536))]
    pub max_subscription_resources: u64,
    /// Seconds to let open streams finish after a shutdown signal.
    #[arg(long, env = "ALTOCAST_GRACE", default_value_t = 5)]
    pub grace_secs: u64,
    /// Do not publish the built-in example maps when there are none.
    #[arg(long)]
    pub no_example: bool,
}

impl ServeConfig {
    /// Defaults, as with no flags.
    pub fn defaults() -> Self {
        Cli::parse_from(["altocast-server"]).serve
    }

    /// Checks what can be checked before binding.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.tls.server_config()?.is_some() && self.alto_http.is_some() {
            bail!("--alto-http is not served by a TLS origin; run an altocast-rproxy with --alto-http next to it");
        }
        self.alto.limits()?;
        if self.ttl_secs == 0 || self.heartbeat_secs == 0 {
            bail!("--ttl-secs and --heartbeat-secs must be at least 1");
        }
        if self.heartbeat_secs * 2 > self.ttl_secs {
            bail!("--heartbeat-secs {} must be at most half of --ttl-secs {}", self.heartbeat_secs, self.ttl_secs);
        }
        if self.history == 0 || self.max_map_bytes < 1024 || self.max_subscribers == 0 {
            bail!("--history and --max-subscribers must be at least 1, --max-map-bytes at least 1024");
        }
        if let Some(t) = &self.publish_token
            && t.len() < 16
        {
            bail!("--publish-token must be at least 16 characters");
        }
        for u in &self.rproxies {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                bail!("--rproxy {u:?} must be an http:// or https:// URL");
            }
        }
        Ok(())
    }

    /// The origin core's settings.
    pub fn origin(&self) -> OriginConfig {
        OriginConfig {
            ttl: Duration::from_secs(self.ttl_secs),
            history_depth: self.history,
            max_body: self.max_map_bytes,
            rproxies: self.rproxies.clone(),
            ..Default::default()
        }
    }
}
