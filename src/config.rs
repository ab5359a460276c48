//! Flags and environment → one validated configuration (SPEC §1).

use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::audit::AuditTarget;
use crate::coordination::ZkTarget;
use crate::limits::Limits;
use crate::relay::egress::{default_pod_cidrs, Cidr};
use crate::settings::{read_token_file, SettingsError};
use crate::tenants::{without_userinfo, Portal, Tenant};

/// `servo serve` flags. Every flag has an environment variable; flags win.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SERVO_LISTEN", default_value = "0.0.0.0:5000")]
    pub listen: SocketAddr,
    /// The default tenant's secret token (else --token-file, else generated once into STATE/token).
    #[arg(long, env = "SERVO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the default tenant's token.
    #[arg(long, env = "SERVO_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Where servo keeps its token, run directories and audit log
    /// [default: /var/lib/servo as root, else $XDG_STATE_HOME/servo or ~/.local/state/servo].
    #[arg(long, env = "SERVO_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The Ochothon portal URL, or `sim` for the built-in simulated portal.
    #[arg(long, env = "SERVO_PORTAL", default_value = "sim")]
    pub portal: String,
    /// The portal's own token, used to sign relayed commands.
    #[arg(long, env = "SERVO_PORTAL_TOKEN", hide_env_values = true)]
    pub portal_token: Option<String>,
    /// A file holding the portal's token.
    #[arg(long, env = "SERVO_PORTAL_TOKEN_FILE")]
    pub portal_token_file: Option<PathBuf>,
    /// Interpreter for scripts; must work inside the sandbox (under /usr).
    #[arg(long, env = "SERVO_PYTHON", default_value = "/usr/bin/python3")]
    pub python: PathBuf,
    /// Tenants and policies (JSON, SPEC §7); absent: one tenant, `default`.
    #[arg(long, env = "SERVO_TENANTS")]
    pub tenants: Option<PathBuf>,
    /// A seccomp policy (seccompiler JSON) instead of the built-in one.
    #[arg(long, env = "SERVO_SECCOMP_POLICY")]
    pub seccomp_policy: Option<PathBuf>,
    /// Extra read-only path in the sandbox, HOST[:INSIDE] (repeatable).
    #[arg(long = "ro-bind", value_name = "HOST[:INSIDE]")]
    pub ro_bind: Vec<String>,
    /// Runs at once [default: 2 × cores].
    #[arg(long, env = "SERVO_MAX_RUNS")]
    pub max_runs: Option<usize>,
    /// Requests waiting beyond --max-runs; more get 503 with Retry-After.
    #[arg(long, env = "SERVO_MAX_QUEUE", default_value_t = 32)]
    pub max_queue: usize,
    /// Client connections open at once; beyond, new ones are closed at once.
    #[arg(long, env = "SERVO_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Threads serving HTTP and driving runs [default: half the cores, at least 1].
    #[arg(long, env = "SERVO_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Largest compressed upload, in bytes (413 beyond).
    #[arg(long, env = "SERVO_MAX_UPLOAD", default_value_t = 64 * 1024 * 1024)]
    pub max_upload: u64,
    /// The URL clients reach this server at; enables callbacks (SPEC §2.5).
    #[arg(long, env = "SERVO_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The audit log [default: STATE/audit.log]; `-` for standard output.
    #[arg(long, env = "SERVO_AUDIT")]
    pub audit: Option<String>,
    /// Operational logs on standard error: text or json.
    #[arg(long, env = "SERVO_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// uids/gids handed to concurrent runs, START-END (inclusive).
    #[arg(long, env = "SERVO_UID_RANGE", default_value = "100000-100999")]
    pub uid_range: String,
    /// A default run limit, NAME=VALUE (repeatable), e.g. script_timeout_s=60 (SPEC §4.4 names).
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    pub limit: Vec<String>,
    /// On SIGTERM, how long running runs may take to finish before servo exits.
    #[arg(long, env = "SERVO_DRAIN_TIMEOUT_S", default_value_t = 300)]
    pub drain_timeout_s: u64,
    /// How long the portal has to answer one relayed command, in seconds
    /// (SPEC §6.3); past it the script gets `portal unreachable: ...`.
    #[arg(long, env = "SERVO_PORTAL_TIMEOUT_S", default_value_t = 300)]
    pub portal_timeout_s: u64,
    /// How long a client may take to send a request's headers, and may
    /// pause while sending its body, in seconds; past it the connection is
    /// closed (headers) or the upload answered 408 (body).
    #[arg(long, env = "SERVO_REQUEST_TIMEOUT_S", default_value_t = 30)]
    pub request_timeout_s: u64,
    /// A network the pods live in, CIDR (repeatable; the variable takes a
    /// comma-separated list): a script's `/http` may reach a reported pod
    /// address only inside one (SPEC §6.6) [default: 10.0.0.0/8,
    /// 172.16.0.0/12, 192.168.0.0/16, fc00::/7].
    #[arg(
        long = "pod-cidr",
        env = "SERVO_POD_CIDR",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub pod_cidr: Vec<String>,
    /// Free space kept on the state dir's filesystem, in MiB: an upload that
    /// could eat into it is answered 503 before it is written (the audit log
    /// needs room) [default: 64 MiB or 5 % of the filesystem, the smaller].
    #[arg(long, env = "SERVO_DISK_RESERVE_MIB")]
    pub disk_reserve_mib: Option<u64>,
    /// Slowest average upload, in bytes/s, after --upload-grace-s; a slower
    /// sender is answered 408 (0: no minimum).
    #[arg(long, env = "SERVO_MIN_UPLOAD_RATE", default_value_t = 16 * 1024)]
    pub min_upload_rate: u64,
    /// Seconds an upload may take before --min-upload-rate applies.
    #[arg(long, env = "SERVO_UPLOAD_GRACE_S", default_value_t = 10)]
    pub upload_grace_s: u64,
    /// Make the default tenant require v2 signatures: its `sha1=` and
    /// `sha256=` requests (replayable, not binding scripts or variables) get 403.
    #[arg(long, env = "SERVO_REQUIRE_V2")]
    pub require_v2: bool,
    /// Serve HTTPS with this certificate chain (PEM, server certificate
    /// first); needs --tls-key. Both files are read again on SIGHUP.
    #[arg(
        long,
        env = "SERVO_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(
        long,
        env = "SERVO_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// For an https:// --portal: trust the CA certificates in FILE (PEM)
    /// instead of the system's trust store.
    #[arg(long, env = "SERVO_PORTAL_CACERT", value_name = "FILE")]
    pub portal_cacert: Option<PathBuf>,
    /// Run as an Ochothon pod (SPEC §13) even without `ochopod_cluster` in
    /// the environment (which turns it on by itself).
    #[arg(long, env = "SERVO_OCHOPOD")]
    pub ochopod: bool,
    /// The pod's ZooKeeper, host:port[,host:port...] (a zk://.../path URL is
    /// accepted) [default: from the Mesos configuration files, then $ochopod_zk].
    #[arg(long, env = "SERVO_OCHOPOD_ZK", value_name = "HOSTS")]
    pub ochopod_zk: Option<String>,
    /// Where the pod's control listener binds [default: 0.0.0.0:$ochopod_port, 8080].
    #[arg(long, env = "SERVO_OCHOPOD_LISTEN", value_name = "ADDR")]
    pub ochopod_listen: Option<SocketAddr>,
    /// Keep the default tenant's token out of the pod's `/info` metrics
    /// (which `poll` shows to whoever reaches the control port).
    #[arg(long, env = "SERVO_OCHOPOD_HIDE_TOKEN")]
    pub ochopod_hide_token: bool,
    /// Share the v2 replay cache, concurrency groups, tenants'
    /// concurrent_runs and a registry of instances with other servo
    /// instances through ZooKeeper: zk://host:port[,host:port...]/CHROOT
    /// (SPEC §11). Absent: all of it within this instance.
    #[arg(long, env = "SERVO_COORDINATION", value_name = "zk://HOSTS/CHROOT")]
    pub coordination: Option<String>,
    /// The ZooKeeper session timeout, in seconds: how long after this
    /// instance dies (or loses ZooKeeper) its concurrency groups are freed.
    #[arg(
        long,
        env = "SERVO_COORDINATION_SESSION_TIMEOUT_S",
        default_value_t = 10
    )]
    pub coordination_session_timeout_s: u64,
}

