//! The control listener (SPEC §13; reference §3): `/info`,
//! `/control/<task>[/<timeout>]`, `/log`, `/reset`, on its own port
//! (`ochopod_port`). Unauthenticated, like every Ochothon pod's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::zk::Registry;
use super::PodConfig;
use crate::server::respond::{full, ResponseBody};
use crate::server::Server;

/// How long `/control/<task>` waits for a drain when the URL names no
/// timeout: under the 5 s the toolset's HTTP requests give a pod at the
/// least, so that an unfinished drain reads as 408 (the `kill` tool asks
/// again) and never as a lost answer (which it would count as no pod).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(4);
/// The longest timeout a control request may name.
const MAX_WAIT_S: f64 = 3600.0;
/// Control connections at once.
const MAX_CONNECTIONS: usize = 64;

/// The pod's process as the tools see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Process {
    /// Accepting runs.
    Running = 0,
    /// Drained by `off`: new runs get 503.
    Stopped = 1,
    /// `kill` asked; draining.
    Terminating = 2,
    /// Killed and drained: waiting for Marathon's SIGTERM.
    Dead = 3,
}

impl Process {
    pub fn as_str(self) -> &'static str {
        match self {
            Process::Running => "running",
            Process::Stopped => "stopped",
            Process::Terminating => "terminating",
            Process::Dead => "dead",
        }
    }
    fn from_u8(v: u8) -> Process {
        match v {
            0 => Process::Running,
            1 => Process::Stopped,
            2 => Process::Terminating,
            _ => Process::Dead,
        }
    }
}

/// The pod: its configuration, registration and process state.
pub struct Pod {
    pub config: PodConfig,
    pub registry: Arc<Registry>,
    process: AtomicU8,
}

impl Pod {
    pub fn new(config: PodConfig) -> Pod {
        let registry = Arc::new(Registry::new(
            &config.zk,
            &config.qualified,
            config.breadcrumbs.clone(),
        ));
        Pod {
            config,
            registry,
            process: AtomicU8::new(Process::Running as u8),
        }
    }

    pub fn process(&self) -> Process {
        Process::from_u8(self.process.load(Ordering::SeqCst))
    }

    fn set_process(&self, p: Process) {
        self.process.store(p as u8, Ordering::SeqCst);
    }
}

/// Binds the control port (before servo says it listens).
pub async fn bind(pod: &Pod) -> std::io::Result<TcpListener> {
    TcpListener::bind(pod.config.listen).await
}

/// Serves the control port until the process ends.
pub async fn serve(server: Arc<Server>, listener: TcpListener) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let header_timeout = Duration::from_secs(server.config().request_timeout_s);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("ochopod: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let server = server.clone();
        let service = hyper::service::service_fn(move |req| {
            let server = server.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(server, req, remote).await) }
        });
        let conn = http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("ochopod: control connection from {remote}: {e}");
            }
            drop(permit);
        });
    }
}

fn answer(status: StatusCode, body: Value) -> Response<ResponseBody> {
    full(status, "application/json", format!("{body}\n"))
}

/// `<task>[/<timeout>]` of a `/control/...` path.
pub fn parse_control(rest: &str) -> Result<(&str, Duration), String> {
    let rest = rest.trim_end_matches('/');
    let (task, timeout) = match rest.split_once('/') {
        Some((t, s)) => (t, Some(s)),
        None => (rest, None),
    };
    let wait = match timeout {
        None => DEFAULT_WAIT,
        Some(s) => {
            let secs: f64 = s
                .parse()
                .map_err(|_| format!("bad timeout `{s}`: expected seconds"))?;
            if !secs.is_finite() || secs < 0.0 {
                return Err(format!("bad timeout `{s}`: expected seconds"));
            }
            Duration::from_secs_f64(secs.min(MAX_WAIT_S))
        }
    };
    Ok((task, wait))
}

