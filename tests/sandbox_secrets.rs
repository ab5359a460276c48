//! SPEC §5.9: nothing secret reaches a script: its environment, stdin,
//! descriptors, terminal and mount table.
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

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;

use support::escape::{check, expect, is_errno, marker, run, Jail, PROBE_INSIDE, PYTHON};
use support::{require_root, servo_bin};

#[test]
fn s5_9_environment_is_exactly_what_servo_passes() {
    if !require_root() {
        return;
    }
    let secret = marker("secret-token");
    let reversed: String = secret.chars().rev().collect();
    let mut jail = Jail::new();
    jail.env = vec![
        ("SERVO_TOKEN".into(), secret.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret.clone()),
    ];
    // Control: the probe finds a secret in its own environment on the host.
    let mut cmd = Command::new(PYTHON);
    cmd.arg(support::escape::probe_host())
        .args(["grep_proc", &reversed])
        .env("SERVO_TOKEN", &secret);
    let host = run(cmd);
    check(
        host.verdict() != "hits=0",
        "§5.9 (control)",
        "the probe finds the secret in its own /proc/self/environ on the host",
        &host,
    );
    let inside = jail.probe("environ", &[]);
    let want = serde_json::json!({
        "HOME": "/work",
        "LANG": "C.UTF-8",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": "/opt/servo/python",
    });
    check(
        inside.json() == want,
        "§5.9 nothing secret inside",
        &format!("the environment must be exactly {want}"),
        &inside,
    );
    let inside = jail.probe("grep_proc", &[&reversed]);
    expect(
        &inside,
        "hits=0",
        "§5.9 nothing secret inside",
        "no process inside may hold servo's token",
    );
}

#[test]
fn s5_9_stdin_is_dev_null() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let data = jail.dir.path().join("stdin-data");
    std::fs::File::create(&data)
        .and_then(|mut f| f.write_all(b"secret input\n"))
        .expect("write");
    let mut cmd = jail.command(&[PYTHON, PROBE_INSIDE, "stdin"]);
    cmd.stdin(std::fs::File::open(&data).expect("open"));
    let inside = run(cmd);
    check(
        inside.detail() == "/dev/null chr 1:3",
        "§5.9 stdin",
        "stdin must be /dev/null even when servo's stdin is a file",
        &inside,
    );
}

#[test]
fn s5_9_no_inherited_descriptors() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let secret = jail.dir.path().join("secret-file");
    std::fs::write(&secret, "secret").expect("write");
    // fd 7 stays open (no close-on-exec) across the shell's exec.
    let wrap = |argv: Vec<String>| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("exec 7<\"$0\"; exec \"$@\"")
            .arg(&secret)
            .args(argv)
            .stdin(std::process::Stdio::null());
        cmd
    };
    let probe = support::escape::probe_host().display().to_string();
    let host = run(wrap(vec![PYTHON.into(), probe, "fds".into()]));
    check(
        host.json().get("7").is_some(),
        "§5.9 (control)",
        "fd 7 reaches a command started the same way on the host",
        &host,
    );
    let mut argv: Vec<String> = vec![
        servo_bin().into(),
        "sandbox".into(),
        "--state-dir".into(),
        jail.state_dir().display().to_string(),
        "--workdir".into(),
        jail.workdir().display().to_string(),
        "--uid".into(),
        jail.uid.to_string(),
        "--".into(),
    ];
    argv.extend([PYTHON.into(), PROBE_INSIDE.into(), "fds".into()]);
    let inside = run(wrap(argv));
    let fds = inside.json();
    let names: BTreeSet<&String> = fds
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    check(
        names.len() == 3 && ["0", "1", "2"].iter().all(|f| fds.get(*f).is_some()),
        "§5.9 nothing secret inside",
        "only stdin, stdout and stderr may be open in the script",
        &inside,
    );
}

#[test]
fn s5_9_no_controlling_terminal() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let inside = jail.probe("tty", &[]);
    check(
        is_errno(&inside, &[2, 6]) && inside.detail() == "sid=True",
        "§5.9 no controlling terminal",
        "the script leads its own session and cannot open /dev/tty",
        &inside,
    );
}

#[test]
fn s5_9_mountinfo_does_not_show_the_state_dir() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let inside = jail.probe("cat", &["/proc/self/mountinfo"]);
    let text = inside.json();
    let text = text.as_str().unwrap_or_default().to_string();
    check(
        text.contains(" /work "),
        "§5.9 (control)",
        "mountinfo must be readable and list /work",
        &inside,
    );
    let state = jail.state_dir();
    let state = state.to_str().expect("utf-8");
    check(
        !text.contains(state) && !text.contains("sandbox/root"),
        "§5.9 mountinfo",
        &format!("mountinfo reveals the state dir {state}"),
        &inside,
    );
}
