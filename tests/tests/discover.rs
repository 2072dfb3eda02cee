//! ALTO server discovery (RFC 8686 by address, RFC 7286 by domain) against a
//! real DNS server: hickory-server with an in-memory zone of NAPTR records,
//! on a loopback port picked by the OS (UDP and TCP), started by each test and
//! stopped at its end. Covers each truncation step, first answer wins with
//! every URI of the answering name, U-NAPTR service parameters, filtering and
//! ordering, non-terminal records, refusals, temporary failures asked again
//! after the walk, special-purpose addresses, timeouts, `altocast discover`
//! run as a process, and the tracker's walk (fallback to the next URI, the
//! retry, skipped private addresses) against the two-ISP scenario.

use std::{
    net::IpAddr,
    process::Command,
    time::{Duration, Instant},
};

use altocast_client::{
    Domains,
    discover::{
        Attempt, Candidate, DiscoverError, Discoverer, Discovery, DiscoveryConfig, MAX_RECORDS, Outcome, RecordError,
        Service, SpecialAddress,
    },
};
use altocast_tests::{
    dns::{FlakyDns, Naptr, TTL, TestDns, alto, next},
    tracker::Scenario,
};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const IRD: &str = "https://alto.example/ird";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP address")
}

const V4: &str = "198.51.100.7";
const V4_NAMES: [&str; 4] =
    ["7.100.51.198.in-addr.arpa.", "100.51.198.in-addr.arpa.", "51.198.in-addr.arpa.", "198.in-addr.arpa."];
const V6: &str = "2001:db8:1:2:3:4:5:6";
const V6_NAMES: [&str; 6] = [
    "6.0.0.0.5.0.0.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
    "2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
    "0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
    "1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
    "0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
    "8.b.d.0.1.0.0.2.ip6.arpa.",
];

fn asked(d: &Discovery) -> Vec<&str> {
    d.tried.iter().map(|a| a.name.as_str()).collect()
}

/// A record only at `names[step]`: found there, after `step` names with none.
async fn found_only_at(addr: &str, names: &[&str], step: usize) {
    let dns = TestDns::start(vec![alto(names[step], IRD)]).await;
    let d = dns.discoverer().by_address(ip(addr)).await.expect("discovered");
    assert_eq!(d.uri, IRD);
    assert_eq!(d.found_at, names[step]);
    assert_eq!(asked(&d), names[..=step]);
    assert!(d.tried[..step].iter().all(|a| a.outcome == Outcome::NoRecord), "{:?}", d.tried);
    assert_eq!(
        d.tried[step].outcome,
        Outcome::Found { uris: vec![Candidate { uri: IRD.into(), order: 10, preference: 10, via: vec![] }] }
    );
    assert_eq!(d.ttl, Duration::from_secs(u64::from(TTL)));
    dns.stop().await;
}

#[tokio::test]
async fn ipv4_record_at_32() {
    found_only_at(V4, &V4_NAMES, 0).await;
}

#[tokio::test]
async fn ipv4_record_only_at_24() {
    found_only_at(V4, &V4_NAMES, 1).await;
}

#[tokio::test]
async fn ipv4_record_only_at_16() {
    found_only_at(V4, &V4_NAMES, 2).await;
}

#[tokio::test]
async fn ipv4_record_only_at_8() {
    found_only_at(V4, &V4_NAMES, 3).await;
}

#[tokio::test]
async fn ipv6_record_at_128() {
    found_only_at(V6, &V6_NAMES, 0).await;
}

#[tokio::test]
async fn ipv6_record_only_at_64() {
    found_only_at(V6, &V6_NAMES, 1).await;
}

#[tokio::test]
async fn ipv6_record_only_at_56() {
    found_only_at(V6, &V6_NAMES, 2).await;
}

#[tokio::test]
async fn ipv6_record_only_at_48() {
    found_only_at(V6, &V6_NAMES, 3).await;
}

#[tokio::test]
async fn ipv6_record_only_at_40() {
    found_only_at(V6, &V6_NAMES, 4).await;
}

#[tokio::test]
async fn ipv6_record_only_at_32() {
    found_only_at(V6, &V6_NAMES, 5).await;
}

#[tokio::test]
async fn ipv4_mapped_ipv6_asks_the_ipv4_tree() {
    let dns = TestDns::start(vec![alto(V4_NAMES[1], IRD)]).await;
    let d = dns.discoverer().by_address(ip("::ffff:198.51.100.7")).await.unwrap();
    assert_eq!(d.found_at, V4_NAMES[1]);
    dns.stop().await;
}