/// Parses `zk://host:port[,host:port...]/chroot`.
pub fn parse_zk_url(url: &str, session_timeout_s: u64) -> Result<ZkTarget, SettingsError> {
    let bad = |why: &str| {
        invalid(format!(
            "--coordination {url}: {why} (expected zk://host:port[,host:port...]/chroot)"
        ))
    };
    let rest = url
        .strip_prefix("zk://")
        .ok_or_else(|| bad("not a zk:// URL"))?;
    let (hosts, chroot) = rest.split_once('/').ok_or_else(|| bad("no chroot path"))?;
    if hosts.is_empty() {
        return Err(bad("no host"));
    }
    for host in hosts.split(',') {
        let ok = host
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(bad(&format!("`{host}` is not host:port")));
        }
    }
    let chroot = chroot.trim_end_matches('/');
    if chroot.is_empty() {
        return Err(bad("no chroot path: give servo its own, e.g. /servo"));
    }
    if chroot.split('/').next() == Some("zookeeper")
        || chroot
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad("bad chroot path"));
    }
    if session_timeout_s == 0 || session_timeout_s > 600 {
        return Err(invalid(
            "--coordination-session-timeout-s must be within 1-600",
        ));
    }
    Ok(ZkTarget {
        hosts: hosts.to_string(),
        chroot: format!("/{chroot}"),
        session_timeout: std::time::Duration::from_secs(session_timeout_s),
    })
}

