//! The seccomp policy compiled to classic BPF that finds the syscall number
//! by binary search instead of seccompiler's linear chain of comparisons.
//!
//! Why: when a filter is attached the kernel runs it once for every syscall
//! number to build its action cache, and translates and JITs it. The shipped
//! allowlist is 1,234 instructions in seccompiler's linear form, which cost
//! about 0.5 ms per sandbox start; dispatching on ranges of syscall numbers
//! that share a verdict needs a tenth of that.
//!
//! The semantics are seccompiler 0.5's, which stays the validator and the
//! reference (the differential tests below compare both programs verdict by
//! verdict):
//! - the architecture is checked first; a foreign one kills the process;
//! - a syscall absent from the filter gets `mismatch_action`;
//! - a syscall listed only without `args` gets `filter_action`;
//! - a syscall with rules gets `filter_action` when any rule matches (a rule
//!   matches when all its conditions hold), else `mismatch_action`. A bare
//!   entry next to entries with `args` adds nothing (as in seccompiler);
//! - a `dword` condition compares the low 32 bits of the argument with the
//!   low 32 bits of `val`; a `qword` one compares all 64 bits, unsigned.
//!
//! The input is the policy text after `seccompiler::compile_from_json`
//! accepted it; the action, operator and width types are seccompiler's own
//! (so parsing and the `SECCOMP_RET_*` encodings are the same). Syscall
//! names resolve through libc's `SYS_*` constants, checked entry by entry
//! against seccompiler in the tests, or seccompiler itself (`probe`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use seccompiler::{SeccompAction, SeccompCmpArgLen, SeccompCmpOp};
use serde::Deserialize;

use super::spec::Program;

// Classic BPF opcodes (linux/bpf_common.h); only these are emitted.
const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;

/// EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE (linux/audit.h); the
/// only architecture servo builds filters for, as seccompiler's x86_64 target.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// What seccompiler answers a call made with a foreign architecture.
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// The kernel's limit on a filter's length (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

/// One filter of the policy, as seccompiler's JSON frontend reads it
/// (including its aliases; comments and unknown fields were checked by it).
#[derive(Deserialize)]
struct JsonFilter {
    #[serde(alias = "default_action")]
    mismatch_action: SeccompAction,
    #[serde(alias = "filter_action")]
    match_action: SeccompAction,
    filter: Vec<JsonRule>,
}

#[derive(Deserialize)]
struct JsonRule {
    syscall: String,
    args: Option<Vec<Cond>>,
}

#[derive(Clone, Debug, Deserialize)]
struct Cond {
    index: u8,
    #[serde(rename = "type")]
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    val: u64,
}

/// Compiles every filter of a policy that `seccompiler::compile_from_json`
/// accepted. Errors are one sentence (the caller adds the file's name).
pub fn compile(text: &str) -> Result<BTreeMap<String, Program>, String> {
    let filters: BTreeMap<String, JsonFilter> =
        serde_json::from_str(text).map_err(|e| format!("cannot read the policy: {e}"))?;
    let names: BTreeSet<&str> = filters
        .values()
        .flat_map(|f| f.filter.iter().map(|r| r.syscall.as_str()))
        .collect();
    let numbers = syscall_numbers(&names)?;
    let mut out = BTreeMap::new();
    for (name, filter) in &filters {
        let program =
            compile_filter(filter, &numbers).map_err(|e| format!("filter `{name}`: {e}"))?;
        out.insert(name.clone(), program);
    }
    Ok(out)
}

/// Resolves syscall names to seccompiler's x86_64 numbers: from libc's
/// constants when it has the name, else by asking seccompiler (`probe`).
fn syscall_numbers<'a>(names: &BTreeSet<&'a str>) -> Result<HashMap<&'a str, u32>, String> {
    let mut numbers = HashMap::with_capacity(names.len());
    let mut others = BTreeSet::new();
    for &name in names {
        match libc_number(name) {
            Some(nr) => {
                numbers.insert(name, nr);
            }
            None => {
                others.insert(name);
            }
        }
    }
    if !others.is_empty() {
        numbers.extend(probe(&others)?);
    }
    Ok(numbers)
}

macro_rules! syscall_table {
    ($($sys:ident),* $(,)?) => {
        &[$((without_sys(stringify!($sys)), libc::$sys)),*]
    };
}

