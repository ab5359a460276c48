//! One run (SPEC §4): unpack and decrypt the bundle, then run the scripts in
//! order, each in a fresh sandbox, streaming their output into the log and
//! enforcing the run's limits. The first failure ends the run; the run
//! directory is removed whatever happened.

pub mod log;
pub mod request;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::UnboundedSender;

use crate::audit::{Audit, AuditError};
use crate::bundle::{decrypt, unpack};
use crate::config::Config;
use crate::metrics::{inc, Metrics};
use crate::relay::{Relay, RunRelay};
use crate::sandbox::workdir::RunVolume;
use crate::sandbox::{self, Exit, IdLease, Job, Sandbox};
use crate::tenants::{Portal, Tenant};
use log::LineSplitter;

/// The first log line when the portal is simulated (§1).
pub const SIM_LINE: &str = "portal: built-in simulator (dry run)";

/// What a run needs from the server, shared by all runs.
pub struct RunContext {
    pub config: Arc<Config>,
    pub sandbox: Arc<Sandbox>,
    pub audit: Arc<Audit>,
    pub metrics: Arc<Metrics>,
    pub relay: Arc<Relay>,
    /// Concurrency groups (and what else several instances share, §11).
    pub coordination: Arc<crate::coordination::Coordination>,
}

/// One accepted request, its upload already on disk and verified.
pub struct RunSpec {
    pub id: String,
    pub tenant: Tenant,
    pub scripts: Vec<String>,
    pub vars: Vec<(String, String)>,
    /// The run's directory, removed when the run ends.
    pub run_dir: PathBuf,
    /// The uploaded archive (in the run's directory, or spooled to disk when
    /// big); removed once unpacked, or when the run ends.
    pub archive: PathBuf,
    pub callback: Option<String>,
    /// The run's concurrency group (§11).
    pub concurrency: Option<String>,
}

/// What a run reports as it goes.
#[derive(Debug)]
pub enum RunEvent {
    /// One of servo's own lines.
    Line(String),
    /// A script's lines from one read of its output.
    Lines(log::Lines),
    Done(Outcome),
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub ok: bool,
    pub reason: Option<String>,
    pub ms: u64,
}

/// Why a run failed: the text of the `failure (...)` line (§4.3).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Bundle(String),
    #[error("unable to find {0} (check your scripts)")]
    Missing(String),
    #[error("{0} failed on exit code {1}")]
    ExitCode(String, i32),
    #[error("{script} was killed by signal {signal} ({name}){oom}", oom = if *.oom { ", out of memory" } else { "" })]
    Signal {
        script: String,
        signal: i32,
        name: String,
        oom: bool,
    },
    #[error("{0} timed out after {1} seconds")]
    Timeout(String, u64),
    #[error("output limit reached")]
    OutputLimit,
    #[error("unexpected failure ({0})")]
    Internal(String),
    /// The group was busy past the wait, or could not be had (§11).
    #[error("{0}")]
    Group(crate::coordination::GroupError),
    #[error("lost the concurrency group {0}")]
    LostGroup(String),
}

/// Sends log lines to the response and counts them against the log limit.
struct Reporter {
    events: UnboundedSender<RunEvent>,
    bytes: u64,
    limit: u64,
    /// A script's lines not sent yet (sent at the end of each read).
    batch: log::Lines,
    /// Lines held back while the run's `run.started` is not on disk yet
    /// (it is written, not synced, when the run is accepted): nothing of
    /// the run is seen before its record is durable (§8).
    held: Option<Vec<RunEvent>>,
    /// Sandboxes whose command has ended but whose init is still exiting
    /// (its namespaces going down): waited for beside the next step's
    /// audit record, and the run's end is reported only once they are gone.
    exiting: Vec<sandbox::Running>,
}

impl Reporter {
    /// Counts a line (and its newline); false once the log is over its limit.
    fn count(&mut self, line: &str) -> bool {
        self.bytes += line.len() as u64 + 1;
        self.bytes <= self.limit
    }

    /// Sends one of servo's own lines; false once the log is over its
    /// limit (the line is dropped).
    fn line(&mut self, line: String) -> bool {
        if !self.count(&line) {
            return false;
        }
        self.flush();
        self.send(RunEvent::Line(line));
        true
    }

