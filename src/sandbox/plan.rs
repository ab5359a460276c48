//! The job's root file system as a plan (SPEC §5.2): the list of mount
//! operations, computed by pure functions from what the host has
//! ([`Host`]), and performed by `rootfs.rs`. Like bubblewrap's `SetupOp`
//! list: the plan can be printed and tested without root (the tests below
//! run in plain `cargo test`), and the prepared root's key is a hash of it.
//!
//! Two plans: [`static_root`], the part that is the same for every job of a
//! server (built once, kept as a root namespace), and [`job_mounts`], each
//! job's own /work, /tmp, /dev/shm, /proc and /run/servo.
//!
//! Layout: `/usr /bin /lib* /sbin` read-only binds of the host's (or the same
//! symlinks on a merged-/usr system); `/etc` an allowlist written or bound
//! file by file; `/work` the bundle (read-write); `/tmp` a size-limited tmpfs;
//! `/proc` for the job's PID namespace only; `/dev` with the five safe device
//! nodes; `/run/servo` the relay directory; `/opt/servo/python` the package;
//! the `--ro-bind` paths. The root itself is read-only once built.
//!
//! Every path an operation mounts on (`at`) is as seen inside the sandbox;
//! every `src` is a host path.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use sha2::{Digest, Sha256};

/// Where the servo Python package directory (PYTHONPATH) appears inside the sandbox.
pub const PYTHON_PKG_INSIDE: &str = "/opt/servo/python";
/// The in-sandbox `servo` Python package (SPEC §6.2), shipped inside the binary
/// and written read-only into every sandbox's root.
pub const PYTHON_PACKAGE: &str = include_str!("../../python/servo/__init__.py");

/// Read-only directories of the host's system, bound as they are.
pub const SYSTEM_DIRS: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// `/etc` entries bound read-only from the host when present: what the
/// interpreter and ordinary tools need, nothing that holds a secret.
pub const ETC_ALLOWED: [&str; 9] = [
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

/// The device nodes of the sandbox's /dev: the five safe ones.
pub const DEV_NODES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];

/// The symlinks of the sandbox's /dev.
const DEV_LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// The options /proc is mounted with; both need Linux 5.8.
pub const PROC_OPTIONS: &str = "subset=pid,hidepid=invisible";

/// One step of building a root.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A tmpfs on `at` (created first).
    Tmpfs {
        at: PathBuf,
        options: String,
        flags: MsFlags,
    },
    /// The mount at `at` made private: nothing mounted below it propagates.
    Private { at: PathBuf },
    /// The host's `src` bound on `at` (created as a file or directory to
    /// match), then remounted with `flags` (a bind's flags can only be set
    /// by a remount).
    Bind {
        src: PathBuf,
        at: PathBuf,
        flags: MsFlags,
    },
    /// A /proc of the PID namespace on `at`, with [`PROC_OPTIONS`], nosuid,
    /// nodev, noexec.
    Proc { at: PathBuf },
    /// A character device on `at` with the number of the host's `src`,
    /// mode 0666.
    DevNode { src: PathBuf, at: PathBuf },
    /// A symlink on `at` to `target`.
    Symlink { target: PathBuf, at: PathBuf },
    /// A directory (and its parents).
    Dir { at: PathBuf },
    /// A file written with `text`.
    File { at: PathBuf, text: String },
    /// A copy of the host's file `src` (its parents created).
    Copy { src: PathBuf, at: PathBuf },
    /// The mount at `at` remounted with `flags` (read-only, once built).
    Remount { at: PathBuf, flags: MsFlags },
}

impl Op {
    /// The host path this operation reads, if any.
    pub fn source(&self) -> Option<&Path> {
        match self {
            Op::Bind { src, .. } | Op::DevNode { src, .. } | Op::Copy { src, .. } => Some(src),
            _ => None,
        }
    }

