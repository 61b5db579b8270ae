//! The arm's modes without labels (feature `train`): a VQ-VAE
//! ([`diffbc_train::modes`]) learns codes from the demonstrations' windows,
//! and the seeded demonstrator's own ground truth — the target each reach
//! heads for, the side of the obstacle it passes, the episode's first
//! target — says what each code captured. The learner never sees it.

use super::demos::generate_with_truth;
use super::{ArmTask, Side, TickTruth};
use crate::error::{Context, Result};
use crate::metrics::{Agreement, agreement};
use diffbc_train::episodes::Episodes;
use diffbc_train::modes::{Modes, ModesConfig};
use serde::Serialize;
use std::fmt::Write as _;

/// What one code stands for, from the ground truth of the windows it took.
#[derive(Debug, Clone, Serialize)]
pub struct CodeSummary {
    /// The code.
    pub code: usize,
    /// Windows with this code.
    pub windows: usize,
    /// Share of the windows heading for each target.
    pub heading: Vec<f64>,
    /// Share passing the obstacle left, right, or not blocked.
    pub side: [f64; 3],
    /// In words, e.g. "→ target 2 (91 %), passing left (78 %)".
    pub description: String,
}

/// The modes study on the arm.
#[derive(Debug, Clone, Serialize)]
pub struct ModesStudy {
    /// Demonstrations the modes were learned from.
    pub episodes: usize,
    /// Their seed.
    pub seed: u64,
    /// How the codes were learned.
    pub config: ModesConfig,
    /// One summary per code.
    pub codes: Vec<CodeSummary>,
    /// Codes against the target each window heads for.
    pub heading: Score,
    /// Codes against the side, over the windows of blocked reaches.
    pub side: Score,
    /// Codes against the side at the choice: the first three windows of
    /// every blocked reach (the dwell before it included), before the arm's
    /// position shows the side.
    pub side_at_start: Score,
    /// Codes against the episode's first target, over every episode's first
    /// second (the window that makes that choice).
    pub first_target: Score,
    /// Reconstruction error with the codes, without quantising, and with
    /// the mean code (normalised units): what the codes carry.
    pub reconstruction: [f64; 3],
}

/// One agreement with its chance level.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    /// Windows scored.
    pub windows: usize,
    /// Mutual information (bits).
    pub mutual_information: f64,
    /// Entropy of the truth (bits).
    pub truth_entropy: f64,
    /// Purity.
    pub purity: f64,
    /// Mutual information of the same codes shuffled across windows (bits):
    /// what the estimate gives with no relation at all.
    pub chance: f64,
}

impl Score {
    fn of(codes: &[u16], truth: &[u8]) -> Self {
        let a: Agreement = agreement(codes, truth);
        // Chance: a seeded shuffle of the codes (same code sizes).
        let mut shuffled = codes.to_vec();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        Self {
            windows: codes.len().min(truth.len()),
            mutual_information: a.mutual_information,
            truth_entropy: a.truth_entropy,
            purity: a.purity,
            chance: agreement(&shuffled, truth).mutual_information,
        }
    }

    /// Share of the truth's entropy the codes explain.
    pub fn explained(&self) -> f64 {
        if self.truth_entropy > 0.0 {
            self.mutual_information / self.truth_entropy
        } else {
            0.0
        }
    }
}

fn side_index(s: Side) -> usize {
    match s {
        Side::Left => 0,
        Side::Right => 1,
        Side::Clear => 2,
    }
}

/// Generate `episodes` demonstrations from `seed`, learn modes from their
/// windows with `B` (an autodiff backend), and score them against the
/// demonstrator's ground truth. With `figure`, a PNG there with one panel
/// per code: a dozen of its windows' commanded paths (joints 0–1) among
/// the targets and the obstacle.
pub fn study<B: burn::tensor::backend::AutodiffBackend>(
    task: &ArmTask,
    episodes: usize,
    seed: u64,
    config: &ModesConfig,
    device: &B::Device,
    progress: bool,
    figure: Option<&std::path::Path>,
) -> Result<(ModesStudy, Modes)> {
    let (demos, truth) = generate_with_truth(task, episodes, seed, progress)?;
    study_of::<B>(task, &demos, &truth, seed, config, device, progress, figure)
}

