//! The command policy of SPEC §6.3 and §7: which verbs a tenant may relay,
//! and which clusters. Pure functions: a command line in, a verdict out.
//!
//! The line is first parsed by the toolset grammar (`src/toolset.rs`), the same
//! for every tenant; the policy then decides on the parsed [`Command`] and
//! may rewrite it (`-n <ns>` added, `<ns>.*` filled in, `-j` added to a
//! restricted `ls`). What is relayed is the rewritten command's canonical
//! line, never the text the script sent.

use serde_json::{Map, Value};

use crate::tenants::Tenant;
use crate::toolset::{self, Command};

/// What the policy says about one command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Relay this command (its canonical line), possibly rewritten.
    Allow(Command),
    /// Refuse, with the reason the script will see.
    Deny(String),
}

/// Verbs whose answers are read-only listings, filtered to the tenant's namespaces.
pub const READ_VERBS: &[&str] = &["ls", "grep", "port", "poll", "log"];

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

/// Parses one command line and checks it against the tenant's `commands`
/// and `namespaces`.
pub fn check_command(tenant: &Tenant, line: &str) -> Verdict {
    // A verb the tenant may not use is the first thing to say about a line.
    let first = line.split_whitespace().next().unwrap_or("");
    if let Some(allowed) = &tenant.commands {
        if toolset::verbs().any(|v| v == first) && !allowed.iter().any(|c| c == first) {
            return Verdict::Deny(format!(
                "`{first}` is not among tenant `{}`'s commands ({})",
                tenant.name,
                allowed.join(" ")
            ));
        }
    }
    let mut cmd = match toolset::parse(line.trim()) {
        Ok(cmd) => cmd,
        Err(e) => return Verdict::Deny(e.0),
    };
    if let Some(allowed) = &tenant.commands {
        // Unreachable for a known verb; kept so the rule never rests on the order above.
        if !allowed.iter().any(|c| c == cmd.verb()) {
            return Verdict::Deny(format!(
                "`{}` is not among tenant `{}`'s commands ({})",
                cmd.verb(),
                tenant.name,
                allowed.join(" ")
            ));
        }
    }
    let Some(namespaces) = &tenant.namespaces else {
        return Verdict::Allow(cmd);
    };
    match narrow_to_namespaces(tenant, namespaces, &mut cmd) {
        Ok(()) => Verdict::Allow(cmd),
        Err(why) => Verdict::Deny(why),
    }
}

