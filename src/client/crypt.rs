//! `servo encrypt`, `servo decrypt`, `servo sign` and `servo token` (SPEC §1, §3.3).
//!
//! The first three need the token; it comes from `--token`, `--token-file`,
//! `SERVO_TOKEN`, `SERVO_TOKEN_FILE`, or else the state directory's `token`
//! file, in that order (flags win over the environment). Files are written
//! beside their source and never overwritten without `--force`; with it, the
//! new file is renamed into place, so a symlink there is replaced rather than
//! written through.

use std::ffi::OsStr;
use std::fs::{OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::bundle::decrypt::{self, Kdf};
use crate::config;
use crate::settings::{read_token_file, SettingsError};

/// Where the token comes from; shared by every command that needs it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TokenArgs {
    /// The token (else --token-file, $SERVO_TOKEN, $SERVO_TOKEN_FILE, then STATE/token)
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// A file holding the token (its trailing newline is ignored)
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
    /// servo's state directory, whose `token` file is the last resort
    #[arg(long, value_name = "D", env = "SERVO_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `servo encrypt FILE...`
#[derive(clap::Args, Clone, Debug)]
#[command(after_help = "\
The output is what `openssl enc -aes-256-cbc -pbkdf2 -a -salt -k TOKEN` writes
(with --kdf sha256|md5: `-md sha256|md5` instead of -pbkdf2; --raw: without -a),
so `openssl enc -d -aes-256-cbc -a -pbkdf2 -k TOKEN -in FILE.aes` reads it back.
servo decrypts FILE.aes into FILE before a bundle's scripts run.")]
pub struct EncryptArgs {
    /// Files to encrypt; FILE.aes is written beside each
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Key derivation (what `openssl enc` calls -pbkdf2, -md sha256, -md md5)
    #[arg(long, value_enum, default_value_t = Kdf::Pbkdf2)]
    pub kdf: Kdf,
    /// Write binary output instead of base64
    #[arg(long)]
    pub raw: bool,
    /// Overwrite an existing FILE.aes
    #[arg(long, short = 'f')]
    pub force: bool,
    #[command(flatten)]
    pub token: TokenArgs,
}

/// `servo decrypt FILE.aes...`
#[derive(clap::Args, Clone, Debug)]
#[command(after_help = "\
Reads what `openssl enc -aes-256-cbc [-a] -k TOKEN` writes with -pbkdf2,
-md sha256 or -md md5 (raw or base64), as servo does for a bundle's .aes files.
Exit status: 1 when a file cannot be decrypted with this token, 2 without a token.")]
pub struct DecryptArgs {
    /// Files to decrypt; FILE is written beside each FILE.aes
    #[arg(required = true, value_name = "FILE.aes")]
    pub files: Vec<PathBuf>,
    /// Only try this key derivation (default: pbkdf2, sha256, md5 in turn)
    #[arg(long, value_enum)]
    pub kdf: Option<Kdf>,
    /// Print the plaintext instead of writing files
    #[arg(long)]
    pub stdout: bool,
    /// Overwrite an existing FILE
    #[arg(long, short = 'f')]
    pub force: bool,
    #[command(flatten)]
    pub token: TokenArgs,
}

/// `servo sign FILE`
#[derive(clap::Args, Clone, Debug)]
#[command(after_help = "\
The same value as the guide's
  HASH=$(openssl dgst -sha1 -hmac \"$SERVO_TOKEN\" upload.tgz); HASH=\"sha1=${HASH##* }\"
for `curl -F tgz=@upload.tgz -H \"X-Signature:$(servo sign upload.tgz)\" $SERVO_URL/run/...`.")]
pub struct SignArgs {
    /// The archive to sign
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// HMAC-SHA256 (`sha256=<hex>`) instead of HMAC-SHA1 (`sha1=<hex>`)
    #[arg(long)]
    pub sha256: bool,
    #[command(flatten)]
    pub token: TokenArgs,
}

/// `servo token`
#[derive(clap::Args, Clone, Debug)]
pub struct TokenCmdArgs {
    /// servo's state directory (default: /var/lib/servo as root, else the XDG state dir)
    #[arg(long, value_name = "D", env = "SERVO_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error(
        "no token: give --token, --token-file or SERVO_TOKEN, or --state-dir of the servo \
         that made one ({} does not exist)",
        .0.display()
    )]
    NoToken(PathBuf),
    #[error(transparent)]
    Token(#[from] SettingsError),
    #[error("{0}")]
    Usage(String),
    #[error("{} already exists (use --force to overwrite it)", .0.display())]
    Exists(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to decrypt {} with this token ({})", path.display(), tried(*.kdf))]
    Decrypt { path: PathBuf, kdf: Option<Kdf> },
}

fn tried(kdf: Option<Kdf>) -> String {
    match kdf {
        Some(k) => format!("key derivation {k}"),
        None => "tried pbkdf2, sha256 and md5".to_string(),
    }
}

impl CryptError {
    /// The exit status SPEC §1 asks for: 2 for usage and token problems, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CryptError::NoToken(_) | CryptError::Token(_) | CryptError::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl TokenArgs {
    /// Finds the token in the documented order, reading the real environment.
    pub fn resolve(&self) -> Result<String, CryptError> {
        self.resolve_with(|name| std::env::var(name).ok())
    }

    /// [`TokenArgs::resolve`] with the environment given as a lookup (for tests).
    pub fn resolve_with(&self, env: impl Fn(&str) -> Option<String>) -> Result<String, CryptError> {
        if let Some(t) = self.token.as_ref().filter(|t| !t.is_empty()) {
            return Ok(t.clone());
        }
        if let Some(f) = &self.token_file {
            return Ok(read_token_file(f)?);
        }
        if let Some(t) = env("SERVO_TOKEN").filter(|t| !t.is_empty()) {
            return Ok(t);
        }
        if let Some(f) = env("SERVO_TOKEN_FILE").filter(|f| !f.is_empty()) {
            return Ok(read_token_file(Path::new(&f))?);
        }
        server_token(self.state_dir.as_deref())
    }
}

/// The token `servo serve` keeps in `STATE/token` (`state_dir` None: the default state dir).
pub fn server_token(state_dir: Option<&Path>) -> Result<String, CryptError> {
    let dir = state_dir.map_or_else(config::default_state_dir, Path::to_path_buf);
    let path = dir.join("token");
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CryptError::NoToken(path)),
        _ => Ok(read_token_file(&path)?),
    }
}

