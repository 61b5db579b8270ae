//! A deployed policy: an exported folder, validated, on an engine.
//!
//! [`OnnxModel`] is the two graphs behind the [`NoiseModel`] trait;
//! [`Policy`] adds what a controller needs around it: observation history,
//! normalisation, the sampler, a seeded noise stream, and buffers sized at
//! load so that [`Policy::act`] allocates nothing at steady state (with an
//! engine that does not allocate either: [`EngineChoice::Native`]).

use crate::decode::Choice;
use crate::engine::{Engine, EngineError, ExecutionProvider, GraphBytes, GraphId, NativeEngine};
use crate::fs::{self as userfs, FileError, limits};
use crate::manifest::{self, HeadKind, MANIFEST_FORMAT, Manifest, ModeInput};
use crate::native::NativeGraph;
use crate::sampler::{Noise, NoiseModel, Sampler, SamplerConfig, SamplerError};
use crate::schedule::NoiseSchedule;
#[cfg(feature = "tract")]
use crate::tract_engine::{TractDevice, TractEngine, TractGraph};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Which engine runs the graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineChoice {
    /// tract, pure Rust, CPU; allocates its tensors on every run (cargo
    /// feature `tract`, on by default).
    Tract,
    /// tract on an NVIDIA GPU (GPU 0 of `CUDA_VISIBLE_DEVICES`; cargo
    /// feature `tract-cuda`; the CUDA libraries are loaded at run time).
    TractCuda,
    /// diffbc's own executor for the exported op set: pure Rust, CPU, one
    /// thread, no allocation after warm-up. The control loop's engine.
    Native,
    /// ONNX Runtime (cargo feature `ort`) on the given execution provider.
    Ort(ExecutionProvider),
}

/// tract where this build has it, else the native engine.
impl Default for EngineChoice {
    fn default() -> Self {
        if cfg!(feature = "tract") {
            Self::Tract
        } else {
            Self::Native
        }
    }
}

impl EngineChoice {
    /// The pure-Rust engines this build has: native, and tract with the
    /// `tract` feature (a cross build for an Arm board leaves it out).
    pub fn pure_rust() -> Vec<Self> {
        let mut engines = vec![Self::Native];
        if cfg!(feature = "tract") {
            engines.push(Self::Tract);
        }
        engines
    }
}

impl std::fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tract => f.write_str("tract"),
            Self::TractCuda => f.write_str("tract-cuda"),
            Self::Native => f.write_str("native"),
            Self::Ort(p) => write!(f, "ort-{}", p.short()),
        }
    }
}

impl std::str::FromStr for EngineChoice {
    type Err = String;

    /// `tract`, `tract-cuda`, `native`, `ort` (= `ort-cpu`), `ort-cuda[:N]`,
    /// `ort-tensorrt[:N]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, device) = match s.split_once(':') {
            Some((n, d)) => (
                n,
                d.parse::<i32>()
                    .map_err(|_| format!("{s}: the device after ':' must be a number"))?,
            ),
            None => (s, 0),
        };
        Ok(match name {
            "tract" => Self::Tract,
            "tract-cuda" if s.contains(':') => {
                return Err(format!(
                    "{s}: tract-cuda runs on the first visible GPU; choose it with CUDA_VISIBLE_DEVICES={device}"
                ));
            }
            "tract-cuda" => Self::TractCuda,
            "native" => Self::Native,
            "ort" | "ort-cpu" => Self::Ort(ExecutionProvider::Cpu),
            "ort-cuda" => Self::Ort(ExecutionProvider::Cuda { device }),
            "ort-tensorrt" => Self::Ort(ExecutionProvider::TensorRt { device }),
            _ => {
                return Err(format!(
                    "unknown engine {s:?}; expected tract, tract-cuda, native, ort-cpu, ort-cuda[:N] or ort-tensorrt[:N]"
                ));
            }
        })
    }
}

/// Why a policy could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file could not be read.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A file of the folder was refused (not a regular file, too large, or
    /// outside the folder).
    #[error(transparent)]
    File(#[from] FileError),
    /// A file a manifest field names was refused.
    #[error("{path}: field {field}: {source}")]
    FieldFile {
        /// The manifest (or golden index) naming the file.
        path: PathBuf,
        /// The field, e.g. `encoder.file`.
        field: String,
        /// Why the file was refused.
        source: FileError,
    },
    /// The manifest is malformed or inconsistent.
    #[error("{path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong (names the field).
        message: String,
    },
    /// A graph file does not match its hash in the manifest.
    #[error(
        "{path}: SHA-256 is {actual}, the manifest says {expected}; the graph and manifest do not belong together"
    )]
    Hash {
        /// The graph file.
        path: PathBuf,
        /// From the manifest.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An observation given to [`Policy::act`] is unusable; nothing was recorded.
    #[error("observation: {0}")]
    Observation(String),
    /// The sampler refused its configuration or produced a non-finite action.
    #[error("sampler: {0}")]
    Sampler(String),
    /// A chunk setting that does not fit the policy's horizon.
    #[error("{0}")]
    Chunk(String),
    /// A steering request this policy cannot follow (names the mode or weight).
    #[error("steering: {0}")]
    Steering(String),
}

impl From<SamplerError<EngineError>> for PolicyError {
    fn from(e: SamplerError<EngineError>) -> Self {
        match e {
            SamplerError::Model(e) => Self::Engine(e),
            other => Self::Sampler(other.to_string()),
        }
    }
}

/// A loaded, validated policy folder: the two graphs on an engine.
pub struct OnnxModel {
    /// The manifest.
    pub manifest: Manifest,
    /// The noise schedule of the manifest.
    pub schedule: NoiseSchedule,
    engine: Box<dyn Engine>,
    t_column: Vec<f32>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("engine", &self.engine.name())
            .field("manifest", &self.manifest)
            .finish()
    }
}

