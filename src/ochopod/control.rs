//! The pod's process as the control port moves it (SPEC §13; reference
//! §3): running, stopped by `off`, terminating and dead after `kill`, and
//! how a `/control/<task>[/<timeout>]` path reads. The listener itself
//! (`/info`, `/control`, `/log`, `/reset`) is the server's:
//! `server/pod_control.rs`, which drains the server's runs.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::zk::Registry;
use super::PodConfig;

/// How long `/control/<task>` waits for a drain when the URL names no
/// timeout: under the 5 s the toolset's HTTP requests give a pod at the
/// least, so that an unfinished drain reads as 408 (the `kill` tool asks
/// again) and never as a lost answer (which it would count as no pod).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(4);
/// The longest timeout a control request may name.
const MAX_WAIT_S: f64 = 3600.0;

/// The pod's process as the tools see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Process {
    /// Accepting runs.
    Running = 0,
    /// Drained by `off`: new runs get 503.
    Stopped = 1,
    /// `kill` asked; draining.
    Terminating = 2,
    /// Killed and drained: waiting for Marathon's SIGTERM.
    Dead = 3,
}

impl Process {
    pub fn as_str(self) -> &'static str {
        match self {
            Process::Running => "running",
            Process::Stopped => "stopped",
            Process::Terminating => "terminating",
            Process::Dead => "dead",
        }
    }
    fn from_u8(v: u8) -> Process {
        match v {
            0 => Process::Running,
            1 => Process::Stopped,
            2 => Process::Terminating,
            _ => Process::Dead,
        }
    }
}

/// The pod: its configuration, registration and process state.
pub struct Pod {
    pub config: PodConfig,
    pub registry: Arc<Registry>,
    process: AtomicU8,
}

impl Pod {
    pub fn new(config: PodConfig) -> Pod {
        let registry = Arc::new(Registry::new(
            &config.zk,
            &config.qualified,
            config.breadcrumbs.clone(),
        ));
        Pod {
            config,
            registry,
            process: AtomicU8::new(Process::Running as u8),
        }
    }

    pub fn process(&self) -> Process {
        Process::from_u8(self.process.load(Ordering::SeqCst))
    }

    pub fn set_process(&self, p: Process) {
        self.process.store(p as u8, Ordering::SeqCst);
    }
}

/// `<task>[/<timeout>]` of a `/control/...` path.
pub fn parse_control(rest: &str) -> Result<(&str, Duration), String> {
    let rest = rest.trim_end_matches('/');
    let (task, timeout) = match rest.split_once('/') {
        Some((t, s)) => (t, Some(s)),
        None => (rest, None),
    };
    let wait = match timeout {
        None => DEFAULT_WAIT,
        Some(s) => {
            let secs: f64 = s
                .parse()
                .map_err(|_| format!("bad timeout `{s}`: expected seconds"))?;
            if !secs.is_finite() || secs < 0.0 {
                return Err(format!("bad timeout `{s}`: expected seconds"));
            }
            Duration::from_secs_f64(secs.min(MAX_WAIT_S))
        }
    };
    Ok((task, wait))
}

/// The `status` line of `/info`.
pub fn status_line(in_flight: usize, process: Process) -> String {
    let runs = match in_flight {
        1 => "1 run in flight".to_string(),
        n => format!("{n} runs in flight"),
    };
    match process {
        Process::Running => runs,
        Process::Stopped => format!("{runs}, drained (off)"),
        Process::Terminating => format!("{runs}, draining (kill)"),
        Process::Dead => format!("{runs}, dead (kill)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_paths() {
        assert_eq!(parse_control("kill").unwrap(), ("kill", DEFAULT_WAIT));
        assert_eq!(
            parse_control("off/10").unwrap(),
            ("off", Duration::from_secs(10))
        );
        assert_eq!(
            parse_control("off/2.5").unwrap(),
            ("off", Duration::from_millis(2500))
        );
        assert_eq!(parse_control("on/").unwrap(), ("on", DEFAULT_WAIT));
        assert!(parse_control("off/x").is_err());
        assert!(parse_control("off/-1").is_err());
        assert_eq!(
            parse_control("off/99999").unwrap().1,
            Duration::from_secs_f64(MAX_WAIT_S)
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_line(3, Process::Running), "3 runs in flight");
        assert_eq!(status_line(1, Process::Running), "1 run in flight");
        assert_eq!(
            status_line(0, Process::Stopped),
            "0 runs in flight, drained (off)"
        );
    }
}
