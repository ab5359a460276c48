//! Safe extraction of a gzip-compressed tar (SPEC §3.2).
//!
//! The `tar` crate only parses: every header is judged here before anything
//! is written for it, and files are written here, never by `Entry::unpack`
//! (which skips `..` entries, strips a leading `/` and turns devices into
//! empty files instead of refusing them). Modes become 0755/0644, owners
//! come from the caller, and mtimes are not kept (files get the time of
//! extraction).

mod meter;
mod names;
mod tree;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::rc::Rc;

use flate2::bufread::GzDecoder;
use tar::EntryType;

use meter::{Meter, Metered, Trip};
use names::display;
use tree::{Kind, Tree};

/// Limits of one extraction (SPEC §3.2; per tenant).
#[derive(Clone, Copy, Debug)]
pub struct UnpackLimits {
    pub max_total_bytes: u64,
    /// Entries, counting every directory a name implies (`a/b/c` alone makes
    /// `a` and `a/b`): each is an inode on the run's tmpfs and a name in the
    /// unpacker's record.
    pub max_entries: u64,
    pub max_file_bytes: u64,
    /// Bytes of all the names recorded (every entry's and every implied
    /// directory's full name): bounds the unpacker's record, which a deep
    /// layout would otherwise make quadratic in the name length.
    pub max_name_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_total_bytes: 512 << 20,
            max_entries: 10_000,
            max_file_bytes: 256 << 20,
            max_name_bytes: MAX_NAME_BYTES_TOTAL,
        }
    }
}

/// What an extraction produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackSummary {
    /// Regular files, hardlinks included.
    pub files: u64,
    /// Their bytes (a hardlink counts its file's size again).
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unable to open the archive (bogus payload ?)")]
    Bogus,
    #[error("unsafe archive entry {name}: {reason}")]
    Unsafe { name: String, reason: String },
    #[error("could not write the bundle: {0}")]
    Io(#[from] std::io::Error),
}

/// Default cap on the bytes of all names of a bundle (4 MiB): 10,000 names
/// of 400 bytes each, far more than real bundles use (a deep `node_modules`
/// averages under 150), while 10,000 names of 4 KiB would be 40 MiB.
pub const MAX_NAME_BYTES_TOTAL: u64 = 4 << 20;

/// Most the `tar` crate may read for one entry's headers (its GNU long names,
/// PAX records and sparse maps, which it holds in memory).
const HEADER_WINDOW: u64 = 1 << 20;
/// Headers and padding allowed per entry on top of the file data, when
/// bounding the whole decompressed stream.
const HEADER_BYTES_PER_ENTRY: u64 = 8 << 10;
/// Bytes read from the archive at a time, and written to a file at a time.
const INPUT_BUFFER: usize = 64 << 10;
const WRITE_BUFFER: usize = 64 << 10;
/// The name in errors about the stream rather than one entry.
const END: &str = "(end of archive)";
const ARCHIVE: &str = "(archive)";

