//! The portal relay (SPEC §6): one Unix socket per run, speaking the portal's
//! own HTTP API. Every request is checked against the tenant's policy (§7),
//! audited (§8), then answered by the simulator or relayed to the portal.
//!
//! The run, tenant and script come from the socket a request arrived on,
//! never from the request. Each run has its own accept task, connection tasks
//! and in-flight limit, so one run's flood only slows that run.

pub mod deploy_yaml;
pub mod egress;
pub mod glob;
pub mod grammar;
pub mod policy;
mod portal;
pub mod sim;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::{JoinHandle, JoinSet};

use crate::audit::Audit;
use crate::config::{Portal, Tenant};
pub use policy::{check_command, Verdict};

/// The socket's file name inside the run's relay directory.
pub const SOCKET_NAME: &str = "portal.sock";
/// Largest request, files included (§6.4).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// Requests of one run handled at once (§6.4); more wait their turn.
pub const MAX_IN_FLIGHT: usize = 8;
/// Bytes of request bodies one run's relay holds at once, all its in-flight
/// requests together (§6.4): one request of the largest size. A request with
/// a `Content-Length` waits until its whole length fits; one without (chunked)
/// takes room as its body arrives and gets 503 when there is none left.
/// Without it, 8 requests of 64 MiB made 512 MiB per run.
pub const RUN_BODY_BUDGET: usize = MAX_REQUEST_BYTES;
/// Open connections per run; further connections wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// Default time the portal has to answer (§6.3).
pub const DEFAULT_PORTAL_TIMEOUT: Duration = Duration::from_secs(300);
/// Default and longest `timeout_s` of an `/http` request.
const DEFAULT_HTTP_TIMEOUT_S: f64 = 10.0;
const MAX_HTTP_TIMEOUT_S: f64 = 300.0;

/// The relay of a server: the portal (or the simulator) and the audit log.
pub struct Relay {
    portal: Portal,
    portal_token: Option<String>,
    audit: Arc<Audit>,
    sim: sim::Sim,
    client: portal::HttpClient,
    /// How long the portal has to answer one command.
    pub portal_timeout: Duration,
    /// Where relayed commands are counted (§2.4); the server shares its own.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What `/http` may reach (§6.6): pod networks, portal and listen addresses.
    pub egress: Arc<egress::EgressConfig>,
}

/// The relay of one run: dropping it (or `close`) stops the listener and
/// every connection of the run, and removes the socket.
pub struct RunRelay {
    state: Arc<RunState>,
    task: JoinHandle<()>,
    path: PathBuf,
}

struct RunState {
    relay: Arc<Relay>,
    run_id: String,
    tenant: Arc<Tenant>,
    script: Mutex<String>,
    /// Commands seen so far: numbers the audit records of one command.
    commands: AtomicU64,
    in_flight: Semaphore,
    /// [`RUN_BODY_BUDGET`], one permit per byte of request body held.
    body_budget: Semaphore,
    /// `ip:port` the portal reported to this run (`port`/`grep`), for `/http`.
    endpoints: Mutex<egress::Endpoints>,
}

