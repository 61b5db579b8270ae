//! The arm firmware's state machine: what the microcontroller does with each
//! frame from the host, independent of how its motors move or how bytes
//! arrive.
//!
//! `#![no_std]`, no allocation (`heapless` buffers, time passed in as a
//! [`Duration`] since power-on), so real firmware can run the same logic the
//! emulator (`diffbc-emulator`) runs: a frame updates the joint targets or
//! answers (handshake, stop, fault); [`Firmware::check_watchdog`] latches a
//! fault when commands stop; [`Firmware::telemetry`] builds the report from
//! what the motors measured. The motors themselves (encoders, drivers — or
//! the emulator's servo physics) are the caller's.

#![no_std]

pub mod device;
pub mod motors;
pub mod reference;

pub use device::{Device, DeviceStats, Serial, fatal_fault_frame};
pub use motors::{Motors, SimServos, pd_step};

use core::time::Duration;
use diffbc_protocol::{
    Command, Fault, FaultCode, Frame, Handshake, JointLimit, Joints, LinkCounters, MAX_JOINTS,
    PROTOCOL_VERSION, StopReason, Telemetry, status,
};

/// The firmware's fixed settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FirmwareConfig {
    /// Joint limits, one per joint (reported in the handshake; commands are
    /// clamped to them).
    pub limits: heapless::Vec<JointLimit, MAX_JOINTS>,
    /// Commands older than this (while enabled) latch [`FaultCode::Watchdog`].
    pub watchdog: Duration,
    /// Highest command rate accepted (reported in the handshake).
    pub max_rate_hz: u16,
}

/// What the firmware did with one frame from the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// The frame to send back, if any.
    pub reply: Option<Frame>,
    /// A command whose targets were applied (for logs).
    pub applied: Option<Command>,
}

/// The firmware's state: targets, enable, watchdog, latched fault, sequence
/// numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Firmware {
    config: FirmwareConfig,
    target: Joints,
    enabled: bool,
    last_command: Option<Duration>,
    /// The last applied command's sequence number this session (0 until the
    /// first).
    last_command_seq: u32,
    /// The newest command's sequence number received this session, applied
    /// or not (`None` until the first command after [`Frame::Hello`]).
    newest_seq: Option<u32>,
    fault: Option<Fault>,
    telemetry_seq: u32,
    link: LinkCounters,
}

impl Firmware {
    /// Motors disabled, holding `measured` (the positions at power-on).
    pub fn new(config: FirmwareConfig, measured: &[f32]) -> Self {
        let mut target = Joints::new();
        for &q in measured.iter().take(config.limits.len()) {
            let _ = target.push(q);
        }
        Self {
            config,
            target,
            enabled: false,
            last_command: None,
            last_command_seq: 0,
            newest_seq: None,
            fault: None,
            telemetry_seq: 0,
            link: LinkCounters::default(),
        }
    }

    /// What the link delivered this session (reported in telemetry).
    pub fn link(&self) -> LinkCounters {
        self.link
    }

    /// Count a frame the decoder dropped (the board's byte loop calls this).
    pub fn count_bad_frame(&mut self) {
        self.link.bad_frames = self.link.bad_frames.wrapping_add(1);
    }

    /// The settings.
    pub fn config(&self) -> &FirmwareConfig {
        &self.config
    }

    /// Joint count.
    pub fn joints(&self) -> usize {
        self.config.limits.len()
    }

    /// Where the motors should go (where they hold while disabled).
    pub fn targets(&self) -> &[f32] {
        &self.target
    }

    /// Whether the motors follow commands.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The latched fault, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// The handshake this firmware answers with.
    pub fn handshake(&self) -> Handshake {
        Handshake {
            protocol: PROTOCOL_VERSION,
            joints: self.config.limits.clone(),
            max_rate_hz: self.config.max_rate_hz,
            watchdog_ms: self.config.watchdog.as_millis().min(u128::from(u16::MAX)) as u16,
        }
    }

