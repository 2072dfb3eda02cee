//! # altocast-client
//!
//! How applications consume altocast: a [`Subscription`] connects to an ordered
//! list of endpoints (RProxies, then the origin), verifies every update
//! end to end (DESIGN §5), resumes after reconnects, fails over on errors,
//! staleness and verification failures, and falls back to pull. Verified state
//! lands in a [`View`]: a consistent, cheaply readable snapshot in which a cost
//! map always comes with the exact network map version it was computed against.
//! [`rank`] orders candidate peers by network cost (the tracker use of ALTO).
//! [`discover`] finds, through DNS, the ALTO server responsible for an address
//! or a domain (RFC 8686, RFC 7286); DNS only says where to look, never what to trust.
//! [`Domains`] puts both together for trackers: verified subscriptions to the
//! ALTO servers of many domains, found per peer address, ranking candidates
//! for a requester against its own domain's maps; [`tracker`] serves it as
//! `POST /rank` (`altocast tracker`).
//!
//! The crate also holds the `altocast` command-line tool ([`cli`]).

pub mod cli;
pub mod connect;
pub mod discover;
pub mod domains;
pub mod frames;
pub mod rank;
pub mod state;
pub mod subscription;
pub mod tracker;
pub mod view;

pub use domains::{Domains, DomainsConfig};
pub use rank::{Ranked, rank};
pub use subscription::{Config, Event, Subscription};
pub use view::{CostMapVersion, DirectoryInfo, Freshness, NetworkMapVersion, View, ViewState};

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
