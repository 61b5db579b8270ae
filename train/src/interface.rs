//! What a data set says about its channels: names (the data set's own),
//! units, where each observation comes from and what each action drives, and
//! the control rate — plus what the data shows: each channel's range and
//! per-tick step. Built once from the data, stored in the checkpoint and
//! written into the exported manifest (`docs/manifest.md`).

use crate::episodes::Episodes;
use diffbc_runtime::manifest::{
    ActionChannel, ActionKind, Channels, Deployment, Interface, ObservationChannel, Source,
};
use serde::{Deserialize, Serialize};

/// Unit written when the data set does not give one.
pub const UNKNOWN_UNIT: &str = "unknown";

/// Per-channel facts a data set may record beside the names (the `.demos`
/// header's `channels`; LeRobot's `fps`). Empty lists mean "not recorded".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelHints {
    /// Unit of each observation value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub obs_units: Vec<String>,
    /// Run-time source of each observation value (`joint.position[0]`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub obs_sources: Vec<String>,
    /// Unit of each action value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action_units: Vec<String>,
    /// What each action value drives (`joint.position[0]`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action_targets: Vec<String>,
    /// Control rate of the recording (Hz).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_hz: Option<f64>,
}

impl ChannelHints {
    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Check the list lengths against the row widths; the message names the field.
    pub fn validate(&self, obs_dim: usize, action_dim: usize) -> Result<(), String> {
        for (field, list, n) in [
            ("obs_units", &self.obs_units, obs_dim),
            ("obs_sources", &self.obs_sources, obs_dim),
            ("action_units", &self.action_units, action_dim),
            ("action_targets", &self.action_targets, action_dim),
        ] {
            if !list.is_empty() && list.len() != n {
                return Err(format!(
                    "channels.{field} has {} entries for {n} values",
                    list.len()
                ));
            }
        }
        if let Some(hz) = self.control_hz
            && !(hz.is_finite() && hz > 0.0)
        {
            return Err(format!("channels.control_hz {hz} is not a positive rate"));
        }
        Ok(())
    }
}

fn pick(list: &[String], i: usize, fallback: impl FnOnce() -> String) -> String {
    list.get(i)
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(fallback)
}

