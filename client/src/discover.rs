//! ALTO server discovery through DNS (DESIGN §6b): the URIs of the information
//! resource directory (IRD) of the ALTO server responsible for an address
//! (RFC 8686, cross-domain discovery) or for a domain (RFC 7286).
//!
//! Both are U-NAPTR lookups (RFC 4848) for a U-NAPTR service parameter, by
//! default `ALTO:https` ([`Service`]). For an address, the names asked are its
//! reverse-tree names, longest prefix first: IPv4 /32, /24, /16, /8 under
//! `in-addr.arpa.`, IPv6 /128, /64, /56, /48, /40, /32 (nibbles) under
//! `ip6.arpa.` (RFC 8686 §3.2, Table 1). The first name with a usable record
//! answers and nothing shorter is asked. For a domain, the name itself is
//! asked. [`Discoverer::discover`] asks the address's names first and the
//! domain only if none of them answered: a record for the address is the more
//! specific statement about who is responsible for it.
//!
//! **What an answer is.** The answering name's result is the usable URIs of
//! its lowest order, by preference (RFC 8686 §3.1 returns "one or more URIs"
//! with their order and preference; RFC 3403 §4.1: "once a match is found the
//! client MUST NOT consider records with a different Order but they MAY
//! process records with the same Order but different Preferences"; equal
//! preferences keep the order DNS gave them), each with its order and
//! preference ([`Candidate`]). Records of a higher order are not considered.
//! The tracker tries the URIs in that order and falls back to the next when
//! one's IRD cannot be fetched (RFC 3958 §2.2.4: backtrack on failure).
//!
//! **DNS is never a trust root.** A discovered URI only says *where to look*
//! (even when DNSSEC validated it, see below). What is found there is trusted
//! only when it verifies against a key the client was configured with
//! (DESIGN §6a); discovery never adds a trusted key.
//!
//! **DNSSEC.** RFC 8686 §6.1: "All implementations of the Cross-Domain ALTO
//! Server Discovery Procedure MUST support DNSSEC or be able to use such
//! functionality provided by the underlying operating system"; operators
//! "SHOULD use DNSSEC to protect their subdomains of "in-addr.arpa." and/or
//! "ip6.arpa."", and the U-NAPTR records "have to be secured using DNSSEC"
//! because TLS cannot detect a forged URI. Supported here; validation is off
//! by default (the RFC requires support, not validation by default, and
//! here a forged URI still cannot make a client trust a directory, above). With
//! [`DiscoveryConfig::validate_dnssec`] the resolver validates (hickory's
//! `dnssec-ring`) from the IANA root keys, or from the DNSKEYs of
//! [`DiscoveryConfig::dnssec_trust_anchor`]; an answer whose signatures do not
//! verify (bogus) is a lookup failure, not asked again. With
//! [`DiscoveryConfig::require_dnssec`] only records validated as secure are
//! used; others (an unsigned zone below a signed one) are refused
//! ([`RecordError::NotValidated`]). A negative answer moves the walk to the
//! next, shorter name whether or not it is validated: the record found there
//! must itself validate.
//!
//! What a name's records are, in the order the checks run:
//! 1. NXDOMAIN or no NAPTR records: nothing here, ask the next name.
//! 2. A lookup that fails (timeout, SERVFAIL, refused): noted, ask the next
//!    name; each lookup is one DNS exchange bounded by the timeout. A name
//!    that failed *temporarily* (timeout, SERVFAIL, a network error) is asked
//!    once more only after every name of the walk was asked once (RFC 8686
//!    §3.5), so one lame name never delays the answer of a shorter one.
//! 3. More than [`MAX_RECORDS`] NAPTR records: refused.
//! 4. Service parameters (RFC 4848 §4.5 syntax, compared case-insensitively):
//!    only records whose application service is `ALTO` and whose protocols
//!    include the one asked (`https` for `ALTO:https`; `ALTO:http:https`
//!    counts), with flags `U` or empty, are considered, terminal or not (RFC
//!    3958 §2.2.2); every other service, protocol or flag (`S` and `A` lead
//!    to a host, not a URI) is ignored (none left: ask the next name).
//! 5. Terminal records (flags `U`) yield a URI through their regexp; its scheme
//!    must be the protocol asked (`https://` for `ALTO:https`). Non-terminal
//!    records (empty flags, a replacement and no regexp) name the next domain
//!    name to ask with the same service parameter (RFC 4848 §4.4):
//!    followed, at most [`DiscoveryConfig::max_naptr_chain`] of them from one
//!    name (loops refused), their URIs taking the place of the record that led
//!    to them.
//! 6. Records are taken in (order, preference) order. The first usable one
//!    fixes the order: its usable records of that order are kept by
//!    preference, and higher orders are not considered (RFC 3403 §4.1); a
//!    record whose rule yields nothing usable (bad regexp, wrong scheme) is
//!    no match and is passed over (RFC 3402 §3.3 steps 3–4). Non-terminal
//!    records are followed within the kept order only, and at the next name
//!    the same rule applies. If none is usable, the name is refused: the reason is noted and
//!    the next name is asked (RFC 8686 §3.4–3.5: lookups go on "until one
//!    produces a usable result"). A walk that ends without an answer reports
//!    the first refusal, naming the name.
//!
//! **Special-purpose addresses.** Private (RFC 1918, RFC 4193), shared
//! (RFC 6598), loopback, link-local, unspecified, benchmarking, multicast and
//! reserved addresses are not walked by default. This is altocast's policy,
//! not an RFC 8686 requirement: §5.1.3 only warns that a walk for a private
//! (RFC 1918) address "may be problematic, as this will only yield usable
//! results if a DNS "split horizon" and DNSSEC trust anchors are configured
//! correctly", and that "it may be more advisable to query an ALTO server
//! that has been discovered using \[RFC7286\] or any other local
//! configuration"; §5.1.1 has the client learn its "public" IP address (e.g.
//! STUN) before discovery. Such an address
//! gives [`DiscoverError::Skipped`] (a domain given too is still asked) unless
//! [`DiscoveryConfig::discover_private`] is set (tests and labs whose swarm
//! lives in 10.0.0.0/8). Documentation prefixes (192.0.2.0/24, 198.51.100.0/24,
//! 203.0.113.0/24, 2001:db8::/32) are global in form and are walked.
//!
//! **Loopback test option.** [`DiscoveryConfig::allow_loopback_http`] (off by
//! default; `altocast tracker --allow-loopback-http`) also accepts `http://`
//! URIs whose host is a loopback IP literal (`127.0.0.0/8`, `[::1]`) from
//! `ALTO:https` records, so a whole multi-domain deployment can run on one
//! machine without TLS certificates. Nothing else changes.
//!
//! Only the regexp form U-NAPTR uses is supported (RFC 4848 §2.2): a match of
//! the whole string (`.*`, `^.*$`) replaced by a URI with no back-references,
//! such as `!^.*$!https://alto.example/ird!` (any delimiter, optional `i` flag).
//!
//! Refusals are counted in [`METRIC_REFUSED`] by reason.
//!
//! Key types: [`Discoverer`], [`DiscoveryConfig`], [`Discovery`],
//! [`DiscoverError`]. The pure steps ([`reverse_names`], [`special_purpose`],
//! [`apply_regexp`], [`select`]) are public.

use std::{
    borrow::Cow,
    fmt,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    str::FromStr,
    time::Duration,
};

use hickory_resolver::{
    Resolver, TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig},
    net::{DnsError, NetError, runtime::TokioRuntimeProvider},
    proto::{
        dnssec::{Proof, TrustAnchors},
        op::ResponseCode,
        rr::{Name, RData, RecordType, rdata::NAPTR},
    },
};

/// The default U-NAPTR service parameter asked for.
pub const SERVICE: &str = "ALTO:https";

/// How long one DNS exchange may take. Reverse zones are often lame, so a
/// name that does not answer must not stall the walk.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// NAPTR records considered at one name; a name with more is refused. Real
/// ALTO deployments publish one or two; the cap bounds the work a hostile
/// zone can cause.
pub const MAX_RECORDS: usize = 32;

