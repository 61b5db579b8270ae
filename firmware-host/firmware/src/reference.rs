//! The reference arm: four joints of ±2.5 rad, PD servos at 1 kHz,
//! telemetry at 200 Hz, a 250 ms watchdog. One definition for the host
//! emulator's default arm (`diffbc_emulator::SimConfig::default_arm`) and
//! the example firmware (`firmware-host/mcu`, `firmware-host/mcu-stm32f4`);
//! a real arm's firmware states its own joints the same way.

use crate::{Device, Firmware, FirmwareConfig, Motors, SimServos};
use core::time::Duration;
use diffbc_protocol::JointLimit;

/// Joints.
pub const JOINTS: usize = 4;
/// Every joint's limits.
pub const LIMIT: JointLimit = JointLimit {
    min: -2.5,
    max: 2.5,
    max_velocity: 3.0,
    max_acceleration: 30.0,
};
/// Simulated servo gains (1/s², 1/s).
pub const KP: f32 = 100.0;
/// See [`KP`].
pub const KD: f32 = 20.0;
/// The drives are stepped this often (1 kHz).
pub const PHYSICS_PERIOD: Duration = Duration::from_millis(1);
/// Telemetry is sent this often (200 Hz).
pub const TELEMETRY_PERIOD: Duration = Duration::from_millis(5);
/// Commands older than this latch the watchdog fault.
pub const WATCHDOG: Duration = Duration::from_millis(250);
/// Highest command rate accepted.
pub const MAX_RATE_HZ: u16 = 500;

/// The firmware settings the handshake reports.
pub fn config() -> FirmwareConfig {
    let mut limits = heapless::Vec::new();
    for _ in 0..JOINTS {
        let _ = limits.push(LIMIT);
    }
    FirmwareConfig {
        limits,
        watchdog: WATCHDOG,
        max_rate_hz: MAX_RATE_HZ,
    }
}

/// Simulated servos for the reference arm, at rest at 0 rad.
pub fn sim_servos() -> SimServos {
    SimServos::new(&[LIMIT; JOINTS], KP, KD, &[0.0; JOINTS])
}

/// The whole device side over `motors`: the state machine holding where
/// the motors are, at the reference rates.
pub fn device<M: Motors>(motors: M) -> Device<M> {
    let firmware = Firmware::new(config(), motors.positions());
    Device::new(firmware, motors, PHYSICS_PERIOD, TELEMETRY_PERIOD)
}
