//! What a request costs servo before it is authenticated (SPEC §2.1, "Before
//! a request is authenticated it may cost servo only bounded, shared
//! resources"): no tenant's place, no eating the disk's reserve, no
//! trickling for ever, no flooding the audit log, and no telling which
//! tenants exist. A real `servo serve`, real `curl`, raw sockets for the
//! slow clients.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const PAY_TOKEN: &str = "payments-token-0123456789abcdef";

/// A tenants file with `payments` (one run at a time) besides the default tenant.
fn tenants_file(dir: &Path) -> PathBuf {
    let path = dir.join("tenants.json");
    let text = format!(
        r#"{{"tenants": [{{"name": "payments", "token": "{PAY_TOKEN}", "limits": {{"concurrent_runs": 1}}}}]}}"#
    );
    std::fs::write(&path, text).expect("tenants file");
    path
}

fn start_with_payments(extra: &[&str]) -> (Servo, tempfile::TempDir) {
    let conf = tempfile::tempdir().expect("tempdir");
    let file = tenants_file(conf.path());
    let mut args = vec!["--tenants", file.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    (Servo::start(&args), conf)
}

fn addr(servo: &Servo) -> String {
    servo.url.trim_start_matches("http://").to_string()
}

/// The head of a raw upload of `len` bytes as `tenant`, with a well-formed
/// fake signature (servo must read the body before it can check it).
fn fake_upload_head(addr: &str, tenant: &str, len: usize) -> String {
    format!(
        "POST /run/a.py HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/gzip\r\n\
         Content-Length: {len}\r\nX-Tenant: {tenant}\r\nX-Signature: sha1={}\r\n\r\n",
        "0".repeat(40)
    )
}

/// What `stream` sends until it closes, or until `wait` has passed.
fn read_for(stream: &mut TcpStream, wait: Duration) -> (String, bool) {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

fn events(servo: &Servo, name: &str) -> Vec<serde_json::Value> {
    servo
        .audit()
        .into_iter()
        .filter(|e| e["event"] == name)
        .collect()
}

fn post_as(servo: &Servo, tgz: &Path, scripts: &str, tenant: &str, token: &str) -> Reply {
    let form = format!("tgz=@{}", tgz.display());
    let sig = format!("X-Signature: {}", openssl_sign(tgz, token));
    let tenant = format!("X-Tenant: {tenant}");
    curl(
        &format!("{}/run/{scripts}", servo.url),
        &["-X", "POST", "-F", &form, "-H", &sig, "-H", &tenant],
    )
}

// ------------------------------------------------------- 1. tenant places

#[test]
fn fake_signed_uploads_take_no_tenant_place() {
    if !require_root() {
        return;
    }
    let (servo, _conf) = start_with_payments(&[]);
    let addr = addr(&servo);
    // Two slow uploads claiming `payments`, signed with nothing valid.
    let mut slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            s.write_all(fake_upload_head(&addr, "payments", 1 << 20).as_bytes())
                .expect("head");
            s.write_all(&[7u8; 4096]).expect("some of the body");
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while servo.health().json()["queue"] != 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // payments' own, correctly signed run still gets its place.
    let b = bundle(&[("a.py", "print('paid')")]);
    let r = post_as(&servo, &b.tgz, "a.py", "payments", PAY_TOKEN);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("paid"), "{}", r.body);
    // The two strangers were still uploading, unanswered, all along.
    for s in &mut slow {
        let (said, closed) = read_for(s, Duration::from_millis(200));
        assert!(said.is_empty() && !closed, "answered early: {said:?}");
    }
    assert_eq!(servo.health().json()["queue"], 2);
    // Once the signature holds the tenant's limit applies as before: with
    // its one run going, a second verified run of payments gets 503.
    let running = bundle(&[("wait.py", "import time\ntime.sleep(3)\n")]);
    let sig = openssl_sign(&running.tgz, PAY_TOKEN);
    let mut first = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-X", "POST", "-F"])
        .arg(format!("tgz=@{}", running.tgz.display()))
        .args([
            "-H",
            &format!("X-Signature: {sig}"),
            "-H",
            "X-Tenant: payments",
        ])
        .arg(format!("{}/run/wait.py", servo.url))
        .spawn()
        .expect("curl");
    wait_in_flight(&servo, 1);
    let r = post_as(&servo, &b.tgz, "a.py", "payments", PAY_TOKEN);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("concurrent_runs"), "{}", r.body);
    assert!(first.wait().expect("curl").success());
    drop(slow);
}

