//! Calibration: where each joint's range lies on its servo, stored as JSON
//! per arm id with the fields people already keep for these arms (LeRobot's
//! `id, drive_mode, homing_offset, range_min, range_max` per motor name), so
//! an existing calibration file is reused as it is; and the one conversion
//! between servo ticks and joint units (radians, or 0–100 % for a gripper).

use crate::Family;
use crate::arm::{ArmPreset, Motor, Unit};
use std::collections::BTreeMap;
use std::path::Path;

/// One motor's calibration (LeRobot's `MotorCalibration` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotorCalibration {
    /// Bus id.
    pub id: u8,
    /// 0: as mounted; 1: the joint's positive direction is the servo's
    /// negative one.
    pub drive_mode: u8,
    /// Homing offset register value written to the servo (its family's sign
    /// convention: [`present_from_actual`]).
    pub homing_offset: i32,
    /// Lowest present position the joint reaches (ticks).
    pub range_min: i32,
    /// Highest present position the joint reaches (ticks).
    pub range_max: i32,
}

/// An arm's calibration file: motor name → calibration.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Calibration {
    /// By motor name.
    pub motors: BTreeMap<String, MotorCalibration>,
}

/// A calibration that cannot be used, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// The file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// Not the expected JSON.
    #[error("{path}: {cause}")]
    Json {
        /// The file.
        path: String,
        /// What serde said (line and column).
        cause: serde_json::Error,
    },
    /// A motor of the arm is missing or wrong.
    #[error("{path}: motor {motor:?}: {message}")]
    Motor {
        /// The file.
        path: String,
        /// The motor's name.
        motor: String,
        /// What is wrong, naming the field.
        message: String,
    },
}

/// Present position as a servo reports it, from the horn's position and the
/// homing offset register: Feetech subtracts the offset, Dynamixel adds it.
pub fn present_from_actual(family: Family, actual: i32, homing_offset: i32) -> i32 {
    match family {
        Family::Feetech => actual - homing_offset,
        Family::Dynamixel => actual + homing_offset,
    }
}

/// The homing offset that makes a servo whose horn is at `actual` report
/// the middle of its turn (2047 for 4096 ticks), as calibration writes it.
pub fn centering_offset(family: Family, actual: i32) -> i32 {
    let half = family.ticks_per_rev() / 2 - 1;
    match family {
        Family::Feetech => actual - half,
        Family::Dynamixel => half - actual,
    }
}

impl Calibration {
    /// Read a calibration file.
    pub fn load(path: &Path) -> Result<Self, CalibrationError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CalibrationError::Io {
            path: p.clone(),
            cause: source,
        })?;
        serde_json::from_str(&text).map_err(|source| CalibrationError::Json {
            path: p,
            cause: source,
        })
    }

    /// Write it (pretty JSON, motors by name).
    pub fn save(&self, path: &Path) -> Result<(), CalibrationError> {
        let p = path.display().to_string();
        let io = |source| CalibrationError::Io {
            path: p.clone(),
            cause: source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|source| CalibrationError::Json {
            path: p.clone(),
            cause: source,
        })?;
        std::fs::write(path, text + "\n").map_err(io)
    }

    /// The joints of `arm`, in order, checked against this calibration:
    /// every motor present with the preset's id, `drive_mode` 0 or 1, and
    /// `range_min < range_max` inside one turn. `path` names the file in
    /// errors.
    pub fn joints(&self, arm: &ArmPreset, path: &str) -> Result<Vec<Joint>, CalibrationError> {
        let ticks = arm.family.ticks_per_rev();
        arm.motors
            .iter()
            .map(|m| {
                let bad = |message: String| CalibrationError::Motor {
                    path: path.into(),
                    motor: m.name.into(),
                    message,
                };
                let c = self
                    .motors
                    .get(m.name)
                    .ok_or_else(|| bad(format!("missing (the {} arm has it)", arm.name)))?;
                if c.id != m.id {
                    return Err(bad(format!(
                        "id {} but the {} arm has it at id {}",
                        c.id, arm.name, m.id
                    )));
                }
                if c.drive_mode > 1 {
                    return Err(bad(format!("drive_mode {} (0 or 1)", c.drive_mode)));
                }
                if !(0 <= c.range_min && c.range_min < c.range_max && c.range_max < ticks) {
                    return Err(bad(format!(
                        "range_min {} / range_max {}: need 0 <= range_min < range_max < {ticks}",
                        c.range_min, c.range_max
                    )));
                }
                Ok(Joint {
                    motor: *m,
                    family: arm.family,
                    calibration: *c,
                })
            })
            .collect()
    }
}

/// One calibrated joint: the conversion between its servo's ticks and the
/// joint's unit, in one place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Joint {
    /// The motor.
    pub motor: Motor,
    /// Its family.
    pub family: Family,
    /// Its calibration.
    pub calibration: MotorCalibration,
}

impl Joint {
    fn sign(&self) -> f64 {
        if self.calibration.drive_mode == 1 {
            -1.0
        } else {
            1.0
        }
    }

