//! Callbacks (SPEC §2.5): with `--public-url`, a run gets
//! `CALLBACK=<public-url>/callback/<random>`; a POST there while the run is
//! alive stores its body in the run's workdir.
//!
//! The script runs while the callback writes, so it could swap a directory
//! for a symlink at any moment: the file is opened with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so the kernel itself refuses any
//! path that leaves the workdir or passes through a symlink.
//!
//! A callback never replaces a file: it is created exclusively
//! (`O_CREAT | O_EXCL`), so neither a bundle file nor a script still to run
//! (nor anything a script wrote) can be swapped by whoever knows the URL; an
//! existing name is refused with 409. Bodies are capped
//! ([`MAX_CALLBACK_BYTES`]), so is the number of callbacks in flight per run
//! ([`MAX_IN_FLIGHT`]), and each stored one is audited (`callback.received`:
//! name, bytes, SHA-256; never the contents).

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Largest callback body.
pub const MAX_CALLBACK_BYTES: u64 = 16 * 1024 * 1024;

/// Most callbacks of one run being received at once; more → 429.
pub const MAX_IN_FLIGHT: usize = 4;

/// Where a live run's callbacks go.
#[derive(Clone, Debug)]
pub struct Target {
    pub workdir: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// The run and its tenant, for the audit record.
    pub run: String,
    pub tenant: String,
    /// Callbacks of this run being received now.
    pub in_flight: Arc<AtomicUsize>,
}

impl Target {
    pub fn new(workdir: PathBuf, uid: u32, gid: u32, run: &str, tenant: &str) -> Target {
        Target {
            workdir,
            uid,
            gid,
            run: run.to_string(),
            tenant: tenant.to_string(),
            in_flight: Arc::default(),
        }
    }

    /// Takes one of the run's [`MAX_IN_FLIGHT`] places, given back on drop.
    pub fn enter(&self) -> Result<InFlight, CallbackError> {
        self.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_IN_FLIGHT).then_some(n + 1)
            })
            .map_err(|_| CallbackError::TooMany)?;
        Ok(InFlight(self.in_flight.clone()))
    }
}

/// A callback being received; frees its place on drop.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What was stored: for the answer and the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub bytes: u64,
    pub sha256: String,
}

/// The live runs' callback secrets.
#[derive(Default)]
pub struct Callbacks {
    live: Mutex<HashMap<String, Target>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("no such callback (the run is over, or never was)")]
    NotFound,
    #[error("bad callback name: {0}")]
    Name(String),
    #[error("callback body larger than {MAX_CALLBACK_BYTES} bytes")]
    TooLarge,
    #[error("the callback body could not be read: {0}")]
    Body(String),
    #[error("the callback body stalled: {0}")]
    Stalled(crate::bundle::upload::Stalled),
    #[error("{0} already exists in the run's workdir: a callback never replaces a file (a bundle file, a script, or an earlier callback); post under another name")]
    Exists(String),
    #[error("too many callbacks in flight for this run (at most {MAX_IN_FLIGHT} at once); retry when one has finished")]
    TooMany,
    #[error("cannot store the callback: {0}")]
    Io(#[from] std::io::Error),
}

impl Callbacks {
    pub fn register(&self, secret: &str, target: Target) {
        self.lock().insert(secret.to_string(), target);
    }

    pub fn remove(&self, secret: &str) {
        self.lock().remove(secret);
    }

    pub fn lookup(&self, secret: &str) -> Option<Target> {
        self.lock().get(secret).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Target>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Splits `/callback/<secret>[/<name>]` into the secret and the file name.
pub fn parse_path(path: &str) -> Result<(&str, String), CallbackError> {
    let rest = path
        .strip_prefix("/callback/")
        .ok_or(CallbackError::NotFound)?;
    let (secret, name) = match rest.split_once('/') {
        Some((s, n)) => (s, n.to_string()),
        None => (rest, "callback.raw".to_string()),
    };
    if secret.is_empty() {
        return Err(CallbackError::NotFound);
    }
    crate::run::request::check_relative_name(&name).map_err(CallbackError::Name)?;
    Ok((secret, name))
}

/// Creates `name` under `dir` for writing, exclusively (an existing name,
/// a symlink included, fails with `EEXIST`), refusing symlinks and escapes.
fn open_beneath(dir: &Path, name: &str) -> std::io::Result<OwnedFd> {
    let root = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let how = OpenHow::new()
        .flags(
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        )
        .mode(Mode::from_bits_truncate(0o644))
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    nix::fcntl::openat2(root.as_fd(), name, how).map_err(std::io::Error::from)
}

/// Reads a callback body (capped) and stores it in the run's workdir as a
/// new file.
pub async fn store<S, E>(target: &Target, name: &str, mut body: S) -> Result<Stored, CallbackError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut data = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(
                |e| match e.into().downcast::<crate::bundle::upload::Stalled>() {
                    Ok(stalled) => CallbackError::Stalled(*stalled),
                    Err(e) => CallbackError::Body(e.to_string()),
                },
            )?;
        if data.len() as u64 + chunk.len() as u64 > MAX_CALLBACK_BYTES {
            return Err(CallbackError::TooLarge);
        }
        data.extend_from_slice(&chunk);
    }
    let (target, name) = (target.clone(), name.to_string());
    tokio::task::spawn_blocking(move || -> Result<Stored, CallbackError> {
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(&data));
        let fd = match open_beneath(&target.workdir, &name) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                return Err(CallbackError::Exists(name))
            }
            Err(e) => return Err(e.into()),
        };
        nix::unistd::fchown(&fd, Some(target.uid.into()), Some(target.gid.into()))
            .map_err(std::io::Error::from)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&data)?;
        Ok(Stored {
            bytes: data.len() as u64,
            sha256,
        })
    })
    .await
    .map_err(|e| CallbackError::Body(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("/callback/abc").unwrap(),
            ("abc", "callback.raw".to_string())
        );
        assert_eq!(
            parse_path("/callback/abc/out/result.json").unwrap(),
            ("abc", "out/result.json".to_string())
        );
        assert!(parse_path("/callback/abc/../x").is_err());
        assert!(parse_path("/callback/").is_err());
    }

    #[test]
    fn never_writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), dir.path().join("file")).unwrap();
        assert!(open_beneath(dir.path(), "link/x").is_err());
        assert!(open_beneath(dir.path(), "file").is_err());
        assert!(open_beneath(dir.path(), "ok.txt").is_ok());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }

    #[test]
    fn never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("next.py"), "print('bundle')").unwrap();
        let err = open_beneath(dir.path(), "next.py").expect_err("replaced a file");
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("next.py")).unwrap(),
            "print('bundle')"
        );
        // A dangling symlink is not created through either.
        std::os::unix::fs::symlink("/nonexistent-servo-test", dir.path().join("dangling")).unwrap();
        assert!(open_beneath(dir.path(), "dangling").is_err());
    }

    #[test]
    fn callbacks_in_flight_are_capped_per_run() {
        let a = Target::new(PathBuf::from("/nonexistent"), 1, 1, "run-a", "default");
        let b = Target::new(PathBuf::from("/nonexistent"), 1, 1, "run-b", "default");
        let held: Vec<_> = (0..MAX_IN_FLIGHT).map(|_| a.enter().unwrap()).collect();
        // The clone the route gets from `lookup` shares the count.
        assert!(matches!(a.clone().enter(), Err(CallbackError::TooMany)));
        assert!(b.enter().is_ok(), "another run's count is its own");
        drop(held);
        assert!(a.enter().is_ok());
    }
}
