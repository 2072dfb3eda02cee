//! The origin's trust files and the operator's `keys` commands (PROTOCOL.md
//! §9, README "Keys"). In the data directory:
//!
//! - `root-key.pem` / `root-pub.pem`: the root key, which signs key lists only.
//!   The server needs it only to create the first list; an operator may move
//!   it offline and pass `--root-key FILE` to the `keys` commands.
//! - `keychain.pb`: the signed key chain (every list that changed the root,
//!   and the current list), read by the running server every second.
//! - `origin-key.pem` and `update-keys/ID.pem`: the update keys' private
//!   halves. The server signs with every key the current list makes valid now
//!   whose private half it has.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use altocast_proto::{
    OriginKey, pb,
    verify::trust::{self, KeyList, MAX_KEYS, MAX_ROOT_HISTORY, UpdateKey},
};
use anyhow::{Context as _, bail};
use prost::Message as _;
use tracing::info;

use crate::keys;

/// How long a new key list stays valid unless the operator says otherwise.
pub const DEFAULT_VALID_DAYS: u64 = 365;

/// The root's private key file.
pub fn root_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("root-key.pem")
}

/// The root's public key (what clients trust with `--trust-root`).
pub fn root_pub_path(data_dir: &Path) -> PathBuf {
    data_dir.join("root-pub.pem")
}

/// The signed key chain.
pub fn chain_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keychain.pb")
}

fn update_key_path(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("update-keys").join(format!("{id}.pem"))
}

fn now_ms() -> i64 {
    altocast_client::now_ms()
}

fn days_ms(days: u64) -> i64 {
    (days.min(36_500) * 86_400_000) as i64
}

/// The key chain as the origin serves it, and the keys it signs with.
#[derive(Debug)]
pub struct Keyring {
    /// What the directory carries.
    pub chain: pb::KeyChain,
    /// The current list, decoded.
    pub list: KeyList,
    /// The update keys valid now whose private halves are here.
    pub signing: Vec<OriginKey>,
    /// When `keychain.pb` was last modified (to notice the operator's changes).
    pub modified: Option<SystemTime>,
}

fn read_chain(data_dir: &Path) -> anyhow::Result<pb::KeyChain> {
    let path = chain_path(data_dir);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    pb::KeyChain::decode(bytes.as_slice()).with_context(|| format!("{} is not a key chain", path.display()))
}

fn write_chain(data_dir: &Path, chain: &pb::KeyChain) -> anyhow::Result<()> {
    keys::write_atomic(&chain_path(data_dir), &chain.encode_to_vec(), false)
}

fn private_key(data_dir: &Path, id: &str) -> Option<OriginKey> {
    let origin = keys::load(data_dir).ok().filter(|k| k.id().as_str() == id);
    origin.or_else(|| {
        let pem = std::fs::read_to_string(update_key_path(data_dir, id)).ok()?;
        OriginKey::from_pkcs8_pem(&pem).ok()
    })
}

impl Keyring {
    /// Loads the chain, creating the root key and the first list (the
    /// origin key as its one update key) on first start.
    pub fn load_or_init(data_dir: &Path) -> anyhow::Result<Keyring> {
        let origin = keys::load_or_generate(data_dir)?;
        if !chain_path(data_dir).exists() {
            let root = match std::fs::read_to_string(root_key_path(data_dir)) {
                Ok(pem) => OriginKey::from_pkcs8_pem(&pem).context("root-key.pem")?,
                Err(_) => {
                    let root = OriginKey::generate()?;
                    keys::write_atomic(&root_key_path(data_dir), root.to_pkcs8_pem()?.as_bytes(), true)?;
                    std::fs::write(root_pub_path(data_dir), root.public().to_spki_pem())?;
                    info!(root = %root.id(), "generated the root key (keep root-key.pem offline if you can)");
                    root
                }
            };
            let now = now_ms();
            let list = KeyList {
                origin_id: root.id().to_string(),
                version: 1,
                issued_at_ms: now,
                expires_at_ms: now + days_ms(DEFAULT_VALID_DAYS),
                root: root.public(),
                keys: vec![UpdateKey { key: origin.public(), not_before_ms: 0, not_after_ms: 0 }],
                revoked: Vec::new(),
            };
            let chain = pb::KeyChain { root_history: Vec::new(), current: Some(list.sign(&[&root])) };
            write_chain(data_dir, &chain)?;
            info!(version = 1, key = %origin.id(), "wrote the first key list");
        }
        Self::load(data_dir)
    }