/// The validated configuration of `servo serve`.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub portal: Portal,
    pub portal_token: Option<String>,
    pub python: PathBuf,
    pub seccomp_policy: Option<PathBuf>,
    pub ro_binds: Vec<(PathBuf, PathBuf)>,
    pub max_runs: usize,
    pub max_queue: usize,
    pub max_connections: usize,
    /// The async runtime's worker threads (blocking work has its own pool).
    pub worker_threads: usize,
    pub max_upload: u64,
    pub public_url: Option<String>,
    pub audit: AuditTarget,
    pub json_logs: bool,
    pub uid_base: u32,
    pub uid_count: u32,
    pub tenants: Vec<Tenant>,
    pub drain_timeout_s: u64,
    pub portal_timeout_s: u64,
    pub request_timeout_s: u64,
    /// The pod networks of `/http` (§6.6).
    pub pod_cidrs: Vec<Cidr>,
    /// The portal's addresses, resolved once at start-up: `/http` never
    /// reaches them.
    pub portal_addrs: Vec<SocketAddr>,
    /// Portals' hosts and ports whose names did not resolve at start-up.
    pub portal_unresolved: Vec<(String, u16)>,
    /// `--disk-reserve-mib` in bytes; None: 64 MiB or 5 % of the filesystem.
    pub disk_reserve: Option<u64>,
    pub min_upload_rate: u64,
    pub upload_grace_s: u64,
    /// `--coordination` (§11); None: this instance alone.
    pub coordination: Option<ZkTarget>,
    /// HTTPS: the certificate chain and key files (SPEC §12).
    pub tls: Option<TlsFiles>,
    /// CA certificates for an https:// portal (else the system's store).
    pub portal_cacert: Option<PathBuf>,
    /// Running as an Ochothon pod (SPEC §13).
    pub ochopod: Option<crate::ochopod::PodConfig>,
}

/// The PEM files of `--tls-cert` / `--tls-key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn invalid(msg: impl Into<String>) -> SettingsError {
    SettingsError::Invalid(msg.into())
}

/// The state directory when none is given: /var/lib/servo as root, else the
/// user's XDG state directory.
pub fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/servo");
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("servo");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/state/servo")
}

/// 32 characters from `A-Za-z0-9+/`, uniform: 64 symbols divide 256, so the
/// low 6 bits of each random byte pick one without bias.
pub fn generate_token() -> Result<String, SettingsError> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| invalid(format!("no OS randomness for the token: {e}")))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[(b & 63) as usize] as char)
        .collect())
}

