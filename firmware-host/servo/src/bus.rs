//! What the arm layer needs from a servo bus, whichever family speaks on it.

use std::time::Duration;

/// Most servos on one bus the loop drives (an arm's joints and gripper).
pub const MAX_SERVOS: usize = 16;

/// A servo family (packet protocol and register map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Feetech STS/SCS (STS3215): SO-100, SO-101.
    Feetech,
    /// Dynamixel Protocol 2.0 (XL330, XL430): Koch v1.1.
    Dynamixel,
}

impl Family {
    /// Encoder ticks per revolution (both families' models used here: 4096).
    pub fn ticks_per_rev(self) -> i32 {
        4096
    }

    /// Ticks per second in one unit of the family's present-velocity
    /// register: Feetech STS counts steps per second; Dynamixel X counts
    /// 0.229 rpm.
    pub fn velocity_unit_ticks_per_s(self) -> f64 {
        match self {
            Family::Feetech => 1.0,
            Family::Dynamixel => 0.229 / 60.0 * f64::from(self.ticks_per_rev()),
        }
    }

    /// Lower-case name, as in arm presets and calibration files.
    pub fn name(self) -> &'static str {
        match self {
            Family::Feetech => "feetech",
            Family::Dynamixel => "dynamixel",
        }
    }
}

/// The registers the arm layer uses, by meaning; each family maps them to
/// an address, a size and an encoding ([`RegisterSpec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Register {
    /// 1: the servo drives toward its goal; 0: limp.
    TorqueEnable,
    /// Goal position (ticks).
    GoalPosition,
    /// Present position (ticks, after the servo applies its homing offset).
    PresentPosition,
    /// Present velocity (the family's unit).
    PresentVelocity,
    /// Homing offset (ticks; the family's sign convention).
    HomingOffset,
    /// Lowest goal the servo accepts (ticks).
    MinPositionLimit,
    /// Highest goal the servo accepts (ticks).
    MaxPositionLimit,
}

/// How a register's bytes (little-endian) carry a signed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Unsigned.
    Unsigned,
    /// Two's complement over the register's size.
    TwosComplement,
    /// Magnitude in the bits below `sign_bit`, sign in `sign_bit`
    /// (Feetech's signed registers).
    SignMagnitude {
        /// The sign bit's index.
        sign_bit: u8,
    },
}

/// Where and how a family keeps a [`Register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterSpec {
    /// Control-table address.
    pub address: u16,
    /// Bytes (1, 2 or 4).
    pub size: u8,
    /// How the bytes carry the value.
    pub encoding: Encoding,
}

impl RegisterSpec {
    /// `value` as the register's little-endian bytes (the first `size` of
    /// the returned array). `None` if it does not fit.
    pub fn encode(&self, value: i32) -> Option<[u8; 4]> {
        let bits = u32::from(self.size) * 8;
        let raw: u32 = match self.encoding {
            Encoding::Unsigned => {
                let v = u32::try_from(value).ok()?;
                if bits < 32 && v >> bits != 0 {
                    return None;
                }
                v
            }
            Encoding::TwosComplement => {
                if bits < 32 {
                    let lim = 1i64 << (bits - 1);
                    if i64::from(value) < -lim || i64::from(value) >= lim {
                        return None;
                    }
                    (value as u32) & ((1u32 << bits) - 1)
                } else {
                    value as u32
                }
            }
            Encoding::SignMagnitude { sign_bit } => {
                let mag = value.unsigned_abs();
                if mag >> sign_bit != 0 {
                    return None;
                }
                if value < 0 {
                    mag | (1 << sign_bit)
                } else {
                    mag
                }
            }
        };
        Some(raw.to_le_bytes())
    }