/// Non-terminal NAPTR records followed from one name by default
/// ([`DiscoveryConfig::max_naptr_chain`]).
pub const MAX_NAPTR_CHAIN: usize = 4;

/// Discovery refusals, by reason: `too_many_records`, `unusable` (no usable
/// ALTO record at a name), `naptr_chain` (a non-terminal chain past the bound
/// or looping), `special_address` (a walk not run for a special-purpose
/// address), `not_validated` (an answer DNSSEC did not validate, with
/// `--require-dnssec`).
pub const METRIC_REFUSED: &str = "altocast_discovery_refused_total";

fn refused(reason: &'static str) {
    metrics::counter!(METRIC_REFUSED, "reason" => reason).increment(1);
}

/// Longest URI accepted (a NAPTR regexp is at most 255 bytes anyway).
const MAX_URI: usize = 255;

/// A U-NAPTR service parameter (RFC 4848 §4.5, RFC 3958 §6.5): one
/// application service tag and one application protocol tag, such as
/// `ALTO:https` (the default; RFC 7286 §3.1) or `ALTO:http`. RFC 8686 §3.1:
/// the procedure "MUST support being called with any valid U-NAPTR Service
/// Parameter", so any tag pair of the grammar is accepted; both tags compare
/// case-insensitively and are kept in lower case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    // Borrowed for the built-in ones, so that configurations can be `const`.
    app: Cow<'static, str>,
    protocol: Cow<'static, str>,
}

impl Default for Service {
    fn default() -> Self {
        Service::alto_https()
    }
}

impl Service {
    /// `ALTO:https`: IRD URIs are `https://`.
    pub const fn alto_https() -> Service {
        Service { app: Cow::Borrowed("alto"), protocol: Cow::Borrowed("https") }
    }

    /// `ALTO:http`: IRD URIs are `http://` (no server authentication; DNS and
    /// the IRD are only locators, the directory is verified anyway).
    pub const fn alto_http() -> Service {
        Service { app: Cow::Borrowed("alto"), protocol: Cow::Borrowed("http") }
    }

    /// The application service tag (lower case).
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The application protocol tag (lower case). For `http` and `https` it is
    /// also the scheme every URI found must have.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// Whether this is ALTO's (`ALTO:https` or `ALTO:http`): what the tracker
    /// can follow (an RFC 7285 IRD).
    pub fn is_alto(&self) -> bool {
        self.app == "alto" && matches!(&*self.protocol, "https" | "http")
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let app = if self.app == "alto" { "ALTO" } else { &self.app };
        write!(f, "{app}:{}", self.protocol)
    }
}

/// RFC 3958 §6.5: `ALPHA *31ALPHANUMSYM`, `ALPHANUMSYM = ALPHA / DIGIT / "+" / "-" / "."`.
fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    (1..=32).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

impl FromStr for Service {
    type Err = String;

    /// `SERVICE:PROTOCOL`, each tag of RFC 3958's grammar, in any case.
    fn from_str(s: &str) -> Result<Service, String> {
        match s.split_once(':') {
            Some((app, protocol)) if is_tag(app) && is_tag(protocol) => {
                Ok(Service { app: app.to_ascii_lowercase().into(), protocol: protocol.to_ascii_lowercase().into() })
            }
            _ => Err(format!(
                "{s:?} is not a U-NAPTR service parameter: SERVICE:PROTOCOL, each a letter then up to 31 letters, \
                 digits, '+', '-' or '.' (e.g. ALTO:https)"
            )),
        }
    }
}

/// How a [`Discoverer`] asks. Every bound has a default in [`DiscoveryConfig::DEFAULT`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Ask only this nameserver (else the system resolver configuration).
    pub dns: Option<SocketAddr>,
    /// Bound of one DNS exchange.
    pub timeout: Duration,
    /// The service parameter asked for.
    pub service: Service,
    /// Accept `http://` URIs to loopback IP literals from `ALTO:https`
    /// records (tests, demos; see the module doc).
    pub allow_loopback_http: bool,
    /// Walk the reverse tree of special-purpose addresses too (see the module doc).
    pub discover_private: bool,
    /// Most non-terminal NAPTR records followed from one name asked (along
    /// one chain and across branches); more are refused.
    pub max_naptr_chain: usize,
    /// Validate DNSSEC: answers that fail validation (bogus) are errors.
    pub validate_dnssec: bool,
    /// Use only records DNSSEC validated (secure): others are refused
    /// (implies `validate_dnssec`).
    pub require_dnssec: bool,
    /// A file of DNSKEY records (zone-file syntax, as unbound's `root.key`)
    /// to validate from instead of the IANA root keys (implies `validate_dnssec`).
    pub dnssec_trust_anchor: Option<std::path::PathBuf>,
}

impl DiscoveryConfig {
    /// The defaults.
    pub const DEFAULT: DiscoveryConfig = DiscoveryConfig {
        dns: None,
        timeout: LOOKUP_TIMEOUT,
        service: Service::alto_https(),
        allow_loopback_http: false,
        discover_private: false,
        max_naptr_chain: MAX_NAPTR_CHAIN,
        validate_dnssec: false,
        require_dnssec: false,
        dnssec_trust_anchor: None,
    };
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One URI of the answering name, in the order to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The IRD URI.
    pub uri: String,
    /// The NAPTR order of the record at the answering name that led here.
    pub order: u16,
    /// Its preference.
    pub preference: u16,
    /// The names of the non-terminal records followed to reach the URI, in
    /// order (empty: a terminal record at the answering name).
    pub via: Vec<String>,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (order {}, preference {}", self.uri, self.order, self.preference)?;
        if !self.via.is_empty() {
            write!(f, ", via {}", self.via.join(" -> "))?;
        }
        f.write_str(")")
    }
}

/// What discovery found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// The first URI to try (`uris[0].uri`).
    pub uri: String,
    /// Every usable URI of the answering name, in the order to try them.
    pub uris: Vec<Candidate>,
    /// The name whose records gave them, e.g. `100.51.198.in-addr.arpa.`.
    pub found_at: String,
    /// Every name asked, in order, the last being `found_at`.
    pub tried: Vec<Attempt>,
    /// The smallest TTL of the records used: how long the answer may be cached.
    pub ttl: Duration,
    /// The address's walk was not run (special-purpose address), and the
    /// domain answered instead.
    pub skipped: Option<Skipped>,
}

impl Discovery {
    /// Names asked whose last lookup failed temporarily (asked once more
    /// after the walk, or not, when a later name answered first): RFC 8686
    /// §3.5 wants the caller told
    /// that "retrying the discovery at a later point in time might give more
    /// accurate results".
    pub fn temporarily_failed(&self) -> Vec<&str> {
        temporarily_failed(&self.tried)
    }
}

fn temporarily_failed(tried: &[Attempt]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for a in tried {
        let last = tried.iter().rev().find(|b| b.name == a.name);
        if last.is_some_and(|b| b.outcome.is_temporary_failure()) && !names.contains(&a.name.as_str()) {
            names.push(&a.name);
        }
    }
    names
}

/// One name asked and what it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The fully qualified name asked.
    pub name: String,
    /// What it answered.
    pub outcome: Outcome,
    /// Asked a second time, after every name was asked once (it had failed
    /// temporarily).
    pub retry: bool,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let again = if self.retry { " (again)" } else { "" };
        write!(f, "{}{again}: {}", self.name, self.outcome)
    }
}

/// What one name answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Usable records: these URIs, in the order to try. The walk stops here.
    Found {
        /// The URIs (never empty).
        uris: Vec<Candidate>,
    },
    /// The name does not exist or has no NAPTR records.
    NoRecord,
    /// NAPTR records, none of them for the service asked.
    NoAltoRecord {
        /// How many were ignored.
        ignored: usize,
    },
    /// Records for the service that cannot be used: noted, and the next name is asked.
    Refused {
        /// Why (the first unusable record's reason).
        reason: RecordError,
    },
    /// The lookup failed; the walk went on.
    Failed {
        /// What the resolver said.
        reason: String,
        /// A timeout, SERVFAIL or network error: asked again once the
        /// other names were asked (RFC 8686 §3.5).
        temporary: bool,
    },
}

