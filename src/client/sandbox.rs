//! The command lines of `servo sandbox -- CMD...` (parsed here, run by
//! `sandbox::cli`) and `servo policy check FILE` (a seccomp policy or a
//! tenants file).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{apply_limit, default_state_dir, parse_ro_bind};
use crate::limits::Limits;
use crate::sandbox::cli::{setup_failed, SandboxCall};

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

/// `servo sandbox`: parses the command line and runs the call
/// (`sandbox::cli::sandbox_main`).
pub fn sandbox_main(args: SandboxArgs) -> ExitCode {
    match parse(args) {
        Ok(call) => crate::sandbox::cli::sandbox_main(call),
        Err(e) => setup_failed(&e),
    }
}

fn parse(args: SandboxArgs) -> Result<SandboxCall, String> {
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
    Ok(SandboxCall {
        limits,
        workdir: args.workdir,
        uid: args.uid,
        seccomp_policy: args.seccomp_policy,
        ro_binds,
        state_dir: args.state_dir.unwrap_or_else(default_state_dir),
        command: args.command,
    })
}

/// `servo policy check [FILE]`: a seccomp policy or a tenants file (default:
/// the built-in seccomp policy).
pub fn policy_check_main(file: Option<PathBuf>) -> ExitCode {
    let (file, text) = match file {
        None => (
            PathBuf::from("(built-in policy/seccomp.json)"),
            crate::sandbox::seccomp::DEFAULT_POLICY.to_string(),
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
        crate::sandbox::seccomp::compile(&text, &file.display().to_string())
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
