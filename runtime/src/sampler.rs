//! The one sampler implementation, shared by training-time evaluation (burn)
//! and the deployed runtime (ONNX engines).
//!
//! A sampler turns an observation embedding into an action by running the
//! reverse diffusion process against a [`NoiseModel`]. It composes three
//! independent choices:
//!
//! * [`StepRule`]: the reverse process — DDPM over all T steps, or DDIM over
//!   S ≤ T steps (deterministic, the fast path for control loops);
//! * `extra_steps` (M): Diffusion-X — after the last step, M more denoising
//!   steps at τ = 1 with **no** added noise;
//! * [`Selection`]: keep the single sample, or draw N candidates in one batch
//!   and keep the one with the highest Gaussian KDE density (Diffusion-KDE);
//!
//! plus the classifier-free guidance weight w: ε = (1 + w) ε_cond − w ε_uncond,
//! where the unconditional embedding is the all-zero vector (the value the
//! observation is dropped to during training). Conditional and unconditional
//! rows go through the model in one batch.
//!
//! All buffers live in the [`Sampler`] and are reused: once a sampler has run
//! a given batch size, running it again allocates nothing.

use crate::schedule::NoiseSchedule;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Where a sampler's (and a classifier decoder's) randomness comes from.
///
/// Every seeded random number generator is one (a blanket implementation
/// draws `StandardNormal` values one after the other, and `random::<f32>()`
/// for uniforms). A [`NoiseTape`] replays recorded draws and a
/// [`NoiseRecorder`] records them, so a decision can be reproduced outside
/// Rust from the draws alone: `docs/manifest.md` states the order in which
/// the sampler consumes them.
pub trait Noise {
    /// Fill `out` with independent standard normal draws, in order.
    fn normal(&mut self, out: &mut [f32]);
    /// One uniform draw in [0, 1).
    fn uniform(&mut self) -> f32;
}

impl<R: Rng + ?Sized> Noise for R {
    fn normal(&mut self, out: &mut [f32]) {
        for v in out {
            *v = self.sample(StandardNormal);
        }
    }

    fn uniform(&mut self) -> f32 {
        self.random::<f32>()
    }
}

/// Recorded draws, replayed in order. Running past the end yields NaN (and
/// sets [`NoiseTape::overrun`]), which the sampler reports as a non-finite
/// action rather than inventing numbers.
#[derive(Debug, Clone)]
pub struct NoiseTape<'a> {
    normal: &'a [f32],
    uniform: &'a [f32],
    used_normal: usize,
    used_uniform: usize,
    overrun: bool,
}

impl<'a> NoiseTape<'a> {
    /// A tape over recorded normal and uniform draws.
    pub fn new(normal: &'a [f32], uniform: &'a [f32]) -> Self {
        Self {
            normal,
            uniform,
            used_normal: 0,
            used_uniform: 0,
            overrun: false,
        }
    }

    /// Draws consumed so far: (normal, uniform).
    pub fn used(&self) -> (usize, usize) {
        (self.used_normal, self.used_uniform)
    }

    /// Whether more draws were asked for than the tape holds.
    pub fn overrun(&self) -> bool {
        self.overrun
    }
}

impl Noise for NoiseTape<'_> {
    fn normal(&mut self, out: &mut [f32]) {
        let left = &self.normal[self.used_normal.min(self.normal.len())..];
        if left.len() < out.len() {
            self.overrun = true;
            out.fill(f32::NAN);
            self.used_normal = self.normal.len();
        } else {
            out.copy_from_slice(&left[..out.len()]);
            self.used_normal += out.len();
        }
    }

    fn uniform(&mut self) -> f32 {
        match self.uniform.get(self.used_uniform) {
            Some(&u) => {
                self.used_uniform += 1;
                u
            }
            None => {
                self.overrun = true;
                f32::NAN
            }
        }
    }
}

/// Draws from `inner`, keeping a copy of every value in order.
#[derive(Debug, Clone)]
pub struct NoiseRecorder<N> {
    /// Where the draws come from.
    pub inner: N,
    /// Every normal draw so far.
    pub normal: Vec<f32>,
    /// Every uniform draw so far.
    pub uniform: Vec<f32>,
}

impl<N: Noise> NoiseRecorder<N> {
    /// Record the draws of `inner`.
    pub fn new(inner: N) -> Self {
        Self {
            inner,
            normal: Vec::new(),
            uniform: Vec::new(),
        }
    }
}

impl<N: Noise> Noise for NoiseRecorder<N> {
    fn normal(&mut self, out: &mut [f32]) {
        self.inner.normal(out);
        self.normal.extend_from_slice(out);
    }

    fn uniform(&mut self) -> f32 {
        let u = self.inner.uniform();
        self.uniform.push(u);
        u
    }
}

/// What the sampler needs from a network: ε̂ for a batch of noisy actions.
///
/// Implemented by `train` with burn modules and by the runtime with ONNX
/// engines. Observations are encoded once per decision by the caller (or by
/// [`NoiseModel::encode`]); the sampler then calls `predict_noise` T (+ M)
/// times on the embedding.
pub trait NoiseModel {
    /// The model's own error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Length of one action vector.
    fn action_dim(&self) -> usize;

