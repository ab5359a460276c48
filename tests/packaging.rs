//! The Dockerfile and servo.yml checked statically (SPEC §10): they parse,
//! and what they say agrees with the code (port, binary path, environment
//! variable names, what the build needs) and with the privileges the
//! sandbox needs. `.ci/run` also lints the Dockerfile with hadolint.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(repo().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `servo serve --help`, from the binary this build made.
fn serve_help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_servo"))
        .args(["serve", "--help"])
        .output()
        .expect("servo serve --help");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The environment variables `servo serve` reads, as its help lists them.
fn serve_env_vars() -> BTreeSet<String> {
    serve_help()
        .split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .collect()
}

/// The port of `--listen`'s default, from the help text.
fn default_listen_port() -> u16 {
    let help = serve_help();
    let listen = help
        .split("--listen")
        .nth(1)
        .and_then(|s| s.split("[default: ").nth(1))
        .and_then(|s| s.split(']').next())
        .expect("--listen has a default");
    listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("default listen address {listen}"))
}

// ---------------------------------------------------------------- Dockerfile

/// One instruction: keyword (upper-case) and its arguments, continuations joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
    line: usize,
}

fn parse_dockerfile(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<Instruction> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_none()) {
            continue;
        }
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b.trim_end(), true),
            None => (line, false),
        };
        match current.as_mut() {
            Some(ins) => {
                ins.args.push(' ');
                ins.args.push_str(body);
            }
            None => {
                let (kw, args) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
                current = Some(Instruction {
                    keyword: kw.to_ascii_uppercase(),
                    args: args.trim().to_string(),
                    line: i + 1,
                });
            }
        }
        if !continues {
            out.extend(current.take());
        }
    }
    assert!(
        current.is_none(),
        "the Dockerfile ends inside a continuation"
    );
    out
}

fn dockerfile() -> Vec<Instruction> {
    parse_dockerfile(&read("Dockerfile"))
}

/// The instructions of the last stage (after the last FROM).
fn final_stage(all: &[Instruction]) -> &[Instruction] {
    let last_from = all
        .iter()
        .rposition(|i| i.keyword == "FROM")
        .expect("a FROM");
    &all[last_from..]
}

/// A JSON-form argument list (`["a", "b"]`).
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not JSON exec form ({e}): {args}"))
}

#[test]
fn dockerfile_instructions_are_known() {
    const KNOWN: &[&str] = &[
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    ];
    let all = dockerfile();
    assert!(!all.is_empty());
    assert_eq!(all[0].keyword, "FROM", "the first instruction is FROM");
    for ins in &all {
        assert!(
            KNOWN.contains(&ins.keyword.as_str()),
            "Dockerfile line {}: unknown instruction {}",
            ins.line,
            ins.keyword
        );
    }
    // Multi-stage: a named build stage, and a final stage of its own.
    let froms: Vec<&Instruction> = all.iter().filter(|i| i.keyword == "FROM").collect();
    assert!(froms.len() >= 2, "multi-stage build");
    assert!(froms[0].args.contains(" AS build"), "{}", froms[0].args);
}

#[test]
fn the_final_image_runs_the_binary_the_build_produces() {
    let all = dockerfile();
    // The build stage: WORKDIR /src, `cargo build --release` → /src/target/release/servo.
    let build_end = all.iter().rposition(|i| i.keyword == "FROM").expect("FROM");
    let build = &all[..build_end];
    let workdir = build
        .iter()
        .rev()
        .find(|i| i.keyword == "WORKDIR")
        .map(|i| i.args.clone())
        .expect("the build stage sets WORKDIR");
    assert!(
        build
            .iter()
            .any(|i| i.keyword == "RUN" && i.args.contains("cargo build --release --locked")),
        "the build stage runs cargo build --release --locked"
    );
    assert!(
        build
            .iter()
            .any(|i| i.keyword == "RUN" && i.args.contains("target-feature=+crt-static")),
        "the build stage links the binary statically (README Performance)"
    );
    let produced = format!("{workdir}/target/release/servo");

    let fin = final_stage(&all);
    let copied: Vec<(String, String)> = fin
        .iter()
        .filter(|i| i.keyword == "COPY" && i.args.starts_with("--from=build "))
        .map(|i| {
            let parts: Vec<&str> = i.args.split_whitespace().collect();
            assert_eq!(parts.len(), 3, "COPY --from=build SRC DEST: {}", i.args);
            (parts[1].to_string(), parts[2].to_string())
        })
        .collect();
    let (_, installed) = copied
        .iter()
        .find(|(src, _)| *src == produced)
        .unwrap_or_else(|| panic!("the final stage copies {produced}: {copied:?}"));

    let entry = fin
        .iter()
        .find(|i| i.keyword == "ENTRYPOINT")
        .expect("ENTRYPOINT");
    assert_eq!(exec_form(&entry.args), vec![installed.clone()]);
    let cmd = fin.iter().find(|i| i.keyword == "CMD").expect("CMD");
    assert_eq!(exec_form(&cmd.args), vec!["serve".to_string()]);

    // servo.yml deploys this image; its state dir is the image's volume.
    let volume = fin.iter().find(|i| i.keyword == "VOLUME").expect("VOLUME");
    let env: String = fin
        .iter()
        .filter(|i| i.keyword == "ENV")
        .map(|i| i.args.clone())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        env.contains(&format!("SERVO_STATE_DIR={}", volume.args)),
        "{env}"
    );
}

