//! SPEC §5.4: IPC and UTS namespaces: the hostname is servo and fixed, the
//! host's SysV IPC is invisible.
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

use support::escape::{check, expect, outside, outside_unshared, Jail, EPERM};
use support::require_root;

#[test]
fn s5_4_hostname_is_servo_and_cannot_be_changed() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let inside = jail.probe("hostname", &[]);
    check(
        inside.detail() == "servo",
        "§5.4 UTS namespace",
        "the hostname must be `servo`",
        &inside,
    );
    let host = outside_unshared(&jail.workdir(), "sethostname", &[]);
    expect(
        &host,
        "ok",
        "§5.4 (control)",
        "sethostname in a fresh UTS namespace",
    );
    let inside = jail.probe("sethostname", &[]);
    expect(
        &inside,
        EPERM,
        "§5.4 UTS namespace",
        "sethostname must be refused",
    );
}

/// A SysV shared memory segment on the host, removed on drop.
struct HostShm(i32);

impl Drop for HostShm {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID reads no buffer (null is allowed); the id is ours.
        unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

#[test]
fn s5_4_host_sysv_ipc_is_not_visible() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let key = 0x5E00_0000 | (std::process::id() as i32 & 0x00FF_FFFF);
    // SAFETY: shmget takes integers only and returns an id or -1.
    let id = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | 0o666) };
    assert!(id >= 0, "cannot create a SysV shm segment on the host");
    let _shm = HostShm(id);
    let key = key.to_string();
    let host = outside(&jail.workdir(), "shm", &[&key]);
    expect(
        &host,
        "ok",
        "§5.4 (control)",
        "the host sees its shm segment",
    );
    let inside = jail.probe("shm", &[&key]);
    expect(
        &inside,
        "errno=2",
        "§5.4 IPC namespace",
        "the host's shm segment must not exist inside (ENOENT)",
    );
}
