//! The one way the sandbox forks (SPEC §5, last paragraph: no allocation or
//! lock between fork/clone and execve in a multi-threaded process).
//!
//! After `fork` in a process that has other threads, the child is a copy of
//! one thread in a memory image where another thread may have held the
//! allocator's or stdio's lock at the moment of the fork: the child would
//! wait forever on it. So the child of a multi-threaded process may only
//! make async-signal-safe calls (no allocation, no lock, no `println!`)
//! until it execs or `_exit`s. A single-threaded process (the launcher,
//! `servo sandbox`, the helper and the init it forks) has no such other
//! thread, and its child may run ordinary Rust.
//!
//! Every fork of the sandbox goes through [`fork`] or
//! [`fork_into_new_pid_namespace`], and each call site says on which side of
//! that line it stands.

use nix::unistd::{ForkResult, Pid};

/// Forks the calling process.
///
/// # Safety
///
/// Either the calling process is single-threaded (then the child may do
/// anything), or the child makes only async-signal-safe calls (no
/// allocation, no lock) until it calls `execve` or `_exit`.
pub(super) unsafe fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the caller upholds the invariant above, which is exactly
    // nix's requirement for `fork`.
    unsafe { nix::unistd::fork() }
}

/// Forks the calling process into a new PID namespace, whose PID 1 the
/// child is (libc's `fork` takes no flags, so this is the raw `clone`
/// syscall, with no new stack: the child runs on a copy of this one, as
/// after `fork`).
///
/// # Safety
///
/// As for [`fork`]; moreover the calling process must be allowed to make a
/// PID namespace (CAP_SYS_ADMIN).
pub(super) unsafe fn fork_into_new_pid_namespace() -> nix::Result<ForkResult> {
    // SAFETY: clone with only CLONE_NEWPID|SIGCHLD and a null stack behaves
    // like fork (a copy of the caller's stack); the caller upholds the fork
    // invariant above. The remaining arguments (parent/child tid pointers,
    // TLS) are unused without the flags that read them.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_NEWPID | libc::SIGCHLD,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        0 => Ok(ForkResult::Child),
        child if child > 0 => Ok(ForkResult::Parent {
            child: Pid::from_raw(child as i32),
        }),
        _ => Err(nix::errno::Errno::last()),
    }
}
