//! The tenants file (SPEC §7): who may run bundles, with which token, which
//! clusters and verbs, and which limits. Validated whole at start-up (and by
//! `servo policy check`); every error names the tenant and the field.
//!
//! Here too what a tenant is made of, for every layer above: [`Tenant`],
//! and the [`Portal`] its commands go to.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::bundle::decrypt::Kdf;
use crate::coordination::{valid_group_name, DEFAULT_CONCURRENCY_WAIT_S};
use crate::limits::Limits;
use crate::settings::{read_token_file, SettingsError};
use crate::toolset;

/// One tenant (SPEC §7). Without --tenants there is only `default`.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub name: String,
    pub token: String,
    pub require_v2: bool,
    pub aes_kdf: Option<Kdf>,
    /// Namespaces whose clusters the tenant may touch (None: all).
    pub namespaces: Option<Vec<String>>,
    /// Toolset verbs the tenant may relay (None: all).
    pub commands: Option<Vec<String>>,
    /// Extra `host:port` / `cidr:port` egress the tenant's scripts may reach (§6.6).
    pub egress: Vec<String>,
    /// Globs (`*`, `?`) the `image` of every deployed YAML must match (None: any image; §7).
    pub images: Option<Vec<String>>,
    /// Dotted paths the `verbatim` of a deployed YAML may set (empty: none; §6.3, §7).
    pub verbatim: Vec<String>,
    pub limits: Limits,
    /// The tenant's own portal (SPEC §7 `portal`); None: the server's.
    pub portal: Option<Portal>,
    /// The token that signs commands to the tenant's own portal
    /// (`portal_token_file`); never the server's portal token.
    pub portal_token: Option<String>,
    /// The default concurrency group of its runs (§11; None: none).
    pub concurrency: Option<String>,
    /// How long a run waits for its concurrency group before giving up (§11).
    pub concurrency_wait_s: u64,
}

impl Tenant {
    /// The default tenant: everything allowed, the server's default limits.
    pub fn default_tenant(token: String, limits: Limits) -> Tenant {
        Tenant {
            name: "default".into(),
            token,
            require_v2: false,
            aes_kdf: None,
            namespaces: None,
            commands: None,
            egress: Vec::new(),
            images: None,
            verbatim: Vec::new(),
            limits,
            concurrency: None,
            concurrency_wait_s: DEFAULT_CONCURRENCY_WAIT_S,
            portal: None,
            portal_token: None,
        }
    }
}

/// Where a portal is: the server's (`--portal`) or a tenant's own (§7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Portal {
    Sim,
    Url(String),
}

impl Portal {
    /// `sim`, or an http(s):// URL (its trailing `/` dropped).
    pub fn parse(text: &str) -> Result<Portal, String> {
        if text == "sim" {
            Ok(Portal::Sim)
        } else if (text.starts_with("http://") || text.starts_with("https://"))
            && text
                .parse::<hyper::Uri>()
                .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()))
        {
            Ok(Portal::Url(text.trim_end_matches('/').to_string()))
        } else {
            Err(format!(
                "{}: expected `sim` or an http:// URL such as http://10.0.0.5:9000",
                without_userinfo(text)
            ))
        }
    }

    /// How the portal is shown (`/health`, the start-up log): a URL without
    /// its userinfo (`http://user:pw@host:9000` → `http://host:9000`).
    pub fn display(&self) -> String {
        match self {
            Portal::Sim => "sim".to_string(),
            Portal::Url(u) => without_userinfo(u),
        }
    }
}

