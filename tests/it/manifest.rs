//! The model contract outside Rust: `docs/manifest.md` and its JSON Schema
//! are enough to run every shipped policy. A short Python client written from
//! the document alone (numpy + onnxruntime, `tests/manifest/`) reproduces the
//! end-to-end golden episodes, and every shipped manifest follows the schema.
//! These tests need `python3 -m pip install numpy onnxruntime==1.31.1
//! jsonschema` (`.ci/run` installs them); without them they fail with that
//! instruction, never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL: &str = "python3 -m pip install numpy onnxruntime==1.31.1 jsonschema";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("models"))
        .expect("models/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    dirs.sort();
    for name in ["arm", "bench-sieve", "claw", "pusht-state"] {
        assert!(
            dirs.iter().any(|d| d.ends_with(name)),
            "models/{name} must ship, found {dirs:?}"
        );
    }
    dirs
}

/// Run a script of `tests/manifest/` on `dirs`; (success, stdout + stderr).
fn script(name: &str, dirs: &[PathBuf]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(root().join("tests/manifest").join(name))
        .args(dirs)
        .output()
        .unwrap_or_else(|e| panic!("these tests need python3 on PATH (then `{INSTALL}`): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("ModuleNotFoundError"),
        "this test needs numpy, onnxruntime and jsonschema for python3: `{INSTALL}`\n{text}"
    );
    (out.status.success(), text)
}

#[test]
fn a_client_written_from_the_spec_alone_reproduces_every_shipped_model() {
    let dirs = shipped();
    let (ok, text) = script("reference_client.py", &dirs);
    assert!(
        ok,
        "the reference client disagrees with the runtime:\n{text}"
    );
    println!("{text}");
}

#[test]
fn every_shipped_manifest_follows_the_schema() {
    let (ok, text) = script("check_schema.py", &shipped());
    assert!(ok, "{text}");
}

/// Copy a shipped model's manifest into a scratch folder, edited by `edit`.
fn edited_manifest(edit: impl FnOnce(&mut serde_json::Value)) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("m");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let text =
        std::fs::read_to_string(root().join("models/pusht-state/manifest.json")).expect("manifest");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    edit(&mut v);
    std::fs::write(dir.join("manifest.json"), v.to_string()).expect("write");
    (tmp, dir)
}

/// The schema covers every field and no more: an undocumented field, a
/// missing required one, or a convention other than the documented one fails
/// the check, naming where.
#[test]
fn the_schema_refuses_undocumented_missing_or_unknown_fields() {
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "clip_denoised",
            Box::new(|v| {
                v["sampler"]["clip_denoised"] = true.into();
            }),
        ),
        (
            "channels",
            Box::new(|v| {
                v.as_object_mut().expect("object").remove("channels");
            }),
        ),
        (
            "time_input",
            Box::new(|v| {
                v["conventions"]["time_input"] = "tau".into();
            }),
        ),
        (
            "unit",
            Box::new(|v| {
                v["channels"]["observation"][0]
                    .as_object_mut()
                    .expect("channel")
                    .remove("unit");
            }),
        ),
    ];
    for (what, edit) in cases {
        let (_tmp, dir) = edited_manifest(edit);
        let (ok, text) = script("check_schema.py", &[dir]);
        assert!(!ok, "{what}: the schema accepted it:\n{text}");
        assert!(text.contains(what), "{what}: not named in\n{text}");
    }
}

/// The Rust runtime reads exactly the documented format: a manifest the
/// schema refuses is refused by the runtime too, naming the field.
#[test]
fn the_runtime_refuses_what_the_schema_refuses() {
    let (_tmp, dir) = edited_manifest(|v| {
        v["conventions"]["clip"] = "minus_one_to_one".into();
    });
    let e = diffbc_runtime::policy::read_manifest(Path::new(&dir))
        .expect_err("unknown convention")
        .to_string();
    assert!(e.contains("minus_one_to_one"), "{e}");
}

/// `diffbc export --upgrade` turns a format-1 folder back into the shipped
/// one: the graphs byte for byte, the channels and deployment settings from
/// the training data, and golden episodes that every engine reproduces.
#[test]
fn upgrading_a_format_1_folder_restores_the_contract_from_the_data() {
    let tmp = tempfile::tempdir().expect("tmp");
    let shipped = root().join("models/pusht-state");
    let dir = tmp.path().join("pusht-v1");
    std::fs::create_dir_all(dir.join("golden")).expect("mkdir");
    for f in ["encoder.onnx", "denoiser.onnx"] {
        std::fs::copy(shipped.join(f), dir.join(f)).expect("copy");
    }
    for e in std::fs::read_dir(shipped.join("golden")).expect("golden") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        if !name.starts_with("ep-") && name != "episodes.json" {
            std::fs::copy(&p, dir.join("golden").join(&name)).expect("copy");
        }
    }
    let text = std::fs::read_to_string(shipped.join("manifest.json")).expect("manifest");
    let v2: serde_json::Value = serde_json::from_str(&text).expect("json");
    let mut v1 = v2.clone();
    let o = v1.as_object_mut().expect("object");
    for k in ["conventions", "channels", "deployment", "samplers"] {
        o.remove(k);
    }
    o.insert("format_version".into(), 1.into());
    std::fs::write(dir.join("manifest.json"), v1.to_string()).expect("write");

    let d = dir.to_str().expect("utf-8");
    let e = diffbc_runtime::policy::read_manifest(&dir)
        .expect_err("format 1")
        .to_string();
    assert!(e.contains("diffbc export --upgrade"), "{e}");
    let data = root().join("../shared/data/pusht");
    crate::support::ok(&[
        "export",
        "--upgrade",
        d,
        "--data",
        data.to_str().expect("utf-8"),
    ]);
    let got: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json")).expect("upgraded"),
    )
    .expect("json");
    assert_eq!(got, v2, "the upgrade reproduces the shipped manifest");
    for engine in [
        diffbc_runtime::EngineChoice::Tract,
        diffbc_runtime::EngineChoice::Native,
    ] {
        let r = diffbc_runtime::replay::replay(&dir, engine).expect("replay");
        assert!(
            r.cases >= 5 && r.worst_normalised <= 1e-4,
            "{engine}: {r:?}"
        );
    }
    // Upgrading twice is refused, saying why.
    let e = crate::support::error_line(&[
        "export",
        "--upgrade",
        d,
        "--data",
        data.to_str().expect("utf-8"),
    ]);
    assert!(e.contains("nothing to upgrade"), "{e}");
}