    /// The value of the register's little-endian `bytes` (`size` of them).
    pub fn decode(&self, bytes: &[u8]) -> i32 {
        let mut b = [0u8; 4];
        let n = usize::from(self.size).min(bytes.len()).min(4);
        b[..n].copy_from_slice(&bytes[..n]);
        let raw = u32::from_le_bytes(b);
        let bits = u32::from(self.size) * 8;
        match self.encoding {
            Encoding::Unsigned => raw as i32,
            Encoding::TwosComplement if bits < 32 => {
                let shift = 32 - bits;
                ((raw << shift) as i32) >> shift
            }
            Encoding::TwosComplement => raw as i32,
            Encoding::SignMagnitude { sign_bit } => {
                let mag = (raw & ((1u32 << sign_bit) - 1)) as i32;
                if raw & (1 << sign_bit) != 0 {
                    -mag
                } else {
                    mag
                }
            }
        }
    }
}

/// One servo's state from a SYNC_READ, raw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServoState {
    /// Present position (ticks).
    pub position: i32,
    /// Present velocity (the family's unit: see the family module).
    pub velocity: i32,
}

/// What a bus counted (for the run's statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Instruction packets written.
    pub packets_sent: u64,
    /// Status packets accepted.
    pub status_received: u64,
    /// Status packets that did not come in time.
    pub timeouts: u64,
    /// Status packets with a bad checksum or CRC, or malformed.
    pub corrupt: u64,
    /// Status packets with servo error bits set.
    pub servo_errors: u64,
    /// The last SYNC_READ's round trip (write to last status byte).
    pub last_round_trip: Duration,
    /// The longest round trip so far.
    pub max_round_trip: Duration,
}

/// Why a bus operation failed. Every variant names the servo and, where
/// there is one, what was wrong with the bytes.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No (complete) status packet in time.
    #[error("{family} servo {id}: no status packet to {instruction} within {waited_ms} ms")]
    Timeout {
        /// Family.
        family: &'static str,
        /// The servo that did not answer.
        id: u8,
        /// The instruction it should have answered.
        instruction: &'static str,
        /// How long the bus waited.
        waited_ms: u64,
    },
    /// A status packet whose checksum (Feetech) or CRC-16 (Dynamixel) is wrong.
    #[error(
        "{family} servo {id}: status packet {what} mismatch (received {received:#06x}, computed {computed:#06x}) at byte {offset} of the reply"
    )]
    Checksum {
        /// Family.
        family: &'static str,
        /// The id in the packet.
        id: u8,
        /// "checksum" or "CRC".
        what: &'static str,
        /// Carried by the packet.
        received: u16,
        /// Computed over it.
        computed: u16,
        /// Byte offset of the packet's start in what the bus read for this reply.
        offset: usize,
    },
    /// A reply that is not a status packet of the expected shape.
    #[error("{family} servo {id}: malformed status packet: {message}")]
    Malformed {
        /// Family.
        family: &'static str,
        /// The servo expected (or named in the packet).
        id: u8,
        /// What was wrong, with the byte offset.
        message: String,
    },
    /// The servo reported error bits (overload, overheating, voltage, …).
    #[error("{family} servo {id}: error bits {bits:#04x} ({meaning})")]
    Servo {
        /// Family.
        family: &'static str,
        /// The servo.
        id: u8,
        /// The raw error byte.
        bits: u8,
        /// The bits, in words ("overload, overheating").
        meaning: String,
    },
    /// A value does not fit its register.
    #[error("{family} servo {id}: {value} does not fit {register:?} ({size} bytes, {encoding:?})")]
    Range {
        /// Family.
        family: &'static str,
        /// The servo.
        id: u8,
        /// The register.
        register: Register,
        /// The value.
        value: i32,
        /// Register size.
        size: u8,
        /// Register encoding.
        encoding: Encoding,
    },
    /// Too many servos for one packet, or ids and values of different lengths.
    #[error("{0}")]
    Usage(String),
    /// The port failed (vanished, unplugged).
    #[error("servo bus port {port}: {cause}")]
    Io {
        /// The port.
        port: String,
        /// What the OS said.
        cause: std::io::Error,
    },
}

/// A servo bus: one family's protocol over one serial port. No allocation
/// per call in the steady state (`sync_read_state`, `sync_write`).
pub trait Bus: Send {
    /// The family on this bus.
    fn family(&self) -> Family;

