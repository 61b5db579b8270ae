//! The tract engine: pure Rust, CPU, the graphs optimised once at load
//! (behind the `tract` feature, on by default; the native and ONNX Runtime
//! engines need none of tract).

use crate::engine::{Engine, EngineError, GraphBytes, GraphId};
use crate::manifest::TensorSpec;
use std::path::PathBuf;
use std::sync::Arc;
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;

/// One graph prepared by tract: a plan for any batch, plus plans optimised
/// for the exact batch sizes the sampler uses (see [`Engine::reserve`]).
#[derive(Debug, Clone)]
pub struct TractGraph {
    plan: Arc<TypedRunnableModel>,
    fixed: Vec<(usize, Arc<TypedRunnableModel>)>,
    path: PathBuf,
    bytes: Arc<[u8]>,
    widths: Vec<usize>,
    name: &'static str,
}

impl TractGraph {
    /// Parse `source`, declare every input `[batch, width]` f32, check the
    /// graph's input and output names against `inputs` / `outputs`, and
    /// optimise once. The graph must be self-contained (no external data).
    pub fn load(
        source: GraphBytes<'_>,
        graph: GraphId,
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
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
        let plan = Self::prepare(model, batch, &widths).map_err(err)?;
        Ok(Self {
            plan,
            fixed: Vec::new(),
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
    ) -> Result<Arc<TypedRunnableModel>, String> {
        for (i, w) in widths.iter().enumerate() {
            let shape: TVec<TDim> = tvec![batch.clone(), (*w).into()];
            model = model
                .with_input_fact(i, f32::fact(shape).into())
                .map_err(|e| e.to_string())?;
        }
        model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("tract cannot prepare the graph: {e}"))
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
        let plan = Self::prepare(model, rows.into(), &self.widths).map_err(err)?;
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
/// or on a private pool of `threads`.
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
        "tract".into()
    }

    fn reserve(&mut self, graph: GraphId, rows: usize) {
        let g = match graph {
            GraphId::Encoder => &mut self.encoder,
            GraphId::Head => &mut self.head,
        };
        // A batch-specific plan is an optimisation; the symbolic plan still
        // runs any batch if tract cannot specialise.
        if let Err(e) = g.reserve(rows) {
            tracing::warn!("tract: no plan for batch {rows}: {e}");
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
