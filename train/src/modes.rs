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
    fn new(obs: usize, actions: usize, c: &ModesConfig, device: &B::Device) -> Self {
        let h = c.hidden;
        Self {
            encoder: vec![
                LinearConfig::new(obs + actions, h).init(device),
                LinearConfig::new(h, h).init(device),
                LinearConfig::new(h, c.latent).init(device),
            ],
            codebook: Param::from_tensor(Tensor::zeros([c.codes, c.latent], device)),
            decoder: vec![
                LinearConfig::new(obs + c.latent, h).init(device),
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
    act_dim: usize,
    obs: Vec<f32>,
    actions: Vec<f32>,
}

impl Windows {
    fn len(&self) -> usize {
        self.obs.len() / self.obs_dim
    }

    fn batch<B: Backend>(
        &self,
        rows: &[usize],
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let (o, a) = (self.obs_dim, self.act_dim);
        let mut ob = Vec::with_capacity(rows.len() * o);
        let mut ac = Vec::with_capacity(rows.len() * a);
        for &r in rows {
            ob.extend_from_slice(&self.obs[r * o..(r + 1) * o]);
            ac.extend_from_slice(&self.actions[r * a..(r + 1) * a]);
        }
        (
            Tensor::from_data(TensorData::new(ob, [rows.len(), o]), device),
            Tensor::from_data(TensorData::new(ac, [rows.len(), a]), device),
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
/// frame is the observation). `B` is the autodiff backend.
pub fn learn<B: AutodiffBackend>(
    data: &Dataset,
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
    if data.len() < config.codes {
        return Err(TrainError::Data(format!(
            "{} windows are fewer than modes.codes {}",
            data.len(),
            config.codes
        )));
    }
    let obs_norm = data.fit_obs_normalizer()?;
    let act_norm = data.fit_action_normalizer(crate::config::ActionScaling::Standardize)?;
    let windows = prepare(data, &obs_norm, &act_norm)?;
    let n = windows.len();
    let mut model: VqVae<B> = with_backend_rng::<B, _>(device, config.seed, || {
        VqVae::new(windows.obs_dim, windows.act_dim, config, device)
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
    let mut idle = vec![0usize; k];
    for step in 0..config.steps {
        let rows: Vec<usize> = (0..config.batch_size)
            .map(|_| rng.random_range(0..n))
            .collect();
        let (obs, actions) = windows.batch::<B>(&rows, device);
        if step == config.warmup {
            model = fit_codebook(model, &windows, config, device)?;
        }
        let z = model.encode(obs.clone(), actions.clone());
        let loss = if step < config.warmup {
            (model.decode(obs, z) - actions).powf_scalar(2.0).mean()
        } else {
            let d = model.distances(z.clone().detach());
            let nearest = d.argmin(1).reshape([rows.len()]);
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
            let recon = (model.decode(obs, st) - actions).powf_scalar(2.0).mean();
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
                model = revive(model, &dead, &windows, &mut rng, device)?;
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
    summarise(&model.valid(), &windows, config, device)
}

fn prepare(
    data: &Dataset,
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
        let (obs, actions) = w.batch::<B>(chunk, device);
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
    c: &ModesConfig,
    device: &B::Device,
) -> Result<VqVae<B>, TrainError> {
    let z = latents(&model.valid(), w, device)?;
    let fit = crate::kmeans::fit(&z, c.latent, c.codes, 50, c.seed);
    Ok(set_codebook(model, fit.centres, c.codes, c.latent, device))
}

/// Move every code in `dead` onto the latent of a random window.
fn revive<B: AutodiffBackend>(
    model: VqVae<B>,
    dead: &[usize],
    w: &Windows,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> Result<VqVae<B>, TrainError> {
    let [k, d] = model.codebook.val().dims();
    let mut values = to_vec(model.codebook.val().inner())?;
    let picks: Vec<usize> = dead.iter().map(|_| rng.random_range(0..w.len())).collect();
    let (obs, actions) = w.batch::<B::InnerBackend>(&picks, device);
    let z = to_vec(model.valid().encode(obs, actions))?;
    for (i, &c) in dead.iter().enumerate() {
        values[c * d..(c + 1) * d].copy_from_slice(&z[i * d..(i + 1) * d]);
    }
    tracing::debug!(codes = ?dead, "unused codes moved onto windows");
    Ok(set_codebook(model, values, k, d, device))
}

fn summarise<B: Backend>(
    model: &VqVae<B>,
    w: &Windows,
    c: &ModesConfig,
    device: &B::Device,
) -> Result<Modes, TrainError> {
    let n = w.len();
    let k = c.codes;
    let codebook = to_vec(model.codebook.val())?;
    let mut code = Vec::with_capacity(n);
    let mut dist = Vec::with_capacity(n * k);
    let (mut recon, mut plain, mut blind) = (0.0f64, 0.0f64, 0.0f64);
    let rows: Vec<usize> = (0..n).collect();
    let mut mean_code: Option<Tensor<B, 2>> = None;
    for chunk in rows.chunks(4096) {
        let (obs, actions) = w.batch::<B>(chunk, device);
        let z = model.encode(obs.clone(), actions.clone());
        let d = model.distances(z.clone());
        let nearest = d.clone().argmin(1).reshape([chunk.len()]);
        let zq = model.codebook.val().select(0, nearest.clone());
        let m = chunk.len() as f64;
        let err = |t: Tensor<B, 2>| -> Result<f64, TrainError> {
            Ok(to_vec((t - actions.clone()).powf_scalar(2.0).mean())?[0] as f64)
        };
        recon += m * err(model.decode(obs.clone(), zq))?;
        plain += m * err(model.decode(obs.clone(), z))?;
        let mc = mean_code
            .get_or_insert_with(|| model.codebook.val().mean_dim(0))
            .clone()
            .repeat_dim(0, chunk.len());
        blind += m * err(model.decode(obs, mc))?;
        code.extend(
            nearest
                .into_data()
                .convert::<i64>()
                .to_vec::<i64>()
                .map_err(|e| TrainError::Data(format!("reading the codes: {e:?}")))?
                .into_iter()
                .map(|v| v as u16),
        );
        dist.extend(to_vec(d)?);
    }
    let temperature = (code
        .iter()
        .enumerate()
        .map(|(i, &c)| f64::from(dist[i * k + c as usize]))
        .sum::<f64>()
        / n as f64)
        .max(1e-6) as f32;
    let mut soft = dist;
    for row in soft.chunks_exact_mut(k) {
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
    /// 0.3: 800 steps follow each mode ≥ 90 % of the time (tests).
    pub fn policy_config() -> crate::TrainConfig {
        use crate::model::{DenoiserConfig, EncoderConfig, MlpSieveConfig};
        let mut c = crate::TrainConfig::for_task(
            &crate::TaskDefaults::vector("modes"),
            crate::Method::Diffusion,
        );
        c.history = 0;
        c.mode_dropout = 0.3;
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
        let data = Dataset {
            obs: ObsSpec::Vector { dim: 2 },
            action_dim: 2 * horizon,
            history: 0,
            horizon,
            frames,
            frame_index: (0..n as u32).collect(),
            actions,
            interface: None,
        };
        (data, truth)
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
