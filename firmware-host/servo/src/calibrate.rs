//! `diffbc calibrate`: find each joint's range on its servos, with a person
//! moving the arm, and write what LeRobot's calibration writes (homing
//! offset and position limits on the servos, the JSON file on disk).
//!
//! 1. Torque off on every servo; homing offsets cleared (the servos then
//!    report where their horns are).
//! 2. The person puts the arm in the middle of its range: each servo's
//!    homing offset is set so that it reads the middle of its turn there
//!    ([`centering_offset`], each family's sign convention).
//! 3. The person moves every joint through its whole range: the lowest and
//!    highest positions seen are the range, written to the servos' limit
//!    registers.

use crate::arm::ArmPreset;
use crate::calibration::{Calibration, MotorCalibration, centering_offset};
use crate::{Bus, BusError, Register, ServoState};
use std::time::Duration;

/// The person at the arm (a terminal, or a test moving emulated servos).
pub trait Operator {
    /// Say `message` and return once the person is ready (Enter).
    fn ready(&mut self, message: &str) -> std::io::Result<()>;
    /// Say `message` and go on (the person acts while the tool samples).
    fn say(&mut self, message: &str);
    /// While the joints are swept: `true` to keep sampling, `false` once the
    /// person says the sweep is done. `low`/`high` are the ranges so far
    /// (ticks, per joint) for a live display.
    fn sweeping(&mut self, low: &[i32], high: &[i32]) -> bool;
}

/// Why calibration failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    /// The bus failed.
    #[error("{arm}: {cause}")]
    Bus {
        /// The preset.
        arm: String,
        /// What the bus said.
        cause: BusError,
    },
    /// The person could not be asked (stdin closed).
    #[error("{0}")]
    Operator(#[from] std::io::Error),
    /// A joint did not move enough to have a range.
    #[error(
        "{arm}: joint {joint} (id {id}) moved only {span} ticks ({low}..{high}): move every joint through its whole range"
    )]
    NoRange {
        /// The preset.
        arm: String,
        /// The joint's name.
        joint: String,
        /// Its id.
        id: u8,
        /// Lowest position seen.
        low: i32,
        /// Highest.
        high: i32,
        /// `high - low`.
        span: i32,
    },
}

/// Smallest range (ticks) a joint must show: about 9 degrees.
pub const MIN_SPAN: i32 = 100;

/// Calibrate `arm` on `bus` with `operator`, sampling every `period`.
pub fn calibrate<B: Bus>(
    bus: &mut B,
    arm: &ArmPreset,
    operator: &mut dyn Operator,
    period: Duration,
) -> Result<Calibration, CalibrateError> {
    let err = |source| CalibrateError::Bus {
        arm: arm.name.into(),
        cause: source,
    };
    let ids: Vec<u8> = arm.ids().collect();
    for &id in &ids {
        bus.ping(id).map_err(err)?;
    }
    bus.sync_write(&ids, Register::TorqueEnable, &vec![0; ids.len()])
        .map_err(err)?;
    for &id in &ids {
        bus.write(id, Register::HomingOffset, 0).map_err(err)?;
    }
    let mut state = vec![ServoState::default(); ids.len()];

    operator.ready(&format!(
        "{}: torque is off. Move the arm to the middle of its range (every joint halfway), then press Enter.",
        arm.name
    ))?;
    bus.sync_read_state(&ids, &mut state).map_err(err)?;
    let offsets: Vec<i32> = state
        .iter()
        .map(|s| centering_offset(arm.family, s.position))
        .collect();
    for (&id, &off) in ids.iter().zip(&offsets) {
        bus.write(id, Register::HomingOffset, off).map_err(err)?;
    }

    operator.say("Now move every joint through its whole range; press Enter when done.");
    bus.sync_read_state(&ids, &mut state).map_err(err)?;
    let mut low: Vec<i32> = state.iter().map(|s| s.position).collect();
    let mut high = low.clone();
    while operator.sweeping(&low, &high) {
        std::thread::sleep(period);
        bus.sync_read_state(&ids, &mut state).map_err(err)?;
        for ((l, h), s) in low.iter_mut().zip(high.iter_mut()).zip(&state) {
            *l = (*l).min(s.position);
            *h = (*h).max(s.position);
        }
    }
    let mut cal = Calibration::default();
    for (i, m) in arm.motors.iter().enumerate() {
        if high[i] - low[i] < MIN_SPAN {
            return Err(CalibrateError::NoRange {
                arm: arm.name.into(),
                joint: m.name.into(),
                id: m.id,
                low: low[i],
                high: high[i],
                span: high[i] - low[i],
            });
        }
        bus.write(m.id, Register::MinPositionLimit, low[i])
            .map_err(err)?;
        bus.write(m.id, Register::MaxPositionLimit, high[i])
            .map_err(err)?;
        cal.motors.insert(
            m.name.into(),
            MotorCalibration {
                id: m.id,
                drive_mode: 0,
                homing_offset: offsets[i],
                range_min: low[i],
                range_max: high[i],
            },
        );
    }
    Ok(cal)
}