#[test]
fn the_final_image_has_python_the_policies_and_the_port() {
    let all = dockerfile();
    let fin = final_stage(&all);
    let port = default_listen_port();
    let exposed: Vec<&str> = fin
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| i.args.split_whitespace())
        .collect();
    assert_eq!(exposed, vec![port.to_string()]);

    let installs = fin
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("apt-get install"))
        .expect("an apt-get install in the final stage");
    for package in ["python3", "python3-requests", "python3-yaml"] {
        assert!(
            installs.args.split_whitespace().any(|w| w == package),
            "installs {package}: {}",
            installs.args
        );
    }
    assert!(
        fin.iter()
            .any(|i| i.keyword == "COPY" && i.args.split_whitespace().next() == Some("policy")),
        "the final stage copies policy/"
    );
    // ENV names are real servo variables.
    let known = serve_env_vars();
    for ins in fin.iter().filter(|i| i.keyword == "ENV") {
        for pair in ins.args.split_whitespace() {
            let (name, value) = pair.split_once('=').expect("ENV NAME=value");
            assert!(
                known.contains(name),
                "ENV {name} is not read by servo serve"
            );
            if name == "SERVO_LISTEN" {
                assert!(value.ends_with(&format!(":{port}")), "{value}");
            }
            if name == "SERVO_PYTHON" {
                assert_eq!(value, "/usr/bin/python3", "the Debian python3");
            }
        }
    }
}

#[test]
fn the_build_stage_copies_everything_the_crate_reads() {
    let all = dockerfile();
    let build_end = all.iter().rposition(|i| i.keyword == "FROM").expect("FROM");
    let copied: BTreeSet<String> = all[..build_end]
        .iter()
        .filter(|i| i.keyword == "COPY")
        .flat_map(|i| {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(copied.contains(needed), "the build copies {needed}");
    }
    assert!(
        !repo().join("build.rs").exists() || copied.contains("build.rs"),
        "build.rs is copied"
    );
    // Every include_str!/include_bytes! path must be inside a copied directory.
    let mut stack = vec![repo().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for marker in ["include_str!(\"", "include_bytes!(\""] {
                for rest in text.split(marker).skip(1) {
                    let rel = rest.split('"').next().unwrap_or_default();
                    let target = normalize(&path.parent().expect("parent").join(rel));
                    let top = target
                        .strip_prefix(repo())
                        .ok()
                        .and_then(|p| p.components().next())
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .unwrap_or_default();
                    assert!(
                        copied.contains(&top),
                        "{} includes {rel}, but the Dockerfile does not copy {top}",
                        path.display()
                    );
                }
            }
        }
    }
    // And the build context lets them through (.dockerignore).
    let ignore = read(".dockerignore");
    for top in &copied {
        assert!(
            ignore.lines().any(|l| l.trim() == format!("!{top}")),
            ".dockerignore lets {top} through"
        );
    }
}

/// Resolves `.` and `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn the_dockerfile_parser_is_not_fooled() {
    let parsed = parse_dockerfile(
        "# c\nFROM a AS build\nRUN x \\\n  && y\n\nfrom b\nCOPY --from=build /p /q\n",
    );
    let kws: Vec<&str> = parsed.iter().map(|i| i.keyword.as_str()).collect();
    assert_eq!(kws, vec!["FROM", "RUN", "FROM", "COPY"]);
    assert_eq!(parsed[1].args, "x && y");
    assert_eq!(parsed[3].line, 7);
}

