//! The emulated arm stepped in process: a [`Link`] whose device moves only
//! when the loop's clock says so, for the bridge's control loop on a
//! [`diffbc_bridge::SimClock`].
//!
//! Each call first steps the arm's physics (at `physics_hz`, fixed steps)
//! up to the time it is given, then does what the pty runner does with a
//! frame or a poll: a fault the arm latched (a collision, a bad command,
//! its watchdog) is reported, otherwise one telemetry frame at that time.
//! The same seed and controller therefore give the same run, step for step.

use crate::arm::{SimArm, SimConfig};
use diffbc_bridge::{BridgeError, Link, Reconnect, RunStats};
use diffbc_protocol::{Fault, Frame, Handshake, Telemetry};
use std::time::Duration;

/// The emulated arm as an in-memory [`Link`].
#[derive(Debug, Clone)]
pub struct StepLink {
    arm: SimArm,
    handshake: Handshake,
    /// Physics steps run since power-on.
    steps: u64,
    /// One physics step (ns).
    step_ns: u64,
    /// A fault the arm answered a frame with, reported at the next poll.
    pending: Option<Fault>,
}

impl StepLink {
    /// A powered-on arm at device time zero (its own command log keeps only
    /// the newest command: the loop's log has them all).
    pub fn new(config: SimConfig) -> Self {
        let step_ns = 1_000_000_000 / u64::from(config.physics_hz.max(1));
        let arm = SimArm::new(SimConfig {
            command_log: 1,
            ..config
        });
        Self {
            handshake: arm.handshake(),
            arm,
            steps: 0,
            step_ns,
            pending: None,
        }
    }

    /// The arm (positions, latched fault).
    pub fn arm(&self) -> &SimArm {
        &self.arm
    }

    /// Step the physics up to device time `now`.
    fn advance(&mut self, now: Duration) {
        let due = u64::try_from(now.as_nanos() / u128::from(self.step_ns)).unwrap_or(u64::MAX);
        let dt = Duration::from_nanos(self.step_ns).as_secs_f32();
        while self.steps < due {
            self.arm.step(dt);
            self.steps += 1;
        }
    }
}

impl Link for StepLink {
    fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    fn poll(
        &mut self,
        now: Duration,
        stats: &mut RunStats,
        latest: &mut Option<Telemetry>,
    ) -> Result<bool, BridgeError> {
        self.advance(now);
        let fault = self.pending.take().or_else(|| {
            match self
                .arm
                .take_pending()
                .or_else(|| self.arm.check_watchdog(now))
            {
                Some(Frame::Fault(f)) => Some(f),
                _ => None,
            }
        });
        stats.frames_received += 1;
        if let Some(f) = fault {
            return Err(BridgeError::DeviceFault {
                code: f.code,
                joint: f.joint,
                detail: f.detail,
            });
        }
        *latest = Some(self.arm.telemetry(now));
        Ok(true)
    }

    fn send(&mut self, frame: &Frame, now: Duration) -> std::io::Result<()> {
        self.advance(now);
        if let Some(Frame::Fault(f)) = self.arm.on_frame(frame.clone(), now) {
            self.pending = Some(f);
        }
        Ok(())
    }

    fn reconnect(&mut self, _policy: &Reconnect, cause: &str) -> Result<(), BridgeError> {
        Err(BridgeError::Vanished {
            port: "the in-process arm".into(),
            cause: cause.into(),
            waited_ms: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffbc_bridge::{Controller, LoopConfig, SimClock};
    use diffbc_protocol::FaultCode;
    use std::sync::atomic::AtomicBool;

    /// Steps toward +0.3 rad on joint 0, slower than the period on purpose.
    struct Slow;

    impl Controller for Slow {
        fn act(&mut self, t: &Telemetry, action: &mut [f32]) -> Result<(), String> {
            std::thread::sleep(Duration::from_millis(30));
            action.copy_from_slice(&t.positions);
            action[0] = 0.3;
            Ok(())
        }
    }

    fn config(seconds: f64) -> LoopConfig {
        LoopConfig {
            rate_hz: 50.0,
            duration: Some(Duration::from_secs_f64(seconds)),
            max_step: 0.5,
            ..LoopConfig::default()
        }
    }

    #[test]
    fn on_a_simulated_clock_every_tick_is_on_time_and_the_run_ends_with_a_stop() {
        let mut link = StepLink::new(SimConfig::default_arm());
        let report = diffbc_bridge::control::run(
            &mut link,
            &mut SimClock::new(),
            &mut Slow,
            &config(0.2),
            &AtomicBool::new(false),
        );
        assert_eq!(report.outcome, Ok(()));
        // 30 ms of inference against a 12 ms deadline: late on a wall
        // clock, never on a simulated one.
        assert_eq!(report.stats.missed_deadlines, 0);
        let at: Vec<u128> = report.log.iter().map(|c| c.at.as_millis()).collect();
        assert_eq!(at, (0..10).map(|k| 20 * k).collect::<Vec<_>>());
        assert!(
            report
                .log
                .iter()
                .all(|c| !c.late && c.command.targets[0] == 0.3)
        );
        // 200 ms of 1 kHz physics ran, toward the command, and the stop
        // frame disabled the motors where they were.
        let q = link.arm().positions()[0];
        assert!(q > 0.05 && q < 0.3, "{q}");
        let t = link.arm().clone().telemetry(Duration::from_millis(200));
        assert_eq!(t.status & diffbc_protocol::status::ENABLED, 0, "stopped");
        assert_eq!(t.last_command_seq, 10);
    }

    /// Raises the run's stop flag while deciding its third action.
    struct StopsAtThird<'a> {
        stop: &'a AtomicBool,
        calls: u32,
    }

    impl Controller for StopsAtThird<'_> {
        fn act(&mut self, t: &Telemetry, action: &mut [f32]) -> Result<(), String> {
            self.calls += 1;
            if self.calls == 3 {
                self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            action.copy_from_slice(&t.positions);
            Ok(())
        }
    }

    #[test]
    fn a_stop_raised_while_deciding_sends_no_further_command() {
        let mut link = StepLink::new(SimConfig::default_arm());
        let stop = AtomicBool::new(false);
        let report = diffbc_bridge::control::run(
            &mut link,
            &mut SimClock::new(),
            &mut StopsAtThird {
                stop: &stop,
                calls: 0,
            },
            &config(1.0),
            &stop,
        );
        assert_eq!(report.outcome, Ok(()));
        assert_eq!(report.log.len(), 2, "the third tick's action is not sent");
        assert!(link.arm().fault().is_none());
    }

    #[test]
    fn a_collision_ends_the_run_as_a_device_fault() {
        let mut arm = SimConfig::default_arm();
        arm.obstacles = vec![crate::Obstacle {
            center: [0.3, 0.0],
            radius: 0.1,
        }];
        let mut link = StepLink::new(arm);
        let report = diffbc_bridge::control::run(
            &mut link,
            &mut SimClock::new(),
            &mut Slow,
            &config(5.0),
            &AtomicBool::new(false),
        );
        let e = report.outcome.expect_err("collided");
        assert!(e.contains("Collision"), "{e}");
        assert_eq!(
            link.arm().fault().map(|f| f.code),
            Some(FaultCode::Collision)
        );
        assert!(report.log.len() < 250, "ended early: {}", report.log.len());
    }
}
