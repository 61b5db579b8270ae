//! Where the runtime meets the bridge: a deployed policy drives the arm.
//!
//! The observation frame is built from the policy's manifest
//! (`channels.observation`, `docs/manifest.md`): each channel names its
//! source — a joint's position or velocity, read from every telemetry
//! frame, or a host-side key that a [`HostSource`] plugged in by the caller
//! supplies (task state, a tracker, a camera). A policy whose
//! sources the device and the host source cannot supply is refused at start,
//! naming the channels; nothing is guessed from the frame length. The
//! action must be one absolute position target per joint, in joint order.

use diffbc_bridge::Controller;
use diffbc_protocol::{Handshake, Telemetry};
use diffbc_runtime::Policy;
use diffbc_runtime::manifest::{ActionKind, ObservationChannel, Source};

/// Values the device does not report (task state, a tracker, a camera
/// feature), supplied on the host by name.
pub trait HostSource: Send {
    /// The keys supplied, in the order [`HostSource::read`] writes them.
    fn keys(&self) -> &[String];
    /// Called at the start of every run (before the first
    /// [`HostSource::read`]): forget the last run's state.
    fn reset(&mut self) {}
    /// Write this tick's values (one per key, or a channel's whole shape:
    /// see [`HostSource::len`]) into `out`. Called every tick: must not
    /// allocate.
    fn read(&mut self, telemetry: &Telemetry, out: &mut [f32]) -> Result<(), String>;
    /// Values supplied under `key` (1 unless the key is a multi-value
    /// feature such as an image).
    fn len(&self, key: &str) -> usize {
        let _ = key;
        1
    }
}

/// Where one channel of the frame comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Position(usize),
    Velocity(usize),
    /// `len` values at `offset` in the host source's output.
    Host {
        offset: usize,
        len: usize,
    },
    /// A `mode[k]` channel: 0 here, set by the policy's steering.
    Mode,
}

/// How telemetry (and a host source) map to a policy's observation frame.
/// Demonstrations recorded for a policy use the same mapping; the arm task
/// builds its frames with this type too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObsLayout {
    slots: Vec<Slot>,
    len: usize,
    host_len: usize,
}

