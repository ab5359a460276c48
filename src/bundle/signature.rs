//! Bundle signatures (SPEC §2.1, §2.6).
//!
//! `sha1=` and `sha256=` are HMACs of the archive bytes keyed with the tenant's
//! token (what `openssl dgst -sha1 -hmac TOKEN` prints). `v2=` is an HMAC-SHA256
//! over a canonical text that binds the path, tenant, variables and the
//! archive's SHA-256, with a timestamp so it cannot be replayed.
//!
//! The archive digests are computed while the upload streams to disk
//! ([`ArchiveDigest`]), so verification costs no second pass. Every comparison
//! goes through `Mac::verify_slice`, which is constant-time.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

/// How long a v2 signature stays valid around the server's clock (§2.6).
pub const V2_WINDOW_S: u64 = 300;

/// The scheme of an `X-Signature` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sha1,
    Sha256,
    V2,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Sha1 => "sha1",
            Scheme::Sha256 => "sha256",
            Scheme::V2 => "v2",
        }
    }
}

/// A parsed `X-Signature` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub scheme: Scheme,
    pub mac: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing X-Signature header")]
    Missing,
    #[error(
        "malformed X-Signature header (expected sha1=<40 hex>, sha256=<64 hex> or v2=<64 hex>)"
    )]
    Malformed,
    #[error("v2 signatures need an X-Servo-Timestamp header with unix seconds")]
    MissingTimestamp,
    #[error("X-Servo-Timestamp is more than 300 seconds away from the server's clock")]
    Expired,
    #[error("this tenant requires v2 signatures")]
    SchemeRefused,
    #[error("invalid signature")]
    Invalid,
    #[error("this signature was already used")]
    Replayed,
}

impl Signature {
    /// Parses `sha1=<hex>`, `sha256=<hex>` or `v2=<hex>` (hex case-insensitive).
    pub fn parse(header: &str) -> Result<Signature, SignatureError> {
        let (scheme, hex_part) = header
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        let (scheme, len) = match scheme {
            "sha1" => (Scheme::Sha1, 20),
            "sha256" => (Scheme::Sha256, 32),
            "v2" => (Scheme::V2, 32),
            _ => return Err(SignatureError::Malformed),
        };
        let mac = hex::decode(hex_part).map_err(|_| SignatureError::Malformed)?;
        if mac.len() != len {
            return Err(SignatureError::Malformed);
        }
        Ok(Signature { scheme, mac })
    }
}

/// The digests of an archive, fed chunk by chunk while it is written to disk.
/// Only what the request's scheme needs is computed: its HMAC, or for v2 the
/// plain SHA-256. A wrong signature is thus answered after one hash pass (the
/// audit log's SHA-256 of an accepted legacy-signed archive is computed once
/// the signature holds: `sha256_file`).
pub struct ArchiveDigest {
    hmac: Option<ArchiveMac>,
    sha256: Option<Sha256>,
    size: u64,
}

enum ArchiveMac {
    Sha1(HmacSha1),
    Sha256(HmacSha256),
}

/// What is left once the archive has been read whole.
pub struct FinishedDigest {
    hmac: Option<ArchiveMac>,
    /// Lowercase hex SHA-256 of the archive bytes (v2 only).
    pub sha256_hex: Option<String>,
    pub size: u64,
}

impl ArchiveDigest {
    pub fn new(scheme: Scheme, token: &[u8]) -> ArchiveDigest {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let hmac = match scheme {
            Scheme::Sha1 => HmacSha1::new_from_slice(token).ok().map(ArchiveMac::Sha1),
            Scheme::Sha256 => HmacSha256::new_from_slice(token)
                .ok()
                .map(ArchiveMac::Sha256),
            Scheme::V2 => None,
        };
        ArchiveDigest {
            hmac,
            sha256: (scheme == Scheme::V2).then(Sha256::new),
            size: 0,
        }
    }

    /// Also the archive's SHA-256 (the audit's digest), whatever the
    /// scheme: cheaper while a small upload streams than read back after.
    pub fn with_sha256(mut self) -> ArchiveDigest {
        self.sha256.get_or_insert_with(Sha256::new);
        self
    }

