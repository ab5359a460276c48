//! servo as an Ochothon pod (SPEC §13; reference/ochopod-protocol.md), end
//! to end: real `servo serve` processes started as Marathon starts a pod,
//! a real ZooKeeper, and a small double of the portal's tools (`lookup` and
//! `fire` of toolset/io.py: walk `/ochopod/clusters/*/pods/*`, POST to each
//! pod's control port through its `ports`).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::zookeeper::ZooKeeper;
use support::{bundle, curl, post_bundle, require_root, spawn_post, wait_in_flight, Servo, TOKEN};

// ---------------------------------------------------------------------------
// The tools' double.

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// fnmatch with `*` only, as the tools' cluster globs use it here.
fn glob_match(glob: &str, text: &str) -> bool {
    match glob.split_once('*') {
        None => glob == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|i| glob_match(tail, &text[head.len() + i..]))
        }
    }
}

/// One pod as `lookup` returns it: its znode's name and its JSON.
#[derive(Clone, Debug)]
struct Found {
    znode: String,
    hints: Value,
}

/// toolset/io.py `lookup(zk, glob)`: `<ns>.<cluster> #<seq>` → the pod.
fn lookup(zk: &str, glob: &str) -> BTreeMap<String, Found> {
    runtime().block_on(async {
        let client = zookeeper_client::Client::connect(zk).await.expect("zk");
        let mut pods = BTreeMap::new();
        let clusters = match client.list_children("/ochopod/clusters").await {
            Ok(c) => c,
            Err(zookeeper_client::Error::NoNode) => return pods,
            Err(e) => panic!("zk: {e}"),
        };
        for cluster in clusters.into_iter().filter(|c| glob_match(glob, c)) {
            let dir = format!("/ochopod/clusters/{cluster}/pods");
            let Ok(kids) = client.list_children(&dir).await else {
                continue;
            };
            for kid in kids {
                let Ok((data, _)) = client.get_data(&format!("{dir}/{kid}")).await else {
                    continue;
                };
                let hints: Value = serde_json::from_slice(&data).expect("breadcrumbs are JSON");
                let Some(seq) = hints["seq"].as_i64() else {
                    continue; // just created: its index is written next
                };
                pods.insert(format!("{cluster} #{seq}"), Found { znode: kid, hints });
            }
        }
        pods
    })
}

/// toolset/io.py `fire(zk, glob, command)`: POST to every pod's control
/// port; `<key>` → (HTTP status, JSON body).
fn fire(zk: &str, glob: &str, command: &str, timeout_s: u64) -> BTreeMap<String, (u16, Value)> {
    lookup(zk, glob)
        .into_iter()
        .map(|(key, pod)| {
            let h = &pod.hints;
            let port = h["port"].as_str().expect("port hint");
            let host_port = h["ports"][port]
                .as_u64()
                .unwrap_or_else(|| panic!("control port not exposed @ {key}"));
            let url = format!(
                "http://{}:{host_port}/{command}",
                h["ip"].as_str().expect("ip")
            );
            let reply = curl(&url, &["-X", "POST", "-m", &timeout_s.to_string()]);
            let body = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
            (key, (reply.status, body))
        })
        .collect()
}

/// Waits (bounded) until `lookup` shows exactly `keys` for `glob`.
fn wait_for_pods(zk: &str, glob: &str, keys: &[&str]) -> BTreeMap<String, Found> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = lookup(zk, glob);
        if pods.keys().map(String::as_str).eq(keys.iter().copied()) {
            return pods;
        }
        assert!(
            Instant::now() < deadline,
            "pods of {glob} never became {keys:?}: {:?}",
            pods.keys().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Pods as Marathon starts them.

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port()
}

struct Pod {
    servo: Servo,
    control: u16,
}

impl Pod {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.control)
    }
    fn post(&self, path: &str) -> (u16, Value) {
        let reply = curl(&self.url(path), &["-X", "POST", "-m", "30"]);
        (
            reply.status,
            serde_json::from_str(&reply.body).unwrap_or(Value::Null),
        )
    }
}

