//! A run's own volume (SPEC §4.4, §5.2): a tmpfs mounted at the run's
//! directory, holding `work/` (the bundle, mounted at /work in each sandbox)
//! and `relay/` (the portal socket, mounted at /run/servo).
//!
//! Its size caps what scripts may write in /work ("bytes beyond the bundle"),
//! it disappears whole when unmounted, and since each sandbox binds
//! subdirectories of it, /proc/self/mountinfo inside shows `/work` and
//! `/relay` rather than a host path. Without root (rootless mode) the
//! directories are plain ones and only the per-file limit applies.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// The volume's subdirectory mounted at /work.
const WORK: &str = "work";

pub struct RunVolume {
    dir: PathBuf,
    mounted: bool,
}

impl RunVolume {
    /// Where the volume of the run whose directory is `run_dir` lives.
    pub fn dir_of(run_dir: &Path) -> PathBuf {
        run_dir.join("box")
    }

    /// The `work/` of the run whose directory is `run_dir`, before (or
    /// without) its volume: what a callback writes into.
    pub fn work_of(run_dir: &Path) -> PathBuf {
        Self::dir_of(run_dir).join(WORK)
    }

    /// Creates `dir`, mounts a tmpfs of `size` bytes and at most `inodes`
    /// files, directories and links on it when `use_tmpfs`, and makes
    /// `work/` (owned by `owner`) and `relay/` in it.
    pub fn create(
        dir: &Path,
        size: u64,
        inodes: u64,
        use_tmpfs: bool,
        owner: Option<(u32, u32)>,
    ) -> std::io::Result<RunVolume> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().mode(0o711).create(dir)?;
        let mut volume = RunVolume {
            dir: dir.to_path_buf(),
            mounted: false,
        };
        if use_tmpfs {
            let options = format!("size={size},nr_inodes={inodes},mode=0711");
            mount(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(options.as_str()),
            )?;
            volume.mounted = true;
        }
        let work = volume.work();
        std::fs::DirBuilder::new().mode(0o755).create(&work)?;
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&work, Some(uid), Some(gid))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(volume.relay())?;
        Ok(volume)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Mounted at /work: the bundle and what scripts write.
    pub fn work(&self) -> PathBuf {
        self.dir.join(WORK)
    }

    /// Mounted at /run/servo: holds the relay socket.
    pub fn relay(&self) -> PathBuf {
        self.dir.join("relay")
    }

    /// Sets the volume's size to what it holds now plus `extra` bytes (after
    /// unpacking: the bundle, plus what the scripts may write). A remount
    /// changes only the options it names: `nr_inodes` stays.
    pub fn limit_growth(&self, extra: u64) -> std::io::Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let stat = nix::sys::statvfs::statvfs(&self.dir)?;
        let used = (stat.blocks() - stat.blocks_free()) * stat.fragment_size();
        let options = format!("size={},mode=0711", used + extra);
        mount(
            None::<&str>,
            &self.dir,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )?;
        Ok(())
    }
}

impl Drop for RunVolume {
    fn drop(&mut self) {
        if self.mounted {
            let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
        }
    }
}

/// A size-capped tmpfs servo mounts for itself (the runs directory), unmounted
/// when dropped.
pub struct ScratchMount {
    dir: PathBuf,
}

impl ScratchMount {
    pub fn mount(dir: &Path, size: u64) -> std::io::Result<ScratchMount> {
        let options = format!("size={size},mode=0711");
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(options.as_str()),
        )?;
        Ok(ScratchMount {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for ScratchMount {
    fn drop(&mut self) {
        let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
    }
}

/// Unmounts every mount below `dir` (run volumes a crash left behind),
/// deepest first.
pub fn sweep_mounts(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().trim_end_matches('/').to_string() + "/";
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = umount2(p.as_str(), MntFlags::MNT_DETACH);
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub(super) fn unescape(field: &str) -> String {
    let mut out = Vec::new();
    let b = field.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
