//! `servo run BUNDLE SCRIPT...`: the client a CI job uses (SPEC §1).
//!
//! Packs a directory into a tar.gz (sorted, fixed mtimes and owners, `.git`
//! left out) or takes an existing `.tgz` unchanged, signs it (v2 by default,
//! §2.6), POSTs it asking for NDJSON and prints each log line as it arrives.
//! Exit codes: 0 the run succeeded, 1 it failed, 2 anything else (usage,
//! connection, 403 and other rejections, with the server's reason).

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::bundle::signature::{self, V2Context};
use crate::run::request;

/// What the command was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub bundle: PathBuf,
    pub scripts: Vec<String>,
    /// `KEY:VALUE` pairs from `-v`.
    pub vars: Vec<String>,
    pub url: String,
    pub token: String,
    pub tenant: Option<String>,
    pub legacy_signature: bool,
    /// Print the server's NDJSON objects as they come instead of plain lines.
    pub json: bool,
    /// The concurrency group (X-Servo-Concurrency, §11).
    pub concurrency: Option<String>,
    /// For `https://`: trust the CAs in this file instead of the system's store.
    pub cacert: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot pack {path}: {source}")]
    Pack {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach servo at {url}: {why}")]
    Connect { url: String, why: String },
    #[error("servo refused the request (HTTP {status}): {reason}")]
    Refused { status: u16, reason: String },
}

/// How the run ended, as an exit code: 0 ok, 1 the run failed.
pub enum RunResult {
    Ok,
    Failed,
}

/// An archive ready to send.
struct Archive {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
    sha256_hex: String,
    size: u64,
}

fn pack_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Pack {
        path: path.to_owned(),
        source,
    }
}

/// Adds `dir` (relative name `rel`) to the archive, children sorted by name.
fn add_dir<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> Result<(), ClientError> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(pack_err(&dir))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        if name == ".git" {
            continue;
        }
        let rel_child = rel.join(&name);
        let path = root.join(&rel_child);
        let meta = std::fs::symlink_metadata(&path).map_err(pack_err(&path))?;
        builder
            .append_path_with_name(&path, &rel_child)
            .map_err(pack_err(&path))?;
        if meta.is_dir() {
            add_dir(builder, root, &rel_child)?;
        }
    }
    Ok(())
}

/// Packs a directory into a temporary .tgz, or takes an existing file as is.
fn prepare_archive(bundle: &Path) -> Result<Archive, ClientError> {
    let meta = std::fs::metadata(bundle).map_err(pack_err(bundle))?;
    let (path, temp) = if meta.is_dir() {
        let temp = tempfile::tempdir().map_err(pack_err(bundle))?;
        let path = temp.path().join("bundle.tgz");
        let file = std::fs::File::create(&path).map_err(pack_err(&path))?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut builder = tar::Builder::new(gz);
        builder.mode(tar::HeaderMode::Deterministic);
        builder.follow_symlinks(false);
        add_dir(&mut builder, bundle, Path::new(""))?;
        let gz = builder.into_inner().map_err(pack_err(bundle))?;
        gz.finish().map_err(pack_err(bundle))?;
        (path, Some(temp))
    } else {
        (bundle.to_path_buf(), None)
    };
    let mut file = std::fs::File::open(&path).map_err(pack_err(&path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(pack_err(&path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Archive {
        path,
        _temp: temp,
        sha256_hex: hex::encode(hasher.finalize()),
        size,
    })
}

/// `KEY:VALUE` → (NAME, value) with the server's naming rule.
fn parse_vars(specs: &[String]) -> Result<Vec<(String, String)>, ClientError> {
    let mut vars = Vec::new();
    for spec in specs {
        let (key, value) = spec
            .split_once(':')
            .ok_or_else(|| ClientError::Usage(format!("-v {spec}: expected KEY:VALUE")))?;
        let name = request::var_name(key.trim())
            .map_err(|e| ClientError::Usage(format!("-v {spec}: {e}")))?;
        vars.push((name, value.to_string()));
    }
    vars.sort();
    Ok(vars)
}

struct Target {
    host: String,
    port: u16,
    prefix: String,
    /// `https://`: the connection is TLS.
    tls: bool,
}

/// `--url`: `http(s)://HOST[:PORT][/PREFIX]`, read by `hyper::Uri` as the
/// relay reads its URLs.
fn parse_url(url: &str) -> Result<Target, ClientError> {
    let bad = || {
        ClientError::Usage(format!(
            "--url {url}: expected http://HOST[:PORT] or https://HOST[:PORT]"
        ))
    };
    let uri: hyper::Uri = url.parse().map_err(|_| bad())?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad()),
    };
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(bad());
    }
    Ok(Target {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        prefix: uri.path().trim_end_matches('/').to_string(),
        tls,
    })
}

