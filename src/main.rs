//! `diffbc`: train, sample and evaluate diffusion policies.

mod arm;
mod exported;

mod pusht;
mod report;

#[global_allocator]
static ALLOCATOR: diffbc_alloc_count::Counting = diffbc_alloc_count::Counting;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use diffbc_deploy::cli::{
    BenchArgs, DEFAULT_KDE_BANDWIDTH, RunArgs, SamplerArgs, SamplerKindArg, SimArmArgs,
};
use diffbc_runtime::OnnxModel;
use diffbc_runtime::SamplerConfig;
use diffbc_train::config::{Method, TrainConfig};
use diffbc_train::eval::{self, ClawRecord, ScenePoints};
use diffbc_train::infer::{Actor, BurnPolicy};
use diffbc_train::keys::FeatureKeys;
use diffbc_train::task::TaskKind;
use diffbc_train::task::claw::ClawScenes;
use diffbc_train::train::{self, RunOptions};
use std::path::{Path, PathBuf};

/// CPU inference backend.
type Cpu = burn::backend::NdArray<f32>;
/// CPU training backend.
type CpuTrain = burn::backend::Autodiff<Cpu>;

#[derive(Parser, Debug)]
#[command(
    name = "diffbc",
    version,
    about = "Imitating human behaviour with diffusion models, from demonstrations to a robot arm"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The main job: demonstrations → train (diffusion + MSE) → export → closed loop through the bridge → report.
    Pipeline(PipelineArgs),
    /// Generate demonstrations with the seeded human-like demonstrator (one `.demos` file).
    Demos(DemosArgs),
    /// Train a policy into a checkpoint folder.
    Train(TrainArgs),
    /// Sample actions from a checkpoint for one observation.
    Sample(SampleArgs),
    /// Evaluate checkpoints and write a table (Markdown + JSON) and figures.
    Eval(EvalArgs),
    /// Export a checkpoint as encoder.onnx + denoiser.onnx + manifest.json + golden tensors.
    Export(ExportArgs),
    /// Latency and throughput of an exported policy per engine × sampler × threads.
    Bench(BenchArgs),
    /// The serial control loop's timing (jitter, missed deadlines, delivery) against its targets.
    BenchBridge(diffbc_deploy::bridge_bench::BenchBridgeArgs),
    /// Export a reference policy with seeded weights (e.g. models/bench-sieve).
    Reference(ReferenceArgs),
    /// The emulated arm firmware on a pseudo-terminal (prints the path to open).
    SimArm(SimArmArgs),
    /// Drive an arm (real or emulated) with an exported policy over a serial port.
    Run(RunArgs),
    /// The paper's comparison: every method, architecture and sampler on the
    /// claw scenes and the arm task (Push-T on request) -> REPORT.md, figures, JSON.
    Report(report::ReportArgs),
}

