//! Checkpoints: a folder with the exact config, metadata (normalisation,
//! shapes, step), the inference weights (EMA) and what resuming needs (raw
//! weights and optimiser state).
//!
//! ```text
//! <dir>/config.json   TrainConfig, exactly as trained
//! <dir>/meta.json     CheckpointMeta: format, step, shapes, normalisers
//! <dir>/model.mpk     EMA weights: what sampling, evaluation and export use
//! <dir>/raw.mpk       current training weights (resume)
//! <dir>/optim.mpk     Adam state (resume)
//! ```
//!
//! A checkpoint is written to a sibling temporary folder and renamed into
//! place, so an interrupted save never leaves a half-written checkpoint.

use crate::config::TrainConfig;
use crate::data::ObsSpec;
use crate::error::{TrainError, read_json, write_json};
use crate::model::{Policy, PolicySpec};
use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use diffbc_runtime::Normalizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the checkpoint folder layout.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// The recorder used for every weight file.
pub type Recorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointMeta {
    /// [`CHECKPOINT_FORMAT`] at writing time.
    pub format_version: u32,
    /// Version of diffbc that wrote it.
    pub crate_version: String,
    /// Gradient steps taken.
    pub step: usize,
    /// One observation frame.
    pub obs: ObsSpec,
    /// Action length.
    pub action_dim: usize,
    /// Applied to every observation frame.
    pub obs_normalizer: Normalizer,
    /// Applied to actions (the networks work in normalised units).
    pub action_normalizer: Normalizer,
    /// Smoothed training loss at `step`.
    pub train_loss: f64,
    /// Channels and deployment settings of the training data (absent in
    /// checkpoints written before they were recorded, and for synthetic data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<diffbc_runtime::manifest::Interface>,
}

impl CheckpointMeta {
    /// The policy shape this checkpoint holds.
    pub fn spec(&self, config: &TrainConfig) -> PolicySpec {
        PolicySpec {
            config: config.clone(),
            obs: self.obs,
            action_dim: self.action_dim,
        }
    }
}

/// File names inside a checkpoint.
pub mod files {
    /// Training configuration.
    pub const CONFIG: &str = "config.json";
    /// Metadata.
    pub const META: &str = "meta.json";
    /// EMA weights, without extension (the recorder adds `.mpk`).
    pub const MODEL: &str = "model";
    /// Raw weights.
    pub const RAW: &str = "raw";
    /// Optimiser state.
    pub const OPTIM: &str = "optim";
}

/// What a checkpoint folder may hold, and how one is recognised (its
/// `meta.json` parses as [`CheckpointMeta`] and its `config.json` as a
/// [`TrainConfig`]). Only such a folder is ever replaced by a training run.
pub const KIND: diffbc_runtime::fs::OutputKind = diffbc_runtime::fs::OutputKind {
    what: "a diffbc checkpoint",
    is_dir: true,
    entries: &[
        files::CONFIG,
        files::META,
        "model.mpk",
        "raw.mpk",
        "optim.mpk",
    ],
    recognise: is_checkpoint,
};

fn is_checkpoint(dir: &Path) -> bool {
    read_meta(dir).is_ok()
}

/// Whether a new training run may write its checkpoint into `dir`: absent,
/// empty, or a checkpoint with `force`. A user's folder or file is refused
/// whatever `force` says; nothing is deleted here.
pub fn claim(dir: &Path, force: bool) -> Result<(), TrainError> {
    Ok(diffbc_runtime::fs::claim_output(dir, &KIND, force)?)
}

/// Write a complete checkpoint atomically into `dir`.
///
/// `write_weights` is called with a fresh temporary folder and must write the
/// weight files into it. An existing `dir` is replaced only if it is a
/// checkpoint ([`KIND`]); the caller decides about `force` with [`claim`]
/// before training.
pub fn save(
    dir: &Path,
    config: &TrainConfig,
    meta: &CheckpointMeta,
    write_weights: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    let staged = diffbc_runtime::fs::staging_dir(dir)?;
    write_json(&staged.path().join(files::CONFIG), config)?;
    write_json(&staged.path().join(files::META), meta)?;
    write_weights(staged.path())?;
    diffbc_runtime::fs::replace_dir(staged, dir, &KIND)?;
    Ok(())
}

/// Save one module's weights as `<dir>/<name>.mpk`.
pub fn save_module<B: Backend, M: Module<B>>(
    module: M,
    dir: &Path,
    name: &str,
) -> Result<(), TrainError> {
    let path = dir.join(name);
    module
        .save_file(&path, &Recorder::new())
        .map_err(|e| TrainError::Checkpoint {
            path: path.with_extension("mpk"),
            message: format!("cannot write weights: {e}"),
        })
}

/// Read `config.json` and `meta.json` of a checkpoint, checking the format.
pub fn read_meta(dir: &Path) -> Result<(TrainConfig, CheckpointMeta), TrainError> {
    if !dir.is_dir() {
        return Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            message: "not a checkpoint folder".into(),
        });
    }
    let config = TrainConfig::load(&dir.join(files::CONFIG))?;
    let meta: CheckpointMeta = read_json(&dir.join(files::META))?;
    if meta.format_version != CHECKPOINT_FORMAT {
        return Err(TrainError::Checkpoint {
            path: dir.join(files::META),
            message: format!(
                "format_version {} is not supported (this build reads {CHECKPOINT_FORMAT})",
                meta.format_version
            ),
        });
    }
    meta.obs_normalizer
        .validate(meta.obs.len())
        .map_err(|e| TrainError::Checkpoint {
            path: dir.join(files::META),
            message: format!("obs_normalizer: {e}"),
        })?;
    meta.action_normalizer
        .validate(meta.action_dim)
        .map_err(|e| TrainError::Checkpoint {
            path: dir.join(files::META),
            message: format!("action_normalizer: {e}"),
        })?;
    Ok((config, meta))
}

/// Load weights `<dir>/<name>.mpk` into `module`, checking every tensor's shape.
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    dir: &Path,
    name: &str,
    device: &B::Device,
) -> Result<M, TrainError> {
    let path: PathBuf = dir.join(name);
    let expected = shapes(&module);
    let loaded = module
        .load_file(&path, &Recorder::new(), device)
        .map_err(|e| TrainError::Checkpoint {
            path: path.with_extension("mpk"),
            message: format!("cannot read weights: {e}"),
        })?;
    let got = shapes(&loaded);
    if got != expected {
        let first = expected
            .iter()
            .zip(&got)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.len().min(got.len()));
        return Err(TrainError::Checkpoint {
            path: path.with_extension("mpk"),
            message: format!(
                "weights do not match the config: parameter {first} has shape {:?}, the config builds {:?}",
                got.get(first),
                expected.get(first)
            ),
        });
    }
    Ok(loaded)
}

/// Shapes of every float parameter, in visiting order.
pub fn shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl<B: Backend> burn::module::ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<B, D>>) {
            self.0.push(p.val().dims().to_vec());
        }
    }
    let mut v = Shapes(Vec::new());
    module.visit(&mut v);
    v.0
}

/// Load the inference (EMA) policy of a checkpoint.
pub fn load_policy<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(PolicySpec, CheckpointMeta, Policy<B>), TrainError> {
    let (config, meta) = read_meta(dir)?;
    let spec = meta.spec(&config);
    spec.validate().map_err(|e| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let policy = load_module(spec.init::<B>(device), dir, files::MODEL, device)?;
    Ok((spec, meta, policy))
}
