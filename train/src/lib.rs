//! diffbc training.
//!
//! This crate holds the **one** definition of every network diffbc trains
//! (observation encoders, denoisers, baseline heads), the data set readers
//! and the training loop. It knows no task by name: a task hands it a
//! [`TaskDefaults`] and a [`data::Dataset`] (`diffbc-tasks` does, for claw,
//! arm and Push-T), and evaluation runs the exported graphs through
//! `diffbc_runtime::Policy`. Library code is generic over
//! burn's `Backend` / `AutodiffBackend`; the concrete backend is chosen by the
//! `diffbc` binary. Sampling always goes through `diffbc_runtime::Sampler`,
//! the same code the deployed runtime uses.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod episodes;
pub mod error;
pub mod infer;
pub mod interface;
pub mod keys;
pub mod kmeans;
pub mod lerobot;
pub mod model;
pub mod modes;
pub mod train;

pub use config::{Method, TaskDefaults, TrainConfig};
pub use error::TrainError;