/// [`study`] of demonstrations already generated (with their ground truth).
#[allow(clippy::too_many_arguments)]
pub fn study_of<B: burn::tensor::backend::AutodiffBackend>(
    task: &ArmTask,
    demos: &Episodes,
    truth: &[Vec<TickTruth>],
    seed: u64,
    config: &ModesConfig,
    device: &B::Device,
    progress: bool,
    figure: Option<&std::path::Path>,
) -> Result<(ModesStudy, Modes)> {
    let episodes = demos.len();
    let data = demos.to_chunked_dataset(0, config.horizon);
    let modes = diffbc_train::modes::learn::<B>(&data, config, device, progress)
        .context("learning the modes")?;
    let flat: Vec<TickTruth> = truth.iter().flatten().copied().collect();
    crate::require!(
        flat.len() == modes.code.len(),
        "{} ticks of ground truth for {} windows",
        flat.len(),
        modes.code.len()
    );
    let k = config.codes;
    let mut codes = Vec::with_capacity(k);
    for c in 0..k {
        let mine: Vec<&TickTruth> = flat
            .iter()
            .zip(&modes.code)
            .filter(|(_, m)| usize::from(**m) == c)
            .map(|(t, _)| t)
            .collect();
        let n = mine.len().max(1) as f64;
        let mut heading = vec![0.0; task.sites];
        let mut side = [0.0; 3];
        for t in &mine {
            if let Some(h) = heading.get_mut(usize::from(t.heading)) {
                *h += 1.0 / n;
            }
            side[side_index(t.side)] += 1.0 / n;
        }
        codes.push(CodeSummary {
            code: c,
            windows: mine.len(),
            description: describe(&heading, &side),
            heading,
            side,
        });
    }
    let heading_truth: Vec<u8> = flat.iter().map(|t| t.heading).collect();
    let heading = Score::of(&modes.code, &heading_truth);
    let (blocked_codes, blocked_sides): (Vec<u16>, Vec<u8>) = flat
        .iter()
        .zip(&modes.code)
        .filter(|(t, _)| t.side != Side::Clear)
        .map(|(t, &c)| (c, side_index(t.side) as u8))
        .unzip();
    let side = Score::of(&blocked_codes, &blocked_sides);
    let mut starts = (Vec::new(), Vec::new());
    let mut row = 0;
    for t in truth {
        let mut run = 0;
        for (i, tick) in t.iter().enumerate() {
            run = if i > 0 && t[i - 1].heading == tick.heading {
                run + 1
            } else {
                0
            };
            if run < 3 && tick.side != Side::Clear {
                starts.0.push(modes.code[row + i]);
                starts.1.push(side_index(tick.side) as u8);
            }
        }
        row += t.len();
    }
    let side_at_start = Score::of(&starts.0, &starts.1);
    // The first second of every episode: the first reach's window.
    let first_ticks = (task.control_hz.round() as usize).max(1);
    let mut firsts = (Vec::new(), Vec::new());
    let mut row = 0;
    for t in truth {
        for (i, tick) in t.iter().enumerate().take(first_ticks) {
            firsts.0.push(modes.code[row + i]);
            firsts.1.push(tick.heading);
        }
        row += t.len();
    }
    let first_target = Score::of(&firsts.0, &firsts.1);
    if let Some(path) = figure {
        let a = data.action_dim;
        let panels: Vec<(String, Vec<Vec<[f32; 2]>>)> = (0..k)
            .map(|c| {
                let rows: Vec<usize> = (0..modes.code.len())
                    .filter(|&i| usize::from(modes.code[i]) == c)
                    .collect();
                let every = (rows.len() / 12).max(1);
                let paths = rows
                    .iter()
                    .step_by(every)
                    .take(12)
                    .map(|&i| {
                        data.actions[i * a..(i + 1) * a]
                            .chunks_exact(super::JOINTS)
                            .map(|q| [q[0], q[1]])
                            .collect()
                    })
                    .collect();
                (format!("code {c} ({} windows)", rows.len()), paths)
            })
            .collect();
        let marks: Vec<[f32; 2]> = (0..task.sites)
            .map(|i| {
                let q = task.site(i);
                [q[0], q[1]]
            })
            .collect();
        let disc = task.obstacle().map(|o| (o.center, o.radius));
        crate::plot::paths_figure(path, &panels, &marks, disc, 2.0)?;
    }
    let study = ModesStudy {
        episodes,
        seed,
        config: config.clone(),
        codes,
        heading,
        side,
        side_at_start,
        first_target,
        reconstruction: [
            modes.reconstruction,
            modes.reconstruction_unquantised,
            modes.reconstruction_without_code,
        ],
    };
    Ok((study, modes))
}

