//! Fault injection (issue 8): a real `servo serve` facing a portal that is
//! down, slow or talking nonsense, a full disk, SIGTERM and SIGKILL, clients
//! that vanish, scripts that close their output, huge bundles, and a short
//! load. After each: no run directory, mount, job cgroup or process is left.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use support::fake_portal::{Behaviour, FakePortal};
use support::*;

const LS_SCRIPT: &str = "from servo import servo\nwith servo(verbose=True) as proxy:\n    proxy('ls')\n    print('not reached')\n";

/// A uid range of our own per server, so leftover processes are ours to find
/// even when other suites run sandboxes on the same machine.
fn uid_range() -> (u32, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let base = 300_000 + (std::process::id() % 500) * 2_000 + n * 64;
    (base, format!("{base}-{}", base + 63))
}

/// Starts servo with its own uid range; returns the range's first uid.
fn start(extra: &[&str]) -> (Servo, u32) {
    start_in(tempfile::tempdir().expect("tempdir"), extra)
}

fn start_in(state: tempfile::TempDir, extra: &[&str]) -> (Servo, u32) {
    let (base, range) = uid_range();
    let mut args = vec!["--uid-range", range.as_str()];
    args.extend_from_slice(extra);
    (Servo::start_in(state, &args), base)
}

/// Processes inside this state dir's job cgroups, or running as one of its uids.
fn sandbox_processes(state: &Path, uid_base: u32) -> Vec<String> {
    let marks: Vec<String> = instance_cgroups(state)
        .iter()
        .filter_map(|d| {
            d.file_name()
                .map(|n| format!("/servo/{}/", n.to_string_lossy()))
        })
        .collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cgroups = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        let in_job = marks
            .iter()
            .any(|m| cgroups.lines().any(|l| l.contains(m.as_str())));
        if in_job || (uid_base..uid_base + 64).contains(&uid) {
            let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{name} uid={uid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    found
}

/// Mount points at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap_or(dir.to_path_buf());
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Asserts (after a bounded wait for clean-up to happen) that nothing of any
/// run is left: run directories, mounts, job cgroups with a process in
/// them, processes; empty job groups kept for reuse only up to their bound
/// (none once servo has stopped).
fn assert_no_leftovers(state: &Path, uid_base: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let runs = entries(&state.join("runs"));
        // Runs' mounts; servo's prepared root (sandbox/base) lives while it does.
        let mounts = mounts_under(&state.join("runs"));
        let idle_max = servo::sandbox::IDLE_GROUPS_MAX;
        let cgroups: Vec<String> = instance_cgroups(state)
            .iter()
            .flat_map(|d| {
                let jobs = job_groups_in(d);
                let busy = jobs.iter().filter(|j| !members_of(&d.join(j)).is_empty());
                let too_many = (jobs.len() > idle_max).then(|| {
                    format!(
                        "{} idle groups in {} (at most {idle_max})",
                        jobs.len(),
                        d.display()
                    )
                });
                busy.cloned().chain(too_many).collect::<Vec<_>>()
            })
            .collect();
        let procs = sandbox_processes(state, uid_base);
        if runs.is_empty() && mounts.is_empty() && cgroups.is_empty() && procs.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: runs {runs:?}, mounts {mounts:?}, cgroups {cgroups:?}, processes {procs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every audit line parses; returns the events.
fn audit_events(state: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(state.join("audit.log")).unwrap_or_default();
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("audit line {} is not JSON ({e}): {l:?}", i + 1))
        })
        .collect()
}

fn count(events: &[serde_json::Value], event: &str) -> usize {
    events.iter().filter(|e| e["event"] == event).count()
}

// ---------------------------------------------------------------- portal

/// A script's `proxy('ls')` against a portal that fails: the package's
/// "portal down" message, the run fails (412), servo stays healthy.
fn portal_failure_is_clean(portal: &str, extra: &[&str], why: &str) {
    let mut args = vec!["--portal", portal];
    args.extend_from_slice(extra);
    let (servo, uid_base) = start(&args);
    let b = bundle(&[("ls.py", LS_SCRIPT), ("hi.py", "print('hi')")]);
    let r = post_bundle(&servo, &b.tgz, "ls.py", &[]);
    assert_eq!(r.status, 412, "{}", r.body);
    let lines = r.lines();
    assert!(lines.contains(&"[failed] \"ls\""), "{}", r.body);
    let down = lines
        .iter()
        .find(|l| l.starts_with("failure -> is the portal down ?"))
        .unwrap_or_else(|| panic!("no portal-down line: {}", r.body));
    assert!(down.contains("portal unreachable"), "{down}");
    assert!(down.contains(why), "{down} should say {why}");
    assert!(!r.body.contains("not reached"));
    assert_eq!(
        lines.last(),
        Some(&"failure (ls.py failed on exit code 1)"),
        "{}",
        r.body
    );
    assert_eq!(servo.health().status, 200);
    assert_eq!(post_bundle(&servo, &b.tgz, "hi.py", &[]).status, 200);
    let events = audit_events(servo.state.path());
    // The command is on record before it is relayed (portal.command), and
    // its outcome after (portal.answered).
    assert!(events.iter().any(|e| e["event"] == "portal.command"));
    let answer = events
        .iter()
        .find(|e| e["event"] == "portal.answered")
        .expect("the outcome is audited");
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(
        count(&events, "run.started"),
        count(&events, "run.finished")
    );
    assert_no_leftovers(servo.state.path(), uid_base);
}

#[test]
fn portal_down_fails_the_run_cleanly() {
    if !require_root() {
        return;
    }
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    portal_failure_is_clean(&format!("http://127.0.0.1:{port}"), &[], "refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_portal_times_out_cleanly() {
    if !require_root() {
        return;
    }
    let portal = FakePortal::start(None).await;
    portal.set(|s| s.behaviour = Behaviour::Slow(Duration::from_secs(30)));
    let url = portal.url.clone();
    tokio::task::spawn_blocking(move || {
        portal_failure_is_clean(&url, &["--portal-timeout-s", "1"], "no answer within 1 s")
    })
    .await
    .expect("test thread");
    assert_eq!(portal.requests().len(), 1, "the command reached the portal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_answering_garbage_fails_cleanly() {
    if !require_root() {
        return;
    }
    let portal = FakePortal::start(None).await;
    portal.set(|s| s.behaviour = Behaviour::Garbage);
    let url = portal.url.clone();
    tokio::task::spawn_blocking(move || {
        portal_failure_is_clean(&url, &[], "not its JSON");
    })
    .await
    .expect("test thread");
}

// ---------------------------------------------------------------- disk full

/// A `TempDir`-shaped handle on a directory inside the small fs, so that
/// `Servo` can use it as its state dir.
fn state_on(fs: &SmallFs) -> tempfile::TempDir {
    tempfile::tempdir_in(fs.path()).expect("state dir on the small fs")
}

#[test]
fn upload_larger_than_the_free_space_is_refused_cleanly() {
    if !require_root() {
        return;
    }
    let fs = SmallFs::mount("8m");
    let (servo, uid_base) = start_in(state_on(&fs), &[]);
    let free_before = fs.free();
    let big = tempfile::tempdir().expect("tempdir");
    let tgz = big.path().join("big.tgz");
    random_file(&tgz, 12 * 1024 * 1024);
    let sig = openssl_sign(&tgz, TOKEN);
    let r = post_gzip(&servo, &tgz, "a.py", &sig);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("no space left"), "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_no_leftovers(servo.state.path(), uid_base);
    assert!(
        fs.free() + 64 * 1024 >= free_before,
        "the partial upload still takes space"
    );
    // Nothing was run, and servo is fine.
    let events = audit_events(servo.state.path());
    assert_eq!(count(&events, "run.started"), 0);
    assert_eq!(count(&events, "request.rejected"), 1);
    assert_eq!(servo.health().status, 200);
    let b = bundle(&[("a.py", "print('fits')")]);
    let ok = post_bundle(&servo, &b.tgz, "a.py", &[]);
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[test]
fn unpacking_on_a_small_disk_fails_or_runs_cleanly() {
    if !require_root() {
        return;
    }
    let fs = SmallFs::mount("8m");
    let (servo, uid_base) = start_in(
        state_on(&fs),
        &["--limit", "unpacked_mib=4", "--limit", "work_mib=1"],
    );
    // A gzip bomb: 64 MiB of zeros, a few KiB compressed. It stops at the
    // unpack limit; the state dir's small disk never sees it.
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    write_files(&src, &[("a.py", "print('never')")]);
    let zeros = std::fs::File::create(src.join("zeros")).expect("zeros");
    zeros.set_len(64 * 1024 * 1024).expect("sparse zeros");
    let bomb = pack(dir, &src);
    let r = post_bundle(&servo, &bomb.tgz, "a.py", &[]);
    assert_eq!(r.status, 412, "{}", r.body);
    let last = r.lines().last().map(|l| l.to_string()).unwrap_or_default();
    assert!(
        last.starts_with("failure (unsafe archive entry zeros"),
        "{last}"
    );
    assert!(!r.body.contains("never"));
    assert_no_leftovers(servo.state.path(), uid_base);

    // Many tiny files: each takes a page of the run's volume although the
    // unpack limit counts bytes; the volume must have room for them.
    let names: Vec<String> = (0..1500).map(|i| format!("f{i}")).collect();
    let mut files: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
    files.push((
        "count.py",
        "import os\nprint('files', len(os.listdir('.')))\nopen('out.txt', 'w').write('x' * 4096)\n",
    ));
    let many = bundle(&files);
    let r = post_bundle(&servo, &many.tgz, "count.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("files 1501"), "{}", r.body);
    assert_no_leftovers(servo.state.path(), uid_base);
    assert_eq!(servo.health().status, 200);
}

#[test]
fn a_full_audit_log_refuses_runs_until_it_has_room() {
    if !require_root() {
        return;
    }
    let fs = SmallFs::mount("1m");
    let audit = fs.path().join("audit.log");
    let (servo, uid_base) = start(&["--audit", audit.to_str().expect("utf-8")]);
    let b = bundle(&[("a.py", "print('audited')")]);
    assert_eq!(post_bundle(&servo, &b.tgz, "a.py", &[]).status, 200);
    fs.fill("filler");

    // Rejected requests still try to write their record; the page the log
    // already has fills up, then a write fails part-way.
    let url = format!("{}/run/a.py", servo.url);
    let mut refused = None;
    for _ in 0..200 {
        let r = curl(&url, &["-X", "POST", "-H", "X-Signature: sha1=00"]);
        assert_eq!(r.status, 403, "{}", r.body);
        if servo.health().status == 503 {
            refused = Some(());
            break;
        }
    }
    assert!(refused.is_some(), "the audit log never filled up");
    let h = servo.health();
    assert_eq!(h.json()["audit"], "failing");
    let r = post_bundle(&servo, &b.tgz, "a.py", &[]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("audit log"), "{}", r.body);
    assert!(r.header("retry-after").is_some());

    // Room again: the next record gets through and runs are accepted.
    std::fs::remove_file(fs.path().join("filler")).expect("rm filler");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = post_bundle(&servo, &b.tgz, "a.py", &[]);
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(Instant::now() < deadline, "runs stay refused");
    }
    assert_eq!(servo.health().status, 200);
    // Every line of the log parses: a half-written record was taken back.
    let text = std::fs::read_to_string(&audit).expect("audit");
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {line:?}"));
        assert!(v["event"].is_string());
    }
    assert!(text.ends_with('\n'));
    assert_no_leftovers(servo.state.path(), uid_base);
}

// ---------------------------------------------------------------- signals

#[test]
fn sigterm_drains_runs_refuses_connections_and_exits_zero() {
    if !require_root() {
        return;
    }
    let (mut servo, uid_base) = start(&[]);
    let b = bundle(&[("slow.py", "import time\ntime.sleep(3)\nprint('drained')")]);
    let client = spawn_post(&servo, &b.tgz, "slow.py", &["-w", "\n%{http_code}"]);
    wait_in_flight(&servo, 1);
    let addr = servo.url.trim_start_matches("http://").to_string();
    let pid = nix::unistd::Pid::from_raw(servo.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !servo.stderr().contains("no new connections") {
        assert!(Instant::now() < deadline, "no drain message");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        TcpStream::connect(&addr).is_err(),
        "a new connection was accepted while draining"
    );
    let out = client.wait_with_output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("drained"), "{text}\n{}", servo.stderr());
    assert!(text.trim_end().ends_with("200"), "{text}");
    let status = servo.terminate();
    assert_eq!(status.code(), Some(0), "{}", servo.stderr());
    let events = audit_events(servo.state.path());
    assert_eq!(count(&events, "run.finished"), 1);
    assert_no_leftovers(servo.state.path(), uid_base);
    assert_no_groups_after_stop(servo.state.path());
    // Nothing of servo stays mounted once it has exited: not the runs
    // tmpfs, not the prepared root.
    let state = std::fs::canonicalize(servo.state.path()).expect("state dir");
    let mounted: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| std::path::Path::new(p).starts_with(&state))
        .map(str::to_string)
        .collect();
    assert!(mounted.is_empty(), "still mounted: {mounted:?}");
}

/// A server with a run going (a script that sleeps `seconds`, then prints
/// `word`), the curl posting it, and its bundle (kept while curl reads it).
fn start_with_a_slow_run(seconds: u32, word: &str) -> (Servo, u32, std::process::Child, Bundle) {
    let (servo, uid_base) = start(&[]);
    let script = format!("import time\ntime.sleep({seconds})\nprint('{word}')");
    let b = bundle(&[("slow.py", script.as_str())]);
    let client = spawn_post(&servo, &b.tgz, "slow.py", &["-w", "\n%{http_code}"]);
    (servo, uid_base, client, b)
}

/// The run of `start_with_a_slow_run` answered 200 with its output; then
/// the server stops cleanly and leaves nothing.
fn assert_the_run_was_untouched(
    client: std::process::Child,
    word: &str,
    servo: &mut Servo,
    uid_base: u32,
    context: &str,
) {
    let out = client.wait_with_output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(word) && text.trim_end().ends_with("200"),
        "the first servo's run was harmed:\n{text}\n{}\n{context}",
        servo.stderr()
    );
    assert_eq!(servo.terminate().code(), Some(0), "{}", servo.stderr());
    assert_no_leftovers(servo.state.path(), uid_base);
    assert_no_groups_after_stop(servo.state.path());
}

/// A stopped servo removed every group it kept for reuse, and its own.
fn assert_no_groups_after_stop(state: &Path) {
    let left: Vec<PathBuf> = instance_cgroups(state)
        .into_iter()
        .filter(|d| d.exists())
        .collect();
    assert!(left.is_empty(), "groups outlived servo: {left:?}");
}

#[test]
fn a_second_servo_on_the_same_state_dir_is_refused() {
    if !require_root() {
        return;
    }
    let (mut first, uid_base, client, _bundle) = start_with_a_slow_run(2, "untouched");
    wait_in_flight(&first, 1);
    let state = first.state.path().to_str().expect("utf-8 path").to_string();
    let (_, range) = uid_range();
    let mut second = Command::new(servo_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir", &state])
        .args(["--token", TOKEN, "--uid-range", &range])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("servo");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second servo on the same state dir was not refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut why = String::new();
    let _ = std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut why);
    assert!(!status.success(), "the second servo exited 0:\n{why}");
    let holder = format!("pid {}", first.child.id());
    assert!(
        why.contains("another servo") && why.contains(&holder) && why.contains("--state-dir"),
        "the refusal must say who holds the state dir and what to do:\n{why}"
    );
    assert_eq!(first.health().status, 200, "{}", first.stderr());
    assert_the_run_was_untouched(client, "untouched", &mut first, uid_base, &why);
    // Once the first has stopped, the state dir is free again.
    let state = std::mem::replace(&mut first.state, tempfile::tempdir().expect("tempdir"));
    let (mut again, _) = start_in(state, &[]);
    assert_eq!(again.terminate().code(), Some(0), "{}", again.stderr());
}

#[test]
fn a_servo_on_the_same_state_path_elsewhere_leaves_running_jobs_alone() {
    if !require_root() {
        return;
    }
    // Two containers sharing the host's cgroups, each with its own state dir
    // at the same path (the default one): the second's start-up sweep of
    // leftover job cgroups must not kill the first's running job.
    let (mut first, uid_base, client, _bundle) = start_with_a_slow_run(3, "survived");
    let deadline = Instant::now() + Duration::from_secs(20);
    while job_cgroups(first.state.path()).is_empty() {
        assert!(Instant::now() < deadline, "the job's cgroup never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let state = first.state.path().to_str().expect("utf-8 path").to_string();
    let (_, range) = uid_range();
    let log_dir = tempfile::tempdir().expect("tempdir");
    let log = log_dir.path().join("second.stderr");
    let mut second = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs servo-test "$0" && exec "$@""#)
        .arg(&state)
        .arg(servo_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir", &state])
        .args(["--token", TOKEN, "--uid-range", &range])
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("unshare");
    let deadline = Instant::now() + Duration::from_secs(30);
    let second_log = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening on") {
            break text;
        }
        if let Ok(Some(status)) = second.try_wait() {
            panic!("the second servo exited with {status}:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "the second servo did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid = nix::unistd::Pid::from_raw(second.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = second.wait();
    assert_the_run_was_untouched(client, "survived", &mut first, uid_base, &second_log);
}

#[test]
fn sigterm_right_after_listening_stops_cleanly() {
    if !require_root() {
        return;
    }
    // "listening on" is what callers wait for (systemd, scripts, these
    // tests): SIGTERM at once must already find servo's handler, not the
    // default action, which left the runs tmpfs and the prepared root
    // mounted (seen about once per test-suite run before the fix).
    for round in 0..10 {
        let state = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(servo_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN])
            .arg("--state-dir")
            .arg(state.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("servo");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        let mut log = String::new();
        for line in lines.by_ref() {
            let line = line.expect("stderr");
            log += &line;
            log += "\n";
            if line.contains("listening on") {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
                break;
            }
        }
        log.extend(lines.map_while(Result::ok).map(|l| l + "\n"));
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(0), "round {round}: {status:?}\n{log}");
        let left = mounts_under(state.path());
        assert!(
            left.is_empty(),
            "round {round}: still mounted: {left:?}\n{log}"
        );
        // Its cgroups too, the cpu group its start-up self-test ran in included.
        let groups: Vec<_> = instance_cgroups(state.path())
            .into_iter()
            .filter(|g| g.exists())
            .collect();
        assert!(groups.is_empty(), "round {round}: left {groups:?}\n{log}");
    }
}

#[test]
fn sigkill_mid_run_then_restart_leaves_nothing_behind() {
    if !require_root() {
        return;
    }
    let (mut servo, uid_base) = start(&[]);
    let b = bundle(&[(
        "stuck.py",
        "import subprocess, time\nsubprocess.Popen(['sleep', '120'])\nprint('stuck', flush=True)\ntime.sleep(120)\n",
    )]);
    let mut client = spawn_post(&servo, &b.tgz, "stuck.py", &["-w", "\n%{http_code}"]);
    let state = servo.state.path().to_path_buf();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sandbox_processes(&state, uid_base)
        .iter()
        .any(|p| p.contains("sleep 120"))
    {
        assert!(Instant::now() < deadline, "the script never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !mounts_under(&state.join("runs")).is_empty(),
        "the run has its volume"
    );
    // The run directories are on servo's own tmpfs, not the state dir's disk.
    let runs = std::fs::canonicalize(state.join("runs")).expect("runs dir");
    let runs_fs = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').nth(4) == runs.to_str())
        .filter_map(|l| l.split(" - ").nth(1)?.split(' ').next().map(str::to_string))
        .next_back();
    assert_eq!(runs_fs.as_deref(), Some("tmpfs"));
    servo.child.kill().expect("SIGKILL");
    servo.child.wait().expect("reap");
    let _ = client.kill();
    let _ = client.wait();

    // Restart on the same state dir.
    let state_dir = std::mem::replace(&mut servo.state, tempfile::tempdir().expect("tempdir"));
    drop(servo);
    let (base_args, range) = (uid_base, format!("{uid_base}-{}", uid_base + 63));
    let servo = Servo::start_in(state_dir, &["--uid-range", range.as_str()]);
    assert_no_leftovers(servo.state.path(), base_args);

    // The audit log parses to its last line; the interrupted run is closed.
    let events = audit_events(servo.state.path());
    let started: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "run.started")
        .collect();
    assert_eq!(started.len(), 1);
    let finished: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "run.finished")
        .collect();
    assert_eq!(finished.len(), 1, "{events:?}");
    assert_eq!(finished[0]["run"], started[0]["run"]);
    assert_eq!(finished[0]["tenant"], "default");
    assert_eq!(finished[0]["ok"], false);
    assert!(
        finished[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("interrupted")),
        "{}",
        finished[0]
    );
    let ok = bundle(&[("a.py", "print('after restart')")]);
    let r = post_bundle(&servo, &ok.tgz, "a.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_no_leftovers(servo.state.path(), base_args);
}

// ---------------------------------------------------------------- clients

/// The head of a raw upload of 1 MiB (a syntactically valid signature, so
/// servo reads the body before it can check it).
fn upload_head(addr: &str) -> String {
    format!(
        "POST /run/a.py HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/gzip\r\n\
         Content-Length: 1048576\r\nX-Signature: sha1={}\r\n\r\n",
        "0".repeat(40)
    )
}

#[test]
fn client_gone_mid_upload_leaves_nothing_and_runs_nothing() {
    if !require_root() {
        return;
    }
    let (servo, uid_base) = start(&[]);
    let addr = servo.url.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream
        .write_all(upload_head(&addr).as_bytes())
        .expect("head");
    stream
        .write_all(&vec![7u8; 256 * 1024])
        .expect("half a body");
    stream.flush().expect("flush");
    let runs = servo.state.path().join("runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while entries(&runs).is_empty() {
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stream);
    assert_no_leftovers(servo.state.path(), uid_base);
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&audit_events(servo.state.path()), "request.rejected") == 0 {
        assert!(
            Instant::now() < deadline,
            "the aborted upload is not audited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count(&audit_events(servo.state.path()), "run.started"), 0);
    assert_eq!(servo.health().json()["queue"], 0);
}

#[test]
fn a_connection_cap_below_the_queue_is_refused_at_start() {
    let why = refused_at_start(&[
        "--max-runs",
        "2",
        "--max-queue",
        "8",
        "--max-connections",
        "10",
    ]);
    assert!(
        why.contains("--max-connections (10) must be more than --max-runs + --max-queue (10)"),
        "{why}"
    );
}

/// `servo serve` with `flags` must exit 2 before listening: its stderr.
fn refused_at_start(flags: &[&str]) -> String {
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new(servo_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN])
        .args(flags)
        .arg("--state-dir")
        .arg(state.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("servo");
    let why = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{why}");
    why
}

#[test]
fn worker_threads_zero_is_refused_and_any_count_serves() {
    let why = refused_at_start(&["--worker-threads", "0"]);
    assert!(why.contains("--worker-threads must be at least 1"), "{why}");
    // One worker (the default on 2 cores) and more than the cores both run
    // scripts, several at once.
    let b = bundle(&[("hi.py", "import time; time.sleep(0.3); print('hi')")]);
    for workers in ["1", "5"] {
        let servo = Servo::start(&["--worker-threads", workers]);
        let runs: Vec<Reply> = std::thread::scope(|scope| {
            let posts: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| post_bundle(&servo, &b.tgz, "hi.py", &[])))
                .collect();
            posts.into_iter().map(|p| p.join().expect("post")).collect()
        });
        for r in runs {
            assert_eq!(r.status, 200, "--worker-threads {workers}: {}", r.body);
        }
    }
}

/// What `stream` sends until it closes, or until `wait` has passed.
fn read_for(stream: &mut TcpStream, wait: Duration) -> (String, bool) {
    use std::io::Read;
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

#[test]
fn clients_that_stall_are_cut_off_and_leave_nothing() {
    if !require_root() {
        return;
    }
    let (servo, uid_base) = start(&["--request-timeout-s", "1"]);
    let addr = servo.url.trim_start_matches("http://").to_string();
    // Headers that never end.
    let mut headers = TcpStream::connect(&addr).expect("connect");
    headers
        .write_all(format!("POST /run/a.py HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .expect("half a head");
    // A body that stops coming.
    let mut body = TcpStream::connect(&addr).expect("connect");
    body.write_all(upload_head(&addr).as_bytes()).expect("head");
    body.write_all(&[7u8; 4096]).expect("some of the body");
    let (answer, _) = read_for(&mut body, Duration::from_secs(10));
    assert!(
        answer.starts_with("HTTP/1.1 408")
            && answer.contains("the upload stalled: no data for 1 s"),
        "a stalled upload must be answered 408 with a sentence, got: {answer:?}"
    );
    let (said, closed) = read_for(&mut headers, Duration::from_secs(10));
    assert!(
        closed,
        "a connection whose headers never end must be closed (got {said:?})"
    );
    assert_no_leftovers(servo.state.path(), uid_base);
    let rejected: Vec<_> = audit_events(servo.state.path())
        .into_iter()
        .filter(|e| e["event"] == "request.rejected")
        .collect();
    assert!(
        rejected
            .iter()
            .any(|e| e.to_string().contains("the upload stalled")),
        "the stalled upload is not audited: {rejected:?}"
    );
    assert_eq!(servo.health().status, 200);
    assert_eq!(servo.health().json()["queue"], 0);
}

#[test]
fn connections_over_the_limit_are_closed_at_once_and_the_limit_frees() {
    if !require_root() {
        return;
    }
    let (servo, uid_base) = start(&[
        "--max-connections",
        "2",
        "--max-runs",
        "1",
        "--max-queue",
        "0",
    ]);
    let addr = servo.url.trim_start_matches("http://").to_string();
    // Two connections that hold their places (headers not finished).
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).expect("connect");
            c.write_all(b"GET /health HTTP/1.1\r\n")
                .expect("half a head");
            c
        })
        .collect();
    // Accepted in order: give servo a moment to take both.
    std::thread::sleep(Duration::from_millis(300));
    let mut third = TcpStream::connect(&addr).expect("connect");
    third
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("a whole request");
    let (answer, closed) = read_for(&mut third, Duration::from_secs(5));
    assert!(
        closed && answer.is_empty(),
        "a connection over --max-connections must be closed at once, unanswered (got {answer:?})"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !servo.stderr().contains("the --max-connections limit") {
        assert!(
            Instant::now() < deadline,
            "the refusal must be logged:\n{}",
            servo.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // One place freed: servo answers again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    while servo.health().status != 200 {
        assert!(Instant::now() < deadline, "servo did not answer again");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(held);
    assert_no_leftovers(servo.state.path(), uid_base);
}

#[test]
fn servo_raises_its_soft_open_files_limit_to_the_hard_one() {
    if !require_root() {
        return;
    }
    let state = tempfile::tempdir().expect("tempdir");
    let log = state.path().join("servo.stderr");
    let (_, range) = uid_range();
    let mut servo = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 256 && ulimit -Hn 4096 && exec "$@""#)
        .arg("sh")
        .arg(servo_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN])
        .arg("--state-dir")
        .arg(state.path())
        .args(["--uid-range", &range])
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("sh");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("listening on")
    {
        assert!(Instant::now() < deadline, "servo did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", servo.id())).expect("limits");
    let pid = nix::unistd::Pid::from_raw(servo.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = servo.wait();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files")
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!(open_files, ["4096", "4096"], "{limits}");
}

#[test]
fn client_gone_mid_run_the_run_finishes_and_is_audited() {
    if !require_root() {
        return;
    }
    let (servo, uid_base) = start(&[]);
    let b = bundle(&[(
        "slow.py",
        "import time\ntime.sleep(2)\nopen('x', 'w').write('x')\nprint('finished anyway')",
    )]);
    let tgz = std::fs::read(&b.tgz).expect("tgz");
    let sig = openssl_sign(&b.tgz, TOKEN);
    let addr = servo.url.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    let head = format!(
        "POST /run/slow.py HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/gzip\r\n\
         Content-Length: {}\r\nX-Signature: {sig}\r\n\r\n",
        tgz.len()
    );
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(&tgz).expect("body");
    wait_in_flight(&servo, 1);
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = audit_events(servo.state.path());
        if let Some(f) = events.iter().find(|e| e["event"] == "run.finished") {
            assert_eq!(f["ok"], true, "{f}");
            break;
        }
        assert!(Instant::now() < deadline, "the run was not finished");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_in_flight(&servo, 0);
    assert_no_leftovers(servo.state.path(), uid_base);
}

// ---------------------------------------------------------------- scripts

#[test]
fn a_script_that_closes_its_output_is_waited_for() {
    if !require_root() {
        return;
    }
    let (servo, uid_base) = start(&["--limit", "script_timeout_s=5"]);
    let b = bundle(&[
        (
            "closer.py",
            "import os, time\nprint('closing', flush=True)\nos.close(1)\nos.close(2)\ntime.sleep(3)\nopen('done.txt', 'w').write('yes')\n",
        ),
        ("check.py", "print('done:', open('done.txt').read())"),
        (
            "fails.py",
            "import os, sys, time\nos.close(1)\nos.close(2)\ntime.sleep(1)\nsys.exit(5)\n",
        ),
        (
            "hangs.py",
            "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)\n",
        ),
    ]);
    let r = post_bundle(&servo, &b.tgz, "closer.py+check.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("done: yes"), "{}", r.body);
    let ran = r
        .lines()
        .into_iter()
        .find_map(|l| l.strip_prefix("closer.py ran in "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("ran-in line");
    assert!(ran >= 3, "the run did not wait for the script: {}", r.body);

    let r = post_bundle(&servo, &b.tgz, "fails.py", &[]);
    assert_eq!(r.status, 412, "{}", r.body);
    assert_eq!(
        r.lines().last(),
        Some(&"failure (fails.py failed on exit code 5)")
    );
    let r = post_bundle(&servo, &b.tgz, "hangs.py", &[]);
    assert_eq!(r.status, 412, "{}", r.body);
    assert_eq!(
        r.lines().last(),
        Some(&"failure (hangs.py timed out after 5 seconds)")
    );
    assert_no_leftovers(servo.state.path(), uid_base);
}

#[test]
fn a_bundle_of_ten_thousand_tiny_files_runs() {
    if !require_root() {
        return;
    }
    let (servo, uid_base) = start(&[]);
    // 9,999 files + the script = 10,000 entries, the default limit.
    let names: Vec<String> = (0..9_999).map(|i| format!("t{i:05}")).collect();
    let mut files: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
    files.push((
        "count.py",
        "import os\nprint('entries', len(os.listdir('.')))",
    ));
    let b = bundle(&files);
    let r = post_bundle(&servo, &b.tgz, "count.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("entries 10000"), "{}", r.body);
    assert_no_leftovers(servo.state.path(), uid_base);

    // One more is over the limit.
    let src = b.dir.path().join("src");
    std::fs::write(src.join("extra"), "x").expect("extra");
    let more = pack(b.dir, &src);
    let r = post_bundle(&servo, &more.tgz, "count.py", &[]);
    assert_eq!(r.status, 412, "{}", r.body);
    let last = r.lines().last().map(|l| l.to_string()).unwrap_or_default();
    assert!(last.starts_with("failure (unsafe archive entry"), "{last}");
    assert_no_leftovers(servo.state.path(), uid_base);
}

// ---------------------------------------------------------------- load

fn proc_fds(pid: u32) -> usize {
    entries(Path::new(&format!("/proc/{pid}/fd"))).len()
}

fn proc_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The load mix of `bench/load`, small: 16 clients for about 5 s posting
/// good runs, bad signatures, oversized uploads and failing scripts.
#[test]
fn short_load_keeps_the_invariants() {
    if !require_root() {
        return;
    }
    let (servo, uid_base) = start(&["--max-upload", "65536", "--max-queue", "8"]);
    let pid = servo.child.id();
    let b = bundle(&[("ok.py", "print('hi')"), ("fail.py", "raise SystemExit(3)")]);
    let big = tempfile::tempdir().expect("tempdir");
    let big_tgz = big.path().join("big.tgz");
    random_file(&big_tgz, 200 * 1024);
    // Warm up, then take the baseline.
    assert_eq!(post_bundle(&servo, &b.tgz, "ok.py", &[]).status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let (fds_before, rss_before) = (proc_fds(pid), proc_rss_kib(pid));

    let stop = Instant::now() + Duration::from_secs(5);
    let url = servo.url.clone();
    let sig = openssl_sign(&b.tgz, TOKEN);
    let big_sig = openssl_sign(&big_tgz, TOKEN);
    let statuses: Vec<Vec<(u8, u16)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16u8)
            .map(|client| {
                let (url, sig, big_sig) = (&url, &sig, &big_sig);
                let (tgz, big_tgz) = (&b.tgz, &big_tgz);
                s.spawn(move || {
                    let mut seen = Vec::new();
                    let mut i = client as usize;
                    // Bounded in count as well as time.
                    while Instant::now() < stop && seen.len() < 200 {
                        let kind = (i % 4) as u8;
                        i += 1;
                        let (script, file, signature) = match kind {
                            0 => ("ok.py", tgz, sig.clone()),
                            1 => ("ok.py", tgz, format!("sha1={}", "ab".repeat(20))),
                            2 => ("ok.py", big_tgz, big_sig.clone()),
                            _ => ("fail.py", tgz, sig.clone()),
                        };
                        let r = curl(
                            &format!("{url}/run/{script}"),
                            &[
                                "-X",
                                "POST",
                                "-F",
                                &format!("tgz=@{}", file.display()),
                                "-H",
                                &format!("X-Signature:{signature}"),
                            ],
                        );
                        seen.push((kind, r.status));
                    }
                    seen
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    let all: Vec<(u8, u16)> = statuses.into_iter().flatten().collect();
    assert!(!all.is_empty());
    for (kind, status) in &all {
        let expected: &[u16] = match kind {
            0 => &[200, 503],
            1 => &[403, 503],
            2 => &[413, 503],
            _ => &[412, 503],
        };
        assert!(
            expected.contains(status),
            "request kind {kind} got {status}"
        );
    }
    assert!(all.iter().any(|(k, s)| *k == 0 && *s == 200));

    wait_in_flight(&servo, 0);
    let events = audit_events(servo.state.path());
    let accepted = all.iter().filter(|(_, s)| [200, 412].contains(s)).count() + 1;
    assert_eq!(count(&events, "run.started"), accepted);
    assert_eq!(count(&events, "run.finished"), accepted);
    // Descriptors and memory come back (bounded wait for closes to land).
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_fds(pid) > fds_before + 2 {
        assert!(
            Instant::now() < deadline,
            "fds: {fds_before} before, {} after",
            proc_fds(pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_after = proc_rss_kib(pid);
    assert!(
        rss_after <= rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert_eq!(servo.health().status, 200);
    assert_no_leftovers(servo.state.path(), uid_base);
}

/// A run is answered only once its sandbox is gone: the init's report
/// arrives before its exit has taken its processes and namespaces down,
/// and the server waits for the rest beside its last audit record. A
/// daemon holding 256 MiB, its output closed so that the log ends without
/// it, makes that exit long (~20 ms to free its memory once killed), so an
/// answer sent on the report alone would find it still there.
#[test]
fn a_run_is_answered_once_its_sandbox_is_gone() {
    if !require_root() {
        return;
    }
    let (servo, uid_base) = start(&[]);
    let daemon = "import os, time\n\
        r, w = os.pipe()\n\
        if os.fork() == 0:\n\
        \x20   os.setsid()\n\
        \x20   null = os.open('/dev/null', os.O_WRONLY)\n\
        \x20   os.dup2(null, 1)\n\
        \x20   os.dup2(null, 2)\n\
        \x20   held = bytearray(256 << 20)\n\
        \x20   for i in range(0, len(held), 4096):\n\
        \x20       held[i] = 1\n\
        \x20   os.write(w, b'x')\n\
        \x20   time.sleep(3600)\n\
        os.read(r, 1)\n\
        print('daemon holds its memory')\n";
    let b = bundle(&[("daemon.py", daemon)]);
    for _ in 0..3 {
        let r = post_bundle(&servo, &b.tgz, "daemon.py", &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("daemon holds its memory"), "{}", r.body);
        let left = sandbox_processes(servo.state.path(), uid_base);
        assert!(left.is_empty(), "answered while these ran: {left:?}");
    }
    assert_no_leftovers(servo.state.path(), uid_base);
}
