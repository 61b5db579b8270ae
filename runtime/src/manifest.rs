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
use serde::{Deserialize, Serialize};

/// Version of the manifest format written by this build.
pub const MANIFEST_FORMAT: u32 = 1;
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
    /// The unconditional embedding for guidance.
    pub unconditional_embedding: UnconditionalEmbedding,
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
