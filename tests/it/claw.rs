use crate::support::{claw_dir, diffbc, error_line, ok, s, tiny_config};
use std::path::Path;

#[test]
fn train_sample_eval_end_to_end_with_reproducible_samples() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = claw_dir();
    let mut checkpoints = Vec::new();
    for method in ["diffusion", "mse"] {
        let cfg = tiny_config(tmp.path(), method, 120);
        let out = tmp.path().join(method);
        let json = tmp.path().join(format!("{method}.json"));
        let text = ok(&[
            "train",
            "--config",
            s(&cfg),
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--json",
            s(&json),
        ]);
        // The JSON record: what the GPU check compares across devices.
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
        let o = &record["outcome"];
        assert_eq!(record["device"], "cpu");
        assert_eq!(record["method"], method);
        assert_eq!(o["steps"], 120);
        assert!(
            o["parameters"].as_u64().expect("parameters") > 1000,
            "{record}"
        );
        let (first, last) = (o["first_loss"].as_f64(), o["train_loss"].as_f64());
        assert!(first.expect("first") > last.expect("last"), "{record}");
        let (all, steady) = (
            o["steps_per_second"].as_f64(),
            o["steady_steps_per_second"].as_f64(),
        );
        assert!(
            all.expect("sps") > 0.0 && steady.expect("steady") > 0.0,
            "{record}"
        );
        if method == "diffusion" {
            // The PyTorch twin that times PyTorch against burn on a GPU
            // (scripts/gpu-check.sh) builds the same network: it counts the
            // same parameters (its dry run needs no torch).
            let params = o["parameters"].as_u64().expect("parameters").to_string();
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu/torch_train.py");
            let twin = std::process::Command::new("python3")
                .args([s(&script), "--checkpoint", s(&out), "--dry-run"])
                .args(["--expect-params", &params])
                .output()
                .expect("python3");
            assert!(
                twin.status.success(),
                "the PyTorch twin is not diffbc's network ({params} parameters):\n{}{}",
                String::from_utf8_lossy(&twin.stdout),
                String::from_utf8_lossy(&twin.stderr)
            );
        }
        // "… test loss X (untrained Y) …": training must have reduced the held-out loss.
        let num = |key: &str| -> f64 {
            let rest = &text[text.find(key).expect(key) + key.len()..];
            rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .find(|t| !t.is_empty())
                .expect("number")
                .parse()
                .expect("f64")
        };
        assert!(num("test loss ") < num("(untrained "), "{method}: {text}");
        for f in [
            "config.json",
            "meta.json",
            "model.mpk",
            "raw.mpk",
            "optim.mpk",
        ] {
            assert!(out.join(f).is_file(), "{method}: missing {f}");
        }
        checkpoints.push(out);
    }

    let ck = s(&checkpoints[0]);
    let sample = |seed: &str, sampler: &str| {
        ok(&[
            "sample",
            ck,
            "--data",
            s(&data),
            "--scene",
            "5",
            "-n",
            "6",
            "--seed",
            seed,
            "--sampler",
            sampler,
        ])
    };
    for sampler in ["ddpm", "diffusion-x", "kde", "ddim"] {
        let a = sample("3", sampler);
        assert_eq!(a.lines().count(), 6, "{a}");
        assert_eq!(
            a,
            sample("3", sampler),
            "{sampler}: same seed must give the same actions"
        );
        assert_ne!(
            a,
            sample("4", sampler),
            "{sampler}: another seed should give other actions"
        );
    }

    let eval_with = |threads: &str, name: &str| {
        let json = tmp.path().join(format!("{name}.json"));
        ok(&[
            "eval",
            ck,
            s(&checkpoints[1]),
            "--data",
            s(&data),
            "--samples",
            "40",
            "--kde-samples",
            "10",
            "--threads",
            threads,
            "--out",
            s(&tmp.path().join(name)),
            "--json",
            s(&json),
        ]);
        let records: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
        records.as_array().expect("a list of records").clone()
    };
    let records = eval_with("3", "report");
    let report = tmp.path().join("report");
    // ground truth + 3 diffusion samplers + MSE, in table order.
    let order: Vec<String> = records
        .iter()
        .map(|r| format!("{} {}", r["method"], r["sampler"]))
        .collect();
    assert_eq!(
        order,
        [
            r#""ground_truth" "true-distribution""#,
            r#""diffusion" "ddpm""#,
            r#""diffusion" "diffusion-x(M=8)""#,
            r#""diffusion" "kde(N=50)""#,
            r#""mse" "regression""#,
        ]
    );
    // Jobs spread over workers give the rows one worker gives.
    let mut one = eval_with("1", "one-worker");
    let mut three = records.clone();
    for r in one.iter_mut().chain(three.iter_mut()) {
        r["actions_per_second"].take();
    }
    assert_eq!(one, three);
    for r in &records {
        for key in [
            "method",
            "sampler",
            "engine",
            "on_object_precision",
            "min_coverage_ratio",
            "max_coverage_ratio",
            "sliced_wasserstein",
        ] {
            assert!(r.get(key).is_some(), "record lacks {key}: {r}");
        }
        let p = r["on_object_precision"].as_f64().expect("number");
        assert!((0.0..=1.0).contains(&p));
    }
    assert_eq!(records[0]["method"], "ground_truth");
    assert_eq!(records[0]["on_object_precision"], 1.0);
    assert!(
        records
            .iter()
            .any(|r| r["method"] == "mse" && r["sampler"] == "regression")
    );
    assert!(records.iter().any(|r| r["sampler"] == "diffusion-x(M=8)"));
    for k in 0..7 {
        let png = report.join("figures").join(format!("scene_{k}.png"));
        let img = image::open(&png).expect("figure decodes");
        assert!(
            img.width() > 5 * 256,
            "{png:?} should hold one panel per row"
        );
    }
    assert!(
        std::fs::read_to_string(report.join("report.md"))
            .expect("report")
            .contains("| diffusion | diffusion-x(M=8) | onnx-tract |")
    );
}

