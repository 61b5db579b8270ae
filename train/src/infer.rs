//! A trained burn policy as the runtime's [`NoiseModel`]: for checks of a
//! checkpoint against its export. Evaluation never runs burn — it exports
//! first and runs `diffbc_runtime::Policy`.

use crate::checkpoint::{self, CheckpointMeta};
use crate::config::Method;
use crate::error::TrainError;
use crate::model::{Policy, PolicySpec};
use burn::prelude::*;
use diffbc_runtime::NoiseModel;
use std::path::Path;

/// Errors of the burn noise model.
#[derive(Debug, thiserror::Error)]
pub enum BurnModelError {
    /// Input of the wrong length.
    #[error("{what}: {got} values is not a multiple of {per_row}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// Values per row.
        per_row: usize,
        /// Values given.
        got: usize,
    },
    /// Output could not be read back.
    #[error("reading back a tensor: {0}")]
    Data(String),
}

/// A loaded policy on an inference backend.
#[derive(Debug)]
pub struct BurnPolicy<B: Backend> {
    /// Shapes and config.
    pub spec: PolicySpec,
    /// Normalisers and provenance.
    pub meta: CheckpointMeta,
    /// The network (EMA weights).
    pub policy: Policy<B>,
    device: B::Device,
}

fn to_vec<B: Backend>(t: Tensor<B, 2>) -> Result<Vec<f32>, BurnModelError> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| BurnModelError::Data(format!("{e:?}")))
}

impl<B: Backend> BurnPolicy<B> {
    /// Load the EMA weights of a checkpoint folder.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, TrainError> {
        let (spec, meta, policy) = checkpoint::load_policy(dir, device)?;
        Ok(Self {
            spec,
            meta,
            policy,
            device: device.clone(),
        })
    }

    /// Wrap an in-memory policy.
    pub fn new(
        spec: PolicySpec,
        meta: CheckpointMeta,
        policy: Policy<B>,
        device: B::Device,
    ) -> Self {
        Self {
            spec,
            meta,
            policy,
            device,
        }
    }

    /// The method this policy was trained with.
    pub fn method(&self) -> Method {
        self.spec.config.method
    }

    fn rows(
        &self,
        what: &'static str,
        len: usize,
        per_row: usize,
    ) -> Result<usize, BurnModelError> {
        if per_row == 0 || !len.is_multiple_of(per_row) {
            return Err(BurnModelError::Shape {
                what,
                per_row,
                got: len,
            });
        }
        Ok(len / per_row)
    }
}

impl<B: Backend> NoiseModel for BurnPolicy<B> {
    type Error = BurnModelError;

    fn action_dim(&self) -> usize {
        self.spec.action_dim
    }

    fn embedding_dim(&self) -> usize {
        self.spec.embedding_dim()
    }

    fn observation_dim(&self) -> usize {
        self.spec.frames() * self.spec.obs.len()
    }

    fn encode(&mut self, observations: &[f32], embeddings: &mut [f32]) -> Result<(), Self::Error> {
        let od = self.observation_dim();
        let rows = self.rows("observations", observations.len(), od)?;
        let x = Tensor::<B, 2>::from_data(
            TensorData::new(observations.to_vec(), [rows, od]),
            &self.device,
        );
        let e = to_vec(self.policy.encode(x, self.spec.frames()))?;
        if e.len() != embeddings.len() {
            return Err(BurnModelError::Shape {
                what: "embeddings out",
                per_row: self.embedding_dim(),
                got: embeddings.len(),
            });
        }
        embeddings.copy_from_slice(&e);
        Ok(())
    }

    fn predict_noise(
        &mut self,
        embeddings: &[f32],
        actions: &[f32],
        t: f32,
        eps: &mut [f32],
    ) -> Result<(), Self::Error> {
        let (a, e) = (self.spec.action_dim, self.embedding_dim());
        let rows = self.rows("actions", actions.len(), a)?;
        if embeddings.len() != rows * e {
            return Err(BurnModelError::Shape {
                what: "embeddings",
                per_row: e,
                got: embeddings.len(),
            });
        }
        let emb = Tensor::<B, 2>::from_data(
            TensorData::new(embeddings.to_vec(), [rows, e]),
            &self.device,
        );
        let x =
            Tensor::<B, 2>::from_data(TensorData::new(actions.to_vec(), [rows, a]), &self.device);
        let tt = Tensor::<B, 2>::full([rows, 1], t, &self.device);
        let out = to_vec(self.policy.head_forward(emb, x, tt))?;
        eps.copy_from_slice(&out);
        Ok(())
    }
}
