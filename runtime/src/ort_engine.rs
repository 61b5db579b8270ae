//! ONNX Runtime through `ort` (cargo feature `ort`).
//!
//! The library is loaded at run time from `ORT_DYLIB_PATH`
//! (`scripts/fetch-onnxruntime.sh` fetches it from PyPI). The execution
//! provider is the user's choice; if it cannot be registered the load fails —
//! there is no silent fallback to the CPU.

use crate::engine::{Engine, EngineError, ExecutionProvider, GraphBytes, GraphId};
use crate::manifest::TensorSpec;
use ort::environment::Environment;
use ort::ep;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The environment variable naming the ONNX Runtime shared library.
pub const DYLIB_VAR: &str = "ORT_DYLIB_PATH";

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// Load ONNX Runtime from `ORT_DYLIB_PATH`, once per process.
fn environment() -> Result<&'static Environment, EngineError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let path = std::env::var_os(DYLIB_VAR).map(PathBuf::from).ok_or_else(|| {
        EngineError::Library(format!(
            "{DYLIB_VAR} is not set; run scripts/fetch-onnxruntime.sh and export the path it prints"
        ))
    })?;
    load_library(&path)
}

/// Load ONNX Runtime from `path` (once per process: later calls return the
/// library already loaded, after checking that `path` exists).
pub fn load_library(path: &Path) -> Result<&'static Environment, EngineError> {
    if !path.is_file() {
        return Err(EngineError::Library(format!(
            "{}: no such file (run scripts/fetch-onnxruntime.sh and set {DYLIB_VAR})",
            path.display()
        )));
    }
    let _guard = INIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let env = ort::init_from(path)
        .map_err(|e| EngineError::Library(format!("{}: {e}", path.display())))?
        .with_name("diffbc")
        .build()
        .map_err(|e| EngineError::Library(format!("{}: {e}", path.display())))?;
    tracing::info!(library = %path.display(), "ONNX Runtime loaded");
    Ok(ENVIRONMENT.get_or_init(|| env))
}

fn provider_available<E: ep::ExecutionProvider>() -> Result<bool, EngineError> {
    E::is_available().map_err(|e| EngineError::Library(e.to_string()))
}

/// Whether the loaded ONNX Runtime library itself reports `provider` as
/// available (compiled in; CPU always is). A load on a provider it does not
/// report fails with [`EngineError::Provider`] instead of falling back.
pub fn is_available(provider: ExecutionProvider) -> Result<bool, EngineError> {
    match provider {
        ExecutionProvider::Cpu => provider_available::<ep::CPU>(),
        ExecutionProvider::Cuda { .. } => provider_available::<ep::CUDA>(),
        ExecutionProvider::TensorRt { .. } => provider_available::<ep::TensorRT>(),
    }
}

/// One ONNX Runtime session per graph.
pub struct OrtEngine {
    encoder: Session,
    head: Session,
    provider: ExecutionProvider,
}

impl std::fmt::Debug for OrtEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtEngine")
            .field("provider", &self.provider)
            .finish()
    }
}

