//! The sandbox (SPEC §5): every script runs in fresh mount, PID, network, IPC
//! and UTS namespaces, under an unprivileged uid, with no capabilities and a
//! seccomp allowlist.
//!
//! Fork safety (SPEC §5, last paragraph). The server is multi-threaded, so it
//! never forks into sandbox set-up code. `Sandbox::new` starts a launcher, a
//! fresh single-threaded image of servo with an empty environment
//! (`launcher.rs`; no token or tenant in its memory), which may allocate
//! freely. In root mode it keeps the next job's init made ahead, the warm
//! init: cloned as PID 1 of a new PID namespace, it makes its network, IPC
//! and UTS namespaces, sets the hostname, brings up loopback and makes its
//! copy of the root namespace with /dev/shm and /proc while it waits
//! (`warm_init.rs`, `init::prepare`). Otherwise (rootless,
//! or no init ready) the launcher forks a helper that makes the namespaces
//! and forks the init. The job reaches the init (or helper) on its stdin as
//! JSON (in a memfd, so there is no size limit and nothing in its
//! environment or argv).
//!
//! Set-up order, and who does what:
//! 1. server: creates the job's cgroup (limits written) and has the launcher
//!    hand the warm init (or a new helper) stdin = job, stdout = the output
//!    pipe, stderr = the report pipe;
//! 2. launcher: `clone(NEWPID)` of the warm init, which `unshare`s NET|IPC|UTS
//!    and, before its job arrives, does what of step 3 does not depend on
//!    the job: the hostname, loopback, and its copy of the root namespace
//!    with /dev/shm and /proc (`rootfs::make_ahead`, keeping the host's
//!    mount namespace open until the job comes: in it, it then joins the
//!    cgroup and clones /work and /run/servo, returns to its own and
//!    closes both, `rootfs::enter_ahead`); or a helper: (rootless: `unshare(USER)` and id maps);
//!    `unshare(PID|NET|IPC|UTS)`; forks the init;
//! 3. init (PID 1 of the new namespace; dies with its parent, the launcher
//!    or the helper): joins the cgroup; gets a mount namespace of its own
//!    (its parent keeps the host's view): in root mode a private copy of
//!    the root namespace, whose root is the prepared root
//!    (`root_ns.rs`: `setns` + `unshare(NS)`, /work and /run/servo cloned
//!    from the host with `open_tree` first), otherwise a copy of the host's
//!    in which it builds the root on a private tmpfs and `pivot_root`s into
//!    it, detaching the old root; mounts /work, /tmp, /dev/shm, /proc for
//!    its PID namespace and /run/servo (`rootfs`), sets the hostname, brings
//!    up loopback, then starts the script's process, which shares its
//!    memory until `execve` (`fork::spawn_sharing_memory`);
//! 4. script (`exec`): setsid, stdin /dev/null, stdout+stderr = the output
//!    pipe, other descriptors closed, rlimits, supplementary groups cleared,
//!    gid/uid set, every capability set emptied, `no_new_privs`, seccomp
//!    filters last, `execve`;
//! 5. init reaps everything, forwards SIGTERM/SIGINT/SIGHUP to the script;
//!    when the script ends it kills every process left in the namespace and
//!    writes the script's status as one JSON line to the report pipe (a
//!    helper relays it) and exits;
//! 6. server: reads the report, checks the cgroup for an OOM kill, kills what
//!    is left in the cgroup and keeps it, empty, for the next job with the
//!    same limits (`cgroup::IdleGroups`). Mounts only ever exist in the
//!    job's own mount namespace, so they vanish with its last process.
//!
//! Modules, each using only those below it (tests/layering.rs checks this,
//! and that nothing here uses servo beyond `crate::limits`):
//! - this file: the server's façade (`Sandbox`, `Job`, `Running`); `cli.rs`:
//!   `servo sandbox`, its command line parsed by `client::sandbox`;
//! - the process roles, one way: `launcher` → `warm_init` (root mode) or
//!   `helper` → `init` (PID 1) → `exec` (the script's last steps);
//! - what they use: `root_ns` (root namespaces) → `rootfs` (performs the
//!   mounts) → `plan` (which mounts, as data);
//!   `cgroup` → `workdir`; `seccomp` → `bpf`, `builtin_filters`;
//! - leaves: `spec` (the job and the report), `fork` (the one fork),
//!   `stdio`.

