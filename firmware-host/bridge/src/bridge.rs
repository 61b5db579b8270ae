//! The host side: open a serial port, handshake, and run the fixed-rate
//! control loop (latest telemetry → controller → safety layer → command).
//!
//! The controller runs on its own thread. Each tick the loop hands it the
//! newest telemetry and waits at most `deadline` for the action; a late
//! action is counted as a miss and the last safe command is sent again, so
//! inference never stalls the loop. The loop does not allocate at steady
//! state (frames encoded into a stack buffer, telemetry passed by value
//! through bounded channels, histograms sized at start, the command log a
//! ring reserved at start); `tests/no_alloc.rs` counts.
//!
//! Every way out of [`Bridge::run`] sends one stop frame: the end of the run,
//! the stop flag, a device fault, silence, a controller error or panic, a
//! configuration refused before anything moved, and a panic in the loop
//! itself (the frame goes out, then the panic continues). A device whose
//! handshake carries unusable limits gets a stop frame from
//! [`Bridge::connect`], which refuses it.

use crate::checked::{self, ValueError};
use crate::ring::Ring;
use crate::safety::{SafetyError, SafetyLayer};
use crate::stats::RunStats;
use diffbc_protocol::{
    Command, Decoder, FaultCode, Frame, Handshake, Joints, MAX_FRAME, MAX_JOINTS, PROTOCOL_VERSION,
    StopReason, Telemetry, encode, status,
};
use serialport::SerialPort;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Why the bridge stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The port could not be opened.
    #[error("{port}: cannot open: {cause}")]
    Open {
        /// The port path.
        port: String,
        /// Why.
        cause: String,
    },
    /// Reading or writing failed and reconnecting did not succeed in time.
    #[error("{port}: the device is gone ({cause}); reconnecting failed for {waited_ms} ms")]
    Vanished {
        /// The port path.
        port: String,
        /// The last I/O error.
        cause: String,
        /// How long reconnecting was tried.
        waited_ms: u64,
    },
    /// No handshake came back.
    #[error("{port}: no handshake within {ms} ms (is it the arm, at the right baud rate?)")]
    NoHandshake {
        /// The port path.
        port: String,
        /// The timeout.
        ms: u64,
    },
    /// The device speaks another protocol version or rejected ours.
    #[error("{port}: protocol mismatch: {message}")]
    Protocol {
        /// The port path.
        port: String,
        /// Details.
        message: String,
    },
    /// The configuration does not fit the device.
    #[error("configuration: {0}")]
    Config(String),
    /// No telemetry arrived for too long; a stop frame was sent.
    #[error("the device went silent: no telemetry for {ms} ms; stop sent")]
    Silent {
        /// Milliseconds since the last telemetry.
        ms: u64,
    },
    /// The device reported a fault; a stop frame was sent.
    #[error("the device reported {code:?} (joint {joint}, detail {detail}); stop sent")]
    DeviceFault {
        /// The fault.
        code: FaultCode,
        /// Joint, 255 for none.
        joint: u8,
        /// Detail.
        detail: u32,
    },
    /// The controller failed; a stop frame was sent.
    #[error("controller: {0}; stop sent")]
    Controller(String),
}

/// Turns telemetry into joint targets. Runs on its own thread.
pub trait Controller: Send {
    /// Called once after the handshake; refuse a device the controller cannot drive.
    fn start(&mut self, handshake: &Handshake) -> Result<(), String> {
        let _ = handshake;
        Ok(())
    }

    /// Write the action for `telemetry` into `action` (one target per joint).
    fn act(&mut self, telemetry: &Telemetry, action: &mut [f32]) -> Result<(), String>;
}

impl<C: Controller + ?Sized> Controller for Box<C> {
    fn start(&mut self, handshake: &Handshake) -> Result<(), String> {
        (**self).start(handshake)
    }

    fn act(&mut self, telemetry: &Telemetry, action: &mut [f32]) -> Result<(), String> {
        (**self).act(telemetry, action)
    }
}

