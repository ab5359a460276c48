//! OpenSSL `enc -aes-256-cbc` compatible encryption (SPEC §3.3).
//!
//! The file format is what `openssl enc` writes: `Salted__`, an 8-byte salt,
//! then the AES-256-CBC ciphertext with PKCS#7 padding; `-nosalt` drops the
//! header (the key derivation then runs with an empty salt); `-a` wraps all of
//! it in base64. Key and IV come from the password (the token) by one of three
//! derivations ([`Kdf`]). The format carries no MAC: a wrong token is only
//! noticed through bad padding, which is why a tenant may pin the derivation.
//!
//! [`decrypt_bundle`] applies this to a freshly unpacked bundle without ever
//! following a symlink on the host.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs::{OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use md5::Md5;
use sha2::{Digest, Sha256};

/// The header of OpenSSL's salted format.
const MAGIC: &[u8; 8] = b"Salted__";
const SALT_LEN: usize = 8;
const BLOCK: usize = 16;
/// `openssl enc -pbkdf2` without `-iter`.
pub const PBKDF2_ITERATIONS: u32 = 10_000;
/// `openssl enc -a` writes lines of 64 characters.
const BASE64_LINE: usize = 64;

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

/// A key derivation of `openssl enc` (SPEC §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kdf {
    /// `-pbkdf2`: PBKDF2-HMAC-SHA256, 10,000 iterations.
    Pbkdf2,
    /// `-md sha256`: EVP_BytesToKey with SHA-256 (OpenSSL ≥ 1.1 default without -pbkdf2).
    Sha256,
    /// `-md md5`: EVP_BytesToKey with MD5 (OpenSSL 1.0, the original servo).
    Md5,
}

impl Kdf {
    /// The order in which they are tried when none is pinned.
    pub const ALL: [Kdf; 3] = [Kdf::Pbkdf2, Kdf::Sha256, Kdf::Md5];

    pub fn as_str(self) -> &'static str {
        match self {
            Kdf::Pbkdf2 => "pbkdf2",
            Kdf::Sha256 => "sha256",
            Kdf::Md5 => "md5",
        }
    }
}

impl std::fmt::Display for Kdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    /// Wrong token, wrong derivation, or not an `openssl enc` file at all:
    /// the format cannot tell these apart.
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

/// An AES-256 key and CBC IV.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyIv {
    pub key: [u8; 32],
    pub iv: [u8; 16],
}

impl std::fmt::Debug for KeyIv {
    // Key material stays out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyIv(..)")
    }
}

impl KeyIv {
    fn from_material(material: &[u8; 48]) -> KeyIv {
        let mut key = [0u8; 32];
        let mut iv = [0u8; 16];
        key.copy_from_slice(&material[..32]);
        iv.copy_from_slice(&material[32..]);
        KeyIv { key, iv }
    }
}

/// Derives key and IV as `openssl enc` does with `kdf` (`salt` empty for `-nosalt`).
pub fn derive(kdf: Kdf, password: &[u8], salt: &[u8]) -> KeyIv {
    match kdf {
        Kdf::Pbkdf2 => derive_pbkdf2(password, salt, PBKDF2_ITERATIONS),
        Kdf::Sha256 => bytes_to_key::<Sha256>(password, salt),
        Kdf::Md5 => bytes_to_key::<Md5>(password, salt),
    }
}

/// PBKDF2-HMAC-SHA256 with any iteration count (`openssl enc -iter N`).
pub fn derive_pbkdf2(password: &[u8], salt: &[u8], iterations: u32) -> KeyIv {
    let mut material = [0u8; 48];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut material);
    KeyIv::from_material(&material)
}

/// OpenSSL's EVP_BytesToKey with one iteration: D_i = H(D_{i-1} || password || salt),
/// concatenated until 48 bytes are there.
fn bytes_to_key<D: Digest>(password: &[u8], salt: &[u8]) -> KeyIv {
    let mut material = Vec::with_capacity(48 + 64);
    let mut prev: Vec<u8> = Vec::new();
    while material.len() < 48 {
        let mut h = D::new();
        h.update(&prev);
        h.update(password);
        h.update(salt);
        prev = h.finalize().to_vec();
        material.extend_from_slice(&prev);
    }
    let mut out = [0u8; 48];
    out.copy_from_slice(&material[..48]);
    KeyIv::from_material(&out)
}

/// Base64 as `openssl enc -a -d` reads it: line breaks anywhere, padding optional.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn decode_base64(data: &[u8]) -> Option<Vec<u8>> {
    let compact: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return None;
    }
    LENIENT_BASE64.decode(compact).ok()
}

