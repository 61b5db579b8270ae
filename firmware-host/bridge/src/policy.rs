//! A deployed policy drives the arm.
//!
//! Observation frame sent to the policy, built from telemetry: the joint
//! positions, then (if the frame is long enough) the joint velocities, then
//! the extra sensor channels — as many values as the policy's frame takes.
//! The action is one target per joint.

use crate::bridge::Controller;
use diffbc_protocol::{EXTRA_CHANNELS, Handshake, MAX_JOINTS, Telemetry};
use diffbc_runtime::Policy;

/// How telemetry maps to a policy's observation frame: the positions, then
/// (when the frame holds them) the velocities, then `extra` task channels.
/// Demonstrations recorded for a policy must use the same layout; the arm
/// task builds its frames with this type too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObsLayout {
    /// Joints.
    pub joints: usize,
    /// Whether velocities follow the positions.
    pub velocities: bool,
    /// Extra channels at the end.
    pub extra: usize,
}

impl ObsLayout {
    /// The layout of a `frame_len`-value frame on an arm with `joints` joints.
    pub fn for_frame(frame_len: usize, joints: usize) -> Result<Self, String> {
        let f = frame_len;
        let n = joints;
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
        Ok(Self {
            joints: n,
            velocities,
            extra,
        })
    }

    /// Values per frame.
    pub fn len(&self) -> usize {
        self.joints * (1 + usize::from(self.velocities)) + self.extra
    }

    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the frame for `t` into `out[..self.len()]`.
    pub fn write(&self, t: &Telemetry, out: &mut [f32]) {
        let n = self.joints;
        let mut at = 0;
        out[..n].copy_from_slice(&t.positions[..n]);
        at += n;
        if self.velocities {
            out[at..at + n].copy_from_slice(&t.velocities[..n]);
            at += n;
        }
        out[at..at + self.extra].copy_from_slice(&t.extra[..self.extra]);
    }
}

/// [`Policy`] as a [`Controller`].
#[derive(Debug)]
pub struct PolicyController {
    policy: Policy,
    frame: [f32; 2 * MAX_JOINTS + EXTRA_CHANNELS],
    layout: ObsLayout,
}

impl PolicyController {
    /// Wrap a loaded policy.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            frame: [0.0; 2 * MAX_JOINTS + EXTRA_CHANNELS],
            layout: ObsLayout {
                joints: 0,
                velocities: false,
                extra: 0,
            },
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The policy, mutably (to reseed or change the sampler between runs).
    pub fn policy_mut(&mut self) -> &mut Policy {
        &mut self.policy
    }
}

impl Controller for PolicyController {
    fn start(&mut self, h: &Handshake) -> Result<(), String> {
        let n = h.joints.len();
        if self.policy.action_dim() != n {
            return Err(format!(
                "the policy's action has {} values, the arm has {n} joints",
                self.policy.action_dim()
            ));
        }
        self.layout = ObsLayout::for_frame(self.policy.frame_len(), n)?;
        self.policy.reset();
        Ok(())
    }

    fn act(&mut self, t: &Telemetry, action: &mut [f32]) -> Result<(), String> {
        let len = self.layout.len();
        self.layout.write(t, &mut self.frame[..len]);
        let a = self
            .policy
            .act(&self.frame[..len])
            .map_err(|e| e.to_string())?;
        action.copy_from_slice(a);
        Ok(())
    }
}
