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
//! Mul, Div, Concat on axis 1, Reshape, Flatten, Identity. Every tensor is
//! `[batch, …]`; constants broadcast over the batch.
//!
//! Matrix products run on the best [`Kernel`] this CPU has (AVX2 + FMA on
//! x86-64, NEON on aarch64, portable Rust elsewhere), chosen once at load;
//! [`NativeGraph::kernel`] says which.

mod kernels;

pub use kernels::Kernel;

use crate::engine::{EngineError, GraphBytes};
use prost::Message;
use std::collections::HashMap;
use tract_onnx::pb;

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
    /// `y = x · W (+ b)`; `w_t` holds W transposed, `[n, k]`; `factor`
    /// matrix rows per batch row.
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

/// One compiled graph.
#[derive(Debug, Clone)]
pub struct NativeGraph {
    name: &'static str,
    inputs: Vec<Value>,
    output: Value,
    steps: Vec<Step>,
    consts: Vec<Vec<f32>>,
    /// Width of each buffer per row.
    widths: Vec<usize>,
    bufs: Vec<Vec<f32>>,
    rows_capacity: usize,
    flops_per_row: u64,
    kernel: Kernel,
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn tensor_f32(t: &pb::TensorProto) -> Result<(Vec<usize>, Vec<f32>), String> {
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = dims.iter().product();
    let data: Vec<f32> = match t.data_type {
        1 if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        1 => t.float_data.clone(),
        7 if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        7 => t.int64_data.iter().map(|&v| v as f32).collect(),
        other => return Err(format!("initialiser {} has data type {other}", t.name)),
    };
    if data.len() != n {
        return Err(format!(
            "initialiser {} has {} values for dims {dims:?}",
            t.name,
            data.len()
        ));
    }
    Ok((dims, data))
}

fn tensor_i64(t: &pb::TensorProto) -> Result<Vec<i64>, String> {
    match t.data_type {
        7 if !t.raw_data.is_empty() => Ok(t
            .raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()),
        7 => Ok(t.int64_data.clone()),
        other => Err(format!(
            "shape initialiser {} has data type {other}",
            t.name
        )),
    }
}

/// Everything the compiler knows about a name.
enum Known {
    Row(Value),
    Const(Vec<usize>, Vec<f32>),
    Shape(Vec<i64>),
}

struct Compiler {
    known: HashMap<String, Known>,
    widths: Vec<usize>,
    consts: Vec<Vec<f32>>,
    steps: Vec<Step>,
    flops: u64,
}

impl Compiler {
    /// A new buffer for a value with `factor` leading entries per batch row.
    fn new_buf(&mut self, factor: usize, shape: Vec<usize>) -> Value {
        let per_row = factor * shape.iter().product::<usize>();
        self.widths.push(per_row);
        Value {
            buf: self.widths.len() - 1,
            per_row,
            shape,
        }
    }

    fn new_const(&mut self, data: Vec<f32>) -> usize {
        self.consts.push(data);
        self.consts.len() - 1
    }

    fn row(&self, name: &str) -> Result<Value, String> {
        match self.known.get(name) {
            Some(Known::Row(v)) => Ok(v.clone()),
            Some(_) => Err(format!(
                "{name} is a constant where a batched tensor is expected"
            )),
            None => Err(format!("{name} is used before it is computed")),
        }
    }

    fn constant(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), String> {
        match self.known.get(name) {
            Some(Known::Const(d, v)) => Ok((d.clone(), v.clone())),
            _ => Err(format!("{name} must be a constant initialiser")),
        }
    }

