//! Policy for the YAML files of a `deploy` (SPEC §6.3, §7): container files
//! and `-o` overrides.
//!
//! The real portal reads these files with PyYAML's unsafe `yaml.load` (PyYAML
//! 3.x, YAML 1.1, Python 2.7): a tag such as `!!python/object/apply:os.system`
//! runs code on the portal, and `verbatim` is merged as is into the Marathon
//! application (privileged containers, host paths, host network...). servo
//! cannot make the portal parse safely, so it only forwards files whose
//! meaning it is sure of, read by *two* parsers alike:
//!
//! 1. bytes: size, UTF-8, and characters PyYAML and yaml-rust2 treat
//!    differently (tabs, BOM, NEL and other line breaks, non-printables);
//! 2. events (yaml-rust2's parser, nothing expanded yet): no tag, no
//!    directive, one document, few anchors and aliases with a bounded
//!    expansion, bounded nesting, scalar keys, no merge key `<<`, and every
//!    plain scalar resolved alike by PyYAML 1.1 and yaml-rust2 (YAML 1.2);
//!    then a byte check that no `!` could start a tag outside quotes;
//! 3. the loaded document: the toolset's keys and the tenant's `images` and
//!    `verbatim` rules.
//!
//! Pure: bytes and rules in, one sentence out.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::{Yaml, YamlLoader};

/// Largest deploy file (SPEC §6.3).
pub const MAX_BYTES: usize = 1 << 20;
/// Most anchors (`&a`) and most aliases (`*a`) in one file.
pub const MAX_ANCHORS: usize = 16;
pub const MAX_ALIASES: usize = 16;
/// Most nodes and scalar bytes the aliases may add once expanded (a loader
/// copies the anchored node at each alias: the "billion laughs").
const MAX_EXPANDED_NODES: u64 = 10_000;
const MAX_EXPANDED_BYTES: u64 = 1 << 20;
/// Deepest nesting of mappings and sequences. A deploy file needs a handful;
/// a deep one would make recursive code (ours, a loader's, `Drop`) overflow.
pub const MAX_DEPTH: usize = 32;

/// The top-level keys the toolset reads.
pub const TOP_KEYS: &[&str] = &[
    "cluster", "image", "ports", "settings", "debug", "start", "verbatim",
];

/// Docker parameters (`container.docker.parameters`, by `key`) that break the
/// container's isolation: refused even under a broader `verbatim` entry,
/// unless `container.docker.parameters.<key>` is listed by that exact name.
pub const DANGEROUS_PARAMETERS: &[&str] = &[
    "privileged",
    "volume",
    "volumes-from",
    "mount",
    "net",
    "network",
    "pid",
    "ipc",
    "uts",
    "userns",
    "cgroupns",
    "cgroup-parent",
    "cap-add",
    "device",
    "device-cgroup-rule",
    "security-opt",
    "sysctl",
    "runtime",
    "user",
    "group-add",
    "volume-driver",
    // The Docker client on the agent reads these host files into the container.
    "env-file",
    "label-file",
];

/// Marathon settings refused even under a broader `verbatim` entry unless
/// listed by their exact name: host access, identity, or what runs where.
pub const DANGEROUS_PATHS: &[&str] = &[
    "container.docker.privileged",
    // HOST networking.
    "container.docker.network",
    // Would replace the `image` the tenant's `images` globs checked.
    "container.docker.image",
    // MESOS (or no) container: `cmd` on the agent itself.
    "container.type",
    "container.linuxInfo",
    // `container.volumes` entries with a host path.
    "container.volumes.hostPath",
    "user",
    // `[{mode: host}]` is host networking in newer Marathons.
    "networks",
    "executor",
];

const PARAMETERS: &str = "container.docker.parameters";

/// A tenant's rules for deploy files (SPEC §7).
pub struct DeployRules<'a> {
    /// Globs the `image` must match (None: any image).
    pub images: Option<&'a [String]>,
    /// Dotted `verbatim` paths the file may set; each allows itself and
    /// everything below it (dangerous settings only by their exact name).
    pub verbatim: &'a [String],
}

/// Checks one deploy container or `-o` override file. `name` is its file name (for messages).
pub fn check(
    name: &str,
    bytes: &[u8],
    rules: &DeployRules<'_>,
    is_override: bool,
) -> Result<(), String> {
    if bytes.len() > MAX_BYTES {
        return Err(format!(
            "{name}: the file has {} bytes, more than the {MAX_BYTES} a deploy file may have",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("{name}: the file is not UTF-8 (byte {})", e.valid_up_to()))?;
    check_characters(name, text)?;
    let chars: Vec<char> = text.chars().collect();
    let quoted = check_events(name, text)?;
    check_bangs(name, &chars, &quoted)?;
    let docs = YamlLoader::load_from_str(text)
        .map_err(|e| format!("{name}: the file is not valid YAML: {e}"))?;
    let doc = match docs.as_slice() {
        [doc] => doc,
        [] => return Err(format!("{name}: the file is empty; a mapping is expected")),
        _ => return Err(format!("{name}: more than one YAML document")),
    };
    check_document(name, doc, rules, is_override)
}

// ---------------------------------------------------------------------------
// 1. Characters

/// Characters the two parsers could read differently, or that hide text.
fn check_characters(name: &str, text: &str) -> Result<(), String> {
    let mut line = 1;
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let why = match c {
            // PyYAML refuses tabs in indentation and YAML 1.2 allows them in
            // places 1.1 does not: where a tab separates tokens is exactly
            // where the two scanners disagree. Quoted strings can write `\t`.
            '\t' => Some("a tab (indent with spaces; inside a double-quoted string write \\t)"),
            // PyYAML skips a leading BOM, yaml-rust2 may read it as content;
            // elsewhere it is an invisible character.
            '\u{feff}' => Some("a byte order mark"),
            // YAML 1.1 (PyYAML) breaks lines at NEL, LS and PS; YAML 1.2
            // (yaml-rust2) reads them as content: a key could hide in a value.
            '\u{85}' | '\u{2028}' | '\u{2029}' => Some("a Unicode line break (NEL, LS or PS)"),
            // A lone CR is a line break to some readers and not others.
            '\r' if chars.peek() != Some(&'\n') => {
                Some("a carriage return not followed by a newline")
            }
            // `%YAML` and `%TAG` directives: `%TAG` makes a tag out of an
            // innocent-looking `!x!` shorthand, and the parsers differ in
            // which versions and handles they accept.
            '%' if prev == '\n' => Some("a `%` directive (`%TAG`, `%YAML`)"),
            // PyYAML 3.x refuses these (its printable set stops at U+FFFD,
            // so emoji too); NUL and controls hide text from readers.
            c if !printable(c) => Some("a non-printable character"),
            _ => None,
        };
        if let Some(why) = why {
            return Err(format!(
                "{name}: line {line} has {why}, which deploy files may not contain"
            ));
        }
        if c == '\n' {
            line += 1;
        }
        prev = c;
    }
    Ok(())
}

/// PyYAML's printable set, less NEL (refused above for another reason).
fn printable(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
}

// ---------------------------------------------------------------------------
// 2. Events

/// One open collection while walking the events.
struct Frame {
    /// Mapping (true) or sequence.
    mapping: bool,
    /// In a mapping: whether the next node is a key.
    expect_key: bool,
    /// In a mapping: the current key, for messages.
    key: Option<String>,
    anchor: usize,
    /// Nodes and scalar bytes inside, aliases expanded.
    nodes: u64,
    bytes: u64,
}

struct Walk<'a> {
    name: &'a str,
    stack: Vec<Frame>,
    /// Expanded size of each completed anchored node, by anchor id.
    anchors: std::collections::HashMap<usize, (u64, u64)>,
    anchor_count: usize,
    alias_count: usize,
    expanded_nodes: u64,
    expanded_bytes: u64,
}

