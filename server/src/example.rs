//! The built-in example published when the origin starts with no maps, so a
//! newcomer sees something at once: the RFC 7285 §11.2.1.7 network map and
//! §11.2.3.7 cost map.

/// Resource id of the example network map.
pub const NETWORK_MAP_ID: &str = "default-network-map";
/// Resource id of the example cost map.
pub const COST_MAP_ID: &str = "default-cost-map";

/// RFC 7285 §11.2.1.7 network map.
pub const NETWORK_MAP: &str = r#"{"meta":{"vtag":{"resource-id":"default-network-map","tag":"da65eca2eb7a10ce8b059740b0b2e3f8eb1d4785"}},
"network-map":{"PID1":{"ipv4":["192.0.2.0/24","198.51.100.0/25"]},"PID2":{"ipv4":["198.51.100.128/25"]},
"PID3":{"ipv4":["0.0.0.0/0"],"ipv6":["::/0"]}}}"#;

/// RFC 7285 §11.2.3.7 cost map, bound to the network map above.
pub const COST_MAP: &str = r#"{"meta":{"dependent-vtags":[{"resource-id":"default-network-map","tag":"da65eca2eb7a10ce8b059740b0b2e3f8eb1d4785"}],
"cost-type":{"cost-mode":"numerical","cost-metric":"routingcost"}},
"cost-map":{"PID1":{"PID1":1,"PID2":5,"PID3":10},"PID2":{"PID1":5,"PID2":1,"PID3":15},"PID3":{"PID1":20,"PID2":15}}}"#;
