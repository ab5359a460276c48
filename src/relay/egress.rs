//! Egress for `/http` (SPEC §6.6): which `host:port` a run may reach — the
//! endpoints the portal reported to this run, or the tenant's `egress` rules.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::Value;

/// `host:port` pairs a run learnt from `port`/`grep` answers (hosts lowercase).
pub type Endpoints = HashSet<(String, u16)>;

/// Lowercases a host and drops IPv6 brackets, so `[::1]` and `::1` compare equal.
pub fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
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

/// Why `host:port` may be reached, or why not.
pub fn check(rules: &[String], reported: &Endpoints, host: &str, port: u16) -> Result<(), String> {
    let host_n = normalize_host(host);
    if reported.contains(&(host_n.clone(), port)) {
        return Ok(());
    }
    if rules.iter().any(|r| rule_allows(r, &host_n, port)) {
        return Ok(());
    }
    Err(format!(
        "{host}:{port} was not reported to this run by `port`/`grep`, and no egress rule of the tenant allows it"
    ))
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
        assert!(check(&[], &reported, "10.0.0.1", 31000).is_ok());
        assert!(check(&[], &reported, "10.0.0.1", 31001).is_err());
        assert!(check(&["10.0.0.0/24:31001".into()], &reported, "10.0.0.1", 31001).is_ok());
    }
}
