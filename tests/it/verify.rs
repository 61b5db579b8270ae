//! `diffbc verify`: each engine against the shipped models' golden outputs
//! and episodes — the command a GPU machine or a board runs in place of the
//! test suite.

use crate::support::{diffbc, ok, s};
use std::path::{Path, PathBuf};

fn model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name)
}

fn rows(json: &Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).expect("json")).expect("parse");
    v.as_array().expect("rows").clone()
}

#[test]
fn verify_passes_the_shipped_models_on_the_cpu_engines() {
    let tmp = tempfile::tempdir().expect("tmp");
    let json = tmp.path().join("verify.json");
    let out = ok(&[
        "verify",
        s(&model("claw")),
        s(&model("arm")),
        "--engine",
        "native",
        "--engine",
        "tract",
        "--json",
        s(&json),
    ]);
    let rows = rows(&json);
    assert_eq!(rows.len(), 4, "{out}");
    for r in &rows {
        assert_eq!(r["pass"], true, "{r}");
        assert!(r["graph_cases"].as_u64().expect("cases") > 0, "{r}");
        assert!(r["episodes"].as_u64().expect("episodes") > 0, "{r}");
        assert!(r["graph_worst_abs"].as_f64().expect("worst") <= 1e-4, "{r}");
        assert!(r["episode_worst"].as_f64().expect("worst") <= 1e-4, "{r}");
    }
    assert_eq!(out.matches("| pass |").count(), 4, "{out}");
}

/// Both binaries keep NVIDIA's libraries at f32 (TF32 put tract-cuda's claw
/// encoder 3e-4 off on an H200) unless the user set the variable.
#[test]
fn verify_says_whether_nvidia_libraries_may_use_tf32() {
    let run = |value: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_diffbc"));
        c.args(["verify", s(&model("bench-sieve")), "--engine", "native"])
            .env("RUST_LOG", "warn");
        match value {
            Some(v) => c.env("NVIDIA_TF32_OVERRIDE", v),
            None => c.env_remove("NVIDIA_TF32_OVERRIDE"),
        };
        let out = c.output().expect("run");
        assert!(out.status.success());
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let default = run(None);
    assert!(
        default.contains("NVIDIA_TF32_OVERRIDE=0 (f32)"),
        "{default}"
    );
    let allowed = run(Some("1"));
    assert!(
        allowed.contains("NVIDIA_TF32_OVERRIDE=1 (TF32 allowed)"),
        "{allowed}"
    );
}

/// One recorded action moved: the engine no longer "reproduces" the
/// episode, and the command fails naming the folder and engine.
#[test]
fn verify_fails_on_an_episode_an_engine_does_not_reproduce() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dst = tmp.path().join("claw");
    copy_dir(&model("claw"), &dst);
    let gdir = dst.join("golden");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gdir.join("episodes.json")).expect("index"))
            .expect("json");
    let actions = index["cases"][0]["actions"].as_str().expect("actions file");
    let path = gdir.join(actions);
    let (shape, mut data) = diffbc_runtime::golden::read_npy(&path).expect("npy");
    data[0] += 0.5;
    diffbc_runtime::golden::write_npy(&path, &shape, &data).expect("write");
    let json = tmp.path().join("verify.json");
    let out = diffbc(&["verify", s(&dst), "--engine", "native", "--json", s(&json)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{} on native", dst.display())),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| FAIL |"), "{stdout}");
    let rows = rows(&json);
    assert_eq!(rows[0]["pass"], false);
    // The graphs themselves still match the trainer.
    assert!(rows[0]["graph_worst_abs"].as_f64().expect("worst") <= 1e-4);
    assert!(rows[0]["episode_worst"].as_f64().expect("worst") > 1e-4);
}

/// An engine this build lacks is a failed row with the reason, not a crash.
#[test]
fn verify_reports_an_engine_that_cannot_load() {
    let out = diffbc(&["verify", s(&model("bench-sieve")), "--engine", "tract-cuda"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| error: "), "{stdout}");
    assert!(stdout.contains("tract-cuda"), "{stdout}");
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}