// ------------------------------------------------------------- 2. disk reserve

#[test]
fn uploads_never_eat_the_disk_reserve() {
    if !require_root() {
        return;
    }
    let fs = SmallFs::mount("32m");
    let state = tempfile::tempdir_in(fs.dir.path()).expect("state dir");
    // Through the environment, so that a servo without the setting runs too
    // (and fails the assertions, not the start).
    let servo = Servo::start_in_env(state, &[], &[("SERVO_DISK_RESERVE_MIB", "24")]);
    let free_before = fs.free();
    assert!(free_before > 16 << 20, "free: {free_before}");
    let big = tempfile::tempdir().expect("tempdir");
    let tgz = big.path().join("big.tgz");
    random_file(&tgz, 12 << 20); // fits the disk, not the disk minus the reserve
    let sig = openssl_sign(&tgz, TOKEN);
    let r = post_gzip(&servo, &tgz, "a.py", &sig);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("no space left"), "{}", r.body);
    assert!(r.body.contains("audit log"), "{}", r.body);
    assert!(r.header("retry-after").is_some());
    // Refused before a byte was written.
    assert!(
        fs.free() + (256 << 10) >= free_before,
        "the refused upload took space: {} → {}",
        free_before,
        fs.free()
    );
    assert!(entries(&servo.state.path().join("spool")).is_empty());
    let rejected = events(&servo, "request.rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["status"], 503);
    // The audit log is writable and an upload that leaves the reserve whole
    // (2 MiB: spooled to the state dir's disk too) runs.
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    write_files(&src, &[("a.py", "print('fits')")]);
    random_file(&src.join("blob"), 2 << 20);
    let medium = pack(dir, &src);
    let r = post_bundle(&servo, &medium.tgz, "a.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("fits"), "{}", r.body);
    assert_eq!(events(&servo, "run.finished").len(), 1);
    assert_eq!(servo.health().json()["audit"], "ok");
}

// ------------------------------------------------------- 3. minimum rate

#[test]
fn a_trickling_upload_is_cut_off_after_the_grace_period() {
    if !require_root() {
        return;
    }
    let servo = Servo::start_in_env(
        tempfile::tempdir().expect("tempdir"),
        &["--request-timeout-s", "5"],
        &[
            ("SERVO_MIN_UPLOAD_RATE", "1000"),
            ("SERVO_UPLOAD_GRACE_S", "1"),
        ],
    );
    let addr = addr(&servo);
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.write_all(fake_upload_head(&addr, "default", 1 << 20).as_bytes())
        .expect("head");
    // 10 bytes every 100 ms: 100 bytes/s, never a pause near the 5 s stall timeout.
    let started = Instant::now();
    let mut answer = String::new();
    while started.elapsed() < Duration::from_secs(8) {
        if s.write_all(&[7u8; 10]).is_err() {
            break;
        }
        let (said, closed) = read_for(&mut s, Duration::from_millis(100));
        answer.push_str(&said);
        if closed || answer.contains("\r\n\r\n") {
            break;
        }
    }
    let (rest, _) = read_for(&mut s, Duration::from_millis(500));
    answer.push_str(&rest);
    let took = started.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("too slow"),
        "a trickling upload must be answered 408 with a sentence, got {answer:?} after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "cut off after {took:?} (grace 1 s)"
    );
    let rejected = events(&servo, "request.rejected");
    assert!(
        rejected
            .iter()
            .any(|e| e["status"] == 408 && e.to_string().contains("too slow")),
        "{rejected:?}"
    );
    assert_eq!(servo.health().json()["queue"], 0);
    assert!(entries(&servo.state.path().join("runs")).is_empty());
}