/// A reference controller that sweeps every joint smoothly over the middle
/// quarter of its range (one joint a phase apart from the next), timed by
/// the device clock. It costs microseconds, so a run with it measures the
/// loop and the link rather than a policy (`diffbc bench-bridge`, HIL tests).
#[derive(Debug, Clone, Default)]
pub struct Sweep {
    centre: [f32; MAX_JOINTS],
    half: [f32; MAX_JOINTS],
}

impl Controller for Sweep {
    fn start(&mut self, handshake: &Handshake) -> Result<(), String> {
        for (j, l) in handshake.joints.iter().enumerate() {
            self.centre[j] = 0.5 * (l.min + l.max);
            self.half[j] = 0.125 * (l.max - l.min);
        }
        Ok(())
    }

    fn act(&mut self, telemetry: &Telemetry, action: &mut [f32]) -> Result<(), String> {
        let phase = telemetry.device_time_us as f32 * 1e-6;
        for (j, a) in action.iter_mut().enumerate() {
            *a = self.centre[j] + self.half[j] * (phase * 1.3 + j as f32).sin();
        }
        Ok(())
    }
}

/// Reconnection after the port vanishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reconnect {
    /// First back-off.
    pub initial: Duration,
    /// Largest back-off.
    pub max: Duration,
    /// Give up after this long.
    pub give_up_after: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(500),
            give_up_after: Duration::from_secs(5),
        }
    }
}

/// The control loop's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopConfig {
    /// Control rate (Hz), 1–500 and at most the device's maximum.
    pub rate_hz: f64,
    /// Stop after this long (None = until stopped).
    pub duration: Option<Duration>,
    /// Fraction of the period the controller may take before the tick
    /// counts as missed.
    pub deadline_fraction: f64,
    /// No telemetry for this long: stop.
    pub telemetry_timeout: Duration,
    /// Largest change of a target per tick relative to the measured position (rad).
    pub max_step: f32,
    /// After a vanished port.
    pub reconnect: Reconnect,
    /// Handshake timeout.
    pub handshake_timeout: Duration,
    /// End the run (normally) once telemetry reports `TASK_DONE`.
    pub stop_when_task_done: bool,
    /// Most commands kept in [`RunReport::log`] (the newest; the total is
    /// counted). The default holds 131 s at 500 Hz.
    pub log_capacity: usize,
}

/// [`LoopConfig::log_capacity`]'s default: 2^16 commands, 131 s at 500 Hz.
pub const DEFAULT_LOG_CAPACITY: usize = 1 << 16;

impl LoopConfig {
    /// Every number usable before anything moves: rate finite in 1..=500 Hz,
    /// `deadline_fraction` in (0, 1), timeouts and back-offs positive,
    /// `max_step` finite and positive, a duration (if any) positive and at
    /// most [`checked::MAX_SECONDS`].
    pub fn validate(&self) -> Result<(), ValueError> {
        checked::rate_hz("rate_hz", self.rate_hz)?;
        let f = checked::positive_finite("deadline_fraction", self.deadline_fraction)?;
        if f >= 1.0 {
            return Err(ValueError::OutOfRange {
                name: "deadline_fraction",
                value: f,
                min: 0.0,
                max: 1.0,
            });
        }
        if let Some(d) = self.duration {
            checked::seconds("duration", d.as_secs_f64())?;
        }
        checked::positive_duration("telemetry_timeout", self.telemetry_timeout)?;
        checked::positive_duration("handshake_timeout", self.handshake_timeout)?;
        checked::positive_duration("reconnect.initial", self.reconnect.initial)?;
        checked::positive_duration("reconnect.max", self.reconnect.max)?;
        checked::max_step("max_step", self.max_step)?;
        Ok(())
    }
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            rate_hz: 50.0,
            duration: None,
            deadline_fraction: 0.6,
            telemetry_timeout: Duration::from_millis(200),
            max_step: 0.2,
            reconnect: Reconnect::default(),
            handshake_timeout: Duration::from_secs(2),
            stop_when_task_done: false,
            log_capacity: DEFAULT_LOG_CAPACITY,
        }
    }
}