/// A servo started with the variables Marathon and Ochothon's `deploy` hand
/// a pod; the control port is PORT_8080 on the "node" (127.0.0.1).
fn start_pod(zk: &ZooKeeper, task: &str, extra: &[&str]) -> Pod {
    let control = free_port();
    let listen = format!("127.0.0.1:{control}");
    let port_var = control.to_string();
    let zk_url = zk.url("mesos");
    let mut args = vec!["--ochopod-listen", listen.as_str()];
    args.extend_from_slice(extra);
    let servo = Servo::start_with_env(
        &args,
        &[
            ("ochopod_cluster", "servo"),
            ("ochopod_namespace", "ci"),
            ("ochopod_application", ""),
            ("ochopod_task", ""),
            ("ochopod_port", "8080"),
            ("ochopod_debug", "false"),
            ("ochopod_start", "true"),
            ("ochopod_local", "false"),
            ("ochopod_zk", zk_url.as_str()),
            ("pod", "{}"),
            ("MARATHON_APP_ID", "/ci.servo"),
            ("MESOS_TASK_ID", task),
            ("HOST", "127.0.0.1"),
            ("PORT_8080", port_var.as_str()),
        ],
    );
    Pod { servo, control }
}

fn slow_bundle(seconds: u32) -> support::Bundle {
    bundle(&[(
        "slow.py",
        &format!("import time\ntime.sleep({seconds})\nprint('finished')"),
    )])
}

fn quick_bundle() -> support::Bundle {
    bundle(&[("hi.py", "print('hi')")])
}

/// The HTTP status of a background `spawn_post` (run with `-w %{http_code}`).
fn finished_status(child: std::process::Child) -> (u16, String) {
    let out = child.wait_with_output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    (status, text)
}

// ---------------------------------------------------------------------------

