//! Egress for `/http` (SPEC §6.6): which address a run may reach, and why not.
//!
//! Pure policy, no I/O: the relay asks [`allow`] before anything is looked
//! up, [`check_resolved`] for every address a tenant rule's name resolves to,
//! and connects only to addresses that passed. Two layers:
//!
//! - what a run may ask for: an `ip:port` the portal reported to this run
//!   (`port`/`grep`) whose IP literal lies in the operator's pod networks
//!   (`--pod-cidr`), or what the tenant's `egress` rules allow;
//! - what nobody may reach, whatever was reported or allowed
//!   ([`EgressConfig::never`]): loopback (unless a loopback range is listed
//!   in `--pod-cidr`), link-local (cloud metadata; never), unspecified,
//!   multicast and broadcast addresses, servo's own listen address and the
//!   portal's address. IPv4-mapped IPv6 addresses are checked as the IPv4
//!   address they stand for.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::RwLock;

use serde_json::Value;

/// `host:port` pairs a run learnt from `port`/`grep` answers (hosts in
/// [`normalize_host`] form).
pub type Endpoints = HashSet<(String, u16)>;

/// The methods `/http` relays; anything else is denied by policy.
pub const ALLOWED_METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"];

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1,
/// plus the proxy ones): never passed on, in either direction.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Lowercases a host and drops IPv6 brackets, so `[::1]` and `::1` compare
/// equal; an IP literal is written in its canonical form, IPv4-mapped IPv6
/// as the IPv4 address (`::ffff:10.0.0.1` → `10.0.0.1`).
pub fn normalize_host(host: &str) -> String {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => host,
    }
}

/// A network, `ADDRESS/BITS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.bits)
    }
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, bits: u8) -> Cidr {
        Cidr {
            net: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            bits,
        }
    }

    /// Parses `10.0.0.0/8` or `fc00::/7`; host bits must be zero (a typo
    /// like `10.1.0.0/8` is more likely a mistake than a wish).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (net, bits) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: expected ADDRESS/BITS, e.g. 10.0.0.0/8"))?;
        let net: IpAddr = net
            .parse()
            .map_err(|_| format!("`{text}`: `{net}` is not an IP address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?;
        let cidr = Cidr { net, bits };
        let masked = cidr.network();
        if masked != net {
            return Err(format!(
                "`{text}`: host bits are set (did you mean {masked}/{bits}?)"
            ));
        }
        Ok(cidr)
    }

    fn network(&self) -> IpAddr {
        match self.net {
            IpAddr::V4(n) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(n) & mask))
            }
            IpAddr::V6(n) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(n) & mask))
            }
        }
    }

    /// Whether `ip` (already canonical) is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        cidr_contains(self.net, self.bits, ip)
    }

    /// A range inside loopback, listed on purpose (`127.0.0.0/8`,
    /// `127.0.0.1/32`, `::1/128`); `0.0.0.0/0` contains loopback but does not
    /// count: loopback is opened only when the operator names it.
    fn is_loopback_range(&self) -> bool {
        match self.net {
            IpAddr::V4(n) => n.is_loopback() && self.bits >= 8,
            IpAddr::V6(n) => n.is_loopback() && self.bits == 128,
        }
    }
}

/// The pod networks when `--pod-cidr` is not given: the RFC 1918 ranges and
/// IPv6 unique local addresses (RFC 4193).
pub fn default_pod_cidrs() -> Vec<Cidr> {
    vec![
        Cidr::v4(10, 0, 0, 0, 8),
        Cidr::v4(172, 16, 0, 0, 12),
        Cidr::v4(192, 168, 0, 0, 16),
        Cidr {
            net: IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)),
            bits: 7,
        },
    ]
}

/// What the relay knows of the host's network: the operator's pod networks,
/// the portal's addresses (resolved once at start-up) and servo's own
/// listen address (known once it is bound).
#[derive(Debug)]
pub struct EgressConfig {
    pub pod_cidrs: Vec<Cidr>,
    portal: RwLock<Vec<SocketAddr>>,
    /// Portals' host names and ports while they have not resolved (they did
    /// not at start-up): `/http` looks them up before any request, and
    /// refuses while it cannot, since a portal's address would be unknown.
    portal_names: RwLock<Vec<(String, u16)>>,
    listen: RwLock<Vec<SocketAddr>>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig::new(default_pod_cidrs(), Vec::new())
    }
}

