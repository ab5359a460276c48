//! Concurrency groups and several servo instances (SPEC §11), end to end:
//! real `servo serve` processes (one, or two sharing a real ZooKeeper from
//! Debian's package), bundles packed by `tar`, signed by `openssl` (sha1 and
//! v2, the v2 text built here by hand), posted by `curl`. Scripts print
//! the time when they start and end, so overlaps and order are read from
//! their logs. Like the other end-to-end tests these need root, and fail
//! (never skip) when CI=true.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::streaming::Streaming;
use support::zookeeper::ZooKeeper;
use support::*;

const TOKEN_A: &str = "team-a-token-0123456789abcdef";
const TOKEN_C: &str = "team-c-token-fedcba9876543210";

/// Tenant `a` (default group `prod`, giving up after `wait_s`) and tenant
/// `c` (one run at a time, across instances).
fn tenants_file(dir: &Path, wait_s: u64) -> PathBuf {
    let path = dir.join("tenants.json");
    let text = format!(
        r#"{{"tenants": [
  {{"name": "a", "token": "{TOKEN_A}", "concurrency": "prod", "concurrency_wait_s": {wait_s}}},
  {{"name": "c", "token": "{TOKEN_C}", "limits": {{"concurrent_runs": 1}}}}
]}}"#
    );
    std::fs::write(&path, text).expect("write tenants file");
    path
}

/// A v2-signed request as tenant `tenant` (fresh timestamp), naming `group`.
fn post_v2(
    servo: &Servo,
    tgz: &Path,
    script: &str,
    tenant: &str,
    token: &str,
    group: Option<&str>,
) -> Reply {
    let ts = now();
    let sig = openssl_v2(
        token,
        ts,
        &format!("/run/{script}"),
        tenant,
        group,
        &[],
        tgz,
    );
    let ts_header = format!("X-Servo-Timestamp: {ts}");
    let tenant_header = format!("X-Tenant: {tenant}");
    let group_header = group.map(|g| format!("X-Servo-Concurrency: {g}"));
    let mut extra = vec!["-H", &ts_header, "-H", &tenant_header];
    if let Some(h) = &group_header {
        extra.extend(["-H", h.as_str()]);
    }
    post_signed(servo, tgz, script, &sig, &extra)
}

/// A legacy (sha1=) run of the default tenant in `group`.
fn grouped(servo: &Servo, tgz: &Path, script: &str, group: &str) -> Streaming {
    let header = format!("X-Servo-Concurrency: {group}");
    Streaming::start(
        servo,
        tgz,
        script,
        &openssl_sign(tgz, TOKEN),
        &["-H", &header],
    )
}

/// A script that prints `START <time>`, sleeps `secs`, prints `END <time>`.
fn timed(secs: f64) -> Bundle {
    bundle(&[(
        "timed.py",
        &format!(
            "import time\nprint('START %.6f' % time.time(), flush=True)\ntime.sleep({secs})\nprint('END %.6f' % time.time(), flush=True)\n"
        ),
    )])
}

/// The (start, end) times a `timed` run printed.
fn span(lines: &[String]) -> (f64, f64) {
    let time = |prefix: &str| -> f64 {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {lines:?}"))
            .trim()
            .parse()
            .expect("a time")
    };
    (time("START "), time("END "))
}

/// Runs in the order given never overlapped, and ran in that order.
fn assert_one_after_another(spans: &[(f64, f64)]) {
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "runs overlapped or ran out of order: {spans:?}"
        );
    }
}

fn health(servo: &Servo) -> Value {
    curl(&format!("{}/health", servo.url), &[]).json()
}

