//! The relay end to end (SPEC §6): scripts in real sandboxes, run by a real
//! `servo serve`, drive the simulator or a fake portal that is a real HTTP
//! server, through /run/servo/portal.sock.

mod support;

use std::process::Command;

use support::fake_portal::{Behaviour, FakePortal, PodStub};
use support::{
    bundle, curl, openssl_sign, post_bundle, require_root, runtime, servo_bin, Servo, TOKEN,
};

/// The fenced block that follows `<!-- tested: cd-bundle NAME -->` in the
/// docs (docs/http-api.md, "Driving the cluster from a script").
fn readme_block(name: &str) -> String {
    let readme = include_str!("../docs/http-api.md");
    let marker = format!("<!-- tested: cd-bundle {name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("docs/http-api.md has no block marked {marker}"))
        .1;
    let body = after
        .split_once("```")
        .and_then(|(_, rest)| rest.split_once('\n'))
        .map(|(_, rest)| rest)
        .expect("a fenced block after the marker");
    body.split_once("```").expect("closing fence").0.to_string()
}

#[test]
fn the_readme_cd_bundle_runs_unchanged_against_the_simulator() {
    if !require_root() {
        return;
    }
    let servo = Servo::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("bundle");
    std::fs::create_dir(&src).expect("mkdir");
    for name in ["web.yml", "deploy.py", "check.py"] {
        std::fs::write(src.join(name), readme_block(name)).expect("write");
    }
    // The README's own command, with the server's address and token.
    let out = Command::new(servo_bin())
        .args(["run", "./bundle", "deploy.py", "check.py"])
        .current_dir(dir.path())
        .env("SERVO_URL", &servo.url)
        .env("SERVO_TOKEN", TOKEN)
        .output()
        .expect("servo run");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "[passed] \"deploy web.yml -n app -p 2\"",
        "app.web: 2 pods running",
        "app.web #1 answers pong",
        "app.web #2 answers pong",
        "app.web now has 3 pods",
    ] {
        assert!(
            log.lines().any(|l| l == line),
            "missing {line:?} in:\n{log}"
        );
    }
    // Every relayed command is in the audit log, with the script that sent it.
    let commands: Vec<_> = servo
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "portal.command")
        .collect();
    assert!(commands.iter().any(|e| e["script"] == "deploy.py"
        && e["line"] == "deploy web.yml -n app -p 2 -j"
        && e["files"][0]["name"] == "web.yml"));
    assert!(commands.iter().any(|e| e["script"] == "check.py"));
}

#[test]
fn the_guides_first_example_and_curl_on_the_socket() {
    if !require_root() {
        return;
    }
    let servo = Servo::start(&[]);
    let b = bundle(&[
        (
            "list.py",
            "from servo import servo\n\nif __name__ == '__main__':\n\n    with servo(verbose=True) as proxy:\n        js = proxy('ls')\n        print(sorted(js.keys()))\n",
        ),
        (
            "raw.sh.py",
            "import subprocess\nprint(subprocess.run(['curl', '-sS', '--unix-socket', '/run/servo/portal.sock', '-H', 'X-Shell: ls -j', '-X', 'POST', 'http://portal/shell'], capture_output=True, text=True).stdout)\n",
        ),
    ]);
    let r = post_bundle(&servo, &b.tgz, "list.py+raw.sh.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.lines().contains(&"[passed] \"ls\""), "{}", r.body);
    assert!(
        r.lines().contains(&"['marathon.portal', 'marathon.servo']"),
        "{}",
        r.body
    );
    let raw = r
        .lines()
        .into_iter()
        .find(|l| l.starts_with('{'))
        .expect("curl's JSON answer");
    let v: serde_json::Value = serde_json::from_str(raw).expect("JSON");
    assert_eq!(v["ok"], true, "{raw}");
    assert!(v["out"]
        .as_str()
        .is_some_and(|o| o.contains("marathon.servo")));
}

