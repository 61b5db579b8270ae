//! Every way out of a run stops the arm, asserted from the emulated arm's
//! side (one stop frame, and its reason); a device with unusable limits is
//! refused at connection with a stop frame; the emulator never deletes what
//! it did not create; and the logs of both sides stay bounded.

use diffbc_bridge::Controller;
use diffbc_bridge::{Bridge, BridgeError, LoopConfig, Reconnect, Sweep};
use diffbc_emulator::{SimConfig, SimHandle, spawn_pty};
use diffbc_protocol::{
    Decoder, FaultCode, Frame, Handshake, JointLimit, MAX_FRAME, PROTOCOL_VERSION, StopReason,
    Telemetry, encode,
};
use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One run at a time: they share two cores and measure wall-clock behaviour.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Arm {
    sim: SimHandle,
    port: String,
    _dir: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

fn arm_with(config: SimConfig) -> Arm {
    let turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tmp");
    let link = dir.path().join("arm");
    let sim = spawn_pty(config, &link).expect("pty");
    Arm {
        port: link.display().to_string(),
        sim,
        _dir: dir,
        _turn: turn,
    }
}

fn arm() -> Arm {
    let mut c = SimConfig::default_arm();
    c.watchdog = Duration::from_secs(1);
    arm_with(c)
}

fn config(seconds: Option<f64>) -> LoopConfig {
    LoopConfig {
        rate_hz: 100.0,
        duration: seconds.map(Duration::from_secs_f64),
        telemetry_timeout: Duration::from_millis(500),
        ..LoopConfig::default()
    }
}

/// Wait until the emulator has seen `n` stop frames (or 3 s).
fn stops_when(sim: &SimHandle, n: u32) -> u32 {
    let start = Instant::now();
    loop {
        let got = sim.shared.stops.load(Ordering::Relaxed);
        if got >= n || start.elapsed() > Duration::from_secs(3) {
            // Anything more would show up now.
            std::thread::sleep(Duration::from_millis(50));
            return sim.shared.stops.load(Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run `controller` against a fresh emulated arm; return the outcome, the
/// number of stop frames the arm received and the last one's reason.
fn exit_with(
    arm: &Arm,
    controller: &mut impl Controller,
    config: &LoopConfig,
    stop: &AtomicBool,
) -> (Result<(), String>, u32, Option<StopReason>) {
    let mut bridge =
        Bridge::connect(&arm.port, 1_000_000, Duration::from_secs(2)).expect("connect");
    let report = bridge.run(controller, config, stop);
    let stops = stops_when(&arm.sim, 1);
    (report.outcome, stops, arm.sim.shared.last_stop())
}

/// Sweeps, and after `after` calls fails in the chosen way.
struct FailAfter {
    sweep: Sweep,
    calls: u32,
    after: u32,
    panic: bool,
}

impl FailAfter {
    fn new(after: u32, panic: bool) -> Self {
        Self {
            sweep: Sweep::default(),
            calls: 0,
            after,
            panic,
        }
    }
}

impl Controller for FailAfter {
    fn start(&mut self, h: &Handshake) -> Result<(), String> {
        self.sweep.start(h)
    }

    fn act(&mut self, t: &Telemetry, action: &mut [f32]) -> Result<(), String> {
        self.calls += 1;
        if self.calls > self.after {
            if self.panic {
                panic!("boom at call {}", self.calls);
            }
            return Err(format!("gave up at call {}", self.calls));
        }
        self.sweep.act(t, action)
    }
}

#[test]
fn end_of_duration_sends_one_end_of_run_stop() {
    let arm = arm();
    let (outcome, stops, reason) = exit_with(
        &arm,
        &mut Sweep::default(),
        &config(Some(0.3)),
        &AtomicBool::new(false),
    );
    assert_eq!(outcome, Ok(()));
    assert_eq!((stops, reason), (1, Some(StopReason::EndOfRun)));
}

#[test]
fn the_stop_flag_sends_one_operator_stop() {
    let arm = arm();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        s2.store(true, Ordering::Relaxed);
    });
    let (outcome, stops, reason) = exit_with(&arm, &mut Sweep::default(), &config(None), &stop);
    t.join().expect("thread");
    assert_eq!(outcome, Ok(()));
    assert_eq!((stops, reason), (1, Some(StopReason::Operator)));
}

#[test]
fn a_device_fault_sends_one_device_fault_stop() {
    let arm = arm();
    let faults = arm.sim.faults.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        faults.overload.store(true, Ordering::Relaxed);
    });
    let (outcome, stops, reason) = exit_with(
        &arm,
        &mut Sweep::default(),
        &config(Some(5.0)),
        &AtomicBool::new(false),
    );
    t.join().expect("thread");
    assert!(outcome.expect_err("fault").contains("Overload"));
    assert_eq!((stops, reason), (1, Some(StopReason::DeviceFault)));
}

#[test]
fn device_silence_sends_one_host_error_stop() {
    let arm = arm();
    let faults = arm.sim.faults.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        faults.silent.store(true, Ordering::Relaxed);
    });
    let (outcome, stops, reason) = exit_with(
        &arm,
        &mut Sweep::default(),
        &config(Some(5.0)),
        &AtomicBool::new(false),
    );
    t.join().expect("thread");
    assert!(outcome.expect_err("silence").contains("silent"));
    assert_eq!((stops, reason), (1, Some(StopReason::HostError)));
}

