//! Dynamixel Protocol 2.0 packets, built and parsed in caller-provided
//! fixed buffers (nothing here allocates).
//!
//! ```text
//! FF FF FD 00 | ID | LEN_L LEN_H | INST | PARAMS… | CRC_L CRC_H
//! ```
//!
//! - `LEN` counts the instruction, the parameters (after byte stuffing)
//!   and the two CRC bytes.
//! - The CRC is ROBOTIS's CRC-16 (polynomial 0x8005, initial value 0, no
//!   reflection, no final XOR) over every byte before it, stuffing
//!   included, sent little-endian.
//! - Byte stuffing: wherever `FF FF FD` occurs in the instruction and
//!   parameter field, a `FD` is inserted after it (`FF FF FD FD`), so that a
//!   header `FF FF FD 00` never appears inside a packet.
//! - A status packet is instruction `0x55`; its first parameter is the
//!   error byte (bit 7: hardware alert, bits 0–6: error number).
//!
//! The host side builds instruction packets ([`encode_packet`]) and scans
//! what it read for status packets ([`scan_status`]); the device side (the
//! emulator) feeds received bytes one at a time to an [`InstructionParser`]
//! and answers with [`encode_packet`] too (a status packet is a packet with
//! instruction [`STATUS`] whose first parameter is the error byte).

/// The header that starts every packet (three header bytes and the
/// reserved byte).
pub const HEADER: [u8; 4] = [0xFF, 0xFF, 0xFD, 0x00];
/// The id every servo listens to (no status to READ/WRITE; SYNC_* use it).
pub const BROADCAST_ID: u8 = 0xFE;
/// PING: model number and firmware version.
pub const PING: u8 = 0x01;
/// READ: address (2), length (2).
pub const READ: u8 = 0x02;
/// WRITE: address (2), data.
pub const WRITE: u8 = 0x03;
/// SYNC_READ: address (2), length (2), ids; one status per id, in order.
pub const SYNC_READ: u8 = 0x82;
/// SYNC_WRITE: address (2), length (2), then id + data per servo; no status.
pub const SYNC_WRITE: u8 = 0x83;
/// The instruction byte of a status packet.
pub const STATUS: u8 = 0x55;

/// Bytes before the instruction: header (4), id, length (2).
pub const PREFIX: usize = 7;
/// Largest LEN this crate sends or accepts (an arm's packets are far smaller).
pub const MAX_LEN: usize = 1024;
/// Largest whole packet: prefix + LEN.
pub const MAX_PACKET: usize = PREFIX + MAX_LEN;
/// Most parameter bytes of a status packet the host parses (after the
/// error byte, unstuffed).
pub const MAX_STATUS_PARAMS: usize = 128;

const CRC_TABLE: [u16; 256] = crc_table();

const fn crc_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x8005
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// ROBOTIS's CRC-16 of `data`, continuing from `crc` (0 for a new packet).
pub fn crc16(crc: u16, data: &[u8]) -> u16 {
    data.iter().fold(crc, |crc, &b| {
        let i = usize::from(((crc >> 8) as u8) ^ b);
        (crc << 8) ^ CRC_TABLE[i]
    })
}

/// Why a packet could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The packet (after stuffing) does not fit the output buffer or
    /// [`MAX_LEN`].
    #[error("packet too long: {needed} bytes do not fit {room}")]
    TooLong {
        /// Bytes the packet needs (at least).
        needed: usize,
        /// Bytes there were.
        room: usize,
    },
}

