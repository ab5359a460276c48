//! The run's log (SPEC §4.3): output bytes → UTF-8 lines of at most 64 KiB.

/// Longest log line; longer output is split.
pub const MAX_LINE: usize = 64 * 1024;

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
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        line
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
        let long = vec![b'x'; MAX_LINE * 2 + 3];
        let out = split(&[&long]);
        assert_eq!(
            out.iter().map(|l| l.len()).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 3]
        );
    }
}