    /// Latch a fault: disable the motors, hold `measured`, and return the
    /// fault frame to report.
    pub fn latch(&mut self, code: FaultCode, joint: u8, detail: u32, measured: &[f32]) -> Frame {
        let f = Fault {
            code,
            joint,
            detail,
        };
        self.fault = Some(f);
        self.hold(measured);
        Frame::Fault(f)
    }

    fn hold(&mut self, measured: &[f32]) {
        self.enabled = false;
        for (t, &q) in self.target.iter_mut().zip(measured) {
            *t = q;
        }
    }

    /// Handle one frame from the host at time `now`, the motors at `measured`.
    pub fn on_frame(&mut self, frame: Frame, now: Duration, measured: &[f32]) -> Handled {
        let reply = |reply| Handled {
            reply,
            applied: None,
        };
        match frame {
            Frame::Hello { protocol } if protocol != PROTOCOL_VERSION => reply(Some(self.latch(
                FaultCode::VersionMismatch,
                255,
                u32::from(protocol),
                measured,
            ))),
            Frame::Hello { .. } => {
                // A new session clears a latched fault (the host saw it)
                // and acknowledges no command of its own yet.
                self.fault = None;
                self.last_command = None;
                self.last_command_seq = 0;
                self.newest_seq = None;
                self.link = LinkCounters::default();
                reply(Some(Frame::Handshake(self.handshake())))
            }
            Frame::Command(c) => {
                self.link.commands = self.link.commands.wrapping_add(1);
                if let Some(last) = self.newest_seq {
                    // Newer in wrapping order: a duplicated or reordered
                    // command must not move the arm back to an old target.
                    let ahead = c.seq.wrapping_sub(last);
                    if ahead == 0 || ahead > u32::MAX / 2 {
                        self.link.stale = self.link.stale.wrapping_add(1);
                        return reply(None);
                    }
                    self.link.skipped = self.link.skipped.wrapping_add(ahead - 1);
                }
                self.newest_seq = Some(c.seq);
                if self.fault.is_some() {
                    return reply(None);
                }
                if c.targets.len() != self.joints() || c.targets.iter().any(|v| !v.is_finite()) {
                    return reply(Some(self.latch(
                        FaultCode::BadCommand,
                        255,
                        c.seq,
                        measured,
                    )));
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
                Handled {
                    reply: None,
                    applied: Some(c),
                }
            }
            Frame::Stop { .. } => {
                self.last_command = None;
                self.hold(measured);
                reply(Some(Frame::Stop {
                    reason: StopReason::EndOfRun,
                }))
            }
            Frame::Heartbeat { .. }
            | Frame::Handshake(_)
            | Frame::Telemetry(_)
            | Frame::Fault(_) => reply(None),
        }
    }

    /// Trip the watchdog if commands stopped for longer than allowed; returns
    /// the fault frame to send (once).
    pub fn check_watchdog(&mut self, now: Duration, measured: &[f32]) -> Option<Frame> {
        let last = self.last_command?;
        if self.fault.is_none() && self.enabled && now.saturating_sub(last) > self.config.watchdog {
            let ms = now
                .saturating_sub(last)
                .as_millis()
                .min(u128::from(u32::MAX)) as u32;
            return Some(self.latch(FaultCode::Watchdog, 255, ms, measured));
        }
        None
    }

    /// The next telemetry frame at time `now`, from what the motors measured.
    pub fn telemetry(&mut self, now: Duration, positions: &[f32], velocities: &[f32]) -> Telemetry {
        self.telemetry_seq = self.telemetry_seq.wrapping_add(1);
        let mut s = if self.enabled {
            status::ENABLED
        } else {
            status::HOLDING
        };
        if self.fault.is_some() {
            s |= status::FAULT;
        }
        Telemetry {
            seq: self.telemetry_seq,
            device_time_us: now.as_micros().min(u128::from(u64::MAX)) as u64,
            last_command_seq: self.last_command_seq,
            positions: joints(positions),
            velocities: joints(velocities),
            status: s,
            link: self.link,
        }
    }
}

fn joints(v: &[f32]) -> Joints {
    let mut j = Joints::new();
    for &x in v.iter().take(MAX_JOINTS) {
        let _ = j.push(x);
    }
    j
}
