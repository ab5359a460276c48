//! The job's root file system (SPEC §5.2). Its static part (`build_static`)
//! is prepared once on a read-only tmpfs and kept as a root namespace
//! (`root_ns.rs`), whose private copy an init enters (`enter_root_ns`);
//! without one, the init builds it in its copy of the host's mount
//! namespace and enters it with `pivot_root` (`build`). Either way the job
//! then gets its own /work, /tmp, /dev/shm, /proc and /run/servo.
//!
//! Layout: `/usr /bin /lib* /sbin` read-only binds of the host's (or the same
//! symlinks on a merged-/usr system); `/etc` an allowlist written or bound
//! file by file; `/work` the bundle (read-write); `/tmp` a size-limited tmpfs;
//! `/proc` for the job's PID namespace only; `/dev` with the five safe device
//! nodes; `/run/servo` the relay directory; `/opt/servo/python` the package;
//! the `--ro-bind` paths. The root itself is read-only once built.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::spec::HelperSpec;

/// Where the servo Python package directory (PYTHONPATH) appears inside the sandbox.
pub const PYTHON_PKG_INSIDE: &str = "/opt/servo/python";
/// The in-sandbox `servo` Python package (SPEC §6.2), shipped inside the binary
/// and written read-only into every sandbox's root.
pub const PYTHON_PACKAGE: &str = include_str!("../../python/servo/__init__.py");

/// Read-only directories of the host's system, bound as they are.
const SYSTEM_DIRS: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// `/etc` entries bound read-only from the host when present: what the
/// interpreter and ordinary tools need, nothing that holds a secret.
const ETC_ALLOWED: [&str; 9] = [
    "ld.so.cache",
    "localtime",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates.conf",
    "alternatives",
    "mime.types",
    "protocols",
    "services",
];

fn err(what: impl std::fmt::Display) -> impl FnOnce(nix::errno::Errno) -> String {
    let what = what.to_string();
    move |e| format!("{what}: {e}")
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> String {
    let what = what.to_string();
    move |e| format!("{what}: {e}")
}

fn flags_ro() -> MsFlags {
    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV
}

/// Binds `src` on `dst` (created as a file or directory to match), then
/// applies `flags` (a bind's flags can only be set by a remount).
fn bind(src: &Path, dst: &Path, flags: MsFlags) -> Result<(), String> {
    let meta = std::fs::metadata(src).map_err(io_err(format!("cannot bind {}", src.display())))?;
    if meta.is_dir() {
        std::fs::create_dir_all(dst).map_err(io_err(format!("cannot create {}", dst.display())))?;
    } else {
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_err(format!("cannot create {}", parent.display())))?;
        }
        std::fs::write(dst, b"").map_err(io_err(format!("cannot create {}", dst.display())))?;
    }
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(err(format!("cannot bind {}", src.display())))?;
    remount_bind(dst, flags)
}

/// Applies `flags` to the bind mount at `dst` (only a remount can).
fn remount_bind(dst: &Path, flags: MsFlags) -> Result<(), String> {
    mount(
        None::<&str>,
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        None::<&str>,
    )
    .map_err(err(format!("cannot remount {}", dst.display())))
}

fn tmpfs(dst: &Path, options: &str, flags: MsFlags) -> Result<(), String> {
    std::fs::create_dir_all(dst).map_err(io_err(format!("cannot create {}", dst.display())))?;
    mount(Some("tmpfs"), dst, Some("tmpfs"), flags, Some(options))
        .map_err(err(format!("cannot mount a tmpfs on {}", dst.display())))
}

/// `inside` as a path below `root` (it is absolute and has no `..`: checked
/// when the configuration was read).
fn under(root: &Path, inside: &Path) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in inside.components() {
        if let Component::Normal(n) = c {
            p.push(n);
        }
    }
    p
}

/// Makes every mount of the calling process's (new) namespace private:
/// nothing mounted from now on propagates back to the host.
pub(super) fn make_private() -> Result<(), String> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("cannot make the mounts private"))
}

/// The job's root without a root namespace, in the init's own copy of
/// the host's mount namespace: the server's prepared root (`spec.prepared_root`)
/// or one built here, then the job's mounts, then `pivot_root`.
pub fn build(spec: &HelperSpec) -> Result<(), String> {
    make_private()?;
    let root = match &spec.prepared_root {
        // The server's prepared root: this namespace has its own copy of it.
        Some(prepared) => prepared.as_path(),
        None => {
            let users = [(spec.uid, spec.gid)];
            build_static(&spec.root, &users, &spec.ro_binds, spec.rootless.is_some())?;
            spec.root.as_path()
        }
    };
    let work = Source::Path(&spec.workdir);
    let relay = spec.relay_dir.as_deref().map(Source::Path);
    mount_job(root, work, relay, spec)?;
    enter(root)
}

