//! The control loop, written once: [`run`] drives any [`Link`] on any
//! [`Clock`], and [`tick`] is the one function in the workspace that runs a
//! control tick (telemetry → controller with a deadline → safety layer →
//! hold the last safe command → send → log).
//!
//! [`crate::Bridge`] runs it over a serial port on the [`WallClock`]; the
//! in-process episodes of the arm task run it over the emulated arm stepped
//! in memory (`diffbc_emulator::StepLink`) on a [`SimClock`]. A change to a
//! tick's semantics is therefore made once, and what a policy sees in
//! process is what it sees on the wire.
//!
//! The controller runs on its own thread. Each tick the loop hands it the
//! newest telemetry and waits at most the deadline for the action (the
//! clock decides how long that is: a simulated clock stands still while the
//! controller thinks, so it waits for the action); a late action is counted
//! as a miss and the last safe command is sent again, so inference never
//! stalls the loop. The loop does not allocate at steady state (frames
//! encoded into a stack buffer, telemetry passed by value through bounded
//! channels, histograms sized at start, the command log a ring reserved at
//! start); `tests/no_alloc.rs` counts.
//!
//! Every way out of [`run`] sends one stop frame: the end of the run, the
//! stop flag, a device fault, silence, a controller error or panic, a
//! configuration refused before anything moved, and a panic in the loop
//! itself (the frame goes out, then the panic continues).

use crate::bridge::BridgeError;
use crate::checked::{self, ValueError};
use crate::ring::Ring;
use crate::safety::{SafetyError, SafetyLayer};
use crate::stats::{Histogram, RunStats};
use diffbc_protocol::{Command, Frame, Handshake, Joints, MAX_JOINTS, StopReason, Telemetry};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

impl<C: Controller + ?Sized> Controller for &mut C {
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

/// Where the loop's commands go and its telemetry comes from: a serial port
/// ([`crate::Bridge`]) or an emulated arm stepped in memory.
pub trait Link {
    /// What the device reported at connection (checked before a link exists).
    fn handshake(&self) -> &Handshake;

    /// Take what the device sent up to loop time `now`; keep the newest
    /// telemetry in `latest`. `Ok(true)` if telemetry arrived. A fault frame
    /// is [`BridgeError::DeviceFault`], a vanished device
    /// [`BridgeError::Vanished`]. Must not allocate.
    fn poll(
        &mut self,
        now: Duration,
        stats: &mut RunStats,
        latest: &mut Option<Telemetry>,
    ) -> Result<bool, BridgeError>;

    /// Send `frame` at loop time `now`. Must not allocate.
    fn send(&mut self, frame: &Frame, now: Duration) -> std::io::Result<()>;

    /// Reopen a vanished device with back-off and handshake again.
    fn reconnect(&mut self, policy: &Reconnect, cause: &str) -> Result<(), BridgeError>;
}

/// The loop's time: since the loop started.
pub trait Clock {
    /// Time since the clock started.
    fn now(&self) -> Duration;

    /// Return at `t` or later.
    fn sleep_until(&mut self, t: Duration);

    /// How long to wait for an action due at `due`; `None`: until it comes
    /// (a simulated clock stands still while the controller thinks).
    fn wait_for(&self, due: Duration) -> Option<Duration>;
}

/// The host's wall clock: sleep, then spin the last stretch.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    start: Instant,
}

impl WallClock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Clock for WallClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn sleep_until(&mut self, t: Duration) {
        sleep_until(self.start, t);
    }

    fn wait_for(&self, due: Duration) -> Option<Duration> {
        Some(due.saturating_sub(self.now()))
    }
}

/// A simulated clock: time moves only when the loop sleeps, and stands
/// still while the controller thinks (so no tick is late). With a link that
/// steps the device to the time it is given, a run is exactly reproducible.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimClock {
    now: Duration,
}

