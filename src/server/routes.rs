//! Routes (SPEC §2): `POST /run/<scripts>`, `GET /health`; 404/405 otherwise.
//!
//! A run request goes through its checks in this order, answering the first
//! that fails with one line: script list, variables and concurrency group
//! name (400), signature header (403), content type (415), coordination
//! for a v2 or grouped request (503 while ZooKeeper is down, §11), declared
//! size (413), capacity in the shared pool and room on the disk above its
//! reserve (503); then the upload streams to disk while hashed (413 past
//! the limit, 400 without a `tgz` field, 408 when it stalls or is slower
//! than the minimum rate) and the signature is verified (403; an unknown
//! tenant's upload goes through all of this too, against a key nobody
//! has); then the tenant's own place, here and across instances (503), and
//! the v2 replay check (403). Only then is anything in the archive looked
//! at: the run starts (and, in a concurrency group, waits for its turn).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use super::respond::{full, negotiate, reject, ChannelBody, Form, ResponseBody};
use super::{replay, Server};
use crate::bundle::signature::{self, ArchiveDigest, Scheme, Signature, SignatureError, V2Context};
use crate::bundle::upload::{self, UploadError};
use crate::coordination::{PlaceError, Seen, TenantPlace};
use crate::run::{self, request, RunEvent, RunSpec};
use crate::tenants::Tenant;

/// The same answer for a bad signature and an unknown tenant (§2.1).
const FORBIDDEN: &str = "invalid signature or unknown tenant";

pub async fn handle(
    server: Arc<Server>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Response<ResponseBody> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/health") => health(&server),
        (&Method::GET, "/metrics") => metrics(&server),
        (&Method::POST, p) if p.starts_with("/run/") => {
            let form = negotiate(req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()));
            // The tenant the request claims, for the audit record of a refusal.
            let claimed = match req.headers().get("x-tenant") {
                Some(v) => String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(64)
                    .collect(),
                None => "default".to_string(),
            };
            let (parts, body) = req.into_parts();
            let mut body = Some(body);
            let result = start_run(&server, &parts, &mut body, remote, form).await;
            if let Some(unread) = body {
                // Refused before its body was read (403, 413, 415...): read
                // and drop a bounded part of it while the answer goes out, so
                // that a client still sending gets the answer, not a reset.
                linger(unread);
            }
            match result {
                Ok(resp) => resp,
                Err(rejection) => {
                    let Rejection(status, reason) = rejection;
                    let label = match status.as_u16() {
                        400 => "bad_request",
                        403 => "forbidden",
                        408 => "timeout",
                        413 => "too_large",
                        415 => "unsupported_type",
                        503 => "busy",
                        _ => "internal",
                    };
                    server.ctx.metrics.rejected(label);
                    // Rate-limited per label, fields cut short (§2.1).
                    server.rejections.record(
                        label,
                        &claimed,
                        json!({"remote": remote.to_string(), "status": status.as_u16(), "reason": reason}),
                    );
                    let mut resp = reject(status, form, &reason);
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        resp.headers_mut()
                            .insert("retry-after", HeaderValue::from_static("5"));
                    }
                    resp
                }
            }
        }
        (&Method::POST, p) if p.starts_with("/callback/") => receive_callback(&server, req).await,
        (_, "/health") | (_, "/metrics") => method_not_allowed("GET"),
        (_, p) if p.starts_with("/run/") => method_not_allowed("POST"),
        _ => reject(
            StatusCode::NOT_FOUND,
            Form::Text,
            "not found (servo serves POST /run/<scripts> and GET /health)",
        ),
    }
}

fn method_not_allowed(allow: &'static str) -> Response<ResponseBody> {
    let mut resp = reject(
        StatusCode::METHOD_NOT_ALLOWED,
        Form::Text,
        &format!("method not allowed (use {allow})"),
    );
    resp.headers_mut()
        .insert("allow", HeaderValue::from_static(allow));
    resp
}

fn health(server: &Server) -> Response<ResponseBody> {
    let config = server.config();
    let info = server.ctx.sandbox.info();
    let in_flight = server.in_flight.load(Ordering::SeqCst);
    let admitted = server.admitted.load(Ordering::SeqCst);
    // While failing, asking is also the attempt that ends the outage.
    let audit_ok = server.ctx.audit.probe().is_ok();
    let cluster = server.ctx.coordination.status();
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": server.started.elapsed().as_secs(),
        "portal": config.portal.display(),
        // Each tenant's portal (its own or the server's), without credentials.
        "portals": config
            .tenants
            .iter()
            .map(|t| (t.name.clone(), json!(t.portal.as_ref().unwrap_or(&config.portal).display())))
            .collect::<serde_json::Map<_, _>>(),
        "pod_cidrs": config.pod_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "legacy_signatures": if config.legacy_signatures_allowed() { "allowed" } else { "refused" },
        "runs_in_flight": in_flight,
        "queue": admitted.saturating_sub(in_flight),
        "audit": if audit_ok { "ok" } else { "failing" },
        "cluster": {
            "instances": cluster.instances,
            "coordination": cluster.coordination,
        },
        "sandbox": {
            "namespaces": info.namespaces,
            "rootless": info.rootless,
            "seccomp": info.seccomp_sha256,
            "limits": info.limits,
        },
    });
    let status = if audit_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    full(status, "application/json", format!("{body}\n"))
}

