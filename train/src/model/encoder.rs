use crate::data::ObsSpec;
use crate::error::TrainError;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, leaky_relu};
use serde::{Deserialize, Serialize};

/// Negative slope of every LeakyReLU in diffbc's networks.
pub const LEAKY_SLOPE: f64 = 0.01;

/// Epsilon of every layer norm in diffbc's networks.
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// Observation encoder choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum EncoderConfig {
    /// Vector observations: Linear → LeakyReLU → Linear.
    Mlp {
        /// Hidden width.
        hidden: usize,
        /// Embedding length per frame.
        embed: usize,
    },
    /// Image observations: patchifying convolutions (kernel = stride) with
    /// GELU, flattened, then Linear.
    Cnn {
        /// The convolution layers, first to last.
        layers: Vec<ConvLayerConfig>,
        /// Embedding length per frame.
        embed: usize,
    },
}

/// One convolution of the CNN encoder: kernel size = stride = `patch`, no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvLayerConfig {
    /// Output channels.
    pub channels: usize,
    /// Kernel size and stride (the resolution shrinks by this factor).
    pub patch: usize,
}

impl EncoderConfig {
    /// Embedding length per frame.
    pub fn embed(&self) -> usize {
        match self {
            Self::Mlp { embed, .. } | Self::Cnn { embed, .. } => *embed,
        }
    }

    /// Check sizes; errors name the field.
    pub fn validate(&self) -> Result<(), TrainError> {
        match self {
            Self::Mlp { hidden, embed } => {
                if *hidden == 0 || *embed == 0 {
                    return Err(TrainError::config(
                        "encoder",
                        "hidden and embed must be at least 1",
                    ));
                }
            }
            Self::Cnn { layers, embed } => {
                if layers.is_empty()
                    || layers.iter().any(|l| l.channels == 0 || l.patch == 0)
                    || *embed == 0
                {
                    return Err(TrainError::config(
                        "encoder.layers",
                        "need at least one conv layer with channels ≥ 1 and patch ≥ 1, and embed ≥ 1",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Check that this encoder can read frames of shape `obs`.
    pub fn check_obs(&self, obs: ObsSpec) -> Result<(), TrainError> {
        match (self, obs) {
            (Self::Mlp { .. }, _) => Ok(()),
            (Self::Cnn { .. }, ObsSpec::Vector { .. }) => Err(TrainError::config(
                "encoder.kind",
                "cnn needs image observations; use mlp for vectors",
            )),
            (Self::Cnn { layers, .. }, ObsSpec::Image { height, width, .. }) => {
                let (mut h, mut w) = (height, width);
                for (i, l) in layers.iter().enumerate() {
                    if h % l.patch != 0 || w % l.patch != 0 {
                        return Err(TrainError::config(
                            format!("encoder.layers[{i}].patch"),
                            format!("{} does not divide the {h}×{w} feature map", l.patch),
                        ));
                    }
                    h /= l.patch;
                    w /= l.patch;
                }
                Ok(())
            }
        }
    }

    /// Build the encoder for frames of shape `obs` (see [`EncoderConfig::check_obs`]).
    pub fn init<B: Backend>(&self, obs: ObsSpec, device: &B::Device) -> Encoder<B> {
        match (self, obs) {
            (
                Self::Cnn { layers, embed },
                ObsSpec::Image {
                    channels: c0,
                    height,
                    width,
                },
            ) => {
                let mut convs = Vec::new();
                let (mut c, mut h, mut w) = (c0, height, width);
                for l in layers {
                    convs.push(PatchConv {
                        linear: LinearConfig::new(c * l.patch * l.patch, l.channels).init(device),
                        patch: l.patch,
                    });
                    c = l.channels;
                    h /= l.patch;
                    w /= l.patch;
                }
                Encoder::Cnn(CnnEncoder {
                    convs,
                    proj: LinearConfig::new(c * h * w, *embed).init(device),
                    input: [c0, height, width],
                })
            }
            // Vector frames (a CNN config is rejected by `check_obs` before this).
            (_, obs) => {
                let (hidden, embed) = match self {
                    Self::Mlp { hidden, embed } => (*hidden, *embed),
                    Self::Cnn { embed, .. } => (*embed, *embed),
                };
                Encoder::Mlp(MlpEncoder {
                    l1: LinearConfig::new(obs.len(), hidden).init(device),
                    l2: LinearConfig::new(hidden, embed).init(device),
                })
            }
        }
    }
}

/// Observation encoder.
#[derive(Module, Debug)]
pub enum Encoder<B: Backend> {
    /// For vectors.
    Mlp(MlpEncoder<B>),
    /// For images.
    Cnn(CnnEncoder<B>),
}

impl<B: Backend> Encoder<B> {
    /// `[rows, frame_len]` → `[rows, embed]`.
    pub fn forward(&self, frames: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Self::Mlp(m) => m.forward(frames),
            Self::Cnn(c) => c.forward(frames),
        }
    }
}

/// Linear → LeakyReLU → Linear.
#[derive(Module, Debug)]
pub struct MlpEncoder<B: Backend> {
    /// `[frame_len → hidden]`.
    pub l1: Linear<B>,
    /// `[hidden → embed]`.
    pub l2: Linear<B>,
}

impl<B: Backend> MlpEncoder<B> {
    /// `[rows, frame_len]` → `[rows, embed]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.l2.forward(leaky_relu(self.l1.forward(x), LEAKY_SLOPE))
    }
}

/// A convolution whose kernel equals its stride (no padding): each
/// `patch × patch` block of the input maps to one output pixel. Written as
/// reshape → Linear so both passes are matrix products; equivalent to an ONNX
/// `Conv` with `kernel_shape = strides = [patch, patch]`, whose weight
/// `[out, c, k, k]` is this Linear's `[c·k·k, out]` weight transposed.
#[derive(Module, Debug)]
pub struct PatchConv<B: Backend> {
    /// `[c · patch · patch → out]`, input index `(c · k + ki) · k + kj`.
    pub linear: Linear<B>,
    /// Kernel size and stride.
    #[module(skip)]
    pub patch: usize,
}

impl<B: Backend> PatchConv<B> {
    /// `[n, c, h, w]` → `[n, out, h / k, w / k]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let k = self.patch;
        let (ho, wo) = (h / k, w / k);
        let cols: Tensor<B, 6> = x.reshape([n, c, ho, k, wo, k]);
        let cols = cols
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n * ho * wo, c * k * k]);
        let y = self.linear.forward(cols);
        let out = y.dims()[1];
        y.reshape([n, ho, wo, out]).permute([0, 3, 1, 2])
    }
}

/// Patchifying convolutions with GELU, flattened (channel-major), then Linear.
#[derive(Module, Debug)]
pub struct CnnEncoder<B: Backend> {
    /// The convolutions, first to last.
    pub convs: Vec<PatchConv<B>>,
    /// `[c · h · w → embed]` on the flattened last feature map.
    pub proj: Linear<B>,
    /// Input `[channels, height, width]`.
    #[module(skip)]
    pub input: [usize; 3],
}

impl<B: Backend> CnnEncoder<B> {
    /// `[rows, c·h·w]` (channel-major) → `[rows, embed]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let rows = x.dims()[0];
        let [c, h, w] = self.input;
        let mut x: Tensor<B, 4> = x.reshape([rows, c, h, w]);
        for conv in &self.convs {
            x = gelu(conv.forward(x));
        }
        self.proj.forward(x.flatten(1, 3))
    }
}