#[derive(Args, Debug)]
struct ReferenceArgs {
    /// Which reference policy (bench-sieve).
    name: diffbc_export::Reference,
    /// Output folder (default: models/<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the weights and golden inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replace the exported model already in the output folder (a folder
    /// that is not an exported model is never replaced).
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Checkpoint folder (with `--upgrade`: the format-1 exported folder).
    checkpoint: PathBuf,
    /// Output folder, e.g. models/claw (with `--upgrade`, default: in place).
    #[arg(long, required_unless_present = "upgrade")]
    out: Option<PathBuf>,
    /// Upgrade a format-1 exported folder to the current manifest format:
    /// the graphs stay, the channels and deployment settings are read from
    /// `--data`, the end-to-end golden episodes are recorded.
    #[arg(long, requires = "data")]
    upgrade: bool,
    /// The training data (as `diffbc train --data` took it), read for the
    /// channels' names, units, ranges and the control rate: needed by
    /// `--upgrade` and by checkpoints trained before these were recorded.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Replace the exported model already in the output folder (a folder
    /// that is not an exported model is never replaced).
    #[arg(long)]
    force: bool,
    /// Actions executed per predicted chunk, written to the manifest
    /// (default: the training config's).
    #[arg(long)]
    execute: Option<usize>,
    /// Default sampler written to the manifest (with the sampler options below).
    #[command(flatten)]
    sampler: SamplerArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum TaskArg {
    /// The paper's claw-machine scenes (../shared/data/claw).
    Claw,
    /// The emulated arm's multi-target task (demonstrations from `diffbc demos`).
    Arm,
    /// Push-T from state (../shared/data/pusht, human teleoperation).
    Pusht,
}

impl From<TaskArg> for TaskKind {
    fn from(t: TaskArg) -> Self {
        match t {
            TaskArg::Claw => TaskKind::Claw,
            TaskArg::Arm => TaskKind::Arm,
            TaskArg::Pusht => TaskKind::PushT,
        }
    }
}

#[derive(Args, Debug)]
struct DemosArgs {
    /// Task (only `arm` has a generator; claw data is read from its folder).
    #[arg(long, value_enum, default_value = "arm")]
    task: TaskArg,
    /// Episodes to record.
    #[arg(long, default_value_t = 200)]
    episodes: usize,
    /// Seed of the first episode (episode i uses seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A JSON ArmTask (world, rules, demonstrator); default: the built-in task.
    #[arg(long)]
    task_config: Option<PathBuf>,
    /// Output file or, with `--format lerobot`, folder (a `.demos` extension
    /// is dropped there, so the default becomes `data/arm`).
    #[arg(long, default_value = "data/arm.demos")]
    out: PathBuf,
    /// Replace the demonstrations file already at --out (a file that is not a
    /// `.demos` file is never replaced; a LeRobot folder is never replaced).
    #[arg(long)]
    force: bool,
    /// File format: diffbc's `.demos` file, or a LeRobot v3.0 dataset folder.
    #[arg(long, value_enum, default_value = "demos")]
    format: DemosFormatArg,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum DemosFormatArg {
    /// One `.demos` file.
    Demos,
    /// A LeRobot v3.0 dataset folder (parquet + JSON), refused if it exists.
    Lerobot,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum MethodArg {
    /// Diffusion BC (denoiser chosen with --denoiser).
    Diffusion,
    /// MSE regression.
    Mse,
    /// 20 uniform bins per action value.
    Discretised,
    /// Cross-entropy over 10 K-means action centres.
    Kmeans,
    /// K-means plus a regressed offset (Behaviour Transformer).
    KmeansResidual,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Diffusion => Method::Diffusion,
            MethodArg::Mse => Method::Mse,
            MethodArg::Discretised => Method::Discretised,
            MethodArg::Kmeans => Method::KMeans,
            MethodArg::KmeansResidual => Method::KMeansResidual,
        }
    }
}

/// Denoiser architecture (default sizes; a --config file sets others).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum DenoiserArg {
    /// MLP Sieve.
    Sieve,
    /// Basic MLP.
    Basic,
    /// Transformer.
    Transformer,
}