#[test]
fn pods_register_with_their_breadcrumbs_and_answer_info() {
    if !require_root() {
        return;
    }
    let zk = ZooKeeper::start();
    let a = start_pod(&zk, "ci.servo.task-a", &[]);
    let pods = wait_for_pods(&zk.address(), "ci.*", &["ci.servo #1"]);
    let crumbs = &pods["ci.servo #1"].hints;
    assert_eq!(crumbs["cluster"], "servo");
    assert_eq!(crumbs["namespace"], "ci");
    assert_eq!(crumbs["port"], "8080");
    assert_eq!(crumbs["debug"], "false");
    assert_eq!(crumbs["application"], "ci.servo");
    assert_eq!(crumbs["task"], "ci.servo.task-a");
    assert_eq!(crumbs["ip"], "127.0.0.1");
    assert_eq!(crumbs["node"], "127.0.0.1");
    assert_eq!(crumbs["ports"], json!({"8080": a.control}));
    assert_eq!(crumbs["fwk"], "marathon");
    assert_eq!(crumbs["zk"], zk.address());
    assert_eq!(crumbs["seq"], 1);
    // `hash` next to `pods`, as pods ensure it.
    runtime().block_on(async {
        let client = zookeeper_client::Client::connect(&zk.address())
            .await
            .expect("zk");
        assert!(client
            .check_stat("/ochopod/clusters/ci.servo/hash")
            .await
            .expect("zk")
            .is_some());
    });

    // `poll ci.*`: the metrics, with the default tenant's token.
    let info = fire(&zk.address(), "ci.*", "info", 5);
    let (status, body) = &info["ci.servo #1"];
    assert_eq!(*status, 200, "{body}");
    assert_eq!(body["process"], "running", "{body}");
    assert_eq!(body["status"], "0 runs in flight");
    assert_eq!(body["application"], "ci.servo");
    assert_eq!(body["task"], "ci.servo.task-a");
    assert_eq!(body["ports"], json!({"8080": a.control}));
    assert!(body["state"] == "leader" || body["state"] == "follower");
    let metrics = &body["metrics"];
    assert_eq!(metrics["token"], TOKEN);
    assert_eq!(metrics["runs"], 0);
    assert_eq!(metrics["runs_in_flight"], 0);
    assert_eq!(metrics["portal"], "sim");
    assert_eq!(metrics["version"], env!("CARGO_PKG_VERSION"));
    assert!(metrics["uptime"].is_u64());

    // A second pod of the cluster gets the next index; the first stays leader.
    let b = start_pod(&zk, "ci.servo.task-b", &["--ochopod-hide-token"]);
    let pods = wait_for_pods(&zk.address(), "ci.servo", &["ci.servo #1", "ci.servo #2"]);
    assert_eq!(pods["ci.servo #2"].hints["task"], "ci.servo.task-b");
    let (_, info_b) = b.post("info");
    assert_eq!(info_b["process"], "running");
    assert!(
        info_b["metrics"].get("token").is_none(),
        "--ochopod-hide-token: {info_b}"
    );
    assert_eq!(info_b["metrics"]["version"], env!("CARGO_PKG_VERSION"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.post("info").1["state"] != "leader" {
        assert!(
            Instant::now() < deadline,
            "the oldest pod never said leader"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(b.post("info").1["state"], "follower");

    // The other control tasks.
    let all = fire(&zk.address(), "ci.servo", "control/check", 5);
    assert!(all.values().all(|(s, _)| *s == 200), "{all:?}");
    for task in ["ok", "signal", "check/3"] {
        assert_eq!(a.post(&format!("control/{task}")).0, 200, "{task}");
    }
    assert_eq!(a.post("control/explode").0, 400);
    assert_eq!(a.post("control/off/soon").0, 400);
    let (status, log) = a.post("log");
    assert_eq!(status, 200);
    let lines = log.as_array().expect("a JSON array of lines");
    assert!(
        lines.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains("registered as ci.servo #1"))),
        "{log}"
    );
    // The run port still serves runs and /health.
    assert_eq!(
        post_bundle(&a.servo, &quick_bundle().tgz, "hi.py", &[]).status,
        200
    );
    assert_eq!(a.post("info").1["metrics"]["runs"], 1);
    // Without --coordination, the pods coordinate through the pods'
    // ensemble (SPEC §11, §13), both under /servo/ci.servo.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let h = curl(&format!("{}/health", a.servo.url), &[]).json();
        if h["cluster"] == serde_json::json!({"instances": 2, "coordination": "zookeeper"}) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pods do not coordinate: {h}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn off_drains_and_on_accepts_again() {
    if !require_root() {
        return;
    }
    let zk = ZooKeeper::start();
    let pod = start_pod(&zk, "ci.servo.off", &[]);
    wait_for_pods(&zk.address(), "ci.servo", &["ci.servo #1"]);
    let slow = slow_bundle(2);
    let run = spawn_post(&pod.servo, &slow.tgz, "slow.py", &["-w", "\n%{http_code}"]);
    wait_in_flight(&pod.servo, 1);

    // `off ci.servo`: the answer waits for the run in flight.
    let zk_addr = zk.address();
    let off = std::thread::spawn(move || {
        let started = Instant::now();
        let replies = fire(&zk_addr, "ci.servo", "control/off/20", 30);
        (replies, started.elapsed())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while pod.post("info").1["process"] != "stopped" {
        assert!(Instant::now() < deadline, "never stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Meanwhile a new run is refused, with Retry-After.
    let refused = post_bundle(&pod.servo, &quick_bundle().tgz, "hi.py", &[]);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.header("retry-after").is_some());
    assert!(refused.body.contains("drained"), "{}", refused.body);
    let (replies, waited) = off.join().expect("off");
    assert_eq!(replies["ci.servo #1"].0, 200, "{replies:?}");
    assert!(
        waited >= Duration::from_millis(500),
        "off answered before the run ended"
    );
    let (status, out) = finished_status(run);
    assert_eq!(status, 200, "the run in flight finishes: {out}");
    assert!(out.contains("finished"), "{out}");
    let info = pod.post("info").1;
    assert_eq!(info["process"], "stopped");
    assert!(pod
        .servo
        .audit()
        .iter()
        .any(|e| e["event"] == "server.drained" && e["by"] == "off"));
    // The pod stays registered while off (`ls` counts it, not as running).
    assert_eq!(lookup(&zk.address(), "ci.servo").len(), 1);

    // `on ci.servo`.
    let replies = fire(&zk.address(), "ci.servo", "control/on", 5);
    assert_eq!(replies["ci.servo #1"].0, 200, "{replies:?}");
    assert_eq!(pod.post("info").1["process"], "running");
    assert_eq!(
        post_bundle(&pod.servo, &quick_bundle().tgz, "hi.py", &[]).status,
        200
    );
}

#[test]
fn kill_drains_then_the_pod_is_dead_and_sigterm_ends_it() {
    if !require_root() {
        return;
    }
    let zk = ZooKeeper::start();
    let mut pod = start_pod(&zk, "ci.servo.kill", &[]);
    wait_for_pods(&zk.address(), "ci.servo", &["ci.servo #1"]);
    let slow = slow_bundle(3);
    let run = spawn_post(&pod.servo, &slow.tgz, "slow.py", &["-w", "\n%{http_code}"]);
    wait_in_flight(&pod.servo, 1);

    // The kill tool POSTs control/kill until every pod answers 410. Past
    // its timeout with the run still going: 408, and the pod is terminating.
    let replies = fire(&zk.address(), "ci.servo", "control/kill/1", 10);
    assert_eq!(replies["ci.servo #1"].0, 408, "{replies:?}");
    assert_eq!(pod.post("info").1["process"], "terminating");
    assert_eq!(
        post_bundle(&pod.servo, &quick_bundle().tgz, "hi.py", &[]).status,
        503
    );
    // `on` does not bring a pod being killed back.
    assert_eq!(pod.post("control/on").0, 410);
    let replies = fire(&zk.address(), "ci.servo", "control/kill/20", 30);
    assert_eq!(replies["ci.servo #1"].0, 200, "{replies:?}");
    let (status, out) = finished_status(run);
    assert_eq!(status, 200, "the run in flight finishes: {out}");
    assert!(out.contains("finished"), "{out}");
    // Then 410 to every control request: the tool deletes the task.
    let replies = fire(&zk.address(), "ci.servo", "control/kill", 5);
    assert_eq!(replies["ci.servo #1"].0, 410, "{replies:?}");
    for task in ["on", "off", "check", "ok"] {
        assert_eq!(pod.post(&format!("control/{task}")).0, 410, "{task}");
    }
    // `/info` still answers: the tool reads application and task from it.
    let info = fire(&zk.address(), "ci.servo", "info", 5);
    let (status, body) = &info["ci.servo #1"];
    assert_eq!(*status, 200);
    assert_eq!(body["process"], "dead");
    assert_eq!(body["application"], "ci.servo");
    assert_eq!(body["task"], "ci.servo.kill");
    assert_eq!(
        post_bundle(&pod.servo, &quick_bundle().tgz, "hi.py", &[]).status,
        503
    );
    let drained: Vec<_> = pod
        .servo
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "server.drained")
        .collect();
    assert_eq!(drained.len(), 1, "{drained:?}");
    assert_eq!(drained[0]["by"], "kill");

    // Marathon's SIGTERM: exit 0, the znode gone.
    let status = pod.servo.terminate();
    assert_eq!(status.code(), Some(0), "{}", pod.servo.stderr());
    assert!(lookup(&zk.address(), "ci.servo").is_empty());
}

#[test]
fn the_index_survives_a_zookeeper_restart_and_a_reset() {
    if !require_root() {
        return;
    }
    let mut zk = ZooKeeper::start();
    let pod = start_pod(&zk, "ci.servo.zk", &[]);
    let before = wait_for_pods(&zk.address(), "ci.servo", &["ci.servo #1"]);
    zk.stop();
    std::thread::sleep(Duration::from_secs(2));
    // ZooKeeper down: servo goes on serving runs and its control port, and
    // `check` says what is refused meanwhile (v2 and grouped runs, §11).
    assert_eq!(pod.post("info").1["process"], "running");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, why) = loop {
        let (status, body) = pod.post("control/check");
        if status != 200 || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 503, "{why}");
    assert!(
        why["why"]
            .as_str()
            .unwrap_or("")
            .contains("coordination is down"),
        "{why}"
    );
    zk.resume();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pod.post("control/check").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "check still failing after ZooKeeper came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = wait_for_pods(&zk.address(), "ci.servo", &["ci.servo #1"]);
    assert_eq!(after["ci.servo #1"].hints["task"], "ci.servo.zk");
    assert_eq!(after["ci.servo #1"].hints, before["ci.servo #1"].hints);

    // A lost session (a ZooKeeper that forgot it): registered again, in a
    // new znode, with the same index.
    zk.stop();
    zk.forget();
    zk.resume();
    let again = wait_for_pods(&zk.address(), "ci.servo", &["ci.servo #1"]);
    assert_eq!(again["ci.servo #1"].hints["task"], "ci.servo.zk");
    let log = pod.servo.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("ZooKeeper session") && l.contains("registering again")),
        "{log}"
    );
    assert_eq!(pod.post("info").1["seq"], 1);
    let after = again;

    // `/reset`: a new znode, the same index.
    let old = after["ci.servo #1"].znode.clone();
    assert_eq!(pod.post("reset").0, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pods = lookup(&zk.address(), "ci.servo");
        if let Some(p) = pods.get("ci.servo #1") {
            if p.znode != old && pods.len() == 1 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never registered again: {pods:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A pod that comes later still gets a new index.
    let _b = start_pod(&zk, "ci.servo.zk2", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let pods = loop {
        let pods = lookup(&zk.address(), "ci.servo");
        if pods.len() == 2 {
            break pods;
        }
        assert!(
            Instant::now() < deadline,
            "the second pod never showed: {pods:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(pods["ci.servo #1"].hints["task"], "ci.servo.zk");
    let (key, later) = pods
        .iter()
        .find(|(k, _)| *k != "ci.servo #1")
        .expect("the other pod");
    assert_eq!(later.hints["task"], "ci.servo.zk2", "{key}");
    assert!(later.hints["seq"].as_i64() > Some(1), "{key}");
}

// ---------------------------------------------------------------------------
// Per-tenant portals (SPEC §7 `portal`, `portal_token_file`).

#[test]
fn a_tenants_commands_go_to_its_own_portal() {
    if !require_root() {
        return;
    }
    let rt = support::runtime();
    // The server's portal, and one restricted to the `pay` namespace.
    let shared = rt.block_on(support::fake_portal::FakePortal::start(Some(
        "shared-secret",
    )));
    let own = rt.block_on(support::fake_portal::FakePortal::start(Some("pay-secret")));
    let conf = tempfile::tempdir().expect("tempdir");
    let token_file = conf.path().join("pay-portal-token");
    std::fs::write(&token_file, "pay-secret\n").expect("write");
    // Credentials in the URL are never shown (/health, logs).
    let own_url = own.url.replace("http://", "http://user:hidden-pw@");
    let tenants = conf.path().join("tenants.json");
    std::fs::write(
        &tenants,
        json!({"tenants": [{"name": "pay", "token": "pay-token-0123456789", "namespaces": ["pay"],
                            "portal": own_url, "portal_token_file": token_file}]})
        .to_string(),
    )
    .expect("write");
    let check = std::process::Command::new(support::servo_bin())
        .args(["policy", "check"])
        .arg(&tenants)
        .output()
        .expect("servo policy check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let servo = Servo::start(&[
        "--tenants",
        tenants.to_str().expect("utf-8"),
        "--portal",
        &shared.url,
        "--portal-token",
        "shared-secret",
    ]);
    let health = curl(&format!("{}/health", servo.url), &[]);
    let h = health.json();
    assert_eq!(h["portal"], shared.url.as_str());
    assert_eq!(h["portals"]["default"], shared.url.as_str());
    assert_eq!(h["portals"]["pay"], own.url.as_str());
    assert!(
        !health.body.contains("hidden-pw") && !health.body.contains("secret"),
        "{}",
        health.body
    );

    let b = bundle(&[(
        "ls.py",
        "from servo import servo\nwith servo(verbose=True) as proxy:\n    proxy('ls')\n",
    )]);
    // The `pay` tenant: its own portal, signed with its own portal token.
    let sig = support::openssl_sign(&b.tgz, "pay-token-0123456789");
    let form = format!("tgz=@{}", b.tgz.display());
    let r = curl(
        &format!("{}/run/ls.py", servo.url),
        &[
            "-X",
            "POST",
            "-F",
            &form,
            "-H",
            &format!("X-Signature:{sig}"),
            "-H",
            "X-Tenant: pay",
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("[passed] \"ls\""), "{}", r.body);
    let got = own.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].line, "ls -j");
    assert!(got[0].signature_ok, "{got:?}");
    assert!(
        shared.requests().is_empty(),
        "the server's portal saw the tenant's command"
    );

    // The default tenant: the server's portal.
    let r = post_bundle(&servo, &b.tgz, "ls.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let got = shared.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].line.starts_with("ls"), "{got:?}");
    assert!(got[0].signature_ok, "{got:?}");
    assert_eq!(own.requests().len(), 1);
    assert!(!servo.stderr().contains("hidden-pw"));
}
