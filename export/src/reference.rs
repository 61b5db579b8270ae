//! Reference policies with seeded, untrained weights, exported through the
//! real export path, so that benchmark figures compare across machines and
//! with other implementations (the weights' values do not change the cost).

use crate::{ExportError, ExportOptions, export_policy};
use burn::backend::NdArray;
use diffbc_runtime::manifest::Manifest;
use diffbc_runtime::manifest::{
    ActionChannel, ActionKind, Channels, Deployment, Interface, ObservationChannel,
};
use diffbc_runtime::{Normalizer, SamplerConfig};
use diffbc_train::TaskDefaults;
use diffbc_train::checkpoint::{CHECKPOINT_FORMAT, CheckpointMeta};
use diffbc_train::config::{Method, TrainConfig};
use diffbc_train::data::ObsSpec;
use diffbc_train::model::{DenoiserConfig, EncoderConfig, MlpSieveConfig, PolicySpec};
use std::path::Path;

/// The reference policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// Kitchen-sized: observation 30 plus 2 previous frames, action 9, MLP
    /// encoder (hidden 256, embedding 128 per frame), MLP Sieve (embedding
    /// 128, hidden 512), T = 50.
    BenchSieve,
    /// Tiny baselines, one per head kind that is not a denoiser (observation
    /// 6 plus 1 previous frame, action 2): the discretised head (bins), the
    /// K-means head with residual offsets (centres), and the MSE regressor.
    /// Their end-to-end golden episodes exercise the classifier decoding
    /// (with uniform draws) and the regressor path of `docs/manifest.md`.
    TinyDiscretised,
    /// See [`Reference::TinyDiscretised`].
    TinyKMeansResidual,
    /// See [`Reference::TinyDiscretised`].
    TinyMse,
}

impl std::str::FromStr for Reference {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|r| r.name()).collect();
                format!("unknown reference model {s:?}; expected one of {names:?}")
            })
    }
}

impl Reference {
    /// Every reference policy.
    pub const ALL: [Self; 4] = [
        Self::BenchSieve,
        Self::TinyDiscretised,
        Self::TinyKMeansResidual,
        Self::TinyMse,
    ];

    /// Folder name under `models/`.
    pub fn name(self) -> &'static str {
        match self {
            Self::BenchSieve => "bench-sieve",
            Self::TinyDiscretised => "tiny-discretised",
            Self::TinyKMeansResidual => "tiny-kmeans-residual",
            Self::TinyMse => "tiny-mse",
        }
    }

    /// The network and data shapes.
    pub fn spec(self) -> PolicySpec {
        match self {
            Self::BenchSieve => {
                let mut config =
                    TrainConfig::for_task(&TaskDefaults::image("claw"), Method::Diffusion);
                config.encoder = EncoderConfig::Mlp {
                    hidden: 256,
                    embed: 128,
                };
                config.denoiser = DenoiserConfig::MlpSieve(MlpSieveConfig {
                    embed: 128,
                    hidden: 512,
                    time_frequency: 1.0,
                });
                config.history = 2;
                config.diffusion.steps = 50;
                config.optim.steps = 0;
                PolicySpec {
                    config,
                    obs: ObsSpec::Vector { dim: 30 },
                    action_dim: 9,
                }
            }
            Self::TinyDiscretised | Self::TinyKMeansResidual | Self::TinyMse => {
                let method = match self {
                    Self::TinyDiscretised => Method::Discretised,
                    Self::TinyKMeansResidual => Method::KMeansResidual,
                    _ => Method::Mse,
                };
                let mut config = TrainConfig::for_task(&TaskDefaults::image("claw"), method);
                config.encoder = EncoderConfig::Mlp {
                    hidden: 16,
                    embed: 8,
                };
                config.mse_head.hidden = 16;
                config.baseline.hidden = 16;
                config.baseline.bins = 5;
                config.baseline.clusters = 4;
                config.history = 1;
                config.optim.steps = 0;
                PolicySpec {
                    config,
                    obs: ObsSpec::Vector { dim: 6 },
                    action_dim: 2,
                }
            }
        }
    }
}

/// Build `reference` with weights drawn from `seed` and export it to `out`.
pub fn export_reference(
    reference: Reference,
    out: &Path,
    seed: u64,
    force: bool,
    weights: diffbc_runtime::WeightFormat,
) -> Result<Manifest, ExportError> {
    let spec = reference.spec();
    let device = Default::default();
    let policy = spec.init_seeded::<NdArray<f32>>(&device, seed);
    let meta = CheckpointMeta {
        format_version: CHECKPOINT_FORMAT,
        crate_version: env!("CARGO_PKG_VERSION").into(),
        step: 0,
        obs: spec.obs,
        action_dim: spec.action_dim,
        obs_normalizer: Normalizer::identity(spec.obs.len()),
        action_normalizer: Normalizer::identity(spec.action_dim),
        train_loss: 0.0,
        interface: Some(synthetic_interface(spec.obs.len(), spec.action_dim)),
    };
    let options = ExportOptions {
        force,
        sampler: SamplerConfig::diffusion_x(8),
        golden_batches: vec![1, 8],
        seed,
        task_label: Some(format!(
            "reference {} (seeded weights, untrained)",
            reference.name()
        )),
        execute: None,
        interface: None,
        samplers: None,
        episode_seed: seed,
        weights,
    };
    export_policy(&spec, &meta, &policy, out, &options, &device)
}

/// Channels of a model no data set trained: positional names, unknown units,
/// host-side sources, the range of a standard normal's bulk (±3, the
/// identity normaliser's units), no control rate.
pub fn synthetic_interface(frame_len: usize, action_dim: usize) -> Interface {
    let observation = (0..frame_len)
        .map(|i| ObservationChannel {
            name: format!("observation[{i}]"),
            unit: "unknown".into(),
            source: format!("observation[{i}]"),
            shape: Vec::new(),
            min: -3.0,
            max: 3.0,
        })
        .collect();
    let action = (0..action_dim)
        .map(|i| ActionChannel {
            name: format!("action[{i}]"),
            unit: "unknown".into(),
            target: format!("action[{i}]"),
            kind: ActionKind::Absolute,
            min: -3.0,
            max: 3.0,
            max_step: None,
        })
        .collect();
    Interface {
        channels: Channels {
            observation,
            action,
        },
        deployment: Deployment::default(),
    }
}
