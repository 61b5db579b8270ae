//! The whole device side as one allocation-free loop body, over the two
//! seams a board provides: [`Serial`] (bytes in and out) and
//! [`crate::Motors`]. The QEMU firmware (`firmware-host/mcu`) is this plus
//! a UART driver and a timer; a port to another board is the same.

use crate::{Firmware, Motors};
use core::time::Duration;
use diffbc_protocol::{Decoder, FaultCode, Frame, MAX_FRAME, encode};

/// The byte link to the host (a UART, USB CDC).
pub trait Serial {
    /// One received byte, if any (never blocks).
    fn read(&mut self) -> Option<u8>;
    /// Send `bytes` (may block until they are queued).
    fn write(&mut self, bytes: &[u8]);
}

/// Counters a device keeps about its link (for tests and a debugger).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames decoded.
    pub frames: u32,
    /// Bad frames dropped by the decoder (garbage, flipped bits, truncation).
    pub bad_frames: u32,
    /// Commands applied.
    pub commands: u32,
    /// Telemetry frames sent.
    pub telemetry: u32,
}

/// The firmware state machine, its motors, the decoder and the telemetry
/// schedule.
#[derive(Debug)]
pub struct Device<M> {
    /// The state machine.
    pub firmware: Firmware,
    /// The drives.
    pub motors: M,
    /// Link counters.
    pub stats: DeviceStats,
    decoder: Decoder,
    physics_dt: Duration,
    telemetry_period: Duration,
    next_physics: Duration,
    next_telemetry: Duration,
}

impl<M: Motors> Device<M> {
    /// Physics stepped every `physics_dt`, telemetry every `telemetry_period`.
    pub fn new(
        firmware: Firmware,
        motors: M,
        physics_dt: Duration,
        telemetry_period: Duration,
    ) -> Self {
        Self {
            firmware,
            motors,
            stats: DeviceStats::default(),
            decoder: Decoder::new(),
            physics_dt,
            telemetry_period,
            next_physics: Duration::ZERO,
            next_telemetry: Duration::ZERO,
        }
    }

    /// Take every byte `serial` has, answer each frame, then run the physics,
    /// the watchdog and telemetry due at device time `now`. Never panics,
    /// never allocates.
    pub fn poll<S: Serial>(&mut self, serial: &mut S, now: Duration) {
        while let Some(b) = serial.read() {
            match self.decoder.push(b) {
                Some(Ok(frame)) => {
                    self.stats.frames = self.stats.frames.wrapping_add(1);
                    let h = self.firmware.on_frame(frame, now, self.motors.positions());
                    if h.applied.is_some() {
                        self.stats.commands = self.stats.commands.wrapping_add(1);
                    }
                    if let Some(r) = h.reply {
                        self.after_reply(&r);
                        send(serial, &r);
                    }
                }
                Some(Err(_)) => self.stats.bad_frames = self.stats.bad_frames.wrapping_add(1),
                None => {}
            }
        }
        let dt = self.physics_dt.as_secs_f32();
        let mut steps = 0;
        while self.next_physics <= now && steps < 1000 {
            self.motors.drive(self.firmware.targets(), dt);
            self.next_physics += self.physics_dt;
            steps += 1;
        }
        if self.next_physics <= now {
            // Far behind (a debugger halt): skip rather than catch up.
            self.next_physics = now + self.physics_dt;
        }
        if let Some(f) = self.firmware.check_watchdog(now, self.motors.positions()) {
            self.after_reply(&f);
            send(serial, &f);
        }
        if self.next_telemetry <= now {
            let t = self
                .firmware
                .telemetry(now, self.motors.positions(), self.motors.velocities());
            send(serial, &Frame::Telemetry(t));
            self.stats.telemetry = self.stats.telemetry.wrapping_add(1);
            self.next_telemetry += self.telemetry_period;
            if self.next_telemetry <= now {
                self.next_telemetry = now + self.telemetry_period;
            }
        }
    }

    /// A fault stops the drive where it is.
    fn after_reply(&mut self, frame: &Frame) {
        if matches!(frame, Frame::Fault(_)) {
            self.motors.stop();
        }
    }

    /// Latch `code` (a board's own check: overcurrent, a limit switch) and
    /// report it.
    pub fn fault<S: Serial>(&mut self, serial: &mut S, code: FaultCode, joint: u8, detail: u32) {
        self.motors.stop();
        let f = self
            .firmware
            .latch(code, joint, detail, self.motors.positions());
        send(serial, &f);
    }
}

fn send<S: Serial>(serial: &mut S, frame: &Frame) {
    let mut buf = [0u8; MAX_FRAME];
    // Every frame the firmware builds fits (at most MAX_JOINTS joints).
    if let Ok(n) = encode(frame, &mut buf) {
        serial.write(&buf[..n]);
    }
}