/// `url` without the `user:password@` part of its authority.
pub fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://{}{tail}", &authority[at + 1..]),
        None => url.to_string(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Whether the `--token` tenant `default` exists (default: true).
    #[serde(default = "yes")]
    default: bool,
    tenants: Vec<Value>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    token: Option<String>,
    token_file: Option<PathBuf>,
    require_signature: Option<String>,
    aes_kdf: Option<Kdf>,
    namespaces: Option<Vec<String>>,
    commands: Option<Vec<String>>,
    #[serde(default)]
    egress: Vec<String>,
    images: Option<Vec<String>>,
    #[serde(default)]
    verbatim: Vec<String>,
    #[serde(default)]
    limits: Option<Value>,
    concurrency: Option<String>,
    concurrency_wait_s: Option<u64>,
    /// The tenant's own portal (SPEC §7), e.g. one restricted to its namespace.
    portal: Option<String>,
    /// The token that portal checks relayed commands against.
    portal_token_file: Option<PathBuf>,
}

fn err(path: &Path, msg: String) -> SettingsError {
    SettingsError::Invalid(format!("tenants file {}: {msg}", path.display()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Reads and validates the tenants file. `default_token` is the `--token`
/// tenant's token; `base` the server's default limits, which tenants override.
pub fn load(
    path: &Path,
    default_token: Option<String>,
    base: &Limits,
) -> Result<Vec<Tenant>, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Io {
        what: "cannot read the tenants file",
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text, default_token, base)
}

pub fn parse(
    path: &Path,
    text: &str,
    default_token: Option<String>,
    base: &Limits,
) -> Result<Vec<Tenant>, SettingsError> {
    let file: File = serde_json::from_str(text).map_err(|e| err(path, e.to_string()))?;
    let mut tenants = Vec::new();
    if file.default {
        let token =
            default_token.ok_or_else(|| err(path, "the default tenant needs --token".into()))?;
        tenants.push(Tenant::default_tenant(token, base.clone()));
    }
    for (i, raw) in file.tenants.into_iter().enumerate() {
        let label = raw
            .get("name")
            .and_then(Value::as_str)
            .map(|n| format!("tenant `{n}`"))
            .unwrap_or_else(|| format!("tenant #{}", i + 1));
        let field = |f: &str, m: String| err(path, format!("{label}: {f}: {m}"));
        let entry: Entry =
            serde_json::from_value(raw).map_err(|e| err(path, format!("{label}: {e}")))?;
        if !valid_name(&entry.name) {
            return Err(field(
                "name",
                "use 1-64 characters of a-z, 0-9, - and _".into(),
            ));
        }
        if tenants.iter().any(|t: &Tenant| t.name == entry.name) {
            return Err(field("name", "another tenant has this name".into()));
        }
        let token = match (entry.token, entry.token_file) {
            (Some(_), Some(_)) => {
                return Err(field("token", "give token or token_file, not both".into()))
            }
            (Some(t), None) if !t.is_empty() => t,
            (None, Some(f)) => {
                read_token_file(&f).map_err(|e| field("token_file", e.to_string()))?
            }
            _ => {
                return Err(field(
                    "token",
                    "every tenant needs a token or a token_file".into(),
                ))
            }
        };
        if let Some(other) = tenants.iter().find(|t| t.token == token) {
            return Err(field(
                "token",
                format!(
                    "the same token as tenant `{}`: every tenant needs its own",
                    other.name
                ),
            ));
        }
        let require_v2 = match entry.require_signature.as_deref() {
            None | Some("any") => false,
            Some("v2") => true,
            Some(other) => {
                return Err(field(
                    "require_signature",
                    format!("`{other}`: expected \"v2\" or \"any\""),
                ))
            }
        };
        if let Some(ns) = &entry.namespaces {
            if let Some(bad) = ns.iter().find(|n| !valid_name(n)) {
                return Err(field(
                    "namespaces",
                    format!("`{bad}`: namespaces use a-z, 0-9, - and _"),
                ));
            }
        }
        if let Some(cmds) = &entry.commands {
            if let Some(bad) = cmds
                .iter()
                .find(|c| !toolset::verbs().any(|v| v == c.as_str()))
            {
                return Err(field(
                    "commands",
                    format!(
                        "`{bad}` is not a toolset verb ({})",
                        toolset::verbs().collect::<Vec<_>>().join(" ")
                    ),
                ));
            }
        }
        for rule in &entry.egress {
            check_egress_rule(rule).map_err(|m| field("egress", m))?;
        }
        if let Some(images) = &entry.images {
            for glob in images {
                check_image_glob(glob).map_err(|m| field("images", m))?;
            }
        }
        for path in &entry.verbatim {
            check_verbatim_path(path).map_err(|m| field("verbatim", m))?;
        }
        if let Some(group) = &entry.concurrency {
            if !valid_group_name(group) {
                return Err(field(
                    "concurrency",
                    format!("`{group}`: use 1-64 characters of A-Z, a-z, 0-9, ., _ and -"),
                ));
            }
        }
        if entry.concurrency_wait_s == Some(0) {
            return Err(field(
                "concurrency_wait_s",
                "must be at least 1 second".into(),
            ));
        }
        let portal = match &entry.portal {
            None => None,
            Some(p) => Some(Portal::parse(p).map_err(|m| field("portal", m))?),
        };
        let portal_token = match (&portal, &entry.portal_token_file) {
            (_, None) => None,
            (None, Some(_)) => {
                return Err(field(
                    "portal_token_file",
                    "names the token of the tenant's own portal: give `portal` too".into(),
                ))
            }
            (Some(_), Some(f)) => {
                Some(read_token_file(f).map_err(|e| field("portal_token_file", e.to_string()))?)
            }
        };
        let limits = match entry.limits {
            None => base.clone(),
            Some(v) => overlay_limits(base, v).map_err(|m| field("limits", m))?,
        };
        tenants.push(Tenant {
            name: entry.name,
            token,
            require_v2,
            aes_kdf: entry.aes_kdf,
            namespaces: entry.namespaces,
            commands: entry.commands,
            egress: entry.egress,
            images: entry.images,
            verbatim: entry.verbatim,
            limits,
            concurrency: entry.concurrency,
            concurrency_wait_s: entry
                .concurrency_wait_s
                .unwrap_or(DEFAULT_CONCURRENCY_WAIT_S),
            portal,
            portal_token,
        });
    }
    if tenants.is_empty() {
        return Err(err(
            path,
            "no tenant: add one, or leave \"default\" true".into(),
        ));
    }
    Ok(tenants)
}

/// Tenant limits override the server's: fields present in `v` replace `base`'s.
fn overlay_limits(base: &Limits, v: Value) -> Result<Limits, String> {
    let Value::Object(over) = v else {
        return Err("expected an object".into());
    };
    let mut merged = match serde_json::to_value(base) {
        Ok(Value::Object(m)) => m,
        _ => return Err("internal: limits do not serialise".into()),
    };
    merged.extend(over);
    serde_json::from_value(Value::Object(merged)).map_err(|e| e.to_string())
}

/// An `images` entry: a glob over image references (`registry.example.com/pay/*`).
pub fn check_image_glob(glob: &str) -> Result<(), String> {
    let sane = glob.len() <= 512
        && glob
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._/:@-*?[]!".contains(&c));
    if glob.is_empty() {
        Err("an empty glob".into())
    } else if !sane {
        Err(format!(
            "`{}`: use A-Z, a-z, 0-9, . _ / : @ - and the glob characters * ? [ ] !",
            glob.escape_debug()
        ))
    } else {
        Ok(())
    }
}

/// A `verbatim` entry: a dotted path of Marathon keys (`cpus`, `env`,
/// `container.docker.parameters.log-driver`).
pub fn check_verbatim_path(path: &str) -> Result<(), String> {
    let sane = path.len() <= 256
        && path.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"_-/".contains(&c))
        });
    if path.is_empty() {
        Err("an empty path".into())
    } else if !sane {
        Err(format!(
            "`{}`: a dotted path of keys of A-Z, a-z, 0-9, _ - and / (e.g. container.docker.parameters.log-driver)",
            path.escape_debug()
        ))
    } else {
        Ok(())
    }
}