    fn rad_per_tick(&self) -> f64 {
        std::f64::consts::TAU / f64::from(self.family.ticks_per_rev())
    }

    fn middle(&self) -> f64 {
        (f64::from(self.calibration.range_min) + f64::from(self.calibration.range_max)) / 2.0
    }

    fn span(&self) -> f64 {
        f64::from(self.calibration.range_max - self.calibration.range_min)
    }

    /// A present position (ticks) as the horn's angle in radians from the
    /// middle of the calibrated range (negated for `drive_mode` 1): the
    /// control loop's unit for every joint, the gripper included.
    pub fn to_rad(&self, ticks: i32) -> f32 {
        (self.sign() * (f64::from(ticks) - self.middle()) * self.rad_per_tick()) as f32
    }

    /// An angle (rad, as [`Joint::to_rad`]) as the nearest goal position
    /// (ticks), clamped to the calibrated range; NaN gives the middle.
    pub fn rad_to_ticks(&self, rad: f32) -> i32 {
        let c = &self.calibration;
        let t = self.sign() * f64::from(rad) / self.rad_per_tick() + self.middle();
        if t.is_nan() {
            return self.middle().round() as i32;
        }
        (t.round() as i32).clamp(c.range_min, c.range_max)
    }

    /// The calibrated range in radians ([`Joint::to_rad`]), low to high.
    pub fn rad_limits(&self) -> (f32, f32) {
        let a = self.to_rad(self.calibration.range_min);
        let b = self.to_rad(self.calibration.range_max);
        (a.min(b), a.max(b))
    }

    /// A present velocity (the family's unit) in rad/s ([`Joint::to_rad`]'s sign).
    pub fn velocity_to_rad(&self, raw: i32) -> f32 {
        let ticks_per_s = f64::from(raw) * self.family.velocity_unit_ticks_per_s();
        (self.sign() * ticks_per_s * self.rad_per_tick()) as f32
    }

    /// A present position (ticks) in the joint's unit for a policy or a
    /// data set ([`Motor::unit`]): radians ([`Joint::to_rad`]), or % of
    /// the range (100 − % for `drive_mode` 1).
    pub fn to_unit(&self, ticks: i32) -> f32 {
        let t = f64::from(ticks);
        let c = &self.calibration;
        (match self.motor.unit {
            Unit::Radian => f64::from(self.to_rad(ticks)),
            Unit::Percent => {
                let p = (t - f64::from(c.range_min)) / self.span() * 100.0;
                if c.drive_mode == 1 { 100.0 - p } else { p }
            }
        }) as f32
    }

    /// A value in the joint's unit as the nearest goal position (ticks),
    /// clamped to the calibrated range.
    pub fn to_ticks(&self, value: f32) -> i32 {
        let v = f64::from(value);
        let c = &self.calibration;
        let t = match self.motor.unit {
            Unit::Radian => return self.rad_to_ticks(value),
            Unit::Percent => {
                let p = if c.drive_mode == 1 { 100.0 - v } else { v };
                p / 100.0 * self.span() + f64::from(c.range_min)
            }
        };
        if t.is_nan() {
            return self.middle().round() as i32;
        }
        (t.round() as i32).clamp(c.range_min, c.range_max)
    }

    /// A present velocity (the family's unit) in the joint's unit per second.
    pub fn velocity_to_unit(&self, raw: i32) -> f32 {
        let ticks_per_s = f64::from(raw) * self.family.velocity_unit_ticks_per_s();
        (match self.motor.unit {
            Unit::Radian => f64::from(self.velocity_to_rad(raw)),
            Unit::Percent => {
                let s = if self.calibration.drive_mode == 1 {
                    -1.0
                } else {
                    1.0
                };
                s * ticks_per_s / self.span() * 100.0
            }
        }) as f32
    }

