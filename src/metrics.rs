//! `GET /metrics` (SPEC §2.4), Prometheus text format. Plain atomics: the
//! hot path adds to counters and never takes a lock, except the labelled
//! families, whose small maps are touched once per run or command.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the duration histograms, in seconds.
const SETUP_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
const WAIT_BUCKETS: &[f64] = &[
    0.01, 0.1, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];
const SCRIPT_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in microseconds, to stay in integers.
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {total}");
    }
}

pub struct Metrics {
    pub runs_started: AtomicU64,
    pub runs_succeeded: AtomicU64,
    pub runs_failed: AtomicU64,
    pub scripts_run: AtomicU64,
    pub upload_bytes: AtomicU64,
    pub sandbox_setup: Histogram,
    pub script_duration: Histogram,
    /// Runs waiting for their concurrency group now (§11).
    pub group_waiting: AtomicU64,
    /// How long runs waited for their concurrency group (§11).
    pub group_wait: Histogram,
    /// Time a verified request spent on its tenant place and replay check
    /// (through ZooKeeper with --coordination; §11).
    pub coordination: Histogram,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    portal_commands: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            runs_started: AtomicU64::new(0),
            runs_succeeded: AtomicU64::new(0),
            runs_failed: AtomicU64::new(0),
            scripts_run: AtomicU64::new(0),
            upload_bytes: AtomicU64::new(0),
            sandbox_setup: Histogram::new(SETUP_BUCKETS),
            script_duration: Histogram::new(SCRIPT_BUCKETS),
            group_waiting: AtomicU64::new(0),
            group_wait: Histogram::new(WAIT_BUCKETS),
            coordination: Histogram::new(SETUP_BUCKETS),
            rejected: Mutex::new(BTreeMap::new()),
            portal_commands: Mutex::new(BTreeMap::new()),
        }
    }
}

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// A request refused before its run started; `reason` is a short label.
    pub fn rejected(&self, reason: &'static str) {
        *self
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// A command relayed to the portal (or denied), by verb; `/http`
    /// requests (§6.6) count as the verb `http`.
    pub fn portal_command(&self, verb: &str, allowed: bool) {
        // Only known verbs get their own series, so a script cannot grow the map.
        let verb = if verb == "http" || crate::toolset::verbs().any(|v| v == verb) {
            verb
        } else {
            "other"
        };
        let verdict = if allowed { "allowed" } else { "denied" };
        *self
            .portal_commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((verb.to_string(), verdict))
            .or_default() += 1;
    }

    pub fn render(&self, in_flight: usize, queue: usize) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            &mut out,
            "servo_runs_started_total",
            "Runs started.",
            load(&self.runs_started),
        );
        counter(
            &mut out,
            "servo_runs_succeeded_total",
            "Runs that succeeded.",
            load(&self.runs_succeeded),
        );
        counter(
            &mut out,
            "servo_runs_failed_total",
            "Runs that failed.",
            load(&self.runs_failed),
        );
        counter(
            &mut out,
            "servo_scripts_run_total",
            "Scripts started in a sandbox.",
            load(&self.scripts_run),
        );
        counter(
            &mut out,
            "servo_upload_bytes_total",
            "Bytes of archives received.",
            load(&self.upload_bytes),
        );
        let _ = writeln!(
            out,
            "# HELP servo_requests_rejected_total Requests refused before their run started, by reason.\n# TYPE servo_requests_rejected_total counter"
        );
        for (reason, n) in self
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "servo_requests_rejected_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP servo_portal_commands_total Commands relayed to the portal, by verb and verdict.\n# TYPE servo_portal_commands_total counter"
        );
        for ((verb, verdict), n) in self
            .portal_commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "servo_portal_commands_total{{verb=\"{verb}\",verdict=\"{verdict}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP servo_concurrency_waiting Runs waiting for their concurrency group.\n# TYPE servo_concurrency_waiting gauge\nservo_concurrency_waiting {}",
            load(&self.group_waiting)
        );
        self.group_wait.render(
            &mut out,
            "servo_concurrency_wait_seconds",
            "Time runs waited for their concurrency group.",
        );
        self.coordination.render(
            &mut out,
            "servo_coordination_seconds",
            "Time a verified request spent taking its tenant place and recording its v2 signature.",
        );
        self.sandbox_setup.render(
            &mut out,
            "servo_sandbox_setup_seconds",
            "Time to start a sandboxed script.",
        );
        self.script_duration.render(
            &mut out,
            "servo_script_duration_seconds",
            "Wall time of scripts.",
        );
        let _ = writeln!(
            out,
            "# HELP servo_runs_in_flight Runs running now.\n# TYPE servo_runs_in_flight gauge\nservo_runs_in_flight {in_flight}"
        );
        let _ = writeln!(
            out,
            "# HELP servo_queue_length Verified requests waiting for a run slot or uploading.\n# TYPE servo_queue_length gauge\nservo_queue_length {queue}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        inc(&m.runs_started);
        m.rejected("forbidden");
        m.rejected("forbidden");
        m.portal_command("deploy", true);
        m.portal_command("rm -rf", false);
        m.script_duration.observe(0.3);
        let text = m.render(1, 2);
        assert!(text.contains("servo_runs_started_total 1\n"));
        assert!(text.contains("servo_requests_rejected_total{reason=\"forbidden\"} 2\n"));
        assert!(
            text.contains("servo_portal_commands_total{verb=\"deploy\",verdict=\"allowed\"} 1\n")
        );
        assert!(text.contains("servo_portal_commands_total{verb=\"other\",verdict=\"denied\"} 1\n"));
        assert!(text.contains("servo_script_duration_seconds_bucket{le=\"0.25\"} 0\n"));
        assert!(text.contains("servo_script_duration_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(text.contains("servo_script_duration_seconds_count 1\n"));
        assert!(text.contains("servo_queue_length 2\n"));
    }
}
