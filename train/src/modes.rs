//! Modes without labels: a VQ-VAE over (observation, action-chunk) windows,
//! after Eloundou's mode-conditional policies (van den Oord et al.'s
//! vector quantiser, trained with the straight-through estimator).
//!
//! **Why windows with a conditional decoder.** Every row of a recording
//! gives one window: its observation and the `horizon` actions from it on.
//! The encoder reads the whole window; the decoder reads the observation
//! and the code and must rebuild the actions. So a code only has to carry
//! what the observation does not already say — the demonstrator's choice at
//! that moment (on the arm: which target next, which side of the obstacle) —
//! and not where the arm happens to be, which a plain autoencoder's codes
//! would spend themselves on. Whole-episode summaries were the alternative;
//! they mix a dozen independent choices (an order of four targets, a side
//! per blocked reach) into one code, where a window holds about one.
//!
//! **Training.** `warmup` steps as a plain autoencoder (the decoder gets the
//! encoder's output), then the codebook is fitted by k-means to the
//! encoder's outputs on the data ([`crate::kmeans`]), then VQ-VAE steps:
//! reconstruction + ‖sg(z_e) − e‖² + β‖z_e − sg(e)‖². A code that no window
//! chose for 100 steps is moved onto a random window's latent (dead codes
//! are the usual failure of a VQ codebook). Seeded end to end.
//!
//! **Episode scope (operator styles).** With [`ModeScope::Episode`] the
//! latent is one per episode: the mean of the encoder's outputs over a set
//! of the episode's windows (`set_size` per step; all of them for the final
//! codes), quantised once and given to the decoder with every window's
//! observation. A code can then only carry what holds for the whole episode
//! — the operator's habit (always passing the obstacle on one side, a speed)
//! — not a single reach's target. Every row of an episode gets its
//! episode's code. This is what "do it the way operator A did" steers by.
//!
//! **Soft codes.** Besides the nearest code, every window gets
//! `softmax(−‖z_e − e_k‖² / t)` over the codes, `t` the mean squared
//! distance of a window to its own code: the soft code distances a
//! mode-conditional policy is conditioned on.

use crate::data::Dataset;
use crate::error::TrainError;
use crate::model::with_backend_rng;
use burn::module::{AutodiffModule, Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::activation::gelu;
use burn::tensor::backend::AutodiffBackend;
use diffbc_runtime::Normalizer;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// How the modes are learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModesConfig {
    /// Codes in the codebook (K).
    pub codes: usize,
    /// Actions per window (from the row on).
    pub horizon: usize,
    /// Size of a code vector.
    pub latent: usize,
    /// Width of the encoder's and decoder's hidden layers.
    pub hidden: usize,
    /// Optimiser steps in all (warm-up included).
    pub steps: usize,
    /// Steps as a plain autoencoder before the codebook is fitted.
    pub warmup: usize,
    /// Windows per step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// β of the commitment loss.
    pub commitment: f64,
    /// Seed of the initialisation, the batches, the k-means and the resets.
    pub seed: u64,
    /// What a code describes: one window, or a whole episode.
    pub scope: ModeScope,
    /// With [`ModeScope::Episode`]: windows of an episode pooled per step
    /// (a step sees `batch_size / set_size` episodes).
    pub set_size: usize,
}

/// What one code describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeScope {
    /// One (observation, action-chunk) window: a choice made at that moment.
    #[default]
    Window,
    /// A whole episode (its windows pooled): an operator's style.
    Episode,
}

impl std::str::FromStr for ModeScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "window" => Ok(Self::Window),
            "episode" => Ok(Self::Episode),
            other => Err(format!("unknown mode scope {other:?} (window, episode)")),
        }
    }
}

impl Default for ModesConfig {
    fn default() -> Self {
        Self {
            codes: 16,
            horizon: 30,
            latent: 8,
            hidden: 128,
            steps: 3000,
            warmup: 500,
            batch_size: 256,
            lr: 1e-3,
            commitment: 0.25,
            seed: 0,
            scope: ModeScope::Window,
            set_size: 16,
        }
    }
}

impl ModesConfig {
    /// Check every field, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), TrainError> {
        let positive = [
            ("modes.codes", self.codes),
            ("modes.horizon", self.horizon),
            ("modes.latent", self.latent),
            ("modes.hidden", self.hidden),
            ("modes.steps", self.steps),
            ("modes.batch_size", self.batch_size),
            ("modes.set_size", self.set_size),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(TrainError::config(field, "must be at least 1"));
            }
        }
        if self.codes > 256 {
            return Err(TrainError::config("modes.codes", "at most 256 codes"));
        }
        if self.warmup >= self.steps {
            return Err(TrainError::config(
                "modes.warmup",
                format!(
                    "{} leaves no VQ steps of modes.steps {}",
                    self.warmup, self.steps
                ),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(TrainError::config("modes.lr", "must be a positive number"));
        }
        if !(self.commitment.is_finite() && self.commitment >= 0.0) {
            return Err(TrainError::config(
                "modes.commitment",
                "must be a non-negative number",
            ));
        }
        Ok(())
    }
}