/// The job's root from a root namespace (`root_ns.rs`): the host
/// directories it needs (/work, /run/servo) are cloned while the host's tree
/// is still in view, then the init joins the root namespace, makes its private
/// copy and mounts its own parts. Already at `/`: nothing to pivot.
pub fn enter_root_ns(ns: OwnedFd, spec: &HelperSpec) -> Result<(), String> {
    let work = Source::Tree(clone_tree(&spec.workdir)?);
    let relay = match &spec.relay_dir {
        Some(dir) => Some(Source::Tree(clone_tree(dir)?)),
        None => None,
    };
    nix::sched::setns(&ns, CloneFlags::CLONE_NEWNS)
        .map_err(err("cannot join the prepared root's namespace"))?;
    // Joined: the init keeps nothing that reaches outside its sandbox.
    drop(ns);
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(err("cannot create the mount namespace"))?;
    nix::unistd::chdir("/").map_err(err("cannot enter /"))?;
    mount_job(Path::new("/"), work, relay, spec)
}

/// A detached copy of the mount at `dir` (`open_tree(OPEN_TREE_CLONE)`),
/// to attach in another mount namespace.
fn clone_tree(dir: &Path) -> Result<OwnedFd, String> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let path = c_path(dir)?;
    // SAFETY: a NUL-terminated path; the result is a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(format!(
            "cannot bind {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `path` for a raw syscall.
fn c_path(path: &Path) -> Result<std::ffi::CString, String> {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("NUL byte in {}", path.display()))
}

/// Where a job's host directory comes from.
enum Source<'a> {
    /// A path in the current mount namespace: bound.
    Path(&'a Path),
    /// A detached mount (`clone_tree`): attached.
    Tree(OwnedFd),
}

/// Mounts `source` on `dst` with `flags` (a bind's flags can only be set by
/// a remount).
fn attach(source: Source, dst: &Path, flags: MsFlags) -> Result<(), String> {
    let tree = match source {
        Source::Path(src) => return bind(src, dst, flags),
        Source::Tree(tree) => tree,
    };
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let to = c_path(dst)?;
    // SAFETY: a descriptor we own, an empty and a NUL-terminated path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(format!(
            "cannot mount {}: {}",
            dst.display(),
            std::io::Error::last_os_error()
        ));
    }
    remount_bind(dst, flags)
}

/// Builds the parts of a root that are the same for every job of a server,
/// read-only: system directories, /etc (naming every uid in `users`), /dev,
/// the servo package, `--ro-bind` paths, and the mount points of the job's
/// own mounts. The server builds it once (`PreparedRoot`); `servo sandbox` and
/// rootless servers build it in each job's namespace.
pub fn build_static(
    root: &Path,
    users: &[(u32, u32)],
    ro_binds: &[(PathBuf, PathBuf)],
    rootless: bool,
) -> Result<(), String> {
    // /etc's small files, and a passwd/group line per uid.
    let size = (2 << 20) + 128 * users.len();
    tmpfs(
        root,
        &format!("size={size},nr_inodes=4096,mode=0755"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    // Built in servo's own namespace (the server's PreparedRoot), nothing of it
    // may propagate to other namespaces.
    mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("cannot make the root private"))?;
    for dir in SYSTEM_DIRS {
        let host = Path::new("/").join(dir);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&host)
                    .map_err(io_err(format!("cannot read {}", host.display())))?;
                symlink(&target, root.join(dir)).map_err(io_err(format!("cannot link /{dir}")))?;
            }
            Ok(m) if m.is_dir() => bind(&host, &root.join(dir), flags_ro())?,
            _ => {}
        }
    }
    build_etc(users, root)?;
    build_dev(root, rootless)?;
    for dir in ["work", "tmp", "proc", "run/servo"] {
        std::fs::create_dir_all(root.join(dir)).map_err(io_err(format!("cannot create /{dir}")))?;
    }
    // The package is written, not bound: a bind would show its host path in
    // /proc/self/mountinfo, and the root is made read-only below.
    let pkg = under(root, Path::new(PYTHON_PKG_INSIDE)).join("servo");
    std::fs::create_dir_all(&pkg).map_err(io_err("cannot create the package directory"))?;
    std::fs::write(pkg.join("__init__.py"), PYTHON_PACKAGE)
        .map_err(io_err("cannot write the servo package"))?;
    for (host, inside) in ro_binds {
        bind(host, &under(root, inside), flags_ro())?;
    }
    // The root's own tmpfs holds only mount points and /etc: freeze it.
    mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_REMOUNT | flags_ro(),
        None::<&str>,
    )
    .map_err(err("cannot make the root read-only"))
}