impl SimClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        self.now
    }

    fn sleep_until(&mut self, t: Duration) {
        self.now = self.now.max(t);
    }

    fn wait_for(&self, _due: Duration) -> Option<Duration> {
        None
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
    /// Also bound each joint's step by its `max_velocity` over one tick
    /// ([`SafetyLayer::with_velocity_limits`]): rate-aware, for arms near
    /// people. Off by default (the emulated arm's evaluations keep their
    /// settings).
    pub velocity_limits: bool,
    /// After a vanished port.
    pub reconnect: Reconnect,
    /// Handshake timeout.
    pub handshake_timeout: Duration,
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
            velocity_limits: false,
            reconnect: Reconnect::default(),
            handshake_timeout: Duration::from_secs(2),
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
    /// What the device counted of the commands sent, read back after the
    /// stop frame ([`crate::Bridge::run`]); `None` where the link does not
    /// confirm (an in-memory arm) or the device could not say (it vanished).
    pub delivery: Option<crate::Delivery>,
    /// How the run ended (Ok) or the error that stopped it.
    pub outcome: Result<(), String>,
    /// The fault the device reported, when that is what ended the run.
    pub device_fault: Option<diffbc_protocol::Fault>,
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

/// Sleep until `deadline` after `start`: coarse sleep, then spin the last stretch.
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

/// Tick `tick`'s scheduled time after the first: exact in nanoseconds (no
/// float rounding), so a simulated clock lands on the same instants as a
/// device stepped in fixed steps.
fn scheduled(period: Duration, tick: u64) -> Duration {
    let ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(ns.saturating_mul(tick))
}

/// The host's timer alone: run the loop's schedule (the same sleep, then
/// spin) at `rate_hz` for `duration` with no I/O and no controller, and
/// record each tick's lateness. What the loop's jitter cannot beat on this
/// host; `diffbc bench-bridge` prints it beside the loop's.
pub fn timer_jitter(rate_hz: f64, duration: Duration) -> Histogram {
    let mut h = Histogram::new();
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

/// Send a stop frame (best effort: the device's watchdog covers a link that
/// cannot carry it).
fn send_stop<L: Link + ?Sized>(link: &mut L, reason: StopReason, now: Duration) {
    let _ = link.send(&Frame::Stop { reason }, now);
}

/// Figures the loop publishes after every tick while it runs (relaxed
/// atomic stores: no allocation, no lock), for a live status line read from
/// another thread ([`run_live`]).
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Ticks run.
    pub ticks: AtomicU64,
    /// Ticks whose action missed its deadline.
    pub missed: AtomicU64,
    /// Joint targets clamped (limits and step).
    pub clamped: AtomicU64,
    /// Actions refused (NaN, wrong size).
    pub rejected: AtomicU64,
    /// Largest tick lateness so far (µs).
    pub jitter_max_us: AtomicU64,
}

impl LiveStats {
    fn publish(&self, s: &RunStats) {
        self.ticks.store(s.ticks, Ordering::Relaxed);
        self.missed.store(s.missed_deadlines, Ordering::Relaxed);
        self.clamped
            .store(s.clamped_limit + s.clamped_step, Ordering::Relaxed);
        self.rejected.store(s.rejected_actions, Ordering::Relaxed);
        self.jitter_max_us
            .store(s.jitter.max_us(), Ordering::Relaxed);
    }
}

/// Run the control loop over `link` on `clock` until `config.duration`
/// passes, `stop` is set, or an error; a stop frame is sent in every case.
pub fn run<L: Link + ?Sized, K: Clock, C: Controller>(
    link: &mut L,
    clock: &mut K,
    controller: &mut C,
    config: &LoopConfig,
    stop: &AtomicBool,
) -> RunReport {
    run_live(link, clock, controller, config, stop, &LiveStats::default())
}

/// [`run`], publishing [`LiveStats`] into `live` after every tick.
pub fn run_live<L: Link + ?Sized, K: Clock, C: Controller>(
    link: &mut L,
    clock: &mut K,
    controller: &mut C,
    config: &LoopConfig,
    stop: &AtomicBool,
    live: &LiveStats,
) -> RunReport {
    let mut stats = RunStats::new();
    let mut log = Ring::new(config.log_capacity);
    let mut last = None;
    let mut stopped = false;
    // A panic anywhere in the loop still stops the arm, then continues.
    let outcome = match catch_unwind(AssertUnwindSafe(|| {
        run_inner(
            link,
            clock,
            controller,
            config,
            stop,
            &mut stats,
            &mut log,
            &mut last,
            &mut stopped,
            live,
        )
    })) {
        Ok(outcome) => outcome,
        Err(payload) => {
            if !stopped {
                send_stop(link, StopReason::HostError, clock.now());
            }
            resume_unwind(payload)
        }
    };
    if !stopped {
        send_stop(link, stop_reason(&outcome, stop), clock.now());
    }
    RunReport {
        stats,
        log,
        last_telemetry: last,
        delivery: None,
        device_fault: match &outcome {
            Err(BridgeError::DeviceFault {
                code,
                joint,
                detail,
            }) => Some(diffbc_protocol::Fault {
                code: *code,
                joint: *joint,
                detail: *detail,
            }),
            _ => None,
        },
        outcome: outcome.map_err(|e| e.to_string()),
    }
}

/// Validate, start the controller, and run the loop. Sets `stopped` once
/// it has sent the stop frame itself (when the loop ends, before waiting
/// for the controller's thread, which may be stuck in `act`).
#[allow(clippy::too_many_arguments)]
fn run_inner<L: Link + ?Sized, K: Clock, C: Controller>(
    link: &mut L,
    clock: &mut K,
    controller: &mut C,
    config: &LoopConfig,
    stop: &AtomicBool,
    stats: &mut RunStats,
    log: &mut Ring<LoggedCommand>,
    last: &mut Option<Telemetry>,
    stopped: &mut bool,
    live: &LiveStats,
) -> Result<(), BridgeError> {
    config
        .validate()
        .map_err(|e| BridgeError::Config(e.to_string()))?;
    let h = link.handshake().clone();
    let joints = h.joints.len();
    if config.rate_hz > f64::from(h.max_rate_hz) {
        return Err(BridgeError::Config(format!(
            "rate {} Hz is outside 1..=min(500, device max {})",
            config.rate_hz, h.max_rate_hz
        )));
    }
    let mut safety = SafetyLayer::new(&h.joints, config.max_step)
        .map_err(|e| BridgeError::Config(e.to_string()))?;
    if config.velocity_limits {
        safety = safety.with_velocity_limits(config.rate_hz);
    }
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
        let worker = Worker {
            to: &to_worker,
            from: &from_worker,
            live,
        };
        let body = catch_unwind(AssertUnwindSafe(|| {
            control_loop(
                link, clock, config, stop, stats, log, last, &safety, &worker, period, deadline,
                joints,
            )
        }));
        // Stop before the scope joins the controller's thread (which may
        // be stuck in `act`): the arm must not wait on it.
        let reason = match &body {
            Ok(outcome) => stop_reason(outcome, stop),
            Err(_) => StopReason::HostError,
        };
        send_stop(link, reason, clock.now());
        *stopped = true;
        drop(to_worker);
        match body {
            Ok(outcome) => outcome,
            Err(payload) => resume_unwind(payload),
        }
    })
}

