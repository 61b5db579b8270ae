//! Closed-loop scoring on Push-T: seeded initial states, mean max coverage and
//! success rate per method × sampler (Diffusion Policy's metric), and the
//! demonstrations replayed in our environment as the reference row.

use super::env::{MAX_STEPS, OBS_DIM, PushT, reward};
use super::geometry::coverage;
use crate::error::{Context, Result};
use crate::invalid;
use diffbc_runtime::manifest::ActionChunk;
use diffbc_runtime::{EngineChoice, Policy, PolicyOptions, SamplerConfig};
use diffbc_train::episodes::Episodes;
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// Seeds of evaluation episodes start here.
pub const EVAL_SEED_BASE: u64 = 100_000;

/// One row of the table: a method × sampler over seeded episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushTRecord {
    /// `diffusion`, `mse`, or `demonstrations (…)` for the reference rows.
    pub method: String,
    /// Sampler label (`-` for regression and the demonstrations).
    pub sampler: String,
    /// Diffusion Policy's published score: the mean over episodes of the
    /// highest reward reached, where the reward is the coverage divided by the
    /// 0.95 success threshold and clipped to 1 (so 1.0 = every episode
    /// succeeded).
    pub mean_max_coverage: f64,
    /// The mean over episodes of the highest raw coverage (fraction of the
    /// goal T's area under the block).
    pub mean_max_raw_coverage: f64,
    /// Episodes whose coverage passed 0.95.
    pub success_rate: f64,
    /// Episodes run.
    pub episodes: usize,
    /// Actions predicted per decision (1 = single-step).
    pub horizon: usize,
    /// Actions executed per decision.
    pub execute: usize,
    /// Engine that ran the graphs.
    pub engine: String,
    /// Control steps per episode, mean (300 at most; success ends early).
    pub mean_steps: f64,
    /// Policy decisions per second of wall time (one worker).
    pub decisions_per_second: f64,
}

/// One episode's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Episode {
    /// Seed of the initial state and of the policy's noise.
    pub seed: u64,
    /// Highest raw coverage reached (the reward is this / 0.95, clipped to 1).
    pub max_coverage: f32,
    /// Coverage passed 0.95.
    pub success: bool,
    /// Control steps taken.
    pub steps: usize,
}

/// How a policy is run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSpec {
    /// Engine.
    pub engine: EngineChoice,
    /// Sampler (ignored by regressors).
    pub sampler: SamplerConfig,
    /// Override of the actions executed per chunk.
    pub execute: Option<usize>,
    /// Episodes `seed_base + i`, i in 0..episodes.
    pub episodes: usize,
    /// Seed of the first episode ([`EVAL_SEED_BASE`] for the reported runs).
    pub seed_base: u64,
    /// Worker threads (each with its own policy; results do not depend on it).
    pub workers: usize,
}

/// Run one episode from the seeded initial state.
pub fn run_episode(policy: &mut Policy, seed: u64) -> Result<Episode> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut env = PushT::new(PushT::random_state(&mut rng));
    policy.reset();
    policy.reseed(seed);
    let mut best = env.coverage();
    let mut steps = 0;
    let mut success = false;
    while steps < MAX_STEPS {
        let obs: [f32; OBS_DIM] = env.observe();
        let a = policy
            .act(&obs)
            .context_with(|| format!("seed {seed}, step {steps}"))?;
        let target = [a[0], a[1]];
        let out = env.step(target);
        steps += 1;
        best = best.max(out.coverage);
        if out.success {
            success = true;
            break;
        }
    }
    Ok(Episode {
        seed,
        max_coverage: best,
        success,
        steps,
    })
}

/// How the evaluated policy ran: its chunking (with any `--execute`) and engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployed {
    /// Actions predicted and executed per decision.
    pub chunk: ActionChunk,
    /// Engine name.
    pub engine: String,
}

