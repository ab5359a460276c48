//! The README's and docs/'s commands, run for real so the docs cannot rot: the blocks
//! marked `<!-- tested: NAME -->` are extracted and run with bash (shell
//! blocks) or as bundle scripts (Python blocks) against a real server, with
//! the URL and token given through the variables the README uses
//! (`SERVO_URL`, `SERVO_TOKEN`). Also: the commands and flags the README
//! names exist in `servo --help`.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The README and every doc under `docs/` (but the spec), as one text:
/// their examples are run wherever they live.
fn readme() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("a docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md") && !p.ends_with("spec.md"))
        .collect();
    docs.sort();
    for doc in docs {
        text.push('\n');
        text.push_str(&std::fs::read_to_string(&doc).expect("a doc"));
    }
    text
}

/// The fenced block right after `<!-- tested: NAME -->`: (language, body).
fn tagged_block(text: &str, name: &str) -> (String, String) {
    let marker = format!("<!-- tested: {name} -->");
    let mut found = text.split(&marker);
    let after = found
        .nth(1)
        .unwrap_or_else(|| panic!("README has no {marker}"));
    assert!(
        found.next().is_none(),
        "README marks two blocks as {marker}"
    );
    let mut lines = after.trim_start_matches(['\r', '\n']).lines();
    let fence = lines.next().unwrap_or_default();
    let lang = fence
        .strip_prefix("```")
        .unwrap_or_else(|| panic!("{marker} is not right before a ``` fence: {fence}"))
        .trim()
        .to_string();
    let mut body = String::new();
    for line in lines {
        if line.starts_with("```") {
            return (lang, body);
        }
        body.push_str(line);
        body.push('\n');
    }
    panic!("the block after {marker} is not closed");
}

/// The fenced blocks (any language) of a README section, by heading.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no {heading}"));
    let rest = &text[start + heading.len() + 2..];
    let level = heading.split(' ').next().unwrap_or("##");
    let end = rest
        .match_indices(&format!("\n{level} "))
        .map(|(i, _)| i)
        .next()
        .unwrap_or(rest.len());
    &rest[..end]
}