/// The interface of demonstrations: names from the data set (or
/// `observation[i]` / `action[i]`), the hints where recorded (else unit
/// `unknown`, source and target = the name, i.e. host-side), ranges over
/// every row, and each action value's largest change between consecutive
/// rows of an episode.
pub fn describe(ep: &Episodes) -> Interface {
    let (o, a) = (ep.obs_dim, ep.action_dim);
    let h = &ep.hints;
    let range = |data: &[f32], width: usize, i: usize| {
        data.chunks_exact(width)
            .map(|r| r[i])
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let observation: Vec<ObservationChannel> = (0..o)
        .map(|i| {
            let name = pick(&ep.obs_names, i, || format!("observation[{i}]"));
            let (min, max) = range(&ep.obs, o, i);
            ObservationChannel {
                source: pick(&h.obs_sources, i, || name.clone()),
                unit: pick(&h.obs_units, i, || UNKNOWN_UNIT.into()),
                name,
                shape: Vec::new(),
                min,
                max,
            }
        })
        .collect();
    let mut steps = vec![None::<f32>; a];
    for e in 0..ep.len() {
        let r = ep.episode(e);
        for t in r.start + 1..r.end {
            for (i, s) in steps.iter_mut().enumerate() {
                let d = (ep.actions[t * a + i] - ep.actions[(t - 1) * a + i]).abs();
                *s = Some(s.map_or(d, |m| m.max(d)));
            }
        }
    }
    let action: Vec<ActionChannel> = (0..a)
        .map(|i| {
            let name = pick(&ep.action_names, i, || format!("action[{i}]"));
            let (min, max) = range(&ep.actions, a, i);
            ActionChannel {
                target: pick(&h.action_targets, i, || name.clone()),
                unit: pick(&h.action_units, i, || UNKNOWN_UNIT.into()),
                name,
                kind: ActionKind::Absolute,
                min,
                max,
                max_step: steps[i],
            }
        })
        .collect();
    let channels = Channels {
        observation,
        action,
    };
    let mut deployment = deployment(&channels, h.control_hz);
    deployment.max_step = target_lead(ep, &channels);
    Interface {
        channels,
        deployment,
    }
}

/// The largest |target − measured position| over every row and every joint
/// whose target action and position observation are both recorded: the
/// quantity the bridge's safety layer bounds per tick (`--max-step`).
fn target_lead(ep: &Episodes, channels: &Channels) -> Option<f32> {
    let (o, a) = (ep.obs_dim, ep.action_dim);
    let pairs: Vec<(usize, usize)> = channels
        .action
        .iter()
        .enumerate()
        .filter_map(|(c, ch)| match ch.target() {
            Source::JointPosition(j) => channels
                .observation
                .iter()
                .position(|oc| oc.source() == Source::JointPosition(j))
                .map(|k| (c, k)),
            _ => None,
        })
        .collect();
    if pairs.is_empty() || ep.steps() == 0 {
        return None;
    }
    let mut lead = 0.0f32;
    for t in 0..ep.steps() {
        for &(c, k) in &pairs {
            lead = lead.max((ep.actions[t * a + c] - ep.obs[t * o + k]).abs());
        }
    }
    Some(lead)
}

/// Deployment settings implied by the channels: joints driven, the largest
/// between-tick step of any joint target, the largest joint speed observed.
/// ([`describe`] replaces `max_step` with the target's lead over the measured
/// position when the data records both.)
pub fn deployment(channels: &Channels, control_hz: Option<f64>) -> Deployment {
    let joint_actions: Vec<&ActionChannel> = channels
        .action
        .iter()
        .filter(|c| matches!(c.target(), Source::JointPosition(_)))
        .collect();
    let max_step = joint_actions
        .iter()
        .filter_map(|c| c.max_step)
        .fold(None, |m: Option<f32>, s| Some(m.map_or(s, |m| m.max(s))));
    let max_velocity = channels
        .observation
        .iter()
        .filter(|c| matches!(c.source(), Source::JointVelocity(_)))
        .map(|c| c.min.abs().max(c.max.abs()))
        .fold(None, |m: Option<f32>, v| Some(m.map_or(v, |m| m.max(v))));
    Deployment {
        control_hz,
        joints: (!joint_actions.is_empty()).then_some(joint_actions.len()),
        max_step,
        max_velocity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_steps_and_deployment_come_from_the_data() {
        let mut e = Episodes::new(2, 2);
        // Two episodes; the jump between them (10 → 0) is not a step.
        e.push_episode(&[0.0, 1.0, 0.5, -1.0], &[0.0, 5.0, 0.3, 10.0])
            .expect("episode");
        e.push_episode(&[2.0, 0.0, 2.0, 3.0], &[0.0, 0.0, 0.1, 0.0])
            .expect("episode");
        e.obs_names = vec!["joint.position[0]".into(), "joint.velocity[0]".into()];
        e.hints = ChannelHints {
            obs_units: vec!["rad".into(), "rad/s".into()],
            obs_sources: vec!["joint.position[0]".into(), "joint.velocity[0]".into()],
            action_units: vec!["rad".into(), "px".into()],
            action_targets: vec!["joint.position[0]".into(), "gripper".into()],
            control_hz: Some(10.0),
        };
        let i = describe(&e);
        let o = &i.channels.observation;
        assert_eq!((o[0].min, o[0].max), (0.0, 2.0));
        assert_eq!((o[1].min, o[1].max), (-1.0, 3.0));
        assert_eq!(o[1].unit, "rad/s");
        let a = &i.channels.action;
        assert_eq!(
            a[0].name, "action[0]",
            "unnamed actions get positional names"
        );
        assert_eq!(a[0].max_step, Some(0.3));
        assert_eq!(a[1].max_step, Some(5.0), "within episodes only");
        assert_eq!(i.deployment.joints, Some(1));
        // Targets 0, 0.3 | 0, 0.1 against positions 0, 0.5 | 2, 2: lead 2.
        assert_eq!(i.deployment.max_velocity, Some(3.0));
        assert_eq!(i.deployment.control_hz, Some(10.0));
        assert_eq!(
            i.deployment.max_step,
            Some(2.0),
            "target − position, joint 0 only"
        );
        i.validate(2, 2).expect("consistent");
    }
}