fn metrics(server: &Server) -> Response<ResponseBody> {
    let in_flight = server.in_flight.load(Ordering::SeqCst);
    let queue = server
        .admitted
        .load(Ordering::SeqCst)
        .saturating_sub(in_flight);
    full(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        server.ctx.metrics.render(in_flight, queue),
    )
}

async fn receive_callback(server: &Server, req: Request<Incoming>) -> Response<ResponseBody> {
    use super::callback::{self, CallbackError, MAX_CALLBACK_BYTES};
    let path = req.uri().path().to_string();
    let declared =
        header_str(req.headers(), CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    let result = async {
        let (secret, name) = callback::parse_path(&path)?;
        let target = server
            .callbacks
            .lookup(secret)
            .ok_or(CallbackError::NotFound)?;
        let _place = target.enter()?;
        if declared.is_some_and(|n| n > MAX_CALLBACK_BYTES) {
            return Err(CallbackError::TooLarge);
        }
        let idle = std::time::Duration::from_secs(server.config().request_timeout_s);
        let body = crate::bundle::upload::idle_limited(req.into_body().into_data_stream(), idle);
        let stored = callback::store(&target, &name, body).await?;
        // Like the other records of a run under way (a script's end), a
        // callback is not refused while the audit log cannot be written:
        // its record is then counted in `audit.resumed`'s `lost_records`.
        if let Err(e) = server
            .ctx
            .audit
            .commit(
                "callback.received",
                &target.run,
                &target.tenant,
                json!({"name": name, "bytes": stored.bytes, "sha256": stored.sha256}),
            )
            .await
        {
            tracing::warn!(
                "run {}: callback {name} stored but not audited: {e}",
                target.run
            );
        }
        Ok(format!("stored {} bytes as {name}", stored.bytes))
    }
    .await;
    match result {
        Ok(msg) => full(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            format!("{msg}\n"),
        ),
        Err(e) => {
            let status = match e {
                CallbackError::NotFound => StatusCode::NOT_FOUND,
                CallbackError::Name(_) | CallbackError::Body(_) => StatusCode::BAD_REQUEST,
                CallbackError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                CallbackError::Stalled(_) => StatusCode::REQUEST_TIMEOUT,
                CallbackError::Exists(_) | CallbackError::Io(_) => StatusCode::CONFLICT,
                CallbackError::TooMany => StatusCode::TOO_MANY_REQUESTS,
            };
            let mut resp = reject(status, Form::Text, &e.to_string());
            if status == StatusCode::TOO_MANY_REQUESTS {
                resp.headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
            }
            resp
        }
    }
}

struct Rejection(StatusCode, String);

fn bad_request(msg: impl Into<String>) -> Rejection {
    Rejection(StatusCode::BAD_REQUEST, msg.into())
}

fn forbidden() -> Rejection {
    Rejection(StatusCode::FORBIDDEN, FORBIDDEN.into())
}

/// Holds a place among the admitted requests (the one pool shared by every
/// request, verified or not) and, once its signature holds, one of its
/// tenant's places; gives them back on drop.
struct Admission {
    server: Arc<Server>,
    tenant: Option<String>,
    /// The tenant's place across instances (§11).
    place: Option<TenantPlace>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.server.admitted.fetch_sub(1, Ordering::SeqCst);
        let Some(tenant) = &self.tenant else { return };
        let mut per_tenant = self
            .server
            .tenant_admitted
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_tenant.get_mut(tenant) {
            *n = n.saturating_sub(1);
        }
    }
}

/// ZooKeeper cannot be reached: what needs it is refused (§11).
fn coordination_down() -> Rejection {
    busy("busy: coordination (ZooKeeper) is unavailable for v2 signatures and concurrency groups; retry later")
}

fn busy(m: &str) -> Rejection {
    Rejection(StatusCode::SERVICE_UNAVAILABLE, m.to_string())
}

/// A place in the shared pool (≤ max_runs + max_queue), taken before the
/// upload: whoever sends it, it costs only this.
fn admit(server: &Arc<Server>) -> Result<Admission, Rejection> {
    let cap = server.config().max_runs + server.config().max_queue;
    server
        .admitted
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < cap).then_some(n + 1)
        })
        .map_err(|_| busy("busy: too many runs and queued requests; retry later"))?;
    let admission = Admission {
        server: server.clone(),
        tenant: None,
        place: None,
    };
    // After taking the place: a drain that set the flag and then saw no
    // place taken cannot miss this request (both sides are SeqCst).
    if !server.accepting.load(Ordering::SeqCst) {
        return Err(busy(
            "busy: servo is drained (Ochothon off or kill) and accepts no runs; retry later",
        ));
    }
    Ok(admission)
}

