//! Differential test of the relay's grammar (SPEC §6.3) against what the
//! portal really does with a line (reference/ochothon-portal.md): every line
//! `grammar::parse` accepts is sent as `canonical()` through a real `/bin/sh`
//! (as `toolset <line>`, in a directory full of decoy files so that an
//! unquoted glob would expand), and the argv the shell produced is read by a
//! Python model of the toolset's dispatcher and of every tool's `argparse`
//! table (tests/support/toolset_model.py). The shell must hand over exactly
//! `[verb] + argv()`, and the model must run the same tool on the same
//! clusters, files, words and options as servo's `Command`.
//!
//! The corpus is generated from a fixed seed: valid commands of every verb
//! with their options in random orders, the same mutated with attack tokens
//! (shell syntax, quotes, `--`, abbreviations, clustered shorts, later verbs,
//! globs, negative numbers, `+x`, `~`, unicode), and random token soups.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command as Process, Stdio};
use std::time::Instant;

use serde_json::{json, Value};
use servo::toolset::{parse, parse_canonical, Arity, Command, Kind, TABLE, TAGS};

/// Files in the shell's working directory: what an unquoted glob, or a word
/// the shell splits, would turn into.
const DECOYS: &[&str] = &[
    "payments.zzz",
    "payments.web",
    "payments.db",
    "--force",
    "-i",
    "-t",
    "-j",
    "-d",
    "--",
    "web.front",
    "kill",
    "deploy",
    "marathon.portal",
    "a.b",
    "pay.web",
    "web.yml",
    "x.py",
    "1",
    "[",
    "a",
];

/// splitmix64: a small deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

const GLOBS: &[&str] = &[
    "payments.web",
    "payments.*",
    "payments.w?b",
    "payments.[a-z]*",
    "payments.[!x]*",
    "payments.zzz",
    "payments.db",
    "payments.",
    "payments.a-b_c.1",
    "*",
    "*.web",
    "?",
    "[",
    "]",
    "!",
    "[ab]",
    "marathon.*",
    "marathon.portal",
    "web.front",
    "a.b",
    "pay.web",
    "payments.web!",
];
const INTS: &[&str] = &[
    "0",
    "1",
    "2",
    "5",
    "80",
    "08",
    "8080",
    "999999999",
    "1234567890",
    "-1",
    "+1",
    "1.5",
    "1_0",
    "0x10",
    "٣",
];
const FILES: &[&str] = &[
    "web.yml",
    "db.yml",
    "o.yml",
    "o2.yml",
    "x.py",
    "web",
    "a-b_c.yaml",
    ".hidden.yml",
    "../web.yml",
    "a/b.yml",
    "web.yml*",
];
const NAMES: &[&str] = &["payments", "app", "pay-1", "a_b", "pay.x", "x*", "blue"];
const VERSIONS: &[&str] = &["1.2", "latest", "v1.0-rc", "1.2.3_4", "a:b", "x*"];
const FACTORS: &[&str] = &[
    "@3", "x1.5", "x2", "@1.25", "x0.5", "+1", "-1", "3", "@", "x", "x1.", "@-1", "*2",
];
const WORDS: &[&str] = &[
    "run",
    "x.py",
    "a=b",
    "k:v",
    "1,2",
    "50%",
    "u@h",
    "a+b",
    "+x",
    "-x",
    "cat",
    "/etc/passwd",
    "deploy.py",
    "status.sh",
    "x*",
    ".env",
    "go",
];
const ATTACKS: &[&str] = &[
    ";",
    "|",
    "&",
    "&&",
    "||",
    "$(id)",
    "`id`",
    "$IFS",
    "${IFS}",
    "$HOME",
    "~",
    "~root",
    "~/x",
    "#",
    "#x",
    "x#y",
    "\n",
    "a\nb",
    "\t",
    "'",
    "\"",
    "'x'",
    "\"x\"",
    "\\",
    "a\\ b",
    "--",
    "-",
    "--forc",
    "--fo",
    "--f",
    "--js",
    "--j",
    "--ind",
    "--indices=1",
    "--debu",
    "--deb",
    "--str",
    "--fi",
    "-jt5",
    "-jd",
    "-dj",
    "-nweb",
    "-napp",
    "-t5",
    "-i1",
    "--timeout=5",
    "-t=5",
    "-n=app",
    "--force=1",
    "--json=1",
    "+h",
    "++help",
    "+x",
    "-h",
    "--help",
    "-1",
    "-5",
    "-0",
    "-1.5",
    "x;touch /tmp/c",
    ">",
    "<",
    ">x",
    "2>&1",
    "(",
    ")",
    "{a,b}",
    "{}",
    "a*b",
    "!x",
    ":",
    "=",
    "a=b",
    ",",
    "@",
    "%",
    "é",
    "ü.web",
    "payments.é",
    "payments.ｗeb",
    "\u{a0}",
    "\r",
    "\u{1}",
    "x=~",
    "a:~",
    "--strict",
    "--fifo",
    "--force",
    "--json",
    "--indices",
    "--debug",
    "-l",
    "-o",
    "-n",
    "-p",
    "-r",
    "-s",
    "-v",
    "-f",
    "-g",
    "-i",
    "-t",
    "-j",
    "-d",
    "-w",
    "--where",
];

