//! A real DNS server for tests: hickory-server with an in-memory root zone of
//! NAPTR records, on a loopback port picked by the OS (UDP and TCP on the
//! same port), started by each test and stopped at its end.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use altocast_client::discover::Discoverer;
use hickory_server::{
    Server,
    proto::rr::{
        LowerName, Name, RData, Record,
        rdata::{NAPTR, SOA},
    },
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{AxfrPolicy, Catalog, ZoneType},
};
use tokio::net::{TcpListener, UdpSocket};

/// The TTL of every record served.
pub const TTL: u32 = 300;

/// One NAPTR record of the test zone.
#[derive(Debug, Clone)]
pub struct Naptr {
    /// Owner name (fully qualified).
    pub name: String,
    /// Order.
    pub order: u16,
    /// Preference.
    pub preference: u16,
    /// Flags.
    pub flags: &'static str,
    /// Service.
    pub service: &'static str,
    /// Regexp.
    pub regexp: String,
}

/// A well-formed `ALTO:https` record at `name` pointing to `uri`.
pub fn alto(name: &str, uri: &str) -> Naptr {
    Naptr {
        name: name.into(),
        order: 10,
        preference: 10,
        flags: "U",
        service: "ALTO:https",
        regexp: format!("!^.*$!{uri}!"),
    }
}

/// An authoritative DNS server on loopback serving one root zone.
pub struct TestDns {
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    server: Server<Catalog>,
}

impl TestDns {
    /// Serves `records` (and the root SOA).
    pub async fn start(records: Vec<Naptr>) -> TestDns {
        let mut zone: InMemoryZoneHandler =
            InMemoryZoneHandler::empty(Name::root(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_ascii("ns.test.").expect("name"),
            Name::from_ascii("hostmaster.test.").expect("name"),
            1,
            3600,
            600,
            86400,
            // The negative TTL (RFC 2308): how long "no record" may be cached.
            3600,
        );
        assert!(zone.upsert_mut(Record::from_rdata(Name::root(), 3600, RData::SOA(soa)), 1));
        for r in records {
            let naptr = NAPTR::new(
                r.order,
                r.preference,
                r.flags.as_bytes().into(),
                r.service.as_bytes().into(),
                r.regexp.as_bytes().into(),
                Name::root(),
            );
            let name = Name::from_ascii(&r.name).expect("record name");
            assert!(zone.upsert_mut(Record::from_rdata(name, TTL, RData::NAPTR(naptr)), 1), "{}", r.name);
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::from(Name::root()), vec![Arc::new(zone)]);
        let mut server = Server::new(catalog);
        // The resolver asks UDP and TCP on one port: take a free UDP port and
        // bind TCP on it too, trying again if TCP's is taken.
        for _ in 0..50 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
            let addr = udp.local_addr().expect("UDP address");
            if let Ok(tcp) = TcpListener::bind(addr).await {
                server.register_socket(udp);
                server.register_listener(tcp, Duration::from_secs(5), 32);
                return TestDns { addr, server };
            }
        }
        panic!("no loopback port free for both UDP and TCP");
    }

    /// A discoverer asking only this server.
    pub fn discoverer(&self) -> Discoverer {
        Discoverer::new(Some(self.addr)).expect("discoverer")
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        self.server.shutdown_gracefully().await.expect("DNS server stops");
    }
}
