//! `diffbc bench <model-dir>`: latency and throughput of `Policy::act` at
//! batch 1 for each engine × weight format × thread count × sampler, with
//! FLOPs and weight bytes counted from the graphs, the weight bytes per
//! second that rate streams beside this core's measured read bandwidth for a
//! buffer of that size, and allocations per action counted by the binary's
//! allocator. The reduced-precision formats of an f32
//! folder are written from its graphs into a temporary folder
//! ([`diffbc_runtime::weights::write_variant`]), so one shipped folder
//! measures every format.

use anyhow::{Context, Result, bail};
use diffbc_runtime::policy::{
    flops_per_decision, weight_bytes_per_call, weight_bytes_per_call_f32,
};
use diffbc_runtime::{EngineChoice, Policy, PolicyOptions, SamplerConfig, WeightFormat};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One row of the table (and one JSON record).
#[derive(Debug, Clone, Serialize)]
pub struct BenchRecord {
    /// Engine name.
    pub engine: String,
    /// How the graphs store their matrix weights.
    pub weights: WeightFormat,
    /// Bytes of constants one denoiser (head) call reads, counted from the
    /// graph as the engine holds its weights: the native engine in their
    /// stored precision (int8 scales, biases and norms in f32, a last
    /// panel's padding included); tract widens f16 and int8 to f32 at load,
    /// and ONNX Runtime folds f16's `Cast` into f32 weights and keeps int8
    /// as 8-bit (`MatMulNBits`). `None` when the native compiler, which
    /// counts them, cannot read the graph.
    pub weight_bytes_per_call: Option<usize>,
    /// Weight bytes read per second at this rate: every call reads every
    /// weight once (the encoder once per decision), at any batch.
    pub weight_gb_per_s: Option<f64>,
    /// This core's read bandwidth for a buffer of `weight_bytes_per_call`
    /// bytes, measured in the same run ([`diffbc_runtime::native::read_bandwidth_gbs`]):
    /// the bound on `weight_gb_per_s` for a call that streams its weights.
    pub read_gb_per_s: Option<f64>,
    /// Sampler label.
    pub sampler: String,
    /// Threads the engine may use.
    pub threads: usize,
    /// Network evaluations per action.
    pub network_calls: usize,
    /// Rows per network evaluation (KDE candidates, ×2 with guidance).
    pub batch: usize,
    /// Decisions per second.
    pub actions_per_s: f64,
    /// Median latency of one `act`, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Achieved GFLOP/s (FLOPs per action × actions/s).
    pub gflops: Option<f64>,
    /// FLOPs of one action, counted from the graphs.
    pub flops_per_action: Option<u64>,
    /// Heap allocations per `act` at steady state; `None` (null) when the
    /// binary was built without the counting allocator (feature
    /// `count-allocations`).
    pub allocs_per_act: Option<f64>,
    /// Timed actions.
    pub iterations: usize,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// Engines, in table order.
    pub engines: Vec<EngineChoice>,
    /// Weight formats; empty: every format for an f32 folder, else the
    /// folder's own.
    pub weights: Vec<WeightFormat>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Samplers.
    pub samplers: Vec<SamplerConfig>,
    /// Timed time per row (after warm-up).
    pub seconds: Duration,
    /// Fewest timed actions per row.
    pub min_iterations: usize,
    /// Time to measure the read bandwidth for each distinct weight size.
    pub bandwidth_time: Duration,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Measure one row.
fn measure(
    dir: &Path,
    engine: EngineChoice,
    threads: usize,
    sampler: SamplerConfig,
    plan: &BenchPlan,
) -> Result<BenchRecord> {
    let mut policy = Policy::load_with(
        dir,
        &PolicyOptions {
            engine,
            threads,
            sampler: Some(sampler),
            seed: 0,
        },
    )?;
    // A bench times decisions: a chunked policy decides on every call here.
    policy.set_execute(1)?;
    let manifest = policy.manifest().clone();
    let schedule = diffbc_runtime::policy::read_manifest(dir)?.1;
    let flops = flops_per_decision(dir, &manifest, &schedule, &sampler);
    let bytes = match engine {
        EngineChoice::Native => weight_bytes_per_call(dir, &manifest),
        EngineChoice::Ort(_) if manifest.weights == WeightFormat::Int8 => {
            weight_bytes_per_call(dir, &manifest)
        }
        _ => weight_bytes_per_call_f32(dir, &manifest),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let f = policy.frame_len();
    let observations: Vec<Vec<f32>> = (0..16)
        .map(|_| (0..f).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect();
    // Warm-up: buffers, caches, thread pools.
    let warm = Instant::now();
    let mut i = 0;
    while i < 3 || (warm.elapsed() < Duration::from_millis(200) && i < 200) {
        policy.act(&observations[i % observations.len()])?;
        i += 1;
    }
    let mut times = Vec::with_capacity(plan.min_iterations.max(1024));
    let allocs_before = diffbc_alloc_count::allocations();
    let start = Instant::now();
    let budget = plan.seconds;
    let mut n = 0;
    while n < plan.min_iterations || start.elapsed() < budget {
        let t = Instant::now();
        let a = policy.act(&observations[n % observations.len()])?;
        std::hint::black_box(a);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        n += 1;
        if times.len() == times.capacity() {
            // Keep the vector's growth out of the allocation count.
            break;
        }
    }
    let total = start.elapsed().as_secs_f64();
    let allocs = diffbc_alloc_count::allocations() - allocs_before;
    times.sort_by(f64::total_cmp);
    let actions_per_s = n as f64 / total;
    let network_calls = sampler.network_calls(&schedule);
    Ok(BenchRecord {
        engine: policy.engine_name(),
        weights: manifest.weights,
        weight_bytes_per_call: bytes.map(|(_, head)| head),
        weight_gb_per_s: bytes
            .map(|(enc, head)| (enc + network_calls * head) as f64 * actions_per_s / 1e9),
        read_gb_per_s: None,
        sampler: sampler.label(),
        threads,
        network_calls,
        batch: sampler.rows_per_decision(),
        actions_per_s,
        p50_us: percentile(&times, 0.5),
        p99_us: percentile(&times, 0.99),
        gflops: flops.map(|f| f as f64 * actions_per_s / 1e9),
        flops_per_action: flops,
        allocs_per_act: diffbc_alloc_count::counting().then(|| allocs as f64 / n as f64),
        iterations: n,
    })
}

/// The folders to measure, one per weight format: `dir` itself for its own
/// format, and for an f32 folder the reduced formats written into `scratch`.
fn folders(dir: &Path, plan: &BenchPlan, scratch: &Path) -> Result<Vec<(WeightFormat, PathBuf)>> {
    let own = diffbc_runtime::policy::read_manifest(dir)?.0.weights;
    let formats: Vec<WeightFormat> = if plan.weights.is_empty() {
        if own.is_f32() {
            WeightFormat::ALL.to_vec()
        } else {
            vec![own]
        }
    } else {
        plan.weights.clone()
    };
    let mut out = Vec::new();
    for w in formats {
        if w == own {
            out.push((w, dir.to_path_buf()));
        } else if own.is_f32() {
            let d = scratch.join(w.name());
            std::fs::create_dir_all(&d).with_context(|| d.display().to_string())?;
            diffbc_runtime::weights::write_variant(dir, &d, w)?;
            out.push((w, d));
        } else {
            bail!(
                "{}: its weights are {own}; {w} can only be measured from an f32 folder",
                dir.display()
            );
        }
    }
    Ok(out)
}

/// Run every row of `plan`; rows that cannot run (a missing engine, a
/// format an engine refuses) are reported and skipped.
pub fn run(dir: &Path, plan: &BenchPlan) -> Result<Vec<BenchRecord>> {
    // Fail early, naming the file, when `dir` is not a policy folder.
    diffbc_runtime::policy::read_manifest(dir)?;
    let scratch = tempfile::tempdir().context("a temporary folder for the weight formats")?;
    let folders = folders(dir, plan, scratch.path())?;
    let mut records = Vec::new();
    let mut last_error = None;
    for &engine in &plan.engines {
        'format: for (weights, folder) in &folders {
            for &threads in &plan.threads {
                if engine == EngineChoice::Native && threads > 1 {
                    tracing::info!(
                        "native engine: single-threaded by design; no {threads}-thread row"
                    );
                    continue;
                }
                for &sampler in &plan.samplers {
                    match measure(folder, engine, threads, sampler, plan) {
                        Ok(r) => {
                            tracing::info!(
                                "{} {} {} threads={}: {:.1} actions/s",
                                r.engine,
                                r.weights,
                                r.sampler,
                                r.threads,
                                r.actions_per_s
                            );
                            records.push(r);
                        }
                        Err(e) => {
                            tracing::warn!("{engine} with {weights} weights skipped: {e:#}");
                            last_error = Some(e);
                            continue 'format;
                        }
                    }
                }
            }
        }
    }
    if let (true, Some(e)) = (records.is_empty(), last_error) {
        return Err(e);
    }
    read_bandwidths(&mut records, plan.bandwidth_time);
    Ok(records)
}

/// Fill in each row's read bandwidth, measured once per distinct weight
/// size, after the timed rows (so that it does not heat or load the core
/// differently for some rows than for others).
fn read_bandwidths(records: &mut [BenchRecord], time: Duration) {
    let mut measured: Vec<(usize, f64)> = Vec::new();
    for r in records.iter_mut() {
        let Some(bytes) = r.weight_bytes_per_call else {
            continue;
        };
        let gbs = match measured.iter().find(|(b, _)| *b == bytes) {
            Some(&(_, g)) => g,
            None => {
                let g = diffbc_runtime::native::read_bandwidth_gbs(bytes, time);
                tracing::info!("read bandwidth over {bytes} bytes: {g:.1} GB/s");
                measured.push((bytes, g));
                g
            }
        };
        r.read_gb_per_s = Some(gbs);
    }
}

/// Native rows at batch 1 on one thread with the sampler `label`: each
/// reduced format's actions/s over f32's, fastest first.
pub fn speedups(records: &[BenchRecord], label: &str) -> Vec<(WeightFormat, f64)> {
    let row = |w: WeightFormat| {
        records.iter().find(|r| {
            r.engine == "native" && r.threads == 1 && r.sampler == label && r.weights == w
        })
    };
    let Some(base) = row(WeightFormat::F32) else {
        return Vec::new();
    };
    let mut out: Vec<(WeightFormat, f64)> = WeightFormat::ALL
        .into_iter()
        .filter(|w| !w.is_f32())
        .filter_map(|w| row(w).map(|r| (w, r.actions_per_s / base.actions_per_s)))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// The table as Markdown.
pub fn markdown(records: &[BenchRecord], peak_gflops: f64) -> String {
    let mut s = String::from(
        "| engine | weights | sampler | threads | net calls × rows | actions/s | p50 µs | p99 µs | MFLOP/action | GFLOP/s | % of batch-1 ceiling | weight bytes/call | weight GB/s | read GB/s at that size | % of read GB/s | allocs/act |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in records {
        let (mflop, gf, pct) = match (r.flops_per_action, r.gflops) {
            (Some(f), Some(g)) => (
                format!("{:.1}", f as f64 / 1e6),
                format!("{g:.2}"),
                if r.batch == 1 {
                    format!("{:.0} %", 100.0 * g / (peak_gflops * r.threads as f64))
                } else {
                    "batched".into()
                },
            ),
            _ => ("n/a".into(), "n/a".into(), "n/a".into()),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} × {} | {:.1} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.engine,
            r.weights,
            r.sampler,
            r.threads,
            r.network_calls,
            r.batch,
            r.actions_per_s,
            r.p50_us,
            r.p99_us,
            mflop,
            gf,
            pct,
            r.weight_bytes_per_call
                .map_or_else(|| "n/a".to_string(), |b| format!("{:.2} MB", b as f64 / 1e6)),
            r.weight_gb_per_s
                .map_or_else(|| "n/a".to_string(), |g| format!("{g:.1}")),
            r.read_gb_per_s
                .map_or_else(|| "n/a".to_string(), |g| format!("{g:.1}")),
            match (r.weight_gb_per_s, r.read_gb_per_s) {
                (Some(w), Some(m)) if m > 0.0 => format!("{:.0} %", 100.0 * w / m),
                _ => "n/a".to_string(),
            },
            r.allocs_per_act
                .map_or_else(|| "not counted".to_string(), |a| format!("{a:.1}"))
        ));
    }
    s
}