fn pool(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Glob => GLOBS,
        Kind::Int => INTS,
        Kind::File => FILES,
        Kind::Name => NAMES,
        Kind::Tag => VERSIONS,
        Kind::Factor => FACTORS,
        Kind::Word => WORDS,
    }
}

/// A value of `kind`, mostly from its own pool.
fn value(rng: &mut Rng, kind: Kind) -> String {
    if rng.chance(8) {
        let any = [GLOBS, INTS, FILES, WORDS, ATTACKS, TAGS][rng.below(6)];
        return rng.pick(any).to_string();
    }
    rng.pick(pool(kind)).to_string()
}

/// A command of a table verb, its words in a random order (options stay
/// together with their values).
fn command(rng: &mut Rng) -> Vec<String> {
    // Verbs with arguments more often than `ls`, `help` and `nodes`.
    let spec = loop {
        let s = &TABLE[rng.below(TABLE.len())];
        if !s.positionals.is_empty() || rng.chance(25) {
            break s;
        }
    };
    let mut groups: Vec<Vec<String>> = Vec::new();
    for p in spec.positionals {
        let max = p.max.unwrap_or(3);
        let mut n = p.min + rng.below(max - p.min + 1);
        if rng.chance(5) {
            n += 1;
        }
        if rng.chance(5) {
            n = n.saturating_sub(1);
        }
        for _ in 0..n {
            groups.push(vec![value(rng, p.kind)]);
        }
    }
    for o in spec.options {
        if !rng.chance(35) {
            continue;
        }
        let name = if rng.chance(85) {
            o.names[0]
        } else {
            rng.pick(o.names)
        };
        let mut g = vec![name.to_string()];
        match o.arity {
            Arity::Flag => {}
            Arity::One(kind) => {
                if !rng.chance(4) {
                    g.push(value(rng, kind));
                }
            }
            Arity::Many(kind) => {
                for _ in 0..1 + rng.below(3) {
                    g.push(value(rng, kind));
                }
            }
        }
        groups.push(g);
    }
    if rng.chance(15) {
        groups.push(vec![if rng.chance(70) { "-d" } else { "--debug" }.into()]);
    }
    // Options anywhere, positionals in their order among themselves mostly.
    for i in (1..groups.len()).rev() {
        if rng.chance(60) {
            let j = rng.below(i + 1);
            groups.swap(i, j);
        }
    }
    let mut words = vec![spec.verb.to_string()];
    words.extend(groups.into_iter().flatten());
    words
}

fn mutate(rng: &mut Rng, words: &mut Vec<String>) {
    for _ in 0..1 + rng.below(3) {
        let at = 1 + rng.below(words.len());
        match rng.below(6) {
            0 | 1 => words.insert(at.min(words.len()), rng.pick(ATTACKS).to_string()),
            2 => words.insert(at.min(words.len()), rng.pick(TAGS).to_string()),
            3 if at < words.len() => words[at] = rng.pick(ATTACKS).to_string(),
            4 if at < words.len() => {
                // Glue an attack onto a word: `payments.*&&ls`, `-jt5`...
                let a = rng.pick(ATTACKS);
                if rng.chance(50) {
                    words[at].push_str(a);
                } else {
                    words[at] = format!("{a}{}", words[at]);
                }
            }
            _ if words.len() > 2 => {
                let i = 1 + rng.below(words.len() - 1);
                let j = 1 + rng.below(words.len() - 1);
                words.swap(i, j);
            }
            _ => {}
        }
    }
}

