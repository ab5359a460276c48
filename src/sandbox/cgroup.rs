//! One cgroup per sandboxed job (SPEC §4.4, §5.7): memory and pids limits, OOM
//! detection, and a way to kill everything the job started.
//!
//! Unified (v2) hierarchy: `/sys/fs/cgroup/servo/<instance>/<job>` with
//! `memory` and `pids` enabled down the tree. Legacy (v1) hierarchy where only
//! that is mounted: `/sys/fs/cgroup/{memory,pids}/servo/<instance>/<job>`.
//! Neither: rlimits only. `<instance>` names the state directory.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{mount, MsFlags};
use sha2::{Digest, Sha256};

use crate::limits::Limits;

/// The instance name of a state directory's servo, `<instance>` in
/// `/sys/fs/cgroup/servo/<instance>/<job>`: a short hash (12 hex digits) of
/// the canonical path of its scratch directory `STATE/sandbox` and of that
/// directory's device and inode. Containers that share the host's cgroups
/// and the same state dir path (the default one) are different instances,
/// so one's start-up sweep never kills the other's jobs. Public so that
/// tests find an instance's groups by the same rule.
pub fn instance_name(scratch_dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let path = std::fs::canonicalize(scratch_dir).unwrap_or_else(|_| scratch_dir.to_path_buf());
    let mut digest = Sha256::new();
    digest.update(path.as_os_str().as_encoded_bytes());
    if let Ok(meta) = std::fs::metadata(&path) {
        digest.update(meta.dev().to_le_bytes());
        digest.update(meta.ino().to_le_bytes());
    }
    hex::encode(&digest.finalize()[..6])
}

const ROOT: &str = "/sys/fs/cgroup";
const GROUP: &str = "servo";
/// The parent of `servo sandbox`'s groups, beside the servers' instances.
const CLI_PARENT: &str = "sandbox";

/// A `servo sandbox` call's group: `job-<pid>-cli-<pid namespace>`. The
/// parent is shared by every call on the host, containers with the host's
/// cgroups included, and a pid means something only in its own namespace:
/// a call judges (and replaces) only groups named in its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CliJob {
    pub pid: i32,
    pub pid_namespace: u64,
}

impl CliJob {
    /// This process's, or None when /proc does not say which PID namespace
    /// it is in (then no group of another call is ever touched).
    pub fn current() -> Option<CliJob> {
        use std::os::unix::fs::MetadataExt;
        let pid_namespace = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
        Some(CliJob {
            pid: i32::try_from(std::process::id()).ok()?,
            pid_namespace,
        })
    }

    pub fn name(&self) -> String {
        format!("job-{}-cli-{}", self.pid, self.pid_namespace)
    }

    fn parse(name: &str) -> Option<CliJob> {
        let (pid, ns) = name.strip_prefix("job-")?.split_once("-cli-")?;
        Some(CliJob {
            // Never 0 or negative: kill() would signal a whole process group.
            pid: pid.parse().ok().filter(|p| *p > 0)?,
            pid_namespace: ns.parse().ok()?,
        })
    }
}

#[derive(Clone, Debug)]
pub enum CgroupMode {
    V2 { base: PathBuf },
    V1 { memory: PathBuf, pids: PathBuf },
    None,
}

impl CgroupMode {
    /// Finds a usable hierarchy and prepares a server's parent group in it:
    /// `servo/<instance>`, so that servers with different state directories
    /// never sweep each other's jobs. `scratch_dir` is the state dir's
    /// `sandbox/` (it names the instance).
    pub fn detect(scratch_dir: &Path) -> CgroupMode {
        Self::detect_under(scratch_dir, &instance_name(scratch_dir))
    }

    /// The same for `servo sandbox`: one parent, `servo/sandbox`, for every
    /// call whatever its state dir, left in place between calls (making and
    /// removing it each call cost two more cgroups each way). A parent per
    /// state dir would pile up one group for every state dir ever used.
    /// Servers never sweep it: instance names are hexadecimal.
    pub fn detect_for_cli(scratch_dir: &Path) -> CgroupMode {
        Self::detect_under(scratch_dir, CLI_PARENT)
    }

