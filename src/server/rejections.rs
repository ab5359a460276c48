//! `request.rejected` audit records, rate-limited (SPEC §2.1, §8): a flood
//! of bad requests must not flood the audit log (nor its disk and fsyncs).
//! Per reason (the metrics label, a fixed set), at most [`PER_WINDOW`]
//! records per [`WINDOW`]; the rest are counted, and one
//! `request.rejected.suppressed` record with the count is written when the
//! window ends (or before the next record, whichever comes first). Free-text
//! fields are cut to [`FIELD_MAX`] bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::audit::Audit;

/// Records per reason per window.
pub const PER_WINDOW: u64 = 50;
pub const WINDOW: Duration = Duration::from_secs(10);
/// Longest free-text field (reason, tenant name) in a record, in bytes.
pub const FIELD_MAX: usize = 256;

#[derive(Default)]
struct Window {
    start: Option<Instant>,
    written: u64,
    suppressed: u64,
    /// A task will write the summary when this window ends.
    flush_scheduled: bool,
}

pub struct RejectionLog {
    audit: Arc<Audit>,
    windows: Mutex<HashMap<&'static str, Window>>,
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn summary(label: &str, count: u64) -> Value {
    json!({"label": label, "count": count, "window_s": WINDOW.as_secs()})
}

impl RejectionLog {
    pub fn new(audit: Arc<Audit>) -> Arc<RejectionLog> {
        Arc::new(RejectionLog {
            audit,
            windows: Mutex::new(HashMap::new()),
        })
    }

    /// Records one rejection labelled `label` (or counts it, past the
    /// window's allowance).
    pub fn record(self: &Arc<Self>, label: &'static str, tenant: &str, fields: Value) {
        let now = Instant::now();
        let mut pending_summary = None;
        let write = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let w = windows.entry(label).or_default();
            if w.start.is_none_or(|s| now.duration_since(s) >= WINDOW) {
                if w.suppressed > 0 {
                    pending_summary = Some(w.suppressed);
                }
                *w = Window {
                    start: Some(now),
                    flush_scheduled: w.flush_scheduled,
                    ..Window::default()
                };
            }
            if w.written < PER_WINDOW {
                w.written += 1;
                true
            } else {
                w.suppressed += 1;
                if !w.flush_scheduled {
                    w.flush_scheduled = true;
                    let end = w.start.unwrap_or(now) + WINDOW;
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        tokio::time::sleep_until(end).await;
                        me.flush(label);
                    });
                }
                false
            }
        };
        if let Some(count) = pending_summary {
            let _ = self
                .audit
                .record("request.rejected.suppressed", "", "", summary(label, count));
        }
        if write {
            let tenant = truncate(tenant, FIELD_MAX);
            let mut fields = fields;
            if let Some(Value::String(reason)) = fields.get_mut("reason") {
                let cut = truncate(reason, FIELD_MAX).len();
                reason.truncate(cut);
            }
            let _ = self.audit.record("request.rejected", "", tenant, fields);
        }
    }

    /// At a window's end: the summary of what it suppressed, if anything.
    fn flush(&self, label: &'static str) {
        let count = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let w = windows.entry(label).or_default();
            w.flush_scheduled = false;
            std::mem::take(&mut w.suppressed)
        };
        if count > 0 {
            let _ = self
                .audit
                .record("request.rejected.suppressed", "", "", summary(label, count));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("abc", 256), "abc");
    }
}
