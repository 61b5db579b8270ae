//! diffbc's own executor for the op set that `diffbc export` writes.
//!
//! tract and ONNX Runtime allocate tensors while they run a graph. A control
//! loop must not, so this engine compiles an exported graph once into a flat
//! list of steps over buffers sized at load (and grown only when a larger batch
//! than ever before arrives). After the first call at a given batch size it
//! performs no heap allocation at all; `runtime/tests/no_alloc.rs` proves that
//! with a counting allocator.
//!
//! It reads ONNX with the same prost types the exporter writes with, and
//! refuses (with the node's name) any operator or attribute outside the
//! exported set: Gemm, MatMul, Conv (no groups or dilation), LayerNormalization
//! over the last axis, LeakyRelu, Relu, Erf, Sin, Cos, Tanh, Sigmoid, Add, Sub,
//! Mul, Div, Concat on axis 1, Reshape, Flatten, Identity — and the two
//! ways a reduced-precision export stores a weight ([`crate::weights`]):
//! `Cast` of a FLOAT16 initialiser to f32, and a symmetric `DequantizeLinear`
//! of an INT8 initialiser (one scale, or one per index of `axis`; zero point
//! absent or zeros). Every tensor is `[batch, …]`; constants broadcast over
//! the batch.
//!
//! Matrix products run on the best [`Kernel`] this CPU has (AVX-512F or
//! AVX2 + FMA on x86-64, NEON on aarch64, portable Rust elsewhere), chosen
//! once at load;
//! [`NativeGraph::kernel`] says which. A Gemm/MatMul weight that reaches it
//! through `Cast` or `DequantizeLinear` stays in f16 or int8 in memory (2 or 1
//! byte per weight, plus one f32 scale per output for int8) and is widened
//! inside the kernel, products summed in f32; any other use of such a
//! constant sees its f32 values.

mod compile;
mod exec;
mod kernels;
mod probe;

use compile::{Compiler, Known, tensor_f32, tensor_i64, tensor_reduced};
use exec::{Rhs, binary, conv, layer_norm, unary};
pub use probe::{kernel_peak_gflops, read_bandwidth_gbs};

pub use kernels::Kernel;
use kernels::Matrix;

use crate::engine::{EngineError, GraphBytes};
use crate::onnx as pb;
use prost::Message;
use std::collections::HashMap;

/// A batched value: its buffer, the elements it holds per batch row of the
/// graph input, and its shape after the leading axis. A reshape to
/// `[-1, …]` may fold part of a batch row into the leading axis (history
/// frames through a shared encoder), so the leading axis is `rows × factor`.
#[derive(Debug, Clone)]
struct Value {
    buf: usize,
    per_row: usize,
    shape: Vec<usize>,
}

impl Value {
    /// Elements after the leading axis.
    fn width(&self) -> usize {
        self.shape.iter().product()
    }

    /// Leading-axis entries per batch row.
    fn factor(&self) -> usize {
        self.per_row / self.width().max(1)
    }
}

/// The second operand of a binary op.
#[derive(Debug, Clone, Copy)]
enum Operand {
    /// Another per-row buffer of the same width.
    Row(usize),
    /// A constant of length 1 (scalar) or of the row width (broadcast over rows).
    Const(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Unary {
    LeakyRelu(f32),
    Relu,
    Erf,
    Sin,
    Cos,
    Tanh,
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone)]
enum Step {
    /// `y = x · W (+ b)`; `w_t` (an index into the weights) holds W packed
    /// for the graph's kernel; `factor` matrix rows per batch row.
    Gemm {
        factor: usize,
        x: usize,
        y: usize,
        w_t: usize,
        bias: Option<usize>,
        k: usize,
        n: usize,
    },
    Unary {
        x: usize,
        y: usize,
        op: Unary,
    },
    Binary {
        a: usize,
        b: Operand,
        /// The constant operand comes first (`c - x`, `c / x`).
        swapped: bool,
        y: usize,
        op: Binary,
    },
    Concat {
        factor: usize,
        parts: Vec<(usize, usize)>,
        y: usize,
    },
    LayerNorm {
        x: usize,
        y: usize,
        gamma: usize,
        beta: usize,
        eps: f32,
    },
    Conv(Box<ConvStep>),
}

#[derive(Debug, Clone)]
struct ConvStep {
    factor: usize,
    x: usize,
    y: usize,
    weight: usize,
    bias: Option<usize>,
    /// Input channels, height, width.
    input: [usize; 3],
    /// Output channels, height, width.
    output: [usize; 3],
    kernel: [usize; 2],
    stride: [usize; 2],
    /// Top, left padding.
    pad: [usize; 2],
}

/// A matrix weight in the precision the graph stores it in, laid out for
/// the graph's kernel ([`Kernel::pack`]).
#[derive(Debug, Clone)]
enum WeightBuf {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    /// `w[i, j] = q[i, j] · scale[j]`.
    Int8 {
        q: Vec<i8>,
        scale: Vec<f32>,
    },
}

impl WeightBuf {
    fn matrix(&self) -> Matrix<'_> {
        match self {
            Self::F32(w) => Matrix::F32(w),
            Self::F16(w) => Matrix::F16(w),
            Self::Int8 { q, scale } => Matrix::Int8 { q, scale },
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Self::F32(w) => 4 * w.len(),
            Self::F16(w) => 2 * w.len(),
            Self::Int8 { q, scale } => q.len() + 4 * scale.len(),
        }
    }
}

