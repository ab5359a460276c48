//! servo as an Ochothon pod (SPEC §13; reference/ochopod-protocol.md):
//! detection and breadcrumbs (here), the ZooKeeper registration (`zk`), the
//! pod's process state as the control port moves it (`control`) and the
//! `/log` ring (`logring`). The control listener is the server's
//! (`server/pod_control.rs`): it drains the server's runs, and this module
//! sits below the server and `config`, which reads [`detect`].

pub mod control;
pub mod logring;
pub mod zk;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::settings::SettingsError;

/// Where a Mesos node keeps its ZooKeeper address, in the order pods look.
pub const MESOS_FILES: &[&str] = &[
    "/opt/mesosphere/etc/mesos-slave-common",
    "/opt/mesosphere/etc/mesos-slave",
    "/etc/mesos/zk",
];

/// The default control port (`ochopod_port`).
pub const DEFAULT_CONTROL_PORT: u16 = 8080;

/// The pod's configuration, fixed at start-up.
#[derive(Clone, Debug)]
pub struct PodConfig {
    /// The ZooKeeper ensemble, `host:port,...`.
    pub zk: String,
    /// `<namespace>.<cluster>`.
    pub qualified: String,
    /// The address the control listener binds.
    pub listen: SocketAddr,
    /// `--ochopod-hide-token`: `/info` never shows the token.
    pub hide_token: bool,
    /// The breadcrumbs registered in ZooKeeper, without `seq` (added once known).
    pub breadcrumbs: Map<String, Value>,
}

fn invalid(msg: String) -> SettingsError {
    SettingsError::Invalid(msg)
}

/// Keeps the `host:port,...` part of a ZooKeeper address: `zk://h:p,h:p/mesos`
/// → `h:p,h:p`. None when nothing valid is left.
pub fn zk_hosts(text: &str) -> Option<String> {
    let text = text.trim();
    let text = text.strip_prefix("zk://").unwrap_or(text);
    // `user:pw@` before the hosts is not ours to keep.
    let text = text.rsplit_once('@').map_or(text, |(_, h)| h);
    let hosts = text.split('/').next().unwrap_or("");
    let valid = !hosts.is_empty()
        && hosts.split(',').all(|h| {
            h.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-_[]:".contains(c))
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            })
        });
    valid.then(|| hosts.to_string())
}

/// The ensemble named in one of the Mesos files: a `MESOS_MASTER=zk://...`
/// line (the `mesos-slave*` files) or the whole file (`/etc/mesos/zk`).
pub fn zk_from_mesos_file(text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.trim();
        let value = match line.split_once('=') {
            Some((key, value)) if key.trim() == "MESOS_MASTER" => value,
            Some(_) => continue,
            None => line,
        };
        let value = value.trim().trim_matches(['"', '\'']);
        if value.starts_with("zk://") {
            if let Some(hosts) = zk_hosts(value) {
                return Some(hosts);
            }
        }
    }
    None
}

/// What detection reads: the flags, the environment, the Mesos files.
pub struct Sources<'a> {
    pub flag: bool,
    pub zk_flag: Option<&'a str>,
    pub listen_flag: Option<SocketAddr>,
    pub hide_token: bool,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub vars: Vec<(String, String)>,
    pub read_file: &'a dyn Fn(&Path) -> Option<String>,
    pub resolve_ipv4: &'a dyn Fn(&str) -> Option<std::net::Ipv4Addr>,
}

