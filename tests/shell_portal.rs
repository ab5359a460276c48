//! The relay against a portal that runs lines the way the real one does
//! (`/bin/sh -c "toolset <line>"` among decoy files; tests/support/shell_portal.rs):
//! a script in a real sandbox posts attack lines over `$SERVO_SOCKET` as the
//! default tenant and as a tenant limited to namespace `payments`. Each line
//! is either refused (403 `denied by policy: <why>`, nothing reaches the
//! shell) or the stub `toolset` receives exactly the argv the grammar
//! approved; no injected command ever runs.

mod support;

use serde_json::Value;
use servo::toolset::parse_canonical;
use support::shell_portal::{ShellCall, ShellPortal};
use support::{bundle, curl, openssl_sign, post_bundle, require_root, runtime, Servo};

const TOKEN_PAY: &str = "payments-token-0123456789abcdef";
const PAY_VERBS: &[&str] = &["ls", "grep", "help", "kill", "port", "deploy"];
const WEB_YML: &str = "cluster: web\nimage: repo/web:1\nports:\n  - 8080\n";

/// The lines every tenant sends (`CANARY` is replaced by the canary's path).
const ATTACKS: &[&str] = &[
    // The issue's lines.
    "help x;touch CANARY",
    "kill --force -- payments.web -t *",
    "grep payments.`touch CANARY`",
    "grep payments.`id`",
    "kill payments.a|sh",
    "kill payments.a|touch CANARY",
    "grep payments.*&&ls",
    "grep payments.*&&touch CANARY",
    "grep payments.* kill",
    // Reference §3: argparse's readings.
    "kill payments.web -- -t",
    "kill payments.web --forc",
    "kill payments.web --fo",
    "grep payments.web --js",
    "kill payments.web -jt5",
    "deploy web.yml -nweb",
    "kill payments.web --timeout=5",
    "kill payments.web -t=5",
    "kill -i 1 payments.x",
    "kill -1",
    "kill payments.web -t -1",
    "exec payments.x run -n x",
    "exec payments.x run x --force",
    "grep +h",
    "grep ++help",
    "scale payments.web -f +1",
    // Reference §1.3: the shell's readings.
    "grep payments.$IFS",
    "grep ${IFS}touch${IFS}CANARY",
    "grep $(touch CANARY)",
    "grep ~",
    "grep ~/x",
    "grep payments.web #;touch CANARY",
    "grep payments.web > CANARY",
    "ls -j < /etc/passwd",
    "grep payments.web\ntouch CANARY",
    "grep payments.web\rtouch CANARY",
    "grep\tpayments.web",
    "grep 'payments.web'",
    "grep \"payments.web\"",
    "grep payments\\.web",
    "grep payments.{web,zzz}",
    "grep payments.wéb",
    // Globs the decoys would expand unquoted, and lines that may pass.
    "kill payments.* --force",
    "kill payments.w?b -i 1 --force",
    "port 80 payments.* -j",
    "port 80 -j",
    "grep payments.[a-z]* -j",
    "grep -j",
    "ls -j",
    "help",
    "kill -i 1 2 -j --force payments.web -t 5",
    "deploy web.yml -n payments -j",
    "deploy web.yml -j",
    "deploy web.yml -n other -j",
    "kill marathon.portal",
    "kill *.web --force",
    "scale payments.web -f x2",
];

/// Literal argv the stub must receive when a tenant's line passes.
const LITERAL: &[(&str, &[&str])] = &[
    ("port 80 payments.* -j", &["port", "80", "payments.*", "-j"]),
    (
        "kill payments.* --force",
        &["kill", "payments.*", "--force"],
    ),
    (
        "kill payments.w?b -i 1 --force",
        &["kill", "payments.w?b", "-i", "1", "--force"],
    ),
    (
        "kill -i 1 2 -j --force payments.web -t 5",
        &[
            "kill",
            "payments.web",
            "-i",
            "1",
            "2",
            "-t",
            "5",
            "--force",
            "-j",
        ],
    ),
    ("ls -j", &["ls", "-j"]),
];

/// Words a refusal's reason should hold (one of them).
const REASONS: &[&str] = &[
    "shell syntax",
    "not allowed",
    "abbreviation",
    "word of its own",
    "separate word",
    "unknown option",
    "instead of",
    "needs",
    "not valid",
    "outside",
    "namespace",
    "command",
    "dispatcher",
    "home directory",
    "takes",
    "tab",
    "twice",
];

/// The script: raw HTTP/1.1 over the socket (so a tab or newline in a header
/// goes out as is), one JSON line per request: status and body.
const SCRIPT: &str = r#"
import json, os, socket

