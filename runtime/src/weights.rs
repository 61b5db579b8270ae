//! Reduced-precision weights: the formats an exported policy's matrix
//! weights are stored in, and the one rewrite of an f32 graph into them.
//!
//! Only the weight matrices of `Gemm` and `MatMul` nodes (the constant,
//! 2-D second input) change; biases, convolution kernels, layer-norm
//! parameters and every activation stay f32, and every graph input and
//! output stays f32. The graphs stay standard ONNX (opset 17):
//!
//! - [`WeightFormat::F16`]: the weight is a FLOAT16 initialiser `<name>.f16`
//!   and a `Cast(to = FLOAT)` node produces `<name>` from it.
//! - [`WeightFormat::Int8`]: the weight is an INT8 initialiser `<name>.q`
//!   with one f32 scale per output column (`<name>.scale`, symmetric: the
//!   INT8 zero point `<name>.zero_point` is all zeros) and a per-axis
//!   `DequantizeLinear` produces `<name>` = q · scale. The scale of column j
//!   is max_i |W[i, j]| / 127 (1 for an all-zero column), q = round(W / s)
//!   in −127…127.
//!
//! tract and ONNX Runtime run these graphs as written (dequantising once at
//! load); the native engine recognises the two patterns when it compiles a
//! graph and keeps the weights in 2 or 1 byte per value, converting inside
//! its matrix kernels with f32 accumulation.

