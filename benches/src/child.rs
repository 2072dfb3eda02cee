//! Helper processes: the benchmark re-runs itself in a helper mode (or runs a
//! sibling binary) and reads its report lines from stdout.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use altocast_proto::{ResourceId, pb};
use anyhow::{Context as _, bail};

pub(crate) fn sibling(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let p = std::env::current_exe()?.with_file_name(name);
    if !p.exists() {
        bail!("{} not found: build it with `cargo build --release -p altocast-server -p altocast-client`", p.display());
    }
    Ok(p)
}

pub(crate) struct ClientsProc {
    pub(crate) child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ClientsProc {
    /// Starts the `clients` helper: `k` subscribers spread over `urls`,
    /// verifying with `key` when given, watching `resource` (or any).
    pub(crate) fn start(
        urls: &[String],
        k: usize,
        max_seq: u64,
        key: Option<&std::path::Path>,
        resource: Option<&str>,
    ) -> anyhow::Result<ClientsProc> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["clients", "--subscribers", &k.to_string(), "--max-seq", &max_seq.to_string()]);
        for u in urls {
            cmd.args(["--endpoint", u]);
        }
        if let Some(k) = key {
            cmd.arg("--key").arg(k);
        }
        if let Some(r) = resource {
            cmd.args(["--resource", r]);
        }
        Self::spawn(cmd)
    }

    /// Runs a helper whose stdout lines ("ready", "seq N last_us T") are read
    /// on a thread.
    pub(crate) fn spawn(mut cmd: Command) -> anyhow::Result<ClientsProc> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        let out = child.stdout.take().context("child stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Ok(ClientsProc { child, lines })
    }

    pub(crate) fn wait_for(&self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => continue,
                Err(_) => bail!("clients process: no {prefix:?} within {timeout:?}"),
            }
        }
    }
}

impl Drop for ClientsProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Server processes (origin, RProxies), killed on drop.
pub(crate) struct Children(pub(crate) Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until `url` answers `Fetch` of `id` (the RProxy holds verified data).
pub(crate) async fn wait_serving(url: &str, id: &ResourceId) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if let Ok(mut c) = altocast_client::connect::connect(url, Duration::from_secs(1)).await
            && c.fetch(pb::FetchRequest { resource_id: id.to_string() }).await.is_ok()
        {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("{url} did not serve {id} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An origin (the server library: validate, diff, sign, fsync, hub) serving
/// gRPC on loopback, for the runs that put real `altocast-rproxy` processes
/// under it. Dropping it stops nothing: call [`LoopbackOrigin::stop`].
pub(crate) struct LoopbackOrigin {
    /// Data directory (store, key); removed on drop.
    _dir: tempfile::TempDir,
    pub(crate) hub: std::sync::Arc<altocast_rproxy::hub::Hub>,
    pub(crate) origin: std::sync::Arc<altocast_server::origin::Origin>,
    /// The public key file RProxies trust.
    pub(crate) key_path: std::path::PathBuf,
    pub(crate) url: String,
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl LoopbackOrigin {
    pub(crate) async fn start(cfg: altocast_server::origin::OriginConfig) -> anyhow::Result<LoopbackOrigin> {
        use altocast_rproxy::{hub, service};
        let dir = tempfile::tempdir()?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let hub = hub::Hub::new(hub::HubConfig::default(), shutdown.clone());
        let key = altocast_server::keys::load_or_generate(dir.path())?;
        let key_path = dir.path().join("origin-pub.pem");
        std::fs::write(&key_path, key.public().to_spki_pem())?;
        let directory = std::sync::Arc::new(arc_swap::ArcSwapOption::empty());
        let store = altocast_server::store::Store::open(&dir.path().join("altocast.redb"))?;
        let signer = altocast_proto::wire::update::Signer::new(key, 60_000);
        let origin = altocast_server::origin::Origin::open(cfg, signer, store, hub.clone(), directory.clone())?;
        let svc = service::DistributionService::new(hub.clone(), directory, None);
        let router = service::router(svc, &service::ServerLimits::default()).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(service::serve(router, listener, Default::default(), shutdown.clone()));
        Ok(LoopbackOrigin { _dir: dir, hub, origin, key_path, url, shutdown, server })
    }

    /// Closes the origin and waits (up to 5 s) for its server to end.
    pub(crate) async fn stop(self) {
        self.origin.close();
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What every subscriber helper (`clients`, `redis-clients`) reports on its
/// stdout for [`ClientsProc`] to read: `ready` once all K subscribers hold
/// the resource, and for each seq `seq N last_us T received R` when the last
/// of the K got it (T: that moment; R: updates received so far by all, so a
/// throughput figure counts what was delivered, not what was published).
pub(crate) struct Arrivals {
    k: u32,
    /// Per seq: subscribers that got it, and the latest arrival time.
    counts: Vec<(AtomicU32, AtomicU64)>,
    ready: AtomicU32,
    received: AtomicU64,
    out: std::sync::Mutex<std::io::Stdout>,
}

impl Arrivals {
    pub(crate) fn new(k: usize, max_seq: u64) -> Arc<Arrivals> {
        Arc::new(Arrivals {
            k: k as u32,
            counts: (0..=max_seq).map(|_| (AtomicU32::new(0), AtomicU64::new(0))).collect(),
            ready: AtomicU32::new(0),
            received: AtomicU64::new(0),
            out: std::sync::Mutex::new(std::io::stdout()),
        })
    }

    fn line(&self, line: std::fmt::Arguments<'_>) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// One subscriber holds the resource.
    pub(crate) fn ready(&self) {
        if self.ready.fetch_add(1, Ordering::AcqRel) + 1 == self.k {
            self.line(format_args!("ready"));
        }
    }

    /// Subscribers ready so far.
    pub(crate) fn ready_count(&self) -> usize {
        self.ready.load(Ordering::Acquire) as usize
    }

    /// One subscriber received `seq` at `at_us`.
    pub(crate) fn arrived(&self, seq: u64, at_us: u64) {
        self.received.fetch_add(1, Ordering::AcqRel);
        let Some((n, last)) = self.counts.get(seq as usize) else { return };
        last.fetch_max(at_us, Ordering::AcqRel);
        if n.fetch_add(1, Ordering::AcqRel) + 1 == self.k {
            self.line(format_args!(
                "seq {seq} last_us {} received {}",
                last.load(Ordering::Acquire),
                self.received.load(Ordering::Acquire)
            ));
        }
    }
}