async fn handle(
    server: Arc<Server>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Response<ResponseBody> {
    let Some(pod) = server.pod.clone() else {
        return answer(StatusCode::NOT_FOUND, json!({"error": "not a pod"}));
    };
    let path = req.uri().path().to_string();
    tracing::debug!("ochopod: {} {path} from {remote}", req.method());
    match path.as_str() {
        "/info" => answer(StatusCode::OK, info(&server, &pod)),
        "/log" => answer(StatusCode::OK, json!(super::logring::lines())),
        "/reset" => {
            pod.registry.reset();
            answer(StatusCode::OK, json!({"ok": true}))
        }
        p if p.starts_with("/control/") => control(&server, &pod, &p["/control/".len()..]).await,
        "/exec" => answer(
            StatusCode::NOT_FOUND,
            json!({"ok": false, "out": "servo has no pod tools"}),
        ),
        _ => answer(
            StatusCode::NOT_FOUND,
            json!({"error": "not found (the pod answers /info, /control/<task>, /log, /reset)"}),
        ),
    }
}

fn status_line(in_flight: usize, process: Process) -> String {
    let runs = match in_flight {
        1 => "1 run in flight".to_string(),
        n => format!("{n} runs in flight"),
    };
    match process {
        Process::Running => runs,
        Process::Stopped => format!("{runs}, drained (off)"),
        Process::Terminating => format!("{runs}, draining (kill)"),
        Process::Dead => format!("{runs}, dead (kill)"),
    }
}

/// `/info` (reference §3): the hints the tools read, and servo's metrics.
pub fn info(server: &Server, pod: &Pod) -> Value {
    let config = server.config();
    let crumbs = &pod.config.breadcrumbs;
    let in_flight = server.in_flight.load(Ordering::SeqCst);
    let process = pod.process();
    let mut metrics = json!({
        "uptime": server.started.elapsed().as_secs(),
        "runs": server.ctx.metrics.runs_started.load(Ordering::Relaxed),
        "runs_in_flight": in_flight,
        "portal": config.portal.display(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    if !pod.config.hide_token {
        if let Some(default) = config.tenant("default") {
            metrics["token"] = json!(default.token);
        }
    }
    let hint = |k: &str| crumbs.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "application": hint("application"),
        "task": hint("task"),
        "dependencies": [],
        "ip": hint("ip"),
        "node": hint("node"),
        "port": hint("port"),
        "ports": hint("ports"),
        "public": hint("public"),
        "cluster": format!("{}", pod.config.qualified),
        "seq": pod.registry.index(),
        "process": process.as_str(),
        "state": if pod.registry.is_leader() { "leader" } else { "follower" },
        "status": status_line(in_flight, process),
        "metrics": metrics,
    })
}

async fn control(server: &Arc<Server>, pod: &Pod, rest: &str) -> Response<ResponseBody> {
    let gone = || answer(StatusCode::GONE, json!({"ok": false, "process": "dead"}));
    if pod.process() == Process::Dead {
        return gone();
    }
    let (task, wait) = match parse_control(rest) {
        Ok(t) => t,
        Err(why) => return answer(StatusCode::BAD_REQUEST, json!({"ok": false, "error": why})),
    };
    match task {
        "check" => match server.ctx.audit.probe() {
            Err(e) => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ok": false, "why": format!("the audit log cannot be written: {e}")}),
            ),
            // v2 and grouped runs are refused while ZooKeeper is away (§11).
            Ok(()) if !server.ctx.coordination.available() => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ok": false, "why": "coordination is down: ZooKeeper cannot be reached, v2 and grouped runs are refused"}),
            ),
            Ok(()) => answer(
                StatusCode::OK,
                json!({"ok": true, "process": pod.process().as_str()}),
            ),
        },
        "ok" | "signal" => answer(StatusCode::OK, json!({"ok": true})),
        "on" => {
            if pod.process() == Process::Terminating {
                // Being killed: it does not come back.
                return gone();
            }
            server.accepting.store(true, Ordering::SeqCst);
            pod.set_process(Process::Running);
            tracing::info!("ochopod: on: accepting runs again");
            answer(StatusCode::OK, json!({"ok": true, "process": "running"}))
        }
        "off" | "kill" => {
            let kill = task == "kill";
            server.accepting.store(false, Ordering::SeqCst);
            if kill {
                pod.set_process(Process::Terminating);
            } else if pod.process() == Process::Running {
                pod.set_process(Process::Stopped);
            }
            tracing::info!(
                "ochopod: {task}: refusing new runs; waiting up to {:.1}s for {} run(s)",
                wait.as_secs_f64(),
                server.admitted.load(Ordering::SeqCst)
            );
            let started = Instant::now();
            if !server.wait_drained(wait).await {
                let left = server.admitted.load(Ordering::SeqCst);
                return answer(
                    StatusCode::REQUEST_TIMEOUT,
                    json!({"ok": false, "process": pod.process().as_str(),
                           "runs_in_flight": left,
                           "status": format!("draining: {left} run(s) still going")}),
                );
            }
            // `on` may have come meanwhile (off only).
            if !kill && pod.process() == Process::Running {
                return answer(StatusCode::OK, json!({"ok": true, "process": "running"}));
            }
            if kill {
                pod.set_process(Process::Dead);
            }
            let ms = started.elapsed().as_millis() as u64;
            if let Err(e) = server
                .ctx
                .audit
                .commit("server.drained", "", "", json!({"by": task, "ms": ms}))
                .await
            {
                tracing::warn!("ochopod: the drain is not in the audit log: {e}");
            }
            tracing::info!(
                "ochopod: {task}: drained{}",
                if kill { "; dead until SIGTERM" } else { "" }
            );
            answer(
                StatusCode::OK,
                json!({"ok": true, "process": pod.process().as_str()}),
            )
        }
        other => answer(
            StatusCode::BAD_REQUEST,
            json!({"ok": false, "error": format!("unknown task `{other}` (check, on, off, ok, kill, signal)")}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_paths() {
        assert_eq!(parse_control("kill").unwrap(), ("kill", DEFAULT_WAIT));
        assert_eq!(
            parse_control("off/10").unwrap(),
            ("off", Duration::from_secs(10))
        );
        assert_eq!(
            parse_control("off/2.5").unwrap(),
            ("off", Duration::from_millis(2500))
        );
        assert_eq!(parse_control("on/").unwrap(), ("on", DEFAULT_WAIT));
        assert!(parse_control("off/x").is_err());
        assert!(parse_control("off/-1").is_err());
        assert_eq!(
            parse_control("off/99999").unwrap().1,
            Duration::from_secs_f64(MAX_WAIT_S)
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_line(3, Process::Running), "3 runs in flight");
        assert_eq!(status_line(1, Process::Running), "1 run in flight");
        assert_eq!(
            status_line(0, Process::Stopped),
            "0 runs in flight, drained (off)"
        );
    }
}
