//! The emulated arm: the firmware's state machine ([`diffbc_firmware`])
//! driving emulated motors (PD servos with acceleration, velocity and
//! position limits) in a world with obstacles, time passed in. What a task
//! makes of the arm's motion (targets reached, done) is the task's, on the
//! host: the emulator reports only what a real arm would.
//!
//! [`SimArm`] is unit-testable with any clock; [`crate::spawn_pty`] runs it
//! on a pty against the wall clock (the way `diffbc sim-arm` does) and
//! [`crate::StepLink`] steps it in process on a simulated clock.

use diffbc_bridge::Ring;
use diffbc_firmware::{Firmware, FirmwareConfig, pd_step};
use diffbc_protocol::{Command, Fault, FaultCode, Frame, Handshake, JointLimit, Telemetry};
use std::time::Duration;

/// The emulated arm's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Joint limits (one per joint).
    pub limits: Vec<JointLimit>,
    /// Position gain of the joint servos (1/s²).
    pub kp: f32,
    /// Velocity gain (1/s).
    pub kd: f32,
    /// Physics steps per second.
    pub physics_hz: u32,
    /// Telemetry frames per second.
    pub telemetry_hz: u32,
    /// Commands older than this trip the watchdog.
    pub watchdog: Duration,
    /// Highest command rate accepted (reported in the handshake).
    pub max_rate_hz: u16,
    /// Joint positions at power-on.
    pub initial: Vec<f32>,
    /// Fixed objects in the workspace; touching one latches a
    /// [`FaultCode::Collision`] fault.
    pub obstacles: Vec<Obstacle>,
    /// Device seconds per wall-clock second when run on a pty (1 = real
    /// time). Physics, telemetry and the watchdog run on device time, so a
    /// host that scales its control rate by the same factor sees exactly the
    /// real-time dynamics, only sooner.
    pub time_scale: f64,
    /// Most received commands kept (the newest) in [`SimArm::commands`] and
    /// [`SimShared::commands`]; the total is counted.
    pub command_log: usize,
}

/// [`SimConfig::command_log`]'s default: 2^16 commands, 131 s at 500 Hz
/// (about 2.6 MB per log).
pub const DEFAULT_COMMAND_LOG: usize = 1 << 16;

/// A fixed object: a disc in the plane of joints 0 and 1 (the arm's
/// shoulder plane), touched when those two joints come within `radius` of
/// `center`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Obstacle {
    /// Centre (joint 0, joint 1), rad.
    pub center: [f32; 2],
    /// Radius, rad.
    pub radius: f32,
}

impl Obstacle {
    /// Whether joint positions `q` touch it.
    pub fn touches(&self, q: &[f32]) -> bool {
        q.len() >= 2 && (q[0] - self.center[0]).hypot(q[1] - self.center[1]) < self.radius
    }
}

impl SimConfig {
    /// A 4-joint arm, no obstacles.
    pub fn default_arm() -> Self {
        use diffbc_firmware::reference as arm;
        let hz = |period: Duration| (1.0 / period.as_secs_f64()).round() as u32;
        Self {
            limits: vec![arm::LIMIT; arm::JOINTS],
            kp: arm::KP,
            kd: arm::KD,
            physics_hz: hz(arm::PHYSICS_PERIOD),
            telemetry_hz: hz(arm::TELEMETRY_PERIOD),
            watchdog: arm::WATCHDOG,
            max_rate_hz: arm::MAX_RATE_HZ,
            obstacles: Vec::new(),
            initial: vec![0.0; arm::JOINTS],
            time_scale: 1.0,
            command_log: DEFAULT_COMMAND_LOG,
        }
    }

    /// Joint count.
    pub fn joints(&self) -> usize {
        self.limits.len()
    }
}

