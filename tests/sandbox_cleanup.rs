//! SPEC §5.8: clean-up: nothing of a run outlives it (processes, mounts,
//! cgroups), also after killed calls.
//!
//! Part of the sandbox escape suite (one file per SPEC §5 item, sharing
//! `tests/support/escape.rs`): every guarantee attempted from inside
//! `servo sandbox` by `tests/support/probe.py`. Each probe also runs outside
//! the sandbox (as root on the host, or in throwaway namespaces from
//! `unshare` when the action is destructive), where it must work or fail for
//! another reason than the sandbox's refusal, so a test cannot pass because
//! the probe itself is broken.
//!
//! Runs as root only: `require_root()` skips elsewhere and fails under CI=true.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use support::escape::{
    check, cli_job_cgroups, host_processes_with, kill_marked, marker, remove_leftover_cgroups, run,
    Jail, PROBE_INSIDE, PYTHON,
};
use support::require_root;

#[test]
fn s5_8_nothing_of_a_run_outlives_it() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let mark = marker("cleanup");
    let child = jail
        .command(&[PYTHON, PROBE_INSIDE, "daemon", &mark])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("servo sandbox");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    let show = format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the run must succeed: {show}");
    let left = host_processes_with(&mark);
    kill_marked(&mark);
    assert!(
        left.is_empty(),
        "SPEC §5.8 clean-up: processes outlived the run: {left:?}\n{show}"
    );
    // The one mount `servo sandbox` keeps is its prepared root's pin: a
    // mount namespace, not a mount of the run.
    let state = jail.state_dir();
    let pin = state.join("sandbox/root.mnt");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let leaked: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(state.to_str().expect("utf-8")))
        .filter(|l| !(l.contains(pin.to_str().expect("utf-8")) && l.contains(" - nsfs ")))
        .collect();
    assert!(
        leaked.is_empty(),
        "SPEC §5.8 clean-up: mounts under the state dir outlived the run: {leaked:?}\n{show}"
    );
    // ... and the run left none of its own mounts in that namespace.
    let kept = root_ns_mounts(&pin);
    assert!(
        kept.contains(" / / ") && kept.contains(" /usr "),
        "the prepared root's mount table must be readable: {kept}"
    );
    let of_the_run: Vec<&str> = kept
        .lines()
        .filter(|l| {
            [" /work ", " /tmp ", " /dev/shm ", " /run/servo "]
                .iter()
                .any(|m| l.contains(m))
        })
        .collect();
    assert!(
        of_the_run.is_empty(),
        "SPEC §5.8 clean-up: the run's mounts stayed in the prepared root: {of_the_run:?}"
    );
    let left: Vec<String> = cli_job_cgroups(pid)
        .iter()
        .map(|dir| dir.display().to_string())
        .collect();
    remove_leftover_cgroups(pid);
    assert!(
        left.is_empty(),
        "SPEC §5.8 clean-up: the run's cgroups outlived it: {left:?}\n{show}"
    );
}