mod bpf;
mod builtin_filters;
mod cgroup;
pub mod cli;
mod exec;
mod fork;
mod helper;
mod init;
mod launcher;
mod plan;
mod root_ns;
mod rootfs;
pub mod seccomp;
mod spec;
mod stdio;
mod warm_init;
pub mod workdir;

use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::limits::Limits;

pub use cgroup::{instance_name as cgroup_instance_name, CgroupMode, IDLE_GROUPS_MAX};
pub use launcher::launcher_main;
pub use plan::{PYTHON_PACKAGE, PYTHON_PKG_INSIDE};
use spec::{HelperSpec, Report};

/// The relay socket inside the sandbox (SPEC §6.1).
pub const SOCKET_INSIDE: &str = "/run/servo/portal.sock";

/// How the server configures the sandbox once, at start-up.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The interpreter scripts run with (`--python`).
    pub python: PathBuf,
    /// A seccomp policy file (`--seccomp-policy`); None: the built-in `policy/seccomp.json`.
    pub seccomp_policy: Option<PathBuf>,
    /// Extra read-only binds (`--ro-bind HOST[:INSIDE]`): (host, inside).
    pub ro_binds: Vec<(PathBuf, PathBuf)>,
    /// Where servo keeps sandbox scratch (the root mount point); under the state dir.
    pub scratch_dir: PathBuf,
    /// First uid/gid of the range handed to concurrent runs, and how many there are.
    pub uid_base: u32,
    pub uid_count: u32,
}

/// One command to run in a fresh sandbox.
#[derive(Clone, Debug)]
pub struct Job {
    /// Host directory mounted read-write at /work (the cwd).
    pub workdir: PathBuf,
    /// argv; argv[0] is an absolute path as seen inside the sandbox.
    pub argv: Vec<String>,
    /// The complete environment (nothing else is passed).
    pub env: Vec<(String, String)>,
    /// The run's uid/gid (from `Sandbox::lease_ids`).
    pub uid: u32,
    pub gid: u32,
    pub limits: Limits,
    /// Host directory mounted at /run/servo (holds portal.sock); None: an empty dir.
    pub relay_dir: Option<PathBuf>,
}

/// How a sandboxed command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal { signal: i32, oom: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl SandboxError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
        let what = what.into();
        move |source| SandboxError::Io { what, source }
    }
}

/// What `/health` says about the sandbox.
pub struct SandboxInfo {
    pub namespaces: Vec<&'static str>,
    pub rootless: bool,
    pub seccomp_sha256: String,
    pub limits: &'static str,
}

/// The sandbox, built once at start-up: the compiled seccomp filters, the
/// cgroup mode and the pool of run uids.
pub struct Sandbox {
    cfg: SandboxConfig,
    filters: seccomp::Filters,
    cgroups: CgroupMode,
    /// Job groups between jobs, kept for reuse.
    groups: Arc<cgroup::IdleGroups>,
    rootless: Option<(u32, u32)>,
    ids: Arc<IdPool>,
    prepared_root: Option<PreparedRoot>,
    launcher: launcher::Launcher,
    /// The `cgroup.procs` every job's init joins beside its own groups, so
    /// that all the jobs together weigh one share of the CPU
    /// (`CgroupMode::sandbox_cpu_group`).
    cpu_group: Option<PathBuf>,
    next_job: AtomicU64,
}