    /// Adds a script's line to the batch; false once the log is over its
    /// limit (the line is dropped).
    fn script_line(&mut self, line: &str) -> bool {
        if !self.count(line) {
            return false;
        }
        self.batch.push(line);
        true
    }

    /// Sends the batch, if any, as one message.
    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let batch = RunEvent::Lines(std::mem::take(&mut self.batch));
            self.send(batch);
        }
    }

    fn send(&mut self, event: RunEvent) {
        match &mut self.held {
            Some(held) => held.push(event),
            // A client that went away does not stop the run (§2.2).
            None => {
                let _ = self.events.send(event);
            }
        }
    }

    /// A synced record of the run has been waited for: when it is on disk,
    /// so is `run.started`, and the lines held back go out (the next ones
    /// at once); when it is not, the run ends.
    fn synced(&mut self, record: Result<(), AuditError>) -> Result<(), Failure> {
        record.map_err(|e| Failure::Internal(e.to_string()))?;
        self.release();
        Ok(())
    }

    /// Sends the lines held back, and the next ones at once.
    fn release(&mut self) {
        for event in self.held.take().unwrap_or_default() {
            let _ = self.events.send(event);
        }
    }

    /// Waits until the run's ended sandboxes are gone (their cgroups handed back).
    async fn reap(&mut self) {
        for sandbox in self.exiting.drain(..) {
            sandbox.reaped().await;
        }
    }
}

fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("SIG{signal}"))
}

/// Runs `spec` to the end, reporting on `events`; always ends with `RunEvent::Done`.
pub async fn execute(
    ctx: Arc<RunContext>,
    spec: RunSpec,
    lease: IdLease,
    events: UnboundedSender<RunEvent>,
) {
    let started = Instant::now();
    ACTIVE_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    RUNS_BEGUN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut reporter = Reporter {
        events,
        bytes: 0,
        limit: spec.tenant.limits.log_bytes(),
        batch: log::Lines::default(),
        held: Some(Vec::new()),
        exiting: Vec::new(),
    };
    inc(&ctx.metrics.runs_started);
    let mut volume = None;
    let result = run_in_group(&ctx, &spec, &lease, &mut reporter, &mut volume).await;
    inc(if result.is_ok() {
        &ctx.metrics.runs_succeeded
    } else {
        &ctx.metrics.runs_failed
    });
    let ms = started.elapsed().as_millis() as u64;
    let reason = result.err().map(|f| f.to_string());
    reporter.flush();
    if let Some(reason) = &reason {
        // The failure line is written even past the log limit: it says why.
        reporter.send(RunEvent::Line(format!("failure ({reason})")));
    }
    // The run's files go, and its last sandbox's init finishes exiting,
    // while `run.finished` is made durable; the uid is free for another run
    // only once they are gone.
    let (archive, run_dir) = (spec.archive.clone(), spec.run_dir.clone());
    let removed = offload(move || remove_run_files(volume, &archive, &run_dir));
    let finished = ctx.audit.commit(
        "run.finished",
        &spec.id,
        &spec.tenant.name,
        json!({"ok": reason.is_none(), "reason": reason, "ms": ms}),
    );
    let _ = tokio::join!(removed, finished, reporter.reap());
    reporter.release();
    drop(lease);
    let _ = reporter.events.send(RunEvent::Done(Outcome {
        ok: reason.is_none(),
        reason,
        ms,
    }));
    if ACTIVE_RUNS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
        tokio::spawn(trim_when_idle(
            RUNS_BEGUN.load(std::sync::atomic::Ordering::SeqCst),
        ));
    }
}

/// Runs executing now (the last one to end trims the heap).
static ACTIVE_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Runs begun since servo started (a trim is skipped if one began since).
static RUNS_BEGUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long servo stays without a run before it trims its heap.
const IDLE_BEFORE_TRIM: Duration = Duration::from_millis(250);

