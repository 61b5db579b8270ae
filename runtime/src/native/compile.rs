//! The compiler: an exported ONNX graph (prost types) into the flat list of
//! [`Step`]s over sized buffers that [`super::NativeGraph`] interprets;
//! refuses, naming the node, anything outside the exported op set.

use super::*;

pub(super) fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub(super) fn tensor_f32(t: &pb::TensorProto) -> Result<(Vec<usize>, Vec<f32>), String> {
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

pub(super) fn tensor_i64(t: &pb::TensorProto) -> Result<Vec<i64>, String> {
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
pub(super) enum Known {
    Row(Value),
    Const(Vec<usize>, Vec<f32>),
    Shape(Vec<i64>),
    /// A FLOAT16 initialiser (only a `Cast` to f32 may read it).
    Half(Vec<usize>, Vec<half::f16>),
    /// An INT8 initialiser (only a `DequantizeLinear` may read it).
    Int8(Vec<usize>, Vec<i8>),
    /// A weight matrix in reduced precision: a `Cast` of a FLOAT16
    /// initialiser, or a symmetric `DequantizeLinear` of an INT8 one.
    Weight(Vec<usize>, Reduced),
}

/// A reduced-precision constant as the graph stores it.
#[derive(Debug, Clone)]
pub(super) enum Reduced {
    F16(Vec<half::f16>),
    /// `value = q · scale[index along axis]` (`scale` has one value, or one
    /// per index of `axis`).
    Int8 {
        q: Vec<i8>,
        scale: Vec<f32>,
        axis: usize,
    },
}

impl Reduced {
    /// The f32 values (what tract and ONNX Runtime compute from the graph).
    fn dequantize(&self, dims: &[usize]) -> Vec<f32> {
        match self {
            Reduced::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
            Reduced::Int8 { q, scale, axis } => {
                // (A single scale may come with any axis; nothing indexes it.)
                let inner: usize = dims.get(axis + 1..).map_or(1, |d| d.iter().product());
                let len = dims.get(*axis).copied().unwrap_or(1);
                q.iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let s = if scale.len() == 1 {
                            scale[0]
                        } else {
                            scale[(i / inner.max(1)) % len.max(1)]
                        };
                        f32::from(v) * s
                    })
                    .collect()
            }
        }
    }
}

