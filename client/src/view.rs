//! The client's local view: a consistent snapshot of the verified maps, read
//! lock-free from many threads while updates apply (`arc-swap`), plus a stream
//! of change events and per-resource freshness.
//!
//! Consistency: a [`CostMapVersion`] holds the exact [`NetworkMapVersion`] it
//! was computed against, so a reader can never pair a cost map with another
//! network map version, even while a newer network map has already arrived.

use std::{collections::HashMap, sync::Arc};

pub use altocast_proto::Freshness;
use altocast_proto::{Applied, CostMap, MapState, NetworkMap, ResourceId, Tag, Verifier, pb};
use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::broadcast;

/// One verified network map version.
#[derive(Debug)]
pub struct NetworkMapVersion {
    /// Resource id.
    pub resource_id: ResourceId,
    /// Seq.
    pub seq: u64,
    /// Tag.
    pub tag: Tag,
    /// The map.
    pub map: NetworkMap,
    /// Fresh until (Unix ms).
    pub expires_at_ms: i64,
}

/// One verified cost map version with the network map version it depends on.
#[derive(Debug)]
pub struct CostMapVersion {
    /// Resource id.
    pub resource_id: ResourceId,
    /// Seq.
    pub seq: u64,
    /// Tag.
    pub tag: Tag,
    /// The map.
    pub map: CostMap,
    /// The network map version the costs were computed against.
    pub network_map: Arc<NetworkMapVersion>,
    /// Fresh until (Unix ms).
    pub expires_at_ms: i64,
}

/// Everything verified so far, as one immutable value.
#[derive(Debug, Default)]
pub struct ViewState {
    /// Network maps by resource id.
    pub network_maps: HashMap<ResourceId, Arc<NetworkMapVersion>>,
    /// Cost maps by resource id.
    pub cost_maps: HashMap<ResourceId, Arc<CostMapVersion>>,
}

impl ViewState {
    /// The cost map `id`, or the only one when `id` is `None`.
    pub fn cost_map(&self, id: Option<&str>) -> Option<&Arc<CostMapVersion>> {
        match id {
            Some(id) => self.cost_maps.get(id),
            None => {
                let mut all: Vec<_> = self.cost_maps.values().collect();
                all.sort_by(|a, b| a.resource_id.cmp(&b.resource_id));
                all.into_iter().next()
            }
        }
    }

    /// The network map `id`, or the first one when `id` is `None`.
    pub fn network_map(&self, id: Option<&str>) -> Option<&Arc<NetworkMapVersion>> {
        match id {
            Some(id) => self.network_maps.get(id),
            None => {
                let mut all: Vec<_> = self.network_maps.values().collect();
                all.sort_by(|a, b| a.resource_id.cmp(&b.resource_id));
                all.into_iter().next()
            }
        }
    }

    /// Expiry of a resource (Unix ms).
    pub fn expires_at_ms(&self, id: &str) -> Option<i64> {
        self.network_maps.get(id).map(|v| v.expires_at_ms).or_else(|| self.cost_maps.get(id).map(|v| v.expires_at_ms))
    }
}

/// What the last verified directory says about the origin: what the RFC 7285
/// IRD advertises (`meta.altocast`) and what a tracker keys domains by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryInfo {
    /// The origin id (the key id of its first root; stable across rotations).
    pub origin_id: String,
    /// The key id of the current key list's root, when the directory carries
    /// a key chain.
    pub root_key_id: Option<String>,
    /// The directory's seq.
    pub seq: u64,
}

impl DirectoryInfo {
    /// From a directory the verifier accepted: the root it reached when it
    /// trusts a root, else the root named in the (signed) current key list.
    pub fn of(dir: &pb::Directory, verifier: &Verifier) -> DirectoryInfo {
        let root_key_id = verifier.keys().trusted_root().map(|r| r.id().to_string()).or_else(|| {
            let current = dir.key_chain.as_ref()?.current.as_ref()?;
            altocast_proto::verify::trust::KeyList::decode(current).ok().map(|l| l.root.id().to_string())
        });
        DirectoryInfo { origin_id: dir.origin_id.clone(), root_key_id, seq: dir.seq }
    }
}

/// A verified change, as seen by subscribers of [`View::changes`].
#[derive(Debug, Clone)]
pub struct Change {
    /// What the verifier applied: resource, kind, seq, tag, entries, bytes, issue time.
    pub update: Applied,
    /// When it was applied here (Unix ms).
    pub applied_at_ms: i64,
    /// Network map or cost map.
    pub resource_kind: &'static str,
}

