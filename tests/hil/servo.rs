//! Issue #19 on emulated servo buses that speak the real byte protocols
//! (`diffbc_servo::emulated`): calibrate an SO-101 leader and follower and a
//! Koch follower with `diffbc calibrate`, record teleoperation episodes with
//! `diffbc record`, train 200 steps and export, then `diffbc run` the policy
//! on the SO-101 follower (Feetech) and on the Koch follower (Dynamixel) for
//! 10 s at the recording's 30 Hz; torque ends disabled on every way out
//! (end, Ctrl-C, a bus fault, a controller panic), read from the emulated
//! servos' registers.

use crate::support::{ok, s};
use diffbc_servo::Family;
use diffbc_servo::emulated::{EmuBus, EmuServo};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const JOINTS: usize = 6;

/// Six emulated servos of `family` with their horns at `centre[j]`.
fn bus(family: Family, model: u16, centre: &[f32; JOINTS]) -> EmuBus {
    let servos = (0..JOINTS)
        .map(|j| EmuServo::new(j as u8 + 1, model, centre[j]))
        .collect();
    match family {
        Family::Feetech => EmuBus::spawn(diffbc_servo::feetech::FeetechDevice::new(), servos),
        Family::Dynamixel => EmuBus::spawn(diffbc_servo::dynamixel::DynamixelDevice::new(), servos),
    }
    .expect("emulated bus")
}

fn set_all(bus: &EmuBus, positions: impl Fn(usize) -> f32) {
    for j in 0..JOINTS {
        bus.move_by_hand(j as u8 + 1, positions(j));
    }
}

/// Run `diffbc calibrate` on `bus`, acting as the person: centre the arm at
/// its horns' `centre`, then sweep every joint ±`sweep` ticks around it.
fn calibrate(bus: &EmuBus, arm: &str, centre: &[f32; JOINTS], sweep: f32, out: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_diffbc"))
        .args([
            "calibrate",
            "--arm",
            arm,
            "--port",
            &bus.path,
            "--out",
            s(out),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("diffbc calibrate");
    let mut stdin = child.stdin.take().expect("stdin");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.split(b'\n').map_while(Result::ok) {
            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
        }
    });
    let wait_for = |what: &str| {
        let start = Instant::now();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20).saturating_sub(start.elapsed()))
                .unwrap_or_else(|_| panic!("diffbc calibrate never said {what:?}"));
            if line.contains(what) {
                return;
            }
        }
    };
    wait_for("middle of its range");
    set_all(bus, |j| centre[j]);
    std::thread::sleep(Duration::from_millis(50));
    stdin.write_all(b"\n").expect("Enter");
    wait_for("whole range");
    // The sweep: every joint to both ends and back, sampled by the tool.
    for k in 0..=40 {
        let phase = k as f32 / 40.0 * std::f32::consts::TAU;
        set_all(bus, |j| centre[j] + sweep * phase.sin());
        std::thread::sleep(Duration::from_millis(25));
    }
    set_all(bus, |j| centre[j]);
    stdin.write_all(b"\n").expect("Enter");
    let status = wait_or_kill(&mut child, Duration::from_secs(30), "diffbc calibrate");
    let said: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "diffbc calibrate failed: {said:?}");
}

