//! `diffbc sample`, `eval --task claw` and `pipeline --task claw`: the
//! paper's claw scenes. Checkpoints are exported into a scratch folder first
//! and every policy runs as exported (`diffbc_runtime::Policy` on tract).

use crate::args::{DeviceArg, EvalArgs, PipelineArgs, SampleArgs};
use crate::training::{data_dir, load_dataset, train_on_device};
use anyhow::{Context, Result};
use diffbc_deploy::cli::SamplerKindArg;
use diffbc_runtime::{EngineChoice, Policy, SamplerConfig};
use diffbc_tasks::Task;
use diffbc_tasks::claw::{ClawScenes, eval};
use diffbc_train::config::Method;
use std::path::PathBuf;

/// The samplers `eval --task claw` runs without `--sampler`.
const DEFAULT_SAMPLERS: [SamplerKindArg; 3] = [
    SamplerKindArg::Ddpm,
    SamplerKindArg::DiffusionX,
    SamplerKindArg::Kde,
];

/// `diffbc sample`: `n` actions for one claw scene, one JSON line each.
pub fn sample(a: &SampleArgs) -> Result<()> {
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let dir = Task::Claw.exported(&a.checkpoint, scratch.path())?;
    let mut policy = Policy::load(&dir, EngineChoice::Tract)
        .with_context(|| format!("loading {}", dir.display()))?;
    let scenes = ClawScenes::load(&data_dir(Task::Claw, &a.data))?;
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
    if !policy.is_direct() {
        policy.set_sampler(a.sampler.configs(&[SamplerKindArg::DiffusionX])[0])?;
    }
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(a.seed);
    let actions = policy.sample_many(&scene.image, a.n, &mut rng)?;
    for p in actions.chunks_exact(2) {
        let label = scene.label_at(p[0], p[1]).unwrap_or(0);
        println!(
            "{{\"x\": {:.5}, \"y\": {:.5}, \"object\": {label}}}",
            p[0], p[1]
        );
    }
    Ok(())
}

/// `diffbc eval --task claw`.
pub fn evaluate(a: &EvalArgs) -> Result<()> {
    let scenes = ClawScenes::load(&data_dir(Task::Claw, &a.data))?;
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let models = a
        .checkpoints
        .iter()
        .map(|ck| Task::Claw.exported(ck, scratch.path()))
        .collect::<diffbc_tasks::Result<Vec<PathBuf>>>()?;
    let samplers = a.sampler.configs(&DEFAULT_SAMPLERS);
    let (records, points) = eval::evaluate_all(
        &models,
        EngineChoice::Tract,
        &samplers,
        &scenes,
        a.claw.samples.unwrap_or(1000),
        a.claw.kde_samples.unwrap_or(200),
        a.seed,
        a.threads
            .unwrap_or_else(diffbc_tasks::pool::default_threads),
    )?;
    eval::write_report(&a.out, &records, &points, &scenes, a.json.as_deref(), "")?;
    if let Some(j) = &a.json {
        println!("wrote {}", j.display());
    }
    Ok(())
}

/// `diffbc pipeline --task claw`: train diffusion and MSE on the claw scenes, export, evaluate, report.
pub fn pipeline(a: &PipelineArgs) -> Result<()> {
    let task = Task::Claw;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("out/claw"));
    let dir = data_dir(task, &a.data);
    let scenes = ClawScenes::load(&dir)?;
    let t0 = std::time::Instant::now();
    let mut checkpoints = Vec::new();
    let mut lines = String::new();
    for method in [Method::Diffusion, Method::Mse] {
        let mut config = task.train_config(method);
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
        // The deployable result of the pipeline: out/models/claw-<method>.
        checkpoints.push(task.exported(&ck, &out.join("models"))?);
    }
    let samplers = [
        SamplerConfig::ddpm(),
        SamplerConfig::diffusion_x(8),
        SamplerConfig::kde(50, 0.1),
    ];
    let (records, points) = eval::evaluate_all(
        &checkpoints,
        EngineChoice::Tract,
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
    Ok(eval::write_report(
        &out, &records, &points, &scenes, None, &preamble,
    )?)
}
