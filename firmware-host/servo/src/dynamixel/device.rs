//! The servo side of Protocol 2.0, for the emulated bus: X-series servos
//! (XL330 / XL430) answering PING, READ, WRITE, SYNC_READ and SYNC_WRITE
//! from their control table, with [`BusFaults`] applied to their status
//! packets.
//!
//! The emulated control table holds Model Number(0), Firmware Version(6),
//! ID(7, read-only here), Homing Offset(20), Max/Min Position Limit(48/52),
//! Torque Enable(64), Hardware Error Status(70), Goal Position(116),
//! Present Velocity(128) and Present Position(132). Other addresses read as
//! 0 and writes to them are accepted and ignored (LED, operating mode,
//! profile…). As on the real servos: the EEPROM area (below 64) refuses
//! writes with torque on (access error), a goal outside the position
//! limits is refused (data limit error), a write that covers part of a
//! register is refused (data length error), read-only registers refuse
//! writes (access error). A refused SYNC_WRITE entry is ignored silently
//! (SYNC_WRITE has no status packet).
//!
//! Torque on drives toward the Goal Position register as it stands, as on
//! the real servos: a stale goal (or one written before the homing offset
//! changed) moves the horn, so the host must write the measured position
//! as the goal before it switches the torque on.
//!
//! Not emulated: an overload does not switch the torque off (a real X
//! servo's Shutdown(63) would): the tests check that the host does.

use super::packet::{
    BROADCAST_ID, InstructionParser, MAX_PACKET, PING, Parsed, READ, STATUS, SYNC_READ, SYNC_WRITE,
    WRITE, encode_packet,
};
use super::{ADDR_FIRMWARE_VERSION, ADDR_HARDWARE_ERROR_STATUS, ADDR_ID, ADDR_MODEL_NUMBER, spec};
use crate::bus::Register;
use crate::emulated::{BusFaults, EmuBusState, EmuServo, ServoDevice};
use std::sync::atomic::Ordering;

/// Firmware version the emulated servos answer to a PING (an assumption:
/// a recent X-series firmware).
pub const FIRMWARE_VERSION: u8 = 52;

/// Hardware Error Status(70)'s overload bit.
const HW_OVERLOAD: u8 = 0x20;
/// The status error byte's hardware alert bit.
const ALERT: u8 = 0x80;

const ERR_INSTRUCTION: u8 = 2;
const ERR_CRC: u8 = 3;
const ERR_DATA_RANGE: u8 = 4;
const ERR_DATA_LENGTH: u8 = 5;
const ERR_DATA_LIMIT: u8 = 6;
const ERR_ACCESS: u8 = 7;

/// Largest READ / SYNC_READ length the emulated servos answer.
const MAX_READ: usize = 256;

/// Homing Offset(20)'s range (±255 revolutions).
const HOMING_OFFSET_LIMIT: i32 = 1_044_479;

/// A register of the emulated control table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Model,
    Firmware,
    Id,
    HomingOffset,
    MaxLimit,
    MinLimit,
    Torque,
    HardwareError,
    Goal,
    PresentVelocity,
    PresentPosition,
}

/// (address, size, field, writable).
const TABLE: [(u16, u16, Field, bool); 11] = [
    (ADDR_MODEL_NUMBER, 2, Field::Model, false),
    (ADDR_FIRMWARE_VERSION, 1, Field::Firmware, false),
    (ADDR_ID, 1, Field::Id, false),
    (20, 4, Field::HomingOffset, true),
    (48, 4, Field::MaxLimit, true),
    (52, 4, Field::MinLimit, true),
    (64, 1, Field::Torque, true),
    (ADDR_HARDWARE_ERROR_STATUS, 1, Field::HardwareError, false),
    (116, 4, Field::Goal, true),
    (128, 4, Field::PresentVelocity, false),
    (132, 4, Field::PresentPosition, false),
];

/// First address of the RAM area; below it, EEPROM (torque must be off to
/// write).
const RAM_START: u16 = 64;

/// Emulated Dynamixel X-series servos for [`crate::emulated::EmuBus`].
#[derive(Debug, Default)]
pub struct DynamixelDevice {
    parser: InstructionParser,
}

