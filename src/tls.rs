//! HTTPS (SPEC §12): the server's certificate (PEM files, reloaded on
//! SIGHUP) and the trust store of servo's own clients (`servo run`, the
//! portal relay). rustls with the `ring` provider, no C toolchain needed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What went wrong reading a PEM file, in words.
fn pem_why(e: rustls_pki_types::pem::Error, what: &str) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::Io(e) => format!("cannot read it ({e})"),
        Error::NoItemsFound => format!("it holds no PEM {what}"),
        other => format!("it is not valid PEM ({other})"),
    }
}

/// Reads the certificates of a PEM file (at least one).
pub fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |why: String| format!("{what} {}: {why}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(pem_why(e, "certificate")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_why(e, "certificate")))?;
    if certs.is_empty() {
        return Err(bad(
            "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// Loads a certificate chain and its private key, checking they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = read_certs(cert, "the TLS certificate")?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "the TLS key {}: {}",
            key.display(),
            pem_why(e, "private key (-----BEGIN PRIVATE KEY-----, RSA or EC)")
        )
    })?;
    CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "the TLS key {} does not belong to the certificate {}",
            key.display(),
            cert.display()
        ),
        e => format!(
            "the TLS certificate {} or key {} cannot be used: {e}",
            cert.display(),
            key.display()
        ),
    })
}

/// The server's certificate, swapped in place on reload: handshakes after
/// a reload get the new one, connections already open keep theirs.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ReloadingCert, String> {
        let key = load_certified_key(cert_path, key_path)?;
        Ok(ReloadingCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Reads the files again; on any error the current certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let key = load_certified_key(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// The server's TLS configuration (HTTP/1.1 only, as the server speaks).
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration trusting the CAs of `cacert` when given, else
/// the system's trust store (`/etc/ssl/certs` on Debian; SSL_CERT_FILE /
/// SSL_CERT_DIR override it). `flag` names the option in messages.
pub fn client_config(cacert: Option<&Path>, flag: &str) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    match cacert {
        Some(path) => {
            for cert in read_certs(path, flag)? {
                roots.add(cert).map_err(|e| {
                    format!("{flag} {}: not a CA certificate ({e})", path.display())
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "no trusted CA certificates in the system's store{why}: install ca-certificates, or give {flag} FILE"
                ));
            }
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The rustls error somewhere in `err`'s chain (io::Errors wrap it, some
/// twice: tokio-rustls, then hyper-rustls).
fn find_rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(found) = err.downcast_ref::<rustls::Error>() {
        return Some(found);
    }
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if let Some(found) = find_rustls_error(inner) {
            return Some(found);
        }
    }
    err.source().and_then(find_rustls_error)
}

/// Explains a failed TLS connection in one sentence when the cause is the
/// peer's certificate; `None` for other failures.
pub fn certificate_problem(err: &(dyn std::error::Error + 'static), flag: &str) -> Option<String> {
    match find_rustls_error(err)? {
        rustls::Error::InvalidCertificate(why) => Some(format!(
            "the server's TLS certificate is not trusted ({why:?}): if a private CA signed it, give that CA with {flag} FILE"
        )),
        _ => None,
    }
}
