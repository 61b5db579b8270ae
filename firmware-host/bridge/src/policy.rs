//! A deployed policy drives the arm.
//!
//! Observation frame sent to the policy, built from telemetry: the joint
//! positions, then (if the frame is long enough) the joint velocities, then
//! the extra sensor channels — as many values as the policy's frame takes.
//! The action is one target per joint.

use crate::bridge::Controller;
use diffbc_protocol::{EXTRA_CHANNELS, Handshake, MAX_JOINTS, Telemetry};
use diffbc_runtime::Policy;

/// [`Policy`] as a [`Controller`].
#[derive(Debug)]
pub struct PolicyController {
    policy: Policy,
    frame: [f32; 2 * MAX_JOINTS + EXTRA_CHANNELS],
    velocities: bool,
    extra: usize,
}

impl PolicyController {
    /// Wrap a loaded policy.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            frame: [0.0; 2 * MAX_JOINTS + EXTRA_CHANNELS],
            velocities: false,
            extra: 0,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

impl Controller for PolicyController {
    fn start(&mut self, h: &Handshake) -> Result<(), String> {
        let n = h.joints.len();
        let f = self.policy.frame_len();
        if self.policy.action_dim() != n {
            return Err(format!(
                "the policy's action has {} values, the arm has {n} joints",
                self.policy.action_dim()
            ));
        }
        let (velocities, extra) = if f < n {
            return Err(format!(
                "the policy's observation frame has {f} values, fewer than the arm's {n} joints"
            ));
        } else if f < 2 * n {
            (false, f - n)
        } else {
            (true, f - 2 * n)
        };
        if extra > EXTRA_CHANNELS {
            return Err(format!(
                "the policy's observation frame has {f} values; the arm gives at most {}",
                2 * n + EXTRA_CHANNELS
            ));
        }
        self.velocities = velocities;
        self.extra = extra;
        self.policy.reset();
        Ok(())
    }

    fn act(&mut self, t: &Telemetry, action: &mut [f32]) -> Result<(), String> {
        let n = t.positions.len();
        let mut at = 0;
        self.frame[..n].copy_from_slice(&t.positions);
        at += n;
        if self.velocities {
            self.frame[at..at + n].copy_from_slice(&t.velocities);
            at += n;
        }
        self.frame[at..at + self.extra].copy_from_slice(&t.extra[..self.extra]);
        at += self.extra;
        let a = self
            .policy
            .act(&self.frame[..at])
            .map_err(|e| e.to_string())?;
        action.copy_from_slice(a);
        Ok(())
    }
}
