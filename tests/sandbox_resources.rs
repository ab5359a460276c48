//! SPEC §5.7: resource limits: fork, memory, CPU, /tmp, file size and output
//! floods, and limits that cannot be lifted.
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

use support::escape::{
    check, expect, host_processes_with, kill_marked, marker, outside, Jail, EPERM,
};
use support::require_root;

#[test]
fn s5_7_fork_bomb_fails_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let jail = Jail::new().limit("pids=32");
    let mark = marker("forkbomb");
    let inside = jail.probe("forkbomb", &[&mark]);
    let left = host_processes_with(&mark);
    kill_marked(&mark);
    expect(
        &inside,
        "errno=11",
        "§5.7 pids limit",
        "fork must fail with EAGAIN",
    );
    check(
        inside.code.is_some_and(|c| c != 0),
        "§5.7 pids limit",
        "the command must fail",
        &inside,
    );
    check(
        left.is_empty(),
        "§5.7/§5.8",
        &format!("fork bomb processes outlived the run: {left:?}"),
        &inside,
    );
}

#[test]
fn s5_7_memory_bomb_is_killed() {
    if !require_root() {
        return;
    }
    let jail = Jail::new().limit("memory_mib=64");
    let inside = jail.probe("membomb", &[]);
    check(
        inside.code == Some(137),
        "§5.7 memory limit",
        "a memory bomb must be killed by SIGKILL (exit 137)",
        &inside,
    );
}

#[test]
fn s5_7_memory_bomb_is_reported_as_out_of_memory() {
    if !require_root() {
        return;
    }
    let jail = Jail::new().limit("memory_mib=64");
    let inside = jail.probe("membomb", &[]);
    check(
        inside.code == Some(137) && inside.stderr.contains("out of memory"),
        "§5.7 memory limit",
        "servo must say `out of memory` on stderr after an OOM kill",
        &inside,
    );
}

#[test]
fn s5_7_cpu_spin_is_killed() {
    if !require_root() {
        return;
    }
    let jail = Jail::new().limit("cpu_s=1");
    let inside = jail.probe("cpuspin", &[]);
    check(
        inside.code == Some(128 + 24) || inside.code == Some(128 + 9),
        "§5.7 CPU limit",
        "a CPU spin must be killed by SIGXCPU or SIGKILL",
        &inside,
    );
}

#[test]
fn s5_7_tmp_fill_hits_enospc() {
    if !require_root() {
        return;
    }
    let jail = Jail::new().limit("tmp_mib=4");
    let inside = jail.probe("fill", &["/tmp/fill", "16"]);
    expect(
        &inside,
        "errno=28",
        "§5.7 /tmp size",
        "filling /tmp must end in ENOSPC",
    );
    let written: u64 = inside
        .detail()
        .trim_start_matches("written=")
        .parse()
        .unwrap_or(u64::MAX);
    check(
        written <= 4 << 20,
        "§5.7 /tmp size",
        "no more than tmp_mib may be written",
        &inside,
    );
}

#[test]
fn s5_7_file_size_limit() {
    if !require_root() {
        return;
    }
    let jail = Jail::new().limit("file_mib=1");
    let inside = jail.probe("fill", &["/work/big", "2"]);
    check(
        inside.verdict() == "errno=27" || inside.code == Some(128 + 25),
        "§5.7 file size",
        "writing 2 MiB with file_mib=1 must fail with EFBIG (or SIGXFSZ)",
        &inside,
    );
    let size = std::fs::metadata(jail.workdir().join("big"))
        .map(|m| m.len())
        .unwrap_or(0);
    check(
        size <= 1 << 20,
        "§5.7 file size",
        &format!("the file grew to {size} bytes"),
        &inside,
    );
}

#[test]
fn s5_7_output_flood_does_not_hang() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let inside = jail.probe("flood", &["32"]);
    expect(
        &inside,
        "ok",
        "§5.7 output flood",
        "the flood ends normally",
    );
    check(
        inside.code == Some(0) && inside.stdout_len >= 32 << 20,
        "§5.7 output flood",
        "all 32 MiB must come through and the command exit 0",
        &inside,
    );
}

#[test]
fn s5_7_limits_cannot_be_lifted() {
    if !require_root() {
        return;
    }
    let jail = Jail::new().limit("cpu_s=5").limit("file_mib=1");
    let host = outside(&jail.workdir(), "rlimit_raise", &["fsize"]);
    expect(
        &host,
        "ok",
        "§5.7 (control)",
        "root lifts RLIMIT_FSIZE on the host",
    );
    for rlimit in ["cpu", "fsize", "nproc", "nofile"] {
        let inside = jail.probe("rlimit_raise", &[rlimit]);
        check(
            inside.verdict() == "refused" || inside.verdict() == EPERM,
            "§5.7 rlimits",
            &format!("the script lifted RLIMIT_{}", rlimit.to_uppercase()),
            &inside,
        );
    }
}
