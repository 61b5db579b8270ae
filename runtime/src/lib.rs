//! The deployed side of diffbc.
//!
//! This crate holds everything a trained policy needs at run time that is not a
//! network: the noise schedule, the samplers (DDPM, DDIM, Diffusion-X,
//! Diffusion-KDE, classifier-free guidance) and the normalisation of
//! observations and actions. It never links burn: `train` drives the same
//! sampler code with burn modules, and the deployed runtime drives it with ONNX
//! engines, through the [`NoiseModel`] trait.
//!
//! It also loads exported policy folders ([`manifest`], [`OnnxModel`]) and
//! runs their graphs on one of three engines ([`engine`]): diffbc's own
//! allocation-free [`native`] engine, tract (feature `tract`, on by default)
//! and ONNX Runtime (feature `ort`). The ONNX file format itself is [`onnx`].

pub mod decode;
pub mod engine;
pub mod fs;
pub mod golden;
pub mod manifest;
pub mod native;
pub mod normalize;
pub mod onnx;
#[cfg(feature = "ort")]
pub mod ort_engine;
pub mod policy;
pub mod replay;
pub mod sampler;
pub mod schedule;
#[cfg(feature = "tract")]
pub mod tract_engine;
pub mod weights;

pub use decode::{ActionDecoder, Choice, DecodeScheme};
pub use engine::ExecutionProvider;
pub use fs::FileError;
pub use normalize::{Normalizer, NormalizerError};
pub use policy::{EngineChoice, OnnxModel, Policy, PolicyError, PolicyOptions, Steering};
pub use sampler::{
    DEFAULT_KDE_BANDWIDTH, Noise, NoiseModel, NoiseRecorder, NoiseTape, Sampler, SamplerConfig,
    SamplerError, Selection, StepRule,
};
pub use schedule::{NoiseSchedule, ScheduleConfig, ScheduleError};
pub use weights::WeightFormat;
