//! The deploy commands — `run`, `bench`, `bench-bridge`, `sim-arm` — and the
//! sampler options they share: one implementation, linked by the full
//! `diffbc` binary and by the burn-free `diffbc-deploy`.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use diffbc_runtime::SamplerConfig;
use std::path::PathBuf;

pub use diffbc_runtime::DEFAULT_KDE_BANDWIDTH;

#[derive(Args, Debug)]
pub struct SimArmArgs {
    /// The arm task's world (obstacle, start pose from --seed); `none` = the plain arm.
    #[arg(long, value_enum, default_value = "arm")]
    pub task: SimTaskArg,
    /// Episode seed (start pose).
    #[arg(long, default_value_t = diffbc_tasks::arm::eval::EVAL_SEED_BASE)]
    pub seed: u64,
    /// Device seconds per wall-clock second (a host must scale its rate by the same factor; at most 1000).
    #[arg(long, default_value = "1", value_parser = diffbc_bridge::checked::flag::time_scale, allow_hyphen_values = true)]
    pub time_scale: f64,
    /// Stable path for hosts to open (a symlink to the pty slave). Must not
    /// exist, or be a symlink into /dev (a stale link); anything else is refused.
    #[arg(long, default_value = "/tmp/diffbc-arm")]
    pub link: PathBuf,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_parser = diffbc_bridge::checked::flag::seconds, allow_hyphen_values = true)]
    pub seconds: Option<std::time::Duration>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Exported policy folder.
    pub model: PathBuf,
    /// Serial port (e.g. /dev/ttyACM0, or the path `diffbc sim-arm` printed).
    #[arg(long)]
    pub port: String,
    /// Baud rate (ignored by pseudo-terminals).
    #[arg(long, default_value_t = 1_000_000)]
    pub baud: u32,
    /// Control rate (Hz, 1–500); default: the rate the policy was trained at
    /// (manifest `deployment.control_hz`). Another rate needs `--force`.
    #[arg(long, value_parser = diffbc_bridge::checked::flag::rate_hz, allow_hyphen_values = true)]
    pub rate: Option<f64>,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_parser = diffbc_bridge::checked::flag::seconds, allow_hyphen_values = true)]
    pub seconds: Option<std::time::Duration>,
    /// Largest change of a joint target per tick relative to the measured
    /// position (rad, > 0); default: the largest the demonstrations show
    /// (manifest `deployment.max_step`), else 0.2. A tighter bound than the
    /// demonstrations' clips moves the policy learned and needs `--force`.
    #[arg(long, value_parser = diffbc_bridge::checked::flag::max_step, allow_hyphen_values = true)]
    pub max_step: Option<f32>,
    /// Run at a rate or step bound that contradicts the manifest.
    #[arg(long)]
    pub force: bool,
    /// Engine (native allocates nothing at steady state; tract, ort-cpu, ort-cuda[:N], …).
    #[arg(long, default_value = "native")]
    pub engine: diffbc_runtime::EngineChoice,
    /// Noise seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Task whose host-side state the policy observes: `arm` supplies the arm
    /// task's `task.done[i]` channels (computed from the measured joint
    /// positions); `none` = the policy observes the arm only. Default: the
    /// manifest's `provenance.task` when the policy observes that task's
    /// state, else `none`.
    #[arg(long, value_enum)]
    pub task: Option<SimTaskArg>,
    /// Sampler (default: the manifest's).
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Exported policy folder, e.g. models/bench-sieve.
    pub model: PathBuf,
    /// Engines to measure (tract, native, ort-cpu, ort-cuda[:N], ort-tensorrt[:N]);
    /// repeat for several. Default: native, tract, and ort-cpu when built with `--features ort`.
    #[arg(long = "engine")]
    pub engines: Vec<diffbc_runtime::EngineChoice>,
    /// Thread counts; repeat for several. Default: 1 and all cores.
    #[arg(long = "threads")]
    pub threads: Vec<usize>,
    /// Timed seconds per row.
    #[arg(long, default_value = "1", value_parser = diffbc_bridge::checked::flag::seconds, allow_hyphen_values = true)]
    pub seconds: std::time::Duration,
    /// Fewest timed actions per row.
    #[arg(long, default_value_t = 20)]
    pub min_iterations: usize,
    /// Also write the table as JSON records here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Weight formats to measure; repeat for several. Default: every format
    /// (f32, f16, int8) for an f32 folder — the reduced ones written from its
    /// graphs into a temporary folder — and the folder's own format otherwise.
    #[arg(long = "weights", value_enum)]
    pub weights: Vec<WeightsArg>,
    /// Samplers (default: DDPM, Diffusion-X, KDE, DDIM).
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// How the exported graphs store their matrix weights.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsArg {
    /// 32-bit floats (the trained values).
    F32,
    /// Half precision, f32 accumulation.
    F16,
    /// Symmetric int8 with one f32 scale per output channel, f32 accumulation.
    Int8,
}

