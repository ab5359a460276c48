//! The sandbox escape suite: every guarantee of SPEC §5 attempted from inside
//! `servo sandbox` by `tests/support/probe.py`.
//!
//! Each probe also runs outside the sandbox (as root on the host, or in
//! throwaway namespaces from `unshare` when the action is destructive), where
//! it must work or fail for another reason than the sandbox's refusal, so a
//! test cannot pass because the probe itself is broken.
//!
//! Runs as root only: `require_root()` skips elsewhere and fails under CI=true.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::escape::{
    cli_job_cgroups, host_processes_with, kill_marked, marker, outside, outside_unshared,
    remove_leftover_cgroups, run, Jail, Outcome, PROBE_INSIDE, PYTHON,
};
use support::{require_root, servo_bin};

const EPERM: &str = "errno=1";

/// Fails with the guarantee's name and the probe's output.
#[track_caller]
fn check(cond: bool, guarantee: &str, what: &str, out: &Outcome) {
    assert!(cond, "SPEC {guarantee}: {what}\n{}", out.show());
}

/// The probe's verdict must be the expected one.
#[track_caller]
fn expect(out: &Outcome, verdict: &str, guarantee: &str, what: &str) {
    check(
        out.verdict() == verdict,
        guarantee,
        &format!(
            "{what}: expected `RESULT {verdict}`, got `{}`",
            out.result()
        ),
        out,
    );
}

/// Inside: refused by the sandbox (EPERM, ENOENT or EACCES...): any errno.
fn is_errno(out: &Outcome, allowed: &[i32]) -> bool {
    allowed
        .iter()
        .any(|e| out.verdict() == format!("errno={e}"))
}

// ------------------------------------------------------------------ §5.1 PID

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

// --------------------------------------------------------------- §5.2 mounts

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

// -------------------------------------------------------------- §5.3 network

#[test]
fn s5_3_only_unix_sockets_can_be_made() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    // (name, family, type)
    for (name, family, kind) in [
        ("AF_INET", "2", "1"),
        ("AF_INET udp", "2", "2"),
        ("AF_INET6", "10", "1"),
        ("AF_NETLINK", "16", "3"),
        ("AF_PACKET", "17", "3"),
    ] {
        let host = outside_unshared(&jail.workdir(), "socket", &[family, kind]);
        expect(
            &host,
            "ok",
            "§5.3 (control)",
            &format!("socket({name}) outside"),
        );
        let inside = jail.probe("socket", &[family, kind]);
        expect(
            &inside,
            EPERM,
            "§5.3/§5.6 network",
            &format!("socket({name}) must be refused with EPERM"),
        );
    }
    let unix = jail.probe("socket", &["1", "1"]);
    expect(&unix, "ok", "§5.3", "AF_UNIX sockets must work");
}

#[test]
fn s5_3_no_route_to_a_host_listener() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port().to_string();
    let host = outside(&jail.workdir(), "connect", &["127.0.0.1", &port]);
    expect(
        &host,
        "ok",
        "§5.3 (control)",
        "the host connects to its listener",
    );
    while listener.accept().is_ok() {}
    let inside = jail.probe("connect", &["127.0.0.1", &port]);
    check(
        inside.verdict() != "ok",
        "§5.3 network namespace",
        "the script reached a TCP listener on the host's 127.0.0.1",
        &inside,
    );
    check(
        listener.accept().is_err(),
        "§5.3 network namespace",
        "the host listener accepted a connection from the sandbox",
        &inside,
    );
}

#[test]
fn s5_3_only_loopback_exists() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let host = outside(&jail.workdir(), "ifaces", &[]);
    let host_ifaces: Vec<String> = serde_json::from_value(host.json()).expect("list");
    check(
        host_ifaces.iter().any(|i| i != "lo"),
        "§5.3 (control)",
        "the host has an interface besides lo",
        &host,
    );
    let inside = jail.probe("ifaces", &[]);
    let ifaces: Vec<String> = serde_json::from_value(inside.json()).expect("list");
    check(
        ifaces == ["lo"],
        "§5.3 network namespace",
        "only the loopback interface may exist",
        &inside,
    );
}

#[test]
fn s5_3_host_abstract_unix_sockets_are_unreachable() {
    if !require_root() {
        return;
    }
    use std::os::linux::net::SocketAddrExt;
    let jail = Jail::new();
    let name = marker("abstract");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .expect("abstract address");
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let host = outside(&jail.workdir(), "connect_abstract", &[&name]);
    expect(
        &host,
        "ok",
        "§5.3 (control)",
        "the host connects to its abstract socket",
    );
    while listener.accept().is_ok() {}
    let inside = jail.probe("connect_abstract", &[&name]);
    expect(
        &inside,
        "errno=111",
        "§5.3 network namespace",
        "a host abstract AF_UNIX socket must be unreachable (ECONNREFUSED)",
    );
    check(
        listener.accept().is_err(),
        "§5.3 network namespace",
        "the host's abstract socket accepted a connection from the sandbox",
        &inside,
    );
}

// ------------------------------------------------------------ §5.4 IPC, UTS

