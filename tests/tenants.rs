//! Multi-tenancy end to end (SPEC §2.4–§2.6, §7, §8): real `servo serve`
//! processes with a tenants file, bundles packed by `tar`, signed by
//! `openssl` (sha1 and v2), posted by `curl`; scripts relay commands to the
//! built-in simulator through the real sandbox.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::streaming::Streaming;
use support::*;

const TOKEN_A: &str = "team-a-token-0123456789abcdef";
const TOKEN_B: &str = "team-b-token-fedcba9876543210";
const WEB_YML: &str = "cluster: web\nimage: repo/web:1\nports:\n  - 8080\n";
/// What `--public-url` says; tests post to the server's real address instead.
const PUBLIC: &str = "http://servo.public.example";

/// Writes `tenants.json` (two teams and the default tenant) into `dir`.
fn tenants_file(dir: &Path, a_extra: &str) -> PathBuf {
    let path = dir.join("tenants.json");
    let text = format!(
        r#"{{"tenants": [
  {{"name": "a", "token": "{TOKEN_A}", "aes_kdf": "pbkdf2", "namespaces": ["a"],
    "commands": ["ls", "grep", "deploy", "kill"]{a_extra}}},
  {{"name": "b", "token": "{TOKEN_B}", "namespaces": ["b"]}}
]}}"#
    );
    std::fs::write(&path, text).expect("write tenants file");
    path
}