/// SHA-256 of `bytes` as lower-case hex (the form the manifest stores).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Read the graph the manifest's `<field>.file` names: inside `dir` (no
/// absolute path, no `..`, no symlink out), a regular file within the ONNX
/// size limit, and with the SHA-256 the manifest records. Engines parse these
/// bytes; nothing opens the file again, so what runs is what was checked.
pub(crate) fn read_graph(
    dir: &Path,
    field: &str,
    spec: &manifest::GraphSpec,
) -> Result<(PathBuf, Vec<u8>), PolicyError> {
    let in_field = |source| PolicyError::FieldFile {
        path: dir.join(manifest::MANIFEST_FILE),
        field: format!("{field}.file"),
        source,
    };
    let path = userfs::within(dir, &spec.file).map_err(in_field)?;
    let bytes = userfs::read(&path, limits::GRAPH).map_err(in_field)?;
    let actual = sha256_hex(&bytes);
    if actual != spec.sha256 {
        return Err(PolicyError::Hash {
            path,
            expected: spec.sha256.clone(),
            actual,
        });
    }
    Ok((path, bytes))
}

/// The manifest's `weights` against what the graphs store: a graph may hold
/// no reduced weight (an encoder of convolutions only), but never another
/// format, and a reduced-precision manifest needs at least one graph in it.
fn check_weights(dir: &Path, m: &Manifest, graphs: [(&Path, &[u8]); 2]) -> Result<(), PolicyError> {
    use crate::weights::{WeightFormat, graph_format};
    let mut seen = false;
    for (path, bytes) in graphs {
        let found = graph_format(bytes).map_err(|message| EngineError::Load {
            path: path.to_path_buf(),
            message,
        })?;
        if found != WeightFormat::F32 && found != m.weights {
            return Err(PolicyError::Manifest {
                path: dir.join(manifest::MANIFEST_FILE),
                message: format!(
                    "weights is {}, but {} stores {found} weights",
                    m.weights,
                    path.display()
                ),
            });
        }
        seen |= found == m.weights;
    }
    if !seen {
        return Err(PolicyError::Manifest {
            path: dir.join(manifest::MANIFEST_FILE),
            message: format!(
                "weights is {}, but neither graph stores {} weights",
                m.weights, m.weights
            ),
        });
    }
    Ok(())
}

/// Read and check a manifest (everything that needs no graph).
pub fn read_manifest(dir: &Path) -> Result<(Manifest, NoiseSchedule), PolicyError> {
    let path = dir.join(manifest::MANIFEST_FILE);
    let bytes = userfs::read(&path, limits::JSON)?;
    let bad = |message: String| PolicyError::Manifest {
        path: path.clone(),
        message,
    };
    // Look at the format version first, so a newer manifest gets a clear message.
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    match value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
    {
        Some(v) if v == MANIFEST_FORMAT as u64 => {}
        Some(1) => {
            return Err(bad(format!(
                "format_version 1 predates the model contract (format {MANIFEST_FORMAT}: channels, \
                 deployment settings, sampling conventions, end-to-end golden cases); upgrade the \
                 folder with `diffbc export --upgrade {dir} --data <its training data>` or \
                 re-export its checkpoint with `diffbc export <checkpoint> --out {dir} --force`",
                dir = dir.display()
            )));
        }
        Some(v) => {
            return Err(bad(format!(
                "format_version {v} is not supported (this runtime reads {MANIFEST_FORMAT})"
            )));
        }
        None => return Err(bad("format_version is missing".into())),
    }
    let m: Manifest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    if m.opset < 17 {
        return Err(bad(format!("opset {} is older than 17", m.opset)));
    }
    let frame_len = m.observation.frame_len();
    m.normalization
        .observation
        .validate(frame_len)
        .map_err(|e| bad(format!("normalization.observation: {e}")))?;
    m.normalization
        .action
        .validate(m.action_dim)
        .map_err(|e| bad(format!("normalization.action: {e}")))?;
    if m.schedule.betas.len() != m.schedule.steps {
        return Err(bad(format!(
            "schedule.steps is {} but schedule.betas has {} values",
            m.schedule.steps,
            m.schedule.betas.len()
        )));
    }
    let schedule = NoiseSchedule::from_betas(m.schedule.betas.clone())
        .map_err(|e| bad(format!("schedule: {e}")))?;
    m.sampler
        .validate(&schedule)
        .map_err(|e| bad(format!("sampler: {e}")))?;
    if m.action_dim == 0 || m.embedding_dim == 0 || frame_len == 0 {
        return Err(bad(
            "action_dim, embedding_dim and observation.frame_shape must be non-zero".into(),
        ));
    }
    m.chunk.validate().map_err(bad)?;
    for (name, sampler) in &m.samplers {
        sampler
            .validate(&schedule)
            .map_err(|e| bad(format!("samplers.{name}: {e}")))?;
    }
    if !m.action_dim.is_multiple_of(m.chunk.horizon) {
        return Err(bad(format!(
            "action_dim {} is not a whole number of chunk.horizon {} actions",
            m.action_dim, m.chunk.horizon
        )));
    }
    match (m.head_kind, &m.decoder) {
        (HeadKind::Classifier, None) => {
            return Err(bad("head_kind is classifier but decoder is missing".into()));
        }
        (HeadKind::Classifier, Some(d)) => d.validate(m.action_dim).map_err(bad)?,
        (_, Some(_)) => {
            return Err(bad(format!(
                "decoder is only for classifier heads, this head is {:?}",
                m.head_kind
            )));
        }
        (_, None) => {}
    }
    m.interface()
        .validate(frame_len, m.step_action_dim())
        .map_err(bad)?;
    let (enc_in, enc_out, head_in, head_out) = m.expected_graphs();
    for (what, got, want) in [
        ("encoder.inputs", &m.encoder.inputs, &enc_in),
        ("encoder.outputs", &m.encoder.outputs, &enc_out),
        ("head.inputs", &m.head.inputs, &head_in),
        ("head.outputs", &m.head.outputs, &head_out),
    ] {
        if got != want {
            return Err(bad(format!(
                "{what} is {got:?}, expected {want:?} for these shapes"
            )));
        }
    }
    Ok((m, schedule))
}

/// How far an engine came from the per-graph golden outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenWorst {
    /// Largest |output − golden| over every case.
    pub absolute: f32,
    /// Largest |output − golden| / max(1, largest |golden| of that case).
    pub relative: f32,
    /// The batch size of each case run.
    pub batches: Vec<usize>,
}