/// Waits (bounded) until `/health`'s cluster says `coordination` (and,
/// when given, `instances`).
fn wait_cluster(servo: &Servo, coordination: &str, instances: Option<u64>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = health(servo);
        let cluster = &h["cluster"];
        if cluster["coordination"] == coordination
            && instances.is_none_or(|n| cluster["instances"] == n)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cluster never became {coordination} ({instances:?}): {h}\n{}",
            servo.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------ one instance

#[test]
fn a_group_runs_one_at_a_time_in_arrival_order() {
    if !require_root() {
        return;
    }
    let servo = Servo::start(&[]);
    assert_eq!(health(&servo)["cluster"]["coordination"], "local");
    // (The first runs long enough for the others to arrive and wait, even
    // on a loaded machine.)
    let (long, short) = (timed(4.0), timed(0.3));
    let mut first = grouped(&servo, &long.tgz, "timed.py", "deploy");
    first.until("START ");
    // The second waits, says for whom, live; the third arrives after it.
    let mut second = grouped(&servo, &short.tgz, "timed.py", "deploy");
    let waiting = second.until("waiting for concurrency group deploy (held by run ");
    let mut third = grouped(&servo, &short.tgz, "timed.py", "deploy");
    third.until("waiting for concurrency group deploy");
    let metrics = curl(&format!("{}/metrics", servo.url), &[]).body;
    assert!(
        metrics.contains("\nservo_concurrency_waiting 2\n"),
        "{metrics}"
    );
    // Another group, and a run outside groups, do not wait.
    let other = grouped(&servo, &short.tgz, "timed.py", "other-group.1");
    let (done, lines) = other.finish();
    assert_eq!(done["ok"], 1, "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("waiting")), "{lines:?}");
    let r = post_bundle(&servo, &short.tgz, "timed.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("waiting"), "{}", r.body);

    let mut spans = Vec::new();
    let mut ids = Vec::new();
    for run in [first, second, third] {
        let (done, lines) = run.finish();
        assert_eq!(done["ok"], 1, "{lines:?}");
        spans.push(span(&lines));
        ids.push(done["run"].as_str().expect("run id").to_string());
    }
    assert_one_after_another(&spans);
    // `... (held by run <id> since <RFC 3339 time>)`
    let rest = waiting
        .strip_prefix("waiting for concurrency group deploy (held by run ")
        .expect("prefix");
    let (holder, since) = rest.split_once(" since ").expect("since");
    assert_eq!(holder, ids[0]);
    assert!(since.ends_with("Z)") && since.contains('T'), "{waiting}");

    let metrics = curl(&format!("{}/metrics", servo.url), &[]).body;
    assert!(
        metrics.contains("\nservo_concurrency_waiting 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nservo_concurrency_wait_seconds_count 4\n"),
        "{metrics}"
    );
    let waits: Vec<Value> = servo
        .audit()
        .into_iter()
        .filter(|r| r["event"] == "run.waiting")
        .collect();
    assert_eq!(waits.len(), 2, "{waits:?}");
    assert_eq!(waits[0]["run"], ids[1]);
    assert_eq!(waits[0]["group"], "deploy");
    assert_eq!(waits[0]["holder"], ids[0]);
    let started = servo
        .audit()
        .into_iter()
        .find(|r| r["event"] == "run.started" && r["run"] == ids[1])
        .expect("run.started");
    assert_eq!(started["concurrency"], "deploy");

    // Malformed group names are refused before anything else.
    for bad in ["a b", "", "x/y", &"g".repeat(65)] {
        // (curl sends an empty header given as `Name;`.)
        let header = if bad.is_empty() {
            "X-Servo-Concurrency;".to_string()
        } else {
            format!("X-Servo-Concurrency: {bad}")
        };
        let r = post_bundle(&servo, &short.tgz, "timed.py", &["-H", &header]);
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
    }
}

#[test]
fn a_run_gives_up_after_the_tenants_wait_and_v2_binds_the_group() {
    if !require_root() {
        return;
    }
    let conf = tempfile::tempdir().expect("tempdir");
    let file = tenants_file(conf.path(), 1);
    let servo = Servo::start(&["--tenants", file.to_str().expect("utf-8")]);
    let (long, short) = (timed(6.0), timed(0.1));
    // Tenant a's runs are in its default group `prod`.
    let mut holder = Streaming::start(
        &servo,
        &long.tgz,
        "timed.py",
        &openssl_sign(&long.tgz, TOKEN_A),
        &["-H", "X-Tenant: a"],
    );
    holder.until("START ");
    let t0 = Instant::now();
    let r = post_signed(
        &servo,
        &short.tgz,
        "timed.py",
        &openssl_sign(&short.tgz, TOKEN_A),
        &["-H", "X-Tenant: a", "-H", "Accept: application/json"],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["ok"], 0, "{v}");
    let log: Vec<&str> = v["log"]
        .as_array()
        .expect("log")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        log.iter()
            .any(|l| l.starts_with("waiting for concurrency group prod (held by run ")),
        "{log:?}"
    );
    assert_eq!(
        log.last(),
        Some(&"failure (concurrency group prod busy)"),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.starts_with("START")), "{log:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "gave up after {:?}",
        t0.elapsed()
    );
    // The default tenant's group `prod` is another group.
    let r = post_bundle(
        &servo,
        &short.tgz,
        "timed.py",
        &["-H", "X-Servo-Concurrency: prod"],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let (done, _) = holder.finish();
    assert_eq!(done["ok"], 1);

    // v2 binds the group the request names: a signature made without the
    // `concurrency=` line does not hold with the header, nor one made with
    // it without the header; made with it, it does.
    let ts = now();
    let ts_header = format!("X-Servo-Timestamp: {ts}");
    let plain = openssl_v2(TOKEN_A, ts, "/run/timed.py", "a", None, &[], &short.tgz);
    let bound = openssl_v2(
        TOKEN_A,
        ts,
        "/run/timed.py",
        "a",
        Some("blue"),
        &[],
        &short.tgz,
    );
    let with_group = [
        "-H",
        ts_header.as_str(),
        "-H",
        "X-Tenant: a",
        "-H",
        "X-Servo-Concurrency: blue",
    ];
    let without = ["-H", ts_header.as_str(), "-H", "X-Tenant: a"];
    let r = post_signed(&servo, &short.tgz, "timed.py", &plain, &with_group);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post_signed(&servo, &short.tgz, "timed.py", &bound, &without);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post_signed(&servo, &short.tgz, "timed.py", &bound, &with_group);
    assert_eq!(r.status, 200, "{}", r.body);
    // Without a group, the text is the one it always was.
    let r = post_signed(&servo, &short.tgz, "timed.py", &plain, &without);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `servo run --concurrency` signs the group it sends.
#[test]
fn servo_run_sends_and_signs_its_group() {
    if !require_root() {
        return;
    }
    let servo = Servo::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ok.py"), "print('grouped run')\n").expect("write");
    let out = Command::new(servo_bin())
        .args(["run"])
        .arg(dir.path())
        .args([
            "ok.py",
            "--url",
            &servo.url,
            "--token",
            TOKEN,
            "--concurrency",
            "release-1",
        ])
        .output()
        .expect("servo run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("grouped run"), "{stdout}");
    let out = Command::new(servo_bin())
        .args(["run"])
        .arg(dir.path())
        .args([
            "ok.py",
            "--url",
            &servo.url,
            "--token",
            TOKEN,
            "--concurrency",
            "no good",
        ])
        .output()
        .expect("servo run");
    assert_eq!(out.status.code(), Some(2));
}

// ------------------------------------------------------------ ZooKeeper

/// The flags of one instance coordinating through `zk` under `chroot`
/// (each instance gets its own uid range, as on separate hosts).
fn zk_args(
    zk: &ZooKeeper,
    chroot: &str,
    tenants: &Path,
    uids: &str,
    session_s: u64,
) -> Vec<String> {
    vec![
        "--tenants".into(),
        tenants.to_str().expect("utf-8").into(),
        "--coordination".into(),
        zk.url(chroot),
        "--coordination-session-timeout-s".into(),
        session_s.to_string(),
        "--uid-range".into(),
        uids.into(),
    ]
}

fn start_instance(args: &[String]) -> Servo {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Servo::start(&args)
}

fn ok_run(reply: &Reply) {
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn two_instances_share_the_replay_cache_groups_and_tenant_places() {
    if !require_root() {
        return;
    }
    let zk = ZooKeeper::start();
    let conf = tempfile::tempdir().expect("tempdir");
    let tenants = tenants_file(conf.path(), 60);
    let args_a = zk_args(&zk, "servo-share", &tenants, "101000-101499", 10);
    let args_b = zk_args(&zk, "servo-share", &tenants, "101500-101999", 10);
    let a = start_instance(&args_a);
    let b = start_instance(&args_b);
    wait_cluster(&a, "zookeeper", Some(2));
    wait_cluster(&b, "zookeeper", Some(2));

    // The replay cache: accepted by A, refused by B, and by A restarted.
    let quick = timed(0.0);
    let ts = now();
    let sig = openssl_v2(TOKEN_C, ts, "/run/timed.py", "c", None, &[], &quick.tgz);
    let ts_header = format!("X-Servo-Timestamp: {ts}");
    let extra = ["-H", ts_header.as_str(), "-H", "X-Tenant: c"];
    ok_run(&post_signed(&a, &quick.tgz, "timed.py", &sig, &extra));
    let r = post_signed(&b, &quick.tgz, "timed.py", &sig, &extra);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.starts_with("replayed signature"), "{}", r.body);
    let args: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let a = a.restart(&args);
    wait_cluster(&a, "zookeeper", None);
    let r = post_signed(&a, &quick.tgz, "timed.py", &sig, &extra);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.starts_with("replayed signature"), "{}", r.body);
    // The restarted A's old session is gone by now or soon: 2 again.
    wait_cluster(&a, "zookeeper", Some(2));

    // Tenant c's concurrent_runs (1) holds across A and B.
    let long = timed(2.0);
    let mut held = Streaming::start(
        &a,
        &long.tgz,
        "timed.py",
        &openssl_sign(&long.tgz, TOKEN_C),
        &["-H", "X-Tenant: c"],
    );
    held.until("START ");
    let r = post_signed(
        &b,
        &quick.tgz,
        "timed.py",
        &openssl_sign(&quick.tgz, TOKEN_C),
        &["-H", "X-Tenant: c"],
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("concurrent_runs"), "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(held.finish().0["ok"], 1);
    // Its place is given back as the run ends (in the background: allow
    // a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    while post_signed(
        &b,
        &quick.tgz,
        "timed.py",
        &openssl_sign(&quick.tgz, TOKEN_C),
        &["-H", "X-Tenant: c"],
    )
    .status
        == 503
    {
        assert!(
            Instant::now() < deadline,
            "tenant c's place was never given back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ok_run(&post_signed(
        &b,
        &quick.tgz,
        "timed.py",
        &openssl_sign(&quick.tgz, TOKEN_C),
        &["-H", "X-Tenant: c"],
    ));

    // A group across A and B: one at a time, in arrival order.
    let (long, short) = (timed(4.0), timed(0.3));
    let mut first = grouped(&a, &long.tgz, "timed.py", "deploy");
    first.until("START ");
    let mut second = grouped(&b, &short.tgz, "timed.py", "deploy");
    let waiting = second.until("waiting for concurrency group deploy (held by run ");
    let mut third = grouped(&a, &short.tgz, "timed.py", "deploy");
    third.until("waiting for concurrency group deploy");
    let mut spans = Vec::new();
    let mut ids = Vec::new();
    for run in [first, second, third] {
        let (done, lines) = run.finish();
        assert_eq!(done["ok"], 1, "{lines:?}");
        spans.push(span(&lines));
        ids.push(done["run"].as_str().expect("run id").to_string());
    }
    assert_one_after_another(&spans);
    assert!(
        waiting.contains(&format!("held by run {} since ", ids[0])),
        "{waiting}"
    );
}

#[test]
fn without_zookeeper_what_needs_it_is_refused_and_comes_back_by_itself() {
    if !require_root() {
        return;
    }
    let mut zk = ZooKeeper::start();
    let conf = tempfile::tempdir().expect("tempdir");
    let tenants = tenants_file(conf.path(), 60);
    let a = start_instance(&zk_args(&zk, "servo-down", &tenants, "101000-101499", 2));
    wait_cluster(&a, "zookeeper", Some(1));
    let quick = timed(0.0);
    ok_run(&post_v2(&a, &quick.tgz, "timed.py", "c", TOKEN_C, None));

    // A run holding a group when ZooKeeper goes: stopped before its
    // session can expire and another instance take the group.
    let long = timed(30.0);
    let mut holder = grouped(&a, &long.tgz, "timed.py", "deploy");
    holder.until("START ");
    zk.stop();
    let (done, lines) = holder.finish();
    assert_eq!(done["ok"], 0, "{lines:?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("failure (lost the concurrency group deploy)"),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("END")), "{lines:?}");

    wait_cluster(&a, "down", None);
    let r = post_v2(&a, &quick.tgz, "timed.py", "c", TOKEN_C, None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    let r = post_bundle(
        &a,
        &quick.tgz,
        "timed.py",
        &["-H", "X-Servo-Concurrency: deploy"],
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    // Tenant a's runs are in its default group: refused too, once verified.
    let r = post_signed(
        &a,
        &quick.tgz,
        "timed.py",
        &openssl_sign(&quick.tgz, TOKEN_A),
        &["-H", "X-Tenant: a"],
    );
    assert_eq!(r.status, 503, "{}", r.body);
    // Legacy runs outside groups go on (tenant c's place counted locally).
    ok_run(&post_bundle(&a, &quick.tgz, "timed.py", &[]));
    ok_run(&post_signed(
        &a,
        &quick.tgz,
        "timed.py",
        &openssl_sign(&quick.tgz, TOKEN_C),
        &["-H", "X-Tenant: c"],
    ));
    assert_eq!(health(&a)["cluster"]["coordination"], "down");

    // Back without restarting servo.
    zk.resume();
    wait_cluster(&a, "zookeeper", Some(1));
    ok_run(&post_v2(&a, &quick.tgz, "timed.py", "c", TOKEN_C, None));
    ok_run(&post_v2(
        &a,
        &quick.tgz,
        "timed.py",
        "c",
        TOKEN_C,
        Some("deploy"),
    ));
    ok_run(&post_bundle(
        &a,
        &quick.tgz,
        "timed.py",
        &["-H", "X-Servo-Concurrency: deploy"],
    ));
}

#[test]
fn a_killed_holder_frees_its_group_when_its_session_expires() {
    if !require_root() {
        return;
    }
    let zk = ZooKeeper::start();
    let conf = tempfile::tempdir().expect("tempdir");
    let tenants = tenants_file(conf.path(), 60);
    let a_args = zk_args(&zk, "servo-kill", &tenants, "101000-101499", 2);
    let mut a = start_instance(&a_args);
    let b = start_instance(&zk_args(&zk, "servo-kill", &tenants, "101500-101999", 2));
    wait_cluster(&a, "zookeeper", Some(2));
    wait_cluster(&b, "zookeeper", Some(2));
    let (long, short) = (timed(20.0), timed(0.1));
    let mut first = grouped(&a, &long.tgz, "timed.py", "deploy");
    first.until("START ");
    let mut second = grouped(&b, &short.tgz, "timed.py", "deploy");
    second.until("waiting for concurrency group deploy (held by run ");
    let killed = Instant::now();
    a.child.kill().expect("SIGKILL");
    let _ = a.child.wait();
    second.until("START ");
    let after = killed.elapsed();
    assert!(
        after < Duration::from_secs(12),
        "started {after:?} after the kill"
    );
    let (done, lines) = second.finish();
    assert_eq!(done["ok"], 1, "{lines:?}");
    wait_cluster(&b, "zookeeper", Some(1));
    // What the killed instance left (its mounts) goes when a servo starts
    // on its state dir again, as an operator's restart would do.
    let state = a.state.path().to_path_buf();
    let args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let mut again = a.restart(&args);
    again.terminate();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(state.to_str().expect("utf-8")))
        .collect();
    assert!(left.is_empty(), "left mounted: {left:#?}");
}
