use crate::error::TrainError;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::gelu;
use serde::{Deserialize, Serialize};

/// Sizes of the MSE regression head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MseHeadConfig {
    /// Hidden width of the two hidden layers.
    pub hidden: usize,
}

impl Default for MseHeadConfig {
    fn default() -> Self {
        Self { hidden: 256 }
    }
}

impl MseHeadConfig {
    /// Check sizes.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.hidden == 0 {
            return Err(TrainError::config("mse_head.hidden", "must be at least 1"));
        }
        Ok(())
    }

    /// Build the head.
    pub fn init<B: Backend>(
        &self,
        embedding: usize,
        action: usize,
        device: &B::Device,
    ) -> MseHead<B> {
        MseHead {
            fc1: LinearConfig::new(embedding, self.hidden).init(device),
            fc2: LinearConfig::new(self.hidden, self.hidden).init(device),
            fc3: LinearConfig::new(self.hidden, action).init(device),
        }
    }
}

/// Embedding → GELU MLP → action (normalised units).
#[derive(Module, Debug)]
pub struct MseHead<B: Backend> {
    /// embedding → hidden.
    pub fc1: Linear<B>,
    /// hidden → hidden.
    pub fc2: Linear<B>,
    /// hidden → action.
    pub fc3: Linear<B>,
}

impl<B: Backend> MseHead<B> {
    /// `[rows, E]` → `[rows, A]`.
    pub fn forward(&self, embedding: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc3
            .forward(gelu(self.fc2.forward(gelu(self.fc1.forward(embedding)))))
    }
}
