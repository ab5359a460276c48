//! Callbacks (SPEC §2.5): with `--public-url`, a run gets
//! `CALLBACK=<public-url>/callback/<random>`; a POST there while the run is
//! alive stores its body in the run's workdir.
//!
//! The script runs while the callback writes, so it could swap a directory
//! for a symlink at any moment: the file is opened with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so the kernel itself refuses any
//! path that leaves the workdir or passes through a symlink.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Largest callback body.
pub const MAX_CALLBACK_BYTES: u64 = 16 * 1024 * 1024;

/// Where a live run's callbacks go.
#[derive(Clone, Debug)]
pub struct Target {
    pub workdir: PathBuf,
    pub uid: u32,
    pub gid: u32,
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

/// Opens `name` under `dir` for writing, refusing symlinks and escapes.
fn open_beneath(dir: &Path, name: &str) -> std::io::Result<OwnedFd> {
    let root = std::fs::File::open(dir)?;
    let how = OpenHow::new()
        .flags(
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_TRUNC
                | OFlag::O_CLOEXEC
                | OFlag::O_NOFOLLOW,
        )
        .mode(Mode::from_bits_truncate(0o644))
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    nix::fcntl::openat2(root.as_fd(), name, how).map_err(std::io::Error::from)
}

/// Streams a callback body into the run's workdir.
pub async fn store<S, E>(target: &Target, name: &str, mut body: S) -> Result<u64, CallbackError>
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
    tokio::task::spawn_blocking(move || -> Result<u64, CallbackError> {
        let fd = open_beneath(&target.workdir, &name)?;
        nix::unistd::fchown(&fd, Some(target.uid.into()), Some(target.gid.into()))
            .map_err(std::io::Error::from)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&data)?;
        Ok(data.len() as u64)
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
}
