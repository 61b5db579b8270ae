//! The task worlds: where demonstrations come from, what an observation is,
//! and how a policy is scored. The training library knows no task by name —
//! it takes a task's [`diffbc_train::TaskDefaults`] and data set from here —
//! and every evaluation runs exported graphs through `diffbc_runtime::Policy`.
//!
//! - [`claw`]: the paper's claw-machine scenes (reader, true distribution,
//!   precision / coverage / sliced-W1 evaluation).
//! - [`arm`]: the emulated arm's multi-target task — the world (targets, an
//!   obstacle, the firmware's dynamics), the seeded human-like demonstrator,
//!   the episode runner that drives the same `SimArm`, `ObsLayout` and
//!   `SafetyLayer` as the bridge, and the closed-loop evaluation.
//! - [`pusht`] (feature `pusht`, which links `rapier2d`): Push-T from state —
//!   the environment and its closed-loop evaluation.
//! - [`metrics`], [`plot`], [`pool`]: the distances, figures and work queue
//!   the evaluations share.
//!
//! Features: `train` adds each task's training side (its defaults and its
//! data as a `diffbc_train::data::Dataset`, which links burn) and the
//! figures; `figures` the PNG figures alone (plotters, system fonts); `pusht`
//! the Push-T environment. Without them the crate links neither burn,
//! rapier nor fontconfig, so the deploy binary and an edge board can use the
//! arm task.

pub mod arm;
pub mod claw;
pub mod error;
pub mod metrics;
#[cfg(feature = "figures")]
pub mod plot;
pub mod pool;
#[cfg(feature = "pusht")]
pub mod pusht;
#[cfg(feature = "train")]
pub mod study;

pub use error::{Context, Result, TaskError};

/// The tasks diffbc ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
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
    PushT,
}

impl Task {
    /// Every task (the match in `name` is exhaustive, so a new variant must
    /// be named here too).
    pub const ALL: [Task; 3] = [Task::Claw, Task::Arm, Task::PushT];

