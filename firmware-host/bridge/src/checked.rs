//! The one place that validates every number reaching the safety layer, the
//! control loop's timing or a [`Duration`]: command-line flags (as clap value
//! parsers, see [`flag`]), [`crate::LoopConfig::validate`],
//! [`crate::SafetyLayer::new`] and the device's handshake. A value that is
//! NaN, infinite, negative or zero where it must be positive is refused with
//! an error naming it, never repaired (no `.abs()`, no clamping) — a repaired
//! bound is a bound nobody chose.

use diffbc_protocol::{JointLimit, MAX_JOINTS};
use std::time::Duration;

/// The longest duration accepted (a year): longer is a typo, and adding it
/// to an `Instant` could overflow.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
/// The control loop's rate range (Hz).
pub const RATE_HZ: std::ops::RangeInclusive<f64> = 1.0..=500.0;
/// The emulated arm's largest time scale (device seconds per wall second).
pub const MAX_TIME_SCALE: f64 = 1000.0;

/// A number that cannot be used where it was given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// NaN or infinite.
    #[error("{name} must be a finite number, got {value}")]
    NotFinite {
        /// The flag or field.
        name: &'static str,
        /// The value.
        value: f64,
    },
    /// Zero or negative where it must be positive.
    #[error("{name} must be positive, got {value}")]
    NotPositive {
        /// The flag or field.
        name: &'static str,
        /// The value.
        value: f64,
    },
    /// Outside its range.
    #[error("{name} must be in {min}..={max}, got {value}")]
    OutOfRange {
        /// The flag or field.
        name: &'static str,
        /// The value.
        value: f64,
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
    /// Not a number at all.
    #[error("{name}: '{text}' is not a number")]
    NotANumber {
        /// The flag or field.
        name: &'static str,
        /// What was given.
        text: String,
    },
    /// A joint limit that is NaN or infinite.
    #[error("joint {joint}: {field} must be finite, got {value}")]
    JointNotFinite {
        /// The joint.
        joint: usize,
        /// `min`, `max`, `max_velocity` or `max_acceleration`.
        field: &'static str,
        /// The value.
        value: f32,
    },
    /// A joint whose range is empty or inverted.
    #[error("joint {joint}: min ({min}) must be below max ({max})")]
    JointRange {
        /// The joint.
        joint: usize,
        /// Its min.
        min: f32,
        /// Its max.
        max: f32,
    },
    /// A joint speed or acceleration limit that is zero or negative.
    #[error("joint {joint}: {field} must be positive, got {value}")]
    JointNotPositive {
        /// The joint.
        joint: usize,
        /// `max_velocity` or `max_acceleration`.
        field: &'static str,
        /// The value.
        value: f32,
    },
    /// No joints, or more than the protocol carries.
    #[error("{count} joints; the protocol carries 1..={MAX_JOINTS}")]
    JointCount {
        /// The count.
        count: usize,
    },
}

/// `v` if it is finite.
pub fn finite(name: &'static str, v: f64) -> Result<f64, ValueError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(ValueError::NotFinite { name, value: v })
    }
}

/// `v` if it is finite and greater than zero.
pub fn positive_finite(name: &'static str, v: f64) -> Result<f64, ValueError> {
    if finite(name, v)? > 0.0 {
        Ok(v)
    } else {
        Err(ValueError::NotPositive { name, value: v })
    }
}

/// `v` if it is finite and in `min..=max`.
pub fn in_range(name: &'static str, v: f64, min: f64, max: f64) -> Result<f64, ValueError> {
    if (min..=max).contains(&finite(name, v)?) {
        Ok(v)
    } else {
        Err(ValueError::OutOfRange {
            name,
            value: v,
            min,
            max,
        })
    }
}

/// An emulated device's time scale (device seconds per wall second):
/// finite, positive and at most [`MAX_TIME_SCALE`].
pub fn time_scale(name: &'static str, v: f64) -> Result<f64, ValueError> {
    in_range(name, positive_finite(name, v)?, 0.0, MAX_TIME_SCALE)
}

/// `v` seconds as a [`Duration`]: finite, positive and at most
/// [`MAX_SECONDS`] (so `Duration::from_secs_f64` cannot panic).
pub fn seconds(name: &'static str, v: f64) -> Result<Duration, ValueError> {
    positive_finite(name, v)?;
    in_range(name, v, 0.0, MAX_SECONDS)?;
    Ok(Duration::from_secs_f64(v))
}