impl Admission {
    /// One of the tenant's `concurrent_runs` places, taken only once the
    /// signature holds (§2.1): a stranger cannot lock a tenant out.
    fn for_tenant(&mut self, tenant: &Tenant) -> Result<(), Rejection> {
        let mut per_tenant = self
            .server
            .tenant_admitted
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n = per_tenant.entry(tenant.name.clone()).or_default();
        if tenant.limits.concurrent_runs > 0 && *n >= tenant.limits.concurrent_runs {
            return Err(busy(
                "busy: this tenant has its concurrent_runs running; retry later",
            ));
        }
        *n += 1;
        self.tenant = Some(tenant.name.clone());
        Ok(())
    }
}

/// Space an upload being written to the state dir's disk may still take;
/// given back on drop (once written, the file itself shows in statvfs).
struct SpoolClaim<'a> {
    server: &'a Server,
    bytes: u64,
}

impl Drop for SpoolClaim<'_> {
    fn drop(&mut self) {
        self.server
            .spool_claims
            .fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// The free space kept on the state dir's filesystem when --disk-reserve-mib
/// is not given: 64 MiB, or 5 % of the filesystem when that is less.
const DEFAULT_DISK_RESERVE: u64 = 64 << 20;

/// Claims `bytes` of the state dir's disk for an upload, or refuses (503)
/// before anything is written when, with what other uploads may still
/// write, it could eat into the reserve the audit log needs (§2.1).
fn claim_disk(server: &Server, bytes: u64) -> Result<SpoolClaim<'_>, Rejection> {
    let config = server.config();
    let stat = nix::sys::statvfs::statvfs(&config.state_dir).map_err(|e| {
        storage_rejection(
            "check the free space",
            &std::io::Error::from_raw_os_error(e as i32),
        )
    })?;
    let unit = stat.fragment_size() as u64;
    let free = (stat.blocks_available() as u64).saturating_mul(unit);
    let size = (stat.blocks() as u64).saturating_mul(unit);
    let reserve = config
        .disk_reserve
        .unwrap_or(DEFAULT_DISK_RESERVE.min(size / 20));
    let others = server.spool_claims.fetch_add(bytes, Ordering::SeqCst);
    let claim = SpoolClaim { server, bytes };
    if free < reserve.saturating_add(others).saturating_add(bytes) {
        return Err(busy(&format!(
            "busy: no space left on the server's disk for this upload of up to {bytes} bytes \
             (servo keeps {} MiB free for its audit log); retry later",
            reserve >> 20
        )));
    }
    Ok(claim)
}

/// Remembers an accepted v2 signature until its window closes, on disk
/// before the run goes ahead; refuses a second use within the window.
async fn remember_v2(
    server: &Server,
    mac: &[u8],
    timestamp: u64,
    now: u64,
) -> Result<(), Rejection> {
    let expiry = timestamp + signature::V2_WINDOW_S;
    // Shared (ZooKeeper) when coordinating, else this instance's file.
    let seen = match server.ctx.coordination.remember_v2(mac, expiry).await {
        Some(Ok(seen)) => Ok(seen),
        Some(Err(e)) => {
            tracing::warn!("cannot record a v2 signature: {e}");
            return Err(coordination_down());
        }
        None => server.replay.remember(mac, expiry, now).map(|s| match s {
            replay::Seen::Fresh => Seen::Fresh,
            replay::Seen::Replayed => Seen::Replayed,
            replay::Seen::Full => Seen::Full,
        }),
    };
    match seen {
        Ok(Seen::Fresh) => Ok(()),
        Ok(Seen::Replayed) => Err(Rejection(
            StatusCode::FORBIDDEN,
            format!(
                "{}: this v2 signature was already used; sign the request again",
                signature::REPLAYED
            ),
        )),
        Ok(Seen::Full) => Err(Rejection(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: too many recent v2 signatures to remember; retry later".into(),
        )),
        Err(e) => {
            tracing::error!("cannot record a v2 signature in the replay cache: {e}");
            Err(Rejection(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy: the replay cache cannot be written; retry later".into(),
            ))
        }
    }
}

/// Removes a run directory unless the run took it over.
/// Removes a refused request's run directory and spooled upload.
struct RunDirGuard(Option<(PathBuf, PathBuf)>);

