//! The helper, forked by the launcher for each job: the single-threaded
//! process that makes the namespaces and waits for the job (steps 2 and 5
//! of the module comment). `run_job` is also what `servo sandbox` runs
//! in-process.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sched::CloneFlags;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::spec::{HelperSpec, Report};

/// The init's pid, for forwarding signals from a handler.
static INIT_PID: AtomicI32 = AtomicI32::new(0);

/// A helper the launcher forked for a job that has arrived; `launcher` is
/// the launcher's pid (its parent, unless the launcher already died).
pub fn launched_main(launcher: u32) -> ! {
    helper_body(launcher)
}

const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWPID
    .union(CloneFlags::CLONE_NEWNET)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWUTS);

/// Job on stdin, report on stderr.
fn helper_body(launcher: u32) -> ! {
    // If servo dies (even by SIGKILL), so does the helper, then the init
    // (its own parent-death signal), and with it the whole PID namespace.
    // The helper's parent is the launcher, whose own parent-death signal is
    // tied to servo's main thread.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let report = match HelperSpec::read_stdin() {
        // The launcher died before the parent-death signal was set: nothing
        // would kill this job if servo went away.
        Ok(_) if std::os::unix::process::parent_id() != launcher => {
            Report::Error("servo ended before the sandbox started".into())
        }
        Ok(spec) => match run_job(&spec) {
            Ok(r) => r,
            Err(e) => Report::Error(e),
        },
        Err(e) => Report::Error(e),
    };
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(report.to_line().as_bytes());
    let _ = err.flush();
    std::process::exit(0)
}

/// Whether this kernel lets an unprivileged process make a user namespace.
pub fn user_namespaces_available() -> bool {
    // SAFETY: the caller may be multi-threaded (the server at start-up), so
    // the child makes only async-signal-safe calls: unshare and _exit.
    match unsafe { super::fork::fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: unshare takes flags only; async-signal-safe.
            let ok = unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0;
            // SAFETY: _exit ends the child without running anything.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        Ok(ForkResult::Parent { child }) => {
            matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, 0)))
        }
        Err(_) => false,
    }
}

/// Runs one job in new namespaces with the calling process as the helper.
/// Also used in-process by `servo sandbox`, which is single-threaded.
/// stdout (fd 1) must be where the job's output goes.
pub fn run_job(spec: &HelperSpec) -> Result<Report, String> {
    // The mount namespace is the init's own (see init.rs): this process
    // keeps the host's view, so `servo sandbox` can clean up after the job.
    if let Some((outer_uid, outer_gid)) = spec.rootless {
        enter_user_namespace(spec, outer_uid, outer_gid)?;
    }
    nix::sched::unshare(NAMESPACES).map_err(|e| format!("cannot create the namespaces: {e}"))?;

    // init -> helper: the script's status, or why set-up failed.
    let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot create a pipe: {e}"))?;
    // SAFETY: the helper (and `servo sandbox`) is single-threaded: a child
    // of the single-threaded launcher, or servo's CLI before any thread.
    let forked = unsafe { super::fork::fork() };
    match forked.map_err(|e| format!("cannot fork the sandbox init: {e}"))? {
        ForkResult::Child => {
            drop(status_r);
            super::init::init_main(spec, status_w)
        }
        ForkResult::Parent { child } => {
            drop(status_w);
            INIT_PID.store(child.as_raw(), Ordering::Relaxed);
            forward_signals_to_init();
            // Only the init and the script hold the output pipe now, so it
            // closes as soon as the job's last process is gone.
            close_stdout();
            wait_init(child, status_r)
        }
    }
}

fn close_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1 from a descriptor we hold; fd 1 is replaced
        // on purpose and nothing owns it as an OwnedFd.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
}

extern "C" fn forward(sig: libc::c_int) {
    let pid = INIT_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes integers only.
        unsafe { libc::kill(pid, sig) };
    }
}

fn forward_signals_to_init() {
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: `forward` only reads an atomic and calls kill, both
        // async-signal-safe.
        let _ = unsafe { nix::sys::signal::sigaction(sig, &action) };
    }
}

fn wait_init(init: Pid, status_r: OwnedFd) -> Result<Report, String> {
    // The init's exit first, then its report: the report is one short line
    // that waits in the pipe. Read first, the helper woke on the init's
    // last close of the pipe and spun on the pipe's lock while the init
    // finished that close (~0.3 ms of CPU per job on this VM, perf).
    let status = loop {
        match waitpid(init, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    let mut message = Vec::new();
    let _ = std::fs::File::from(status_r).read_to_end(&mut message);
    let message = String::from_utf8_lossy(&message);
    if !message.is_empty() {
        return Ok(Report::parse(&message));
    }
    match status {
        Ok(WaitStatus::Signaled(_, sig, _)) => Err(format!(
            "the sandbox init was killed by signal {}",
            sig as i32
        )),
        other => Err(format!(
            "the sandbox init ended without a report: {other:?}"
        )),
    }
}

/// Rootless mode: a user namespace in which the job's uid/gid map to servo's
/// own, so that the other namespaces and mounts can be made without root.
fn enter_user_namespace(spec: &HelperSpec, outer_uid: u32, outer_gid: u32) -> Result<(), String> {
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("cannot create a user namespace: {e}"))?;
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text)
            .map_err(|e| format!("cannot write /proc/self/{file}: {e}"))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{} {outer_uid} 1\n", spec.uid))?;
    write("gid_map", format!("{} {outer_gid} 1\n", spec.gid))?;
    Ok(())
}