    /// Name used on the command line, in file names and in a manifest's
    /// `provenance.task`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Claw => "claw",
            Self::Arm => "arm",
            Self::PushT => "pusht",
        }
    }

    /// The task named `name` (as [`Task::name`] writes it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Default data, relative to the project root (`--data` overrides it).
    pub fn default_data(self) -> &'static str {
        match self {
            Self::Claw => "../shared/data/claw",
            // Written by `diffbc demos --task arm` (or the arm pipeline).
            Self::Arm => "data/arm.demos",
            // Read in place; never copied into the repository.
            Self::PushT => "../shared/data/pusht/pusht_cchi_v7_replay.zarr",
        }
    }

    /// What training on this task starts from.
    #[cfg(feature = "train")]
    pub fn train_defaults(self) -> diffbc_train::TaskDefaults {
        use diffbc_train::TaskDefaults;
        use diffbc_train::model::{DenoiserConfig, MlpSieveConfig};
        match self {
            // Standardised actions measured on the claw scenes (8,000 steps,
            // Diffusion-X M = 8): 0.920 on-object, min-max 0.913, raw [0, 1]
            // (the paper's code) 0.898. 20,000 steps: about 11 minutes on
            // one core of a 2-core machine.
            Self::Claw => TaskDefaults {
                steps: 20_000,
                ..TaskDefaults::image(self.name())
            },
            Self::Arm => TaskDefaults {
                steps: 12_000,
                ..TaskDefaults::vector(self.name())
            },
            // Push-T predicts 16 actions and executes 8 (Diffusion Policy's
            // receding horizon). Its schedule: with the paper's (β up to
            // 0.02) ᾱ_T = 0.6 leaves 0.77 of the clean action in x_T, and
            // sampling starts from N(0, I): for a 2-value action that
            // mismatch washes out, for a 32-value chunk whose values move
            // together it does not (measured: 0.06 mean max coverage after
            // 10,000 steps, chunks drifting toward the data mean). β up to
            // 0.2 brings ᾱ_T to 0.007 and the same run scored 0.47 after
            // 4,000 steps. A 32-value chunk gets wider hidden layers.
            Self::PushT => TaskDefaults {
                diffusion: diffbc_runtime::ScheduleConfig {
                    beta_max: 0.2,
                    ..diffbc_runtime::ScheduleConfig::default()
                },
                chunk: diffbc_runtime::manifest::ActionChunk {
                    horizon: 16,
                    execute: 8,
                },
                denoiser: DenoiserConfig::MlpSieve(MlpSieveConfig {
                    hidden: 512,
                    ..MlpSieveConfig::default()
                }),
                steps: 36_000,
                ..TaskDefaults::vector(self.name())
            },
        }
    }

    /// The training samples of this task from `data` (a folder or file, as
    /// `--data` names it), shaped for `config` (history, chunk horizon;
    /// the claw's sample count and seed). `keys` choose the features of a
    /// LeRobot or zarr data set.
    #[cfg(feature = "train")]
    pub fn dataset(
        self,
        config: &diffbc_train::TrainConfig,
        data: &std::path::Path,
        keys: &diffbc_train::keys::FeatureKeys,
    ) -> Result<diffbc_train::data::Dataset> {
        match self {
            Self::Claw => {
                if !keys.is_default() {
                    return Err(TaskError::invalid(
                        "--obs-keys / --action-key choose features of LeRobot or zarr data; the claw scenes have none",
                    ));
                }
                let scenes = claw::ClawScenes::load(data)?;
                Ok(scenes.dataset(config.data.samples, config.seed))
            }
            Self::Arm => {
                if !data.exists() {
                    return Err(TaskError::invalid(format!(
                        "{}: no demonstrations there; generate them with `diffbc demos --task arm --out {}`",
                        data.display(),
                        data.display()
                    )));
                }
                let episodes = diffbc_train::episodes::Episodes::load_with(data, keys)?;
                Ok(episodes.to_chunked_dataset(config.history, config.chunk.horizon))
            }
            #[cfg(feature = "pusht")]
            Self::PushT => {
                let episodes = pusht::load_demos_with(data, keys)?;
                Ok(episodes.to_chunked_dataset(config.history, config.chunk.horizon))
            }
            #[cfg(not(feature = "pusht"))]
            Self::PushT => Err(TaskError::invalid(
                "Push-T needs diffbc-tasks' `pusht` feature",
            )),
        }
    }

    /// How a checkpoint of this task is exported for evaluation: the
    /// manifest's default sampler is the task's (each evaluated row sets its
    /// own), an exported model already there is replaced.
    #[cfg(feature = "train")]
    pub fn export_options(self) -> diffbc_export::ExportOptions {
        use diffbc_runtime::SamplerConfig;
        let (sampler, task_label) = match self {
            Self::Claw => (SamplerConfig::diffusion_x(8), None),
            Self::Arm => (
                SamplerConfig::diffusion_x(arm::report::EXTRA_STEPS),
                Some("arm".to_string()),
            ),
            // Push-T's default M, `pusht::EXTRA_STEPS` (the `pusht` feature).
            Self::PushT => (SamplerConfig::diffusion_x(8), None),
        };
        diffbc_export::ExportOptions {
            force: true,
            sampler,
            task_label,
            ..Default::default()
        }
    }

    /// Export `checkpoint` to `out` with [`Task::export_options`]; returns `out`.
    #[cfg(feature = "train")]
    pub fn export(
        self,
        checkpoint: &std::path::Path,
        out: &std::path::Path,
    ) -> Result<std::path::PathBuf> {
        // One line: the export error names the file already.
        diffbc_export::export_checkpoint::<burn::backend::NdArray<f32>>(
            checkpoint,
            out,
            &self.export_options(),
            &Default::default(),
        )
        .context_with(|| format!("exporting {}", checkpoint.display()))?;
        Ok(out.to_path_buf())
    }

    /// The exported folder for `dir`: itself if it holds a manifest, else the
    /// checkpoint exported into `scratch/<its name>`. Evaluations measure the
    /// deployed path.
    #[cfg(feature = "train")]
    pub fn exported(
        self,
        dir: &std::path::Path,
        scratch: &std::path::Path,
    ) -> Result<std::path::PathBuf> {
        if dir.join(diffbc_runtime::manifest::MANIFEST_FILE).is_file() {
            return Ok(dir.to_path_buf());
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        self.export(dir, &scratch.join(name))
    }

    /// The default training configuration of `method` on this task.
    #[cfg(feature = "train")]
    pub fn train_config(self, method: diffbc_train::Method) -> diffbc_train::TrainConfig {
        diffbc_train::TrainConfig::for_task(&self.train_defaults(), method)
    }
}