type Answer = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: &Value) -> Answer {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The answer when the audit record of an allowed command cannot be written.
fn not_relayed(e: crate::audit::AuditError) -> Answer {
    fail(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("audit log unavailable: {e}; the command was not relayed"),
    )
}

fn fail(status: StatusCode, out: impl Into<String>) -> Answer {
    reply(status, &json!({"ok": false, "ms": 0, "out": out.into()}))
}

impl Relay {
    pub fn new(portal: Portal, portal_token: Option<String>, audit: Arc<Audit>) -> Relay {
        Relay {
            portal,
            portal_token,
            audit,
            sim: sim::Sim::new(),
            client: portal::client(),
            portal_timeout: DEFAULT_PORTAL_TIMEOUT,
            metrics: Arc::default(),
            egress: Arc::default(),
        }
    }

    /// An `https://` portal: trust the CAs in `cacert`, else the system's store.
    pub fn use_portal_tls(&mut self, cacert: Option<&Path>) -> Result<(), String> {
        self.client = portal::tls_client(cacert)?;
        Ok(())
    }

    /// The portal a tenant's commands go to, and the token that signs them:
    /// its own (SPEC §7 `portal`, `portal_token_file`) or the server's.
    pub fn portal_of<'a>(&'a self, tenant: &'a Tenant) -> (&'a Portal, Option<&'a str>) {
        match &tenant.portal {
            Some(own) => (own, tenant.portal_token.as_deref()),
            None => (&self.portal, self.portal_token.as_deref()),
        }
    }

    /// Serves a run's socket at `dir/portal.sock`, owned by `uid:gid` (the
    /// sandbox user) with mode 0660. `dir` is a fresh directory servo made.
    /// The workdir is never read from the host here: files a script sends
    /// come in the request body (§3.3).
    pub async fn open_run(
        self: &Arc<Self>,
        run_id: &str,
        tenant: Arc<Tenant>,
        workdir: PathBuf,
        dir: PathBuf,
        uid: u32,
        gid: u32,
    ) -> std::io::Result<RunRelay> {
        drop(workdir);
        let path = dir.join(SOCKET_NAME);
        let listener = UnixListener::bind(&path)?;
        let prepared = (|| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
            nix::unistd::chown(
                &path,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(std::io::Error::from)
        })();
        if let Err(e) = prepared {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let state = Arc::new(RunState {
            relay: Arc::clone(self),
            run_id: run_id.to_string(),
            tenant,
            script: Mutex::new(String::new()),
            commands: AtomicU64::new(0),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            body_budget: Semaphore::new(RUN_BODY_BUDGET),
            endpoints: Mutex::new(Default::default()),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(RunRelay { state, task, path })
    }
}

impl RunRelay {
    /// The script now running: audit records of its requests name it.
    pub fn set_script(&self, name: &str) {
        *self.state.script.lock().unwrap_or_else(|p| p.into_inner()) = name.to_string();
    }

    /// Where the socket is on the host.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Stops the listener and every connection, and waits until they are gone.
    pub async fn close(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunRelay {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts the connections.
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, state: Arc<RunState>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(run = %state.run_id, "relay accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let state = Arc::clone(&state);
        conns.spawn(async move {
            serve_connection(state, stream).await;
            drop(slot);
        });
    }
}

async fn serve_connection(state: Arc<RunState>, stream: UnixStream) {
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(handle(state, req).await) }
    });
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!("relay connection ended: {e}");
    }
}

async fn handle(state: Arc<RunState>, req: Request<Incoming>) -> Answer {
    let route = match (req.method(), req.uri().path()) {
        (&Method::POST, "/shell") => Route::Shell,
        (&Method::POST, "/http") => Route::Http,
        _ => {
            return fail(
                StatusCode::NOT_FOUND,
                "not found: the relay serves POST /shell and POST /http",
            )
        }
    };
    let Ok(_permit) = state.in_flight.acquire().await else {
        return fail(StatusCode::SERVICE_UNAVAILABLE, "the relay is closing");
    };
    // `_held` keeps the body's bytes counted until the answer is made.
    let (parts, body, _held) = match read_body(&state.body_budget, req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    match route {
        Route::Shell => shell(&state, &parts, body).await,
        Route::Http => http(&state, body).await,
    }
}

enum Route {
    Shell,
    Http,
}

/// Reads a request's body, counting its bytes against the run's `budget`
/// ([`RUN_BODY_BUDGET`]); the permit returned holds them.
async fn read_body(
    budget: &Semaphore,
    req: Request<Incoming>,
) -> Result<(hyper::http::request::Parts, Bytes, SemaphorePermit<'_>), Answer> {
    let too_large = || {
        fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request too large: the relay takes at most {} MiB per request, files included",
                MAX_REQUEST_BYTES / (1024 * 1024)
            ),
        )
    };
    let closing = || fail(StatusCode::SERVICE_UNAVAILABLE, "the relay is closing");
    let (parts, mut body) = req.into_parts();
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return Err(too_large());
    }
    // A declared length is reserved whole before the body is read (waiting
    // for the run's other requests to free room: never more than the budget,
    // since no request is larger); a streamed body grows its reservation.
    let declared = declared.map_or(0, |n| n as usize);
    let mut held = budget
        .acquire_many(permits(declared))
        .await
        .map_err(|_| closing())?;
    let mut data = BytesMut::with_capacity(declared);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            fail(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request: {e}"),
            )
        })?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        let len = data.len() + chunk.len();
        if len > MAX_REQUEST_BYTES {
            return Err(too_large());
        }
        if len > held.num_permits() {
            let more = budget
                .try_acquire_many(permits(len - held.num_permits()))
                .map_err(|_| {
                    fail(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "the relay is busy: this run's requests in flight already hold \
                             their share of the {} MiB it keeps for request bodies; send a \
                             Content-Length to wait for room, or retry later",
                            RUN_BODY_BUDGET / (1024 * 1024)
                        ),
                    )
                })?;
            held.merge(more);
        }
        data.extend_from_slice(&chunk);
    }
    Ok((parts, data.freeze(), held))
}

