//! The safe unpacker (SPEC §3.2) against real archives: made by GNU `tar` for
//! the honest ones, by python3's `tarfile` (and hand-made headers) for the
//! hostile ones. Every rejection also checks that nothing outside the
//! destination changed; what a rejected archive left in the destination is
//! never used (the caller deletes it).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use servo::bundle::unpack::{unpack, UnpackError, UnpackLimits, UnpackSummary};

const MKARCHIVE: &str = include_str!("unpack/mkarchive.py");
const CANARY: &str = "the canary outside the bundle\n";

type Outcome = Result<UnpackSummary, UnpackError>;

/// A scratch directory: `dest/` (empty), `outside/canary.txt`, and archives.
struct Case {
    dir: tempfile::TempDir,
    before: BTreeMap<PathBuf, Vec<u8>>,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("dest")).unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        fs::write(dir.path().join("outside/canary.txt"), CANARY).unwrap();
        fs::write(dir.path().join("mkarchive.py"), MKARCHIVE).unwrap();
        Case {
            dir,
            before: BTreeMap::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn dest(&self) -> PathBuf {
        self.path("dest")
    }

    /// Builds `name` from a spec (see mkarchive.py) with python3's tarfile.
    fn python(&self, name: &str, spec: Value) -> PathBuf {
        let spec_path = self.path(&format!("{name}.json"));
        fs::write(&spec_path, spec.to_string()).unwrap();
        let out = self.path(name);
        let status = Command::new("/usr/bin/python3")
            .arg(self.path("mkarchive.py"))
            .arg(&spec_path)
            .arg(&out)
            .status()
            .expect("python3");
        assert!(status.success(), "mkarchive.py failed for {spec}");
        out
    }

    /// Runs GNU tar in `cwd` (relative to the case) through `sh -c`.
    fn sh(&self, cwd: &str, script: &str) {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(self.path(cwd))
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn unpack_with(&mut self, archive: &Path, limits: &UnpackLimits) -> Outcome {
        self.before = self.outside_dest();
        unpack(archive, &self.dest(), limits, None)
    }

    fn unpack(&mut self, archive: &Path) -> Outcome {
        self.unpack_with(archive, &UnpackLimits::default())
    }

    /// Every path of the case except under dest, with the small files' bytes.
    fn outside_dest(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut seen = BTreeMap::new();
        let mut todo = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = todo.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path == self.dest() {
                    continue;
                }
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    todo.push(path.clone());
                }
                let bytes = if meta.is_file() && meta.len() < 4096 {
                    fs::read(&path).unwrap()
                } else {
                    meta.len().to_le_bytes().to_vec()
                };
                seen.insert(path, bytes);
            }
        }
        seen
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(
            fs::read_to_string(self.path("outside/canary.txt")).unwrap(),
            CANARY
        );
        assert_eq!(
            self.outside_dest(),
            self.before,
            "something changed outside dest"
        );
    }

    /// Asserts an `Unsafe` rejection naming `name`, with `reason` in its reason.
    fn rejects(&self, outcome: Outcome, name: &str, reason: &str) {
        match outcome {
            Err(UnpackError::Unsafe { name: n, reason: r }) => {
                assert_eq!(n, name, "reason: {r}");
                assert!(r.contains(reason), "reason {r:?} lacks {reason:?}");
                let shown = UnpackError::Unsafe { name: n, reason: r }.to_string();
                assert!(shown.starts_with("unsafe archive entry "), "{shown}");
            }
            other => panic!("expected an unsafe entry {name} ({reason}), got {other:?}"),
        }
        self.assert_outside_untouched();
    }

    fn bogus(&self, outcome: Outcome) {
        match outcome {
            Err(e @ UnpackError::Bogus) => assert_eq!(
                e.to_string(),
                "unable to open the archive (bogus payload ?)"
            ),
            other => panic!("expected Bogus, got {other:?}"),
        }
        self.assert_outside_untouched();
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.dest().join(rel)).unwrap()
    }

    fn mode(&self, rel: &str) -> u32 {
        fs::symlink_metadata(self.dest().join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }
}

/// With SERVO_SAVE_ARCHIVES=<dir>, keeps a hostile archive as a fuzzing seed.
fn seed(archive: &Path, name: &str) {
    if let Ok(dir) = std::env::var("SERVO_SAVE_ARCHIVES") {
        fs::copy(archive, Path::new(&dir).join(name)).unwrap();
    }
}

fn small_limits() -> UnpackLimits {
    UnpackLimits {
        max_total_bytes: 4 << 20,
        max_entries: 10,
        max_file_bytes: 1 << 20,
        max_name_bytes: 64 << 10,
    }
}

fn file(name: &str, data: &str) -> Value {
    json!({"name": name, "data": data})
}

// ---------------------------------------------------------------- happy paths