#[tokio::test]
async fn first_answer_wins_longest_prefix_first() {
    let dns = TestDns::start(vec![
        alto(V4_NAMES[0], "https://host.example/ird"),
        alto(V4_NAMES[1], "https://subnet.example/ird"),
        alto(V4_NAMES[3], "https://isp.example/ird"),
    ])
    .await;
    let d = dns.discoverer().by_address(ip(V4)).await.unwrap();
    assert_eq!(d.uri, "https://host.example/ird");
    assert_eq!(asked(&d), [V4_NAMES[0]], "nothing shorter is asked");
    // Another host of the same /24 gets the /24's server.
    let d = dns.discoverer().by_address(ip("198.51.100.8")).await.unwrap();
    assert_eq!(d.uri, "https://subnet.example/ird");
    assert_eq!(d.found_at, V4_NAMES[1]);
    dns.stop().await;
}

#[tokio::test]
async fn no_record_anywhere_names_every_name_tried() {
    let dns = TestDns::start(vec![alto("7.100.51.199.in-addr.arpa.", IRD)]).await;
    let e = dns.discoverer().by_address(ip(V4)).await.unwrap_err();
    let DiscoverError::NotFound { tried } = &e else { panic!("{e}") };
    assert_eq!(tried.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), V4_NAMES);
    assert!(tried.iter().all(|a| a.outcome == Outcome::NoRecord), "{tried:?}");
    let msg = e.to_string();
    assert!(msg.starts_with("no ALTO server found"), "{msg}");
    for n in V4_NAMES {
        assert!(msg.contains(&format!("{n}: no record")), "{msg}");
    }
    dns.stop().await;
}

#[tokio::test]
async fn records_of_another_service_or_flags_are_ignored() {
    let other = |service, flags| Naptr { service, flags, ..alto(V4_NAMES[0], "https://wrong.example/ird") };
    let dns = TestDns::start(vec![
        other("ALTO:http", "U"),
        other("ALTO:https", "S"),
        other("SIP+D2U", "U"),
        other("ALTOX:https", "U"),
        alto(V4_NAMES[1], IRD),
    ])
    .await;
    let d = dns.discoverer().by_address(ip(V4)).await.unwrap();
    assert_eq!(d.uri, IRD);
    assert_eq!(d.tried[0].outcome, Outcome::NoAltoRecord { ignored: 4 });
    assert_eq!(d.found_at, V4_NAMES[1]);
    dns.stop().await;
}

#[tokio::test]
async fn records_are_taken_by_order_then_preference() {
    let at = |order, preference, uri: &str| Naptr { order, preference, ..alto(V4_NAMES[0], uri) };
    let dns = TestDns::start(vec![
        at(20, 1, "https://order20.example/ird"),
        at(10, 50, "https://pref50.example/ird"),
        at(10, 5, "https://pref5.example/ird"),
        Naptr { regexp: "!^.*$!http://plain.example/ird!".into(), ..at(1, 1, "") },
        alto(V4_NAMES[1], "https://shorter.example/ird"),
    ])
    .await;
    let d = dns.discoverer().by_address(ip(V4)).await.unwrap();
    assert_eq!(d.uri, "https://pref5.example/ird");
    // RFC 8686 §3.1: the URIs with their order and preference, in the order
    // to try them. The order-1 record yields no usable URI, so it is no match
    // and order 10 answers; RFC 3403 §4.1: once order 10 matched, the
    // order-20 record is not considered.
    let got: Vec<(&str, u16, u16)> = d.uris.iter().map(|c| (c.uri.as_str(), c.order, c.preference)).collect();
    assert_eq!(got, [("https://pref5.example/ird", 10, 5), ("https://pref50.example/ird", 10, 50)]);
    assert_eq!(asked(&d), [V4_NAMES[0]], "nothing shorter is asked");
    dns.stop().await;
}

#[tokio::test]
async fn a_higher_order_is_not_considered_once_a_lower_one_matched() {
    // RFC 3403 §4.1: "once a match is found the client MUST NOT consider
    // records with a different Order". The /32's order-10 record is a
    // non-terminal one whose next name has nothing: the /32 has no usable
    // answer, and its order-20 record is not tried; the /24 answers.
    let dns = TestDns::start(vec![
        next(V4_NAMES[0], "empty.isp.example."),
        Naptr { order: 20, ..alto(V4_NAMES[0], "https://order20.example/ird") },
        alto(V4_NAMES[1], IRD),
    ])
    .await;
    let d = dns.discoverer().by_address(ip(V4)).await.unwrap();
    assert_eq!((d.uri.as_str(), d.found_at.as_str()), (IRD, V4_NAMES[1]));
    let Outcome::Refused { reason: RecordError::Next { name, .. } } = &d.tried[0].outcome else {
        panic!("{:?}", d.tried)
    };
    assert_eq!(name, "empty.isp.example.");
    dns.stop().await;
}