impl DenoiserArg {
    fn config(self) -> diffbc_train::model::DenoiserConfig {
        use diffbc_train::model::{BasicMlpConfig, DenoiserConfig, TransformerConfig};
        match self {
            Self::Sieve => DenoiserConfig::default(),
            Self::Basic => DenoiserConfig::BasicMlp(BasicMlpConfig::default()),
            Self::Transformer => DenoiserConfig::Transformer(TransformerConfig::default()),
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceArg {
    /// burn's ndarray backend on the CPU.
    Cpu,
    /// burn's CUDA backend (build with `--features cuda`).
    Cuda,
    /// burn's wgpu backend (build with `--features wgpu`).
    Wgpu,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Task to train on.
    #[arg(long, value_enum, default_value = "claw")]
    task: TaskArg,
    /// Diffusion policy or baseline.
    #[arg(long, value_enum, default_value = "diffusion")]
    method: MethodArg,
    /// Denoiser architecture of a diffusion policy (default: the task's, an
    /// MLP Sieve).
    #[arg(long, value_enum)]
    denoiser: Option<DenoiserArg>,
    /// A JSON TrainConfig; defaults depend on task and method.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data folder (default: the task's folder under ../shared/data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Checkpoint folder (default: runs/<task>-<method>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the number of gradient steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Override the seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the actions predicted per decision (action chunking; 1 =
    /// single-step); without --execute, half of each chunk is executed.
    #[arg(long)]
    horizon: Option<usize>,
    /// Override the actions executed per decision (1 ≤ execute ≤ horizon).
    #[arg(long)]
    execute: Option<usize>,
    /// Continue training from the checkpoint in --out.
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Replace the checkpoint already in --out (a folder that is not a
    /// diffbc checkpoint is never replaced).
    #[arg(long)]
    force: bool,
    /// Stop (with a checkpoint) after this many steps; `--resume` continues exactly.
    #[arg(long)]
    stop_at: Option<usize>,
    /// Training device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// Observation features of a LeRobot or zarr data set, comma-separated,
    /// concatenated in order (default: `observation.state` / `state`).
    #[arg(long, value_delimiter = ',')]
    obs_keys: Vec<String>,
    /// Action feature of a LeRobot or zarr data set (default: `action`).
    #[arg(long)]
    action_key: Option<String>,
}

#[derive(Args, Debug)]
struct SampleArgs {
    /// Checkpoint folder.
    checkpoint: PathBuf,
    /// Claw scene to condition on.
    #[arg(long, default_value_t = 0)]
    scene: usize,
    /// Number of actions.
    #[arg(long, short, default_value_t = 10)]
    n: usize,
    /// Data folder of the task.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    sampler: SamplerArgs,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// Checkpoint or exported folders to evaluate.
    #[arg(required_unless_present = "replay")]
    checkpoints: Vec<PathBuf>,
    /// Task.
    #[arg(long, value_enum, default_value = "claw")]
    task: TaskArg,
    /// Data folder of the task.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Samples per scene.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Samples per scene for KDE (N candidates each; expensive).
    #[arg(long, default_value_t = 200)]
    kde_samples: usize,
    /// Output folder for report.md and the figures.
    #[arg(long, default_value = "out/eval")]
    out: PathBuf,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Evaluation seed (Push-T: episode i starts from seed
    /// 100,000 + 1,000 · seed + i, so another --seed is a disjoint set of
    /// states, e.g. for choosing settings before the reported run).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Arm: the demonstrations the policies were trained on (for the order
    /// distribution and action distance).
    #[arg(long, default_value = "data/arm.demos")]
    demos: PathBuf,
    /// Arm and Push-T: closed-loop episodes per policy × sampler (default:
    /// 100 on the arm, 50 on Push-T).
    #[arg(long)]
    episodes: Option<usize>,
    /// Arm: episodes through the serial bridge per policy (0 = none).
    #[arg(long, default_value_t = 30)]
    bridge_episodes: usize,
    /// Arm: the emulated arm's device seconds per wall second on the bridge.
    #[arg(long, default_value = "5", value_parser = diffbc_bridge::checked::flag::time_scale, allow_hyphen_values = true)]
    time_scale: f64,
    /// Claw and arm: evaluation workers, each with its own copy of the
    /// policy (default: every core). The results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Push-T: engine that runs the exported graphs (tract, native, ort-cpu, …).
    #[arg(long, default_value = "native")]
    engine: diffbc_runtime::EngineChoice,
    /// Push-T: actions executed per predicted chunk (default: the manifest's).
    #[arg(long)]
    execute: Option<usize>,
    /// Push-T: also replay the demonstrations in the environment (reference rows).
    #[arg(long)]
    replay: bool,
    #[command(flatten)]
    sampler: SamplerArgs,
}

#[derive(Args, Debug)]
struct PipelineArgs {
    /// Task: `arm` (the main job) or `claw` (the paper's claw scenes).
    #[arg(long, value_enum, default_value = "arm")]
    task: TaskArg,
    /// Data folder of the claw task.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder: demonstrations, checkpoints, exported models, report.md, eval.json, figures
    /// (default: out/<task>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the diffusion policy's training steps (the MSE baseline trains a quarter as many).
    #[arg(long)]
    steps: Option<usize>,
    /// Claw: samples per scene.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Arm: demonstrations to generate.
    #[arg(long, default_value_t = 200)]
    demos: usize,
    /// Arm: closed-loop episodes in-process per policy × sampler.
    #[arg(long, default_value_t = 100)]
    episodes: usize,
    /// Arm: episodes through the serial bridge per policy (0 = skip the bridge).
    #[arg(long, default_value_t = 30)]
    bridge_episodes: usize,
    /// Arm: the emulated arm's device seconds per wall second on the bridge.
    #[arg(long, default_value = "5", value_parser = diffbc_bridge::checked::flag::time_scale, allow_hyphen_values = true)]
    time_scale: f64,
    /// Seed of data, training and evaluation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Arm: samplers to evaluate (default ddpm, diffusion-x, kde).
    #[command(flatten)]
    sampler: SamplerArgs,
}

const DEFAULT_EVAL_SAMPLERS: [SamplerKindArg; 3] = [
    SamplerKindArg::Ddpm,
    SamplerKindArg::DiffusionX,
    SamplerKindArg::Kde,
];

fn data_dir(task: TaskKind, data: &Option<PathBuf>) -> PathBuf {
    data.clone()
        .unwrap_or_else(|| PathBuf::from(task.default_data_dir()))
}

fn main() -> Result<()> {
    diffbc_deploy::init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Train(a) => cmd_train(a),
        Command::Sample(a) => cmd_sample(a),
        Command::Eval(a) => cmd_eval(a),
        Command::Pipeline(a) => cmd_pipeline(a),
        Command::Demos(a) => cmd_demos(a),
        Command::Export(a) => cmd_export(a),
        Command::Bench(a) => diffbc_deploy::cli::bench(a),
        Command::BenchBridge(a) => diffbc_deploy::bridge_bench::run(&a),
        Command::Reference(a) => cmd_reference(a),
        Command::SimArm(a) => diffbc_deploy::cli::sim_arm(a),
        Command::Run(a) => diffbc_deploy::cli::run(a),
        Command::Report(a) => report::run(&a),
    }
}

/// The training samples of `config.task` from `data` (a folder or file).
fn load_dataset(config: &TrainConfig, data: &Path) -> Result<diffbc_train::data::Dataset> {
    load_dataset_with(config, data, &FeatureKeys::default())
}

/// As [`load_dataset`], with `keys` choosing the features of a LeRobot or
/// zarr data set.
fn load_dataset_with(
    config: &TrainConfig,
    data: &Path,
    keys: &FeatureKeys,
) -> Result<diffbc_train::data::Dataset> {
    match config.task {
        TaskKind::Claw => {
            if !keys.is_default() {
                bail!(
                    "--obs-keys / --action-key choose features of LeRobot or zarr data; the claw scenes have none"
                );
            }
            let scenes = ClawScenes::load(data)?;
            Ok(scenes.dataset(config.data.samples, config.seed))
        }
        TaskKind::Arm => {
            if !data.exists() {
                bail!(
                    "{}: no demonstrations there; generate them with `diffbc demos --task arm --out {}`",
                    data.display(),
                    data.display()
                );
            }
            let episodes = diffbc_train::episodes::Episodes::load_with(data, keys)?;
            Ok(episodes.to_chunked_dataset(config.history, config.chunk.horizon))
        }
        TaskKind::PushT => {
            let episodes = pusht::load_demos_with(data, keys)?;
            Ok(episodes.to_chunked_dataset(config.history, config.chunk.horizon))
        }
    }
}

/// Train into `out`. `force` replaces a checkpoint already there (never a
/// folder or file that is not a checkpoint); `resume` continues it.
fn train_on_device(
    config: &TrainConfig,
    data: &diffbc_train::data::Dataset,
    out: &Path,
    resume: bool,
    force: bool,
    stop_at: Option<usize>,
    device: DeviceArg,
) -> Result<train::TrainOutcome> {
    let options = RunOptions {
        resume,
        progress: true,
        stop_at,
        force,
    };
    let outcome = match device {
        DeviceArg::Cpu => {
            train::train::<CpuTrain>(config, data, out, &Default::default(), options)?
        }
        #[cfg(feature = "cuda")]
        DeviceArg::Cuda => train::train::<burn::backend::Autodiff<burn::backend::Cuda>>(
            config,
            data,
            out,
            &Default::default(),
            options,
        )?,
        #[cfg(feature = "wgpu")]
        DeviceArg::Wgpu => train::train::<burn::backend::Autodiff<burn::backend::Wgpu>>(
            config,
            data,
            out,
            &Default::default(),
            options,
        )?,
        #[allow(unreachable_patterns)]
        other => bail!(
            "--device {other:?} is not compiled in; rebuild with `--features {}`",
            format!("{other:?}").to_lowercase()
        ),
    };
    Ok(outcome)
}

fn cmd_train(a: TrainArgs) -> Result<()> {
    let task: TaskKind = a.task.into();
    let mut config = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::for_task(task, a.method.into()),
    };
    if let Some(s) = a.steps {
        config.optim.steps = s;
    }
    if let Some(s) = a.seed {
        config.seed = s;
    }
    if let Some(d) = a.denoiser {
        config.denoiser = d.config();
    }
    if let Some(h) = a.horizon {
        config.chunk.horizon = h;
        // A new horizon without --execute executes half the chunk (at least one).
        config.chunk.execute = a.execute.unwrap_or(h.div_ceil(2));
    } else if let Some(e) = a.execute {
        config.chunk.execute = e;
    }
    config.validate()?;
    let out = a.out.unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/{}-{}",
            config.task.name(),
            config.method.name()
        ))
    });
    if !a.resume {
        // Refuse a foreign output before the data are loaded.
        diffbc_train::checkpoint::claim(&out, a.force)?;
    }
    let dir = data_dir(config.task, &a.data);
    let keys = FeatureKeys::new(&a.obs_keys, a.action_key.as_deref());
    let data = load_dataset_with(&config, &dir, &keys)?;
    let o = train_on_device(&config, &data, &out, a.resume, a.force, a.stop_at, a.device)?;
    println!(
        "trained {} {} for {} steps ({:.1} steps/s): train loss {:.4}, test loss {:.4} (untrained {:.4}) -> {}",
        config.task.name(),
        config.method.name(),
        o.steps,
        o.steps_per_second,
        o.train_loss,
        o.test_loss,
        o.initial_test_loss,
        out.display()
    );
    Ok(())
}

