//! The pre-forked launcher (SPEC §5 fork safety, §9 start-up cost).
//!
//! Started once by `Sandbox::new` as a fresh image of servo
//! (`servo __sandbox-launcher`, empty environment), so it is single-threaded,
//! may fork and allocate freely, and holds nothing of the server's memory:
//! no token or tenant reaches a sandbox process through it (SPEC §5.9). For each job the server
//! sends it one message on a SOCK_SEQPACKET pair, carrying three descriptors:
//! the job (a memfd holding the JSON spec), the output pipe and the report
//! pipe. The launcher forks a helper that takes them as stdin, stdout and
//! stderr and runs the job (`helper.rs`), and answers with
//! the helper's pid and a pidfd (to wait for and kill it without pid reuse
//! races). This saves an `execve` of servo and its start-up per script.
//!
//! The launcher dies with servo (parent-death signal), and every helper dies
//! with the launcher, so nothing outlives servo. A launcher that dies while
//! servo lives (killed, crashed) is replaced at the next request.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sys::signal::Signal;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::unistd::{ForkResult, Pid};

/// The server's end of the launcher.
pub struct Launcher {
    /// Root mode: where the server's prepared root is mounted; the launcher
    /// keeps it as a root namespace (root_ns.rs) and makes each next init
    /// ahead (a warm init).
    prepared_root: Option<PathBuf>,
    /// One request and its answer at a time.
    process: Mutex<Process>,
}

/// A running launcher and the socket to it.
struct Process {
    socket: OwnedFd,
    child: std::process::Child,
}

fn io(what: &str) -> impl FnOnce(nix::errno::Errno) -> std::io::Error + '_ {
    move |e| std::io::Error::new(std::io::Error::from(e).kind(), format!("{what}: {e}"))
}

/// Why a request to the launcher failed.
enum LaunchError {
    /// The launcher is gone (crashed, killed): start another.
    Gone(std::io::Error),
    /// The launcher answered: it could not start a helper.
    Refused(std::io::Error),
}

impl Process {
    /// Starts `servo __sandbox-launcher`: a fresh executable image, with an
    /// empty environment, so that the launcher and every sandbox process
    /// forked from it hold nothing of servo's memory (tokens, tenants) or
    /// environment (SPEC §5.9). `std::process::Command` is safe to use from
    /// the runtime's threads (nothing runs between its fork and its exec).
    fn spawn(prepared_root: Option<&Path>) -> std::io::Result<Process> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io("cannot create the launcher's socket"))?;
        let mut command = std::process::Command::new("/proc/self/exe");
        command.arg(LAUNCHER_ARG);
        match prepared_root {
            Some(root) => command.arg("warm").arg(root),
            None => command.arg("cold"),
        };
        let child = command
            .env_clear()
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::null())
            .spawn()?;
        Ok(Process {
            socket: ours,
            child,
        })
    }

    fn request(&self, fds: &[RawFd; 3]) -> Result<OwnedFd, LaunchError> {
        let gone = |e: nix::errno::Errno| LaunchError::Gone(io("the sandbox launcher is gone")(e));
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(b"job")],
            &[ControlMessage::ScmRights(fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(gone)?;
        let mut code = [0u8; 4];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut code)];
        let msg = recvmsg::<()>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(gone)?;
        let mut pidfd = None;
        for cmsg in msg.cmsgs().map_err(gone)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    // SAFETY: the kernel just gave us this descriptor.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    pidfd.get_or_insert(owned);
                }
            }
        }
        if msg.bytes != 4 {
            return Err(gone(nix::errno::Errno::EPIPE));
        }
        pidfd.ok_or_else(|| {
            let errno = i32::from_le_bytes(code);
            LaunchError::Refused(std::io::Error::other(format!(
                "the launcher could not start a helper: {}",
                std::io::Error::from_raw_os_error(errno)
            )))
        })
    }
}

impl Launcher {
    /// Starts the launcher. With a `prepared_root` (root mode), it keeps one
    /// job's init made ahead of its job, a warm init
    /// (`warm_init::warm_init_main`), in whose copy of the root namespace
    /// the job's root is mounted.
    pub fn start(prepared_root: Option<PathBuf>) -> std::io::Result<Launcher> {
        let process = Process::spawn(prepared_root.as_deref())?;
        Ok(Launcher {
            prepared_root,
            process: Mutex::new(process),
        })
    }