impl Drop for RunDirGuard {
    fn drop(&mut self) {
        if let Some((dir, archive)) = self.0.take() {
            let _ = std::fs::remove_file(archive);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn random_hex(bytes: usize) -> Result<String, Rejection> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| {
        Rejection(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no randomness: {e}"),
        )
    })?;
    Ok(hex::encode(buf))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[derive(Clone)]
enum BodyKind {
    Multipart(String),
    Raw,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, Rejection> {
    let unsupported = || {
        Rejection(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type (send multipart/form-data with a tgz field, or application/gzip)".into(),
        )
    };
    let ct = header_str(headers, CONTENT_TYPE.as_str()).ok_or_else(unsupported)?;
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "multipart/form-data" => multer::parse_boundary(ct)
            .map(BodyKind::Multipart)
            .map_err(|_| bad_request("bad multipart body: no boundary in Content-Type")),
        "application/gzip" | "application/x-gzip" | "application/octet-stream" => Ok(BodyKind::Raw),
        _ => Err(unsupported()),
    }
}

fn upload_rejection(e: UploadError) -> Rejection {
    match e {
        UploadError::TooLarge(max) => Rejection(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("upload larger than {max} bytes"),
        ),
        UploadError::Body(m) => bad_request(format!("the request body could not be read: {m}")),
        e @ (UploadError::Multipart(_) | UploadError::NoArchiveField) => bad_request(e.to_string()),
        UploadError::Io(e) => storage_rejection("store the upload", &e),
        e @ (UploadError::Stalled(_) | UploadError::TooSlow(_)) => {
            Rejection(StatusCode::REQUEST_TIMEOUT, e.to_string())
        }
    }
}

/// A full disk is a passing condition (runs end and free their space): 503
/// with Retry-After, as for any other shortage. Other I/O errors are ours: 500.
fn storage_rejection(what: &str, e: &std::io::Error) -> Rejection {
    if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
        return Rejection(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("busy: no space left on the server's disk to {what}; retry later"),
        );
    }
    Rejection(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("could not {what}: {e}"),
    )
}

/// Streams the archive to `dest`, from a multipart `tgz` field or a raw body.
async fn receive_archive(
    body: Incoming,
    kind: BodyKind,
    dest: &std::path::Path,
    storage: upload::Storage,
    max: u64,
    pace: upload::Pace,
    digest: &mut ArchiveDigest,
) -> Result<u64, Rejection> {
    let stream = upload::paced(body.into_data_stream(), pace);
    match kind {
        BodyKind::Raw => upload::save(stream, dest, storage, max, digest)
            .await
            .map_err(upload_rejection),
        BodyKind::Multipart(boundary) => {
            upload::save_multipart(stream, boundary, dest, storage, max, digest)
                .await
                .map_err(upload_rejection)
        }
    }
}

/// Reads and drops what is left of a refused request's body, for at most
/// 2 s and 16 MiB (a lingering close, as web servers do).
fn linger(mut body: Incoming) {
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(2));
        tokio::pin!(deadline);
        let mut seen: usize = 0;
        while seen < 16 << 20 {
            tokio::select! {
                _ = &mut deadline => break,
                frame = body.frame() => match frame {
                    Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                },
            }
        }
    });
}

async fn start_run(
    server: &Arc<Server>,
    req: &hyper::http::request::Parts,
    body: &mut Option<Incoming>,
    remote: SocketAddr,
    form: Form,
) -> Result<Response<ResponseBody>, Rejection> {
    let request = read_request(server, req)?;
    let admission = preflight(server, &request)?;
    let body = body.take().ok_or_else(|| bad_request("no request body"))?;
    let received = receive(server, &request, body).await?;
    let verified = verify(server, request, received, admission).await?;
    let (id, events) = launch(server, verified, remote).await?;
    Ok(respond(form, &id, events).await)
}

/// What a run request says before its body is read: the path, the headers,
/// the claimed tenant (or a decoy for an unknown one) and the signature.
struct RunRequest {
    raw_path: String,
    scripts: Vec<String>,
    vars: Vec<(String, String)>,
    /// The concurrency group the request names (§11), bound by v2.
    named_group: Option<String>,
    /// Whether the claimed tenant exists; when not, `tenant` is a decoy.
    known: bool,
    tenant: Tenant,
    sig: Signature,
    /// Said only to whoever proves the token (after verifying).
    scheme_refused: bool,
    timestamp: Option<String>,
    now: u64,
    /// A v2 signature's checked timestamp.
    v2_time: Option<u64>,
    kind: BodyKind,
    declared: Option<u64>,
    /// Bytes of multipart framing allowed around the archive.
    framing: u64,
}