/// PATH with the servo binary this build made first.
fn path_with_servo() -> String {
    let dir = Path::new(servo_bin()).parent().expect("bin dir");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs `script` with `bash -eu -o pipefail` in `cwd`, with the README's variables.
fn bash(script: &str, cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.args(["-eu", "-o", "pipefail", "-c", script])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .env("PATH", path_with_servo());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SERVO_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("bash")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const DEPLOY: &str = "print('deploying')\nopen('state.txt', 'w').write('deployed by deploy.py')\n";
const TEST: &str = "import os\nprint('testing')\nprint(open('state.txt').read())\nprint('build', os.environ.get('BUILD_ID', '-'))\n";

/// The server the quick start's first command starts, run the way the
/// README says (`cargo run --release -- serve ...` is this build's binary).
struct QuickStart {
    child: std::process::Child,
    url: String,
    state: tempfile::TempDir,
}

impl Drop for QuickStart {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn start_quick_start(block: &str) -> QuickStart {
    let readme_state = "/tmp/servo-state";
    let serve_line = block
        .lines()
        .find(|l| l.starts_with("cargo run --release -- serve"))
        .expect("the quick start runs `cargo run --release -- serve`");
    assert!(serve_line.contains(readme_state), "{serve_line}");
    assert!(
        block.lines().any(|l| l.trim() == "cargo test"),
        "the quick start's second command is `cargo test`"
    );
    let state = tempfile::tempdir().expect("tempdir");
    let line = serve_line.replace(readme_state, state.path().to_str().expect("utf-8"));
    let log = state.path().join("serve.stderr");
    // `cargo run --release -- ARGS` is the binary with ARGS; this build made it.
    let script = format!(
        "cargo() {{ [ \"$1 $2 $3\" = 'run --release --' ] || exit 97; shift 3; exec \"$SERVO_BIN\" \"$@\"; }}\n{line}\n"
    );
    let child = Command::new("bash")
        .args(["-c", &script])
        .env("SERVO_BIN", servo_bin())
        // Not 0.0.0.0:5000: other tests run at the same time. The README's
        // command sets no --listen, so the variable applies.
        .env("SERVO_LISTEN", "127.0.0.1:0")
        .env_remove("SERVO_TOKEN")
        .env_remove("SERVO_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("bash");
    let mut qs = QuickStart {
        child,
        url: String::new(),
        state,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = out.lines().find_map(|l| l.split("listening on ").nth(1)) {
            assert!(
                out.contains("portal: built-in simulator (dry run)"),
                "the README says the server announces the simulator:\n{out}"
            );
            qs.url = format!("http://{}", addr.trim());
            return qs;
        }
        if let Ok(Some(status)) = qs.child.try_wait() {
            panic!("the quick start's server exited with {status}:\n{out}");
        }
        assert!(Instant::now() < deadline, "no `listening on`:\n{out}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Quick start, then the guide's curl/openssl flow and `servo run`, then the
/// Jenkins steps, all against the server the quick start started.
#[test]
fn readme_quick_start_and_the_guides_flow() {
    if !require_root() {
        return;
    }
    let readme = readme();
    let (lang, quick) = tagged_block(&readme, "quick-start");
    assert_eq!(lang, "sh");
    let qs = start_quick_start(&quick);

    // "the token it generated is in STATE/token (`servo token --state-dir STATE` prints it)"
    assert!(readme.contains("`servo token --state-dir /tmp/servo-state` prints it"));
    let state = qs.state.path().to_str().expect("utf-8").to_string();
    let out = bash(
        &format!("servo token --state-dir {state}"),
        qs.state.path(),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();
    let file = std::fs::read_to_string(qs.state.path().join("token")).expect("STATE/token");
    assert_eq!(token, file.trim());
    let env = [
        ("SERVO_TOKEN", token.as_str()),
        ("SERVO_URL", qs.url.as_str()),
    ];

    // The guide's flow: tar, openssl, curl.
    let (lang, curl_flow) = tagged_block(&readme, "curl-flow");
    assert_eq!(lang, "sh");
    let work = tempfile::tempdir().expect("tempdir");
    write_files(work.path(), &[("deploy.py", DEPLOY), ("test.py", TEST)]);
    let out = bash(&curl_flow, work.path(), &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        vec![
            "portal: built-in simulator (dry run)",
            "deploying",
            "deploy.py ran in 0 seconds",
            "testing",
            "deployed by deploy.py",
            "build -",
            "test.py ran in 0 seconds",
        ]
    );
    assert!(work.path().join("upload.tgz").is_file());

    // `servo run` on ./my-scripts.
    let (lang, servo_run) = tagged_block(&readme, "servo-run");
    assert_eq!(lang, "sh");
    let work = tempfile::tempdir().expect("tempdir");
    write_files(
        work.path(),
        &[
            ("my-scripts/deploy.py", DEPLOY),
            ("my-scripts/test.py", TEST),
        ],
    );
    let out = bash(&servo_run, work.path(), &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = text(&out.stdout);
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines[1], "$BUILD_ID = 42", "{lines:?}");
    assert!(lines.contains(&"build 42"), "{lines:?}");
    assert!(lines.contains(&"deployed by deploy.py"), "{lines:?}");

    // The Jenkins steps: the pipeline's `sh '...'` and the freestyle shell
    // step, with Jenkins' variables and the example URL replaced by this server.
    let jenkins = section(&readme, "## From Jenkins");
    let (lang, pipeline) = tagged_block(jenkins, "jenkinsfile");
    assert_eq!(lang, "groovy");
    assert!(pipeline.contains(
        "withCredentials([string(credentialsId: 'servo-token', variable: 'SERVO_TOKEN')])"
    ));
    let example_url = pipeline
        .split("SERVO_URL = '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("the pipeline sets SERVO_URL");
    let sh_step = pipeline
        .split("sh '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("an sh '...' step");
    let (lang, freestyle) = tagged_block(jenkins, "jenkins-freestyle");
    assert_eq!(lang, "sh");
    let jenkins_env = [
        ("SERVO_TOKEN", token.as_str()),
        ("SERVO_URL", qs.url.as_str()),
        ("BUILD_NUMBER", "17"),
        ("GIT_COMMIT", "0123abcd"),
    ];
    for step in [sh_step.to_string(), freestyle.replace(example_url, &qs.url)] {
        let work = tempfile::tempdir().expect("tempdir");
        write_files(
            work.path(),
            &[("cd/deploy.py", DEPLOY), ("cd/test.py", TEST)],
        );
        let out = bash(&step, work.path(), &jenkins_env);
        assert_eq!(out.status.code(), Some(0), "{step}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).lines().any(|l| l == "build 17"),
            "{step}: {}",
            text(&out.stdout)
        );
    }
}

/// The Python package's examples, run as written in a bundle on the simulator.
#[test]
fn readme_python_examples_run_as_written() {
    if !require_root() {
        return;
    }
    let readme = readme();
    let (lang, ls) = tagged_block(&readme, "python-ls");
    assert_eq!(lang, "python");
    let (lang, ping) = tagged_block(&readme, "python-ping");
    assert_eq!(lang, "python");
    let servo = Servo::start(&[]);
    let b = bundle(&[
        ("ls.py", ls.as_str()),
        // What the README says to run first, so there are app.web pods.
        (
            "deploy.py",
            "from servo import servo\nwith servo(verbose=True) as proxy:\n    proxy('deploy web.yml -n app')\n",
        ),
        ("web.yml", "cluster: web\nimage: nginx\nports:\n  - 80\n"),
        ("ping.py", ping.as_str()),
    ]);
    let reply = post_bundle(&servo, &b.tgz, "ls.py+deploy.py+ping.py", &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let lines = reply.lines();
    assert!(lines.contains(&"[passed] \"ls\""), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("dict_keys([") && l.contains("'marathon.servo'")),
        "{lines:?}"
    );
    assert!(lines.contains(&"[passed] \"port 80 app.web\""), "{lines:?}");
    assert!(lines.contains(&"ping.py ran in 0 seconds"), "{lines:?}");
    // The pings went through servo (audited), one per pod found.
    let pings = servo
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "portal.command" && e.to_string().contains("/ping"))
        .count();
    assert!(pings >= 1, "the example pinged the pods");
}

/// `servo --help` lists every subcommand the README uses, and each
/// subcommand's `--help` every flag the README gives it.
#[test]
fn readme_commands_and_flags_exist() {
    let readme = readme();
    let help = |args: &[&str]| -> String {
        let out = Command::new(servo_bin())
            .args(args)
            .arg("--help")
            .output()
            .expect("servo --help");
        assert!(out.status.success(), "servo {args:?} --help");
        text(&out.stdout)
    };
    let top = help(&[]);
    let listed: BTreeSet<String> = top
        .split("Commands:")
        .nth(1)
        .expect("a Commands: list")
        .split("Options:")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();

    // Every `servo <sub> ...` line of the README's shell blocks.
    let mut seen = BTreeSet::new();
    let mut in_sh = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let line = line.trim();
        let Some(rest) = line.strip_prefix("servo ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let sub = words[0];
        assert!(
            listed.contains(sub),
            "README uses `servo {sub}`, which `servo --help` does not list ({listed:?})"
        );
        seen.insert(sub.to_string());
        let mut path = vec![sub];
        if sub == "policy" {
            path.push(words.get(1).copied().unwrap_or_default());
        }
        let sub_help = help(&path);
        // Flags given to servo itself: before a lone `--` (the sandboxed
        // command's own arguments follow it); comments count too, since they
        // name options (`--kdf sha256|md5, --raw`).
        for word in rest
            .split(" -- ")
            .next()
            .unwrap_or_default()
            .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '[' | ']'))
        {
            if let Some(flag) = word.strip_prefix("--") {
                let flag = flag.split('=').next().unwrap_or_default();
                if flag.is_empty() {
                    continue;
                }
                assert!(
                    sub_help.contains(&format!("--{flag}")),
                    "README gives `servo {}` the flag --{flag}, which its --help lacks",
                    path.join(" ")
                );
            }
        }
    }
    for sub in [
        "run", "encrypt", "decrypt", "sign", "token", "sandbox", "policy",
    ] {
        assert!(
            seen.contains(sub),
            "README shows `servo {sub}` in a sh block"
        );
    }
    assert!(listed.contains("serve"));

    // The `servo serve` flags table.
    let serve_help = help(&["serve"]);
    let table = section(&readme, "## `servo serve` flags");
    let mut flags = 0;
    for line in table.lines().filter(|l| l.starts_with("| `--")) {
        let cell = line.split('|').nth(1).unwrap_or_default();
        for flag in cell.split('`').filter(|w| w.starts_with("--")) {
            let flag = flag.split_whitespace().next().unwrap_or_default();
            flags += 1;
            assert!(
                serve_help.contains(flag),
                "README's serve table names {flag}, which `servo serve --help` lacks"
            );
        }
    }
    assert!(
        flags >= 10,
        "the serve flags table was found ({flags} flags)"
    );

    // `servo run`'s documented flags.
    let run_help = help(&["run"]);
    for flag in [
        "--url",
        "--token",
        "--token-file",
        "--tenant",
        "--legacy-signature",
        "--json",
        "--var",
        "--concurrency",
        "SERVO_URL",
        "SERVO_TENANT",
        "SERVO_CONCURRENCY",
    ] {
        assert!(run_help.contains(flag), "servo run --help names {flag}");
    }
}

#[test]
fn tagged_blocks_are_found_exactly() {
    let text = "a\n<!-- tested: x -->\n```sh\necho 1\necho 2\n```\nb\n";
    assert_eq!(
        tagged_block(text, "x"),
        ("sh".to_string(), "echo 1\necho 2\n".to_string())
    );
    let twice = format!("{text}{text}");
    assert!(std::panic::catch_unwind(|| tagged_block(&twice, "x")).is_err());
    assert!(std::panic::catch_unwind(|| tagged_block(text, "y")).is_err());
}

/// A heading's anchor as GitHub makes it.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fence = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
        }
        if !fence && line.starts_with('#') {
            found.insert(slug(line.trim_start_matches('#')));
        }
    }
    found
}

/// The README stays what a user reads first, and every link between the
/// docs leads to a file and a heading that exist.
#[test]
fn the_readme_is_short_and_the_docs_links_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines: move detail to docs/"
    );
    let mut docs = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("a docs entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    let mut bad = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("a doc");
        let dir = doc.parent().expect("a parent");
        let mut fence = false;
        for line in text.lines() {
            if line.starts_with("```") {
                fence = !fence;
            }
            if fence {
                continue;
            }
            for link in line.split("](").skip(1) {
                let Some(target) = link.split(')').next() else {
                    continue;
                };
                if target.starts_with("http://") || target.starts_with("https://") {
                    continue;
                }
                let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
                let file = if file.is_empty() {
                    doc.clone()
                } else {
                    dir.join(file)
                };
                if !file.exists() {
                    bad.push(format!("{}: {target}: no such file", doc.display()));
                    continue;
                }
                if !anchor.is_empty() && file.extension().is_some_and(|e| e == "md") {
                    let there = std::fs::read_to_string(&file).expect("the linked doc");
                    if !anchors(&there).contains(anchor) {
                        bad.push(format!("{}: {target}: no such heading", doc.display()));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
