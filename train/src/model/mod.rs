//! The one definition of every network diffbc trains.
//!
//! A [`Policy`] is an observation [`Encoder`] (run once per decision, each
//! history frame through the same weights) and a [`Head`]: a denoiser that
//! predicts ε for the diffusion sampler, or a baseline head. `export` walks
//! these same modules to write ONNX graphs.

mod encoder;
mod mse;
mod sieve;

pub use encoder::{
    CnnEncoder, ConvLayerConfig, Encoder, EncoderConfig, LAYER_NORM_EPS, LEAKY_SLOPE, MlpEncoder,
    PatchConv,
};
pub use mse::{MseHead, MseHeadConfig};
pub use sieve::{DenoiserConfig, MlpSieve, MlpSieveConfig};

use crate::config::{Method, TrainConfig};
use crate::task::ObsSpec;
use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::prelude::*;

/// The network after the encoder.
// A policy holds exactly one head; the size difference between variants is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Head<B: Backend> {
    /// MLP Sieve denoiser: (embedding, a_τ, τ/T) → ε̂.
    Sieve(MlpSieve<B>),
    /// MSE regression: embedding → action.
    Mse(MseHead<B>),
}

/// Encoder plus head.
#[derive(Module, Debug)]
pub struct Policy<B: Backend> {
    /// Observation encoder, shared by all history frames.
    pub encoder: Encoder<B>,
    /// Denoiser or baseline head.
    pub head: Head<B>,
}

/// Everything needed to build a [`Policy`]: the config plus the data shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    /// Training configuration.
    pub config: TrainConfig,
    /// One observation frame.
    pub obs: ObsSpec,
    /// Action length.
    pub action_dim: usize,
}

impl PolicySpec {
    /// Check that the config can be built for these shapes.
    pub fn validate(&self) -> Result<(), crate::error::TrainError> {
        self.config.validate()?;
        self.config.encoder.check_obs(self.obs)?;
        if self.action_dim == 0 {
            return Err(crate::error::TrainError::Data("action_dim is 0".into()));
        }
        if !self.action_dim.is_multiple_of(self.config.chunk.horizon) {
            return Err(crate::error::TrainError::config(
                "chunk.horizon",
                format!(
                    "the action vector has {} values, not a whole number of {}-action chunks",
                    self.action_dim, self.config.chunk.horizon
                ),
            ));
        }
        Ok(())
    }

    /// Frames per observation (history + current).
    pub fn frames(&self) -> usize {
        self.config.history + 1
    }

    /// Embedding length of one frame.
    pub fn frame_embedding(&self) -> usize {
        self.config.encoder.embed()
    }

    /// Embedding length of a whole observation (all frames).
    pub fn embedding_dim(&self) -> usize {
        self.frames() * self.frame_embedding()
    }

    /// Build the policy with freshly initialised weights. Parameter ids are
    /// numbered in visiting order so that records are byte-reproducible.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Policy<B> {
        let encoder = self.config.encoder.init(self.obs, device);
        let e = self.embedding_dim();
        let head = match self.config.method {
            Method::Diffusion => Head::Sieve(self.config.denoiser.init(e, self.action_dim, device)),
            Method::Mse => Head::Mse(self.config.mse_head.init(e, self.action_dim, device)),
        };
        Policy { encoder, head }.map(&mut Renumber(0))
    }
}

/// Give parameters the ids 0, 1, 2, … in visiting order (burn draws them at random).
struct Renumber(u64);

impl<B: Backend> ModuleMapper<B> for Renumber {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, value, mapper) = param.consume();
        self.0 += 1;
        Param::from_mapped_value(ParamId::from(self.0 - 1), value, mapper)
    }
}

impl<B: Backend> Policy<B> {
    /// Encode frames `[rows, frame_len]` (normalised) to `[rows, frame_embedding]`.
    pub fn encode_frames(&self, frames: Tensor<B, 2>) -> Tensor<B, 2> {
        self.encoder.forward(frames)
    }

    /// Encode whole observations `[rows, frames · frame_len]` to `[rows, frames · frame_embedding]`.
    pub fn encode(&self, observations: Tensor<B, 2>, frames: usize) -> Tensor<B, 2> {
        let [rows, len] = observations.dims();
        let per_frame = self.encode_frames(observations.reshape([rows * frames, len / frames]));
        let e = per_frame.dims()[1];
        per_frame.reshape([rows, frames * e])
    }

    /// ε̂ (diffusion) or the action (MSE) from embeddings `[rows, E]`,
    /// noisy actions `[rows, A]` and time inputs `[rows, 1]` (both ignored by MSE).
    pub fn head_forward(
        &self,
        embedding: Tensor<B, 2>,
        actions: Tensor<B, 2>,
        t: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        match &self.head {
            Head::Sieve(s) => s.forward(embedding, actions, t),
            Head::Mse(m) => m.forward(embedding),
        }
    }
}
