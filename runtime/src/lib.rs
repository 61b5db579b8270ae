//! The deployed side of diffbc.
//!
//! This crate holds everything a trained policy needs at run time that is not a
//! network: the noise schedule, the samplers (DDPM, DDIM, Diffusion-X,
//! Diffusion-KDE, classifier-free guidance) and the normalisation of
//! observations and actions. It never links burn: `train` drives the same
//! sampler code with burn modules, and the deployed runtime drives it with ONNX
//! engines, through the [`NoiseModel`] trait.

pub mod normalize;
pub mod sampler;
pub mod schedule;

pub use normalize::{Normalizer, NormalizerError};
pub use sampler::{NoiseModel, Sampler, SamplerConfig, SamplerError, Selection, StepRule};
pub use schedule::{NoiseSchedule, ScheduleConfig, ScheduleError};