#[tokio::test]
async fn a_non_terminal_record_must_name_the_protocol_too() {
    // RFC 3958 §2.2.2: a match is a SERVICE field "that includes the tags for
    // the desired application service and a supported application protocol";
    // a non-terminal "ALTO" record without "https" is ignored.
    let dns = TestDns::start(vec![
        Naptr { service: "ALTO", ..next(V4_NAMES[0], "alto.isp.example.") },
        alto("alto.isp.example.", "https://via.example/ird"),
        Naptr { service: "alto:HTTPS", ..next(V4_NAMES[1], "servers.isp.example.") },
        alto("servers.isp.example.", IRD),
    ])
    .await;
    let d = dns.discoverer().by_address(ip(V4)).await.unwrap();
    assert_eq!(d.tried[0].outcome, Outcome::NoAltoRecord { ignored: 1 });
    assert_eq!((d.uri.as_str(), d.found_at.as_str()), (IRD, V4_NAMES[1]));
    assert_eq!(d.uris[0].via, ["servers.isp.example."]);
    dns.stop().await;
}

#[tokio::test]
async fn a_malformed_regexp_is_refused_naming_the_name() {
    // RFC 8686 §3.5: an unusable record means "ask the next name".
    let dns = TestDns::start(vec![
        Naptr { regexp: r"!^(.*)$!https://alto.example/\1!".into(), ..alto(V4_NAMES[0], IRD) },
        alto(V4_NAMES[1], "https://shorter.example/ird"),
    ])
    .await;
    let d = dns.discoverer().by_address(ip(V4)).await.unwrap();
    assert_eq!((d.uri.as_str(), d.found_at.as_str()), ("https://shorter.example/ird", V4_NAMES[1]));
    assert!(matches!(&d.tried[0].outcome, Outcome::Refused { reason: RecordError::Regexp { .. } }), "{:?}", d.tried);
    dns.stop().await;

    // With nothing usable anywhere, the first refusal is the error.
    let dns =
        TestDns::start(vec![Naptr { regexp: r"!^(.*)$!https://alto.example/\1!".into(), ..alto(V4_NAMES[0], IRD) }])
            .await;
    let e = dns.discoverer().by_address(ip(V4)).await.unwrap_err();
    let DiscoverError::Refused { name, reason: RecordError::Regexp { reason, .. }, tried } = &e else { panic!("{e}") };
    assert_eq!(name, V4_NAMES[0]);
    assert!(reason.contains("back-references"), "{reason}");
    assert_eq!(tried.len(), 4, "every name is still asked");
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{}: ALTO record refused: regexp", V4_NAMES[0])), "{msg}");
    dns.stop().await;
}

#[tokio::test]
async fn a_uri_other_than_https_is_refused() {
    let dns = TestDns::start(vec![alto(V4_NAMES[0], "http://alto.example/ird")]).await;
    let e = dns.discoverer().by_address(ip(V4)).await.unwrap_err();
    assert!(matches!(&e, DiscoverError::Refused { reason: RecordError::Uri { .. }, .. }), "{e}");
    assert!(e.to_string().contains("not https"), "{e}");
    dns.stop().await;
}

#[tokio::test]
async fn service_parameters_are_compared_case_insensitively_and_alto_http_is_asked_for_on_request() {
    let dns = TestDns::start(vec![
        Naptr { service: "alto:HTTPS", flags: "u", ..alto(V4_NAMES[0], IRD) },
        Naptr { service: "ALTO:http", ..alto(V4_NAMES[0], "http://plain.example/ird") },
        Naptr { service: "ALTO:ftp", ..alto(V4_NAMES[0], "ftp://other.example/ird") },
    ])
    .await;
    // The default, ALTO:https: the lower-case record counts, the others are ignored.
    let d = dns.discoverer().by_address(ip(V4)).await.unwrap();
    assert_eq!(d.uris.iter().map(|c| c.uri.as_str()).collect::<Vec<_>>(), [IRD]);
    // ALTO:http asks for the http record only.
    let d = dns.discoverer().service(Service::alto_http()).by_address(ip(V4)).await.unwrap();
    assert_eq!(d.uris.iter().map(|c| c.uri.as_str()).collect::<Vec<_>>(), ["http://plain.example/ird"]);
    dns.stop().await;

    // Only ALTO:https records: nothing for ALTO:http.
    let dns = TestDns::start(vec![alto(V4_NAMES[0], IRD)]).await;
    let e = dns.discoverer().service(Service::alto_http()).by_address(ip(V4)).await.unwrap_err();
    assert!(matches!(&e.tried()[0].outcome, Outcome::NoAltoRecord { ignored: 1 }), "{e}");
    dns.stop().await;
}

