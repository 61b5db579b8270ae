//! The main job on the emulated arm: demonstrations, training, export and
//! closed-loop episodes in-process and over a pty, at test size.

use crate::support::{error_line, ok};

#[test]
fn demonstrations_are_seeded_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b, c) = (
        dir.path().join("a.demos"),
        dir.path().join("b.demos"),
        dir.path().join("c.demos"),
    );
    for (p, seed) in [(&a, "3"), (&b, "3"), (&c, "4")] {
        let out = ok(&[
            "demos",
            "--episodes",
            "6",
            "--seed",
            seed,
            "--out",
            p.to_str().expect("utf-8"),
        ]);
        assert!(out.contains("6 episodes"), "{out}");
    }
    let read = |p: &std::path::Path| std::fs::read(p).expect("read");
    assert_eq!(read(&a), read(&b), "same seed, same bytes");
    assert_ne!(read(&a), read(&c), "another seed, other data");

    // A corrupt file is refused with its name and the byte range.
    let mut bytes = read(&a);
    let n = bytes.len();
    bytes[n - 10] ^= 0x01;
    std::fs::write(&c, &bytes).expect("write");
    let e = error_line(&[
        "train",
        "--task",
        "arm",
        "--data",
        c.to_str().expect("utf-8"),
        "--steps",
        "1",
        "--out",
        dir.path().join("ck").to_str().expect("utf-8"),
    ]);
    assert!(e.contains("c.demos") && e.contains("checksum"), "{e}");
    // Missing demonstrations say how to make them.
    let e = error_line(&[
        "train",
        "--task",
        "arm",
        "--data",
        dir.path().join("none.demos").to_str().expect("utf-8"),
        "--out",
        dir.path().join("ck").to_str().expect("utf-8"),
    ]);
    assert!(e.contains("diffbc demos"), "{e}");
}

#[test]
fn pipeline_trains_exports_and_runs_closed_loop_in_process_and_over_a_pty() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("arm");
    let json = out.join("eval.json");
    let stdout = ok(&[
        "pipeline",
        "--task",
        "arm",
        "--out",
        out.to_str().expect("utf-8"),
        "--demos",
        "12",
        "--steps",
        "300",
        "--episodes",
        "3",
        "--bridge-episodes",
        "3",
        // A slower device clock leaves the loop more slack while the rest
        // of the suite shares the cores.
        "--time-scale",
        "2",
        "--sampler",
        "diffusion-x",
    ]);
    assert!(stdout.contains("| method |"), "{stdout}");
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("eval.json")).expect("json");
    let find = |method: &str, path: &str| {
        records
            .iter()
            .find(|r| r["method"] == method && r["path"] == path)
            .unwrap_or_else(|| panic!("no {method} {path} record in {records:#?}"))
    };
    for (method, path) in [
        ("diffusion", "in_process"),
        ("diffusion", "bridge"),
        ("mse", "in_process"),
        ("mse", "bridge"),
    ] {
        let r = find(method, path);
        assert_eq!(r["episodes"], 3, "{r}");
        for key in [
            "tasks_completed_mean",
            "all_targets_rate",
            "collision_rate",
            "order_entropy",
            "demo_order_entropy",
        ] {
            let v = r[key].as_f64().unwrap_or_else(|| panic!("{key} in {r}"));
            assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
        }
        assert!(r["all_targets_rate"].as_f64().unwrap_or(2.0) <= 1.0);
        assert!(r["sampler"].is_string());
        if path == "bridge" {
            let t = &r["timing"];
            // Every episode ran on the wire: ticks were sent and logged.
            assert!(t["ticks"].as_u64().unwrap_or(0) >= 3, "{t}");
            // And the in-process figures on the same seeds sit beside them.
            let same = &r["in_process_same_seeds"];
            let share = same["same_outcome_share"].as_f64().unwrap_or(-1.0);
            assert!((0.0..=1.0).contains(&share), "{same}");
        }
    }
    assert_eq!(
        find("diffusion", "in_process")["sampler"],
        "diffusion-x(M=2)"
    );
    // The bridge ran the in-process seeds (3 and 3): its in-process
    // comparison is the in-process row itself, to the digit.
    for method in ["diffusion", "mse"] {
        let same = &find(method, "bridge")["in_process_same_seeds"];
        let own = find(method, "in_process");
        for key in ["all_targets_rate", "tasks_completed_mean"] {
            assert_eq!(same[key], own[key], "{method} {key}: {same} vs {own}");
        }
    }
    // Demonstrations' own row: 12 episodes, all complete, several orders.
    let demo = find("demonstrator", "demonstrations");
    assert_eq!(demo["all_targets_rate"], 1.0);
    assert_eq!(demo["collision_rate"], 0.0, "{demo}");
    // Every demonstration reaches all the task's targets, no more.
    assert_eq!(
        demo["tasks_completed_mean"].as_f64(),
        Some(diffbc_tasks::arm::ArmTask::default().goal as f64),
        "{demo}"
    );
    assert!(
        demo["demo_order_entropy"].as_f64().unwrap_or(0.0) > 2.0,
        "{demo}"
    );
    for f in [
        "report.md",
        "figures/first_task.png",
        "figures/paths.png",
        "arm.demos",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    for m in ["diffusion", "mse"] {
        assert!(out.join("models").join(m).join("manifest.json").is_file());
    }

    // In-process evaluation split over workers gives the same episodes as
    // one worker: every episode reseeds the policy from its own seed.
    let eval_with = |threads: &str| {
        let json = dir.path().join(format!("eval-{threads}.json"));
        ok(&[
            "eval",
            "--task",
            "arm",
            out.join("models")
                .join("diffusion")
                .to_str()
                .expect("utf-8"),
            "--demos",
            out.join("arm.demos").to_str().expect("utf-8"),
            "--episodes",
            "5",
            "--bridge-episodes",
            "0",
            "--sampler",
            "kde",
            "--threads",
            threads,
            "--out",
            dir.path()
                .join(format!("eval-{threads}"))
                .to_str()
                .expect("utf-8"),
            "--json",
            json.to_str().expect("utf-8"),
        ]);
        let mut rows: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
        for r in &mut rows {
            let rate = r["decisions_per_second"].take();
            assert!(
                r["path"] != "in_process" || rate.as_f64().is_some_and(|v| v > 0.0),
                "{r}"
            );
        }
        rows
    };
    let (one, three) = (eval_with("1"), eval_with("3"));
    assert_eq!(one.len(), 2, "{one:#?}");
    assert_eq!(one, three);
}