/// Permits for `bytes` bytes (never more than [`RUN_BODY_BUDGET`], which fits).
fn permits(bytes: usize) -> u32 {
    u32::try_from(bytes.min(RUN_BODY_BUDGET)).unwrap_or(u32::MAX)
}

/// A file name a script may upload (SPEC §6.3): a plain base name, which the
/// portal uses as the file's path in its working directory.
fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Why the files' field names cannot be relayed (SPEC §6.3): the portal
/// saves each file under its field name, as is.
fn bad_file_names(files: &[(String, Bytes)]) -> Option<String> {
    for (k, (name, _)) in files.iter().enumerate() {
        if !valid_file_name(name) {
            return Some(format!(
                "bad file name `{}`: use a plain base name (letters, digits, . _ -; not starting with . or -)",
                name.escape_debug()
            ));
        }
        if files[..k].iter().any(|(n, _)| n == name) {
            return Some(format!("the file `{name}` is sent twice"));
        }
    }
    None
}

/// The uploaded files a command names, in the command's order; the error
/// carries the reason and what was sent (for the audit record).
#[allow(clippy::type_complexity)]
fn files_for(
    cmd: &grammar::Command,
    mut sent: Vec<(String, Bytes)>,
) -> Result<Vec<(String, Bytes)>, (String, Vec<(String, Bytes)>)> {
    let mut named = Vec::new();
    for name in cmd.files() {
        match sent.iter().position(|(n, _)| n == name) {
            Some(k) => named.push(sent.swap_remove(k)),
            None if named.iter().any(|(n, _): &(String, Bytes)| n == name) => {
                let why = format!("`{name}` is named twice");
                named.append(&mut sent);
                return Err((why, named));
            }
            None => {
                let why = format!(
                    "`{}` names the file `{name}`, which was not sent with the command (send it as a multipart file named `{name}`)",
                    cmd.verb()
                );
                named.append(&mut sent);
                return Err((why, named));
            }
        }
    }
    Ok(named)
}

async fn read_files(
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<Vec<(String, Bytes)>, String> {
    let Some(content_type) = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(Vec::new());
    };
    if !content_type.to_ascii_lowercase().starts_with("multipart/") {
        return Ok(Vec::new());
    }
    let boundary =
        multer::parse_boundary(content_type).map_err(|e| format!("bad multipart body: {e}"))?;
    let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut files: Vec<(String, Bytes)> = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| format!("bad multipart body: {e}"))?
    {
        let name = field
            .name()
            .filter(|n| !n.is_empty())
            .or(field.file_name())
            .unwrap_or("")
            .to_string();
        if name.len() > 4096 || files.len() >= 64 {
            return Err("too many files, or a file name over 4 KiB".into());
        }
        let data = field
            .bytes()
            .await
            .map_err(|e| format!("bad multipart body: {e}"))?;
        files.push((name, data));
    }
    Ok(files)
}