/// What an exported folder is, for evaluation tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelKind {
    /// The manifest's `provenance.method` (`diffusion`, `mse`, `discretised`, …).
    pub method: String,
    /// For heads that decide without the sampler, the label of their
    /// decision (`-` for a regressor, the choice rule for a classifier);
    /// `None` for a denoiser, which is evaluated with each sampler.
    pub direct: Option<String>,
}

impl ModelKind {
    /// Read what `dir` holds from its manifest.
    pub fn read(dir: &std::path::Path) -> Result<Self> {
        use diffbc_runtime::manifest::HeadKind;
        let (m, _) = diffbc_runtime::policy::read_manifest(dir)
            .context_with(|| format!("loading {}", dir.display()))?;
        let direct = match m.head_kind {
            HeadKind::Denoiser => None,
            HeadKind::Regressor => Some("-".to_string()),
            HeadKind::Classifier => Some(
                m.decoder
                    .as_ref()
                    .map_or("sample", |d| d.choice.name())
                    .to_string(),
            ),
        };
        Ok(ModelKind {
            method: m.provenance.method,
            direct,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in Task::ALL {
            assert_eq!(Task::from_name(t.name()), Some(t));
        }
        assert_eq!(Task::from_name("push-t"), None);
    }

    #[cfg(feature = "pusht")]
    #[test]
    fn push_t_exports_with_its_evaluation_sampler() {
        assert_eq!(
            Task::PushT.export_options().sampler,
            diffbc_runtime::SamplerConfig::diffusion_x(pusht::EXTRA_STEPS)
        );
    }

    /// The defaults each task trained its shipped models with: a change here
    /// changes what `diffbc train --task X` produces.
    #[cfg(feature = "train")]
    #[test]
    fn training_defaults_are_the_shipped_models_settings() {
        use diffbc_train::Method;
        use diffbc_train::model::{DenoiserConfig, EncoderConfig};
        let claw = Task::Claw.train_config(Method::Diffusion);
        assert_eq!(
            (claw.task.as_str(), claw.history, claw.optim.steps),
            ("claw", 0, 20_000)
        );
        assert!(
            matches!(claw.encoder, EncoderConfig::Cnn { ref layers, embed: 128 } if layers.len() == 3)
        );
        let arm = Task::Arm.train_config(Method::Mse);
        assert_eq!((arm.history, arm.optim.steps), (2, 3_000));
        assert!(arm.chunk.is_single());
        let p = Task::PushT.train_config(Method::Diffusion);
        assert_eq!(
            (p.chunk.horizon, p.chunk.execute, p.optim.steps),
            (16, 8, 36_000)
        );
        assert_eq!(p.diffusion.beta_max, 0.2);
        assert!(matches!(p.denoiser, DenoiserConfig::MlpSieve(ref s) if s.hidden == 512));
        for t in Task::ALL {
            for m in Method::ALL {
                t.train_config(m).validate().expect("valid");
            }
        }
    }
}
