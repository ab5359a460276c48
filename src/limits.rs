//! Per-run limits (SPEC §4.4). Defaults here; tenants may override them (§7).

use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;

/// Every limit a run is held to. All sizes in bytes, all times in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall time of one script.
    pub script_timeout_s: u64,
    /// Wall time of a whole run.
    pub run_timeout_s: u64,
    /// CPU time of one script (RLIMIT_CPU).
    pub cpu_s: u64,
    /// Memory of a run (cgroup) and address space of one process (RLIMIT_AS), in MiB.
    pub memory_mib: u64,
    /// Processes and threads of a run.
    pub pids: u64,
    /// Open files of one process (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Size of the sandbox's /tmp tmpfs, in MiB.
    pub tmp_mib: u64,
    /// Bytes a run may write in /work beyond the bundle, in MiB.
    pub work_mib: u64,
    /// Size of one file (RLIMIT_FSIZE; also the unpacker's per-file limit), in MiB.
    pub file_mib: u64,
    /// Size of a run's log, in MiB.
    pub log_mib: u64,
    /// Unpacked size of a bundle, in MiB (§3.2).
    pub unpacked_mib: u64,
    /// Entries of a bundle (§3.2).
    pub entries: u64,
    /// Runs of one tenant at once (§7); 0 means only the server-wide limit applies.
    pub concurrent_runs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            script_timeout_s: 600,
            run_timeout_s: 1800,
            cpu_s: 600,
            memory_mib: 1024,
            pids: 256,
            open_files: 1024,
            tmp_mib: 256,
            work_mib: 512,
            file_mib: 256,
            log_mib: 16,
            unpacked_mib: 512,
            entries: 10_000,
            concurrent_runs: 0,
        }
    }
}

impl Limits {
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib * MIB
    }
    pub fn tmp_bytes(&self) -> u64 {
        self.tmp_mib * MIB
    }
    pub fn work_bytes(&self) -> u64 {
        self.work_mib * MIB
    }
    pub fn file_bytes(&self) -> u64 {
        self.file_mib * MIB
    }
    pub fn log_bytes(&self) -> u64 {
        self.log_mib * MIB
    }
    pub fn unpacked_bytes(&self) -> u64 {
        self.unpacked_mib * MIB
    }
}