fn cmd_sample(a: SampleArgs) -> Result<()> {
    let mut policy = LoadedPolicy::load(&a.checkpoint)?;
    let scenes = ClawScenes::load(&data_dir(TaskKind::Claw, &a.data))?;
    let scene = scenes
        .scenes
        .iter()
        .find(|s| s.id == a.scene)
        .with_context(|| {
            format!(
                "--scene {}: no such scene (have 0..{})",
                a.scene,
                scenes.scenes.len()
            )
        })?;
    let cfg = a.sampler.configs(&[SamplerKindArg::DiffusionX])[0];
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(a.seed);
    let actions = match &mut policy {
        LoadedPolicy::Burn(p) => sample_with(p.as_mut(), cfg, &scene.image, a.n, &mut rng)?,
        LoadedPolicy::Onnx(p) => sample_with(p.as_mut(), cfg, &scene.image, a.n, &mut rng)?,
    };
    for p in actions.chunks_exact(2) {
        let label = scene.label_at(p[0], p[1]).unwrap_or(0);
        println!(
            "{{\"x\": {:.5}, \"y\": {:.5}, \"object\": {label}}}",
            p[0], p[1]
        );
    }
    Ok(())
}

/// A checkpoint (burn) or an exported folder (ONNX, run by tract).
enum LoadedPolicy {
    Burn(Box<BurnPolicy<Cpu>>),
    Onnx(Box<OnnxModel>),
}

