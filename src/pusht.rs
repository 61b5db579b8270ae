//! `diffbc eval --task pusht`.

use crate::args::EvalArgs;
use crate::exported::{exported_with, kind_of};
use crate::training::data_dir;
use anyhow::{Context, Result};
use diffbc_runtime::SamplerConfig;
use diffbc_tasks::pusht::eval::{self, PushTRecord, RunSpec};
use diffbc_tasks::pusht::{
    EPISODES as PUSHT_EPISODES, EXTRA_STEPS as PUSHT_EXTRA_STEPS,
    KDE_CANDIDATES as PUSHT_KDE_CANDIDATES,
};
use std::path::Path;

/// The samplers to evaluate: `--sampler` if given, else DDPM, Diffusion-X
/// (M = [`PUSHT_EXTRA_STEPS`]) and KDE (N = [`PUSHT_KDE_CANDIDATES`]).
fn samplers(a: &diffbc_deploy::cli::SamplerArgs) -> Vec<SamplerConfig> {
    let mut s = a.clone();
    s.extra_steps.get_or_insert(PUSHT_EXTRA_STEPS);
    s.candidates.get_or_insert(PUSHT_KDE_CANDIDATES);
    s.configs(&[
        diffbc_deploy::cli::SamplerKindArg::Ddpm,
        diffbc_deploy::cli::SamplerKindArg::DiffusionX,
        diffbc_deploy::cli::SamplerKindArg::Kde,
    ])
}

/// The export options for checkpoints given to `eval --task pusht`.
pub fn export_options() -> diffbc_export::ExportOptions {
    diffbc_export::ExportOptions {
        force: true,
        sampler: SamplerConfig::diffusion_x(PUSHT_EXTRA_STEPS),
        ..Default::default()
    }
}

/// `diffbc eval --task pusht <models or checkpoints>`.
pub fn evaluate(a: &EvalArgs) -> Result<()> {
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let episodes = a.episodes.unwrap_or(PUSHT_EPISODES);
    let seed_base = eval::EVAL_SEED_BASE + 1000 * a.seed;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut records: Vec<PushTRecord> = Vec::new();
    let t0 = std::time::Instant::now();
    if a.replay {
        let data = data_dir(diffbc_tasks::Task::PushT, &a.data);
        let demos = diffbc_tasks::pusht::load_demos(&data)?;
        let r = eval::replay(&demos)?;
        println!(
            "replayed {} demonstrations: final block position {:.1} px from the recorded one on average",
            demos.len(),
            r.mean_final_block_error_px
        );
        records.push(r.recorded);
        records.push(r.replayed);
    }
    let models: Vec<(Option<String>, std::path::PathBuf)> =
        a.checkpoints.iter().map(|c| (None, c.clone())).collect();
    records.extend(evaluate_models(
        &models,
        scratch.path(),
        &samplers(&a.sampler),
        &RunSpec {
            engine: a.engine,
            sampler: SamplerConfig::ddpm(),
            execute: a.execute,
            episodes,
            seed_base,
            workers,
        },
    )?);
    write_outputs(
        &a.out,
        a.json.as_deref(),
        &records,
        seed_base,
        t0.elapsed().as_secs_f64(),
    )
}

fn write_outputs(
    out: &Path,
    json: Option<&Path>,
    records: &[PushTRecord],
    seed_base: u64,
    secs: f64,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let report = format!(
        "# Push-T from state\n\nSeeded initial states {}…, at most {} steps at 10 Hz. Score = mean over episodes of the highest reward, reward = coverage of the goal T by the block / 0.95, clipped to 1 (Diffusion Policy's published metric); raw coverage beside it; success = coverage above 0.95. Evaluation took {:.0} s.\n\n{}",
        seed_base,
        diffbc_tasks::pusht::env::MAX_STEPS,
        secs,
        eval::markdown_table(records)
    );
    let path = out.join("report.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    print!("{}", eval::markdown_table(records));
    if let Some(j) = json {
        if let Some(parent) = j.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(j, serde_json::to_string_pretty(records)?)
            .with_context(|| format!("writing {}", j.display()))?;
        println!("wrote {}", j.display());
    }
    Ok(())
}

/// Export (if needed) and evaluate each model: denoisers with each of
/// `samplers`, direct heads once. `spec.sampler` is replaced per row. A model
/// given a label is named by it in the records, else by its method.
pub fn evaluate_models(
    models: &[(Option<String>, std::path::PathBuf)],
    scratch: &Path,
    samplers: &[SamplerConfig],
    spec: &RunSpec,
) -> Result<Vec<PushTRecord>> {
    let mut records = Vec::new();
    for (name, ck) in models {
        let dir = exported_with(ck, scratch, &export_options())?;
        let kind = kind_of(&dir)?;
        let method = name.clone().unwrap_or(kind.method);
        let list: Vec<Option<SamplerConfig>> = if kind.direct.is_some() {
            vec![None]
        } else {
            samplers.iter().copied().map(Some).collect()
        };
        for sampler in list {
            let label = match (&kind.direct, sampler) {
                (Some(l), _) => l.clone(),
                (None, Some(s)) => s.label(),
                (None, None) => "-".into(),
            };
            let spec = RunSpec {
                sampler: sampler.unwrap_or_else(SamplerConfig::ddpm),
                ..*spec
            };
            let pb = eval::progress(spec.episodes, format!("{method} {label}"), true);
            let (eps, rate, deployed) = eval::rollouts(&dir, &spec, &pb)?;
            pb.finish_and_clear();
            let r = eval::summarise(&method, &label, Some(&deployed), &eps, rate);
            println!(
                "{} {} (chunk {}/{}, {}): mean max coverage {:.3}, success {:.3} over {} episodes",
                r.method,
                r.sampler,
                r.horizon,
                r.execute,
                r.engine,
                r.mean_max_coverage,
                r.success_rate,
                r.episodes
            );
            records.push(r);
        }
    }
    Ok(records)
}

/// The default Push-T evaluation of `models` (labelled), for `diffbc report`:
/// the default samplers, [`PUSHT_EPISODES`] seeded states from `seed`.
pub fn evaluate_default(
    models: &[(String, std::path::PathBuf)],
    seed: u64,
) -> Result<Vec<PushTRecord>> {
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let models: Vec<(Option<String>, std::path::PathBuf)> = models
        .iter()
        .map(|(l, p)| (Some(l.clone()), p.clone()))
        .collect();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    evaluate_models(
        &models,
        scratch.path(),
        &[
            SamplerConfig::ddpm(),
            SamplerConfig::diffusion_x(PUSHT_EXTRA_STEPS),
            SamplerConfig::kde(
                PUSHT_KDE_CANDIDATES,
                diffbc_deploy::cli::DEFAULT_KDE_BANDWIDTH,
            ),
        ],
        &RunSpec {
            engine: diffbc_runtime::EngineChoice::Native,
            sampler: SamplerConfig::ddpm(),
            execute: None,
            episodes: PUSHT_EPISODES,
            seed_base: eval::EVAL_SEED_BASE + 1000 * seed,
            workers,
        },
    )
}
