//! The sandbox's layering, read from its source (no build of a module graph
//! tool needed): `src/sandbox/` depends on nothing of servo but
//! `crate::limits`, no file of it uses its parent (`mod.rs`, the façade),
//! its files form no import circle, and the process roles run one way:
//! launcher → warm init (or helper) → init → exec.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The module each `src/sandbox/*.rs` file uses, by file stem ("mod" is
/// `mod.rs`), read from its code (comments left out).
fn sandbox_graph() -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sandbox");
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("src/sandbox") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).expect("source");
            sources.insert(stem, text);
        }
    }
    assert!(
        sources.contains_key("mod") && sources.len() > 5,
        "{sources:?}"
    );
    let modules: BTreeSet<String> = sources.keys().filter(|m| *m != "mod").cloned().collect();
    let mut graph = BTreeMap::new();
    for (file, text) in &sources {
        graph.insert(file.clone(), uses(file, text, &modules));
    }
    graph
}

/// Code without `//` comments (doc comments name other modules freely).
/// String literals holding `//` do not name modules, so cutting them is harmless.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|l| l.split("//").next().unwrap_or(""))
}

/// The modules `file` uses: `super::m`, `crate::sandbox::m`, `super::{a, b}`
/// and, in `mod.rs`, `m::`; "mod" for an item of `mod.rs` itself. Any other
/// `crate::x` is returned as "crate::x". Inside a file's inline `mod tests`
/// (after its first top-level `mod NAME {`), `super::` is the file itself
/// and `super::super::` is `sandbox/`.
fn uses(file: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut nested = false;
    for line in code_lines(text) {
        if line.starts_with("mod ") && line.trim_end().ends_with('{') {
            nested = true;
        }
        let mut add = |name: &str| {
            if modules.contains(name) {
                found.insert(name.to_string());
            } else if !name.is_empty() && name != "*" {
                found.insert("mod".to_string());
            }
        };
        // Paths that name `sandbox/` itself.
        let parents: &[&str] = if file == "mod" {
            &["crate::sandbox::", "self::"]
        } else if nested {
            &["crate::sandbox::", "super::super::"]
        } else {
            &["crate::sandbox::", "super::"]
        };
        for prefix in parents {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                // `super::super::x` also contains `super::x`: only whole prefixes.
                let before = &rest[..at];
                rest = &rest[at + prefix.len()..];
                if before.ends_with("super::") && *prefix == "super::" {
                    continue;
                }
                if let Some(group) = rest.strip_prefix('{') {
                    for item in group.split('}').next().unwrap_or("").split(',') {
                        add(item.trim().split("::").next().unwrap_or(""));
                    }
                } else {
                    add(ident(rest));
                }
            }
        }
        if file == "mod" {
            for m in modules {
                let declared = line.contains(&format!("mod {m};"));
                let pattern = format!("{m}::");
                let used = line.match_indices(&pattern).any(|(at, _)| {
                    at == 0 || !line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if used && !declared {
                    found.insert(m.clone());
                }
            }
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name = ident(rest);
            if name != "sandbox" {
                found.insert(format!("crate::{name}"));
            }
        }
    }
    found.remove(file);
    found
}

fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '*'))
        .unwrap_or(text.len());
    &text[..end]
}

#[test]
fn sandbox_depends_only_on_limits_and_itself() {
    for (file, uses) in sandbox_graph() {
        for u in &uses {
            if let Some(outside) = u.strip_prefix("crate::") {
                assert_eq!(
                    outside, "limits",
                    "src/sandbox/{file}.rs uses crate::{outside}: the sandbox is the bottom \
                     layer and may use only crate::limits and its own modules"
                );
            }
        }
    }
}

#[test]
fn no_sandbox_file_uses_the_facade() {
    for (file, uses) in sandbox_graph() {
        assert!(
            file == "mod" || !uses.contains("mod"),
            "src/sandbox/{file}.rs uses an item of sandbox/mod.rs (the façade on top): \
             move the item into the module it belongs to"
        );
    }
}

#[test]
fn sandbox_modules_form_no_circle() {
    let graph = sandbox_graph();
    // Depth-first search; a module met again while on the stack closes a circle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = stack.iter().position(|s| s == m) {
            let mut circle = stack[at..].to_vec();
            circle.push(m.to_string());
            panic!("import circle in src/sandbox/: {}", circle.join(" -> "));
        }
        stack.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if graph.contains_key(next) {
                visit(next, graph, stack, done);
            }
        }
        stack.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn process_roles_run_one_way() {
    let graph = sandbox_graph();
    // Each role may start only the roles after it, never one before it.
    let roles = ["launcher", "warm_init", "helper", "init", "exec"];
    for (i, role) in roles.iter().enumerate() {
        let uses = &graph[*role];
        for earlier in &roles[..i] {
            assert!(
                !uses.contains(*earlier),
                "src/sandbox/{role}.rs uses {earlier}.rs: the process roles run \
                 launcher -> warm init / helper -> init -> exec"
            );
        }
    }
    assert!(graph["launcher"].contains("warm_init") && graph["launcher"].contains("helper"));
    assert!(graph["warm_init"].contains("init") && graph["helper"].contains("init"));
    assert!(graph["init"].contains("exec"));
}

#[test]
fn the_reader_sees_uses_comments_do_not_count() {
    let modules: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let text = "use super::a::X;\n// super::b is only named here\nuse super::{c, mod_item};\n\
                fn f() { crate::limits::Limits::default(); }\n\
                mod tests {\n    use super::*;\n    use super::super::b;\n}\n";
    let found = uses("x", text, &modules);
    let expected: BTreeSet<String> = ["a", "b", "c", "mod", "crate::limits"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, expected);
}
