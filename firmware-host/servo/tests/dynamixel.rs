//! The Dynamixel bus against emulated X-series servos on a pseudo-terminal:
//! the real bytes both ways, faults injected on the servo side.
#![cfg(unix)]

use diffbc_servo::dynamixel::{DynamixelBus, DynamixelDevice, MODEL_XL330_M288, MODEL_XL430_W250};
use diffbc_servo::emulated::{BusFaults, EmuBus, EmuBusState, EmuServo, ServoDevice};
use diffbc_servo::{Bus, BusError, Register, ServoState};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: diffbc_alloc_count::Counting = diffbc_alloc_count::Counting;

const TIMEOUT: Duration = Duration::from_millis(150);

fn koch_pair() -> Vec<EmuServo> {
    vec![
        EmuServo::new(1, MODEL_XL430_W250, 1000.0),
        EmuServo::new(2, MODEL_XL330_M288, 3000.0),
    ]
}

fn spawn<D: ServoDevice>(device: D, servos: Vec<EmuServo>) -> (EmuBus, DynamixelBus) {
    let emu = EmuBus::spawn(device, servos).expect("pty");
    let bus = DynamixelBus::open(&emu.path, 1_000_000, TIMEOUT).expect("open");
    (emu, bus)
}

#[test]
fn ping_answers_each_servos_model_and_a_missing_servo_times_out() {
    let (emu, mut bus) = spawn(DynamixelDevice::new(), koch_pair());
    assert_eq!(bus.ping(1).expect("ping 1"), MODEL_XL430_W250);
    assert_eq!(bus.ping(2).expect("ping 2"), MODEL_XL330_M288);
    match bus.ping(7) {
        Err(BusError::Timeout {
            family,
            id,
            instruction,
            waited_ms,
        }) => {
            assert_eq!((family, id, instruction), ("dynamixel", 7, "PING"));
            assert_eq!(u128::from(waited_ms), TIMEOUT.as_millis());
        }
        other => panic!("{other:?}"),
    }
    let stats = bus.stats();
    assert_eq!(
        (stats.packets_sent, stats.status_received, stats.timeouts),
        (3, 2, 1)
    );
    assert_eq!(emu.lock().packets, 3);
    emu.shutdown();
}

#[test]
fn torque_on_and_off_reaches_the_servos_and_reads_back() {
    let (emu, mut bus) = spawn(DynamixelDevice::new(), koch_pair());
    assert_eq!(emu.torque(1), Some(false));
    bus.write(1, Register::TorqueEnable, 1).expect("torque on");
    assert_eq!((emu.torque(1), emu.torque(2)), (Some(true), Some(false)));
    assert_eq!(bus.read(1, Register::TorqueEnable).expect("read"), 1);
    bus.sync_write(&[1, 2], Register::TorqueEnable, &[0, 1])
        .expect("sync torque");
    // SYNC_WRITE has no status packet: wait for the emulator to take it.
    let start = Instant::now();
    while emu.torque(2) != Some(true) && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!((emu.torque(1), emu.torque(2)), (Some(false), Some(true)));
    assert_eq!(bus.read(2, Register::TorqueEnable).expect("read"), 1);
    bus.write(2, Register::TorqueEnable, 0).expect("torque off");
    assert_eq!(emu.torque(2), Some(false));
    // A value that does not fit the register never reaches the bus.
    let sent = bus.stats().packets_sent;
    assert!(matches!(
        bus.write(2, Register::TorqueEnable, 256),
        Err(BusError::Range {
            id: 2,
            value: 256,
            ..
        })
    ));
    assert_eq!(bus.stats().packets_sent, sent);
    // Nor a SYNC_WRITE with more values than ids.
    assert!(matches!(
        bus.sync_write(&[1], Register::GoalPosition, &[1, 2]),
        Err(BusError::Usage(_))
    ));
    emu.shutdown();
}