/// The seeded episodes of `spec` for the policy in `dir` on `spec.workers`
/// threads of the shared pool (each loads the policy once); returns them in
/// seed order with decisions/s of one worker and how the policy ran.
pub fn rollouts(
    dir: &Path,
    spec: &RunSpec,
    pb: &ProgressBar,
) -> Result<(Vec<Episode>, f64, Deployed)> {
    let load = || -> Result<Policy> {
        let mut p = Policy::load_with(
            dir,
            &PolicyOptions {
                engine: spec.engine,
                threads: 1,
                sampler: Some(spec.sampler),
                seed: 0,
            },
        )
        .context_with(|| format!("loading {}", dir.display()))?;
        if let Some(e) = spec.execute {
            p.set_execute(e).map_err(|err| {
                crate::TaskError::invalid(format!("{}: --execute {e}: {err}", dir.display()))
            })?;
        }
        Ok(p)
    };
    let t0 = Instant::now();
    let jobs = crate::pool::longest_first_with(
        &vec![1.0; spec.episodes],
        spec.workers,
        load,
        |policy, i| {
            let t = Instant::now();
            let e = run_episode(policy, spec.seed_base + i as u64)?;
            let decisions = e.steps as f64 / policy.chunk().execute as f64;
            pb.inc(1);
            let deployed = Deployed {
                chunk: policy.chunk(),
                engine: policy.engine_name(),
            };
            Ok((e, decisions, t.elapsed().as_secs_f64(), deployed))
        },
    )?;
    tracing::debug!(seconds = t0.elapsed().as_secs_f64(), "rollouts");
    // Decisions per second of one worker: decisions over the time spent in
    // episodes, whichever worker ran them.
    let decisions: f64 = jobs.iter().map(|j| j.1).sum();
    let busy: f64 = jobs.iter().map(|j| j.2).sum();
    let rate = decisions / busy.max(1e-9);
    let deployed = jobs
        .first()
        .map(|j| j.3.clone())
        .ok_or_else(|| crate::TaskError::invalid("no episode to evaluate"))?;
    let all = jobs.into_iter().map(|j| j.0).collect();
    Ok((all, rate, deployed))
}

/// Summary of episodes as a table row.
pub fn summarise(
    method: &str,
    sampler: &str,
    deployed: Option<&Deployed>,
    episodes: &[Episode],
    decisions_per_second: f64,
) -> PushTRecord {
    let n = episodes.len().max(1) as f64;
    // The demonstrations have no chunking: 0 reads as "-" in the table.
    let (horizon, execute) = deployed
        .map(|d| (d.chunk.horizon, d.chunk.execute))
        .unwrap_or((0, 0));
    PushTRecord {
        method: method.into(),
        sampler: sampler.into(),
        mean_max_coverage: episodes
            .iter()
            .map(|e| reward(e.max_coverage) as f64)
            .sum::<f64>()
            / n,
        mean_max_raw_coverage: episodes.iter().map(|e| e.max_coverage as f64).sum::<f64>() / n,
        success_rate: episodes.iter().filter(|e| e.success).count() as f64 / n,
        episodes: episodes.len(),
        horizon,
        execute,
        engine: deployed
            .map(|d| d.engine.clone())
            .unwrap_or_else(|| "-".into()),
        mean_steps: episodes.iter().map(|e| e.steps as f64).sum::<f64>() / n,
        decisions_per_second,
    }
}

/// The demonstrations as reference rows: their recorded coverage (from the
/// recorded block poses), and their actions replayed open-loop from each
/// recorded initial state in our environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    /// Recorded: mean max coverage and success rate over the episodes.
    pub recorded: PushTRecord,
    /// Replayed in our environment.
    pub replayed: PushTRecord,
    /// Mean distance between the replayed and recorded block origin at each
    /// episode's last step (pixels): how far our physics drifts from pymunk's.
    pub mean_final_block_error_px: f64,
}

/// Replay every demonstration (see [`Replay`]).
pub fn replay(demos: &Episodes) -> Result<Replay> {
    if demos.obs_dim != OBS_DIM {
        invalid!("replay needs {OBS_DIM}-value Push-T states");
    }
    let (mut recorded, mut replayed) = (Vec::new(), Vec::new());
    let mut drift = 0.0;
    for e in 0..demos.len() {
        let r = demos.episode(e);
        let state = |i: usize| -> [f32; OBS_DIM] {
            let s = &demos.obs[i * OBS_DIM..(i + 1) * OBS_DIM];
            [s[0], s[1], s[2], s[3], s[4]]
        };
        // Recorded: the coverage of each recorded pose (a state is the pose
        // before its action; the last action's outcome is not recorded).
        let mut best = 0.0f32;
        let mut success = false;
        for i in r.clone() {
            let s = state(i);
            let c = coverage([s[2], s[3], s[4]], super::env::GOAL);
            best = best.max(c);
            success |= c > super::env::SUCCESS_COVERAGE;
        }
        recorded.push(Episode {
            seed: e as u64,
            max_coverage: best,
            success,
            steps: r.len(),
        });
        let mut env = PushT::new(state(r.start));
        let mut best = env.coverage();
        let mut success = false;
        for i in r.clone() {
            let a = &demos.actions[i * 2..i * 2 + 2];
            let out = env.step([a[0], a[1]]);
            best = best.max(out.coverage);
            success |= out.success;
            if i + 1 == r.end - 1 {
                let (p, _) = env.block_pose();
                let want = state(r.end - 1);
                drift += ((p[0] - want[2]).hypot(p[1] - want[3])) as f64;
            }
        }
        replayed.push(Episode {
            seed: e as u64,
            max_coverage: best,
            success,
            steps: r.len(),
        });
    }
    Ok(Replay {
        recorded: summarise("demonstrations (recorded)", "-", None, &recorded, 0.0),
        replayed: summarise("demonstrations (replayed here)", "-", None, &replayed, 0.0),
        mean_final_block_error_px: drift / demos.len().max(1) as f64,
    })
}

