//! The firmware binary (`firmware-host/mcu`, Cortex-M3) in QEMU's
//! `lm3s6965evb`, driven by the real bridge over the pty QEMU gives its
//! UART0: garbage on the wire, handshake, a closed loop at 100 Hz with every
//! command acknowledged in order, the stop frame, the watchdog; a shipped
//! policy through `diffbc run` for 10 s, every command counted in order by
//! the firmware. [`boot`] also gives the hardware-in-the-loop suite
//! (`hil.rs`) its second device.
//!
//! Needs `qemu-system-arm` (Debian: `apt-get install qemu-system-arm`) and
//! the firmware: `DIFFBC_MCU_ELF=<path>`, or else this test builds it with
//! `cargo build --release` in `firmware-host/mcu` with
//! `--target-dir $CARGO_TARGET_DIR/mcu` (`target/mcu` when unset; needs
//! `rustup target add thumbv7m-none-eabi`). Either missing fails the
//! test with the instruction; it never skips.

use diffbc_bridge::{Bridge, BridgeError, Controller, Link, LoopConfig, RunStats, Sweep};
use diffbc_protocol::{
    Command, FaultCode, Frame, Handshake, Joints, PROTOCOL_VERSION, StopReason, Telemetry, status,
};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// QEMU, killed when the test ends (pass or fail).
pub struct Qemu {
    child: Child,
    /// The pty QEMU connected UART0 to: the arm's port.
    pub pty: String,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The firmware ELF: `DIFFBC_MCU_ELF`, or built here (once per test run).
fn firmware_elf() -> PathBuf {
    static ELF: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ELF.get_or_init(find_or_build_firmware).clone()
}

/// The test build that panics 3 s after boot (`--features panic-probe`),
/// built here into its own folder.
fn panic_probe_elf() -> PathBuf {
    static ELF: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ELF.get_or_init(|| build_firmware(&["--features", "panic-probe"], "mcu-panic-probe"))
        .clone()
}

fn find_or_build_firmware() -> PathBuf {
    if let Some(p) = std::env::var_os("DIFFBC_MCU_ELF") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "DIFFBC_MCU_ELF={} is not a file: build it with \
             `cd firmware-host/mcu && cargo build --release`",
            p.display()
        );
        return p;
    }
    build_firmware(&[], "mcu")
}

/// `cargo build --release` of the firmware with `args`, into `dir` beside
/// the host build (its own folder: the firmware is another workspace).
fn build_firmware(args: &[&str], dir: &str) -> PathBuf {
    let root = workspace_root();
    let manifest = root.join("firmware-host/mcu/Cargo.toml");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join(dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Process::new(cargo)
        // From the firmware's folder: its .cargo/config.toml applies.
        .current_dir(root.join("firmware-host/mcu"))
        .args([
            "build",
            "--release",
            "--target",
            "thumbv7m-none-eabi",
            "--manifest-path",
        ])
        .arg(&manifest)
        .args(args)
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo to build the firmware");
    assert!(
        out.status.success(),
        "building the firmware failed (needs `rustup target add thumbv7m-none-eabi`; \
         or set DIFFBC_MCU_ELF to a built firmware):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join("thumbv7m-none-eabi/release/diffbc-mcu")
}

/// Boot the firmware in QEMU with UART0 on a fresh pty.
pub fn boot() -> Qemu {
    boot_elf(&firmware_elf())
}

/// Boot `elf` in QEMU's lm3s6965evb with UART0 on a fresh pty.
fn boot_elf(elf: &std::path::Path) -> Qemu {
    let child = Process::new("qemu-system-arm")
        .args(["-M", "lm3s6965evb", "-display", "none", "-monitor", "none"])
        .args(["-serial", "pty", "-kernel"])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "qemu-system-arm did not start ({e}): install it \
             (Debian/Ubuntu: `apt-get install qemu-system-arm`)"
        ),
    };
    // QEMU says "char device redirected to /dev/pts/N (label serial0)" (on
    // stdout in 7.2, stderr in others): read both, and keep draining them
    // so QEMU never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    let start = Instant::now();
    let mut said = Vec::new();
    let pty = loop {
        let left = Duration::from_secs(10).saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.split("redirected to ").nth(1) {
                    break rest.split_whitespace().next().unwrap_or("").to_string();
                }
                said.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                panic!("qemu-system-arm gave no pty within 10 s; it said: {said:?}");
            }
        }
    };
    std::thread::spawn(move || for _ in rx {});
    Qemu { child, pty }
}

