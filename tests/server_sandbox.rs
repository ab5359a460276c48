//! The server's sandbox (SPEC §5) is the same as `servo sandbox`'s, although
//! it is built differently: a launcher forks each helper, and each job's
//! root is a private copy of a root prepared once at start-up. The escape
//! suite (tests/sandbox_escape.rs) runs its probe through `servo sandbox`;
//! this runs the same probe, one check per guarantee, as scripts of a bundle
//! posted to a real server.

mod support;

use support::{post_bundle, require_root, Servo};

/// One probe run as a script; returns its `RESULT` line.
fn probe(servo: &Servo, dir: &std::path::Path, args: &[&str]) -> String {
    let script = format!(
        "import runpy, sys\nsys.argv = ['probe.py', {}]\nrunpy.run_path('probe.py', run_name='__main__')\n",
        args.iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::fs::write(dir.join("check.py"), script).expect("write");
    let tgz = dir.join("../upload.tgz");
    let st = std::process::Command::new("tar")
        .current_dir(dir)
        .args(["zcf", "../upload.tgz", "probe.py", "check.py"])
        .status()
        .expect("tar");
    assert!(st.success());
    let r = post_bundle(servo, &tgz, "check.py", &[]);
    r.lines()
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{}", r.body))
        .to_string()
}

#[test]
fn the_servers_sandbox_keeps_every_guarantee() {
    if !require_root() {
        return;
    }
    let servo = Servo::start(&[]);
    let top = tempfile::tempdir().expect("tempdir");
    let dir = top.path().join("bundle");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::copy(support::escape::probe_host(), dir.join("probe.py")).expect("copy probe");
    let state = servo.state.path().to_string_lossy().into_owned();

    let pids = probe(&servo, &dir, &["pids"]);
    assert_eq!(pids, "pids=1 [2]", "§5.1: the script sees only itself");

    let etc = probe(&servo, &dir, &["listdir", "/etc"]);
    for secret in ["shadow", "gshadow", "sudoers", "ssh"] {
        assert!(
            !etc.contains(&format!("\"{secret}\"")),
            "§5.2: /etc has {secret}: {etc}"
        );
    }
    let dev = probe(&servo, &dir, &["listdir", "/dev"]);
    assert_eq!(
        dev,
        "ok [\"fd\", \"full\", \"null\", \"random\", \"shm\", \"stderr\", \"stdin\", \"stdout\", \"urandom\", \"zero\"]",
        "§5.2: /dev"
    );
    for (path, what) in [("/", "the root"), ("/usr", "/usr"), ("/etc", "/etc")] {
        let w = probe(&servo, &dir, &["write", path]);
        assert!(
            w.starts_with("errno=30") || w.starts_with("errno=13"),
            "§5.2: {what} must be read-only: {w}"
        );
    }
    assert!(probe(&servo, &dir, &["write", "/tmp"]).starts_with("ok"));
    assert!(probe(&servo, &dir, &["write", "/work"]).starts_with("ok"));
    let mountinfo = probe(&servo, &dir, &["cat", "/proc/self/mountinfo"]);
    assert!(
        !mountinfo.contains(&state),
        "§5.9: mountinfo shows the state dir {state}: {mountinfo}"
    );
    assert!(probe(&servo, &dir, &["exists", "/sys/kernel"]).starts_with("absent"));
    assert!(probe(&servo, &dir, &["exists", "/proc/sys"]).starts_with("absent"));

    let inet = probe(&servo, &dir, &["socket", "2", "1"]);
    assert_eq!(
        inet.split_whitespace().next(),
        Some("errno=1"),
        "§5.3 AF_INET: {inet}"
    );
    assert_eq!(probe(&servo, &dir, &["hostname"]), "ok servo", "§5.4");

    let ids: serde_json::Value = serde_json::from_str(
        probe(&servo, &dir, &["ids"])
            .strip_prefix("ok ")
            .expect("ids"),
    )
    .expect("json");
    assert_ne!(ids["uid"][0], 0, "§5.5: {ids}");
    assert_eq!(ids["groups"], serde_json::json!([]), "§5.5: {ids}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(ids["caps"][set], "0000000000000000", "§5.5 {set}: {ids}");
    }
    assert_eq!(ids["no_new_privs"], "1");
    assert_eq!(ids["seccomp"], "2");

    for (case, want) in [
        ("mount", "errno=1"),
        ("unshare_noop", "errno=1"),
        ("clone3", "errno=38"),
        ("ptrace", "errno=1"),
        ("bpf", "errno=1"),
        ("ioctl_tiocsti", "errno=1"),
    ] {
        let r = probe(&servo, &dir, &["sys", case]);
        assert_eq!(r.split_whitespace().next(), Some(want), "§5.6 {case}: {r}");
    }
}
