//! The deployed side of diffbc.
//!
//! This crate holds everything a trained policy needs at run time that is not a
//! network: the noise schedule, the samplers (DDPM, DDIM, Diffusion-X,
//! Diffusion-KDE, classifier-free guidance) and the normalisation of
//! observations and actions. It never links burn: `train` drives the same
//! sampler code with burn modules, and the deployed runtime drives it with ONNX
//! engines, through the [`NoiseModel`] trait.
//!
//! It also loads exported policy folders ([`manifest`], [`OnnxPolicy`]) and
//! runs their graphs with tract ([`engine`]).

pub mod engine;
pub mod golden;
pub mod manifest;
pub mod normalize;
pub mod policy;
pub mod sampler;
pub mod schedule;

pub use normalize::{Normalizer, NormalizerError};
pub use policy::{EngineChoice, OnnxPolicy, PolicyError};
pub use sampler::{NoiseModel, Sampler, SamplerConfig, SamplerError, Selection, StepRule};
pub use schedule::{NoiseSchedule, ScheduleConfig, ScheduleError};