/// RFC 8686 §3.1: the procedure "MUST support being called with any valid
/// U-NAPTR Service Parameter": another application's records in the same
/// reverse tree are found by asking for its service, and ALTO's are not.
#[tokio::test]
async fn any_u_naptr_service_parameter_can_be_asked_for() {
    let dns = TestDns::start(vec![
        alto(V4_NAMES[0], IRD),
        Naptr { service: "X-PEERS:xmpp", ..alto(V4_NAMES[0], "xmpp:tracker@isp.example") },
        Naptr { service: "X-PEERS:xmpp", ..alto(V4_NAMES[1], "tracker.isp.example") },
    ])
    .await;
    let service: Service = "x-peers:XMPP".parse().expect("a valid service parameter");
    assert_eq!(service.to_string(), "x-peers:xmpp");
    let d = dns.discoverer().service(service.clone()).by_address(ip(V4)).await.unwrap();
    assert_eq!(d.uris.iter().map(|c| c.uri.as_str()).collect::<Vec<_>>(), ["xmpp:tracker@isp.example"]);
    // A record of that service whose regexp yields no absolute URI is refused.
    let e = dns.discoverer().service(service).by_address(ip("198.51.100.9")).await.unwrap_err();
    assert!(e.to_string().contains("not an absolute URI"), "{e}");
    // Not a service parameter of RFC 3958's grammar.
    for bad in ["ALTO", "ALTO:", ":https", "1ALTO:https", "ALTO:ht tp", &format!("ALTO:{}", "p".repeat(33))] {
        assert!(bad.parse::<Service>().is_err(), "{bad:?} was taken");
    }
    dns.stop().await;
}

#[tokio::test]
async fn non_terminal_records_are_followed_to_the_uri() {
    let dns = TestDns::start(vec![
        next(V4_NAMES[0], "alto.isp.example."),
        next("alto.isp.example.", "servers.isp.example."),
        alto("servers.isp.example.", IRD),
        alto("servers.isp.example.", "https://backup.example/ird"),
    ])
    .await;
    let d = dns.discoverer().by_address(ip(V4)).await.unwrap();
    assert_eq!((d.uri.as_str(), d.found_at.as_str()), (IRD, V4_NAMES[0]));
    assert_eq!(d.uris.len(), 2);
    assert_eq!(d.uris[0].via, ["alto.isp.example.", "servers.isp.example."]);
    assert_eq!(asked(&d), [V4_NAMES[0]]);
    dns.stop().await;
}

#[tokio::test]
async fn a_non_terminal_chain_past_the_bound_or_looping_is_refused() {
    // /32 -> c1 -> c2 -> c3 -> c4 -> c5 (five records followed) -> the URI.
    let mut records = vec![next(V4_NAMES[0], "c1.example.")];
    for i in 1..5 {
        records.push(next(&format!("c{i}.example."), &format!("c{}.example.", i + 1)));
    }
    records.push(alto("c5.example.", IRD));
    // The /24 loops: x -> y -> x.
    records.push(next(V4_NAMES[1], "x.example."));
    records.push(next("x.example.", "y.example."));
    records.push(next("y.example.", "x.example."));
    records.push(alto(V4_NAMES[2], "https://isp.example/ird"));
    let dns = TestDns::start(records).await;

    let d = dns.discoverer().by_address(ip(V4)).await.unwrap();
    assert_eq!((d.uri.as_str(), d.found_at.as_str()), ("https://isp.example/ird", V4_NAMES[2]));
    let Outcome::Refused { reason } = &d.tried[0].outcome else { panic!("{:?}", d.tried) };
    assert!(reason.to_string().contains("more than 4 non-terminal records followed"), "{reason}");
    let Outcome::Refused { reason } = &d.tried[1].outcome else { panic!("{:?}", d.tried) };
    assert!(reason.to_string().contains("a loop"), "{reason}");

    // A longer bound reaches the /32's URI.
    let d = dns.discoverer().max_naptr_chain(5).by_address(ip(V4)).await.unwrap();
    assert_eq!((d.uri.as_str(), d.found_at.as_str(), d.uris[0].via.len()), (IRD, V4_NAMES[0], 5));
    dns.stop().await;
}

