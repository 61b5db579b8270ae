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
use diffbc_train::modes::{ModeScope, Modes, ModesConfig};
use serde::{Deserialize, Serialize};
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
    /// Share by operator (tasks with operators; else empty).
    pub operator: Vec<f64>,
    /// In words, e.g. "→ target 2 (91 %), passing left (78 %)".
    pub description: String,
}

/// What the VQ-VAE's windows hold after a row's observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The next `horizon` commands, one per tick.
    #[default]
    Time,
    /// The next [`PATH_WINDOW`] rad of the commanded path, at `horizon`
    /// evenly spaced points along it: the path's shape without its timing,
    /// so an operator's speed, hesitations and dwells — which differ per
    /// episode as much as a habit does — leave the window unchanged.
    Path,
}

impl std::str::FromStr for WindowKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "time" => Ok(Self::Time),
            "path" => Ok(Self::Path),
            other => Err(format!("unknown window kind {other:?} (time, path)")),
        }
    }
}

/// What the VQ-VAE learns from: the windows, and whether its decoder is
/// told in hindsight which target each window's arm reaches next
/// ([`next_targets`]) — then a code need not say where the arm goes, only
/// how it gets there, which is what an operator's habit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WindowSpec {
    /// What a window holds.
    pub kind: WindowKind,
    /// Tell the decoder the next target reached.
    pub hindsight: bool,
}

/// Length of a [`WindowKind::Path`] window along the commanded path (rad,
/// all joints): about one reach.
pub const PATH_WINDOW: f32 = 1.5;

/// The windows the modes are learned from: a sample per row of `demos`,
/// its observation and `horizon` commands ([`WindowKind`]).
pub fn windows(demos: &Episodes, horizon: usize, kind: WindowKind) -> diffbc_train::data::Dataset {
    let mut data = demos.to_chunked_dataset(0, horizon);
    if kind == WindowKind::Path {
        let a = demos.action_dim;
        let mut out = Vec::with_capacity(data.actions.len());
        for e in 0..demos.len() {
            let r = demos.episode(e);
            let point = |i: usize| &demos.actions[i * a..(i + 1) * a];
            // Arc length at every row of the episode.
            let mut arc = Vec::with_capacity(r.len());
            let mut total = 0.0f32;
            for i in r.clone() {
                if i > r.start {
                    total += point(i)
                        .iter()
                        .zip(point(i - 1))
                        .map(|(x, y)| (x - y) * (x - y))
                        .sum::<f32>()
                        .sqrt();
                }
                arc.push(total);
            }
            for i in r.clone() {
                let mut j = i - r.start;
                for k in 1..=horizon {
                    let want = arc[i - r.start] + PATH_WINDOW * k as f32 / horizon as f32;
                    while j + 1 < arc.len() && arc[j + 1] < want {
                        j += 1;
                    }
                    if j + 1 >= arc.len() {
                        out.extend_from_slice(point(r.end - 1));
                        continue;
                    }
                    let span = (arc[j + 1] - arc[j]).max(1e-9);
                    let t = ((want - arc[j]) / span).clamp(0.0, 1.0);
                    let (p, q) = (point(r.start + j), point(r.start + j + 1));
                    out.extend(p.iter().zip(q).map(|(x, y)| x + t * (y - x)));
                }
            }
        }
        data.actions = out;
    }
    data
}

