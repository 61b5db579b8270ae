//! The paper's comparison in one run (`diffbc report`; feature `train`). Every method, every
//! denoiser architecture and the samplers, on the claw scenes and the
//! emulated-arm task (Push-T on request), with fixed seeds; writes
//! `REPORT.md`, the figures and every record as JSON.
//!
//! The grid is a typed list of [`Cell`]s. Training steps are the grid's
//! defaults (chosen so the default grid fits in an hour on a 2-core CPU)
//! times `--steps-scale`.

use crate::Task as TaskKind;
use crate::arm::{self, ArmTask};
use crate::claw::ClawScenes;
use crate::claw::eval::{ClawRecord, markdown_table};
use crate::error::{Context, Result};
use diffbc_runtime::{DEFAULT_KDE_BANDWIDTH, EngineChoice, SamplerConfig};
use diffbc_train::config::{Method, TrainConfig};
use diffbc_train::model::DenoiserConfig;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `diffbc report` runs: output, seed, tasks, scale and per-task sizes.
#[derive(Debug, Clone)]
pub struct StudyOptions {
    /// Output folder: REPORT.md, figures/, report.json and one folder per task.
    pub out: PathBuf,
    /// Seed of every training run, data draw and evaluation.
    pub seed: u64,
    /// Tasks, in order (empty: claw and arm).
    pub tasks: Vec<TaskKind>,
    /// Multiplies every training run's steps (1 = the grid's defaults).
    pub steps_scale: f64,
    /// Claw data folder (default: the task's).
    pub claw_data: Option<PathBuf>,
    /// Claw: sampled actions per scene.
    pub claw_samples: usize,
    /// Arm: demonstrations generated.
    pub arm_demos: usize,
    /// Arm: closed-loop episodes per row.
    pub arm_episodes: usize,
    /// Arm: also train the Basic MLP and Transformer denoisers.
    pub arm_architectures: bool,
    /// Arm: also the mode-steering study — two operators' demonstrations,
    /// their styles learned without labels, a policy steered towards and
    /// away from each (see [`arm::modes::style_steering_study`]).
    pub arm_modes: bool,
    /// Tiny networks and data sets: the whole grid runs in a minute; the
    /// figures it writes mean nothing.
    pub smoke: bool,
}

/// One trained model of the grid.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Task.
    #[serde(serialize_with = "task_name")]
    pub task: TaskKind,
    /// Method.
    pub method: Method,
    /// Denoiser (diffusion only).
    pub denoiser: Option<DenoiserConfig>,
    /// Observation dropout (guidance needs > 0).
    pub obs_dropout: f64,
    /// Training steps.
    pub steps: usize,
}

fn task_name<S: serde::Serializer>(t: &TaskKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.name())
}

impl Cell {
    /// Row label: the method, with the architecture for diffusion and a
    /// `cfg` mark for the guidance-trained model.
    pub fn label(&self) -> String {
        let mut s = match &self.denoiser {
            Some(d) if self.method == Method::Diffusion => format!("diffusion-{}", d.name()),
            _ => self.method.name().to_string(),
        };
        if self.obs_dropout > 0.0 {
            s.push_str("-cfg");
        }
        s
    }

    fn config(&self, seed: u64, smoke: bool) -> TrainConfig {
        let mut c = self.task.train_config(self.method);
        if let Some(d) = &self.denoiser {
            c.denoiser = d.clone();
        }
        if smoke {
            shrink(&mut c);
        }
        c.obs_dropout = self.obs_dropout;
        c.optim.steps = self.steps;
        c.optim.warmup_steps = c.optim.warmup_steps.min(self.steps / 4);
        c.checkpoint_every = 0;
        c.seed = seed;
        c
    }
}

/// Tiny sizes for `--smoke` (same architectures, a fraction of the width).
fn shrink(c: &mut TrainConfig) {
    use diffbc_train::model::{BasicMlpConfig, EncoderConfig, MlpSieveConfig, TransformerConfig};
    c.encoder = match &c.encoder {
        EncoderConfig::Mlp { .. } => EncoderConfig::Mlp {
            hidden: 16,
            embed: 8,
        },
        EncoderConfig::Cnn { .. } => EncoderConfig::Cnn {
            layers: vec![diffbc_train::model::ConvLayerConfig {
                channels: 4,
                patch: 8,
            }],
            embed: 8,
        },
    };
    c.denoiser = match &c.denoiser {
        DenoiserConfig::MlpSieve(_) => DenoiserConfig::MlpSieve(MlpSieveConfig {
            embed: 8,
            hidden: 16,
            time_frequency: 1.0,
        }),
        DenoiserConfig::BasicMlp(_) => DenoiserConfig::BasicMlp(BasicMlpConfig {
            hidden: 16,
            layers: 3,
        }),
        DenoiserConfig::Transformer(_) => DenoiserConfig::Transformer(TransformerConfig {
            d_model: 8,
            heads: 2,
            blocks: 1,
            feed_forward: 16,
            time_frequency: 1.0,
        }),
    };
    c.mse_head.hidden = 16;
    c.baseline.hidden = 16;
    c.data.samples = c.data.samples.min(400);
    c.optim.batch_size = 16;
}