impl Walk<'_> {
    /// The dotted path of the node being read, for messages.
    fn path(&self) -> String {
        let keys: Vec<&str> = self.stack.iter().filter_map(|f| f.key.as_deref()).collect();
        if keys.is_empty() {
            "(top level)".into()
        } else {
            keys.join(".")
        }
    }

    fn refuse(&self, mark: Marker, why: impl std::fmt::Display) -> String {
        format!(
            "{}: `{}` (line {}) {why}",
            self.name,
            self.path(),
            mark.line()
        )
    }

    fn in_key_position(&self) -> bool {
        self.stack.last().is_some_and(|f| f.mapping && f.expect_key)
    }

    fn anchor(&mut self, anchor: usize, mark: Marker) -> Result<(), String> {
        if anchor == 0 {
            return Ok(());
        }
        self.anchor_count += 1;
        if self.anchor_count > MAX_ANCHORS {
            return Err(self.refuse(
                mark,
                format!(
                    "is anchor number {}, more than the {MAX_ANCHORS} a deploy file may have",
                    self.anchor_count
                ),
            ));
        }
        Ok(())
    }

    /// A node of `size` (nodes, bytes) is complete: count it in its parent,
    /// remember it when anchored, and advance the parent's key/value state.
    fn complete(&mut self, anchor: usize, size: (u64, u64), key: Option<String>) {
        if anchor != 0 {
            self.anchors.insert(anchor, size);
        }
        if let Some(parent) = self.stack.last_mut() {
            parent.nodes = parent.nodes.saturating_add(size.0);
            parent.bytes = parent.bytes.saturating_add(size.1);
            if parent.mapping {
                if parent.expect_key {
                    parent.key = key;
                }
                parent.expect_key = !parent.expect_key;
            }
        }
    }
}

/// Walks the parser's events; returns the (line, column) of every quoted
/// scalar's opening quote, for the `!` check.
fn check_events(name: &str, text: &str) -> Result<Vec<(usize, usize)>, String> {
    let mut quoted = Vec::new();
    let mut walk = Walk {
        name,
        stack: Vec::new(),
        anchors: Default::default(),
        anchor_count: 0,
        alias_count: 0,
        expanded_nodes: 0,
        expanded_bytes: 0,
    };
    let mut documents = 0;
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, mark) = parser
            .next_token()
            .map_err(|e| format!("{name}: the file is not valid YAML: {e}"))?;
        match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(format!(
                        "{name}: line {} starts a second YAML document; a deploy file has one",
                        mark.line()
                    ));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                if let Some(tag) = tag {
                    return Err(walk.refuse(mark, format!("has the explicit tag `{}{}`; deploy files may not use tags (`!`), which the portal's YAML loader can turn into code", tag.handle, tag.suffix)));
                }
                walk.anchor(anchor, mark)?;
                let key = walk.in_key_position();
                if key && value == "<<" {
                    return Err(walk.refuse(
                        mark,
                        "uses the merge key `<<`, which deploy files may not use",
                    ));
                }
                if style == TScalarStyle::Plain {
                    if let Some(why) = resolves_differently(&value) {
                        let what = if key { "key" } else { "value" };
                        return Err(walk.refuse(
                            mark,
                            format!("has the unquoted {what} `{value}`, which {why}; quote it"),
                        ));
                    }
                }
                if matches!(
                    style,
                    TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted
                ) {
                    quoted.push((mark.line(), mark.col()));
                }
                let size = (1, value.len() as u64);
                walk.complete(anchor, size, key.then_some(value));
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                let mapping = matches!(event, Event::MappingStart(..));
                if let Some(tag) = tag {
                    return Err(walk.refuse(mark, format!("has the explicit tag `{}{}`; deploy files may not use tags (`!`), which the portal's YAML loader can turn into code", tag.handle, tag.suffix)));
                }
                if walk.in_key_position() {
                    return Err(walk.refuse(
                        mark,
                        "has a key that is a mapping or a list; keys must be plain strings",
                    ));
                }
                walk.anchor(anchor, mark)?;
                if walk.stack.len() >= MAX_DEPTH {
                    return Err(walk.refuse(
                        mark,
                        format!("nests deeper than the {MAX_DEPTH} levels a deploy file may have"),
                    ));
                }
                walk.stack.push(Frame {
                    mapping,
                    expect_key: true,
                    key: None,
                    anchor,
                    nodes: 0,
                    bytes: 0,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = walk.stack.pop() else {
                    return Err(format!("{name}: the file is not valid YAML (unbalanced)"));
                };
                let size = (frame.nodes.saturating_add(1), frame.bytes);
                walk.complete(frame.anchor, size, None);
            }
            Event::Alias(id) => {
                walk.alias_count += 1;
                if walk.alias_count > MAX_ALIASES {
                    return Err(walk.refuse(mark, format!("is alias number {}, more than the {MAX_ALIASES} a deploy file may have", walk.alias_count)));
                }
                if walk.in_key_position() {
                    return Err(walk.refuse(
                        mark,
                        "has an alias (`*`) as a key; keys must be plain strings",
                    ));
                }
                // An anchor still open is a recursive structure; an unknown one an error.
                let Some(&size) = walk.anchors.get(&id) else {
                    return Err(walk.refuse(
                        mark,
                        "has an alias to a node that contains it or does not exist",
                    ));
                };
                walk.expanded_nodes = walk.expanded_nodes.saturating_add(size.0);
                walk.expanded_bytes = walk.expanded_bytes.saturating_add(size.1);
                if walk.expanded_nodes > MAX_EXPANDED_NODES
                    || walk.expanded_bytes > MAX_EXPANDED_BYTES
                {
                    return Err(walk.refuse(
                        mark,
                        "has aliases that expand to more than a deploy file may hold",
                    ));
                }
                walk.complete(0, size, None);
            }
        }
    }
    Ok(quoted)
}