/// An egress rule is `HOST:PORT` or `CIDR:PORT` (e.g. `10.0.0.0/8:80`, `db.internal:443`).
pub fn check_egress_rule(rule: &str) -> Result<(), String> {
    let (host, port) = rule
        .rsplit_once(':')
        .ok_or_else(|| format!("`{rule}`: expected HOST:PORT or CIDR:PORT"))?;
    port.parse::<u16>()
        .map_err(|_| format!("`{rule}`: the port must be a number"))?;
    if let Some((ip, bits)) = host.split_once('/') {
        let ip: std::net::IpAddr = ip
            .parse()
            .map_err(|_| format!("`{rule}`: bad network address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match bits.parse::<u8>() {
            Ok(b) if b <= max => {}
            _ => return Err(format!("`{rule}`: bad prefix length")),
        }
    } else if host.is_empty() {
        return Err(format!("`{rule}`: the host is empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_hidden() {
        for (url, shown) in [
            ("http://user:pw@host:9000", "http://host:9000"),
            ("https://u@h/p?q=a@b", "https://h/p?q=a@b"),
            ("http://a:b@c@host:1/x", "http://host:1/x"),
            ("http://10.0.0.5:9000", "http://10.0.0.5:9000"),
            ("http://host/path@x", "http://host/path@x"),
        ] {
            assert_eq!(without_userinfo(url), shown, "{url}");
        }
        assert_eq!(Portal::Sim.display(), "sim");
    }

    fn load_str(text: &str) -> Result<Vec<Tenant>, String> {
        parse(
            Path::new("t.json"),
            text,
            Some("default-token".into()),
            &Limits::default(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_spec_example_loads() {
        let t = load_str(
            r#"{"tenants": [{"name": "payments", "token": "pay-token", "require_signature": "v2",
                "aes_kdf": "pbkdf2", "namespaces": ["payments"], "commands": ["ls", "deploy"],
                "egress": ["10.0.0.0/8:80", "db:443"],
                "limits": {"script_timeout_s": 900, "pids": 128, "concurrent_runs": 2}}]}"#,
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "default");
        let p = &t[1];
        assert!(p.require_v2);
        assert_eq!(p.aes_kdf, Some(Kdf::Pbkdf2));
        assert_eq!(p.limits.script_timeout_s, 900);
        assert_eq!(p.limits.memory_mib, 1024, "unset limits keep the default");
        assert_eq!(p.limits.concurrent_runs, 2);
        assert_eq!(p.concurrency, None);
        assert_eq!(p.concurrency_wait_s, 1800);
        let t = load_str(
            r#"{"tenants": [{"name": "w", "token": "w", "concurrency": "web.prod", "concurrency_wait_s": 60}]}"#,
        )
        .unwrap();
        assert_eq!(t[1].concurrency.as_deref(), Some("web.prod"));
        assert_eq!(t[1].concurrency_wait_s, 60);
    }

    #[test]
    fn errors_name_the_tenant_and_field() {
        let cases = [
            (
                r#"{"tenants": [{"name": "a", "token": "x", "concurrency": "a b"}]}"#,
                "tenant `a`: concurrency: `a b`",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "concurrency_wait_s": 0}]}"#,
                "tenant `a`: concurrency_wait_s: must be at least 1 second",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "default-token"}]}"#,
                "tenant `a`: token: the same token as tenant `default`",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "limits": {"nope": 1}}]}"#,
                "tenant `a`: limits: unknown field `nope`",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "commands": ["rm"]}]}"#,
                "tenant `a`: commands: `rm` is not a toolset verb",
            ),
            (
                r#"{"tenants": [{"name": "a"}]}"#,
                "tenant `a`: token: every tenant needs",
            ),
            (
                r#"{"tenants": [{"name": "A b", "token": "x"}]}"#,
                "tenant `A b`: name:",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "require_signature": "sha1"}]}"#,
                "require_signature",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "egress": ["10.0.0.0/99:80"]}]}"#,
                "egress: `10.0.0.0/99:80`: bad prefix length",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "images": [""]}]}"#,
                "tenant `a`: images: an empty glob",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "images": ["reg/a b"]}]}"#,
                "tenant `a`: images: `reg/a b`",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "images": "reg/*"}]}"#,
                "tenant `a`: invalid type",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "verbatim": [""]}]}"#,
                "tenant `a`: verbatim: an empty path",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "verbatim": ["container..docker"]}]}"#,
                "tenant `a`: verbatim: `container..docker`",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "verbatim": ["env.*"]}]}"#,
                "tenant `a`: verbatim: `env.*`",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "verbatim": [1]}]}"#,
                "tenant `a`: invalid type",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "colour": 1}]}"#,
                "tenant `a`: unknown field `colour`",
            ),
            (r#"{"default": false, "tenants": []}"#, "no tenant"),
        ];
        for (text, want) in cases {
            let got = load_str(text).unwrap_err();
            assert!(got.contains(want), "{text}\n  got: {got}\n want: {want}");
        }
    }

    #[test]
    fn images_and_verbatim_load() {
        let t = load_str(
            r#"{"tenants": [{"name": "a", "token": "x",
                "images": ["registry.example.com/a/*", "nginx:1.2?"],
                "verbatim": ["cpus", "env", "container.docker.parameters.log-driver"]},
                {"name": "b", "token": "y"}]}"#,
        )
        .unwrap();
        assert_eq!(t[0].images, None, "the default tenant: any image");
        assert!(t[0].verbatim.is_empty(), "the default tenant: no verbatim");
        assert_eq!(
            t[1].images.as_deref(),
            Some(
                &[
                    "registry.example.com/a/*".to_string(),
                    "nginx:1.2?".to_string()
                ][..]
            )
        );
        assert_eq!(
            t[1].verbatim,
            ["cpus", "env", "container.docker.parameters.log-driver"]
        );
        assert_eq!(t[2].images, None);
        assert!(t[2].verbatim.is_empty());
    }

    #[test]
    fn a_tenant_may_name_its_own_portal() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("portal-token");
        std::fs::write(&token, "own-portal-secret\n").unwrap();
        let text = format!(
            r#"{{"tenants": [{{"name": "pay", "token": "t1", "portal": "http://10.0.0.9:9000/",
                "portal_token_file": "{}"}}, {{"name": "dev", "token": "t2", "portal": "sim"}},
                {{"name": "ops", "token": "t3"}}]}}"#,
            token.display()
        );
        let t = load_str(&text).unwrap();
        assert_eq!(
            t[1].portal,
            Some(Portal::Url("http://10.0.0.9:9000".into()))
        );
        assert_eq!(t[1].portal_token.as_deref(), Some("own-portal-secret"));
        assert_eq!(t[2].portal, Some(Portal::Sim));
        assert_eq!(t[2].portal_token, None);
        assert_eq!(t[3].portal, None);
        for (text, wanted) in [
            (
                r#"{"tenants": [{"name": "a", "token": "x", "portal": "ftp://h"}]}"#,
                "tenant `a`: portal: ftp://h: expected `sim` or an http:// URL",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "portal": "http://u:pw@"}]}"#,
                "tenant `a`: portal: http://: expected",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "portal_token_file": "/nope"}]}"#,
                "tenant `a`: portal_token_file: names the token of the tenant's own portal",
            ),
            (
                r#"{"tenants": [{"name": "a", "token": "x", "portal": "sim", "portal_token_file": "/no/such"}]}"#,
                "tenant `a`: portal_token_file: cannot read the token file /no/such",
            ),
        ] {
            let e = load_str(text).unwrap_err();
            assert!(e.contains(wanted), "{e}\nwanted: {wanted}");
            assert!(!e.contains("pw"), "{e}");
        }
    }

    #[test]
    fn default_can_be_disabled() {
        let t =
            load_str(r#"{"default": false, "tenants": [{"name": "a", "token": "x"}]}"#).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].name, "a");
    }
}
