//! The audit log (SPEC §8): append-only JSON lines, each written and flushed
//! to disk (fsync) before the step it records goes ahead. Never a token, a
//! redacted value or file contents: callers pass names and digests only.
//!
//! A write that fails (disk full, I/O error) leaves no partial line behind:
//! the file is cut back to where it was, so every line stays parseable. From
//! then on the log is *failing* and servo fails closed (§8) until a write
//! succeeds again; the first record after the outage is `audit.resumed`,
//! saying how many records could not be written meanwhile.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};

use serde_json::{Map, Value};

/// Where the audit log goes: `--audit -` (standard output) or a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    File(PathBuf),
}

pub struct Audit {
    sink: Mutex<Sink>,
    /// Group commit: records appended so far, and how many of them an
    /// fdatasync has covered. A writer waits for the disk only when no sync
    /// that started after its append has finished; under load one fsync
    /// makes the records of many concurrent runs durable at once.
    appended: AtomicU64,
    synced: Mutex<u64>,
    /// The log file again, to fsync without holding up appends.
    sync_file: Option<File>,
    failing: AtomicBool,
    /// Records that could not be written since the log started failing.
    lost: AtomicU64,
    /// `commit`'s queue to the committer thread (started by the first
    /// `commit`), which appends what is queued, syncs once for all of it and
    /// wakes each waiter. A blocking-pool thread per waiter held ~62 KiB of
    /// stack each: 31.7 MiB of the server's 67 MiB with 500 runs starting.
    committer: Mutex<Option<Sender<Pending>>>,
}