fn describe(heading: &[f64], side: &[f64; 3]) -> String {
    let (t, h) = heading
        .iter()
        .copied()
        .enumerate()
        .fold((0, 0.0), |b, x| if x.1 > b.1 { x } else { b });
    let names = ["passing left", "passing right", "not blocked"];
    let (s, p) = side
        .iter()
        .copied()
        .enumerate()
        .fold((0, 0.0), |b, x| if x.1 > b.1 { x } else { b });
    format!(
        "→ target {t} ({:.0} %), {} ({:.0} %)",
        100.0 * h,
        names[s],
        100.0 * p
    )
}

impl ModesStudy {
    /// The study as Markdown: a row per code, then the agreement table.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        let _ = writeln!(
            s,
            "Modes of {} arm demonstrations (seed {}): VQ-VAE, {} codes over windows of {} actions, {} steps (seed {}).\n",
            self.episodes, self.seed, c.codes, c.horizon, c.steps, c.seed
        );
        let _ = write!(s, "| code | windows |");
        let sites = self.codes.first().map_or(0, |c| c.heading.len());
        for t in 0..sites {
            let _ = write!(s, " → {t} |");
        }
        let _ = writeln!(s, " left | right | clear | reads as |");
        let _ = write!(s, "|---:|---:|");
        for _ in 0..sites + 3 {
            let _ = write!(s, "---:|");
        }
        let _ = writeln!(s, "---|");
        for code in &self.codes {
            let _ = write!(s, "| {} | {} |", code.code, code.windows);
            for h in &code.heading {
                let _ = write!(s, " {:.0} % |", 100.0 * h);
            }
            for v in code.side {
                let _ = write!(s, " {:.0} % |", 100.0 * v);
            }
            let _ = writeln!(s, " {} |", code.description);
        }
        let _ = writeln!(
            s,
            "\n| ground truth (never seen by the learner) | windows | I(code; truth) bits | H(truth) bits | explained | purity | I with shuffled codes |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for (name, sc) in [
            ("target the reach heads for", &self.heading),
            ("side of the obstacle (blocked reaches)", &self.side),
            (
                "side of the obstacle (first 3 ticks of each blocked reach)",
                &self.side_at_start,
            ),
            (
                "first target (first second of each episode)",
                &self.first_target,
            ),
        ] {
            let _ = writeln!(
                s,
                "| {name} | {} | {:.3} | {:.3} | {:.0} % | {:.2} | {:.3} |",
                sc.windows,
                sc.mutual_information,
                sc.truth_entropy,
                100.0 * sc.explained(),
                sc.purity,
                sc.chance
            );
        }
        let [q, u, m] = self.reconstruction;
        let _ = writeln!(
            s,
            "\nReconstruction error of the action windows (normalised units): {q:.4} with the codes, {u:.4} unquantised, {m:.4} with the mean code."
        );
        s
    }
}

/// `demos` with the modes' soft codes appended to every frame as channels
/// `mode[0]`, …, `mode[K-1]` (source `mode[k]`, unit 1): the data a
/// mode-conditional policy trains on. `modes` must come from these
/// demonstrations' rows, in order.
pub fn with_mode_channels(demos: &Episodes, modes: &Modes) -> Result<Episodes> {
    let k = modes.config.codes;
    crate::require!(
        modes.code.len() == demos.steps(),
        "{} mode assignments for {} rows",
        modes.code.len(),
        demos.steps()
    );
    let mut out = Episodes::new(demos.obs_dim + k, demos.action_dim);
    let names: Vec<String> = (0..k).map(|i| format!("mode[{i}]")).collect();
    out.obs_names = demos
        .obs_names
        .iter()
        .cloned()
        .chain(names.clone())
        .collect();
    out.action_names = demos.action_names.clone();
    out.hints = demos.hints.clone();
    out.hints.obs_sources.extend(names);
    out.hints
        .obs_units
        .extend(std::iter::repeat_n("1".to_string(), k));
    out.source = demos.source.clone();
    for e in 0..demos.len() {
        let rows = demos.episode(e);
        let mut obs = Vec::with_capacity(rows.len() * (demos.obs_dim + k));
        for i in rows.clone() {
            obs.extend_from_slice(demos.obs_row(i));
            obs.extend_from_slice(&modes.soft[i * k..(i + 1) * k]);
        }
        let act = &demos.actions[rows.start * demos.action_dim..rows.end * demos.action_dim];
        out.push_episode(&obs, act)
            .context("appending the mode channels")?;
    }
    Ok(out)
}