#[test]
fn bad_input_gives_one_clear_error_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tiny_config(tmp.path(), "diffusion", 5);
    let out = tmp.path().join("ck");

    // A missing data folder.
    let missing = tmp.path().join("no-such-claw");
    let e = error_line(&[
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&missing),
        "--out",
        s(&out),
    ]);
    assert!(e.contains("no-such-claw") && e.contains("not found"), "{e}");

    // A malformed PNG.
    let data = tmp.path().join("claw");
    std::fs::create_dir(&data).expect("mkdir");
    for entry in std::fs::read_dir(claw_dir()).expect("shared") {
        let p = entry.expect("entry").path();
        std::fs::copy(&p, data.join(p.file_name().expect("name"))).expect("copy");
    }
    std::fs::write(
        data.join("mask_3.png"),
        b"\x89PNG\r\n\x1a\nthis is not a png",
    )
    .expect("write");
    let e = error_line(&[
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&data),
        "--out",
        s(&out),
    ]);
    assert!(
        e.contains("mask_3.png") && e.contains("not a valid PNG"),
        "{e}"
    );

    // A config with an unknown field.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).expect("read")).expect("json");
    v["denoiser"]["hiden"] = serde_json::json!(64);
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, v.to_string()).expect("write");
    let e = error_line(&["train", "--config", s(&bad), "--out", s(&out)]);
    assert!(e.contains("bad.json") && e.contains("hiden"), "{e}");

    // T = 0.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).expect("read")).expect("json");
    v["diffusion"]["steps"] = serde_json::json!(0);
    std::fs::write(&bad, v.to_string()).expect("write");
    let e = error_line(&["train", "--config", s(&bad), "--out", s(&out)]);
    assert!(
        e.contains("bad.json") && e.contains("diffusion.steps"),
        "{e}"
    );

    // Another task's flags are refused, each named with its task.
    let e = error_line(&[
        "eval",
        s(tmp.path()),
        "--task",
        "claw",
        "--replay",
        "--demos",
        "x.demos",
    ]);
    assert!(
        e.contains("--replay (--task pusht)") && e.contains("--demos (--task arm)"),
        "{e}"
    );
    let e = error_line(&["eval", s(tmp.path()), "--task", "arm", "--samples", "5"]);
    assert!(e.contains("--samples (--task claw)"), "{e}");

    // Nothing was written by any of the failures.
    assert!(!out.exists());
    // A checkpoint folder that is not one.
    let e = error_line(&["sample", s(tmp.path()), "--data", s(&claw_dir())]);
    assert!(e.contains("config.json"), "{e}");
    assert!(!diffbc(&["sample", s(&missing)]).status.success());
}

#[test]
fn a_checkpoint_is_evaluated_as_its_export() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = claw_dir();
    let cfg = tiny_config(tmp.path(), "diffusion", 150);
    let ck = tmp.path().join("ck");
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&data),
        "--out",
        s(&ck),
    ]);
    let model = tmp.path().join("model");
    ok(&["export", s(&ck), "--out", s(&model)]);
    for f in [
        "manifest.json",
        "encoder.onnx",
        "denoiser.onnx",
        "golden/index.json",
    ] {
        assert!(model.join(f).is_file(), "missing {f}");
    }
    // Exporting again without --force refuses and leaves the folder alone.
    let e = crate::support::error_line(&["export", s(&ck), "--out", s(&model)]);
    assert!(e.contains("--force"), "{e}");

    let json = tmp.path().join("eval.json");
    ok(&[
        "eval",
        s(&ck),
        s(&model),
        "--data",
        s(&data),
        "--samples",
        "300",
        "--sampler",
        "diffusion-x",
        "--out",
        s(&tmp.path().join("report")),
        "--json",
        s(&json),
    ]);
    let records: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    // The checkpoint is exported before it is scored, so both rows are the
    // same deployed policy: every figure but the speed agrees exactly.
    let mut rows: Vec<serde_json::Value> = records
        .as_array()
        .expect("list")
        .iter()
        .filter(|r| r["method"] == "diffusion")
        .cloned()
        .collect();
    assert_eq!(rows.len(), 2, "{records}");
    for r in &mut rows {
        assert_eq!(r["engine"], "onnx-tract");
        r["actions_per_second"].take();
    }
    assert_eq!(rows[0], rows[1]);

    // Same seed, same sampler: the deployed path draws the same actions.
    let sample = |dir: &Path| {
        ok(&[
            "sample",
            s(dir),
            "--data",
            s(&data),
            "--scene",
            "2",
            "-n",
            "20",
            "--seed",
            "9",
        ])
    };
    let parse = |text: String| -> Vec<f64> {
        text.lines()
            .flat_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                [v["x"].as_f64().expect("x"), v["y"].as_f64().expect("y")]
            })
            .collect()
    };
    let (a, b) = (parse(sample(&ck)), parse(sample(&model)));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert_eq!(worst, 0.0, "a checkpoint and its export sample differently");
}
