//! The host side: [`DynamixelBus`], a [`Bus`] over a serial port.

use super::packet::{
    BROADCAST_ID, MAX_PACKET, PING, READ, SYNC_READ, SYNC_WRITE, Scan, Status, WRITE,
    encode_packet, scan_status,
};
use super::{ADDR_HARDWARE_ERROR_STATUS, FAMILY, error_meaning, spec};
use crate::bus::{Bus, BusError, BusStats, Family, MAX_SERVOS, Register, ServoState};
use serialport::SerialPort;
use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

/// Bytes read and not yet parsed: every status of a SYNC_READ of
/// [`MAX_SERVOS`] servos (19 bytes each, more if stuffed) and some garbage.
const RX: usize = 2048;

/// Address of the SYNC_READ per tick: Present Velocity(128) then Present
/// Position(132), 8 bytes.
const STATE_ADDRESS: u16 = 128;
const STATE_LEN: u16 = 8;

/// Dynamixel Protocol 2.0 over a serial port (a U2D2 or any USB–TTL
/// adapter). `sync_read_state` and `sync_write` allocate nothing: packets
/// are built in and parsed from fixed buffers (only an error's message
/// allocates).
///
/// - Every transaction that expects status packets first drops stale input
///   (the port's and this bus's buffer).
/// - `sync_read_state` sends one SYNC_READ of Present Velocity(128) and
///   Present Position(132) and waits, within the timeout, for one status
///   per id, in order. It waits for all of them even after a fault, so no
///   late reply is taken for the next tick's, and reports the first fault;
///   every good status still lands in `out`. A status packet of a later id
///   means the ones before it are missing (a timeout each, without waiting
///   out the clock).
/// - Any error bit is a [`BusError::Servo`] (the hardware alert included:
///   a real X servo has switched its torque off); on the alert the bus
///   reads Hardware Error Status(70) to say why. With the alert bit alone
///   the data of a SYNC_READ or READ is good and is kept.
/// - `write` to [`BROADCAST_ID`] expects no status.
/// - [`BusStats::last_round_trip`]: from before the SYNC_READ is written to
///   the last status parsed (or the fault).
pub struct DynamixelBus {
    port: Box<dyn SerialPort>,
    path: String,
    timeout: Duration,
    stats: BusStats,
    tx: [u8; MAX_PACKET],
    rx: [u8; RX],
    rx_len: usize,
    /// Offset of `rx[0]` in what was read since the transaction began.
    rx_base: usize,
}

impl std::fmt::Debug for DynamixelBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamixelBus")
            .field("path", &self.path)
            .field("timeout", &self.timeout)
            .field("stats", &self.stats)
            .finish()
    }
}

/// The first fault of a SYNC_READ's reply.
enum Fault {
    None,
    Error(BusError),
    /// A status with error bits: described once the reply is complete.
    Servo(u8, u8),
}

impl Fault {
    fn note(&mut self, e: BusError) {
        if matches!(self, Fault::None) {
            *self = Fault::Error(e);
        }
    }
}

/// One status packet's outcome while a transaction waits for it.
enum Next {
    Status(Status),
    BadCrc {
        id: u8,
        received: u16,
        computed: u16,
        offset: usize,
    },
    TimedOut,
}

impl DynamixelBus {
    /// Open `path` at `baud` (Koch v1.1: 1 000 000); each transaction waits
    /// at most `timeout` for its status packets.
    pub fn open(path: &str, baud: u32, timeout: Duration) -> Result<Self, BusError> {
        let port = serialport::new(path, baud)
            .timeout(timeout)
            .open()
            .map_err(|e| BusError::Io {
                port: path.into(),
                cause: e.into(),
            })?;
        Ok(Self::from_port(port, path, timeout))
    }

    /// Speak on an already open `port` (named `path` in errors).
    pub fn from_port(port: Box<dyn SerialPort>, path: &str, timeout: Duration) -> Self {
        Self {
            port,
            path: path.into(),
            timeout,
            stats: BusStats::default(),
            tx: [0; MAX_PACKET],
            rx: [0; RX],
            rx_len: 0,
            rx_base: 0,
        }
    }

