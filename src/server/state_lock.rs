//! One server per state dir: `STATE/servo.lock`.

use std::path::Path;

use super::{io_err, ServeError};

/// Takes `STATE/servo.lock` for this server's life (released when its
/// process ends, however it ends). A second server on the same state dir
/// would take the first one's runs for a crash's leftovers and sweep them.
pub fn lock_state_dir(state_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, ServeError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join("servo.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io_err("cannot open", &path))?;
    let mut held = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(held) => held,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(ServeError::StateDirInUse {
                path: state_dir.to_owned(),
                holder: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        }
        Err((_, e)) => return Err(io_err("cannot lock", &path)(e.into())),
    };
    // The holder's pid, for the message above.
    let _ = held
        .set_len(0)
        .and_then(|_| held.rewind())
        .and_then(|_| write!(held, "{}", std::process::id()));
    Ok(held)
}
