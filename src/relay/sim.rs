//! The built-in simulated portal (SPEC §6.5): an in-memory cluster shared by
//! every run of the server, answering the toolset verbs in the shapes of the
//! real toolset. The state lock is only taken in synchronous code.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::glob::glob_match;
use crate::toolset::{self, Command};

const DEFAULT_NAMESPACE: &str = "marathon";
const FIRST_HOST_PORT: u16 = 31000;

#[derive(Clone, Debug)]
struct Pod {
    ip: Ipv4Addr,
    node: Ipv4Addr,
    /// container port → host port
    ports: BTreeMap<u16, u16>,
    running: bool,
    started_ms: u128,
}

#[derive(Clone, Debug, Default)]
struct Cluster {
    image: String,
    ports: Vec<u16>,
    pods: BTreeMap<u32, Pod>,
    next_seq: u32,
}

#[derive(Debug)]
struct State {
    /// `<ns>.<cluster>` → cluster
    clusters: BTreeMap<String, Cluster>,
    next_pod: u32,
    next_host_port: u16,
}

/// The simulator. One per server; every run sees the same cluster.
#[derive(Debug)]
pub struct Sim {
    state: Mutex<State>,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// What a deploy reads from an Ochothon container definition.
#[derive(Debug, PartialEq, Eq)]
struct Definition {
    cluster: String,
    image: String,
    ports: Vec<u16>,
}

fn parse_definition(bytes: &[u8]) -> Result<Definition, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string())?;
    let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| format!("bad YAML: {e}"))?;
    let doc = docs.first().ok_or("the file is empty")?;
    let cluster = doc["cluster"]
        .as_str()
        .filter(|c| !c.is_empty() && !c.contains(['.', ' ', '#']))
        .ok_or("`cluster` is missing (a name without dots or spaces)")?
        .to_string();
    let image = doc["image"].as_str().unwrap_or("").to_string();
    let ports = match doc["ports"].as_vec() {
        None => Vec::new(),
        Some(items) => items
            .iter()
            .map(|p| {
                p.as_i64()
                    .and_then(|n| u16::try_from(n).ok())
                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| "`ports` must list port numbers".to_string())
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Definition {
        cluster,
        image,
        ports,
    })
}

/// A command line, split into positionals and options.
struct Args<'a> {
    positionals: Vec<&'a str>,
    options: BTreeMap<&'a str, &'a str>,
    json: bool,
}

/// The arguments of a command the grammar accepted, as the tools read them.
fn args_of(cmd: &Command) -> Args<'_> {
    let mut args = Args {
        positionals: cmd
            .positionals
            .iter()
            .flatten()
            .map(String::as_str)
            .collect(),
        options: BTreeMap::new(),
        json: cmd.has("-j"),
    };
    for (spec, values) in cmd.spec.options.iter().zip(&cmd.options) {
        if let Some(values) = values {
            let first = values.first().map(String::as_str).unwrap_or("");
            args.options.insert(spec.names[0], first);
        }
    }
    args
}