    /// Length of one observation embedding (all history frames together).
    fn embedding_dim(&self) -> usize;

    /// Length of one (normalised) observation including its history frames.
    fn observation_dim(&self) -> usize;

    /// Encode `rows` normalised observations (`[rows, observation_dim]`) into
    /// `embeddings` (`[rows, embedding_dim]`).
    fn encode(&mut self, observations: &[f32], embeddings: &mut [f32]) -> Result<(), Self::Error>;

    /// Predict the noise in `actions` (`[rows, action_dim]`) given `embeddings`
    /// (`[rows, embedding_dim]`) at network time input `t` = τ / T (one value
    /// for all rows); writes `[rows, action_dim]` into `eps`.
    fn predict_noise(
        &mut self,
        embeddings: &[f32],
        actions: &[f32],
        t: f32,
        eps: &mut [f32],
    ) -> Result<(), Self::Error>;
}

/// The reverse process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StepRule {
    /// Ancestral DDPM sampling over all T steps (noise added at every step but the last).
    Ddpm,
    /// Deterministic DDIM (η = 0) over `steps` evenly spaced steps, `steps` ≤ T.
    Ddim {
        /// Number of denoising steps S.
        steps: usize,
    },
}

/// Which of the generated samples is returned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Selection {
    /// One sample per decision.
    Single,
    /// Diffusion-KDE: draw `candidates` samples in one batch, keep the one with
    /// the highest Gaussian KDE density (bandwidth in normalised action units).
    Kde {
        /// Number of candidates N.
        candidates: usize,
        /// Gaussian kernel bandwidth h.
        bandwidth: f32,
    },
}

/// KDE bandwidth in normalised action units by default (the paper's 0.1).
pub const DEFAULT_KDE_BANDWIDTH: f32 = 0.1;

/// A complete sampler choice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// Reverse process.
    pub rule: StepRule,
    /// Diffusion-X: extra denoising steps at τ = 1 without noise (M).
    pub extra_steps: usize,
    /// Single sample or KDE selection.
    pub selection: Selection,
    /// Classifier-free guidance weight w (0 = off).
    pub guidance: f32,
}

impl SamplerConfig {
    /// Plain DDPM.
    pub const fn ddpm() -> Self {
        Self {
            rule: StepRule::Ddpm,
            extra_steps: 0,
            selection: Selection::Single,
            guidance: 0.0,
        }
    }

    /// Diffusion-X with M extra steps.
    pub const fn diffusion_x(extra_steps: usize) -> Self {
        Self {
            extra_steps,
            ..Self::ddpm()
        }
    }

    /// Diffusion-KDE with N candidates and bandwidth h.
    pub const fn kde(candidates: usize, bandwidth: f32) -> Self {
        Self {
            selection: Selection::Kde {
                candidates,
                bandwidth,
            },
            ..Self::ddpm()
        }
    }

    /// DDIM with S steps.
    pub const fn ddim(steps: usize) -> Self {
        Self {
            rule: StepRule::Ddim { steps },
            ..Self::ddpm()
        }
    }

    /// The same sampler with guidance weight w.
    pub const fn with_guidance(mut self, w: f32) -> Self {
        self.guidance = w;
        self
    }

    /// A short stable label for tables and file names, e.g. `diffusion-x(M=8)`.
    pub fn label(&self) -> String {
        let mut s = match (self.rule, self.extra_steps, self.selection) {
            (StepRule::Ddpm, 0, Selection::Single) => "ddpm".to_string(),
            (StepRule::Ddpm, m, Selection::Single) => format!("diffusion-x(M={m})"),
            (StepRule::Ddpm, 0, Selection::Kde { candidates, .. }) => {
                format!("kde(N={candidates})")
            }
            (StepRule::Ddpm, m, Selection::Kde { candidates, .. }) => {
                format!("kde(N={candidates})+x(M={m})")
            }
            (StepRule::Ddim { steps }, 0, _) => format!("ddim(S={steps})"),
            (StepRule::Ddim { steps }, m, _) => format!("ddim(S={steps})+x(M={m})"),
        };
        if let (StepRule::Ddim { .. }, Selection::Kde { candidates, .. }) =
            (self.rule, self.selection)
        {
            s.push_str(&format!("+kde(N={candidates})"));
        }
        if self.guidance != 0.0 {
            s.push_str(&format!(" w={}", self.guidance));
        }
        s
    }

    /// Check the configuration against a schedule.
    pub fn validate(
        &self,
        schedule: &NoiseSchedule,
    ) -> Result<(), SamplerError<std::convert::Infallible>> {
        if let StepRule::Ddim { steps } = self.rule
            && (steps == 0 || steps > schedule.steps())
        {
            return Err(SamplerError::Config(format!(
                "sampler.rule.ddim.steps must be in 1..={}, got {steps}",
                schedule.steps()
            )));
        }
        if let Selection::Kde {
            candidates,
            bandwidth,
        } = self.selection
        {
            if candidates == 0 {
                return Err(SamplerError::Config(
                    "sampler.selection.kde.candidates must be ≥ 1".into(),
                ));
            }
            if !(bandwidth > 0.0 && bandwidth.is_finite()) {
                return Err(SamplerError::Config(format!(
                    "sampler.selection.kde.bandwidth must be a positive number, got {bandwidth}"
                )));
            }
        }
        if !self.guidance.is_finite() {
            return Err(SamplerError::Config(format!(
                "sampler.guidance must be finite, got {}",
                self.guidance
            )));
        }
        Ok(())
    }

