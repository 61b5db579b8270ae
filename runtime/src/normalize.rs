//! Per-feature standardisation of observations and actions.
//!
//! Statistics are computed from the training data, saved with the model and
//! applied identically at training and run time. Features may share statistics
//! in groups (an image's pixels share their channel's mean and spread).

use serde::{Deserialize, Serialize};

/// Smallest standard deviation used; constant features are centred, not scaled up.
pub const MIN_STD: f32 = 1e-6;

/// Why a normaliser could not be built or applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NormalizerError {
    /// Input length is not a multiple of the feature count.
    #[error("{what}: length {got} is not a multiple of the {features} features")]
    Length {
        /// Which input.
        what: &'static str,
        /// Number of features.
        features: usize,
        /// Length seen.
        got: usize,
    },
    /// A non-finite value.
    #[error("{what}: value {index} is {value}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Flat index.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Statistics with the wrong shape.
    #[error("normaliser: {0}")]
    Invalid(String),
}

/// Mean and standard deviation per group of features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalizer {
    /// Mean of each group.
    pub mean: Vec<f32>,
    /// Standard deviation of each group (≥ [`MIN_STD`]).
    pub std: Vec<f32>,
    /// Consecutive features sharing one statistic (1 for vectors, H·W for
    /// channel-major images).
    pub group: usize,
}

impl Normalizer {
    /// Statistics of `data` (`[rows, features]`), `group` consecutive features pooled.
    pub fn fit(data: &[f32], features: usize, group: usize) -> Result<Self, NormalizerError> {
        if features == 0 || group == 0 || !features.is_multiple_of(group) {
            return Err(NormalizerError::Invalid(format!(
                "{features} features cannot be split into groups of {group}"
            )));
        }
        if data.is_empty() || !data.len().is_multiple_of(features) {
            return Err(NormalizerError::Length {
                what: "fit data",
                features,
                got: data.len(),
            });
        }
        if let Some((index, &value)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(NormalizerError::NonFinite {
                what: "fit data",
                index,
                value,
            });
        }
        let groups = features / group;
        let mut sum = vec![0.0f64; groups];
        let mut sq = vec![0.0f64; groups];
        for row in data.chunks_exact(features) {
            for (i, &v) in row.iter().enumerate() {
                sum[i / group] += v as f64;
                sq[i / group] += (v as f64) * (v as f64);
            }
        }
        let count = (data.len() / features * group) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
        let std = sum
            .iter()
            .zip(&sq)
            .map(|(s, q)| {
                let m = s / count;
                ((q / count - m * m).max(0.0).sqrt() as f32).max(MIN_STD)
            })
            .collect::<Vec<f32>>();
        // Values near f32's range give statistics that overflow it.
        if let Some(g) = (0..groups).find(|&g| !(mean[g].is_finite() && std[g].is_finite())) {
            return Err(NormalizerError::Invalid(format!(
                "feature group {g}: mean {} / std {} overflow f32; the data hold values too large to standardise",
                mean[g], std[g]
            )));
        }
        Ok(Self { mean, std, group })
    }

    /// The identity normaliser for `features` features.
    pub fn identity(features: usize) -> Self {
        Self {
            mean: vec![0.0; features],
            std: vec![1.0; features],
            group: 1,
        }
    }

    /// Number of features covered.
    pub fn features(&self) -> usize {
        self.mean.len() * self.group
    }

    /// Check internal consistency (e.g. after loading from a file).
    pub fn validate(&self, expected_features: usize) -> Result<(), NormalizerError> {
        if self.mean.len() != self.std.len() {
            return Err(NormalizerError::Invalid(format!(
                "mean has {} entries but std has {}",
                self.mean.len(),
                self.std.len()
            )));
        }
        if self.features() != expected_features {
            return Err(NormalizerError::Invalid(format!(
                "covers {} features, expected {expected_features}",
                self.features()
            )));
        }
        if self.std.iter().chain(&self.mean).any(|v| !v.is_finite())
            || self.std.iter().any(|&s| s <= 0.0)
        {
            return Err(NormalizerError::Invalid(
                "non-finite mean or non-positive std".into(),
            ));
        }
        Ok(())
    }

    /// Standardise `data` in place (`[rows, features]`), rejecting non-finite input.
    pub fn normalize(&self, what: &'static str, data: &mut [f32]) -> Result<(), NormalizerError> {
        let f = self.features();
        if !data.len().is_multiple_of(f) {
            return Err(NormalizerError::Length {
                what,
                features: f,
                got: data.len(),
            });
        }
        for (index, v) in data.iter_mut().enumerate() {
            if !v.is_finite() {
                return Err(NormalizerError::NonFinite {
                    what,
                    index,
                    value: *v,
                });
            }
            let g = (index % f) / self.group;
            *v = (*v - self.mean[g]) / self.std[g];
        }
        Ok(())
    }

    /// Undo [`Normalizer::normalize`] in place.
    pub fn denormalize(&self, data: &mut [f32]) {
        let f = self.features();
        for (index, v) in data.iter_mut().enumerate() {
            let g = (index % f) / self.group;
            *v = *v * self.std[g] + self.mean[g];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_normalise_round_trip() {
        let data = [1.0, 10.0, 3.0, 20.0, 5.0, 30.0];
        let n = Normalizer::fit(&data, 2, 1).expect("fit");
        assert!((n.mean[0] - 3.0).abs() < 1e-6 && (n.mean[1] - 20.0).abs() < 1e-6);
        let mut x = data;
        n.normalize("x", &mut x).expect("finite");
        let m0 = (x[0] + x[2] + x[4]) / 3.0;
        let v0 = (x[0] * x[0] + x[2] * x[2] + x[4] * x[4]) / 3.0;
        assert!(m0.abs() < 1e-6 && (v0 - 1.0).abs() < 1e-5);
        n.denormalize(&mut x);
        for (a, b) in x.iter().zip(&data) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn grouped_statistics_pool_features() {
        // Two channels of two pixels each.
        let data = [0.0, 2.0, 10.0, 10.0];
        let n = Normalizer::fit(&data, 4, 2).expect("fit");
        assert_eq!(n.mean, vec![1.0, 10.0]);
        assert_eq!(n.std[1], MIN_STD);
        assert_eq!(n.features(), 4);
    }

    #[test]
    fn non_finite_input_is_named() {
        let n = Normalizer::identity(2);
        let mut x = [1.0, f32::NAN];
        let e = n.normalize("observation", &mut x).unwrap_err();
        assert!(matches!(
            e,
            NormalizerError::NonFinite {
                what: "observation",
                index: 1,
                ..
            }
        ));
        assert!(e.to_string().contains("observation: value 1 is NaN"));
    }
}