/// Starts servo with the tenants file (and `extra` flags).
fn start_with_tenants(a_extra: &str, extra: &[&str]) -> (Servo, tempfile::TempDir) {
    let conf = tempfile::tempdir().expect("tempdir");
    let file = tenants_file(conf.path(), a_extra);
    let mut args = vec!["--tenants", file.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    (Servo::start(&args), conf)
}

/// POSTs as a tenant, signed `sha1=` with its token (the guide's way).
fn post_as(servo: &Servo, tgz: &Path, scripts: &str, tenant: &str, token: &str) -> Reply {
    let tenant_header = format!("X-Tenant: {tenant}");
    post_signed(
        servo,
        tgz,
        scripts,
        &openssl_sign(tgz, token),
        &["-H", &tenant_header],
    )
}

/// The callback URL a script printed as `CALLBACK <url>`, on the real server.
fn callback_url(servo: &Servo, line: &str) -> String {
    let url = line.strip_prefix("CALLBACK ").expect("CALLBACK line");
    let path = url.strip_prefix(PUBLIC).expect("public URL prefix");
    format!("{}{path}", servo.url)
}

/// A script waiting for a callback file, then running `then`. It gives up
/// (exit 1) after a minute, so a lost callback fails the test, never hangs it.
fn waiting_script(file: &str, then: &str) -> String {
    format!(
        "import os, sys, time\nprint('CALLBACK ' + os.environ['CALLBACK'], flush=True)\ndef wait(name):\n    end = time.time() + 60\n    while not os.path.exists(name):\n        if time.time() > end:\n            sys.exit('gave up waiting for ' + name)\n        time.sleep(0.05)\nwait('{file}')\n{then}\n"
    )
}

// ------------------------------------------------------------ isolation

#[test]
fn tenants_cannot_act_as_or_reach_each_other() {
    if !require_root() {
        return;
    }
    let (servo, _conf) = start_with_tenants("", &[]);
    let deploy = bundle(&[
        ("web.yml", WEB_YML),
        (
            "deploy.py",
            "from servo import servo\nwith servo() as proxy:\n    print(sorted(proxy('deploy web.yml')['web.yml']['up']))\n",
        ),
    ]);

    // A's token under B's name: the same 403 as a bad signature.
    let r = post_as(&servo, &deploy.tgz, "deploy.py", "b", TOKEN_A);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body.trim(), "invalid signature or unknown tenant");
    let r = post_as(&servo, &deploy.tgz, "deploy.py", "nobody", TOKEN_A);
    assert_eq!(r.status, 403, "{}", r.body);

    // Each team deploys into its own namespace (-n added by the policy).
    for (tenant, token) in [("b", TOKEN_B), ("a", TOKEN_A)] {
        let r = post_as(&servo, &deploy.tgz, "deploy.py", tenant, token);
        assert_eq!(r.status, 200, "{tenant}: {}", r.body);
        assert!(r.lines().contains(&"[1]"), "{}", r.body);
    }

    let probe = bundle(&[
        ("web.yml", WEB_YML),
        (
            "probe.py",
            r#"import json
from servo import servo
with servo(strict=False) as proxy:
    print('kill', proxy('kill b.web'))
    print('deploy', proxy('deploy web.yml -n b'))
    print('ls', json.dumps(sorted(proxy('ls'))))
    print('grep', json.dumps(sorted(proxy('grep *'))))
    print('scale', proxy('scale a.web -f 2'))
"#,
        ),
    ]);
    let r = post_as(&servo, &probe.tgz, "probe.py", "a", TOKEN_A);
    assert_eq!(r.status, 200, "{}", r.body);
    let lines = r.lines();
    assert!(lines.contains(&"kill None"), "{}", r.body);
    assert!(lines.contains(&"deploy None"), "{}", r.body);
    assert!(lines.contains(&r#"ls ["a.web"]"#), "{}", r.body);
    assert!(lines.contains(&r#"grep ["a.web #1"]"#), "{}", r.body);
    assert!(lines.contains(&"scale None"), "{}", r.body);
    let run_a = r.header("x-servo-run").expect("run id");

    // B still sees its own cluster, and only it: the kill never happened.
    let list = bundle(&[(
        "list.py",
        "import json\nfrom servo import servo\nwith servo() as proxy:\n    print(json.dumps(proxy('ls')))\n",
    )]);
    let r = post_as(&servo, &list.tgz, "list.py", "b", TOKEN_B);
    assert_eq!(r.status, 200, "{}", r.body);
    let listed: Value = serde_json::from_str(r.lines()[1]).expect("ls JSON");
    assert_eq!(
        listed,
        serde_json::json!({"b.web": {"total": 1, "running": 1, "status": ""}})
    );

    // Every verdict is audited, with the reason or the rewrite.
    let audit = servo.audit();
    let cmds: Vec<&Value> = audit
        .iter()
        .filter(|e| e["event"] == "portal.command" && e["run"] == run_a.as_str())
        .collect();
    let got: Vec<(&str, &str)> = cmds
        .iter()
        .map(|c| (c["line"].as_str().unwrap(), c["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("kill b.web -j", "denied"),
            ("deploy web.yml -n b -j", "denied"),
            ("ls -j", "allowed"),
            ("grep 'a.*' -j", "allowed"),
            ("scale a.web -f 2 -j", "denied"),
        ]
    );
    let reason = |i: usize| cmds[i]["reason"].as_str().unwrap_or("");
    assert!(
        reason(0).contains("`b.web` is outside tenant `a`'s namespaces"),
        "{}",
        reason(0)
    );
    assert!(
        reason(1).contains("namespace `b` is not one of tenant `a`'s"),
        "{}",
        reason(1)
    );
    assert!(
        reason(4).contains("`scale` is not among tenant `a`'s commands"),
        "{}",
        reason(4)
    );
    assert!(cmds[2].get("requested").is_none());
    assert_eq!(cmds[3]["requested"], "grep * -j");
    assert!(cmds
        .iter()
        .all(|c| c["tenant"] == "a" && c["script"] == "probe.py"));
    // The allowed ones were answered; the denied ones never went anywhere.
    let answered: Vec<&Value> = audit
        .iter()
        .filter(|e| e["event"] == "portal.answered" && e["run"] == run_a.as_str())
        .collect();
    assert_eq!(answered.len(), 2);
    assert_eq!(answered[0]["cmd"], cmds[2]["cmd"]);
    assert_eq!(answered[1]["ok"], true);
}

// ------------------------------------------------------------ signatures

/// The replay cache is kept in the state dir (§11): a captured v2 request
/// is not accepted again after servo restarts.
#[test]
fn a_v2_signature_stays_spent_across_a_restart() {
    if !require_root() {
        return;
    }
    let (servo, conf) = start_with_tenants(r#", "require_signature": "v2""#, &[]);
    let b = bundle(&[("ok.py", "print('ran')\n")]);
    let ts = now();
    let sig = openssl_v2(TOKEN_A, ts, "/run/ok.py", "a", None, &[], &b.tgz);
    let ts_header = format!("X-Servo-Timestamp: {ts}");
    let extra = ["-H", ts_header.as_str(), "-H", "X-Tenant: a"];
    let r = post_signed(&servo, &b.tgz, "ok.py", &sig, &extra);
    assert_eq!(r.status, 200, "{}", r.body);
    let tenants = conf.path().join("tenants.json");
    let servo = servo.restart(&["--tenants", tenants.to_str().expect("utf-8")]);
    let r = post_signed(&servo, &b.tgz, "ok.py", &sig, &extra);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.starts_with("replayed signature"), "{}", r.body);
}

#[test]
fn v2_signatures_bind_the_request_and_cannot_be_replayed() {
    if !require_root() {
        return;
    }
    let (servo, _conf) = start_with_tenants(r#", "require_signature": "v2""#, &[]);
    let b = bundle(&[
        (
            "ok.py",
            "import os\nprint('build', os.environ['BUILD_ID'])\n",
        ),
        ("other.py", "print('other')\n"),
    ]);
    let path = "/run/ok.py";
    let vars = [("BUILD_ID", "7")];
    let sign_at = |ts: u64| openssl_v2(TOKEN_A, ts, path, "a", None, &vars, &b.tgz);
    let send = |sig: &str, ts: u64, scripts: &str, tenant: &str, build: &str| {
        let headers = [
            format!("X-Servo-Timestamp: {ts}"),
            format!("X-Tenant: {tenant}"),
            format!("X-Var-build-id: {build}"),
        ];
        let mut extra = Vec::new();
        for h in &headers {
            extra.extend(["-H", h.as_str()]);
        }
        post_signed(&servo, &b.tgz, scripts, sig, &extra)
    };

    // openssl and servo's own client agree on the canonical text.
    let ts = now();
    let sig = sign_at(ts);
    let ts_text = ts.to_string();
    let owned_vars = [("BUILD_ID".to_string(), "7".to_string())];
    let ctx = servo::bundle::signature::V2Context {
        timestamp: &ts_text,
        path,
        tenant: "a",
        vars: &owned_vars,
        concurrency: None,
    };
    let lib =
        servo::bundle::signature::v2_sign(TOKEN_A.as_bytes(), &ctx, &openssl_sha256(&b.tgz, None));
    assert_eq!(sig, format!("v2={lib}"));

    // Changed script list, variable or tenant, same signature: refused. The
    // unchanged request then passes, so the refusals were about the change.
    for (scripts, tenant, build) in [
        ("ok.py+other.py", "a", "7"),
        ("ok.py", "a", "8"),
        ("ok.py", "default", "7"),
        ("ok.py", "b", "7"),
    ] {
        let r = send(&sig, ts, scripts, tenant, build);
        assert_eq!(r.status, 403, "{scripts} {tenant} {build}: {}", r.body);
    }
    let r = send(&sig, ts, "ok.py", "a", "7");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.lines().contains(&"build 7"), "{}", r.body);
    // Replayed: refused within the window, and said so (only the holder of
    // a valid signature gets this answer).
    let r = send(&sig, ts, "ok.py", "a", "7");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.starts_with("replayed signature"), "{}", r.body);

    // 301 s old (correctly signed for that time): refused; 299 s: accepted.
    let old = now() - 301;
    let r = send(&sign_at(old), old, "ok.py", "a", "7");
    assert_eq!(r.status, 403, "{}", r.body);
    let recent = now() - 299;
    let r = send(&sign_at(recent), recent, "ok.py", "a", "7");
    assert_eq!(r.status, 200, "{}", r.body);
    // No timestamp: refused.
    let fresh = sign_at(now());
    let r = post_signed(
        &servo,
        &b.tgz,
        "ok.py",
        &fresh,
        &["-H", "X-Tenant: a", "-H", "X-Var-build-id: 7"],
    );
    assert_eq!(r.status, 403, "{}", r.body);

    // Tenant `a` requires v2: a correct sha1 is refused; the default tenant takes it.
    let r = post_signed(
        &servo,
        &b.tgz,
        "other.py",
        &openssl_sign(&b.tgz, TOKEN_A),
        &["-H", "X-Tenant: a"],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("requires v2"), "{}", r.body);
    // Without the token, the answer does not tell that the tenant exists.
    let r = post_signed(
        &servo,
        &b.tgz,
        "other.py",
        &openssl_sign(&b.tgz, "a-guess"),
        &["-H", "X-Tenant: a"],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body.trim(), "invalid signature or unknown tenant");
    let r = post_bundle(&servo, &b.tgz, "other.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);

    // servo's client signs v2 by default and names the tenant.
    let out = Command::new(servo_bin())
        .args(["run"])
        .arg(b.dir.path().join("src"))
        .args(["ok.py", "-v", "build-id:9", "--url", &servo.url])
        .args(["--token", TOKEN_A, "--tenant", "a"])
        .env_remove("SERVO_TOKEN")
        .output()
        .expect("servo run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("build 9"), "{stdout}");

    // Refusals are audited under the tenant they claimed.
    let rejected: Vec<Value> = servo
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "request.rejected")
        .collect();
    assert!(rejected.len() >= 9, "{rejected:?}");
    assert!(rejected.iter().all(|e| e["status"] == 403));
    assert!(rejected.iter().any(|e| e["tenant"] == "b"));
}

// ------------------------------------------------------------ audit

#[test]
fn the_audit_log_tells_the_whole_run_and_keeps_no_secret() {
    if !require_root() {
        return;
    }
    let (servo, _conf) = start_with_tenants("", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    write_files(
        &src,
        &[
            ("web.yml", WEB_YML),
            (
                "first.py",
                "import os\nfrom servo import servo\nprint('secret ok', open('db.conf').read().strip() == 'pw=s3cret-data')\nprint('var ok', os.environ['DB_PASSWORD'] == 'hunter2')\nwith servo(strict=False) as proxy:\n    proxy('deploy web.yml')\n    print('denied', proxy('kill marathon.servo'))\n",
            ),
            ("second.py", "print('second')\n"),
        ],
    );
    let plain = dir.path().join("db.conf");
    std::fs::write(&plain, "pw=s3cret-data\n").expect("write");
    openssl_encrypt(&plain, &src.join("db.conf.aes"), TOKEN_A);
    let b = pack(dir, &src);

    let tenant = ["-H", "X-Tenant: a", "-H", "X-Var-db-password: hunter2"];
    let r = post_signed(
        &servo,
        &b.tgz,
        "first.py+second.py",
        &openssl_sign(&b.tgz, TOKEN_A),
        &tenant,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for want in [
        "secret ok True",
        "var ok True",
        "denied None",
        "second",
        "$DB_PASSWORD = ***",
    ] {
        assert!(r.lines().contains(&want), "{want}: {}", r.body);
    }
    let run = r.header("x-servo-run").expect("run id");
    // A bad signature afterwards.
    let r = post_signed(
        &servo,
        &b.tgz,
        "first.py",
        &openssl_sign(&b.tgz, "not-the-token"),
        &["-H", "X-Tenant: a"],
    );
    assert_eq!(r.status, 403);

    let text = std::fs::read_to_string(servo.state.path().join("audit.log")).expect("audit");
    for secret in [
        TOKEN,
        TOKEN_A,
        TOKEN_B,
        "hunter2",
        "s3cret-data",
        "not-the-token",
    ] {
        assert!(!text.contains(secret), "`{secret}` is in the audit log");
    }
    let events = audit_lines(&servo.state.path().join("audit.log"));
    for e in &events {
        let ts = e["ts"].as_str().expect("ts");
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
        assert!(e["event"].is_string() && e["run"].is_string() && e["tenant"].is_string());
    }
    let of_run: Vec<&Value> = events.iter().filter(|e| e["run"] == run.as_str()).collect();
    let names: Vec<&str> = of_run
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "run.started",
            "bundle.decrypted",
            "script.started",
            "portal.command",
            "portal.answered",
            "portal.command",
            "script.finished",
            "script.started",
            "script.finished",
            "run.finished",
        ]
    );
    assert!(of_run.iter().all(|e| e["tenant"] == "a"));
    let started = of_run[0];
    assert_eq!(
        started["scripts"],
        serde_json::json!(["first.py", "second.py"])
    );
    assert_eq!(started["variables"], serde_json::json!(["DB_PASSWORD"]));
    assert_eq!(started["signature"], "sha1");
    assert_eq!(started["archive_sha256"], openssl_sha256(&b.tgz, None));
    assert_eq!(
        started["archive_bytes"],
        std::fs::metadata(&b.tgz).expect("size").len()
    );
    assert!(started["remote"]
        .as_str()
        .unwrap_or("")
        .starts_with("127.0.0.1:"));
    assert_eq!(of_run[1]["file"], "db.conf.aes");
    assert_eq!(of_run[2]["script"], "first.py");
    let deploy = of_run[3];
    assert_eq!(deploy["line"], "deploy web.yml -n a -j");
    assert_eq!(deploy["verdict"], "allowed");
    assert_eq!(deploy["script"], "first.py");
    assert_eq!(deploy["files"][0]["name"], "web.yml");
    let yml_sha = {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("web.yml");
        std::fs::write(&f, WEB_YML).expect("write");
        openssl_sha256(&f, None)
    };
    assert_eq!(deploy["files"][0]["sha256"], yml_sha.as_str());
    assert_eq!(of_run[4]["cmd"], deploy["cmd"]);
    assert_eq!(of_run[4]["ok"], true);
    assert!(of_run[4]["ms"].is_u64());
    assert_eq!(of_run[5]["verdict"], "denied");
    assert!(of_run[5]["reason"]
        .as_str()
        .unwrap()
        .contains("outside tenant `a`"));
    assert_eq!(of_run[6]["exit_code"], 0);
    assert!(of_run[6]["output_bytes"].as_u64().unwrap() > 0);
    assert_eq!(of_run[7]["script"], "second.py");
    assert_eq!(of_run[9]["ok"], true);

    let rejected = events.last().expect("events");
    assert_eq!(rejected["event"], "request.rejected");
    assert_eq!(rejected["tenant"], "a");
    assert_eq!(rejected["status"], 403);
    assert!(rejected["remote"]
        .as_str()
        .unwrap_or("")
        .starts_with("127.0.0.1:"));
}

/// A tmpfs mounted for one test; unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs failed");
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.0.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
        }
    }
}

fn health(servo: &Servo) -> (u16, Value) {
    let r = servo.health();
    let v = r.json();
    (r.status, v)
}

#[test]
fn a_full_audit_disk_stops_runs_and_commands_until_it_has_room() {
    if !require_root() {
        return;
    }
    let disk = Tmpfs::mount("64k");
    let audit_path = disk.path().join("audit.log");
    let servo = Servo::start(&[
        "--audit",
        audit_path.to_str().expect("utf-8"),
        "--public-url",
        PUBLIC,
    ]);
    let quick = bundle(&[("quick.py", "print('quick')\n")]);
    assert_eq!(post_bundle(&servo, &quick.tgz, "quick.py", &[]).status, 200);

    let relay = bundle(&[(
        "relay.py",
        &waiting_script(
            "go1",
            r#"import json, servo as pkg
status, answer = pkg._post('/shell', b'', {'X-Shell': 'ls -j'})
print('during outage', status, answer['out'], flush=True)
wait('go2')
with pkg.servo() as proxy:
    print('after outage', json.dumps(sorted(proxy('ls'))), flush=True)
"#,
        ),
    )]);
    let mut run = Streaming::start(
        &servo,
        &relay.tgz,
        "relay.py",
        &openssl_sign(&relay.tgz, TOKEN),
        &[],
    );
    let callback = callback_url(&servo, &run.until("CALLBACK "));

    // Fill the disk. The audit file's last page may still take a record or
    // two: refused requests write records until even the smallest one (the
    // `audit.resumed` a health check tries) no longer fits.
    let filler = disk.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4096"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let bad = openssl_sign(&quick.tgz, "wrong");
    let mut failing = false;
    for _ in 0..200 {
        assert_eq!(
            post_signed(&servo, &quick.tgz, "quick.py", &bad, &[]).status,
            403
        );
        let (status, v) = health(&servo);
        if v["audit"] == "failing" {
            assert_eq!(status, 503);
            failing = true;
            break;
        }
        assert_eq!(status, 200);
    }
    assert!(failing, "the audit log never failed on a full disk");

    // New runs: 503 with Retry-After, however often asked.
    for _ in 0..2 {
        let r = post_bundle(&servo, &quick.tgz, "quick.py", &[]);
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body.contains("audit log"), "{}", r.body);
        assert!(r.header("retry-after").is_some());
    }
    // The running script's command is refused before it reaches the portal.
    let r = curl(&format!("{callback}/go1"), &["-X", "POST", "--data", "x"]);
    assert_eq!(r.status, 200, "{}", r.body);
    let line = run.until("during outage");
    assert!(
        line.starts_with("during outage 503 audit log unavailable: "),
        "{line}"
    );
    assert!(line.contains("the command was not relayed"), "{line}");

    // Room again: runs and commands resume by themselves.
    std::fs::remove_file(&filler).expect("remove filler");
    let (status, v) = health(&servo);
    assert_eq!((status, v["audit"].as_str()), (200, Some("ok")), "{v}");
    let r = post_bundle(&servo, &quick.tgz, "quick.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = curl(&format!("{callback}/go2"), &["-X", "POST", "--data", "x"]);
    assert_eq!(r.status, 200, "{}", r.body);
    let line = run.until("after outage");
    assert!(line.contains("marathon.portal"), "{line}");
    assert_eq!(run.finish().0["ok"], 1);

    // Every line is whole JSON; the outage is recorded; the refused command
    // left no record, the later one did.
    let events = audit_lines(&audit_path);
    let resumed = events
        .iter()
        .find(|e| e["event"] == "audit.resumed")
        .expect("audit.resumed");
    assert!(resumed["lost_records"].as_u64().unwrap() >= 1, "{resumed}");
    let commands: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "portal.command")
        .collect();
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!(commands[0]["line"], "ls -j");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "run.finished" && e["ok"] == true)
            .count(),
        3
    );
    drop(servo);
}

