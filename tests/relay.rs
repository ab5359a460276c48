//! The portal relay (SPEC §6) driven by real clients: `curl --unix-socket`
//! and /usr/bin/python3 importing the `servo` package, against the built-in
//! simulator or a fake portal that is a real HTTP server.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use servo::audit::{Audit, AuditTarget};
use servo::limits::Limits;
use servo::relay::egress::{Cidr, EgressConfig};
use servo::relay::{Relay, RunRelay};
use servo::tenants::{Portal, Tenant};
use support::fake_portal::{Behaviour, FakePortal, PodStub};

const PORTAL_TOKEN: &str = "portal-secret-token";

/// One relay with one run open, its socket in a temp dir.
struct Harness {
    relay: Arc<Relay>,
    dir: tempfile::TempDir,
    audit_path: PathBuf,
    run: RunRelay,
}

fn tenant() -> Tenant {
    Tenant::default_tenant("tenant-token".into(), Limits::default())
}

fn restricted(namespaces: &[&str], commands: Option<&[&str]>) -> Tenant {
    let mut t = tenant();
    t.name = "pay".into();
    t.namespaces = Some(namespaces.iter().map(|s| s.to_string()).collect());
    t.commands = commands.map(|c| c.iter().map(|s| s.to_string()).collect());
    t
}