    fn node(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let input = |i: usize| {
            node.input
                .get(i)
                .map(String::as_str)
                .ok_or_else(|| format!("input {i} is missing"))
        };
        let out_name = node
            .output
            .first()
            .ok_or_else(|| "the node has no output".to_string())?
            .clone();
        let int = |name: &str, default: i64| attr(node, name).map_or(default, |a| a.i);
        let float = |name: &str, default: f32| attr(node, name).map_or(default, |a| a.f);
        let out = match node.op_type.as_str() {
            "Gemm" | "MatMul" => {
                let x = self.row(input(0)?)?;
                if node.op_type == "Gemm" && (int("transA", 0) != 0 || float("alpha", 1.0) != 1.0)
                    || float("beta", 1.0) != 1.0
                {
                    return Err("only transA = 0, alpha = 1, beta = 1 is supported".into());
                }
                let (wd, w) = self.constant(input(1)?)?;
                if wd.len() != 2 || x.shape.len() != 1 {
                    return Err(format!(
                        "expects a [batch, k] input and a 2-D weight, got {:?} and {wd:?}",
                        x.shape
                    ));
                }
                let trans_b = node.op_type == "Gemm" && int("transB", 0) != 0;
                let (k, n) = if trans_b {
                    (wd[1], wd[0])
                } else {
                    (wd[0], wd[1])
                };
                if k != x.width() {
                    return Err(format!("weight has k = {k}, the input has {}", x.width()));
                }
                let w_t = if trans_b {
                    w
                } else {
                    let mut t = vec![0.0; k * n];
                    for i in 0..k {
                        for j in 0..n {
                            t[j * k + i] = w[i * n + j];
                        }
                    }
                    t
                };
                let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
                    Some(b) => {
                        let (_, b) = self.constant(b)?;
                        let b = match b.len() {
                            1 => vec![b[0]; n],
                            l if l == n => b,
                            l => return Err(format!("bias has {l} values for {n} outputs")),
                        };
                        Some(self.new_const(b))
                    }
                    None => None,
                };
                let w_t = self.new_const(w_t);
                let f = x.factor();
                let y = self.new_buf(f, vec![n]);
                self.flops +=
                    f as u64 * (2 * (k * n) as u64 + if bias.is_some() { n as u64 } else { 0 });
                self.steps.push(Step::Gemm {
                    factor: f,
                    x: x.buf,
                    y: y.buf,
                    w_t,
                    bias,
                    k,
                    n,
                });
                Known::Row(y)
            }
            op @ ("LeakyRelu" | "Relu" | "Erf" | "Sin" | "Cos" | "Tanh" | "Sigmoid") => {
                let x = self.row(input(0)?)?;
                let op = match op {
                    "LeakyRelu" => Unary::LeakyRelu(float("alpha", 0.01)),
                    "Relu" => Unary::Relu,
                    "Erf" => Unary::Erf,
                    "Sin" => Unary::Sin,
                    "Cos" => Unary::Cos,
                    "Tanh" => Unary::Tanh,
                    _ => Unary::Sigmoid,
                };
                let y = self.new_buf(x.factor(), x.shape.clone());
                self.flops += x.per_row as u64;
                self.steps.push(Step::Unary {
                    x: x.buf,
                    y: y.buf,
                    op,
                });
                Known::Row(y)
            }
            op @ ("Add" | "Sub" | "Mul" | "Div") => {
                let op = match op {
                    "Add" => Binary::Add,
                    "Sub" => Binary::Sub,
                    "Mul" => Binary::Mul,
                    _ => Binary::Div,
                };
                let (l, r) = (input(0)?, input(1)?);
                let (a, other, swapped) = match (self.known.get(l), self.known.get(r)) {
                    (Some(Known::Row(a)), _) => (a.clone(), r, false),
                    (_, Some(Known::Row(b))) => (b.clone(), l, true),
                    _ => return Err("both operands are constants".into()),
                };
                let b = match self.known.get(other) {
                    Some(Known::Row(b)) if b.per_row == a.per_row && b.width() == a.width() => {
                        Operand::Row(b.buf)
                    }
                    Some(Known::Row(b)) => {
                        return Err(format!(
                            "operands have shapes {:?} and {:?}",
                            a.shape, b.shape
                        ));
                    }
                    Some(Known::Const(_, v)) if v.len() == 1 || v.len() == a.width() => {
                        let v = v.clone();
                        Operand::Const(self.new_const(v))
                    }
                    Some(Known::Const(d, _)) => {
                        return Err(format!(
                            "constant of shape {d:?} does not broadcast over {:?}",
                            a.shape
                        ));
                    }
                    _ => return Err(format!("{other} is not known")),
                };
                let y = self.new_buf(a.factor(), a.shape.clone());
                self.flops += a.per_row as u64;
                self.steps.push(Step::Binary {
                    a: a.buf,
                    b,
                    swapped,
                    y: y.buf,
                    op,
                });
                Known::Row(y)
            }
            "Concat" => {
                let axis = int("axis", 0);
                if axis != 1 && axis != -1 {
                    return Err(format!("concatenates on axis {axis}, only 1 is supported"));
                }
                let mut parts = Vec::new();
                let mut width = 0;
                let mut factor = None;
                for name in &node.input {
                    let v = self.row(name)?;
                    if v.shape.len() != 1 || factor.is_some_and(|f| f != v.factor()) {
                        return Err(format!(
                            "part {name} has shape {:?} × {}",
                            v.shape,
                            v.factor()
                        ));
                    }
                    factor = Some(v.factor());
                    parts.push((v.buf, v.width()));
                    width += v.width();
                }
                let factor = factor.ok_or("no inputs")?;
                let y = self.new_buf(factor, vec![width]);
                self.steps.push(Step::Concat {
                    factor,
                    parts,
                    y: y.buf,
                });
                Known::Row(y)
            }
            "LayerNormalization" => {
                let x = self.row(input(0)?)?;
                let axis = int("axis", -1);
                if axis != -1 && axis != x.shape.len() as i64 {
                    return Err(format!("normalises over axis {axis}, only the last"));
                }
                let last = *x.shape.last().ok_or("scalar input")?;
                let (_, gamma) = self.constant(input(1)?)?;
                let beta = match node.input.get(2).filter(|s| !s.is_empty()) {
                    Some(b) => self.constant(b)?.1,
                    None => vec![0.0; last],
                };
                if gamma.len() != last || beta.len() != last {
                    return Err(format!(
                        "scale has {} and bias {} values for a last axis of {last}",
                        gamma.len(),
                        beta.len()
                    ));
                }
                let (gamma, beta) = (self.new_const(gamma), self.new_const(beta));
                let y = self.new_buf(x.factor(), x.shape.clone());
                self.flops += 8 * x.per_row as u64;
                self.steps.push(Step::LayerNorm {
                    x: x.buf,
                    y: y.buf,
                    gamma,
                    beta,
                    eps: float("epsilon", 1e-5),
                });
                Known::Row(y)
            }
            "Conv" => self.conv(node)?,
            "Reshape" => {
                let x = self.row(input(0)?)?;
                let shape = match self.known.get(input(1)?) {
                    Some(Known::Shape(s)) => s.clone(),
                    _ => return Err("the target shape must be a constant".into()),
                };
                let fits = |rest: &[usize]| {
                    let w = rest.iter().product::<usize>();
                    w > 0 && x.per_row.is_multiple_of(w)
                };
                let rest: Vec<usize> = shape.iter().skip(1).map(|&d| d.max(0) as usize).collect();
                let ok = match shape.first() {
                    // [-1, …]: the leading axis absorbs whatever the rest leaves.
                    Some(&-1) => shape[1..].iter().all(|&d| d >= 1) && fits(&rest),
                    // [0, …]: keep the leading axis as it is.
                    Some(&0) => {
                        shape[1..].iter().all(|&d| d >= 1)
                            && rest.iter().product::<usize>() == x.width()
                    }
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "cannot reshape [{} × {:?}] to {shape:?} (the leading axis must be -1 or 0)",
                        x.factor(),
                        x.shape
                    ));
                }
                Known::Row(Value {
                    buf: x.buf,
                    per_row: x.per_row,
                    shape: rest,
                })
            }
            "Flatten" => {
                let x = self.row(input(0)?)?;
                if int("axis", 1) != 1 {
                    return Err("only Flatten with axis 1 is supported".into());
                }
                Known::Row(Value {
                    buf: x.buf,
                    per_row: x.per_row,
                    shape: vec![x.width()],
                })
            }
            "Identity" => match self.known.get(input(0)?) {
                Some(Known::Row(v)) => Known::Row(v.clone()),
                _ => return Err("Identity of a constant is not supported".into()),
            },
            other => return Err(format!("operator {other} is not supported by this engine")),
        };
        self.known.insert(out_name, out);
        Ok(())
    }

    fn conv(&mut self, node: &pb::NodeProto) -> Result<Known, String> {
        let ints = |name: &str| attr(node, name).map(|a| a.ints.clone());
        let x = self.row(&node.input[0])?;
        let [c, h, w] = match x.shape.as_slice() {
            &[c, h, w] => [c, h, w],
            s => return Err(format!("input has shape {s:?}, expected [c, h, w]")),
        };
        let (wd, weight) = self.constant(node.input.get(1).ok_or("no weight")?)?;
        let &[oc, ic, kh, kw] = wd.as_slice() else {
            return Err(format!("weight has shape {wd:?}"));
        };
        if ic != c {
            return Err(format!("weight expects {ic} channels, the input has {c}"));
        }
        if attr(node, "group").is_some_and(|a| a.i != 1)
            || ints("dilations").is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return Err("grouped or dilated convolutions are not supported".into());
        }
        let stride = ints("strides").unwrap_or_else(|| vec![1, 1]);
        let pads = ints("pads").unwrap_or_else(|| vec![0; 4]);
        if stride.len() != 2 || pads.len() != 4 || stride.iter().any(|&s| s < 1) {
            return Err(format!("strides {stride:?} / pads {pads:?} are not 2-D"));
        }
        let (sh, sw) = (stride[0] as usize, stride[1] as usize);
        let p: Vec<usize> = pads.iter().map(|&v| v.max(0) as usize).collect();
        let (hp, wp) = (h + p[0] + p[2], w + p[1] + p[3]);
        if hp < kh || wp < kw {
            return Err("kernel larger than the padded input".into());
        }
        let (oh, ow) = ((hp - kh) / sh + 1, (wp - kw) / sw + 1);
        let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
            Some(b) => {
                let (_, b) = self.constant(b)?;
                if b.len() != oc {
                    return Err(format!("bias has {} values for {oc} channels", b.len()));
                }
                Some(self.new_const(b))
            }
            None => None,
        };
        let weight = self.new_const(weight);
        let y = self.new_buf(x.factor(), vec![oc, oh, ow]);
        self.flops += x.factor() as u64 * 2 * (oc * oh * ow * c * kh * kw) as u64;
        self.steps.push(Step::Conv(Box::new(ConvStep {
            factor: x.factor(),
            x: x.buf,
            y: y.buf,
            weight,
            bias,
            input: [c, h, w],
            output: [oc, oh, ow],
            kernel: [kh, kw],
            stride: [sh, sw],
            pad: [p[0], p[1]],
        })));
        Ok(Known::Row(y))
    }
}