/// The head kinds no shipped model has — the discretised and K-means
/// classifiers (decoded with uniform draws) and the MSE regressor — exported
/// as tiny seeded references and replayed by the same client.
#[test]
fn the_client_reproduces_every_head_kind() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut dirs = Vec::new();
    for name in ["tiny-discretised", "tiny-kmeans-residual", "tiny-mse"] {
        let out = tmp.path().join(name);
        crate::support::ok(&["reference", name, "--out", out.to_str().expect("utf-8")]);
        let (_, index) = diffbc_runtime::replay::read_index(&out).expect("episodes");
        let uniform: usize = index
            .cases
            .iter()
            .map(|c| {
                diffbc_runtime::golden::read_npy(&out.join("golden").join(&c.uniform))
                    .expect("uniform draws")
                    .1
                    .len()
            })
            .sum();
        // Classifiers sample their choice (one uniform draw per pick).
        assert_eq!(
            uniform > 0,
            name != "tiny-mse",
            "{name}: {uniform} uniform draws"
        );
        dirs.push(out);
    }
    let (ok, text) = script("check_schema.py", &dirs);
    assert!(ok, "a baseline's manifest leaves the schema:\n{text}");
    let (ok, text) = script("reference_client.py", &dirs);
    assert!(
        ok,
        "the reference client disagrees on a baseline head:\n{text}"
    );
}

/// Reduced-precision folders follow the same contract: `diffbc reference
/// --weights` writes them (f16 `Cast` and int8 `DequantizeLinear` weights,
/// `weights` in the manifest), the schema accepts them, and the client —
/// ONNX Runtime running the graphs as written — reproduces their golden
/// episodes.
#[test]
fn the_client_reproduces_reduced_precision_models() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut dirs = Vec::new();
    for (name, weights) in [("bench-sieve", "int8"), ("tiny-kmeans-residual", "f16")] {
        let out = tmp.path().join(format!("{name}-{weights}"));
        let text = crate::support::ok(&[
            "reference",
            name,
            "--weights",
            weights,
            "--out",
            out.to_str().expect("utf-8"),
        ]);
        assert!(text.contains(&format!("({weights} weights)")), "{text}");
        let (m, _) = diffbc_runtime::policy::read_manifest(&out).expect("manifest");
        assert_eq!(m.weights.name(), weights);
        dirs.push(out);
    }
    let (ok, text) = script("check_schema.py", &dirs);
    assert!(
        ok,
        "a reduced-precision manifest leaves the schema:\n{text}"
    );
    let (ok, text) = script("reference_client.py", &dirs);
    assert!(
        ok,
        "the reference client disagrees on a reduced-precision model:\n{text}"
    );
}

/// `diffbc export` of an exported f32 folder with `--weights` writes it in
/// that format (the shipped models have no checkpoint): the result loads on
/// every CPU engine, stays within the format's tolerance of the trainer's
/// golden outputs and replays its own episodes within 1e-4; without
/// `--weights` the folder is refused, naming it.
#[test]
fn an_exported_folder_is_written_in_another_weight_format() {
    use diffbc_runtime::{EngineChoice, OnnxModel, WeightFormat};
    let tmp = tempfile::tempdir().expect("tmp");
    let claw = root().join("models/claw");
    let out = tmp.path().join("claw-int8");
    let text = crate::support::ok(&[
        "export",
        claw.to_str().expect("utf-8"),
        "--weights",
        "int8",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(text.contains("with int8 weights"), "{text}");
    for engine in [EngineChoice::Tract, EngineChoice::Native] {
        let g = OnnxModel::load(&out, engine)
            .expect("loads")
            .golden_worst(&out)
            .expect("golden");
        assert!(g.within(WeightFormat::Int8) && g.relative > 0.0, "{g:?}");
        let r = diffbc_runtime::replay::replay(&out, engine).expect("replay");
        assert!(r.cases >= 5 && r.worst_normalised <= 1e-4, "{r:?}");
    }
    let e = crate::support::error_line(&[
        "export",
        claw.to_str().expect("utf-8"),
        "--out",
        tmp.path().join("again").to_str().expect("utf-8"),
    ]);
    assert!(
        e.contains("models/claw is an exported model") && e.contains("--weights f16 or int8"),
        "{e}"
    );
}
