//! Builds the job's root file system (SPEC §5.2) by performing the plans of
//! `plan.rs`. Its static part (`build_static`) is prepared once on a
//! read-only tmpfs and kept as a root namespace (`root_ns.rs`), whose
//! private copy an init enters (`enter_root_ns`); without one, the init
//! builds it in its copy of the host's mount namespace and enters it with
//! `pivot_root` (`build`). Either way the job then gets its own /work, /tmp,
//! /dev/shm, /proc and /run/servo (`plan::job_mounts`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::plan::{Host, Op, PROC_OPTIONS};
use super::spec::HelperSpec;

fn err(what: impl std::fmt::Display) -> impl FnOnce(nix::errno::Errno) -> String {
    let what = what.to_string();
    move |e| format!("{what}: {e}")
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> String {
    let what = what.to_string();
    move |e| format!("{what}: {e}")
}

/// Performs `plan` on the root at `root` (a host path: each operation's
/// `at` is below it). A `Bind` whose source is in `trees` (detached mounts
/// cloned from the host, `clone_tree`) attaches that instead.
fn perform(root: &Path, plan: &[Op], trees: &mut Vec<(PathBuf, OwnedFd)>) -> Result<(), String> {
    for op in plan {
        let dst = under(root, op.at());
        let at = op.at().display();
        match op {
            Op::Tmpfs { options, flags, .. } => tmpfs(&dst, options, *flags)?,
            Op::Private { at } => mount(
                None::<&str>,
                &dst,
                None::<&str>,
                MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(err(format!("cannot make {} private", shown(at))))?,
            Op::Bind { src, flags, .. } => match trees.iter().position(|(s, _)| s == src) {
                Some(i) => attach(trees.remove(i).1, &dst, *flags)?,
                None => bind(src, &dst, *flags)?,
            },
            Op::Proc { .. } => mount_proc(&dst)?,
            Op::DevNode { src, .. } => dev_node(src, &dst, op.at())?,
            Op::Symlink { target, .. } => {
                symlink(target, &dst).map_err(io_err(format!("cannot link {at}")))?
            }
            Op::Dir { .. } => {
                std::fs::create_dir_all(&dst).map_err(io_err(format!("cannot create {at}")))?
            }
            Op::File { text, .. } => {
                std::fs::write(&dst, text).map_err(io_err(format!("cannot write {at}")))?
            }
            Op::Copy { src, .. } => {
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(io_err(format!("cannot create {}", parent.display())))?;
                }
                std::fs::copy(src, &dst)
                    .map_err(io_err(format!("cannot copy {}", src.display())))?;
            }
            Op::Remount { at, flags } => mount(
                None::<&str>,
                &dst,
                None::<&str>,
                MsFlags::MS_REMOUNT | *flags,
                None::<&str>,
            )
            .map_err(err(format!("cannot make {} read-only", shown(at))))?,
        }
    }
    Ok(())
}

/// `at` in an error sentence.
fn shown(at: &Path) -> String {
    if at == Path::new("/") {
        "the root".into()
    } else {
        at.display().to_string()
    }
}

/// A character device at `dst` with the number of the host's `src`.
fn dev_node(src: &Path, dst: &Path, at: &Path) -> Result<(), String> {
    let rdev = std::fs::metadata(src)
        .map(|m| std::os::unix::fs::MetadataExt::rdev(&m))
        .map_err(io_err(format!("cannot stat {}", src.display())))?;
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
    nix::sys::stat::mknod(dst, nix::sys::stat::SFlag::S_IFCHR, mode, rdev)
        .map_err(err(format!("cannot create {}", at.display())))?;
    // mknod obeys the umask; the nodes must be usable by the script's uid.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        dst,
        mode,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(err(format!("cannot chmod {}", at.display())))
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

/// The job's own mounts (`plan::job_mounts`).
fn job_plan(spec: &HelperSpec) -> Vec<Op> {
    super::plan::job_mounts(
        &spec.workdir,
        spec.relay_dir.as_deref(),
        spec.limits.tmp_bytes(),
    )
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
            let host = Host::read()?;
            let plan =
                super::plan::static_root(&host, &users, &spec.ro_binds, spec.rootless.is_some());
            build_static(&spec.root, &plan)?;
            spec.root.as_path()
        }
    };
    perform(root, &job_plan(spec), &mut Vec::new())?;
    enter(root)
}