/// Extracts `archive` (a .tgz file) into `dest`, which must exist and be empty.
/// Every created file and directory is owned by `owner` (uid, gid) when given.
///
/// On error, `dest` may hold part of the bundle: the caller discards it.
pub fn unpack(
    archive: &Path,
    dest: &Path,
    limits: &UnpackLimits,
    owner: Option<(u32, u32)>,
) -> Result<UnpackSummary, UnpackError> {
    let tree = Tree::open(dest, owner)?;
    // Reads of 64 KiB rather than BufReader's 8: an eighth of the syscalls.
    let input = BufReader::with_capacity(INPUT_BUFFER, File::open(archive)?);
    // File data, plus headers, plus the zero blocks that pad a tar's end.
    let cap = limits
        .max_total_bytes
        .saturating_add(limits.max_entries.saturating_mul(HEADER_BYTES_PER_ENTRY))
        .saturating_add(HEADER_WINDOW);
    let meter = Meter::new(cap);
    let mut tar = tar::Archive::new(Metered::new(GzDecoder::new(input), meter.clone()));
    tar.set_ignore_zeros(false);

    let mut unpacker = Unpacker {
        tree,
        limits: *limits,
        meter: meter.clone(),
        entries: 0,
        name_bytes: 0,
        charged: 0,
        summary: UnpackSummary::default(),
        buf: Vec::new(),
    };
    let mut entries = tar.entries().map_err(|_| UnpackError::Bogus)?;
    loop {
        meter.open_window(HEADER_WINDOW);
        match entries.next() {
            None => break,
            Some(Ok(entry)) => unpacker.entry(entry)?,
            Some(Err(_)) => return Err(read_failure(&meter, ARCHIVE)),
        }
    }

    // What follows the tar's end inside the gzip member is ignored, but read
    // (within the cap) so the gzip trailer is checked.
    let mut rest = tar.into_inner();
    meter.open_window(u64::MAX);
    if io::copy(&mut rest, &mut io::sink()).is_err() {
        return Err(read_failure(&meter, END));
    }
    if meter.read() == 0 {
        // An empty gzip stream holds no tar at all.
        return Err(UnpackError::Bogus);
    }
    let mut input = rest.into_inner().into_inner();
    if !input.fill_buf()?.is_empty() {
        return Err(UnpackError::Unsafe {
            name: END.into(),
            reason: "data after the end of the gzip stream (only one gzip member is accepted)"
                .into(),
        });
    }
    Ok(unpacker.summary)
}

/// The error for a failed read of the decompressed stream: a limit of the
/// meter, or else a corrupt archive.
fn read_failure(meter: &Meter, name: &str) -> UnpackError {
    let reason = match meter.tripped() {
        None => return UnpackError::Bogus,
        Some(Trip::Window) => format!(
            "an extended header (PAX or GNU long name) is larger than {}",
            human(HEADER_WINDOW)
        ),
        Some(Trip::Total) => format!(
            "the archive decompresses to more than {} (file data and headers)",
            human(meter.cap())
        ),
    };
    UnpackError::Unsafe {
        name: name.into(),
        reason,
    }
}

/// `512 MiB`, `4 KiB` or `1000 bytes`.
fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// What the archive says an entry is, for the types that are refused.
fn refused_type(ty: EntryType) -> String {
    let what = match ty {
        EntryType::Char => "a character device",
        EntryType::Block => "a block device",
        EntryType::Fifo => "a fifo",
        EntryType::GNUSparse => "a GNU sparse file",
        EntryType::XHeader => "a misplaced PAX header",
        EntryType::GNULongName | EntryType::GNULongLink => "a misplaced GNU long-name header",
        _ => match ty.as_byte() {
            b'V' => "a GNU volume label",
            b'M' => "a GNU multi-volume continuation",
            b'N' => "an old GNU long-name entry",
            b'D' => "a GNU dump directory",
            _ => "an entry of an unknown type",
        },
    };
    let byte = [ty.as_byte()];
    format!("{what} (type '{}') cannot be unpacked", byte.escape_ascii())
}

/// What each entry becomes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plan {
    File,
    Dir,
    Symlink,
    Hardlink,
}

struct Unpacker {
    tree: Tree,
    limits: UnpackLimits,
    meter: Rc<Meter>,
    /// Entries so far, implied directories included.
    entries: u64,
    /// Bytes of the names recorded so far.
    name_bytes: u64,
    /// Bytes counted against `max_total_bytes`: file data, hardlinked sizes,
    /// and any data other entries carry.
    charged: u64,
    summary: UnpackSummary,
    /// File data on its way from the archive to its file: one buffer for
    /// the whole bundle (a fresh zeroed 64 KiB per file was a memset each).
    buf: Vec<u8>,
}

impl Unpacker {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let shown = display(&raw);
        let refuse = |reason: String| UnpackError::Unsafe {
            name: shown.clone(),
            reason,
        };
        let ty = entry.header().entry_type();
        let size = entry.size();

