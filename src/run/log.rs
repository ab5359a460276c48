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
/// (the pipe holds [`PIPE_BYTES`]: a script printing flat out is not held
/// up; the script's end cuts the wait short), and
/// delays a line by about this much (tokio's timer rounds up to its 1 ms
/// tick).
pub const BATCH: std::time::Duration = std::time::Duration::from_millis(1);

/// Log lines gathered from one read of a script's output, passed on as one
/// message: one buffer of the lines' text and where each ends. A message
/// and a `String` per line had cost the server ~28 % of its CPU in malloc
/// and ~14 % in task switches on a 16 MiB log of 100-byte lines.
#[derive(Debug, Default)]
pub struct Lines {
    text: String,
    ends: Vec<usize>,
}

impl Lines {
    pub fn push(&mut self, line: &str) {
        self.text.push_str(line);
        self.ends.push(self.text.len());
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The lines, in order, without their `\n`.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let line = &self.text[start..end];
            start = end;
            line
        })
    }
}

/// The capacity asked for a script's output pipe. The reader waits
/// [`BATCH`] (1-2 ms with the timer's tick) after a short read; a script
/// printing 100-byte lines flat out (`PYTHONUNBUFFERED=1`, ~1.5 µs a line)
/// filled the default 64 KiB in about 1 ms and then sat blocked until the
/// read: the 16 MiB log took 1.5-1.6 x python's time, 0.56 x with this.
/// The kernel allocates a pipe's pages only as they are written (charged
/// to the writer's cgroup, the job's), and keeps a 10 KiB slot array.
pub const PIPE_BYTES: libc::c_int = 1 << 20;

/// Asks for [`PIPE_BYTES`] of capacity on the pipe behind `fd`, as root
/// only: an unprivileged user's pipes count against
/// `fs.pipe-user-pages-soft` (64 MiB), past which the kernel makes that
/// user's new pipes a page or two. Best effort: a smaller pipe only means
/// more waits.
pub fn widen_pipe(fd: &impl std::os::fd::AsRawFd) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    // SAFETY: F_SETPIPE_SZ on a descriptor the caller holds; it changes
    // only the pipe's capacity.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
}

/// Splits a byte stream into lines (`\n`), replacing invalid UTF-8 and
/// splitting lines longer than [`MAX_LINE`].
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit` for each complete line (without its `\n`).
    pub fn feed(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(&str)) {
        if !self.partial.is_empty() {
            // The line an earlier read began ends in this one, or not yet.
            let Some(i) = memchr::memchr(b'\n', bytes) else {
                self.push_bounded(bytes, emit);
                return;
            };
            self.push_bounded(&bytes[..i], emit);
            self.take(emit);
            bytes = &bytes[i + 1..];
        }
        let cut = memchr::memrchr(b'\n', bytes).map_or(0, |i| i + 1);
        let (whole, rest) = bytes.split_at(cut);
        // The read's whole lines checked as UTF-8 at once (nearly always
        // valid; a check per line was 6 % of the server's CPU on a 16 MiB
        // log), each then passed on where it lies. Invalid ones go line by
        // line, so that one bad byte spoils only its line.
        match std::str::from_utf8(whole) {
            Ok(text) => {
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', whole) {
                    let line = &text[start..end];
                    if line.len() <= MAX_LINE {
                        emit(line);
                    } else {
                        self.push_bounded(line.as_bytes(), emit);
                        self.take(emit);
                    }
                    start = end + 1;
                }
            }
            Err(_) => self.feed_lines(whole, emit),
        }
        self.push_bounded(rest, emit);
    }

    /// Whole lines, each checked as UTF-8 on its own (`partial` is empty).
    fn feed_lines(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(&str)) {
        while let Some(i) = memchr::memchr(b'\n', bytes) {
            if i <= MAX_LINE {
                emit(&to_str(&bytes[..i]));
            } else {
                self.push_bounded(&bytes[..i], emit);
                self.take(emit);
            }
            bytes = &bytes[i + 1..];
        }
        self.push_bounded(bytes, emit);
    }

    /// Emits what is left at the end of the stream.
    pub fn finish(&mut self, emit: &mut impl FnMut(&str)) {
        if !self.partial.is_empty() {
            self.take(emit);
        }
    }

    fn push_bounded(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(&str)) {
        while self.partial.len() + bytes.len() > MAX_LINE {
            let room = MAX_LINE - self.partial.len();
            self.partial.extend_from_slice(&bytes[..room]);
            self.take(emit);
            bytes = &bytes[room..];
        }
        self.partial.extend_from_slice(bytes);
    }

    fn take(&mut self, emit: &mut impl FnMut(&str)) {
        emit(&to_str(&self.partial));
        self.partial.clear();
    }
}

/// The line as UTF-8, invalid bytes replaced. Valid lines take
/// `from_utf8`'s word-at-a-time check, not the lossy decoder's
/// chunk-by-chunk walk (5 % of the server's CPU on a 16 MiB log), and are
/// not copied.
fn to_str(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(line) => std::borrow::Cow::Borrowed(line),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut |l| out.push(l.to_string()));
        }
        s.finish(&mut |l| out.push(l.to_string()));
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

    /// Where the reads cut the stream does not change the lines: one byte
    /// at a time, and every cut of a stream with multibyte characters,
    /// invalid bytes, empty lines, a long line and a partial last line.
    #[test]
    fn reads_cut_anywhere() {
        let mut stream = b"caf\xc3\xa9 \xe4\xb8\xad\n\nbad\xff\xfe\nok\n".to_vec();
        stream.extend(vec![b'z'; MAX_LINE + 5]);
        stream.extend(b"\n\xf0\x9f\x99\x82 tail");
        let whole = split(&[&stream]);
        assert_eq!(whole[0], "café 中");
        assert_eq!(whole[2], "bad\u{fffd}\u{fffd}");
        assert_eq!(whole.last().map(String::as_str), Some("🙂 tail"));
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(split(&bytes), whole);
        for cut in (0..40).chain(MAX_LINE..MAX_LINE + 40) {
            let (a, b) = stream.split_at(cut.min(stream.len()));
            assert_eq!(split(&[a, b]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn lines_keep_their_bounds() {
        let mut lines = Lines::default();
        assert!(lines.is_empty());
        for l in ["a", "", "é 中", "", "last"] {
            lines.push(l);
        }
        assert!(!lines.is_empty());
        assert_eq!(
            lines.iter().collect::<Vec<_>>(),
            vec!["a", "", "é 中", "", "last"]
        );
    }
}