/// Bundles at least this large show upload progress (on a terminal only).
const PROGRESS_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// The request body: chunks a reader thread sends through a small bounded
/// channel, so at most a few chunks are in memory and the progress shown is
/// what hyper has taken to write, not what was read from disk.
struct UploadBody {
    rx: mpsc::Receiver<Bytes>,
    progress: Option<Progress>,
}

/// `uploading N MiB: P%` on standard error, rewritten in place.
struct Progress {
    size: u64,
    sent: u64,
    last_pct: Option<u64>,
}

impl Progress {
    fn advance(&mut self, n: usize) {
        self.sent += n as u64;
        let pct = self.sent * 100 / self.size.max(1);
        if self.last_pct != Some(pct) {
            self.last_pct = Some(pct);
            eprint!("\ruploading {} MiB: {pct}%", self.size >> 20);
            if self.sent >= self.size {
                eprintln!();
            }
        }
    }
}

impl hyper::body::Body for UploadBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        this.rx.poll_recv(cx).map(|chunk| {
            chunk.map(|bytes| {
                if let Some(p) = this.progress.as_mut() {
                    p.advance(bytes.len());
                }
                Ok(hyper::body::Frame::data(bytes))
            })
        })
    }
}

/// Whether to show upload progress: only for people watching a terminal
/// (a CI log would get hundreds of carriage returns) and large bundles.
fn show_progress(stderr_is_terminal: bool, size: u64) -> bool {
    stderr_is_terminal && size >= PROGRESS_MIN_BYTES
}

/// Streams the archive file as the request body, with progress on a terminal.
fn body_from_file(path: &Path, size: u64) -> Result<UploadBody, ClientError> {
    let mut file = std::fs::File::open(path).map_err(pack_err(path))?;
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    // A plain thread reads the file; `blocking_send` waits while hyper writes.
    std::thread::spawn(move || loop {
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Bytes::from(buf)).is_err() {
                    break;
                }
            }
        }
    });
    let progress = show_progress(std::io::stderr().is_terminal(), size).then_some(Progress {
        size,
        sent: 0,
        last_pct: None,
    });
    Ok(UploadBody { rx, progress })
}

/// One signed POST of the archive.
struct Outgoing<'a> {
    opts: &'a RunOptions,
    target: &'a Target,
    /// For `https://` targets.
    tls: Option<&'a tokio_rustls::TlsConnector>,
    path: &'a str,
    tenant: &'a str,
    vars: &'a [(String, String)],
    archive: &'a Archive,
}

impl Outgoing<'_> {
    /// Signs (v2: with the current second), sends, and returns the body of
    /// a successful answer; a refusal becomes `ClientError::Refused`.
    async fn send(&self) -> Result<hyper::body::Incoming, ClientError> {
        let Outgoing {
            opts,
            target,
            tls,
            path,
            tenant,
            vars,
            archive,
        } = *self;
        let path = path.to_string();
        let tenant = tenant.to_string();
        let mut req = Request::post(&path)
            .header("host", format!("{}:{}", target.host, target.port))
            .header("content-type", "application/gzip")
            .header("content-length", archive.size)
            .header("accept", "application/x-ndjson");
        if opts.legacy_signature {
            // Streamed: an archive can be large.
            let sig = crate::client::crypt::sign_file(&archive.path, opts.token.as_bytes(), false)
                .map_err(|e| ClientError::Usage(e.to_string()))?;
            req = req.header("x-signature", sig);
        } else {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .to_string();
            let ctx = V2Context {
                timestamp: &now,
                path: &path,
                tenant: &tenant,
                vars,
                concurrency: opts.concurrency.as_deref(),
            };
            let sig = signature::v2_sign(opts.token.as_bytes(), &ctx, &archive.sha256_hex);
            req = req
                .header("x-signature", format!("v2={sig}"))
                .header("x-servo-timestamp", now);
        }
        if opts.tenant.is_some() {
            req = req.header("x-tenant", tenant.as_str());
        }
        if let Some(group) = &opts.concurrency {
            req = req.header("x-servo-concurrency", group.as_str());
        }
        for (name, value) in vars {
            req = req.header(format!("x-var-{name}"), value.as_str());
        }
        let body = body_from_file(&archive.path, archive.size)?;
        let req = req
            .body(body)
            .map_err(|e| ClientError::Usage(e.to_string()))?;

        let connect_err = |why: String| ClientError::Connect {
            url: opts.url.clone(),
            why,
        };
        let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let resp = match tls {
            None => exchange(stream, req).await,
            Some(connector) => {
                let name = rustls_pki_types::ServerName::try_from(target.host.clone())
                    .map_err(|e| connect_err(format!("{}: {e}", target.host)))?;
                let stream = connector.connect(name, stream).await.map_err(|e| {
                    connect_err(
                        crate::tls::certificate_problem(&e, "--cacert")
                            .unwrap_or_else(|| format!("TLS handshake failed: {e}")),
                    )
                })?;
                exchange(stream, req).await
            }
        }
        .map_err(|e| connect_err(e.to_string()))?;
        let status = resp.status();
        let body = resp.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            let reason = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            let reason = strip_controls(&reason);
            return Err(ClientError::Refused {
                status: status.as_u16(),
                reason,
            });
        }
        Ok(body)
    }
}