impl LoadedPolicy {
    fn load(dir: &Path) -> Result<Self> {
        if dir.join(diffbc_runtime::manifest::MANIFEST_FILE).is_file() {
            Ok(Self::Onnx(Box::new(OnnxModel::load(
                dir,
                diffbc_runtime::EngineChoice::Tract,
            )?)))
        } else {
            Ok(Self::Burn(Box::new(BurnPolicy::load(
                dir,
                &Default::default(),
            )?)))
        }
    }

    fn is_direct(&self) -> bool {
        match self {
            Self::Burn(p) => p.is_direct(),
            Self::Onnx(p) => p.is_direct(),
        }
    }
}

fn sample_with<A: Actor>(
    policy: &mut A,
    cfg: SamplerConfig,
    observation: &[f32],
    n: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<Vec<f32>> {
    let mut sampler = diffbc_runtime::Sampler::new(policy.schedule()?, cfg)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(policy.act_repeated(observation, n, &mut sampler, rng, 1000)?)
}

/// Evaluate every checkpoint with every sampler (direct heads once), plus
/// the ground-truth row, on `threads` workers. Rows come back in table
/// order (checkpoint, then sampler) whatever `threads` is: each job loads
/// its own copy of the policy and `eval::evaluate` seeds every scene from
/// `seed`, so a row does not depend on which worker ran it or when.
fn evaluate_all(
    checkpoints: &[PathBuf],
    samplers: &[SamplerConfig],
    scenes: &ClawScenes,
    samples: usize,
    kde_samples: usize,
    seed: u64,
    threads: usize,
) -> Result<(Vec<ClawRecord>, Vec<ScenePoints>)> {
    let (truth, truth_points) = eval::ground_truth_record(scenes, samples, seed);
    let count = |cfg: Option<SamplerConfig>| match cfg.map(|c| c.selection) {
        Some(diffbc_runtime::Selection::Kde { .. }) => kde_samples,
        _ => samples,
    };
    // Jobs in table order, each with a cost estimate: the time of 1 % of
    // its samples on the first scene (KDE on the Transformer costs 100×
    // DDPM on the sieve; the longest jobs start first).
    let mut jobs: Vec<(usize, Option<SamplerConfig>, f64)> = Vec::new();
    for (i, ck) in checkpoints.iter().enumerate() {
        let mut policy = LoadedPolicy::load(ck)?;
        let cfgs: Vec<Option<SamplerConfig>> = if policy.is_direct() {
            vec![None]
        } else {
            samplers.iter().copied().map(Some).collect()
        };
        for cfg in cfgs {
            let cost = match cfg {
                None => 0.0,
                Some(c) => {
                    let mut rng =
                        <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
                    let probe = (count(cfg) / 100).max(1);
                    let t0 = std::time::Instant::now();
                    match &mut policy {
                        LoadedPolicy::Burn(p) => {
                            sample_with(p.as_mut(), c, &scenes.scenes[0].image, probe, &mut rng)?
                        }
                        LoadedPolicy::Onnx(p) => {
                            sample_with(p.as_mut(), c, &scenes.scenes[0].image, probe, &mut rng)?
                        }
                    };
                    t0.elapsed().as_secs_f64()
                }
            };
            jobs.push((i, cfg, cost));
        }
    }
    let costs: Vec<f64> = jobs.iter().map(|j| j.2).collect();
    let rows = diffbc_tasks::pool::longest_first(&costs, threads, |j| {
        let (i, cfg, _) = jobs[j];
        let run = || -> Result<(ClawRecord, ScenePoints)> {
            let n = count(cfg);
            let (r, p) = match &mut LoadedPolicy::load(&checkpoints[i])? {
                LoadedPolicy::Burn(pol) => eval::evaluate(pol.as_mut(), cfg, scenes, n, seed)?,
                LoadedPolicy::Onnx(pol) => eval::evaluate(pol.as_mut(), cfg, scenes, n, seed)?,
            };
            tracing::info!(method = %r.method, sampler = %r.sampler, precision = r.on_object_precision, "evaluated");
            Ok((r, p))
        };
        run().with_context(|| format!("evaluating {}", checkpoints[i].display()))
    })?;
    let mut records = vec![truth];
    let mut points = vec![truth_points];
    for (r, p) in rows {
        records.push(r);
        points.push(p);
    }
    Ok((records, points))
}

fn write_report(
    out: &Path,
    records: &[ClawRecord],
    points: &[ScenePoints],
    scenes: &ClawScenes,
    json: Option<&Path>,
    preamble: &str,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let figures =
        diffbc_train::plot::write_scene_figures(&out.join("figures"), &scenes.scenes, points)?;
    let table = eval::markdown_table(records);
    let mut report = format!("# diffbc claw evaluation\n\n{preamble}\n## Results\n\n{table}\n");
    report.push_str(
        "On-object precision: share of sampled actions on an object. Coverage ratio: an object's share of the \
         on-object samples over its share of the object pixels (1 = proportional; 0 = a mode is missed). \
         Sliced W1: distance to the true distribution in image widths (the ground-truth row is the noise floor).\n\n## Figures\n\n",
    );
    for f in &figures {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        report.push_str(&format!("![{name}](figures/{name})\n\n"));
    }
    let report_path = out.join("report.md");
    std::fs::write(&report_path, report)
        .with_context(|| format!("writing {}", report_path.display()))?;
    let json_text = serde_json::to_string_pretty(records)?;
    let json_path = json
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out.join("eval.json"));
    std::fs::write(&json_path, json_text + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("{table}");
    println!(
        "report: {}  figures: {}  json: {}",
        report_path.display(),
        out.join("figures").display(),
        json_path.display()
    );
    Ok(())
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    match a.task {
        TaskArg::Arm => return arm::cli::eval(&a),
        TaskArg::Pusht => return pusht::cli::eval(&a),
        TaskArg::Claw => {}
    }
    let scenes = ClawScenes::load(&data_dir(a.task.into(), &a.data))?;
    let samplers = a.sampler.configs(&DEFAULT_EVAL_SAMPLERS);
    let (records, points) = evaluate_all(
        &a.checkpoints,
        &samplers,
        &scenes,
        a.samples,
        a.kde_samples,
        a.seed,
        a.threads
            .unwrap_or_else(diffbc_tasks::pool::default_threads),
    )?;
    write_report(&a.out, &records, &points, &scenes, a.json.as_deref(), "")?;
    if let Some(j) = &a.json {
        println!("wrote {}", j.display());
    }
    Ok(())
}

fn cmd_pipeline(a: PipelineArgs) -> Result<()> {
    let task: TaskKind = a.task.into();
    if task == TaskKind::Arm {
        return arm::cli::pipeline(&a);
    }
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("out/claw"));
    let dir = data_dir(task, &a.data);
    let scenes = ClawScenes::load(&dir)?;
    let t0 = std::time::Instant::now();
    let mut checkpoints = Vec::new();
    let mut lines = String::new();
    for method in [Method::Diffusion, Method::Mse] {
        let mut config = TrainConfig::for_task(task, method);
        config.seed = a.seed;
        if let Some(s) = a.steps {
            config.optim.steps = if method == Method::Mse {
                (s / 4).max(1)
            } else {
                s
            };
        }
        let ck = out.join(format!("{}-{}", task.name(), method.name()));
        let ts = std::time::Instant::now();
        let data = load_dataset(&config, &dir)?;
        // The pipeline's own checkpoints: replaced on a re-run (a folder that
        // is not a checkpoint is still refused).
        let o = train_on_device(&config, &data, &ck, false, true, None, DeviceArg::Cpu)?;
        lines.push_str(&format!(
            "- {}: {} steps in {:.0} s ({:.1} steps/s), test loss {:.4} (untrained {:.4})\n",
            method.name(),
            o.steps,
            ts.elapsed().as_secs_f64(),
            o.steps_per_second,
            o.test_loss,
            o.initial_test_loss
        ));
        checkpoints.push(ck);
    }
    let samplers = [
        SamplerConfig::ddpm(),
        SamplerConfig::diffusion_x(8),
        SamplerConfig::kde(50, 0.1),
    ];
    let (records, points) = evaluate_all(
        &checkpoints,
        &samplers,
        &scenes,
        a.samples,
        a.samples / 5,
        a.seed,
        diffbc_tasks::pool::default_threads(),
    )?;
    let preamble = format!(
        "Data: `{}` ({} scenes), seed {}. Training on CPU:\n\n{lines}\nTotal wall time {:.0} s.\n",
        dir.display(),
        scenes.scenes.len(),
        a.seed,
        t0.elapsed().as_secs_f64()
    );
    write_report(&out, &records, &points, &scenes, None, &preamble)
}