// ----------------------------------------------------------------- servo.yml

fn servo_yml() -> Yaml {
    let text = read("servo.yml");
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("servo.yml: {e}"));
    assert_eq!(docs.len(), 1, "servo.yml is one YAML document");
    docs.remove(0)
}

/// A port entry of an Ochothon definition: `5000`, `"5000 *"` or `"5000 5001"`.
fn container_port(entry: &Yaml) -> u16 {
    match entry {
        Yaml::Integer(p) => u16::try_from(*p).expect("port range"),
        Yaml::String(s) => s
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("port entry {s}")),
        other => panic!("port entry {other:?}"),
    }
}

#[test]
fn servo_yml_is_an_ochothon_definition_that_matches_the_code() {
    let doc = servo_yml();
    assert_eq!(doc["cluster"].as_str(), Some("servo"));
    let image = doc["image"].as_str().expect("image");
    assert!(!image.is_empty() && !image.contains(char::is_whitespace));

    // The run port, and the Ochothon control port (SPEC §13): listing
    // `ports` replaces the toolset's default [8080], so both are listed.
    let ports = doc["ports"].as_vec().expect("ports");
    let port = default_listen_port();
    assert_eq!(
        ports.iter().map(container_port).collect::<Vec<_>>(),
        vec![port, servo::ochopod::DEFAULT_CONTROL_PORT]
    );

    // servo's configuration reaches it as environment variables.
    let env = doc["verbatim"]["env"].as_hash().expect("verbatim.env");
    let known = serve_env_vars();
    for (k, v) in env {
        let name = k.as_str().expect("env names are strings");
        assert!(known.contains(name), "{name} is not read by servo serve");
        assert!(
            v.as_str().is_some_and(|v| !v.is_empty()),
            "{name} has a non-empty string value (an empty one is an error)"
        );
    }
    let portal = env
        .get(&Yaml::String("SERVO_PORTAL".into()))
        .and_then(Yaml::as_str)
        .expect("SERVO_PORTAL");
    assert!(portal.starts_with("http://"), "{portal}");
    if let Some(listen) = env
        .get(&Yaml::String("SERVO_LISTEN".into()))
        .and_then(Yaml::as_str)
    {
        assert!(listen.ends_with(&format!(":{port}")), "{listen}");
    }
    // Ochothon passes `settings` as $pod JSON, which servo does not read.
    assert!(doc["settings"].is_badvalue(), "servo reads no `settings`");

    // The docker parameters the sandbox needs (README, Dockerfile).
    let params: Vec<(String, String)> = doc["verbatim"]["container"]["docker"]["parameters"]
        .as_vec()
        .expect("verbatim.container.docker.parameters")
        .iter()
        .map(|p| {
            (
                p["key"].as_str().expect("key").to_string(),
                p["value"].as_str().expect("value").to_string(),
            )
        })
        .collect();
    for (k, v) in [
        ("cap-add", "SYS_ADMIN"),
        ("security-opt", "seccomp=unconfined"),
        ("security-opt", "apparmor=unconfined"),
        ("cgroupns", "host"),
    ] {
        assert!(
            params.iter().any(|(pk, pv)| pk == k && pv == v),
            "missing docker parameter --{k}={v}: {params:?}"
        );
    }
    // The state directory is a volume, as in the image.
    let state = env
        .get(&Yaml::String("SERVO_STATE_DIR".into()))
        .and_then(Yaml::as_str)
        .expect("SERVO_STATE_DIR");
    assert!(
        params
            .iter()
            .any(|(k, v)| k == "volume" && v.ends_with(&format!(":{state}"))),
        "the state dir {state} is a volume: {params:?}"
    );
}

#[test]
fn the_docs_state_the_privileges_next_to_docker_run() {
    let readme = read("docs/operations.md");
    let section = readme
        .split("## Deploying servo")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Deploying servo section");
    assert!(section.contains("docker run"));
    for needed in [
        "--privileged",
        "--cap-add SYS_ADMIN",
        "--security-opt seccomp=unconfined",
        "--security-opt apparmor=unconfined",
        "--cgroupns=host",
        "servo.yml",
    ] {
        assert!(
            section.contains(needed),
            "docs/operations.md's deploy section names {needed}"
        );
    }
}