/// Server text made safe for a terminal: control characters other than
/// newline and tab are dropped, and with them whole terminal escape
/// sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ESC \\`, and the
/// character after a lone ESC), so a script cannot clear, retitle or
/// otherwise drive the CI console through its log.
pub fn strip_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \\).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            if chars.peek() == Some(&'\\') {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                _ => {}
            },
            // C1 CSI: up to its final byte.
            '\u{9b}' => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// One request over a fresh HTTP/1.1 connection on `io` (plain or TLS).
async fn exchange<I>(
    io: I,
    req: Request<UploadBody>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    sender.send_request(req).await
}

/// Sends the bundle and prints the log as it comes.
pub async fn run(opts: RunOptions) -> Result<RunResult, ClientError> {
    let scripts = opts.scripts.join("+");
    request::parse_scripts(&scripts).map_err(|e| ClientError::Usage(e.to_string()))?;
    let vars = parse_vars(&opts.vars)?;
    if let Some(group) = &opts.concurrency {
        if !crate::coordination::valid_group_name(group) {
            return Err(ClientError::Usage(format!(
                "--concurrency `{group}`: use 1-64 characters of A-Z, a-z, 0-9, ., _ and -"
            )));
        }
    }
    let target = parse_url(&opts.url)?;
    let tls = if target.tls {
        let config = crate::tls::client_config(opts.cacert.as_deref(), "--cacert")
            .map_err(ClientError::Usage)?;
        Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
            config,
        )))
    } else {
        None
    };
    let bundle = opts.bundle.clone();
    let archive = tokio::task::spawn_blocking(move || prepare_archive(&bundle))
        .await
        .map_err(|e| ClientError::Usage(e.to_string()))??;

    let path = format!("{}/run/{scripts}", target.prefix);
    let tenant = opts.tenant.clone().unwrap_or_else(|| "default".to_string());
    let request = Outgoing {
        opts: &opts,
        target: &target,
        tls: tls.as_ref(),
        path: &path,
        tenant: &tenant,
        vars: &vars,
        archive: &archive,
    };
    let mut body = match request.send().await {
        // A v2 signature is single-use, and its timestamp counts seconds: the
        // same bundle sent twice within one second signs the same. Sign
        // again with the next second's timestamp, once.
        Err(ClientError::Refused {
            status: 403,
            reason,
        }) if !opts.legacy_signature && reason.starts_with(signature::REPLAYED) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let rest = 1_000_000_000 - u64::from(now.subsec_nanos());
            tokio::time::sleep(std::time::Duration::from_nanos(rest + 1_000_000)).await;
            request.send().await?
        }
        other => other?,
    };
    let connect_err = |why: String| ClientError::Connect {
        url: opts.url.clone(),
        why,
    };

    let mut pending: Vec<u8> = Vec::new();
    let mut ok = None;
    let mut stdout = std::io::stdout();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| connect_err(format!("the connection broke during the run: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let Ok(obj) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            if opts.json {
                let _ = stdout.write_all(&line);
            } else if let Some(text) = obj["line"].as_str() {
                let _ = writeln!(stdout, "{}", strip_controls(text));
            }
            let _ = stdout.flush();
            if let Some(v) = obj.get("ok") {
                ok = Some(v.as_u64() == Some(1) || v.as_bool() == Some(true));
            }
        }
    }
    match ok {
        Some(true) => Ok(RunResult::Ok),
        Some(false) => Ok(RunResult::Failed),
        None => Err(connect_err(
            "the answer ended before the run's result".into(),
        )),
    }
}