#[test]
fn a_controller_error_sends_one_host_error_stop() {
    let arm = arm();
    let (outcome, stops, reason) = exit_with(
        &arm,
        &mut FailAfter::new(10, false),
        &config(Some(5.0)),
        &AtomicBool::new(false),
    );
    assert!(outcome.expect_err("error").contains("gave up at call 11"));
    assert_eq!((stops, reason), (1, Some(StopReason::HostError)));
}

#[test]
fn a_controller_panic_is_an_error_of_the_run_and_sends_one_stop() {
    let arm = arm();
    let (outcome, stops, reason) = exit_with(
        &arm,
        &mut FailAfter::new(10, true),
        &config(Some(5.0)),
        &AtomicBool::new(false),
    );
    let e = outcome.expect_err("panic is reported");
    assert!(e.contains("controller panicked: boom at call 11"), "{e}");
    assert_eq!((stops, reason), (1, Some(StopReason::HostError)));
}

/// Panics in `start`, before the loop.
struct PanicAtStart;

impl Controller for PanicAtStart {
    fn start(&mut self, _: &Handshake) -> Result<(), String> {
        panic!("no model loaded")
    }

    fn act(&mut self, _: &Telemetry, _: &mut [f32]) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_controller_panic_at_start_sends_one_stop() {
    let arm = arm();
    let (outcome, stops, reason) = exit_with(
        &arm,
        &mut PanicAtStart,
        &config(Some(5.0)),
        &AtomicBool::new(false),
    );
    let e = outcome.expect_err("panic is reported");
    assert!(e.contains("controller panicked: no model loaded"), "{e}");
    assert_eq!((stops, reason), (1, Some(StopReason::HostError)));
}

#[test]
fn a_rejected_config_moves_nothing_and_sends_one_stop() {
    let bad = [
        (
            "rate_hz",
            LoopConfig {
                rate_hz: 1000.0,
                ..config(Some(1.0))
            },
        ),
        (
            "rate_hz",
            LoopConfig {
                rate_hz: f64::NAN,
                ..config(Some(1.0))
            },
        ),
        (
            "max_step",
            LoopConfig {
                max_step: f32::NAN,
                ..config(Some(1.0))
            },
        ),
        (
            "max_step",
            LoopConfig {
                max_step: -0.2,
                ..config(Some(1.0))
            },
        ),
        (
            "deadline_fraction",
            LoopConfig {
                deadline_fraction: f64::NAN,
                ..config(Some(1.0))
            },
        ),
        (
            "telemetry_timeout",
            LoopConfig {
                telemetry_timeout: Duration::ZERO,
                ..config(Some(1.0))
            },
        ),
    ];
    for (i, (field, c)) in bad.iter().enumerate() {
        let arm = arm();
        let (outcome, stops, reason) =
            exit_with(&arm, &mut Sweep::default(), c, &AtomicBool::new(false));
        let e = outcome.expect_err("refused");
        assert!(e.contains(field), "case {i}: {e}");
        assert_eq!(
            arm.sim.shared.commands_total(),
            0,
            "case {i}: nothing moved"
        );
        assert_eq!(
            (stops, reason),
            (1, Some(StopReason::HostError)),
            "case {i}"
        );
    }
}

#[test]
fn a_vanished_port_stops_on_the_device_by_its_watchdog() {
    let mut c = SimConfig::default_arm();
    c.watchdog = Duration::from_millis(250);
    let arm = arm_with(c);
    arm.sim.faults.replug_ms.store(1500, Ordering::Relaxed);
    let faults = arm.sim.faults.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        faults.unplug.store(true, Ordering::Relaxed);
    });
    let mut bridge =
        Bridge::connect(&arm.port, 1_000_000, Duration::from_secs(2)).expect("connect");
    let config = LoopConfig {
        reconnect: Reconnect {
            give_up_after: Duration::from_millis(300),
            ..Reconnect::default()
        },
        ..config(Some(10.0))
    };
    let report = bridge.run(&mut Sweep::default(), &config, &AtomicBool::new(false));
    t.join().expect("thread");
    let e = report.outcome.expect_err("gone");
    assert!(e.contains("the device is gone"), "{e}");
    // The host's stop frame went to a port that no longer exists (best
    // effort); the firmware's watchdog stops the motors once it is back.
    let start = Instant::now();
    while !arm
        .sim
        .shared
        .faults
        .lock()
        .expect("faults")
        .iter()
        .any(|f| f.code == FaultCode::Watchdog)
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no watchdog fault"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(arm.sim.shared.stops.load(Ordering::Relaxed), 0);
}

