//! `bench`'s allocations column in a build that counts: the test binary
//! installs the counting allocator, as `--features count-allocations` does
//! for the binaries.

#[global_allocator]
static ALLOCATOR: diffbc_alloc_count::Counting = diffbc_alloc_count::Counting;

use diffbc_deploy::bench::{BenchPlan, markdown, run};
use diffbc_runtime::{EngineChoice, SamplerConfig};
use std::path::Path;
use std::time::Duration;

#[test]
fn bench_counts_allocations_per_action_when_the_allocator_counts() {
    assert!(diffbc_alloc_count::counting());
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/bench-sieve");
    let plan = BenchPlan {
        engines: vec![EngineChoice::Native, EngineChoice::Tract],
        threads: vec![1],
        samplers: vec![SamplerConfig::ddpm()],
        seconds: Duration::from_millis(50),
        min_iterations: 5,
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
