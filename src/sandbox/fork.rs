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
//! Every fork of the sandbox goes through [`fork`],
//! [`fork_into_new_pid_namespace`] or [`spawn_sharing_memory`], and each
//! call site says on which side of that line it stands.

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

/// The child's stack in [`spawn_sharing_memory`]: the script's last steps
/// (exec.rs) need a few KiB; a guard page below it faults on overflow
/// instead of writing into the caller's memory.
const SHARED_CHILD_STACK: usize = 256 * 1024;

/// Runs `child` in a new process that shares the caller's memory until it
/// calls `execve` or exits (`clone` with `CLONE_VM | CLONE_VFORK`, as
/// `posix_spawn` does), on a stack of its own; returns its pid once it has
/// done either. No copy of the page tables and no copy-on-write faults: a
/// `fork` of servo cost ~35 faults and the copy (perf, 2026-12-03), and
/// the caller no longer has to wait on a pipe to learn that `execve` happened.
///
/// # Safety
///
/// The calling process is single-threaded: while the child runs, the
/// caller is suspended in `clone` and nothing else touches the shared
/// memory (the child may allocate; what it leaves is the caller's). `child`
/// must end in `execve` or `_exit`, never return or unwind.
pub(super) unsafe fn spawn_sharing_memory<F: FnOnce() -> i32>(child: F) -> nix::Result<Pid> {
    let page = 4096;
    let size = SHARED_CHILD_STACK + page;
    // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: the lowest page of the mapping above, made the guard.
    let guarded = unsafe { libc::mprotect(stack, page, libc::PROT_NONE) } == 0;
    let mut child = Some(child);
    let pid = if guarded {
        // SAFETY: the stack top is the end of our mapping (stacks grow down,
        // 16-byte aligned as the mapping is page aligned); `child` lives on
        // the caller's stack, which stays put while the caller is suspended
        // (CLONE_VFORK) and the child runs `run_child::<F>` with it.
        unsafe {
            libc::clone(
                run_child::<F>,
                stack.cast::<u8>().add(size).cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&mut child as *mut Option<F>).cast(),
            )
        }
    } else {
        -1
    };
    let result = if pid > 0 {
        Ok(Pid::from_raw(pid))
    } else {
        Err(nix::errno::Errno::last())
    };
    // SAFETY: our mapping; the child has exec'd or exited, so nothing runs on it.
    unsafe { libc::munmap(stack, size) };
    result
}

/// The child's side of [`spawn_sharing_memory`]: takes the closure the
/// caller left and runs it.
extern "C" fn run_child<F: FnOnce() -> i32>(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Option<F>` on the suspended caller's stack.
    let child = unsafe { &mut *arg.cast::<Option<F>>() };
    match child.take() {
        Some(f) => f(),
        None => 127,
    }
}
