//! The one definition of every network diffbc trains.
//!
//! A [`Policy`] is an observation [`Encoder`] (run once per decision, each
//! history frame through the same weights) and a [`Head`]: a denoiser that
//! predicts ε for the diffusion sampler, or a baseline head. `export` walks
//! these same modules to write ONNX graphs.

mod basic;
mod classify;
mod encoder;
mod mse;
mod sieve;
mod transformer;

pub use basic::{BasicMlp, BasicMlpConfig};
pub use classify::{BaselineConfig, BinsHead, CentresHead};
pub use encoder::{
    CnnEncoder, ConvLayerConfig, Encoder, EncoderConfig, LAYER_NORM_EPS, LEAKY_SLOPE, MlpEncoder,
    PatchConv,
};
pub use mse::{MseHead, MseHeadConfig};
pub use sieve::{MlpSieve, MlpSieveConfig};
pub use transformer::{AttentionBlock, TransformerConfig, TransformerDenoiser};

use crate::config::{Method, TrainConfig};
use crate::data::ObsSpec;
use crate::error::TrainError;
use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::prelude::*;
use diffbc_runtime::decode::ActionDecoder;
use serde::{Deserialize, Serialize};

/// Denoiser architecture (the three of the paper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum DenoiserConfig {
    /// The MLP Sieve: embeddings of o, τ, a_τ; residual blocks that
    /// re-concatenate a_τ and τ.
    MlpSieve(MlpSieveConfig),
    /// The Basic MLP: `[a_τ, o, τ]` through plain hidden layers.
    BasicMlp(BasicMlpConfig),
    /// The Transformer: tokens for each observation frame, τ and a_τ.
    Transformer(TransformerConfig),
}

impl Default for DenoiserConfig {
    fn default() -> Self {
        Self::MlpSieve(MlpSieveConfig::default())
    }
}

impl DenoiserConfig {
    /// The three architectures with their default sizes, for harnesses that
    /// must cover them all. The match in `name` is exhaustive.
    pub fn all() -> [DenoiserConfig; 3] {
        [
            Self::MlpSieve(MlpSieveConfig::default()),
            Self::BasicMlp(BasicMlpConfig::default()),
            Self::Transformer(TransformerConfig::default()),
        ]
    }

    /// Short name for tables and folder names.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MlpSieve(_) => "sieve",
            Self::BasicMlp(_) => "basic",
            Self::Transformer(_) => "transformer",
        }
    }

    /// Check sizes.
    pub fn validate(&self) -> Result<(), TrainError> {
        match self {
            Self::MlpSieve(c) => c.validate(),
            Self::BasicMlp(c) => c.validate(),
            Self::Transformer(c) => c.validate(),
        }
    }

    /// Build for `frames` observation frames of `frame_embedding` values and
    /// actions of length `action`.
    pub fn init<B: Backend>(
        &self,
        frames: usize,
        frame_embedding: usize,
        action: usize,
        device: &B::Device,
    ) -> Head<B> {
        let e = frames * frame_embedding;
        match self {
            Self::MlpSieve(c) => Head::Sieve(c.init(e, action, device)),
            Self::BasicMlp(c) => Head::Basic(c.init(e, action, device)),
            Self::Transformer(c) => {
                Head::Transformer(c.init(frames, frame_embedding, action, device))
            }
        }
    }
}

/// The network after the encoder.
// A policy holds exactly one head; the size difference between variants is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Head<B: Backend> {
    /// MLP Sieve denoiser: (embedding, a_τ, τ/T) → ε̂.
    Sieve(MlpSieve<B>),
    /// Basic MLP denoiser.
    Basic(BasicMlp<B>),
    /// Transformer denoiser.
    Transformer(TransformerDenoiser<B>),
    /// MSE regression: embedding → action.
    Mse(MseHead<B>),
    /// Discretised baseline: embedding → logits per bin per action value.
    Bins(BinsHead<B>),
    /// K-means (+ residual) baseline: embedding → logits per centre (+ offsets).
    Centres(CentresHead<B>),
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

    /// Build the policy with freshly initialised weights (drawn from the
    /// backend's generator, under the lock of [`with_backend_rng`]).
    /// Parameter ids are numbered in visiting order so that records are
    /// byte-reproducible.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Policy<B> {
        let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        self.build(device)
    }

    /// [`Self::build`] for tests that seed the generator themselves.
    #[cfg(test)]
    pub(crate) fn build_for_tests<B: Backend>(&self, device: &B::Device) -> Policy<B> {
        self.build(device)
    }

    fn build<B: Backend>(&self, device: &B::Device) -> Policy<B> {
        let encoder = self.config.encoder.init(self.obs, device);
        let e = self.embedding_dim();
        let (a, b) = (self.action_dim, &self.config.baseline);
        let head = match self.config.method {
            Method::Diffusion => {
                self.config
                    .denoiser
                    .init(self.frames(), self.frame_embedding(), a, device)
            }
            Method::Mse => Head::Mse(self.config.mse_head.init(e, a, device)),
            Method::Discretised => Head::Bins(b.init_bins(e, a, device)),
            Method::KMeans => Head::Centres(b.init_centres(e, a, false, device)),
            Method::KMeansResidual => Head::Centres(b.init_centres(e, a, true, device)),
        };
        Policy { encoder, head }.map(&mut Renumber(0))
    }
}

