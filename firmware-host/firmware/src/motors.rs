//! The motor seam: what the firmware needs from the joints' drives, and the
//! simulated servos used by the emulator and the QEMU firmware.
//!
//! A real board implements [`Motors`] over its PWM outputs, servo bus or
//! motor drivers and encoders; nothing else in the firmware touches them.

use diffbc_protocol::{JointLimit, Joints};

/// The joints' drives and sensors.
pub trait Motors {
    /// Measured joint positions (rad), one per joint.
    fn positions(&self) -> &[f32];
    /// Measured joint velocities (rad/s), one per joint.
    fn velocities(&self) -> &[f32];
    /// Drive toward `targets` (already clamped to the limits) for `dt`
    /// seconds; called at the firmware's fixed physics rate.
    fn drive(&mut self, targets: &[f32], dt: f32);
    /// Cut the drive now (a fault, a panic): the joints stop where they are.
    fn stop(&mut self);
}

/// One PD servo step toward `goal` with acceleration, velocity and position
/// limits: the emulated arm's dynamics (`diffbc-emulator`'s `SimArm`) and
/// [`SimServos`]' alike.
pub fn pd_step(l: &JointLimit, kp: f32, kd: f32, goal: f32, q: &mut f32, qd: &mut f32, dt: f32) {
    let acc = (kp * (goal - *q) - kd * *qd).clamp(-l.max_acceleration, l.max_acceleration);
    *qd = (*qd + acc * dt).clamp(-l.max_velocity, l.max_velocity);
    *q += *qd * dt;
    if *q <= l.min || *q >= l.max {
        *q = q.clamp(l.min, l.max);
        *qd = 0.0;
    }
}

/// Simulated servos ([`pd_step`] per joint), for a board without motors.
#[derive(Debug, Clone, PartialEq)]
pub struct SimServos {
    limits: heapless::Vec<JointLimit, { diffbc_protocol::MAX_JOINTS }>,
    kp: f32,
    kd: f32,
    q: Joints,
    qd: Joints,
}

impl SimServos {
    /// At rest at `initial` (clamped to `limits`; 0 rad where it is short).
    pub fn new(limits: &[JointLimit], kp: f32, kd: f32, initial: &[f32]) -> Self {
        let mut s = Self {
            limits: heapless::Vec::new(),
            kp,
            kd,
            q: Joints::new(),
            qd: Joints::new(),
        };
        for (j, l) in limits.iter().enumerate() {
            if s.limits.push(*l).is_err() {
                break;
            }
            let q0 = initial.get(j).copied().unwrap_or(0.0).clamp(l.min, l.max);
            let _ = s.q.push(q0);
            let _ = s.qd.push(0.0);
        }
        s
    }
}

impl Motors for SimServos {
    fn positions(&self) -> &[f32] {
        &self.q
    }

    fn velocities(&self) -> &[f32] {
        &self.qd
    }

    fn drive(&mut self, targets: &[f32], dt: f32) {
        for (((l, &goal), q), qd) in self
            .limits
            .iter()
            .zip(targets)
            .zip(self.q.iter_mut())
            .zip(self.qd.iter_mut())
        {
            pd_step(l, self.kp, self.kd, goal, q, qd, dt);
        }
    }

    fn stop(&mut self) {
        self.qd.iter_mut().for_each(|v| *v = 0.0);
    }
}
