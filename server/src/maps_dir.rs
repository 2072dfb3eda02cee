//! Watches a directory of RFC 7285 JSON maps. `NAME.json` publishes resource
//! `NAME`. A file is read only once its size and modification time have been
//! stable for the quiet period (so a half-written file is never read as a map;
//! writing to a temporary name and renaming is best), and bursts are debounced:
//! changes are collected until the directory has been quiet for `quiet`, or
//! `max_delay` has passed, then ingested as **one step** (see
//! [`Origin::ingest_batch`]): a network map and the cost maps that must change
//! with it, written together, are published together or not at all. A file
//! that is refused is named in the log and left out; the rest of the burst
//! still goes in as one step.
//!
//! Only regular files are read: symlinks are not followed, FIFOs and devices
//! are skipped (opened non-blocking, checked from the open file), and the size
//! limit is checked from the open file before reading, reading at most the
//! limit.

use std::{
    collections::HashMap,
    io::Read as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use altocast_proto::ResourceId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::origin::{Form, Input, Origin};

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

/// Size and mtime of a regular file, not following symlinks.
fn stamp(p: &Path) -> Option<Stamp> {
    let m = std::fs::symlink_metadata(p).ok()?;
    m.file_type().is_file().then_some(())?;
    Some((m.modified().ok()?, m.len()))
}

/// Candidate map files: regular `*.json` files, not hidden, not temporary.
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

/// Why a map file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The name is not a resource id.
    #[error("file name is not a valid resource id: {0}")]
    Name(String),
    /// Not a regular file (symlink, FIFO, device, directory).
    #[error("not a regular file")]
    NotRegular,
    /// Over the size limit.
    #[error("{len} bytes; the limit is {limit}")]
    TooLarge {
        /// Its size.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one map file safely: no symlink is followed, opening never blocks
/// (a FIFO), only a regular file is read, and never more than `max_body`
/// bytes even if it grows while being read.
pub fn read_map_file(path: &Path, max_body: usize) -> Result<(ResourceId, Vec<u8>), FileError> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let id = ResourceId::new(stem).map_err(|e| FileError::Name(e.to_string()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let f = opts.open(path).map_err(|e| match e.raw_os_error() {
        // O_NOFOLLOW on a symlink.
        Some(libc::ELOOP) => FileError::NotRegular,
        _ => FileError::Io(e),
    })?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular);
    }
    if meta.len() > max_body as u64 {
        return Err(FileError::TooLarge { len: meta.len(), limit: max_body });
    }
    let mut body = Vec::with_capacity(meta.len() as usize);
    f.take(max_body as u64 + 1).read_to_end(&mut body)?;
    if body.len() > max_body {
        return Err(FileError::TooLarge { len: body.len() as u64, limit: max_body });
    }
    Ok((id, body))
}

/// Ingests every map in `dir` now, as one step; returns how many files were refused.
pub fn ingest_all(origin: &Origin, dir: &Path, max_body: usize) -> usize {
    let mut files: Vec<PathBuf> = scan(dir).into_keys().collect();
    files.sort();
    ingest_files(origin, &files, max_body)
}

/// Reads `files` and ingests them as one step; a file that is unreadable or
/// refused is logged and left out, and the step is retried without it.
/// Returns how many files were refused.
pub fn ingest_files(origin: &Origin, files: &[PathBuf], max_body: usize) -> usize {
    let mut refused = 0;
    let mut bodies: Vec<(PathBuf, ResourceId, Vec<u8>)> = Vec::new();
    for p in files {
        match read_map_file(p, max_body) {
            Ok((id, body)) => bodies.push((p.clone(), id, body)),
            Err(e) => {
                metrics::counter!("altocast_origin_map_files_refused_total").increment(1);
                error!(file = %p.display(), error = %e, "map file skipped; published state unchanged");
                refused += 1;
            }
        }
    }
    // Each retry drops one refused file, so this ends.
    while !bodies.is_empty() {
        let inputs: Vec<Input<'_>> =
            bodies.iter().map(|(_, id, body)| Input { id: id.clone(), body, form: Form::Any }).collect();
        let Err(e) = origin.ingest_batch(&inputs) else { break };
        metrics::counter!("altocast_origin_map_files_refused_total").increment(1);
        refused += 1;
        let culprit = e.resource().and_then(|r| bodies.iter().position(|(_, id, _)| id.as_str() == r));
        match culprit {
            Some(i) => {
                let (p, ..) = bodies.remove(i);
                error!(file = %p.display(), error = %e, "map file rejected; published state unchanged");
            }
            None => {
                // Not one file's fault (the store failed): nothing went in.
                let files: Vec<String> = bodies.iter().map(|(p, ..)| p.display().to_string()).collect();
                error!(?files, error = %e, "map files not published; published state unchanged");
                refused += bodies.len() - 1;
                break;
            }
        }
    }
    refused
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
        // A file removed before it settled is no longer waited for.
        pending.retain(|p, _| now_files.contains_key(p));
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
        ready.sort();
        for p in &ready {
            if let Some(s) = pending.remove(p) {
                seen.insert(p.clone(), s);
            }
        }
        if !ready.is_empty() {
            let origin = origin.clone();
            let _ = tokio::task::spawn_blocking(move || ingest_files(&origin, &ready, max_body)).await;
        }
        burst_started = if pending.is_empty() { None } else { Some(Instant::now()) };
    }
}
