//! The serial link: open a port, handshake, and run the control loop
//! ([`crate::control`]) over it on the wall clock.
//!
//! [`Bridge`] is the [`Link`] for a real port: it drains the port and keeps
//! the newest telemetry, writes frames encoded into a stack buffer, measures
//! how long the device takes to acknowledge a command, and reconnects with
//! back-off when the port vanishes. A device whose handshake carries
//! unusable limits gets a stop frame from [`Bridge::connect`], which refuses
//! it.

use crate::checked;
use crate::control::{Controller, Link, LoopConfig, Reconnect, RunReport, WallClock};
use crate::stats::{Delivery, RunStats};
use diffbc_protocol::{
    Decoder, FaultCode, Frame, Handshake, MAX_FRAME, PROTOCOL_VERSION, StopReason, Telemetry,
    encode,
};
use serialport::SerialPort;
use std::io::Read;
use std::sync::atomic::AtomicBool;
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

/// A connected arm.
pub struct Bridge {
    path: String,
    baud: u32,
    port: Box<dyn SerialPort>,
    decoder: Decoder,
    handshake: Handshake,
    rx: [u8; 1024],
    /// When each command went out, by `seq % 256` (acknowledgement latency).
    sent_at: [Duration; 256],
    /// Commands written since the last handshake, and the last one's seq:
    /// what the device's [`diffbc_protocol::LinkCounters`] must match.
    session_sent: u32,
    last_sent_seq: u32,
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
    // A device still draining what was written before (a slow UART behind a
    // full tty buffer) makes a write time out: that is not a failure to
    // connect, the hello is sent again until the timeout.
    let hello = |port: &mut dyn SerialPort| -> Result<bool, BridgeError> {
        match write_frame(
            port,
            &Frame::Hello {
                protocol: PROTOCOL_VERSION,
            },
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(false),
            Err(e) => Err(io(e)),
        }
    };
    let mut sent = hello(port)?;
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
                Some(Ok(Frame::Handshake(h))) if h.protocol == PROTOCOL_VERSION => {
                    // The bytes read after it begin the next frame: the
                    // decoder keeps them, so the first frame polled is whole
                    // (complete frames here are older than any poll).
                    while !rest.is_empty() {
                        rest = decoder.feed(rest).1;
                    }
                    return Ok(h);
                }
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
        let every = if sent { 200 } else { 20 };
        if resent.elapsed() > Duration::from_millis(every) {
            resent = Instant::now();
            sent = hello(port)?;
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
            sent_at: [Duration::ZERO; 256],
            session_sent: 0,
            last_sent_seq: 0,
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
    fn reopen(&mut self, policy: &Reconnect, cause: &str) -> Result<(), BridgeError> {
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
                // The device counts afresh from its new handshake.
                self.session_sent = 0;
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

    /// Run the control loop ([`crate::control::run`]) over this port on the
    /// wall clock until `config.duration` passes, `stop` is set, or an
    /// error; a stop frame is sent in every case. Then read the device's
    /// own count of the commands ([`RunReport::delivery`]).
    pub fn run<C: Controller>(
        &mut self,
        controller: &mut C,
        config: &LoopConfig,
        stop: &AtomicBool,
    ) -> RunReport {
        self.run_live(controller, config, stop, &crate::LiveStats::default())
    }

    /// [`Bridge::run`], publishing the loop's figures into `live` after
    /// every tick (for a status line).
    pub fn run_live<C: Controller>(
        &mut self,
        controller: &mut C,
        config: &LoopConfig,
        stop: &AtomicBool,
        live: &crate::LiveStats,
    ) -> RunReport {
        let mut report = crate::control::run_live(
            self,
            &mut WallClock::start(),
            controller,
            config,
            stop,
            live,
        );
        report.delivery = self.delivery(config.telemetry_timeout);
        if let Some(d) = &report.delivery
            && !d.complete_in_order()
        {
            tracing::warn!(port = %self.path, "{d}");
        }
        report
    }

    /// After a run's stop frame: wait up to `timeout` for telemetry that
    /// counts every command written since the handshake (the newest one
    /// acknowledged, or the count reached), and compare. `None` if the
    /// device sends no telemetry in that time or the port is gone.
    pub fn delivery(&mut self, timeout: Duration) -> Option<Delivery> {
        let start = Instant::now();
        let mut scratch = RunStats::new();
        let mut newest: Option<Telemetry> = None;
        let settled = |t: &Telemetry, sent: u32, last: u32| {
            t.link.commands >= sent || (sent > 0 && t.last_command_seq == last)
        };
        loop {
            let mut latest = None;
            match self.poll(start.elapsed(), &mut scratch, &mut latest) {
                Ok(_) => {}
                // A fault after the stop (the watchdog of a device that
                // holds): its telemetry still counts.
                Err(BridgeError::DeviceFault { .. }) => {}
                Err(_) => return None,
            }
            if let Some(t) = latest {
                newest = Some(t);
            }
            if let Some(t) = &newest
                && (settled(t, self.session_sent, self.last_sent_seq) || start.elapsed() >= timeout)
            {
                return Some(Delivery {
                    sent: self.session_sent,
                    last_sent_seq: self.last_sent_seq,
                    device: t.link,
                    last_applied_seq: t.last_command_seq,
                });
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Link for Bridge {
    fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    fn poll(
        &mut self,
        now: Duration,
        stats: &mut RunStats,
        latest: &mut Option<Telemetry>,
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
                        let acked = self.sent_at[(t.last_command_seq % 256) as usize];
                        if t.last_command_seq != 0 && acked > Duration::ZERO {
                            let age = now.saturating_sub(acked);
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

    fn send(&mut self, frame: &Frame, now: Duration) -> std::io::Result<()> {
        write_frame(self.port.as_mut(), frame)?;
        if let Frame::Command(c) = frame {
            self.sent_at[(c.seq % 256) as usize] = now;
            self.session_sent = self.session_sent.wrapping_add(1);
            self.last_sent_seq = c.seq;
        }
        Ok(())
    }

    fn reconnect(&mut self, policy: &Reconnect, cause: &str) -> Result<(), BridgeError> {
        self.reopen(policy, cause)
    }
}
