//! The exported policies shipped in `models/`: their manifests match their
//! graphs, tract reproduces the trainer's golden outputs, and a tampered or
//! inconsistent folder is refused with a message naming what is wrong.

use diffbc_runtime::{EngineChoice, OnnxModel, PolicyError};
use std::path::{Path, PathBuf};

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn shipped() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(models_dir())
        .expect("models/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn shipped_models_match_their_manifests_and_golden_outputs() {
    let dirs = shipped();
    assert!(
        dirs.iter().any(|d| d.ends_with("claw")),
        "models/claw must ship, found {dirs:?}"
    );
    assert!(
        dirs.iter().any(|d| d.ends_with("bench-sieve")),
        "models/bench-sieve must ship, found {dirs:?}"
    );
    assert!(
        dirs.iter().any(|d| d.ends_with("pusht-state")),
        "models/pusht-state must ship, found {dirs:?}"
    );
    for dir in dirs {
        for engine in [EngineChoice::Tract, EngineChoice::Native] {
            let mut policy = OnnxModel::load(&dir, engine)
                .unwrap_or_else(|e| panic!("{} on {engine}: {e}", dir.display()));
            let (worst, batches) = policy.golden_max_diff(&dir).expect("golden cases run");
            assert!(!batches.is_empty(), "{}: no golden cases", dir.display());
            assert!(
                worst <= 1e-4,
                "{}: {engine} is off the trainer's outputs by {worst}",
                dir.display()
            );
        }
    }
}

/// Copy the shipped claw model into a temporary folder.
fn scratch_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dst = tmp.path().join("m");
    let src = models_dir().join("claw");
    std::fs::create_dir_all(&dst).expect("mkdir");
    for f in ["manifest.json", "encoder.onnx", "denoiser.onnx"] {
        std::fs::copy(src.join(f), dst.join(f)).expect("copy");
    }
    (tmp, dst)
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
    edit(&mut v);
    std::fs::write(&p, v.to_string()).expect("write");
}

fn load_err(dir: &Path) -> String {
    OnnxModel::load(dir, EngineChoice::Tract)
        .expect_err("must be refused")
        .to_string()
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).expect("read"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_graph_that_does_not_match_its_hash_is_refused() {
    let (_tmp, dir) = scratch_copy();
    let mut bytes = std::fs::read(dir.join("denoiser.onnx")).expect("read");
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    std::fs::write(dir.join("denoiser.onnx"), bytes).expect("write");
    let e = OnnxModel::load(&dir, EngineChoice::Tract).expect_err("refused");
    assert!(matches!(e, PolicyError::Hash { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("denoiser.onnx") && msg.contains("do not belong together"),
        "{msg}"
    );
}

#[test]
fn inconsistent_manifests_are_refused_naming_the_field() {
    let (_t1, dir) = scratch_copy();
    edit_manifest(&dir, |v| v["format_version"] = 99.into());
    let e = load_err(&dir);
    assert!(
        e.contains("manifest.json") && e.contains("format_version 99"),
        "{e}"
    );

    let (_t2, dir) = scratch_copy();
    edit_manifest(&dir, |v| {
        v["normalization"]["action"]["mean"] = serde_json::json!([0.0, 0.0, 0.0])
    });
    let e = load_err(&dir);
    assert!(e.contains("normalization.action"), "{e}");

    let (_t3, dir) = scratch_copy();
    edit_manifest(&dir, |v| {
        v["schedule"]["betas"].as_array_mut().expect("betas").pop();
    });
    let e = load_err(&dir);
    assert!(e.contains("schedule.steps"), "{e}");

    let (_t4, dir) = scratch_copy();
    edit_manifest(&dir, |v| v["head"]["inputs"][1]["name"] = "a_tau".into());
    let e = load_err(&dir);
    assert!(e.contains("head.inputs"), "{e}");

    let (_t5, dir) = scratch_copy();
    edit_manifest(&dir, |v| v["surprise"] = 1.into());
    let e = load_err(&dir);
    assert!(e.contains("unknown field") && e.contains("surprise"), "{e}");

    // Chunking that cannot hold: more executed than predicted, or an action
    // vector (2 values here) that is not a whole number of chunk actions.
    let (_t7, dir) = scratch_copy();
    edit_manifest(&dir, |v| {
        v["chunk"] = serde_json::json!({"horizon": 2, "execute": 3})
    });
    let e = load_err(&dir);
    assert!(
        e.contains("manifest.json") && e.contains("chunk.execute"),
        "{e}"
    );
    let (_t8, dir) = scratch_copy();
    edit_manifest(&dir, |v| {
        v["chunk"] = serde_json::json!({"horizon": 3, "execute": 1})
    });
    let e = load_err(&dir);
    assert!(e.contains("chunk.horizon 3"), "{e}");

    // The encoder graph put in the head's place, with its hash updated: the
    // graph's own inputs give it away.
    let (_t6, dir) = scratch_copy();
    std::fs::copy(dir.join("encoder.onnx"), dir.join("denoiser.onnx")).expect("copy");
    let sha = sha256_hex(&dir.join("denoiser.onnx"));
    edit_manifest(&dir, |v| v["head"]["sha256"] = sha.into());
    let e = load_err(&dir);
    assert!(
        e.contains("denoiser.onnx") && e.contains("graph inputs"),
        "{e}"
    );
}
