//! The server's sandbox (SPEC §5) is the same as `servo sandbox`'s, although
//! it is built differently: a launcher forks each helper, and each job's
//! root is a private copy of a root prepared once at start-up. The escape
//! suite (tests/sandbox_*.rs) runs its probe through `servo sandbox`;
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

    // §5.7: under cgroup v1 with a `cpu` hierarchy, every script is in the
    // instance's one cpu group (all of them one share beside the server).
    if v1_cpu() {
        let cat = probe(&servo, &dir, &["cat", "/proc/self/cgroup"]);
        let text: String = serde_json::from_str(cat.strip_prefix("ok ").unwrap_or(&cat))
            .unwrap_or_else(|e| panic!("{e}: {cat}"));
        let group = format!(
            "/servo/{}",
            servo::sandbox::cgroup_instance_name(&servo.state.path().join("sandbox"))
        );
        assert!(
            text.lines().any(|l| {
                let mut f = l.splitn(3, ':');
                let _ = f.next();
                f.next().is_some_and(|c| c.split(',').any(|c| c == "cpu"))
                    && f.next() == Some(group.as_str())
            }),
            "§5.7: the script is not in the cpu group {group}: {text}"
        );
    }

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
    // Mounted by the warm init before its job arrived (rootfs::make_ahead).
    assert!(probe(&servo, &dir, &["write", "/dev/shm"]).starts_with("ok"));
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

/// Whether the host has cgroup v1 with the `cpu`, `memory` and `pids`
/// hierarchies: then the scripts share one cpu group.
fn v1_cpu() -> bool {
    !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        && ["cpu", "memory", "pids"].iter().all(|c| {
            std::path::Path::new("/sys/fs/cgroup")
                .join(c)
                .join("cgroup.procs")
                .exists()
        })
}

/// The nice value of a process's autogroup, from `/proc/PID/autogroup`.
fn autogroup_nice(pid: &str) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/autogroup")).ok()?;
    text.split("nice ").nth(1)?.trim().parse().ok()
}

#[test]
fn servo_leading_its_session_weighs_like_its_scripts_and_leaves_a_shared_one_alone() {
    if !require_root() {
        return;
    }
    let autogroups = std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
        .is_ok_and(|v| v.trim() == "1");
    if !v1_cpu() || !autogroups {
        eprintln!("skipped: needs cgroup v1 cpu and autogroups");
        return;
    }
    let mine = autogroup_nice("self");
    // Started from this test's session: the session (and this test) keep
    // their weight.
    let shared = Servo::start(&[]);
    assert_eq!(
        autogroup_nice(&shared.child.id().to_string()),
        mine,
        "servo changed the weight of a session it shares"
    );
    assert_eq!(autogroup_nice("self"), mine);
    // Leading its own session: servo and its launcher weigh about as much
    // as all their scripts' cpu group.
    let own = Servo::start_in_own_session(&[]);
    let pid = own.child.id().to_string();
    assert_eq!(autogroup_nice(&pid), Some(-10), "servo's own session");
    let launchers = children(own.child.id());
    assert!(!launchers.is_empty(), "servo has no launcher child");
    for launcher in launchers {
        assert_eq!(
            autogroup_nice(&launcher.to_string()),
            Some(-10),
            "its launcher"
        );
    }
    assert_eq!(autogroup_nice("self"), mine);
}

/// A server that has run one script (`hi.py` of the bundle), and its
/// launcher.
fn after_one_run() -> (Servo, support::Bundle, u32) {
    let servo = Servo::start(&[]);
    let b = support::bundle(&[("hi.py", "print('hi')")]);
    assert_eq!(post_bundle(&servo, &b.tgz, "hi.py", &[]).status, 200);
    let launcher = launcher_of(&servo);
    (servo, b, launcher)
}

/// servo's launcher (`servo __sandbox-launcher`).
fn launcher_of(servo: &Servo) -> u32 {
    children(servo.child.id())
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .windows(18)
                .any(|w| w == b"__sandbox-launcher")
        })
        .expect("servo's launcher")
}

/// A capability set's mask from /proc/PID/status (`CapBnd`, `CapEff`...).
fn cap_mask(pid: u32, set: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:\t")))
        .unwrap_or_else(|| panic!("no {set} in {status}"))
        .to_string()
}

