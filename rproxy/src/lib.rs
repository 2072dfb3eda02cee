//! # altocast-rproxy
//!
//! The redistribution proxy. Its core is the [`hub`]: the fan-out engine that
//! caches signed updates per resource and streams them to many bounded
//! subscribers; the origin (`altocast-server`) serves through the same hub.
//! [`service`] exposes the hub as the gRPC `Distribution` service, and
//! [`upstream`] feeds it from verified upstream subscriptions (the origin or
//! another RProxy) with failover. Nothing here is trusted: every update is
//! verified before it is cached or forwarded.

pub mod hub;
pub mod metrics;
