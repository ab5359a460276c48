//! What a script's `/http` may reach (SPEC §6.6), end to end: a real
//! `servo serve`, scripts in real sandboxes, a fake portal that is a real
//! HTTP server reporting whatever addresses a test wants, and a pod stub
//! that is a real HTTP server — on loopback, or inside a network namespace
//! behind a veth pair, as a pod on another host would be.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_portal::{FakePortal, PodStub};
use support::{bundle, post_bundle, require_root, runtime, Servo};

/// A script that asks the portal for the pods (`port`), then makes each
/// request of `REQUESTS` (a JSON list of `{"method", "path", "headers",
/// "host", "port"}`; without `port`, that of the reported pod whose ip is
/// `host`) and prints
/// one `RESULT {...}` line per request.
const PROBE: &str = r#"
import json
from servo import servo

with open('requests.json') as f:
    REQUESTS = json.load(f)

def url_of(ip, port, path):
    host = '[%s]' % ip if ':' in ip else ip
    return 'http://%s:%s%s' % (host, port, path)

with servo() as proxy:
    js = proxy('port 80 app.web')
    pods = {d['ip']: d['ports'] for _, d in js.items()}
    for r in REQUESTS:
        port = r.get('port') or pods[r['host']]
        url = url_of(r['host'], port, r.get('path', '/ping'))
        got = proxy.request(r.get('method', 'GET'), url, headers=r.get('headers'))
        print('RESULT ' + json.dumps({'url': url, 'status': got.status_code,
                                       'text': got.text, 'headers': got.headers}))
"#;

/// Runs [`PROBE`] with `requests` on `servo`; one answer per request.
fn probe(servo: &Servo, requests: &Value) -> Vec<Value> {
    let reqs = requests.to_string();
    let b = bundle(&[("probe.py", PROBE), ("requests.json", &reqs)]);
    let r = post_bundle(servo, &b.tgz, "probe.py", &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.body, servo.stderr());
    let results: Vec<Value> = r
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(|l| serde_json::from_str(l).expect("RESULT lines are JSON"))
        .collect();
    assert_eq!(
        results.len(),
        requests.as_array().map_or(0, Vec::len),
        "{}",
        r.body
    );
    results
}

/// Asserts `got` is a denial whose reason contains `why`.
fn assert_denied(got: &Value, why: &str) {
    assert_eq!(got["status"], 403, "{got}");
    let text = got["text"].as_str().unwrap_or("");
    assert!(text.starts_with("denied by policy: "), "{got}");
    assert!(text.contains(why), "expected `{why}` in {got}");
}

fn servo_addr(servo: &Servo) -> (String, u16) {
    let addr: std::net::SocketAddr = servo
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("servo listens on ip:port");
    (addr.ip().to_string(), addr.port())
}

fn portal_addr(portal: &FakePortal) -> std::net::SocketAddr {
    portal
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the fake portal is at ip:port")
}

// ---------------------------------------------------------------- refused whatever was reported

