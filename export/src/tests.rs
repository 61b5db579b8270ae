//! Export tests: every architecture and encoder exports, and tract's outputs
//! match burn's on the golden inputs; bad input fails cleanly.

use crate::{ExportError, ExportOptions, export_checkpoint, export_policy};
use burn::backend::NdArray;
use diffbc_runtime::manifest::files;
use diffbc_runtime::{EngineChoice, Normalizer, OnnxModel, Policy, PolicyOptions};
use diffbc_train::TaskDefaults;
use diffbc_train::checkpoint::{CHECKPOINT_FORMAT, CheckpointMeta};
use diffbc_train::config::{Method, TrainConfig};
use diffbc_train::data::ObsSpec;
use diffbc_train::model::{
    BasicMlpConfig, ConvLayerConfig, DenoiserConfig, EncoderConfig, MlpSieveConfig, PolicySpec,
    TransformerConfig,
};
use std::path::Path;

type Nb = NdArray<f32>;

/// Every encoder kind, with an observation it can read. A new `EncoderConfig`
/// variant fails to compile here until it is given an example.
fn encoders() -> Vec<(EncoderConfig, ObsSpec, usize)> {
    let examples = vec![
        (
            EncoderConfig::Mlp {
                hidden: 24,
                embed: 12,
            },
            ObsSpec::Vector { dim: 7 },
            2,
        ),
        (
            EncoderConfig::Cnn {
                layers: vec![
                    ConvLayerConfig {
                        channels: 6,
                        patch: 4,
                    },
                    ConvLayerConfig {
                        channels: 8,
                        patch: 2,
                    },
                ],
                embed: 10,
            },
            ObsSpec::Image {
                channels: 3,
                height: 16,
                width: 16,
            },
            1,
        ),
    ];
    for (e, _, _) in &examples {
        match e {
            EncoderConfig::Mlp { .. } | EncoderConfig::Cnn { .. } => {}
        }
    }
    examples
}

/// Every head: each diffusion denoiser architecture, then every baseline.
/// A new method or architecture fails to compile here until it is given an
/// example.
fn heads() -> Vec<(Method, DenoiserConfig)> {
    let mut out = Vec::new();
    for m in Method::ALL {
        match m {
            Method::Diffusion => {
                for d in DenoiserConfig::all() {
                    let tiny = match d {
                        DenoiserConfig::MlpSieve(_) => DenoiserConfig::MlpSieve(MlpSieveConfig {
                            embed: 16,
                            hidden: 32,
                            time_frequency: 5.0,
                        }),
                        DenoiserConfig::BasicMlp(_) => DenoiserConfig::BasicMlp(BasicMlpConfig {
                            hidden: 24,
                            layers: 3,
                        }),
                        DenoiserConfig::Transformer(_) => {
                            DenoiserConfig::Transformer(TransformerConfig {
                                d_model: 16,
                                heads: 4,
                                blocks: 2,
                                feed_forward: 24,
                                time_frequency: 5.0,
                            })
                        }
                    };
                    out.push((m, tiny));
                }
            }
            Method::Mse | Method::Discretised | Method::KMeans | Method::KMeansResidual => {
                out.push((m, DenoiserConfig::default()))
            }
        }
    }
    out
}

/// Whether diffbc's native engine runs this head (it executes the MLP op
/// set; attention needs tract or ONNX Runtime).
fn native_runs(method: Method, denoiser: &DenoiserConfig) -> bool {
    !(method == Method::Diffusion && matches!(denoiser, DenoiserConfig::Transformer(_)))
}

fn spec(
    encoder: EncoderConfig,
    obs: ObsSpec,
    history: usize,
    method: Method,
    denoiser: DenoiserConfig,
) -> PolicySpec {
    let mut config = TrainConfig::for_task(&TaskDefaults::image("claw"), method);
    config.encoder = encoder;
    config.denoiser = denoiser;
    config.mse_head.hidden = 20;
    config.baseline.hidden = 20;
    config.baseline.bins = 5;
    config.baseline.clusters = 4;
    config.history = history;
    config.diffusion.steps = 20;
    PolicySpec {
        config,
        obs,
        action_dim: 3,
    }
}

