//! The ONNX Runtime engine (`--features ort`; ORT_DYLIB_PATH from
//! `scripts/fetch-onnxruntime.sh`): it matches the trainer's golden outputs
//! and tract's actions, and a missing library or provider is a clear error.
#![cfg(feature = "ort")]

use diffbc_runtime::engine::EngineError;
use diffbc_runtime::{
    EngineChoice, ExecutionProvider, OnnxModel, Policy, PolicyError, PolicyOptions, SamplerConfig,
};
use std::path::{Path, PathBuf};

const ORT: EngineChoice = EngineChoice::Ort(ExecutionProvider::Cpu);

fn model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name)
}

fn require_library() {
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "these tests need ONNX Runtime: export the ORT_DYLIB_PATH that scripts/fetch-onnxruntime.sh prints"
    );
}

#[test]
fn ort_reproduces_the_golden_outputs() {
    require_library();
    for name in ["claw", "bench-sieve"] {
        let dir = model(name);
        let mut m = OnnxModel::load(&dir, ORT).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.engine_name(), "ort-cpu");
        let (worst, batches) = m.golden_max_diff(&dir).expect("golden");
        assert!(!batches.is_empty());
        assert!(worst <= 1e-4, "{name}: ort is off by {worst}");
    }
}

/// Every shipped model, end to end: ONNX Runtime reproduces the golden
/// episodes' actions from the recorded draws within 1e-4 in the head's units.
#[test]
fn ort_reproduces_every_shipped_models_golden_episodes() {
    require_library();
    let mut seen = 0;
    for entry in std::fs::read_dir(model("")).expect("models/") {
        let dir = entry.expect("entry").path();
        if !dir.join("manifest.json").is_file() {
            continue;
        }
        let r = diffbc_runtime::replay::replay(&dir, ORT)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(r.cases > 0, "{}: no cases", dir.display());
        assert!(
            r.worst_normalised <= 1e-4,
            "{}: ort is off the golden episodes by {} (head units)",
            dir.display(),
            r.worst_normalised
        );
        seen += 1;
    }
    assert!(
        seen >= 4,
        "expected the four shipped models, replayed {seen}"
    );
}

#[test]
fn ort_agrees_with_the_pure_rust_engines_on_act_for_the_same_seed() {
    require_library();
    for (name, frame) in [("bench-sieve", 30usize), ("claw", 3 * 64 * 64)] {
        for s in [
            SamplerConfig::diffusion_x(8),
            SamplerConfig::kde(8, 0.1),
            SamplerConfig::ddim(10),
        ] {
            let mut actions = Vec::new();
            for engine in std::iter::once(ORT).chain(EngineChoice::pure_rust()) {
                let mut p = Policy::load_with(
                    &model(name),
                    &PolicyOptions {
                        engine,
                        sampler: Some(s),
                        seed: 21,
                        ..PolicyOptions::default()
                    },
                )
                .expect("load");
                let mut out = Vec::new();
                for i in 0..3 {
                    let o: Vec<f32> = (0..frame).map(|j| ((i + j) % 13) as f32 / 13.0).collect();
                    out.extend_from_slice(p.act(&o).expect("act"));
                }
                actions.push(out);
            }
            assert!(actions.len() >= 2, "ort and at least the native engine");
            for other in &actions[1..] {
                let d = max_diff(&actions[0], other);
                assert!(
                    d <= 1e-4,
                    "{name} {}: ort and a pure-Rust engine differ by {d}",
                    s.label()
                );
            }
        }
    }
}

#[test]
fn an_unavailable_execution_provider_is_an_error_not_a_fallback() {
    require_library();
    // What the library reports, not what was asked for: CPU is always there.
    assert!(diffbc_runtime::ort_engine::is_available(ExecutionProvider::Cpu).expect("query"));
    for provider in [
        ExecutionProvider::Cuda { device: 0 },
        ExecutionProvider::TensorRt { device: 0 },
    ] {
        let available = diffbc_runtime::ort_engine::is_available(provider).expect("query");
        match Policy::load(&model("bench-sieve"), EngineChoice::Ort(provider)) {
            // A GPU build of ONNX Runtime on a machine with the GPU: the
            // provider was registered with error_on_failure, so the library
            // has it.
            Ok(p) => {
                assert!(
                    available,
                    "{provider}: loaded, yet the library does not report it"
                );
                assert!(p.engine_name().starts_with("ort-"));
            }
            Err(PolicyError::Engine(EngineError::Provider {
                provider: name,
                message,
            })) => {
                assert!(["CUDA", "TensorRT"].contains(&name.as_str()));
                // Refused because the library lacks it, or it failed to
                // register on this machine (no GPU) — never silently on CPU.
                assert!(
                    !available && message.contains("built without it")
                        || available && message.contains("registration failed"),
                    "{name}: available {available}, {message}"
                );
            }
            Err(e) => panic!("expected a provider error, got: {e}"),
        }
    }
}

#[test]
fn a_missing_library_is_named() {
    let e = diffbc_runtime::ort_engine::load_library(Path::new(
        "/nonexistent/libonnxruntime.so.1.31.1",
    ))
    .expect_err("no such library");
    assert!(matches!(e, EngineError::Library(_)));
    assert!(
        e.to_string()
            .contains("/nonexistent/libonnxruntime.so.1.31.1"),
        "{e}"
    );
}

/// ONNX Runtime runs the f16 and int8 graphs (`Cast` and per-axis
/// `DequantizeLinear` weights): within the format's tolerance of the
/// trainer's f32 outputs, and `act` agrees with tract's on the same reduced
/// graphs within 1e-4.
#[test]
fn ort_runs_every_weight_format() {
    use diffbc_runtime::WeightFormat;
    require_library();
    for format in [WeightFormat::F16, WeightFormat::Int8] {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("bench-sieve");
        let src = model("bench-sieve");
        std::fs::create_dir_all(dir.join("golden")).expect("mkdir");
        diffbc_runtime::weights::write_variant(&src, &dir, format).expect("variant");
        for e in std::fs::read_dir(src.join("golden")).expect("golden") {
            let p = e.expect("entry").path();
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            if !name.starts_with("ep-") && name != "episodes.json" {
                std::fs::copy(&p, dir.join("golden").join(&name)).expect("copy");
            }
        }
        let mut m = OnnxModel::load(&dir, ORT).unwrap_or_else(|e| panic!("{format}: {e}"));
        let g = m.golden_worst(&dir).expect("golden");
        assert!(
            g.relative > 0.0 && g.within(format),
            "{format}: ort is {g:?} off the f32 outputs"
        );
        let mut actions = Vec::new();
        for engine in std::iter::once(ORT).chain(EngineChoice::pure_rust()) {
            let mut p = Policy::load_with(
                &dir,
                &PolicyOptions {
                    engine,
                    sampler: Some(SamplerConfig::diffusion_x(8)),
                    seed: 5,
                    ..PolicyOptions::default()
                },
            )
            .expect("load");
            let mut out = Vec::new();
            for i in 0..3 {
                let o: Vec<f32> = (0..30).map(|j| ((i + j) % 13) as f32 / 13.0).collect();
                out.extend_from_slice(p.act(&o).expect("act"));
            }
            actions.push(out);
        }
        for other in &actions[1..] {
            let d = max_diff(&actions[0], other);
            assert!(d <= 1e-4, "{format}: engines differ by {d}");
        }
    }
}

/// Largest |a − b| over two action sequences of the same length.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "action sequences of different lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}
