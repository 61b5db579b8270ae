//! `Policy`: seeded and reproducible, engines agree, history is kept the way
//! training builds it, and bad observations or manifests are refused with a
//! typed error — never a panic — leaving the policy as it was.

use diffbc_runtime::policy::read_manifest;
use diffbc_runtime::{
    EngineChoice, ExecutionProvider, NoiseModel, OnnxModel, Policy, PolicyError, PolicyOptions,
    Sampler, SamplerConfig,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

fn model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name)
}

fn load(name: &str, engine: EngineChoice, sampler: SamplerConfig, seed: u64) -> Policy {
    Policy::load_with(
        &model(name),
        &PolicyOptions {
            engine,
            sampler: Some(sampler),
            seed,
            ..PolicyOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name} on {engine}: {e}"))
}

fn observations(frame: usize, n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..frame).map(|_| rng.random_range(-2.0f32..2.0)).collect())
        .collect()
}

fn run(policy: &mut Policy, obs: &[Vec<f32>]) -> Vec<f32> {
    obs.iter()
        .flat_map(|o| policy.act(o).expect("act").to_vec())
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_same_seed_gives_the_same_actions_and_another_seed_does_not() {
    let obs = observations(30, 5, 1);
    let s = SamplerConfig::diffusion_x(8);
    let a = run(&mut load("bench-sieve", EngineChoice::Native, s, 3), &obs);
    let b = run(&mut load("bench-sieve", EngineChoice::Native, s, 3), &obs);
    let c = run(&mut load("bench-sieve", EngineChoice::Native, s, 4), &obs);
    assert_eq!(a, b);
    assert!(max_diff(&a, &c) > 1e-3, "seed must matter");
    // reseed restarts the stream.
    let mut p = load("bench-sieve", EngineChoice::Native, s, 3);
    let first = run(&mut p, &obs);
    p.reseed(3);
    p.reset();
    assert_eq!(run(&mut p, &obs), first);
}

#[cfg(feature = "tract")]
#[test]
fn tract_and_native_agree_on_act_for_every_sampler() {
    for (name, frame) in [("bench-sieve", 30usize), ("claw", 3 * 64 * 64)] {
        let obs = observations(frame, 3, 2);
        for s in [
            SamplerConfig::ddpm(),
            SamplerConfig::diffusion_x(8),
            SamplerConfig::kde(8, 0.1),
            SamplerConfig::ddim(10),
            SamplerConfig::ddim(5).with_guidance(1.0),
        ] {
            let a = run(&mut load(name, EngineChoice::Tract, s, 9), &obs);
            let b = run(&mut load(name, EngineChoice::Native, s, 9), &obs);
            let d = max_diff(&a, &b);
            assert!(
                d <= 1e-4,
                "{name} {}: tract and native differ by {d}",
                s.label()
            );
        }
    }
}

/// `act` must feed the encoder the last `history + 1` frames, oldest first,
/// with the episode's first frame repeated at the start — rebuilt here by
/// hand through the model and sampler directly.
#[test]
fn history_is_stacked_oldest_first_and_padded_with_the_first_frame() {
    let dir = model("bench-sieve");
    let (manifest, schedule) = read_manifest(&dir).expect("manifest");
    assert_eq!(manifest.observation.history, 2);
    let s = SamplerConfig::ddim(5);
    let mut policy = load("bench-sieve", EngineChoice::Native, s, 5);
    let mut direct = OnnxModel::load(&dir, EngineChoice::Native).expect("model");
    let mut sampler = Sampler::new(schedule, s).expect("sampler");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let obs = observations(30, 4, 3);
    let norm = &manifest.normalization;
    let mut frames: Vec<Vec<f32>> = Vec::new();
    for o in &obs {
        let got = policy.act(o).expect("act").to_vec();
        let mut f = o.clone();
        norm.observation.normalize("o", &mut f).expect("finite");
        if frames.is_empty() {
            frames = vec![f.clone(); 3];
        } else {
            frames.remove(0);
            frames.push(f);
        }
        let row: Vec<f32> = frames.concat();
        let mut want = vec![0.0; 9];
        sampler
            .sample(&mut direct, &row, &mut rng, &mut want)
            .expect("sample");
        norm.action.denormalize(&mut want);
        assert_eq!(got, want);
    }
    assert_eq!(direct.observation_dim(), 90);
}

#[test]
fn a_bad_observation_is_refused_and_leaves_the_history_untouched() {
    let s = SamplerConfig::diffusion_x(2);
    let obs = observations(30, 2, 4);
    let mut clean = load("bench-sieve", EngineChoice::Native, s, 1);
    let want = run(&mut clean, &obs);

    let mut p = load("bench-sieve", EngineChoice::Native, s, 1);
    let mut got = p.act(&obs[0]).expect("act").to_vec();
    let mut nan = obs[1].clone();
    nan[7] = f32::NAN;
    let e = p.act(&nan).expect_err("NaN refused");
    assert!(matches!(e, PolicyError::Observation(_)));
    assert!(e.to_string().contains("value 7 is NaN"), "{e}");
    let mut inf = obs[1].clone();
    inf[29] = f32::NEG_INFINITY;
    assert!(
        p.act(&inf)
            .expect_err("inf")
            .to_string()
            .contains("value 29 is -inf")
    );
    let e = p.act(&obs[1][..29]).expect_err("short");
    assert!(
        e.to_string()
            .contains("29 values given, the policy takes 30"),
        "{e}"
    );
    assert!(p.act(&[]).is_err());
    got.extend_from_slice(p.act(&obs[1]).expect("act"));
    assert_eq!(
        got, want,
        "rejected observations changed the policy's state"
    );
}

#[cfg(not(feature = "ort"))]
#[test]
fn ort_without_the_feature_is_a_clear_error() {
    let e = Policy::load(
        &model("bench-sieve"),
        EngineChoice::Ort(ExecutionProvider::Cpu),
    )
    .expect_err("no ort in this build")
    .to_string();
    assert!(e.contains("--features ort"), "{e}");
}

#[cfg(feature = "ort")]
#[test]
fn ort_with_a_missing_library_is_a_clear_error_naming_it() {
    let missing = Path::new("/nonexistent/libonnxruntime.so.1");
    let e = diffbc_runtime::ort_engine::load_library(missing)
        .expect_err("no library there")
        .to_string();
    assert!(e.contains("/nonexistent/libonnxruntime.so.1"), "{e}");
}

#[test]
fn engine_names_parse_and_print() {
    for s in [
        "tract",
        "tract-cuda",
        "native",
        "ort-cpu",
        "ort-cuda",
        "ort-cuda:1",
        "ort-tensorrt:2",
    ] {
        let e: EngineChoice = s.parse().expect(s);
        assert_eq!(e.to_string(), s);
    }
    assert_eq!(
        "ort".parse::<EngineChoice>(),
        Ok(EngineChoice::Ort(ExecutionProvider::Cpu))
    );
    let e = "ort-cuda:x"
        .parse::<EngineChoice>()
        .expect_err("bad device");
    assert!(e.contains("device"), "{e}");
    assert!(
        "onnx"
            .parse::<EngineChoice>()
            .expect_err("unknown")
            .contains("unknown engine")
    );
    // tract-cuda takes no device index: CUDA_VISIBLE_DEVICES chooses the GPU.
    let e = "tract-cuda:1"
        .parse::<EngineChoice>()
        .expect_err("no index");
    assert!(e.contains("CUDA_VISIBLE_DEVICES=1"), "{e}");
}

/// A build without the `tract-cuda` feature refuses the engine by name and
/// says which feature adds it; a build with it refuses it on a machine
/// without a usable GPU with tract-cuda's reason and the graph's path, as an
/// error (tract-cuda's own panic on a failed context is caught).
#[test]
fn tract_cuda_without_it_or_without_a_gpu_is_a_clear_error() {
    let loaded = Policy::load(&model("bench-sieve"), EngineChoice::TractCuda);
    if cfg!(feature = "tract-cuda") {
        match loaded {
            // A machine with a GPU: the engine is the one asked for.
            Ok(p) => assert_eq!(p.engine_name(), "tract-cuda"),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("tract-cuda"), "{e}");
                assert!(e.contains("encoder.onnx"), "{e}");
            }
        }
    } else {
        let e = loaded.expect_err("not built").to_string();
        assert!(
            e.contains("tract-cuda engine is not in this build")
                && e.contains("--features tract-cuda"),
            "{e}"
        );
    }
}

