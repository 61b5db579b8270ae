//! The emulated arm firmware: what the arm's microcontroller does, on the same
//! protocol crate, behind a pseudo-terminal.
//!
//! [`SimArm`] is the firmware's logic with time passed in (unit-testable with
//! any clock); [`spawn_pty`] runs it on a pty against the wall clock, the way
//! `diffbc sim-arm` does.

use crate::ring::Ring;
use diffbc_protocol::{
    Command, Decoder, EXTRA_CHANNELS, Fault, FaultCode, Frame, Handshake, JointLimit, Joints,
    MAX_FRAME, PROTOCOL_VERSION, StopReason, Telemetry, encode, status,
};
use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The emulated arm's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Joint limits (one per joint).
    pub limits: Vec<JointLimit>,
    /// Position gain of the joint servos (1/s²).
    pub kp: f32,
    /// Velocity gain (1/s).
    pub kd: f32,
    /// Physics steps per second.
    pub physics_hz: u32,
    /// Telemetry frames per second.
    pub telemetry_hz: u32,
    /// Commands older than this trip the watchdog.
    pub watchdog: Duration,
    /// Highest command rate accepted (reported in the handshake).
    pub max_rate_hz: u16,
    /// The task world: joint configurations to visit (at most
    /// [`EXTRA_CHANNELS`]); a target counts as reached within `tolerance`.
    pub targets: Vec<Vec<f32>>,
    /// Reach tolerance (rad, max over joints).
    pub tolerance: f32,
    /// Targets to reach before the task counts as done (`TASK_DONE`);
    /// `None` = all of them.
    pub goal_count: Option<usize>,
    /// Joint positions at power-on.
    pub initial: Vec<f32>,
    /// Fixed objects in the workspace; touching one latches a
    /// [`FaultCode::Collision`] fault.
    pub obstacles: Vec<Obstacle>,
    /// Device seconds per wall-clock second when run on a pty (1 = real
    /// time). Physics, telemetry and the watchdog run on device time, so a
    /// host that scales its control rate by the same factor sees exactly the
    /// real-time dynamics, only sooner.
    pub time_scale: f64,
    /// Most received commands kept (the newest) in [`SimArm::commands`] and
    /// [`SimShared::commands`]; the total is counted.
    pub command_log: usize,
}

/// [`SimConfig::command_log`]'s default: 2^16 commands, 131 s at 500 Hz
/// (about 2.6 MB per log).
pub const DEFAULT_COMMAND_LOG: usize = 1 << 16;

/// A fixed object: a disc in the plane of joints 0 and 1 (the arm's
/// shoulder plane), touched when those two joints come within `radius` of
/// `center`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Obstacle {
    /// Centre (joint 0, joint 1), rad.
    pub center: [f32; 2],
    /// Radius, rad.
    pub radius: f32,
}

impl Obstacle {
    /// Whether joint positions `q` touch it.
    pub fn touches(&self, q: &[f32]) -> bool {
        q.len() >= 2 && (q[0] - self.center[0]).hypot(q[1] - self.center[1]) < self.radius
    }
}

impl SimConfig {
    /// A 4-joint arm with three targets.
    pub fn default_arm() -> Self {
        let lim = JointLimit {
            min: -2.5,
            max: 2.5,
            max_velocity: 3.0,
            max_acceleration: 30.0,
        };
        Self {
            limits: vec![lim; 4],
            kp: 100.0,
            kd: 20.0,
            physics_hz: 1000,
            telemetry_hz: 200,
            watchdog: Duration::from_millis(250),
            max_rate_hz: 500,
            targets: vec![
                vec![0.8, -0.4, 0.3, 0.0],
                vec![-0.7, 0.5, -0.2, 0.4],
                vec![0.2, 0.9, 0.6, -0.5],
            ],
            tolerance: 0.08,
            goal_count: None,
            obstacles: Vec::new(),
            initial: vec![0.0; 4],
            time_scale: 1.0,
            command_log: DEFAULT_COMMAND_LOG,
        }
    }

    /// Targets needed for `TASK_DONE`.
    pub fn goal(&self) -> usize {
        let n = self.targets.len().min(EXTRA_CHANNELS);
        self.goal_count.map_or(n, |g| g.min(n))
    }

    /// Joint count.
    pub fn joints(&self) -> usize {
        self.limits.len()
    }
}

