//! Validation errors of the ALTO model. Every variant names the offending PID,
//! prefix or entry so that an operator can find it in the input.
//!
//! PROTOCOL.md §2 says what is valid; a verifier reports these errors as the
//! `apply` check of §8.4. [`MAX_MESSAGE_LEN`] is the error-message bound of
//! §11.

use crate::{NameError, Tag};

/// Longest error message sent to a peer (a gRPC `grpc-message`, an HTTP
/// problem detail). Errors may quote the input (serde quotes a whole string
/// value), and peers refuse oversized metadata, so the caller would never
/// see the real error.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// `msg` cut to [`MAX_MESSAGE_LEN`] bytes at a character boundary, saying how
/// much was cut.
pub fn bounded(msg: String) -> String {
    if msg.len() <= MAX_MESSAGE_LEN {
        return msg;
    }
    let mut end = MAX_MESSAGE_LEN;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &msg[..end], msg.len() - end)
}

/// Why a map, a diff or an RFC 7285 JSON body was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The JSON is not well-formed or a field has the wrong type.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// A JSON object names the same key twice (a PID, a destination, a
    /// member): refused rather than silently taking one of the values.
    #[error("{at}: key {key:?} appears more than once")]
    DuplicateKey {
        /// The object (e.g. `cost-map`, `cost-map."pid1"`).
        at: String,
        /// The repeated key.
        key: String,
    },
    /// A required member is missing (e.g. `network-map`, `cost-type`).
    #[error("missing field {0:?}")]
    MissingField(&'static str),
    /// A PID name (or resource id) breaks RFC 7285 §10.1; `at` says where it was.
    #[error("invalid PID name at {at}: {source}")]
    InvalidPid {
        /// Where the name appeared, e.g. `network-map` or `cost-map["PID1"]`.
        at: String,
        /// What is wrong with it.
        source: NameError,
    },
    /// A resource id breaks RFC 7285 §10.2.
    #[error("invalid resource id at {at}: {source}")]
    InvalidResourceId {
        /// Where the id appeared.
        at: String,
        /// What is wrong with it.
        source: NameError,
    },
    /// A prefix is not valid CIDR of its address family.
    #[error("PID {pid:?}: invalid {family} prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The PID listing the prefix.
        pid: String,
        /// `ipv4` or `ipv6`.
        family: &'static str,
        /// The prefix as written.
        prefix: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The same prefix is listed under two PIDs (RFC 7285 §11.2.1.6 forbids it).
    #[error("prefix {prefix} is in both PID {first:?} and PID {second:?}")]
    DuplicatePrefix {
        /// The prefix.
        prefix: String,
        /// The first PID (in PID order) listing it.
        first: String,
        /// The other PID listing it.
        second: String,
    },
    /// A cost is NaN or infinite.
    #[error("cost-map[{src:?}][{dst:?}]: cost {value} is not a finite number")]
    NonFiniteCost {
        /// Source PID.
        src: String,
        /// Destination PID.
        dst: String,
        /// The value.
        value: f64,
    },
    /// An ordinal cost is not a non-negative integer.
    #[error("cost-map[{src:?}][{dst:?}]: ordinal cost {value} is not a non-negative integer")]
    BadOrdinalCost {
        /// Source PID.
        src: String,
        /// Destination PID.
        dst: String,
        /// The value.
        value: f64,
    },
    /// The cost mode is not `numerical` or `ordinal`.
    #[error("cost-type.cost-mode {0:?} is not \"numerical\" or \"ordinal\"")]
    BadCostMode(String),
    /// The cost metric is empty or too long.
    #[error("cost-type.cost-metric {0:?} is invalid")]
    BadCostMetric(String),
    /// A cost map names a PID its network map does not have.
    #[error("cost-map {role} PID {pid:?} is not in network map {network_map:?}")]
    UnknownPid {
        /// `source` or `destination`.
        role: &'static str,
        /// The PID.
        pid: String,
        /// The network map resource id.
        network_map: String,
    },
    /// The cost map's `dependent-vtags` does not name the network map version.
    #[error("meta.dependent-vtags: expected {expected_id:?} tag {expected}, got {got_id:?} tag {got}")]
    DependentVtagMismatch {
        /// The network map resource id expected.
        expected_id: String,
        /// Its current tag(s), comma separated.
        expected: String,
        /// The resource id named.
        got_id: String,
        /// The tag named.
        got: String,
    },
    /// A tag is not 32 bytes / 64 hex characters.
    #[error("{at}: tag {tag:?} is not 64 hex characters")]
    BadTag {
        /// Where the tag appeared.
        at: String,
        /// The tag as written.
        tag: String,
    },
    /// More PIDs than this build accepts in one map.
    #[error("{what} has {count} PIDs; the limit is {limit}")]
    TooManyPids {
        /// `network map` or `cost map`.
        what: &'static str,
        /// PIDs found.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A diff or snapshot refers to a PID index outside the map's PID list.
    #[error("{at}: PID index {index} out of range (map has {len} PIDs)")]
    IndexOutOfRange {
        /// Where.
        at: String,
        /// The index.
        index: u32,
        /// The PID count.
        len: usize,
    },
    /// Indices that must be strictly ascending are not.
    #[error("{at}: PID indices are not strictly ascending")]
    NotAscending {
        /// Where.
        at: String,
    },
    /// Parallel arrays (destination, cost) have different lengths.
    #[error("{at}: {a} destinations but {b} costs")]
    LengthMismatch {
        /// Where.
        at: String,
        /// Destinations.
        a: usize,
        /// Costs.
        b: usize,
    },
    /// A diff does not fit the state it is applied to.
    #[error("diff does not apply: {0}")]
    DiffMismatch(String),
    /// The computed tag is not the expected one.
    #[error("tag mismatch: expected {expected}, computed {computed}")]
    TagMismatch {
        /// The tag expected.
        expected: Tag,
        /// The tag computed.
        computed: Tag,
    },
}