fn soup(rng: &mut Rng) -> Vec<String> {
    let first = if rng.chance(80) {
        TABLE[rng.below(TABLE.len())].verb
    } else {
        rng.pick(ATTACKS)
    };
    let mut words = vec![first.to_string()];
    for _ in 0..rng.below(6) {
        let from = [GLOBS, INTS, FILES, NAMES, FACTORS, WORDS, ATTACKS, TAGS][rng.below(8)];
        words.push(rng.pick(from).to_string());
    }
    words
}

fn join(rng: &mut Rng, words: &[String]) -> String {
    let mut line = String::new();
    if rng.chance(3) {
        line.push(' ');
    }
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            line.push_str(match rng.below(40) {
                0 => "  ",
                1 => "\t",
                _ => " ",
            });
        }
        line.push_str(w);
    }
    if rng.chance(3) {
        line.push(' ');
    }
    line
}

/// The corpus: `n` lines from `seed`, plus the reference's tricks verbatim.
fn corpus(seed: u64, n: usize) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut lines: Vec<String> = FIXED.iter().map(|s| s.to_string()).collect();
    while lines.len() < n {
        let words = match rng.below(10) {
            0..=3 => command(&mut rng),
            4..=7 => {
                let mut w = command(&mut rng);
                mutate(&mut rng, &mut w);
                w
            }
            _ => soup(&mut rng),
        };
        lines.push(join(&mut rng, &words));
    }
    lines
}

/// Lines every run checks, whatever the seed.
const FIXED: &[&str] = &[
    "ls",
    "ls -j",
    "port 80 payments.* -j",
    "port 80 -j",
    "grep -j payments.*",
    "grep payments.[a-z]* --json",
    "poll payments.w?b",
    "log payments.db -l -i 1 2 -d",
    "kill payments.* --force",
    "kill -i 1 2 -j --force payments.web -t 5",
    "off payments.web -i 3",
    "on payments.web --indices 3 4",
    "reset payments.* --force -t 30 -j",
    "scale payments.web -f x1.5 -g 2 --fifo -t 30 -j",
    "scale payments.web -f @3",
    "bump payments.web -v 1.2 --strict -j",
    "deploy web.yml -n payments -j",
    "deploy web.yml db.yml -o o.yml o2.yml -p 2 -r 1.2 -s blue -t 60 --strict -j",
    "exec payments.* run x.py --force -i 1 -j",
    "exec payments.web go -t 5",
    "nodes",
    "nodes -j",
    "ping",
    "ping -j",
    "ping payments.web -j",
    "ping payments.* -j",
    "help",
    "help -d",
    "grep payments.web -d",
    "grep payments.web --debug",
    "help x;touch /tmp/canary",
    "kill --force -- payments.web -t *",
    "grep payments.`id`",
    "kill payments.a|sh",
    "grep payments.*&&ls",
    "grep payments.* kill",
    "kill payments.web --forc",
    "kill payments.web -jt5",
    "deploy web.yml -nweb",
    "kill payments.web --timeout=5",
    "kill -i 1 payments.x",
    "kill -1",
    "exec payments.x run -n x",
    "grep +h",
    "grep ++help",
    "grep $IFS",
    "grep ~",
    "grep payments.web #x",
    "grep payments.web\nkill *",
    "grep\tpayments.web",
];

