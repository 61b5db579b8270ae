//! The Feetech bus against emulated STS3215s on a pseudo-terminal (the real
//! byte protocol both ways), and against a scripted pseudo-terminal for the
//! exact bytes on the wire, garbage, and late replies.
#![cfg(unix)]

use diffbc_servo::emulated::{EmuBus, EmuServo};
use diffbc_servo::feetech::{self, FeetechBus, FeetechDevice};
use diffbc_servo::{Bus, BusError, Register, ServoState};
use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: diffbc_alloc_count::Counting = diffbc_alloc_count::Counting;

const TIMEOUT: Duration = Duration::from_millis(200);
const IDS: [u8; 6] = [1, 2, 3, 4, 5, 6];

fn so101(positions: [f32; 6]) -> (EmuBus, FeetechBus) {
    let servos = IDS
        .iter()
        .zip(positions)
        .map(|(&id, p)| FeetechDevice::sts3215(id, p))
        .collect();
    let emu = EmuBus::spawn(FeetechDevice::new(), servos).expect("pty");
    let bus = FeetechBus::open(&emu.path, 1_000_000, TIMEOUT).expect("open");
    (emu, bus)
}

/// A servo that answers from a script: for each step, read a request of
/// `n` bytes, wait `delay`, write `reply`. Returns the requests.
type Step = (usize, Duration, Vec<u8>);

fn scripted(steps: Vec<Step>) -> (FeetechBus, JoinHandle<Vec<Vec<u8>>>) {
    let (mut master, slave) = TTYPort::pair().expect("pty pair");
    let bus = FeetechBus::from_port(Box::new(slave), "scripted", TIMEOUT);
    let servo = std::thread::spawn(move || {
        let _ = master.set_timeout(Duration::from_millis(20));
        let mut requests = Vec::new();
        for (n, delay, reply) in steps {
            let mut req = vec![0u8; n];
            let mut got = 0;
            let until = Instant::now() + Duration::from_secs(3);
            while got < n && Instant::now() < until {
                if let Ok(k) = master.read(&mut req[got..]) {
                    got += k;
                }
            }
            req.truncate(got);
            requests.push(req);
            std::thread::sleep(delay);
            master.write_all(&reply).expect("reply");
        }
        // Keep the master open until the host has read the last reply.
        std::thread::sleep(Duration::from_millis(300));
        requests
    });
    (bus, servo)
}

/// A status packet, built by hand (not with the crate's encoder).
fn status(id: u8, error: u8, params: &[u8]) -> Vec<u8> {
    let length = params.len() as u8 + 2;
    let sum: u32 = [id, length, error]
        .iter()
        .chain(params)
        .map(|&b| u32::from(b))
        .sum();
    let mut p = vec![0xFF, 0xFF, id, length, error];
    p.extend_from_slice(params);
    p.push(!(sum as u8));
    p
}

