//! Fuzz harnesses (issue 8): one function per parser that sees outside input.
//!
//! They live in the library, not in the `fuzz/` crate, so that `cargo test`
//! (tests/fuzz_corpus.rs) replays `fuzz/corpus/<target>/` through the very
//! functions `cargo fuzz` runs, without libfuzzer or a nightly toolchain.
//! Each harness turns raw bytes into the parser's input, calls it, and panics
//! when an invariant breaks: a panic is what the fuzzer reports.

use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;

use crate::bundle::decrypt::{self, Kdf};
use crate::bundle::signature::{self, ArchiveDigest, Scheme, Signature};
use crate::bundle::unpack::{self, UnpackLimits};
use crate::bundle::upload::{self, UploadError};
use crate::limits::Limits;
use crate::relay::policy::{self, Verdict};
use crate::relay::sim::Sim;
use crate::run::request;
use crate::tenants;
use crate::tenants::Tenant;
use crate::toolset::{self, TAGS};

/// A harness: raw bytes in, a panic when an invariant breaks.
pub type Harness = fn(&[u8]);

/// Every target: its name (the `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/` it goes with) and its harness.
pub const TARGETS: &[(&str, Harness)] = &[
    ("unpack", unpack),
    ("signature", signature),
    ("multipart", multipart),
    ("decrypt", decrypt),
    ("request", request),
    ("policy", policy),
    ("tenants", tenants),
    ("sim", sim),
    ("deploy_yaml", deploy_yaml),
    ("grammar", grammar),
];

/// Small limits, so the fuzzer spends its time on structure, not on bytes.
const UNPACK_LIMITS: UnpackLimits = UnpackLimits {
    max_total_bytes: 1 << 20,
    max_entries: 64,
    max_file_bytes: 512 << 10,
    max_name_bytes: 64 << 10,
};

/// The unpacker: `data` is the uploaded `.tgz` when it starts as gzip does,
/// else a bare tar that is gzipped here (with its header checksums set), so
/// that mutations reach the unpacker's checks instead of dying in deflate or
/// at a checksum. Whatever the archive, nothing appears beside `dest`, and
/// what is in `dest` resolves inside it.
pub fn unpack(data: &[u8]) {
    let root = tempfile::tempdir().expect("a temporary directory");
    let archive = root.path().join("upload.tgz");
    let dest = root.path().join("bundle");
    std::fs::write(&archive, archive_bytes(data)).expect("writing the archive");
    std::fs::create_dir(&dest).expect("creating dest");
    let result = unpack::unpack(&archive, &dest, &UNPACK_LIMITS, None);

    let mut beside: Vec<_> = std::fs::read_dir(root.path())
        .expect("listing the root")
        .map(|e| e.expect("a root entry").file_name())
        .collect();
    beside.sort();
    assert_eq!(beside, ["bundle", "upload.tgz"], "unpack wrote beside dest");

    let real_dest = dest.canonicalize().expect("dest resolves");
    let mut files = 0;
    check_tree(&real_dest, &real_dest, &mut files);
    if let Ok(summary) = result {
        assert_eq!(summary.files, files, "summary disagrees with the tree");
        assert!(summary.bytes <= UNPACK_LIMITS.max_total_bytes);
    }
}

/// What the unpack harness uploads for `data`: itself when gzip, else the
/// bare tar with its checksums set, gzipped.
pub fn archive_bytes(data: &[u8]) -> Vec<u8> {
    if data.starts_with(&[0x1f, 0x8b]) {
        data.to_vec()
    } else {
        gzip(&with_checksums(data))
    }
}

/// A tar's headers with their checksums set: from the first block, each
/// header is followed by its data (the octal size field), rounded to blocks.
/// The walk stops at a zero block or one it cannot size; it need not be right
/// for every archive, only for most of what the fuzzer writes.
fn with_checksums(tar: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 512;
    let mut tar = tar.to_vec();
    let mut at = 0;
    while let Some(header) = tar.get_mut(at..at + BLOCK) {
        if header.iter().all(|b| *b == 0) {
            break;
        }
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let size = std::str::from_utf8(&header[124..136])
            .ok()
            .map(|f| f.trim_matches(|c| c == ' ' || c == '\0'))
            .and_then(|f| {
                usize::from_str_radix(f, 8)
                    .ok()
                    .or(f.is_empty().then_some(0))
            });
        let Some(size) = size else { break };
        let Some(next) = size
            .checked_next_multiple_of(BLOCK)
            .and_then(|n| n.checked_add(at + BLOCK))
        else {
            break;
        };
        at = next;
    }
    tar
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip to memory");
    gz.finish().expect("gzip to memory")
}

