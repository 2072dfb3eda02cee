//! gRPC over TLS: a TLS origin, mutual TLS, and an RProxy whose upstream is
//! reached over mTLS — with certificates the test makes itself (rcgen).

use std::{path::PathBuf, time::Duration};

use altocast_client::connect::{self, ClientTls, ConnectError};
use altocast_proto::pb;
use altocast_rproxy::tls::TlsArgs;
use altocast_tests::{CM, Maps, NM, OriginOptions, TestClient, TestOrigin, TestRproxy};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

const T: Duration = Duration::from_secs(20);

/// A CA, a server certificate for 127.0.0.1 / localhost and a client
/// certificate, as PEM files in a temporary directory.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key).expect("ca cert");
    (cert.pem(), Issuer::new(p, key))
}

fn leaf(issuer: &Issuer<'static, KeyPair>, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p.extended_key_usages = vec![usage];
    let cert = p.signed_by(&key, issuer).expect("leaf cert");
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, pem: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).expect("write pem");
        p
    };
    let (ca_pem, issuer) = ca("altocast test CA");
    let (other_pem, _) = ca("some other CA");
    let (server_cert, server_key) = leaf(&issuer, &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf(&issuer, &["rproxy-1"], ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: write("ca.pem", &ca_pem),
        other_ca: write("other-ca.pem", &other_pem),
        server: (write("server.pem", &server_cert), write("server-key.pem", &server_key)),
        client: (write("client.pem", &client_cert), write("client-key.pem", &client_key)),
        _dir: dir,
    }
}

fn client_tls(ca: &std::path::Path, identity: Option<&(PathBuf, PathBuf)>) -> ClientTls {
    ClientTls::from_files(Some(ca), identity.map(|i| i.0.as_path()), identity.map(|i| i.1.as_path()))
        .expect("client TLS files")
        .expect("some TLS")
}

async fn tls_origin(pki: &Pki, require_client_cert: bool) -> TestOrigin {
    let server = TlsArgs {
        tls_cert: Some(pki.server.0.clone()),
        tls_key: Some(pki.server.1.clone()),
        tls_client_ca: require_client_cert.then(|| pki.ca.clone()),
    };
    let harness = client_tls(&pki.ca, require_client_cert.then_some(&pki.client));
    let origin =
        TestOrigin::start_with(OriginOptions { tls: Some((server, harness)), ..Default::default() }, None).await;
    let maps = Maps::synthetic(10);
    origin.publish(NM, &maps.network_map_json()).await.expect("network map over TLS");
    origin.publish(CM, &maps.cost_map_json()).await.expect("cost map over TLS");
    origin
}

/// Whether `GetDirectory` succeeds at `url` with `tls`.
async fn reachable(url: &str, tls: Option<&ClientTls>) -> Result<(), String> {
    let mut c = connect::connect_tls(url, Duration::from_secs(3), tls).await.map_err(|e| e.to_string())?;
    c.get_directory(pb::GetDirectoryRequest {}).await.map(drop).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_origin_is_reached_only_by_clients_that_check_its_certificate() {
    let pki = pki();
    let origin = tls_origin(&pki, false).await;
    assert!(origin.url.starts_with("https://"), "{}", origin.url);

    let mut cfg = altocast_client::Config::new(vec![origin.url.clone()], origin.trusted());
    cfg.tls = Some(client_tls(&pki.ca, None));
    let client = TestClient::start_cfg(cfg);
    client.wait_seq(CM, 1, T).await;
    client.stop().await;

    // No CA configured for an https:// URL: refused before connecting.
    let err = connect::connect_tls(&origin.url, Duration::from_secs(3), None).await.expect_err("no CA");
    assert!(matches!(err, ConnectError::BadUrl { .. }), "{err}");
    // A CA the server's certificate does not chain to: the handshake fails.
    assert!(reachable(&origin.url, Some(&client_tls(&pki.other_ca, None))).await.is_err());
    // Plain HTTP/2 to the TLS port gets nowhere either.
    assert!(reachable(&origin.url.replacen("https://", "http://", 1), None).await.is_err());
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_an_rproxy_with_a_client_certificate_and_no_one_else() {
    let pki = pki();
    let origin = tls_origin(&pki, true).await;
    assert!(reachable(&origin.url, Some(&client_tls(&pki.ca, None))).await.is_err(), "no client certificate");
    reachable(&origin.url, Some(&client_tls(&pki.ca, Some(&pki.client)))).await.expect("with a client certificate");

    let path = |p: &std::path::Path| p.display().to_string();
    let extra = [
        "--upstream-ca".to_owned(),
        path(&pki.ca),
        "--upstream-cert".to_owned(),
        path(&pki.client.0),
        "--upstream-key".to_owned(),
        path(&pki.client.1),
    ];
    let rp = TestRproxy::start_with_args(&[&origin.url], &origin.pub_key_path, None, &extra).await;
    let client = TestClient::start(&[&rp.url], origin.trusted());
    client.wait_seq(CM, 1, T).await;
    client.stop().await;
    rp.stop().await;
    origin.stop().await;
}
