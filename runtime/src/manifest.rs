//! `manifest.json`: the only contract between export and runtime.
//!
//! An exported policy is a folder:
//!
//! ```text
//! manifest.json   this file
//! encoder.onnx    observation (with history, normalised) → embedding
//! denoiser.onnx   diffusion: (embedding, a_τ, τ/T) → ε̂
//!   or regressor.onnx  for the MSE baseline: embedding → action
//!   or classifier.onnx for the discrete baselines: embedding → scores,
//!                      read by the manifest's `decoder`
//! golden/         inputs and the outputs the trainer computed for them
//! ```
//!
//! The runtime checks everything here (format, hashes, tensor names, shapes
//! and types, schedule, normalisation sizes) before it runs anything.

use crate::decode::ActionDecoder;
use crate::normalize::Normalizer;
use crate::sampler::SamplerConfig;
pub use crate::weights::WeightFormat;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the manifest format written by this build. Format 1 (before
/// channels, deployment settings, explicit conventions and end-to-end golden
/// cases) is refused with the command that upgrades it.
pub const MANIFEST_FORMAT: u32 = 2;
/// ONNX opset the graphs use.
pub const OPSET: i64 = 17;
/// ONNX IR version of the graphs (IR 8 goes with opset 17; read by tract and ONNX Runtime).
pub const IR_VERSION: i64 = 8;
/// Name of the manifest file.
pub const MANIFEST_FILE: &str = "manifest.json";

/// What the head graph computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// A denoiser: inputs `embedding`, `action`, `t`; output `eps`. Sampled with [`crate::Sampler`].
    Denoiser,
    /// A regressor: input `embedding`; output `action` (normalised units).
    Regressor,
    /// A classifier: input `embedding`; output `scores`, turned into an
    /// action by the manifest's [`ActionDecoder`].
    Classifier,
}

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    /// 32-bit float.
    F32,
}

/// One dimension of a tensor shape: fixed, or the dynamic batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named dynamic size (always `"batch"` here).
    Symbol(String),
}

/// Name, shape and type of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Tensor name in the graph.
    pub name: String,
    /// Shape; the first dimension is the dynamic batch.
    pub shape: Vec<Dim>,
    /// Element type.
    pub dtype: DType,
}

impl TensorSpec {
    /// A `[batch, width]` f32 tensor.
    pub fn batch_f32(name: &str, width: usize) -> Self {
        Self {
            name: name.into(),
            shape: vec![Dim::Symbol("batch".into()), Dim::Fixed(width)],
            dtype: DType::F32,
        }
    }

    /// Values per batch row (product of the fixed dimensions).
    pub fn row_len(&self) -> usize {
        self.shape
            .iter()
            .map(|d| if let Dim::Fixed(n) = d { *n } else { 1 })
            .product()
    }
}

/// One ONNX graph of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    /// File name inside the folder.
    pub file: String,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    /// Inputs, in order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in order.
    pub outputs: Vec<TensorSpec>,
}

/// The observation the encoder takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationSpec {
    /// Shape of one frame (`[dim]` for vectors, `[channels, height, width]` for images).
    pub frame_shape: Vec<usize>,
    /// Previous frames fed with the current one (k); the encoder input is
    /// `(history + 1) × frame_len` values, oldest frame first.
    pub history: usize,
}

impl ObservationSpec {
    /// Values in one frame.
    pub fn frame_len(&self) -> usize {
        self.frame_shape.iter().product()
    }

    /// Values in one encoder input row.
    pub fn input_len(&self) -> usize {
        (self.history + 1) * self.frame_len()
    }
}

/// Normalisation applied outside the graphs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizationSpec {
    /// Applied to every observation frame before the encoder.
    pub observation: Normalizer,
    /// The head works in normalised action units; undo this on its output.
    pub action: Normalizer,
}

/// The noise schedule, as explicit β values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// T.
    pub steps: usize,
    /// β_1 … β_T.
    pub betas: Vec<f64>,
}

/// How the unconditional (classifier-free guidance) embedding is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnconditionalEmbedding {
    /// The all-zero embedding (what observation dropout trained on).
    Zeros,
}