/// Walks `dir` without following symlinks: only files, directories and
/// symlinks, every symlink resolving (lexically, and really when it can) inside `dest`.
fn check_tree(dest: &Path, dir: &Path, files: &mut u64) {
    for entry in std::fs::read_dir(dir).expect("listing dest") {
        let path = entry.expect("a dest entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let ft = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        if ft.is_dir() {
            assert_eq!(mode, 0o755, "{}: directory mode {mode:o}", path.display());
            check_tree(dest, &path, files);
        } else if ft.is_file() {
            assert!(
                mode == 0o644 || mode == 0o755,
                "{}: file mode {mode:o}",
                path.display()
            );
            *files += 1;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).expect("readlink");
            let from = path.parent().expect("a parent").strip_prefix(dest);
            let from = from.expect("inside dest");
            assert!(
                lexically_inside(from, &target),
                "symlink {} -> {} leaves the bundle",
                path.display(),
                target.display()
            );
            if let Ok(real) = path.canonicalize() {
                assert!(real.starts_with(dest), "{} escapes", path.display());
            }
        } else {
            panic!("{} is neither file, directory nor symlink", path.display());
        }
    }
}

/// Whether `target`, read from the directory `from` (relative to the bundle's
/// root), stays inside the root without following anything.
fn lexically_inside(from: &Path, target: &Path) -> bool {
    let mut at: Vec<_> = from.components().collect();
    for c in target.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if at.pop().is_none() {
                    return false;
                }
            }
            Component::Normal(_) => at.push(c),
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// `X-Signature` and `X-Servo-Timestamp`: the first line is the signature
/// header, the second the timestamp, the third the server's clock.
pub fn signature(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let header = lines.next().unwrap_or("");
    let timestamp = lines.next().unwrap_or("");
    let now = lines.next().and_then(|n| n.parse().ok()).unwrap_or(0u64);
    if let Ok(sig) = Signature::parse(header) {
        let len = match sig.scheme {
            Scheme::Sha1 => 20,
            Scheme::Sha256 | Scheme::V2 => 32,
        };
        assert_eq!(sig.mac.len(), len);
        let again = format!("{}={}", sig.scheme.as_str(), hex::encode(&sig.mac));
        assert_eq!(Signature::parse(&again).as_ref(), Ok(&sig));
        // A signature of the wrong value never verifies.
        let mut digest = ArchiveDigest::new(sig.scheme, b"token");
        digest.update(data);
        let ctx = signature::V2Context {
            timestamp,
            path: "/run/a.py",
            tenant: "default",
            vars: &[],
            concurrency: None,
        };
        let _ = digest.finish().verify(&sig, b"token", Some(&ctx));
    }
    if let Ok(ts) = signature::check_v2_timestamp(timestamp, now) {
        assert!(ts.abs_diff(now) <= signature::V2_WINDOW_S);
    }
}

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `f` on a per-thread current-thread runtime (built once: fuzzing calls this a lot).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
        });
        rt.block_on(f)
    })
}

/// Most the multipart harness accepts as the archive.
const MULTIPART_MAX: u64 = 4096;