/// `ip` as the script wrote it, and what it stands for when that differs.
fn shown(written: &str, ip: IpAddr) -> String {
    let canonical = ip.to_string();
    let bare = written.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() || bare.eq_ignore_ascii_case(&canonical) {
        canonical
    } else {
        format!("{bare} (that is {canonical})")
    }
}

impl EgressConfig {
    pub fn new(pod_cidrs: Vec<Cidr>, portal: Vec<SocketAddr>) -> EgressConfig {
        EgressConfig {
            pod_cidrs,
            portal: RwLock::new(portal),
            portal_names: RwLock::new(Vec::new()),
            listen: RwLock::new(Vec::new()),
        }
    }

    /// A portal's name and port, when it did not resolve at start-up.
    pub fn add_unresolved_portal(&self, host: String, port: u16) {
        self.portal_names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((host, port));
    }

    /// The portals' names and ports not resolved yet.
    pub fn unresolved_portals(&self) -> Vec<(String, u16)> {
        self.portal_names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a portal's addresses once its name resolved.
    pub fn portal_resolved(&self, host: &str, port: u16, addrs: Vec<SocketAddr>) {
        self.portal
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(addrs);
        self.portal_names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(h, p)| !(h == host && *p == port));
    }

    /// Records an address servo listens on (the bound one: `--listen
    /// 127.0.0.1:0` gets its port only then).
    pub fn add_listen(&self, addr: SocketAddr) {
        self.listen
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(addr);
    }

    fn listen(&self) -> Vec<SocketAddr> {
        self.listen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The pod networks, for messages: `10.0.0.0/8, 172.16.0.0/12`.
    pub fn pod_networks(&self) -> String {
        let list: Vec<String> = self.pod_cidrs.iter().map(Cidr::to_string).collect();
        if list.is_empty() {
            "none".into()
        } else {
            list.join(", ")
        }
    }

    pub fn in_pod_network(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.pod_cidrs.iter().any(|c| c.contains(ip))
    }

    /// Why `ip:port` is never reachable from a run, whatever was reported or
    /// allowed; `None` when it may be. `written` is the host as the script or
    /// the resolver gave it (for the message). `is_local` says whether an
    /// address belongs to this host (for a wildcard listen address).
    pub fn never(
        &self,
        written: &str,
        ip: IpAddr,
        port: u16,
        is_local: &dyn Fn(IpAddr) -> bool,
    ) -> Option<String> {
        let ip = ip.to_canonical();
        let who = shown(written, ip);
        let why = match ip {
            IpAddr::V4(v4) if v4.is_link_local() => "is link-local (cloud metadata)",
            IpAddr::V6(v6) if v6.is_unicast_link_local() => "is link-local (cloud metadata)",
            IpAddr::V4(v4) if v4.is_unspecified() => "is the unspecified address",
            IpAddr::V4(v4) if v4.octets()[0] == 0 => "is in 0.0.0.0/8 (this host)",
            IpAddr::V6(v6) if v6.is_unspecified() => "is the unspecified address",
            IpAddr::V4(v4) if v4.is_broadcast() => "is the broadcast address",
            _ if ip.is_multicast() => "is multicast",
            _ if ip.is_loopback() => {
                let listed = self
                    .pod_cidrs
                    .iter()
                    .any(|c| c.is_loopback_range() && c.contains(ip));
                if !listed {
                    return Some(format!(
                        "{who} is loopback (this host): not reachable from a run unless --pod-cidr lists a loopback range"
                    ));
                }
                ""
            }
            _ => "",
        };
        if !why.is_empty() {
            return Some(format!("{who} {why}: never reachable from a run"));
        }
        let target = SocketAddr::new(ip, port);
        for listen in self.listen() {
            let ours = if listen.ip().is_unspecified() {
                listen.port() == port && (ip == listen.ip() || is_local(ip))
            } else {
                listen.ip().to_canonical() == ip && listen.port() == port
            };
            if ours {
                return Some(format!(
                    "{} is servo's own listen address: never reachable from a run",
                    fmt_target(&who, target)
                ));
            }
        }
        if self
            .portal
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|p| p.ip().to_canonical() == ip && p.port() == port)
        {
            return Some(format!(
                "{} is the portal's address: never reachable from a run (send commands with proxy(...))",
                fmt_target(&who, target)
            ));
        }
        None
    }
}

