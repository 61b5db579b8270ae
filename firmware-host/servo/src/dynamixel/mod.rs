//! Dynamixel Protocol 2.0 (Koch v1.1: XL330-M288 and XL430-W250 on a U2D2,
//! 1 Mbaud) and the X series' control table.
//!
//! - [`packet`]: packets (header `FF FF FD 00`, CRC-16, byte stuffing),
//!   built and parsed in fixed buffers.
//! - [`DynamixelBus`]: the host side, a [`Bus`] over a serial port. One
//!   SYNC_READ of Present Velocity and Present Position (8 bytes from
//!   address 128) per tick, one SYNC_WRITE per tick, neither allocating.
//! - [`DynamixelDevice`] (unix): the servo side, for the emulated bus.
//!
//! ## The X series' conventions (ROBOTIS e-Manual, XL330-M288 / XL430-W250)
//!
//! - Positions are 4-byte two's complement pulses, 4096 per revolution.
//! - **Present Position = Actual Position + Homing Offset(20)**; a goal is in
//!   the same frame as the present position. (Feetech's STS3215 subtracts
//!   its offset instead.) The offset's sign does not flip in reverse drive
//!   mode.
//! - **Present Velocity(128)** is in units of **0.229 rev/min**
//!   ([`VELOCITY_UNIT_RPM`]), 4-byte two's complement.
//! - Min/Max Position Limit(52/48) bound goals in position control mode.
//! - EEPROM registers (address < 64: Homing Offset, the limits) can only be
//!   written with torque off.
//! - Status error byte: bit 7 is the hardware alert (the cause is in
//!   Hardware Error Status(70): bit 0 input voltage, 2 overheating, 3 motor
//!   encoder, 4 electrical shock, 5 overload); bits 0–6 are the error number
//!   (1 result fail, 2 instruction error, 3 CRC error, 4 data range, 5 data
//!   length, 6 data limit, 7 access).
//! - Model numbers: XL330-M288 = 1200, XL430-W250 = 1060.

mod bus;
#[cfg(unix)]
mod device;
pub mod packet;

pub use bus::DynamixelBus;
#[cfg(unix)]
pub use device::{DynamixelDevice, FIRMWARE_VERSION};

use crate::bus::{Encoding, Register, RegisterSpec};

/// The family's name in errors.
pub const FAMILY: &str = "dynamixel";

/// XL330-M288's model number (Koch v1.1's smaller joints and the leader).
pub const MODEL_XL330_M288: u16 = 1200;
/// XL430-W250's model number (Koch v1.1 follower's shoulder and elbow).
pub const MODEL_XL430_W250: u16 = 1060;

/// Present Velocity's unit: rev/min per count.
pub const VELOCITY_UNIT_RPM: f32 = 0.229;

/// Model Number (2 bytes, read-only).
pub const ADDR_MODEL_NUMBER: u16 = 0;
/// Firmware Version (1 byte, read-only).
pub const ADDR_FIRMWARE_VERSION: u16 = 6;
/// ID (1 byte).
pub const ADDR_ID: u16 = 7;
/// Hardware Error Status (1 byte, read-only): why the alert bit is set.
pub const ADDR_HARDWARE_ERROR_STATUS: u16 = 70;

/// Where the X series keeps `register`.
pub fn spec(register: Register) -> RegisterSpec {
    let (address, size, encoding) = match register {
        Register::TorqueEnable => (64, 1, Encoding::Unsigned),
        Register::GoalPosition => (116, 4, Encoding::TwosComplement),
        Register::PresentPosition => (132, 4, Encoding::TwosComplement),
        Register::PresentVelocity => (128, 4, Encoding::TwosComplement),
        Register::HomingOffset => (20, 4, Encoding::TwosComplement),
        Register::MinPositionLimit => (52, 4, Encoding::TwosComplement),
        Register::MaxPositionLimit => (48, 4, Encoding::TwosComplement),
    };
    RegisterSpec {
        address,
        size,
        encoding,
    }
}