/// "SYS_read" -> "read". Only evaluated in the constant below, so its
/// panics are compile errors.
const fn without_sys(ident: &'static str) -> &'static str {
    match ident.as_bytes().split_first_chunk::<4>() {
        Some((b"SYS_", rest)) => match std::str::from_utf8(rest) {
            Ok(name) => name,
            Err(_) => panic!("not UTF-8"),
        },
        _ => panic!("not a SYS_ constant"),
    }
}

/// libc's x86_64 `SYS_*` constants by name, sorted for a binary search.
/// Why not ask seccompiler for every name: its table is private, and the
/// probe (seccompiler reads JSON with `serde_json::from_reader`) costs
/// 0.18 ms for the shipped policy's 243 names, on every `servo sandbox`
/// start; this table 0.02 ms. Each entry is checked against seccompiler in
/// the tests.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const SYSCALLS: &[(&str, libc::c_long)] = syscall_table![
    SYS__sysctl, SYS_accept, SYS_accept4, SYS_access, SYS_acct, SYS_add_key, SYS_adjtimex,
    SYS_afs_syscall, SYS_alarm, SYS_arch_prctl, SYS_bind, SYS_bpf, SYS_brk, SYS_capget,
    SYS_capset, SYS_chdir, SYS_chmod, SYS_chown, SYS_chroot, SYS_clock_adjtime,
    SYS_clock_getres, SYS_clock_gettime, SYS_clock_nanosleep, SYS_clock_settime, SYS_clone,
    SYS_clone3, SYS_close, SYS_close_range, SYS_connect, SYS_copy_file_range, SYS_creat,
    SYS_delete_module, SYS_dup, SYS_dup2, SYS_dup3, SYS_epoll_create, SYS_epoll_create1,
    SYS_epoll_ctl, SYS_epoll_ctl_old, SYS_epoll_pwait, SYS_epoll_pwait2, SYS_epoll_wait,
    SYS_epoll_wait_old, SYS_eventfd, SYS_eventfd2, SYS_execve, SYS_execveat, SYS_exit,
    SYS_exit_group, SYS_faccessat, SYS_faccessat2, SYS_fadvise64, SYS_fallocate,
    SYS_fanotify_init, SYS_fanotify_mark, SYS_fchdir, SYS_fchmod, SYS_fchmodat, SYS_fchmodat2,
    SYS_fchown, SYS_fchownat, SYS_fcntl, SYS_fdatasync, SYS_fgetxattr, SYS_finit_module,
    SYS_flistxattr, SYS_flock, SYS_fork, SYS_fremovexattr, SYS_fsconfig, SYS_fsetxattr,
    SYS_fsmount, SYS_fsopen, SYS_fspick, SYS_fstat, SYS_fstatfs, SYS_fsync, SYS_ftruncate,
    SYS_futex, SYS_futex_waitv, SYS_futimesat, SYS_get_mempolicy, SYS_get_robust_list,
    SYS_get_thread_area, SYS_getcpu, SYS_getcwd, SYS_getdents, SYS_getdents64, SYS_getegid,
    SYS_geteuid, SYS_getgid, SYS_getgroups, SYS_getitimer, SYS_getpeername, SYS_getpgid,
    SYS_getpgrp, SYS_getpid, SYS_getpmsg, SYS_getppid, SYS_getpriority, SYS_getrandom,
    SYS_getresgid, SYS_getresuid, SYS_getrlimit, SYS_getrusage, SYS_getsid, SYS_getsockname,
    SYS_getsockopt, SYS_gettid, SYS_gettimeofday, SYS_getuid, SYS_getxattr, SYS_init_module,
    SYS_inotify_add_watch, SYS_inotify_init, SYS_inotify_init1, SYS_inotify_rm_watch,
    SYS_io_cancel, SYS_io_destroy, SYS_io_getevents, SYS_io_setup, SYS_io_submit,
    SYS_io_uring_enter, SYS_io_uring_register, SYS_io_uring_setup, SYS_ioctl, SYS_ioperm,
    SYS_iopl, SYS_ioprio_get, SYS_ioprio_set, SYS_kcmp, SYS_kexec_file_load, SYS_kexec_load,
    SYS_keyctl, SYS_kill, SYS_landlock_add_rule, SYS_landlock_create_ruleset,
    SYS_landlock_restrict_self, SYS_lchown, SYS_lgetxattr, SYS_link, SYS_linkat, SYS_listen,
    SYS_listxattr, SYS_llistxattr, SYS_lookup_dcookie, SYS_lremovexattr, SYS_lseek,
    SYS_lsetxattr, SYS_lstat, SYS_madvise, SYS_mbind, SYS_membarrier, SYS_memfd_create,
    SYS_memfd_secret, SYS_migrate_pages, SYS_mincore, SYS_mkdir, SYS_mkdirat, SYS_mknod,
    SYS_mknodat, SYS_mlock, SYS_mlock2, SYS_mlockall, SYS_mmap, SYS_modify_ldt, SYS_mount,
    SYS_mount_setattr, SYS_move_mount, SYS_move_pages, SYS_mprotect, SYS_mq_getsetattr,
    SYS_mq_notify, SYS_mq_open, SYS_mq_timedreceive, SYS_mq_timedsend, SYS_mq_unlink,
    SYS_mremap, SYS_mseal, SYS_msgctl, SYS_msgget, SYS_msgrcv, SYS_msgsnd, SYS_msync,
    SYS_munlock, SYS_munlockall, SYS_munmap, SYS_name_to_handle_at, SYS_nanosleep,
    SYS_newfstatat, SYS_nfsservctl, SYS_open, SYS_open_by_handle_at, SYS_open_tree, SYS_openat,
    SYS_openat2, SYS_pause, SYS_perf_event_open, SYS_personality, SYS_pidfd_getfd,
    SYS_pidfd_open, SYS_pidfd_send_signal, SYS_pipe, SYS_pipe2, SYS_pivot_root, SYS_pkey_alloc,
    SYS_pkey_free, SYS_pkey_mprotect, SYS_poll, SYS_ppoll, SYS_prctl, SYS_pread64, SYS_preadv,
    SYS_preadv2, SYS_prlimit64, SYS_process_madvise, SYS_process_mrelease,
    SYS_process_vm_readv, SYS_process_vm_writev, SYS_pselect6, SYS_ptrace, SYS_putpmsg,
    SYS_pwrite64, SYS_pwritev, SYS_pwritev2, SYS_quotactl, SYS_quotactl_fd, SYS_read,
    SYS_readahead, SYS_readlink, SYS_readlinkat, SYS_readv, SYS_reboot, SYS_recvfrom,
    SYS_recvmmsg, SYS_recvmsg, SYS_remap_file_pages, SYS_removexattr, SYS_rename, SYS_renameat,
    SYS_renameat2, SYS_request_key, SYS_restart_syscall, SYS_rmdir, SYS_rseq, SYS_rt_sigaction,
    SYS_rt_sigpending, SYS_rt_sigprocmask, SYS_rt_sigqueueinfo, SYS_rt_sigreturn,
    SYS_rt_sigsuspend, SYS_rt_sigtimedwait, SYS_rt_tgsigqueueinfo, SYS_sched_get_priority_max,
    SYS_sched_get_priority_min, SYS_sched_getaffinity, SYS_sched_getattr, SYS_sched_getparam,
    SYS_sched_getscheduler, SYS_sched_rr_get_interval, SYS_sched_setaffinity,
    SYS_sched_setattr, SYS_sched_setparam, SYS_sched_setscheduler, SYS_sched_yield,
    SYS_seccomp, SYS_security, SYS_select, SYS_semctl, SYS_semget, SYS_semop, SYS_semtimedop,
    SYS_sendfile, SYS_sendmmsg, SYS_sendmsg, SYS_sendto, SYS_set_mempolicy,
    SYS_set_mempolicy_home_node, SYS_set_robust_list, SYS_set_thread_area, SYS_set_tid_address,
    SYS_setdomainname, SYS_setfsgid, SYS_setfsuid, SYS_setgid, SYS_setgroups, SYS_sethostname,
    SYS_setitimer, SYS_setns, SYS_setpgid, SYS_setpriority, SYS_setregid, SYS_setresgid,
    SYS_setresuid, SYS_setreuid, SYS_setrlimit, SYS_setsid, SYS_setsockopt, SYS_settimeofday,
    SYS_setuid, SYS_setxattr, SYS_shmat, SYS_shmctl, SYS_shmdt, SYS_shmget, SYS_shutdown,
    SYS_sigaltstack, SYS_signalfd, SYS_signalfd4, SYS_socket, SYS_socketpair, SYS_splice,
    SYS_stat, SYS_statfs, SYS_statx, SYS_swapoff, SYS_swapon, SYS_symlink, SYS_symlinkat,
    SYS_sync, SYS_sync_file_range, SYS_syncfs, SYS_sysfs, SYS_sysinfo, SYS_syslog, SYS_tee,
    SYS_tgkill, SYS_time, SYS_timer_create, SYS_timer_delete, SYS_timer_getoverrun,
    SYS_timer_gettime, SYS_timer_settime, SYS_timerfd_create, SYS_timerfd_gettime,
    SYS_timerfd_settime, SYS_times, SYS_tkill, SYS_truncate, SYS_tuxcall, SYS_umask,
    SYS_umount2, SYS_uname, SYS_unlink, SYS_unlinkat, SYS_unshare, SYS_uselib, SYS_userfaultfd,
    SYS_ustat, SYS_utime, SYS_utimensat, SYS_utimes, SYS_vfork, SYS_vhangup, SYS_vmsplice,
    SYS_vserver, SYS_wait4, SYS_waitid, SYS_write, SYS_writev
];
#[cfg(not(target_arch = "x86_64"))]
const SYSCALLS: &[(&str, libc::c_long)] = &[];