#[test]
fn a_chunked_policy_drives_the_arm_through_the_bridge() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_string();
    ok(&["demos", "--episodes", "6", "--out", &p("arm.demos")]);
    ok(&[
        "train",
        "--task",
        "arm",
        "--method",
        "mse",
        "--data",
        &p("arm.demos"),
        "--steps",
        "30",
        "--horizon",
        "4",
        "--out",
        &p("ck"),
    ]);
    ok(&["export", &p("ck"), "--out", &p("model")]);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("model/manifest.json")).expect("manifest"),
    )
    .expect("json");
    // --horizon 4 alone executes half of each chunk.
    assert_eq!(
        manifest["chunk"],
        serde_json::json!({"horizon": 4, "execute": 2})
    );
    assert_eq!(manifest["action_dim"], 4 * 4, "4 actions of 4 joints");
    let json = p("eval.json");
    ok(&[
        "eval",
        "--task",
        "arm",
        &p("model"),
        "--demos",
        &p("arm.demos"),
        "--episodes",
        "2",
        "--bridge-episodes",
        "2",
        "--time-scale",
        "2",
        "--out",
        &p("out"),
        "--json",
        &json,
    ]);
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("eval.json")).expect("json");
    let bridge = records
        .iter()
        .find(|r| r["method"] == "mse" && r["path"] == "bridge")
        .unwrap_or_else(|| panic!("no bridge record in {records:#?}"));
    assert_eq!(bridge["episodes"], 2);
    // The loop sent one 4-joint command per tick from the chunks.
    assert!(
        bridge["timing"]["ticks"].as_u64().unwrap_or(0) >= 2,
        "{bridge}"
    );
    assert_eq!(bridge["timing"]["frames_bad"], 0, "{bridge}");
}

/// `diffbc modes` prints a row per code and the agreement table, writes its
/// JSON and figure, and refuses to overwrite them without `--force`.
#[test]
fn modes_are_learned_and_reported_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let (json, png) = (dir.path().join("m.json"), dir.path().join("m.png"));
    let args = [
        "modes",
        "--episodes",
        "8",
        "--codes",
        "4",
        "--horizon",
        "10",
        "--steps",
        "100",
        "--json",
        crate::support::s(&json),
        "--figure",
        crate::support::s(&png),
    ];
    let out = ok(&args);
    assert!(out.contains("| 3 |"), "a row per code:\n{out}");
    assert!(out.contains("target the reach heads for"), "{out}");
    // --steer trains a mode-conditional policy, exports it and runs it
    // steered (a test-sized policy: the plumbing, not the figures).
    let work = dir.path().join("steer");
    let steered = ok(&[
        "modes",
        "--episodes",
        "8",
        "--codes",
        "4",
        "--horizon",
        "10",
        "--steps",
        "100",
        "--steer",
        "--policy-steps",
        "20",
        "--steer-episodes",
        "2",
        "--out",
        crate::support::s(&work),
    ]);
    assert!(steered.contains("| none |"), "{steered}");
    assert!(steered.contains("| towards "), "{steered}");
    assert!(work.join("policy").join("manifest.json").is_file());
    let study: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("parse");
    assert_eq!(study["codes"].as_array().map(Vec::len), Some(4));
    assert!(study["heading"]["mutual_information"].as_f64().is_some());
    assert!(std::fs::metadata(&png).expect("figure").len() > 1000);
    let e = error_line(&args);
    assert!(e.contains("exists") && e.contains("--force"), "{e}");
}

