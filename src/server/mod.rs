//! The HTTP front end (SPEC §2): start-up, the accept loop, graceful drain.
//!
//! Start-up order: state dir and token (config), stale run dirs swept, the
//! Python package written, the sandbox built and self-tested (servo refuses
//! to start when it cannot sandbox), the audit log opened, then listen.

pub mod callback;
mod connections;
mod pod_control;
mod rejections;
mod replay;
pub mod respond;
mod routes;
mod state_lock;

pub use connections::raise_open_files_limit;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::audit::Audit;
use crate::config::Config;
use crate::run::RunContext;
use crate::sandbox::{self, Sandbox, SandboxConfig};
use crate::tenants::Portal;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Sandbox(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(
        "another servo{holder} is using the state dir {path}: stop it, or give this one another --state-dir"
    )]
    StateDirInUse { path: PathBuf, holder: String },
    #[error("no randomness from the OS: {0}")]
    Random(String),
    #[error("{0}")]
    Tls(String),
}

/// HTTPS (SPEC §12): the reloadable certificate and the acceptor using it.
pub struct Tls {
    pub cert: Arc<crate::tls::ReloadingCert>,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl Tls {
    fn load(files: &crate::config::TlsFiles) -> Result<Tls, ServeError> {
        let cert = Arc::new(
            crate::tls::ReloadingCert::load(&files.cert, &files.key).map_err(ServeError::Tls)?,
        );
        let config = crate::tls::server_config(Arc::clone(&cert)).map_err(ServeError::Tls)?;
        Ok(Tls {
            cert,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// Serves HTTP/1.1 on one accepted connection (plain or TLS) until it
/// closes; the graceful drain can ask it to finish.
async fn serve_connection<I>(
    server: Arc<Server>,
    io: I,
    remote: std::net::SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
    request_timeout: Duration,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let server = server.clone();
        async move { Ok::<_, std::convert::Infallible>(routes::handle(server, req, remote).await) }
    });
    // A client that never finishes its headers is cut off
    // (hyper times them out only when given a timer).
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(request_timeout)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("connection from {remote}: {e}");
    }
}

/// Shared state of a running server.
pub struct Server {
    pub ctx: Arc<RunContext>,
    pub started: Instant,
    pub runs_dir: PathBuf,
    /// Whether `runs_dir` is servo's own tmpfs (root mode): small uploads go
    /// there; bigger ones to `spool_dir` on the state dir's disk.
    pub runs_on_tmpfs: bool,
    pub spool_dir: PathBuf,
    _runs_mount: Option<sandbox::workdir::ScratchMount>,
    /// Requests holding a place: uploading, queued or running (≤ max_runs + max_queue).
    pub admitted: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub run_slots: Arc<Semaphore>,
    /// Signalled whenever a run ends (the drain waits on it).
    pub run_ended: Notify,
    /// v2 signatures accepted within their window (§2.6), kept across restarts.
    pub replay: replay::ReplayCache,
    /// Admitted requests per tenant, for the tenants' `concurrent_runs`.
    pub tenant_admitted: Mutex<HashMap<String, u64>>,
    /// Live runs' callback secrets (§2.5).
    pub callbacks: callback::Callbacks,
    /// `request.rejected` records, rate-limited (§2.1).
    pub rejections: Arc<rejections::RejectionLog>,
    /// Bytes that uploads being written to the state dir's disk may still
    /// take (their declared size, or --max-upload): counted against the
    /// free space before another upload is let in (§2.1).
    pub spool_claims: AtomicU64,
    /// The key an unknown tenant's upload is checked against (random, never
    /// told): it is read and verified as a known tenant's would be, and fails
    /// the same way (§2.1).
    pub decoy_token: String,
    /// HTTPS, when --tls-cert and --tls-key are given.
    pub tls: Option<Tls>,
    /// Whether new runs are admitted: false once the pod was turned `off`
    /// or `kill`ed (SPEC §13); they get 503 with Retry-After.
    pub accepting: AtomicBool,
    /// The Ochothon pod servo is, when it is one (SPEC §13).
    pub pod: Option<Arc<crate::ochopod::control::Pod>>,
    /// `STATE/servo.lock`, held while this server runs.
    _state_lock: nix::fcntl::Flock<std::fs::File>,
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ServeError + 'a {
    move |source| ServeError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The file in a run directory that says the run started (it holds the
/// tenant's name): a run directory with it, found at start-up, is a run that
/// a crash interrupted.
pub const STARTED_MARK: &str = "started";

/// A run that was going when servo stopped without finishing it.
struct Interrupted {
    run: String,
    tenant: String,
}

/// Uploads up to this size (as declared by Content-Length) are kept on the
/// runs tmpfs; bigger or undeclared ones are spooled to the state dir's disk.
pub const SMALL_UPLOAD: u64 = 1 << 20;

/// Removes run directories (and spooled uploads) a crash left behind, then
/// recreates the runs dir. Returns the runs among them that had started.
fn sweep_runs_dir(runs_dir: &Path, spool_dir: &Path) -> Result<Vec<Interrupted>, ServeError> {
    let mut interrupted = Vec::new();
    if runs_dir.exists() {
        sandbox::workdir::sweep_mounts(runs_dir);
        for entry in std::fs::read_dir(runs_dir).into_iter().flatten().flatten() {
            if let Ok(tenant) = std::fs::read_to_string(entry.path().join(STARTED_MARK)) {
                interrupted.push(Interrupted {
                    run: entry.file_name().to_string_lossy().into_owned(),
                    tenant,
                });
            }
        }
        // The runs tmpfs of a servo that was killed (EINVAL when it is not a mount).
        let _ = nix::mount::umount2(runs_dir, nix::mount::MntFlags::MNT_DETACH);
        std::fs::remove_dir_all(runs_dir)
            .map_err(io_err("cannot remove stale run directories in", runs_dir))?;
    }
    if spool_dir.exists() {
        std::fs::remove_dir_all(spool_dir)
            .map_err(io_err("cannot remove stale uploads in", spool_dir))?;
    }
    std::fs::create_dir_all(runs_dir).map_err(io_err("cannot create", runs_dir))?;
    std::fs::create_dir_all(spool_dir).map_err(io_err("cannot create", spool_dir))?;
    Ok(interrupted)
}

/// In root mode, mounts a tmpfs on the runs dir: run directories and small
/// uploads come and go there instead of on the state dir's disk, where each
/// run's inodes (directory, upload, start mark, volume mount point) cost
/// ~1.5 ms of CPU under load (ext4's inode allocator skips recently freed
/// inodes; measured with perf at 130 runs/s) and throughput rose 13 %
/// (SPEC §9). Its size bounds what it can hold: every admitted request's
/// small upload (≤ SMALL_UPLOAD each, at most max_runs + max_queue of them).
fn mount_runs_tmpfs(
    config: &Config,
    runs_dir: &Path,
) -> Result<Option<sandbox::workdir::ScratchMount>, ServeError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let uploads = (config.max_runs + config.max_queue) as u64 + 2;
    let size = uploads * (SMALL_UPLOAD + crate::bundle::upload::MULTIPART_FRAMING) + (4 << 20);
    sandbox::workdir::ScratchMount::mount(runs_dir, size)
        .map(Some)
        .map_err(io_err("cannot mount a tmpfs on", runs_dir))
}

pub fn sandbox_config(config: &Config) -> SandboxConfig {
    SandboxConfig {
        python: config.python.clone(),
        seccomp_policy: config.seccomp_policy.clone(),
        ro_binds: config.ro_binds.clone(),
        scratch_dir: config.state_dir.join("sandbox"),
        uid_base: config.uid_base,
        uid_count: config.uid_count,
    }
}

impl Server {
    /// Prepares everything before listening; fails with one clear sentence.
    pub fn start(config: Config) -> Result<Arc<Server>, ServeError> {
        let state_lock = state_lock::lock_state_dir(&config.state_dir)?;
        let tls = config.tls.as_ref().map(Tls::load).transpose()?;
        let runs_dir = config.state_dir.join("runs");
        let spool_dir = config.state_dir.join("spool");
        let interrupted = sweep_runs_dir(&runs_dir, &spool_dir)?;
        let replay_path = config.state_dir.join("replay");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let replay = replay::ReplayCache::open(&replay_path, now)
            .map_err(io_err("cannot load the v2 replay cache", &replay_path))?;
        let coordination = match &config.coordination {
            Some(target) => crate::coordination::Coordination::zookeeper(
                target.clone(),
                format!("{} pid {}", config.listen, std::process::id()),
            ),
            None => crate::coordination::Coordination::local(),
        };
        let runs_mount = mount_runs_tmpfs(&config, &runs_dir)?;
        let sb_config = sandbox_config(&config);
        std::fs::create_dir_all(&sb_config.scratch_dir)
            .map_err(io_err("cannot create", &sb_config.scratch_dir))?;
        sandbox::sweep_leftovers(&sb_config);
        let sandbox = Sandbox::new(sb_config)
            .map_err(|e| ServeError::Sandbox(format!("cannot build the sandbox: {e}")))?;
        sandbox
            .self_test()
            .map_err(|e| ServeError::Sandbox(format!("the sandbox self-test failed: {e}")))?;
        let audit = Arc::new(Audit::open(&config.audit)?);
        // No run goes without its end in the log (§8), even across a crash.
        for run in interrupted {
            tracing::warn!("run {} was interrupted by a previous stop", run.run);
            audit.record(
                "run.finished",
                &run.run,
                &run.tenant,
                serde_json::json!({
                    "ok": false,
                    "reason": "unexpected failure (interrupted: servo stopped during the run)",
                    "ms": null,
                    "interrupted": true,
                }),
            )?;
        }
        let max_runs = config.max_runs;
        let mut decoy = [0u8; 32];
        getrandom::fill(&mut decoy).map_err(|e| ServeError::Random(e.to_string()))?;
        let rejections = rejections::RejectionLog::new(Arc::clone(&audit));
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let mut relay = crate::relay::Relay::new(
            config.portal.clone(),
            config.portal_token.clone(),
            Arc::clone(&audit),
        );
        relay.metrics = Arc::clone(&metrics);
        if let Portal::Url(url) = &config.portal {
            if url.starts_with("https://") {
                relay
                    .use_portal_tls(config.portal_cacert.as_deref())
                    .map_err(ServeError::Tls)?;
            }
        }
        relay.portal_timeout = Duration::from_secs(config.portal_timeout_s);
        relay.egress = Arc::new(crate::relay::egress::EgressConfig::new(
            config.pod_cidrs.clone(),
            config.portal_addrs.clone(),
        ));
        for (host, port) in &config.portal_unresolved {
            tracing::warn!(
                "the portal name {host} does not resolve now: its commands fail until it does, and scripts' /http requests are refused until servo can tell the portal's address"
            );
            relay.egress.add_unresolved_portal(host.clone(), *port);
        }
        let pod = config
            .ochopod
            .clone()
            .map(|c| Arc::new(crate::ochopod::control::Pod::new(c)));
        Ok(Arc::new(Server {
            ctx: Arc::new(RunContext {
                relay: Arc::new(relay),
                config: Arc::new(config),
                sandbox: Arc::new(sandbox),
                audit,
                metrics,
                coordination: Arc::new(coordination),
            }),
            started: Instant::now(),
            runs_dir,
            runs_on_tmpfs: runs_mount.is_some(),
            spool_dir,
            _runs_mount: runs_mount,
            admitted: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            run_slots: Arc::new(Semaphore::new(max_runs)),
            run_ended: Notify::new(),
            replay,
            tenant_admitted: Mutex::new(HashMap::new()),
            callbacks: callback::Callbacks::default(),
            rejections,
            spool_claims: AtomicU64::new(0),
            decoy_token: hex::encode(decoy),
            tls,
            accepting: AtomicBool::new(true),
            pod,
            _state_lock: state_lock,
        }))
    }

    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// SIGHUP: reads --tls-cert and --tls-key again. A failure is logged
    /// and the certificate in use stays.
    async fn reload_certificate(&self) {
        let Some(tls) = &self.tls else {
            tracing::info!("SIGHUP: nothing to reload (no --tls-cert)");
            return;
        };
        let cert = Arc::clone(&tls.cert);
        match tokio::task::spawn_blocking(move || cert.reload()).await {
            Ok(Ok(())) => tracing::info!(
                "SIGHUP: TLS certificate reloaded from {}",
                tls.cert.cert_path().display()
            ),
            Ok(Err(e)) => tracing::error!(
                "SIGHUP: TLS certificate not reloaded, keeping the current one: {e}"
            ),
            Err(e) => tracing::error!("SIGHUP: TLS certificate not reloaded: {e}"),
        }
    }

    /// Waits until no request holds a place (uploading, queued or running),
    /// at most `within`; whether that happened.
    pub async fn wait_drained(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.run_ended.notified();
            if self.admitted.load(Ordering::SeqCst) == 0 {
                return true;
            }
            // A refused request gives its place back without a notice: look
            // again now and then.
            let tick = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(tick) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return self.admitted.load(Ordering::SeqCst) == 0;
            }
        }
    }

    /// Accepts connections until SIGTERM/SIGINT, then drains: no new
    /// connections, running runs finish (bounded by --drain-timeout-s).
    pub async fn serve(self: Arc<Self>) -> Result<(), ServeError> {
        let addr = self.config().listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen { addr, source })?;
        let local = listener.local_addr().unwrap_or(addr);
        // `/http` never reaches servo itself (§6.6): the bound address,
        // port included when --listen asked for port 0.
        self.ctx.relay.egress.add_listen(local);
        // Before "listening on", which callers take for "ready": a SIGTERM
        // or SIGINT right after it must stop servo cleanly (the default
        // action would leave its mounts behind).
        let signal = |kind| {
            tokio::signal::unix::signal(kind).map_err(|source| ServeError::Listen { addr, source })
        };
        let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
        // SIGHUP reloads the TLS certificate (and no longer ends servo).
        let mut hangup = signal(tokio::signal::unix::SignalKind::hangup())?;
        match &self.config().portal {
            Portal::Sim => tracing::info!("{}", crate::run::SIM_LINE),
            Portal::Url(_) => tracing::info!("portal: {}", self.config().portal.display()),
        }
        if self.config().legacy_signatures_allowed() {
            tracing::info!(
                "legacy signatures (sha1=, sha256=) are allowed for the default tenant; \
                 --require-v2 (SERVO_REQUIRE_V2) makes it require v2"
            );
        } else if self.config().tenant("default").is_some() {
            tracing::info!(
                "legacy signatures (sha1=, sha256=) are refused for the default tenant (--require-v2)"
            );
        }
        if let Some(zk) = &self.config().coordination {
            tracing::info!(
                "coordination: through ZooKeeper at {}{} (session timeout {}s)",
                zk.hosts,
                zk.chroot,
                zk.session_timeout.as_secs()
            );
        }
        self.ctx.coordination.start();
        if let Some(tls) = &self.tls {
            tracing::info!(
                "HTTPS: certificate {} (SIGHUP reloads it)",
                tls.cert.cert_path().display()
            );
        }
        if let Some(pod) = &self.pod {
            let control = pod_control::bind(pod)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: pod.config.listen,
                    source,
                })?;
            let control_addr = control.local_addr().unwrap_or(pod.config.listen);
            self.ctx.relay.egress.add_listen(control_addr);
            tokio::spawn(pod_control::serve(self.clone(), control));
            tokio::spawn(Arc::clone(&pod.registry).run());
            tracing::info!(
                "ochopod: pod of {} (ZooKeeper {}); control port on {control_addr}",
                pod.config.qualified,
                pod.config.zk
            );
        }
        tracing::info!("servo {} listening on {local}", env!("CARGO_PKG_VERSION"));

        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let request_timeout = Duration::from_secs(self.config().request_timeout_s);
        let connections = Arc::new(Semaphore::new(self.config().max_connections));
        let mut refusals = connections::RefusalLog::default();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, remote) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of fds and the like: keep serving.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Over --max-connections: closed at once, before it
                    // costs a task, buffers or a timer.
                    let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                        drop(stream);
                        refusals.note(remote, self.config().max_connections);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let server = self.clone();
                    let acceptor = self.tls.as_ref().map(|t| t.acceptor.clone());
                    let watcher = graceful.watcher();
                    // The TLS handshake happens here, in the connection's
                    // task (never in this loop), holding the connection's
                    // permit and bounded by --request-timeout-s.
                    tokio::spawn(async move {
                        match acceptor {
                            None => serve_connection(server, stream, remote, watcher, request_timeout).await,
                            Some(acceptor) => {
                                match tokio::time::timeout(request_timeout, acceptor.accept(stream)).await {
                                    Ok(Ok(tls)) => serve_connection(server, tls, remote, watcher, request_timeout).await,
                                    Ok(Err(e)) => tracing::debug!("TLS handshake with {remote} failed: {e}"),
                                    Err(_) => tracing::debug!("TLS handshake with {remote} timed out"),
                                }
                            }
                        }
                        drop(permit);
                    });
                }
                _ = hangup.recv() => self.reload_certificate().await,
                _ = term.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        drop(listener);
        if let Some(pod) = &self.pod {
            // Out of ZooKeeper first: the tools stop sending us work.
            pod.registry.deregister(Duration::from_secs(3)).await;
        }
        let drain = Duration::from_secs(self.config().drain_timeout_s);
        tracing::info!(
            "stopping: no new connections; waiting up to {}s for {} run(s)",
            drain.as_secs(),
            self.in_flight.load(Ordering::SeqCst)
        );
        let deadline = tokio::time::Instant::now() + drain;
        let runs_done = async {
            loop {
                let notified = self.run_ended.notified();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout_at(deadline, runs_done).await.is_err() {
            tracing::warn!("drain timeout: exiting with runs still going");
            return Ok(());
        }
        let _ = tokio::time::timeout_at(deadline, graceful.shutdown()).await;
        tracing::info!("stopped");
        Ok(())
    }
}