#[tokio::test]
async fn a_name_that_fails_temporarily_is_asked_again_only_after_the_others() {
    let dns = TestDns::start(vec![alto(V4_NAMES[0], IRD)]).await;
    let flaky = FlakyDns::start(dns.addr, &[(V4_NAMES[0], 1)]).await;
    let d = Discoverer::new(Some(flaky.addr)).unwrap().by_address(ip(V4)).await.unwrap();
    assert_eq!(d.uri, IRD);
    let walk: Vec<(&str, bool)> = d.tried.iter().map(|a| (a.name.as_str(), a.retry)).collect();
    assert_eq!(
        walk,
        [(V4_NAMES[0], false), (V4_NAMES[1], false), (V4_NAMES[2], false), (V4_NAMES[3], false), (V4_NAMES[0], true)]
    );
    assert!(matches!(&d.tried[0].outcome, Outcome::Failed { temporary: true, .. }), "{:?}", d.tried[0]);
    assert_eq!(flaky.queries(V4_NAMES[0]), 2, "asked twice, not more");
    assert_eq!(flaky.queries(V4_NAMES[1]), 1);
    assert!(d.temporarily_failed().is_empty(), "the second ask answered");
    dns.stop().await;

    // A shorter name answers while the /32 failed: the walk stops there, and
    // the caller is told the /32 failed temporarily (RFC 8686 §3.5).
    let dns = TestDns::start(vec![alto(V4_NAMES[0], IRD), alto(V4_NAMES[1], "https://isp.example/ird")]).await;
    let flaky = FlakyDns::start(dns.addr, &[(V4_NAMES[0], 1)]).await;
    let d = Discoverer::new(Some(flaky.addr)).unwrap().by_address(ip(V4)).await.unwrap();
    assert_eq!((d.uri.as_str(), d.found_at.as_str()), ("https://isp.example/ird", V4_NAMES[1]));
    assert_eq!(d.temporarily_failed(), [V4_NAMES[0]]);
    dns.stop().await;
}

#[tokio::test]
async fn special_purpose_addresses_are_not_walked_unless_asked() {
    let private = "10.1.2.3";
    let dns =
        TestDns::start(vec![alto("3.2.1.10.in-addr.arpa.", IRD), alto("isp.example.", "https://d.example/ird")]).await;
    let flaky = FlakyDns::start(dns.addr, &[]).await;
    let discoverer = Discoverer::new(Some(flaky.addr)).unwrap();
    for (addr, kind) in [
        (private, SpecialAddress::Private),
        ("127.0.0.1", SpecialAddress::Loopback),
        ("fe80::1", SpecialAddress::LinkLocal),
        ("fd12::1", SpecialAddress::UniqueLocal),
        ("100.64.1.1", SpecialAddress::Shared),
    ] {
        match discoverer.by_address(ip(addr)).await {
            Err(DiscoverError::Skipped(s)) => assert_eq!((s.ip, s.kind), (ip(addr), kind)),
            other => panic!("{addr}: {other:?}"),
        }
    }
    assert_eq!(flaky.queries("3.2.1.10.in-addr.arpa."), 0, "nothing asked");
    let e = discoverer.by_address(ip(private)).await.unwrap_err();
    assert!(e.to_string().starts_with("10.1.2.3 is a private address (RFC 1918)"), "{e}");
    // A domain given too is still asked.
    let d = discoverer.discover(Some(ip(private)), Some("isp.example")).await.unwrap();
    assert_eq!((d.uri.as_str(), d.skipped.map(|s| s.kind)), ("https://d.example/ird", Some(SpecialAddress::Private)));
    assert_eq!(asked(&d), ["isp.example."]);
    // Opted in, the private address's tree is walked.
    let d = Discoverer::new(Some(flaky.addr)).unwrap().discover_private(true).by_address(ip(private)).await.unwrap();
    assert_eq!((d.uri.as_str(), d.skipped), (IRD, None));
    assert_eq!(flaky.queries("3.2.1.10.in-addr.arpa."), 1);
    dns.stop().await;
}

#[tokio::test]
async fn more_records_than_the_cap_are_refused() {
    // Too big for one UDP answer: the resolver retries over TCP.
    let records = (0..=MAX_RECORDS)
        .map(|i| Naptr { preference: i as u16, ..alto(V4_NAMES[0], &format!("https://alto{i}.example/ird")) })
        .collect();
    let dns = TestDns::start(records).await;
    let e = dns.discoverer().by_address(ip(V4)).await.unwrap_err();
    assert!(
        matches!(&e, DiscoverError::Refused { reason: RecordError::TooMany { count, .. }, .. } if *count == MAX_RECORDS + 1),
        "{e}"
    );
    dns.stop().await;
}

