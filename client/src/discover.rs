//! ALTO server discovery through DNS (DESIGN §6b): the URI of the information
//! resource directory (IRD) of the ALTO server responsible for an address
//! (RFC 8686, cross-domain discovery) or for a domain (RFC 7286).
//!
//! Both are U-NAPTR lookups (RFC 4848) for the service `ALTO:https`. For an
//! address, the names asked are its reverse-tree names, longest prefix first:
//! IPv4 /32, /24, /16, /8 under `in-addr.arpa.`, IPv6 /128, /64, /56, /48, /40,
//! /32 (nibbles) under `ip6.arpa.` (RFC 8686 §3.3, Table 1). The first name
//! with an `ALTO:https` record wins and nothing shorter is asked. For a
//! domain, the name itself is asked.
//! [`Discoverer::discover`] asks the address's names first and the domain only
//! if none of them answered: a record for the address is the more specific
//! statement about who is responsible for it.
//!
//! **DNS is never a trust root.** The answers are not authenticated (no DNSSEC
//! validation here), so a discovered URI only says *where to look*. What is
//! found there is trusted only when it verifies against a key the client was
//! configured with (DESIGN §6a); discovery never adds a trusted key.
//!
//! What a name's answer is, in the order the checks run:
//! 1. NXDOMAIN or no NAPTR records: nothing here, ask the next name.
//! 2. A lookup that fails (timeout, SERVFAIL, refused): noted, ask the next
//!    name; each lookup is bounded by the timeout ([`LOOKUP_TIMEOUT`]).
//! 3. More than [`MAX_RECORDS`] NAPTR records: refused.
//! 4. Only records whose service is `ALTO` with protocol `https` and whose
//!    flags are `U` count; others are ignored (none left: ask the next name).
//! 5. Those are taken in (order, preference) order; the first whose regexp
//!    yields an `https://` URI is the answer. If all of them are unusable, the
//!    name is refused: the reason is noted and the next name is asked (RFC 8686
//!    §3.4–3.5: lookups go on "until one produces a usable result"). A walk that
//!    ends without an answer reports the first refusal, naming the name.
//!
//! **Loopback test option.** [`Discoverer::allow_loopback_http`] (off by
//! default; `altocast tracker --allow-loopback-http`) also accepts `http://`
//! URIs whose host is a loopback IP literal (`127.0.0.0/8`, `[::1]`), so a
//! whole multi-domain deployment can run on one machine without TLS
//! certificates. Nothing else changes: no other `http://` URI is accepted.
//!
//! Only the regexp form U-NAPTR uses is supported: a match of the whole
//! string (`.*`, `^.*$`) replaced by a URI with no back-references, such as
//! `!^.*$!https://alto.example/ird!` (any delimiter, optional `i` flag).
//! Non-terminal NAPTR records (empty flags) are not followed.
//!
//! Key types: [`Discoverer`], [`Discovery`], [`DiscoverError`]. The pure
//! steps ([`reverse_names`], [`apply_regexp`], [`select`]) are public.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_resolver::{
    Resolver, TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
    proto::rr::{Name, RData, RecordType, rdata::NAPTR},
};

/// The U-NAPTR application service and protocol asked for.
pub const SERVICE: &str = "ALTO:https";

/// How long one name's lookup may take, retries included. Reverse zones are
/// often lame, so a name that does not answer must not stall the walk.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// NAPTR records considered at one name; a name with more is refused. Real
/// ALTO deployments publish one or two; the cap bounds the work a hostile
/// zone can cause.
pub const MAX_RECORDS: usize = 32;

/// Longest URI accepted (a NAPTR regexp is at most 255 bytes anyway).
const MAX_URI: usize = 255;

/// What discovery found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// The IRD URI (always `https://`).
    pub uri: String,
    /// The name whose record gave it, e.g. `100.51.198.in-addr.arpa.`.
    pub found_at: String,
    /// Every name asked, in order, the last being `found_at`.
    pub tried: Vec<Attempt>,
    /// The TTL of the record used: how long the answer may be cached.
    pub ttl: Duration,
}

