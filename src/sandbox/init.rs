//! PID 1 of the job's PID namespace (steps 3 and 5 of the module comment):
//! builds the root, starts the script, reaps every process, forwards signals,
//! and when the script ends kills whatever it left behind.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::spec::{HelperSpec, Report};

/// What a warm init did before its job arrived (`prepare`).
pub struct Prepared {
    /// Its mount namespace, when there is a root namespace to copy.
    mounts: Option<super::rootfs::Ahead>,
}

/// In a warm init, before its job: the hostname, loopback, and with a root
/// namespace (root_ns.rs) the job's mount namespace less the job's own
/// mounts (`rootfs::make_ahead`). None of it depends on the job.
pub fn prepare() -> Result<Prepared, String> {
    name_and_loopback()?;
    let mounts = match super::root_ns::take_current() {
        Some(ns) => Some(super::rootfs::make_ahead(ns)?),
        None => None,
    };
    Ok(Prepared { mounts })
}

/// Never returns: reports on `status` and exits.
pub fn init_main(spec: &HelperSpec, status: OwnedFd) -> ! {
    init_main_prepared(spec, status, None)
}

/// `init_main` for an init that did `prepare` before its job arrived.
pub fn init_main_prepared(spec: &HelperSpec, status: OwnedFd, prepared: Option<Prepared>) -> ! {
    let report = match run(spec, prepared) {
        Ok(r) => r,
        Err(e) => Report::Error(e),
    };
    // Nothing may outlive the script (SPEC §5.1); PID 1 leaving takes the
    // namespace down, but kill first so that nothing runs once reported.
    let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGKILL);
    let _ = std::fs::File::from(status).write_all(report.to_line().as_bytes());
    // The report ends here, not when this process's exit has taken down its
    // memory and namespaces (a few tenths of a ms, which the server then
    // spends beside its audit record): a warm init's stderr is the report
    // pipe too.
    // SAFETY: fd 2 is this process's stderr, not owned by anything else;
    // nothing is written to it from here on.
    unsafe { libc::close(2) };
    std::process::exit(0)
}

fn run(spec: &HelperSpec, prepared: Option<Prepared>) -> Result<Report, String> {
    // If our parent dies (the helper, or the launcher for a warm init: servo
    // killed it, or servo itself died), so do we, and with PID 1 gone the
    // kernel kills the rest of the namespace.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("cannot set the parent-death signal: {e}"))?;
    // Into the job's cgroup first: every process of the job descends from here.
    let join_cgroups = || {
        for procs in &spec.cgroup_procs {
            std::fs::write(procs, "0")
                .map_err(|e| format!("cannot join the cgroup {}: {e}", procs.display()))?;
        }
        Ok(())
    };
    let named = prepared.is_some();
    match prepared.and_then(|p| p.mounts) {
        // Made ahead: the cgroups are joined by their host paths, from the
        // host's namespace.
        Some(ahead) => super::rootfs::enter_ahead(ahead, spec, join_cgroups)?,
        None => {
            join_cgroups()?;
            // A mount namespace of the init's own (its parent keeps the
            // host's): a copy of the root namespace (root_ns.rs) when there
            // is one, otherwise of the host's, in which the root is then
            // built and entered.
            match super::root_ns::take_current() {
                Some(ns) => super::rootfs::enter_root_ns(ns, spec)?,
                None => {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                        .map_err(|e| format!("cannot create the mount namespace: {e}"))?;
                    super::rootfs::build(spec)?;
                }
            }
        }
    }
    if !named {
        name_and_loopback()?;
    }

    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
        .map_err(|e| format!("cannot block signals: {e}"))?;

    // script -> init: why execve could not happen (empty on success).
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot create a pipe: {e}"))?;
    let err_w_fd = err_w.as_raw_fd();
    // SAFETY: the init is single-threaded (forked or cloned from a
    // single-threaded helper or launcher, it starts no thread), and
    // exec_script ends in execve or _exit.
    let spawned =
        unsafe { super::fork::spawn_sharing_memory(|| super::exec::exec_script(spec, err_w_fd)) };
    // When spawn returns the script has exec'd (its copy of the pipe closed
    // with it) or written why not and exited: the read below does not wait.
    drop(err_w);
    let script = spawned.map_err(|e| format!("cannot start the script: {e}"))?;
    let mut why = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut why);
    // The output pipe belongs to the script now; holding it would keep the
    // server reading after the script is gone.
    if let Some(null) = super::stdio::dev_null() {
        // SAFETY: dup2 onto fd 1 from a descriptor we hold; fd 1 is replaced
        // on purpose and nothing owns it as an OwnedFd.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    if !why.is_empty() {
        return Ok(Report::Error(why));
    }
    Ok(supervise(script, &signals))
}

/// Reaps children and forwards signals until the script has ended.
fn supervise(script: Pid, signals: &SigSet) -> Report {
    loop {
        let sig = match signals.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            // The script leads its own session and process group.
            let _ = nix::sys::signal::kill(Pid::from_raw(-script.as_raw()), sig);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == script => {
                    return Report::Exit(code);
                }
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == script => {
                    return Report::Signal(s as i32);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}

/// The UTS namespace's hostname, and loopback up.
fn name_and_loopback() -> Result<(), String> {
    nix::unistd::sethostname("servo").map_err(|e| format!("cannot set the hostname: {e}"))?;
    loopback_up()
}

/// The network namespace starts with loopback down; scripts may use it.
fn loopback_up() -> Result<(), String> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("cannot open a socket to configure loopback: {e}"))?;
    // SAFETY: ifreq is plain old data (integers, arrays and a union of
    // them), for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads a `struct ifreq`, which `req` is, on a
    // socket we hold.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    if rc != 0 {
        return Err(format!(
            "cannot bring up loopback: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