#[tokio::test]
async fn by_domain() {
    let dns = TestDns::start(vec![alto("isp.example.", IRD)]).await;
    for domain in ["isp.example", "isp.example.", "ISP.Example"] {
        let d = dns.discoverer().by_domain(domain).await.unwrap();
        assert_eq!((d.uri.as_str(), d.found_at.as_str()), (IRD, "isp.example."), "{domain}");
        assert_eq!(d.tried.len(), 1);
    }
    let e = dns.discoverer().by_domain("other.example").await.unwrap_err();
    assert_eq!(e.to_string(), "no ALTO server found (tried other.example.: no record)");
    let e = dns.discoverer().by_domain("bad..example").await.unwrap_err();
    assert!(matches!(e, DiscoverError::BadDomain { .. }), "{e}");
    dns.stop().await;
}

#[tokio::test]
async fn address_first_then_domain() {
    let dns = TestDns::start(vec![alto("isp.example.", "https://domain.example/ird")]).await;
    let d = dns.discoverer().discover(Some(ip(V4)), Some("isp.example")).await.unwrap();
    assert_eq!(d.uri, "https://domain.example/ird");
    let mut expected = V4_NAMES.to_vec();
    expected.push("isp.example.");
    assert_eq!(asked(&d), expected);
    dns.stop().await;

    let dns = TestDns::start(vec![alto("isp.example.", "https://domain.example/ird"), alto(V4_NAMES[2], IRD)]).await;
    let d = dns.discoverer().discover(Some(ip(V4)), Some("isp.example")).await.unwrap();
    assert_eq!((d.uri.as_str(), d.found_at.as_str()), (IRD, V4_NAMES[2]), "the address's record is preferred");
    dns.stop().await;
}

#[tokio::test]
async fn a_silent_nameserver_costs_at_most_the_timeout_per_ask() {
    // Receives queries and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let discoverer = Discoverer::with_timeout(Some(silent.local_addr().unwrap()), Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    let e = discoverer.discover(Some(ip(V4)), Some("isp.example")).await.unwrap_err();
    let elapsed = started.elapsed();
    let DiscoverError::NotFound { tried } = &e else { panic!("{e}") };
    // Every name once, then every one once more (RFC 8686 §3.5), and no more.
    assert_eq!(tried.len(), 10);
    assert!(tried[..5].iter().all(|a| !a.retry) && tried[5..].iter().all(|a| a.retry), "{e}");
    assert!(
        tried
            .iter()
            .all(|a| matches!(&a.outcome, Outcome::Failed { reason, temporary: true } if reason.contains("timed out"))),
        "{e}"
    );
    // A generous bound: ten asks of 0.3 s each, not an unbounded wait.
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}

/// `altocast discover` as users run it.
fn altocast(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_altocast-under-test")).args(args).output().expect("run altocast")
}

#[tokio::test]
async fn cli_prints_each_name_tried_and_what_it_found() {
    let dns = TestDns::start(vec![
        alto(V4_NAMES[1], IRD),
        Naptr { preference: 20, ..alto(V4_NAMES[1], "https://backup.example/ird") },
        alto("isp.example.", "https://domain.example/ird"),
    ])
    .await;
    let dns_arg = dns.addr.to_string();
    let args = |ip: &str| -> Vec<String> {
        ["discover", "--ip", ip, "--domain", "isp.example", "--dns", &dns_arg].map(String::from).to_vec()
    };

    let found = args(V4);
    let out = tokio::task::spawn_blocking(move || altocast(&found)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{}", stdout, String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!("tried {}: no record", V4_NAMES[0]),
            format!(
                "tried {}: found {IRD} (order 10, preference 10), https://backup.example/ird (order 10, preference 20)",
                V4_NAMES[1]
            ),
            format!("found {IRD} at {} ttl={TTL}s order=10 preference=10", V4_NAMES[1]),
            format!("found https://backup.example/ird at {} ttl={TTL}s order=10 preference=20", V4_NAMES[1]),
        ]
    );

    // Nothing for this address, so the domain answers.
    let via_domain = args("203.0.113.9");
    let out = tokio::task::spawn_blocking(move || altocast(&via_domain)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert_eq!(lines[4], "tried isp.example.: found https://domain.example/ird (order 10, preference 10)");
    assert_eq!(lines[5], format!("found https://domain.example/ird at isp.example. ttl={TTL}s order=10 preference=10"));

    // Nothing anywhere: a non-zero exit and a one-line reason naming the names.
    let none = vec!["discover".into(), "--ip".into(), "203.0.113.9".into(), "--dns".into(), dns_arg.clone()];
    let out = tokio::task::spawn_blocking(move || altocast(&none)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("tried ") && l.ends_with(": no record")), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("altocast: no ALTO server found (tried 9.113.0.203.in-addr.arpa.: no record;"),
        "{stderr}"
    );

    // A private address: nothing asked, one line saying why; --discover-private walks it.
    let private = vec!["discover".into(), "--ip".into(), "10.0.0.1".into(), "--dns".into(), dns_arg.clone()];
    let out = tokio::task::spawn_blocking(move || altocast(&private)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("skipped 10.0.0.1 is a private address (RFC 1918)"), "{stdout}");
    let mut walked: Vec<String> =
        ["discover", "--ip", "10.0.0.1", "--discover-private", "--dns"].map(String::from).to_vec();
    walked.push(dns_arg.clone());
    let out = tokio::task::spawn_blocking(move || altocast(&walked)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert_eq!(stdout.lines().filter(|l| l.starts_with("tried ")).count(), 4, "{stdout}");
    dns.stop().await;
}