/// The shared, lock-free view.
#[derive(Debug, Clone)]
pub struct View {
    state: Arc<ArcSwap<ViewState>>,
    directory: Arc<ArcSwapOption<DirectoryInfo>>,
    changes: broadcast::Sender<Change>,
}

impl Default for View {
    fn default() -> Self {
        View {
            state: Arc::new(ArcSwap::from_pointee(ViewState::default())),
            directory: Arc::new(ArcSwapOption::empty()),
            changes: broadcast::channel(1024).0,
        }
    }
}

impl View {
    /// The current state (a cheap `Arc` load; hold it as long as needed).
    pub fn load(&self) -> Arc<ViewState> {
        self.state.load_full()
    }

    /// What the last verified directory says about the origin (`None` until
    /// one was accepted).
    pub fn directory(&self) -> Option<Arc<DirectoryInfo>> {
        self.directory.load_full()
    }

    /// Records the directory the subscription's verifier just accepted.
    pub(crate) fn set_directory(&self, dir: &pb::Directory, verifier: &Verifier) {
        let info = DirectoryInfo::of(dir, verifier);
        if self.directory.load().as_deref() != Some(&info) {
            self.directory.store(Some(Arc::new(info)));
        }
    }

    /// A stream of verified changes (lagging receivers skip ahead).
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Freshness of `id` at `now_ms`.
    pub fn freshness(&self, id: &str, now_ms: i64) -> Freshness {
        match self.load().expires_at_ms(id) {
            None => Freshness::Missing,
            Some(t) if t < now_ms => Freshness::Stale { since_ms: t },
            Some(t) => Freshness::Fresh { until_ms: t },
        }
    }

    /// Publishes the verifier's state for `id` after a verified update.
    pub(crate) fn update_from(&self, verifier: &Verifier, change: Change) {
        let Some(held) = verifier.get(change.update.resource_id.as_str()) else { return };
        let cur = self.load();
        let mut next = ViewState { network_maps: cur.network_maps.clone(), cost_maps: cur.cost_maps.clone() };
        let id = change.update.resource_id.clone();
        match &held.state {
            MapState::Network(m) => {
                let same = next.network_maps.get(&id).is_some_and(|v| v.tag == held.tag);
                if same {
                    // A heartbeat: same content, later expiry.
                    let v = &next.network_maps[&id];
                    let nv = NetworkMapVersion { map: v.map.clone(), expires_at_ms: held.expires_at_ms, ..clone_nm(v) };
                    next.network_maps.insert(id.clone(), Arc::new(nv));
                } else {
                    next.network_maps.insert(
                        id.clone(),
                        Arc::new(NetworkMapVersion {
                            resource_id: id.clone(),
                            seq: held.seq,
                            tag: held.tag,
                            map: m.clone(),
                            expires_at_ms: held.expires_at_ms,
                        }),
                    );
                }
            }
            MapState::Cost(c) => {
                let Some(dep) = c.depends_on() else { return };
                // The exact network map version the costs were computed against:
                // the one in the view if it matches, else the verifier's copy.
                let nm = match next.network_maps.get(&dep.resource_id) {
                    Some(v) if v.tag == dep.tag => v.clone(),
                    _ => match verifier.version(dep.resource_id.as_str(), dep.tag) {
                        Some((seq, MapState::Network(m))) => Arc::new(NetworkMapVersion {
                            resource_id: dep.resource_id.clone(),
                            seq,
                            tag: dep.tag,
                            map: m.clone(),
                            expires_at_ms: verifier.get(dep.resource_id.as_str()).map_or(0, |h| h.expires_at_ms),
                        }),
                        _ => return,
                    },
                };
                next.cost_maps.insert(
                    id.clone(),
                    Arc::new(CostMapVersion {
                        resource_id: id,
                        seq: held.seq,
                        tag: held.tag,
                        map: c.clone(),
                        network_map: nm,
                        expires_at_ms: held.expires_at_ms,
                    }),
                );
            }
        }
        self.state.store(Arc::new(next));
        let _ = self.changes.send(change);
    }
}

fn clone_nm(v: &NetworkMapVersion) -> NetworkMapVersion {
    NetworkMapVersion {
        resource_id: v.resource_id.clone(),
        seq: v.seq,
        tag: v.tag,
        map: v.map.clone(),
        expires_at_ms: v.expires_at_ms,
    }
}