/// One command as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedCommand {
    /// The command.
    pub command: Command,
    /// When it was written (since the loop started).
    pub at: Duration,
    /// The controller missed this tick's deadline, so the last safe command
    /// was sent again (counted in [`RunStats::missed_deadlines`]).
    pub late: bool,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Statistics.
    pub stats: RunStats,
    /// The commands sent, in order: the newest [`LoopConfig::log_capacity`]
    /// of them; `log.total()` counts all.
    pub log: Ring<LoggedCommand>,
    /// The last telemetry received.
    pub last_telemetry: Option<Telemetry>,
    /// How the run ended (Ok) or the error that stopped it.
    pub outcome: Result<(), String>,
}

/// A connected arm.
pub struct Bridge {
    path: String,
    baud: u32,
    port: Box<dyn SerialPort>,
    decoder: Decoder,
    handshake: Handshake,
    rx: [u8; 1024],
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("path", &self.path)
            .field("handshake", &self.handshake)
            .finish()
    }
}

fn open(path: &str, baud: u32) -> Result<Box<dyn SerialPort>, BridgeError> {
    serialport::new(path, baud)
        .timeout(Duration::from_millis(5))
        .open()
        .map_err(|e| BridgeError::Open {
            port: path.into(),
            cause: e.to_string(),
        })
}

fn write_frame(port: &mut dyn SerialPort, frame: &Frame) -> std::io::Result<()> {
    let mut buf = [0u8; MAX_FRAME];
    let n = encode(frame, &mut buf).map_err(|e| std::io::Error::other(e.to_string()))?;
    port.write_all(&buf[..n])?;
    port.flush()
}

fn handshake(
    path: &str,
    port: &mut dyn SerialPort,
    decoder: &mut Decoder,
    timeout: Duration,
) -> Result<Handshake, BridgeError> {
    let io = |e: std::io::Error| BridgeError::Open {
        port: path.into(),
        cause: e.to_string(),
    };
    decoder.reset();
    let _ = port.clear(serialport::ClearBuffer::Input);
    write_frame(
        port,
        &Frame::Hello {
            protocol: PROTOCOL_VERSION,
        },
    )
    .map_err(io)?;
    let start = Instant::now();
    let mut buf = [0u8; 256];
    let mut resent = Instant::now();
    while start.elapsed() < timeout {
        let n = match port.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => 0,
            Err(e) => return Err(io(e)),
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let (f, tail) = decoder.feed(rest);
            rest = tail;
            match f {
                Some(Ok(Frame::Handshake(h))) if h.protocol == PROTOCOL_VERSION => return Ok(h),
                Some(Ok(Frame::Handshake(h))) => {
                    return Err(BridgeError::Protocol {
                        port: path.into(),
                        message: format!("device speaks {}, host {PROTOCOL_VERSION}", h.protocol),
                    });
                }
                Some(Ok(Frame::Fault(f))) if f.code == FaultCode::VersionMismatch => {
                    return Err(BridgeError::Protocol {
                        port: path.into(),
                        message: format!("device rejected host version {PROTOCOL_VERSION}"),
                    });
                }
                _ => {}
            }
        }
        if resent.elapsed() > Duration::from_millis(200) {
            resent = Instant::now();
            write_frame(
                port,
                &Frame::Hello {
                    protocol: PROTOCOL_VERSION,
                },
            )
            .map_err(io)?;
        }
    }
    Err(BridgeError::NoHandshake {
        port: path.into(),
        ms: timeout.as_millis() as u64,
    })
}

/// Check the limits a device reported before anything uses them: every joint
/// limit finite with `min < max`, speeds positive, 1..=`MAX_JOINTS` joints.
/// An unusable handshake gets a stop frame (the device may be enabled from
/// an earlier session) and an error naming the joint and field.
fn refuse_unusable(
    path: &str,
    port: &mut dyn SerialPort,
    h: &Handshake,
) -> Result<(), BridgeError> {
    if let Err(e) = checked::joint_limits(&h.joints) {
        let _ = write_frame(
            port,
            &Frame::Stop {
                reason: StopReason::HostError,
            },
        );
        return Err(BridgeError::Protocol {
            port: path.into(),
            message: format!("the device reported unusable limits: {e}; stop sent"),
        });
    }
    Ok(())
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".into()
    }
}