        self.count(1, 0).map_err(&refuse)?;
        let plan = match ty {
            EntryType::Regular | EntryType::Continuous => Plan::File,
            EntryType::Directory => Plan::Dir,
            EntryType::Symlink => Plan::Symlink,
            EntryType::Link => Plan::Hardlink,
            // Metadata for the archive as a whole (`git archive` writes one).
            EntryType::XGlobalHeader => return self.global_header(entry, &shown),
            other => return Err(refuse(refused_type(other))),
        };
        check_pax(&mut entry, size).map_err(&refuse)?;

        let key = names::normalise(&raw).map_err(&refuse)?;
        if key.is_empty() {
            if plan != Plan::Dir {
                return Err(refuse("the entry has no name".into()));
            }
            // `./` itself: dest is already there.
            return self.drain(&mut entry, size, &shown);
        }
        if plan != Plan::Dir && raw.last() == Some(&b'/') {
            return Err(refuse("only a directory's name may end in /".into()));
        }
        if plan == Plan::File && size > self.limits.max_file_bytes {
            return Err(refuse(format!(
                "the file exceeds the {} per-file limit",
                human(self.limits.max_file_bytes)
            )));
        }
        self.charge(size).map_err(&refuse)?;
        // Before anything is created: the directories the name implies, and
        // the name itself unless it only makes an implied directory explicit
        // (then it creates nothing, and was counted when implied).
        let (implied, implied_bytes) = self.tree.missing_ancestors(&key);
        if plan == Plan::Dir && self.tree.kind(&key) == Some(Kind::ImplicitDir) {
            self.entries -= 1;
        } else {
            self.count(0, key.len() as u64).map_err(&refuse)?;
        }
        self.count(implied, implied_bytes).map_err(&refuse)?;

