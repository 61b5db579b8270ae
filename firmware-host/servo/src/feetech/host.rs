//! The host side: [`FeetechBus`], a [`Bus`] over a serial port.

use super::packet::{self, BROADCAST_ID, PacketBuf, Scan};
use super::{FAMILY, STS3215_MODEL, address, error_meaning, instruction, spec};
use crate::bus::{Bus, BusError, BusStats, Family, MAX_SERVOS, Register, ServoState};
use serialport::{ClearBuffer, SerialPort};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Bytes kept of one reply (a SYNC_READ of [`MAX_SERVOS`] answers
/// 16 × 10 bytes; the rest is room for garbage before them).
const RX_CAPACITY: usize = 1024;

/// Bytes one SYNC_READ asks each servo for: present position and present
/// velocity, adjacent from address 56.
const STATE_BYTES: u8 = 4;

/// A Feetech STS/SCS bus on a serial port (a USB–serial adapter at
/// 1 Mbaud for the SO-100 / SO-101).
///
/// Every read transaction first drops stale input, so one late reply does
/// not shift every later one; each status packet must come within the
/// timeout of the one before (or of the instruction). Packets and replies
/// live in fixed buffers: `sync_read_state` and `sync_write` do not
/// allocate unless they fail.
pub struct FeetechBus {
    port: Box<dyn SerialPort>,
    name: String,
    timeout: Duration,
    tx: PacketBuf,
    rx: [u8; RX_CAPACITY],
    stats: BusStats,
}

impl std::fmt::Debug for FeetechBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeetechBus")
            .field("port", &self.name)
            .field("timeout", &self.timeout)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Where one reply's bytes stand: `rx[cursor..len]` not yet parsed;
/// `base` bytes of the reply were dropped from the front (offsets in
/// errors count them).
#[derive(Debug, Clone, Copy, Default)]
struct Rx {
    len: usize,
    cursor: usize,
    base: usize,
}

/// What the next status packet of a reply was.
enum Next {
    /// A good frame: id, error byte, and where its parameters lie in `rx`.
    Frame {
        id: u8,
        error: u8,
        params: (usize, usize),
        offset: usize,
    },
    /// A frame with a wrong checksum.
    BadChecksum {
        id: u8,
        received: u8,
        computed: u8,
        offset: usize,
    },
    /// A header with an impossible LENGTH.
    Malformed { id: u8, length: u8, offset: usize },
    /// Nothing whole before the deadline.
    Timeout,
}

impl FeetechBus {
    /// Open `path` at `baud` (1 000 000 for the STS3215 as shipped); every
    /// status packet must come within `timeout`.
    pub fn open(path: &str, baud: u32, timeout: Duration) -> Result<Self, BusError> {
        let port = serialport::new(path, baud)
            .timeout(timeout)
            .open()
            .map_err(|e| BusError::Io {
                port: path.to_string(),
                cause: e.into(),
            })?;
        Ok(Self::from_port(port, path, timeout))
    }

    /// A bus on an already open `port` (named `name` in errors).
    pub fn from_port(port: Box<dyn SerialPort>, name: &str, timeout: Duration) -> Self {
        Self {
            port,
            name: name.to_string(),
            timeout,
            tx: PacketBuf::new(),
            rx: [0; RX_CAPACITY],
            stats: BusStats::default(),
        }
    }

    /// How long each status packet may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Change how long each status packet may take.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn io(&self, source: std::io::Error) -> BusError {
        BusError::Io {
            port: self.name.clone(),
            cause: source,
        }
    }

    fn usage(message: String) -> BusError {
        BusError::Usage(format!("{FAMILY} bus: {message}"))
    }

    /// Send what `self.tx` holds.
    fn send(&mut self) -> Result<(), BusError> {
        let _ = self.port.set_timeout(self.timeout);
        let r = {
            let bytes = self.tx.as_bytes();
            self.port.write_all(bytes).and_then(|()| self.port.flush())
        };
        r.map_err(|e| self.io(e))?;
        self.stats.packets_sent += 1;
        Ok(())
    }

    /// Drop whatever the port holds (late replies to earlier instructions).
    fn flush_input(&mut self) -> Result<(), BusError> {
        self.port
            .clear(ClearBuffer::Input)
            .map_err(|e| self.io(e.into()))
    }

    /// Read the next status packet of the reply, waiting until `deadline`.
    fn next_status(&mut self, rx: &mut Rx, deadline: Instant) -> Result<Next, BusError> {
        loop {
            match packet::scan(&self.rx[rx.cursor..rx.len]) {
                Scan::Frame { start, end, frame } => {
                    let offset = rx.base + rx.cursor + start;
                    let p0 = rx.cursor + start + 5;
                    let next = Next::Frame {
                        id: frame.id,
                        error: frame.code,
                        params: (p0, p0 + frame.params.len()),
                        offset,
                    };
                    rx.cursor += end;
                    return Ok(next);
                }
                Scan::BadChecksum {
                    start,
                    end,
                    id,
                    received,
                    computed,
                } => {
                    let offset = rx.base + rx.cursor + start;
                    rx.cursor += end;
                    return Ok(Next::BadChecksum {
                        id,
                        received,
                        computed,
                        offset,
                    });
                }
                Scan::Malformed {
                    start,
                    end,
                    id,
                    length,
                } => {
                    let offset = rx.base + rx.cursor + start;
                    rx.cursor += end;
                    return Ok(Next::Malformed { id, length, offset });
                }
                Scan::Incomplete { skip } => rx.cursor += skip,
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Next::Timeout);
            }
            if rx.len == RX_CAPACITY {
                // Keep the unparsed tail; count what is dropped.
                self.rx.copy_within(rx.cursor..rx.len, 0);
                rx.base += rx.cursor;
                rx.len -= rx.cursor;
                rx.cursor = 0;
                if rx.len == RX_CAPACITY {
                    // A whole buffer that is not one frame: drop it.
                    rx.base += rx.len;
                    rx.len = 0;
                }
            }
            let _ = self.port.set_timeout(deadline - now);
            match self.port.read(&mut self.rx[rx.len..]) {
                Ok(n) => rx.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    fn timeout_error(&self, id: u8, code: u8, since: Instant) -> BusError {
        BusError::Timeout {
            family: FAMILY,
            id,
            instruction: instruction::name(code),
            waited_ms: since.elapsed().as_millis() as u64,
        }
    }

    fn checksum_error(id: u8, received: u8, computed: u8, offset: usize) -> BusError {
        BusError::Checksum {
            family: FAMILY,
            id,
            what: "checksum",
            received: u16::from(received),
            computed: u16::from(computed),
            offset,
        }
    }

    fn malformed(id: u8, message: String) -> BusError {
        BusError::Malformed {
            family: FAMILY,
            id,
            message,
        }
    }

    fn servo_error(id: u8, bits: u8) -> BusError {
        BusError::Servo {
            family: FAMILY,
            id,
            bits,
            meaning: error_meaning(bits),
        }
    }

    /// Send the instruction in `self.tx` to `id` and take its one status
    /// packet, which must carry `n_params` bytes; they land in the result.
    fn transact(&mut self, id: u8, code: u8, n_params: usize) -> Result<[u8; 4], BusError> {
        self.flush_input()?;
        self.send()?;
        let t0 = Instant::now();
        let mut rx = Rx::default();
        loop {
            match self.next_status(&mut rx, t0 + self.timeout)? {
                Next::Timeout => {
                    self.stats.timeouts += 1;
                    return Err(self.timeout_error(id, code, t0));
                }
                Next::BadChecksum {
                    id: got,
                    received,
                    computed,
                    offset,
                } => {
                    self.stats.corrupt += 1;
                    return Err(Self::checksum_error(got, received, computed, offset));
                }
                Next::Malformed {
                    id: got,
                    length,
                    offset,
                } => {
                    self.stats.corrupt += 1;
                    return Err(Self::malformed(
                        got,
                        format!("LENGTH {length} at byte {offset} of the reply"),
                    ));
                }
                // Another servo's packet (a late reply): not ours.
                Next::Frame { id: got, .. } if got != id => {
                    tracing::debug!(
                        expected = id,
                        got,
                        "feetech: skipped another servo's status"
                    );
                }
                Next::Frame {
                    error,
                    params: (p0, p1),
                    offset,
                    ..
                } => {
                    if p1 - p0 != n_params {
                        self.stats.corrupt += 1;
                        return Err(Self::malformed(
                            id,
                            format!(
                                "{} parameter bytes to {} (expected {n_params}) at byte {offset} of the reply",
                                p1 - p0,
                                instruction::name(code)
                            ),
                        ));
                    }
                    self.stats.status_received += 1;
                    if error != 0 {
                        self.stats.servo_errors += 1;
                        return Err(Self::servo_error(id, error));
                    }
                    let mut out = [0u8; 4];
                    out[..n_params].copy_from_slice(&self.rx[p0..p1]);
                    return Ok(out);
                }
            }
        }
    }

    fn check_id(id: u8) -> Result<(), BusError> {
        if id >= BROADCAST_ID {
            return Err(Self::usage(format!(
                "servo id {id} is not a servo's (0..=253)"
            )));
        }
        Ok(())
    }

    fn read_raw(&mut self, id: u8, addr: u16, n: u8) -> Result<[u8; 4], BusError> {
        Self::check_id(id)?;
        self.tx.start(id, instruction::READ);
        self.tx
            .push(&[addr as u8, n])
            .map_err(|e| Self::usage(e.to_string()))?;
        self.tx.finish();
        self.transact(id, instruction::READ, usize::from(n))
    }
}

impl Bus for FeetechBus {
    fn family(&self) -> Family {
        Family::Feetech
    }

    /// PING `id`, then READ its model number (777 for an STS3215).
    fn ping(&mut self, id: u8) -> Result<u16, BusError> {
        Self::check_id(id)?;
        self.tx.start(id, instruction::PING);
        self.tx.finish();
        self.transact(id, instruction::PING, 0)?;
        let b = self.read_raw(id, address::MODEL_NUMBER, 2)?;
        let model = u16::from_le_bytes([b[0], b[1]]);
        if model != STS3215_MODEL {
            tracing::debug!(id, model, "feetech: a servo other than an STS3215");
        }
        Ok(model)
    }

    fn read(&mut self, id: u8, register: Register) -> Result<i32, BusError> {
        let s = spec(register);
        let b = self.read_raw(id, s.address, s.size)?;
        Ok(s.decode(&b[..usize::from(s.size)]))
    }

    fn write(&mut self, id: u8, register: Register, value: i32) -> Result<(), BusError> {
        Self::check_id(id)?;
        let s = spec(register);
        let bytes = s.encode(value).ok_or(BusError::Range {
            family: FAMILY,
            id,
            register,
            value,
            size: s.size,
            encoding: s.encoding,
        })?;
        self.tx.start(id, instruction::WRITE);
        self.tx
            .push(&[s.address as u8])
            .and_then(|()| self.tx.push(&bytes[..usize::from(s.size)]))
            .map_err(|e| Self::usage(e.to_string()))?;
        self.tx.finish();
        self.transact(id, instruction::WRITE, 0).map(|_| ())
    }

    /// One SYNC_READ of 4 bytes from address 56 (present position, present
    /// velocity) for every id; one status packet per id, in order, each
    /// within the timeout. A missing packet is a [`BusError::Timeout`]
    /// (if a later servo's packet comes first, the missing one is known at
    /// once); the other packets are still read and counted, and the first
    /// error is returned.
    fn sync_read_state(&mut self, ids: &[u8], out: &mut [ServoState]) -> Result<(), BusError> {
        if ids.is_empty() || ids.len() > MAX_SERVOS || ids.len() != out.len() {
            return Err(Self::usage(format!(
                "SYNC_READ of {} ids into {} states (1..={MAX_SERVOS} ids, one state each)",
                ids.len(),
                out.len()
            )));
        }
        for &id in ids {
            Self::check_id(id)?;
        }
        let pos = spec(Register::PresentPosition);
        let vel = spec(Register::PresentVelocity);
        self.tx.start(BROADCAST_ID, instruction::SYNC_READ);
        self.tx
            .push(&[pos.address as u8, STATE_BYTES])
            .and_then(|()| self.tx.push(ids))
            .map_err(|e| Self::usage(e.to_string()))?;
        self.tx.finish();
        self.flush_input()?;
        // The round trip counts from the write; each packet's wait from
        // when the instruction is out.
        let t0 = Instant::now();
        self.send()?;
        let mut rx = Rx::default();
        let mut first_error: Option<BusError> = None;
        let mut slot = 0;
        let mut waiting_since = Instant::now();
        let mut complete = true;
        while slot < ids.len() {
            let next = self.next_status(&mut rx, waiting_since + self.timeout)?;
            let got = match next {
                Next::Timeout => {
                    // This one and every later one did not come.
                    self.stats.timeouts += (ids.len() - slot) as u64;
                    if first_error.is_none() {
                        first_error = Some(self.timeout_error(
                            ids[slot],
                            instruction::SYNC_READ,
                            waiting_since,
                        ));
                    }
                    complete = false;
                    break;
                }
                Next::Frame { id, .. }
                | Next::BadChecksum { id, .. }
                | Next::Malformed { id, .. } => id,
            };
            // Whose packet: this slot's, a later slot's (the ones between
            // are missing), or nobody's (a corrupt id, or a stale reply).
            let j = match ids[slot..].iter().position(|&i| i == got) {
                Some(k) => slot + k,
                None if matches!(next, Next::Frame { .. }) => {
                    tracing::debug!(got, "feetech: skipped a status packet nobody asked for");
                    continue;
                }
                None => slot,
            };
            if j > slot {
                self.stats.timeouts += (j - slot) as u64;
                if first_error.is_none() {
                    first_error =
                        Some(self.timeout_error(ids[slot], instruction::SYNC_READ, waiting_since));
                }
            }
            match next {
                Next::Frame {
                    id,
                    error,
                    params: (p0, p1),
                    offset,
                } => {
                    if p1 - p0 != usize::from(STATE_BYTES) {
                        self.stats.corrupt += 1;
                        if first_error.is_none() {
                            first_error = Some(Self::malformed(
                                id,
                                format!(
                                    "{} parameter bytes to SYNC_READ (expected {STATE_BYTES}) at byte {offset} of the reply",
                                    p1 - p0
                                ),
                            ));
                        }
                    } else {
                        self.stats.status_received += 1;
                        let b = &self.rx[p0..p1];
                        out[j] = ServoState {
                            position: pos.decode(&b[..2]),
                            velocity: vel.decode(&b[2..4]),
                        };
                        if error != 0 {
                            self.stats.servo_errors += 1;
                            if first_error.is_none() {
                                first_error = Some(Self::servo_error(id, error));
                            }
                        }
                    }
                }
                Next::BadChecksum {
                    id,
                    received,
                    computed,
                    offset,
                } => {
                    self.stats.corrupt += 1;
                    if first_error.is_none() {
                        first_error = Some(Self::checksum_error(id, received, computed, offset));
                    }
                }
                Next::Malformed { id, length, offset } => {
                    self.stats.corrupt += 1;
                    if first_error.is_none() {
                        first_error = Some(Self::malformed(
                            id,
                            format!("LENGTH {length} at byte {offset} of the reply"),
                        ));
                    }
                }
                Next::Timeout => {}
            }
            slot = j + 1;
            waiting_since = Instant::now();
        }
        if complete {
            let rt = t0.elapsed();
            self.stats.last_round_trip = rt;
            self.stats.max_round_trip = self.stats.max_round_trip.max(rt);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One SYNC_WRITE of `register` to every id (no reply).
    fn sync_write(
        &mut self,
        ids: &[u8],
        register: Register,
        values: &[i32],
    ) -> Result<(), BusError> {
        if ids.is_empty() || ids.len() > MAX_SERVOS || ids.len() != values.len() {
            return Err(Self::usage(format!(
                "SYNC_WRITE of {} values to {} ids (1..={MAX_SERVOS} ids, one value each)",
                values.len(),
                ids.len()
            )));
        }
        let s = spec(register);
        self.tx.start(BROADCAST_ID, instruction::SYNC_WRITE);
        self.tx
            .push(&[s.address as u8, s.size])
            .map_err(|e| Self::usage(e.to_string()))?;
        for (&id, &value) in ids.iter().zip(values) {
            Self::check_id(id)?;
            let bytes = s.encode(value).ok_or(BusError::Range {
                family: FAMILY,
                id,
                register,
                value,
                size: s.size,
                encoding: s.encoding,
            })?;
            self.tx
                .push(&[id])
                .and_then(|()| self.tx.push(&bytes[..usize::from(s.size)]))
                .map_err(|e| Self::usage(e.to_string()))?;
        }
        self.tx.finish();
        self.send()
    }

    fn stats(&self) -> BusStats {
        self.stats
    }
}
