//! Rootless mode (SPEC §5, last part): servo run as an unprivileged user,
//! with unprivileged user namespaces, keeps the sandbox's guarantees.
//! The tests start as root and drop to `nobody` with util-linux's `setpriv`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{openssl_sign, require_root, servo_bin, TOKEN};

const NOBODY: u32 = 65534;

/// A copy of the binary and a state dir that `nobody` can use (the build
/// tree may sit under a directory only root can enter).
struct Unprivileged {
    dir: tempfile::TempDir,
}

impl Unprivileged {
    fn new() -> Unprivileged {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        support::install_executable(Path::new(servo_bin()), &dir.path().join("servo"), 0o755);
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("mkdir");
        std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).expect("chown");
        Unprivileged { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("servo")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid",
            &NOBODY.to_string(),
            "--regid",
            &NOBODY.to_string(),
            "--clear-groups",
        ])
        .arg(program)
        .current_dir(self.dir.path())
        .env_remove("SERVO_TOKEN");
        cmd
    }
}

/// Prints one `name=value` line per fact the sandbox is supposed to change.
const PROBE: &str = r#"
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return line.split()[1]
print('uid=%d' % os.getuid())
print('capeff=' + status('CapEff'))
print('capbnd=' + status('CapBnd'))
print('nonewprivs=' + status('NoNewPrivs'))
print('hostname=' + socket.gethostname())
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    print('inet=ok')
except OSError as e:
    print('inet=errno%d' % e.errno)
print('pids=%d' % len([p for p in os.listdir('/proc') if p.isdigit()]))
print('shadow=%s' % os.path.exists('/etc/shadow'))
try:
    open('/usr/servo-probe', 'w')
    print('write_usr=ok')
except OSError as e:
    print('write_usr=errno%d' % e.errno)
r = libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)
print('mount=%s' % ('ok' if r == 0 else 'errno%d' % ctypes.get_errno()))
"#;

fn facts(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn has(facts: &[String], fact: &str) -> bool {
    facts.iter().any(|f| f == fact)
}

#[test]
fn rootless_sandbox_keeps_the_guarantees() {
    if !require_root() {
        return;
    }
    let u = Unprivileged::new();
    let probe = u.dir.path().join("probe.py");
    std::fs::write(&probe, PROBE).expect("write probe");
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    // Outside the sandbox, as the same unprivileged user: the probe's
    // actions behave as on any host process.
    let outside = u
        .command(Path::new("/usr/bin/python3"))
        .arg(&probe)
        .output()
        .expect("python3");
    let outside = facts(&outside);
    assert!(has(&outside, "inet=ok"), "{outside:?}");
    assert!(has(&outside, "uid=65534"), "{outside:?}");
    assert!(!has(&outside, "hostname=servo"), "{outside:?}");

    // Inside: `servo sandbox` run by nobody, with the probe as /work/probe.py.
    let out = u
        .command(&u.bin())
        .args(["sandbox", "--state-dir"])
        .arg(u.state())
        .arg("--workdir")
        .arg(u.dir.path())
        .args(["--", "/usr/bin/python3", "/work/probe.py"])
        .stderr(Stdio::piped())
        .output()
        .expect("servo sandbox");
    let inside = facts(&out);
    assert!(
        out.status.success(),
        "{inside:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "uid=99999",
        "capeff=0000000000000000",
        "capbnd=0000000000000000",
        "nonewprivs=1",
        "hostname=servo",
        "inet=errno1",
        "pids=1",
        "shadow=False",
        "mount=errno1",
    ] {
        assert!(
            has(&inside, want),
            "rootless: expected {want} in {inside:?}"
        );
    }
    assert!(
        inside
            .iter()
            .any(|f| f == "write_usr=errno30" || f == "write_usr=errno13"),
        "rootless: /usr writable: {inside:?}"
    );
}

#[test]
fn rootless_server_runs_a_bundle() {
    if !require_root() {
        return;
    }
    let u = Unprivileged::new();
    let log = u.dir.path().join("servo.stderr");
    let mut child = u
        .command(&u.bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN])
        .arg("--state-dir")
        .arg(u.state())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("servo serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| l.split("listening on ").nth(1)) {
            break format!("http://{}", addr.trim());
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "servo exited:\n{text}"
        );
        assert!(Instant::now() < deadline, "servo did not listen:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    };

    let health = Command::new("curl")
        .args(["-sS", &format!("{url}/health")])
        .output()
        .expect("curl");
    let health: serde_json::Value = serde_json::from_slice(&health.stdout).expect("json");
    assert_eq!(health["sandbox"]["rootless"], true, "{health}");
    assert!(
        health["sandbox"]["namespaces"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n == "user")),
        "{health}"
    );

    let src = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        src.path().join("hello.py"),
        "import os\nprint('hello from', os.getuid())\nopen('out.txt', 'w').write('x')\n",
    )
    .expect("write");
    let tgz = src.path().join("upload.tgz");
    let st = Command::new("tar")
        .current_dir(src.path())
        .args(["zcf", "upload.tgz", "hello.py"])
        .status()
        .expect("tar");
    assert!(st.success());
    let sig = openssl_sign(&tgz, TOKEN);
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "-F"])
        .arg(format!("tgz=@{}", tgz.display()))
        .args(["-H", &format!("X-Signature:{sig}")])
        .arg(format!("{url}/run/hello.py"))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("hello from 100000"), "{body}");
    assert!(body.contains("hello.py ran in"), "{body}");
    assert!(!body.contains("failure"), "{body}");

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let runs: Vec<_> = std::fs::read_dir(u.state().join("runs"))
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(runs.is_empty(), "run directories left: {runs:?}");
}

