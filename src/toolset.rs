//! The toolset's command grammar (SPEC §6.3; reference/ochothon-portal.md).
//!
//! The real portal runs a relayed line as `/bin/sh -c "toolset <line>"`,
//! picks the tool by *any* token equal to a tag, and parses that tool's
//! arguments with Python's `argparse`. A policy is only a boundary if it is
//! decided on what those three will read, so this module accepts only lines
//! where they cannot disagree with it: no shell syntax, no `--`, options
//! spelled exactly (no abbreviation, clustering or attached values), values
//! of the declared type, positionals that do not start with `-`, and no
//! token after the first equal to a tag. What it accepts becomes a
//! [`Command`], and [`Command::canonical`] is the only line servo sends.
//!
//! Pure: no I/O, no allocation beyond the result; fuzzed (`fuzz/`).

use std::fmt;

/// What a value must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A cluster glob matched against `<namespace>.<cluster>` (fnmatch).
    Glob,
    /// A non-negative decimal integer (argparse `type=int`, no sign).
    Int,
    /// A file the script uploads: a plain base name.
    File,
    /// A namespace or a cluster suffix: letters, digits, `_`, `-`.
    Name,
    /// A docker tag or version: letters, digits, `.`, `_`, `-`.
    Tag,
    /// A `scale` factor: `@N` (that many pods) or `xN` (times as many).
    Factor,
    /// One word of an `exec` command line run on the pods.
    Word,
}

/// How many values an option takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    Flag,
    One(Kind),
    /// `nargs='+'`: every following token that is not an option.
    Many(Kind),
}

/// One option of a tool: its spellings (the first is the canonical one).
#[derive(Debug, PartialEq, Eq)]
pub struct OptSpec {
    pub names: &'static [&'static str],
    pub arity: Arity,
}

/// One positional argument of a tool.
#[derive(Debug, PartialEq, Eq)]
pub struct PosSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub min: usize,
    /// None: unbounded (`nargs='+'`).
    pub max: Option<usize>,
}

/// One tool of the toolset.
#[derive(Debug, PartialEq, Eq)]
pub struct VerbSpec {
    pub verb: &'static str,
    pub positionals: &'static [PosSpec],
    pub options: &'static [OptSpec],
}

const fn opt(names: &'static [&'static str], arity: Arity) -> OptSpec {
    OptSpec { names, arity }
}

const fn pos(name: &'static str, kind: Kind, min: usize, max: Option<usize>) -> PosSpec {
    PosSpec {
        name,
        kind,
        min,
        max,
    }
}

const J: OptSpec = opt(&["-j"], Arity::Flag);
const J_JSON: OptSpec = opt(&["-j", "--json"], Arity::Flag);
const T: OptSpec = opt(&["-t"], Arity::One(Kind::Int));
const FORCE: OptSpec = opt(&["--force"], Arity::Flag);
const INDICES: OptSpec = opt(&["-i", "--indices"], Arity::Many(Kind::Int));
const CLUSTER_OPT: PosSpec = pos("cluster glob", Kind::Glob, 0, Some(1));
const CLUSTERS: PosSpec = pos("cluster glob", Kind::Glob, 1, None);

/// Every tool also takes `-d/--debug` (the toolset's `Template` adds it).
const DEBUG: OptSpec = opt(&["-d", "--debug"], Arity::Flag);

