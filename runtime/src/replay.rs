//! End-to-end golden episodes: an observation sequence, every random draw the
//! policy consumed, and the actions [`Policy::act_with_noise`] returned — for
//! each sampler the manifest names. A re-implementation of the sampler (any
//! engine, any language: `docs/manifest.md`) replays the draws and must
//! return the same actions; no random number generator has to be reproduced.
//!
//! ```text
//! golden/episodes.json                  EpisodeIndex
//! golden/ep-<case>.observations.npy     [ticks, frame_len], raw units
//! golden/ep-<case>.normal.npy           [n] standard normal draws, in order
//! golden/ep-<case>.uniform.npy          [m] uniform draws in [0, 1), in order
//! golden/ep-<case>.actions.npy          [ticks, action length], raw units
//! ```

use crate::fs::{self as userfs, limits};
use crate::golden::{read_npy, write_npy};
use crate::manifest::{Manifest, files};
use crate::policy::{EngineChoice, Policy, PolicyError, PolicyOptions};
use crate::sampler::{NoiseRecorder, NoiseTape, SamplerConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of `episodes.json`.
pub const EPISODES_FORMAT: u32 = 1;
/// The sampler name of the manifest's default `sampler` in a case.
pub const DEFAULT_SAMPLER: &str = "default";

/// One recorded episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpisodeCase {
    /// Unique name; also the stem of the case's files.
    pub name: String,
    /// `default` (the manifest's `sampler`) or a key of the manifest's `samplers`.
    pub sampler: String,
    /// Control ticks.
    pub ticks: usize,
    /// `[ticks, frame_len]` observations, raw units (`.npy` in `golden/`).
    pub observations: String,
    /// Standard normal draws in the order consumed.
    pub normal: String,
    /// Uniform draws in the order consumed (classifier heads that sample).
    pub uniform: String,
    /// `[ticks, action length]` actions returned, raw units.
    pub actions: String,
}

/// `golden/episodes.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpisodeIndex {
    /// [`EPISODES_FORMAT`].
    pub format_version: u32,
    /// The cases.
    pub cases: Vec<EpisodeCase>,
}

/// What [`record`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPlan {
    /// Episodes per sampler.
    pub episodes: usize,
    /// Ticks per episode.
    pub ticks: usize,
    /// Seed of the observations and draws.
    pub seed: u64,
}

impl Default for RecordPlan {
    fn default() -> Self {
        Self {
            episodes: 1,
            ticks: 4,
            seed: 0,
        }
    }
}

/// How far a replay came from the recorded actions.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReplayReport {
    /// Cases replayed.
    pub cases: usize,
    /// Ticks replayed.
    pub ticks: usize,
    /// Largest |difference| in raw action units.
    pub worst_raw: f32,
    /// Largest |difference| divided by the action normaliser's scale of that
    /// value (the units the head works in).
    pub worst_normalised: f32,
}

