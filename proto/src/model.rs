//! The ALTO model as carried (PROTOCOL.md §2), validated: names (§2.1,
//! [`crate::Pid`], [`crate::ResourceId`]), prefixes and network maps (§2.2–§2.3,
//! [`network_map`]), cost types, costs and cost maps (§2.4–§2.6,
//! [`cost_map`]), and why an input was refused ([`error`]). RFC 7285 JSON in
//! and out ([`json`]) is the form `Publish` carries (§10.8) and an RProxy
//! serves over HTTP (§10.9); its grammar is RFC 7285's, not this document's.
//!
//! The maps' content tags are §3 (`crate::tag`); their wire messages are
//! §6.4–§6.7 ([`crate::wire`]).

pub mod cost_map;
pub mod error;
pub mod json;
pub mod network_map;
pub(crate) mod pid;