/// The emulated arm: firmware state machine, motors and world.
#[derive(Debug, Clone)]
pub struct SimArm {
    config: SimConfig,
    firmware: Firmware,
    q: Vec<f32>,
    qd: Vec<f32>,
    pending: Option<Frame>,
    /// The commands applied, in arrival order: the newest
    /// [`SimConfig::command_log`]; `commands.total()` counts all.
    pub commands: Ring<Command>,
}

impl SimArm {
    /// At rest at `config.initial` (0 rad where it is short), motors
    /// disabled until the first command.
    pub fn new(config: SimConfig) -> Self {
        let n = config.joints();
        let q: Vec<f32> = (0..n)
            .map(|j| {
                let l = config.limits[j];
                config
                    .initial
                    .get(j)
                    .copied()
                    .unwrap_or(0.0)
                    .clamp(l.min, l.max)
            })
            .collect();
        let mut limits = heapless::Vec::new();
        for l in &config.limits {
            let _ = limits.push(*l);
        }
        let firmware = Firmware::new(
            FirmwareConfig {
                limits,
                watchdog: config.watchdog,
                max_rate_hz: config.max_rate_hz,
            },
            &q,
        );
        Self {
            firmware,
            q,
            qd: vec![0.0; n],
            pending: None,
            commands: Ring::new(config.command_log),
            config,
        }
    }

    /// The emulated arm's parameters.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Measured positions.
    pub fn positions(&self) -> &[f32] {
        &self.q
    }

    /// Measured velocities.
    pub fn velocities(&self) -> &[f32] {
        &self.qd
    }

