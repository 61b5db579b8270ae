use crate::error::TrainError;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::gelu;
use serde::{Deserialize, Serialize};

/// Basic MLP sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicMlpConfig {
    /// Width of every hidden layer.
    pub hidden: usize,
    /// Number of hidden layers (the paper uses 3).
    pub layers: usize,
}

impl Default for BasicMlpConfig {
    fn default() -> Self {
        Self {
            hidden: 512,
            layers: 3,
        }
    }
}

impl BasicMlpConfig {
    /// Check sizes.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.hidden == 0 || self.layers == 0 {
            return Err(TrainError::config(
                "denoiser",
                "hidden and layers must be at least 1",
            ));
        }
        Ok(())
    }

    /// Build the network.
    pub fn init<B: Backend>(
        &self,
        embedding: usize,
        action: usize,
        device: &B::Device,
    ) -> BasicMlp<B> {
        let mut hidden = vec![LinearConfig::new(action + embedding + 1, self.hidden).init(device)];
        for _ in 1..self.layers {
            hidden.push(LinearConfig::new(self.hidden, self.hidden).init(device));
        }
        BasicMlp {
            hidden,
            out: LinearConfig::new(self.hidden, action).init(device),
        }
    }
}

/// The paper's Basic MLP denoiser: `[a_τ, o, τ/T]` concatenated, GELU hidden
/// layers, a linear read-out of ε̂. No embeddings, no re-concatenation.
#[derive(Module, Debug)]
pub struct BasicMlp<B: Backend> {
    /// The hidden layers, first to last (each followed by GELU).
    pub hidden: Vec<Linear<B>>,
    /// hidden → ε̂.
    pub out: Linear<B>,
}

impl<B: Backend> BasicMlp<B> {
    /// `embedding [rows, E]`, `action [rows, A]`, `t [rows, 1]` → ε̂ `[rows, A]`.
    pub fn forward(
        &self,
        embedding: Tensor<B, 2>,
        action: Tensor<B, 2>,
        t: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let mut h = Tensor::cat(vec![action, embedding, t], 1);
        for l in &self.hidden {
            h = gelu(l.forward(h));
        }
        self.out.forward(h)
    }
}