impl DynamixelDevice {
    /// A device waiting for its first instruction packet.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Hardware Error Status(70) of `id` under `faults`.
fn hardware_error(id: u8, faults: &BusFaults) -> u8 {
    let overload = faults.overload_id.load(Ordering::Relaxed);
    if overload != 0 && overload == id {
        HW_OVERLOAD
    } else {
        0
    }
}

/// Present Velocity(128) counts (0.229 rev/min) of `ticks_per_s`.
fn velocity_counts(ticks_per_s: f32) -> i32 {
    let rpm = ticks_per_s * 60.0 / 4096.0;
    (rpm / super::VELOCITY_UNIT_RPM).round() as i32
}

fn field_value(servo: &EmuServo, field: Field, hw: u8) -> i32 {
    match field {
        Field::Model => i32::from(servo.model),
        Field::Firmware => i32::from(FIRMWARE_VERSION),
        Field::Id => i32::from(servo.id),
        Field::HomingOffset => servo.homing_offset,
        Field::MaxLimit => servo.max_limit,
        Field::MinLimit => servo.min_limit,
        Field::Torque => i32::from(servo.torque),
        Field::HardwareError => i32::from(hw),
        Field::Goal => servo.goal,
        Field::PresentVelocity => velocity_counts(servo.velocity),
        // Present Position = Actual Position + Homing Offset(20).
        Field::PresentPosition => {
            (servo.position.round() as i32).saturating_add(servo.homing_offset)
        }
    }
}

/// The control table's bytes from `address` into `out`.
fn read_table(servo: &EmuServo, hw: u8, address: u16, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let a = u32::from(address) + i as u32;
        *b = TABLE
            .iter()
            .find(|(fa, size, _, _)| a >= u32::from(*fa) && a < u32::from(*fa) + u32::from(*size))
            .map_or(0, |&(fa, _, field, _)| {
                let v = field_value(servo, field, hw) as u32;
                (v >> (8 * (a - u32::from(fa)))) as u8
            });
    }
}

/// Write `data` at `address` of `servo`: every register it touches is
/// checked first, then all are applied; the error number if refused.
fn write_table(servo: &mut EmuServo, address: u16, data: &[u8]) -> Result<(), u8> {
    let lo = u32::from(address);
    let hi = lo + data.len() as u32;
    let mut updates: [(Field, i32); TABLE.len()] = [(Field::Model, 0); TABLE.len()];
    let mut n = 0;
    for &(fa, size, field, writable) in &TABLE {
        let (fa32, fend) = (u32::from(fa), u32::from(fa) + u32::from(size));
        if fend <= lo || fa32 >= hi {
            continue;
        }
        if !writable {
            return Err(ERR_ACCESS);
        }
        if fa32 < lo || fend > hi {
            return Err(ERR_DATA_LENGTH);
        }
        if fa < RAM_START && servo.torque {
            return Err(ERR_ACCESS);
        }
        let off = (fa32 - lo) as usize;
        let bytes = &data[off..off + usize::from(size)];
        let value = match field {
            Field::Torque => i32::from(bytes[0]),
            _ => spec(Register::GoalPosition).decode(bytes),
        };
        updates[n] = (field, value);
        n += 1;
    }
    // The limits in force: the ones written in this same packet, if any.
    let limit = |f: Field, current: i32| {
        updates[..n]
            .iter()
            .find(|(uf, _)| *uf == f)
            .map_or(current, |&(_, v)| v)
    };
    let (min, max) = (
        limit(Field::MinLimit, servo.min_limit),
        limit(Field::MaxLimit, servo.max_limit),
    );
    for &(field, value) in &updates[..n] {
        match field {
            Field::Torque if !(0..=1).contains(&value) => return Err(ERR_DATA_RANGE),
            Field::HomingOffset if value.abs() > HOMING_OFFSET_LIMIT => {
                return Err(ERR_DATA_RANGE);
            }
            Field::Goal if value < min || value > max => return Err(ERR_DATA_LIMIT),
            _ => {}
        }
    }
    for &(field, value) in &updates[..n] {
        match field {
            Field::Torque => servo.torque = value == 1,
            Field::HomingOffset => servo.homing_offset = value,
            Field::MaxLimit => servo.max_limit = value,
            Field::MinLimit => servo.min_limit = value,
            Field::Goal => servo.goal = value,
            _ => {}
        }
    }
    Ok(())
}

