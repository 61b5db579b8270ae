//! A servo-bus arm as the control loop's [`Link`]: the loop, safety layer,
//! statistics and stop semantics are the ones `diffbc run` uses for every
//! device (`diffbc_bridge::control::run`); only the wire differs.
//!
//! Each tick's poll is one SYNC_READ of every joint's position and velocity,
//! turned into telemetry in radians ([`Joint::to_rad`]); each command is one
//! SYNC_WRITE of goal positions. A stop frame — every way out of a run
//! sends one — disables torque on every servo, as does dropping the link
//! (a panic unwinding through the caller included). Servo buses have no
//! watchdog: a host killed outright (SIGKILL, power) leaves the servos
//! holding their last goal with torque on.

use crate::arm::ArmPreset;
use crate::calibration::{Calibration, CalibrationError, Joint};
use crate::{Bus, BusError, Register, ServoState};

use diffbc_bridge::{BridgeError, Link, Reconnect, RunStats};
use diffbc_protocol::{
    FaultCode, Frame, Handshake, JointLimit, Joints, LinkCounters, MAX_JOINTS, PROTOCOL_VERSION,
    Telemetry, status,
};
use std::time::Duration;

/// Why a servo arm could not be connected.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The calibration does not fit the arm.
    #[error(transparent)]
    Calibration(#[from] CalibrationError),
    /// A servo did not answer, or the bus failed.
    #[error("{arm} on {port}: {cause}")]
    Bus {
        /// The preset.
        arm: String,
        /// The port.
        port: String,
        /// What the bus said.
        cause: BusError,
    },
    /// More joints than the protocol carries.
    #[error("{arm}: {joints} joints, at most {MAX_JOINTS}")]
    TooManyJoints {
        /// The preset.
        arm: String,
        /// Its joint count.
        joints: usize,
    },
}

/// A calibrated arm on a servo bus: the servos of a preset, their
/// calibration, and buffers for one read and one write per tick (allocated
/// once, here). Dropping it disables torque.
pub struct ServoArm<B: Bus> {
    bus: B,
    port: String,
    name: &'static str,
    ids: Vec<u8>,
    joints: Vec<Joint>,
    state: Vec<ServoState>,
    ticks: Vec<i32>,
    torque: bool,
}

impl<B: Bus> std::fmt::Debug for ServoArm<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServoArm")
            .field("arm", &self.name)
            .field("port", &self.port)
            .field("ids", &self.ids)
            .field("torque", &self.torque)
            .finish()
    }
}

impl<B: Bus> ServoArm<B> {
    /// Check the calibration against `arm` (`calibration_path` names the
    /// file in errors), ping every servo and read where they are. Torque is
    /// left as it is: a follower calls [`ServoArm::hold_and_enable`], a
    /// leader stays limp for the hand.
    pub fn open(
        mut bus: B,
        port: &str,
        arm: &ArmPreset,
        calibration: &Calibration,
        calibration_path: &str,
    ) -> Result<Self, ConnectError> {
        let joints = calibration.joints(arm, calibration_path)?;
        if joints.len() > MAX_JOINTS {
            return Err(ConnectError::TooManyJoints {
                arm: arm.name.into(),
                joints: joints.len(),
            });
        }
        let ids: Vec<u8> = arm.ids().collect();
        let bus_err = |source| ConnectError::Bus {
            arm: arm.name.into(),
            port: port.into(),
            cause: source,
        };
        for &id in &ids {
            bus.ping(id).map_err(bus_err)?;
        }
        let mut me = Self {
            bus,
            port: port.into(),
            name: arm.name,
            state: vec![ServoState::default(); ids.len()],
            ticks: vec![0; ids.len()],
            ids,
            joints,
            torque: false,
        };
        me.read().map_err(bus_err)?;
        Ok(me)
    }

    /// One SYNC_READ of every servo's position and velocity.
    pub fn read(&mut self) -> Result<(), BusError> {
        self.bus.sync_read_state(&self.ids, &mut self.state)
    }

