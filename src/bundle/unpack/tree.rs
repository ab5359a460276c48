//! The extraction directory and the record of what the archive put in it.
//!
//! Every write is relative to a directory descriptor. Parents are opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, and the last component is
//! created with `O_CREAT | O_EXCL | O_NOFOLLOW`, `mkdirat`, `symlinkat` or
//! `linkat` (which never follows): even if the lexical checks were wrong,
//! the kernel would refuse to write through a symlink or outside `dest`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use super::names::{ancestors, display, split_last};

/// What a name of the bundle is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory made for a deeper name, with no entry of its own (yet).
    ImplicitDir,
    Dir,
    /// A regular file (or a hardlink to one) and its size.
    File(u64),
    Symlink,
}

pub struct Tree {
    root: OwnedFd,
    owner: Option<(Uid, Gid)>,
    kinds: HashMap<Vec<u8>, Kind>,
    /// The directory the last entry went into, kept open: archives list a
    /// directory's files together, and each would otherwise cost an
    /// `openat2` and a `close`. Directories of the bundle are never removed
    /// or replaced while it unpacks, so the descriptor stays the directory
    /// its name was resolved to (beneath the root, through no symlink).
    parent: Option<(Vec<u8>, OwnedFd)>,
    /// The process's umask, when known: modes it leaves whole need no `fchmod`.
    umask: Option<u32>,
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// The directory [`Tree::parent_of`] just opened or reused.
fn cached(parent: &Option<(Vec<u8>, OwnedFd)>) -> BorrowedFd<'_> {
    parent
        .as_ref()
        .map(|(_, fd)| fd.as_fd())
        .expect("parent_of opened it")
}

/// The process's umask, from `/proc/self/status` (reading it with umask(2)
/// would change it for every thread a moment). Read once: servo never
/// changes it, and formatting that file cost each unpack ~20 us.
fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

