//! The DDPM noise schedule: linear β from `beta_min` to `beta_max` over `T` steps.
//!
//! Steps are numbered τ = 1…T as in the paper; τ = 0 is the clean action. All
//! derived quantities (α, ᾱ and the coefficients of the reverse step) are
//! computed once, in `f64`, when the schedule is built.

use serde::{Deserialize, Serialize};

/// How the schedule is configured. The paper uses `T = 50`, β from 1e-4 to 0.02.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Number of diffusion steps T (≥ 1).
    pub steps: usize,
    /// β at τ = 1.
    pub beta_min: f64,
    /// β at τ = T.
    pub beta_max: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            steps: 50,
            beta_min: 1e-4,
            beta_max: 0.02,
        }
    }
}

/// Why a schedule could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// `steps` was zero.
    #[error("diffusion.steps (T) must be at least 1, got 0")]
    ZeroSteps,
    /// A β outside (0, 1).
    #[error("diffusion.{field} must lie in (0, 1), got {value}")]
    BetaOutOfRange {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// `beta_min > beta_max`.
    #[error("diffusion.beta_min ({min}) is larger than diffusion.beta_max ({max})")]
    BetaOrder {
        /// β at τ = 1.
        min: f64,
        /// β at τ = T.
        max: f64,
    },
    /// ᾱ falls below [`MIN_ALPHA_BAR`]: every β is valid on its own, but
    /// together they destroy the signal and the reverse process explodes.
    #[error(
        "alpha_bar reaches {alpha_bar:e} at step {tau} (below {MIN_ALPHA_BAR:e}): the betas together leave no signal and sampling would amplify noise beyond f32; use smaller betas or fewer steps"
    )]
    AlphaBarUnderflow {
        /// The first step τ (1-based) where ᾱ_τ is below the bound.
        tau: usize,
        /// ᾱ_τ there.
        alpha_bar: f64,
    },
    /// Explicit β values that are empty or out of range.
    #[error("schedule beta[{index}] = {value} is not in (0, 1)")]
    BadBeta {
        /// Index into the β list (0-based, i.e. τ − 1).
        index: usize,
        /// Its value.
        value: f64,
    },
}

/// The smallest ᾱ_T a schedule may reach. Sampling divides by √ᾱ (DDPM's
/// steps multiply by 1/√α_τ, whose product over the chain is 1/√ᾱ_T; DDIM
/// and the clean-action estimate divide by √ᾱ_τ directly), so a schedule
/// whose ᾱ underflows turns a unit of noise into ~1e23 action units. At this
/// bound the amplification is at most ~3·10⁴; every published DDPM schedule
/// (linear to 0.02 over 1000 steps: ᾱ_T ≈ 4·10⁻⁵) stays well above it.
pub const MIN_ALPHA_BAR: f64 = 1e-9;

/// A precomputed noise schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    beta: Vec<f64>,
    alpha_bar: Vec<f64>,
}

impl NoiseSchedule {
    /// Build the linear schedule described by `config`.
    pub fn new(config: &ScheduleConfig) -> Result<Self, ScheduleError> {
        if config.steps == 0 {
            return Err(ScheduleError::ZeroSteps);
        }
        for (field, value) in [("beta_min", config.beta_min), ("beta_max", config.beta_max)] {
            if !(value > 0.0 && value < 1.0) {
                return Err(ScheduleError::BetaOutOfRange { field, value });
            }
        }
        if config.beta_min > config.beta_max {
            return Err(ScheduleError::BetaOrder {
                min: config.beta_min,
                max: config.beta_max,
            });
        }
        let t = config.steps;
        let beta = (0..t)
            .map(|i| {
                if t == 1 {
                    config.beta_min
                } else {
                    config.beta_min
                        + (config.beta_max - config.beta_min) * i as f64 / (t - 1) as f64
                }
            })
            .collect();
        Self::from_betas(beta)
    }