/// Keeps a command within the tenant's namespaces, rewriting what the
/// toolset would otherwise take as "every cluster".
fn narrow_to_namespaces(
    tenant: &Tenant,
    namespaces: &[String],
    cmd: &mut Command,
) -> Result<(), String> {
    let verb = cmd.verb();
    let only = |what: &str| match namespaces {
        [ns] => Ok(ns.clone()),
        _ => Err(format!(
            "{what} means every namespace; name one of {}",
            ns_list(namespaces)
        )),
    };
    // The toolset's default for an optional cluster glob is `*`; a bare `*`
    // spells the same. Either becomes `<ns>.*` for a one-namespace tenant.
    if let Some(slot) = cmd.optional_cluster_mut() {
        if slot.is_empty() || slot.iter().any(|g| g == "*") {
            let ns = only(&format!("`{verb}` without a cluster glob (or with `*`)"))?;
            *slot = vec![format!("{ns}.*")];
        }
    }
    for glob in cmd.clusters() {
        if !glob_in_namespaces(glob, namespaces) {
            return Err(format!(
                "`{glob}` is outside tenant `{}`'s namespaces: cluster globs must begin with one of {}",
                tenant.name,
                namespaces
                    .iter()
                    .map(|n| format!("`{n}.`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    match verb {
        // The real `ls` takes no cluster: it lists every namespace, and the
        // answer is filtered, which needs it as JSON.
        "ls" if !cmd.has("-j") => {
            cmd.set_option("-j", Vec::new());
        }
        "deploy" => match cmd.option("-n").and_then(|v| v.first()) {
            Some(ns) if !namespaces.iter().any(|n| n == ns) => {
                return Err(format!(
                    "namespace `{ns}` is not one of tenant `{}`'s ({})",
                    tenant.name,
                    ns_list(namespaces)
                ))
            }
            Some(_) => {}
            None => {
                let ns = only("`deploy` without -n").map_err(|_| {
                    format!(
                        "`deploy` must name its namespace: add -n with one of {}",
                        ns_list(namespaces)
                    )
                })?;
                cmd.set_option("-n", vec![ns]);
            }
        },
        _ => {}
    }
    Ok(())
}

/// Filters the JSON answer of a read verb to the tenant's namespaces: keys are
/// `<ns>.<cluster>` or `<ns>.<cluster> #<seq>`. `out` is the portal's `out`
/// (a JSON document in a string, or already a value). Returns None when the
/// answer needs no filtering; Err when it should be but cannot be (not JSON).
/// Answers without `-j` need none: their cluster glob already begins with
/// the namespace (`ls`, which has none, is always sent with `-j`).
pub fn filter_answer(tenant: &Tenant, cmd: &Command, out: &Value) -> Option<Result<Value, String>> {
    let namespaces = tenant.namespaces.as_ref()?;
    if !READ_VERBS.contains(&cmd.verb()) || !cmd.has("-j") {
        return None;
    }
    let (parsed, was_string) = match out {
        Value::String(s) => (serde_json::from_str::<Value>(s).ok(), true),
        other => (Some(other.clone()), false),
    };
    let Some(Value::Object(map)) = parsed else {
        return Some(Err(
            "the answer is not JSON, so it cannot be limited to the tenant's namespaces".into(),
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
            Verdict::Allow(c) => c.canonical(),
            Verdict::Deny(why) => panic!("{line}: denied: {why}"),
        }
    }

    fn deny(t: &Tenant, line: &str) -> String {
        match check_command(t, line) {
            Verdict::Deny(why) => why,
            Verdict::Allow(c) => panic!("{line}: allowed as {}", c.canonical()),
        }
    }

    #[test]
    fn unrestricted_tenants_get_the_grammar_and_the_canonical_line() {
        let t = tenant(None, None);
        assert_eq!(allow(&t, "ls -j"), "ls -j");
        assert_eq!(allow(&t, "deploy web.yml -j"), "deploy web.yml -j");
        assert_eq!(allow(&t, "port 80 *.web -j"), "port 80 '*.web' -j");
        // The default tenant gets the same grammar: no shell, no second verb.
        assert!(deny(&t, "frobnicate x").contains("not a toolset command"));
        assert!(deny(&t, "ls; reboot").contains("shell syntax"));
        assert!(deny(&t, "grep * kill").contains("instead of `grep`"));
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
        assert_eq!(allow(&t, "grep pay.* -j"), "grep 'pay.*' -j");
        for line in [
            "kill *.web -j",
            "kill p*.web -j",
            "kill payments.web -j",
            "kill pay -j",
            "scale other.web -f @2 -j",
            "exec *servo --force run x",
            "port 80 *.web -j",
            "kill pay.web other.web",
        ] {
            let why = deny(&t, line);
            assert!(why.contains("outside tenant `pay`"), "{line}: {why}");
        }
        // An option's value is not a glob; an unknown option is refused.
        assert_eq!(
            allow(&t, "scale pay.web -f @3 -j"),
            "scale pay.web -f @3 -j"
        );
        assert!(deny(&t, "scale pay.web --weird other.x -j").contains("unknown option"));
        assert!(deny(&t, "kill -j").contains("needs one or more cluster globs"));
        // exec: only the first positional is a glob.
        assert_eq!(
            allow(&t, "exec pay.servo --force run deploy.py"),
            "exec pay.servo run deploy.py --force"
        );
    }

    #[test]
    fn optional_globs_default_to_the_namespace_and_ls_is_filtered() {
        let one = tenant(Some(&["pay"]), None);
        // The real `ls` takes no cluster: sent as `ls -j`, answer filtered.
        assert_eq!(allow(&one, "ls -j"), "ls -j");
        assert_eq!(allow(&one, "ls"), "ls -j");
        assert_eq!(allow(&one, "port 80 -j"), "port 80 'pay.*' -j");
        assert_eq!(allow(&one, "port 80 pay.web -j"), "port 80 pay.web -j");
        assert_eq!(allow(&one, "grep * -j"), "grep 'pay.*' -j");
        assert_eq!(allow(&one, "poll"), "poll 'pay.*'");
        assert_eq!(allow(&one, "log"), "log 'pay.*'");
        assert!(deny(&one, "grep *.web -j").contains("outside tenant `pay`"));
        let two = tenant(Some(&["pay", "web"]), None);
        assert!(deny(&two, "grep -j").contains("means every namespace"));
        assert!(deny(&two, "grep * -j").contains("means every namespace"));
        assert_eq!(allow(&two, "grep web.* -j"), "grep 'web.*' -j");
        assert_eq!(allow(&two, "ls"), "ls -j");
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
        assert!(deny(&one, "deploy web.yml -n marathon -j").contains("`marathon` is not one"));
        // Every other spelling is refused by the grammar, for every tenant.
        assert!(deny(&one, "deploy web.yml -n app -n marathon -j").contains("twice"));
        assert!(deny(&one, "deploy web.yml -n").contains("needs a value"));
        for odd in [
            "-nmarathon",
            "-jn",
            "--namespace=marathon",
            "--name",
            "--nam",
        ] {
            let line = format!("deploy web.yml -j {odd} marathon");
            deny(&one, &line);
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
        let cmd = |line: &str| toolset::parse(line).unwrap();
        let got = filter_answer(&t, &cmd("ls -j"), &out).unwrap().unwrap();
        let got: Value = serde_json::from_str(got.as_str().unwrap()).unwrap();
        assert_eq!(
            got,
            serde_json::json!({"pay.web": {"total": 1}, "pay.db #1": {}})
        );
        assert!(filter_answer(&t, &cmd("kill pay.web -j"), &out).is_none());
        assert!(filter_answer(&t, &cmd("grep pay.web"), &out).is_none());
        assert!(
            filter_answer(&t, &cmd("ls -j"), &Value::String("table".into()))
                .unwrap()
                .is_err()
        );
        assert!(filter_answer(&tenant(None, None), &cmd("ls -j"), &out).is_none());
    }
}