impl NativeGraph {
    /// Compile `source`. `input_widths` are the per-row widths the manifest
    /// declares, in graph order.
    pub fn load(
        source: GraphBytes<'_>,
        name: &'static str,
        input_widths: &[usize],
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
            steps: Vec::new(),
            flops: 0,
        };
        for t in &graph.initializer {
            let known = if t.data_type == 7 {
                Known::Shape(tensor_i64(t).map_err(&err)?)
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
        if declared.len() != input_widths.len() {
            return Err(err(format!(
                "the graph has {} inputs, the manifest declares {}",
                declared.len(),
                input_widths.len()
            )));
        }
        let mut inputs = Vec::new();
        for (info, &w) in declared.iter().zip(input_widths) {
            let v = c.new_buf(1, vec![w]);
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
            widths: c.widths,
            bufs,
            rows_capacity: 0,
            flops_per_row: c.flops,
            kernel: Kernel::detect(),
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
                self.kernel
                    .gemm(x, &consts[w_t], bias.map(|b| consts[b].as_slice()), y, k, n);
            }
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
                let (g, b) = (&consts[gamma], &consts[beta]);
                let last = g.len();
                let x = &bufs[x][..y.len()];
                for (yr, xr) in y.chunks_exact_mut(last).zip(x.chunks_exact(last)) {
                    let mean = xr.iter().sum::<f32>() / last as f32;
                    let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / last as f32;
                    let inv = 1.0 / (var + eps).sqrt();
                    for (((o, &v), &gg), &bb) in yr.iter_mut().zip(xr).zip(g).zip(b) {
                        *o = (v - mean) * inv * gg + bb;
                    }
                }
            }
            Step::Conv(c) => conv(c, &bufs[c.x], consts, y, rows),
        }
        bufs[y_id] = y_buf;
    }
}