#[test]
fn reported_addresses_that_are_never_reachable_are_refused_with_their_reason() {
    if !require_root() {
        return;
    }
    let rt = runtime();
    let portal = rt.block_on(FakePortal::start(None));
    let pod = rt.block_on(PodStub::start());
    let portal_at = portal_addr(&portal);
    let port = pod.addr.port();

    // Defaults: the RFC 1918 ranges.
    let servo = Servo::start(&["--portal", &portal.url]);
    let (servo_ip, servo_port) = servo_addr(&servo);
    let reported = |extra: &[(&str, u16)]| {
        let mut pods: Vec<(String, u16)> = vec![
            ("127.0.0.1".into(), port),
            ("169.254.169.254".into(), 80),
            ("::1".into(), port),
            ("::ffff:127.0.0.1".into(), port),
            ("localhost".into(), port),
            (portal_at.ip().to_string(), portal_at.port()),
            ("0.0.0.0".into(), port),
        ];
        pods.extend(extra.iter().map(|(h, p)| (h.to_string(), *p)));
        pods
    };
    portal.set(|s| s.pods = reported(&[(&servo_ip, servo_port)]));
    let requests = serde_json::json!([
        {"host": "127.0.0.1", "port": port},
        {"host": "169.254.169.254", "port": 80, "path": "/latest/meta-data/"},
        {"host": "::1", "port": port},
        {"host": "::ffff:127.0.0.1", "port": port},
        {"host": "localhost", "port": port},
        {"host": portal_at.ip().to_string(), "port": portal_at.port(), "path": "/shell"},
        {"host": servo_ip, "port": servo_port, "path": "/health"},
        {"host": "0.0.0.0", "port": port},
    ]);
    let got = probe(&servo, &requests);
    assert_denied(
        &got[0],
        "127.0.0.1 is loopback (this host): not reachable from a run unless --pod-cidr lists a loopback range",
    );
    assert_denied(
        &got[1],
        "169.254.169.254 is link-local (cloud metadata): never reachable from a run",
    );
    assert_denied(&got[2], "::1 is loopback");
    assert_denied(&got[3], "127.0.0.1 is loopback");
    assert_denied(
        &got[4],
        "localhost was reported as a name: names are never resolved for reported targets",
    );
    // Loopback is the first reason for these two on defaults.
    assert_denied(&got[5], "is loopback");
    assert_denied(&got[6], "is loopback");
    assert_denied(&got[7], "0.0.0.0 is the unspecified address");
    let denials = servo
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "portal.command" && e["verdict"] == "denied")
        .count();
    assert_eq!(denials, 8, "every denial is audited");
    drop(servo);

    // A single-host set-up lists loopback; link-local stays refused even
    // when listed, and so do servo itself and the portal.
    let servo = Servo::start(&[
        "--portal",
        &portal.url,
        "--pod-cidr",
        "127.0.0.0/8",
        "--pod-cidr",
        "169.254.0.0/16",
    ]);
    let (servo_ip, servo_port) = servo_addr(&servo);
    portal.set(|s| s.pods = reported(&[(&servo_ip, servo_port)]));
    let requests = serde_json::json!([
        {"host": "127.0.0.1", "port": port},
        {"host": "169.254.169.254", "port": 80, "path": "/latest/meta-data/"},
        {"host": "::1", "port": port},
        {"host": "localhost", "port": port},
        {"host": portal_at.ip().to_string(), "port": portal_at.port(), "path": "/shell"},
        {"host": servo_ip, "port": servo_port, "path": "/health"},
        {"host": "::ffff:127.0.0.1", "port": port},
    ]);
    let got = probe(&servo, &requests);
    assert_eq!(got[0]["status"], 200, "{}", got[0]);
    assert_eq!(got[0]["text"], "pong");
    assert_denied(&got[1], "169.254.169.254 is link-local (cloud metadata)");
    assert_denied(&got[2], "::1 is loopback");
    assert_denied(&got[3], "names are never resolved");
    assert_denied(
        &got[4],
        &format!("{portal_at} is the portal's address: never reachable from a run"),
    );
    assert_denied(
        &got[5],
        &format!("{servo_ip}:{servo_port} is servo's own listen address"),
    );
    // The mapped form reaches the same stub: it is checked as 127.0.0.1.
    assert_eq!(got[6]["status"], 200, "{}", got[6]);
    assert_eq!(
        pod.hits.load(Ordering::SeqCst),
        2,
        "only the allowed requests went out"
    );
    assert_eq!(
        portal.state.lock().unwrap().other_hits,
        0,
        "the portal was reached as a pod"
    );
}

// ---------------------------------------------------------------- a pod in a network namespace

/// Tests that need network namespaces fail (not skip) in CI.
fn require_netns() -> bool {
    let ok = Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("this test needs `ip` (iproute2) and network namespaces, and CI=true");
    }
    eprintln!("skipped: needs `ip` (iproute2) and network namespaces");
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pod stub: any method on any path, each request recorded as one JSON
/// line (method, path, headers) in LOG; `/ping` → `pong`, `/redirect` →
/// 302 to the metadata address; answers carry hop-by-hop headers that must
/// not reach the script. Writes its port to PORTFILE once it listens.
const POD_STUB: &str = r#"
import http.server, json, sys
addr, portfile, log = sys.argv[1], sys.argv[2], sys.argv[3]

