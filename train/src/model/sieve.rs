use super::encoder::{LAYER_NORM_EPS, LEAKY_SLOPE};
use crate::error::TrainError;
use burn::module::Module;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, leaky_relu};
use serde::{Deserialize, Serialize};

/// MLP Sieve sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpSieveConfig {
    /// Width of the action and time embeddings.
    pub embed: usize,
    /// Width of the hidden layers.
    pub hidden: usize,
    /// The time embedding's frequencies (the weights of the bias-free Linear
    /// before `sin`) start uniform in ±this. With τ/T in (0, 1], 1.0 (the
    /// reference code's default) makes `sin` nearly linear; larger values
    /// resolve individual steps from the start.
    pub time_frequency: f64,
}

impl Default for MlpSieveConfig {
    fn default() -> Self {
        Self {
            embed: 128,
            hidden: 256,
            time_frequency: 1.0,
        }
    }
}

impl MlpSieveConfig {
    /// Check sizes.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.embed == 0 || self.hidden == 0 {
            return Err(TrainError::config(
                "denoiser",
                "embed and hidden must be at least 1",
            ));
        }
        Ok(())
    }

    /// Build the sieve.
    pub fn init<B: Backend>(
        &self,
        embedding: usize,
        action: usize,
        device: &B::Device,
    ) -> MlpSieve<B> {
        let (e, h) = (self.embed, self.hidden);
        MlpSieve {
            action_in: LinearConfig::new(action, e).init(device),
            action_out: LinearConfig::new(e, e).init(device),
            time_freq: LinearConfig::new(1, e)
                .with_bias(false)
                .with_initializer(Initializer::Uniform {
                    min: -self.time_frequency,
                    max: self.time_frequency,
                })
                .init(device),
            time_out: LinearConfig::new(e, e).init(device),
            fc1: LinearConfig::new(embedding + 2 * e, h).init(device),
            norm1: LayerNormConfig::new(h)
                .with_epsilon(LAYER_NORM_EPS)
                .init(device),
            fc2: LinearConfig::new(h + action + 1, h).init(device),
            fc3: LinearConfig::new(h + action + 1, h).init(device),
            fc4: LinearConfig::new(h + action + 1, action).init(device),
        }
    }
}

/// The MLP Sieve of Pearce et al.: the action a_τ and the time τ/T are
/// embedded, concatenated with the observation embedding, and re-concatenated
/// (raw) to the input of every later layer; layers 2–3 are residual with the
/// skip scaled by 1/√2.
#[derive(Module, Debug)]
pub struct MlpSieve<B: Backend> {
    /// a_τ → embed (then LeakyReLU).
    pub action_in: Linear<B>,
    /// embed → embed.
    pub action_out: Linear<B>,
    /// τ/T → embed frequencies, no bias (then sin).
    pub time_freq: Linear<B>,
    /// embed → embed.
    pub time_out: Linear<B>,
    /// [o, a, τ] embeddings → hidden.
    pub fc1: Linear<B>,
    /// Layer norm after `fc1` (then GELU).
    pub norm1: LayerNorm<B>,
    /// [h/√2, a_τ, τ/T] → hidden, added to h/√2.
    pub fc2: Linear<B>,
    /// [h/√2, a_τ, τ/T] → hidden, added to h/√2.
    pub fc3: Linear<B>,
    /// [h, a_τ, τ/T] → ε̂.
    pub fc4: Linear<B>,
}

impl<B: Backend> MlpSieve<B> {
    /// `embedding [rows, E]`, `action [rows, A]`, `t [rows, 1]` → ε̂ `[rows, A]`.
    pub fn forward(
        &self,
        embedding: Tensor<B, 2>,
        action: Tensor<B, 2>,
        t: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let ea = self.action_out.forward(leaky_relu(
            self.action_in.forward(action.clone()),
            LEAKY_SLOPE,
        ));
        let et = self
            .time_out
            .forward(self.time_freq.forward(t.clone()).sin());
        let h1 = gelu(
            self.norm1
                .forward(self.fc1.forward(Tensor::cat(vec![embedding, ea, et], 1))),
        );
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let h1 = h1.mul_scalar(s);
        let h2 = gelu(
            self.fc2
                .forward(Tensor::cat(vec![h1.clone(), action.clone(), t.clone()], 1)),
        ) + h1;
        let h2 = h2.mul_scalar(s);
        let h3 = gelu(
            self.fc3
                .forward(Tensor::cat(vec![h2.clone(), action.clone(), t.clone()], 1)),
        ) + h2;
        self.fc4.forward(Tensor::cat(vec![h3, action, t], 1))
    }
}
