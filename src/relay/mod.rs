//! The portal relay (SPEC §6): one Unix socket per run, speaking the portal's
//! own HTTP API (`shell.rs`: commands; `http.rs`: requests to pods). Every
//! request is checked against the tenant's policy (§7), audited (§8,
//! `record.rs`), then answered by the simulator or relayed to the portal.
//!
//! The run, tenant and script come from the socket a request arrived on,
//! never from the request. Each run has its own accept task, connection tasks
//! and in-flight limit, so one run's flood only slows that run.

pub mod deploy_yaml;
pub mod egress;
pub mod glob;
mod http;
pub mod policy;
mod portal;
mod record;
mod shell;
pub mod sim;

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::{JoinHandle, JoinSet};

use crate::audit::Audit;
use crate::tenants::{Portal, Tenant};
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
        Route::Shell => shell::shell(&state, &parts, body).await,
        Route::Http => http::http(&state, body).await,
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