/// A positive [`Duration`] (zero is refused).
pub fn positive_duration(name: &'static str, d: Duration) -> Result<Duration, ValueError> {
    if d.is_zero() {
        Err(ValueError::NotPositive { name, value: 0.0 })
    } else {
        Ok(d)
    }
}

/// A control rate (Hz), finite and in [`RATE_HZ`].
pub fn rate_hz(name: &'static str, v: f64) -> Result<f64, ValueError> {
    in_range(name, v, *RATE_HZ.start(), *RATE_HZ.end())
}

/// A per-tick step bound (rad): finite and positive. Checked in `f32`, the
/// type the safety layer uses, so a value that overflows `f32` is refused.
pub fn max_step(name: &'static str, v: f32) -> Result<f32, ValueError> {
    positive_finite(name, f64::from(v))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(ValueError::NotFinite {
            name,
            value: f64::from(v),
        })
    }
}

/// Every joint limit usable: each field finite, `min < max`, and
/// `max_velocity`, `max_acceleration` positive; 1..=[`MAX_JOINTS`] joints.
pub fn joint_limits(limits: &[JointLimit]) -> Result<(), ValueError> {
    if limits.is_empty() || limits.len() > MAX_JOINTS {
        return Err(ValueError::JointCount {
            count: limits.len(),
        });
    }
    for (joint, l) in limits.iter().enumerate() {
        for (field, value) in [
            ("min", l.min),
            ("max", l.max),
            ("max_velocity", l.max_velocity),
            ("max_acceleration", l.max_acceleration),
        ] {
            if !value.is_finite() {
                return Err(ValueError::JointNotFinite {
                    joint,
                    field,
                    value,
                });
            }
        }
        if l.min >= l.max {
            return Err(ValueError::JointRange {
                joint,
                min: l.min,
                max: l.max,
            });
        }
        for (field, value) in [
            ("max_velocity", l.max_velocity),
            ("max_acceleration", l.max_acceleration),
        ] {
            if value <= 0.0 {
                return Err(ValueError::JointNotPositive {
                    joint,
                    field,
                    value,
                });
            }
        }
    }
    Ok(())
}

/// Clap value parsers for the binaries' flags: `#[arg(long, value_parser =
/// diffbc_bridge::checked::flag::seconds)]`. A bad value is a usage error
/// (exit code 2) that names the flag (clap adds it) and the value.
pub mod flag {
    use super::ValueError;
    use std::time::Duration;

    fn number(text: &str) -> Result<f64, ValueError> {
        text.trim()
            .parse::<f64>()
            .map_err(|_| ValueError::NotANumber {
                name: "the value",
                text: text.into(),
            })
    }

    /// Seconds: finite, positive, at most a year.
    pub fn seconds(text: &str) -> Result<Duration, ValueError> {
        super::seconds("seconds", number(text)?)
    }

    /// A control rate in 1..=500 Hz.
    pub fn rate_hz(text: &str) -> Result<f64, ValueError> {
        super::rate_hz("the rate (Hz)", number(text)?)
    }

    /// A per-tick step bound (rad), finite and positive in `f32`.
    pub fn max_step(text: &str) -> Result<f32, ValueError> {
        super::max_step("the step (rad)", number(text)? as f32)
    }

    /// The emulated arm's time scale: finite, positive, at most
    /// [`super::MAX_TIME_SCALE`].
    pub fn time_scale(text: &str) -> Result<f64, ValueError> {
        super::time_scale("the time scale", number(text)?)
    }