/// Wait for `child` at most `limit`; kill it and fail the test after that.
fn wait_or_kill(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Torque of every servo, from the emulator's registers, once it is
/// `expected` on all of them or 2 s have passed (a SYNC_WRITE has no reply:
/// the emulator applies it a moment after the host wrote it).
fn torque(bus: &EmuBus, expected: bool) -> Vec<bool> {
    let read = || -> Vec<bool> {
        (1..=JOINTS as u8)
            .map(|id| bus.torque(id).expect("servo"))
            .collect()
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if read().iter().all(|&t| t == expected) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    read()
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("json")).expect("parse")
}

#[test]
fn calibrate_record_train_and_run_on_emulated_so101_and_koch_arms() {
    let _turn = crate::hil::one_at_a_time();
    let dir = tempfile::tempdir().expect("tmp");
    let p = |name: &str| -> PathBuf { dir.path().join(name) };
    let centre_l = [1800.0, 2100.0, 1500.0, 2500.0, 2047.0, 1900.0];
    let centre_f = [2300.0, 1700.0, 2600.0, 1600.0, 2047.0, 2200.0];
    let leader = bus(Family::Feetech, 777, &centre_l);
    let follower = bus(Family::Feetech, 777, &centre_f);

    // Calibration through the real CLI: offsets centre each servo (Feetech
    // subtracts the offset: present = horn - offset), ranges ±600 around it.
    calibrate(&leader, "so101-leader", &centre_l, 600.0, &p("leader.json"));
    calibrate(
        &follower,
        "so101-follower",
        &centre_f,
        600.0,
        &p("follower.json"),
    );
    let cal = read_json(&p("follower.json"));
    for (j, name) in [
        "shoulder_pan",
        "shoulder_lift",
        "elbow_flex",
        "wrist_flex",
        "wrist_roll",
        "gripper",
    ]
    .iter()
    .enumerate()
    {
        let m = &cal[name];
        assert_eq!(m["id"], j as u64 + 1, "{cal}");
        assert_eq!(
            m["homing_offset"],
            (centre_f[j] as i64) - 2047,
            "{name}: {cal}"
        );
        let (lo, hi) = (
            m["range_min"].as_i64().expect("min"),
            m["range_max"].as_i64().expect("max"),
        );
        assert!(
            (1440..=1455).contains(&lo) && (2640..=2655).contains(&hi),
            "{name}: {lo}..{hi}"
        );
        let state = follower.lock();
        let servo = state.servo(j as u8 + 1).expect("servo");
        assert_eq!(
            servo.homing_offset,
            centre_f[j] as i32 - 2047,
            "written to the servo"
        );
        assert_eq!(
            (i64::from(servo.min_limit), i64::from(servo.max_limit)),
            (lo, hi),
            "limits written"
        );
    }
    assert_eq!(
        torque(&follower, false),
        [false; JOINTS],
        "calibration leaves torque off"
    );

    // Teleoperation: a hand moves the leader (torque off) on a smooth path;
    // the follower mirrors it; 3 episodes of 2 s at 30 Hz.
    let moving = AtomicBool::new(true);
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            let start = Instant::now();
            while moving.load(Ordering::Relaxed) {
                let t = start.elapsed().as_secs_f32();
                set_all(&leader, |j| {
                    centre_l[j] + 400.0 * (1.3 * t + j as f32).sin()
                });
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let mut child = Command::new(env!("CARGO_BIN_EXE_diffbc"))
            .args([
                "record",
                "--leader",
                "so101-leader",
                "--leader-port",
                &leader.path,
                "--leader-calibration",
                s(&p("leader.json")),
                "--follower",
                "so101-follower",
                "--follower-port",
                &follower.path,
                "--follower-calibration",
                s(&p("follower.json")),
                "--rate",
                "30",
                "--seconds",
                "2",
                "--episodes",
                "3",
                "--out",
                s(&p("rec.demos")),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("diffbc record");
        // Enter before and after each episode (keep all three).
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"\n\n\n\n\n\n")
            .expect("Enter");
        wait_or_kill(&mut child, Duration::from_secs(60), "diffbc record");
        let out = child.wait_with_output().expect("record");
        moving.store(false, Ordering::Relaxed);
        out
    });
    assert!(
        out.status.success(),
        "diffbc record failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("3 episodes"), "{said}");
    assert_eq!(
        torque(&follower, false),
        [false; JOINTS],
        "torque off after recording"
    );
    assert!(
        follower.lock().goal_writes.len() >= 3 * 55,
        "the follower was driven"
    );

    // 200 steps on the recording, exported, run on the follower for 10 s.
    ok(&[
        "train",
        "--task",
        "arm",
        "--data",
        s(&p("rec.demos")),
        "--steps",
        "200",
        "--out",
        s(&p("ck")),
    ]);
    ok(&["export", s(&p("ck")), "--out", s(&p("model"))]);
    let manifest = read_json(&p("model/manifest.json"));
    assert_eq!(
        manifest["deployment"]["control_hz"], 30.0,
        "{}",
        manifest["deployment"]
    );

    let run_on = |bus: &EmuBus, arm: &str, cal: &Path, json: &Path| {
        let before = bus.lock().goal_writes.len();
        let run = crate::support::diffbc(&[
            "run",
            s(&p("model")),
            "--arm",
            arm,
            "--calibration",
            s(cal),
            "--port",
            &bus.path,
            "--seconds",
            "10",
            "--json",
            s(json),
            "--status",
        ]);
        let (out, err) = (
            String::from_utf8_lossy(&run.stdout).into_owned(),
            String::from_utf8_lossy(&run.stderr).into_owned(),
        );
        assert!(run.status.success(), "{arm}: {err}");
        // The live status line, once a second on stderr.
        let status = err.split('\r').filter(|l| l.starts_with("run: ")).count();
        assert!(
            (5..=11).contains(&status),
            "{status} status lines in 10 s: {err}"
        );
        assert!(err.contains(" Hz, ") && err.contains(" clamped, "), "{err}");
        // The bus's round trip, per tick.
        let line = out
            .lines()
            .find(|l| l.contains("SYNC_READ round trip per tick"))
            .unwrap_or_else(|| panic!("no round-trip line in\n{out}"));
        assert!(
            line.contains("0 timeouts, 0 corrupt, 0 servo errors"),
            "{line}"
        );
        let r = read_json(json);
        assert_eq!(r["outcome"], "ok", "{r}\n{out}");
        let sent = r["sent"].as_u64().expect("sent") as usize;
        assert!(
            (290..=305).contains(&sent),
            "{sent} commands in 10 s at 30 Hz"
        );
        // Torque off is the run's last write: once the servos show it,
        // every earlier write has been applied too.
        assert_eq!(torque(bus, false), [false; JOINTS], "torque off at the end");
        // Every command reached the bus, in order: the goal SYNC_WRITEs the
        // servos received are the hold at connect, then one per command.
        let state = bus.lock();
        assert_eq!(state.goal_writes.len() - before, sent + 1, "{r}");
        assert_eq!(state.bad_packets, 0);
    };
    run_on(
        &follower,
        "so101-follower",
        &p("follower.json"),
        &p("run-so101.json"),
    );

    // The same policy on a Koch follower (Dynamixel Protocol 2.0: present =
    // horn + offset), calibrated by the same command.
    let centre_k = [2048.0, 1400.0, 2700.0, 2000.0, 2047.0, 2300.0];
    let koch = bus(Family::Dynamixel, 1060, &centre_k);
    calibrate(&koch, "koch-follower", &centre_k, 600.0, &p("koch.json"));
    let cal = read_json(&p("koch.json"));
    assert_eq!(cal["elbow_flex"]["homing_offset"], 2047 - 2700, "{cal}");
    run_on(&koch, "koch-follower", &p("koch.json"), &p("run-koch.json"));

    // Ctrl-C and a bus fault, on both buses.
    ways_out(
        &follower,
        "so101-follower",
        &p("follower.json"),
        &p("model"),
    );
    ways_out(&koch, "koch-follower", &p("koch.json"), &p("model"));
}

/// Start `diffbc run` of `model` on `bus` (`arm`, `cal`) for `seconds` and
/// return once the servos hold with torque on.
fn start_run(
    bus: &EmuBus,
    arm: &str,
    cal: &Path,
    model: &Path,
    seconds: &str,
) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_diffbc"))
        .args([
            "run",
            s(model),
            "--arm",
            arm,
            "--calibration",
            s(cal),
            "--port",
            &bus.path,
        ])
        .args(["--seconds", seconds])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("diffbc run");
    let start = Instant::now();
    while !torque(bus, true).iter().all(|&t| t) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{arm}: the run never enabled torque"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child
}

/// Ctrl-C (exit 130), an overload reported mid-run (exit 3, naming the
/// joint) and at connect (refused): torque ends off every time.
fn ways_out(bus: &EmuBus, arm: &str, cal: &Path, model: &Path) {
    let mut child = start_run(bus, arm, cal, model, "30");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    wait_or_kill(
        &mut child,
        Duration::from_secs(10),
        "diffbc run after Ctrl-C",
    );
    let out = child.wait_with_output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{arm}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        torque(bus, false),
        [false; JOINTS],
        "{arm}: torque off after Ctrl-C"
    );

    let mut child = start_run(bus, arm, cal, model, "30");
    bus.faults.overload_id.store(3, Ordering::Relaxed);
    wait_or_kill(
        &mut child,
        Duration::from_secs(10),
        "diffbc run with an overload",
    );
    let out = child.wait_with_output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{arm}: {err}");
    assert!(
        err.contains("Overload") && err.contains("joint 2"),
        "{arm}: {err}"
    );
    assert_eq!(
        torque(bus, false),
        [false; JOINTS],
        "{arm}: torque off after the fault"
    );

    // Already in overload at connect: refused before torque goes on.
    let e = crate::support::error_line(&[
        "run",
        s(model),
        "--arm",
        arm,
        "--calibration",
        s(cal),
        "--port",
        &bus.path,
        "--seconds",
        "1",
    ]);
    assert!(
        e.contains("servo 3") && e.contains("overload"),
        "{arm}: {e}"
    );
    assert_eq!(torque(bus, false), [false; JOINTS], "{arm}");
    bus.faults.overload_id.store(0, Ordering::Relaxed);
}

