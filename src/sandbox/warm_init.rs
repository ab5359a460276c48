//! The warm init (steps 2 and 3 of the module comment, root mode): a job's
//! init made ahead of its job. The launcher clones it as PID 1 of a new PID
//! namespace (`fork::fork_into_new_pid_namespace`); it makes its network,
//! IPC and UTS namespaces and what of its root does not depend on the job
//! (`init::prepare`) while it waits, receives the job's stdin, stdout
//! and stderr from the launcher (`launcher::hand_over` sends them), reads
//! the job and becomes the job's init (`init::init_main`).

use std::io::{IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::spec::{HelperSpec, Report};

/// The namespaces a warm init makes itself; the launcher made its PID
/// namespace when it cloned it.
const WARM_NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWNET
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWUTS);

/// The warm init's life: the launcher cloned it as PID 1 of a new PID
/// namespace (root mode), and it makes the network, IPC and UTS
/// namespaces (the costliest step of a sandbox's start, done here off the
/// job's critical path) while it waits for the job's stdin, stdout and
/// stderr on `socket`. Then it is the job's init: no helper process between
/// the launcher and the init (one fork, exit and set of page faults fewer
/// per script). It reports on stderr, as a helper would.
pub fn warm_init_main(socket: OwnedFd) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let made = nix::sched::unshare(WARM_NAMESPACES)
        .map_err(|e| format!("cannot create the namespaces: {e}"))
        // What does not depend on the job, done while it is not there yet.
        .and_then(|()| super::init::prepare());
    // A launcher that died (before the parent-death signal was set, too)
    // closed the socket: nothing would kill this job if servo went away.
    if receive_stdio(&socket).is_err() {
        std::process::exit(0);
    }
    drop(socket);
    // The init reports on its own copy of the report pipe (fd 2),
    // close-on-exec so that the script never holds it.
    // SAFETY: fcntl on a descriptor this process holds.
    let report = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    let spec = match made {
        Err(e) => Err(e),
        Ok(_) if report < 0 => Err("cannot keep the report pipe".into()),
        Ok(prepared) => HelperSpec::read_stdin().map(|spec| (spec, prepared)),
    };
    match spec {
        Ok((spec, prepared)) => {
            // SAFETY: `report` is a new descriptor owned by nothing else.
            let report = unsafe { OwnedFd::from_raw_fd(report) };
            super::init::init_main_prepared(&spec, report, Some(prepared))
        }
        Err(e) => {
            let _ = std::io::stderr().write_all(Report::Error(e).to_line().as_bytes());
            std::process::exit(0)
        }
    }
}

/// In a warm init: receives its stdin, stdout and stderr.
fn receive_stdio(socket: &OwnedFd) -> Result<(), ()> {
    let mut buf = [0u8; 16];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = loop {
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) if m.bytes > 0 => break m,
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return Err(()),
        }
    };
    let mut fds: Vec<RawFd> = Vec::new();
    for cmsg in msg.cmsgs().map_err(|_| ())? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            fds.extend(raw);
        }
    }
    if fds.len() != 3 {
        return Err(());
    }
    for (fd, target) in fds.iter().zip([0, 1, 2]) {
        // SAFETY: dup2 of a descriptor the kernel just gave us; 0, 1 and 2
        // are this process's stdio, replaced on purpose.
        if unsafe { libc::dup2(*fd, target) } < 0 {
            return Err(());
        }
    }
    for fd in fds {
        if fd > 2 {
            // SAFETY: received above and owned by nothing else; closed once.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}
