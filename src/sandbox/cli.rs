//! `servo sandbox -- CMD...`: run one command in the sandbox, for trying it
//! and for the benchmark. Its command line is parsed by `client::sandbox`,
//! which hands this module the values (the sandbox depends on no
//! configuration code).
//!
//! `servo sandbox` is single-threaded, so it plays the helper's part itself
//! instead of re-executing servo: one process fewer to start.

use std::path::PathBuf;
use std::process::ExitCode;

use super::cgroup::{CgroupMode, CliJob};
use super::spec::{HelperSpec, Report};
use crate::limits::Limits;

/// One `servo sandbox` call, its command line parsed (`client::sandbox`).
#[derive(Debug)]
pub struct SandboxCall {
    /// The limits of SPEC §4.4 (`--limit`).
    pub limits: Limits,
    /// Host directory mounted read-write at /work (default: the current directory).
    pub workdir: Option<PathBuf>,
    /// uid and gid the command runs as.
    pub uid: u32,
    /// seccomp policy file (default: the built-in policy/seccomp.json).
    pub seccomp_policy: Option<PathBuf>,
    /// Extra read-only binds (`--ro-bind`): (host, inside).
    pub ro_binds: Vec<(PathBuf, PathBuf)>,
    /// servo's state directory (the sandbox root's mount point lives there).
    pub state_dir: PathBuf,
    /// The command and its arguments (a bare name is looked up in the sandbox's PATH).
    pub command: Vec<String>,
}

/// Exit status: the command's own; 128+N when killed by signal N; 125 when
/// the sandbox could not be built.
pub fn sandbox_main(call: SandboxCall) -> ExitCode {
    match run(call) {
        Ok(Report::Exit(code)) => ExitCode::from(code.clamp(0, 255) as u8),
        Ok(Report::Signal(sig)) => {
            eprintln!("servo: killed by signal {sig}");
            ExitCode::from((128 + sig).clamp(0, 255) as u8)
        }
        Ok(Report::Error(e)) | Err(e) => setup_failed(&e),
    }
}

/// What `servo sandbox` says and exits with when the sandbox could not be
/// built (also for a command line that does not parse).
pub fn setup_failed(why: &str) -> ExitCode {
    eprintln!("servo: the sandbox could not be built: {why}");
    ExitCode::from(125)
}

fn run(call: SandboxCall) -> Result<Report, String> {
    let SandboxCall {
        limits,
        workdir,
        uid,
        seccomp_policy,
        ro_binds,
        state_dir,
        command,
    } = call;
    let filters =
        super::seccomp::Filters::load(seccomp_policy.as_deref()).map_err(|e| e.to_string())?;
    let root_user = nix::unistd::geteuid().is_root();
    if !root_user && !super::helper::user_namespaces_available() {
        return Err("not root, and unprivileged user namespaces are not available".into());
    }
    let scratch = state_dir.join("sandbox");
    let root = scratch.join("root");
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    if root_user {
        // The prepared root, kept across calls (root_ns.rs); rootless calls
        // build theirs each time.
        let users = [(uid, uid)];
        let plan = super::plan::Host::read()
            .map(|host| super::plan::static_root(&host, &users, &ro_binds, false))
            .map_err(|e| format!("cannot prepare the sandbox root: {e}"))?;
        let key = super::plan::key(&plan);
        let ns = super::root_ns::pinned(&scratch, &key, || {
            super::rootfs::build_static(&root, &plan)?;
            Ok(root.clone())
        })
        .map_err(|e| format!("cannot prepare the sandbox root: {e}"))?;
        super::root_ns::set_current(ns);
    }

    let workdir = match workdir {
        Some(w) => w,
        None => std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?,
    };
    let cgroups = if root_user {
        CgroupMode::detect_for_cli(&scratch)
    } else {
        CgroupMode::None
    };
    let me = CliJob::current();
    let name = match me {
        Some(me) => me.name(),
        None => format!("job-{}-cli", std::process::id()),
    };
    if let Some(me) = me {
        cgroups.sweep_orphaned_cli_jobs(me);
    }
    let cgroup = match cgroups.create(&name, &limits) {
        // Left by a call killed outright, in this PID namespace: the pid is ours now.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && me.is_some() => {
            cgroups.discard(&name);
            cgroups.create(&name, &limits)
        }
        created => created,
    }
    .map_err(|e| format!("cannot create the cgroup: {e}"))?;
    let mut command = command;
    if let Some(first) = command.first_mut() {
        if !first.contains('/') {
            *first = find_inside(first).ok_or_else(|| format!("{first}: command not found"))?;
        }
    }
    let spec = HelperSpec {
        root,
        prepared_root: None,
        workdir,
        argv: command,
        env: vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/work".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("PYTHONPATH".into(), super::plan::PYTHON_PKG_INSIDE.into()),
        ],
        uid,
        gid: uid,
        limits,
        address_space_limit: !cgroups.limits_memory(),
        relay_dir: None,
        ro_binds,
        cgroup_procs: cgroup.as_ref().map(|c| c.procs_files()).unwrap_or_default(),
        rootless: (!root_user).then(|| {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        }),
        filters: filters.programs,
    };
    let report = super::helper::run_job(&spec);
    if let Some(cg) = cgroup {
        let oom = cg.oom_killed();
        cg.kill_all();
        cg.remove();
        // The parent group `servo/sandbox` stays for the next call.
        if oom {
            eprintln!("servo: out of memory");
        }
    }
    report
}

/// Looks a bare command up in the sandbox's PATH (the same directories as the host's).
fn find_inside(name: &str) -> Option<String> {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).is_file())
}