#[test]
fn s5_4_hostname_is_servo_and_cannot_be_changed() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let inside = jail.probe("hostname", &[]);
    check(
        inside.detail() == "servo",
        "§5.4 UTS namespace",
        "the hostname must be `servo`",
        &inside,
    );
    let host = outside_unshared(&jail.workdir(), "sethostname", &[]);
    expect(
        &host,
        "ok",
        "§5.4 (control)",
        "sethostname in a fresh UTS namespace",
    );
    let inside = jail.probe("sethostname", &[]);
    expect(
        &inside,
        EPERM,
        "§5.4 UTS namespace",
        "sethostname must be refused",
    );
}

/// A SysV shared memory segment on the host, removed on drop.
struct HostShm(i32);

impl Drop for HostShm {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID reads no buffer (null is allowed); the id is ours.
        unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

#[test]
fn s5_4_host_sysv_ipc_is_not_visible() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let key = 0x5E00_0000 | (std::process::id() as i32 & 0x00FF_FFFF);
    // SAFETY: shmget takes integers only and returns an id or -1.
    let id = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | 0o666) };
    assert!(id >= 0, "cannot create a SysV shm segment on the host");
    let _shm = HostShm(id);
    let key = key.to_string();
    let host = outside(&jail.workdir(), "shm", &[&key]);
    expect(
        &host,
        "ok",
        "§5.4 (control)",
        "the host sees its shm segment",
    );
    let inside = jail.probe("shm", &[&key]);
    expect(
        &inside,
        "errno=2",
        "§5.4 IPC namespace",
        "the host's shm segment must not exist inside (ENOENT)",
    );
}

// ------------------------------------------------------- §5.5 unprivileged

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
    std::fs::copy("/usr/bin/id", &suid).expect("copy id");
    std::os::unix::fs::chown(&suid, Some(0), Some(0)).expect("chown");
    std::fs::set_permissions(&suid, std::os::unix::fs::PermissionsExt::from_mode(0o4755))
        .expect("chmod");
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

// ------------------------------------------------------------ §5.6 seccomp

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

// ---------------------------------------------------------- §5.7 resources

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

// ------------------------------------------------------------ §5.8 clean-up

#[test]
fn s5_8_nothing_of_a_run_outlives_it() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let mark = marker("cleanup");
    let child = jail
        .command(&[PYTHON, PROBE_INSIDE, "daemon", &mark])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("servo sandbox");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    let show = format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the run must succeed: {show}");
    let left = host_processes_with(&mark);
    kill_marked(&mark);
    assert!(
        left.is_empty(),
        "SPEC §5.8 clean-up: processes outlived the run: {left:?}\n{show}"
    );
    // The one mount `servo sandbox` keeps is its prepared root's pin: a
    // mount namespace, not a mount of the run.
    let state = jail.state_dir();
    let pin = state.join("sandbox/root.mnt");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let leaked: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(state.to_str().expect("utf-8")))
        .filter(|l| !(l.contains(pin.to_str().expect("utf-8")) && l.contains(" - nsfs ")))
        .collect();
    assert!(
        leaked.is_empty(),
        "SPEC §5.8 clean-up: mounts under the state dir outlived the run: {leaked:?}\n{show}"
    );
    // ... and the run left none of its own mounts in that namespace.
    let kept = root_ns_mounts(&pin);
    assert!(
        kept.contains(" / / ") && kept.contains(" /usr "),
        "the prepared root's mount table must be readable: {kept}"
    );
    let of_the_run: Vec<&str> = kept
        .lines()
        .filter(|l| {
            [" /work ", " /tmp ", " /dev/shm ", " /run/servo "]
                .iter()
                .any(|m| l.contains(m))
        })
        .collect();
    assert!(
        of_the_run.is_empty(),
        "SPEC §5.8 clean-up: the run's mounts stayed in the prepared root: {of_the_run:?}"
    );
    let left: Vec<String> = cli_job_cgroups(pid)
        .iter()
        .map(|dir| dir.display().to_string())
        .collect();
    remove_leftover_cgroups(pid);
    assert!(
        left.is_empty(),
        "SPEC §5.8 clean-up: the run's cgroups outlived it: {left:?}\n{show}"
    );
}

