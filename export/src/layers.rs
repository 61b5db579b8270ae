//! How each module type of `diffbc_train::model` writes itself as ONNX nodes,
//! from its own weights. A new layer or head type that is not handled here
//! fails to compile (the matches over `Encoder` and `Head` are exhaustive).

use crate::graph::{Attr, GraphBuilder};
use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use diffbc_train::model::{
    AttentionBlock, BasicMlp, BinsHead, CentresHead, CnnEncoder, Encoder, LAYER_NORM_EPS,
    LEAKY_SLOPE, MlpEncoder, MlpSieve, MseHead, PatchConv, TransformerDenoiser,
};

/// A module that can emit its forward pass into a graph.
pub trait ToOnnx {
    /// Emit the nodes that compute `forward(input)`; returns the output value name.
    fn emit(&self, g: &mut GraphBuilder, input: &str) -> String;
}

fn values<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>) -> (Vec<usize>, Vec<f32>) {
    let t = p.val();
    let dims = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default();
    (dims, data)
}

impl<B: Backend> ToOnnx for Linear<B> {
    /// burn stores the weight as `[d_in, d_out]`, so `Gemm` takes it untransposed.
    fn emit(&self, g: &mut GraphBuilder, input: &str) -> String {
        let (dims, w) = values(&self.weight);
        let w = g.constant("weight", &dims, w);
        match &self.bias {
            Some(b) => {
                let (bd, bv) = values(b);
                let b = g.constant("bias", &bd, bv);
                g.node("Gemm", &[input, &w, &b], &[("transB", Attr::Int(0))])
            }
            None => g.node("MatMul", &[input, &w], &[]),
        }
    }
}

impl<B: Backend> ToOnnx for LayerNorm<B> {
    fn emit(&self, g: &mut GraphBuilder, input: &str) -> String {
        let (dims, gamma) = values(&self.gamma);
        let gamma = g.constant("gamma", &dims, gamma);
        let beta = match &self.beta {
            Some(b) => values(b).1,
            None => vec![0.0; dims[0]],
        };
        let beta = g.constant("beta", &dims, beta);
        g.node(
            "LayerNormalization",
            &[input, &gamma, &beta],
            &[
                ("axis", Attr::Int(-1)),
                ("epsilon", Attr::Float(LAYER_NORM_EPS as f32)),
            ],
        )
    }
}

/// Exact GELU, as burn computes it: x · (1 + erf(x / √2)) / 2.
pub fn gelu(g: &mut GraphBuilder, x: &str) -> String {
    let sqrt2 = g.scalar(std::f32::consts::SQRT_2);
    let one = g.scalar(1.0);
    let two = g.scalar(2.0);
    let d = g.node("Div", &[x, &sqrt2], &[]);
    let e = g.node("Erf", &[&d], &[]);
    let a = g.node("Add", &[&e, &one], &[]);
    let m = g.node("Mul", &[x, &a], &[]);
    g.node("Div", &[&m, &two], &[])
}

/// LeakyReLU with diffbc's slope.
pub fn leaky_relu(g: &mut GraphBuilder, x: &str) -> String {
    g.node(
        "LeakyRelu",
        &[x],
        &[("alpha", Attr::Float(LEAKY_SLOPE as f32))],
    )
}

impl<B: Backend> ToOnnx for PatchConv<B> {
    /// An ONNX `Conv` with kernel = stride = patch: weight `[out, c, k, k]` is
    /// the Linear's `[c·k·k, out]` weight transposed.
    fn emit(&self, g: &mut GraphBuilder, input: &str) -> String {
        let (dims, w) = values(&self.linear.weight);
        let (ckk, out) = (dims[0], dims[1]);
        let k = self.patch;
        let c = ckk / (k * k);
        let mut wt = vec![0.0f32; ckk * out];
        for i in 0..ckk {
            for o in 0..out {
                wt[o * ckk + i] = w[i * out + o];
            }
        }
        let w = g.constant("conv_weight", &[out, c, k, k], wt);
        let mut inputs = vec![input.to_string(), w];
        if let Some(b) = &self.linear.bias {
            let (bd, bv) = values(b);
            inputs.push(g.constant("conv_bias", &bd, bv));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let k = k as i64;
        g.node(
            "Conv",
            &refs,
            &[
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![k, k])),
                ("pads", Attr::Ints(vec![0, 0, 0, 0])),
            ],
        )
    }
}