/// The firmware's state.
#[derive(Debug, Clone)]
pub struct SimArm {
    config: SimConfig,
    q: Vec<f32>,
    qd: Vec<f32>,
    target: Vec<f32>,
    enabled: bool,
    last_command: Option<Duration>,
    last_command_seq: u32,
    fault: Option<Fault>,
    telemetry_seq: u32,
    reached: [bool; EXTRA_CHANNELS],
    order: heapless::Vec<u8, EXTRA_CHANNELS>,
    pending: Option<Frame>,
    /// The commands applied, in arrival order: the newest
    /// [`SimConfig::command_log`]; `commands.total()` counts all.
    pub commands: Ring<Command>,
}

fn joints(v: &[f32]) -> Joints {
    let mut j = Joints::new();
    for &x in v {
        let _ = j.push(x);
    }
    j
}

impl SimArm {
    /// At rest at `config.initial` (0 rad where it is short), motors
    /// disabled until the first command.
    pub fn new(config: SimConfig) -> Self {
        let n = config.joints();
        let q: Vec<f32> = (0..n)
            .map(|j| {
                let l = config.limits[j];
                config
                    .initial
                    .get(j)
                    .copied()
                    .unwrap_or(0.0)
                    .clamp(l.min, l.max)
            })
            .collect();
        Self {
            target: q.clone(),
            q,
            qd: vec![0.0; n],
            enabled: false,
            last_command: None,
            last_command_seq: 0,
            fault: None,
            telemetry_seq: 0,
            reached: [false; EXTRA_CHANNELS],
            order: heapless::Vec::new(),
            pending: None,
            commands: Ring::new(config.command_log),
            config,
        }
    }

    /// Measured positions.
    pub fn positions(&self) -> &[f32] {
        &self.q
    }

    /// The latched fault, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// The handshake this arm answers with.
    pub fn handshake(&self) -> Handshake {
        let mut joints = heapless::Vec::new();
        for l in &self.config.limits {
            let _ = joints.push(*l);
        }
        Handshake {
            protocol: PROTOCOL_VERSION,
            joints,
            max_rate_hz: self.config.max_rate_hz,
            watchdog_ms: self.config.watchdog.as_millis().min(u16::MAX as u128) as u16,
        }
    }

    fn latch(&mut self, code: FaultCode, joint: u8, detail: u32) -> Frame {
        let f = Fault {
            code,
            joint,
            detail,
        };
        self.fault = Some(f);
        self.enabled = false;
        self.target.copy_from_slice(&self.q);
        Frame::Fault(f)
    }

    /// Handle one frame from the host at time `now`; returns the reply.
    pub fn on_frame(&mut self, frame: Frame, now: Duration) -> Option<Frame> {
        match frame {
            Frame::Hello { protocol } if protocol != PROTOCOL_VERSION => {
                Some(self.latch(FaultCode::VersionMismatch, 255, u32::from(protocol)))
            }
            Frame::Hello { .. } => {
                // A new session clears a latched fault (the host saw it).
                self.fault = None;
                self.last_command = None;
                Some(Frame::Handshake(self.handshake()))
            }
            Frame::Command(c) => {
                if self.fault.is_some() {
                    return None;
                }
                if c.targets.len() != self.config.joints()
                    || c.targets.iter().any(|v| !v.is_finite())
                {
                    return Some(self.latch(FaultCode::BadCommand, 255, c.seq));
                }
                for (t, (v, l)) in self
                    .target
                    .iter_mut()
                    .zip(c.targets.iter().zip(&self.config.limits))
                {
                    *t = v.clamp(l.min, l.max);
                }
                self.enabled = true;
                self.last_command = Some(now);
                self.last_command_seq = c.seq;
                self.commands.push(c);
                None
            }
            Frame::Stop { .. } => {
                self.enabled = false;
                self.last_command = None;
                self.target.copy_from_slice(&self.q);
                Some(Frame::Stop {
                    reason: StopReason::EndOfRun,
                })
            }
            Frame::Heartbeat { .. }
            | Frame::Handshake(_)
            | Frame::Telemetry(_)
            | Frame::Fault(_) => None,
        }
    }

    /// A fault the physics latched (a collision) that is still to be sent.
    pub fn take_pending(&mut self) -> Option<Frame> {
        self.pending.take()
    }

