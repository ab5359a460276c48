//! `servo sandbox -- CMD...` (run one command in the sandbox, for trying it
//! and for the benchmark) and `servo policy check FILE`.
//!
//! `servo sandbox` is single-threaded, so it plays the helper's part itself
//! instead of re-executing servo: one process fewer to start.

use std::path::PathBuf;
use std::process::ExitCode;

use super::cgroup::{CgroupMode, CliJob};
use super::spec::{HelperSpec, Report};
use crate::config::{apply_limit, default_state_dir, parse_ro_bind};
use crate::limits::Limits;

#[derive(clap::Args, Debug)]
pub struct SandboxArgs {
    /// A limit of SPEC §4.4 as NAME=VALUE (e.g. memory_mib=256); repeatable.
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    pub limits: Vec<String>,
    /// Host directory mounted read-write at /work (default: the current directory).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// uid and gid the command runs as (the default is just below the
    /// server's default --uid-range, so a call never shares a run's uid).
    #[arg(long, default_value_t = 99999)]
    pub uid: u32,
    /// seccomp policy file (default: the built-in policy/seccomp.json).
    #[arg(long, value_name = "FILE")]
    pub seccomp_policy: Option<PathBuf>,
    /// Extra read-only bind HOST[:INSIDE]; repeatable.
    #[arg(long = "ro-bind", value_name = "HOST[:INSIDE]")]
    pub ro_bind: Vec<String>,
    /// servo's state directory (the sandbox root's mount point lives there).
    #[arg(long, env = "SERVO_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The command and its arguments (a bare name is looked up in the sandbox's PATH).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Exit status: the command's own; 128+N when killed by signal N; 125 when
/// the sandbox could not be built.
pub fn sandbox_main(args: SandboxArgs) -> ExitCode {
    match run(args) {
        Ok(Report::Exit(code)) => ExitCode::from(code.clamp(0, 255) as u8),
        Ok(Report::Signal(sig)) => {
            eprintln!("servo: killed by signal {sig}");
            ExitCode::from((128 + sig).clamp(0, 255) as u8)
        }
        Ok(Report::Error(e)) | Err(e) => {
            eprintln!("servo: the sandbox could not be built: {e}");
            ExitCode::from(125)
        }
    }
}

fn run(args: SandboxArgs) -> Result<Report, String> {
    let mut limits = Limits::default();
    for l in &args.limits {
        apply_limit(&mut limits, l).map_err(|e| e.to_string())?;
    }
    let ro_binds = args
        .ro_bind
        .iter()
        .map(|s| parse_ro_bind(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let filters =
        super::seccomp::Filters::load(args.seccomp_policy.as_deref()).map_err(|e| e.to_string())?;
    let root_user = nix::unistd::geteuid().is_root();
    if !root_user && !super::helper::user_namespaces_available() {
        return Err("not root, and unprivileged user namespaces are not available".into());
    }
    let state = args.state_dir.unwrap_or_else(default_state_dir);
    let scratch = state.join("sandbox");
    let root = scratch.join("root");
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    if root_user {
        // The prepared root, kept across calls (root_ns.rs); rootless calls
        // build theirs each time.
        let users = [(args.uid, args.uid)];
        let key = super::rootfs::static_key(&users, &ro_binds);
        let ns = super::root_ns::pinned(&scratch, &key, || {
            super::rootfs::build_static(&root, &users, &ro_binds, false)?;
            Ok(root.clone())
        })
        .map_err(|e| format!("cannot prepare the sandbox root: {e}"))?;
        super::root_ns::set_current(ns);
    }

    let workdir = match args.workdir {
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
    let mut command = args.command;
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
            ("PYTHONPATH".into(), super::PYTHON_PKG_INSIDE.into()),
        ],
        uid: args.uid,
        gid: args.uid,
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

/// `servo policy check [FILE]`: a seccomp policy or a tenants file (default:
/// the built-in seccomp policy).
pub fn policy_check_main(file: Option<PathBuf>) -> ExitCode {
    let (file, text) = match file {
        None => (
            PathBuf::from("(built-in policy/seccomp.json)"),
            super::seccomp::DEFAULT_POLICY.to_string(),
        ),
        Some(f) => match std::fs::read_to_string(&f) {
            Ok(t) => (f, t),
            Err(e) => {
                eprintln!("servo: cannot read {}: {e}", f.display());
                return ExitCode::from(2);
            }
        },
    };
    let is_tenants = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .is_some_and(|v| v.get("tenants").is_some());
    let result = if is_tenants {
        crate::tenants::parse(&file, &text, Some("(checking)".into()), &Limits::default())
            .map(|t| {
                let n = t.len();
                let s = if n == 1 { "" } else { "s" };
                format!("{}: {n} tenant{s}, valid", file.display())
            })
            .map_err(|e| e.to_string())
    } else {
        super::seccomp::compile(&text, &file.display().to_string())
            .map(|f| {
                format!(
                    "{}: {} seccomp filters, {} BPF instructions, valid",
                    file.display(),
                    f.programs.len(),
                    f.programs.iter().map(Vec::len).sum::<usize>()
                )
            })
            .map_err(|e| e.to_string())
    };
    match result {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("servo: {e}");
            ExitCode::FAILURE
        }
    }
}