/// Why a plain scalar would be read differently by PyYAML 3.x (YAML 1.1
/// implicit resolvers) and yaml-rust2 (YAML 1.2 core schema), if it would.
fn resolves_differently(s: &str) -> Option<&'static str> {
    let theirs = pyyaml_resolve(s);
    let ours = Yaml::from_str(s);
    let same = match (&theirs, &ours) {
        (Py::Str, Yaml::String(_)) => true,
        (Py::Null, Yaml::Null) => true,
        (Py::Bool(a), Yaml::Boolean(b)) => a == b,
        (Py::Int(a), Yaml::Integer(b)) => a.is_some_and(|a| a == *b),
        (Py::Float(a), Yaml::Real(b)) => {
            match (a, b.parse::<f64>().ok().or_else(|| special_float(b))) {
                (Some(a), Some(b)) => *a == b || (a.is_nan() && b.is_nan()),
                _ => false,
            }
        }
        _ => false,
    };
    if same {
        return None;
    }
    Some(match theirs {
        Py::Merge => "the portal reads as a merge key",
        Py::Timestamp => "the portal reads as a date",
        Py::Value => "the portal reads as a special `=` value",
        Py::Bool(_) => "the portal reads as a boolean",
        Py::Null => "the portal reads as null",
        Py::Int(_) => "the portal reads as a different number",
        Py::Float(_) => "the portal reads as a different number",
        Py::Str => "the portal reads as a string but servo's parser does not",
    })
}

fn special_float(s: &str) -> Option<f64> {
    match s.trim_start_matches('+') {
        ".inf" | ".Inf" | ".INF" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Some(f64::NAN),
        _ => None,
    }
}

/// What PyYAML 3.x's implicit resolvers make of a plain scalar.
#[derive(Debug, PartialEq)]
enum Py {
    Str,
    Null,
    Bool(bool),
    /// None: beyond i64.
    Int(Option<i64>),
    /// None: a form servo does not evaluate (sexagesimal, `_`).
    Float(Option<f64>),
    Merge,
    Timestamp,
    Value,
}

/// PyYAML's resolvers, in its order (bool, float, int, merge, null,
/// timestamp, value). The timestamp test is broader than PyYAML's (any
/// `dddd-` start): such values are then only asked to be quoted.
fn pyyaml_resolve(s: &str) -> Py {
    match s {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Py::Bool(true)
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Py::Bool(false)
        }
        "" | "~" | "null" | "Null" | "NULL" => return Py::Null,
        "<<" => return Py::Merge,
        "=" => return Py::Value,
        _ => {}
    }
    if is_py_float(s) {
        let clean = s.replace('_', "").to_ascii_lowercase();
        let value = if clean.contains(':') {
            None
        } else {
            clean.parse::<f64>().ok().or_else(|| special_float(&clean))
        };
        return Py::Float(value);
    }
    if is_py_int(s) {
        return Py::Int(py_int_value(s));
    }
    let b = s.as_bytes();
    if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' {
        return Py::Timestamp;
    }
    Py::Str
}

fn digits(s: &str, ok: impl Fn(u8) -> bool) -> bool {
    !s.is_empty() && s.bytes().all(ok)
}

fn strip_sign(s: &str) -> &str {
    s.strip_prefix(['-', '+']).unwrap_or(s)
}

/// `[0-9][0-9_]*` then one or more `:[0-5]?[0-9]` (sexagesimal), or not.
fn sexagesimal(s: &str, first_nonzero: bool) -> bool {
    let mut parts = s.split(':');
    let Some(head) = parts.next() else {
        return false;
    };
    let head_ok = head
        .as_bytes()
        .first()
        .is_some_and(|c| c.is_ascii_digit() && (!first_nonzero || *c != b'0'))
        && digits(head, |c| c.is_ascii_digit() || c == b'_');
    let mut tails = 0;
    for part in parts {
        let p = part.as_bytes();
        let ok = match p {
            [d] => d.is_ascii_digit(),
            [a, d] => (b'0'..=b'5').contains(a) && d.is_ascii_digit(),
            _ => false,
        };
        if !ok {
            return false;
        }
        tails += 1;
    }
    head_ok && tails > 0
}

fn is_py_int(s: &str) -> bool {
    let u = strip_sign(s);
    if let Some(b) = u.strip_prefix("0b") {
        return digits(b, |c| c == b'0' || c == b'1' || c == b'_');
    }
    if let Some(x) = u.strip_prefix("0x") {
        return digits(x, |c| c.is_ascii_hexdigit() || c == b'_');
    }
    if u == "0" {
        return true;
    }
    if let Some(o) = u.strip_prefix('0') {
        return digits(o, |c| (b'0'..=b'7').contains(&c) || c == b'_');
    }
    if u.starts_with(|c: char| ('1'..='9').contains(&c)) {
        return digits(u, |c| c.is_ascii_digit() || c == b'_') || sexagesimal(u, true);
    }
    false
}

fn py_int_value(s: &str) -> Option<i64> {
    let negative = s.starts_with('-');
    let u = strip_sign(s).replace('_', "");
    let magnitude = if let Some(b) = u.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if let Some(x) = u.strip_prefix("0x") {
        i64::from_str_radix(x, 16).ok()?
    } else if u.contains(':') {
        u.split(':').try_fold(0i64, |acc, p| {
            acc.checked_mul(60)?.checked_add(p.parse::<i64>().ok()?)
        })?
    } else if u.len() > 1 && u.starts_with('0') {
        i64::from_str_radix(&u[1..], 8).ok()?
    } else {
        u.parse::<i64>().ok()?
    };
    if negative {
        magnitude.checked_neg()
    } else {
        Some(magnitude)
    }
}

