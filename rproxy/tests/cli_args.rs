//! The `altocast-rproxy` binary's configuration checks: refused before binding.

use std::process::Command;

fn rproxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_altocast-rproxy"))
}

#[test]
fn bad_configuration_exits_64_naming_the_problem() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("missing.pem");
    let out = rproxy()
        .args(["--upstream", "http://127.0.0.1:7100", "--listen", "127.0.0.1:0", "--trust-key"])
        .arg(&missing)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.pem"));
    let not_a_url = rproxy().args(["--upstream", "127.0.0.1:7100", "--trust-key"]).arg(&missing).output().expect("run");
    assert_eq!(not_a_url.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&not_a_url.stderr).contains("http://"));
    // A config file's values are used, and flags override them.
    let cfg = dir.path().join("rproxy.toml");
    std::fs::write(&cfg, "upstream = [\"ftp://nope\"]\nring-size = 0\n").expect("write");
    let from_file = rproxy().arg("--config").arg(&cfg).arg("--trust-key").arg(&missing).output().expect("run");
    assert_eq!(from_file.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&from_file.stderr).contains("--ring-size"),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
}
