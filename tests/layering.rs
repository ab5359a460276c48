//! servo's layering, read from its source (no module graph tool to build).
//!
//! Crate-wide: the top-level modules of `src/` form no import circle, and
//! each uses only modules of a lower layer than its own ([`LAYERS`], the
//! architecture in one table; `docs/architecture.md` draws it).
//!
//! Inside `src/sandbox/`: it depends on nothing of servo but
//! `crate::limits`, no file of it uses its parent (`mod.rs`, the façade),
//! its files form no import circle, and the process roles run one way:
//! launcher → warm init (or helper) → init → exec.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module of `src/` (and the binary, `main`), bottom to
/// top, with its layer: a module may use only modules of a lower layer.
/// A new module gets a row here; a use that points up or sideways fails
/// with the file and line, to be solved by moving the item down to where
/// its users can reach it (as `Tenant` moved from `config` to `tenants`).
#[rustfmt::skip]
const LAYERS: &[(&str, u8, &str)] = &[
    // 0: leaves, nothing of servo below them.
    ("limits",       0, "a run's limits and their defaults"),
    ("tls",          0, "HTTPS: reloadable certificate, client configs"),
    ("toolset",      0, "the Ochothon toolset's command grammar"),
    ("audit",        0, "the audit log"),
    ("bundle",       0, "signature, upload, unpack, decrypt: pure, fuzzed"),
    ("settings",     0, "the error of what servo reads at start-up; token files"),
    // 1: mechanisms on top of a leaf.
    ("sandbox",      1, "launcher -> warm init -> init -> exec (uses limits)"),
    ("metrics",      1, "counters, per toolset verb"),
    ("coordination", 1, "replay cache, concurrency groups, places: local or ZooKeeper"),
    ("ochopod",      1, "servo as an Ochothon pod: detection, registration, process state"),
    // 2: who may do what.
    ("tenants",      2, "tenants: tokens, portals, policies, limits"),
    // 3: a run's portal socket.
    ("relay",        3, "the run's portal socket: policy, shell, http, simulator"),
    // 4: flags and environment, validated into one Config.
    ("config",       4, "flags and environment -> Config"),
    // 5: one run.
    ("run",          5, "one run: request, scripts in order, log lines"),
    // 6: what serves runs, and what drives them.
    ("server",       6, "HTTP: routes, responses, callbacks, the pod's control port"),
    ("client",       6, "servo run, encrypt/decrypt/sign/token, servo sandbox"),
    ("fuzzing",      6, "fuzz harnesses"),
    // 7: the binary.
    ("main",         7, "the CLI: parse, dispatch"),
];

/// One `src/**/*.rs` file: its path from the crate root, its top-level
/// module, how deep it sits (`src/x.rs` and `src/x/mod.rs`: 1,
/// `src/x/y.rs`: 2) and its text.
struct Source {
    path: String,
    module: String,
    depth: usize,
    text: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a src directory") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let rel: PathBuf = path.strip_prefix(root.join("src")).unwrap().to_path_buf();
        if rel == Path::new("lib.rs") {
            continue; // only declares the modules
        }
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let module = parts[0].trim_end_matches(".rs").to_string();
        let depth = if parts.last().is_some_and(|p| p == "mod.rs") {
            parts.len() - 1
        } else {
            parts.len()
        };
        out.push(Source {
            path: format!("src/{}", rel.display()),
            text: std::fs::read_to_string(&path).expect("source"),
            module,
            depth,
        });
    }
    assert!(out.len() > 20, "{} sources", out.len());
    out
}

/// The top-level modules a file names, with the line: `crate::m`
/// (`crate::{a, b::X}` too), `super::` chains that climb to the crate root
/// (`super::super::m` in `src/x/y.rs`), and in `main.rs` `servo::m`. In a
/// file's inline module (a line starting `mod NAME {`, its tests), one more
/// `super::` climbs to the same place.
fn top_level_uses(src: &Source) -> Vec<(usize, String)> {
    let root = if src.module == "main" {
        "servo::"
    } else {
        "crate::"
    };
    let mut found = Vec::new();
    let mut depth = src.depth;
    for (n, line) in code_lines(&src.text).enumerate() {
        if line.starts_with("mod ") && line.trim_end().ends_with('{') {
            depth = src.depth + 1;
        }
        let mut add = |name: &str| found.push((n + 1, name.to_string()));
        let mut at = 0;
        while let Some(i) = line[at..].find(root) {
            let start = at + i;
            at = start + root.len();
            let before = &line[..start];
            if before.ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
                continue;
            }
            named(&line[at..], &mut add);
        }
        let mut at = 0;
        while let Some(i) = line[at..].find("super::") {
            let start = at + i;
            let mut k = 0;
            let mut rest = &line[start..];
            while let Some(r) = rest.strip_prefix("super::") {
                k += 1;
                rest = r;
            }
            at = line.len() - rest.len();
            if line[..start].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            if k == depth {
                named(rest, &mut add);
            }
        }
    }
    found
}

