//! Streaming an upload to disk (SPEC §3.1): the archive is written to a file in
//! the run's directory while its digests are computed; it is never held whole
//! in memory, and it stops at the size limit.

use std::path::Path;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::signature::ArchiveDigest;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("upload larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the request body could not be read: {0}")]
    Body(String),
    #[error("bad multipart body: {0}")]
    Multipart(String),
    #[error("no tgz field in the multipart body (curl -F tgz=@upload.tgz)")]
    NoArchiveField,
    #[error("could not store the upload: {0}")]
    Io(#[from] std::io::Error),
    #[error("the upload stalled: no data for {0} s")]
    Stalled(u64),
    #[error("the upload was too slow: {0}")]
    TooSlow(String),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a body stream cut off by [`idle_limited`] fails with.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0} s")]
pub struct Stalled(pub u64);

/// `stream`, failing with [`Stalled`] (and then ending) when no item comes
/// for `idle`: a client that stops sending mid-upload does not hold its
/// place, a run directory and a connection for ever.
pub fn idle_limited<S, E>(
    stream: S,
    idle: std::time::Duration,
) -> std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<BoxError> + 'static,
{
    paced(
        stream,
        Pace {
            idle,
            min_rate: 0,
            grace: std::time::Duration::ZERO,
        },
    )
}

/// How a body must keep coming (SPEC §2.1).
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Longest pause between two chunks.
    pub idle: std::time::Duration,
    /// Slowest average rate, in bytes/s, once `grace` has passed (0: none).
    pub min_rate: u64,
    pub grace: std::time::Duration,
}

/// What a body stream cut off by [`paced`] for its rate fails with.
#[derive(Debug, thiserror::Error)]
#[error("under {rate} bytes/s on average after {grace_s} s")]
pub struct TooSlow {
    pub rate: u64,
    pub grace_s: u64,
}

/// `stream`, failing (and then ending) with [`Stalled`] when no item comes
/// for `pace.idle`, or with [`TooSlow`] as soon as, past `pace.grace`, fewer
/// than `pace.min_rate` bytes per second on average have come: a client
/// that trickles a byte now and then cannot hold a place for long.
pub fn paced<S, E>(
    stream: S,
    pace: Pace,
) -> std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<BoxError> + 'static,
{
    let start = tokio::time::Instant::now();
    Box::pin(futures_util::stream::unfold(
        Some((stream, 0u64)),
        move |state| async move {
            let (mut stream, total) = state?;
            let idle_at = tokio::time::Instant::now() + pace.idle;
            // When the average falls below the minimum if nothing more comes.
            let slow_at = (pace.min_rate > 0).then(|| {
                let earned =
                    std::time::Duration::from_secs_f64(total as f64 / pace.min_rate as f64);
                start + pace.grace.max(earned)
            });
            let deadline = slow_at.map_or(idle_at, |s| s.min(idle_at));
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    let total = total + chunk.len() as u64;
                    Some((Ok(chunk), Some((stream, total))))
                }
                Ok(Some(Err(e))) => Some((Err(e.into()), None)),
                Ok(None) => None,
                Err(_) if slow_at.is_some_and(|s| s < idle_at) => {
                    let slow = TooSlow {
                        rate: pace.min_rate,
                        grace_s: pace.grace.as_secs(),
                    };
                    Some((Err(slow.into()), None))
                }
                Err(_) => Some((Err(Stalled(pace.idle.as_secs()).into()), None)),
            }
        },
    ))
}

/// The upload error for a failed read of the body: a stall (ours, or the
/// same seen through multer) or anything else the body said.
fn body_error(e: BoxError) -> UploadError {
    let inner = match e.downcast_ref() {
        Some(multer::Error::StreamReadFailed(inner)) => Some(inner),
        _ => None,
    };
    if let Some(slow) = e
        .downcast_ref::<TooSlow>()
        .or_else(|| inner.and_then(|i| i.downcast_ref::<TooSlow>()))
    {
        return UploadError::TooSlow(slow.to_string());
    }
    let stalled = e
        .downcast_ref::<Stalled>()
        .or_else(|| match e.downcast_ref() {
            Some(multer::Error::StreamReadFailed(inner)) => inner.downcast_ref::<Stalled>(),
            _ => None,
        });
    match stalled {
        Some(Stalled(secs)) => UploadError::Stalled(*secs),
        None => UploadError::Body(e.to_string()),
    }
}