lines = json.load(open('lines.json'))
yml = open('web.yml', 'rb').read()

def post(line):
    head = [b'POST /shell HTTP/1.1', b'Host: portal', b'Connection: close',
            b'X-Shell: ' + line.encode('utf-8')]
    body = b''
    if 'web.yml' in line.split():
        b = b'servo-shell-portal-boundary'
        body = (b'--' + b + b'\r\nContent-Disposition: form-data; name="web.yml"; filename="web.yml"\r\n'
                b'Content-Type: application/octet-stream\r\n\r\n' + yml + b'\r\n--' + b + b'--\r\n')
        head.append(b'Content-Type: multipart/form-data; boundary=' + b)
    head.append(b'Content-Length: %d' % len(body))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ['SERVO_SOCKET'])
    s.sendall(b'\r\n'.join(head) + b'\r\n\r\n' + body)
    data = b''
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    top, _, rest = data.partition(b'\r\n\r\n')
    status = int(top.split()[1]) if top else 0
    if b'transfer-encoding: chunked' in top.lower():
        out = b''
        while rest:
            size, _, rest = rest.partition(b'\r\n')
            n = int(size.split(b';')[0], 16)
            if n == 0:
                break
            out += rest[:n]
            rest = rest[n + 2:]
        rest = out
    return status, rest.decode('utf-8', 'replace')

for line in lines:
    status, body = post(line)
    print('RESULT ' + json.dumps({'line': line, 'status': status, 'body': body}), flush=True)
print('DONE')
"#;

struct Outcome {
    line: String,
    status: u64,
    body: String,
}