/// The token kept in STATE/token, created (0600) on first use.
fn state_token(state_dir: &Path) -> Result<String, SettingsError> {
    let path = state_dir.join("token");
    if path.exists() {
        return read_token_file(&path);
    }
    let token = generate_token()?;
    let io_err = |source| SettingsError::Io {
        what: "cannot write the token file",
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err)?;
    std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    Ok(token)
}

fn parse_uid_range(text: &str) -> Result<(u32, u32), SettingsError> {
    let bad = || {
        invalid(format!(
            "--uid-range {text}: expected START-END, e.g. 100000-100999, with START > 0"
        ))
    };
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let start: u32 = a.trim().parse().map_err(|_| bad())?;
    let end: u32 = b.trim().parse().map_err(|_| bad())?;
    if start == 0 || end < start {
        return Err(bad());
    }
    // One uid per concurrent run: far more than a machine runs. The sandbox's
    // /etc/passwd names each of them.
    if end - start >= 65_536 {
        return Err(invalid(format!(
            "--uid-range {text}: at most 65536 uids (one per concurrent run)"
        )));
    }
    Ok((start, end - start + 1))
}

/// Applies `NAME=VALUE` to a set of limits (the names of SPEC §4.4 / §7).
pub fn apply_limit(limits: &mut Limits, spec: &str) -> Result<(), SettingsError> {
    let (name, value) = spec
        .split_once('=')
        .ok_or_else(|| invalid(format!("--limit {spec}: expected NAME=VALUE")))?;
    let value: u64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(format!("--limit {spec}: the value must be a whole number")))?;
    let slot = match name.trim() {
        "script_timeout_s" => &mut limits.script_timeout_s,
        "run_timeout_s" => &mut limits.run_timeout_s,
        "cpu_s" => &mut limits.cpu_s,
        "memory_mib" => &mut limits.memory_mib,
        "pids" => &mut limits.pids,
        "open_files" => &mut limits.open_files,
        "tmp_mib" => &mut limits.tmp_mib,
        "work_mib" => &mut limits.work_mib,
        "file_mib" => &mut limits.file_mib,
        "log_mib" => &mut limits.log_mib,
        "unpacked_mib" => &mut limits.unpacked_mib,
        "entries" => &mut limits.entries,
        "concurrent_runs" => &mut limits.concurrent_runs,
        other => {
            return Err(invalid(format!(
                "--limit {other}: unknown limit (see the limits table in docs/sandbox.md)"
            )))
        }
    };
    *slot = value;
    Ok(())
}

/// `--pod-cidr` values, or the defaults when there are none.
pub fn parse_pod_cidrs(specs: &[String]) -> Result<Vec<Cidr>, SettingsError> {
    let specs: Vec<&str> = specs
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if specs.is_empty() {
        return Ok(default_pod_cidrs());
    }
    specs
        .iter()
        .map(|s| Cidr::parse(s).map_err(|why| invalid(format!("--pod-cidr {why}"))))
        .collect()
}

/// What `/http` must know of the portal's address.
#[derive(Debug, PartialEq)]
enum PortalAddrs {
    Resolved(Vec<SocketAddr>),
    /// The name does not resolve now: looked up again before `/http` requests.
    Unresolved(String, u16),
}

/// The addresses of the portal's host and port, looked up once (`/http`
/// refuses them; a name that later points elsewhere is not followed).
fn portal_addrs(url: &str) -> Result<PortalAddrs, SettingsError> {
    portal_addrs_of("--portal", url)
}

/// `label` names where the URL came from (`--portal`, a tenant's `portal`).
fn portal_addrs_of(label: &str, url: &str) -> Result<PortalAddrs, SettingsError> {
    use std::net::ToSocketAddrs;
    // Errors show the URL without its `user:password@`.
    let shown = without_userinfo(url);
    let bad = |why: String| invalid(format!("{label} {shown}: {why}"));
    let uri: hyper::Uri = url.parse().map_err(|e| bad(format!("not a URL ({e})")))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    match (host, port).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                return Ok(PortalAddrs::Unresolved(host.to_string(), port));
            }
            Ok(PortalAddrs::Resolved(addrs))
        }
        Err(_) => Ok(PortalAddrs::Unresolved(host.to_string(), port)),
    }
}