impl Outcome {
    /// The URIs, if this answers.
    pub fn uris(&self) -> Option<&[Candidate]> {
        match self {
            Outcome::Found { uris } => Some(uris),
            _ => None,
        }
    }

    fn is_temporary_failure(&self) -> bool {
        matches!(self, Outcome::Failed { temporary: true, .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Found { uris } => {
                let all: Vec<String> = uris.iter().map(ToString::to_string).collect();
                write!(f, "found {}", all.join(", "))
            }
            Outcome::NoRecord => f.write_str("no record"),
            Outcome::NoAltoRecord { ignored } => write!(f, "no ALTO record ({ignored} other NAPTR ignored)"),
            Outcome::Refused { reason } => write!(f, "refused: {reason}"),
            Outcome::Failed { reason, temporary: true } => write!(f, "lookup failed (temporarily): {reason}"),
            Outcome::Failed { reason, temporary: false } => write!(f, "lookup failed: {reason}"),
        }
    }
}

/// Why a NAPTR record for the service asked cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The name has more NAPTR records than [`MAX_RECORDS`].
    #[error("{count} NAPTR records, more than the {max} considered")]
    TooMany {
        /// How many it has.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// A `U` record must rewrite with its regexp and have the root (".") as
    /// replacement (RFC 3403: the two are mutually exclusive).
    #[error("replacement {replacement:?} given where a U record needs only a regexp")]
    Replacement {
        /// The replacement field.
        replacement: String,
    },
    /// A non-terminal record (empty flags) must have a replacement name and
    /// no regexp (RFC 4848 §4.4, RFC 3403).
    #[error("non-terminal record: {reason}")]
    NonTerminal {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Following non-terminal records would pass the bound or loop.
    #[error("non-terminal record to {name}: {reason}")]
    Chain {
        /// The name it points to.
        name: String,
        /// Why it is not followed.
        reason: String,
    },
    /// The name a non-terminal record points to gave no usable URI.
    #[error("non-terminal record to {name}: {what}")]
    Next {
        /// The name pointed to.
        name: String,
        /// What it answered.
        what: String,
    },
    /// DNSSEC did not validate the record, and only validated records are
    /// used (`--require-dnssec`).
    #[error("record at {name} is not DNSSEC-validated ({proof}), and --require-dnssec is set")]
    NotValidated {
        /// The name holding it.
        name: String,
        /// What validation said (insecure, indeterminate, bogus).
        proof: String,
    },
    /// The regexp field is empty, malformed, or not of the supported
    /// whole-string form.
    #[error("regexp {regexp}: {reason}")]
    Regexp {
        /// The field, quoted and cut to 80 characters.
        regexp: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The regexp yields something that is not a usable URI for the service.
    #[error("URI {uri}: {reason}")]
    Uri {
        /// The URI, quoted and cut to 80 characters.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A special-purpose address class (RFC 6890 and the RFCs it lists), whose
/// reverse tree is not walked by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialAddress {
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 (RFC 1918).
    Private,
    /// fc00::/7 (RFC 4193).
    UniqueLocal,
    /// 100.64.0.0/10, carrier-grade NAT (RFC 6598).
    Shared,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// 169.254.0.0/16 (RFC 3927), fe80::/10, fec0::/10.
    LinkLocal,
    /// 198.18.0.0/15 (RFC 2544).
    Benchmarking,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 192.0.0.0/24 (RFC 6890), 240.0.0.0/4 and the broadcast address.
    Reserved,
}

impl fmt::Display for SpecialAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecialAddress::Unspecified => "an unspecified (\"this network\") address",
            SpecialAddress::Private => "a private address (RFC 1918)",
            SpecialAddress::UniqueLocal => "a unique local address (RFC 4193)",
            SpecialAddress::Shared => "a shared carrier-grade NAT address (RFC 6598)",
            SpecialAddress::Loopback => "a loopback address",
            SpecialAddress::LinkLocal => "a link-local address",
            SpecialAddress::Benchmarking => "a benchmarking address (RFC 2544)",
            SpecialAddress::Multicast => "a multicast address",
            SpecialAddress::Reserved => "a reserved address (RFC 6890)",
        })
    }
}

/// The special-purpose class of `ip`, if it has one (an IPv4-mapped IPv6
/// address is classed as IPv4). Documentation prefixes have none.
pub fn special_purpose(ip: IpAddr) -> Option<SpecialAddress> {
    use SpecialAddress::*;
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            match (a, b, c) {
                (0, ..) => Some(Unspecified),
                (10, ..) => Some(Private),
                (100, 64..=127, _) => Some(Shared),
                (127, ..) => Some(Loopback),
                (169, 254, _) => Some(LinkLocal),
                (172, 16..=31, _) => Some(Private),
                (192, 0, 0) => Some(Reserved),
                (192, 168, _) => Some(Private),
                (198, 18..=19, _) => Some(Benchmarking),
                (224..=239, ..) => Some(Multicast),
                (240..=255, ..) => Some(Reserved),
                _ => None,
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_unspecified() {
                Some(Unspecified)
            } else if v6.is_loopback() {
                Some(Loopback)
            } else if first & 0xfe00 == 0xfc00 {
                Some(UniqueLocal)
            } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
                Some(LinkLocal)
            } else if first & 0xff00 == 0xff00 {
                Some(Multicast)
            } else {
                None
            }
        }
    }
}

/// An address whose reverse-tree walk was not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The address.
    pub ip: IpAddr,
    /// Its class.
    pub kind: SpecialAddress,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {}: not walked by default, as RFC 8686 §5.1.3 warns discovery for such an address \
             \"may be problematic\" (give the public address, a --domain, or --discover-private to walk it anyway)",
            self.ip, self.kind
        )
    }
}

/// Why discovery found no IRD URI.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The resolver could not be set up (e.g. the system resolver
    /// configuration is unreadable).
    #[error("DNS resolver: {reason}")]
    Resolver {
        /// Why.
        reason: String,
    },
    /// The domain given is not a valid DNS name.
    #[error("domain {domain:?}: {reason}")]
    BadDomain {
        /// The domain, cut to 80 characters.
        domain: String,
        /// Why.
        reason: String,
    },
    /// Neither an address nor a domain was given.
    #[error("nothing to discover: give an address or a domain")]
    NothingToAsk,
    /// The address is special-purpose and no domain was given: nothing was asked.
    #[error("{0}")]
    Skipped(Skipped),
    /// No name asked has a usable record.
    #[error("no ALTO server found (tried {})", list(tried))]
    NotFound {
        /// Every name asked and its outcome.
        tried: Vec<Attempt>,
    },
    /// A name has records for the service, and none of them can be used.
    #[error("{name}: ALTO record refused: {reason}")]
    Refused {
        /// The name.
        name: String,
        /// Why.
        reason: RecordError,
        /// Every name asked.
        tried: Vec<Attempt>,
    },
}

impl DiscoverError {
    /// Names whose lookups failed temporarily (see [`Discovery::temporarily_failed`]).
    pub fn temporarily_failed(&self) -> Vec<&str> {
        temporarily_failed(self.tried())
    }

    /// The names asked before giving up (empty if none was).
    pub fn tried(&self) -> &[Attempt] {
        match self {
            DiscoverError::NotFound { tried } | DiscoverError::Refused { tried, .. } => tried,
            _ => &[],
        }
    }
}

