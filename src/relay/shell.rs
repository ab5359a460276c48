//! `POST /shell` (SPEC §6.3): a command line and its files, parsed by the
//! toolset grammar, checked by the tenant's policy, audited, then sent as its
//! canonical line to the portal (or the simulator).

use std::convert::Infallible;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::record::Record;
use super::{
    check_command, deploy_yaml, egress, fail, not_relayed, policy, portal, Answer, RunState,
    Verdict,
};
use crate::tenants::Portal;
use crate::toolset;

/// A file name a script may upload (SPEC §6.3): a plain base name, which the
/// portal uses as the file's path in its working directory.
fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Why the files' field names cannot be relayed (SPEC §6.3): the portal
/// saves each file under its field name, as is.
fn bad_file_names(files: &[(String, Bytes)]) -> Option<String> {
    for (k, (name, _)) in files.iter().enumerate() {
        if !valid_file_name(name) {
            return Some(format!(
                "bad file name `{}`: use a plain base name (letters, digits, . _ -; not starting with . or -)",
                name.escape_debug()
            ));
        }
        if files[..k].iter().any(|(n, _)| n == name) {
            return Some(format!("the file `{name}` is sent twice"));
        }
    }
    None
}

/// The uploaded files a command names, in the command's order; the error
/// carries the reason and what was sent (for the audit record).
#[allow(clippy::type_complexity)]
fn files_for(
    cmd: &toolset::Command,
    mut sent: Vec<(String, Bytes)>,
) -> Result<Vec<(String, Bytes)>, (String, Vec<(String, Bytes)>)> {
    let mut named = Vec::new();
    for name in cmd.files() {
        match sent.iter().position(|(n, _)| n == name) {
            Some(k) => named.push(sent.swap_remove(k)),
            None if named.iter().any(|(n, _): &(String, Bytes)| n == name) => {
                let why = format!("`{name}` is named twice");
                named.append(&mut sent);
                return Err((why, named));
            }
            None => {
                let why = format!(
                    "`{}` names the file `{name}`, which was not sent with the command (send it as a multipart file named `{name}`)",
                    cmd.verb()
                );
                named.append(&mut sent);
                return Err((why, named));
            }
        }
    }
    Ok(named)
}

async fn read_files(
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<Vec<(String, Bytes)>, String> {
    let Some(content_type) = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(Vec::new());
    };
    if !content_type.to_ascii_lowercase().starts_with("multipart/") {
        return Ok(Vec::new());
    }
    let boundary =
        multer::parse_boundary(content_type).map_err(|e| format!("bad multipart body: {e}"))?;
    let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut files: Vec<(String, Bytes)> = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| format!("bad multipart body: {e}"))?
    {
        let name = field
            .name()
            .filter(|n| !n.is_empty())
            .or(field.file_name())
            .unwrap_or("")
            .to_string();
        if name.len() > 4096 || files.len() >= 64 {
            return Err("too many files, or a file name over 4 KiB".into());
        }
        let data = field
            .bytes()
            .await
            .map_err(|e| format!("bad multipart body: {e}"))?;
        files.push((name, data));
    }
    Ok(files)
}

pub(super) async fn shell(
    state: &RunState,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Answer {
    // Bytes a header may carry but a command may not (tabs, non-ASCII) are
    // left for the grammar to refuse: a policy denial, audited like others.
    let line = match parts.headers.get("x-shell") {
        Some(v) if !v.as_bytes().trim_ascii().is_empty() => {
            String::from_utf8_lossy(v.as_bytes()).trim().to_string()
        }
        Some(_) | None => {
            return fail(
                StatusCode::BAD_REQUEST,
                "missing X-Shell header: send the command line in it",
            )
        }
    };
    let files = match read_files(parts, body).await {
        Ok(f) => f,
        Err(why) => return fail(StatusCode::BAD_REQUEST, why),
    };
    let requested = line;
    let verb = requested.split(' ').next().unwrap_or("").to_string();
    let verdict = match bad_file_names(&files) {
        Some(why) => Verdict::Deny(why),
        None => check_command(&state.tenant, &requested),
    };
    let cmd = match verdict {
        Verdict::Allow(cmd) => cmd,
        Verdict::Deny(why) => {
            let record = Record {
                line: &requested,
                files: &files,
                ..Default::default()
            };
            return state.deny(&verb, record, &why);
        }
    };
    // Only the files the command names travel (deploy containers, `-o`
    // overrides); each must have been sent, and is checked as policy.
    let files = match files_for(&cmd, files) {
        Ok(f) => f,
        Err((why, sent)) => {
            let record = Record {
                line: &requested,
                files: &sent,
                ..Default::default()
            };
            return state.deny(&verb, record, &why);
        }
    };
    // Deploy files are policy too (§6.3): the portal loads them with an
    // unsafe YAML loader and merges `verbatim` into the Marathon app.
    if cmd.verb() == "deploy" {
        let rules = deploy_yaml::DeployRules {
            images: state.tenant.images.as_deref(),
            verbatim: &state.tenant.verbatim,
        };
        let overrides = cmd.overrides();
        for (name, bytes) in &files {
            let is_override = overrides.contains(&name.as_str());
            if let Err(why) = deploy_yaml::check(name, bytes, &rules, is_override) {
                let record = Record {
                    line: &requested,
                    files: &files,
                    ..Default::default()
                };
                return state.deny(&verb, record, &why);
            }
        }
    }
    let line = cmd.canonical();
    let record = Record {
        line: &line,
        requested: (requested != line).then_some(requested.as_str()),
        files: &files,
    };
    let admitted = match state.admit(&verb, record) {
        Ok(a) => a,
        Err(e) => return not_relayed(e),
    };
    let started = admitted.started;
    let relay = &state.relay;
    let (target, token) = relay.portal_of(&state.tenant);
    let mut answer = match target {
        Portal::Sim => relay.sim.shell(&line, &files),
        Portal::Url(base) => portal::shell(
            &relay.client,
            base,
            token,
            &line,
            &files,
            relay.portal_timeout,
        )
        .await
        .unwrap_or_else(|why| json!({"ok": false, "out": format!("portal unreachable: {why}")})),
    };
    let ok = answer.get("ok") == Some(&Value::Bool(true));
    if ok {
        let out = answer.get("out").cloned().unwrap_or(Value::Null);
        match policy::filter_answer(&state.tenant, &cmd, &out) {
            Some(Ok(filtered)) => answer["out"] = filtered,
            Some(Err(why)) => {
                answer = json!({"ok": false, "out": format!("denied by policy: {why}")});
            }
            None => {}
        }
        if matches!(cmd.verb(), "port" | "grep") {
            let found = egress::endpoints_in(answer.get("out").unwrap_or(&Value::Null));
            state
                .endpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(found);
        }
    }
    let ok = answer.get("ok") == Some(&Value::Bool(true));
    if answer.get("ms").is_none() || matches!(target, Portal::Sim) {
        answer["ms"] = json!(started.elapsed().as_millis() as u64);
    }
    state.finish(admitted, &line, ok, StatusCode::OK, answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert!(valid_file_name("web.yml"));
        for bad in [
            "", ".", "..", "a/b", "a\"b", "a\nb", "a\\b", ".x", "-i", "--force", "a b", "a*",
        ] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
    }
}