/// A Markdown table of the records.
pub fn markdown_table(records: &[PushTRecord]) -> String {
    let mut s = String::from(
        "| method | sampler | chunk (predict/execute) | engine | episodes | mean max coverage (score) | mean max raw coverage | success rate | mean steps | decisions/s |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in records {
        let chunk = if r.horizon == 0 {
            "-".to_string()
        } else {
            format!("{}/{}", r.horizon, r.execute)
        };
        let rate = if r.decisions_per_second > 0.0 {
            format!("{:.0}", r.decisions_per_second)
        } else {
            "-".into()
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.0} | {} |\n",
            r.method,
            r.sampler,
            chunk,
            r.engine,
            r.episodes,
            r.mean_max_coverage,
            r.mean_max_raw_coverage,
            r.success_rate,
            r.mean_steps,
            rate
        ));
    }
    s
}

/// A progress bar for `len` episodes, hidden when `show` is false.
pub fn progress(len: usize, label: String, show: bool) -> ProgressBar {
    if show {
        crate::arm::eval::bar(len, label)
    } else {
        ProgressBar::hidden()
    }
}

/// Write `report.md` in `out` (and the records as JSON to `json`) and
/// print the table.
pub fn write_outputs(
    out: &Path,
    json: Option<&Path>,
    records: &[PushTRecord],
    seed_base: u64,
    secs: f64,
) -> Result<()> {
    std::fs::create_dir_all(out).context_with(|| format!("creating {}", out.display()))?;
    let report = format!(
        "# Push-T from state\n\nSeeded initial states {}…, at most {} steps at 10 Hz. Score = mean over episodes of the highest reward, reward = coverage of the goal T by the block / 0.95, clipped to 1 (Diffusion Policy's published metric); raw coverage beside it; success = coverage above 0.95. Evaluation took {:.0} s.\n\n{}",
        seed_base,
        super::env::MAX_STEPS,
        secs,
        markdown_table(records)
    );
    let path = out.join("report.md");
    std::fs::write(&path, &report).context_with(|| format!("writing {}", path.display()))?;
    print!("{}", markdown_table(records));
    if let Some(j) = json {
        if let Some(parent) = j.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .context_with(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(j, serde_json::to_string_pretty(records)?)
            .context_with(|| format!("writing {}", j.display()))?;
        println!("wrote {}", j.display());
    }
    Ok(())
}

/// Evaluate each exported model: denoisers with each of `samplers`, direct
/// heads once. `spec.sampler` is replaced per row. A model given a label is
/// named by it in the records, else by its method.
pub fn evaluate_models(
    models: &[(Option<String>, std::path::PathBuf)],
    samplers: &[SamplerConfig],
    spec: &RunSpec,
) -> Result<Vec<PushTRecord>> {
    let mut records = Vec::new();
    for (name, dir) in models {
        let dir = dir.as_path();
        let kind = crate::ModelKind::read(dir)?;
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
            let pb = progress(spec.episodes, format!("{method} {label}"), true);
            let (eps, rate, deployed) = rollouts(dir, &spec, &pb)?;
            pb.finish_and_clear();
            let r = summarise(&method, &label, Some(&deployed), &eps, rate);
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
/// checkpoints exported first, the default samplers, [`super::EPISODES`]
/// seeded states from `seed`.
pub fn evaluate_default(
    models: &[(String, std::path::PathBuf)],
    seed: u64,
) -> Result<Vec<PushTRecord>> {
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let models = models
        .iter()
        .map(|(l, p)| {
            Ok((
                Some(l.clone()),
                crate::Task::PushT.exported(p, scratch.path())?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let workers = crate::pool::default_threads();
    evaluate_models(
        &models,
        &[
            SamplerConfig::ddpm(),
            SamplerConfig::diffusion_x(super::EXTRA_STEPS),
            SamplerConfig::kde(super::KDE_CANDIDATES, diffbc_runtime::DEFAULT_KDE_BANDWIDTH),
        ],
        &RunSpec {
            engine: diffbc_runtime::EngineChoice::Native,
            sampler: SamplerConfig::ddpm(),
            execute: None,
            episodes: super::EPISODES,
            seed_base: EVAL_SEED_BASE + 1000 * seed,
            workers,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffbc_runtime::EngineChoice;
    use diffbc_runtime::manifest::ActionChunk;
    use diffbc_train::config::Method;
    use diffbc_train::model::EncoderConfig;
    use std::path::PathBuf;

    /// A tiny chunked regressor (4 actions, execute 2) trained on the real
    /// demonstrations and exported: deterministic, so every action can be
    /// traced to the decision that made it.
    fn tiny_chunked_model(dir: &Path) -> PathBuf {
        let mut c = crate::Task::PushT.train_config(Method::Mse);
        c.encoder = EncoderConfig::Mlp {
            hidden: 16,
            embed: 8,
        };
        c.mse_head.hidden = 16;
        c.chunk = ActionChunk {
            horizon: 4,
            execute: 2,
        };
        c.optim.steps = 20;
        c.optim.batch_size = 16;
        c.optim.warmup_steps = 2;
        c.checkpoint_every = 0;
        let demos = super::super::load_demos(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/data/pusht/pusht_cchi_v7_replay.zarr"),
        )
        .expect("shared Push-T data");
        let data = demos.to_chunked_dataset(c.history, c.chunk.horizon);
        let ck = dir.join("ck");
        diffbc_train::train::train::<burn::backend::Autodiff<burn::backend::NdArray<f32>>>(
            &c,
            &data,
            &ck,
            &Default::default(),
            Default::default(),
        )
        .expect("train");
        let model = dir.join("model");
        let options = diffbc_export::ExportOptions {
            sampler: SamplerConfig::diffusion_x(super::super::EXTRA_STEPS),
            ..Default::default()
        };
        diffbc_export::export_checkpoint::<burn::backend::NdArray<f32>>(
            &ck,
            &model,
            &options,
            &Default::default(),
        )
        .expect("export");
        model
    }

    #[test]
    fn a_chunk_is_executed_before_the_next_decision() {
        let dir = tempfile::tempdir().expect("tmp");
        let model = tiny_chunked_model(dir.path());
        let load = || Policy::load(&model, EngineChoice::Native).expect("load");
        let obs = [
            [100.0, 120.0, 250.0, 300.0, 1.0],
            [110.0, 125.0, 250.0, 300.0, 1.0],
            [300.0, 400.0, 200.0, 260.0, 2.5],
            [480.0, 60.0, 150.0, 150.0, 5.0],
        ];
        let mut p = load();
        assert_eq!(p.action_dim(), 2);
        assert_eq!(
            p.chunk(),
            ActionChunk {
                horizon: 4,
                execute: 2
            }
        );
        let x: Vec<Vec<f32>> = (0..3)
            .map(|i| p.act(&obs[i]).expect("act").to_vec())
            .collect();

        // The second action comes from the first decision, whatever is seen.
        let mut q = load();
        assert_eq!(q.act(&obs[0]).expect("act"), &x[0][..]);
        assert_eq!(q.act(&obs[3]).expect("act"), &x[1][..]);

        // Deciding every tick: the same first action, another second one, and
        // the third decision sees the same history as the chunked policy's.
        let mut r = load();
        r.set_execute(1).expect("execute 1");
        assert_eq!(r.act(&obs[0]).expect("act"), &x[0][..]);
        assert_ne!(r.act(&obs[1]).expect("act"), &x[1][..]);
        assert_eq!(r.act(&obs[2]).expect("act"), &x[2][..]);

        // A reset drops the chunk in progress: the next action is a fresh
        // decision on the new episode's first frame.
        p.reset();
        let fresh = load().act(&obs[3]).expect("act").to_vec();
        assert_eq!(p.act(&obs[3]).expect("act"), &fresh[..]);

        assert!(
            r.set_execute(5)
                .unwrap_err()
                .to_string()
                .contains("chunk.execute")
        );
    }
}