fn read(path: &Path) -> Result<(Vec<u8>, u32), CryptError> {
    let read_err = |source| CryptError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if meta.is_dir() {
        return Err(CryptError::Usage(format!(
            "{} is a directory",
            path.display()
        )));
    }
    let mut data = Vec::new();
    file.read_to_end(&mut data).map_err(read_err)?;
    Ok((data, meta.permissions().mode() & 0o777))
}

/// Writes `data` to `path` with `mode`. Without `force` an existing name
/// (a symlink included) is refused; with it the file is replaced by a rename.
fn write_new(path: &Path, data: &[u8], mode: u32, force: bool) -> Result<(), CryptError> {
    let write_err = |source| CryptError::Write {
        path: path.to_owned(),
        source,
    };
    if force {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(write_err)?;
        tmp.write_all(data).map_err(write_err)?;
        tmp.as_file()
            .set_permissions(Permissions::from_mode(mode))
            .map_err(write_err)?;
        tmp.persist(path).map_err(|e| write_err(e.error))?;
        return Ok(());
    }
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CryptError::Exists(path.to_owned()))
        }
        Err(e) => return Err(write_err(e)),
    };
    // Same bits as the source, whatever the umask.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(write_err)?;
    file.write_all(data).map_err(write_err)
}

/// Encrypts `path` into `path.aes` (keeping its permission bits); returns the new name.
pub fn encrypt_file(
    path: &Path,
    token: &[u8],
    kdf: Kdf,
    base64: bool,
    force: bool,
) -> Result<PathBuf, CryptError> {
    let (plain, mode) = read(path)?;
    let mut out = path.as_os_str().to_owned();
    out.push(".aes");
    let out = PathBuf::from(out);
    write_new(
        &out,
        &decrypt::encrypt(&plain, token, kdf, base64),
        mode,
        force,
    )?;
    Ok(out)
}

/// The plaintext name of `FILE.aes`, or a usage error.
fn plaintext_name(path: &Path) -> Result<PathBuf, CryptError> {
    let bytes = path.as_os_str().as_encoded_bytes();
    let name_ok = path
        .file_name()
        .is_some_and(|n| n.len() > 4 && n.as_encoded_bytes().ends_with(b".aes"));
    if !name_ok {
        return Err(CryptError::Usage(format!(
            "{}: the name must end in .aes (servo decrypt FILE.aes writes FILE)",
            path.display()
        )));
    }
    // Cutting the ASCII suffix leaves a valid OS string.
    let stem = &bytes[..bytes.len() - 4];
    Ok(PathBuf::from(OsStr::from_bytes(stem)))
}

/// Decrypts `path` (which must end in `.aes`); returns the plaintext.
pub fn decrypt_to_vec(path: &Path, token: &[u8], kdf: Option<Kdf>) -> Result<Vec<u8>, CryptError> {
    plaintext_name(path)?;
    let (data, _) = read(path)?;
    decrypt::decrypt(&data, token, kdf).map_err(|_| CryptError::Decrypt {
        path: path.to_owned(),
        kdf,
    })
}

/// Decrypts `FILE.aes` into `FILE` (keeping its permission bits); returns the new name.
pub fn decrypt_file(
    path: &Path,
    token: &[u8],
    kdf: Option<Kdf>,
    force: bool,
) -> Result<PathBuf, CryptError> {
    let out = plaintext_name(path)?;
    let (data, _) = read(path)?;
    let plain = decrypt::decrypt(&data, token, kdf).map_err(|_| CryptError::Decrypt {
        path: path.to_owned(),
        kdf,
    })?;
    // A plaintext secret is its owner's alone, whatever the .aes allowed.
    write_new(&out, &plain, 0o600, force)?;
    Ok(out)
}