/// Reads the script list, variables, group, tenant and signature headers.
fn read_request(
    server: &Arc<Server>,
    req: &hyper::http::request::Parts,
) -> Result<RunRequest, Rejection> {
    let raw_path = req.uri.path().to_string();
    let scripts = request::parse_scripts(&raw_path["/run/".len()..])
        .map_err(|e| bad_request(e.to_string()))?;
    let headers = &req.headers;
    let var_headers = headers.iter().filter_map(|(name, value)| {
        name.as_str()
            .strip_prefix("x-var-")
            .map(|suffix| (suffix, value.as_bytes()))
    });
    let vars = request::parse_vars(var_headers).map_err(|e| bad_request(e.to_string()))?;
    let named_group = match headers.get("x-servo-concurrency") {
        Some(v) => {
            let name = v.to_str().unwrap_or("");
            if !crate::coordination::valid_group_name(name) {
                return Err(bad_request(
                    "bad X-Servo-Concurrency: use 1-64 characters of A-Z, a-z, 0-9, ., _ and -",
                ));
            }
            Some(name.to_string())
        }
        None => None,
    };
    let tenant_name = match headers.get("x-tenant") {
        Some(v) => v.to_str().map_err(|_| forbidden())?.to_string(),
        None => "default".to_string(),
    };
    // An unknown tenant's upload is read and checked like a known one's,
    // against a key nobody has, so that its 403 looks the same in body and
    // timing (§2.1): whether a tenant exists is not told to strangers.
    let config = server.config();
    let known = config.tenant(&tenant_name).is_some();
    let tenant: Tenant = config.tenant(&tenant_name).cloned().unwrap_or_else(|| {
        let mut decoy =
            Tenant::default_tenant(server.decoy_token.clone(), crate::limits::Limits::default());
        decoy.name = tenant_name.clone();
        decoy
    });
    let sig_text = header_str(headers, "x-signature").ok_or_else(forbidden)?;
    let sig = Signature::parse(sig_text).map_err(|_| forbidden())?;
    let scheme_refused = tenant.require_v2 && sig.scheme != Scheme::V2;
    let timestamp = header_str(headers, "x-servo-timestamp").map(str::to_string);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let v2_time = match (sig.scheme, timestamp.as_deref()) {
        (Scheme::V2, Some(ts)) => {
            Some(signature::check_v2_timestamp(ts, now).map_err(|_| forbidden())?)
        }
        (Scheme::V2, None) => return Err(forbidden()),
        _ => None,
    };
    let kind = body_kind(headers)?;
    let declared = header_str(headers, CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    // A multipart body carries some framing around the archive.
    let framing = if matches!(kind, BodyKind::Multipart(_)) {
        upload::MULTIPART_FRAMING
    } else {
        0
    };
    Ok(RunRequest {
        raw_path,
        scripts,
        vars,
        named_group,
        known,
        tenant,
        sig,
        scheme_refused,
        timestamp,
        now,
        v2_time,
        kind,
        declared,
        framing,
    })
}

/// What is refused before the upload: coordination a v2 or grouped request
/// needs (§11), a declared size over the limit, an audit log that cannot be
/// written; then a place in the shared pool.
fn preflight(server: &Arc<Server>, request: &RunRequest) -> Result<Admission, Rejection> {
    let config = server.config();
    let coordination = &server.ctx.coordination;
    if (request.sig.scheme == Scheme::V2 || request.named_group.is_some())
        && !coordination.available()
    {
        return Err(coordination_down());
    }
    if request
        .declared
        .is_some_and(|n| n > config.max_upload + request.framing)
    {
        return Err(upload_rejection(UploadError::TooLarge(config.max_upload)));
    }
    if server.ctx.audit.probe().is_err() {
        return Err(Rejection(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit log cannot be written; runs are refused until it can".into(),
        ));
    }
    admit(server)
}

/// An upload on disk, hashed as it came in.
struct Received {
    id: String,
    run_dir: PathBuf,
    archive: PathBuf,
    /// Removes the run directory and the upload unless the run takes them.
    guard: RunDirGuard,
    digest: signature::FinishedDigest,
    /// The archive's SHA-256 when v2 computed it, and its size.
    sha256_hex: Option<String>,
    size: u64,
}

/// Streams the body to the run's directory (small uploads) or the spool on
/// the state dir's disk (big ones, within the disk reserve), hashing it.
async fn receive(
    server: &Arc<Server>,
    request: &RunRequest,
    body: Incoming,
) -> Result<Received, Rejection> {
    let config = server.config();
    // Undeclared sizes count as the limit.
    let small = request.declared.is_some_and(|n| n <= super::SMALL_UPLOAD);
    let disk_claim = if server.runs_on_tmpfs && small {
        None
    } else {
        Some(claim_disk(
            server,
            request
                .declared
                .unwrap_or(config.max_upload + request.framing),
        )?)
    };
    let id = random_hex(8)?;
    let run_dir = server.runs_dir.join(&id);
    std::fs::create_dir(&run_dir).map_err(|e| storage_rejection("create the run directory", &e))?;
    let archive = if server.runs_on_tmpfs && !small {
        server.spool_dir.join(format!("{id}.tgz"))
    } else {
        run_dir.join("upload.tgz")
    };
    let guard = RunDirGuard(Some((run_dir.clone(), archive.clone())));
    let mut digest = ArchiveDigest::new(request.sig.scheme, request.tenant.token.as_bytes());
    // A small upload: its audit digest as it streams, and, on servo's
    // tmpfs, its file written without the blocking pool (three hand-offs
    // fewer per run).
    if small {
        digest = digest.with_sha256();
    }
    let storage = if server.runs_on_tmpfs && small {
        upload::Storage::Memory
    } else {
        upload::Storage::Disk
    };
    receive_archive(
        body,
        request.kind.clone(),
        &archive,
        storage,
        config.max_upload,
        upload::Pace {
            idle: std::time::Duration::from_secs(config.request_timeout_s),
            min_rate: config.min_upload_rate,
            grace: std::time::Duration::from_secs(config.upload_grace_s),
        },
        &mut digest,
    )
    .await?;
    drop(disk_claim); // written: the file itself now shows in the free space
    let digest = digest.finish();
    server
        .ctx
        .metrics
        .upload_bytes
        .fetch_add(digest.size, Ordering::Relaxed);
    Ok(Received {
        id,
        run_dir,
        archive,
        guard,
        sha256_hex: digest.sha256_hex.clone(),
        size: digest.size,
        digest,
    })
}

/// A run whose signature held and which holds its tenant's place.
struct Verified {
    request: RunRequest,
    id: String,
    run_dir: PathBuf,
    archive: PathBuf,
    guard: RunDirGuard,
    size: u64,
    admission: Admission,
    group: Option<String>,
    sha256: String,
}

/// Checks the signature, then takes the tenant's place (here and across
/// instances) and remembers a v2 signature: from here the run is the
/// tenant's (§2.1, §11).
async fn verify(
    server: &Arc<Server>,
    request: RunRequest,
    received: Received,
    mut admission: Admission,
) -> Result<Verified, Rejection> {
    let v2 = request.timestamp.as_deref().map(|ts| V2Context {
        timestamp: ts,
        path: &request.raw_path,
        tenant: &request.tenant.name,
        vars: &request.vars,
        concurrency: request.named_group.as_deref(),
    });
    let Received {
        id,
        run_dir,
        archive,
        guard,
        digest,
        sha256_hex,
        size,
    } = received;
    digest
        .verify(&request.sig, request.tenant.token.as_bytes(), v2.as_ref())
        .map_err(|_| forbidden())?;
    if !request.known {
        return Err(forbidden());
    }
    if request.scheme_refused {
        return Err(Rejection(
            StatusCode::FORBIDDEN,
            SignatureError::SchemeRefused.to_string(),
        ));
    }
    let tenant = &request.tenant;
    let coordination = &server.ctx.coordination;
    let group = request
        .named_group
        .clone()
        .or_else(|| tenant.concurrency.clone());
    let needs_coordination = request.v2_time.is_some() || group.is_some();
    if needs_coordination && !coordination.available() {
        return Err(coordination_down());
    }
    // Verified: now, and only now, the run counts against its tenant.
    admission.for_tenant(tenant)?;
    let coordinating = std::time::Instant::now();
    match coordination
        .tenant_place(&tenant.name, tenant.limits.concurrent_runs, &id)
        .await
    {
        Ok(place) => admission.place = Some(place),
        Err(PlaceError::Busy) => {
            return Err(busy(
                "busy: this tenant has its concurrent_runs running; retry later",
            ))
        }
        Err(PlaceError::Down(why)) if needs_coordination => {
            tracing::warn!("coordination: {why}");
            return Err(coordination_down());
        }
        // A legacy run outside groups goes on, counted here only.
        Err(PlaceError::Down(why)) => tracing::warn!(
            "coordination: {why}; run {id} counts against {}'s concurrent_runs on this instance only",
            tenant.name
        ),
    }
    if let Some(ts) = request.v2_time {
        remember_v2(server, &request.sig.mac, ts, request.now).await?;
    }
    server
        .ctx
        .metrics
        .coordination
        .observe(coordinating.elapsed().as_secs_f64());
    // The audit log's digest; computed already for v2 and small uploads.
    let sha256 = match sha256_hex {
        Some(h) => h,
        None => {
            let path = archive.clone();
            tokio::task::spawn_blocking(move || signature::sha256_file(&path))
                .await
                .map_err(|e| storage_rejection("hash the archive", &std::io::Error::other(e)))?
                .map_err(|e| storage_rejection("hash the archive", &e))?
        }
    };
    Ok(Verified {
        request,
        id,
        run_dir,
        archive,
        guard,
        size,
        admission,
        group,
        sha256,
    })
}

/// Waits for a run slot (the queue), leases a sandbox uid, writes
/// `run.started`, registers the callback and starts the run as its own task.
async fn launch(
    server: &Arc<Server>,
    verified: Verified,
    remote: SocketAddr,
) -> Result<(String, mpsc::UnboundedReceiver<RunEvent>), Rejection> {
    let config = server.config();
    let Verified {
        request,
        id,
        run_dir,
        archive,
        mut guard,
        size,
        admission,
        group,
        sha256,
    } = verified;
    let permit = server
        .run_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| {
            Rejection(
                StatusCode::SERVICE_UNAVAILABLE,
                "servo is shutting down".into(),
            )
        })?;
    let lease = server.ctx.sandbox.lease_ids().ok_or_else(|| {
        Rejection(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: no free sandbox uid; retry later".into(),
        )
    })?;
    let tenant = request.tenant;
    // Written now, made durable by the run's next synced record (its first
    // `bundle.decrypted` or `script.started`, or `run.finished`) before
    // anything of the run is run or relayed: the run holds its lines until
    // then (run::Reporter; a streamed answer's status and run header may go
    // first), and unpacking into its own volume meanwhile is seen by no
    // one. One fsync fewer per run.
    server
        .ctx
        .audit
        .note(
            "run.started",
            &id,
            &tenant.name,
            json!({
                "remote": remote.to_string(),
                "scripts": request.scripts,
                "variables": request.vars.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "archive_sha256": sha256,
                "archive_bytes": size,
                "signature": request.sig.scheme.as_str(),
                "concurrency": group,
            }),
        )
        .map_err(|e| Rejection(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    // Lets a restart after a crash close this run's record (best effort).
    if let Err(e) = std::fs::write(run_dir.join(super::STARTED_MARK), &tenant.name) {
        tracing::warn!("run {id}: cannot write its start mark: {e}");
    }

    // ≥ 128 bits: the callback URL is the only thing guarding it.
    let callback_secret = match &config.public_url {
        Some(_) => Some(random_hex(16)?),
        None => None,
    };
    let callback = callback_secret
        .as_ref()
        .zip(config.public_url.as_ref())
        .map(|(secret, u)| format!("{u}/callback/{secret}"));
    if let Some(secret) = &callback_secret {
        server.callbacks.register(
            secret,
            super::callback::Target::new(
                crate::sandbox::workdir::RunVolume::work_of(&run_dir),
                lease.uid,
                lease.gid,
                &id,
                &tenant.name,
            ),
        );
    }
    let spec = RunSpec {
        id: id.clone(),
        tenant,
        scripts: request.scripts,
        vars: request.vars,
        run_dir,
        archive,
        callback,
        concurrency: group,
    };
    guard.0 = None; // the run removes its directory itself from here on
    let (tx, rx) = mpsc::unbounded_channel();
    server.in_flight.fetch_add(1, Ordering::SeqCst);
    let (srv, ctx) = (server.clone(), server.ctx.clone());
    tokio::spawn(async move {
        // The run is its own task: a client that disconnects does not stop it.
        run::execute(ctx, spec, lease, tx).await;
        if let Some(secret) = callback_secret {
            srv.callbacks.remove(&secret);
        }
        drop(permit);
        drop(admission);
        srv.in_flight.fetch_sub(1, Ordering::SeqCst);
        srv.run_ended.notify_waiters();
    });
    Ok((id, rx))
}

/// Bytes of NDJSON gathered into one chunk before it is sent.
const NDJSON_CHUNK: usize = 64 * 1024;

/// One NDJSON line (§2.2): `{"line": ...}`.
fn ndjson_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(b"{\"line\":\"");
    json_escape(out, line.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// `text` escaped as in a JSON string, byte for byte as `serde_json`
/// writes it (`\"`, `\\`, `\b \f \n \r \t`, other controls `\u00xx`).
/// Eight bytes are checked at a time, and runs with nothing to escape are
/// copied whole: serde_json's byte-at-a-time walk was 18 % of the server's
/// CPU on a 16 MiB log.
fn json_escape(out: &mut Vec<u8>, text: &[u8]) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Exact for "some byte is zero" / "some byte is below n" (n <= 128).
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let has_below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH != 0;
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        if let Some(word) = text.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            let w = u64::from_le_bytes(w);
            if !(has_below(w, 0x20)
                || has_zero(w ^ (ONES * u64::from(b'"')))
                || has_zero(w ^ (ONES * u64::from(b'\\'))))
            {
                i += 8;
                continue;
            }
        }
        let b = text[i];
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                &[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&text[copied..i]);
        out.extend_from_slice(escaped);
        i += 1;
        copied = i;
    }
    out.extend_from_slice(&text[copied..]);
}

