//! `POST /http` (SPEC §6.6): a request to a pod, made by servo for the
//! script, only to an address the egress policy allows.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::json;

use super::record::Record;
use super::{
    egress, fail, not_relayed, portal, Answer, RunState, DEFAULT_HTTP_TIMEOUT_S, MAX_HTTP_TIMEOUT_S,
};
use crate::tenants::Portal;

#[derive(serde::Deserialize)]
struct HttpRequest {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    timeout_s: Option<f64>,
}

fn get() -> String {
    "GET".into()
}

pub(super) async fn http(state: &RunState, body: Bytes) -> Answer {
    let req: HttpRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!(
                "expected JSON {{\"method\", \"url\", \"headers\", \"body\", \"timeout_s\"}}: {e}"
            ),
            )
        }
    };
    let method = req.method.to_ascii_uppercase();
    let line = format!("{method} {}", req.url);
    let record = || Record {
        line: &line,
        ..Default::default()
    };
    let (uri, host, port) = match parse_url(&req.url) {
        Ok(v) => v,
        Err(why) => return fail(StatusCode::BAD_REQUEST, why),
    };
    if let Err(why) = egress::check_method(&method) {
        return state.deny("http", record(), &why);
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return fail(StatusCode::BAD_REQUEST, format!("bad method `{method}`"));
    };
    // The Host header is ours (it names the URL's host); one naming another
    // host would reach a different site behind the same address.
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    if let Some((_, given)) = req.headers.iter().find(|(k, v)| {
        k.eq_ignore_ascii_case("host") && !egress::host_header_matches(v, authority, &host, port)
    }) {
        let why = format!(
            "the Host header `{}` differs from the URL's host `{authority}`",
            given.escape_debug()
        );
        return state.deny("http", record(), &why);
    }
    let relay = &state.relay;
    let cfg = &relay.egress;
    for (name, portal_port) in cfg.unresolved_portals() {
        match portal::resolve(&name, portal_port, Duration::from_secs(5)).await {
            Ok(ips) => cfg.portal_resolved(
                &name,
                portal_port,
                ips.into_iter()
                    .map(|ip| std::net::SocketAddr::new(ip, portal_port))
                    .collect(),
            ),
            Err(e) => {
                let why = format!(
                    "the portal's name does not resolve ({e}), so servo cannot tell the portal's address from a pod's: retry when it does"
                );
                return state.deny("http", record(), &why);
            }
        }
    }
    let allowed = {
        let reported = state.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        egress::allow(
            cfg,
            &state.tenant.egress,
            &reported,
            &host,
            port,
            &portal::is_local,
        )
    };
    let timeout = Duration::from_secs_f64(
        req.timeout_s
            .unwrap_or(DEFAULT_HTTP_TIMEOUT_S)
            .clamp(0.001, MAX_HTTP_TIMEOUT_S),
    );
    // The addresses to connect to, every one checked; a name is looked up
    // once, here, never again by the connector.
    let addrs = match allowed {
        Err(why) => return state.deny("http", record(), &why),
        Ok(egress::Allowed::Ip(ip)) => Ok(vec![ip]),
        Ok(egress::Allowed::Name) => match portal::resolve(&host, port, timeout).await {
            Ok(ips) => match egress::check_resolved(cfg, &host, port, &ips, &portal::is_local) {
                Ok(()) => Ok(ips),
                Err(why) => return state.deny("http", record(), &why),
            },
            Err(why) => Err(why),
        },
    };
    let admitted = match state.admit("http", record()) {
        Ok(a) => a,
        Err(e) => return not_relayed(e),
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let stub = match relay.portal_of(&state.tenant).0 {
        Portal::Sim => relay.sim.pod_http(&host, port, path),
        Portal::Url(_) => None,
    };
    let result = match (stub, addrs) {
        (Some((status, text)), _) => Ok(portal::answer(
            status,
            BTreeMap::from([("content-type".to_string(), "text/plain".to_string())]),
            text.as_bytes(),
            false,
        )),
        (None, Err(why)) => Err(why),
        (None, Ok(ips)) => {
            portal::http(portal::Egress {
                method,
                uri,
                addrs: ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect(),
                headers: &req.headers,
                body: Bytes::from(req.body.unwrap_or_default()),
                timeout,
            })
            .await
        }
    };
    match result {
        Ok(answer) => state.finish(admitted, &line, true, StatusCode::OK, answer),
        Err(why) => {
            let body = json!({"ok": false, "out": why});
            state.finish(admitted, &line, false, StatusCode::BAD_GATEWAY, body)
        }
    }
}

/// `http://host[:port]/path` → (uri, host, port). Only plain HTTP: pods are
/// reached in the cluster network (the portal may be https://, pods not).
fn parse_url(url: &str) -> Result<(hyper::Uri, String, u16), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url `{url}`: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(format!("`{url}`: the relay only speaks plain http")),
        _ => return Err(format!("`{url}`: expected an http:// URL")),
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("`{url}` has no host"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!("`{url}`: credentials in the URL are not supported"));
    }
    let host = egress::normalize_host(host);
    let port = uri.port_u16().unwrap_or(80);
    Ok((uri, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let (_, h, p) = parse_url("http://10.0.0.1:8080/ping").unwrap();
        assert_eq!((h.as_str(), p), ("10.0.0.1", 8080));
        let (_, h, p) = parse_url("http://Example.COM/").unwrap();
        assert_eq!((h.as_str(), p), ("example.com", 80));
        let (_, h, _) = parse_url("http://[::1]:9/").unwrap();
        assert_eq!(h, "::1");
        assert!(parse_url("https://x/").unwrap_err().contains("plain http"));
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("http://u:p@x/").is_err());
    }
}
