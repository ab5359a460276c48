//! The pod's `/log` (SPEC §13): the last operational log lines, kept in a
//! bounded ring that the tracing subscriber writes to beside standard error.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// Lines kept; older ones are dropped.
pub const CAPACITY: usize = 256;
/// Longest line kept, in bytes (longer ones are cut).
const MAX_LINE: usize = 1024;

fn ring() -> &'static Mutex<VecDeque<String>> {
    static RING: OnceLock<Mutex<VecDeque<String>>> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(CAPACITY)))
}

/// Adds one line (without its newline), dropping the oldest beyond CAPACITY.
pub fn push(line: &str) {
    let mut line = line.trim_end_matches(['\n', '\r']).to_string();
    if line.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    let mut ring = ring().lock().unwrap_or_else(|p| p.into_inner());
    if ring.len() == CAPACITY {
        ring.pop_front();
    }
    ring.push_back(line);
}

/// The kept lines, oldest first.
pub fn lines() -> Vec<String> {
    ring()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// A `MakeWriter` for the subscriber: each event is formatted into a buffer
/// and pushed as lines when the writer is dropped.
#[derive(Clone, Copy, Default)]
pub struct RingWriter;

pub struct EventBuffer(Vec<u8>);

impl Write for EventBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        for line in text.lines().filter(|l| !l.is_empty()) {
            push(line);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RingWriter {
    type Writer = EventBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        EventBuffer(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_bounded_and_keeps_the_newest() {
        for i in 0..CAPACITY + 10 {
            push(&format!("line {i}\n"));
        }
        let kept = lines();
        assert_eq!(kept.len(), CAPACITY);
        assert_eq!(
            kept.last().map(String::as_str),
            Some(format!("line {}", CAPACITY + 9).as_str())
        );
        push(&"é".repeat(MAX_LINE));
        assert!(lines().last().is_some_and(|l| l.len() <= MAX_LINE));
    }
}
