//! A fake Ochothon portal: a real HTTP server (hyper, 127.0.0.1:0) in the
//! test process. It checks `X-Signature` against its token, stores uploaded
//! files, records every request, and can be told to be slow or answer garbage.
//! Also a tiny "pod" HTTP stub (`/ping` → `pong`) that counts its hits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the portal answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    Normal,
    /// Waits this long before every answer.
    Slow(Duration),
    /// Answers 200 with a body that is not JSON.
    Garbage,
}

/// One request the portal received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub line: String,
    pub signature: Option<String>,
    pub signature_ok: bool,
    pub files: Vec<(String, Vec<u8>)>,
}

pub struct PortalState {
    pub token: Option<String>,
    pub behaviour: Behaviour,
    pub requests: Vec<Recorded>,
    /// What `port` answers report: every pod at this address.
    pub pod: Option<SocketAddr>,
    /// More pods `port` answers report, `(ip, port)` as given: any text,
    /// a name or an address servo must refuse.
    pub pods: Vec<(String, u16)>,
    /// Requests to any path but `/shell` (something using the portal's
    /// address as a pod).
    pub other_hits: usize,
    /// Commands starting with this verb sleep (30 s) before answering.
    pub stall_verb: Option<String>,
}

pub struct FakePortal {
    pub url: String,
    pub state: Arc<Mutex<PortalState>>,
    /// Stalled requests in progress now, the most ever at once, and finished.
    pub stalled_now: Arc<AtomicUsize>,
    pub stalled_max: Arc<AtomicUsize>,
    pub stalled_done: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for FakePortal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakePortal {
    pub async fn start(token: Option<&str>) -> FakePortal {
        Self::start_with(token, None).await
    }

    /// The same portal serving HTTPS through `tls` (an `https://` URL).
    pub async fn start_tls(token: Option<&str>, tls: tokio_rustls::TlsAcceptor) -> FakePortal {
        Self::start_with(token, Some(tls)).await
    }

    async fn start_with(token: Option<&str>, tls: Option<tokio_rustls::TlsAcceptor>) -> FakePortal {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(PortalState {
            token: token.map(str::to_string),
            behaviour: Behaviour::Normal,
            requests: Vec::new(),
            pod: None,
            pods: Vec::new(),
            other_hits: 0,
            stall_verb: None,
        }));
        let counters = Counters {
            now: Arc::new(AtomicUsize::new(0)),
            max: Arc::new(AtomicUsize::new(0)),
            done: Arc::new(AtomicUsize::new(0)),
        };
        let (st, ct) = (Arc::clone(&state), counters.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, ct) = (Arc::clone(&st), ct.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (st, ct) = (Arc::clone(&st), ct.clone());
                        async move { Ok::<_, Infallible>(answer(st, ct, req).await) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        FakePortal {
            url: format!("{scheme}://{addr}"),
            state,
            stalled_now: counters.now,
            stalled_max: counters.max,
            stalled_done: counters.done,
            task,
        }
    }

    pub fn set(&self, f: impl FnOnce(&mut PortalState)) {
        f(&mut self.state.lock().unwrap());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }
}

#[derive(Clone)]
struct Counters {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
}

fn json_reply(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r
}

async fn answer(
    state: Arc<Mutex<PortalState>>,
    counters: Counters,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/shell" {
        state.lock().unwrap().other_hits += 1;
        return json_reply(StatusCode::NOT_FOUND, json!({}));
    }
    let line = req
        .headers()
        .get("x-shell")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let signature = req
        .headers()
        .get("x-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut files = Vec::new();
    if let Some(ct) = content_type.filter(|c| c.starts_with("multipart/")) {
        let boundary = multer::parse_boundary(&ct).expect("boundary");
        let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(body) });
        let mut mp = multer::Multipart::new(stream, boundary);
        while let Some(field) = mp.next_field().await.expect("multipart") {
            let name = field.name().unwrap_or("").to_string();
            assert_eq!(
                field.file_name(),
                Some(name.as_str()),
                "the portal reads request.files"
            );
            files.push((name, field.bytes().await.expect("part").to_vec()));
        }
    }
    let (behaviour, expected, pod, pods, stall) = {
        let s = state.lock().unwrap();
        let expected = s.token.as_ref().map(|t| {
            format!(
                "sha1={}",
                servo::bundle::signature::hmac_sha1_hex(t.as_bytes(), line.as_bytes())
            )
        });
        (
            s.behaviour.clone(),
            expected,
            s.pod,
            s.pods.clone(),
            s.stall_verb.clone(),
        )
    };
    let signature_ok = expected.is_none() || expected == signature;
    state.lock().unwrap().requests.push(Recorded {
        line: line.clone(),
        signature,
        signature_ok,
        files,
    });
    if !signature_ok {
        return json_reply(StatusCode::FORBIDDEN, json!({"error": "bad signature"}));
    }
    let verb = line.split_whitespace().next().unwrap_or("").to_string();
    if stall.as_deref() == Some(verb.as_str()) {
        let now = counters.now.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(30)).await;
        counters.now.fetch_sub(1, Ordering::SeqCst);
        counters.done.fetch_add(1, Ordering::SeqCst);
    }
    match behaviour {
        Behaviour::Normal => {}
        Behaviour::Slow(d) => tokio::time::sleep(d).await,
        Behaviour::Garbage => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"<html>oops</html>")));
            *r.status_mut() = StatusCode::OK;
            return r;
        }
    }
    let positionals: Vec<&str> = line
        .split_whitespace()
        .skip(1)
        .filter(|t| !t.starts_with('-'))
        .collect();
    let out = match verb.as_str() {
        "ls" => json!({"marathon.web": {"total": 1, "running": 1, "status": ""},
                       "app.web": {"total": 2, "running": 2, "status": ""}}),
        "port" => {
            let mut m = serde_json::Map::new();
            if let Some(pod) = pod {
                m.insert(
                    "app.web #1".into(),
                    json!({"ip": pod.ip().to_string(), "public": "", "ports": pod.port().to_string()}),
                );
            }
            for (i, (ip, port)) in pods.iter().enumerate() {
                m.insert(
                    format!("app.web #{}", i + 2),
                    json!({"ip": ip, "public": "", "ports": port.to_string()}),
                );
            }
            Value::Object(m)
        }
        "deploy" => Value::Object(
            positionals
                .iter()
                .filter(|p| p.ends_with(".yml"))
                .map(|p| (p.to_string(), json!({"ok": true, "up": [1]})))
                .collect(),
        ),
        _ => json!({}),
    };
    json_reply(
        StatusCode::OK,
        json!({"ok": true, "ms": 7, "out": out.to_string()}),
    )
}

/// A pod's HTTP endpoint: `/ping` → 200 `pong`, `/bin` → bytes that are not
/// UTF-8, `/echo` → the method, content type and body; else 404. Counts hits.
pub struct PodStub {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for PodStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodStub {
    pub async fn start() -> PodStub {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let h = Arc::clone(&h);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let path = req.uri().path().to_string();
                            let method = req.method().to_string();
                            let ct = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let got = req
                                .into_body()
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let (status, body) = match path.as_str() {
                                "/ping" => (StatusCode::OK, Bytes::from_static(b"pong")),
                                // Not UTF-8: the relay must send it base64.
                                "/bin" => (StatusCode::OK, Bytes::from_static(b"\xff\x00\x01")),
                                "/echo" => {
                                    let mut echo = format!("{method} {ct} ").into_bytes();
                                    echo.extend_from_slice(&got);
                                    (StatusCode::OK, Bytes::from(echo))
                                }
                                _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"no such page")),
                            };
                            let mut r = Response::new(Full::new(body));
                            *r.status_mut() = status;
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        PodStub { addr, hits, task }
    }
}