/// A multipart upload: the first line is the `Content-Type` header, the first
/// byte of the rest sets the chunk size the body arrives in, the rest is the body.
pub fn multipart(data: &[u8]) {
    let (ct, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(ct) = std::str::from_utf8(ct) else {
        return;
    };
    let Ok(boundary) = multer::parse_boundary(ct) else {
        return;
    };
    let (chunk, body) = rest.split_first().unwrap_or((&0, &[]));
    let chunk = usize::from(*chunk).max(1);
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream = futures_util::stream::iter(chunks);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("upload.tgz");
    let mut digest = ArchiveDigest::new(Scheme::Sha256, b"token");
    let result = block_on(upload::save_multipart(
        stream,
        boundary,
        &path,
        upload::Storage::Memory,
        MULTIPART_MAX,
        &mut digest,
    ));
    match result {
        Ok(n) => {
            assert!(n <= MULTIPART_MAX);
            let written = std::fs::metadata(&path).expect("the saved archive").len();
            assert_eq!(written, n, "the file and the count disagree");
            assert_eq!(digest.finish().size, n, "the digest missed bytes");
        }
        Err(UploadError::Io(e)) => panic!("I/O error on a good directory: {e}"),
        Err(_) => {}
    }
}

/// `.aes` decryption: byte 0 picks the derivation (or none pinned), byte 1
/// the password's length, then the password, then the file. What is
/// encrypted with a pinned derivation decrypts back.
pub fn decrypt(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let (&pw_len, rest) = rest.split_first().unwrap_or((&0, &[]));
    let pw_len = usize::from(pw_len).min(rest.len());
    let (password, file) = rest.split_at(pw_len);
    // PBKDF2 costs 10,000 rounds: only one input in four pays for it.
    let kdf = match which % 4 {
        0 => Some(Kdf::Md5),
        1 => Some(Kdf::Sha256),
        2 => Some(Kdf::Pbkdf2),
        _ => None,
    };
    let _ = decrypt::decrypt(file, password, kdf);

    let pinned = kdf.unwrap_or(Kdf::Md5);
    let mut salt = [0u8; 8];
    for (s, b) in salt.iter_mut().zip(password) {
        *s = *b;
    }
    let base64 = which & 0x80 != 0;
    let sealed = decrypt::encrypt_with_salt(file, password, pinned, salt, base64);
    assert_eq!(
        decrypt::decrypt(&sealed, password, Some(pinned)).as_deref(),
        Ok(file),
        "encrypt then decrypt ({pinned}, base64 {base64}) lost the plaintext"
    );
}

/// The request line and `X-Var` headers: the first line is the `<scripts>`
/// part of `/run/<scripts>`, each further line `suffix: value` for an
/// `X-Var-<suffix>` header.
pub fn request(data: &[u8]) {
    let mut lines = data.split(|b| *b == b'\n');
    let scripts = String::from_utf8_lossy(lines.next().unwrap_or_default());
    if let Ok(list) = request::parse_scripts(&scripts) {
        assert!(!list.is_empty() && list.len() <= request::MAX_SCRIPTS);
        for name in &list {
            assert!(request::check_relative_name(name).is_ok(), "{name}");
            assert!(name.ends_with(".py") && !name.starts_with('/'), "{name}");
        }
    }
    let headers: Vec<(String, &[u8])> = lines
        .map(|line| {
            let i = line.iter().position(|b| *b == b':').unwrap_or(line.len());
            let value = line.get(i + 1..).unwrap_or_default();
            (String::from_utf8_lossy(&line[..i]).into_owned(), value)
        })
        .collect();
    let pairs = headers.iter().map(|(s, v)| (s.as_str(), *v));
    if let Ok(vars) = request::parse_vars(pairs) {
        assert!(vars.len() <= request::MAX_VARS);
        assert!(
            vars.windows(2).all(|w| w[0].0 < w[1].0),
            "unsorted or twice"
        );
        for (name, value) in &vars {
            assert_eq!(request::var_name(name).as_ref(), Ok(name));
            assert!(!value.contains('\0') && value.len() <= request::MAX_VAR_VALUE);
        }
    }
}

/// The relay's policy: byte 0 picks the tenant's namespaces and commands, then
/// the command line, then after a newline the portal's answer for `filter_answer`.
pub fn policy(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let mut tenant = Tenant::default_tenant("token".into(), Limits::default());
    tenant.name = "pay".into();
    tenant.namespaces = match which % 3 {
        0 => None,
        1 => Some(vec!["pay".into()]),
        _ => Some(vec!["pay".into(), "web".into()]),
    };
    if which & 0x80 != 0 {
        tenant.commands = Some(
            ["ls", "deploy", "kill", "port", "exec"]
                .map(String::from)
                .into(),
        );
    }
    let text = String::from_utf8_lossy(rest);
    let (line, out) = text.split_once('\n').unwrap_or((&text, ""));

    let Verdict::Allow(cmd) = policy::check_command(&tenant, line) else {
        return;
    };
    // What the policy sends parses back to itself, and passes the policy
    // again unchanged (a rewrite is never a way around a rule).
    let canonical = cmd.canonical();
    assert_eq!(
        toolset::parse_canonical(&canonical).as_ref(),
        Ok(&cmd),
        "{canonical}"
    );
    let unquoted = canonical.replace('\'', "");
    match policy::check_command(&tenant, &unquoted) {
        Verdict::Allow(again) => assert_eq!(again.canonical(), canonical),
        Verdict::Deny(why) => panic!("{line:?} became {canonical:?}, which is denied: {why}"),
    }
    if let Some(allowed) = &tenant.commands {
        assert!(allowed.iter().any(|c| c == cmd.verb()));
    }
    let namespaces = tenant.namespaces.as_deref().unwrap_or_default();
    if tenant.namespaces.is_some() {
        for glob in cmd.clusters() {
            assert!(
                namespaces.iter().any(|ns| glob
                    .strip_prefix(ns.as_str())
                    .is_some_and(|r| r.starts_with('.'))),
                "{glob} allowed"
            );
        }
    }
    let out = serde_json::from_str(out).unwrap_or_else(|_| Value::String(out.into()));
    if let Some(Ok(kept)) = policy::filter_answer(&tenant, &cmd, &out) {
        let kept = match kept {
            Value::String(s) => serde_json::from_str(&s).expect("filtered JSON"),
            v => v,
        };
        for key in kept.as_object().expect("an object").keys() {
            assert!(
                namespaces.iter().any(|ns| key
                    .strip_prefix(ns.as_str())
                    .is_some_and(|r| r.starts_with('.'))),
                "{key} kept"
            );
        }
    }
}

/// The tenants file, as text. `token_file` entries are skipped: they read
/// the host's files (the file is the operator's, not outside input, but a
/// fuzzer must not open /dev/zero).
pub fn tenants(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if serde_json::from_str::<Value>(text).is_ok_and(|v| mentions_token_file(&v)) {
        return;
    }
    let path = Path::new("tenants.json");
    let Ok(list) = tenants::parse(path, text, Some("tok".into()), &Limits::default()) else {
        return;
    };
    assert!(!list.is_empty());
    for (i, t) in list.iter().enumerate() {
        assert!(!t.token.is_empty(), "tenant {} has no token", t.name);
        for other in &list[..i] {
            assert_ne!(other.name, t.name, "two tenants named alike");
            assert_ne!(other.token, t.token, "two tenants share a token");
        }
    }
}

fn mentions_token_file(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k == "token_file" || mentions_token_file(v)),
        Value::Array(a) => a.iter().any(mentions_token_file),
        _ => false,
    }
}