/// Build a packet for `id` with `instruction` and the parameters `parts`
/// (concatenated, then stuffed) into `out`; its length.
///
/// A status packet is `encode_packet(id, STATUS, &[&[error], data], out)`.
pub fn encode_packet(
    id: u8,
    instruction: u8,
    parts: &[&[u8]],
    out: &mut [u8],
) -> Result<usize, PacketError> {
    let room = out.len().min(MAX_PACKET);
    let too_long = |needed| PacketError::TooLong { needed, room };
    if room < PREFIX + 3 {
        return Err(too_long(PREFIX + 3));
    }
    out[..4].copy_from_slice(&HEADER);
    out[4] = id;
    let mut n = PREFIX;
    // The stuffing window: the last bytes of the (unstuffed) field.
    let mut window = Stuffing::default();
    for &b in std::iter::once(&instruction).chain(parts.iter().flat_map(|p| p.iter())) {
        // Keep two bytes for the CRC.
        if n + 1 + 2 > room {
            return Err(too_long(n + 3));
        }
        out[n] = b;
        n += 1;
        if window.push(b) {
            if n + 1 + 2 > room {
                return Err(too_long(n + 3));
            }
            out[n] = 0xFD;
            n += 1;
        }
    }
    let len = n - PREFIX + 2;
    let [lo, hi] = (len as u16).to_le_bytes();
    out[5] = lo;
    out[6] = hi;
    let crc = crc16(0, &out[..n]);
    out[n..n + 2].copy_from_slice(&crc.to_le_bytes());
    Ok(n + 2)
}

/// Tracks the last bytes of a field for stuffing: `push` says whether the
/// bytes so far end in `FF FF FD` (then a stuffed `FD` follows: on the way
/// out it is inserted, on the way in skipped).
#[derive(Debug, Default, Clone, Copy)]
struct Stuffing {
    ff: u8,
}

impl Stuffing {
    fn push(&mut self, b: u8) -> bool {
        match b {
            0xFF => {
                self.ff = (self.ff + 1).min(2);
                false
            }
            0xFD if self.ff == 2 => {
                self.ff = 0;
                true
            }
            _ => {
                self.ff = 0;
                false
            }
        }
    }
}

/// Remove byte stuffing from `src` (an instruction-and-parameter field as
/// sent) into `dst`; the number of bytes written, or `None` if `dst` is too
/// small or a stuffed `FD` is missing (the field ends after `FF FF FD`, or
/// another byte follows it).
pub fn unstuff(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    let mut window = Stuffing::default();
    let mut skip_next = false;
    for &b in src {
        if skip_next {
            if b != 0xFD {
                return None;
            }
            skip_next = false;
            continue;
        }
        *dst.get_mut(n)? = b;
        n += 1;
        skip_next = window.push(b);
    }
    if skip_next { None } else { Some(n) }
}

/// A status packet, unstuffed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The servo that sent it.
    pub id: u8,
    /// The error byte (bit 7: hardware alert; bits 0–6: error number).
    pub error: u8,
    params: [u8; MAX_STATUS_PARAMS],
    n_params: usize,
}

impl Status {
    /// The parameters after the error byte.
    pub fn params(&self) -> &[u8] {
        &self.params[..self.n_params]
    }
}

/// What [`scan_status`] found at the front of the bytes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// No whole packet yet: the bytes before `keep_from` cannot start one
    /// (garbage) and can be dropped; read more.
    Incomplete {
        /// First byte that may still begin a packet.
        keep_from: usize,
    },
    /// A status packet from `start` to `end`.
    Status {
        /// Where the packet starts.
        start: usize,
        /// One past its last byte.
        end: usize,
        /// The packet.
        status: Status,
    },
    /// A whole packet whose CRC is wrong.
    BadCrc {
        /// Where the packet starts.
        start: usize,
        /// One past its last byte.
        end: usize,
        /// The id it carries.
        id: u8,
        /// The CRC it carries.
        received: u16,
        /// The CRC of its bytes.
        computed: u16,
    },
    /// A whole packet, CRC right, that is not a usable status packet
    /// (another instruction, e.g. an echo of the host's own, or a status
    /// with no error byte or too many parameters): drop it.
    Other {
        /// Where the packet starts.
        start: usize,
        /// One past its last byte.
        end: usize,
        /// The id it carries.
        id: u8,
        /// Its instruction byte.
        instruction: u8,
    },
}