    /// Starts a helper with `job`, `output` and `report` as its stdin,
    /// stdout and stderr; returns its pidfd. A launcher that died (killed,
    /// crashed) is replaced, once per request, so servo keeps serving.
    pub fn launch(
        &self,
        job: &OwnedFd,
        output: &OwnedFd,
        report: &OwnedFd,
    ) -> std::io::Result<OwnedFd> {
        let mut process = self.process.lock().unwrap_or_else(|p| p.into_inner());
        let fds = [job.as_raw_fd(), output.as_raw_fd(), report.as_raw_fd()];
        match process.request(&fds) {
            Ok(pidfd) => Ok(pidfd),
            Err(LaunchError::Refused(e)) => Err(e),
            Err(LaunchError::Gone(e)) => {
                tracing::warn!("{e}: starting a new sandbox launcher");
                let _ = process.child.kill();
                let _ = process.child.wait();
                *process = Process::spawn(self.prepared_root.as_deref())?;
                match process.request(&fds) {
                    Ok(pidfd) => Ok(pidfd),
                    Err(LaunchError::Refused(e) | LaunchError::Gone(e)) => Err(e),
                }
            }
        }
    }
}

/// A warm init: an init cloned ahead of its job, waiting for its descriptors.
struct WarmInit {
    socket: OwnedFd,
    pidfd: OwnedFd,
}

/// Clones a warm init: PID 1 of a new PID namespace, waiting for its job
/// (`warm_init::warm_init_main`).
fn fork_warm_init(server: &OwnedFd) -> Option<WarmInit> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ok()?;
    // SAFETY: the launcher is single-threaded (a fresh image of servo that
    // starts no thread) and holds no lock; the child only calls
    // warm_init_main.
    match unsafe { super::fork::fork_into_new_pid_namespace() } {
        Ok(ForkResult::Child) => {
            // SAFETY: `server` is the launcher's socket, which the child
            // closes without an owner (its OwnedFd is never dropped here,
            // since warm_init_main does not return); SIG_DFL is a valid
            // disposition.
            unsafe {
                libc::close(server.as_raw_fd());
                libc::signal(libc::SIGCHLD, libc::SIG_DFL);
            }
            drop(ours);
            super::warm_init::warm_init_main(theirs)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(theirs);
            let pidfd = pidfd_open(child).ok()?;
            Some(WarmInit {
                socket: ours,
                pidfd,
            })
        }
        Err(_) => None,
    }
}

/// Hands a job's three descriptors to a warm init.
fn hand_over(warm: WarmInit, fds: &[OwnedFd]) -> Result<OwnedFd, i32> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    sendmsg::<()>(
        warm.socket.as_raw_fd(),
        &[IoSlice::new(b"job")],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| e as i32)?;
    Ok(warm.pidfd)
}