    /// The joint's range in its unit, low to high.
    pub fn limits(&self) -> (f32, f32) {
        let a = self.to_unit(self.calibration.range_min);
        let b = self.to_unit(self.calibration.range_max);
        (a.min(b), a.max(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joint(family: Family, unit: Unit, drive_mode: u8, lo: i32, hi: i32) -> Joint {
        Joint {
            motor: Motor {
                name: "j",
                id: 1,
                model: "m",
                unit,
            },
            family,
            calibration: MotorCalibration {
                id: 1,
                drive_mode,
                homing_offset: 0,
                range_min: lo,
                range_max: hi,
            },
        }
    }

    #[test]
    fn ticks_to_units_and_back_is_exact_over_the_whole_range() {
        for family in [Family::Feetech, Family::Dynamixel] {
            for unit in [Unit::Radian, Unit::Percent] {
                for drive_mode in [0, 1] {
                    for (lo, hi) in [(0, 4095), (817, 3242), (1000, 1001), (2047, 2050)] {
                        let j = joint(family, unit, drive_mode, lo, hi);
                        for t in lo..=hi {
                            let v = j.to_unit(t);
                            assert_eq!(
                                j.to_ticks(v),
                                t,
                                "{family:?} {unit:?} dm {drive_mode} [{lo}, {hi}] tick {t} -> {v}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn units_have_the_documented_meaning() {
        let j = joint(Family::Feetech, Unit::Radian, 0, 1023, 3071);
        assert_eq!(j.to_unit(2047), 0.0, "the middle of the range is 0 rad");
        let quarter = std::f32::consts::FRAC_PI_2;
        assert!(
            (j.to_unit(3071) - quarter).abs() < 1e-6,
            "1024 ticks = a quarter turn"
        );
        let inv = joint(Family::Feetech, Unit::Radian, 1, 1023, 3071);
        assert!(
            (inv.to_unit(3071) + quarter).abs() < 1e-6,
            "drive_mode 1 negates"
        );
        assert_eq!(inv.limits(), (-quarter, quarter));
        let g = joint(Family::Dynamixel, Unit::Percent, 0, 2000, 3000);
        assert_eq!(
            (g.to_unit(2000), g.to_unit(2500), g.to_unit(3000)),
            (0.0, 50.0, 100.0)
        );
        assert_eq!(g.to_ticks(150.0), 3000, "clamped to the range");
        assert_eq!(
            g.to_ticks(f32::NAN),
            2500,
            "NaN goes to the middle, never outside"
        );
        // 0.229 rpm per Dynamixel unit; 1 tick/s per Feetech unit.
        let d = joint(Family::Dynamixel, Unit::Radian, 0, 0, 4095);
        assert!(
            (d.velocity_to_unit(100) - 100.0 * 0.229 * std::f32::consts::TAU / 60.0).abs() < 1e-5
        );
        let f = joint(Family::Feetech, Unit::Radian, 0, 0, 4095);
        assert!((f.velocity_to_unit(4096) - std::f32::consts::TAU).abs() < 1e-5);
    }

    #[test]
    fn each_familys_homing_offset_sign_centres_the_servo() {
        for family in [Family::Feetech, Family::Dynamixel] {
            for actual in [0, 1, 700, 2047, 2048, 3999, 4095] {
                let off = centering_offset(family, actual);
                assert_eq!(
                    present_from_actual(family, actual, off),
                    2047,
                    "{family:?} at {actual}"
                );
            }
        }
        // The conventions differ: the same register value moves the two
        // families' readings in opposite directions.
        assert_eq!(present_from_actual(Family::Feetech, 1000, 100), 900);
        assert_eq!(present_from_actual(Family::Dynamixel, 1000, 100), 1100);
    }

    #[test]
    fn a_lerobot_calibration_file_loads_and_is_checked_against_the_arm() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("my_arm.json");
        let arm = ArmPreset::named("so101-follower").expect("preset");
        let mut text = String::from("{\n");
        for (i, m) in arm.motors.iter().enumerate() {
            text += &format!(
                "  \"{}\": {{\"id\": {}, \"drive_mode\": 0, \"homing_offset\": {}, \"range_min\": {}, \"range_max\": {}}}{}\n",
                m.name,
                m.id,
                -1000 + 100 * i as i32,
                800 + i as i32,
                3200 - i as i32,
                if i + 1 < arm.motors.len() { "," } else { "" }
            );
        }
        text += "}\n";
        std::fs::write(&path, &text).expect("write");
        let cal = Calibration::load(&path).expect("load");
        let joints = cal.joints(arm, "my_arm.json").expect("joints");
        assert_eq!(joints.len(), 6);
        assert_eq!(joints[2].calibration.homing_offset, -800);
        // Saved and loaded again: the same.
        let again = dir.path().join("again.json");
        cal.save(&again).expect("save");
        assert_eq!(Calibration::load(&again).expect("load"), cal);

        // A wrong id, a bad range, a missing motor, an unknown field: each
        // names the file and the motor or field.
        let mut bad = cal.clone();
        bad.motors.get_mut("elbow_flex").expect("motor").id = 9;
        let e = bad.joints(arm, "f.json").expect_err("id").to_string();
        assert!(
            e.contains("f.json") && e.contains("elbow_flex") && e.contains("id 9"),
            "{e}"
        );
        let mut bad = cal.clone();
        bad.motors.get_mut("gripper").expect("motor").range_max = 100;
        let e = bad.joints(arm, "f.json").expect_err("range").to_string();
        assert!(e.contains("gripper") && e.contains("range_max 100"), "{e}");
        let mut bad = cal.clone();
        bad.motors.remove("wrist_roll");
        let e = bad.joints(arm, "f.json").expect_err("missing").to_string();
        assert!(e.contains("wrist_roll") && e.contains("missing"), "{e}");
        std::fs::write(&path, text.replacen("\"drive_mode\"", "\"drive_mod\"", 1)).expect("write");
        let e = Calibration::load(&path)
            .expect_err("unknown field")
            .to_string();
        assert!(e.contains("my_arm.json") && e.contains("drive_mod"), "{e}");
    }
}