impl<B: Backend> ToOnnx for MlpEncoder<B> {
    fn emit(&self, g: &mut GraphBuilder, input: &str) -> String {
        let h = self.l1.emit(g, input);
        let h = leaky_relu(g, &h);
        self.l2.emit(g, &h)
    }
}

impl<B: Backend> ToOnnx for CnnEncoder<B> {
    /// Input `[rows, c·h·w]`, reshaped to `[rows, c, h, w]`.
    fn emit(&self, g: &mut GraphBuilder, input: &str) -> String {
        let [c, h, w] = self.input;
        let mut x = g.reshape(input, &[-1, c as i64, h as i64, w as i64]);
        for conv in &self.convs {
            let y = conv.emit(g, &x);
            x = gelu(g, &y);
        }
        let flat = g.node("Flatten", &[&x], &[("axis", Attr::Int(1))]);
        self.proj.emit(g, &flat)
    }
}

impl<B: Backend> ToOnnx for Encoder<B> {
    fn emit(&self, g: &mut GraphBuilder, input: &str) -> String {
        match self {
            Encoder::Mlp(m) => m.emit(g, input),
            Encoder::Cnn(c) => c.emit(g, input),
        }
    }
}

/// Two Linear + GELU layers: the trunk shared by the MSE and discrete
/// baseline heads.
fn gelu_trunk<B: Backend>(
    g: &mut GraphBuilder,
    fc1: &Linear<B>,
    fc2: &Linear<B>,
    input: &str,
) -> String {
    let h = fc1.emit(g, input);
    let h = gelu(g, &h);
    let h = fc2.emit(g, &h);
    gelu(g, &h)
}

impl<B: Backend> ToOnnx for MseHead<B> {
    fn emit(&self, g: &mut GraphBuilder, input: &str) -> String {
        let h = gelu_trunk(g, &self.fc1, &self.fc2, input);
        self.fc3.emit(g, &h)
    }
}

/// The MLP Sieve's forward pass (three inputs, so not [`ToOnnx`]).
pub fn emit_sieve<B: Backend>(
    s: &MlpSieve<B>,
    g: &mut GraphBuilder,
    embedding: &str,
    action: &str,
    t: &str,
) -> String {
    let a = s.action_in.emit(g, action);
    let a = leaky_relu(g, &a);
    let ea = s.action_out.emit(g, &a);
    let f = s.time_freq.emit(g, t);
    let f = g.node("Sin", &[&f], &[]);
    let et = s.time_out.emit(g, &f);
    let cat = g.node("Concat", &[embedding, &ea, &et], &[("axis", Attr::Int(1))]);
    let h = s.fc1.emit(g, &cat);
    let h = s.norm1.emit(g, &h);
    let h1 = gelu(g, &h);
    let scale = g.scalar(std::f32::consts::FRAC_1_SQRT_2);
    let mut h = g.node("Mul", &[&h1, &scale], &[]);
    for fc in [&s.fc2, &s.fc3] {
        let cat = g.node("Concat", &[&h, action, t], &[("axis", Attr::Int(1))]);
        let y = fc.emit(g, &cat);
        let y = gelu(g, &y);
        let r = g.node("Add", &[&y, &h], &[]);
        h = if std::ptr::eq(fc, &s.fc3) {
            r
        } else {
            g.node("Mul", &[&r, &scale], &[])
        };
    }
    let cat = g.node("Concat", &[&h, action, t], &[("axis", Attr::Int(1))]);
    s.fc4.emit(g, &cat)
}

impl<B: Backend> ToOnnx for BinsHead<B> {
    /// The logits; the bin ranges go to the manifest's decoder.
    fn emit(&self, g: &mut GraphBuilder, input: &str) -> String {
        let h = gelu_trunk(g, &self.fc1, &self.fc2, input);
        self.fc3.emit(g, &h)
    }
}

impl<B: Backend> ToOnnx for CentresHead<B> {
    /// The logits, then the offsets when residual; the centres go to the
    /// manifest's decoder.
    fn emit(&self, g: &mut GraphBuilder, input: &str) -> String {
        let h = gelu_trunk(g, &self.fc1, &self.fc2, input);
        let logits = self.logits.emit(g, &h);
        match &self.offsets {
            Some(o) => {
                let off = o.emit(g, &h);
                g.node("Concat", &[&logits, &off], &[("axis", Attr::Int(1))])
            }
            None => logits,
        }
    }
}