/// `ochopod_cluster` in the environment or `--ochopod`: the pod's
/// configuration; otherwise None.
pub fn detect(src: &Sources<'_>) -> Result<Option<PodConfig>, SettingsError> {
    let env = |name: &str| (src.env)(name).filter(|v| !v.is_empty());
    if !src.flag && env("ochopod_cluster").is_none() {
        return Ok(None);
    }
    let zk = match src.zk_flag {
        Some(flag) => Some(zk_hosts(flag).ok_or_else(|| {
            invalid(format!(
                "--ochopod-zk {flag}: expected host:port[,host:port...] (zk://.../path is accepted)"
            ))
        })?),
        None => MESOS_FILES
            .iter()
            .find_map(|f| (src.read_file)(Path::new(f)).and_then(|t| zk_from_mesos_file(&t)))
            .or_else(|| env("ochopod_zk").and_then(|z| zk_hosts(&z))),
    };
    let zk = zk.ok_or_else(|| {
        invalid(format!(
            "running as an Ochothon pod but no ZooKeeper found: none of {} names one and \
             $ochopod_zk is unset or invalid; give --ochopod-zk host:port[,host:port...]",
            MESOS_FILES.join(", ")
        ))
    })?;
    // The hints, without their prefix.
    let mut crumbs = Map::new();
    for (name, value) in &src.vars {
        if let Some(key) = name.strip_prefix("ochopod_") {
            if !key.is_empty() {
                crumbs.insert(key.to_string(), Value::String(value.clone()));
            }
        }
    }
    let cluster = env("ochopod_cluster").unwrap_or_else(|| "servo".into());
    let namespace = env("ochopod_namespace").unwrap_or_else(|| "marathon".into());
    for (what, v) in [("cluster", &cluster), ("namespace", &namespace)] {
        if v.is_empty()
            || v.contains(['/', '.', '*', '?'])
            || v.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(invalid(format!(
                "ochopod_{what} `{v}`: not a plain name (no / . * ? or spaces)"
            )));
        }
    }
    crumbs.insert("cluster".into(), json!(cluster));
    crumbs.insert("namespace".into(), json!(namespace));
    let port = match env("ochopod_port") {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| invalid(format!("ochopod_port `{p}`: expected a port number")))?,
        None => DEFAULT_CONTROL_PORT,
    };
    crumbs.insert("port".into(), json!(port.to_string()));
    // Marathon's own: the application (without its leading `/`) and task,
    // which the `kill` tool reads from `/info` to delete the task.
    if let Some(app) = env("MARATHON_APP_ID") {
        crumbs.insert("application".into(), json!(app.trim_start_matches('/')));
    }
    if let Some(task) = env("MESOS_TASK_ID") {
        crumbs.insert("task".into(), json!(task));
    }
    let mut ports = BTreeMap::new();
    for (name, value) in &src.vars {
        let Some(inside) = name.strip_prefix("PORT_") else {
            continue;
        };
        if let (Ok(inside), Ok(outside)) = (inside.parse::<u16>(), value.parse::<u16>()) {
            ports.insert(inside.to_string(), outside);
        }
    }
    crumbs.insert("ports".into(), json!(ports));
    let node = env("HOST")
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_else(|| "localhost".into());
    let ip = (src.resolve_ipv4)(&node).ok_or_else(|| {
        invalid(format!(
            "running as an Ochothon pod: the node `{node}` ($HOST) does not resolve to an IPv4 address"
        ))
    })?;
    crumbs.insert("node".into(), json!(node));
    crumbs.insert("ip".into(), json!(ip.to_string()));
    if !crumbs.contains_key("public") {
        crumbs.insert("public".into(), json!(ip.to_string()));
    }
    crumbs.insert("fwk".into(), json!("marathon"));
    crumbs.insert("zk".into(), json!(zk));
    let listen = src
        .listen_flag
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], port)));
    Ok(Some(PodConfig {
        zk,
        qualified: format!("{namespace}.{cluster}"),
        listen,
        hide_token: src.hide_token,
        breadcrumbs: crumbs,
    }))
}