/// The bridge's sweep, recording what the firmware acknowledged in each
/// telemetry frame it was given (`last_command_seq`) and its clock.
#[derive(Default)]
struct Acks {
    sweep: Sweep,
    acked: Vec<u32>,
    device_us: Vec<u64>,
}

impl Controller for Acks {
    fn start(&mut self, h: &Handshake) -> Result<(), String> {
        self.acked.reserve(4096);
        self.device_us.reserve(4096);
        self.sweep.start(h)
    }

    fn act(&mut self, t: &Telemetry, action: &mut [f32]) -> Result<(), String> {
        self.acked.push(t.last_command_seq);
        self.device_us.push(t.device_time_us);
        self.sweep.act(t, action)
    }
}

/// Poll `link` until `done` accepts the newest telemetry or `within` passes;
/// the newest telemetry and the error that ended polling, if one did.
fn poll_until(
    link: &mut Bridge,
    within: Duration,
    mut done: impl FnMut(&Telemetry) -> bool,
) -> (Option<Telemetry>, Option<BridgeError>) {
    let start = Instant::now();
    let mut stats = RunStats::new();
    let mut latest = None;
    while start.elapsed() < within {
        if let Err(e) = link.poll(start.elapsed(), &mut stats, &mut latest) {
            return (latest, Some(e));
        }
        if latest.as_ref().is_some_and(&mut done) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    (latest, None)
}

fn command(seq: u32, targets: &[f32]) -> Frame {
    Frame::Command(Command {
        seq,
        targets: Joints::from_slice(targets).expect("at most 8 joints"),
    })
}

/// Bytes that are not frames: random bytes (zeros included), valid frames
/// with one flipped bit, truncated frames, and a run longer than any frame.
fn garbage() -> Vec<u8> {
    let mut out = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut buf = [0u8; diffbc_protocol::MAX_FRAME];
    for i in 0..400u32 {
        let n =
            diffbc_protocol::encode(&command(i, &[0.1, -0.2, 0.3, 9.0]), &mut buf).expect("encode");
        match i % 4 {
            0 => out.extend((0..(next() % 64)).map(|_| next() as u8)),
            1 => {
                let mut f = buf[..n].to_vec();
                let at = (next() as usize) % (n - 1);
                f[at] ^= 1 << (next() % 8);
                out.extend(f);
            }
            2 => {
                out.extend(&buf[..n / 2]);
                out.push(0);
            }
            _ => out.extend(std::iter::repeat_n(0x55, 300)),
        }
    }
    out
}

#[test]
fn the_firmware_in_qemu_answers_the_bridge() {
    let _turn = crate::hil::one_at_a_time();
    let started = Instant::now();
    let qemu = boot();
    println!("QEMU booted the firmware, UART0 on {}", qemu.pty);

    // Garbage first: the firmware must still answer a handshake after it.
    {
        let mut raw = serialport::new(&qemu.pty, 115_200)
            .timeout(Duration::from_millis(20))
            .open()
            .expect("open the pty");
        let junk = garbage();
        raw.write_all(&junk).expect("write garbage");
        raw.flush().expect("flush");
        println!("wrote {} bytes of garbage", junk.len());
    }

    // The emulated UART may still be draining the garbage (slowly, on a
    // loaded machine): the bridge keeps offering its hello meanwhile.
    let mut bridge = Bridge::connect(&qemu.pty, 115_200, Duration::from_secs(15))
        .expect("handshake after garbage");
    let h = bridge.handshake().clone();
    assert_eq!(h.protocol, PROTOCOL_VERSION);
    assert_eq!(h.joints.len(), 4, "the firmware's 4 joints");
    assert_eq!(h.watchdog_ms, 250);
    assert_eq!(h.max_rate_hz, 500);

    // The closed loop: the bridge's sweep at 100 Hz for 3 s (telemetry at 200 Hz).
    let mut c = Acks::default();
    let config = LoopConfig {
        rate_hz: 100.0,
        duration: Some(Duration::from_secs(3)),
        telemetry_timeout: Duration::from_millis(500),
        ..LoopConfig::default()
    };
    let wall = Instant::now();
    let report = bridge.run(&mut c, &config, &AtomicBool::new(false));
    let wall = wall.elapsed();
    println!("{}", report.stats.markdown());
    assert_eq!(report.outcome, Ok(()), "the loop ran to its end");
    let seqs: Vec<u32> = report.log.iter().map(|l| l.command.seq).collect();
    assert!(
        seqs.len() >= 290,
        "{} commands in 3 s at 100 Hz",
        seqs.len()
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence numbers"
    );
    let last = *seqs.last().expect("commands");
    // Delivery, from the firmware's own acknowledgements: never out of
    // order, nothing unsent, and (telemetry runs at twice the loop's rate)
    // nearly every command seen acknowledged; the last one applied.
    assert!(
        c.acked.windows(2).all(|w| w[1] >= w[0]),
        "acknowledged in order"
    );
    assert!(
        c.acked.iter().all(|&a| a <= last),
        "nothing unsent acknowledged"
    );
    let mut distinct = c.acked.clone();
    distinct.dedup();
    distinct.retain(|&a| a != 0);
    println!(
        "100 Hz x 3 s: {} commands sent, {} distinct acknowledgements seen (in order), \
         {} bad frames, {} missed deadlines",
        seqs.len(),
        distinct.len(),
        report.stats.frames_bad,
        report.stats.missed_deadlines
    );
    assert!(
        distinct.len() * 10 >= seqs.len() * 9,
        "{} commands acknowledged while {} were sent",
        distinct.len(),
        seqs.len()
    );
    assert_eq!(
        report.stats.frames_bad, 0,
        "the firmware's frames all decode"
    );
    // The device clock (SysTick) keeps wall time.
    let device = Duration::from_micros(
        c.device_us.last().expect("telemetry") - c.device_us.first().expect("telemetry"),
    );
    let ratio = device.as_secs_f64() / wall.as_secs_f64();
    println!("device clock {device:?} over {wall:?} of wall time ({ratio:.3})");
    assert!((0.8..1.2).contains(&ratio), "device/wall time {ratio}");

    // The run ended with a stop frame: the last command applied, the motors
    // holding, no watchdog later (a stop is not a lost host).
    let (t, err) = poll_until(&mut bridge, Duration::from_secs(2), |t| {
        t.last_command_seq == last && t.status & status::ENABLED == 0
    });
    assert!(err.is_none(), "{err:?}");
    let t = t.expect("telemetry after the run");
    assert_eq!(
        t.last_command_seq, last,
        "the firmware applied the last command"
    );
    assert_eq!(t.status & status::ENABLED, 0, "stopped: {:#x}", t.status);
    let (t, err) = poll_until(&mut bridge, Duration::from_millis(600), |_| false);
    assert!(err.is_none(), "no fault after a stop: {err:?}");
    let t = t.expect("telemetry while stopped");
    assert_eq!(
        t.status & (status::ENABLED | status::FAULT),
        0,
        "{:#x}",
        t.status
    );
    assert!(
        t.velocities.iter().all(|v| v.abs() < 0.05),
        "holding still: {:?}",
        t.velocities
    );

    // A stop frame in the middle of motion: the firmware holds where it is.
    let mut seq = last;
    let move_start = Instant::now();
    while move_start.elapsed() < Duration::from_millis(200) {
        seq += 1;
        bridge
            .send(&command(seq, &[1.5, -1.0, 0.5, 0.0]), move_start.elapsed())
            .expect("send");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (t, err) = poll_until(&mut bridge, Duration::from_secs(1), |t| {
        t.last_command_seq == seq
    });
    assert!(err.is_none(), "{err:?}");
    let t = t.expect("telemetry while moving");
    assert_ne!(t.status & status::ENABLED, 0, "enabled while commanded");
    bridge.stop(StopReason::Operator);
    // The drives hold the position the stop found them at: the joints'
    // momentum settles under the hold (a PD loop), in however long that
    // takes at the speed the stop came at — waited for, not timed (CI saw
    // |v| up to 0.4 rad/s 0.7 s after a stop on a loaded machine).
    let (t, err) = poll_until(&mut bridge, Duration::from_secs(5), |t| {
        t.velocities.iter().all(|v| v.abs() < 0.05)
    });
    assert!(err.is_none(), "no fault after a stop: {err:?}");
    let t = t.expect("telemetry after the stop");
    assert_eq!(t.status & status::ENABLED, 0, "stopped: {:#x}", t.status);
    assert!(
        t.positions[0] < 1.4,
        "stopped short of the target: {}",
        t.positions[0]
    );
    assert!(
        t.velocities.iter().all(|v| v.abs() < 0.05),
        "still: {:?}",
        t.velocities
    );

    // Ctrl-C: the run's stop flag, raised from another thread mid-run,
    // ends the loop with a stop frame; the firmware holds, no watchdog.
    let stop = AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let config = LoopConfig {
            duration: Some(Duration::from_secs(10)),
            ..config.clone()
        };
        bridge.run(&mut Sweep::default(), &config, &stop)
    });
    assert_eq!(report.outcome, Ok(()), "a stop flag ends the run cleanly");
    let n = report.log.total();
    assert!(
        (30..=80).contains(&n),
        "{n} commands before the stop at 0.5 s"
    );
    let (t, err) = poll_until(&mut bridge, Duration::from_millis(600), |_| false);
    assert!(err.is_none(), "no fault after the operator's stop: {err:?}");
    let t = t.expect("telemetry after the operator's stop");
    assert_eq!(
        t.status & (status::ENABLED | status::FAULT),
        0,
        "{:#x}",
        t.status
    );
    seq = t.last_command_seq;

    // The watchdog: one command, then silence: a Watchdog fault after
    // 250 ms, the motors holding, further commands ignored.
    seq += 1;
    bridge
        .send(&command(seq, &[0.5, 0.0, 0.0, 0.0]), Duration::ZERO)
        .expect("send");
    let sent = Instant::now();
    let (_, err) = poll_until(&mut bridge, Duration::from_secs(2), |_| false);
    let after = sent.elapsed();
    match err {
        Some(BridgeError::DeviceFault {
            code: FaultCode::Watchdog,
            detail,
            ..
        }) => {
            println!("watchdog latched after {after:?} (firmware: {detail} ms without a command)");
            assert!((250..400).contains(&detail), "{detail} ms");
        }
        other => panic!("expected the watchdog fault, got {other:?} after {after:?}"),
    }
    bridge
        .send(&command(seq + 1, &[-1.0, 0.0, 0.0, 0.0]), Duration::ZERO)
        .expect("send");
    let (t, _) = poll_until(&mut bridge, Duration::from_millis(300), |_| false);
    let t = t.expect("telemetry while latched");
    assert_ne!(t.status & status::FAULT, 0, "latched: {:#x}", t.status);
    assert_eq!(t.last_command_seq, seq, "commands ignored while latched");

    // A new session (Hello) clears it.
    drop(bridge);
    let bridge = Bridge::connect(&qemu.pty, 115_200, Duration::from_secs(5)).expect("handshake");
    drop(bridge);
    // QEMU is still running: the firmware never crashed.
    let mut qemu = qemu;
    assert!(
        qemu.child.try_wait().expect("wait").is_none(),
        "QEMU still running"
    );
    println!("QEMU test: {:.1} s", started.elapsed().as_secs_f64());
}

