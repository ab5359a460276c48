//! What the server tells the sandbox helper (one JSON document on its stdin),
//! and what the helper answers (one JSON line on its stderr).

use std::io::Read;
use std::os::fd::FromRawFd;
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
        // Read as a File (sized by fstat: one read, where the growing reads
        // of `io::stdin()` took nine), without setting up stdin's buffer
        // for this one use.
        // SAFETY: fd 0 is the job, open for the process's life;
        // ManuallyDrop leaves it open.
        let job = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
        let mut text = Vec::new();
        (&*job)
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

/// The longest reason a sandbox process passes up, in bytes. Each writes
/// its reason into a pipe its reader only drains after the writer is gone
/// (the init is suspended until the script's process execs or exits; the
/// helper waits for the init's exit first): a reason that did not fit the
/// pipe would hang both. This, even JSON-escaped (6 bytes a byte at most),
/// fits an empty pipe's 64 KiB; the script's own stays under PIPE_BUF.
pub const REASON_MAX: usize = 2048;

/// `text` cut to at most `max` bytes at a character boundary (a command
/// name can be as long as the kernel's argument limit).
pub fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Report {
    pub fn to_line(&self) -> String {
        let wire = match self {
            Report::Exit(c) => Wire::Exit(*c),
            Report::Signal(s) => Wire::Signal(*s),
            Report::Error(e) => Wire::Error(cut(e, REASON_MAX).to_owned()),
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
    use super::{Report, REASON_MAX};

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
        // A long reason comes back cut at a character boundary.
        let long = Report::Error("é".repeat(REASON_MAX));
        match Report::parse(&long.to_line()) {
            Report::Error(e) => assert_eq!(e, "é".repeat(REASON_MAX / 2)),
            other => panic!("{other:?}"),
        }
        assert_eq!(super::cut("aé", 2), "a");
    }
}
