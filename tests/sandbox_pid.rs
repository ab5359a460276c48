//! SPEC §5.1: the PID namespace: a script sees only its own processes, cannot
//! read PID 1, and nothing it starts outlives it.
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

use std::path::Path;
use std::time::Duration;

use support::escape::{
    check, expect, host_processes_with, is_errno, kill_marked, marker, outside, Jail,
};
use support::require_root;

#[test]
fn s5_1_pid_namespace_shows_only_own_processes() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let host = outside(&jail.workdir(), "pids", &[]);
    let host_pids: Vec<i64> = serde_json::from_value(host.json()).expect("pid list");
    check(
        host_pids.len() > 3 && host_pids.contains(&1),
        "§5.1 (control)",
        "on the host the probe must see many processes, PID 1 included",
        &host,
    );
    let inside = jail.probe("pids", &[]);
    let pids: Vec<i64> = serde_json::from_value(inside.json()).expect("pid list");
    check(
        pids.len() == 1 && !pids.contains(&1),
        "§5.1 PID namespace",
        "the script must see only itself (not the init, not the host)",
        &inside,
    );
}

#[test]
fn s5_1_pid1_environ_is_not_readable() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    // Control: root on the host reads a process's environment (this test's;
    // the host's own PID 1 may be shielded from us by its own rules).
    let mine = format!("/proc/{}/environ", std::process::id());
    let host = outside(&jail.workdir(), "read", &[&mine]);
    expect(
        &host,
        "ok",
        "§5.1 (control)",
        &format!("root on the host reads {mine}"),
    );
    let inside = jail.probe("pid1", &[]);
    check(
        is_errno(&inside, &[2, 3, 13]),
        "§5.1/§5.9 PID 1",
        "the init's /proc/1/environ (servo's environment) must be unreachable",
        &inside,
    );
    let inside = jail.probe("read", &[&mine]);
    check(
        is_errno(&inside, &[2, 3, 13]),
        "§5.1 PID namespace",
        &format!("the host process's {mine} must be unreachable"),
        &inside,
    );
}

/// Heartbeat file contents now and a little later.
fn heartbeat_moves(path: &Path) -> bool {
    let before = std::fs::read_to_string(path).unwrap_or_default();
    std::thread::sleep(Duration::from_millis(500));
    let after = std::fs::read_to_string(path).unwrap_or_default();
    before != after
}

#[test]
fn s5_1_no_daemon_survives_the_script() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    // Control: on the host, the same double-forked daemon does survive.
    let host_dir = tempfile::tempdir().expect("tempdir");
    let host_mark = marker("daemon-host");
    let host = outside(host_dir.path(), "daemon", &[&host_mark]);
    let survivors = host_processes_with(&host_mark);
    let moving = heartbeat_moves(&host_dir.path().join("heartbeat"));
    kill_marked(&host_mark);
    expect(
        &host,
        "ok",
        "§5.1 (control)",
        "the daemon starts on the host",
    );
    check(
        !survivors.is_empty() && moving,
        "§5.1 (control)",
        "on the host the daemon outlives the probe",
        &host,
    );

    let mark = marker("daemon");
    let inside = jail.probe("daemon", &[&mark]);
    expect(&inside, "ok", "§5.1", "the daemon starts inside");
    let left = host_processes_with(&mark);
    kill_marked(&mark);
    check(
        left.is_empty(),
        "§5.1 PID namespace",
        &format!("a daemon started by the script survived it: {left:?}"),
        &inside,
    );
    check(
        !heartbeat_moves(&jail.workdir().join("heartbeat")),
        "§5.1 PID namespace",
        "the daemon's heartbeat goes on after `servo sandbox` returned",
        &inside,
    );
}