fn is_py_float(s: &str) -> bool {
    if matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let signed = strip_sign(s);
    if matches!(signed, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    // `\.[0-9_]+([eE][-+][0-9]+)?`, unsigned
    if let Some(frac) = s.strip_prefix('.') {
        let (frac, exp) = split_exponent(frac);
        return digits(frac, |c| c.is_ascii_digit() || c == b'_') && exp;
    }
    // `[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*`
    if let Some((int, frac)) = signed.split_once('.') {
        if int.contains(':') {
            return sexagesimal(int, false)
                && frac.bytes().all(|c| c.is_ascii_digit() || c == b'_');
        }
        // `[0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)?`
        let (frac, exp) = split_exponent(frac);
        return int.starts_with(|c: char| c.is_ascii_digit())
            && digits(int, |c| c.is_ascii_digit() || c == b'_')
            && frac.bytes().all(|c| c.is_ascii_digit() || c == b'_')
            && exp;
    }
    false
}

/// Splits `[0-9_]*` from an optional `[eE][-+][0-9]+`; the bool says whether
/// the exponent (if any) is well formed.
fn split_exponent(s: &str) -> (&str, bool) {
    match s.find(['e', 'E']) {
        None => (s, true),
        Some(i) => {
            let exp = &s[i + 1..];
            let ok = exp.starts_with(['-', '+']) && digits(&exp[1..], |c| c.is_ascii_digit());
            (&s[..i], ok)
        }
    }
}

// ---------------------------------------------------------------------------
// `!` outside quotes

/// PyYAML reads a `!` that starts a token as a tag. yaml-rust2 found no tag,
/// but the two scanners may split tokens differently, so a `!` that could
/// start a token (at a line's start, after a space or an indicator) is only
/// accepted inside a quoted string, whose extent is certain.
fn check_bangs(name: &str, chars: &[char], quoted: &[(usize, usize)]) -> Result<(), String> {
    // The char index where each line starts.
    let mut line_starts = vec![0];
    line_starts.extend(
        chars
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == '\n')
            .map(|(i, _)| i + 1),
    );
    // Quoted extents, as char ranges [open, close].
    let mut spans = Vec::with_capacity(quoted.len());
    for &(line, col) in quoted {
        let Some(start) = line.checked_sub(1).and_then(|l| line_starts.get(l)) else {
            continue;
        };
        let open = start + col;
        let Some(&q) = chars.get(open) else { continue };
        if q != '\'' && q != '"' {
            continue;
        }
        let mut i = open + 1;
        while let Some(&c) = chars.get(i) {
            if q == '"' && c == '\\' {
                i += 2;
                continue;
            }
            if c == q {
                if q == '\'' && chars.get(i + 1) == Some(&'\'') {
                    i += 2;
                    continue;
                }
                break;
            }
            i += 1;
        }
        spans.push((open, i));
    }
    spans.sort_unstable();
    let mut span = 0;
    let mut line = 1;
    let mut prev: Option<char> = None;
    let mut prev_ok = false;
    for (i, &c) in chars.iter().enumerate() {
        while spans.get(span).is_some_and(|&(_, end)| end < i) {
            span += 1;
        }
        let inside = spans
            .get(span)
            .is_some_and(|&(open, end)| open < i && i < end);
        if c == '!' {
            let after_word = prev.is_some_and(|p| {
                p.is_alphanumeric() || "._/+=~^$();".contains(p) || (p == '!' && prev_ok)
            });
            prev_ok = inside || after_word;
            if !prev_ok {
                return Err(format!(
                    "{name}: line {line} has a `!` outside quotes where it could start a tag; put the value that holds it in quotes"
                ));
            }
        }
        if c == '\n' {
            line += 1;
        }
        prev = Some(c);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. The document

fn check_document(
    name: &str,
    doc: &Yaml,
    rules: &DeployRules<'_>,
    is_override: bool,
) -> Result<(), String> {
    let Yaml::Hash(top) = doc else {
        return Err(format!(
            "{name}: the top level is {}, not a mapping of the toolset's keys",
            kind(doc)
        ));
    };
    for (k, v) in top {
        let Yaml::String(key) = k else {
            return Err(format!(
                "{name}: the top-level key {k:?} is not a plain string"
            ));
        };
        match key.as_str() {
            "cluster" => check_cluster(name, v)?,
            "image" => check_image(name, "image", v, rules)?,
            "ports" => check_ports(name, v)?,
            "settings" => check_settings(name, v)?,
            "debug" | "start" => {
                if !matches!(v, Yaml::Boolean(_) | Yaml::Integer(_) | Yaml::String(_)) {
                    return Err(format!(
                        "{name}: `{key}` is {}; a boolean is expected",
                        kind(v)
                    ));
                }
            }
            "verbatim" => check_verbatim(name, v, rules)?,
            other => {
                return Err(format!(
                    "{name}: `{other}` is not a key the toolset reads ({})",
                    TOP_KEYS.join(" ")
                ))
            }
        }
    }
    if !is_override {
        for required in ["cluster", "image"] {
            if !top.contains_key(&Yaml::String(required.into())) {
                return Err(format!(
                    "{name}: `{required}` is missing; a container file needs one"
                ));
            }
        }
    }
    Ok(())
}

fn kind(v: &Yaml) -> &'static str {
    match v {
        Yaml::Real(_) => "a number",
        Yaml::Integer(_) => "an integer",
        Yaml::String(_) => "a string",
        Yaml::Boolean(_) => "a boolean",
        Yaml::Array(_) => "a list",
        Yaml::Hash(_) => "a mapping",
        Yaml::Alias(_) => "an alias",
        Yaml::Null => "null",
        Yaml::BadValue => "not a value",
    }
}

fn check_cluster(name: &str, v: &Yaml) -> Result<(), String> {
    let ok = match v {
        Yaml::String(s) => {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name}: `cluster` is {}; a plain name of 1-64 characters of A-Z, a-z, 0-9, - and _ is expected",
            show(v)
        ))
    }
}

fn show(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => format!("`{}`", s.escape_debug()),
        other => kind(other).into(),
    }
}

/// `image`: a plain image reference that one of the tenant's globs matches.
fn check_image(name: &str, key: &str, v: &Yaml, rules: &DeployRules<'_>) -> Result<(), String> {
    let Yaml::String(image) = v else {
        return Err(format!(
            "{name}: `{key}` is {}; a string is expected",
            kind(v)
        ));
    };
    let plain = !image.is_empty()
        && image.len() <= 512
        && !image.starts_with(['-', '.', '/'])
        && !image.contains("..")
        && !image.contains("//")
        && image
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._/:@-".contains(&c));
    if !plain {
        return Err(format!(
            "{name}: `{key}` is {}, not a plain image reference",
            show(v)
        ));
    }
    if let Some(globs) = rules.images {
        if !globs
            .iter()
            .any(|g| crate::relay::glob::glob_match(g, image))
        {
            return Err(format!(
                "{name}: `{key}` is `{image}`, which the tenant's `images` ({}) do not allow",
                globs.join(" ")
            ));
        }
    }
    Ok(())
}