impl Sandbox {
    /// Compiles the seccomp policy, finds the cgroup hierarchy and checks
    /// that namespaces can be made here. Fails with one clear sentence.
    pub fn new(cfg: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let filters = seccomp::Filters::load(cfg.seccomp_policy.as_deref())
            .map_err(|e| SandboxError::Setup(e.to_string()))?;
        let rootless = if nix::unistd::geteuid().is_root() {
            None
        } else {
            if !helper::user_namespaces_available() {
                return Err(SandboxError::Setup(
                    "servo is not root and unprivileged user namespaces are not available \
                     (run servo as root, or enable kernel.unprivileged_userns_clone)"
                        .into(),
                ));
            }
            Some((
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ))
        };
        let cgroups = if rootless.is_some() {
            CgroupMode::None
        } else {
            CgroupMode::detect(&cfg.scratch_dir)
        };
        let root = cfg.scratch_dir.join("root");
        std::fs::create_dir_all(&root).map_err(SandboxError::io(format!(
            "cannot create the sandbox root mount point {}",
            root.display()
        )))?;
        let prepared_root = if rootless.is_none() {
            Some(PreparedRoot::build(&cfg)?)
        } else {
            None
        };
        let launcher = launcher::Launcher::start(prepared_root.as_ref().map(|r| r.path.clone()))
            .map_err(SandboxError::io("cannot start the sandbox launcher"))?;
        let cpu_group = cgroups.sandbox_cpu_group();
        if cpu_group.is_some() && cgroup::weigh_servo_like_its_scripts() {
            tracing::debug!("servo's session weighs like its scripts' cpu group");
        }
        let ids = Arc::new(IdPool::new(cfg.uid_base, cfg.uid_count));
        Ok(Sandbox {
            cfg,
            filters,
            groups: Arc::new(cgroup::IdleGroups::new(cgroups.clone())),
            cgroups,
            rootless,
            ids,
            prepared_root,
            launcher,
            cpu_group,
            next_job: AtomicU64::new(0),
        })
    }

