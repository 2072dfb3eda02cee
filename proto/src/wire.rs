//! The messages on the wire (PROTOCOL.md §6–§7, §10): the signed `Update`
//! envelope and how an origin builds and signs it (§6.1–§6.3, [`update`]),
//! the network-map and cost-map state and diff messages (§6.4–§6.7, decoded
//! with validation into the [`crate::model`]), chunked snapshots (§7,
//! `chunk`), and the gRPC service's frames (§10.4, [`frame`]) and codec
//! (§10.1, [`codec`]).
//!
//! What a verifier does with an update is §8 ([`crate::verify`]).

pub(crate) mod chunk;
pub mod codec;
pub mod frame;
mod maps;
pub mod update;

pub use maps::cost_map_from_pb;