    /// The last read's positions in radians ([`Joint::to_rad`]), into `out`.
    pub fn positions(&self, out: &mut [f32]) {
        for ((o, j), s) in out.iter_mut().zip(&self.joints).zip(&self.state) {
            *o = j.to_rad(s.position);
        }
    }

    /// The last read's velocities in rad/s, into `out`.
    pub fn velocities(&self, out: &mut [f32]) {
        for ((o, j), s) in out.iter_mut().zip(&self.joints).zip(&self.state) {
            *o = j.velocity_to_rad(s.velocity);
        }
    }

    /// One SYNC_WRITE of goals (radians, clamped to the calibrated ranges).
    pub fn write(&mut self, targets: &[f32]) -> Result<(), BusError> {
        for ((t, j), v) in self.ticks.iter_mut().zip(&self.joints).zip(targets) {
            *t = j.rad_to_ticks(*v);
        }
        self.bus
            .sync_write(&self.ids, Register::GoalPosition, &self.ticks)
    }

    /// Set every goal to where the servo is (the last read), then enable
    /// torque: the arm holds, and moves first from the measured position.
    pub fn hold_and_enable(&mut self) -> Result<(), BusError> {
        for (t, s) in self.ticks.iter_mut().zip(&self.state) {
            *t = s.position;
        }
        self.bus
            .sync_write(&self.ids, Register::GoalPosition, &self.ticks)?;
        self.set_torque(true)
    }

    /// Enable or disable torque on every servo, in one SYNC_WRITE.
    pub fn set_torque(&mut self, on: bool) -> Result<(), BusError> {
        let values = [i32::from(on); MAX_JOINTS];
        self.bus
            .sync_write(&self.ids, Register::TorqueEnable, &values[..self.ids.len()])?;
        self.torque = on;
        Ok(())
    }

    /// Whether torque was last enabled.
    pub fn torque(&self) -> bool {
        self.torque
    }

    /// Joint count.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the arm has no joints (never, for a preset).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The calibrated joints, in order.
    pub fn joints(&self) -> &[Joint] {
        &self.joints
    }

    /// The bus (its statistics: round trips, timeouts, corrupt packets).
    pub fn bus(&self) -> &B {
        &self.bus
    }

    /// The port.
    pub fn port(&self) -> &str {
        &self.port
    }

    /// The joint index of servo `id`.
    fn joint_of(&self, id: u8) -> u8 {
        self.ids.iter().position(|&i| i == id).unwrap_or(255) as u8
    }
}

impl<B: Bus> Drop for ServoArm<B> {
    fn drop(&mut self) {
        if let Err(e) = self.set_torque(false) {
            tracing::error!(port = %self.port, "could not disable torque: {e}");
        }
    }
}

/// A calibrated servo-bus arm as a control-loop [`Link`].
pub struct ServoLink<B: Bus> {
    arm: ServoArm<B>,
    /// Each tick's SYNC_READ round trip (write to last status byte).
    round_trips: diffbc_bridge::Histogram,
    handshake: Handshake,
    positions: [f32; MAX_JOINTS],
    velocities: [f32; MAX_JOINTS],
    telemetry_seq: u32,
    last_command_seq: u32,
    commands: u32,
}

impl<B: Bus> std::fmt::Debug for ServoLink<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServoLink").field("arm", &self.arm).finish()
    }
}

