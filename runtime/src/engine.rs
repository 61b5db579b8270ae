//! Inference engines behind one trait. `tract` (pure Rust, CPU) and the
//! `native` executor are always available; ONNX Runtime comes behind the `ort`
//! feature.

use crate::native::NativeGraph;
use std::path::{Path, PathBuf};

/// Which graph of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphId {
    /// `encoder.onnx`.
    Encoder,
    /// `denoiser.onnx` or `regressor.onnx`.
    Head,
}

impl GraphId {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Encoder => "encoder",
            Self::Head => "head",
        }
    }
}

/// A graph's bytes as the loader read them (from inside the model folder,
/// size-capped, hash-checked), with the path that names them in errors.
/// Engines parse these bytes; none opens the graph file again.
#[derive(Debug, Clone, Copy)]
pub struct GraphBytes<'a> {
    /// Where the bytes came from (for messages only).
    pub path: &'a Path,
    /// The serialised ONNX model.
    pub bytes: &'a [u8],
}

/// Errors of an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A graph could not be loaded or prepared.
    #[error("{path}: {message}")]
    Load {
        /// The graph file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The ONNX Runtime library is missing or unusable.
    #[error("ONNX Runtime: {0}")]
    Library(String),
    /// The requested execution provider cannot be used.
    #[error("execution provider {provider} is not available: {message}")]
    Provider {
        /// The provider asked for.
        provider: String,
        /// Why not.
        message: String,
    },
    /// This build lacks the engine.
    #[error("the {engine} engine is not in this build (rebuild with `--features {feature}`)")]
    NotBuilt {
        /// The engine asked for.
        engine: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// A graph failed while running.
    #[error("running the {graph} graph: {message}")]
    Run {
        /// Which graph.
        graph: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Where ONNX Runtime runs the graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionProvider {
    /// ONNX Runtime's own CPU kernels.
    Cpu,
    /// NVIDIA CUDA on one device.
    Cuda {
        /// CUDA device index.
        device: i32,
    },
    /// NVIDIA TensorRT on one device.
    TensorRt {
        /// CUDA device index.
        device: i32,
    },
}

impl ExecutionProvider {
    /// `cpu`, `cuda`, `tensorrt` (with `:N` for a device other than 0).
    pub fn short(&self) -> String {
        match *self {
            Self::Cpu => "cpu".into(),
            Self::Cuda { device: 0 } => "cuda".into(),
            Self::Cuda { device } => format!("cuda:{device}"),
            Self::TensorRt { device: 0 } => "tensorrt".into(),
            Self::TensorRt { device } => format!("tensorrt:{device}"),
        }
    }
}

impl std::fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("CPU"),
            Self::Cuda { device } => write!(f, "CUDA (device {device})"),
            Self::TensorRt { device } => write!(f, "TensorRT (device {device})"),
        }
    }
}

/// Runs the two graphs of a policy.
pub trait Engine: Send {
    /// A short name for tables (`tract`, `native`, `ort-cpu`, …).
    fn name(&self) -> String;

    /// Prepare for batches of up to `rows` rows of `graph`, so that later runs
    /// need no new buffers. Engines that allocate per run ignore it.
    fn reserve(&mut self, graph: GraphId, rows: usize) {
        let _ = (graph, rows);
    }

    /// Run `graph` on `rows` rows. `inputs` are in graph order, each
    /// `[rows, width]` row-major; the single output `[rows, width]` goes to `output`.
    fn run(
        &mut self,
        graph: GraphId,
        rows: usize,
        inputs: &[&[f32]],
        output: &mut [f32],
    ) -> Result<(), EngineError>;
}

/// diffbc's allocation-free executor ([`crate::native`]), single-threaded.
#[derive(Debug, Clone)]
pub struct NativeEngine {
    encoder: NativeGraph,
    head: NativeGraph,
}

impl NativeEngine {
    /// Compile both graphs, each with the inputs its manifest entry declares.
    pub fn load(
        encoder: (GraphBytes<'_>, &[crate::manifest::TensorSpec]),
        head: (GraphBytes<'_>, &[crate::manifest::TensorSpec]),
    ) -> Result<Self, EngineError> {
        Ok(Self {
            encoder: NativeGraph::load(encoder.0, GraphId::Encoder.name(), encoder.1)?,
            head: NativeGraph::load(head.0, GraphId::Head.name(), head.1)?,
        })
    }

    /// The matrix kernel both graphs run ([`crate::native::Kernel::detect`]).
    pub fn kernel(&self) -> crate::native::Kernel {
        self.encoder.kernel()
    }
}

impl Engine for NativeEngine {
    fn name(&self) -> String {
        "native".into()
    }

    fn reserve(&mut self, graph: GraphId, rows: usize) {
        match graph {
            GraphId::Encoder => self.encoder.reserve(rows),
            GraphId::Head => self.head.reserve(rows),
        }
    }

    fn run(
        &mut self,
        graph: GraphId,
        rows: usize,
        inputs: &[&[f32]],
        output: &mut [f32],
    ) -> Result<(), EngineError> {
        match graph {
            GraphId::Encoder => self.encoder.run(rows, inputs, output),
            GraphId::Head => self.head.run(rows, inputs, output),
        }
    }
}