/// The portal simulator: one command per line (at most 64), run in order on
/// one simulator, with an uploaded `web.yml`. Every answer has the portal's shape.
pub fn sim(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let sim = Sim::new();
    let files = [(
        "web.yml".to_string(),
        Bytes::from_static(b"cluster: web\nimage: nginx\nports: [80]\n"),
    )];
    for line in text.lines().take(64) {
        let answer = sim.shell(line, &files);
        assert!(answer["ok"].is_boolean(), "{line}: {answer}");
        assert!(answer["out"].is_string(), "{line}: {answer}");
    }
}

/// A `deploy` YAML file, checked as a container file and as an override,
/// under no tenant rules and under broad ones. Never panics; whatever is
/// accepted parses in yaml-rust2 without a single tag, as one mapping whose
/// keys are the toolset's; with no `verbatim` allowlist, it sets no `verbatim`;
/// and no allowlist short of the exact name lets `privileged` through.
pub fn deploy_yaml(data: &[u8]) {
    use crate::relay::deploy_yaml::{check, DeployRules, TOP_KEYS};
    use yaml_rust2::parser::{Event, Parser};
    use yaml_rust2::{Yaml, YamlLoader};

    let images = ["registry.example.com/*".to_string(), "nginx*".to_string()];
    let broad = [
        "cpus",
        "env",
        "container",
        "container.docker.parameters",
        "container.volumes",
        "user",
    ]
    .map(String::from);
    let none = DeployRules {
        images: None,
        verbatim: &[],
    };
    let wide = DeployRules {
        images: Some(&images),
        verbatim: &broad,
    };
    for (rules, is_override) in [(&none, false), (&none, true), (&wide, false), (&wide, true)] {
        if check("web.yml", data, rules, is_override).is_err() {
            continue;
        }
        let text = std::str::from_utf8(data).expect("accepted input is UTF-8");
        let mut parser = Parser::new_from_str(text);
        loop {
            let (event, _) = parser.next_token().expect("accepted input parses");
            match event {
                Event::StreamEnd => break,
                Event::Scalar(_, _, _, tag)
                | Event::SequenceStart(_, tag)
                | Event::MappingStart(_, tag) => {
                    assert!(tag.is_none(), "accepted with the tag {tag:?}")
                }
                _ => {}
            }
        }
        let docs = YamlLoader::load_from_str(text).expect("accepted input loads");
        assert_eq!(docs.len(), 1, "accepted {} documents", docs.len());
        let Yaml::Hash(top) = &docs[0] else {
            panic!("accepted a top level that is not a mapping");
        };
        for key in top.keys() {
            let key = key.as_str().expect("accepted a key that is not a string");
            assert!(TOP_KEYS.contains(&key), "accepted the top-level key {key}");
        }
        let verbatim = top.get(&Yaml::String("verbatim".into()));
        if rules.verbatim.is_empty() {
            assert!(
                verbatim.is_none_or(|v| v.as_hash().is_some_and(|h| h.is_empty())),
                "accepted a verbatim no tenant allowed"
            );
        }
        if let Some(v) = verbatim {
            assert!(
                !sets_privileged(v),
                "accepted a privileged container under {:?}",
                rules.verbatim
            );
        }
    }
}