/// Look for the first packet in `buf`: skip bytes until a header, wait for
/// the whole packet, check its CRC, unstuff it. A header with an impossible
/// length is skipped as garbage.
pub fn scan_status(buf: &[u8]) -> Scan {
    let mut from = 0;
    loop {
        let Some(start) = find_header(buf, from) else {
            // A header may begin in the last three bytes.
            let keep_from = partial_header_start(buf, from);
            return Scan::Incomplete { keep_from };
        };
        if buf.len() < start + PREFIX {
            return Scan::Incomplete { keep_from: start };
        }
        let id = buf[start + 4];
        let len = usize::from(u16::from_le_bytes([buf[start + 5], buf[start + 6]]));
        if !(3..=MAX_LEN).contains(&len) {
            from = start + 1;
            continue;
        }
        let end = start + PREFIX + len;
        if buf.len() < end {
            return Scan::Incomplete { keep_from: start };
        }
        let received = u16::from_le_bytes([buf[end - 2], buf[end - 1]]);
        let computed = crc16(0, &buf[start..end - 2]);
        if received != computed {
            return Scan::BadCrc {
                start,
                end,
                id,
                received,
                computed,
            };
        }
        let instruction = buf[start + PREFIX];
        let other = Scan::Other {
            start,
            end,
            id,
            instruction,
        };
        if instruction != STATUS {
            return other;
        }
        // Unstuff instruction + error + params, then drop the instruction.
        let mut field = [0u8; MAX_STATUS_PARAMS + 2];
        let Some(n) = unstuff(&buf[start + PREFIX..end - 2], &mut field) else {
            return other;
        };
        if n < 2 {
            return other;
        }
        let mut params = [0u8; MAX_STATUS_PARAMS];
        params[..n - 2].copy_from_slice(&field[2..n]);
        return Scan::Status {
            start,
            end,
            status: Status {
                id,
                error: field[1],
                params,
                n_params: n - 2,
            },
        };
    }
}

fn find_header(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(HEADER.len())
        .position(|w| w == HEADER)
        .map(|i| i + from)
}

/// Where a header could still begin in `buf[from..]`'s last three bytes
/// (none whole there): the first index whose tail is a prefix of [`HEADER`].
fn partial_header_start(buf: &[u8], from: usize) -> usize {
    let lo = from.max(buf.len().saturating_sub(HEADER.len() - 1));
    (lo..buf.len())
        .find(|&i| HEADER.starts_with(&buf[i..]))
        .unwrap_or(buf.len())
}

/// An instruction packet, as the device side received it (unstuffed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The id it is for (or [`BROADCAST_ID`]).
    pub id: u8,
    /// The instruction byte.
    pub instruction: u8,
    params: [u8; MAX_LEN],
    n_params: usize,
}

impl Instruction {
    /// The parameters (unstuffed).
    pub fn params(&self) -> &[u8] {
        &self.params[..self.n_params]
    }
}

/// What [`InstructionParser::feed`] completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A good packet.
    Instruction(Box<Instruction>),
    /// A whole packet with a wrong CRC, for `id`.
    BadCrc {
        /// The id it carried.
        id: u8,
    },
    /// A header followed by an impossible length, or a stuffing error.
    Malformed {
        /// The id it carried.
        id: u8,
    },
}

/// The device side's receiver: bytes in one at a time, packets out. It
/// hunts for the header through any garbage, and after a bad packet hunts
/// again.
#[derive(Debug, Clone)]
pub struct InstructionParser {
    buf: [u8; MAX_PACKET],
    n: usize,
    /// The last four bytes while hunting for a header.
    hunt: [u8; 4],
    /// Bytes of the packet so far when not hunting.
    in_packet: bool,
}

impl Default for InstructionParser {
    fn default() -> Self {
        Self {
            buf: [0; MAX_PACKET],
            n: 0,
            hunt: [0; 4],
            in_packet: false,
        }
    }
}