/// One run of the model over `lines` (all accepted): the shell's argv and
/// the model's reading of each.
fn shell_and_model(canonicals: &[String]) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let decoys = dir.path().join("decoys");
    std::fs::create_dir(&decoys).expect("mkdir");
    for name in DECOYS {
        std::fs::write(decoys.join(name), "decoy\n").expect("decoy");
    }
    let script = dir.path().join("lines.sh");
    let mut text = String::from("toolset() { printf '%s\\0' \"$#\" \"$@\"; }\n");
    for line in canonicals {
        // Exactly what the portal runs: `toolset <line>` (reference §1.3).
        text.push_str("toolset ");
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(&script, text).expect("script");
    let sh = Process::new("/bin/sh")
        .arg(&script)
        .current_dir(&decoys)
        .env_clear()
        .env("PATH", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .expect("/bin/sh");
    assert!(
        sh.status.success(),
        "/bin/sh failed: {}",
        String::from_utf8_lossy(&sh.stderr)
    );
    assert!(
        sh.stderr.is_empty(),
        "/bin/sh complained: {}",
        String::from_utf8_lossy(&sh.stderr)
    );
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/toolset_model.py"
    );
    let mut py = Process::new("/usr/bin/python3")
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = py.stdin.take().expect("stdin");
    let feed = std::thread::spawn(move || stdin.write_all(&sh.stdout).expect("feeding the model"));
    let out = py.wait_with_output().expect("the model");
    feed.join().expect("feeder");
    assert!(
        out.status.success(),
        "the model failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("the model's JSON"))
        .collect();
    assert_eq!(
        results.len(),
        canonicals.len(),
        "the shell ran a different number of commands than lines were sent"
    );
    results
}

/// The Python `dest` of each option, by its canonical spelling.
fn dest(option: &str) -> &'static str {
    match option {
        "-j" => "json",
        "-t" => "timeout",
        "--force" => "force",
        "-i" => "indices",
        "-l" => "long",
        "-f" => "factor",
        "-g" => "group",
        "--fifo" => "fifo",
        "-v" => "version",
        "--strict" => "strict",
        "-n" => "namespace",
        "-o" => "overrides",
        "-p" => "pods",
        "-r" => "release",
        "-s" => "suffix",
        other => panic!("no dest known for {other}"),
    }
}

fn typed(kind: Kind, v: &str) -> Value {
    match kind {
        Kind::Int => json!(v.parse::<i64>().expect("an Int the grammar accepted")),
        _ => json!(v),
    }
}

/// What servo's `Command` says each dest of the tool's namespace must hold.
fn expected(cmd: &Command) -> HashMap<&'static str, Value> {
    let mut want = HashMap::new();
    let mut clusters: Vec<&str> = cmd.clusters();
    let optional = cmd
        .spec
        .positionals
        .iter()
        .any(|p| p.kind == Kind::Glob && p.min == 0);
    if clusters.is_empty() && optional {
        clusters = vec!["*"];
    }
    if cmd.spec.positionals.iter().any(|p| p.kind == Kind::Glob) {
        want.insert("clusters", json!(clusters));
    }
    for (p, values) in cmd.spec.positionals.iter().zip(&cmd.positionals) {
        let d = match (cmd.verb(), p.kind) {
            (_, Kind::Glob) => continue,
            ("port", Kind::Int) => "port",
            (_, Kind::File) => "containers",
            (_, Kind::Word) => "cmdline",
            (v, k) => panic!("{v}: no dest known for a {k:?} positional"),
        };
        want.insert(
            d,
            Value::Array(values.iter().map(|v| typed(p.kind, v)).collect()),
        );
    }
    for (o, v) in cmd.spec.options.iter().zip(&cmd.options) {
        let Some(values) = v else { continue };
        let value = match o.arity {
            Arity::Flag => json!(true),
            Arity::One(kind) => typed(kind, &values[0]),
            Arity::Many(kind) => Value::Array(values.iter().map(|v| typed(kind, v)).collect()),
        };
        want.insert(dest(o.names[0]), value);
    }
    want.insert("debug", json!(cmd.debug));
    want
}

/// Normalises a cluster value (argparse gives a string for `nargs='?'`).
fn as_list(v: &Value) -> Value {
    match v {
        Value::String(_) => Value::Array(vec![v.clone()]),
        other => other.clone(),
    }
}

