//! Feetech packet framing, both directions, in fixed buffers.
//!
//! Instruction and status packets share one frame:
//!
//! ```text
//! 0xFF 0xFF ID LENGTH CODE PARAM… CHECKSUM
//! ```
//!
//! `CODE` is the instruction (host → servo) or the error byte (servo →
//! host); `LENGTH` counts `CODE`, the parameters and the checksum (so it is
//! `params + 2`); `CHECKSUM = !(ID + LENGTH + CODE + Σ params) & 0xFF`.
//!
//! [`PacketBuf`] builds a frame (the host's instructions, the emulated
//! servo's status packets); [`scan`] finds the next frame in received bytes
//! (the host's status packets, the emulated servo's instructions), skipping
//! garbage and telling where each frame started.

/// The two header bytes.
pub const HEADER: [u8; 2] = [0xFF, 0xFF];

/// The broadcast id (SYNC_READ / SYNC_WRITE are addressed to it).
pub const BROADCAST_ID: u8 = 0xFE;

/// Largest frame: header, id, LENGTH (at most 255, which counts the code,
/// the parameters and the checksum).
pub const MAX_PACKET: usize = 4 + 255;

/// Most parameter bytes one frame carries (LENGTH = params + 2 ≤ 255).
pub const MAX_PARAMS: usize = 253;

/// The checksum of a frame's `id`, `length`, `code` and `params`: the
/// complement of their sum's low byte.
pub fn checksum(id: u8, length: u8, code: u8, params: &[u8]) -> u8 {
    let sum = params.iter().fold(
        u32::from(id) + u32::from(length) + u32::from(code),
        |s, &b| s + u32::from(b),
    );
    !(sum as u8)
}

/// A frame does not fit [`MAX_PACKET`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a Feetech packet carries at most {MAX_PARAMS} parameter bytes")]
pub struct TooLong;

/// One frame being built, in a fixed buffer: [`PacketBuf::start`], then
/// [`PacketBuf::push`] the parameters, then [`PacketBuf::finish`].
#[derive(Clone)]
pub struct PacketBuf {
    bytes: [u8; MAX_PACKET],
    len: usize,
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PacketBuf({:02X?})", self.as_bytes())
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketBuf {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self {
            bytes: [0; MAX_PACKET],
            len: 0,
        }
    }

    /// Begin a frame to (or from) `id` with `code` (instruction or error byte).
    pub fn start(&mut self, id: u8, code: u8) {
        self.bytes[..5].copy_from_slice(&[HEADER[0], HEADER[1], id, 0, code]);
        self.len = 5;
    }

    /// Append parameter bytes.
    pub fn push(&mut self, params: &[u8]) -> Result<(), TooLong> {
        // One byte stays free for the checksum.
        if self.len + params.len() > 5 + MAX_PARAMS {
            return Err(TooLong);
        }
        self.bytes[self.len..self.len + params.len()].copy_from_slice(params);
        self.len += params.len();
        Ok(())
    }

    /// Write LENGTH and the checksum; the whole frame.
    pub fn finish(&mut self) -> &[u8] {
        let n_params = self.len.saturating_sub(5);
        // `push` keeps n_params ≤ MAX_PARAMS, so this fits a byte.
        let length = (n_params + 2) as u8;
        self.bytes[3] = length;
        let c = checksum(
            self.bytes[2],
            length,
            self.bytes[4],
            &self.bytes[5..5 + n_params],
        );
        self.bytes[self.len] = c;
        self.len += 1;
        self.as_bytes()
    }

    /// The bytes written so far (the whole frame after [`PacketBuf::finish`]).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// A whole frame: `start`, `push(params)`, `finish`.
    pub fn frame(&mut self, id: u8, code: u8, params: &[u8]) -> Result<&[u8], TooLong> {
        self.start(id, code);
        self.push(params)?;
        Ok(self.finish())
    }
}

/// A frame found by [`scan`] (borrowed from the scanned bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The id byte.
    pub id: u8,
    /// Instruction (to a servo) or error byte (from one).
    pub code: u8,
    /// The parameters.
    pub params: &'a [u8],
}

/// What [`scan`] found at the front of some received bytes. Offsets are
/// into the scanned slice; `end` is one past the frame's last byte (where
/// the next scan starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan<'a> {
    /// No whole frame yet. The first `skip` bytes cannot begin one (garbage)
    /// and may be dropped; scan again when more bytes came.
    Incomplete {
        /// Garbage at the front.
        skip: usize,
    },
    /// A frame with a good checksum.
    Frame {
        /// Where its header starts.
        start: usize,
        /// One past its checksum.
        end: usize,
        /// The frame.
        frame: Frame<'a>,
    },
    /// A whole frame whose checksum is wrong.
    BadChecksum {
        /// Where its header starts.
        start: usize,
        /// One past its checksum.
        end: usize,
        /// Its id byte.
        id: u8,
        /// The checksum it carries.
        received: u8,
        /// The checksum of its bytes.
        computed: u8,
    },
    /// A header followed by an impossible LENGTH (below 2).
    Malformed {
        /// Where its header starts.
        start: usize,
        /// Where scanning resumes (after the LENGTH byte).
        end: usize,
        /// Its id byte.
        id: u8,
        /// The LENGTH byte.
        length: u8,
    },
}

