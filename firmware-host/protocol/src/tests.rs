extern crate std;

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::vec;
use std::vec::Vec;

fn joints(v: &[f32]) -> Joints {
    Joints::from_slice(v).expect("fits")
}

fn samples() -> Vec<Frame> {
    let limit = JointLimit {
        min: -1.5,
        max: 1.5,
        max_velocity: 2.0,
        max_acceleration: 8.0,
    };
    let mut limits = heapless::Vec::new();
    for _ in 0..MAX_JOINTS {
        limits.push(limit).expect("fits");
    }
    vec![
        Frame::Hello {
            protocol: PROTOCOL_VERSION,
        },
        Frame::Handshake(Handshake {
            protocol: PROTOCOL_VERSION,
            joints: limits,
            max_rate_hz: 500,
            watchdog_ms: 200,
        }),
        Frame::Telemetry(Telemetry {
            seq: u32::MAX,
            device_time_us: u64::MAX,
            last_command_seq: 41,
            positions: joints(&[
                0.0,
                -0.0,
                1.0,
                -1.5,
                1e-9,
                3.25,
                f32::MAX,
                f32::MIN_POSITIVE,
            ]),
            velocities: joints(&[0.5; MAX_JOINTS]),
            status: status::ENABLED | status::FAULT,
            // The largest counters: the worst-case payload still fits.
            link: LinkCounters {
                commands: u32::MAX,
                skipped: u32::MAX,
                stale: u32::MAX,
                bad_frames: u32::MAX,
            },
        }),
        Frame::Command(Command {
            seq: 42,
            targets: joints(&[0.1, 0.2, 0.3, 0.4]),
        }),
        Frame::Heartbeat { seq: 7 },
        Frame::Fault(Fault {
            code: FaultCode::Watchdog,
            joint: 255,
            detail: 250,
        }),
        Frame::Stop {
            reason: StopReason::Operator,
        },
    ]
}

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    let n = encode(frame, &mut buf).expect("encodes");
    buf[..n].to_vec()
}

/// Decode a whole stream; returns frames and errors in order.
fn decode_all(stream: &[u8], chunk: usize) -> (Vec<Frame>, Vec<FrameError>) {
    let mut d = Decoder::new();
    let (mut frames, mut errors) = (Vec::new(), Vec::new());
    for piece in stream.chunks(chunk.max(1)) {
        let mut rest = piece;
        loop {
            let (r, tail) = d.feed(rest);
            match r {
                Some(Ok(f)) => frames.push(f),
                Some(Err(e)) => errors.push(e),
                None => break,
            }
            rest = tail;
        }
    }
    (frames, errors)
}

#[test]
fn every_frame_round_trips_whatever_the_read_size() {
    let frames = samples();
    let stream: Vec<u8> = frames.iter().flat_map(encoded).collect();
    for chunk in [1, 2, 3, 7, 64, stream.len()] {
        let (got, errors) = decode_all(&stream, chunk);
        assert_eq!(got, frames, "read size {chunk}");
        assert!(errors.is_empty());
    }
    // Encoded frames hold no zero byte but the delimiter, and fit MAX_FRAME.
    for f in &frames {
        let e = encoded(f);
        assert!(e.len() <= MAX_FRAME);
        assert_eq!(e.iter().filter(|&&b| b == 0).count(), 1);
        assert_eq!(*e.last().expect("non-empty"), 0);
    }
}

#[test]
fn garbage_between_frames_is_reported_and_skipped() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let frames = samples();
    let mut stream = Vec::new();
    let mut garbage_runs = 0;
    for f in &frames {
        // Garbage that ends in a delimiter, so the decoder resynchronises.
        let n = rng.random_range(1..40);
        stream.extend((0..n).map(|_| rng.random_range(1..=255u8)));
        stream.push(0);
        garbage_runs += 1;
        stream.extend(encoded(f));
    }
    let (got, errors) = decode_all(&stream, 5);
    assert_eq!(got, frames);
    assert_eq!(errors.len(), garbage_runs, "{errors:?}");
    assert_eq!(errors[0].offset, 0);
}

#[test]
fn a_flipped_bit_is_never_accepted() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for f in samples() {
        let good = encoded(&f);
        for _ in 0..200 {
            let mut bad = good.clone();
            let i = rng.random_range(0..bad.len() - 1);
            bad[i] ^= 1 << rng.random_range(0..8);
            let (got, errors) = decode_all(&bad, 4);
            assert!(got.is_empty(), "a corrupted frame was accepted: {got:?}");
            assert!(!errors.is_empty());
        }
    }
}

#[test]
fn crc_errors_name_the_offset_and_both_crcs() {
    let first = encoded(&Frame::Heartbeat { seq: 1 });
    let mut second = encoded(&Frame::Heartbeat { seq: 2 });
    // Corrupt a payload byte (not the COBS code byte) of the second frame.
    second[2] ^= 0x10;
    let stream: Vec<u8> = first.iter().chain(&second).copied().collect();
    let (got, errors) = decode_all(&stream, 3);
    assert_eq!(got, vec![Frame::Heartbeat { seq: 1 }]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].offset, first.len() as u64);
    assert!(
        matches!(errors[0].kind, FrameErrorKind::Crc { .. }),
        "{:?}",
        errors[0]
    );
    let text = std::format!("{}", errors[0]);
    assert!(
        text.contains(&std::format!("byte {}", first.len())) && text.contains("CRC mismatch"),
        "{text}"
    );
}

#[test]
fn truncated_and_overlong_frames_are_errors_then_decoding_resumes() {
    let good = encoded(&Frame::Command(Command {
        seq: 9,
        targets: joints(&[0.5, 0.25]),
    }));
    let mut stream = good[..good.len() / 2].to_vec();
    stream.push(0); // cut short
    stream.extend(std::iter::repeat_n(0x55u8, 3 * MAX_FRAME)); // no delimiter for too long
    stream.push(0);
    stream.extend(&good);
    let (got, errors) = decode_all(&stream, 11);
    assert_eq!(got.len(), 1);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[1].kind, FrameErrorKind::TooLong);
}

#[test]
fn random_streams_never_panic_and_never_yield_a_frame_with_a_bad_crc() {
    // A property test over seeded random streams mixing valid frames,
    // fragments and noise: every accepted frame is one that was sent.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let frames = samples();
    for _ in 0..300 {
        let mut stream = Vec::new();
        let mut sent = Vec::new();
        for _ in 0..rng.random_range(0..12) {
            match rng.random_range(0..4) {
                0 => {
                    let f = frames[rng.random_range(0..frames.len())].clone();
                    stream.extend(encoded(&f));
                    sent.push(f);
                }
                1 => stream.extend((0..rng.random_range(0..300)).map(|_| rng.random::<u8>())),
                2 => {
                    let e = encoded(&frames[rng.random_range(0..frames.len())]);
                    stream.extend(&e[..rng.random_range(0..e.len())]);
                }
                _ => stream.push(0),
            }
        }
        let (got, _) = decode_all(&stream, rng.random_range(1..50));
        for g in &got {
            assert!(frames.contains(g), "decoded a frame nobody sent: {g:?}");
        }
    }
}

#[test]
fn encode_reports_small_buffers() {
    let mut small = [0u8; 4];
    assert_eq!(
        encode(&Frame::Heartbeat { seq: 1 }, &mut small),
        Err(EncodeError::BufferTooSmall)
    );
}