fn cmd_demos(a: DemosArgs) -> Result<()> {
    if a.task != TaskArg::Arm {
        bail!("--task claw has no generator: its scenes are read from ../shared/data/claw");
    }
    let task = match &a.task_config {
        Some(p) => arm::cli::read_task(p)?,
        None => arm::ArmTask::default(),
    };
    // Where it goes, claimed before the (long) generation.
    let out = match a.format {
        DemosFormatArg::Demos => {
            diffbc_runtime::fs::claim_output(&a.out, &diffbc_train::episodes::KIND, a.force)?;
            a.out.clone()
        }
        DemosFormatArg::Lerobot => {
            let out = if a.out.extension().is_some_and(|e| e == "demos") {
                a.out.with_extension("")
            } else {
                a.out.clone()
            };
            diffbc_runtime::fs::claim_output(&out, &diffbc_train::lerobot::KIND, false)?;
            out
        }
    };
    let t0 = std::time::Instant::now();
    let demos = arm::generate(&task, a.episodes, a.seed, true)?;
    match a.format {
        DemosFormatArg::Demos => demos.save(&out)?,
        DemosFormatArg::Lerobot => {
            let options = diffbc_train::lerobot::WriteOptions {
                fps: task.control_hz,
                robot_type: Some("diffbc_sim_arm".into()),
                task: "diffbc arm task: reach the targets".into(),
            };
            demos.save_lerobot(&out, &options)?;
        }
    }
    let orders = arm::orders_from_episodes(&task, &demos);
    println!(
        "{} episodes, {} steps, {} distinct task orders (entropy {:.2} bits) in {:.1} s -> {}",
        demos.len(),
        demos.steps(),
        orders
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        arm::eval::entropy_bits(&orders),
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

fn cmd_export(a: ExportArgs) -> Result<()> {
    if a.upgrade {
        return cmd_upgrade(&a);
    }
    let out = a.out.clone().context("--out is required")?;
    // Channels from the data when given, else the checkpoint's record.
    let interface = match &a.data {
        Some(data) => {
            let config =
                TrainConfig::load(&a.checkpoint.join(diffbc_train::checkpoint::files::CONFIG))?;
            Some(data_interface(&config, data)?)
        }
        None => None,
    };
    let options = diffbc_export::ExportOptions {
        force: a.force,
        sampler: a.sampler.configs(&[SamplerKindArg::DiffusionX])[0],
        execute: a.execute,
        interface,
        ..Default::default()
    };
    let m = diffbc_export::export_checkpoint::<Cpu>(
        &a.checkpoint,
        &out,
        &options,
        &Default::default(),
    )?;
    println!(
        "exported {} ({}) -> {}: {} [{}], {} [{}]",
        a.checkpoint.display(),
        m.provenance.architecture,
        out.display(),
        m.encoder.file,
        &m.encoder.sha256[..12],
        m.head.file,
        &m.head.sha256[..12]
    );
    Ok(())
}

/// The channels and deployment settings of the data `config` trains on.
fn data_interface(
    config: &TrainConfig,
    data: &Path,
) -> Result<diffbc_runtime::manifest::Interface> {
    load_dataset(config, data)?.interface.with_context(|| {
        format!(
            "{}: this data set records no channels (synthetic data)",
            data.display()
        )
    })
}

/// `diffbc export --upgrade DIR --data DATA [--out OUT]`.
fn cmd_upgrade(a: &ExportArgs) -> Result<()> {
    let dir = &a.checkpoint;
    let data = a.data.as_deref().context("--upgrade needs --data")?;
    let text = diffbc_runtime::fs::read_to_string(
        &dir.join(diffbc_runtime::manifest::MANIFEST_FILE),
        diffbc_runtime::fs::limits::JSON,
    )?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: manifest.json is not JSON", dir.display()))?;
    let task_name = v["provenance"]["task"].as_str().unwrap_or_default();
    let task = TaskKind::ALL
        .into_iter()
        .find(|t| t.name() == task_name)
        .with_context(|| {
            format!(
                "{}: provenance.task is {task_name:?}, not one of diffbc's tasks, so its data cannot be read; re-export it instead",
                dir.display()
            )
        })?;
    let mut config = TrainConfig::for_task(task, Method::Diffusion);
    config.history = v["observation"]["history"]
        .as_u64()
        .context("observation.history is missing")? as usize;
    if let Some(h) = v["chunk"]["horizon"].as_u64() {
        config.chunk.horizon = h as usize;
    }
    let interface = data_interface(&config, data)?;
    let out = a.out.clone().unwrap_or_else(|| dir.clone());
    let m = diffbc_export::upgrade(dir, &out, interface, a.force)?;
    println!(
        "upgraded {} -> {} (format {}, {} observation and {} action channels, control rate {})",
        dir.display(),
        out.display(),
        m.format_version,
        m.channels.observation.len(),
        m.channels.action.len(),
        m.deployment
            .control_hz
            .map_or_else(|| "none".to_string(), |hz| format!("{hz} Hz"))
    );
    Ok(())
}

fn cmd_reference(a: ReferenceArgs) -> Result<()> {
    let out = a
        .out
        .unwrap_or_else(|| Path::new("models").join(a.name.name()));
    let m = diffbc_export::export_reference(a.name, &out, a.seed, a.force)?;
    println!(
        "exported reference {} -> {}: {} [{}], {} [{}]",
        a.name.name(),
        out.display(),
        m.encoder.file,
        &m.encoder.sha256[..12],
        m.head.file,
        &m.head.sha256[..12]
    );
    Ok(())
}