fn list(tried: &[Attempt]) -> String {
    if tried.is_empty() {
        return "no name".into();
    }
    tried.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Network input shown in a message: lossy UTF-8, quoted, at most 80 characters.
fn quote(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut cut: String = s.chars().take(80).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// One name's answer, as [`Discoverer::lookup_name`] gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAnswer {
    /// What the name answered.
    pub outcome: Outcome,
    /// How long it may be cached: the smallest TTL of the records used, the
    /// zone's negative TTL (RFC 2308) for "no record", else zero.
    pub ttl: Duration,
    /// DNS queries sent for it (more than one when non-terminal records were followed).
    pub queries: u32,
}

/// What one name's own records say, before non-terminal ones are followed:
/// each record with its TTL and DNSSEC proof.
enum Fetched {
    Records(Vec<(NAPTR, u32, Proof)>),
    NoRecord(Duration),
    Failed { reason: String, temporary: bool },
}

/// The state of following one name's non-terminal records.
struct Follow {
    /// Names on the current chain (loops are refused).
    chain: Vec<Name>,
    /// Non-terminal records followed so far.
    followed: usize,
    queries: u32,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Asks DNS for ALTO servers. Cheap to share; lookups are cached for their TTL.
#[derive(Debug, Clone)]
pub struct Discoverer {
    resolver: TokioResolver,
    cfg: DiscoveryConfig,
}

impl Discoverer {
    /// A discoverer using the system resolver configuration (`None`), or only
    /// the nameserver at `dns` over UDP and TCP, with [`LOOKUP_TIMEOUT`].
    pub fn new(dns: Option<SocketAddr>) -> Result<Discoverer, DiscoverError> {
        Self::with_timeout(dns, LOOKUP_TIMEOUT)
    }

    /// Like [`Discoverer::new`], each DNS exchange bounded by `timeout`.
    pub fn with_timeout(dns: Option<SocketAddr>, timeout: Duration) -> Result<Discoverer, DiscoverError> {
        Self::from_config(DiscoveryConfig { dns, timeout, ..DiscoveryConfig::DEFAULT })
    }

    /// A discoverer with `cfg`.
    pub fn from_config(mut cfg: DiscoveryConfig) -> Result<Discoverer, DiscoverError> {
        cfg.timeout = cfg.timeout.max(Duration::from_millis(100));
        let mut builder = match cfg.dns {
            None => TokioResolver::builder_tokio()
                .map_err(|e| DiscoverError::Resolver { reason: format!("reading the system configuration: {e}") })?,
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
        };
        if let Some(path) = &cfg.dnssec_trust_anchor {
            let anchors = TrustAnchors::from_file(path).map_err(|e| DiscoverError::Resolver {
                reason: format!("DNSSEC trust anchor {}: {e}", path.display()),
            })?;
            if anchors.is_empty() {
                return Err(DiscoverError::Resolver {
                    reason: format!("DNSSEC trust anchor {}: no root DNSKEY record in it", path.display()),
                });
            }
            builder = builder.with_trust_anchor(std::sync::Arc::new(anchors));
        }
        let opts = builder.options_mut();
        opts.validate = cfg.validate_dnssec || cfg.require_dnssec || cfg.dnssec_trust_anchor.is_some();
        opts.timeout = cfg.timeout;
        // One exchange per ask: a name that fails is asked again only after
        // the walk's other names (RFC 8686 §3.5), by the walk itself.
        opts.attempts = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.cache_size = 256;
        let resolver = builder.build().map_err(|e| DiscoverError::Resolver { reason: e.to_string() })?;
        Ok(Discoverer { resolver, cfg })
    }

    /// Also accept `http://` IRD URIs whose host is a loopback IP literal
    /// (tests and single-machine demos; see the module doc). Off by default.
    pub fn allow_loopback_http(mut self, allow: bool) -> Discoverer {
        self.cfg.allow_loopback_http = allow;
        self
    }

    /// Walk special-purpose addresses too (see the module doc). Off by default.
    pub fn discover_private(mut self, allow: bool) -> Discoverer {
        self.cfg.discover_private = allow;
        self
    }

    /// Ask for `service` instead of `ALTO:https`.
    pub fn service(mut self, service: Service) -> Discoverer {
        self.cfg.service = service;
        self
    }

    /// Follow at most `max` non-terminal records from one name.
    pub fn max_naptr_chain(mut self, max: usize) -> Discoverer {
        self.cfg.max_naptr_chain = max;
        self
    }

    /// The settings in use.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.cfg
    }

    /// RFC 8686: the IRD URIs for `ip`, from its reverse-tree names, longest
    /// prefix first. An IPv4-mapped IPv6 address is treated as IPv4.
    pub async fn by_address(&self, ip: IpAddr) -> Result<Discovery, DiscoverError> {
        self.discover(Some(ip), None).await
    }

    /// RFC 7286: the IRD URIs for `domain` (a trailing dot is optional).
    pub async fn by_domain(&self, domain: &str) -> Result<Discovery, DiscoverError> {
        self.discover(None, Some(domain)).await
    }

    /// Whether `ip`'s reverse tree is walked: `Err` names why not.
    pub fn walks(&self, ip: IpAddr) -> Result<(), Skipped> {
        match special_purpose(ip) {
            Some(kind) if !self.cfg.discover_private => Err(Skipped { ip, kind }),
            _ => Ok(()),
        }
    }

    /// The address's reverse names, then the domain: the first name with a
    /// usable record answers (what `altocast discover` runs). Names that
    /// failed temporarily are asked once more after all were asked once.
    pub async fn discover(&self, ip: Option<IpAddr>, domain: Option<&str>) -> Result<Discovery, DiscoverError> {
        let mut names = Vec::new();
        let mut skipped = None;
        if let Some(ip) = ip {
            match self.walks(ip) {
                Ok(()) => names = reverse_names(ip),
                Err(s) => {
                    refused("special_address");
                    skipped = Some(s);
                }
            }
        }
        if let Some(d) = domain {
            names.push(domain_name(d)?);
        }
        if names.is_empty() {
            return Err(skipped.map_or(DiscoverError::NothingToAsk, DiscoverError::Skipped));
        }
        let mut tried: Vec<Attempt> = Vec::with_capacity(names.len());
        let mut again = Vec::new();
        let mut refusal: Option<(String, RecordError)> = None;
        // RFC 8686 §3.5: every name once, then those that failed temporarily once more.
        for retry in [false, true] {
            let round = if retry { std::mem::take(&mut again) } else { std::mem::take(&mut names) };
            for name in round {
                let answer = self.lookup_name(&name).await;
                if !retry && answer.outcome.is_temporary_failure() {
                    again.push(name.clone());
                }
                if let Outcome::Refused { reason } = &answer.outcome {
                    refusal.get_or_insert_with(|| (name.clone(), reason.clone()));
                }
                let uris = answer.outcome.uris().map(<[Candidate]>::to_vec).unwrap_or_default();
                tried.push(Attempt { name: name.clone(), outcome: answer.outcome, retry });
                if let Some(first) = uris.first() {
                    let uri = first.uri.clone();
                    return Ok(Discovery { uri, uris, found_at: name, tried, ttl: answer.ttl, skipped });
                }
            }
        }
        match refusal {
            Some((name, reason)) => Err(DiscoverError::Refused { name, reason, tried }),
            None => Err(DiscoverError::NotFound { tried }),
        }
    }

    /// One name's U-NAPTR answer, non-terminal records followed (each DNS
    /// exchange bounded by the timeout): the step [`Discoverer::discover`]
    /// repeats, for callers that cache names.
    pub async fn lookup_name(&self, name: &str) -> NameAnswer {
        let fqdn = match Name::from_ascii(name) {
            Ok(n) => n,
            Err(e) => {
                let outcome = Outcome::Failed { reason: format!("not a DNS name: {e}"), temporary: false };
                return NameAnswer { outcome, ttl: Duration::ZERO, queries: 0 };
            }
        };
        let mut follow = Follow { chain: vec![fqdn.clone()], followed: 0, queries: 0 };
        let (outcome, ttl) = self.resolve(&fqdn, &mut follow).await;
        if matches!(outcome, Outcome::Refused { .. }) {
            refused("unusable");
        }
        NameAnswer { outcome, ttl, queries: follow.queries }
    }

    /// One DNS exchange for `name`'s NAPTR records.
    async fn fetch(&self, name: &Name) -> Fetched {
        let lookup =
            match tokio::time::timeout(self.cfg.timeout, self.resolver.lookup(name.clone(), RecordType::NAPTR)).await {
                Err(_) => {
                    let reason = format!("timed out after {} ms", self.cfg.timeout.as_millis());
                    return Fetched::Failed { reason, temporary: true };
                }
                // RFC 2308: "no such record" may be cached for the zone's negative TTL.
                Ok(Err(NetError::Dns(DnsError::NoRecordsFound(nr)))) => {
                    return Fetched::NoRecord(Duration::from_secs(nr.negative_ttl.map_or(0, u64::from)));
                }
                Ok(Err(e)) if e.is_no_records_found() => return Fetched::NoRecord(Duration::ZERO),
                // A validated proof that the name or its NAPTR records do not exist.
                Ok(Err(NetError::Dns(DnsError::Nsec { .. }))) => return Fetched::NoRecord(Duration::ZERO),
                Ok(Err(e)) => {
                    // Bogus (signatures that do not verify) is not fixed by asking again.
                    let temporary = match &e {
                        NetError::Dns(DnsError::ResponseCode(code)) => *code == ResponseCode::ServFail,
                        NetError::Dns(_) => false,
                        _ => true,
                    };
                    return Fetched::Failed { reason: e.to_string(), temporary };
                }
                Ok(Ok(lookup)) => lookup,
            };
        // CNAMEs (RFC 2317 classless reverse delegation) are followed by the
        // resolver; only the NAPTR records of the answer count.
        let records: Vec<(NAPTR, u32, Proof)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::NAPTR(n) => Some((n.clone(), r.ttl, r.proof)),
                _ => None,
            })
            .collect();
        if records.is_empty() { Fetched::NoRecord(Duration::ZERO) } else { Fetched::Records(records) }
    }

    /// `name`'s answer, its non-terminal records followed within `follow`'s
    /// bound; the URIs a non-terminal record leads to take its place.
    fn resolve<'a>(&'a self, name: &'a Name, follow: &'a mut Follow) -> Boxed<'a, (Outcome, Duration)> {
        Box::pin(async move {
            follow.queries += 1;
            let records = match self.fetch(name).await {
                Fetched::Records(r) => r,
                Fetched::NoRecord(ttl) => return (Outcome::NoRecord, ttl),
                Fetched::Failed { reason, temporary } => {
                    return (Outcome::Failed { reason, temporary }, Duration::ZERO);
                }
            };
            let refs: Vec<&NAPTR> = records.iter().map(|(n, ..)| n).collect();
            let selected = match select(&refs, &self.cfg.service, self.cfg.allow_loopback_http) {
                Ok(s) => s,
                Err(reason) => {
                    refused("too_many_records");
                    return (Outcome::Refused { reason }, Duration::ZERO);
                }
            };
            if selected.entries.is_empty() && selected.errors.is_empty() {
                return (Outcome::NoAltoRecord { ignored: selected.ignored }, Duration::ZERO);
            }
            let mut uris: Vec<Candidate> = Vec::new();
            let mut errors = selected.errors;
            let mut temporary = None;
            let mut ttl = u32::MAX;
            for (index, entry) in selected.entries {
                let Some((record, record_ttl, proof)) = records.get(index) else { continue };
                let (order, preference) = (record.order, record.preference);
                // RFC 8686 §6.1: with --require-dnssec only validated records are used.
                if self.cfg.require_dnssec && *proof != Proof::Secure {
                    refused("not_validated");
                    errors.push(RecordError::NotValidated { name: name.to_ascii(), proof: proof.to_string() });
                    continue;
                }
                match entry {
                    Entry::Uri(uri) => {
                        ttl = ttl.min(*record_ttl);
                        uris.push(Candidate { uri, order, preference, via: Vec::new() });
                    }
                    Entry::Next(next) => {
                        let shown = next.to_ascii();
                        let chain_error = |reason: String| RecordError::Chain { name: shown.clone(), reason };
                        if follow.chain.contains(&next) {
                            refused("naptr_chain");
                            errors.push(chain_error("a loop".into()));
                            continue;
                        }
                        if follow.followed >= self.cfg.max_naptr_chain {
                            refused("naptr_chain");
                            let max = self.cfg.max_naptr_chain;
                            errors.push(chain_error(format!("more than {max} non-terminal records followed")));
                            continue;
                        }
                        follow.followed += 1;
                        follow.chain.push(next.clone());
                        let (outcome, next_ttl) = self.resolve(&next, follow).await;
                        follow.chain.pop();
                        let what = match outcome {
                            Outcome::Found { uris: found } => {
                                ttl = ttl.min(*record_ttl).min(u32::try_from(next_ttl.as_secs()).unwrap_or(u32::MAX));
                                for c in found {
                                    let mut via = vec![shown.clone()];
                                    via.extend(c.via);
                                    uris.push(Candidate { uri: c.uri, order, preference, via });
                                }
                                continue;
                            }
                            Outcome::Failed { reason, temporary: true } => {
                                temporary.get_or_insert_with(|| format!("{shown}: {reason}"));
                                format!("lookup failed: {reason}")
                            }
                            other => other.to_string(),
                        };
                        errors.push(RecordError::Next { name: shown.clone(), what });
                    }
                }
            }
            // The same URI twice (two paths to one server) is tried once.
            let mut seen = std::collections::HashSet::new();
            uris.retain(|c| seen.insert(c.uri.clone()));
            if !uris.is_empty() {
                return (Outcome::Found { uris }, Duration::from_secs(u64::from(ttl)));
            }
            if let Some(reason) = temporary {
                return (Outcome::Failed { reason, temporary: true }, Duration::ZERO);
            }
            let reason = errors.into_iter().next().unwrap_or(RecordError::NonTerminal { reason: "no usable record" });
            (Outcome::Refused { reason }, Duration::ZERO)
        })
    }
}