fn session(
    source: GraphBytes<'_>,
    inputs: &[TensorSpec],
    provider: ExecutionProvider,
    threads: usize,
) -> Result<Session, EngineError> {
    let env = environment()?;
    let err = |message: String| EngineError::Load {
        path: source.path.to_path_buf(),
        message,
    };
    let mut builder = Session::builder(env)
        .map_err(|e| err(e.to_string()))?
        .with_intra_threads(threads.max(1))
        .map_err(|e| err(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| err(e.to_string()))?
        // ONNX Runtime fuses an int8 weight's DequantizeLinear and its
        // MatMul/Gemm into MatMulNBits, which by default (accuracy level 4)
        // quantises the activations to int8 as well: outputs ~1e-2 off the
        // weight-only definition (docs/manifest.md). Level 1 computes in f32.
        .with_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
        .map_err(|e| err(e.to_string()))?;
    let missing = |name: &str| {
        EngineError::Provider {
        provider: name.to_string(),
        message: "this ONNX Runtime library was built without it (fetch onnxruntime-gpu: scripts/fetch-onnxruntime.sh --gpu)".into(),
    }
    };
    let registration = |name: &str, e: String| EngineError::Provider {
        provider: name.to_string(),
        message: format!("registration failed: {e}"),
    };
    match provider {
        ExecutionProvider::Cpu => {}
        ExecutionProvider::Cuda { device } => {
            if !provider_available::<ep::CUDA>()? {
                return Err(missing("CUDA"));
            }
            builder = builder
                .with_execution_providers([ep::CUDA::default()
                    .with_device_id(device)
                    .build()
                    .error_on_failure()])
                .map_err(|e| registration("CUDA", e.to_string()))?;
        }
        ExecutionProvider::TensorRt { device } => {
            if !provider_available::<ep::TensorRT>()? {
                return Err(missing("TensorRT"));
            }
            builder = builder
                .with_execution_providers([ep::TensorRT::default()
                    .with_device_id(device)
                    .build()
                    .error_on_failure()])
                .map_err(|e| registration("TensorRT", e.to_string()))?;
        }
    }
    let session = builder
        .commit_from_memory(source.bytes)
        .map_err(|e| err(e.to_string()))?;
    let names: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
    let expected: Vec<&str> = inputs.iter().map(|s| s.name.as_str()).collect();
    if names != expected {
        return Err(err(format!(
            "graph inputs are {names:?}, the manifest says {expected:?}"
        )));
    }
    Ok(session)
}

impl OrtEngine {
    /// Create both sessions on `provider` with `threads` intra-op threads.
    pub fn load(
        encoder: (GraphBytes<'_>, &[TensorSpec]),
        head: (GraphBytes<'_>, &[TensorSpec]),
        provider: ExecutionProvider,
        threads: usize,
    ) -> Result<Self, EngineError> {
        let engine = Self {
            encoder: session(encoder.0, encoder.1, provider, threads)?,
            head: session(head.0, head.1, provider, threads)?,
            provider,
        };
        tracing::info!(
            provider = %provider,
            threads,
            "ONNX Runtime sessions ready; execution provider registered: {provider} (nodes it cannot run stay on CPU)"
        );
        Ok(engine)
    }
}

impl Engine for OrtEngine {
    fn name(&self) -> String {
        format!("ort-{}", self.provider.short())
    }

    fn run(
        &mut self,
        graph: GraphId,
        rows: usize,
        inputs: &[&[f32]],
        output: &mut [f32],
    ) -> Result<(), EngineError> {
        let name = graph.name();
        let err = |message: String| EngineError::Run {
            graph: name,
            message,
        };
        let session = match graph {
            GraphId::Encoder => &mut self.encoder,
            GraphId::Head => &mut self.head,
        };
        if inputs.len() != session.inputs().len() {
            return Err(err(format!(
                "{} inputs given, the graph takes {}",
                inputs.len(),
                session.inputs().len()
            )));
        }
        let mut values = Vec::with_capacity(inputs.len());
        for (i, data) in inputs.iter().enumerate() {
            if rows == 0 || !data.len().is_multiple_of(rows) {
                return Err(err(format!(
                    "input {i} has {} values for {rows} rows",
                    data.len()
                )));
            }
            let width = data.len() / rows;
            let t = TensorRef::from_array_view(([rows, width], *data))
                .map_err(|e| err(e.to_string()))?;
            values.push(ort::session::SessionInputValue::from(t));
        }
        let outputs = session
            .run(values.as_slice())
            .map_err(|e| err(e.to_string()))?;
        let (_, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| err(e.to_string()))?;
        if data.len() != output.len() {
            return Err(err(format!(
                "output has {} values, expected {}",
                data.len(),
                output.len()
            )));
        }
        output.copy_from_slice(data);
        Ok(())
    }
}
