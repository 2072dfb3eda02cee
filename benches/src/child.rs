//! Helper processes: the benchmark re-runs itself in a helper mode (or runs a
//! sibling binary) and reads its report lines from stdout.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

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
    pub(crate) fn start(
        url: &str,
        k: usize,
        max_seq: u64,
        key: Option<&std::path::Path>,
    ) -> anyhow::Result<ClientsProc> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["clients", "--endpoint", url, "--subscribers", &k.to_string(), "--max-seq", &max_seq.to_string()]);
        if let Some(k) = key {
            cmd.arg("--key").arg(k);
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
