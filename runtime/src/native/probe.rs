//! The kernel's compute ceiling on this CPU, for `bench` to print beside
//! what a policy gets.

use super::*;

/// Throughput of this engine's matrix kernel ([`Kernel::detect`]) on one
/// thread, on a problem that fits in L1 (GFLOP/s): the practical compute
/// ceiling of one core for these graphs. `rows` = 1 is the batch-1 case a control loop runs (each weight
/// is used once per call, so loads bound it); `rows` = 2 reuses each weight.
pub fn kernel_peak_gflops(rows: usize, duration: std::time::Duration) -> f64 {
    let (k, n) = (64, 128);
    let x: Vec<f32> = (0..rows * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.01).collect();
    let mut y = vec![0.0f32; rows * n];
    let kernel = Kernel::detect();
    let w = kernel.pack(&w, k, n);
    let start = std::time::Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < duration {
        for _ in 0..256 {
            kernel.gemm_matrix(
                std::hint::black_box(&x),
                Matrix::F32(&w),
                None,
                &mut y,
                k,
                n,
            );
            std::hint::black_box(&mut y);
        }
        calls += 256;
    }
    (2 * rows * k * n) as f64 * calls as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// Read bandwidth of one core over a buffer of `bytes` (GB/s): the buffer
/// summed with the native kernel's widest loads ([`Kernel::read_sum`]) over
/// and over for `duration`, in timed batches of at least 4 MB read; the best
/// batch. A buffer the size of a policy's weights measures the bound on
/// streaming those weights once per call: from L1, L2 or beyond, whichever
/// that size lands in on this CPU.
pub fn read_bandwidth_gbs(bytes: usize, duration: std::time::Duration) -> f64 {
    let len = (bytes / 4).max(64);
    let data: Vec<f32> = (0..len).map(|i| (i % 7) as f32).collect();
    let kernel = Kernel::detect();
    let passes = (4 << 20) / (4 * len) + 1;
    std::hint::black_box(kernel.read_sum(&data));
    let start = std::time::Instant::now();
    let mut best = 0.0f64;
    loop {
        let t = std::time::Instant::now();
        for _ in 0..passes {
            std::hint::black_box(kernel.read_sum(std::hint::black_box(&data)));
        }
        let rate = (4 * len * passes) as f64 / t.elapsed().as_secs_f64() / 1e9;
        best = best.max(rate);
        if start.elapsed() >= duration {
            return best;
        }
    }
}
