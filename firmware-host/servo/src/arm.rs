//! Arm presets: which servos make up an arm (ids, family, model, joint
//! names, which one is the gripper) for the arms people own.

use crate::Family;

/// How a motor's position is expressed to the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Radians from the middle of the calibrated range.
    Radian,
    /// 0 % at the calibrated range's start, 100 % at its end (a gripper).
    Percent,
}

impl Unit {
    /// As in a manifest's channel units.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Radian => "rad",
            Unit::Percent => "%",
        }
    }
}

/// One motor of an arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Motor {
    /// Joint name (the calibration file's key, LeRobot's name).
    pub name: &'static str,
    /// Bus id.
    pub id: u8,
    /// Model name.
    pub model: &'static str,
    /// Position unit.
    pub unit: Unit,
}

/// An arm: its servo family and motors, in joint order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmPreset {
    /// `so101-follower`, `koch-leader`, …
    pub name: &'static str,
    /// The bus family.
    pub family: Family,
    /// The motors, in joint order.
    pub motors: &'static [Motor],
    /// Largest joint speed the safety layer allows (rad/s), below the
    /// servos' own no-load speed.
    pub max_velocity: f32,
    /// Largest joint acceleration the safety layer allows (rad/s²).
    pub max_acceleration: f32,
}

const fn m(name: &'static str, id: u8, model: &'static str, unit: Unit) -> Motor {
    Motor {
        name,
        id,
        model,
        unit,
    }
}

/// SO-100 and SO-101: six STS3215, ids 1–6 (the same joints, leader and
/// follower alike).
const SO_ARM: &[Motor] = &[
    m("shoulder_pan", 1, "sts3215", Unit::Radian),
    m("shoulder_lift", 2, "sts3215", Unit::Radian),
    m("elbow_flex", 3, "sts3215", Unit::Radian),
    m("wrist_flex", 4, "sts3215", Unit::Radian),
    m("wrist_roll", 5, "sts3215", Unit::Radian),
    m("gripper", 6, "sts3215", Unit::Percent),
];

/// Koch v1.1 follower: XL430-W250 at the shoulder, XL330-M288 beyond.
const KOCH_FOLLOWER: &[Motor] = &[
    m("shoulder_pan", 1, "xl430-w250", Unit::Radian),
    m("shoulder_lift", 2, "xl430-w250", Unit::Radian),
    m("elbow_flex", 3, "xl330-m288", Unit::Radian),
    m("wrist_flex", 4, "xl330-m288", Unit::Radian),
    m("wrist_roll", 5, "xl330-m288", Unit::Radian),
    m("gripper", 6, "xl330-m288", Unit::Percent),
];

/// Koch v1.1 leader: six XL330-M077.
const KOCH_LEADER: &[Motor] = &[
    m("shoulder_pan", 1, "xl330-m077", Unit::Radian),
    m("shoulder_lift", 2, "xl330-m077", Unit::Radian),
    m("elbow_flex", 3, "xl330-m077", Unit::Radian),
    m("wrist_flex", 4, "xl330-m077", Unit::Radian),
    m("wrist_roll", 5, "xl330-m077", Unit::Radian),
    m("gripper", 6, "xl330-m077", Unit::Percent),
];

/// Every preset.
pub const PRESETS: &[ArmPreset] = &[
    so("so101-follower"),
    so("so101-leader"),
    so("so100-follower"),
    so("so100-leader"),
    ArmPreset {
        name: "koch-follower",
        family: Family::Dynamixel,
        motors: KOCH_FOLLOWER,
        max_velocity: 3.0,
        max_acceleration: 20.0,
    },
    ArmPreset {
        name: "koch-leader",
        family: Family::Dynamixel,
        motors: KOCH_LEADER,
        max_velocity: 3.0,
        max_acceleration: 20.0,
    },
];

const fn so(name: &'static str) -> ArmPreset {
    ArmPreset {
        name,
        family: Family::Feetech,
        motors: SO_ARM,
        max_velocity: 3.0,
        max_acceleration: 20.0,
    }
}

impl ArmPreset {
    /// The preset called `name`; the error lists the known ones.
    pub fn named(name: &str) -> Result<&'static ArmPreset, String> {
        PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
            let known: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            format!("unknown arm {name:?}: known arms are {}", known.join(", "))
        })
    }

    /// The motors' bus ids, in joint order.
    pub fn ids(&self) -> impl Iterator<Item = u8> + '_ {
        self.motors.iter().map(|m| m.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_unique_names_and_ids_and_one_gripper_last() {
        for p in PRESETS {
            let mut ids: Vec<u8> = p.ids().collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), p.motors.len(), "{}", p.name);
            assert_eq!(
                p.motors.iter().filter(|m| m.unit == Unit::Percent).count(),
                1,
                "{}",
                p.name
            );
            assert_eq!(p.motors.last().map(|m| m.name), Some("gripper"));
            assert_eq!(ArmPreset::named(p.name).map(|q| q.name), Ok(p.name));
        }
        let e = ArmPreset::named("so102").expect_err("unknown");
        assert!(
            e.contains("so101-follower") && e.contains("koch-leader"),
            "{e}"
        );
    }
}