fn pidfd_open(pid: Pid) -> Result<OwnedFd, i32> {
    // SAFETY: a plain syscall with integer arguments; returns a new
    // descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // SAFETY: pidfd_open returned a new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The argument that makes `servo` the launcher (`main` dispatches it).
pub const LAUNCHER_ARG: &str = "__sandbox-launcher";

/// Entry point of `servo __sandbox-launcher warm ROOT|cold`: the socket is
/// stdin.
pub fn launcher_main() -> ! {
    let warm = std::env::args_os().nth(2).is_some_and(|a| a == "warm");
    if let Some(root) = std::env::args_os().nth(3).filter(|_| warm) {
        // Jobs then mount their root in a copy of this namespace instead of
        // a copy of the host's (root_ns.rs). Without it they still run, in
        // the slower way.
        match super::root_ns::make(|| Ok(PathBuf::from(root))) {
            Ok(ns) => super::root_ns::set_current(ns),
            Err(e) => eprintln!(
                "servo: cannot keep the prepared root as a mount namespace ({e}); \
                 each script's root is mounted in a copy of the host's mounts"
            ),
        }
    }
    // SAFETY: fd 0 is the socket servo gave us, and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(libc::dup(0)) };
    if let Some(null) = super::stdio::dev_null() {
        // SAFETY: dup2 onto fd 0, whose old description `socket` now holds
        // through its own duplicate.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
    serve(socket, warm)
}

/// The launcher's loop; never returns.
fn serve(socket: OwnedFd, warm: bool) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // Helpers are reaped by the kernel; the server waits on their pidfds.
    // SAFETY: SIG_IGN is a valid disposition; no handler runs.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let _ = nix::sys::prctl::set_name(c"servo-launcher");
    // No process the launcher forks execs anything but a script, and each
    // script's process clears the bounding set again before its execve
    // (exec.rs): emptied once here, it is inherited empty, and the 41
    // PR_CAPBSET_DROPs (a new set of credentials each) leave every script's
    // start (~80 µs). The launcher and its inits keep their effective
    // capabilities, which the bounding set does not limit. Rootless, the
    // launcher cannot (no CAP_SETPCAP) and need not: a new user namespace
    // starts with a full bounding set, which the script's process clears.
    let _ = caps::clear(None, caps::CapSet::Bounding);
    let mut ready = if warm { fork_warm_init(&socket) } else { None };
    loop {
        let mut buf = [0u8; 16];
        let mut space = nix::cmsg_space!([RawFd; 3]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let received = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let msg = match received {
            Ok(m) if m.bytes > 0 => m,
            Err(nix::errno::Errno::EINTR) => continue,
            // servo closed its end, or is gone.
            // SAFETY: _exit ends the process without running anything.
            _ => unsafe { libc::_exit(0) },
        };
        let mut fds: Vec<OwnedFd> = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    // SAFETY: descriptors just received are ours to own.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
        }
        let answer = if fds.len() != 3 {
            Err(libc::EINVAL)
        } else {
            // A warm init if there is one (it may have died: then a helper).
            match ready.take().map(|w| hand_over(w, &fds)) {
                Some(Ok(pidfd)) => Ok(pidfd),
                _ => start_helper(&socket, &fds),
            }
        };
        drop(fds);
        let (code, pidfd) = match answer {
            Ok(pidfd) => (0, Some(pidfd)),
            Err(errno) => (errno, None),
        };
        let raw: Vec<RawFd> = pidfd.iter().map(|f| f.as_raw_fd()).collect();
        let cmsgs: Vec<ControlMessage> = if raw.is_empty() {
            Vec::new()
        } else {
            vec![ControlMessage::ScmRights(&raw)]
        };
        let bytes = code.to_le_bytes();
        if sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &cmsgs,
            MsgFlags::empty(),
            None,
        )
        .is_err()
        {
            // SAFETY: _exit ends the process without running anything.
            unsafe { libc::_exit(0) }
        }
        // The next job's helper, made while the server waits for this one.
        if warm && ready.is_none() {
            ready = fork_warm_init(&socket);
        }
    }
}

/// Forks one helper; returns its pidfd, or an errno.
fn start_helper(socket: &OwnedFd, fds: &[OwnedFd]) -> Result<OwnedFd, i32> {
    let launcher = std::process::id();
    // SAFETY: the launcher is single-threaded and holds no lock.
    match unsafe { super::fork::fork() } {
        Err(e) => Err(e as i32),
        Ok(ForkResult::Child) => {
            // SAFETY: the child closes the launcher's socket (never used
            // again: launched_main does not return) and moves the job's
            // descriptors, which it holds, to 0, 1 and 2; the originals
            // above 2 are closed once, and their OwnedFds are never dropped
            // in this process.
            unsafe {
                libc::close(socket.as_raw_fd());
                libc::signal(libc::SIGCHLD, libc::SIG_DFL);
                for (fd, target) in fds.iter().zip([0, 1, 2]) {
                    if libc::dup2(fd.as_raw_fd(), target) < 0 {
                        libc::_exit(127);
                    }
                }
                for fd in fds {
                    if fd.as_raw_fd() > 2 {
                        libc::close(fd.as_raw_fd());
                    }
                }
            }
            super::helper::launched_main(launcher)
        }
        Ok(ForkResult::Parent { child }) => pidfd_open(child).inspect_err(|_| {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        }),
    }
}