/// How the portal's reading of `canonical` differs from servo's, if it does.
fn disagreement(cmd: &Command, canonical: &str, got: &Value) -> Option<String> {
    let mut argv = vec![cmd.verb()];
    argv.extend(cmd.argv());
    if got["argv"] != json!(argv) {
        return Some(format!(
            "the shell passed {} instead of {argv:?}",
            got["argv"]
        ));
    }
    if got["tags"] != json!([cmd.verb()]) {
        return Some(format!(
            "the dispatcher sees the tags {} (servo: only `{}`)",
            got["tags"],
            cmd.verb()
        ));
    }
    if got["ok"] != json!(true) {
        return Some(format!("the toolset refuses it: {}", got["error"]));
    }
    if got["tool"] != json!(cmd.verb()) {
        return Some(format!("the toolset runs {}", got["tool"]));
    }
    if cmd.verb() == "help" {
        // main.py prints the tools and exits before any tool parses.
        return None;
    }
    if got["unknown"] != json!([]) {
        return Some(format!("argparse leaves {} unparsed", got["unknown"]));
    }
    let want = expected(cmd);
    let args = got["args"].as_object().expect("args");
    let defaults = got["defaults"].as_object().expect("defaults");
    for (d, have) in args {
        let (have, want_v) = match want.get(d.as_str()) {
            Some(w) if d == "clusters" => (as_list(have), w.clone()),
            Some(w) => (have.clone(), w.clone()),
            None => (
                have.clone(),
                defaults.get(d).cloned().unwrap_or(Value::Null),
            ),
        };
        if have != want_v {
            return Some(format!(
                "`{d}` is {have} for the toolset, {want_v} for servo"
            ));
        }
    }
    for d in want.keys() {
        if !args.contains_key(*d) {
            return Some(format!("the toolset's `{}` has no `{d}`", cmd.verb()));
        }
    }
    let _ = canonical;
    None
}