/// `ports`: a list of `<container port> [<host port>] [tcp|udp]`.
fn check_ports(name: &str, v: &Yaml) -> Result<(), String> {
    let Yaml::Array(ports) = v else {
        return Err(format!(
            "{name}: `ports` is {}; a list is expected",
            kind(v)
        ));
    };
    let port = |s: &str| s.parse::<u16>().is_ok_and(|p| p > 0) && !s.starts_with(['0', '+']);
    for p in ports {
        let ok = match p {
            Yaml::Integer(n) => (1..=65535).contains(n),
            Yaml::String(s) => {
                let words: Vec<&str> = s.split(' ').collect();
                match words.as_slice() {
                    [c] => port(c),
                    [c, x] => port(c) && (port(x) || *x == "tcp" || *x == "udp"),
                    [c, h, proto] => port(c) && port(h) && (*proto == "tcp" || *proto == "udp"),
                    _ => false,
                }
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{name}: `ports` has {}; each entry is `<container port> [<host port>] [tcp|udp]`",
                show(p)
            ));
        }
    }
    Ok(())
}

/// `settings`: a mapping of string keys, handed to the pods.
fn check_settings(name: &str, v: &Yaml) -> Result<(), String> {
    if !matches!(v, Yaml::Hash(_)) {
        return Err(format!(
            "{name}: `settings` is {}; a mapping is expected",
            kind(v)
        ));
    }
    string_keys(name, "settings", v)
}

/// Every key at every level below `path` is a string.
fn string_keys(name: &str, path: &str, v: &Yaml) -> Result<(), String> {
    match v {
        Yaml::Hash(h) => {
            for (k, v) in h {
                let Yaml::String(k) = k else {
                    return Err(format!(
                        "{name}: `{path}` has the key {k:?}, which is not a plain string"
                    ));
                };
                string_keys(name, &format!("{path}.{k}"), v)?;
            }
            Ok(())
        }
        Yaml::Array(a) => a.iter().try_for_each(|v| string_keys(name, path, v)),
        _ => Ok(()),
    }
}

/// `verbatim`: every leaf path allowed by the tenant, dangerous ones by name.
fn check_verbatim(name: &str, v: &Yaml, rules: &DeployRules<'_>) -> Result<(), String> {
    let Yaml::Hash(h) = v else {
        return Err(format!(
            "{name}: `verbatim` is {}; a mapping is expected",
            kind(v)
        ));
    };
    for (k, v) in h {
        let key = verbatim_key(name, "", k)?;
        verbatim_node(name, key.to_string(), v, rules)?;
    }
    Ok(())
}

fn verbatim_key<'a>(name: &str, parent: &str, k: &'a Yaml) -> Result<&'a str, String> {
    let at = if parent.is_empty() {
        "verbatim".to_string()
    } else {
        format!("verbatim.{parent}")
    };
    let Yaml::String(k) = k else {
        return Err(format!(
            "{name}: `{at}` has the key {k:?}, which is not a plain string"
        ));
    };
    let ok = !k.is_empty()
        && !k.starts_with('.')
        && !k.ends_with('.')
        && !k.contains("..")
        && k.chars().all(|c| c.is_ascii_graphic());
    if !ok {
        return Err(format!(
            "{name}: `{at}` has the key `{}`; verbatim keys are printable ASCII without spaces or empty dotted parts",
            k.escape_debug()
        ));
    }
    Ok(k)
}

fn verbatim_node(
    name: &str,
    path: String,
    v: &Yaml,
    rules: &DeployRules<'_>,
) -> Result<(), String> {
    if path == PARAMETERS {
        return docker_parameters(name, v, rules);
    }
    if path == "container.docker.image" {
        check_image(name, "verbatim.container.docker.image", v, rules)?;
    }
    match v {
        Yaml::Hash(h) if !h.is_empty() => {
            for (k, v) in h {
                let key = verbatim_key(name, &path, k)?;
                verbatim_node(name, format!("{path}.{key}"), v, rules)?;
            }
            Ok(())
        }
        Yaml::Array(a) if !a.is_empty() => {
            let mut leaf = false;
            for item in a {
                match item {
                    Yaml::Hash(_) | Yaml::Array(_) => {
                        verbatim_node(name, path.clone(), item, rules)?
                    }
                    _ => leaf = true,
                }
            }
            if leaf {
                verbatim_leaf(name, &path, false, rules)?;
            }
            Ok(())
        }
        Yaml::Array(_) => verbatim_leaf(name, &path, false, rules),
        // A null, a scalar or `{}` replaces whatever was below it.
        _ => verbatim_leaf(name, &path, true, rules),
    }
}