impl InstructionParser {
    /// A parser hunting for a header.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one byte; a packet when this byte completes one.
    pub fn feed(&mut self, byte: u8) -> Option<Parsed> {
        if !self.in_packet {
            self.hunt = [self.hunt[1], self.hunt[2], self.hunt[3], byte];
            if self.hunt == HEADER {
                self.buf[..4].copy_from_slice(&HEADER);
                self.n = 4;
                self.in_packet = true;
                self.hunt = [0; 4];
            }
            return None;
        }
        self.buf[self.n] = byte;
        self.n += 1;
        if self.n < PREFIX {
            return None;
        }
        let id = self.buf[4];
        let len = usize::from(u16::from_le_bytes([self.buf[5], self.buf[6]]));
        if !(3..=MAX_LEN).contains(&len) {
            self.in_packet = false;
            return Some(Parsed::Malformed { id });
        }
        if self.n < PREFIX + len {
            return None;
        }
        self.in_packet = false;
        let end = self.n;
        let received = u16::from_le_bytes([self.buf[end - 2], self.buf[end - 1]]);
        if crc16(0, &self.buf[..end - 2]) != received {
            return Some(Parsed::BadCrc { id });
        }
        let mut field = [0u8; MAX_LEN];
        let n = match unstuff(&self.buf[PREFIX..end - 2], &mut field) {
            Some(n) if n >= 1 => n,
            _ => return Some(Parsed::Malformed { id }),
        };
        let mut params = [0u8; MAX_LEN];
        params[..n - 1].copy_from_slice(&field[1..n]);
        Some(Parsed::Instruction(Box::new(Instruction {
            id,
            instruction: field[0],
            params,
            n_params: n - 1,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(id: u8, instruction: u8, params: &[u8]) -> Vec<u8> {
        let mut out = [0u8; MAX_PACKET];
        let n = encode_packet(id, instruction, &[params], &mut out).expect("fits");
        out[..n].to_vec()
    }

    fn status(id: u8, error: u8, params: &[u8]) -> Vec<u8> {
        let mut out = [0u8; MAX_PACKET];
        let n = encode_packet(id, STATUS, &[&[error], params], &mut out).expect("fits");
        out[..n].to_vec()
    }

    #[test]
    fn crc16_is_robotis_crc16_on_the_standard_check_string() {
        // CRC-16/BUYPASS (poly 0x8005, init 0, unreflected): check 0xFEE8.
        assert_eq!(crc16(0, b"123456789"), 0xFEE8);
        // Incremental equals one-shot.
        assert_eq!(crc16(crc16(0, b"1234"), b"56789"), 0xFEE8);
    }

    /// The examples of ROBOTIS's Protocol 2.0 e-Manual (XM430-W210, ids 1
    /// and 2), byte for byte.
    #[test]
    fn packets_match_the_published_protocol_2_examples() {
        // PING id 1, and its status (model 1030 = 0x0406, firmware 38).
        assert_eq!(
            packet(1, PING, &[]),
            [0xFF, 0xFF, 0xFD, 0x00, 0x01, 0x03, 0x00, 0x01, 0x19, 0x4E]
        );
        assert_eq!(
            status(1, 0, &[0x06, 0x04, 0x26]),
            [
                0xFF, 0xFF, 0xFD, 0x00, 0x01, 0x07, 0x00, 0x55, 0x00, 0x06, 0x04, 0x26, 0x65, 0x5D
            ]
        );
        // Broadcast PING, and id 2's status.
        assert_eq!(
            packet(BROADCAST_ID, PING, &[]),
            [0xFF, 0xFF, 0xFD, 0x00, 0xFE, 0x03, 0x00, 0x01, 0x31, 0x42]
        );
        assert_eq!(status(2, 0, &[0x06, 0x04, 0x26])[12..], [0x6F, 0x6D]);
        // READ Present Position (132, 4 bytes) of id 1 = 166.
        assert_eq!(
            packet(1, READ, &[0x84, 0x00, 0x04, 0x00]),
            [
                0xFF, 0xFF, 0xFD, 0x00, 0x01, 0x07, 0x00, 0x02, 0x84, 0x00, 0x04, 0x00, 0x1D, 0x15
            ]
        );
        assert_eq!(
            status(1, 0, &[0xA6, 0, 0, 0]),
            [
                0xFF, 0xFF, 0xFD, 0x00, 0x01, 0x08, 0x00, 0x55, 0x00, 0xA6, 0x00, 0x00, 0x00, 0x8C,
                0xC0
            ]
        );
        // WRITE 512 to Goal Position (116) of id 1, and the empty status.
        assert_eq!(
            packet(1, WRITE, &[0x74, 0x00, 0x00, 0x02, 0x00, 0x00])[14..],
            [0xCA, 0x89]
        );
        assert_eq!(
            status(1, 0, &[]),
            [
                0xFF, 0xFF, 0xFD, 0x00, 0x01, 0x04, 0x00, 0x55, 0x00, 0xA1, 0x0C
            ]
        );
        // SYNC_READ Present Position of ids 1 and 2; id 2's status (2079).
        assert_eq!(
            packet(
                BROADCAST_ID,
                SYNC_READ,
                &[0x84, 0x00, 0x04, 0x00, 0x01, 0x02]
            ),
            [
                0xFF, 0xFF, 0xFD, 0x00, 0xFE, 0x09, 0x00, 0x82, 0x84, 0x00, 0x04, 0x00, 0x01, 0x02,
                0xCE, 0xFA
            ]
        );
        assert_eq!(status(2, 0, &[0x1F, 0x08, 0, 0])[13..], [0xBA, 0xBE]);
        // SYNC_WRITE Goal Position: id 1 = 150, id 2 = 170.
        let sw = packet(
            BROADCAST_ID,
            SYNC_WRITE,
            &[
                0x74, 0x00, 0x04, 0x00, 0x01, 0x96, 0x00, 0x00, 0x00, 0x02, 0xAA, 0x00, 0x00, 0x00,
            ],
        );
        assert_eq!(sw[..8], [0xFF, 0xFF, 0xFD, 0x00, 0xFE, 0x11, 0x00, 0x83]);
        assert_eq!(sw[sw.len() - 2..], [0x82, 0x87]);
    }

    #[test]
    fn stuffing_round_trips_a_payload_containing_the_header() {
        // WRITE of FF FF FD, FF FF FD FD and a trailing FF FF FD.
        let data = [
            0x10, 0x00, 0xFF, 0xFF, 0xFD, 0x01, 0xFF, 0xFF, 0xFD, 0xFD, 0xFF, 0xFF, 0xFF, 0xFD,
        ];
        let p = packet(3, WRITE, &data);
        // Three patterns, three stuffed bytes; LEN counts them.
        assert_eq!(p.len(), PREFIX + 1 + data.len() + 3 + 2);
        assert_eq!(usize::from(p[5]), 1 + data.len() + 3 + 2);
        assert_eq!(
            p[PREFIX + 1..PREFIX + 1 + 8],
            [0x10, 0x00, 0xFF, 0xFF, 0xFD, 0xFD, 0x01, 0xFF]
        );
        // No header inside the packet.
        assert_eq!(find_header(&p, 1), None);
        // The device side gets the data back.
        let mut parser = InstructionParser::new();
        let got: Vec<Parsed> = p.iter().filter_map(|&b| parser.feed(b)).collect();
        let [Parsed::Instruction(i)] = &got[..] else {
            panic!("{got:?}")
        };
        assert_eq!((i.id, i.instruction, i.params()), (3, WRITE, &data[..]));
        // And the host side, as a status.
        let s = status(3, 0x80, &data);
        let Scan::Status {
            status: st, end, ..
        } = scan_status(&s)
        else {
            panic!("{:?}", scan_status(&s))
        };
        assert_eq!(
            (st.id, st.error, st.params(), end),
            (3, 0x80, &data[..], s.len())
        );
        // A missing stuffed byte is refused.
        assert_eq!(unstuff(&[0xFF, 0xFF, 0xFD, 0x01], &mut [0u8; 8]), None);
        assert_eq!(
            unstuff(&[0xFF, 0xFF, 0xFD, 0xFD, 0xFD], &mut [0u8; 8]),
            Some(4)
        );
    }

    #[test]
    fn the_status_scan_skips_garbage_waits_for_the_rest_and_reports_a_bad_crc() {
        let s = status(7, 0, &[1, 2, 3, 4]);
        let mut buf = vec![0x00, 0xFF, 0x13, 0xFF, 0xFF, 0xFD, 0xFD, 0x42];
        let garbage = buf.len();
        buf.extend_from_slice(&s);
        match scan_status(&buf) {
            Scan::Status { start, end, status } => {
                assert_eq!((start, end), (garbage, buf.len()));
                assert_eq!((status.id, status.params()), (7, &[1u8, 2, 3, 4][..]));
            }
            other => panic!("{other:?}"),
        }
        // Half a packet: keep it from its header.
        assert_eq!(
            scan_status(&buf[..garbage + 9]),
            Scan::Incomplete { keep_from: garbage }
        );
        // Garbage ending in the start of a header: keep the header's start.
        assert_eq!(
            scan_status(&[0x01, 0x02, 0xFF, 0xFF]),
            Scan::Incomplete { keep_from: 2 }
        );
        assert_eq!(
            scan_status(&[0x01, 0x02, 0x03]),
            Scan::Incomplete { keep_from: 3 }
        );
        // A wrong CRC names the packet's place.
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        match scan_status(&bad) {
            Scan::BadCrc {
                start,
                id,
                received,
                computed,
                ..
            } => {
                assert_eq!((start, id), (garbage, 7));
                assert_eq!(received ^ computed, 0x4000);
            }
            other => panic!("{other:?}"),
        }
        // A header with an impossible length is garbage.
        let mut junk = vec![0xFF, 0xFF, 0xFD, 0x00, 0x01, 0xFF, 0xFF];
        junk.extend_from_slice(&s);
        assert!(matches!(scan_status(&junk), Scan::Status { start: 7, .. }));
        // The host's own instruction (an echo) is not a status.
        let echo = packet(1, PING, &[]);
        assert!(matches!(
            scan_status(&echo),
            Scan::Other {
                instruction: PING,
                ..
            }
        ));
    }

    #[test]
    fn the_instruction_parser_resynchronises_after_garbage_and_bad_packets() {
        let good = packet(1, READ, &[0x84, 0x00, 0x04, 0x00]);
        let mut bad = good.clone();
        bad[9] ^= 1;
        let mut stream = vec![0xFF, 0xFF, 0xFF, 0xFD, 0x01, 0xFF];
        stream.extend_from_slice(&bad);
        stream.extend_from_slice(&[0xFF, 0xFF, 0xFD]);
        stream.extend_from_slice(&good);
        let mut parser = InstructionParser::new();
        let got: Vec<Parsed> = stream.iter().filter_map(|&b| parser.feed(b)).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], Parsed::BadCrc { id: 1 });
        let Parsed::Instruction(i) = &got[1] else {
            panic!("{got:?}")
        };
        assert_eq!(
            (i.id, i.instruction, i.params()),
            (1, READ, &[0x84, 0, 4, 0][..])
        );
    }

    #[test]
    fn a_packet_that_does_not_fit_is_refused() {
        let mut small = [0u8; 12];
        assert_eq!(
            encode_packet(1, WRITE, &[&[1, 2, 3]], &mut small),
            Err(PacketError::TooLong {
                needed: 13,
                room: 12
            })
        );
        assert_eq!(encode_packet(1, WRITE, &[&[1, 2]], &mut small), Ok(12));
    }
}