fn fmt_target(who: &str, target: SocketAddr) -> String {
    match target {
        SocketAddr::V6(_) if !who.contains(' ') => format!("[{who}]:{}", target.port()),
        _ if who.contains(' ') => format!("{who} port {}", target.port()),
        _ => format!("{who}:{}", target.port()),
    }
}

/// Whether `method` (uppercase) may be relayed.
pub fn check_method(method: &str) -> Result<(), String> {
    if ALLOWED_METHODS.contains(&method) {
        return Ok(());
    }
    Err(format!(
        "the method `{}` is not relayed: /http takes {}",
        method.escape_debug(),
        ALLOWED_METHODS.join(", ")
    ))
}

/// What a run may reach, once [`allow`] said yes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// An IP literal, checked: connect to it.
    Ip(IpAddr),
    /// A name a tenant rule allows: resolve it once, [`check_resolved`]
    /// every address, connect to one of them.
    Name,
}

/// Whether a run may reach `host:port` (host in [`normalize_host`] form),
/// before anything is looked up. Reported names are never resolved.
pub fn allow(
    cfg: &EgressConfig,
    rules: &[String],
    reported: &Endpoints,
    host: &str,
    port: u16,
    is_local: &dyn Fn(IpAddr) -> bool,
) -> Result<Allowed, String> {
    let by_rule = rules.iter().any(|r| rule_allows(r, host, port));
    let was_reported = reported.contains(&(host.to_string(), port));
    let Ok(ip) = host.parse::<IpAddr>() else {
        if by_rule {
            return Ok(Allowed::Name);
        }
        if was_reported {
            return Err(format!(
                "{host} was reported as a name: names are never resolved for reported targets, only IP literals inside the pod networks count"
            ));
        }
        return Err(not_reported(host, port));
    };
    if let Some(why) = cfg.never(host, ip, port, is_local) {
        return Err(why);
    }
    if by_rule || (was_reported && cfg.in_pod_network(ip)) {
        return Ok(Allowed::Ip(ip));
    }
    if was_reported {
        return Err(format!(
            "{host} was reported by the portal but is outside the pod networks ({}; see --pod-cidr)",
            cfg.pod_networks()
        ));
    }
    Err(not_reported(host, port))
}

fn not_reported(host: &str, port: u16) -> String {
    let target = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    format!(
        "{target} was not reported to this run by `port`/`grep`, and no egress rule of the tenant allows it"
    )
}

/// Checks every address a tenant rule's `name` resolved to: one that may
/// never be reached refuses the whole name (a name that also points at the
/// metadata service is not a pod's).
pub fn check_resolved(
    cfg: &EgressConfig,
    name: &str,
    port: u16,
    addrs: &[IpAddr],
    is_local: &dyn Fn(IpAddr) -> bool,
) -> Result<(), String> {
    if addrs.is_empty() {
        return Err(format!("{name} resolved to no address"));
    }
    for ip in addrs {
        if let Some(why) = cfg.never("", *ip, port, is_local) {
            return Err(format!("{name} resolves to {why}"));
        }
    }
    Ok(())
}

/// The end-to-end headers of `headers`: hop-by-hop ones dropped, and any
/// header a `Connection` header names.
pub fn end_to_end(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let named: HashSet<String> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .filter(|t| !t.is_empty())
        .collect();
    headers
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            !HOP_BY_HOP.contains(&k.as_str()) && !named.contains(&k)
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether a script's `Host` header names the URL's own host (`authority`
/// as written in the URL, `host` normalised, `port` the one connected to).
pub fn host_header_matches(given: &str, authority: &str, host: &str, port: u16) -> bool {
    let given = given.trim().to_ascii_lowercase();
    let bracketed = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]"),
        _ => host.to_string(),
    };
    given == authority.to_ascii_lowercase()
        || given == format!("{bracketed}:{port}")
        || (port == 80 && given == bracketed)
}

/// Whether `ip` is inside `net/bits`.
fn cidr_contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Whether one tenant rule (`HOST:PORT` or `CIDR:PORT`) allows `host:port`.
pub fn rule_allows(rule: &str, host: &str, port: u16) -> bool {
    let Some((rule_host, rule_port)) = rule.rsplit_once(':') else {
        return false;
    };
    if rule_port.parse::<u16>().ok() != Some(port) {
        return false;
    }
    let host = normalize_host(host);
    if let Some((net, bits)) = rule_host.split_once('/') {
        let (Ok(net), Ok(bits), Ok(ip)) = (
            normalize_host(net).parse::<IpAddr>(),
            bits.parse::<u8>(),
            host.parse::<IpAddr>(),
        ) else {
            return false;
        };
        return cidr_contains(net, bits, ip);
    }
    normalize_host(rule_host) == host
}

