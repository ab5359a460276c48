//! A portal that does what the real Ochothon portal does with a relayed line
//! (reference/ochothon-portal.md §1): a real HTTP server (hyper,
//! 127.0.0.1:0) answering `POST /shell` by saving the multipart files under
//! their field names in a fresh temporary directory, then running
//! `/bin/sh -c "toolset <X-Shell line>"` there. The directory is full of
//! decoy files (so an unquoted glob expands, and a word like `--force` or
//! `kill` appears from nowhere); the first `PATH` entry holds a stub
//! `toolset` that appends its argv as one JSON line to a record file and
//! prints `{}`, and wrappers for the usual commands an injected line would
//! run (`touch`, `id`, `ls`, ...) that note their use before running the real
//! command. Tests check the records, the intruder log and a canary path.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Files in every request's working directory.
pub const DECOYS: &[&str] = &[
    "payments.zzz",
    "payments.web",
    "--force",
    "-i",
    "-t",
    "-j",
    "web.front",
    "kill",
    "marathon.portal",
    "1",
];

/// Commands an injected line would likely run: each is wrapped.
const WRAPPED: &[&str] = &["touch", "id", "ls", "cat", "rm", "sh", "env", "python3"];

/// One `POST /shell` the portal ran.
#[derive(Clone, Debug)]
pub struct ShellCall {
    pub line: String,
    /// Files saved (field names that are plain base names).
    pub files: Vec<String>,
    /// Field names refused (holding `/`, or `.`/`..`, or empty).
    pub refused_files: Vec<String>,
    /// Every argv (after `toolset`) the stub recorded for this request.
    pub argvs: Vec<Vec<String>>,
    pub exit: Option<i32>,
    pub out: String,
    pub stderr: String,
}

pub struct ShellPortal {
    pub url: String,
    /// Created by any injected `touch <canary>` in the tests' attack lines.
    pub canary: PathBuf,
    /// Lines the wrappers of `WRAPPED` wrote: anything here ran besides the stub.
    pub intruders: PathBuf,
    root: tempfile::TempDir,
    calls: Arc<Mutex<Vec<ShellCall>>>,
    task: JoinHandle<()>,
}

impl Drop for ShellPortal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The real path of `name` in the usual directories.
fn real(name: &str) -> Option<PathBuf> {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

impl ShellPortal {
    pub async fn start() -> ShellPortal {
        let root = tempfile::tempdir().expect("tempdir");
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir bin");
        let intruders = root.path().join("intruders.log");
        std::fs::write(&intruders, "").expect("intruders log");
        super::write_executable(
            &bin.join("toolset"),
            "#!/usr/bin/python3\nimport json, os, sys\nwith open(os.environ['SHELL_PORTAL_RECORD'], 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\nprint('{}')\n",
        );
        for name in WRAPPED {
            if let Some(path) = real(name) {
                super::write_executable(
                    &bin.join(name),
                    &format!(
                        "#!/bin/sh\nprintf '%s\\n' \"{name} $*\" >> '{}'\nexec '{}' \"$@\"\n",
                        intruders.display(),
                        path.display()
                    ),
                );
            }
        }
        let canary = root.path().join("canary");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seq = Arc::new(AtomicUsize::new(0));
        let base = root.path().to_path_buf();
        let (c, s) = (Arc::clone(&calls), Arc::clone(&seq));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (c, s, base) = (Arc::clone(&c), Arc::clone(&s), base.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (c, s, base) = (Arc::clone(&c), Arc::clone(&s), base.clone());
                        async move { Ok::<_, Infallible>(answer(&base, c, s, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        ShellPortal {
            url: format!("http://{addr}"),
            canary,
            intruders,
            root,
            calls,
            task,
        }
    }

    /// Every request so far, in the order they arrived.
    pub fn calls(&self) -> Vec<ShellCall> {
        self.calls.lock().unwrap().clone()
    }

    /// The lines received, in order.
    pub fn lines(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.line).collect()
    }

    /// What ran besides the stub (empty when nothing did).
    pub fn intruders(&self) -> String {
        std::fs::read_to_string(&self.intruders).unwrap_or_default()
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

fn reply(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r
}

/// A field name the portal may save: `join(tmpdir, name)` stays in tmpdir.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != ".." && !name.contains('\0')
}

async fn answer(
    base: &Path,
    calls: Arc<Mutex<Vec<ShellCall>>>,
    seq: Arc<AtomicUsize>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/shell" || req.method() != hyper::Method::POST {
        return reply(StatusCode::NOT_FOUND, json!({}));
    }
    let line = req
        .headers()
        .get("x-shell")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let n = seq.fetch_add(1, Ordering::SeqCst);
    let work = base.join(format!("req-{n}"));
    std::fs::create_dir(&work).expect("request dir");
    for decoy in DECOYS {
        std::fs::write(work.join(decoy), "decoy\n").expect("decoy");
    }
    let record = base.join(format!("req-{n}.record"));
    let mut files = Vec::new();
    let mut refused_files = Vec::new();
    if let Some(ct) = content_type.filter(|c| c.starts_with("multipart/")) {
        if let Ok(boundary) = multer::parse_boundary(&ct) {
            let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(body) });
            let mut mp = multer::Multipart::new(stream, boundary);
            while let Ok(Some(field)) = mp.next_field().await {
                let name = field.name().unwrap_or("").to_string();
                let data = field.bytes().await.unwrap_or_default();
                if plain_name(&name) {
                    std::fs::write(work.join(&name), &data).expect("save a file");
                    files.push(name);
                } else {
                    refused_files.push(name);
                }
            }
        }
    }
    let started = Instant::now();
    // `Popen('toolset %s' % line, shell=True, cwd=tmpdir)`.
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        base.join("bin").display()
    );
    let run = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("toolset {line}"))
        .current_dir(&work)
        .env_clear()
        .env("PATH", path)
        .env("SHELL_PORTAL_RECORD", &record)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run).await;
    let (exit, stdout, stderr) = match out {
        Ok(Ok(o)) => (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Ok(Err(e)) => (None, String::new(), format!("spawn: {e}")),
        Err(_) => (None, String::new(), "timed out".into()),
    };
    let argvs: Vec<Vec<String>> = std::fs::read_to_string(&record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("the stub writes JSON lines"))
        .collect();
    let ok = exit == Some(0);
    calls.lock().unwrap().push(ShellCall {
        line,
        files,
        refused_files,
        argvs,
        exit,
        out: stdout.clone(),
        stderr,
    });
    reply(
        StatusCode::OK,
        json!({"ok": ok, "ms": started.elapsed().as_millis() as u64, "out": stdout}),
    )
}