/// Room for the multipart framing and the other fields around the archive.
pub const MULTIPART_FRAMING: u64 = 64 * 1024;

/// Where an upload's file is, for how to write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A disk: written from the blocking pool.
    Disk,
    /// A tmpfs: written from the calling task, since writing there is
    /// copying into memory and never waits for a device (a hand-off to the
    /// blocking pool and back cost more than the write).
    Memory,
}

/// The open upload file.
enum Out {
    Disk(tokio::io::BufWriter<tokio::fs::File>),
    Memory(std::io::BufWriter<std::fs::File>),
}

impl Out {
    async fn open(path: &Path, storage: Storage) -> std::io::Result<Out> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        Ok(match storage {
            Storage::Disk => Out::Disk(tokio::io::BufWriter::with_capacity(
                256 * 1024,
                tokio::fs::OpenOptions::from(options).open(path).await?,
            )),
            Storage::Memory => Out::Memory(std::io::BufWriter::with_capacity(
                64 * 1024,
                options.open(path)?,
            )),
        })
    }

    async fn write_all(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Disk(out) => out.write_all(chunk).await,
            Out::Memory(out) => std::io::Write::write_all(out, chunk),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::Disk(out) => out.flush().await,
            Out::Memory(out) => std::io::Write::flush(out),
        }
    }
}

/// Writes `chunks` to `path` (created, must not exist), feeding `digest`.
/// Returns the number of bytes written. On error the caller removes the file.
pub async fn save<S, E>(
    mut chunks: S,
    path: &Path,
    storage: Storage,
    max_bytes: u64,
    digest: &mut ArchiveDigest,
) -> Result<u64, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    let mut out = Out::open(path, storage).await?;
    let mut written: u64 = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| body_error(e.into()))?;
        written += chunk.len() as u64;
        if written > max_bytes {
            return Err(UploadError::TooLarge(max_bytes));
        }
        digest.update(&chunk);
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    Ok(written)
}

