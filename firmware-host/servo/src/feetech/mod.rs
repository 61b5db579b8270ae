//! Feetech STS/SCS servos (the STS3215 of the SO-100 / SO-101), spoken
//! directly by the host.
//!
//! # The protocol (FT-SCS, as Feetech publishes it)
//!
//! Half-duplex asynchronous serial, 8N1, 1 Mbaud by default on the STS
//! series. Every packet is `0xFF 0xFF ID LENGTH CODE PARAMS… CHECKSUM`
//! ([`packet`]): `LENGTH` = parameters + 2, and `CHECKSUM` =
//! `!(ID + LENGTH + CODE + Σ PARAMS) & 0xFF`. The host sends instruction packets (`CODE` = the
//! instruction); a servo answers with a status packet (`CODE` = its error
//! byte, [`error_meaning`]). Multi-byte registers are little-endian on the
//! STS series (register 2, "END", reads 0).
//!
//! | instruction | code | parameters | answered by |
//! |---|---|---|---|
//! | PING | `0x01` | — | one status packet, no parameters |
//! | READ | `0x02` | address, count | one status packet with `count` bytes |
//! | WRITE | `0x03` | address, bytes… | one status packet, no parameters |
//! | SYNC_READ | `0x82` | address, count, id₁ … idₙ (to id `0xFE`) | one status packet per listed id, in order |
//! | SYNC_WRITE | `0x83` | address, count, (id, `count` bytes)… (to id `0xFE`) | nothing |
//!
//! # The STS3215's registers ([`spec`])
//!
//! Checked against published STS memory tables (Feetech's "STS memory
//! table", the `SMS_STS` SCServo library's map, LeRobot's `tables.py`):
//!
//! | register | address | bytes | encoding |
//! |---|---|---|---|
//! | model number | 3 | 2 | 777 (`0x0309`) for the STS3215 ([`STS3215_MODEL`]) |
//! | min position limit | 9 | 2 | unsigned, ticks |
//! | max position limit | 11 | 2 | unsigned, ticks |
//! | phase | 18 | 1 | bit 2: speed unit (see below), bit 4: full-angle feedback |
//! | homing offset ("position correction") | 31 | 2 | sign-magnitude, sign in bit 11 (±2047) |
//! | torque enable | 40 | 1 | 0 / 1 |
//! | goal position | 42 | 2 | sign-magnitude, sign in bit 15 |
//! | present position | 56 | 2 | sign-magnitude, sign in bit 15 |
//! | present speed (velocity) | 58 | 2 | sign-magnitude, sign in bit 15 |
//!
//! **Velocity unit.** Present speed counts encoder steps per second (one
//! step = 1/4096 turn, about 0.0146 rpm) when bit 2 of the phase register
//! is set, as on the STS3215 (phase `0x1C`); with it clear the unit is 50
//! steps/s (0.732 rpm). [`ServoState::velocity`](crate::ServoState) is the
//! raw register: ticks per second on an STS3215 as shipped.
//!
//! **Homing offset.** The servo reports `Present = Actual − HomingOffset`
//! and takes goals in the same frame (`Actual goal = Goal + HomingOffset`):
//! LeRobot's Feetech driver documents exactly this (`_get_half_turn_homings`:
//! "Present_Position = Actual_Position - Homing_Offset", offset = raw − 2047
//! to put the present position at mid-range). Dynamixel adds its offset
//! instead; the two families' signs are opposite. Firmware with full-angle
//! feedback (phase bit 4) reports the difference as is, which can be
//! negative (hence the sign bit); the emulator does the same.
//!
//! **Status error bits** ([`ERROR_BITS`]): bit 0 input voltage, bit 1 angle
//! (magnetic encoder) sensor, bit 2 overheating, bit 3 overcurrent, bit 5
//! overload; bits 4, 6 and 7 are unused on the STS series (named by number
//! if they ever appear).
//!
//! # Pieces
//!
//! - [`packet`]: frames in fixed buffers, both directions.
//! - [`FeetechBus`]: [`Bus`](crate::Bus) over a serial port (no allocation
//!   per `sync_read_state` / `sync_write`).
//! - [`FeetechDevice`] (unix): the emulated servos' side for
//!   [`EmuBus`](crate::emulated::EmuBus).

#[cfg(unix)]
mod device;
mod host;
pub mod packet;

#[cfg(unix)]
pub use device::FeetechDevice;
pub use host::FeetechBus;

use crate::bus::{Encoding, Register, RegisterSpec};

/// The family's name in errors.
pub const FAMILY: &str = "feetech";

/// Model number the STS3215 reports (register 3, two bytes): 777 = `0x0309`.
pub const STS3215_MODEL: u16 = 777;

/// Instruction codes.
pub mod instruction {
    /// PING: answered by an empty status packet.
    pub const PING: u8 = 0x01;
    /// READ address, count.
    pub const READ: u8 = 0x02;
    /// WRITE address, bytes….
    pub const WRITE: u8 = 0x03;
    /// SYNC_READ address, count, ids….
    pub const SYNC_READ: u8 = 0x82;
    /// SYNC_WRITE address, count, (id, bytes…)….
    pub const SYNC_WRITE: u8 = 0x83;