    /// The latched fault, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.firmware.fault()
    }

    /// The handshake this arm answers with.
    pub fn handshake(&self) -> Handshake {
        self.firmware.handshake()
    }

    /// Latch `code` (fault injection): the motors stop where they are.
    pub fn latch(&mut self, code: FaultCode, joint: u8, detail: u32) -> Frame {
        self.firmware.latch(code, joint, detail, &self.q)
    }

    /// Handle one frame from the host at time `now`; returns the reply.
    pub fn on_frame(&mut self, frame: Frame, now: Duration) -> Option<Frame> {
        let handled = self.firmware.on_frame(frame, now, &self.q);
        if let Some(c) = handled.applied {
            self.commands.push(c);
        }
        handled.reply
    }

    /// A fault the physics latched (a collision) that is still to be sent.
    pub fn take_pending(&mut self) -> Option<Frame> {
        self.pending.take()
    }

    /// Count a frame the link's decoder dropped (reported in telemetry).
    pub fn count_bad_frame(&mut self) {
        self.firmware.count_bad_frame();
    }

    /// Trip the watchdog if commands stopped for longer than allowed; returns
    /// the fault frame to send (once).
    pub fn check_watchdog(&mut self, now: Duration) -> Option<Frame> {
        self.firmware.check_watchdog(now, &self.q)
    }

    /// Advance the physics by `dt`: PD servo toward the firmware's target
    /// (or hold), with acceleration, velocity and position limits.
    pub fn step(&mut self, dt: f32) {
        for (j, &goal) in self.firmware.targets().iter().enumerate() {
            // The same servo model the QEMU firmware's simulated servos run.
            pd_step(
                &self.config.limits[j],
                self.config.kp,
                self.config.kd,
                goal,
                &mut self.q[j],
                &mut self.qd[j],
                dt,
            );
        }
        if self.firmware.fault().is_none()
            && let Some(i) = self
                .config
                .obstacles
                .iter()
                .position(|o| o.touches(&self.q))
        {
            // Contact: the motors stop where they are.
            self.qd.iter_mut().for_each(|v| *v = 0.0);
            self.pending = Some(self.latch(FaultCode::Collision, 255, i as u32));
        }
    }

    /// The next telemetry frame at device time `now`.
    pub fn telemetry(&mut self, now: Duration) -> Telemetry {
        self.firmware.telemetry(now, &self.q, &self.qd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffbc_protocol::{Joints, PROTOCOL_VERSION};

    fn joints(v: &[f32]) -> Joints {
        Joints::from_slice(v).expect("at most 8 joints")
    }

    fn cmd(seq: u32, t: &[f32]) -> Frame {
        Frame::Command(Command {
            seq,
            targets: joints(t),
        })
    }

    #[test]
    fn servos_reach_a_commanded_target_within_limits() {
        let mut arm = SimArm::new(SimConfig::default_arm());
        assert!(matches!(
            arm.on_frame(
                Frame::Hello {
                    protocol: PROTOCOL_VERSION
                },
                Duration::ZERO
            ),
            Some(Frame::Handshake(_))
        ));
        arm.on_frame(cmd(1, &[0.8, -0.4, 0.3, 0.0]), Duration::ZERO);
        let mut peak_speed = 0.0f32;
        for i in 0..2000 {
            arm.step(0.001);
            peak_speed = peak_speed.max(arm.qd.iter().fold(0.0f32, |m, v| m.max(v.abs())));
            if i == 100 {
                // Time in the command is injected: 0.1 s after the command.
                assert!(arm.check_watchdog(Duration::from_millis(100)).is_none());
            }
        }
        for (q, t) in arm.positions().iter().zip([0.8, -0.4, 0.3, 0.0]) {
            assert!((q - t).abs() < 0.01, "{q} vs {t}");
        }
        assert!(peak_speed <= 3.0 + 1e-4, "velocity limit: {peak_speed}");
        let t = arm.telemetry(Duration::from_secs(2));
        assert_eq!(&t.positions[..], arm.positions(), "telemetry reports them");
        assert_eq!(t.last_command_seq, 1);
    }

    #[test]
    fn the_watchdog_holds_position_and_latches_a_fault() {
        let mut arm = SimArm::new(SimConfig::default_arm());
        arm.on_frame(cmd(1, &[1.0, 0.0, 0.0, 0.0]), Duration::ZERO);
        for _ in 0..100 {
            arm.step(0.001);
        }
        assert!(arm.check_watchdog(Duration::from_millis(200)).is_none());
        let f = arm
            .check_watchdog(Duration::from_millis(300))
            .expect("trips");
        assert!(matches!(
            f,
            Frame::Fault(Fault {
                code: FaultCode::Watchdog,
                detail: 300,
                ..
            })
        ));
        assert!(
            arm.check_watchdog(Duration::from_millis(400)).is_none(),
            "once"
        );
        let held = arm.positions()[0];
        for _ in 0..500 {
            arm.step(0.001);
        }
        assert!(
            (arm.positions()[0] - held).abs() < 0.05,
            "holds near where it was"
        );
        // Commands are ignored while the fault is latched; Hello clears it.
        arm.on_frame(cmd(2, &[-1.0, 0.0, 0.0, 0.0]), Duration::from_millis(900));
        assert_eq!(arm.commands.len(), 1);
        arm.on_frame(
            Frame::Hello {
                protocol: PROTOCOL_VERSION,
            },
            Duration::from_secs(1),
        );
        assert!(arm.fault().is_none());
    }

    #[test]
    fn bad_commands_and_versions_fault() {
        let mut arm = SimArm::new(SimConfig::default_arm());
        let r = arm.on_frame(cmd(5, &[0.0, f32::NAN, 0.0, 0.0]), Duration::ZERO);
        assert!(matches!(
            r,
            Some(Frame::Fault(Fault {
                code: FaultCode::BadCommand,
                ..
            }))
        ));
        let mut arm = SimArm::new(SimConfig::default_arm());
        let r = arm.on_frame(cmd(5, &[0.0, 0.0]), Duration::ZERO);
        assert!(matches!(
            r,
            Some(Frame::Fault(Fault {
                code: FaultCode::BadCommand,
                ..
            }))
        ));
        let r = arm.on_frame(Frame::Hello { protocol: 99 }, Duration::ZERO);
        assert!(matches!(
            r,
            Some(Frame::Fault(Fault {
                code: FaultCode::VersionMismatch,
                detail: 99,
                ..
            }))
        ));
    }
}
