//! Keeping client connections within bounds: the --max-connections cap
//! (with a log of refusals that a flood cannot flood) and an open-files
//! limit that leaves room for it.

use std::time::{Duration, Instant};

/// Connections closed for being over --max-connections, logged at most
/// every 10 s (a flood must not flood the log too).
#[derive(Default)]
pub struct RefusalLog {
    last: Option<Instant>,
    since: u64,
}

impl RefusalLog {
    pub fn note(&mut self, remote: std::net::SocketAddr, max: usize) {
        self.since += 1;
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        tracing::warn!(
            "{} connection(s) closed at once (latest from {remote}): {max} are open, the --max-connections limit",
            self.since
        );
        self.last = Some(Instant::now());
        self.since = 0;
    }
}

/// Raises the soft limit on open files to the hard one: every connection,
/// run and relayed command holds descriptors, and the usual soft default
/// (1,024) would be reached before --max-connections.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