impl GoldenWorst {
    /// Whether the outputs are within what `weights` allows: 1e-4 absolute
    /// for f32, [`crate::WeightFormat::golden_tolerance`] relative for the
    /// reduced formats.
    pub fn within(&self, weights: crate::WeightFormat) -> bool {
        if weights.is_f32() {
            self.absolute <= weights.golden_tolerance()
        } else {
            self.relative <= weights.golden_tolerance()
        }
    }
}

impl OnnxModel {
    /// Load and validate a policy folder (manifest, hashes, tensor names and
    /// shapes) and prepare its graphs on `engine`, single-threaded.
    pub fn load(dir: &Path, engine: EngineChoice) -> Result<Self, PolicyError> {
        Self::load_with_threads(dir, engine, 1)
    }

    /// [`OnnxModel::load`] with `threads` threads for engines that use them
    /// (tract, ONNX Runtime; the native engine is single-threaded).
    pub fn load_with_threads(
        dir: &Path,
        engine: EngineChoice,
        threads: usize,
    ) -> Result<Self, PolicyError> {
        let (manifest, schedule) = read_manifest(dir)?;
        let (enc_path, enc_bytes) = read_graph(dir, "encoder", &manifest.encoder)?;
        let (head_path, head_bytes) = read_graph(dir, "head", &manifest.head)?;
        check_weights(
            dir,
            &manifest,
            [
                (enc_path.as_path(), enc_bytes.as_slice()),
                (head_path.as_path(), head_bytes.as_slice()),
            ],
        )?;
        let enc = GraphBytes {
            path: &enc_path,
            bytes: &enc_bytes,
        };
        let head = GraphBytes {
            path: &head_path,
            bytes: &head_bytes,
        };
        #[cfg(not(any(feature = "tract", feature = "ort")))]
        let _ = threads;
        #[cfg(feature = "tract")]
        let tract = |device: TractDevice| -> Result<Box<dyn Engine>, EngineError> {
            Ok(Box::new(TractEngine::new(
                TractGraph::load(
                    enc,
                    GraphId::Encoder,
                    &manifest.encoder.inputs,
                    &manifest.encoder.outputs,
                    device,
                )?,
                TractGraph::load(
                    head,
                    GraphId::Head,
                    &manifest.head.inputs,
                    &manifest.head.outputs,
                    device,
                )?,
                threads,
            )))
        };
        let engine: Box<dyn Engine> = match engine {
            #[cfg(feature = "tract")]
            EngineChoice::Tract => tract(TractDevice::Cpu)?,
            #[cfg(not(feature = "tract"))]
            EngineChoice::Tract => {
                return Err(EngineError::NotBuilt {
                    engine: "tract",
                    feature: "tract",
                }
                .into());
            }
            #[cfg(feature = "tract-cuda")]
            EngineChoice::TractCuda => tract(TractDevice::Cuda)?,
            #[cfg(not(feature = "tract-cuda"))]
            EngineChoice::TractCuda => {
                return Err(EngineError::NotBuilt {
                    engine: "tract-cuda",
                    feature: "tract-cuda",
                }
                .into());
            }
            EngineChoice::Native => Box::new(NativeEngine::load(
                (enc, &manifest.encoder.inputs),
                (head, &manifest.head.inputs),
            )?),
            #[cfg(feature = "ort")]
            EngineChoice::Ort(provider) => Box::new(crate::ort_engine::OrtEngine::load(
                (enc, &manifest.encoder.inputs),
                (head, &manifest.head.inputs),
                provider,
                threads,
            )?),
            #[cfg(not(feature = "ort"))]
            EngineChoice::Ort(_) => {
                return Err(EngineError::NotBuilt {
                    engine: "ONNX Runtime",
                    feature: "ort",
                }
                .into());
            }
        };
        Ok(Self {
            manifest,
            schedule,
            engine,
            t_column: Vec::new(),
        })
    }

    /// The engine's name.
    pub fn engine_name(&self) -> String {
        self.engine.name()
    }

    /// Size the engine's buffers for batches of up to `rows` rows.
    pub fn reserve(&mut self, encoder_rows: usize, head_rows: usize) {
        self.engine.reserve(GraphId::Encoder, encoder_rows);
        self.engine.reserve(GraphId::Head, head_rows);
    }

    /// The manifest's default sampler.
    pub fn default_sampler(&self) -> SamplerConfig {
        self.manifest.sampler
    }

    /// Run one graph directly (golden checks, benchmarks).
    pub fn run_graph(
        &mut self,
        graph: GraphId,
        rows: usize,
        inputs: &[&[f32]],
        output: &mut [f32],
    ) -> Result<(), EngineError> {
        self.engine.run(graph, rows, inputs, output)
    }

    /// Run every golden case in `<dir>/golden` and return the largest absolute
    /// difference from the outputs the trainer stored, with the batch sizes seen.
    pub fn golden_max_diff(&mut self, dir: &Path) -> Result<(f32, Vec<usize>), PolicyError> {
        let g = self.golden_worst(dir)?;
        Ok((g.absolute, g.batches))
    }

    /// Run every golden case in `<dir>/golden` against the outputs the
    /// trainer stored: the largest absolute difference, and the largest
    /// difference relative to its case ([`GoldenWorst::relative`], what
    /// [`crate::WeightFormat::golden_tolerance`] bounds).
    pub fn golden_worst(&mut self, dir: &Path) -> Result<GoldenWorst, PolicyError> {
        use crate::golden::{GoldenCase, INDEX_FILE, read_npy};
        let gdir = dir.join(manifest::files::GOLDEN);
        let index = gdir.join(INDEX_FILE);
        let text = userfs::read_to_string(&index, limits::JSON)?;
        let cases: Vec<GoldenCase> =
            serde_json::from_str(&text).map_err(|e| PolicyError::Manifest {
                path: index.clone(),
                message: e.to_string(),
            })?;
        let npy = |file: &str| {
            let path = userfs::within(&gdir, file).map_err(|source| PolicyError::FieldFile {
                path: index.clone(),
                field: "file".into(),
                source,
            })?;
            read_npy(&path)
                .map(|(_, v)| v)
                .map_err(|e| PolicyError::Manifest {
                    path: gdir.join(file),
                    message: e.to_string(),
                })
        };
        let (mut worst, mut relative, mut batches) = (0.0f32, 0.0f32, Vec::new());
        for case in &cases {
            let inputs = case
                .inputs
                .iter()
                .map(|t| npy(&t.file))
                .collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
            let expected = npy(&case.outputs[0].file)?;
            let mut got = vec![0.0; expected.len()];
            let graph = if case.graph == "encoder" {
                GraphId::Encoder
            } else {
                GraphId::Head
            };
            self.engine.run(graph, case.batch, &refs, &mut got)?;
            let diff = got
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            worst = worst.max(diff);
            relative = relative.max(diff / scale);
            batches.push(case.batch);
        }
        Ok(GoldenWorst {
            absolute: worst,
            relative,
            batches,
        })
    }

