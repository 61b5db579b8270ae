//! A model folder is user input: nothing in it may make the loader read
//! outside the folder, read forever, block, or run a schedule that explodes.
//! Each test builds a hostile copy of a shipped model and checks the load is
//! refused with an error naming the file or field — never a panic, a hang or
//! a successful load.

use diffbc_runtime::{EngineChoice, OnnxModel, Policy, PolicyOptions};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name)
}

/// A writable copy of `models/<name>` at `<dir>/model`.
fn copy_model(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join("model");
    copy_dir(&shipped(name), &to);
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).expect("json")).expect("write");
}

/// Load `dir` on `engine` on another thread; a load still running after 20 s
/// is a hang and fails the test (the thread is left behind).
fn load_within(dir: &Path, engine: EngineChoice) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let d = dir.to_path_buf();
    std::thread::spawn(move || {
        let r = OnnxModel::load(&d, engine)
            .map(|_| ())
            .map_err(|e| e.to_string());
        let _ = tx.send(r);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("loading {} hung", dir.display()),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("loading {} panicked", dir.display()),
    }
}

/// The pure-Rust engines of this build (tract is left out of the Arm cross build).
fn engines() -> Vec<EngineChoice> {
    EngineChoice::pure_rust()
}

#[test]
fn graph_paths_that_leave_the_folder_are_refused_even_when_the_graph_is_valid() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = copy_model("bench-sieve", tmp.path());
    // The same (valid, hash-matching) graph moved out of the folder.
    std::fs::rename(dir.join("encoder.onnx"), tmp.path().join("encoder.onnx")).expect("mv");
    let outside = tmp.path().join("encoder.onnx");
    for (name, file) in [
        ("parent", "../encoder.onnx".to_string()),
        ("absolute", outside.display().to_string()),
        ("nested parent", "golden/../../encoder.onnx".to_string()),
    ] {
        edit_manifest(&dir, |m| m["encoder"]["file"] = file.clone().into());
        for engine in engines() {
            let e = load_within(&dir, engine).expect_err(name);
            assert!(
                e.contains("encoder.file") && e.contains("inside the folder"),
                "{name} on {engine}: {e}"
            );
        }
    }
    // A symlink in the folder that points at the graph outside.
    edit_manifest(&dir, |m| m["encoder"]["file"] = "encoder.onnx".into());
    std::os::unix::fs::symlink(&outside, dir.join("encoder.onnx")).expect("symlink");
    for engine in engines() {
        let e = load_within(&dir, engine).expect_err("symlink out");
        assert!(e.contains("symlink"), "{engine}: {e}");
    }
    // Moved back in place, the folder loads: the refusals were about the paths.
    std::fs::remove_file(dir.join("encoder.onnx")).expect("rm");
    std::fs::rename(&outside, dir.join("encoder.onnx")).expect("mv back");
    for engine in engines() {
        load_within(&dir, engine).expect("the repaired folder loads");
    }
}

#[test]
fn a_file_outside_is_never_read_so_its_hash_never_leaks() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = copy_model("bench-sieve", tmp.path());
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, b"private key material").expect("write");
    let digest = diffbc_runtime::policy::sha256_hex(b"private key material");
    edit_manifest(&dir, |m| m["head"]["file"] = "../secret.txt".into());
    let e = load_within(&dir, EngineChoice::default()).expect_err("outside");
    assert!(!e.contains(&digest), "the error leaks the file's hash: {e}");
    assert!(e.contains("head.file"), "{e}");
}

#[test]
fn special_files_are_refused_without_reading_or_blocking() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = copy_model("bench-sieve", tmp.path());
    // A graph that is a FIFO (no writer: opening it would block) …
    std::fs::remove_file(dir.join("denoiser.onnx")).expect("rm");
    let status = std::process::Command::new("mkfifo")
        .arg(dir.join("denoiser.onnx"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    for engine in engines() {
        let e = load_within(&dir, engine).expect_err("fifo");
        assert!(
            e.contains("denoiser.onnx") && e.contains("FIFO"),
            "{engine}: {e}"
        );
    }
    // … a directory …
    std::fs::remove_file(dir.join("denoiser.onnx")).expect("rm");
    std::fs::create_dir(dir.join("denoiser.onnx")).expect("mkdir");
    let e = load_within(&dir, EngineChoice::Native).expect_err("dir");
    assert!(e.contains("directory"), "{e}");
    // … and a manifest that is a FIFO.
    std::fs::remove_file(dir.join("manifest.json")).expect("rm");
    let status = std::process::Command::new("mkfifo")
        .arg(dir.join("manifest.json"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let e = load_within(&dir, EngineChoice::default()).expect_err("fifo manifest");
    assert!(e.contains("manifest.json") && e.contains("FIFO"), "{e}");
}

#[test]
fn a_device_file_is_refused_not_read_until_memory_runs_out() {
    // Inside the folder, a symlink to /dev/zero (the type is checked after
    // following the link), and a manifest that is the device itself.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = copy_model("bench-sieve", tmp.path());
    std::fs::remove_file(dir.join("manifest.json")).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", dir.join("manifest.json")).expect("symlink");
    let e = load_within(&dir, EngineChoice::default()).expect_err("device manifest");
    assert!(e.contains("character device"), "{e}");
}

#[test]
fn an_oversized_manifest_is_refused_before_it_is_read() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = copy_model("bench-sieve", tmp.path());
    // A sparse 200 MB file: no disk used, far over what a manifest may hold.
    let f = std::fs::File::create(dir.join("manifest.json")).expect("create");
    f.set_len(200 << 20).expect("set_len");
    let e = load_within(&dir, EngineChoice::default()).expect_err("huge");
    assert!(
        e.contains("manifest.json") && e.contains("more than"),
        "{e}"
    );
}

#[test]
fn golden_tensor_names_stay_inside_the_folder() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = copy_model("bench-sieve", tmp.path());
    let index = dir.join("golden/index.json");
    let mut cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).expect("read")).expect("json");
    // The first case's first input names a file outside the folder.
    cases[0]["inputs"][0]["file"] = "../../x.npy".into();
    std::fs::write(tmp.path().join("x.npy"), b"not read").expect("write");
    std::fs::write(&index, serde_json::to_string(&cases).expect("json")).expect("write");
    let mut m = OnnxModel::load(&dir, EngineChoice::Native).expect("load");
    let e = m.golden_max_diff(&dir).expect_err("outside").to_string();
    assert!(e.contains("inside the folder"), "{e}");
}

#[test]
fn a_schedule_whose_alpha_bar_underflows_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = copy_model("bench-sieve", tmp.path());
    // Every β in (0, 1) — valid one by one — but ᾱ_T = 1e-6^50 underflows.
    edit_manifest(&dir, |m| {
        let n = m["schedule"]["betas"].as_array().expect("betas").len();
        m["schedule"]["betas"] = vec![0.999_999; n].into();
    });
    let e = load_within(&dir, EngineChoice::Native).expect_err("underflow");
    assert!(e.contains("schedule") && e.contains("alpha_bar"), "{e}");
    // The policy never gets to hand out the ~1e23 actions such a schedule makes.
    assert!(
        Policy::load_with(
            &dir,
            &PolicyOptions {
                engine: EngineChoice::Native,
                ..Default::default()
            }
        )
        .is_err()
    );
}
