//! Outgoing HTTP: relaying a command to a real Ochothon portal (SPEC §6.3)
//! and the narrow `/http` egress of §6.6, both over hyper's client (the
//! egress over a connection of its own to an address the policy checked).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::egress;

use crate::bundle::signature::hmac_sha1_hex;

/// The portal's client: `http://` as before, `https://` with rustls (§12).
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Largest portal answer servo reads (the portal's JSON is small; this is a guard).
const MAX_PORTAL_ANSWER: usize = 16 * 1024 * 1024;
/// Largest body of an `/http` answer passed back to the script (§6.6).
pub const MAX_HTTP_BODY: usize = 1024 * 1024;

/// A client for an `http://` portal (it has no CA to trust: an
/// `https://` portal needs [`tls_client`]).
pub fn client() -> HttpClient {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    build(tls)
}

/// A client for an `https://` portal trusting the CAs in `cacert`, else
/// the system's trust store.
pub fn tls_client(cacert: Option<&std::path::Path>) -> Result<HttpClient, String> {
    Ok(build(crate::tls::client_config(cacert, "--portal-cacert")?))
}

fn build(mut tls: rustls::ClientConfig) -> HttpClient {
    // hyper-rustls sets ALPN itself (http/1.1 only here).
    tls.alpn_protocols.clear();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}

/// A multipart/form-data body with one part per file (field name = file
/// name, as the portal's `request.files` expects). Names were validated
/// when they came in (no quotes, no line breaks).
fn multipart(files: &[(String, Bytes)]) -> Result<(String, Bytes), String> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| format!("no randomness for a boundary: {e}"))?;
    let boundary = format!("servo-{}", hex::encode(raw));
    let mut body = BytesMut::new();
    for (name, data) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok((
        format!("multipart/form-data; boundary={boundary}"),
        body.freeze(),
    ))
}

/// Reads at most `cap` bytes of a body; the flag says whether more was cut off.
async fn read_capped(resp: Response<Incoming>, cap: usize) -> Result<(Bytes, bool), String> {
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the answer: {e}"))?;
        if let Ok(data) = frame.into_data() {
            let room = cap - buf.len();
            if data.len() > room {
                buf.extend_from_slice(&data[..room]);
                return Ok((buf.freeze(), true));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok((buf.freeze(), false))
}

/// Sends one command to the portal: its JSON object (or an `ok: false`
/// answer when it refuses the signature), or why it could not be reached.
pub async fn shell(
    client: &HttpClient,
    base: &str,
    token: Option<&str>,
    line: &str,
    files: &[(String, Bytes)],
    timeout: Duration,
) -> Result<Value, String> {
    let mut req = Request::post(format!("{base}/shell")).header("X-Shell", line);
    if let Some(token) = token {
        req = req.header(
            "X-Signature",
            format!("sha1={}", hmac_sha1_hex(token.as_bytes(), line.as_bytes())),
        );
    }
    let body = if files.is_empty() {
        Bytes::new()
    } else {
        let (content_type, body) = multipart(files)?;
        req = req.header(hyper::header::CONTENT_TYPE, content_type);
        body
    };
    let req = req
        .body(Full::new(body))
        .map_err(|e| format!("bad request for {base}: {e}"))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            if let Some(why) = crate::tls::certificate_problem(&e, "--portal-cacert") {
                return why;
            }
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                why = format!("{why}: {s}");
                src = s.source();
            }
            why
        })?;
        let status = resp.status();
        let (body, cut) = read_capped(resp, MAX_PORTAL_ANSWER).await?;
        if status == hyper::StatusCode::UNAUTHORIZED || status == hyper::StatusCode::FORBIDDEN {
            // Reachable, but it will not take our signature: not "unreachable".
            return Ok(json!({"ok": false, "out": format!(
                "the portal refused the command (HTTP {}): check servo's --portal-token",
                status.as_u16()
            )}));
        }
        if cut {
            return Err("the answer is too large".to_string());
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(v @ Value::Object(_)) if v.get("ok").is_some() => Ok(v),
            _ => Err(format!(
                "the portal answered HTTP {} with something that is not its JSON",
                status.as_u16()
            )),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", timeout.as_secs_f64())))
}

/// Whether `ip` is an address of this host: one a socket can be bound to.
/// (With `net.ipv4.ip_nonlocal_bind` set every address looks local, which
/// only refuses more.)
pub fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Looks `host` up once (a tenant rule's name, §6.6): the addresses the
/// relay checks and then connects to, never resolved again.
pub async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<IpAddr>, String> {
    let lookup = tokio::net::lookup_host((host, port));
    let found = tokio::time::timeout(timeout, lookup)
        .await
        .map_err(|_| {
            format!(
                "cannot resolve {host}: no answer within {} s",
                timeout.as_secs_f64()
            )
        })?
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for addr in found {
        let ip = addr.ip().to_canonical();
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Ok(ips)
}

/// One `/http` request from a script, already allowed by the egress policy.
pub struct Egress<'a> {
    pub method: Method,
    /// The URL as the script gave it: its authority becomes the Host header.
    pub uri: hyper::Uri,
    /// The checked addresses: the connection goes to one of these, tried in
    /// order, and nowhere else (no second lookup, no redirect).
    pub addrs: Vec<SocketAddr>,
    pub headers: &'a BTreeMap<String, String>,
    pub body: Bytes,
    pub timeout: Duration,
}

/// Headers servo sets itself on a relayed request.
fn ours(name: &str) -> bool {
    name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length")
}

/// The connection's task, stopped when the exchange ends or times out.
struct ConnTask(tokio::task::JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut why = String::from("no address to connect to");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => why = format!("{addr}: {e}"),
        }
    }
    Err(why)
}

/// Makes the request over a connection of its own to one of `e.addrs`;
/// `{"status", "headers", "body", "body_base64", "truncated"}`. Hop-by-hop
/// headers are dropped both ways; a redirect is passed back as it is
/// (hyper's connection never follows one).
pub async fn http(e: Egress<'_>) -> Result<Value, String> {
    let authority = e
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .ok_or("the URL has no host")?;
    let target = e.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut req = Request::builder()
        .method(e.method)
        .uri(target)
        .header(hyper::header::HOST, authority);
    let asked: Vec<(&str, &str)> = e
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (k, v) in egress::end_to_end(&asked) {
        if !ours(&k) {
            req = req.header(k, v);
        }
    }
    let req = req
        .body(Full::new(e.body))
        .map_err(|err| format!("bad request: {err}"))?;
    let addrs = e.addrs;
    let exchange = async move {
        let stream = connect(&addrs)
            .await
            .map_err(|why| format!("unreachable: {why}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| format!("unreachable: {err}"))?;
        let _conn = ConnTask(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let resp = sender
            .send_request(req)
            .await
            .map_err(|err| format!("unreachable: {err}"))?;
        let status = resp.status().as_u16();
        let got: Vec<(&str, &str)> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let headers: BTreeMap<String, String> = egress::end_to_end(&got).into_iter().collect();
        let (body, truncated) = read_capped(resp, MAX_HTTP_BODY).await?;
        Ok(answer(status, headers, &body, truncated))
    };
    tokio::time::timeout(e.timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", e.timeout.as_secs_f64())))
}

/// The JSON form of an HTTP answer: text as is, other bytes in base64.
pub fn answer(
    status: u16,
    headers: BTreeMap<String, String>,
    body: &[u8],
    truncated: bool,
) -> Value {
    let (body, b64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    json!({"status": status, "headers": headers, "body": body,
           "body_base64": b64, "truncated": truncated})
}
