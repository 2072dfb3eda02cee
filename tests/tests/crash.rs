//! Crash safety with the real binaries: an `altocast-server` under publish
//! load (cost changes, prefix moves, PIDs added — cost maps re-bound by the
//! origin — PIDs removed with their cost maps in one step, a new cost map) is
//! killed with SIGKILL at random moments and restarted on the same port and
//! data directory, with an `altocast-rproxy` following it throughout.
//!
//! After every restart:
//! - no acknowledged version is lost or changed: the origin is at or past every
//!   acknowledged (seq, tag), and a subscriber resuming at it gets a diff or a
//!   heartbeat from it, never a snapshot;
//! - a newcomer holding nothing commits every resource from the catch-up alone
//!   (heartbeats are 30 s apart, so nothing else can commit it), at the origin
//!   and through the RProxy, which catches up with the origin;
//! - subscribers that ran through every crash (one at the origin, one through
//!   the RProxy) never rejected an update.
//!
//! `ALTOCAST_CRASH_TRIALS` (default 4) sets the number of kills;
//! `ALTOCAST_CRASH_SEED` replays a run. The summary line gives the counts.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use altocast_client::connect::{self, ConnectError};
use altocast_proto::{Tag, TrustedKeys, UpdateKind};
use altocast_tests::{
    TOKEN, TestClient,
    join::{Joined, first_updates, join},
    model::{Model, step_request},
    process::{Process, free_port},
};
use tokio::sync::watch;

const SERVER: &str = env!("CARGO_BIN_EXE_altocast-server-under-test");
const RPROXY: &str = env!("CARGO_BIN_EXE_altocast-rproxy-under-test");

/// xorshift64*: small, seeded, replayable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the publisher has been told, and how it fared.
#[derive(Default)]
struct Acked {
    /// Resource → the last acknowledged (seq, tag).
    last: BTreeMap<String, (u64, Tag)>,
    /// New versions acknowledged (changed = true).
    versions: usize,
    /// Steps whose answer was lost (the origin died during the call).
    unknown: usize,
}

/// Publishes random steps until `stop`, pausing while `pause` is set (and
/// saying so on `idle`).
struct Publisher {
    url: String,
    model: Model,
    cost_maps: Vec<String>,
    rng: Rng,
    /// The last step's outcome is unknown: the next one publishes everything.
    resync: bool,
    acked: Arc<Mutex<Acked>>,
}

impl Publisher {
    /// One step's resources and bodies.
    fn next_step(&mut self) -> Vec<(String, String)> {
        if self.resync {
            return self.model.full_step(&self.cost_maps);
        }
        loop {
            match self.rng.below(10) {
                0..=3 => {
                    let cm = self.cost_maps[self.rng.below(self.cost_maps.len() as u64) as usize].clone();
                    let (a, b) = (self.model.pick(self.rng.next() as u8), self.model.pick(self.rng.next() as u8));
                    let value = 1.0 + self.rng.below(99) as f64;
                    self.model.costs.get_mut(&cm).expect("cm").insert((a, b), value);
                    let body = self.model.cost_map_json(&cm, &self.model.network_map());
                    return vec![(cm, body)];
                }
                4 | 5 => {
                    let (a, b) = (self.model.pick(self.rng.next() as u8), self.model.pick(self.rng.next() as u8));
                    if self.model.move_prefix(&a, &b) {
                        return self.model.network_map_step();
                    }
                }
                6 if self.model.pids.len() < 12 => {
                    // Network map only: the origin re-binds the cost maps.
                    self.model.add_pid();
                    return self.model.network_map_step();
                }
                7 if self.model.pids.len() > 3 => {
                    // The cost maps must go with it (one atomic step).
                    let gone = self.model.pick(self.rng.next() as u8);
                    self.model.pids.remove(&gone);
                    return self.model.full_step(&self.cost_maps);
                }
                8 if self.cost_maps.len() == 1 => {
                    self.cost_maps.push("cm2".into());
                    self.model.costs.insert("cm2".into(), BTreeMap::new());
                    return vec![("cm2".into(), self.model.cost_map_json("cm2", &self.model.network_map()))];
                }
                9 => return self.model.full_step(&self.cost_maps),
                _ => {}
            }
        }
    }