/// The toolset's tools and their arguments, from the portal's `argparse`
/// tables (reference/ochothon-portal.md §3). Not here: `nodes` and `ping`,
/// tools of the 2015 toolsets only (removed in Oct./Nov. 2015): `ping`'s
/// first argument was a YAML file it loaded unsafely, and its clusters
/// defaulted to every cluster, so no shape of ours could be read the same
/// way by every portal (found by tests/grammar_differential.rs).
pub const TABLE: &[VerbSpec] = &[
    VerbSpec {
        verb: "ls",
        positionals: &[],
        options: &[J],
    },
    VerbSpec {
        verb: "grep",
        positionals: &[CLUSTER_OPT],
        options: &[J_JSON],
    },
    VerbSpec {
        verb: "poll",
        positionals: &[CLUSTER_OPT],
        options: &[J_JSON],
    },
    VerbSpec {
        verb: "port",
        positionals: &[pos("port", Kind::Int, 1, Some(1)), CLUSTER_OPT],
        options: &[J_JSON],
    },
    VerbSpec {
        verb: "log",
        positionals: &[CLUSTER_OPT],
        options: &[opt(&["-l"], Arity::Flag), INDICES],
    },
    VerbSpec {
        verb: "kill",
        positionals: &[CLUSTERS],
        options: &[opt(&["-i"], Arity::Many(Kind::Int)), J, T, FORCE],
    },
    VerbSpec {
        verb: "off",
        positionals: &[CLUSTERS],
        options: &[INDICES, J, T, FORCE],
    },
    VerbSpec {
        verb: "on",
        positionals: &[CLUSTERS],
        options: &[INDICES, J, T, FORCE],
    },
    VerbSpec {
        verb: "reset",
        positionals: &[CLUSTERS],
        options: &[INDICES, J, T, FORCE],
    },
    VerbSpec {
        verb: "scale",
        positionals: &[CLUSTERS],
        options: &[
            opt(&["-f"], Arity::One(Kind::Factor)),
            opt(&["-g"], Arity::One(Kind::Int)),
            J,
            T,
            opt(&["--fifo"], Arity::Flag),
        ],
    },
    VerbSpec {
        verb: "bump",
        positionals: &[CLUSTERS],
        options: &[
            J,
            T,
            opt(&["-v"], Arity::One(Kind::Tag)),
            opt(&["--strict"], Arity::Flag),
        ],
    },
    VerbSpec {
        verb: "deploy",
        positionals: &[pos("container file", Kind::File, 1, None)],
        options: &[
            J,
            opt(&["-n"], Arity::One(Kind::Name)),
            opt(&["-o"], Arity::Many(Kind::File)),
            opt(&["-p"], Arity::One(Kind::Int)),
            opt(&["-r"], Arity::One(Kind::Tag)),
            opt(&["-s"], Arity::One(Kind::Name)),
            T,
            opt(&["--strict"], Arity::Flag),
        ],
    },
    VerbSpec {
        verb: "exec",
        positionals: &[
            pos("cluster glob", Kind::Glob, 1, Some(1)),
            pos("command word", Kind::Word, 1, None),
        ],
        options: &[INDICES, J_JSON, T, FORCE],
    },
    // The dispatcher answers `help` itself and ignores what follows; `-j`
    // is taken because the Python package appends it to every command.
    VerbSpec {
        verb: "help",
        positionals: &[],
        options: &[J],
    },
];

/// Every token the dispatcher of any toolset version takes as a tool's tag
/// (reference §2), plus `help`. None may appear after the first token: the
/// dispatcher would pick the tool by it.
pub const TAGS: &[&str] = &[
    "bump", "deploy", "exec", "grep", "kill", "log", "ls", "off", "on", "poll", "port", "reset",
    "scale", "nodes", "ping", "put", "shell", "status", "help",
];

/// The verbs servo relays.
pub fn verbs() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|v| v.verb)
}

/// The longest line and token servo relays: commands are short.
pub const MAX_LINE: usize = 4096;
const MAX_TOKEN: usize = 255;

/// A command line the grammar accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub spec: &'static VerbSpec,
    /// One list per entry of `spec.positionals`, in table order.
    pub positionals: Vec<Vec<String>>,
    /// One entry per entry of `spec.options` (None: absent; Some(empty): a flag).
    pub options: Vec<Option<Vec<String>>>,
    /// `-d/--debug`.
    pub debug: bool,
}

/// Why a line is not a command servo relays: one sentence for the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrammarError(pub String);

impl fmt::Display for GrammarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GrammarError {}

fn err<T>(msg: impl Into<String>) -> Result<T, GrammarError> {
    Err(GrammarError(msg.into()))
}

/// Characters the shell gives a meaning to (reference §1.3). `~` only at a
/// token's start and the glob characters are handled apart.
const SHELL_SYNTAX: &[char] = &[
    ';', '|', '&', '$', '`', '<', '>', '(', ')', '{', '}', '\'', '"', '\\', '#', '\n', '\r',
];
/// Glob characters: the shell expands them against the portal's working
/// directory (the uploaded files) unless quoted.
const GLOB: &[char] = &['*', '?', '[', ']'];

fn describe(c: char) -> String {
    match c {
        '\n' => "a newline".into(),
        '\r' => "a carriage return".into(),
        '\t' => "a tab".into(),
        c if c.is_control() => format!("the control character U+{:04X}", c as u32),
        c => format!("`{c}`"),
    }
}

