//! Typed training configuration. Every choice is an enum or a number; the
//! JSON form rejects unknown fields, and [`TrainConfig::validate`] names the
//! offending field.

use crate::error::TrainError;
use crate::model::{BaselineConfig, DenoiserConfig, EncoderConfig, MseHeadConfig};
use diffbc_runtime::manifest::ActionChunk;
use diffbc_runtime::{NoiseSchedule, ScheduleConfig};
use serde::{Deserialize, Serialize};

/// What the policy learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Diffusion BC: a DDPM over the action, conditioned on the observation.
    Diffusion,
    /// MSE regression of the action (the paper's main baseline).
    Mse,
    /// Uniform bins per action value, independent cross-entropy.
    Discretised,
    /// Cross-entropy over K-means centres of the training actions.
    #[serde(rename = "kmeans")]
    KMeans,
    /// K-means plus a regressed offset to the chosen centre (Behaviour Transformer).
    #[serde(rename = "kmeans_residual")]
    KMeansResidual,
}

impl Method {
    /// Every method, for harnesses that must cover them all (export tests,
    /// evaluation grids). The match in `name` is exhaustive, so a new variant
    /// must be named here too.
    pub const ALL: [Method; 5] = [
        Method::Diffusion,
        Method::Mse,
        Method::Discretised,
        Method::KMeans,
        Method::KMeansResidual,
    ];

    /// The baselines the paper compares diffusion against.
    pub const BASELINES: [Method; 4] = [
        Method::Mse,
        Method::Discretised,
        Method::KMeans,
        Method::KMeansResidual,
    ];

    /// Lower-case name used in tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Diffusion => "diffusion",
            Self::Mse => "mse",
            Self::Discretised => "discretised",
            Self::KMeans => "kmeans",
            Self::KMeansResidual => "kmeans-residual",
        }
    }
}

/// How actions are mapped to the networks' units (and back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionScaling {
    /// Zero mean, unit standard deviation per dimension.
    Standardize,
    /// Each dimension's range mapped to [-1, 1] (Diffusion Policy's choice).
    MinMax,
    /// Raw units.
    None,
}

/// Optimiser and schedule of the learning rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Gradient steps.
    pub steps: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Peak learning rate of Adam.
    pub lr: f64,
    /// Learning rate at the last step (cosine decay from `lr`).
    pub lr_min: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Clip each parameter tensor's gradient to this norm (`null` = off;
    /// burn 0.21 clips tensor by tensor, not the global norm).
    pub grad_clip: Option<f32>,
    /// Decay of the exponential moving average of the weights (0 = off).
    pub ema_decay: f64,
}

/// Data set drawn for a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Number of (observation, action) pairs drawn.
    pub samples: usize,
    /// Fraction held out as the test split.
    pub test_fraction: f64,
}

/// What a task decides before a user's config does: the settings that suit
/// its observations and actions. The tasks themselves (their data, worlds and
/// numbers) live in `diffbc-tasks`; the training library only knows these.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDefaults {
    /// The task's name (tables, progress, provenance).
    pub name: String,
    /// The encoder that suits its observations.
    pub encoder: EncoderConfig,
    /// The denoiser that suits its action vector.
    pub denoiser: DenoiserConfig,
    /// Its noise schedule.
    pub diffusion: ScheduleConfig,
    /// Previous observation frames fed with the current one.
    pub history: usize,
    /// Actions predicted and executed per decision.
    pub chunk: ActionChunk,
    /// How actions are scaled.
    pub action_scaling: ActionScaling,
    /// Training steps of the diffusion policy (baselines train a quarter).
    pub steps: usize,
}

impl TaskDefaults {
    /// Defaults for a flat observation vector: an MLP encoder, two frames of
    /// history, single-step actions, the paper's schedule and sieve.
    pub fn vector(name: &str) -> Self {
        Self {
            name: name.into(),
            encoder: EncoderConfig::Mlp {
                hidden: 256,
                embed: 128,
            },
            denoiser: DenoiserConfig::default(),
            diffusion: ScheduleConfig::default(),
            history: 2,
            chunk: ActionChunk::SINGLE,
            action_scaling: ActionScaling::Standardize,
            steps: 12_000,
        }
    }