/// The VQ-VAE: window encoder, codebook, conditional decoder.
#[derive(Module, Debug)]
pub struct VqVae<B: Backend> {
    encoder: Vec<Linear<B>>,
    codebook: Param<Tensor<B, 2>>,
    decoder: Vec<Linear<B>>,
}

fn mlp<B: Backend>(layers: &[Linear<B>], mut x: Tensor<B, 2>) -> Tensor<B, 2> {
    let last = layers.len() - 1;
    for (i, l) in layers.iter().enumerate() {
        x = l.forward(x);
        if i < last {
            x = gelu(x);
        }
    }
    x
}

impl<B: Backend> VqVae<B> {
    fn new(
        obs: usize,
        context: usize,
        actions: usize,
        c: &ModesConfig,
        device: &B::Device,
    ) -> Self {
        let h = c.hidden;
        Self {
            encoder: vec![
                LinearConfig::new(obs + actions, h).init(device),
                LinearConfig::new(h, h).init(device),
                LinearConfig::new(h, c.latent).init(device),
            ],
            codebook: Param::from_tensor(Tensor::zeros([c.codes, c.latent], device)),
            decoder: vec![
                LinearConfig::new(obs + context + c.latent, h).init(device),
                LinearConfig::new(h, h).init(device),
                LinearConfig::new(h, actions).init(device),
            ],
        }
        // burn draws a parameter's values when it is first used: number the
        // parameters now, which draws them here, under the generator's lock.
        .map(&mut crate::model::Renumber(0))
    }

    fn encode(&self, obs: Tensor<B, 2>, actions: Tensor<B, 2>) -> Tensor<B, 2> {
        mlp(&self.encoder, Tensor::cat(vec![obs, actions], 1))
    }

    fn decode(&self, obs: Tensor<B, 2>, z: Tensor<B, 2>) -> Tensor<B, 2> {
        mlp(&self.decoder, Tensor::cat(vec![obs, z], 1))
    }

    /// Squared distances `[n, K]` of latents to every code.
    fn distances(&self, z: Tensor<B, 2>) -> Tensor<B, 2> {
        let c = self.codebook.val();
        let zz = z.clone().powf_scalar(2.0).sum_dim(1);
        let cc = c.clone().powf_scalar(2.0).sum_dim(1).transpose();
        (zz + cc - z.matmul(c.transpose()).mul_scalar(2.0)).clamp_min(0.0)
    }
}

/// Windows in model units: normalised observations and action chunks.
struct Windows {
    obs_dim: usize,
    /// Values per row the decoder also reads (none: 0).
    ctx_dim: usize,
    ctx: Vec<f32>,
    act_dim: usize,
    obs: Vec<f32>,
    actions: Vec<f32>,
}

impl Windows {
    fn len(&self) -> usize {
        self.obs.len() / self.obs_dim
    }

    /// Observations, actions and the decoder's input (the observation and
    /// the row's context) of `rows`.
    fn batch<B: Backend>(
        &self,
        rows: &[usize],
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
        let (o, a, c) = (self.obs_dim, self.act_dim, self.ctx_dim);
        let mut ob = Vec::with_capacity(rows.len() * o);
        let mut ac = Vec::with_capacity(rows.len() * a);
        let mut cx = Vec::with_capacity(rows.len() * c);
        for &r in rows {
            ob.extend_from_slice(&self.obs[r * o..(r + 1) * o]);
            ac.extend_from_slice(&self.actions[r * a..(r + 1) * a]);
            cx.extend_from_slice(&self.ctx[r * c..(r + 1) * c]);
        }
        let obs = Tensor::<B, 2>::from_data(TensorData::new(ob, [rows.len(), o]), device);
        let dec = if c == 0 {
            obs.clone()
        } else {
            let ctx = Tensor::from_data(TensorData::new(cx, [rows.len(), c]), device);
            Tensor::cat(vec![obs.clone(), ctx], 1)
        };
        (
            obs,
            Tensor::from_data(TensorData::new(ac, [rows.len(), a]), device),
            dec,
        )
    }
}

/// Learned modes and every window's code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Modes {
    /// How they were learned.
    pub config: ModesConfig,
    /// The codebook, `[codes, latent]`.
    pub codebook: Vec<f32>,
    /// Temperature of the soft codes (mean squared distance to the own code).
    pub temperature: f32,
    /// Nearest code of every window (one per row of the data set, in order).
    pub code: Vec<u16>,
    /// Soft code distances of every window, `[rows, codes]`.
    pub soft: Vec<f32>,
    /// Windows per code.
    pub usage: Vec<usize>,
    /// Reconstruction error (mean squared, normalised units) with the codes.
    pub reconstruction: f64,
    /// Reconstruction error of the warm-up autoencoder (no quantisation):
    /// what the codes cost.
    pub reconstruction_unquantised: f64,
    /// Reconstruction error of the decoder given the mean code: what the
    /// codes carry (the observation alone predicts this well).
    pub reconstruction_without_code: f64,
}