    /// Ping `id`; its model number.
    fn ping(&mut self, id: u8) -> Result<u16, BusError>;

    /// Read one register of one servo.
    fn read(&mut self, id: u8, register: Register) -> Result<i32, BusError>;

    /// Write one register of one servo (and check its status packet).
    fn write(&mut self, id: u8, register: Register, value: i32) -> Result<(), BusError>;

    /// Present position and velocity of every servo in `ids`, in one
    /// SYNC_READ; `out[i]` is `ids[i]`'s.
    fn sync_read_state(&mut self, ids: &[u8], out: &mut [ServoState]) -> Result<(), BusError>;

    /// Write `register` of every servo in `ids` (`values[i]` to `ids[i]`) in
    /// one SYNC_WRITE (no status packets).
    fn sync_write(
        &mut self,
        ids: &[u8],
        register: Register,
        values: &[i32],
    ) -> Result<(), BusError>;

    /// What the bus counted so far.
    fn stats(&self) -> BusStats;
}

impl<B: Bus + ?Sized> Bus for Box<B> {
    fn family(&self) -> Family {
        (**self).family()
    }
    fn ping(&mut self, id: u8) -> Result<u16, BusError> {
        (**self).ping(id)
    }
    fn read(&mut self, id: u8, register: Register) -> Result<i32, BusError> {
        (**self).read(id, register)
    }
    fn write(&mut self, id: u8, register: Register, value: i32) -> Result<(), BusError> {
        (**self).write(id, register, value)
    }
    fn sync_read_state(&mut self, ids: &[u8], out: &mut [ServoState]) -> Result<(), BusError> {
        (**self).sync_read_state(ids, out)
    }
    fn sync_write(
        &mut self,
        ids: &[u8],
        register: Register,
        values: &[i32],
    ) -> Result<(), BusError> {
        (**self).sync_write(ids, register, values)
    }
    fn stats(&self) -> BusStats {
        (**self).stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: u8, encoding: Encoding) -> RegisterSpec {
        RegisterSpec {
            address: 0,
            size,
            encoding,
        }
    }

    #[test]
    fn encodings_round_trip_over_their_range_and_refuse_what_does_not_fit() {
        let cases = [
            (spec(1, Encoding::Unsigned), 0, 255),
            (spec(2, Encoding::Unsigned), 0, 65_535),
            (spec(2, Encoding::TwosComplement), -32_768, 32_767),
            (
                spec(2, Encoding::SignMagnitude { sign_bit: 15 }),
                -32_767,
                32_767,
            ),
            (
                spec(2, Encoding::SignMagnitude { sign_bit: 11 }),
                -2047,
                2047,
            ),
        ];
        for (s, lo, hi) in cases {
            for v in [lo, lo + 1, -1, 0, 1, 2047.min(hi), hi - 1, hi] {
                if v < lo || v > hi {
                    continue;
                }
                let b = s.encode(v).unwrap_or_else(|| panic!("{v} fits {s:?}"));
                assert_eq!(s.decode(&b[..usize::from(s.size)]), v, "{s:?}");
            }
            assert_eq!(s.encode(hi + 1), None, "{s:?}");
            if lo > i32::MIN {
                assert_eq!(s.encode(lo - 1), None, "{s:?}");
            }
        }
        let s4 = spec(4, Encoding::TwosComplement);
        for v in [i32::MIN, -1_000_000, -1, 0, 1, i32::MAX] {
            assert_eq!(s4.decode(&s4.encode(v).expect("fits")), v);
        }
        // Feetech's sign-magnitude: -5 is 0x8005 with bit 15.
        let fs = spec(2, Encoding::SignMagnitude { sign_bit: 15 });
        assert_eq!(fs.encode(-5).map(|b| [b[0], b[1]]), Some([0x05, 0x80]));
        assert_eq!(fs.decode(&[0x05, 0x80]), -5);
        // Dynamixel's two's complement: -5 is 0xFFFFFFFB.
        assert_eq!(s4.encode(-5), Some([0xFB, 0xFF, 0xFF, 0xFF]));
    }
}