/// A record `commit` waits for (none: `durable` waits for what was written
/// before it), and where to say it is durable (or not).
struct Pending {
    text: Option<String>,
    done: tokio::sync::oneshot::Sender<Result<(), AuditError>>,
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
        let (sink, sync_file) = match target {
            AuditTarget::Stdout => (Sink::Stdout, None),
            AuditTarget::File(p) => {
                let f = open_file(p)?;
                let again = f.try_clone()?;
                (Sink::File(f), Some(again))
            }
        };
        Ok(Audit {
            sink: Mutex::new(sink),
            appended: AtomicU64::new(0),
            synced: Mutex::new(0),
            sync_file,
            failing: AtomicBool::new(false),
            lost: AtomicU64::new(0),
            committer: Mutex::new(None),
        })
    }

    /// Whether the last write failed (new runs are refused meanwhile).
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// While failing: tries to write the `audit.resumed` record, which ends
    /// the outage when it succeeds. Ok when the log can be written.
    pub fn probe(&self) -> Result<(), AuditError> {
        if !self.is_failing() {
            return Ok(());
        }
        self.write(String::new(), true)
    }

    /// Writes one event and flushes it to disk.
    pub fn record(
        &self,
        event: &str,
        run: &str,
        tenant: &str,
        fields: Value,
    ) -> Result<(), AuditError> {
        self.write(line(event, run, tenant, fields), true)
    }

    /// Writes one event that records something already done (a script that
    /// ended) without waiting for the disk: it reaches the disk with the next
    /// `record`, which every step that follows (the next script, a relayed
    /// command, the run's end and its answer) waits for. One fsync fewer per
    /// script on the run's critical path.
    pub fn note(
        &self,
        event: &str,
        run: &str,
        tenant: &str,
        fields: Value,
    ) -> Result<(), AuditError> {
        self.write(line(event, run, tenant, fields), false)
    }

    /// `record` for async callers: the committer thread appends and syncs,
    /// so neither a runtime worker nor a thread per waiter blocks on the
    /// disk (a few ms on a busy one); the call returns once the record is
    /// durable, or with the error that kept it from being so.
    pub async fn commit(
        self: &Arc<Self>,
        event: &str,
        run: &str,
        tenant: &str,
        fields: Value,
    ) -> Result<(), AuditError> {
        self.wait_for(Some(line(event, run, tenant, fields))).await
    }

    /// Returns once every record written so far (a `note` too) is on disk:
    /// the sync a `note` put off, for a step that must not go ahead before.
    pub async fn durable(self: &Arc<Self>) -> Result<(), AuditError> {
        self.wait_for(None).await
    }

    async fn wait_for(self: &Arc<Self>, text: Option<String>) -> Result<(), AuditError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.enqueue(Pending { text, done })?;
        answer.await.unwrap_or_else(|_| {
            Err(AuditError(std::io::Error::other(
                "the audit log's committer thread stopped",
            )))
        })
    }

    /// Queues `pending` for the committer thread, starting it if needed
    /// (again, if it died).
    fn enqueue(self: &Arc<Self>, pending: Pending) -> Result<(), AuditError> {
        let mut queue = self.committer.lock().unwrap_or_else(|p| p.into_inner());
        let sender = match queue.take() {
            Some(sender) => sender,
            None => {
                let (sender, receiver) = std::sync::mpsc::channel();
                let me = Arc::downgrade(self);
                std::thread::Builder::new()
                    .name("servo-audit".into())
                    .stack_size(256 * 1024)
                    .spawn(move || committer(me, receiver))?;
                sender
            }
        };
        match sender.send(pending) {
            Ok(()) => *queue = Some(sender),
            // The thread is gone (it panicked): the next commit starts another.
            Err(back) => {
                let _ = back.0.done.send(Err(AuditError(std::io::Error::other(
                    "the audit log's committer thread stopped",
                ))));
            }
        }
        Ok(())
    }

    /// Appends each record of `batch` in order, then syncs once for all
    /// that were appended (every earlier `note` too), then answers each
    /// (a `durable` waiter as well).
    fn commit_batch(&self, batch: Vec<Pending>) {
        let mut waiting = Vec::with_capacity(batch.len());
        let mut last = 0;
        let mut records = 0;
        for Pending { text, done } in batch {
            let Some(text) = text else {
                // Whatever was appended before it was queued.
                last = last.max(self.appended.load(Ordering::SeqCst));
                waiting.push(done);
                continue;
            };
            match self.append(text) {
                Ok(seq) => {
                    last = seq;
                    records += 1;
                    waiting.push(done);
                }
                Err(e) => {
                    let _ = done.send(Err(e));
                }
            }
        }
        if waiting.is_empty() {
            return;
        }
        let result = self.sync_through(last, records);
        for done in waiting {
            let _ = done.send(match &result {
                Ok(()) => Ok(()),
                Err(AuditError(e)) => Err(AuditError(std::io::Error::new(e.kind(), e.to_string()))),
            });
        }
    }

    /// Appends `text` (whole lines), preceded by `audit.resumed` when the log
    /// was failing, in one write; then, when `sync`, makes it durable (which
    /// also covers every earlier `note`). A failed append is cut back.
    fn write(&self, text: String, sync: bool) -> Result<(), AuditError> {
        let seq = self.append(text)?;
        if sync {
            self.sync_through(seq, 1)?;
        }
        Ok(())
    }

    /// Appends under the lock; returns the record's sequence number.
    fn append(&self, text: String) -> Result<u64, AuditError> {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let lost = self.lost.load(Ordering::Relaxed);
        let text = if self.is_failing() {
            let resumed = line(
                "audit.resumed",
                "",
                "",
                serde_json::json!({ "lost_records": lost }),
            );
            resumed + &text
        } else {
            text
        };
        let result = match &mut *sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|_| out.flush())
            }
            Sink::File(f) => append(f, text.as_bytes()),
        };
        match result {
            Ok(()) => {
                self.lost.store(0, Ordering::Relaxed);
                self.failing.store(false, Ordering::Relaxed);
                Ok(self.appended.fetch_add(1, Ordering::SeqCst) + 1)
            }
            Err(e) => {
                // The resumed line is not a record of its own.
                let records = text.matches('\n').count() as u64 - u64::from(self.is_failing());
                self.fail(&e, lost + records, !text.is_empty());
                Err(AuditError(e))
            }
        }
    }

    /// Returns once record `seq` is on disk: either a sync that began after
    /// it was appended has finished, or this call syncs everything appended
    /// so far. When that fails, the caller's `records` count as lost.
    fn sync_through(&self, seq: u64, records: u64) -> Result<(), AuditError> {
        let Some(file) = &self.sync_file else {
            return Ok(());
        };
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= seq {
            return Ok(());
        }
        let target = self.appended.load(Ordering::SeqCst);
        match file.sync_data() {
            Ok(()) => {
                *synced = target;
                Ok(())
            }
            Err(e) => {
                let lost = self.lost.load(Ordering::Relaxed);
                self.fail(&e, lost + records, true);
                Err(AuditError(e))
            }
        }
    }

    fn fail(&self, e: &std::io::Error, lost: u64, say: bool) {
        if say && !self.is_failing() {
            tracing::error!(
                "the audit log cannot be written ({e}): refusing runs and commands until it can"
            );
        }
        self.lost.store(lost, Ordering::Relaxed);
        self.failing.store(true, Ordering::Relaxed);
    }
}

/// The committer thread: takes what `commit` queued, all of it at a time,
/// while its `Audit` lives (it holds it only for a batch, so dropping the
/// last `Arc` ends the queue and the thread).
fn committer(audit: Weak<Audit>, queue: Receiver<Pending>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let Some(audit) = audit.upgrade() else {
            return;
        };
        audit.commit_batch(batch);
    }
}

/// One JSON line: `ts`, `event`, `run`, `tenant`, then `fields`.
fn line(event: &str, run: &str, tenant: &str, fields: Value) -> String {
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
    line
}

