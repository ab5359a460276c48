//! The last steps before the script's `execve` (step 4 of the module comment).
//! Order matters: identity changes need the capabilities that are dropped
//! after them, and seccomp comes last because it refuses the calls before it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};

use caps::CapSet;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::{Gid, Uid};

use super::spec::HelperSpec;

/// Runs in the script's process, which shares the init's memory until
/// `execve` (fork.rs, `spawn_sharing_memory`): nothing here may be dropped
/// that the init still owns, so `err` is a raw descriptor (this process's
/// copy of it). Never returns: execs the script, or writes why not on `err`
/// and exits 127.
pub fn exec_script(spec: &HelperSpec, err: RawFd) -> ! {
    let why = match prepare(spec, err) {
        Ok(()) => exec(spec),
        Err(e) => e,
    };
    // Bounded: the init reads it only once this process is gone.
    let why = super::spec::cut(&why, super::spec::REASON_MAX);
    // SAFETY: `err` is open in this process (its copy of the init's table)
    // and `why` a live buffer of that length.
    let _ = unsafe { libc::write(err, why.as_ptr().cast(), why.len()) };
    // SAFETY: _exit ends the script's process without running anything
    // (no destructor touches the memory the init is about to resume with).
    unsafe { libc::_exit(127) }
}

fn fail(what: &str) -> impl FnOnce(nix::errno::Errno) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn prepare(spec: &HelperSpec, err: RawFd) -> Result<(), String> {
    // No controlling terminal, and a process group of its own that the init
    // can signal as a whole.
    nix::unistd::setsid().map_err(fail("setsid failed"))?;
    // stdin /dev/null; stdout and stderr both the output pipe (fd 1).
    let null = super::stdio::dev_null().ok_or("cannot open /dev/null")?;
    // SAFETY: dup2 onto fds 0 and 2 from descriptors we hold; both are
    // replaced on purpose and nothing owns them as OwnedFds.
    unsafe {
        if libc::dup2(null.as_raw_fd(), 0) < 0 || libc::dup2(1, 2) < 0 {
            return Err("cannot set up stdin/stderr".into());
        }
    }
    drop(null);
    // Nothing else of servo's may be reachable: close every other descriptor
    // but the error pipe (close-on-exec, it closes itself on success).
    let keep = err as libc::c_uint;
    // SAFETY: close_range closes descriptors below and above `err`; the
    // ones this process still uses are 0-2 and `err`. (OwnedFds of closed
    // descriptors are not dropped: this process execs or `_exit`s.)
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, keep - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
    }

    set_limits(spec)?;
    nix::unistd::chdir("/work").map_err(fail("cannot enter /work"))?;

    let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
    if spec.rootless.is_none() {
        // (In a user namespace set up with setgroups=deny this is refused,
        // and there are no mapped groups to drop.)
        nix::unistd::setgroups(&[]).map_err(fail("cannot clear supplementary groups"))?;
    }
    nix::unistd::setresgid(gid, gid, gid).map_err(fail("cannot set the gid"))?;
    // The bounding set can only be lowered while CAP_SETPCAP is held.
    caps::clear(None, CapSet::Bounding)
        .map_err(|e| format!("cannot drop the bounding capabilities: {e}"))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| format!("cannot drop the inheritable capabilities: {e}"))?;
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| format!("cannot drop the ambient capabilities: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(fail("cannot set the uid"))?;
    caps::clear(None, CapSet::Effective)
        .and_then(|_| caps::clear(None, CapSet::Permitted))
        .map_err(|e| format!("cannot drop the remaining capabilities: {e}"))?;
    for set in [
        CapSet::Effective,
        CapSet::Permitted,
        CapSet::Inheritable,
        CapSet::Ambient,
        CapSet::Bounding,
    ] {
        match caps::read(None, set) {
            Ok(held) if held.is_empty() => {}
            _ => return Err(format!("capabilities remain in the {set:?} set")),
        }
    }
    nix::sys::prctl::set_no_new_privs().map_err(fail("cannot set no_new_privs"))?;
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(fail("cannot reset the signal mask"))?;
    super::seccomp::apply(&spec.filters).map_err(|e| format!("cannot load seccomp: {e}"))
}

fn set_limits(spec: &HelperSpec) -> Result<(), String> {
    let l = &spec.limits;
    let mut limits = vec![
        (Resource::RLIMIT_CPU, l.cpu_s),
        (Resource::RLIMIT_NOFILE, l.open_files),
        (Resource::RLIMIT_FSIZE, l.file_bytes()),
        (Resource::RLIMIT_CORE, 0),
    ];
    // RLIMIT_NPROC counts per uid, and each run has its own uid: it bounds
    // the run's processes even without a pids cgroup.
    limits.push((Resource::RLIMIT_NPROC, l.pids));
    if spec.address_space_limit {
        limits.push((Resource::RLIMIT_AS, l.memory_bytes()));
    }
    for (resource, value) in limits {
        setrlimit(resource, value, value)
            .map_err(|e| format!("cannot set {resource:?} to {value}: {e}"))?;
    }
    Ok(())
}

fn exec(spec: &HelperSpec) -> String {
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
    let argv: Result<Vec<CString>, String> = spec.argv.iter().map(|a| cstr(a)).collect();
    let env: Result<Vec<CString>, String> = spec
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect();
    let (argv, env) = match (argv, env) {
        (Ok(a), Ok(e)) if !a.is_empty() => (a, e),
        (Err(e), _) | (_, Err(e)) => return e,
        _ => return "no command to run".into(),
    };
    let e = match nix::unistd::execve(&argv[0], &argv, &env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    // The name cut so that the reason stays within spec::REASON_MAX.
    let name = super::spec::cut(&spec.argv[0], 256);
    format!("cannot execute {name}: {e}")
}
