//! The seccomp policy (SPEC §5.6): `policy/seccomp.json` in seccompiler's JSON
//! format, compiled once at start-up and applied last before `execve`.
//!
//! The policy holds named filters. `sandbox` is the allowlist and is installed
//! last; every other filter (the shipped policy has `clone3`, which answers
//! ENOSYS) is installed before it, while the `seccomp` syscall is still
//! allowed. The kernel runs all of them and the strictest answer wins.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::spec::Program;

/// The policy shipped with servo, embedded in the binary.
pub const DEFAULT_POLICY: &str = include_str!("../../policy/seccomp.json");

/// The filter every policy must have: the allowlist.
const MAIN_FILTER: &str = "sandbox";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the seccomp policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("seccomp policy {origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// Compiled filters, in install order, and the policy's SHA-256 (for /health).
#[derive(Clone, Debug)]
pub struct Filters {
    pub programs: Vec<Program>,
    pub sha256: String,
}

impl Filters {
    /// Compiles the given policy file, or the built-in one.
    pub fn load(path: Option<&Path>) -> Result<Filters, PolicyError> {
        match path {
            // Compiled ahead (builtin_filters.rs, checked by the unit tests):
            // compiling on every `servo sandbox` call cost 0.15 ms of its start.
            None => Ok(Filters {
                programs: super::builtin_filters::PROGRAMS
                    .iter()
                    .map(|p| p.to_vec())
                    .collect(),
                sha256: super::builtin_filters::SHA256.to_string(),
            }),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| PolicyError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                compile(&text, &p.display().to_string())
            }
        }
    }
}

/// Compiles a policy's text; errors name the place in the file when they can.
pub fn compile(text: &str, origin: &str) -> Result<Filters, PolicyError> {
    let invalid = |message: String| PolicyError::Invalid {
        origin: origin.to_string(),
        message,
    };
    // seccompiler validates the policy and words its errors; `bpf` then
    // builds the programs (seccompiler's are linear in the number of
    // syscalls, which makes attaching them slow).
    seccompiler::compile_from_json(text.as_bytes(), seccompiler::TargetArch::x86_64)
        .map_err(|e| invalid(locate(text, &e.to_string())))?;
    build(text, origin)
}

/// Builds the programs of a policy seccompiler accepts.
fn build(text: &str, origin: &str) -> Result<Filters, PolicyError> {
    let invalid = |message: String| PolicyError::Invalid {
        origin: origin.to_string(),
        message,
    };
    let mut map = super::bpf::compile(text).map_err(invalid)?;
    let main = map.remove(MAIN_FILTER).ok_or_else(|| {
        invalid(format!(
            "no filter named `{MAIN_FILTER}` (the allowlist every script runs under)"
        ))
    })?;
    // The other filters in name order, the allowlist last.
    let mut programs: Vec<Program> = map.into_values().collect();
    programs.push(main);
    Ok(Filters {
        programs,
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
    })
}

/// Adds the line of the offending syscall name to seccompiler's message
/// (serde's own messages already carry a line and column).
fn locate(text: &str, message: &str) -> String {
    const MARK: &str = "Invalid syscall name: ";
    let name = message
        .find(MARK)
        .map(|i| &message[i + MARK.len()..])
        .and_then(|rest| rest.split_whitespace().next());
    if let Some(name) = name {
        let needle = format!("\"{name}\"");
        if let Some(line) = text.lines().position(|l| l.contains(&needle)) {
            return format!("line {}: {message}", line + 1);
        }
    }
    message.to_string()
}

/// Installs the filters on the calling thread (the last step before `execve`).
pub fn apply(programs: &[Program]) -> std::io::Result<()> {
    for program in programs {
        let bpf: Vec<seccompiler::sock_filter> = program
            .iter()
            .map(|&(code, jt, jf, k)| seccompiler::sock_filter { code, jt, jf, k })
            .collect();
        seccompiler::apply_filter(&bpf).map_err(std::io::Error::other)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_compiles_with_the_allowlist_last() {
        let f = compile(DEFAULT_POLICY, "(built-in)").unwrap();
        assert_eq!(f.programs.len(), 2);
        assert!(f.programs[1].len() > f.programs[0].len());
        assert_eq!(f.sha256.len(), 64);
    }

    /// builtin_filters.rs is `build(DEFAULT_POLICY)`; after changing the
    /// policy or the compiler, `SERVO_REGENERATE=1 cargo test --lib
    /// builtin_filters` writes it again.
    #[test]
    fn builtin_filters_are_the_compiled_policy() {
        let f = build(DEFAULT_POLICY, "(built-in)").unwrap();
        let mut text = String::from(
            "//! The built-in policy (policy/seccomp.json) compiled ahead, so that\n\
             //! `servo sandbox` need not compile it on every call. Generated by\n\
             //! `SERVO_REGENERATE=1 cargo test --lib builtin_filters`; a unit test\n\
             //! in seccomp.rs checks it against the policy and the compiler.\n\n",
        );
        text += &format!("pub const SHA256: &str = \"{}\";\n\n", f.sha256);
        text += "#[rustfmt::skip]\npub const PROGRAMS: &[&[(u16, u8, u8, u32)]] = &[\n";
        for program in &f.programs {
            text += "    &[\n";
            for (code, jt, jf, k) in program {
                text += &format!("        ({code:#06x}, {jt}, {jf}, {k:#010x}),\n");
            }
            text += "    ],\n";
        }
        text += "];\n";
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/sandbox/builtin_filters.rs"
        );
        if std::env::var_os("SERVO_REGENERATE").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        let loaded = Filters::load(None).unwrap();
        assert_eq!(
            loaded.sha256, f.sha256,
            "regenerate builtin_filters.rs (see above)"
        );
        assert_eq!(
            loaded.programs, f.programs,
            "regenerate builtin_filters.rs (see above)"
        );
        assert_eq!(std::fs::read_to_string(path).unwrap(), text);
    }

    #[test]
    fn errors_say_where() {
        let bad_name = "{\"sandbox\": {\"mismatch_action\": {\"errno\": 1},\n\"filter_action\": \"allow\",\n\"filter\": [{\"syscall\": \"no_such_call\"}]}}";
        let e = compile(bad_name, "p.json").unwrap_err().to_string();
        assert!(
            e.contains("p.json") && e.contains("line 3") && e.contains("no_such_call"),
            "{e}"
        );
        let bad_json = "{\"sandbox\": {\"mismatch_action\": {\"errno\": 1},\n\"filter_action\": \"allow\",\n\"filter\": [{\"syscal\": \"read\"}]}}";
        let e = compile(bad_json, "p.json").unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        let no_main = "{\"other\": {\"mismatch_action\": {\"errno\": 1}, \"filter_action\": \"allow\", \"filter\": []}}";
        let e = compile(no_main, "p.json").unwrap_err().to_string();
        assert!(e.contains("no filter named `sandbox`"), "{e}");
    }
}