    /// Runs `python -c pass` in a sandbox (blocking; call before the runtime
    /// starts). Fails with the reason the sandbox cannot be built here.
    pub fn self_test(&self) -> Result<(), SandboxError> {
        let work = tempfile::Builder::new()
            .prefix("selftest-")
            .tempdir_in(&self.cfg.scratch_dir)
            .map_err(SandboxError::io("cannot create the self-test directory"))?;
        let lease = self
            .lease_ids()
            .ok_or_else(|| SandboxError::Setup("the uid range is empty".into()))?;
        if self.rootless.is_none() {
            std::os::unix::fs::chown(work.path(), Some(lease.uid), Some(lease.gid))
                .map_err(SandboxError::io("cannot chown the self-test directory"))?;
        }
        let job = Job {
            workdir: work.path().to_path_buf(),
            argv: vec![
                self.cfg.python.to_string_lossy().into_owned(),
                "-c".into(),
                "import os, sys; sys.exit(0 if os.getuid() != 0 else 9)".into(),
            ],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            uid: lease.uid,
            gid: lease.gid,
            limits: Limits::default(),
            relay_dir: None,
        };
        let spec = self.helper_spec(&job, None);
        let (out_r, out_w) = pipe("output")?;
        let (report_r, report_w) = pipe("report")?;
        drop(out_r);
        let job_file = spec_file(&spec)?;
        let helper = self
            .launcher
            .launch(&OwnedFd::from(job_file), &out_w, &report_w)
            .map_err(SandboxError::io("cannot start the sandbox helper"))?;
        drop((out_w, report_w));
        let mut report = String::new();
        let _ = std::fs::File::from(report_r).read_to_string(&mut report);
        // The report comes before the init has left its cgroups (its exit
        // takes its namespaces down first): a servo stopped at once would
        // find its cpu group still busy, and leave it behind.
        let mut gone = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&helper),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut gone, nix::poll::PollTimeout::from(10_000u16));
        match Report::parse(&report) {
            Report::Exit(0) => Ok(()),
            Report::Exit(9) => Err(SandboxError::Setup(
                "the self-test script ran as root inside the sandbox".into(),
            )),
            Report::Exit(n) => Err(SandboxError::Setup(format!(
                "{} exited with code {n} inside the sandbox (check --python)",
                self.cfg.python.display()
            ))),
            Report::Signal(s) => Err(SandboxError::Setup(format!(
                "the self-test was killed by signal {s}"
            ))),
            Report::Error(e) => Err(SandboxError::Setup(e)),
        }
    }

    pub fn info(&self) -> SandboxInfo {
        let mut namespaces = vec!["mount", "pid", "net", "ipc", "uts"];
        if self.rootless.is_some() {
            namespaces.push("user");
        }
        SandboxInfo {
            namespaces,
            rootless: self.rootless.is_some(),
            seccomp_sha256: self.filters.sha256.clone(),
            limits: self.cgroups.describe(),
        }
    }

    /// A uid/gid pair no other live run holds; None when all are taken.
    pub fn lease_ids(&self) -> Option<IdLease> {
        self.ids.lease()
    }

    /// Who must own a run's files so its scripts can write them: the run's
    /// uid (root mode); None in rootless mode, where servo's own uid maps to
    /// the script's inside the user namespace.
    pub fn file_owner(&self, lease: &IdLease) -> Option<(u32, u32)> {
        self.rootless.is_none().then_some((lease.uid, lease.gid))
    }

    /// Whether run directories may be given their own size-limited tmpfs
    /// (mounting on the host needs root).
    pub fn can_mount_workdirs(&self) -> bool {
        self.rootless.is_none()
    }

    fn helper_spec(&self, job: &Job, cgroup: Option<&cgroup::JobCgroup>) -> HelperSpec {
        HelperSpec {
            root: self.cfg.scratch_dir.join("root"),
            prepared_root: self.prepared_root.as_ref().map(|r| r.path.clone()),
            workdir: job.workdir.clone(),
            argv: job.argv.clone(),
            env: job.env.clone(),
            uid: job.uid,
            gid: job.gid,
            limits: job.limits.clone(),
            address_space_limit: !self.cgroups.limits_memory(),
            relay_dir: job.relay_dir.clone(),
            ro_binds: self.cfg.ro_binds.clone(),
            cgroup_procs: cgroup
                .map(|c| c.procs_files())
                .unwrap_or_default()
                .into_iter()
                .chain(self.cpu_group.clone())
                .collect(),
            rootless: self.rootless,
            filters: self.filters.programs.clone(),
        }
    }

    /// Starts `job` in a fresh sandbox. Must be called inside the tokio runtime.
    pub fn spawn(&self, job: &Job) -> Result<Running, SandboxError> {
        let n = self.next_job.fetch_add(1, Ordering::Relaxed);
        let name = format!("job-{}-{n}", std::process::id());
        let cgroup = self
            .groups
            .take(&name, &job.limits)
            .map_err(SandboxError::io("cannot create the job's cgroup"))?;
        match self.start(job, cgroup.as_ref()) {
            Ok((helper, output, report)) => Ok(Running {
                helper,
                output: Some(output),
                report: Some(report),
                cgroup,
                groups: Arc::clone(&self.groups),
                done: false,
            }),
            Err(e) => {
                // Not left behind when the launch fails.
                if let Some(group) = cgroup {
                    self.groups.give_back(group);
                }
                Err(e)
            }
        }
    }

    /// Has the launcher start `job` in `cgroup`: the helper's pidfd, watched,
    /// and the read ends of its output and report pipes.
    fn start(
        &self,
        job: &Job,
        cgroup: Option<&cgroup::JobCgroup>,
    ) -> Result<(HelperFd, PipeReceiver, PipeReceiver), SandboxError> {
        let spec = self.helper_spec(job, cgroup);
        let (out_r, out_w) = pipe("output")?;
        let (report_r, report_w) = pipe("report")?;
        let pidfd = self
            .launcher
            .launch(&OwnedFd::from(spec_file(&spec)?), &out_w, &report_w)
            .map_err(SandboxError::io("cannot start the sandbox helper"))?;
        drop((out_w, report_w));
        let receiver = |fd: OwnedFd, what: &str| {
            PipeReceiver::from_owned_fd(fd)
                .map_err(SandboxError::io(format!("cannot watch the {what} pipe")))
        };
        // SAFETY: the pidfd is owned by the AsyncFd for its whole life.
        let helper = unsafe { tokio::io::unix::AsyncFd::register(pidfd) }
            .map_err(|e| SandboxError::io("cannot watch the sandbox helper")(e.into()))?;
        Ok((
            helper,
            receiver(out_r, "output")?,
            receiver(report_r, "report")?,
        ))
    }
}

