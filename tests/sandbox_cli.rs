//! `servo sandbox` and `servo policy check` themselves (SPEC §5 through the
//! CLI): command lookup, the prepared root kept across calls, policy errors.
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

use support::escape::{run, Jail, PYTHON};
use support::{require_root, servo_bin};

#[test]
fn cli_bare_command_name_is_looked_up() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let out = jail.run(&["python3", "-c", "print(1)"]);
    assert!(
        out.code == Some(0) && out.stdout == "1\n",
        "`servo sandbox -- python3 -c 'print(1)'` must print 1\n{}",
        out.show()
    );
}

#[test]
fn cli_a_command_that_cannot_be_executed_is_named_with_the_reason() {
    if !require_root() {
        return;
    }
    // The command's process shares the init's memory until execve
    // (sandbox/fork.rs, spawn_sharing_memory): when execve fails it writes
    // the reason and exits; the init must resume with the reason and leave
    // nothing that breaks the next call.
    let jail = Jail::new();
    for (argv, reason) in [
        ("/nonexistent/command", "ENOENT"),
        ("/etc/passwd", "EACCES"),
        ("/nonexistent/command", "ENOENT"),
    ] {
        let out = jail.run(&[argv]);
        assert!(
            out.code == Some(125)
                && out.stderr.contains(&format!("cannot execute {argv}"))
                && out.stderr.contains(reason),
            "`servo sandbox -- {argv}` must exit 125 naming {reason}\n{}",
            out.show()
        );
    }
    // A name as long as the argument limit allows: its reason is longer
    // than a pipe holds, and must come back cut, not hang the call.
    let long = format!("/{}x", "a/".repeat(40_000));
    let out = jail.run(&[&long]);
    assert!(
        out.code == Some(125)
            && out.stderr.contains("cannot execute /a/a/")
            && out.stderr.len() < 4096,
        "`servo sandbox -- /a/a/...` (80 KB) must exit 125 with a short reason\n{}",
        out.show()
    );
    let out = jail.run(&["python3", "-c", "print(2)"]);
    assert!(
        out.code == Some(0) && out.stdout == "2\n",
        "a call after failed ones must work\n{}",
        out.show()
    );
}

#[test]
fn cli_prepared_root_is_made_again_when_its_inputs_change() {
    if !require_root() {
        return;
    }
    // The root `servo sandbox` keeps across calls names the uid in
    // /etc/passwd: another --uid must get a root that names it.
    let mut jail = Jail::new();
    let whoami = "import os, pwd; print(os.getuid(), pwd.getpwuid(os.getuid()).pw_name)";
    for _ in 0..2 {
        let uid = jail.uid;
        let out = jail.run(&[PYTHON, "-c", whoami]);
        assert_eq!(out.stdout, format!("{uid} servo\n"), "{}", out.show());
        jail.uid = support::escape::next_uid();
    }
    // Unpinned (a server's start-up sweep, or a reboot): made again.
    support::escape::unpin(&jail.state_dir());
    let out = jail.run(&[PYTHON, "-c", whoami]);
    assert_eq!(
        out.stdout,
        format!("{} servo\n", jail.uid),
        "{}",
        out.show()
    );
}

#[test]
fn cli_prepared_root_files_are_never_followed_through_symlinks() {
    if !require_root() {
        return;
    }
    // Symlinks planted where servo sandbox keeps its prepared root's pin
    // and key must not make root write to, or mount over, their targets.
    let jail = Jail::new();
    let scratch = jail.state_dir().join("sandbox");
    std::fs::create_dir_all(&scratch).expect("mkdir");
    let victim = jail.dir.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    for name in ["root.key", "root.mnt"] {
        std::os::unix::fs::symlink(&victim, scratch.join(name)).expect("symlink");
    }
    let out = jail.run(&[PYTHON, "-c", "print('ran')"]);
    assert_eq!(out.stdout, "ran\n", "{}", out.show());
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap_or_else(|e| format!("unreadable: {e}")),
        "precious\n",
        "the symlinks' target was written"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(victim.to_str().expect("utf-8")),
        "something was mounted on the symlinks' target:\n{mounts}"
    );
}

#[test]
fn cli_concurrent_calls_share_one_prepared_root() {
    if !require_root() {
        return;
    }
    // Calls racing to make the first prepared root take turns: all succeed.
    let jail = Jail::new();
    let children: Vec<std::process::Child> = (0..6)
        .map(|i| {
            jail.command(&[PYTHON, "-c", &format!("print({i})")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("servo sandbox")
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout) == format!("{i}\n"),
            "call {i}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let pin = jail.state_dir().join("sandbox/root.mnt");
    let pins = mounts
        .lines()
        .filter(|l| l.contains(pin.to_str().expect("utf-8")))
        .count();
    assert_eq!(pins, 1, "one pinned root, not one per call:\n{mounts}");
}

#[test]
fn cli_policy_check_reports_the_line_of_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.json");
    let policy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/seccomp.json"))
            .expect("policy");
    std::fs::write(&good, &policy).expect("write");
    let mut cmd = Command::new(servo_bin());
    cmd.args(["policy", "check"]).arg(&good);
    let out = run(cmd);
    assert_eq!(
        out.code,
        Some(0),
        "a valid policy must pass\n{}",
        out.show()
    );

    // A misspelt syscall on a known line.
    let bad = dir.path().join("bad.json");
    let broken = policy.replacen(
        "{\"syscall\": \"getppid\"}",
        "{\"syscall\": \"getppidd\"}",
        1,
    );
    assert_ne!(broken, policy, "the test must actually break the policy");
    let line = broken
        .lines()
        .position(|l| l.contains("getppidd"))
        .expect("line")
        + 1;
    std::fs::write(&bad, &broken).expect("write");
    let mut cmd = Command::new(servo_bin());
    cmd.args(["policy", "check"]).arg(&bad);
    let out = run(cmd);
    assert!(
        out.code.is_some_and(|c| c != 0) && out.stderr.contains(&format!("line {line}")),
        "a broken policy must fail and name line {line}\n{}",
        out.show()
    );
}