/// `container.docker.parameters`: a list of `{key, value}`, each checked as
/// the path `container.docker.parameters.<key>`.
fn docker_parameters(name: &str, v: &Yaml, rules: &DeployRules<'_>) -> Result<(), String> {
    let at = format!("verbatim.{PARAMETERS}");
    let Yaml::Array(list) = v else {
        return Err(format!(
            "{name}: `{at}` is {}; a list of {{key, value}} is expected",
            kind(v)
        ));
    };
    if list.is_empty() {
        return verbatim_leaf(name, PARAMETERS, false, rules);
    }
    for entry in list {
        let param = match entry {
            Yaml::Hash(h) if h.len() == 2 => {
                let key = h.get(&Yaml::String("key".into()));
                let value = h.get(&Yaml::String("value".into()));
                match (key, value) {
                    (
                        Some(Yaml::String(k)),
                        Some(Yaml::String(_) | Yaml::Integer(_) | Yaml::Boolean(_) | Yaml::Real(_)),
                    ) => Some(k.as_str()),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(param) = param else {
            return Err(format!(
                "{name}: `{at}` has an entry that is not {{key: <name>, value: <string>}}"
            ));
        };
        // Docker's flags are lower case, digits and dashes: any other
        // spelling is either refused by Docker or a way round this list.
        let plain = param.len() <= 64
            && param.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && param
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        if !plain {
            return Err(format!(
                "{name}: `{at}` sets `{}`, which is not a Docker parameter name (a-z, 0-9 and -)",
                param.escape_debug()
            ));
        }
        let path = format!("{PARAMETERS}.{param}");
        if !allowed(&path, rules.verbatim) || !dangerous_allowed(&path, rules.verbatim) {
            return Err(format!(
                "{name}: `{at}` sets `{param}`, which tenant policy does not allow (list `{path}` in the tenant's `verbatim` to allow it)"
            ));
        }
    }
    Ok(())
}

/// A leaf of `verbatim` at `path`; `replaces` when its value would replace
/// everything below `path` (null, scalar, `{}`).
fn verbatim_leaf(
    name: &str,
    path: &str,
    replaces: bool,
    rules: &DeployRules<'_>,
) -> Result<(), String> {
    if !allowed(path, rules.verbatim) {
        return Err(format!(
            "{name}: `verbatim.{path}` is not allowed by tenant policy (list `{path}` in the tenant's `verbatim` to allow it)"
        ));
    }
    if !dangerous_allowed(path, rules.verbatim) {
        return Err(format!(
            "{name}: `verbatim.{path}` is a setting that tenant policy allows only by its exact name (list `{}` in the tenant's `verbatim` to allow it)",
            dangerous_above(path).unwrap_or(path)
        ));
    }
    if replaces {
        if let Some(d) = dangerous_names().find(|d| under(d, path) && d != path) {
            return Err(format!(
                "{name}: `verbatim.{path}` replaces all of `{path}`, which includes `{d}`; set the keys below it instead"
            ));
        }
    }
    Ok(())
}

/// Whether `path` is `entry` or below it.
fn under(path: &str, entry: &str) -> bool {
    path == entry
        || path
            .strip_prefix(entry)
            .is_some_and(|rest| rest.starts_with('.'))
}

fn allowed(path: &str, allowlist: &[String]) -> bool {
    allowlist.iter().any(|e| under(path, e))
}

fn dangerous_names() -> impl Iterator<Item = String> {
    DANGEROUS_PATHS.iter().map(|p| p.to_string()).chain(
        DANGEROUS_PARAMETERS
            .iter()
            .map(|p| format!("{PARAMETERS}.{p}")),
    )
}

fn dangerous_above(path: &str) -> Option<&'static str> {
    DANGEROUS_PATHS.iter().copied().find(|d| under(path, d))
}

/// A path at or below a dangerous name needs an entry at or below that name
/// (a broader entry such as `container` does not do).
fn dangerous_allowed(path: &str, allowlist: &[String]) -> bool {
    dangerous_names()
        .filter(|d| under(path, d))
        .all(|d| allowlist.iter().any(|e| under(e, &d) && under(path, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "cluster: web\nimage: registry.example.com/pay/web:1.2\nports:\n  - 8080\n  - \"9000 19000 udp\"\n  - 80 tcp\nsettings:\n  greeting: hello world!\n  count: 3\n  flags: {a: true}\n";

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn run(yaml: &str, images: Option<&[&str]>, verbatim: &[&str]) -> Result<(), String> {
        let images = images.map(strings);
        let verbatim = strings(verbatim);
        let rules = DeployRules {
            images: images.as_deref(),
            verbatim: &verbatim,
        };
        check("web.yml", yaml.as_bytes(), &rules, false)
    }

    fn ok(yaml: &str) {
        if let Err(e) = run(yaml, None, &[]) {
            panic!("{yaml:?}: refused: {e}");
        }
    }

    fn refused(yaml: &str, want: &str) {
        let got = run(yaml, None, &[]).expect_err(yaml);
        assert!(got.starts_with("web.yml: "), "{got}");
        assert!(got.contains(want), "{yaml:?}\n  got: {got}\n want: {want}");
    }

    #[test]
    fn a_plain_web_yml_is_accepted() {
        ok(WEB);
        assert_eq!(run(WEB, Some(&["registry.example.com/pay/*"]), &[]), Ok(()));
        ok("cluster: web\nimage: nginx\ndebug: true\nstart: false\n");
        ok("# comment\ncluster: \"web\"\nimage: 'nginx:1.25'\nsettings: {}\n...\n");
        ok("---\ncluster: web\r\nimage: nginx\r\n");
        ok("cluster: web\nimage: nginx\nsettings:\n  motd: |\n    hello, world\n    bye\n");
    }

    #[test]
    fn python_tags_are_refused_wherever_they_are() {
        let cases = [
            "cluster: !!python/object/apply:os.system [\"id\"]\nimage: x\n",
            "cluster: web\nimage: x\nsettings:\n  a:\n    - b: !!python/object/apply:os.system [\"id\"]\n",
            "? !!python/object/apply:os.system [\"id\"]\n: x\n",
            "!!python/object/apply:os.system [\"id\"]: x\n",
            "cluster: web\nimage: x\nsettings: !<tag:yaml.org,2002:python/object/apply:os.system> [\"id\"]\n",
            "cluster: !!str web\nimage: x\n",
            "cluster: ! web\nimage: x\n",
            "cluster: !foo web\nimage: x\n",
            "--- !!python/object/apply:os.system [\"id\"]\n",
        ];
        for yaml in cases {
            let got = run(yaml, None, &[]).expect_err(yaml);
            assert!(
                got.contains("tag") || got.contains("`!`"),
                "{yaml:?}: {got}"
            );
        }
        let e = run(cases[1], None, &[]).unwrap_err();
        assert!(e.contains("`settings.a.b` (line 5)"), "{e}");
        assert!(e.contains("python/object/apply:os.system"), "{e}");
    }

    #[test]
    fn tag_directives_are_refused() {
        refused(
            "%TAG !p! tag:yaml.org,2002:python/\n---\ncluster: !p!object/apply:os.system [\"id\"]\nimage: x\n",
            "directive",
        );
        refused("%YAML 1.1\n---\ncluster: web\nimage: x\n", "directive");
    }

    #[test]
    fn a_bang_that_could_start_a_tag_must_be_quoted() {
        ok("cluster: web\nimage: x\nsettings: {a: \"!!python/x\", b: '!x', c: wow!, d: \"a \\\" !x\"}\n");
        refused(
            "cluster: web\nimage: x\nsettings:\n  a: |\n    !!python/x\n",
            "`!` outside quotes",
        );
        refused("cluster: web\nimage: x\n# !!python\n", "`!` outside quotes");
    }

    #[test]
    fn alias_bombs_are_refused_quickly() {
        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
        let mut prev = "a";
        for n in names {
            bomb.push_str(&format!(
                "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
            prev = n;
        }
        let start = std::time::Instant::now();
        let e = run(&bomb, None, &[]).unwrap_err();
        assert!(e.contains("alias"), "{e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));

        // Few aliases, each of a big node: refused by the expanded size.
        let big = format!("x: &x [{}]\n", vec!["1"; 5000].join(","));
        let e = run(&format!("{big}y: [*x, *x, *x]\n"), None, &[]).unwrap_err();
        assert!(e.contains("expand"), "{e}");

        // A few small aliases are fine.
        ok("cluster: &c web\nimage: nginx\nsettings: {name: *c}\n");
        // Recursive ones are not.
        refused(
            "cluster: web\nimage: x\nsettings: &s {a: *s}\n",
            "contains it",
        );
    }

    #[test]
    fn merge_keys_are_refused() {
        refused("base: &a {cluster: web}\n<<: *a\nimage: x\n", "merge key");
        refused(
            "cluster: web\nimage: x\nsettings:\n  b: &a {x: 1}\n  c:\n    <<: *a\n",
            "merge key",
        );
        refused(
            "cluster: web\nimage: x\nsettings: {\"<<\": {x: 1}}\n",
            "merge key",
        );
    }

    #[test]
    fn one_document_only() {
        refused(
            "cluster: web\nimage: x\n---\ncluster: db\nimage: y\n",
            "second YAML document",
        );
        refused("", "empty");
    }

    #[test]
    fn byte_level_oddities_are_refused() {
        refused("cluster: web\nimage: x\nsettings:\n\ta: 1\n", "tab");
        refused("\u{feff}cluster: web\nimage: x\n", "byte order mark");
        refused("cluster: web\u{85}image: x\n", "line break");
        refused("cluster: web\u{2028}image: x\n", "line break");
        refused("cluster: web\rimage: x\n", "carriage return");
        refused("cluster: web\nimage: x\0\n", "non-printable");
        refused(
            "cluster: web\nimage: x\nsettings: {a: \"\u{1f600}\"}\n",
            "non-printable",
        );
        let e = check(
            "web.yml",
            b"cluster: \xff\n",
            &DeployRules {
                images: None,
                verbatim: &[],
            },
            false,
        )
        .unwrap_err();
        assert!(e.contains("UTF-8"), "{e}");
        let big = format!(
            "cluster: web\nimage: x\nsettings: {{a: \"{}\"}}\n",
            "x".repeat(MAX_BYTES)
        );
        refused(&big, "bytes");
    }

    #[test]
    fn scalars_the_portal_reads_differently_must_be_quoted() {
        for (value, why) in [
            ("yes", "boolean"),
            ("off", "boolean"),
            ("Null", "null"),
            ("010", "different number"),
            ("1_000", "different number"),
            ("0o10", "string"),
            ("1e3", "string"),
            ("1:30", "different number"),
            ("2001-12-14", "date"),
            ("=", "`=`"),
        ] {
            refused(
                &format!("cluster: web\nimage: x\nsettings: {{a: {value}}}\n"),
                why,
            );
            ok(&format!(
                "cluster: web\nimage: x\nsettings: {{a: \"{value}\"}}\n"
            ));
        }
        refused(
            "cluster: web\nimage: x\nsettings: {on: 1}\n",
            "unquoted key `on`",
        );
        for same in [
            "true", "False", "~", "null", "12", "-7", "0x1F", "1.5", ".5", "-.inf", ".nan",
            "1.0e+3", "1.2.3", "v1", "0",
        ] {
            ok(&format!(
                "cluster: web\nimage: x\nsettings: {{a: {same}}}\n"
            ));
        }
    }

    #[test]
    fn keys_are_plain_strings() {
        refused(
            "cluster: web\nimage: x\nsettings: {[a]: 1}\n",
            "keys must be plain strings",
        );
        refused(
            "cluster: web\nimage: x\nsettings: {? {a: 1} : 1}\n",
            "keys must be plain strings",
        );
        refused(
            "cluster: web\nimage: x\nsettings: {1: a}\n",
            "not a plain string",
        );
        refused(
            "cluster: web\nimage: x\nsettings: {a: {2: x}}\n",
            "not a plain string",
        );
        refused(
            "cluster: web\nimage: x\nsettings: {a: 1, a: 2}\n",
            "duplicated key",
        );
    }

    #[test]
    fn top_level_keys_and_shapes() {
        refused("cluster: web\nimage: x\ncmd: id\n", "`cmd` is not a key");
        refused("image: x\n", "`cluster` is missing");
        refused("cluster: web\n", "`image` is missing");
        refused("[1, 2]\n", "not a mapping");
        refused("cluster: a.b\nimage: x\n", "`cluster` is `a.b`");
        refused("cluster: \"a b\"\nimage: x\n", "`cluster`");
        refused("cluster: 12\nimage: x\n", "`cluster` is an integer");
        refused("cluster: web\nimage: \"x y\"\n", "not a plain image");
        refused(
            "cluster: web\nimage: x\nports: 8080\n",
            "a list is expected",
        );
        refused("cluster: web\nimage: x\nports: [70000]\n", "`ports` has");
        refused(
            "cluster: web\nimage: x\nports: [\"80 sctp\"]\n",
            "`ports` has",
        );
        refused(
            "cluster: web\nimage: x\nsettings: [1]\n",
            "`settings` is a list",
        );
        refused(
            "cluster: web\nimage: x\nverbatim: null\n",
            "`verbatim` is null",
        );
        // Overrides need neither key.
        let rules = DeployRules {
            images: None,
            verbatim: &[],
        };
        assert_eq!(check("o.yml", b"settings: {a: b}\n", &rules, true), Ok(()));
        assert!(check("o.yml", b"image: \"a b\"\n", &rules, true).is_err());
    }

    #[test]
    fn images_must_match_the_tenants_globs() {
        let globs: &[&str] = &["registry.example.com/pay/*", "nginx:1.2?"];
        assert_eq!(
            run("cluster: web\nimage: nginx:1.25\n", Some(globs), &[]),
            Ok(())
        );
        let e = run(
            "cluster: web\nimage: evil.example/miner:1\n",
            Some(globs),
            &[],
        )
        .unwrap_err();
        assert!(
            e.contains("`image` is `evil.example/miner:1`, which the tenant's `images`"),
            "{e}"
        );
        let e = run(
            "cluster: web\nimage: registry.example.com/pay/../x\n",
            Some(globs),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("not a plain image"), "{e}");
        // Nor can verbatim swap the image.
        let e = run(
            "cluster: web\nimage: nginx:1.25\nverbatim: {container: {docker: {image: evil/x}}}\n",
            Some(globs),
            &["container.docker.image"],
        )
        .unwrap_err();
        assert!(
            e.contains("`verbatim.container.docker.image` is `evil/x`"),
            "{e}"
        );
    }

    const PRIVILEGED: &str = "cluster: web\nimage: x\nverbatim:\n  container:\n    docker:\n      parameters: [{key: privileged, value: \"true\"}]\n";

    #[test]
    fn privileged_parameters_need_their_exact_name() {
        for allow in [
            &[][..],
            &["container.docker.parameters"][..],
            &["container"][..],
            &["container.docker.parameters.log-driver"][..],
        ] {
            let e = run(PRIVILEGED, None, allow).unwrap_err();
            assert_eq!(
                e,
                "web.yml: `verbatim.container.docker.parameters` sets `privileged`, which tenant policy does not allow (list `container.docker.parameters.privileged` in the tenant's `verbatim` to allow it)",
                "{allow:?}"
            );
        }
        assert_eq!(
            run(
                PRIVILEGED,
                None,
                &["container.docker.parameters.privileged"]
            ),
            Ok(())
        );
        let log = "cluster: web\nimage: x\nverbatim:\n  container.docker.parameters: [{key: log-driver, value: json-file}]\n";
        assert!(run(log, None, &[]).is_err());
        assert_eq!(run(log, None, &["container.docker.parameters"]), Ok(()));
        assert_eq!(
            run(log, None, &["container.docker.parameters.log-driver"]),
            Ok(())
        );
        // Spellings Docker would not take, or that dodge the list.
        for key in ["Privileged", "--privileged", "privileged ", "\"\""] {
            let yaml = format!("cluster: web\nimage: x\nverbatim:\n  container: {{docker: {{parameters: [{{key: \"{key}\", value: x}}]}}}}\n");
            assert!(run(&yaml, None, &["container"]).is_err(), "{key}");
        }
        for param in [
            "net",
            "pid",
            "cap-add",
            "device",
            "security-opt",
            "volume",
            "mount",
            "env-file",
        ] {
            let yaml = format!("cluster: web\nimage: x\nverbatim:\n  container: {{docker: {{parameters: [{{key: {param}, value: host}}]}}}}\n");
            let e = run(&yaml, None, &["container.docker.parameters"]).unwrap_err();
            assert!(e.contains(&format!("sets `{param}`")), "{e}");
        }
    }

    #[test]
    fn host_paths_and_host_settings_need_their_exact_name() {
        let volumes = "cluster: web\nimage: x\nverbatim:\n  container:\n    volumes:\n      - {containerPath: /data, hostPath: /, mode: RW}\n";
        let e = run(volumes, None, &["container"]).unwrap_err();
        assert!(e.contains("`verbatim.container.volumes.hostPath`"), "{e}");
        assert!(e.contains("list `container.volumes.hostPath`"), "{e}");
        assert!(run(volumes, None, &["container.volumes"]).is_err());
        assert_eq!(
            run(
                volumes,
                None,
                &[
                    "container.volumes.containerPath",
                    "container.volumes.mode",
                    "container.volumes.hostPath"
                ]
            ),
            Ok(())
        );
        let docker_volume = "cluster: web\nimage: x\nverbatim:\n  container:\n    volumes:\n      - {containerPath: /data, persistent: {size: 10}}\n";
        assert_eq!(run(docker_volume, None, &["container.volumes"]), Ok(()));

        for (yaml, name) in [
            (
                "verbatim: {container: {docker: {privileged: true}}}",
                "container.docker.privileged",
            ),
            (
                "verbatim: {container: {docker: {network: HOST}}}",
                "container.docker.network",
            ),
            ("verbatim: {container: {type: MESOS}}", "container.type"),
            ("verbatim: {user: root}", "user"),
            ("verbatim: {networks: [{mode: host}]}", "networks"),
        ] {
            let yaml = format!("cluster: web\nimage: x\n{yaml}\n");
            let e = run(&yaml, None, &["container", "user", "networks"]);
            if name == "user" || name == "networks" {
                assert_eq!(e, Ok(()), "{name} listed by name");
                continue;
            }
            let e = e.unwrap_err();
            assert!(e.contains(&format!("list `{name}`")), "{e}");
            assert_eq!(run(&yaml, None, &[name]), Ok(()), "{name}");
        }
        // Replacing a whole object that holds dangerous settings.
        let e = run(
            "cluster: web\nimage: x\nverbatim: {container: null}\n",
            None,
            &["container"],
        )
        .unwrap_err();
        assert!(e.contains("replaces all of `container`"), "{e}");
        let e = run(
            "cluster: web\nimage: x\nverbatim: {container: {docker: {}}}\n",
            None,
            &["container"],
        )
        .unwrap_err();
        assert!(e.contains("replaces all of `container.docker`"), "{e}");
    }

    #[test]
    fn verbatim_follows_the_allowlist() {
        let yaml = "cluster: web\nimage: x\nverbatim:\n  cpus: 0.5\n  mem: 256\n  env: {A: b}\n  constraints: [[hostname, UNIQUE]]\n";
        let e = run(yaml, None, &[]).unwrap_err();
        assert_eq!(
            e,
            "web.yml: `verbatim.cpus` is not allowed by tenant policy (list `cpus` in the tenant's `verbatim` to allow it)"
        );
        assert!(run(yaml, None, &["cpus", "mem", "env"])
            .unwrap_err()
            .contains("`verbatim.constraints`"));
        assert_eq!(
            run(yaml, None, &["cpus", "mem", "env", "constraints"]),
            Ok(())
        );
        assert!(run(yaml, None, &["cpus", "mem", "env.B", "constraints"]).is_err());
        // A prefix of a name is not the name.
        assert!(run(yaml, None, &["cpu", "mem", "env", "constraints"]).is_err());
        // An empty verbatim sets nothing.
        ok("cluster: web\nimage: x\nverbatim: {}\n");
        refused(
            "cluster: web\nimage: x\nverbatim: {\"\": 1}\n",
            "verbatim keys",
        );
        refused(
            "cluster: web\nimage: x\nverbatim: {\"a b\": 1}\n",
            "verbatim keys",
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut deep = String::from("cluster: web\nimage: x\nsettings:\n");
        for level in 1..=40 {
            deep.push_str(&format!("{}a:\n", "  ".repeat(level)));
        }
        refused(&deep, "nests deeper");
        // Flow nesting: yaml-rust2's own limit or ours, never a stack overflow.
        let flow = format!(
            "cluster: web\nimage: x\nsettings: {{a: {}{}}}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(run(&flow, None, &[]).is_err());
    }

    #[test]
    fn pyyaml_resolution() {
        assert_eq!(pyyaml_resolve("010"), Py::Int(Some(8)));
        assert_eq!(pyyaml_resolve("0b101"), Py::Int(Some(5)));
        assert_eq!(pyyaml_resolve("-0x1F"), Py::Int(Some(-31)));
        assert_eq!(pyyaml_resolve("1:30"), Py::Int(Some(90)));
        assert_eq!(pyyaml_resolve("1.5e3"), Py::Str);
        assert_eq!(pyyaml_resolve("1.5e+3"), Py::Float(Some(1500.0)));
        assert_eq!(pyyaml_resolve("1."), Py::Float(Some(1.0)));
        assert_eq!(pyyaml_resolve("8080 80 tcp"), Py::Str);
        assert_eq!(pyyaml_resolve("1.2.3"), Py::Str);
        assert_eq!(pyyaml_resolve("0o10"), Py::Str);
    }
}