/// Random manifests: every mutation of a valid manifest is either refused
/// with a `Manifest` error or accepted — and an accepted one then loads on
/// the native engine, or is refused there with a typed error (a changed
/// hash or tensor spec is only visible beside the graphs); nothing panics.
#[test]
fn random_manifests_never_panic() {
    let src = model("bench-sieve");
    let text = std::fs::read_to_string(src.join("manifest.json")).expect("read");
    let base: serde_json::Value = serde_json::from_str(&text).expect("json");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    for f in ["encoder.onnx", "denoiser.onnx"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut refused, mut loaded) = (0, 0);
    for _ in 0..300 {
        let mut v = base.clone();
        for _ in 0..rng.random_range(1..4) {
            mutate(&mut v, &mut rng);
        }
        std::fs::write(dir.join("manifest.json"), v.to_string()).expect("write");
        match std::panic::catch_unwind(|| read_manifest(dir).map(|_| ())) {
            Ok(Ok(())) => {
                match std::panic::catch_unwind(|| OnnxModel::load(dir, EngineChoice::Native)) {
                    Ok(Ok(_)) => loaded += 1,
                    Ok(Err(
                        PolicyError::Hash { .. }
                        | PolicyError::FieldFile { .. }
                        | PolicyError::Engine(_),
                    )) => {}
                    Ok(Err(e)) => panic!("unexpected error kind loading {v}: {e}"),
                    Err(_) => panic!("OnnxModel::load panicked on {v}"),
                }
            }
            Ok(Err(PolicyError::Manifest { path, message })) => {
                assert!(path.ends_with("manifest.json"));
                assert!(!message.is_empty());
                refused += 1;
            }
            Ok(Err(e)) => panic!("unexpected error kind: {e}"),
            Err(_) => panic!("read_manifest panicked on {v}"),
        }
    }
    assert!(
        refused > 100,
        "the mutations should mostly be caught ({refused})"
    );
    // Mutations of fields the runtime does not depend on (provenance, …)
    // are accepted and the folder still runs.
    assert!(loaded > 0, "no accepted manifest loaded");
    // Plain garbage too.
    for bytes in [
        &b""[..],
        b"{",
        b"[]",
        b"null",
        b"{\"format_version\": 1}",
        &[0xff, 0xfe],
    ] {
        std::fs::write(dir.join("manifest.json"), bytes).expect("write");
        assert!(matches!(
            read_manifest(dir),
            Err(PolicyError::Manifest { .. })
        ));
    }
}

