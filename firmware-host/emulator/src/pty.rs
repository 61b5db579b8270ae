//! The emulated arm on a pseudo-terminal, against the wall clock: what
//! `diffbc sim-arm` runs and the bridge's tests connect to, with switches
//! that inject byte-level faults, silence, an overload or an unplug/replug.

use crate::arm::{DEFAULT_COMMAND_LOG, SimArm, SimConfig};
use diffbc_bridge::Ring;
use diffbc_protocol::{Command, Decoder, Fault, FaultCode, Frame, MAX_FRAME, StopReason, encode};
use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Byte-level faults the emulated arm injects into what it sends, for tests.
#[derive(Debug, Default)]
pub struct Faults {
    /// Every Nth telemetry frame is preceded by random garbage (0 = never).
    pub garbage_every: AtomicU32,
    /// Every Nth telemetry frame has one bit flipped (0 = never).
    pub flip_every: AtomicU32,
    /// Every Nth telemetry frame is cut short (0 = never).
    pub truncate_every: AtomicU32,
    /// The device stops answering and sending (but keeps the port open).
    pub silent: AtomicBool,
    /// Unplug: close the pty, and after `replug_ms` open a new one behind
    /// the same link path.
    pub unplug: AtomicBool,
    /// Delay before the new pty appears (ms).
    pub replug_ms: AtomicU32,
    /// Latch an overload fault on joint 0 and report it.
    pub overload: AtomicBool,
}

/// What the emulated arm saw, shared with the test or CLI that runs it.
#[derive(Debug)]
pub struct SimShared {
    /// The commands applied, in arrival order, across reconnections: the
    /// newest [`SimConfig::command_log`]; `total()` counts all.
    pub commands: Mutex<Ring<Command>>,
    /// Faults the arm reported.
    pub faults: Mutex<Vec<Fault>>,
    /// Bad frames received.
    pub bad_frames: AtomicU32,
    /// Telemetry frames corrupted on purpose.
    pub corrupted: AtomicU32,
    /// Times the pty was replaced.
    pub replugs: AtomicU32,
    /// Stop frames received.
    pub stops: AtomicU32,
    /// The reason carried by the last stop frame received.
    pub last_stop: Mutex<Option<StopReason>>,
    /// The pty slave `link` points at now (what `link` must still point at
    /// for the emulator to remove or replace it).
    pub pty: Mutex<PathBuf>,
}

impl SimShared {
    /// Nothing seen yet; keeps the newest `command_log` commands.
    pub fn new(command_log: usize) -> Self {
        Self {
            commands: Mutex::new(Ring::new(command_log)),
            faults: Mutex::default(),
            bad_frames: AtomicU32::default(),
            corrupted: AtomicU32::default(),
            replugs: AtomicU32::default(),
            stops: AtomicU32::default(),
            last_stop: Mutex::default(),
            pty: Mutex::default(),
        }
    }