/// A panic in the controller, on the real byte protocol: the loop's stop
/// disables torque on every servo (read back from the emulated registers).
#[test]
fn a_controller_panic_leaves_the_servos_limp() {
    use diffbc_bridge::{Controller, LoopConfig, WallClock};
    use diffbc_protocol::Telemetry;
    struct Panics(u32);
    impl Controller for Panics {
        fn act(&mut self, t: &Telemetry, a: &mut [f32]) -> Result<(), String> {
            self.0 += 1;
            assert!(self.0 < 10, "a controller bug");
            a.copy_from_slice(&t.positions);
            Ok(())
        }
    }
    let _turn = crate::hil::one_at_a_time();
    for (family, arm, model) in [
        (Family::Feetech, "so101-follower", 777),
        (Family::Dynamixel, "koch-follower", 1060),
    ] {
        let b = bus(family, model, &[2047.0; JOINTS]);
        let preset = diffbc_servo::arm::ArmPreset::named(arm).expect("preset");
        let mut cal = diffbc_servo::calibration::Calibration::default();
        for m in preset.motors {
            cal.motors.insert(
                m.name.into(),
                diffbc_servo::calibration::MotorCalibration {
                    id: m.id,
                    drive_mode: 0,
                    homing_offset: 0,
                    range_min: 1000,
                    range_max: 3000,
                },
            );
        }
        let open = diffbc_servo::open_bus(family, &b.path, 1_000_000, Duration::from_millis(50))
            .expect("open");
        let mut link = diffbc_servo::ServoLink::connect(open, &b.path, preset, &cal, "mem", 500)
            .expect("connect");
        assert_eq!(torque(&b, true), [true; JOINTS], "{arm}: torque on to hold");
        let report = diffbc_bridge::control::run(
            &mut link,
            &mut WallClock::start(),
            &mut Panics(0),
            &LoopConfig {
                rate_hz: 30.0,
                duration: Some(Duration::from_secs(5)),
                ..LoopConfig::default()
            },
            &AtomicBool::new(false),
        );
        let e = report.outcome.expect_err("the panic ends the run");
        assert!(e.contains("panicked"), "{e}");
        assert_eq!(
            torque(&b, false),
            [false; JOINTS],
            "{arm}: torque off after the panic"
        );
        // Every command reached the bus, in order: after the hold at
        // connect, one goal SYNC_WRITE per logged command, its targets in
        // ticks.
        let joints = link.arm().joints().to_vec();
        let sent: Vec<Vec<(u8, i32)>> = report
            .log
            .iter()
            .map(|l| {
                joints
                    .iter()
                    .zip(&l.command.targets)
                    .map(|(j, &v)| (j.motor.id, j.rad_to_ticks(v)))
                    .collect()
            })
            .collect();
        assert!(sent.len() >= 5, "{arm}: {} commands", sent.len());
        assert_eq!(
            b.lock().goal_writes[1..],
            sent[..],
            "{arm}: what the servos received"
        );
        drop(link);
    }
}