/// Append `id`'s status packet to `reply`, with its alert bit and the
/// faults applied (dropped, corrupt CRC).
fn send_status(id: u8, error: u8, data: &[u8], faults: &BusFaults, reply: &mut Vec<u8>) {
    let error = if hardware_error(id, faults) != 0 {
        error | ALERT
    } else {
        error
    };
    if BusFaults::take(&faults.drop_status) {
        return;
    }
    let mut buf = [0u8; MAX_PACKET];
    let Ok(n) = encode_packet(id, STATUS, &[&[error], data], &mut buf) else {
        return;
    };
    if BusFaults::take(&faults.corrupt_status) {
        buf[n - 1] ^= 0x5A;
    }
    reply.extend_from_slice(&buf[..n]);
}

fn address_length(p: &[u8]) -> Option<(u16, usize)> {
    match p {
        [a0, a1, l0, l1, ..] => Some((
            u16::from_le_bytes([*a0, *a1]),
            usize::from(u16::from_le_bytes([*l0, *l1])),
        )),
        _ => None,
    }
}

impl DynamixelDevice {
    fn handle(
        id: u8,
        instruction: u8,
        p: &[u8],
        bus: &mut EmuBusState,
        faults: &BusFaults,
        reply: &mut Vec<u8>,
    ) {
        let broadcast = id == BROADCAST_ID;
        let exists = bus.servo(id).is_some();
        match instruction {
            PING => {
                // A broadcast PING is answered by every servo, in order.
                for s in bus.servos.iter().filter(|s| broadcast || s.id == id) {
                    let [lo, hi] = s.model.to_le_bytes();
                    send_status(s.id, 0, &[lo, hi, FIRMWARE_VERSION], faults, reply);
                }
            }
            READ if !broadcast && exists => {
                let mut data = [0u8; MAX_READ];
                match address_length(p) {
                    Some((address, len)) if p.len() == 4 && len <= MAX_READ => {
                        if let Some(s) = bus.servo(id) {
                            read_table(s, hardware_error(id, faults), address, &mut data[..len]);
                        }
                        send_status(id, 0, &data[..len], faults, reply);
                    }
                    _ => send_status(id, ERR_DATA_LENGTH, &[], faults, reply),
                }
            }
            WRITE if p.len() >= 2 => {
                let address = u16::from_le_bytes([p[0], p[1]]);
                for s in bus.servos.iter_mut().filter(|s| broadcast || s.id == id) {
                    let error = write_table(s, address, &p[2..]).err().unwrap_or(0);
                    if !broadcast {
                        send_status(s.id, error, &[], faults, reply);
                    }
                }
            }
            SYNC_READ => {
                let Some((address, len)) = address_length(p) else {
                    return;
                };
                if len > MAX_READ {
                    return;
                }
                let mut data = [0u8; MAX_READ];
                // One status per listed servo, in the order listed.
                for &sid in &p[4..] {
                    if let Some(s) = bus.servo(sid) {
                        read_table(s, hardware_error(sid, faults), address, &mut data[..len]);
                        send_status(sid, 0, &data[..len], faults, reply);
                    }
                }
            }
            SYNC_WRITE => {
                let Some((address, len)) = address_length(p) else {
                    return;
                };
                let body = &p[4..];
                if len == 0 || !body.len().is_multiple_of(len + 1) {
                    bus.bad_packets += 1;
                    return;
                }
                let goal = spec(Register::GoalPosition);
                let mut goals = Vec::new();
                for chunk in body.chunks_exact(len + 1) {
                    let (sid, data) = (chunk[0], &chunk[1..]);
                    if address == goal.address && len == usize::from(goal.size) {
                        goals.push((sid, goal.decode(data)));
                    }
                    if let Some(s) = bus.servo_mut(sid) {
                        let _ = write_table(s, address, data);
                    }
                }
                if !goals.is_empty() {
                    bus.goal_writes.push(goals);
                }
            }
            READ | WRITE => {
                // READ/WRITE to broadcast or to no servo here: no status.
                if exists && !broadcast {
                    send_status(id, ERR_DATA_LENGTH, &[], faults, reply);
                }
            }
            _ => {
                if exists && !broadcast {
                    send_status(id, ERR_INSTRUCTION, &[], faults, reply);
                }
            }
        }
    }
}