#[test]
fn every_accepted_line_reads_the_same_to_sh_the_dispatcher_and_argparse() {
    let n: usize = std::env::var("GRAMMAR_DIFF_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let started = Instant::now();
    let lines = corpus(0x5e7f_0c4a_11ce_d00d, n);
    let mut accepted: Vec<(String, Command)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut refused = 0usize;
    let mut reasons: HashMap<String, usize> = HashMap::new();
    let mut per_verb: HashMap<&str, usize> = HashMap::new();
    for line in &lines {
        match parse(line) {
            Ok(cmd) => {
                let canonical = cmd.canonical();
                // The canonical line is what the simulator reads back.
                assert_eq!(
                    parse_canonical(&canonical).as_ref(),
                    Ok(&cmd),
                    "{line:?} -> {canonical:?} does not parse back"
                );
                *per_verb.entry(cmd.verb()).or_default() += 1;
                if !index.contains_key(&canonical) {
                    index.insert(canonical.clone(), accepted.len());
                    accepted.push((canonical, cmd));
                }
            }
            Err(e) => {
                refused += 1;
                *reasons
                    .entry(e.0.chars().take(24).collect::<String>())
                    .or_default() += 1;
            }
        }
    }
    let parsed = started.elapsed();
    let canonicals: Vec<String> = accepted.iter().map(|(c, _)| c.clone()).collect();
    let results = shell_and_model(&canonicals);
    let mut bad: Vec<String> = Vec::new();
    let mut bad_per_verb: HashMap<&str, usize> = HashMap::new();
    for ((canonical, cmd), got) in accepted.iter().zip(&results) {
        if let Some(why) = disagreement(cmd, canonical, got) {
            *bad_per_verb.entry(cmd.verb()).or_default() += 1;
            bad.push(format!("`{canonical}`: {why}"));
        }
    }
    let mut verbs: Vec<_> = per_verb.into_iter().collect();
    verbs.sort();
    eprintln!(
        "grammar differential: {} lines, {} accepted ({} distinct canonical lines), {refused} refused; parse {:?}, total {:?}",
        lines.len(),
        lines.len() - refused,
        accepted.len(),
        parsed,
        started.elapsed()
    );
    eprintln!("accepted per verb: {verbs:?}");
    for verb in TABLE.iter().map(|v| v.verb) {
        assert!(
            verbs.iter().any(|(v, n)| *v == verb && *n >= 20),
            "the corpus accepts too few `{verb}` lines: {verbs:?}"
        );
    }
    assert!(
        refused > lines.len() / 5 && refused < lines.len() * 9 / 10,
        "the corpus should mix accepted and refused lines ({refused} refused)"
    );
    if !bad.is_empty() {
        let mut by_verb: Vec<_> = bad_per_verb.into_iter().collect();
        by_verb.sort();
        bad.sort();
        bad.dedup();
        panic!(
            "{} accepted lines read differently by the portal (per verb {by_verb:?}); first ones:\n{}",
            bad.len(),
            bad.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

/// The lines the real portal reads differently from servo, spelled out: a
/// failure here names the finding (see the report in the commit message).
#[test]
fn literal_readings_of_the_portal() {
    let cases: &[(&str, &[&str])] = &[
        ("port 80 payments.* -j", &["port", "80", "payments.*", "-j"]),
        (
            "kill payments.* --force",
            &["kill", "payments.*", "--force"],
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
        (
            "deploy -j -o o.yml web.yml",
            &[], // refused: `-o` would swallow web.yml as the script wrote it
        ),
        (
            "exec payments.[a-z]* run x.py --force",
            &["exec", "payments.[a-z]*", "run", "x.py", "--force"],
        ),
    ];
    let mut canonicals = Vec::new();
    let mut cmds = Vec::new();
    for (line, want) in cases {
        match parse(line) {
            Ok(cmd) => {
                assert!(!want.is_empty(), "{line:?} should be refused");
                canonicals.push(cmd.canonical());
                cmds.push((cmd, *want));
            }
            Err(e) => assert!(want.is_empty(), "{line:?} refused: {e}"),
        }
    }
    let results = shell_and_model(&canonicals);
    for ((cmd, want), got) in cmds.iter().zip(&results) {
        assert_eq!(got["argv"], json!(want), "{}", cmd.canonical());
        assert_eq!(disagreement(cmd, &cmd.canonical(), got), None);
    }
}

/// `ping` and `nodes` were in servo's table as `ping [glob] [-j]` and
/// `nodes [-j]`; the toolsets that had them (ochothon 2015-05 to 2015-10/11)
/// read `ping <yaml> [clusters...] [-j]` and `nodes` without options.
#[test]
fn retired_tools_are_refused() {
    // The model read these differently from what servo once accepted
    // (`ping payments.web -j` as a YAML file and every cluster): the
    // grammar no longer takes them.
    for line in ["ping -j", "ping payments.web -j", "nodes -j", "nodes"] {
        let err = parse(line).expect_err(line);
        assert!(err.0.contains("not a toolset command"), "{line}: {err}");
    }
}

#[test]
fn the_model_reads_the_references_tricks_as_the_reference_says() {
    // The model itself, on argv lists servo never sends: if it did not
    // misread these, it could not catch a grammar that let them through.
    let probe = |argv: &[&str]| -> Value {
        let mut input = Vec::new();
        input.extend_from_slice(argv.len().to_string().as_bytes());
        input.push(0);
        for a in argv {
            input.extend_from_slice(a.as_bytes());
            input.push(0);
        }
        let model = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/toolset_model.py"
        );
        let mut py = Process::new("/usr/bin/python3")
            .arg(model)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        py.stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("write");
        let out = py.wait_with_output().expect("model");
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let r = probe(&["kill", "--forc", "a.b"]);
    assert_eq!(r["args"]["force"], true, "{r}");
    let r = probe(&["kill", "a.b", "-jt5"]);
    assert_eq!(
        (r["args"]["json"].clone(), r["args"]["timeout"].clone()),
        (json!(true), json!(5)),
        "{r}"
    );
    let r = probe(&["deploy", "w.yml", "-nweb"]);
    assert_eq!(r["args"]["namespace"], "web", "{r}");
    // The dispatcher's own argparse removes the first `--` from `extra`:
    // the tool never sees it (so reference §3's "`--` ends the options" holds
    // only for a second `--`).
    let r = probe(&["kill", "--force", "--", "a.b", "-t", "5"]);
    assert_eq!(r["args"]["clusters"], json!(["a.b"]), "{r}");
    assert_eq!(r["args"]["timeout"], json!(5), "{r}");
    let r = probe(&["kill", "-i", "1", "a.b"]);
    assert_eq!(r["ok"], false, "{r}");
    let r = probe(&["exec", "a.b", "run", "-n", "x"]);
    // `-n` is unknown to exec and ignored (where `x` goes differs between
    // Python versions: 2.7 makes it a word of the command line).
    assert_eq!(r["unknown"][0], "-n", "{r}");
    assert_eq!(r["args"]["cmdline"][0], "run", "{r}");
    let r = probe(&["grep", "a.b", "kill"]);
    assert_eq!(r["tags"], json!(["grep", "kill"]), "{r}");
    let r = probe(&["grep", "+h"]);
    assert_eq!(r["ok"], false, "{r}");
    let r = probe(&["kill", "a.b", "--timeout=5"]);
    assert_eq!(r["ok"], false, "{r}");
}