/// The `portal.command` audit record (§8), written before anything is
/// relayed: names and digests, never contents.
#[derive(Default)]
struct Record<'a> {
    /// The line relayed (after any policy rewrite).
    line: &'a str,
    /// The line the script sent, when the policy rewrote it.
    requested: Option<&'a str>,
    files: &'a [(String, Bytes)],
}

/// A command that passed the policy and whose `portal.command` record is
/// on disk: it may now reach the portal.
struct Admitted {
    cmd: u64,
    verb: String,
    started: Instant,
}

impl RunState {
    fn script(&self) -> String {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Writes the `portal.command` record of a verdict (fsync'd). `denied`
    /// carries the reason; a denial is complete in itself (ok false).
    fn record_verdict(
        &self,
        cmd: u64,
        r: &Record<'_>,
        denied: Option<&str>,
    ) -> Result<(), crate::audit::AuditError> {
        let files: Vec<Value> = r
            .files
            .iter()
            .map(|(name, data)| json!({"name": name, "sha256": hex::encode(Sha256::digest(data))}))
            .collect();
        let mut fields = json!({
            "script": self.script(),
            "cmd": cmd,
            "line": r.line,
            "files": files,
            "verdict": if denied.is_some() { "denied" } else { "allowed" },
        });
        if let Some(requested) = r.requested {
            fields["requested"] = json!(requested);
        }
        if let Some(why) = denied {
            fields["reason"] = json!(why);
            fields["ok"] = json!(false);
        }
        self.relay
            .audit
            .record("portal.command", &self.run_id, &self.tenant.name, fields)
    }

    fn next_cmd(&self) -> u64 {
        self.commands
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Audits an allowed command before it goes anywhere (fail closed, §8):
    /// when the record cannot be written, the command is refused.
    fn admit(&self, verb: &str, r: Record<'_>) -> Result<Admitted, crate::audit::AuditError> {
        let cmd = self.next_cmd();
        self.relay.metrics.portal_command(verb, true);
        self.record_verdict(cmd, &r, None)?;
        Ok(Admitted {
            cmd,
            verb: verb.to_string(),
            started: Instant::now(),
        })
    }

    fn deny(&self, verb: &str, r: Record<'_>, why: &str) -> Answer {
        let cmd = self.next_cmd();
        self.relay.metrics.portal_command(verb, false);
        match self.record_verdict(cmd, &r, Some(why)) {
            Ok(()) => fail(StatusCode::FORBIDDEN, format!("denied by policy: {why}")),
            Err(e) => fail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("audit log unavailable: {e}"),
            ),
        }
    }

    /// Records the outcome (`portal.answered`) before the script sees it; a
    /// failed write withholds the answer.
    fn finish(
        &self,
        admitted: Admitted,
        line: &str,
        ok: bool,
        status: StatusCode,
        body: Value,
    ) -> Answer {
        let ms = admitted.started.elapsed().as_millis() as u64;
        let fields = json!({
            "script": self.script(),
            "cmd": admitted.cmd,
            "verb": admitted.verb,
            "line": line,
            "ok": ok,
            "ms": ms,
        });
        match self
            .relay
            .audit
            .record("portal.answered", &self.run_id, &self.tenant.name, fields)
        {
            Ok(()) => reply(status, &body),
            Err(e) => fail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("audit log unavailable: {e}"),
            ),
        }
    }
}

async fn shell(state: &RunState, parts: &hyper::http::request::Parts, body: Bytes) -> Answer {
    // Bytes a header may carry but a command may not (tabs, non-ASCII) are
    // left for the grammar to refuse: a policy denial, audited like others.
    let line = match parts.headers.get("x-shell") {
        Some(v) if !v.as_bytes().trim_ascii().is_empty() => {
            String::from_utf8_lossy(v.as_bytes()).trim().to_string()
        }
        Some(_) | None => {
            return fail(
                StatusCode::BAD_REQUEST,
                "missing X-Shell header: send the command line in it",
            )
        }
    };
    let files = match read_files(parts, body).await {
        Ok(f) => f,
        Err(why) => return fail(StatusCode::BAD_REQUEST, why),
    };
    let requested = line;
    let verb = requested.split(' ').next().unwrap_or("").to_string();
    let verdict = match bad_file_names(&files) {
        Some(why) => Verdict::Deny(why),
        None => check_command(&state.tenant, &requested),
    };
    let cmd = match verdict {
        Verdict::Allow(cmd) => cmd,
        Verdict::Deny(why) => {
            let record = Record {
                line: &requested,
                files: &files,
                ..Default::default()
            };
            return state.deny(&verb, record, &why);
        }
    };
    // Only the files the command names travel (deploy containers, `-o`
    // overrides); each must have been sent, and is checked as policy.
    let files = match files_for(&cmd, files) {
        Ok(f) => f,
        Err((why, sent)) => {
            let record = Record {
                line: &requested,
                files: &sent,
                ..Default::default()
            };
            return state.deny(&verb, record, &why);
        }
    };
    // Deploy files are policy too (§6.3): the portal loads them with an
    // unsafe YAML loader and merges `verbatim` into the Marathon app.
    if cmd.verb() == "deploy" {
        let rules = deploy_yaml::DeployRules {
            images: state.tenant.images.as_deref(),
            verbatim: &state.tenant.verbatim,
        };
        let overrides = cmd.overrides();
        for (name, bytes) in &files {
            let is_override = overrides.contains(&name.as_str());
            if let Err(why) = deploy_yaml::check(name, bytes, &rules, is_override) {
                let record = Record {
                    line: &requested,
                    files: &files,
                    ..Default::default()
                };
                return state.deny(&verb, record, &why);
            }
        }
    }
    let line = cmd.canonical();
    let record = Record {
        line: &line,
        requested: (requested != line).then_some(requested.as_str()),
        files: &files,
    };
    let admitted = match state.admit(&verb, record) {
        Ok(a) => a,
        Err(e) => return not_relayed(e),
    };
    let started = admitted.started;
    let relay = &state.relay;
    let (target, token) = relay.portal_of(&state.tenant);
    let mut answer = match target {
        Portal::Sim => relay.sim.shell(&line, &files),
        Portal::Url(base) => portal::shell(
            &relay.client,
            base,
            token,
            &line,
            &files,
            relay.portal_timeout,
        )
        .await
        .unwrap_or_else(|why| json!({"ok": false, "out": format!("portal unreachable: {why}")})),
    };
    let ok = answer.get("ok") == Some(&Value::Bool(true));
    if ok {
        let out = answer.get("out").cloned().unwrap_or(Value::Null);
        match policy::filter_answer(&state.tenant, &cmd, &out) {
            Some(Ok(filtered)) => answer["out"] = filtered,
            Some(Err(why)) => {
                answer = json!({"ok": false, "out": format!("denied by policy: {why}")});
            }
            None => {}
        }
        if matches!(cmd.verb(), "port" | "grep") {
            let found = egress::endpoints_in(answer.get("out").unwrap_or(&Value::Null));
            state
                .endpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(found);
        }
    }
    let ok = answer.get("ok") == Some(&Value::Bool(true));
    if answer.get("ms").is_none() || matches!(target, Portal::Sim) {
        answer["ms"] = json!(started.elapsed().as_millis() as u64);
    }
    state.finish(admitted, &line, ok, StatusCode::OK, answer)
}

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

async fn http(state: &RunState, body: Bytes) -> Answer {
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

/// `http://host[:port]/path` → (uri, host, port). Only plain HTTP: servo
/// carries no TLS client.
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

    #[test]
    fn file_names() {
        assert!(valid_file_name("web.yml"));
        for bad in [
            "", ".", "..", "a/b", "a\"b", "a\nb", "a\\b", ".x", "-i", "--force", "a b", "a*",
        ] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
    }
}
