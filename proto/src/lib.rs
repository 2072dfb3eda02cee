//! # altocast-proto
//!
//! The contract every altocast node speaks, with no sockets and no clocks:
//! the generated gRPC types ([`pb`]), the ALTO model ([`NetworkMap`],
//! [`CostMap`]) with RFC 7285 JSON in and out ([`model::json`]), diffs and
//! incremental content tags ([`Tag`]), signed updates ([`wire::update::sign`]) and the
//! [`Verifier`] that checks them (DESIGN §3–§5), and the [`conformance`]
//! vectors (`proto/vectors/`) a second implementation is checked against.
//!
//! It is not a server or a client: those live in `altocast-rproxy`,
//! `altocast-server` and `altocast-client`, which build on this crate.
//!
//! # Layout
//!
//! The modules follow the parts of the normative document,
//! `docs/PROTOCOL.md`:
//!
//! | PROTOCOL.md | module |
//! |---|---|
//! | §2 the ALTO model | [`model`] |
//! | §3 canonical hashing, content tags | `tag` ([`Tag`]) |
//! | §4 keys, §5 signatures | [`keys`] |
//! | §6 update messages, §7 chunked snapshots | [`wire`] |
//! | §8 the verifier | [`verify`] |
//! | §9 the directory and the key chain | [`verify::directory`], [`verify::trust`] |
//! | §10 the gRPC service | [`pb`], [`wire::frame`], [`wire::codec`] |
//! | Appendix C conformance vectors | [`conformance`] |

pub mod conformance;
pub mod keys;
pub mod model;
mod tag;
pub mod verify;
pub mod wire;

/// Generated protobuf and gRPC code for `altocast.v1`.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod pb {
    tonic::include_proto!("altocast.v1");

    pub use crate::wire::frame::SubscribeResponse;

    /// Nested types of [`SubscribeResponse`].
    pub mod subscribe_response {
        pub use crate::wire::frame::Item;
    }

    /// Encoded descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("altocast_descriptor");
}

/// Resources every server accepts in one `Subscribe` (PROTOCOL.md §10.4): a
/// client following more opens several streams of at most this many, each
/// network map on the same stream as the cost maps that depend on it.
pub const SUBSCRIBE_RESOURCES: usize = 256;

pub use keys::{KeyId, OriginKey, PublicKey, TrustedKeys};
pub use model::cost_map::{CostMap, CostMapBuilder, CostMapDiff, CostMode, CostRowDiff, CostType, VersionTag};
pub use model::error::ModelError;
pub use model::network_map::{NetworkMap, NetworkMapDiff, PidPrefixes};
pub use model::pid::{NameError, Pid, ResourceId};
pub use tag::Tag;
pub use verify::{Applied, Check, Freshness, Held, Limits, UpdateKind, Verifier, VerifyError, Waiting};
pub use wire::cost_map_from_pb;
pub use wire::update::{Header, Kind, MapDiff, MapState, Payload, Signed};