/// The job's root from a root namespace (`root_ns.rs`): the host
/// directories it needs (/work, /run/servo) are cloned while the host's tree
/// is still in view, then the init joins the root namespace, makes its private
/// copy and mounts its own parts. Already at `/`: nothing to pivot.
pub fn enter_root_ns(ns: OwnedFd, spec: &HelperSpec) -> Result<(), String> {
    let plan = job_plan(spec);
    let mut trees = clone_binds(&plan)?;
    copy_root_ns(ns)?;
    perform(Path::new("/"), &plan, &mut trees)
}

/// Joins the root namespace `ns` and makes the caller's private copy of it.
fn copy_root_ns(ns: OwnedFd) -> Result<(), String> {
    nix::sched::setns(&ns, CloneFlags::CLONE_NEWNS)
        .map_err(err("cannot join the prepared root's namespace"))?;
    // Joined: the init keeps nothing that reaches outside its sandbox.
    drop(ns);
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(err("cannot create the mount namespace"))?;
    nix::unistd::chdir("/").map_err(err("cannot enter /"))
}

/// Detached copies of the host directories `plan` binds (`clone_tree`).
fn clone_binds(plan: &[Op]) -> Result<Vec<(PathBuf, OwnedFd)>, String> {
    let mut trees = Vec::new();
    for src in plan.iter().filter_map(|op| match op {
        Op::Bind { src, .. } => Some(src),
        _ => None,
    }) {
        trees.push((src.clone(), clone_tree(src)?));
    }
    Ok(trees)
}

/// A warm init's mount namespace, made before its job arrived
/// (`make_ahead`): its private copy of the root namespace with the mounts
/// every job has (`plan::job_mounts_ahead`: /dev/shm, /proc), and the
/// host's namespace, where the job's own directories are, until the job
/// arrives (`enter_ahead` closes both).
pub struct Ahead {
    host: OwnedFd,
    own: OwnedFd,
}

/// Before the job: the copy of the root namespace `ns` and its mounts that
/// do not depend on the job, off the job's critical path (its copy and
/// mounts were ~0.3 ms of a start).
pub fn make_ahead(ns: OwnedFd) -> Result<Ahead, String> {
    let ns_of_self = || {
        std::fs::File::open("/proc/self/ns/mnt")
            .map(OwnedFd::from)
            .map_err(io_err("cannot open the mount namespace"))
    };
    let host = ns_of_self()?;
    copy_root_ns(ns)?;
    perform(
        Path::new("/"),
        &super::plan::job_mounts_ahead(),
        &mut Vec::new(),
    )?;
    // /proc is the job's own now (this process is PID 1 of its namespace).
    let own = ns_of_self()?;
    Ok(Ahead { host, own })
}

/// Once the job is known: back in the host's namespace for a moment, runs
/// `in_host` (joining the job's cgroups, by their host paths) and clones the
/// job's directories, then returns to the namespace made ahead, lets go of
/// both and mounts the job's own parts (`plan::job_mounts_of`).
pub fn enter_ahead(
    ahead: Ahead,
    spec: &HelperSpec,
    in_host: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let plan = super::plan::job_mounts_of(
        &spec.workdir,
        spec.relay_dir.as_deref(),
        spec.limits.tmp_bytes(),
    );
    let Ahead { host, own } = ahead;
    nix::sched::setns(&host, CloneFlags::CLONE_NEWNS)
        .map_err(err("cannot return to the host's mount namespace"))?;
    drop(host);
    in_host()?;
    let mut trees = clone_binds(&plan)?;
    nix::sched::setns(&own, CloneFlags::CLONE_NEWNS)
        .map_err(err("cannot enter the sandbox's mount namespace"))?;
    // Back inside: the init keeps nothing that reaches outside its sandbox.
    drop(own);
    nix::unistd::chdir("/").map_err(err("cannot enter /"))?;
    perform(Path::new("/"), &plan, &mut trees)
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

/// Attaches a detached mount (`clone_tree`) on `dst`, then applies `flags`
/// (a bind's flags can only be set by a remount).
fn attach(tree: OwnedFd, dst: &Path, flags: MsFlags) -> Result<(), String> {
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

/// Builds a static root (`plan::static_root`) at `root`. The server builds
/// it once (`PreparedRoot`); `servo sandbox` and rootless servers build it
/// in each job's namespace.
pub fn build_static(root: &Path, plan: &[Op]) -> Result<(), String> {
    perform(root, plan, &mut Vec::new())
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
