//! `diffbc eval --task pusht`.

use crate::args::EvalArgs;
use crate::training::data_dir;
use anyhow::{Context, Result};
use diffbc_runtime::SamplerConfig;
use diffbc_tasks::Task;
use diffbc_tasks::pusht::eval::{self, PushTRecord, RunSpec};
use diffbc_tasks::pusht::{
    EPISODES as PUSHT_EPISODES, EXTRA_STEPS as PUSHT_EXTRA_STEPS,
    KDE_CANDIDATES as PUSHT_KDE_CANDIDATES,
};

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

/// `diffbc eval --task pusht <models or checkpoints>`.
pub fn evaluate(a: &EvalArgs) -> Result<()> {
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let episodes = a.episodes.unwrap_or(PUSHT_EPISODES);
    let seed_base = eval::EVAL_SEED_BASE + 1000 * a.seed;
    let workers = a
        .threads
        .unwrap_or_else(diffbc_tasks::pool::default_threads);
    let mut records: Vec<PushTRecord> = Vec::new();
    let t0 = std::time::Instant::now();
    if a.pusht.replay {
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
    let models = a
        .checkpoints
        .iter()
        .map(|c| Ok((None, Task::PushT.exported(c, scratch.path())?)))
        .collect::<Result<Vec<_>>>()?;
    records.extend(eval::evaluate_models(
        &models,
        &samplers(&a.sampler),
        &RunSpec {
            engine: a
                .pusht
                .engine
                .unwrap_or(diffbc_runtime::EngineChoice::Native),
            sampler: SamplerConfig::ddpm(),
            execute: a.pusht.execute,
            episodes,
            seed_base,
            workers,
        },
    )?);
    Ok(eval::write_outputs(
        &a.out,
        a.json.as_deref(),
        &records,
        seed_base,
        t0.elapsed().as_secs_f64(),
    )?)
}
