//! diffbc's wire protocol between the host (policy + control loop) and the
//! arm's microcontroller.
//!
//! `#![no_std]`, no allocation: fixed-size `heapless` buffers everywhere, so
//! the same crate builds for the host and for a Cortex-M firmware
//! (`thumbv7em-none-eabihf`).
//!
//! # Wire format
//!
//! ```text
//! frame   = COBS( payload ‖ crc32_le(payload) ) 0x00
//! payload = postcard(Frame)
//! ```
//!
//! COBS removes every zero byte from the encoded frame, so `0x00` marks frame
//! ends and a receiver can resynchronise after garbage at the next zero. The
//! CRC-32 (ISO-HDLC) rejects corrupted frames. [`Decoder`] accepts any
//! partial reads, reports each bad frame with its cause and the stream offset
//! where it began, and carries on with the next one.
//!
//! # Units
//!
//! Joint positions in radians, velocities in rad/s, accelerations in rad/s²,
//! device time in microseconds since the device booted.

#![no_std]

use serde::{Deserialize, Serialize};

/// Protocol version carried by [`Frame::Hello`] and [`Handshake`].
/// 2: `FaultCode::Collision` (a host built for 1 could not decode it).
/// 3: telemetry carries the arm's state only (no task channels, no
/// task-done bit): task state is the host's, computed from what the arm
/// measures.
/// 4: telemetry carries the device's own [`LinkCounters`] (commands received,
/// skipped, stale, bad frames), and [`FaultCode::Firmware`] reports a
/// firmware panic.
pub const PROTOCOL_VERSION: u16 = 4;
/// Most joints an arm may have.
pub const MAX_JOINTS: usize = 8;
/// Largest postcard payload, plus 4 bytes of CRC.
pub const MAX_PAYLOAD: usize = 192;
/// Largest encoded frame including the COBS overhead and the `0x00` delimiter.
pub const MAX_FRAME: usize = cobs::max_encoding_length(MAX_PAYLOAD) + 1;

/// One value per joint.
pub type Joints = heapless::Vec<f32, MAX_JOINTS>;

/// Limits of one joint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JointLimit {
    /// Lowest position (rad).
    pub min: f32,
    /// Highest position (rad).
    pub max: f32,
    /// Largest speed (rad/s).
    pub max_velocity: f32,
    /// Largest acceleration (rad/s²).
    pub max_acceleration: f32,
}

/// Device → host answer to [`Frame::Hello`]: what the arm is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handshake {
    /// The device's protocol version.
    pub protocol: u16,
    /// One entry per joint.
    pub joints: heapless::Vec<JointLimit, MAX_JOINTS>,
    /// Highest command rate the device accepts (Hz).
    pub max_rate_hz: u16,
    /// Commands older than this many milliseconds trip the watchdog.
    pub watchdog_ms: u16,
}

/// Bits of [`Telemetry::status`].
pub mod status {
    /// Motors enabled and following commands.
    pub const ENABLED: u16 = 1 << 0;
    /// Holding position (no recent command, or stopped).
    pub const HOLDING: u16 = 1 << 1;
    /// A fault is latched; see the last [`crate::Frame::Fault`].
    pub const FAULT: u16 = 1 << 2;
}

/// Device → host: the measured joint state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Telemetry sequence number (wraps).
    pub seq: u32,
    /// Device clock (µs since boot).
    pub device_time_us: u64,
    /// Sequence number of the last command applied in this session (0 until
    /// the first command after [`Frame::Hello`]).
    pub last_command_seq: u32,
    /// Measured positions (rad).
    pub positions: Joints,
    /// Measured velocities (rad/s).
    pub velocities: Joints,
    /// [`status`] bits.
    pub status: u16,
    /// What the device counted on its link since the session's handshake.
    pub link: LinkCounters,
}