/// A device on a pty that answers Hello with `limits`, then records every
/// frame it receives for `listen`.
fn fake_device(
    limits: Vec<JointLimit>,
    listen: Duration,
) -> (String, std::thread::JoinHandle<Vec<Frame>>) {
    let (mut master, slave) = TTYPort::pair().expect("pty");
    let name = slave.name().expect("slave name");
    let t = std::thread::spawn(move || {
        let _slave = slave;
        let _ = master.set_timeout(Duration::from_millis(5));
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        let mut out = [0u8; MAX_FRAME];
        let start = Instant::now();
        while start.elapsed() < listen {
            let n: usize = master.read(&mut buf).unwrap_or_default();
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let (f, tail) = decoder.feed(rest);
                rest = tail;
                if let Some(Ok(f)) = f {
                    if matches!(f, Frame::Hello { .. }) {
                        let mut joints = heapless::Vec::new();
                        for l in &limits {
                            let _ = joints.push(*l);
                        }
                        let h = Frame::Handshake(Handshake {
                            protocol: PROTOCOL_VERSION,
                            joints,
                            max_rate_hz: 500,
                            watchdog_ms: 250,
                        });
                        let k = encode(&h, &mut out).expect("encode");
                        master.write_all(&out[..k]).expect("write");
                    }
                    got.push(f);
                }
            }
        }
        got
    });
    (name, t)
}

#[test]
fn a_handshake_with_unusable_limits_is_refused_with_a_stop() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ok = JointLimit {
        min: -1.0,
        max: 1.0,
        max_velocity: 2.0,
        max_acceleration: 10.0,
    };
    let cases = [
        (
            "min",
            JointLimit {
                min: f32::NAN,
                ..ok
            },
        ),
        (
            "max",
            JointLimit {
                max: f32::INFINITY,
                ..ok
            },
        ),
        (
            "max_velocity",
            JointLimit {
                max_velocity: f32::NAN,
                ..ok
            },
        ),
        (
            "max_acceleration",
            JointLimit {
                max_acceleration: f32::NEG_INFINITY,
                ..ok
            },
        ),
        (
            "must be below max",
            JointLimit {
                min: 1.0,
                max: -1.0,
                ..ok
            },
        ),
    ];
    for (what, bad) in cases {
        let (port, device) = fake_device(vec![ok, bad], Duration::from_millis(800));
        let e = Bridge::connect(&port, 1_000_000, Duration::from_millis(500)).expect_err("refused");
        assert!(matches!(e, BridgeError::Protocol { .. }), "{e}");
        let m = e.to_string();
        assert!(m.contains("joint 1") && m.contains(what), "{what}: {m}");
        let got = device.join().expect("device");
        assert!(
            got.contains(&Frame::Stop {
                reason: StopReason::HostError
            }),
            "{what}: the device got {got:?}"
        );
    }
    // No joints at all.
    let (port, device) = fake_device(vec![], Duration::from_millis(800));
    let e = Bridge::connect(&port, 1_000_000, Duration::from_millis(500)).expect_err("refused");
    assert!(e.to_string().contains("0 joints"), "{e}");
    assert!(
        device
            .join()
            .expect("device")
            .iter()
            .any(|f| matches!(f, Frame::Stop { .. }))
    );
}