    /// Trip the watchdog if commands stopped for longer than allowed; returns
    /// the fault frame to send (once).
    pub fn check_watchdog(&mut self, now: Duration) -> Option<Frame> {
        let last = self.last_command?;
        if self.fault.is_none() && self.enabled && now.saturating_sub(last) > self.config.watchdog {
            let ms = now.saturating_sub(last).as_millis().min(u32::MAX as u128) as u32;
            return Some(self.latch(FaultCode::Watchdog, 255, ms));
        }
        None
    }

    /// Advance the physics by `dt`: PD servo toward the target (or hold), with
    /// acceleration, velocity and position limits.
    pub fn step(&mut self, dt: f32) {
        for j in 0..self.q.len() {
            let l = self.config.limits[j];
            let goal = self.target[j];
            let acc = (self.config.kp * (goal - self.q[j]) - self.config.kd * self.qd[j])
                .clamp(-l.max_acceleration, l.max_acceleration);
            self.qd[j] = (self.qd[j] + acc * dt).clamp(-l.max_velocity, l.max_velocity);
            self.q[j] += self.qd[j] * dt;
            if self.q[j] <= l.min || self.q[j] >= l.max {
                self.q[j] = self.q[j].clamp(l.min, l.max);
                self.qd[j] = 0.0;
            }
        }
        if self.fault.is_none()
            && let Some(i) = self
                .config
                .obstacles
                .iter()
                .position(|o| o.touches(&self.q))
        {
            // Contact: the motors stop where they are.
            self.qd.iter_mut().for_each(|v| *v = 0.0);
            self.pending = Some(self.latch(FaultCode::Collision, 255, i as u32));
        }
        for (i, t) in self.config.targets.iter().enumerate().take(EXTRA_CHANNELS) {
            let d = t
                .iter()
                .zip(&self.q)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            if d <= self.config.tolerance && !self.reached[i] {
                self.reached[i] = true;
                let _ = self.order.push(i as u8);
            }
        }
    }

    /// Targets reached so far, in target order.
    pub fn reached(&self) -> &[bool] {
        &self.reached[..self.config.targets.len().min(EXTRA_CHANNELS)]
    }

    /// Target indices in the order they were first reached.
    pub fn order(&self) -> &[u8] {
        &self.order
    }

    /// Whether the task is done (`goal` targets reached).
    pub fn task_done(&self) -> bool {
        let n = self.reached().len();
        n > 0 && self.order.len() >= self.config.goal()
    }

    /// Measured velocities.
    pub fn velocities(&self) -> &[f32] {
        &self.qd
    }