pub fn parse_ro_bind(spec: &str) -> Result<(PathBuf, PathBuf), SettingsError> {
    let (host, inside) = match spec.split_once(':') {
        Some((h, i)) => (PathBuf::from(h), PathBuf::from(i)),
        None => (PathBuf::from(spec), PathBuf::from(spec)),
    };
    if !host.is_absolute() || !inside.is_absolute() {
        return Err(invalid(format!(
            "--ro-bind {spec}: both paths must be absolute"
        )));
    }
    if inside
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(invalid(format!(
            "--ro-bind {spec}: the inside path may not contain .."
        )));
    }
    Ok((host, inside))
}

/// Whether servo runs as an Ochothon pod, and as which (SPEC §13).
fn detect_pod(args: &ServeArgs) -> Result<Option<crate::ochopod::PodConfig>, SettingsError> {
    let env = |name: &str| std::env::var(name).ok();
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    crate::ochopod::detect(&crate::ochopod::Sources {
        flag: args.ochopod,
        zk_flag: args.ochopod_zk.as_deref(),
        listen_flag: args.ochopod_listen,
        hide_token: args.ochopod_hide_token,
        env: &env,
        vars: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
        read_file: &read,
        resolve_ipv4: &crate::ochopod::resolve_ipv4,
    })
}

impl Config {
    /// Validates the flags, creates the state directory and resolves the token.
    pub fn from_args(args: &ServeArgs) -> Result<Config, SettingsError> {
        let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
        std::fs::create_dir_all(&state_dir).map_err(|source| SettingsError::Io {
            what: "cannot create the state directory",
            path: state_dir.clone(),
            source,
        })?;
        // The state dir holds tokens and run directories: nobody else may look in.
        std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| SettingsError::Io {
                what: "cannot restrict the state directory",
                path: state_dir.clone(),
                source,
            },
        )?;

