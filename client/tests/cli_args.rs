//! The `altocast` binary's argument handling, as a user meets it.

use std::process::Command;

fn altocast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_altocast"))
}

#[test]
fn help_lists_the_commands_and_bad_arguments_fail_clearly() {
    let help = altocast().arg("--help").output().expect("run");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for cmd in ["watch", "get", "rank", "lookup", "directory"] {
        assert!(text.contains(cmd), "--help does not list {cmd}");
    }
    let bad = altocast().args(["rank", "--src", "not-an-ip", "192.0.2.1"]).output().expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not-an-ip"));
    // No trusted key and no --trust-on-first-use: refused before any network use.
    let untrusted =
        altocast().args(["get", "--resource", "x", "--endpoint", "http://127.0.0.1:9"]).output().expect("run");
    assert!(!untrusted.status.success());
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains("--trust-root") && err.contains("--trust-key"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
