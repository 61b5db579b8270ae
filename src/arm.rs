//! `diffbc eval --task arm`, `diffbc pipeline` (the main job) and reading a
//! task file for `diffbc demos`.

use crate::args::{DeviceArg, EvalArgs, PipelineArgs};
use crate::training::train_on_device;
use anyhow::{Context, Result};
use diffbc_deploy::cli::{SamplerArgs, SamplerKindArg};
use diffbc_tasks::Task;
use diffbc_tasks::arm::ArmTask;
pub use diffbc_tasks::arm::demos::generate;
pub use diffbc_tasks::arm::demos::orders_from_episodes;
use diffbc_tasks::arm::eval::EvalPlan;
use diffbc_tasks::arm::report::{EXTRA_STEPS, KDE_CANDIDATES, run_and_report};
use diffbc_train::config::Method;
use diffbc_train::episodes::Episodes;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The samplers to evaluate: `--sampler` if given, else DDPM, Diffusion-X
/// (M = [`EXTRA_STEPS`], and M = 8 beside it), KDE (N = [`KDE_CANDIDATES`]).
fn samplers(a: &SamplerArgs) -> Vec<diffbc_runtime::SamplerConfig> {
    use diffbc_runtime::SamplerConfig;
    let m = a.extra_steps.unwrap_or(EXTRA_STEPS);
    let n = a.candidates.unwrap_or(KDE_CANDIDATES);
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

/// `diffbc eval --task arm`.
pub fn evaluate(a: &EvalArgs) -> Result<()> {
    let task = ArmTask::default();
    let demos_path = a
        .arm
        .demos
        .clone()
        .unwrap_or_else(|| PathBuf::from(Task::Arm.default_data()));
    let demos = Episodes::load(&demos_path).with_context(|| {
        format!(
            "the demonstrations ({}; `diffbc demos --task arm` writes them)",
            demos_path.display()
        )
    })?;
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let mut models = Vec::new();
    let mut steering = None;
    for ck in &a.checkpoints {
        let dir = Task::Arm.exported(ck, scratch.path())?;
        let mut method = diffbc_tasks::ModelKind::read(&dir)?.method;
        // A mode past a policy's own, or a policy without modes, is refused
        // here, naming the policy, before any episode runs.
        let policy = diffbc_runtime::Policy::load(&dir, diffbc_runtime::EngineChoice::Native)
            .with_context(|| format!("loading {}", dir.display()))?;
        let (modes, input) = (policy.modes(), policy.mode_input());
        drop(policy);
        if let Some(s) = a
            .arm
            .steering
            .steering(modes, input)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", ck.display()))?
        {
            if steering.as_ref().is_some_and(|prev| *prev != s) {
                anyhow::bail!(
                    "--mode / --avoid-mode: {} has {modes} modes, unlike the policies before it; evaluate it on its own",
                    ck.display()
                );
            }
            method = format!("{method} {}", a.arm.steering.label(input));
            steering = Some(s);
        }
        models.push((method, dir));
    }
    let plan = EvalPlan {
        samplers: samplers(&a.sampler),
        episodes: a.episodes.unwrap_or(100),
        bridge_episodes: a.arm.bridge_episodes.unwrap_or(30),
        time_scale: a.arm.time_scale.unwrap_or(5.0),
        progress: true,
        threads: a
            .threads
            .unwrap_or_else(diffbc_tasks::pool::default_threads),
        steering,
    };
    run_and_report(&task, &models, &plan, &demos, &a.out, a.json.as_deref(), "")?;
    Ok(())
}

/// `diffbc pipeline --task arm`: demonstrations → train → export → closed loop → report.
pub fn pipeline(a: &PipelineArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("out/arm"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let task = ArmTask::default();
    // 1. Demonstrations.
    let demos_path = out.join("arm.demos");
    let demos = generate(&task, a.demos, a.seed, true)?;
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
        let mut config = Task::Arm.train_config(method);
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
        Task::Arm.export(&ck, &model)?;
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
        steering: None,
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