fn read_until<F: Fn(&[ServoState]) -> bool>(
    bus: &mut FeetechBus,
    ids: &[u8],
    done: F,
) -> Vec<ServoState> {
    let mut out = vec![ServoState::default(); ids.len()];
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        bus.sync_read_state(ids, &mut out).expect("sync read");
        if done(&out) {
            return out;
        }
        assert!(Instant::now() < until, "never arrived: {out:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ping_answers_the_sts3215_model_and_a_missing_servo_times_out() {
    let (emu, mut bus) = so101([2048.0; 6]);
    for id in IDS {
        assert_eq!(bus.ping(id).expect("ping"), 777);
    }
    match bus.ping(9) {
        Err(BusError::Timeout {
            family,
            id,
            instruction,
            ..
        }) => assert_eq!((family, id, instruction), ("feetech", 9, "PING")),
        other => panic!("{other:?}"),
    }
    let s = bus.stats();
    assert_eq!(s.timeouts, 1);
    // PING + READ of the model per servo, then the lone PING.
    assert_eq!(s.packets_sent, 13);
    assert_eq!(s.status_received, 12);
    emu.shutdown();
}

#[test]
fn torque_on_and_off_reaches_the_emulator_and_reads_back() {
    let (emu, mut bus) = so101([2048.0; 6]);
    for id in IDS {
        assert_eq!(emu.torque(id), Some(false));
        bus.write(id, Register::TorqueEnable, 1).expect("torque on");
    }
    for id in IDS {
        assert_eq!(emu.torque(id), Some(true));
        assert_eq!(bus.read(id, Register::TorqueEnable).expect("read"), 1);
    }
    bus.sync_write(&IDS, Register::TorqueEnable, &[0; 6])
        .expect("torque off");
    // SYNC_WRITE has no reply: a ping makes sure the emulator took it.
    bus.ping(1).expect("ping");
    for id in IDS {
        assert_eq!(emu.torque(id), Some(false));
        assert_eq!(bus.read(id, Register::TorqueEnable).expect("read"), 0);
    }
    emu.shutdown();
}

#[test]
fn goals_by_sync_write_are_recorded_in_order_and_the_servos_arrive() {
    let (emu, mut bus) = so101([2048.0, 1000.0, 3000.0, 2048.0, 500.0, 3500.0]);
    bus.sync_write(&IDS, Register::TorqueEnable, &[1; 6])
        .expect("torque");
    let first = [2100, 1100, 2900, 2000, 700, 3400];
    let goals = [2200, 1200, 2800, 1900, 900, 3300];
    bus.sync_write(&IDS, Register::GoalPosition, &first)
        .expect("goals");
    bus.sync_write(&IDS, Register::GoalPosition, &goals)
        .expect("goals");
    let out = read_until(&mut bus, &IDS, |s| {
        s.iter()
            .zip(goals)
            .all(|(s, g)| (s.position - g).abs() <= 2 && s.velocity.abs() < 100)
    });
    assert_eq!(out.len(), 6);
    {
        let state = emu.lock();
        let expect = |g: [i32; 6]| IDS.iter().copied().zip(g).collect::<Vec<_>>();
        assert_eq!(state.goal_writes, vec![expect(first), expect(goals)]);
        assert_eq!(state.bad_packets, 0);
    }
    let s = bus.stats();
    assert!(s.last_round_trip > Duration::ZERO && s.max_round_trip >= s.last_round_trip);
    assert_eq!((s.timeouts, s.corrupt, s.servo_errors), (0, 0, 0));
    emu.shutdown();
}

#[test]
fn a_corrupt_status_is_a_checksum_error_counted_and_the_next_read_is_clean() {
    let (emu, mut bus) = so101([2048.0; 6]);
    let mut out = [ServoState::default(); 6];
    emu.faults.corrupt_status.store(1, Ordering::Relaxed);
    match bus.sync_read_state(&IDS, &mut out) {
        Err(BusError::Checksum {
            family,
            id,
            what,
            received,
            computed,
            offset,
        }) => {
            assert_eq!((family, id, what, offset), ("feetech", 1, "checksum", 0));
            assert_eq!(received, computed ^ 0x5A);
        }
        other => panic!("{other:?}"),
    }
    let s = bus.stats();
    assert_eq!((s.corrupt, s.status_received, s.timeouts), (1, 5, 0));
    bus.sync_read_state(&IDS, &mut out).expect("clean again");
    assert!(out.iter().all(|s| s.position == 2048), "{out:?}");
    assert_eq!(bus.stats().status_received, 11);
    emu.shutdown();
}

#[test]
fn a_missing_status_is_a_timeout_naming_the_servo_and_does_not_shift_the_rest() {
    let (emu, mut bus) = so101([100.0, 200.0, 300.0, 400.0, 500.0, 600.0]);
    let mut out = [ServoState::default(); 6];
    emu.faults.drop_status.store(1, Ordering::Relaxed);
    match bus.sync_read_state(&IDS, &mut out) {
        Err(BusError::Timeout {
            family,
            id,
            instruction,
            ..
        }) => assert_eq!((family, id, instruction), ("feetech", 1, "SYNC_READ")),
        other => panic!("{other:?}"),
    }
    // The others came, each in its own slot.
    let positions: Vec<i32> = out.iter().map(|s| s.position).collect();
    assert_eq!(positions, [0, 200, 300, 400, 500, 600]);
    let s = bus.stats();
    assert_eq!((s.timeouts, s.status_received), (1, 5));
    // A servo that is not there: the last slot waits out the timeout.
    let t0 = Instant::now();
    let mut two = [ServoState::default(); 2];
    match bus.sync_read_state(&[1, 42], &mut two) {
        Err(BusError::Timeout { id: 42, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() >= TIMEOUT);
    assert_eq!(two[0].position, 100);
    assert_eq!(bus.stats().timeouts, 2);
    bus.sync_read_state(&IDS, &mut out).expect("clean again");
    assert_eq!(out[0].position, 100);
    emu.shutdown();
}

#[test]
fn the_overload_bit_is_a_servo_error_in_words() {
    let (emu, mut bus) = so101([2048.0; 6]);
    let mut out = [ServoState::default(); 6];
    emu.faults.overload_id.store(3, Ordering::Relaxed);
    match bus.sync_read_state(&IDS, &mut out) {
        Err(BusError::Servo {
            family,
            id,
            bits,
            meaning,
        }) => {
            assert_eq!((family, id, bits), ("feetech", 3, feetech::ERR_OVERLOAD));
            assert_eq!(meaning, "overload");
        }
        other => panic!("{other:?}"),
    }
    let s = bus.stats();
    assert_eq!((s.servo_errors, s.status_received, s.corrupt), (1, 6, 0));
    match bus.read(3, Register::PresentPosition) {
        Err(e @ BusError::Servo { .. }) => {
            assert!(
                e.to_string()
                    .contains("servo 3: error bits 0x20 (overload)"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    emu.faults.overload_id.store(0, Ordering::Relaxed);
    bus.sync_read_state(&IDS, &mut out).expect("clean again");
    assert_eq!(bus.stats().servo_errors, 2);
    emu.shutdown();
}

#[test]
fn negative_positions_and_velocities_decode_and_the_homing_offset_is_subtracted() {
    let (emu, mut bus) = so101([100.0; 6]);
    bus.write(1, Register::HomingOffset, 300).expect("offset");
    assert_eq!(emu.lock().servo(1).map(|s| s.homing_offset), Some(300));
    assert_eq!(bus.read(1, Register::HomingOffset).expect("read"), 300);
    // Present = Actual − HomingOffset = 100 − 300.
    assert_eq!(bus.read(1, Register::PresentPosition).expect("read"), -200);
    // Drive it further negative: the goal is in the present frame.
    bus.write(1, Register::TorqueEnable, 1).expect("torque");
    bus.write(1, Register::GoalPosition, -1000).expect("goal");
    let out = read_until(&mut bus, &[1], |s| {
        s[0].position < -400 && s[0].velocity < -100
    });
    assert!(out[0].velocity >= -4096, "{out:?}");
    let out = read_until(&mut bus, &[1], |s| (s[0].position + 1000).abs() <= 2);
    assert_eq!(out.len(), 1);
    // The horn went to goal + offset = −700.
    let actual = emu.lock().servo(1).map(|s| s.position).expect("servo");
    assert!((actual + 700.0).abs() < 3.0, "{actual}");
    // A negative offset round-trips through bit 11.
    bus.write(2, Register::HomingOffset, -5).expect("offset");
    assert_eq!(emu.lock().servo(2).map(|s| s.homing_offset), Some(-5));
    assert_eq!(bus.read(2, Register::PresentPosition).expect("read"), 105);
    emu.shutdown();
}

#[test]
fn bad_arguments_are_refused_before_anything_is_sent() {
    let (emu, mut bus) = so101([2048.0; 6]);
    let mut out = [ServoState::default(); 2];
    assert!(matches!(
        bus.sync_read_state(&IDS, &mut out),
        Err(BusError::Usage(_))
    ));
    assert!(matches!(
        bus.sync_write(&IDS, Register::GoalPosition, &[1, 2]),
        Err(BusError::Usage(_))
    ));
    assert!(matches!(bus.ping(0xFE), Err(BusError::Usage(_))));
    match bus.sync_write(&[1], Register::GoalPosition, &[40_000]) {
        Err(BusError::Range {
            id: 1,
            register: Register::GoalPosition,
            value: 40_000,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        bus.write(1, Register::HomingOffset, 2048),
        Err(BusError::Range { .. })
    ));
    assert_eq!(bus.stats().packets_sent, 0);
    emu.shutdown();
}

#[test]
fn the_bytes_on_the_wire_are_the_documented_ones() {
    let ping_1 = vec![0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFB];
    // READ id 1, address 3, 2 bytes: the model number.
    let read_model = vec![0xFF, 0xFF, 0x01, 0x04, 0x02, 0x03, 0x02, 0xF3];
    // SYNC_WRITE goal (42 = 0x2A, 2 bytes): id 1 ← 2048, id 2 ← −5 (0x8005).
    let sync_write = vec![
        0xFF, 0xFF, 0xFE, 0x0A, 0x83, 0x2A, 0x02, 0x01, 0x00, 0x08, 0x02, 0x05, 0x80, 0xB8,
    ];
    // SYNC_READ 4 bytes from 56 (0x38) of ids 1, 2, 3.
    let sync_read = vec![
        0xFF, 0xFF, 0xFE, 0x07, 0x82, 0x38, 0x04, 0x01, 0x02, 0x03, 0x36,
    ];
    let state = |id, pos: [u8; 2], vel: [u8; 2]| status(id, 0, &[pos[0], pos[1], vel[0], vel[1]]);
    let mut reply = state(1, [0x00, 0x08], [0x00, 0x00]);
    reply.extend(state(2, [0xC8, 0x80], [0x0C, 0x80]));
    reply.extend(state(3, [0xFF, 0x0F], [0x34, 0x12]));
    let (mut bus, servo) = scripted(vec![
        (ping_1.len(), Duration::ZERO, status(1, 0, &[])),
        (
            read_model.len(),
            Duration::ZERO,
            status(1, 0, &[0x09, 0x03]),
        ),
        (sync_write.len() + sync_read.len(), Duration::ZERO, reply),
    ]);
    assert_eq!(bus.ping(1).expect("ping"), 777);
    bus.sync_write(&[1, 2], Register::GoalPosition, &[2048, -5])
        .expect("sync write");
    let mut out = [ServoState::default(); 3];
    bus.sync_read_state(&[1, 2, 3], &mut out)
        .expect("sync read");
    assert_eq!(
        out,
        [
            ServoState {
                position: 2048,
                velocity: 0
            },
            ServoState {
                position: -200,
                velocity: -12
            },
            ServoState {
                position: 4095,
                velocity: 0x1234
            },
        ]
    );
    let requests = servo.join().expect("script");
    let mut both = sync_write.clone();
    both.extend(&sync_read);
    assert_eq!(requests, vec![ping_1, read_model, both]);
}

#[test]
fn garbage_before_a_status_packet_is_skipped_and_a_bad_checksum_names_its_byte() {
    let good_1 = status(1, 0, &[0x10, 0x00, 0x00, 0x00]);
    let good_2 = status(2, 0, &[0x20, 0x00, 0x00, 0x00]);
    let mut garbage_first = vec![0x00, 0x13, 0xFF, 0x55, 0xFF];
    garbage_first.extend(&good_1);
    garbage_first.extend(&good_2);
    let mut bad_second = vec![0x42, 0x42, 0x42];
    bad_second.extend(&good_1);
    let at = bad_second.len();
    let mut corrupt = good_2.clone();
    *corrupt.last_mut().expect("bytes") ^= 0x01;
    bad_second.extend(&corrupt);
    // FF FF FE LEN 82 addr count id id checksum.
    let request = 8 + 2;
    let (mut bus, servo) = scripted(vec![
        (request, Duration::ZERO, garbage_first),
        (request, Duration::ZERO, bad_second),
    ]);
    let mut out = [ServoState::default(); 2];
    bus.sync_read_state(&[1, 2], &mut out)
        .expect("garbage skipped");
    assert_eq!((out[0].position, out[1].position), (0x10, 0x20));
    match bus.sync_read_state(&[1, 2], &mut out) {
        Err(e @ BusError::Checksum { .. }) => {
            let BusError::Checksum {
                id,
                offset,
                received,
                computed,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!((id, offset), (2, at));
            assert_eq!(received, computed ^ 0x01);
        }
        other => panic!("{other:?}"),
    }
    let s = bus.stats();
    assert_eq!((s.status_received, s.corrupt), (3, 1));
    servo.join().expect("script");
}

#[test]
fn a_late_reply_is_flushed_and_does_not_shift_the_next_read() {
    let request = 8 + 1;
    let late = status(1, 0, &[0x11, 0x00, 0x00, 0x00]);
    let fresh = status(1, 0, &[0x22, 0x00, 0x00, 0x00]);
    let (mut bus, servo) = scripted(vec![
        (request, TIMEOUT + Duration::from_millis(30), late),
        (request, Duration::ZERO, fresh),
    ]);
    let mut out = [ServoState::default(); 1];
    assert!(matches!(
        bus.sync_read_state(&[1], &mut out),
        Err(BusError::Timeout { id: 1, .. })
    ));
    // The late reply lands while nobody reads.
    std::thread::sleep(Duration::from_millis(150));
    bus.sync_read_state(&[1], &mut out).expect("fresh");
    assert_eq!(out[0].position, 0x22);
    servo.join().expect("script");
}

#[test]
fn sync_read_state_and_sync_write_do_not_allocate() {
    let (emu, mut bus) = so101([2048.0; 6]);
    let mut out = [ServoState::default(); 6];
    let goals = [2048, 2050, 2046, 2048, 2052, 2044];
    let mut tick = |bus: &mut FeetechBus| {
        bus.sync_write(&IDS, Register::GoalPosition, &goals)
            .expect("write");
        bus.sync_read_state(&IDS, &mut out).expect("read");
    };
    // Warm-up: one-time set-up inside the port and the standard library.
    for _ in 0..5 {
        tick(&mut bus);
    }
    let ((), n) = diffbc_alloc_count::count(|| {
        for _ in 0..200 {
            tick(&mut bus);
        }
    });
    // The counter works on this thread.
    let (_, one) = diffbc_alloc_count::count(|| std::hint::black_box(vec![0u8; 8]));
    assert_eq!(one, 1);
    assert_eq!(n, 0, "200 ticks allocated {n} times");
    assert_eq!(bus.stats().packets_sent, 410);
    assert_eq!(emu.lock().goal_writes.len(), 205);
    emu.shutdown();
}

#[test]
fn every_register_reads_back_what_was_written() {
    let (emu, mut bus) = so101([2048.0; 6]);
    for (register, value) in [
        (Register::MinPositionLimit, 100),
        (Register::MaxPositionLimit, 3900),
        (Register::HomingOffset, -2047),
        (Register::GoalPosition, 1234),
        (Register::TorqueEnable, 1),
    ] {
        bus.write(4, register, value).expect("write");
        assert_eq!(bus.read(4, register).expect("read"), value, "{register:?}");
    }
    let state = emu.lock();
    let s: &EmuServo = state.servo(4).expect("servo");
    assert_eq!(
        (s.min_limit, s.max_limit, s.homing_offset, s.goal, s.torque),
        (100, 3900, -2047, 1234, true)
    );
}

/// The emulator's unplug closes its own handle to the pty; the bus keeps its
/// own, so here the servos fall silent (a timeout). A real adapter pulled
/// out fails the read or write instead (`BusError::Io`).
#[test]
fn an_unplugged_adapter_is_an_error_not_a_hang() {
    let (emu, mut bus) = so101([2048.0; 6]);
    let mut out = [ServoState::default(); 6];
    bus.sync_read_state(&IDS, &mut out).expect("plugged");
    emu.faults.unplug.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    let r = bus.sync_read_state(&IDS, &mut out);
    assert!(
        matches!(r, Err(BusError::Timeout { .. } | BusError::Io { .. })),
        "{r:?}"
    );
    assert!(t0.elapsed() < 3 * TIMEOUT);
    emu.shutdown();
}