    fn detect_under(scratch_dir: &Path, instance: &str) -> CgroupMode {
        let marker = scratch_dir.join(FAVOR_MARK);
        let root = Path::new(ROOT);
        if root.join("cgroup.controllers").exists() {
            let servo = root.join(GROUP);
            let base = servo.join(instance);
            let ok = std::fs::create_dir_all(&base).is_ok()
                && [root, servo.as_path(), base.as_path()].iter().all(|d| {
                    std::fs::write(d.join("cgroup.subtree_control"), "+memory +pids").is_ok()
                });
            if ok {
                favor_dynamic_modifications(&marker);
                return CgroupMode::V2 { base };
            }
            return CgroupMode::None;
        }
        let memory = root.join("memory").join(GROUP).join(instance);
        let pids = root.join("pids").join(GROUP).join(instance);
        if root.join("memory/cgroup.procs").exists()
            && root.join("pids/cgroup.procs").exists()
            && std::fs::create_dir_all(&memory).is_ok()
            && std::fs::create_dir_all(&pids).is_ok()
        {
            favor_dynamic_modifications(&marker);
            return CgroupMode::V1 { memory, pids };
        }
        CgroupMode::None
    }

    /// The `cgroup.procs` of one group in the v1 `cpu` hierarchy (separate
    /// from the jobs' `memory` and `pids` groups) that every job's init
    /// joins, weighed as one session (`SANDBOX_CPU_SHARES`). Without it each
    /// script, a session of its own (`setsid`), is an autogroup the
    /// scheduler weighs as much as the whole server: 500 pythons starting
    /// had ~500 shares to the server's one, and `/health` waited (SPEC §5.7:
    /// a CPU spin harms nothing else). The launcher stays out of it: it
    /// starts every job, one at a time, and must not queue behind them.
    /// None without a v1 `cpu` hierarchy (under v2 the jobs' groups are one
    /// subtree already, one share where the host enables `cpu` at the root).
    pub fn sandbox_cpu_group(&self) -> Option<PathBuf> {
        let CgroupMode::V1 { memory, .. } = self else {
            return None;
        };
        let servo = Path::new(ROOT).join("cpu").join(GROUP);
        let dir = servo.join(memory.file_name()?);
        if !servo.parent()?.join("cgroup.procs").exists() {
            return None;
        }
        std::fs::create_dir_all(&dir).ok()?;
        // The weight counts among servo's siblings, so `servo` has it too.
        for d in [&servo, &dir] {
            std::fs::write(d.join("cpu.shares"), SANDBOX_CPU_SHARES).ok()?;
        }
        Some(dir.join("cgroup.procs"))
    }