// ------------------------------------------------------------ metrics

/// Prometheus text → series (name with labels) → value.
fn scrape(servo: &Servo) -> HashMap<String, f64> {
    let r = curl(&format!("{}/metrics", servo.url), &[]);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/plain; version=0.0.4"));
    r.body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series value");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn metrics_follow_successes_failures_rejections_and_commands() {
    if !require_root() {
        return;
    }
    let (servo, _conf) = start_with_tenants("", &[]);
    let b = bundle(&[
        (
            "ok.py",
            "from servo import servo\nwith servo(strict=False) as proxy:\n    proxy('ls')\n    proxy('kill marathon.servo')\n",
        ),
        ("fail.py", "raise SystemExit(3)\n"),
    ]);
    let get = |m: &HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let before = scrape(&servo);
    assert_eq!(get(&before, "servo_runs_in_flight"), 0.0);
    for name in [
        "servo_runs_started_total",
        "servo_runs_succeeded_total",
        "servo_runs_failed_total",
        "servo_scripts_run_total",
        "servo_upload_bytes_total",
        "servo_sandbox_setup_seconds_count",
        "servo_script_duration_seconds_count",
        "servo_queue_length",
    ] {
        assert!(before.contains_key(name), "{name} missing");
    }

    assert_eq!(post_as(&servo, &b.tgz, "ok.py", "a", TOKEN_A).status, 200);
    assert_eq!(post_as(&servo, &b.tgz, "fail.py", "a", TOKEN_A).status, 412);
    assert_eq!(post_as(&servo, &b.tgz, "ok.py", "a", TOKEN_B).status, 403);
    assert_eq!(
        post_as(&servo, &b.tgz, "notes.txt", "a", TOKEN_A).status,
        400
    );
    let after = scrape(&servo);
    let delta = |k: &str| get(&after, k) - get(&before, k);
    assert_eq!(delta("servo_runs_started_total"), 2.0);
    assert_eq!(delta("servo_runs_succeeded_total"), 1.0);
    assert_eq!(delta("servo_runs_failed_total"), 1.0);
    assert_eq!(delta("servo_scripts_run_total"), 2.0);
    assert_eq!(delta("servo_script_duration_seconds_count"), 2.0);
    assert_eq!(delta("servo_sandbox_setup_seconds_count"), 2.0);
    assert_eq!(
        delta("servo_upload_bytes_total"),
        // Every received archive counts, the refused one too.
        3.0 * std::fs::metadata(&b.tgz).expect("size").len() as f64
    );
    assert_eq!(
        delta("servo_requests_rejected_total{reason=\"forbidden\"}"),
        1.0
    );
    assert_eq!(
        delta("servo_requests_rejected_total{reason=\"bad_request\"}"),
        1.0
    );
    assert_eq!(
        delta("servo_portal_commands_total{verb=\"ls\",verdict=\"allowed\"}"),
        1.0
    );
    assert_eq!(
        delta("servo_portal_commands_total{verb=\"kill\",verdict=\"denied\"}"),
        1.0
    );
    assert_eq!(get(&after, "servo_runs_in_flight"), 0.0);
    // Histogram buckets are cumulative and end at the count.
    assert_eq!(
        get(&after, "servo_script_duration_seconds_bucket{le=\"+Inf\"}"),
        get(&after, "servo_script_duration_seconds_count")
    );
}

