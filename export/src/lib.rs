//! ONNX export of diffbc policies.
//!
//! A checkpoint becomes a folder the runtime can run without burn (see
//! `diffbc_runtime::manifest`): `encoder.onnx`, `denoiser.onnx` (or `regressor.onnx`), `manifest.json`
//! and `golden/`. The graphs are produced by walking the very modules `train`
//! defines — every layer type emits its own ONNX nodes from its own weights
//! ([`ToOnnx`]) — so there is no second definition of any network.
//!
//! The protobuf is written with the ONNX messages of
//! `diffbc_runtime::onnx` (prost), the same definitions the native engine
//! reads them with.

mod export;
mod graph;
mod layers;
mod reference;

pub use export::{
    ExportError, ExportOptions, default_samplers, episode_plan, export_checkpoint, export_policy,
    record_episodes, reduce, upgrade,
};
pub use graph::GraphBuilder;
pub use layers::ToOnnx;
pub use reference::{Reference, export_reference, synthetic_interface};

#[cfg(test)]
mod tests;
