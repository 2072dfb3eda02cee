//! What a client keeps across restarts (PROTOCOL.md §9.5–§9.6): the last
//! directory it accepted, in its state directory (`--state-dir`), so that a
//! restart does not reopen the rollback window (an older directory, or an
//! older key list, is refused after it as before it); and the first-use pin
//! file (`--trust-on-first-use`), the root key it trusts.
//!
//! Both are written atomically (a temporary file, synced, renamed over the
//! old one): a crash leaves the old file or the new one, never half of one.

use std::path::{Path, PathBuf};

use altocast_proto::{PublicKey, Verifier, pb, verify::trust::KeyList};
use prost::Message as _;

fn path(dir: &Path) -> PathBuf {
    dir.join("directory.pb")
}

/// Why the saved state cannot be used. The client refuses to start rather
/// than run without the rollback protection it was given.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The saved directory does not restore under the trust anchor.
    #[error(
        "the saved directory {path} is not trusted ({reason}); if the trust anchor was changed on purpose, \
         remove the file"
    )]
    Untrusted {
        /// The file.
        path: String,
        /// The failed check.
        reason: String,
    },
    /// The pin file cannot be read or is not an Ed25519 SPKI PEM key.
    #[error("pin file {path}: {reason}")]
    Pin {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The directory saved last, if any (a file that does not decode is ignored:
/// it is the client's own, and the worst case is the window it guards).
pub fn load(dir: &Path) -> Option<pb::SignedDirectory> {
    // A directory body is at most 1 MiB, and a few signatures ride along.
    const MAX_FILE: u64 = 2 << 20;
    if std::fs::metadata(path(dir)).ok()?.len() > MAX_FILE {
        return None;
    }
    let bytes = std::fs::read(path(dir)).ok()?;
    pb::SignedDirectory::decode(bytes.as_slice()).ok()
}

/// Restores the saved directory of `dir` into `verifier` (§9.6): `Ok(false)`
/// when there is none, an error when it does not restore (no part of it is
/// then used).
pub fn restore(dir: &Path, verifier: &mut Verifier) -> Result<bool, StateError> {
    let Some(saved) = load(dir) else { return Ok(false) };
    verifier
        .restore_directory(&saved)
        .map_err(|e| StateError::Untrusted { path: path(dir).display().to_string(), reason: e.to_string() })?;
    Ok(true)
}

/// The root of the saved directory's current key list: the root the client
/// had reached when it saved it (§9.5 step 3).
pub fn saved_root(dir: &Path) -> Option<PublicKey> {
    let saved = load(dir)?;
    let d = pb::Directory::decode(saved.body).ok()?;
    Some(KeyList::decode(d.key_chain?.current.as_ref()?).ok()?.root)
}

/// Saves `signed` atomically.
pub fn save(dir: &Path, signed: &pb::SignedDirectory) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_atomic(&path(dir), &signed.encode_to_vec(), false)
}

/// The pinned root, or `None` when the pin file does not exist yet.
pub fn read_pin(file: &Path) -> Result<Option<PublicKey>, StateError> {
    let fail = |reason: String| StateError::Pin { path: file.display().to_string(), reason };
    let pem = match std::fs::read_to_string(file) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    PublicKey::from_spki_pem(&pem).map(Some).map_err(|e| fail(e.to_string()))
}

/// Pins `root` (SPKI PEM) atomically.
pub fn write_pin(file: &Path, root: &PublicKey) -> Result<(), StateError> {
    write_atomic(file, root.to_spki_pem().as_bytes(), false)
        .map_err(|e| StateError::Pin { path: file.display().to_string(), reason: e.to_string() })
}

/// Writes `bytes` to `file` so that a crash leaves the old file or the new
/// one: a new temporary file beside it (mode 0600 if `secret`, else 0644),
/// synced, renamed over it, the directory synced. Every file altocast keeps
/// (state, pins, the origin's keys) is written this way.
pub fn write_atomic(file: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    /// Writes of this process so far: two writers of one file (a pin moved
    /// by two subscriptions) never share a temporary file.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = file.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()));
    // A new file, never one that is there (a symbolic link planted at a
    // predictable name would have this write land wherever it points).
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&tmp, file));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed?;
    // The rename itself outlives a crash only once the directory is synced
    // (where a directory can be opened to sync it; the file is in place).
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(())
}
