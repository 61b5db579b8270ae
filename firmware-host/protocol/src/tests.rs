extern crate std;

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::format;
use std::string::String;
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

/// A frame around any payload, with a correct CRC: what random bytes almost
/// never produce, so the decoder's deserialiser and a device's handling of
/// well-formed but hostile frames get exercised.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut p = payload.to_vec();
    p.extend(CRC.checksum(payload).to_le_bytes());
    let mut out = vec![0u8; cobs::max_encoding_length(p.len()) + 1];
    let m = cobs::encode(&p, &mut out);
    out.truncate(m);
    out.push(0);
    out
}

/// The fuzz target's seed corpus (`fuzz/corpus/decoder`, the first byte of
/// each input is the fuzz target's read size): every frame type; commands a
/// device must refuse (wrong joint counts, NaN, ±inf, huge values); hellos
/// with other versions; frames only a device sends; CRC-valid payloads that
/// are not frames (bad enum tags, truncated and overlong varints, the
/// largest payload); a valid command with each bit flipped, truncated at
/// every length, and garbage without a delimiter longer than any frame.
/// `tests/hil/qemu.rs` writes all of it to the QEMU firmware's UART.
fn seed_corpus() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, chunk: u8, bytes: Vec<u8>| {
        let mut v = vec![chunk];
        v.extend(bytes);
        out.push((format!("{:02}-{name}", out.len()), v));
    };
    for (i, f) in samples().iter().enumerate() {
        add(&format!("sample-{i}"), 1 + i as u8 * 7, encoded(f));
    }
    let cmd = |seq: u32, t: &[f32]| {
        encoded(&Frame::Command(Command {
            seq,
            targets: joints(t),
        }))
    };
    // (Numbered after the sample command's 42: a device drops a command
    // older than one it has before it looks at it.)
    add("command-no-joints", 3, cmd(1001, &[]));
    add("command-8-joints", 5, cmd(1002, &[0.1; MAX_JOINTS]));
    add("command-nan", 64, cmd(1003, &[f32::NAN, 0.0, 0.0, 0.0]));
    add(
        "command-inf",
        2,
        cmd(1004, &[f32::INFINITY, f32::NEG_INFINITY, 0.0, 0.0]),
    );
    add(
        "command-huge",
        9,
        cmd(1005, &[f32::MAX, f32::MIN, 1e30, -1e30]),
    );
    add("command-seq-max-then-0", 11, {
        let mut v = cmd(u32::MAX, &[0.0; 4]);
        v.extend(cmd(0, &[0.1; 4]));
        v.extend(cmd(0, &[0.2; 4]));
        v
    });
    for (name, protocol) in [("hello-0", 0u16), ("hello-3", 3), ("hello-max", u16::MAX)] {
        add(name, 4, encoded(&Frame::Hello { protocol }));
    }
    // Postcard payloads with a correct CRC that are not frames.
    add("payload-bad-tag", 1, framed(&[200, 1, 2, 3]));
    add("payload-empty", 1, framed(&[]));
    add("payload-command-truncated", 2, framed(&[3, 0x81]));
    add(
        "payload-overlong-varint",
        3,
        framed(&[3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
    );
    add(
        "payload-too-many-joints",
        5,
        framed(&[3, 1, 200, 0, 0, 0, 0]),
    );
    add("payload-largest", 255, framed(&[4; MAX_PAYLOAD - 4]));
    add("payload-over-largest", 255, framed(&[4; MAX_PAYLOAD]));
    let valid = cmd(7, &[0.5, -0.5, 0.25, 0.0]);
    for bit in (0..(valid.len() - 1) * 8).step_by(5) {
        let mut v = valid.clone();
        v[bit / 8] ^= 1 << (bit % 8);
        add(&format!("command-flip-{bit}"), 1 + (bit % 13) as u8, v);
    }
    // (The last byte is the delimiter: every cut is short of the frame.)
    for n in 0..valid.len() - 1 {
        let mut v = valid[..n].to_vec();
        v.push(0);
        add(&format!("command-cut-{n}"), 1, v);
    }
    add("no-delimiter", 200, vec![0x55; 2 * MAX_FRAME]);
    add("delimiters", 1, vec![0; 64]);
    out
}

fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decoder")
}

/// The committed seed corpus holds what [`seed_corpus`] makes
/// (`DIFFBC_BLESS=1 cargo test --workspace --lib seed_corpus` rewrites it).
#[test]
fn the_seed_corpus_is_current_and_the_decoder_survives_it() {
    let corpus = seed_corpus();
    let dir = corpus_dir();
    if std::env::var_os("DIFFBC_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("corpus folder");
        for (name, bytes) in &corpus {
            std::fs::write(dir.join(name), bytes).expect("write");
        }
    }
    // Every generated input is there, as generated; inputs `cargo fuzz`
    // adds to the folder are welcome (the QEMU test feeds them too).
    for (name, bytes) in &corpus {
        let path = dir.join(name);
        let on_disk = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; rerun with DIFFBC_BLESS=1", path.display()));
        assert!(
            on_disk == *bytes,
            "{}: contents differ; rerun with DIFFBC_BLESS=1",
            path.display()
        );
    }
    // The fuzz target's property on each: no panic, and every frame
    // accepted re-encodes to one accepted again.
    let mut accepted = 0;
    for (_, bytes) in &corpus {
        let (frames, _) = decode_all(&bytes[1..], usize::from(bytes[0]));
        for f in frames {
            // (Compared as bytes: a NaN target is not equal to itself.)
            let bytes = encoded(&f);
            let again: Vec<Vec<u8>> = decode_all(&bytes, 1).0.iter().map(encoded).collect();
            assert_eq!(again, [bytes]);
            accepted += 1;
        }
    }
    // The samples, the eight hostile commands and the three hellos; no
    // flipped bit, cut frame or CRC-valid non-frame is accepted.
    assert_eq!(accepted, samples().len() + 8 + 3);
}
