//! Outgoing HTTP: relaying a command to a real Ochothon portal (SPEC §6.3)
//! and the narrow `/http` egress of §6.6, both over hyper's client.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::{json, Value};

use crate::bundle::signature::hmac_sha1_hex;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Largest portal answer servo reads (the portal's JSON is small; this is a guard).
const MAX_PORTAL_ANSWER: usize = 16 * 1024 * 1024;
/// Largest body of an `/http` answer passed back to the script (§6.6).
pub const MAX_HTTP_BODY: usize = 1024 * 1024;

pub fn client() -> HttpClient {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new())
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

/// One `/http` request from a script (already allowed by the egress check).
pub struct Egress<'a> {
    pub method: Method,
    pub uri: hyper::Uri,
    pub headers: &'a BTreeMap<String, String>,
    pub body: Bytes,
    pub timeout: Duration,
}

/// Makes the request; `{"status", "headers", "body", "body_base64", "truncated"}`.
pub async fn http(client: &HttpClient, e: Egress<'_>) -> Result<Value, String> {
    let mut req = Request::builder().method(e.method).uri(e.uri);
    for (k, v) in e.headers {
        // The connection is ours to manage.
        if matches!(
            k.to_ascii_lowercase().as_str(),
            "host" | "connection" | "transfer-encoding" | "content-length" | "upgrade"
        ) {
            continue;
        }
        req = req.header(k, v);
    }
    let req = req
        .body(Full::new(e.body))
        .map_err(|err| format!("bad request: {err}"))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|err| format!("unreachable: {err}"))?;
        let status = resp.status().as_u16();
        let headers: BTreeMap<String, String> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
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