/// The launcher empties its bounding set once, so that no script's start
/// drops it capability by capability; its inits inherit it empty, and keep
/// the effective capabilities they build the sandbox with.
#[test]
fn the_launcher_and_its_warm_init_hold_an_empty_bounding_set() {
    if !require_root() {
        return;
    }
    let (servo, _, launcher) = after_one_run();
    // The next job's init, made ahead of it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let warm = loop {
        if let Some(&p) = children(launcher).first() {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no warm init");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    for (pid, who) in [(launcher, "the launcher"), (warm, "its warm init")] {
        assert_eq!(cap_mask(pid, "CapBnd"), "0000000000000000", "{who}");
        assert_ne!(cap_mask(pid, "CapEff"), "0000000000000000", "{who}");
    }
    // The script that warm init becomes still holds no capability at all.
    let caps = support::bundle(&[(
        "caps.py",
        "for l in open('/proc/self/status'):\n    if l.startswith(('CapBnd', 'CapEff')):\n        print(l.split()[0], l.split()[1])",
    )]);
    let r = post_bundle(&servo, &caps.tgz, "caps.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    for set in ["CapBnd:", "CapEff:"] {
        assert!(
            r.lines()
                .contains(&format!("{set} 0000000000000000").as_str()),
            "{set} {}",
            r.body
        );
    }
}

/// The pids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether `needle` is anywhere in `pid`'s readable memory (root reads
/// /proc/PID/mem).
fn memory_holds(pid: u32, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let Ok(mut mem) = std::fs::File::open(format!("/proc/{pid}/mem")) else {
        return false;
    };
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.contains("[vvar") || line.contains("[vsyscall") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_ok()
            && mem.read_exact(&mut buf).is_ok()
            && buf.windows(needle.len()).any(|w| w == needle)
        {
            return true;
        }
    }
    false
}

#[test]
fn no_sandbox_process_holds_servos_tokens_or_environment() {
    if !require_root() {
        return;
    }
    // A token and an environment variable only servo itself has.
    let token = "tok-7c1e5d0e9a3b4f62a8d1";
    let canary = "servo-env-canary-51f3";
    let servo = Servo::start_with_env(&["--token", token], &[("SERVO_CANARY", canary)]);
    let b = support::bundle(&[("wait.py", "import time\ntime.sleep(3)\n")]);
    let sig = support::openssl_sign(&b.tgz, token);
    let client = std::process::Command::new("curl")
        .args(["-sS", "-X", "POST", "-F"])
        .arg(format!("tgz=@{}", b.tgz.display()))
        .args(["-H", &format!("X-Signature:{sig}")])
        .arg(format!("{}/run/wait.py", servo.url))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("curl");
    support::wait_in_flight(&servo, 1);
    // servo -> launcher -> init (the job's, and the next job's made ahead)
    // -> script; wait until the script runs.
    let server = servo.child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let sandbox_side = loop {
        let mut found = Vec::new();
        let mut todo = children(server);
        while let Some(p) = todo.pop() {
            found.push(p);
            todo.extend(children(p));
        }
        let script_runs = found.iter().any(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.windows(7).any(|w| w == b"wait.py"))
        });
        if script_runs {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the script never ran: {found:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        sandbox_side.len() >= 3,
        "launcher, init, script: {sandbox_side:?}"
    );
    // Control: the scan finds the token in servo's own memory.
    assert!(
        memory_holds(server, token.as_bytes()),
        "the memory scan finds nothing"
    );
    for pid in sandbox_side {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !environ
                .windows(canary.len())
                .any(|w| w == canary.as_bytes()),
            "§5.9: process {pid} has servo's environment"
        );
        let is_script = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .contains("wait.py");
        if !is_script {
            assert!(
                !memory_holds(pid, token.as_bytes()),
                "§5.9: process {pid} holds servo's token in its memory"
            );
        }
    }
    let _ = client.wait_with_output();
}

#[test]
fn a_killed_launcher_is_replaced_and_runs_go_on() {
    if !require_root() {
        return;
    }
    let (servo, b, launcher) = after_one_run();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launcher as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    // Its warm init dies with it; the next run gets a new launcher.
    let r = post_bundle(&servo, &b.tgz, "hi.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.lines().contains(&"hi"), "{}", r.body);
    assert!(
        !std::path::Path::new(&format!("/proc/{launcher}")).exists(),
        "the old launcher was reaped"
    );
}