/// `servo run BUNDLE SCRIPT...` (SPEC §1).
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Exit status: 0 the run succeeded; 1 it failed (the log's last line says why);
2 usage, connection or authentication problems (the server's reason on stderr).

The log is printed line by line as the scripts produce it. A directory is
packed sorted, with fixed mtimes and owners, without .git; a .tgz is sent as is.
Large uploads show their progress on stderr when it is a terminal.

Example:
  SERVO_URL=http://servo:5000 SERVO_TOKEN=... servo run ./cd deploy.py test.py -v build-id:42")]
pub struct RunArgs {
    /// A bundle directory (packed on the fly) or an existing .tgz (sent unchanged).
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Scripts to run, in order (paths inside the bundle).
    #[arg(required = true, value_name = "SCRIPT")]
    pub scripts: Vec<String>,
    /// A variable for the scripts, as KEY:VALUE (X-Var-KEY); repeatable.
    #[arg(short = 'v', long = "var", value_name = "KEY:VALUE")]
    pub vars: Vec<String>,
    /// The servo server.
    #[arg(long, env = "SERVO_URL", default_value = "http://127.0.0.1:5000")]
    pub url: String,
    /// The tenant to run as (X-Tenant); default: the default tenant.
    #[arg(long, env = "SERVO_TENANT")]
    pub tenant: Option<String>,
    /// Sign with the original servo's `sha1=` HMAC instead of replay-safe v2.
    #[arg(long)]
    pub legacy_signature: bool,
    /// Print the server's NDJSON objects instead of plain lines.
    #[arg(long)]
    pub json: bool,
    /// The concurrency group of the run (X-Servo-Concurrency): runs of one
    /// group run one at a time, in arrival order.
    #[arg(long, env = "SERVO_CONCURRENCY", value_name = "NAME")]
    pub concurrency: Option<String>,
    /// For an https:// --url: trust the CA certificates in FILE (PEM)
    /// instead of the system's trust store.
    #[arg(long, env = "SERVO_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    #[command(flatten)]
    pub token: crate::client::crypt::TokenArgs,
}

/// Exit codes: 0 the run succeeded, 1 it failed, 2 anything else.
pub fn run_main(args: RunArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let token = match args.token.resolve() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("servo: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = RunOptions {
        bundle: args.bundle,
        scripts: args.scripts,
        vars: args.vars,
        url: args.url,
        token,
        tenant: args.tenant,
        legacy_signature: args.legacy_signature,
        json: args.json,
        concurrency: args.concurrency,
        cacert: args.cacert,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("servo: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(RunResult::Ok) => ExitCode::SUCCESS,
        Ok(RunResult::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("servo: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_escape_sequences_are_stripped() {
        assert_eq!(strip_controls("a\x1b[2Jb\x07c\td"), "abc\td");
        assert_eq!(strip_controls("x\x1b]0;title\x07y"), "xy");
        assert_eq!(strip_controls("x\x1b]0;title\x1b\\y"), "xy");
        assert_eq!(strip_controls("x\x1b[1;31mred\x1b[0m\r"), "xred");
        assert_eq!(strip_controls("\u{9b}2Jz\u{85}é ok"), "zé ok");
        assert_eq!(strip_controls("plain line\n"), "plain line\n");
        assert_eq!(strip_controls("dangling\x1b"), "dangling");
    }

    #[test]
    fn urls() {
        let t = parse_url("http://127.0.0.1:5000").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.prefix.as_str()),
            ("127.0.0.1", 5000, "")
        );
        let t = parse_url("http://servo.example/ci/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.prefix.as_str()),
            ("servo.example", 80, "/ci")
        );
        let t = parse_url("http://[::1]:8080").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        let t = parse_url("https://servo.example").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls),
            ("servo.example", 443, true)
        );
        assert!(!parse_url("http://x").unwrap().tls);
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://:80").is_err());
    }

    #[test]
    fn vars() {
        let v = parse_vars(&["build-id:42".into(), "url:http://x:1".into()]).unwrap();
        assert_eq!(
            v,
            vec![
                ("BUILD_ID".into(), "42".into()),
                ("URL".into(), "http://x:1".into())
            ]
        );
        assert!(parse_vars(&["nocolon".into()]).is_err());
        assert!(parse_vars(&["path:x".into()]).is_err());
    }

    #[test]
    fn progress_only_on_a_terminal_for_large_bundles() {
        assert!(!show_progress(false, 100 * 1024 * 1024));
        assert!(!show_progress(true, PROGRESS_MIN_BYTES - 1));
        assert!(show_progress(true, PROGRESS_MIN_BYTES));
    }

    #[test]
    fn packing_is_deterministic_and_skips_git() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.py"), "print(2)").unwrap();
        std::fs::write(dir.path().join("a.py"), "print(1)").unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/config"), "x").unwrap();
        let one = prepare_archive(dir.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let two = prepare_archive(dir.path()).unwrap();
        assert_eq!(one.sha256_hex, two.sha256_hex);
        let file = std::fs::File::open(&one.path).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["a.py", "b.py"]);
    }
}