/// SYNC_READ until every servo reports its goal.
fn wait_until_there(bus: &mut DynamixelBus, ids: &[u8], goals: &[i32]) -> Vec<ServoState> {
    let mut out = vec![ServoState::default(); ids.len()];
    let mut moving = false;
    let start = Instant::now();
    loop {
        bus.sync_read_state(ids, &mut out).expect("sync read");
        moving |= out.iter().any(|s| s.velocity != 0);
        if out.iter().zip(goals).all(|(s, g)| s.position == *g) {
            assert!(moving, "the servos never reported a velocity");
            return out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not there: {out:?}, goals {goals:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn goals_by_sync_write_bring_the_servos_there_as_sync_read_sees() {
    let (emu, mut bus) = spawn(DynamixelDevice::new(), koch_pair());
    let ids = [1, 2];
    bus.sync_write(&ids, Register::TorqueEnable, &[1, 1])
        .expect("torque");
    let mut out = [ServoState::default(); 2];
    bus.sync_read_state(&ids, &mut out).expect("sync read");
    assert_eq!(out.map(|s| s.position), [1000, 3000]);
    let goals = [1500, 2500];
    bus.sync_write(&ids, Register::GoalPosition, &goals)
        .expect("goals");
    let out = wait_until_there(&mut bus, &ids, &goals);
    assert_eq!(out.iter().map(|s| s.position).collect::<Vec<_>>(), goals);
    let state = emu.lock();
    assert_eq!(state.goal_writes, vec![vec![(1, 1500), (2, 2500)]]);
    assert_eq!(state.bad_packets, 0);
    drop(state);
    let stats = bus.stats();
    assert_eq!(stats.timeouts + stats.corrupt + stats.servo_errors, 0);
    assert!(stats.last_round_trip > Duration::ZERO);
    assert!(stats.max_round_trip >= stats.last_round_trip);
    assert!(stats.max_round_trip < TIMEOUT);
    // Two statuses per SYNC_READ.
    assert_eq!(stats.status_received, 2 * (stats.packets_sent - 2));
    emu.shutdown();
}

#[test]
fn negative_positions_and_the_homing_offset_convention() {
    let mut servos = koch_pair();
    for s in &mut servos {
        s.min_limit = -4095;
    }
    let (emu, mut bus) = spawn(DynamixelDevice::new(), servos);
    // Present = Actual + Homing Offset: 1000 - 3000 = -2000.
    bus.write(1, Register::HomingOffset, -3000).expect("offset");
    assert_eq!(bus.read(1, Register::HomingOffset).expect("read"), -3000);
    assert_eq!(bus.read(1, Register::PresentPosition).expect("read"), -2000);
    let mut out = [ServoState::default(); 2];
    bus.sync_read_state(&[1, 2], &mut out).expect("sync read");
    assert_eq!(out.map(|s| s.position), [-2000, 3000]);
    // A negative goal in the present frame: the horn goes to goal + 3000.
    bus.write(1, Register::TorqueEnable, 1).expect("torque");
    bus.sync_write(&[1], Register::GoalPosition, &[-2500])
        .expect("goal");
    wait_until_there(&mut bus, &[1], &[-2500]);
    let horn = emu.lock().servo(1).map(|s| s.position).expect("servo 1");
    assert!((horn - 500.0).abs() <= 1.0, "{horn}");
    // With torque on the EEPROM refuses writes: an access error.
    match bus.write(1, Register::HomingOffset, 0) {
        Err(BusError::Servo {
            id: 1,
            bits,
            meaning,
            ..
        }) => {
            assert_eq!((bits, meaning.as_str()), (0x07, "access error"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bus.stats().servo_errors, 1);
    emu.shutdown();
}

#[test]
fn a_corrupt_status_is_a_crc_error_at_its_offset_and_the_bus_recovers() {
    let (emu, mut bus) = spawn(DynamixelDevice::new(), koch_pair());
    let ids = [1, 2];
    let mut out = [ServoState::default(); 2];
    // The first servo's status goes out corrupt; the packet starts the reply.
    emu.faults.corrupt_status.store(1, Ordering::Relaxed);
    match bus.sync_read_state(&ids, &mut out) {
        Err(BusError::Checksum {
            family,
            id,
            what,
            received,
            computed,
            offset,
        }) => {
            assert_eq!((family, id, what, offset), ("dynamixel", 1, "CRC", 0));
            assert_ne!(received, computed);
        }
        other => panic!("{other:?}"),
    }
    // The other servo's state still came through.
    assert_eq!(out[1].position, 3000);
    assert_eq!(bus.stats().corrupt, 1);
    // The next tick is clean.
    bus.sync_read_state(&ids, &mut out).expect("recovered");
    assert_eq!(out.map(|s| s.position), [1000, 3000]);
    emu.shutdown();
}

#[test]
fn a_missing_status_is_a_timeout_naming_the_servo_and_the_instruction() {
    let (emu, mut bus) = spawn(DynamixelDevice::new(), koch_pair());
    let ids = [1, 2];
    let mut out = [ServoState::default(); 2];
    emu.faults.drop_status.store(1, Ordering::Relaxed);
    match bus.sync_read_state(&ids, &mut out) {
        Err(e @ BusError::Timeout { .. }) => {
            let BusError::Timeout {
                id, instruction, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((*id, *instruction), (1, "SYNC_READ"));
            assert!(e.to_string().contains("servo 1"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Servo 2 answered after the missing one, without waiting out the
    // timeout.
    assert_eq!(out[1].position, 3000);
    assert!(bus.stats().last_round_trip < TIMEOUT);
    assert_eq!((bus.stats().timeouts, bus.stats().status_received), (1, 1));
    // The last servo's status missing: the whole timeout is waited.
    emu.faults.drop_status.store(1, Ordering::Relaxed);
    let ids = [2];
    let mut one = [ServoState::default(); 1];
    assert!(matches!(
        bus.sync_read_state(&ids, &mut one),
        Err(BusError::Timeout { id: 2, .. })
    ));
    assert!(bus.stats().last_round_trip >= TIMEOUT);
    assert_eq!(bus.stats().timeouts, 2);
    bus.sync_read_state(&[1, 2], &mut out).expect("recovered");
    emu.shutdown();
}

#[test]
fn an_overload_is_a_servo_error_that_says_overload() {
    let (emu, mut bus) = spawn(DynamixelDevice::new(), koch_pair());
    let mut out = [ServoState::default(); 2];
    emu.faults.overload_id.store(2, Ordering::Relaxed);
    match bus.sync_read_state(&[1, 2], &mut out) {
        Err(e @ BusError::Servo { .. }) => {
            let BusError::Servo {
                family,
                id,
                bits,
                meaning,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((*family, *id, *bits), ("dynamixel", 2, 0x80));
            assert!(meaning.contains("overload"), "{meaning}");
            assert!(e.to_string().contains("servo 2"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // The alert bit alone leaves the data good.
    assert_eq!(out.map(|s| s.position), [1000, 3000]);
    assert_eq!(bus.stats().servo_errors, 1);
    assert!(matches!(
        bus.ping(2),
        Err(BusError::Servo {
            id: 2,
            bits: 0x80,
            ..
        })
    ));
    emu.faults.overload_id.store(0, Ordering::Relaxed);
    bus.sync_read_state(&[1, 2], &mut out).expect("cleared");
    emu.shutdown();
}

/// A [`DynamixelDevice`] on a noisy line: bytes of garbage before each
/// reply.
struct Noisy {
    inner: DynamixelDevice,
    garbage: &'static [u8],
}

impl ServoDevice for Noisy {
    fn feed(&mut self, byte: u8, bus: &mut EmuBusState, faults: &BusFaults, reply: &mut Vec<u8>) {
        let mut mine = Vec::new();
        self.inner.feed(byte, bus, faults, &mut mine);
        if !mine.is_empty() {
            reply.extend_from_slice(self.garbage);
            reply.extend_from_slice(&mine);
        }
    }

    fn goal_actual(&self, servo: &EmuServo) -> f32 {
        self.inner.goal_actual(servo)
    }
}

#[test]
fn garbage_before_a_status_packet_is_skipped_and_counted_in_the_offset() {
    // Garbage that looks like the start of packets.
    const GARBAGE: &[u8] = &[0x00, 0xFF, 0xFF, 0xFD, 0xFD, 0x13, 0xFF, 0xFF];
    let noisy = Noisy {
        inner: DynamixelDevice::new(),
        garbage: GARBAGE,
    };
    let (emu, mut bus) = spawn(noisy, koch_pair());
    assert_eq!(bus.ping(1).expect("ping"), MODEL_XL430_W250);
    let mut out = [ServoState::default(); 2];
    bus.sync_read_state(&[1, 2], &mut out).expect("sync read");
    assert_eq!(out.map(|s| s.position), [1000, 3000]);
    // Both statuses corrupt: the first is reported, at its offset after
    // the garbage; both are counted.
    emu.faults.corrupt_status.store(2, Ordering::Relaxed);
    match bus.sync_read_state(&[1, 2], &mut out) {
        Err(BusError::Checksum { id: 1, offset, .. }) => {
            assert_eq!(offset, GARBAGE.len());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bus.stats().corrupt, 2);
    bus.sync_read_state(&[1, 2], &mut out).expect("recovered");
    emu.shutdown();
}

#[test]
fn sync_read_state_and_sync_write_do_not_allocate() {
    let (emu, mut bus) = spawn(DynamixelDevice::new(), koch_pair());
    let ids = [1, 2];
    let mut out = [ServoState::default(); 2];
    let mut tick = |bus: &mut DynamixelBus, i: i32| {
        bus.sync_read_state(&ids, &mut out).expect("sync read");
        bus.sync_write(&ids, Register::GoalPosition, &[1000 + i, 3000 - i])
            .expect("sync write");
    };
    // Warm-up.
    for i in 0..5 {
        tick(&mut bus, i);
    }
    let ((), n) = diffbc_alloc_count::count(|| {
        for i in 0..50 {
            tick(&mut bus, i);
        }
    });
    // The counter works.
    let (_, one) = diffbc_alloc_count::count(|| std::hint::black_box(vec![0u8; 8]));
    assert_eq!(one, 1);
    assert_eq!(n, 0, "50 ticks allocated {n} times");
    assert_eq!(bus.stats().timeouts, 0);
    emu.shutdown();
}

/// A [`DynamixelDevice`] whose every reply goes out twice, as a late
/// repeat would arrive after the host stopped listening.
struct Doubled(DynamixelDevice);

impl ServoDevice for Doubled {
    fn feed(&mut self, byte: u8, bus: &mut EmuBusState, faults: &BusFaults, reply: &mut Vec<u8>) {
        let mut mine = Vec::new();
        self.0.feed(byte, bus, faults, &mut mine);
        reply.extend_from_slice(&mine);
        reply.extend_from_slice(&mine);
    }

    fn goal_actual(&self, servo: &EmuServo) -> f32 {
        self.0.goal_actual(servo)
    }
}

#[test]
fn stale_replies_are_flushed_before_each_read_transaction() {
    let (emu, mut bus) = spawn(Doubled(DynamixelDevice::new()), koch_pair());
    let mut out = [ServoState::default(); 2];
    for _ in 0..3 {
        bus.sync_read_state(&[1, 2], &mut out).expect("sync read");
        // Let the repeats land in the port's input.
        std::thread::sleep(Duration::from_millis(20));
        // Servo 1's repeated 8-byte status must not answer this 1-byte READ.
        assert_eq!(bus.read(1, Register::TorqueEnable).expect("read"), 0);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(out.map(|s| s.position), [1000, 3000]);
    let stats = bus.stats();
    assert_eq!((stats.corrupt, stats.timeouts), (0, 0));
    emu.shutdown();
}

#[test]
fn an_unplugged_adapter_is_an_error_not_a_hang() {
    let (emu, mut bus) = spawn(DynamixelDevice::new(), koch_pair());
    let mut out = [ServoState::default(); 2];
    bus.sync_read_state(&[1, 2], &mut out).expect("plugged");
    emu.faults.unplug.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(20));
    let start = Instant::now();
    let e = bus
        .sync_read_state(&[1, 2], &mut out)
        .expect_err("unplugged");
    assert!(
        matches!(e, BusError::Timeout { id: 1, .. } | BusError::Io { .. }),
        "{e:?}"
    );
    assert!(start.elapsed() < TIMEOUT * 3);
    // Ids no servo can have never reach the bus.
    assert!(matches!(bus.ping(0xFE), Err(BusError::Usage(_))));
    assert!(matches!(
        bus.sync_read_state(&[1, 0xFD], &mut out),
        Err(BusError::Usage(_))
    ));
    emu.shutdown();
}

#[test]
fn torque_on_drives_toward_the_goal_register_as_it_stands() {
    let (emu, mut bus) = spawn(DynamixelDevice::new(), koch_pair());
    // A goal written with torque off moves nothing…
    bus.write(1, Register::GoalPosition, 1200).expect("goal");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(bus.read(1, Register::PresentPosition).expect("read"), 1000);
    // …until the torque comes on: a stale goal moves the arm, which is
    // why a run writes the measured position first.
    bus.write(1, Register::TorqueEnable, 1).expect("torque");
    wait_until_there(&mut bus, &[1], &[1200]);
    emu.shutdown();
}
