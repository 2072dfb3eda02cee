//! Smoke tests of the real binaries as a user runs them: `altocast-server`,
//! `altocast-rproxy` and `altocast` in separate processes on loopback.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

fn bin(name: &str) -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_altocast-server"));
    let p = server.with_file_name(name);
    if !p.exists() {
        // Built by `cargo test --workspace`; build it when this package runs alone.
        let pkg = if name == "altocast" { "altocast-client" } else { "altocast-rproxy" };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo).args(["build", "-p", pkg, "--bin", name]).status().expect("cargo build");
        assert!(ok.success(), "building {name}");
    }
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Proc {
    Proc(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run")
}

/// Retries `f` until it succeeds (servers starting), for at most 20 s.
fn eventually(mut f: impl FnMut() -> Output) -> Output {
    let start = Instant::now();
    loop {
        let out = f();
        if out.status.success() || start.elapsed() > Duration::from_secs(20) {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn wait_for_file(p: &Path) {
    let start = Instant::now();
    while !p.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn origin_rproxy_and_cli_work_as_documented() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (op, rp) = (free_port(), free_port());
    let origin_url = format!("http://127.0.0.1:{op}");
    let rproxy_url = format!("http://127.0.0.1:{rp}");
    let _origin = spawn(
        Command::new(bin("altocast-server"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{op}")]),
    );
    wait_for_file(&data.join("origin-pub.pem"));
    let pubkey = run(Command::new(bin("altocast-server")).arg("pubkey").arg("--data-dir").arg(&data));
    assert!(pubkey.status.success(), "{}", stderr(&pubkey));
    assert!(stdout(&pubkey).starts_with("-----BEGIN PUBLIC KEY-----"));
    let key = dir.path().join("origin.pem");
    std::fs::write(&key, &pubkey.stdout).expect("write key");

    let _rproxy = spawn(
        Command::new(bin("altocast-rproxy"))
            .args(["--upstream", &origin_url, "--listen", &format!("127.0.0.1:{rp}"), "--trust-key"])
            .arg(&key),
    );
    // get: the built-in RFC 7285 example cost map, verified, through the RProxy.
    let get = eventually(|| {
        run(Command::new(bin("altocast"))
            .args(["get", "--endpoint", &rproxy_url, "--resource", "default-cost-map", "--trust-key"])
            .arg(&key))
    });
    assert!(get.status.success(), "{}", stderr(&get));
    assert!(stdout(&get).contains(r#""PID3":{"PID1":20,"PID2":15}"#), "{}", stdout(&get));

    // rank: PID2 (15) before PID1 (20) from PID3; unreachable last.
    let rank = run(Command::new(bin("altocast"))
        .args([
            "rank",
            "--endpoint",
            &rproxy_url,
            "--src",
            "203.0.113.1",
            "192.0.2.5",
            "198.51.100.200",
            "10.1.1.1",
            "--trust-key",
        ])
        .arg(&key));
    assert!(rank.status.success(), "{}", stderr(&rank));
    let lines: Vec<String> = stdout(&rank).lines().map(str::to_owned).collect();
    assert_eq!(lines, vec!["198.51.100.200 PID2 15", "192.0.2.5 PID1 20", "10.1.1.1 PID3 unreachable"]);

    // watch: one line per verified update.
    let watch = run(Command::new(bin("altocast"))
        .args(["watch", "--endpoint", &rproxy_url, "--count", "2", "--trust-key"])
        .arg(&key));
    assert!(watch.status.success(), "{}", stderr(&watch));
    let out = stdout(&watch);
    assert!(out.contains("default-network-map seq=1") && out.contains("kind=snapshot"), "{out}");

    // An untrusted key is refused with a one-line reason.
    let other = dir.path().join("other-data");
    let k2 = run(Command::new(bin("altocast-server")).arg("keygen").arg("--data-dir").arg(&other));
    assert!(k2.status.success());
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(&wrong, &k2.stdout).expect("write");
    let bad = run(Command::new(bin("altocast"))
        .args(["get", "--endpoint", &rproxy_url, "--resource", "default-cost-map", "--trust-key"])
        .arg(&wrong));
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("untrusted key"), "{}", stderr(&bad));
    assert_eq!(stderr(&bad).lines().count(), 1, "{}", stderr(&bad));

    // Unreachable endpoint and bad arguments fail clearly.
    let dead = run(Command::new(bin("altocast"))
        .args(["get", "--endpoint", "http://127.0.0.1:1", "--resource", "x", "--trust-key"])
        .arg(&key));
    assert!(!dead.status.success() && stderr(&dead).contains("no endpoint reachable"), "{}", stderr(&dead));
    let badarg = run(Command::new(bin("altocast")).args(["rank", "--src", "not-an-ip", "1.2.3.4"]));
    assert!(!badarg.status.success());

    // A bad server configuration exits 64 before binding.
    let badcfg = run(Command::new(bin("altocast-server")).arg("--data-dir").arg(&data).args([
        "--ttl-secs",
        "10",
        "--heartbeat-secs",
        "9",
    ]));
    assert_eq!(badcfg.status.code(), Some(64), "{}", stderr(&badcfg));
}

#[test]
fn gen_writes_publishable_maps_deterministically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gen_into = |out: &Path| {
        run(Command::new(bin("altocast-server"))
            .args(["gen", "--nodes", "30", "--events", "3", "--seed", "5", "--out"])
            .arg(out))
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    assert!(gen_into(&a).status.success());
    assert!(gen_into(&b).status.success());
    for f in ["default-network-map.json", "default-cost-map.json", "events.jsonl", "steps/0003/default-cost-map.json"] {
        let (x, y) = (std::fs::read(a.join(f)).expect("a"), std::fs::read(b.join(f)).expect("b"));
        assert_eq!(x, y, "{f} differs between runs with the same seed");
    }
    let nm =
        altocast_proto::model::json::parse_network_map(&std::fs::read(a.join("default-network-map.json")).expect("nm"))
            .expect("valid network map");
    assert_eq!(nm.map.len(), 30);
    let events = std::fs::read_to_string(a.join("events.jsonl")).expect("events");
    assert_eq!(events.lines().count(), 3);
    // A missing topology is a clear error.
    let bad =
        run(Command::new(bin("altocast-server")).args(["gen", "--topology", "/nonexistent.json", "--out"]).arg(&a));
    assert!(!bad.status.success() && stderr(&bad).contains("/nonexistent.json"), "{}", stderr(&bad));
}

#[test]
fn demo_runs_to_completion_and_converges() {
    let out = run(Command::new(bin("altocast-server")).args([
        "demo",
        "--nodes",
        "20",
        "--subscribers",
        "20",
        "--events",
        "4",
        "--interval-ms",
        "10",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("(all on one tag: true)"), "{}", stdout(&out));
}

/// The key files the server writes are read by OpenSSL (when the `openssl`
/// binary is present): every private key as PKCS#8, every public key as SPKI,
/// and OpenSSL derives the same public key from the private one.
#[test]
fn key_files_are_read_by_openssl() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("openssl not installed: skipped (Debian package openssl)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let root = run(Command::new(bin("altocast-server")).args(["pubkey", "--root", "--data-dir"]).arg(&data));
    assert!(root.status.success(), "{}", stderr(&root));
    let add = run(Command::new(bin("altocast-server")).args(["keys", "add", "--data-dir"]).arg(&data));
    assert!(add.status.success(), "{}", stderr(&add));
    let list = run(Command::new(bin("altocast-server")).args(["keys", "list", "--data-dir"]).arg(&data));
    assert!(stdout(&list).contains("key list version 2"), "{}", stdout(&list));
    let mut private: Vec<PathBuf> = vec![data.join("root-key.pem"), data.join("origin-key.pem")];
    private.extend(std::fs::read_dir(data.join("update-keys")).expect("update-keys").map(|e| e.expect("entry").path()));
    assert_eq!(private.len(), 3);
    for p in &private {
        let text = run(Command::new("openssl").args(["pkey", "-noout", "-text", "-in"]).arg(p));
        assert!(text.status.success(), "openssl cannot read {}: {}", p.display(), stderr(&text));
        assert!(stdout(&text).contains("ED25519 Private-Key"), "{}", stdout(&text));
    }
    for (private, public) in [("root-key.pem", "root-pub.pem"), ("origin-key.pem", "origin-pub.pem")] {
        let derived = run(Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(data.join(private)));
        assert!(derived.status.success(), "{}", stderr(&derived));
        let ours = std::fs::read_to_string(data.join(public)).expect("public key");
        assert_eq!(stdout(&derived), ours, "OpenSSL derives another public key from {private}");
        let read = run(Command::new("openssl").args(["pkey", "-pubin", "-noout", "-in"]).arg(data.join(public)));
        assert!(read.status.success(), "openssl cannot read {public}: {}", stderr(&read));
    }
    assert_eq!(stdout(&root), std::fs::read_to_string(data.join("root-pub.pem")).expect("root pub"));
}
