use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The claw scenes beside the repository.
pub fn claw_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/claw")
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Run `diffbc` with `args`, logs off.
pub fn diffbc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffbc"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .env("RUST_LIB_BACKTRACE", "0")
        .output()
        .expect("run diffbc")
}

/// Stdout of a successful run.
pub fn ok(args: &[&str]) -> String {
    let out = diffbc(args);
    assert!(
        out.status.success(),
        "diffbc {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The single error line of a failed run.
pub fn error_line(args: &[&str]) -> String {
    let out = diffbc(args);
    assert!(!out.status.success(), "diffbc {args:?} should have failed");
    let err = String::from_utf8(out.stderr).expect("utf-8");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{err}");
    assert!(lines[0].starts_with("Error: "), "{err}");
    lines[0].to_string()
}

/// A training config small enough for tests, written to `dir/tiny.json`.
pub fn tiny_config(dir: &Path, method: &str, steps: usize) -> PathBuf {
    let cfg = serde_json::json!({
        "task": "claw",
        "method": method,
        "encoder": {"kind": "cnn", "layers": [{"channels": 8, "patch": 8}], "embed": 16},
        "denoiser": {"kind": "mlp_sieve", "embed": 16, "hidden": 32, "time_frequency": 1.0},
        "mse_head": {"hidden": 32},
        "diffusion": {"steps": 20, "beta_min": 1e-4, "beta_max": 0.02},
        "history": 0,
        "obs_dropout": 0.1,
        "action_scaling": "none",
        "data": {"samples": 800, "test_fraction": 0.1},
        "optim": {"steps": steps, "batch_size": 32, "lr": 1e-3, "lr_min": 5e-5, "warmup_steps": 5,
                  "grad_clip": 1.0, "ema_decay": 0.99},
        "checkpoint_every": 0,
        "seed": 7
    });
    let p = dir.join(format!("tiny-{method}.json"));
    std::fs::write(&p, serde_json::to_string_pretty(&cfg).expect("json")).expect("write");
    p
}

/// A Push-T training config small enough for tests (chunks of 4, execute 2),
/// written to `dir/tiny-pusht-<method>.json`.
pub fn tiny_pusht_config(dir: &Path, method: &str, steps: usize) -> PathBuf {
    let cfg = serde_json::json!({
        "task": "pusht",
        "method": method,
        "encoder": {"kind": "mlp", "hidden": 32, "embed": 16},
        "denoiser": {"kind": "mlp_sieve", "embed": 16, "hidden": 32, "time_frequency": 1.0},
        "mse_head": {"hidden": 32},
        "diffusion": {"steps": 20, "beta_min": 1e-4, "beta_max": 0.02},
        "history": 2,
        "chunk": {"horizon": 4, "execute": 2},
        "obs_dropout": 0.0,
        "action_scaling": "standardize",
        "data": {"samples": 800, "test_fraction": 0.1},
        "optim": {"steps": steps, "batch_size": 32, "lr": 1e-3, "lr_min": 5e-5, "warmup_steps": 5,
                  "grad_clip": 1.0, "ema_decay": 0.99},
        "checkpoint_every": 0,
        "seed": 7
    });
    let p = dir.join(format!("tiny-pusht-{method}.json"));
    std::fs::write(&p, serde_json::to_string_pretty(&cfg).expect("json")).expect("write");
    p
}

/// The Push-T demonstrations in the shared data folder.
pub fn pusht_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/pusht/pusht_cchi_v7_replay.zarr")
}
