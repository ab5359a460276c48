//! What a run request names: the script list (SPEC §2.1) and the X-Var
//! variables (§4.2). Pure functions, so they can be unit-tested and fuzzed.

/// Names servo sets itself; an X-Var for one of them is refused.
pub const RESERVED: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "PYTHONPATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "SERVO_SOCKET",
    "SERVO_RUN",
    "SERVO_SCRIPT",
    "SERVO_TENANT",
    "CALLBACK",
];

/// Prefixes no X-Var may start with (§4.2): variables the dynamic loader,
/// servo, Python, git and the allocator read.
pub const RESERVED_PREFIXES: &[&str] = &["LD_", "SERVO_", "PYTHON", "GIT_", "MALLOC_"];

/// More names no X-Var may take (§4.2): variables that make a shell, an
/// interpreter, the C library or a runtime load or run other code, or move
/// where files go.
pub const RESERVED_NAMES: &[&str] = &[
    "BASH_ENV",
    "ENV",
    "PERL5OPT",
    "PERL5LIB",
    "RUBYOPT",
    "NODE_OPTIONS",
    "JAVA_TOOL_OPTIONS",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "IFS",
    "TMPDIR",
];

/// Words that make a variable's value show as `***` in the log (§4.3).
pub const REDACTED_WORDS: &[&str] = &[
    "SECRET", "TOKEN", "PASSWORD", "PASSWD", "KEY", "PASS", "CRED", "AUTH", "PRIVATE",
];

/// Why an X-Var name is reserved, as the sentence of the 400; None when it is not.
pub fn reserved_rule(name: &str) -> Option<String> {
    if RESERVED.contains(&name) {
        return Some(format!(
            "{name} is reserved: servo sets it itself (SPEC §4.2)"
        ));
    }
    if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        return Some(format!(
            "{name} is reserved: names starting with {prefix} are reserved (SPEC §4.2)"
        ));
    }
    if RESERVED_NAMES.contains(&name) {
        return Some(format!(
            "{name} is reserved: it changes how programs in the sandbox load or run code (SPEC §4.2)"
        ));
    }
    None
}

