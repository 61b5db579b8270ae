//! Hobby servos on TIM3's four PWM channels (PA6, PA7, PB0, PB1): the
//! board's [`Motors`].
//!
//! A hobby servo takes a pulse every 20 ms (50 Hz) whose width says where
//! to go: [`MIN_PULSE_US`] at the joint's lower limit, [`MAX_PULSE_US`] at
//! its upper limit, linear in between (1500 µs at 0 rad for the reference
//! arm's ±2.5 rad). TIM3 counts at 1 MHz, so a pulse is set to the
//! microsecond: 1000 steps over the joint's range (5 mrad for ±2.5 rad).
//!
//! **No feedback.** A hobby servo does not report where it is, so
//! [`Motors::positions`] is an *estimate*: the position last commanded to
//! the servo. Targets are rate-limited to the joint's `max_velocity` before
//! they reach the servo (the servo is never asked to move faster than the
//! limit the handshake reports), and the estimate is that rate-limited
//! command; [`Motors::velocities`] is its rate. It is right only while the
//! servo keeps up (load within its torque, limit within its speed) and
//! wrong while it is limp (after [`Motors::stop`], or before the first
//! command: the estimate stays at the last command, 0 rad at power-on, while
//! the arm may sag or sit anywhere).
//!
//! **Limp until commanded.** The outputs give no pulse at power-on (most
//! hobby servos then go limp), nor after [`Motors::stop`] (every fault),
//! until [`HobbyServos::engage`] (main.rs calls it whenever the firmware is
//! enabled, i.e. has applied a command). A Stop frame (end of run) does not
//! call `stop`: the servos hold where they are.

use core::sync::atomic::{AtomicBool, Ordering};
use diffbc_firmware::Motors;
use diffbc_firmware::reference::JOINTS;
use diffbc_protocol::JointLimit;
use stm32f4xx_hal::gpio::{PA6, PA7, PB0, PB1};
use stm32f4xx_hal::pac::TIM3;
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Rcc;
use stm32f4xx_hal::timer::{ErasedChannel, PwmManager};

/// Servo frame: one pulse every 20 ms (50 Hz).
pub const PERIOD_US: u32 = 20_000;
/// Pulse width at a joint's lower limit (µs).
pub const MIN_PULSE_US: f32 = 1000.0;
/// Pulse width at a joint's upper limit (µs).
pub const MAX_PULSE_US: f32 = 2000.0;

/// TIM3 is configured: the fatal path may cut it.
static READY: AtomicBool = AtomicBool::new(false);

/// Four hobby servos on TIM3 CH1–CH4, one per joint (joint 0 on CH1).
pub struct HobbyServos {
    /// Keeps TIM3 (its clock, prescaler and period) owned.
    _timer: PwmManager<TIM3, 1_000_000>,
    channels: [ErasedChannel<TIM3>; JOINTS],
    limits: [JointLimit; JOINTS],
    /// Estimated positions: the rate-limited commands (rad).
    q: [f32; JOINTS],
    /// Estimated velocities: the commands' rate (rad/s).
    qd: [f32; JOINTS],
    /// No pulses (power-on, or after `stop`) until `engage`.
    limp: bool,
}

impl HobbyServos {
    /// TIM3 at 1 MHz with a 20 ms period, CH1–CH4 on PA6, PA7, PB0, PB1,
    /// all limp. The estimate starts at `initial` (clamped to `limits`).
    pub fn new(
        tim: TIM3,
        pins: (PA6, PA7, PB0, PB1),
        limits: [JointLimit; JOINTS],
        initial: [f32; JOINTS],
        rcc: &mut Rcc,
    ) -> Self {
        let (timer, (c1, c2, c3, c4)) = tim.pwm_us(PERIOD_US.micros(), rcc);
        let mut channels = [
            c1.with(pins.0).erase(),
            c2.with(pins.1).erase(),
            c3.with(pins.2).erase(),
            c4.with(pins.3).erase(),
        ];
        for ch in &mut channels {
            ch.set_duty(0);
            ch.enable();
        }
        READY.store(true, Ordering::Release);
        let mut q = [0.0; JOINTS];
        for ((q, l), q0) in q.iter_mut().zip(&limits).zip(initial) {
            *q = q0.clamp(l.min, l.max);
        }
        Self {
            _timer: timer,
            channels,
            limits,
            q,
            qd: [0.0; JOINTS],
            limp: true,
        }
    }

    /// Pulse again: from the next [`Motors::drive`], the servos are driven
    /// from the estimate toward the targets.
    pub fn engage(&mut self) {
        self.limp = false;
    }

    /// Whether the outputs give no pulse.
    pub fn is_limp(&self) -> bool {
        self.limp
    }
}

/// Pulse width (µs, whole) for position `q` on a joint with limits `l`.
fn pulse_us(l: &JointLimit, q: f32) -> u16 {
    let span = l.max - l.min;
    let frac = if span > 0.0 {
        ((q - l.min) / span).clamp(0.0, 1.0)
    } else {
        0.5
    };
    // In [1000, 2000]: the cast cannot truncate; +0.5 rounds.
    (MIN_PULSE_US + frac * (MAX_PULSE_US - MIN_PULSE_US) + 0.5) as u16
}

impl Motors for HobbyServos {
    /// The estimate: where the servos were last told to be (see the module
    /// documentation), not a measurement.
    fn positions(&self) -> &[f32] {
        &self.q
    }

    /// The estimate's rate of change, not a measurement.
    fn velocities(&self) -> &[f32] {
        &self.qd
    }

    fn drive(&mut self, targets: &[f32], dt: f32) {
        if self.limp {
            self.qd = [0.0; JOINTS];
            return;
        }
        for ((((ch, l), q), qd), &goal) in self
            .channels
            .iter_mut()
            .zip(&self.limits)
            .zip(self.q.iter_mut())
            .zip(self.qd.iter_mut())
            .zip(targets)
        {
            let max_step = l.max_velocity * dt;
            let step = (goal.clamp(l.min, l.max) - *q).clamp(-max_step, max_step);
            *q += step;
            *qd = if dt > 0.0 { step / dt } else { 0.0 };
            ch.set_duty(pulse_us(l, *q));
        }
    }

    /// No pulse from the next 20 ms frame on (a pulse under way finishes):
    /// most hobby servos go limp. The estimate stays where it was.
    fn stop(&mut self) {
        for ch in &mut self.channels {
            ch.set_duty(0);
        }
        self.qd = [0.0; JOINTS];
        self.limp = true;
    }
}

/// Cut the servo pulses now, with raw register writes, for the fatal path
/// (panic, hard fault), where the `HobbyServos` (in the main loop) is out of
/// reach: each channel is forced to its inactive level (low) at once, not at
/// the next period, and its compare value set to 0. Does nothing before
/// TIM3 is configured.
#[allow(unsafe_code)]
pub fn cut_from_fatal_path() {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: the only other user of TIM3 is the main loop's `HobbyServos`,
    // which never runs again: interrupts are disabled and the fatal path
    // never returns.
    let tim = unsafe { TIM3::steal() };
    tim.ccmr1_output()
        .modify(|_, w| w.oc1m().force_inactive().oc2m().force_inactive());
    tim.ccmr2_output()
        .modify(|_, w| w.oc3m().force_inactive().oc4m().force_inactive());
    for n in 0..JOINTS {
        tim.ccr(n).write(|w| w.ccr().set(0));
    }
}