impl ObsLayout {
    /// The layout of `channels` on an arm with `joints` joints, with `host`
    /// supplying the host-side keys (`None`: no host source). The error names
    /// every channel that cannot be supplied.
    pub fn from_channels(
        channels: &[ObservationChannel],
        joints: usize,
        host: Option<&dyn HostSource>,
    ) -> Result<Self, String> {
        let mut slots = Vec::with_capacity(channels.len());
        let mut missing = Vec::new();
        let mut len = 0;
        let host_offsets: Vec<(String, usize, usize)> = host
            .map(|h| {
                let mut at = 0;
                h.keys()
                    .iter()
                    .map(|k| {
                        let n = h.len(k);
                        at += n;
                        (k.clone(), at - n, n)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let host_len = host_offsets.last().map_or(0, |(_, at, n)| at + n);
        for c in channels {
            let n = c.len();
            let slot = match c.source() {
                Source::JointPosition(j) if j < joints && n == 1 => Some(Slot::Position(j)),
                Source::JointVelocity(j) if j < joints && n == 1 => Some(Slot::Velocity(j)),
                // The policy's steering sets these; the frame carries 0 (no mode).
                Source::Mode(_) if n == 1 => Some(Slot::Mode),
                Source::Host(key) => host_offsets
                    .iter()
                    .find(|(k, _, m)| *k == key && *m == n)
                    .map(|&(_, offset, len)| Slot::Host { offset, len }),
                _ => None,
            };
            match slot {
                Some(s) => slots.push(s),
                None => missing.push(format!("{} (source {})", c.name, c.source)),
            }
            len += n;
        }
        if !missing.is_empty() {
            return Err(format!(
                "the policy observes channels this arm ({joints} joints{}) cannot supply: {}",
                if host.is_some() {
                    ", plus the host source"
                } else {
                    ", no host source"
                },
                missing.join(", ")
            ));
        }
        Ok(Self {
            slots,
            len,
            host_len,
        })
    }

    /// Values per frame.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Values the host source writes per tick.
    pub fn host_len(&self) -> usize {
        self.host_len
    }

    /// Write the frame for `t` (and the host source's values `host`) into
    /// `out[..self.len()]`.
    pub fn write(&self, t: &Telemetry, host: &[f32], out: &mut [f32]) {
        let mut at = 0;
        for s in &self.slots {
            match *s {
                Slot::Position(j) => {
                    out[at] = t.positions[j];
                    at += 1;
                }
                Slot::Velocity(j) => {
                    out[at] = t.velocities[j];
                    at += 1;
                }
                Slot::Host { offset, len } => {
                    out[at..at + len].copy_from_slice(&host[offset..offset + len]);
                    at += len;
                }
                Slot::Mode => {
                    out[at] = 0.0;
                    at += 1;
                }
            }
        }
    }
}

/// Check that a policy's actions are one absolute position target per
/// joint, in order, for an arm with `joints` joints; the error names the
/// channels that are not.
pub fn check_actions(policy: &Policy, joints: usize) -> Result<(), String> {
    let channels = &policy.manifest().channels.action;
    if channels.len() != joints {
        return Err(format!(
            "the policy's action has {} values ({}), the arm has {joints} joints",
            channels.len(),
            channels
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let wrong: Vec<String> = channels
        .iter()
        .enumerate()
        .filter(|(j, c)| c.target() != Source::JointPosition(*j) || c.kind != ActionKind::Absolute)
        .map(|(j, c)| {
            format!(
                "{} (target {}, {:?}; joint {j} needs joint.position[{j}], absolute)",
                c.name, c.target, c.kind
            )
        })
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the policy's actions do not drive this arm's joints: {}",
            wrong.join(", ")
        ))
    }
}

/// [`Policy`] as a [`Controller`].
pub struct PolicyController {
    policy: Policy,
    frame: Vec<f32>,
    host_values: Vec<f32>,
    layout: Option<ObsLayout>,
    host: Option<Box<dyn HostSource>>,
}

impl std::fmt::Debug for PolicyController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyController")
            .field("policy", &self.policy)
            .field("layout", &self.layout)
            .field("host", &self.host.as_ref().map(|h| h.keys().to_vec()))
            .finish()
    }
}

impl PolicyController {
    /// Wrap a loaded policy (its observation read from telemetry only).
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            frame: Vec::new(),
            host_values: Vec::new(),
            layout: None,
            host: None,
        }
    }

    /// Plug in the source of the policy's host-side channels.
    pub fn with_host_source(mut self, host: Box<dyn HostSource>) -> Self {
        self.host = Some(host);
        self
    }

    /// Replace the source of the policy's host-side channels (between runs).
    pub fn set_host_source(&mut self, host: Box<dyn HostSource>) {
        self.host = Some(host);
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The policy, mutably (to reseed or change the sampler between runs).
    pub fn policy_mut(&mut self) -> &mut Policy {
        &mut self.policy
    }
}

impl Controller for PolicyController {
    fn start(&mut self, h: &Handshake) -> Result<(), String> {
        let n = h.joints.len();
        // Both checks, so that one refusal names everything that does not fit.
        let actions = check_actions(&self.policy, n);
        let layout = ObsLayout::from_channels(
            &self.policy.manifest().channels.observation,
            n,
            self.host.as_deref(),
        );
        let layout = match (layout, actions) {
            (Ok(l), Ok(())) => l,
            (Err(o), Ok(())) => return Err(o),
            (Ok(_), Err(a)) => return Err(a),
            (Err(o), Err(a)) => return Err(format!("{o}; and {a}")),
        };
        // Sized here, never in `act`.
        self.frame = vec![0.0; layout.len()];
        self.host_values = vec![0.0; layout.host_len()];
        self.layout = Some(layout);
        if let Some(h) = self.host.as_mut() {
            h.reset();
        }
        self.policy.reset();
        Ok(())
    }

