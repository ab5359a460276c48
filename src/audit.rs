//! The audit log (SPEC §8): append-only JSON lines, each written and flushed
//! to disk (fsync) before the step it records goes ahead. Never a token, a
//! redacted value or file contents: callers pass names and digests only.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde_json::{Map, Value};

use crate::config::AuditTarget;

pub struct Audit {
    sink: Mutex<Sink>,
    failing: AtomicBool,
}

enum Sink {
    Stdout,
    File(File),
}

#[derive(Debug, thiserror::Error)]
#[error("the audit log cannot be written: {0}")]
pub struct AuditError(#[from] std::io::Error);

fn open_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Appends `line` and syncs it, or leaves the file as it was: a write that
/// fails part-way (a full disk) is cut off again, so that the log stays
/// parseable line by line once it can be written again.
fn append_whole(f: &mut File, line: &[u8]) -> std::io::Result<()> {
    let before = f.metadata()?.len();
    let result = f.write_all(line).and_then(|_| f.sync_data());
    if result.is_err() {
        let _ = f.set_len(before);
    }
    result
}

/// RFC 3339 UTC timestamp with milliseconds, from the system clock.
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

impl Audit {
    pub fn open(target: &AuditTarget) -> Result<Audit, AuditError> {
        let sink = match target {
            AuditTarget::Stdout => Sink::Stdout,
            AuditTarget::File(p) => Sink::File(open_file(p)?),
        };
        Ok(Audit {
            sink: Mutex::new(sink),
            failing: AtomicBool::new(false),
        })
    }

    /// Whether the last write failed (new runs are refused meanwhile).
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Writes one event and flushes it to disk.
    pub fn record(
        &self,
        event: &str,
        run: &str,
        tenant: &str,
        fields: Value,
    ) -> Result<(), AuditError> {
        let mut obj = Map::new();
        obj.insert("ts".into(), Value::String(rfc3339_now()));
        obj.insert("event".into(), event.into());
        obj.insert("run".into(), run.into());
        obj.insert("tenant".into(), tenant.into());
        if let Value::Object(extra) = fields {
            obj.extend(extra);
        }
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        let result = {
            let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
            match &mut *sink {
                Sink::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).and_then(|_| out.flush())
                }
                Sink::File(f) => append_whole(f, line.as_bytes()),
            }
        };
        self.failing.store(result.is_err(), Ordering::Relaxed);
        result.map_err(AuditError)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_look_right() {
        let ts = super::rfc3339_now();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.starts_with("20") && ts.ends_with('Z'));
    }
}