/// What `build_static` would build for `users` and `ro_binds` from this
/// host, as a string: equal strings, same root. It names every host file
/// and directory the root copies or binds (device and inode; size and mtime
/// of copies) and this servo binary (which writes the package and decides
/// the layout). A stat per entry: far cheaper than building.
pub fn static_key(users: &[(u32, u32)], ro_binds: &[(PathBuf, PathBuf)]) -> String {
    use std::fmt::Write;
    use std::os::unix::fs::MetadataExt;
    let mut key = format!("servo {} users {users:?}\n", env!("CARGO_PKG_VERSION"));
    let add = |key: &mut String, what: &Path, meta: std::io::Result<std::fs::Metadata>| {
        let _ = match meta {
            Ok(m) => writeln!(
                key,
                "{} {} {} {} {}.{}",
                what.display(),
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec()
            ),
            Err(e) => writeln!(key, "{} {:?}", what.display(), e.kind()),
        };
    };
    let exe = Path::new("/proc/self/exe");
    add(&mut key, exe, std::fs::metadata(exe));
    for dir in SYSTEM_DIRS {
        let host = Path::new("/").join(dir);
        add(&mut key, &host, std::fs::symlink_metadata(&host));
    }
    for name in ETC_ALLOWED {
        let host = Path::new("/etc").join(name);
        add(&mut key, &host, std::fs::metadata(&host));
    }
    // The /etc/python3* directories are bound (a live view); which of them
    // exist changes /etc's own mtime: no listing of /etc on every call.
    add(&mut key, Path::new("/etc"), std::fs::metadata("/etc"));
    for (host, inside) in ro_binds {
        add(&mut key, host, std::fs::metadata(host));
        let _ = writeln!(key, " at {}", inside.display());
    }
    // Device nodes by number only: writing to one may touch its mtime.
    for node in ["null", "zero", "full", "random", "urandom"] {
        let rdev = std::fs::metadata(Path::new("/dev").join(node)).map(|m| m.rdev());
        let _ = writeln!(key, "/dev/{node} {rdev:?}");
    }
    key
}

/// The job's own mounts on a static root: /work, /tmp, /dev/shm, /proc,
/// /run/servo.
fn mount_job(
    root: &Path,
    work: Source,
    relay: Option<Source>,
    spec: &HelperSpec,
) -> Result<(), String> {
    attach(
        work,
        &root.join("work"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    let tmp_opts = format!("size={},mode=1777", spec.limits.tmp_bytes());
    tmpfs(
        &root.join("tmp"),
        &tmp_opts,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    tmpfs(
        &root.join("dev/shm"),
        "size=16m,mode=1777",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    )?;
    mount_proc(&root.join("proc"))?;
    if let Some(relay) = relay {
        attach(relay, &root.join("run/servo"), flags_ro())?;
    }
    Ok(())
}

fn build_etc(users: &[(u32, u32)], root: &Path) -> Result<(), String> {
    let etc = root.join("etc");
    std::fs::create_dir(&etc).map_err(io_err("cannot create /etc"))?;
    let passwd_users: String = users
        .iter()
        .map(|(uid, gid)| format!("servo:x:{uid}:{gid}:servo:/work:/usr/sbin/nologin\n"))
        .collect();
    let group_users: String = users
        .iter()
        .map(|(_, gid)| format!("servo:x:{gid}:\n"))
        .collect();
    let files = [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\n{passwd_users}\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("root:x:0:\n{group_users}nogroup:x:65534:\n"),
        ),
        (
            "hosts",
            "127.0.0.1\tlocalhost servo\n::1\tlocalhost ip6-localhost ip6-loopback\n".into(),
        ),
        ("hostname", "servo\n".into()),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files\nservices: files\nprotocols: files\n"
                .into(),
        ),
    ];
    for (name, text) in files {
        std::fs::write(etc.join(name), text)
            .map_err(io_err(format!("cannot write /etc/{name}")))?;
    }
    for name in ETC_ALLOWED {
        let host = Path::new("/etc").join(name);
        if host.is_file() {
            // Small files are copied (the root is made read-only below):
            // cheaper than a bind and its read-only remount.
            let dst = etc.join(name);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io_err(format!("cannot create {}", parent.display())))?;
            }
            std::fs::copy(&host, &dst).map_err(io_err(format!("cannot copy /etc/{name}")))?;
        } else if host.is_dir() {
            bind(&host, &etc.join(name), flags_ro())?;
        }
    }
    // Debian's Python reads /etc/python3.X (sitecustomize); nothing secret there.
    if let Ok(entries) = std::fs::read_dir("/etc") {
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with("python3") && e.path().is_dir() {
                bind(&e.path(), &etc.join(&name), flags_ro())?;
            }
        }
    }
    Ok(())
}