/// Learn modes from the windows of `data` (built with `horizon` =
/// `config.horizon` actions per sample; its history is ignored, the current
/// frame is the observation). `B` is the autodiff backend. Window scope
/// only: [`learn_in_episodes`] also takes the episodes an episode-scope
/// code describes.
pub fn learn<B: AutodiffBackend>(
    data: &Dataset,
    config: &ModesConfig,
    device: &B::Device,
    progress: bool,
) -> Result<Modes, TrainError> {
    learn_in_episodes::<B>(data, None, &[], config, device, progress)
}

/// [`learn`], with the rows of `data` grouped into episodes (consecutive,
/// covering every row): needed by [`ModeScope::Episode`], ignored by
/// [`ModeScope::Window`]. `context` (row-major, the same number of values
/// per row; empty for none) is given to the decoder beside the
/// observation and never to the encoder: what the decoder is told, a code
/// need not carry (hindsight, e.g. where the window ends up going).
pub fn learn_in_episodes<B: AutodiffBackend>(
    data: &Dataset,
    episodes: Option<&[Range<usize>]>,
    context: &[f32],
    config: &ModesConfig,
    device: &B::Device,
    progress: bool,
) -> Result<Modes, TrainError> {
    config.validate()?;
    data.validate()?;
    if data.horizon != config.horizon {
        return Err(TrainError::config(
            "modes.horizon",
            format!(
                "is {} but the data set was built with {}-action chunks",
                config.horizon, data.horizon
            ),
        ));
    }
    let units = Units::new(data.len(), episodes, config)?;
    if units.len() < config.codes {
        return Err(TrainError::Data(format!(
            "{} {} are fewer than modes.codes {}",
            units.len(),
            units.noun(),
            config.codes
        )));
    }
    let obs_norm = data.fit_obs_normalizer()?;
    let act_norm = data.fit_action_normalizer(crate::config::ActionScaling::Standardize)?;
    if !context.len().is_multiple_of(data.len()) {
        return Err(TrainError::Data(format!(
            "{} context values for {} windows: not the same number per window",
            context.len(),
            data.len()
        )));
    }
    let windows = prepare(data, context, &obs_norm, &act_norm)?;
    let mut model: VqVae<B> = with_backend_rng::<B, _>(device, config.seed, || {
        VqVae::new(
            windows.obs_dim,
            windows.ctx_dim,
            windows.act_dim,
            config,
            device,
        )
    });
    let mut optim = AdamConfig::new().init::<B, VqVae<B>>();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x6d6f_6465);
    let bar = if progress {
        ProgressBar::new(config.steps as u64).with_style(
            ProgressStyle::with_template("modes {bar:30} {pos}/{len} [{elapsed}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    } else {
        ProgressBar::hidden()
    };
    let k = config.codes;
    let (per_step, set) = units.batch_shape(config);
    let mut idle = vec![0usize; k];
    for step in 0..config.steps {
        let rows = units.sample(per_step, set, &mut rng);
        let (obs, actions, dec) = windows.batch::<B>(&rows, device);
        if step == config.warmup {
            model = fit_codebook(model, &windows, &units, config, device)?;
        }
        // One latent per unit: the mean over its `set` windows (the window's
        // own latent when `set` is 1).
        let z = pool(model.encode(obs, actions.clone()), per_step, set);
        let loss = if step < config.warmup {
            (model.decode(dec, spread(z, per_step, set)) - actions)
                .powf_scalar(2.0)
                .mean()
        } else {
            let d = model.distances(z.clone().detach());
            let nearest = d.argmin(1).reshape([per_step]);
            let used: Vec<i64> = nearest
                .clone()
                .into_data()
                .convert::<i64>()
                .to_vec()
                .map_err(|e| TrainError::Data(format!("reading the chosen codes: {e:?}")))?;
            for c in idle.iter_mut() {
                *c += 1;
            }
            for &u in &used {
                idle[u as usize] = 0;
            }
            let zq = model.codebook.val().select(0, nearest);
            let codebook = (zq.clone() - z.clone().detach()).powf_scalar(2.0).mean();
            let commit = (z.clone() - zq.clone().detach()).powf_scalar(2.0).mean();
            let st = z.clone() + (zq - z).detach();
            let recon = (model.decode(dec, spread(st, per_step, set)) - actions)
                .powf_scalar(2.0)
                .mean();
            recon + codebook + commit.mul_scalar(config.commitment)
        };
        let value: f64 = loss.clone().into_scalar().elem();
        if !value.is_finite() {
            return Err(TrainError::Data(format!(
                "the modes' loss became {value} at step {step}; lower modes.lr"
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(config.lr, model, grads);
        if step >= config.warmup && step % 100 == 99 {
            let dead: Vec<usize> = (0..k).filter(|&c| idle[c] >= 100).collect();
            if !dead.is_empty() {
                model = revive(model, &dead, &windows, &units, &mut rng, device)?;
                for c in dead {
                    idle[c] = 0;
                }
            }
        }
        bar.inc(1);
        if step % 50 == 0 {
            bar.set_message(format!("loss {value:.4}"));
        }
    }
    bar.finish_and_clear();
    summarise(&model.valid(), &windows, &units, config, device)
}

/// What a code describes: single windows, or episodes (ranges of rows).
enum Units {
    Windows(usize),
    Episodes(Vec<Range<usize>>),
}

impl Units {
    fn new(
        rows: usize,
        episodes: Option<&[Range<usize>]>,
        config: &ModesConfig,
    ) -> Result<Self, TrainError> {
        match config.scope {
            ModeScope::Window => Ok(Self::Windows(rows)),
            ModeScope::Episode => {
                let Some(episodes) = episodes else {
                    return Err(TrainError::config(
                        "modes.scope",
                        "episode scope needs the data set's episodes",
                    ));
                };
                let mut next = 0;
                for (e, r) in episodes.iter().enumerate() {
                    if r.start != next || r.end <= r.start {
                        return Err(TrainError::Data(format!(
                            "episode {e} covers rows {r:?}; episodes must be non-empty and follow each other from row 0"
                        )));
                    }
                    next = r.end;
                }
                if next != rows {
                    return Err(TrainError::Data(format!(
                        "the episodes cover {next} rows, the data set has {rows}"
                    )));
                }
                Ok(Self::Episodes(episodes.to_vec()))
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Windows(n) => *n,
            Self::Episodes(e) => e.len(),
        }
    }

    fn noun(&self) -> &'static str {
        match self {
            Self::Windows(_) => "windows",
            Self::Episodes(_) => "episodes",
        }
    }

    /// The rows of unit `u`.
    fn rows(&self, u: usize) -> Range<usize> {
        match self {
            Self::Windows(_) => u..u + 1,
            Self::Episodes(e) => e[u].clone(),
        }
    }

    /// Units per step and windows per unit.
    fn batch_shape(&self, c: &ModesConfig) -> (usize, usize) {
        match self {
            Self::Windows(_) => (c.batch_size, 1),
            Self::Episodes(_) => ((c.batch_size / c.set_size).max(1), c.set_size),
        }
    }

    /// `units` random units, `set` random windows of each (unit-major).
    fn sample(&self, units: usize, set: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let n = self.len();
        match self {
            Self::Windows(_) => (0..units).map(|_| rng.random_range(0..n)).collect(),
            Self::Episodes(e) => {
                let mut rows = Vec::with_capacity(units * set);
                for _ in 0..units {
                    let r = &e[rng.random_range(0..n)];
                    rows.extend((0..set).map(|_| rng.random_range(r.clone())));
                }
                rows
            }
        }
    }

    /// Per-unit means of per-row latents `[rows, d]`: `[units, d]`.
    fn pooled(&self, z: &[f32], d: usize) -> Vec<f32> {
        match self {
            Self::Windows(_) => z.to_vec(),
            Self::Episodes(e) => e
                .iter()
                .flat_map(|r| {
                    let mut m = vec![0.0f32; d];
                    for i in r.clone() {
                        for (a, b) in m.iter_mut().zip(&z[i * d..(i + 1) * d]) {
                            *a += b;
                        }
                    }
                    let n = r.len() as f32;
                    m.into_iter().map(move |v| v / n)
                })
                .collect(),
        }
    }

    /// The unit of every row.
    fn of_rows(&self) -> Vec<usize> {
        match self {
            Self::Windows(n) => (0..*n).collect(),
            Self::Episodes(e) => e
                .iter()
                .enumerate()
                .flat_map(|(u, r)| std::iter::repeat_n(u, r.len()))
                .collect(),
        }
    }
}

/// `[units·set, d]` → the mean of each unit's `set` rows, `[units, d]`.
fn pool<B: Backend>(z: Tensor<B, 2>, units: usize, set: usize) -> Tensor<B, 2> {
    if set == 1 {
        return z;
    }
    let d = z.dims()[1];
    z.reshape([units, set, d]).mean_dim(1).reshape([units, d])
}

/// `[units, d]` → each unit's row repeated for its `set` windows.
fn spread<B: Backend>(z: Tensor<B, 2>, units: usize, set: usize) -> Tensor<B, 2> {
    if set == 1 {
        return z;
    }
    let d = z.dims()[1];
    z.reshape([units, 1, d])
        .repeat_dim(1, set)
        .reshape([units * set, d])
}

fn prepare(
    data: &Dataset,
    context: &[f32],
    obs_norm: &Normalizer,
    act_norm: &Normalizer,
) -> Result<Windows, TrainError> {
    let o = data.obs.len();
    let a = data.action_dim;
    let h = data.history + 1;
    let mut obs = Vec::with_capacity(data.len() * o);
    for s in 0..data.len() {
        let f = data.frame_index[s * h + h - 1] as usize;
        obs.extend_from_slice(&data.frames[f * o..(f + 1) * o]);
    }
    let mut actions = data.actions.clone();
    obs_norm
        .normalize("observation", &mut obs)
        .map_err(|e| TrainError::Data(e.to_string()))?;
    act_norm
        .normalize("action", &mut actions)
        .map_err(|e| TrainError::Data(e.to_string()))?;
    Ok(Windows {
        obs_dim: o,
        ctx_dim: context.len() / data.len().max(1),
        ctx: context.to_vec(),
        act_dim: a,
        obs,
        actions,
    })
}

/// Latents of every window, `[n, latent]`, in chunks.
fn latents<B: Backend>(
    model: &VqVae<B>,
    w: &Windows,
    device: &B::Device,
) -> Result<Vec<f32>, TrainError> {
    let mut out = Vec::new();
    let rows: Vec<usize> = (0..w.len()).collect();
    for chunk in rows.chunks(4096) {
        let (obs, actions, _) = w.batch::<B>(chunk, device);
        let z = model.encode(obs, actions);
        out.extend(to_vec(z)?);
    }
    Ok(out)
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, TrainError> {
    t.into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| TrainError::Data(format!("reading a tensor: {e:?}")))
}

fn set_codebook<B: Backend>(
    model: VqVae<B>,
    values: Vec<f32>,
    k: usize,
    d: usize,
    device: &B::Device,
) -> VqVae<B> {
    let id = model.codebook.id;
    let t = Tensor::from_data(TensorData::new(values, [k, d]), device);
    VqVae {
        codebook: Param::initialized(id, t.require_grad()),
        ..model
    }
}

fn fit_codebook<B: AutodiffBackend>(
    model: VqVae<B>,
    w: &Windows,
    units: &Units,
    c: &ModesConfig,
    device: &B::Device,
) -> Result<VqVae<B>, TrainError> {
    let z = units.pooled(&latents(&model.valid(), w, device)?, c.latent);
    let fit = crate::kmeans::fit(&z, c.latent, c.codes, 50, c.seed);
    Ok(set_codebook(model, fit.centres, c.codes, c.latent, device))
}

/// Move every code in `dead` onto the latent of a random unit.
fn revive<B: AutodiffBackend>(
    model: VqVae<B>,
    dead: &[usize],
    w: &Windows,
    units: &Units,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> Result<VqVae<B>, TrainError> {
    let [k, d] = model.codebook.val().dims();
    let mut values = to_vec(model.codebook.val().inner())?;
    let valid = model.valid();
    for &c in dead {
        let rows: Vec<usize> = units.rows(rng.random_range(0..units.len())).collect();
        let mut z = vec![0.0f32; d];
        for chunk in rows.chunks(4096) {
            let (obs, actions, _) = w.batch::<B::InnerBackend>(chunk, device);
            for (i, v) in to_vec(valid.encode(obs, actions))?.into_iter().enumerate() {
                z[i % d] += v / rows.len() as f32;
            }
        }
        values[c * d..(c + 1) * d].copy_from_slice(&z);
    }
    tracing::debug!(codes = ?dead, "unused codes moved onto {}", units.noun());
    Ok(set_codebook(model, values, k, d, device))
}

fn summarise<B: Backend>(
    model: &VqVae<B>,
    w: &Windows,
    units: &Units,
    c: &ModesConfig,
    device: &B::Device,
) -> Result<Modes, TrainError> {
    let n = w.len();
    let (k, d) = (c.codes, c.latent);
    let codebook = to_vec(model.codebook.val())?;
    // Every unit's latent, its code and its squared distances to the codes.
    let z = units.pooled(&latents(model, w, device)?, d);
    let mut unit_code = Vec::with_capacity(units.len());
    let mut dist = Vec::with_capacity(units.len() * k);
    for zu in z.chunks_exact(d) {
        let row: Vec<f32> = codebook
            .chunks_exact(d)
            .map(|e| zu.iter().zip(e).map(|(a, b)| (a - b) * (a - b)).sum())
            .collect();
        let best = (0..k)
            .min_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap_or(0);
        unit_code.push(best);
        dist.extend(row);
    }
    let temperature = (unit_code
        .iter()
        .enumerate()
        .map(|(u, &c)| f64::from(dist[u * k + c]))
        .sum::<f64>()
        / units.len() as f64)
        .max(1e-6) as f32;
    let mut soft_unit = dist;
    for row in soft_unit.chunks_exact_mut(k) {
        let lo = row.iter().copied().fold(f32::INFINITY, f32::min);
        let mut total = 0.0;
        for v in row.iter_mut() {
            *v = (-(*v - lo) / temperature).exp();
            total += *v;
        }
        for v in row.iter_mut() {
            *v /= total;
        }
    }
    // Per row: its unit's code, and the reconstruction errors with the
    // code, with the unquantised latent and with the mean code.
    let unit_of = units.of_rows();
    let mean_code: Vec<f32> = (0..d)
        .map(|j| codebook.iter().skip(j).step_by(d).sum::<f32>() / k as f32)
        .collect();
    let (mut recon, mut plain, mut blind) = (0.0f64, 0.0f64, 0.0f64);
    let rows: Vec<usize> = (0..n).collect();
    for chunk in rows.chunks(4096) {
        let (_, actions, obs) = w.batch::<B>(chunk, device);
        let m = chunk.len() as f64;
        let latent = |v: Vec<f32>| -> Tensor<B, 2> {
            Tensor::from_data(TensorData::new(v, [chunk.len(), d]), device)
        };
        let err = |t: Tensor<B, 2>| -> Result<f64, TrainError> {
            Ok(to_vec((t - actions.clone()).powf_scalar(2.0).mean())?[0] as f64)
        };
        let quantised: Vec<f32> = chunk
            .iter()
            .flat_map(|&r| {
                let c = unit_code[unit_of[r]];
                codebook[c * d..(c + 1) * d].iter().copied()
            })
            .collect();
        recon += m * err(model.decode(obs.clone(), latent(quantised)))?;
        let raw: Vec<f32> = chunk
            .iter()
            .flat_map(|&r| z[unit_of[r] * d..(unit_of[r] + 1) * d].iter().copied())
            .collect();
        plain += m * err(model.decode(obs.clone(), latent(raw)))?;
        let mean = mean_code.repeat(chunk.len());
        blind += m * err(model.decode(obs, latent(mean)))?;
    }
    let code: Vec<u16> = unit_of.iter().map(|&u| unit_code[u] as u16).collect();
    let soft: Vec<f32> = unit_of
        .iter()
        .flat_map(|&u| soft_unit[u * k..(u + 1) * k].iter().copied())
        .collect();
    let mut usage = vec![0; k];
    for &c in &code {
        usage[c as usize] += 1;
    }
    Ok(Modes {
        config: c.clone(),
        codebook,
        temperature,
        code,
        soft,
        usage,
        reconstruction: recon / n as f64,
        reconstruction_unquantised: plain / n as f64,
        reconstruction_without_code: blind / n as f64,
    })
}

/// A toy data set whose modes are known, for tests of mode-conditional
/// policies and steering (here and in the crates that export and run them).
pub mod toy {
    use crate::episodes::Episodes;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The three directions an action moves in.
    pub const DIRECTIONS: [[f32; 2]; 3] = [[1.0, 0.0], [-0.5, 0.87], [-0.5, -0.87]];

    /// `rows` rows (one episode): observation `[x, y, mode[0], mode[1],
    /// mode[2]]` with a random point and a one-hot mode, action the point
    /// moved 0.6 along the mode's direction.
    pub fn three_directions(rows: usize, seed: u64) -> Episodes {
        let mut e = Episodes::new(5, 2);
        let names = ["x", "y", "mode[0]", "mode[1]", "mode[2]"].map(String::from);
        e.obs_names = names.to_vec();
        e.hints.obs_sources = names.to_vec();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut obs, mut act) = (Vec::new(), Vec::new());
        for _ in 0..rows {
            let p = [
                rng.random_range(-1.0f32..1.0),
                rng.random_range(-1.0f32..1.0),
            ];
            let m = rng.random_range(0..3usize);
            obs.extend_from_slice(&p);
            obs.extend((0..3).map(|k| f32::from(u8::from(k == m))));
            act.push(p[0] + 0.6 * DIRECTIONS[m][0]);
            act.push(p[1] + 0.6 * DIRECTIONS[m][1]);
        }
        // Rows are generated, so pushing them cannot fail.
        let _ = e.push_episode(&obs, &act);
        e
    }

    /// A small diffusion policy for [`three_directions`] with mode dropout
    /// 0.3 and mode sets 0.5: 800 steps follow each mode ≥ 90 % of the
    /// time (tests).
    pub fn policy_config() -> crate::TrainConfig {
        use crate::model::{DenoiserConfig, EncoderConfig, MlpSieveConfig};
        let mut c = crate::TrainConfig::for_task(
            &crate::TaskDefaults::vector("modes"),
            crate::Method::Diffusion,
        );
        c.history = 0;
        c.mode_dropout = 0.3;
        c.mode_sets = 0.5;
        c.encoder = EncoderConfig::Mlp {
            hidden: 64,
            embed: 32,
        };
        c.denoiser = DenoiserConfig::MlpSieve(MlpSieveConfig {
            embed: 64,
            hidden: 128,
            ..Default::default()
        });
        c.optim.steps = 800;
        c.optim.batch_size = 128;
        c.checkpoint_every = 0;
        c.seed = 3;
        c
    }

    /// Which direction the move from `from` to `to` is closest to.
    pub fn direction(from: [f32; 2], to: [f32; 2]) -> usize {
        let d = [to[0] - from[0], to[1] - from[1]];
        let score = |k: usize| d[0] * DIRECTIONS[k][0] + d[1] * DIRECTIONS[k][1];
        (0..3)
            .max_by(|&a, &b| score(a).total_cmp(&score(b)))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ObsSpec;
    use burn::backend::{Autodiff, NdArray};

    type Tb = Autodiff<NdArray<f32>>;

    /// Windows of 2-d points (`frames`) and their `horizon` moves.
    fn points(frames: Vec<f32>, actions: Vec<f32>, horizon: usize) -> Dataset {
        let n = frames.len() / 2;
        Dataset {
            obs: ObsSpec::Vector { dim: 2 },
            action_dim: 2 * horizon,
            history: 0,
            horizon,
            frames,
            frame_index: (0..n as u32).collect(),
            actions,
            interface: None,
        }
    }

    /// Windows whose actions move from the observed point in one of three
    /// directions, chosen at random: the observation does not say which.
    fn three_ways(n: usize, seed: u64) -> (Dataset, Vec<u8>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let horizon = 4;
        let dirs = super::toy::DIRECTIONS;
        let (mut frames, mut actions, mut truth) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let p = [
                rng.random_range(-1.0f32..1.0),
                rng.random_range(-1.0f32..1.0),
            ];
            let m = rng.random_range(0..3usize);
            frames.extend_from_slice(&p);
            for t in 1..=horizon {
                let s = 0.2 * t as f32;
                actions.push(p[0] + s * dirs[m][0] + rng.random_range(-0.02f32..0.02));
                actions.push(p[1] + s * dirs[m][1] + rng.random_range(-0.02f32..0.02));
            }
            truth.push(m as u8);
        }
        (points(frames, actions, horizon), truth)
    }

    fn small() -> ModesConfig {
        ModesConfig {
            codes: 3,
            horizon: 4,
            latent: 4,
            hidden: 32,
            steps: 500,
            warmup: 100,
            batch_size: 128,
            lr: 3e-3,
            ..ModesConfig::default()
        }
    }

    #[test]
    fn the_codes_find_choices_the_observation_does_not_show() {
        let (data, truth) = three_ways(1500, 1);
        let modes = learn::<Tb>(&data, &small(), &Default::default(), false).expect("modes");
        // Purity: each code's most common direction, over all windows.
        let mut table = [[0usize; 3]; 3];
        for (c, t) in modes.code.iter().zip(&truth) {
            table[*c as usize][*t as usize] += 1;
        }
        let pure: usize = table
            .iter()
            .map(|r| r.iter().max().copied().unwrap_or(0))
            .sum();
        let purity = pure as f64 / truth.len() as f64;
        assert!(purity > 0.95, "purity {purity}, table {table:?}");
        // Every direction has its own code.
        let owners: std::collections::HashSet<usize> = (0..3)
            .map(|t| (0..3).max_by_key(|&c| table[c][t]).unwrap_or(0))
            .collect();
        assert_eq!(owners.len(), 3, "{table:?}");
        // The code carries the choice: without it the decoder guesses.
        assert!(
            modes.reconstruction * 4.0 < modes.reconstruction_without_code,
            "{} with codes, {} without",
            modes.reconstruction,
            modes.reconstruction_without_code
        );
        // Soft codes are distributions that favour the nearest code.
        for (i, row) in modes.soft.chunks_exact(3).enumerate() {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "{row:?}");
            let best = (0..3)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            assert_eq!(best, modes.code[i] as usize);
        }
        assert_eq!(modes.usage.iter().sum::<usize>(), truth.len());
    }

    /// `episodes` episodes of `rows` windows: each window moves ±0.4 along
    /// x at random (a choice of the moment), and every window of an episode
    /// also moves 0.2 along +y or −y (the episode's style). Returns the
    /// data, the episodes' row ranges, their styles and every window's x
    /// choice (±1).
    fn styled(
        episodes: usize,
        rows: usize,
        seed: u64,
    ) -> (Dataset, Vec<Range<usize>>, Vec<u8>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let horizon = 4;
        let (mut frames, mut actions, mut ranges, mut styles, mut choices) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in 0..episodes {
            let style = rng.random_range(0..2u8);
            let dy = if style == 0 { 0.2 } else { -0.2 };
            for _ in 0..rows {
                let p = [
                    rng.random_range(-1.0f32..1.0),
                    rng.random_range(-1.0f32..1.0),
                ];
                let dx = if rng.random::<bool>() { 0.4 } else { -0.4 };
                choices.push(dx / 0.4);
                frames.extend_from_slice(&p);
                for t in 1..=horizon {
                    let s = t as f32 / horizon as f32;
                    actions.push(p[0] + s * dx + rng.random_range(-0.02f32..0.02));
                    actions.push(p[1] + s * dy + rng.random_range(-0.02f32..0.02));
                }
            }
            ranges.push(e * rows..(e + 1) * rows);
            styles.push(style);
        }
        (points(frames, actions, horizon), ranges, styles, choices)
    }

    /// Share of items whose code's most common truth is their own truth.
    fn purity(codes: &[u16], truth: &[u8]) -> f64 {
        let mut table = std::collections::HashMap::<(u16, u8), usize>::new();
        for (c, t) in codes.iter().zip(truth) {
            *table.entry((*c, *t)).or_default() += 1;
        }
        let mut best = std::collections::HashMap::<u16, usize>::new();
        for ((c, _), n) in table {
            let b = best.entry(c).or_default();
            *b = (*b).max(n);
        }
        best.values().sum::<usize>() as f64 / codes.len() as f64
    }

    #[test]
    fn episode_codes_find_the_style_that_window_codes_miss() {
        let (data, ranges, styles, _) = styled(60, 24, 5);
        let episode = ModesConfig {
            codes: 2,
            scope: ModeScope::Episode,
            set_size: 8,
            ..small()
        };
        let modes = learn_in_episodes::<Tb>(
            &data,
            Some(&ranges),
            &[],
            &episode,
            &Default::default(),
            false,
        )
        .expect("episode modes");
        // One code per episode, and it is the style.
        for r in &ranges {
            let c = modes.code[r.start];
            assert!(modes.code[r.clone()].iter().all(|&x| x == c), "{r:?}");
            assert!(
                modes.soft[r.start * 2..r.end * 2]
                    .chunks_exact(2)
                    .all(|row| row == &modes.soft[r.start * 2..r.start * 2 + 2])
            );
        }
        let firsts: Vec<u16> = ranges.iter().map(|r| modes.code[r.start]).collect();
        let p = purity(&firsts, &styles);
        assert!(p > 0.95, "episode codes: style purity {p}");
        // Window codes spend themselves on the larger choice of the moment.
        let windows = learn::<Tb>(
            &data,
            &ModesConfig {
                codes: 2,
                ..small()
            },
            &Default::default(),
            false,
        )
        .expect("window modes");
        let row_styles: Vec<u8> = ranges
            .iter()
            .zip(&styles)
            .flat_map(|(r, &s)| std::iter::repeat_n(s, r.len()))
            .collect();
        let q = purity(&windows.code, &row_styles);
        assert!(q < 0.75, "window codes: style purity {q}");
    }

    #[test]
    fn what_the_decoder_is_told_a_code_need_not_carry() {
        let (data, ranges, styles, choices) = styled(60, 24, 5);
        let row_styles: Vec<u8> = ranges
            .iter()
            .zip(&styles)
            .flat_map(|(r, &s)| std::iter::repeat_n(s, r.len()))
            .collect();
        // Told each window's x choice, even codes per window find the
        // episode's style, the one thing left unsaid (without it they
        // take the x choice: the test above).
        let c = ModesConfig {
            codes: 2,
            ..small()
        };
        let modes = learn_in_episodes::<Tb>(&data, None, &choices, &c, &Default::default(), false)
            .expect("modes");
        let p = purity(&modes.code, &row_styles);
        assert!(p > 0.9, "window codes told the x choice: style purity {p}");
        let e = learn_in_episodes::<Tb>(&data, None, &choices[1..], &c, &Default::default(), false)
            .expect_err("a value short")
            .to_string();
        assert!(e.contains("1439 context values for 1440 windows"), "{e}");
    }

    #[test]
    fn episode_scope_needs_episodes_that_cover_the_rows() {
        let (data, mut ranges, _, _) = styled(10, 8, 6);
        let c = ModesConfig {
            codes: 2,
            scope: ModeScope::Episode,
            ..small()
        };
        let e = learn::<Tb>(&data, &c, &Default::default(), false)
            .expect_err("no episodes")
            .to_string();
        assert!(e.contains("modes.scope"), "{e}");
        ranges.pop();
        let e = learn_in_episodes::<Tb>(&data, Some(&ranges), &[], &c, &Default::default(), false)
            .expect_err("rows left over")
            .to_string();
        assert!(e.contains("cover 72 rows") && e.contains("80"), "{e}");
        let (two, ranges, _, _) = styled(2, 8, 6);
        let e = learn_in_episodes::<Tb>(
            &two,
            Some(&ranges),
            &[],
            &ModesConfig { codes: 3, ..c },
            &Default::default(),
            false,
        )
        .expect_err("too few episodes")
        .to_string();
        assert!(e.contains("2 episodes are fewer than modes.codes 3"), "{e}");
    }

    #[test]
    fn the_same_seed_gives_the_same_modes() {
        let (data, _) = three_ways(300, 2);
        let c = ModesConfig {
            steps: 150,
            warmup: 50,
            ..small()
        };
        let a = learn::<Tb>(&data, &c, &Default::default(), false).expect("modes");
        let b = learn::<Tb>(&data, &c, &Default::default(), false).expect("modes");
        assert_eq!(a, b);
    }

    #[test]
    fn bad_settings_name_their_field() {
        let (data, _) = three_ways(50, 3);
        for (c, field) in [
            (
                ModesConfig {
                    codes: 0,
                    ..small()
                },
                "modes.codes",
            ),
            (
                ModesConfig {
                    warmup: 500,
                    ..small()
                },
                "modes.warmup",
            ),
            (
                ModesConfig {
                    horizon: 5,
                    ..small()
                },
                "modes.horizon",
            ),
            (
                ModesConfig {
                    lr: f64::NAN,
                    ..small()
                },
                "modes.lr",
            ),
        ] {
            let e = learn::<Tb>(&data, &c, &Default::default(), false)
                .expect_err("refused")
                .to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}