impl From<WeightsArg> for diffbc_runtime::WeightFormat {
    fn from(w: WeightsArg) -> Self {
        match w {
            WeightsArg::F32 => Self::F32,
            WeightsArg::F16 => Self::F16,
            WeightsArg::Int8 => Self::Int8,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimTaskArg {
    /// The arm task: five targets around an obstacle.
    Arm,
    /// The plain arm: no obstacle, start at 0.
    None,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKindArg {
    /// Plain DDPM over T steps.
    Ddpm,
    /// DDPM then M extra noiseless steps at τ = 1.
    DiffusionX,
    /// N candidates, keep the densest under a Gaussian KDE.
    Kde,
    /// Deterministic DDIM over S steps.
    Ddim,
}

#[derive(Args, Debug, Clone)]
pub struct SamplerArgs {
    /// Sampler(s) to use; repeat for several.
    #[arg(long = "sampler", value_enum)]
    pub samplers: Vec<SamplerKindArg>,
    /// Diffusion-X extra steps M (default 8; on the arm task 2, plus an M = 8 row).
    #[arg(long)]
    pub extra_steps: Option<usize>,
    /// KDE candidates N (default 50; 10 on the arm task, where KDE runs every control tick).
    #[arg(long)]
    pub candidates: Option<usize>,
    /// KDE bandwidth (normalised action units).
    #[arg(long, default_value_t = DEFAULT_KDE_BANDWIDTH)]
    pub bandwidth: f32,
    /// DDIM steps S.
    #[arg(long, default_value_t = 10)]
    pub ddim_steps: usize,
    /// Diffusion-X steps after DDIM (0 = plain DDIM).
    #[arg(long, default_value_t = 0)]
    pub ddim_extra_steps: usize,
    /// Classifier-free guidance weight w.
    #[arg(long, default_value_t = 0.0)]
    pub guidance: f32,
}

impl SamplerArgs {
    pub fn configs(&self, default: &[SamplerKindArg]) -> Vec<SamplerConfig> {
        let candidates = self.candidates.unwrap_or(50);
        let kinds = if self.samplers.is_empty() {
            default
        } else {
            &self.samplers
        };
        kinds
            .iter()
            .map(|k| {
                match k {
                    SamplerKindArg::Ddpm => SamplerConfig::ddpm(),
                    SamplerKindArg::DiffusionX => {
                        SamplerConfig::diffusion_x(self.extra_steps.unwrap_or(8))
                    }
                    SamplerKindArg::Kde => SamplerConfig::kde(candidates, self.bandwidth),
                    SamplerKindArg::Ddim => SamplerConfig {
                        extra_steps: self.ddim_extra_steps,
                        ..SamplerConfig::ddim(self.ddim_steps)
                    },
                }
                .with_guidance(self.guidance)
            })
            .collect()
    }
}

/// A flag set by Ctrl-C (SIGINT) or SIGTERM.
pub fn interrupt_flag() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).context("installing the Ctrl-C handler")?;
    }
    Ok(flag)
}

pub fn sim_arm(a: SimArmArgs) -> Result<()> {
    use std::sync::atomic::Ordering;
    let stop = interrupt_flag()?;
    let mut config = match a.task {
        SimTaskArg::Arm => diffbc_tasks::arm::ArmTask::default().sim_config(a.seed),
        SimTaskArg::None => diffbc_emulator::SimConfig::default_arm(),
    };
    config.time_scale = a.time_scale;
    let sim = diffbc_emulator::spawn_pty(config.clone(), &a.link)
        .with_context(|| format!("opening a pseudo-terminal at {}", a.link.display()))?;
    println!("{}", sim.path.display());
    tracing::info!(
        joints = config.joints(),
        obstacles = config.obstacles.len(),
        "emulated arm ready at {} (Ctrl-C to stop)",
        sim.path.display()
    );
    let start = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) && a.seconds.is_none_or(|s| start.elapsed() < s) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let received = sim.shared.commands_total();
    let faults = sim
        .shared
        .faults
        .lock()
        .map(|f| {
            f.iter()
                .map(|f| format!("{:?}", f.code))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    sim.shutdown();
    println!("commands received: {received}; faults: {faults:?}");
    Ok(())
}

pub fn run(a: RunArgs) -> Result<()> {
    let stop = interrupt_flag()?;
    let sampler = (!a.sampler.samplers.is_empty()).then(|| a.sampler.configs(&[])[0]);
    let policy = diffbc_runtime::Policy::load_with(
        &a.model,
        &diffbc_runtime::PolicyOptions {
            engine: a.engine,
            sampler,
            seed: a.seed,
            ..Default::default()
        },
    )?;
    tracing::info!(
        "policy {} on {} with {}",
        a.model.display(),
        policy.engine_name(),
        policy.sampler_config().label()
    );
    let (rate_hz, max_step) =
        run_settings(&policy.manifest().deployment, a.rate, a.max_step, a.force)?;
    println!(
        "control at {rate_hz} Hz, joint targets at most {max_step} from the measured positions{}",
        if a.rate.is_none() {
            " (rate from the manifest)"
        } else {
            ""
        }
    );
    let task_state = policy
        .manifest()
        .channels
        .observation
        .iter()
        .find(|c| c.source.starts_with("task.done["))
        .cloned();
    let task = match (a.task, &task_state) {
        (Some(t), _) => t,
        (None, Some(_)) if policy.manifest().provenance.task == "arm" => {
            println!("task: arm (the policy observes its state; from the manifest's provenance)");
            SimTaskArg::Arm
        }
        (None, _) => SimTaskArg::None,
    };
    if task == SimTaskArg::None
        && let Some(c) = &task_state
    {
        bail!(
            "the policy observes {} (source {}), the arm task's state, which the task computes on the host from the measured joint positions: pass --task arm",
            c.name,
            c.source
        );
    }
    let mut controller = diffbc_control::PolicyController::new(policy);
    if task == SimTaskArg::Arm {
        let task = diffbc_tasks::arm::ArmTask::default();
        controller.set_host_source(Box::new(task.state(std::sync::Arc::default())));
    }
    let config = diffbc_bridge::LoopConfig {
        rate_hz,
        duration: a.seconds,
        max_step,
        ..Default::default()
    };
    let mut bridge = diffbc_bridge::Bridge::connect(&a.port, a.baud, config.handshake_timeout)?;
    let report = bridge.run(&mut controller, &config, &stop);
    print!("{}", report.stats.markdown());
    if let Some(t) = &report.last_telemetry {
        println!(
            "last positions: {:?}; velocities: {:?}",
            t.positions, t.velocities
        );
    }
    report.outcome.map_err(anyhow::Error::msg)
}

/// The step bound `diffbc run` uses when neither flag nor manifest gives one.
pub const FALLBACK_MAX_STEP: f32 = 0.2;

/// `diffbc run`'s control rate and step bound: the flags, else the manifest's
/// deployment settings. A rate other than the trained one, or a step bound
/// tighter than the demonstrations', is refused unless `force`.
pub fn run_settings(
    d: &diffbc_runtime::manifest::Deployment,
    rate: Option<f64>,
    max_step: Option<f32>,
    force: bool,
) -> Result<(f64, f32)> {
    let rate_hz = match (rate, d.control_hz) {
        (Some(r), Some(trained)) if (r - trained).abs() > 1e-9 * trained && !force => bail!(
            "--rate {r} Hz contradicts the rate the policy was trained at ({trained} Hz, manifest deployment.control_hz): \
             its actions are tied to that rate; drop --rate, or pass --force to run at {r} Hz anyway"
        ),
        (Some(r), _) => r,
        (None, Some(trained)) => trained,
        (None, None) => {
            bail!("the manifest records no control rate (deployment.control_hz): pass --rate")
        }
    };
    let max_step = match (max_step, d.max_step) {
        (Some(s), Some(seen)) if s < seen && !force => bail!(
            "--max-step {s} is tighter than the demonstrations' largest step ({seen}, manifest deployment.max_step): \
             the safety layer would clip moves the policy learned; pass --force to run with it anyway"
        ),
        (Some(s), _) => s,
        (None, Some(seen)) if seen > 0.0 => seen,
        (None, _) => FALLBACK_MAX_STEP,
    };
    Ok((rate_hz, max_step))
}

pub fn bench(a: BenchArgs) -> Result<()> {
    use diffbc_runtime::{EngineChoice, ExecutionProvider};
    let engines = if a.engines.is_empty() {
        let mut e = vec![EngineChoice::Native, EngineChoice::Tract];
        if cfg!(feature = "ort") {
            e.push(EngineChoice::Ort(ExecutionProvider::Cpu));
        }
        e
    } else {
        a.engines.clone()
    };
    let cores = diffbc_tasks::pool::default_threads();
    let mut threads = if a.threads.is_empty() {
        vec![1, cores]
    } else {
        a.threads.clone()
    };
    threads.dedup();
    let plan = crate::bench::BenchPlan {
        engines,
        weights: a.weights.iter().map(|&w| w.into()).collect(),
        threads,
        samplers: a.sampler.configs(&[
            SamplerKindArg::Ddpm,
            SamplerKindArg::DiffusionX,
            SamplerKindArg::Kde,
            SamplerKindArg::Ddim,
        ]),
        seconds: a.seconds,
        min_iterations: a.min_iterations.max(1),
    };
    let peak1 =
        diffbc_runtime::native::kernel_peak_gflops(1, std::time::Duration::from_millis(300));
    let peak2 =
        diffbc_runtime::native::kernel_peak_gflops(2, std::time::Duration::from_millis(300));
    let records = crate::bench::run(&a.model, &plan)?;
    println!("# diffbc bench {} ({} cores)\n", a.model.display(), cores);
    print!("{}", crate::bench::markdown(&records, peak1));
    println!(
        "\nNative matrix kernel on this CPU: {}.",
        diffbc_runtime::native::Kernel::detect().name()
    );
    println!(
        "\nKernel ceiling on one core (native matrix kernel, L1-resident): {peak1:.1} GFLOP/s at batch 1, {peak2:.1} GFLOP/s at batch 2. \
         '% of batch-1 ceiling' divides GFLOP/s by the batch-1 figure × threads."
    );
    for r in records
        .iter()
        .filter(|r| r.threads == 1 && r.sampler == "diffusion-x(M=8)")
    {
        println!(
            "Diffusion-X (M=8), 1 thread, {} {}: {:.0} actions/s = {:.2}x the 250 actions/s target",
            r.engine,
            r.weights,
            r.actions_per_s,
            r.actions_per_s / 250.0
        );
    }
    let label = SamplerConfig::diffusion_x(8).label();
    for (w, ratio) in crate::bench::speedups(&records, &label) {
        println!("Diffusion-X (M=8), batch 1, 1 thread: native {w} / native f32 = {ratio:.2}x");
    }
    println!(
        "\nweight bytes/call: what one denoiser call reads on the native engine (matrix weights \
         in their stored precision, int8 scales, biases and norms in f32); weight GB/s: those \
         bytes (and the encoder's once) per decision × actions/s, batch-1 rows only. tract and \
         ONNX Runtime widen reduced weights themselves (n/a)."
    );
    if let Some(path) = &a.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&records)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
