//! The release artefacts as users run them: `altocast-server` and
//! `altocast-rproxy` started as real processes on loopback, killed with
//! SIGKILL, restarted on the same port and data directory.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use altocast_client::connect;
use altocast_proto::pb;

/// A free loopback port (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A running process whose output goes to a log file. Dropping it kills it.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    /// What was started (for messages).
    pub name: String,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Process {
    /// Starts `binary` with `args`, appending its output to `log`. An
    /// integration test names the shipped binaries as this package builds
    /// them from the same `main.rs` (see Cargo.toml):
    /// `env!("CARGO_BIN_EXE_altocast-server-under-test")` and
    /// `env!("CARGO_BIN_EXE_altocast-rproxy-under-test")`.
    pub fn spawn(binary: &str, args: &[String], log: &Path) -> Process {
        let name = Path::new(binary).file_name().map_or(binary.into(), |n| n.to_string_lossy().into_owned());
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Process { child: Some(child), name, log: log.to_path_buf() }
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until `url` answers `GetDirectory`; panics with the log's tail if
    /// it exits or does not answer within `within`.
    pub async fn wait_ready(&mut self, url: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if !self.running() {
                panic!("{} exited during start-up:\n{}", self.name, self.log_tail());
            }
            if let Ok(mut c) = connect::connect(url, Duration::from_millis(500)).await
                && c.get_directory(pb::GetDirectoryRequest {}).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{} did not answer at {url} within {within:?}:\n{}", self.name, self.log_tail());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}