#[test]
fn both_logs_keep_the_newest_commands_and_count_all() {
    let mut c = SimConfig::default_arm();
    c.watchdog = Duration::from_secs(1);
    c.command_log = 30;
    let arm = arm_with(c);
    let mut bridge =
        Bridge::connect(&arm.port, 1_000_000, Duration::from_secs(2)).expect("connect");
    let config = LoopConfig {
        rate_hz: 200.0,
        log_capacity: 50,
        ..config(None)
    };
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        s2.store(true, Ordering::Relaxed);
    });
    let report = bridge.run(&mut Sweep::default(), &config, &stop);
    t.join().expect("thread");
    assert_eq!(report.outcome, Ok(()));
    let log = &report.log;
    assert_eq!(log.len(), 50, "{} commands", log.total());
    assert_eq!(log.capacity(), 50);
    assert_eq!(log.total(), report.stats.frames_sent);
    assert!(log.total() > 100, "{} commands", log.total());
    // The newest, in order: the last seq is the total.
    let seqs: Vec<u32> = log.iter().map(|l| l.command.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(u64::from(*seqs.last().expect("one")), log.total());
    // The emulated arm counts every command and keeps its newest 30.
    let got = arm.sim.commands_when(log.total(), Duration::from_secs(5));
    assert_eq!(arm.sim.shared.commands_total(), log.total());
    assert_eq!(got.len(), 30);
    let newest: Vec<_> = log.iter().skip(20).map(|l| l.command.clone()).collect();
    assert_eq!(
        got, newest,
        "the arm kept the same newest commands, in order"
    );
}

#[test]
fn the_run_log_holds_a_bounded_run_entirely() {
    let arm = arm();
    let mut bridge =
        Bridge::connect(&arm.port, 1_000_000, Duration::from_secs(2)).expect("connect");
    let report = bridge.run(
        &mut Sweep::default(),
        &config(Some(0.3)),
        &AtomicBool::new(false),
    );
    assert_eq!(report.outcome, Ok(()));
    assert_eq!(report.log.len() as u64, report.log.total());
    assert_eq!(report.log.dropped(), 0);
}

mod link {
    use super::*;

