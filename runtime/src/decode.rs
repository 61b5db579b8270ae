//! Turning a classifier head's scores into an action: the baselines of the
//! paper that choose among discrete options (Discretised: bins per action
//! value; K-means: action centres, optionally plus a regressed residual).
//!
//! The head graph outputs one row of scores per decision; [`ActionDecoder`]
//! (stored in the manifest) says how to read it. Decoding works in normalised
//! action units, allocates nothing, and draws its randomness from the caller's
//! seeded stream.

use crate::sampler::Noise;
use serde::{Deserialize, Serialize};

/// How a discrete choice is made from the scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// Draw from the softmax of the scores (keeps every mode the head learned).
    #[default]
    Sample,
    /// Take the highest score (deterministic; collapses to one mode).
    Argmax,
}

impl Choice {
    /// Lower-case name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sample => "sample",
            Self::Argmax => "argmax",
        }
    }
}

impl std::str::FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sample" => Ok(Self::Sample),
            "argmax" => Ok(Self::Argmax),
            other => Err(format!("unknown choice {other:?} (sample or argmax)")),
        }
    }
}

/// What the scores mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum DecodeScheme {
    /// `bins` uniform bins per action value over `[low[i], high[i]]`; the
    /// scores are `action_dim · bins` logits, value-major. Each value is
    /// chosen independently and decodes to its bin's centre.
    Bins {
        /// Bins per action value.
        bins: usize,
        /// Lower edge per action value.
        low: Vec<f32>,
        /// Upper edge per action value.
        high: Vec<f32>,
    },
    /// `k` action centres, row-major `[k, action_dim]`; the scores are `k`
    /// logits, followed by `k · action_dim` offsets when `residual` (the
    /// Behaviour Transformer's recipe: the chosen centre plus its offset).
    Centres {
        /// Number of centres.
        k: usize,
        /// The centres.
        centres: Vec<f32>,
        /// Whether an offset per centre follows the logits.
        residual: bool,
    },
}

/// The decoding of a classifier head: scheme plus default choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionDecoder {
    /// Default choice rule (a policy may switch it).
    pub choice: Choice,
    /// What the scores mean.
    pub scheme: DecodeScheme,
}

impl ActionDecoder {
    /// Scores per row for actions of length `action_dim`.
    pub fn score_width(&self, action_dim: usize) -> usize {
        match &self.scheme {
            DecodeScheme::Bins { bins, .. } => action_dim * bins,
            DecodeScheme::Centres { k, residual, .. } => {
                if *residual {
                    k + k * action_dim
                } else {
                    *k
                }
            }
        }
    }

    /// Check sizes and values against `action_dim`; the message names the field.
    pub fn validate(&self, action_dim: usize) -> Result<(), String> {
        match &self.scheme {
            DecodeScheme::Bins { bins, low, high } => {
                if *bins < 2 {
                    return Err(format!("decoder.scheme.bins is {bins}, need at least 2"));
                }
                for (field, v) in [("low", low), ("high", high)] {
                    if v.len() != action_dim {
                        return Err(format!(
                            "decoder.scheme.{field} has {} values, the action has {action_dim}",
                            v.len()
                        ));
                    }
                }
                if let Some(i) = (0..action_dim)
                    .find(|&i| !(low[i].is_finite() && high[i].is_finite() && low[i] < high[i]))
                {
                    return Err(format!(
                        "decoder.scheme: value {i} has low {} and high {} (need finite low < high)",
                        low[i], high[i]
                    ));
                }
            }
            DecodeScheme::Centres { k, centres, .. } => {
                if *k == 0 {
                    return Err("decoder.scheme.k is 0".into());
                }
                if centres.len() != k * action_dim {
                    return Err(format!(
                        "decoder.scheme.centres has {} values, expected k · action_dim = {}",
                        centres.len(),
                        k * action_dim
                    ));
                }
                if let Some(i) = centres.iter().position(|v| !v.is_finite()) {
                    return Err(format!("decoder.scheme.centres[{i}] is {}", centres[i]));
                }
            }
        }
        Ok(())
    }

    /// Decode one row of `scores` into `out` (normalised units) with `choice`.
    /// `out.len()` is the action length; `scores.len()` must be
    /// [`Self::score_width`] of it (checked by the caller once, at load).
    pub fn decode<N: Noise + ?Sized>(
        &self,
        scores: &[f32],
        choice: Choice,
        rng: &mut N,
        out: &mut [f32],
    ) {
        let a = out.len();
        match &self.scheme {
            DecodeScheme::Bins { bins, low, high } => {
                for (i, o) in out.iter_mut().enumerate() {
                    let j = pick(&scores[i * bins..(i + 1) * bins], choice, rng);
                    *o = bin_centre(low[i], high[i], *bins, j);
                }
            }
            DecodeScheme::Centres {
                k,
                centres,
                residual,
            } => {
                let j = pick(&scores[..*k], choice, rng);
                out.copy_from_slice(&centres[j * a..(j + 1) * a]);
                if *residual {
                    let off = &scores[k + j * a..k + (j + 1) * a];
                    for (o, d) in out.iter_mut().zip(off) {
                        *o += d;
                    }
                }
            }
        }
    }
}

