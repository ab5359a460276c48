//! Helpers for the sandbox escape suite (tests/sandbox_*.rs, one file per
//! SPEC §5 item): run `tests/support/probe.py` inside `servo sandbox` and
//! outside it, read its `RESULT` line, and check it.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::servo_bin;

pub const PYTHON: &str = "/usr/bin/python3";
pub const PROBE_INSIDE: &str = "/work/probe.py";

/// How long any one run may take before the test calls it a hang.
const DEADLINE: Duration = Duration::from_secs(60);
/// Output kept per stream (an output flood is counted, not stored).
const KEEP: usize = 256 * 1024;

/// A distinct uid/gid per sandbox in this test process.
pub fn next_uid() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(310_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A marker unique to this test process and call, to find processes by.
pub fn marker(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "servo-escape-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A finished command: exit code (None when killed), signal, output.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The tail of stdout (at most KEEP bytes) and how many bytes came in all.
    pub stdout: String,
    pub stdout_len: usize,
    pub stderr: String,
}

impl Outcome {
    /// The probe's verdict: what follows `RESULT ` on its last such line.
    pub fn result(&self) -> String {
        self.stdout
            .lines()
            .chain(self.stderr.lines())
            .filter_map(|l| l.strip_prefix("RESULT "))
            .next_back()
            .unwrap_or("(no RESULT line)")
            .to_string()
    }

    /// The first word of the verdict (`ok`, `errno=1`...).
    pub fn verdict(&self) -> String {
        self.result()
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// The verdict's detail (everything after the first word).
    pub fn detail(&self) -> String {
        let r = self.result();
        r.split_once(' ')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default()
    }

    /// The detail parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.detail())
            .unwrap_or_else(|e| panic!("probe detail is not JSON ({e}):\n{}", self.show()))
    }

    /// Everything, for assertion messages.
    pub fn show(&self) -> String {
        let tail: String = {
            let chars: Vec<char> = self.stdout.chars().collect();
            let start = chars.len().saturating_sub(3000);
            chars[start..].iter().collect()
        };
        format!(
            "exit code {:?}, signal {:?}\n--- stdout (last 3000 chars of {} bytes) ---\n{}\n--- stderr ---\n{}",
            self.code, self.signal, self.stdout_len, tail, self.stderr
        )
    }
}

fn read_capped(mut r: impl Read) -> (String, usize) {
    let mut kept: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n;
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * KEEP {
                    kept.drain(..kept.len() - KEEP);
                }
            }
        }
    }
    if kept.len() > KEEP {
        kept.drain(..kept.len() - KEEP);
    }
    (String::from_utf8_lossy(&kept).into_owned(), total)
}

/// Runs `cmd` to the end (stdin /dev/null unless set), failing the test
/// if it takes longer than the deadline (it is killed then).
pub fn run(mut cmd: Command) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || read_capped(out));
    let err_t = std::thread::spawn(move || read_capped(err));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {DEADLINE:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    remove_leftover_cgroups(child.id());
    let (stdout, stdout_len) = out_t.join().expect("stdout reader");
    let (stderr, _) = err_t.join().expect("stderr reader");
    Outcome {
        code: status.code(),
        signal: status.signal(),
        stdout,
        stdout_len,
        stderr,
    }
}

/// Removes the groups `servo sandbox` (pid `pid`) may have left behind, so
/// that a clean-up bug does not pile up groups on the test machine; the
/// clean-up guarantee itself is checked by its own test, before this runs.
pub fn remove_leftover_cgroups(pid: u32) {
    for dir in cli_job_cgroups(pid) {
        let _ = std::fs::remove_dir(dir);
    }
}

/// The cgroups of the `servo sandbox` process `pid` that exist now:
/// `servo/<parent>/job-<pid>-cli-<pid namespace>` in each hierarchy servo
/// may use.
pub fn cli_job_cgroups(pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("job-{pid}-cli-");
    [
        "/sys/fs/cgroup/memory/servo",
        "/sys/fs/cgroup/pids/servo",
        "/sys/fs/cgroup/servo",
    ]
    .iter()
    .flat_map(|base| std::fs::read_dir(base).into_iter().flatten().flatten())
    .flat_map(|parent| {
        std::fs::read_dir(parent.path())
            .into_iter()
            .flatten()
            .flatten()
    })
    .filter(|job| job.file_name().to_string_lossy().starts_with(&prefix))
    .map(|job| job.path())
    .collect()
}