    /// Regressor and classifier heads: the head's output rows (actions in
    /// normalised units, or scores) for embeddings `[rows, E]`.
    pub fn run_head(&mut self, embeddings: &[f32], out: &mut [f32]) -> Result<(), EngineError> {
        let rows = embeddings.len() / self.manifest.embedding_dim;
        self.engine.run(GraphId::Head, rows, &[embeddings], out)
    }
}

impl NoiseModel for OnnxModel {
    type Error = EngineError;

    fn action_dim(&self) -> usize {
        self.manifest.action_dim
    }

    fn embedding_dim(&self) -> usize {
        self.manifest.embedding_dim
    }

    fn observation_dim(&self) -> usize {
        self.manifest.observation.input_len()
    }

    fn encode(&mut self, observations: &[f32], embeddings: &mut [f32]) -> Result<(), Self::Error> {
        let rows = observations.len() / self.observation_dim();
        self.engine
            .run(GraphId::Encoder, rows, &[observations], embeddings)
    }

    fn predict_noise(
        &mut self,
        embeddings: &[f32],
        actions: &[f32],
        t: f32,
        eps: &mut [f32],
    ) -> Result<(), Self::Error> {
        if self.manifest.head_kind != HeadKind::Denoiser {
            return Err(EngineError::Run {
                graph: "head",
                message: format!(
                    "this policy's head is a {:?}, not a denoiser",
                    self.manifest.head_kind
                ),
            });
        }
        let rows = actions.len() / self.manifest.action_dim;
        self.t_column.clear();
        self.t_column.resize(rows, t);
        self.engine.run(
            GraphId::Head,
            rows,
            &[embeddings, actions, &self.t_column],
            eps,
        )
    }
}

/// How [`Policy::load_with`] prepares a policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyOptions {
    /// The engine.
    pub engine: EngineChoice,
    /// Threads for engines that use them (1 = single-threaded).
    pub threads: usize,
    /// The sampler; `None` takes the manifest's default.
    pub sampler: Option<SamplerConfig>,
    /// Seed of the noise stream.
    pub seed: u64,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        Self {
            engine: EngineChoice::default(),
            threads: 1,
            sampler: None,
            seed: 0,
        }
    }
}

/// Both graphs of `dir` compiled by the native engine (for counting).
fn native_graphs(dir: &Path, manifest: &Manifest) -> Option<(NativeGraph, NativeGraph)> {
    let (enc_path, enc_bytes) = read_graph(dir, "encoder", &manifest.encoder).ok()?;
    let (head_path, head_bytes) = read_graph(dir, "head", &manifest.head).ok()?;
    let enc = NativeGraph::load(
        GraphBytes {
            path: &enc_path,
            bytes: &enc_bytes,
        },
        "encoder",
        &manifest.encoder.inputs,
    )
    .ok()?;
    let head = NativeGraph::load(
        GraphBytes {
            path: &head_path,
            bytes: &head_bytes,
        },
        "head",
        &manifest.head.inputs,
    )
    .ok()?;
    Some((enc, head))
}

/// FLOPs of one decision: the encoder once, the head once per network call
/// on every row the sampler runs; counted from the graphs. `None` when a
/// graph holds an operator the counter does not know.
pub fn flops_per_decision(
    dir: &Path,
    manifest: &Manifest,
    schedule: &NoiseSchedule,
    sampler: &SamplerConfig,
) -> Option<u64> {
    let (enc, head) = native_graphs(dir, manifest)?;
    let head_calls = match manifest.head_kind {
        HeadKind::Denoiser => {
            (sampler.network_calls(schedule) * sampler.rows_per_decision()) as u64
        }
        HeadKind::Regressor | HeadKind::Classifier => 1,
    };
    Some(enc.flops_per_row() + head_calls * head.flops_per_row())
}

/// Bytes of constants the native engine reads in one call of the encoder and
/// of the head ([`NativeGraph::weight_bytes`]: matrix weights in the
/// precision it keeps them in, everything else f32). `None` when the native
/// engine cannot compile a graph.
pub fn weight_bytes_per_call(dir: &Path, manifest: &Manifest) -> Option<(usize, usize)> {
    let (enc, head) = native_graphs(dir, manifest)?;
    Some((enc.weight_bytes(), head.weight_bytes()))
}

/// [`weight_bytes_per_call`] with every matrix weight counted as f32
/// ([`NativeGraph::weight_bytes_f32`]): what an engine that widens f16 and
/// int8 weights at load reads per call.
pub fn weight_bytes_per_call_f32(dir: &Path, manifest: &Manifest) -> Option<(usize, usize)> {
    let (enc, head) = native_graphs(dir, manifest)?;
    Some((enc.weight_bytes_f32(), head.weight_bytes_f32()))
}