/// Writes the `tgz` field of a `multipart/form-data` body to `path` (as
/// [`save`] does a raw body); fields before it are skipped. The whole stream is
/// capped at `max_bytes` plus [`MULTIPART_FRAMING`], so other fields count too.
pub async fn save_multipart<S, O, E>(
    stream: S,
    boundary: String,
    path: &Path,
    storage: Storage,
    max_bytes: u64,
    digest: &mut ArchiveDigest,
) -> Result<u64, UploadError>
where
    S: Stream<Item = Result<O, E>> + Send + 'static,
    O: Into<Bytes> + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new().whole_stream(max_bytes.saturating_add(MULTIPART_FRAMING)),
    );
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    loop {
        let field = multipart.next_field().await.map_err(|e| match e {
            multer::Error::StreamSizeExceeded { .. } => UploadError::TooLarge(max_bytes),
            multer::Error::StreamReadFailed(e) => body_error(e),
            e => UploadError::Multipart(e.to_string()),
        })?;
        let Some(field) = field else {
            return Err(UploadError::NoArchiveField);
        };
        if field.name() == Some("tgz") {
            return save(field, path, storage, max_bytes, digest)
                .await
                .map_err(|e| match e {
                    UploadError::Body(m) if m.contains("size limit") => {
                        UploadError::TooLarge(max_bytes)
                    }
                    e => e,
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::signature::Scheme;

    fn body(field: &str, data: &[u8]) -> Vec<Result<Bytes, std::io::Error>> {
        let mut b = b"--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n".to_vec();
        b.extend_from_slice(
            format!("--B\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n").as_bytes(),
        );
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n--B--\r\n");
        // Small chunks: the field's data crosses them.
        b.chunks(5).map(|c| Ok(Bytes::copy_from_slice(c))).collect()
    }

    /// Saved both ways; the two must agree, file and digest.
    async fn run(field: &str, data: &[u8], max: u64) -> (Result<u64, UploadError>, Vec<u8>) {
        let mut results = Vec::new();
        for storage in [Storage::Disk, Storage::Memory] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("upload.tgz");
            let mut digest = ArchiveDigest::new(Scheme::Sha256, b"tok").with_sha256();
            let stream = futures_util::stream::iter(body(field, data));
            let r = save_multipart(stream, "B".into(), &path, storage, max, &mut digest).await;
            let sha256 = digest.finish().sha256_hex;
            results.push((r, std::fs::read(&path).unwrap_or_default(), sha256));
        }
        let (memory, disk) = (results.pop().unwrap(), results.pop().unwrap());
        assert_eq!(format!("{:?}", disk.0), format!("{:?}", memory.0));
        assert_eq!((&disk.1, &disk.2), (&memory.1, &memory.2));
        (disk.0, disk.1)
    }

    #[tokio::test]
    async fn a_body_that_stops_sending_is_a_stall_raw_or_multipart() {
        let dir = tempfile::tempdir().unwrap();
        let idle = std::time::Duration::from_millis(50);
        let first = || futures_util::stream::iter(body("tgz", b"some").into_iter().take(3));
        let mut digest = ArchiveDigest::new(Scheme::Sha1, b"tok");
        let stalls = first().chain(futures_util::stream::pending());
        let r = save(
            idle_limited(stalls, idle),
            &dir.path().join("raw"),
            Storage::Memory,
            100,
            &mut digest,
        )
        .await;
        assert!(matches!(r, Err(UploadError::Stalled(0))), "{r:?}");
        let stalls = first().chain(futures_util::stream::pending());
        let path = dir.path().join("multipart");
        let r = save_multipart(
            idle_limited(stalls, idle),
            "B".into(),
            &path,
            Storage::Disk,
            100,
            &mut digest,
        );
        let r = r.await;
        assert!(matches!(r, Err(UploadError::Stalled(0))), "{r:?}");
        // A body that keeps coming is not cut off, however long it takes.
        let slow = Box::pin(first().then(|c| async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            c
        }));
        let r = save(
            idle_limited(slow, idle),
            &dir.path().join("slow"),
            Storage::Disk,
            100,
            &mut digest,
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
    }

    #[tokio::test]
    async fn multipart_saves_the_tgz_field_only() {
        let (r, saved) = run("tgz", b"archive\r\nbytes", 100).await;
        assert_eq!(r.unwrap(), 14);
        assert_eq!(saved, b"archive\r\nbytes");
        // Bigger than a write buffer, in 5-byte chunks: the same both ways.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (r, saved) = run("tgz", &big, 1 << 20).await;
        assert_eq!(r.unwrap(), big.len() as u64);
        assert!(saved == big);
    }

    #[tokio::test]
    async fn multipart_refusals_say_why() {
        let (r, _) = run("tgz", &[7u8; 101], 100).await;
        assert!(matches!(r, Err(UploadError::TooLarge(100))), "{r:?}");
        let (r, _) = run("other", b"x", 100).await;
        assert!(matches!(r, Err(UploadError::NoArchiveField)), "{r:?}");
        let dir = tempfile::tempdir().unwrap();
        let mut digest = ArchiveDigest::new(Scheme::Sha1, b"tok");
        let garbage = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
            Bytes::from_static(b"--B\r\nno headers end"),
        )]);
        let path = dir.path().join("u");
        let r = save_multipart(garbage, "B".into(), &path, Storage::Disk, 100, &mut digest).await;
        assert!(matches!(r, Err(UploadError::Multipart(_))), "{r:?}");
    }
}