/// Whether a `verbatim` value asks for a privileged container, either way.
fn sets_privileged(v: &yaml_rust2::Yaml) -> bool {
    let docker = &v["container"]["docker"];
    if !docker["privileged"].is_badvalue() {
        return true;
    }
    docker["parameters"]
        .as_vec()
        .is_some_and(|list| list.iter().any(|p| p["key"].as_str() == Some("privileged")))
}

/// The toolset grammar (SPEC §6.3): the input is a command line. It never
/// panics; what it accepts has a canonical line that parses back to the same
/// command, that a shell cannot read differently (no shell or glob
/// characters outside single quotes, none inside but the glob, no `'` in
/// quotes), where only the first word is a verb and a word starts with `-`
/// only when it is one of the verb's options, and that means the same with
/// its quotes removed (the words `toolset` receives).
pub fn grammar(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    let Ok(cmd) = toolset::parse(&line) else {
        return;
    };
    let canonical = cmd.canonical();
    assert_eq!(
        toolset::parse_canonical(&canonical).as_ref(),
        Ok(&cmd),
        "{line:?} -> {canonical:?}"
    );
    const GLOB: &[char] = &['*', '?', '[', ']'];
    const SHELL: &[char] = &[
        ';', '|', '&', '$', '`', '<', '>', '(', ')', '{', '}', '\'', '"', '\\', '#', '~', ' ',
        '\t', '\n', '\r',
    ];
    let words: Vec<&str> = canonical.split(' ').collect();
    assert_eq!(words[0], cmd.verb(), "{canonical:?}");
    let mut unquoted = Vec::new();
    for word in &words {
        let bare = match word.strip_prefix('\'').and_then(|w| w.strip_suffix('\'')) {
            Some(inner) => {
                assert!(!inner.contains('\''), "{canonical:?}: a quote in quotes");
                assert!(inner.contains(GLOB), "{canonical:?}: quoted without a glob");
                inner
            }
            None => {
                assert!(
                    !word.contains(GLOB) && !word.contains(SHELL),
                    "{canonical:?}: `{word}` unquoted"
                );
                word
            }
        };
        assert!(!bare.is_empty(), "{canonical:?}: an empty word");
        assert!(
            bare.chars()
                .all(|c| c.is_ascii_graphic() && !SHELL.contains(&c)),
            "{canonical:?}: `{bare}` holds a character the shell reads"
        );
        unquoted.push(bare);
    }
    let option_names: Vec<&str> = cmd
        .spec
        .options
        .iter()
        .flat_map(|o| o.names.iter().copied())
        .chain(["-d", "--debug"])
        .collect();
    for word in &unquoted[1..] {
        assert!(!TAGS.contains(word), "{canonical:?}: `{word}` is a verb");
        assert!(
            !word.starts_with('-') || option_names.contains(word),
            "{canonical:?}: `{word}` looks like an option"
        );
        assert!(!word.starts_with('+'), "{canonical:?}: `{word}`");
    }
    assert_eq!(&unquoted[1..], cmd.argv().as_slice(), "{canonical:?}");
    let plain = unquoted.join(" ");
    assert_eq!(toolset::parse(&plain).as_ref(), Ok(&cmd), "{plain:?}");
}

/// Where the seed corpus of `target` lives, from the crate's root.
pub fn corpus_dir(manifest_dir: &Path, target: &str) -> PathBuf {
    manifest_dir.join("fuzz").join("corpus").join(target)
}
