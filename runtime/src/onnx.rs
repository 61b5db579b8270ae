//! The ONNX file format: the messages of `onnx.proto` (IR version 8 and
//! later) that diffbc writes and reads, as `prost` messages with the
//! specification's field numbers.
//!
//! Why here and not `tract_onnx::pb`: the native and ONNX Runtime engines and
//! the weight-format rewriter only need the file format, and taking it from
//! tract made every build link tract's whole optimiser (the biggest compile
//! unit of the workspace; 22 minutes of a cross build for an Arm board). With
//! this module, tract is one engine among three behind the `tract` feature
//! (ARCHITECTURE.md, "The three engines").
//!
//! What is left out cannot be lost silently where it matters: decoding skips
//! fields this module does not name (sparse initializers, training info,
//! functions, tensor annotations, external-data locations), so a graph that
//! needs one is refused by the compiler that reads it (an unknown operator or
//! an initializer without data), never half-read. diffbc's own graphs use
//! none of them; `weights::rewrite` re-encodes only graphs diffbc wrote.
//! Every field kept is the specification's, with its number and wire type,
//! so what `export` writes is the same bytes `onnx.checker` accepts.

use prost::Message;

/// `ModelProto`: one graph and what is needed to run it.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "4")]
    pub domain: String,
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `StringStringEntryProto`: a key and its value (model metadata).
#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `OperatorSetIdProto`: an operator set and its version (`""` is the default
/// ONNX domain).
#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `GraphProto`: nodes in topological order, their constant inputs, and the
/// graph's declared inputs and outputs.
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(string, tag = "10")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

/// `NodeProto`: one operator call.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(string, tag = "7")]
    pub domain: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "6")]
    pub doc_string: String,
}

/// `AttributeProto`: a named constant argument of a node; `type` says which
/// of the value fields holds it.
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "21")]
    pub ref_attr_name: String,
    #[prost(string, tag = "13")]
    pub doc_string: String,
    #[prost(enumeration = "attribute_proto::AttributeType", tag = "20")]
    pub r#type: i32,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(message, optional, tag = "6")]
    pub g: Option<GraphProto>,
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "10")]
    pub tensors: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub graphs: Vec<GraphProto>,
}

/// Nested types of [`AttributeProto`].
pub mod attribute_proto {
    /// Which value field of an attribute is in use.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum AttributeType {
        Undefined = 0,
        Float = 1,
        Int = 2,
        String = 3,
        Tensor = 4,
        Graph = 5,
        SparseTensor = 11,
        TypeProto = 13,
        Floats = 6,
        Ints = 7,
        Strings = 8,
        Tensors = 9,
        Graphs = 10,
        SparseTensors = 12,
        TypeProtos = 14,
    }
}

/// `ValueInfoProto`: a named value and its type (graph inputs and outputs).
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    #[prost(string, tag = "3")]
    pub doc_string: String,
}

/// `TypeProto`: only tensor types are named here (sequences, maps and
/// optionals are not values diffbc's graphs have).
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(string, tag = "6")]
    pub denotation: String,
    #[prost(oneof = "type_proto::Value", tags = "1")]
    pub value: Option<type_proto::Value>,
}

/// Nested types of [`TypeProto`].
pub mod type_proto {
    /// A tensor's element type and shape.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<super::TensorShapeProto>,
    }

    /// The kind of type.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(message, tag = "1")]
        TensorType(Tensor),
    }
}

/// `TensorShapeProto`: one entry per axis, a number or a symbolic name.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<tensor_shape_proto::Dimension>,
}

/// Nested types of [`TensorShapeProto`].
pub mod tensor_shape_proto {
    /// One axis.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        #[prost(string, tag = "3")]
        pub denotation: String,
        #[prost(oneof = "dimension::Value", tags = "1, 2")]
        pub value: Option<dimension::Value>,
    }

    /// Nested types of [`Dimension`].
    pub mod dimension {
        /// A fixed size or a symbolic one (`"batch"`).
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(int64, tag = "1")]
            DimValue(i64),
            #[prost(string, tag = "2")]
            DimParam(String),
        }
    }
}