/// The first segment of each path at the start of `rest`: `m::...` or a
/// group `{a, b::X, c::{..}}`.
fn named(rest: &str, add: &mut impl FnMut(&str)) {
    let Some(group) = rest.strip_prefix('{') else {
        add(ident(rest));
        return;
    };
    let mut level = 0;
    let mut item_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => level += 1,
            '}' if level == 0 => break,
            '}' => level -= 1,
            ',' if level == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                item_start = false;
                add(ident(&group[i..]));
            }
            _ => {}
        }
    }
}

/// Module → the modules it uses, each with the first file and line that does.
fn crate_graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().map(|(m, l, _)| (*m, *l)).collect();
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for src in sources() {
        assert!(
            layers.contains_key(src.module.as_str()),
            "{} is in the top-level module `{}`, which has no row in LAYERS \
             (tests/layering.rs): give it a layer",
            src.path,
            src.module
        );
        let uses = graph.entry(src.module.clone()).or_default();
        for (line, used) in top_level_uses(&src) {
            if used != src.module && layers.contains_key(used.as_str()) {
                uses.entry(used).or_insert(format!("{}:{line}", src.path));
            }
        }
    }
    graph
}

#[test]
fn every_layer_row_is_a_module() {
    let graph = crate_graph();
    for (m, _, _) in LAYERS {
        assert!(
            graph.contains_key(*m),
            "LAYERS names `{m}`, which is no top-level module of src/"
        );
    }
}

#[test]
fn the_architecture_doc_draws_the_layers() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
            .expect("docs/architecture.md");
    let picture = doc
        .split("## Layers")
        .nth(1)
        .and_then(|s| s.split("```").nth(1))
        .expect("a picture under ## Layers");
    for (m, layer, _) in LAYERS {
        let row = picture
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{layer} ")))
            .unwrap_or_else(|| panic!("docs/architecture.md draws no layer {layer}"));
        assert!(
            row.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == *m),
            "docs/architecture.md does not draw `{m}` on layer {layer}: {row:?}"
        );
    }
}

/// A circle in `graph` (module → the modules it uses; names outside the
/// graph are left out), as the modules along it, the first one again at the
/// end; None when there is none. Depth-first: a module met again while on
/// the stack closes a circle.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if done.contains(m) {
            return None;
        }
        if let Some(at) = stack.iter().position(|s| s == m) {
            let mut circle = stack[at..].to_vec();
            circle.push(m.to_string());
            return Some(circle);
        }
        stack.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if graph.contains_key(next) {
                if let Some(circle) = visit(next, graph, stack, done) {
                    return Some(circle);
                }
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_form_no_circle() {
    let graph = crate_graph();
    let names = graph
        .iter()
        .map(|(m, uses)| (m.clone(), uses.keys().cloned().collect()))
        .collect();
    if let Some(circle) = find_circle(&names) {
        let steps: Vec<String> = circle
            .windows(2)
            .map(|w| format!("{} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
            .collect();
        panic!(
            "import circle between top-level modules: {}",
            steps.join(", ")
        );
    }
}

#[test]
fn top_level_modules_use_only_lower_layers() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().map(|(m, l, _)| (*m, *l)).collect();
    for (m, uses) in crate_graph() {
        for (used, at) in uses {
            let (from, to) = (layers[m.as_str()], layers[used.as_str()]);
            assert!(
                to < from,
                "{at}: `{m}` (layer {from}) uses `{used}` (layer {to}): a module uses only \
                 modules of a lower layer (LAYERS in tests/layering.rs); move what it needs \
                 down, or the user up"
            );
        }
    }
}

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
    if let Some(circle) = find_circle(&sandbox_graph()) {
        panic!("import circle in src/sandbox/: {}", circle.join(" -> "));
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

#[test]
fn the_crate_reader_sees_crate_super_and_groups() {
    let text = "use crate::audit::Audit;\n// crate::server only named here\n\
                use crate::{limits, tenants::{Portal, Tenant}};\n\
                use super::super::bundle::x;\nuse super::sibling;\nlet s = my_crate::run;\n\
                mod tests {\n    use super::super::super::metrics;\n}\n";
    let src = Source {
        path: "src/relay/x.rs".into(),
        module: "relay".into(),
        depth: 2,
        text: text.into(),
    };
    let found = top_level_uses(&src);
    let expected: Vec<(usize, String)> = [
        (1, "audit"),
        (3, "limits"),
        (3, "tenants"),
        (4, "bundle"),
        (8, "metrics"),
    ]
    .iter()
    .map(|(n, m)| (*n, m.to_string()))
    .collect();
    assert_eq!(found, expected);
}
