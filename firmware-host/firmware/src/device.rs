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
                Some(Err(_)) => {
                    self.stats.bad_frames = self.stats.bad_frames.wrapping_add(1);
                    self.firmware.count_bad_frame();
                }
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

/// The frame a board's panic or hard-fault handler sends before it halts:
/// [`FaultCode::Firmware`] with `detail` (the panic's source line, or 0).
/// Encoded into `buf` without allocating or panicking; the handler writes
/// the returned bytes with its UART's blocking write.
pub fn fatal_fault_frame(detail: u32, buf: &mut [u8; MAX_FRAME]) -> &[u8] {
    let f = Frame::Fault(diffbc_protocol::Fault {
        code: FaultCode::Firmware,
        joint: 255,
        detail,
    });
    // A fault frame is a few bytes: it always fits.
    let n = encode(&f, buf).unwrap_or(0);
    &buf[..n]
}

fn send<S: Serial>(serial: &mut S, frame: &Frame) {
    let mut buf = [0u8; MAX_FRAME];
    // Every frame the firmware builds fits (at most MAX_JOINTS joints).
    if let Ok(n) = encode(frame, &mut buf) {
        serial.write(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{FirmwareConfig, SimServos};
    use diffbc_protocol::{Command, JointLimit, Joints, LinkCounters, PROTOCOL_VERSION, status};
    use std::collections::VecDeque;
    use std::vec::Vec;

    /// Bytes queued for the device; frames it sent, decoded.
    #[derive(Default)]
    struct Wire {
        rx: VecDeque<u8>,
        tx: Vec<u8>,
    }

    impl Serial for Wire {
        fn read(&mut self) -> Option<u8> {
            self.rx.pop_front()
        }
        fn write(&mut self, bytes: &[u8]) {
            self.tx.extend_from_slice(bytes);
        }
    }

    impl Wire {
        fn send(&mut self, f: &Frame) {
            let mut buf = [0u8; MAX_FRAME];
            let n = encode(f, &mut buf).expect("encode");
            self.rx.extend(&buf[..n]);
        }
        fn frames(&mut self) -> Vec<Frame> {
            let mut d = Decoder::new();
            let out = self
                .tx
                .iter()
                .filter_map(|&b| d.push(b))
                .map(|r| r.expect("the device sends only good frames"))
                .collect();
            self.tx.clear();
            out
        }
    }

    const LIM: JointLimit = JointLimit {
        min: -2.5,
        max: 2.5,
        max_velocity: 3.0,
        max_acceleration: 30.0,
    };

    fn device() -> Device<SimServos> {
        let limits: heapless::Vec<JointLimit, 8> =
            heapless::Vec::from_slice(&[LIM; 2]).expect("2 joints");
        let motors = SimServos::new(&limits, 100.0, 20.0, &[0.0, 0.0]);
        let fw = Firmware::new(
            FirmwareConfig {
                limits,
                watchdog: Duration::from_millis(250),
                max_rate_hz: 500,
            },
            motors.positions(),
        );
        Device::new(
            fw,
            motors,
            Duration::from_millis(1),
            Duration::from_millis(5),
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn garbage_then_a_session_commands_telemetry_and_the_watchdog() {
        let mut dev = device();
        let mut wire = Wire::default();
        // Garbage (zeros, junk, an overlong run) is dropped and counted.
        wire.rx.extend([0u8, 7, 7, 0, 1, 2, 3, 0]);
        wire.rx.extend(std::iter::repeat_n(0x55u8, 600));
        wire.rx.push_back(0);
        wire.send(&Frame::Hello {
            protocol: PROTOCOL_VERSION,
        });
        dev.poll(&mut wire, ms(0));
        assert_eq!(dev.stats.bad_frames, 3, "{:?}", dev.stats);
        let f = wire.frames();
        assert!(matches!(f[0], Frame::Handshake(_)), "{f:?}");
        assert!(matches!(f[1], Frame::Telemetry(_)), "{f:?}");

        // Commands every 10 ms for 1 s: telemetry every 5 ms acknowledges each.
        let mut acked = Vec::new();
        for i in 1..=100u32 {
            wire.send(&Frame::Command(Command {
                seq: i,
                targets: Joints::from_slice(&[1.0, -9.0]).expect("2"),
            }));
            for t in 0..10 {
                dev.poll(&mut wire, ms(u64::from(i) * 10 + t));
            }
            for f in wire.frames() {
                match f {
                    Frame::Telemetry(t) => acked.push(t.last_command_seq),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(acked.len(), 200, "200 Hz telemetry");
        let mut distinct = acked.clone();
        distinct.dedup();
        assert_eq!(
            distinct,
            (1..=100).collect::<Vec<_>>(),
            "every command, in order"
        );
        assert_eq!(dev.stats.commands, 100);
        let q = dev.motors.positions();
        assert!((q[0] - 1.0).abs() < 0.05, "reached: {q:?}");
        assert!(
            (-2.5..-2.3).contains(&q[1]),
            "toward -9 clamped to the -2.5 limit: {q:?}"
        );

        // Silence: the watchdog latches once, the servos stop and hold.
        let mut faults = 0;
        for t in 1010..1400 {
            dev.poll(&mut wire, ms(t));
            for f in wire.frames() {
                if let Frame::Fault(f) = f {
                    assert_eq!(f.code, FaultCode::Watchdog);
                    assert_eq!(t, 1000 + 251, "latched just past 250 ms");
                    faults += 1;
                }
            }
        }
        assert_eq!(faults, 1);
        assert!(dev.motors.velocities().iter().all(|v| *v == 0.0));
        assert_ne!(
            dev.firmware
                .telemetry(ms(1400), &[0.0; 2], &[0.0; 2])
                .status
                & status::FAULT,
            0
        );
    }

    fn command(seq: u32, target: f32) -> Frame {
        Frame::Command(Command {
            seq,
            targets: Joints::from_slice(&[target, target]).expect("2"),
        })
    }

    fn last_telemetry(wire: &mut Wire) -> diffbc_protocol::Telemetry {
        wire.frames()
            .into_iter()
            .filter_map(|f| match f {
                Frame::Telemetry(t) => Some(t),
                _ => None,
            })
            .next_back()
            .expect("telemetry")
    }

    #[test]
    fn telemetry_counts_what_the_link_delivered_and_stale_commands_are_dropped() {
        let mut dev = device();
        let mut wire = Wire::default();
        wire.send(&Frame::Hello {
            protocol: PROTOCOL_VERSION,
        });
        dev.poll(&mut wire, ms(0));
        // 1, 2, then 4 (3 lost), then 3 late and 4 again: both stale.
        for (seq, target) in [(1, 0.1), (2, 0.2), (4, 0.4), (3, -1.0), (4, -1.0)] {
            wire.send(&command(seq, target));
        }
        wire.rx.extend([1u8, 2, 3, 0]); // one bad frame
        dev.poll(&mut wire, ms(5));
        let t = last_telemetry(&mut wire);
        assert_eq!(
            t.link,
            LinkCounters {
                commands: 5,
                skipped: 1,
                stale: 2,
                bad_frames: 1,
            }
        );
        assert_eq!(t.last_command_seq, 4, "the newest applied");
        assert_eq!(
            dev.firmware.targets(),
            &[0.4, 0.4],
            "stale targets not applied"
        );

        // A new session starts counting afresh, from whatever seq the host
        // uses next (no "skipped" for the first command).
        wire.send(&Frame::Hello {
            protocol: PROTOCOL_VERSION,
        });
        wire.send(&command(100, 0.3));
        wire.send(&command(101, 0.3));
        dev.poll(&mut wire, ms(10));
        let t = last_telemetry(&mut wire);
        assert_eq!(
            t.link,
            LinkCounters {
                commands: 2,
                ..LinkCounters::default()
            }
        );
        assert_eq!(t.last_command_seq, 101);

        // u32::MAX after 101 is half the ring back: stale.
        wire.send(&command(u32::MAX, -1.0));
        dev.poll(&mut wire, ms(15));
        assert_eq!(last_telemetry(&mut wire).link.stale, 1);
        // Sequence numbers wrap: u32::MAX then 0 is in order.
        wire.send(&Frame::Hello {
            protocol: PROTOCOL_VERSION,
        });
        wire.send(&command(u32::MAX - 1, 0.3));
        wire.send(&command(u32::MAX, 0.3));
        wire.send(&command(0, 0.2));
        dev.poll(&mut wire, ms(20));
        let t = last_telemetry(&mut wire);
        assert_eq!((t.link.commands, t.link.stale, t.link.skipped), (3, 0, 0));
        assert_eq!(t.last_command_seq, 0);
        assert_eq!(dev.firmware.targets(), &[0.2, 0.2]);
    }

    #[test]
    fn the_fatal_frame_is_a_firmware_fault_with_its_detail() {
        let mut buf = [0u8; MAX_FRAME];
        let bytes = fatal_fault_frame(123, &mut buf).to_vec();
        let mut wire = Wire {
            tx: bytes,
            ..Wire::default()
        };
        assert_eq!(
            wire.frames(),
            [Frame::Fault(diffbc_protocol::Fault {
                code: FaultCode::Firmware,
                joint: 255,
                detail: 123,
            })]
        );
    }

    #[test]
    fn a_stalled_clock_is_skipped_not_caught_up_forever() {
        let mut dev = device();
        let mut wire = Wire::default();
        dev.poll(&mut wire, ms(0));
        // An hour without a poll (a debugger halt): one poll, bounded work.
        dev.poll(&mut wire, Duration::from_secs(3600));
        dev.poll(&mut wire, Duration::from_secs(3600) + ms(5));
        let telemetry = wire
            .frames()
            .into_iter()
            .filter(|f| matches!(f, Frame::Telemetry(_)))
            .count();
        assert_eq!(telemetry, 3, "one frame per poll, no burst");
    }
}