/// Find the first frame in `bytes`. A header is `FF FF` followed by an id
/// other than `FF` (so a run of `FF`s before a frame is skipped); bytes
/// before a header are garbage.
pub fn scan(bytes: &[u8]) -> Scan<'_> {
    let mut i = 0;
    loop {
        // Find FF FF x with x != FF.
        while i < bytes.len() && bytes[i] != 0xFF {
            i += 1;
        }
        if i + 2 >= bytes.len() {
            // Too few bytes to tell: keep from `i` (a possible header start).
            return Scan::Incomplete { skip: i };
        }
        if bytes[i + 1] != 0xFF {
            i += 1;
            continue;
        }
        if bytes[i + 2] == 0xFF {
            // FF FF FF: the header may start one later.
            i += 1;
            continue;
        }
        break;
    }
    let start = i;
    let id = bytes[start + 2];
    let Some(&length) = bytes.get(start + 3) else {
        return Scan::Incomplete { skip: start };
    };
    if length < 2 {
        return Scan::Malformed {
            start,
            end: start + 4,
            id,
            length,
        };
    }
    let end = start + 4 + usize::from(length);
    if bytes.len() < end {
        return Scan::Incomplete { skip: start };
    }
    let code = bytes[start + 4];
    let params = &bytes[start + 5..end - 1];
    let received = bytes[end - 1];
    let computed = checksum(id, length, code, params);
    if received != computed {
        return Scan::BadChecksum {
            start,
            end,
            id,
            received,
            computed,
        };
    }
    Scan::Frame {
        start,
        end,
        frame: Frame { id, code, params },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_of_id_1_is_the_documented_bytes() {
        let mut b = PacketBuf::new();
        let bytes = b.frame(1, 0x01, &[]).expect("fits");
        assert_eq!(bytes, &[0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFB]);
    }

    #[test]
    fn push_refuses_what_does_not_fit_and_a_full_frame_round_trips() {
        let mut b = PacketBuf::new();
        b.start(3, 0x03);
        assert_eq!(b.push(&[0x5A; MAX_PARAMS + 1]), Err(TooLong));
        b.start(3, 0x03);
        b.push(&[0x5A; MAX_PARAMS]).expect("fits");
        let bytes = b.finish().to_vec();
        assert_eq!(bytes.len(), MAX_PACKET);
        match scan(&bytes) {
            Scan::Frame { start, end, frame } => {
                assert_eq!((start, end), (0, MAX_PACKET));
                assert_eq!(frame.params.len(), MAX_PARAMS);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scan_skips_garbage_and_ff_runs_and_waits_for_the_rest() {
        let mut b = PacketBuf::new();
        let frame = b.frame(2, 0x00, &[0x10, 0x20]).expect("fits").to_vec();
        let mut bytes = vec![0x00, 0xFF, 0x13, 0xFF, 0xFF, 0xFF];
        let at = bytes.len() - 2;
        bytes.extend_from_slice(&frame[2..]);
        match scan(&bytes) {
            Scan::Frame { start, end, frame } => {
                assert_eq!((start, end), (at, bytes.len()));
                assert_eq!(
                    frame,
                    Frame {
                        id: 2,
                        code: 0,
                        params: &[0x10, 0x20]
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        // Every strict prefix is incomplete, never a wrong frame.
        for n in 0..bytes.len() {
            assert!(
                matches!(scan(&bytes[..n]), Scan::Incomplete { skip } if skip <= at),
                "{n}: {:?}",
                scan(&bytes[..n])
            );
        }
        assert_eq!(scan(&[1, 2, 3]), Scan::Incomplete { skip: 3 });
    }

    #[test]
    fn scan_reports_a_bad_checksum_and_an_impossible_length_where_they_start() {
        let mut b = PacketBuf::new();
        let mut frame = vec![0x42];
        frame.extend_from_slice(b.frame(7, 0x20, &[1, 2, 3, 4]).expect("fits"));
        let last = frame.len() - 1;
        let good = frame[last];
        frame[last] ^= 0x01;
        assert_eq!(
            scan(&frame),
            Scan::BadChecksum {
                start: 1,
                end: frame.len(),
                id: 7,
                received: good ^ 0x01,
                computed: good,
            }
        );
        assert_eq!(
            scan(&[0xFF, 0xFF, 0x01, 0x01, 0xFF]),
            Scan::Malformed {
                start: 0,
                end: 4,
                id: 1,
                length: 1
            }
        );
    }
}