/// The `X-Signature` value for the file: `sha1=<hex>` or `sha256=<hex>`, the
/// HMAC of its bytes keyed with the token (as `openssl dgst -hmac` computes).
pub fn sign_file(path: &Path, token: &[u8], sha256: bool) -> Result<String, CryptError> {
    let read_err = |source| CryptError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    if sha256 {
        Ok(format!(
            "sha256={}",
            hmac_hex::<Hmac<Sha256>>(file, token).map_err(read_err)?
        ))
    } else {
        Ok(format!(
            "sha1={}",
            hmac_hex::<Hmac<Sha1>>(file, token).map_err(read_err)?
        ))
    }
}

/// HMAC of everything `reader` yields, lowercase hex; streams (archives can be large).
fn hmac_hex<M: Mac + KeyInit>(mut reader: impl Read, token: &[u8]) -> std::io::Result<String> {
    let mut mac = match <M as KeyInit>::new_from_slice(token) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        mac.update(&buf[..n]);
    }
    Ok(hex::encode(mac.finalize().into_bytes()))
}

/// `servo encrypt`: writes FILE.aes for each FILE, stopping at the first failure.
pub fn encrypt_main(args: &EncryptArgs) -> Result<(), CryptError> {
    let token = args.token.resolve()?;
    for file in &args.files {
        let out = encrypt_file(file, token.as_bytes(), args.kdf, !args.raw, args.force)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// `servo decrypt`: writes FILE for each FILE.aes (or prints it with `--stdout`).
pub fn decrypt_main(args: &DecryptArgs) -> Result<(), CryptError> {
    let token = args.token.resolve()?;
    if args.stdout {
        let mut stdout = std::io::stdout().lock();
        for file in &args.files {
            let plain = decrypt_to_vec(file, token.as_bytes(), args.kdf)?;
            stdout
                .write_all(&plain)
                .and_then(|()| stdout.flush())
                .map_err(|source| CryptError::Write {
                    path: PathBuf::from("standard output"),
                    source,
                })?;
        }
        return Ok(());
    }
    for file in &args.files {
        let out = decrypt_file(file, token.as_bytes(), args.kdf, args.force)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// `servo sign`: prints the `X-Signature` value.
pub fn sign_main(args: &SignArgs) -> Result<(), CryptError> {
    let token = args.token.resolve()?;
    println!("{}", sign_file(&args.file, token.as_bytes(), args.sha256)?);
    Ok(())
}

/// `servo token`: prints the token `servo serve` keeps in its state directory.
pub fn token_main(args: &TokenCmdArgs) -> Result<(), CryptError> {
    println!("{}", server_token(args.state_dir.as_deref())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};

    /// The way main.rs mounts these commands.
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        Encrypt(EncryptArgs),
        Decrypt(DecryptArgs),
        Sign(SignArgs),
        Token(TokenCmdArgs),
    }

    fn parse(args: &[&str]) -> Cmd {
        match Cli::try_parse_from(std::iter::once("servo").chain(args.iter().copied())) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_command_lines() {
        match parse(&["encrypt", "a.yml", "b.yml"]) {
            Cmd::Encrypt(a) => {
                assert_eq!(a.files.len(), 2);
                assert_eq!(a.kdf, Kdf::Pbkdf2);
                assert!(!a.raw && !a.force);
            }
            _ => panic!("not encrypt"),
        }
        match parse(&[
            "encrypt", "a", "--kdf", "md5", "--raw", "-f", "--token", "T",
        ]) {
            Cmd::Encrypt(a) => {
                assert_eq!((a.kdf, a.raw, a.force), (Kdf::Md5, true, true));
                assert_eq!(a.token.token.as_deref(), Some("T"));
            }
            _ => panic!("not encrypt"),
        }
        match parse(&["decrypt", "x.aes", "--stdout", "--kdf", "sha256"]) {
            Cmd::Decrypt(a) => assert_eq!((a.kdf, a.stdout), (Some(Kdf::Sha256), true)),
            _ => panic!("not decrypt"),
        }
        match parse(&["sign", "b.tgz", "--sha256", "--token-file", "/t"]) {
            Cmd::Sign(a) => {
                assert!(a.sha256);
                assert_eq!(a.token.token_file, Some(PathBuf::from("/t")));
            }
            _ => panic!("not sign"),
        }
        match parse(&["token", "--state-dir", "/s"]) {
            Cmd::Token(a) => assert_eq!(a.state_dir, Some(PathBuf::from("/s"))),
            _ => panic!("not token"),
        }
        assert!(Cli::try_parse_from(["servo", "encrypt"]).is_err());
        assert!(Cli::try_parse_from(["servo", "encrypt", "a", "--kdf", "sha1"]).is_err());
    }
}
