//! The binary against a hostile (or just careless) user: output paths that
//! already hold someone's files, inputs that are devices or FIFOs,
//! demonstrations with implausible values. Nothing a user had may be lost,
//! nothing may hang, and every refusal names the path.

use super::support::{diffbc, s, tiny_config};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run `diffbc` with `args`; a run still going after `limit` is killed and
/// fails the test as a hang.
fn diffbc_within(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_diffbc"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run diffbc");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("diffbc {args:?} hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// The stderr of a run that must fail cleanly: non-zero exit, no panic.
fn refused(out: &Output, args: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "diffbc {args:?} should have failed");
    assert!(
        !err.contains("panicked"),
        "diffbc {args:?} panicked:\n{err}"
    );
    err
}

/// A folder holding a user's files: a note, and a sub-folder with data.
fn users_folder(at: &Path) {
    std::fs::create_dir_all(at.join("recordings")).expect("mkdir");
    std::fs::write(at.join("notes.txt"), b"a week of work").expect("write");
    std::fs::write(at.join("recordings/day1.bin"), b"irreplaceable").expect("write");
}

fn users_folder_intact(at: &Path) {
    assert_eq!(
        std::fs::read(at.join("notes.txt")).expect("notes.txt still there"),
        b"a week of work"
    );
    assert_eq!(
        std::fs::read(at.join("recordings/day1.bin")).expect("day1.bin still there"),
        b"irreplaceable"
    );
}

#[test]
fn train_never_replaces_a_folder_or_file_that_is_not_its_checkpoint() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = tiny_config(dir.path(), "mse", 3);
    let claw = super::support::claw_dir();
    let users = dir.path().join("users");
    users_folder(&users);
    for force in [false, true] {
        let mut args = vec![
            "train",
            "--config",
            s(&cfg),
            "--data",
            s(&claw),
            "--out",
            s(&users),
        ];
        if force {
            args.push("--force");
        }
        let err = refused(&diffbc(&args), &args);
        assert!(
            err.contains(s(&users)) && err.contains("not a diffbc checkpoint"),
            "{err}"
        );
        users_folder_intact(&users);
    }
    // An existing file is not turned into a checkpoint folder.
    let file = dir.path().join("results.csv");
    std::fs::write(&file, b"step,loss\n").expect("write");
    let args = [
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&claw),
        "--out",
        s(&file),
        "--force",
    ];
    let err = refused(&diffbc(&args), &args);
    assert!(err.contains("results.csv"), "{err}");
    assert_eq!(std::fs::read(&file).expect("file"), b"step,loss\n");

    // Its own checkpoint: refused without --force, replaced with it.
    let ck = dir.path().join("ck");
    let first = [
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&claw),
        "--out",
        s(&ck),
    ];
    assert!(diffbc(&first).status.success());
    let err = refused(&diffbc(&first), &first);
    assert!(err.contains("--force") && err.contains(s(&ck)), "{err}");
    let mut again = first.to_vec();
    again.push("--force");
    let out = diffbc(&again);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A checkpoint folder that also holds a user's file is not ours alone.
    std::fs::write(ck.join("notes.txt"), b"mine").expect("write");
    let err = refused(&diffbc(&again), &again);
    assert!(err.contains("notes.txt"), "{err}");
    assert_eq!(std::fs::read(ck.join("notes.txt")).expect("kept"), b"mine");
    std::fs::remove_file(ck.join("notes.txt")).expect("rm");

    // export --force replaces an exported model, never a user's folder.
    let model = dir.path().join("model");
    let export = ["export", s(&ck), "--out", s(&model)];
    assert!(diffbc(&export).status.success());
    let mut export_force = export.to_vec();
    export_force.push("--force");
    assert!(diffbc(&export_force).status.success());
    let users_force = ["export", s(&ck), "--out", s(&users), "--force"];
    let err = refused(&diffbc(&users_force), &users_force);
    assert!(err.contains("not an exported diffbc model"), "{err}");
    users_folder_intact(&users);
    // Nothing was left behind beside the folders (temporary siblings).
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["ck", "model", "results.csv", "tiny-mse.json", "users"],
        "stray files beside the outputs"
    );
}

#[test]
fn demos_never_overwrite_a_file_that_is_not_a_demos_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("thesis.pdf");
    std::fs::write(&file, b"%PDF chapter 3").expect("write");
    for force in [false, true] {
        let mut args = vec!["demos", "--episodes", "1", "--out", s(&file)];
        if force {
            args.push("--force");
        }
        let err = refused(&diffbc(&args), &args);
        assert!(err.contains("thesis.pdf"), "{err}");
        assert_eq!(std::fs::read(&file).expect("kept"), b"%PDF chapter 3");
    }
    // Its own file: refused without --force, replaced with it.
    let demos = dir.path().join("arm.demos");
    let args = ["demos", "--episodes", "1", "--out", s(&demos)];
    assert!(diffbc(&args).status.success());
    let err = refused(&diffbc(&args), &args);
    assert!(err.contains("--force"), "{err}");
    let forced = [
        "demos",
        "--episodes",
        "1",
        "--seed",
        "3",
        "--out",
        s(&demos),
        "--force",
    ];
    let out = diffbc(&forced);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn special_files_as_inputs_are_refused_without_hanging() {
    let dir = tempfile::tempdir().expect("tmp");
    let fifo = dir.path().join("config.json");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let limit = Duration::from_secs(30);
    let (x, y) = (dir.path().join("x"), dir.path().join("y"));
    // A config, then demonstrations, that are a FIFO or a device.
    for (task, flag, out) in [("claw", "--config", &x), ("arm", "--data", &y)] {
        for input in [s(&fifo), "/dev/zero"] {
            let args = [
                "train",
                "--task",
                task,
                "--steps",
                "1",
                flag,
                input,
                "--out",
                s(out),
            ];
            let err = refused(&diffbc_within(&args, limit), &args);
            assert!(
                err.contains(input) && err.contains("not a regular file"),
                "{err}"
            );
        }
    }
    // A model folder whose manifest is a FIFO.
    let model = dir.path().join("model");
    std::fs::create_dir(&model).expect("mkdir");
    let status = Command::new("mkfifo")
        .arg(model.join("manifest.json"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let args = ["bench", s(&model), "--seconds", "0.1"];
    let err = refused(&diffbc_within(&args, limit), &args);
    assert!(
        err.contains("manifest.json") && err.contains("FIFO"),
        "{err}"
    );
}
