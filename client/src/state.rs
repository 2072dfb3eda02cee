//! What a client keeps across restarts in its state directory
//! (`--state-dir`): the last directory it accepted, so that a restart does not
//! reopen the rollback window (an older directory, or an older key list, is
//! refused after it as before it).

use std::path::{Path, PathBuf};

use altocast_proto::pb;
use prost::Message as _;

fn path(dir: &Path) -> PathBuf {
    dir.join("directory.pb")
}

/// The directory saved last, if any (a file that does not decode is ignored:
/// it is the client's own, and the worst case is the window it guards).
pub fn load(dir: &Path) -> Option<pb::SignedDirectory> {
    let bytes = std::fs::read(path(dir)).ok()?;
    pb::SignedDirectory::decode(bytes.as_slice()).ok()
}

/// Saves `signed` atomically (a temporary file renamed over the old one).
pub fn save(dir: &Path, signed: &pb::SignedDirectory) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".directory.pb.tmp-{}", std::process::id()));
    std::fs::write(&tmp, signed.encode_to_vec())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path(dir))
}