/// What the device counted on its link since the session's
/// [`Frame::Hello`]: the host compares them with what it sent, so "every
/// command arrived, in order" is the device's word, not the host's guess.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounters {
    /// Command frames received (stale ones included).
    pub commands: u32,
    /// Sequence numbers jumped over: commands sent that never arrived
    /// (a command `n` after `m` adds `n - m - 1`).
    pub skipped: u32,
    /// Commands whose sequence number was not newer than the last one
    /// received (duplicated or reordered): dropped, never applied.
    pub stale: u32,
    /// Frames the device's decoder dropped (CRC, framing, payload).
    pub bad_frames: u32,
}

/// Host → device: joint position targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Command sequence number (wraps).
    pub seq: u32,
    /// Target positions (rad).
    pub targets: Joints,
}

/// Why the device faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultCode {
    /// No command arrived within the watchdog period.
    Watchdog,
    /// A joint left its limits.
    JointLimit,
    /// A command was malformed or had the wrong joint count.
    BadCommand,
    /// Over-current or over-temperature.
    Overload,
    /// The protocol versions differ.
    VersionMismatch,
    /// The arm touched an obstacle (contact detected); `detail` is the
    /// obstacle's index.
    Collision,
    /// The firmware itself failed (a panic or a hard fault): the drives are
    /// cut and the device answers nothing more until it is reset. `detail`
    /// is the source line of the panic, or 0.
    Firmware,
}

/// Device → host: a latched fault. The device holds position until stopped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// What happened.
    pub code: FaultCode,
    /// The joint concerned, or 255 for none.
    pub joint: u8,
    /// Code-specific detail (e.g. milliseconds since the last command).
    pub detail: u32,
}

/// Why the host stops the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// The run ended normally.
    EndOfRun,
    /// The operator asked (Ctrl-C).
    Operator,
    /// The host hit an error it cannot recover from.
    HostError,
    /// The device reported a fault.
    DeviceFault,
}

/// Every message, both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// Host → device: start a session.
    Hello {
        /// The host's protocol version.
        protocol: u16,
    },
    /// Device → host: the arm's description.
    Handshake(Handshake),
    /// Device → host: joint state.
    Telemetry(Telemetry),
    /// Host → device: joint targets.
    Command(Command),
    /// Either way: liveness.
    Heartbeat {
        /// Sender's heartbeat counter.
        seq: u32,
    },
    /// Device → host: a latched fault.
    Fault(Fault),
    /// Host → device: stop and hold; device → host: acknowledged.
    Stop {
        /// Why.
        reason: StopReason,
    },
}

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The frame's payload exceeds [`MAX_PAYLOAD`].
    PayloadTooLarge,
    /// The output buffer is shorter than the encoded frame (use [`MAX_FRAME`]).
    BufferTooSmall,
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::PayloadTooLarge => write!(f, "frame payload exceeds {MAX_PAYLOAD} bytes"),
            Self::BufferTooSmall => write!(f, "output buffer too small for the encoded frame"),
        }
    }
}

/// Encode `frame` into `out` (delimiter included); returns the number of bytes written.
pub fn encode(frame: &Frame, out: &mut [u8]) -> Result<usize, EncodeError> {
    let mut payload = [0u8; MAX_PAYLOAD];
    let n = postcard::to_slice(frame, &mut payload[..MAX_PAYLOAD - 4])
        .map_err(|_| EncodeError::PayloadTooLarge)?
        .len();
    let crc = CRC.checksum(&payload[..n]);
    payload[n..n + 4].copy_from_slice(&crc.to_le_bytes());
    let needed = cobs::max_encoding_length(n + 4) + 1;
    if out.len() < needed {
        return Err(EncodeError::BufferTooSmall);
    }
    let m = cobs::encode(&payload[..n + 4], out);
    out[m] = 0;
    Ok(m + 1)
}

