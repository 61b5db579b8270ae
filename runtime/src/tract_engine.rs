//! The tract engine: pure Rust, the graphs optimised once at load (behind
//! the `tract` feature, on by default; the native and ONNX Runtime engines
//! need none of tract). On the CPU, or with the `tract-cuda` feature on an
//! NVIDIA GPU through tract's CUDA runtime (`tract-cuda`), which loads the
//! driver, the CUDA runtime, NVRTC, cuBLAS and cuDNN when a graph is first
//! prepared: a build needs none of them.

use crate::engine::{Engine, EngineError, GraphBytes, GraphId};
use crate::manifest::TensorSpec;
use std::path::PathBuf;
use std::sync::Arc;
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;

/// Where tract runs a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TractDevice {
    /// tract's own CPU kernels.
    Cpu,
    /// tract's CUDA runtime on GPU 0 (`CUDA_VISIBLE_DEVICES` picks which).
    Cuda,
}

impl TractDevice {
    /// The engine's name in tables and on the command line.
    pub fn engine_name(self) -> &'static str {
        match self {
            Self::Cpu => "tract",
            Self::Cuda => "tract-cuda",
        }
    }
}

/// One graph prepared by tract: a plan for any batch, plus plans optimised
/// for the exact batch sizes the sampler uses (see [`Engine::reserve`]).
#[derive(Debug, Clone)]
pub struct TractGraph {
    plan: Arc<dyn Runnable>,
    fixed: Vec<(usize, Arc<dyn Runnable>)>,
    device: TractDevice,
    path: PathBuf,
    bytes: Arc<[u8]>,
    widths: Vec<usize>,
    name: &'static str,
}

impl TractGraph {
    /// Parse `source`, declare every input `[batch, width]` f32, check the
    /// graph's input and output names against `inputs` / `outputs`, and
    /// optimise once for `device`. The graph must be self-contained (no
    /// external data).
    pub fn load(
        source: GraphBytes<'_>,
        graph: GraphId,
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
        device: TractDevice,
    ) -> Result<Self, EngineError> {
        let path = source.path;
        let err = |message: String| EngineError::Load {
            path: path.to_path_buf(),
            message,
        };
        let model = tract_onnx::onnx()
            .model_for_read(&mut &source.bytes[..])
            .map_err(|e| err(format!("not a readable ONNX graph: {e}")))?;
        let names: Vec<String> = model
            .input_outlets()
            .map_err(|e| err(e.to_string()))?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let expected: Vec<&str> = inputs.iter().map(|s| s.name.as_str()).collect();
        if names != expected {
            return Err(err(format!(
                "graph inputs are {names:?}, the manifest says {expected:?}"
            )));
        }
        let out_names: Vec<String> = model
            .output_outlets()
            .map_err(|e| err(e.to_string()))?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        let expected_out: Vec<&str> = outputs.iter().map(|s| s.name.as_str()).collect();
        if out_names != expected_out {
            return Err(err(format!(
                "graph outputs are {out_names:?}, the manifest says {expected_out:?}"
            )));
        }
        let widths: Vec<usize> = inputs.iter().map(TensorSpec::row_len).collect();
        let batch: TDim = model.sym("batch").into();
        let plan = Self::prepare(model, batch, &widths, device).map_err(err)?;
        Ok(Self {
            plan,
            fixed: Vec::new(),
            device,
            path: path.to_path_buf(),
            bytes: source.bytes.into(),
            widths,
            name: graph.name(),
        })
    }

    fn prepare(
        mut model: InferenceModel,
        batch: TDim,
        widths: &[usize],
        device: TractDevice,
    ) -> Result<Arc<dyn Runnable>, String> {
        for (i, w) in widths.iter().enumerate() {
            let shape: TVec<TDim> = tvec![batch.clone(), (*w).into()];
            model = model
                .with_input_fact(i, f32::fact(shape).into())
                .map_err(|e| e.to_string())?;
        }
        match device {
            TractDevice::Cpu => model
                .into_optimized()
                .and_then(|m| m.into_runnable())
                .map(|plan| Arc::new(plan) as Arc<dyn Runnable>)
                .map_err(|e| format!("tract cannot prepare the graph: {e}")),
            TractDevice::Cuda => {
                let typed = model
                    .into_typed()
                    .and_then(|m| m.into_decluttered())
                    .map_err(|e| format!("tract cannot prepare the graph: {e}"))?;
                cuda::prepare(typed)
            }
        }
    }

    /// Add a plan optimised for exactly `rows` rows (a no-op if present).
    pub fn reserve(&mut self, rows: usize) -> Result<(), EngineError> {
        if rows == 0 || self.fixed.iter().any(|(r, _)| *r == rows) {
            return Ok(());
        }
        let err = |message: String| EngineError::Load {
            path: self.path.clone(),
            message,
        };
        let model = tract_onnx::onnx()
            .model_for_read(&mut &self.bytes[..])
            .map_err(|e| err(e.to_string()))?;
        let plan = Self::prepare(model, rows.into(), &self.widths, self.device).map_err(err)?;
        self.fixed.push((rows, plan));
        Ok(())
    }