/// The right-hand operand of an elementwise step.
enum Rhs<'a> {
    /// Same shape as the left.
    Row(&'a [f32]),
    /// One value for every element.
    Scalar(f32),
    /// One row of constants repeated over the left's rows.
    Broadcast(&'a [f32]),
}

/// `y = a ∘ b` (or `b ∘ a` when `swapped`). The operator is matched once per
/// step, not per element, so each loop below is a plain vectorisable map.
fn binary(op: Binary, swapped: bool, y: &mut [f32], a: &[f32], b: Rhs<'_>) {
    match (op, swapped) {
        (Binary::Add, _) => map2(y, a, b, |p, q| p + q),
        (Binary::Mul, _) => map2(y, a, b, |p, q| p * q),
        (Binary::Sub, false) => map2(y, a, b, |p, q| p - q),
        (Binary::Sub, true) => map2(y, a, b, |p, q| q - p),
        (Binary::Div, false) => map2(y, a, b, |p, q| p / q),
        (Binary::Div, true) => map2(y, a, b, |p, q| q / p),
    }
}

#[inline(always)]
fn map2(y: &mut [f32], a: &[f32], b: Rhs<'_>, f: impl Fn(f32, f32) -> f32) {
    match b {
        Rhs::Row(b) => {
            for ((o, &p), &q) in y.iter_mut().zip(a).zip(b) {
                *o = f(p, q);
            }
        }
        Rhs::Scalar(q) => {
            for (o, &p) in y.iter_mut().zip(a) {
                *o = f(p, q);
            }
        }
        Rhs::Broadcast(c) => {
            let w = c.len();
            for (yr, ar) in y.chunks_exact_mut(w).zip(a.chunks_exact(w)) {
                for ((o, &p), &q) in yr.iter_mut().zip(ar).zip(c) {
                    *o = f(p, q);
                }
            }
        }
    }
}

fn unary(op: Unary, x: &[f32], y: &mut [f32]) {
    match op {
        Unary::LeakyRelu(a) => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = if v >= 0.0 { v } else { a * v };
            }
        }
        Unary::Relu => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = v.max(0.0);
            }
        }
        Unary::Erf => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = erf(v);
            }
        }
        Unary::Sin => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = v.sin();
            }
        }
        Unary::Cos => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = v.cos();
            }
        }
        Unary::Tanh => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = v.tanh();
            }
        }
        Unary::Sigmoid => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = 1.0 / (1.0 + (-v).exp());
            }
        }
    }
}

