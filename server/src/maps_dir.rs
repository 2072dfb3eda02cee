//! Watches a directory of RFC 7285 JSON maps. `NAME.json` publishes resource
//! `NAME`. A file is read only once its size and modification time have been
//! stable for the quiet period (so a half-written file is never read as a map;
//! writing to a temporary name and renaming is best), and bursts are debounced:
//! changes are collected until the directory has been quiet for `quiet`, or
//! `max_delay` has passed, then ingested network maps first.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use altocast_proto::ResourceId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::origin::Origin;

/// Watcher settings.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The directory.
    pub dir: PathBuf,
    /// How often to look.
    pub poll: Duration,
    /// Quiet period before a burst is ingested.
    pub quiet: Duration,
    /// Longest delay of a burst.
    pub max_delay: Duration,
}

type Stamp = (SystemTime, u64);

fn stamp(p: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Candidate map files: `*.json`, not hidden, not temporary.
fn scan(dir: &Path) -> HashMap<PathBuf, Stamp> {
    let Ok(rd) = std::fs::read_dir(dir) else { return HashMap::new() };
    rd.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".json") && !name.starts_with('.')
        })
        .filter_map(|p| stamp(&p).map(|s| (p, s)))
        .collect()
}

/// Ingests every map in `dir` now (network maps first); returns how many failed.
pub fn ingest_all(origin: &Origin, dir: &Path, max_body: usize) -> usize {
    let mut files: Vec<PathBuf> = scan(dir).into_keys().collect();
    order(&mut files);
    files.iter().filter(|p| !ingest_file(origin, p, max_body)).count()
}

fn order(files: &mut [PathBuf]) {
    // Network maps before the cost maps that depend on them.
    files.sort_by_key(|p| {
        (std::fs::read(p).map(|b| b.windows(10).any(|w| w == b"\"cost-map\"")).unwrap_or(true), p.clone())
    });
}

fn ingest_file(origin: &Origin, path: &Path, max_body: usize) -> bool {
    let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(ResourceId::new) else { return false };
    let id = match id {
        Ok(id) => id,
        Err(e) => {
            error!(file = %path.display(), error = %e, "file name is not a valid resource id; skipped");
            return false;
        }
    };
    let len = std::fs::metadata(path).map(|m| m.len() as usize).unwrap_or(0);
    if len > max_body {
        error!(file = %path.display(), len, limit = max_body, "map file too large; skipped, published state unchanged");
        return false;
    }
    let body = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            error!(file = %path.display(), error = %e, "cannot read map file");
            return false;
        }
    };
    match origin.ingest(&id, &body) {
        Ok(_) => true,
        Err(e) => {
            error!(file = %path.display(), error = %e, "map file rejected; published state unchanged");
            false
        }
    }
}

/// Watches `cfg.dir` until `shutdown`.
pub async fn watch(origin: Arc<Origin>, cfg: WatchConfig, max_body: usize, shutdown: CancellationToken) {
    // Files present at start were ingested by the caller.
    let mut seen: HashMap<PathBuf, Stamp> = scan(&cfg.dir);
    let mut pending: HashMap<PathBuf, Stamp> = HashMap::new();
    let mut burst_started: Option<Instant> = None;
    let mut last_change = Instant::now();
    if !cfg.dir.is_dir() {
        warn!(dir = %cfg.dir.display(), "maps directory does not exist yet; watching for it");
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(cfg.poll) => {}
        }
        let now_files = scan(&cfg.dir);
        for (p, s) in &now_files {
            if seen.get(p) != Some(s) && pending.get(p) != Some(s) {
                pending.insert(p.clone(), *s);
                last_change = Instant::now();
                burst_started.get_or_insert(last_change);
            }
        }
        let Some(started) = burst_started else { continue };
        let quiet = last_change.elapsed() >= cfg.quiet;
        if !(quiet || started.elapsed() >= cfg.max_delay) {
            continue;
        }
        // Only files whose stamp is still what we saw (not being written).
        let mut ready: Vec<PathBuf> =
            pending.iter().filter(|(p, s)| stamp(p).as_ref() == Some(*s)).map(|(p, _)| p.clone()).collect();
        order(&mut ready);
        for p in ready {
            if let Some(s) = pending.remove(&p) {
                seen.insert(p.clone(), s);
            }
            let origin = origin.clone();
            let _ = tokio::task::spawn_blocking(move || ingest_file(&origin, &p, max_body)).await;
        }
        burst_started = if pending.is_empty() { None } else { Some(Instant::now()) };
    }
}
