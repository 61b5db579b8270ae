//! LeRobot datasets through the command line: `demos --format lerobot`
//! writes one that `train` reads, `--obs-keys` / `--action-key` choose
//! features, and an existing dataset is never overwritten.

use crate::support::{error_line, ok, pusht_dir, s, tiny_pusht_config};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/lerobot")
        .join(name)
}

#[test]
fn demos_write_a_lerobot_dataset_that_trains_and_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("arm-lerobot");
    let demos = [
        "demos",
        "--episodes",
        "3",
        "--format",
        "lerobot",
        "--out",
        s(&data),
    ];
    let out = ok(&demos);
    assert!(
        out.contains("3 episodes") && out.contains(s(&data)),
        "{out}"
    );
    assert!(data.join("meta/info.json").is_file());
    assert!(data.join("data/chunk-000/file-000.parquet").is_file());
    let ck = dir.path().join("ck");
    ok(&[
        "train",
        "--task",
        "arm",
        "--method",
        "mse",
        "--data",
        s(&data),
        "--steps",
        "2",
        "--obs-keys",
        "observation.state",
        "--action-key",
        "action",
        "--out",
        s(&ck),
    ]);
    assert!(ck.is_dir());
    let e = error_line(&demos);
    assert!(e.contains(s(&data)) && e.contains("not empty"), "{e}");
    // A camera feature is refused with the reason.
    let e = error_line(&[
        "train",
        "--task",
        "arm",
        "--data",
        s(&fixture("so100_v30")),
        "--steps",
        "1",
        "--obs-keys",
        "observation.images.front",
        "--out",
        s(&dir.path().join("x")),
    ]);
    assert!(
        e.contains("info.json") && e.contains("video is not decoded"),
        "{e}"
    );
}

#[test]
fn obs_keys_choose_zarr_arrays_and_do_not_apply_to_demos_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = tiny_pusht_config(dir.path(), "mse", 2);
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&pusht_dir()),
        "--obs-keys",
        "state",
        "--action-key",
        "action",
        "--out",
        s(&dir.path().join("ck")),
    ]);
    let e = error_line(&[
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&pusht_dir()),
        "--obs-keys",
        "state,keypoint",
        "--out",
        s(&dir.path().join("ck2")),
    ]);
    assert!(e.contains("23-value states"), "{e}");
    let demos = dir.path().join("arm.demos");
    ok(&["demos", "--episodes", "2", "--out", s(&demos)]);
    let e = error_line(&[
        "train",
        "--task",
        "arm",
        "--data",
        s(&demos),
        "--obs-keys",
        "state",
        "--steps",
        "1",
        "--out",
        s(&dir.path().join("ck3")),
    ]);
    assert!(e.contains("arm.demos") && e.contains("--obs-keys"), "{e}");
}