/// One row of the steering table.
#[derive(Debug, Clone, Serialize)]
pub struct SteeringRow {
    /// The code steered towards, or `None` for the unsteered policy.
    pub code: Option<usize>,
    /// Its weight.
    pub weight: f32,
    /// What the code reads as (from the modes study).
    pub reads_as: String,
    /// The first target of the demonstrations whose first window has this
    /// code (most often), and how often.
    pub first_target: Option<(u8, f64)>,
    /// Episodes.
    pub episodes: usize,
    /// Share of episodes by first target.
    pub first_shares: Vec<f64>,
    /// Share of episodes whose first target is `first_target`.
    pub follow: f64,
    /// Share completing every target.
    pub all_targets: f64,
    /// Share ending in a collision.
    pub collisions: f64,
}

/// Train a diffusion policy on `demos` with the modes' soft codes as
/// `mode[k]` channels (mode dropout `mode_dropout`, `steps` training
/// steps), export it to `out/policy`, and run `episodes` in-process
/// episodes unsteered and steered towards each code that starts some
/// demonstration (one-hot, at `weight`). The same evaluation seeds for
/// every row.
#[allow(clippy::too_many_arguments)]
pub fn steering_study<B: burn::tensor::backend::AutodiffBackend>(
    task: &ArmTask,
    demos: &Episodes,
    truth: &[Vec<TickTruth>],
    modes: &Modes,
    study: &ModesStudy,
    out: &std::path::Path,
    steps: usize,
    mode_dropout: f64,
    weight: f32,
    episodes: usize,
    device: &B::Device,
    progress: bool,
) -> Result<Vec<SteeringRow>> {
    use diffbc_runtime::Steering;
    let data = with_mode_channels(demos, modes)?;
    let mut config = crate::Task::Arm.train_config(diffbc_train::Method::Diffusion);
    config.optim.steps = steps;
    config.mode_dropout = mode_dropout;
    config.checkpoint_every = 0;
    let dataset = data.to_chunked_dataset(config.history, config.chunk.horizon);
    let ck = out.join("checkpoint");
    diffbc_train::train::train::<B>(
        &config,
        &dataset,
        &ck,
        device,
        diffbc_train::train::RunOptions {
            progress,
            force: true,
            ..Default::default()
        },
    )
    .context("training the mode-conditional policy")?;
    let dir = out.join("policy");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).context_with(|| format!("replacing {}", dir.display()))?;
    }
    crate::Task::Arm.export(&ck, &dir)?;
    // Which first target each code starts: the episodes' first windows.
    let k = modes.config.codes;
    let mut starts = vec![vec![0usize; task.sites]; k];
    let mut row = 0;
    for (e, t) in truth.iter().enumerate() {
        if let Some(first) = t.first() {
            let c = usize::from(modes.code[row]);
            if let Some(n) = starts[c].get_mut(usize::from(first.heading)) {
                *n += 1;
            }
        }
        row += demos.episode(e).len();
    }
    let threads = crate::pool::default_threads();
    let sampler = Some(diffbc_runtime::SamplerConfig::diffusion_x(
        super::report::EXTRA_STEPS,
    ));
    let mut rows = Vec::new();
    let mut settings: Vec<Option<usize>> = vec![None];
    settings.extend(
        (0..k)
            .filter(|&c| starts[c].iter().sum::<usize>() > 0)
            .map(Some),
    );
    for code in settings {
        let steering = code.map(|c| Steering::towards(k, c, weight));
        let label = code.map_or("unsteered".to_string(), |c| format!("towards code {c}"));
        let pb = if progress {
            super::eval::bar(episodes, label)
        } else {
            indicatif::ProgressBar::hidden()
        };
        let (results, _) = super::eval::rollouts_steered(
            task,
            &dir,
            sampler,
            steering.as_ref(),
            episodes,
            threads,
            &pb,
        )?;
        let n = results.len().max(1) as f64;
        let mut first_shares = vec![0.0; task.sites];
        for r in &results {
            if let Some(f) = r
                .order
                .first()
                .and_then(|&f| first_shares.get_mut(usize::from(f)))
            {
                *f += 1.0 / n;
            }
        }
        let first_target = code.and_then(|c| {
            let total: usize = starts[c].iter().sum();
            let (t, m) = starts[c]
                .iter()
                .enumerate()
                .max_by_key(|(_, m)| **m)
                .map(|(t, m)| (t, *m))?;
            (total > 0).then(|| (t as u8, m as f64 / total as f64))
        });
        rows.push(SteeringRow {
            code,
            weight: if code.is_some() { weight } else { 0.0 },
            reads_as: code.map_or(String::new(), |c| study.codes[c].description.clone()),
            first_target,
            episodes: results.len(),
            follow: first_target.map_or(0.0, |(t, _)| first_shares[usize::from(t)]),
            first_shares,
            all_targets: results
                .iter()
                .filter(|r| r.order.len() >= task.goal)
                .count() as f64
                / n,
            collisions: results.iter().filter(|r| r.collided).count() as f64 / n,
        });
    }
    Ok(rows)
}