class H(http.server.BaseHTTPRequestHandler):
    def handle_one(self):
        n = int(self.headers.get('Content-Length') or 0)
        if n:
            self.rfile.read(n)
        with open(log, 'a') as f:
            f.write(json.dumps({'method': self.command, 'path': self.path,
                                'headers': [[k, v] for k, v in self.headers.items()]}) + '\n')
        if self.path == '/redirect':
            self.send_response(302)
            self.send_header('Location', 'http://169.254.169.254/latest/meta-data/')
            body = b''
        elif self.path == '/ping':
            self.send_response(200)
            body = b'pong'
        else:
            self.send_response(404)
            body = b'no such page'
        self.send_header('Connection', 'close, X-Resp-Secret')
        self.send_header('X-Resp-Secret', 'hop')
        self.send_header('Keep-Alive', 'timeout=5')
        self.send_header('X-Pod', 'stub')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_one
    do_TRACE = do_CONNECT = do_OPTIONS = handle_one
    def log_message(self, *a):
        pass

srv = http.server.ThreadingHTTPServer((addr, 0), H)
with open(portfile + '.tmp', 'w') as f:
    f.write(str(srv.server_address[1]))
import os
os.rename(portfile + '.tmp', portfile)
srv.serve_forever()
"#;

/// A network namespace with a veth pair (198.18.0.1/30 here, 198.18.0.2/30
/// there) and the pod stub listening inside on 198.18.0.2. Dropping it
/// stops the stub and removes the veth pair and the namespace, failed test
/// or not.
struct PodNet {
    ns: String,
    veth: String,
    stub: Option<Child>,
    _dir: tempfile::TempDir,
    log: PathBuf,
    port: u16,
}

const POD_IP: &str = "198.18.0.2";

impl PodNet {
    fn start() -> PodNet {
        let id = std::process::id();
        let ns = format!("servo-egress-{id}");
        let veth = format!("sveg{}", id % 10_000_000);
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("requests.log");
        let mut net = PodNet {
            ns,
            veth,
            stub: None,
            log,
            _dir: dir,
            port: 0,
        };
        // Left over by a killed earlier run with the same pid: gone first.
        net.remove();
        let (ns, veth) = (net.ns.clone(), net.veth.clone());
        let peer = format!("{veth}p");
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", &peer, "netns", &ns,
        ]);
        ip(&["addr", "add", "198.18.0.1/30", "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        ip(&["-n", &ns, "addr", "add", "198.18.0.2/30", "dev", &peer]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let script = net._dir.path().join("stub.py");
        std::fs::write(&script, POD_STUB).expect("write stub");
        let portfile = net._dir.path().join("port");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/bin/python3"])
            .arg(&script)
            .arg(POD_IP)
            .arg(&portfile)
            .arg(&net.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the pod stub");
        net.stub = Some(child);
        net.port = wait_port(&portfile, net.stub.as_mut().expect("stub"));
        net
    }

    /// What the stub received so far, one JSON object per request.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("stub log lines are JSON"))
            .collect()
    }

    fn remove(&self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&["link", "del", &self.veth]);
        quiet(&["netns", "del", &self.ns]);
    }
}

fn wait_port(portfile: &Path, child: &mut Child) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(port) = std::fs::read_to_string(portfile)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            return port;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the pod stub exited with {status}");
        }
        assert!(Instant::now() < deadline, "the pod stub did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        if let Some(mut child) = self.stub.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.remove();
    }
}

fn header<'a>(req: &'a Value, name: &str) -> Option<&'a str> {
    req["headers"].as_array()?.iter().find_map(|h| {
        let h = h.as_array()?;
        h.first()?
            .as_str()?
            .eq_ignore_ascii_case(name)
            .then(|| h.get(1)?.as_str())?
    })
}