impl Tree {
    /// Opens `dest`, which must be an empty directory.
    pub fn open(dest: &Path, owner: Option<(u32, u32)>) -> io::Result<Tree> {
        if std::fs::read_dir(dest)?.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is not empty", dest.display()),
            ));
        }
        let root = nix::fcntl::open(
            dest,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Tree {
            root,
            owner: owner.map(|(u, g)| (Uid::from_raw(u), Gid::from_raw(g))),
            kinds: HashMap::new(),
            parent: None,
            umask: umask(),
        })
    }

    pub fn kind(&self, key: &[u8]) -> Option<Kind> {
        self.kinds.get(key).copied()
    }

    /// Checks that `key` can be created: every ancestor is (or will be) a real
    /// directory, and no earlier entry has the name.
    pub fn check_new(&self, key: &[u8], is_dir: bool) -> Result<(), String> {
        for up in ancestors(key) {
            match self.kind(up) {
                Some(Kind::Symlink) => {
                    return Err(format!(
                        "it would be written through the symlink {}",
                        display(up)
                    ))
                }
                Some(Kind::File(_)) => {
                    return Err(format!("{} is a file, not a directory", display(up)))
                }
                _ => {}
            }
        }
        match self.kind(key) {
            None => Ok(()),
            Some(Kind::ImplicitDir) if is_dir => Ok(()),
            Some(Kind::ImplicitDir) => Err("an earlier entry is inside it, as a directory".into()),
            Some(_) => Err("an earlier entry has the same name".into()),
        }
    }

    /// How many directories creating `key` would add (its ancestors not
    /// recorded yet), and the bytes of their names.
    pub fn missing_ancestors(&self, key: &[u8]) -> (u64, u64) {
        ancestors(key)
            .filter(|up| self.kind(up).is_none())
            .fold((0, 0), |(n, bytes), up| (n + 1, bytes + up.len() as u64))
    }

    /// Creates the missing ancestors of `key` and opens its parent directory
    /// (or reuses it, when the last entry went there too).
    fn parent_of(&mut self, key: &[u8]) -> io::Result<()> {
        for up in ancestors(key) {
            if self.kind(up).is_none() {
                self.mkdir(up)?;
                self.kinds.insert(up.to_vec(), Kind::ImplicitDir);
            }
        }
        let dir = split_last(key).0;
        if self
            .parent
            .as_ref()
            .is_none_or(|(k, _)| k.as_slice() != dir)
        {
            let fd = self.open_dir(dir)?;
            self.parent = Some((dir.to_vec(), fd));
        }
        Ok(())
    }

    /// Opens a directory of the bundle (`O_PATH`), refusing symlinks and escapes.
    fn open_dir(&self, key: &[u8]) -> io::Result<OwnedFd> {
        if key.is_empty() {
            return self.root.try_clone();
        }
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        Ok(nix::fcntl::openat2(self.root.as_fd(), os(key), how)?)
    }

    /// Gives a new file or directory its mode and owner. It was created with
    /// `mode`: only a umask that took bits from it makes an `fchmod` needed.
    fn settle(&self, fd: impl AsFd, mode: u32) -> io::Result<()> {
        if self.umask.is_none_or(|umask| mode & umask != 0) {
            nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(mode))?;
        }
        if let Some((uid, gid)) = self.owner {
            nix::unistd::fchown(fd.as_fd(), Some(uid), Some(gid))?;
        }
        Ok(())
    }

    fn mkdir(&self, key: &[u8]) -> io::Result<()> {
        let parent = self.open_dir(split_last(key).0)?;
        let name = os(split_last(key).1);
        nix::sys::stat::mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o755))?;
        let dir = nix::fcntl::openat(
            parent.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        self.settle(dir, 0o755)
    }

    /// A directory entry (its ancestors are created too).
    pub fn add_dir(&mut self, key: &[u8]) -> io::Result<()> {
        if self.kind(key) == Some(Kind::ImplicitDir) {
            // Already made, with the only mode a directory gets.
            self.kinds.insert(key.to_vec(), Kind::Dir);
            return Ok(());
        }
        self.parent_of(key)?;
        self.mkdir(key)?;
        self.kinds.insert(key.to_vec(), Kind::Dir);
        Ok(())
    }

    /// Creates an empty regular file, 0755 if `executable` else 0644; the
    /// caller writes its `size` bytes.
    pub fn add_file(&mut self, key: &[u8], executable: bool, size: u64) -> io::Result<File> {
        let mode = if executable { 0o755 } else { 0o644 };
        self.parent_of(key)?;
        let parent = cached(&self.parent);
        let fd = nix::fcntl::openat(
            parent,
            os(split_last(key).1),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )?;
        // The name is taken now: record it before anything can fail.
        self.kinds.insert(key.to_vec(), Kind::File(size));
        self.settle(&fd, mode)?;
        Ok(File::from(fd))
    }

    /// A symlink whose target the caller has checked.
    pub fn add_symlink(&mut self, key: &[u8], target: &[u8]) -> io::Result<()> {
        self.parent_of(key)?;
        let parent = cached(&self.parent);
        let name = os(split_last(key).1);
        nix::unistd::symlinkat(os(target), parent, name)?;
        self.kinds.insert(key.to_vec(), Kind::Symlink);
        if let Some((uid, gid)) = self.owner {
            nix::unistd::fchownat(
                parent,
                name,
                Some(uid),
                Some(gid),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        Ok(())
    }

    /// A hardlink to `target`, an earlier regular file of the bundle.
    pub fn add_hardlink(&mut self, key: &[u8], target: &[u8], size: u64) -> io::Result<()> {
        let (target_dir, target_name) = split_last(target);
        let target_parent = self.open_dir(target_dir)?;
        self.parent_of(key)?;
        let parent = cached(&self.parent);
        // No AT_SYMLINK_FOLLOW: a symlink would be linked, never followed.
        nix::unistd::linkat(
            target_parent.as_fd(),
            os(target_name),
            parent,
            os(split_last(key).1),
            nix::fcntl::AtFlags::empty(),
        )?;
        self.kinds.insert(key.to_vec(), Kind::File(size));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel checks hold even when the record is wrong, e.g. if a
    /// directory were swapped for a symlink behind the unpacker's back.
    #[test]
    fn the_kernel_refuses_symlinks_the_record_missed() {
        let top = tempfile::tempdir().unwrap();
        let dest = top.path().join("dest");
        let outside = top.path().join("outside");
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir(&outside).unwrap();
        let mut tree = Tree::open(&dest, None).unwrap();

        tree.add_dir(b"d").unwrap();
        std::fs::remove_dir(dest.join("d")).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("d")).unwrap();
        // The parent itself: O_NOFOLLOW | O_DIRECTORY.
        let err = tree.add_file(b"d/x", false, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR), "{err}");
        assert!(tree.add_dir(b"d/sub").is_err());
        assert!(tree.add_symlink(b"d/l", b"x").is_err());
        // A grandparent: RESOLVE_NO_SYMLINKS.
        tree.add_dir(b"a/b").unwrap();
        std::fs::rename(dest.join("a"), outside.join("a")).unwrap();
        std::os::unix::fs::symlink(outside.join("a"), dest.join("a")).unwrap();
        let err = tree.add_file(b"a/b/x", false, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
        assert!(!outside.join("a/b/x").exists());

        // A last component that is a symlink is never opened.
        std::os::unix::fs::symlink(outside.join("f"), dest.join("f")).unwrap();
        let err = tree.add_file(b"f", false, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");

        // Nor is a hardlink's target followed: this links the symlink itself.
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), dest.join("s")).unwrap();
        tree.add_hardlink(b"h", b"s", 0).unwrap();
        assert!(std::fs::symlink_metadata(dest.join("h"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            2,
            "a/ and secret"
        );
    }

    #[test]
    fn dest_must_be_empty() {
        let top = tempfile::tempdir().unwrap();
        std::fs::write(top.path().join("x"), "").unwrap();
        assert!(Tree::open(top.path(), None).is_err());
    }
}
