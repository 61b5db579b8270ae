//! The safety layer between a policy and the arm: every command passes here.

use crate::checked::{self, ValueError};
use diffbc_protocol::JointLimit;

/// Why an action was not sent.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum SafetyError {
    /// A target is NaN or infinite.
    #[error("joint {joint}: target is not finite ({value})")]
    NonFinite {
        /// The joint.
        joint: usize,
        /// The value.
        value: f32,
    },
    /// The action has the wrong number of joints.
    #[error("action has {got} joints, the arm has {expected}")]
    Joints {
        /// The arm's joint count.
        expected: usize,
        /// The action's.
        got: usize,
    },
}

/// What the layer changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clamped {
    /// Joints clamped to their position limits.
    pub limit: u32,
    /// Joints clamped to the per-tick step.
    pub step: u32,
}

/// Joint limits plus a largest change per tick relative to the measured
/// position (LeRobot's `max_relative_target`).
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyLayer {
    limits: Vec<JointLimit>,
    max_step: f32,
}

impl SafetyLayer {
    /// `max_step` in radians per tick. Refuses a bound that would switch
    /// the layer off or invert it: `max_step` must be finite and positive,
    /// and every joint limit finite with `min < max`
    /// ([`checked::joint_limits`]).
    pub fn new(limits: &[JointLimit], max_step: f32) -> Result<Self, ValueError> {
        checked::joint_limits(limits)?;
        let max_step = checked::max_step("max_step", max_step)?;
        Ok(Self {
            limits: limits.to_vec(),
            max_step,
        })
    }

    /// Joint count.
    pub fn joints(&self) -> usize {
        self.limits.len()
    }

    /// Write the command actually sent for `action` into `out`, given the
    /// `measured` positions. Rejects (writes nothing) on NaN or a wrong size.
    pub fn apply(
        &self,
        measured: &[f32],
        action: &[f32],
        out: &mut [f32],
    ) -> Result<Clamped, SafetyError> {
        let n = self.limits.len();
        if action.len() != n || measured.len() != n || out.len() != n {
            return Err(SafetyError::Joints {
                expected: n,
                got: action.len(),
            });
        }
        if let Some(joint) = action.iter().position(|v| !v.is_finite()) {
            return Err(SafetyError::NonFinite {
                joint,
                value: action[joint],
            });
        }
        let mut c = Clamped::default();
        for j in 0..n {
            let lim = &self.limits[j];
            let mut t = action[j];
            let (lo, hi) = (measured[j] - self.max_step, measured[j] + self.max_step);
            if t < lo || t > hi {
                t = t.clamp(lo, hi);
                c.step += 1;
            }
            if t < lim.min || t > lim.max {
                t = t.clamp(lim.min, lim.max);
                c.limit += 1;
            }
            out[j] = t;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> SafetyLayer {
        let l = JointLimit {
            min: -1.0,
            max: 1.0,
            max_velocity: 2.0,
            max_acceleration: 10.0,
        };
        SafetyLayer::new(&[l, l], 0.1).expect("valid")
    }

    fn limit(min: f32, max: f32) -> JointLimit {
        JointLimit {
            min,
            max,
            max_velocity: 2.0,
            max_acceleration: 10.0,
        }
    }

    #[test]
    fn a_bound_that_would_switch_the_layer_off_is_refused() {
        let l = limit(-1.0, 1.0);
        for step in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.1, 0.0] {
            let e = SafetyLayer::new(&[l], step).expect_err("refused");
            assert!(e.to_string().contains("max_step"), "{step}: {e}");
        }
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let e = SafetyLayer::new(&[l, limit(-1.0, bad)], 0.1).expect_err("limit");
            assert!(e.to_string().contains("joint 1"), "{e}");
            assert!(SafetyLayer::new(&[limit(bad, 1.0)], 0.1).is_err());
        }
        // min > max would make f32::clamp panic in `apply`; min == max is no range.
        for (lo, hi) in [(1.0, -1.0), (0.3, 0.3)] {
            let e = SafetyLayer::new(&[limit(lo, hi)], 0.1).expect_err("range");
            assert!(e.to_string().contains("joint 0"), "{e}");
        }
        assert!(SafetyLayer::new(&[], 0.1).is_err(), "no joints");
    }

    #[test]
    fn a_negative_step_is_not_made_positive() {
        // Before: `.abs()` turned -0.1 into a working 0.1 bound silently.
        assert!(SafetyLayer::new(&[limit(-1.0, 1.0)], -0.1).is_err());
    }

    #[test]
    fn clamps_to_limits_and_to_the_step_from_the_measured_position() {
        let s = layer();
        let mut out = [0.0; 2];
        let c = s
            .apply(&[0.0, 0.95], &[0.5, 1.5], &mut out)
            .expect("finite");
        assert_eq!(out, [0.1, 1.0]);
        assert_eq!(c, Clamped { limit: 1, step: 2 });
        let c = s
            .apply(&[0.0, 0.0], &[0.05, -0.02], &mut out)
            .expect("finite");
        assert_eq!(out, [0.05, -0.02]);
        assert_eq!(c, Clamped::default());
    }

    #[test]
    fn nan_and_wrong_sizes_are_rejected_and_nothing_is_written() {
        let s = layer();
        let mut out = [7.0; 2];
        let e = s
            .apply(&[0.0, 0.0], &[0.0, f32::NAN], &mut out)
            .expect_err("nan");
        assert!(matches!(e, SafetyError::NonFinite { joint: 1, .. }));
        assert!(e.to_string().contains("joint 1"));
        assert!(
            s.apply(&[0.0, 0.0], &[f32::INFINITY, 0.0], &mut out)
                .is_err()
        );
        assert!(s.apply(&[0.0, 0.0], &[0.0], &mut out).is_err());
        assert_eq!(out, [7.0; 2]);
    }
}