/// Receding-horizon action chunks (Diffusion Policy's recipe): the head
/// predicts `horizon` consecutive actions at once, and the controller executes
/// the first `execute` of them before it plans again. `horizon = 1` is the
/// paper's single-step policy (a new decision every control tick).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionChunk {
    /// Actions predicted per decision.
    pub horizon: usize,
    /// Actions executed before the next decision (1 ≤ execute ≤ horizon).
    pub execute: usize,
}

impl Default for ActionChunk {
    fn default() -> Self {
        Self::SINGLE
    }
}

impl ActionChunk {
    /// One action per decision.
    pub const SINGLE: Self = Self {
        horizon: 1,
        execute: 1,
    };

    /// Whether this is the single-step policy.
    pub fn is_single(&self) -> bool {
        *self == Self::SINGLE
    }

    /// Check `1 ≤ execute ≤ horizon`; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.horizon == 0 {
            return Err("chunk.horizon must be at least 1".into());
        }
        if self.execute == 0 || self.execute > self.horizon {
            return Err(format!(
                "chunk.execute is {} but must be in 1..={} (the horizon)",
                self.execute, self.horizon
            ));
        }
        Ok(())
    }
}

/// Where the policy came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Task name.
    pub task: String,
    /// Method name (`diffusion`, `mse`, …).
    pub method: String,
    /// Encoder and head architecture, human-readable.
    pub architecture: String,
    /// Gradient steps trained.
    pub training_steps: usize,
    /// Training seed.
    pub seed: u64,
    /// Version of diffbc that exported it.
    pub crate_version: String,
}

/// The network's time input: `t = τ / T` for step τ in 1…T (never τ, never
/// (τ − 1) / T).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TimeInput {
    /// τ / T.
    #[default]
    #[serde(rename = "tau_over_steps")]
    TauOverSteps,
}

/// The variance of the noise a DDPM step adds: σ_τ² = β_τ, and none at τ = 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DdpmVariance {
    /// σ_τ = √β_τ.
    #[default]
    #[serde(rename = "beta")]
    Beta,
}

/// Whether sampled values are clipped anywhere (the predicted clean action,
/// the sample, the action): never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Clipping {
    /// Nothing is clipped.
    #[default]
    #[serde(rename = "none")]
    None,
}

/// How the observation history is filled at an episode's first tick: every
/// slot holds the first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HistoryPadding {
    /// Repeat the first frame.
    #[default]
    #[serde(rename = "repeat_first_frame")]
    RepeatFirstFrame,
}

/// When the observation history advances: on every control tick, including
/// ticks that only hand out the next action of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HistoryAdvance {
    /// Every tick.
    #[default]
    #[serde(rename = "every_tick")]
    EveryTick,
}

/// Layout of a chunk in the action vector: `[a0[0], a0[1], …, a1[0], …]`,
/// the action for the deciding tick first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ChunkLayout {
    /// Time-major.
    #[default]
    #[serde(rename = "time_major")]
    TimeMajor,
}

/// The sampling and control conventions, written out so that a reader never
/// has to guess them. Each has one value in format 2 but `mode_input`
/// (two); a runtime refuses a value it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conventions {
    /// The denoiser's `t` input.
    pub time_input: TimeInput,
    /// The DDPM step variance.
    pub ddpm_variance: DdpmVariance,
    /// Clipping.
    pub clip: Clipping,
    /// History at an episode's first tick.
    pub history_padding: HistoryPadding,
    /// When the history advances.
    pub history_advance: HistoryAdvance,
    /// Chunk layout.
    pub chunk_layout: ChunkLayout,
    /// How the `mode[k]` channels are read; absent means one-hot (every
    /// manifest before mode sets, and every policy without modes).
    #[serde(default, skip_serializing_if = "ModeInput::is_one_hot")]
    pub mode_input: ModeInput,
}

/// What a `mode[k]` input the network was trained on means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ModeInput {
    /// All 0 = no mode; one-hot `k` = act like mode `k`. Other inputs were
    /// never seen in training.
    #[default]
    #[serde(rename = "one_hot")]
    OneHot,
    /// Also multi-hot: 1 for each mode of a set = act like one of them (the
    /// demonstrations whose mode is in the set). The complement of `{j}`
    /// is "anything but mode j".
    #[serde(rename = "set")]
    Set,
}