/// A loopback TCP port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_falls_back_to_the_next_uri_when_an_ird_cannot_be_fetched() {
    // West's /16 name has a dead IRD first (preference 1), its real one after
    // (preference 10), both of order 10 (a higher order would not be considered).
    let dead = format!("http://127.0.0.1:{}/directory", closed_port());
    let sc = Scenario::start(vec![Naptr { preference: 1, ..alto("1.10.in-addr.arpa.", &dead) }]).await;
    let west = &sc.isps[0];
    let stop = CancellationToken::new();
    let domains = Domains::new(sc.tracker_config(), stop.clone()).expect("tracker");
    assert_eq!(domains.domain_of(ip("10.1.0.1")).await.expect("west"), Some(west.origin_id()));
    let stats = domains.stats();
    assert_eq!((stats.ird_fetches, stats.domains, stats.domains_refused), (2, 1, 1), "{stats:?}");
    // The east ISP has one URI and is unaffected.
    assert_eq!(domains.domain_of(ip("10.2.0.1")).await.expect("east"), Some(sc.isps[1].origin_id()));
    domains.stop().await;
    for isp in sc.isps {
        isp.origin.stop().await;
    }
    sc.dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_asks_a_name_that_failed_again_after_the_walk_and_skips_private_addresses_by_default() {
    let sc = Scenario::start(vec![]).await;
    let west = &sc.isps[0];
    let flaky = FlakyDns::start(sc.dns.addr, &[("1.10.in-addr.arpa.", 1)]).await;
    let stop = CancellationToken::new();
    let mut cfg = sc.tracker_config();
    cfg.discovery.dns = Some(flaky.addr);
    let domains = Domains::new(cfg.clone(), stop.clone()).expect("tracker");
    // 10.1.0.1's walk: /32, /24, /16 (SERVFAIL), /8, then /16 again: found.
    assert_eq!(domains.domain_of(ip("10.1.0.1")).await.expect("west"), Some(west.origin_id()));
    assert_eq!(flaky.queries("1.10.in-addr.arpa."), 2);
    assert_eq!(domains.stats().dns_lookups, 5);
    // Another address of the /16: the /16's answer is cached now.
    assert_eq!(domains.domain_of(ip("10.1.0.2")).await.expect("west"), Some(west.origin_id()));
    assert_eq!(flaky.queries("1.10.in-addr.arpa."), 2);
    domains.stop().await;

    // By default (RFC 8686 §5.1.3), a private address is not looked up: no server, counted.
    cfg.discovery.discover_private = false;
    let domains = Domains::new(cfg, stop.clone()).expect("tracker");
    assert_eq!(domains.domain_of(ip("10.1.0.3")).await.expect("no error"), None);
    let stats = domains.stats();
    assert_eq!((stats.addresses_skipped, stats.dns_lookups), (1, 0), "{stats:?}");
    assert_eq!(flaky.queries("3.0.1.10.in-addr.arpa."), 0);
    domains.stop().await;
    for isp in sc.isps {
        isp.origin.stop().await;
    }
    sc.dns.stop().await;
}

/// A discoverer asking `dns`, validating DNSSEC from the trust anchor file `anchor`.
fn validating(dns: std::net::SocketAddr, anchor: &std::path::Path, require: bool) -> Discoverer {
    Discoverer::from_config(DiscoveryConfig {
        dns: Some(dns),
        require_dnssec: require,
        validate_dnssec: true,
        dnssec_trust_anchor: Some(anchor.to_path_buf()),
        ..DiscoveryConfig::DEFAULT
    })
    .expect("discoverer")
}