/// erf by Abramowitz & Stegun 7.1.28: `1 − (1 + a₁|x| + … + a₆|x|⁶)⁻¹⁶`,
/// odd in x; absolute error below 2e-6 in f32 (3e-7 in exact arithmetic).
/// No branch and no libm call, so the loop over a buffer vectorises (libm's
/// `erff` was a sixth of a KDE decision on the arm policy).
#[inline(always)]
fn erf(x: f32) -> f32 {
    const A: [f32; 6] = [
        0.070_523_08,
        0.042_282_01,
        0.009_270_527,
        0.000_152_014_3,
        0.000_276_567_2,
        0.000_043_063_8,
    ];
    let z = x.abs();
    let p = 1.0 + z * (A[0] + z * (A[1] + z * (A[2] + z * (A[3] + z * (A[4] + z * A[5])))));
    let p2 = p * p;
    let p4 = p2 * p2;
    let p8 = p4 * p4;
    (1.0 - 1.0 / (p8 * p8)).copysign(x)
}

fn conv(c: &ConvStep, x: &[f32], consts: &[Vec<f32>], y: &mut [f32], rows: usize) {
    let [ci, h, w] = c.input;
    let [oc, oh, ow] = c.output;
    let [kh, kw] = c.kernel;
    let [sh, sw] = c.stride;
    let [ph, pw] = c.pad;
    let weight = &consts[c.weight];
    let (in_len, out_len) = (ci * h * w, oc * oh * ow);
    for r in 0..rows * c.factor {
        let xr = &x[r * in_len..(r + 1) * in_len];
        let yr = &mut y[r * out_len..(r + 1) * out_len];
        for o in 0..oc {
            let b = c.bias.map_or(0.0, |b| consts[b][o]);
            let wo = &weight[o * ci * kh * kw..(o + 1) * ci * kh * kw];
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = b;
                    for ch in 0..ci {
                        for u in 0..kh {
                            let row = (i * sh + u) as isize - ph as isize;
                            if row < 0 || row as usize >= h {
                                continue;
                            }
                            let base = ch * h * w + row as usize * w;
                            let wk = &wo[(ch * kh + u) * kw..(ch * kh + u + 1) * kw];
                            for (v, &wv) in wk.iter().enumerate() {
                                let col = (j * sw + v) as isize - pw as isize;
                                if col >= 0 && (col as usize) < w {
                                    acc += xr[base + col as usize] * wv;
                                }
                            }
                        }
                    }
                    yr[(o * oh + i) * ow + j] = acc;
                }
            }
        }
    }
}

