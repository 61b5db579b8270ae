//! `diffbc report` runs the whole grid (here with `--smoke`: tiny networks)
//! and writes a report with a row for every cell and no empty cell.

use crate::support::{claw_dir, ok, s};

#[test]
fn the_report_grid_runs_and_fills_every_cell() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("report");
    ok(&[
        "report",
        "--smoke",
        "--steps-scale",
        "0.01",
        "--claw-data",
        s(&claw_dir()),
        "--claw-samples",
        "20",
        "--arm-demos",
        "8",
        "--arm-episodes",
        "2",
        "--arm-modes",
        "--out",
        s(&out),
    ]);
    let report = std::fs::read_to_string(out.join("REPORT.md")).expect("REPORT.md");
    for section in [
        "## Training",
        "## Claw scenes",
        "## Emulated arm: methods and samplers",
        "## Emulated arm: classifier-free guidance",
        "## Emulated arm: steering by operator style",
        "| away from 1 (w = 3, by exclusion) |",
        "## Quality against speed",
    ] {
        assert!(report.contains(section), "missing {section}");
    }
    // No empty table cell anywhere.
    for line in report.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        assert!(
            cells.iter().all(|c| !c.trim().is_empty()),
            "empty cell in: {line}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("json"))
            .expect("parse");
    let methods = |key: &str| -> Vec<(String, String)> {
        json[key]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["method"].as_str().expect("method").to_string(),
                    r["sampler"].as_str().expect("sampler").to_string(),
                )
            })
            .collect()
    };
    let claw = methods("claw");
    for arch in ["sieve", "basic", "transformer"] {
        for sampler in ["ddpm", "diffusion-x(M=8)", "kde(N=50)"] {
            assert!(
                claw.contains(&(format!("diffusion-{arch}"), sampler.into())),
                "claw lacks diffusion-{arch} {sampler}: {claw:?}"
            );
        }
    }
    for (m, choice) in [
        ("mse", "regression"),
        ("discretised", "sample"),
        ("kmeans", "sample"),
        ("kmeans-residual", "sample"),
    ] {
        assert!(
            claw.contains(&(m.into(), choice.into())),
            "claw lacks {m}: {claw:?}"
        );
    }
    // The reference row scores perfectly, every trained row runs the export,
    // and the bars name every diffusion row against the baselines.
    let rows = json["claw"].as_array().expect("claw rows");
    assert_eq!(rows[0]["method"], "ground_truth");
    assert_eq!(rows[0]["on_object_precision"], 1.0);
    assert!(
        rows[1..].iter().all(|r| r["engine"] == "onnx-tract"),
        "{rows:?}"
    );
    let claw_bars = report
        .lines()
        .filter(|l| l.starts_with("- diffusion-"))
        .count();
    assert!(claw_bars >= 9, "{claw_bars} claw bar lines in {report}");
    // Each row's table line carries its own figures.
    for r in &rows[1..] {
        let line = format!(
            "| {} | {} | onnx-tract | {:.3} |",
            r["method"].as_str().expect("method"),
            r["sampler"].as_str().expect("sampler"),
            r["on_object_precision"].as_f64().expect("precision")
        );
        assert!(report.contains(&line), "REPORT.md lacks {line}");
    }
    let arm = methods("arm");
    for sampler in [
        "ddpm",
        "diffusion-x(M=2)",
        "diffusion-x(M=4)",
        "diffusion-x(M=8)",
        "diffusion-x(M=16)",
        "kde(N=10)",
        "kde(N=50)",
    ] {
        assert!(
            arm.contains(&("diffusion-sieve".into(), sampler.into())),
            "arm lacks {sampler}: {arm:?}"
        );
    }
    for m in ["mse", "discretised", "kmeans", "kmeans-residual"] {
        assert!(arm.iter().any(|(x, _)| x == m), "arm lacks {m}: {arm:?}");
    }
    let guided = methods("arm_guidance");
    for w in [
        "diffusion-x(M=2)",
        "diffusion-x(M=2) w=1",
        "diffusion-x(M=2) w=4",
        "diffusion-x(M=2) w=8",
    ] {
        assert!(
            guided.contains(&("diffusion-sieve-cfg".into(), w.into())),
            "guidance lacks {w}: {guided:?}"
        );
    }
    for f in [
        "figures/quality_vs_speed.png",
        "figures/claw/scene_0.png",
        "arm/sweep/figures/first_task.png",
        "arm/guidance/figures/first_task.png",
    ] {
        let bytes = std::fs::read(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(bytes.starts_with(b"\x89PNG"), "{f} is not a PNG");
    }
}