fn libc_number(name: &str) -> Option<u32> {
    let i = SYSCALLS.binary_search_by(|(sys, _)| sys.cmp(&name)).ok()?;
    u32::try_from(SYSCALLS[i].1).ok()
}

/// Resolves syscall names with seccompiler itself: one filter with a rule
/// per name whose condition carries the name's position (`arg0 == i`),
/// compiled in one call. In the program each syscall's block starts with
/// `jeq NR` and each rule tests `ld [args[0]]; jeq i`, so the `jeq NR`
/// before it gives name i's number.
fn probe<'a>(names: &BTreeSet<&'a str>) -> Result<HashMap<&'a str, u32>, String> {
    let mut rules = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let quoted = serde_json::to_string(name).map_err(|e| e.to_string())?;
        rules.push(format!(
            "{{\"syscall\":{quoted},\"args\":[{{\"index\":0,\"type\":\"dword\",\"op\":\"eq\",\"val\":{i}}}]}}"
        ));
    }
    let probe = format!(
        "{{\"p\":{{\"mismatch_action\":\"allow\",\"filter_action\":\"log\",\"filter\":[{}]}}}}",
        rules.join(",")
    );
    let program = seccompiler::compile_from_json(probe.as_bytes(), seccompiler::TargetArch::x86_64)
        .map_err(|e| format!("cannot resolve the syscall names: {e}"))?
        .remove("p")
        .unwrap_or_default();
    let mut found: Vec<Option<u32>> = vec![None; names.len()];
    let mut nr = None;
    for pair in program.windows(2) {
        let (prev, ins) = (&pair[0], &pair[1]);
        if ins.code != JMP_JEQ_K {
            continue;
        }
        if prev.code == LD_W_ABS && prev.k == ARGS_OFFSET {
            if let Some(slot) = found.get_mut(ins.k as usize) {
                *slot = nr;
            }
        } else if prev.code == LD_W_ABS && prev.k == NR_OFFSET || prev.code == RET_K {
            // The first syscall follows `ld [nr]`, the others a `ret`.
            nr = Some(ins.k);
        }
    }
    names
        .iter()
        .zip(found)
        .map(|(name, nr)| {
            nr.map(|nr| (*name, nr))
                .ok_or_else(|| format!("cannot find the number of syscall `{name}`"))
        })
        .collect()
}

/// What a range of syscall numbers leads to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verdict {
    Ret(u32),
    /// The argument checks of one syscall (index into the chains).
    Chain(usize),
}