    #[test]
    fn an_existing_regular_file_is_refused_and_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("thesis.tex");
        std::fs::write(&file, "precious").expect("write");
        let e = spawn_pty(SimConfig::default_arm(), &file).expect_err("refused");
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        assert!(e.to_string().contains("regular file"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).expect("kept"), "precious");
    }

    #[test]
    fn an_existing_folder_is_refused_and_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let sub = dir.path().join("data");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::write(sub.join("a"), "x").expect("write");
        let e = spawn_pty(SimConfig::default_arm(), &sub).expect_err("refused");
        assert!(e.to_string().contains("folder"), "{e}");
        assert_eq!(std::fs::read_to_string(sub.join("a")).expect("kept"), "x");
    }

    #[test]
    fn a_symlink_to_a_users_file_is_refused_and_both_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("notes");
        std::fs::write(&file, "mine").expect("write");
        let link = dir.path().join("arm");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert!(spawn_pty(SimConfig::default_arm(), &link).is_err());
        assert_eq!(std::fs::read_link(&link).expect("kept"), file);
        assert_eq!(std::fs::read_to_string(&file).expect("kept"), "mine");
    }

    #[test]
    fn a_stale_pty_symlink_is_replaced_and_removed_at_shutdown() {
        let dir = tempfile::tempdir().expect("tmp");
        let link = dir.path().join("arm");
        std::os::unix::fs::symlink("/dev/pts/99999", &link).expect("symlink");
        let sim = spawn_pty(SimConfig::default_arm(), &link).expect("replaced");
        let target = std::fs::read_link(&link).expect("a link");
        assert!(target.starts_with("/dev/") && target != std::path::Path::new("/dev/pts/99999"));
        sim.shutdown();
        assert!(
            std::fs::symlink_metadata(&link).is_err(),
            "our link is removed"
        );
    }

    #[test]
    fn a_sibling_named_like_the_old_temporary_link_is_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let link = dir.path().join("arm");
        let sibling = dir.path().join("arm.new");
        std::fs::write(&sibling, "mine").expect("write");
        let sim = spawn_pty(SimConfig::default_arm(), &link).expect("pty");
        assert_eq!(std::fs::read_to_string(&sibling).expect("kept"), "mine");
        sim.shutdown();
        assert_eq!(std::fs::read_to_string(&sibling).expect("kept"), "mine");
        // No temporary left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn shutdown_keeps_a_file_that_replaced_the_link() {
        let dir = tempfile::tempdir().expect("tmp");
        let link = dir.path().join("arm");
        let sim = spawn_pty(SimConfig::default_arm(), &link).expect("pty");
        std::fs::remove_file(&link).expect("rm");
        std::fs::write(&link, "mine").expect("write");
        sim.shutdown();
        assert_eq!(std::fs::read_to_string(&link).expect("kept"), "mine");
    }

    #[test]
    fn replugging_never_replaces_a_file_that_appeared_at_the_link() {
        let dir = tempfile::tempdir().expect("tmp");
        let link = dir.path().join("arm");
        let sim = spawn_pty(SimConfig::default_arm(), &link).expect("pty");
        sim.faults.replug_ms.store(400, Ordering::Relaxed);
        sim.faults.unplug.store(true, Ordering::Relaxed);
        let start = Instant::now();
        while std::fs::symlink_metadata(&link).is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "link not removed at unplug"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::write(&link, "mine").expect("write");
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(std::fs::read_to_string(&link).expect("kept"), "mine");
        assert_eq!(sim.shared.replugs.load(Ordering::Relaxed), 0);
        sim.shutdown();
        assert_eq!(std::fs::read_to_string(&link).expect("kept"), "mine");
    }

    #[test]
    fn unusable_limits_and_time_scales_are_refused_before_the_link_is_made() {
        let dir = tempfile::tempdir().expect("tmp");
        let link = dir.path().join("arm");
        let mut c = SimConfig::default_arm();
        c.limits[2].min = 3.0;
        let e = spawn_pty(c, &link).expect_err("min > max");
        assert!(e.to_string().contains("joint 2"), "{e}");
        let mut c = SimConfig::default_arm();
        c.time_scale = f64::INFINITY;
        assert!(spawn_pty(c, &link).is_err());
        assert!(std::fs::symlink_metadata(&link).is_err());
    }
}

/// The handshake of a device with one joint of `limit`.
fn one_joint_handshake(limit: JointLimit) -> Frame {
    Frame::Handshake(Handshake {
        protocol: PROTOCOL_VERSION,
        joints: heapless::Vec::from_slice(&[limit]).expect("1 joint"),
        max_rate_hz: 500,
        watchdog_ms: 250,
    })
}