    /// What /health says (§2.3); rlimits apply in every mode.
    pub fn describe(&self) -> &'static str {
        match self {
            CgroupMode::V2 { .. } => "cgroup2",
            CgroupMode::V1 { .. } => "cgroup1",
            CgroupMode::None => "rlimits",
        }
    }

    pub fn limits_memory(&self) -> bool {
        !matches!(self, CgroupMode::None)
    }

    /// Creates the job's group(s) with its limits; None without cgroups.
    pub fn create(&self, name: &str, limits: &Limits) -> std::io::Result<Option<JobCgroup>> {
        let key = (limits.memory_bytes(), limits.pids);
        let (mem, pids) = (key.0.to_string(), key.1.to_string());
        let job = match self {
            CgroupMode::None => return Ok(None),
            CgroupMode::V2 { base } => {
                let dir = base.join(name);
                std::fs::create_dir(&dir)?;
                let job = JobCgroup {
                    dirs: vec![dir.clone()],
                    v2: true,
                    limits: key,
                    oom_kills: 0,
                };
                write_all(
                    &job,
                    &[(&dir, "memory.max", &mem), (&dir, "pids.max", &pids)],
                )?;
                // Swap would let a memory bomb outlive its limit; not every kernel has it.
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                job
            }
            CgroupMode::V1 { memory, pids: p } => {
                let (m, pd) = (memory.join(name), p.join(name));
                std::fs::create_dir(&m)?;
                let job = JobCgroup {
                    dirs: vec![m.clone()],
                    v2: false,
                    limits: key,
                    oom_kills: 0,
                };
                if let Err(e) = std::fs::create_dir(&pd) {
                    job.remove();
                    return Err(e);
                }
                let job = JobCgroup {
                    dirs: vec![m.clone(), pd.clone()],
                    v2: false,
                    limits: key,
                    oom_kills: 0,
                };
                write_all(
                    &job,
                    &[
                        (&m, "memory.limit_in_bytes", &mem),
                        (&pd, "pids.max", &pids),
                    ],
                )?;
                let _ = std::fs::write(m.join("memory.memsw.limit_in_bytes"), &mem);
                job
            }
        };
        Ok(Some(job))
    }

    /// Removes this instance's parent group(s) when servo stops (they are
    /// empty by then; the kernel refuses otherwise, which is fine).
    pub fn remove_base(&self) {
        match self {
            CgroupMode::V2 { base } => {
                let _ = std::fs::remove_dir(base);
            }
            CgroupMode::V1 { memory, pids } => {
                let _ = std::fs::remove_dir(memory);
                let _ = std::fs::remove_dir(pids);
                // Empty once the jobs are gone.
                if let Some(instance) = memory.file_name() {
                    let _ =
                        std::fs::remove_dir(Path::new(ROOT).join("cpu").join(GROUP).join(instance));
                }
            }
            CgroupMode::None => {}
        }
    }

    /// Kills and removes job groups a previous servo left behind.
    pub fn sweep(&self) {
        for entry in self.children() {
            let name = entry.file_name();
            if entry.path().is_dir() && name.to_string_lossy().starts_with("job-") {
                self.discard_dir(entry.path());
            }
        }
    }

    /// Kills and removes the job group `name` if it exists: one left by a
    /// process that was killed outright, whose pid named it.
    pub fn discard(&self, name: &str) {
        for base in self.bases() {
            let dir = base.join(name);
            if dir.is_dir() {
                self.discard_dir(dir);
            }
        }
    }

    /// Removes the groups of `servo sandbox` calls of `me`'s PID namespace
    /// whose process is gone: one killed outright could not remove its own.
    /// A group whose pid is alive is left alone (a call running now, or a
    /// reused pid), and so is every group named in another namespace.
    pub fn sweep_orphaned_cli_jobs(&self, me: CliJob) {
        for entry in self.children() {
            let Some(job) = CliJob::parse(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            if job.pid_namespace != me.pid_namespace || job.pid == me.pid {
                continue;
            }
            let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(job.pid), None)
                == Err(nix::errno::Errno::ESRCH);
            if gone {
                self.discard_dir(entry.path());
            }
        }
    }

    /// What the parent group(s) hold: control files and job groups.
    fn children(&self) -> Vec<std::fs::DirEntry> {
        self.bases()
            .into_iter()
            .filter_map(|base| std::fs::read_dir(base).ok())
            .flat_map(|entries| entries.flatten())
            .collect()
    }

    fn bases(&self) -> Vec<&PathBuf> {
        match self {
            CgroupMode::V2 { base } => vec![base],
            CgroupMode::V1 { memory, pids } => vec![memory, pids],
            CgroupMode::None => vec![],
        }
    }

    fn discard_dir(&self, dir: PathBuf) {
        let job = JobCgroup {
            dirs: vec![dir],
            v2: matches!(self, CgroupMode::V2 { .. }),
            limits: (0, 0),
            oom_kills: 0,
        };
        job.kill_all();
        job.remove();
    }
}

/// Moving a process into a cgroup waits for an RCU grace period (the global
/// cgroup_threadgroup_rwsem's writer side) unless the unified hierarchy has
/// the `favordynmods` option: measured here, 5-30 ms per sandbox start
/// without it, 0.15 ms with it (SPEC §9). The option is global and meant for
/// exactly this pattern, at a small cost to fork/exit; servo sets it on the
/// cgroup2 mount when there is one, keeping that mount's other options.
///
/// Finding out means reading /proc/self/mountinfo (0.3 ms with a hundred
/// mounts: most of what `servo sandbox` spent before its namespaces), so
/// `marker` remembers for the current boot that it is done.
fn favor_dynamic_modifications(marker: &Path) {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    if !boot.is_empty() && std::fs::read_to_string(marker).is_ok_and(|m| m == boot) {
        return;
    }
    if set_favordynmods() && !boot.is_empty() {
        let _ = std::fs::write(marker, boot);
    }
}

