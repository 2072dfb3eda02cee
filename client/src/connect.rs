//! Connecting to an endpoint and the unary calls (`GetDirectory`, `Fetch`),
//! each verified before use.

use std::time::Duration;

use altocast_proto::{Applied, ResourceId, Verifier, VerifyError, pb, verify::Opened};
use tonic::transport::{Channel, Endpoint};

/// Largest message accepted from an endpoint (a whole cost map in one `Fetch`).
pub const MAX_MESSAGE: usize = 64 << 20;

/// How long a `GetDirectory` call may take: no staleness clock runs while a
/// client waits for an answer (PROTOCOL.md §8.8), and a directory is at most
/// 1 MiB.
pub const DIRECTORY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a `Subscribe` call may take to be answered (its response
/// headers; the frames that follow have the staleness clocks of
/// PROTOCOL.md §8.8, which only start once it is).
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a `Fetch` call may take: as for `GetDirectory`, but an answer
/// may be up to [`MAX_MESSAGE`].
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A client connection error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not usable.
    #[error("bad endpoint URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The endpoint could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The endpoint answered with an error.
    #[error("{url}: {status}")]
    Status {
        /// The URL.
        url: String,
        /// The gRPC status.
        status: tonic::Status,
    },
    /// The endpoint accepted a call but did not answer it in time.
    #[error("{url}: no answer to {call} within {} s", .within.as_secs())]
    Timeout {
        /// The URL.
        url: String,
        /// The call (`GetDirectory`, `Fetch`).
        call: &'static str,
        /// The bound.
        within: Duration,
    },
    /// What the endpoint sent failed verification.
    #[error("{url}: verification failed: {error}")]
    Verify {
        /// The URL.
        url: String,
        /// The failed check.
        error: VerifyError,
    },
    /// The answer verified but did not end at an exposable version (it ended
    /// expired, or a cost map ahead of its network map).
    #[error("{url}: {resource} is not usable yet: {waiting}")]
    NotExposable {
        /// The URL.
        url: String,
        /// The resource.
        resource: ResourceId,
        /// Why its last version waits.
        waiting: altocast_proto::Waiting,
    },
}

/// A typed client for one endpoint.
pub type DistributionClient = pb::distribution_client::DistributionClient<Channel>;

/// TLS settings for `https://` endpoints.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// PEM CA certificate(s) the server's certificate must chain to.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and key presented to servers that require client
    /// certificates (mTLS).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Reads the CA, certificate and key files; `None` when none is given.
    /// The error names the file or the missing half.
    pub fn from_files(
        ca: Option<&std::path::Path>,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<Option<ClientTls>, String> {
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => return Err("a client certificate and its key go together".into()),
        };
        let ca_pem = ca.map(read).transpose()?;
        Ok((ca_pem.is_some() || identity.is_some()).then_some(ClientTls { ca_pem, identity }))
    }
}

/// Connects to `url` (e.g. `http://127.0.0.1:7100`).
pub async fn connect(url: &str, timeout: Duration) -> Result<DistributionClient, ConnectError> {
    connect_tls(url, timeout, None).await
}

