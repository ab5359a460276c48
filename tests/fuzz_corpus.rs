//! Replays every fuzz target's seed corpus (`fuzz/corpus/<target>/`) through
//! the same harness `cargo fuzz` runs (`servo::fuzzing`), so CI keeps the
//! corpus, and every crash once found and fixed, honest without fuzzing.

use std::path::Path;

use servo::fuzzing::{corpus_dir, TARGETS};

/// Replays one target's corpus; a harness panics when an invariant breaks.
fn replay(target: &str) {
    let (_, harness) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let dir = corpus_dir(Path::new(env!("CARGO_MANIFEST_DIR")), target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 3,
        "{}: a seed corpus needs a few inputs",
        dir.display()
    );
    for input in inputs {
        let data = std::fs::read(&input).expect("a corpus file");
        eprintln!("{target}: {}", input.display());
        harness(&data);
    }
}

#[test]
fn every_target_has_a_fuzz_target_file_and_a_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in TARGETS {
        let target = root.join("fuzz/fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&target)
            .unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        assert!(
            text.contains(&format!("servo::fuzzing::{name}(")),
            "{} does not call servo::fuzzing::{name}",
            target.display()
        );
        assert!(corpus_dir(root, name).is_dir(), "no corpus for {name}");
    }
}

#[test]
fn unpack_corpus() {
    replay("unpack");
}

#[test]
fn signature_corpus() {
    replay("signature");
}

#[test]
fn multipart_corpus() {
    replay("multipart");
}

#[test]
fn decrypt_corpus() {
    replay("decrypt");
}

#[test]
fn request_corpus() {
    replay("request");
}

#[test]
fn policy_corpus() {
    replay("policy");
}

#[test]
fn tenants_corpus() {
    replay("tenants");
}

#[test]
fn sim_corpus() {
    replay("sim");
}

#[test]
fn deploy_yaml_corpus() {
    replay("deploy_yaml");
}

#[test]
fn grammar_corpus() {
    replay("grammar");
}

#[test]
fn the_unpack_harness_gzips_bare_tars_with_their_checksums_set() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut bare = std::fs::read(corpus_dir(root, "unpack").join("bare-good-tree.tar"))
        .expect("the bare seed");
    // Spoil every header's checksum: the harness must set them again.
    for header in [0, 512, 1536, 2048] {
        bare[header + 148..header + 156].copy_from_slice(b"0000000\0");
    }
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let archive = tmp.path().join("upload.tgz");
    let dest = tmp.path().join("bundle");
    std::fs::create_dir(&dest).expect("dest");
    std::fs::write(&archive, servo::fuzzing::archive_bytes(&bare)).expect("the archive");
    let limits = servo::bundle::unpack::UnpackLimits::default();
    let summary = servo::bundle::unpack::unpack(&archive, &dest, &limits, None)
        .expect("the bare tree unpacks");
    assert_eq!(summary.files, 2, "{summary:?}");
    assert!(std::fs::symlink_metadata(dest.join("lib/alias.py"))
        .expect("the symlink")
        .file_type()
        .is_symlink());
}