/// An event's NDJSON lines (§2.2): `{"line": ...}` each, or the last
/// `{"ok", "run", "ms"}`.
fn ndjson_event(out: &mut Vec<u8>, event: &RunEvent, run_id: &str) {
    match event {
        RunEvent::Line(line) => ndjson_line(out, line),
        RunEvent::Lines(lines) => lines.iter().for_each(|line| ndjson_line(out, line)),
        RunEvent::Done(o) => {
            let last = json!({"ok": u8::from(o.ok), "run": run_id, "ms": o.ms});
            out.extend_from_slice(last.to_string().as_bytes());
            out.push(b'\n');
        }
    }
}

/// The run's answer in the form the client asked for (§2.2): NDJSON as the
/// run goes, or the whole log (JSON, or text with 200/412) at its end.
async fn respond(
    form: Form,
    id: &str,
    mut rx: mpsc::UnboundedReceiver<RunEvent>,
) -> Response<ResponseBody> {
    let run_header = HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("?"));
    let mut resp = match form {
        Form::Ndjson => {
            let (btx, brx) = mpsc::unbounded_channel::<Bytes>();
            let run_id = id.to_string();
            tokio::spawn(async move {
                // The events already queued go out as one chunk, each line
                // escaped straight into it: no JSON value, no string per line.
                while let Some(first) = rx.recv().await {
                    let mut chunk = Vec::with_capacity(4096);
                    let mut next = Some(first);
                    while let Some(event) = next.take() {
                        ndjson_event(&mut chunk, &event, &run_id);
                        if chunk.len() < NDJSON_CHUNK {
                            next = rx.try_recv().ok();
                        }
                    }
                    if btx.send(Bytes::from(chunk)).is_err() {
                        break; // the client went away; the run goes on
                    }
                }
            });
            let mut resp = Response::new(ChannelBody::new(brx).boxed());
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
            resp
        }
        Form::Json | Form::Text => {
            let mut lines = Vec::new();
            let mut outcome = None;
            while let Some(event) = rx.recv().await {
                match event {
                    RunEvent::Line(l) => lines.push(l),
                    RunEvent::Lines(ls) => lines.extend(ls.iter().map(str::to_owned)),
                    RunEvent::Done(o) => outcome = Some(o),
                }
            }
            let outcome = outcome.unwrap_or(run::Outcome {
                ok: false,
                reason: Some("unexpected failure (the run ended without a result)".into()),
                ms: 0,
            });
            if form == Form::Json {
                let body =
                    json!({"ok": u8::from(outcome.ok), "log": lines, "run": id, "ms": outcome.ms});
                full(StatusCode::OK, "application/json", format!("{body}\n"))
            } else {
                let status = if outcome.ok {
                    StatusCode::OK
                } else {
                    StatusCode::PRECONDITION_FAILED
                };
                full(status, "text/plain; charset=utf-8", lines.join("\n"))
            }
        }
    };
    resp.headers_mut().insert("x-servo-run", run_header);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_are_json_whatever_they_hold() {
        let lines = [
            "plain",
            "a \"quoted\" \\ path",
            "tab\tand\u{1}control",
            "é 中 🙂",
            "",
        ];
        let mut out = Vec::new();
        // Servo's own line, then a script's batch.
        ndjson_event(&mut out, &RunEvent::Line(lines[0].to_string()), "r1");
        let mut batch = crate::run::log::Lines::default();
        lines[1..].iter().for_each(|line| batch.push(line));
        ndjson_event(&mut out, &RunEvent::Lines(batch), "r1");
        let done = run::Outcome {
            ok: true,
            reason: None,
            ms: 7,
        };
        ndjson_event(&mut out, &RunEvent::Done(done), "r1");
        let text = String::from_utf8(out).expect("UTF-8");
        let got: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        for (value, line) in got.iter().zip(lines) {
            assert_eq!(value, &json!({ "line": line }));
        }
        assert_eq!(got[lines.len()], json!({"ok": 1, "run": "r1", "ms": 7}));
        assert!(text.ends_with('\n'));
    }

    /// The escaper writes what serde_json writes, for every character
    /// below 0x80 and a few beyond, at every offset in a word, alone and
    /// among plain text.
    #[test]
    fn json_escape_is_serde_json_byte_for_byte() {
        let mut chars: Vec<char> = (0u8..0x80).map(char::from).collect();
        chars.extend(['é', '中', '🙂', '\u{7f}', '\u{2028}', '\u{fffd}']);
        for c in chars {
            for before in 0..10 {
                for after in [0, 1, 7, 8, 9, 17] {
                    let text = format!("{}{c}{}", "a".repeat(before), "b".repeat(after));
                    let mut ours = Vec::new();
                    json_escape(&mut ours, text.as_bytes());
                    let theirs = serde_json::to_string(&text).expect("a string serialises");
                    assert_eq!(
                        format!("\"{}\"", String::from_utf8_lossy(&ours)),
                        theirs,
                        "{text:?}"
                    );
                }
            }
        }
        let all: String = (0u8..0x80).map(char::from).cycle().take(1000).collect();
        let mut ours = Vec::new();
        json_escape(&mut ours, all.as_bytes());
        assert_eq!(
            format!("\"{}\"", String::from_utf8_lossy(&ours)),
            serde_json::to_string(&all).expect("a string serialises")
        );
    }
}