/// Steps of a cell: the diffusion steps for denoisers, a quarter for the
/// direct heads (as `TrainConfig::for_task`), times the scale.
fn steps(diffusion: usize, method: Method, scale: f64) -> usize {
    let base = if method == Method::Diffusion {
        diffusion
    } else {
        diffusion / 4
    };
    ((base as f64 * scale).round() as usize).max(2)
}

/// Diffusion-X extra steps swept (M = 0 is DDPM).
pub const SWEEP_EXTRA_STEPS: [usize; 5] = [0, 2, 4, 8, 16];
/// KDE candidates swept.
pub const SWEEP_KDE: [usize; 2] = [10, 50];
/// Guidance weights of the study.
pub const GUIDANCE: [f32; 4] = [0.0, 1.0, 4.0, 8.0];

/// The grid for `tasks`.
pub fn grid(a: &StudyOptions, tasks: &[TaskKind]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &task in tasks {
        // Claw: 6,000 diffusion steps (the 20,000 default takes 11 min per model).
        let diffusion_steps = match task {
            TaskKind::Claw => 6_000,
            TaskKind::Arm | TaskKind::PushT => task.train_defaults().steps,
        };
        let archs: Vec<DenoiserConfig> = match task {
            TaskKind::Claw => DenoiserConfig::all().to_vec(),
            TaskKind::Arm if a.arm_architectures => DenoiserConfig::all().to_vec(),
            TaskKind::Arm | TaskKind::PushT => vec![task.train_defaults().denoiser],
        };
        for method in Method::ALL {
            let s = steps(diffusion_steps, method, a.steps_scale);
            if method == Method::Diffusion {
                for d in &archs {
                    // Push-T keeps its wider default sieve.
                    let d = if task == TaskKind::PushT {
                        task.train_defaults().denoiser
                    } else {
                        d.clone()
                    };
                    // The Transformer takes half the steps: on burn's CPU
                    // backend it trains at ~7 steps/s against the sieve's 32
                    // (many small ops), and the grid must fit in an hour.
                    let steps = if matches!(d, DenoiserConfig::Transformer(_)) {
                        (s / 2).max(2)
                    } else {
                        s
                    };
                    cells.push(Cell {
                        task,
                        method,
                        denoiser: Some(d),
                        obs_dropout: 0.0,
                        steps,
                    });
                }
                if task == TaskKind::Arm {
                    cells.push(Cell {
                        task,
                        method,
                        denoiser: Some(task.train_defaults().denoiser),
                        obs_dropout: 0.1,
                        steps: s,
                    });
                }
            } else {
                cells.push(Cell {
                    task,
                    method,
                    denoiser: None,
                    obs_dropout: 0.0,
                    steps: s,
                });
            }
        }
    }
    cells
}

/// Train one cell into `dir`; returns a line for the report.
fn train_cell(
    cell: &Cell,
    a: &StudyOptions,
    data_dir: &Path,
    demos: Option<&diffbc_train::episodes::Episodes>,
    dir: &Path,
) -> Result<String> {
    let config = cell.config(a.seed, a.smoke);
    let data = match demos {
        Some(d) => d.to_dataset(config.history),
        None => cell.task.dataset(&config, data_dir, &Default::default())?,
    };
    let t = Instant::now();
    let o = diffbc_train::train::train::<burn::backend::Autodiff<burn::backend::NdArray<f32>>>(
        &config,
        &data,
        dir,
        &Default::default(),
        diffbc_train::train::RunOptions {
            progress: true,
            force: true,
            ..Default::default()
        },
    )?;
    Ok(format!(
        "| {} | {} | {} | {:.0} | {:.4} | {:.4} |",
        cell.task.name(),
        cell.label(),
        o.steps,
        t.elapsed().as_secs_f64(),
        o.test_loss,
        o.initial_test_loss
    ))
}