/// The Basic MLP's forward pass.
pub fn emit_basic<B: Backend>(
    m: &BasicMlp<B>,
    g: &mut GraphBuilder,
    embedding: &str,
    action: &str,
    t: &str,
) -> String {
    let mut h = g.node("Concat", &[action, embedding, t], &[("axis", Attr::Int(1))]);
    for l in &m.hidden {
        let y = l.emit(g, &h);
        h = gelu(g, &y);
    }
    m.out.emit(g, &h)
}

/// A Linear applied to the last axis of a `[rows, tokens, d]` tensor
/// (`Gemm` is 2-D only): `MatMul` then `Add`.
fn linear_tokens<B: Backend>(l: &Linear<B>, g: &mut GraphBuilder, x: &str) -> String {
    let (dims, w) = values(&l.weight);
    let w = g.constant("weight", &dims, w);
    let y = g.node("MatMul", &[x, &w], &[]);
    match &l.bias {
        Some(b) => {
            let (bd, bv) = values(b);
            let b = g.constant("bias", &bd, bv);
            g.node("Add", &[&y, &b], &[])
        }
        None => y,
    }
}

fn emit_block<B: Backend>(
    b: &AttentionBlock<B>,
    g: &mut GraphBuilder,
    x: &str,
    tokens: usize,
    d: usize,
) -> String {
    let (h, dh) = (b.heads, d / b.heads);
    let shape = [-1, tokens as i64, h as i64, dh as i64];
    let mut heads = |l: &Linear<B>, perm: [i64; 4]| {
        let y = linear_tokens(l, g, x);
        let y = g.reshape(&y, &shape);
        g.node("Transpose", &[&y], &[("perm", Attr::Ints(perm.to_vec()))])
    };
    let q = heads(&b.query, [0, 2, 1, 3]);
    let k = heads(&b.key, [0, 2, 3, 1]);
    let v = heads(&b.value, [0, 2, 1, 3]);
    let scores = g.node("MatMul", &[&q, &k], &[]);
    let scale = g.scalar(1.0 / (dh as f32).sqrt());
    let scores = g.node("Mul", &[&scores, &scale], &[]);
    let weights = g.node("Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
    let att = g.node("MatMul", &[&weights, &v], &[]);
    let att = g.node(
        "Transpose",
        &[&att],
        &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
    );
    let att = g.reshape(&att, &[-1, tokens as i64, d as i64]);
    let att = linear_tokens(&b.proj, g, &att);
    let s = g.scalar(std::f32::consts::FRAC_1_SQRT_2);
    let r = g.node("Add", &[x, &att], &[]);
    let r = g.node("Mul", &[&r, &s], &[]);
    let x = b.norm1.emit(g, &r);
    let f = linear_tokens(&b.ff1, g, &x);
    let f = gelu(g, &f);
    let f = linear_tokens(&b.ff2, g, &f);
    let r = g.node("Add", &[&x, &f], &[]);
    let r = g.node("Mul", &[&r, &s], &[]);
    b.norm2.emit(g, &r)
}

/// The Transformer denoiser's forward pass.
pub fn emit_transformer<B: Backend>(
    m: &TransformerDenoiser<B>,
    g: &mut GraphBuilder,
    embedding: &str,
    action: &str,
    t: &str,
) -> String {
    let d = m.action_in.weight.dims()[1];
    let e = m.obs_in.weight.dims()[0];
    let tokens = m.frames + 2;
    let frames = g.reshape(embedding, &[-1, m.frames as i64, e as i64]);
    let obs = linear_tokens(&m.obs_in, g, &frames);
    let f = m.time_freq.emit(g, t);
    let f = g.node("Sin", &[&f], &[]);
    let time = m.time_out.emit(g, &f);
    let time = g.reshape(&time, &[-1, 1, d as i64]);
    let act = m.action_in.emit(g, action);
    let act = g.reshape(&act, &[-1, 1, d as i64]);
    let x = g.node("Concat", &[&obs, &time, &act], &[("axis", Attr::Int(1))]);
    let (pd, pv) = values(&m.position);
    let pos = g.constant("position", &[1, pd[0], pd[1]], pv);
    let mut x = g.node("Add", &[&x, &pos], &[]);
    for b in &m.blocks {
        x = emit_block(b, g, &x, tokens, d);
    }
    let flat = g.reshape(&x, &[-1, (tokens * d) as i64]);
    m.out.emit(g, &flat)
}