    /// Where this operation acts, inside the sandbox.
    pub fn at(&self) -> &Path {
        match self {
            Op::Tmpfs { at, .. }
            | Op::Private { at }
            | Op::Bind { at, .. }
            | Op::Proc { at }
            | Op::DevNode { at, .. }
            | Op::Symlink { at, .. }
            | Op::Dir { at }
            | Op::File { at, .. }
            | Op::Copy { at, .. }
            | Op::Remount { at, .. } => at,
        }
    }
}

/// Read-only, no set-uid, no devices: the flags of every system bind.
pub fn flags_ro() -> MsFlags {
    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV
}

/// What the static root's plan depends on in the host, read by [`Host::read`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Host {
    /// Each of [`SYSTEM_DIRS`] present: its symlink's target, or None for a
    /// directory.
    pub system: Vec<(&'static str, Option<PathBuf>)>,
    /// Each of [`ETC_ALLOWED`] present: whether it is a directory (else a file).
    pub etc: Vec<(&'static str, bool)>,
    /// The names of the `/etc/python3*` directories.
    pub etc_python: Vec<String>,
}

impl Host {
    /// Reads this host (a few stats and a listing of /etc).
    pub fn read() -> Result<Host, String> {
        let mut host = Host::default();
        for dir in SYSTEM_DIRS {
            let path = Path::new("/").join(dir);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = std::fs::read_link(&path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    host.system.push((dir, Some(target)));
                }
                Ok(m) if m.is_dir() => host.system.push((dir, None)),
                _ => {}
            }
        }
        for name in ETC_ALLOWED {
            let path = Path::new("/etc").join(name);
            if path.is_file() {
                host.etc.push((name, false));
            } else if path.is_dir() {
                host.etc.push((name, true));
            }
        }
        // Debian's Python reads /etc/python3.X (sitecustomize); nothing secret there.
        if let Ok(entries) = std::fs::read_dir("/etc") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("python3") && e.path().is_dir() {
                    host.etc_python.push(name);
                }
            }
        }
        Ok(host)
    }
}

fn inside(path: &str) -> PathBuf {
    PathBuf::from(path)
}

/// The parts of a root that are the same for every job of a server,
/// read-only: system directories, /etc (naming every uid in `users`), /dev,
/// the servo package, `--ro-bind` paths (host, inside), and the mount points
/// of the job's own mounts. `rootless`: device nodes cannot be made in a user
/// namespace's tmpfs, so the host's are bound.
pub fn static_root(
    host: &Host,
    users: &[(u32, u32)],
    ro_binds: &[(PathBuf, PathBuf)],
    rootless: bool,
) -> Vec<Op> {
    // /etc's small files, and a passwd/group line per uid.
    let size = (2 << 20) + 128 * users.len();
    let mut plan = vec![
        Op::Tmpfs {
            at: inside("/"),
            options: format!("size={size},nr_inodes=4096,mode=0755"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        },
        // Built in servo's own namespace (the server's PreparedRoot), nothing
        // of it may propagate to other namespaces.
        Op::Private { at: inside("/") },
    ];
    for (dir, link) in &host.system {
        let at = Path::new("/").join(dir);
        plan.push(match link {
            Some(target) => Op::Symlink {
                target: target.clone(),
                at,
            },
            None => Op::Bind {
                src: at.clone(),
                at,
                flags: flags_ro(),
            },
        });
    }
    etc(&mut plan, host, users);
    dev(&mut plan, rootless);
    for dir in ["/work", "/tmp", "/proc", "/run/servo"] {
        plan.push(Op::Dir { at: inside(dir) });
    }
    // The package is written, not bound: a bind would show its host path in
    // /proc/self/mountinfo, and the root is made read-only below.
    let pkg = Path::new(PYTHON_PKG_INSIDE).join("servo");
    plan.push(Op::Dir { at: pkg.clone() });
    plan.push(Op::File {
        at: pkg.join("__init__.py"),
        text: PYTHON_PACKAGE.into(),
    });
    for (host_path, at) in ro_binds {
        plan.push(Op::Bind {
            src: host_path.clone(),
            at: at.clone(),
            flags: flags_ro(),
        });
    }
    // The root's own tmpfs holds only mount points and /etc: freeze it.
    plan.push(Op::Remount {
        at: inside("/"),
        flags: flags_ro(),
    });
    plan
}

fn etc(plan: &mut Vec<Op>, host: &Host, users: &[(u32, u32)]) {
    plan.push(Op::Dir { at: inside("/etc") });
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
        plan.push(Op::File {
            at: Path::new("/etc").join(name),
            text,
        });
    }
    for (name, is_dir) in &host.etc {
        let path = Path::new("/etc").join(name);
        plan.push(if *is_dir {
            Op::Bind {
                src: path.clone(),
                at: path,
                flags: flags_ro(),
            }
        } else {
            // Small files are copied (the root is made read-only below):
            // cheaper than a bind and its read-only remount.
            Op::Copy {
                src: path.clone(),
                at: path,
            }
        });
    }
    for name in &host.etc_python {
        let path = Path::new("/etc").join(name);
        plan.push(Op::Bind {
            src: path.clone(),
            at: path,
            flags: flags_ro(),
        });
    }
}