    /// Defaults for a `[3, 64, 64]`-sized RGB image: the paper's CNN encoder
    /// (patches 4, 2, 2), no history, single-step actions.
    pub fn image(name: &str) -> Self {
        use crate::model::ConvLayerConfig;
        let conv = |channels, patch| ConvLayerConfig { channels, patch };
        Self {
            encoder: EncoderConfig::Cnn {
                layers: vec![conv(32, 4), conv(64, 2), conv(64, 2)],
                embed: 128,
            },
            history: 0,
            steps: 20_000,
            ..Self::vector(name)
        }
    }
}

/// A complete, reproducible training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The task the data come from (a name for tables, progress and the
    /// manifest's provenance; what a task implies is already in the fields
    /// below, set from its [`TaskDefaults`]).
    pub task: String,
    /// Diffusion policy or baseline.
    pub method: Method,
    /// Observation encoder, shared by every head.
    pub encoder: EncoderConfig,
    /// Denoiser (used when `method` is `diffusion`).
    pub denoiser: DenoiserConfig,
    /// Regression head (used when `method` is `mse`).
    pub mse_head: MseHeadConfig,
    /// Discrete baseline heads (`discretised`, `kmeans`, `kmeans_residual`);
    /// absent = the paper's sizes.
    #[serde(default)]
    pub baseline: BaselineConfig,
    /// Noise schedule (T, β range).
    pub diffusion: ScheduleConfig,
    /// Previous observations fed with the current one (k).
    pub history: usize,
    /// Actions predicted per decision and executed before the next one
    /// (single-step unless the task says otherwise; absent = single-step).
    #[serde(default)]
    pub chunk: ActionChunk,
    /// Probability of dropping the observation embedding during training
    /// (classifier-free guidance needs > 0).
    pub obs_dropout: f64,
    /// Probability of setting a sample's `mode[k]` observation channels to 0
    /// (no mode given) during training, so one network is both the
    /// mode-conditional and the unconditional policy that steering
    /// contrasts. Only meaningful for data with mode channels
    /// (`diffbc modes`); absent = 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode_dropout: f64,
    /// Probability of widening a sample's mode input (when not dropped) to
    /// a random set of modes that holds its own: every other mode's channel
    /// is set to 1 with probability 1/2. The network then also reads a
    /// multi-hot input as "act like one of these modes", the condition
    /// that steering away from a mode by exclusion asks for (manifest
    /// convention `mode_input: set`). Absent = 0 (one-hot inputs only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode_sets: f64,
    /// How actions are scaled before the networks see them. This sets the
    /// data's scale against the fixed noise schedule: the paper's claw code
    /// feeds raw actions in [0, 1] (`none`).
    pub action_scaling: ActionScaling,
    /// Data set size and split.
    pub data: DataConfig,
    /// Optimiser.
    pub optim: OptimConfig,
    /// Save a checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: usize,
    /// Seed of every random choice: data draw, initialisation, batches, noise.
    pub seed: u64,
}

impl TrainConfig {
    /// The default configuration for a task's defaults and a method.
    pub fn for_task(task: &TaskDefaults, method: Method) -> Self {
        let (steps, lr) = match method {
            // 3e-3 with warm-up and cosine decay: on the claw scenes it reached
            // at 8,000 steps what 1e-3 reached at 16,000.
            Method::Diffusion => (task.steps, 3e-3),
            Method::Mse | Method::Discretised | Method::KMeans | Method::KMeansResidual => {
                (task.steps / 4, 3e-3)
            }
        };
        Self {
            task: task.name.clone(),
            method,
            encoder: task.encoder.clone(),
            denoiser: task.denoiser.clone(),
            mse_head: MseHeadConfig::default(),
            baseline: BaselineConfig::default(),
            diffusion: task.diffusion,
            history: task.history,
            chunk: task.chunk,
            obs_dropout: 0.0,
            mode_dropout: 0.0,
            mode_sets: 0.0,
            action_scaling: task.action_scaling,
            data: DataConfig {
                samples: 20_000,
                test_fraction: 0.1,
            },
            optim: OptimConfig {
                steps,
                batch_size: 256,
                lr,
                lr_min: lr * 0.05,
                warmup_steps: 200,
                grad_clip: Some(1.0),
                ema_decay: 0.995,
            },
            checkpoint_every: 2000,
            seed: 0,
        }
    }