        let token = match (&args.token, &args.token_file) {
            (Some(t), _) if !t.is_empty() => t.clone(),
            (Some(_), _) => return Err(invalid("--token is empty")),
            (None, Some(f)) => read_token_file(f)?,
            (None, None) => state_token(&state_dir)?,
        };
        let portal_token = match (&args.portal_token, &args.portal_token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => Some(read_token_file(f)?),
            (None, None) => None,
        };
        let pod_cidrs = parse_pod_cidrs(&args.pod_cidr)?;
        let portal =
            Portal::parse(&args.portal).map_err(|why| invalid(format!("--portal {why}")))?;
        let mut portal_addrs = Vec::new();
        let mut portal_unresolved = Vec::new();
        if let Portal::Url(url) = &portal {
            match self::portal_addrs(url)? {
                PortalAddrs::Resolved(addrs) => portal_addrs = addrs,
                PortalAddrs::Unresolved(host, port) => portal_unresolved.push((host, port)),
            }
        }
        if !args.python.is_absolute() {
            return Err(invalid(
                "--python must be an absolute path (it is looked up inside the sandbox)",
            ));
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let max_runs = args.max_runs.unwrap_or(2 * cores);
        if max_runs == 0 {
            return Err(invalid("--max-runs must be at least 1"));
        }
        if args.portal_timeout_s == 0 {
            return Err(invalid("--portal-timeout-s must be at least 1"));
        }
        // Every running or queued request holds a connection: below that,
        // requests the queue has room for would be cut off at accept
        // instead of getting their 503.
        let busy = max_runs.saturating_add(args.max_queue);
        if args.max_connections <= busy {
            return Err(invalid(format!(
                "--max-connections ({}) must be more than --max-runs + --max-queue ({busy}): \
                 every running or queued request holds a connection",
                args.max_connections
            )));
        }
        if args.request_timeout_s == 0 {
            return Err(invalid("--request-timeout-s must be at least 1"));
        }
        // The scripts are the CPU's main users: with as many workers as
        // cores, workers woke and stole from each other on a host saturated
        // by scripts. 32 clients on 2 cores, one binary interleaved:
        // throughput 0.79 / 0.81 x the floor with 2 workers, 0.89 / 0.87 x
        // with 1; the other §9 rows unchanged or better (2026-12-03).
        let worker_threads = args.worker_threads.unwrap_or((cores / 2).max(1));
        if worker_threads == 0 {
            return Err(invalid("--worker-threads must be at least 1"));
        }
        let (uid_base, uid_count) = parse_uid_range(&args.uid_range)?;
        if (uid_count as usize) < max_runs {
            return Err(invalid(format!(
                "--uid-range {} holds fewer ids than --max-runs {max_runs}: each concurrent run needs its own",
                args.uid_range
            )));
        }
        let mut limits = Limits::default();
        for spec in &args.limit {
            apply_limit(&mut limits, spec)?;
        }
        let mut tenants = match &args.tenants {
            Some(path) => crate::tenants::load(path, Some(token), &limits)?,
            None => vec![Tenant::default_tenant(token, limits)],
        };
        if args.require_v2 {
            for t in tenants.iter_mut().filter(|t| t.name == "default") {
                t.require_v2 = true;
            }
        }
        // Tenants' own portals are portals too: `/http` never reaches them.
        for t in &tenants {
            if let Some(Portal::Url(url)) = &t.portal {
                match self::portal_addrs(url)
                    .map_err(|e| invalid(format!("tenant `{}`: portal: {e}", t.name)))?
                {
                    PortalAddrs::Resolved(addrs) => portal_addrs.extend(addrs),
                    PortalAddrs::Unresolved(host, port) => portal_unresolved.push((host, port)),
                }
            }
        }
        let audit = match args.audit.as_deref() {
            Some("-") => AuditTarget::Stdout,
            Some(p) => AuditTarget::File(PathBuf::from(p)),
            None => AuditTarget::File(state_dir.join("audit.log")),
        };
        let ochopod = detect_pod(args)?;
        // §11 through ZooKeeper: --coordination, or else, on an Ochothon
        // pod, the pod's ensemble (SPEC §13), under /servo/<ns>.<cluster>
        // so that the instances of one servo cluster share it.
        let coordination = match (args.coordination.as_deref(), &ochopod) {
            (Some(url), _) => Some(parse_zk_url(url, args.coordination_session_timeout_s)?),
            (None, Some(pod)) => Some(parse_zk_url(
                &format!("zk://{}/servo/{}", pod.zk, pod.qualified.replace('/', "_")),
                args.coordination_session_timeout_s,
            )?),
            (None, None) => None,
        };
        Ok(Config {
            listen: args.listen,
            state_dir,
            portal,
            portal_token,
            python: args.python.clone(),
            seccomp_policy: args.seccomp_policy.clone(),
            ro_binds: args
                .ro_bind
                .iter()
                .map(|s| parse_ro_bind(s))
                .collect::<Result<_, _>>()?,
            max_runs,
            max_queue: args.max_queue,
            max_connections: args.max_connections,
            worker_threads,
            max_upload: args.max_upload,
            public_url: args
                .public_url
                .clone()
                .map(|u| u.trim_end_matches('/').to_string()),
            audit,
            json_logs: args.log_format == "json",
            uid_base,
            uid_count,
            tenants,
            drain_timeout_s: args.drain_timeout_s,
            portal_timeout_s: args.portal_timeout_s,
            request_timeout_s: args.request_timeout_s,
            pod_cidrs,
            portal_addrs,
            portal_unresolved,
            disk_reserve: args.disk_reserve_mib.map(|m| m.saturating_mul(1 << 20)),
            min_upload_rate: args.min_upload_rate,
            upload_grace_s: args.upload_grace_s,
            coordination,
            tls: match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                (None, None) => None,
                _ => {
                    return Err(invalid(
                        "--tls-cert and --tls-key go together: give both or neither",
                    ))
                }
            },
            portal_cacert: args.portal_cacert.clone(),
            ochopod,
        })
    }

    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// Whether the default tenant takes legacy `sha1=`/`sha256=` signatures
    /// (false too when there is no default tenant).
    pub fn legacy_signatures_allowed(&self) -> bool {
        self.tenant("default").is_some_and(|t| !t.require_v2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordination_urls() {
        let t = parse_zk_url("zk://10.0.0.2:2181,zk2:2181/servo/prod/", 10).unwrap();
        assert_eq!(t.hosts, "10.0.0.2:2181,zk2:2181");
        assert_eq!(t.chroot, "/servo/prod");
        assert_eq!(t.session_timeout, std::time::Duration::from_secs(10));
        for bad in [
            "http://zk:2181/servo",
            "zk://zk:2181",
            "zk://zk:2181/",
            "zk:///servo",
            "zk://zk/servo",
            "zk://zk:0/servo",
            "zk://zk:2181,/servo",
            "zk://zk:2181/a//b",
            "zk://zk:2181/a/../b",
            "zk://zk:2181/zookeeper",
        ] {
            assert!(parse_zk_url(bad, 10).is_err(), "{bad}");
        }
        assert!(parse_zk_url("zk://zk:2181/servo", 0).is_err());
    }

    #[test]
    fn generated_tokens_use_the_alphabet() {
        let t = generate_token().unwrap();
        assert_eq!(t.len(), 32);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/'));
        assert_ne!(t, generate_token().unwrap());
    }

    #[test]
    fn limits_by_name() {
        let mut l = Limits::default();
        apply_limit(&mut l, "script_timeout_s=5").unwrap();
        assert_eq!(l.script_timeout_s, 5);
        assert!(apply_limit(&mut l, "nope=1").is_err());
        assert!(apply_limit(&mut l, "pids=x").is_err());
    }

    #[test]
    fn uid_ranges() {
        assert_eq!(parse_uid_range("100-109").unwrap(), (100, 10));
        assert!(parse_uid_range("0-10").is_err());
        assert!(parse_uid_range("10-5").is_err());
    }

    #[test]
    fn pod_cidrs() {
        let shown = |l: &[&str]| -> Vec<String> {
            let l: Vec<String> = l.iter().map(|s| s.to_string()).collect();
            parse_pod_cidrs(&l)
                .unwrap()
                .iter()
                .map(|c| c.to_string())
                .collect()
        };
        assert_eq!(
            shown(&[]),
            ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
        );
        assert_eq!(
            shown(&["198.18.0.0/15", " 127.0.0.0/8"]),
            ["198.18.0.0/15", "127.0.0.0/8"]
        );
        let err = parse_pod_cidrs(&["10.0.0.0/8".into(), "10.0.0.1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--pod-cidr `10.0.0.1`: expected ADDRESS/BITS"),
            "{err}"
        );
    }

    #[test]
    fn portal_addresses() {
        assert_eq!(
            portal_addrs("http://127.0.0.1:9000").unwrap(),
            PortalAddrs::Resolved(vec!["127.0.0.1:9000".parse::<SocketAddr>().unwrap()])
        );
        assert_eq!(
            portal_addrs("http://[::1]").unwrap(),
            PortalAddrs::Resolved(vec!["[::1]:80".parse::<SocketAddr>().unwrap()])
        );
        let PortalAddrs::Resolved(local) = portal_addrs("http://localhost:9000").unwrap() else {
            panic!("localhost does not resolve");
        };
        assert!(local
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 9000));
        // A name that does not resolve yet (a portal started after servo)
        // is not a start-up error: /http looks it up again.
        assert_eq!(
            portal_addrs("http://no-such-host.invalid:1").unwrap(),
            PortalAddrs::Unresolved("no-such-host.invalid".into(), 1)
        );
    }

    #[test]
    fn ro_binds() {
        assert_eq!(parse_ro_bind("/a:/b").unwrap(), ("/a".into(), "/b".into()));
        assert_eq!(parse_ro_bind("/a").unwrap(), ("/a".into(), "/a".into()));
        assert!(parse_ro_bind("a:/b").is_err());
        assert!(parse_ro_bind("/a:/../b").is_err());
    }
}
