//! HTTPS (SPEC §12) end to end: a real `servo serve --tls-cert --tls-key`
//! with a certificate this test makes (its own CA, for localhost and
//! 127.0.0.1), checked with the real `curl` and `openssl s_client`, the real
//! `servo run` as the client, and an https fake portal behind the relay.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SerialNumber};
use support::fake_portal::FakePortal;
use support::*;

/// A CA and the files of certificates it signed, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "servo test CA");
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca.pem");
        Pki { dir, ca, ca_key }
    }

    fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for localhost and 127.0.0.1 with this CN and
    /// serial: (certificate PEM, key PEM).
    fn server_cert(&self, cn: &str, serial: u64) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a server certificate to `cert.pem` / `key.pem`; returns their paths.
    fn write_server_cert(&self, cn: &str, serial: u64) -> (PathBuf, PathBuf) {
        let (cert, key) = self.server_cert(cn, serial);
        let (cert_path, key_path) = (
            self.dir.path().join("cert.pem"),
            self.dir.path().join("key.pem"),
        );
        // Replaced the way an operator (or certbot) would: new file, rename.
        for (path, text) in [(&cert_path, cert), (&key_path, key)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, path).expect("rename");
        }
        (cert_path, key_path)
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// servo serving HTTPS with `cert` / `key`; its URL rewritten to https://.
fn start_tls(cert: &Path, key: &Path, extra: &[&str]) -> Servo {
    let mut args = vec!["--tls-cert", s(cert), "--tls-key", s(key)];
    args.extend_from_slice(extra);
    let mut servo = Servo::start(&args);
    servo.url = servo.url.replacen("http://", "https://", 1);
    servo
}

/// `servo ARGS...` without any SERVO_* variable of the test's environment.
fn servo_cmd(args: &[&str]) -> Output {
    let mut cmd = Command::new(servo_bin());
    cmd.stdin(Stdio::null()).args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SERVO_") {
            cmd.env_remove(name);
        }
    }
    cmd.output().expect("run servo")
}

/// The subject and serial of the certificate a new TLS connection to
/// `addr` gets, as `openssl x509 -noout -subject -serial` prints them.
fn served_certificate(addr: &str, ca: &Path) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-CAfile", s(ca)])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl x509");
    use std::io::Write;
    x509.stdin
        .take()
        .expect("stdin")
        .write_all(&out.stdout)
        .expect("pipe");
    let parsed = x509.wait_with_output().expect("openssl x509");
    let text = String::from_utf8_lossy(&parsed.stdout).into_owned();
    assert!(
        parsed.status.success(),
        "no certificate from {addr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn host_port(servo: &Servo) -> String {
    servo.url.trim_start_matches("https://").to_string()
}

