//! SPEC §5.5: unprivileged: the run's own uid, no capabilities, no_new_privs,
//! set-uid refused, runs kept apart, no supplementary groups.
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
use std::process::Command;
use std::time::Duration;

use support::escape::{check, expect, marker, outside, run, Jail, EPERM, PROBE_INSIDE, PYTHON};
use support::require_root;

#[test]
fn s5_5_unprivileged_ids_no_capabilities_no_new_privs() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let host = outside(&jail.workdir(), "ids", &[]);
    check(
        host.json()["caps"]["CapEff"] != "0000000000000000",
        "§5.5 (control)",
        "root on the host has capabilities",
        &host,
    );
    let inside = jail.probe("ids", &[]);
    let ids = inside.json();
    let u = jail.uid;
    check(
        ids["uid"] == serde_json::json!([u, u, u]) && ids["gid"] == serde_json::json!([u, u, u]),
        "§5.5 unprivileged",
        &format!("real, effective and saved uid/gid must all be {u}"),
        &inside,
    );
    check(
        ids["groups"] == serde_json::json!([]),
        "§5.5 unprivileged",
        "no supplementary groups",
        &inside,
    );
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        check(
            ids["caps"][set] == "0000000000000000",
            "§5.5 capabilities",
            &format!("{set} must be empty"),
            &inside,
        );
    }
    check(
        ids["no_new_privs"] == "1",
        "§5.5 no_new_privs",
        "NoNewPrivs must be 1",
        &inside,
    );
    check(
        ids["seccomp"] == "2",
        "§5.6 seccomp",
        "a seccomp filter must be installed (mode 2)",
        &inside,
    );
}

#[test]
fn s5_5_setuid_root_is_refused() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let host = outside(&jail.workdir(), "setuid0", &[]);
    expect(&host, "ok", "§5.5 (control)", "setuid(0) as root");
    let inside = jail.probe("setuid0", &[]);
    expect(&inside, EPERM, "§5.5 unprivileged", "setuid(0) must fail");
}

#[test]
fn s5_5_setuid_binaries_give_nothing() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let suid = jail.workdir().join("id-suid");
    // Root runs `install`, so the copy is root's; `install` sets the mode
    // after writing, so the setuid bit survives.
    support::install_executable(Path::new("/usr/bin/id"), &suid, 0o4755);
    // Control: on the host, an ordinary user running it becomes euid 0.
    let mut cmd = Command::new("setpriv");
    let uid = jail.uid.to_string();
    cmd.args(["--reuid", &uid, "--regid", &uid, "--clear-groups"])
        .arg(&suid)
        .arg("-u");
    let host = run(cmd);
    check(
        host.stdout.trim() == "0",
        "§5.5 (control)",
        "the setuid-root copy of id gives euid 0 on the host",
        &host,
    );
    let inside = jail.probe("exec_euid", &["/work/id-suid"]);
    expect(
        &inside,
        &format!("euid={}", jail.uid),
        "§5.5 no_new_privs",
        "a setuid-root binary must not raise the euid",
    );
}

/// Waits for a file to appear (bounded).
fn wait_for(path: &Path) -> bool {
    for _ in 0..1000 {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn s5_5_concurrent_runs_see_neither_each_other_nor_their_workdirs() {
    if !require_root() {
        return;
    }
    let (a, b) = (Jail::new(), Jail::new());
    let (mark_a, mark_b) = (marker("neighbour-a"), marker("neighbour-b"));
    let work_a = a.workdir().to_str().expect("utf-8").to_string();
    let work_b = b.workdir().to_str().expect("utf-8").to_string();
    let run_a = {
        let cmd = a.command(&[
            PYTHON,
            PROBE_INSIDE,
            "neighbours",
            &mark_a,
            &mark_b,
            &work_b,
        ]);
        std::thread::spawn(move || run(cmd))
    };
    let run_b = {
        let cmd = b.command(&[
            PYTHON,
            PROBE_INSIDE,
            "neighbours",
            &mark_b,
            &mark_a,
            &work_a,
        ]);
        std::thread::spawn(move || run(cmd))
    };
    let ready = wait_for(&a.workdir().join("ready")) && wait_for(&b.workdir().join("ready"));
    // Control: from the host, A's process and workdir are visible.
    let host_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(host_dir.path().join("go"), "").expect("go");
    let host = outside(
        host_dir.path(),
        "neighbours",
        &["host-probe", &mark_a, &work_a],
    );
    std::fs::write(a.workdir().join("go"), "").expect("go");
    std::fs::write(b.workdir().join("go"), "").expect("go");
    let (out_a, out_b) = (run_a.join().expect("run a"), run_b.join().expect("run b"));
    assert!(
        ready,
        "both sandboxes must start:\n{}\n{}",
        out_a.show(),
        out_b.show()
    );
    check(
        host.verdict() != "seen=0" && host.detail() == "other_workdir=reachable",
        "§5.5 (control)",
        "the host sees the running sandbox's process and workdir",
        &host,
    );
    for (out, who) in [(&out_a, "A"), (&out_b, "B")] {
        expect(
            out,
            "seen=0",
            "§5.1/§5.5 concurrent runs",
            &format!("run {who} must not see the other run's process"),
        );
        check(
            out.detail() == "other_workdir=absent",
            "§5.2/§5.5 concurrent runs",
            &format!("run {who} must not reach the other run's workdir"),
            out,
        );
    }
}

#[test]
fn supplementary_groups_of_the_caller_do_not_reach_the_script() {
    if !require_root() {
        return;
    }
    // servo started with supplementary groups (adm, sudo): the control shows
    // a process started the same way keeps them; the sandboxed one has none.
    let groups = |argv: &[&str]| -> String {
        let out = std::process::Command::new("setpriv")
            .args(["--groups", "4,27", "--"])
            .args(argv)
            .output()
            .expect("setpriv");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let py = "import os; print(sorted(os.getgroups()))";
    assert_eq!(
        groups(&["/usr/bin/python3", "-c", py]),
        "[4, 27]",
        "control"
    );
    let state = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let bin = support::servo_bin();
    let state_arg = state.path().to_string_lossy().into_owned();
    let work_arg = work.path().to_string_lossy().into_owned();
    let inside = groups(&[
        bin,
        "sandbox",
        "--state-dir",
        &state_arg,
        "--workdir",
        &work_arg,
        "--",
        "/usr/bin/python3",
        "-c",
        py,
    ]);
    support::escape::unpin(state.path());
    assert_eq!(inside, "[]", "§5.5: no supplementary groups inside");
}
