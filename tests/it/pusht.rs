//! Push-T from state: the real demonstrations replayed in our environment,
//! and a chunked policy trained, exported and scored at test size.

use crate::support::{error_line, ok, pusht_dir, s, tiny_pusht_config};

fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("json written");
    serde_json::from_str(&text).expect("valid JSON")
}

#[test]
fn the_demonstrations_replay_closely_in_our_physics() {
    let dir = tempfile::tempdir().expect("tmp");
    let json = dir.path().join("replay.json");
    let out = ok(&[
        "eval",
        "--task",
        "pusht",
        "--replay",
        // The folder that holds the zarr stands for it.
        "--data",
        s(pusht_dir().parent().expect("parent")),
        "--out",
        s(&dir.path().join("out")),
        "--json",
        s(&json),
    ]);
    // "final block position X px from the recorded one on average"
    let px: f64 = out
        .split("final block position ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no drift figure in {out}"));
    assert!(px < 10.0, "replayed block ends {px} px from the recording");
    let r = records(&json);
    assert_eq!(r.len(), 2);
    for rec in &r {
        assert_eq!(rec["episodes"], 206);
        let score = rec["mean_max_coverage"].as_f64().expect("score");
        let raw = rec["mean_max_raw_coverage"].as_f64().expect("raw");
        assert!(score >= raw && score <= 1.0, "{rec}");
    }
    // The human demonstrations nearly solve the task when replayed here.
    let replayed = r[1]["mean_max_coverage"].as_f64().expect("score");
    assert!(replayed > 0.85, "{}", r[1]);
}

#[test]
fn a_chunked_policy_trains_exports_and_scores_on_both_engines() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = pusht_dir();
    let mut models = Vec::new();
    for method in ["diffusion", "mse"] {
        let cfg = tiny_pusht_config(dir.path(), method, 40);
        let ck = dir.path().join(format!("ck-{method}"));
        let out = ok(&[
            "train",
            "--task",
            "pusht",
            "--config",
            s(&cfg),
            "--data",
            s(&data),
            "--out",
            s(&ck),
        ]);
        assert!(out.contains("trained pusht"), "{out}");
        let model = dir.path().join(format!("pusht-{method}"));
        ok(&["export", s(&ck), "--out", s(&model)]);
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(model.join("manifest.json")).expect("manifest"),
        )
        .expect("json");
        assert_eq!(manifest["chunk"]["horizon"], 4);
        assert_eq!(manifest["chunk"]["execute"], 2);
        assert_eq!(manifest["action_dim"], 8, "4 actions of 2");
        models.push(model);
    }
    let mut scores = Vec::new();
    for engine in ["tract", "native"] {
        let json = dir.path().join(format!("{engine}.json"));
        ok(&[
            "eval",
            "--task",
            "pusht",
            s(&models[0]),
            s(&models[1]),
            "--sampler",
            "diffusion-x",
            "--episodes",
            "3",
            "--engine",
            engine,
            "--out",
            s(&dir.path().join(engine)),
            "--json",
            s(&json),
        ]);
        let r = records(&json);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0]["method"], "diffusion");
        assert_eq!(r[0]["sampler"], "diffusion-x(M=8)");
        assert_eq!(r[1]["method"], "mse");
        for rec in &r {
            assert_eq!(rec["episodes"], 3);
            assert_eq!(rec["horizon"], 4);
            assert_eq!(rec["execute"], 2);
            assert_eq!(rec["engine"], engine);
            let score = rec["mean_max_coverage"].as_f64().expect("score");
            let rate = rec["success_rate"].as_f64().expect("rate");
            assert!(
                (0.0..=1.0).contains(&score) && (0.0..=1.0).contains(&rate),
                "{rec}"
            );
            let steps = rec["mean_steps"].as_f64().expect("steps");
            assert!(steps > 0.0 && steps <= 300.0, "{rec}");
        }
        assert!(
            std::fs::read_to_string(dir.path().join(engine).join("report.md"))
                .expect("report")
                .contains("| diffusion | diffusion-x(M=8) | 4/2 |")
        );
        scores.push(r[1]["mean_max_coverage"].as_f64().expect("score"));
    }
    // The regressor is deterministic: both engines score it alike.
    assert!((scores[0] - scores[1]).abs() < 0.02, "{scores:?}");

    // Export can set how much of each chunk is executed, within the horizon.
    let ck = dir.path().join("ck-mse");
    let m3 = dir.path().join("m3");
    ok(&["export", s(&ck), "--out", s(&m3), "--execute", "3"]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m3.join("manifest.json")).expect("manifest"))
            .expect("json");
    assert_eq!(
        manifest["chunk"],
        serde_json::json!({"horizon": 4, "execute": 3})
    );
    let e = error_line(&[
        "export",
        s(&ck),
        "--out",
        s(&dir.path().join("m9")),
        "--execute",
        "9",
    ]);
    assert!(e.contains("chunk.execute"), "{e}");
    assert!(!dir.path().join("m9").exists(), "nothing partial is left");

    // Executing more of each chunk than it holds is refused by name.
    let e = error_line(&[
        "eval",
        "--task",
        "pusht",
        s(&models[1]),
        "--execute",
        "5",
        "--episodes",
        "1",
        "--out",
        s(&dir.path().join("bad")),
    ]);
    assert!(e.contains("chunk.execute"), "{e}");
}

/// The shipped policy, closed loop: it pushes the T most of the way home on
/// the first four reported states, where a policy that does not push (or
/// pushes from a broken observation history or chunk order) leaves the
/// block near its start, far from the goal.
#[test]
fn the_shipped_policy_pushes_the_block_toward_the_goal() {
    let dir = tempfile::tempdir().expect("tmp");
    let json = dir.path().join("shipped.json");
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/pusht-state");
    ok(&[
        "eval",
        "--task",
        "pusht",
        s(&model),
        "--sampler",
        "diffusion-x",
        "--episodes",
        "4",
        "--out",
        s(&dir.path().join("out")),
        "--json",
        s(&json),
    ]);
    let r = records(&json);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["execute"], 2, "the manifest's executed part");
    // Measured: 0.499 (seeds 100,000–100,003; 0.838 over all 50).
    let score = r[0]["mean_max_coverage"].as_f64().expect("score");
    assert!(score > 0.35, "{}", r[0]);
}

#[test]
fn missing_push_t_data_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let e = error_line(&[
        "train",
        "--task",
        "pusht",
        "--data",
        s(&dir.path().join("nope.zarr")),
        "--steps",
        "1",
        "--out",
        s(&dir.path().join("ck")),
    ]);
    assert!(e.contains("nope.zarr") && e.contains("Push-T"), "{e}");
}
