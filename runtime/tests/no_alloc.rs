//! `Policy::act` allocates nothing at steady state on the native engine, for
//! every sampler, proven with a counting global allocator. (tract and ONNX
//! Runtime allocate inside their own run calls; `diffbc bench` reports how
//! much, in its allocs/act column.)

use diffbc_alloc_count::count;
use diffbc_runtime::{EngineChoice, Policy, PolicyOptions, SamplerConfig};
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
            let (sum, allocations) = count(|| {
                let mut sum = 0.0f32;
                for o in observations.iter().cycle().take(12) {
                    sum += policy.act(o).expect("act").iter().sum::<f32>();
                }
                sum
            });
            assert!(sum.is_finite());
            assert_eq!(
                allocations,
                0,
                "{name} with {}: {allocations} allocations in 12 steady-state actions",
                sampler.label()
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
