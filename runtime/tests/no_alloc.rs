//! `Policy::act` allocates nothing at steady state on the native engine, for
//! every sampler, proven with a counting global allocator. (tract and ONNX
//! Runtime allocate inside their own run calls; `diffbc bench` reports how
//! much, in its allocs/act column.)

use diffbc_alloc_count::count;
use diffbc_runtime::{EngineChoice, Policy, PolicyOptions, SamplerConfig, Steering};
use std::path::PathBuf;

#[global_allocator]
static ALLOCATOR: diffbc_alloc_count::Counting = diffbc_alloc_count::Counting;

fn model(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name)
}

#[test]
fn act_allocates_nothing_at_steady_state_with_every_sampler() {
    let samplers = [
        SamplerConfig::ddpm(),
        SamplerConfig::diffusion_x(8),
        SamplerConfig::kde(10, 0.1),
        SamplerConfig::ddim(10),
        SamplerConfig::ddim(10).with_guidance(1.0),
        SamplerConfig::diffusion_x(4).with_guidance(4.0),
    ];
    for (name, frame) in [("bench-sieve", 30usize), ("claw", 3 * 64 * 64)] {
        for sampler in samplers {
            let mut policy = Policy::load_with(
                &model(name),
                &PolicyOptions {
                    engine: EngineChoice::Native,
                    sampler: Some(sampler),
                    seed: 7,
                    ..PolicyOptions::default()
                },
            )
            .expect("load");
            let observations: Vec<Vec<f32>> = (0..4)
                .map(|i| {
                    (0..frame)
                        .map(|j| ((i * 31 + j) % 17) as f32 / 17.0)
                        .collect()
                })
                .collect();
            // Warm-up: the first call may size buffers.
            policy.act(&observations[0]).expect("act");
            assert_steady_state_allocates_nothing(
                &mut policy,
                &observations,
                &format!("{name} with {}", sampler.label()),
            );
            // The test's counter works: an allocation under `count` is seen.
            let (_, seen) = count(|| std::hint::black_box(vec![1u8; 16]));
            assert_eq!(seen, 1);
            // And so does a reset (new episode), which must not allocate either.
            policy.reset();
            let (_, after_reset) = count(|| policy.act(&observations[1]).map(|a| a[0]));
            assert_eq!(after_reset, 0, "{name}: reset + act allocated");
        }
    }
}

/// A steered `act` (towards one mode at weight 3 and away from another, so
/// every decision encodes the no-mode base and two variants and combines
/// them in the sampler) allocates nothing at steady state either: its
/// buffers are sized by `set_steering`. The policy is the shipped
/// bench-sieve with its last three observation channels declared `mode[k]`
/// (channel sources live in the manifest; the graphs are unchanged).
#[test]
fn a_steered_act_allocates_nothing_at_steady_state() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("m");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for f in ["encoder.onnx", "denoiser.onnx"] {
        std::fs::copy(model("bench-sieve").join(f), dir.join(f)).expect("copy");
    }
    let text = std::fs::read_to_string(model("bench-sieve").join("manifest.json")).expect("read");
    let mut m: serde_json::Value = serde_json::from_str(&text).expect("json");
    let channels = m["channels"]["observation"]
        .as_array_mut()
        .expect("channels");
    let n = channels.len();
    for (k, c) in channels[n - 3..].iter_mut().enumerate() {
        c["source"] = format!("mode[{k}]").into();
    }
    std::fs::write(dir.join("manifest.json"), m.to_string()).expect("write");
    let samplers = [
        SamplerConfig::ddpm(),
        SamplerConfig::diffusion_x(8),
        SamplerConfig::kde(10, 0.1),
        SamplerConfig::ddim(10),
    ];
    let steering = Steering {
        towards: vec![1.0, 0.0, 0.0],
        weight: 3.0,
        away: vec![(vec![0.0, 1.0, 0.0], 2.0)],
    };
    for sampler in samplers {
        let mut policy = Policy::load_with(
            &dir,
            &PolicyOptions {
                engine: EngineChoice::Native,
                sampler: Some(sampler),
                seed: 3,
                ..PolicyOptions::default()
            },
        )
        .expect("load");
        assert_eq!(policy.modes(), 3);
        policy.set_steering(Some(steering.clone())).expect("steer");
        let frame = policy.frame_len();
        let observations: Vec<Vec<f32>> = (0..4)
            .map(|i| {
                (0..frame)
                    .map(|j| ((i * 7 + j) % 11) as f32 / 11.0)
                    .collect()
            })
            .collect();
        let steered = policy.act(&observations[0]).expect("act").to_vec();
        // The steered path is the one measured: the same seed unsteered acts otherwise.
        policy.set_steering(None).expect("unsteer");
        policy.reset();
        policy.reseed(3);
        let plain = policy.act(&observations[0]).expect("act").to_vec();
        assert_ne!(
            steered,
            plain,
            "{}: steering changed nothing",
            sampler.label()
        );
        policy.set_steering(Some(steering.clone())).expect("steer");
        policy.act(&observations[1]).expect("act");
        assert_steady_state_allocates_nothing(
            &mut policy,
            &observations,
            &format!("steered with {}", sampler.label()),
        );
    }
}

/// Twelve actions on `observations` (cycled) allocate nothing, and give finite values.
fn assert_steady_state_allocates_nothing(
    policy: &mut Policy,
    observations: &[Vec<f32>],
    what: &str,
) {
    let (sum, allocations) = count(|| {
        let mut sum = 0.0f32;
        for o in observations.iter().cycle().take(12) {
            sum += policy.act(o).expect("act").iter().sum::<f32>();
        }
        sum
    });
    assert!(sum.is_finite());
    assert_eq!(
        allocations, 0,
        "{what}: {allocations} allocations in 12 steady-state actions"
    );
}