type HelperFd = tokio::io::unix::AsyncFd<OwnedFd>;
type PipeReceiver = tokio::net::unix::pipe::Receiver;

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.groups.close();
        self.cgroups.remove_base();
    }
}

/// The static part of every job's root (system directories, /etc, /dev, the
/// package, `--ro-bind` paths), built once at start-up on a read-only tmpfs
/// in servo's own mount namespace. The launcher keeps it as a root
/// namespace (root_ns.rs) whose copy each job's init enters; without one,
/// an init mounts its own /work, /tmp, /dev/shm, /proc and /run/servo on its
/// copy of this mount and pivots into it. Measured: 0.5 ms less per script
/// than building the root each time, and the root namespace ~0.6 ms less
/// again.
struct PreparedRoot {
    path: PathBuf,
}

impl PreparedRoot {
    fn build(cfg: &SandboxConfig) -> Result<PreparedRoot, SandboxError> {
        let path = cfg.scratch_dir.join("base");
        std::fs::create_dir_all(&path).map_err(SandboxError::io(format!(
            "cannot create {}",
            path.display()
        )))?;
        let users: Vec<(u32, u32)> = (cfg.uid_base..cfg.uid_base + cfg.uid_count)
            .map(|id| (id, id))
            .collect();
        let prepared = PreparedRoot { path };
        plan::Host::read()
            .map(|host| plan::static_root(&host, &users, &cfg.ro_binds, false))
            .and_then(|plan| rootfs::build_static(&prepared.path, &plan))
            .map_err(|e| SandboxError::Setup(format!("cannot prepare the sandbox root: {e}")))?;
        Ok(prepared)
    }
}

impl Drop for PreparedRoot {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A pipe whose read end servo keeps; the helper gets the write end.
fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd), SandboxError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SandboxError::io(format!("cannot create the {what} pipe"))(e.into()))
}

/// The job, serialised into an anonymous in-memory file for the helper's stdin.
fn spec_file(spec: &HelperSpec) -> Result<std::fs::File, SandboxError> {
    let fd = nix::sys::memfd::memfd_create(c"servo-job", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| SandboxError::io("cannot create the job file")(e.into()))?;
    let mut file = std::fs::File::from(fd);
    let json = serde_json::to_vec(spec)
        .map_err(|e| SandboxError::Setup(format!("cannot encode the job: {e}")))?;
    file.write_all(&json)
        .and_then(|_| file.rewind())
        .map_err(SandboxError::io("cannot write the job file"))?;
    Ok(file)
}

/// A sandboxed command that was started.
pub struct Running {
    /// The helper's pidfd: readable once it has exited.
    helper: tokio::io::unix::AsyncFd<OwnedFd>,
    output: Option<tokio::net::unix::pipe::Receiver>,
    report: Option<tokio::net::unix::pipe::Receiver>,
    cgroup: Option<cgroup::JobCgroup>,
    /// Where the job's group goes back when it is over.
    groups: Arc<cgroup::IdleGroups>,
    done: bool,
}