fn ports_of(v: &Value) -> Vec<u16> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .into_iter()
            .collect(),
        Value::String(s) => s
            .split([',', ' '])
            .filter_map(|p| p.trim().parse::<u16>().ok())
            .collect(),
        Value::Array(a) => a.iter().flat_map(ports_of).collect(),
        // {"<container port>": <host port>}: the host port is what answers.
        Value::Object(m) => m.values().flat_map(ports_of).collect(),
        _ => Vec::new(),
    }
}

/// The `ip:port` endpoints in a `port`/`grep` answer: every entry with an
/// `ip` (and `public`) and `ports`. `out` is the portal's `out` field.
pub fn endpoints_in(out: &Value) -> Vec<(String, u16)> {
    let parsed = match out {
        Value::String(s) => serde_json::from_str::<Value>(s).ok(),
        other => Some(other.clone()),
    };
    let Some(Value::Object(map)) = parsed else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in map.values() {
        let Some(ports) = entry.get("ports").map(ports_of) else {
            continue;
        };
        for key in ["ip", "public"] {
            if let Some(host) = entry.get(key).and_then(Value::as_str) {
                if host.is_empty() {
                    continue;
                }
                found.extend(ports.iter().map(|&p| (normalize_host(host), p)));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(rule_allows("10.0.0.0/8:80", "10.1.2.3", 80));
        assert!(!rule_allows("10.0.0.0/8:80", "10.1.2.3", 81));
        assert!(!rule_allows("10.0.0.0/8:80", "11.1.2.3", 80));
        assert!(!rule_allows("10.0.0.0/8:80", "db.internal", 80));
        assert!(rule_allows("0.0.0.0/0:443", "1.2.3.4", 443));
        assert!(rule_allows("DB.internal:443", "db.INTERNAL", 443));
        assert!(!rule_allows("db.internal:443", "db.internal.evil", 443));
        assert!(rule_allows("::1/128:8080", "[::1]", 8080));
        assert!(rule_allows("127.0.0.1/32:9", "127.0.0.1", 9));
        assert!(!rule_allows("127.0.0.1/32:9", "127.0.0.2", 9));
    }

    #[test]
    fn endpoints_from_answers() {
        let out = Value::String(
            r#"{"a.web #1": {"ip": "10.0.0.1", "public": "", "ports": "31000"},
                "a.web #2": {"ip": "10.0.0.2", "ports": {"8080": 31001}},
                "a.db #1": {"ip": "10.0.0.3", "node": "n"}}"#
                .into(),
        );
        let mut got = endpoints_in(&out);
        got.sort();
        assert_eq!(
            got,
            vec![("10.0.0.1".into(), 31000), ("10.0.0.2".into(), 31001)]
        );
        assert!(endpoints_in(&Value::String("not json".into())).is_empty());
        let reported: Endpoints = got.into_iter().collect();
        let cfg = EgressConfig::default();
        let ok =
            |rules: &[String], host: &str, port| allow(&cfg, rules, &reported, host, port, &none);
        assert_eq!(ok(&[], "10.0.0.1", 31000), Ok(Allowed::Ip(ip("10.0.0.1"))));
        assert!(ok(&[], "10.0.0.1", 31001).is_err());
        assert!(ok(&["10.0.0.0/24:31001".into()], "10.0.0.1", 31001).is_ok());
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn none(_: IpAddr) -> bool {
        false
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    fn reported(list: &[(&str, u16)]) -> Endpoints {
        list.iter().map(|(h, p)| (normalize_host(h), *p)).collect()
    }

    #[test]
    fn cidrs_parse_strictly() {
        assert_eq!(
            Cidr::parse(" 10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(Cidr::parse("fc00::/7").unwrap().to_string(), "fc00::/7");
        assert!(Cidr::parse("10.0.0.0")
            .unwrap_err()
            .contains("ADDRESS/BITS"));
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(Cidr::parse("::/129").unwrap_err().contains("0 to 128"));
        assert!(Cidr::parse("pods/8").unwrap_err().contains("not an IP"));
        assert!(Cidr::parse("10.1.0.0/8")
            .unwrap_err()
            .contains("did you mean 10.0.0.0/8"));
        assert!(Cidr::parse("0.0.0.0/0").is_ok());
        let c = Cidr::parse("198.18.0.0/15").unwrap();
        assert!(c.contains(ip("198.19.255.255")));
        assert!(!c.contains(ip("198.20.0.0")));
        assert!(!c.contains(ip("::ffff:198.18.0.1")), "callers canonicalise");
    }

    #[test]
    fn hosts_normalise_mapped_addresses() {
        assert_eq!(normalize_host("[::FFFF:127.0.0.1]"), "127.0.0.1");
        assert_eq!(normalize_host("::ffff:7f00:1"), "127.0.0.1");
        assert_eq!(normalize_host("[::1]"), "::1");
        assert_eq!(normalize_host("Pod.Example"), "pod.example");
    }

    #[test]
    fn never_reachable_whatever_was_reported() {
        let cfg = EgressConfig::new(
            cidrs(&["0.0.0.0/0", "::/0"]),
            vec!["10.9.9.9:9000".parse().unwrap()],
        );
        cfg.add_listen("10.1.1.1:5000".parse().unwrap());
        let never = |h: &str, port| cfg.never(h, ip(h), port, &none);
        for (host, why) in [
            ("127.0.0.1", "is loopback (this host)"),
            ("127.9.9.9", "is loopback"),
            ("::1", "is loopback"),
            (
                "::ffff:127.0.0.1",
                "::ffff:127.0.0.1 (that is 127.0.0.1) is loopback",
            ),
            (
                "169.254.169.254",
                "169.254.169.254 is link-local (cloud metadata): never reachable from a run",
            ),
            ("::ffff:169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "0.0.0.0/8"),
            ("::", "unspecified"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
        ] {
            let got = never(host, 80).unwrap_or_else(|| panic!("{host} allowed"));
            assert!(got.contains(why), "{host}: {got}");
        }
        assert!(never("10.1.1.1", 5000)
            .unwrap()
            .contains("10.1.1.1:5000 is servo's own listen address"));
        assert!(never("::ffff:10.1.1.1", 5000).unwrap().contains("listen"));
        assert_eq!(never("10.1.1.1", 5001), None);
        assert!(never("10.9.9.9", 9000)
            .unwrap()
            .contains("is the portal's address"));
        assert_eq!(never("10.9.9.9", 9001), None);
        assert_eq!(never("10.0.0.7", 80), None);
        assert_eq!(never("2001:db8::1", 80), None);
    }

    #[test]
    fn loopback_only_when_listed_link_local_never() {
        let cfg = EgressConfig::new(
            cidrs(&["127.0.0.0/8", "169.254.0.0/16", "fe80::/10"]),
            vec![],
        );
        assert_eq!(cfg.never("127.0.0.1", ip("127.0.0.1"), 80, &none), None);
        assert!(
            cfg.never("::1", ip("::1"), 80, &none).is_some(),
            "::1/128 is not listed"
        );
        assert!(cfg.never("", ip("169.254.169.254"), 80, &none).is_some());
        assert!(cfg.never("", ip("fe80::1"), 80, &none).is_some());
        let cfg = EgressConfig::new(cidrs(&["::1/128"]), vec![]);
        assert_eq!(cfg.never("", ip("::1"), 80, &none), None);
        assert!(cfg.never("", ip("127.0.0.1"), 80, &none).is_some());
    }

    #[test]
    fn a_wildcard_listen_address_covers_every_local_address() {
        let cfg = EgressConfig::new(cidrs(&["10.0.0.0/8", "127.0.0.0/8"]), vec![]);
        cfg.add_listen("0.0.0.0:5000".parse().unwrap());
        let local = |a: IpAddr| a == ip("10.0.0.5") || a.is_loopback();
        assert!(cfg
            .never("", ip("10.0.0.5"), 5000, &local)
            .unwrap()
            .contains("listen"));
        assert!(cfg.never("", ip("127.0.0.2"), 5000, &local).is_some());
        assert_eq!(cfg.never("", ip("10.0.0.6"), 5000, &local), None);
        assert_eq!(cfg.never("", ip("10.0.0.5"), 5001, &local), None);
    }

    #[test]
    fn reported_targets_count_as_ip_literals_in_the_pod_networks() {
        let cfg = EgressConfig::default();
        let seen = reported(&[
            ("10.0.0.1", 80),
            ("198.18.0.2", 80),
            ("pod.internal", 80),
            ("127.0.0.1", 80),
            ("169.254.169.254", 80),
            ("::ffff:192.168.1.1", 80),
        ]);
        let allow = |h: &str, p| allow(&cfg, &[], &seen, &normalize_host(h), p, &none);
        assert_eq!(allow("10.0.0.1", 80), Ok(Allowed::Ip(ip("10.0.0.1"))));
        assert_eq!(allow("192.168.1.1", 80), Ok(Allowed::Ip(ip("192.168.1.1"))));
        assert!(allow("198.18.0.2", 80)
            .unwrap_err()
            .contains("outside the pod networks (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7; see --pod-cidr)"));
        assert!(allow("pod.internal", 80)
            .unwrap_err()
            .contains("names are never resolved"));
        assert!(allow("127.0.0.1", 80).unwrap_err().contains("loopback"));
        assert!(allow("::ffff:127.0.0.1", 80)
            .unwrap_err()
            .contains("loopback"));
        assert!(allow("169.254.169.254", 80)
            .unwrap_err()
            .contains("link-local"));
        assert!(allow("10.0.0.2", 80)
            .unwrap_err()
            .contains("was not reported"));
    }

    #[test]
    fn tenant_rules_cannot_open_what_is_never_reachable() {
        let cfg = EgressConfig::default();
        let rules: Vec<String> = vec![
            "0.0.0.0/0:80".into(),
            "db.internal:5432".into(),
            "127.0.0.1:80".into(),
        ];
        let allow = |h: &str, p| allow(&cfg, &rules, &Endpoints::new(), h, p, &none);
        assert_eq!(allow("8.8.8.8", 80), Ok(Allowed::Ip(ip("8.8.8.8"))));
        assert_eq!(allow("db.internal", 5432), Ok(Allowed::Name));
        assert!(allow("169.254.169.254", 80)
            .unwrap_err()
            .contains("link-local"));
        assert!(allow("127.0.0.1", 80).unwrap_err().contains("loopback"));
        let ok = [ip("10.0.0.3"), ip("10.0.0.4")];
        assert!(check_resolved(&cfg, "db.internal", 5432, &ok, &none).is_ok());
        let bad = [ip("10.0.0.3"), ip("169.254.169.254")];
        let why = check_resolved(&cfg, "db.internal", 5432, &bad, &none).unwrap_err();
        assert!(
            why.starts_with("db.internal resolves to 169.254.169.254 is link-local"),
            "{why}"
        );
        assert!(check_resolved(&cfg, "db.internal", 5432, &[], &none).is_err());
    }

    #[test]
    fn methods() {
        for m in ALLOWED_METHODS {
            assert!(check_method(m).is_ok());
        }
        for m in ["TRACE", "CONNECT", "OPTIONS", "get", "PROPFIND", ""] {
            assert!(
                check_method(m).unwrap_err().contains("is not relayed"),
                "{m}"
            );
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let got = end_to_end(&[
            ("Connection", "close, X-Secret"),
            ("X-Secret", "s"),
            ("Keep-Alive", "timeout=5"),
            ("Upgrade", "websocket"),
            ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"),
            ("Proxy-Authorization", "Basic x"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authenticate", "Basic"),
            ("Trailer", "X"),
            ("connection", "X-Other"),
            ("x-other", "o"),
            ("Accept", "text/plain"),
            ("X-Kept", "k"),
        ]);
        assert_eq!(
            got,
            vec![
                ("Accept".to_string(), "text/plain".to_string()),
                ("X-Kept".to_string(), "k".to_string())
            ]
        );
    }

    #[test]
    fn host_headers() {
        assert!(host_header_matches(
            "10.0.0.1:8080",
            "10.0.0.1:8080",
            "10.0.0.1",
            8080
        ));
        assert!(host_header_matches("POD:80", "pod", "pod", 80));
        assert!(host_header_matches("pod", "pod:80", "pod", 80));
        assert!(host_header_matches("[::1]:81", "[::1]:81", "::1", 81));
        assert!(!host_header_matches(
            "10.0.0.1",
            "10.0.0.1:8080",
            "10.0.0.1",
            8080
        ));
        assert!(!host_header_matches(
            "metadata.google.internal",
            "10.0.0.1",
            "10.0.0.1",
            80
        ));
    }
}