fn meta(spec: &PolicySpec) -> CheckpointMeta {
    CheckpointMeta {
        format_version: CHECKPOINT_FORMAT,
        crate_version: "test".into(),
        step: 0,
        obs: spec.obs,
        action_dim: spec.action_dim,
        obs_normalizer: Normalizer::identity(spec.obs.len()),
        action_normalizer: Normalizer::identity(spec.action_dim),
        train_loss: 0.0,
        interface: Some(crate::synthetic_interface(spec.obs.len(), spec.action_dim)),
    }
}

/// Run every golden case of `dir` on `engine`; return the largest absolute difference.
fn golden_max_diff(dir: &Path, engine: EngineChoice) -> (f32, Vec<usize>) {
    OnnxModel::load(dir, engine)
        .expect("the runtime loads the export")
        .golden_max_diff(dir)
        .expect("golden cases run")
}

/// `Policy::act` through the whole deployed path on both CPU engines: the
/// actions agree, and are finite.
fn act_on_both_engines(dir: &Path, frame: usize) -> f32 {
    let mut actions = Vec::new();
    for engine in [EngineChoice::Tract, EngineChoice::Native] {
        let mut p = Policy::load_with(
            dir,
            &PolicyOptions {
                engine,
                sampler: Some(diffbc_runtime::SamplerConfig::ddim(4)),
                seed: 1,
                ..PolicyOptions::default()
            },
        )
        .expect("policy loads");
        let mut out = Vec::new();
        for i in 0..3 {
            let o: Vec<f32> = (0..frame)
                .map(|j| ((i * 7 + j) % 11) as f32 / 11.0)
                .collect();
            out.extend_from_slice(p.act(&o).expect("act"));
        }
        assert!(out.iter().all(|v| v.is_finite()));
        actions.push(out);
    }
    actions[0]
        .iter()
        .zip(&actions[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn every_architecture_and_encoder_exports_and_tract_matches_burn() {
    let device = Default::default();
    let mut count = 0;
    for (encoder, obs, history) in encoders() {
        for (method, denoiser) in heads() {
            let spec = spec(encoder.clone(), obs, history, method, denoiser.clone());
            spec.validate().expect("valid example");
            let policy = spec.init_seeded::<Nb>(&device, 3);
            let dir = tempfile::tempdir().expect("tmp");
            let out = dir.path().join("model");
            let m = export_policy(
                &spec,
                &meta(&spec),
                &policy,
                &out,
                &ExportOptions::default(),
                &device,
            )
            .expect("export");
            assert_eq!(m.observation.history, history);
            let native = native_runs(method, &denoiser);
            let engines: &[EngineChoice] = if native {
                &[EngineChoice::Tract, EngineChoice::Native]
            } else {
                &[EngineChoice::Tract]
            };
            for &engine in engines {
                let (diff, batches) = golden_max_diff(&out, engine);
                assert!(batches.contains(&1) && batches.contains(&64), "{batches:?}");
                assert!(
                    diff <= 1e-4,
                    "{encoder:?} + {method:?} {denoiser:?}: {engine} differs from burn by {diff}"
                );
            }
            if m.decoder.is_some() {
                decoder_mismatches_are_named(&out);
            }
            if native {
                let d = act_on_both_engines(&out, obs.len());
                assert!(d <= 1e-4, "{encoder:?} + {method:?}: act differs by {d}");
            } else {
                let e = OnnxModel::load(&out, EngineChoice::Native)
                    .expect_err("the native engine has no attention")
                    .to_string();
                assert!(e.contains("denoiser.onnx") && e.contains("MatMul"), "{e}");
                let mut p = Policy::load(&out, EngineChoice::Tract).expect("tract runs it");
                let a = p.act(&vec![0.5; obs.len()]).expect("act");
                assert!(a.iter().all(|v| v.is_finite()));
            }
            count += 1;
        }
    }
    assert_eq!(count, encoders().len() * heads().len());
}

/// Every architecture and encoder in f16 and int8: the manifest says so, the
/// graphs hold the reduced weights, every engine that runs the architecture
/// stays within the format's tolerance of burn's f32 outputs, and the
/// end-to-end golden episodes (recorded on the reduced graphs) replay within
/// 1e-4 on each of them.
#[test]
fn every_architecture_exports_in_every_weight_format() {
    use diffbc_runtime::WeightFormat;
    let device = Default::default();
    let mut count = 0;
    for (encoder, obs, history) in encoders() {
        for (method, denoiser) in heads() {
            let spec = spec(encoder.clone(), obs, history, method, denoiser.clone());
            let policy = spec.init_seeded::<Nb>(&device, 3);
            for weights in [WeightFormat::F16, WeightFormat::Int8] {
                let dir = tempfile::tempdir().expect("tmp");
                let out = dir.path().join("model");
                let options = ExportOptions {
                    weights,
                    ..ExportOptions::default()
                };
                let m = export_policy(&spec, &meta(&spec), &policy, &out, &options, &device)
                    .expect("export");
                assert_eq!(m.weights, weights);
                let head = std::fs::read(out.join(&m.head.file)).expect("head graph");
                assert_eq!(
                    diffbc_runtime::weights::graph_format(&head).expect("graph"),
                    weights
                );
                let engines: &[EngineChoice] = if native_runs(method, &denoiser) {
                    &[EngineChoice::Tract, EngineChoice::Native]
                } else {
                    &[EngineChoice::Tract]
                };
                for &engine in engines {
                    let g = OnnxModel::load(&out, engine)
                        .expect("the runtime loads the export")
                        .golden_worst(&out)
                        .expect("golden cases run");
                    assert!(
                        g.within(weights),
                        "{encoder:?} + {method:?} {denoiser:?} {weights}: {engine} is {g:?} \
                         off burn's f32 outputs"
                    );
                    let r = diffbc_runtime::replay::replay(&out, engine).expect("replay");
                    assert!(
                        r.cases > 0 && r.worst_normalised <= 1e-4,
                        "{encoder:?} + {method:?} {weights}: {engine} replays within {}",
                        r.worst_normalised
                    );
                }
                count += 1;
            }
        }
    }
    assert_eq!(count, 2 * encoders().len() * heads().len());
}

/// A classifier's manifest without its decoder, or with centres / bins that
/// do not fit the action, is refused with the field named (checked on a copy).
fn decoder_mismatches_are_named(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest");
    let good: serde_json::Value = serde_json::from_str(&text).expect("json");
    let copy = tempfile::tempdir().expect("tmp");
    for f in std::fs::read_dir(dir).expect("ls").flatten() {
        if f.path().is_file() {
            std::fs::copy(f.path(), copy.path().join(f.file_name())).expect("copy");
        }
    }
    let mut missing = good.clone();
    missing.as_object_mut().expect("object").remove("decoder");
    let mut short = good.clone();
    match short["decoder"]["scheme"]["kind"].as_str() {
        Some("bins") => short["decoder"]["scheme"]["low"] = serde_json::json!([0.0]),
        _ => short["decoder"]["scheme"]["centres"] = serde_json::json!([0.0]),
    }
    for (bad, want) in [(missing, "decoder is missing"), (short, "decoder.scheme.")] {
        std::fs::write(copy.path().join("manifest.json"), bad.to_string()).expect("write");
        let e = OnnxModel::load(copy.path(), EngineChoice::Tract)
            .expect_err("a mismatched decoder is refused")
            .to_string();
        assert!(e.contains(want) && e.contains("manifest.json"), "{e}");
    }
}

/// One RGB camera channel in, a 2-D point out (the claw's shape).
fn image_interface() -> diffbc_runtime::manifest::Interface {
    use diffbc_runtime::manifest::{
        ActionChannel, ActionKind, Channels, Deployment, Interface, ObservationChannel,
    };
    let action = |name: &str| ActionChannel {
        name: name.into(),
        unit: "1".into(),
        target: name.into(),
        kind: ActionKind::Absolute,
        min: 0.0,
        max: 1.0,
        max_step: None,
    };
    Interface {
        channels: Channels {
            observation: vec![ObservationChannel {
                name: "camera.rgb".into(),
                unit: "1".into(),
                source: "camera.rgb".into(),
                shape: vec![3, 64, 64],
                min: 0.0,
                max: 1.0,
            }],
            action: vec![action("point.x"), action("point.y")],
        },
        deployment: Deployment::default(),
    }
}

fn tiny_checkpoint(dir: &Path) -> std::path::PathBuf {
    let mut c = TrainConfig::for_task(&TaskDefaults::image("claw"), Method::Diffusion);
    c.encoder = EncoderConfig::Cnn {
        layers: vec![ConvLayerConfig {
            channels: 4,
            patch: 8,
        }],
        embed: 8,
    };
    c.denoiser = DenoiserConfig::MlpSieve(MlpSieveConfig {
        embed: 8,
        hidden: 16,
        time_frequency: 1.0,
    });
    c.data.samples = 100;
    c.optim.steps = 2;
    c.optim.batch_size = 8;
    c.optim.warmup_steps = 1;
    // Seeded noise images with seeded actions: two training steps only need
    // the shapes right.
    let data = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let obs = ObsSpec::Image {
            channels: 3,
            height: 64,
            width: 64,
        };
        let n = c.data.samples;
        diffbc_train::data::Dataset {
            obs,
            action_dim: 2,
            history: 0,
            horizon: 1,
            frames: (0..4 * obs.len()).map(|_| rng.random::<f32>()).collect(),
            frame_index: (0..n).map(|i| (i % 4) as u32).collect(),
            actions: (0..2 * n).map(|_| rng.random::<f32>()).collect(),
            interface: Some(image_interface()),
        }
    };
    let ck = dir.join("ck");
    diffbc_train::train::train::<burn::backend::Autodiff<Nb>>(
        &c,
        &data,
        &ck,
        &Default::default(),
        Default::default(),
    )
    .expect("train");
    ck
}

#[test]
fn bad_input_fails_cleanly_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let ck = tiny_checkpoint(dir.path());
    let device = Default::default();
    let out = dir.path().join("models").join("m");
    export_checkpoint::<Nb>(&ck, &out, &ExportOptions::default(), &device).expect("export");
    let before = std::fs::read(out.join("manifest.json")).expect("manifest");

    // An existing folder without --force.
    let e = export_checkpoint::<Nb>(&ck, &out, &ExportOptions::default(), &device).unwrap_err();
    assert!(
        matches!(e, ExportError::Exists { .. }) && e.to_string().contains("--force"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(out.join("manifest.json")).expect("manifest"),
        before
    );

    let fresh = dir.path().join("models").join("fresh");
    let leftovers = |parent: &Path| {
        std::fs::read_dir(parent)
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .count()
    };

    // A checkpoint whose config does not match its weights.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("config.json")).expect("cfg"))
            .expect("json");
    let original = cfg.clone();
    cfg["denoiser"]["hidden"] = serde_json::json!(24);
    std::fs::write(ck.join("config.json"), cfg.to_string()).expect("write");
    let e = export_checkpoint::<Nb>(&ck, &fresh, &ExportOptions::default(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.mpk") && e.contains("do not match the config"),
        "{e}"
    );
    assert!(!fresh.exists());
    std::fs::write(ck.join("config.json"), original.to_string()).expect("restore");

    // A missing weight file, then a truncated one.
    let weights = std::fs::read(ck.join("model.mpk")).expect("weights");
    std::fs::remove_file(ck.join("model.mpk")).expect("rm");
    let e = export_checkpoint::<Nb>(&ck, &fresh, &ExportOptions::default(), &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.mpk"), "{e}");
    std::fs::write(ck.join("model.mpk"), &weights[..weights.len() / 2]).expect("truncate");
    let e = export_checkpoint::<Nb>(&ck, &fresh, &ExportOptions::default(), &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.mpk"), "{e}");
    assert!(!fresh.exists());
    assert_eq!(
        leftovers(&dir.path().join("models")),
        0,
        "no temporary folder left behind"
    );

    // With --force the folder is replaced.
    std::fs::write(ck.join("model.mpk"), &weights).expect("restore");
    let forced = ExportOptions {
        force: true,
        ..Default::default()
    };
    export_checkpoint::<Nb>(&ck, &out, &forced, &device).expect("forced export");
    assert!(out.join(files::ENCODER).is_file());
}

/// `models/bench-sieve` is exactly what `diffbc reference bench-sieve`
/// produces: same seed, same graphs, byte for byte.
#[test]
fn the_shipped_bench_sieve_is_reproducible() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/bench-sieve");
    let (want, _) = diffbc_runtime::policy::read_manifest(&shipped).expect("shipped manifest");
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("bench-sieve");
    let got = crate::export_reference(
        crate::Reference::BenchSieve,
        &out,
        0,
        false,
        diffbc_runtime::WeightFormat::F32,
    )
    .expect("reference export");
    assert_eq!(got.encoder.sha256, want.encoder.sha256);
    assert_eq!(got.head.sha256, want.head.sha256);
    assert_eq!(got.observation.frame_shape, vec![30]);
    assert_eq!(got.observation.history, 2);
    assert_eq!(got.action_dim, 9);
    assert!(
        got.provenance.architecture.contains("hidden=512"),
        "{}",
        got.provenance.architecture
    );
    assert_eq!(
        "bench-sieve".parse::<crate::Reference>(),
        Ok(crate::Reference::BenchSieve)
    );
    assert!("kitchen".parse::<crate::Reference>().is_err());
}

/// A mode-conditional policy, exported: the manifest names its `mode[k]`
/// channels, and `Policy` steers it on every engine — towards a mode
/// (plain conditioning), and away from one (steered sampling over the
/// no-mode base) — with the same seed giving the same actions; bad
/// steering is refused, naming what is wrong.
#[test]
fn an_exported_mode_conditional_policy_is_steered_by_the_runtime() {
    use diffbc_runtime::Steering;
    use diffbc_runtime::manifest::{ModeInput, Source};
    use diffbc_train::modes::toy::{direction, three_directions};
    let dir = tempfile::tempdir().expect("tmp");
    let c = diffbc_train::modes::toy::policy_config();
    let ck = dir.path().join("ck");
    diffbc_train::train::train::<burn::backend::Autodiff<Nb>>(
        &c,
        &three_directions(3000, 1).to_dataset(0),
        &ck,
        &Default::default(),
        Default::default(),
    )
    .expect("train");
    let out = dir.path().join("model");
    let m = export_checkpoint::<Nb>(&ck, &out, &ExportOptions::default(), &Default::default())
        .expect("export");
    let modes: Vec<Source> = m
        .channels
        .observation
        .iter()
        .map(|c| c.source())
        .filter(|s| matches!(s, Source::Mode(_)))
        .collect();
    assert_eq!(modes, [Source::Mode(0), Source::Mode(1), Source::Mode(2)]);

    let points: Vec<[f32; 2]> = (0..40)
        .map(|i| {
            let a = i as f32 * 0.61;
            [0.7 * a.cos(), 0.7 * (1.3 * a).sin()]
        })
        .collect();
    // Shares of the three directions over the points, one episode each.
    let shares = |p: &mut Policy| -> [f64; 3] {
        let mut count = [0usize; 3];
        for (i, q) in points.iter().enumerate() {
            p.reset();
            p.reseed(i as u64);
            // The frame's mode channels carry anything: steering decides.
            let a = p.act(&[q[0], q[1], 0.3, 0.3, 0.3]).expect("act");
            count[direction(*q, [a[0], a[1]])] += 1;
        }
        count.map(|c| c as f64 / points.len() as f64)
    };
    for engine in [EngineChoice::Tract, EngineChoice::Native] {
        let mut p = Policy::load(&out, engine).expect("load");
        assert_eq!(p.modes(), 3);
        for k in 0..3 {
            p.set_steering(Some(Steering::towards(3, k, 1.0)))
                .expect("steer");
            let s = shares(&mut p);
            assert!(s[k] >= 0.9, "{engine}: towards {k}: {s:?}");
        }
        p.set_steering(None).expect("none");
        let s = shares(&mut p);
        assert!(s.iter().all(|&v| v >= 0.15), "{engine}: no mode: {s:?}");
        let away = Steering::default().and_away_from(3, 0, 4.0);
        p.set_steering(Some(away.clone())).expect("steer");
        let s = shares(&mut p);
        assert!(
            s[0] <= 0.05 && s[1] >= 0.2 && s[2] >= 0.2,
            "{engine}: away from 0: {s:?}"
        );
        let again = shares(&mut p);
        assert_eq!(s, again, "{engine}: same seeds, same actions");
        // Trained with mode sets, the manifest says so, and anything but
        // mode 0 (the complement, plain conditioning) keeps the other two.
        assert_eq!(p.mode_input(), ModeInput::Set);
        p.set_steering(Some(Steering::anything_but(3, &[0], 1.0)))
            .expect("steer");
        let s = shares(&mut p);
        assert!(
            s[0] <= 0.05 && s[1] >= 0.2 && s[2] >= 0.2,
            "{engine}: anything but 0: {s:?}"
        );
        p.set_steering(Some(away)).expect("steer");
        // Batched draws for one observation: plain conditioning only.
        use rand::SeedableRng;
        let mut noise = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let window = [0.1, 0.1, 0.0, 0.0, 0.0];
        let e = p
            .sample_many(&window, 4, &mut noise)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("plain conditioning"), "{e}");
        p.set_steering(Some(Steering::towards(3, 1, 1.0)))
            .expect("steer");
        let many = p.sample_many(&window, 20, &mut noise).expect("draws");
        let follow = many
            .chunks_exact(2)
            .filter(|a| direction([0.1, 0.1], [a[0], a[1]]) == 1)
            .count();
        assert!(
            follow >= 18,
            "{engine}: {follow} of 20 draws towards mode 1"
        );
        // Refused: wrong length, a negative weight, a non-finite value.
        for (bad, what) in [
            (Steering::towards(2, 0, 1.0), "has 2 values"),
            (Steering::default().and_away_from(3, 1, -1.0), "≥ 0"),
            (
                Steering {
                    towards: vec![f32::NAN, 0.0, 0.0],
                    weight: 1.0,
                    away: Vec::new(),
                },
                "mode[0]",
            ),
        ] {
            let e = p.set_steering(Some(bad)).expect_err("refused").to_string();
            assert!(e.contains(what), "{e}");
        }
    }
    // A policy without mode channels refuses steering.
    let plain = dir.path().join("plain");
    let ck2 = tiny_checkpoint(&dir.path().join("t"));
    export_checkpoint::<Nb>(&ck2, &plain, &ExportOptions::default(), &Default::default())
        .expect("export");
    let mut p = Policy::load(&plain, EngineChoice::Native).expect("load");
    assert_eq!(p.modes(), 0);
    let e = p
        .set_steering(Some(Steering::towards(3, 0, 1.0)))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("no mode[k]"), "{e}");
}