impl Running {
    /// The merged stdout/stderr of the command (once).
    pub fn take_output(&mut self) -> Option<tokio::net::unix::pipe::Receiver> {
        self.output.take()
    }

    /// Resolves once the command has ended: the init has reported (it does
    /// as soon as it has reaped the script), or the helper is gone; its
    /// output is closing. Cancel-safe; consumes nothing.
    pub async fn ended(&self) {
        match &self.report {
            Some(report) => tokio::select! {
                _ = report.readable() => {}
                _ = self.helper.readable() => {}
            },
            None => {
                let _ = self.helper.readable().await;
            }
        }
    }

    /// The command's exit, once the sandbox has reported it and closed its
    /// report pipe (the init does both on its way out, after killing what
    /// the script left): nothing of the command runs any more, but the
    /// init may still be exiting, its namespaces going down (a few tenths
    /// of a ms), which [`Running::reaped`] waits for.
    pub async fn exit(&mut self) -> Result<Exit, SandboxError> {
        let mut report = String::new();
        if let Some(mut r) = self.report.take() {
            use tokio::io::AsyncReadExt;
            let _ = r.read_to_string(&mut report).await;
        }
        // Final: the kernel counts an OOM kill before the killed process
        // dies, and the init reports only once it has reaped the script.
        let oom = self.cgroup.as_ref().is_some_and(|c| c.oom_killed());
        match Report::parse(&report) {
            Report::Exit(code) => Ok(Exit::Code(code)),
            Report::Signal(signal) => Ok(Exit::Signal { signal, oom }),
            // No report: the helper itself was killed (timeout, output limit).
            Report::Error(_) if report.is_empty() => Ok(Exit::Signal {
                signal: libc::SIGKILL,
                oom,
            }),
            Report::Error(e) => Err(SandboxError::Setup(e)),
        }
    }

    /// Waits for the sandbox to be gone (the pidfd: its init has exited and
    /// its namespaces with it), then hands its cgroup back.
    pub async fn reaped(mut self) {
        let _ = self.helper.readable().await;
        self.cleanup();
    }

    /// Kills the command and every process it started.
    pub fn kill(&mut self) {
        // SAFETY: a plain syscall on a pidfd we own.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.helper.get_ref().as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all();
        }
    }

    fn cleanup(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(cg) = self.cgroup.take() {
            self.groups.give_back(cg);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            self.kill();
            self.cleanup();
        }
    }
}

/// Removes what a crash left behind: the job cgroups of a previous servo.
pub fn sweep_leftovers(cfg: &SandboxConfig) {
    if nix::unistd::geteuid().is_root() {
        // A prepared root (PreparedRoot) a killed servo left mounted.
        workdir::sweep_mounts(&cfg.scratch_dir);
        CgroupMode::detect(&cfg.scratch_dir).sweep();
    }
}

/// The pool of run uids (SPEC §5.5: a distinct uid per concurrent run).
struct IdPool {
    base: u32,
    free: Mutex<Vec<bool>>,
}

impl IdPool {
    fn new(base: u32, count: u32) -> IdPool {
        IdPool {
            base,
            free: Mutex::new(vec![true; count as usize]),
        }
    }

    fn lease(self: &Arc<Self>) -> Option<IdLease> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let i = free.iter().position(|f| *f)?;
        free[i] = false;
        let id = self.base + i as u32;
        Some(IdLease {
            uid: id,
            gid: id,
            pool: Some(Arc::clone(self)),
        })
    }

    fn give_back(&self, uid: u32) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = free.get_mut((uid - self.base) as usize) {
            *slot = true;
        }
    }
}

/// A uid/gid pair held by one run; handed back when dropped.
pub struct IdLease {
    pub uid: u32,
    pub gid: u32,
    pool: Option<Arc<IdPool>>,
}

impl Drop for IdLease {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(self.uid);
        }
    }
}