        match plan {
            Plan::Dir => {
                self.tree.check_new(&key, true).map_err(&refuse)?;
                self.drain(&mut entry, size, &shown)?;
                self.tree.add_dir(&key)?;
            }
            Plan::File => {
                self.tree.check_new(&key, false).map_err(&refuse)?;
                let mode = entry
                    .header()
                    .mode()
                    .map_err(|_| refuse("the mode field is unreadable".into()))?;
                let mut file = self.tree.add_file(&key, mode & 0o111 != 0, size)?;
                self.write_data(&mut entry, &mut file, size, &shown)?;
                self.summary.files += 1;
                self.summary.bytes += size;
            }
            Plan::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("the symlink target is empty".into()))?
                    .into_owned();
                names::symlink_target(&key, &target).map_err(&refuse)?;
                self.tree.check_new(&key, false).map_err(&refuse)?;
                self.drain(&mut entry, size, &shown)?;
                self.tree.add_symlink(&key, &target)?;
            }
            Plan::Hardlink => {
                let raw_target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("the hardlink has no target".into()))?
                    .into_owned();
                let not_a_file = || {
                    refuse(format!(
                        "the hardlink target {} is not an earlier regular file of the bundle",
                        display(&raw_target)
                    ))
                };
                let target = names::normalise(&raw_target).map_err(|_| not_a_file())?;
                let Some(Kind::File(linked)) = self.tree.kind(&target) else {
                    return Err(not_a_file());
                };
                self.tree.check_new(&key, false).map_err(&refuse)?;
                self.charge(linked).map_err(&refuse)?;
                self.drain(&mut entry, size, &shown)?;
                self.tree.add_hardlink(&key, &target, linked)?;
                self.summary.files += 1;
                self.summary.bytes += linked;
            }
        }
        Ok(())
    }

    /// Counts `entries` more entries and `name_bytes` more bytes of names.
    fn count(&mut self, entries: u64, name_bytes: u64) -> Result<(), String> {
        self.entries += entries;
        if self.entries > self.limits.max_entries {
            return Err(format!(
                "the bundle has more than {} entries (too many entries; the directories its names imply count too)",
                self.limits.max_entries
            ));
        }
        self.name_bytes += name_bytes;
        if self.name_bytes > self.limits.max_name_bytes {
            return Err(format!(
                "the bundle's names exceed {} in total (the full names of its entries and of the directories they imply)",
                human(self.limits.max_name_bytes)
            ));
        }
        Ok(())
    }

    /// Counts `bytes` against the bundle's total.
    fn charge(&mut self, bytes: u64) -> Result<(), String> {
        match self.charged.checked_add(bytes) {
            Some(total) if total <= self.limits.max_total_bytes => {
                self.charged = total;
                Ok(())
            }
            _ => Err(format!(
                "the bundle exceeds the {} unpacked limit",
                human(self.limits.max_total_bytes)
            )),
        }
    }

    /// A PAX global header: skipped, unless it tries to change how later
    /// entries are read (other tars would apply it, the `tar` crate does not).
    fn global_header<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let refuse = |reason: String| UnpackError::Unsafe {
            name: shown.into(),
            reason,
        };
        if entry.size() > HEADER_WINDOW {
            return Err(refuse(format!(
                "a global PAX header larger than {} is not accepted",
                human(HEADER_WINDOW)
            )));
        }
        self.meter.open_window(entry.size());
        let records = match entry.pax_extensions() {
            Ok(Some(records)) => records,
            Ok(None) => return Ok(()),
            Err(_) => return Err(read_failure(&self.meter, shown)),
        };
        for record in records {
            let record = record.map_err(|_| refuse("the global PAX header is malformed".into()))?;
            let key = record.key_bytes();
            if matches!(key, b"path" | b"linkpath" | b"size") || key.starts_with(b"GNU.sparse.") {
                return Err(refuse(format!(
                    "a global PAX header that sets {} is not accepted",
                    display(key)
                )));
            }
        }
        Ok(())
    }

    /// Reads and drops an entry's data (directories and links normally have none).
    fn drain<R: Read>(&self, entry: &mut R, size: u64, shown: &str) -> Result<(), UnpackError> {
        self.meter.open_window(size);
        match io::copy(entry, &mut io::sink()) {
            Ok(n) if n == size => Ok(()),
            Ok(_) => Err(UnpackError::Bogus),
            Err(_) => Err(read_failure(&self.meter, shown)),
        }
    }

    /// Streams an entry's data into its new file.
    fn write_data<R: Read>(
        &mut self,
        entry: &mut R,
        file: &mut File,
        size: u64,
        shown: &str,
    ) -> Result<(), UnpackError> {
        self.meter.open_window(size);
        if self.buf.is_empty() {
            self.buf = vec![0u8; WRITE_BUFFER];
        }
        let buf = &mut self.buf;
        let mut written = 0u64;
        loop {
            let n = match entry.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(read_failure(&self.meter, shown)),
            };
            file.write_all(&buf[..n])?;
            written += n as u64;
        }
        if written != size {
            // The stream ended inside the entry.
            return Err(UnpackError::Bogus);
        }
        Ok(())
    }
}

/// Refuses PAX records that the `tar` crate would ignore or read loosely.
fn check_pax<R: Read>(entry: &mut tar::Entry<'_, R>, size: u64) -> Result<(), String> {
    let Ok(Some(records)) = entry.pax_extensions() else {
        return Ok(());
    };
    for record in records {
        let record = record.map_err(|_| "the PAX header is malformed".to_string())?;
        let key = record.key_bytes();
        if key.starts_with(b"GNU.sparse.") {
            return Err("a GNU sparse file (PAX format) cannot be unpacked".into());
        }
        if key == b"size" {
            let value = record.value_bytes();
            let parsed = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            if parsed != Some(size) {
                return Err(format!(
                    "the PAX size {} is not a valid size",
                    display(value)
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(512 << 20), "512 MiB");
        assert_eq!(human(8 << 10), "8 KiB");
        assert_eq!(human(1000), "1000 bytes");
        assert_eq!(human(0), "0 bytes");
    }

    #[test]
    fn refused_types_are_named() {
        assert!(refused_type(EntryType::Fifo).contains("fifo (type '6')"));
        assert!(refused_type(EntryType::new(b'V')).contains("volume"));
        assert!(refused_type(EntryType::new(0xff)).contains("type '\\xff'"));
    }
}