/// The one place a decision is made: `out.len() / action_dim` decisions
/// (whole chunks) from one observation's `embedding`, de-normalised into
/// raw units. A denoiser samples (a single decision straight from the
/// embedding, more in batches of [`SAMPLE_MANY_ROWS`] network rows); a
/// regressor repeats its one answer; a classifier decodes its scores once
/// per decision. Allocates only for batches of more than one decision.
fn decide<N: Noise + ?Sized>(
    model: &mut OnnxModel,
    sampler: &mut Sampler,
    choice: Choice,
    embedding: &[f32],
    scores: &mut [f32],
    noise: &mut N,
    out: &mut [f32],
) -> Result<(), PolicyError> {
    let a = model.manifest.action_dim;
    if out.is_empty() {
        return Ok(());
    }
    match model.manifest.head_kind {
        HeadKind::Denoiser if out.len() == a => {
            sampler.sample_embedded(model, embedding, noise, out)?;
        }
        HeadKind::Denoiser => {
            let n = out.len() / a.max(1);
            let rows = (SAMPLE_MANY_ROWS / sampler.config().rows_per_decision()).max(1);
            let mut start = 0;
            while start < n {
                let batch = rows.min(n - start);
                let embs: Vec<f32> = embedding
                    .iter()
                    .copied()
                    .cycle()
                    .take(batch * embedding.len())
                    .collect();
                sampler.sample_embedded(
                    model,
                    &embs,
                    noise,
                    &mut out[start * a..(start + batch) * a],
                )?;
                start += batch;
            }
        }
        HeadKind::Regressor => {
            let (first, rest) = out.split_at_mut(a.min(out.len()));
            model.run_head(embedding, first)?;
            for row in rest.chunks_exact_mut(a.max(1)) {
                row.copy_from_slice(first);
            }
        }
        HeadKind::Classifier => {
            model.run_head(embedding, scores)?;
            if let Some(d) = &model.manifest.decoder {
                for row in out.chunks_exact_mut(a.max(1)) {
                    d.decode(scores, choice, noise, row);
                }
            }
        }
    }
    model.manifest.normalization.action.denormalize(out);
    Ok(())
}

/// Network rows per head call in [`Policy::sample_many`] (its batches hold
/// `SAMPLE_MANY_ROWS / rows_per_decision` draws, at least one). Part of the
/// seeded result: the noise is drawn batch by batch.
pub const SAMPLE_MANY_ROWS: usize = 2000;

/// Steering towards or away from modes of the demonstrations, for a policy
/// trained with `mode[k]` observation channels (`diffbc modes`, mode
/// dropout). A mode input is the K values of those channels: a one-hot
/// code, a soft mixture of codes, or — for a policy trained with mode sets
/// (`conventions.mode_input = set`) — a multi-hot set, "one of these".
/// Each step of the sampler uses
/// ε̂ = ε₀ + w (ε_towards − ε₀) − Σⱼ wⱼ (ε_awayⱼ − ε₀), ε₀ with no mode given
/// (all channels 0). `towards` at weight 1 and nothing to avoid is plain
/// conditioning and costs no extra network rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Steering {
    /// The mode input to act like (empty: none).
    pub towards: Vec<f32>,
    /// Its weight (1 = condition on it; more pushes further).
    pub weight: f32,
    /// Mode inputs to stay away from, each with its weight (≥ 0).
    pub away: Vec<(Vec<f32>, f32)>,
}

impl Steering {
    /// Act like mode `k` of `modes` (one-hot), at `weight`.
    pub fn towards(modes: usize, k: usize, weight: f32) -> Self {
        Self::towards_set(modes, &[k], weight)
    }

    /// Also stay away from mode `k` of `modes` (one-hot), at `weight`.
    pub fn and_away_from(mut self, modes: usize, k: usize, weight: f32) -> Self {
        self.away.push((one_hot(modes, k), weight));
        self
    }

    /// Act like one of the modes in `set` (multi-hot), at `weight`: for a
    /// policy trained with mode sets (`conventions.mode_input = set`). A
    /// set of every mode is "any mode", the no-mode input (all 0), which
    /// is how training shows it.
    pub fn towards_set(modes: usize, set: &[usize], weight: f32) -> Self {
        let every = (0..modes).all(|i| set.contains(&i));
        Self {
            towards: (0..modes)
                .map(|i| f32::from(u8::from(!every && set.contains(&i))))
                .collect(),
            weight,
            away: Vec::new(),
        }
    }

    /// Act like any mode but those in `avoid` — avoidance by exclusion, the
    /// multi-hot complement, at `weight` (for a policy trained with mode
    /// sets; negative guidance, [`Steering::and_away_from`], is the
    /// alternative for one trained on one-hot modes).
    pub fn anything_but(modes: usize, avoid: &[usize], weight: f32) -> Self {
        let rest: Vec<usize> = (0..modes).filter(|i| !avoid.contains(i)).collect();
        Self::towards_set(modes, &rest, weight)
    }

    /// Stay away from the modes in `avoid`, at `weight`, the way a policy
    /// whose modes are read as `input` is trained for: by exclusion
    /// ([`Steering::anything_but`]) where it took sets, else by negative
    /// guidance from each mode over the no-mode base.
    pub fn away_from(modes: usize, avoid: &[usize], weight: f32, input: ModeInput) -> Self {
        match input {
            ModeInput::Set => Self::anything_but(modes, avoid, weight),
            ModeInput::OneHot => avoid.iter().fold(
                Self {
                    towards: Vec::new(),
                    weight: 1.0,
                    away: Vec::new(),
                },
                |s, &k| s.and_away_from(modes, k, weight),
            ),
        }
    }

    /// Plain conditioning: one mode at weight 1, nothing avoided.
    fn is_plain(&self) -> bool {
        self.away.is_empty() && (self.towards.is_empty() || self.weight == 1.0)
    }
}

fn one_hot(n: usize, k: usize) -> Vec<f32> {
    (0..n).map(|i| f32::from(u8::from(i == k))).collect()
}

/// Where a policy's `mode[k]` channels sit in its frame, and the steering
/// in use with its buffers (sized when set, so `act` does not allocate).
#[derive(Debug, Clone, Default)]
struct Steer {
    /// Frame offset of `mode[k]`, in k order.
    offsets: Vec<usize>,
    /// The observation normaliser's mean and standard deviation there.
    scale: Vec<(f32, f32)>,
    steering: Option<Steering>,
    /// Encoder input of one variant.
    row: Vec<f32>,
    /// Embeddings of the base and every variant.
    embeddings: Vec<f32>,
    /// The sampler's weight per variant.
    weights: Vec<f32>,
}