/// Operator styles from the command line: `modes --two-operators --scope
/// episode --steer` learns one code per episode, trains and exports a
/// policy (with mode sets) whose manifest names its modes, and steers it
/// towards and away (by exclusion) from every code at each weight; `modes POLICY` shows what the exported
/// policy does in each mode (table and figures); `eval --task arm --mode`
/// scores it steered, and refuses a policy without modes before any
/// episode. Test-sized: the plumbing, not the figures.
#[test]
fn operator_styles_are_found_steered_and_evaluated_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let out = ok(&[
        "modes",
        "--two-operators",
        "--scope",
        "episode",
        "--windows",
        "path",
        "--hindsight",
        "--episodes",
        "8",
        "--codes",
        "2",
        "--horizon",
        "10",
        "--steps",
        "100",
        "--set-size",
        "4",
        "--batch-size",
        "32",
        "--steer",
        "--policy-steps",
        "20",
        "--steer-episodes",
        "2",
        "--weight",
        "1,2",
        "--out",
        &p("styles"),
    ]);
    assert!(out.contains("one per episode"), "{out}");
    assert!(out.contains("operator (one per episode"), "{out}");
    assert!(out.contains("Steering by operator style"), "{out}");
    for row in [
        "| unsteered |",
        "| towards 1 (w = 1) |",
        "| away from 0 (w = 2, by exclusion) |",
    ] {
        assert!(out.contains(row), "no row {row}:\n{out}");
    }
    let rows: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(dir.path().join("styles").join("steering.json")).expect("steering.json"),
    )
    .expect("json");
    assert_eq!(
        rows.len(),
        1 + 2 * 2 * 2,
        "unsteered + 2 codes × towards/away × 2 weights"
    );
    // The manifest says what each mode is.
    let policy = dir.path().join("styles").join("policy");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(policy.join("manifest.json")).expect("manifest"))
            .expect("json");
    let names: Vec<&str> = manifest["channels"]["observation"]
        .as_array()
        .expect("channels")
        .iter()
        .filter(|c| c["source"].as_str().is_some_and(|s| s.starts_with("mode[")))
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{manifest}");
    // Trained with mode sets (the episode scope's default): avoiding a
    // mode is conditioning on the others.
    assert_eq!(manifest["conventions"]["mode_input"], "set", "{manifest}");
    assert!(names[0].starts_with("mode[0]: operator "), "{names:?}");
    // What the exported policy does in each of its modes.
    let shown = ok(&[
        "modes",
        policy.to_str().expect("utf-8"),
        "--steer-episodes",
        "2",
        "--figure",
        &p("policy-modes.png"),
    ]);
    assert!(
        shown.contains("| towards 1 (w = 1) | mode[1]: operator "),
        "{shown}"
    );
    for f in ["policy-modes.png", "policy-modes-first-targets.png"] {
        assert!(std::fs::metadata(dir.path().join(f)).expect(f).len() > 1000);
    }
    // Steered evaluation, in process and through the bridge.
    ok(&[
        "demos",
        "--task",
        "arm",
        "--episodes",
        "4",
        "--out",
        &p("arm.demos"),
    ]);
    let eval = |model: &str, mode: Option<&str>, json: &str| {
        let mut args: Vec<String> = [
            "eval",
            "--task",
            "arm",
            model,
            "--demos",
            &p("arm.demos"),
            "--episodes",
            "2",
            "--bridge-episodes",
            "1",
            "--time-scale",
            "4",
            "--out",
            &p("eval"),
            "--json",
            json,
        ]
        .map(String::from)
        .to_vec();
        if let Some(m) = mode {
            args.extend(["--mode".to_string(), m.to_string()]);
        }
        args
    };
    let run = |args: Vec<String>| -> Vec<serde_json::Value> {
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let json = args
            .last()
            .filter(|_| args.len() == 16)
            .unwrap_or(&args[15]);
        serde_json::from_slice(&std::fs::read(json).expect("eval json")).expect("json")
    };
    let model = policy.to_str().expect("utf-8");
    let steered = run(eval(model, Some("1:2"), &p("steered.json")));
    let plain = run(eval(model, None, &p("plain.json")));
    for path in ["in_process", "bridge"] {
        assert!(
            steered.iter().any(|r| r["path"] == path
                && r["method"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("towards mode 1 (w = 2)"))),
            "no steered {path} row in {steered:#?}"
        );
    }
    // Steering reaches the episodes: the same seeds move differently.
    let w1 = |rows: &[serde_json::Value]| {
        rows.iter()
            .find(|r| r["path"] == "in_process")
            .and_then(|r| r["action_w1"].as_f64())
            .expect("an in-process row")
    };
    assert_ne!(
        w1(&steered),
        w1(&plain),
        "steered and unsteered episodes are the same"
    );
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/arm");
    let args = eval(
        shipped.to_str().expect("utf-8"),
        Some("0"),
        &p("refused.json"),
    );
    let e = error_line(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains("models/arm") && e.contains("no mode[k] observation channels"),
        "{e}"
    );
}
