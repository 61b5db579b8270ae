//! The servo buses of the low-cost arms people own — Feetech STS/SCS
//! (SO-100 / SO-101: six STS3215 on a USB–serial adapter) and Dynamixel
//! Protocol 2.0 (Koch v1.1: XL330 / XL430) — spoken directly by the host:
//! these arms run no firmware of ours.
//!
//! - [`bus`]: the [`Bus`] trait every family implements (ping, register
//!   read/write, one SYNC_READ of every joint's position and velocity, one
//!   SYNC_WRITE of every goal), the semantic [`Register`]s and how each
//!   family lays them out ([`RegisterSpec`]), [`BusError`] (timeouts,
//!   checksum/CRC errors, servo error bits, named by servo id and byte).
//!   No allocation per call: packets are built and parsed in fixed buffers.
//! - [`arm`]: arm presets (SO-100/SO-101 and Koch, leader and follower:
//!   ids, models, joint names, the gripper).
//! - [`calibration`]: LeRobot-compatible calibration files and the one
//!   conversion between ticks and joint units (radians, gripper %).
//! - [`calibrate`]: the calibration procedure (`diffbc calibrate`), with a
//!   person moving the arm through an [`calibrate::Operator`].
//! - [`feetech`]: the Feetech packet protocol (checksum = !sum) and the
//!   STS3215's registers.
//! - [`dynamixel`]: Dynamixel Protocol 2.0 (CRC-16, byte stuffing) and the
//!   X series' registers.
//! - [`link`]: [`ServoLink`], a calibrated servo arm as the control loop's
//!   `Link`: one SYNC_READ per poll, one SYNC_WRITE per command, torque off
//!   on every stop and on drop.
//! - [`teleop`]: teleoperation recording (`diffbc record`): the follower
//!   mirrors a leader through the control loop; observations and actions
//!   per tick, episode by episode.
//! - [`emulated`] (unix): servos on a pseudo-terminal that speak the real
//!   byte protocols, with dynamics, register state (torque, goals) the tests
//!   can assert, and fault injection.

pub mod arm;
pub mod bus;
pub mod calibrate;
pub mod calibration;
pub mod dynamixel;
#[cfg(unix)]
pub mod emulated;
pub mod feetech;
pub mod link;
pub mod teleop;

pub use bus::{Bus, BusError, BusStats, Encoding, Family, Register, RegisterSpec, ServoState};
pub use link::{ConnectError, ServoArm, ServoLink};

/// Open a bus of `family` on `port` (`timeout`: how long to wait for each
/// status packet).
pub fn open_bus(
    family: Family,
    port: &str,
    baud: u32,
    timeout: std::time::Duration,
) -> Result<Box<dyn Bus>, BusError> {
    Ok(match family {
        Family::Feetech => Box::new(feetech::FeetechBus::open(port, baud, timeout)?),
        Family::Dynamixel => Box::new(dynamixel::DynamixelBus::open(port, baud, timeout)?),
    })
}