fn build_dev(root: &Path, rootless: bool) -> Result<(), String> {
    let dev = root.join("dev");
    tmpfs(
        &dev,
        "size=64k,nr_inodes=64,mode=0755",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
    )?;
    for node in ["null", "zero", "full", "random", "urandom"] {
        let host = Path::new("/dev").join(node);
        if rootless {
            // No device nodes in a user namespace's tmpfs: bind the host's.
            bind(
                &host,
                &dev.join(node),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            )?;
            continue;
        }
        let rdev = std::fs::metadata(&host)
            .map(|m| std::os::unix::fs::MetadataExt::rdev(&m))
            .map_err(io_err(format!("cannot stat {}", host.display())))?;
        let path = dev.join(node);
        nix::sys::stat::mknod(
            &path,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            rdev,
        )
        .map_err(err(format!("cannot create /dev/{node}")))?;
        // mknod obeys the umask; the nodes must be usable by the script's uid.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &path,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(err(format!("cannot chmod /dev/{node}")))?;
    }
    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in links {
        symlink(target, dev.join(name)).map_err(io_err(format!("cannot link /dev/{name}")))?;
    }
    // The job's own tmpfs goes here (mount_job).
    std::fs::create_dir(dev.join("shm")).map_err(io_err("cannot create /dev/shm"))?;
    // Freeze /dev itself.
    mount(
        None::<&str>,
        &dev,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(err("cannot make /dev read-only"))
}

/// A /proc of the job's PID namespace only: process directories alone
/// (`subset=pid`: no /proc/sys, /proc/kcore...), and other users' processes
/// (PID 1) invisible. There is no fallback to a fuller /proc: without
/// `subset=pid` (Linux < 5.8) the sandbox cannot be built, and the start-up
/// self-test says so.
fn mount_proc(dst: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dst).map_err(io_err("cannot create /proc"))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_proc_with(|options| mount(Some("proc"), dst, Some("proc"), flags, Some(options)))
}

/// The options /proc is mounted with; both need Linux 5.8.
const PROC_OPTIONS: &str = "subset=pid,hidepid=invisible";

/// The decision of [`mount_proc`], given the mount call (testable without
/// an old kernel): the one set of options, or an error sentence.
fn mount_proc_with(
    mut mount: impl FnMut(&str) -> Result<(), nix::errno::Errno>,
) -> Result<(), String> {
    mount(PROC_OPTIONS).map_err(|e| match e {
        // What a kernel says to options it does not know.
        nix::errno::Errno::EINVAL => format!(
            "cannot mount /proc with {PROC_OPTIONS} ({e}): servo needs Linux 5.8 or later \
             so that scripts see only their own processes and no /proc/sys or /proc/kcore; \
             run servo on a newer kernel (it does not fall back to a fuller /proc)"
        ),
        e => format!("cannot mount /proc: {e}"),
    })
}

/// `pivot_root` into the new root and detach the old one.
pub(super) fn enter(root: &Path) -> Result<(), String> {
    nix::unistd::chdir(root).map_err(err("cannot enter the new root"))?;
    // pivot_root(".", "."): the old root ends up stacked under the new one
    // and is detached at once; no directory for it is needed.
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root failed"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("cannot detach the old root"))?;
    nix::unistd::chdir("/").map_err(err("cannot enter /"))
}

#[cfg(test)]
mod proc_tests {
    use super::*;

    #[test]
    fn proc_without_subset_pid_fails_with_a_sentence_instead_of_a_weaker_proc() {
        // A kernel older than 5.8: the options are unknown (EINVAL).
        let mut tried = Vec::new();
        let err = mount_proc_with(|options| {
            tried.push(options.to_string());
            if options.contains("subset=pid") {
                Err(nix::errno::Errno::EINVAL)
            } else {
                Ok(())
            }
        })
        .expect_err("mounted a /proc without subset=pid");
        assert!(
            tried.iter().all(|o| o.contains("subset=pid")),
            "fell back to {tried:?}"
        );
        assert!(err.contains("subset=pid"), "{err}");
        assert!(err.contains("Linux 5.8"), "{err}");

        let mut tried = Vec::new();
        mount_proc_with(|options| {
            tried.push(options.to_string());
            Ok(())
        })
        .expect("a kernel that knows subset=pid");
        assert_eq!(tried, ["subset=pid,hidepid=invisible"]);

        // Other errors (no privilege) say what they are, no kernel advice.
        let err = mount_proc_with(|_| Err(nix::errno::Errno::EPERM)).unwrap_err();
        assert!(err.starts_with("cannot mount /proc: EPERM"), "{err}");
        assert!(!err.contains("5.8"), "{err}");
    }
}
