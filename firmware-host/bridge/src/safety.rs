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
    /// Joints clamped to the per-tick step (and, with velocity limits, the
    /// speed and acceleration bounds).
    pub step: u32,
}

/// Joint limits plus a largest change per tick relative to the measured
/// position (LeRobot's `max_relative_target`).
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyLayer {
    limits: Vec<JointLimit>,
    max_step: f32,
    /// Each joint's largest change per tick: `max_step`, or less with
    /// [`SafetyLayer::with_velocity_limits`].
    steps: Vec<f32>,
    /// Each joint's largest change of the per-tick step from one tick to
    /// the next (`max_acceleration · dt²`), with velocity limits only.
    accel_steps: Option<Vec<f32>>,
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
            steps: vec![max_step; limits.len()],
            accel_steps: None,
        })
    }

    /// Also bound each joint's step by its `max_velocity` over one tick at
    /// `rate_hz`, and the change of that step from one command to the next
    /// by its `max_acceleration` ([`SafetyLayer::apply_with_history`]): the
    /// same policy at 30 Hz and at 100 Hz then commands no faster and no
    /// more abrupt motion than the limits allow (a fixed per-tick step
    /// allows 3.3 times the speed at 100 Hz). For arms near people
    /// (`diffbc run --arm`, `diffbc record`).
    pub fn with_velocity_limits(mut self, rate_hz: f64) -> Self {
        let dt = 1.0 / rate_hz.max(1e-3);
        for (s, l) in self.steps.iter_mut().zip(&self.limits) {
            *s = s.min((f64::from(l.max_velocity) * dt) as f32);
        }
        self.accel_steps = Some(
            self.limits
                .iter()
                .map(|l| (f64::from(l.max_acceleration) * dt * dt) as f32)
                .collect(),
        );
        self
    }

    /// An action of one finite value per joint, beside `others` of the same
    /// length; else the error that refuses it (nothing is written).
    fn check(&self, action: &[f32], others: &[&[f32]]) -> Result<(), SafetyError> {
        let n = self.limits.len();
        if action.len() != n || others.iter().any(|o| o.len() != n) {
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
        Ok(())
    }

    /// Whether commands need their history ([`SafetyLayer::apply_with_history`]).
    pub fn limits_acceleration(&self) -> bool {
        self.accel_steps.is_some()
    }

    /// [`SafetyLayer::apply`], after first bounding the change of each
    /// joint's commanded step (`action − last`) from the previous one
    /// (`last − before_last`) by its acceleration limit, when the layer has
    /// one ([`SafetyLayer::with_velocity_limits`]). `last` and
    /// `before_last` are the last two commands sent. The step and position
    /// bounds apply after, and win.
    pub fn apply_with_history(
        &self,
        measured: &[f32],
        action: &[f32],
        last: &[f32],
        before_last: &[f32],
        out: &mut [f32],
    ) -> Result<Clamped, SafetyError> {
        let Some(acc) = &self.accel_steps else {
            return self.apply(measured, action, out);
        };
        let n = self.limits.len();
        self.check(action, &[last, before_last])?;
        let mut smoothed = [0.0f32; diffbc_protocol::MAX_JOINTS];
        let mut accel = 0;
        for j in 0..n {
            let expected = last[j] + (last[j] - before_last[j]);
            let (lo, hi) = (expected - acc[j], expected + acc[j]);
            let t = action[j];
            smoothed[j] = if t < lo || t > hi {
                accel += 1;
                t.clamp(lo, hi)
            } else {
                t
            };
        }
        let mut c = self.apply(measured, &smoothed[..n], out)?;
        c.step += accel;
        Ok(c)
    }

    /// Each joint's largest change per tick (rad).
    pub fn steps(&self) -> &[f32] {
        &self.steps
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
        self.check(action, &[measured, out])?;
        let mut c = Clamped::default();
        for j in 0..n {
            let lim = &self.limits[j];
            let mut t = action[j];
            let step = self.steps[j];
            let (lo, hi) = (measured[j] - step, measured[j] + step);
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
    fn velocity_limits_make_the_bound_rate_aware() {
        // max_velocity 2 rad/s: 0.0667 rad per tick at 30 Hz, 0.02 at 100
        // Hz; the per-tick max_step (0.1) is the looser bound at both.
        let at = |hz: f64| layer().with_velocity_limits(hz);
        assert!((at(30.0).steps()[0] - 2.0 / 30.0).abs() < 1e-6);
        assert!((at(100.0).steps()[0] - 0.02).abs() < 1e-6);
        assert_eq!(at(10.0).steps(), [0.1, 0.1], "max_step where it is tighter");
        // A policy asking for 1 rad every tick: 0.2 s of ticks moves
        // the arm the same distance at either rate.
        for hz in [30.0, 100.0] {
            let s = at(hz);
            let mut q = [0.0f32; 2];
            let mut out = [0.0; 2];
            for _ in 0..(hz * 0.2).round() as usize {
                let c = s
                    .apply(&q, &[q[0] + 1.0, q[1] - 1.0], &mut out)
                    .expect("finite");
                assert_eq!(c.step, 2);
                q = out;
            }
            assert!(
                (q[0] - 0.4).abs() < 1e-4 && (q[1] + 0.4).abs() < 1e-4,
                "{hz} Hz: {q:?}"
            );
        }
        // Without it, 100 Hz moves 3.3 times as far as 30 Hz.
        assert_eq!(layer().steps(), [0.1, 0.1]);
    }

    #[test]
    fn acceleration_limits_ramp_the_speed_up_and_down() {
        // max_acceleration 10 rad/s² at 10 Hz: the per-tick step may change
        // by 0.1 rad per tick; max_velocity 2 → at most 0.2 rad per tick,
        // max_step 0.1 here: the speed ramps 0.1 per tick, capped at 0.1.
        let l = limit(-10.0, 10.0);
        let s = SafetyLayer::new(&[l], 0.15)
            .expect("valid")
            .with_velocity_limits(10.0);
        assert!(s.limits_acceleration());
        let (mut last, mut before) = ([0.0f32], [0.0f32]);
        let mut steps = Vec::new();
        for _ in 0..4 {
            let mut out = [0.0];
            s.apply_with_history(&last, &[last[0] + 5.0], &last, &before, &mut out)
                .expect("finite");
            steps.push(out[0] - last[0]);
            before = last;
            last = out;
        }
        let want = [0.1, 0.15, 0.15, 0.15];
        for (got, w) in steps.iter().zip(want) {
            assert!((got - w).abs() < 1e-5, "{steps:?}");
        }
        // Stopping at once is refused too: the step shrinks by 0.1 per tick.
        let mut out = [0.0];
        s.apply_with_history(&last, &[last[0]], &last, &before, &mut out)
            .expect("finite");
        assert!(
            (out[0] - last[0] - 0.05).abs() < 1e-5,
            "{}",
            out[0] - last[0]
        );
        // Without velocity limits there is no history to respect.
        let plain = SafetyLayer::new(&[l], 0.15).expect("valid");
        assert!(!plain.limits_acceleration());
        plain
            .apply_with_history(&[0.0], &[5.0], &[0.0], &[0.0], &mut out)
            .expect("finite");
        assert_eq!(out, [0.15]);
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