/// Present Velocity counts in radians per second (1 count = 0.229 rev/min).
pub fn velocity_rad_s(counts: i32) -> f32 {
    counts as f32 * VELOCITY_UNIT_RPM * std::f32::consts::TAU / 60.0
}

/// The status error byte's error number (bits 0–6) in words.
pub fn error_number_meaning(number: u8) -> &'static str {
    match number {
        0 => "no error",
        1 => "result fail",
        2 => "instruction error",
        3 => "CRC error",
        4 => "data range error",
        5 => "data length error",
        6 => "data limit error",
        7 => "access error",
        _ => "unknown error number",
    }
}

/// The bits of Hardware Error Status(70), in words.
pub const HARDWARE_ERRORS: [(u8, &str); 5] = [
    (0x01, "input voltage"),
    (0x04, "overheating"),
    (0x08, "motor encoder"),
    (0x10, "electrical shock"),
    (0x20, "overload"),
];

/// Hardware Error Status(70) in words ("overload, overheating"), or
/// "no hardware error".
pub fn hardware_error_meaning(status: u8) -> String {
    let mut s = String::new();
    for (bit, name) in HARDWARE_ERRORS {
        if status & bit != 0 {
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(name);
        }
    }
    let unknown = status & !HARDWARE_ERRORS.iter().fold(0, |m, (b, _)| m | b);
    if unknown != 0 {
        if !s.is_empty() {
            s.push_str(", ");
        }
        s.push_str(&format!("unknown bits {unknown:#04x}"));
    }
    if s.is_empty() {
        s.push_str("no hardware error");
    }
    s
}

/// A status error byte in words; `hardware` is Hardware Error Status(70)
/// when the alert bit is set and it could be read.
pub fn error_meaning(error: u8, hardware: Option<u8>) -> String {
    let mut s = String::new();
    let number = error & 0x7F;
    if number != 0 {
        s.push_str(error_number_meaning(number));
    }
    if error & 0x80 != 0 {
        if !s.is_empty() {
            s.push_str("; ");
        }
        match hardware {
            Some(h) => s.push_str(&format!(
                "hardware alert: {} (Hardware Error Status {h:#04x})",
                hardware_error_meaning(h)
            )),
            None => s.push_str("hardware alert (Hardware Error Status(70) unread)"),
        }
    }
    if s.is_empty() {
        s.push_str("no error");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_x_series_control_table() {
        let addr = |r| spec(r).address;
        assert_eq!(addr(Register::TorqueEnable), 64);
        assert_eq!(addr(Register::GoalPosition), 116);
        assert_eq!(addr(Register::PresentVelocity), 128);
        assert_eq!(addr(Register::PresentPosition), 132);
        assert_eq!(addr(Register::HomingOffset), 20);
        assert_eq!(addr(Register::MaxPositionLimit), 48);
        assert_eq!(addr(Register::MinPositionLimit), 52);
        // Velocity then position: one 8-byte read covers both.
        assert_eq!(
            addr(Register::PresentVelocity) + u16::from(spec(Register::PresentVelocity).size),
            addr(Register::PresentPosition)
        );
        let p = spec(Register::PresentPosition);
        assert_eq!(p.decode(&[0x0C, 0xFE, 0xFF, 0xFF]), -500);
        assert_eq!(spec(Register::TorqueEnable).encode(256), None);
    }

    #[test]
    fn errors_in_words() {
        assert_eq!(
            error_meaning(0x80, Some(0x24)),
            "hardware alert: overheating, overload (Hardware Error Status 0x24)"
        );
        assert_eq!(error_meaning(0x07, None), "access error");
        assert_eq!(
            error_meaning(0x83, None),
            "CRC error; hardware alert (Hardware Error Status(70) unread)"
        );
        assert_eq!(hardware_error_meaning(0x42), "unknown bits 0x42");
        assert!((velocity_rad_s(100) - 2.398).abs() < 1e-3);
    }
}
