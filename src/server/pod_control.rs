//! The Ochothon pod's control listener (SPEC §13; reference §3): `/info`,
//! `/control/<task>[/<timeout>]`, `/log`, `/reset`, on its own port
//! (`ochopod_port`). Unauthenticated, like every Ochothon pod's. The pod's
//! state and its registration are `ochopod/`; here they meet the server
//! (its drain, audit log, coordination and metrics).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::respond::{full, ResponseBody};
use super::Server;
use crate::ochopod::control::{parse_control, status_line, Pod, Process};

/// Control connections at once.
const MAX_CONNECTIONS: usize = 64;

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
        "/log" => answer(StatusCode::OK, json!(crate::ochopod::logring::lines())),
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