/// The stop reason for how a run ended.
fn stop_reason(outcome: &Result<(), BridgeError>, stop: &AtomicBool) -> StopReason {
    match outcome {
        Ok(()) if stop.load(Ordering::Relaxed) => StopReason::Operator,
        Ok(()) => StopReason::EndOfRun,
        Err(BridgeError::DeviceFault { .. }) => StopReason::DeviceFault,
        Err(_) => StopReason::HostError,
    }
}

/// Sleep until `deadline`: coarse sleep, then spin the last stretch.
fn sleep_until(start: Instant, deadline: Duration) {
    const SPIN: Duration = Duration::from_micros(400);
    loop {
        let now = start.elapsed();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The host's timer alone: run the loop's schedule (the same sleep, then
/// spin) at `rate_hz` for `duration` with no I/O and no controller, and
/// record each tick's lateness. What the loop's jitter cannot beat on this
/// host; `diffbc bench-bridge` prints it beside the loop's.
pub fn timer_jitter(rate_hz: f64, duration: Duration) -> crate::Histogram {
    let mut h = crate::Histogram::new();
    let period = Duration::from_secs_f64(1.0 / rate_hz.clamp(1.0, 10_000.0));
    let start = Instant::now();
    let mut tick: u32 = 0;
    loop {
        tick += 1;
        let scheduled = period * tick;
        if scheduled > duration {
            return h;
        }
        sleep_until(start, scheduled);
        h.record(start.elapsed().saturating_sub(scheduled));
    }
}

struct Action {
    values: [f32; MAX_JOINTS],
    error: Option<String>,
}

impl Bridge {
    /// Open `path` at `baud` and handshake.
    pub fn connect(path: &str, baud: u32, timeout: Duration) -> Result<Self, BridgeError> {
        let mut port = open(path, baud)?;
        let mut decoder = Decoder::new();
        let handshake = handshake(path, port.as_mut(), &mut decoder, timeout)?;
        refuse_unusable(path, port.as_mut(), &handshake)?;
        tracing::info!(
            port = path,
            joints = handshake.joints.len(),
            max_rate_hz = handshake.max_rate_hz,
            watchdog_ms = handshake.watchdog_ms,
            "arm connected"
        );
        Ok(Self {
            path: path.into(),
            baud,
            port,
            decoder,
            handshake,
            rx: [0; 1024],
        })
    }

    /// What the device reported at connection.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// Send a stop frame (best effort).
    pub fn stop(&mut self, reason: StopReason) {
        let _ = write_frame(self.port.as_mut(), &Frame::Stop { reason });
    }

    /// Reopen the port with back-off and handshake again.
    fn reconnect(&mut self, policy: &Reconnect, cause: &str) -> Result<(), BridgeError> {
        let start = Instant::now();
        let mut wait = policy.initial;
        loop {
            std::thread::sleep(wait);
            if let Ok(mut port) = open(&self.path, self.baud)
                && let Ok(h) = handshake(
                    &self.path,
                    port.as_mut(),
                    &mut self.decoder,
                    Duration::from_millis(500),
                )
            {
                refuse_unusable(&self.path, port.as_mut(), &h)?;
                if h.joints.len() != self.handshake.joints.len() {
                    return Err(BridgeError::Protocol {
                        port: self.path.clone(),
                        message: format!(
                            "after reconnecting the device has {} joints, before {}",
                            h.joints.len(),
                            self.handshake.joints.len()
                        ),
                    });
                }
                self.port = port;
                tracing::warn!(port = %self.path, after_ms = start.elapsed().as_millis() as u64, "reconnected");
                return Ok(());
            }
            if start.elapsed() > policy.give_up_after {
                return Err(BridgeError::Vanished {
                    port: self.path.clone(),
                    cause: cause.into(),
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            wait = (wait * 2).min(policy.max);
        }
    }

    /// Run the control loop until `config.duration` passes, `stop` is set, or
    /// an error; a stop frame is sent in every case.
    pub fn run<C: Controller>(
        &mut self,
        controller: &mut C,
        config: &LoopConfig,
        stop: &AtomicBool,
    ) -> RunReport {
        let mut stats = RunStats::new();
        let mut log = Ring::new(config.log_capacity);
        let mut last = None;
        let mut stopped = false;
        // A panic anywhere in the loop still stops the arm, then continues.
        let outcome = match catch_unwind(AssertUnwindSafe(|| {
            self.run_inner(
                controller,
                config,
                stop,
                &mut stats,
                &mut log,
                &mut last,
                &mut stopped,
            )
        })) {
            Ok(outcome) => outcome,
            Err(payload) => {
                if !stopped {
                    self.stop(StopReason::HostError);
                }
                resume_unwind(payload)
            }
        };
        if !stopped {
            self.stop(stop_reason(&outcome, stop));
        }
        RunReport {
            stats,
            log,
            last_telemetry: last,
            outcome: outcome.map_err(|e| e.to_string()),
        }
    }

    /// Validate, start the controller, and run the loop. Sets `stopped` once
    /// it has sent the stop frame itself (when the loop ends, before waiting
    /// for the controller's thread, which may be stuck in `act`).
    #[allow(clippy::too_many_lines, clippy::too_many_arguments)]
    fn run_inner<C: Controller>(
        &mut self,
        controller: &mut C,
        config: &LoopConfig,
        stop: &AtomicBool,
        stats: &mut RunStats,
        log: &mut Ring<LoggedCommand>,
        last: &mut Option<Telemetry>,
        stopped: &mut bool,
    ) -> Result<(), BridgeError> {
        config
            .validate()
            .map_err(|e| BridgeError::Config(e.to_string()))?;
        let h = self.handshake.clone();
        let joints = h.joints.len();
        if config.rate_hz > f64::from(h.max_rate_hz) {
            return Err(BridgeError::Config(format!(
                "rate {} Hz is outside 1..=min(500, device max {})",
                config.rate_hz, h.max_rate_hz
            )));
        }
        let safety = SafetyLayer::new(&h.joints, config.max_step)
            .map_err(|e| BridgeError::Config(e.to_string()))?;
        match catch_unwind(AssertUnwindSafe(|| controller.start(&h))) {
            Ok(r) => r.map_err(BridgeError::Controller)?,
            Err(p) => {
                return Err(BridgeError::Controller(format!(
                    "controller panicked: {}",
                    panic_message(p.as_ref())
                )));
            }
        }
        let period = Duration::from_secs_f64(1.0 / config.rate_hz);
        let deadline = period.mul_f64(config.deadline_fraction.clamp(0.05, 0.95));
        // Room for the whole run (or the whole ring), so ticks do not allocate.
        let expected = config.duration.map_or(usize::MAX, |d| {
            (d.as_secs_f64() * config.rate_hz).min(1e12) as usize + 8
        });
        log.reserve(expected);
        let mut sent_at = [Duration::ZERO; 256];

        std::thread::scope(|scope| -> Result<(), BridgeError> {
            let (to_worker, worker_rx) = mpsc::sync_channel::<Telemetry>(1);
            let (worker_tx, from_worker) = mpsc::sync_channel::<Action>(1);
            scope.spawn(move || {
                while let Ok(t) = worker_rx.recv() {
                    let mut values = [0.0; MAX_JOINTS];
                    // A panicking controller is an error of the run, not of
                    // the host: the loop stops the arm and reports it.
                    let (error, panicked) = match catch_unwind(AssertUnwindSafe(|| {
                        controller.act(&t, &mut values[..joints])
                    })) {
                        Ok(r) => (r.err(), false),
                        Err(p) => (
                            Some(format!(
                                "controller panicked: {}",
                                panic_message(p.as_ref())
                            )),
                            true,
                        ),
                    };
                    if worker_tx.send(Action { values, error }).is_err() || panicked {
                        break;
                    }
                }
            });
            let body = catch_unwind(AssertUnwindSafe(|| {
                self.control_loop(
                    config,
                    stop,
                    stats,
                    log,
                    last,
                    &safety,
                    &to_worker,
                    &from_worker,
                    &mut sent_at,
                    period,
                    deadline,
                    joints,
                )
            }));
            // Stop before the scope joins the controller's thread (which may
            // be stuck in `act`): the arm must not wait on it.
            let reason = match &body {
                Ok(outcome) => stop_reason(outcome, stop),
                Err(_) => StopReason::HostError,
            };
            self.stop(reason);
            *stopped = true;
            drop(to_worker);
            match body {
                Ok(outcome) => outcome,
                Err(payload) => resume_unwind(payload),
            }
        })
    }

    /// The fixed-rate loop: from the first telemetry until the run ends.
    #[allow(clippy::too_many_lines, clippy::too_many_arguments)]
    fn control_loop(
        &mut self,
        config: &LoopConfig,
        stop: &AtomicBool,
        stats: &mut RunStats,
        log: &mut Ring<LoggedCommand>,
        last: &mut Option<Telemetry>,
        safety: &SafetyLayer,
        to_worker: &mpsc::SyncSender<Telemetry>,
        from_worker: &mpsc::Receiver<Action>,
        sent_at: &mut [Duration; 256],
        period: Duration,
        deadline: Duration,
        joints: usize,
    ) -> Result<(), BridgeError> {
        {
            let start = Instant::now();
            // Wait for the first telemetry to know where the arm is.
            let mut latest: Option<Telemetry> = None;
            let mut last_telemetry_at = start.elapsed();
            while latest.is_none() {
                self.poll(stats, &mut latest, sent_at, start)?;
                if latest.is_none() {
                    if start.elapsed() > config.telemetry_timeout {
                        return Err(BridgeError::Silent {
                            ms: start.elapsed().as_millis() as u64,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let mut safe: [f32; MAX_JOINTS] = [0.0; MAX_JOINTS];
            if let Some(t) = &latest {
                safe[..joints].copy_from_slice(&t.positions[..joints]);
            }
            let mut measured = [0.0f32; MAX_JOINTS];
            let mut busy = false;
            let mut seq: u32 = 0;
            let mut tick: u64 = 0;
            let mut fresh = true;
            let t0 = start.elapsed();
            loop {
                let scheduled = t0 + period.mul_f64(tick as f64);
                sleep_until(start, scheduled);
                let now = start.elapsed();
                stats.jitter.record(now.saturating_sub(scheduled));
                tick += 1;
                stats.ticks += 1;
                if stop.load(Ordering::Relaxed) || config.duration.is_some_and(|d| now - t0 >= d) {
                    return Ok(());
                }
                // 1. Latest telemetry (reconnecting if the port vanished).
                match self.poll(stats, &mut latest, sent_at, start) {
                    Ok(got) => {
                        if got {
                            last_telemetry_at = now;
                            fresh = true;
                        }
                    }
                    Err(BridgeError::Vanished { cause, .. }) => {
                        self.reconnect(&config.reconnect, &cause)?;
                        stats.reconnects += 1;
                        last_telemetry_at = start.elapsed();
                        // The arm may have moved or reset: hold where it is.
                        latest = None;
                        while latest.is_none() {
                            self.poll(stats, &mut latest, sent_at, start)?;
                            if start.elapsed() - last_telemetry_at > config.telemetry_timeout {
                                return Err(BridgeError::Silent {
                                    ms: (start.elapsed() - last_telemetry_at).as_millis() as u64,
                                });
                            }
                        }
                        if let Some(t) = &latest {
                            safe[..joints].copy_from_slice(&t.positions[..joints]);
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                let silent_for = now.saturating_sub(last_telemetry_at);
                if silent_for > config.telemetry_timeout {
                    return Err(BridgeError::Silent {
                        ms: silent_for.as_millis() as u64,
                    });
                }
                let Some(t) = &latest else { continue };
                if config.stop_when_task_done && t.status & status::TASK_DONE != 0 {
                    *last = latest.clone();
                    return Ok(());
                }
                measured[..joints].copy_from_slice(&t.positions[..joints]);
                // 2. Inference on the worker, bounded by the deadline.
                if !busy && fresh && to_worker.try_send(t.clone()).is_ok() {
                    busy = true;
                    fresh = false;
                }
                let mut action = None;
                let mut late = false;
                if busy {
                    let wait = (scheduled + deadline).saturating_sub(start.elapsed());
                    match from_worker.recv_timeout(wait) {
                        Ok(a) => {
                            busy = false;
                            action = Some(a);
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            stats.missed_deadlines += 1;
                            late = true;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            return Err(BridgeError::Controller(
                                "the controller thread ended".into(),
                            ));
                        }
                    }
                }
                // 3. Safety layer; hold the last safe command otherwise.
                if let Some(a) = action {
                    if let Some(e) = a.error {
                        return Err(BridgeError::Controller(e));
                    }
                    let mut out = [0.0f32; MAX_JOINTS];
                    match safety.apply(&measured[..joints], &a.values[..joints], &mut out[..joints])
                    {
                        Ok(c) => {
                            stats.clamped_limit += u64::from(c.limit);
                            stats.clamped_step += u64::from(c.step);
                            safe = out;
                        }
                        Err(SafetyError::NonFinite { .. } | SafetyError::Joints { .. }) => {
                            stats.rejected_actions += 1;
                        }
                    }
                }
                // 4. Command.
                seq = seq.wrapping_add(1);
                let mut targets = Joints::new();
                for &v in &safe[..joints] {
                    let _ = targets.push(v);
                }
                let command = Command { seq, targets };
                match write_frame(self.port.as_mut(), &Frame::Command(command.clone())) {
                    Ok(()) => {
                        stats.frames_sent += 1;
                        sent_at[(seq % 256) as usize] = start.elapsed();
                        log.push(LoggedCommand {
                            command,
                            at: start.elapsed(),
                            late,
                        });
                    }
                    Err(e) => {
                        self.reconnect(&config.reconnect, &e.to_string())?;
                        stats.reconnects += 1;
                        last_telemetry_at = start.elapsed();
                    }
                }
                *last = latest.clone();
            }
        }
    }

    /// Drain the port; keep the newest telemetry. Ok(true) if telemetry arrived.
    fn poll(
        &mut self,
        stats: &mut RunStats,
        latest: &mut Option<Telemetry>,
        sent_at: &[Duration; 256],
        start: Instant,
    ) -> Result<bool, BridgeError> {
        let vanished = |e: String, path: &str| BridgeError::Vanished {
            port: path.into(),
            cause: e,
            waited_ms: 0,
        };
        let mut got = false;
        loop {
            let avail = self
                .port
                .bytes_to_read()
                .map_err(|e| vanished(e.to_string(), &self.path))? as usize;
            if avail == 0 {
                return Ok(got);
            }
            let n = self
                .port
                .read(&mut self.rx[..avail.min(1024)])
                .map_err(|e| vanished(e.to_string(), &self.path))?;
            if n == 0 {
                return Err(vanished("end of file".into(), &self.path));
            }
            let mut rest = &self.rx[..n];
            while !rest.is_empty() {
                let (f, tail) = self.decoder.feed(rest);
                rest = tail;
                match f {
                    Some(Ok(Frame::Telemetry(t))) => {
                        stats.frames_received += 1;
                        if t.positions.len() < self.handshake.joints.len() {
                            stats.frames_bad += 1;
                            continue;
                        }
                        let acked = sent_at[(t.last_command_seq % 256) as usize];
                        if t.last_command_seq != 0 && acked > Duration::ZERO {
                            let age = start.elapsed().saturating_sub(acked);
                            if age < Duration::from_millis(250)
                                && latest
                                    .as_ref()
                                    .is_none_or(|l| l.last_command_seq != t.last_command_seq)
                            {
                                stats.rtt.record(age);
                            }
                        }
                        *latest = Some(t);
                        got = true;
                    }
                    Some(Ok(Frame::Fault(f))) => {
                        stats.frames_received += 1;
                        return Err(BridgeError::DeviceFault {
                            code: f.code,
                            joint: f.joint,
                            detail: f.detail,
                        });
                    }
                    Some(Ok(_)) => stats.frames_received += 1,
                    Some(Err(e)) => {
                        stats.frames_bad += 1;
                        tracing::debug!("bad frame: {e:?}");
                    }
                    None => {}
                }
            }
        }
    }
}
