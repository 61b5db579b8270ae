//! Issue #16, bridge side: a bad number on the command line is a usage error
//! that names the flag (exit code 2, no panic), and `sim-arm` never deletes
//! what is at `--link`.

use crate::support::{diffbc, s};
use std::process::Output;

fn model() -> String {
    format!("{}/models/bench-sieve", env!("CARGO_MANIFEST_DIR"))
}

/// A usage error (exit 2) whose message names `flag`, without a panic.
fn assert_refused(out: &Output, flag: &str, args: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(flag), "{args:?} does not name {flag}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
}

#[test]
fn run_refuses_bad_numbers_before_touching_the_port() {
    let m = model();
    for (flag, value) in [
        ("--seconds", "-1"),
        ("--seconds", "NaN"),
        ("--seconds", "inf"),
        ("--seconds", "0"),
        ("--seconds", "1e300"),
        ("--max-step", "NaN"),
        ("--max-step", "-0.2"),
        ("--max-step", "0"),
        ("--max-step", "inf"),
        ("--max-step", "1e300"),
        ("--rate", "NaN"),
        ("--rate", "0"),
        ("--rate", "-50"),
        ("--rate", "1000"),
    ] {
        let args = ["run", &m, "--port", "/nonexistent/arm", flag, value];
        assert_refused(&diffbc(&args), flag, &args);
    }
}

/// `--mode` / `--avoid-mode`: a bad weight is a usage error naming the flag,
/// and steering a policy trained without modes is refused before the port
/// is opened (the error names the missing channels, not the port).
#[test]
fn run_refuses_steering_it_cannot_apply_before_touching_the_port() {
    let m = model();
    for (flag, value) in [
        ("--mode", "0:-1"),
        ("--avoid-mode", "x"),
        ("--mode", "1:NaN"),
    ] {
        let args = ["run", &m, "--port", "/nonexistent/arm", flag, value];
        assert_refused(&diffbc(&args), flag, &args);
    }
    let args = ["run", &m, "--port", "/nonexistent/arm", "--mode", "0"];
    let out = diffbc(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no mode[k] observation channels"), "{err}");
    assert!(
        !err.contains("/nonexistent/arm"),
        "the port was opened first: {err}"
    );
}

#[test]
fn bench_refuses_bad_seconds() {
    let m = model();
    for value in ["-1", "NaN", "inf", "-inf", "0"] {
        let args = ["bench", &m, "--seconds", value];
        assert_refused(&diffbc(&args), "--seconds", &args);
    }
}

#[test]
fn bench_bridge_and_sim_arm_refuse_bad_numbers() {
    for (cmd, flag, value) in [
        ("bench-bridge", "--seconds", "NaN"),
        ("bench-bridge", "--seconds", "-1"),
        ("bench-bridge", "--rate", "NaN"),
        ("bench-bridge", "--rate", "0"),
        ("sim-arm", "--seconds", "-1"),
        ("sim-arm", "--seconds", "NaN"),
        ("sim-arm", "--time-scale", "NaN"),
        ("sim-arm", "--time-scale", "-2"),
        ("sim-arm", "--time-scale", "1e300"),
        ("eval", "--time-scale", "NaN"),
        ("eval", "--time-scale", "0"),
        ("pipeline", "--time-scale", "-5"),
        ("pipeline", "--time-scale", "inf"),
    ] {
        let args = [cmd, flag, value];
        assert_refused(&diffbc(&args), flag, &args);
    }
}

#[test]
fn sim_arm_never_deletes_what_is_at_the_link() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("thesis.tex");
    std::fs::write(&file, "precious").expect("write");
    let folder = dir.path().join("data");
    std::fs::create_dir(&folder).expect("mkdir");
    std::fs::write(folder.join("a"), "x").expect("write");
    for link in [&file, &folder] {
        let args = ["sim-arm", "--link", s(link), "--seconds", "1"];
        let out = diffbc(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(s(link)),
            "{args:?} does not name the path: {err}"
        );
        assert!(err.contains("refusing"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&file).expect("kept"), "precious");
    assert_eq!(
        std::fs::read_to_string(folder.join("a")).expect("kept"),
        "x"
    );
    // A fresh path works, and the link is gone after the run.
    let link = dir.path().join("arm");
    let out = diffbc(&[
        "sim-arm",
        "--task",
        "none",
        "--link",
        s(&link),
        "--seconds",
        "0.3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::symlink_metadata(&link).is_err(), "link removed");
}

/// `bench-bridge --port` sweeps a real arm: without `--yes` it asks first,
/// and anything but "yes" moves nothing (the port is never opened).
#[test]
fn bench_bridge_on_a_real_port_asks_before_it_moves_anything() {
    let out = diffbc(&[
        "bench-bridge",
        "--port",
        "/nonexistent/arm",
        "--seconds",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("type yes") && err.contains("not confirmed"),
        "{err}"
    );
    assert!(
        !err.contains("/nonexistent/arm: "),
        "the port was not opened: {err}"
    );
}

/// Deployment settings from a file and flags: a bad value or an unknown
/// field is refused, named, before the port is touched.
#[test]
fn run_refuses_bad_deployment_settings_naming_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let m = model();
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"telemetry_timeout_ms": 500, "deadline_fraction": 0.5}"#,
    )
    .expect("write");
    let typo = dir.path().join("typo.json");
    std::fs::write(&typo, r#"{"telemetry_timeout": 500}"#).expect("write");
    let e = crate::support::error_line(&[
        "run",
        &m,
        "--port",
        "/nonexistent/arm",
        "--rate",
        "10",
        "--force",
        "--settings",
        s(&typo),
    ]);
    assert!(
        e.contains("typo.json") && e.contains("telemetry_timeout"),
        "{e}"
    );
    let e = crate::support::error_line(&[
        "run",
        &m,
        "--port",
        "/nonexistent/arm",
        "--rate",
        "10",
        "--force",
        "--settings",
        s(&good),
        "--deadline-fraction",
        "1.5",
    ]);
    assert!(e.contains("deadline_fraction"), "{e}");
    // Good settings get as far as the port.
    let e = crate::support::error_line(&[
        "run",
        &m,
        "--port",
        "/nonexistent/arm",
        "--rate",
        "10",
        "--force",
        "--settings",
        s(&good),
    ]);
    assert!(e.contains("/nonexistent/arm"), "{e}");
}