impl Steer {
    fn new(m: &Manifest) -> Result<Self, PolicyError> {
        let mut offsets = Vec::new();
        let mut at = 0;
        for c in &m.channels.observation {
            if let manifest::Source::Mode(k) = c.source() {
                if k != offsets.len() || c.len() != 1 {
                    return Err(PolicyError::Steering(format!(
                        "channel {} (source {}): mode channels must be single values mode[0], mode[1], … in order",
                        c.name, c.source
                    )));
                }
                offsets.push(at);
            }
            at += c.len();
        }
        let norm = &m.normalization.observation;
        let stat = |v: &[f32], at: usize, default: f32| {
            v.get(at / norm.group.max(1)).copied().unwrap_or(default)
        };
        let scale = offsets
            .iter()
            .map(|&at| (stat(&norm.mean, at, 0.0), stat(&norm.std, at, 1.0)))
            .collect();
        Ok(Self {
            offsets,
            scale,
            ..Self::default()
        })
    }
}

/// Write `mode` (raw values; all 0 when empty) into every frame of the
/// normalised encoder input `row`, at `offsets` normalised with `scale`.
fn write_mode(
    offsets: &[usize],
    scale: &[(f32, f32)],
    frame_len: usize,
    mode: &[f32],
    row: &mut [f32],
) {
    for frame in row.chunks_exact_mut(frame_len.max(1)) {
        for (k, (&at, &(mean, std))) in offsets.iter().zip(scale).enumerate() {
            let v = mode.get(k).copied().unwrap_or(0.0);
            frame[at] = (v - mean) / std;
        }
    }
}

/// A deployed policy: observations in, actions out.
///
/// `act` keeps the last `history` frames (an episode starts by repeating its
/// first frame, as training does at episode starts), normalises, encodes once,
/// samples, and de-normalises. The same seed and the same observations give
/// the same actions on the same engine.
pub struct Policy {
    model: OnnxModel,
    sampler: Sampler,
    rng: ChaCha8Rng,
    seed: u64,
    /// Ring of `history + 1` normalised frames.
    frames: Vec<f32>,
    /// Slot the next frame goes to.
    next: usize,
    /// Whether the ring holds a frame of the current episode.
    started: bool,
    /// Encoder input, oldest frame first.
    row: Vec<f32>,
    embedding: Vec<f32>,
    /// A classifier head's output row.
    scores: Vec<f32>,
    /// How a classifier head's scores are turned into a choice.
    choice: Choice,
    /// The last decision: one action, or a chunk of `chunk.horizon`.
    action: Vec<f32>,
    /// Actions of the chunk executed before the next decision.
    execute: usize,
    /// Next action of the chunk to hand out; `execute` means "decide".
    cursor: usize,
    /// Mode channels and the steering in use.
    steer: Steer,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("model", &self.model)
            .field("sampler", self.sampler.config())
            .field("seed", &self.seed)
            .finish()
    }
}

impl Policy {
    /// Load `dir` on `engine` with the manifest's sampler and seed 0.
    pub fn load(dir: &Path, engine: EngineChoice) -> Result<Self, PolicyError> {
        Self::load_with(
            dir,
            &PolicyOptions {
                engine,
                ..PolicyOptions::default()
            },
        )
    }

    /// Load `dir` as `options` say.
    pub fn load_with(dir: &Path, options: &PolicyOptions) -> Result<Self, PolicyError> {
        let model = OnnxModel::load_with_threads(dir, options.engine, options.threads)?;
        let config = options.sampler.unwrap_or(model.manifest.sampler);
        let sampler = Sampler::new(model.schedule.clone(), config)
            .map_err(|e| PolicyError::Sampler(e.to_string()))?;
        let steer = Steer::new(&model.manifest)?;
        let m = &model.manifest;
        let frames = m.observation.history + 1;
        let mut policy = Self {
            frames: vec![0.0; frames * m.observation.frame_len()],
            row: vec![0.0; m.observation.input_len()],
            embedding: vec![0.0; m.embedding_dim],
            scores: vec![0.0; m.head.outputs.first().map_or(0, |o| o.row_len())],
            choice: m.decoder.as_ref().map(|d| d.choice).unwrap_or_default(),
            action: vec![0.0; m.action_dim],
            execute: m.chunk.execute,
            cursor: m.chunk.execute,
            model,
            sampler,
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            seed: options.seed,
            next: 0,
            started: false,
            steer,
        };
        policy.model.reserve(1, config.rows_per_decision());
        Ok(policy)
    }

    /// Switch sampler (validated against the schedule); buffers are resized
    /// here, not in `act`.
    pub fn set_sampler(&mut self, config: SamplerConfig) -> Result<(), PolicyError> {
        self.sampler = Sampler::new(self.model.schedule.clone(), config)
            .map_err(|e| PolicyError::Sampler(e.to_string()))?;
        self.model.reserve(1, config.rows_per_decision());
        Ok(())
    }

    /// How many modes the policy takes (its `mode[k]` channels; 0: none).
    pub fn modes(&self) -> usize {
        self.steer.offsets.len()
    }

    /// How its mode channels are read: one-hot only, or sets too
    /// (`conventions.mode_input`).
    pub fn mode_input(&self) -> manifest::ModeInput {
        self.model.manifest.conventions.mode_input
    }

