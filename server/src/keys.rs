//! The origin's key and publish-token files in the data directory.

use std::path::{Path, PathBuf};

use altocast_proto::OriginKey;
use anyhow::{Context as _, bail};
use tracing::info;

/// PKCS#8 PEM private key, mode 0600.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("origin-key.pem")
}

/// SPKI PEM public key, for clients.
pub fn pubkey_path(data_dir: &Path) -> PathBuf {
    data_dir.join("origin-pub.pem")
}

/// Writes a secret file atomically, mode 0600 (see [`write_atomic`]).
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    write_atomic(path, text.as_bytes(), true)
}

/// Writes a file atomically: a temporary file in the same directory, fsync,
/// rename over `path`, fsync of the directory. A crash or a full disk leaves
/// the old file (or none), never a short one. `secret`: mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    altocast_client::state::write_atomic(path, bytes, secret).with_context(|| format!("writing {}", path.display()))
}

/// Creates a new key (refusing to replace one unless `force`).
pub fn generate(data_dir: &Path, force: bool) -> anyhow::Result<OriginKey> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let path = key_path(data_dir);
    // Replaced atomically by `write_secret` when forced.
    if path.exists() && !force {
        bail!("{} exists; pass --force to replace it (clients trusting it will reject new updates)", path.display());
    }
    let key = OriginKey::generate()?;
    write_secret(&path, &key.to_pkcs8_pem()?)?;
    std::fs::write(pubkey_path(data_dir), key.public().to_spki_pem())?;
    info!(key = %key.id(), path = %path.display(), "generated origin signing key");
    Ok(key)
}

/// Loads the key, generating it on first start.
pub fn load_or_generate(data_dir: &Path) -> anyhow::Result<OriginKey> {
    let path = key_path(data_dir);
    if !path.exists() {
        return generate(data_dir, false);
    }
    load(data_dir)
}

/// Loads the key.
pub fn load(data_dir: &Path) -> anyhow::Result<OriginKey> {
    let path = key_path(data_dir);
    let pem = std::fs::read_to_string(&path).with_context(|| {
        format!("reading {} (run `altocast-server keygen` or start the server once)", path.display())
    })?;
    let key = OriginKey::from_pkcs8_pem(&pem).with_context(|| format!("{}", path.display()))?;
    let pub_path = pubkey_path(data_dir);
    if !pub_path.exists() {
        std::fs::write(&pub_path, key.public().to_spki_pem())?;
    }
    Ok(key)
}

/// Shortest publish token accepted: shorter ones are guessable (and an empty
/// one would accept `Bearer ` with nothing after it).
pub const MIN_TOKEN_LEN: usize = 16;

/// Checks a publish token from `source` (a file or a flag).
pub fn check_token(token: &str, source: &str) -> anyhow::Result<()> {
    if token.chars().count() < MIN_TOKEN_LEN {
        bail!(
            "{source}: the publish token is {} characters; at least {MIN_TOKEN_LEN} are required \
             (delete the file to have a new one generated)",
            token.chars().count()
        );
    }
    Ok(())
}

/// The Publish bearer token: read from DATA_DIR/publish-token, created once
/// (atomically). A token file that is empty or too short stops the server.
pub fn publish_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("publish-token");
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            let t = t.trim().to_owned();
            check_token(&t, &path.display().to_string())?;
            return Ok(t);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let token = hex::encode(raw);
    write_secret(&path, &token)?;
    info!(path = %path.display(), "generated Publish bearer token");
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_short_token_file_stops_the_server_naming_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("publish-token");
        for bad in ["", "\n", "short-token"] {
            std::fs::write(&path, bad).expect("write");
            let err = publish_token(dir.path()).expect_err("must refuse").to_string();
            assert!(err.contains("publish-token") && err.contains("at least 16"), "{err}");
        }
        // No file: one is generated atomically (no temporary left behind) and read back.
        std::fs::remove_file(&path).expect("rm");
        let t = publish_token(dir.path()).expect("generated");
        assert!(t.len() >= MIN_TOKEN_LEN);
        assert_eq!(publish_token(dir.path()).expect("read back"), t);
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("e").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("publish-token")]);
    }
}
