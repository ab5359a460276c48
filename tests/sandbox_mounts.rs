//! SPEC §5.2: the root file system: host secrets unreachable, /etc only its
//! allowlist, writes only in /work and /tmp, /dev only the safe nodes, /proc
//! the job's own.
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
use std::path::Path;

use support::escape::{check, expect, is_errno, outside, Jail};
use support::require_root;

#[test]
fn s5_2_host_secrets_are_unreachable() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let state = jail.state_dir();
    let state = state.to_str().expect("utf-8");
    let other = tempfile::tempdir().expect("tempdir");
    let other = other.path().to_str().expect("utf-8");
    for path in [
        "/etc/shadow",
        "/root",
        state,
        other,
        "/home",
        "/sys",
        "/sys/fs/cgroup",
        "/proc/1/environ",
        "/proc/self/root/etc/shadow",
        "/var",
        "/boot",
    ] {
        // The host's PID 1 may refuse even root (checked by the PID test).
        if Path::new(path).exists() && path != "/proc/1/environ" {
            let host = outside(&jail.workdir(), "read", &[path]);
            expect(
                &host,
                "ok",
                "§5.2 (control)",
                &format!("root reads {path} on the host"),
            );
        }
        let inside = jail.probe("read", &[path]);
        check(
            is_errno(&inside, &[2, 13]),
            "§5.2 minimal root",
            &format!("{path} must not be reachable inside"),
            &inside,
        );
    }
}

#[test]
fn s5_2_etc_holds_only_the_allowlist() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let host = outside(&jail.workdir(), "listdir", &["/etc"]);
    let host_etc: BTreeSet<String> = serde_json::from_value(host.json()).expect("list");
    check(
        host_etc.contains("shadow"),
        "§5.2 (control)",
        "the host's /etc has a shadow file",
        &host,
    );
    let inside = jail.probe("listdir", &["/etc"]);
    let etc: BTreeSet<String> = serde_json::from_value(inside.json()).expect("list");
    let allowed = [
        "passwd",
        "group",
        "hosts",
        "hostname",
        "nsswitch.conf",
        "ld.so.cache",
        "localtime",
        "ssl",
        "alternatives",
        "ca-certificates.conf",
        "mime.types",
        "protocols",
        "services",
    ];
    let extra: Vec<&String> = etc
        .iter()
        .filter(|e| !allowed.contains(&e.as_str()) && !e.starts_with("python3"))
        .collect();
    check(
        extra.is_empty(),
        "§5.2 /etc allowlist",
        &format!("/etc holds entries outside the allowlist: {extra:?}"),
        &inside,
    );
    for needed in ["passwd", "group", "hosts"] {
        check(
            etc.contains(needed),
            "§5.2 /etc allowlist",
            &format!("/etc/{needed} is missing"),
            &inside,
        );
    }
    let passwd = jail.probe("cat", &["/etc/passwd"]);
    let text = passwd.json();
    let text = text.as_str().unwrap_or_default();
    check(
        text.contains(&format!(":{}:{}:", jail.uid, jail.uid)),
        "§5.2 /etc/passwd",
        "passwd must name the sandbox user",
        &passwd,
    );
}

#[test]
fn s5_2_writes_fail_outside_work_and_tmp() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    for dir in ["/work", "/tmp"] {
        let inside = jail.probe("write", &[dir]);
        expect(
            &inside,
            "ok",
            "§5.2 writable dirs",
            &format!("writing in {dir}"),
        );
    }
    for dir in [
        "/",
        "/usr",
        "/usr/bin",
        "/etc",
        "/opt/servo/python",
        "/dev",
        "/run/servo",
    ] {
        let inside = jail.probe("write", &[dir]);
        check(
            is_errno(&inside, &[30, 13]),
            "§5.2 read-only root",
            &format!("a write in {dir} must fail with EROFS or EACCES"),
            &inside,
        );
    }
}

#[test]
fn s5_2_dev_has_only_the_safe_nodes() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let host = outside(&jail.workdir(), "listdir", &["/dev"]);
    let host_dev: BTreeSet<String> = serde_json::from_value(host.json()).expect("list");
    check(
        host_dev.len() > 10,
        "§5.2 (control)",
        "the host's /dev has more",
        &host,
    );
    let inside = jail.probe("listdir", &["/dev"]);
    let dev: BTreeSet<String> = serde_json::from_value(inside.json()).expect("list");
    let want: BTreeSet<String> = [
        "null", "zero", "full", "random", "urandom", "fd", "stdin", "stdout", "stderr", "shm",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    check(
        dev == want,
        "§5.2 /dev",
        &format!("/dev must hold exactly {want:?}"),
        &inside,
    );
}

#[test]
fn s5_2_no_block_device_is_reachable_or_creatable() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let host = outside(&jail.workdir(), "blockdev", &[]);
    check(
        host.verdict() != "found=0" && host.detail().starts_with("mknod=ok"),
        "§5.2 (control)",
        "the host has a block device and root can mknod one",
        &host,
    );
    let inside = jail.probe("blockdev", &[]);
    expect(&inside, "found=0", "§5.2 /dev", "no block device inside");
    check(
        inside.detail().starts_with("mknod=errno1"),
        "§5.2/§5.5",
        "mknod of a block device must fail with EPERM",
        &inside,
    );
}

#[test]
fn s5_2_proc_is_the_jobs_own_without_sys() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    for path in ["/proc/sys", "/proc/kcore", "/proc/sysrq-trigger", "/proc/1"] {
        // Not every kernel has /proc/kcore or /proc/sysrq-trigger: their
        // control only where they exist; /proc/sys and /proc/1 always do.
        let always = ["/proc/sys", "/proc/1"].contains(&path);
        if always || Path::new(path).exists() {
            let host = outside(&jail.workdir(), "exists", &[path]);
            expect(
                &host,
                "exists",
                "§5.2 (control)",
                &format!("{path} on the host"),
            );
        }
        let inside = jail.probe("exists", &[path]);
        expect(
            &inside,
            "absent",
            "§5.2 fresh /proc",
            &format!("{path} must not exist inside"),
        );
    }
}