    pub fn update(&mut self, chunk: &[u8]) {
        match &mut self.hmac {
            Some(ArchiveMac::Sha1(m)) => m.update(chunk),
            Some(ArchiveMac::Sha256(m)) => m.update(chunk),
            None => {}
        }
        if let Some(s) = &mut self.sha256 {
            s.update(chunk);
        }
        self.size += chunk.len() as u64;
    }

    pub fn finish(self) -> FinishedDigest {
        FinishedDigest {
            hmac: self.hmac,
            sha256_hex: self.sha256.map(|s| hex::encode(s.finalize())),
            size: self.size,
        }
    }
}

/// Everything a v2 signature binds, besides the archive (§2.6).
pub struct V2Context<'a> {
    pub timestamp: &'a str,
    pub path: &'a str,
    pub tenant: &'a str,
    /// The X-Var variables as (NAME, value); sorted here.
    pub vars: &'a [(String, String)],
    /// The concurrency group the request names (§11): bound by one more
    /// line, `concurrency=<name>`, right after the tenant line.
    pub concurrency: Option<&'a str>,
}

/// The exact text a v2 signature is computed over.
pub fn v2_message(ctx: &V2Context<'_>, archive_sha256_hex: &str) -> String {
    let mut vars: Vec<&(String, String)> = ctx.vars.iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut text = format!(
        "v2\n{}\nPOST\n{}\n{}\n",
        ctx.timestamp, ctx.path, ctx.tenant
    );
    if let Some(group) = ctx.concurrency {
        text.push_str("concurrency=");
        text.push_str(group);
        text.push('\n');
    }
    for (name, value) in vars {
        text.push_str(name);
        text.push('=');
        text.push_str(value);
        text.push('\n');
    }
    text.push_str(archive_sha256_hex);
    text
}