#[test]
fn a_pod_in_a_network_namespace_answers_only_inside_the_pod_cidr() {
    if !require_root() || !require_netns() {
        return;
    }
    let net = PodNet::start();
    let rt = runtime();
    let portal = rt.block_on(FakePortal::start(None));
    portal.set(|s| s.pods = vec![(POD_IP.into(), net.port)]);
    let pod = format!("{POD_IP}:{}", net.port);

    // Defaults (RFC 1918): 198.18.0.2 is not a pod network.
    let servo = Servo::start(&["--portal", &portal.url]);
    let got = probe(&servo, &serde_json::json!([{"host": POD_IP}]));
    assert_denied(
        &got[0],
        "198.18.0.2 was reported by the portal but is outside the pod networks (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7; see --pod-cidr)",
    );
    assert!(net.requests().is_empty(), "{:?}", net.requests());
    drop(servo);

    let servo = Servo::start(&["--portal", &portal.url, "--pod-cidr", "198.18.0.0/15"]);
    let health = support::curl(&format!("{}/health", servo.url), &[]).json();
    assert_eq!(health["pod_cidrs"], serde_json::json!(["198.18.0.0/15"]));
    let requests = serde_json::json!([
        {"host": POD_IP},
        {"host": POD_IP, "method": "TRACE"},
        {"host": POD_IP, "method": "CONNECT"},
        {"host": POD_IP, "method": "OPTIONS"},
        {"host": POD_IP, "path": "/headers", "headers": {
            "Connection": "close, X-Secret",
            "X-Secret": "must not reach the pod",
            "Upgrade": "websocket",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "X-Kept": "kept",
        }},
        {"host": POD_IP, "path": "/headers", "headers": {"Host": "169.254.169.254"}},
        {"host": POD_IP, "path": "/headers", "headers": {"host": pod}},
        {"host": POD_IP, "path": "/redirect"},
        {"host": POD_IP, "method": "DELETE", "path": "/ping"},
    ]);
    let got = probe(&servo, &requests);
    assert_eq!(got[0]["status"], 200, "{}", got[0]);
    assert_eq!(got[0]["text"], "pong");
    // Hop-by-hop headers of the answer are not passed back either.
    let answer_headers = got[0]["headers"].as_object().expect("headers");
    assert_eq!(answer_headers.get("x-pod"), Some(&Value::from("stub")));
    for h in ["connection", "keep-alive", "x-resp-secret"] {
        assert!(!answer_headers.contains_key(h), "{h} came back: {}", got[0]);
    }
    assert_denied(&got[1], "the method `TRACE` is not relayed");
    assert_denied(&got[2], "the method `CONNECT` is not relayed");
    assert_denied(&got[3], "the method `OPTIONS` is not relayed");
    assert_eq!(got[4]["status"], 404, "{}", got[4]);
    assert_denied(
        &got[5],
        &format!("the Host header `169.254.169.254` differs from the URL's host `{pod}`"),
    );
    assert_eq!(got[6]["status"], 404, "{}", got[6]);
    // The redirect comes back as it is; nobody follows it.
    assert_eq!(got[7]["status"], 302, "{}", got[7]);
    assert_eq!(
        got[7]["headers"]["location"],
        "http://169.254.169.254/latest/meta-data/"
    );
    assert_eq!(got[8]["status"], 200, "{}", got[8]);

    let seen = net.requests();
    let summary: Vec<String> = seen
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap_or(""),
                r["path"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "GET /ping",
            "GET /headers",
            "GET /headers",
            "GET /redirect",
            "DELETE /ping"
        ],
        "denied requests reached the pod, or a redirect was followed"
    );
    let with_headers = &seen[1];
    for h in [
        "connection",
        "x-secret",
        "upgrade",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert_eq!(
            header(with_headers, h),
            None,
            "{h} reached the pod: {with_headers}"
        );
    }
    assert_eq!(header(with_headers, "x-kept"), Some("kept"));
    assert_eq!(header(with_headers, "host"), Some(pod.as_str()));
    assert_eq!(header(&seen[2], "host"), Some(pod.as_str()));

    let audit = servo.audit();
    let http: Vec<&Value> = audit
        .iter()
        .filter(|e| {
            e["event"] == "portal.command" && e["line"].as_str().is_some_and(|l| l.contains(POD_IP))
        })
        .collect();
    assert_eq!(http.len(), 9, "every /http request is audited");
    let denied: Vec<&str> = http
        .iter()
        .filter(|e| e["verdict"] == "denied")
        .filter_map(|e| e["line"].as_str())
        .collect();
    assert_eq!(denied.len(), 4, "{denied:?}");
    assert!(denied[0].starts_with("TRACE "), "{denied:?}");
}
