//! The command line: one clap struct per subcommand.

use clap::{Args, Parser, Subcommand, ValueEnum};
use diffbc_deploy::cli::{BenchArgs, RunArgs, SamplerArgs, SimArmArgs};
use diffbc_tasks::Task;
use diffbc_train::config::Method;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "diffbc",
    version,
    about = "Imitating human behaviour with diffusion models, from demonstrations to a robot arm"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
    /// Calibrate a servo-bus arm (SO-100/SO-101, Koch): centre it, sweep every joint.
    Calibrate(diffbc_deploy::cli::CalibrateArgs),
    /// Record teleoperation demonstrations: a leader arm drives a follower arm.
    Record(crate::record::RecordArgs),
    /// Drive an arm (real or emulated) with an exported policy over a serial port.
    Run(RunArgs),
    /// The paper's comparison: every method, architecture and sampler on the
    /// claw scenes and the arm task (Push-T on request) -> REPORT.md, figures, JSON.
    Report(ReportArgs),
}

#[derive(Args, Debug)]
pub struct ReferenceArgs {
    /// Which reference policy (bench-sieve).
    pub name: diffbc_export::Reference,
    /// Output folder (default: models/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the weights and golden inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How the graphs store their matrix weights (f32, f16, int8).
    #[arg(long, value_enum, default_value = "f32")]
    pub weights: diffbc_deploy::cli::WeightsArg,
    /// Replace the exported model already in the output folder (a folder
    /// that is not an exported model is never replaced).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Checkpoint folder (with `--upgrade`: the format-1 exported folder;
    /// with `--weights f16|int8`: an exported f32 folder may stand here).
    pub checkpoint: PathBuf,
    /// Output folder, e.g. models/claw (with `--upgrade`, default: in place).
    #[arg(long, required_unless_present = "upgrade")]
    pub out: Option<PathBuf>,
    /// Upgrade a format-1 exported folder to the current manifest format:
    /// the graphs stay, the channels and deployment settings are read from
    /// `--data`, the end-to-end golden episodes are recorded.
    #[arg(long, requires = "data")]
    pub upgrade: bool,
    /// The training data (as `diffbc train --data` took it), read for the
    /// channels' names, units, ranges and the control rate: needed by
    /// `--upgrade` and by checkpoints trained before these were recorded.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Replace the exported model already in the output folder (a folder
    /// that is not an exported model is never replaced).
    #[arg(long)]
    pub force: bool,
    /// Actions executed per predicted chunk, written to the manifest
    /// (default: the training config's).
    #[arg(long)]
    pub execute: Option<usize>,
    /// How the graphs store their matrix weights: f32, f16 (f32
    /// accumulation) or int8 (symmetric, one scale per output channel).
    /// Given an exported f32 folder instead of a checkpoint, writes that
    /// folder in this format.
    #[arg(long, value_enum, default_value = "f32", conflicts_with = "upgrade")]
    pub weights: diffbc_deploy::cli::WeightsArg,
    /// Default sampler written to the manifest (with the sampler options below).
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskArg {
    /// The paper's claw-machine scenes (../shared/data/claw).
    Claw,
    /// The emulated arm's multi-target task (demonstrations from `diffbc demos`).
    Arm,
    /// Push-T from state (../shared/data/pusht, human teleoperation).
    Pusht,
}

impl TaskArg {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        Task::from(self).name()
    }
}

impl From<TaskArg> for Task {
    fn from(t: TaskArg) -> Self {
        match t {
            TaskArg::Claw => Task::Claw,
            TaskArg::Arm => Task::Arm,
            TaskArg::Pusht => Task::PushT,
        }
    }
}