    fn act(&mut self, t: &Telemetry, action: &mut [f32]) -> Result<(), String> {
        let layout = self
            .layout
            .as_ref()
            .ok_or_else(|| "the controller was not started".to_string())?;
        if let Some(h) = self.host.as_mut() {
            h.read(t, &mut self.host_values)?;
        }
        layout.write(t, &self.host_values, &mut self.frame);
        let a = self.policy.act(&self.frame).map_err(|e| e.to_string())?;
        action.copy_from_slice(a);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str, source: &str, shape: &[usize]) -> ObservationChannel {
        ObservationChannel {
            name: name.into(),
            unit: "1".into(),
            source: source.into(),
            shape: shape.to_vec(),
            min: 0.0,
            max: 1.0,
        }
    }

    /// A tracker and a 2×2 camera, with values that name their slot.
    struct Tracker {
        keys: Vec<String>,
    }

    impl HostSource for Tracker {
        fn keys(&self) -> &[String] {
            &self.keys
        }
        fn read(&mut self, t: &Telemetry, out: &mut [f32]) -> Result<(), String> {
            for (i, v) in out.iter_mut().enumerate() {
                *v = 100.0 + i as f32 + t.seq as f32;
            }
            Ok(())
        }
        fn len(&self, key: &str) -> usize {
            if key == "camera" { 4 } else { 1 }
        }
    }

    fn telemetry() -> Telemetry {
        Telemetry {
            seq: 0,
            device_time_us: 0,
            last_command_seq: 0,
            positions: heapless::Vec::from_slice(&[0.1, 0.2, 0.3]).expect("3 joints"),
            velocities: heapless::Vec::from_slice(&[1.1, 1.2, 1.3]).expect("3 joints"),
            status: 0,
            link: Default::default(),
        }
    }

    #[test]
    fn frames_follow_the_channels_from_telemetry_and_the_host_source() {
        let channels = [
            channel("joint.velocity[2]", "joint.velocity[2]", &[]),
            channel("block.angle", "block.angle", &[]),
            channel("camera", "camera", &[2, 2]),
            channel("joint.position[0]", "joint.position[0]", &[]),
        ];
        let mut host = Tracker {
            keys: vec!["camera".into(), "block.angle".into()],
        };
        let layout =
            ObsLayout::from_channels(&channels, 3, Some(&host as &dyn HostSource)).expect("fits");
        assert_eq!((layout.len(), layout.host_len()), (7, 5));
        let t = telemetry();
        let mut values = vec![0.0; 5];
        host.read(&t, &mut values).expect("read");
        let mut frame = vec![0.0; 7];
        layout.write(&t, &values, &mut frame);
        // Host values: camera at 100..104, block.angle at 104.
        assert_eq!(
            frame,
            [1.3, 104.0, 100.0, 101.0, 102.0, 103.0, 0.1],
            "channel order, each from its source"
        );
    }

    #[test]
    fn channels_nobody_supplies_are_named_and_nothing_is_guessed() {
        let channels = [
            channel("joint.position[0]", "joint.position[0]", &[]),
            channel("joint.position[3]", "joint.position[3]", &[]),
            channel("block.angle", "block.angle", &[]),
            channel("task.done[9]", "device.extra[9]", &[]),
        ];
        let e = ObsLayout::from_channels(&channels, 3, None).expect_err("refused");
        for named in [
            "joint.position[3] (source joint.position[3])",
            "block.angle (source block.angle)",
            "task.done[9] (source device.extra[9])",
        ] {
            assert!(e.contains(named), "{named}: {e}");
        }
        assert!(!e.contains("joint.position[0] (source"), "{e}");
        assert!(
            e.contains("3 joints") && e.contains("no host source"),
            "{e}"
        );
        // A host key of the wrong size is not a match either.
        let host = Tracker {
            keys: vec!["block.angle".into(), "camera".into()],
        };
        let e = ObsLayout::from_channels(
            &[channel("camera", "camera", &[3, 2])],
            3,
            Some(&host as &dyn HostSource),
        )
        .expect_err("6 values wanted, 4 supplied");
        assert!(e.contains("camera (source camera)"), "{e}");
    }
}