/// One sandbox's host side: a state dir and a workdir holding the probe,
/// owned by the sandbox's uid.
pub struct Jail {
    pub dir: tempfile::TempDir,
    pub uid: u32,
    pub limits: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Jail {
    pub fn new() -> Jail {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let uid = next_uid();
        let b = Jail {
            dir,
            uid,
            limits: Vec::new(),
            env: Vec::new(),
        };
        std::fs::create_dir(b.workdir()).expect("mkdir work");
        std::fs::create_dir(b.state_dir()).expect("mkdir state");
        std::fs::copy(probe_host(), b.workdir().join("probe.py")).expect("copy probe");
        std::os::unix::fs::chown(b.workdir(), Some(uid), Some(uid)).expect("chown work");
        b
    }

    pub fn limit(mut self, l: &str) -> Jail {
        self.limits.push(l.to_string());
        self
    }

    pub fn workdir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The `servo sandbox` command for `argv` (not started).
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new(servo_bin());
        cmd.arg("sandbox")
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--workdir")
            .arg(self.workdir())
            .arg("--uid")
            .arg(self.uid.to_string());
        for l in &self.limits {
            cmd.arg("--limit").arg(l);
        }
        cmd.arg("--").args(argv).stdin(Stdio::null());
        cmd.env_remove("SERVO_STATE_DIR");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `argv` in the sandbox.
    pub fn run(&self, argv: &[&str]) -> Outcome {
        run(self.command(argv))
    }

    /// Runs `probe.py CHECK ARGS...` in the sandbox.
    pub fn probe(&self, check: &str, args: &[&str]) -> Outcome {
        let mut argv = vec![PYTHON, PROBE_INSIDE, check];
        argv.extend_from_slice(args);
        self.run(&argv)
    }
}

/// `servo sandbox` keeps its prepared root pinned at `STATE/sandbox/root.mnt`
/// (a mount); unpinned here so that a temporary state dir can go.
pub fn unpin(state: &Path) {
    let pin = state.join("sandbox/root.mnt");
    let _ = nix::mount::umount2(&pin, nix::mount::MntFlags::MNT_DETACH);
}

impl Drop for Jail {
    fn drop(&mut self) {
        unpin(&self.state_dir());
    }
}

/// The probe script in the source tree.
pub fn probe_host() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/probe.py")
}

/// Runs the probe on the host as root, in `cwd`.
pub fn outside(cwd: &Path, check: &str, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(probe_host())
        .arg(check)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null());
    run(cmd)
}

/// Runs the probe as root in throwaway namespaces (for destructive actions).
pub fn outside_unshared(cwd: &Path, check: &str, args: &[&str]) -> Outcome {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount", "--uts", "--ipc", "--net", "--pid", "--fork", PYTHON,
    ])
    .arg(probe_host())
    .arg(check)
    .args(args)
    .current_dir(cwd)
    .stdin(Stdio::null());
    run(cmd)
}

/// Host processes whose command line contains `needle`: (pid, cmdline).
pub fn host_processes_with(needle: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    let me = std::process::id() as i32;
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&raw).replace('\0', " ");
            if text.contains(needle) {
                found.push((pid, text));
            }
        }
    }
    found
}

/// SIGKILLs the processes (by pid) that carry `needle`; they are the test's own.
pub fn kill_marked(needle: &str) {
    for (pid, _) in host_processes_with(needle) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The probe's verdict for a refusal with EPERM.
pub const EPERM: &str = "errno=1";

/// Fails with the guarantee's name and the probe's output.
#[track_caller]
pub fn check(cond: bool, guarantee: &str, what: &str, out: &Outcome) {
    assert!(cond, "SPEC {guarantee}: {what}\n{}", out.show());
}

/// The probe's verdict must be the expected one.
#[track_caller]
pub fn expect(out: &Outcome, verdict: &str, guarantee: &str, what: &str) {
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
pub fn is_errno(out: &Outcome, allowed: &[i32]) -> bool {
    allowed
        .iter()
        .any(|e| out.verdict() == format!("errno={e}"))
}
