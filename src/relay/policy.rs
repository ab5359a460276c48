//! The command policy of SPEC §7: which verbs a tenant may relay, and which
//! clusters. Pure functions: a command line in, a verdict out.
//!
//! A command line is `<verb> <args...>`; the toolset's arguments are either
//! options (`-x`, `--xx`, some taking a value) or positionals, whose meaning
//! depends on the verb (cluster globs, a port, YAML files, an exec command).

use serde_json::{Map, Value};

use crate::config::Tenant;
use crate::tenants::VERBS;

/// What the policy says about one command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Relay this line (possibly rewritten: `-n <ns>` added, `<ns>.*` filled in).
    Allow(String),
    /// Refuse, with the reason the script will see.
    Deny(String),
}

/// Options known to take a value: their value is never a positional.
/// An option missing here is taken as a flag, so its would-be value is
/// checked as a cluster glob — the safe direction.
const VALUED_OPTIONS: &[&str] = &[
    "-n",
    "--namespace",
    "-p",
    "--pods",
    "-f",
    "--factor",
    "-t",
    "--timeout",
    "-r",
    "--release",
    "-g",
    "--group",
    "-o",
    "--overrides",
];

/// Verbs whose answers are read-only listings, filtered to the tenant's namespaces.
pub const READ_VERBS: &[&str] = &["ls", "grep", "port", "poll", "log"];

/// How a verb's positionals are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Cluster globs, optional (the toolset then means `*`).
    OptionalGlobs { skip: usize },
    /// Cluster globs, at least one.
    RequiredGlobs,
    /// One cluster glob, then a free-form command (`exec`).
    GlobThenCommand,
    /// YAML files; the namespace comes from `-n` (`deploy`).
    Deploy,
    /// No cluster argument.
    Nothing,
}

fn shape(verb: &str) -> Shape {
    match verb {
        "ls" | "grep" | "poll" | "log" | "nodes" | "ping" => Shape::OptionalGlobs { skip: 0 },
        // `port <port> [glob]`: the first positional is the container port.
        "port" => Shape::OptionalGlobs { skip: 1 },
        "scale" | "kill" | "off" | "on" | "reset" | "bump" => Shape::RequiredGlobs,
        "exec" => Shape::GlobThenCommand,
        "deploy" => Shape::Deploy,
        _ => Shape::Nothing,
    }
}

/// A parsed command line: tokens, and which of them are positionals.
struct Parsed<'a> {
    tokens: Vec<&'a str>,
    /// Indices (into `tokens`) of the positionals after the verb.
    positionals: Vec<usize>,
    /// Every value given to `-n`/`--namespace` (None for a missing value).
    namespaces: Vec<Option<&'a str>>,
}

fn parse(line: &str, stop_after_first_positional: bool) -> Parsed<'_> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let mut positionals = Vec::new();
    let mut namespaces = Vec::new();
    let mut i = 1;
    while i < tokens.len() {
        let t = tokens[i];
        if let Some((opt, value)) = t.split_once('=').filter(|_| t.starts_with("--")) {
            if opt == "--namespace" {
                namespaces.push(Some(value));
            }
        } else if t.starts_with('-') && t.len() > 1 {
            if VALUED_OPTIONS.contains(&t) {
                if t == "-n" || t == "--namespace" {
                    namespaces.push(tokens.get(i + 1).copied());
                }
                i += 1;
            }
        } else {
            positionals.push(i);
            if stop_after_first_positional {
                break;
            }
        }
        i += 1;
    }
    Parsed {
        tokens,
        positionals,
        namespaces,
    }
}