/// The controller's thread, seen from the loop.
struct Worker<'a> {
    to: &'a mpsc::SyncSender<Telemetry>,
    from: &'a mpsc::Receiver<Action>,
    /// Where the loop publishes its figures after each tick.
    live: &'a LiveStats,
}

/// What the loop carries from one tick to the next.
struct TickState {
    /// The newest telemetry.
    latest: Option<Telemetry>,
    /// When telemetry last arrived.
    last_telemetry_at: Duration,
    /// The last safe command (held when there is no new action).
    safe: [f32; MAX_JOINTS],
    /// The last two commands sent (the acceleration limit's history).
    sent: [f32; MAX_JOINTS],
    sent_before: [f32; MAX_JOINTS],
    /// The controller is working on a telemetry frame.
    busy: bool,
    /// Telemetry arrived that the controller has not seen.
    fresh: bool,
    /// The last command's sequence number.
    seq: u32,
    /// Ticks started.
    tick: u64,
    /// When tick 0 was scheduled.
    t0: Duration,
}

/// What a tick decided.
enum Next {
    /// Run the next tick.
    Tick,
    /// The run ended normally (duration, stop flag, task done).
    End,
}

/// The fixed-rate loop: from the first telemetry until the run ends.
#[allow(clippy::too_many_arguments)]
fn control_loop<L: Link + ?Sized, K: Clock>(
    link: &mut L,
    clock: &mut K,
    config: &LoopConfig,
    stop: &AtomicBool,
    stats: &mut RunStats,
    log: &mut Ring<LoggedCommand>,
    last: &mut Option<Telemetry>,
    safety: &SafetyLayer,
    worker: &Worker<'_>,
    period: Duration,
    deadline: Duration,
    joints: usize,
) -> Result<(), BridgeError> {
    // Wait for the first telemetry to know where the arm is.
    let start = clock.now();
    let mut latest: Option<Telemetry> = None;
    while latest.is_none() {
        link.poll(clock.now(), stats, &mut latest)?;
        if latest.is_none() {
            let waited = clock.now().saturating_sub(start);
            if waited > config.telemetry_timeout {
                return Err(BridgeError::Silent {
                    ms: waited.as_millis() as u64,
                });
            }
            let t = clock.now() + Duration::from_millis(1);
            clock.sleep_until(t);
        }
    }
    let mut safe = [0.0f32; MAX_JOINTS];
    if let Some(t) = &latest {
        safe[..joints].copy_from_slice(&t.positions[..joints]);
    }
    let mut state = TickState {
        latest,
        last_telemetry_at: clock.now(),
        safe,
        sent: safe,
        sent_before: safe,
        busy: false,
        fresh: true,
        seq: 0,
        tick: 0,
        t0: clock.now(),
    };
    loop {
        let next = tick(
            &mut state, link, clock, config, stop, stats, log, safety, worker, period, deadline,
            joints,
        );
        worker.live.publish(stats);
        // The report's last telemetry, copied once when the loop ends.
        if !matches!(next, Ok(Next::Tick)) {
            *last = state.latest.clone();
            return next.map(|_| ());
        }
    }
}