fn dev(plan: &mut Vec<Op>, rootless: bool) {
    plan.push(Op::Tmpfs {
        at: inside("/dev"),
        options: "size=64k,nr_inodes=64,mode=0755".into(),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
    });
    for node in DEV_NODES {
        let path = Path::new("/dev").join(node);
        plan.push(if rootless {
            // No device nodes in a user namespace's tmpfs: bind the host's
            // (nosuid, noexec; not nodev, or they would not work).
            Op::Bind {
                src: path.clone(),
                at: path,
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            }
        } else {
            Op::DevNode {
                src: path.clone(),
                at: path,
            }
        });
    }
    for (name, target) in DEV_LINKS {
        plan.push(Op::Symlink {
            target: target.into(),
            at: Path::new("/dev").join(name),
        });
    }
    // The job's own tmpfs goes here (job_mounts).
    plan.push(Op::Dir {
        at: inside("/dev/shm"),
    });
    // Freeze /dev itself.
    plan.push(Op::Remount {
        at: inside("/dev"),
        flags: MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
    });
}

/// The job's own mounts on a static root: its `workdir` on /work, a /tmp of
/// `tmp_bytes`, /dev/shm, /proc, and its `relay` directory on /run/servo.
pub fn job_mounts(workdir: &Path, relay: Option<&Path>, tmp_bytes: u64) -> Vec<Op> {
    let mut plan = job_mounts_ahead();
    plan.extend(job_mounts_of(workdir, relay, tmp_bytes));
    plan
}

/// The job's mounts that are the same for every job (/dev/shm, /proc): a
/// warm init makes them before its job arrives.
pub fn job_mounts_ahead() -> Vec<Op> {
    vec![
        Op::Tmpfs {
            at: inside("/dev/shm"),
            options: "size=16m,mode=1777".into(),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        },
        Op::Proc {
            at: inside("/proc"),
        },
    ]
}

