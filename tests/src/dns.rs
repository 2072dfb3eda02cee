//! A real DNS server for tests: hickory-server with an in-memory root zone of
//! NAPTR records, on a loopback port picked by the OS (UDP and TCP on the
//! same port), started by each test and stopped at its end; and
//! [`FlakyDns`], a UDP relay in front of it that answers SERVFAIL for chosen
//! names a chosen number of times and counts the queries it saw.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

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
    /// Replacement ("." for none).
    pub replacement: String,
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
        replacement: ".".into(),
    }
}

/// A non-terminal `ALTO:https` record at `name` sending the client on to `next`.
pub fn next(name: &str, next: &str) -> Naptr {
    Naptr { flags: "", regexp: String::new(), replacement: next.into(), ..alto(name, "") }
}

/// An authoritative DNS server on loopback serving one root zone.
pub struct TestDns {
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    server: Server<Catalog>,
}

impl TestDns {
    /// Serves `records` (and the root SOA), unsigned.
    pub async fn start(records: Vec<Naptr>) -> TestDns {
        Self::serve(records, None).await
    }

    /// Serves `records` in a root zone signed (DNSSEC, Ed25519, NSEC) with a
    /// key made for this server; also returns that key as a trust anchor
    /// file's text (one `. 3600 IN DNSKEY 257 3 15 …` line).
    pub async fn start_signed(records: Vec<Naptr>) -> (TestDns, String) {
        use hickory_server::proto::dnssec::{
            DnssecSigner, SigningKey as _, crypto::Ed25519SigningKey, rdata::DNSKEY, rdata::DNSSECRData,
        };
        let pkcs8 = Ed25519SigningKey::generate_pkcs8().expect("generate a zone key");
        let key = Ed25519SigningKey::from_pkcs8(&pkcs8).expect("zone key");
        let dnskey = DNSKEY::from_key(&key.to_public_key().expect("public key"));
        let anchor = Record::from_rdata(Name::root(), 3600, RData::DNSSEC(DNSSECRData::DNSKEY(dnskey.clone())));
        let signer = DnssecSigner::new(dnskey, Box::new(key), Name::root(), Duration::from_secs(86_400));
        (Self::serve(records, Some(signer)).await, format!("{anchor}\n"))
    }

    async fn serve(records: Vec<Naptr>, signer: Option<hickory_server::proto::dnssec::DnssecSigner>) -> TestDns {
        let proofs = signer.as_ref().map(|_| hickory_server::dnssec::NxProofKind::Nsec);
        let mut zone: InMemoryZoneHandler =
            InMemoryZoneHandler::empty(Name::root(), ZoneType::Primary, AxfrPolicy::Deny, proofs);
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
                Name::from_ascii(&r.replacement).expect("replacement name"),
            );
            let name = Name::from_ascii(&r.name).expect("record name");
            assert!(zone.upsert_mut(Record::from_rdata(name, TTL, RData::NAPTR(naptr)), 1), "{}", r.name);
        }
        if let Some(signer) = signer {
            zone.add_zone_signing_key_mut(signer).expect("add the zone key");
            zone.secure_zone_mut().expect("sign the zone");
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

/// A UDP relay to a [`TestDns`] that answers SERVFAIL for chosen names (the
/// first N queries for each) and counts every query by name.
pub struct FlakyDns {
    /// Where it listens (UDP only: keep answers small enough for one datagram).
    pub addr: SocketAddr,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FlakyDns {
    /// Relays to `upstream`; `fail` lists names (fully qualified, lower case)
    /// and how many of their first queries get SERVFAIL.
    pub async fn start(upstream: SocketAddr, fail: &[(&str, usize)]) -> FlakyDns {
        use hickory_server::proto::op::{Message, ResponseCode};
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP"));
        let addr = socket.local_addr().expect("UDP address");
        let mut left: HashMap<String, usize> = fail.iter().map(|(n, k)| ((*n).to_owned(), *k)).collect();
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counts = seen.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else { return };
                let Ok(query) = Message::from_vec(&buf[..len]) else { continue };
                let name = query.queries.first().map(|q| q.name().to_ascii().to_ascii_lowercase()).unwrap_or_default();
                *counts.lock().expect("counts").entry(name.clone()).or_default() += 1;
                if let Some(k) = left.get_mut(&name)
                    && *k > 0
                {
                    *k -= 1;
                    let mut reply =
                        Message::error_msg(query.metadata.id, query.metadata.op_code, ResponseCode::ServFail);
                    reply.add_queries(query.queries.clone());
                    let _ = socket.send_to(&reply.to_vec().expect("encode"), from).await;
                    continue;
                }
                let packet = buf[..len].to_vec();
                let socket = socket.clone();
                tokio::spawn(async move {
                    let relay = UdpSocket::bind("127.0.0.1:0").await.expect("bind relay");
                    relay.send_to(&packet, upstream).await.expect("relay query");
                    let mut answer = vec![0u8; 65535];
                    if let Ok(Ok((n, _))) =
                        tokio::time::timeout(Duration::from_secs(5), relay.recv_from(&mut answer)).await
                    {
                        let _ = socket.send_to(&answer[..n], from).await;
                    }
                });
            }
        });
        FlakyDns { addr, seen, task }
    }

    /// Queries seen for `name` (fully qualified, lower case).
    pub fn queries(&self, name: &str) -> usize {
        self.seen.lock().expect("counts").get(name).copied().unwrap_or(0)
    }
}

impl Drop for FlakyDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}
