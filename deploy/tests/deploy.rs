//! The burn-free deploy binary does its jobs: an arm policy evaluated closed
//! loop, and driving the emulated arm through the serial bridge at the rate
//! in its manifest.

use std::path::PathBuf;
use std::process::Command;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// The deploy binary as a command. A cross build's tests run under an
/// emulator (`.cargo/qemu/aarch64`), which names itself in
/// `DIFFBC_CROSS_RUNNER`: the binary is started through it, as cargo starts
/// the test itself, instead of being handed to the host's kernel.
fn deploy_command() -> Command {
    let bin = env!("CARGO_BIN_EXE_diffbc-deploy");
    match std::env::var_os("DIFFBC_CROSS_RUNNER") {
        Some(runner) => {
            let mut c = Command::new(runner);
            c.arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

fn deploy(args: &[&str]) -> std::process::Output {
    deploy_command()
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("diffbc-deploy runs")
}

#[test]
fn eval_runs_the_shipped_arm_policy_closed_loop() {
    let arm = models().join("arm");
    let out = deploy(&[
        "eval",
        arm.to_str().expect("utf-8"),
        "--episodes",
        "4",
        "--threads",
        "1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("| arm | diffusion-x(M=2) | in-process | 4 |"))
        .unwrap_or_else(|| panic!("no row for the arm policy:\n{text}"));
    // Four episodes: the all-targets rate is a multiple of 1/4.
    let rate: f64 = row.split('|').nth(5).expect("column").trim()[..4]
        .parse()
        .expect("a rate");
    assert!((rate * 4.0 - (rate * 4.0).round()).abs() < 1e-9, "{row}");
}

#[test]
fn sim_arm_and_run_drive_the_emulated_arm_at_the_trained_rate() {
    let tmp = tempfile::tempdir().expect("tmp");
    let link = tmp.path().join("arm");
    let mut sim = deploy_command()
        .args(["sim-arm", "--task", "arm", "--seconds", "20", "--link"])
        .arg(&link)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sim-arm");
    let start = std::time::Instant::now();
    while !link.exists() {
        assert!(start.elapsed().as_secs() < 10, "sim-arm made no link");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let arm = models().join("arm");
    let out = deploy(&[
        "run",
        arm.to_str().expect("utf-8"),
        "--port",
        link.to_str().expect("utf-8"),
        "--seconds",
        "1",
        "--task",
        "arm",
    ]);
    sim.kill().ok();
    sim.wait().ok();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("control at 10 Hz") && text.contains("rate from the manifest"),
        "{text}"
    );
}