    /// The instruction's name, for errors.
    pub fn name(code: u8) -> &'static str {
        match code {
            PING => "PING",
            READ => "READ",
            WRITE => "WRITE",
            SYNC_READ => "SYNC_READ",
            SYNC_WRITE => "SYNC_WRITE",
            _ => "an unknown instruction",
        }
    }
}

/// Control-table addresses used beyond the [`Register`]s.
pub mod address {
    /// Firmware major, minor version (1 byte each).
    pub const FIRMWARE: u16 = 0;
    /// Model number (2 bytes).
    pub const MODEL_NUMBER: u16 = 3;
    /// Bus id (1 byte).
    pub const ID: u16 = 5;
    /// Baud-rate index (1 byte; 0 = 1 Mbaud).
    pub const BAUD_RATE: u16 = 6;
    /// Phase (1 byte; see the module's notes).
    pub const PHASE: u16 = 18;
    /// Present voltage (1 byte, 0.1 V).
    pub const PRESENT_VOLTAGE: u16 = 62;
    /// Present temperature (1 byte, °C).
    pub const PRESENT_TEMPERATURE: u16 = 63;
    /// Moving flag (1 byte).
    pub const MOVING: u16 = 66;
}

/// Input voltage out of range.
pub const ERR_VOLTAGE: u8 = 1 << 0;
/// Angle (magnetic encoder) sensor fault.
pub const ERR_ANGLE_SENSOR: u8 = 1 << 1;
/// Overheating.
pub const ERR_OVERHEAT: u8 = 1 << 2;
/// Overcurrent.
pub const ERR_OVERCURRENT: u8 = 1 << 3;
/// Overload (torque above the protection threshold for too long).
pub const ERR_OVERLOAD: u8 = 1 << 5;

/// Each documented status error bit and its meaning.
pub const ERROR_BITS: [(u8, &str); 5] = [
    (ERR_VOLTAGE, "input voltage out of range"),
    (ERR_ANGLE_SENSOR, "angle sensor fault"),
    (ERR_OVERHEAT, "overheating"),
    (ERR_OVERCURRENT, "overcurrent"),
    (ERR_OVERLOAD, "overload"),
];

/// A status packet's error byte in words ("overheating, overload"); an
/// undocumented bit is named by number ("bit 6").
pub fn error_meaning(bits: u8) -> String {
    let mut out = String::new();
    for b in 0..8u8 {
        let mask = 1u8 << b;
        if bits & mask == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        match ERROR_BITS.iter().find(|(m, _)| *m == mask) {
            Some((_, words)) => out.push_str(words),
            None => {
                out.push_str("bit ");
                out.push(char::from(b'0' + b));
            }
        }
    }
    if out.is_empty() {
        out.push_str("no error");
    }
    out
}

/// Where and how the STS3215 keeps `register`.
pub fn spec(register: Register) -> RegisterSpec {
    let (address, size, encoding) = match register {
        Register::TorqueEnable => (40, 1, Encoding::Unsigned),
        Register::GoalPosition => (42, 2, Encoding::SignMagnitude { sign_bit: 15 }),
        Register::PresentPosition => (56, 2, Encoding::SignMagnitude { sign_bit: 15 }),
        Register::PresentVelocity => (58, 2, Encoding::SignMagnitude { sign_bit: 15 }),
        Register::HomingOffset => (31, 2, Encoding::SignMagnitude { sign_bit: 11 }),
        Register::MinPositionLimit => (9, 2, Encoding::Unsigned),
        Register::MaxPositionLimit => (11, 2, Encoding::Unsigned),
    };
    RegisterSpec {
        address,
        size,
        encoding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sts3215_map_is_the_published_one() {
        let s = |r| {
            let s = spec(r);
            (s.address, s.size)
        };
        assert_eq!(s(Register::TorqueEnable), (40, 1));
        assert_eq!(s(Register::GoalPosition), (42, 2));
        assert_eq!(s(Register::PresentPosition), (56, 2));
        assert_eq!(s(Register::PresentVelocity), (58, 2));
        assert_eq!(s(Register::HomingOffset), (31, 2));
        assert_eq!(s(Register::MinPositionLimit), (9, 2));
        assert_eq!(s(Register::MaxPositionLimit), (11, 2));
        // Position and velocity are adjacent: one 4-byte read from 56.
        assert_eq!(spec(Register::PresentVelocity).address, 56 + 2);
        assert_eq!(
            spec(Register::HomingOffset)
                .encode(-5)
                .map(|b| [b[0], b[1]]),
            Some([0x05, 0x08])
        );
        assert_eq!(spec(Register::HomingOffset).encode(2048), None);
        assert_eq!(STS3215_MODEL, 0x0309);
    }

    #[test]
    fn error_bits_read_as_words() {
        assert_eq!(error_meaning(0), "no error");
        assert_eq!(error_meaning(ERR_OVERLOAD), "overload");
        assert_eq!(
            error_meaning(ERR_VOLTAGE | ERR_OVERHEAT | ERR_OVERLOAD),
            "input voltage out of range, overheating, overload"
        );
        assert_eq!(
            error_meaning(ERR_ANGLE_SENSOR | ERR_OVERCURRENT | 0x40),
            "angle sensor fault, overcurrent, bit 6"
        );
    }
}