/// Connects to `url`, using `tls` for an `https://` URL.
pub async fn connect_tls(
    url: &str,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<DistributionClient, ConnectError> {
    let ch = channel(url, timeout, tls).await?;
    Ok(pb::distribution_client::DistributionClient::new(ch).max_decoding_message_size(MAX_MESSAGE))
}

async fn channel(url: &str, timeout: Duration, tls: Option<&ClientTls>) -> Result<Channel, ConnectError> {
    let bad = |reason: String| ConnectError::BadUrl { url: url.into(), reason };
    let mut ep = Endpoint::from_shared(url.to_owned())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if url.starts_with("https://") {
        let tls = tls.ok_or_else(|| bad("an https:// endpoint needs a CA to check its certificate (--ca)".into()))?;
        let mut cfg = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &tls.ca_pem {
            cfg = cfg.ca_certificate(tonic::transport::Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &tls.identity {
            cfg = cfg.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        ep = ep.tls_config(cfg).map_err(|e| bad(format!("TLS settings: {e}")))?;
    }
    tokio::time::timeout(timeout, ep.connect())
        .await
        .map_err(|_| ConnectError::Unreachable { url: url.into(), reason: format!("no answer in {timeout:?}") })?
        .map_err(|e| ConnectError::Unreachable { url: url.into(), reason: source_chain(&e) })
}

/// Largest `Publish` request sent (the origin's own limit is configurable; a
/// full RFC 7285 cost map of a large backbone is tens of MB).
pub const MAX_PUBLISH: usize = 256 << 20;

/// Sends `req` to the origin's `Publisher` service at `url`, with `token` as
/// the bearer token (`None` sends no credentials), over TLS with `tls` for an
/// `https://` URL.
pub async fn publish(
    url: &str,
    token: Option<&str>,
    req: pb::PublishRequest,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<pb::PublishResponse, ConnectError> {
    let ch = channel(url, timeout, tls).await?;
    let mut c = pb::publisher_client::PublisherClient::new(ch).max_encoding_message_size(MAX_PUBLISH);
    let mut req = tonic::Request::new(req);
    if let Some(t) = token {
        let value = format!("Bearer {t}").parse().map_err(|_| ConnectError::BadUrl {
            url: url.into(),
            reason: "token is not a valid header value".into(),
        })?;
        req.metadata_mut().insert("authorization", value);
    }
    c.publish(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| ConnectError::Status { url: url.into(), status })
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s = format!("{s}: {c}");
        cur = c.source();
    }
    s
}

/// Fetches the signed directory and has `verifier` accept it (PROTOCOL.md
/// §9): its key chain, signature, origin, seq and expiry; the verifier then
/// checks updates with the keys it names.
pub async fn directory(
    client: &mut DistributionClient,
    url: &str,
    verifier: &mut Verifier,
    now_ms: i64,
) -> Result<(pb::SignedDirectory, pb::Directory), ConnectError> {
    let signed = get_directory(client, url, DIRECTORY_TIMEOUT).await?;
    let dir =
        verifier.accept_directory(&signed, now_ms).map_err(|error| ConnectError::Verify { url: url.into(), error })?;
    // The held one when the received one was not newer (an honest RProxy
    // that lags): what is saved and relayed is never the older directory.
    let held = verifier.signed_directory().cloned().unwrap_or(signed);
    Ok((held, dir))
}

/// `url`'s signed directory, not verified yet, answered `within` (no
/// staleness clock runs while a call waits, PROTOCOL.md §8.8).
pub async fn get_directory(
    client: &mut DistributionClient,
    url: &str,
    within: Duration,
) -> Result<pb::SignedDirectory, ConnectError> {
    let call = client.get_directory(pb::GetDirectoryRequest {});
    Ok(tokio::time::timeout(within, call)
        .await
        .map_err(|_| ConnectError::Timeout { url: url.into(), call: "GetDirectory", within })?
        .map_err(|status| ConnectError::Status { url: url.into(), status })?
        .into_inner())
}

/// The resources to follow for `wanted` (all in the directory when empty),
/// with the network maps the cost maps depend on added, network maps first.
pub fn resources_for(dir: &pb::Directory, wanted: &[ResourceId]) -> Vec<ResourceId> {
    let mut out: Vec<ResourceId> = Vec::new();
    let mut add = |id: &str| {
        if let Ok(r) = ResourceId::new(id)
            && !out.contains(&r)
        {
            out.push(r);
        }
    };
    for r in &dir.resources {
        let selected = wanted.is_empty() || wanted.iter().any(|w| w.as_str() == r.resource_id);
        if selected {
            for u in &r.uses {
                add(u);
            }
            add(&r.resource_id);
        }
    }
    for w in wanted {
        add(w.as_str());
    }
    let is_nm = |id: &ResourceId| {
        dir.resources.iter().any(|r| r.resource_id == id.as_str() && r.kind == pb::ResourceKind::NetworkMap as i32)
    };
    out.sort_by_key(|id| !is_nm(id));
    out
}

/// Splits `resources` into the `Subscribe` requests of one session: at most
/// `per_stream` resources each, except that a network map and the cost maps
/// the directory says use it always share a stream (a cost map re-bound to a
/// new network map must not arrive before it on another stream). Network
/// maps come first within each stream, as in [`resources_for`].
pub fn stream_groups(dir: Option<&pb::Directory>, resources: &[ResourceId], per_stream: usize) -> Vec<Vec<ResourceId>> {
    // Each resource's group: the network map it uses, or itself.
    let key = |r: &ResourceId| -> String {
        dir.and_then(|d| d.resources.iter().find(|x| x.resource_id == r.as_str()))
            .and_then(|x| x.uses.first().cloned())
            .filter(|u| resources.iter().any(|r| r.as_str() == u))
            .unwrap_or_else(|| r.to_string())
    };
    let mut groups: Vec<(String, Vec<ResourceId>)> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for r in resources {
        let k = key(r);
        let i = *at.entry(k.clone()).or_insert_with(|| {
            groups.push((k, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(r.clone());
    }
    let mut streams: Vec<Vec<ResourceId>> = Vec::new();
    for (_, g) in groups {
        match streams.last_mut() {
            Some(s) if s.len() + g.len() <= per_stream.max(1) => s.extend(g),
            _ => streams.push(g),
        }
    }
    let uses_another = |r: &ResourceId| {
        dir.is_some_and(|d| d.resources.iter().any(|x| x.resource_id == r.as_str() && !x.uses.is_empty()))
    };
    for s in &mut streams {
        s.sort_by_key(|r| uses_another(r));
    }
    streams
}

/// One update pulled with `Fetch`, verified and applied.
#[derive(Debug)]
pub struct Fetched {
    /// The decoded update.
    pub opened: Opened,
    /// What applying it did.
    pub applied: Applied,
    /// The signed envelope as received.
    pub signed: pb::SignedUpdate,
    /// Its snapshot chunks.
    pub chunks: Vec<pb::SnapshotChunk>,
}

/// Pulls `resource` with `Fetch` and verifies each update into `verifier`;
/// updates the verifier already has are skipped (a heartbeat of the held
/// version is applied: it extends the expiry).
pub async fn fetch_into(
    client: &mut DistributionClient,
    url: &str,
    resource: &ResourceId,
    verifier: &mut Verifier,
    now_ms: i64,
) -> Result<Vec<Fetched>, ConnectError> {
    let call = client.fetch(pb::FetchRequest { resource_id: resource.to_string() });
    let resp = tokio::time::timeout(FETCH_TIMEOUT, call)
        .await
        .map_err(|_| ConnectError::Timeout { url: url.into(), call: "Fetch", within: FETCH_TIMEOUT })?
        .map_err(|status| ConnectError::Status { url: url.into(), status })?
        .into_inner();
    let mut fetched = Vec::new();
    let mut chunks = resp.chunks;
    // A cached snapshot (or diff) older than its expiry is authentic but not
    // fresh: the verifier keeps it pending and the heartbeat that ends the
    // answer commits it. Only an answer that ends pending is an error.
    let mut waiting = None;
    for (i, signed) in resp.updates.into_iter().enumerate() {
        let opened = verifier.open(&signed).map_err(|error| ConnectError::Verify { url: url.into(), error })?;
        // An answer about another resource, even one this verifier follows,
        // is not what was asked for (PROTOCOL.md §10.5).
        if opened.update.resource_id != resource.as_str() {
            let error = VerifyError::UnexpectedResource(opened.update.resource_id.clone());
            return Err(ConnectError::Verify { url: url.into(), error });
        }
        let held = verifier.get(resource.as_str()).map_or(0, |h| h.seq);
        if opened.seq() <= held && !opened.is_heartbeat() {
            continue;
        }
        // The chunks belong to the first update (the snapshot).
        let chunks = if i == 0 { std::mem::take(&mut chunks) } else { Vec::new() };
        let applied = verifier
            .apply(&opened, &chunks, now_ms)
            .map_err(|error| ConnectError::Verify { url: url.into(), error })?;
        waiting = applied.waiting.clone();
        fetched.push(Fetched { opened, applied, signed, chunks });
    }
    match waiting {
        Some(waiting) => Err(ConnectError::NotExposable { url: url.into(), resource: resource.clone(), waiting }),
        None => Ok(fetched),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(entries: &[(&str, Option<&str>)]) -> pb::Directory {
        pb::Directory {
            resources: entries
                .iter()
                .map(|(id, uses)| pb::DirectoryResource {
                    resource_id: (*id).into(),
                    kind: if uses.is_some() { pb::ResourceKind::CostMap } else { pb::ResourceKind::NetworkMap } as i32,
                    uses: uses.iter().map(|u| (*u).to_owned()).collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn ids(v: &[&str]) -> Vec<ResourceId> {
        v.iter().map(|s| ResourceId::new(s).expect("id")).collect()
    }

    #[test]
    fn streams_keep_each_network_map_with_its_cost_maps_and_stay_under_the_limit() {
        let d = dir(&[("a", None), ("b", None), ("a1", Some("a")), ("b1", Some("b")), ("a2", Some("a")), ("x", None)]);
        let all = resources_for(&d, &[]);
        let s = stream_groups(Some(&d), &all, 3);
        assert_eq!(s, vec![ids(&["a", "a1", "a2"]), ids(&["b", "x", "b1"])]);
        // A group bigger than the limit is never split.
        assert_eq!(stream_groups(Some(&d), &all, 2), vec![ids(&["a", "a1", "a2"]), ids(&["b", "b1"]), ids(&["x"])]);
        // Everything fits: one stream, network maps first.
        assert_eq!(stream_groups(Some(&d), &all, 256), vec![ids(&["a", "b", "x", "a1", "a2", "b1"])]);
        // Without a directory nothing is known about dependencies: plain chunks.
        assert_eq!(stream_groups(None, &ids(&["p", "q", "r"]), 2), vec![ids(&["p", "q"]), ids(&["r"])]);
        // A cost map whose network map is not followed is a group of its own.
        assert_eq!(stream_groups(Some(&d), &ids(&["a1", "b1"]), 1), vec![ids(&["a1"]), ids(&["b1"])]);
    }
}