/// The cgroup hierarchies `servo sandbox` may use, as `servo/` directories.
fn servo_cgroup_dirs() -> Vec<std::path::PathBuf> {
    [
        "/sys/fs/cgroup/servo",
        "/sys/fs/cgroup/memory/servo",
        "/sys/fs/cgroup/pids/servo",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .filter(|d| d.is_dir())
    .collect()
}

/// A jail in which `/bin/true` has run once.
fn jail_after_one_call() -> Jail {
    let jail = Jail::new();
    let out = jail.run(&["/bin/true"]);
    check(
        out.code == Some(0),
        "§5.8 clean-up",
        "/bin/true must succeed",
        &out,
    );
    jail
}

/// Those of `dirs` that exist, removed (so a failure piles up nothing).
fn take_leftovers(dirs: Vec<std::path::PathBuf>) -> Vec<std::path::PathBuf> {
    let left: Vec<_> = dirs.into_iter().filter(|d| d.exists()).collect();
    for d in &left {
        let _ = std::fs::remove_dir(d);
    }
    left
}

/// Fails under CI=true when `servo sandbox` made no cgroup: these tests
/// check what it leaves in them.
fn cli_parents() -> Vec<std::path::PathBuf> {
    let parents: Vec<_> = servo_cgroup_dirs()
        .into_iter()
        .map(|d| d.join("sandbox"))
        .filter(|d| d.is_dir())
        .collect();
    assert!(
        !parents.is_empty() || std::env::var("CI").as_deref() != Ok("true"),
        "servo sandbox made no cgroup under /sys/fs/cgroup (SPEC §5.7): cannot check its clean-up"
    );
    parents
}

#[test]
fn s5_8_a_call_leaves_no_cgroup_named_after_its_state_dir() {
    if !require_root() {
        return;
    }
    // Every test here has a state dir of its own: a group kept per state dir
    // would pile up one for each, forever.
    let jail = jail_after_one_call();
    cli_parents();
    let instance = support::cgroup_instance(&jail.state_dir());
    let left = take_leftovers(
        servo_cgroup_dirs()
            .into_iter()
            .map(|d| d.join(&instance))
            .collect(),
    );
    assert!(
        left.is_empty(),
        "SPEC §5.8 clean-up: servo sandbox left a cgroup for its state dir: {left:?}"
    );
}

#[test]
fn s5_8_a_call_removes_groups_left_by_killed_calls() {
    if !require_root() {
        return;
    }
    let jail = jail_after_one_call();
    // Groups named like a `servo sandbox` call's: a finished process's pid
    // (not reused this soon: pids go up) in this PID namespace, which must
    // go; a live process's; and the finished pid in another namespace, where
    // it may be alive: both must stay.
    let mut gone = Command::new("/bin/true").spawn().expect("true");
    gone.wait().expect("wait");
    let mut alive = Command::new("sleep").arg("30").spawn().expect("sleep");
    let ns = std::fs::metadata("/proc/self/ns/pid")
        .expect("pid namespace")
        .ino();
    let parents = cli_parents();
    let named = |pid: u32, ns: u64| -> Vec<std::path::PathBuf> {
        parents
            .iter()
            .map(|p| p.join(format!("job-{pid}-cli-{ns}")))
            .collect()
    };
    let orphans = named(gone.id(), ns);
    let mut others = named(alive.id(), ns);
    others.extend(named(gone.id(), ns + 1));
    for d in orphans.iter().chain(&others) {
        std::fs::create_dir(d).expect("plant a group");
    }
    let out = jail.run(&["/bin/true"]);
    let _ = alive.kill();
    let _ = alive.wait();
    let kept = take_leftovers(others);
    let left = take_leftovers(orphans);
    check(
        out.code == Some(0),
        "§5.8 clean-up",
        "/bin/true must succeed",
        &out,
    );
    assert!(
        left.is_empty(),
        "SPEC §5.8 clean-up: the group of a killed call outlived it: {left:?}"
    );
    assert_eq!(
        kept.len(),
        2 * parents.len(),
        "the groups of a live process, and of another PID namespace, must be left alone"
    );
}

#[test]
fn s5_8_a_group_left_by_a_killed_call_does_not_block_the_next() {
    if !require_root() {
        return;
    }
    let jail = jail_after_one_call();
    let parents = cli_parents();
    // A call killed outright leaves `job-<pid>-cli-<pid namespace>`. The
    // next call here is pid 1 of a new PID namespace: a shell that plants
    // that name for itself, then becomes `servo sandbox`.
    let plant = r#"ns=$(stat -L -c %i /proc/self/ns/pid) || exit 99
while [ "$1" != -- ]; do mkdir "$1/job-1-cli-$ns" || exit 99; shift; done
shift
exec "$@""#;
    let servo = jail.command(&["/bin/true"]);
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "sh", "-c", plant, "sh"])
        .args(&parents)
        .arg("--")
        .arg(servo.get_program())
        .args(servo.get_args());
    let out = run(cmd);
    let left: Vec<_> = parents
        .iter()
        .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("/job-1-cli-"))
        .collect();
    let left = take_leftovers(left);
    check(
        out.code == Some(0),
        "§5.8 clean-up",
        "a stale group of the same name must be replaced, not fail the call",
        &out,
    );
    assert!(
        left.is_empty(),
        "SPEC §5.8 clean-up: the call's group outlived it: {left:?}"
    );
}

// ---------------------------------------------------- §5.9 nothing secret

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

/// The mount table of the root namespace pinned at `pin`, read from a private
/// copy of it (with a /proc of its own: the prepared root has none mounted).
fn root_ns_mounts(pin: &Path) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--mount={}", pin.display()))
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t proc proc /proc && cat /proc/self/mountinfo")
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "cannot read the prepared root's mounts: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The copy's own /proc is not the root namespace's.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains(" /proc "))
        .collect::<Vec<_>>()
        .join("\n")
}

// --------------------------------------------------------------- the CLI

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