/// `$HOST` resolved to its first IPv4 address.
pub fn resolve_ipv4(host: &str) -> Option<std::net::Ipv4Addr> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    (host, 0).to_socket_addrs().ok()?.find_map(|a| match a {
        SocketAddr::V4(v4) => Some(*v4.ip()),
        SocketAddr::V6(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn detect_with(
        flag: bool,
        zk_flag: Option<&str>,
        env: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> Result<Option<PodConfig>, SettingsError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let files: HashMap<String, String> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |n: &str| env.get(n).cloned();
        let read = |p: &Path| files.get(p.to_str()?).cloned();
        let resolve = |h: &str| (h == "node-1").then(|| "10.0.0.7".parse().ok()).flatten();
        detect(&Sources {
            flag,
            zk_flag,
            listen_flag: None,
            hide_token: false,
            env: &get,
            vars: env.clone().into_iter().collect(),
            read_file: &read,
            resolve_ipv4: &resolve,
        })
    }

    #[test]
    fn hosts_are_kept_alone() {
        assert_eq!(
            zk_hosts("zk://a:2181,b:2181/mesos").as_deref(),
            Some("a:2181,b:2181")
        );
        assert_eq!(zk_hosts("10.0.0.1:2181").as_deref(), Some("10.0.0.1:2181"));
        assert_eq!(zk_hosts("zk://u:p@h:1/x").as_deref(), Some("h:1"));
        assert_eq!(zk_hosts("zk:///mesos"), None);
        assert_eq!(zk_hosts("h"), None);
        assert_eq!(zk_hosts("h:0"), None);
        assert_eq!(zk_hosts("h:1;rm"), None);
        assert_eq!(
            zk_from_mesos_file("# c\nMESOS_WORK_DIR=/x\nMESOS_MASTER=zk://m1:2181,m2:2181/mesos\n")
                .as_deref(),
            Some("m1:2181,m2:2181")
        );
        assert_eq!(
            zk_from_mesos_file("zk://z:2181/mesos\n").as_deref(),
            Some("z:2181")
        );
    }

    #[test]
    fn not_a_pod_without_the_hint_or_the_flag() {
        assert!(detect_with(false, None, &[("HOST", "node-1")], &[])
            .unwrap()
            .is_none());
        assert!(detect_with(true, Some("z:1"), &[("HOST", "node-1")], &[])
            .unwrap()
            .is_some());
    }

    #[test]
    fn zookeeper_is_found_as_pods_find_it() {
        let env = [
            ("ochopod_cluster", "servo"),
            ("ochopod_zk", "e:1"),
            ("HOST", "node-1"),
        ];
        let zk = |files: &[(&str, &str)], flag| {
            detect_with(false, flag, &env, files).unwrap().unwrap().zk
        };
        assert_eq!(zk(&[], None), "e:1");
        assert_eq!(zk(&[("/etc/mesos/zk", "zk://c:3/mesos")], None), "c:3");
        assert_eq!(
            zk(
                &[
                    ("/etc/mesos/zk", "zk://c:3/mesos"),
                    (
                        "/opt/mesosphere/etc/mesos-slave",
                        "MESOS_MASTER=zk://b:2/mesos"
                    )
                ],
                None
            ),
            "b:2"
        );
        assert_eq!(
            zk(
                &[
                    (
                        "/opt/mesosphere/etc/mesos-slave-common",
                        "MESOS_MASTER=zk://a:1/mesos"
                    ),
                    ("/etc/mesos/zk", "zk://c:3/mesos")
                ],
                None
            ),
            "a:1"
        );
        assert_eq!(
            zk(&[("/etc/mesos/zk", "zk://c:3/mesos")], Some("zk://f:9/x")),
            "f:9"
        );
        let none = detect_with(
            false,
            None,
            &[("ochopod_cluster", "servo"), ("HOST", "node-1")],
            &[],
        );
        assert!(none.unwrap_err().to_string().contains("no ZooKeeper found"));
        assert!(detect_with(false, Some("nope"), &env, &[]).is_err());
    }

    #[test]
    fn breadcrumbs() {
        let pod = detect_with(
            false,
            None,
            &[
                ("ochopod_cluster", "servo"),
                ("ochopod_namespace", "ci"),
                ("ochopod_port", "8080"),
                ("ochopod_zk", "zk://z:2181/mesos"),
                ("ochopod_debug", "false"),
                ("MARATHON_APP_ID", "/ci.servo"),
                ("MESOS_TASK_ID", "ci.servo.1234"),
                ("PORT_8080", "31000"),
                ("PORT_5000", "5000"),
                ("PORT0", "31000"),
                ("HOST", "node-1"),
            ],
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(pod.qualified, "ci.servo");
        assert_eq!(pod.listen, "0.0.0.0:8080".parse().unwrap());
        let b = Value::Object(pod.breadcrumbs);
        assert_eq!(b["cluster"], "servo");
        assert_eq!(b["namespace"], "ci");
        assert_eq!(b["port"], "8080");
        assert_eq!(b["debug"], "false");
        assert_eq!(b["application"], "ci.servo");
        assert_eq!(b["task"], "ci.servo.1234");
        assert_eq!(b["ports"], json!({"8080": 31000, "5000": 5000}));
        assert_eq!(b["ip"], "10.0.0.7");
        assert_eq!(b["public"], "10.0.0.7");
        assert_eq!(b["node"], "node-1");
        assert_eq!(b["fwk"], "marathon");
        assert_eq!(b["zk"], "z:2181");
        assert!(b.get("seq").is_none());
        assert!(detect_with(
            false,
            Some("z:1"),
            &[("ochopod_cluster", "a.b"), ("HOST", "node-1")],
            &[]
        )
        .is_err());
        assert!(detect_with(
            false,
            Some("z:1"),
            &[("ochopod_cluster", "s"), ("HOST", "nowhere")],
            &[]
        )
        .is_err());
    }
}