#[test]
fn curl_gets_health_over_https_only_with_the_ca() {
    if !require_root() {
        return;
    }
    let pki = Pki::new();
    let (cert, key) = pki.write_server_cert("servo-one", 1001);
    let servo = start_tls(&cert, &key, &[]);
    let ca = pki.ca_pem();

    let r = curl(&format!("{}/health", servo.url), &["--cacert", s(&ca)]);
    assert_eq!(r.status, 200, "{}\n{}", r.body, servo.stderr());
    assert_eq!(r.json()["version"], env!("CARGO_PKG_VERSION"), "{}", r.body);

    // The name works too (the certificate names localhost).
    let port = servo.url.rsplit(':').next().expect("port");
    let r = curl(
        &format!("https://localhost:{port}/health"),
        &["--cacert", s(&ca)],
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Without the CA, curl refuses the certificate (exit 60, no status).
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null"])
        .arg(format!("{}/health", servo.url))
        .output()
        .expect("curl");
    assert_eq!(out.status.code(), Some(60), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");

    // Plain HTTP on the TLS port is not served.
    let r = curl(
        &format!("{}/health", servo.url.replacen("https://", "http://", 1)),
        &["--max-time", "5"],
    );
    assert_ne!(r.status, 200);
}

#[test]
fn servo_run_over_https_with_cacert_and_a_clear_error_without() {
    if !require_root() {
        return;
    }
    let pki = Pki::new();
    let (cert, key) = pki.write_server_cert("servo-run", 2002);
    let servo = start_tls(&cert, &key, &[]);
    let ca = pki.ca_pem();
    let dir = tempfile::tempdir().expect("tempdir");
    write_files(dir.path(), &[("hello.py", "print('hello over tls')\n")]);
    let bundle = s(dir.path());

    let out = servo_cmd(&[
        "run",
        bundle,
        "hello.py",
        "--url",
        &servo.url,
        "--token",
        TOKEN,
        "--cacert",
        s(&ca),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello over tls"), "{stdout}");

    // SERVO_CACERT does the same.
    let mut cmd = Command::new(servo_bin());
    cmd.args([
        "run", bundle, "hello.py", "--url", &servo.url, "--token", TOKEN,
    ])
    .env("SERVO_CACERT", &ca)
    .env_remove("SERVO_URL")
    .env_remove("SERVO_TOKEN")
    .stdin(Stdio::null());
    let out = cmd.output().expect("servo run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // The system's store does not know the test CA: exit 2, one sentence.
    let out = servo_cmd(&[
        "run", bundle, "hello.py", "--url", &servo.url, "--token", TOKEN,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("certificate is not trusted"), "{err}");
    assert!(err.contains("--cacert"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // A --cacert that is not PEM: exit 2, naming the file.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write");
    let out = servo_cmd(&[
        "run",
        bundle,
        "hello.py",
        "--url",
        &servo.url,
        "--token",
        TOKEN,
        "--cacert",
        s(&junk),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("junk.pem"), "{err}");
}

/// Waits until servo's log has `needle` in it `n` times.
fn wait_log(servo: &Servo, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while servo.stderr().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            servo.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sighup(servo: &Servo) {
    let pid = nix::unistd::Pid::from_raw(servo.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_one_is_not_taken() {
    if !require_root() {
        return;
    }
    let pki = Pki::new();
    let (cert, key) = pki.write_server_cert("servo-first", 0x1111);
    let servo = start_tls(&cert, &key, &[]);
    let addr = host_port(&servo);
    let ca = pki.ca_pem();

    let first = served_certificate(&addr, &ca);
    assert!(first.contains("CN = servo-first"), "{first}");
    assert!(first.contains("serial=1111"), "{first}");

    // New files on disk: nothing changes until SIGHUP.
    pki.write_server_cert("servo-second", 0x2222);
    let before = served_certificate(&addr, &ca);
    assert!(before.contains("CN = servo-first"), "{before}");

    sighup(&servo);
    wait_log(&servo, "TLS certificate reloaded", 1);
    let after = served_certificate(&addr, &ca);
    assert!(after.contains("CN = servo-second"), "{after}");
    assert!(after.contains("serial=2222"), "{after}");
    let r = curl(&format!("{}/health", servo.url), &["--cacert", s(&ca)]);
    assert_eq!(r.status, 200, "{}", r.body);

    // A key that does not match the certificate: logged, the current one stays.
    let (_, other_key) = pki.server_cert("unused", 0x3333);
    std::fs::write(&key, other_key).expect("write");
    sighup(&servo);
    wait_log(&servo, "not reloaded", 1);
    assert!(
        servo
            .stderr()
            .contains("does not belong to the certificate"),
        "{}",
        servo.stderr()
    );
    let kept = served_certificate(&addr, &ca);
    assert!(kept.contains("CN = servo-second"), "{kept}");
    let r = curl(&format!("{}/health", servo.url), &["--cacert", s(&ca)]);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn bad_tls_files_stop_start_up_with_the_file_named() {
    let pki = Pki::new();
    let (cert, key) = pki.write_server_cert("servo", 1);
    let state = tempfile::tempdir().expect("tempdir");
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            s(state.path()),
            "--token",
            TOKEN,
        ];
        args.extend_from_slice(extra);
        servo_cmd(&args)
    };
    let err = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // One without the other.
    let out = serve(&["--tls-cert", s(&cert)]);
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(err(&out).contains("--tls-key"), "{}", err(&out));

    // A missing key file.
    let missing = pki.dir.path().join("missing.pem");
    let out = serve(&["--tls-cert", s(&cert), "--tls-key", s(&missing)]);
    assert!(!out.status.success());
    assert!(
        err(&out).contains("the TLS key") && err(&out).contains("missing.pem"),
        "{}",
        err(&out)
    );

    // A certificate file that holds no certificate (the key given twice).
    let out = serve(&["--tls-cert", s(&key), "--tls-key", s(&key)]);
    assert!(!out.status.success());
    assert!(
        err(&out).contains("key.pem") && err(&out).contains("no PEM certificate"),
        "{}",
        err(&out)
    );

    // A key of another certificate.
    let other = pki.dir.path().join("other-key.pem");
    std::fs::write(&other, pki.server_cert("other", 2).1).expect("write");
    let out = serve(&["--tls-cert", s(&cert), "--tls-key", s(&other)]);
    assert!(!out.status.success());
    assert!(
        err(&out).contains("does not belong to the certificate"),
        "{}",
        err(&out)
    );
}

/// A TLS acceptor for the fake portal, with a certificate from `pki`.
fn portal_acceptor(pki: &Pki) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    let (cert, key) = pki.server_cert("portal", 4004);
    let chain =
        vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[test]
fn the_relay_reaches_an_https_portal_with_portal_cacert() {
    if !require_root() {
        return;
    }
    let rt = runtime();
    let pki = Pki::new();
    let portal = rt.block_on(FakePortal::start_tls(
        Some("portal-secret"),
        portal_acceptor(&pki),
    ));
    assert!(portal.url.starts_with("https://"));
    let ca = pki.ca_pem();
    let script = "from servo import servo\nwith servo(verbose=True) as proxy:\n    proxy('ls')\n";
    let b = bundle(&[("ls.py", script)]);

    let servo = Servo::start(&[
        "--portal",
        &portal.url,
        "--portal-token",
        "portal-secret",
        "--portal-cacert",
        s(&ca),
    ]);
    let r = post_bundle(&servo, &b.tgz, "ls.py", &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.body, servo.stderr());
    let reqs = portal.requests();
    assert!(
        reqs.iter()
            .any(|q| q.line.starts_with("ls") && q.signature_ok),
        "{reqs:?}"
    );
    drop(servo);

    // Without the CA the portal's certificate is refused: the script fails
    // with a sentence about the certificate, the portal sees nothing more.
    let seen = portal.requests().len();
    let servo = Servo::start(&["--portal", &portal.url, "--portal-token", "portal-secret"]);
    let r = post_bundle(&servo, &b.tgz, "ls.py", &[]);
    assert_eq!(r.status, 412, "{}", r.body);
    assert!(r.body.contains("certificate is not trusted"), "{}", r.body);
    assert_eq!(portal.requests().len(), seen);
}

#[test]
fn a_stalled_handshake_neither_blocks_others_nor_outlives_the_request_timeout() {
    if !require_root() {
        return;
    }
    use std::io::Read;
    let pki = Pki::new();
    let (cert, key) = pki.write_server_cert("servo", 5005);
    let servo = start_tls(&cert, &key, &["--request-timeout-s", "2"]);
    let ca = pki.ca_pem();

    // A client that connects and never says hello.
    let mut stalled = std::net::TcpStream::connect(host_port(&servo)).expect("connect");
    let started = Instant::now();
    // Others are served meanwhile: the handshake is not in the accept loop.
    let r = curl(&format!("{}/health", servo.url), &["--cacert", s(&ca)]);
    assert_eq!(r.status, 200, "{}", r.body);

    // The stalled one is closed once --request-timeout-s has passed.
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let n = stalled.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "servo sent something to a client that sent nothing");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "closed after {waited:?}"
    );
}
