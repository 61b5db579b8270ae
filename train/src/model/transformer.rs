use super::encoder::LAYER_NORM_EPS;
use crate::error::TrainError;
use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};
use serde::{Deserialize, Serialize};

/// Transformer denoiser sizes (the paper's: 64-d tokens, 4 blocks, 16 heads,
/// feed-forward 256).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// Token width.
    pub d_model: usize,
    /// Attention heads per block (must divide `d_model`).
    pub heads: usize,
    /// Number of blocks.
    pub blocks: usize,
    /// Hidden width of each block's feed-forward layer.
    pub feed_forward: usize,
    /// Initial range of the time embedding's frequencies (as the sieve's).
    pub time_frequency: f64,
}

impl Default for TransformerConfig {
    fn default() -> Self {
        Self {
            d_model: 64,
            heads: 16,
            blocks: 4,
            feed_forward: 256,
            time_frequency: 1.0,
        }
    }
}

impl TransformerConfig {
    /// Check sizes.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.d_model == 0 || self.heads == 0 || self.blocks == 0 || self.feed_forward == 0 {
            return Err(TrainError::config(
                "denoiser",
                "d_model, heads, blocks and feed_forward must be at least 1",
            ));
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return Err(TrainError::config(
                "denoiser.heads",
                format!("{} does not divide d_model {}", self.heads, self.d_model),
            ));
        }
        Ok(())
    }

    /// Build for `frames` observation tokens of `frame_embedding` values each.
    pub fn init<B: Backend>(
        &self,
        frames: usize,
        frame_embedding: usize,
        action: usize,
        device: &B::Device,
    ) -> TransformerDenoiser<B> {
        let d = self.d_model;
        let tokens = frames + 2;
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(LAYER_NORM_EPS)
                .init(device)
        };
        let blocks = (0..self.blocks)
            .map(|_| AttentionBlock {
                query: LinearConfig::new(d, d).init(device),
                key: LinearConfig::new(d, d).init(device),
                value: LinearConfig::new(d, d).init(device),
                proj: LinearConfig::new(d, d).init(device),
                norm1: norm(),
                ff1: LinearConfig::new(d, self.feed_forward).init(device),
                ff2: LinearConfig::new(self.feed_forward, d).init(device),
                norm2: norm(),
                heads: self.heads,
            })
            .collect();
        TransformerDenoiser {
            obs_in: LinearConfig::new(frame_embedding, d).init(device),
            action_in: LinearConfig::new(action, d).init(device),
            time_freq: LinearConfig::new(1, d)
                .with_bias(false)
                .with_initializer(Initializer::Uniform {
                    min: -self.time_frequency,
                    max: self.time_frequency,
                })
                .init(device),
            time_out: LinearConfig::new(d, d).init(device),
            position: Param::from_tensor(Tensor::random(
                [tokens, d],
                burn::tensor::Distribution::Normal(0.0, 0.02),
                device,
            )),
            blocks,
            out: LinearConfig::new(tokens * d, action).init(device),
            frames,
        }
    }
}

/// One post-norm block: multi-head self-attention and a GELU feed-forward
/// layer, each residual with the sum scaled by 1/√2 (as the paper's code).
#[derive(Module, Debug)]
pub struct AttentionBlock<B: Backend> {
    /// Tokens → queries.
    pub query: Linear<B>,
    /// Tokens → keys.
    pub key: Linear<B>,
    /// Tokens → values.
    pub value: Linear<B>,
    /// Concatenated heads → tokens.
    pub proj: Linear<B>,
    /// After the attention residual.
    pub norm1: LayerNorm<B>,
    /// d → feed-forward.
    pub ff1: Linear<B>,
    /// feed-forward → d.
    pub ff2: Linear<B>,
    /// After the feed-forward residual.
    pub norm2: LayerNorm<B>,
    /// Attention heads.
    pub heads: usize,
}

