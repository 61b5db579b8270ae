//! The kernel's compute ceiling on this CPU, for `bench` to print beside
//! what a policy gets.

use super::*;

/// Throughput of this engine's matrix kernel ([`Kernel::detect`]) on one
/// thread, on a problem that fits in L1 (GFLOP/s): the practical compute
/// ceiling of one core for these graphs. `rows` = 1 is the batch-1 case a control loop runs (each weight
/// is used once per call, so loads bound it); `rows` = 2 reuses each weight.
pub fn kernel_peak_gflops(rows: usize, duration: std::time::Duration) -> f64 {
    let (k, n) = (128, 32);
    let x: Vec<f32> = (0..rows * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.01).collect();
    let mut y = vec![0.0f32; rows * n];
    let kernel = Kernel::detect();
    let start = std::time::Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < duration {
        for _ in 0..256 {
            kernel.gemm(std::hint::black_box(&x), &w, None, &mut y, k, n);
            std::hint::black_box(&mut y);
        }
        calls += 256;
    }
    (2 * rows * k * n) as f64 * calls as f64 / start.elapsed().as_secs_f64() / 1e9
}