use crate::manifest::{self, Manifest};
use crate::onnx as pb;
use crate::policy::{PolicyError, read_graph, read_manifest, sha256_hex};
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT8`.
const INT8: i32 = 3;
/// `TensorProto.DataType.FLOAT16`.
const FLOAT16: i32 = 10;

/// How a policy's matrix weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum WeightFormat {
    /// 32-bit floats (4 bytes per weight): the trained values.
    #[default]
    #[serde(rename = "f32")]
    F32,
    /// IEEE half precision (2 bytes per weight), round to nearest even;
    /// products are accumulated in f32.
    #[serde(rename = "f16")]
    F16,
    /// Symmetric 8-bit integers with one f32 scale per output channel
    /// (1 byte per weight); products are accumulated in f32 and scaled once
    /// per output.
    #[serde(rename = "int8")]
    Int8,
}

impl WeightFormat {
    /// Every format, widest first.
    pub const ALL: [WeightFormat; 3] = [Self::F32, Self::F16, Self::Int8];

    /// The name used in the manifest and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Int8 => "int8",
        }
    }

    /// Whether this is the f32 default (a manifest leaves the field out).
    pub fn is_f32(&self) -> bool {
        *self == Self::F32
    }

    /// How far an engine's outputs on a graph in this format may be from the
    /// f32 outputs the trainer stored in `golden/` (the per-graph cases): for
    /// f32 the largest |difference| (1e-4); for f16 and int8 the largest
    /// |difference| / max(1, largest |golden output| of the case), since the
    /// rounding of the weights scales with the values. Measured on the
    /// shipped models: at most 3.1e-4 (f16) and 3.4e-2 (int8, Push-T's
    /// head). The end-to-end golden episodes of a reduced-precision folder
    /// are recorded on its own graphs, so engines agree on them within 1e-4
    /// in every format.
    pub fn golden_tolerance(self) -> f32 {
        match self {
            Self::F32 => 1e-4,
            Self::F16 => 1e-3,
            Self::Int8 => 5e-2,
        }
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| format!("unknown weight format {s:?} (expected f32, f16 or int8)"))
    }
}

/// Errors of the rewrite.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The bytes are not an ONNX graph this rewrite understands.
    #[error("{graph}: {message}")]
    Graph {
        /// Which graph (file name or role).
        graph: String,
        /// What is wrong.
        message: String,
    },
}

/// The f32 values of an initialiser.
fn f32_values(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != FLOAT {
        return None;
    }
    if t.raw_data.is_empty() {
        Some(t.float_data.clone())
    } else {
        Some(
            t.raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }
}

/// Quantise a `[rows, cols]` row-major matrix symmetrically with one scale
/// per index of `axis` (0: per row, 1: per column). Returns (q, scales).
pub fn quantize_int8(w: &[f32], rows: usize, cols: usize, axis: usize) -> (Vec<i8>, Vec<f32>) {
    let channels = if axis == 0 { rows } else { cols };
    let channel = |i: usize| if axis == 0 { i / cols } else { i % cols };
    let mut max = vec![0.0f32; channels];
    for (i, &v) in w.iter().enumerate() {
        let c = channel(i);
        max[c] = max[c].max(v.abs());
    }
    let scales: Vec<f32> = max
        .iter()
        .map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, &v)| (v / scales[channel(i)]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}

/// Rewrite one ONNX graph's Gemm/MatMul weights into `format` (f32 returns
/// the bytes unchanged). `graph` names it in errors. Returns the new bytes
/// and how many weight matrices were converted.
pub fn convert_graph(
    bytes: &[u8],
    format: WeightFormat,
    graph: &str,
) -> Result<(Vec<u8>, usize), WeightsError> {
    let err = |message: String| WeightsError::Graph {
        graph: graph.to_string(),
        message,
    };
    if format == WeightFormat::F32 {
        return Ok((bytes.to_vec(), 0));
    }
    let mut model = pb::ModelProto::decode(bytes)
        .map_err(|e| err(format!("not a readable ONNX graph: {e}")))?;
    let g = model
        .graph
        .as_mut()
        .ok_or_else(|| err("the model has no graph".into()))?;
    // Weight name → the axis of its output channels (Gemm with transB = 1
    // stores [n, k]; Gemm with transB = 0 and MatMul store [k, n]).
    let mut weights: HashMap<String, usize> = HashMap::new();
    for node in &g.node {
        if !matches!(node.op_type.as_str(), "Gemm" | "MatMul") {
            continue;
        }
        let Some(w) = node.input.get(1) else { continue };
        let trans_b = node.op_type == "Gemm"
            && node
                .attribute
                .iter()
                .any(|a| a.name == "transB" && a.i != 0);
        weights
            .entry(w.clone())
            .or_insert(if trans_b { 0 } else { 1 });
    }
    let mut names: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    names.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    names.extend(g.input.iter().map(|i| i.name.clone()));
    let mut fresh = |base: &str, suffix: &str| -> Result<String, WeightsError> {
        let name = format!("{base}.{suffix}");
        if names.insert(name.clone()) {
            Ok(name)
        } else {
            Err(err(format!("{name} is already a name in the graph")))
        }
    };
    let mut prelude = Vec::new();
    let mut initializers = Vec::with_capacity(g.initializer.len());
    let mut converted = 0;
    for t in std::mem::take(&mut g.initializer) {
        let axis = match weights.get(&t.name) {
            Some(&axis) if t.dims.len() == 2 && t.data_type == FLOAT => axis,
            _ => {
                initializers.push(t);
                continue;
            }
        };
        let values = f32_values(&t).ok_or_else(|| err(format!("{} is not f32", t.name)))?;
        let (rows, cols) = (t.dims[0].max(0) as usize, t.dims[1].max(0) as usize);
        if values.len() != rows * cols {
            return Err(err(format!(
                "initialiser {} has {} values for dims {:?}",
                t.name,
                values.len(),
                t.dims
            )));
        }
        let attribute = |name: &str, i: i64| pb::AttributeProto {
            name: name.into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i,
            ..Default::default()
        };
        match format {
            WeightFormat::F32 => unreachable!("returned above"),
            WeightFormat::F16 => {
                let mut raw = Vec::with_capacity(2 * values.len());
                for (i, &v) in values.iter().enumerate() {
                    let h = half::f16::from_f32(v);
                    if !h.is_finite() {
                        return Err(err(format!(
                            "weight {}[{}, {}] = {v} does not fit in f16",
                            t.name,
                            i / cols.max(1),
                            i % cols.max(1)
                        )));
                    }
                    raw.extend_from_slice(&h.to_bits().to_le_bytes());
                }
                let stored = fresh(&t.name, "f16")?;
                prelude.push(pb::NodeProto {
                    input: vec![stored.clone()],
                    output: vec![t.name.clone()],
                    name: format!("dequantize/{}", t.name),
                    op_type: "Cast".into(),
                    attribute: vec![attribute("to", FLOAT as i64)],
                    ..Default::default()
                });
                initializers.push(pb::TensorProto {
                    name: stored,
                    dims: t.dims.clone(),
                    data_type: FLOAT16,
                    raw_data: raw,
                    ..Default::default()
                });
            }
            WeightFormat::Int8 => {
                let (q, scales) = quantize_int8(&values, rows, cols, axis);
                let (qn, sn, zn) = (
                    fresh(&t.name, "q")?,
                    fresh(&t.name, "scale")?,
                    fresh(&t.name, "zero_point")?,
                );
                prelude.push(pb::NodeProto {
                    input: vec![qn.clone(), sn.clone(), zn.clone()],
                    output: vec![t.name.clone()],
                    name: format!("dequantize/{}", t.name),
                    op_type: "DequantizeLinear".into(),
                    attribute: vec![attribute("axis", axis as i64)],
                    ..Default::default()
                });
                let channels = scales.len() as i64;
                initializers.push(pb::TensorProto {
                    name: qn,
                    dims: t.dims.clone(),
                    data_type: INT8,
                    raw_data: q.iter().map(|&v| v as u8).collect(),
                    ..Default::default()
                });
                initializers.push(pb::TensorProto {
                    name: sn,
                    dims: vec![channels],
                    data_type: FLOAT,
                    raw_data: scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
                    ..Default::default()
                });
                initializers.push(pb::TensorProto {
                    name: zn,
                    dims: vec![channels],
                    data_type: INT8,
                    raw_data: vec![0; scales.len()],
                    ..Default::default()
                });
            }
        }
        converted += 1;
    }
    g.initializer = initializers;
    prelude.append(&mut g.node);
    g.node = prelude;
    Ok((model.encode_to_vec(), converted))
}

/// The weight format a graph's initialisers are stored in: int8 when any
/// initialiser is INT8, f16 when any is FLOAT16, f32 otherwise.
pub fn graph_format(bytes: &[u8]) -> Result<WeightFormat, String> {
    let model =
        pb::ModelProto::decode(bytes).map_err(|e| format!("not a readable ONNX graph: {e}"))?;
    let init = model.graph.map(|g| g.initializer).unwrap_or_default();
    Ok(if init.iter().any(|t| t.data_type == INT8) {
        WeightFormat::Int8
    } else if init.iter().any(|t| t.data_type == FLOAT16) {
        WeightFormat::F16
    } else {
        WeightFormat::F32
    })
}

/// Write a copy of the f32 policy folder `src` with its weights in `format`
/// into the existing empty folder `dst`: both graphs rewritten, the manifest
/// with their new hashes and `weights`. No golden files are written (the
/// per-graph golden tensors of `src` are the trainer's f32 outputs; `diffbc
/// export --weights` writes a complete folder). Used by `bench` to measure
/// every format from one shipped folder.
pub fn write_variant(
    src: &Path,
    dst: &Path,
    format: WeightFormat,
) -> Result<Manifest, PolicyError> {
    let (mut m, _) = read_manifest(src)?;
    let mpath = src.join(manifest::MANIFEST_FILE);
    if !m.weights.is_f32() {
        return Err(PolicyError::Manifest {
            path: mpath,
            message: format!(
                "weights is {}; reduced-precision variants are made from an f32 folder",
                m.weights
            ),
        });
    }
    for (field, spec) in [("encoder", &mut m.encoder), ("head", &mut m.head)] {
        let (path, bytes) = read_graph(src, field, spec)?;
        let (converted, _) =
            convert_graph(&bytes, format, &path.display().to_string()).map_err(|e| {
                PolicyError::Manifest {
                    path: path.clone(),
                    message: e.to_string(),
                }
            })?;
        spec.sha256 = sha256_hex(&converted);
        // `read_graph` found the file inside `src`; the copy keeps its name,
        // which must then be a plain file name (no folder to create in `dst`).
        if Path::new(&spec.file).file_name() != Some(std::ffi::OsStr::new(&spec.file)) {
            return Err(PolicyError::Manifest {
                path: mpath,
                message: format!("{field}.file {:?} is not a plain file name", spec.file),
            });
        }
        let out = dst.join(&spec.file);
        std::fs::write(&out, &converted).map_err(|cause| PolicyError::Io { path: out, cause })?;
    }
    m.weights = format;
    let out = dst.join(manifest::MANIFEST_FILE);
    let text = serde_json::to_string_pretty(&m).map_err(|e| PolicyError::Manifest {
        path: out.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&out, text + "\n").map_err(|cause| PolicyError::Io { path: out, cause })?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for w in WeightFormat::ALL {
            assert_eq!(w.name().parse::<WeightFormat>(), Ok(w));
            assert_eq!(
                serde_json::to_string(&w).expect("json"),
                format!("\"{}\"", w.name())
            );
        }
        let e = "bf16".parse::<WeightFormat>().unwrap_err();
        assert!(e.contains("\"bf16\"") && e.contains("int8"), "{e}");
        assert!(WeightFormat::default().is_f32());
    }

    #[test]
    fn int8_quantisation_is_symmetric_per_channel_and_within_half_a_step() {
        // [2, 3], per column (axis 1) and per row (axis 0).
        let w = [0.5, -2.0, 0.0, -1.0, 1.0, 0.0];
        let (q, s) = quantize_int8(&w, 2, 3, 1);
        assert_eq!(s, vec![1.0 / 127.0, 2.0 / 127.0, 1.0]);
        assert_eq!(q, vec![64, -127, 0, -127, 64, 0]);
        let (q, s) = quantize_int8(&w, 2, 3, 0);
        assert_eq!(s, vec![2.0 / 127.0, 1.0 / 127.0]);
        assert_eq!(q, vec![32, -127, 0, -127, 127, 0]);
        for (i, (&v, &qq)) in w.iter().zip(&q).enumerate() {
            let step = s[i / 3];
            assert!((f32::from(qq) * step - v).abs() <= 0.5 * step + 1e-7);
        }
    }
}