    /// Build a schedule from explicit β values (β_1 … β_T), as stored in a manifest.
    pub fn from_betas(beta: Vec<f64>) -> Result<Self, ScheduleError> {
        if beta.is_empty() {
            return Err(ScheduleError::ZeroSteps);
        }
        if let Some((index, &value)) = beta
            .iter()
            .enumerate()
            .find(|&(_, &b)| !(b > 0.0 && b < 1.0))
        {
            return Err(ScheduleError::BadBeta { index, value });
        }
        let mut alpha_bar = Vec::with_capacity(beta.len());
        let mut acc = 1.0;
        for b in &beta {
            acc *= 1.0 - b;
            alpha_bar.push(acc);
        }
        if let Some((i, &ab)) = alpha_bar
            .iter()
            .enumerate()
            .find(|&(_, &ab)| ab.is_nan() || ab < MIN_ALPHA_BAR)
        {
            return Err(ScheduleError::AlphaBarUnderflow {
                tau: i + 1,
                alpha_bar: ab,
            });
        }
        Ok(Self { beta, alpha_bar })
    }

    /// Number of steps T.
    pub fn steps(&self) -> usize {
        self.beta.len()
    }

    /// β_τ for τ in 1…T.
    pub fn beta(&self, tau: usize) -> f64 {
        self.beta[tau - 1]
    }

    /// All β values, β_1 first.
    pub fn betas(&self) -> &[f64] {
        &self.beta
    }

    /// α_τ = 1 − β_τ.
    pub fn alpha(&self, tau: usize) -> f64 {
        1.0 - self.beta(tau)
    }

    /// ᾱ_τ = ∏_{s ≤ τ} α_s, with ᾱ_0 = 1.
    pub fn alpha_bar(&self, tau: usize) -> f64 {
        if tau == 0 {
            1.0
        } else {
            self.alpha_bar[tau - 1]
        }
    }

    /// The value fed to the network for step τ: τ / T, in (0, 1].
    pub fn time_input(&self, tau: usize) -> f32 {
        tau as f32 / self.steps() as f32
    }

    /// Forward process: a_τ = √ᾱ_τ a_0 + √(1 − ᾱ_τ) ε, element-wise into `out`.
    pub fn add_noise(&self, tau: usize, clean: &[f32], noise: &[f32], out: &mut [f32]) {
        let ab = self.alpha_bar(tau);
        let (s, n) = (ab.sqrt() as f32, (1.0 - ab).sqrt() as f32);
        for ((o, &c), &e) in out.iter_mut().zip(clean).zip(noise) {
            *o = s * c + n * e;
        }
    }