    /// The reason of the last stop frame received, if any.
    pub fn last_stop(&self) -> Option<StopReason> {
        *self.last_stop.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commands received in all (kept or not).
    pub fn commands_total(&self) -> u64 {
        self.commands
            .lock()
            .map_or_else(|e| e.into_inner().total(), |c| c.total())
    }
}

impl Default for SimShared {
    fn default() -> Self {
        Self::new(DEFAULT_COMMAND_LOG)
    }
}

/// A running emulated arm on a pseudo-terminal.
#[derive(Debug)]
pub struct SimHandle {
    /// The path a host opens (a symlink to the current pty slave).
    pub path: PathBuf,
    /// What it saw.
    pub shared: Arc<SimShared>,
    /// Fault injection switches.
    pub faults: Arc<Faults>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimHandle {
    /// The commands kept so far (the newest [`SimConfig::command_log`]),
    /// once at least `n` have been received in all or `timeout` has passed
    /// (bytes a host wrote may still be in the pty).
    pub fn commands_when(&self, n: u64, timeout: std::time::Duration) -> Vec<Command> {
        let start = std::time::Instant::now();
        loop {
            let got = {
                let c = self
                    .shared
                    .commands
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                (c.total() >= n || start.elapsed() > timeout).then(|| c.to_vec())
            };
            if let Some(got) = got {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stop the firmware thread (closes the pty).
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let ours = self
            .shared
            .pty
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        remove_our_link(&self.path, &ours);
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `link` may be (re)pointed at a pty: it does not exist, or it is
/// a symlink into `/dev/` (a pty or tty, e.g. one a crashed emulator left).
/// Anything else — a regular file, a folder, a symlink to a user's file — is
/// refused with an error naming the path; nothing is deleted.
fn check_link(link: &Path) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let meta = match std::fs::symlink_metadata(link) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::new(e.kind(), format!("{}: {e}", link.display()))),
    };
    let what = if meta.file_type().is_symlink() {
        match std::fs::read_link(link) {
            Ok(target) if target.starts_with("/dev/") => return Ok(()),
            Ok(target) => format!("a symlink to {}, not to a pty", target.display()),
            Err(e) => format!("an unreadable symlink ({e})"),
        }
    } else if meta.is_dir() {
        "a folder".to_string()
    } else if meta.is_file() {
        "a regular file".to_string()
    } else {
        "not a symlink".to_string()
    };
    Err(Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "{}: exists and is {what}; refusing to replace it with the emulated arm's link (choose another --link)",
            link.display()
        ),
    ))
}

/// Remove `link` only if it is still a symlink to `ours` (our pty slave).
fn remove_our_link(link: &Path, ours: &Path) {
    if !ours.as_os_str().is_empty() && std::fs::read_link(link).is_ok_and(|t| t == ours) {
        let _ = std::fs::remove_file(link);
    }
}

/// Open a pty pair and point `link` at its slave. `link` must not exist or
/// be a symlink into `/dev/` ([`check_link`]); the new symlink is made under
/// a fresh name beside it (never deleting anything) and renamed over it.
fn open_pty(link: &Path) -> std::io::Result<(TTYPort, TTYPort, PathBuf)> {
    check_link(link)?;
    let (master, slave) = TTYPort::pair().map_err(std::io::Error::other)?;
    let name = slave
        .name()
        .ok_or_else(|| std::io::Error::other("the pty slave has no name"))?;
    let dir = link
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "link".into());
    let mut attempt = 0u32;
    let tmp = loop {
        let tmp = dir.join(format!(
            ".{base}.{}.{attempt}.diffbc-tmp",
            std::process::id()
        ));
        match std::os::unix::fs::symlink(&name, &tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", tmp.display()),
                ));
            }
        }
    };
    // Checked again just before the rename: a file that appeared meanwhile
    // is not replaced.
    if let Err(e) = check_link(link).and_then(|()| std::fs::rename(&tmp, link)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok((master, slave, PathBuf::from(name)))
}

/// Run the emulated arm on a new pty; hosts open `link` (a symlink to the
/// pty slave, replaced on replug like a udev by-id link).
///
/// Refuses limits the firmware could not run with (each joint finite with
/// `min < max`, speeds positive), a time scale outside (0,
/// [`diffbc_bridge::checked::MAX_TIME_SCALE`]], and a `link` that exists and is not
/// a symlink into `/dev/` (nothing is deleted).
pub fn spawn_pty(config: SimConfig, link: &Path) -> std::io::Result<SimHandle> {
    let invalid =
        |e: diffbc_bridge::ValueError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    diffbc_bridge::checked::joint_limits(&config.limits).map_err(invalid)?;
    diffbc_bridge::checked::time_scale("time_scale", config.time_scale).map_err(invalid)?;
    let (master, slave, pty) = open_pty(link)?;
    let shared = Arc::new(SimShared::new(config.command_log));
    if let Ok(mut p) = shared.pty.lock() {
        *p = pty;
    }
    let faults = Arc::new(Faults::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, f2, st2, link2) = (
        shared.clone(),
        faults.clone(),
        stop.clone(),
        link.to_path_buf(),
    );
    let thread = std::thread::Builder::new()
        .name("sim-arm".into())
        .spawn(move || run(config, master, slave, &link2, &s2, &f2, &st2))?;
    Ok(SimHandle {
        path: link.to_path_buf(),
        shared,
        faults,
        stop,
        thread: Some(thread),
    })
}