    /// Loads the chain and the signing keys.
    pub fn load(data_dir: &Path) -> anyhow::Result<Keyring> {
        let chain = read_chain(data_dir)?;
        let current = chain.current.as_ref().context("keychain.pb has no current key list")?;
        let list = KeyList::decode(current).context("keychain.pb")?;
        let now = now_ms();
        let signing: Vec<OriginKey> = list
            .keys
            .iter()
            .filter(|k| !list.is_revoked(k.key.id()))
            .filter(|k| {
                (k.not_before_ms == 0 || k.not_before_ms <= now) && (k.not_after_ms == 0 || now <= k.not_after_ms)
            })
            .filter_map(|k| private_key(data_dir, k.key.id().as_str()))
            .collect();
        if signing.is_empty() {
            bail!(
                "key list version {} makes no key whose private half is in {} valid now: add one (`altocast-server keys add`)",
                list.version,
                data_dir.display()
            );
        }
        let modified = std::fs::metadata(chain_path(data_dir)).and_then(|m| m.modified()).ok();
        Ok(Keyring { chain, list, signing, modified })
    }
}

/// What an operator command does to the current list.
#[derive(Debug, Clone)]
pub enum Change {
    /// A new update key, valid from now.
    Add,
    /// A key stops signing now (what it signed before stays valid).
    Retire(String),
    /// A key is never trusted again.
    Revoke(String),
    /// The same list, re-signed with a new expiry.
    Renew,
    /// A new root key, signed by the old one and itself.
    RotateRoot,
}

/// Applies `change` to the key chain in `data_dir`, signing with the root key
/// at `root_key` (for `RotateRoot`, the new root is written there, the old
/// one kept beside it as `.old-ID`). Returns a line to print.
pub fn change(data_dir: &Path, root_key: &Path, change: &Change, valid_days: u64) -> anyhow::Result<String> {
    if !chain_path(data_dir).exists() {
        Keyring::load_or_init(data_dir)?;
    }
    let mut chain = read_chain(data_dir)?;
    let current = chain.current.as_ref().context("keychain.pb has no current key list")?;
    let old = KeyList::decode(current).context("keychain.pb")?;
    let pem =
        std::fs::read_to_string(root_key).with_context(|| format!("reading the root key {}", root_key.display()))?;
    let root = OriginKey::from_pkcs8_pem(&pem).with_context(|| root_key.display().to_string())?;
    if root.public() != old.root {
        bail!(
            "{} is root {}, but key list version {} is signed by root {}",
            root_key.display(),
            root.id(),
            old.version,
            old.root.id()
        );
    }
    let now = now_ms();
    let mut list = KeyList {
        version: old.version + 1,
        issued_at_ms: now,
        expires_at_ms: now + days_ms(valid_days),
        ..old.clone()
    };
    let find = |id: &str| -> anyhow::Result<usize> {
        list.keys.iter().position(|k| k.key.id().as_str() == id).with_context(|| {
            let known: Vec<&str> = list.keys.iter().map(|k| k.key.id().as_str()).collect();
            format!("no update key {id:?} in key list version {} (keys: {})", old.version, known.join(", "))
        })
    };
    let mut new_root = None;
    let line = match change {
        Change::Add if list.keys.len() >= MAX_KEYS => bail!(
            "key list version {} already has {MAX_KEYS} update keys, the most a verifier accepts \
             (PROTOCOL.md §9.2): revoke one first (`altocast-server keys revoke ID`)",
            old.version
        ),
        Change::Add => {
            let key = OriginKey::generate()?;
            let path = update_key_path(data_dir, key.id().as_str());
            std::fs::create_dir_all(path.parent().unwrap_or(data_dir))?;
            keys::write_atomic(&path, key.to_pkcs8_pem()?.as_bytes(), true)?;
            list.keys.push(UpdateKey { key: key.public(), not_before_ms: now, not_after_ms: 0 });
            format!("added update key {} (key list version {})", key.id(), list.version)
        }
        Change::Retire(id) => {
            let i = find(id)?;
            list.keys[i].not_after_ms = now;
            format!("retired update key {id} from now (key list version {})", list.version)
        }
        Change::Revoke(id) => {
            let i = find(id)?;
            list.keys.remove(i);
            list.revoked.push(id.clone());
            // Verifiers refuse a list with more than MAX_KEYS revoked ids. A
            // revoked key is never in `keys` again, so forgetting the oldest
            // ids changes nothing a verifier trusts (PROTOCOL.md §9.2).
            let dropped: Vec<String> = list.revoked.drain(..list.revoked.len().saturating_sub(MAX_KEYS)).collect();
            let mut line = format!("revoked update key {id} (key list version {})", list.version);
            if !dropped.is_empty() {
                line +=
                    &format!("; the oldest revoked ids no longer listed (at most {MAX_KEYS}): {}", dropped.join(", "));
            }
            line
        }
        Change::Renew => format!("renewed key list version {} until {} days from now", list.version, valid_days),
        Change::RotateRoot if chain.root_history.len() >= MAX_ROOT_HISTORY => bail!(
            "the key chain already records {MAX_ROOT_HISTORY} root changes, the most a verifier accepts \
             (PROTOCOL.md §9.2); dropping the oldest would strand clients that trust an old root"
        ),
        Change::RotateRoot => {
            let r = OriginKey::generate()?;
            list.root = r.public();
            let line = format!("rotated the root from {} to {} (key list version {})", root.id(), r.id(), list.version);
            new_root = Some(r);
            line
        }
    };
    // The origin must keep a key to sign with.
    let usable = list.keys.iter().any(|k| {
        !list.is_revoked(k.key.id())
            && (k.not_after_ms == 0 || k.not_after_ms > now)
            && private_key(data_dir, k.key.id().as_str()).is_some()
    });
    if !usable {
        bail!(
            "after this change no update key whose private half is in {} could sign: add a key first",
            data_dir.display()
        );
    }
    let signed = match &new_root {
        Some(r) => {
            let s = list.sign(&[&root, r]);
            chain.root_history.push(s.clone());
            s
        }
        None => list.sign(&[&root]),
    };
    chain.current = Some(signed);
    // What every verifier will check, checked before anything is written: a
    // list they would refuse would cut every client off.
    trust::walk(&old.root, old.version, &chain, now, 0)
        .context("the new key list would be refused by verifiers; nothing was changed")?;
    if let Some(r) = &new_root {
        // The old root is kept beside the new one: losing it loses nothing
        // (clients walk forward), but an operator may want it for audits.
        let kept = root_key.with_extension(format!("pem.old-{}", root.id()));
        keys::write_atomic(&kept, pem.as_bytes(), true)?;
        keys::write_atomic(root_key, r.to_pkcs8_pem()?.as_bytes(), true)?;
        if root_key == root_key_path(data_dir) {
            std::fs::write(root_pub_path(data_dir), r.public().to_spki_pem())?;
        }
    }
    write_chain(data_dir, &chain)?;
    Ok(line)
}