/// Checks the characters of the whole line before anything is split.
fn check_characters(line: &str) -> Result<(), GrammarError> {
    if line.len() > MAX_LINE {
        return err(format!(
            "the command line is {} bytes long; at most {MAX_LINE} are relayed",
            line.len()
        ));
    }
    for c in line.chars() {
        if SHELL_SYNTAX.contains(&c) {
            return err(format!(
                "{} is shell syntax, which the portal's /bin/sh would interpret: send one toolset command, without quotes, escapes, substitutions, redirections or separators",
                describe(c)
            ));
        }
        let allowed = c.is_ascii_alphanumeric()
            || c == ' '
            || GLOB.contains(&c)
            || matches!(
                c,
                '.' | '_' | '-' | '!' | ':' | '/' | '+' | '=' | ',' | '@' | '%'
            );
        if !allowed {
            return err(format!(
                "{} is not allowed in a command line (letters, digits, spaces and . _ - ! : / + = , @ % * ? [ ] only)",
                describe(c)
            ));
        }
    }
    Ok(())
}

fn check_value(kind: Kind, what: &str, v: &str) -> Result<(), GrammarError> {
    let plain = |extra: &[char]| {
        v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-') || extra.contains(&c))
    };
    let ok = match kind {
        Kind::Glob => plain(&['.', '*', '?', '[', ']', '!']),
        Kind::Int => !v.is_empty() && v.len() <= 9 && v.bytes().all(|b| b.is_ascii_digit()),
        Kind::File => plain(&['.']) && !v.starts_with('.'),
        Kind::Name => plain(&[]),
        Kind::Tag => plain(&['.']),
        Kind::Factor => {
            let digits = v.strip_prefix(['@', 'x']).unwrap_or("");
            let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
            !int.is_empty()
                && int.len() <= 6
                && int.bytes().all(|b| b.is_ascii_digit())
                && !frac.is_empty()
                && frac.len() <= 6
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        // Not a path: the toolset's exec reads every word naming a file on
        // the portal and sends it to the pods (so `/etc/...` would leak the
        // portal's files); a plain word can only name an uploaded file.
        Kind::Word => plain(&['.', ':', '=', ',', '@', '%', '+']) && !v.starts_with('.'),
    };
    if ok {
        return Ok(());
    }
    let expected = match kind {
        Kind::Glob => "a cluster glob (letters, digits, . _ - and * ? [ ] !)",
        Kind::Int => "a whole number (digits only)",
        Kind::File => {
            "a plain file name in the script's directory (letters, digits, . _ -; not starting with .)"
        }
        Kind::Name => "a plain name (letters, digits, _ -)",
        Kind::Tag => "a plain tag (letters, digits, . _ -)",
        Kind::Factor => "`@N` (that many pods) or `xN` (N times as many), e.g. @3 or x1.5",
        Kind::Word => {
            "a plain word (letters, digits and . _ - : = , @ % +; not a path, not starting with .)"
        }
    };
    err(format!("`{v}` is not valid as {what}: expected {expected}"))
}

/// Tokens of a line as the script wrote it: split on spaces and tabs.
fn tokens(line: &str) -> impl Iterator<Item = &str> {
    line.split([' ', '\t']).filter(|t| !t.is_empty())
}

/// Parses a command line as a script sends it (SPEC §6.3).
pub fn parse(line: &str) -> Result<Command, GrammarError> {
    if line.contains('\t') {
        // Tabs split words for the shell as spaces do: refused to keep one spelling.
        return err("a tab is not allowed in a command line: separate words with spaces");
    }
    check_characters(line)?;
    let toks: Vec<&str> = tokens(line).collect();
    parse_tokens(&toks)
}

/// Parses a line in the canonical form servo sends (words separated by one
/// space, glob-bearing words single-quoted): what the simulator reads, so a
/// dry run refuses exactly what the relay refuses.
pub fn parse_canonical(line: &str) -> Result<Command, GrammarError> {
    let mut words = Vec::new();
    for word in line.split(' ') {
        let word = match word.strip_prefix('\'').and_then(|w| w.strip_suffix('\'')) {
            Some(inner) if inner.contains(GLOB) => inner,
            _ => word,
        };
        words.push(word);
    }
    let plain = words.join(" ");
    let cmd = parse(&plain)?;
    if cmd.canonical() != line {
        return err(format!("`{line}` is not in canonical form"));
    }
    Ok(cmd)
}

fn parse_tokens(toks: &[&str]) -> Result<Command, GrammarError> {
    let Some((&verb, rest)) = toks.split_first() else {
        return err("empty command");
    };
    let Some(spec) = TABLE.iter().find(|v| v.verb == verb) else {
        return err(format!(
            "`{verb}` is not a toolset command (commands: {})",
            verbs().collect::<Vec<_>>().join(" ")
        ));
    };
    let mut positionals: Vec<&str> = Vec::new();
    let mut options: Vec<Option<Vec<String>>> = vec![None; spec.options.len()];
    let mut debug = false;
    let mut i = 0;
    while i < rest.len() {
        let t = rest[i];
        i += 1;
        if t.len() > MAX_TOKEN {
            return err(format!(
                "a word of {} bytes is too long (at most {MAX_TOKEN})",
                t.len()
            ));
        }
        check_token(verb, t)?;
        if t.starts_with('+') {
            return err(format!(
                "`{t}`: a word starting with `+` is an option of the portal's dispatcher"
            ));
        }
        if !t.starts_with('-') {
            positionals.push(t);
            continue;
        }
        if t == "-" || t == "--" {
            return err(format!(
                "`{t}` is not allowed: options and arguments are told apart by their spelling only"
            ));
        }
        let (name, attached) = match t.split_once('=') {
            Some((n, _)) => (n, true),
            None => (t, false),
        };
        if DEBUG.names.contains(&name) && !attached {
            if debug {
                return err(format!("`{t}` is given twice"));
            }
            debug = true;
            continue;
        }
        let found = spec.options.iter().position(|o| o.names.contains(&name));
        let Some(k) = found else {
            return err(unknown_option(spec, t));
        };
        let o = &spec.options[k];
        if attached {
            return err(format!(
                "`{t}`: give the value as a separate word (`{name} value`)"
            ));
        }
        if options[k].is_some() {
            return err(format!("`{}` is given twice", o.names[0]));
        }
        let values = match o.arity {
            Arity::Flag => Vec::new(),
            Arity::One(kind) => {
                let Some(&v) = rest.get(i).filter(|v| !v.starts_with(['-', '+'])) else {
                    return err(format!("`{t}` needs a value"));
                };
                i += 1;
                check_token(verb, v)?;
                check_value(kind, &format!("the value of `{t}`"), v)?;
                vec![v.to_string()]
            }
            Arity::Many(kind) => {
                let mut vs = Vec::new();
                while let Some(&v) = rest.get(i).filter(|v| !v.starts_with(['-', '+'])) {
                    i += 1;
                    check_token(verb, v)?;
                    check_value(kind, &format!("a value of `{t}`"), v)?;
                    vs.push(v.to_string());
                }
                if vs.is_empty() {
                    return err(format!("`{t}` needs at least one value"));
                }
                vs
            }
        };
        options[k] = Some(values);
    }
    let positionals = assign_positionals(spec, &positionals)?;
    Ok(Command {
        spec,
        positionals,
        options,
        debug,
    })
}

/// The checks every word gets, value or positional.
fn check_token(verb: &str, t: &str) -> Result<(), GrammarError> {
    if TAGS.contains(&t) {
        return err(format!(
            "`{t}` is a toolset command name: the portal would run `{t}` instead of `{verb}`; only the first word may be a command"
        ));
    }
    if t.starts_with('~') {
        return err(format!(
            "`{t}`: a word starting with `~` is a home directory for the shell"
        ));
    }
    Ok(())
}

fn unknown_option(spec: &VerbSpec, t: &str) -> String {
    let all: Vec<&str> = spec
        .options
        .iter()
        .flat_map(|o| o.names.iter().copied())
        .chain(DEBUG.names.iter().copied())
        .collect();
    let listed = if all.is_empty() {
        format!("`{}` takes no options", spec.verb)
    } else {
        format!("`{}` takes {}", spec.verb, all.join(" "))
    };
    if let Some(long) = all.iter().find(|n| n.starts_with("--") && n.starts_with(t)) {
        return format!("`{t}` is an abbreviation: write `{long}` in full ({listed})");
    }
    if !t.starts_with("--") && t.len() > 2 {
        return format!(
            "`{t}`: give each short option as a word of its own, and its value as the next word ({listed})"
        );
    }
    format!("unknown option `{t}` ({listed})")
}

/// Hands the positionals to the tool's positional arguments left to right,
/// each taking as many as it can while leaving the later ones their minimum
/// (what argparse does with contiguous positionals).
fn assign_positionals(spec: &VerbSpec, given: &[&str]) -> Result<Vec<Vec<String>>, GrammarError> {
    let needed: usize = spec.positionals.iter().map(|p| p.min).sum();
    if given.len() < needed {
        return err(format!(
            "`{}` needs {}",
            spec.verb,
            describe_positionals(spec)
        ));
    }
    let mut out = Vec::with_capacity(spec.positionals.len());
    let mut at = 0;
    for (k, p) in spec.positionals.iter().enumerate() {
        let later_min: usize = spec.positionals[k + 1..].iter().map(|p| p.min).sum();
        let available = given.len().saturating_sub(at).saturating_sub(later_min);
        let take = p.max.map_or(available, |m| available.min(m));
        let mut values = Vec::with_capacity(take);
        for v in &given[at..at + take] {
            check_token(spec.verb, v)?;
            check_value(p.kind, &format!("a {}", p.name), v)?;
            values.push(v.to_string());
        }
        at += take;
        out.push(values);
    }
    if at < given.len() {
        let extra = given[at..].join(" ");
        return err(if spec.positionals.is_empty() {
            format!("`{}` takes no arguments, got `{extra}`", spec.verb)
        } else {
            format!(
                "`{}` takes {}; `{extra}` is one too many",
                spec.verb,
                describe_positionals(spec)
            )
        });
    }
    Ok(out)
}

fn describe_positionals(spec: &VerbSpec) -> String {
    spec.positionals
        .iter()
        .map(|p| match (p.min, p.max) {
            (0, Some(1)) => format!("at most one {}", p.name),
            (1, Some(1)) => format!("one {}", p.name),
            _ => format!("one or more {}s", p.name),
        })
        .collect::<Vec<_>>()
        .join(", then ")
}

/// A word as the canonical line spells it: single-quoted when it holds a
/// glob character, so the shell passes it to `toolset` untouched.
fn quote(word: &str) -> String {
    if word.contains(GLOB) {
        format!("'{word}'")
    } else {
        word.to_string()
    }
}

impl Command {
    pub fn verb(&self) -> &'static str {
        self.spec.verb
    }

    /// Whether the option spelled `name` (any of its spellings) was given.
    pub fn has(&self, name: &str) -> bool {
        self.option(name).is_some()
    }

    /// The values of the option spelled `name` (empty for a flag).
    pub fn option(&self, name: &str) -> Option<&[String]> {
        let k = self
            .spec
            .options
            .iter()
            .position(|o| o.names.contains(&name))?;
        self.options[k].as_deref()
    }

    /// Sets (or replaces) an option of this verb; false when it has no such option.
    pub fn set_option(&mut self, name: &str, values: Vec<String>) -> bool {
        match self
            .spec
            .options
            .iter()
            .position(|o| o.names.contains(&name))
        {
            Some(k) => {
                self.options[k] = Some(values);
                true
            }
            None => false,
        }
    }

    /// The cluster globs: the values of the `Glob` positionals.
    pub fn clusters(&self) -> Vec<&str> {
        self.values_of(Kind::Glob)
    }

    /// The verb's optional cluster glob (`grep`, `poll`, `port`, `log`,
    /// `ping`), as a mutable slot; None when the verb has none.
    pub fn optional_cluster_mut(&mut self) -> Option<&mut Vec<String>> {
        let k = self
            .spec
            .positionals
            .iter()
            .position(|p| p.kind == Kind::Glob && p.min == 0)?;
        Some(&mut self.positionals[k])
    }

    /// The files the command names: deploy containers and `-o` overrides.
    pub fn files(&self) -> Vec<&str> {
        let mut files: Vec<&str> = self
            .spec
            .positionals
            .iter()
            .zip(&self.positionals)
            .filter(|(p, _)| p.kind == Kind::File)
            .flat_map(|(_, v)| v.iter().map(String::as_str))
            .collect();
        files.extend(self.overrides());
        files
    }

    /// The `-o` override files of a deploy.
    pub fn overrides(&self) -> Vec<&str> {
        self.option("-o")
            .unwrap_or_default()
            .iter()
            .map(String::as_str)
            .collect()
    }

    /// The words of an `exec` command line (the words a pod runs).
    pub fn words(&self) -> Vec<&str> {
        self.values_of(Kind::Word)
    }

    /// The values given to the positionals of `kind`, in order.
    fn values_of(&self, kind: Kind) -> Vec<&str> {
        self.spec
            .positionals
            .iter()
            .zip(&self.positionals)
            .filter(|(p, _)| p.kind == kind)
            .flat_map(|(_, v)| v.iter().map(String::as_str))
            .collect()
    }

    /// The argv `toolset` receives after the verb, in canonical order:
    /// positionals in table order, then options in table order (flags and
    /// values; `-j` last), then `-d`.
    pub fn argv(&self) -> Vec<&str> {
        let mut argv: Vec<&str> = Vec::new();
        for values in &self.positionals {
            argv.extend(values.iter().map(String::as_str));
        }
        let mut json = false;
        for (o, v) in self.spec.options.iter().zip(&self.options) {
            let Some(values) = v else { continue };
            if o.names[0] == "-j" {
                json = true;
                continue;
            }
            argv.push(o.names[0]);
            argv.extend(values.iter().map(String::as_str));
        }
        if self.debug {
            argv.push("-d");
        }
        if json {
            argv.push("-j");
        }
        argv
    }

    /// The line servo sends: the verb, then [`Command::argv`], glob-bearing
    /// words single-quoted. Options follow every positional, so an option
    /// taking several values (`-i`, `-o`) never swallows one.
    pub fn canonical(&self) -> String {
        let mut line = self.spec.verb.to_string();
        for word in self.argv() {
            line.push(' ');
            line.push_str(&quote(word));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> String {
        match parse(line) {
            Ok(c) => c.canonical(),
            Err(e) => panic!("{line}: {e}"),
        }
    }

    fn no(line: &str) -> String {
        match parse(line) {
            Err(e) => e.0,
            Ok(c) => panic!("{line}: accepted as {}", c.canonical()),
        }
    }

    #[test]
    fn the_guides_commands_are_canonical() {
        assert_eq!(ok("ls"), "ls");
        assert_eq!(ok("ls -j"), "ls -j");
        assert_eq!(ok("port 80 *.web -j"), "port 80 '*.web' -j");
        assert_eq!(ok("port 80 -j"), "port 80 -j");
        assert_eq!(ok("grep -j pay.*"), "grep 'pay.*' -j");
        assert_eq!(ok("grep --json pay.web"), "grep pay.web -j");
        assert_eq!(ok("deploy web.yml -n app -j"), "deploy web.yml -n app -j");
        assert_eq!(
            ok("deploy -j -o o1.yml o2.yml -p 2 web.yml"),
            "deploy web.yml -o o1.yml o2.yml -p 2 -j"
        );
        assert_eq!(
            ok("kill -i 1 2 -j --force pay.web"),
            "kill pay.web -i 1 2 --force -j"
        );
        assert_eq!(
            ok("scale pay.web -f x1.5 -t 30"),
            "scale pay.web -f x1.5 -t 30"
        );
        assert_eq!(ok("scale pay.web -f @3"), "scale pay.web -f @3");
        assert_eq!(
            ok("exec pay.servo --force run deploy.py"),
            "exec pay.servo run deploy.py --force"
        );
        assert_eq!(ok("help"), "help");
        assert_eq!(ok("help -j"), "help -j");
        assert_eq!(ok("log pay.db -l -d"), "log pay.db -l -d");
        assert_eq!(ok("  ls   -j "), "ls -j");
    }

    #[test]
    fn a_greedy_option_cannot_swallow_a_positional_in_the_canonical_line() {
        // As the script wrote it, argparse would read pay.web as an index.
        assert!(no("kill -i 1 pay.web").contains("whole number"));
        // The canonical line puts positionals first.
        assert_eq!(
            ok("deploy web.yml -o o.yml -j"),
            "deploy web.yml -o o.yml -j"
        );
        assert!(no("deploy -o o.yml web.yml").contains("needs one or more container files"));
    }

    #[test]
    fn the_issues_attack_lines_are_refused() {
        for line in [
            "help x;touch /tmp/pwned",
            "kill --force -- payments.web -t *",
            "grep payments.`id`",
            "kill payments.a|sh",
            "grep payments.*&&ls",
            "grep payments.* kill",
            "ls $(id)",
            "ls > /tmp/x",
            "grep pay.web #comment",
            "grep pay.web\nkill *",
            "grep 'pay.web'",
            "grep pay\\.web",
            "grep ~/x",
            "grep ${IFS}",
        ] {
            no(line);
        }
        assert!(no("help x;touch /tmp/pwned").contains("shell syntax"));
        assert!(no("grep payments.* kill").contains("instead of `grep`"));
        assert!(no("kill --force -- payments.web").contains("`--` is not allowed"));
    }

    #[test]
    fn argparse_spellings_that_change_meaning_are_refused() {
        assert!(no("kill pay.web --forc").contains("abbreviation"));
        assert!(no("grep pay.web --js").contains("abbreviation"));
        assert!(no("kill pay.web -jt5").contains("word of its own"));
        assert!(no("deploy web.yml -napp").contains("word of its own"));
        assert!(no("kill pay.web --timeout=5").contains("unknown option"));
        assert!(no("deploy web.yml -n=app").contains("separate word"));
        assert!(no("kill pay.web -x").contains("unknown option"));
        assert!(no("kill pay.web -t").contains("needs a value"));
        assert!(no("kill pay.web -t -5").contains("needs a value"));
        assert!(no("kill pay.web -t five").contains("whole number"));
        assert!(no("kill -1").contains("unknown option"));
        assert!(no("kill pay.web -j -j").contains("twice"));
        assert!(no("kill pay.web -d --debug").contains("twice"));
        assert!(no("ls pay.*").contains("takes no arguments"));
        assert!(no("grep a.b c.d").contains("one too many"));
        assert!(no("port web").contains("whole number"));
        assert!(no("kill").contains("needs one or more cluster globs"));
        assert!(no("exec pay.x").contains("then one or more command words"));
        assert!(no("scale pay.web -f +1").contains("needs a value"));
        assert!(no("scale pay.web -f 3").contains("`@N`"));
        assert!(no("scale pay.web ++help").contains("dispatcher"));
        assert!(no("deploy ../web.yml").contains("plain file name"));
        assert!(no("deploy .web.yml").contains("plain file name"));
        assert!(no("deploy web.yml -n pay.x").contains("plain name"));
        assert!(no("exec pay.x cat /etc/passwd --force").contains("not a path"));
        assert!(no("exec pay.x run * --force").contains("not valid"));
        assert!(no("frobnicate").contains("not a toolset command"));
        assert!(no("help me").contains("takes no arguments"));
        assert!(no("").contains("empty"));
        assert!(no("ls\t-j").contains("tab"));
        assert!(no("ls -j é").contains("not allowed"));
    }

    #[test]
    fn canonical_lines_parse_back_to_the_same_command() {
        for line in [
            "port 80 *.web -j",
            "grep pay.[a-z]* -j",
            "kill pay.w?b -i 3 --force -t 5 -j",
            "deploy web.yml -n pay -o a.yml b.yml -s blue -r 1.2 --strict -p 2",
            "exec pay.* run x.py --force -i 1",
        ] {
            let cmd = parse(line).unwrap();
            let canon = cmd.canonical();
            assert_eq!(parse_canonical(&canon).unwrap(), cmd, "{canon}");
        }
        // Quotes only where a glob needs them, and nothing else.
        assert!(parse_canonical("grep 'pay.web'").is_err());
        assert!(parse_canonical("grep -j pay.*").is_err());
        assert!(parse_canonical("grep 'pay.*' -j").is_ok());
    }

    #[test]
    fn every_verb_is_a_tag() {
        assert!(verbs().all(|v| TAGS.contains(&v)));
    }

    #[test]
    fn accessors() {
        let mut c = parse("deploy web.yml db.yml -o o.yml -j").unwrap();
        assert_eq!(c.files(), ["web.yml", "db.yml", "o.yml"]);
        assert_eq!(c.overrides(), ["o.yml"]);
        assert!(c.has("-j") && !c.has("-n"));
        assert!(c.set_option("-n", vec!["pay".into()]));
        assert_eq!(c.canonical(), "deploy web.yml db.yml -n pay -o o.yml -j");
        let mut g = parse("port 80 -j").unwrap();
        g.optional_cluster_mut().unwrap().push("pay.*".into());
        assert_eq!(g.canonical(), "port 80 'pay.*' -j");
        assert_eq!(g.clusters(), ["pay.*"]);
        assert!(parse("ls").unwrap().optional_cluster_mut().is_none());
        let e = parse("exec pay.a run x --force").unwrap();
        assert_eq!(e.words(), ["run", "x"]);
        assert_eq!(e.clusters(), ["pay.a"]);
    }
}