fn make_tree(case: &Case) {
    let src = case.path("src");
    fs::create_dir_all(src.join("lib/sub")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("deploy.py"), "print('deploy')\n").unwrap();
    fs::set_permissions(src.join("deploy.py"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(src.join("lib/util.py"), "X = 1\n").unwrap();
    fs::write(src.join("lib/sub/data.txt"), "data\n").unwrap();
    fs::set_permissions(
        src.join("lib/sub/data.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

#[test]
fn gnu_tar_nested_directories() {
    let mut case = Case::new();
    make_tree(&case);
    case.sh("src", "tar -czf ../bundle.tgz .");
    let summary = case.unpack(&case.path("bundle.tgz")).expect("unpacks");
    assert_eq!(
        summary,
        UnpackSummary {
            files: 3,
            bytes: 16 + 6 + 5
        }
    );
    assert_eq!(case.read("deploy.py"), "print('deploy')\n");
    assert_eq!(case.read("lib/util.py"), "X = 1\n");
    assert_eq!(case.read("lib/sub/data.txt"), "data\n");
    assert!(case.dest().join("empty").is_dir());
    assert_eq!(case.mode("deploy.py"), 0o755);
    assert_eq!(case.mode("lib/sub/data.txt"), 0o644);
    assert_eq!(case.mode("lib/sub"), 0o755);
    assert_eq!(case.mode("empty"), 0o755);
    case.assert_outside_untouched();
}

#[test]
fn star_style_archive_and_implied_directories() {
    let mut case = Case::new();
    make_tree(&case);
    // `tar zcf x.tgz *` names entries without `./`; `lib/sub/data.txt` alone
    // has no directory entries at all.
    case.sh(
        "src",
        "tar zcf ../star.tgz * && tar zcf ../bare.tgz lib/sub/data.txt",
    );
    case.unpack(&case.path("star.tgz")).expect("unpacks");
    assert_eq!(case.read("lib/util.py"), "X = 1\n");

    let mut case2 = Case::new();
    make_tree(&case2);
    case2.sh("src", "tar zcf ../bare.tgz lib/sub/data.txt");
    let summary = case2.unpack(&case2.path("bare.tgz")).expect("unpacks");
    assert_eq!(summary.files, 1);
    assert_eq!(case2.read("lib/sub/data.txt"), "data\n");
    assert_eq!(case2.mode("lib"), 0o755);
}

#[test]
fn long_names_in_pax_and_gnu_formats() {
    for format in ["pax", "gnu"] {
        let mut case = Case::new();
        let long_dir = "d".repeat(150);
        let long_file = format!("{}.py", "f".repeat(200));
        let deep = vec!["x"; 60].join("/");
        let src = case.path("src");
        fs::create_dir_all(src.join(&long_dir)).unwrap();
        fs::create_dir_all(src.join(&deep)).unwrap();
        fs::write(src.join(&long_dir).join(&long_file), "long\n").unwrap();
        fs::write(src.join(&deep).join("deep.py"), "deep\n").unwrap();
        case.sh("src", &format!("tar --format={format} -czf ../long.tgz ."));
        case.unpack(&case.path("long.tgz")).expect(format);
        assert_eq!(case.read(&format!("{long_dir}/{long_file}")), "long\n");
        assert_eq!(case.read(&format!("{deep}/deep.py")), "deep\n");
        case.assert_outside_untouched();
    }
}

#[test]
fn symlinks_and_hardlinks_inside_the_bundle() {
    let mut case = Case::new();
    make_tree(&case);
    let src = case.path("src");
    fs::hard_link(src.join("lib/util.py"), src.join("lib/sub/util-copy.py")).unwrap();
    std::os::unix::fs::symlink("lib/util.py", src.join("link.py")).unwrap();
    std::os::unix::fs::symlink("../../deploy.py", src.join("lib/sub/up.py")).unwrap();
    std::os::unix::fs::symlink("..", src.join("lib/parent")).unwrap();
    case.sh("src", "tar -czf ../links.tgz .");
    let summary = case.unpack(&case.path("links.tgz")).expect("unpacks");
    assert_eq!(summary.files, 4, "3 files and a hardlink");
    assert_eq!(
        summary.bytes,
        16 + 6 + 5 + 6,
        "the hardlink counts its size"
    );
    let dest = case.dest();
    assert_eq!(
        fs::read_link(dest.join("link.py")).unwrap(),
        Path::new("lib/util.py")
    );
    assert_eq!(case.read("lib/sub/up.py"), "print('deploy')\n");
    assert_eq!(case.read("link.py"), "X = 1\n");
    let a = fs::metadata(dest.join("lib/util.py")).unwrap();
    let b = fs::metadata(dest.join("lib/sub/util-copy.py")).unwrap();
    assert_eq!(a.ino(), b.ino(), "a real hardlink");
    assert_eq!(a.nlink(), 2);
    case.assert_outside_untouched();
}

#[test]
fn owner_is_the_callers_never_the_archives() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    let spec = json!({"format": "pax", "entries": [
        {"kind": "dir", "name": "d", "uid": 1234, "gid": 5678, "uname": "evil", "gname": "evil"},
        {"name": "d/a.py", "data": "a\n", "uid": 1234, "gid": 5678, "uname": "root"},
        {"kind": "sym", "name": "d/l", "link": "a.py", "uid": 1234, "gid": 5678},
        {"name": "x/y/z.txt", "data": "z\n", "uid": 1234},
    ]});
    // Without an owner, files belong to whoever unpacks (root here).
    let mut case = Case::new();
    let archive = case.python("owned.tgz", spec.clone());
    case.unpack(&archive).expect("unpacks");
    for rel in ["d", "d/a.py", "d/l", "x", "x/y/z.txt"] {
        let meta = fs::symlink_metadata(case.dest().join(rel)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{rel}");
    }
    // With one, everything created is theirs, implied directories included.
    let case = Case::new();
    let archive = case.python("owned.tgz", spec);
    unpack(
        &archive,
        &case.dest(),
        &UnpackLimits::default(),
        Some((4321, 8765)),
    )
    .unwrap();
    for rel in ["d", "d/a.py", "d/l", "x", "x/y", "x/y/z.txt"] {
        let meta = fs::symlink_metadata(case.dest().join(rel)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4321, 8765), "{rel}");
    }
}

#[test]
fn modes_are_masked() {
    let mut case = Case::new();
    let archive = case.python(
        "modes.tgz",
        json!({"entries": [
            {"kind": "dir", "name": "sticky", "mode": 0o1777},
            {"name": "sticky/setuid", "data": "#!/bin/sh\n", "mode": 0o4755},
            {"name": "setgid", "data": "", "mode": 0o2644},
            {"name": "private", "data": "", "mode": 0o600},
            {"name": "owner-exec", "data": "", "mode": 0o100},
            {"name": "world-write", "data": "", "mode": 0o666},
        ]}),
    );
    case.unpack(&archive).expect("unpacks");
    assert_eq!(case.mode("sticky"), 0o755);
    assert_eq!(case.mode("sticky/setuid"), 0o755);
    assert_eq!(case.mode("setgid"), 0o644);
    assert_eq!(case.mode("private"), 0o644);
    assert_eq!(case.mode("owner-exec"), 0o755);
    assert_eq!(case.mode("world-write"), 0o644);
}

#[test]
fn explicit_directory_after_implied_one_and_dot_entries() {
    let mut case = Case::new();
    let archive = case.python(
        "order.tgz",
        json!({"entries": [
            {"kind": "dir", "name": "."},
            file("./a/b.py", "b\n"),
            {"kind": "dir", "name": "a"},
            {"kind": "dir", "name": "./a/c/"},
        ]}),
    );
    let summary = case.unpack(&archive).expect("unpacks");
    assert_eq!(summary, UnpackSummary { files: 1, bytes: 2 });
    assert_eq!(case.read("a/b.py"), "b\n");
    assert!(case.dest().join("a/c").is_dir());
}

#[test]
fn global_pax_header_is_skipped_unless_it_renames() {
    // `git archive` starts with a global header holding the commit id.
    let mut case = Case::new();
    let archive = case.python(
        "git.tgz",
        json!({"format": "pax", "global": {"comment": "0123abcd"}, "entries": [file("a.py", "a\n")]}),
    );
    case.unpack(&archive).expect("unpacks");
    assert_eq!(case.read("a.py"), "a\n");

    let mut case = Case::new();
    let archive = case.python(
        "global-path.tgz",
        json!({"format": "pax", "global": {"path": "../outside/canary.txt"}, "entries": [file("a.py", "a\n")]}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(outcome, "././@PaxHeader", "sets path");
    seed(&archive, "global-pax-path.tgz");
}

#[test]
fn small_trailing_data_inside_gzip_is_ignored() {
    // GNU tar pads to a 10 KiB record; anything after the end blocks but
    // inside the gzip member is ignored too.
    let mut case = Case::new();
    make_tree(&case);
    case.sh(
        "src",
        "tar -cf ../t.tar deploy.py && (cat ../t.tar; printf 'junk after the tar') | gzip -n > ../t.tgz",
    );
    case.unpack(&case.path("t.tgz")).expect("unpacks");
    assert_eq!(case.read("deploy.py"), "print('deploy')\n");
}

#[test]
fn pax_size_overrides_the_header_size() {
    let mut case = Case::new();
    let archive = case.python(
        "paxsize.tgz",
        json!({"entries": [
            {"kind": "raw", "name": "big.txt", "data": "0123456789", "header_size": 5,
             "pax": [["size", "10"]]},
            file("after.txt", "after\n"),
        ]}),
    );
    case.unpack(&archive).expect("unpacks");
    assert_eq!(case.read("big.txt"), "0123456789");
    assert_eq!(case.read("after.txt"), "after\n");
}

// ------------------------------------------------------------------- names

#[test]
fn absolute_names_are_rejected() {
    let mut case = Case::new();
    let target = case.path("outside/canary.txt");
    let name = target.to_str().unwrap().to_string();
    let archive = case.python(
        "abs.tgz",
        json!({"format": "gnu", "entries": [file(&name, "pwned\n")]}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(outcome, &name, "absolute");

    let mut case = Case::new();
    let archive = case.python(
        "abs2.tgz",
        json!({"entries": [file("/etc/servo-test-pwned", "x")]}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(outcome, "/etc/servo-test-pwned", "absolute");
    assert!(!Path::new("/etc/servo-test-pwned").exists());
    seed(&archive, "absolute-name.tgz");
}

#[test]
fn dotdot_components_are_rejected() {
    for name in [
        "../outside/canary.txt",
        "a/../../outside/canary.txt",
        "a/..",
    ] {
        let mut case = Case::new();
        let archive = case.python("dotdot.tgz", json!({"entries": [file(name, "pwned\n")]}));
        let outcome = case.unpack(&archive);
        case.rejects(outcome, name, "has a .. component");
        if name.starts_with("..") {
            seed(&archive, "dotdot-name.tgz");
        }
    }
}

#[test]
fn long_and_deep_names_are_rejected() {
    let long = "n".repeat(4097);
    let mut case = Case::new();
    let archive = case.python(
        "long.tgz",
        json!({"format": "pax", "entries": [file(&long, "x")]}),
    );
    let outcome = case.unpack(&archive);
    let shown = format!("{}...", "n".repeat(200));
    case.rejects(outcome, &shown, "longer than 4096 bytes");

    // The same through a GNU long name.
    let mut case = Case::new();
    let archive = case.python(
        "long.tgz",
        json!({"format": "gnu", "entries": [file(&long, "x")]}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(outcome, &shown, "longer than 4096 bytes");

    let ok = vec!["d"; 63].join("/") + "/f";
    let deep = vec!["d"; 64].join("/") + "/f";
    let mut case = Case::new();
    let archive = case.python(
        "deep.tgz",
        json!({"entries": [file(&ok, "ok\n"), file(&deep, "x")]}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(outcome, &deep, "more than 64 levels deep");
    seed(&archive, "depth-65.tgz");
    assert_eq!(case.read(&ok), "ok\n", "depth 64 was fine");
}

#[test]
fn nul_in_names_is_rejected() {
    // A GNU long name and a PAX path carry NULs the ustar field cannot.
    let mut case = Case::new();
    let archive = case.python(
        "nul.tgz",
        json!({"entries": [{"kind": "raw", "name": "short", "gnu_long": "a.py\u{0}/etc/passwd", "data": "x"}]}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(outcome, "a.py\u{0}/etc/passwd", "NUL");
    seed(&archive, "nul-gnu-longname.tgz");

    let mut case = Case::new();
    let archive = case.python(
        "nul2.tgz",
        json!({"entries": [{"kind": "raw", "name": "short", "pax": [["path", "b.py\u{0}x"]], "data": "x"}]}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(outcome, "b.py\u{0}x", "NUL");
}

#[test]
fn duplicates_are_rejected() {
    let cases = [
        (
            vec![file("a.py", "1"), file("a.py", "2")],
            "a.py",
            "earlier entry",
        ),
        (
            vec![file("./a.py", "1"), file("a.py", "2")],
            "a.py",
            "earlier entry",
        ),
        (
            vec![
                json!({"kind": "dir", "name": "d"}),
                json!({"kind": "dir", "name": "d/"}),
            ],
            "d/",
            "earlier entry",
        ),
        (
            vec![json!({"kind": "dir", "name": "d"}), file("d", "x")],
            "d",
            "earlier entry",
        ),
        (vec![file("f", "x"), file("f/g", "y")], "f/g", "f is a file"),
        (
            vec![file("a/b", "x"), file("a", "y")],
            "a",
            "inside it, as a directory",
        ),
        (
            vec![
                file("t", "x"),
                json!({"kind": "sym", "name": "t", "link": "u"}),
            ],
            "t",
            "earlier entry",
        ),
    ];
    for (entries, name, reason) in cases {
        let mut case = Case::new();
        let archive = case.python("dup.tgz", json!({"entries": entries}));
        let outcome = case.unpack(&archive);
        case.rejects(outcome, name, reason);
    }
    let case = Case::new();
    let archive = case.python(
        "dup.tgz",
        json!({"entries": [file("a.py", "1"), file("a.py", "2")]}),
    );
    seed(&archive, "duplicate.tgz");
}

// ------------------------------------------------------------------ links

#[test]
fn symlink_escapes_are_rejected() {
    let cases = [
        ("link", "../../etc", "leaves the bundle"),
        ("link", "../outside", "leaves the bundle"),
        ("a/b/link", "../../../outside", "leaves the bundle"),
        ("link", "/etc", "is absolute"),
        ("link", "sub/../..", "has a .. after a name"),
        ("link", "", "empty"),
    ];
    for (name, target, reason) in cases {
        let mut case = Case::new();
        let archive = case.python(
            "sym.tgz",
            json!({"entries": [
                {"kind": "sym", "name": name, "link": target},
                file(&format!("{name}/canary.txt"), "pwned\n"),
            ]}),
        );
        let outcome = case.unpack(&archive);
        case.rejects(outcome, name, reason);
        if target == "../../etc" {
            seed(&archive, "symlink-escape.tgz");
        }
        if target == "/etc" {
            seed(&archive, "symlink-absolute.tgz");
        }
        assert!(fs::symlink_metadata(case.dest().join(name)).is_err());
    }
}

#[test]
fn nothing_is_written_through_a_symlink() {
    // The symlink itself is fine; a later entry going through it is not,
    // whatever its type.
    let later = [
        file("ok/x.py", "pwned\n"),
        json!({"kind": "dir", "name": "ok/d"}),
        json!({"kind": "sym", "name": "ok/l", "link": "x"}),
        json!({"kind": "hard", "name": "ok/h", "link": "sub/f"}),
        file("ok/./deeper/x.py", "pwned\n"),
    ];
    for entry in later {
        let mut case = Case::new();
        // tarfile writes directory names with a trailing slash.
        let name = entry["name"].as_str().unwrap().to_string()
            + if entry["kind"] == "dir" { "/" } else { "" };
        let archive = case.python(
            "through.tgz",
            json!({"entries": [
                file("sub/f", "f\n"),
                {"kind": "sym", "name": "ok", "link": "sub"},
                entry,
            ]}),
        );
        let outcome = case.unpack(&archive);
        case.rejects(outcome, &name, "written through the symlink ok");
        seed(&archive, "through-symlink.tgz");
        assert_eq!(fs::read_dir(case.dest().join("sub")).unwrap().count(), 1);
    }
}

#[test]
fn hardlinks_must_point_to_earlier_regular_files() {
    let canary = Case::new().path("outside/canary.txt");
    let cases = [
        vec![json!({"kind": "hard", "name": "h", "link": "/etc/passwd"})],
        vec![json!({"kind": "hard", "name": "h", "link": "../outside/canary.txt"})],
        vec![json!({"kind": "hard", "name": "h", "link": canary.to_str().unwrap()})],
        // Later, unknown, a directory, a symlink, itself.
        vec![
            json!({"kind": "hard", "name": "h", "link": "later"}),
            file("later", "x"),
        ],
        vec![json!({"kind": "hard", "name": "h", "link": "nowhere"})],
        vec![
            json!({"kind": "dir", "name": "d"}),
            json!({"kind": "hard", "name": "h", "link": "d"}),
        ],
        vec![
            file("f", "x"),
            json!({"kind": "sym", "name": "s", "link": "f"}),
            json!({"kind": "hard", "name": "h", "link": "s"}),
        ],
        vec![json!({"kind": "hard", "name": "h", "link": "h"})],
    ];
    for (i, entries) in cases.into_iter().enumerate() {
        let mut case = Case::new();
        let archive = case.python("hard.tgz", json!({"entries": entries}));
        let outcome = case.unpack(&archive);
        case.rejects(outcome, "h", "is not an earlier regular file of the bundle");
        if i == 0 {
            seed(&archive, "hardlink-etc-passwd.tgz");
        }
        assert!(fs::symlink_metadata(case.dest().join("h")).is_err());
    }
}

// ------------------------------------------------------------------- types

#[test]
fn devices_fifos_and_odd_types_are_rejected() {
    let cases = [
        ("chr", "a character device (type '3')"),
        ("blk", "a block device (type '4')"),
        ("fifo", "a fifo (type '6')"),
    ];
    for (kind, reason) in cases {
        let mut case = Case::new();
        let archive = case.python(
            "dev.tgz",
            json!({"entries": [{"kind": kind, "name": "dev"}]}),
        );
        let outcome = case.unpack(&archive);
        case.rejects(outcome, "dev", reason);
        seed(&archive, &format!("type-{kind}.tgz"));
        assert!(fs::symlink_metadata(case.dest().join("dev")).is_err());
    }
    for (ty, reason) in [
        ("V", "a GNU volume label (type 'V')"),
        ("Z", "an entry of an unknown type (type 'Z')"),
        ("D", "a GNU dump directory"),
    ] {
        let mut case = Case::new();
        let archive = case.python(
            "odd.tgz",
            json!({"entries": [{"kind": "raw", "name": "odd", "type": ty, "data": "x"}]}),
        );
        let outcome = case.unpack(&archive);
        case.rejects(outcome, "odd", reason);
    }
}

#[test]
fn gnu_sparse_files_are_rejected() {
    // 20 GiB of holes declared by a few hundred bytes.
    let mut case = Case::new();
    let archive = case.python(
        "sparse.tgz",
        json!({"entries": [{"kind": "raw", "name": "sparse", "type": "S", "header_size": 0,
                            "sparse_realsize": 20u64 << 30}]}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(outcome, "sparse", "a GNU sparse file (type 'S')");
    seed(&archive, "gnu-sparse.tgz");

    // The PAX form of GNU sparse files.
    let mut case = Case::new();
    let archive = case.python(
        "paxsparse.tgz",
        json!({"entries": [{"kind": "raw", "name": "sparse", "data": "x",
                            "pax": [["GNU.sparse.major", "1"], ["GNU.sparse.minor", "0"],
                                    ["GNU.sparse.realsize", "21474836480"]]}]}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(outcome, "sparse", "GNU sparse file (PAX format)");
}

#[test]
fn bad_pax_sizes_are_rejected() {
    let mut case = Case::new();
    let archive = case.python(
        "paxsize.tgz",
        json!({"entries": [{"kind": "raw", "name": "f", "data": "0123456789",
                            "pax": [["size", "+10"]]}]}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(outcome, "f", "PAX size +10");

    // A huge PAX size is caught by the limits before anything is written.
    let mut case = Case::new();
    let archive = case.python(
        "paxhuge.tgz",
        json!({"entries": [{"kind": "raw", "name": "f", "data": "0123456789",
                            "pax": [["size", "1099511627776"]]}], "end": false}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(outcome, "f", "exceeds the 256 MiB per-file limit");
    seed(&archive, "pax-size-1tib.tgz");
    assert!(fs::symlink_metadata(case.dest().join("f")).is_err());
}

#[test]
fn huge_extended_headers_are_rejected() {
    // The tar crate would hold a GNU long name whole in memory: 64 MiB of it
    // is refused after 1 MiB.
    let mut case = Case::new();
    let archive = case.python(
        "longlong.tgz",
        json!({"entries": [{"kind": "raw", "name": "L", "type": "L", "header_size": 64u64 << 20,
                            "no_data": true}], "end": false, "zero_mib": 65}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(
        outcome,
        "(archive)",
        "extended header (PAX or GNU long name) is larger than 1 MiB",
    );
}

#[test]
fn pax_and_gnu_records_are_what_is_checked() {
    // The name the tar crate reports (from the PAX record, not the ustar
    // field) is the one judged.
    let mut case = Case::new();
    let archive = case.python(
        "paxpath.tgz",
        json!({"entries": [{"kind": "raw", "name": "innocent.py", "data": "pwned\n",
                            "pax": [["path", "../outside/canary.txt"]]}]}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(outcome, "../outside/canary.txt", "has a .. component");
    seed(&archive, "pax-path-dotdot.tgz");

    let mut case = Case::new();
    let archive = case.python(
        "paxlink.tgz",
        json!({"entries": [{"kind": "raw", "name": "l", "type": "2", "link": "fine",
                            "pax": [["linkpath", "../../etc"]]}]}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(
        outcome,
        "l",
        "the symlink target ../../etc leaves the bundle",
    );

    // Extension headers the crate does not consume (an old v7 header has no
    // ustar magic) are refused rather than unpacked as files.
    for (ty, reason) in [
        ("x", "a misplaced PAX header"),
        ("L", "a misplaced GNU long-name header"),
    ] {
        let mut case = Case::new();
        let archive = case.python(
            "v7.tgz",
            json!({"entries": [{"kind": "raw", "name": "ext", "type": ty, "v7": true,
                                "data": "27 path=../outside/x.py\n"}]}),
        );
        let outcome = case.unpack(&archive);
        case.rejects(outcome, "ext", reason);
    }
}

// ---------------------------------------------------------------- limits

#[test]
fn a_gzip_bomb_stops_at_the_file_limit() {
    // 1 GiB of zeros in one file, in about 1 MiB of gzip.
    let mut case = Case::new();
    let archive = case.python(
        "bomb.tgz",
        json!({"entries": [{"kind": "raw", "name": "zeros", "header_size": 1u64 << 30,
                            "no_data": true}], "end": false, "zero_mib": 1025}),
    );
    assert!(fs::metadata(&archive).unwrap().len() < 2 << 20);
    let outcome = case.unpack(&archive);
    case.rejects(outcome, "zeros", "exceeds the 256 MiB per-file limit");
    assert!(fs::symlink_metadata(case.dest().join("zeros")).is_err());
}

#[test]
fn the_total_limit_stops_extraction_at_once() {
    let entries: Vec<Value> = (0..8)
        .map(|i| json!({"name": format!("z{i}"), "zeros": 1 << 20}))
        .collect();
    let mut case = Case::new();
    let archive = case.python("many.tgz", json!({"entries": entries}));
    let outcome = case.unpack_with(&archive, &small_limits());
    case.rejects(outcome, "z4", "the bundle exceeds the 4 MiB unpacked limit");
    let written: u64 = fs::read_dir(case.dest())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(written, 4 << 20, "four files, then nothing");

    // Hardlinks count their size again.
    let mut case = Case::new();
    let archive = case.python(
        "links.tgz",
        json!({"entries": [
            {"name": "z", "zeros": 1 << 20},
            {"kind": "hard", "name": "h1", "link": "z"},
            {"kind": "hard", "name": "h2", "link": "z"},
            {"kind": "hard", "name": "h3", "link": "z"},
            {"kind": "hard", "name": "h4", "link": "z"},
        ]}),
    );
    let outcome = case.unpack_with(&archive, &small_limits());
    case.rejects(outcome, "h4", "exceeds the 4 MiB unpacked limit");

    // One file over the per-file limit.
    let mut case = Case::new();
    let archive = case.python(
        "one.tgz",
        json!({"entries": [{"name": "big", "zeros": (1 << 20) + 1}]}),
    );
    let outcome = case.unpack_with(&archive, &small_limits());
    case.rejects(outcome, "big", "exceeds the 1 MiB per-file limit");
}

#[test]
fn too_many_entries_are_rejected() {
    // At the top level: no implied directories (see
    // implied_directories_count_as_entries).
    let entries: Vec<Value> = (0..11).map(|i| file(&format!("f{i}"), "x")).collect();
    let mut case = Case::new();
    let archive = case.python("entries.tgz", json!({"entries": entries}));
    let outcome = case.unpack_with(&archive, &small_limits());
    case.rejects(outcome, "f10", "more than 10 entries");

    let entries: Vec<Value> = (0..10).map(|i| file(&format!("f{i}"), "x")).collect();
    let mut case = Case::new();
    let archive = case.python("entries.tgz", json!({"entries": entries}));
    let summary = case
        .unpack_with(&archive, &small_limits())
        .expect("10 is fine");
    assert_eq!(summary.files, 10);
}

#[test]
fn trailing_zeros_inside_gzip_are_bounded() {
    // A valid tar followed by 64 MiB of zeros in the same member: ignored
    // data, but only up to the limits' worth.
    let mut case = Case::new();
    let archive = case.python(
        "trail.tgz",
        json!({"entries": [file("a.py", "a\n")], "zero_mib": 64}),
    );
    let outcome = case.unpack_with(&archive, &small_limits());
    case.rejects(outcome, "(end of archive)", "decompresses to more than");

    // Within the limits it is ignored.
    let mut case = Case::new();
    let archive = case.python(
        "trail.tgz",
        json!({"entries": [file("a.py", "a\n")], "zero_mib": 2}),
    );
    case.unpack_with(&archive, &small_limits())
        .expect("ignored");
    assert_eq!(case.read("a.py"), "a\n");
}

// ------------------------------------------------------------------- gzip

#[test]
fn a_second_gzip_member_is_rejected() {
    let mut case = Case::new();
    make_tree(&case);
    case.sh(
        "src",
        "tar -czf ../a.tgz deploy.py && tar -czf ../b.tgz lib && cat ../a.tgz ../b.tgz > ../two.tgz",
    );
    let outcome = case.unpack(&case.path("two.tgz"));
    case.rejects(
        outcome,
        "(end of archive)",
        "data after the end of the gzip stream",
    );
    seed(&case.path("two.tgz"), "two-gzip-members.tgz");
}

#[test]
fn garbage_after_gzip_is_rejected() {
    let mut case = Case::new();
    let archive = case.python(
        "garbage.tgz",
        json!({"entries": [file("a.py", "a\n")], "after_gzip": "garbage"}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(
        outcome,
        "(end of archive)",
        "data after the end of the gzip stream",
    );
    seed(&archive, "garbage-after-gzip.tgz");

    // A single byte is enough.
    let mut case = Case::new();
    let archive = case.python(
        "garbage.tgz",
        json!({"entries": [file("a.py", "a\n")], "after_gzip": "\n"}),
    );
    let outcome = case.unpack(&archive);
    case.rejects(
        outcome,
        "(end of archive)",
        "data after the end of the gzip stream",
    );
}

#[test]
fn not_gzip_or_not_tar_is_bogus() {
    let mut case = Case::new();
    make_tree(&case);
    case.sh(
        "src",
        "tar -cf ../plain.tar . \
         && printf 'hello, not an archive\\n' > ../text \
         && gzip -c ../text > ../text.gz \
         && head -c 2000 /dev/urandom | gzip -c > ../random.gz \
         && : > ../empty \
         && gzip -c ../empty > ../empty.gz \
         && tar -czf ../full.tgz . \
         && head -c $(( $(stat -c %s ../full.tgz) / 2 )) ../full.tgz > ../truncated.tgz \
         && head -c -4 ../full.tgz > ../no-trailer.tgz",
    );
    for name in [
        "plain.tar",
        "text",
        "text.gz",
        "random.gz",
        "empty",
        "empty.gz",
        "truncated.tgz",
        "no-trailer.tgz",
    ] {
        let outcome = case.unpack(&case.path(name));
        case.bogus(outcome);
        // Each attempt starts from an empty dest.
        fs::remove_dir_all(case.dest()).unwrap();
        fs::create_dir(case.dest()).unwrap();
    }
    seed(&case.path("text.gz"), "gzip-of-text.tgz");

    // A corrupt gzip trailer (bad CRC) is caught too.
    let mut bytes = fs::read(case.path("full.tgz")).unwrap();
    let n = bytes.len();
    bytes[n - 8] ^= 0xff;
    fs::File::create(case.path("badcrc.tgz"))
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let outcome = case.unpack(&case.path("badcrc.tgz"));
    case.bogus(outcome);
}

#[test]
fn dest_must_be_empty() {
    let mut case = Case::new();
    fs::write(case.dest().join("left-over"), "x").unwrap();
    let archive = case.python("a.tgz", json!({"entries": [file("a.py", "a\n")]}));
    match case.unpack(&archive) {
        Err(UnpackError::Io(e)) => assert!(e.to_string().contains("not empty"), "{e}"),
        other => panic!("expected Io, got {other:?}"),
    }
}

// ------------------------------------------------------------- seed corpus

#[test]
fn every_seed_archive_is_rejected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/archives");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "tgz") {
            continue;
        }
        seen += 1;
        let mut case = Case::new();
        match case.unpack(&path) {
            Err(UnpackError::Unsafe { .. }) | Err(UnpackError::Bogus) => {}
            other => panic!("{}: expected a rejection, got {other:?}", path.display()),
        }
        case.assert_outside_untouched();
    }
    assert!(seen >= 10, "the seed corpus is in tests/data/archives");
}

/// A gzipped tar of `files` (name, data), long names as GNU long-name entries.
fn tar_of(path: &Path, files: impl Iterator<Item = (String, Vec<u8>)>) {
    let out = fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, &name, data.as_slice())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

/// Counts what `dir` holds, recursively.
fn count_inodes(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            1 + if e.file_type().unwrap().is_dir() {
                count_inodes(&e.path())
            } else {
                0
            }
        })
        .sum()
}

#[test]
fn implied_directories_count_as_entries() {
    // 10,000 files, each 60 levels deep in its own chain: 10,000 tar
    // entries, but 600,000 inodes and names if the implied directories
    // were free.
    let chain = |i: usize| format!("{i}/{}f", "d/".repeat(58));
    let mut case = Case::new();
    let archive = case.path("deep.tgz");
    tar_of(&archive, (0..10_000).map(|i| (chain(i), b"x".to_vec())));
    let outcome = case.unpack(&archive);
    // Each file is 1 entry plus 59 implied directories: the 167th passes 10,000.
    case.rejects(outcome, &chain(166), "more than 10000 entries");
    assert!(count_inodes(&case.dest()) <= 10_000);

    // With small limits: 5 files in one implied directory are 6 entries.
    let mut case = Case::new();
    let archive = case.path("small.tgz");
    tar_of(
        &archive,
        (0..10).map(|i| (format!("a/b/f{i}"), b"x".to_vec())),
    );
    let outcome = case.unpack_with(&archive, &small_limits());
    case.rejects(outcome, "a/b/f8", "more than 10 entries");
}

#[test]
fn total_name_bytes_are_capped() {
    // 1,200 files under one 15-level path of 250-byte components: each name
    // is ~3.8 KB (within the 4096 per name), 4.5 MB in all; the cap stops
    // it at the 1,105th.
    let dir = vec!["c".repeat(250); 15].join("/");
    let name = |i: usize| format!("{dir}/f{i}");
    let mut case = Case::new();
    let archive = case.path("names.tgz");
    tar_of(&archive, (0..1_200).map(|i| (name(i), Vec::new())));
    let outcome = case.unpack(&archive);
    // Errors show a long name's first 200 bytes.
    let shown = format!("{}...", &name(0)[..200]);
    case.rejects(outcome, &shown, "the bundle's names exceed 4 MiB in total");
}