/// A device that sends telemetry all the time may have the first half of a
/// telemetry frame in the same read as its handshake: the bridge keeps those
/// bytes, so the first frame polled decodes (no bad frame at every connect).
#[test]
fn bytes_read_after_the_handshake_begin_the_first_frame() {
    let (mut master, slave) = TTYPort::pair().expect("pty");
    let name = slave.name().expect("slave name");
    let limit = JointLimit {
        min: -1.0,
        max: 1.0,
        max_velocity: 2.0,
        max_acceleration: 10.0,
    };
    let telemetry = Frame::Telemetry(Telemetry {
        seq: 7,
        device_time_us: 1000,
        last_command_seq: 0,
        positions: heapless::Vec::from_slice(&[0.25]).expect("1 joint"),
        velocities: heapless::Vec::from_slice(&[0.0]).expect("1 joint"),
        status: 0,
        link: Default::default(),
    });
    let device = std::thread::spawn(move || {
        let _slave = slave;
        let _ = master.set_timeout(Duration::from_millis(5));
        let mut decoder = Decoder::new();
        let mut buf = [0u8; 256];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            let n = master.read(&mut buf).unwrap_or_default();
            if decoder
                .feed(&buf[..n])
                .0
                .is_some_and(|f| matches!(f, Ok(Frame::Hello { .. })))
            {
                let mut out = [0u8; 2 * MAX_FRAME];
                let k = encode(&one_joint_handshake(limit), &mut out).expect("encode");
                let t = encode(&telemetry, &mut out[k..]).expect("encode");
                let half = k + t / 2;
                // The handshake and half a frame in one write, the rest later.
                master.write_all(&out[..half]).expect("write");
                std::thread::sleep(Duration::from_millis(100));
                master.write_all(&out[half..k + t]).expect("write");
                std::thread::sleep(Duration::from_millis(300));
                return;
            }
        }
    });
    let mut bridge = Bridge::connect(&name, 1_000_000, Duration::from_secs(1)).expect("handshake");
    std::thread::sleep(Duration::from_millis(200));
    let mut stats = diffbc_bridge::RunStats::new();
    let mut latest = None;
    use diffbc_bridge::Link;
    bridge
        .poll(Duration::ZERO, &mut stats, &mut latest)
        .expect("poll");
    assert_eq!(stats.frames_bad, 0, "{stats:?}");
    assert_eq!(latest.map(|t| t.seq), Some(7), "the first telemetry frame");
    device.join().expect("device");
}

/// A device still draining bytes written before the connection (the tty
/// buffer full, the hello's write timing out) is waited for, not refused:
/// CI saw "Open … Operation timed out" after the fuzz garbage on QEMU.
#[test]
fn a_device_slow_to_drain_its_input_still_gets_a_hello() {
    let (mut master, slave) = TTYPort::pair().expect("pty");
    let name = slave.name().expect("slave name");
    // Another writer fills the host-to-device buffer and blocks until the
    // device reads (a tty write waits for room); its garbage ends with a
    // frame delimiter so the hello after it decodes.
    let filler = {
        let name = name.clone();
        std::thread::spawn(move || {
            // A plain blocking file: no serial-port lock for the bridge to
            // trip over.
            let mut port = std::fs::OpenOptions::new()
                .write(true)
                .open(&name)
                .expect("open");
            let mut junk = vec![0x55u8; 256 << 10];
            *junk.last_mut().expect("junk") = 0;
            port.write_all(&junk)
                .expect("the device drained the garbage");
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let limit = JointLimit {
        min: -1.0,
        max: 1.0,
        max_velocity: 2.0,
        max_acceleration: 10.0,
    };
    let device = std::thread::spawn(move || {
        let _slave = slave;
        // Busy for a while before reading anything.
        std::thread::sleep(Duration::from_millis(600));
        let _ = master.set_timeout(Duration::from_millis(5));
        let mut decoder = Decoder::new();
        let mut buf = [0u8; 4096];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(8) {
            let n = master.read(&mut buf).unwrap_or_default();
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let (f, tail) = decoder.feed(rest);
                rest = tail;
                if let Some(Ok(Frame::Hello { .. })) = f {
                    let mut out = [0u8; MAX_FRAME];
                    let k = encode(&one_joint_handshake(limit), &mut out).expect("encode");
                    master.write_all(&out[..k]).expect("write");
                    std::thread::sleep(Duration::from_millis(200));
                    return;
                }
            }
        }
        panic!("the device never saw a hello");
    });
    let bridge = Bridge::connect(&name, 1_000_000, Duration::from_secs(5))
        .expect("a handshake once the device drained its input");
    assert_eq!(bridge.handshake().joints.len(), 1);
    device.join().expect("device");
    filler.join().expect("filler");
}