/// One compiled graph.
#[derive(Debug, Clone)]
pub struct NativeGraph {
    name: &'static str,
    inputs: Vec<Value>,
    output: Value,
    steps: Vec<Step>,
    consts: Vec<Vec<f32>>,
    weights: Vec<WeightBuf>,
    /// Width of each buffer per row.
    widths: Vec<usize>,
    bufs: Vec<Vec<f32>>,
    rows_capacity: usize,
    flops_per_row: u64,
    kernel: Kernel,
}

impl NativeGraph {
    /// Compile `source`, whose inputs must be `inputs` (the manifest's, in
    /// graph order: names checked, per-row widths taken from the shapes).
    pub fn load(
        source: GraphBytes<'_>,
        name: &'static str,
        inputs: &[crate::manifest::TensorSpec],
    ) -> Result<Self, EngineError> {
        let err = |message: String| EngineError::Load {
            path: source.path.to_path_buf(),
            message,
        };
        let model = pb::ModelProto::decode(source.bytes)
            .map_err(|e| err(format!("not a readable ONNX graph: {e}")))?;
        let graph = model
            .graph
            .ok_or_else(|| err("the model has no graph".into()))?;
        let mut c = Compiler {
            known: HashMap::new(),
            widths: Vec::new(),
            consts: Vec::new(),
            weights: Vec::new(),
            steps: Vec::new(),
            flops: 0,
            kernel: Kernel::detect(),
        };
        for t in &graph.initializer {
            if t.data_location == Some(crate::onnx::tensor_proto::EXTERNAL) {
                return Err(err(format!(
                    "initialiser {} keeps its values in an external file; \
                     diffbc's graphs are self-contained (export them again)",
                    t.name
                )));
            }
            let known = if t.data_type == 7 {
                Known::Shape(tensor_i64(t).map_err(&err)?)
            } else if matches!(t.data_type, 3 | 10) {
                tensor_reduced(t).map_err(&err)?
            } else {
                let (d, v) = tensor_f32(t).map_err(&err)?;
                Known::Const(d, v)
            };
            c.known.insert(t.name.clone(), known);
        }
        let declared: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !c.known.contains_key(&i.name))
            .collect();
        let names: Vec<&str> = declared.iter().map(|i| i.name.as_str()).collect();
        let expected: Vec<&str> = inputs.iter().map(|s| s.name.as_str()).collect();
        if names != expected {
            return Err(err(format!(
                "graph inputs are {names:?}, the manifest says {expected:?}"
            )));
        }
        let specs = inputs;
        let mut inputs = Vec::new();
        for (info, spec) in declared.iter().zip(specs) {
            let v = c.new_buf(1, vec![spec.row_len()]);
            c.known.insert(info.name.clone(), Known::Row(v.clone()));
            inputs.push(v);
        }
        for node in &graph.node {
            c.node(node).map_err(|m| {
                err(format!(
                    "node {:?} ({}): {m}",
                    node.name,
                    node.op_type.as_str()
                ))
            })?;
        }
        let out_name = &graph
            .output
            .first()
            .ok_or_else(|| err("the graph has no output".into()))?
            .name;
        let output = c
            .row(out_name)
            .map_err(|m| err(format!("output {out_name}: {m}")))?;
        let bufs = vec![Vec::new(); c.widths.len()];
        Ok(Self {
            name,
            inputs,
            output,
            steps: c.steps,
            consts: c.consts,
            weights: c.weights,
            widths: c.widths,
            bufs,
            rows_capacity: 0,
            flops_per_row: c.flops,
            kernel: c.kernel,
        })
    }

    /// The matrix kernel this graph runs, chosen for this CPU at load.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Floating-point operations per batch row, counted from the graph:
    /// 2 per multiply-add of Gemm/MatMul/Conv, one per element of
    /// element-wise ops, 8 per element of a layer norm.
    pub fn flops_per_row(&self) -> u64 {
        self.flops_per_row
    }

    /// Bytes of constants one call reads: every matrix weight in the
    /// precision and layout it is kept in (int8 scales and a last panel's
    /// zero padding included), and every other
    /// constant (biases, norms, convolution kernels) as f32.
    pub fn weight_bytes(&self) -> usize {
        self.weights.iter().map(WeightBuf::bytes).sum::<usize>()
            + self.consts.iter().map(|c| 4 * c.len()).sum::<usize>()
    }

    /// [`NativeGraph::weight_bytes`] with every matrix weight in f32 and
    /// unpadded (`4 · k · n` bytes each): what an engine that widens reduced
    /// weights once at load (tract) reads per call.
    pub fn weight_bytes_f32(&self) -> usize {
        let matrices: usize = self
            .steps
            .iter()
            .map(|s| match s {
                Step::Gemm { k, n, .. } => 4 * k * n,
                _ => 0,
            })
            .sum();
        matrices + self.consts.iter().map(|c| 4 * c.len()).sum::<usize>()
    }

    /// Size every buffer for `rows` rows (done once; later calls with at
    /// most this many rows allocate nothing).
    pub fn reserve(&mut self, rows: usize) {
        if rows <= self.rows_capacity {
            return;
        }
        for (b, w) in self.bufs.iter_mut().zip(&self.widths) {
            b.resize(rows * w, 0.0);
        }
        self.rows_capacity = rows;
    }

    /// Run on `rows` rows.
    pub fn run(
        &mut self,
        rows: usize,
        inputs: &[&[f32]],
        output: &mut [f32],
    ) -> Result<(), EngineError> {
        let name = self.name;
        let err = |message: String| EngineError::Run {
            graph: name,
            message,
        };
        if inputs.len() != self.inputs.len() {
            return Err(err(format!(
                "{} inputs given, the graph takes {}",
                inputs.len(),
                self.inputs.len()
            )));
        }
        for (i, (data, v)) in inputs.iter().zip(&self.inputs).enumerate() {
            if data.len() != rows * v.per_row {
                return Err(err(format!(
                    "input {i} has {} values, expected {rows} × {}",
                    data.len(),
                    v.per_row
                )));
            }
        }
        if output.len() != rows * self.output.per_row {
            return Err(err(format!(
                "output has room for {} values, expected {rows} × {}",
                output.len(),
                self.output.per_row
            )));
        }
        self.reserve(rows);
        for (data, v) in inputs.iter().zip(&self.inputs) {
            self.bufs[v.buf][..data.len()].copy_from_slice(data);
        }
        for i in 0..self.steps.len() {
            self.step(i, rows);
        }
        output.copy_from_slice(&self.bufs[self.output.buf][..output.len()]);
        Ok(())
    }

    fn step(&mut self, i: usize, rows: usize) {
        let consts = &self.consts;
        let weights = &self.weights;
        let widths = &self.widths;
        let bufs = &mut self.bufs;
        // Take the output buffer out so inputs can be borrowed beside it
        // (moving a Vec does not allocate).
        let y_id = match &self.steps[i] {
            Step::Gemm { y, .. }
            | Step::Unary { y, .. }
            | Step::Binary { y, .. }
            | Step::Concat { y, .. }
            | Step::LayerNorm { y, .. } => *y,
            Step::Conv(c) => c.y,
        };
        let mut y_buf = std::mem::take(&mut bufs[y_id]);
        let y = &mut y_buf[..rows * widths[y_id]];
        match &self.steps[i] {
            &Step::Gemm {
                factor,
                x,
                w_t,
                bias,
                k,
                n,
                ..
            } => {
                let x = &bufs[x][..rows * factor * k];
                self.kernel.gemm_matrix(
                    x,
                    weights[w_t].matrix(),
                    bias.map(|b| consts[b].as_slice()),
                    y,
                    k,
                    n,
                );
            }
            step => self.kernel.run_vectorised(Loops {
                step,
                bufs,
                consts,
                widths,
                y,
                y_id,
                rows,
            }),
        }
        bufs[y_id] = y_buf;
    }
}