impl<B: Bus> ServoLink<B> {
    /// [`ServoArm::open`], then hold where the arm is and enable torque (so
    /// the first move starts from the measured position, never a stale
    /// goal). `max_rate_hz` is what the handshake reports (the bus's budget
    /// for one read and one write per tick).
    pub fn connect(
        bus: B,
        port: &str,
        arm: &ArmPreset,
        calibration: &Calibration,
        calibration_path: &str,
        max_rate_hz: u16,
    ) -> Result<Self, ConnectError> {
        let mut servos = ServoArm::open(bus, port, arm, calibration, calibration_path)?;
        servos
            .hold_and_enable()
            .map_err(|source| ConnectError::Bus {
                arm: arm.name.into(),
                port: port.into(),
                cause: source,
            })?;
        let mut limits = heapless::Vec::new();
        for j in servos.joints() {
            let (min, max) = j.rad_limits();
            let _ = limits.push(JointLimit {
                min,
                max,
                max_velocity: arm.max_velocity,
                max_acceleration: arm.max_acceleration,
            });
        }
        tracing::info!(
            arm = arm.name,
            port,
            joints = servos.len(),
            "servo arm connected, torque on"
        );
        Ok(Self {
            arm: servos,
            round_trips: diffbc_bridge::Histogram::new(),
            handshake: Handshake {
                protocol: PROTOCOL_VERSION,
                joints: limits,
                max_rate_hz,
                // No device watchdog on a servo bus (see the module docs).
                watchdog_ms: 0,
            },
            positions: [0.0; MAX_JOINTS],
            velocities: [0.0; MAX_JOINTS],
            telemetry_seq: 0,
            last_command_seq: 0,
            commands: 0,
        })
    }

    /// Hold where the arm is now and enable torque again (after a run's
    /// stop disabled it): a new read, goals = measured, torque on.
    pub fn rearm(&mut self) -> Result<(), BusError> {
        self.arm.read()?;
        self.arm.hold_and_enable()
    }

    /// Disable torque on every servo.
    pub fn torque_off(&mut self) -> Result<(), BusError> {
        self.arm.set_torque(false)
    }

    /// The arm.
    pub fn arm(&self) -> &ServoArm<B> {
        &self.arm
    }

    /// Every poll's SYNC_READ round trip so far (µs histogram).
    pub fn round_trips(&self) -> &diffbc_bridge::Histogram {
        &self.round_trips
    }
}

fn to_io(e: BusError) -> std::io::Error {
    match e {
        BusError::Io { cause, .. } => cause,
        other => std::io::Error::other(other.to_string()),
    }
}

impl<B: Bus> Link for ServoLink<B> {
    fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    fn poll(
        &mut self,
        now: Duration,
        stats: &mut RunStats,
        latest: &mut Option<Telemetry>,
    ) -> Result<bool, BridgeError> {
        match self.arm.read() {
            Ok(()) => {}
            // A lost or corrupt status packet: counted; the loop's
            // telemetry timeout stops a run whose bus stays bad.
            Err(
                BusError::Timeout { .. } | BusError::Checksum { .. } | BusError::Malformed { .. },
            ) => {
                stats.frames_bad += 1;
                return Ok(false);
            }
            Err(BusError::Servo { id, bits, .. }) => {
                return Err(BridgeError::DeviceFault {
                    code: FaultCode::Overload,
                    joint: self.arm.joint_of(id),
                    detail: u32::from(bits),
                });
            }
            Err(e) => {
                return Err(BridgeError::Vanished {
                    port: self.arm.port.clone(),
                    cause: e.to_string(),
                    waited_ms: 0,
                });
            }
        }
        stats.frames_received += 1;
        self.round_trips
            .record(self.arm.bus().stats().last_round_trip);
        self.telemetry_seq = self.telemetry_seq.wrapping_add(1);
        let n = self.arm.len();
        self.arm.positions(&mut self.positions[..n]);
        self.arm.velocities(&mut self.velocities[..n]);
        *latest = Some(Telemetry {
            seq: self.telemetry_seq,
            device_time_us: now.as_micros().min(u128::from(u64::MAX)) as u64,
            // A SYNC_WRITE has no reply: the last command written is the
            // last one the bus can say anything about.
            last_command_seq: self.last_command_seq,
            positions: Joints::from_slice(&self.positions[..n]).unwrap_or_default(),
            velocities: Joints::from_slice(&self.velocities[..n]).unwrap_or_default(),
            status: if self.arm.torque() {
                status::ENABLED
            } else {
                status::HOLDING
            },
            link: LinkCounters {
                commands: self.commands,
                ..LinkCounters::default()
            },
        });
        Ok(true)
    }

