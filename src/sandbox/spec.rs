//! What the server tells the sandbox helper (one JSON document on its stdin),
//! and what the helper answers (one JSON line on its stderr).

use std::io::Read;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::limits::Limits;

/// One seccomp program as (code, jt, jf, k) instructions, in install order.
pub type Program = Vec<(u16, u8, u8, u32)>;

#[derive(Serialize, Deserialize)]
pub struct HelperSpec {
    /// Host directory on which the job's private root tmpfs is mounted.
    pub root: PathBuf,
    /// Where the server's prepared static root (`PreparedRoot`) is mounted,
    /// used instead of building one at `root`.
    pub prepared_root: Option<PathBuf>,
    pub workdir: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
    pub limits: Limits,
    /// Whether RLIMIT_AS carries the memory limit (no memory cgroup).
    pub address_space_limit: bool,
    pub relay_dir: Option<PathBuf>,
    pub ro_binds: Vec<(PathBuf, PathBuf)>,
    /// `cgroup.procs` files the init writes itself into before anything else.
    pub cgroup_procs: Vec<PathBuf>,
    /// Rootless mode: servo's own uid/gid outside the user namespace.
    pub rootless: Option<(u32, u32)>,
    pub filters: Vec<Program>,
}

impl HelperSpec {
    /// The job, as the launcher's helper or warm init reads it on stdin.
    pub fn read_stdin() -> Result<HelperSpec, String> {
        let mut text = Vec::new();
        std::io::stdin()
            .read_to_end(&mut text)
            .map_err(|e| format!("cannot read the job: {e}"))?;
        serde_json::from_slice(&text).map_err(|e| format!("cannot parse the job: {e}"))
    }
}

/// The helper's last word about a job.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    Exit(i32),
    Signal(i32),
    Error(String),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Wire {
    Exit(i32),
    Signal(i32),
    Error(String),
}

impl Report {
    pub fn to_line(&self) -> String {
        let wire = match self {
            Report::Exit(c) => Wire::Exit(*c),
            Report::Signal(s) => Wire::Signal(*s),
            Report::Error(e) => Wire::Error(e.clone()),
        };
        let mut line = serde_json::to_string(&wire).unwrap_or_else(|_| "{}".into());
        line.push('\n');
        line
    }

    /// Reads the last line the helper wrote; anything else is an error.
    pub fn parse(text: &str) -> Report {
        let last = text.lines().rev().find(|l| !l.trim().is_empty());
        match last.map(serde_json::from_str::<Wire>) {
            Some(Ok(Wire::Exit(c))) => Report::Exit(c),
            Some(Ok(Wire::Signal(s))) => Report::Signal(s),
            Some(Ok(Wire::Error(e))) => Report::Error(e),
            Some(Err(_)) => Report::Error(format!("the sandbox helper said: {}", text.trim())),
            None => Report::Error("the sandbox helper ended without a report".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Report;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Exit(3),
            Report::Signal(9),
            Report::Error("cannot mount /proc: EPERM".into()),
        ] {
            assert_eq!(Report::parse(&r.to_line()), r);
        }
        assert!(matches!(Report::parse(""), Report::Error(_)));
        assert!(matches!(Report::parse("garbage"), Report::Error(_)));
    }
}
