//! `bench`'s allocations column in a build that counts: the test binary
//! installs the counting allocator, as `--features count-allocations` does
//! for the binaries. Its rows compare the native engine with tract, so it
//! is built with the `tract` feature (the default).
#![cfg(feature = "tract")]

#[global_allocator]
static ALLOCATOR: diffbc_alloc_count::Counting = diffbc_alloc_count::Counting;

use diffbc_deploy::bench::{BenchPlan, markdown, run};
use diffbc_runtime::{EngineChoice, SamplerConfig, WeightFormat};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// The allocation count is process-wide: one bench at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn bench_counts_allocations_per_action_when_the_allocator_counts() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(diffbc_alloc_count::counting());
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/bench-sieve");
    let plan = BenchPlan {
        engines: vec![EngineChoice::Native, EngineChoice::Tract],
        weights: vec![WeightFormat::F32],
        threads: vec![1],
        samplers: vec![SamplerConfig::ddpm()],
        seconds: Duration::from_millis(50),
        min_iterations: 5,
        bandwidth_time: Duration::from_millis(20),
    };
    let records = run(&model, &plan).expect("bench");
    assert_eq!(records.len(), 2);
    // The native engine allocates nothing per action; tract does.
    assert_eq!(records[0].allocs_per_act, Some(0.0), "{:?}", records[0]);
    assert!(
        records[1].allocs_per_act.is_some_and(|a| a > 0.0),
        "{:?}",
        records[1]
    );
    let table = markdown(&records, 100.0);
    assert!(!table.contains("not counted"), "{table}");
}

/// One run measures every weight format of an f32 folder: the int8 rows come
/// from graphs written at bench time, the native engine reads a quarter of the
/// f32 bytes per call (plus the per-channel scales, biases and norms), and
/// still allocates nothing per action.
#[test]
fn bench_measures_every_weight_format_from_one_f32_folder() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/bench-sieve");
    let plan = BenchPlan {
        engines: vec![EngineChoice::Native, EngineChoice::Tract],
        weights: Vec::new(),
        threads: vec![1],
        samplers: vec![SamplerConfig::diffusion_x(1)],
        seconds: Duration::from_millis(20),
        min_iterations: 2,
        bandwidth_time: Duration::from_millis(20),
    };
    let records = run(&model, &plan).expect("bench");
    let rows: Vec<(&str, WeightFormat)> = records
        .iter()
        .map(|r| (r.engine.as_str(), r.weights))
        .collect();
    assert_eq!(
        rows,
        [
            ("native", WeightFormat::F32),
            ("native", WeightFormat::F16),
            ("native", WeightFormat::Int8),
            ("tract", WeightFormat::F32),
            ("tract", WeightFormat::F16),
            ("tract", WeightFormat::Int8),
        ]
    );
    let bytes: Vec<usize> = records[..3]
        .iter()
        .map(|r| r.weight_bytes_per_call.expect("native counts its bytes"))
        .collect();
    // bench-sieve's denoiser holds about 3.2 MB of f32 matrix weights.
    assert!(bytes[0] > 3_000_000, "{bytes:?}");
    assert!(
        bytes[1] * 2 < bytes[0] + 100_000 && bytes[1] * 2 > bytes[0] - 100_000,
        "{bytes:?}"
    );
    assert!(
        bytes[2] * 4 < bytes[0] + 200_000 && bytes[2] * 3 < bytes[0],
        "{bytes:?}"
    );
    // tract widens every format to f32 at load: the f32 bytes, unpadded.
    let tract: Vec<usize> = records[3..]
        .iter()
        .map(|r| r.weight_bytes_per_call.expect("counted for tract too"))
        .collect();
    assert_eq!(tract, [tract[0]; 3], "{tract:?}");
    assert!(
        tract[0] <= bytes[0] && tract[0] + 50_000 > bytes[0],
        "{tract:?} {bytes:?}"
    );
    for r in &records {
        assert!(r.actions_per_s > 0.0, "{r:?}");
        if r.engine == "native" {
            assert_eq!(r.allocs_per_act, Some(0.0), "{r:?}");
        }
        // Every row: the bytes it streams per second and the core's read
        // bandwidth for that many bytes, both measured.
        assert!(r.weight_gb_per_s.is_some_and(|g| g > 0.0), "{r:?}");
        assert!(r.read_gb_per_s.is_some_and(|g| g > 0.0), "{r:?}");
    }
    let label = SamplerConfig::diffusion_x(1).label();
    let ratios = diffbc_deploy::bench::speedups(&records, &label);
    assert_eq!(ratios.len(), 2, "{ratios:?}");
    let table = markdown(&records, 100.0);
    assert!(table.contains("| native | int8 |"), "{table}");
    assert!(
        table.contains("| read GB/s at that size | % of read GB/s |"),
        "{table}"
    );
    assert!(!table.contains("n/a"), "{table}");
}