/// Serialises every use of the backend's random generator (see
/// [`with_backend_rng`]).
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Seed the backend's generator with `seed` and run `f`, with no other
/// thread drawing from it meanwhile. burn's generator is process-wide, so two
/// threads initialising networks at once (two trainings of `diffbc report`,
/// parallel tests) would otherwise draw each other's numbers.
pub fn with_backend_rng<B: Backend, R>(device: &B::Device, seed: u64, f: impl FnOnce() -> R) -> R {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    B::seed(device, seed);
    f()
}

impl PolicySpec {
    /// Build the policy with the weights `seed` gives, as one step (see
    /// [`with_backend_rng`]). The weights are drawn on the CPU backend and
    /// copied to `device`, so one seed starts every backend (CPU, CUDA,
    /// wgpu) from the same network; `B`'s own generator is then left where
    /// drawing on it would have left it.
    pub fn init_seeded<B: Backend>(&self, device: &B::Device, seed: u64) -> Policy<B> {
        use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
        type Host = burn::backend::NdArray<f32>;
        let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let cpu = Default::default();
        Host::seed(&cpu, seed);
        let host: Policy<Host> = self.build(&cpu);
        B::seed(device, seed);
        let model: Policy<B> = self.build(device);
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = Recorder::<Host>::record(&recorder, host.into_record(), ())
            .expect("a policy record serialises to bytes");
        let record = Recorder::<B>::load(&recorder, bytes, device)
            .expect("a policy record written by the same build loads");
        model.load_record(record)
    }
}

/// Give parameters the ids 0, 1, 2, … in visiting order (burn draws them at random).
pub(crate) struct Renumber(pub(crate) u64);

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

    /// ε̂ (diffusion), the action (MSE) or the scores (discrete baselines)
    /// from embeddings `[rows, E]`, noisy actions `[rows, A]` and time inputs
    /// `[rows, 1]` (the last two are read by denoisers only).
    pub fn head_forward(
        &self,
        embedding: Tensor<B, 2>,
        actions: Tensor<B, 2>,
        t: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        match &self.head {
            Head::Sieve(s) => s.forward(embedding, actions, t),
            Head::Basic(s) => s.forward(embedding, actions, t),
            Head::Transformer(s) => s.forward(embedding, actions, t),
            Head::Mse(m) => m.forward(embedding),
            Head::Bins(h) => h.forward(embedding),
            Head::Centres(h) => h.forward(embedding),
        }
    }

    /// Whether the head is a denoiser (sampled with the diffusion sampler).
    pub fn is_denoiser(&self) -> bool {
        matches!(
            self.head,
            Head::Sieve(_) | Head::Basic(_) | Head::Transformer(_)
        )
    }

    /// How the runtime reads a discrete baseline's scores (`None` for
    /// denoisers and the MSE regressor).
    pub fn decoder(&self) -> Option<ActionDecoder> {
        match &self.head {
            Head::Bins(h) => Some(h.decoder()),
            Head::Centres(h) => Some(h.decoder()),
            Head::Sieve(_) | Head::Basic(_) | Head::Transformer(_) | Head::Mse(_) => None,
        }
    }

    /// Fit what the discrete baselines take from the data before training
    /// (bin ranges, K-means centres) on `actions` (`[rows, A]`, normalised).
    /// Other heads are returned unchanged.
    pub fn fit_to_actions(self, actions: &[f32], config: &BaselineConfig, seed: u64) -> Self {
        let head = match self.head {
            Head::Bins(h) => {
                let a = h.low.val().dims()[0];
                Head::Bins(h.fit(actions, a))
            }
            Head::Centres(h) => {
                let a = h.centres.val().dims()[1];
                Head::Centres(h.fit(actions, a, config.kmeans_iterations, seed))
            }
            other => other,
        };
        Self {
            encoder: self.encoder,
            head,
        }
    }

    /// The discrete baselines' training loss for clean actions `[rows, A]`;
    /// `None` for other heads.
    pub fn classifier_loss(
        &self,
        embedding: Tensor<B, 2>,
        clean: Tensor<B, 2>,
    ) -> Option<Tensor<B, 1>> {
        match &self.head {
            Head::Bins(h) => Some(h.loss(embedding, clean)),
            Head::Centres(h) => Some(h.loss(embedding, clean)),
            Head::Sieve(_) | Head::Basic(_) | Head::Transformer(_) | Head::Mse(_) => None,
        }
    }
}
