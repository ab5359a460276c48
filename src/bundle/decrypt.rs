//! OpenSSL `enc -aes-256-cbc` compatible encryption (SPEC §3.3). Owned by the crypto work.

use std::path::Path;

/// A key derivation of `openssl enc` (SPEC §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kdf {
    Pbkdf2,
    Sha256,
    Md5,
}

#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    #[error("not decryptable with this token")]
    Wrong,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleDecryptError {
    #[error("unable to decrypt {0} (check the token)")]
    File(String),
    #[error("could not write the bundle: {0}")]
    Io(#[from] std::io::Error),
}

/// Decrypts a file's bytes (raw or base64). `kdf` None tries pbkdf2, sha256, md5 in order.
pub fn decrypt(data: &[u8], password: &[u8], kdf: Option<Kdf>) -> Result<Vec<u8>, DecryptError> {
    let _ = (data, password, kdf);
    Err(DecryptError::Wrong)
}

/// Decrypts every `*.aes` regular file under `dir`; returns their names relative to `dir`,
/// in the order decrypted (sorted by path).
pub fn decrypt_bundle(
    dir: &Path,
    password: &[u8],
    kdf: Option<Kdf>,
    owner: Option<(u32, u32)>,
) -> Result<Vec<String>, BundleDecryptError> {
    let _ = (dir, password, kdf, owner);
    Ok(Vec::new())
}