/// The binary form of a file: raw when it starts with the header, else base64
/// when it decodes as such, else raw (`-nosalt` binary). Raw binary ciphertext
/// that happens to be valid base64 is vanishingly unlikely, so a base64 file
/// is never also tried as raw: that would only double the chance of a wrong
/// token passing the padding check.
fn binary_form(data: &[u8]) -> Cow<'_, [u8]> {
    if data.starts_with(MAGIC) {
        return Cow::Borrowed(data);
    }
    match decode_base64(data) {
        Some(decoded) => Cow::Owned(decoded),
        None => Cow::Borrowed(data),
    }
}

/// Splits the binary form into (salt, ciphertext); the salt is empty for `-nosalt`.
fn split_salt(bin: &[u8]) -> Result<(&[u8], &[u8]), DecryptError> {
    let (salt, ct) = match bin.strip_prefix(MAGIC.as_slice()) {
        Some(rest) if rest.len() >= SALT_LEN => rest.split_at(SALT_LEN),
        Some(_) => return Err(DecryptError::Wrong),
        None => (&[][..], bin),
    };
    if ct.is_empty() || ct.len() % BLOCK != 0 {
        return Err(DecryptError::Wrong);
    }
    Ok((salt, ct))
}

/// Decrypts AES-256-CBC with PKCS#7 padding; bad padding is [`DecryptError::Wrong`].
pub fn decrypt_with(key_iv: &KeyIv, ciphertext: &[u8]) -> Result<Vec<u8>, DecryptError> {
    Aes256CbcDec::new(&key_iv.key.into(), &key_iv.iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map_err(|_| DecryptError::Wrong)
}

/// Decrypts a file's bytes (raw or base64). `kdf` None tries pbkdf2, sha256, md5 in order.
pub fn decrypt(data: &[u8], password: &[u8], kdf: Option<Kdf>) -> Result<Vec<u8>, DecryptError> {
    let bin = binary_form(data);
    let (salt, ct) = split_salt(&bin)?;
    let kdfs: &[Kdf] = match &kdf {
        Some(k) => std::slice::from_ref(k),
        None => &Kdf::ALL,
    };
    kdfs.iter()
        .find_map(|&k| decrypt_with(&derive(k, password, salt), ct).ok())
        .ok_or(DecryptError::Wrong)
}

/// Encrypts as `openssl enc -aes-256-cbc -salt` (plus `-a` when `base64`) with
/// a fresh random salt.
///
/// # Panics
/// When the OS has no randomness to give (as `std`'s own hash seeding does).
pub fn encrypt(plain: &[u8], password: &[u8], kdf: Kdf, base64: bool) -> Vec<u8> {
    let mut salt = [0u8; SALT_LEN];
    if let Err(e) = getrandom::fill(&mut salt) {
        panic!("no OS randomness for the salt: {e}");
    }
    encrypt_with_salt(plain, password, kdf, salt, base64)
}

/// [`encrypt`] with a given salt (deterministic output, for tests).
pub fn encrypt_with_salt(
    plain: &[u8],
    password: &[u8],
    kdf: Kdf,
    salt: [u8; SALT_LEN],
    base64: bool,
) -> Vec<u8> {
    let key_iv = derive(kdf, password, &salt);
    let ct = Aes256CbcEnc::new(&key_iv.key.into(), &key_iv.iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plain);
    let mut bin = Vec::with_capacity(MAGIC.len() + SALT_LEN + ct.len());
    bin.extend_from_slice(MAGIC);
    bin.extend_from_slice(&salt);
    bin.extend_from_slice(&ct);
    if !base64 {
        return bin;
    }
    let text = STANDARD.encode(&bin);
    let mut out = Vec::with_capacity(text.len() + text.len() / BASE64_LINE + 1);
    for line in text.as_bytes().chunks(BASE64_LINE) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// A `.aes` entry found in the bundle.
struct Found {
    path: PathBuf,
    /// Relative to the bundle root, `/`-separated (what the log shows).
    rel: String,
    /// Not a symlink, fifo, device...: only these are opened at all.
    regular: bool,
}

/// Collects every `*.aes` name under `dir` without following symlinks: a
/// symlinked directory is not descended, a symlinked `.aes` is collected (and
/// then refused).
fn collect(root: &Path, rel: &Path, found: &mut Vec<Found>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let rel_child = rel.join(entry.file_name());
        // DirEntry::file_type does not follow symlinks.
        let ft = entry.file_type()?;
        if ft.is_dir() {
            collect(root, &rel_child, found)?;
        } else if entry.file_name().as_encoded_bytes().ends_with(b".aes") {
            let rel_str = rel_child
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            found.push(Found {
                path: entry.path(),
                rel: rel_str,
                regular: ft.is_file(),
            });
        }
    }
    Ok(())
}

/// Why one `.aes` file failed: refused or undecryptable (reported by name), or
/// an I/O error on the host side.
enum FileError {
    Refused,
    Io(std::io::Error),
}

impl From<std::io::Error> for FileError {
    fn from(e: std::io::Error) -> Self {
        FileError::Io(e)
    }
}

/// Decrypts one `.aes` file beside itself; never follows a symlink.
fn decrypt_one(
    aes_path: &Path,
    password: &[u8],
    kdf: Option<Kdf>,
    owner: Option<(u32, u32)>,
) -> Result<(), FileError> {
    let name = aes_path.file_name().ok_or(FileError::Refused)?;
    let stem = &name.as_encoded_bytes()[..name.len().saturating_sub(4)];
    if stem.is_empty() {
        // A file named just `.aes` has no plaintext name.
        return Err(FileError::Refused);
    }
    let mut input = match OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a fifo must not hang the run.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(aes_path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(FileError::Refused),
        Err(e) => return Err(e.into()),
    };
    let meta = input.metadata()?;
    if !meta.is_file() {
        return Err(FileError::Refused);
    }
    let mut data = Vec::with_capacity(meta.len().try_into().unwrap_or(0));
    input.read_to_end(&mut data)?;
    let plain = decrypt(&data, password, kdf).map_err(|_| FileError::Refused)?;

    let out_path = aes_path.with_file_name(OsStr::from_bytes(stem));
    let mode = if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    };
    // O_EXCL refuses an existing name, a symlink included (dangling or not).
    let mut out = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&out_path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(FileError::Refused),
        Err(e) => return Err(e.into()),
    };
    // The umask may have narrowed the mode.
    out.set_permissions(Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&out, Some(uid), Some(gid))?;
    }
    out.write_all(&plain)?;
    Ok(())
}

