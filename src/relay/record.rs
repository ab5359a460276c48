//! The relay's audit records (SPEC §8): every command's verdict is on disk
//! before it goes anywhere (`portal.command`), and its outcome before the
//! script sees it (`portal.answered`).

use std::time::Instant;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{fail, reply, Answer, RunState};

/// The `portal.command` audit record (§8), written before anything is
/// relayed: names and digests, never contents.
#[derive(Default)]
pub(super) struct Record<'a> {
    /// The line relayed (after any policy rewrite).
    pub line: &'a str,
    /// The line the script sent, when the policy rewrote it.
    pub requested: Option<&'a str>,
    pub files: &'a [(String, Bytes)],
}

/// A command that passed the policy and whose `portal.command` record is
/// on disk: it may now reach the portal.
pub(super) struct Admitted {
    cmd: u64,
    verb: String,
    pub started: Instant,
}

impl RunState {
    pub(super) fn script(&self) -> String {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Writes the `portal.command` record of a verdict (fsync'd). `denied`
    /// carries the reason; a denial is complete in itself (ok false).
    pub(super) fn record_verdict(
        &self,
        cmd: u64,
        r: &Record<'_>,
        denied: Option<&str>,
    ) -> Result<(), crate::audit::AuditError> {
        let files: Vec<Value> = r
            .files
            .iter()
            .map(|(name, data)| json!({"name": name, "sha256": hex::encode(Sha256::digest(data))}))
            .collect();
        let mut fields = json!({
            "script": self.script(),
            "cmd": cmd,
            "line": r.line,
            "files": files,
            "verdict": if denied.is_some() { "denied" } else { "allowed" },
        });
        if let Some(requested) = r.requested {
            fields["requested"] = json!(requested);
        }
        if let Some(why) = denied {
            fields["reason"] = json!(why);
            fields["ok"] = json!(false);
        }
        self.relay
            .audit
            .record("portal.command", &self.run_id, &self.tenant.name, fields)
    }

    pub(super) fn next_cmd(&self) -> u64 {
        self.commands
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Audits an allowed command before it goes anywhere (fail closed, §8):
    /// when the record cannot be written, the command is refused.
    pub(super) fn admit(
        &self,
        verb: &str,
        r: Record<'_>,
    ) -> Result<Admitted, crate::audit::AuditError> {
        let cmd = self.next_cmd();
        self.relay.metrics.portal_command(verb, true);
        self.record_verdict(cmd, &r, None)?;
        Ok(Admitted {
            cmd,
            verb: verb.to_string(),
            started: Instant::now(),
        })
    }

    pub(super) fn deny(&self, verb: &str, r: Record<'_>, why: &str) -> Answer {
        let cmd = self.next_cmd();
        self.relay.metrics.portal_command(verb, false);
        match self.record_verdict(cmd, &r, Some(why)) {
            Ok(()) => fail(StatusCode::FORBIDDEN, format!("denied by policy: {why}")),
            Err(e) => fail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("audit log unavailable: {e}"),
            ),
        }
    }

    /// Records the outcome (`portal.answered`) before the script sees it; a
    /// failed write withholds the answer.
    pub(super) fn finish(
        &self,
        admitted: Admitted,
        line: &str,
        ok: bool,
        status: StatusCode,
        body: Value,
    ) -> Answer {
        let ms = admitted.started.elapsed().as_millis() as u64;
        let fields = json!({
            "script": self.script(),
            "cmd": admitted.cmd,
            "verb": admitted.verb,
            "line": line,
            "ok": ok,
            "ms": ms,
        });
        match self
            .relay
            .audit
            .record("portal.answered", &self.run_id, &self.tenant.name, fields)
        {
            Ok(()) => reply(status, &body),
            Err(e) => fail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("audit log unavailable: {e}"),
            ),
        }
    }
}