/// Gives the memory of the runs' buffers back to the system (idle RSS, §9)
/// once servo has had no run for [`IDLE_BEFORE_TRIM`] since the last one
/// ended. Not after every run: under load each trim costs a walk of the
/// heap, and the next run's page faults of taking the memory back (~35 a
/// run, ~0.1 ms, when runs came one after another and each ended alone).
async fn trim_when_idle(begun: u64) {
    tokio::time::sleep(IDLE_BEFORE_TRIM).await;
    let idle = ACTIVE_RUNS.load(std::sync::atomic::Ordering::SeqCst) == 0
        && RUNS_BEGUN.load(std::sync::atomic::Ordering::SeqCst) == begun;
    if idle {
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free memory of glibc's heaps.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Inodes scripts may create in /work beyond the bundle's (files, directories,
/// links): a virtualenv with a few packages is 2,000-5,000; each costs about
/// 1 KiB of kernel memory.
pub const SCRIPT_INODES: u64 = 16_384;

/// `nr_inodes` of a run's tmpfs: the bundle's entries (implied directories
/// included, SPEC §3.2), as many plaintexts of `.aes` files, the volume's
/// own (`work/`, `relay/`, the socket) and [`SCRIPT_INODES`].
pub fn run_volume_inodes(entries: u64) -> u64 {
    entries.saturating_mul(2).saturating_add(16 + SCRIPT_INODES)
}

/// Unmounts the run's volume (freeing all it holds), then removes the
/// archive and the run's directory. Blocking.
fn remove_run_files(volume: Option<RunVolume>, archive: &Path, run_dir: &Path) {
    drop(volume);
    let _ = std::fs::remove_file(archive);
    if let Err(e) = std::fs::remove_dir_all(run_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("could not remove run directory {}: {e}", run_dir.display());
        }
    }
}

/// The run's first lines, its concurrency group (waited for, in arrival
/// order), then its steps; a group lost meanwhile stops them (dropping
/// them kills the script and removes its volume). The lines are held until
/// a synced record covers `run.started` (the first `bundle.decrypted` or
/// `script.started`, or else `run.finished`); the group's node is made
/// only after that record is on disk.
async fn run_in_group(
    ctx: &RunContext,
    spec: &RunSpec,
    lease: &IdLease,
    out: &mut Reporter,
    volume: &mut Option<RunVolume>,
) -> Result<(), Failure> {
    // The portal this tenant's commands go to (its own, or the server's).
    if spec.tenant.portal.as_ref().unwrap_or(&ctx.config.portal) == &Portal::Sim {
        out.line(SIM_LINE.to_string());
    }
    for (name, value) in &spec.vars {
        let shown = if request::is_redacted(name) {
            "***"
        } else {
            value
        };
        out.line(format!("${name} = {shown}"));
    }
    let Some(group) = &spec.concurrency else {
        return run_steps(ctx, spec, lease, out, volume, Instant::now()).await;
    };
    out.synced(ctx.audit.durable().await)?;
    let waited = Instant::now();
    let mut waiting = false;
    let acquired = ctx
        .coordination
        .acquire_group(
            &spec.tenant.name,
            group,
            &spec.id,
            Duration::from_secs(spec.tenant.concurrency_wait_s),
            |holder| {
                waiting = true;
                ctx.metrics
                    .group_waiting
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (run, since) = match &holder {
                    Some(h) => (h.run.as_str(), h.since.as_str()),
                    None => ("?", "?"),
                };
                out.line(format!(
                    "waiting for concurrency group {group} (held by run {run} since {since})"
                ));
                if let Err(e) = ctx.audit.record(
                    "run.waiting",
                    &spec.id,
                    &spec.tenant.name,
                    json!({"group": group, "holder": run, "since": since}),
                ) {
                    tracing::warn!("run {}: run.waiting not audited: {e}", spec.id);
                }
            },
        )
        .await;
    if waiting {
        ctx.metrics
            .group_waiting
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    ctx.metrics
        .group_wait
        .observe(waited.elapsed().as_secs_f64());
    let hold = acquired.map_err(Failure::Group)?;
    // The run's time limit counts from here: waiting is not running.
    tokio::select! {
        result = run_steps(ctx, spec, lease, out, volume, Instant::now()) => result,
        () = hold.lost() => Err(Failure::LostGroup(group.clone())),
    }
}

/// The run's steps: its volume prepared, its portal socket opened, its
/// scripts run. The volume is left in `volume` for `execute` to remove
/// (whatever happened, and also when this future is dropped).
async fn run_steps(
    ctx: &RunContext,
    spec: &RunSpec,
    lease: &IdLease,
    out: &mut Reporter,
    volume: &mut Option<RunVolume>,
    started: Instant,
) -> Result<(), Failure> {
    let limits = &spec.tenant.limits;
    let owner = ctx.sandbox.file_owner(lease);
    // The run's own tmpfs: room for the bundle, then for what scripts write.
    // tmpfs takes a whole page per file while the unpack limit counts bytes:
    // without a page per entry, many tiny files would fill it first.
    // Its inodes: the bundle's entries (implied directories included), one
    // plaintext per `.aes` file at most, the volume's own few, and what the
    // scripts create (empty files and directories take no page, so the size
    // alone does not bound them).
    let preparation = Preparation {
        dir: RunVolume::dir_of(&spec.run_dir),
        size: limits.unpacked_bytes() + limits.work_bytes() + limits.entries * page_size(),
        inodes: run_volume_inodes(limits.entries),
        tmpfs: ctx.sandbox.can_mount_workdirs(),
        owner,
        archive: spec.archive.clone(),
        unpack: unpack::UnpackLimits {
            max_total_bytes: limits.unpacked_bytes(),
            max_entries: limits.entries,
            max_file_bytes: limits.file_bytes(),
            max_name_bytes: unpack::MAX_NAME_BYTES_TOTAL,
        },
        token: spec.tenant.token.clone(),
        kdf: spec.tenant.aes_kdf,
        growth: limits.work_bytes(),
    };
    let permit = PREPARE
        .acquire()
        .await
        .map_err(|e| Failure::Internal(e.to_string()))?;
    let prepared = tokio::task::spawn_blocking(move || preparation.run())
        .await
        .map_err(|e| Failure::Internal(e.to_string()))??;
    drop(permit);
    let volume = &*volume.insert(prepared.volume);
    for file in prepared.decrypted {
        let record = ctx.audit.commit(
            "bundle.decrypted",
            &spec.id,
            &spec.tenant.name,
            json!({"file": file}),
        );
        out.synced(record.await)?;
        out.line(format!("decrypted {file}"));
    }
    // The run's socket to the portal (§6.1), owned by whoever the script
    // is on the host: the run's uid, or servo's own in rootless mode.
    let (socket_uid, socket_gid) = owner.unwrap_or((
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    ));
    let relay = ctx
        .relay
        .open_run(
            &spec.id,
            Arc::new(spec.tenant.clone()),
            volume.work(),
            volume.relay(),
            socket_uid,
            socket_gid,
        )
        .await
        .map_err(|e| Failure::Internal(format!("cannot open the portal socket: {e}")))?;
    let result = run_scripts(ctx, spec, lease, volume, &relay, out, started).await;
    relay.close().await;
    result
}

/// Runs being prepared at once: bounds the blocking threads (and memory)
/// when hundreds of runs arrive together, while a big bundle's unpack
/// cannot hold up every other run's.
static PREPARE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// What a run's volume needs, for the blocking part of its preparation.
struct Preparation {
    dir: PathBuf,
    size: u64,
    inodes: u64,
    tmpfs: bool,
    owner: Option<(u32, u32)>,
    archive: PathBuf,
    unpack: unpack::UnpackLimits,
    token: String,
    kdf: Option<decrypt::Kdf>,
    growth: u64,
}

/// A run's volume, its bundle unpacked and decrypted in it.
struct Prepared {
    volume: RunVolume,
    /// The `.aes` files decrypted, for the audit log and the run's log.
    decrypted: Vec<String>,
}

impl Preparation {
    /// Mounts the run's volume, unpacks and decrypts the bundle into it and
    /// sizes it for what the scripts may write: one hand-off to the
    /// blocking pool instead of four (each is a wake-up and two context
    /// switches). On failure the volume is unmounted here.
    fn run(self) -> Result<Prepared, Failure> {
        let volume =
            RunVolume::create(&self.dir, self.size, self.inodes, self.tmpfs, self.owner)
                .map_err(|e| Failure::Internal(format!("cannot create the run's volume: {e}")))?;
        let work = volume.work();
        let unpacked = unpack::unpack(&self.archive, &work, &self.unpack, self.owner);
        // The archive is not needed once unpacked; free its space now.
        let _ = std::fs::remove_file(&self.archive);
        match unpacked {
            Ok(_) => {}
            Err(unpack::UnpackError::Io(e)) => {
                return Err(Failure::Internal(format!("cannot unpack the bundle: {e}")))
            }
            Err(e) => return Err(Failure::Bundle(e.to_string())),
        }
        let decrypted =
            match decrypt::decrypt_bundle(&work, self.token.as_bytes(), self.kdf, self.owner) {
                Ok(files) => files,
                Err(decrypt::BundleDecryptError::Io(e)) => {
                    return Err(Failure::Internal(format!(
                        "cannot write a decrypted file: {e}"
                    )))
                }
                Err(e) => return Err(Failure::Bundle(e.to_string())),
            };
        volume
            .limit_growth(self.growth)
            .map_err(|e| Failure::Internal(format!("cannot size the run's volume: {e}")))?;
        Ok(Prepared { volume, decrypted })
    }
}

/// Setup and teardown calls that block (mounts, the launcher's reply) run
/// beside the runtime's workers, a few at a time: when hundreds of runs
/// start at once, each used to hold a worker for its mount and its launch
/// (serialised on the launcher), and requests such as `/health` queued
/// behind them for hundreds of ms.
async fn offload<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    static SETUP: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let _permit = SETUP
        .acquire()
        .await
        .map_err(|e| Failure::Internal(e.to_string()))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failure::Internal(e.to_string()))
}

async fn run_scripts(
    ctx: &RunContext,
    spec: &RunSpec,
    lease: &IdLease,
    volume: &RunVolume,
    relay: &RunRelay,
    out: &mut Reporter,
    started: Instant,
) -> Result<(), Failure> {
    let limits = &spec.tenant.limits;
    let work = volume.work();
    let run_deadline = started + Duration::from_secs(limits.run_timeout_s);
    for script in &spec.scripts {
        if !script_present(&work, script) {
            return Err(Failure::Missing(script.clone()));
        }
        let script_started = Instant::now();
        relay.set_script(script);
        // On record before it starts (§8): no record, no script.
        let record = ctx.audit.commit(
            "script.started",
            &spec.id,
            &spec.tenant.name,
            json!({"script": script}),
        );
        out.synced(record.await)?;
        // The previous script's sandbox went down while the record was written.
        out.reap().await;
        let result = run_script(ctx, spec, lease, volume, script, out, run_deadline).await;
        let secs = script_started.elapsed().as_secs();
        ctx.metrics
            .script_duration
            .observe(script_started.elapsed().as_secs_f64());
        let (exit, bytes) = match &result {
            Ok(r) => (Some(r.exit), r.bytes),
            Err(_) => (None, 0),
        };
        let _ = ctx.audit.note(
            "script.finished",
            &spec.id,
            &spec.tenant.name,
            json!({
                "script": script,
                "exit_code": match exit { Some(Exit::Code(c)) => Some(c), _ => None },
                "signal": match exit { Some(Exit::Signal { signal, .. }) => Some(signal), _ => None },
                "seconds": script_started.elapsed().as_secs_f64(),
                "output_bytes": bytes,
            }),
        );
        out.line(format!("{script} ran in {secs} seconds"));
        let finished = result?;
        match finished.exit {
            Exit::Code(0) => {}
            Exit::Code(code) => return Err(Failure::ExitCode(script.clone(), code)),
            Exit::Signal { signal, oom } => {
                return Err(Failure::Signal {
                    script: script.clone(),
                    signal,
                    name: signal_name(signal),
                    oom,
                })
            }
        }
    }
    Ok(())
}

/// Whether `script` names a file of the bundle. Walks without following
/// symlinks on the host (§3.3); a symlink on the way is resolved inside the
/// sandbox, where the unpacker guarantees it stays in /work.
fn script_present(work: &Path, script: &str) -> bool {
    let mut path = work.to_path_buf();
    let parts: Vec<&str> = script.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => return true,
            Ok(m) if last => return m.is_file(),
            Ok(m) if m.is_dir() => continue,
            _ => return false,
        }
    }
    false
}