/// The steering rows as Markdown, with binomial standard errors.
pub fn steering_markdown(rows: &[SteeringRow]) -> String {
    let se = |p: f64, n: usize| {
        let p = p.clamp(0.0, 1.0);
        (p * (1.0 - p) / n.max(1) as f64).sqrt()
    };
    let mut s = String::from(
        "| steering | code reads as | demos starting with it go first to | first target = that (steered) | same target, unsteered | all targets | collisions |\n|---|---|---|---:|---:|---:|---:|\n",
    );
    let base = rows.iter().find(|r| r.code.is_none());
    for r in rows {
        let n = r.episodes;
        let (first, follow, unsteered) = match r.first_target {
            Some((t, share)) => (
                format!("target {t} ({:.0} %)", 100.0 * share),
                format!("{:.2} ± {:.2}", r.follow, se(r.follow, n)),
                base.map_or("-".into(), |b| {
                    let p = b.first_shares[usize::from(t)];
                    format!("{p:.2} ± {:.2}", se(p, b.episodes))
                }),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {first} | {follow} | {unsteered} | {:.2} ± {:.2} | {:.2} ± {:.2} |",
            r.code.map_or("none".to_string(), |c| format!(
                "towards {c} (w = {})",
                r.weight
            )),
            r.reads_as,
            r.all_targets,
            se(r.all_targets, n),
            r.collisions,
            se(r.collisions, n)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    #[test]
    fn ground_truth_follows_the_demonstrator() {
        let task = ArmTask::default();
        let (demos, truth) = generate_with_truth(&task, 30, 0, false).expect("demos");
        assert_eq!(truth.len(), demos.len());
        let orders = super::super::demos::orders_from_episodes(&task, &demos);
        let mut blocked = [0usize; 2];
        for (e, t) in truth.iter().enumerate() {
            assert_eq!(t.len(), demos.episode(e).len(), "episode {e}");
            // The headings, run-length collapsed, are the episode's order.
            let mut seen: Vec<u8> = Vec::new();
            for tick in t {
                assert!(usize::from(tick.heading) < task.sites, "{tick:?}");
                if seen.last() != Some(&tick.heading) {
                    seen.push(tick.heading);
                }
            }
            assert_eq!(seen, orders[e], "episode {e}");
            // A reach from home to target 0 crosses the obstacle: its side
            // is the side of joint 0 where joint 1 crosses 0.
            if orders[e][0] == 0 {
                let r = demos.episode(e);
                if let Some(i) = r.clone().find(|&i| demos.obs_row(i)[1] > 0.0) {
                    let side = t[i - r.start].side;
                    // Travelling towards +joint 1, −joint 0 is on the left.
                    let expected = if demos.obs_row(i)[0] < 0.0 {
                        Side::Left
                    } else {
                        Side::Right
                    };
                    assert_eq!(side, expected, "episode {e}");
                    blocked[side_index(side)] += 1;
                }
            }
        }
        assert!(blocked[0] > 0 && blocked[1] > 0, "{blocked:?}");
    }

    #[test]
    fn codes_learned_without_labels_tell_where_the_arm_is_heading() {
        let config = ModesConfig {
            codes: 16,
            horizon: 30,
            steps: 800,
            warmup: 200,
            hidden: 64,
            ..ModesConfig::default()
        };
        let (study, modes) = study::<Autodiff<NdArray<f32>>>(
            &ArmTask::default(),
            40,
            0,
            &config,
            &Default::default(),
            false,
            None,
        )
        .expect("study");
        println!("{}", study.markdown());
        assert_eq!(modes.code.len(), study.heading.windows);
        // Measured: 70 % of the heading, 92 % of the first target, 39 % of
        // the side at the start of a blocked reach (chance 4 %).
        assert!(
            study.heading.explained() > 0.5,
            "codes explain {:.0} % of the heading",
            100.0 * study.heading.explained()
        );
        assert!(study.heading.mutual_information > 10.0 * study.heading.chance);
        assert!(
            study.first_target.explained() > 0.7,
            "codes explain {:.0} % of the first target",
            100.0 * study.first_target.explained()
        );
        assert!(
            study.side_at_start.mutual_information > 3.0 * study.side_at_start.chance,
            "side at the start of a blocked reach: {:.3} bits, chance {:.3}",
            study.side_at_start.mutual_information,
            study.side_at_start.chance
        );
    }
}