#[tokio::test]
async fn a_signed_answer_validates_and_require_dnssec_refuses_what_does_not() {
    let records = || vec![alto(V4_NAMES[1], IRD)];
    let (signed, anchor) = TestDns::start_signed(records()).await;
    let dir = tempfile::tempdir().unwrap();
    let anchor_path = dir.path().join("root.key");
    std::fs::write(&anchor_path, &anchor).unwrap();

    // Signed with the anchored key: the /32's absence is proven (NSEC) and the /24's record is secure.
    let d = validating(signed.addr, &anchor_path, true).by_address(ip(V4)).await.expect("validated");
    assert_eq!((d.uri.as_str(), d.found_at.as_str()), (IRD, V4_NAMES[1]));
    assert_eq!(d.tried[0].outcome, Outcome::NoRecord);

    // The same records unsigned: refused under --require-dnssec, used without it.
    let unsigned = TestDns::start(records()).await;
    // The anchored root must be signed, so each answer is bogus: refused, and
    // not asked again (no retry fixes a signature).
    let bogus = |e: &DiscoverError| {
        e.tried().len() == 4
            && e.tried().iter().all(|a: &Attempt| {
                matches!(&a.outcome, Outcome::Failed { reason, temporary: false } if reason.contains("DNSSEC validation failed"))
            })
    };
    let e = validating(unsigned.addr, &anchor_path, true).by_address(ip(V4)).await.expect_err("not validated");
    assert!(bogus(&e), "{e}");
    let d = unsigned.discoverer().by_address(ip(V4)).await.expect("no DNSSEC asked for");
    assert_eq!(d.uri, IRD);

    // Signed with another key than the anchored one: bogus, refused.
    let (forged, _) = TestDns::start_signed(records()).await;
    let e = validating(forged.addr, &anchor_path, true).by_address(ip(V4)).await.expect_err("bogus");
    assert!(bogus(&e), "{e}");
    // Validation without --require-dnssec refuses the bogus answer too.
    let e = validating(forged.addr, &anchor_path, false).by_address(ip(V4)).await.expect_err("bogus");
    assert!(bogus(&e), "{e}");

    // `altocast discover --require-dnssec --dnssec-trust-anchor FILE`.
    let cli = |dns: std::net::SocketAddr| -> Vec<String> {
        let mut a: Vec<String> =
            ["discover", "--ip", V4, "--require-dnssec", "--dnssec-trust-anchor"].map(String::from).to_vec();
        a.push(anchor_path.display().to_string());
        a.extend(["--dns".to_string(), dns.to_string()]);
        a
    };
    let (ok, refused) = (cli(signed.addr), cli(unsigned.addr));
    let out = tokio::task::spawn_blocking(move || altocast(&ok)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("found {IRD} at {}", V4_NAMES[1])), "{stdout}");
    let out = tokio::task::spawn_blocking(move || altocast(&refused)).await.unwrap();
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    for dns in [signed, unsigned, forged] {
        dns.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_requiring_dnssec_follows_only_validated_records() {
    let sc = Scenario::start(vec![]).await;
    let west = &sc.isps[0];
    let (signed, anchor) = TestDns::start_signed(vec![west.record()]).await;
    let dir = tempfile::tempdir().unwrap();
    let anchor_path = dir.path().join("root.key");
    std::fs::write(&anchor_path, &anchor).unwrap();
    let stop = CancellationToken::new();
    let mut cfg = sc.tracker_config();
    cfg.discovery.require_dnssec = true;
    cfg.discovery.dnssec_trust_anchor = Some(anchor_path);
    // The signed zone: west is followed.
    cfg.discovery.dns = Some(signed.addr);
    let domains = Domains::new(cfg.clone(), stop.clone()).expect("tracker");
    assert_eq!(domains.domain_of(ip("10.1.0.1")).await.expect("west"), Some(west.origin_id()));
    domains.stop().await;
    // The scenario's unsigned zone: no server.
    cfg.discovery.dns = Some(sc.dns.addr);
    let domains = Domains::new(cfg, stop.clone()).expect("tracker");
    assert_eq!(domains.domain_of(ip("10.1.0.1")).await.expect("no error"), None);
    assert_eq!(domains.stats().subscriptions, 0);
    domains.stop().await;
    signed.stop().await;
    for isp in sc.isps {
        isp.origin.stop().await;
    }
    sc.dns.stop().await;
}
