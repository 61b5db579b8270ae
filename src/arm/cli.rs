//! `diffbc eval --task arm` and `diffbc pipeline` (the main job).

use super::eval::{self, ArmRecord, EvalPlan, RolloutPath};
use super::{ArmTask, JOINTS, orders_from_episodes};
use crate::{Cpu, DeviceArg, EvalArgs, PipelineArgs, SamplerKindArg, train_on_device};
use anyhow::{Context, Result, bail};
use diffbc_train::config::{Method, TrainConfig};
use diffbc_train::episodes::Episodes;
use diffbc_train::task::TaskKind;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Diffusion-X extra steps on the arm (one run, 100 episodes, the default
/// policy): M = 2 kept the demonstrations' order entropy (97 %) and
/// completed 0.75; M = 4 0.82 / 88 %; M = 8 0.84 / 81 % — more extra steps
/// trade diversity for precision, as in the paper's sweep.
pub const ARM_EXTRA_STEPS: usize = 2;
/// KDE candidates on the arm (KDE runs every control tick).
pub const ARM_KDE_CANDIDATES: usize = 10;

/// The samplers to evaluate: `--sampler` if given, else DDPM, Diffusion-X
/// (M = [`ARM_EXTRA_STEPS`], and M = 8 beside it), KDE (N = [`ARM_KDE_CANDIDATES`]).
fn samplers(a: &crate::SamplerArgs) -> Vec<diffbc_runtime::SamplerConfig> {
    use diffbc_runtime::SamplerConfig;
    let m = a.extra_steps.unwrap_or(ARM_EXTRA_STEPS);
    let n = a.candidates.unwrap_or(ARM_KDE_CANDIDATES);
    let list: Vec<SamplerConfig> = if a.samplers.is_empty() {
        let mut v = vec![SamplerConfig::ddpm(), SamplerConfig::diffusion_x(m)];
        if m != 8 {
            v.push(SamplerConfig::diffusion_x(8));
        }
        v.push(SamplerConfig::kde(n, a.bandwidth));
        v
    } else {
        a.samplers
            .iter()
            .map(|k| match k {
                SamplerKindArg::DiffusionX => SamplerConfig::diffusion_x(m),
                SamplerKindArg::Kde => SamplerConfig::kde(n, a.bandwidth),
                other => a.configs(&[*other])[0],
            })
            .collect()
    };
    list.into_iter()
        .map(|c| c.with_guidance(a.guidance))
        .collect()
}

/// A JSON [`ArmTask`] (unknown fields are errors naming the field).
pub fn read_task(path: &Path) -> Result<ArmTask> {
    let text = diffbc_runtime::fs::read_to_string(path, diffbc_runtime::fs::limits::JSON)?;
    let task: ArmTask = serde_json::from_str(&text)
        .with_context(|| format!("{}: not an arm task", path.display()))?;
    task.validate()
        .with_context(|| format!("{}: invalid arm task", path.display()))?;
    Ok(task)
}

/// The exported folder for `dir`: itself if it has a manifest, else the
/// checkpoint exported into `scratch` (with the arm's default sampler).
fn exported(dir: &Path, scratch: &Path) -> Result<PathBuf> {
    crate::exported::exported_with(dir, scratch, &export_options())
}

fn export_options() -> diffbc_export::ExportOptions {
    diffbc_export::ExportOptions {
        force: true,
        sampler: diffbc_runtime::SamplerConfig::diffusion_x(ARM_EXTRA_STEPS),
        task_label: Some("arm".into()),
        ..Default::default()
    }
}

/// Export an arm checkpoint with the arm's defaults; returns `out`.
pub(crate) fn export_model(checkpoint: &Path, out: &Path) -> Result<PathBuf> {
    export(checkpoint, out)?;
    Ok(out.to_path_buf())
}

fn export(checkpoint: &Path, out: &Path) -> Result<()> {
    diffbc_export::export_checkpoint::<Cpu>(
        checkpoint,
        out,
        &export_options(),
        &Default::default(),
    )
    .with_context(|| format!("exporting {}", checkpoint.display()))?;
    Ok(())
}

/// `diffbc eval --task arm`.
pub fn eval(a: &EvalArgs) -> Result<()> {
    let task = ArmTask::default();
    let demos = Episodes::load(&a.demos).with_context(|| {
        format!(
            "the demonstrations ({}; `diffbc demos --task arm` writes them)",
            a.demos.display()
        )
    })?;
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let mut models = Vec::new();
    for ck in &a.checkpoints {
        let dir = exported(ck, scratch.path())?;
        models.push((crate::exported::kind_of(&dir)?.method, dir));
    }
    let plan = EvalPlan {
        samplers: samplers(&a.sampler),
        episodes: a.episodes.unwrap_or(100),
        bridge_episodes: a.bridge_episodes,
        time_scale: a.time_scale,
        progress: true,
        threads: a
            .threads
            .unwrap_or_else(diffbc_tasks::pool::default_threads),
    };
    run_and_report(&task, &models, &plan, &demos, &a.out, a.json.as_deref(), "")?;
    Ok(())
}

pub(crate) fn run_and_report(
    task: &ArmTask,
    models: &[(String, PathBuf)],
    plan: &EvalPlan,
    demos: &Episodes,
    out: &Path,
    json: Option<&Path>,
    preamble: &str,
) -> Result<Vec<ArmRecord>> {
    if demos.obs_dim != task.frame_len() || demos.action_dim != JOINTS {
        bail!(
            "the demonstrations have {}-value observations and {}-value actions; the arm task needs {} and {JOINTS}",
            demos.obs_dim,
            demos.action_dim,
            task.frame_len()
        );
    }
    let demo_orders = orders_from_episodes(task, demos);
    let refs: Vec<(String, &Path)> = models
        .iter()
        .map(|(m, p)| (m.clone(), p.as_path()))
        .collect();
    let (records, paths) = eval::evaluate(task, &refs, plan, &demo_orders, &demos.actions)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let figures = out.join("figures");
    // First-task shares per row (in-process rows and the demonstrations).
    let series: Vec<(String, Vec<f64>)> = records
        .iter()
        .filter(|r| r.path != RolloutPath::Bridge)
        .map(|r| (row_label(r), r.first_task_shares.clone()))
        .collect();
    diffbc_train::plot::bar_chart(
        &figures.join("first_task.png"),
        "share of episodes by first target",
        &series,
    )?;
    // Joint 0-1 paths of the first episodes of each row, with the targets.
    let marks: Vec<[f32; 2]> = (0..task.sites)
        .map(|i| {
            let s = task.site(i);
            [s[0], s[1]]
        })
        .collect();
    let mut panels = vec![(
        "demonstrations".to_string(),
        (0..demos.len().min(6))
            .map(|e| {
                demos
                    .episode(e)
                    .map(|i| {
                        let a = demos.action_row(i);
                        [a[0], a[1]]
                    })
                    .collect()
            })
            .collect(),
    )];
    for (label, eps) in &paths {
        panels.push((
            label.clone(),
            eps.iter()
                .map(|a| a.chunks_exact(JOINTS).map(|r| [r[0], r[1]]).collect())
                .collect(),
        ));
    }
    let disc = task.obstacle().map(|o| (o.center, o.radius));
    diffbc_train::plot::paths_figure(&figures.join("paths.png"), &panels, &marks, disc, 2.0)?;

    let table = eval::markdown_table(&records);
    let timing = eval::timing_table(&records);
    let mut report = format!("# diffbc arm evaluation\n\n{preamble}\n## Results\n\n{table}\n");
    report.push_str(
        "Tasks done: distinct targets reached per episode (the task asks for all of `goal`). \
         Order entropy: entropy of the sequence of targets reached, over episodes (bits, Miller–Madow corrected). \
         First-task shares: how often the most / least common target came first (uniform = 1/sites). \
         Action W1: sliced Wasserstein-1 between the commands sent and the demonstrations' (the demonstrations' row is split-half, the noise floor).\n\n",
    );
    let _ = write!(
        report,
        "## Through the serial bridge\n\nThe same seeds, each episode a fresh emulated arm on a pty \
         (device clock {}× the wall clock; the control loop runs {}× faster on the wire, so the \
         dynamics per tick are unchanged).\n\n{timing}\n## Figures\n\n![first task](figures/first_task.png)\n\n![paths](figures/paths.png)\n",
        plan.time_scale, plan.time_scale
    );
    let bars = bars_text(&records);
    let _ = write!(report, "\n## Bars\n\n{bars}");
    let report_path = out.join("report.md");
    std::fs::write(&report_path, report)
        .with_context(|| format!("writing {}", report_path.display()))?;
    let json_path = json
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out.join("eval.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&records)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("{table}\n{timing}\n{bars}");
    println!(
        "report: {}  figures: {}  json: {}",
        report_path.display(),
        figures.display(),
        json_path.display()
    );
    Ok(records)
}

fn row_label(r: &ArmRecord) -> String {
    if r.sampler == "-" {
        r.method.clone()
    } else {
        format!("{} {}", r.method, r.sampler)
    }
}

/// The bars, stated against the records (printed, and in the report).
fn bars_text(records: &[ArmRecord]) -> String {
    let find = |method: &str, path: RolloutPath, dx: bool| {
        records.iter().find(|r| {
            r.method == method && r.path == path && (!dx || r.sampler.starts_with("diffusion-x"))
        })
    };
    let mut s = String::new();
    for path in [RolloutPath::InProcess, RolloutPath::Bridge] {
        if let (Some(d), Some(m)) = (find("diffusion", path, true), find("mse", path, false)) {
            let gap = d.all_targets_rate - m.all_targets_rate;
            let ratio = d.order_entropy / d.demo_order_entropy.max(1e-9);
            let _ = writeln!(
                s,
                "- {:?}: Diffusion-X all-targets {:.3} vs MSE {:.3} (gap {:+.3}, bar ≥ +0.15: {}); order entropy {:.2} bits = {:.0}% of the demonstrations' {:.2} (bar within 10%: {}); MSE's {:.2}.",
                path,
                d.all_targets_rate,
                m.all_targets_rate,
                gap,
                if gap >= 0.15 { "met" } else { "NOT met" },
                d.order_entropy,
                100.0 * ratio,
                d.demo_order_entropy,
                if (ratio - 1.0).abs() <= 0.10 {
                    "met"
                } else {
                    "NOT met"
                },
                m.order_entropy
            );
        }
    }
    for b in records.iter().filter(|r| r.path == RolloutPath::Bridge) {
        let Some(same) = &b.in_process_same_seeds else {
            continue;
        };
        let agree = eval::rates_agree(
            same.all_targets_rate,
            b.episodes,
            b.all_targets_rate,
            b.episodes,
        );
        let _ = writeln!(
            s,
            "- {} {}: on the same {} seeds, all-targets {:.3} through the bridge vs {:.3} in-process, targets reached {:.2} vs {:.2}; {:.0}% of the seeds end the same way on both paths: {}.",
            b.method,
            b.sampler,
            b.episodes,
            b.all_targets_rate,
            same.all_targets_rate,
            b.tasks_completed_mean,
            same.tasks_completed_mean,
            100.0 * same.same_outcome_share,
            if agree {
                "agree within noise"
            } else {
                "DIFFER beyond noise"
            }
        );
    }
    s
}

/// `diffbc pipeline --task arm`: demonstrations → train → export → closed loop → report.
pub fn pipeline(a: &PipelineArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("out/arm"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let task = ArmTask::default();
    // 1. Demonstrations.
    let demos_path = out.join("arm.demos");
    let demos = super::generate(&task, a.demos, a.seed, true)?;
    demos.save(&demos_path)?;
    let demo_secs = t0.elapsed().as_secs_f64();
    tracing::info!(
        episodes = demos.len(),
        steps = demos.steps(),
        "demonstrations -> {}",
        demos_path.display()
    );
    // 2. Train and 3. export both methods.
    let mut lines = String::new();
    let mut models = Vec::new();
    for method in [Method::Diffusion, Method::Mse] {
        let mut config = TrainConfig::for_task(TaskKind::Arm, method);
        config.seed = a.seed;
        if let Some(s) = a.steps {
            config.optim.steps = if method == Method::Mse {
                (s / 4).max(1)
            } else {
                s
            };
            config.optim.warmup_steps = config.optim.warmup_steps.min(config.optim.steps / 4);
            config.checkpoint_every = 0;
        }
        let data = demos.to_dataset(config.history);
        let ck = out.join(format!("arm-{}", method.name()));
        let ts = std::time::Instant::now();
        let o = train_on_device(&config, &data, &ck, false, true, None, DeviceArg::Cpu)?;
        let model = out.join("models").join(method.name());
        export(&ck, &model)?;
        let _ = writeln!(
            lines,
            "- {}: {} steps in {:.0} s ({:.1} steps/s), test loss {:.4} (untrained {:.4}); exported to `{}`",
            method.name(),
            o.steps,
            ts.elapsed().as_secs_f64(),
            o.steps_per_second,
            o.test_loss,
            o.initial_test_loss,
            model.display()
        );
        models.push((method.name().to_string(), model));
    }
    // 4. Closed loop, in-process and through the bridge.
    let plan = EvalPlan {
        samplers: samplers(&a.sampler),
        episodes: a.episodes,
        bridge_episodes: a.bridge_episodes,
        time_scale: a.time_scale,
        progress: true,
        threads: diffbc_tasks::pool::default_threads(),
    };
    let te = std::time::Instant::now();
    let preamble_head = format!(
        "Demonstrations: {} episodes ({} steps) from the seeded demonstrator, seed {}, in {:.1} s -> `{}`.\n\nTraining on CPU:\n\n{lines}\n",
        demos.len(),
        demos.steps(),
        a.seed,
        demo_secs,
        demos_path.display()
    );
    // The evaluation's own time goes into the preamble once it is known.
    run_and_report(&task, &models, &plan, &demos, &out, None, &preamble_head)?;
    let preamble = format!(
        "{preamble_head}Closed-loop evaluation: {:.0} s. Total wall time {:.0} s.\n",
        te.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    let report_path = out.join("report.md");
    let text = std::fs::read_to_string(&report_path)?;
    std::fs::write(&report_path, text.replacen(&preamble_head, &preamble, 1))?;
    println!("total wall time {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}
