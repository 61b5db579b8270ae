//! diffbc training.
//!
//! This crate holds the **one** definition of every network diffbc trains
//! (observation encoders, denoisers, baseline heads), the data sets, the
//! training loop and the evaluation harness. Library code is generic over
//! burn's `Backend` / `AutodiffBackend`; the concrete backend is chosen by the
//! `diffbc` binary. Sampling always goes through `diffbc_runtime::Sampler`,
//! the same code the deployed runtime uses.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod episodes;
pub mod error;
pub mod eval;
pub mod infer;
pub mod interface;
pub mod keys;
pub mod kmeans;
pub mod lerobot;
pub mod model;
pub mod plot;
pub mod task;
pub mod train;

pub use config::{Method, TrainConfig};
pub use error::TrainError;