/// The job's mounts that depend on the job: its `workdir` on /work, a /tmp
/// of `tmp_bytes`, and its `relay` directory on /run/servo.
pub fn job_mounts_of(workdir: &Path, relay: Option<&Path>, tmp_bytes: u64) -> Vec<Op> {
    let mut plan = vec![
        Op::Bind {
            src: workdir.to_path_buf(),
            at: inside("/work"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        },
        Op::Tmpfs {
            at: inside("/tmp"),
            options: format!("size={tmp_bytes},mode=1777"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        },
    ];
    if let Some(relay) = relay {
        plan.push(Op::Bind {
            src: relay.to_path_buf(),
            at: inside("/run/servo"),
            flags: flags_ro(),
        });
    }
    plan
}

/// The key of a prepared root built from `plan`: equal keys, same root. A
/// SHA-256 of this servo (which writes the package and decides the layout),
/// the plan, and what `stat` says of every host source the plan reads.
pub fn key_with<S: Hash>(plan: &[Op], stat: impl Fn(&Op) -> S) -> String {
    let mut digest = KeyHasher(Sha256::new());
    env!("CARGO_PKG_VERSION").hash(&mut digest);
    stamp(Path::new("/proc/self/exe")).hash(&mut digest);
    for op in plan {
        op.hash(&mut digest);
        if op.source().is_some() {
            stat(op).hash(&mut digest);
        }
    }
    hex::encode(digest.0.finalize())
}

/// SHA-256 fed through `Hash`. The plan's operations were printed with
/// `{:?}` and the text hashed: ~0.1 ms of each `servo sandbox` call (perf,
/// 2026-12-03). `Hash` output is stable within one build of servo, and the
/// build's identity is part of every key.
struct KeyHasher(Sha256);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Not used: the digest is read from the SHA-256 itself.
    fn finish(&self) -> u64 {
        0
    }
}

/// What the key records of a host source.
#[derive(Hash)]
enum Stamp {
    /// Device, inode, size and mtime (seconds, nanoseconds).
    File(u64, u64, u64, i64, i64),
    /// A device node's number only (writing to one may touch its mtime).
    Device(u64),
    Missing(std::io::ErrorKind),
}

/// [`key_with`] on this host: the device and inode of each source (size
/// and mtime of files), and the number of device nodes only. A stat per
/// source: far cheaper than building.
pub fn key(plan: &[Op]) -> String {
    key_with(plan, |op| match op {
        Op::DevNode { src, .. } => match std::fs::metadata(src) {
            Ok(m) => Stamp::Device(std::os::unix::fs::MetadataExt::rdev(&m)),
            Err(e) => Stamp::Missing(e.kind()),
        },
        op => stamp(op.source().unwrap_or(Path::new("/"))),
    })
}

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Stamp::File(m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()),
        Err(e) => Stamp::Missing(e.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host like Debian 12's (merged /usr) and one with real directories.
    fn hosts() -> Vec<Host> {
        let merged = Host {
            system: vec![
                ("usr", None),
                ("bin", Some("usr/bin".into())),
                ("sbin", Some("usr/sbin".into())),
                ("lib", Some("usr/lib".into())),
                ("lib64", Some("usr/lib64".into())),
            ],
            etc: vec![
                ("ld.so.cache", false),
                ("ssl/certs", true),
                ("ssl/openssl.cnf", false),
                ("alternatives", true),
            ],
            etc_python: vec!["python3.11".into()],
        };
        let split = Host {
            system: SYSTEM_DIRS.iter().map(|d| (*d, None)).collect(),
            etc: ETC_ALLOWED.iter().map(|n| (*n, false)).collect(),
            etc_python: vec![],
        };
        vec![merged, split, Host::read().expect("this host")]
    }

    const STATE: &str = "/var/lib/servo";

    /// Every static plan the tests check: each host, root and rootless,
    /// with and without `--ro-bind`.
    fn static_plans() -> Vec<Vec<Op>> {
        let users = [(100000, 100000), (100001, 100001)];
        let binds = vec![(PathBuf::from("/srv/tools"), PathBuf::from("/opt/tools"))];
        let mut plans = Vec::new();
        for host in hosts() {
            for rootless in [false, true] {
                plans.push(static_root(&host, &users, &[], rootless));
                plans.push(static_root(&host, &users, &binds, rootless));
            }
        }
        plans
    }

    fn job_plans() -> Vec<Vec<Op>> {
        let work = Path::new(STATE).join("runs/r1/work");
        let relay = Path::new(STATE).join("runs/r1/relay");
        vec![
            job_mounts(&work, Some(&relay), 64 << 20),
            job_mounts(&work, None, 64 << 20),
        ]
    }

    fn is_dev_node(at: &Path) -> bool {
        at.parent() == Some(Path::new("/dev"))
            && DEV_NODES.iter().any(|n| at.file_name() == Some(n.as_ref()))
    }

    #[test]
    fn every_bind_is_nosuid_and_nodev() {
        for plan in static_plans().iter().chain(&job_plans()) {
            for op in plan {
                if let Op::Bind { at, flags, .. } = op {
                    assert!(flags.contains(MsFlags::MS_NOSUID), "{op:?}");
                    // The rootless device nodes are binds that must stay
                    // devices: nosuid and noexec instead.
                    if is_dev_node(at) {
                        assert!(flags.contains(MsFlags::MS_NOEXEC), "{op:?}");
                    } else {
                        assert!(flags.contains(MsFlags::MS_NODEV), "{op:?}");
                    }
                    // Only /work is writable.
                    if at != Path::new("/work") && !is_dev_node(at) {
                        assert!(flags.contains(MsFlags::MS_RDONLY), "{op:?}");
                    }
                }
                if let Op::Tmpfs { flags, .. } = op {
                    assert!(flags.contains(MsFlags::MS_NOSUID), "{op:?}");
                }
            }
        }
    }

    #[test]
    fn the_root_is_a_tmpfs_made_read_only_last() {
        for plan in static_plans() {
            assert!(
                matches!(&plan[0], Op::Tmpfs { at, .. } if at == Path::new("/")),
                "{:?}",
                plan[0]
            );
            assert_eq!(
                plan.last(),
                Some(&Op::Remount {
                    at: "/".into(),
                    flags: flags_ro()
                })
            );
            // Nothing is written after the root is frozen, and /dev is
            // frozen too.
            assert!(plan.contains(&Op::Remount {
                at: "/dev".into(),
                flags: MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            }));
        }
        // The job's mounts never remount or write the root.
        for plan in job_plans() {
            for op in &plan {
                assert!(
                    !matches!(op, Op::Remount { .. } | Op::File { .. } | Op::Copy { .. }),
                    "{op:?}"
                );
            }
        }
    }

    #[test]
    fn etc_holds_only_its_allowlist() {
        let written = ["passwd", "group", "hosts", "hostname", "nsswitch.conf"];
        for plan in static_plans() {
            for op in &plan {
                let Ok(name) = op.at().strip_prefix("/etc") else {
                    continue;
                };
                let name = name.to_string_lossy();
                match op {
                    Op::Dir { at } => assert_eq!(at, Path::new("/etc")),
                    Op::File { .. } => assert!(written.contains(&&*name), "{op:?}"),
                    Op::Copy { src, at } | Op::Bind { src, at, .. } => {
                        assert_eq!(src, at, "{op:?}");
                        assert!(
                            ETC_ALLOWED.contains(&&*name) || name.starts_with("python3"),
                            "{op:?}"
                        );
                    }
                    op => panic!("unexpected in /etc: {op:?}"),
                }
            }
            // And no host /etc file anywhere else.
            for op in &plan {
                if let Some(src) = op.source() {
                    if src.starts_with("/etc") {
                        assert_eq!(src, op.at(), "{op:?}");
                    }
                }
            }
        }
        let passwd = static_root(&hosts()[0], &[(100000, 100001)], &[], false)
            .into_iter()
            .find_map(|op| match op {
                Op::File { at, text } if at == Path::new("/etc/passwd") => Some(text),
                _ => None,
            })
            .expect("/etc/passwd");
        assert!(passwd.contains("servo:x:100000:100001:"), "{passwd}");
        assert!(!passwd.contains("root:x:0:0:root:/root:/bin"), "{passwd}");
    }

    #[test]
    fn nothing_of_the_state_dir_is_in_the_static_root() {
        for plan in static_plans() {
            for op in &plan {
                if let Some(src) = op.source() {
                    assert!(!src.starts_with(STATE), "{op:?}");
                }
            }
        }
        // The job's mounts bring exactly its work and relay directories.
        for plan in job_plans() {
            let sources: Vec<&Path> = plan.iter().filter_map(Op::source).collect();
            assert!(sources[0].ends_with("runs/r1/work"), "{sources:?}");
            assert!(sources[1..].iter().all(|s| s.ends_with("runs/r1/relay")));
        }
    }

    #[test]
    fn proc_is_the_jobs_own_with_subset_pid() {
        assert!(PROC_OPTIONS.split(',').any(|o| o == "subset=pid"));
        assert!(PROC_OPTIONS.split(',').any(|o| o == "hidepid=invisible"));
        for plan in job_plans() {
            let procs: Vec<&Op> = plan
                .iter()
                .filter(|op| matches!(op, Op::Proc { .. }))
                .collect();
            assert_eq!(procs, [&Op::Proc { at: "/proc".into() }]);
        }
        for plan in static_plans() {
            // The static root has only a mount point for it.
            assert!(!plan.iter().any(|op| matches!(op, Op::Proc { .. })));
            assert!(plan.contains(&Op::Dir { at: "/proc".into() }));
        }
    }

    #[test]
    fn dev_holds_only_the_five_safe_nodes() {
        let links = ["fd", "stdin", "stdout", "stderr"];
        for (plan, jobs) in static_plans().iter().zip(job_plans().iter().cycle()) {
            let mut nodes = Vec::new();
            for op in plan.iter().chain(jobs) {
                let Ok(name) = op.at().strip_prefix("/dev") else {
                    continue;
                };
                let name = name.to_string_lossy().into_owned();
                match op {
                    Op::Tmpfs { at, .. } | Op::Remount { at, .. } if at == Path::new("/dev") => {}
                    Op::Tmpfs { at, .. } | Op::Dir { at } if at.ends_with("shm") => {
                        assert_eq!(at, Path::new("/dev/shm"));
                    }
                    Op::DevNode { src, at } | Op::Bind { src, at, .. } => {
                        assert_eq!(src, at, "{op:?}");
                        nodes.push(name);
                    }
                    Op::Symlink { target, .. } => {
                        assert!(links.contains(&&*name), "{op:?}");
                        assert!(target.starts_with("/proc/self/fd"), "{op:?}");
                    }
                    op => panic!("unexpected in /dev: {op:?}"),
                }
            }
            assert_eq!(nodes, DEV_NODES, "{plan:?}");
        }
    }

    #[test]
    fn the_key_covers_the_plan_and_every_source() {
        let host = &hosts()[0];
        let users = [(1, 1)];
        let plan = static_root(host, &users, &[], false);
        let stat_of = |changed: &'static str| {
            move |op: &Op| {
                let src = op.source().unwrap();
                if src == Path::new(changed) {
                    "new".to_string()
                } else {
                    format!("{} old", src.display())
                }
            }
        };
        let base = key_with(&plan, stat_of(""));
        assert_eq!(base.len(), 64);
        assert_eq!(key_with(&plan, stat_of("")), base, "not deterministic");
        // Any source changing on the host changes the key...
        for op in &plan {
            if let Some(src) = op.source() {
                let changed: &'static str = Box::leak(src.display().to_string().into_boxed_str());
                assert_ne!(key_with(&plan, stat_of(changed)), base, "{op:?}");
            }
        }
        // ... and so does any change of the plan.
        for other in [
            static_root(host, &[(2, 2)], &[], false),
            static_root(host, &users, &[("/srv".into(), "/srv".into())], false),
            static_root(&hosts()[1], &users, &[], false),
        ] {
            assert_ne!(key_with(&other, stat_of("")), base);
        }
    }
}