async fn open_run(relay: &Arc<Relay>, root: &Path, run: &str, tenant: Tenant) -> RunRelay {
    let dir = root.join(run);
    std::fs::create_dir(&dir).unwrap();
    let run = relay
        .open_run(
            run,
            Arc::new(tenant),
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

impl Harness {
    async fn start(portal: Portal, token: Option<&str>, tenant: Tenant) -> Harness {
        Self::start_with(portal, token, tenant, |_| {}).await
    }

    async fn start_with(
        portal: Portal,
        token: Option<&str>,
        tenant: Tenant,
        tune: impl FnOnce(&mut Relay),
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let audit_path = dir.path().join("audit.log");
        let audit = Arc::new(Audit::open(&AuditTarget::File(audit_path.clone())).unwrap());
        let mut relay = Relay::new(portal, token.map(str::to_string), audit);
        tune(&mut relay);
        let relay = Arc::new(relay);
        let run = open_run(&relay, dir.path(), "run-1", tenant).await;
        Harness {
            relay,
            dir,
            audit_path,
            run,
        }
    }

    fn socket(&self) -> PathBuf {
        self.run.socket_path().to_path_buf()
    }

    /// `portal.command` records of the audit log, each completed with the
    /// `ok` and `ms` of its `portal.answered` record (same `cmd`), if any.
    fn commands(&self) -> Vec<Value> {
        let events: Vec<Value> = std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect();
        let mut commands: Vec<Value> = events
            .iter()
            .filter(|v| v["event"] == "portal.command")
            .cloned()
            .collect();
        for answered in events.iter().filter(|v| v["event"] == "portal.answered") {
            let cmd = commands
                .iter_mut()
                .find(|c| c["cmd"] == answered["cmd"])
                .expect("portal.answered follows its portal.command");
            cmd["ok"] = answered["ok"].clone();
            cmd["ms"] = answered["ms"].clone();
        }
        commands
    }

    /// A work dir for python scripts, with `files` in it.
    fn workdir(&self, files: &[(&str, &[u8])]) -> PathBuf {
        let work = self.dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        for (name, data) in files {
            std::fs::write(work.join(name), data).unwrap();
        }
        work
    }
}

/// Output of a python3 script run against `socket`.
struct Py {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs a python3 script against `socket` (the future owns everything it needs).
fn python(
    socket: &Path,
    cwd: &Path,
    script: &str,
) -> impl std::future::Future<Output = Py> + Send + 'static {
    let mut cmd = tokio::process::Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(script)
        .env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/python"))
        .env("SERVO_SOCKET", socket)
        .current_dir(cwd)
        .kill_on_drop(true);
    async move {
        let out = cmd.output().await.expect("python3");
        Py {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `curl --unix-socket SOCKET -X POST http://portal/PATH` with extra args.
async fn curl(socket: &Path, path: &str, args: &[&str]) -> support::Reply {
    let mut all: Vec<String> = vec![
        "--unix-socket".into(),
        socket.to_str().unwrap().into(),
        "-X".into(),
        "POST".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let url = format!("http://portal{path}");
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        support::curl(&url, &refs)
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------- simulator

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_deploy_ls_scale_kill() {
    let h = Harness::start(Portal::Sim, None, tenant()).await;
    let work = h.workdir(&[(
        "web.yml",
        b"cluster: web\nimage: repo/web:1\nports:\n  - 8080\n",
    )]);
    let py = python(
        &h.socket(),
        &work,
        r#"
import json
from servo import servo
with servo(verbose=True) as proxy:
    js = proxy('ls')
    assert 'marathon.portal' in js and 'marathon.servo' in js, js
    up = proxy('deploy web.yml -n app -p 2')
    assert up == {'web.yml': {'ok': True, 'up': [1, 2]}}, up
    assert proxy('ls')['app.web']['total'] == 2
    sc = proxy('scale app.web -f @3')
    assert sc['app.web']['up'] == [3], sc
    assert proxy('ls')['app.web'] == {'total': 3, 'running': 3, 'status': ''}
    k = proxy('kill app.web')
    assert k == {'app.web': {'ok': True, 'down': [1, 2, 3]}}, k
    assert 'app.web' not in proxy('ls')
    print('done')
"#,
    )
    .await;
    assert_eq!(py.code, 0, "{}\n{}", py.stdout, py.stderr);
    assert!(
        py.stdout
            .contains("[passed] \"deploy web.yml -n app -p 2\""),
        "{}",
        py.stdout
    );
    assert!(py.stdout.contains("done"));

    // Unknown verb: denied with the verb list (curl, as a script would).
    let r = curl(&h.socket(), "/shell", &["-H", "X-Shell: frobnicate -j"]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert!(v["out"]
        .as_str()
        .unwrap()
        .contains("not a toolset command (commands: ls grep poll port"));

    // The deploy was audited with the file's digest, named by the script.
    let recs = h.commands();
    let deploy = recs
        .iter()
        .find(|r| r["line"] == "deploy web.yml -n app -p 2 -j")
        .expect("deploy audited");
    assert_eq!(deploy["script"], "deploy.py");
    assert_eq!(deploy["verdict"], "allowed");
    assert_eq!(deploy["ok"], true);
    assert_eq!(deploy["run"], "run-1");
    let sha = std::process::Command::new("sha256sum")
        .arg(work.join("web.yml"))
        .output()
        .unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout);
    assert_eq!(
        deploy["files"][0],
        serde_json::json!({"name": "web.yml", "sha256": sha.split_whitespace().next().unwrap()})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_examples_run_against_the_simulator() {
    let h = Harness::start(Portal::Sim, None, tenant()).await;
    let work = h.workdir(&[("web.yml", b"cluster: web\nimage: r/w:2\nports:\n  - 80\n")]);
    // Example 1, with Python 3's print().
    let py = python(
        &h.socket(),
        &work,
        r#"
from servo import servo

if __name__ == '__main__':

    with servo(verbose=True) as proxy:
        js = proxy('ls')
        print(js.keys())
"#,
    )
    .await;
    assert_eq!(py.code, 0, "{}\n{}", py.stdout, py.stderr);
    assert!(py.stdout.contains("[passed] \"ls\""), "{}", py.stdout);
    assert!(py.stdout.contains("'marathon.servo'"), "{}", py.stdout);

    // Example 2, with `get = proxy.get(url)` instead of requests.
    let py = python(
        &h.socket(),
        &work,
        r#"
from servo import servo

prefix = 'app'

if __name__ == '__main__':
    with servo(verbose=True) as proxy:
        proxy('deploy web.yml -n app -p 2')
        js = proxy('port 80 %s.web' % prefix)
        urls = ['http://%s:%s/ping' % (details['ip'], details['ports']) for _, details in js.items()]
        assert len(urls) == 2, urls

        for url in urls:
            get = proxy.get(url)
            code = get.status_code
            assert code < 300, 'GET %s -> HTTP %d' % (url, code)
            assert get.text == 'pong', get.text
        print('checked', len(urls))
"#,
    )
    .await;
    assert_eq!(py.code, 0, "{}\n{}", py.stdout, py.stderr);
    assert!(
        py.stdout.contains("[passed] \"port 80 app.web\""),
        "{}",
        py.stdout
    );
    assert!(py.stdout.contains("checked 2"), "{}", py.stdout);
}

// ---------------------------------------------------------------- real portal

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_files_reach_the_portal_signed() {
    let portal = FakePortal::start(Some(PORTAL_TOKEN)).await;
    let h = Harness::start(
        Portal::Url(portal.url.clone()),
        Some(PORTAL_TOKEN),
        tenant(),
    )
    .await;
    // Bytes a text-mode or re-encoding bug would change, in a file the
    // deploy policy accepts (one plain YAML document).
    let mut yml: Vec<u8> =
        "cluster: web\r\nimage: x\n# --servo-boundary\r\n# é ü 中\nsettings:\n  blob: \""
            .as_bytes()
            .to_vec();
    yml.extend((0..70_000).map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789 -_"[i % 39]));
    yml.extend_from_slice(b"\"\n");
    let work = h.workdir(&[("web.yml", &yml)]);
    let py = python(
        &h.socket(),
        &work,
        r#"
from servo import servo
with servo() as proxy:
    js = proxy('ls')
    print(sorted(js))
    print(proxy('deploy web.yml -n app'))
"#,
    )
    .await;
    assert_eq!(py.code, 0, "{}\n{}", py.stdout, py.stderr);
    assert!(
        py.stdout.contains("['app.web', 'marathon.web']"),
        "{}",
        py.stdout
    );
    assert!(
        py.stdout.contains("{'web.yml': {'ok': True, 'up': [1]}}"),
        "{}",
        py.stdout
    );

    let reqs = portal.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].line, "ls -j");
    assert!(reqs.iter().all(|r| r.signature_ok), "{reqs:?}");
    // The signature is the real openssl HMAC-SHA1 of the line.
    let openssl = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf %s 'deploy web.yml -n app -j' | openssl dgst -sha1 -hmac '{PORTAL_TOKEN}'"
        ))
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&openssl.stdout);
    let hex = hex.split_whitespace().last().unwrap();
    assert_eq!(reqs[1].line, "deploy web.yml -n app -j");
    assert_eq!(
        reqs[1].signature.as_deref(),
        Some(format!("sha1={hex}").as_str())
    );
    assert_eq!(reqs[1].files.len(), 1);
    assert_eq!(reqs[1].files[0].0, "web.yml");
    assert!(reqs[1].files[0].1 == yml, "the file arrived changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_portal_token_fails_clearly() {
    let portal = FakePortal::start(Some(PORTAL_TOKEN)).await;
    let h = Harness::start(
        Portal::Url(portal.url.clone()),
        Some("not-the-token"),
        tenant(),
    )
    .await;
    let py = python(
        &h.socket(),
        &h.workdir(&[]),
        "from servo import servo\nwith servo() as proxy:\n    proxy('ls')\n    print('not reached')\n",
    )
    .await;
    assert_eq!(py.code, 1, "{}\n{}", py.stdout, py.stderr);
    assert_eq!(
        py.stdout.trim(),
        "failure -> \"ls\" failed: the portal refused the command (HTTP 403): check servo's --portal-token"
    );
    assert!(!py.stdout.contains("not reached"));
    assert!(!portal.requests()[0].signature_ok);
    let rec = &h.commands()[0];
    assert_eq!(
        (rec["verdict"].as_str(), rec["ok"].as_bool()),
        (Some("allowed"), Some(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_down_slow_or_garbage_is_reported() {
    // Down: a port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let h = Harness::start(Portal::Url(format!("http://{closed}")), None, tenant()).await;
    let r = curl(&h.socket(), "/shell", &["-H", "X-Shell: ls -j"]).await;
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert!(
        v["out"]
            .as_str()
            .unwrap()
            .starts_with("portal unreachable: "),
        "{v}"
    );
    let py = python(
        &h.socket(),
        &h.workdir(&[]),
        "from servo import servo\nwith servo() as proxy:\n    proxy('ls')\n",
    )
    .await;
    assert_eq!(py.code, 1);
    assert!(
        py.stdout.starts_with("failure -> is the portal down ?"),
        "{}",
        py.stdout
    );

    // Slow: the relay gives up after its (short) timeout.
    let portal = FakePortal::start(None).await;
    portal.set(|s| s.behaviour = Behaviour::Slow(Duration::from_secs(20)));
    let h = Harness::start_with(Portal::Url(portal.url.clone()), None, tenant(), |r| {
        r.portal_timeout = Duration::from_millis(300)
    })
    .await;
    let v = curl(&h.socket(), "/shell", &["-H", "X-Shell: ls -j"])
        .await
        .json();
    assert_eq!(v["ok"], false);
    assert!(
        v["out"]
            .as_str()
            .unwrap()
            .contains("portal unreachable: no answer within"),
        "{v}"
    );

    // Garbage: not the portal's JSON.
    portal.set(|s| s.behaviour = Behaviour::Garbage);
    let v = curl(&h.socket(), "/shell", &["-H", "X-Shell: ls -j"])
        .await
        .json();
    assert_eq!(v["ok"], false);
    assert!(
        v["out"].as_str().unwrap().contains(
            "portal unreachable: the portal answered HTTP 200 with something that is not"
        ),
        "{v}"
    );

    // The relay itself gone: the package says so.
    let py = python(
        &h.dir.path().join("nowhere.sock"),
        &h.workdir(&[]),
        "from servo import servo\nwith servo() as proxy:\n    proxy('ls')\n",
    )
    .await;
    assert_eq!(py.code, 1);
    assert_eq!(py.stdout.trim(), "failure -> is the portal down ?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_only_to_reported_endpoints() {
    let portal = FakePortal::start(None).await;
    let pod = PodStub::start().await;
    let other = PodStub::start().await;
    portal.set(|s| s.pod = Some(pod.addr));
    // The stubs listen on loopback: a single-host set-up lists it (§6.6).
    let h = Harness::start_with(Portal::Url(portal.url.clone()), None, tenant(), |r| {
        r.egress = Arc::new(EgressConfig::new(
            vec![Cidr::parse("127.0.0.0/8").unwrap()],
            Vec::new(),
        ));
    })
    .await;
    let script = format!(
        r#"
from servo import servo
with servo() as proxy:
    early = proxy.get('http://{pod}/ping')
    assert early.status_code == 403, early.status_code
    assert 'denied by policy' in early.text, early.text
    js = proxy('port 80 app.web')
    urls = ['http://%s:%s/ping' % (d['ip'], d['ports']) for _, d in js.items()]
    assert urls == ['http://{pod}/ping'], urls
    get = proxy.get(urls[0])
    assert get.status_code == 200 and get.text == 'pong', (get.status_code, get.text)
    missing = proxy.get('http://{pod}/nope')
    assert missing.status_code == 404, missing.status_code
    raw = proxy.get('http://{pod}/bin')
    assert raw.content == b'\xff\x00\x01', raw.content
    echo = proxy.post('http://{pod}/echo', data={{'a': 'b c'}})
    assert echo.text == 'POST application/x-www-form-urlencoded a=b+c', echo.text
    echo = proxy.post('http://{pod}/echo', json={{'k': 1}})
    assert echo.text == 'POST application/json {{"k": 1}}', echo.text
    denied = proxy.get('http://{other}/ping')
    assert denied.status_code == 403, denied.status_code
    print('ok')
"#,
        pod = pod.addr,
        other = other.addr
    );
    let py = python(&h.socket(), &h.workdir(&[]), &script).await;
    assert_eq!(py.code, 0, "{}\n{}", py.stdout, py.stderr);
    assert_eq!(
        other.hits.load(Ordering::SeqCst),
        0,
        "a denied request went out"
    );
    assert_eq!(pod.hits.load(Ordering::SeqCst), 5);
    let recs = h.commands();
    let denied: Vec<&Value> = recs.iter().filter(|r| r["verdict"] == "denied").collect();
    assert_eq!(denied.len(), 2, "{recs:?}");
    assert_eq!(denied[1]["line"], format!("GET http://{}/ping", other.addr));
    assert!(denied[1]["reason"]
        .as_str()
        .unwrap()
        .contains("was not reported"));

    // A tenant egress rule opens the other one.
    let mut t = tenant();
    t.egress = vec![format!("127.0.0.0/8:{}", other.addr.port())];
    let run2 = open_run(&h.relay, h.dir.path(), "run-2", t).await;
    let body = format!(
        r#"{{"method": "GET", "url": "http://{}/ping"}}"#,
        other.addr
    );
    let v = curl(run2.socket_path(), "/http", &["--data-binary", &body])
        .await
        .json();
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["body"], "pong");
    assert_eq!(v["body_base64"], false);
    // Endpoints are per run: run-2 never saw the `port` answer of run-1.
    let body = format!(r#"{{"url": "http://{}/ping"}}"#, pod.addr);
    let r = curl(run2.socket_path(), "/http", &["--data-binary", &body]).await;
    assert_eq!(r.status, 403, "{}", r.body);
}

// ---------------------------------------------------------------- policy, audit, limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_denials_and_rewrites() {
    let t = restricted(&["app"], Some(&["ls", "deploy", "kill", "port"]));
    let h = Harness::start(Portal::Sim, None, t).await;
    let work = h.workdir(&[("web.yml", b"cluster: web\nimage: nginx\nports:\n  - 80\n")]);

    let r = curl(&h.socket(), "/shell", &["-H", "X-Shell: kill *.web -j"]).await;
    assert_eq!(r.status, 403);
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert!(
        v["out"]
            .as_str()
            .unwrap()
            .starts_with("denied by policy: `*.web` is outside"),
        "{v}"
    );

    let r = curl(
        &h.socket(),
        "/shell",
        &["-H", "X-Shell: scale app.web -f @2 -j"],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("`scale` is not among"), "{}", r.body);

    // deploy without -n lands in the tenant's one namespace; ls is narrowed to it.
    let py = python(
        &h.socket(),
        &work,
        r#"
from servo import servo
with servo() as proxy:
    assert proxy('deploy web.yml')['web.yml']['ok']
    js = proxy('ls')
    assert list(js) == ['app.web'], js
    assert list(proxy('port 80 app.*')) == ['app.web #1']
    print('ok')
"#,
    )
    .await;
    assert_eq!(py.code, 0, "{}\n{}", py.stdout, py.stderr);

    // Strict mode: a denial aborts the block with `failure -> ...`.
    let py = python(
        &h.socket(),
        &work,
        "from servo import servo\nwith servo(verbose=True) as proxy:\n    proxy('kill marathon.servo')\n    print('not reached')\n",
    )
    .await;
    assert_eq!(py.code, 1);
    assert!(
        py.stdout.contains("[failed] \"kill marathon.servo\""),
        "{}",
        py.stdout
    );
    assert!(
        py.stdout
            .contains("failure -> \"kill marathon.servo\" failed: denied by policy"),
        "{}",
        py.stdout
    );
    assert!(!py.stdout.contains("not reached"));
    // Not strict: None, and the script goes on.
    let py = python(
        &h.socket(),
        &work,
        "from servo import servo\nwith servo(strict=False) as proxy:\n    print(proxy('kill marathon.servo'))\n",
    )
    .await;
    assert_eq!((py.code, py.stdout.trim()), (0, "None"));

    let recs = h.commands();
    let lines: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| (r["line"].as_str().unwrap(), r["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(
        &lines[..5],
        &[
            ("kill *.web -j", "denied"),
            ("scale app.web -f @2 -j", "denied"),
            ("deploy web.yml -n app -j", "allowed"),
            ("ls -j", "allowed"),
            ("port 80 'app.*' -j", "allowed"),
        ]
    );
    assert_eq!(recs[2]["requested"], "deploy web.yml -j");
    assert!(recs[3].get("requested").is_none());
    // The audit log shows what was sent, and what the script asked when it differs.
    assert_eq!(recs[4]["requested"], "port 80 app.* -j");
    assert!(recs[1].get("requested").is_none());
    assert!(recs[0]["reason"]
        .as_str()
        .unwrap()
        .contains("outside tenant `pay`"));
    assert_eq!(recs[0]["tenant"], "pay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_fails_closed_without_an_audit_log() {
    let audit = Arc::new(Audit::open(&AuditTarget::File("/dev/full".into())).unwrap());
    let relay = Arc::new(Relay::new(Portal::Sim, None, audit));
    let dir = tempfile::tempdir().unwrap();
    let run = open_run(&relay, dir.path(), "run-1", tenant()).await;
    for _ in 0..2 {
        let r = curl(run.socket_path(), "/shell", &["-H", "X-Shell: ls -j"]).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.json()["out"]
            .as_str()
            .unwrap()
            .starts_with("audit log unavailable: "));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_answers() {
    let h = Harness::start(Portal::Sim, None, tenant()).await;
    let r = curl(&h.socket(), "/other", &["-H", "X-Shell: ls"]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["ok"], false);
    let r = curl(&h.socket(), "/shell", &[]).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("missing X-Shell"));
    let r = curl(
        &h.socket(),
        "/http",
        &["--data-binary", r#"{"url": "ftp://x/"}"#],
    )
    .await;
    assert_eq!(r.status, 400);

    // Over 64 MiB → 413, the file never reaches the portal.
    let big = h.dir.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 * 1024 * 1024 + 1)
        .unwrap();
    let arg = format!("big.yml=@{}", big.display());
    let r = curl(
        &h.socket(),
        "/shell",
        &["-H", "X-Shell: deploy big.yml -j", "-F", &arg],
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("64 MiB"));
    // A path in a file name is refused.
    let small = h.workdir(&[("w.yml", b"cluster: w\n")]).join("w.yml");
    let arg = format!("../w.yml=@{}", small.display());
    let r = curl(
        &h.socket(),
        "/shell",
        &["-H", "X-Shell: deploy w.yml -j", "-F", &arg],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("denied by policy: bad file name"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runs_flood_does_not_hold_up_another() {
    let portal = FakePortal::start(None).await;
    portal.set(|s| s.stall_verb = Some("poll".into()));
    let h = Harness::start(Portal::Url(portal.url.clone()), None, tenant()).await;
    let other = open_run(&h.relay, h.dir.path(), "run-2", tenant()).await;

    // run-1 floods its socket with 40 concurrent commands the portal stalls on.
    let flood = python(
        &h.socket(),
        &h.workdir(&[]),
        r#"
import threading
from servo import servo
with servo(strict=False) as proxy:
    ts = [threading.Thread(target=proxy, args=('poll app.*',)) for _ in range(40)]
    for t in ts: t.start()
    for t in ts: t.join()
"#,
    );
    let flood = tokio::spawn(flood);
    // Wait until the portal holds run-1's full share of requests.
    for _ in 0..600 {
        if portal.stalled_now.load(Ordering::SeqCst) >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(portal.stalled_now.load(Ordering::SeqCst), 8);

    let py = python(
        other.socket_path(),
        &h.workdir(&[]),
        r#"
from servo import servo
with servo() as proxy:
    n = sum(1 for _ in range(20) if proxy('ls') is not None)
    print(n)
"#,
    )
    .await;
    assert_eq!((py.code, py.stdout.trim()), (0, "20"), "{}", py.stderr);
    // run-2 finished while every flood request was still stalled, and run-1
    // never had more than 8 in flight.
    assert_eq!(portal.stalled_done.load(Ordering::SeqCst), 0);
    assert_eq!(portal.stalled_max.load(Ordering::SeqCst), 8);

    // Closing run-1 cuts its connections: the flooding script sees errors and ends.
    drop(h.run);
    let flood = tokio::time::timeout(Duration::from_secs(60), flood)
        .await
        .expect("the flood ends once its run is closed")
        .unwrap();
    // Its threads died on the cut connections (exceptions in threads do not end the block).
    assert!(flood.stderr.contains("PortalDown"), "{}", flood.stderr);
    assert!(!h.dir.path().join("run-1").join("portal.sock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_belongs_to_the_sandbox_user() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !support::require_root() {
        return;
    }
    let audit = Arc::new(Audit::open(&AuditTarget::Stdout).unwrap());
    let relay = Arc::new(Relay::new(Portal::Sim, None, audit));
    let dir = tempfile::tempdir().unwrap();
    let run = relay
        .open_run(
            "run-x",
            Arc::new(tenant()),
            dir.path().join("work"),
            dir.path().to_path_buf(),
            65534,
            65533,
        )
        .await
        .unwrap();
    let meta = std::fs::symlink_metadata(run.socket_path()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!((meta.uid(), meta.gid()), (65534, 65533));
    assert_eq!(meta.mode() & 0o7777, 0o660);
    run.close().await;
    assert!(!dir.path().join("portal.sock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_rules_name_is_resolved_once_and_every_address_checked() {
    let pod = PodStub::start().await;
    let port = pod.addr.port();
    let mut t = tenant();
    t.egress = vec![format!("localhost:{port}")];
    let body = format!(r#"{{"url": "http://localhost:{port}/ping"}}"#);

    // Defaults: localhost resolves to loopback, which is never a pod.
    let h = Harness::start(Portal::Sim, None, t.clone()).await;
    let r = curl(&h.socket(), "/http", &["--data-binary", &body]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let out = r.json()["out"].as_str().unwrap_or("").to_string();
    assert!(
        out.starts_with("denied by policy: localhost resolves to ") && out.contains("is loopback"),
        "{out}"
    );
    assert_eq!(pod.hits.load(Ordering::SeqCst), 0);

    // Loopback listed (both families: every address of the name must pass):
    // the connection goes to a checked address, Host stays the name.
    let h = Harness::start_with(Portal::Sim, None, t, |r| {
        r.egress = Arc::new(EgressConfig::new(
            vec![
                Cidr::parse("127.0.0.0/8").unwrap(),
                Cidr::parse("::1/128").unwrap(),
            ],
            Vec::new(),
        ));
    })
    .await;
    let v = curl(&h.socket(), "/http", &["--data-binary", &body])
        .await
        .json();
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["body"], "pong");
    assert_eq!(pod.hits.load(Ordering::SeqCst), 1);
}

/// The deploy files a script sends are policy (SPEC §6.3): what the portal's
/// unsafe YAML loader or Marathon would turn into code or privileges is
/// refused before anything reaches the portal; a plain file passes as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_yaml_that_could_escape_is_refused() {
    let portal = FakePortal::start(None).await;
    let mut t = restricted(&["app"], None);
    t.images = Some(vec!["registry.example.com/app/*".into()]);
    t.verbatim = vec!["cpus".into(), "container.docker.parameters".into()];
    let h = Harness::start(Portal::Url(portal.url.clone()), None, t).await;
    let plain: &[u8] =
        b"cluster: web\nimage: registry.example.com/app/web:1.2\nports:\n  - 8080\nverbatim:\n  cpus: 0.5\n";
    let bombs = format!(
        "cluster: web\nimage: registry.example.com/app/web:1\nsettings:\n  a: &a [x, x, x, x, x, x, x, x, x]\n{}",
        (b'b'..=b'u')
            .map(|c| {
                let prev = (c - 1) as char;
                let c = c as char;
                format!("  {c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n")
            })
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "python tag",
            b"cluster: web\nimage: registry.example.com/app/web:1\nsettings: !!python/object/apply:os.system ['touch /tmp/pwned']\n".to_vec(),
            "tag",
        ),
        (
            "merge key",
            b"cluster: web\nimage: registry.example.com/app/web:1\nsettings:\n  base: &b {x: 1}\n  more:\n    <<: *b\n".to_vec(),
            "<<",
        ),
        ("alias bomb", bombs.into_bytes(), "alias"),
        (
            "privileged",
            b"cluster: web\nimage: registry.example.com/app/web:1\nverbatim:\n  container:\n    docker:\n      parameters:\n        - key: privileged\n          value: 'true'\n".to_vec(),
            "privileged",
        ),
        (
            "host volume",
            b"cluster: web\nimage: registry.example.com/app/web:1\nverbatim:\n  container:\n    volumes:\n      - hostPath: /\n        containerPath: /host\n        mode: RW\n".to_vec(),
            "container.volumes",
        ),
        (
            "foreign image",
            b"cluster: web\nimage: evil.example.com/miner:latest\n".to_vec(),
            "image",
        ),
        (
            "two documents",
            b"cluster: web\nimage: registry.example.com/app/web:1\n---\ncluster: x\n".to_vec(),
            "document",
        ),
    ];
    for (what, bytes, word) in &cases {
        let work = h.workdir(&[("web.yml", bytes)]);
        let arg = format!("web.yml=@{}", work.join("web.yml").display());
        let r = curl(
            &h.socket(),
            "/shell",
            &["-H", "X-Shell: deploy web.yml -j", "-F", &arg],
        )
        .await;
        assert_eq!(r.status, 403, "{what}: {}", r.body);
        let out = r.json()["out"].as_str().unwrap_or("").to_string();
        assert!(
            out.starts_with("denied by policy: web.yml") && out.contains(word),
            "{what}: {out}"
        );
    }
    assert!(
        portal.requests().is_empty(),
        "a refused file reached the portal"
    );

    let work = h.workdir(&[("web.yml", plain)]);
    let arg = format!("web.yml=@{}", work.join("web.yml").display());
    let r = curl(
        &h.socket(),
        "/shell",
        &["-H", "X-Shell: deploy web.yml -j", "-F", &arg],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let reqs = portal.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].line, "deploy web.yml -n app -j");
    assert_eq!(reqs[0].files, vec![("web.yml".to_string(), plain.to_vec())]);
}