fn run(
    config: SimConfig,
    mut master: TTYPort,
    slave: TTYPort,
    link: &Path,
    shared: &SimShared,
    faults: &Faults,
    stop: &AtomicBool,
) {
    // Keep our own slave handle open, so the master never reads EIO while a
    // host closes and reopens the port.
    let mut _slave = Some(slave);
    let _ = master.set_timeout(Duration::from_millis(1));
    let start = Instant::now();
    // Checked by `spawn_pty` (checked::time_scale) before this thread starts.
    let scale = config.time_scale;
    // The arm's own log keeps only the newest command (copied to `shared`).
    let mut arm = SimArm::new(SimConfig {
        command_log: 1,
        ..config.clone()
    });
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 512];
    let mut out = [0u8; MAX_FRAME + 64];
    let physics_dt = Duration::from_secs_f64(1.0 / f64::from(config.physics_hz.max(1)));
    let telemetry_dt = Duration::from_secs_f64(1.0 / f64::from(config.telemetry_hz.max(1)));
    let (mut physics_at, mut telemetry_at) = (Duration::ZERO, Duration::ZERO);
    let mut session = false;
    let mut sent: u32 = 0;
    let mut noise: u32 = 0x1234_5678;
    while !stop.load(Ordering::Relaxed) {
        if faults.unplug.swap(false, Ordering::Relaxed) {
            drop(_slave.take());
            drop(master);
            // Remove the link only while it is still ours.
            let ours = shared.pty.lock().map(|p| p.clone()).unwrap_or_default();
            remove_our_link(link, &ours);
            std::thread::sleep(Duration::from_millis(u64::from(
                faults.replug_ms.load(Ordering::Relaxed),
            )));
            match open_pty(link) {
                Ok((m, s, pty)) => {
                    if let Ok(mut p) = shared.pty.lock() {
                        *p = pty;
                    }
                    master = m;
                    let _ = master.set_timeout(Duration::from_millis(1));
                    _slave = Some(s);
                    decoder.reset();
                    session = false;
                    shared.replugs.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!("sim-arm: cannot replug: {e}");
                    return;
                }
            }
        }
        let now = start.elapsed().mul_f64(scale);
        let silent = faults.silent.load(Ordering::Relaxed);
        // Read whatever arrived.
        let avail = master.bytes_to_read().unwrap_or(0) as usize;
        if avail > 0 {
            let take = avail.min(buf.len());
            let n = master.read(&mut buf[..take]).unwrap_or(0);
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let (frame, tail) = decoder.feed(rest);
                rest = tail;
                // A stop frame is recorded even while silent: a device whose
                // sending side failed still receives (and obeys) it.
                if let Some(Ok(Frame::Stop { reason })) = &frame {
                    if let Ok(mut l) = shared.last_stop.lock() {
                        *l = Some(*reason);
                    }
                    shared.stops.fetch_add(1, Ordering::Relaxed);
                    if silent {
                        arm.on_frame(Frame::Stop { reason: *reason }, now);
                    }
                }
                match frame {
                    Some(Ok(f)) if !silent => {
                        if matches!(f, Frame::Hello { .. }) {
                            session = true;
                        }
                        let applied = arm.commands.total();
                        if let Some(reply) = arm.on_frame(f, now) {
                            if let Frame::Fault(fault) = reply
                                && let Ok(mut v) = shared.faults.lock()
                            {
                                v.push(fault);
                            }
                            send(&mut master, &reply, &mut out);
                        }
                        if arm.commands.total() > applied
                            && let Some(c) = arm.commands.last()
                            && let Ok(mut v) = shared.commands.lock()
                        {
                            v.push(c.clone());
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) => {
                        shared.bad_frames.fetch_add(1, Ordering::Relaxed);
                        arm.count_bad_frame();
                    }
                    None => {}
                }
            }
        }
        if silent {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        while physics_at + physics_dt <= now {
            arm.step(physics_dt.as_secs_f32());
            physics_at += physics_dt;
        }
        let injected = faults
            .overload
            .swap(false, Ordering::Relaxed)
            .then(|| arm.latch(FaultCode::Overload, 0, 0));
        if let Some(f) = injected
            .or_else(|| arm.take_pending())
            .or_else(|| arm.check_watchdog(now))
        {
            if let Frame::Fault(fault) = f
                && let Ok(mut v) = shared.faults.lock()
            {
                v.push(fault);
            }
            send(&mut master, &f, &mut out);
        }
        if session && now >= telemetry_at {
            telemetry_at = now + telemetry_dt;
            sent = sent.wrapping_add(1);
            let t = Frame::Telemetry(arm.telemetry(now));
            let Ok(n) = encode(&t, &mut out) else {
                continue;
            };
            let every = |a: &AtomicU32| {
                let k = a.load(Ordering::Relaxed);
                k > 0 && sent.is_multiple_of(k)
            };
            noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let mut frame = &mut out[..n];
            if every(&faults.garbage_every) {
                let mut g = [0u8; 7];
                for (i, b) in g.iter_mut().enumerate() {
                    *b = (noise >> (i * 3)) as u8 | 1;
                }
                let _ = master.write_all(&g[..1 + (noise as usize % 7)]);
                shared.corrupted.fetch_add(1, Ordering::Relaxed);
            }
            if every(&faults.flip_every) {
                let at = 1 + noise as usize % (n - 2);
                frame[at] ^= 1 << (noise % 8);
                if frame[at] == 0 {
                    frame[at] = 0x55;
                }
                shared.corrupted.fetch_add(1, Ordering::Relaxed);
            }
            if every(&faults.truncate_every) {
                // Cut the frame short; the delimiter goes out so the host
                // resynchronises at once.
                let cut = n / 2;
                frame[cut] = 0;
                frame = &mut frame[..=cut];
                shared.corrupted.fetch_add(1, Ordering::Relaxed);
            }
            let _ = master.write_all(frame);
        }
        std::thread::sleep(Duration::from_micros(300));
    }
}

fn send(port: &mut TTYPort, frame: &Frame, out: &mut [u8]) {
    if let Ok(n) = encode(frame, out) {
        let _ = port.write_all(&out[..n]);
    }
}