/// One name asked and what it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The fully qualified name asked.
    pub name: String,
    /// What it answered.
    pub outcome: Outcome,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.outcome)
    }
}

/// What one name answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An `ALTO:https` record with this URI: the walk stops here.
    Found {
        /// The URI.
        uri: String,
    },
    /// The name does not exist or has no NAPTR records.
    NoRecord,
    /// NAPTR records, none of them `ALTO:https` with flags `U`.
    NoAltoRecord {
        /// How many were ignored.
        ignored: usize,
    },
    /// `ALTO:https` records that cannot be used: noted, and the next name is asked.
    Refused {
        /// Why (the first unusable record's reason).
        reason: RecordError,
    },
    /// The lookup failed (timeout, server failure); the walk went on.
    Failed {
        /// What the resolver said.
        reason: String,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Found { uri } => write!(f, "found {uri}"),
            Outcome::NoRecord => f.write_str("no record"),
            Outcome::NoAltoRecord { ignored } => write!(f, "no {SERVICE} record ({ignored} other NAPTR ignored)"),
            Outcome::Refused { reason } => write!(f, "refused: {reason}"),
            Outcome::Failed { reason } => write!(f, "lookup failed: {reason}"),
        }
    }
}

/// Why an `ALTO:https` NAPTR record cannot be used.
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
    /// The regexp field is empty, malformed, or not of the supported
    /// whole-string form.
    #[error("regexp {regexp}: {reason}")]
    Regexp {
        /// The field, quoted and cut to 80 characters.
        regexp: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The regexp yields something that is not a usable `https://` URI.
    #[error("URI {uri}: {reason}")]
    Uri {
        /// The URI, quoted and cut to 80 characters.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
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
    /// No name asked has a usable `ALTO:https` record.
    #[error("no ALTO server found (tried {})", list(tried))]
    NotFound {
        /// Every name asked and its outcome.
        tried: Vec<Attempt>,
    },
    /// A name has `ALTO:https` records, and none of them can be used.
    #[error("{name}: {SERVICE} record refused: {reason}")]
    Refused {
        /// The name.
        name: String,
        /// Why.
        reason: RecordError,
        /// Every name asked, the last being `name`.
        tried: Vec<Attempt>,
    },
}

impl DiscoverError {
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

/// Asks DNS for ALTO servers. Cheap to share; lookups are cached for their TTL.
#[derive(Debug, Clone)]
pub struct Discoverer {
    resolver: TokioResolver,
    timeout: Duration,
    loopback_http: bool,
}

impl Discoverer {
    /// A discoverer using the system resolver configuration (`None`), or only
    /// the nameserver at `dns` over UDP and TCP, with [`LOOKUP_TIMEOUT`].
    pub fn new(dns: Option<SocketAddr>) -> Result<Discoverer, DiscoverError> {
        Self::with_timeout(dns, LOOKUP_TIMEOUT)
    }

    /// Like [`Discoverer::new`], each name's lookup bounded by `timeout`.
    pub fn with_timeout(dns: Option<SocketAddr>, timeout: Duration) -> Result<Discoverer, DiscoverError> {
        let timeout = timeout.max(Duration::from_millis(100));
        let mut builder = match dns {
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
        let opts = builder.options_mut();
        // Two tries within the bound, so one lost UDP datagram is not a miss.
        opts.timeout = timeout / 2;
        opts.attempts = 2;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.cache_size = 256;
        let resolver = builder.build().map_err(|e| DiscoverError::Resolver { reason: e.to_string() })?;
        Ok(Discoverer { resolver, timeout, loopback_http: false })
    }

    /// Also accept `http://` IRD URIs whose host is a loopback IP literal
    /// (tests and single-machine demos; see the module doc). Off by default.
    pub fn allow_loopback_http(mut self, allow: bool) -> Discoverer {
        self.loopback_http = allow;
        self
    }

    /// RFC 8686: the IRD URI for `ip`, from its reverse-tree names, longest
    /// prefix first. An IPv4-mapped IPv6 address is treated as IPv4.
    pub async fn by_address(&self, ip: IpAddr) -> Result<Discovery, DiscoverError> {
        self.discover(Some(ip), None).await
    }

    /// RFC 7286: the IRD URI for `domain` (a trailing dot is optional).
    pub async fn by_domain(&self, domain: &str) -> Result<Discovery, DiscoverError> {
        self.discover(None, Some(domain)).await
    }

    /// The address's reverse names, then the domain: the first name with an
    /// `ALTO:https` record wins (what `altocast discover` runs).
    pub async fn discover(&self, ip: Option<IpAddr>, domain: Option<&str>) -> Result<Discovery, DiscoverError> {
        let mut names = ip.map(reverse_names).unwrap_or_default();
        if let Some(d) = domain {
            names.push(domain_name(d)?);
        }
        if names.is_empty() {
            return Err(DiscoverError::NothingToAsk);
        }
        let mut tried = Vec::with_capacity(names.len());
        let mut refused = None;
        for name in names {
            let (outcome, ttl) = self.lookup_name(&name).await;
            let found = match &outcome {
                Outcome::Found { uri } => Some(uri.clone()),
                Outcome::Refused { reason } => {
                    refused.get_or_insert_with(|| (name.clone(), reason.clone()));
                    None
                }
                _ => None,
            };
            tried.push(Attempt { name: name.clone(), outcome });
            if let Some(uri) = found {
                return Ok(Discovery { uri, found_at: name, tried, ttl });
            }
        }
        match refused {
            Some((name, reason)) => Err(DiscoverError::Refused { name, reason, tried }),
            None => Err(DiscoverError::NotFound { tried }),
        }
    }

    /// One name's U-NAPTR answer (one DNS lookup, bounded by the timeout),
    /// and how long it may be cached: the TTL of the record used, the zone's
    /// negative TTL (RFC 2308) for "no record", else zero: the
    /// step [`Discoverer::discover`] repeats, for callers that cache names.
    pub async fn lookup_name(&self, name: &str) -> (Outcome, Duration) {
        let none = Duration::ZERO;
        let fqdn = match Name::from_ascii(name) {
            Ok(n) => n,
            Err(e) => return (Outcome::Failed { reason: format!("not a DNS name: {e}") }, none),
        };
        let lookup = match tokio::time::timeout(self.timeout, self.resolver.lookup(fqdn, RecordType::NAPTR)).await {
            Err(_) => {
                return (Outcome::Failed { reason: format!("timed out after {} ms", self.timeout.as_millis()) }, none);
            }
            // RFC 2308: "no such record" may be cached for the zone's negative TTL.
            Ok(Err(hickory_resolver::net::NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(nr)))) => {
                return (Outcome::NoRecord, Duration::from_secs(nr.negative_ttl.map_or(0, u64::from)));
            }
            Ok(Err(e)) if e.is_no_records_found() => return (Outcome::NoRecord, none),
            Ok(Err(e)) => return (Outcome::Failed { reason: e.to_string() }, none),
            Ok(Ok(lookup)) => lookup,
        };
        // CNAMEs (RFC 2317 classless reverse delegation) are followed by the
        // resolver; only the NAPTR records of the answer count.
        let (naptrs, ttls): (Vec<&NAPTR>, Vec<u32>) = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::NAPTR(n) => Some((n, r.ttl)),
                _ => None,
            })
            .unzip();
        if naptrs.is_empty() {
            return (Outcome::NoRecord, none);
        }
        match select_with(&naptrs, self.loopback_http) {
            Ok(Selected::Found { uri, index }) => {
                let ttl = ttls.get(index).copied().unwrap_or(0);
                (Outcome::Found { uri }, Duration::from_secs(u64::from(ttl)))
            }
            Ok(Selected::NoAltoRecord { ignored }) => (Outcome::NoAltoRecord { ignored }, none),
            Err(reason) => (Outcome::Refused { reason }, none),
        }
    }
}