/// The bar: a policy drives the firmware for 10 s through `diffbc
/// run` (the shipped arm policy, its trained 10 Hz), and the firmware's own
/// counters, reported back in telemetry, show every command arrived in order.
#[test]
fn a_policy_drives_the_firmware_for_10_s_through_diffbc_run() {
    let _turn = crate::hil::one_at_a_time();
    let qemu = boot();
    let tmp = tempfile::tempdir().expect("tmp");
    let json = tmp.path().join("run.json");
    let model = workspace_root().join("models/arm");
    let out = crate::support::ok(&[
        "run",
        crate::support::s(&model),
        "--task",
        "arm",
        "--port",
        &qemu.pty,
        "--seconds",
        "10",
        "--json",
        crate::support::s(&json),
    ]);
    println!("{out}");
    assert!(
        out.contains("every command arrived, in order"),
        "the delivery line:\n{out}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    assert_eq!(r["outcome"], "ok", "{r}");
    assert_eq!(r["rate_hz"], 10.0, "the manifest's rate: {r}");
    let ticks = r["ticks"].as_u64().expect("ticks");
    assert!(
        (99..=102).contains(&ticks),
        "{ticks} ticks in 10 s at 10 Hz"
    );
    assert_eq!(r["frames_bad"], 0, "{r}");
    let d = &r["delivery"];
    assert_eq!(d["sent"], r["sent"], "{r}");
    assert_eq!(d["device_commands"], d["sent"], "{r}");
    assert_eq!(d["device_skipped"], 0, "{r}");
    assert_eq!(d["device_stale"], 0, "{r}");
    assert_eq!(d["device_bad_frames"], 0, "{r}");
    assert_eq!(d["last_applied_seq"], d["last_sent_seq"], "{r}");
    assert_eq!(d["complete_in_order"], true, "{r}");
    let q: Vec<f64> = r["last_positions"]
        .as_array()
        .expect("positions")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();
    assert_eq!(q.len(), 4);
    assert!(
        q.iter().any(|v| v.abs() > 0.1),
        "the policy moved the arm: {q:?}"
    );
}

/// Frames read from a port on their own thread until dropped.
struct Reader {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Frame>>>,
}

impl Reader {
    fn start(port: Box<dyn serialport::SerialPort>) -> Self {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut port = port;
            let mut d = diffbc_protocol::Decoder::new();
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let n = std::io::Read::read(&mut port, &mut buf).unwrap_or(0);
                let mut rest = &buf[..n];
                while !rest.is_empty() {
                    let (f, tail) = d.feed(rest);
                    rest = tail;
                    if let Some(Ok(f)) = f {
                        got.push(f);
                    }
                }
            }
            got
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Frame> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().expect("running").join().expect("reader")
    }
}