#[derive(Args, Debug)]
pub struct DemosArgs {
    /// Task (only `arm` has a generator; claw data is read from its folder).
    #[arg(long, value_enum, default_value = "arm")]
    pub task: TaskArg,
    /// Episodes to record.
    #[arg(long, default_value_t = 200)]
    pub episodes: usize,
    /// Seed of the first episode (episode i uses seed + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A JSON ArmTask (world, rules, demonstrator); default: the built-in task.
    #[arg(long)]
    pub task_config: Option<PathBuf>,
    /// Output file or, with `--format lerobot`, folder (a `.demos` extension
    /// is dropped there, so the default becomes `data/arm`).
    #[arg(long, default_value = "data/arm.demos")]
    pub out: PathBuf,
    /// Replace the demonstrations file already at --out (a file that is not a
    /// `.demos` file is never replaced; a LeRobot folder is never replaced).
    #[arg(long)]
    pub force: bool,
    /// File format: diffbc's `.demos` file, or a LeRobot v3.0 dataset folder.
    #[arg(long, value_enum, default_value = "demos")]
    pub format: DemosFormatArg,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemosFormatArg {
    /// One `.demos` file.
    Demos,
    /// A LeRobot v3.0 dataset folder (parquet + JSON), refused if it exists.
    Lerobot,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodArg {
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
pub enum DenoiserArg {
    /// MLP Sieve.
    Sieve,
    /// Basic MLP.
    Basic,
    /// Transformer.
    Transformer,
}

impl DenoiserArg {
    pub fn config(self) -> diffbc_train::model::DenoiserConfig {
        use diffbc_train::model::{BasicMlpConfig, DenoiserConfig, TransformerConfig};
        match self {
            Self::Sieve => DenoiserConfig::default(),
            Self::Basic => DenoiserConfig::BasicMlp(BasicMlpConfig::default()),
            Self::Transformer => DenoiserConfig::Transformer(TransformerConfig::default()),
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    /// burn's ndarray backend on the CPU.
    Cpu,
    /// burn's CUDA backend (build with `--features cuda`).
    Cuda,
    /// burn's wgpu backend (build with `--features wgpu`).
    Wgpu,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Task to train on.
    #[arg(long, value_enum, default_value = "claw")]
    pub task: TaskArg,
    /// Diffusion policy or baseline.
    #[arg(long, value_enum, default_value = "diffusion")]
    pub method: MethodArg,
    /// Denoiser architecture of a diffusion policy (default: the task's, an
    /// MLP Sieve).
    #[arg(long, value_enum)]
    pub denoiser: Option<DenoiserArg>,
    /// A JSON TrainConfig; defaults depend on task and method.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data folder (default: the task's folder under ../shared/data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Checkpoint folder (default: runs/<task>-<method>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the number of gradient steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Override the seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the actions predicted per decision (action chunking; 1 =
    /// single-step); without --execute, half of each chunk is executed.
    #[arg(long)]
    pub horizon: Option<usize>,
    /// Override the actions executed per decision (1 ≤ execute ≤ horizon).
    #[arg(long)]
    pub execute: Option<usize>,
    /// Continue training from the checkpoint in --out.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Replace the checkpoint already in --out (a folder that is not a
    /// diffbc checkpoint is never replaced).
    #[arg(long)]
    pub force: bool,
    /// Stop (with a checkpoint) after this many steps; `--resume` continues exactly.
    #[arg(long)]
    pub stop_at: Option<usize>,
    /// Training device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Observation features of a LeRobot or zarr data set, comma-separated,
    /// concatenated in order (default: `observation.state` / `state`).
    #[arg(long, value_delimiter = ',')]
    pub obs_keys: Vec<String>,
    /// Action feature of a LeRobot or zarr data set (default: `action`).
    #[arg(long)]
    pub action_key: Option<String>,
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Checkpoint folder.
    pub checkpoint: PathBuf,
    /// Claw scene to condition on.
    #[arg(long, default_value_t = 0)]
    pub scene: usize,
    /// Number of actions.
    #[arg(long, short, default_value_t = 10)]
    pub n: usize,
    /// Data folder of the task.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint or exported folders to evaluate (a checkpoint is exported
    /// into a scratch folder first: every row scores the deployed graphs).
    #[arg(required_unless_present = "replay")]
    pub checkpoints: Vec<PathBuf>,
    /// Task.
    #[arg(long, value_enum, default_value = "claw")]
    pub task: TaskArg,
    /// Data folder of the task.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder for report.md and the figures.
    #[arg(long, default_value = "out/eval")]
    pub out: PathBuf,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Evaluation seed (Push-T: episode i starts from seed
    /// 100,000 + 1,000 · seed + i, so another --seed is a disjoint set of
    /// states, e.g. for choosing settings before the reported run).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Closed-loop episodes per policy × sampler (arm and Push-T; default:
    /// 100 on the arm, 50 on Push-T).
    #[arg(long)]
    pub episodes: Option<usize>,
    /// Evaluation workers, each with its own copy of the policy (default:
    /// every core). The results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten, next_help_heading = "Claw scenes (--task claw)")]
    pub claw: ClawEvalArgs,
    #[command(flatten, next_help_heading = "Arm (--task arm)")]
    pub arm: ArmEvalArgs,
    #[command(flatten, next_help_heading = "Push-T (--task pusht)")]
    pub pusht: PushtEvalArgs,
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// `diffbc eval --task claw`'s own flags.
#[derive(Args, Debug)]
pub struct ClawEvalArgs {
    /// Samples per scene [default: 1000].
    #[arg(long)]
    pub samples: Option<usize>,
    /// Samples per scene for KDE (N candidates each; expensive) [default: 200].
    #[arg(long)]
    pub kde_samples: Option<usize>,
}

/// `diffbc eval --task arm`'s own flags.
#[derive(Args, Debug)]
pub struct ArmEvalArgs {
    /// The demonstrations the policies were trained on (for the order
    /// distribution and action distance) [default: data/arm.demos].
    #[arg(long)]
    pub demos: Option<PathBuf>,
    /// Episodes through the serial bridge per policy (0 = none) [default: 30].
    #[arg(long)]
    pub bridge_episodes: Option<usize>,
    /// The emulated arm's device seconds per wall second on the bridge [default: 5].
    #[arg(long, value_parser = diffbc_bridge::checked::flag::time_scale, allow_hyphen_values = true)]
    pub time_scale: Option<f64>,
}

/// `diffbc eval --task pusht`'s own flags.
#[derive(Args, Debug)]
pub struct PushtEvalArgs {
    /// Engine that runs the exported graphs (tract, native, ort-cpu, …) [default: native].
    #[arg(long)]
    pub engine: Option<diffbc_runtime::EngineChoice>,
    /// Actions executed per predicted chunk (default: the manifest's).
    #[arg(long)]
    pub execute: Option<usize>,
    /// Also replay the demonstrations in the environment (reference rows).
    #[arg(long)]
    pub replay: bool,
}

impl EvalArgs {
    /// Refuse flags that belong to another task's evaluation (they would be
    /// ignored silently otherwise), naming each and its task.
    pub fn check_task_flags(&self) -> anyhow::Result<()> {
        let given = |flags: &[(&'static str, bool)]| -> Vec<&'static str> {
            flags.iter().filter(|(_, g)| *g).map(|(f, _)| *f).collect()
        };
        let groups = [
            (
                TaskArg::Claw,
                "claw",
                given(&[
                    ("--samples", self.claw.samples.is_some()),
                    ("--kde-samples", self.claw.kde_samples.is_some()),
                ]),
            ),
            (
                TaskArg::Arm,
                "arm",
                given(&[
                    ("--demos", self.arm.demos.is_some()),
                    ("--bridge-episodes", self.arm.bridge_episodes.is_some()),
                    ("--time-scale", self.arm.time_scale.is_some()),
                ]),
            ),
            (
                TaskArg::Pusht,
                "pusht",
                given(&[
                    ("--engine", self.pusht.engine.is_some()),
                    ("--execute", self.pusht.execute.is_some()),
                    ("--replay", self.pusht.replay),
                ]),
            ),
        ];
        let foreign: Vec<String> = groups
            .iter()
            .filter(|(task, _, _)| *task != self.task)
            .flat_map(|(_, name, flags)| flags.iter().map(move |f| format!("{f} (--task {name})")))
            .collect();
        anyhow::ensure!(
            foreign.is_empty(),
            "{} not taken by --task {}: {}",
            if foreign.len() == 1 {
                "a flag"
            } else {
                "flags"
            },
            self.task.name(),
            foreign.join(", ")
        );
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Task: `arm` (the main job) or `claw` (the paper's claw scenes).
    #[arg(long, value_enum, default_value = "arm")]
    pub task: TaskArg,
    /// Data folder of the claw task.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder: demonstrations, checkpoints, exported models, report.md, eval.json, figures
    /// (default: out/<task>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the diffusion policy's training steps (the MSE baseline trains a quarter as many).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Claw: samples per scene.
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// Arm: demonstrations to generate.
    #[arg(long, default_value_t = 200)]
    pub demos: usize,
    /// Arm: closed-loop episodes in-process per policy × sampler.
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    /// Arm: episodes through the serial bridge per policy (0 = skip the bridge).
    #[arg(long, default_value_t = 30)]
    pub bridge_episodes: usize,
    /// Arm: the emulated arm's device seconds per wall second on the bridge.
    #[arg(long, default_value = "5", value_parser = diffbc_bridge::checked::flag::time_scale, allow_hyphen_values = true)]
    pub time_scale: f64,
    /// Seed of data, training and evaluation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Arm: samplers to evaluate (default ddpm, diffusion-x, kde).
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// `diffbc report` arguments.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Output folder: REPORT.md, figures/, report.json and one folder per task.
    #[arg(long, default_value = "out/report")]
    pub out: PathBuf,
    /// Seed of every training run, data draw and evaluation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tasks (repeat; default claw and arm). Push-T is opt-in: it trains
    /// for about 45 minutes per diffusion model.
    #[arg(long = "task", value_enum)]
    pub tasks: Vec<TaskArg>,
    /// Multiplies every training run's steps (1 = the grid's defaults).
    #[arg(long, default_value_t = 1.0)]
    pub steps_scale: f64,
    /// Claw data folder.
    #[arg(long)]
    pub claw_data: Option<PathBuf>,
    /// Claw: sampled actions per scene.
    #[arg(long, default_value_t = 1000)]
    pub claw_samples: usize,
    /// Arm: demonstrations generated.
    #[arg(long, default_value_t = 200)]
    pub arm_demos: usize,
    /// Arm: closed-loop episodes per row.
    #[arg(long, default_value_t = 100)]
    pub arm_episodes: usize,
    /// Arm: also train the Basic MLP and Transformer denoisers (opt-in).
    #[arg(long)]
    pub arm_architectures: bool,
    /// Smoke test of the harness: tiny networks and data sets, so the whole
    /// grid runs in a minute. The figures it writes mean nothing.
    #[arg(long)]
    pub smoke: bool,
}