#[test]
fn files_reach_a_real_portal_byte_identical_and_signed() {
    if !require_root() {
        return;
    }
    let rt = runtime();
    let portal = rt.block_on(FakePortal::start(Some("portal-secret")));
    let servo = Servo::start(&["--portal", &portal.url, "--portal-token", "portal-secret"]);
    let yml = "cluster: web\nimage: x/web:1\nports:\n  - 8080\n# \u{e9}t\u{e9}\n";
    let b = bundle(&[
        ("web.yml", yml),
        (
            "deploy.py",
            "from servo import servo\nwith servo(verbose=True) as proxy:\n    proxy('deploy web.yml -n app')\n",
        ),
    ]);
    let r = post_bundle(&servo, &b.tgz, "deploy.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let reqs = portal.requests();
    let deploy = reqs
        .iter()
        .find(|q| q.line.starts_with("deploy"))
        .expect("the portal got the deploy");
    assert_eq!(deploy.line, "deploy web.yml -n app -j");
    assert!(deploy.signature_ok, "{deploy:?}");
    assert_eq!(deploy.files.len(), 1);
    assert_eq!(deploy.files[0].0, "web.yml");
    assert_eq!(deploy.files[0].1, yml.as_bytes());
}

#[test]
fn a_wrong_portal_token_or_a_dead_portal_fails_the_script_cleanly() {
    if !require_root() {
        return;
    }
    let rt = runtime();
    let portal = rt.block_on(FakePortal::start(Some("portal-secret")));
    let script = "from servo import servo\nwith servo(verbose=True) as proxy:\n    proxy('ls')\n";
    let b = bundle(&[("ls.py", script)]);

    let servo = Servo::start(&["--portal", &portal.url, "--portal-token", "wrong"]);
    let r = post_bundle(&servo, &b.tgz, "ls.py", &[]);
    assert_eq!(r.status, 412, "{}", r.body);
    assert!(r.lines().contains(&"[failed] \"ls\""), "{}", r.body);
    assert_eq!(
        r.lines().last(),
        Some(&"failure (ls.py failed on exit code 1)")
    );
    drop(servo);

    // The portal answers garbage: the script fails, servo stays healthy.
    portal.set(|s| s.behaviour = Behaviour::Garbage);
    let servo = Servo::start(&["--portal", &portal.url, "--portal-token", "portal-secret"]);
    let r = post_bundle(&servo, &b.tgz, "ls.py", &[]);
    assert_eq!(r.status, 412, "{}", r.body);
    let health = support::curl(&format!("{}/health", servo.url), &[]);
    assert_eq!(health.status, 200);
    drop(servo);

    // Nobody listens: the package says the portal is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let servo = Servo::start(&["--portal", &dead]);
    let r = post_bundle(&servo, &b.tgz, "ls.py", &[]);
    assert_eq!(r.status, 412, "{}", r.body);
    assert!(
        r.body.contains("portal unreachable") || r.body.contains("is the portal down"),
        "{}",
        r.body
    );
}

#[test]
fn proxy_get_reaches_only_pods_the_portal_reported() {
    if !require_root() {
        return;
    }
    let rt = runtime();
    let portal = rt.block_on(FakePortal::start(None));
    let pod = rt.block_on(PodStub::start());
    portal.set(|s| s.pod = Some(pod.addr));
    // The stub listens on loopback: a single-host set-up lists it (§6.6).
    let servo = Servo::start(&["--portal", &portal.url, "--pod-cidr", "127.0.0.0/8"]);
    // The guide's second example, with `proxy.get` for `requests.get` (§6.6).
    let check = "from servo import servo\n\nprefix = 'app'\n\nif __name__ == '__main__':\n    with servo(verbose=True) as proxy:\n        js = proxy('port 80 %s.web' % prefix)\n        urls = ['http://%s:%s/ping' % (details['ip'], details['ports']) for _, details in js.items()]\n\n        for url in urls:\n            get = proxy.get(url)\n            code = get.status_code\n            assert code < 300, 'GET %s -> HTTP %d' % (url, code)\n        print('checked', len(urls))\n";
    let sneaky = "from servo import servo\nwith servo() as proxy:\n    get = proxy.get('http://127.0.0.1:1/secret')\n    print('status', get.status_code, get.text)\n";
    let b = bundle(&[("check.py", check), ("sneaky.py", sneaky)]);
    let r = post_bundle(&servo, &b.tgz, "check.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.lines().iter().any(|l| l.starts_with("checked ")),
        "{}",
        r.body
    );
    assert!(pod.hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    let r = post_bundle(&servo, &b.tgz, "sneaky.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let line = r
        .lines()
        .into_iter()
        .find(|l| l.starts_with("status "))
        .expect("status line");
    assert!(line.starts_with("status 403 denied by policy"), "{line}");
    let denied = servo.audit().into_iter().any(|e| {
        e["event"] == "portal.command"
            && e["verdict"] == "denied"
            && e["line"]
                .as_str()
                .is_some_and(|l| l.contains("127.0.0.1:1"))
    });
    assert!(denied, "the denied request is not audited");
}

#[test]
fn a_script_flooding_its_socket_does_not_stall_another_run() {
    if !require_root() {
        return;
    }
    // A stalled relay fails the quiet run within a minute, not ten.
    let servo = Servo::start(&["--max-runs", "4", "--limit", "script_timeout_s=60"]);
    // Leaving a `servo()` block exits the script (§6.2): the threads use the
    // package's proxy object inside one block.
    let flood = "import threading\nfrom servo import servo\nwith servo(strict=False) as proxy:\n    def hammer():\n        for _ in range(400):\n            proxy('ls')\n    ts = [threading.Thread(target=hammer) for _ in range(16)]\n    for t in ts: t.start()\n    for t in ts: t.join()\n    print('flood done')\n";
    let quiet = "from servo import servo\nwith servo() as proxy:\n    for _ in range(20):\n        assert proxy('ls') is not None\n    print('quiet done')\n";
    let b = bundle(&[("flood.py", flood), ("quiet.py", quiet)]);
    let tgz = b.tgz.clone();
    let url = servo.url.clone();
    let flooding = std::thread::spawn(move || {
        let sig = format!("X-Signature:{}", openssl_sign(&tgz, TOKEN));
        let form = format!("tgz=@{}", tgz.display());
        curl(
            &format!("{url}/run/flood.py"),
            &["-X", "POST", "-F", &form, "-H", &sig],
        )
    });
    // Let the flood get going, then run the quiet one beside it.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = post_bundle(&servo, &b.tgz, "quiet.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.lines().contains(&"quiet done"), "{}", r.body);
    let f = flooding.join().expect("flood thread");
    assert_eq!(f.status, 200, "{}", f.body);
    assert!(f.lines().contains(&"flood done"), "{}", f.body);
}