/// Per row of `demos`, the target the arm reaches next, one-hot (all 0
/// once none is left): read in hindsight off the episode's later done
/// flags — what the decoder is told, so a code need not say where the arm
/// goes, only how.
pub fn next_targets(task: &ArmTask, demos: &Episodes) -> Vec<f32> {
    let base = 2 * super::JOINTS;
    let sites = task.sites;
    let mut out = vec![0.0f32; demos.steps() * sites];
    for e in 0..demos.len() {
        let r = demos.episode(e);
        let mut next: Option<usize> = None;
        // Walk back: a flag that is off at row i and on at row i + 1 is the
        // next target of every row up to i.
        for i in r.clone().rev() {
            if i + 1 < r.end {
                let (now, later) = (demos.obs_row(i), demos.obs_row(i + 1));
                if let Some(s) = (0..sites).find(|&s| now[base + s] < 0.5 && later[base + s] > 0.5)
                {
                    next = Some(s);
                }
            }
            if let Some(s) = next {
                out[i * sites + s] = 1.0;
            }
        }
    }
    out
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
    /// What the windows hold.
    pub windows: WindowSpec,
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
    /// Codes against the episode's operator, one per episode that meets
    /// the obstacle (the code of its first row), for a task with operators.
    pub operator: Option<Score>,
    /// The operators' names (a task with operators).
    pub operators: Vec<String>,
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
#[allow(clippy::too_many_arguments)]
pub fn study<B: burn::tensor::backend::AutodiffBackend>(
    task: &ArmTask,
    episodes: usize,
    seed: u64,
    config: &ModesConfig,
    spec: WindowSpec,
    device: &B::Device,
    progress: bool,
    figure: Option<&std::path::Path>,
) -> Result<(ModesStudy, Modes)> {
    let (demos, truth) = generate_with_truth(task, episodes, seed, progress)?;
    study_of::<B>(
        task, &demos, &truth, seed, config, spec, device, progress, figure,
    )
}

/// [`study`] of demonstrations already generated (with their ground truth).
#[allow(clippy::too_many_arguments)]
pub fn study_of<B: burn::tensor::backend::AutodiffBackend>(
    task: &ArmTask,
    demos: &Episodes,
    truth: &[Vec<TickTruth>],
    seed: u64,
    config: &ModesConfig,
    spec: WindowSpec,
    device: &B::Device,
    progress: bool,
    figure: Option<&std::path::Path>,
) -> Result<(ModesStudy, Modes)> {
    let episodes = demos.len();
    let data = windows(demos, config.horizon, spec.kind);
    let context = if spec.hindsight {
        next_targets(task, demos)
    } else {
        Vec::new()
    };
    let ranges: Vec<std::ops::Range<usize>> = (0..episodes).map(|e| demos.episode(e)).collect();
    let modes = diffbc_train::modes::learn_in_episodes::<B>(
        &data,
        Some(&ranges),
        &context,
        config,
        device,
        progress,
    )
    .context("learning the modes")?;
    let operators: Vec<String> = task.operators.iter().map(|o| o.name.clone()).collect();
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
        let mut operator = vec![0.0; operators.len()];
        for t in &mine {
            if let Some(h) = heading.get_mut(usize::from(t.heading)) {
                *h += 1.0 / n;
            }
            side[side_index(t.side)] += 1.0 / n;
            if let Some(o) = operator.get_mut(usize::from(t.operator)) {
                *o += 1.0 / n;
            }
        }
        let description = match config.scope {
            // An episode's code says nothing of one reach's target.
            ModeScope::Episode => describe_style(&side, &operator, &operators),
            ModeScope::Window => describe(&heading, &side),
        };
        codes.push(CodeSummary {
            code: c,
            windows: mine.len(),
            description,
            heading,
            side,
            operator,
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
    let operator = (!operators.is_empty()).then(|| {
        let (codes, truth): (Vec<u16>, Vec<u8>) = ranges
            .iter()
            .zip(truth)
            // An episode that never meets the obstacle shows no habit.
            .filter(|(_, t)| t.iter().any(|x| x.side != Side::Clear))
            .filter_map(|(r, t)| Some((modes.code[r.start], t.first()?.operator)))
            .unzip();
        Score::of(&codes, &truth)
    });
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
        paths_figure(task, path, &panels)?;
    }
    let study = ModesStudy {
        episodes,
        seed,
        config: config.clone(),
        windows: spec,
        codes,
        heading,
        side,
        side_at_start,
        first_target,
        operator,
        operators,
        reconstruction: [
            modes.reconstruction,
            modes.reconstruction_unquantised,
            modes.reconstruction_without_code,
        ],
    };
    Ok((study, modes))
}

/// An episode code in words: its operator and the side its blocked
/// reaches take, e.g. "operator passes left (100 %), passing left (97 % of blocked)".
fn describe_style(side: &[f64; 3], operator: &[f64], names: &[String]) -> String {
    let blocked = side[0] + side[1];
    let (s, p) = if side[0] >= side[1] {
        ("passing left", side[0])
    } else {
        ("passing right", side[1])
    };
    let sides = if blocked > 0.0 {
        format!("{s} ({:.0} % of blocked)", 100.0 * p / blocked)
    } else {
        "never blocked".to_string()
    };
    match operator
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
    {
        Some((o, share)) => format!(
            "operator {} ({:.0} %), {sides}",
            names.get(o).map_or("?", String::as_str),
            100.0 * share
        ),
        None => sides,
    }
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

/// A PNG of commanded paths in the joint 0–1 plane, a panel per
/// (title, paths), with the task's targets and obstacle drawn in.
fn paths_figure(
    task: &ArmTask,
    path: &std::path::Path,
    panels: &[(String, Vec<Vec<[f32; 2]>>)],
) -> Result<()> {
    let marks: Vec<[f32; 2]> = (0..task.sites)
        .map(|i| {
            let q = task.site(i);
            [q[0], q[1]]
        })
        .collect();
    let disc = task.obstacle().map(|o| (o.center, o.radius));
    crate::plot::paths_figure(path, panels, &marks, disc, 2.0)?;
    Ok(())
}

impl ModesStudy {
    /// The study as Markdown: a row per code, then the agreement table.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        let _ = writeln!(
            s,
            "Modes of {} arm demonstrations (seed {}): VQ-VAE, {} codes, one per {}, over windows of {} {}{}, {} steps (seed {}).\n",
            self.episodes,
            self.seed,
            c.codes,
            match c.scope {
                ModeScope::Window => "window",
                ModeScope::Episode => "episode",
            },
            c.horizon,
            match self.windows.kind {
                WindowKind::Time => "actions".to_string(),
                WindowKind::Path => format!("points along {PATH_WINDOW} rad of path"),
            },
            if self.windows.hindsight {
                ", the decoder told the next target reached"
            } else {
                ""
            },
            c.steps,
            c.seed
        );
        let _ = write!(s, "| code | windows |");
        let sites = self.codes.first().map_or(0, |c| c.heading.len());
        for t in 0..sites {
            let _ = write!(s, " → {t} |");
        }
        let _ = write!(s, " left | right | clear |");
        for name in &self.operators {
            let _ = write!(s, " {name} |");
        }
        let _ = writeln!(s, " reads as |");
        let _ = write!(s, "|---:|---:|");
        for _ in 0..sites + 3 + self.operators.len() {
            let _ = write!(s, "---:|");
        }
        let _ = writeln!(s, "---|");
        for code in &self.codes {
            let _ = write!(s, "| {} | {} |", code.code, code.windows);
            for v in code.heading.iter().chain(&code.side).chain(&code.operator) {
                let _ = write!(s, " {:.0} % |", 100.0 * v);
            }
            let _ = writeln!(s, " {} |", code.description);
        }
        let _ = writeln!(
            s,
            "\n| ground truth (never seen by the learner) | windows | I(code; truth) bits | H(truth) bits | explained | purity | I with shuffled codes |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        let operator = self
            .operator
            .as_ref()
            .map(|o| ("operator (one per episode that meets the obstacle)", o));
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
        ]
        .into_iter()
        .chain(operator)
        {
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
/// of source `mode[0]`, …, `mode[K-1]` (unit 1): the data a
/// mode-conditional policy trains on. A channel is named `mode[k]: ` and
/// the code's description where `descriptions` has one (the exported
/// manifest carries the names, so whoever steers the policy reads what each
/// mode is). `modes` must come from these demonstrations' rows, in order.
pub fn with_mode_channels(
    demos: &Episodes,
    modes: &Modes,
    descriptions: &[String],
) -> Result<Episodes> {
    let k = modes.config.codes;
    crate::require!(
        modes.code.len() == demos.steps(),
        "{} mode assignments for {} rows",
        modes.code.len(),
        demos.steps()
    );
    let mut out = Episodes::new(demos.obs_dim + k, demos.action_dim);
    let sources: Vec<String> = (0..k).map(|i| format!("mode[{i}]")).collect();
    let names = sources
        .iter()
        .enumerate()
        .map(|(i, s)| match descriptions.get(i) {
            Some(d) if !d.is_empty() => format!("{s}: {d}"),
            _ => s.clone(),
        });
    out.obs_names = demos.obs_names.iter().cloned().chain(names).collect();
    out.action_names = demos.action_names.clone();
    out.hints = demos.hints.clone();
    out.hints.obs_sources.extend(sources);
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
/// `mode[k]` channels (`training`), export it to `out/policy`, and run `episodes` in-process
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
    training: ModeTraining,
    weight: f32,
    episodes: usize,
    device: &B::Device,
    progress: bool,
) -> Result<Vec<SteeringRow>> {
    let dir = train_mode_policy::<B>(demos, modes, study, out, training, device, progress)?;
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
    let mut settings = vec![Setting::unsteered()];
    settings.extend(
        (0..k)
            .filter(|&c| starts[c].iter().sum::<usize>() > 0)
            .map(|c| Setting::towards(vec![c], weight)),
    );
    let names: Vec<String> = study.codes.iter().map(|c| c.description.clone()).collect();
    let rows = steered_rows(
        task,
        &dir,
        k,
        &names,
        &settings,
        episodes,
        f64::NAN,
        progress,
    )?;
    Ok(rows
        .into_iter()
        .map(|(r, _)| {
            let first_target = r.codes.first().and_then(|&c| {
                let total: usize = starts[c].iter().sum();
                let (t, m) = starts[c]
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, m)| **m)
                    .map(|(t, m)| (t, *m))?;
                (total > 0).then(|| (t as u8, m as f64 / total as f64))
            });
            SteeringRow {
                code: r.codes.first().copied(),
                weight: r.weight,
                reads_as: r.reads_as,
                first_target,
                episodes: r.episodes,
                follow: first_target.map_or(0.0, |(t, _)| r.first_shares[usize::from(t)]),
                first_shares: r.first_shares,
                all_targets: r.all_targets,
                collisions: r.collisions,
            }
        })
        .collect())
}

/// How the arm's mode-conditional policy is trained: the arm's diffusion
/// settings but for these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModeTraining {
    /// Gradient steps.
    pub steps: usize,
    /// Probability of dropping a sample's mode (`mode_dropout`).
    pub dropout: f64,
    /// Probability of widening a kept mode to a random set holding it
    /// (`mode_sets`; 0 = one-hot only).
    pub sets: f64,
    /// Actions predicted and executed per decision.
    pub chunk: diffbc_runtime::manifest::ActionChunk,
}

impl Default for ModeTraining {
    /// The arm's steps and chunk, mode dropout 0.2, mode sets 0.5: the
    /// unconditional policy, every code and every set of codes are one
    /// network.
    fn default() -> Self {
        let arm = crate::Task::Arm.train_config(diffbc_train::Method::Diffusion);
        Self {
            steps: arm.optim.steps,
            dropout: 0.2,
            sets: 0.5,
            chunk: arm.chunk,
        }
    }
}

/// Train the arm's diffusion policy on `demos` with the modes' soft codes
/// as `mode[k]` channels (`training`) into
/// `out/checkpoint`, and export it to `out/policy` (returned). The mode
/// channels are named by the study's descriptions of the codes.
#[allow(clippy::too_many_arguments)]
pub fn train_mode_policy<B: burn::tensor::backend::AutodiffBackend>(
    demos: &Episodes,
    modes: &Modes,
    study: &ModesStudy,
    out: &std::path::Path,
    training: ModeTraining,
    device: &B::Device,
    progress: bool,
) -> Result<std::path::PathBuf> {
    let descriptions: Vec<String> = study.codes.iter().map(|c| c.description.clone()).collect();
    let data = with_mode_channels(demos, modes, &descriptions)?;
    let mut config = crate::Task::Arm.train_config(diffbc_train::Method::Diffusion);
    config.optim.steps = training.steps;
    config.chunk = training.chunk;
    config.mode_dropout = training.dropout;
    config.mode_sets = training.sets;
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
    Ok(dir)
}

/// One row of the style-steering table: episodes of a policy steered
/// towards or away from an episode code, judged by the side of the obstacle
/// their crossing reaches pass ([`super::episode_sides`]).
#[derive(Debug, Clone, Serialize)]
pub struct StyleRow {
    /// The codes (a set: one of them), none for the unsteered policy.
    pub codes: Vec<usize>,
    /// Towards the codes (`true`) or away from them.
    pub towards: bool,
    /// Away by exclusion (conditioned on every other code; policies
    /// trained with mode sets) rather than by negative guidance.
    pub by_exclusion: bool,
    /// The weight.
    pub weight: f32,
    /// What the codes read as (from the modes study).
    pub reads_as: String,
    /// Episodes run.
    pub episodes: usize,
    /// Of those, episodes with at least one reach across the obstacle.
    pub crossing_episodes: usize,
    /// Reaches across the obstacle, in all.
    pub crossing_reaches: usize,
    /// Share of those reaches passing on the left.
    pub left_share: f64,
    /// Share of crossing episodes whose every crossing reach passes left.
    pub all_left: f64,
    /// Share of crossing episodes whose every crossing reach passes right.
    pub all_right: f64,
    /// Share of episodes by first target.
    pub first_shares: Vec<f64>,
    /// Share completing every target.
    pub all_targets: f64,
    /// Share ending in a collision.
    pub collisions: f64,
    /// Entropy of the task orders (bits).
    pub order_entropy: f64,
    /// The demonstrations' order entropy at the same number of episodes
    /// (NaN where no demonstrations are at hand).
    pub demo_order_entropy: f64,
}

/// Steer a policy trained with episode codes ([`train_mode_policy`] on
/// modes of [`ModeScope::Episode`]) towards and away from every code that
/// some demonstration has, at each of `weights`, and run `episodes`
/// in-process episodes per row (the same evaluation seeds), unsteered
/// first.
pub fn style_steering_study(
    task: &ArmTask,
    demos: &Episodes,
    study: &ModesStudy,
    dir: &std::path::Path,
    weights: &[f32],
    episodes: usize,
    progress: bool,
) -> Result<Vec<StyleRow>> {
    // Sets of codes only for a policy trained on sets.
    let input = diffbc_runtime::Policy::load(dir, diffbc_runtime::EngineChoice::Native)
        .context_with(|| format!("loading {}", dir.display()))?
        .mode_input();
    let styles = if input == diffbc_runtime::manifest::ModeInput::Set {
        style_groups(&study.codes)
    } else {
        Vec::new()
    };
    let mut settings = vec![Setting::unsteered()];
    for &w in weights {
        for c in study.codes.iter().filter(|c| c.windows > 0) {
            settings.push(Setting::towards(vec![c.code], w));
            settings.push(Setting::away(vec![c.code], w));
        }
        for g in &styles {
            settings.push(Setting::towards(g.clone(), w));
            settings.push(Setting::away(g.clone(), w));
        }
    }
    let names: Vec<String> = study.codes.iter().map(|c| c.description.clone()).collect();
    let demo_orders = super::demos::orders_from_episodes(task, demos);
    let rows = steered_rows(
        task,
        dir,
        study.config.codes,
        &names,
        &settings,
        episodes,
        crate::metrics::entropy_at(&demo_orders, episodes),
        progress,
    )?;
    Ok(rows.into_iter().map(|(r, _)| r).collect())
}

/// What a policy trained with `mode[k]` channels does in each of its
/// modes, on the arm: `episodes` in-process episodes unsteered and towards
/// every mode at `weight` (the same evaluation seeds), each summarised by
/// side of the obstacle, first targets, completion and collisions — the
/// policy's modes as a user would steer them, named by its manifest. With
/// `figure`, a PNG of paths (a panel per row, its first 8 episodes) and one
/// of first-target histograms beside it (`<stem>-first-targets.png`).
pub fn policy_modes(
    task: &ArmTask,
    dir: &std::path::Path,
    weight: f32,
    episodes: usize,
    progress: bool,
    figure: Option<&std::path::Path>,
) -> Result<Vec<StyleRow>> {
    let policy = diffbc_runtime::Policy::load(dir, diffbc_runtime::EngineChoice::Native)
        .context_with(|| format!("loading {}", dir.display()))?;
    let k = policy.modes();
    crate::require!(
        k > 0,
        "{}: the policy has no mode channels (train one with `diffbc modes --steer`)",
        dir.display()
    );
    let names: Vec<String> = policy.mode_names().iter().map(|n| n.to_string()).collect();
    drop(policy);
    let settings: Vec<Setting> = std::iter::once(Setting::unsteered())
        .chain((0..k).map(|c| Setting::towards(vec![c], weight)))
        .collect();
    let rows = steered_rows(
        task,
        dir,
        k,
        &names,
        &settings,
        episodes,
        f64::NAN,
        progress,
    )?;
    if let Some(path) = figure {
        let panels: Vec<(String, Vec<Vec<[f32; 2]>>)> = rows
            .iter()
            .map(|(r, results)| {
                let paths = results
                    .iter()
                    .take(8)
                    .map(|e| {
                        e.actions
                            .chunks_exact(super::JOINTS)
                            .map(|q| [q[0], q[1]])
                            .collect()
                    })
                    .collect();
                (r.label(), paths)
            })
            .collect();
        paths_figure(task, path, &panels)?;
        let series: Vec<(String, Vec<f64>)> = rows
            .iter()
            .map(|(r, _)| (r.label(), r.first_shares.clone()))
            .collect();
        crate::plot::bar_chart(
            &path.with_file_name(format!(
                "{}-first-targets.png",
                path.file_stem()
                    .map_or("modes".into(), |s| s.to_string_lossy())
            )),
            "share of episodes by first target",
            &series,
        )?;
    }
    Ok(rows.into_iter().map(|(r, _)| r).collect())
}

/// Codes grouped by the operator most of their windows came from, where
/// a style takes more than one code and not all of them (with more codes
/// than operators, a style is a set of codes; a style of one code has its
/// own rows).
fn style_groups(codes: &[CodeSummary]) -> Vec<Vec<usize>> {
    let active: Vec<&CodeSummary> = codes.iter().filter(|c| c.windows > 0).collect();
    let mut by_operator: Vec<Vec<usize>> = Vec::new();
    for c in &active {
        let Some(o) =
            (0..c.operator.len()).max_by(|&a, &b| c.operator[a].total_cmp(&c.operator[b]))
        else {
            continue;
        };
        if by_operator.len() <= o {
            by_operator.resize(o + 1, Vec::new());
        }
        by_operator[o].push(c.code);
    }
    by_operator
        .into_iter()
        .filter(|g| g.len() > 1 && g.len() < active.len())
        .collect()
}

/// One row of a steering study: towards or away from a set of codes (one
/// of them) at a weight; no codes = unsteered.
#[derive(Debug, Clone, PartialEq)]
struct Setting {
    codes: Vec<usize>,
    towards: bool,
    weight: f32,
}

impl Setting {
    fn unsteered() -> Self {
        Self::towards(Vec::new(), 0.0)
    }

    fn towards(codes: Vec<usize>, weight: f32) -> Self {
        Self {
            codes,
            towards: true,
            weight,
        }
    }

    fn away(codes: Vec<usize>, weight: f32) -> Self {
        Self {
            codes,
            towards: false,
            weight,
        }
    }

    /// The steering of a policy with `k` modes read as `input`: towards
    /// the set; away by exclusion (the complement) where the policy was
    /// trained with mode sets, else by negative guidance from each code.
    fn steering(
        &self,
        k: usize,
        input: diffbc_runtime::manifest::ModeInput,
    ) -> Option<diffbc_runtime::Steering> {
        use diffbc_runtime::Steering;
        if self.codes.is_empty() {
            return None;
        }
        Some(if self.towards {
            Steering::towards_set(k, &self.codes, self.weight)
        } else {
            Steering::away_from(k, &self.codes, self.weight, input)
        })
    }
}

/// Run `episodes` in-process episodes of the policy in `dir` (K = `k`
/// mode channels, named `names`) for each of `settings` with
/// Diffusion-X, and summarise each.
#[allow(clippy::too_many_arguments)]
fn steered_rows(
    task: &ArmTask,
    dir: &std::path::Path,
    k: usize,
    names: &[String],
    settings: &[Setting],
    episodes: usize,
    demo_order_entropy: f64,
    progress: bool,
) -> Result<Vec<(StyleRow, Vec<super::EpisodeResult>)>> {
    let threads = crate::pool::default_threads();
    let sampler = Some(diffbc_runtime::SamplerConfig::diffusion_x(
        super::report::EXTRA_STEPS,
    ));
    let input = diffbc_runtime::Policy::load(dir, diffbc_runtime::EngineChoice::Native)
        .context_with(|| format!("loading {}", dir.display()))?
        .mode_input();
    let mut rows = Vec::new();
    for setting in settings {
        let steering = setting.steering(k, input);
        let mut row = StyleRow {
            codes: setting.codes.clone(),
            towards: setting.towards,
            by_exclusion: !setting.towards && input == diffbc_runtime::manifest::ModeInput::Set,
            weight: setting.weight,
            reads_as: setting
                .codes
                .iter()
                .map(|&c| names.get(c).cloned().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" or "),
            episodes: 0,
            crossing_episodes: 0,
            crossing_reaches: 0,
            left_share: 0.0,
            all_left: 0.0,
            all_right: 0.0,
            first_shares: vec![0.0; task.sites],
            all_targets: 0.0,
            collisions: 0.0,
            order_entropy: 0.0,
            demo_order_entropy,
        };
        let pb = if progress {
            super::eval::bar(episodes, row.label())
        } else {
            indicatif::ProgressBar::hidden()
        };
        let (results, _) = super::eval::rollouts_steered(
            task,
            dir,
            sampler,
            steering.as_ref(),
            episodes,
            threads,
            &pb,
        )?;
        let n = results.len().max(1) as f64;
        let (mut left, mut all_left, mut all_right) = (0usize, 0usize, 0usize);
        for (e, r) in results.iter().enumerate() {
            if let Some(f) = r
                .order
                .first()
                .and_then(|&f| row.first_shares.get_mut(usize::from(f)))
            {
                *f += 1.0 / n;
            }
            let seed = super::eval::EVAL_SEED_BASE + e as u64;
            let sides: Vec<Side> = super::episode_sides(task, seed, r)
                .into_iter()
                .flatten()
                .collect();
            if sides.is_empty() {
                continue;
            }
            row.crossing_episodes += 1;
            row.crossing_reaches += sides.len();
            let l = sides.iter().filter(|s| **s == Side::Left).count();
            left += l;
            all_left += usize::from(l == sides.len());
            all_right += usize::from(l == 0);
        }
        let per = |m: usize, of: usize| m as f64 / of.max(1) as f64;
        let orders: Vec<Vec<u8>> = results.iter().map(|r| r.order.clone()).collect();
        row.episodes = results.len();
        row.left_share = per(left, row.crossing_reaches);
        row.all_left = per(all_left, row.crossing_episodes);
        row.all_right = per(all_right, row.crossing_episodes);
        row.all_targets = results
            .iter()
            .filter(|r| r.order.len() >= task.goal)
            .count() as f64
            / n;
        row.collisions = results.iter().filter(|r| r.collided).count() as f64 / n;
        row.order_entropy = crate::metrics::entropy_bits(&orders);
        rows.push((row, results));
    }
    Ok(rows)
}

impl StyleRow {
    /// "unsteered", "towards 2 (w = 1)", "towards 0,3 (w = 1)", "away
    /// from 2 (w = 1, by exclusion)".
    pub fn label(&self) -> String {
        let codes = self
            .codes
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        match (self.codes.is_empty(), self.towards, self.by_exclusion) {
            (true, ..) => "unsteered".to_string(),
            (false, true, _) => format!("towards {codes} (w = {})", self.weight),
            (false, false, true) => {
                format!("away from {codes} (w = {}, by exclusion)", self.weight)
            }
            (false, false, false) => format!("away from {codes} (w = {})", self.weight),
        }
    }
}

/// Binomial standard error of a share `p` of `n`.
fn se(p: f64, n: usize) -> f64 {
    let p = p.clamp(0.0, 1.0);
    (p * (1.0 - p) / n.max(1) as f64).sqrt()
}

/// The style-steering rows as Markdown, with binomial standard errors.
pub fn style_markdown(rows: &[StyleRow]) -> String {
    let mut s = String::from(
        "| steering | mode reads as | episodes crossing the obstacle | every crossing reach left | every crossing reach right | reaches passing left | first target (% per target) | all targets | collisions | order entropy (% of demos') |\n|---|---|---:|---:|---:|---:|---|---:|---:|---:|\n",
    );
    for r in rows {
        let name = r.label();
        let reads_as = if r.reads_as.is_empty() {
            "–"
        } else {
            r.reads_as.as_str()
        };
        let _ = writeln!(
            s,
            "| {name} | {reads_as} | {} of {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.2} ({} reaches) | {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.2} bits{} |",
            r.crossing_episodes,
            r.episodes,
            r.all_left,
            se(r.all_left, r.crossing_episodes),
            r.all_right,
            se(r.all_right, r.crossing_episodes),
            r.left_share,
            r.crossing_reaches,
            r.first_shares
                .iter()
                .map(|p| format!("{:.0}", 100.0 * p))
                .collect::<Vec<_>>()
                .join(" / "),
            r.all_targets,
            se(r.all_targets, r.episodes),
            r.collisions,
            se(r.collisions, r.episodes),
            r.order_entropy,
            if r.demo_order_entropy.is_finite() {
                format!(
                    " ({:.0} %)",
                    100.0 * r.order_entropy / r.demo_order_entropy.max(1e-9)
                )
            } else {
                String::new()
            }
        );
    }
    s
}

/// The steering rows as Markdown, with binomial standard errors.
pub fn steering_markdown(rows: &[SteeringRow]) -> String {
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

    #[test]
    fn a_style_is_the_set_of_codes_its_operator_dominates() {
        let code = |code: usize, windows: usize, left: f64| CodeSummary {
            code,
            windows,
            heading: Vec::new(),
            side: [0.0; 3],
            operator: vec![left, 1.0 - left],
            description: String::new(),
        };
        let four = [
            code(0, 10, 0.07),
            code(1, 10, 0.7),
            code(2, 10, 0.95),
            code(3, 10, 0.03),
            code(4, 0, 0.5),
        ];
        assert_eq!(style_groups(&four), [vec![1, 2], vec![0, 3]]);
        // One code per style, or one style for every code: no groups.
        assert!(style_groups(&four[1..4]).len() == 1);
        assert!(style_groups(&[code(0, 5, 0.9), code(1, 5, 0.1)]).is_empty());
        assert!(style_groups(&[code(0, 5, 0.9), code(1, 5, 0.8)]).is_empty());
    }
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
    fn path_windows_are_the_same_path_at_any_speed() {
        // Two episodes along the same straight line in joint 0, one twice
        // as fast; then a stop.
        let mut demos = Episodes::new(1, super::super::JOINTS);
        for speed in [0.1f32, 0.05] {
            let rows = (3.0 / speed) as usize;
            let act: Vec<f32> = (0..rows)
                .flat_map(|i| [(i as f32 * speed).min(2.0), 0.0, 0.0, 0.0])
                .collect();
            demos.push_episode(&vec![0.0; rows], &act).expect("episode");
        }
        let h = 10;
        let time = windows(&demos, h, WindowKind::Time);
        let path = windows(&demos, h, WindowKind::Path);
        let first = |d: &diffbc_train::data::Dataset, e: usize| {
            let row = demos.episode(e).start;
            d.actions[row * d.action_dim..(row + 1) * d.action_dim].to_vec()
        };
        // By time the two differ; along the path they do not.
        assert!(first(&time, 0) != first(&time, 1));
        for (a, b) in first(&path, 0).iter().zip(first(&path, 1)) {
            assert!(
                (a - b).abs() < 1e-4,
                "{:?} vs {:?}",
                first(&path, 0),
                first(&path, 1)
            );
        }
        // Points PATH_WINDOW / h apart along the path.
        let p = first(&path, 0);
        for k in 0..h {
            let want = PATH_WINDOW * (k + 1) as f32 / h as f32;
            assert!((p[k * 4] - want).abs() < 1e-4, "point {k}: {}", p[k * 4]);
        }
        // Past the end of the motion a window holds the last command.
        let last = demos.episode(0).end - 1;
        let tail = &path.actions[last * path.action_dim..(last + 1) * path.action_dim];
        assert!(
            tail.chunks_exact(4).all(|q| (q[0] - 2.0).abs() < 1e-6),
            "{tail:?}"
        );
    }

    #[test]
    fn the_next_target_read_in_hindsight_is_the_one_the_demonstrator_headed_for() {
        let task = ArmTask::default();
        let (demos, truth) = generate_with_truth(&task, 20, 1, false).expect("demos");
        let next = next_targets(&task, &demos);
        assert_eq!(next.len(), demos.steps() * task.sites);
        let heading: Vec<u8> = truth.iter().flatten().map(|t| t.heading).collect();
        let mut told = 0;
        for (i, row) in next.chunks_exact(task.sites).enumerate() {
            let ones: Vec<usize> = (0..task.sites).filter(|&s| row[s] == 1.0).collect();
            match ones[..] {
                [] => {}
                [s] => {
                    told += 1;
                    // The demonstrator finishes a reach a few ticks after its
                    // target registered; from then on the arm heads on.
                    let h = usize::from(heading[i]);
                    let done = demos.obs_row(i)[2 * super::super::JOINTS + h] > 0.5;
                    assert!(s == h || done, "row {i}: told {s}, heading for {h}");
                }
                _ => panic!("row {i}: {row:?}"),
            }
        }
        // Every row but the last reach's (whose flag the recording ends
        // before observing) is told.
        assert!(
            told * 10 > demos.steps() * 7,
            "{told} of {} rows",
            demos.steps()
        );
    }

    #[test]
    fn two_operators_keep_to_their_sides_and_the_paths_show_which() {
        let task = ArmTask::two_operators();
        let (demos, truth) = generate_with_truth(&task, 40, 0, false).expect("demos");
        let orders = super::super::demos::orders_from_episodes(&task, &demos);
        // Blocked reaches by operator: [left, right].
        let mut by_operator = [[0usize; 2]; 2];
        let mut episodes = [0usize; 2];
        let (mut judged, mut agree) = (0, 0);
        let mut judged_by_operator = [[0usize; 2]; 2];
        for (e, t) in truth.iter().enumerate() {
            let op = usize::from(t[0].operator);
            assert!(op < 2, "episode {e}: operator {op}");
            assert!(
                t.iter().all(|x| usize::from(x.operator) == op),
                "episode {e}"
            );
            episodes[op] += 1;
            // One truth per reach: the first tick heading for each target.
            let reach_side = |target: u8| t.iter().find(|x| x.heading == target).map(|x| x.side);
            for &target in &orders[e] {
                match reach_side(target) {
                    Some(Side::Left) => by_operator[op][0] += 1,
                    Some(Side::Right) => by_operator[op][1] += 1,
                    _ => {}
                }
            }
            // The same sides read off the commanded path alone.
            let rows = demos.episode(e);
            let first = demos.obs_row(rows.start);
            let path: Vec<[f32; 2]> = std::iter::once([first[0], first[1]])
                .chain(rows.map(|i| {
                    let a = demos.action_row(i);
                    [a[0], a[1]]
                }))
                .collect();
            let sides = super::super::reach_sides(&task, &path, &orders[e]);
            for (i, s) in sides.iter().enumerate() {
                if let Some(s) = s {
                    judged += 1;
                    agree += usize::from(reach_side(orders[e][i]) == Some(*s));
                    judged_by_operator[op][usize::from(*s == Side::Right)] += 1;
                }
            }
        }
        assert!(episodes[0] >= 10 && episodes[1] >= 10, "{episodes:?}");
        // Every blocked reach keeps the operator's side where both sides are
        // open; a few near the start pose have room on one side only.
        for (op, want) in [(0, 0), (1, 1)] {
            let b = by_operator[op];
            assert!(
                b[want] > 10 && b[1 - want] * 10 <= b[want],
                "operator {op}: blocked reaches [left, right] {b:?}"
            );
            let j = judged_by_operator[op];
            assert!(
                j[want] > 5 && j[1 - want] == 0,
                "operator {op}: reaches across the obstacle [left, right] {j:?}"
            );
        }
        assert!(judged > 20, "{judged} reaches across the obstacle");
        assert_eq!(agree, judged, "the path's side against the demonstrator's");
        // The built-in task has no operators.
        let (_, t) = generate_with_truth(&ArmTask::default(), 3, 0, false).expect("demos");
        assert!(t.iter().flatten().all(|x| x.operator == u8::MAX));
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
            WindowSpec::default(),
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