/// The escape suite's probe (tests/support/probe.py), run as `nobody`
/// through a rootless `servo sandbox`: one check per guarantee of §5, each
/// with its verdict inside and a control run on the host as `nobody`.
#[test]
fn rootless_escape_probes() {
    if !require_root() {
        return;
    }
    let u = Unprivileged::new();
    let work = u.dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    std::fs::copy(support::escape::probe_host(), work.join("probe.py")).expect("copy probe");
    std::os::unix::fs::chown(&work, Some(NOBODY), Some(NOBODY)).expect("chown");
    let probe = |inside: bool, check: &[&str]| -> String {
        let mut cmd = if inside {
            let mut c = u.command(&u.bin());
            c.args(["sandbox", "--state-dir"])
                .arg(u.state())
                .arg("--workdir")
                .arg(&work)
                .args(["--", "/usr/bin/python3", "/work/probe.py"]);
            c
        } else {
            // The control: the same user in throwaway namespaces of its own
            // (root mapped), where the probe's actions are allowed.
            let mut c = u.command(Path::new("unshare"));
            c.args([
                "--user",
                "--map-root-user",
                "--mount",
                "--uts",
                "--ipc",
                "--net",
            ])
            .args(["--pid", "--fork", "/usr/bin/python3"])
            .arg(work.join("probe.py"))
            .current_dir(&work);
            c
        };
        let out = cmd
            .args(check)
            .stdin(Stdio::null())
            .output()
            .expect("probe");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("RESULT "))
            .next_back()
            .unwrap_or("(no RESULT line)")
            .to_string()
    };
    // (guarantee, probe, verdict inside); the control's verdict must differ.
    let table: &[(&str, &[&str], &str)] = &[
        ("§5.2 /root unreachable", &["exists", "/root"], "absent"),
        (
            "§5.2 /sys unreachable",
            &["exists", "/sys/kernel"],
            "absent",
        ),
        (
            "§5.2 /etc/shadow unreachable",
            &["exists", "/etc/shadow"],
            "absent",
        ),
        ("§5.3 no AF_INET", &["socket", "2", "1"], "errno=1"),
        ("§5.4 sethostname", &["sethostname"], "errno=1"),
        ("§5.5 setuid(0)", &["setuid0"], "errno=1"),
        ("§5.6 mount", &["sys", "mount"], "errno=1"),
        ("§5.6 unshare", &["sys", "unshare_noop"], "errno=1"),
        ("§5.6 clone3", &["sys", "clone3"], "errno=38"),
        ("§5.6 bpf", &["sys", "bpf"], "errno=1"),
        ("§5.6 io_uring", &["sys", "io_uring_setup"], "errno=1"),
        ("§5.6 keyctl", &["sys", "keyctl"], "errno=1"),
        ("§5.6 TIOCSTI", &["sys", "ioctl_tiocsti"], "errno=1"),
    ];
    let mut failures = Vec::new();
    let verdict = |r: &str| r.split_whitespace().next().unwrap_or("").to_string();
    for (what, check, want) in table {
        let outside = probe(false, check);
        let inside = probe(true, check);
        if verdict(&inside) != *want {
            failures.push(format!(
                "{what} (rootless sandbox): {check:?} gave `{inside}`, expected `{want}…`"
            ));
        }
        if verdict(&outside) == *want {
            failures.push(format!(
                "{what} (control, nobody in its own namespaces): {check:?} gave `{outside}` too"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
