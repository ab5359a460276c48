//! The run's log (SPEC §4.3): output bytes → UTF-8 lines of at most 64 KiB.

/// Longest log line; longer output is split.
pub const MAX_LINE: usize = 64 * 1024;

/// The read buffer of a script's output starts at a page and doubles while
/// reads fill it, up to the pipe's default capacity: 500 quiet runs hold
/// 2 MiB of buffers instead of 32 MiB.
pub const READ_MIN: usize = 4 * 1024;
pub const READ_MAX: usize = 64 * 1024;

/// After a short read of a script's output, how long the next read waits.
/// With `PYTHONUNBUFFERED=1` (SPEC §4.2) a script writes each line on its
/// own; reading each as it comes costs a wake-up, a read and a chunk per
/// line or two. Waiting this long gathers what the script writes meanwhile
/// (a pipe holds 64 KiB: a script printing flat out is not held up), and
/// delays a line by about this much (tokio's timer rounds up to its 1 ms
/// tick).
pub const BATCH: std::time::Duration = std::time::Duration::from_millis(1);

/// Splits a byte stream into lines (`\n`), replacing invalid UTF-8 and
/// splitting lines longer than [`MAX_LINE`].
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit` for each complete line (without its `\n`).
    pub fn feed(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(String)) {
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                // A whole line in this chunk: one copy, straight into its String.
                Some(i) if self.partial.is_empty() && i <= MAX_LINE => {
                    emit(to_string(&bytes[..i]));
                    bytes = &bytes[i + 1..];
                }
                Some(i) => {
                    self.push_bounded(&bytes[..i], emit);
                    emit(self.take());
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.push_bounded(bytes, emit);
                    bytes = &[];
                }
            }
        }
    }

    /// Emits what is left at the end of the stream.
    pub fn finish(&mut self, emit: &mut impl FnMut(String)) {
        if !self.partial.is_empty() {
            emit(self.take());
        }
    }

    fn push_bounded(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(String)) {
        while self.partial.len() + bytes.len() > MAX_LINE {
            let room = MAX_LINE - self.partial.len();
            self.partial.extend_from_slice(&bytes[..room]);
            emit(self.take());
            bytes = &bytes[room..];
        }
        self.partial.extend_from_slice(bytes);
    }

    fn take(&mut self) -> String {
        let line = to_string(&self.partial);
        self.partial.clear();
        line
    }
}

/// The line as UTF-8, invalid bytes replaced. Valid lines (nearly all)
/// take `from_utf8`'s word-at-a-time check, not the lossy decoder's
/// chunk-by-chunk walk (5 % of the server's CPU on a 16 MiB log).
fn to_string(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(line) => line.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut |l| out.push(l));
        }
        s.finish(&mut |l| out.push(l));
        out
    }

    #[test]
    fn lines() {
        assert_eq!(split(&[b"a\nb", b"c\n", b"d"]), vec!["a", "bc", "d"]);
        assert_eq!(split(&[b"\n\n"]), vec!["", ""]);
        assert_eq!(split(&[b"caf\xff\n"]), vec!["caf\u{fffd}"]);
        assert_eq!(
            split(&[b"a\xff\nb\n", b"\xffc\n"]),
            vec!["a\u{fffd}", "b", "\u{fffd}c"]
        );
        let long = vec![b'x'; MAX_LINE * 2 + 3];
        let out = split(&[&long]);
        assert_eq!(
            out.iter().map(|l| l.len()).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 3]
        );
        // A line of exactly MAX_LINE is one line; one more byte splits it.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(
            split(&[&exact]).iter().map(|l| l.len()).collect::<Vec<_>>(),
            vec![MAX_LINE]
        );
        let mut over = vec![b'y'; MAX_LINE + 1];
        over.push(b'\n');
        assert_eq!(
            split(&[&over]).iter().map(|l| l.len()).collect::<Vec<_>>(),
            vec![MAX_LINE, 1]
        );
    }
}