pub fn reverse_names(ip: IpAddr) -> Vec<String> {
    reverse_names_within(ip, 128)
}

/// The reverse-tree names RFC 8686 asks for the prefix of `ip` of length
/// `len` (the procedure's input may be a prefix): those of
/// [`reverse_names`] no longer than `len` bits, longest first. An IPv4
/// address takes `len` in IPv4 bits (values over 32 mean 32). A prefix
/// shorter than /8 (IPv4) or /32 (IPv6) asks no name: RFC 8686 §3.2 aborts
/// the procedure with "unsupported prefix length".
pub fn reverse_names_within(ip: IpAddr, len: u8) -> Vec<String> {
    let len = usize::from(len);
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (1..=4)
                .rev()
                .filter(|n| len >= 8 && n * 8 <= len)
                .map(|n| {
                    let labels: Vec<String> = o[..n].iter().rev().map(u8::to_string).collect();
                    format!("{}.in-addr.arpa.", labels.join("."))
                })
                .collect()
        }
        IpAddr::V6(v6) => {
            let nibbles: Vec<u8> = v6.octets().iter().flat_map(|b| [b >> 4, b & 0xf]).collect();
            [128usize, 64, 56, 48, 40, 32]
                .iter()
                .filter(|&&bits| len >= 32 && bits <= len)
                .map(|bits| {
                    let labels: Vec<String> = nibbles[..bits / 4].iter().rev().map(|n| format!("{n:x}")).collect();
                    format!("{}.ip6.arpa.", labels.join("."))
                })
                .collect()
        }
    }
}

/// A domain as the fully qualified name to ask.
fn domain_name(domain: &str) -> Result<String, DiscoverError> {
    let bad = |reason: String| DiscoverError::BadDomain { domain: domain.chars().take(80).collect(), reason };
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    if trimmed.is_empty() {
        return Err(bad("empty".into()));
    }
    let mut name = Name::from_utf8(trimmed).map_err(|e| bad(e.to_string()))?;
    name.set_fqdn(true);
    Ok(name.to_ascii())
}

/// What one usable record of a name says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A terminal (`U`) record's URI.
    Uri(String),
    /// A non-terminal record's replacement: the next name to ask.
    Next(Name),
}

/// What [`select`] made of one name's NAPTR records.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Selected {
    /// The usable records for the service, in (order, preference) order:
    /// each one's index in the input and what it says.
    pub entries: Vec<(usize, Entry)>,
    /// Records for the service that cannot be used, in the same order.
    pub errors: Vec<RecordError>,
    /// Records of other services, protocols or flags, ignored.
    pub ignored: usize,
    /// Records for the service with a higher order than the first usable
    /// one, not considered (RFC 3403 §4.1).
    pub other_order: usize,
}