    async fn run(mut self, mut pause: watch::Receiver<bool>, idle: watch::Sender<bool>) {
        loop {
            if *pause.borrow() {
                let _ = idle.send(true);
                if pause.wait_for(|p| !*p).await.is_err() {
                    return;
                }
                let _ = idle.send(false);
            }
            let step = self.next_step();
            let req = step_request(&step);
            match connect::publish(&self.url, Some(TOKEN), req, Duration::from_secs(5), None).await {
                Ok(resp) => {
                    let mut a = self.acked.lock().expect("lock");
                    for r in resp.results {
                        let tag = Tag::from_hex(&r.tag).expect("tag in the answer");
                        a.versions += usize::from(r.changed);
                        a.last.insert(r.resource_id, (r.seq, tag));
                    }
                    self.resync = false;
                }
                Err(ConnectError::Status { status, .. })
                    if matches!(
                        status.code(),
                        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::Unauthenticated
                    ) =>
                {
                    panic!("a valid step was refused: {status:?} (step {step:?})");
                }
                Err(_) => {
                    // The origin died during the call, or is down.
                    if !self.resync {
                        self.acked.lock().expect("lock").unknown += 1;
                    }
                    self.resync = true;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

struct Deployment {
    data: tempfile::TempDir,
    origin_port: u16,
    origin: Process,
    rproxy: Process,
}

impl Deployment {
    fn origin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.origin_port)
    }

    fn start_origin(data: &std::path::Path, port: u16) -> Process {
        let args = [
            "--data-dir",
            &data.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--publish-token",
            TOKEN,
            "--no-example",
            "--ttl-secs",
            "60",
            "--heartbeat-secs",
            "30",
            "--history",
            "64",
        ]
        .map(String::from);
        Process::spawn(SERVER, &args, &data.join("origin.log"))
    }
}

fn keys(data: &std::path::Path) -> TrustedKeys {
    let pem = std::fs::read_to_string(altocast_server::keys::pubkey_path(data)).expect("public key");
    TrustedKeys::new([altocast_proto::PublicKey::from_spki_pem(&pem).expect("pem")])
}

/// Checks that `at` (where a newcomer ended) keeps every acknowledged version.
fn keeps_acked(at: &Joined, acked: &BTreeMap<String, (u64, Tag)>) -> Result<(), String> {
    for (id, (seq, tag)) in acked {
        match at.at.get(id) {
            Some((s, t)) if s > seq || (s == seq && t == tag) => {}
            other => return Err(format!("{id}: acknowledged seq {seq} tag {}, the origin has {other:?}", tag.short())),
        }
    }
    Ok(())
}

async fn crash_trials(trials: usize, seed: u64) {
    let data = tempfile::tempdir().expect("tempdir");
    let origin_port = free_port();
    let mut origin = Deployment::start_origin(data.path(), origin_port);
    let origin_url = format!("http://127.0.0.1:{origin_port}");
    origin.wait_ready(&origin_url, Duration::from_secs(30)).await;
    let keys = keys(data.path());
    let rproxy_port = free_port();
    let rproxy_url = format!("http://127.0.0.1:{rproxy_port}");
    let key_path = altocast_server::keys::pubkey_path(data.path());
    let rproxy_args = [
        "--upstream",
        &origin_url,
        "--listen",
        &format!("127.0.0.1:{rproxy_port}"),
        "--trust-key",
        &key_path.display().to_string(),
    ]
    .map(String::from);
    let mut d = Deployment {
        rproxy: Process::spawn(RPROXY, &rproxy_args, &data.path().join("rproxy.log")),
        data,
        origin_port,
        origin,
    };
    let acked = Arc::new(Mutex::new(Acked::default()));
    let (pause_tx, pause_rx) = watch::channel(false);
    let (idle_tx, mut idle_rx) = watch::channel(false);
    let publisher = Publisher {
        url: d.origin_url(),
        model: Model::new(),
        cost_maps: vec!["cm".into()],
        rng: Rng(seed | 1),
        resync: true,
        acked: acked.clone(),
    };
    let task = tokio::spawn(publisher.run(pause_rx, idle_tx));
    // Let the first step land, then the RProxy can follow it.
    while acked.lock().expect("lock").versions == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.rproxy.wait_ready(&rproxy_url, Duration::from_secs(30)).await;
    let at_origin = TestClient::start(&[&origin_url], keys.clone());
    let at_rproxy = TestClient::start(&[&rproxy_url], keys.clone());

    let mut rng = Rng(seed.rotate_left(17) | 1);
    let mut failures = Vec::new();
    let mut joins = 0;
    let mut snapshots_on_resume = 0;
    for trial in 0..trials {
        // Publish for a while, then SIGKILL the origin mid-stream.
        tokio::time::sleep(Duration::from_millis(30 + rng.below(600))).await;
        d.origin.kill9();
        pause_tx.send(true).expect("publisher");
        idle_rx.wait_for(|i| *i).await.expect("publisher idle");
        d.origin = Deployment::start_origin(d.data.path(), d.origin_port);
        d.origin.wait_ready(&origin_url, Duration::from_secs(30)).await;
        let last = acked.lock().expect("lock").last.clone();

        // Nothing acknowledged is lost or changed, and a newcomer at the
        // origin commits everything from the catch-up.
        joins += 1;
        let at = match join(&origin_url, &keys, Duration::from_secs(5), Duration::from_millis(300)).await {
            Ok(at) => at,
            Err(e) => {
                failures.push(format!("trial {trial}: newcomer at the origin: {e}"));
                pause_tx.send(false).expect("publisher");
                continue;
            }
        };
        if let Err(e) = keeps_acked(&at, &last) {
            failures.push(format!("trial {trial}: {e}"));
        }
        match first_updates(&origin_url, &keys, &last, Duration::from_millis(300)).await {
            Ok(first) => {
                for (id, (kind, base, seq)) in first {
                    if kind == UpdateKind::Snapshot {
                        snapshots_on_resume += 1;
                        failures.push(format!(
                            "trial {trial}: resuming {id} at acknowledged seq {} got a snapshot of seq {seq} (base {base})",
                            last[&id].0
                        ));
                    }
                }
            }
            Err(e) => failures.push(format!("trial {trial}: resume at the origin: {e}")),
        }

        // Through the RProxy: every newcomer commits; it reaches the origin's versions.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            joins += 1;
            match join(&rproxy_url, &keys, Duration::from_secs(5), Duration::from_millis(200)).await {
                Ok(j) if j.at == at.at => break,
                Ok(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(j) => {
                    failures.push(format!("trial {trial}: the RProxy stays at {:?}, the origin at {:?}", j.at, at.at));
                    break;
                }
                Err(e) => {
                    failures.push(format!("trial {trial}: newcomer at the RProxy: {e}"));
                    break;
                }
            }
        }
        pause_tx.send(false).expect("publisher");
    }
    task.abort();
    let rejected = |c: &TestClient, url: &str| -> Vec<String> {
        c.incidents_at(url).into_iter().filter(|i| i.starts_with("rejected") || i.starts_with("stale")).collect()
    };
    for (who, c, url) in [("at the origin", &at_origin, &origin_url), ("through the RProxy", &at_rproxy, &rproxy_url)] {
        for r in rejected(c, url) {
            failures.push(format!("a subscriber {who}: {r}"));
        }
    }
    let (versions, unknown) = {
        let a = acked.lock().expect("lock");
        (a.versions, a.unknown)
    };
    eprintln!(
        "crash: seed {seed}, {trials} SIGKILL restarts, {versions} versions acknowledged, {unknown} answers lost in a \
         kill, {joins} newcomer joins, {} failures, {snapshots_on_resume} snapshots on resume",
        failures.len()
    );
    if !failures.is_empty() {
        panic!(
            "{} failures (seed {seed}):\n{}\n--- origin log tail:\n{}\n--- rproxy log tail:\n{}",
            failures.len(),
            failures.join("\n"),
            d.origin.log_tail(),
            d.rproxy.log_tail()
        );
    }
    at_origin.stop().await;
    at_rproxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_publish_load_loses_nothing_and_every_newcomer_commits() {
    let trials = std::env::var("ALTOCAST_CRASH_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let seed = std::env::var("ALTOCAST_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| altocast_client::now_ms() as u64);
    crash_trials(trials, seed).await;
}