/// One control tick, the only one in the workspace: wait for the tick's
/// time; take the newest telemetry (reconnecting a vanished link, stopping
/// on silence or a fault); hand it to the controller and wait at most the
/// deadline (a stop raised meanwhile ends the run here); pass the action
/// through the safety layer, or
/// hold the last safe command (late, refused or no action); send the
/// command and log it. Allocates nothing.
#[allow(clippy::too_many_arguments)]
fn tick<L: Link + ?Sized, K: Clock>(
    s: &mut TickState,
    link: &mut L,
    clock: &mut K,
    config: &LoopConfig,
    stop: &AtomicBool,
    stats: &mut RunStats,
    log: &mut Ring<LoggedCommand>,
    safety: &SafetyLayer,
    worker: &Worker<'_>,
    period: Duration,
    deadline: Duration,
    joints: usize,
) -> Result<Next, BridgeError> {
    let due = s.t0 + scheduled(period, s.tick);
    clock.sleep_until(due);
    let now = clock.now();
    stats.jitter.record(now.saturating_sub(due));
    s.tick += 1;
    stats.ticks += 1;
    if stop.load(Ordering::Relaxed) || config.duration.is_some_and(|d| now - s.t0 >= d) {
        return Ok(Next::End);
    }
    // 1. Latest telemetry (reconnecting if the port vanished).
    match link.poll(now, stats, &mut s.latest) {
        Ok(got) => {
            if got {
                s.last_telemetry_at = now;
                s.fresh = true;
            }
        }
        Err(BridgeError::Vanished { cause, .. }) => {
            link.reconnect(&config.reconnect, &cause)?;
            stats.reconnects += 1;
            s.last_telemetry_at = clock.now();
            // The arm may have moved or reset: hold where it is.
            s.latest = None;
            while s.latest.is_none() {
                link.poll(clock.now(), stats, &mut s.latest)?;
                let silent_for = clock.now().saturating_sub(s.last_telemetry_at);
                if silent_for > config.telemetry_timeout {
                    return Err(BridgeError::Silent {
                        ms: silent_for.as_millis() as u64,
                    });
                }
            }
            if let Some(t) = &s.latest {
                s.safe[..joints].copy_from_slice(&t.positions[..joints]);
            }
            return Ok(Next::Tick);
        }
        Err(e) => return Err(e),
    }
    let silent_for = now.saturating_sub(s.last_telemetry_at);
    if silent_for > config.telemetry_timeout {
        return Err(BridgeError::Silent {
            ms: silent_for.as_millis() as u64,
        });
    }
    let Some(t) = &s.latest else {
        return Ok(Next::Tick);
    };
    let mut measured = [0.0f32; MAX_JOINTS];
    measured[..joints].copy_from_slice(&t.positions[..joints]);
    // 2. Inference on the controller's thread, bounded by the deadline.
    if !s.busy && s.fresh && worker.to.try_send(t.clone()).is_ok() {
        s.busy = true;
        s.fresh = false;
    }
    let mut action = None;
    let mut late = false;
    if s.busy {
        let got = match clock.wait_for(due + deadline) {
            Some(wait) => worker.from.recv_timeout(wait),
            None => worker
                .from
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(a) => {
                s.busy = false;
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
    // A stop raised while the controller decided (an operator, or a task
    // whose host-side state says it is done) sends no further command.
    if stop.load(Ordering::Relaxed) {
        return Ok(Next::End);
    }
    // 3. Safety layer; hold the last safe command otherwise.
    if let Some(a) = action {
        if let Some(e) = a.error {
            return Err(BridgeError::Controller(e));
        }
        let mut out = [0.0f32; MAX_JOINTS];
        match safety.apply_with_history(
            &measured[..joints],
            &a.values[..joints],
            &s.sent[..joints],
            &s.sent_before[..joints],
            &mut out[..joints],
        ) {
            Ok(c) => {
                stats.clamped_limit += u64::from(c.limit);
                stats.clamped_step += u64::from(c.step);
                s.safe = out;
            }
            Err(SafetyError::NonFinite { .. } | SafetyError::Joints { .. }) => {
                stats.rejected_actions += 1;
            }
        }
    }
    // 4. Command.
    s.sent_before = s.sent;
    s.sent = s.safe;
    s.seq = s.seq.wrapping_add(1);
    let mut targets = Joints::new();
    for &v in &s.safe[..joints] {
        let _ = targets.push(v);
    }
    let command = Command {
        seq: s.seq,
        targets,
    };
    let at = clock.now();
    match link.send(&Frame::Command(command.clone()), at) {
        Ok(()) => {
            stats.frames_sent += 1;
            log.push(LoggedCommand { command, at, late });
        }
        Err(e) => {
            link.reconnect(&config.reconnect, &e.to_string())?;
            stats.reconnects += 1;
            s.last_telemetry_at = clock.now();
        }
    }
    Ok(Next::Tick)
}