/// U-NAPTR processing of one name's NAPTR records (RFC 4848, RFC 3403) for
/// `service`: only records whose application service is `ALTO` and whose
/// protocols include the one asked, with flags `U` (terminal) or empty
/// (non-terminal), in (order, preference) order, ties in the order given.
/// `Err` only for more than [`MAX_RECORDS`] records.
pub fn select(records: &[&NAPTR], service: &Service, loopback_http: bool) -> Result<Selected, RecordError> {
    if records.len() > MAX_RECORDS {
        return Err(RecordError::TooMany { count: records.len(), max: MAX_RECORDS });
    }
    let mut relevant: Vec<(usize, &NAPTR)> =
        records.iter().copied().enumerate().filter(|(_, n)| is_for(n, service)).collect();
    let ignored = records.len() - relevant.len();
    // Stable: equal (order, preference) keep the order DNS gave them.
    relevant.sort_by_key(|(_, n)| (n.order, n.preference));
    let results: Vec<(usize, u16, Result<Entry, RecordError>)> = relevant
        .into_iter()
        .map(|(index, n)| {
            let entry = if is_terminal(n) { uri_of(n, service, loopback_http).map(Entry::Uri) } else { next_of(n) };
            (index, n.order, entry)
        })
        .collect();
    // RFC 3403 §4.1: "once a match is found the client MUST NOT consider
    // records with a different Order but they MAY process records with the
    // same Order but different Preferences". A match is the first record (in
    // sorted order) for the service whose rule yields a usable result (RFC
    // 3402 §3.3 steps 3-4: a rule that yields nothing is passed over).
    let matched = results.iter().find(|(.., e)| e.is_ok()).map(|(_, order, _)| *order);
    let mut out = Selected { ignored, ..Selected::default() };
    for (index, order, entry) in results {
        if matched.is_some_and(|m| order > m) {
            out.other_order += 1;
            continue;
        }
        match entry {
            Ok(e) => out.entries.push((index, e)),
            Err(e) => out.errors.push(e),
        }
    }
    Ok(out)
}

/// Whether a record is for `service` (RFC 4848 §4.5 service-parms
/// `app-service *(":" app-protocol)`, "considered case-insensitive"): service
/// `ALTO` with the protocol asked among its protocols (RFC 3958 §2.2.2 and
/// Appendix A.1: a match is a SERVICE field "that includes the tags for the
/// desired application service and a supported application protocol", for
/// non-terminal records too), and flags `U` (terminal) or empty
/// (non-terminal). `S` and `A` records are U-NAPTR's too (RFC 4848 §2.1) but
/// lead to a host, not to the URI ALTO discovery returns (RFC 7286 §3.2,
/// RFC 8686 §3.4), so they are ignored like every other flag.
fn is_for(n: &NAPTR, service: &Service) -> bool {
    let mut parts = n.services.split(|&b| b == b':');
    if !parts.next().is_some_and(|s| s.eq_ignore_ascii_case(service.app().as_bytes())) {
        return false;
    }
    let asked = parts.any(|p| p.eq_ignore_ascii_case(service.protocol().as_bytes()));
    asked && (is_terminal(n) || n.flags.is_empty())
}

/// Flags `U`: terminal, the regexp yields a URI.
fn is_terminal(n: &NAPTR) -> bool {
    n.flags.eq_ignore_ascii_case(b"U")
}

fn uri_of(n: &NAPTR, service: &Service, loopback_http: bool) -> Result<String, RecordError> {
    if !n.replacement.is_root() {
        return Err(RecordError::Replacement { replacement: n.replacement.to_ascii().chars().take(80).collect() });
    }
    let uri = apply_regexp(&n.regexp)?;
    check_uri_for(&uri, service, loopback_http)?;
    Ok(uri)
}

/// A non-terminal record's next name: a replacement and no regexp (RFC 3403
/// §4.1: the two fields are mutually exclusive).
fn next_of(n: &NAPTR) -> Result<Entry, RecordError> {
    if !n.regexp.is_empty() {
        return Err(RecordError::NonTerminal {
            reason: "has a regexp (a non-terminal record needs only a replacement)",
        });
    }
    if n.replacement.is_root() {
        return Err(RecordError::NonTerminal { reason: "has no replacement name to go on with" });
    }
    let mut next = n.replacement.to_lowercase();
    next.set_fqdn(true);
    Ok(Entry::Next(next))
}

/// The URI a U-NAPTR regexp field yields (RFC 3402 substitution expression
/// `delim ere delim repl delim flags`). Only a match of the whole string
/// (`.*`, `^.*$`, `^.*`, `.*$`) is supported, which makes the result the
/// `repl` part whatever the input; `repl` may escape the delimiter and
/// backslash (`\!`, `\\`) but has no back-references. Flags: none or `i`.
pub fn apply_regexp(regexp: &[u8]) -> Result<String, RecordError> {
    let err = |reason| RecordError::Regexp { regexp: quote(regexp), reason };
    if regexp.is_empty() {
        return Err(err("empty, where a U record needs one"));
    }
    let text = std::str::from_utf8(regexp).map_err(|_| err("not UTF-8"))?;
    let mut chars = text.chars();
    let delim = chars.next().ok_or_else(|| err("empty, where a U record needs one"))?;
    // RFC 3402: any character but a non-zero digit, a flag or a backslash.
    if !delim.is_ascii_punctuation() || delim == '\\' {
        return Err(err("the delimiter must be a punctuation character such as '!'"));
    }
    // Split on unescaped delimiters, undoing `\<delim>` and `\\` as we go.
    let mut fields: Vec<String> = vec![String::new()];
    while let Some(c) = chars.next() {
        let field = fields.last_mut().ok_or_else(|| err("malformed"))?;
        match c {
            '\\' => match chars.next() {
                Some(e) if e == delim || e == '\\' => {
                    field.push('\\');
                    field.push(e);
                }
                Some(d) if d.is_ascii_digit() => return Err(err("back-references are not supported")),
                Some(_) => return Err(err("unsupported escape")),
                None => return Err(err("ends in a backslash")),
            },
            c if c == delim => fields.push(String::new()),
            c => field.push(c),
        }
    }
    let [ere, repl, flags] = <[String; 3]>::try_from(fields).map_err(|_| err("needs the form !ere!replacement!"))?;
    if !flags.is_empty() && flags != "i" {
        return Err(err("unknown flags after the last delimiter (only 'i')"));
    }
    if !matches!(ere.as_str(), ".*" | "^.*$" | "^.*" | ".*$") {
        return Err(err("only a match of the whole string (^.*$) is supported"));
    }
    // Undo the escapes kept above.
    let mut uri = String::with_capacity(repl.len());
    let mut rest = repl.chars();
    while let Some(c) = rest.next() {
        if c == '\\' {
            if let Some(e) = rest.next() {
                uri.push(e);
            }
        } else {
            uri.push(c);
        }
    }
    if uri.is_empty() {
        return Err(err("the replacement is empty"));
    }
    Ok(uri)
}

/// An IRD URI for `ALTO:https`: `https://host[:port][/path…]`, printable
/// ASCII, no user info (which would let `https://good.example@evil.example/`
/// pass for the former).
pub fn check_uri(uri: &str) -> Result<(), RecordError> {
    check_uri_for(uri, &Service::alto_https(), false)
}