/// `keys list`: the current list, one key per line.
pub fn describe(data_dir: &Path) -> anyhow::Result<String> {
    if !chain_path(data_dir).exists() {
        Keyring::load_or_init(data_dir)?;
    }
    let chain = read_chain(data_dir)?;
    let list = KeyList::decode(chain.current.as_ref().context("keychain.pb has no current key list")?)?;
    let now = now_ms();
    let mut out = format!(
        "origin {} key list version {} root {} expires in {} days ({} root changes)\n",
        list.origin_id,
        list.version,
        list.root.id(),
        (list.expires_at_ms - now) / 86_400_000,
        chain.root_history.len()
    );
    for k in &list.keys {
        let state = if k.not_after_ms != 0 && k.not_after_ms <= now {
            "retired"
        } else if k.not_before_ms > now {
            "not yet valid"
        } else {
            "active"
        };
        let here = if private_key(data_dir, k.key.id().as_str()).is_some() {
            "private key here"
        } else {
            "no private key here"
        };
        out += &format!("  {} {state} ({here})\n", k.key.id());
    }
    for r in &list.revoked {
        out += &format!("  {r} revoked\n");
    }
    Ok(out)
}

/// The public halves of every update key whose private half is in
/// `data_dir` (the origin's own signatures, whatever the list says now).
pub fn own_public_keys(data_dir: &Path) -> Vec<altocast_proto::PublicKey> {
    let mut out: Vec<altocast_proto::PublicKey> = keys::load(data_dir).map(|k| vec![k.public()]).unwrap_or_default();
    if let Ok(dir) = std::fs::read_dir(data_dir.join("update-keys")) {
        for e in dir.flatten() {
            if let Ok(pem) = std::fs::read_to_string(e.path())
                && let Ok(k) = OriginKey::from_pkcs8_pem(&pem)
            {
                out.push(k.public());
            }
        }
    }
    out
}

