//! A deployed policy: an exported folder, validated, on an engine.

use crate::engine::{Engine, EngineError, GraphId, TractEngine, TractGraph};
use crate::manifest::{self, HeadKind, MANIFEST_FORMAT, Manifest};
use crate::sampler::{NoiseModel, SamplerConfig};
use crate::schedule::NoiseSchedule;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Which engine runs the graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// tract, pure Rust, CPU.
    #[default]
    Tract,
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
}

/// A loaded, validated policy folder.
pub struct OnnxPolicy {
    /// The manifest.
    pub manifest: Manifest,
    /// The noise schedule of the manifest.
    pub schedule: NoiseSchedule,
    engine: Box<dyn Engine>,
    t_column: Vec<f32>,
}

impl std::fmt::Debug for OnnxPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxPolicy")
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

/// Read and check a manifest (everything that needs no graph).
pub fn read_manifest(dir: &Path) -> Result<(Manifest, NoiseSchedule), PolicyError> {
    let path = dir.join(manifest::MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|cause| PolicyError::Io {
        path: path.clone(),
        cause,
    })?;
    let bad = |message: String| PolicyError::Manifest {
        path: path.clone(),
        message,
    };
    // Look at the format version first, so a newer manifest gets a clear message.
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    match value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
    {
        Some(v) if v == MANIFEST_FORMAT as u64 => {}
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

impl OnnxPolicy {
    /// Load and validate a policy folder (manifest, hashes, tensor names and
    /// shapes) and prepare its graphs on `engine`.
    pub fn load(dir: &Path, engine: EngineChoice) -> Result<Self, PolicyError> {
        let (manifest, schedule) = read_manifest(dir)?;
        for g in [&manifest.encoder, &manifest.head] {
            let path = dir.join(&g.file);
            let bytes = std::fs::read(&path).map_err(|cause| PolicyError::Io {
                path: path.clone(),
                cause,
            })?;
            let actual = sha256_hex(&bytes);
            if actual != g.sha256 {
                return Err(PolicyError::Hash {
                    path,
                    expected: g.sha256.clone(),
                    actual,
                });
            }
        }
        let engine: Box<dyn Engine> = match engine {
            EngineChoice::Tract => Box::new(TractEngine::new(
                TractGraph::load(
                    &dir.join(&manifest.encoder.file),
                    GraphId::Encoder,
                    &manifest.encoder.inputs,
                    &manifest.encoder.outputs,
                )?,
                TractGraph::load(
                    &dir.join(&manifest.head.file),
                    GraphId::Head,
                    &manifest.head.inputs,
                    &manifest.head.outputs,
                )?,
            )),
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
        use crate::golden::{GoldenCase, INDEX_FILE, read_npy};
        let gdir = dir.join(manifest::files::GOLDEN);
        let index = gdir.join(INDEX_FILE);
        let text = std::fs::read_to_string(&index).map_err(|cause| PolicyError::Io {
            path: index.clone(),
            cause,
        })?;
        let cases: Vec<GoldenCase> =
            serde_json::from_str(&text).map_err(|e| PolicyError::Manifest {
                path: index.clone(),
                message: e.to_string(),
            })?;
        let npy = |file: &str| {
            read_npy(&gdir.join(file))
                .map(|(_, v)| v)
                .map_err(|e| PolicyError::Manifest {
                    path: gdir.join(file),
                    message: e.to_string(),
                })
        };
        let (mut worst, mut batches) = (0.0f32, Vec::new());
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
            worst = got
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(worst, f32::max);
            batches.push(case.batch);
        }
        Ok((worst, batches))
    }

    /// Regressor heads: actions (normalised) for embeddings `[rows, E]`.
    pub fn regress(&mut self, embeddings: &[f32], out: &mut [f32]) -> Result<(), EngineError> {
        let rows = embeddings.len() / self.manifest.embedding_dim;
        self.engine.run(GraphId::Head, rows, &[embeddings], out)
    }
}

impl NoiseModel for OnnxPolicy {
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
                message: "this policy's head is a regressor, not a denoiser".into(),
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
