//! The sandbox (SPEC §5). Owned by the sandbox work; this file fixes the interface
//! the rest of servo uses.

use std::path::PathBuf;

use crate::limits::Limits;

/// Where the servo Python package directory (PYTHONPATH) appears inside the sandbox.
pub const PYTHON_PKG_INSIDE: &str = "/opt/servo/python";
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
    /// Where servo keeps per-run scratch (sandbox roots); under the state dir.
    pub scratch_dir: PathBuf,
    /// Host directory holding the `servo` Python package (mounted read-only).
    pub python_pkg_dir: PathBuf,
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

/// Entry point of the single-threaded `servo __sandbox-exec` helper process.
pub fn helper_main() -> ! {
    std::process::exit(127)
}

// ---- Integration stub: replaced by the sandbox work (same signatures). ----

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0}")]
    Setup(String),
}

pub struct SandboxInfo {
    pub namespaces: Vec<&'static str>,
    pub rootless: bool,
    pub seccomp_sha256: String,
    pub limits: &'static str,
}

pub struct IdLease {
    pub uid: u32,
    pub gid: u32,
}

pub struct Sandbox;

pub struct Running;

impl Sandbox {
    pub fn new(_cfg: SandboxConfig) -> Result<Sandbox, SandboxError> {
        Err(SandboxError::Setup("the sandbox is not built yet".into()))
    }
    pub fn self_test(&self) -> Result<(), SandboxError> {
        Err(SandboxError::Setup("the sandbox is not built yet".into()))
    }
    pub fn info(&self) -> SandboxInfo {
        SandboxInfo {
            namespaces: vec![],
            rootless: false,
            seccomp_sha256: String::new(),
            limits: "rlimits",
        }
    }
    pub fn lease_ids(&self) -> Option<IdLease> {
        None
    }
    pub fn spawn(&self, _job: &Job) -> Result<Running, SandboxError> {
        Err(SandboxError::Setup("the sandbox is not built yet".into()))
    }
}

impl Running {
    pub fn take_output(&mut self) -> Option<tokio::net::unix::pipe::Receiver> {
        None
    }
    pub async fn wait(&mut self) -> Result<Exit, SandboxError> {
        Err(SandboxError::Setup("the sandbox is not built yet".into()))
    }
    pub fn kill(&mut self) {}
}

pub fn sweep_leftovers(_cfg: &SandboxConfig) {}

impl Drop for IdLease {
    fn drop(&mut self) {}
}