/// What was wrong with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameErrorKind {
    /// More than [`MAX_FRAME`] bytes without a delimiter; bytes were dropped
    /// until the next `0x00`.
    TooLong,
    /// Not valid COBS.
    Cobs,
    /// Shorter than a CRC.
    TooShort,
    /// The CRC does not match.
    Crc {
        /// CRC carried by the frame.
        received: u32,
        /// CRC of the payload.
        computed: u32,
    },
    /// The CRC matched but the payload is not a [`Frame`] of this version
    /// (or has bytes after one).
    Payload,
}

/// A rejected frame: its cause and the stream offset of its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameError {
    /// Byte offset in the received stream where the bad frame began.
    pub offset: u64,
    /// Its length in bytes (delimiter excluded).
    pub len: usize,
    /// What was wrong.
    pub kind: FrameErrorKind,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "bad frame at byte {} ({} bytes): ",
            self.offset, self.len
        )?;
        match self.kind {
            FrameErrorKind::TooLong => {
                write!(f, "longer than {MAX_FRAME} bytes without a delimiter")
            }
            FrameErrorKind::Cobs => write!(f, "invalid COBS encoding"),
            FrameErrorKind::TooShort => write!(f, "too short to hold a CRC"),
            FrameErrorKind::Crc { received, computed } => {
                write!(
                    f,
                    "CRC mismatch (frame says {received:#010x}, payload gives {computed:#010x})"
                )
            }
            FrameErrorKind::Payload => {
                write!(f, "CRC valid but the payload is not a protocol frame")
            }
        }
    }
}

/// Accumulates received bytes and yields frames or errors. Partial reads are
/// normal: feed whatever arrived, as often as needed.
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: [u8; MAX_FRAME],
    len: usize,
    overflowed: bool,
    /// Stream offset of the next byte.
    position: u64,
    /// Stream offset of the current frame's first byte.
    start: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// An empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_FRAME],
            len: 0,
            overflowed: false,
            position: 0,
            start: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Drop any partial frame (e.g. after reconnecting).
    pub fn reset(&mut self) {
        self.len = 0;
        self.overflowed = false;
        self.start = self.position;
    }

    /// Feed bytes until one frame (or one error) completes. Returns it, if any,
    /// and the bytes not yet consumed; call again with those.
    pub fn feed<'a>(&mut self, bytes: &'a [u8]) -> (Option<Result<Frame, FrameError>>, &'a [u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            if let Some(r) = self.push(b) {
                return (Some(r), &bytes[i + 1..]);
            }
        }
        (None, &[])
    }

    /// Feed one byte.
    pub fn push(&mut self, byte: u8) -> Option<Result<Frame, FrameError>> {
        self.position += 1;
        if byte != 0 {
            if self.len < MAX_FRAME {
                self.buf[self.len] = byte;
                self.len += 1;
            } else {
                self.overflowed = true;
            }
            return None;
        }
        let (offset, len, overflowed) = (self.start, self.len, self.overflowed);
        self.start = self.position;
        self.len = 0;
        self.overflowed = false;
        if len == 0 && !overflowed {
            // Back-to-back delimiters: nothing to report.
            return None;
        }
        let err = |kind| Some(Err(FrameError { offset, len, kind }));
        if overflowed {
            return err(FrameErrorKind::TooLong);
        }
        let n = match cobs::decode_in_place_report(&mut self.buf[..len]) {
            Ok(r) => r.frame_size(),
            Err(_) => return err(FrameErrorKind::Cobs),
        };
        if n < 4 {
            return err(FrameErrorKind::TooShort);
        }
        let (payload, tail) = self.buf[..n].split_at(n - 4);
        let received = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let computed = CRC.checksum(payload);
        if received != computed {
            return err(FrameErrorKind::Crc { received, computed });
        }
        // The whole payload is the frame: trailing bytes (a sender's bug)
        // are refused, not ignored.
        match postcard::take_from_bytes::<Frame>(payload) {
            Ok((f, [])) => Some(Ok(f)),
            Ok(_) | Err(_) => err(FrameErrorKind::Payload),
        }
    }
}

#[cfg(test)]
mod tests;