/// Decrypts every `*.aes` regular file under `dir`; returns their names relative to `dir`,
/// in the order decrypted (sorted by path).
pub fn decrypt_bundle(
    dir: &Path,
    password: &[u8],
    kdf: Option<Kdf>,
    owner: Option<(u32, u32)>,
) -> Result<Vec<String>, BundleDecryptError> {
    let mut found = Vec::new();
    collect(dir, Path::new(""), &mut found)?;
    found.sort_by(|a, b| a.path.cmp(&b.path));
    let mut done = Vec::with_capacity(found.len());
    for f in found {
        if !f.regular {
            return Err(BundleDecryptError::File(f.rel));
        }
        // decrypt_one checks again on the open descriptor (O_NOFOLLOW, fstat).
        match decrypt_one(&f.path, password, kdf, owner) {
            Ok(()) => done.push(f.rel),
            Err(FileError::Refused) => return Err(BundleDecryptError::File(f.rel)),
            Err(FileError::Io(e)) => return Err(BundleDecryptError::Io(e)),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kdf_and_form() {
        for kdf in Kdf::ALL {
            for b64 in [false, true] {
                for plain in [&b""[..], b"x", &[7u8; 16], &[0u8; 100]] {
                    let enc = encrypt(plain, b"tok", kdf, b64);
                    assert_eq!(decrypt(&enc, b"tok", Some(kdf)).unwrap(), plain);
                    // Unpinned, a wrong derivation tried first may pass the
                    // padding check by chance: a fixed salt keeps this deterministic.
                    let enc = encrypt_with_salt(plain, b"tok", kdf, *b"12345678", b64);
                    assert_eq!(decrypt(&enc, b"tok", None).unwrap(), plain);
                }
            }
        }
    }

    #[test]
    fn base64_lines_are_64_columns() {
        let enc = encrypt_with_salt(&[1u8; 200], b"t", Kdf::Pbkdf2, [9; 8], true);
        let text = String::from_utf8(enc).unwrap();
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() > 1);
        assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 64));
        assert!(text.starts_with("U2FsdGVkX1"));
    }

    #[test]
    fn rejects_short_and_empty_input() {
        assert_eq!(decrypt(b"", b"t", None), Err(DecryptError::Wrong));
        assert_eq!(
            decrypt(b"Salted__abc", b"t", None),
            Err(DecryptError::Wrong)
        );
        assert_eq!(
            decrypt(b"Salted__12345678", b"t", None),
            Err(DecryptError::Wrong)
        );
        assert_eq!(decrypt(b" \n ", b"t", None), Err(DecryptError::Wrong));
    }
}
