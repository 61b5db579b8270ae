//! The servos' side, for the emulated bus: [`FeetechDevice`].

use super::packet::{self, BROADCAST_ID, MAX_PACKET, PacketBuf, Scan};
use super::{ERR_OVERLOAD, address, instruction, spec};
use crate::bus::{Register, RegisterSpec};
use crate::emulated::{BusFaults, EmuBusState, EmuServo, ServoDevice};
use std::sync::atomic::Ordering;

/// Size of the emulated control table.
const TABLE: usize = 256;

/// Received bytes kept while a frame is incomplete.
const RX_CAPACITY: usize = 2 * MAX_PACKET;

/// Emulated STS3215s: parse the host's instruction packets byte by byte
/// (skipping garbage up to the next `FF FF` header; a frame with a bad
/// checksum or an impossible LENGTH is counted in
/// [`EmuBusState::bad_packets`] and dropped) and answer PING, READ, WRITE,
/// SYNC_READ (one status per listed servo, in the listed order) and
/// SYNC_WRITE (no reply; goal positions are recorded in
/// [`EmuBusState::goal_writes`]).
///
/// Registers are a view of [`EmuServo`]: the present position is
/// `round(position) − homing_offset` (the family's convention, unwrapped,
/// so it can be negative), the present velocity is `round(velocity)` steps
/// per second (the phase register reads `0x1C`, as on an STS3215: 1 step/s
/// units, full-angle feedback), and a goal `g` drives the horn toward
/// `g + homing_offset`. [`BusFaults`] apply to status packets: dropped,
/// sent with a wrong checksum, or with the overload bit for `overload_id`.
#[derive(Debug)]
pub struct FeetechDevice {
    rx: [u8; RX_CAPACITY],
    rx_len: usize,
    tx: PacketBuf,
}

impl Default for FeetechDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl FeetechDevice {
    /// A device with nothing received yet.
    pub fn new() -> Self {
        Self {
            rx: [0; RX_CAPACITY],
            rx_len: 0,
            tx: PacketBuf::new(),
        }
    }

    /// An emulated STS3215 (model 777) with `id` at `position` ticks.
    pub fn sts3215(id: u8, position: f32) -> EmuServo {
        EmuServo::new(id, super::STS3215_MODEL, position)
    }
}

fn put(table: &mut [u8; TABLE], s: RegisterSpec, value: i32) {
    // Clamp into the register's range so a far-off emulated value still
    // reads as the nearest one the servo could report.
    let limit = match s.encoding {
        crate::bus::Encoding::SignMagnitude { sign_bit } => (1i32 << sign_bit) - 1,
        _ => (1i32 << (8 * u32::from(s.size))) - 1,
    };
    let low = match s.encoding {
        crate::bus::Encoding::Unsigned => 0,
        _ => -limit,
    };
    if let Some(b) = s.encode(value.clamp(low, limit)) {
        let a = usize::from(s.address);
        let n = usize::from(s.size);
        table[a..a + n].copy_from_slice(&b[..n]);
    }
}

fn get(table: &[u8; TABLE], s: RegisterSpec) -> i32 {
    let a = usize::from(s.address);
    s.decode(&table[a..a + usize::from(s.size)])
}

/// The servo's control table as the host sees it.
fn table(servo: &EmuServo) -> [u8; TABLE] {
    let mut t = [0u8; TABLE];
    t[usize::from(address::FIRMWARE)] = 3;
    t[usize::from(address::FIRMWARE) + 1] = 10;
    let m = servo.model.to_le_bytes();
    let a = usize::from(address::MODEL_NUMBER);
    t[a..a + 2].copy_from_slice(&m);
    t[usize::from(address::ID)] = servo.id;
    t[usize::from(address::BAUD_RATE)] = 0;
    t[usize::from(address::PHASE)] = 0x1C;
    put(&mut t, spec(Register::MinPositionLimit), servo.min_limit);
    put(&mut t, spec(Register::MaxPositionLimit), servo.max_limit);
    put(&mut t, spec(Register::HomingOffset), servo.homing_offset);
    put(
        &mut t,
        spec(Register::TorqueEnable),
        i32::from(servo.torque),
    );
    put(&mut t, spec(Register::GoalPosition), servo.goal);
    let present = servo.position.round() as i32 - servo.homing_offset;
    put(&mut t, spec(Register::PresentPosition), present);
    put(
        &mut t,
        spec(Register::PresentVelocity),
        servo.velocity.round() as i32,
    );
    t[usize::from(address::PRESENT_VOLTAGE)] = 120;
    t[usize::from(address::PRESENT_TEMPERATURE)] = 30;
    t[usize::from(address::MOVING)] = u8::from(servo.velocity.abs() > 0.5);
    t
}