/// `TensorProto`: a constant tensor; its values are in `raw_data`
/// (little-endian) or in the typed field for its `data_type`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub string_data: Vec<Vec<u8>>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(string, tag = "12")]
    pub doc_string: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    #[prost(uint64, repeated, tag = "11")]
    pub uint64_data: Vec<u64>,
    /// `DEFAULT` (0) or `EXTERNAL` (1): the values are in another file.
    /// Kept so the native engine refuses an externally stored tensor by
    /// name instead of reading it as empty.
    #[prost(int32, optional, tag = "14")]
    pub data_location: Option<i32>,
}

/// Nested types of [`TensorProto`].
pub mod tensor_proto {
    /// `DataLocation.EXTERNAL`: the values are in a file beside the graph.
    pub const EXTERNAL: i32 = 1;

    /// Element types (the subset of `TensorProto.DataType` diffbc's graphs
    /// use; other values decode as their number).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum DataType {
        Undefined = 0,
        Float = 1,
        Uint8 = 2,
        Int8 = 3,
        Int32 = 6,
        Int64 = 7,
        Bool = 9,
        Float16 = 10,
        Double = 11,
    }
}

/// Decode one serialized `ModelProto`.
pub fn decode_model(bytes: &[u8]) -> Result<ModelProto, prost::DecodeError> {
    ModelProto::decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field numbers and wire types: a model built here is read back whole,
    /// and the bytes of a hand-encoded fragment decode to the fields the
    /// specification gives those numbers.
    #[test]
    fn messages_round_trip_and_use_the_specifications_numbers() {
        let model = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            producer_name: "diffbc".into(),
            graph: Some(GraphProto {
                name: "g".into(),
                node: vec![NodeProto {
                    op_type: "Gemm".into(),
                    input: vec!["x".into(), "w".into()],
                    output: vec!["y".into()],
                    attribute: vec![AttributeProto {
                        name: "transB".into(),
                        r#type: attribute_proto::AttributeType::Int as i32,
                        i: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                initializer: vec![TensorProto {
                    name: "w".into(),
                    dims: vec![2, 3],
                    data_type: tensor_proto::DataType::Float as i32,
                    raw_data: vec![0; 24],
                    ..Default::default()
                }],
                input: vec![ValueInfoProto {
                    name: "x".into(),
                    r#type: Some(TypeProto {
                        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                            elem_type: 1,
                            shape: Some(TensorShapeProto {
                                dim: vec![tensor_shape_proto::Dimension {
                                    value: Some(tensor_shape_proto::dimension::Value::DimParam(
                                        "batch".into(),
                                    )),
                                    ..Default::default()
                                }],
                            }),
                        })),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = model.encode_to_vec();
        assert_eq!(decode_model(&bytes).expect("decodes"), model);
        // ir_version is field 1 (varint): tag byte 0x08, then 8.
        assert_eq!(&bytes[..2], &[0x08, 8]);

        // A NodeProto with op_type (field 4, bytes: tag 0x22) "Relu" and
        // domain (field 7, tag 0x3a) "ai.onnx".
        let mut node = vec![0x22, 4];
        node.extend_from_slice(b"Relu");
        node.extend_from_slice(&[0x3a, 7]);
        node.extend_from_slice(b"ai.onnx");
        let decoded = NodeProto::decode(node.as_slice()).expect("node");
        assert_eq!(
            (decoded.op_type.as_str(), decoded.domain.as_str()),
            ("Relu", "ai.onnx")
        );

        // TensorProto: dims (field 1, packed: tag 0x0a), data_type (field
        // 2: 0x10), raw_data (field 9, bytes: 0x4a), data_location (14: 0x70).
        let tensor = [0x0a, 2, 2, 3, 0x10, 1, 0x4a, 1, 7, 0x70, 1];
        let decoded = TensorProto::decode(tensor.as_slice()).expect("tensor");
        assert_eq!(decoded.dims, [2, 3]);
        assert_eq!(decoded.data_type, 1);
        assert_eq!(decoded.raw_data, [7]);
        assert_eq!(decoded.data_location, Some(1));
    }

    /// Fields this module does not name (a sparse initializer, field 15 of
    /// GraphProto) are skipped, not an error: any ONNX file decodes.
    #[test]
    fn unknown_fields_are_skipped() {
        let mut graph = vec![0x7a, 2, 0x18, 1]; // field 15, length 2, {field 3: 1}
        graph.extend_from_slice(&[0x12, 1, b'g']); // name = "g"
        let decoded = GraphProto::decode(graph.as_slice()).expect("graph");
        assert_eq!(decoded.name, "g");
    }
}
