//! A full disk under the origin's store, injected into redb's own file
//! backend: every write and fsync fails with ENOSPC while the disk is "full".
//! Publishing must then fail with a clear UNAVAILABLE error naming the store,
//! change nothing (store, hub, what subscribers see), turn the publisher's
//! `grpc.health.v1` status to NOT_SERVING, and heal without a restart once
//! space is back: health SERVING again, the next publish accepted with the
//! next seq, and everything still verifiable after a restart from the file.

use std::{
    fs::OpenOptions,
    io,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use altocast_proto::{OriginKey, wire::update::Signer};
use altocast_rproxy::hub::{Hub, HubConfig};
use altocast_server::{
    origin::{Origin, OriginConfig},
    publisher::{self, PublisherService},
    store::Store,
};
use altocast_tests::model::{Model, NM, step_request};
use arc_swap::ArcSwapOption;
use redb::{Database, StorageBackend, backends::FileBackend};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// redb's file backend, failing every write, resize and fsync while `full`.
#[derive(Debug)]
struct FullDisk {
    inner: FileBackend,
    full: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

impl FullDisk {
    fn check(&self) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(libc_enospc()));
        }
        Ok(())
    }
}

/// ENOSPC on Linux (and every Unix we run on).
fn libc_enospc() -> i32 {
    28
}

impl StorageBackend for FullDisk {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }
}

fn store_on(path: &Path, full: &Arc<AtomicBool>, refused: &Arc<AtomicUsize>) -> Store {
    let (p, full, refused) = (path.to_owned(), full.clone(), refused.clone());
    Store::open_with(
        path,
        Box::new(move || {
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&p)?;
            let backend = FullDisk { inner: FileBackend::new(file)?, full: full.clone(), refused: refused.clone() };
            Database::builder().create_with_backend(backend)
        }),
    )
    .expect("store")
}

fn origin_on(store: Store) -> Arc<Origin> {
    let hub = Hub::new(HubConfig::default(), CancellationToken::new());
    let signer = Signer::new(OriginKey::from_seed([5; 32]), 60_000);
    let cfg = OriginConfig { checkpoints: false, ..Default::default() };
    Origin::open(cfg, signer, store, hub, Arc::new(ArcSwapOption::empty())).expect("origin")
}

async fn health(url: &str) -> ServingStatus {
    let channel =
        tonic::transport::Endpoint::from_shared(url.to_owned()).expect("url").connect().await.expect("connect");
    let mut c = HealthClient::new(channel);
    let r = c
        .check(HealthCheckRequest { service: publisher::SERVICE_NAME.into() })
        .await
        .expect("health check")
        .into_inner();
    ServingStatus::try_from(r.status).expect("status")
}

async fn wait_health(url: &str, want: ServingStatus) {
    for _ in 0..100 {
        if health(url).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the publisher's health did not become {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_clearly_changes_nothing_and_heals_without_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("altocast.redb");
    let full = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let origin = origin_on(store_on(&path, &full, &refused));

    // The publisher and its health, served on loopback as the server does.
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let stop = CancellationToken::new();
    tokio::spawn(publisher::health(origin.clone(), reporter, stop.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(PublisherService::new(origin.clone(), altocast_tests::TOKEN).into_server(1 << 20))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stop.clone().cancelled_owned(),
        );
    tokio::spawn(server);

    let mut m = Model::new();
    let publish = |items: Vec<(String, String)>| {
        let url = url.clone();
        async move {
            let req = step_request(&items);
            altocast_client::connect::publish(&url, Some(altocast_tests::TOKEN), req, Duration::from_secs(5), None)
                .await
        }
    };
    publish(m.full_step(&["cm".to_owned()])).await.expect("first publish");
    wait_health(&url, ServingStatus::Serving).await;
    let before = origin.resources();
    let hub_before = origin.hub().status();

    // The disk fills. A network-map change (with its re-bound cost map) and
    // a cost change are both refused, clearly, and change nothing.
    full.store(true, Ordering::SeqCst);
    let mut cost_change = m.clone();
    let (a, b) = (cost_change.pick(0), cost_change.pick(1));
    cost_change.costs.get_mut("cm").expect("cm").insert((a, b), 3.0);
    m.add_pid();
    for items in
        [m.network_map_step(), vec![("cm".to_owned(), cost_change.cost_map_json("cm", &cost_change.network_map()))]]
    {
        let err = publish(items).await.expect_err("a publish on a full disk");
        let altocast_client::connect::ConnectError::Status { status, .. } = err else {
            panic!("not a gRPC status: {err}")
        };
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("store"), "the error names the store: {}", status.message());
        assert!(
            status.message().contains("No space left") || status.message().contains("os error 28"),
            "the error says why: {}",
            status.message()
        );
    }
    assert!(refused.load(Ordering::SeqCst) > 0, "the fault was injected");
    assert_eq!(origin.resources(), before, "a refused publish changed the origin's state");
    assert_eq!(origin.hub().status(), hub_before, "a refused publish reached subscribers");
    wait_health(&url, ServingStatus::NotServing).await;
    assert!(!origin.store_healthy());

    // Space is back: health turns by itself, publishing works, no restart.
    full.store(false, Ordering::SeqCst);
    wait_health(&url, ServingStatus::Serving).await;
    let r = publish(m.network_map_step()).await.expect("publish after healing");
    let nm_before = before.iter().find(|r| r.0.as_str() == NM).expect("nm").2;
    assert!(r.seq > nm_before, "a new version after healing");
    assert!(r.results.iter().any(|x| x.resource_id == "cm" && x.changed), "the cost map is re-bound in the same step");
    let after = origin.resources();

    // And it is all on disk: a restart from the file has exactly that.
    stop.cancel();
    origin.close();
    drop(origin);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reopened = origin_on(Store::open(&path).expect("reopen"));
    assert_eq!(reopened.resources(), after, "what was acknowledged after healing is durable");
}