    /// Number of network evaluations per decision (each on a batch).
    pub fn network_calls(&self, schedule: &NoiseSchedule) -> usize {
        let steps = match self.rule {
            StepRule::Ddpm => schedule.steps(),
            StepRule::Ddim { steps } => steps,
        };
        steps + self.extra_steps
    }

    /// Rows per network call for one decision (candidates × 2 with guidance).
    pub fn rows_per_decision(&self) -> usize {
        let c = match self.selection {
            Selection::Single => 1,
            Selection::Kde { candidates, .. } => candidates,
        };
        if self.guidance != 0.0 { 2 * c } else { c }
    }
}

/// Why sampling failed.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError<E: std::error::Error + 'static> {
    /// The noise model failed (its message is part of this one).
    #[error("noise model failed: {0}")]
    Model(E),
    /// A buffer had the wrong length.
    #[error("{what}: expected {expected} values, got {got}")]
    Shape {
        /// Which buffer.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// The sampler configuration is invalid.
    #[error("invalid sampler configuration: {0}")]
    Config(String),
    /// The model produced a non-finite action.
    #[error("sampled action {row} has a non-finite value at dimension {dim}")]
    NonFinite {
        /// Output row.
        row: usize,
        /// Action dimension.
        dim: usize,
    },
}

impl SamplerError<std::convert::Infallible> {
    fn widen<E: std::error::Error + 'static>(self) -> SamplerError<E> {
        match self {
            SamplerError::Model(never) => match never {},
            SamplerError::Shape {
                what,
                expected,
                got,
            } => SamplerError::Shape {
                what,
                expected,
                got,
            },
            SamplerError::Config(s) => SamplerError::Config(s),
            SamplerError::NonFinite { row, dim } => SamplerError::NonFinite { row, dim },
        }
    }
}

/// Index of the candidate with the highest Gaussian KDE density among
/// `candidates` (`[n, dim]`, row-major). Ties go to the lowest index.
pub fn kde_densest(candidates: &[f32], dim: usize, bandwidth: f32) -> usize {
    let n = candidates.len() / dim;
    let inv = 1.0 / (2.0 * bandwidth * bandwidth);
    let mut best = (0, f32::NEG_INFINITY);
    for i in 0..n {
        let a = &candidates[i * dim..(i + 1) * dim];
        let mut density = 0.0f32;
        for j in 0..n {
            let b = &candidates[j * dim..(j + 1) * dim];
            let d2: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
            density += (-d2 * inv).exp();
        }
        if density > best.1 {
            best = (i, density);
        }
    }
    best.0
}

/// A sampler with its reusable buffers.
#[derive(Debug, Clone)]
pub struct Sampler {
    schedule: NoiseSchedule,
    config: SamplerConfig,
    /// DDIM time steps, descending, ending at the first step above 0.
    ddim_taus: Vec<usize>,
    x: Vec<f32>,
    /// The noise added at one DDPM step.
    z: Vec<f32>,
    eps: Vec<f32>,
    model_x: Vec<f32>,
    model_eps: Vec<f32>,
    model_emb: Vec<f32>,
    embeddings: Vec<f32>,
    /// Weights of the steering variants of the current call (empty: none).
    steer: Vec<f32>,
}

impl Sampler {
    /// A sampler for `schedule` with `config` (validated here).
    pub fn new(
        schedule: NoiseSchedule,
        config: SamplerConfig,
    ) -> Result<Self, SamplerError<std::convert::Infallible>> {
        config.validate(&schedule)?;
        let ddim_taus = match config.rule {
            StepRule::Ddpm => Vec::new(),
            StepRule::Ddim { steps } => {
                let t = schedule.steps();
                // Evenly spaced, from T down; always includes T.
                (1..=steps).rev().map(|i| (i * t).div_ceil(steps)).collect()
            }
        };
        Ok(Self {
            schedule,
            config,
            ddim_taus,
            x: Vec::new(),
            z: Vec::new(),
            eps: Vec::new(),
            model_x: Vec::new(),
            model_eps: Vec::new(),
            model_emb: Vec::new(),
            embeddings: Vec::new(),
            steer: Vec::new(),
        })
    }

    /// The schedule.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// The configuration.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// The candidates of the last call (all rows, `[rows × candidates, action_dim]`).
    pub fn last_candidates(&self) -> &[f32] {
        &self.x
    }

    /// Encode `observations` (`[rows, observation_dim]`, normalised) once, then
    /// sample one action per row into `out` (`[rows, action_dim]`, normalised).
    pub fn sample<M: NoiseModel, N: Noise + ?Sized>(
        &mut self,
        model: &mut M,
        observations: &[f32],
        rng: &mut N,
        out: &mut [f32],
    ) -> Result<(), SamplerError<M::Error>> {
        let (od, ed) = (model.observation_dim(), model.embedding_dim());
        if od == 0 || !observations.len().is_multiple_of(od) {
            return Err(SamplerError::Shape {
                what: "observations",
                expected: od.max(1) * (observations.len() / od.max(1)).max(1),
                got: observations.len(),
            });
        }
        let rows = observations.len() / od;
        let mut embeddings = std::mem::take(&mut self.embeddings);
        embeddings.resize(rows * ed, 0.0);
        let result = model
            .encode(observations, &mut embeddings)
            .map_err(SamplerError::Model)
            .and_then(|()| self.sample_embedded(model, &embeddings, rng, out));
        self.embeddings = embeddings;
        result
    }