    /// Run on `rows` rows.
    pub fn run(
        &self,
        rows: usize,
        inputs: &[&[f32]],
        output: &mut [f32],
    ) -> Result<(), EngineError> {
        let err = |message: String| EngineError::Run {
            graph: self.name,
            message,
        };
        if inputs.len() != self.widths.len() {
            return Err(err(format!(
                "{} inputs given, the graph takes {}",
                inputs.len(),
                self.widths.len()
            )));
        }
        let mut values = TVec::new();
        for (i, (data, w)) in inputs.iter().zip(&self.widths).enumerate() {
            if data.len() != rows * w {
                return Err(err(format!(
                    "input {i} has {} values, expected {rows} × {w}",
                    data.len()
                )));
            }
            let t = Tensor::from_shape(&[rows, *w], data).map_err(|e| err(e.to_string()))?;
            values.push(t.into_tvalue());
        }
        let plan = self
            .fixed
            .iter()
            .find(|(r, _)| *r == rows)
            .map_or(&self.plan, |(_, p)| p);
        let out = plan.run(values).map_err(|e| err(e.to_string()))?;
        let first = out
            .first()
            .ok_or_else(|| err("the graph produced no output".into()))?;
        let view = first.try_as_plain_ram().map_err(|e| err(e.to_string()))?;
        let slice = view.as_slice::<f32>().map_err(|e| err(e.to_string()))?;
        if slice.len() != output.len() {
            return Err(err(format!(
                "output has {} values, expected {}",
                slice.len(),
                output.len()
            )));
        }
        output.copy_from_slice(slice);
        Ok(())
    }
}

/// The tract engine: both graphs optimised once at load, run on one thread
/// or on a private pool of `threads` (on the CPU), or on the GPU.
#[derive(Debug, Clone)]
pub struct TractEngine {
    encoder: TractGraph,
    head: TractGraph,
    executor: Executor,
}

impl TractEngine {
    /// Wrap two prepared graphs; `threads` > 1 runs matrix products on a
    /// private pool of that many threads.
    pub fn new(encoder: TractGraph, head: TractGraph, threads: usize) -> Self {
        let executor = if threads > 1 {
            Executor::multithread_with_name(threads, "diffbc-tract")
        } else {
            Executor::SingleThread
        };
        Self {
            encoder,
            head,
            executor,
        }
    }
}

impl Engine for TractEngine {
    fn name(&self) -> String {
        self.encoder.device.engine_name().into()
    }

    fn reserve(&mut self, graph: GraphId, rows: usize) {
        let g = match graph {
            GraphId::Encoder => &mut self.encoder,
            GraphId::Head => &mut self.head,
        };
        // A batch-specific plan is an optimisation; the symbolic plan still
        // runs any batch if tract cannot specialise.
        if let Err(e) = g.reserve(rows) {
            tracing::warn!("{}: no plan for batch {rows}: {e}", g.device.engine_name());
        }
    }

    fn run(
        &mut self,
        graph: GraphId,
        rows: usize,
        inputs: &[&[f32]],
        output: &mut [f32],
    ) -> Result<(), EngineError> {
        let g = match graph {
            GraphId::Encoder => &self.encoder,
            GraphId::Head => &self.head,
        };
        match self.executor {
            Executor::SingleThread => g.run(rows, inputs, output),
            _ => tract_linalg::multithread::multithread_tract_scope(self.executor.clone(), || {
                g.run(rows, inputs, output)
            }),
        }
    }
}

/// tract's CUDA runtime, when this build has it.
#[cfg(feature = "tract-cuda")]
mod cuda {
    use super::*;
    // Linked for its runtime: `tract-cuda` registers itself as "cuda".
    use tract_cuda as _;

    /// Translate `model` to CUDA kernels and upload its weights. tract-cuda
    /// panics when it finds the libraries but cannot create a context (no
    /// usable GPU): that becomes an error here, so a load never unwinds
    /// into the caller.
    pub(super) fn prepare(model: TypedModel) -> Result<Arc<dyn Runnable>, String> {
        let runtime = tract_onnx::tract_core::runtime::runtime_for_name("cuda")
            .map_err(|e| format!("tract-cuda cannot start: {e:#}"))?
            .ok_or_else(|| {
                "tract-cuda: the CUDA runtime is not linked into this build".to_string()
            })?;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.prepare(model))) {
            Ok(Ok(plan)) => Ok(Arc::from(plan)),
            Ok(Err(e)) => Err(format!("tract-cuda cannot prepare the graph: {e:#}")),
            Err(panic) => Err(format!(
                "tract-cuda failed to start CUDA: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            )),
        }
    }
}

/// tract's CUDA runtime, when this build has it.
#[cfg(not(feature = "tract-cuda"))]
mod cuda {
    use super::*;

    pub(super) fn prepare(_: TypedModel) -> Result<Arc<dyn Runnable>, String> {
        Err(
            "the tract-cuda engine is not in this build (rebuild with `--features tract-cuda`)"
                .into(),
        )
    }
}