    /// How long a transaction waits for its status packets.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Change how long a transaction waits for its status packets.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn io(&self, source: std::io::Error) -> BusError {
        BusError::Io {
            port: self.path.clone(),
            cause: source,
        }
    }

    fn usage(message: String) -> BusError {
        BusError::Usage(message)
    }

    /// Build and send one instruction packet; for a transaction with
    /// status packets, drop stale input first.
    fn send(
        &mut self,
        id: u8,
        instruction: u8,
        parts: &[&[u8]],
        expect_reply: bool,
    ) -> Result<(), BusError> {
        let n = encode_packet(id, instruction, parts, &mut self.tx)
            .map_err(|e| Self::usage(format!("{FAMILY} servo {id}: {e}")))?;
        if expect_reply {
            // Stale bytes (a late status of an earlier transaction, line
            // noise) must not be taken for this one's reply.
            let _ = self.port.clear(serialport::ClearBuffer::Input);
            self.rx_len = 0;
            self.rx_base = 0;
        }
        let written = self
            .port
            .write_all(&self.tx[..n])
            .and_then(|()| self.port.flush());
        if let Err(e) = written {
            return Err(self.io(e));
        }
        self.stats.packets_sent += 1;
        Ok(())
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.rx_len);
        self.rx.copy_within(n..self.rx_len, 0);
        self.rx_len -= n;
        self.rx_base += n;
    }

    /// The next packet of the reply (status or bad CRC), or a timeout at
    /// `deadline`. Garbage and packets that are not status packets are
    /// skipped.
    fn next_packet(&mut self, deadline: Instant) -> Result<Next, BusError> {
        loop {
            match scan_status(&self.rx[..self.rx_len]) {
                Scan::Status { end, status, .. } => {
                    self.consume(end);
                    return Ok(Next::Status(status));
                }
                Scan::BadCrc {
                    start,
                    end,
                    id,
                    received,
                    computed,
                } => {
                    let offset = self.rx_base + start;
                    self.consume(end);
                    return Ok(Next::BadCrc {
                        id,
                        received,
                        computed,
                        offset,
                    });
                }
                Scan::Other { end, .. } => {
                    self.consume(end);
                    continue;
                }
                Scan::Incomplete { keep_from } => {
                    self.consume(keep_from);
                    if self.rx_len == RX {
                        // Cannot happen (MAX_PACKET < RX); drop it all.
                        self.consume(RX);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Next::TimedOut);
            }
            // Reading with a timeout allocates only when it times out (the
            // error); a reply arriving wakes the read.
            let _ = self.port.set_timeout(deadline - now);
            match self.port.read(&mut self.rx[self.rx_len..]) {
                Ok(n) => self.rx_len += n,
                Err(e) if e.kind() == ErrorKind::TimedOut => return Ok(Next::TimedOut),
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    fn timeout_error(&mut self, id: u8, instruction: &'static str) -> BusError {
        self.stats.timeouts += 1;
        BusError::Timeout {
            family: FAMILY,
            id,
            instruction,
            waited_ms: self.timeout.as_millis() as u64,
        }
    }

    fn checksum_error(&mut self, id: u8, received: u16, computed: u16, offset: usize) -> BusError {
        self.stats.corrupt += 1;
        BusError::Checksum {
            family: FAMILY,
            id,
            what: "CRC",
            received,
            computed,
            offset,
        }
    }

    /// Wait for `id`'s status to a unicast instruction; statuses of other
    /// servos (late replies) are skipped.
    fn unicast_status(
        &mut self,
        id: u8,
        instruction: &'static str,
        start: Instant,
    ) -> Result<Status, BusError> {
        let deadline = start + self.timeout;
        loop {
            match self.next_packet(deadline)? {
                Next::Status(s) if s.id == id => {
                    self.stats.status_received += 1;
                    return Ok(s);
                }
                Next::Status(_) => continue,
                Next::BadCrc {
                    id: got,
                    received,
                    computed,
                    offset,
                } => return Err(self.checksum_error(got, received, computed, offset)),
                Next::TimedOut => return Err(self.timeout_error(id, instruction)),
            }
        }
    }

    /// Read `len` bytes at `address` of `id` into `out`; the status error
    /// byte is returned, not judged.
    fn read_raw(&mut self, id: u8, address: u16, out: &mut [u8]) -> Result<u8, BusError> {
        let len = out.len() as u16;
        let [a0, a1] = address.to_le_bytes();
        let [l0, l1] = len.to_le_bytes();
        let start = Instant::now();
        self.send(id, READ, &[&[a0, a1, l0, l1]], true)?;
        let status = self.unicast_status(id, "READ", start)?;
        if status.params().len() != out.len() && status.error & 0x7F == 0 {
            self.stats.corrupt += 1;
            return Err(BusError::Malformed {
                family: FAMILY,
                id,
                message: format!(
                    "READ of {len} bytes at {address} answered {} bytes",
                    status.params().len()
                ),
            });
        }
        let n = status.params().len().min(out.len());
        out[..n].copy_from_slice(&status.params()[..n]);
        Ok(status.error)
    }

    /// A status error byte as a [`BusError::Servo`] (counted).
    fn servo_error(&mut self, id: u8, error: u8) -> BusError {
        self.stats.servo_errors += 1;
        self.describe_servo_error(id, error)
    }

    /// A status error byte as a [`BusError::Servo`]; on the hardware alert,
    /// Hardware Error Status(70) is read to say why (a transaction of its
    /// own: only once the current one's reply is complete).
    fn describe_servo_error(&mut self, id: u8, error: u8) -> BusError {
        let hardware = if error & 0x80 != 0 {
            let mut b = [0u8; 1];
            match self.read_raw(id, ADDR_HARDWARE_ERROR_STATUS, &mut b) {
                Ok(e) if e & 0x7F == 0 => Some(b[0]),
                _ => None,
            }
        } else {
            None
        };
        BusError::Servo {
            family: FAMILY,
            id,
            bits: error,
            meaning: error_meaning(error, hardware),
        }
    }

    fn check_ids(ids: &[u8], n: usize, what: &str) -> Result<(), BusError> {
        if ids.len() != n {
            return Err(Self::usage(format!(
                "{FAMILY}: {} servo ids but {n} {what}",
                ids.len()
            )));
        }
        if ids.len() > MAX_SERVOS {
            return Err(Self::usage(format!(
                "{FAMILY}: {} servos on one bus, at most {MAX_SERVOS}",
                ids.len()
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id >= 0xFD) {
            return Err(Self::usage(format!(
                "{FAMILY}: servo id {bad} is not a servo's (0..=252)"
            )));
        }
        Ok(())
    }
}

impl Bus for DynamixelBus {
    fn family(&self) -> Family {
        Family::Dynamixel
    }

    fn ping(&mut self, id: u8) -> Result<u16, BusError> {
        Self::check_ids(&[id], 1, "servo")?;
        let start = Instant::now();
        self.send(id, PING, &[], true)?;
        let status = self.unicast_status(id, "PING", start)?;
        if status.error != 0 {
            return Err(self.servo_error(id, status.error));
        }
        match *status.params() {
            [lo, hi, _firmware] => Ok(u16::from_le_bytes([lo, hi])),
            _ => {
                self.stats.corrupt += 1;
                Err(BusError::Malformed {
                    family: FAMILY,
                    id,
                    message: format!(
                        "PING answered {} parameter bytes, not 3",
                        status.params().len()
                    ),
                })
            }
        }
    }

    fn read(&mut self, id: u8, register: Register) -> Result<i32, BusError> {
        Self::check_ids(&[id], 1, "servo")?;
        let s = spec(register);
        let mut b = [0u8; 4];
        let n = usize::from(s.size);
        let error = self.read_raw(id, s.address, &mut b[..n])?;
        if error != 0 {
            return Err(self.servo_error(id, error));
        }
        Ok(s.decode(&b[..n]))
    }

    fn write(&mut self, id: u8, register: Register, value: i32) -> Result<(), BusError> {
        if id != BROADCAST_ID {
            Self::check_ids(&[id], 1, "servo")?;
        }
        let s = spec(register);
        let bytes = s.encode(value).ok_or(BusError::Range {
            family: FAMILY,
            id,
            register,
            value,
            size: s.size,
            encoding: s.encoding,
        })?;
        let [a0, a1] = s.address.to_le_bytes();
        let data = &bytes[..usize::from(s.size)];
        let start = Instant::now();
        let broadcast = id == BROADCAST_ID;
        self.send(id, WRITE, &[&[a0, a1], data], !broadcast)?;
        if broadcast {
            return Ok(());
        }
        let status = self.unicast_status(id, "WRITE", start)?;
        if status.error != 0 {
            return Err(self.servo_error(id, status.error));
        }
        Ok(())
    }

    fn sync_read_state(&mut self, ids: &[u8], out: &mut [ServoState]) -> Result<(), BusError> {
        Self::check_ids(ids, out.len(), "outputs")?;
        if ids.is_empty() {
            return Ok(());
        }
        let [a0, a1] = STATE_ADDRESS.to_le_bytes();
        let [l0, l1] = STATE_LEN.to_le_bytes();
        let start = Instant::now();
        self.send(BROADCAST_ID, SYNC_READ, &[&[a0, a1, l0, l1], ids], true)?;
        let deadline = start + self.timeout;
        let velocity = spec(Register::PresentVelocity);
        let position = spec(Register::PresentPosition);
        // Every id's status is waited for (the first fault is reported), so
        // no late reply is left to be taken for the next tick's.
        let mut first = Fault::None;
        let mut k = 0;
        while k < ids.len() {
            let next = match self.next_packet(deadline) {
                Ok(n) => n,
                Err(e) => {
                    first.note(e);
                    break;
                }
            };
            match next {
                Next::TimedOut => {
                    for &id in &ids[k..] {
                        let e = self.timeout_error(id, "SYNC_READ");
                        first.note(e);
                    }
                    break;
                }
                Next::BadCrc {
                    id,
                    received,
                    computed,
                    offset,
                } => {
                    // The id of a corrupt packet may itself be corrupt: if it
                    // is not a later one's, it is taken as the expected one's.
                    let j = ids[k..].iter().position(|&i| i == id).map_or(k, |j| k + j);
                    for &missing in &ids[k..j] {
                        let e = self.timeout_error(missing, "SYNC_READ");
                        first.note(e);
                    }
                    let e = self.checksum_error(id, received, computed, offset);
                    first.note(e);
                    k = j + 1;
                }
                Next::Status(status) => {
                    let Some(j) = ids[k..].iter().position(|&i| i == status.id) else {
                        // A servo not asked (or asked already): stale.
                        continue;
                    };
                    let j = k + j;
                    for &missing in &ids[k..j] {
                        let e = self.timeout_error(missing, "SYNC_READ");
                        first.note(e);
                    }
                    self.stats.status_received += 1;
                    let p = status.params();
                    // With only the alert bit, the data is good.
                    let data_ok = status.error & 0x7F == 0;
                    if data_ok && p.len() == usize::from(STATE_LEN) {
                        out[j] = ServoState {
                            velocity: velocity.decode(&p[..4]),
                            position: position.decode(&p[4..8]),
                        };
                    } else if data_ok {
                        self.stats.corrupt += 1;
                        first.note(BusError::Malformed {
                            family: FAMILY,
                            id: status.id,
                            message: format!(
                                "SYNC_READ of {STATE_LEN} bytes answered {} bytes",
                                p.len()
                            ),
                        });
                    }
                    if status.error != 0 {
                        self.stats.servo_errors += 1;
                        if matches!(first, Fault::None) {
                            first = Fault::Servo(status.id, status.error);
                        }
                    }
                    k = j + 1;
                }
            }
        }
        let rtt = start.elapsed();
        self.stats.last_round_trip = rtt;
        self.stats.max_round_trip = self.stats.max_round_trip.max(rtt);
        match first {
            Fault::None => Ok(()),
            Fault::Error(e) => Err(e),
            // Described (Hardware Error Status read) now the reply is in.
            Fault::Servo(id, error) => Err(self.describe_servo_error(id, error)),
        }
    }

    fn sync_write(
        &mut self,
        ids: &[u8],
        register: Register,
        values: &[i32],
    ) -> Result<(), BusError> {
        Self::check_ids(ids, values.len(), "values")?;
        if ids.is_empty() {
            return Ok(());
        }
        let s = spec(register);
        let size = usize::from(s.size);
        let mut params = [0u8; MAX_SERVOS * 5];
        let mut n = 0;
        for (&id, &value) in ids.iter().zip(values) {
            let bytes = s.encode(value).ok_or(BusError::Range {
                family: FAMILY,
                id,
                register,
                value,
                size: s.size,
                encoding: s.encoding,
            })?;
            params[n] = id;
            params[n + 1..n + 1 + size].copy_from_slice(&bytes[..size]);
            n += 1 + size;
        }
        let [a0, a1] = s.address.to_le_bytes();
        let [l0, l1] = u16::from(s.size).to_le_bytes();
        self.send(
            BROADCAST_ID,
            SYNC_WRITE,
            &[&[a0, a1, l0, l1], &params[..n]],
            false,
        )
    }

    fn stats(&self) -> BusStats {
        self.stats
    }
}
