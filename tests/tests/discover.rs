//! ALTO server discovery (RFC 8686 by address, RFC 7286 by domain) against a
//! real DNS server: hickory-server with an in-memory zone of NAPTR records,
//! on a loopback port picked by the OS (UDP and TCP), started by each test and
//! stopped at its end. Covers each truncation step, first answer wins, U-NAPTR
//! filtering and ordering, refusals, timeouts, and `altocast discover` run as
//! a process.

use std::{
    net::IpAddr,
    process::Command,
    time::{Duration, Instant},
};

use altocast_client::discover::{DiscoverError, Discoverer, Discovery, MAX_RECORDS, Outcome, RecordError};
use altocast_tests::dns::{Naptr, TTL, TestDns, alto};
use tokio::net::UdpSocket;

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
    assert_eq!(d.tried[step].outcome, Outcome::Found { uri: IRD.into() });
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
    ])
    .await;
    let d = dns.discoverer().by_address(ip(V4)).await.unwrap();
    assert_eq!(d.uri, "https://pref5.example/ird");
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
    assert!(msg.starts_with(&format!("{}: ALTO:https record refused: regexp", V4_NAMES[0])), "{msg}");
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
async fn a_silent_nameserver_costs_at_most_the_timeout_per_name() {
    // Receives queries and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let discoverer = Discoverer::with_timeout(Some(silent.local_addr().unwrap()), Duration::from_millis(500)).unwrap();
    let started = Instant::now();
    let e = discoverer.discover(Some(ip(V4)), Some("isp.example")).await.unwrap_err();
    let elapsed = started.elapsed();
    let DiscoverError::NotFound { tried } = &e else { panic!("{e}") };
    assert_eq!(tried.len(), 5);
    assert!(
        tried.iter().all(|a| matches!(&a.outcome, Outcome::Failed { reason } if reason.contains("timed out"))),
        "{e}"
    );
    assert!(elapsed < Duration::from_secs(5), "5 names at 0.5 s each took {elapsed:?}");
}

/// `altocast discover` as users run it.
fn altocast(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_altocast-under-test")).args(args).output().expect("run altocast")
}

#[tokio::test]
async fn cli_prints_each_name_tried_and_what_it_found() {
    let dns = TestDns::start(vec![alto(V4_NAMES[1], IRD), alto("isp.example.", "https://domain.example/ird")]).await;
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
            format!("tried {}: found {IRD}", V4_NAMES[1]),
            format!("found {IRD} at {} ttl={TTL}s", V4_NAMES[1]),
        ]
    );

    // Nothing for this address, so the domain answers.
    let via_domain = args("203.0.113.9");
    let out = tokio::task::spawn_blocking(move || altocast(&via_domain)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert_eq!(lines[4], "tried isp.example.: found https://domain.example/ird");
    assert_eq!(lines[5], format!("found https://domain.example/ird at isp.example. ttl={TTL}s"));

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
    dns.stop().await;
}