impl<B: Backend> AttentionBlock<B> {
    /// `[rows, tokens, d]` → `[rows, tokens, d]`.
    ///
    /// Linear layers run on `[rows · tokens, d]` (one matrix product, not one
    /// per row), and the attention products over the few tokens are
    /// broadcast multiply-and-sum rather than batched matrix products of
    /// 3 × 4 blocks, which burn's CPU backend runs one block at a time. The
    /// exported graph computes the same thing with `MatMul`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, tokens, d] = x.dims();
        let (h, dh) = (self.heads, d / self.heads);
        let flat = x.clone().reshape([n * tokens, d]);
        // [n, tokens, h, dh]: heads are split without moving data.
        let split = |t: Tensor<B, 2>| t.reshape([n, tokens, h, dh]);
        let q = split(self.query.forward(flat.clone()));
        let k = split(self.key.forward(flat.clone()));
        let v = split(self.value.forward(flat));
        // scores[n, i, j, h] = Σ_c q[n, i, h, c] · k[n, j, h, c]
        let scores = (q.unsqueeze_dim::<5>(2) * k.unsqueeze_dim::<5>(1))
            .sum_dim(4)
            .reshape([n, tokens, tokens, h])
            .mul_scalar(1.0 / (dh as f32).sqrt());
        let weights = softmax(scores, 2);
        // out[n, i, h, c] = Σ_j w[n, i, j, h] · v[n, j, h, c]
        let attended = (weights.unsqueeze_dim::<5>(4) * v.unsqueeze_dim::<5>(1))
            .sum_dim(2)
            .reshape([n * tokens, d]);
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let x = self
            .norm1
            .forward((x + self.proj.forward(attended).reshape([n, tokens, d])).mul_scalar(s));
        let flat = x.clone().reshape([n * tokens, d]);
        let f = self
            .ff2
            .forward(gelu(self.ff1.forward(flat)))
            .reshape([n, tokens, d]);
        self.norm2.forward((x + f).mul_scalar(s))
    }
}

/// The Transformer denoiser: one token per observation frame (each frame's
/// embedding projected), one for τ (sinusoidal embedding) and one for a_τ,
/// plus a learned position code; attention blocks; ε̂ read from the
/// flattened tokens.
#[derive(Module, Debug)]
pub struct TransformerDenoiser<B: Backend> {
    /// Frame embedding → token.
    pub obs_in: Linear<B>,
    /// a_τ → token.
    pub action_in: Linear<B>,
    /// τ/T → frequencies, no bias (then sin).
    pub time_freq: Linear<B>,
    /// Frequencies → token.
    pub time_out: Linear<B>,
    /// Learned position code `[tokens, d]`, tokens ordered frames (oldest
    /// first), τ, a_τ.
    pub position: Param<Tensor<B, 2>>,
    /// The blocks.
    pub blocks: Vec<AttentionBlock<B>>,
    /// Flattened tokens → ε̂.
    pub out: Linear<B>,
    /// Observation tokens.
    pub frames: usize,
}

impl<B: Backend> TransformerDenoiser<B> {
    /// `embedding [rows, frames · e]`, `action [rows, A]`, `t [rows, 1]` → ε̂ `[rows, A]`.
    pub fn forward(
        &self,
        embedding: Tensor<B, 2>,
        action: Tensor<B, 2>,
        t: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let [n, e] = embedding.dims();
        let d = self.action_in.weight.dims()[1];
        let obs = self
            .obs_in
            .forward(embedding.reshape([n * self.frames, e / self.frames]))
            .reshape([n, self.frames, d]);
        let time = self
            .time_out
            .forward(self.time_freq.forward(t).sin())
            .reshape([n, 1, d]);
        let act = self.action_in.forward(action).reshape([n, 1, d]);
        let tokens = self.frames + 2;
        let mut x =
            Tensor::cat(vec![obs, time, act], 1) + self.position.val().reshape([1, tokens, d]);
        for b in &self.blocks {
            x = b.forward(x);
        }
        self.out.forward(x.reshape([n, tokens * d]))
    }
}