/// Appends; when that fails, cuts the file back to its old length so no
/// partial line stays (a full disk may take half a line).
fn append(f: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    let before = f.metadata()?.len();
    let result = f.write_all(bytes);
    if result.is_err() {
        let _ = f.set_len(before);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_no_partial_line_and_recovery_is_recorded() {
        // /dev/full fails every write: the log is failing and records are counted.
        let audit = Audit::open(&AuditTarget::File("/dev/full".into())).unwrap();
        assert!(audit.probe().is_ok(), "not failing yet");
        assert!(audit.record("x", "r", "t", serde_json::json!({})).is_err());
        assert!(audit.is_failing());
        assert!(audit.probe().is_err());
        assert!(audit.record("y", "r", "t", serde_json::json!({})).is_err());
        assert_eq!(audit.lost.load(Ordering::Relaxed), 2);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(&AuditTarget::File(path.clone())).unwrap();
        audit
            .record("a", "r", "t", serde_json::json!({"n": 1}))
            .unwrap();
        // Pretend two records were lost; the next write says so first.
        audit.failing.store(true, Ordering::Relaxed);
        audit.lost.store(2, Ordering::Relaxed);
        audit.probe().unwrap();
        assert!(!audit.is_failing());
        audit.record("b", "r", "t", serde_json::json!({})).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let names: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "audit.resumed", "b"]);
        assert_eq!(events[1]["lost_records"], 2);
        assert_eq!(events[0]["n"], 1);
    }

    #[test]
    fn concurrent_records_are_whole_lines_and_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Arc::new(Audit::open(&AuditTarget::File(path.clone())).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let audit = Arc::clone(&audit);
                std::thread::spawn(move || {
                    for n in 0..50 {
                        audit
                            .record("x", "r", "t", serde_json::json!({"t": t, "n": n}))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*audit.synced.lock().unwrap(), 400, "every record synced");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut seen: Vec<(u64, u64)> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|e| (e["t"].as_u64().unwrap(), e["n"].as_u64().unwrap()))
            .collect();
        seen.sort();
        assert_eq!(seen.len(), 400);
        seen.dedup();
        assert_eq!(seen.len(), 400);
    }

    /// A runtime for `commit`, and a log in a fresh directory (kept while
    /// the `TempDir` lives).
    fn file_log() -> (
        tokio::runtime::Runtime,
        tempfile::TempDir,
        PathBuf,
        Arc<Audit>,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Arc::new(Audit::open(&AuditTarget::File(path.clone())).unwrap());
        (runtime, dir, path, audit)
    }

    #[test]
    fn concurrent_commits_are_durable_and_a_failed_one_is_counted() {
        let (runtime, _dir, path, audit) = file_log();
        runtime.block_on(async {
            let tasks: Vec<_> = (0..300)
                .map(|n| {
                    let audit = Arc::clone(&audit);
                    tokio::spawn(async move {
                        audit.note("n", "r", "t", serde_json::json!({"n": n}))?;
                        audit
                            .commit("c", "r", "t", serde_json::json!({"n": n}))
                            .await
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        });
        // Every record, notes included, is covered by a sync.
        assert_eq!(*audit.synced.lock().unwrap(), 600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 600);
        for l in text.lines() {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }

        let full = Arc::new(Audit::open(&AuditTarget::File("/dev/full".into())).unwrap());
        runtime.block_on(async {
            assert!(full
                .commit("x", "r", "t", serde_json::json!({}))
                .await
                .is_err());
            assert!(full
                .commit("y", "r", "t", serde_json::json!({}))
                .await
                .is_err());
        });
        assert!(full.is_failing());
        assert_eq!(full.lost.load(Ordering::Relaxed), 2);
        // Dropping the log ends its committer thread (no thread per log left).
        drop(full);
    }

    #[test]
    fn durable_waits_for_the_notes_written_before_it() {
        let (runtime, _dir, path, audit) = file_log();
        runtime.block_on(async {
            // Nothing written yet: nothing to wait for.
            audit.durable().await.unwrap();
            assert_eq!(*audit.synced.lock().unwrap(), 0);
            let tasks: Vec<_> = (0..100)
                .map(|n| {
                    let audit = Arc::clone(&audit);
                    tokio::spawn(async move {
                        audit.note("n", "r", "t", serde_json::json!({"n": n}))?;
                        let written = audit.appended.load(Ordering::SeqCst);
                        audit.durable().await?;
                        // Covered by a sync when it returns.
                        assert!(*audit.synced.lock().unwrap() >= written);
                        Ok::<_, AuditError>(())
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        });
        // A durable waiter adds no record.
        assert_eq!(*audit.synced.lock().unwrap(), 100);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 100);
    }

    #[test]
    fn timestamps_look_right() {
        let ts = rfc3339_now();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.starts_with("20") && ts.ends_with('Z'));
    }
}