// ------------------------------------------------------------ callbacks

#[test]
fn callbacks_land_in_the_workdir_while_the_run_lives() {
    if !require_root() {
        return;
    }
    let servo = Servo::start(&["--public-url", PUBLIC]);
    let b = bundle(&[
        ("results/.keep", ""),
        (
        "wait.py",
        &waiting_script(
            "results/report.json",
            "print('raw', open('callback.raw').read())\nprint('named', open('results/report.json').read())\nprint('owner ok', os.stat('callback.raw').st_uid == os.getuid())",
        ),
    ),
    ]);
    let mut run = Streaming::start(&servo, &b.tgz, "wait.py", &openssl_sign(&b.tgz, TOKEN), &[]);
    let url = callback_url(&servo, &run.until("CALLBACK "));
    let secret = url.rsplit('/').next().expect("secret");
    assert!(secret.len() >= 32, "{secret}: fewer than 128 bits");

    let r = curl(&url, &["-X", "POST", "--data-binary", "hello from CI"]);
    assert_eq!(r.status, 200, "{}", r.body);
    // Names obey the script-name rules.
    let r = curl(&format!("{url}/../escape"), &["-X", "POST", "--data", "x"]);
    assert_ne!(r.status, 200);
    let r = curl(
        &format!("{url}/results/report.json"),
        &["-X", "POST", "--data-binary", "{\"passed\": 12}"],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(run.until("raw "), "raw hello from CI");
    assert_eq!(run.until("named "), "named {\"passed\": 12}");
    assert_eq!(run.until("owner ok"), "owner ok True");
    assert_eq!(run.finish().0["ok"], 1);

    // The run is over: its callback is gone.
    let r = curl(&url, &["-X", "POST", "--data", "late"]);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = curl(
        &format!("{}/callback/{}", servo.url, "0".repeat(32)),
        &["-X", "POST", "--data", "x"],
    );
    assert_eq!(r.status, 404);
}

#[test]
fn callbacks_never_replace_a_bundle_file_and_are_audited() {
    if !require_root() {
        return;
    }
    let servo = Servo::start(&["--public-url", PUBLIC]);
    let b = bundle(&[
        ("first.py", &waiting_script("go", "print('first done')")),
        ("second.py", "print('second: the bundle code')\n"),
    ]);
    let mut run = Streaming::start(
        &servo,
        &b.tgz,
        "first.py+second.py",
        &openssl_sign(&b.tgz, TOKEN),
        &[],
    );
    let url = callback_url(&servo, &run.until("CALLBACK "));

    // Named like the next script: refused, with a sentence saying why.
    let r = curl(
        &format!("{url}/second.py"),
        &[
            "-X",
            "POST",
            "--data-binary",
            "print('REPLACED BY A CALLBACK')",
        ],
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("never replaces"), "{}", r.body);
    // A second callback under a name a callback already wrote: refused too.
    let r = curl(
        &format!("{url}/note"),
        &["-X", "POST", "--data-binary", "one"],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = curl(
        &format!("{url}/note"),
        &["-X", "POST", "--data-binary", "two"],
    );
    assert_eq!(r.status, 409, "{}", r.body);

    let r = curl(
        &format!("{url}/go"),
        &["-X", "POST", "--data-binary", "go!"],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(run.until("first done"), "first done");
    assert_eq!(run.until("second: "), "second: the bundle code");
    let (done, _) = run.finish();
    assert_eq!(done["ok"], 1, "{done}");

    let audit = servo.audit();
    let received: Vec<_> = audit
        .iter()
        .filter(|r| r["event"] == "callback.received")
        .collect();
    let names: Vec<_> = received.iter().map(|r| r["name"].as_str()).collect();
    assert_eq!(names, [Some("note"), Some("go")], "{received:?}");
    let go = received[1];
    assert_eq!(go["bytes"], 3);
    assert_eq!(go["sha256"], sha256_hex(b"go!"));
    assert_eq!(go["run"], done["run"]);
    assert_eq!(go["tenant"], "default");
    // Never the contents.
    let text = std::fs::read_to_string(servo.state.path().join("audit.log")).expect("audit");
    assert!(
        !text.contains("go!") && !text.contains("REPLACED"),
        "{text}"
    );
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

// ------------------------------------------------------------ concurrent_runs

#[test]
fn concurrent_runs_limit_one_tenant_only() {
    if !require_root() {
        return;
    }
    let (servo, _conf) = start_with_tenants(
        r#", "limits": {"concurrent_runs": 1}"#,
        &["--public-url", PUBLIC],
    );
    let slow = bundle(&[("slow.py", &waiting_script("go", "print('released')"))]);
    let quick = bundle(&[("quick.py", "print('quick')\n")]);
    let tenant_a = ["-H", "X-Tenant: a"];
    let mut run = Streaming::start(
        &servo,
        &slow.tgz,
        "slow.py",
        &openssl_sign(&slow.tgz, TOKEN_A),
        &tenant_a,
    );
    let url = callback_url(&servo, &run.until("CALLBACK "));

    // A's one run is running: A is busy, B and the default tenant are not.
    let r = post_as(&servo, &quick.tgz, "quick.py", "a", TOKEN_A);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("concurrent_runs"), "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        post_as(&servo, &quick.tgz, "quick.py", "b", TOKEN_B).status,
        200
    );
    assert_eq!(post_bundle(&servo, &quick.tgz, "quick.py", &[]).status, 200);

    assert_eq!(
        curl(&format!("{url}/go"), &["-X", "POST", "--data-binary", "x"]).status,
        200
    );
    run.until("released");
    assert_eq!(run.finish().0["ok"], 1);
    let r = post_as(&servo, &quick.tgz, "quick.py", "a", TOKEN_A);
    assert_eq!(r.status, 200, "{}", r.body);
}

// ------------------------------------------------------------ policy check

#[test]
fn policy_check_names_the_tenant_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = tenants_file(dir.path(), "");
    let out = Command::new(servo_bin())
        .args(["policy", "check"])
        .arg(&good)
        .output()
        .expect("servo policy check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let cases = [
        (
            r#"{"tenants": [{"name": "a", "token": "x", "commands": ["ls", "rm"]}]}"#,
            "tenant `a`: commands: `rm` is not a toolset verb",
        ),
        (
            r#"{"tenants": [{"name": "a", "token": "x"}, {"name": "b", "token": "x"}]}"#,
            "tenant `b`: token: the same token as tenant `a`",
        ),
        (
            r#"{"tenants": [{"name": "a", "token": "x", "limits": {"concurrent_runs": "two"}}]}"#,
            "tenant `a`: limits:",
        ),
        (
            r#"{"tenants": [{"name": "a", "token": "x", "namespaces": ["A.b"]}]}"#,
            "tenant `a`: namespaces:",
        ),
    ];
    for (text, want) in cases {
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, text).expect("write");
        let out = Command::new(servo_bin())
            .args(["policy", "check"])
            .arg(&bad)
            .output()
            .expect("servo policy check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}: accepted");
        assert!(
            stderr.contains(want),
            "{text}\n  got: {stderr}\n want: {want}"
        );
        assert!(stderr.contains("bad.json"), "{stderr}");
    }
}

// ------------------------------------------------------------ relay order

/// `curl --unix-socket SOCKET -X POST -H 'X-Shell: LINE' http://portal/shell`.
async fn shell(socket: &Path, line: &str) -> Reply {
    let (socket, header) = (socket.to_path_buf(), format!("X-Shell: {line}"));
    tokio::task::spawn_blocking(move || {
        let socket = socket.to_str().expect("utf-8").to_string();
        curl(
            "http://portal/shell",
            &["--unix-socket", &socket, "-X", "POST", "-H", &header],
        )
    })
    .await
    .expect("curl task")
}

/// A relay for one run of tenant `a` (namespaces ["a"]) against a real HTTP portal.
async fn relay_run(
    audit: servo::audit::AuditTarget,
    portal: &support::fake_portal::FakePortal,
    root: &Path,
) -> servo::relay::RunRelay {
    use servo::tenants::{Portal, Tenant};
    let audit = std::sync::Arc::new(servo::audit::Audit::open(&audit).expect("audit"));
    let relay = std::sync::Arc::new(servo::relay::Relay::new(
        Portal::Url(portal.url.clone()),
        None,
        audit,
    ));
    let mut tenant = Tenant::default_tenant(TOKEN_A.into(), servo::limits::Limits::default());
    tenant.name = "a".into();
    tenant.namespaces = Some(vec!["a".into()]);
    let dir = root.join("relay");
    std::fs::create_dir(&dir).expect("mkdir");
    let run = relay
        .open_run(
            "run-1",
            std::sync::Arc::new(tenant),
            root.join("work"),
            dir,
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
        .await
        .expect("open_run");
    run.set_script("deploy.py");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_is_on_record_before_it_reaches_the_portal() {
    let portal = support::fake_portal::FakePortal::start(None).await;
    let root = tempfile::tempdir().expect("tempdir");

    // An audit log that cannot be written: nothing reaches the portal, not
    // even a command the policy allows.
    let run = relay_run(
        servo::audit::AuditTarget::File("/dev/full".into()),
        &portal,
        root.path(),
    )
    .await;
    for line in ["grep a.* -j", "kill a.web -j"] {
        let r = shell(run.socket_path(), line).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            r.json()["out"]
                .as_str()
                .unwrap_or("")
                .ends_with("the command was not relayed"),
            "{}",
            r.body
        );
    }
    assert!(portal.requests().is_empty(), "a command reached the portal");
    run.close().await;

    // A working log: the verdict, then the outcome, joined by `cmd`.
    let other = tempfile::tempdir().expect("tempdir");
    let path = other.path().join("audit.log");
    let run = relay_run(
        servo::audit::AuditTarget::File(path.clone()),
        &portal,
        other.path(),
    )
    .await;
    let r = shell(run.socket_path(), "ls -j").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = shell(run.socket_path(), "kill b.web -j").await;
    assert_eq!(r.status, 403, "{}", r.body);
    let sent: Vec<String> = portal.requests().iter().map(|q| q.line.clone()).collect();
    assert_eq!(sent, ["ls -j"]);
    let events = audit_lines(&path);
    let got: Vec<(&str, &str, u64)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["line"].as_str().unwrap(),
                e["cmd"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("portal.command", "ls -j", 1),
            ("portal.answered", "ls -j", 1),
            ("portal.command", "kill b.web -j", 2),
        ]
    );
    assert_eq!(events[0]["verdict"], "allowed");
    assert!(
        events[0].get("ok").is_none(),
        "the outcome is not known yet"
    );
    assert_eq!(events[1]["ok"], true);
    assert_eq!(
        (events[2]["verdict"].as_str(), events[2]["ok"].as_bool()),
        (Some("denied"), Some(false))
    );
    run.close().await;
}