/// The CPU weight (v1 `cpu.shares`) of all the sandboxes of the host's
/// servers together: 8 sessions' worth (a session such as the server's
/// weighs 1024). Written, not assumed: the group outlives servo. Measured
/// side by side (bench/bench.py, busy host, load 20-40): at 1024 the 32
/// clients' throughput fell to 0.78-0.82 x the floor (the launcher and the
/// server got half the CPU against 32 scripts) against 0.82-0.89 x at 8192
/// and 0.85 x with no group; /health p99 while 500 start: 4.2 ms at 1024,
/// 14.2 ms at 8192 (target 20; no group: 25 ms on a quiet host). A smaller
/// one (128) did no better for `/health` and let the host's other work
/// slow the scripts down (500 starts: ~3 s -> up to ~30 s).
const SANDBOX_CPU_SHARES: &str = "8192";

/// The nice value of servo's own autogroup (server and launcher) while the
/// scripts share the `cpu` group above: weight 9548 against the group's
/// 8192, servo about as heavy as all its scripts together. At the default
/// (1024) the server got a ninth of the CPU while 500 scripts started, and
/// requests queued. Measured side by side (bench/bench.py with servo and
/// the `/health` poller each in a session of their own, the same binary,
/// AMD host): `/health` p99 while 500 start 28.8 / 24.6 ms at 0, 14.0 /
/// 17.6 ms at -10; throughput 0.78 / 0.83 x the floor at 0, 0.93 / 0.88 x
/// at -10; end to end p50 +9.8 / +7.0 ms at 0, +5.2 / +6.7 at -10. (The
/// shares figures above were taken with servo in the benchmark's own
/// session, whose clients shared its weight.)
const SERVO_AUTOGROUP_NICE: &str = "-10";

/// Gives servo's autogroup the weight of `SERVO_AUTOGROUP_NICE`, only when
/// servo leads its own session (systemd, a container's init, `setsid`):
/// then the autogroup holds servo and its launcher alone. Started from a
/// shell, servo shares the shell's session and leaves its weight alone.
/// Without autogroups (disabled, or servo in a cgroup of its own) the
/// write changes nothing. True when it was written.
pub fn weigh_servo_like_its_scripts() -> bool {
    let leads_session = nix::unistd::getsid(None).ok() == Some(nix::unistd::getpid());
    leads_session && std::fs::write("/proc/self/autogroup", SERVO_AUTOGROUP_NICE).is_ok()
}

/// The state dir's file saying favordynmods was seen or set in this boot.
const FAVOR_MARK: &str = "favordynmods.boot";

/// Sets favordynmods unless it is set; true when it is set now (or there is
/// no cgroup2 mount to set it on).
fn set_favordynmods() -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    for line in info.lines() {
        // id parent dev root mountpoint mount-opts [optional...] - fstype source super-opts
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        if r.next() != Some("cgroup2") {
            continue;
        }
        let super_opts = r.nth(1).unwrap_or("");
        if super_opts.split(',').any(|o| o == "favordynmods") {
            return true;
        }
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(point), Some(mount_opts)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let mut flags = MsFlags::MS_REMOUNT;
        for o in mount_opts.split(',') {
            flags |= match o {
                "ro" => MsFlags::MS_RDONLY,
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "noatime" => MsFlags::MS_NOATIME,
                "nodiratime" => MsFlags::MS_NODIRATIME,
                "relatime" => MsFlags::MS_RELATIME,
                _ => MsFlags::empty(),
            };
        }
        let mut data: Vec<&str> = super_opts
            .split(',')
            .filter(|o| *o != "rw" && *o != "ro")
            .collect();
        data.push("favordynmods");
        let data = data.join(",");
        let point = super::workdir::unescape(point);
        return match mount(
            None::<&str>,
            point.as_str(),
            None::<&str>,
            flags,
            Some(data.as_str()),
        ) {
            Ok(()) => {
                tracing::info!(
                    "cgroup: set favordynmods on {point} (cgroup moves no longer wait for an RCU grace period)"
                );
                true
            }
            Err(e) => {
                tracing::warn!(
                    "cgroup: could not set favordynmods on {point} ({e}); each sandbox start may wait a few ms"
                );
                false
            }
        };
    }
    true
}

/// Writes limit files; on failure removes the half-made group.
fn write_all(job: &JobCgroup, files: &[(&PathBuf, &str, &str)]) -> std::io::Result<()> {
    for (dir, file, value) in files {
        if let Err(e) = std::fs::write(dir.join(file), value) {
            job.remove();
            return Err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", dir.join(file).display()),
            ));
        }
    }
    Ok(())
}