/// Re-reads `keychain.pb` every second; when the operator changed it, the
/// origin signs with the new list's keys (see [`crate::origin::Origin::rekey`]).
/// A list that cannot be used is logged and the old keys stay in use.
pub async fn watch(
    origin: std::sync::Arc<crate::origin::Origin>,
    data_dir: PathBuf,
    mut seen: Option<SystemTime>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let modified = std::fs::metadata(chain_path(&data_dir)).and_then(|m| m.modified()).ok();
        if modified == seen {
            continue;
        }
        seen = modified;
        let (o, d) = (origin.clone(), data_dir.clone());
        let done = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
            let ring = Keyring::load(&d)?;
            let version = ring.list.version;
            o.rekey(ring.signing, ring.chain);
            Ok(version)
        })
        .await;
        match done {
            Ok(Ok(version)) => info!(version, "key list changed"),
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "key list not usable; still signing with the old keys")
            }
            Err(e) => tracing::warn!(error = %e, "key list reload failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_mistakes_are_refused_naming_what_is_wrong_and_change_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let ring = Keyring::load_or_init(d).expect("init");
        let only = ring.list.keys[0].key.id().to_string();
        let root = root_key_path(d);
        let before = std::fs::read(chain_path(d)).expect("chain");
        // The only key can be neither revoked nor retired: nothing could sign.
        for c in [Change::Revoke(only.clone()), Change::Retire(only.clone())] {
            let e = change(d, &root, &c, 30).expect_err("refused").to_string();
            assert!(e.contains("no update key") && e.contains("could sign"), "{e}");
        }
        // An unknown key id is named, with the ids the list has.
        let e = change(d, &root, &Change::Retire("0123456789abcdef".into()), 30).expect_err("refused").to_string();
        assert!(e.contains("0123456789abcdef") && e.contains(&only), "{e}");
        // Another root key cannot sign the list.
        let stranger = d.join("stranger.pem");
        std::fs::write(&stranger, OriginKey::generate().expect("key").to_pkcs8_pem().expect("pem")).expect("write");
        let e = change(d, &stranger, &Change::Renew, 30).expect_err("refused").to_string();
        assert!(e.contains("is root") && e.contains(&ring.list.root.id().to_string()), "{e}");
        assert_eq!(std::fs::read(chain_path(d)).expect("chain"), before, "a refused change wrote the chain");
        // A real rotation: add, then the old key may go; versions count up.
        change(d, &root, &Change::Add, 30).expect("add");
        change(d, &root, &Change::Revoke(only.clone()), 30).expect("revoke after add");
        let after = Keyring::load(d).expect("load");
        assert_eq!(after.list.version, 3);
        assert!(after.list.revoked.contains(&only) && after.signing.iter().all(|k| k.id().as_str() != only));
    }

    #[test]
    fn lists_stay_within_what_verifiers_accept() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let first = Keyring::load_or_init(d).expect("init").list.keys[0].key.id().to_string();
        let root = root_key_path(d);
        for _ in 1..MAX_KEYS {
            change(d, &root, &Change::Add, 30).expect("add");
        }
        let before = std::fs::read(chain_path(d)).expect("chain");
        let e = change(d, &root, &Change::Add, 30).expect_err("a 65th key").to_string();
        assert!(e.contains("64 update keys") && e.contains("revoke"), "{e}");
        assert_eq!(std::fs::read(chain_path(d)).expect("chain"), before, "a refused add wrote the chain");
        // More revocations than a list may carry: the oldest ids are no longer
        // listed, and every list still walks from the first root.
        let ids = |d: &Path| -> Vec<String> {
            Keyring::load(d).expect("load").list.keys.iter().map(|k| k.key.id().to_string()).collect()
        };
        for id in ids(d).into_iter().skip(1) {
            change(d, &root, &Change::Revoke(id), 30).expect("revoke");
        }
        change(d, &root, &Change::Add, 30).expect("add");
        change(d, &root, &Change::Add, 30).expect("add");
        let mut line = String::new();
        for id in ids(d).into_iter().filter(|id| *id != first) {
            line = change(d, &root, &Change::Revoke(id), 30).expect("revoke");
        }
        assert!(line.contains("no longer listed"), "{line}");
        let ring = Keyring::load(d).expect("load");
        assert_eq!(ring.list.revoked.len(), MAX_KEYS);
        let origin = Keyring::load(d).expect("load").list.root;
        trust::walk(&origin, 0, &ring.chain, now_ms(), 0).expect("verifiers accept the list");
        // Root changes: at most MAX_ROOT_HISTORY, the next refused naming it.
        for _ in 0..MAX_ROOT_HISTORY {
            change(d, &root, &Change::RotateRoot, 30).expect("rotate");
        }
        let e = change(d, &root, &Change::RotateRoot, 30).expect_err("a 65th root change").to_string();
        assert!(e.contains("64 root changes"), "{e}");
    }
}