    /// Sample one action per embedding row (`[rows, embedding_dim]`) into `out`
    /// (`[rows, action_dim]`, normalised units).
    pub fn sample_embedded<M: NoiseModel, N: Noise + ?Sized>(
        &mut self,
        model: &mut M,
        embeddings: &[f32],
        rng: &mut N,
        out: &mut [f32],
    ) -> Result<(), SamplerError<M::Error>> {
        self.steer.clear();
        self.run(model, embeddings, rng, out)
    }

    /// Steered sampling (mode steering): `embeddings` holds `1 + weights.len()`
    /// blocks of `[rows, embedding_dim]` — the base (e.g. no mode given),
    /// then one per variant (e.g. a mode to go towards, one to avoid) — and
    /// every step uses ε̂ = ε_base + Σᵢ wᵢ (εᵢ − ε_base): a positive weight
    /// pulls towards variant i, a negative one pushes away from it. All
    /// variants run in one batch per step. Not combined with classifier-free
    /// guidance (the config's `guidance` must be 0).
    pub fn sample_steered<M: NoiseModel, N: Noise + ?Sized>(
        &mut self,
        model: &mut M,
        embeddings: &[f32],
        weights: &[f32],
        rng: &mut N,
        out: &mut [f32],
    ) -> Result<(), SamplerError<M::Error>> {
        if self.config.guidance != 0.0 && !weights.is_empty() {
            return Err(SamplerError::Config(
                "steering and classifier-free guidance (sampler.guidance) do not combine".into(),
            ));
        }
        if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
            return Err(SamplerError::Config(format!(
                "a steering weight must be finite, got {w}"
            )));
        }
        let ed = model.embedding_dim();
        let blocks = 1 + weights.len();
        if ed == 0 || !embeddings.len().is_multiple_of(blocks * ed) {
            return Err(SamplerError::Shape {
                what: "steering embeddings (base + one block per weight)",
                expected: blocks * ed.max(1) * (embeddings.len() / (blocks * ed.max(1))).max(1),
                got: embeddings.len(),
            });
        }
        self.steer.clear();
        self.steer.extend_from_slice(weights);
        let result = self.run(model, embeddings, rng, out);
        self.steer.clear();
        result
    }

    fn run<M: NoiseModel, N: Noise + ?Sized>(
        &mut self,
        model: &mut M,
        embeddings: &[f32],
        rng: &mut N,
        out: &mut [f32],
    ) -> Result<(), SamplerError<M::Error>> {
        let (ad, ed) = (model.action_dim(), model.embedding_dim());
        let blocks = 1 + self.steer.len();
        let rows = embeddings.len() / (ed * blocks).max(1);
        if ed == 0 || embeddings.len() != blocks * rows * ed {
            return Err(SamplerError::Shape {
                what: "embeddings",
                expected: rows * ed,
                got: embeddings.len(),
            });
        }
        if out.len() != rows * ad {
            return Err(SamplerError::Shape {
                what: "actions out",
                expected: rows * ad,
                got: out.len(),
            });
        }
        self.config
            .validate(&self.schedule)
            .map_err(SamplerError::widen)?;
        let cand = match self.config.selection {
            Selection::Single => 1,
            Selection::Kde { candidates, .. } => candidates,
        };
        let n = rows * cand;
        let guided = self.config.guidance != 0.0;
        let model_rows = if guided { 2 * n } else { blocks * n };

        // Model-side embedding batch: each row repeated `cand` times (block
        // by block when steering), then (with guidance) the same number of
        // all-zero unconditional rows.
        self.model_emb.clear();
        for b in 0..blocks {
            let block = &embeddings[b * rows * ed..(b + 1) * rows * ed];
            for r in 0..rows {
                for _ in 0..cand {
                    self.model_emb
                        .extend_from_slice(&block[r * ed..(r + 1) * ed]);
                }
            }
        }
        if guided {
            self.model_emb.resize(model_rows * ed, 0.0);
        }
        self.x.resize(n * ad, 0.0);
        self.eps.resize(n * ad, 0.0);
        self.model_x.resize(model_rows * ad, 0.0);
        self.model_eps.resize(model_rows * ad, 0.0);
        self.z.resize(n * ad, 0.0);
        rng.normal(&mut self.x);

        match self.config.rule {
            StepRule::Ddpm => {
                for tau in (1..=self.schedule.steps()).rev() {
                    self.predict(model, tau)?;
                    let (cx, ce, sigma) = self.schedule.ddpm_coefficients(tau);
                    for (x, e) in self.x.iter_mut().zip(&self.eps) {
                        *x = cx * (*x - ce * e);
                    }
                    if tau > 1 {
                        rng.normal(&mut self.z);
                        for (x, z) in self.x.iter_mut().zip(&self.z) {
                            *x += sigma * z;
                        }
                    }
                }
            }
            StepRule::Ddim { .. } => {
                for i in 0..self.ddim_taus.len() {
                    let tau = self.ddim_taus[i];
                    let prev = self.ddim_taus.get(i + 1).copied().unwrap_or(0);
                    self.predict(model, tau)?;
                    let (ab, ab_prev) =
                        (self.schedule.alpha_bar(tau), self.schedule.alpha_bar(prev));
                    let (sa, sm) = (ab.sqrt() as f32, (1.0 - ab).sqrt() as f32);
                    let (sa_p, sm_p) = (ab_prev.sqrt() as f32, (1.0 - ab_prev).sqrt() as f32);
                    for (x, e) in self.x.iter_mut().zip(&self.eps) {
                        let x0 = (*x - sm * e) / sa;
                        *x = sa_p * x0 + sm_p * e;
                    }
                }
            }
        }
        // Diffusion-X: M more steps at τ = 1, never adding noise.
        let (cx, ce, _) = self.schedule.ddpm_coefficients(1);
        for _ in 0..self.config.extra_steps {
            self.predict(model, 1)?;
            for (x, e) in self.x.iter_mut().zip(&self.eps) {
                *x = cx * (*x - ce * e);
            }
        }

        for r in 0..rows {
            let block = &self.x[r * cand * ad..(r + 1) * cand * ad];
            let pick = match self.config.selection {
                Selection::Single => 0,
                Selection::Kde { bandwidth, .. } => kde_densest(block, ad, bandwidth),
            };
            let src = &block[pick * ad..(pick + 1) * ad];
            if let Some(dim) = src.iter().position(|v| !v.is_finite()) {
                return Err(SamplerError::NonFinite { row: r, dim });
            }
            out[r * ad..(r + 1) * ad].copy_from_slice(src);
        }
        Ok(())
    }

    /// ε̂ at step τ for all current samples, with guidance applied, into `self.eps`.
    fn predict<M: NoiseModel>(
        &mut self,
        model: &mut M,
        tau: usize,
    ) -> Result<(), SamplerError<M::Error>> {
        let t = self.schedule.time_input(tau);
        let w = self.config.guidance;
        if !self.steer.is_empty() {
            let n = self.x.len();
            for b in 0..=self.steer.len() {
                self.model_x[b * n..(b + 1) * n].copy_from_slice(&self.x);
            }
            model
                .predict_noise(&self.model_emb, &self.model_x, t, &mut self.model_eps)
                .map_err(SamplerError::Model)?;
            let (base, variants) = self.model_eps.split_at(n);
            self.eps.copy_from_slice(base);
            for (v, &wv) in self.steer.iter().enumerate() {
                let variant = &variants[v * n..(v + 1) * n];
                for ((e, b), x) in self.eps.iter_mut().zip(base).zip(variant) {
                    *e += wv * (x - b);
                }
            }
            return Ok(());
        }
        if w == 0.0 {
            return model
                .predict_noise(&self.model_emb, &self.x, t, &mut self.eps)
                .map_err(SamplerError::Model);
        }
        let half = self.x.len();
        self.model_x[..half].copy_from_slice(&self.x);
        self.model_x[half..].copy_from_slice(&self.x);
        model
            .predict_noise(&self.model_emb, &self.model_x, t, &mut self.model_eps)
            .map_err(SamplerError::Model)?;
        let (cond, uncond) = self.model_eps.split_at(half);
        for ((e, c), u) in self.eps.iter_mut().zip(cond).zip(uncond) {
            *e = (1.0 + w) * c - w * u;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleConfig;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// ε̂ = `scale` · a_τ + `emb_gain` · embedding[0]; records every call.
    #[derive(Default)]
    struct Mock {
        scale: f32,
        emb_gain: f32,
        calls: Vec<(f32, Vec<f32>, Vec<f32>)>,
    }

    impl NoiseModel for Mock {
        type Error = std::convert::Infallible;
        fn action_dim(&self) -> usize {
            2
        }
        fn embedding_dim(&self) -> usize {
            3
        }
        fn observation_dim(&self) -> usize {
            3
        }
        fn encode(&mut self, o: &[f32], e: &mut [f32]) -> Result<(), Self::Error> {
            e.copy_from_slice(o);
            Ok(())
        }
        fn predict_noise(
            &mut self,
            emb: &[f32],
            a: &[f32],
            t: f32,
            eps: &mut [f32],
        ) -> Result<(), Self::Error> {
            self.calls.push((t, emb.to_vec(), a.to_vec()));
            for r in 0..a.len() / 2 {
                for d in 0..2 {
                    eps[r * 2 + d] = self.scale * a[r * 2 + d] + self.emb_gain * emb[r * 3];
                }
            }
            Ok(())
        }
    }

    fn schedule(t: usize) -> NoiseSchedule {
        NoiseSchedule::new(&ScheduleConfig {
            steps: t,
            ..Default::default()
        })
        .expect("valid")
    }

    fn run(config: SamplerConfig, model: &mut Mock, seed: u64, rows: usize) -> Vec<f32> {
        let mut s = Sampler::new(schedule(10), config).expect("valid");
        let obs: Vec<f32> = (0..rows * 3).map(|i| i as f32 * 0.1).collect();
        let mut out = vec![0.0; rows * 2];
        s.sample(model, &obs, &mut ChaCha8Rng::seed_from_u64(seed), &mut out)
            .expect("sample");
        out
    }

    #[test]
    fn same_seed_same_actions_different_seed_different_actions() {
        let a = run(
            SamplerConfig::ddpm(),
            &mut Mock {
                scale: 0.3,
                ..Default::default()
            },
            7,
            4,
        );
        let b = run(
            SamplerConfig::ddpm(),
            &mut Mock {
                scale: 0.3,
                ..Default::default()
            },
            7,
            4,
        );
        let c = run(
            SamplerConfig::ddpm(),
            &mut Mock {
                scale: 0.3,
                ..Default::default()
            },
            8,
            4,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ddpm_calls_the_model_at_every_step_in_descending_order() {
        let mut m = Mock {
            scale: 0.3,
            ..Default::default()
        };
        run(SamplerConfig::ddpm(), &mut m, 1, 2);
        let ts: Vec<f32> = m.calls.iter().map(|c| c.0).collect();
        let expected: Vec<f32> = (1..=10).rev().map(|tau| tau as f32 / 10.0).collect();
        assert_eq!(ts, expected);
    }

    #[test]
    fn diffusion_x_adds_no_noise_after_tau_one() {
        let mut m = Mock {
            scale: 0.3,
            ..Default::default()
        };
        let out = run(SamplerConfig::diffusion_x(5), &mut m, 3, 2);
        assert_eq!(m.calls.len(), 15);
        let sched = schedule(10);
        let (cx, ce, _) = sched.ddpm_coefficients(1);
        // Calls 10..15 are the extra steps: all at t = 1/T, and each input is the
        // exact noiseless update of the previous one.
        for k in 10..15 {
            assert_eq!(m.calls[k].0, 0.1);
        }
        let step = |a: &[f32]| -> Vec<f32> { a.iter().map(|&x| cx * (x - ce * 0.3 * x)).collect() };
        for k in 10..14 {
            assert_eq!(step(&m.calls[k].2), m.calls[k + 1].2, "extra step {k}");
        }
        assert_eq!(step(&m.calls[14].2), out);
    }

    /// The standard normals a ChaCha8 stream seeded with `seed` yields, in
    /// order: the draws the sampler makes (initial actions, then the noise
    /// of each step above τ = 1), taken as given inputs.
    fn normals(seed: u64, n: usize) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| f64::from(rng.sample::<f32, _>(StandardNormal)))
            .collect()
    }

    /// The DDPM chain of a two-step schedule written out by hand, from the
    /// paper's update a_{τ−1} = (a_τ − β_τ/√(1−ᾱ_τ) ε̂)/√α_τ + √β_τ z (no z
    /// at τ = 1), with β = (0.1, 0.2): α = (0.9, 0.8), ᾱ = (0.9, 0.72). The
    /// mock's ε̂ = s·a + g·e for a conditional row and s·a for the
    /// unconditional (zero) row, and guidance w gives ε̂ = (1+w)ε_c − w ε_u.
    /// Then M noiseless extra steps at τ = 1.
    fn two_step_by_hand(s: f64, g: f64, e: f64, w: f64, m: usize, z: &[f64]) -> [f64; 2] {
        let eps = |a: f64| (1.0 + w) * (s * a + g * e) - w * (s * a);
        let mut out = [0.0; 2];
        for d in 0..2 {
            let a2 = z[d];
            let a1 =
                (a2 - 0.2 / 0.28f64.sqrt() * eps(a2)) / 0.8f64.sqrt() + 0.2f64.sqrt() * z[2 + d];
            let mut a0 = (a1 - 0.1 / 0.1f64.sqrt() * eps(a1)) / 0.9f64.sqrt();
            for _ in 0..m {
                a0 = (a0 - 0.1 / 0.1f64.sqrt() * eps(a0)) / 0.9f64.sqrt();
            }
            out[d] = a0;
        }
        out
    }

    fn two_step(config: SamplerConfig, model: &mut Mock, seed: u64, obs0: f32) -> Vec<f32> {
        let sched = NoiseSchedule::from_betas(vec![0.1, 0.2]).expect("valid");
        let mut s = Sampler::new(sched, config).expect("valid");
        let mut out = vec![0.0; 2];
        s.sample(
            model,
            &[obs0, 0.0, 0.0],
            &mut ChaCha8Rng::seed_from_u64(seed),
            &mut out,
        )
        .expect("sample");
        out
    }

    #[test]
    fn ddpm_diffusion_x_and_guidance_match_the_chain_computed_by_hand() {
        let z = normals(21, 4);
        for (w, m, config) in [
            (0.0, 0, SamplerConfig::ddpm()),
            (0.0, 0, SamplerConfig::ddpm().with_guidance(0.0)),
            (0.0, 0, SamplerConfig::diffusion_x(0)),
            (0.0, 3, SamplerConfig::diffusion_x(3)),
            (2.0, 0, SamplerConfig::ddpm().with_guidance(2.0)),
            (2.0, 2, SamplerConfig::diffusion_x(2).with_guidance(2.0)),
        ] {
            let mut mock = Mock {
                scale: 0.3,
                emb_gain: 0.5,
                ..Default::default()
            };
            let got = two_step(config, &mut mock, 21, 0.8);
            let want = two_step_by_hand(0.3, 0.5, 0.8, w, m, &z);
            for (g, h) in got.iter().zip(want) {
                assert!(
                    (f64::from(*g) - h).abs() < 1e-5,
                    "{}: sampler {got:?}, by hand {want:?}",
                    config.label()
                );
            }
            // Network calls: T = 2, plus M.
            assert_eq!(mock.calls.len(), 2 + m, "{}", config.label());
        }
    }

    #[test]
    fn kde_picks_the_densest_candidate_of_a_1d_case_known_by_hand() {
        // 1-D candidates 0, 0.1, 0.2 and 3 with h = 0.5, density(x) =
        // Σ_j exp(−(x − x_j)² / (2h²)) = Σ_j exp(−2 (x − x_j)²):
        //   x = 0:   1 + e^−0.02 + e^−0.08 + e^−18    = 2.9033
        //   x = 0.1: 1 + 2 e^−0.02 + e^−16.82         = 2.9604  (densest)
        //   x = 0.2: 1 + e^−0.02 + e^−0.08 + e^−15.68 = 2.9033
        //   x = 3:   1 + e^−18 + e^−16.82 + e^−15.68  = 1.0000
        assert_eq!(kde_densest(&[0.0, 0.1, 0.2, 3.0], 1, 0.5), 1);
        // Order does not matter; the lone far point never wins.
        assert_eq!(kde_densest(&[3.0, 0.2, 0.0, 0.1], 1, 0.5), 3);
        // Two clusters: the one with three points beats the one with two.
        assert_eq!(kde_densest(&[5.0, 5.1, -1.0, -1.05, -0.95], 1, 0.2), 2);
        // 2-D: three points in a tight cluster, one far away; (0, 0) sits
        // 0.1 from each of the other two, so it is densest.
        assert_eq!(
            kde_densest(&[0.0, 0.0, 5.0, 5.0, 0.1, 0.0, 0.0, 0.1], 2, 0.5),
            0
        );
    }

    #[test]
    fn kde_sampler_returns_its_densest_candidate() {
        let mut s = Sampler::new(schedule(10), SamplerConfig::kde(20, 0.1)).expect("valid");
        let mut m = Mock {
            scale: 0.3,
            ..Default::default()
        };
        let mut out = vec![0.0; 2];
        s.sample(
            &mut m,
            &[0.0, 0.0, 0.0],
            &mut ChaCha8Rng::seed_from_u64(5),
            &mut out,
        )
        .expect("sample");
        // One batch of 20 rows per network call.
        assert!(m.calls.iter().all(|c| c.2.len() == 40));
        // The density of every candidate, computed here in f64 from the
        // definition, is highest at the one returned.
        let c = s.last_candidates().to_vec();
        let density = |k: usize| -> f64 {
            (0..20)
                .map(|j| {
                    let d2: f64 = (0..2)
                        .map(|d| f64::from(c[2 * k + d] - c[2 * j + d]).powi(2))
                        .sum();
                    (-d2 / (2.0 * 0.01)).exp()
                })
                .sum()
        };
        let picked = (0..20)
            .find(|&k| c[2 * k..2 * k + 2] == out[..])
            .expect("the output is one of the candidates");
        for k in 0..20 {
            assert!(
                density(picked) >= density(k) - 1e-9,
                "candidate {k} is denser"
            );
        }
        // And the candidates differ, so the choice was a real one.
        assert!((0..20).any(|k| density(k) < density(picked) - 1e-3));
    }

    #[test]
    fn guidance_combines_conditional_and_zero_embedding_rows_in_one_batch() {
        let w = 4.0;
        // Conditional ε = 0.2 a + e0, unconditional (zero embedding) ε = 0.2 a.
        // So the guided ε is 0.2 a + (1 + w) e0: the same as an unguided model with gain 1 + w.
        let mut guided = Mock {
            scale: 0.2,
            emb_gain: 1.0,
            ..Default::default()
        };
        let a = run(SamplerConfig::ddpm().with_guidance(w), &mut guided, 13, 3);
        let b = run(
            SamplerConfig::ddpm(),
            &mut Mock {
                scale: 0.2,
                emb_gain: 1.0 + w,
                ..Default::default()
            },
            13,
            3,
        );
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        // One call per step, with 2 × rows rows, the second half all zeros.
        let (_, emb, act) = &guided.calls[0];
        assert_eq!(act.len(), 2 * 3 * 2);
        assert!(emb[9..].iter().all(|&v| v == 0.0));
        assert!(emb[..9].iter().any(|&v| v != 0.0));
        assert_eq!(act[..6], act[6..]);
    }

    #[test]
    fn steering_moves_each_step_towards_and_away_from_variants_in_one_batch() {
        // ε = 0.2 a + e0 is linear in the embedding, so steering with base b,
        // variants v1 (w = 3) and v2 (w = −2) is the unsteered chain with
        // embedding b + 3 (v1 − b) − 2 (v2 − b). KDE checks the block layout.
        let rows = 2;
        let base = [0.1f32, 0.0, 0.0, -0.3, 0.0, 0.0];
        let towards = [0.5f32, 0.0, 0.0, 0.2, 0.0, 0.0];
        let away = [-0.4f32, 0.0, 0.0, 0.1, 0.0, 0.0];
        let weights = [3.0f32, -2.0];
        let mut blocks = base.to_vec();
        blocks.extend_from_slice(&towards);
        blocks.extend_from_slice(&away);
        let combined: Vec<f32> = (0..base.len())
            .map(|i| base[i] + 3.0 * (towards[i] - base[i]) - 2.0 * (away[i] - base[i]))
            .collect();
        for config in [SamplerConfig::ddpm(), SamplerConfig::kde(4, 0.5)] {
            let mut steered = Mock {
                scale: 0.2,
                emb_gain: 1.0,
                ..Default::default()
            };
            let mut plain = Mock {
                scale: 0.2,
                emb_gain: 1.0,
                ..Default::default()
            };
            let mut s = Sampler::new(schedule(10), config).expect("valid");
            let (mut a, mut b) = (vec![0.0; rows * 2], vec![0.0; rows * 2]);
            s.sample_steered(
                &mut steered,
                &blocks,
                &weights,
                &mut ChaCha8Rng::seed_from_u64(5),
                &mut a,
            )
            .expect("steered");
            s.sample_embedded(
                &mut plain,
                &combined,
                &mut ChaCha8Rng::seed_from_u64(5),
                &mut b,
            )
            .expect("plain");
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-4, "{config:?}: {x} vs {y}");
            }
            // One call per step, three blocks of rows × candidates, each
            // block the same noisy actions.
            let cand = config.rows_per_decision();
            assert_eq!(steered.calls.len(), 10);
            let (_, emb, act) = &steered.calls[0];
            let n = rows * cand * 2;
            assert_eq!(act.len(), 3 * n);
            assert_eq!(act[..n], act[n..2 * n]);
            assert_eq!(act[..n], act[2 * n..]);
            assert_eq!(emb[0], 0.1);
            assert_eq!(emb[3 * rows * cand], 0.5);
            assert_eq!(emb[6 * rows * cand], -0.4);
        }
        // Refused: with guidance, a non-finite weight, blocks that do not fit.
        let mut m = Mock::default();
        let mut out = vec![0.0; rows * 2];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut guided =
            Sampler::new(schedule(10), SamplerConfig::ddpm().with_guidance(1.0)).expect("valid");
        let e = guided
            .sample_steered(&mut m, &blocks, &weights, &mut rng, &mut out)
            .expect_err("refused");
        assert!(e.to_string().contains("do not combine"), "{e}");
        let mut s = Sampler::new(schedule(10), SamplerConfig::ddpm()).expect("valid");
        let e = s
            .sample_steered(&mut m, &blocks, &[1.0, f32::NAN], &mut rng, &mut out)
            .expect_err("refused");
        assert!(e.to_string().contains("finite"), "{e}");
        let e = s
            .sample_steered(&mut m, &blocks[..15], &weights, &mut rng, &mut out)
            .expect_err("refused");
        assert!(e.to_string().contains("steering embeddings"), "{e}");
    }

    #[test]
    fn ddim_uses_s_steps_and_is_deterministic_given_the_start() {
        let mut m = Mock {
            scale: 0.3,
            ..Default::default()
        };
        run(SamplerConfig::ddim(4), &mut m, 1, 2);
        let ts: Vec<f32> = m.calls.iter().map(|c| c.0).collect();
        assert_eq!(ts, vec![1.0, 0.8, 0.5, 0.3]);
        // With ε̂ ≡ 0 DDIM maps x_T to x_T / √ᾱ_T · … = x_T scaled by 1/√ᾱ_T.
        let mut zero = Mock::default();
        let out = run(SamplerConfig::ddim(4), &mut zero, 2, 1);
        let x_t = zero.calls[0].2.clone();
        let ab = schedule(10).alpha_bar(10);
        for (o, x) in out.iter().zip(&x_t) {
            assert!((o - x / ab.sqrt() as f32).abs() < 1e-5);
        }
    }

    #[test]
    fn invalid_sampler_configs_are_rejected() {
        assert!(Sampler::new(schedule(10), SamplerConfig::ddim(11)).is_err());
        assert!(Sampler::new(schedule(10), SamplerConfig::ddim(0)).is_err());
        assert!(Sampler::new(schedule(10), SamplerConfig::kde(0, 0.1)).is_err());
        assert!(Sampler::new(schedule(10), SamplerConfig::kde(5, -1.0)).is_err());
        assert!(Sampler::new(schedule(10), SamplerConfig::ddpm().with_guidance(f32::NAN)).is_err());
    }

    #[test]
    fn labels_are_stable() {
        assert_eq!(SamplerConfig::ddpm().label(), "ddpm");
        assert_eq!(SamplerConfig::diffusion_x(8).label(), "diffusion-x(M=8)");
        assert_eq!(SamplerConfig::kde(50, 0.1).label(), "kde(N=50)");
        assert_eq!(SamplerConfig::ddim(10).label(), "ddim(S=10)");
        assert_eq!(SamplerConfig::ddpm().with_guidance(4.0).label(), "ddpm w=4");
    }
}