/// Centre of bin `j` of `bins` uniform bins over `[low, high]`.
pub fn bin_centre(low: f32, high: f32, bins: usize, j: usize) -> f32 {
    low + (j as f32 + 0.5) * (high - low) / bins as f32
}

/// The bin of `bins` uniform bins over `[low, high]` that holds `v`
/// (values outside the range go to the end bins).
pub fn bin_index(low: f32, high: f32, bins: usize, v: f32) -> usize {
    let x = ((v - low) / (high - low) * bins as f32).floor();
    if x.is_nan() || x < 0.0 {
        0
    } else {
        (x as usize).min(bins - 1)
    }
}

/// Index chosen from logits: the largest, or a draw from their softmax
/// (inverse CDF over exp(l − max), no allocation).
fn pick<N: Noise + ?Sized>(logits: &[f32], choice: Choice, rng: &mut N) -> usize {
    let (best, max) =
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bm), (i, &l)| {
                if l > bm { (i, l) } else { (bi, bm) }
            });
    match choice {
        Choice::Argmax => best,
        Choice::Sample => {
            let total: f32 = logits.iter().map(|l| (l - max).exp()).sum();
            let mut u = rng.uniform() * total;
            for (i, l) in logits.iter().enumerate() {
                u -= (l - max).exp();
                if u <= 0.0 {
                    return i;
                }
            }
            best
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn bins_round_trip_to_within_half_a_bin() {
        let (low, high, bins) = (-1.5f32, 2.5f32, 20);
        let width = (high - low) / bins as f32;
        for i in 0..=400 {
            let v = low + (high - low) * i as f32 / 400.0;
            let j = bin_index(low, high, bins, v);
            let c = bin_centre(low, high, bins, j);
            assert!((c - v).abs() <= 0.5 * width + 1e-5, "{v} → bin {j} → {c}");
        }
        assert_eq!(bin_index(low, high, bins, -10.0), 0);
        assert_eq!(bin_index(low, high, bins, 10.0), bins - 1);
        assert_eq!(bin_index(low, high, bins, f32::NAN), 0);
    }

    #[test]
    fn argmax_decodes_the_best_bin_and_centre_plus_offset() {
        let d = ActionDecoder {
            choice: Choice::Argmax,
            scheme: DecodeScheme::Bins {
                bins: 4,
                low: vec![0.0, -1.0],
                high: vec![4.0, 1.0],
            },
        };
        let scores = [0.0, 0.0, 5.0, 0.0, 9.0, 0.0, 0.0, 0.0];
        let mut out = [0.0; 2];
        d.decode(
            &scores,
            Choice::Argmax,
            &mut ChaCha8Rng::seed_from_u64(0),
            &mut out,
        );
        assert_eq!(out, [2.5, -0.75]);

        let d = ActionDecoder {
            choice: Choice::Argmax,
            scheme: DecodeScheme::Centres {
                k: 2,
                centres: vec![1.0, 1.0, -1.0, -1.0],
                residual: true,
            },
        };
        assert_eq!(d.score_width(2), 6);
        let scores = [0.1, 3.0, 9.0, 9.0, 0.25, -0.5];
        d.decode(
            &scores,
            Choice::Argmax,
            &mut ChaCha8Rng::seed_from_u64(0),
            &mut out,
        );
        assert_eq!(out, [-0.75, -1.5]);
    }

    #[test]
    fn sampling_follows_the_softmax_and_is_seeded() {
        let logits = [0.0f32, (3.0f32).ln()]; // probabilities 1/4, 3/4
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| pick(&logits, Choice::Sample, &mut rng) == 1)
            .count();
        let share = ones as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.02, "{share}");
        let draw = |seed| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            (0..50)
                .map(|_| pick(&logits, Choice::Sample, &mut r))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn bad_decoders_name_the_field() {
        let mut d = ActionDecoder {
            choice: Choice::Sample,
            scheme: DecodeScheme::Bins {
                bins: 20,
                low: vec![0.0; 3],
                high: vec![1.0; 2],
            },
        };
        assert!(d.validate(3).unwrap_err().contains("decoder.scheme.high"));
        d.scheme = DecodeScheme::Centres {
            k: 3,
            centres: vec![0.0; 5],
            residual: false,
        };
        assert!(
            d.validate(2)
                .unwrap_err()
                .contains("decoder.scheme.centres")
        );
        d.scheme = DecodeScheme::Bins {
            bins: 20,
            low: vec![1.0],
            high: vec![1.0],
        };
        assert!(d.validate(1).unwrap_err().contains("value 0"));
    }
}