// ------------------------------------------------- 4. rejection records

#[test]
fn a_burst_of_bad_requests_leaves_a_bounded_audit_trail() {
    if !require_root() {
        return;
    }
    let servo = Servo::start(&[]);
    let addr = addr(&servo);
    let ask = |head: String| {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.write_all(head.as_bytes()).expect("request");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    // One 400 whose reason echoes a 3000-byte script name: cut short.
    let long = "a".repeat(3000);
    let said = ask(format!(
        "POST /run/{long}.sh HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(said.starts_with("HTTP/1.1 400"), "{said}");
    // 200 forbidden ones in a burst.
    for _ in 0..200 {
        let said = ask(format!(
            "POST /run/a.py HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\
             X-Signature: sha1=00\r\n\r\n"
        ));
        assert!(said.starts_with("HTTP/1.1 403"), "{said}");
    }
    let bad = events(&servo, "request.rejected");
    let long_reason = bad
        .iter()
        .find(|e| e["status"] == 400)
        .expect("the 400 is on record");
    let reason = long_reason["reason"].as_str().expect("reason");
    assert!(reason.len() <= 256, "reason of {} bytes", reason.len());
    assert!(reason.starts_with("bad script list: aaaa"), "{reason}");
    // The summary comes when the window (10 s) ends, with no more traffic.
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let records = events(&servo, "request.rejected")
            .iter()
            .filter(|e| e["status"] == 403)
            .count() as u64;
        let suppressed: u64 = events(&servo, "request.rejected.suppressed")
            .iter()
            .filter(|e| e["label"] == "forbidden")
            .map(|e| e["count"].as_u64().expect("count"))
            .sum();
        if records + suppressed == 200 {
            assert!(records <= 100, "{records} records of 200 rejections");
            assert!(suppressed >= 100, "{suppressed} suppressed");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{records} records and {suppressed} suppressed for 200 rejections"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Metrics still count every rejection.
    let m = curl(&format!("{}/metrics", servo.url), &[]).body;
    assert!(
        m.contains("servo_requests_rejected_total{reason=\"forbidden\"} 200"),
        "{m}"
    );
}

// ----------------------------------------------- 5. unknown tenants

#[test]
fn unknown_and_known_tenants_get_the_same_403_after_the_same_upload() {
    if !require_root() {
        return;
    }
    let (servo, _conf) = start_with_payments(&[]);
    let b = bundle(&[("a.py", "print('x')")]);
    let answer = |tenant: &str| {
        let r = post_as(&servo, &b.tgz, "a.py", tenant, "not-the-token");
        let headers: Vec<String> = r
            .headers
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
            .map(str::to_string)
            .collect();
        (r.status, headers, r.body)
    };
    let unknown = answer("nosuch");
    let known = answer("payments");
    assert_eq!(unknown.0, 403);
    assert_eq!(unknown, known, "the answers differ");

    // The unknown tenant's 403 comes only once its whole body is in.
    let addr = addr(&servo);
    let mut s = TcpStream::connect(&addr).expect("connect");
    let len = 256 << 10;
    s.write_all(fake_upload_head(&addr, "nosuch", len).as_bytes())
        .expect("head");
    s.write_all(&vec![7u8; len / 2]).expect("half the body");
    let (early, closed) = read_for(&mut s, Duration::from_millis(1500));
    assert!(
        early.is_empty() && !closed,
        "answered before the body was in: {early:?}"
    );
    s.write_all(&vec![7u8; len - len / 2]).expect("the rest");
    let (said, _) = read_for(&mut s, Duration::from_secs(10));
    assert!(said.starts_with("HTTP/1.1 403"), "{said:?}");
    assert!(
        said.ends_with("invalid signature or unknown tenant\n"),
        "{said:?}"
    );
}