fn compile_filter(filter: &JsonFilter, numbers: &HashMap<&str, u32>) -> Result<Program, String> {
    let mismatch = u32::from(filter.mismatch_action.clone());
    let matched = u32::from(filter.match_action.clone());
    // As seccompiler: every listed name gets an entry; each `args` adds a rule.
    let mut rules: BTreeMap<u32, Vec<&[Cond]>> = BTreeMap::new();
    for rule in &filter.filter {
        let nr = *numbers
            .get(rule.syscall.as_str())
            .ok_or_else(|| format!("unknown syscall `{}`", rule.syscall))?;
        let entry = rules.entry(nr).or_default();
        if let Some(conds) = &rule.args {
            if conds.is_empty() {
                return Err(format!("`{}` has an empty `args` list", rule.syscall));
            }
            if let Some(c) = conds.iter().find(|c| c.index > 5) {
                return Err(format!(
                    "`{}` tests argument {}, but a syscall has arguments 0 to 5",
                    rule.syscall, c.index
                ));
            }
            entry.push(conds);
        }
    }

    let mut asm = Asm::default();
    asm.stmt(LD_W_ABS, ARCH_OFFSET);
    let native = asm.label();
    let foreign = asm.label();
    asm.jump(JMP_JEQ_K, AUDIT_ARCH_X86_64, native, foreign);
    asm.bind(foreign);
    asm.stmt(RET_K, RET_KILL_PROCESS);
    asm.bind(native);
    if rules.is_empty() {
        asm.stmt(RET_K, mismatch);
        return asm.assemble();
    }

    // Ranges [start, next start) covering every u32, neighbours merged when
    // they share a plain verdict.
    let mut ranges: Vec<(u32, Verdict)> = Vec::new();
    let mut chains: Vec<&[&[Cond]]> = Vec::new();
    let push = |ranges: &mut Vec<(u32, Verdict)>, start: u32, v: Verdict| match ranges.last() {
        Some(&(_, last)) if last == v && matches!(v, Verdict::Ret(_)) => {}
        _ => ranges.push((start, v)),
    };
    let mut next = 0u32;
    for (&nr, chain) in &rules {
        if nr > next {
            push(&mut ranges, next, Verdict::Ret(mismatch));
        }
        let v = if chain.is_empty() {
            Verdict::Ret(matched)
        } else {
            chains.push(chain);
            Verdict::Chain(chains.len() - 1)
        };
        push(&mut ranges, nr, v);
        next = nr.wrapping_add(1);
    }
    // The last number can only be u32::MAX for a policy seccompiler would not
    // resolve; `next` wrapping to 0 then means there is no gap after it.
    if next != 0 {
        push(&mut ranges, next, Verdict::Ret(mismatch));
    }

    let mut gen = Gen {
        asm,
        rets: BTreeMap::new(),
        chains: (0..chains.len()).map(|_| None).collect(),
    };
    gen.asm.stmt(LD_W_ABS, NR_OFFSET);
    if ranges.len() == 1 {
        let target = gen.target(ranges[0].1);
        gen.asm.ja(target);
    } else {
        gen.tree(&ranges);
    }
    // The shared returns right after the tree, so that its jumps stay short.
    let rets: Vec<(u32, Label)> = gen.rets.iter().map(|(&k, &l)| (k, l)).collect();
    for (k, label) in rets {
        gen.asm.bind(label);
        gen.asm.stmt(RET_K, k);
    }
    for (i, chain) in chains.iter().enumerate() {
        if let Some(label) = gen.chains[i] {
            gen.asm.bind(label);
            gen.chain(chain, matched, mismatch);
        }
    }
    gen.asm.assemble()
}

struct Gen {
    asm: Asm,
    /// One `ret` per distinct plain verdict, emitted after the tree.
    rets: BTreeMap<u32, Label>,
    chains: Vec<Option<Label>>,
}

impl Gen {
    fn target(&mut self, v: Verdict) -> Label {
        let slot = match v {
            Verdict::Ret(k) => self.rets.get(&k).copied(),
            Verdict::Chain(i) => self.chains[i],
        };
        if let Some(label) = slot {
            return label;
        }
        let label = self.asm.label();
        match v {
            Verdict::Ret(k) => {
                self.rets.insert(k, label);
            }
            Verdict::Chain(i) => self.chains[i] = Some(label),
        }
        label
    }

    /// A balanced binary search over `ranges` (at least two), emitted at the
    /// current position: each node is `jge start_of_right_half`, laid out in
    /// preorder so that the left child usually is the next instruction.
    fn tree(&mut self, ranges: &[(u32, Verdict)]) {
        let (left, right) = ranges.split_at(ranges.len() / 2);
        let side = |half: &[(u32, Verdict)], gen: &mut Gen| {
            if half.len() == 1 {
                gen.target(half[0].1)
            } else {
                gen.asm.label()
            }
        };
        let lt = side(left, self);
        let rt = side(right, self);
        self.asm.jump(JMP_JGE_K, right[0].0, rt, lt);
        for (half, label) in [(left, lt), (right, rt)] {
            if half.len() > 1 {
                self.asm.bind(label);
                self.tree(half);
            }
        }
    }

    /// One syscall's rules: any rule whose conditions all hold returns
    /// `matched`; failing a condition moves on to the next rule; after the
    /// last one, `mismatch`.
    fn chain(&mut self, rules: &[&[Cond]], matched: u32, mismatch: u32) {
        for rule in rules {
            let next_rule = self.asm.label();
            // What the accumulator holds: unknown at a rule's start (it is
            // reached from several places).
            let mut acc = None;
            for cond in rule.iter() {
                self.condition(cond, next_rule, &mut acc);
            }
            self.asm.stmt(RET_K, matched);
            self.asm.bind(next_rule);
        }
        self.asm.stmt(RET_K, mismatch);
    }