/// A real servo arm (`DIFFBC_HIL_ARM`, `DIFFBC_HIL_PORT`,
/// `DIFFBC_HIL_CALIBRATION` set when the tests are built; see `build.rs`):
/// a gentle motion (±0.1 rad around where each joint is) for 10 s at 30 Hz,
/// every command written, no timeout or corrupt status; torque read back off
/// from every servo after the end and after Ctrl-C (the run's stop flag).
#[cfg(hil_real_arm)]
#[test]
fn real_arm() {
    use diffbc_bridge::{Controller, LoopConfig, WallClock};
    use diffbc_protocol::{Handshake, Telemetry};
    use diffbc_servo::{Bus, Register};
    struct Gentle {
        home: Vec<f32>,
        tick: u32,
    }
    impl Controller for Gentle {
        fn start(&mut self, _h: &Handshake) -> Result<(), String> {
            self.home.clear();
            Ok(())
        }
        fn act(&mut self, t: &Telemetry, a: &mut [f32]) -> Result<(), String> {
            if self.home.is_empty() {
                self.home = t.positions.to_vec();
            }
            self.tick += 1;
            let phase = self.tick as f32 / 30.0;
            for (j, (o, h)) in a.iter_mut().zip(&self.home).enumerate() {
                *o = h + 0.1 * (phase + j as f32).sin();
            }
            Ok(())
        }
    }
    let _turn = crate::hil::one_at_a_time();
    let port = env!("DIFFBC_HIL_PORT_AT_BUILD");
    let arm = diffbc_servo::arm::ArmPreset::named(env!("DIFFBC_HIL_ARM_AT_BUILD")).expect("preset");
    let cal_path = env!("DIFFBC_HIL_CALIBRATION_AT_BUILD");
    let cal = diffbc_servo::calibration::Calibration::load(Path::new(cal_path))
        .expect("DIFFBC_HIL_CALIBRATION: the arm's calibration file");
    let open = || {
        diffbc_servo::open_bus(arm.family, port, 1_000_000, Duration::from_millis(20))
            .expect("open")
    };
    let torque_read_back = || -> Vec<i32> {
        let mut bus = open();
        arm.ids()
            .map(|id| bus.read(id, Register::TorqueEnable).expect("read torque"))
            .collect()
    };
    for (label, stop_after) in [("the end", None), ("Ctrl-C", Some(Duration::from_secs(2)))] {
        let mut link = diffbc_servo::ServoLink::connect(open(), port, arm, &cal, cal_path, 500)
            .expect("connect");
        let stop = AtomicBool::new(false);
        let report = std::thread::scope(|scope| {
            if let Some(after) = stop_after {
                let stop = &stop;
                scope.spawn(move || {
                    std::thread::sleep(after);
                    stop.store(true, Ordering::Relaxed);
                });
            }
            diffbc_bridge::control::run(
                &mut link,
                &mut WallClock::start(),
                &mut Gentle {
                    home: Vec::new(),
                    tick: 0,
                },
                &LoopConfig {
                    rate_hz: 30.0,
                    duration: Some(Duration::from_secs(10)),
                    velocity_limits: true,
                    ..LoopConfig::default()
                },
                &stop,
            )
        });
        println!("{label}: {}", report.stats.markdown());
        assert_eq!(report.outcome, Ok(()), "{label}");
        let stats = link.arm().bus().stats();
        assert_eq!(
            (stats.timeouts, stats.corrupt, stats.servo_errors),
            (0, 0, 0),
            "{label}: {stats:?}"
        );
        if stop_after.is_none() {
            assert!(
                report.log.total() >= 290,
                "{label}: {} commands",
                report.log.total()
            );
        }
        drop(link);
        assert!(
            torque_read_back().iter().all(|&t| t == 0),
            "{label}: torque off"
        );
    }
}