/// Renders an answer: `-j` as JSON text, else one `key | value` line each.
fn render(value: &Value, json: bool) -> String {
    if json {
        return value.to_string();
    }
    match value {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k} | {v}"))
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

fn answer(ok: bool, out: String) -> Value {
    json!({"ok": ok, "ms": 0, "out": out})
}

impl Sim {
    pub fn new() -> Sim {
        let mut state = State {
            clusters: BTreeMap::new(),
            next_pod: 1,
            next_host_port: FIRST_HOST_PORT,
        };
        state.add_pods("marathon.portal", "paugamo/ochothon-portal", &[9000], 1);
        state.add_pods("marathon.servo", "servo", &[5000], 1);
        Sim {
            state: Mutex::new(state),
        }
    }

    /// Answers one command line as the portal would: `{"ok", "ms", "out"}`.
    /// `files` are the uploaded files, by name.
    pub fn shell(&self, line: &str, files: &[(String, Bytes)]) -> Value {
        // The same grammar as the relay's, quote removal included: a dry run
        // refuses exactly what would be refused in production.
        let cmd = match toolset::parse_canonical(line) {
            Ok(cmd) => cmd,
            Err(e) => return answer(false, format!("usage error: {e}")),
        };
        let verb = cmd.verb();
        let args = args_of(&cmd);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let result = match verb {
            "ls" => Ok(state.ls(&args)),
            "grep" => Ok(state.per_pod(&args, 0, |_, seq, pod| {
                json!({"ip": pod.ip.to_string(), "node": pod.node.to_string(),
                       "process": if pod.running { "running" } else { "stopped" },
                       "state": if seq == 1 { "leader" } else { "follower" }})
            })),
            "port" => state.port(&args),
            "poll" => Ok(state.per_pod(&args, 0, |_, _, pod| {
                let hours = (now_ms().saturating_sub(pod.started_ms)) as f64 / 3_600_000.0;
                json!({"uptime": format!("{hours:.2} hours (pid 59)")})
            })),
            "log" => Ok(state.per_pod(
                &args,
                0,
                |key, _, pod| json!({"log": [format!("{key} ({}) started", pod.ip)]}),
            )),
            "deploy" => state.deploy(&args, files),
            "scale" => state.scale(&args),
            "kill" => state.need_glob(&args).map(|g| state.kill(g)),
            "off" | "on" | "reset" | "bump" => state
                .need_glob(&args)
                .map(|g| state.switch(g, verb != "off")),
            "exec" => state.exec(&args, &cmd.words()),
            "help" => Ok(Value::String(format!(
                "simulated Ochothon portal; verbs: {}",
                toolset::verbs().collect::<Vec<_>>().join(" ")
            ))),
            other => Err(format!("`{other}` is not simulated")),
        };
        match result {
            Ok(Value::String(s)) => answer(true, s),
            Ok(v) => {
                // A per-item `ok: false` makes the whole command fail, as with the toolset.
                let ok = v
                    .as_object()
                    .is_none_or(|m| m.values().all(|e| e.get("ok") != Some(&Value::Bool(false))));
                answer(ok, render(&v, args.json))
            }
            Err(why) => answer(false, why),
        }
    }

    /// The built-in stub of a simulated pod listening on `ip:port` (§6.6):
    /// `GET /ping` → 200 `pong`. None when no simulated pod listens there.
    pub fn pod_http(&self, host: &str, port: u16, path: &str) -> Option<(u16, String)> {
        let ip: Ipv4Addr = host.parse().ok()?;
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let pod = state
            .clusters
            .values()
            .flat_map(|c| c.pods.values())
            .find(|p| (p.ip == ip || p.node == ip) && p.ports.values().any(|&h| h == port))?;
        Some(match (pod.running, path.split('?').next().unwrap_or("")) {
            (false, _) => (503, "stopped".into()),
            (true, "/ping") => (200, "pong".into()),
            (true, _) => (404, "not found".into()),
        })
    }
}

impl State {
    fn add_pods(&mut self, key: &str, image: &str, ports: &[u16], n: u32) -> Vec<u32> {
        let mut up = Vec::new();
        for _ in 0..n {
            let id = self.next_pod;
            self.next_pod += 1;
            let ip = Ipv4Addr::new(10, 1 + (id >> 16) as u8, (id >> 8) as u8, id as u8);
            let node = Ipv4Addr::new(10, 0, 0, 1 + (id % 3) as u8);
            let mut host_ports = BTreeMap::new();
            for &p in ports {
                host_ports.insert(p, self.next_host_port);
                self.next_host_port = self
                    .next_host_port
                    .checked_add(1)
                    .unwrap_or(FIRST_HOST_PORT);
            }
            let cluster = self.clusters.entry(key.to_string()).or_default();
            cluster.image = image.to_string();
            cluster.ports = ports.to_vec();
            cluster.next_seq += 1;
            let seq = cluster.next_seq;
            cluster.pods.insert(
                seq,
                Pod {
                    ip,
                    node,
                    ports: host_ports,
                    running: true,
                    started_ms: now_ms(),
                },
            );
            up.push(seq);
        }
        up
    }

    fn glob_or_all<'a>(&self, args: &Args<'a>, skip: usize) -> &'a str {
        args.positionals.get(skip).copied().unwrap_or("*")
    }

    fn need_glob<'a>(&self, args: &Args<'a>) -> Result<&'a str, String> {
        args.positionals
            .first()
            .copied()
            .ok_or_else(|| "a cluster glob is required, e.g. marathon.web".to_string())
    }

    fn matching(&self, glob: &str) -> Vec<String> {
        self.clusters
            .keys()
            .filter(|k| glob_match(glob, k))
            .cloned()
            .collect()
    }

    fn ls(&self, args: &Args<'_>) -> Value {
        let glob = self.glob_or_all(args, 0);
        let mut out = Map::new();
        for key in self.matching(glob) {
            let c = &self.clusters[&key];
            out.insert(
                key,
                json!({"total": c.pods.len(),
                       "running": c.pods.values().filter(|p| p.running).count(),
                       "status": ""}),
            );
        }
        Value::Object(out)
    }

    fn per_pod(&self, args: &Args<'_>, skip: usize, f: impl Fn(&str, u32, &Pod) -> Value) -> Value {
        let glob = self.glob_or_all(args, skip);
        let mut out = Map::new();
        for key in self.matching(glob) {
            for (seq, pod) in &self.clusters[&key].pods {
                out.insert(format!("{key} #{seq}"), f(&key, *seq, pod));
            }
        }
        Value::Object(out)
    }

    fn port(&self, args: &Args<'_>) -> Result<Value, String> {
        let port: u16 = args
            .positionals
            .first()
            .and_then(|p| p.parse().ok())
            .ok_or("usage: port <container port> [cluster glob]")?;
        let glob = self.glob_or_all(args, 1);
        let mut out = Map::new();
        for key in self.matching(glob) {
            for (seq, pod) in &self.clusters[&key].pods {
                if let Some(host) = pod.ports.get(&port) {
                    out.insert(
                        format!("{key} #{seq}"),
                        json!({"ip": pod.ip.to_string(), "public": "", "ports": host.to_string()}),
                    );
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn deploy(&mut self, args: &Args<'_>, files: &[(String, Bytes)]) -> Result<Value, String> {
        if args.positionals.is_empty() {
            return Err(
                "usage: deploy <container definition .yml>... [-n namespace] [-p pods]".into(),
            );
        }
        let ns = args.options.get("-n").copied().unwrap_or(DEFAULT_NAMESPACE);
        if ns.is_empty() || ns.contains(['.', '*', '?', '[']) {
            return Err(format!("bad namespace `{ns}`"));
        }
        let pods: u32 = match args.options.get("-p") {
            None => 1,
            Some(p) => p
                .parse()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or("-p takes a number of pods, 1 to 100")?,
        };
        let mut out = Map::new();
        for &yml in &args.positionals {
            let result = files
                .iter()
                .find(|(name, _)| name == yml)
                .ok_or_else(|| format!("{yml} was not uploaded"))
                .and_then(|(_, bytes)| parse_definition(bytes));
            let entry = match result {
                Ok(def) => {
                    let key = format!("{ns}.{}", def.cluster);
                    let up = self.add_pods(&key, &def.image, &def.ports, pods);
                    json!({"ok": true, "up": up})
                }
                Err(why) => json!({"ok": false, "error": why}),
            };
            out.insert(yml.to_string(), entry);
        }
        Ok(Value::Object(out))
    }

    fn scale(&mut self, args: &Args<'_>) -> Result<Value, String> {
        let glob = self.need_glob(args)?;
        // The toolset's factors: `@N` pods, or `xN` times as many; at least
        // one pod. Its default (`+1`) fails its own operator check: so here.
        let factor = args.options.get("-f").copied().unwrap_or("+1");
        let bad = || format!("-f takes @N or xN, not `{factor}`");
        let (op, n) = factor.split_at(1);
        let n: f64 = n.parse().map_err(|_| bad())?;
        let mut out = Map::new();
        for key in self.matching(glob) {
            let c = &self.clusters[&key];
            let have = c.pods.len() as i64;
            let target = match op {
                "@" => n,
                "x" => have as f64 * n,
                _ => return Err(bad()),
            };
            // `as` saturates: a huge factor means "as many as allowed".
            let want = (target as i64).clamp(1, 100);
            let (image, ports) = (c.image.clone(), c.ports.clone());
            let entry = if want >= have {
                let up = self.add_pods(&key, &image, &ports, (want - have) as u32);
                json!({"ok": true, "up": up, "down": []})
            } else {
                let c = self.clusters.get_mut(&key).ok_or("cluster vanished")?;
                let down: Vec<u32> = c
                    .pods
                    .keys()
                    .rev()
                    .take((have - want) as usize)
                    .copied()
                    .collect();
                for seq in &down {
                    c.pods.remove(seq);
                }
                json!({"ok": true, "up": [], "down": down})
            };
            out.insert(key, entry);
        }
        Ok(Value::Object(out))
    }

    fn kill(&mut self, glob: &str) -> Value {
        let mut out = Map::new();
        for key in self.matching(glob) {
            if let Some(c) = self.clusters.remove(&key) {
                let down: Vec<u32> = c.pods.keys().copied().collect();
                out.insert(key, json!({"ok": true, "down": down}));
            }
        }
        Value::Object(out)
    }

    fn switch(&mut self, glob: &str, running: bool) -> Value {
        let mut out = Map::new();
        for key in self.matching(glob) {
            if let Some(c) = self.clusters.get_mut(&key) {
                for (seq, pod) in c.pods.iter_mut() {
                    pod.running = running;
                    if running {
                        pod.started_ms = now_ms();
                    }
                    out.insert(format!("{key} #{seq}"), json!({"ok": true}));
                }
            }
        }
        Value::Object(out)
    }

    fn exec(&self, args: &Args<'_>, words: &[&str]) -> Result<Value, String> {
        self.need_glob(args)?;
        Ok(self.per_pod(
            args,
            0,
            |_, _, _| json!({"ok": true, "out": format!("(simulated) {}", words.join(" "))}),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(v: &Value) -> Value {
        serde_json::from_str(v["out"].as_str().unwrap()).unwrap()
    }

    #[test]
    fn many_stars_match_in_linear_time() {
        // Fuzzing found it: every `*` tried every split, so this never returned.
        let glob = format!("{}x", "*".repeat(40));
        let sim = Sim::new();
        let answer = sim.shell(&format!("grep '{glob}' -j"), &[]);
        assert_eq!(answer["ok"], true, "{answer}");
    }

    #[test]
    fn definitions() {
        let d =
            parse_definition(b"cluster: web\nimage: repo/img:tag\nports:\n  - 8080\n  - 9000\n")
                .unwrap();
        assert_eq!(
            d,
            Definition {
                cluster: "web".into(),
                image: "repo/img:tag".into(),
                ports: vec![8080, 9000]
            }
        );
        assert!(parse_definition(b"image: x\n")
            .unwrap_err()
            .contains("cluster"));
        assert!(parse_definition(b"cluster: [").is_err());
        assert!(parse_definition(b"cluster: w\nports:\n  - x\n").is_err());
    }

    #[test]
    fn huge_scale_factors_clamp_instead_of_overflowing() {
        let sim = Sim::new();
        let up = sim.shell("scale marathon.servo -f @999999.999999 -j", &[]);
        assert_eq!(up["ok"], true, "{up}");
        assert_eq!(
            out(&sim.shell("ls -j", &[]))["marathon.servo"]["total"],
            100
        );
        let same = sim.shell("scale marathon.servo -f x999999 -j", &[]);
        assert_eq!(same["ok"], true, "{same}");
        assert_eq!(
            out(&sim.shell("ls -j", &[]))["marathon.servo"]["total"],
            100
        );
        let down = sim.shell("scale marathon.servo -f x0 -j", &[]);
        assert_eq!(down["ok"], true, "{down}");
        assert_eq!(out(&sim.shell("ls -j", &[]))["marathon.servo"]["total"], 1);
        let default = sim.shell("scale marathon.servo -j", &[]);
        assert!(default["out"].as_str().unwrap().contains("@N or xN"));
    }

    #[test]
    fn a_session() {
        let sim = Sim::new();
        let ls = out(&sim.shell("ls -j", &[]));
        assert_eq!(ls["marathon.portal"]["total"], 1);
        assert_eq!(ls["marathon.servo"]["running"], 1);

        let yml = Bytes::from_static(b"cluster: web\nimage: r/i:1\nports:\n  - 8080\n");
        let dep = sim.shell("deploy web.yml -n app -p 2 -j", &[("web.yml".into(), yml)]);
        assert_eq!(dep["ok"], true, "{dep}");
        assert_eq!(out(&dep)["web.yml"]["up"], json!([1, 2]));
        assert_eq!(out(&sim.shell("ls -j", &[]))["app.web"]["total"], 2);

        let ports = out(&sim.shell("port 8080 app.web -j", &[]));
        let pod = &ports["app.web #1"];
        let (ip, port) = (pod["ip"].as_str().unwrap(), pod["ports"].as_str().unwrap());
        assert_eq!(
            sim.pod_http(ip, port.parse().unwrap(), "/ping"),
            Some((200, "pong".into()))
        );
        assert_eq!(sim.pod_http(ip, 1, "/ping"), None);

        let grep = out(&sim.shell("grep 'app.*' -j", &[]));
        assert_eq!(grep["app.web #1"]["state"], "leader");
        assert_eq!(grep["app.web #2"]["process"], "running");

        let sc = out(&sim.shell("scale app.web -f @3 -j", &[]));
        assert_eq!(sc["app.web"]["up"], json!([3]));
        assert_eq!(out(&sim.shell("ls -j", &[]))["app.web"]["total"], 3);
        sim.shell("off app.web -j", &[]);
        assert_eq!(out(&sim.shell("ls -j", &[]))["app.web"]["running"], 0);
        assert_eq!(
            sim.pod_http(ip, port.parse().unwrap(), "/ping").unwrap().0,
            503
        );

        let kill = out(&sim.shell("kill app.web -j", &[]));
        assert_eq!(kill["app.web"]["down"], json!([1, 2, 3]));
        assert!(out(&sim.shell("ls -j", &[])).get("app.web").is_none());

        let missing = sim.shell("deploy nope.yml -j", &[]);
        assert_eq!(missing["ok"], false);
        let unknown = sim.shell("frob -j", &[]);
        assert_eq!(unknown["ok"], false);
        assert!(unknown["out"]
            .as_str()
            .unwrap()
            .contains("not a toolset command"));
        assert!(sim.shell("kill -j", &[])["out"]
            .as_str()
            .unwrap()
            .contains("glob"));
        // What the relay would refuse, the simulator refuses too.
        for line in [
            "grep app.* -j",
            "ls; id",
            "grep 'app.web' -j",
            "grep app.* kill",
        ] {
            let a = sim.shell(line, &[]);
            assert!(
                a["out"].as_str().unwrap().starts_with("usage error"),
                "{line}: {a}"
            );
        }
        assert!(sim.shell("ls", &[])["out"]
            .as_str()
            .unwrap()
            .contains("marathon.servo | "));
    }
}