/// A job's group(s): one directory (v2) or one per controller (v1).
pub struct JobCgroup {
    dirs: Vec<PathBuf>,
    v2: bool,
    /// The memory and pids limits written into it.
    limits: (u64, u64),
    /// The OOM kills counted in it before this job (a reused group keeps
    /// its count).
    oom_kills: u64,
}

impl JobCgroup {
    /// The files the helper writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Whether the kernel's OOM killer struck inside the group during this job.
    pub fn oom_killed(&self) -> bool {
        self.oom_kill_count() > self.oom_kills
    }

    /// The OOM kills the kernel has counted in the group since it was made.
    fn oom_kill_count(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(self.dirs[0].join(file)).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills every process in the group; true when it was seen empty.
    pub fn kill_all(&self) -> bool {
        if self.v2 {
            if self.members().next().is_none() {
                return true;
            }
            if std::fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok() {
                return false;
            }
        }
        // v1 has no cgroup.kill: signal the members until none is left
        // (a fork bomb may add members while we go; the pids limit bounds it).
        for _ in 0..100 {
            let mut any = false;
            for pid in self.members() {
                any = true;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if !any {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        false
    }

    /// The processes in the group (in each of its hierarchies).
    fn members(&self) -> impl Iterator<Item = i32> + '_ {
        self.dirs.iter().flat_map(|dir| {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            procs
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
    }

    /// Removes the group(s); the kernel refuses while a member is alive, so
    /// this retries briefly after a kill.
    pub fn remove(&self) {
        for dir in &self.dirs {
            for _ in 0..200 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                }
            }
        }
    }
}

/// Empty job groups kept for the next job with the same limits. Making a
/// group and removing it cost ~0.5 ms of CPU per job (a mkdir and an rmdir
/// in each hierarchy, then the kernel workers that free it), measured at
/// full load (SPEC §9 throughput). A group is reused only once no process
/// is left in it; its OOM count carries over, so an OOM kill is still
/// judged per job. What a job's scripts charged to it is freed with the
/// run's tmpfs; the page cache of host files they read stays charged
/// until reclaimed, which the next job's limit does first.
pub struct IdleGroups {
    mode: CgroupMode,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    groups: Vec<JobCgroup>,
    /// Set when the server stops: groups handed back later are removed.
    closed: bool,
}

/// At most this many groups wait for reuse; more are removed.
pub const IDLE_GROUPS_MAX: usize = 32;

impl IdleGroups {
    pub fn new(mode: CgroupMode) -> IdleGroups {
        IdleGroups {
            mode,
            idle: Mutex::default(),
        }
    }

    /// An idle group with these limits, or a new one named `name`; None
    /// without cgroups.
    pub fn take(&self, name: &str, limits: &Limits) -> std::io::Result<Option<JobCgroup>> {
        let key = (limits.memory_bytes(), limits.pids);
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let found = idle.groups.iter().rposition(|g| g.limits == key);
            found.map(|i| idle.groups.swap_remove(i))
        };
        match reused {
            Some(group) => Ok(Some(group)),
            None => self.mode.create(name, limits),
        }
    }

    /// Takes a job's group back once its job is over: kills what is left
    /// in it, then keeps it for reuse if it is empty, or removes it.
    pub fn give_back(&self, mut group: JobCgroup) {
        if group.kill_all() {
            group.oom_kills = group.oom_kill_count();
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if !idle.closed && idle.groups.len() < IDLE_GROUPS_MAX {
                idle.groups.push(group);
                return;
            }
        }
        group.remove();
    }

    /// Removes every idle group; groups handed back from now on are removed.
    pub fn close(&self) {
        let groups = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.closed = true;
            std::mem::take(&mut idle.groups)
        };
        for group in groups {
            group.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cli_group_names_a_positive_pid_and_its_namespace() {
        let job = CliJob {
            pid: 4321,
            pid_namespace: 4026531836,
        };
        assert_eq!(job.name(), "job-4321-cli-4026531836");
        assert_eq!(CliJob::parse(&job.name()), Some(job));
        for name in [
            "job-0-cli-1",
            "job--5-cli-1",
            "job-abc-cli-1",
            "job-12-cli",
            "job-12-cli-x",
            "job-3f2a-1",
            "memory.stat",
        ] {
            assert_eq!(CliJob::parse(name), None, "{name}");
        }
    }
}
