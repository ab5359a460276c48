//! Standard descriptors of the sandbox's processes.

use std::os::fd::{FromRawFd, OwnedFd};

/// Opens `/dev/null` read-only as an owned descriptor.
pub(super) fn dev_null() -> Option<OwnedFd> {
    // SAFETY: open with a NUL-terminated path literal; no allocation (the
    // init and the script's child call this after fork).
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}