impl ServoDevice for DynamixelDevice {
    fn feed(&mut self, byte: u8, bus: &mut EmuBusState, faults: &BusFaults, reply: &mut Vec<u8>) {
        match self.parser.feed(byte) {
            None => {}
            Some(Parsed::Instruction(i)) => {
                bus.packets += 1;
                Self::handle(i.id, i.instruction, i.params(), bus, faults, reply);
            }
            Some(Parsed::BadCrc { id }) => {
                bus.bad_packets += 1;
                // A servo answers a damaged packet for it with CRC error.
                if id != BROADCAST_ID && bus.servo(id).is_some() {
                    send_status(id, ERR_CRC, &[], faults, reply);
                }
            }
            Some(Parsed::Malformed { .. }) => bus.bad_packets += 1,
        }
    }

    /// Present = Actual + Homing Offset, so the horn goes to goal − offset.
    fn goal_actual(&self, servo: &EmuServo) -> f32 {
        (i64::from(servo.goal) - i64::from(servo.homing_offset)) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamixel::packet::{Scan, scan_status};

    fn servo(id: u8) -> EmuServo {
        EmuServo::new(id, super::super::MODEL_XL330_M288, 1000.0)
    }

    fn send(
        dev: &mut DynamixelDevice,
        bus: &mut EmuBusState,
        faults: &BusFaults,
        id: u8,
        instruction: u8,
        params: &[u8],
    ) -> Vec<u8> {
        let mut buf = [0u8; MAX_PACKET];
        let n = encode_packet(id, instruction, &[params], &mut buf).expect("fits");
        let mut reply = Vec::new();
        for &b in &buf[..n] {
            dev.feed(b, bus, faults, &mut reply);
        }
        reply
    }

    fn statuses(mut bytes: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Scan::Status { end, status, .. } = scan_status(bytes) {
            out.push((status.id, status.error, status.params().to_vec()));
            bytes = &bytes[end..];
        }
        out
    }

    /// The e-Manual's SYNC_WRITE and SYNC_READ examples, byte for byte:
    /// the device takes the published instruction and answers with the
    /// published status packets.
    #[test]
    fn the_device_answers_the_published_sync_examples_byte_for_byte() {
        let mut dev = DynamixelDevice::new();
        let faults = BusFaults::default();
        let mut bus = EmuBusState {
            servos: vec![
                EmuServo::new(1, 1030, 166.0),
                EmuServo::new(2, 1030, 2079.0),
            ],
            ..EmuBusState::default()
        };
        let sync_write = [
            0xFF, 0xFF, 0xFD, 0x00, 0xFE, 0x11, 0x00, 0x83, 0x74, 0x00, 0x04, 0x00, 0x01, 0x96,
            0x00, 0x00, 0x00, 0x02, 0xAA, 0x00, 0x00, 0x00, 0x82, 0x87,
        ];
        let sync_read = [
            0xFF, 0xFF, 0xFD, 0x00, 0xFE, 0x09, 0x00, 0x82, 0x84, 0x00, 0x04, 0x00, 0x01, 0x02,
            0xCE, 0xFA,
        ];
        let mut reply = Vec::new();
        for b in sync_write.into_iter().chain(sync_read) {
            dev.feed(b, &mut bus, &faults, &mut reply);
        }
        assert_eq!(bus.goal_writes, vec![vec![(1, 150), (2, 170)]]);
        assert_eq!(bus.servo(2).map(|s| s.goal), Some(170));
        assert_eq!(
            reply,
            [
                0xFF, 0xFF, 0xFD, 0x00, 0x01, 0x08, 0x00, 0x55, 0x00, 0xA6, 0x00, 0x00, 0x00, 0x8C,
                0xC0, 0xFF, 0xFF, 0xFD, 0x00, 0x02, 0x08, 0x00, 0x55, 0x00, 0x1F, 0x08, 0x00, 0x00,
                0xBA, 0xBE
            ]
        );
        assert_eq!((bus.packets, bus.bad_packets), (2, 0));
    }

    #[test]
    fn the_control_table_reads_writes_and_refuses_like_an_x_servo() {
        let mut dev = DynamixelDevice::new();
        let faults = BusFaults::default();
        let mut bus = EmuBusState {
            servos: vec![servo(1), servo(2)],
            ..EmuBusState::default()
        };
        // Homing offset with torque off: accepted; present = actual + offset.
        let r = send(
            &mut dev,
            &mut bus,
            &faults,
            1,
            WRITE,
            &[20, 0, 0x18, 0xFC, 0xFF, 0xFF],
        );
        assert_eq!(statuses(&r), [(1, 0, vec![])]);
        assert_eq!(bus.servo(1).map(|s| s.homing_offset), Some(-1000));
        let r = send(&mut dev, &mut bus, &faults, 1, READ, &[132, 0, 4, 0]);
        assert_eq!(statuses(&r), [(1, 0, vec![0, 0, 0, 0])]);
        // Torque on, then the EEPROM refuses writes.
        send(&mut dev, &mut bus, &faults, 1, WRITE, &[64, 0, 1]);
        assert_eq!(bus.servo(1).map(|s| s.torque), Some(true));
        let r = send(&mut dev, &mut bus, &faults, 1, WRITE, &[20, 0, 0, 0, 0, 0]);
        assert_eq!(statuses(&r), [(1, ERR_ACCESS, vec![])]);
        // Half a register, a read-only register, a goal beyond the limits.
        let r = send(&mut dev, &mut bus, &faults, 1, WRITE, &[116, 0, 1, 2]);
        assert_eq!(statuses(&r), [(1, ERR_DATA_LENGTH, vec![])]);
        let r = send(&mut dev, &mut bus, &faults, 1, WRITE, &[132, 0, 0, 0, 0, 0]);
        assert_eq!(statuses(&r), [(1, ERR_ACCESS, vec![])]);
        let r = send(
            &mut dev,
            &mut bus,
            &faults,
            1,
            WRITE,
            &[116, 0, 0, 0x10, 0, 0],
        );
        assert_eq!(statuses(&r), [(1, ERR_DATA_LIMIT, vec![])]);
        // The goal is in the present frame; the horn's is goal - offset.
        send(
            &mut dev,
            &mut bus,
            &faults,
            1,
            WRITE,
            &[116, 0, 0xD0, 0x07, 0, 0],
        );
        let s1 = bus.servo(1).cloned().expect("servo 1");
        assert_eq!(s1.goal, 2000);
        assert_eq!(dev.goal_actual(&s1), 3000.0);
        // Broadcast PING: both, in order, with model and firmware.
        let r = send(&mut dev, &mut bus, &faults, BROADCAST_ID, PING, &[]);
        assert_eq!(
            statuses(&r),
            [
                (1, 0, vec![0xB0, 0x04, FIRMWARE_VERSION]),
                (2, 0, vec![0xB0, 0x04, FIRMWARE_VERSION])
            ]
        );
        // No status to an unknown id or to a broadcast READ; an unknown
        // instruction is refused.
        assert!(send(&mut dev, &mut bus, &faults, 9, PING, &[]).is_empty());
        assert!(
            send(
                &mut dev,
                &mut bus,
                &faults,
                BROADCAST_ID,
                READ,
                &[132, 0, 4, 0]
            )
            .is_empty()
        );
        let r = send(&mut dev, &mut bus, &faults, 2, 0x40, &[]);
        assert_eq!(statuses(&r), [(2, ERR_INSTRUCTION, vec![])]);
        assert_eq!(bus.packets, 12);
    }
}