/// Throughput of this engine's matrix kernel ([`Kernel::detect`]) on one
/// thread, on a problem that fits in L1 (GFLOP/s): the practical compute
/// ceiling of one core for these graphs. `rows` = 1 is the batch-1 case a control loop runs (each weight
/// is used once per call, so loads bound it); `rows` = 2 reuses each weight.
pub fn kernel_peak_gflops(rows: usize, duration: std::time::Duration) -> f64 {
    let (k, n) = (128, 32);
    let x: Vec<f32> = (0..rows * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.01).collect();
    let mut y = vec![0.0f32; rows * n];
    let kernel = Kernel::detect();
    let start = std::time::Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < duration {
        for _ in 0..256 {
            kernel.gemm(std::hint::black_box(&x), &w, None, &mut y, k, n);
            std::hint::black_box(&mut y);
        }
        calls += 256;
    }
    (2 * rows * k * n) as f64 * calls as f64 / start.elapsed().as_secs_f64() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm() {
        let mut worst = 0.0f32;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((erf(x) - libm::erff(x)).abs());
        }
        assert!(worst < 2e-6, "largest |erf − erff| on [-8, 8]: {worst:e}");
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
        assert_eq!(erf(0.0), 0.0);
        assert!(erf(f32::NAN).is_nan());
    }
}