/// The reverse-tree names RFC 8686 asks for `ip`, longest prefix first:
/// IPv4 /32, /24, /16, /8; IPv6 /128, /64, /56, /48, /40, /32. An IPv4-mapped
/// IPv6 address (`::ffff:a.b.c.d`) gives the IPv4 names.
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

/// What [`select`] picked from one name's NAPTR records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selected {
    /// The URI of the first usable `ALTO:https` record, and that record's
    /// index in the input.
    Found {
        /// The URI.
        uri: String,
        /// The record's index.
        index: usize,
    },
    /// No record is `ALTO:https` with flags `U`.
    NoAltoRecord {
        /// How many records were ignored.
        ignored: usize,
    },
}

/// U-NAPTR processing of one name's NAPTR records (RFC 4848, RFC 3403): only
/// `ALTO:https` records with flags `U`, in (order, preference) order; the
/// first whose regexp gives a usable URI wins. All unusable: the first one's
/// error.
pub fn select(records: &[&NAPTR]) -> Result<Selected, RecordError> {
    select_with(records, false)
}

/// [`select`], also accepting loopback `http://` URIs when `loopback_http`
/// (see [`Discoverer::allow_loopback_http`]).
pub fn select_with(records: &[&NAPTR], loopback_http: bool) -> Result<Selected, RecordError> {
    if records.len() > MAX_RECORDS {
        return Err(RecordError::TooMany { count: records.len(), max: MAX_RECORDS });
    }
    let mut alto: Vec<(usize, &NAPTR)> =
        records.iter().copied().enumerate().filter(|(_, n)| is_alto_https(n) && is_terminal_uri(n)).collect();
    if alto.is_empty() {
        return Ok(Selected::NoAltoRecord { ignored: records.len() });
    }
    alto.sort_by_key(|(_, n)| (n.order, n.preference));
    let mut first_error = None;
    for (index, n) in alto {
        match uri_of(n, loopback_http) {
            Ok(uri) => return Ok(Selected::Found { uri, index }),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(RecordError::Regexp { regexp: String::new(), reason: "no usable record" }))
}

/// The service field names application service `ALTO` and, among its
/// protocols, `https` (RFC 4848 `service-parms`: `ALTO:https`, or e.g.
/// `ALTO:http:https`), case-insensitively.
fn is_alto_https(n: &NAPTR) -> bool {
    let mut parts = n.services.split(|&b| b == b':');
    parts.next().is_some_and(|s| s.eq_ignore_ascii_case(b"ALTO")) && parts.any(|p| p.eq_ignore_ascii_case(b"https"))
}

/// Flags `U`: terminal, the regexp yields a URI.
fn is_terminal_uri(n: &NAPTR) -> bool {
    n.flags.eq_ignore_ascii_case(b"U")
}

fn uri_of(n: &NAPTR, loopback_http: bool) -> Result<String, RecordError> {
    if !n.replacement.is_root() {
        return Err(RecordError::Replacement { replacement: n.replacement.to_ascii().chars().take(80).collect() });
    }
    let uri = apply_regexp(&n.regexp)?;
    check_uri_with(&uri, loopback_http)?;
    Ok(uri)
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

/// An IRD URI: `https://host[:port][/path…]`, printable ASCII, no user info
/// (which would let `https://good.example@evil.example/` pass for the former).
/// `http://` is refused: the service asked for is `ALTO:https`.
pub fn check_uri(uri: &str) -> Result<(), RecordError> {
    check_uri_with(uri, false)
}

/// [`check_uri`], also accepting `http://` with a loopback IP literal as
/// host when `loopback_http`.
pub fn check_uri_with(uri: &str, loopback_http: bool) -> Result<(), RecordError> {
    let err = |reason| RecordError::Uri { uri: quote(uri.as_bytes()), reason };
    if uri.len() > MAX_URI {
        return Err(err("too long"));
    }
    if !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err("has spaces, control or non-ASCII characters"));
    }
    let parsed: http::Uri = uri.parse().map_err(|_| err("not a URI"))?;
    let Some(authority) = parsed.authority() else {
        return Err(err(if parsed.scheme().is_some() {
            "has no host"
        } else {
            "not https (the service is ALTO:https)"
        }));
    };
    let scheme = parsed.scheme_str().unwrap_or_default();
    let loopback = || {
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    };
    if scheme.eq_ignore_ascii_case("http") && loopback_http {
        if !loopback() {
            return Err(err("http is allowed only to a loopback address (--allow-loopback-http)"));
        }
    } else if !scheme.eq_ignore_ascii_case("https") {
        return Err(err("not https (the service is ALTO:https)"));
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
            assert!(check_uri_with(uri, true).is_ok(), "{uri}");
            assert!(matches!(check_uri(uri), Err(RecordError::Uri { reason, .. }) if reason.contains("not https")));
        }
        for uri in ["http://10.0.0.1/directory", "http://localhost/directory", "http://alto.example/"] {
            match check_uri_with(uri, true) {
                Err(RecordError::Uri { reason, .. }) => assert!(reason.contains("loopback"), "{uri}: {reason}"),
                other => panic!("{uri}: {other:?}"),
            }
        }
        assert!(check_uri_with("https://alto.example/ird", true).is_ok());
        assert!(check_uri_with("http://user@127.0.0.1/", true).is_err());
    }

    #[test]
    fn select_takes_alto_https_u_records_by_order_then_preference() {
        let a = naptr(20, 1, "U", "ALTO:https", "!.*!https://a.example/!");
        let b = naptr(10, 20, "U", "ALTO:https", "!.*!https://b.example/!");
        let c = naptr(10, 10, "u", "alto:HTTPS", "!.*!https://c.example/!");
        assert_eq!(select(&[&a, &b, &c]), Ok(Selected::Found { uri: "https://c.example/".into(), index: 2 }));
    }

    #[test]
    fn select_ignores_other_services_and_flags() {
        let records = [
            naptr(1, 1, "U", "ALTO:http", "!.*!https://a.example/!"),
            naptr(1, 1, "S", "ALTO:https", "!.*!https://b.example/!"),
            naptr(1, 1, "", "ALTO:https", ""),
            naptr(1, 1, "U", "ALTOX:https", "!.*!https://c.example/!"),
            naptr(1, 1, "U", "E2U+sip", "!.*!https://d.example/!"),
        ];
        let refs: Vec<&NAPTR> = records.iter().collect();
        assert_eq!(select(&refs), Ok(Selected::NoAltoRecord { ignored: 5 }));
        // RFC 4848: a service may list several protocols.
        let multi = naptr(1, 1, "U", "ALTO:http:https", "!.*!https://e.example/!");
        assert_eq!(select(&[&multi]), Ok(Selected::Found { uri: "https://e.example/".into(), index: 0 }));
    }

    #[test]
    fn select_skips_an_unusable_record_and_reports_the_first_error_when_none_is_usable() {
        let bad = naptr(1, 1, "U", "ALTO:https", "!^foo!https://a.example/!");
        let good = naptr(2, 1, "U", "ALTO:https", "!.*!https://b.example/!");
        assert_eq!(select(&[&bad, &good]), Ok(Selected::Found { uri: "https://b.example/".into(), index: 1 }));
        let http = naptr(2, 1, "U", "ALTO:https", "!.*!http://b.example/!");
        assert!(matches!(select(&[&http, &bad]), Err(RecordError::Regexp { .. })));
        let mut with_replacement = naptr(1, 1, "U", "ALTO:https", "!.*!https://b.example/!");
        with_replacement.replacement = Name::from_ascii("alto.example.").unwrap();
        assert!(matches!(select(&[&with_replacement]), Err(RecordError::Replacement { .. })));
    }

    #[test]
    fn select_refuses_more_than_max_records() {
        let r = naptr(1, 1, "U", "ALTO:https", "!.*!https://a.example/!");
        let many = vec![&r; MAX_RECORDS + 1];
        assert_eq!(select(&many), Err(RecordError::TooMany { count: MAX_RECORDS + 1, max: MAX_RECORDS }));
        assert!(select(&many[..MAX_RECORDS]).is_ok());
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
                Attempt { name: "1.2.0.192.in-addr.arpa.".into(), outcome: Outcome::NoRecord },
                Attempt {
                    name: "2.0.192.in-addr.arpa.".into(),
                    outcome: Outcome::Failed { reason: "timed out".into() },
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "no ALTO server found (tried 1.2.0.192.in-addr.arpa.: no record; 2.0.192.in-addr.arpa.: lookup failed: timed out)"
        );
    }
}
