//! The data set type every task feeds: observation frames stored once, and
//! samples that point at them.
//!
//! Frames live in a table (`[frames, frame_len]`) and each sample names its
//! current frame and `history` previous frames by index. The claw task has 7
//! distinct images behind 20,000 samples; a trajectory task has one frame per
//! time step and history indices into the same episode. The training loop
//! encodes each distinct frame of a batch once.

use crate::config::ActionScaling;
use crate::error::TrainError;
use diffbc_runtime::Normalizer;
use diffbc_runtime::normalize::MIN_STD;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The largest magnitude a recorded value may have. Joint angles, pixels,
/// millimetres and servo ticks sit far below; a value beyond it is a unit
/// mistake or corruption, and one such value makes its channel's
/// standardisation useless (every other sample normalises to ~0).
pub const MAX_ABS_VALUE: f32 = 1e6;

/// Demonstrations as (observation with history, action) pairs.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Shape of one observation frame.
    pub obs: ObsSpec,
    /// Length of one sample's action vector (`horizon` actions).
    pub action_dim: usize,
    /// Previous frames per sample (k).
    pub history: usize,
    /// Actions per sample (1 = single-step; more = an action chunk).
    pub horizon: usize,
    /// Frame table, `[frames, obs.len()]`, raw units.
    pub frames: Vec<f32>,
    /// Per sample, the frame indices oldest first, `[samples, history + 1]`.
    pub frame_index: Vec<u32>,
    /// Actions, `[samples, action_dim]`, raw units.
    pub actions: Vec<f32>,
    /// Channels and deployment settings of the data (written into the
    /// checkpoint and the exported manifest); `None` for synthetic data.
    pub interface: Option<diffbc_runtime::manifest::Interface>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.actions.len() / self.action_dim
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Frames in the table.
    pub fn frame_count(&self) -> usize {
        self.frames.len() / self.obs.len()
    }

    /// Check that every index and length agrees.
    pub fn validate(&self) -> Result<(), TrainError> {
        let fl = self.obs.len();
        if fl == 0 || !self.frames.len().is_multiple_of(fl) {
            return Err(TrainError::Data(format!(
                "frame table has {} values, not a multiple of the frame length {fl}",
                self.frames.len()
            )));
        }
        if self.action_dim == 0 || !self.actions.len().is_multiple_of(self.action_dim) {
            return Err(TrainError::Data(
                "actions are not a multiple of action_dim".into(),
            ));
        }
        if self.frame_index.len() != self.len() * (self.history + 1) {
            return Err(TrainError::Data(format!(
                "{} frame indices for {} samples with history {}",
                self.frame_index.len(),
                self.len(),
                self.history
            )));
        }
        let n = self.frame_count() as u32;
        if let Some(i) = self.frame_index.iter().position(|&f| f >= n) {
            return Err(TrainError::Data(format!(
                "sample {} points at frame {} of {n}",
                i / (self.history + 1),
                self.frame_index[i]
            )));
        }
        let plausible = |v: &f32| v.is_finite() && v.abs() <= MAX_ABS_VALUE;
        if let Some(i) = self.actions.iter().position(|v| !plausible(v)) {
            return Err(TrainError::Data(format!(
                "sample {} action value {}: {} is not finite or beyond ±{MAX_ABS_VALUE:e}",
                i / self.action_dim,
                i % self.action_dim,
                self.actions[i]
            )));
        }
        if let Some(i) = self.frames.iter().position(|v| !plausible(v)) {
            return Err(TrainError::Data(format!(
                "frame {} value {}: {} is not finite or beyond ±{MAX_ABS_VALUE:e}",
                i / fl,
                i % fl,
                self.frames[i]
            )));
        }
        Ok(())
    }

    /// The frame's `mode[0]`, …, `mode[K-1]` channels (sources, in order
    /// and adjacent), if the data has them.
    pub fn mode_channels(&self) -> Result<Option<std::ops::Range<usize>>, TrainError> {
        use diffbc_runtime::manifest::Source;
        let Some(interface) = &self.interface else {
            return Ok(None);
        };
        let mut at = 0;
        let mut found: Option<std::ops::Range<usize>> = None;
        for c in &interface.channels.observation {
            if let Source::Mode(k) = c.source() {
                let r = found.get_or_insert(at..at);
                if c.len() != 1 || r.end != at || k != r.len() {
                    return Err(TrainError::Data(format!(
                        "observation channel {} (source {}): mode channels must be single values mode[0], mode[1], … next to each other",
                        c.name, c.source
                    )));
                }
                r.end = at + 1;
            }
            at += c.len();
        }
        Ok(found)
    }

    /// Split into (train, test) by shuffling sample indices with `seed`.
    pub fn split(&self, test_fraction: f64, seed: u64) -> (Dataset, Dataset) {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let n_test = ((self.len() as f64) * test_fraction).round() as usize;
        let (test, train) = idx.split_at(n_test);
        (self.subset(train), self.subset(test))
    }

    /// The samples at `indices` (the frame table is shared).
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let (a, h) = (self.action_dim, self.history + 1);
        let mut actions = Vec::with_capacity(indices.len() * a);
        let mut frame_index = Vec::with_capacity(indices.len() * h);
        for &i in indices {
            actions.extend_from_slice(&self.actions[i * a..(i + 1) * a]);
            frame_index.extend_from_slice(&self.frame_index[i * h..(i + 1) * h]);
        }
        Dataset {
            actions,
            frame_index,
            frames: self.frames.clone(),
            interface: self.interface.clone(),
            ..*self
        }
    }

    /// Observation statistics over the frames the samples use.
    pub fn fit_obs_normalizer(&self) -> Result<Normalizer, TrainError> {
        let fl = self.obs.len();
        let mut used = vec![false; self.frame_count()];
        for &f in &self.frame_index {
            used[f as usize] = true;
        }
        let distinct: Vec<f32> = used
            .iter()
            .enumerate()
            .filter(|(_, u)| **u)
            .flat_map(|(i, _)| self.frames[i * fl..(i + 1) * fl].iter().copied())
            .collect();
        // Statistics over the distinct frames in use (each counted once).
        Normalizer::fit(&distinct, fl, self.obs.norm_group())
            .map_err(|e| TrainError::Data(format!("observation statistics: {e}")))
    }

    /// Action scaling fitted to these actions.
    pub fn fit_action_normalizer(&self, scaling: ActionScaling) -> Result<Normalizer, TrainError> {
        let a = self.action_dim;
        match scaling {
            ActionScaling::Standardize => Normalizer::fit(&self.actions, a, 1)
                .map_err(|e| TrainError::Data(format!("action statistics: {e}"))),
            ActionScaling::MinMax => {
                let mut lo = vec![f32::INFINITY; a];
                let mut hi = vec![f32::NEG_INFINITY; a];
                for row in self.actions.chunks_exact(a) {
                    for (d, &v) in row.iter().enumerate() {
                        lo[d] = lo[d].min(v);
                        hi[d] = hi[d].max(v);
                    }
                }
                if self.actions.is_empty() {
                    return Err(TrainError::Data("action statistics: no actions".into()));
                }
                Ok(Normalizer {
                    mean: lo.iter().zip(&hi).map(|(l, h)| 0.5 * (l + h)).collect(),
                    std: lo
                        .iter()
                        .zip(&hi)
                        .map(|(l, h)| (0.5 * (h - l)).max(MIN_STD))
                        .collect(),
                    group: 1,
                })
            }
            ActionScaling::None => Ok(Normalizer::identity(a)),
        }
    }
}

/// The shape of one observation frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ObsSpec {
    /// A flat vector.
    Vector {
        /// Its length.
        dim: usize,
    },
    /// A channel-major image `[channels, height, width]`, values in [0, 1].
    Image {
        /// Colour channels.
        channels: usize,
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
}

impl ObsSpec {
    /// Number of values in one frame.
    pub fn len(&self) -> usize {
        match *self {
            Self::Vector { dim } => dim,
            Self::Image {
                channels,
                height,
                width,
            } => channels * height * width,
        }
    }

    /// Whether a frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Features that share normalisation statistics (a channel's pixels).
    pub fn norm_group(&self) -> usize {
        match *self {
            Self::Vector { .. } => 1,
            Self::Image { height, width, .. } => height * width,
        }
    }
}