/// Apply a WRITE of `data` at `addr` to the registers the emulator models
/// (the others, read-only ones included, are ignored).
fn write(servo: &mut EmuServo, addr: usize, data: &[u8]) {
    let mut t = table(servo);
    let end = (addr + data.len()).min(TABLE);
    if addr >= end {
        return;
    }
    t[addr..end].copy_from_slice(&data[..end - addr]);
    let touched = |r: Register| {
        let s = spec(r);
        let a = usize::from(s.address);
        a < end && addr < a + usize::from(s.size)
    };
    if touched(Register::TorqueEnable) {
        servo.torque = get(&t, spec(Register::TorqueEnable)) != 0;
    }
    if touched(Register::GoalPosition) {
        servo.goal = get(&t, spec(Register::GoalPosition));
    }
    if touched(Register::HomingOffset) {
        servo.homing_offset = get(&t, spec(Register::HomingOffset));
    }
    if touched(Register::MinPositionLimit) {
        servo.min_limit = get(&t, spec(Register::MinPositionLimit));
    }
    if touched(Register::MaxPositionLimit) {
        servo.max_limit = get(&t, spec(Register::MaxPositionLimit));
    }
}

/// Append a status packet from `id` to `reply`, as the faults say.
fn status(tx: &mut PacketBuf, id: u8, params: &[u8], faults: &BusFaults, reply: &mut Vec<u8>) {
    if BusFaults::take(&faults.drop_status) {
        return;
    }
    let overload = faults.overload_id.load(Ordering::Relaxed);
    let error = if overload != 0 && overload == id {
        ERR_OVERLOAD
    } else {
        0
    };
    let Ok(bytes) = tx.frame(id, error, params) else {
        return;
    };
    reply.extend_from_slice(bytes);
    if BusFaults::take(&faults.corrupt_status)
        && let Some(c) = reply.last_mut()
    {
        *c ^= 0x5A;
    }
}

/// Apply one instruction frame.
fn handle(
    tx: &mut PacketBuf,
    id: u8,
    code: u8,
    params: &[u8],
    bus: &mut EmuBusState,
    faults: &BusFaults,
    reply: &mut Vec<u8>,
) -> bool {
    match code {
        instruction::PING if id != BROADCAST_ID && params.is_empty() => {
            if bus.servo(id).is_some() {
                status(tx, id, &[], faults, reply);
            }
            true
        }
        instruction::READ if id != BROADCAST_ID && params.len() == 2 => {
            let (addr, n) = (usize::from(params[0]), usize::from(params[1]));
            if let Some(s) = bus.servo(id) {
                let t = table(s);
                let end = (addr + n).min(TABLE);
                status(tx, id, &t[addr.min(end)..end], faults, reply);
            }
            true
        }
        instruction::WRITE if params.len() >= 2 => {
            let addr = usize::from(params[0]);
            if id == BROADCAST_ID {
                for s in bus.servos.iter_mut() {
                    write(s, addr, &params[1..]);
                }
            } else if let Some(s) = bus.servo_mut(id) {
                write(s, addr, &params[1..]);
                status(tx, id, &[], faults, reply);
            }
            true
        }
        instruction::SYNC_READ if id == BROADCAST_ID && params.len() >= 2 => {
            let (addr, n) = (usize::from(params[0]), usize::from(params[1]));
            for &target in &params[2..] {
                if let Some(s) = bus.servo(target) {
                    let t = table(s);
                    let end = (addr + n).min(TABLE);
                    status(tx, target, &t[addr.min(end)..end], faults, reply);
                }
            }
            true
        }
        instruction::SYNC_WRITE if id == BROADCAST_ID && params.len() >= 2 => {
            let (addr, n) = (usize::from(params[0]), usize::from(params[1]));
            let groups = &params[2..];
            if n == 0 || !groups.len().is_multiple_of(n + 1) {
                return false;
            }
            let goal = spec(Register::GoalPosition);
            let g = usize::from(goal.address);
            let carries_goal = addr <= g && g + usize::from(goal.size) <= addr + n;
            let mut goals = Vec::new();
            for group in groups.chunks_exact(n + 1) {
                let (target, data) = (group[0], &group[1..]);
                if let Some(s) = bus.servo_mut(target) {
                    write(s, addr, data);
                }
                if carries_goal {
                    let at = g - addr;
                    goals.push((target, goal.decode(&data[at..at + usize::from(goal.size)])));
                }
            }
            if carries_goal {
                bus.goal_writes.push(goals);
            }
            true
        }
        _ => false,
    }
}