/// A URI found for `service`. For `http` and `https` (ALTO's IRDs) its
/// scheme is the service's protocol (`https://` for `ALTO:https`, `http://`
/// for `ALTO:http`), with a host and no user info; with `loopback_http`,
/// `http://` to a loopback IP literal is accepted for `ALTO:https` too. For
/// any other protocol it is an absolute URI (RFC 3986 `scheme ":" …`).
pub fn check_uri_for(uri: &str, service: &Service, loopback_http: bool) -> Result<(), RecordError> {
    let err = |reason: &str| RecordError::Uri { uri: quote(uri.as_bytes()), reason: reason.to_owned() };
    if uri.len() > MAX_URI {
        return Err(err("too long"));
    }
    if !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err("has spaces, control or non-ASCII characters"));
    }
    if !matches!(service.protocol(), "http" | "https") {
        let scheme = uri.split_once(':').map(|(s, _)| s.as_bytes()).unwrap_or_default();
        let is_scheme = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
        return if is_scheme { Ok(()) } else { Err(err("not an absolute URI")) };
    }
    let wrong_scheme = format!("not {} (the service is {service})", service.protocol());
    let parsed: http::Uri = uri.parse().map_err(|_| err("not a URI"))?;
    let Some(authority) = parsed.authority() else {
        return Err(err(if parsed.scheme().is_some() { "has no host" } else { &wrong_scheme }));
    };
    let scheme = parsed.scheme_str().unwrap_or_default();
    let loopback = || {
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    };
    if service.protocol() == "https" && scheme.eq_ignore_ascii_case("http") && loopback_http {
        if !loopback() {
            return Err(err("http is allowed only to a loopback address (--allow-loopback-http)"));
        }
    } else if !scheme.eq_ignore_ascii_case(service.protocol()) {
        return Err(err(&wrong_scheme));
    }
    if authority.as_str().contains('@') {
        return Err(err("has user info"));
    }
    if authority.host().is_empty() {
        return Err(err("has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naptr(order: u16, pref: u16, flags: &str, service: &str, regexp: &str) -> NAPTR {
        NAPTR::new(
            order,
            pref,
            flags.as_bytes().into(),
            service.as_bytes().into(),
            regexp.as_bytes().into(),
            Name::root(),
        )
    }

    #[test]
    fn ipv4_reverse_names_are_32_24_16_8() {
        assert_eq!(
            reverse_names("198.51.100.7".parse().unwrap()),
            ["7.100.51.198.in-addr.arpa.", "100.51.198.in-addr.arpa.", "51.198.in-addr.arpa.", "198.in-addr.arpa."]
        );
    }

    #[test]
    fn ipv6_reverse_names_are_128_64_56_48_40_32_nibbles() {
        let names = reverse_names("2001:db8:1:2:3:4:5:6".parse().unwrap());
        assert_eq!(
            names,
            [
                "6.0.0.0.5.0.0.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
                "2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
                "0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
                "1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
                "0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
                "8.b.d.0.1.0.0.2.ip6.arpa.",
            ]
        );
        assert!(names.iter().all(|n| Name::from_ascii(n).is_ok()));
    }

    #[test]
    fn a_prefix_asks_only_the_names_no_longer_than_it() {
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            reverse_names_within(v4, 24),
            ["100.51.198.in-addr.arpa.", "51.198.in-addr.arpa.", "198.in-addr.arpa."]
        );
        assert_eq!(reverse_names_within(v4, 20), ["51.198.in-addr.arpa.", "198.in-addr.arpa."]);
        assert!(reverse_names_within(v4, 7).is_empty(), "RFC 8686 §3.2: shorter than /8 is unsupported");
        assert_eq!(reverse_names_within(v4, 8), ["198.in-addr.arpa."]);
        assert_eq!(reverse_names_within(v4, 128), reverse_names(v4));
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(reverse_names_within(v6, 64).len(), 5);
        assert_eq!(reverse_names_within(v6, 47)[0], "0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "a /47 starts at the /40");
        assert!(reverse_names_within(v6, 31).is_empty(), "RFC 8686 §3.2: shorter than /32 is unsupported");
        assert_eq!(reverse_names_within(v6, 64)[0], "2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.");
    }

    #[test]
    fn ipv4_mapped_ipv6_uses_the_ipv4_tree() {
        assert_eq!(reverse_names("::ffff:192.0.2.1".parse().unwrap())[0], "1.2.0.192.in-addr.arpa.");
    }

    #[test]
    fn whole_string_regexps_yield_the_replacement() {
        for re in [
            "!^.*$!https://alto.example/ird!",
            "!.*!https://alto.example/ird!",
            "|^.*$|https://alto.example/ird|",
            "!^.*$!https://alto.example/ird!i",
        ] {
            assert_eq!(apply_regexp(re.as_bytes()).unwrap(), "https://alto.example/ird", "{re}");
        }
        // An escaped delimiter and backslash are literal.
        assert_eq!(apply_regexp(br"!^.*$!https://a.example/x\!y\\z!").unwrap(), r"https://a.example/x!y\z");
    }

    #[test]
    fn other_regexps_are_refused_with_a_reason() {
        for (re, why) in [
            ("", "empty"),
            ("!^.*$!https://a.example/!x", "flags"),
            ("!^(.*)$!https://a.example/\\1!", "back-references"),
            ("!^foo$!https://a.example/!", "whole string"),
            ("!^.*$!https://a.example/", "form"),
            ("!^.*$!https://a.example/!!", "form"),
            ("a^.*$ahttps://a.example/a", "delimiter"),
            ("!^.*$!!", "replacement is empty"),
            ("!^.*$!https://a.example/\\", "backslash"),
        ] {
            match apply_regexp(re.as_bytes()) {
                Err(RecordError::Regexp { reason, .. }) => assert!(reason.contains(why), "{re}: {reason}"),
                other => panic!("{re}: {other:?}"),
            }
        }
        assert!(matches!(apply_regexp(b"!^.*$!https://\xff/!"), Err(RecordError::Regexp { reason: "not UTF-8", .. })));
    }

    #[test]
    fn only_https_uris_with_a_host_are_accepted() {
        assert!(check_uri("https://alto.example/ird").is_ok());
        assert!(check_uri("HTTPS://[2001:db8::1]:8443/ird?x=1").is_ok());
        for (uri, why) in [
            ("http://alto.example/ird", "not https"),
            ("ftp://alto.example/ird", "not https"),
            ("https://good.example@evil.example/", "user info"),
            ("https:///ird", "URI"),
            ("https://alto.example/ i", "spaces"),
            ("alto.example/ird", "not a URI"),
            ("/ird", "not https"),
        ] {
            match check_uri(uri) {
                Err(RecordError::Uri { reason, .. }) => assert!(reason.contains(why), "{uri}: {reason}"),
                other => panic!("{uri}: {other:?}"),
            }
        }
    }

    #[test]
    fn loopback_http_is_accepted_only_when_allowed_and_only_to_loopback_literals() {
        for uri in ["http://127.0.0.1:8080/directory", "http://[::1]:80/directory", "http://127.9.9.9/"] {
            assert!(check_uri_for(uri, &Service::alto_https(), true).is_ok(), "{uri}");
            assert!(matches!(check_uri(uri), Err(RecordError::Uri { reason, .. }) if reason.contains("not https")));
        }
        for uri in ["http://10.0.0.1/directory", "http://localhost/directory", "http://alto.example/"] {
            match check_uri_for(uri, &Service::alto_https(), true) {
                Err(RecordError::Uri { reason, .. }) => assert!(reason.contains("loopback"), "{uri}: {reason}"),
                other => panic!("{uri}: {other:?}"),
            }
        }
        assert!(check_uri_for("https://alto.example/ird", &Service::alto_https(), true).is_ok());
        assert!(check_uri_for("http://user@127.0.0.1/", &Service::alto_https(), true).is_err());
    }

    fn https(records: &[&NAPTR]) -> Result<Selected, RecordError> {
        select(records, &Service::alto_https(), false)
    }

    fn uris(s: &Selected) -> Vec<(usize, &str)> {
        s.entries
            .iter()
            .filter_map(|(i, e)| match e {
                Entry::Uri(u) => Some((*i, u.as_str())),
                Entry::Next(_) => None,
            })
            .collect()
    }

    #[test]
    fn select_keeps_the_lowest_usable_order_by_preference() {
        let a = naptr(20, 1, "U", "ALTO:https", "!.*!https://a.example/!");
        let b = naptr(10, 20, "U", "ALTO:https", "!.*!https://b.example/!");
        let c = naptr(10, 10, "u", "alto:HTTPS", "!.*!https://c.example/!");
        let d = naptr(10, 20, "U", "ALTO:https", "!.*!https://d.example/!");
        let s = https(&[&a, &b, &c, &d]).unwrap();
        // Equal (order, preference) keep the order given (b before d); RFC
        // 3403 §4.1: the order-20 record is not considered once order 10 matched.
        assert_eq!(uris(&s), [(2, "https://c.example/"), (1, "https://b.example/"), (3, "https://d.example/")]);
        assert_eq!((s.other_order, s.ignored), (1, 0));
        assert!(s.errors.is_empty());
        // A record that yields nothing usable is no match: the next order answers.
        let bad = naptr(5, 1, "U", "ALTO:https", "!.*!http://bad.example/!");
        let s = https(&[&a, &bad]).unwrap();
        assert_eq!(uris(&s), [(0, "https://a.example/")]);
        assert!(matches!(&s.errors[..], [RecordError::Uri { .. }]), "{s:?}");
    }

    #[test]
    fn select_ignores_other_services_protocols_and_flags() {
        let records = [
            naptr(1, 1, "U", "ALTO:http", "!.*!https://a.example/!"),
            naptr(1, 1, "S", "ALTO:https", "!.*!https://b.example/!"),
            naptr(1, 1, "U", "ALTOX:https", "!.*!https://c.example/!"),
            naptr(1, 1, "U", "E2U+sip", "!.*!https://d.example/!"),
            naptr(1, 1, "U", "ALTO", "!.*!https://e.example/!"),
            naptr(1, 1, "", "SIP+D2U", ""),
            naptr(1, 1, "", "ALTO:http", ""),
            // RFC 3958 §2.2.2: a non-terminal record matches only with the protocol too.
            naptr(1, 1, "", "ALTO", ""),
            naptr(1, 1, "A", "ALTO:https", ""),
        ];
        let refs: Vec<&NAPTR> = records.iter().collect();
        assert_eq!(https(&refs), Ok(Selected { ignored: 9, ..Selected::default() }));
        // RFC 3958 service-parms: a service may list several protocols.
        let multi = naptr(1, 1, "U", "ALTO:http:https", "!.*!https://e.example/!");
        assert_eq!(uris(&https(&[&multi]).unwrap()), [(0, "https://e.example/")]);
    }

    #[test]
    fn alto_http_is_its_own_service_with_http_uris() {
        let http = naptr(1, 1, "U", "alto:HTTP", "!.*!http://alto.example/ird!");
        let tls = naptr(1, 2, "U", "ALTO:https", "!.*!https://alto.example/ird!");
        let s = select(&[&http, &tls], &Service::alto_http(), false).unwrap();
        assert_eq!((uris(&s), s.ignored), (vec![(0, "http://alto.example/ird")], 1));
        assert_eq!(uris(&https(&[&http, &tls]).unwrap()), [(1, "https://alto.example/ird")]);
        // The URI's scheme is the protocol asked.
        let wrong = naptr(1, 1, "U", "ALTO:http", "!.*!https://alto.example/ird!");
        let s = select(&[&wrong], &Service::alto_http(), false).unwrap();
        assert!(matches!(&s.errors[..], [RecordError::Uri { reason, .. }] if reason.contains("not http")), "{s:?}");
        assert_eq!("alto:HTTP".parse::<Service>(), Ok(Service::alto_http()));
        assert_eq!("ALTO:https".parse::<Service>(), Ok(Service::alto_https()));
        for bad in ["ALTO", "ALTO:", ":https", "ALTO:https:http", ""] {
            assert!(bad.parse::<Service>().is_err(), "{bad}");
        }
        // Any other service parameter of the grammar is one (RFC 8686 §3.1), but not ALTO's.
        for other in ["ALTO:ftp", "X:https"] {
            assert!(!other.parse::<Service>().expect(other).is_alto(), "{other}");
        }
        assert_eq!(Service::alto_http().to_string(), "ALTO:http");
    }

    #[test]
    fn non_terminal_records_name_the_next_name() {
        let mut next = naptr(5, 1, "", "ALTO:https", "");
        next.replacement = Name::from_ascii("Alto.ISP.example.").unwrap();
        let mut multi = naptr(5, 2, "", "alto:http:HTTPS", "");
        multi.replacement = Name::from_ascii("other.example.").unwrap();
        let terminal = naptr(5, 3, "U", "ALTO:https", "!.*!https://t.example/!");
        let s = https(&[&terminal, &multi, &next]).unwrap();
        let names: Vec<(usize, String)> = s
            .entries
            .iter()
            .map(|(i, e)| match e {
                Entry::Next(n) => (*i, n.to_ascii()),
                Entry::Uri(u) => (*i, u.clone()),
            })
            .collect();
        assert_eq!(
            names,
            [(2, "alto.isp.example.".into()), (1, "other.example.".into()), (0, "https://t.example/".to_string())]
        );
        let with_regexp = {
            let mut r = naptr(1, 1, "", "ALTO:https", "!.*!https://x.example/!");
            r.replacement = Name::from_ascii("x.example.").unwrap();
            r
        };
        let without_replacement = naptr(1, 1, "", "ALTO:https", "");
        let s = https(&[&with_regexp, &without_replacement]).unwrap();
        assert!(s.entries.is_empty());
        assert!(matches!(&s.errors[..], [RecordError::NonTerminal { .. }, RecordError::NonTerminal { .. }]), "{s:?}");
    }

    #[test]
    fn select_keeps_unusable_records_errors_in_order() {
        let bad = naptr(1, 1, "U", "ALTO:https", "!^foo!https://a.example/!");
        let good = naptr(2, 1, "U", "ALTO:https", "!.*!https://b.example/!");
        let s = https(&[&bad, &good]).unwrap();
        assert_eq!(uris(&s), [(1, "https://b.example/")]);
        assert!(matches!(&s.errors[..], [RecordError::Regexp { .. }]));
        let http = naptr(2, 1, "U", "ALTO:https", "!.*!http://b.example/!");
        let s = https(&[&http, &bad]).unwrap();
        assert!(matches!(&s.errors[..], [RecordError::Regexp { .. }, RecordError::Uri { .. }]), "{s:?}");
        let mut with_replacement = naptr(1, 1, "U", "ALTO:https", "!.*!https://b.example/!");
        with_replacement.replacement = Name::from_ascii("alto.example.").unwrap();
        assert!(matches!(&https(&[&with_replacement]).unwrap().errors[..], [RecordError::Replacement { .. }]));
    }

    #[test]
    fn select_refuses_more_than_max_records() {
        let r = naptr(1, 1, "U", "ALTO:https", "!.*!https://a.example/!");
        let many = vec![&r; MAX_RECORDS + 1];
        assert_eq!(https(&many), Err(RecordError::TooMany { count: MAX_RECORDS + 1, max: MAX_RECORDS }));
        assert!(https(&many[..MAX_RECORDS]).is_ok());
    }

    #[test]
    fn special_purpose_addresses_are_classed() {
        use SpecialAddress::*;
        for (ip, kind) in [
            ("0.1.2.3", Some(Unspecified)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("192.168.1.1", Some(Private)),
            ("100.64.0.1", Some(Shared)),
            ("100.128.0.1", None),
            ("127.0.0.1", Some(Loopback)),
            ("169.254.1.1", Some(LinkLocal)),
            ("192.0.0.9", Some(Reserved)),
            ("198.18.0.1", Some(Benchmarking)),
            ("224.0.0.1", Some(Multicast)),
            ("255.255.255.255", Some(Reserved)),
            ("198.51.100.7", None),
            ("203.0.113.9", None),
            ("8.8.8.8", None),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("fd00::1", Some(UniqueLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("ff02::1", Some(Multicast)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("2001:db8::1", None),
            ("2a00::1", None),
        ] {
            assert_eq!(special_purpose(ip.parse().unwrap()), kind, "{ip}");
        }
    }

    #[test]
    fn domains_become_fully_qualified_names() {
        assert_eq!(domain_name("isp.example").unwrap(), "isp.example.");
        assert_eq!(domain_name("ISP.example.").unwrap(), "isp.example.");
        assert!(matches!(domain_name("."), Err(DiscoverError::BadDomain { .. })));
        assert!(matches!(domain_name("a..b"), Err(DiscoverError::BadDomain { .. })));
    }

    #[test]
    fn errors_name_every_name_tried() {
        let e = DiscoverError::NotFound {
            tried: vec![
                Attempt { name: "1.2.0.192.in-addr.arpa.".into(), outcome: Outcome::NoRecord, retry: false },
                Attempt {
                    name: "2.0.192.in-addr.arpa.".into(),
                    outcome: Outcome::Failed { reason: "timed out".into(), temporary: true },
                    retry: true,
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "no ALTO server found (tried 1.2.0.192.in-addr.arpa.: no record; 2.0.192.in-addr.arpa. (again): lookup failed (temporarily): timed out)"
        );
    }
}
