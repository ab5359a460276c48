//! The v2 replay cache (SPEC §2.6, §11): every v2 signature accepted within
//! its window, kept in memory and in `STATE/replay` so that a restart does not
//! make a captured request acceptable again.
//!
//! The file is append-only, one `<hex signature> <expiry>` line per accepted
//! signature, synced before the run is answered. It is rewritten without
//! the expired lines when it is opened and when it has grown to twice the
//! live entries.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Most signatures remembered at once: past it new v2 runs are refused
/// until old ones leave the window (bounded memory and disk: ~100 bytes each).
pub const CAPACITY: usize = 100_000;

/// What the cache says about a signature.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within its window: now remembered, on disk.
    Fresh,
    /// Accepted before, and its window is still open.
    Replayed,
    /// Too many live signatures to remember another.
    Full,
}

pub struct ReplayCache {
    inner: Mutex<Inner>,
}

struct Inner {
    path: PathBuf,
    live: HashMap<Vec<u8>, u64>,
    file: File,
    /// Lines in the file, live or not.
    lines: usize,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes the live entries to a new file and renames it over `path`.
fn rewrite(path: &Path, live: &HashMap<Vec<u8>, u64>) -> std::io::Result<File> {
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    let mut out = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    let mut text = String::with_capacity(live.len() * 80);
    for (mac, expiry) in live {
        text.push_str(&hex::encode(mac));
        text.push(' ');
        text.push_str(&expiry.to_string());
        text.push('\n');
    }
    out.write_all(text.as_bytes())?;
    out.sync_data()?;
    drop(out);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    open_append(path)
}

impl ReplayCache {
    /// Loads `path` (absent: empty), drops what expired before `now`, and
    /// keeps the file open for appending. A line that cannot be read is
    /// skipped: at worst a signature is forgotten early, which the 300-s
    /// timestamp window bounds.
    pub fn open(path: &Path, now: u64) -> std::io::Result<ReplayCache> {
        let mut live = HashMap::new();
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(file) => {
                for line in BufReader::new(file).lines() {
                    let line = line?;
                    let Some((mac, expiry)) = line.split_once(' ') else {
                        continue;
                    };
                    let (Ok(mac), Ok(expiry)) = (hex::decode(mac), expiry.parse::<u64>()) else {
                        continue;
                    };
                    if expiry >= now && live.len() < CAPACITY {
                        live.insert(mac, expiry);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = rewrite(path, &live)?;
        let lines = live.len();
        Ok(ReplayCache {
            inner: Mutex::new(Inner {
                path: path.to_owned(),
                live,
                file,
                lines,
            }),
        })
    }

    /// Remembers `mac` until `expiry` unless it is already remembered; the
    /// record is on disk when this returns `Fresh`. An error means the
    /// signature could not be recorded: the caller refuses the request.
    pub fn remember(&self, mac: &[u8], expiry: u64, now: u64) -> std::io::Result<Seen> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.live.get(mac).is_some_and(|&e| e >= now) {
            return Ok(Seen::Replayed);
        }
        if inner.live.len() >= CAPACITY {
            inner.live.retain(|_, e| *e >= now);
            if inner.live.len() >= CAPACITY {
                return Ok(Seen::Full);
            }
        }
        // Every 1,024 lines, forget what expired; rewrite the file when most
        // of its lines are dead.
        if inner.lines % 1024 == 1023 {
            inner.live.retain(|_, e| *e >= now);
            if inner.lines >= 2 * inner.live.len() + 1024 {
                let file = rewrite(&inner.path, &inner.live)?;
                inner.lines = inner.live.len();
                inner.file = file;
            }
        }
        let line = format!("{} {expiry}\n", hex::encode(mac));
        inner.file.write_all(line.as_bytes())?;
        inner.file.sync_data()?;
        inner.lines += 1;
        inner.live.insert(mac.to_vec(), expiry);
        Ok(Seen::Fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_stays_refused_across_a_reopen_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        let cache = ReplayCache::open(&path, 1000).unwrap();
        assert_eq!(cache.remember(b"sig-a", 1300, 1000).unwrap(), Seen::Fresh);
        assert_eq!(
            cache.remember(b"sig-a", 1300, 1001).unwrap(),
            Seen::Replayed
        );
        assert_eq!(cache.remember(b"sig-b", 1100, 1001).unwrap(), Seen::Fresh);
        drop(cache);

        let cache = ReplayCache::open(&path, 1200).unwrap();
        assert_eq!(
            cache.remember(b"sig-a", 1300, 1200).unwrap(),
            Seen::Replayed
        );
        // sig-b expired before the reopen: dropped from the file.
        assert_eq!(cache.remember(b"sig-b", 1500, 1200).unwrap(), Seen::Fresh);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        // After its expiry, a signature is no longer remembered (the
        // timestamp check refuses it by then anyway).
        assert_eq!(cache.remember(b"sig-a", 1700, 1301).unwrap(), Seen::Fresh);
    }

    #[test]
    fn damaged_lines_are_skipped_and_the_file_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        std::fs::write(&path, "zz 5\nnot a line\n6162 99999\n").unwrap();
        let cache = ReplayCache::open(&path, 10).unwrap();
        assert_eq!(cache.remember(b"ab", 99999, 10).unwrap(), Seen::Replayed);
        for i in 0..3000u32 {
            let mac = i.to_be_bytes();
            // Each expires at once: the file is rewritten as it grows.
            assert_eq!(
                cache
                    .remember(&mac, 20 + u64::from(i), 20 + u64::from(i))
                    .unwrap(),
                Seen::Fresh
            );
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 2100, "{lines} lines kept");
    }

    #[test]
    fn a_symlink_in_its_place_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(ReplayCache::open(&path, 0).is_err());
    }
}