    /// Falls through when `c` holds, jumps to `fail` otherwise. `acc` is the
    /// offset of the argument word the accumulator holds on entry (then its
    /// load is skipped), and on exit on every path that falls through.
    fn condition(&mut self, c: &Cond, fail: Label, acc: &mut Option<u32>) {
        let lo_off = ARGS_OFFSET + 8 * u32::from(c.index);
        let hi_off = lo_off + 4;
        let (v_hi, v_lo) = ((c.val >> 32) as u32, c.val as u32);
        let ok = self.asm.label();
        let a = &mut self.asm;
        let qword = matches!(c.len, SeccompCmpArgLen::Qword);
        match (&c.op, qword) {
            (&SeccompCmpOp::MaskedEq(mask), _) => {
                let (m_hi, m_lo) = ((mask >> 32) as u32, mask as u32);
                let mut halves = vec![(lo_off, m_lo, v_lo & m_lo)];
                if qword {
                    halves.insert(0, (hi_off, m_hi, v_hi & m_hi));
                }
                // A half whose mask is 0 always matches: nothing to test.
                for (off, m, v) in halves.into_iter().filter(|h| h.1 != 0) {
                    a.load(off, acc);
                    a.stmt(ALU_AND_K, m);
                    *acc = None;
                    a.test(JMP_JEQ_K, v, None, Some(fail));
                }
            }
            (op, false) => {
                a.load(lo_off, acc);
                // (comparison, whether it holding means the condition fails)
                let (code, negated) = match op {
                    SeccompCmpOp::Eq => (JMP_JEQ_K, false),
                    SeccompCmpOp::Ne => (JMP_JEQ_K, true),
                    SeccompCmpOp::Gt => (JMP_JGT_K, false),
                    SeccompCmpOp::Ge => (JMP_JGE_K, false),
                    SeccompCmpOp::Lt => (JMP_JGE_K, true),
                    // Le; MaskedEq is the first arm.
                    _ => (JMP_JGT_K, true),
                };
                if negated {
                    a.test(code, v_lo, Some(fail), None);
                } else {
                    a.test(code, v_lo, None, Some(fail));
                }
            }
            (SeccompCmpOp::Eq, true) => {
                a.load(hi_off, acc);
                a.test(JMP_JEQ_K, v_hi, None, Some(fail));
                a.load(lo_off, acc);
                a.test(JMP_JEQ_K, v_lo, None, Some(fail));
            }
            (SeccompCmpOp::Ne, true) => {
                a.load(hi_off, acc);
                a.test(JMP_JEQ_K, v_hi, None, Some(ok));
                a.load(lo_off, acc);
                a.test(JMP_JEQ_K, v_lo, Some(fail), None);
                *acc = None;
            }
            (op @ (SeccompCmpOp::Gt | SeccompCmpOp::Ge), true) => {
                // High half above: holds; below: fails; equal: the low half decides.
                a.load(hi_off, acc);
                a.test(JMP_JGT_K, v_hi, Some(ok), None);
                a.test(JMP_JEQ_K, v_hi, None, Some(fail));
                a.load(lo_off, acc);
                let code = if *op == SeccompCmpOp::Gt {
                    JMP_JGT_K
                } else {
                    JMP_JGE_K
                };
                a.test(code, v_lo, None, Some(fail));
                *acc = None;
            }
            // Lt and Le.
            (op, true) => {
                a.load(hi_off, acc);
                a.test(JMP_JGT_K, v_hi, Some(fail), None);
                a.test(JMP_JEQ_K, v_hi, None, Some(ok));
                a.load(lo_off, acc);
                let code = if *op == SeccompCmpOp::Lt {
                    JMP_JGE_K
                } else {
                    JMP_JGT_K
                };
                a.test(code, v_lo, Some(fail), None);
                *acc = None;
            }
        }
        self.asm.bind(ok);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Label(usize);

enum Op {
    Stmt(u16, u32),
    Jump(u16, u32, Label, Label),
    Ja(Label),
    Bind(Label),
}

/// A tiny assembler with forward labels. Classic BPF's conditional jumps
/// reach at most 255 instructions ahead: a comparison whose target is
/// farther is given a `ja` (32-bit offset) right after it.
#[derive(Default)]
struct Asm {
    ops: Vec<Op>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }
    fn bind(&mut self, l: Label) {
        self.ops.push(Op::Bind(l));
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.ops.push(Op::Stmt(code, k));
    }
    fn jump(&mut self, code: u16, k: u32, jt: Label, jf: Label) {
        self.ops.push(Op::Jump(code, k, jt, jf));
    }
    fn ja(&mut self, l: Label) {
        self.ops.push(Op::Ja(l));
    }
    /// A comparison whose `None` side goes on with the next instruction.
    fn test(&mut self, code: u16, k: u32, jt: Option<Label>, jf: Option<Label>) {
        let next = self.label();
        self.jump(code, k, jt.unwrap_or(next), jf.unwrap_or(next));
        self.bind(next);
    }
    /// Loads the argument word at `off` unless the accumulator holds it.
    fn load(&mut self, off: u32, acc: &mut Option<u32>) {
        if *acc != Some(off) {
            self.stmt(LD_W_ABS, off);
        }
        *acc = Some(off);
    }

    fn assemble(self) -> Result<Program, String> {
        // Which sides of each comparison go through a `ja`; grows until
        // every remaining short jump fits (adding a `ja` only ever lengthens
        // other jumps, so this ends).
        let mut far = vec![(false, false); self.ops.len()];
        let (at, label_at) = loop {
            let mut at = Vec::with_capacity(self.ops.len());
            let mut label_at = vec![None; self.labels];
            let mut pc = 0usize;
            for (op, &(ft, ff)) in self.ops.iter().zip(&far) {
                at.push(pc);
                pc += match op {
                    Op::Stmt(..) | Op::Ja(_) => 1,
                    Op::Jump(..) => 1 + usize::from(ft) + usize::from(ff),
                    Op::Bind(l) => {
                        label_at[l.0] = Some(pc);
                        0
                    }
                };
            }
            if pc > MAX_INSNS {
                return Err(format!(
                    "the filter needs {pc} BPF instructions; the kernel takes at most {MAX_INSNS}"
                ));
            }
            let mut grew = false;
            for (i, op) in self.ops.iter().enumerate() {
                if let Op::Jump(_, _, jt, jf) = op {
                    let from = at[i] + 1;
                    let too_far =
                        |l: &Label| label_at[l.0].is_none_or(|to| to.saturating_sub(from) > 255);
                    if !far[i].0 && too_far(jt) {
                        far[i].0 = true;
                        grew = true;
                    }
                    if !far[i].1 && too_far(jf) {
                        far[i].1 = true;
                        grew = true;
                    }
                }
            }
            if !grew {
                break (at, label_at);
            }
        };
        let offset = |l: Label, from: usize| -> Result<usize, String> {
            match label_at[l.0] {
                Some(to) if to >= from => Ok(to - from),
                _ => Err("internal error: a jump to an unbound or earlier label".into()),
            }
        };
        let mut out: Program = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            match *op {
                Op::Stmt(code, k) => out.push((code, 0, 0, k)),
                Op::Ja(l) => out.push((JMP_JA, 0, 0, offset(l, at[i] + 1)? as u32)),
                Op::Jump(code, k, jt, jf) => {
                    let (ft, ff) = far[i];
                    let from = at[i] + 1;
                    let short = |l: Label| -> Result<u8, String> {
                        u8::try_from(offset(l, from)?)
                            .map_err(|_| "internal error: a jump out of reach".to_string())
                    };
                    // The trampolines follow the comparison: first jt's, then jf's.
                    let t = if ft { 0 } else { short(jt)? };
                    let f = if ff { u8::from(ft) } else { short(jf)? };
                    out.push((code, t, f, k));
                    if ft {
                        out.push((JMP_JA, 0, 0, offset(jt, out.len() + 1)? as u32));
                    }
                    if ff {
                        out.push((JMP_JA, 0, 0, offset(jf, out.len() + 1)? as u32));
                    }
                }
                Op::Bind(_) => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// `seccomp::DEFAULT_POLICY`, included here too: the compiler's tests
    /// do not depend on the compiler's caller.
    const DEFAULT_POLICY: &str = include_str!("../../policy/seccomp.json");
    use serde_json::{json, Value};

    /// A classic-BPF interpreter for the opcodes either compiler emits.
    fn run(prog: &[(u16, u8, u8, u32)], nr: u32, arch: u32, args: &[u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let (code, jt, jf, k) = prog[pc];
            pc += 1;
            match code {
                LD_W_ABS => {
                    let at = k as usize;
                    assert!(at % 4 == 0 && at + 4 <= data.len(), "load at {at}");
                    acc = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
                }
                ALU_AND_K => acc &= k,
                JMP_JA => pc += k as usize,
                JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K => {
                    let holds = match code {
                        JMP_JEQ_K => acc == k,
                        JMP_JGT_K => acc > k,
                        _ => acc >= k,
                    };
                    pc += usize::from(if holds { jt } else { jf });
                }
                RET_K => return k,
                _ => panic!("unexpected opcode {code:#x} at {}", pc - 1),
            }
        }
    }

    fn reference(text: &str) -> BTreeMap<String, Program> {
        seccompiler::compile_from_json(text.as_bytes(), seccompiler::TargetArch::x86_64)
            .unwrap()
            .into_iter()
            .map(|(n, p)| (n, p.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()))
            .collect()
    }

    /// Argument values around a condition's constant: equal, off by one,
    /// only one half equal, the masked variants, and the extremes.
    fn values_around(val: u64, mask: Option<u64>, into: &mut BTreeSet<u64>) {
        const HI: u64 = 0xffff_ffff_0000_0000;
        for d in [0u64, 1, 2, u64::MAX, u64::MAX - 1] {
            into.insert(val.wrapping_add(d));
        }
        into.extend([
            val ^ (1 << 32),
            val ^ HI,
            val ^ 1,
            val ^ 0xffff_ffff,
            val & 0xffff_ffff,
            val | HI,
            val.wrapping_add(1 << 32),
            val.wrapping_sub(1 << 32),
        ]);
        if let Some(m) = mask {
            let low_bit = m & m.wrapping_neg();
            let high_bit = if m == 0 {
                0
            } else {
                1 << (63 - m.leading_zeros())
            };
            into.extend([
                val & m,
                (val & m) | !m,
                m,
                !m,
                val | m,
                (val & m) ^ low_bit,
                (val & m) ^ high_bit,
                ((val & m) | !m) ^ low_bit,
            ]);
        }
        into.extend([
            0,
            1,
            u64::from(u32::MAX),
            1 << 32,
            u64::MAX,
            0x8000_0000,
            1 << 63,
        ]);
    }

    /// Small deterministic generator for extra argument values.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Both compilers give every filter of `text` the same verdict for every
    /// syscall number below 1024 (also with the x32 bit and a few extreme
    /// numbers), under the native and foreign architectures, for argument
    /// values derived from the policy's constants. Returns our programs.
    fn assert_same_verdicts(text: &str) -> BTreeMap<String, Program> {
        let theirs = reference(text);
        let ours = compile(text).unwrap();
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>()
        );
        let policy: Value = serde_json::from_str(text).unwrap();
        let mut nrs: Vec<u32> = (0..1024).collect();
        nrs.extend((0..1024).map(|n| n | 0x4000_0000));
        nrs.extend([
            0x3fff_ffff,
            0x7fff_ffff,
            0x8000_0000,
            u32::MAX - 1,
            u32::MAX,
        ]);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut checked = 0usize;
        for (name, filter) in policy.as_object().unwrap() {
            let (a, b) = (&theirs[name], &ours[name]);
            // Per syscall name: index -> the values its conditions suggest.
            let mut per_call: BTreeMap<&str, BTreeMap<u8, BTreeSet<u64>>> = BTreeMap::new();
            for rule in filter["filter"].as_array().unwrap() {
                let call = per_call
                    .entry(rule["syscall"].as_str().unwrap())
                    .or_default();
                for c in rule["args"].as_array().into_iter().flatten() {
                    let mask = c["op"].get("masked_eq").and_then(Value::as_u64);
                    let values = call.entry(c["index"].as_u64().unwrap() as u8).or_default();
                    values_around(c["val"].as_u64().unwrap(), mask, values);
                }
            }
            let names: BTreeSet<&str> = per_call.keys().copied().collect();
            let numbers = syscall_numbers(&names).unwrap();
            let mut by_nr: HashMap<u32, &BTreeMap<u8, BTreeSet<u64>>> = HashMap::new();
            for (call, idx) in &per_call {
                by_nr.insert(numbers[*call], idx);
            }
            // Index -> every value the filter's conditions on it suggest.
            let mut by_index: BTreeMap<u8, BTreeSet<u64>> = BTreeMap::new();
            for idx in per_call.values() {
                for (i, v) in idx {
                    by_index.entry(*i).or_default().extend(v.iter().copied());
                }
            }
            let mut check = |nr: u32, arch: u32, args: &[u64; 6]| {
                let (x, y) = (run(a, nr, arch, args), run(b, nr, arch, args));
                assert_eq!(
                    x, y,
                    "filter {name}: nr {nr:#x} arch {arch:#x} args {args:x?}: seccompiler {x:#x}, ours {y:#x}"
                );
                checked += 1;
            };
            for &nr in &nrs {
                for arch in [AUDIT_ARCH_X86_64, 0x4000_0003, 0xc000_00b7, 0x4000_003e] {
                    for args in [[0u64; 6], [u64::MAX; 6], [1; 6]] {
                        check(nr, arch, &args);
                    }
                }
                let mut random = [0u64; 6];
                random.iter_mut().for_each(|r| *r = xorshift(&mut seed));
                check(nr, AUDIT_ARCH_X86_64, &random);
                if nr >= 1024 {
                    continue;
                }
                // One argument varied at a time, the others 0 or all ones.
                for (&i, values) in &by_index {
                    for &v in values {
                        for fill in [0, u64::MAX] {
                            let mut args = [fill; 6];
                            args[usize::from(i)] = v;
                            check(nr, AUDIT_ARCH_X86_64, &args);
                        }
                    }
                }
                // Syscalls with conditions: every combination over the
                // indices they test, the rest 0 or all ones.
                let Some(idx) = by_nr.get(&nr) else { continue };
                let sets: Vec<(u8, Vec<u64>)> = idx
                    .iter()
                    .map(|(i, v)| (*i, v.iter().copied().collect()))
                    .collect();
                // All of them, or (a long rule) a deterministic sample.
                let total = sets
                    .iter()
                    .try_fold(1usize, |p, s| p.checked_mul(s.1.len()))
                    .filter(|&t| t <= 50_000);
                for fill in [0, u64::MAX] {
                    for k in 0..total.unwrap_or(20_000) {
                        let mut n = k;
                        let mut args = [fill; 6];
                        for (i, values) in &sets {
                            if total.is_none() {
                                n = xorshift(&mut seed) as usize;
                            }
                            args[usize::from(*i)] = values[n % values.len()];
                            n /= values.len();
                        }
                        check(nr, AUDIT_ARCH_X86_64, &args);
                    }
                }
            }
        }
        assert!(checked > 10_000);
        ours
    }

    /// The syscall names of the shipped policy, in number order (names
    /// known to seccompiler, without typing any in).
    fn shipped_names() -> Vec<String> {
        let policy: Value = serde_json::from_str(DEFAULT_POLICY).unwrap();
        let names: BTreeSet<&str> = policy["sandbox"]["filter"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["syscall"].as_str().unwrap())
            .collect();
        let numbers = syscall_numbers(&names).unwrap();
        let mut names: Vec<String> = names.into_iter().map(String::from).collect();
        names.sort_by_key(|n| numbers[n.as_str()]);
        names
    }

    fn cond(index: u8, len: &str, op: Value, val: u64) -> Value {
        json!({"index": index, "type": len, "op": op, "val": val})
    }

    fn ops() -> Vec<Value> {
        let mut ops: Vec<Value> = ["eq", "ne", "lt", "le", "gt", "ge"]
            .iter()
            .map(|o| json!(o))
            .collect();
        ops.push(json!({"masked_eq": 0x0000_00ff_0000_00f0u64}));
        ops.push(json!({"masked_eq": 0x7e02_0080u64}));
        ops.push(json!({"masked_eq": 0u64}));
        ops.push(json!({"masked_eq": u64::MAX}));
        ops
    }

    fn actions() -> Vec<Value> {
        vec![
            json!("allow"),
            json!({"errno": 1}),
            json!("kill_process"),
            json!({"errno": 70000}),
            json!("kill_thread"),
            json!("log"),
            json!("trap"),
            json!({"trace": 7}),
            json!({"errno": 0}),
        ]
    }

    #[test]
    fn the_shipped_policy_gets_the_same_verdicts_from_a_much_shorter_program() {
        let ours = assert_same_verdicts(DEFAULT_POLICY);
        let theirs = reference(DEFAULT_POLICY);
        let sandbox = &ours["sandbox"];
        assert!(sandbox.len() < 300, "{} instructions", sandbox.len());
        assert!(theirs["sandbox"].len() > 4 * sandbox.len());
        // The same architecture check as seccompiler's, first.
        for (name, program) in &ours {
            assert_eq!(program[..3], theirs[name][..3], "{name}");
        }
    }

    #[test]
    fn every_operator_and_width_gets_the_same_verdicts() {
        let names = shipped_names();
        // One syscall per rule below, so that no other rule hides a wrong verdict.
        let explicit = ["ioctl", "getpid", "clone"];
        let mut pool = names.iter().filter(|n| !explicit.contains(&n.as_str()));
        let mut next_call = || pool.next().expect("enough syscall names").clone();
        let mut rules = Vec::new();
        for len in ["dword", "qword"] {
            for (n, op) in ops().into_iter().enumerate() {
                // Constants with both halves set (a dword compares only the
                // low one), small ones, and the extremes.
                for val in [0x1_0000_0005u64, 7, 0, u64::MAX, 0xffff_ffff] {
                    rules.push(json!({"syscall": next_call(),
                                      "args": [cond((n % 6) as u8, len, op.clone(), val)]}));
                }
            }
        }
        // A 64-bit test then a 32-bit one of the same argument, and the
        // reverse (the second may reuse the loaded word only when every path
        // left it there).
        for op in ops() {
            for second in ["eq", "ne", "lt", "gt"] {
                rules.push(json!({"syscall": next_call(), "args": [
                    cond(4, "qword", op.clone(), 0x1_0000_0005),
                    cond(4, "dword", json!(second), 5)]}));
                rules.push(json!({"syscall": next_call(), "args": [
                    cond(5, "dword", json!(second), 0x1_0000_0005),
                    cond(5, "qword", op.clone(), 5)]}));
            }
        }
        // Several rules for one syscall, several conditions per rule.
        rules.push(json!({"syscall": "ioctl", "args": [
            cond(1, "dword", json!("ne"), 0x5412), cond(1, "dword", json!("ne"), 0x541c)]}));
        rules.push(json!({"syscall": "ioctl", "args": [
            cond(1, "qword", json!("eq"), 0x5412), cond(2, "qword", json!("gt"), 1 << 33)]}));
        rules.push(json!({"syscall": "ioctl", "args": [cond(0, "dword", json!("le"), 2)]}));
        // A bare entry next to one with args: seccompiler keeps only the rule.
        rules.push(json!({"syscall": "getpid"}));
        rules.push(json!({"syscall": "getpid", "args": [cond(0, "qword", json!("lt"), 5)]}));
        rules.push(json!({"syscall": "clone", "args": [
            cond(0, "qword", json!({"masked_eq": 0x7e02_0080u64}), 0),
            cond(0, "dword", json!("ge"), 0x100),
            cond(2, "qword", json!("ne"), u64::MAX)]}));
        for (i, pair) in actions().windows(2).enumerate() {
            let text = json!({
                "main": {"mismatch_action": pair[0], "filter_action": pair[1], "filter": rules},
                "alias": {"default_action": pair[1], "match_action": pair[0],
                          "filter": [{"syscall": names[i]}, {"syscall": names[i + 1]},
                                     {"syscall": names[i + 5], "args": [cond(3, "qword", json!("eq"), 9)]}]},
                "empty": {"mismatch_action": pair[1], "filter_action": pair[0], "filter": []},
            })
            .to_string();
            assert_same_verdicts(&text);
        }
    }

    #[test]
    fn far_targets_go_through_ja() {
        // Every other syscall of the shipped policy (many ranges), and a
        // low-numbered syscall whose rule is longer than a jump reaches.
        let names = shipped_names();
        let mut rules: Vec<Value> = names
            .iter()
            .step_by(2)
            .map(|n| json!({"syscall": n}))
            .collect();
        let long: Vec<Value> = (0..70u64)
            .map(|i| {
                cond(
                    (i % 6) as u8,
                    "qword",
                    json!(if i % 2 == 0 { "le" } else { "ne" }),
                    i + (i << 40),
                )
            })
            .collect();
        rules.push(json!({"syscall": names[1], "args": long}));
        rules.push(json!({"syscall": names[1], "args": [cond(0, "dword", json!("eq"), 3)]}));
        rules.push(
            json!({"syscall": names[names.len() - 1], "args": [cond(1, "qword", json!("gt"), 3)]}),
        );
        let text = json!({"f": {"mismatch_action": "kill_thread", "filter_action": "allow", "filter": rules}})
            .to_string();
        let ours = assert_same_verdicts(&text);
        assert!(ours["f"].iter().any(|i| i.0 == JMP_JA && i.3 > 0));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let filter = |rule: Value| {
            json!({"f": {"mismatch_action": "allow", "filter_action": "log", "filter": [rule]}})
                .to_string()
        };
        for (text, says) in [
            (filter(json!({"syscall": "read", "args": []})), "empty"),
            (
                filter(json!({"syscall": "read", "args": [cond(6, "dword", json!("eq"), 1)]})),
                "argument 6",
            ),
            (filter(json!({"syscall": "no_such_call"})), "no_such_call"),
            ("[1]".to_string(), "cannot read"),
        ] {
            let e = compile(&text).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    /// Name i's number as seccompiler compiles a one-rule policy for it.
    fn seccompiler_number(name: &str) -> u32 {
        let text = json!({"f": {"mismatch_action": "allow", "filter_action": "log",
                                "filter": [{"syscall": name}]}})
        .to_string();
        let program = &reference(&text)["f"];
        assert_eq!(program[3], (LD_W_ABS, 0, 0, NR_OFFSET));
        assert_eq!(program[4].0, JMP_JEQ_K);
        program[4].3
    }

    #[test]
    fn syscall_numbers_are_seccompilers() {
        let entries: Vec<&str> = SYSCALLS.iter().map(|e| e.0).collect();
        assert!(
            entries.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        let names: BTreeSet<&str> = entries.iter().copied().collect();
        if cfg!(target_arch = "x86_64") {
            assert!(names.len() > 300);
        }
        // Every libc entry, through seccompiler both ways.
        let probed = probe(&names).unwrap();
        for name in &names {
            let ours = libc_number(name).unwrap();
            assert_eq!(ours, probed[*name], "{name}");
            assert_eq!(ours, seccompiler_number(name), "{name}");
        }
        // Names libc 0.2 lacks go through the probe.
        let newer: BTreeSet<&str> = ["cachestat", "map_shadow_stack", "futex_wait", "uretprobe"]
            .into_iter()
            .collect();
        let resolved = syscall_numbers(&newer).unwrap();
        for name in newer {
            assert_eq!(resolved[name], seccompiler_number(name), "{name}");
        }
        let e = syscall_numbers(&["read", "no_such_call"].into_iter().collect()).unwrap_err();
        assert!(e.contains("no_such_call"), "{e}");
    }
}
