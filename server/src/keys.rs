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

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Creates a new key (refusing to replace one unless `force`).
pub fn generate(data_dir: &Path, force: bool) -> anyhow::Result<OriginKey> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let path = key_path(data_dir);
    if path.exists() {
        if !force {
            bail!(
                "{} exists; pass --force to replace it (clients trusting it will reject new updates)",
                path.display()
            );
        }
        std::fs::remove_file(&path)?;
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

/// The Publish bearer token: read from DATA_DIR/publish-token, created once.
pub fn publish_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("publish-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_owned());
    }
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let token = hex::encode(raw);
    write_secret(&path, &token)?;
    info!(path = %path.display(), "generated Publish bearer token");
    Ok(token)
}