fn outcomes(log: &str) -> Vec<Outcome> {
    log.lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a result line");
            Outcome {
                line: v["line"].as_str().unwrap().to_string(),
                status: v["status"].as_u64().unwrap(),
                body: v["body"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

/// Checks one tenant's outcomes against the calls the portal got for them.
fn check(
    tenant: &str,
    restricted: bool,
    results: &[Outcome],
    calls: &[ShellCall],
    failures: &mut Vec<String>,
) {
    let mut calls = calls.iter();
    for r in results {
        let line = &r.line;
        match r.status {
            403 => {
                let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                let out = v["out"].as_str().unwrap_or("");
                let Some(why) = out.strip_prefix("denied by policy: ") else {
                    failures.push(format!(
                        "{tenant}: {line:?}: 403 without a reason: {}",
                        r.body
                    ));
                    continue;
                };
                if v["ok"] != Value::Bool(false) || !REASONS.iter().any(|w| why.contains(w)) {
                    failures.push(format!("{tenant}: {line:?}: reason {why:?}"));
                }
            }
            // hyper refuses a header with a bare CR or LF before servo reads it.
            400 if line.contains(['\n', '\r']) => {}
            200 => {
                let Some(call) = calls.next() else {
                    failures.push(format!(
                        "{tenant}: {line:?}: 200 but the portal got nothing"
                    ));
                    continue;
                };
                let cmd = match parse_canonical(&call.line) {
                    Ok(cmd) => cmd,
                    Err(e) => {
                        failures.push(format!(
                            "{tenant}: {line:?} reached the portal as {:?}, not canonical: {e}",
                            call.line
                        ));
                        continue;
                    }
                };
                let mut want = vec![cmd.verb().to_string()];
                want.extend(cmd.argv().iter().map(|s| s.to_string()));
                if call.argvs != [want.clone()] {
                    failures.push(format!(
                        "{tenant}: {line:?} sent as {:?}: toolset got {:?}, the grammar approved {want:?}",
                        call.line, call.argvs
                    ));
                }
                if let Some((_, literal)) = LITERAL.iter().find(|(l, _)| l == line) {
                    if call.argvs.first().map(|a| a.as_slice())
                        != Some(literal_vec(literal).as_slice())
                    {
                        failures.push(format!(
                            "{tenant}: {line:?}: toolset got {:?}, expected {literal:?}",
                            call.argvs
                        ));
                    }
                }
                if restricted {
                    if !PAY_VERBS.contains(&cmd.verb()) {
                        failures.push(format!("{tenant}: {line:?}: verb {} relayed", cmd.verb()));
                    }
                    for c in cmd.clusters() {
                        if !c.starts_with("payments.") {
                            failures.push(format!("{tenant}: {line:?}: cluster glob {c} relayed"));
                        }
                    }
                    if cmd.verb() == "deploy"
                        && cmd.option("-n") != Some(&["payments".to_string()][..])
                    {
                        failures.push(format!("{tenant}: {line:?}: deploy without -n payments"));
                    }
                }
            }
            s => failures.push(format!("{tenant}: {line:?}: status {s}: {}", r.body)),
        }
    }
    for extra in calls {
        failures.push(format!(
            "{tenant}: the portal got {:?} for no 200",
            extra.line
        ));
    }
}

fn literal_vec(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

#[test]
fn attack_lines_never_reach_the_shell_and_allowed_lines_reach_toolset_verbatim() {
    if !require_root() {
        return;
    }
    let rt = runtime();
    let portal = rt.block_on(ShellPortal::start());
    let canary = portal.canary.display().to_string();
    let lines: Vec<String> = ATTACKS
        .iter()
        .map(|l| l.replace("CANARY", &canary))
        .collect();

    let conf = tempfile::tempdir().expect("tempdir");
    let tenants = conf.path().join("tenants.json");
    let verbs = serde_json::to_string(PAY_VERBS).unwrap();
    std::fs::write(
        &tenants,
        format!(
            r#"{{"tenants": [{{"name": "payments", "token": "{TOKEN_PAY}", "namespaces": ["payments"], "commands": {verbs}}}]}}"#
        ),
    )
    .expect("tenants file");
    let servo = Servo::start(&[
        "--portal",
        &portal.url,
        "--tenants",
        tenants.to_str().unwrap(),
    ]);
    let b = bundle(&[
        ("attack.py", SCRIPT),
        ("lines.json", &serde_json::to_string(&lines).unwrap()),
        ("web.yml", WEB_YML),
    ]);

    let mut failures = Vec::new();
    // The default tenant: no policy beyond the grammar.
    let r = post_bundle(&servo, &b.tgz, "attack.py", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.lines().contains(&"DONE"), "{}", r.body);
    let default_results = outcomes(&r.body);
    assert_eq!(default_results.len(), lines.len(), "{}", r.body);
    let default_calls = portal.calls();
    check(
        "default",
        false,
        &default_results,
        &default_calls,
        &mut failures,
    );

    // The payments tenant.
    let sig = format!("X-Signature:{}", openssl_sign(&b.tgz, TOKEN_PAY));
    let form = format!("tgz=@{}", b.tgz.display());
    let r = curl(
        &format!("{}/run/attack.py", servo.url),
        &[
            "-X",
            "POST",
            "-F",
            &form,
            "-H",
            &sig,
            "-H",
            "X-Tenant: payments",
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.lines().contains(&"DONE"), "{}", r.body);
    let pay_results = outcomes(&r.body);
    assert_eq!(pay_results.len(), lines.len(), "{}", r.body);
    let pay_calls: Vec<ShellCall> = portal.calls()[default_calls.len()..].to_vec();
    check("payments", true, &pay_results, &pay_calls, &mut failures);

    let allowed = |rs: &[Outcome]| rs.iter().filter(|r| r.status == 200).count();
    eprintln!(
        "shell portal: {} lines per tenant; default: {} relayed, payments: {} relayed; {} portal calls",
        lines.len(),
        allowed(&default_results),
        allowed(&pay_results),
        portal.calls().len()
    );
    for call in portal.calls() {
        if !call.refused_files.is_empty() {
            failures.push(format!(
                "{:?}: file names {:?} relayed",
                call.line, call.refused_files
            ));
        }
    }
    if portal.canary.exists() {
        failures.push("an injected command ran: the canary exists".into());
    }
    let intruders = portal.intruders();
    if !intruders.is_empty() {
        failures.push(format!("commands other than toolset ran:\n{intruders}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_shell_portal_itself_is_fooled_by_what_the_grammar_refuses() {
    // The double, hit directly: it must do what the real portal does, or the
    // test above proves nothing.
    let rt = runtime();
    let portal = rt.block_on(ShellPortal::start());
    let canary = portal.canary.display().to_string();
    let lines = [
        format!("help x;touch {canary}"),
        "kill payments.* --force".to_string(),
        "port 80 'payments.*' -j".to_string(),
    ];
    let replies: Vec<support::Reply> = lines
        .iter()
        .map(|l| {
            curl(
                &format!("{}/shell", portal.url),
                &["-X", "POST", "-H", &format!("X-Shell: {l}")],
            )
        })
        .collect();
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let calls = portal.calls();
    assert!(portal.canary.exists(), "the unguarded shell ran `touch`");
    assert!(
        portal.intruders().contains("touch"),
        "{}",
        portal.intruders()
    );
    assert_eq!(calls[0].argvs, [["help", "x"]]);
    assert_eq!(
        calls[1].argvs,
        [["kill", "payments.web", "payments.zzz", "--force"]],
        "the decoys expand an unquoted glob"
    );
    assert_eq!(calls[2].argvs, [["port", "80", "payments.*", "-j"]]);
    assert_eq!(replies[2].json()["out"], "{}\n");
}