impl ServoDevice for FeetechDevice {
    fn feed(&mut self, byte: u8, bus: &mut EmuBusState, faults: &BusFaults, reply: &mut Vec<u8>) {
        if self.rx_len == RX_CAPACITY {
            // Cannot happen with a frame of at most MAX_PACKET bytes after
            // garbage is dropped; start over rather than overflow.
            self.rx_len = 0;
            bus.bad_packets += 1;
        }
        self.rx[self.rx_len] = byte;
        self.rx_len += 1;
        loop {
            let consumed = match packet::scan(&self.rx[..self.rx_len]) {
                Scan::Incomplete { skip } => {
                    self.rx.copy_within(skip..self.rx_len, 0);
                    self.rx_len -= skip;
                    return;
                }
                Scan::Frame { end, frame, .. } => {
                    if handle(
                        &mut self.tx,
                        frame.id,
                        frame.code,
                        frame.params,
                        bus,
                        faults,
                        reply,
                    ) {
                        bus.packets += 1;
                    } else {
                        bus.bad_packets += 1;
                    }
                    end
                }
                Scan::BadChecksum { end, .. } | Scan::Malformed { end, .. } => {
                    bus.bad_packets += 1;
                    end
                }
            };
            self.rx.copy_within(consumed..self.rx_len, 0);
            self.rx_len -= consumed;
        }
    }

    fn goal_actual(&self, servo: &EmuServo) -> f32 {
        (servo.goal + servo.homing_offset) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(d: &mut FeetechDevice, bus: &mut EmuBusState, bytes: &[u8]) -> Vec<u8> {
        let faults = BusFaults::default();
        let mut reply = Vec::new();
        for &b in bytes {
            d.feed(b, bus, &faults, &mut reply);
        }
        reply
    }

    fn one_servo() -> EmuBusState {
        EmuBusState {
            servos: vec![FeetechDevice::sts3215(1, 100.0)],
            ..EmuBusState::default()
        }
    }

    #[test]
    fn a_ping_after_garbage_gets_the_empty_status() {
        let mut d = FeetechDevice::new();
        let mut bus = one_servo();
        let reply = feed_all(
            &mut d,
            &mut bus,
            &[0x00, 0xFF, 0x12, 0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFB],
        );
        assert_eq!(reply, [0xFF, 0xFF, 0x01, 0x02, 0x00, 0xFC]);
        assert_eq!((bus.packets, bus.bad_packets), (1, 0));
    }

    #[test]
    fn a_bad_checksum_is_refused_and_the_next_packet_still_heard() {
        let mut d = FeetechDevice::new();
        let mut bus = one_servo();
        let reply = feed_all(
            &mut d,
            &mut bus,
            &[
                0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFA, 0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFB,
            ],
        );
        assert_eq!(reply, [0xFF, 0xFF, 0x01, 0x02, 0x00, 0xFC]);
        assert_eq!((bus.packets, bus.bad_packets), (1, 1));
    }

    #[test]
    fn present_is_actual_minus_the_homing_offset_and_goals_shift_back() {
        let mut s = FeetechDevice::sts3215(1, 100.0);
        s.homing_offset = 300;
        s.velocity = -12.4;
        s.goal = -50;
        let t = table(&s);
        // 100 − 300 = −200: sign-magnitude 0x80C8; −12 = 0x800C.
        assert_eq!(&t[56..60], &[0xC8, 0x80, 0x0C, 0x80]);
        assert_eq!(get(&t, spec(Register::PresentPosition)), -200);
        assert_eq!(FeetechDevice::new().goal_actual(&s), 250.0);
        // Model 777 little-endian at 3.
        assert_eq!(&t[3..5], &[0x09, 0x03]);
    }

    #[test]
    fn a_one_byte_write_changes_only_what_it_covers() {
        let mut s = FeetechDevice::sts3215(1, 0.0);
        s.goal = 0x0123;
        write(&mut s, 42, &[0x45]);
        assert_eq!(s.goal, 0x0145);
        assert!(!s.torque);
        write(&mut s, 40, &[1]);
        assert!(s.torque);
        // Read-only present position: ignored.
        write(&mut s, 56, &[9, 9]);
        assert_eq!(s.position, 0.0);
    }
}