/// "Never panics on any input": the fuzz target's seed corpus
/// (`firmware-host/protocol/fuzz/corpus/decoder`: every frame type, hostile
/// commands, CRC-valid non-frames, flipped bits, cuts, runs without a
/// delimiter) written to the firmware's UART three times over, each input in
/// a session of its own. The firmware
/// answers what it should (handshakes, `VersionMismatch` and `BadCommand`
/// faults), never reports a `Firmware` fault (its panic handler's), keeps
/// sending telemetry and still takes a new session.
#[test]
fn the_firmware_survives_the_fuzz_corpus_over_its_uart() {
    let _turn = crate::hil::one_at_a_time();
    let qemu = boot();
    let dir = workspace_root().join("firmware-host/protocol/fuzz/corpus/decoder");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() > 50,
        "{} inputs in {}",
        files.len(),
        dir.display()
    );
    let mut port = serialport::new(&qemu.pty, 115_200)
        .timeout(Duration::from_millis(20))
        .open()
        .expect("open the pty");
    let reader = Reader::start(port.try_clone().expect("clone the port"));
    let mut written = 0;
    // Each input in a fresh session (a Hello first), so a fault an earlier
    // input latched does not shield the commands of the next.
    let mut hello = [0u8; diffbc_protocol::MAX_FRAME];
    let n = diffbc_protocol::encode(
        &Frame::Hello {
            protocol: PROTOCOL_VERSION,
        },
        &mut hello,
    )
    .expect("encode");
    for _ in 0..3 {
        for f in &files {
            // The first byte is the fuzz target's read size, not input.
            let bytes = std::fs::read(f).expect("read");
            port.write_all(&hello[..n]).expect("write");
            port.write_all(&bytes[1..]).expect("write");
            port.write_all(&[0]).expect("write");
            written += n + bytes.len();
        }
    }
    port.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(500));
    let got = reader.finish();
    drop(port);
    println!(
        "wrote {written} bytes ({} inputs x 3); the firmware sent {} frames",
        files.len(),
        got.len()
    );
    let faults: Vec<FaultCode> = got
        .iter()
        .filter_map(|f| match f {
            Frame::Fault(f) => Some(f.code),
            _ => None,
        })
        .collect();
    assert!(
        !faults.contains(&FaultCode::Firmware),
        "the firmware panicked: {faults:?}"
    );
    for code in [FaultCode::VersionMismatch, FaultCode::BadCommand] {
        assert!(faults.contains(&code), "no {code:?} among {faults:?}");
    }
    let handshakes = got
        .iter()
        .filter(|f| matches!(f, Frame::Handshake(_)))
        .count();
    assert!(
        handshakes >= 3 * files.len(),
        "{handshakes} handshakes for {} sessions",
        3 * files.len()
    );
    let times: Vec<u64> = got
        .iter()
        .filter_map(|f| match f {
            Frame::Telemetry(t) => Some(t.device_time_us),
            _ => None,
        })
        .collect();
    // Liveness, not a rate: how many frames arrive depends on how fast the
    // emulator runs on a loaded host (48 once, under a parallel build).
    assert!(
        times.len() > 20 && times.windows(2).all(|w| w[1] > w[0]),
        "telemetry kept coming: {} frames",
        times.len()
    );
    // Still a working device: a new session, telemetry, a clean stop.
    let mut bridge =
        Bridge::connect(&qemu.pty, 115_200, Duration::from_secs(5)).expect("handshake after");
    let report = bridge.run(
        &mut Sweep::default(),
        &LoopConfig {
            rate_hz: 100.0,
            duration: Some(Duration::from_millis(500)),
            telemetry_timeout: Duration::from_millis(500),
            ..LoopConfig::default()
        },
        &AtomicBool::new(false),
    );
    assert_eq!(report.outcome, Ok(()));
    let d = report.delivery.expect("the device's count");
    assert!(d.complete_in_order(), "{d}");
    let mut qemu = qemu;
    assert!(
        qemu.child.try_wait().expect("wait").is_none(),
        "QEMU still running"
    );
}