/// Train `cells` into `dir/<label>`, `workers` at a time (a training run
/// keeps about one core busy); returns the checkpoint folders in cell order
/// and appends one table line per cell to `training`, in cell order.
fn train_all(
    cells: &[&Cell],
    a: &StudyOptions,
    data_dir: &Path,
    demos: Option<&diffbc_train::episodes::Episodes>,
    dir: &Path,
    training: &mut String,
) -> Result<Vec<PathBuf>> {
    let workers = crate::pool::default_threads().min(2);
    // The Transformer trains ~4× slower per step.
    let costs: Vec<f64> = cells
        .iter()
        .map(|c| {
            let per_step = match &c.denoiser {
                Some(DenoiserConfig::Transformer(_)) if c.method == Method::Diffusion => 4,
                _ => 1,
            };
            (c.steps * per_step) as f64
        })
        .collect();
    let lines = crate::pool::longest_first(&costs, workers, |i| {
        let c = cells[i];
        train_cell(c, a, data_dir, demos, &dir.join(c.label()))
    })?;
    let mut out = Vec::new();
    for (c, line) in cells.iter().zip(lines) {
        training.push_str(&line);
        training.push('\n');
        out.push(dir.join(c.label()));
    }
    Ok(out)
}

/// Everything the report measured.
#[derive(Debug, Serialize)]
struct Records {
    cells: Vec<Cell>,
    claw: Vec<ClawRecord>,
    arm: Vec<arm::eval::ArmRecord>,
    arm_guidance: Vec<arm::eval::ArmRecord>,
    arm_modes: Vec<arm::modes::StyleRow>,
    #[cfg(feature = "pusht")]
    pusht: Vec<crate::pusht::eval::PushTRecord>,
}

/// Weights of the mode-steering rows (towards and away).
pub const STEERING_WEIGHTS: [f32; 2] = [1.0, 3.0];

/// The report's mode-steering study (`diffbc modes --two-operators --scope
/// episode --windows path --hindsight --codes 2 --steer --weight 1,3`): its
/// section text and rows.
fn mode_steering(a: &StudyOptions, dir: &Path) -> Result<(String, Vec<arm::modes::StyleRow>)> {
    use diffbc_train::modes::{ModeScope, ModesConfig};
    type Tb = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
    let task = ArmTask::two_operators();
    let (demos, truth) = arm::demos::generate_with_truth(&task, a.arm_demos, a.seed, true)?;
    let defaults = ModesConfig::default();
    let config = ModesConfig {
        codes: 2,
        scope: ModeScope::Episode,
        seed: a.seed,
        steps: if a.smoke { 100 } else { defaults.steps },
        warmup: if a.smoke { 20 } else { defaults.warmup },
        ..defaults
    };
    let (study, modes) = arm::modes::study_of::<Tb>(
        &task,
        &demos,
        &truth,
        a.seed,
        &config,
        arm::modes::WindowSpec {
            kind: arm::modes::WindowKind::Path,
            hindsight: true,
        },
        &Default::default(),
        true,
        None,
    )?;
    let steps = steps(
        TaskKind::Arm.train_config(Method::Diffusion).optim.steps,
        Method::Diffusion,
        a.steps_scale,
    );
    let training = arm::modes::ModeTraining {
        steps,
        ..Default::default()
    };
    let policy = arm::modes::train_mode_policy::<Tb>(
        &demos,
        &modes,
        &study,
        dir,
        training,
        &Default::default(),
        true,
    )?;
    let rows = arm::modes::style_steering_study(
        &task,
        &demos,
        &study,
        &policy,
        &STEERING_WEIGHTS,
        a.arm_episodes,
        true,
    )?;
    let text = format!(
        "{} demonstrations from two operators (one always passes the obstacle on the left, one on the right); a VQ-VAE with one code per episode over path windows, its decoder told in hindsight the next target reached, finds their styles without labels; the arm's diffusion policy is trained with the soft codes as `mode[k]` channels (mode dropout {}, mode sets {} — with two codes nothing widens —, {steps} steps) and steered towards and away from each code (away by exclusion: towards every other code), {} in-process episodes per row (Diffusion-X M = {}).\n\n{}\n{}",
        a.arm_demos,
        training.dropout,
        training.sets,
        a.arm_episodes,
        arm::report::EXTRA_STEPS,
        study.markdown(),
        arm::modes::style_markdown(&rows)
    );
    Ok((text, rows))
}