    /// The names of the policy's mode channels, in mode order: `mode[k]`,
    /// or `mode[k]: ` and what the mode is where the trainer described it
    /// (`diffbc modes --steer` names them from its study).
    pub fn mode_names(&self) -> Vec<&str> {
        self.model
            .manifest
            .channels
            .observation
            .iter()
            .filter(|c| matches!(c.source(), manifest::Source::Mode(_)))
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Steer the policy (see [`Steering`]); `None` stops steering (no mode
    /// given). Refused, naming what is wrong, for a policy without mode
    /// channels, a mode input of the wrong length or with non-finite
    /// values, a negative or non-finite weight, weights other than plain
    /// conditioning on a head that is not a denoiser, or together with
    /// classifier-free guidance. Buffers are sized here, not in `act`.
    pub fn set_steering(&mut self, steering: Option<Steering>) -> Result<(), PolicyError> {
        let Some(st) = steering else {
            self.steer.steering = None;
            return Ok(());
        };
        let k = self.modes();
        if k == 0 {
            return Err(PolicyError::Steering(
                "this policy has no mode[k] observation channels (it was not trained with modes)"
                    .into(),
            ));
        }
        let inputs = std::iter::once((&st.towards, st.weight, "towards"))
            .chain(st.away.iter().map(|(v, w)| (v, *w, "away")));
        for (v, w, what) in inputs {
            if what == "towards" && v.is_empty() {
                continue;
            }
            if v.len() != k {
                return Err(PolicyError::Steering(format!(
                    "a mode input ({what}) has {} values, the policy takes {k} (mode[0..{k}])",
                    v.len()
                )));
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(PolicyError::Steering(format!(
                    "mode[{i}] ({what}) is {}",
                    v[i]
                )));
            }
            if !(w.is_finite() && w >= 0.0) {
                return Err(PolicyError::Steering(format!(
                    "the {what} weight must be a number ≥ 0, got {w}"
                )));
            }
        }
        let plain = st.is_plain();
        if !plain {
            if self.model.manifest.head_kind != HeadKind::Denoiser {
                return Err(PolicyError::Steering(
                    "weights other than 1, and avoiding modes, need a diffusion policy".into(),
                ));
            }
            if self.sampler.config().guidance != 0.0 {
                return Err(PolicyError::Steering(
                    "steering and classifier-free guidance (--guidance) do not combine".into(),
                ));
            }
        }
        let variants = usize::from(!st.towards.is_empty()) + st.away.len();
        let ed = self.model.manifest.embedding_dim;
        self.steer.row = vec![0.0; self.row.len()];
        self.steer.embeddings = vec![0.0; (1 + variants) * ed];
        self.steer.weights = Vec::with_capacity(variants);
        if !st.towards.is_empty() {
            self.steer.weights.push(st.weight);
        }
        self.steer.weights.extend(st.away.iter().map(|(_, w)| -*w));
        if !plain {
            let rows = self.sampler.config().rows_per_decision() * (1 + variants);
            self.model.reserve(1, rows);
        }
        self.steer.steering = Some(st);
        Ok(())
    }

    /// Restart the noise stream from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.seed = seed;
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// Forget the observation history and any chunk in progress (a new
    /// episode starts).
    pub fn reset(&mut self) {
        self.started = false;
        self.next = 0;
        self.cursor = self.execute;
    }

    /// The manifest's chunking with the executed count in use.
    pub fn chunk(&self) -> manifest::ActionChunk {
        manifest::ActionChunk {
            horizon: self.model.manifest.chunk.horizon,
            execute: self.execute,
        }
    }

    /// Execute `execute` actions of each chunk before deciding again
    /// (1 ≤ execute ≤ horizon); the next `act` decides afresh.
    pub fn set_execute(&mut self, execute: usize) -> Result<(), PolicyError> {
        let chunk = manifest::ActionChunk {
            horizon: self.model.manifest.chunk.horizon,
            execute,
        };
        chunk.validate().map_err(PolicyError::Chunk)?;
        self.execute = execute;
        self.cursor = execute;
        Ok(())
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.model.manifest
    }

    /// The sampler in use.
    pub fn sampler_config(&self) -> SamplerConfig {
        *self.sampler.config()
    }

    /// The engine's name.
    pub fn engine_name(&self) -> String {
        self.model.engine_name()
    }

    /// Whether the head decides directly (a regressor or a classifier: no
    /// denoising loop, the sampler is not used).
    pub fn is_direct(&self) -> bool {
        self.model.manifest.head_kind != HeadKind::Denoiser
    }

    /// What makes the decision, for tables: the sampler's label for a
    /// denoiser, `-` for a regressor, the choice rule for a classifier.
    pub fn decision_label(&self) -> String {
        match self.model.manifest.head_kind {
            HeadKind::Denoiser => self.sampler.config().label(),
            HeadKind::Regressor => "-".into(),
            HeadKind::Classifier => self.choice.name().into(),
        }
    }

    /// How a classifier head chooses (ignored by other heads).
    pub fn choice(&self) -> Choice {
        self.choice
    }

    /// Switch how a classifier head chooses: sample from its softmax, or argmax.
    pub fn set_choice(&mut self, choice: Choice) {
        self.choice = choice;
    }

    /// Values in one observation frame.
    pub fn frame_len(&self) -> usize {
        self.model.manifest.observation.frame_len()
    }

    /// Length of one executed action (a chunk holds `chunk().horizon` of them).
    pub fn action_dim(&self) -> usize {
        self.model.manifest.step_action_dim()
    }

    /// The graphs, for golden checks and direct runs.
    pub fn model_mut(&mut self) -> &mut OnnxModel {
        &mut self.model
    }

    /// One control tick: record `observation` (one frame, raw units) and
    /// return the action to execute now, in raw units. A single-step policy
    /// decides every tick; a chunked one decides when the executed part of
    /// its last chunk is used up, and otherwise hands out the chunk's next
    /// action (the observation still enters the history). A rejected
    /// observation leaves the history and the chunk as they were.
    pub fn act(&mut self, observation: &[f32]) -> Result<&[f32], PolicyError> {
        // The stream is copied out and back (no allocation) so that `step`
        // can borrow the rest of the policy.
        let mut rng = self.rng.clone();
        let result = self.step(observation, &mut rng);
        self.rng = rng;
        let range = result?;
        Ok(&self.action[range])
    }

    /// [`Policy::act`] drawing its randomness from `noise` instead of the
    /// policy's seeded stream (which is left untouched): replaying the draws
    /// a [`crate::NoiseRecorder`] kept reproduces the actions exactly, on any
    /// engine and outside Rust (the end-to-end golden cases, `docs/manifest.md`).
    pub fn act_with_noise<N: Noise + ?Sized>(
        &mut self,
        observation: &[f32],
        noise: &mut N,
    ) -> Result<&[f32], PolicyError> {
        let range = self.step(observation, noise)?;
        Ok(&self.action[range])
    }

    /// Draw `n` decisions for one observation window (every history frame,
    /// oldest first, raw units) in batches: the window is normalised and
    /// encoded once, then the head runs on up to [`SAMPLE_MANY_ROWS`] network
    /// rows per call. Returns `[n, action_dim]` in raw units (a chunked
    /// policy's rows are whole chunks). A regressor repeats its one answer; a
    /// classifier decodes its scores once per row (a fresh draw each when it
    /// samples). This is how evaluation reads a policy's action distribution;
    /// the episode history, the chunk in progress and the policy's own noise
    /// stream are left as they were. Mode channels are set as in `act`
    /// (plain conditioning; steering with other weights is refused).
    pub fn sample_many<N: Noise + ?Sized>(
        &mut self,
        observation: &[f32],
        n: usize,
        noise: &mut N,
    ) -> Result<Vec<f32>, PolicyError> {
        let window = self.model.manifest.observation.input_len();
        if observation.len() != window {
            return Err(PolicyError::Observation(format!(
                "{} values given, the policy takes {window} per observation window ({} frames of {})",
                observation.len(),
                window / self.frame_len().max(1),
                self.frame_len()
            )));
        }
        if let Some(i) = observation.iter().position(|v| !v.is_finite()) {
            return Err(PolicyError::Observation(format!(
                "value {i} is {}",
                observation[i]
            )));
        }
        let mut obs = observation.to_vec();
        self.model
            .manifest
            .normalization
            .observation
            .normalize("observation", &mut obs)
            .map_err(|e| PolicyError::Observation(e.to_string()))?;
        // The policy owns its mode channels here too: the steering's mode
        // input (plain conditioning only), else 0.
        let mode = match &self.steer.steering {
            Some(st) if !st.is_plain() => {
                return Err(PolicyError::Steering(
                    "sample_many draws with plain conditioning only (weight 1, nothing avoided)"
                        .into(),
                ));
            }
            Some(st) => &st.towards[..],
            None => &[][..],
        };
        write_mode(
            &self.steer.offsets,
            &self.steer.scale,
            self.frame_len(),
            mode,
            &mut obs,
        );
        let mut emb = vec![0.0; self.model.manifest.embedding_dim];
        self.model.encode(&obs, &mut emb)?;
        let a = self.model.manifest.action_dim;
        let mut out = vec![0.0f32; n * a];
        decide(
            &mut self.model,
            &mut self.sampler,
            self.choice,
            &emb,
            &mut self.scores,
            noise,
            &mut out,
        )?;
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            return Err(PolicyError::Sampler(format!(
                "action value {} of draw {} is {} (the observation is probably far outside the training data)",
                i % a.max(1),
                i / a.max(1),
                out[i]
            )));
        }
        Ok(out)
    }

    /// One tick; returns where in `self.action` the action to execute is.
    fn step<N: Noise + ?Sized>(
        &mut self,
        observation: &[f32],
        rng: &mut N,
    ) -> Result<std::ops::Range<usize>, PolicyError> {
        let f = self.frame_len();
        if observation.len() != f {
            return Err(PolicyError::Observation(format!(
                "{} values given, the policy takes {f} per frame",
                observation.len()
            )));
        }
        if let Some(i) = observation.iter().position(|v| !v.is_finite()) {
            return Err(PolicyError::Observation(format!(
                "value {i} is {}; nothing was recorded",
                observation[i]
            )));
        }
        let slots = self.frames.len() / f;
        let norm = &self.model.manifest.normalization.observation;
        if self.started {
            let slot = &mut self.frames[self.next * f..(self.next + 1) * f];
            slot.copy_from_slice(observation);
            norm.normalize("observation", slot)
                .map_err(|e| PolicyError::Observation(e.to_string()))?;
        } else {
            // Episode start: every history slot holds the first frame.
            let (first, rest) = self.frames.split_at_mut(f);
            first.copy_from_slice(observation);
            norm.normalize("observation", first)
                .map_err(|e| PolicyError::Observation(e.to_string()))?;
            for chunk in rest.chunks_exact_mut(f) {
                chunk.copy_from_slice(first);
            }
            self.next = 0;
            self.started = true;
        }
        // Oldest first: the slot after the newest one.
        let newest = self.next;
        self.next = (self.next + 1) % slots;
        let d = self.model.manifest.step_action_dim();
        if self.cursor < self.execute {
            let k = self.cursor;
            self.cursor += 1;
            return Ok(k * d..(k + 1) * d);
        }
        for i in 0..slots {
            let src = (newest + 1 + i) % slots;
            self.row[i * f..(i + 1) * f].copy_from_slice(&self.frames[src * f..(src + 1) * f]);
        }
        let Steer {
            offsets,
            scale,
            steering,
            row,
            embeddings,
            weights,
        } = &mut self.steer;
        match steering {
            Some(st) if !st.is_plain() => {
                // The base (no mode) and every variant, encoded one by one
                // into their blocks; one steered sampling over all of them.
                let ed = self.embedding.len();
                let variants = std::iter::once(&[][..])
                    .chain((!st.towards.is_empty()).then_some(&st.towards[..]))
                    .chain(st.away.iter().map(|(v, _)| &v[..]));
                for (b, mode) in variants.enumerate() {
                    row.copy_from_slice(&self.row);
                    write_mode(offsets, scale, f, mode, row);
                    self.model
                        .encode(row, &mut embeddings[b * ed..(b + 1) * ed])?;
                }
                self.sampler.sample_steered(
                    &mut self.model,
                    embeddings,
                    weights,
                    rng,
                    &mut self.action,
                )?;
                self.model
                    .manifest
                    .normalization
                    .action
                    .denormalize(&mut self.action);
            }
            steering => {
                let mode = steering.as_ref().map_or(&[][..], |s| &s.towards[..]);
                write_mode(offsets, scale, f, mode, &mut self.row);
                self.model.encode(&self.row, &mut self.embedding)?;
                decide(
                    &mut self.model,
                    &mut self.sampler,
                    self.choice,
                    &self.embedding,
                    &mut self.scores,
                    rng,
                    &mut self.action,
                )?;
            }
        }
        // No non-finite action leaves the policy, whatever the head: a
        // regressor or classifier fed an observation far outside its data
        // can overflow, and so can de-normalisation.
        if let Some(i) = self.action.iter().position(|v| !v.is_finite()) {
            // The next tick decides afresh instead of handing out this chunk.
            self.cursor = self.execute;
            return Err(PolicyError::Sampler(format!(
                "action value {i} is {} (the observation is probably far outside the training data); nothing to execute",
                self.action[i]
            )));
        }
        self.cursor = 1;
        Ok(0..d)
    }
}
