//! A run streaming its log (`Accept: application/x-ndjson`) from a real
//! `curl` child, read line by line while the test goes on.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::Servo;

/// A run streaming its log (NDJSON) from a curl child; lines are read by a
/// thread, so a test can look at them while others run.
pub struct Streaming {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Streaming {
    pub fn start(servo: &Servo, tgz: &Path, scripts: &str, sig: &str, extra: &[&str]) -> Streaming {
        let form = format!("tgz=@{}", tgz.display());
        let sig_header = format!("X-Signature: {sig}");
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "-X", "POST", "-F", &form, "-H", &sig_header])
            .args(["-H", "Accept: application/x-ndjson"])
            .args(extra)
            .arg(format!("{}/run/{scripts}", servo.url))
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl");
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Streaming {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next NDJSON object (within 60 s).
    pub fn next(&mut self) -> Value {
        let raw = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no more lines ({e}) after {:?}", self.seen));
        let v: Value =
            serde_json::from_str(&raw).unwrap_or_else(|e| panic!("not ndjson ({e}): {raw}"));
        if let Some(l) = v["line"].as_str() {
            self.seen.push(l.to_string());
        }
        v
    }

    /// Reads log lines until one starts with `prefix`; returns it.
    pub fn until(&mut self, prefix: &str) -> String {
        loop {
            let v = self.next();
            match v["line"].as_str() {
                Some(l) if l.starts_with(prefix) => return l.to_string(),
                Some(_) => {}
                None => panic!("the run ended before `{prefix}`: {v} after {:?}", self.seen),
            }
        }
    }

    /// Reads to the end: the final object, and every log line.
    pub fn finish(mut self) -> (Value, Vec<String>) {
        loop {
            let v = self.next();
            if v.get("line").is_none() {
                let _ = self.child.wait();
                return (v, std::mem::take(&mut self.seen));
            }
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