fn glob_in_namespaces(glob: &str, namespaces: &[String]) -> bool {
    // Literally `<ns>.` first: no wildcard may stand before the dot.
    namespaces.iter().any(|ns| {
        glob.strip_prefix(ns.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

fn ns_list(namespaces: &[String]) -> String {
    namespaces.join(", ")
}

/// Checks one command line against the tenant's `commands` and `namespaces`.
pub fn check_command(tenant: &Tenant, line: &str) -> Verdict {
    let line = line.trim();
    let Some(verb) = line.split_whitespace().next() else {
        return Verdict::Deny("empty command".into());
    };
    if let Some(allowed) = &tenant.commands {
        if !allowed.iter().any(|c| c == verb) {
            return Verdict::Deny(format!(
                "`{verb}` is not among tenant `{}`'s commands ({})",
                tenant.name,
                allowed.join(" ")
            ));
        }
    }
    let Some(namespaces) = &tenant.namespaces else {
        return Verdict::Allow(line.to_string());
    };
    if !VERBS.contains(&verb) {
        // An unknown verb's arguments cannot be checked against the namespaces.
        return Verdict::Deny(format!(
            "`{verb}` is not a toolset verb, and tenant `{}` is limited to namespaces {}",
            tenant.name,
            ns_list(namespaces)
        ));
    }
    let shape = shape(verb);
    let p = parse(line, shape == Shape::GlobThenCommand);
    let outside = |glob: &str| {
        Verdict::Deny(format!(
            "`{glob}` is outside tenant `{}`'s namespaces: cluster globs must begin with one of {}",
            tenant.name,
            namespaces
                .iter()
                .map(|n| format!("`{n}.`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    match shape {
        Shape::Nothing => Verdict::Allow(line.to_string()),
        Shape::RequiredGlobs | Shape::GlobThenCommand => {
            if p.positionals.is_empty() {
                return Verdict::Deny(format!("`{verb}` needs a cluster glob"));
            }
            for &i in &p.positionals {
                if !glob_in_namespaces(p.tokens[i], namespaces) {
                    return outside(p.tokens[i]);
                }
            }
            Verdict::Allow(line.to_string())
        }
        Shape::OptionalGlobs { skip } => {
            let globs = p.positionals.get(skip..).unwrap_or_default();
            // A bare `*` means what no glob means: every cluster.
            let (stars, named): (Vec<usize>, Vec<usize>) =
                globs.iter().partition(|&&i| p.tokens[i] == "*");
            for &i in &named {
                if !glob_in_namespaces(p.tokens[i], namespaces) {
                    return outside(p.tokens[i]);
                }
            }
            if !globs.is_empty() && stars.is_empty() {
                return Verdict::Allow(line.to_string());
            }
            // The toolset would mean `*`: narrow it to the one namespace.
            let [ns] = namespaces.as_slice() else {
                return Verdict::Deny(format!(
                    "`{verb}` without a cluster glob (or with `*`) means every namespace; name one of {}",
                    ns_list(namespaces)
                ));
            };
            let glob = format!("{ns}.*");
            let mut tokens = p.tokens.clone();
            if stars.is_empty() {
                let at = p
                    .positionals
                    .last()
                    .map(|&i| i + 1)
                    .unwrap_or(1)
                    .min(p.tokens.len());
                tokens.insert(at, &glob);
            } else {
                for i in stars {
                    tokens[i] = &glob;
                }
            }
            Verdict::Allow(tokens.join(" "))
        }
        Shape::Deploy => check_deploy(tenant, namespaces, &p, line),
    }
}

/// `deploy`: every `-n` must name an allowed namespace; without one, the
/// tenant's only namespace is added.
fn check_deploy(tenant: &Tenant, namespaces: &[String], p: &Parsed<'_>, line: &str) -> Verdict {
    // Other spellings the toolset's option parser may take as the namespace
    // (`-nX`, `-jn X`, `--name X`) cannot be checked: refused.
    let odd = p.tokens.iter().find(|t| {
        let short_cluster = !t.starts_with("--") && t.len() > 2 && t.contains('n');
        let long = t.starts_with("--n") && **t != "--namespace" && !t.starts_with("--namespace=");
        t.starts_with('-') && (short_cluster || long)
    });
    if let Some(odd) = odd {
        return Verdict::Deny(format!(
            "`{odd}`: give the namespace as `-n <ns>` on its own"
        ));
    }
    for ns in &p.namespaces {
        match ns {
            None => return Verdict::Deny("-n needs a namespace".into()),
            Some(ns) if !namespaces.iter().any(|n| n == ns) => {
                return Verdict::Deny(format!(
                    "namespace `{ns}` is not one of tenant `{}`'s ({})",
                    tenant.name,
                    ns_list(namespaces)
                ))
            }
            Some(_) => {}
        }
    }
    if !p.namespaces.is_empty() {
        return Verdict::Allow(line.to_string());
    }
    let [ns] = namespaces else {
        return Verdict::Deny(format!(
            "`deploy` must name its namespace: add -n with one of {}",
            ns_list(namespaces)
        ));
    };
    let at = p
        .positionals
        .last()
        .map(|&i| i + 1)
        .unwrap_or(1)
        .min(p.tokens.len());
    let mut tokens = p.tokens.clone();
    tokens.splice(at..at, ["-n", ns.as_str()]);
    Verdict::Allow(tokens.join(" "))
}

/// The verb of a command line (its first word).
pub fn verb_of(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

/// Filters the JSON answer of a read verb to the tenant's namespaces: keys are
/// `<ns>.<cluster>` or `<ns>.<cluster> #<seq>`. `out` is the portal's `out`
/// (a JSON document in a string, or already a value). Returns None when the
/// answer needs no filtering; Err when it should be but cannot be (not JSON).
pub fn filter_answer(tenant: &Tenant, line: &str, out: &Value) -> Option<Result<Value, String>> {
    let namespaces = tenant.namespaces.as_ref()?;
    if !READ_VERBS.contains(&verb_of(line)) {
        return None;
    }
    let (parsed, was_string) = match out {
        Value::String(s) => (serde_json::from_str::<Value>(s).ok(), true),
        other => (Some(other.clone()), false),
    };
    let Some(Value::Object(map)) = parsed else {
        return Some(Err(
            "the answer is not JSON, so it cannot be limited to the tenant's namespaces: add -j"
                .into(),
        ));
    };
    let kept: Map<String, Value> = map
        .into_iter()
        .filter(|(k, _)| glob_in_namespaces(k, namespaces))
        .collect();
    let kept = Value::Object(kept);
    Some(Ok(if was_string {
        Value::String(kept.to_string())
    } else {
        kept
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;

    fn tenant(namespaces: Option<&[&str]>, commands: Option<&[&str]>) -> Tenant {
        let mut t = Tenant::default_tenant("tok".into(), Limits::default());
        t.name = "pay".into();
        t.namespaces = namespaces.map(|n| n.iter().map(|s| s.to_string()).collect());
        t.commands = commands.map(|c| c.iter().map(|s| s.to_string()).collect());
        t
    }

    fn allow(t: &Tenant, line: &str) -> String {
        match check_command(t, line) {
            Verdict::Allow(l) => l,
            Verdict::Deny(why) => panic!("{line}: denied: {why}"),
        }
    }

    fn deny(t: &Tenant, line: &str) -> String {
        match check_command(t, line) {
            Verdict::Deny(why) => why,
            Verdict::Allow(l) => panic!("{line}: allowed as {l}"),
        }
    }

    #[test]
    fn unrestricted_tenants_relay_lines_unchanged() {
        let t = tenant(None, None);
        assert_eq!(allow(&t, "ls -j"), "ls -j");
        assert_eq!(allow(&t, "deploy web.yml -j"), "deploy web.yml -j");
        assert_eq!(allow(&t, "frobnicate x"), "frobnicate x");
        assert!(deny(&t, "   ").contains("empty"));
    }

    #[test]
    fn verbs_outside_commands_are_denied() {
        let t = tenant(None, Some(&["ls", "deploy"]));
        assert_eq!(allow(&t, "ls -j"), "ls -j");
        let why = deny(&t, "kill *.web -j");
        assert!(why.contains("`kill` is not among"), "{why}");
    }

    #[test]
    fn globs_must_begin_with_an_allowed_namespace() {
        let t = tenant(Some(&["pay"]), None);
        assert_eq!(allow(&t, "kill pay.web -j"), "kill pay.web -j");
        assert_eq!(allow(&t, "grep pay.* -j"), "grep pay.* -j");
        for line in [
            "kill *.web -j",
            "kill p*.web -j",
            "kill payments.web -j",
            "kill pay -j",
            "scale other.web -f 2 -j",
            "exec *servo --force run x",
            "ls marathon.* -j",
            "port 80 *.web -j",
        ] {
            let why = deny(&t, line);
            assert!(why.contains("outside tenant `pay`"), "{line}: {why}");
        }
        // An option's value is not a glob; an unknown option's value is.
        assert_eq!(allow(&t, "scale pay.web -f 3 -j"), "scale pay.web -f 3 -j");
        deny(&t, "scale pay.web --weird other.x -j");
        assert!(deny(&t, "kill -j").contains("needs a cluster glob"));
        // exec: only the first positional is a glob.
        assert_eq!(
            allow(&t, "exec pay.servo --force run ~/x deploy.py"),
            "exec pay.servo --force run ~/x deploy.py"
        );
        assert!(deny(&t, "frob pay.x").contains("not a toolset verb"));
    }

    #[test]
    fn optional_globs_default_to_the_namespace() {
        let one = tenant(Some(&["pay"]), None);
        assert_eq!(allow(&one, "ls -j"), "ls pay.* -j");
        assert_eq!(allow(&one, "ls"), "ls pay.*");
        assert_eq!(allow(&one, "port 80 -j"), "port 80 pay.* -j");
        assert_eq!(allow(&one, "port 80 pay.web -j"), "port 80 pay.web -j");
        // A bare `*` is the default spelled out: narrowed the same way.
        assert_eq!(allow(&one, "grep * -j"), "grep pay.* -j");
        assert_eq!(allow(&one, "port 80 * -j"), "port 80 pay.* -j");
        assert_eq!(allow(&one, "ls pay.web * -j"), "ls pay.web pay.* -j");
        assert!(deny(&one, "grep *.web -j").contains("outside tenant `pay`"));
        let two = tenant(Some(&["pay", "web"]), None);
        assert!(deny(&two, "ls -j").contains("means every namespace"));
        assert!(deny(&two, "grep * -j").contains("means every namespace"));
        assert_eq!(allow(&two, "ls web.* -j"), "ls web.* -j");
        assert_eq!(allow(&two, "help"), "help");
    }

    #[test]
    fn deploy_namespace_is_checked_or_added() {
        let one = tenant(Some(&["app"]), None);
        assert_eq!(allow(&one, "deploy web.yml -j"), "deploy web.yml -n app -j");
        assert_eq!(
            allow(&one, "deploy web.yml -n app -j"),
            "deploy web.yml -n app -j"
        );
        assert_eq!(
            allow(&one, "deploy a.yml --namespace=app -p 2"),
            "deploy a.yml --namespace=app -p 2"
        );
        assert!(deny(&one, "deploy web.yml -n marathon -j").contains("`marathon` is not one"));
        // Every occurrence counts, and no other spelling gets through.
        deny(&one, "deploy web.yml -n app -n marathon -j");
        deny(&one, "deploy web.yml -n app --namespace=marathon");
        assert!(deny(&one, "deploy web.yml -n").contains("needs a namespace"));
        for odd in ["-nmarathon", "-jn", "--name", "--names=marathon", "--nam"] {
            let line = format!("deploy web.yml -j {odd} marathon");
            assert!(deny(&one, &line).contains("on its own"), "{line}");
        }
        let two = tenant(Some(&["app", "web"]), None);
        assert!(deny(&two, "deploy web.yml -j").contains("must name its namespace"));
        assert_eq!(allow(&two, "deploy w.yml -n web"), "deploy w.yml -n web");
    }

    #[test]
    fn read_answers_are_filtered() {
        let t = tenant(Some(&["pay"]), None);
        let out = Value::String(
            r#"{"pay.web": {"total": 1}, "payments.web": {"total": 2}, "pay.db #1": {}}"#.into(),
        );
        let got = filter_answer(&t, "ls pay* -j", &out).unwrap().unwrap();
        let got: Value = serde_json::from_str(got.as_str().unwrap()).unwrap();
        assert_eq!(
            got,
            serde_json::json!({"pay.web": {"total": 1}, "pay.db #1": {}})
        );
        assert!(filter_answer(&t, "kill pay.web -j", &out).is_none());
        assert!(filter_answer(&t, "ls", &Value::String("table".into()))
            .unwrap()
            .is_err());
        assert!(filter_answer(&tenant(None, None), "ls -j", &out).is_none());
    }
}