/// A step other than a matrix product, with its buffers: the loops
/// [`Kernel::run_vectorised`] compiles for the graph's instruction set.
struct Loops<'a> {
    step: &'a Step,
    bufs: &'a [Vec<f32>],
    consts: &'a [Vec<f32>],
    widths: &'a [usize],
    y: &'a mut [f32],
    y_id: usize,
    rows: usize,
}

impl kernels::Loops for Loops<'_> {
    #[inline(always)]
    fn run(self) {
        let Loops {
            step,
            bufs,
            consts,
            widths,
            y,
            y_id,
            rows,
        } = self;
        match step {
            // Matrix products run on the kernel itself.
            Step::Gemm { .. } => {}
            &Step::Unary { x, op, .. } => {
                let x = &bufs[x][..y.len()];
                unary(op, x, y);
            }
            &Step::Binary {
                a, b, swapped, op, ..
            } => {
                let a = &bufs[a][..y.len()];
                let b = match b {
                    Operand::Row(b) => Rhs::Row(&bufs[b][..y.len()]),
                    Operand::Const(c) if consts[c].len() == 1 => Rhs::Scalar(consts[c][0]),
                    Operand::Const(c) => Rhs::Broadcast(&consts[c]),
                };
                binary(op, swapped, y, a, b);
            }
            Step::Concat { factor, parts, .. } => {
                let w = widths[y_id] / factor;
                for r in 0..rows * factor {
                    let mut at = r * w;
                    for &(p, pw) in parts {
                        y[at..at + pw].copy_from_slice(&bufs[p][r * pw..(r + 1) * pw]);
                        at += pw;
                    }
                }
            }
            &Step::LayerNorm {
                x,
                gamma,
                beta,
                eps,
                ..
            } => {
                let x = &bufs[x][..y.len()];
                layer_norm(x, &consts[gamma], &consts[beta], eps, y);
            }
            Step::Conv(c) => conv(c, &bufs[c.x], consts, y, rows),
        }
    }
}
