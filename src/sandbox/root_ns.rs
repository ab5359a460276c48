//! Prepared roots kept as mount namespaces (SPEC §9: a sandbox must cost
//! next to nothing to start).
//!
//! A root namespace is a mount namespace whose root *is* a prepared
//! static root (`plan::static_root`, `rootfs::build_static`): its maker pivoted into it and
//! detached the host's tree, so it holds a dozen mounts, not the host's
//! hundred or more. A job's init joins it with `setns`, makes its private
//! copy with `unshare(CLONE_NEWNS)` and mounts only its own /work, /tmp,
//! /dev/shm, /proc and /run/servo (`rootfs::enter_root_ns`): no copy of the
//! host's mount table, no `pivot_root`, no old root to detach and no large
//! namespace to tear down when the job ends.
//!
//! The launcher makes one at start from the server's prepared root;
//! `servo sandbox` keeps one across calls (`pinned`), pinned by a bind mount
//! of its nsfs file at `STATE/sandbox/root.mnt` and made again when what it
//! was built from changes. Whoever holds one sets it with `set_current`
//! before forking the inits, which inherit the descriptor.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::ForkResult;

/// The root namespace inits of this process use; -1: none (an init then
/// builds its root in a copy of the host's namespace).
static CURRENT: AtomicI32 = AtomicI32::new(-1);

/// Makes `ns` the root namespace of every init this process forks from now on
/// (the descriptor is kept for the process's life).
pub fn set_current(ns: OwnedFd) {
    let old = CURRENT.swap(ns.into_raw_fd(), Ordering::Relaxed);
    if old >= 0 {
        // SAFETY: `old` came from `into_raw_fd` above and nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(old) });
    }
}

/// Takes the root namespace set by `set_current`, if any, in an init: the
/// init closes it once it has joined it, and so keeps nothing that reaches
/// outside its sandbox.
pub fn take_current() -> Option<OwnedFd> {
    let fd = CURRENT.swap(-1, Ordering::Relaxed);
    // SAFETY: as in `set_current`; the swap leaves no other owner.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes a root namespace: a child process makes a mount namespace,
/// runs `prepare` in it (which mounts the root and returns its path), pivots
/// into that root and detaches the rest; the namespace's descriptor is
/// returned, and the child exits. Single-threaded callers only (the child
/// allocates): `servo sandbox` and the launcher.
pub fn make(prepare: impl FnOnce() -> Result<PathBuf, String>) -> Result<OwnedFd, String> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot create a pipe: {e}"))
    };
    // child -> parent: "" when the namespace is ready, or why not;
    // parent -> child: closed when the parent holds the namespace.
    let (ready_r, ready_w) = pipe()?;
    let (done_r, done_w) = pipe()?;
    // SAFETY: single-threaded callers only (see above): the launcher and
    // `servo sandbox`.
    match unsafe { super::fork::fork() }.map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Child => {
            drop(ready_r);
            drop(done_w);
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            let made = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("cannot create a mount namespace: {e}"))
                .and_then(|()| super::rootfs::make_private())
                .and_then(|()| prepare())
                .and_then(|root| super::rootfs::enter(&root));
            let why = made.err().unwrap_or_default();
            let _ = std::fs::File::from(ready_w).write_all(why.as_bytes());
            let _ = std::fs::File::from(done_r).read(&mut [0u8; 1]);
            // SAFETY: _exit ends the child without running anything.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(done_r);
            let mut why = String::new();
            let _ = std::fs::File::from(ready_r).read_to_string(&mut why);
            let ns = if why.is_empty() {
                std::fs::File::open(format!("/proc/{child}/ns/mnt"))
                    .map(OwnedFd::from)
                    .map_err(|e| format!("cannot open the prepared root's namespace: {e}"))
            } else {
                Err(why)
            };
            drop(done_w);
            let _ = nix::sys::wait::waitpid(child, None);
            ns
        }
    }
}

/// `servo sandbox`'s root namespace, kept across calls in `dir` (the state dir's
/// `sandbox/`): `root.mnt` pins it, `root.key` says what it was built from.
/// If `key` differs (another uid, `--ro-bind`, servo binary or host /etc),
/// or nothing is pinned (first call, reboot, a server's start-up sweep), it
/// is made again with `prepare`. Concurrent calls take turns on `root.lock`.
pub fn pinned(
    dir: &Path,
    key: &str,
    prepare: impl FnOnce() -> Result<PathBuf, String>,
) -> Result<OwnedFd, String> {
    let io = |what: &str, path: &Path| {
        let what = format!("{what} {}", path.display());
        move |e: std::io::Error| format!("{what}: {e}")
    };
    // No file here is opened through a symlink: root must not be led to
    // write or mount over some other file.
    let lock_path = dir.join("root.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)
        .map_err(io("cannot open", &lock_path))?;
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock {}: {e}", lock_path.display()))
        .and_then(|_held| {
            let pin = dir.join("root.mnt");
            let key_path = dir.join("root.key");
            if read_no_follow(&key_path).is_some_and(|k| k == key) {
                if let Some(ns) = open_pinned(&pin) {
                    return Ok(ns);
                }
            }
            let _ = std::fs::remove_file(&key_path);
            let _ = umount2(&pin, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&pin);
            // A new empty file, mounted on through its descriptor.
            let target = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&pin)
                .map_err(io("cannot create", &pin))?;
            let ns = make(prepare)?;
            mount(
                Some(format!("/proc/self/fd/{}", ns.as_raw_fd()).as_str()),
                format!("/proc/self/fd/{}", target.as_raw_fd()).as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("cannot pin the prepared root at {}: {e}", pin.display()))?;
            // Written aside and renamed: rename replaces a symlink, never
            // follows it.
            let fresh = dir.join("root.key.new");
            let _ = std::fs::remove_file(&fresh);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&fresh)
                .and_then(|mut f| f.write_all(key.as_bytes()))
                .and_then(|()| std::fs::rename(&fresh, &key_path))
                .map_err(io("cannot write", &key_path))?;
            Ok(ns)
        })
}

/// A small file's text, unless it is a symlink (or unreadable).
fn read_no_follow(path: &Path) -> Option<String> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The namespace pinned at `pin`, if a mount namespace is pinned there.
fn open_pinned(pin: &Path) -> Option<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(pin)
        .ok()?;
    let fs = nix::sys::statfs::fstatfs(&file).ok()?;
    if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return None;
    }
    // SAFETY: ioctl(NS_GET_NSTYPE) on a descriptor we hold; no memory passed.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    (kind == libc::CLONE_NEWNS).then(|| OwnedFd::from(file))
}

/// `NS_GET_NSTYPE` of linux/nsfs.h: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;