    /// A finite positive number.
    pub fn positive(text: &str) -> Result<f64, ValueError> {
        super::positive_finite("the value", number(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: [f64; 5] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 0.0];

    fn limit(min: f32, max: f32, v: f32, a: f32) -> JointLimit {
        JointLimit {
            min,
            max,
            max_velocity: v,
            max_acceleration: a,
        }
    }

    #[test]
    fn positive_finite_refuses_nan_infinities_negative_and_zero() {
        for v in BAD {
            let e = positive_finite("--max-step", v).expect_err("refused");
            let m = e.to_string();
            assert!(m.contains("--max-step"), "{m}");
            assert!(m.contains(&format!("{v}")), "{m}");
        }
        assert_eq!(positive_finite("x", 0.5), Ok(0.5));
    }

    #[test]
    fn seconds_are_finite_positive_and_not_absurd() {
        for v in BAD {
            assert!(seconds("--seconds", v).is_err(), "{v}");
        }
        let e = seconds("--seconds", 1e12).expect_err("more than a year");
        assert!(e.to_string().contains("--seconds"), "{e}");
        assert_eq!(seconds("s", 1.5), Ok(Duration::from_millis(1500)));
        assert_eq!(
            seconds("s", MAX_SECONDS),
            Ok(Duration::from_secs(MAX_SECONDS as u64))
        );
    }

    #[test]
    fn rates_are_finite_and_in_range() {
        for v in [f64::NAN, f64::INFINITY, -1.0, 0.0, 0.5, 501.0] {
            let e = rate_hz("--rate", v).expect_err("refused");
            assert!(e.to_string().contains("--rate"), "{e}");
        }
        assert_eq!(rate_hz("r", 1.0), Ok(1.0));
        assert_eq!(rate_hz("r", 500.0), Ok(500.0));
    }

    #[test]
    fn max_step_is_checked_in_f32() {
        for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.1, 0.0, -0.0] {
            assert!(max_step("--max-step", v).is_err(), "{v}");
        }
        assert_eq!(max_step("s", 0.2), Ok(0.2));
        // 1e300 does not fit an f32: it parses to infinity and is refused.
        assert!(flag::max_step("1e300").is_err());
        assert!(flag::max_step("NaN").is_err());
        assert!(flag::max_step("-0.2").is_err());
        assert!(flag::max_step("0.2").is_ok());
    }

    #[test]
    fn flags_parse_or_name_the_problem() {
        for t in ["-1", "NaN", "inf", "-inf", "0", "1e30", "abc", ""] {
            assert!(flag::seconds(t).is_err(), "{t}");
        }
        assert_eq!(flag::seconds("2"), Ok(Duration::from_secs(2)));
        assert!(
            flag::seconds("abc")
                .expect_err("text")
                .to_string()
                .contains("'abc'")
        );
        for t in ["NaN", "0", "501", "-50"] {
            assert!(flag::rate_hz(t).is_err(), "{t}");
        }
        for t in ["NaN", "0", "-1", "inf", "1e9"] {
            assert!(flag::time_scale(t).is_err(), "{t}");
        }
        assert_eq!(flag::time_scale("20"), Ok(20.0));
    }

    #[test]
    fn joint_limits_refuse_every_bad_field_and_name_the_joint() {
        let ok = limit(-1.0, 1.0, 2.0, 10.0);
        assert_eq!(joint_limits(&[ok, ok]), Ok(()));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for (field, l) in [
                ("min", limit(bad, 1.0, 2.0, 10.0)),
                ("max", limit(-1.0, bad, 2.0, 10.0)),
                ("max_velocity", limit(-1.0, 1.0, bad, 10.0)),
                ("max_acceleration", limit(-1.0, 1.0, 2.0, bad)),
            ] {
                let e = joint_limits(&[ok, l]).expect_err("not finite");
                let m = e.to_string();
                assert!(m.contains("joint 1") && m.contains(field), "{m}");
            }
        }
        // min > max and min == max.
        for (lo, hi) in [(1.0, -1.0), (0.5, 0.5)] {
            let e = joint_limits(&[limit(lo, hi, 2.0, 10.0)]).expect_err("empty range");
            assert!(matches!(e, ValueError::JointRange { joint: 0, .. }), "{e}");
        }
        for v in [0.0, -1.0] {
            let e = joint_limits(&[limit(-1.0, 1.0, v, 10.0)]).expect_err("velocity");
            assert!(e.to_string().contains("max_velocity"), "{e}");
            let e = joint_limits(&[limit(-1.0, 1.0, 2.0, v)]).expect_err("acceleration");
            assert!(e.to_string().contains("max_acceleration"), "{e}");
        }
        assert!(matches!(
            joint_limits(&[]),
            Err(ValueError::JointCount { count: 0 })
        ));
        assert!(joint_limits(&[ok; MAX_JOINTS + 1]).is_err());
    }
}