fn pointers(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        serde_json::Value::Object(m) => {
            for (k, c) in m {
                pointers(c, format!("{at}/{k}"), out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                pointers(c, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn mutate(v: &mut serde_json::Value, rng: &mut ChaCha8Rng) {
    use serde_json::{Value, json};
    let mut all = Vec::new();
    pointers(v, String::new(), &mut all);
    let at = &all[rng.random_range(0..all.len())];
    let Some(node) = v.pointer_mut(at) else {
        return;
    };
    *node = match rng.random_range(0..7) {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(rng.random_range(0..100_000u64)),
        3 => json!("batch"),
        4 => json!(f64::MAX),
        5 => json!([]),
        _ => match node.take() {
            Value::Object(mut m) if !m.is_empty() => {
                let k = m.keys().next().cloned().unwrap_or_default();
                m.remove(&k);
                Value::Object(m)
            }
            other => json!([other]),
        },
    };
}

/// Random observations: wrong lengths, non-finite values, huge magnitudes —
/// `act` returns an action or a typed error, never panics, and every action
/// it returns is finite.
#[test]
fn random_observations_never_panic() {
    let mut p = load(
        "bench-sieve",
        EngineChoice::Native,
        SamplerConfig::ddim(4),
        0,
    );
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for _ in 0..300 {
        let len = if rng.random_bool(0.7) {
            30
        } else {
            rng.random_range(0..64)
        };
        let mut o: Vec<f32> = (0..len)
            .map(|_| match rng.random_range(0..10) {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => rng.random_range(-1e30f32..1e30),
                _ => rng.random_range(-5.0f32..5.0),
            })
            .collect();
        if rng.random_bool(0.5) {
            o.iter_mut().for_each(|v| {
                if !v.is_finite() {
                    *v = 0.0;
                }
            });
        }
        match p.act(&o) {
            Ok(a) => assert!(a.iter().all(|v| v.is_finite()), "{a:?} for {o:?}"),
            Err(PolicyError::Observation(_) | PolicyError::Sampler(_)) => {}
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }
}