/// `diffbc report`.
pub fn run(a: &StudyOptions) -> Result<()> {
    let t0 = Instant::now();
    let tasks: Vec<TaskKind> = if a.tasks.is_empty() {
        vec![TaskKind::Claw, TaskKind::Arm]
    } else {
        a.tasks.clone()
    };
    let cells = grid(a, &tasks);
    std::fs::create_dir_all(a.out.join("figures"))
        .context_with(|| format!("creating {}", a.out.display()))?;
    let mut training = String::from(
        "| task | model | steps | seconds | test loss | untrained |\n|---|---|---|---|---|---|\n",
    );
    let mut records = Records {
        cells: cells.clone(),
        claw: Vec::new(),
        arm: Vec::new(),
        arm_guidance: Vec::new(),
        arm_modes: Vec::new(),
        #[cfg(feature = "pusht")]
        pusht: Vec::new(),
    };
    let mut sections = String::new();
    let mut speed: Vec<(String, f64, f64)> = Vec::new();
    for &task in &tasks {
        let task_cells: Vec<&Cell> = cells.iter().filter(|c| c.task == task).collect();
        let dir = a.out.join(task.name());
        let ts = Instant::now();
        match task {
            TaskKind::Claw => {
                let data = a
                    .claw_data
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(task.default_data()));
                let scenes = ClawScenes::load(&data)?;
                let checkpoints: Vec<(String, PathBuf)> = task_cells
                    .iter()
                    .map(|c| c.label())
                    .zip(train_all(&task_cells, a, &data, None, &dir, &mut training)?)
                    .map(|(label, ck)| {
                        let out = dir.join("models").join(&label);
                        TaskKind::Claw.export(&ck, &out).map(|m| (label, m))
                    })
                    .collect::<Result<_>>()?;
                let samplers = [
                    SamplerConfig::ddpm(),
                    SamplerConfig::diffusion_x(8),
                    SamplerConfig::kde(50, DEFAULT_KDE_BANDWIDTH),
                ];
                let paths: Vec<PathBuf> = checkpoints.iter().map(|(_, p)| p.clone()).collect();
                let (mut rows, points) = crate::claw::eval::evaluate_all(
                    &paths,
                    EngineChoice::Tract,
                    &samplers,
                    &scenes,
                    a.claw_samples,
                    (a.claw_samples / 5).max(1),
                    a.seed,
                    crate::pool::default_threads(),
                )?;
                // evaluate_all labels rows by method; name the architecture.
                let mut k = 1; // row 0 is the ground truth
                for (c, (label, _)) in task_cells.iter().zip(&checkpoints) {
                    let n = if c.method == Method::Diffusion {
                        samplers.len()
                    } else {
                        1
                    };
                    for r in &mut rows[k..k + n] {
                        r.method = label.clone();
                    }
                    k += n;
                }
                let figures = crate::plot::write_scene_figures(
                    &a.out.join("figures").join("claw"),
                    &scenes.scenes,
                    &points,
                )?;
                for r in rows.iter().filter(|r| r.actions_per_second.is_finite()) {
                    speed.push((
                        format!("claw {} {}", r.method, r.sampler),
                        r.actions_per_second,
                        r.on_object_precision,
                    ));
                }
                let _ = writeln!(
                    sections,
                    "## Claw scenes\n\n{} scenes from `{}`, {} samples per scene ({} for KDE), seed {}; {:.0} s.\n\n{}\n{}\n",
                    scenes.scenes.len(),
                    data.display(),
                    a.claw_samples,
                    (a.claw_samples / 5).max(1),
                    a.seed,
                    ts.elapsed().as_secs_f64(),
                    markdown_table(&rows),
                    crate::claw::eval::bars_text(&rows)
                );
                for f in &figures {
                    let name = f
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let _ = writeln!(sections, "![{name}](figures/claw/{name})\n");
                }
                records.claw = rows;
            }
            TaskKind::Arm => {
                let arm_task = ArmTask::default();
                let demos = arm::demos::generate(&arm_task, a.arm_demos, a.seed, true)?;
                let scratch = dir.join("models");
                let mut models = Vec::new();
                let mut guided = None;
                let cks = train_all(
                    &task_cells,
                    a,
                    Path::new(""),
                    Some(&demos),
                    &dir,
                    &mut training,
                )?;
                for (c, ck) in task_cells.iter().zip(&cks) {
                    let exported = TaskKind::Arm.export(ck, &scratch.join(c.label()))?;
                    if c.obs_dropout > 0.0 {
                        guided = Some((c.label(), exported));
                    } else {
                        models.push((c.label(), exported));
                    }
                }
                let mut sweep: Vec<SamplerConfig> = SWEEP_EXTRA_STEPS
                    .iter()
                    .map(|&m| {
                        if m == 0 {
                            SamplerConfig::ddpm()
                        } else {
                            SamplerConfig::diffusion_x(m)
                        }
                    })
                    .collect();
                sweep.extend(
                    SWEEP_KDE
                        .iter()
                        .map(|&n| SamplerConfig::kde(n, DEFAULT_KDE_BANDWIDTH)),
                );
                let plan = arm::eval::EvalPlan::in_process(sweep, a.arm_episodes);
                let rows = arm::report::run_and_report(
                    &arm_task,
                    &models,
                    &plan,
                    &demos,
                    &dir.join("sweep"),
                    None,
                    "",
                )?;
                for r in rows.iter().filter(|r| r.decisions_per_second.is_some()) {
                    speed.push((
                        format!("arm {} {}", r.method, r.sampler),
                        r.decisions_per_second.unwrap_or(0.0),
                        r.all_targets_rate,
                    ));
                }
                let _ = writeln!(
                    sections,
                    "## Emulated arm: methods and samplers\n\n{} demonstrations, {} in-process episodes per row (seeds from {}); {:.0} s including training.\n\n{}\n{}\n![first task](arm/sweep/figures/first_task.png)\n\n![paths](arm/sweep/figures/paths.png)\n",
                    a.arm_demos,
                    a.arm_episodes,
                    arm::eval::EVAL_SEED_BASE,
                    ts.elapsed().as_secs_f64(),
                    arm::eval::markdown_table(&rows),
                    arm::report::baseline_bars(&rows)
                );
                records.arm = rows;
                if let Some((label, dir_g)) = guided {
                    let plan = arm::eval::EvalPlan::in_process(
                        GUIDANCE
                            .iter()
                            .map(|&w| {
                                SamplerConfig::diffusion_x(arm::report::EXTRA_STEPS)
                                    .with_guidance(w)
                            })
                            .collect(),
                        a.arm_episodes,
                    );
                    let rows = arm::report::run_and_report(
                        &arm_task,
                        &[(label, dir_g)],
                        &plan,
                        &demos,
                        &dir.join("guidance"),
                        None,
                        "",
                    )?;
                    let _ = writeln!(
                        sections,
                        "## Emulated arm: classifier-free guidance\n\nThe sieve trained with observation dropout 0.1, Diffusion-X M = {}, w ∈ {{0, 1, 4, 8}}.\n\n{}\n{}\n![first task](arm/guidance/figures/first_task.png)\n",
                        arm::report::EXTRA_STEPS,
                        arm::report::guidance_table(&rows),
                        arm::report::guidance_text(&rows)
                    );
                    records.arm_guidance = rows;
                }
                if a.arm_modes {
                    let tm = Instant::now();
                    let (section, rows) = mode_steering(a, &dir.join("modes"))?;
                    let _ = writeln!(
                        sections,
                        "## Emulated arm: steering by operator style

{section}
{:.0} s.
",
                        tm.elapsed().as_secs_f64()
                    );
                    records.arm_modes = rows;
                }
            }
            #[cfg(not(feature = "pusht"))]
            TaskKind::PushT => crate::invalid!("Push-T needs diffbc-tasks' `pusht` feature"),
            #[cfg(feature = "pusht")]
            TaskKind::PushT => {
                let data = PathBuf::from(task.default_data());
                let dirs: Vec<(String, PathBuf)> = task_cells
                    .iter()
                    .map(|c| c.label())
                    .zip(train_all(&task_cells, a, &data, None, &dir, &mut training)?)
                    .collect();
                let rows = crate::pusht::eval::evaluate_default(&dirs, a.seed)?;
                let _ = writeln!(
                    sections,
                    "## Push-T from state\n\n{}\n",
                    crate::pusht::eval::markdown_table(&rows)
                );
                records.pusht = rows;
            }
        }
    }
    crate::plot::scatter_log_x(
        &a.out.join("figures").join("quality_vs_speed.png"),
        "quality vs actions per second (log)",
        &speed,
    )?;
    let mut report = format!(
        "# diffbc: the paper's comparison\n\nGenerated by `diffbc report` (seed {}, steps × {}); total wall time {:.0} s on this machine.\n\n## Training\n\n{training}\n",
        a.seed,
        a.steps_scale,
        t0.elapsed().as_secs_f64()
    );
    report.push_str(&sections);
    let _ = writeln!(
        report,
        "## Quality against speed\n\nClaw: on-object precision; arm: all-targets completion; x: actions (decisions) per second on this CPU, log scale.\n\n![quality vs speed](figures/quality_vs_speed.png)\n\n{}",
        crate::plot::speed_table(&speed)
    );
    let path = a.out.join("REPORT.md");
    std::fs::write(&path, report).context_with(|| format!("writing {}", path.display()))?;
    let json = a.out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&records)? + "\n")
        .context_with(|| format!("writing {}", json.display()))?;
    println!("report: {}  json: {}", path.display(), json.display());
    Ok(())
}
