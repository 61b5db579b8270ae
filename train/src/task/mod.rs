//! Tasks: where the demonstrations come from and what an observation is.

pub mod claw;

use crate::model::{ConvLayerConfig, EncoderConfig};
use serde::{Deserialize, Serialize};

/// The tasks diffbc knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// The paper's claw-machine scenes: a 64×64 RGB image, a 2-D action
    /// uniformly distributed over the objects in the image.
    Claw,
    /// The emulated arm's multi-target task: joint positions, velocities and
    /// the targets already reached; the action is one joint target per joint
    /// at the control rate (demonstrations from `diffbc demos`).
    Arm,
    /// Push-T from state (Chi et al.'s human teleoperation demonstrations):
    /// agent x, y and block x, y, angle in a 512×512 arena; the action is the
    /// commanded agent position. Trained on action chunks.
    #[serde(rename = "pusht")]
    PushT,
}

impl TaskKind {
    /// Every task (the match in `name` is exhaustive, so a new variant must be
    /// named here too).
    pub const ALL: [TaskKind; 3] = [TaskKind::Claw, TaskKind::Arm, TaskKind::PushT];

    /// Name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Claw => "claw",
            Self::Arm => "arm",
            Self::PushT => "pusht",
        }
    }

    /// The encoder that suits this task's observations.
    pub fn default_encoder(self) -> EncoderConfig {
        match self {
            Self::Claw => EncoderConfig::Cnn {
                layers: vec![
                    ConvLayerConfig {
                        channels: 32,
                        patch: 4,
                    },
                    ConvLayerConfig {
                        channels: 64,
                        patch: 2,
                    },
                    ConvLayerConfig {
                        channels: 64,
                        patch: 2,
                    },
                ],
                embed: 128,
            },
            Self::Arm | Self::PushT => EncoderConfig::Mlp {
                hidden: 256,
                embed: 128,
            },
        }
    }

    /// How actions are scaled by default.
    pub fn default_action_scaling(self) -> crate::config::ActionScaling {
        match self {
            // Measured on the claw scenes (8,000 steps, Diffusion-X M = 8):
            // standardised 0.920 on-object, min-max 0.913, raw [0, 1] (the
            // paper's code) 0.898.
            Self::Claw | Self::Arm | Self::PushT => crate::config::ActionScaling::Standardize,
        }
    }

    /// Previous observation frames fed with the current one by default.
    pub fn default_history(self) -> usize {
        match self {
            Self::Claw => 0,
            Self::Arm | Self::PushT => 2,
        }
    }

    /// Action chunking by default: Push-T predicts 16 actions and executes 8
    /// (Diffusion Policy's receding horizon); the others decide every tick.
    pub fn default_chunk(self) -> diffbc_runtime::manifest::ActionChunk {
        match self {
            Self::Claw | Self::Arm => diffbc_runtime::manifest::ActionChunk::SINGLE,
            Self::PushT => diffbc_runtime::manifest::ActionChunk {
                horizon: 16,
                execute: 8,
            },
        }
    }

    /// The noise schedule by default: the paper's (T = 50, β from 1e-4 to
    /// 0.02) except on Push-T. There ᾱ_T = 0.6 leaves 0.77 of the clean
    /// action in x_T, and sampling starts from N(0, I): for a 2-value action
    /// that mismatch washes out, for a 32-value chunk whose values move
    /// together it does not (measured: 0.06 mean max coverage after 10,000
    /// steps, chunks drifting toward the data mean). β up to 0.2 brings ᾱ_T to
    /// 0.007 and the same run scored 0.47 after 4,000 steps.
    pub fn default_schedule(self) -> diffbc_runtime::ScheduleConfig {
        match self {
            Self::Claw | Self::Arm => diffbc_runtime::ScheduleConfig::default(),
            Self::PushT => diffbc_runtime::ScheduleConfig {
                beta_max: 0.2,
                ..diffbc_runtime::ScheduleConfig::default()
            },
        }
    }

    /// The denoiser that suits this task's action vector.
    pub fn default_denoiser(self) -> crate::model::DenoiserConfig {
        use crate::model::{DenoiserConfig, MlpSieveConfig};
        match self {
            Self::Claw | Self::Arm => DenoiserConfig::default(),
            // A 16-action chunk is a 32-value vector: wider hidden layers.
            Self::PushT => DenoiserConfig::MlpSieve(MlpSieveConfig {
                hidden: 512,
                ..MlpSieveConfig::default()
            }),
        }
    }

    /// Default number of training steps of the diffusion policy.
    pub fn default_steps(self) -> usize {
        match self {
            // About 11 minutes on one core of a 2-core machine.
            Self::Claw => 20_000,
            Self::Arm => 12_000,
            Self::PushT => 36_000,
        }
    }

    /// Default data folder, relative to the project root.
    pub fn default_data_dir(self) -> &'static str {
        match self {
            Self::Claw => "../shared/data/claw",
            // Written by `diffbc demos --task arm` (or the arm pipeline).
            Self::Arm => "data/arm.demos",
            // Read in place; never copied into the repository.
            Self::PushT => "../shared/data/pusht/pusht_cchi_v7_replay.zarr",
        }
    }
}

/// The shape of one observation frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ObsSpec {
    /// A flat vector.
    Vector {
        /// Its length.
        dim: usize,
    },
    /// A channel-major image `[channels, height, width]`, values in [0, 1].
    Image {
        /// Colour channels.
        channels: usize,
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
}

impl ObsSpec {
    /// Number of values in one frame.
    pub fn len(&self) -> usize {
        match *self {
            Self::Vector { dim } => dim,
            Self::Image {
                channels,
                height,
                width,
            } => channels * height * width,
        }
    }

    /// Whether a frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Features that share normalisation statistics (a channel's pixels).
    pub fn norm_group(&self) -> usize {
        match *self {
            Self::Vector { .. } => 1,
            Self::Image { height, width, .. } => height * width,
        }
    }
}