/// Computes the v2 signature (lowercase hex), as `servo run` sends it.
pub fn v2_sign(token: &[u8], ctx: &V2Context<'_>, archive_sha256_hex: &str) -> String {
    let mut mac = match HmacSha256::new_from_slice(token) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(v2_message(ctx, archive_sha256_hex).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks that a v2 timestamp is within the window around `now` (unix seconds).
pub fn check_v2_timestamp(timestamp: &str, now: u64) -> Result<u64, SignatureError> {
    let ts: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::MissingTimestamp)?;
    if ts.abs_diff(now) > V2_WINDOW_S {
        return Err(SignatureError::Expired);
    }
    Ok(ts)
}

impl FinishedDigest {
    /// Verifies `sig` in constant time. `v2` is needed for v2 signatures.
    pub fn verify(
        self,
        sig: &Signature,
        token: &[u8],
        v2: Option<&V2Context<'_>>,
    ) -> Result<(), SignatureError> {
        let ok = match (sig.scheme, self.hmac) {
            (Scheme::Sha1, Some(ArchiveMac::Sha1(m))) => m.verify_slice(&sig.mac).is_ok(),
            (Scheme::Sha256, Some(ArchiveMac::Sha256(m))) => m.verify_slice(&sig.mac).is_ok(),
            (Scheme::V2, None) => {
                let ctx = v2.ok_or(SignatureError::MissingTimestamp)?;
                let mut mac =
                    HmacSha256::new_from_slice(token).map_err(|_| SignatureError::Invalid)?;
                let sha256 = self.sha256_hex.as_deref().ok_or(SignatureError::Invalid)?;
                mac.update(v2_message(ctx, sha256).as_bytes());
                mac.verify_slice(&sig.mac).is_ok()
            }
            // The digest was started for another scheme: a programming error,
            // answered as an invalid signature rather than a panic.
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }
}

/// The lowercase hex SHA-256 of a file (read in 1 MiB blocks).
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// How a refused replay of a v2 signature is answered (§2.6). Saying so leaks
/// nothing: only the holder of a valid signature can be told; it lets
/// `servo run` sign again when it sent the same bundle twice in one second.
pub const REPLAYED: &str = "replayed signature";

/// HMAC-SHA1 of `data` keyed with `token`, lowercase hex (the portal relay's signature, §6.3).
pub fn hmac_sha1_hex(token: &[u8], data: &[u8]) -> String {
    let mut mac = match HmacSha1::new_from_slice(token) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(scheme: Scheme, token: &[u8], data: &[u8]) -> FinishedDigest {
        let mut d = ArchiveDigest::new(scheme, token);
        for chunk in data.chunks(7) {
            d.update(chunk);
        }
        d.finish()
    }

    #[test]
    fn parses_headers() {
        let s = Signature::parse(&format!("sha1={}", "Ab".repeat(20))).unwrap();
        assert_eq!(s.scheme, Scheme::Sha1);
        assert_eq!(s.mac, vec![0xab; 20]);
        assert!(Signature::parse(&format!("sha256={}", "00".repeat(32))).is_ok());
        assert!(Signature::parse(&format!("v2={}", "00".repeat(32))).is_ok());
        for bad in [
            "",
            "sha1",
            "sha1=",
            "md5=00",
            "sha1=zz",
            &format!("sha1={}", "00".repeat(32)),
        ] {
            assert_eq!(
                Signature::parse(bad),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn hmac_sha1_known_answer() {
        // RFC 2202 test case 2.
        assert_eq!(
            hmac_sha1_hex(b"Jefe", b"what do ya want for nothing?"),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn verifies_sha1_and_sha256_and_rejects_others() {
        let data = b"archive bytes";
        let good = hmac_sha1_hex(b"tok", data);
        let sig = Signature::parse(&format!("sha1={good}")).unwrap();
        assert!(digest(Scheme::Sha1, b"tok", data)
            .verify(&sig, b"tok", None)
            .is_ok());
        assert_eq!(
            digest(Scheme::Sha1, b"other", data).verify(&sig, b"other", None),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            digest(Scheme::Sha1, b"tok", b"archive bytez").verify(&sig, b"tok", None),
            Err(SignatureError::Invalid)
        );
        let mut mac = HmacSha256::new_from_slice(b"tok").unwrap();
        mac.update(data);
        let sig256 = Signature::parse(&format!(
            "sha256={}",
            hex::encode(mac.finalize().into_bytes())
        ))
        .unwrap();
        assert!(digest(Scheme::Sha256, b"tok", data)
            .verify(&sig256, b"tok", None)
            .is_ok());
    }

    #[test]
    fn v2_binds_everything() {
        let vars = vec![
            ("B".to_string(), "2".to_string()),
            ("A".to_string(), "1".to_string()),
        ];
        let ctx = V2Context {
            timestamp: "1700000000",
            path: "/run/a.py",
            tenant: "default",
            vars: &vars,
            concurrency: None,
        };
        let sha = hex::encode(Sha256::digest(b"x"));
        assert_eq!(
            v2_message(&ctx, &sha),
            format!("v2\n1700000000\nPOST\n/run/a.py\ndefault\nA=1\nB=2\n{sha}")
        );
        let sig = Signature::parse(&format!("v2={}", v2_sign(b"tok", &ctx, &sha))).unwrap();
        assert!(digest(Scheme::V2, b"tok", b"x")
            .verify(&sig, b"tok", Some(&ctx))
            .is_ok());
        let grouped = V2Context {
            concurrency: Some("prod-db"),
            ..ctx
        };
        assert_eq!(
            v2_message(&grouped, &sha),
            format!(
                "v2\n1700000000\nPOST\n/run/a.py\ndefault\nconcurrency=prod-db\nA=1\nB=2\n{sha}"
            )
        );
        // A signature made without the group line does not hold with it.
        assert_eq!(
            digest(Scheme::V2, b"tok", b"x").verify(&sig, b"tok", Some(&grouped)),
            Err(SignatureError::Invalid)
        );
        let other = V2Context {
            tenant: "payments",
            ..ctx
        };
        assert_eq!(
            digest(Scheme::V2, b"tok", b"x").verify(&sig, b"tok", Some(&other)),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn v2_window() {
        assert!(check_v2_timestamp("1000", 1300).is_ok());
        assert_eq!(
            check_v2_timestamp("1000", 1301),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            check_v2_timestamp("abc", 1),
            Err(SignatureError::MissingTimestamp)
        );
    }
}
