//! Every metric the hub and the RProxy export, named and described in one list.
//! No label ever carries a client id or address.

/// Gauge: open subscriptions.
pub const SUBSCRIBERS: &str = "altocast_hub_subscribers";
/// Counter: updates accepted into the hub, by `kind` (snapshot/diff/heartbeat).
pub const UPDATES_IN: &str = "altocast_hub_updates_in_total";
/// Counter: updates delivered to subscribers (one per subscriber per update).
pub const UPDATES_OUT: &str = "altocast_updates_forwarded_total";
/// Counter: live updates a slow subscriber missed because its queue was dropped.
pub const LAGGED: &str = "altocast_hub_lagged_total";
/// Counter: resyncs of slow subscribers from the cache.
pub const RESYNCS: &str = "altocast_hub_resyncs_total";
/// Counter: subscriptions ended, by `reason` (stuck, closed, shutdown).
pub const DISCONNECTED: &str = "altocast_hub_disconnected_total";
/// Counter: diffs evicted while the snapshot still needed them.
pub const RING_OVERFLOW: &str = "altocast_hub_ring_overflow_total";
/// Counter: updates from upstream rejected by verification, by `check`.
pub const VERIFY_FAILURES: &str = "altocast_rproxy_verification_failures_total";
/// Gauge: 1 while connected to an upstream, 0 otherwise.
pub const UPSTREAM_CONNECTED: &str = "altocast_rproxy_upstream_connected";
/// Counter: upstream failovers, by `reason`.
pub const UPSTREAM_FAILOVERS: &str = "altocast_rproxy_upstream_failovers_total";
/// Histogram: seconds from origin issue time to arrival here.
pub const UPSTREAM_LAG: &str = "altocast_rproxy_upstream_lag_seconds";

/// Counter: requests and connections the RFC 7285 HTTP interface refused or
/// closed to hold a bound, by `reason`: `connections` (over
/// `--alto-max-connections`, closed at accept), `header_timeout`,
/// `idle_timeout`, `write_timeout` (connection closed), `body_timeout` (408),
/// `body_too_large` (413), `request_timeout` (408), `queries` (503, over
/// `--alto-max-queries`), `endpoints`, `pairs`, `stream_resources`,
/// `duplicate_resource` (400), `streams` (503, over `--alto-max-streams`).
pub const HTTP_REFUSED: &str = "altocast_http_refused_total";
/// Gauge: open connections to the RFC 7285 HTTP interface.
pub const HTTP_CONNECTIONS: &str = "altocast_http_connections";
/// Gauge: open RFC 8895 update streams.
pub const HTTP_STREAMS: &str = "altocast_http_update_streams";
/// Counter: map bodies and merge patches rendered to JSON, by `kind`
/// (full/patch); once per version, however many clients read it.
pub const HTTP_RENDERINGS: &str = "altocast_http_renderings_total";

/// Registers descriptions (idempotent).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(SUBSCRIBERS, "open subscriptions");
    describe_counter!(UPDATES_IN, "updates accepted into the hub");
    describe_counter!(UPDATES_OUT, "updates delivered to subscribers");
    describe_counter!(LAGGED, "live updates missed by slow subscribers (queue dropped)");
    describe_counter!(RESYNCS, "slow subscribers resynced from the cache");
    describe_counter!(DISCONNECTED, "subscriptions ended, by reason");
    describe_counter!(
        RING_OVERFLOW,
        "cached snapshots given up because the ring had to evict a diff they needed (newcomers get nothing until a fresher snapshot)"
    );
    describe_counter!(VERIFY_FAILURES, "upstream updates rejected by verification, by check");
    describe_gauge!(UPSTREAM_CONNECTED, "1 while an upstream stream is open");
    describe_counter!(UPSTREAM_FAILOVERS, "switches to another upstream, by reason");
    describe_histogram!(UPSTREAM_LAG, "seconds from origin issue time to arrival");
    describe_counter!(HTTP_REFUSED, "HTTP requests or connections refused or closed to hold a bound, by reason");
    describe_gauge!(HTTP_CONNECTIONS, "open connections to the RFC 7285 HTTP interface");
    describe_gauge!(HTTP_STREAMS, "open RFC 8895 update streams");
    describe_counter!(HTTP_RENDERINGS, "map bodies and merge patches rendered to JSON, by kind");
}