/// A FLOAT16 or INT8 initialiser.
pub(super) fn tensor_reduced(t: &pb::TensorProto) -> Result<Known, String> {
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = dims.iter().product();
    let known = match t.data_type {
        // FLOAT16: raw little-endian halves, or one per int32_data entry.
        10 if !t.raw_data.is_empty() => Known::Half(
            dims,
            t.raw_data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        10 => Known::Half(
            dims,
            t.int32_data
                .iter()
                .map(|&v| half::f16::from_bits(v as u16))
                .collect(),
        ),
        // INT8: raw bytes, or one per int32_data entry.
        3 if !t.raw_data.is_empty() => {
            Known::Int8(dims, t.raw_data.iter().map(|&b| b as i8).collect())
        }
        3 => Known::Int8(dims, t.int32_data.iter().map(|&v| v as i8).collect()),
        other => return Err(format!("initialiser {} has data type {other}", t.name)),
    };
    let len = match &known {
        Known::Half(_, v) => v.len(),
        Known::Int8(_, v) => v.len(),
        _ => n,
    };
    if len != n {
        return Err(format!(
            "initialiser {} has {len} values for dims {:?}",
            t.name, t.dims
        ));
    }
    Ok(known)
}

pub(super) struct Compiler {
    pub(super) known: HashMap<String, Known>,
    pub(super) widths: Vec<usize>,
    pub(super) consts: Vec<Vec<f32>>,
    pub(super) weights: Vec<WeightBuf>,
    pub(super) steps: Vec<Step>,
    pub(super) flops: u64,
    /// The kernel the graph will run, which lays out the matrix weights.
    pub(super) kernel: Kernel,
}

impl Compiler {
    /// A new buffer for a value with `factor` leading entries per batch row.
    pub(super) fn new_buf(&mut self, factor: usize, shape: Vec<usize>) -> Value {
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

    pub(super) fn row(&self, name: &str) -> Result<Value, String> {
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
            // A reduced-precision constant anywhere but a matrix weight is
            // used as the f32 values it stands for.
            Some(Known::Weight(d, r)) => Ok((d.clone(), r.dequantize(d))),
            _ => Err(format!("{name} must be a constant initialiser")),
        }
    }

    /// `Cast(to = FLOAT)` of a FLOAT16 initialiser (or of an f32 constant).
    fn cast(&self, node: &pb::NodeProto) -> Result<Known, String> {
        let to = attr(node, "to").map(|a| a.i);
        if to != Some(1) {
            return Err(format!(
                "casts to type {to:?}, only to FLOAT (1) is supported"
            ));
        }
        let name = node.input.first().ok_or("input 0 is missing")?;
        match self.known.get(name) {
            Some(Known::Half(d, v)) => Ok(Known::Weight(d.clone(), Reduced::F16(v.clone()))),
            Some(Known::Const(d, v)) => Ok(Known::Const(d.clone(), v.clone())),
            _ => Err(format!("{name} must be a FLOAT16 or FLOAT initialiser")),
        }
    }

    /// A symmetric `DequantizeLinear` of an INT8 initialiser: f32 scales (one,
    /// or one per index of `axis`), zero point absent or all zeros.
    fn dequantize_linear(&self, node: &pb::NodeProto) -> Result<Known, String> {
        let input = |i: usize| node.input.get(i).filter(|s| !s.is_empty());
        let x = input(0).ok_or("input 0 is missing")?;
        let (dims, q) = match self.known.get(x) {
            Some(Known::Int8(d, q)) => (d.clone(), q.clone()),
            _ => return Err(format!("{x} must be an INT8 initialiser")),
        };
        let rank = dims.len() as i64;
        let axis = attr(node, "axis").map_or(1, |a| a.i);
        let axis = if axis < 0 { axis + rank } else { axis };
        let scale_name = input(1).ok_or("input 1 (scale) is missing")?;
        let (sd, scale) = match self.known.get(scale_name) {
            Some(Known::Const(d, v)) => (d.clone(), v.clone()),
            _ => return Err(format!("scale {scale_name} must be an f32 initialiser")),
        };
        let per_axis = sd.len() == 1 && sd[0] == scale.len() && scale.len() > 1;
        if per_axis && !(0..rank).contains(&axis) {
            return Err(format!("axis {axis} is outside a rank-{rank} tensor"));
        }
        let axis = axis.max(0) as usize;
        if !(scale.len() == 1 || per_axis && dims.get(axis) == Some(&scale.len())) {
            return Err(format!(
                "scale {scale_name} has shape {sd:?}; expected one value or one per index of \
                 axis {axis} of {dims:?}"
            ));
        }
        if let Some(zp) = input(2) {
            match self.known.get(zp) {
                Some(Known::Int8(d, z)) if d == &sd && z.iter().all(|&v| v == 0) => {}
                Some(Known::Int8(..)) => {
                    return Err(format!(
                        "zero point {zp} must be zeros shaped like the scale (symmetric \
                         quantisation only)"
                    ));
                }
                _ => return Err(format!("zero point {zp} must be an INT8 initialiser")),
            }
        }
        Ok(Known::Weight(dims, Reduced::Int8 { q, scale, axis }))
    }

    pub(super) fn node(&mut self, node: &pb::NodeProto) -> Result<(), String> {
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
                let (wd, w) = match self.known.get(input(1)?) {
                    Some(Known::Weight(d, r)) => (d.clone(), Stored::Reduced(r.clone())),
                    _ => {
                        let (d, v) = self.constant(input(1)?)?;
                        (d, Stored::F32(v))
                    }
                };
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
                let w_t = w.packed(&wd, trans_b, k, n, self.kernel);
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
                self.weights.push(w_t);
                let w_t = self.weights.len() - 1;
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
            "Cast" => self.cast(node)?,
            "DequantizeLinear" => self.dequantize_linear(node)?,
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

/// A Gemm/MatMul weight as the graph gives it.
enum Stored {
    F32(Vec<f32>),
    Reduced(Reduced),
}

/// `w` (`[k, n]`, or `[n, k]` when `trans_b`) as `[n, k]` rows.
fn transpose<T: Copy>(w: &[T], trans_b: bool, k: usize, n: usize) -> Vec<T> {
    if trans_b {
        return w.to_vec();
    }
    let mut t = Vec::with_capacity(k * n);
    for j in 0..n {
        for i in 0..k {
            t.push(w[i * n + j]);
        }
    }
    t
}

impl Stored {
    /// The weight as `kernel` takes it (transposed to `[n, k]`, then
    /// [`Kernel::pack`]ed): f16 and int8 stay in their precision (int8 with
    /// one scale per output `j`); an int8 weight whose scales run along the
    /// input axis is dequantised to f32.
    fn packed(
        self,
        dims: &[usize],
        trans_b: bool,
        k: usize,
        n: usize,
        kernel: Kernel,
    ) -> WeightBuf {
        match self {
            Stored::F32(w) => WeightBuf::F32(kernel.pack(&transpose(&w, trans_b, k, n), k, n)),
            Stored::Reduced(Reduced::F16(w)) => {
                WeightBuf::F16(kernel.pack(&transpose(&w, trans_b, k, n), k, n))
            }
            Stored::Reduced(Reduced::Int8 { q, scale, axis }) => {
                // The output axis of the stored matrix.
                let out_axis = usize::from(!trans_b);
                if scale.len() == 1 || axis == out_axis {
                    let scale = if scale.len() == 1 {
                        vec![scale[0]; n]
                    } else {
                        scale
                    };
                    WeightBuf::Int8 {
                        q: kernel.pack(&transpose(&q, trans_b, k, n), k, n),
                        scale,
                    }
                } else {
                    let r = Reduced::Int8 { q, scale, axis };
                    WeightBuf::F32(kernel.pack(
                        &transpose(&r.dequantize(dims), trans_b, k, n),
                        k,
                        n,
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dequantising follows the axis of a per-axis scale, and a single scale
    /// with an axis beyond the tensor's rank (legal ONNX: the axis is then
    /// unused) does not index out of bounds.
    #[test]
    fn int8_dequantises_along_its_axis_and_ignores_the_axis_of_one_scale() {
        let q = vec![1, -2, 3, 4, -5, 6];
        let per_row = Reduced::Int8 {
            q: q.clone(),
            scale: vec![1.0, 0.5],
            axis: 0,
        };
        assert_eq!(
            per_row.dequantize(&[2, 3]),
            [1.0, -2.0, 3.0, 2.0, -2.5, 3.0]
        );
        let per_col = Reduced::Int8 {
            q: q.clone(),
            scale: vec![1.0, 0.5, 2.0],
            axis: 1,
        };
        assert_eq!(
            per_col.dequantize(&[2, 3]),
            [1.0, -1.0, 6.0, 4.0, -2.5, 12.0]
        );
        let one = Reduced::Int8 {
            q,
            scale: vec![0.5],
            axis: 7,
        };
        assert_eq!(one.dequantize(&[2, 3]), [0.5, -1.0, 1.5, 2.0, -2.5, 3.0]);
    }
}
