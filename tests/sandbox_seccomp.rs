//! SPEC §5.6: the seccomp allowlist: each refused family, i386 and x32 calls,
//! and ordinary things still working.
//!
//! Part of the sandbox escape suite (one file per SPEC §5 item, sharing
//! `tests/support/escape.rs`): every guarantee attempted from inside
//! `servo sandbox` by `tests/support/probe.py`. Each probe also runs outside
//! the sandbox (as root on the host, or in throwaway namespaces from
//! `unshare` when the action is destructive), where it must work or fail for
//! another reason than the sandbox's refusal, so a test cannot pass because
//! the probe itself is broken.
//!
//! Runs as root only: `require_root()` skips elsewhere and fails under CI=true.

mod support;

use support::escape::{check, expect, outside_unshared, Jail, EPERM};
use support::require_root;

/// One refused family: the probe's `sys CASE` must not be refused with EPERM
/// on the host, and must get `inside` in the sandbox.
fn seccomp_case(family: &str, case: &str, inside_verdict: &str) {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let host = outside_unshared(&jail.workdir(), "sys", &[case]);
    check(
        host.verdict() != EPERM && host.verdict().starts_with(['o', 'e']),
        &format!("§5.6 {family} (control)"),
        &format!("`{case}` outside must work or fail otherwise than EPERM"),
        &host,
    );
    let inside = jail.probe("sys", &[case]);
    check(
        inside.verdict() == inside_verdict,
        &format!("§5.6 seccomp: {family}"),
        &format!(
            "`{case}` inside: expected `RESULT {inside_verdict}`, got `{}`",
            inside.result()
        ),
        &inside,
    );
}

macro_rules! seccomp_refuses {
    ($($test:ident: $family:literal, $case:literal => $verdict:expr;)*) => {
        $(
            #[test]
            fn $test() {
                seccomp_case($family, $case, $verdict);
            }
        )*
    };
}

seccomp_refuses! {
    s5_6_refuses_mount: "mount", "mount" => EPERM;
    s5_6_refuses_umount2: "umount2", "umount2" => EPERM;
    s5_6_refuses_pivot_root: "pivot_root", "pivot_root" => EPERM;
    s5_6_refuses_chroot: "chroot", "chroot" => EPERM;
    s5_6_refuses_unshare_even_a_no_op: "unshare", "unshare_noop" => EPERM;
    s5_6_refuses_unshare_user_namespace: "unshare", "unshare_newuser" => EPERM;
    s5_6_refuses_setns: "setns", "setns" => EPERM;
    s5_6_refuses_clone_newuser: "clone with namespace flags", "clone_newuser" => EPERM;
    s5_6_refuses_clone_newns: "clone with namespace flags", "clone_newns" => EPERM;
    s5_6_clone3_answers_enosys: "clone3 (ENOSYS)", "clone3" => "errno=38";
    s5_6_refuses_ptrace: "ptrace", "ptrace" => EPERM;
    s5_6_refuses_process_vm_readv: "process_vm_readv", "process_vm_readv" => EPERM;
    s5_6_refuses_process_vm_writev: "process_vm_writev", "process_vm_writev" => EPERM;
    s5_6_refuses_bpf: "bpf", "bpf" => EPERM;
    s5_6_refuses_perf_event_open: "perf_event_open", "perf_event_open" => EPERM;
    s5_6_refuses_userfaultfd: "userfaultfd", "userfaultfd" => EPERM;
    s5_6_refuses_io_uring_setup: "io_uring_*", "io_uring_setup" => EPERM;
    s5_6_refuses_io_uring_enter: "io_uring_*", "io_uring_enter" => EPERM;
    s5_6_refuses_io_uring_register: "io_uring_*", "io_uring_register" => EPERM;
    s5_6_refuses_keyctl: "keyctl", "keyctl" => EPERM;
    s5_6_refuses_add_key: "add_key", "add_key" => EPERM;
    s5_6_refuses_request_key: "request_key", "request_key" => EPERM;
    s5_6_refuses_kexec_load: "kexec_*", "kexec_load" => EPERM;
    s5_6_refuses_kexec_file_load: "kexec_*", "kexec_file_load" => EPERM;
    s5_6_refuses_init_module: "module loading", "init_module" => EPERM;
    s5_6_refuses_finit_module: "module loading", "finit_module" => EPERM;
    s5_6_refuses_delete_module: "module loading", "delete_module" => EPERM;
    s5_6_refuses_open_by_handle_at: "open_by_handle_at", "open_by_handle_at" => EPERM;
    s5_6_refuses_ioctl_tiocsti: "ioctl(TIOCSTI)", "ioctl_tiocsti" => EPERM;
    s5_6_refuses_ioctl_tiocsti_with_high_bits: "ioctl(TIOCSTI), request compared as 32 bits", "ioctl_tiocsti_high_bits" => EPERM;
    s5_6_refuses_ioctl_tiocsti_with_all_high_bits: "ioctl(TIOCSTI), request compared as 32 bits", "ioctl_tiocsti_all_high_bits" => EPERM;
    s5_6_refuses_ioctl_tioclinux: "ioctl(TIOCLINUX)", "ioctl_tioclinux" => EPERM;
    s5_6_refuses_ioctl_tioclinux_with_high_bits: "ioctl(TIOCLINUX), request compared as 32 bits", "ioctl_tioclinux_high_bits" => EPERM;
    s5_6_refuses_x32_syscalls: "foreign architecture (x32)", "x32_getpid" => EPERM;
    s5_6_allows_ordinary_ioctls: "ioctl (control: TCGETS on /dev/null gets ENOTTY)", "ioctl_tcgets" => "errno=25";
    s5_6_allows_plain_clone: "clone (control: a plain fork works)", "clone_plain" => "ok";
}

#[test]
fn s5_6_refuses_i386_int80_syscalls() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    // Outside: getpid via int 0x80 works, unless the kernel has no i386
    // emulation (ENOSYS, or SIGSEGV from the int instruction).
    let host = outside_unshared(&jail.workdir(), "sys", &["i386_int80"]);
    check(
        host.verdict() == "ok" || host.verdict() == "errno=38" || host.signal == Some(11),
        "§5.6 foreign architecture (i386) (control)",
        "int 0x80 on the host works or the kernel lacks the ABI",
        &host,
    );
    // Inside: seccompiler's filters kill a foreign-architecture call with
    // SIGSYS (servo exits 128+31); EPERM or a refused PROT_EXEC mapping would
    // also keep it out.
    let inside = jail.probe("sys", &["i386_int80"]);
    let refused = inside.code == Some(128 + 31)
        || inside.verdict() == EPERM
        || inside.detail().contains("mmap PROT_EXEC refused");
    check(
        refused,
        "§5.6 seccomp: foreign architecture (i386)",
        "an int 0x80 system call must be refused (SIGSYS kill or EPERM)",
        &inside,
    );
}

#[test]
fn s5_6_ordinary_things_still_work() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let inside = jail.probe("ordinary", &[]);
    expect(
        &inside,
        "ok",
        "§5.6 allowlist too tight",
        "threads, fork/exec, multiprocessing over AF_UNIX and /dev/urandom must work",
    );
}