    fn send(&mut self, frame: &Frame, _now: Duration) -> std::io::Result<()> {
        match frame {
            Frame::Command(c) => {
                self.arm.write(&c.targets).map_err(to_io)?;
                self.last_command_seq = c.seq;
                self.commands = self.commands.wrapping_add(1);
                Ok(())
            }
            Frame::Stop { .. } => self.torque_off().map_err(to_io),
            _ => Ok(()),
        }
    }

    fn reconnect(&mut self, _policy: &Reconnect, cause: &str) -> Result<(), BridgeError> {
        // Reopening a servo bus mid-run would re-enable torque on an arm
        // that may have been moved by hand: the run ends instead.
        Err(BridgeError::Vanished {
            port: self.arm.port.clone(),
            cause: cause.into(),
            waited_ms: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::MotorCalibration;
    use crate::{BusStats, Family};
    use diffbc_bridge::{Controller, LoopConfig, Sweep, WallClock};
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    /// What the fake bus saw, shared with the test.
    #[derive(Debug, Default)]
    struct Seen {
        /// Every write, in order: (register, values).
        writes: Vec<(Register, Vec<i32>)>,
        positions: Vec<i32>,
        torque: bool,
        /// Errors to return from the next reads.
        fail_reads: Vec<BusError>,
    }

    struct MemBus(Arc<Mutex<Seen>>);

    impl Bus for MemBus {
        fn family(&self) -> Family {
            Family::Feetech
        }
        fn ping(&mut self, _id: u8) -> Result<u16, BusError> {
            Ok(777)
        }
        fn read(&mut self, _id: u8, _r: Register) -> Result<i32, BusError> {
            Ok(0)
        }
        fn write(&mut self, _id: u8, _r: Register, _v: i32) -> Result<(), BusError> {
            Ok(())
        }
        fn sync_read_state(&mut self, _ids: &[u8], out: &mut [ServoState]) -> Result<(), BusError> {
            let mut s = self.0.lock().expect("lock");
            if !s.fail_reads.is_empty() {
                return Err(s.fail_reads.remove(0));
            }
            for (o, p) in out.iter_mut().zip(&s.positions) {
                *o = ServoState {
                    position: *p,
                    velocity: 0,
                };
            }
            Ok(())
        }
        fn sync_write(&mut self, _ids: &[u8], r: Register, v: &[i32]) -> Result<(), BusError> {
            let mut s = self.0.lock().expect("lock");
            match r {
                Register::TorqueEnable => s.torque = v.iter().all(|&x| x == 1),
                // The servos go where they are told, at once.
                Register::GoalPosition if s.torque => s.positions = v.to_vec(),
                _ => {}
            }
            s.writes.push((r, v.to_vec()));
            Ok(())
        }
        fn stats(&self) -> BusStats {
            BusStats::default()
        }
    }

    fn so101() -> (&'static ArmPreset, Calibration) {
        let arm = ArmPreset::named("so101-follower").expect("preset");
        let mut cal = Calibration::default();
        for m in arm.motors {
            cal.motors.insert(
                m.name.into(),
                MotorCalibration {
                    id: m.id,
                    drive_mode: u8::from(m.id == 2),
                    homing_offset: 0,
                    range_min: 1024,
                    range_max: 3072,
                },
            );
        }
        (arm, cal)
    }

    fn connect(seen: &Arc<Mutex<Seen>>) -> ServoLink<MemBus> {
        seen.lock().expect("lock").positions = vec![1500, 2000, 2047, 2500, 3000, 1100];
        let (arm, cal) = so101();
        ServoLink::connect(MemBus(seen.clone()), "mem", arm, &cal, "cal.json", 100)
            .expect("connect")
    }

    #[test]
    fn connect_holds_where_the_arm_is_before_enabling_torque() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let link = connect(&seen);
        let s = seen.lock().expect("lock");
        assert_eq!(
            s.writes,
            [
                (
                    Register::GoalPosition,
                    vec![1500, 2000, 2047, 2500, 3000, 1100]
                ),
                (Register::TorqueEnable, vec![1; 6]),
            ],
            "goal = measured, then torque on"
        );
        let h = link.handshake();
        assert_eq!(h.joints.len(), 6);
        let quarter = std::f32::consts::FRAC_PI_2;
        assert!(
            (h.joints[0].min + quarter).abs() < 1e-6 && (h.joints[0].max - quarter).abs() < 1e-6
        );
        drop(s);
        drop(link);
        assert!(
            !seen.lock().expect("lock").torque,
            "dropping the link disables torque"
        );
    }

    #[test]
    fn a_run_sends_radians_as_ticks_and_every_way_out_disables_torque() {
        struct Panics(u32);
        impl Controller for Panics {
            fn act(&mut self, t: &Telemetry, a: &mut [f32]) -> Result<(), String> {
                self.0 += 1;
                assert!(self.0 < 5, "a controller bug");
                a.copy_from_slice(&t.positions);
                Ok(())
            }
        }
        let config = LoopConfig {
            rate_hz: 50.0,
            duration: Some(Duration::from_millis(300)),
            ..LoopConfig::default()
        };
        // End of the run, and a controller panic: torque off both times.
        for panics in [false, true] {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let mut link = connect(&seen);
            let stop = AtomicBool::new(false);
            let report = if panics {
                diffbc_bridge::control::run(
                    &mut link,
                    &mut WallClock::start(),
                    &mut Panics(0),
                    &config,
                    &stop,
                )
            } else {
                diffbc_bridge::control::run(
                    &mut link,
                    &mut WallClock::start(),
                    &mut Sweep::default(),
                    &config,
                    &stop,
                )
            };
            let s = seen.lock().expect("lock");
            assert!(
                !s.torque,
                "torque off after the run (panic: {panics}): {:?}",
                report.outcome
            );
            assert_eq!(s.writes.last().map(|w| w.0), Some(Register::TorqueEnable));
            let goals: Vec<&Vec<i32>> = s
                .writes
                .iter()
                .filter(|w| w.0 == Register::GoalPosition)
                .map(|w| &w.1)
                .collect();
            assert!(goals.len() >= 4, "{} goal writes", goals.len());
            for g in &goals {
                assert!(
                    g.iter().all(|t| (1024..=3072).contains(t)),
                    "inside the calibrated range: {g:?}"
                );
            }
            if panics {
                assert!(report.outcome.is_err());
            } else {
                assert_eq!(report.outcome, Ok(()));
                assert!(report.log.total() >= 10, "{}", report.log.total());
            }
        }
    }

    #[test]
    fn a_bad_status_packet_is_counted_and_a_servo_error_is_a_fault() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut link = connect(&seen);
        let mut stats = RunStats::new();
        let mut latest = None;
        seen.lock().expect("lock").fail_reads = vec![
            BusError::Timeout {
                family: "feetech",
                id: 3,
                instruction: "SYNC_READ",
                waited_ms: 5,
            },
            BusError::Servo {
                family: "feetech",
                id: 4,
                bits: 0x20,
                meaning: "overload".into(),
            },
        ];
        assert!(matches!(
            link.poll(Duration::ZERO, &mut stats, &mut latest),
            Ok(false)
        ));
        assert_eq!(stats.frames_bad, 1);
        match link.poll(Duration::ZERO, &mut stats, &mut latest) {
            Err(BridgeError::DeviceFault {
                code,
                joint,
                detail,
            }) => {
                assert_eq!((code, joint, detail), (FaultCode::Overload, 3, 0x20));
            }
            other => panic!("expected a fault, got {other:?}"),
        }
        assert!(matches!(
            link.poll(Duration::ZERO, &mut stats, &mut latest),
            Ok(true)
        ));
        let t = latest.expect("telemetry");
        // The middle of 1024..=3072 is 2048. Joint 2 (id 2) has drive_mode 1:
        // 2000 ticks is 48 below the middle, negated.
        let tick = std::f32::consts::TAU / 4096.0;
        assert!(
            (t.positions[1] - 48.0 * tick).abs() < 1e-6,
            "{:?}",
            t.positions
        );
        assert!(
            (t.positions[0] + 548.0 * tick).abs() < 1e-6,
            "{:?}",
            t.positions
        );
    }
}