fn manifest_err(path: &Path, message: impl Into<String>) -> PolicyError {
    PolicyError::Manifest {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The sampler a case names.
pub fn sampler_for(m: &Manifest, name: &str) -> Option<SamplerConfig> {
    if name == DEFAULT_SAMPLER {
        Some(m.sampler)
    } else {
        m.samplers.get(name).copied()
    }
}

/// A smooth seeded observation sequence inside the channels' training ranges:
/// each value follows an AR(1) walk around its normaliser mean, half a
/// standard deviation wide, clamped to its channel's `[min, max]`.
pub fn synthetic_observations(m: &Manifest, ticks: usize, seed: u64) -> Vec<f32> {
    let f = m.observation.frame_len();
    let norm = &m.normalization.observation;
    let mut range = Vec::with_capacity(f);
    for c in &m.channels.observation {
        range.extend(std::iter::repeat_n((c.min, c.max), c.len()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut walk: Vec<f32> = (0..f).map(|_| rng.sample(StandardNormal)).collect();
    let mut out = Vec::with_capacity(ticks * f);
    for _ in 0..ticks {
        for (i, g) in walk.iter_mut().enumerate() {
            let z: f32 = rng.sample(StandardNormal);
            *g = 0.8 * *g + 0.6 * z;
            let group = i / norm.group.max(1);
            let (lo, hi) = range.get(i).copied().unwrap_or((f32::MIN, f32::MAX));
            let centre = norm.mean[group].clamp(lo, hi);
            out.push((centre + 0.5 * norm.std[group] * *g).clamp(lo, hi));
        }
    }
    out
}

/// Record the end-to-end cases of the folder `dir` (manifest and graphs
/// written, hashes matching) on `engine`: for the default sampler and every
/// named one, `plan.episodes` episodes of `plan.ticks` ticks. Writes the
/// files and `golden/episodes.json`; returns the index.
pub fn record(
    dir: &Path,
    engine: EngineChoice,
    plan: &RecordPlan,
) -> Result<EpisodeIndex, PolicyError> {
    let mut policy = Policy::load(dir, engine)?;
    let m = policy.manifest().clone();
    let gdir = dir.join(files::GOLDEN);
    std::fs::create_dir_all(&gdir).map_err(|cause| PolicyError::Io {
        path: gdir.clone(),
        cause,
    })?;
    let names: Vec<String> = std::iter::once(DEFAULT_SAMPLER.to_string())
        .chain(m.samplers.keys().cloned())
        .collect();
    let (f, d) = (m.observation.frame_len(), m.step_action_dim());
    let mut cases = Vec::new();
    let write = |file: &str, shape: &[usize], data: &[f32]| {
        write_npy(&gdir.join(file), shape, data)
            .map_err(|e| manifest_err(&gdir.join(file), e.to_string()))
    };
    let mut case_seed = plan.seed;
    for name in &names {
        let config = sampler_for(&m, name).ok_or_else(|| manifest_err(dir, name.clone()))?;
        if !policy.is_direct() {
            policy.set_sampler(config)?;
        }
        for e in 0..plan.episodes {
            case_seed += 1;
            let case = format!("{name}-{e}");
            let obs = synthetic_observations(&m, plan.ticks, case_seed);
            let mut noise = NoiseRecorder::new(ChaCha8Rng::seed_from_u64(case_seed ^ 0xD1FF));
            let mut actions = Vec::with_capacity(plan.ticks * d);
            policy.reset();
            for t in 0..plan.ticks {
                let a = policy.act_with_noise(&obs[t * f..(t + 1) * f], &mut noise)?;
                actions.extend_from_slice(a);
            }
            let stem = format!("ep-{case}");
            let c = EpisodeCase {
                name: case,
                sampler: name.clone(),
                ticks: plan.ticks,
                observations: format!("{stem}.observations.npy"),
                normal: format!("{stem}.normal.npy"),
                uniform: format!("{stem}.uniform.npy"),
                actions: format!("{stem}.actions.npy"),
            };
            write(&c.observations, &[plan.ticks, f], &obs)?;
            write(&c.normal, &[noise.normal.len()], &noise.normal)?;
            write(&c.uniform, &[noise.uniform.len()], &noise.uniform)?;
            write(&c.actions, &[plan.ticks, d], &actions)?;
            cases.push(c);
        }
    }
    let index = EpisodeIndex {
        format_version: EPISODES_FORMAT,
        cases,
    };
    let path = gdir.join(files::EPISODES);
    let text =
        serde_json::to_string_pretty(&index).map_err(|e| manifest_err(&path, e.to_string()))?;
    std::fs::write(&path, text + "\n").map_err(|cause| PolicyError::Io { path, cause })?;
    Ok(index)
}

/// Read `golden/episodes.json` of `dir`.
pub fn read_index(dir: &Path) -> Result<(PathBuf, EpisodeIndex), PolicyError> {
    let gdir = dir.join(files::GOLDEN);
    let path = gdir.join(files::EPISODES);
    let text = userfs::read_to_string(&path, limits::JSON)?;
    let index: EpisodeIndex =
        serde_json::from_str(&text).map_err(|e| manifest_err(&path, e.to_string()))?;
    if index.format_version != EPISODES_FORMAT {
        return Err(manifest_err(
            &path,
            format!(
                "format_version {} is not supported (this runtime reads {EPISODES_FORMAT})",
                index.format_version
            ),
        ));
    }
    Ok((gdir, index))
}

/// Replay every case of `dir` on `engine`: feed the observations, hand the
/// recorded draws to the sampler, and compare the actions. A case whose
/// draws are not all consumed, or that needs more than were recorded, is an
/// error (the draw order differs).
pub fn replay(dir: &Path, engine: EngineChoice) -> Result<ReplayReport, PolicyError> {
    let (gdir, index) = read_index(dir)?;
    let mut policy = Policy::load_with(
        dir,
        &PolicyOptions {
            engine,
            ..PolicyOptions::default()
        },
    )?;
    let m = policy.manifest().clone();
    let (f, d) = (m.observation.frame_len(), m.step_action_dim());
    let scale = &m.normalization.action;
    let npy = |file: &str, field: &str| -> Result<(Vec<usize>, Vec<f32>), PolicyError> {
        let path = userfs::within(&gdir, file).map_err(|source| PolicyError::FieldFile {
            path: gdir.join(files::EPISODES),
            field: field.into(),
            source,
        })?;
        read_npy(&path).map_err(|e| manifest_err(&path, e.to_string()))
    };
    let mut report = ReplayReport::default();
    for c in &index.cases {
        let config = sampler_for(&m, &c.sampler).ok_or_else(|| {
            manifest_err(
                &gdir.join(files::EPISODES),
                format!(
                    "case {}: sampler {:?} is neither `default` nor in the manifest's samplers",
                    c.name, c.sampler
                ),
            )
        })?;
        if !policy.is_direct() {
            policy.set_sampler(config)?;
        }
        let (oshape, obs) = npy(&c.observations, "observations")?;
        let (_, normal) = npy(&c.normal, "normal")?;
        let (_, uniform) = npy(&c.uniform, "uniform")?;
        let (ashape, want) = npy(&c.actions, "actions")?;
        if oshape != [c.ticks, f] || ashape != [c.ticks, d] {
            return Err(manifest_err(
                &gdir.join(&c.observations),
                format!(
                    "case {}: observations {oshape:?} and actions {ashape:?}, expected [{}, {f}] and [{}, {d}]",
                    c.name, c.ticks, c.ticks
                ),
            ));
        }
        let mut tape = NoiseTape::new(&normal, &uniform);
        let draws_err = |tape: &NoiseTape| {
            let used = tape.used();
            manifest_err(
                &gdir.join(&c.normal),
                format!(
                    "case {}: the policy consumed {} normal and {} uniform draws of the {} and {} recorded{}",
                    c.name,
                    used.0,
                    used.1,
                    normal.len(),
                    uniform.len(),
                    if tape.overrun() {
                        " and asked for more"
                    } else {
                        ""
                    }
                ),
            )
        };
        policy.reset();
        for t in 0..c.ticks {
            let got = match policy.act_with_noise(&obs[t * f..(t + 1) * f], &mut tape) {
                Ok(a) => a,
                Err(_) if tape.overrun() => return Err(draws_err(&tape)),
                Err(e) => return Err(e),
            };
            for (k, (g, w)) in got.iter().zip(&want[t * d..(t + 1) * d]).enumerate() {
                let diff = (g - w).abs();
                // The smallest normaliser scale of value k over the chunk's steps.
                let s = (0..m.chunk.horizon)
                    .map(|p| scale.std[(p * d + k) / scale.group.max(1)])
                    .fold(f32::INFINITY, f32::min);
                report.worst_raw = report.worst_raw.max(diff);
                report.worst_normalised = report.worst_normalised.max(diff / s);
            }
            report.ticks += 1;
        }
        if tape.overrun() || tape.used() != (normal.len(), uniform.len()) {
            return Err(draws_err(&tape));
        }
        report.cases += 1;
    }
    Ok(report)
}
