//! `Policy::act` allocates nothing at steady state on the native engine, for
//! every sampler, proven with a counting global allocator. (tract and ONNX
//! Runtime allocate inside their own run calls; `diffbc bench` reports how
//! much, in its allocs/act column.)
#![allow(unsafe_code)]

use diffbc_runtime::{EngineChoice, Policy, PolicyOptions, SamplerConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

thread_local! {
    /// Allocations made by this thread while counting is on.
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
}

struct Counting;

fn note() {
    // `try_with`: the allocator may run while thread-locals are torn down.
    let _ = COUNT.try_with(|c| {
        if let Some(n) = c.get() {
            c.set(Some(n + 1));
        }
    });
}

// SAFETY: forwards every call to `System` unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations this thread makes while running `f`.
fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.with(|c| c.set(Some(0)));
    let r = f();
    let n = COUNT.with(|c| c.replace(None)).unwrap_or(0);
    (r, n)
}

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