pub const MAX_SCRIPTS: usize = 32;
pub const MAX_VARS: usize = 64;
pub const MAX_VAR_VALUE: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("bad script list: {0}")]
    Scripts(String),
    #[error("bad variable {0}: {1}")]
    Var(String, &'static str),
    #[error("reserved variable: {0}")]
    Reserved(String),
    #[error("too many variables (at most 64)")]
    TooManyVars,
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Checks one relative path inside the bundle: components other than `.`/`..`,
/// characters `[A-Za-z0-9._/-]`. Shared with callback names (§2.5).
pub fn check_relative_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > 4096 {
        // Cut by characters: a byte index could fall inside a multibyte one.
        let head: String = name.chars().take(32).collect();
        return Err(format!("{head}…: name too long"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
    {
        return Err(format!("{name}: character {c:?} is not allowed"));
    }
    if name.starts_with('/') {
        return Err(format!("{name}: must be relative"));
    }
    for part in name.split('/') {
        match part {
            "" => return Err(format!("{name}: empty path component")),
            "." | ".." => return Err(format!("{name}: `.` and `..` are not allowed")),
            _ => {}
        }
    }
    Ok(())
}

/// Parses the `<scripts>` part of `/run/<scripts>`: percent-decoded names
/// joined with `+`, each a relative path ending in `.py`, at most 32.
pub fn parse_scripts(raw: &str) -> Result<Vec<String>, RequestError> {
    let bad = |m: String| RequestError::Scripts(m);
    if raw.is_empty() {
        return Err(bad("no script named (use /run/deploy.py+test.py)".into()));
    }
    let mut scripts = Vec::new();
    for part in raw.split('+') {
        let decoded =
            percent_decode(part).ok_or_else(|| bad(format!("{part}: bad percent-encoding")))?;
        let name = String::from_utf8(decoded).map_err(|_| bad(format!("{part}: not UTF-8")))?;
        check_relative_name(&name).map_err(bad)?;
        if !name.ends_with(".py") || name.ends_with("/.py") || name == ".py" {
            return Err(bad(format!(
                "{name}: scripts are Python files ending in .py"
            )));
        }
        scripts.push(name);
        if scripts.len() > MAX_SCRIPTS {
            return Err(bad("more than 32 scripts".into()));
        }
    }
    Ok(scripts)
}

/// Turns an `X-Var-<name>` header suffix into the variable name: upper-cased,
/// `-` becomes `_`; letters, digits and `_` only, not starting with a digit.
pub fn var_name(suffix: &str) -> Result<String, RequestError> {
    let name: String = suffix
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    if name.is_empty() {
        return Err(RequestError::Var("X-Var-".into(), "the name is empty"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(RequestError::Var(
            name,
            "names use letters, digits, - and _ only",
        ));
    }
    if let Some(rule) = reserved_rule(&name) {
        return Err(RequestError::Reserved(rule));
    }
    Ok(name)
}

/// Builds the variables from (header suffix, raw value) pairs; sorted by name.
pub fn parse_vars<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Result<Vec<(String, String)>, RequestError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for (suffix, raw) in headers {
        let name = var_name(suffix)?;
        if raw.contains(&0) {
            return Err(RequestError::Var(name, "values may not contain NUL"));
        }
        if raw.len() > MAX_VAR_VALUE {
            return Err(RequestError::Var(name, "values are at most 4 KiB"));
        }
        let value = String::from_utf8(raw.to_vec())
            .map_err(|_| RequestError::Var(name.clone(), "values must be UTF-8"))?;
        if vars.iter().any(|(n, _)| *n == name) {
            return Err(RequestError::Var(name, "given twice"));
        }
        vars.push((name, value));
        if vars.len() > MAX_VARS {
            return Err(RequestError::TooManyVars);
        }
    }
    vars.sort();
    Ok(vars)
}

/// Whether a variable's value is shown as `***` in the log (§4.3).
pub fn is_redacted(name: &str) -> bool {
    REDACTED_WORDS.iter().any(|w| name.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_lists() {
        assert_eq!(
            parse_scripts("deploy.py+test.py").unwrap(),
            vec!["deploy.py", "test.py"]
        );
        assert_eq!(parse_scripts("ci/deploy.py").unwrap(), vec!["ci/deploy.py"]);
        assert_eq!(
            parse_scripts("ci%2Fdeploy.py").unwrap(),
            vec!["ci/deploy.py"]
        );
        for bad in [
            "",
            "../x.py",
            "a.sh",
            "/abs.py",
            "a//b.py",
            "./a.py",
            "a b.py",
            "a%20b.py",
            "%zz.py",
            "a.py+",
            ".py",
            "d/.py",
            "a\u{0}.py",
        ] {
            assert!(parse_scripts(bad).is_err(), "{bad:?}");
        }
        let many = vec!["a.py"; 33].join("+");
        assert!(parse_scripts(&many).is_err());
        assert!(parse_scripts(&vec!["a.py"; 32].join("+")).is_ok());
    }

    #[test]
    fn too_long_names_with_multibyte_characters_are_refused_not_a_panic() {
        // The error message once cut the name at byte 32, inside `é`: a panic.
        let raw = format!("{}%C3%A9{}.py", "a".repeat(31), "b".repeat(4090));
        let err = parse_scripts(&raw).unwrap_err().to_string();
        assert!(err.contains("name too long"), "{err}");
        assert!(err.contains(&format!("{}é…", "a".repeat(31))), "{err}");
    }

    #[test]
    fn variables() {
        let vars = parse_vars([("build-id", &b"42"[..]), ("Aa", &b"x"[..])].into_iter()).unwrap();
        assert_eq!(
            vars,
            vec![("AA".into(), "x".into()), ("BUILD_ID".into(), "42".into())]
        );
        for (n, v) in [
            ("path", &b"x"[..]),
            ("ld-preload", b"x"),
            ("servo-run", b"x"),
            ("a.b", b"x"),
            ("1a", b"x"),
            ("ok", b"a\0b"),
            ("ok", &[0xff][..]),
        ] {
            assert!(parse_vars([(n, v)].into_iter()).is_err(), "{n}");
        }
        let big = vec![b'a'; 4097];
        assert!(parse_vars([("x", &big[..])].into_iter()).is_err());
        assert!(is_redacted("API_TOKEN") && is_redacted("SSH_KEY") && !is_redacted("BUILD_ID"));
    }

    #[test]
    fn reserved_by_prefix_and_by_name_with_the_rule_named() {
        for (suffix, rule) in [
            ("ld-audit", "names starting with LD_ are reserved"),
            ("servo-anything", "names starting with SERVO_ are reserved"),
            ("pythonstartup", "names starting with PYTHON are reserved"),
            ("pythonhome", "names starting with PYTHON are reserved"),
            ("git-ssh-command", "names starting with GIT_ are reserved"),
            ("malloc-check-", "names starting with MALLOC_ are reserved"),
            ("bash-env", "load or run code"),
            ("env", "load or run code"),
            ("perl5opt", "load or run code"),
            ("perl5lib", "load or run code"),
            ("rubyopt", "load or run code"),
            ("node-options", "load or run code"),
            ("java-tool-options", "load or run code"),
            ("gconv-path", "load or run code"),
            ("glibc-tunables", "load or run code"),
            ("ifs", "load or run code"),
            ("tmpdir", "load or run code"),
            ("path", "servo sets it itself"),
            ("home", "servo sets it itself"),
            ("lang", "servo sets it itself"),
            ("callback", "servo sets it itself"),
        ] {
            let err = var_name(suffix).expect_err(suffix);
            assert!(matches!(err, RequestError::Reserved(_)), "{suffix}: {err}");
            let text = err.to_string();
            assert!(text.contains(rule), "{suffix}: {text}");
            assert!(text.contains("reserved"), "{suffix}: {text}");
        }
        // Near misses stay allowed.
        for ok in ["environment", "my-ld-path", "gitsha", "build-id", "tmp"] {
            assert!(var_name(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn redaction_words() {
        for name in [
            "DB_PASS",
            "AWS_CREDENTIALS",
            "BASIC_AUTH",
            "PRIVATE_PEM",
            "API_SECRET",
            "GH_TOKEN",
            "SSH_KEY",
            "PASSWD",
        ] {
            assert!(is_redacted(name), "{name}");
        }
        assert!(!is_redacted("BUILD_ID") && !is_redacted("REGION"));
    }
}