impl ModeInput {
    /// The default (one-hot).
    pub fn is_one_hot(&self) -> bool {
        *self == Self::OneHot
    }
}

/// Where a value of the observation comes from at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `joint.position[i]`: the arm's measured position of joint i (telemetry).
    JointPosition(usize),
    /// `joint.velocity[i]`: the arm's measured velocity of joint i (telemetry).
    JointVelocity(usize),
    /// `mode[k]`: how much the policy should act like mode k of the
    /// demonstrations (a soft code of `diffbc modes`). Set by the policy's
    /// steering, not by the robot: 0 for every k when none is asked for
    /// (the policy was trained with these channels dropped to 0).
    Mode(usize),
    /// Anything else: supplied by the integrator's host-side source under this
    /// key (task state, a camera, a tracker).
    Host(String),
}

impl Source {
    /// Parse a `source` (or an action's `target`) string.
    pub fn parse(s: &str) -> Self {
        let indexed = |prefix: &str| {
            s.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('['))
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|i| i.parse::<usize>().ok())
        };
        if let Some(i) = indexed("joint.position") {
            Self::JointPosition(i)
        } else if let Some(i) = indexed("joint.velocity") {
            Self::JointVelocity(i)
        } else if let Some(k) = indexed("mode") {
            Self::Mode(k)
        } else {
            Self::Host(s.to_string())
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::JointPosition(i) => write!(f, "joint.position[{i}]"),
            Self::JointVelocity(i) => write!(f, "joint.velocity[{i}]"),
            Self::Mode(k) => write!(f, "mode[{k}]"),
            Self::Host(k) => f.write_str(k),
        }
    }
}

/// One named part of the observation frame, in frame order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationChannel {
    /// Name in the data set it was trained on (`joint.position[2]`,
    /// `block.angle`, `observation.image`).
    pub name: String,
    /// Unit (`rad`, `rad/s`, `px`, `1` for flags and intensities), or
    /// `unknown` when the data set did not say.
    pub unit: String,
    /// Where the value comes from at run time ([`Source`]).
    pub source: String,
    /// Shape of a multi-value channel (`[3, 64, 64]` for an image), values
    /// row-major; absent for a single value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shape: Vec<usize>,
    /// Smallest value seen in the training data.
    pub min: f32,
    /// Largest value seen in the training data.
    pub max: f32,
}

impl ObservationChannel {
    /// Values in this channel.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the channel holds no value (a zero in its shape).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parsed source.
    pub fn source(&self) -> Source {
        Source::parse(&self.source)
    }
}

/// What an action value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// The value to go to (a joint position target, a commanded position).
    Absolute,
    /// A change to add to the current value.
    Delta,
}

/// One value of one executed action, in action order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionChannel {
    /// Name in the data set it was trained on.
    pub name: String,
    /// Unit, or `unknown`.
    pub unit: String,
    /// What it drives: `joint.position[i]` (a position target for joint i,
    /// sent to the arm) or a host-side key.
    pub target: String,
    /// Absolute target or delta.
    pub kind: ActionKind,
    /// Smallest value seen in the training data.
    pub min: f32,
    /// Largest value seen in the training data.
    pub max: f32,
    /// Largest change between consecutive ticks of an episode seen in the
    /// training data; absent when the data has no episodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_step: Option<f32>,
}

impl ActionChannel {
    /// The parsed target.
    pub fn target(&self) -> Source {
        Source::parse(&self.target)
    }
}

/// The observation and action channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    /// The frame's values, in order (their lengths add up to the frame length).
    pub observation: Vec<ObservationChannel>,
    /// One executed action's values, in order.
    pub action: Vec<ActionChannel>,
}

/// How the policy was trained to be run, recorded at export from the
/// training data.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Control rate of the demonstrations (Hz); absent for data without time
    /// (the claw scenes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_hz: Option<f64>,
    /// Joints the action drives (actions targeting `joint.position[i]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joints: Option<usize>,
    /// Largest |joint target − measured joint position| seen in the training
    /// data (the quantity the bridge's safety layer bounds per tick,
    /// `diffbc run --max-step`); absent unless the data records both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_step: Option<f32>,
    /// Largest joint speed seen in the observations (`joint.velocity` channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_velocity: Option<f32>,
}