    /// The next telemetry frame at device time `now`.
    pub fn telemetry(&mut self, now: Duration) -> Telemetry {
        self.telemetry_seq = self.telemetry_seq.wrapping_add(1);
        let mut s = 0;
        if self.enabled {
            s |= status::ENABLED;
        } else {
            s |= status::HOLDING;
        }
        if self.fault.is_some() {
            s |= status::FAULT;
        }
        if self.task_done() {
            s |= status::TASK_DONE;
        }
        let mut extra = [0.0; EXTRA_CHANNELS];
        for (e, &r) in extra.iter_mut().zip(self.reached()) {
            *e = if r { 1.0 } else { 0.0 };
        }
        Telemetry {
            seq: self.telemetry_seq,
            device_time_us: now.as_micros().min(u64::MAX as u128) as u64,
            last_command_seq: self.last_command_seq,
            positions: joints(&self.q),
            velocities: joints(&self.qd),
            status: s,
            extra,
        }
    }
}

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
    /// Targets reached (bit i = target i).
    pub reached: AtomicU32,
    /// Target indices in the order they were first reached.
    pub order: Mutex<Vec<u8>>,
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
            reached: AtomicU32::default(),
            order: Mutex::default(),
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
/// [`crate::checked::MAX_TIME_SCALE`]], and a `link` that exists and is not
/// a symlink into `/dev/` (nothing is deleted).
pub fn spawn_pty(config: SimConfig, link: &Path) -> std::io::Result<SimHandle> {
    let invalid = |e: crate::ValueError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    crate::checked::joint_limits(&config.limits).map_err(invalid)?;
    crate::checked::time_scale("time_scale", config.time_scale).map_err(invalid)?;
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
        let reached = arm
            .reached()
            .iter()
            .enumerate()
            .fold(0u32, |m, (i, &r)| m | (u32::from(r) << i));
        if shared.reached.swap(reached, Ordering::Relaxed) != reached
            && let Ok(mut o) = shared.order.lock()
        {
            o.clear();
            o.extend_from_slice(arm.order());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(seq: u32, t: &[f32]) -> Frame {
        Frame::Command(Command {
            seq,
            targets: joints(t),
        })
    }

    #[test]
    fn servos_reach_a_commanded_target_within_limits() {
        let mut arm = SimArm::new(SimConfig::default_arm());
        assert!(matches!(
            arm.on_frame(
                Frame::Hello {
                    protocol: PROTOCOL_VERSION
                },
                Duration::ZERO
            ),
            Some(Frame::Handshake(_))
        ));
        arm.on_frame(cmd(1, &[0.8, -0.4, 0.3, 0.0]), Duration::ZERO);
        let mut peak_speed = 0.0f32;
        for i in 0..2000 {
            arm.step(0.001);
            peak_speed = peak_speed.max(arm.qd.iter().fold(0.0f32, |m, v| m.max(v.abs())));
            if i == 100 {
                // Time in the command is injected: 0.1 s after the command.
                assert!(arm.check_watchdog(Duration::from_millis(100)).is_none());
            }
        }
        for (q, t) in arm.positions().iter().zip([0.8, -0.4, 0.3, 0.0]) {
            assert!((q - t).abs() < 0.01, "{q} vs {t}");
        }
        assert!(peak_speed <= 3.0 + 1e-4, "velocity limit: {peak_speed}");
        assert!(arm.reached()[0], "target 0 is that configuration");
        assert_eq!(arm.telemetry(Duration::from_secs(2)).extra[0], 1.0);
    }

    #[test]
    fn the_watchdog_holds_position_and_latches_a_fault() {
        let mut arm = SimArm::new(SimConfig::default_arm());
        arm.on_frame(cmd(1, &[1.0, 0.0, 0.0, 0.0]), Duration::ZERO);
        for _ in 0..100 {
            arm.step(0.001);
        }
        assert!(arm.check_watchdog(Duration::from_millis(200)).is_none());
        let f = arm
            .check_watchdog(Duration::from_millis(300))
            .expect("trips");
        assert!(matches!(
            f,
            Frame::Fault(Fault {
                code: FaultCode::Watchdog,
                detail: 300,
                ..
            })
        ));
        assert!(
            arm.check_watchdog(Duration::from_millis(400)).is_none(),
            "once"
        );
        let held = arm.positions()[0];
        for _ in 0..500 {
            arm.step(0.001);
        }
        assert!(
            (arm.positions()[0] - held).abs() < 0.05,
            "holds near where it was"
        );
        // Commands are ignored while the fault is latched; Hello clears it.
        arm.on_frame(cmd(2, &[-1.0, 0.0, 0.0, 0.0]), Duration::from_millis(900));
        assert_eq!(arm.commands.len(), 1);
        arm.on_frame(
            Frame::Hello {
                protocol: PROTOCOL_VERSION,
            },
            Duration::from_secs(1),
        );
        assert!(arm.fault().is_none());
    }

    #[test]
    fn bad_commands_and_versions_fault() {
        let mut arm = SimArm::new(SimConfig::default_arm());
        let r = arm.on_frame(cmd(5, &[0.0, f32::NAN, 0.0, 0.0]), Duration::ZERO);
        assert!(matches!(
            r,
            Some(Frame::Fault(Fault {
                code: FaultCode::BadCommand,
                ..
            }))
        ));
        let mut arm = SimArm::new(SimConfig::default_arm());
        let r = arm.on_frame(cmd(5, &[0.0, 0.0]), Duration::ZERO);
        assert!(matches!(
            r,
            Some(Frame::Fault(Fault {
                code: FaultCode::BadCommand,
                ..
            }))
        ));
        let r = arm.on_frame(Frame::Hello { protocol: 99 }, Duration::ZERO);
        assert!(matches!(
            r,
            Some(Frame::Fault(Fault {
                code: FaultCode::VersionMismatch,
                detail: 99,
                ..
            }))
        ));
    }
}