struct Finished {
    exit: Exit,
    bytes: u64,
}

fn script_env(spec: &RunSpec, script: &str) -> Vec<(String, String)> {
    let mut env = spec.vars.clone();
    let fixed = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/work"),
        ("LANG", "C.UTF-8"),
        ("PYTHONPATH", sandbox::PYTHON_PKG_INSIDE),
        ("PYTHONUNBUFFERED", "1"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("SERVO_SOCKET", sandbox::SOCKET_INSIDE),
        ("SERVO_RUN", &spec.id),
        ("SERVO_SCRIPT", script),
        ("SERVO_TENANT", &spec.tenant.name),
    ];
    env.extend(fixed.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    if let Some(cb) = &spec.callback {
        env.push(("CALLBACK".into(), cb.clone()));
    }
    env
}

async fn run_script(
    ctx: &RunContext,
    spec: &RunSpec,
    lease: &IdLease,
    volume: &RunVolume,
    script: &str,
    out: &mut Reporter,
    run_deadline: Instant,
) -> Result<Finished, Failure> {
    let limits = &spec.tenant.limits;
    let job = Job {
        workdir: volume.work(),
        argv: vec![
            ctx.config.python.to_string_lossy().into_owned(),
            script.to_string(),
        ],
        env: script_env(spec, script),
        uid: lease.uid,
        gid: lease.gid,
        limits: limits.clone(),
        relay_dir: Some(volume.relay()),
    };
    let script_deadline = Instant::now() + Duration::from_secs(limits.script_timeout_s);
    let deadline = script_deadline.min(run_deadline);
    let started = Instant::now();
    inc(&ctx.metrics.scripts_run);
    let sandbox = ctx.sandbox.clone();
    let mut running = offload(move || sandbox.spawn(&job))
        .await?
        .map_err(|e| Failure::Internal(format!("sandbox: {e}")))?;
    ctx.metrics
        .sandbox_setup
        .observe(started.elapsed().as_secs_f64());
    let mut output = running
        .take_output()
        .ok_or_else(|| Failure::Internal("sandbox: no output pipe".into()))?;
    log::widen_pipe(&output);

    let mut splitter = LineSplitter::default();
    // Grows while reads fill it: a quiet script keeps a page, not 64 KiB.
    let mut buf = vec![0u8; log::READ_MIN];
    let mut bytes: u64 = 0;
    let mut over_limit = false;
    let mut timed_out = false;
    // Once the script has ended, what is left of its output is read without
    // waiting between reads.
    let mut ended = false;
    loop {
        tokio::select! {
            read = output.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    bytes += n as u64;
                    splitter.feed(&buf[..n], &mut |line| over_limit |= !out.script_line(line));
                    // The read's lines go on as one message.
                    out.flush();
                    if over_limit {
                        running.kill();
                        break;
                    }
                    if n == buf.len() && n < log::READ_MAX {
                        buf.resize(n * 2, 0);
                    } else if n < log::READ_MAX / 4 && !ended {
                        // A short read: let the script write more before
                        // the next one (a line is at most this late), the
                        // pipe out of the runtime's epoll meanwhile: once
                        // polled, a pipe wakes its pollers at every write.
                        // The script's end cuts the wait short: the wait
                        // (1-2 ms with the timer's tick) had been added to
                        // the end of nearly every run.
                        let Ok(fd) = output.into_nonblocking_fd() else { break };
                        tokio::select! {
                            () = tokio::time::sleep(log::BATCH) => {}
                            () = running.ended() => ended = true,
                        }
                        match tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(fd) {
                            Ok(again) => output = again,
                            Err(_) => break,
                        }
                    }
                }
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                timed_out = true;
                running.kill();
                break;
            }
        }
    }
    if !over_limit && !timed_out {
        splitter.finish(&mut |line| over_limit |= !out.script_line(line));
        out.flush();
    }
    // The output may close before the script ends (it closed its stdout):
    // the deadline still holds for the wait.
    let exit = tokio::select! {
        exit = running.exit() => exit,
        _ = tokio::time::sleep_until(deadline.into()), if !timed_out => {
            timed_out = true;
            running.kill();
            running.exit().await
        }
    };
    // Its init finishes exiting while the run goes on (Reporter::reap).
    out.exiting.push(running);
    let exit = exit.map_err(|e| Failure::Internal(format!("sandbox: {e}")))?;
    if over_limit {
        return Err(Failure::OutputLimit);
    }
    if timed_out {
        // Name the limit that struck: the script's own, or what was left of the run's.
        let secs = if script_deadline <= run_deadline {
            limits.script_timeout_s
        } else {
            started.elapsed().as_secs()
        };
        return Err(Failure::Timeout(script.to_string(), secs));
    }
    Ok(Finished { exit, bytes })
}