    /// Check every value; the error names the field.
    pub fn validate(&self) -> Result<(), TrainError> {
        NoiseSchedule::new(&self.diffusion).map_err(|e| {
            let msg = e.to_string();
            let field = msg
                .split_whitespace()
                .next()
                .unwrap_or("diffusion")
                .to_string();
            TrainError::config(field, msg)
        })?;
        let positive = [
            ("optim.steps", self.optim.steps),
            ("optim.batch_size", self.optim.batch_size),
            ("data.samples", self.data.samples),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(TrainError::config(field, "must be at least 1"));
            }
        }
        if !(self.optim.lr > 0.0 && self.optim.lr.is_finite()) {
            return Err(TrainError::config(
                "optim.lr",
                format!("must be positive, got {}", self.optim.lr),
            ));
        }
        if !(self.optim.lr_min >= 0.0 && self.optim.lr_min <= self.optim.lr) {
            return Err(TrainError::config(
                "optim.lr_min",
                "must be in [0, optim.lr]",
            ));
        }
        if !(0.0..1.0).contains(&self.optim.ema_decay) {
            return Err(TrainError::config("optim.ema_decay", "must be in [0, 1)"));
        }
        if let Some(c) = self.optim.grad_clip
            && (c.is_nan() || c <= 0.0)
        {
            return Err(TrainError::config(
                "optim.grad_clip",
                "must be positive or null",
            ));
        }
        self.chunk
            .validate()
            .map_err(|m| TrainError::config("chunk", m))?;
        if !(0.0..1.0).contains(&self.obs_dropout) {
            return Err(TrainError::config("obs_dropout", "must be in [0, 1)"));
        }
        if !(0.0..1.0).contains(&self.mode_dropout) {
            return Err(TrainError::config("mode_dropout", "must be in [0, 1)"));
        }
        if !(0.0..=1.0).contains(&self.mode_sets) {
            return Err(TrainError::config("mode_sets", "must be in [0, 1]"));
        }
        if !(0.0..1.0).contains(&self.data.test_fraction) {
            return Err(TrainError::config(
                "data.test_fraction",
                "must be in [0, 1)",
            ));
        }
        self.encoder.validate()?;
        self.denoiser.validate()?;
        self.mse_head.validate()?;
        self.baseline.validate()?;
        Ok(())
    }

    /// Load from JSON, rejecting unknown fields, then validate.
    pub fn load(path: &std::path::Path) -> Result<Self, TrainError> {
        let cfg: Self = crate::error::read_json(path)?;
        cfg.validate().map_err(|e| match e {
            TrainError::Config { field, message } => TrainError::Json {
                path: path.to_path_buf(),
                message: format!("field {field}: {message}"),
            },
            other => other,
        })?;
        Ok(cfg)
    }
}

/// `skip_serializing_if` for settings whose absence means 0 (configs
/// written before the setting existed stay byte-identical).
fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_configs_validate_and_round_trip() {
        for task in [TaskDefaults::vector("v"), TaskDefaults::image("i")] {
            for m in Method::ALL {
                let c = TrainConfig::for_task(&task, m);
                c.validate().expect("valid");
                let s = serde_json::to_string(&c).expect("ser");
                let back: TrainConfig = serde_json::from_str(&s).expect("de");
                assert_eq!(back, c);
            }
        }
    }

    #[test]
    fn a_config_without_chunk_is_single_step_and_a_bad_chunk_is_named() {
        let c = TrainConfig::for_task(&TaskDefaults::vector("arm"), Method::Diffusion);
        let mut v = serde_json::to_value(&c).expect("ser");
        v.as_object_mut().expect("object").remove("chunk");
        let back: TrainConfig = serde_json::from_value(v).expect("de");
        assert!(back.chunk.is_single());

        let mut bad = TrainConfig::for_task(&TaskDefaults::vector("pusht"), Method::Diffusion);
        bad.chunk = ActionChunk {
            horizon: 16,
            execute: 8,
        };
        bad.chunk.execute = bad.chunk.horizon + 1;
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("chunk.execute"), "{e}");
    }

    #[test]
    fn unknown_field_and_zero_steps_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = TrainConfig::for_task(&TaskDefaults::image("claw"), Method::Diffusion);
        let mut v = serde_json::to_value(&c).expect("ser");
        v["optim"]["learning_rate_typo"] = serde_json::json!(0.1);
        let p = dir.path().join("bad.json");
        std::fs::write(&p, v.to_string()).expect("write");
        let e = TrainConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.json") && e.contains("learning_rate_typo"),
            "{e}"
        );

        let mut v = serde_json::to_value(&c).expect("ser");
        v["diffusion"]["steps"] = serde_json::json!(0);
        std::fs::write(&p, v.to_string()).expect("write");
        let e = TrainConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.json") && e.contains("diffusion.steps"),
            "{e}"
        );
    }
}
