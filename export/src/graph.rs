//! A small builder for ONNX graphs on top of `tract_onnx::pb`.

use diffbc_runtime::manifest::{Dim, IR_VERSION, OPSET, TensorSpec};
use diffbc_runtime::onnx as pb;

/// `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
const INT64: i32 = 7;

/// Accumulates nodes and initialisers with unique names.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    counter: usize,
}

/// An ONNX attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    /// A float.
    Float(f32),
    /// An integer.
    Int(i64),
    /// A list of integers.
    Ints(Vec<i64>),
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Add a node with one output; returns the output name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(&op.to_lowercase());
        let attribute = attrs
            .iter()
            .map(|(name, a)| {
                let mut p = pb::AttributeProto {
                    name: (*name).into(),
                    ..Default::default()
                };
                match a {
                    Attr::Float(f) => {
                        p.r#type = pb::attribute_proto::AttributeType::Float as i32;
                        p.f = *f;
                    }
                    Attr::Int(i) => {
                        p.r#type = pb::attribute_proto::AttributeType::Int as i32;
                        p.i = *i;
                    }
                    Attr::Ints(v) => {
                        p.r#type = pb::attribute_proto::AttributeType::Ints as i32;
                        p.ints = v.clone();
                    }
                }
                p
            })
            .collect();
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| (*s).to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        out
    }

    /// Add an f32 initialiser; returns its name.
    pub fn constant(&mut self, hint: &str, dims: &[usize], data: Vec<f32>) -> String {
        let name = self.fresh(hint);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Add an i64 initialiser (shapes); returns its name.
    pub fn constant_i64(&mut self, hint: &str, data: &[i64]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: vec![data.len() as i64],
            data_type: INT64,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// A scalar f32 constant.
    pub fn scalar(&mut self, value: f32) -> String {
        self.constant("scalar", &[], vec![value])
    }

    /// `Reshape(x, shape)`.
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = self.constant_i64("shape", shape);
        self.node("Reshape", &[x, &s], &[])
    }

    /// Finish into a model whose graph reads `inputs` and writes `outputs`
    /// (each output given as the internal value it is a copy of).
    pub fn finish(
        mut self,
        name: &str,
        inputs: &[TensorSpec],
        outputs: &[(String, TensorSpec)],
    ) -> pb::ModelProto {
        for (value, spec) in outputs {
            self.nodes.push(pb::NodeProto {
                input: vec![value.clone()],
                output: vec![spec.name.clone()],
                name: format!("{}_out", spec.name),
                op_type: "Identity".into(),
                ..Default::default()
            });
        }
        let graph = pb::GraphProto {
            name: name.into(),
            node: self.nodes,
            initializer: self.initializers,
            input: inputs.iter().map(value_info).collect(),
            output: outputs.iter().map(|(_, s)| value_info(s)).collect(),
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "diffbc".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(graph),
            ..Default::default()
        }
    }
}

fn value_info(spec: &TensorSpec) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = spec
        .shape
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => Value::DimValue(*n as i64),
                Dim::Symbol(s) => Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: spec.name.clone(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