/// The fatal path, on a build that panics 3 s after boot (`--features
/// panic-probe`): the panic handler sends a `Firmware` fault whose detail is
/// the panic's source line, the host's loop stops on it (a stop frame, the
/// run's error), and the device says nothing more (halted, drives cut).
#[test]
fn a_firmware_panic_sends_a_firmware_fault_and_halts() {
    let _turn = crate::hil::one_at_a_time();
    let main_rs = workspace_root().join("firmware-host/mcu/src/main.rs");
    let source = std::fs::read_to_string(&main_rs).expect("main.rs");
    let line = source
        .lines()
        .position(|l| l.contains("panic!(\"panic-probe\")"))
        .expect("the probe's panic in main.rs") as u32
        + 1;
    let qemu = boot_elf(&panic_probe_elf());
    let mut bridge =
        Bridge::connect(&qemu.pty, 115_200, Duration::from_secs(2)).expect("handshake");
    let report = bridge.run(
        &mut Sweep::default(),
        &LoopConfig {
            rate_hz: 100.0,
            duration: Some(Duration::from_secs(10)),
            telemetry_timeout: Duration::from_millis(500),
            ..LoopConfig::default()
        },
        &AtomicBool::new(false),
    );
    let e = report.outcome.expect_err("the panic ends the run");
    println!("{e}; {} commands before it", report.log.total());
    assert!(e.contains("Firmware"), "{e}");
    assert!(e.contains(&line.to_string()), "detail = line {line}: {e}");
    // Until the panic, not to the end of the 10 s run: 3 s of device time
    // after boot (QEMU's clock lags the wall clock when the host is busy).
    assert!(
        (100..=700).contains(&report.log.total()),
        "{} commands at 100 Hz until the panic at 3 s",
        report.log.total()
    );
    // Halted: not one frame more.
    let (t, err) = poll_until(&mut bridge, Duration::from_millis(600), |_| false);
    assert!(
        t.is_none() && err.is_none(),
        "after the panic: {t:?} {err:?}"
    );
    assert!(
        report.delivery.is_none(),
        "no telemetry after the stop to count with"
    );
}