/// The cgroup hierarchies `servo sandbox` may use, as `servo/` directories.
fn servo_cgroup_dirs() -> Vec<std::path::PathBuf> {
    [
        "/sys/fs/cgroup/servo",
        "/sys/fs/cgroup/memory/servo",
        "/sys/fs/cgroup/pids/servo",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .filter(|d| d.is_dir())
    .collect()
}

/// A jail in which `/bin/true` has run once.
fn jail_after_one_call() -> Jail {
    let jail = Jail::new();
    let out = jail.run(&["/bin/true"]);
    check(
        out.code == Some(0),
        "§5.8 clean-up",
        "/bin/true must succeed",
        &out,
    );
    jail
}

/// Those of `dirs` that exist, removed (so a failure piles up nothing).
fn take_leftovers(dirs: Vec<std::path::PathBuf>) -> Vec<std::path::PathBuf> {
    let left: Vec<_> = dirs.into_iter().filter(|d| d.exists()).collect();
    for d in &left {
        let _ = std::fs::remove_dir(d);
    }
    left
}

/// Fails under CI=true when `servo sandbox` made no cgroup: these tests
/// check what it leaves in them.
fn cli_parents() -> Vec<std::path::PathBuf> {
    let parents: Vec<_> = servo_cgroup_dirs()
        .into_iter()
        .map(|d| d.join("sandbox"))
        .filter(|d| d.is_dir())
        .collect();
    assert!(
        !parents.is_empty() || std::env::var("CI").as_deref() != Ok("true"),
        "servo sandbox made no cgroup under /sys/fs/cgroup (SPEC §5.7): cannot check its clean-up"
    );
    parents
}

#[test]
fn s5_8_a_call_leaves_no_cgroup_named_after_its_state_dir() {
    if !require_root() {
        return;
    }
    // Every test here has a state dir of its own: a group kept per state dir
    // would pile up one for each, forever.
    let jail = jail_after_one_call();
    cli_parents();
    let instance = servo::sandbox::cgroup_instance_name(&jail.state_dir().join("sandbox"));
    let left = take_leftovers(
        servo_cgroup_dirs()
            .into_iter()
            .map(|d| d.join(&instance))
            .collect(),
    );
    assert!(
        left.is_empty(),
        "SPEC §5.8 clean-up: servo sandbox left a cgroup for its state dir: {left:?}"
    );
}

#[test]
fn s5_8_a_call_removes_groups_left_by_killed_calls() {
    if !require_root() {
        return;
    }
    let jail = jail_after_one_call();
    // Groups named like a `servo sandbox` call's: a finished process's pid
    // (not reused this soon: pids go up) in this PID namespace, which must
    // go; a live process's; and the finished pid in another namespace, where
    // it may be alive: both must stay.
    let mut gone = Command::new("/bin/true").spawn().expect("true");
    gone.wait().expect("wait");
    let mut alive = Command::new("sleep").arg("30").spawn().expect("sleep");
    let ns = std::fs::metadata("/proc/self/ns/pid")
        .expect("pid namespace")
        .ino();
    let parents = cli_parents();
    let named = |pid: u32, ns: u64| -> Vec<std::path::PathBuf> {
        parents
            .iter()
            .map(|p| p.join(format!("job-{pid}-cli-{ns}")))
            .collect()
    };
    let orphans = named(gone.id(), ns);
    let mut others = named(alive.id(), ns);
    others.extend(named(gone.id(), ns + 1));
    for d in orphans.iter().chain(&others) {
        std::fs::create_dir(d).expect("plant a group");
    }
    let out = jail.run(&["/bin/true"]);
    let _ = alive.kill();
    let _ = alive.wait();
    let kept = take_leftovers(others);
    let left = take_leftovers(orphans);
    check(
        out.code == Some(0),
        "§5.8 clean-up",
        "/bin/true must succeed",
        &out,
    );
    assert!(
        left.is_empty(),
        "SPEC §5.8 clean-up: the group of a killed call outlived it: {left:?}"
    );
    assert_eq!(
        kept.len(),
        2 * parents.len(),
        "the groups of a live process, and of another PID namespace, must be left alone"
    );
}

#[test]
fn s5_8_a_group_left_by_a_killed_call_does_not_block_the_next() {
    if !require_root() {
        return;
    }
    let jail = jail_after_one_call();
    let parents = cli_parents();
    // A call killed outright leaves `job-<pid>-cli-<pid namespace>`. The
    // next call here is pid 1 of a new PID namespace: a shell that plants
    // that name for itself, then becomes `servo sandbox`.
    let plant = r#"ns=$(stat -L -c %i /proc/self/ns/pid) || exit 99
while [ "$1" != -- ]; do mkdir "$1/job-1-cli-$ns" || exit 99; shift; done
shift
exec "$@""#;
    let servo = jail.command(&["/bin/true"]);
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "sh", "-c", plant, "sh"])
        .args(&parents)
        .arg("--")
        .arg(servo.get_program())
        .args(servo.get_args());
    let out = run(cmd);
    let left: Vec<_> = parents
        .iter()
        .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("/job-1-cli-"))
        .collect();
    let left = take_leftovers(left);
    check(
        out.code == Some(0),
        "§5.8 clean-up",
        "a stale group of the same name must be replaced, not fail the call",
        &out,
    );
    assert!(
        left.is_empty(),
        "SPEC §5.8 clean-up: the call's group outlived it: {left:?}"
    );
}

/// The mount table of the root namespace pinned at `pin`, read from a private
/// copy of it (with a /proc of its own: the prepared root has none mounted).
fn root_ns_mounts(pin: &Path) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--mount={}", pin.display()))
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t proc proc /proc && cat /proc/self/mountinfo")
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "cannot read the prepared root's mounts: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The copy's own /proc is not the root namespace's.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains(" /proc "))
        .collect::<Vec<_>>()
        .join("\n")
}