/// Channels and deployment settings: what the data set says about the
/// policy's inputs and outputs. Built from the data at training time, stored
/// in the checkpoint and written into the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// The channels.
    pub channels: Channels,
    /// The deployment settings.
    pub deployment: Deployment,
}

impl Interface {
    /// Check the interface against the frame and action lengths; the message
    /// names the field.
    pub fn validate(&self, frame_len: usize, step_action_dim: usize) -> Result<(), String> {
        let c = &self.channels;
        let total: usize = c.observation.iter().map(ObservationChannel::len).sum();
        if total != frame_len {
            return Err(format!(
                "channels.observation describe {total} values, the frame has {frame_len}"
            ));
        }
        if c.action.len() != step_action_dim {
            return Err(format!(
                "channels.action has {} entries, one action has {step_action_dim} values",
                c.action.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (what, name, min, max) in c
            .observation
            .iter()
            .map(|o| ("observation", &o.name, o.min, o.max))
            .chain(c.action.iter().map(|a| ("action", &a.name, a.min, a.max)))
        {
            if name.is_empty() {
                return Err(format!("channels.{what}: a channel has no name"));
            }
            if !seen.insert((what, name)) {
                return Err(format!("channels.{what}: {name:?} appears twice"));
            }
            if !(min.is_finite() && max.is_finite() && min <= max) {
                return Err(format!(
                    "channels.{what} {name:?}: min {min} and max {max} must be finite with min ≤ max"
                ));
            }
        }
        for o in &c.observation {
            if o.is_empty() {
                return Err(format!(
                    "channels.observation {:?}: shape {:?} holds no value",
                    o.name, o.shape
                ));
            }
        }
        for a in &c.action {
            if let Some(s) = a.max_step
                && !(s.is_finite() && s >= 0.0)
            {
                return Err(format!(
                    "channels.action {:?}: max_step {s} must be finite and ≥ 0",
                    a.name
                ));
            }
        }
        let d = &self.deployment;
        if let Some(hz) = d.control_hz
            && !(hz.is_finite() && hz > 0.0)
        {
            return Err(format!(
                "deployment.control_hz {hz} must be a positive number"
            ));
        }
        let joints = c
            .action
            .iter()
            .filter(|a| matches!(a.target(), Source::JointPosition(_)))
            .count();
        if let Some(j) = d.joints
            && j != joints
        {
            return Err(format!(
                "deployment.joints is {j} but {joints} action channels target joint.position"
            ));
        }
        for (field, v) in [("max_step", d.max_step), ("max_velocity", d.max_velocity)] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("deployment.{field} {v} must be finite and ≥ 0"));
            }
        }
        Ok(())
    }
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`] of the writer.
    pub format_version: u32,
    /// ONNX opset of both graphs.
    pub opset: i64,
    /// ONNX IR version of both graphs.
    pub ir_version: i64,
    /// Observation shape and history.
    pub observation: ObservationSpec,
    /// Length of the head's action vector: one action, or a whole chunk
    /// (`chunk.horizon` actions, oldest first).
    pub action_dim: usize,
    /// Action chunking; absent means single-step.
    #[serde(default, skip_serializing_if = "ActionChunk::is_single")]
    pub chunk: ActionChunk,
    /// Embedding length (all frames).
    pub embedding_dim: usize,
    /// What the head computes.
    pub head_kind: HeadKind,
    /// How a classifier head's scores become an action (classifiers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<ActionDecoder>,
    /// Normalisation statistics.
    pub normalization: NormalizationSpec,
    /// Noise schedule (denoisers).
    pub schedule: ScheduleSpec,
    /// Default sampler.
    pub sampler: SamplerConfig,
    /// Other samplers the policy was evaluated with, by name (`ddpm`,
    /// `kde`, …); the end-to-end golden cases cover each of them.
    #[serde(default)]
    pub samplers: BTreeMap<String, SamplerConfig>,
    /// The sampling and control conventions.
    pub conventions: Conventions,
    /// What the observation and action values are.
    pub channels: Channels,
    /// Control rate and limits seen in the training data.
    pub deployment: Deployment,
    /// The unconditional embedding for guidance.
    pub unconditional_embedding: UnconditionalEmbedding,
    /// How both graphs store their matrix weights; absent means f32
    /// ([`WeightFormat`]).
    #[serde(default, skip_serializing_if = "WeightFormat::is_f32")]
    pub weights: WeightFormat,
    /// Encoder graph.
    pub encoder: GraphSpec,
    /// Head graph.
    pub head: GraphSpec,
    /// Provenance.
    pub provenance: Provenance,
}

/// Input and output names of the graphs.
pub mod names {
    /// Encoder input `[batch, (history + 1) · frame_len]`.
    pub const OBSERVATION: &str = "observation";
    /// Encoder output / head input `[batch, embedding_dim]`.
    pub const EMBEDDING: &str = "embedding";
    /// Denoiser input: the noisy action `[batch, action_dim]`.
    pub const NOISY_ACTION: &str = "noisy_action";
    /// Denoiser input: τ / T `[batch, 1]`.
    pub const TIME: &str = "t";
    /// Denoiser output `[batch, action_dim]`.
    pub const EPS: &str = "eps";
    /// Regressor output `[batch, action_dim]`.
    pub const ACTION: &str = "action";
    /// Classifier output `[batch, decoder score width]`.
    pub const SCORES: &str = "scores";
}

/// File names inside an exported folder.
pub mod files {
    /// Encoder graph.
    pub const ENCODER: &str = "encoder.onnx";
    /// Head graph of a diffusion policy.
    pub const DENOISER: &str = "denoiser.onnx";
    /// Head graph of a regression baseline.
    pub const REGRESSOR: &str = "regressor.onnx";
    /// Head graph of a discrete baseline.
    pub const CLASSIFIER: &str = "classifier.onnx";
    /// Golden tensors folder.
    pub const GOLDEN: &str = "golden";
    /// Index of the end-to-end golden episodes, inside `golden/`.
    pub const EPISODES: &str = "episodes.json";
}

impl Manifest {
    /// File name of the head graph for a head kind.
    pub fn head_file(kind: HeadKind) -> &'static str {
        match kind {
            HeadKind::Denoiser => files::DENOISER,
            HeadKind::Regressor => files::REGRESSOR,
            HeadKind::Classifier => files::CLASSIFIER,
        }
    }

    /// The channels and deployment settings.
    pub fn interface(&self) -> Interface {
        Interface {
            channels: self.channels.clone(),
            deployment: self.deployment.clone(),
        }
    }

    /// Length of one executed action (`action_dim / chunk.horizon`).
    pub fn step_action_dim(&self) -> usize {
        self.action_dim / self.chunk.horizon.max(1)
    }

    /// The expected input and output specs of both graphs for these shapes.
    pub fn expected_graphs(
        &self,
    ) -> (
        Vec<TensorSpec>,
        Vec<TensorSpec>,
        Vec<TensorSpec>,
        Vec<TensorSpec>,
    ) {
        let enc_in = vec![TensorSpec::batch_f32(
            names::OBSERVATION,
            self.observation.input_len(),
        )];
        let enc_out = vec![TensorSpec::batch_f32(names::EMBEDDING, self.embedding_dim)];
        let (head_in, head_out) = match self.head_kind {
            HeadKind::Denoiser => (
                vec![
                    TensorSpec::batch_f32(names::EMBEDDING, self.embedding_dim),
                    TensorSpec::batch_f32(names::NOISY_ACTION, self.action_dim),
                    TensorSpec::batch_f32(names::TIME, 1),
                ],
                vec![TensorSpec::batch_f32(names::EPS, self.action_dim)],
            ),
            HeadKind::Regressor => (
                vec![TensorSpec::batch_f32(names::EMBEDDING, self.embedding_dim)],
                vec![TensorSpec::batch_f32(names::ACTION, self.action_dim)],
            ),
            HeadKind::Classifier => (
                vec![TensorSpec::batch_f32(names::EMBEDDING, self.embedding_dim)],
                vec![TensorSpec::batch_f32(
                    names::SCORES,
                    self.decoder
                        .as_ref()
                        .map_or(0, |d| d.score_width(self.action_dim)),
                )],
            ),
        };
        (enc_in, enc_out, head_in, head_out)
    }
}