    /// Coefficients of the DDPM reverse step at τ:
    /// a_{τ−1} = c_x · (a_τ − c_eps · ε̂) + σ_τ z, returned as `(c_x, c_eps, σ_τ)`
    /// with c_x = 1/√α_τ, c_eps = β_τ/√(1 − ᾱ_τ) and σ_τ = √β_τ.
    pub fn ddpm_coefficients(&self, tau: usize) -> (f32, f32, f32) {
        let beta = self.beta(tau);
        let c_x = 1.0 / (1.0 - beta).sqrt();
        let c_eps = beta / (1.0 - self.alpha_bar(tau)).sqrt();
        (c_x as f32, c_eps as f32, beta.sqrt() as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_betas_match_closed_form() {
        let s = NoiseSchedule::new(&ScheduleConfig::default()).expect("valid");
        assert_eq!(s.steps(), 50);
        assert!((s.beta(1) - 1e-4).abs() < 1e-15);
        assert!((s.beta(50) - 0.02).abs() < 1e-15);
        // Linear: constant increments of (0.02 - 1e-4) / 49.
        let d = (0.02 - 1e-4) / 49.0;
        for tau in 2..=50 {
            assert!(
                (s.beta(tau) - s.beta(tau - 1) - d).abs() < 1e-12,
                "tau {tau}"
            );
        }
    }

    #[test]
    fn alpha_bar_is_the_product_of_alphas() {
        let s = NoiseSchedule::new(&ScheduleConfig {
            steps: 20,
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(s.alpha_bar(0), 1.0);
        let mut p = 1.0;
        for tau in 1..=20 {
            p *= 1.0 - s.beta(tau);
            assert!((s.alpha_bar(tau) - p).abs() < 1e-14);
        }
        // Closed form for the linear schedule at T = 50: ᾱ_T ≈ 0.6035 (log-sum of 1 - β).
        let s50 = NoiseSchedule::new(&ScheduleConfig::default()).expect("valid");
        let expected: f64 = (0..50)
            .map(|i| (1.0 - (1e-4 + (0.02 - 1e-4) * i as f64 / 49.0)).ln())
            .sum::<f64>()
            .exp();
        assert!((s50.alpha_bar(50) - expected).abs() < 1e-12);
        assert!((s50.alpha_bar(50) - 0.6035).abs() < 1e-3);
    }

    #[test]
    fn ddpm_coefficients_match_formulas() {
        let s = NoiseSchedule::new(&ScheduleConfig::default()).expect("valid");
        let (cx, ce, sig) = s.ddpm_coefficients(1);
        // At τ = 1, ᾱ_1 = α_1, so c_eps = β/√β = √β.
        assert!((cx as f64 - 1.0 / (1.0f64 - 1e-4).sqrt()).abs() < 1e-6);
        assert!((ce - 0.01).abs() < 1e-6);
        assert!((sig - 0.01).abs() < 1e-7);
    }

    #[test]
    fn add_noise_interpolates() {
        let s = NoiseSchedule::new(&ScheduleConfig::default()).expect("valid");
        let mut out = [0.0f32; 2];
        s.add_noise(50, &[1.0, -1.0], &[0.5, 0.5], &mut out);
        let ab = s.alpha_bar(50);
        assert!((out[0] as f64 - (ab.sqrt() + 0.5 * (1.0 - ab).sqrt())).abs() < 1e-6);
        assert!((out[1] as f64 - (-ab.sqrt() + 0.5 * (1.0 - ab).sqrt())).abs() < 1e-6);
    }

    #[test]
    fn invalid_configs_are_rejected_with_the_field_named() {
        let e = NoiseSchedule::new(&ScheduleConfig {
            steps: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("diffusion.steps"));
        let e = NoiseSchedule::new(&ScheduleConfig {
            beta_max: 1.5,
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("diffusion.beta_max"));
        let e = NoiseSchedule::new(&ScheduleConfig {
            beta_min: 0.1,
            beta_max: 0.01,
            steps: 5,
        })
        .unwrap_err();
        assert!(matches!(e, ScheduleError::BetaOrder { .. }));
        assert!(NoiseSchedule::from_betas(vec![0.1, f64::NAN]).is_err());
    }

    #[test]
    fn schedules_whose_alpha_bar_underflows_are_rejected_naming_the_step() {
        // Each β is in (0, 1), but ᾱ collapses: 1e-6 per step from step 1.
        let e = NoiseSchedule::from_betas(vec![0.999_999; 50]).unwrap_err();
        assert_eq!(
            e,
            ScheduleError::AlphaBarUnderflow {
                tau: 2,
                alpha_bar: (1.0f64 - 0.999_999) * (1.0 - 0.999_999),
            }
        );
        assert!(e.to_string().contains("alpha_bar") && e.to_string().contains("step 2"));
        // A linear config that ends near 1 over many steps is refused too.
        let e = NoiseSchedule::new(&ScheduleConfig {
            steps: 1000,
            beta_min: 1e-4,
            beta_max: 0.9,
        })
        .unwrap_err();
        assert!(matches!(e, ScheduleError::AlphaBarUnderflow { .. }), "{e}");
        // Published schedules pass: DDPM's linear 1e-4 → 0.02 over 1000 steps
        // (ᾱ_T ≈ 4e-5), and a single large step.
        let ddpm = NoiseSchedule::new(&ScheduleConfig {
            steps: 1000,
            beta_min: 1e-4,
            beta_max: 0.02,
        })
        .expect("DDPM's schedule");
        assert!((ddpm.alpha_bar(1000) - 4.0e-5).abs() < 1e-5);
        NoiseSchedule::from_betas(vec![0.999]).expect("ᾱ = 1e-3");
    }
}
